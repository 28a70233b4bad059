"""Benchmark: the IVR decision (caller number -> customer -> outage) with
1,000,000 customers and 1,000 live outages in PostgreSQL.

    .venv/bin/python bench/ivr_lookup.py [--customers N] [--outages N] [--calls N]

Starts its own embedded PostgreSQL (pgserver, in a temporary directory,
deleted afterwards) unless ``DATABASE_URL`` is set -- then a scratch database
``bench_ivr_<random>`` is created on that server and dropped at the end.
Applies the migrations, bulk-loads customers and phones with COPY (a county:
~200 feeders, ~10k transformer areas, ~3k villages), 1,000 published
outages (+ 20,000 restored ones, so that history is in the tables as in
production), ANALYZE, then times ``ivr.outage_repo.outage_for_caller`` for
random callers: inside an outage area, outside, unknown and withheld
numbers.  Every answer is checked against the expected one.

Last line: ``ivr_decision_p99_ms=<value>`` (target < 5 ms).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg  # noqa: E402

from cti.db import migrate  # noqa: E402
from ivr import outage_repo  # noqa: E402

CHARS = "才湾城东西南北大小上下新老龙凤石桥田塘山河江水黄白红青安平和兴福寿长庆永宁高低前后中"
NOW = datetime.now(timezone.utc).replace(microsecond=0)


def build_county(rng: random.Random, n_customers: int):
    villages = []
    seen = set()
    while len(villages) < 3000:
        name = rng.choice(CHARS) + rng.choice(CHARS) + rng.choice("村社区屯寨")
        if name.endswith("社"):
            name += "区"
        if name not in seen:
            seen.add(name)
            villages.append(name)
    feeders = [f"10kV{rng.choice(CHARS)}{rng.choice(CHARS)}{i}线" for i in range(200)]
    # transformer areas: each in one village, fed by one feeder; sizes skewed (10..400 customers)
    tas = []
    for i in range(10_000):
        v = villages[i % len(villages)]
        tas.append((f"{v}{i // len(villages) + 1}号台区", feeders[rng.randrange(len(feeders))], v))
    weights = [rng.paretovariate(1.5) for _ in tas]
    picks = rng.choices(range(len(tas)), weights=weights, k=n_customers)
    return villages, feeders, tas, picks


def make_phone(rng: random.Random, used: set[str]) -> str:
    while True:
        p = "13" + f"{rng.randrange(10**9):09d}"
        if p not in used:
            used.add(p)
            return p


async def load(conn: asyncpg.Connection, rng: random.Random, n_customers: int, n_outages: int):
    t0 = time.perf_counter()
    villages, feeders, tas, picks = build_county(rng, n_customers)
    used: set[str] = set()
    customers, phones, phone_of = [], [], []
    for cid, ta_i in enumerate(picks, start=1):
        ta, feeder, village = tas[ta_i]
        klass = ("town", "countryside", "remote")[cid % 7 % 3]
        customers.append((cid, f"31{cid:08d}", f"客户{cid}", f"{village}{cid % 300}号", ta, feeder, village, klass))
        p = make_phone(rng, used)
        phones.append((cid, p, "mobile"))
        phone_of.append(p)
        if rng.random() < 0.2:
            phones.append((cid, make_phone(rng, used), "mobile"))
        if rng.random() < 0.05:
            phones.append((cid, f"0773{rng.randrange(2_000_000, 9_999_999)}", "landline"))
    gen_s = time.perf_counter() - t0

    # drop the plain secondary indexes during COPY, recreate them exactly as migrated
    idx = await conn.fetch("""SELECT i.indexname, i.indexdef FROM pg_indexes i
                              WHERE i.tablename IN ('customers', 'customer_phones')
                                AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)""")
    for r in idx:
        await conn.execute(f'DROP INDEX "{r["indexname"]}"')
    await conn.copy_records_to_table(
        "customers", records=customers,
        columns=["id", "account_no", "name", "address", "transformer_area", "feeder", "village", "area_class"])
    await conn.copy_records_to_table("customer_phones", records=phones, columns=["customer_id", "phone", "kind"])
    for r in idx:
        await conn.execute(r["indexdef"])
    await conn.execute("SELECT setval('customers_id_seq', $1)", len(customers))

    # outages: 1,000 published (70 % transformer areas, 25 % villages, 5 % feeders), 20,000 restored
    out_rows, area_rows = [], []
    live_ta, live_village, live_feeder = set(), set(), set()
    oid = 0
    for i in range(n_outages + 20_000):
        oid += 1
        live = i < n_outages
        r = rng.random()
        if r < 0.70:
            names = [("transformer_area", tas[rng.randrange(len(tas))][0]) for _ in range(rng.randint(1, 3))]
        elif r < 0.95:
            names = [("village", rng.choice(villages)) for _ in range(rng.randint(1, 2))]
        else:
            names = [("feeder", rng.choice(feeders))]
        names = list(dict.fromkeys(names))
        if live:
            start = NOW - timedelta(minutes=rng.randint(0, 600)) if rng.random() < 0.85 else \
                NOW + timedelta(hours=rng.randint(1, 20))
            end = start + timedelta(hours=rng.randint(2, 12))
            end = max(end, NOW + timedelta(hours=1))
            status, restored = "published", None
            for t, n in names:
                {"transformer_area": live_ta, "village": live_village, "feeder": live_feeder}[t].add(n)
        else:
            start = NOW - timedelta(days=rng.randint(2, 900), hours=rng.randint(0, 23))
            end = start + timedelta(hours=rng.randint(2, 12))
            status, restored = "restored", end
        kind = rng.choice(("fault", "fault", "planned", "temporary"))
        out_rows.append((oid, f"TD{start:%Y%m%d}-{oid:05d}", kind, status, "线路故障", start, end, restored,
                         start - timedelta(hours=1), "", "none"))
        for pos, (t, n) in enumerate(names):
            area_rows.append((oid, t, n, pos))
    await conn.copy_records_to_table(
        "outages", records=out_rows,
        columns=["id", "outage_no", "kind", "status", "reason", "start_at", "expected_restore_at", "restored_at",
                 "published_at", "announcement", "prompt_status"])
    await conn.copy_records_to_table("outage_areas", records=area_rows,
                                     columns=["outage_id", "area_type", "name", "position"])
    await conn.execute("SELECT setval('outages_id_seq', $1)", oid)
    await conn.execute("ANALYZE")
    load_s = time.perf_counter() - t0

    def inside(cid: int) -> bool:
        ta, feeder, village = tas[picks[cid - 1]]
        return ta in live_ta or village in live_village or feeder in live_feeder

    return gen_s, load_s, phone_of, inside, used, len(phones), sum(1 for r in area_rows if r[0] <= n_outages)


async def run(args) -> float:
    rng = random.Random(args.seed)
    url = os.environ.get("DATABASE_URL")
    srv = tmp = scratch = None
    if url:
        scratch = "bench_ivr_" + uuid.uuid4().hex[:8]
        admin = await asyncpg.connect(url)
        await admin.execute(f'CREATE DATABASE "{scratch}"')
        await admin.close()
        base, _, query = url.partition("?")
        db_url = base.rsplit("/", 1)[0] + "/" + scratch + ("?" + query if query else "")
    else:
        import pgserver
        tmp = tempfile.mkdtemp(prefix="bench-ivr-pg-")
        srv = pgserver.get_server(tmp, cleanup_mode="delete")
        db_url = url = srv.get_uri()
    try:
        conn = await asyncpg.connect(db_url)
        try:
            await migrate(conn)
            gen_s, load_s, phone_of, inside, used, n_phones, n_live_areas = await load(
                conn, rng, args.customers, args.outages)
            print(f"loaded {args.customers:,} customers, {n_phones:,} phones, {args.outages:,} live outages "
                  f"({n_live_areas:,} areas) + 20,000 restored in {load_s:.1f} s (generation {gen_s:.1f} s)")

            # callers: 40 % inside an outage area, 40 % outside, 15 % unknown numbers, 5 % withheld/garbage
            ins = [c for c in (rng.randrange(1, args.customers + 1) for _ in range(args.calls * 20)) if inside(c)]
            outs = [c for c in (rng.randrange(1, args.customers + 1) for _ in range(args.calls * 3)) if not inside(c)]
            calls = []
            for i in range(args.calls):
                r = rng.random()
                if r < 0.40 and ins:
                    c = rng.choice(ins)
                    calls.append(("inside", phone_of[c - 1], True))
                elif r < 0.80:
                    c = rng.choice(outs)
                    calls.append(("outside", phone_of[c - 1], False))
                elif r < 0.95:
                    num = "13" + f"{rng.randrange(10**9):09d}"
                    while num in used:
                        num = "13" + f"{rng.randrange(10**9):09d}"
                    calls.append(("unknown", num, None))
                else:
                    calls.append(("withheld", rng.choice(["", "anonymous", "Restricted", None]), None))

            for kind, num, _ in calls[:300]:  # warm-up (prepared statement, caches)
                await outage_repo.outage_for_caller(conn, caller_num=num, at=NOW)
            times = {"inside": [], "outside": [], "unknown": [], "withheld": []}
            wrong = 0
            for kind, num, expect in calls:
                t = time.perf_counter()
                d = await outage_repo.outage_for_caller(conn, caller_num=num, at=NOW)
                times[kind].append((time.perf_counter() - t) * 1000)
                if (expect is True and d.outage is None) or (expect is False and d.outage is not None) \
                        or (expect is None and d.known_customer):
                    wrong += 1
        finally:
            await conn.close()
    finally:
        if scratch:
            admin = await asyncpg.connect(url)
            await admin.execute(f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)')
            await admin.close()
        if srv is not None:
            srv.cleanup()

    all_ms = sorted(x for v in times.values() for x in v)

    def pct(xs, p):
        return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]

    for kind, xs in times.items():
        if xs:
            xs = sorted(xs)
            print(f"  {kind:<9} n={len(xs):5d}  p50={pct(xs, 50):.3f} ms  p99={pct(xs, 99):.3f} ms  max={xs[-1]:.3f} ms")
    print(f"IVR decision over {len(all_ms)} calls: p50={pct(all_ms, 50):.3f} ms  p90={pct(all_ms, 90):.3f} ms  "
          f"p99={pct(all_ms, 99):.3f} ms  max={all_ms[-1]:.3f} ms  mean={statistics.fmean(all_ms):.3f} ms")
    print(f"wrong answers: {wrong}")
    if wrong:
        print("ERROR: some decisions did not match the expected outage coverage", file=sys.stderr)
    return pct(all_ms, 99)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--customers", type=int, default=1_000_000)
    ap.add_argument("--outages", type=int, default=1_000)
    ap.add_argument("--calls", type=int, default=5_000)
    ap.add_argument("--seed", type=int, default=966022)
    args = ap.parse_args()
    p99 = asyncio.run(run(args))
    print(f"ivr_decision_p99_ms={p99:.3f}")


if __name__ == "__main__":
    main()

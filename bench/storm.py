"""Storm: the PBX simulator plays a surge against the whole service.

One process runs the service (aiohttp app, AMI client, pipeline, wallboard,
IVR server), its simulated Asterisk (over real TCP) and one websocket client
per agent, each logged in as that agent; PostgreSQL is embedded (pgserver in
a temporary directory) unless ``DATABASE_URL`` is set.  All share one event
loop, so the latency includes the simulator's and the clients' own work.

Traffic: ``--rate`` new calls/s for ``--seconds``; ``--area-share`` (60 %)
of them from one outage area (their callers carry that OUTAGE_ID and the
repair queue); ``--abandon`` of them hang up in the queue; ``--via-ivr``
sends the calls through the FastAGI IVR (slower, off by default).

Measured:
* screen-pop latency: the simulator stamps the moment it writes the
  AgentCalled frame to the socket (keyed by Linkedid + agent); the agent's
  websocket client stamps the screen_pop frame's arrival; p50/p90/p99/max;
* events/s through the pipeline, work orders/s, peak RSS (ru_maxrss);
* loss: every simulated call has exactly one call record in the database;
  every answered call exactly one screen-pop at its agent.

The last two lines are ``screenpop_p99_ms=<value>`` and ``lost=<count>``.

    .venv/bin/python bench/storm.py                      # 50 calls/s for 60 s
    .venv/bin/python bench/storm.py --rate 200 --seconds 300 --agents 400
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
import asyncpg  # noqa: E402
from aiohttp import web  # noqa: E402

QUEUES = ("repair", "complaint", "enquiry")


def percentile(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    k = min(len(xs) - 1, max(0, int(round(p / 100 * (len(xs) - 1)))))
    return xs[k]


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def run(args) -> int:
    import logging

    from cti.app import DemoOptions, build_app, demo_config, manager_key, pipeline_key, services_key
    from cti.auth import COOKIE, Role, auth_store_key, make_hasher
    from cti.config import load_config
    from cti.simulator import CallSpec

    from cti.logs import setup_logging

    setup_logging("WARNING", json=True, stream=sys.stderr)  # per-call INFO logs would dominate the measurement
    logging.disable(logging.WARNING)
    embedded = None
    db_url = os.environ.get("DATABASE_URL")
    if not db_url:
        import pgserver

        pgdir = tempfile.mkdtemp(prefix="hotline-storm-pg-")
        embedded = pgserver.get_server(pgdir, cleanup_mode="delete")
        db_url = embedded.get_uri()
    agents = {str(2001 + i): list(QUEUES) for i in range(args.agents)}
    state = tempfile.mkdtemp(prefix="hotline-storm-")
    cfg = demo_config(load_config(env={}, http_port=0, sim_speed=args.speed, state_dir=state,
                                  log_level="WARNING", log_json=True, db_pool_max=args.pool,
                                  node_id="storm"))
    app = build_app(cfg, demo=DemoOptions(agents=agents, traffic=False, accounts=False), dsn=db_url)
    app[auth_store_key].hasher = make_hasher(cheap=True)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    manager = app[manager_key]
    for _ in range(500):
        if manager.state == "logged_in":
            break
        await asyncio.sleep(0.02)
    sim = app[services_key]["simulator"]
    pipeline = app[pipeline_key]

    # --- simulator side: when AgentCalled bytes are written
    written: dict[tuple[str, str], float] = {}

    def on_write(data: bytes) -> None:
        if not data.startswith(b"Event: AgentCalled\r\n"):
            return
        t = time.perf_counter()
        linkedid = agent = ""
        for line in data.split(b"\r\n"):
            if not linkedid and line.startswith(b"Linkedid: "):
                linkedid = line[10:].decode()
            elif line.startswith(b"Interface: "):
                agent = line[11:].decode().removeprefix("Local/").split("@", 1)[0]
        written.setdefault((linkedid, agent), t)

    sim.on_write = on_write

    # --- clients: one websocket per agent, logged in as that agent
    store = app[auth_store_key]
    received: dict[tuple[str, str], list[float]] = defaultdict(list)
    sessions: list[aiohttp.ClientSession] = []
    sockets = []
    for agent in agents:
        user = f"agent{agent}"
        pw = f"pw-{user}-storm-0123456789"
        await store.create_user(user, pw, Role.AGENT, agent_id=agent, display_name=user, replace=True)
        http = aiohttp.ClientSession()
        sessions.append(http)
        async with http.post(base + "/api/login", json={"username": user, "password": pw}) as r:
            body = await r.json()
            assert r.status == 200, body
            token = r.cookies[COOKIE].value
        http.headers["Cookie"] = f"{COOKIE}={token}"
        http.headers["X-CSRF-Token"] = body["csrf_token"]
        sockets.append(await http.ws_connect(f"{base}/ws/agent/{agent}"))

    async def reader(ws) -> None:
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            t = time.perf_counter()
            if '"screen_pop"' not in msg.data[:40]:
                continue
            data = json.loads(msg.data)
            if data.get("type") == "screen_pop":
                received[(data["linkedid"], data["agent"])].append(t)

    readers = [asyncio.create_task(reader(ws)) for ws in sockets]
    print(f"storm: {args.rate:g} calls/s for {args.seconds:g} s, {args.agents} agents, speed {args.speed:g}, "
          f"area share {args.area_share:.0%}, abandon {args.abandon:.0%}, via_ivr={args.via_ivr}, "
          f"db={'embedded' if embedded else 'DATABASE_URL'}", flush=True)

    # --- traffic
    rng = random.Random(args.seed)
    free = list(agents)
    rng.shuffle(free)
    results: list = []
    specs: list[CallSpec] = []
    failures = 0
    no_agent = 0
    area_outage = "STORM-AREA-1"

    async def one(spec: CallSpec, agent: str | None) -> None:
        nonlocal failures
        try:
            results.append((spec, await sim.place_call(spec)))
        except Exception as exc:
            failures += 1
            print(f"  call failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        finally:
            if agent:
                free.append(agent)

    events0, t0 = pipeline.stats.events, time.perf_counter()
    conn = await asyncpg.connect(db_url)
    orders0 = await conn.fetchval("SELECT count(*) FROM work_orders")
    tasks: list[asyncio.Task] = []
    n_calls = int(args.rate * args.seconds)
    start = time.perf_counter()
    peak_live = 0
    for i in range(n_calls):
        due = start + i / args.rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        in_area = rng.random() < args.area_share
        queue = "repair" if in_area else rng.choice(QUEUES)
        abandoned = rng.random() < args.abandon
        agent = None
        if not abandoned:
            if not free:
                no_agent += 1
                abandoned = True
            else:
                agent = free.pop()
        num = f"1{rng.choice('3589')}{rng.randrange(10**9):09d}"
        spec = CallSpec(num, "", queue, "", area_outage if in_area else "",
                        agent=agent or "", outcome="abandoned" if abandoned else "answered",
                        ring_s=args.ring_s, talk_s=args.talk_s, wait_s=args.ring_s,
                        ring_order=() if agent else (), via_ivr=args.via_ivr)
        specs.append(spec)
        tasks.append(asyncio.create_task(one(spec, agent)))
        peak_live = max(peak_live, sum(1 for t in tasks[-2000:] if not t.done()))
    sent_s = time.perf_counter() - start
    await asyncio.gather(*tasks)
    await pipeline.drain()
    await asyncio.sleep(1.0)  # last screen-pops in flight to the clients
    await pipeline.drain()
    elapsed = time.perf_counter() - t0
    events = pipeline.stats.events - events0
    orders = await conn.fetchval("SELECT count(*) FROM work_orders") - orders0

    # --- loss checks
    linkedids = [p.linkedid for _, p in results]
    rows = await conn.fetch("SELECT linkedid, count(*) AS n FROM calls WHERE linkedid = ANY($1) GROUP BY linkedid",
                            linkedids)
    recorded = {r["linkedid"]: r["n"] for r in rows}
    missing_records = sum(1 for lid in linkedids if recorded.get(lid, 0) != 1)
    answered = [(p.linkedid, p.agent) for _, p in results if p.outcome in ("answered", "caller_hangup") and p.agent]
    pop_loss = sum(1 for key in answered if len(received.get(key, ())) != 1)
    extra_pops = sum(len(v) for k, v in received.items() if len(v) > 1)
    await conn.close()
    lat = [(received[k][0] - written[k]) * 1000 for k in answered if k in written and received.get(k)]

    for ws in sockets:
        await ws.close()
    for t in readers:
        t.cancel()
    for s in sessions:
        await s.close()
    sp = app[services_key]["screenpop"]
    await runner.cleanup()
    if embedded is not None:
        embedded.cleanup()

    lost = missing_records + pop_loss + failures
    print(f"calls placed {len(specs)} in {sent_s:.1f} s ({len(specs) / sent_s:.1f}/s offered), "
          f"answered {len(answered)}, abandoned {len(results) - len(answered)}, no free agent {no_agent}, "
          f"simulator failures {failures}")
    print(f"peak live calls {peak_live}")
    print(f"screen-pop latency ms (AgentCalled written -> websocket frame received, n={len(lat)}): "
          f"p50 {percentile(lat, 50):.2f}  p90 {percentile(lat, 90):.2f}  p99 {percentile(lat, 99):.2f}  "
          f"max {max(lat) if lat else float('nan'):.2f}  mean {statistics.fmean(lat) if lat else float('nan'):.2f}")
    print(f"pipeline events {events} in {elapsed:.1f} s = {events / elapsed:.0f} events/s")
    print(f"work orders {orders} = {orders / elapsed:.1f} orders/s  (screen-pop failures {sp.failures})")
    print(f"peak RSS {rss_mb():.0f} MB (service + simulator + {len(sockets)} clients in one process)")
    print(f"loss: calls without exactly one record {missing_records}, answered calls without exactly one "
          f"screen-pop {pop_loss}, duplicate pops {extra_pops}")
    print(f"screenpop_p99_ms={percentile(lat, 99):.2f}")
    print(f"lost={lost}")
    return 0 if lost == 0 else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=float, default=50.0, help="new calls per second (default 50)")
    ap.add_argument("--seconds", type=float, default=60.0, help="surge length (default 60)")
    ap.add_argument("--agents", type=int, default=200, help="agents, each with a websocket client (default 200)")
    ap.add_argument("--speed", type=float, default=10.0, help="simulator time compression (default 10)")
    ap.add_argument("--ring-s", type=float, default=2.0, help="virtual ring/wait seconds (default 2)")
    ap.add_argument("--talk-s", type=float, default=20.0, help="virtual talk seconds (default 20)")
    ap.add_argument("--area-share", type=float, default=0.6, help="share of calls from the outage area")
    ap.add_argument("--abandon", type=float, default=0.1, help="share of callers hanging up in the queue")
    ap.add_argument("--via-ivr", action="store_true", help="calls go through the FastAGI IVR (slower)")
    ap.add_argument("--pool", type=int, default=20, help="database pool size")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())

"""Customers in a real PostgreSQL (embedded; see conftest.py)."""
from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import asyncpg
import pytest

from cti.customer_repo import (
    find_by_phone,
    get_by_account,
    get_customer,
    import_customers_file,
    upsert_customers,
)
from cti.customers import Customer

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "cti" / "data" / "demo_customers.csv"
BAD = Path(__file__).parent / "fixtures" / "customers_with_bad_rows.csv"


async def test_demo_import_then_zhang_san_is_found_by_every_trunk_form(pool):
    result = await import_customers_file(pool, DEMO)
    assert result.errors == []
    assert result.inserted == len(result.customers) >= 55
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM customers") == result.inserted
        for raw in ("+8613800138000", "008613800138000", "013800138000", "8613800138000", "138 0013 8000"):
            found = await find_by_phone(conn, raw)
            assert [c.account_no for c in found] == ["3100012345"], raw
            zhang = found[0]
            assert zhang.name == "张三" and zhang.transformer_area == "才湾2号台区"
            assert zhang.feeder == "10kV才湾线" and zhang.area_class == "countryside"
            assert zhang.phones == ("13800138000",) and zhang.id is not None


async def test_landline_and_multi_phone_customer_found_by_either_number(pool):
    await import_customers_file(pool, DEMO)
    async with pool.acquire() as conn:
        by_mobile = await find_by_phone(conn, "+86 138 0013 8003")
        by_landline = await find_by_phone(conn, "(0773) 555 0120")
        assert [c.name for c in by_mobile] == [c.name for c in by_landline] == ["全州县人民医院"]
        hospital = by_landline[0]
        assert hospital.key_customer and hospital.dedicated_transformer
        assert set(hospital.phones) == {"13800138003", "07735550120"}
        assert hospital.phones[0] == "13800138003"  # mobiles first


async def test_hostile_or_unknown_caller_finds_nobody(pool):
    await import_customers_file(pool, DEMO)
    async with pool.acquire() as conn:
        for raw in (None, "", "anonymous", "<unknown>", "13900000000", "'; DROP TABLE customers; --"):
            assert await find_by_phone(conn, raw) == []
        assert await conn.fetchval("SELECT count(*) FROM customers") > 0


async def test_shared_number_returns_every_account_most_recently_updated_first(pool):
    await import_customers_file(pool, DEMO)
    async with pool.acquire() as conn:
        found = await find_by_phone(conn, "13800138099")
        assert {c.account_no for c in found} == {"3100019001", "3100019002"}
        shop = await get_by_account(conn, "3100019002")
        await conn.execute("UPDATE customers SET updated_at = now() + interval '1 minute' WHERE id = $1", shop.id)
        assert [c.account_no for c in await find_by_phone(conn, "+8613800138099")] == ["3100019002", "3100019001"]
        assert len(await find_by_phone(conn, "13800138099", limit=1)) == 1


async def test_reimport_is_idempotent(pool):
    first = await import_customers_file(pool, DEMO)
    async with pool.acquire() as conn:
        before = await conn.fetch("SELECT id, account_no, updated_at FROM customers ORDER BY id")
        phones_before = await conn.fetch("SELECT * FROM customer_phones ORDER BY customer_id, phone")
    second = await import_customers_file(pool, DEMO)
    assert (second.inserted, second.updated, second.unchanged) == (0, 0, len(first.customers))
    async with pool.acquire() as conn:
        assert await conn.fetch("SELECT id, account_no, updated_at FROM customers ORDER BY id") == before
        assert await conn.fetch("SELECT * FROM customer_phones ORDER BY customer_id, phone") == phones_before


async def test_upsert_updates_fields_and_replaces_phones(pool):
    await import_customers_file(pool, DEMO)
    async with pool.acquire() as conn:
        zhang = await get_by_account(conn, "3100012345")
        moved = replace(zhang, address="全州县才湾镇新街1号", phones=("13800138088", "0773-5551234"), id=None)
        async with conn.transaction():
            assert await upsert_customers(conn, [moved]) == 1
        again = await get_customer(conn, zhang.id)
        assert again.address == "全州县才湾镇新街1号"
        assert set(again.phones) == {"13800138088", "07735551234"}
        assert await find_by_phone(conn, "13800138000") == []
        assert [c.id for c in await find_by_phone(conn, "0773-5551234")] == [zhang.id]
        kinds = dict(await conn.fetch("SELECT phone, kind FROM customer_phones WHERE customer_id = $1", zhang.id))
        assert kinds == {"13800138088": "mobile", "07735551234": "landline"}


async def test_phone_only_change_bumps_updated_at(pool):
    async with pool.acquire() as conn:
        c = Customer(account_no="3100000100", name="测试", phones=("13800138070",))
        await upsert_customers(conn, [c])
        t0 = await conn.fetchval("SELECT updated_at FROM customers WHERE account_no = $1", c.account_no)
        await upsert_customers(conn, [c])
        assert await conn.fetchval("SELECT updated_at FROM customers WHERE account_no = $1", c.account_no) == t0
        await upsert_customers(conn, [replace(c, phones=("13800138071",))])
        assert await conn.fetchval("SELECT updated_at FROM customers WHERE account_no = $1", c.account_no) > t0


async def test_bad_row_file_keeps_good_rows_and_reports_bad_ones_by_line(pool):
    result = await import_customers_file(pool, BAD)
    assert [line for line, _ in result.errors] == [3, 5, 6]
    assert result.inserted == 3
    async with pool.acquire() as conn:
        accounts = [r["account_no"] for r in await conn.fetch("SELECT account_no FROM customers ORDER BY account_no")]
        assert accounts == ["3100090001", "3100090002", "3100090004"]
        # the first of the duplicated account wins, the second is reported
        assert (await get_by_account(conn, "3100090001")).name == "赵一"
        # kept without phone: still reachable by account number (IVR path)
        no_phone = await get_by_account(conn, "3100090004")
        assert no_phone.phones == () and no_phone.area_class == "remote"


async def test_markup_in_fields_is_stored_as_plain_text(pool, tmp_path):
    path = tmp_path / "markup.csv"
    path.write_bytes((
        "户号,户名,联系电话,用电地址,台区,线路,村/街道,区域类别,客户类别,专变用户,大客户,敏感客户,高层住宅\r\n"
        '3100000200,"<img src=x onerror=alert(1)>王",13800138060,"<script>alert(\'addr\')</script>",'
        "&lt;台区&gt;,10kV<b>线</b>,\"村'; DROP TABLE customers; --\",城区,居民,否,否,否,否\r\n"
    ).encode("gbk"))
    result = await import_customers_file(pool, path)
    assert result.errors == []
    async with pool.acquire() as conn:
        c = (await find_by_phone(conn, "13800138060"))[0]
        assert c.name == "<img src=x onerror=alert(1)>王"
        assert c.address == "<script>alert('addr')</script>"
        assert c.transformer_area == "&lt;台区&gt;" and c.feeder == "10kV<b>线</b>"
        assert c.village == "村'; DROP TABLE customers; --"
        assert c.to_dict()["name"] == "<img src=x onerror=alert(1)>王"


async def test_get_missing_customer_gives_none(pool):
    async with pool.acquire() as conn:
        assert await get_customer(conn, 999999) is None
        assert await get_by_account(conn, "nope") is None


async def test_upsert_refuses_duplicate_accounts_in_one_batch(pool):
    c = Customer(account_no="3100000300", name="甲")
    async with pool.acquire() as conn:
        with pytest.raises(ValueError):
            await upsert_customers(conn, [c, replace(c, name="乙")])
        assert await upsert_customers(conn, []) == 0


async def test_import_rolls_back_as_a_whole_when_the_database_fails(pool):
    result = await import_customers_file(pool, DEMO)
    async with pool.acquire() as conn:
        await conn.execute("DELETE FROM customers")
        await conn.execute("ALTER TABLE customers ADD CONSTRAINT no_hospital CHECK (name <> '全州县人民医院')")
    with pytest.raises(asyncpg.CheckViolationError):
        await import_customers_file(pool, DEMO)
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM customers") == 0
    assert result.inserted > 0


async def test_concurrent_imports_of_the_same_file_do_not_duplicate(pool):
    results = await asyncio.gather(*(import_customers_file(pool, DEMO) for _ in range(3)))
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM customers") == len(results[0].customers)
        assert await conn.fetchval(
            "SELECT count(*) FROM customer_phones WHERE phone = '13800138000'") == 1
    assert sum(r.inserted for r in results) == len(results[0].customers)


def test_import_command_reports_bad_rows_by_line_and_keeps_good_ones(db_url, capsys, monkeypatch):
    from pathlib import Path

    from cti.__main__ import main

    monkeypatch.setenv("DATABASE_URL", db_url)
    bad = Path(__file__).parent / "fixtures" / "customers_with_bad_rows.csv"
    assert main(["import-customers", str(bad)]) == 1
    out = capsys.readouterr()
    assert "imported 3 customers" in out.out
    for line in (3, 5, 6):
        assert f"line {line}:" in out.err


async def test_find_caller_gives_what_the_account_number_and_recent_order_lookups_give(pool):
    """The screen-pop's one-statement read equals the lookups it replaces:
    get_by_account, else find_by_phone's first, then recent_orders."""
    from cti.customer_repo import find_caller
    from cti.phone import normalise_phone
    from tickets import repository as orders
    from tickets.model import DraftRequest, RecentOrder, build_draft_fields

    await import_customers_file(pool, DEMO)
    async with pool.acquire() as conn:
        zhang = (await find_by_phone(conn, "13800138000"))[0]
        # orders: zhang's by customer id, an unknown number's by number, a
        # draft never saved (hidden), the current call's own (excluded)
        for i, (num, cust, status, linkedid) in enumerate([
                ("13800138000", zhang, "accepted", "9.1"), ("13800138000", zhang, "closed", "9.2"),
                ("13900000001", None, "accepted", "9.3"), ("13900000001", None, "draft", "9.4"),
                ("13800138000", zhang, "accepted", "9.5")]):
            n = normalise_phone(num)
            await conn.execute("INSERT INTO calls (linkedid) VALUES ($1)", linkedid)
            fields = build_draft_fields(DraftRequest(
                linkedid=linkedid, agent="1001", queue="repair", caller_num=num, caller_num_norm=n.national,
                caller_name="", ivr_choice="repair", outage_id="",
                customer=cust.to_dict() if cust else None, recent_orders=()))
            order, _ = await orders.create_draft(conn, fields)
            await conn.execute("UPDATE work_orders SET status = $2, created_at = now() + make_interval(secs => $3) "
                               "WHERE id = $1", order["id"], status, i)
        cases = [("", "13800138000"), ("", "+86 138 0013 8000"), (zhang.account_no, "13900000001"),
                 ("no-such-account", "13800138000"), ("", "13900000001"), ("", "(0773) 555 0120"),
                 ("", None), ("", "'; DROP TABLE customers; --"), ("", "13700000000")]
        for account, raw in cases:
            for limit in (5, 1, 0):
                norm = normalise_phone(raw)
                phone = norm.national if norm else ""
                expect = await get_by_account(conn, account) if account else None
                if expect is None and norm is not None:
                    found = await find_by_phone(conn, raw)
                    expect = found[0] if found else None
                expect_recent = await orders.recent_orders(
                    conn, customer_id=expect.id if expect else None, phone=phone, limit=limit,
                    exclude_linkedid="9.5")
                got, recent = await find_caller(conn, account=account, raw_number=raw if norm else None,
                                                phone=phone, recent_limit=limit, exclude_linkedid="9.5")
                assert got == expect, (account, raw)
                assert [RecentOrder(*r) for r in recent] == expect_recent, (account, raw, limit)
        # the cases above are not vacuous
        got, recent = await find_caller(conn, account="", raw_number="13800138000", phone="13800138000",
                                        exclude_linkedid="9.5")
        assert got == zhang and [r[2] for r in recent] == ["closed", "accepted"]
        got, recent = await find_caller(conn, account="", raw_number="13900000001", phone="13900000001")
        assert got is None and [r[2] for r in recent] == ["accepted"]


async def _bulk_customers_and_orders(conn, n_customers: int, n_orders: int, seed: int = 5) -> list[int]:
    """Many customers (one mobile each) and orders over them and some unknown
    numbers, in every status the pop treats apart (drafts hidden)."""
    import random

    rng = random.Random(seed)
    await conn.execute(
        "INSERT INTO customers (account_no, name) SELECT 'B' || g, '客户' || g FROM generate_series(1, $1) g",
        n_customers)
    ids = [r[0] for r in await conn.fetch("SELECT id FROM customers WHERE account_no LIKE 'B%' ORDER BY id")]
    await conn.executemany("INSERT INTO customer_phones (customer_id, phone) VALUES ($1, $2)",
                           [(cid, f"1370000{i:04d}") for i, cid in enumerate(ids)])
    await conn.executemany("INSERT INTO calls (linkedid) VALUES ($1) ON CONFLICT DO NOTHING",
                           [(f"77.{i}",) for i in range(50)])
    rows = []
    for i in range(n_orders):
        k = rng.randrange(len(ids))
        known = rng.random() < 0.7
        num = f"1370000{k:04d}" if rng.random() < 0.8 else f"1390000{rng.randrange(20):04d}"
        rows.append((f"T{seed}-{i:07d}", rng.choice(["draft", "accepted", "accepted", "closed"]),
                     ids[k] if known else None, num, f"77.{rng.randrange(50)}", f"a{i}", rng.random() * 1e6))
    await conn.executemany(
        "INSERT INTO work_orders (order_no, status, customer_id, caller_num_norm, linkedid, agent, created_at, "
        "closed_at, order_type) VALUES ($1, $2, $3, $4, $5, $6, now() - make_interval(secs => $7), "
        "CASE WHEN $2 = 'closed' THEN now() END, 'enquiry')", rows)
    return ids


async def test_recent_orders_are_the_customers_and_the_numbers_newest_first_without_drafts_or_this_call(pool):
    """The rule, spelt out plainly (one OR), against the screen-pop's form of
    it (two index scans merged), over random orders and every kind of
    argument -- with custom and with generic plans."""
    import random

    from tickets import repository as orders

    plain = """SELECT order_no, order_type, status, created_at, description FROM work_orders
               WHERE status <> 'draft' AND coalesce(linkedid, '') <> $4
                 AND ((customer_id IS NOT NULL AND customer_id = $1) OR ($2 <> '' AND caller_num_norm = $2))
               ORDER BY created_at DESC LIMIT $3"""
    rng = random.Random(11)
    async with pool.acquire() as conn:
        ids = await _bulk_customers_and_orders(conn, 40, 1500)
        for mode in ("auto", "force_generic_plan"):
            await conn.execute(f"SET plan_cache_mode = {mode}")
            for _ in range(150):
                cid = rng.choice(ids + [None])
                phone = rng.choice([f"1370000{rng.randrange(45):04d}", f"1390000{rng.randrange(22):04d}", ""])
                limit = rng.choice([0, 1, 5, 50])
                exclude = rng.choice(["", f"77.{rng.randrange(50)}"])
                want = [tuple(r) for r in await conn.fetch(plain, cid, phone, limit, exclude)]
                got = await orders.recent_orders(conn, customer_id=cid, phone=phone, limit=limit,
                                                 exclude_linkedid=exclude)
                if cid is None and not phone:
                    want = []
                assert [(r.order_no, r.order_type, r.status, r.created_at, r.description) for r in got] == want, \
                    (mode, cid, phone, limit, exclude)
        await conn.execute("RESET plan_cache_mode")


async def test_the_screen_pops_read_keeps_to_indexes_in_a_generic_plan_on_a_fresh_import(db_url):
    """The pop's connections use generic plans (cti.db.POP_POOL_SETTINGS):
    planned without the parameters' values and before any ANALYZE (a big
    customer import has just landed), the read still goes by index, and
    reads what a custom plan reads."""
    import re

    from cti.customer_repo import _FIND_CALLER_SQL, find_caller
    from cti.db import POP_POOL_SETTINGS, create_pool

    custom = await create_pool(db_url, 1, 1)
    generic = await create_pool(db_url, 1, 1, server_settings=POP_POOL_SETTINGS)
    try:
        async with custom.acquire() as conn:
            await _bulk_customers_and_orders(conn, 6000, 6000, seed=6)
        async with generic.acquire() as conn:
            assert await conn.fetchval("SHOW plan_cache_mode") == "force_generic_plan"
            await conn.execute(f"PREPARE pop_read(text, text[], text, int, text) AS {_FIND_CALLER_SQL}")
            plan = "\n".join(r[0] for r in await conn.fetch(
                "EXPLAIN EXECUTE pop_read('', ARRAY['13700000042'], '13700000042', 5, '')"))
            await conn.execute("DEALLOCATE pop_read")
            assert not re.search(r"Seq Scan on (customers|work_orders|customer_phones)\b", plan), plan
            for account, number in (("", "13700000042"), ("B77", "13900000003"), ("", "13900000003"),
                                    ("B5999", ""), ("", "13600000000")):
                args = dict(account=account, raw_number=number or None, phone=number, exclude_linkedid="77.3")
                got = await find_caller(conn, **args)
                async with custom.acquire() as c2:
                    assert got == await find_caller(c2, **args), (account, number)
    finally:
        await generic.close()
        await custom.close()

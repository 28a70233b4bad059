import asyncpg
import pytest

from cti.db import DatabaseUnavailable, create_pool, migrate, migration_files


async def test_migrations_apply_on_a_fresh_database_and_are_recorded(fresh_db_url):
    conn = await asyncpg.connect(fresh_db_url)
    try:
        applied = await migrate(conn)
        assert applied == [p.name for p in migration_files()]
        rows = await conn.fetch("SELECT name FROM schema_migrations ORDER BY name")
        assert [r["name"] for r in rows] == applied
        tables = {r["tablename"] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname='public'")}
        assert {"customers", "customer_phones", "calls", "work_orders"} <= tables
        # key-customer flags of DOMAIN.md exist
        cols = {r["column_name"] for r in await conn.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_name='customers'")}
        assert {"dedicated_transformer", "large_customer", "sensitive", "high_rise",
                "transformer_area", "feeder", "village", "area_class", "account_no"} <= cols
    finally:
        await conn.close()


async def test_migrating_twice_applies_nothing_the_second_time(db_url):
    conn = await asyncpg.connect(db_url)
    try:
        assert await migrate(conn) == []
    finally:
        await conn.close()


async def test_area_class_is_constrained(db_url):
    conn = await asyncpg.connect(db_url)
    try:
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute("INSERT INTO customers (account_no, name, area_class) VALUES ('1', 'x', 'moon')")
    finally:
        await conn.close()


async def test_unreachable_database_gives_one_clear_line():
    with pytest.raises(DatabaseUnavailable) as ei:
        await create_pool("postgresql://nobody:secret@127.0.0.1:1/none", timeout=5)
    msg = str(ei.value)
    assert "\n" not in msg
    assert "database unreachable" in msg
    assert "secret" not in msg

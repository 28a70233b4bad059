"""Shared fixtures: a real PostgreSQL (embedded pgserver unless
TEST_DATABASE_URL is set), one fresh migrated database per test that asks."""
from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path

import asyncpg
import pytest

from cti.aio import new_event_loop
from cti.db import create_pool, migrate

FIXTURES = Path(__file__).parent / "fixtures"
TRACES = FIXTURES / "ami-traces"


def pytest_asyncio_loop_factories(config, item):
    """The tests run on the loop the service runs on: uvloop when installed
    (``HOTLINE_LOOP=asyncio`` for asyncio's own)."""
    return {"service": new_event_loop}


@pytest.fixture(scope="session")
def pg_server_url():
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        yield url
        return
    import pgserver

    d = tempfile.mkdtemp(prefix="hotline-test-pg-")
    srv = pgserver.get_server(d, cleanup_mode="delete")
    try:
        yield srv.get_uri()
    finally:
        srv.cleanup()


def _with_db(url: str, dbname: str) -> str:
    # pgserver URIs look like postgresql://postgres:@/postgres?host=/tmp/x
    if "?" in url:
        base, query = url.split("?", 1)
        return base.rsplit("/", 1)[0] + "/" + dbname + "?" + query
    return url.rsplit("/", 1)[0] + "/" + dbname


@pytest.fixture
async def fresh_db_url(pg_server_url):
    """URL of a brand-new, empty database (dropped afterwards)."""
    name = "t_" + uuid.uuid4().hex[:12]
    admin = await asyncpg.connect(pg_server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = _with_db(pg_server_url, name)
    yield url
    admin = await asyncpg.connect(pg_server_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def db_url(fresh_db_url):
    """URL of a fresh database with every migration applied."""
    conn = await asyncpg.connect(fresh_db_url)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    return fresh_db_url


@pytest.fixture
async def pool(db_url):
    p = await create_pool(db_url, min_size=1, max_size=5)
    yield p
    await p.close()


CHROMIUM = shutil.which("chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest.fixture
async def browser():
    """Debian's Chromium, headless, driven by Playwright by its path."""
    from playwright.async_api import async_playwright

    assert CHROMIUM, "Debian chromium must be installed (scripts/bootstrap.sh installs it)"
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            await b.close()

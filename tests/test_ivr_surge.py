"""Surge mode in the IVR: the outage-first notice to every caller, the
callback offer (key 9) and the callback work order in PostgreSQL; over real
TCP with the scripted Asterisk peer of test_ivr_agi."""
from __future__ import annotations

import asyncpg
import pytest

from ivr.agi import start_agi_server
from ivr.menu import Callback, Route, begin, next_step
from queues.callbacks import ivr_hooks

from .test_ivr_agi import MENU, Asterisk, FakeLookup, sounds, store  # noqa: F401  (fixtures)


class FakeWallboard:
    def __init__(self, active: bool) -> None:
        self.active = active
        self.callbacks = 0

    def surge_active(self) -> bool:
        return self.active

    def callback_requested(self) -> None:
        self.callbacks += 1


def test_surge_menu_plays_the_notice_first_and_offers_a_callback():
    state, ask = begin(MENU, None, ask_account=False, surge=True)
    assert [s.name for s in ask.prompts] == ["greeting", "surge_notice", "menu"]
    state, ask = next_step(state, "2")
    assert ask.phase == "callback_offer" and [s.name for s in ask.prompts] == ["surge_offer"]
    _, action = next_step(state, "9")
    assert action == Callback(queue="complaint", customer_id=None, outage_id=None, key="2")
    _, action = next_step(state, None)  # no key: wait in the queue after all
    assert isinstance(action, Route) and action.queue == "complaint" and not action.by_default


def test_without_surge_the_menu_routes_at_once():
    state, ask = begin(MENU, None, ask_account=False)
    assert [s.name for s in ask.prompts] == ["greeting", "menu"]
    _, action = next_step(state, "1")
    assert isinstance(action, Route) and action.queue == "repair"


@pytest.fixture
async def surge_server(store, pool):  # noqa: F811
    wb = FakeWallboard(True)
    surge_active, on_callback = ivr_hooks(lambda: pool, lambda: wb)
    srv = await start_agi_server("127.0.0.1", 0, FakeLookup(), store, MENU, env_timeout=1.0, reply_timeout=5.0,
                                 surge_active=surge_active, on_callback=on_callback)
    srv.wallboard = wb
    yield srv
    await srv.stop()


async def test_callback_request_becomes_a_work_order(surge_server, store, pool):  # noqa: F811
    s = await Asterisk(surge_server.port, store, keys=["1", "9"], callerid="13900139000").call()
    assert s.played == ["greeting", "surge_notice", "menu", "surge_offer", "callback_done"]
    assert s.variables["IVR_CALLBACK"] == "1" and s.variables["IVR_CHOICE"] == "repair"
    assert s.variables["__IVR_NOTE"].startswith("回拨请求 GD")
    assert s.got_eof and not s.bad_files
    async with pool.acquire() as conn:
        row = await conn.fetchrow("SELECT order_no, status, order_type, ivr_choice, contact_phone, description, "
                                  "agent, linkedid FROM work_orders")
    assert row["status"] == "draft" and row["order_type"] == "repair" and row["ivr_choice"] == "repair"
    assert row["contact_phone"] == "13900139000" and row["description"] == "回拨请求 callback requested"
    assert row["agent"] == "" and row["linkedid"] is None
    assert s.variables["__IVR_NOTE"] == f"回拨请求 {row['order_no']}"
    assert surge_server.wallboard.callbacks == 1


async def test_caller_who_keeps_waiting_is_queued(surge_server, store, pool):  # noqa: F811
    s = await Asterisk(surge_server.port, store, keys=["2", "5"], callerid="13900139000").call()
    assert s.played == ["greeting", "surge_notice", "menu", "surge_offer"]
    assert s.variables["IVR_CHOICE"] == "complaint" and "IVR_CALLBACK" not in s.variables
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM work_orders") == 0


async def test_failed_callback_registration_queues_the_caller(store):  # noqa: F811
    async def broken(_req):
        raise asyncpg.PostgresConnectionError("database is down")
    srv = await start_agi_server("127.0.0.1", 0, FakeLookup(), store, MENU, env_timeout=1.0, reply_timeout=5.0,
                                 surge_active=lambda: True, on_callback=broken)
    try:
        s = await Asterisk(srv.port, store, keys=["1", "9"], callerid="13900139000").call()
    finally:
        await srv.stop()
    assert s.played[-2:] == ["surge_offer", "callback_failed"]
    assert s.variables["IVR_CHOICE"] == "repair" and "IVR_CALLBACK" not in s.variables


async def test_surge_off_leaves_the_ivr_unchanged(store, pool):  # noqa: F811
    surge_active, on_callback = ivr_hooks(lambda: pool, lambda: FakeWallboard(False))
    srv = await start_agi_server("127.0.0.1", 0, FakeLookup(), store, MENU, env_timeout=1.0, reply_timeout=5.0,
                                 surge_active=surge_active, on_callback=on_callback)
    try:
        s = await Asterisk(srv.port, store, keys=["3"], callerid="13900139000").call()
    finally:
        await srv.stop()
    assert s.played == ["greeting", "menu"] and s.variables["IVR_CHOICE"] == "enquiry"

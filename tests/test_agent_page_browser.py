"""Headless Chromium (Debian's, by path) sees a screen-pop, saves the work
order, and the order is read back from PostgreSQL."""
from __future__ import annotations

import asyncio

import asyncpg
import pytest

from cti.simulator import CallSpec

from .harness import login_page, running_service


async def _agent_desk(browser, svc, agent: str):
    """The agent's desk, logged in and connected; page errors collected."""
    page = await browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    await login_page(page, svc, f"agent{agent}")
    await page.goto(f"{svc.base_url}/agent/{agent}")
    await page.wait_for_selector('#conn[data-state="open"]', timeout=10_000)
    return page, errors


async def test_agent_sees_screen_pop_saves_order_and_it_is_in_postgres(db_url, browser, tmp_path):
    async with running_service(db_url) as svc:
        page, errors = await _agent_desk(browser, svc, "1001")
        assert await page.is_visible("#waiting")

        call = asyncio.create_task(svc.simulator.place_call(CallSpec(
            caller_num="013800138000", caller_name="张三", ivr_choice="repair", customer_id="",
            outage_id="", agent="1001", outcome="answered", ring_s=2, talk_s=3)))
        await page.wait_for_selector("#pop:not([hidden])", timeout=10_000)
        assert await page.text_content("#caller-name") == "张三"
        assert await page.text_content("#c-account") == "3100012345"
        assert await page.text_content("#c-ta") == "才湾2号台区"
        assert await page.input_value("#f-type") == "repair"
        assert await page.input_value("#f-contact-phone") == "13800138000"
        await page.wait_for_selector("#save:enabled")  # the draft's number follows the pop
        order_no = (await page.text_content("#order-no")).strip()
        assert order_no.startswith("GD")
        await page.screenshot(path=str(tmp_path / "screen-pop.png"))

        await page.fill("#f-description", "台区全部停电,疑似变压器故障")
        await page.click("#save")
        await page.wait_for_selector("#save-result.ok", timeout=10_000)
        assert order_no in await page.text_content("#save-result")
        await call
        assert errors == []

    conn = await asyncpg.connect(db_url)
    try:
        row = await conn.fetchrow("SELECT status, description, transformer_area FROM work_orders WHERE order_no = $1",
                                  order_no)
    finally:
        await conn.close()
    assert row["status"] == "accepted"
    assert row["description"] == "台区全部停电,疑似变压器故障"
    assert row["transformer_area"] == "才湾2号台区"


async def test_markup_in_caller_name_is_shown_as_text(db_url, browser):
    payload = '<img src=x onerror="window.__xss=1">'
    async with running_service(db_url) as svc:
        page = await browser.new_page()
        await login_page(page, svc, "agent1002")
        await page.goto(f"{svc.base_url}/agent/1002")
        await page.wait_for_selector('#conn[data-state="open"]', timeout=10_000)
        call = asyncio.create_task(svc.simulator.place_call(CallSpec(
            caller_num="13912345678", caller_name=payload, ivr_choice="complaint", customer_id="",
            outage_id="", agent="1002", outcome="answered", ring_s=1, talk_s=1)))
        await page.wait_for_selector("#pop:not([hidden])", timeout=10_000)
        await call
        assert await page.text_content("#caller-name") == payload
        assert await page.evaluate("window.__xss === undefined")
        assert await page.locator("#pop img").count() == 0
        assert await page.is_visible("#customer-unknown")
        assert not await page.is_visible("#customer")


async def test_incomplete_order_shows_the_missing_fields(db_url, browser):
    async with running_service(db_url) as svc:
        page = await browser.new_page()
        await login_page(page, svc, "agent1003")
        await page.goto(f"{svc.base_url}/agent/1003")
        await page.wait_for_selector('#conn[data-state="open"]', timeout=10_000)
        call = asyncio.create_task(svc.simulator.place_call(CallSpec(
            caller_num="13912345670", caller_name="", ivr_choice="enquiry", customer_id="",
            outage_id="", agent="1003", outcome="answered", ring_s=1, talk_s=1)))
        await page.wait_for_selector("#pop:not([hidden])", timeout=10_000)
        await call
        await page.click("#save")  # no description
        await page.wait_for_selector("#save-result.error", timeout=10_000)
        assert "诉求" in await page.text_content("#save-result")


async def test_pop_shows_the_prefilled_order_at_once_and_the_draft_number_keeps_what_was_typed(
        db_url, browser, monkeypatch):
    """The pop comes before its draft is written: the pre-filled order is on
    screen (Save waits for the number); what the agent types meanwhile stays
    when the saved draft arrives."""
    import cti.screenpop as sp

    gate = asyncio.Event()
    real = sp.orders.create_draft

    async def slow_draft(*a, **kw):
        await gate.wait()  # the database is slow to write the draft
        return await real(*a, **kw)

    monkeypatch.setattr(sp.orders, "create_draft", slow_draft)
    async with running_service(db_url) as svc:
        page, errors = await _agent_desk(browser, svc, "1001")
        call = asyncio.create_task(svc.simulator.place_call(CallSpec(
            caller_num="13800138000", caller_name="张三", ivr_choice="repair", customer_id="",
            outage_id="", agent="1001", outcome="answered", ring_s=2, talk_s=20)))
        await page.wait_for_selector("#pop:not([hidden])", timeout=10_000)
        assert await page.text_content("#c-account") == "3100012345"
        assert await page.input_value("#f-ta") == "才湾2号台区"  # pre-filled before the draft exists
        assert "生成中" in await page.text_content("#order-no") and await page.is_disabled("#save")
        await page.fill("#f-description", "整栋楼停电")
        gate.set()
        await page.wait_for_selector("#save:enabled", timeout=10_000)
        assert (await page.text_content("#order-no")).strip().startswith("GD")
        assert await page.input_value("#f-description") == "整栋楼停电"  # kept
        await page.click("#save")
        await page.wait_for_selector("#save-result.ok", timeout=10_000)
        call.cancel()
        assert errors == []
    conn = await asyncpg.connect(db_url)
    try:
        row = await conn.fetchrow("SELECT status, description FROM work_orders WHERE agent = '1001'")
    finally:
        await conn.close()
    assert row["status"] == "accepted" and row["description"] == "整栋楼停电"

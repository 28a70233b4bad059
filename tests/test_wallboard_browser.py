"""Headless Chromium (Debian's, by path): the wallboard changes when a
simulated call joins and is answered, a supervisor pauses an agent from the
page, and a failing action shows Asterisk's error."""
from __future__ import annotations

import asyncio

import aiohttp
import pytest

from cti.simulator import CallSpec

from .harness import login_page, password_for, running_service


async def open_wallboard(browser, svc):
    """A supervisor's wallboard, live; the list collects the page's script errors."""
    page = await browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    await login_page(page, svc, "supervisor")
    await page.goto(f"{svc.base_url}/wallboard")
    await page.wait_for_selector('#conn[data-state="open"]', timeout=10_000)
    return page, errors


async def test_wallboard_follows_a_call_and_pauses_an_agent(db_url, browser, tmp_path):
    payload = '<img src=x onerror="window.__xss=1">'
    async with running_service(db_url) as svc:
        page, errors = await open_wallboard(browser, svc)
        repair = 'tr[data-queue="repair"]'
        await page.wait_for_selector(f'{repair} td[data-k="offered"]:text-is("0")')

        call = asyncio.create_task(svc.simulator.place_call(CallSpec(
            "13800138000", payload, "repair", agent="1001", outcome="answered", wait_s=40, ring_s=20, talk_s=60,
            via_ivr=False)))
        # the caller joins: waiting 1, offered 1, the hostile name shown as text
        await page.wait_for_selector(f'{repair} td[data-k="waiting"]:text-is("1")', timeout=5_000)
        assert await page.text_content(f'{repair} td[data-k="offered"]') == "1"
        assert await page.text_content("#callers tbody td:nth-child(4)") == payload
        await page.screenshot(path=str(tmp_path / "wallboard-waiting.png"))
        # answered: nobody waits, the agent is on a call, answered 1
        await page.wait_for_selector(f'{repair} td[data-k="answered"]:text-is("1")', timeout=10_000)
        await page.wait_for_selector('#agents tr[data-interface="Local/1001@agents"][data-state="on_call"]',
                                     timeout=5_000)
        assert await page.text_content(f'{repair} td[data-k="waiting"]') == "0"
        assert await page.text_content(f'{repair} td[data-k="on_call"]') == "1"
        assert await page.evaluate("window.__xss") is None

        # pause 1003 in the complaint queue from the page, with a reason
        row = '#agents tr[data-interface="Local/1003@agents"]'
        await page.select_option(f"{row} select.pause-queue", "complaint")
        await page.fill(f"{row} input.reason", "培训")
        await page.click(f"{row} button.pause")
        await page.wait_for_selector("#action-result.ok:has-text('已确认')", timeout=5_000)
        await page.wait_for_selector(f"{row} td.paused-reason:text-is('培训')", timeout=3_000)
        assert "complaint:示忙(培训)" in await page.text_content(f"{row} td.queues")
        await page.wait_for_selector('tr[data-queue="complaint"] td[data-k="paused"]:text-is("1")')

        # a failing action: 1001 is not a member of the complaint queue
        row4 = '#agents tr[data-interface="Local/1001@agents"]'
        await page.select_option(f"{row4} select.pause-queue", "complaint")
        await page.click(f"{row4} button.pause")
        await page.wait_for_selector("#action-result.error", timeout=5_000)
        text = await page.text_content("#action-result")
        assert text.startswith("操作失败：该坐席不在队列中") and "Interface not found" in text

        # the supervisor switches surge mode on and off
        await page.click("#surge-on")
        await page.wait_for_selector('#surge[data-active="true"]', timeout=3_000)
        await page.click("#surge-auto")
        await page.wait_for_selector('#surge[data-active="false"][data-mode="auto"]', timeout=3_000)
        await page.screenshot(path=str(tmp_path / "wallboard.png"), full_page=True)
        await call
        assert errors == []


async def test_supervisor_sees_deadline_alerts_live_after_a_reload_and_a_met_one_leaves_at_once(db_url, browser, tmp_path):
    """The deadline worker warns before a work order's deadline and escalates
    when it passes: the supervisor's wallboard lists both as they fire (pushed
    over its websocket) and again after a reload (from the API), overdue
    first; a department name typed by someone is shown as text."""
    from datetime import datetime, timezone

    import asyncpg

    from .tickets_support import accepted, add_customer, workflow_at

    payload = '<img src=x onerror="window.__xss=1">'
    wf, _clock = workflow_at(datetime.now(timezone.utc))
    async with running_service(db_url) as svc:
        conn = await asyncpg.connect(db_url)
        try:
            warned = await accepted(conn, wf, await add_customer(conn))
            late = await accepted(conn, wf, await add_customer(conn, transformer_area="T2", feeder="F2"),
                                  description="报修超时")
            await conn.execute("UPDATE work_orders SET department = $2 WHERE id = $1", late["id"], payload)
        finally:
            await conn.close()
        page, errors = await open_wallboard(browser, svc)
        await page.wait_for_selector("#sla-alerts tr.empty", timeout=5_000)

        # one order's dispatch deadline is about to pass, the other's has passed
        conn = await asyncpg.connect(db_url)
        try:
            await conn.execute("""UPDATE work_order_deadlines SET warn_at = now() - interval '1 second'
                                  WHERE order_id = $1 AND kind = 'dispatch'""", warned["id"])
            await conn.execute("""UPDATE work_order_deadlines SET warn_at = now() - interval '2 minutes',
                                         due_at = now() - interval '1 minute'
                                  WHERE order_id = $1 AND kind = 'dispatch'""", late["id"])
        finally:
            await conn.close()
        rows = "#sla-alerts tbody tr"
        await page.wait_for_selector(f'{rows}[data-state="breached"]', timeout=15_000)
        await page.wait_for_selector(f'{rows}[data-state="warned"]', timeout=15_000)

        async def listed() -> list[tuple[str, str, str]]:
            return await page.eval_on_selector_all(rows, """trs => trs.map(tr => [
                tr.dataset.state, tr.cells[1].textContent, tr.cells[4].textContent])""")

        live = await listed()
        assert [(s, no) for s, no, _ in live] == [("breached", late["order_no"]), ("warned", warned["order_no"])]
        assert live[0][2].startswith(payload)  # as text
        assert "超时 1" in await page.text_content("#sla-count")
        assert await page.get_attribute(f'{rows}[data-state="breached"] a', "href") == f"/orders/{late['id']}"
        await page.screenshot(path=str(tmp_path / "wallboard-sla.png"), full_page=True)

        await page.reload()
        await page.wait_for_selector('#conn[data-state="open"]', timeout=10_000)
        await page.wait_for_selector(f'{rows}[data-state="breached"]', timeout=5_000)
        assert await listed() == live

        # the overdue order is dispatched: its deadline is met and leaves the
        # list at once (pushed), long before the list's minute reload
        async with aiohttp.ClientSession() as http:
            await svc.login(http, "supervisor")
            async with http.get(f"{svc.base_url}/api/tickets/orders/{late['id']}") as r:
                version = (await r.json())["version"]
            async with http.post(f"{svc.base_url}/api/tickets/orders/{late['id']}/dispatch",
                                 json={"department": "城关抢修班", "assignee": "王师傅",
                                       "assignee_phone": "13900001111", "version": version, "actor": "值班长"}) as r:
                assert r.status == 200, await r.text()
        await page.wait_for_selector(f'{rows}[data-state="breached"]', state="detached", timeout=5_000)
        assert [(s, no) for s, no, _ in await listed()] == [("warned", warned["order_no"])]
        assert "超时 0" in await page.text_content("#sla-count")
        assert await page.evaluate("window.__xss") is None
        assert errors == []


async def test_the_login_bar_sits_in_the_header_covers_no_figure_and_logs_out(db_url, browser):
    """On the wall screen nothing may hide a figure: who is logged in (a
    display name typed by an admin, shown as text) sits in the page's header,
    not over the tables; its button ends the session."""
    payload = '<img src=x onerror="window.__xss=1">'
    async with running_service(db_url) as svc:
        await svc.auth.user("supervisor")
        await svc.auth.store.create_user("supervisor", password_for("supervisor"), "supervisor",
                                         display_name=payload, replace=True)
        page, errors = await open_wallboard(browser, svc)
        await page.set_viewport_size({"width": 1280, "height": 720})
        await page.wait_for_selector("header #auth-bar #auth-user")
        assert (await page.text_content("#auth-user")).startswith(payload)
        bar = await page.eval_on_selector("#auth-bar", "e => { const r = e.getBoundingClientRect(); "
                                                       "return [r.left, r.top, r.right, r.bottom]; }")
        boxes = await page.eval_on_selector_all(
            "section, table, .card", "es => es.map(e => { const r = e.getBoundingClientRect(); "
                                     "return [r.left, r.top, r.right, r.bottom]; })")
        assert boxes and all(b[2] <= bar[0] or b[0] >= bar[2] or b[3] <= bar[1] or b[1] >= bar[3] for b in boxes)
        await page.click("#logout")
        await page.wait_for_url("**/login**", timeout=5_000)
        status = await page.evaluate("fetch('/api/me').then(r => r.status)")
        assert status == 401
        assert await page.evaluate("window.__xss") is None
        assert errors == []

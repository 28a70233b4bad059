"""Headless Chromium (Debian's, by path) drives the work-order pages of the
whole running service: an agent classifies and accepts the screen-pop's order
and dispatches it from the order view, the department signs for it, records an
extension and gives feedback on its page, the agent calls back (satisfied →
closed) from the callback worklist, and the final state is read back from
PostgreSQL.  Plus: the knowledge base answers during a call, a stale version
shows the conflict message, and script payloads in free text stay text."""
from __future__ import annotations

import asyncio
from urllib.parse import quote

import aiohttp
import asyncpg
import pytest

from cti.simulator import CallSpec
from tickets.workflow import Workflow

from .harness import login_page, running_service
from .tickets_support import accepted, add_customer

T = 10_000  # ms


async def _page(browser, errors: list[str], svc=None, user: str | None = None):
    # the pages' CSP forbids eval, which Playwright's wait_for_function(string) needs
    page = await browser.new_page(bypass_csp=True)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.set_default_timeout(T)
    if svc is not None:
        await login_page(page, svc, user)
    return page


async def test_agent_classifies_dispatches_department_feeds_back_agent_calls_back_and_closes(db_url, browser):
    errors: list[str] = []
    async with running_service(db_url) as svc:
        # -- 1. the agent's desktop: screen-pop, classify the complaint, accept ----------
        desk = await _page(browser, errors, svc, "agent1002")
        await desk.goto(f"{svc.base_url}/agent/1002")
        await desk.wait_for_selector('#conn[data-state="open"]')
        call = asyncio.create_task(svc.simulator.place_call(CallSpec(
            caller_num="13800138000", caller_name="张三", ivr_choice="complaint", customer_id="",
            outage_id="", agent="1002", ring_order=("1002", "1003"), outcome="answered", ring_s=1, talk_s=2)))
        await desk.wait_for_selector("#pop:not([hidden])")
        assert await desk.input_value("#f-type") == "complaint"
        await desk.wait_for_selector("#f-category:not([hidden])")
        await desk.wait_for_selector("#save:enabled")  # the draft's number follows the pop
        order_no = (await desk.text_content("#order-no")).strip()
        await desk.fill("#f-description", "拨打热线时坐席态度生硬,要求处理")
        # the three-level cascade: service → staff behaviour → hotline staff attitude
        await desk.wait_for_selector('#f-cat1 option[value="FW"]', state="attached")
        await desk.select_option("#f-cat1", "FW")
        await desk.select_option("#f-cat2", "FW01")
        await desk.select_option("#f-cat3", "FW0102")
        await desk.click("#accept")
        await desk.wait_for_selector("#accept-result.ok")
        assert order_no in await desk.text_content("#accept-result")
        assert "热线服务人员态度" in await desk.text_content("#accept-result")
        assert await desk.text_content("#order-status") == "已受理 Accepted"
        href = await desk.get_attribute("#order-link", "href")
        order_id = int(href.split("/orders/")[1].split("?")[0])
        await call

        # -- 2. the order view: dispatch to a department and a named person ------------
        view = await _page(browser, errors, svc, "agent1002")
        await view.goto(f"{svc.base_url}{href}")
        await view.wait_for_selector('#o-status[data-status="accepted"]')
        assert await view.input_value("#actor") == "1002"
        assert "热线服务人员态度" in await view.text_content("#o-category")
        await view.fill("#dispatch-department", "供电营业所")
        await view.fill("#dispatch-assignee", "李四")
        await view.fill("#dispatch-assignee_phone", "13900001111")
        await view.click("#dispatch-submit")
        await view.wait_for_selector('#o-status[data-status="dispatched"]')
        assert "供电营业所" in await view.text_content("#o-department")
        assert await view.locator('#events tr[data-event="OrderDispatched"]').count() == 1

        # -- 3. the department: sign for it, record an extension, feed back ------------
        dept = await _page(browser, errors, svc, "yingye")
        await dept.goto(f"{svc.base_url}/department/{quote('供电营业所')}?actor={quote('李四')}")
        card = f"#d-{order_id}"
        await dept.wait_for_selector(f'{card}[data-status="dispatched"]')
        assert order_no in await dept.text_content(card)
        await dept.click(f"#o{order_id}-start-submit")
        await dept.wait_for_selector(f'{card}[data-status="in_progress"]')
        await dept.fill(f"#o{order_id}-extend-progress", "已约谈当班坐席,等待班组长复核录音")
        await dept.fill(f"#o{order_id}-extend-responsible_person", "王主任")
        await dept.fill(f"#o{order_id}-extend-responsible_phone", "0571-88880000")
        await dept.click(f"#o{order_id}-extend-submit")
        await dept.wait_for_function(
            "document.getElementById('dept-result').textContent.includes('已延期')")
        await dept.wait_for_selector(f'{card}[data-status="in_progress"]')
        await dept.fill(f"#o{order_id}-feedback-result", "经核实,坐席态度确有不当,已批评教育并向客户致歉")
        await dept.click(f"#o{order_id}-feedback-submit")
        await dept.wait_for_function(
            "document.getElementById('dept-result').textContent.includes('已反馈')")
        await dept.wait_for_selector(card, state="detached")  # left the inbox

        # -- 4. the callback worklist: satisfied → closed --------------------------------
        cb = await _page(browser, errors, svc, "agent1002")
        await cb.goto(f"{svc.base_url}/callbacks?actor=1002")
        row = f'tr.task[data-order-no="{order_no}"]'
        await cb.wait_for_selector(row)
        assert "已批评教育" in await cb.text_content(row)       # the department's account, to check
        assert await cb.locator(f"{row} .flag.callable, {row} .flag.quiet").count() == 1
        await cb.select_option(f"#cb-{order_id}-result", "satisfied")
        await cb.click(f"#cb-{order_id}-submit")
        await cb.wait_for_selector(f"#cb-{order_id}-out.ok")
        assert "归档" in await cb.text_content(f"#cb-{order_id}-out")
        await cb.wait_for_selector(row, state="detached")      # no longer to call back

        # the order view, reloaded, shows the whole trail
        await view.reload()
        await view.wait_for_selector('#o-status[data-status="closed"]')
        shown = await view.eval_on_selector_all("#events tr", "rows => rows.map(r => r.dataset.event)")
        assert shown[-2:] == ["CallbackRecorded", "OrderClosed"]
        assert errors == []

    conn = await asyncpg.connect(db_url)
    try:
        o = await conn.fetchrow("SELECT * FROM work_orders WHERE id = $1", order_id)
        events = await conn.fetch(
            "SELECT event, actor, from_status, to_status FROM work_order_events WHERE order_id = $1 ORDER BY id",
            order_id)
        task = await conn.fetchrow("SELECT state FROM callback_tasks WHERE order_id = $1", order_id)
    finally:
        await conn.close()
    assert o["order_no"] == order_no and o["status"] == "closed" and o["closed_at"] is not None
    assert (o["category_l1"], o["category_l2"], o["category_l3"]) == ("FW", "FW01", "FW0102")
    assert (o["department"], o["assignee"], o["assignee_phone"]) == ("供电营业所", "李四", "13900001111")
    assert o["responsible_person"] == "王主任" and o["callback_result"] == "satisfied"
    assert [(e["event"], e["actor"]) for e in events] == [
        ("OrderAccepted", "1002"), ("OrderDispatched", "1002"), ("OrderStarted", "李四"),
        ("ExtensionRecorded", "李四"), ("FeedbackGiven", "李四"), ("CallbackRecorded", "1002"),
        ("OrderClosed", "1002")]
    assert [e["to_status"] for e in events if e["to_status"] and e["to_status"] != e["from_status"]] == [
        "accepted", "dispatched", "in_progress", "feedback", "callback", "closed"]
    assert task["state"] != "pending"


async def test_knowledge_search_during_a_call_and_on_its_page(db_url, browser):
    errors: list[str] = []
    async with running_service(db_url) as svc:
        desk = await _page(browser, errors, svc, "agent1001")
        await desk.goto(f"{svc.base_url}/agent/1001")
        await desk.wait_for_selector('#conn[data-state="open"]')
        await desk.fill("#kb-q", "阶梯电价")
        await desk.press("#kb-q", "Enter")
        first = "#kb-results .kb-article .kb-title"
        await desk.wait_for_selector(first)
        assert "居民阶梯电价怎么计算" in await desk.text_content(first)

        kb = await _page(browser, errors, svc, "agent1001")
        await kb.goto(f"{svc.base_url}/knowledge")
        await kb.wait_for_selector("#kb-results .kb-article")            # all articles, by topic
        await kb.fill("#kb-q", "新装")
        await kb.press("#kb-q", "Enter")
        await kb.wait_for_function(
            "document.querySelector('#kb-results .kb-article .kb-title')?.textContent.includes('新装用电')")
        body = await kb.text_content("#kb-results .kb-article .kb-body")
        assert body and len(body) > 20
        assert errors == []


async def test_stale_version_shows_the_conflict_and_script_payloads_stay_text(db_url, browser):
    payload = '<script>window.__xss=1</script><img src=x onerror="window.__xss=2">'
    name = '<img src=x onerror="window.__xss=3">王五'
    conn = await asyncpg.connect(db_url)
    try:
        customer = await add_customer(conn, name=name)
        order = await accepted(conn, Workflow(), customer, description=payload)
    finally:
        await conn.close()
    errors: list[str] = []
    async with running_service(db_url) as svc, aiohttp.ClientSession() as http:
        await svc.login(http, "agent1003")
        view = await _page(browser, errors, svc, "agent1001")
        await view.goto(f"{svc.base_url}/orders/{order['id']}?actor=1001")
        await view.wait_for_selector('#o-status[data-status="accepted"]')
        assert await view.text_content("#o-description") == payload
        assert await view.text_content("#o-contact") == name
        assert await view.locator("#order img, #order script, #events img").count() == 0

        # someone else dispatches first, from the version the page also holds
        async with http.post(f"{svc.base_url}/api/tickets/orders/{order['id']}/dispatch", json={
                "actor": "1003", "version": order["version"], "department": "抢修班", "assignee": "赵六",
                "assignee_phone": "13900002222"}) as r:
            assert r.status == 200, await r.text()
        await view.fill("#dispatch-department", "抢修班")
        await view.fill("#dispatch-assignee", "钱七")
        await view.fill("#dispatch-assignee_phone", "13900003333")
        await view.click("#dispatch-submit")
        await view.wait_for_selector("#conflict:not([hidden])")
        assert "工单已被他人修改" in await view.text_content("#conflict")
        assert "changed by someone else" in await view.text_content("#dispatch-result")
        await view.click("#reload")
        await view.wait_for_selector('#o-status[data-status="dispatched"]')
        assert await view.is_hidden("#conflict")
        assert "赵六" in await view.text_content("#o-department")     # the other person's save stands

        # the search page and the department inbox show the payloads as text too
        search = await _page(browser, errors, svc, "agent1001")
        await search.goto(f"{svc.base_url}/orders?q={quote(order['order_no'])}")
        await search.wait_for_selector(f'tr.order-row[data-order-no="{order["order_no"]}"]')
        assert name in await search.text_content("#results")
        dept = await _page(browser, errors, svc, "qiangxiu")
        await dept.goto(f"{svc.base_url}/department/{quote('抢修班')}")
        await dept.wait_for_selector(f"#d-{order['id']}")
        assert payload in await dept.text_content(f"#d-{order['id']}")
        for p in (view, search, dept):
            assert await p.evaluate("window.__xss === undefined")
            assert await p.locator("main img").count() == 0
        assert errors == []

    conn = await asyncpg.connect(db_url)
    try:
        row = await conn.fetchrow("SELECT assignee, description FROM work_orders WHERE id = $1", order["id"])
        n = await conn.fetchval("SELECT count(*) FROM work_order_events WHERE order_id = $1 AND event = "
                                "'OrderDispatched'", order["id"])
    finally:
        await conn.close()
    assert row["assignee"] == "赵六" and n == 1
    assert row["description"] == payload   # stored as typed; the pages only display it

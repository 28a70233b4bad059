"""Headless Chromium (Debian's, by path): the wallboard changes when a
simulated call joins and is answered, a supervisor pauses an agent from the
page, and a failing action shows Asterisk's error."""
from __future__ import annotations

import asyncio

import pytest

from cti.simulator import CallSpec

from .harness import login_page, running_service


async def test_wallboard_follows_a_call_and_pauses_an_agent(db_url, browser, tmp_path):
    payload = '<img src=x onerror="window.__xss=1">'
    async with running_service(db_url) as svc:
        page = await browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        await login_page(page, svc, "supervisor")
        await page.goto(f"{svc.base_url}/wallboard")
        await page.wait_for_selector('#conn[data-state="open"]', timeout=10_000)
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

"""Headless Chromium (Debian's, by path) shows the outage page: active and
coming outages, the late-notice flag, the prompt state, hostile text as text."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from cti.web import add_routes, pool_key
from ivr.outage_web import add_outage_routes

from .harness import auth_for_app

XSS = '<img src=x onerror="window.__xss=1">'


async def test_outage_page_lists_active_and_coming_with_flags_and_shows_markup_as_text(pool, browser):
    app = web.Application()
    app[pool_key] = pool
    add_routes(app)
    add_outage_routes(app)
    auth = auth_for_app(app, pool)
    server = TestServer(app)
    await server.start_server()
    try:
        now = datetime.now(timezone.utc)
        base = f"http://{server.host}:{server.port}"
        auth.base_url = base
        import aiohttp
        async with aiohttp.ClientSession() as s:
            await auth.login(s, "qiangxiu")
            r = await s.post(base + "/api/outages", json={
                "kind": "fault", "reason": "10kV才湾线故障 " + XSS, "actor": "调度所",
                "areas": [{"type": "transformer_area", "name": "才湾2号台区"}, {"type": "village", "name": XSS}],
                "start_at": (now - timedelta(minutes=10)).isoformat(),
                "expected_restore_at": (now + timedelta(hours=3)).isoformat()})
            assert r.status == 201
            r = await s.post(base + "/api/outages", json={
                "kind": "planned", "reason": "线路检修", "actor": "运检部",
                "areas": [{"type": "feeder", "name": "10kV城东线"}],
                "start_at": (now + timedelta(days=1)).isoformat(),
                "expected_restore_at": (now + timedelta(days=1, hours=8)).isoformat()})
            assert r.status == 201 and (await r.json())["late_notice"] is True

        page = await browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        await auth.login_page(page, "agent1001")
        await page.goto(base + "/outages")
        await page.wait_for_selector('#status[data-state="ok"]', timeout=10_000)
        assert await page.text_content("#active-count") == "1"
        assert await page.text_content("#coming-count") == "1"
        active = page.locator("#active-rows tr")
        assert XSS in await active.locator(".reason").text_content()
        assert XSS in await active.locator(".areas").text_content()
        assert await active.locator(".prompt").get_attribute("data-state") == "pending"
        coming = page.locator("#coming-rows tr")
        assert "公告不足" in await coming.locator(".notice").text_content()
        assert await page.evaluate("window.__xss") is None
        assert await page.locator("img").count() == 0
        assert errors == []
    finally:
        await server.close()

"""Headless Chromium (Debian's, by path): a supervisor runs a month report
from /reports, sees the progress finish, the figures and a hostile area
name as text, and downloads the CSV and XLSX."""
from __future__ import annotations

import io
from datetime import datetime

import pytest
from openpyxl import load_workbook

from cti.web import pool_key
from queues.metrics import SHANGHAI

from .harness import login_page, running_service

HOSTILE = '<img src=x onerror="window.__xss=1">台区'


async def _seed(pool):
    t = datetime(2026, 3, 1, 0, 0, 5, tzinfo=SHANGHAI)
    async with pool.acquire() as conn:
        await conn.execute(
            """INSERT INTO calls (linkedid, caller_num, queue, agent, state, outcome, started_at, queued_at,
                                  answered_at, ended_at, hold_time_s, talk_time_s)
               VALUES ('r.1', '13800138000', 'repair', '1001', 'ended', 'answered', $1, $1,
                       $1::timestamptz + interval '12 s', $1::timestamptz + interval '3 min', 12, 160),
                      ('r.2', '13800138001', 'repair', '', 'ended', 'abandoned', $1, $1, NULL,
                       $1::timestamptz + interval '40 s', 40, NULL),
                      ('r.3', '13800138002', '', '', 'ended', '', $1, NULL, NULL,
                       $1::timestamptz + interval '30 s', NULL, NULL)""",
            t)
        for i in (1, 2):
            await conn.execute(
                """INSERT INTO work_orders (order_no, status, order_type, created_at, accepted_at, transformer_area)
                   VALUES ($1, 'accepted', 'complaint', $2, $2, $3)""", f"GDR{i}", t, HOSTILE)


async def test_month_report_page_progress_figures_and_downloads(db_url, browser, tmp_path):
    async with running_service(db_url) as svc:
        await _seed(svc.app[pool_key])
        page = await browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        await login_page(page, svc, "supervisor")
        await page.goto(f"{svc.base_url}/")
        assert await page.locator('a[href="/reports"]').count() == 1

        await page.goto(f"{svc.base_url}/reports")
        assert await page.input_value("#period")  # defaults to the current month
        await page.select_option("#kind", "month")
        await page.fill("#period", "2026-03")
        await page.click("#run")
        await page.wait_for_selector('#status[data-state="done"]', timeout=15_000)
        assert await page.evaluate("document.getElementById('progress').value") == 1
        total = 'table[data-section="calls"] tr[data-row="total"]'
        assert await page.text_content(f'{total} td[data-k="offered"]') == "2"
        assert await page.text_content(f'{total} td[data-k="answered"]') == "1"
        assert await page.text_content(f'{total} td[data-k="answer_rate"]') == "50.0%"
        assert await page.text_content(f'{total} td[data-k="self_service"]') == "1"
        assert await page.text_content(f'{total} td[data-k="incoming"]') == "3"
        area = 'table[data-section="complaint_areas"] tbody tr'
        assert await page.text_content(f"{area} td[data-k='area']") == HOSTILE
        assert await page.text_content(f"{area} td[data-k='flags']") == "2次及以上"
        assert await page.get_attribute(area, "class") == "flagged"
        assert await page.evaluate("window.__xss") is None
        await page.screenshot(path=str(tmp_path / "reports.png"), full_page=True)

        # the downloads, with the browser's session
        csv_href = await page.get_attribute("#csv-link", "href")
        resp = await page.request.get(svc.base_url + csv_href)
        assert resp.status == 200
        body = await resp.body()
        assert body.startswith(b"\xef\xbb\xbf") and "人工接通率" in body.decode("utf-8-sig")
        resp = await page.request.get(svc.base_url + await page.get_attribute("#xlsx-link", "href"))
        assert resp.status == 200
        wb = load_workbook(io.BytesIO(await resp.body()))
        assert "话务总览" in wb.sheetnames and "台区投诉" in wb.sheetnames

        # a bad period is explained, not thrown
        await page.fill("#period", "2026-13")
        await page.click("#run")
        await page.wait_for_selector("#error:has-text('时段不存在')", timeout=5_000)
        assert errors == []

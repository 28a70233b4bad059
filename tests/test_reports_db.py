"""History reports on PostgreSQL with hand-computed figures: calls and work
orders inserted with known times (Beijing midnight, month, quarter and year
ends), every figure checked; CSV / XLSX content; progress; the event loop
stays free during a year over a large calls table."""
from __future__ import annotations

import asyncio
import csv
import io
import itertools
import time
from datetime import datetime, timedelta

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from openpyxl import load_workbook

from queues import report_repo, report_routes
from queues import reports as r
from queues.metrics import SHANGHAI
from queues.model import tally_of
from queues.repository import stints_between
from queues.report_export import to_xlsx

from .harness import auth_for_app

_seq = itertools.count(1)
NOW = datetime(2026, 4, 10, 12, 0, tzinfo=SHANGHAI)


def bj(y, mo, d, hh=0, mm=0, ss=0) -> datetime:
    return datetime(y, mo, d, hh, mm, ss, tzinfo=SHANGHAI)


async def call(conn, *, queue="", queued=None, started=None, outcome="", hold=None, talk=None, ended=True,
               ivr_choice="", caller="13900000000", agent=None):
    n = next(_seq)
    started = started or queued
    end = (queued or started) + timedelta(minutes=5) if ended else None
    answered = queued + timedelta(seconds=hold or 0) if outcome == "answered" else None
    await conn.execute(
        """INSERT INTO calls (linkedid, caller_num, queue, agent, state, outcome, started_at, queued_at,
                              answered_at, ended_at, hold_time_s, talk_time_s, ivr_choice)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)""",
        f"17000.{n}", caller, queue, agent if agent is not None else ("1001" if answered else ""),
        "ended" if ended else ("queued" if queued else "ivr"), outcome, started, queued, answered, end, hold,
        talk, ivr_choice)


async def seed_calls(conn):
    # March 2026 (Beijing): c1 at exactly 00:00 on the 1st, c3 at 23:59:59 on the 31st
    await call(conn, queue="repair", queued=bj(2026, 3, 1), outcome="answered", hold=10, talk=100)        # c1
    await call(conn, queue="repair", queued=bj(2026, 2, 28, 23, 59, 59), outcome="answered", hold=5, talk=50)  # Feb
    await call(conn, queue="complaint", queued=bj(2026, 3, 31, 23, 59, 59), outcome="abandoned", hold=30)  # c3
    await call(conn, queue="repair", queued=bj(2026, 4, 1), outcome="answered", hold=8, talk=60)           # April
    await call(conn, queue="enquiry", queued=bj(2026, 3, 15, 10), outcome="answered", hold=25, talk=200)   # c5
    await call(conn, queue="enquiry", queued=bj(2026, 3, 15, 11), outcome="unanswered")                    # c6 exited
    await call(conn, queue="repair", queued=bj(2026, 3, 15, 12), ended=False)                              # c7 waiting
    # 2026-04-01 07:00 Beijing = 2026-03-31 23:00 UTC: April here, whatever UTC says
    await call(conn, queue="complaint", queued=bj(2026, 4, 1, 7), outcome="answered", hold=3, talk=30)
    # the year end
    await call(conn, queue="repair", queued=bj(2025, 12, 31, 23, 59, 59), outcome="answered", hold=4, talk=40)
    await call(conn, queue="repair", queued=bj(2026, 1, 1), outcome="abandoned", hold=5)
    # IVR only
    await call(conn, started=bj(2026, 3, 10, 9))                                    # s1 self-service
    await call(conn, started=bj(2026, 3, 10, 9, 5), ivr_choice="repair")           # s2 callback request
    await call(conn, started=bj(2026, 3, 10, 9, 10), caller="1001")                # internal: not counted
    await call(conn, started=bj(2026, 3, 20, 9), ended=False)                      # still in the IVR
    await call(conn, started=bj(2026, 2, 28, 23, 59, 59))                          # February
    await call(conn, started=bj(2026, 3, 31, 23, 59, 59))                          # s6 self-service
    await call(conn, started=bj(2026, 3, 12, 8), caller="")                        # withheld number, self-service


async def customer(conn, area: str) -> int:
    n = next(_seq)
    return await conn.fetchval(
        "INSERT INTO customers (account_no, name, transformer_area) VALUES ($1, $2, $3) RETURNING id",
        f"31{n:08d}", f"客户{n}", area)


async def order(conn, *, type_, accepted, status="accepted", department="", customer_id=None, area="",
                dispatched=None, feedback=None, cat=("", "", ""), appeal="", arrived=None, phone="") -> int:
    n = next(_seq)
    return await conn.fetchval(
        """INSERT INTO work_orders (order_no, status, order_type, created_at, accepted_at, department, assignee,
               customer_id, transformer_area, dispatched_at, feedback_at, category_l1, category_l2, category_l3,
               appeal_status, arrived_at, contact_phone)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17) RETURNING id""",
        f"GD{n:010d}", status, type_, accepted, accepted, department, "李四" if department else "", customer_id, area,
        dispatched, feedback, *cat, appeal, arrived, phone)


async def deadline(conn, order_id, kind, due, state="pending", met_at=None, breached_at=None):
    await conn.execute(
        """INSERT INTO work_order_deadlines (order_id, kind, due_at, warn_at, state, met_at, breached_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7)""", order_id, kind, due, due - timedelta(minutes=10), state, met_at,
        breached_at)


async def task(conn, order_id, state, due, result=""):
    await conn.execute(
        """INSERT INTO callback_tasks (order_id, reason, not_before, due_at, state, result, done_at)
           VALUES ($1, 'feedback', $2, $3, $4, $5, $6)""", order_id, due - timedelta(hours=4), due, state, result,
        due if state == "done" else None)


CAT = ("FW", "FW01", "FW0101")


async def seed_orders(conn):
    ca, cb, cd = await customer(conn, "A台区"), await customer(conn, "B台区"), await customer(conn, "D台区")
    o1 = await order(conn, type_="repair", accepted=bj(2026, 3, 2, 10), status="closed", department="抢修班",
                     dispatched=bj(2026, 3, 2, 10, 5), feedback=bj(2026, 3, 4), arrived=bj(2026, 3, 2, 10, 40))
    o2 = await order(conn, type_="repair", accepted=bj(2026, 3, 5, 10), status="dispatched", department="抢修班",
                     dispatched=bj(2026, 3, 5, 10, 5))
    o3 = await order(conn, type_="complaint", accepted=bj(2026, 3, 10), status="callback", department="营业所",
                     dispatched=bj(2026, 3, 10, 1), feedback=bj(2026, 3, 12), customer_id=ca, area="A台区", cat=CAT)
    await order(conn, type_="complaint", accepted=bj(2026, 3, 20), customer_id=ca, area="A台区", cat=CAT)       # o4
    o5 = await order(conn, type_="enquiry", accepted=bj(2026, 3, 31, 23, 30), status="closed")
    await order(conn, type_="enquiry", accepted=bj(2026, 4, 1, 0, 10), status="closed")                      # April
    await order(conn, type_="repair", accepted=bj(2026, 3, 6), status="draft")
    await order(conn, type_="repair", accepted=bj(2026, 3, 6), status="cancelled")
    await order(conn, type_="complaint", accepted=bj(2026, 2, 20), customer_id=cb, area="B台区")               # o9
    await order(conn, type_="complaint", accepted=bj(2026, 3, 3), customer_id=cb, area="")                   # o10
    await order(conn, type_="complaint", accepted=bj(2026, 3, 12), area="C台区", appeal="upheld")             # o11
    await order(conn, type_="complaint", accepted=bj(2026, 1, 15), customer_id=cd, area="D台区")              # o12
    await order(conn, type_="complaint", accepted=bj(2026, 3, 15), customer_id=cd, area="D 台区")             # o13
    # deadlines (due in March unless said)
    await deadline(conn, o1, "arrival", bj(2026, 3, 2, 11), "met", met_at=bj(2026, 3, 2, 10, 40))
    await deadline(conn, o1, "repair_feedback", bj(2026, 3, 3), "met", met_at=bj(2026, 3, 4))           # late
    await deadline(conn, o2, "department_reply", bj(2026, 3, 9), "breached", breached_at=bj(2026, 3, 9))
    await deadline(conn, o2, "arrival", bj(2026, 3, 5, 11))                                             # not fired
    await deadline(conn, o3, "department_reply", bj(2026, 3, 13), "met", met_at=bj(2026, 3, 12))
    await deadline(conn, o3, "callback", bj(2026, 3, 14), "breached", breached_at=bj(2026, 3, 14))      # hotline's
    await deadline(conn, o2, "department_reply", bj(2026, 4, 2), "breached", breached_at=bj(2026, 4, 2))  # April
    await deadline(conn, o3, "repair_feedback", bj(2026, 3, 20), "cancelled")
    # callback tasks
    await task(conn, o1, "done", bj(2026, 3, 5), "satisfied")
    await task(conn, o3, "done", bj(2026, 3, 13), "unsatisfied")
    await task(conn, o3, "pending", bj(2026, 3, 25))       # overdue at NOW
    await task(conn, o5, "pending", bj(2026, 4, 20))       # not yet due: left out


async def report(pool, kind, value, progress=None) -> r.Report:
    return await report_repo.compute_report(pool, r.parse_period(kind, value), now=NOW, threshold_s=20,
                                            progress=progress)


def rows_of(t: r.Table) -> dict:
    return {x["_row"]: x for x in t.rows}


async def test_month_call_figures(pool):
    async with pool.acquire() as conn:
        await seed_calls(conn)
    rep = await report(pool, "month", "2026-03")
    calls = rows_of(rep.section("calls"))
    total = calls["total"]
    assert (total["incoming"], total["self_service"], total["ivr_callbacks"]) == (10, 3, 1)
    assert (total["offered"], total["answered"], total["abandoned"], total["exited"]) == (5, 2, 1, 1)
    assert total["answer_rate"] == pytest.approx(2 / 5)
    assert total["abandon_rate"] == pytest.approx(1 / 5)
    assert total["service_level"] == pytest.approx(1 / 4)        # c1 within 20 s; c5, c3, c6 not
    assert total["avg_wait_s"] == pytest.approx((10 + 25 + 30) / 3)
    assert total["asa_s"] == pytest.approx((10 + 25) / 2)
    # the first and the last second of the month
    assert (calls["2026-03-01"]["offered"], calls["2026-03-01"]["answered"]) == (1, 1)
    assert (calls["2026-03-31"]["offered"], calls["2026-03-31"]["abandoned"], calls["2026-03-31"]["self_service"]) \
        == (1, 1, 1)
    assert calls["2026-03-02"]["answer_rate"] is None
    queues = rows_of(rep.section("calls_by_queue"))
    assert {q: x["offered"] for q, x in queues.items()} == {"repair": 2, "complaint": 1, "enquiry": 2}

    # the same tallies as the wallboard's restart seed (tally_of over the rows)
    async with pool.acquire() as conn:
        p = r.parse_period("month", "2026-03")
        sql = await report_repo.call_tallies(conn, p.start, p.end, 20)
        py = tally_of(await stints_between(conn, p.start.timestamp(), p.end.timestamp()), 20)
    assert sql == py


async def test_day_quarter_and_year_boundaries(pool):
    async with pool.acquire() as conn:
        await seed_calls(conn)
    day = await report(pool, "day", "2026-03-01")
    d = rows_of(day.section("calls"))
    assert (d["00"]["offered"], d["total"]["offered"]) == (1, 1)
    feb_last = await report(pool, "day", "2026-02-28")
    t = rows_of(feb_last.section("calls"))
    assert (t["total"]["offered"], t["23"]["offered"], t["total"]["self_service"]) == (1, 1, 1)
    apr1 = rows_of((await report(pool, "day", "2026-04-01")).section("calls"))
    assert (apr1["total"]["offered"], apr1["00"]["offered"], apr1["07"]["offered"]) == (2, 1, 1)
    q1 = rows_of((await report(pool, "quarter", "2026-Q1")).section("calls"))
    assert (q1["total"]["offered"], q1["2026-01"]["offered"], q1["2026-02"]["offered"], q1["2026-03"]["offered"]) \
        == (7, 1, 1, 5)
    assert q1["2026-01"]["abandoned"] == 1
    q2 = rows_of((await report(pool, "quarter", "2026-Q2")).section("calls"))
    assert q2["total"]["offered"] == 2
    y = rows_of((await report(pool, "year", "2026")).section("calls"))
    assert (y["total"]["offered"], y["2026-04"]["offered"], y["2026-12"]["offered"]) == (9, 2, 0)
    y25 = rows_of((await report(pool, "year", "2025")).section("calls"))
    assert (y25["total"]["offered"], y25["2025-12"]["answered"]) == (1, 1)


async def test_month_work_order_figures(pool):
    async with pool.acquire() as conn:
        await seed_orders(conn)
    rep = await report(pool, "month", "2026-03")
    f = rows_of(rep.section("order_figures"))
    assert f["accepted"]["value"] == 8
    assert (f["processing_rate"]["numerator"], f["processing_rate"]["denominator"]) == (3, 8)
    assert (f["feedback_rate"]["numerator"], f["feedback_rate"]["denominator"]) == (2, 3)
    assert (f["callback_rate"]["numerator"], f["callback_rate"]["denominator"]) == (2, 3)
    assert f["satisfaction_rate"]["value"] == pytest.approx(1 / 2)
    assert (f["arrival_rate"]["numerator"], f["arrival_rate"]["denominator"]) == (1, 2)
    assert f["arrival_minutes"]["value"] == pytest.approx(40.0)
    assert f["valid_complaints"]["value"] == 4
    assert (f["repeat_complaints"]["numerator"], f["repeat_complaints"]["value"]) == (2, pytest.approx(0.5))

    types = rows_of(rep.section("orders_by_type"))
    assert {k: v["n"] for k, v in types.items()} == {"complaint": 5, "repair": 2, "enquiry": 1, "total": 8}
    cats = rows_of(rep.section("complaint_categories"))
    assert cats["FW/FW01/FW0101"]["total"] == 2 and cats["FW/FW01/FW0101"]["l3"] == "营业厅人员服务态度"
    assert cats["//"]["total"] == 3 and cats["//"]["valid"] == 2

    overdue = rows_of(rep.section("overdue"))
    assert (overdue["抢修班"]["due"], overdue["抢修班"]["overdue"], overdue["抢修班"]["overdue_orders"]) == (4, 3, 2)
    assert overdue["抢修班"]["overdue_rate"] == pytest.approx(0.75)
    assert (overdue["营业所"]["due"], overdue["营业所"]["overdue"]) == (1, 0)

    areas = {x["area"]: x for x in rep.section("complaint_areas").rows}
    assert set(areas) == {"A台区", "B台区", "D 台区"}          # C's complaint was appealed away
    assert (areas["A台区"]["complaints"], areas["A台区"]["two_or_more"], areas["A台区"]["two_months_running"]) \
        == (2, True, False)
    # B: February and March (March's order has no area: the customer's is used)
    assert (areas["B台区"]["complaints"], areas["B台区"]["two_or_more"], areas["B台区"]["two_months_running"]) \
        == (1, False, True)
    assert areas["D 台区"]["flagged"] is False                  # January and March: not running
    repeats = rep.section("repeat_complaints").rows
    assert sorted(x["repeats"] for x in repeats) == [1, 1]


async def test_quarter_area_flags_and_april(pool):
    async with pool.acquire() as conn:
        await seed_orders(conn)
    q1 = {x["area"].replace(" ", ""): x for x in (await report(pool, "quarter", "2026-Q1")).section(
        "complaint_areas").rows}
    # D: January "D台区" and March "D 台区" are one area (ticket_area_key), two complaints, not consecutive
    assert (q1["D台区"]["complaints"], q1["D台区"]["two_or_more"], q1["D台区"]["two_months_running"]) == (2, True, False)
    assert (q1["B台区"]["complaints"], q1["B台区"]["two_months_running"]) == (2, True)
    april = await report(pool, "month", "2026-04")
    assert april.section("complaint_areas").rows == []
    assert rows_of(april.section("order_figures"))["accepted"]["value"] == 1
    assert rows_of(april.section("overdue"))["抢修班"]["overdue"] == 1


async def test_csv_and_xlsx_downloads_carry_the_figures(pool):
    async with pool.acquire() as conn:
        await seed_calls(conn)
        await seed_orders(conn)
    rep = await report(pool, "month", "2026-03")
    body = r.to_csv(rep)
    assert body[:3] == b"\xef\xbb\xbf"
    lines = list(csv.reader(io.StringIO(body.decode("utf-8-sig"))))
    total = next(x for x in lines if x and x[0] == "合计 Total" and len(x) > 5)
    header = next(x for x in lines if x and x[0] == "时段 Period")
    assert dict(zip(header, total))["人工接通率 Answer rate"] == "40.0%"
    assert dict(zip(header, total))["自助服务 Self-service"] == "3"

    wb = load_workbook(io.BytesIO(to_xlsx(rep)))
    assert wb.sheetnames[:2] == ["话务总览", "分队列话务"]
    ws = wb["话务总览"]
    hdr = [c.value for c in ws[3]]
    last = [c.value for c in ws[3 + len(rep.section("calls").rows)]]
    row = dict(zip(hdr, last))
    assert row["时段 Period"] == "合计 Total"
    assert row["转人工 Offered to agents"] == 5 and row["人工接通率 Answer rate"] == pytest.approx(0.4)
    rate_col = hdr.index("人工接通率 Answer rate") + 1
    assert ws.cell(3 + len(rep.section("calls").rows), rate_col).number_format == "0.0%"
    figs = wb["工单指标"]
    vals = {figs.cell(i, 1).value: figs.cell(i, 2).value for i in range(4, figs.max_row + 1)}
    assert vals["处理率 Processing rate"] == pytest.approx(3 / 8)
    assert vals["受理工单 Orders accepted"] == 8
    areas = wb["台区投诉"]
    flags = {areas.cell(i, 1).value: areas.cell(i, 4).value for i in range(4, areas.max_row + 1)}
    assert flags["B台区"] == "连续两月" and flags["A台区"] == "2次及以上"


async def test_progress_counts_every_step(pool):
    seen = []
    await report(pool, "year", "2026", progress=lambda d, t, s: seen.append((d, t, s)))
    assert [d for d, _, _ in seen] == list(range(1, 12 + 6 + 1))
    assert {t for _, t, _ in seen} == {18}
    assert seen[0][2] == "话务 2026年1月"


async def test_report_job_api_progress_and_downloads(pool, monkeypatch):
    app = web.Application()
    helper = auth_for_app(app, pool)
    jobs = report_routes.add_report_routes(app, get_pool=lambda: pool, threshold_s=20)
    async with TestClient(TestServer(app)) as client:
        # not logged in / agents: refused
        resp = await client.post("/api/reports", json={"kind": "month", "period": "2026-03"})
        assert resp.status == 401
        await helper.login(client, "agent1001")
        resp = await client.post("/api/reports", json={"kind": "month", "period": "2026-03"})
        assert resp.status == 403
        await helper.login(client, "supervisor")
        resp = await client.post("/api/reports", json={"kind": "month", "period": "2026-13"})
        assert resp.status == 422 and "时段" in (await resp.json())["message"]

        # a job held half-way shows its progress
        gate = asyncio.Event()
        real = report_repo.compute_report

        async def slow(pool_, period, *, now, threshold_s, progress=None):
            progress(1, 3, "话务")
            await gate.wait()
            return await real(pool_, period, now=now, threshold_s=threshold_s, progress=progress)

        monkeypatch.setattr(report_routes, "compute_report", slow)
        resp = await client.post("/api/reports", json={"kind": "month", "period": "2026-03"})
        assert resp.status == 202
        job = await resp.json()
        for _ in range(50):
            st = await (await client.get(f"/api/reports/{job['id']}")).json()
            if st["state"] == "running":
                break
            await asyncio.sleep(0.01)
        assert (st["state"], st["done"], st["total"], st["step"]) == ("running", 1, 3, "话务")
        assert st["progress"] == pytest.approx(1 / 3) and "report" not in st
        assert (await client.get(f"/api/reports/{job['id']}/csv")).status == 409
        gate.set()
        for _ in range(200):
            st = await (await client.get(f"/api/reports/{job['id']}")).json()
            if st["state"] == "done":
                break
            await asyncio.sleep(0.02)
        assert st["state"] == "done" and st["progress"] == 1.0
        assert st["report"]["period"] == "2026-03" and st["report"]["sections"][0]["id"] == "calls"

        csv_resp = await client.get(st["csv_url"])
        assert csv_resp.status == 200 and csv_resp.headers["Content-Type"].startswith("text/csv")
        assert "filename*=UTF-8''" in csv_resp.headers["Content-Disposition"]
        assert (await csv_resp.read())[:3] == b"\xef\xbb\xbf"
        x = await client.get(st["xlsx_url"])
        assert x.status == 200
        assert load_workbook(io.BytesIO(await x.read())).sheetnames[0] == "话务总览"
        assert (await client.get("/api/reports/nope")).status == 404
    assert jobs.get(job["id"]) is not None


async def test_year_report_over_many_calls_keeps_the_event_loop_free(pool):
    async with pool.acquire() as conn:
        await conn.execute(
            """INSERT INTO calls (linkedid, caller_num, queue, state, outcome, started_at, queued_at, answered_at,
                                  ended_at, hold_time_s, talk_time_s)
               SELECT 'bulk.' || i, '139' || lpad(i::text, 8, '0'),
                      (ARRAY['repair', 'complaint', 'enquiry'])[1 + i % 3],
                      'ended', CASE WHEN i % 10 = 0 THEN 'abandoned' ELSE 'answered' END, t, t,
                      CASE WHEN i % 10 = 0 THEN NULL ELSE t + interval '15 seconds' END, t + interval '3 minutes',
                      15, CASE WHEN i % 10 = 0 THEN NULL ELSE 150 END
                 FROM generate_series(0, 79999) AS i,
                      LATERAL (SELECT timestamptz '2026-01-01 00:00+08' + (i * interval '6 minutes') AS t) x""")
    lags = []
    stop = asyncio.Event()

    async def ticker():
        while not stop.is_set():
            t0 = time.perf_counter()
            await asyncio.sleep(0.01)
            lags.append(time.perf_counter() - t0 - 0.01)

    tick = asyncio.create_task(ticker())
    t0 = time.perf_counter()
    rep = await report(pool, "year", "2026")
    elapsed = time.perf_counter() - t0
    stop.set()
    await tick
    total = rows_of(rep.section("calls"))["total"]
    # 80 000 calls 6 minutes apart from 2026-01-01: all of them fall in 2026 (~333 days)
    assert total["offered"] == 80000 and total["abandoned"] == 8000 and total["answered"] == 72000
    assert total["incoming"] == 80000
    assert max(lags) < 0.2, (max(lags), elapsed)

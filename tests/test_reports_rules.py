"""History reports: the pure rules (periods, flags, CSV) — queues/reports.py."""
from __future__ import annotations

import csv
import io
from datetime import date, datetime, timedelta, timezone

import pytest

from queues import reports as r
from queues.model import Tally


def test_periods_follow_the_beijing_calendar():
    p = r.parse_period("day", "2026-03-01")
    assert p.start == datetime(2026, 2, 28, 16, 0, tzinfo=timezone.utc)  # 00:00 Beijing = 16:00 UTC the day before
    assert p.end - p.start == timedelta(days=1)
    assert [b.key for b in p.buckets()][:2] == ["00", "01"] and len(p.buckets()) == 24

    m = r.parse_period("month", "2026-2")
    assert (m.key, m.first, m.after, len(m.buckets())) == ("2026-02", date(2026, 2, 1), date(2026, 3, 1), 28)
    assert r.parse_period("month", "2024-02").buckets()[-1].key == "2024-02-29"  # leap year

    q = r.parse_period("quarter", "2026q4")
    assert (q.key, q.first, q.after) == ("2026-Q4", date(2026, 10, 1), date(2027, 1, 1))
    assert [b.key for b in q.buckets()] == ["2026-10", "2026-11", "2026-12"]
    assert q.label == "2026年第4季度"

    y = r.parse_period("year", "2026")
    assert (y.first, y.after, len(y.buckets())) == (date(2026, 1, 1), date(2027, 1, 1), 12)
    assert y.buckets()[-1].end == y.end


@pytest.mark.parametrize("kind,value", [("month", "2026-13"), ("day", "2026-02-30"), ("quarter", "2026-Q5"),
                                        ("year", "26"), ("week", "2026-01"), ("day", "<script>")])
def test_bad_periods_are_refused(kind, value):
    with pytest.raises(r.PeriodError):
        r.parse_period(kind, value)


def test_current_period():
    today = date(2026, 8, 9)
    assert r.current_period("day", today).key == "2026-08-09"
    assert r.current_period("month", today).key == "2026-08"
    assert r.current_period("quarter", today).key == "2026-Q3"
    assert r.current_period("year", today).key == "2026"


def test_consecutive_month_flag():
    march = r.parse_period("month", "2026-03")
    assert r.consecutive_months({(2026, 2), (2026, 3)}, march)           # February counts as the month before
    assert not r.consecutive_months({(2026, 1), (2026, 3)}, march)       # a gap
    assert not r.consecutive_months({(2026, 3)}, march)
    assert not r.consecutive_months({(2026, 3), (2026, 4)}, march)       # April is after the period
    jan = r.parse_period("month", "2026-01")
    assert r.consecutive_months({(2025, 12), (2026, 1)}, jan)            # across the year end
    q1 = r.parse_period("quarter", "2026-Q1")
    assert r.consecutive_months({(2026, 2), (2026, 3)}, q1)
    assert not r.consecutive_months({(2025, 11), (2026, 1), (2026, 3)}, q1)
    day = r.parse_period("day", "2026-03-15")
    assert r.consecutive_months({(2026, 2), (2026, 3)}, day)


def test_area_rows_flags_and_order():
    march = r.parse_period("month", "2026-03")
    t = r.area_rows(march, {"a": 2, "b": 1, "d": 1, "z": 0},
                    {"a": {(2026, 3): 2}, "b": {(2026, 2): 1, (2026, 3): 1}, "d": {(2026, 3): 1}},
                    {"a": "A台区", "b": "B台区", "d": "D台区"})
    rows = {x["_row"]: x for x in t.rows}
    assert set(rows) == {"a", "b", "d"}
    assert (rows["a"]["two_or_more"], rows["a"]["two_months_running"], rows["a"]["flags"]) == (True, False, "2次及以上")
    assert (rows["b"]["two_or_more"], rows["b"]["two_months_running"], rows["b"]["flags"]) == (False, True, "连续两月")
    assert rows["d"]["flagged"] is False and rows["d"]["flags"] == ""
    assert [x["_row"] for x in t.rows] == ["a", "b", "d"]  # flagged first, most complaints first


def test_call_tables_sum_buckets_and_queues():
    p = r.parse_period("quarter", "2026-Q1")
    b = p.buckets()
    per = [(b[0], {"repair": Tally(offered=4, answered=3, abandoned=1, answered_within=2, wait_answered_s=30,
                                   wait_abandoned_s=10)}, r.IvrCounts(10, 5, 1)),
           (b[1], {}, r.IvrCounts()),
           (b[2], {"repair": Tally(offered=1, answered=1, answered_within=1, wait_answered_s=10),
                   "complaint": Tally(offered=1, abandoned=1, wait_abandoned_s=20)}, r.IvrCounts(3, 1, 0))]
    calls, by_queue = r.calls_tables(p, per, 20)
    total = calls.rows[-1]
    assert total["_row"] == "total"
    assert (total["incoming"], total["self_service"], total["ivr_callbacks"]) == (13, 6, 1)
    assert (total["offered"], total["answered"], total["abandoned"]) == (6, 4, 2)
    assert total["answer_rate"] == pytest.approx(4 / 6)
    assert total["avg_wait_s"] == pytest.approx((30 + 10 + 10 + 20) / 6)
    assert calls.rows[1]["answer_rate"] is None  # nothing offered: "—", not 0 %
    assert {x["_row"]: x["offered"] for x in by_queue.rows} == {"complaint": 1, "repair": 5}
    assert "incoming" not in by_queue.rows[0]


def test_csv_has_bom_and_quotes_formula_like_text():
    p = r.parse_period("month", "2026-03")
    areas = r.area_rows(p, {"k": 2}, {"k": {(2026, 3): 2}}, {"k": "=HYPERLINK(\"x\")台区"})
    figures = r.order_figures(r.OrderCounts(accepted=8, processed=3), r.ArrivalFigures(2, 1, 1, 0, .5, 40.0), 2, 4)
    rep = r.Report(p, datetime(2026, 4, 10, tzinfo=timezone.utc), [figures, areas])
    body = r.to_csv(rep)
    assert body.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(body.decode("utf-8-sig"))))
    assert rows[0][0].startswith("966022 热线月报 2026年3月")
    flat = {row[0]: row for row in rows if row}
    assert flat["处理率 Processing rate"][1:4] == ["37.5%", "3", "8"]
    assert flat["平均到达时长(分钟) Avg arrival min"][1] == "40.0"
    assert flat["受理工单 Orders accepted"][1] == "8"
    assert "'=HYPERLINK(\"x\")台区" in flat  # not a formula in Excel

"""Deadline rules on the official working-day calendar (pure, tickets.deadlines).

2026 calendar used here (chinese_calendar 1.11): Spring Festival off Sun 15 -
Mon 23 Feb, worked Sat 14 Feb and Sat 28 Feb; National Day off Thu 1 - Wed 7
Oct, worked Sun 20 Sep and Sat 10 Oct."""
import logging
from datetime import date, datetime, time, timedelta, timezone

import pytest

from cti.workdays import CHINA_TZ, add_workdays, calendar_knows
from tickets.deadlines import (
    QuietHours, SlaPolicy, arrival_due, callback_plan, department_reply_due, dispatch_due, end_of_day,
    is_key_customer, on_time_arrival_rate, repair_feedback_due, warn_at,
)


def cst(y, m, d, hh=10, mm=0, ss=0):
    return datetime(y, m, d, hh, mm, ss, tzinfo=CHINA_TZ)


def test_department_reply_due_skips_national_day_and_counts_the_worked_saturday():
    # dispatched Wed 30 Sep: Thu 8, Fri 9, Sat 10 Oct (worked) -> due end of Sat 10 Oct
    due = department_reply_due(cst(2026, 9, 30, 16))
    assert due.due_at == end_of_day(date(2026, 10, 10)) and not due.approximate


def test_department_reply_due_counts_the_worked_sunday_before_national_day():
    # dispatched Fri 18 Sep: Sun 20 (worked), Mon 21, Tue 22
    assert department_reply_due(cst(2026, 9, 18)).due_at == end_of_day(date(2026, 9, 22))


def test_department_reply_due_across_spring_festival_2026():
    # dispatched Fri 13 Feb: Sat 14 (worked), then the holiday to Mon 23, Tue 24, Wed 25
    assert department_reply_due(cst(2026, 2, 13, 9)).due_at == end_of_day(date(2026, 2, 25))


def test_department_reply_due_for_an_order_dispatched_during_the_holiday():
    assert department_reply_due(cst(2026, 10, 3, 11)).due_at == end_of_day(date(2026, 10, 10))


def test_department_reply_day_is_the_china_day_not_the_utc_day():
    # 17:00 UTC on Thu 17 Sep is 01:00 on Fri 18 Sep in China
    utc = datetime(2026, 9, 17, 17, 0, tzinfo=timezone.utc)
    assert department_reply_due(utc).due_at == end_of_day(date(2026, 9, 22))


def test_unknown_calendar_year_falls_back_to_weekdays_and_flags_the_deadline_approximate(caplog):
    day = date(2099, 3, 4)
    assert not calendar_knows(day)
    with caplog.at_level(logging.WARNING, logger="hotline.tickets.deadlines"):
        due = department_reply_due(datetime.combine(day, time(10), CHINA_TZ))
    assert due.approximate
    assert due.due_at == end_of_day(add_workdays(day, 3, strict=False))
    assert "deadline_calendar_approximate" in caplog.text


def test_dispatch_is_due_within_five_minutes_of_acceptance():
    t = cst(2026, 10, 1, 3, 7)
    assert dispatch_due(t).due_at == t + timedelta(minutes=5)


@pytest.mark.parametrize("area,minutes", [("town", 30), ("countryside", 90), ("remote", 120), ("?", 30)])
def test_arrival_deadline_by_area_class(area, minutes):
    t = cst(2026, 10, 1, 3, 7)
    assert arrival_due(t, area).due_at == t + timedelta(minutes=minutes)


def test_repair_feedback_is_due_the_same_china_day_the_repair_finishes():
    finished = datetime(2026, 10, 1, 15, 30, tzinfo=timezone.utc)   # 23:30 in China
    assert repair_feedback_due(finished).due_at == end_of_day(date(2026, 10, 1))


def test_callback_is_due_on_the_first_working_day_after_feedback_before_quiet_time():
    plan = callback_plan(cst(2026, 9, 30, 15), key_customer=False)
    assert plan.due_at == cst(2026, 10, 8, 20, 59, 59)          # National Day skipped
    assert plan.not_before == cst(2026, 9, 30, 15)
    assert not plan.deferred and not plan.approximate


def test_callback_after_feedback_on_spring_festival_eve_week_uses_the_worked_saturday():
    plan = callback_plan(cst(2026, 2, 13, 18), key_customer=False)
    assert plan.due_at == cst(2026, 2, 14, 20, 59, 59)


@pytest.mark.parametrize("fb,expected", [
    (cst(2026, 9, 29, 22, 30), cst(2026, 9, 30, 8, 0)),      # night -> 08:00
    (cst(2026, 9, 29, 3, 0), cst(2026, 9, 29, 8, 0)),
    (cst(2026, 9, 29, 12, 30), cst(2026, 9, 29, 14, 30)),    # lunch -> 14:30
    (cst(2026, 9, 29, 14, 30), cst(2026, 9, 29, 14, 30)),    # the end of quiet time is allowed
    (cst(2026, 9, 29, 21, 0), cst(2026, 9, 30, 8, 0)),
])
def test_callback_is_never_planned_in_quiet_hours(fb, expected):
    plan = callback_plan(fb, key_customer=False)
    q = QuietHours()
    assert plan.not_before == expected
    assert not q.is_quiet(plan.not_before) and not q.is_quiet(plan.due_at)


def test_quiet_hours_are_configurable():
    q = QuietHours.parse("13:00-14:00,22:00-07:00")
    policy = SlaPolicy(quiet=q)
    plan = callback_plan(cst(2026, 9, 29, 22, 30), key_customer=False, policy=policy)
    assert plan.not_before == cst(2026, 9, 30, 7, 0)
    assert plan.due_at == cst(2026, 9, 30, 21, 59, 59)
    assert str(q) == "13:00-14:00,22:00-07:00"
    assert QuietHours.parse("").is_quiet(cst(2026, 9, 29, 3)) is False


def test_quiet_hours_covering_the_whole_day_are_refused():
    with pytest.raises(ValueError):
        QuietHours.parse("00:00-12:00,12:00-24:00")


def test_repair_callback_for_key_customer_never_slips():
    fb = cst(2026, 9, 29, 16)                      # Tue; first working day after: Wed 30 Sep
    normal = callback_plan(fb, key_customer=False, heavy_load=False)
    key = callback_plan(fb, key_customer=True, heavy_load=True)
    ordinary = callback_plan(fb, key_customer=False, heavy_load=True)
    assert normal.due_at == key.due_at == cst(2026, 9, 30, 20, 59, 59)
    assert not key.deferred
    # an ordinary one may slip one working day under heavy load: over National Day to 8 Oct
    assert ordinary.deferred and ordinary.due_at == cst(2026, 10, 8, 20, 59, 59)


@pytest.mark.parametrize("flag", ["dedicated_transformer", "large_customer", "sensitive", "high_rise"])
def test_any_key_flag_or_a_major_outage_makes_a_key_customer(flag):
    assert is_key_customer({flag: True})
    assert not is_key_customer({"name": "张三"})
    assert not is_key_customer(None)
    assert is_key_customer(None, major_outage=True)


def test_warning_comes_a_lead_time_before_the_deadline_but_never_before_the_clock_starts():
    start = cst(2026, 10, 8, 9)
    policy = SlaPolicy()
    assert warn_at("department_reply", start, end_of_day(date(2026, 10, 10)), policy) == \
        end_of_day(date(2026, 10, 10)) - timedelta(hours=4)
    assert warn_at("dispatch", start, start + timedelta(minutes=5), policy) == start + timedelta(minutes=3)
    assert warn_at("callback", start, start + timedelta(minutes=30), policy) == start


def test_on_time_arrival_rate():
    t0 = cst(2026, 10, 1, 8)
    due = t0 + timedelta(minutes=30)
    recs = [(t0, due, t0 + timedelta(minutes=20)),   # on time
            (t0, due, due),                          # on time (at the deadline)
            (t0, due, t0 + timedelta(minutes=45)),   # late
            (t0, due, None),                         # not there, overdue -> late
            (t0, t0 + timedelta(hours=5), None)]     # not there, not yet due -> pending
    s = on_time_arrival_rate(recs, now=t0 + timedelta(hours=1))
    assert (s.counted, s.on_time, s.late, s.pending) == (4, 2, 2, 1)
    assert s.rate == 0.5
    assert s.average_minutes == pytest.approx((20 + 30 + 45) / 3)
    assert on_time_arrival_rate([], now=t0).rate is None

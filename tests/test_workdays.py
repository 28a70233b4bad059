"""Working days on the official Chinese calendar (cti.workdays)."""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest
from hypothesis import given, strategies as st

from cti.workdays import (
    CalendarUnknownYear, add_workdays, calendar_knows, is_workday, known_years, local_date, workdays_between,
)

D = date


def test_national_day_2026_is_off_and_its_weekend_makeup_days_are_worked():
    assert all(not is_workday(D(2026, 10, d)) for d in range(1, 8))   # 1-7 Oct
    assert is_workday(D(2026, 9, 20))    # Sunday worked (调休)
    assert is_workday(D(2026, 10, 10))   # Saturday worked (调休)
    assert not is_workday(D(2026, 9, 25))  # Mid-Autumn Festival, a Friday


def test_spring_festival_2026():
    assert all(not is_workday(D(2026, 2, d)) for d in range(15, 24))  # 15-23 Feb
    assert is_workday(D(2026, 2, 14)) and is_workday(D(2026, 2, 28))  # Saturdays worked


def test_an_ordinary_week():
    assert [is_workday(D(2026, 11, d)) for d in range(16, 23)] == [True] * 5 + [False] * 2


def test_add_workdays_jumps_over_national_day():
    assert add_workdays(D(2026, 9, 30), 1) == D(2026, 10, 8)
    assert add_workdays(D(2026, 9, 28), 7) == D(2026, 10, 13)  # 29, 30, 8, 9, 10 (Sat), 12, 13
    assert add_workdays(D(2026, 10, 8), -1) == D(2026, 9, 30)
    assert add_workdays(D(2026, 10, 3), 0) == D(2026, 10, 3)


def test_add_workdays_from_a_holiday_counts_from_the_next_working_day():
    assert add_workdays(D(2026, 10, 4), 1) == D(2026, 10, 8)


def test_workdays_between_counts_after_a_up_to_and_including_b():
    assert workdays_between(D(2026, 9, 28), D(2026, 10, 9)) == 4
    assert workdays_between(D(2026, 10, 9), D(2026, 9, 28)) == -4   # [28 Sep, 9 Oct)
    assert workdays_between(D(2026, 10, 8), D(2026, 9, 30)) == -1
    assert workdays_between(D(2026, 11, 16), D(2026, 11, 16)) == 0
    assert workdays_between(D(2026, 11, 13), D(2026, 11, 16)) == 1  # Fri -> Mon


def test_a_datetime_is_taken_by_its_date_and_local_date_converts_to_china_time():
    late_utc = datetime(2026, 9, 30, 17, 0, tzinfo=timezone.utc)  # 01:00 on 1 Oct in China
    assert local_date(late_utc) == D(2026, 10, 1)
    assert is_workday(datetime(2026, 9, 30, 23, 0))


def test_unknown_year_raises_a_clear_error():
    year = known_years().stop
    with pytest.raises(CalendarUnknownYear) as ei:
        is_workday(D(year, 3, 2))
    assert ei.value.year == year and "chinese-calendar" in str(ei.value)
    with pytest.raises(CalendarUnknownYear):
        add_workdays(D(2026, 12, 30), 5)  # walks into the unknown year
    assert not calendar_knows(D(year, 1, 1)) and calendar_knows(D(2026, 1, 1))


def test_unknown_year_non_strict_counts_monday_to_friday():
    year = known_years().stop
    monday = D(year, 3, 1) + timedelta(days=(7 - D(year, 3, 1).weekday()) % 7)
    assert is_workday(monday, strict=False)
    assert not is_workday(monday + timedelta(days=5), strict=False)
    assert add_workdays(monday, 5, strict=False) == monday + timedelta(days=7)
    assert workdays_between(monday, monday + timedelta(days=14), strict=False) == 10


def test_bad_arguments():
    with pytest.raises(TypeError):
        is_workday("2026-10-01")
    with pytest.raises(TypeError):
        add_workdays(D(2026, 1, 5), 1.5)


@given(st.dates(min_value=D(2005, 1, 1), max_value=D(2025, 12, 1)), st.integers(min_value=-30, max_value=30))
def test_workdays_between_inverts_add_workdays(d, n):
    assert workdays_between(d, add_workdays(d, n)) == n


@given(st.dates(min_value=D(2005, 1, 1), max_value=D(2025, 12, 1)), st.integers(min_value=1, max_value=30))
def test_add_workdays_lands_on_a_working_day(d, n):
    assert is_workday(add_workdays(d, n))

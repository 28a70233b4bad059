"""Working days (工作日) on the official Chinese calendar.

Pure: stdlib and the maintained ``chinese_calendar`` package (its data is the
State Council's yearly holiday notice: holidays *and* the weekend days that are
worked instead, 调休).  Used for outage notice periods (issue 4) and for
work-order deadlines (issue 5).

Conventions
-----------
* Arguments are ``datetime.date``.  A ``datetime`` is accepted and its
  ``.date()`` is used -- convert it to China time first (:data:`CHINA_TZ`,
  :func:`local_date`); an aware datetime in UTC late in the evening is already
  the next day in China.
* ``add_workdays(d, n)`` is the n-th working day *after* ``d`` (``d`` itself
  is not counted, whether or not it is a working day); negative ``n`` counts
  backwards; ``n == 0`` returns ``d``.
* ``workdays_between(a, b)`` counts the working days in the half-open range
  ``(a, b]`` -- after ``a``, up to and including ``b``.  When ``b < a`` it is
  minus the working days in ``[b, a)``: the count of working-day steps
  backwards.  Either way ``workdays_between(d, add_workdays(d, n)) == n``.

Years the library does not know
-------------------------------
The calendar for a year is published by the State Council late in the year
before, and ``chinese_calendar`` needs a release to learn it.  For a year it
does not know every function raises :class:`CalendarUnknownYear` (never a
silent guess), unless called with ``strict=False``: then a day of an unknown
year is a working day iff it is Monday to Friday.  Callers that must not fail
(the outage notice check, SLA deadlines) call with ``strict=True`` first,
catch :class:`CalendarUnknownYear`, redo with ``strict=False`` and flag the
result as estimated so a person can check it; the fix is to upgrade
``chinese-calendar``.  :func:`calendar_knows` tells in advance.
"""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from functools import lru_cache

import chinese_calendar

__all__ = [
    "CHINA_TZ",
    "CalendarUnknownYear",
    "add_workdays",
    "calendar_knows",
    "is_workday",
    "known_years",
    "local_date",
    "workdays_between",
]

#: China Standard Time; no daylight saving since 1991, so a fixed offset is exact.
CHINA_TZ = timezone(timedelta(hours=8), "CST")

# How far add_workdays may walk before giving up (a bug guard, not a rule):
# the longest run of non-working days in the official calendar is 9.
_MAX_STEP = 40


class CalendarUnknownYear(LookupError):
    """``chinese_calendar`` has no holiday data for ``year``.

    Upgrade ``chinese-calendar`` (the State Council publishes each year's
    calendar in the autumn before), or call with ``strict=False`` to count
    Monday to Friday and flag the result as estimated."""

    def __init__(self, year: int):
        lo, hi = known_years().start, known_years().stop - 1
        super().__init__(
            f"日历数据缺少 {year} 年,请升级 chinese-calendar / no official calendar for {year} "
            f"(chinese_calendar knows {lo}-{hi}); upgrade chinese-calendar or count Mon-Fri and flag it"
        )
        self.year = year


@lru_cache(maxsize=1)
def known_years() -> range:
    """The years ``chinese_calendar`` has official data for."""
    years = [d.year for d in chinese_calendar.holidays]
    return range(min(years), max(years) + 1)


def calendar_knows(d: date) -> bool:
    return _as_date(d).year in known_years()


def local_date(moment: datetime) -> date:
    """The calendar day in China of an aware datetime (naive = already China time)."""
    if moment.tzinfo is None:
        return moment.date()
    return moment.astimezone(CHINA_TZ).date()


def is_workday(d: date, *, strict: bool = True) -> bool:
    """Whether ``d`` is a working day (a weekday that is not a holiday, or a
    weekend day worked instead of one)."""
    d = _as_date(d)
    if d.year not in known_years():
        if strict:
            raise CalendarUnknownYear(d.year)
        return d.weekday() < 5
    return chinese_calendar.is_workday(d)


def add_workdays(d: date, n: int, *, strict: bool = True) -> date:
    """The ``n``-th working day after ``d`` (before it when ``n < 0``)."""
    d = _as_date(d)
    if not isinstance(n, int) or isinstance(n, bool):
        raise TypeError("n must be an int")
    step = 1 if n >= 0 else -1
    remaining = abs(n)
    idle = 0
    while remaining:
        d += timedelta(days=step)
        if is_workday(d, strict=strict):
            remaining -= 1
            idle = 0
        else:
            idle += 1
            if idle > _MAX_STEP:  # pragma: no cover - corrupt calendar data
                raise RuntimeError(f"no working day within {_MAX_STEP} days of {d}")
    return d


def workdays_between(a: date, b: date, *, strict: bool = True) -> int:
    """Working days in ``(a, b]``; minus those in ``[b, a)`` when ``b < a``."""
    a, b = _as_date(a), _as_date(b)
    if b < a:
        return -sum(1 for i in range((a - b).days) if is_workday(b + timedelta(days=i), strict=strict))
    return sum(1 for i in range(1, (b - a).days + 1) if is_workday(a + timedelta(days=i), strict=strict))


def _as_date(d: date) -> date:
    if isinstance(d, datetime):
        return d.date()
    if not isinstance(d, date):
        raise TypeError(f"expected a date, got {type(d).__name__}")
    return d

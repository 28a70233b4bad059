"""The hotline's deadlines (时限), as pure functions.  Stdlib + :mod:`cti.workdays`.

All instants are aware datetimes; local rules (the calendar day, quiet
hours) are read in China time (Asia/Shanghai, UTC+8 all year:
:data:`cti.workdays.CHINA_TZ`).  A naive datetime is taken as China time.

Rules (DOMAIN.md, "The work order" and "Fault repair"):

* ``dispatch`` -- a repair order is dispatched within 5 minutes of acceptance.
* ``arrival`` -- the crew is on site within 30 min (town), 90 min
  (countryside), 120 min (remote) of acceptance: the clock is the customer's,
  it starts when the call is accepted, not when the crew is told.
* ``department_reply`` -- a dispatched order is answered by the department by
  the end of the 3rd working day after the day of dispatch (the dispatch day
  itself is not counted, whatever it is).  A returned order gets a fresh
  3 working days from the return.
* ``repair_feedback`` -- a repair's result is fed back the same (China) day
  the repair finishes: due at the end of that day.
* ``callback`` -- the customer is called back within the first working day
  after feedback, never in quiet hours (default 12:00-14:30 and 21:00-08:00):
  due at the last allowed moment of that working day (20:59:59 by default);
  not before the first allowed moment after feedback.  Under heavy load an
  ordinary callback may slip by ``heavy_load_slip_workdays`` (default 1); a
  key customer's (专变/大客户/敏感/高层, or a major outage) never slips.

Each deadline also has a ``warn_at`` = due minus a lead time per kind
(:attr:`SlaPolicy.warn_lead`), never before the start of the clock.

Years the official calendar does not know yet
---------------------------------------------
``chinese_calendar`` learns each year's holidays from the State Council's
notice, published in the autumn before.  Asked about a year it does not know,
:mod:`cti.workdays` raises :class:`~cti.workdays.CalendarUnknownYear`; here
the computation is redone counting Monday to Friday as working days, the
result is flagged ``approximate=True`` (stored on the deadline row and shown
to the staff), and a warning ``deadline_calendar_approximate`` is logged.
Deadlines are never refused for it: the hotline must keep working on 1
January.  The fix is to upgrade ``chinese-calendar``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Iterable, Mapping

from cti.workdays import CHINA_TZ, CalendarUnknownYear, add_workdays

log = logging.getLogger("hotline.tickets.deadlines")

__all__ = [
    "ARRIVAL_MINUTES", "DEADLINE_KINDS", "ArrivalStats", "CallbackPlan", "Due", "QuietHours",
    "SlaPolicy", "add_workdays_flagged", "arrival_due", "callback_plan", "department_reply_due",
    "dispatch_due", "end_of_day", "extension_default_due", "is_key_customer", "local", "on_time_arrival_rate",
    "repair_feedback_due", "warn_at",
]

DEADLINE_KINDS = ("dispatch", "arrival", "department_reply", "repair_feedback", "callback")
DEADLINE_LABELS = {
    "dispatch": "派单时限 Dispatch",
    "arrival": "到达现场时限 Arrival on site",
    "department_reply": "部门答复时限 Department reply",
    "repair_feedback": "抢修结果反馈 Repair feedback",
    "callback": "回访时限 Callback",
}
ARRIVAL_MINUTES: Mapping[str, int] = {"town": 30, "countryside": 90, "remote": 120}
KEY_FLAGS = ("dedicated_transformer", "large_customer", "sensitive", "high_rise")


def local(moment: datetime) -> datetime:
    """The same instant in China time (a naive datetime is taken as China time)."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=CHINA_TZ)
    return moment.astimezone(CHINA_TZ)


def end_of_day(d: date) -> datetime:
    """The last second of a China calendar day."""
    return datetime.combine(d, time(23, 59, 59), CHINA_TZ)


def add_workdays_flagged(d: date, n: int) -> tuple[date, bool]:
    """``add_workdays`` on the official calendar; for a year it does not know,
    Monday-Friday and ``approximate=True`` (logged).  Returns (day, approximate)."""
    try:
        return add_workdays(d, n), False
    except CalendarUnknownYear as exc:
        log.warning("deadline_calendar_approximate: %s (from %s, +%d working days; Mon-Fri used)", exc, d, n)
        return add_workdays(d, n, strict=False), True


# -- quiet hours --------------------------------------------------------------

def _parse_hhmm(s: str) -> time:
    hh, mm = s.strip().split(":")
    h, m = int(hh), int(mm)
    if h == 24 and m == 0:
        return time(0, 0)
    return time(h, m)


@dataclass(frozen=True)
class QuietHours:
    """Times of day when customers are not called (night and lunch rest).

    Each period is ``(start, end)`` in China time; ``start > end`` wraps over
    midnight.  ``start`` is quiet, ``end`` is not."""

    periods: tuple[tuple[time, time], ...] = ((time(12, 0), time(14, 30)), (time(21, 0), time(8, 0)))

    def __post_init__(self) -> None:
        for s, e in self.periods:
            if s == e:
                raise ValueError("a quiet period must not be empty or the whole day")
        # at least one allowed minute per day
        if all(self.is_quiet(datetime.combine(date(2000, 1, 3), time(h, m), CHINA_TZ))
               for h in range(24) for m in range(0, 60, 5)):
            raise ValueError("quiet hours cover the whole day: no callback could ever be made")

    @classmethod
    def parse(cls, spec: str) -> "QuietHours":
        """``"12:00-14:30,21:00-08:00"`` (the configuration form); ``""`` = none."""
        periods = []
        for part in (spec or "").split(","):
            if not part.strip():
                continue
            a, b = part.split("-")
            periods.append((_parse_hhmm(a), _parse_hhmm(b)))
        return cls(tuple(periods))

    def __str__(self) -> str:
        return ",".join(f"{s:%H:%M}-{e:%H:%M}" for s, e in self.periods)

    def _period_at(self, moment: datetime) -> tuple[time, time] | None:
        t = local(moment).timetz().replace(tzinfo=None)
        for s, e in self.periods:
            if (s < e and s <= t < e) or (s > e and (t >= s or t < e)):
                return (s, e)
        return None

    def is_quiet(self, moment: datetime) -> bool:
        return self._period_at(moment) is not None

    def next_allowed(self, moment: datetime) -> datetime:
        """``moment`` if calling is allowed then, else the end of the quiet time."""
        m = local(moment)
        for _ in range(2 * len(self.periods) + 2):
            p = self._period_at(m)
            if p is None:
                return m
            end = datetime.combine(m.date(), p[1], CHINA_TZ)
            if end <= m:               # a period wrapping midnight ends tomorrow
                end += timedelta(days=1)
            m = end
        raise AssertionError("quiet hours loop")  # pragma: no cover - excluded by __post_init__

    def last_allowed_on(self, day: date) -> datetime:
        """The last allowed moment of ``day`` (20:59:59 by default, just
        before the night's quiet time begins)."""
        allowed = [(0, 24 * 60)]
        for s, e in self.periods:
            s_m, e_m = s.hour * 60 + s.minute, e.hour * 60 + e.minute
            cuts = [(s_m, e_m)] if s_m < e_m else [(s_m, 24 * 60), (0, e_m)]
            for a, b in cuts:
                nxt = []
                for x, y in allowed:
                    if b <= x or a >= y:
                        nxt.append((x, y))
                        continue
                    if x < a:
                        nxt.append((x, a))
                    if b < y:
                        nxt.append((b, y))
                allowed = nxt
        end = max(y for _, y in allowed)
        if end >= 24 * 60:
            return end_of_day(day)
        # one second before the quiet time begins: the due instant itself is callable
        return datetime.combine(day, time(end // 60, end % 60), CHINA_TZ) - timedelta(seconds=1)


# -- policy ---------------------------------------------------------------------

@dataclass(frozen=True)
class SlaPolicy:
    """The numbers behind the rules; configurable, defaults from DOMAIN.md."""

    dispatch_within: timedelta = timedelta(minutes=5)
    arrival_minutes: Mapping[str, int] = field(default_factory=lambda: dict(ARRIVAL_MINUTES))
    reply_workdays: int = 3
    callback_workdays: int = 1
    heavy_load_slip_workdays: int = 1
    # heavy load when this many callbacks are waiting (used when the caller does not say)
    heavy_load_pending_callbacks: int = 200
    quiet: QuietHours = field(default_factory=QuietHours)
    warn_lead: Mapping[str, timedelta] = field(default_factory=lambda: {
        "dispatch": timedelta(minutes=2),
        "arrival": timedelta(minutes=10),
        "department_reply": timedelta(hours=4),
        "repair_feedback": timedelta(hours=2),
        "callback": timedelta(hours=2),
    })

    def lead(self, kind: str) -> timedelta:
        return self.warn_lead.get(kind, timedelta(0))


@dataclass(frozen=True)
class Due:
    due_at: datetime
    approximate: bool = False    # a year unknown to the official calendar: Mon-Fri counted


def warn_at(kind: str, start: datetime, due_at: datetime, policy: SlaPolicy) -> datetime:
    """When to warn: ``policy.lead(kind)`` before the due time, never before ``start``."""
    return max(min(due_at - policy.lead(kind), due_at), min(start, due_at))


def dispatch_due(accepted_at: datetime, policy: SlaPolicy = SlaPolicy()) -> Due:
    return Due(accepted_at + policy.dispatch_within)


def arrival_due(accepted_at: datetime, area_class: str, policy: SlaPolicy = SlaPolicy()) -> Due:
    """An unknown area class counts as town: the strictest deadline errs on the customer's side."""
    minutes = policy.arrival_minutes.get(area_class) or policy.arrival_minutes["town"]
    return Due(accepted_at + timedelta(minutes=minutes))


def department_reply_due(dispatched_at: datetime, policy: SlaPolicy = SlaPolicy()) -> Due:
    day, approx = add_workdays_flagged(local(dispatched_at).date(), policy.reply_workdays)
    return Due(end_of_day(day), approx)


def extension_default_due(now: datetime, policy: SlaPolicy = SlaPolicy()) -> Due:
    """An extension (延期) without a date asked for: another reply period from now."""
    return department_reply_due(now, policy)


def repair_feedback_due(finished_at: datetime) -> Due:
    return Due(end_of_day(local(finished_at).date()))


def is_key_customer(snapshot: Mapping[str, object] | None, *, major_outage: bool = False) -> bool:
    """重点客户: any key flag of the customer, or a caller of a major outage."""
    if major_outage:
        return True
    snap = snapshot or {}
    return any(bool(snap.get(k)) for k in KEY_FLAGS)


@dataclass(frozen=True)
class CallbackPlan:
    not_before: datetime     # first moment a call is allowed
    due_at: datetime         # last moment (never inside quiet hours)
    key_customer: bool
    deferred: bool           # slipped because of heavy load (never for key customers)
    approximate: bool


def callback_plan(feedback_at: datetime, *, key_customer: bool, heavy_load: bool = False,
                  policy: SlaPolicy = SlaPolicy()) -> CallbackPlan:
    """When to call the customer back after the department's feedback."""
    fb = local(feedback_at)
    day, approx = add_workdays_flagged(fb.date(), policy.callback_workdays)
    deferred = False
    if heavy_load and not key_customer and policy.heavy_load_slip_workdays > 0:
        day, approx2 = add_workdays_flagged(day, policy.heavy_load_slip_workdays)
        approx = approx or approx2
        deferred = True
    due = policy.quiet.last_allowed_on(day)
    not_before = policy.quiet.next_allowed(fb)
    if not_before > due:   # cannot happen with sane quiet hours; keep the invariant anyway
        not_before = due
    return CallbackPlan(not_before, due, key_customer, deferred, approx)


# -- on-time arrival --------------------------------------------------------------

@dataclass(frozen=True)
class ArrivalStats:
    counted: int          # repairs whose arrival is known or overdue
    on_time: int
    late: int
    pending: int          # crew not there yet, still within the deadline (not counted)
    rate: float | None    # on_time / counted (None when nothing counted)
    average_minutes: float | None   # acceptance -> arrival, over arrivals reported

    def to_dict(self) -> dict[str, object]:
        return {"counted": self.counted, "on_time": self.on_time, "late": self.late, "pending": self.pending,
                "rate": self.rate, "average_minutes": self.average_minutes}


def on_time_arrival_rate(records: Iterable[tuple[datetime, datetime, datetime | None]],
                         now: datetime) -> ArrivalStats:
    """到达现场及时率 over ``(accepted_at, due_at, arrived_at)`` records.

    On time: arrived at or before the due time.  Late: arrived after it, or not
    arrived and the due time has passed.  Not arrived and not yet due: pending,
    left out of the rate.  Target >= 99 %."""
    on_time = late = pending = 0
    minutes: list[float] = []
    for accepted_at, due_at, arrived_at in records:
        if arrived_at is None:
            if due_at < now:
                late += 1
            else:
                pending += 1
            continue
        minutes.append((arrived_at - accepted_at).total_seconds() / 60)
        if arrived_at <= due_at:
            on_time += 1
        else:
            late += 1
    counted = on_time + late
    return ArrivalStats(counted, on_time, late, pending,
                        (on_time / counted) if counted else None,
                        (sum(minutes) / len(minutes)) if minutes else None)

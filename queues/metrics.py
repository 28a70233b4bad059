"""The hotline's queue KPIs as pure functions (stdlib only).

Every formula here is written out on the wallboard page and in
``docs/metrics.md``, which also compares each one with QueueMetrics,
Asternic and Wazo (the page links to it).  The
inputs are plain counts and sums of seconds, so that the live wallboard
(:mod:`queues.model` tallies from AMI events) and the history reports (the
same tallies summed from the ``calls`` table) compute the same figures.

A rate whose denominator is zero is ``None`` (shown "—"), never 0 % or
100 %: "no calls yet" is not "every call was lost".
"""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from typing import Iterable

# Asia/Shanghai has had no daylight saving since 1991: a fixed +08:00 offset
# needs no tz database (the machine may have none).
SHANGHAI = timezone(timedelta(hours=8), "Asia/Shanghai")

DEFAULT_SL_THRESHOLD_S = 20


def _ratio(num: float, den: float) -> float | None:
    return None if den <= 0 else num / den


def answer_rate(answered: int, offered: int) -> float | None:
    """人工接通率 manual answer rate = calls answered by an agent ÷ calls
    offered to agents (calls that entered a queue)."""
    return _ratio(answered, offered)


def abandon_rate(abandoned: int, offered: int) -> float | None:
    """放弃率 abandon rate = calls the caller hung up while queued ÷ calls
    offered to agents."""
    return _ratio(abandoned, offered)


def service_level(answered_within: int, answered: int, abandoned: int, exited: int = 0) -> float | None:
    """服务水平 service level = calls answered within the threshold T ÷ calls
    offered that have stopped waiting (answered + abandoned + left the queue
    otherwise).  Abandons count against it, however short; callers still
    waiting are not counted yet."""
    return _ratio(answered_within, answered + abandoned + exited)


def average_speed_of_answer(total_wait_answered_s: float, answered: int) -> float | None:
    """ASA 平均应答时长 = Σ queue wait of answered calls ÷ answered calls
    (wait = Asterisk's HoldTime on AgentConnect: join → agent connects,
    ring time included)."""
    return _ratio(total_wait_answered_s, answered)


def average_handle_time(total_talk_s: float, completed: int, wrapup_s: float = 0.0) -> float | None:
    """AHT 平均处理时长 = Σ talk time of completed calls ÷ completed calls
    + the queue's wrap-up time (queues.conf ``wrapuptime``, the after-call
    work every answered call is given)."""
    avg = _ratio(total_talk_s, completed)
    return None if avg is None else avg + wrapup_s


def average_wait(total_wait_answered_s: float, total_wait_abandoned_s: float, answered: int,
                 abandoned: int) -> float | None:
    """平均等待时长 average wait = Σ wait of answered and abandoned calls ÷
    (answered + abandoned) — what a caller waited, whatever happened."""
    return _ratio(total_wait_answered_s + total_wait_abandoned_s, answered + abandoned)


def longest_wait(waits_s: Iterable[float]) -> float:
    """最长等待 longest wait of the callers waiting now (0 when nobody waits)."""
    return max(waits_s, default=0.0)


def within_threshold(wait_s: float, threshold_s: float) -> bool:
    """A call answered after exactly T seconds is within the service level."""
    return wait_s <= threshold_s


def local_day(ts: float) -> date:
    """The Asia/Shanghai calendar day of an epoch timestamp ("today" resets
    at 00:00 Beijing time, not UTC)."""
    return datetime.fromtimestamp(ts, SHANGHAI).date()


def day_bounds(day: date) -> tuple[float, float]:
    """Epoch seconds of 00:00 of ``day`` and of the next day, Beijing time."""
    start = datetime(day.year, day.month, day.day, tzinfo=SHANGHAI).timestamp()
    return start, start + 86400.0


def pct(value: float | None) -> str:
    """0.9234 → '92.3%', None → '—'."""
    return "—" if value is None else f"{value * 100:.1f}%"


__all__ = ["DEFAULT_SL_THRESHOLD_S", "SHANGHAI", "abandon_rate", "answer_rate", "average_handle_time",
           "average_speed_of_answer", "average_wait", "day_bounds", "local_day", "longest_wait", "pct",
           "service_level", "within_threshold"]

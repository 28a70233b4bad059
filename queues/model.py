"""Queue model for the wallboard: pure, stdlib only.

* :class:`Tally` — one queue's counts and sums for one day (or any period:
  the history reports of issue 6 item 3 sum the same fields from the
  ``calls`` table with :func:`tally_of`), and the KPI figures computed from
  it with :mod:`queues.metrics`;
* :class:`AgentState` and :func:`classify_member` — what a queue member is
  doing now (available, ringing, on a call, wrap-up, paused, logged off);
* :func:`decide_surge` — the surge-mode switch with hysteresis, and the
  supervisor's manual override.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum
from typing import Iterable, Mapping

from . import metrics as m


# ------------------------------------------------------------------ tallies
@dataclass(frozen=True, slots=True)
class Tally:
    """Counts of queue stints (one caller's time in one queue).  A caller
    transferred to a second queue is offered to both; each queue counts its
    own stint, and the all-queue total is the sum."""

    offered: int = 0  # 进线 entered the queue
    answered: int = 0  # 人工接通 an agent connected
    abandoned: int = 0  # 放弃 the caller hung up while queued
    exited: int = 0  # left the queue otherwise (timeout, callback request, unknown)
    answered_within: int = 0  # answered within the service-level threshold
    wait_answered_s: float = 0.0
    wait_abandoned_s: float = 0.0
    completed: int = 0  # answered calls that ended (AgentComplete)
    talk_s: float = 0.0

    def __add__(self, other: "Tally") -> "Tally":
        return Tally(*(getattr(self, f) + getattr(other, f) for f in self.__dataclass_fields__))

    def figures(self, *, wrapup_s: float = 0.0) -> dict[str, float | int | None]:
        return {
            "offered": self.offered, "answered": self.answered, "abandoned": self.abandoned,
            "exited": self.exited, "answered_within": self.answered_within,
            "answer_rate": m.answer_rate(self.answered, self.offered),
            "abandon_rate": m.abandon_rate(self.abandoned, self.offered),
            "service_level": m.service_level(self.answered_within, self.answered, self.abandoned, self.exited),
            "asa_s": m.average_speed_of_answer(self.wait_answered_s, self.answered),
            "aht_s": m.average_handle_time(self.talk_s, self.completed, wrapup_s),
            "avg_wait_s": m.average_wait(self.wait_answered_s, self.wait_abandoned_s, self.answered,
                                         self.abandoned),
        }


def add_offered(t: Tally) -> Tally:
    return replace(t, offered=t.offered + 1)


def add_answered(t: Tally, wait_s: float, threshold_s: float) -> Tally:
    return replace(t, answered=t.answered + 1, wait_answered_s=t.wait_answered_s + wait_s,
                   answered_within=t.answered_within + (1 if m.within_threshold(wait_s, threshold_s) else 0))


def add_abandoned(t: Tally, wait_s: float) -> Tally:
    return replace(t, abandoned=t.abandoned + 1, wait_abandoned_s=t.wait_abandoned_s + wait_s)


def add_exited(t: Tally) -> Tally:
    return replace(t, exited=t.exited + 1)


def add_completed(t: Tally, talk_s: float) -> Tally:
    return replace(t, completed=t.completed + 1, talk_s=t.talk_s + talk_s)


@dataclass(frozen=True, slots=True)
class Stint:
    """One finished (or still waiting) queue stint, e.g. a ``calls`` row:
    ``outcome`` answered / abandoned / exited / unknown / waiting."""

    queue: str
    outcome: str
    wait_s: float = 0.0
    talk_s: float | None = None


def tally_of(stints: Iterable[Stint], threshold_s: float) -> dict[str, Tally]:
    """Per-queue tallies of a batch of stints (history reports, seeding
    today's wallboard after a restart)."""
    out: dict[str, Tally] = {}
    for s in stints:
        t = add_offered(out.get(s.queue, Tally()))
        if s.outcome == "answered":
            t = add_answered(t, s.wait_s, threshold_s)
            if s.talk_s is not None:
                t = add_completed(t, s.talk_s)
        elif s.outcome == "abandoned":
            t = add_abandoned(t, s.wait_s)
        elif s.outcome != "waiting":
            t = add_exited(t)
        out[s.queue] = t
    return out


def total(tallies: Mapping[str, Tally]) -> Tally:
    out = Tally()
    for t in tallies.values():
        out = out + t
    return out


# ------------------------------------------------------------------ agents
class AgentState(str, Enum):
    AVAILABLE = "available"
    RINGING = "ringing"
    ON_CALL = "on_call"
    WRAPUP = "wrapup"
    PAUSED = "paused"
    LOGGED_OFF = "logged_off"


AGENT_STATE_LABELS = {
    AgentState.AVAILABLE: "空闲 Available",
    AgentState.RINGING: "振铃 Ringing",
    AgentState.ON_CALL: "通话中 On a call",
    AgentState.WRAPUP: "话后整理 Wrap-up",
    AgentState.PAUSED: "示忙 Paused",
    AgentState.LOGGED_OFF: "未签入 Logged off",
}

# AST_DEVICE_* values in QueueMember* Status
DEV_UNKNOWN, DEV_NOT_INUSE, DEV_INUSE, DEV_BUSY, DEV_INVALID, DEV_UNAVAILABLE, DEV_RINGING, DEV_RINGINUSE, \
    DEV_ONHOLD = range(9)
_DEVICE_GONE = (DEV_INVALID, DEV_UNAVAILABLE)
_DEVICE_IDLE = (DEV_UNKNOWN, DEV_NOT_INUSE)


@dataclass(frozen=True, slots=True)
class Activity:
    """What the Agent* events said an interface last did: ``ringing``
    (AgentCalled), ``on_call`` (AgentConnect), ``wrapup`` (AgentComplete),
    since ``since`` (epoch seconds)."""

    kind: str
    since: float
    queue: str = ""


def classify_member(*, member: bool, status: int, paused: bool, in_call: bool, activity: Activity | None,
                    now: float, wrapup_s: float) -> AgentState:
    """One queue member's state now.  Precedence: logged off > on a call >
    ringing > wrap-up > paused > available (a paused agent still on a call
    shows on a call; the pause reason is shown beside it).  The device
    state guards against stale activity (an AgentComplete lost while the AMI
    link was down): a member whose device is idle is neither on a call nor
    ringing."""
    if not member or status in _DEVICE_GONE:
        return AgentState.LOGGED_OFF
    busy_device = status not in _DEVICE_IDLE
    kind = activity.kind if activity is not None else ""
    if in_call or (kind == "on_call" and busy_device):
        return AgentState.ON_CALL
    if status in (DEV_RINGING, DEV_RINGINUSE) or (kind == "ringing" and busy_device):
        return AgentState.RINGING
    if kind == "wrapup" and activity is not None and now - activity.since < wrapup_s:
        return AgentState.WRAPUP
    if paused:
        return AgentState.PAUSED
    if busy_device:  # a call outside the queue (outbound, internal)
        return AgentState.ON_CALL
    return AgentState.AVAILABLE


def count_states(states: Iterable[AgentState]) -> dict[str, int]:
    out = {s.value: 0 for s in AgentState}
    for s in states:
        out[s.value] += 1
    return out


# ------------------------------------------------------------------ surge
@dataclass(frozen=True, slots=True)
class SurgeSettings:
    """Switch on when waiting ≥ ``on_waiting`` or longest wait ≥
    ``on_longest_s``; switch off only when waiting ≤ ``off_waiting`` and
    longest ≤ ``off_longest_s`` have held for ``off_after_s`` seconds, and
    not before it has been on ``min_on_s`` seconds."""

    on_waiting: int = 10
    on_longest_s: float = 120.0
    off_waiting: int = 3
    off_longest_s: float = 45.0
    min_on_s: float = 120.0
    off_after_s: float = 60.0

    def check(self) -> None:
        if self.on_waiting < 1 or self.on_longest_s <= 0:
            raise ValueError("surge on-thresholds must be > 0")
        if not 0 <= self.off_waiting < self.on_waiting:
            raise ValueError("need 0 <= off_waiting < on_waiting")
        if not 0 <= self.off_longest_s < self.on_longest_s:
            raise ValueError("need 0 <= off_longest_s < on_longest_s")
        if self.min_on_s < 0 or self.off_after_s < 0:
            raise ValueError("surge durations must be >= 0")


@dataclass(frozen=True, slots=True)
class SurgeState:
    mode: str = "auto"  # auto | on | off (a supervisor's manual choice)
    auto_on: bool = False  # what the automatic rule says
    since: float = 0.0  # when auto_on last changed
    calm_since: float | None = None  # when the figures last fell below the off-thresholds
    reason: str = ""
    changed_by: str = ""  # "auto" or "supervisor"

    @property
    def active(self) -> bool:
        return self.mode == "on" or (self.mode == "auto" and self.auto_on)


def decide_surge(state: SurgeState, s: SurgeSettings, waiting: int, longest_s: float, now: float) -> SurgeState:
    """Pure: the automatic rule with hysteresis (runs in every mode, so
    that returning to ``auto`` takes the current figures at once)."""
    if not state.auto_on:
        if waiting >= s.on_waiting or longest_s >= s.on_longest_s:
            why = (f"排队 {waiting} 人 ≥ {s.on_waiting}" if waiting >= s.on_waiting
                   else f"最长等待 {int(longest_s)} 秒 ≥ {int(s.on_longest_s)}")
            return replace(state, auto_on=True, since=now, calm_since=None, reason=why, changed_by="auto")
        return state
    calm = waiting <= s.off_waiting and longest_s <= s.off_longest_s
    if not calm:
        return replace(state, calm_since=None) if state.calm_since is not None else state
    calm_since = state.calm_since if state.calm_since is not None else now
    if now - state.since >= s.min_on_s and now - calm_since >= s.off_after_s:
        return replace(state, auto_on=False, since=now, calm_since=None,
                       reason=f"排队 {waiting} 人, 最长等待 {int(longest_s)} 秒, 已恢复", changed_by="auto")
    return replace(state, calm_since=calm_since) if calm_since != state.calm_since else state


def surge_settings_of(cfg) -> SurgeSettings:
    """From :class:`cti.config.Config` (duck-typed: the model imports no cti)."""
    return SurgeSettings(on_waiting=cfg.surge_on_waiting, on_longest_s=float(cfg.surge_on_longest_wait_s),
                         off_waiting=cfg.surge_off_waiting, off_longest_s=float(cfg.surge_off_longest_wait_s),
                         min_on_s=float(cfg.surge_min_on_s), off_after_s=float(cfg.surge_off_after_s))


def set_surge_mode(state: SurgeState, mode: str) -> SurgeState:
    if mode not in ("auto", "on", "off"):
        raise ValueError("mode must be auto, on or off")
    return replace(state, mode=mode, changed_by="supervisor")


def parse_wrapup(spec: str) -> dict[str, float]:
    """``"repair=10,complaint=30"`` → ``{"repair": 10.0, "complaint": 30.0}``
    (queues.conf ``wrapuptime`` per queue; Asterisk does not report it)."""
    out: dict[str, float] = {}
    for part in (spec or "").split(","):
        part = part.strip()
        if not part:
            continue
        q, sep, v = part.partition("=")
        if not sep or not q.strip():
            raise ValueError(f"expected queue=seconds, got {part!r}")
        secs = float(v)
        if secs < 0:
            raise ValueError(f"negative wrap-up time for {q.strip()!r}")
        out[q.strip()] = secs
    return out


__all__ = ["AGENT_STATE_LABELS", "Activity", "AgentState", "Stint", "SurgeSettings", "SurgeState", "Tally",
           "add_abandoned", "add_answered", "add_completed", "add_exited", "add_offered", "classify_member",
           "count_states", "decide_surge", "parse_wrapup", "set_surge_mode", "surge_settings_of", "tally_of",
           "total"]

"""The wallboard's live queue model, kept current by AMI frames.

:class:`QueueBoard` sits beside :class:`cti.live.LiveModel` on the AMI frame
sink (both run synchronously, in wire order, before the call pipeline), so a
resync snapshot (which replaces the LiveModel's callers and members at the
exact wire position where Asterisk answered) and the events around it are
seen in one order.  The board adds what the snapshot cannot give:

* today's tallies per queue (Asia/Shanghai day) from QueueCallerJoin,
  AgentConnect (``HoldTime``), QueueCallerAbandon (``HoldTime``),
  AgentComplete (``TalkTime``) and, for a stint that left the queue with
  neither (timeout, transfer out), the caller channel's Hangup;
* what each member interface is doing (AgentCalled → ringing,
  AgentConnect → on a call, AgentComplete → wrap-up), which QueueMember*
  device states alone cannot tell (a ringing Local channel says "in use").

:meth:`QueueBoard.view` builds the JSON-ready picture from both; no I/O.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import date
from typing import Callable, Iterable, Mapping

from cti.frame import Frame
from cti.live import LiveModel, LiveQueues, agent_of

from . import metrics as m
from .model import (AGENT_STATE_LABELS, Activity, AgentState, Tally, add_abandoned, add_answered,
                    add_completed, add_exited, add_offered, classify_member, count_states)

QUEUE_LABELS = {"repair": "故障报修", "complaint": "投诉举报", "enquiry": "咨询查询"}

# across queues, the state an agent is shown in
_AGENT_PRECEDENCE = (AgentState.ON_CALL, AgentState.RINGING, AgentState.WRAPUP, AgentState.AVAILABLE,
                     AgentState.PAUSED, AgentState.LOGGED_OFF)


def _num(v: str | None) -> float:
    try:
        return max(0.0, float((v or "").strip()))
    except ValueError:
        return 0.0


@dataclass
class _Pending:
    joined_at: float
    left: bool = False


@dataclass
class Lifetime:
    """Monotonic counters since the process started (Prometheus counters)."""

    offered: dict[str, int] = field(default_factory=dict)
    answered: dict[str, int] = field(default_factory=dict)
    abandoned: dict[str, int] = field(default_factory=dict)

    def bump(self, which: str, queue: str) -> None:
        d = getattr(self, which)
        d[queue] = d.get(queue, 0) + 1


CALLERS_SHOWN = 50  # callers listed per queue on the wallboard (all are counted)


class QueueBoard:
    """Today's tallies, member activity, and the view of the live model."""

    def __init__(self, live: LiveModel, *, queues: Iterable[str] = ("repair", "complaint", "enquiry"),
                 sl_threshold_s: float = m.DEFAULT_SL_THRESHOLD_S, wrapup_s: Mapping[str, float] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.live = live
        self.queue_names = list(queues)
        self.sl_threshold_s = float(sl_threshold_s)
        self.wrapup_s = dict(wrapup_s or {})
        self.clock = clock
        self.day: date = m.local_day(clock())
        self._day_bounds: tuple = (0.0, 0.0, None)  # [start, end) of the day of the last event, and that day
        self.tallies: dict[str, Tally] = {}
        self.remote: dict[str, Tally] = {}  # today's calls on other nodes (cti.cluster, from the calls table)
        self.lifetime = Lifetime()
        self.activity: dict[str, Activity] = {}  # interface -> last Agent* activity
        self.pending: dict[tuple[str, str], _Pending] = {}  # (queue, caller uniqueid)
        self._pending_queues: set[str] = set()  # every queue of a pending key
        self.known: dict[str, str] = {}  # interface -> member name, ever seen
        self.ever: set[tuple[str, str]] = set()  # (queue, interface) ever a member
        self.frames = 0
        self.version = 0  # bumped on every change the wallboard shows
        self.listeners: list[Callable[[], None]] = []

    # ----------------------------------------------------------- day roll
    def _roll(self, ts: float) -> None:
        bounds = self._day_bounds
        if bounds[0] <= ts < bounds[1] and bounds[2] == self.day:
            return  # the same Beijing day as the last event (the common case: no time-zone arithmetic)
        day = m.local_day(ts)
        self._day_bounds = (*m.day_bounds(day), day)
        if day != self.day:
            self.day = day
            self.tallies = {}
            self.remote = {}
            self.pending = {k: p for k, p in self.pending.items() if m.local_day(p.joined_at) == day}

    def seed(self, day: date, tallies: Mapping[str, Tally]) -> None:
        """Start today's tallies from the call records (after a restart);
        events seen since are added on top."""
        if day != self.day:
            return
        for q, t in tallies.items():
            self.tallies[q] = t + self.tallies.get(q, Tally())
        self._changed()

    def set_remote(self, day: date, tallies: Mapping[str, Tally]) -> None:
        """Today's figures of the other nodes' calls, shown on top of this node's."""
        if day != self.day:
            return
        if dict(tallies) != self.remote:
            self.remote = dict(tallies)
            self._changed()

    def _tally(self, queue: str, fn, *args) -> None:
        self.tallies[queue] = fn(self.tallies.get(queue, Tally()), *args)

    def _changed(self) -> None:
        self.version += 1
        for cb in self.listeners:
            cb()

    # -------------------------------------------------------------- frames
    def on_frame(self, f: Frame, ts: float) -> None:
        ev = f.event
        if ev is None:
            return
        if ev.startswith("Queue"):
            self._queue_event(ev, f, ts)
        elif ev.startswith("Agent"):
            self._agent_event(ev, f, ts)
        elif ev == "Hangup":
            uid = f.get("Uniqueid") or ""
            for key in [(q, uid) for q in self._pending_queues if (q, uid) in self.pending]:  # O(queues)
                p = self.pending.pop(key)
                if p.left:  # left the queue with no agent and no abandon
                    self._roll(ts)
                    self._tally(key[0], add_exited)
                    self._changed()
            return
        else:
            return
        self.frames += 1

    def _queue_event(self, ev: str, f: Frame, ts: float) -> None:
        q = f.get("Queue") or ""
        if ev == "QueueCallerJoin":
            self._roll(ts)
            self.pending[(q, f.get("Uniqueid") or "")] = _Pending(ts)
            self._pending_queues.add(q)
            self._tally(q, add_offered)
            self.lifetime.bump("offered", q)
        elif ev == "QueueCallerAbandon":
            self._roll(ts)
            self.pending.pop((q, f.get("Uniqueid") or ""), None)
            self._tally(q, add_abandoned, _num(f.get("HoldTime")))
            self.lifetime.bump("abandoned", q)
        elif ev == "QueueCallerLeave":
            p = self.pending.get((q, f.get("Uniqueid") or ""))
            if p is not None:
                p.left = True
        elif ev in ("QueueMemberAdded", "QueueMemberStatus", "QueueMemberPause", "QueueMemberPenalty",
                    "QueueMemberRinginuse"):
            iface = f.get("Interface") or f.get("Location") or ""
            self.known[iface] = f.get("MemberName") or f.get("Name") or self.known.get(iface) or iface
            self.ever.add((q, iface))
            if ev == "QueueMemberStatus" and (f.get("Status") or "").strip() in ("0", "1"):
                act = self.activity.get(iface)
                if act is not None and act.kind in ("ringing", "on_call"):
                    del self.activity[iface]
        elif ev != "QueueMemberRemoved":
            return
        self._changed()

    def _agent_event(self, ev: str, f: Frame, ts: float) -> None:
        iface = f.get("Interface") or ""
        q = f.get("Queue") or ""
        if ev == "AgentCalled":
            cur = self.activity.get(iface)
            if cur is None or cur.kind != "on_call":
                self.activity[iface] = Activity("ringing", ts, q)
        elif ev == "AgentRingNoAnswer":
            cur = self.activity.get(iface)
            if cur is not None and cur.kind == "ringing":
                del self.activity[iface]
        elif ev == "AgentConnect":
            self._roll(ts)
            self.activity[iface] = Activity("on_call", ts, q)
            self.pending.pop((q, f.get("Uniqueid") or ""), None)
            self._tally(q, add_answered, _num(f.get("HoldTime")), self.sl_threshold_s)
            self.lifetime.bump("answered", q)
        elif ev == "AgentComplete":
            self._roll(ts)
            self.activity[iface] = Activity("wrapup", ts, q)
            self._tally(q, add_completed, _num(f.get("TalkTime")))
        else:
            return
        if iface:
            self.known.setdefault(iface, f.get("MemberName") or iface)
        self._changed()

    # ---------------------------------------------------------------- view
    def _queues(self, st: LiveQueues) -> list[str]:
        names = list(self.queue_names)
        for q in list(st.queues) + [q for q, _ in st.members] + [e.queue for e in st.entries]:
            if q and q not in names:
                names.append(q)
        return names

    def member_state(self, st: LiveQueues, queue: str, iface: str, now: float) -> AgentState:
        mem = st.members.get((queue, iface))
        act = self.activity.get(iface)
        wrap = self.wrapup_s.get(queue, 0.0)
        if act is not None and act.kind == "wrapup":
            wrap = self.wrapup_s.get(act.queue, wrap)
        return classify_member(member=mem is not None, status=mem.status if mem else 0,
                               paused=mem.paused if mem else False, in_call=mem.in_call if mem else False,
                               activity=act, now=now, wrapup_s=wrap)

    def longest_wait(self, now: float | None = None) -> tuple[int, float]:
        now = self.clock() if now is None else now
        oldest = self.live.oldest_join()  # the longest wait is the earliest join's
        return self.live.waiting_count(), m.longest_wait(() if oldest is None else (max(0, int(now - oldest)),))

    def view(self, now: float | None = None) -> dict:
        now = self.clock() if now is None else now
        self._roll(now)
        st = self.live.state
        for (q, iface), mem in st.members.items():
            self.known.setdefault(iface, mem.name or iface)
            self.ever.add((q, iface))
        queues = self._queues(st)
        agent_rows: dict[str, dict] = {}
        queue_rows = []
        all_waits: list[float] = []
        for q in queues:
            waiting = st.waiting(q)
            waits = [e.wait_s(now) for e in waiting]
            all_waits += waits
            # a storm can put thousands in a queue: the page lists the first
            # CALLERS_SHOWN, the counts and waits cover them all
            callers = [{"position": e.position, "caller_num": e.caller_num, "caller_name": e.caller_name,
                        "wait_s": e.wait_s(now), "uniqueid": e.uniqueid} for e in waiting[:CALLERS_SHOWN]]
            states = []
            for (mq, iface) in sorted(self.ever):
                if mq != q:
                    continue
                s = self.member_state(st, q, iface, now)
                states.append(s)
                mem = st.members.get((q, iface))
                row = agent_rows.setdefault(iface, {
                    "interface": iface, "agent": agent_of(iface), "name": self.known.get(iface, iface),
                    "queues": []})
                row["queues"].append({"queue": q, "state": s.value, "member": mem is not None,
                                      "paused": bool(mem and mem.paused),
                                      "reason": mem.paused_reason if mem else "",
                                      "membership": mem.membership if mem else "",
                                      "calls_taken": mem.calls_taken if mem else 0})
            t = self.tallies.get(q, Tally()) + self.remote.get(q, Tally())
            queue_rows.append({"name": q, "label": QUEUE_LABELS.get(q, q), "waiting": len(waiting),
                               "callers_not_listed": max(0, len(waiting) - CALLERS_SHOWN),
                               "longest_wait_s": m.longest_wait(waits), "callers": callers,
                               "agents": count_states(states),
                               "figures": t.figures(wrapup_s=self.wrapup_s.get(q, 0.0))})
        agents = []
        for iface in sorted(agent_rows, key=lambda i: (agent_of(i), i)):
            row = agent_rows[iface]
            qstates = {AgentState(x["state"]) for x in row["queues"]}
            best = next(s for s in _AGENT_PRECEDENCE if s in qstates or s is AgentState.LOGGED_OFF)
            reasons = sorted({x["reason"] for x in row["queues"] if x["paused"] and x["reason"]})
            act = self.activity.get(iface)
            row.update(state=best.value, state_label=AGENT_STATE_LABELS[best], paused_reason="，".join(reasons),
                       activity_since=act.since if act else None)
            agents.append(row)
        total_tally = Tally()
        both = {q: self.tallies.get(q, Tally()) + self.remote.get(q, Tally())
                for q in set(self.tallies) | set(self.remote)}
        for t in both.values():
            total_tally = total_tally + t
        avg_wrap = (sum(self.wrapup_s.get(q, 0.0) * both[q].completed for q in both)
                    / total_tally.completed) if total_tally.completed else 0.0
        return {
            "type": "wallboard", "now": now, "day": self.day.isoformat(), "version": self.version,
            "sl_threshold_s": self.sl_threshold_s, "synced_at": st.synced_at,
            "queues": queue_rows,
            "total": {"waiting": len(all_waits), "longest_wait_s": m.longest_wait(all_waits),
                      "agents": count_states(AgentState(a["state"]) for a in agents),
                      "figures": total_tally.figures(wrapup_s=avg_wrap)},
            "agents": agents,
        }


__all__ = ["Lifetime", "QUEUE_LABELS", "QueueBoard"]

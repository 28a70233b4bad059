"""Resync after every AMI (re)login and every FullyBooted: ask Asterisk what
is live (CoreShowChannels, QueueStatus, QueueSummary), compare it with what
the call tracker believes, and repair the difference:

* a call the tracker thinks is live but that has no channel left ended while
  we were away: it is closed with ``close_reason`` ``ended_while_disconnected``
  (its calls-table row says so); a late Hangup or Abandon for it is not a
  new call (the tracker keeps it among the recently ended);
* a call that is still up continues: its channel set, queue/agent state are
  corrected from the snapshot (a channel that hung up while we were away
  would otherwise keep it open forever); later events update the same call;
* a call the tracker never saw (it started while we were away) is adopted.

:func:`reconcile` is pure.  The snapshot is applied inside the pipeline at
the exact point of the event stream where Asterisk answered the last query
(``on_complete`` of :meth:`HotlineManager.action`), so events before the
answer are applied before it and events after it after, and nothing is
counted twice.  Queue and agent state (:mod:`cti.live`) is replaced whole.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from .ami import ActionResult, AmiError, HotlineManager
from .events import DomainEvent
from .frame import Frame
from .live import ChannelInfo, LiveModel, Snapshot, agent_of, build_snapshot, interface_of_channel
from .logs import get_logger
from .pipeline import CallPipeline
from .tracker import Call, CallState, CallTracker, replace

log = get_logger("hotline.resync")

ENDED_WHILE_DISCONNECTED = "ended_while_disconnected"
IVR_VARIABLES = {"IVR_CHOICE": "ivr_choice", "CUSTOMER_ID": "customer_id", "OUTAGE_ID": "outage_id"}


@dataclass(frozen=True, slots=True)
class CallResynced(DomainEvent):
    """A call closed, continued (corrected) or adopted by a resync."""

    linkedid: str = ""
    action: str = ""  # closed | continued | adopted
    reason: str = ""


@dataclass(frozen=True, slots=True)
class TrackerView:
    """What the tracker believed when the snapshot was taken."""

    active: tuple[Call, ...] = ()
    ended: frozenset[str] = frozenset()  # linkedids recently ended
    gone: Mapping[str, frozenset[str]] = field(default_factory=dict)  # linkedid -> uniqueids hung up

    @classmethod
    def of(cls, tracker: CallTracker) -> "TrackerView":
        active = tuple(tracker.active())
        return cls(active, frozenset(c.linkedid for c in tracker.recently_ended()),
                   {c.linkedid: tracker.hung_up_uniqueids(c.linkedid) for c in active})


@dataclass(frozen=True, slots=True)
class ClosedCall:
    linkedid: str
    reason: str
    outcome: str


@dataclass(frozen=True, slots=True)
class ResyncPlan:
    closed: tuple[ClosedCall, ...] = ()
    continued: tuple[Call, ...] = ()  # corrected live calls
    adopted: tuple[Call, ...] = ()  # calls never seen before
    unchanged: int = 0

    def summary(self) -> dict[str, int]:
        return {"closed": len(self.closed), "continued": len(self.continued),
                "adopted": len(self.adopted), "unchanged": self.unchanged}


# ---------------------------------------------------------------- pure part
def _closed_outcome(call: Call) -> str:
    if call.outcome:
        return call.outcome
    if call.answered_at is not None:
        return "answered"
    if call.queued_at is not None:
        return "unknown"  # queued when we lost sight of it: answered or abandoned, nobody knows
    return ""


def _member_channel(ch: ChannelInfo, interfaces: frozenset[str]) -> str:
    """The member interface a channel belongs to, or ''."""
    iface = interface_of_channel(ch.channel)
    return iface if iface in interfaces else ""


def _observe(chans: list[ChannelInfo], snap: Snapshot, caller_uid: str) -> dict:
    """State facts about one linkedid's live channels."""
    interfaces = snap.member_interfaces
    entry = None
    uids = {c.uniqueid for c in chans}
    for e in snap.entries:
        if e.uniqueid in uids and (not caller_uid or e.uniqueid == caller_uid or entry is None):
            entry = e
    members = [c for c in chans if _member_channel(c, interfaces)]
    caller = None
    if entry is not None:
        caller = snap.channels.get(entry.uniqueid)
    if caller is None and caller_uid:
        caller = snap.channels.get(caller_uid)
    if caller is None:
        queue_apps = [c for c in chans if c.application == "Queue"]
        non_members = [c for c in chans if c not in members]
        caller = (queue_apps or [c for c in non_members if c.caller_num] or non_members or chans)[0]
    agent = ""
    if caller is not None and caller.bridge_id:
        for m in members:
            if m.bridge_id == caller.bridge_id:
                agent = agent_of(_member_channel(m, interfaces))
                break
    return {"entry": entry, "caller": caller, "agent": agent, "uids": frozenset(uids)}


def reconcile(view: TrackerView, snap: Snapshot, now: float) -> ResyncPlan:
    """Pure: what to do so that the tracker agrees with Asterisk."""
    by_lid = snap.by_linkedid()
    closed: list[ClosedCall] = []
    continued: list[Call] = []
    adopted: list[Call] = []
    unchanged = 0
    known = set()
    for call in view.active:
        lid = call.linkedid
        known.add(lid)
        gone = view.gone.get(lid, frozenset())
        chans = [c for c in by_lid.get(lid, ()) if c.uniqueid not in gone]
        if not chans:
            closed.append(ClosedCall(lid, ENDED_WHILE_DISCONNECTED, _closed_outcome(call)))
            continue
        o = _observe(chans, snap, call.caller_uniqueid)
        ch: dict = {}
        if o["uids"] != call.channels:
            ch["channels"] = o["uids"]
        ringing = call.ringing & o["uids"]
        if ringing != call.ringing:
            ch["ringing"] = ringing
        entry, agent = o["entry"], o["agent"]
        if entry is not None:
            state = CallState.RINGING if ringing else CallState.QUEUED
            if call.queue != entry.queue:
                ch["queue"] = entry.queue
            if call.queued_at is None:
                ch["queued_at"] = entry.joined_at
            if not call.caller_uniqueid:
                ch["caller_uniqueid"] = entry.uniqueid
        elif agent:
            state = CallState.CONNECTED
            if call.agent != agent:
                ch["agent"] = agent
            if call.answered_at is None:
                ch["answered_at"] = now  # answered while we were away
            if call.outcome != "answered":
                ch["outcome"] = "answered"
            if "ringing" not in ch and call.ringing:
                ch["ringing"] = frozenset()
        elif call.state in (CallState.QUEUED, CallState.RINGING, CallState.CONNECTED) and snap.complete:
            state = CallState.IVR  # left the queue / the agent while we were away
        else:
            state = call.state
        if state is not call.state:
            ch["state"] = state
        if ch:
            continued.append(replace(call, **ch))
        else:
            unchanged += 1
    for lid, chans in by_lid.items():
        if lid in known or lid in view.ended:
            continue
        o = _observe(chans, snap, "")
        caller: ChannelInfo = o["caller"]
        entry, agent = o["entry"], o["agent"]
        started = now - max(c.duration_s for c in chans)
        fields: dict = {"caller_num": caller.caller_num, "caller_name": caller.caller_name,
                        "started_at": started, "channels": o["uids"]}
        for var, f in IVR_VARIABLES.items():
            v = caller.var(var)
            if v:
                fields[f] = v
        if entry is not None:
            fields.update(state=CallState.QUEUED, queue=entry.queue, queued_at=entry.joined_at,
                          caller_uniqueid=entry.uniqueid)
        elif agent:
            fields.update(state=CallState.CONNECTED, agent=agent, answered_at=now, outcome="answered",
                          caller_uniqueid=caller.uniqueid)
            q = caller.app_data.split(",", 1)[0] if caller.application == "Queue" else ""
            if q:
                fields["queue"] = q
        adopted.append(Call(linkedid=lid, **fields))
    return ResyncPlan(tuple(closed), tuple(continued), tuple(adopted), unchanged)


# ------------------------------------------------------------ the service
class Resyncer:
    """Runs a resync on every login and FullyBooted (one at a time)."""

    def __init__(self, manager: HotlineManager, pipeline: CallPipeline, live: LiveModel | None = None, *,
                 timeout: float = 15.0, clock=time.time) -> None:
        self.manager = manager
        self.pipeline = pipeline
        self.live = live or LiveModel()
        self.timeout = timeout
        self.clock = clock
        self._task: asyncio.Task | None = None
        self.runs = 0
        self.failures = 0
        self.last_plan: ResyncPlan | None = None
        self.last_snapshot: Snapshot | None = None
        self.done = asyncio.Event()

    # triggers
    def on_login(self, _manager=None) -> None:
        self.request("login")

    def on_fully_booted(self, _manager=None, _message=None) -> None:
        # at connect time FullyBooted comes with the login answer: the login
        # listener starts that resync.  A later one (Asterisk finished
        # booting, or restarted) starts another, unless one is in flight
        # (its queries are answered after this FullyBooted anyway).
        if self.manager.authenticated:
            self.request("fully_booted")

    def request(self, reason: str) -> None:
        if self._task is not None and not self._task.done():
            return
        self.done.clear()
        self._task = asyncio.get_running_loop().create_task(self._run(reason), name="ami-resync")

    async def _run(self, reason: str) -> None:
        try:
            await self.resync_once(reason)
        except AmiError as exc:  # the link dropped again: the next login retries
            self.failures += 1
            log.warning("ami_resync_failed", reason=reason, error=f"{type(exc).__name__}: {exc}")
        except Exception:
            self.failures += 1
            log.exception("ami_resync_failed", reason=reason)

    async def wait(self, timeout: float = 10.0) -> None:
        if self._task is not None:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)

    async def resync_once(self, reason: str = "manual") -> ResyncPlan:
        t0 = time.monotonic()
        got: dict[str, ActionResult] = {}
        loop = asyncio.get_running_loop()
        applied: asyncio.Future[ResyncPlan] = loop.create_future()

        def keep(name: str):
            def hook(result: ActionResult) -> None:
                got[name] = result
            return hook

        def channels_done(result: ActionResult) -> None:
            # synchronous, at the wire position of CoreShowChannelsComplete:
            # QueueStatus and QueueSummary were answered just before
            got["channels"] = result
            taken = self.clock()
            snap = build_snapshot(taken, result.events, _events(got.get("status")),
                                  _events(got.get("summary")),
                                  complete="status" in got and "summary" in got)
            self.last_snapshot = snap
            self.live.replace(snap)

            async def apply() -> None:
                try:
                    plan = await self._apply(snap, reason)
                except Exception as exc:
                    if not applied.done():
                        applied.set_exception(exc)
                    raise
                if not applied.done():
                    applied.set_result(plan)
            self.pipeline.run_in_order(apply)

        m = self.manager
        results = await asyncio.gather(
            m.action_list({"Action": "QueueStatus"}, self.timeout, on_complete=keep("status")),
            m.action_list({"Action": "QueueSummary"}, self.timeout, on_complete=keep("summary")),
            m.action_list({"Action": "CoreShowChannels"}, self.timeout, on_complete=channels_done),
            return_exceptions=True)
        for name, r in zip(("QueueStatus", "QueueSummary"), results[:2]):
            if isinstance(r, BaseException):
                log.warning("ami_resync_query_failed", action=name, error=f"{type(r).__name__}: {r}")
        if isinstance(results[2], BaseException):
            raise results[2]
        plan = await asyncio.wait_for(applied, self.timeout)
        self.runs += 1
        log.info("ami_resynced", reason=reason, took_ms=round((time.monotonic() - t0) * 1000, 1),
                 channels=len(self.last_snapshot.channels) if self.last_snapshot else 0,
                 waiting=len(self.live.state.entries), members=len(self.live.state.members),
                 **plan.summary())
        self.done.set()
        return plan

    async def _apply(self, snap: Snapshot, reason: str) -> ResyncPlan:
        tracker = self.pipeline.tracker
        now = snap.taken_at
        plan = reconcile(TrackerView.of(tracker), snap, now)
        self.last_plan = plan
        publish = self.pipeline.publish
        for c in plan.closed:
            call = tracker.close_call(c.linkedid, c.reason, now, c.outcome)
            if call is not None:
                log.info("call_closed_by_resync", linkedid=c.linkedid, close_reason=c.reason,
                         outcome=call.outcome)
                await publish(CallResynced(now, c.linkedid, "closed", c.reason), call)
        for call in plan.continued:
            await publish(CallResynced(now, call.linkedid, "continued", reason), tracker.adopt(call))
        for call in plan.adopted:
            log.info("call_adopted_by_resync", linkedid=call.linkedid, state=call.state.value, queue=call.queue)
            await publish(CallResynced(now, call.linkedid, "adopted", reason), tracker.adopt(call))
        return plan


def _events(result: ActionResult | None) -> Iterable[Frame]:
    return result.events if result is not None else ()


def install_resync(manager: HotlineManager, pipeline: CallPipeline, live: LiveModel | None = None,
                   **kw) -> Resyncer:
    """Wire resync into a manager (before ``connect()``): on every login and
    FullyBooted; queue/agent live state follows the events in between."""
    resyncer = Resyncer(manager, pipeline, live, **kw)
    manager.frame_listeners.append(resyncer.live.on_frame)
    manager.login_listeners.append(resyncer.on_login)
    manager.register_event("FullyBooted", resyncer.on_fully_booted)
    return resyncer


__all__ = ["CallResynced", "ClosedCall", "ENDED_WHILE_DISCONNECTED", "ResyncPlan", "Resyncer", "TrackerView",
           "install_resync", "reconcile"]

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

Asterisk does not replay AMI events, so what happened while the link was
down is known only from Asterisk's own call detail records (cdr_pgsql writes
them into the ``cdr`` table, migrations/011).  With a :class:`CdrSource`:

* a call closed as ``ended_while_disconnected`` takes its outcome (and the
  agent who answered) from its CDR rows instead of ``unknown``
  (:func:`cdr_verdict`);
* a call that started and ended while the link was down -- AMI never showed
  it -- becomes a call row from its CDR rows (:func:`recover_from_cdr`,
  ``close_reason`` ``recovered_from_cdr``): CDR rows that ended after the
  link was lost (less ``cdr_margin_s``) whose linkedid has no ``calls`` row
  and is unknown to the tracker.  Once: a recovered call joins the tracker's
  recently ended calls and gets its row, so a later pass skips it.  A second
  pass ``cdr_recheck_s`` later catches CDR rows Asterisk wrote late.

:func:`reconcile` is pure.  The snapshot is applied inside the pipeline at
the exact point of the event stream where Asterisk answered the last query
(``on_complete`` of :meth:`HotlineManager.action`), so events before the
answer are applied before it and events after it after, and nothing is
counted twice.  Queue and agent state (:mod:`cti.live`) is replaced whole.
"""
from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from .ami import ActionResult, AmiError, HotlineManager
from .events import DomainEvent
from .frame import Frame
from .live import ChannelInfo, LiveModel, Snapshot, agent_of, build_snapshot, interface_of_channel
from .logs import get_logger
from .pipeline import CallPipeline
from .tracker import Call, CallState, CallTracker, replace

log = get_logger("hotline.resync")

ENDED_WHILE_DISCONNECTED = "ended_while_disconnected"
RECOVERED_FROM_CDR = "recovered_from_cdr"
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
    agent: str = ""  # from the CDR: who answered while we were away
    answered_at: float | None = None
    talk_time: int = 0


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


# ------------------------------------------------------- CDR (pure part)
@dataclass(frozen=True, slots=True)
class CdrRecord:
    """One row of Asterisk's CDR (cdr_pgsql column names; times as epoch
    seconds, ``None`` when unset)."""

    linkedid: str
    uniqueid: str = ""
    channel: str = ""
    dstchannel: str = ""
    src: str = ""
    clid: str = ""
    lastapp: str = ""
    lastdata: str = ""
    disposition: str = ""
    start: float | None = None
    answer: float | None = None
    end: float | None = None
    duration: int = 0
    billsec: int = 0
    sequence: int = 0


@dataclass(frozen=True, slots=True)
class CdrVerdict:
    """What a call's CDR rows say about it."""

    outcome: str  # answered | abandoned | "" (never reached a queue)
    agent: str = ""
    queue: str = ""
    answered_at: float | None = None
    talk_time: int = 0


def _answered_by_member(r: CdrRecord) -> bool:
    return r.disposition.strip().upper() == "ANSWERED" and bool(r.dstchannel.strip())


def _caller_name(clid: str) -> str:
    name, sep, _ = clid.rpartition("<")
    return name.strip().strip('"').strip() if sep else ""


def cdr_verdict(records: Sequence[CdrRecord]) -> CdrVerdict:
    """The outcome rule for one linkedid's CDR rows (Asterisk 12+ CDRs of a
    queue call, party A = the caller):

    * **answered** iff some row has ``disposition`` ``ANSWERED`` *and* a
      ``dstchannel`` (a queue member bridged to the caller); the agent is
      that member (``PJSIP/1001-0000002a`` / ``Local/1001@agents-…;1`` →
      ``1001``), ``answered_at`` that row's ``answer`` and the talk time
      its ``billsec`` (the latest such row: after a transfer, the last
      agent).  ``ANSWERED`` without a ``dstchannel`` only says that the
      dialplan answered the caller (before the IVR), not an agent;
    * otherwise **abandoned** if the caller reached ``Queue()`` (some row's
      ``lastapp`` is ``Queue``): members rung and not answering leave rows
      ``NO ANSWER`` with a ``dstchannel``;
    * otherwise ``""``: the caller left in the IVR.

    The queue is the first argument of the last ``Queue()`` row."""
    rows = sorted(records, key=lambda r: (r.start or 0.0, r.sequence))
    queue = ""
    for r in rows:
        if r.lastapp.strip().lower() == "queue" and r.lastdata:
            queue = r.lastdata.split(",", 1)[0].strip() or queue
    answered = [r for r in rows if _answered_by_member(r)]
    if answered:
        r = answered[-1]
        return CdrVerdict("answered", agent_of(interface_of_channel(r.dstchannel.strip())), queue,
                          r.answer, max(0, int(r.billsec)))
    if any(r.lastapp.strip().lower() == "queue" for r in rows):
        return CdrVerdict("abandoned", "", queue)
    return CdrVerdict("", "", queue)


def call_from_cdr(records: Sequence[CdrRecord], reason: str = RECOVERED_FROM_CDR) -> Call:
    """The ended :class:`Call` of a linkedid known only from its CDR rows
    (:func:`cdr_verdict` for the outcome).  The CDR has no queue-entry time:
    ``queued_at`` is the call's start when it reached a queue (so that the
    queue reports count it); hold time is unknown (0)."""
    rows = sorted(records, key=lambda r: (r.start or 0.0, r.sequence))
    v = cdr_verdict(rows)
    first = rows[0]
    caller = next((r for r in rows if r.src), first)
    starts = [r.start for r in rows if r.start is not None]
    ends = [r.end for r in rows if r.end is not None]
    started = min(starts) if starts else None
    return Call(linkedid=first.linkedid, caller_num=caller.src, caller_name=_caller_name(caller.clid),
                queue=v.queue, ivr_choice=v.queue, state=CallState.ENDED, agent=v.agent,
                started_at=started, queued_at=started if v.queue else None, answered_at=v.answered_at,
                ended_at=max(ends) if ends else started, outcome=v.outcome, talk_time=v.talk_time,
                caller_uniqueid=caller.uniqueid, close_reason=reason)


def recover_from_cdr(view: TrackerView, snap: Snapshot | None,
                     cdr: Mapping[str, Sequence[CdrRecord]]) -> tuple[Call, ...]:
    """Pure: the calls to record from CDR rows whose linkedid has no
    ``calls`` row (the caller's query): those the tracker does not know
    (neither live nor recently ended) and that are not live in the snapshot."""
    known = {c.linkedid for c in view.active} | set(view.ended)
    live = snap.by_linkedid() if snap is not None else {}
    out = []
    for lid in sorted(cdr, key=lambda k: min((r.start or 0.0) for r in cdr[k]) if cdr[k] else 0.0):
        if not lid or lid in known or lid in live or not cdr[lid]:
            continue
        out.append(call_from_cdr(cdr[lid]))
    return tuple(out)


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


def reconcile(view: TrackerView, snap: Snapshot, now: float,
              cdr: Mapping[str, Sequence[CdrRecord]] | None = None) -> ResyncPlan:
    """Pure: what to do so that the tracker agrees with Asterisk.  ``cdr``:
    CDR rows by linkedid; a call that ended while we were away takes its
    outcome from them (:func:`cdr_verdict`) unless the tracker already saw
    it answered."""
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
            rows = (cdr or {}).get(lid)
            v = cdr_verdict(rows) if rows else None
            if v is not None and v.outcome and call.outcome != "answered" and call.answered_at is None:
                closed.append(ClosedCall(lid, ENDED_WHILE_DISCONNECTED, v.outcome, v.agent,
                                         v.answered_at if v.outcome == "answered" else None, v.talk_time))
            else:
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


# ------------------------------------------------------------ CDR source
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")
_CDR_COLUMNS = ("""linkedid, uniqueid, channel, dstchannel, src, clid, lastapp, lastdata, disposition,
                  extract(epoch FROM start)::float8 AS start, extract(epoch FROM answer)::float8 AS answer,
                  extract(epoch FROM "end")::float8 AS end_, duration, billsec, sequence""")


def _record(r: Any) -> CdrRecord:
    answer = r["answer"]
    if answer is not None and answer <= 0:  # cdr_pgsql writes the epoch for "never answered"
        answer = None
    return CdrRecord(r["linkedid"], r["uniqueid"], r["channel"], r["dstchannel"], r["src"], r["clid"],
                     r["lastapp"], r["lastdata"], r["disposition"], r["start"], answer, r["end_"],
                     int(r["duration"] or 0), int(r["billsec"] or 0), int(r["sequence"] or 0))


class CdrSource:
    """Reads Asterisk's CDR table (cdr_pgsql, migrations/011) from the
    service's PostgreSQL.  ``pool``: an asyncpg pool or a function returning
    one."""

    def __init__(self, pool: Any, table: str = "cdr", *, timeout: float = 5.0, max_rows: int = 50_000) -> None:
        if not _IDENT.match(table):
            raise ValueError(f"bad CDR table name {table!r}")
        self._pool = pool
        self.table = table
        self.timeout = timeout
        self.max_rows = max_rows

    @property
    def pool(self) -> Any:
        return self._pool() if callable(self._pool) else self._pool

    @staticmethod
    def _group(rows: Iterable[Any]) -> dict[str, list[CdrRecord]]:
        out: dict[str, list[CdrRecord]] = {}
        for r in rows:
            out.setdefault(r["linkedid"], []).append(_record(r))
        return out

    async def for_calls(self, linkedids: Iterable[str]) -> dict[str, list[CdrRecord]]:
        lids = sorted(set(linkedids))
        if not lids:
            return {}
        async with self.pool.acquire(timeout=self.timeout) as conn:
            rows = await conn.fetch(
                f"SELECT {_CDR_COLUMNS} FROM {self.table} WHERE linkedid = ANY($1::text[]) "
                "ORDER BY start, sequence", lids, timeout=self.timeout)
        return self._group(rows)

    async def unrecorded_since(self, since: float) -> dict[str, list[CdrRecord]]:
        """CDR rows of linkedids with no ``calls`` row, of calls that ended
        at or after ``since`` (epoch seconds); all rows of each such linkedid."""
        async with self.pool.acquire(timeout=self.timeout) as conn:
            rows = await conn.fetch(
                f"""SELECT {_CDR_COLUMNS} FROM {self.table} c
                     WHERE c.linkedid IN (SELECT DISTINCT d.linkedid FROM {self.table} d
                                           WHERE d."end" >= to_timestamp($1) AND d.linkedid <> ''
                                             AND NOT EXISTS (SELECT 1 FROM calls WHERE calls.linkedid = d.linkedid))
                     ORDER BY c.start, c.sequence LIMIT $2""", since, self.max_rows, timeout=self.timeout)
        return self._group(rows)


# ------------------------------------------------------------ the service
class Resyncer:
    """Runs a resync on every login and FullyBooted (one at a time)."""

    def __init__(self, manager: HotlineManager, pipeline: CallPipeline, live: LiveModel | None = None, *,
                 timeout: float = 15.0, clock=time.time, cdr: CdrSource | None = None,
                 cdr_margin_s: float = 300.0, cdr_recheck_s: float = 30.0, cdr_recheck_tries: int = 10,
                 cdr_inline_timeout_s: float = 2.0) -> None:
        """``cdr``: Asterisk's CDR, to recover what happened while the link
        was down (see the module docstring); ``cdr_margin_s``: how far
        before the moment the link was lost CDR rows are looked at (clock
        skew, a dead link noticed late); ``cdr_recheck_s``: the second
        pass for CDR rows written late (0: none); ``cdr_inline_timeout_s``:
        the longest the event stream waits for the CDR of the calls a resync
        closes (their outcome; without it ``unknown``, corrected later)."""
        self.manager = manager
        self.pipeline = pipeline
        self.live = live or LiveModel()
        self.timeout = timeout
        self.clock = clock
        self.cdr = cdr
        self.cdr_margin_s = cdr_margin_s
        self.cdr_recheck_s = cdr_recheck_s
        self.cdr_recheck_tries = cdr_recheck_tries
        self.cdr_inline_timeout_s = cdr_inline_timeout_s
        self._task: asyncio.Task | None = None
        self._rechecks: set[asyncio.Task] = set()
        self.runs = 0
        self.failures = 0
        self.last_plan: ResyncPlan | None = None
        self.last_snapshot: Snapshot | None = None
        self.done = asyncio.Event()
        # the link: when it was last known up before it was lost (None: not lost since the last resync)
        self.lost_at: float | None = None
        self._logged_in = False
        self._losses = 0
        self.recovered = 0  # calls recorded from CDR rows alone
        self.cdr_corrected = 0  # calls closed while away whose outcome came from the CDR
        self.cdr_passes = 0
        self.cdr_failures = 0
        self.last_recovered: tuple[Call, ...] = ()

    def on_link_lost(self, last_up: float | None = None) -> None:
        """The AMI link went down; ``last_up``: when the last bytes came in."""
        if not self._logged_in:
            return  # a reconnect attempt that never logged in: still the same outage
        self._logged_in = False
        self._losses += 1
        t = last_up if last_up is not None else self.clock()
        if self.lost_at is None or t < self.lost_at:
            self.lost_at = t

    # triggers
    def on_login(self, _manager=None) -> None:
        self._logged_in = True
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
            lost, losses = self.lost_at, self._losses

            async def apply() -> None:
                try:
                    plan = await self._apply(snap, reason, lost, losses)
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

    async def _apply(self, snap: Snapshot, reason: str, lost: float | None = None,
                     losses: int | None = None) -> ResyncPlan:
        tracker = self.pipeline.tracker
        now = snap.taken_at
        view = TrackerView.of(tracker)
        plan = reconcile(view, snap, now)
        if self.cdr is not None and plan.closed:
            try:  # the outcome of what ended while we were away: Asterisk's CDR
                rows = await asyncio.wait_for(self.cdr.for_calls(c.linkedid for c in plan.closed),
                                              min(self.cdr.timeout, self.cdr_inline_timeout_s))
                plan = reconcile(view, snap, now, rows)
            except Exception as exc:
                self.cdr_failures += 1
                log.warning("cdr_lookup_failed", calls=len(plan.closed), error=f"{type(exc).__name__}: {exc}")
        self.last_plan = plan
        publish = self.pipeline.publish
        for c in plan.closed:
            call = tracker.close_call(c.linkedid, c.reason, now, c.outcome)
            if call is not None:
                if c.agent or c.answered_at is not None or c.talk_time:
                    call = tracker.adopt(replace(call, agent=c.agent or call.agent,
                                                 answered_at=call.answered_at if call.answered_at is not None
                                                 else c.answered_at, talk_time=call.talk_time + c.talk_time))
                if c.outcome != _closed_outcome(view_call(view, c.linkedid)):
                    self.cdr_corrected += 1
                log.info("call_closed_by_resync", linkedid=c.linkedid, close_reason=c.reason,
                         outcome=call.outcome)
                await publish(CallResynced(now, c.linkedid, "closed", c.reason), call)
        for call in plan.continued:
            await publish(CallResynced(now, call.linkedid, "continued", reason), tracker.adopt(call))
        for call in plan.adopted:
            log.info("call_adopted_by_resync", linkedid=call.linkedid, state=call.state.value, queue=call.queue)
            await publish(CallResynced(now, call.linkedid, "adopted", reason), tracker.adopt(call))
        if lost is not None and losses == self._losses:
            self.lost_at = None  # this outage is dealt with (a newer one keeps its own)
        if self.cdr is not None and lost is not None:  # outside the pipeline: it must not wait on the CDR
            t = asyncio.get_running_loop().create_task(self._after_outage(lost - self.cdr_margin_s),
                                                       name="cdr-recovery")
            self._rechecks.add(t)
            t.add_done_callback(self._rechecks.discard)
        return plan

    async def _after_outage(self, since: float) -> None:
        """A CDR pass right after the resync, another ``cdr_recheck_s`` later
        for rows Asterisk wrote late (batch mode, a slow database); a pass
        that fails is retried every ``cdr_recheck_s``."""
        first = True
        for _ in range(max(1, self.cdr_recheck_tries) + 1):
            if not first:
                if self.cdr_recheck_s <= 0:
                    return
                await asyncio.sleep(self.cdr_recheck_s)
            try:
                await self.cdr_pass(since)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.cdr_failures += 1
                log.warning("cdr_recovery_failed", error=f"{type(exc).__name__}: {exc}")
                first = False
                continue
            if not first or self.cdr_recheck_s <= 0:
                return
            first = False

    async def cdr_pass(self, since: float, timeout: float = 30.0) -> tuple[Call, ...]:
        """Record the calls known only from CDR rows of calls that ended at or
        after ``since``, and take the outcome of calls closed while away
        whose outcome was unknown from their CDR.  The CDR is read here; the
        result is applied in the pipeline's order (the tracker decides what
        is new then).  Idempotent; returns the calls recorded."""
        assert self.cdr is not None
        self.cdr_passes += 1
        rows = await asyncio.wait_for(self.cdr.unrecorded_since(since), self.cdr.timeout)
        unsure = [c.linkedid for c in self.pipeline.tracker.recently_ended() if _unsure(c)]
        found = (await asyncio.wait_for(self.cdr.for_calls(unsure), self.cdr.timeout)) if unsure else {}
        fut: asyncio.Future[tuple[Call, ...]] = asyncio.get_running_loop().create_future()

        async def run() -> None:
            try:
                res = await self._apply_cdr(rows, found, self.clock())
            except Exception as exc:
                if not fut.done():
                    fut.set_exception(exc)
                return
            if not fut.done():
                fut.set_result(res)
        self.pipeline.run_in_order(run)
        return await asyncio.wait_for(fut, timeout)

    async def _apply_cdr(self, rows: Mapping[str, Sequence[CdrRecord]], found: Mapping[str, Sequence[CdrRecord]],
                         now: float) -> tuple[Call, ...]:
        tracker = self.pipeline.tracker
        publish = self.pipeline.publish
        recovered = recover_from_cdr(TrackerView.of(tracker), None, rows)
        for call in recovered:
            tracker.adopt(call)  # ended: among the recently ended, so never twice
            self.recovered += 1
            log.info("call_recovered_from_cdr", linkedid=call.linkedid, outcome=call.outcome, queue=call.queue,
                     agent=call.agent)
            await publish(CallResynced(now, call.linkedid, "recovered", RECOVERED_FROM_CDR), call)
        for lid, recs in found.items():
            c = tracker.get(lid)
            v = cdr_verdict(recs) if recs else None
            if c is None or not _unsure(c) or v is None or not v.outcome:
                continue
            call = tracker.adopt(replace(c, outcome=v.outcome, agent=v.agent or c.agent,
                                         answered_at=v.answered_at if v.outcome == "answered" else None,
                                         talk_time=c.talk_time + v.talk_time))
            self.cdr_corrected += 1
            log.info("call_outcome_from_cdr", linkedid=lid, outcome=call.outcome, agent=call.agent)
            await publish(CallResynced(now, lid, "corrected", "cdr"), call)
        self.last_recovered = recovered
        return recovered

    async def close(self) -> None:
        for t in list(self._rechecks):
            t.cancel()
        await asyncio.gather(*self._rechecks, return_exceptions=True)


def _unsure(call: Call) -> bool:
    """Closed while away with an outcome nobody knew."""
    return call.ended and call.close_reason == ENDED_WHILE_DISCONNECTED and call.outcome in ("unknown", "")


def view_call(view: TrackerView, linkedid: str) -> Call:
    for c in view.active:
        if c.linkedid == linkedid:
            return c
    return Call(linkedid)


def _events(result: ActionResult | None) -> Iterable[Frame]:
    return result.events if result is not None else ()


def install_resync(manager: HotlineManager, pipeline: CallPipeline, live: LiveModel | None = None,
                   **kw) -> Resyncer:
    """Wire resync into a manager (before ``connect()``): on every login and
    FullyBooted; queue/agent live state follows the events in between; a
    lost link is noted (when its last bytes came in) for the CDR recovery."""
    resyncer = Resyncer(manager, pipeline, live, **kw)
    previous = manager.on_disconnect

    def on_disconnect(m, exc) -> None:
        last_up = None
        proto = getattr(m, "protocol", None)
        last_read = getattr(proto, "last_read", None)
        if isinstance(last_read, (int, float)):
            last_up = time.time() - max(0.0, time.monotonic() - last_read)
        try:
            resyncer.on_link_lost(last_up)
        finally:
            if previous is not None:
                previous(m, exc)
    manager.on_disconnect = on_disconnect
    manager.frame_listeners.append(resyncer.live.on_frame)
    manager.login_listeners.append(resyncer.on_login)
    manager.register_event("FullyBooted", resyncer.on_fully_booted)
    return resyncer


__all__ = ["CallResynced", "CdrRecord", "CdrSource", "CdrVerdict", "ClosedCall", "ENDED_WHILE_DISCONNECTED",
           "RECOVERED_FROM_CDR", "ResyncPlan", "Resyncer", "TrackerView", "call_from_cdr", "cdr_verdict",
           "install_resync", "reconcile", "recover_from_cdr"]

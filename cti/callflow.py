"""Call-level outcomes: who called whom, answered or not, transfers, pickups,
queue legs, and why the call ended.  Pure, stdlib only.

:class:`CallFlow` is fed the same domain events as :class:`cti.tracker.CallTracker`
(which keeps the linkedid-keyed queue-call model of the screen-pop).  It sees a
call the way a person does: a *caller* -- a real phone or trunk channel, never
a ``Local/`` half -- rings *targets*, is *connected* to some of them, may be
handed to somebody else by a *transfer*, and ends with a *reason*.

How the Local channels in between are seen through, for AMI 2 and AMI 1 alike:

* every channel remembers who dialled it (``DialBegin``/``Dial Begin``, the
  queue's ``AgentCalled`` in AMI 1 where app_queue sends no Dial) and whom it
  dialled; the two halves ``;1``/``;2`` of a Local channel are partners;
* the real party *behind* a Local channel is found by walking that
  provenance graph from its partner (never back through it), stopping at the
  first real channel on every branch -- so a ring group yields all its phones,
  an Originate's ``;1`` yields the originated phone, and Local channel
  optimisation (AMI 2 ``SwapUniqueid``, AMI 1 ``Masquerade`` + ``Rename``)
  changes nothing: parties are named by their (final) channel names;
* a target *rang* when it reaches state 5 or 6; a caller is *connected* when
  it shares a bridge (AMI 2) or a ``Bridge: Link`` (AMI 1) with a target that
  is up, directly or through Local channels, and both ends are up.

Transfers: a blind transfer is recorded when the transferee's new target
rings (one that never rings -- a target that is down -- is no transfer for
the caller, like upstream cacofonisk); an attended transfer (AMI 2
``DestType: Bridge``, AMI 1 ``Transfer`` of type Attended to an answered
target) connects the transferee to the target at once; a blonde
(semi-attended) one (AMI 2 ``DestType: App``, AMI 1 attended to a target
still ringing) hands the ringing targets of the transferer's second call to
the transferee.  The calls of the transferer (and, when both parties were
callers, of the target) end with reason ``transferred``.

AMI 1 conventions (cacofonisk 0.4, whose labels the AMI 1 fixtures carry;
switched on by ``self.ami1`` once an AMI 1-only shape is seen: a ``Dial``
without Linkedid, ``Bridge`` Link, ``Masquerade``, ``Rename``, ``Transfer``):

* a blind transfer (``Transfer`` of type Blind) is the transferer dialling the
  target, then a cold transfer: the transferer's call (a new one when it was
  the callee) also rings the targets and ends ``transferred``;
* a transferee whose CallerID changed on the way to the blind-transfer target
  goes on as a new call under the new number (0.4 names a call by its
  caller's current CLI);
* a click-to-dial is named by the CLI its Originate's Local channel presents
  to B, not by the A phone's own number; one whose A leg never reached B
  (nobody rang) is no call in :meth:`CallFlow.records`; A hanging up while B
  rings is ``no-answer`` (A is up by design);
* when the A leg of a click-to-dial transfers B away (attended), the call
  stays the Originate's: same record and caller, carried on by B's channel.

Reasons: ``completed`` (the caller was up and hung up normally),
``cancelled`` (hung up before anybody answered), ``busy`` (cause 17, or a
busy dial), ``no-answer`` (cause 18/19/21 after the dial failed),
``transferred`` (handed over).
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from .events import (
    AgentCalled,
    AgentCompleted,
    AgentConnected,
    AttendedTransferred,
    BlindTransferred,
    CallerAbandoned,
    CallerIdChanged,
    CallerJoinedQueue,
    CallerLeftQueue,
    CallPickedUp,
    CallTransferred,
    ChannelCreated,
    ChannelEnteredBridge,
    ChannelHungUp,
    ChannelLeftBridge,
    ChannelRenamed,
    ChannelsLinked,
    ChannelsMasqueraded,
    ChannelSnapshot,
    ChannelStateChanged,
    ChannelsUnlinked,
    DialEnded,
    DialStarted,
    LocalChannelsBridged,
    OriginateResponded,
)

__all__ = ["Party", "Transfer", "QueueLeg", "CallRecord", "CallFlow", "party_account"]

UP = 6
RINGING = 5

# Q.850 causes
CAUSE_NORMAL = 16
CAUSE_BUSY = 17
CAUSE_NO_RESPONSE = 18
CAUSE_NO_ANSWER = 19
CAUSE_REJECTED = 21


def _clean(name: str) -> str:
    """``SIP/x-1<MASQ>`` / ``...<ZOMBIE>`` / ``AsyncGoto/SIP/x-1<ZOMBIE>``
    (AMI 1 masquerades) -> ``SIP/x-1``."""
    i = name.find("<")
    if i >= 0:
        name = name[:i]
    if name.startswith("AsyncGoto/"):
        name = name[10:]
    return name


def party_account(channel: str) -> str:
    """The SIP/PJSIP peer of a phone account (``SIP/150010001-0000000b`` ->
    ``150010001``) when it is numeric; "" for trunks and anything else."""
    if "/" not in channel:
        return ""
    peer = channel.split("/", 1)[1].rsplit("-", 1)[0]
    return peer if peer.isdigit() else ""


@dataclass(frozen=True, slots=True)
class Party:
    channel: str
    uniqueid: str = ""
    num: str = ""
    name: str = ""

    @property
    def account(self) -> str:
        return party_account(self.channel)

    @property
    def ident(self) -> str:
        """Account code for a phone account, else the number."""
        return self.account or self.num


@dataclass(frozen=True, slots=True)
class Transfer:
    kind: str  # blind | attended | blonde
    transferer: Party
    caller: Party  # the party that keeps the call (transferee)
    targets: tuple[Party, ...]
    at: float = 0.0
    to: str = ""  # where a blind transfer sent the caller, when not a phone (a queue)


@dataclass(frozen=True, slots=True)
class QueueLeg:
    queue: str
    joined_at: float | None = None
    outcome: str = ""  # answered | abandoned | left (timeout / exit)
    agent: str = ""
    complete_reason: str = ""  # caller | agent | transfer


@dataclass(frozen=True, slots=True)
class CallRecord:
    caller: Party
    rang: tuple[Party, ...] = ()
    connected: tuple[Party, ...] = ()
    picked_up_by: tuple[Party, ...] = ()
    transfers: tuple[Transfer, ...] = ()
    queue_legs: tuple[QueueLeg, ...] = ()
    originated: bool = False
    reason: str = ""  # "" while the call is live
    hangup_cause: int | None = None
    started_at: float = 0.0
    ended_at: float | None = None

    @property
    def answered(self) -> bool:
        return bool(self.connected)

    @property
    def ended(self) -> bool:
        return bool(self.reason)


class _Chan:
    __slots__ = ("uid", "name", "num", "cname", "state", "seq", "dialer", "dialed",
                 "origin_root", "alive", "cause", "bridge", "links", "dial_status",
                 "ever_up", "endpoint")

    def __init__(self, uid: str, name: str, seq: int) -> None:
        self.uid = uid
        self.name = name
        self.num = ""
        self.cname = ""
        self.state = 0
        self.seq = seq
        self.dialer = ""  # uid of the channel that dialled this one
        self.dialed: list[str] = []
        self.origin_root = False  # dialled by an AMI Originate (no caller)
        self.alive = True
        self.cause: int | None = None
        self.bridge = ""
        self.links: set[str] = set()  # AMI 1 Bridge Link peers
        self.dial_status = ""  # last DialEnd status of a dial made by this channel
        self.ever_up = False
        self.endpoint = False  # a Local half that is a party (a queue caller)

    @property
    def local(self) -> bool:
        return self.name.startswith("Local/")

    @property
    def real(self) -> bool:
        n = self.name
        return bool(n) and "<" not in n and (self.endpoint or not n.startswith("Local/"))


class _Rec:
    """Mutable call record of one caller channel."""

    __slots__ = ("uid", "party", "rang", "connected", "picked", "transfers", "legs",
                 "originated", "reason", "cause", "started_at", "ended_at", "open_transfer",
                 "seen_ring", "ring_since_connect", "deferred", "echo")

    def __init__(self, uid: str, party: Party, at: float, originated: bool = False) -> None:
        self.uid = uid
        self.party = party
        self.rang: list[Party] = []
        self.connected: list[Party] = []
        self.picked: list[Party] = []
        self.transfers: list[Transfer] = []
        self.legs: list[QueueLeg] = []
        self.originated = originated
        self.reason = ""
        self.cause: int | None = None
        self.started_at = at
        self.ended_at: float | None = None
        self.open_transfer: int | None = None  # index in transfers still collecting targets
        self.seen_ring = False
        self.ring_since_connect = False  # a new attempt rang since the last connect
        self.deferred = ""  # reason kept back while a blind transfer of ours is pending
        self.echo = ""  # AMI 1 blind transfer: transferer uid whose record also rings our targets

    def freeze(self) -> CallRecord:
        return CallRecord(self.party, tuple(self.rang), tuple(self.connected),
                          tuple(self.picked), tuple(self.transfers), tuple(self.legs),
                          self.originated, self.reason, self.cause, self.started_at,
                          self.ended_at)


def _add(lst: list[Party], p: Party) -> bool:
    for q in lst:
        if q.channel == p.channel:
            return False
    lst.append(p)
    return True


class CallFlow:
    """Call records keyed by caller channel.  Not thread-safe.

    :meth:`apply` takes any domain event (others are ignored) and returns the
    :class:`CallRecord` it changed, or ``None``.  :meth:`records` lists every
    call, live and recently ended, in the order they started.  Memory is
    bounded by ``max_channels`` (oldest dead channels are dropped first) and
    ``max_records``.
    """

    def __init__(self, max_channels: int = 50_000, max_records: int = 50_000, *,
                 max_ended_records: int | None = None, max_dead_channels: int | None = None) -> None:
        self.max_channels = max_channels
        self.max_records = max_records
        # History: ended calls and hung-up channels are kept (records(), late
        # events of a call that just ended) up to these bounds -- None: up to
        # max_records / max_channels.  Trimmed every tenth of the smaller
        # bound's worth of hang-ups, oldest first; live ones are never trimmed.
        self.max_ended_records = max_ended_records
        self.max_dead_channels = max_dead_channels
        bounds = [b for b in (max_ended_records, max_dead_channels) if b is not None]
        self._trim_every = max(1, min(bounds) // 10) if bounds else 0
        self._hangups = 0
        # the history in the order it ended (key -> record, uid -> channel), so
        # that a trim takes the oldest without walking the live calls; an
        # entry whose key now holds something else (evicted, re-keyed) is
        # skipped when its turn comes
        self._ended: OrderedDict[str, _Rec] = OrderedDict()
        self._dead: OrderedDict[str, _Chan] = OrderedDict()
        self._chans: OrderedDict[str, _Chan] = OrderedDict()
        self._by_name: dict[str, str] = {}  # current channel name -> uid
        self._bridges: dict[str, set[str]] = {}
        # every channel that was ever in a bridge, in order; kept a while after
        # BridgeDestroy (AttendedTransfer of older Asterisk names only bridges)
        self._bridge_seen: OrderedDict[str, list[str]] = OrderedDict()
        self._recs: OrderedDict[str, _Rec] = OrderedDict()  # caller uid -> record
        # transferee channel name -> (transferer uid, at, AMI 1 Transfer?): names,
        # because an AMI 1 blind transfer (AsyncGoto) moves the transferee to a
        # new uniqueid
        self._pending_blind: dict[str, tuple[str, float, bool]] = {}
        # AMI 1 seen (Dial SubEvent, Bridge Link, Masquerade, Rename, Transfer):
        # switches on the cacofonisk 0.4 conventions, see :meth:`records`
        self.ami1 = False
        self._split = 0
        self._originates: list[OriginateResponded] = []
        self._seq = 0
        self._touched: _Rec | None = None
        self._handlers = {
            ChannelCreated: self._on_created,
            ChannelStateChanged: self._on_state,
            CallerIdChanged: self._on_callerid,
            DialStarted: self._on_dial_begin,
            DialEnded: self._on_dial_end,
            ChannelEnteredBridge: self._on_bridge_enter,
            ChannelLeftBridge: self._on_bridge_leave,
            ChannelsLinked: self._on_link,
            ChannelsUnlinked: self._on_unlink,
            LocalChannelsBridged: self._on_local_bridge,
            ChannelRenamed: self._on_rename,
            ChannelsMasqueraded: self._on_masquerade,
            BlindTransferred: self._on_blind,
            AttendedTransferred: self._on_attended,
            CallTransferred: self._on_legacy_transfer,
            CallPickedUp: self._on_pickup,
            AgentCalled: self._on_agent_called,
            AgentConnected: self._on_agent_connected,
            AgentCompleted: self._on_agent_completed,
            CallerJoinedQueue: self._on_queue_join,
            CallerLeftQueue: self._on_queue_leave,
            CallerAbandoned: self._on_queue_abandon,
            ChannelHungUp: self._on_hangup,
            OriginateResponded: self._on_originate_response,
        }
        self.feed = self._make_feed(self._handlers)  # most AMI traffic: one dict miss

    # --- queries ------------------------------------------------------------
    def records(self) -> list[CallRecord]:
        """Every call, in the order they started.  With AMI 1 the cacofonisk
        0.4 convention holds: a click-to-dial whose A leg never reached B
        (nobody rang, nobody answered) is no call -- its Originate is still
        in :meth:`originate_responses`, and :meth:`record` still finds it."""
        if self.ami1:
            return [r.freeze() for r in self._recs.values()
                    if not (r.originated and not r.rang and not r.connected)]
        return [r.freeze() for r in self._recs.values()]

    def record(self, caller_channel_or_uid: str) -> CallRecord | None:
        rec = self._recs.get(caller_channel_or_uid)
        if rec is None:
            for r in self._recs.values():
                if r.party.channel == caller_channel_or_uid:
                    rec = r
        return rec.freeze() if rec is not None else None

    def transfers(self) -> list[Transfer]:
        out: list[Transfer] = []
        for r in self._recs.values():
            out.extend(r.transfers)
        return sorted(out, key=lambda t: t.at)

    def originate_responses(self) -> list[OriginateResponded]:
        return list(self._originates)

    # --- entry points ---------------------------------------------------------
    def apply(self, event) -> CallRecord | None:
        handler = self._handlers.get(event.__class__)
        if handler is None:
            return None
        self._touched = None
        handler(event)
        rec = self._touched
        return rec.freeze() if rec is not None else None

    def feed(self, event) -> None:
        """:meth:`apply` without building the snapshot (the pipeline's path;
        replaced per instance by a closure, see ``__init__``)."""
        handler = self._handlers.get(event.__class__)
        if handler is not None:
            handler(event)

    @staticmethod
    def _make_feed(handlers):
        get = handlers.get

        def feed(event) -> None:
            handler = get(event.__class__)
            if handler is not None:
                handler(event)
        feed.__doc__ = CallFlow.feed.__doc__
        return feed

    # --- channel table --------------------------------------------------------
    def _chan(self, snap: ChannelSnapshot | None, create: bool = True) -> _Chan | None:
        if snap is None:
            return None
        uid = snap.uniqueid
        c = self._chans.get(uid) if uid else None
        if c is not None and c.name == snap.channel:  # the usual case
            if snap.caller_num:
                c.num = snap.caller_num
            if snap.caller_name:
                c.cname = snap.caller_name
            st = snap.state
            if st and st != c.state:
                self._set_state(c, st)
            return c
        if c is None and snap.channel:
            u = self._by_name.get(snap.channel)
            if u is not None:
                c = self._chans.get(u)
                if c is not None and uid and c.uid != uid:
                    c = None
        if c is None:
            if not create or not (uid or snap.channel):
                return None
            c = self._new_chan(uid or ("name:" + snap.channel), snap.channel)
        if snap.channel and c.name != snap.channel and not c.name:
            c.name = snap.channel
            self._by_name[snap.channel] = c.uid
        if snap.caller_num:
            c.num = snap.caller_num
        if snap.caller_name:
            c.cname = snap.caller_name
        if snap.state:
            self._set_state(c, snap.state)
        return c

    def _new_chan(self, uid: str, name: str) -> _Chan:
        self._seq += 1
        c = _Chan(uid, name, self._seq)
        self._chans[uid] = c
        if name:
            self._by_name[name] = uid
        if len(self._chans) > self.max_channels:
            self._evict()
        return c

    def _evict(self) -> None:
        for uid, c in list(self._chans.items()):
            if not c.alive:
                del self._chans[uid]
                if self._by_name.get(c.name) == uid:
                    del self._by_name[c.name]
                if len(self._chans) <= self.max_channels:
                    return
        uid, c = self._chans.popitem(last=False)
        if self._by_name.get(c.name) == uid:
            del self._by_name[c.name]

    def _by(self, name: str) -> _Chan | None:
        uid = self._by_name.get(name)
        return self._chans.get(uid) if uid is not None else None

    def _partner(self, c: _Chan) -> _Chan | None:
        n = c.name
        if not n.startswith("Local/") or len(n) < 2 or n[-2] != ";":
            return None
        other = n[:-1] + ("2" if n[-1] == "1" else "1")
        return self._by(other)

    def _party(self, c: _Chan) -> Party:
        return Party(_clean(c.name), c.uid, c.num, c.cname)

    def _set_state(self, c: _Chan, state: int) -> None:
        old = c.state
        c.state = state
        if state == UP:
            c.ever_up = True
        if state >= RINGING > old and c.real:
            self._rang(c)

    # --- the provenance graph -------------------------------------------------
    def _ends(self, start: _Chan, exclude: set[str]) -> list[_Chan]:
        """Real channels reachable from ``start`` over partner/dialer/dialed
        edges through Local channels, not passing ``exclude``."""
        out: list[_Chan] = []
        seen = set(exclude)
        todo = [start]
        chans = self._chans
        while todo:
            c = todo.pop(0)
            if c.uid in seen:
                continue
            seen.add(c.uid)
            if c.real:
                out.append(c)
                continue
            if not c.local:
                continue
            p = self._partner(c)
            if p is not None:
                todo.append(p)
            if c.dialer:
                d = chans.get(c.dialer)
                if d is not None:
                    todo.append(d)
            for u in c.dialed:
                d = chans.get(u)
                if d is not None:
                    todo.append(d)
        return out

    def _far(self, c: _Chan) -> list[_Chan]:
        """The real channel(s) on the other side of ``c``: ``c`` itself if it
        is real, else whatever lies behind its Local partner."""
        if c.real:
            return [c]
        p = self._partner(c)
        if p is None:
            return []
        return self._ends(p, {c.uid})

    def _caller_of(self, c: _Chan) -> _Chan | None:
        """The real caller on whose behalf channel ``c`` dials."""
        if c.real:
            return c
        for e in self._far(c):
            if e.uid in self._recs or not e.dialer:
                return e
        far = self._far(c)
        return far[0] if far else None

    def _originated_root(self, c: _Chan) -> bool:
        """Is the dialling channel ``c`` (a Local half) part of a chain that an
        AMI Originate started (no real caller upstream)?"""
        seen: set[str] = set()
        cur: _Chan | None = c
        while cur is not None and cur.uid not in seen:
            seen.add(cur.uid)
            if cur.real:
                return False
            if cur.origin_root:
                return True
            p = self._partner(cur)
            nxt = None
            for x in (cur, p):
                if x is not None and x.dialer:
                    nxt = self._chans.get(x.dialer)
                    break
                if x is not None and x.origin_root:
                    return True
            if nxt is None:
                # a Local ;1 nobody dialled: Originate (AMI 1 sends no Dial)
                return True
            cur = nxt
        return False

    # --- records ----------------------------------------------------------------
    def _rec(self, c: _Chan, at: float, originated: bool = False) -> _Rec:
        rec = self._recs.get(c.uid)
        if rec is None:
            rec = _Rec(c.uid, self._party(c), at, originated)
            self._recs[c.uid] = rec
            if len(self._recs) > self.max_records:
                self._evict_records()
        elif originated:
            rec.originated = True
        self._touched = rec
        return rec

    def _evict_records(self) -> None:
        """Over ``max_records``: drop the oldest finished records, a tenth of
        the capacity at once (one scan per many new calls, not one per call:
        with thousands of calls live, a scan per call was quadratic); only if
        that is not enough, the oldest records at all."""
        target = self.max_records - max(1, self.max_records // 10)
        excess = len(self._recs) - target
        finished = [uid for uid, r in self._recs.items() if r.reason][:excess]
        for uid in finished:
            del self._recs[uid]
        while len(self._recs) > self.max_records:
            self._recs.popitem(last=False)

    def _trim_history(self) -> None:
        """Drop the oldest ended records and hung-up channels beyond
        ``max_ended_records`` / ``max_dead_channels``, once per
        ``_trim_every`` hang-ups, so that a long day's history neither grows
        the memory nor the garbage collector's full passes.  O(trimmed):
        the live calls (10 000 waiting in a storm) are not walked."""
        keep = self.max_ended_records
        if keep is not None:
            ended, recs = self._ended, self._recs
            while len(ended) > keep:
                k, rec = ended.popitem(last=False)
                if recs.get(k) is rec and rec.reason:
                    del recs[k]
        keep = self.max_dead_channels
        if keep is not None:
            dead, chans = self._dead, self._chans
            while len(dead) > keep:
                uid, c = dead.popitem(last=False)
                if chans.get(uid) is c:
                    del chans[uid]
                    if self._by_name.get(c.name) == uid:
                        del self._by_name[c.name]

    def _ended_now(self, key: str, rec: _Rec) -> None:
        if self._trim_every:
            self._ended[key] = rec

    def _live_rec(self, c: _Chan) -> _Rec | None:
        rec = self._recs.get(c.uid)
        if rec is not None and not rec.reason:
            return rec
        return None

    def _rang(self, target: _Chan) -> None:
        """A real channel rings (or is up): credit the caller that dialled it."""
        if not target.dialer:
            return
        dialer = self._chans.get(target.dialer)
        if dialer is None:
            return
        caller = self._caller_of(dialer)
        if caller is None or caller.uid == target.uid:
            return
        trec = self._recs.get(target.uid)
        if trec is not None and trec.originated:
            return  # the phone an Originate rang first is the caller
        rec = self._live_rec(caller)
        if rec is None:
            rec = self._rec(caller, 0.0)
        p = self._party(target)
        if _add(rec.rang, p):
            self._touched = rec
        rec.seen_ring = True
        rec.ring_since_connect = True
        pend = self._pending_blind.pop(_clean(caller.name), None)
        if pend is not None:
            tr_uid, at, legacy = pend
            tr = self._chans.get(tr_uid)
            if legacy:
                rec = self._legacy_blind_rec(caller, rec, p, at)
            tparty = self._party(tr) if tr is not None else Party(tr_uid)
            rec.transfers.append(Transfer("blind", tparty, rec.party, (p,), at))
            rec.open_transfer = len(rec.transfers) - 1
            if tr is not None:
                if legacy:
                    # cacofonisk 0.4: the transferer dials the target, then
                    # hands the call over (a cold transfer)
                    trec = self._recs.get(tr.uid) or self._rec(tr, at)
                    _add(trec.rang, p)
                    rec.echo = tr.uid
                self._hand_over(tr, at)
        elif rec.open_transfer is not None:
            t = rec.transfers[rec.open_transfer]
            if all(q.channel != p.channel for q in t.targets):
                rec.transfers[rec.open_transfer] = Transfer(t.kind, t.transferer, t.caller,
                                                            t.targets + (p,), t.at)
            if rec.echo:
                trec = self._recs.get(rec.echo)
                if trec is not None:
                    _add(trec.rang, p)

    def _legacy_blind_rec(self, caller: _Chan, rec: _Rec, target: Party, at: float) -> _Rec:
        """AMI 1 (cacofonisk 0.4) names a call by its caller's current CLI: a
        transferee whose CallerID changed on the way to the blind-transfer
        target (``NewCallerid`` after the AsyncGoto) starts a new call under
        the new number; its call so far was handed over.  Same number: the
        same call goes on."""
        if not caller.num or caller.num == rec.party.num or rec.party.channel != _clean(caller.name):
            return rec
        rec.rang = [q for q in rec.rang if q.channel != target.channel]
        self._split += 1
        if self._recs.get(caller.uid) is rec:
            del self._recs[caller.uid]
        self._recs[f"{caller.uid}~{self._split}"] = rec
        rec.reason = rec.reason or "transferred"
        rec.ended_at = rec.ended_at or at
        self._ended_now(f"{caller.uid}~{self._split}", rec)
        new = self._rec(caller, at)
        _add(new.rang, target)
        new.seen_ring = new.ring_since_connect = True
        return new

    def _hand_over(self, c: _Chan, at: float, drop: tuple[Party, ...] = ()) -> None:
        rec = self._recs.get(c.uid)
        if rec is not None and (not rec.reason or rec.deferred):
            rec.reason = "transferred"
            rec.deferred = ""
            rec.ended_at = rec.ended_at or at
            self._ended_now(c.uid, rec)
            rec.open_transfer = None
            if drop:
                names = {p.channel for p in drop}
                rec.connected = [p for p in rec.connected if p.channel not in names
                                 or p is rec.connected[0]]
            self._touched = self._touched or rec

    def _connect(self, a: _Chan, b: _Chan, at: float) -> None:
        """Channels ``a`` and ``b`` now talk (bridge / link): connect the
        callers on one side to the up targets on the other."""
        left, right = self._far(a), self._far(b)
        for side, other in ((left, right), (right, left)):
            for c in side:
                rec = self._live_rec(c)
                if rec is None or c.state != UP:
                    continue
                for t in other:
                    if t.uid == c.uid or t.state != UP or not t.alive:
                        continue
                    if _add(rec.connected, self._party(t)):
                        self._touched = rec
                    rec.open_transfer = None
                    rec.ring_since_connect = False

    # --- handlers ---------------------------------------------------------------
    def _on_created(self, ev) -> None:
        snap = ev.chan
        c = self._chans.get(snap.uniqueid)
        if c is None:
            c = self._new_chan(snap.uniqueid, snap.channel)
        self._chan(snap)

    def _on_state(self, ev) -> None:
        self._chan(ev.chan)

    def _on_callerid(self, ev) -> None:
        c = self._chan(ev.chan)
        rec = self._live_rec(c) if c is not None else None
        if rec is not None and not rec.seen_ring and not c.ever_up and ev.chan.caller_num:
            # the number is settled once the caller rings somebody or is up
            # (AMI 1 masquerades hand a caller the CallerID of a Local half)
            rec.party = self._party(c)

    def _on_dial_begin(self, ev) -> None:
        dest = self._chan(ev.dest)
        if dest is None:
            return
        if not ev.chan.uniqueid and not ev.chan.channel:
            dest.origin_root = True  # AMI Originate: only the Dest side
            if dest.real:
                self._rec(dest, ev.received_at, originated=True)
            return
        dialer = self._chan(ev.chan)
        if dialer is None:
            return
        dest.dialer = dialer.uid
        if dest.uid not in dialer.dialed:
            dialer.dialed.append(dest.uid)
        if ev.dest.linkedid == ev.dest.uniqueid:
            # AMI 1 has no Linkedid (each channel is its own); AMI 2 gives a
            # dialled channel the linkedid of the call that dials it
            self.ami1 = True
        if self.ami1 and not dialer.real and ev.chan.caller_num:
            self._legacy_ctd_cli(dialer, dest, ev.chan.caller_num)
        if (dialer.real and self._live_rec(dialer) is None and not dialer.dialer
                and _clean(dialer.name) not in self._pending_blind):
            # (a blind transferee's new call starts when its target rings)
            self._rec(dialer, ev.received_at)
        if dest.real:
            if not dialer.real and self._originated_root(dialer):
                caller = self._caller_of(dialer)
                if caller is None or caller.uid == dest.uid or caller.uid not in self._recs:
                    self._rec(dest, ev.received_at, originated=True)
                    return
            if dest.state == UP and not dest.dialed:
                # dialled while already up: a pickup (AMI 2 sends no Pickup
                # event through every filter) -- it answers, it never rang
                self._picked(dest)
            elif dest.state >= RINGING:
                self._rang(dest)

    def _legacy_ctd_cli(self, dialer: _Chan, dest: _Chan, cli: str) -> None:
        """AMI 1 (cacofonisk 0.4): a click-to-dial call is named by the CLI
        its A leg presents to B -- the CallerID of the Originate's Local
        channel when it dials B -- not by the A phone's own number."""
        caller = self._caller_of(dialer)
        if caller is None or caller.uid == dest.uid:
            return
        rec = self._live_rec(caller)
        if rec is not None and rec.originated and not rec.seen_ring and rec.party.num != cli:
            p = rec.party
            rec.party = Party(p.channel, p.uniqueid, cli, p.name)

    def _on_dial_end(self, ev) -> None:
        dialer = self._chan(ev.chan, create=False)
        status = ev.dial_status
        if dialer is not None:
            dialer.dial_status = status
            caller = self._caller_of(dialer)
            if caller is not None and caller.uid != dialer.uid:
                rec = self._live_rec(caller)
                if rec is not None and status:
                    caller.dial_status = caller.dial_status or status
        dest = self._chan(ev.dest, create=False) if ev.dest is not None else None
        if dest is not None and ev.dest.state:
            self._set_state(dest, ev.dest.state)

    def _on_bridge_enter(self, ev) -> None:
        c = self._chan(ev.chan)
        if c is None:
            return
        members = self._bridges.setdefault(ev.bridge_id, set())
        if ev.swap_uniqueid:
            members.discard(ev.swap_uniqueid)
        members.add(c.uid)
        c.bridge = ev.bridge_id
        seen = self._bridge_seen.get(ev.bridge_id)
        if seen is None:
            seen = self._bridge_seen[ev.bridge_id] = []
            if len(self._bridge_seen) > self.max_records:
                self._bridge_seen.popitem(last=False)
        if c.uid not in seen:
            seen.append(c.uid)
        for u in list(members):
            if u != c.uid:
                o = self._chans.get(u)
                if o is not None:
                    self._connect(c, o, ev.received_at)

    def _on_bridge_leave(self, ev) -> None:
        c = self._chan(ev.chan, create=False)
        members = self._bridges.get(ev.bridge_id)
        if members is not None and c is not None:
            members.discard(c.uid)
            if not members:
                del self._bridges[ev.bridge_id]

    def _on_link(self, ev) -> None:
        self.ami1 = True
        a, b = self._chan(ev.chan1), self._chan(ev.chan2)
        if a is None or b is None:
            return
        a.links.add(b.uid)
        b.links.add(a.uid)
        self._connect(a, b, ev.received_at)

    def _on_unlink(self, ev) -> None:
        a, b = self._chan(ev.chan1, create=False), self._chan(ev.chan2, create=False)
        if a is not None and b is not None:
            a.links.discard(b.uid)
            b.links.discard(a.uid)

    def _on_local_bridge(self, ev) -> None:
        self._chan(ev.one)
        self._chan(ev.two)

    def _on_rename(self, ev) -> None:
        self.ami1 = True
        c = self._chans.get(ev.chan.uniqueid) or self._by(ev.chan.channel)
        if c is None or not ev.new_name:
            return
        if self._by_name.get(c.name) == c.uid:
            del self._by_name[c.name]
        c.name = ev.new_name
        self._by_name[ev.new_name] = c.uid
        mine = self._recs.get(c.uid)
        if "<" not in ev.new_name and (mine is None or mine.reason):
            # AMI 1 masquerade: this channel took over the identity (and the
            # call) of a caller whose old channel is now a <ZOMBIE>
            for uid, rec in list(self._recs.items()):
                if rec.party.channel == ev.new_name and not rec.reason and uid != c.uid:
                    if mine is not None:  # keep our own finished call
                        del self._recs[c.uid]
                        self._recs[f"{c.uid}~{c.seq}"] = mine
                        self._ended_now(f"{c.uid}~{c.seq}", mine)
                    del self._recs[uid]
                    rec.uid = c.uid
                    rec.party = Party(rec.party.channel, c.uid, rec.party.num, rec.party.name)
                    self._recs[c.uid] = rec
                    old = self._chans.get(uid)
                    if old is not None:
                        c.ever_up = c.ever_up or old.ever_up
                        c.state = max(c.state, old.state)
                    break

    def _on_masquerade(self, ev) -> None:
        """AMI 1: the clone's line takes over the original channel (pickup,
        Local optimisation, transfers); the original gets the clone's state
        (no Newstate follows), the renames follow."""
        self.ami1 = True
        orig = self._by(ev.original)
        if orig is not None and ev.clone_state == "Up" and orig.state != UP:
            orig.state = UP
            orig.ever_up = True
            clone = self._by(ev.clone)
            if clone is not None and clone.real and not clone.dialer and orig.real and orig.dialer:
                # a phone that was not called took a ringing call: a pickup
                orig_dialer = self._chans.get(orig.dialer)
                caller = self._caller_of(orig_dialer) if orig_dialer is not None else None
                rec = self._live_rec(caller) if caller is not None else None
                if rec is not None:
                    _add(rec.picked, self._party(clone))
                    self._touched = rec

    def _on_blind(self, ev) -> None:
        if ev.result and ev.result != "Success":
            return
        tr, te = self._chan(ev.transferer), self._chan(ev.transferee)
        if tr is None or te is None:
            return
        for x in self._far(te):
            self._pending_blind[_clean(x.name)] = (tr.uid, ev.received_at, False)

    def _other_in_bridge(self, bridge_id: str, *not_uids: str) -> _Chan | None:
        """The other party of a bridge -- a real channel if there is one."""
        found = None
        for u in self._bridge_seen.get(bridge_id, ()):
            if u in not_uids:
                continue
            c = self._chans.get(u)
            if c is None:
                continue
            if c.real:
                return c
            found = found or c
        return found

    def _on_attended(self, ev) -> None:
        if ev.result and ev.result != "Success":
            return
        orig, second = self._chan(ev.orig_transferer), self._chan(ev.second_transferer)
        if orig is None or second is None:
            return
        transferee = self._chan(ev.transferee) if ev.transferee is not None else \
            self._other_in_bridge(ev.orig_bridge_id, orig.uid)
        if transferee is None:
            return
        newer = second if second.seq >= orig.seq else orig
        caller = self._far(transferee)
        if not caller:
            return
        callee = caller[0]
        at = ev.received_at
        if ev.dest_type == "App" or (ev.target is None and not ev.second_bridge_id):
            # blonde: the second call is still ringing its targets
            srec = self._recs.get(second.uid)
            targets = tuple(srec.rang) if srec is not None else ()
            self._blonde(orig, second, newer, callee, targets, at)
            return
        target = self._chan(ev.target) if ev.target is not None else \
            self._other_in_bridge(ev.second_bridge_id, second.uid, orig.uid, transferee.uid)
        if target is None:
            return
        tgt = self._far(target)
        self._attended(orig, second, newer, callee, tgt, at)

    def _attended(self, orig, second, newer, callee, targets, at, rec=None) -> None:
        rec = rec or self._live_rec(callee) or self._rec(callee, at)
        tparties = tuple(self._party(t) for t in targets)
        rec.transfers.append(Transfer("attended", self._party(newer), rec.party, tparties, at))
        for p in tparties:
            _add(rec.connected, p)
        self._touched = rec
        for x in (orig, second, *targets):
            if x.uid != callee.uid:
                self._hand_over(x, at, (rec.party, *tparties))

    def _blonde(self, orig, second, newer, callee, targets, at) -> None:
        rec = self._live_rec(callee) or self._rec(callee, at)
        for p in targets:
            _add(rec.rang, p)
        rec.transfers.append(Transfer("blonde", self._party(newer), rec.party, tuple(targets), at))
        rec.open_transfer = len(rec.transfers) - 1
        rec.ring_since_connect = True
        self._touched = rec
        # the targets now ring for the transferee
        for t in targets:
            tc = self._chans.get(t.uniqueid)
            if tc is not None:
                tc.dialer = ""
                self._adopt(tc, callee)
        for x in (orig, second):
            if x.uid != callee.uid:
                self._hand_over(x, at)

    def _adopt(self, target: _Chan, caller: _Chan) -> None:
        """After a blonde transfer the ringing target belongs to ``caller``."""
        target.dialer = caller.uid
        if target.uid not in caller.dialed:
            caller.dialed.append(target.uid)

    def _on_legacy_transfer(self, ev) -> None:
        """AMI 1 ``Transfer``."""
        self.ami1 = True
        tr = self._chan(ev.chan)
        if tr is None:
            return
        if ev.transfer_type == "Blind":
            name = _clean(ev.target_channel)
            te = self._chans.get(ev.target_uniqueid) or self._by(ev.target_channel)
            if te is not None and not te.real and "<" not in te.name:
                for x in self._far(te):
                    self._pending_blind[_clean(x.name)] = (tr.uid, ev.received_at, True)
            elif name:
                self._pending_blind[name] = (tr.uid, ev.received_at, True)
            return
        second = self._chans.get(ev.target_uniqueid) or self._by(ev.target_channel)
        if second is None:
            return
        # the transferee talks to the first transferer channel, the target to
        # the second one
        transferee = next((self._chans[u] for u in tr.links if u in self._chans), None)
        target = next((self._chans[u] for u in second.links if u in self._chans), None)
        if transferee is None:
            return
        callee = (self._far(transferee) or [transferee])[0]
        newer = second if second.seq >= tr.seq else tr
        if target is not None and any(t.state == UP for t in self._far(target)):
            self._attended(tr, second, newer, callee,
                           [t for t in self._far(target) if t.state == UP], ev.received_at,
                           self._legacy_ctd_keep(tr, callee))
            return
        srec = self._recs.get(second.uid)
        targets = tuple(srec.rang) if srec is not None else ()
        self._blonde(tr, second, newer, callee, targets, ev.received_at)

    def _legacy_ctd_keep(self, tr: _Chan, callee: _Chan) -> _Rec | None:
        """AMI 1 (cacofonisk 0.4): when the A leg of a click-to-dial transfers
        its B away (attended), the call stays the Originate's -- the same
        record and caller (the CLI shown to B), now carried by B's channel --
        rather than a new call of B's."""
        rec = self._live_rec(tr)
        if (rec is None or not rec.originated or self._live_rec(callee) is not None
                or all(p.channel != _clean(callee.name) for p in rec.connected)):
            return None
        del self._recs[tr.uid]
        rec.uid = callee.uid
        self._recs[callee.uid] = rec
        return rec

    def _picked(self, picker: _Chan) -> None:
        dialer = self._chans.get(picker.dialer)
        caller = self._caller_of(dialer) if dialer is not None else None
        rec = self._live_rec(caller) if caller is not None else None
        if rec is not None:
            _add(rec.picked, self._party(picker))
            self._touched = rec

    def _on_pickup(self, ev) -> None:
        picker = self._chan(ev.chan)
        target = self._chan(ev.target) if ev.target is not None else None
        if picker is None or target is None:
            return
        if target.dialer:
            dialer = self._chans.get(target.dialer)
            caller = self._caller_of(dialer) if dialer is not None else None
            rec = self._live_rec(caller) if caller is not None else None
            if rec is not None:
                _add(rec.picked, self._party(picker))
                self._touched = rec

    # queue legs (Asterisk 22 names; AMI 1 AgentCalled also stands in for Dial)
    def _queue_rec(self, snap, at) -> _Rec | None:
        c = self._chan(snap)
        if c is None:
            return None
        # whoever waits in a queue is a party, even a Local half (all the
        # parties of the Asterisk 22 captures are Local channels)
        c.endpoint = True
        return self._live_rec(c) or self._rec(c, at)

    def _leg(self, rec: _Rec, queue: str) -> int | None:
        for i in range(len(rec.legs) - 1, -1, -1):
            if rec.legs[i].queue == queue:
                return i
        return None

    def _set_leg(self, rec: _Rec, queue: str, at: float, **changes) -> None:
        i = self._leg(rec, queue)
        if i is None:  # joined before we were listening
            rec.legs.append(QueueLeg(queue, at))
            i = len(rec.legs) - 1
        leg = rec.legs[i]
        rec.legs[i] = QueueLeg(leg.queue, leg.joined_at,
                               changes.get("outcome", leg.outcome),
                               changes.get("agent", leg.agent),
                               changes.get("complete_reason", leg.complete_reason))
        self._touched = rec

    def _on_queue_join(self, ev) -> None:
        rec = self._queue_rec(ev.chan, ev.received_at)
        if rec is not None:
            rec.legs.append(QueueLeg(ev.queue, ev.received_at))
            self._touched = rec
            pend = self._pending_blind.pop(_clean(ev.chan.channel), None)
            if pend is not None:
                # blind-transferred into a queue: the transfer is complete
                tr = self._chans.get(pend[0])
                tparty = self._party(tr) if tr is not None else Party(pend[0])
                rec.transfers.append(Transfer("blind", tparty, rec.party, (), pend[1], ev.queue))

    def _on_queue_leave(self, ev) -> None:
        rec = self._queue_rec(ev.chan, ev.received_at)
        if rec is None:
            return
        i = self._leg(rec, ev.queue)
        if i is not None and not rec.legs[i].outcome:
            # left to an agent (AgentConnect follows) or by timeout / exit
            # key; AgentConnect / Abandon overwrite it
            self._set_leg(rec, ev.queue, ev.received_at, outcome="left")

    def _on_queue_abandon(self, ev) -> None:
        c = self._chan(ev.chan, create=False)
        rec = self._recs.get(c.uid) if c is not None else None
        if rec is not None:
            i = self._leg(rec, ev.queue)
            if i is None or rec.legs[i].outcome != "answered":
                self._set_leg(rec, ev.queue, ev.received_at, outcome="abandoned")

    def _on_agent_called(self, ev) -> None:
        caller = self._chan(ev.chan)
        if caller is None or ev.dest is None or not ev.dest.channel:
            return
        member = self._chan(ev.dest) if ev.dest.uniqueid else self._by(ev.dest.channel)
        if member is None:
            member = self._new_chan("name:" + ev.dest.channel, ev.dest.channel)
        if not member.dialer:
            # AMI 1 app_queue sends no Dial: AgentCalled is the dial
            member.dialer = caller.uid
            if member.uid not in caller.dialed:
                caller.dialed.append(member.uid)
        if caller.real:
            self._rec(caller, ev.received_at)

    def _on_agent_connected(self, ev) -> None:
        rec = self._queue_rec(ev.chan, ev.received_at)
        if rec is not None:
            self._set_leg(rec, ev.queue, ev.received_at, outcome="answered", agent=ev.agent)

    def _on_agent_completed(self, ev) -> None:
        c = self._chan(ev.chan, create=False)
        rec = self._recs.get(c.uid) if c is not None else None
        if rec is not None:
            self._set_leg(rec, ev.queue, ev.received_at, outcome="answered",
                          agent=ev.agent or "", complete_reason=ev.reason)

    def _on_originate_response(self, ev) -> None:
        self._originates.append(ev)
        if len(self._originates) > self.max_records:
            del self._originates[0]

    def _on_hangup(self, ev) -> None:
        self._hangup(ev)
        if self._trim_every:
            self._hangups += 1
            if self._hangups % self._trim_every == 0:
                self._trim_history()

    def _hangup(self, ev) -> None:
        c = self._chan(ev.chan, create=False)
        if c is None:
            return
        c.alive = False
        c.cause = ev.cause
        if self._trim_every:
            self._dead[c.uid] = c
        pend = self._pending_blind.pop(c.name, None) if "<" not in c.name else None
        if pend is not None:
            # the transferee hung up before its new target rang: the
            # transferer's call did not change hands after all
            tr = self._recs.get(pend[0])
            if tr is not None and tr.deferred:
                tr.reason, tr.deferred = tr.deferred, ""
                self._touched = tr
        rec = self._recs.get(c.uid)
        if rec is None:
            if (c.real and not c.dialer and not c.origin_root and pend is None
                    and "<" not in c.name):
                # an inbound channel that never dialled anybody (DND, IVR only)
                rec = self._rec(c, ev.received_at)
            else:
                return
        if rec.reason:
            return
        rec.cause = ev.cause
        rec.ended_at = ev.received_at
        reason = self._reason(c, rec, ev.cause)
        if self._pending_blind and any(p[0] == c.uid for p in self._pending_blind.values()):
            rec.deferred = reason  # decided when the transferee's target rings (or not)
            rec.reason = reason
        else:
            rec.reason = reason
        self._ended_now(c.uid, rec)
        self._touched = rec

    def _reason(self, c: _Chan, rec: _Rec, cause: int) -> str:
        if rec.connected and not rec.ring_since_connect:
            return "completed"
        if cause == CAUSE_BUSY:
            return "busy"
        if cause in (CAUSE_NO_RESPONSE, CAUSE_NO_ANSWER, CAUSE_REJECTED):
            return "no-answer"
        if self.ami1 and rec.originated and rec.rang and not rec.connected:
            # cacofonisk 0.4: the A leg of a click-to-dial is up by design;
            # B rang and never answered
            return "no-answer"
        if c.ever_up or rec.connected:
            return "completed"
        status = c.dial_status
        if status == "BUSY":
            return "busy"
        if status in ("NOANSWER", "CHANUNAVAIL", "CONGESTION"):
            return "no-answer"
        return "cancelled"

"""What Asterisk says is live right now: channels, queue callers, queue
members.  Pure model (stdlib + :mod:`cti.frame`): frozen dataclasses built
from the answers to CoreShowChannels / QueueStatus / QueueSummary (exact
shapes: ``tests/fixtures/ami-traces/asterisk-22/06-status-snapshots``), and a
small :class:`LiveQueues` state that the queue member / caller events keep
current between two snapshots (the wallboard of issue 6 reads it).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Iterable, Mapping

from .frame import Frame

IVR_VARIABLES = ("IVR_CHOICE", "CUSTOMER_ID", "OUTAGE_ID")


def _int(v: str | None, default: int = 0) -> int:
    try:
        return int((v or "").strip())
    except ValueError:
        return default


def _cid(v: str | None) -> str:
    v = (v or "").strip()
    return "" if v in ("<unknown>", "unknown") else v


def _duration(v: str | None) -> int:
    """``HH:MM:SS`` (CoreShowChannel) or seconds (Status) → seconds."""
    v = (v or "").strip()
    if ":" in v:
        total = 0
        for part in v.split(":"):
            total = total * 60 + _int(part)
        return total
    return _int(v)


def interface_of_channel(channel: str) -> str:
    """``Local/1001@agents-0000000c;1`` → ``Local/1001@agents``;
    ``PJSIP/1001-00000012`` → ``PJSIP/1001``."""
    name = channel.split(";", 1)[0]
    head, sep, tail = name.rpartition("-")
    if sep and tail and all(c in "0123456789abcdefABCDEF" for c in tail):
        return head
    return name


def agent_of(interface: str) -> str:
    """``Local/1001@agents`` → ``1001``."""
    rest = interface.split("/", 1)[-1]
    return rest.split("@", 1)[0].split(";", 1)[0]


@dataclass(frozen=True, slots=True)
class ChannelInfo:
    uniqueid: str
    linkedid: str
    channel: str
    state: int = 0
    caller_num: str = ""
    caller_name: str = ""
    connected_num: str = ""
    connected_name: str = ""
    context: str = ""
    exten: str = ""
    application: str = ""
    app_data: str = ""
    bridge_id: str = ""
    duration_s: int = 0
    variables: tuple[tuple[str, str], ...] = ()

    def var(self, name: str) -> str:
        for k, v in self.variables:
            if k == name:
                return v
        return ""

    @classmethod
    def from_frame(cls, f: Frame) -> "ChannelInfo":
        """A CoreShowChannel (``BridgeId``, ``ApplicationData``, ``Duration``)
        or Status (``BridgeID``, ``Data``, ``Seconds``) event."""
        uid = f.get("Uniqueid") or ""
        return cls(
            uniqueid=uid, linkedid=f.get("Linkedid") or uid, channel=f.get("Channel") or "",
            state=_int(f.get("ChannelState")), caller_num=_cid(f.get("CallerIDNum")),
            caller_name=_cid(f.get("CallerIDName")), connected_num=_cid(f.get("ConnectedLineNum")),
            connected_name=_cid(f.get("ConnectedLineName")), context=f.get("Context") or "",
            exten=f.get("Exten") or "", application=f.get("Application") or "",
            app_data=f.get("ApplicationData") if f.get("ApplicationData") is not None else (f.get("Data") or ""),
            bridge_id=(f.get("BridgeId") if f.get("BridgeId") is not None else f.get("BridgeID")) or "",
            duration_s=_duration(f.get("Duration") if f.get("Duration") is not None else f.get("Seconds")),
            variables=tuple((n.strip(), v) for n, sep, v in (x.partition("=") for x in f.get_all("ChanVariable"))
                            if sep))


@dataclass(frozen=True, slots=True)
class QueueEntry:
    """A caller waiting in a queue (QueueEntry; QueueCallerJoin)."""

    queue: str
    uniqueid: str
    channel: str = ""
    position: int = 0
    caller_num: str = ""
    caller_name: str = ""
    joined_at: float = 0.0  # epoch seconds (snapshot time - Wait)

    def wait_s(self, now: float) -> int:
        return max(0, int(now - self.joined_at))


@dataclass(frozen=True, slots=True)
class MemberState:
    """A queue member (QueueMember; QueueMember* events)."""

    queue: str
    interface: str
    name: str = ""
    membership: str = "static"
    penalty: int = 0
    status: int = 0  # AST_DEVICE_*: 1 not in use, 2 in use, 5 unavailable, 6 ringing...
    paused: bool = False
    paused_reason: str = ""
    in_call: bool = False
    calls_taken: int = 0
    last_call: int = 0
    login_time: int = 0

    @property
    def agent(self) -> str:
        return agent_of(self.interface)

    @property
    def available(self) -> bool:
        return not self.paused and self.status in (0, 1)

    @classmethod
    def from_frame(cls, f: Frame) -> "MemberState":
        iface = f.get("Location") or f.get("Interface") or ""
        return cls(queue=f.get("Queue") or "", interface=iface,
                   name=f.get("Name") or f.get("MemberName") or iface,
                   membership=f.get("Membership") or "static", penalty=_int(f.get("Penalty")),
                   status=_int(f.get("Status")), paused=(f.get("Paused") or "0").strip() == "1",
                   paused_reason=f.get("PausedReason") or "", in_call=(f.get("InCall") or "0") == "1",
                   calls_taken=_int(f.get("CallsTaken")), last_call=_int(f.get("LastCall")),
                   login_time=_int(f.get("LoginTime")))


@dataclass(frozen=True, slots=True)
class QueueInfo:
    """QueueParams + QueueSummary of one queue."""

    name: str
    strategy: str = ""
    completed: int = 0
    abandoned: int = 0
    hold_time: int = 0
    talk_time: int = 0
    logged_in: int = 0
    available: int = 0
    callers: int = 0
    longest_hold_time: int = 0


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything the three list actions said, at ``taken_at``."""

    taken_at: float
    channels: Mapping[str, ChannelInfo] = field(default_factory=lambda: MappingProxyType({}))  # by uniqueid
    entries: tuple[QueueEntry, ...] = ()
    members: Mapping[tuple[str, str], MemberState] = field(default_factory=lambda: MappingProxyType({}))  # (queue, interface)
    queues: Mapping[str, QueueInfo] = field(default_factory=lambda: MappingProxyType({}))
    complete: bool = True  # False when a query failed (queue data then unknown)

    def by_linkedid(self) -> dict[str, list[ChannelInfo]]:
        out: dict[str, list[ChannelInfo]] = {}
        for ch in self.channels.values():
            out.setdefault(ch.linkedid, []).append(ch)
        return out

    @property
    def member_interfaces(self) -> frozenset[str]:
        return frozenset(i for _, i in self.members)


def build_snapshot(taken_at: float, channels: Iterable[Frame] = (), queue_status: Iterable[Frame] = (),
                   queue_summary: Iterable[Frame] = (), complete: bool = True) -> Snapshot:
    """Pure: the list events of CoreShowChannels, QueueStatus, QueueSummary."""
    chans = {}
    for f in channels:
        if f.event in ("CoreShowChannel", "Status"):
            ci = ChannelInfo.from_frame(f)
            if ci.uniqueid:
                chans[ci.uniqueid] = ci
    entries: list[QueueEntry] = []
    members: dict[tuple[str, str], MemberState] = {}
    queues: dict[str, QueueInfo] = {}
    for f in queue_status:
        ev = f.event
        q = f.get("Queue") or ""
        if ev == "QueueParams":
            queues[q] = replace(queues.get(q, QueueInfo(q)), strategy=f.get("Strategy") or "",
                                completed=_int(f.get("Completed")), abandoned=_int(f.get("Abandoned")),
                                hold_time=_int(f.get("Holdtime")), talk_time=_int(f.get("TalkTime")),
                                callers=_int(f.get("Calls")))
        elif ev == "QueueMember":
            m = MemberState.from_frame(f)
            members[(m.queue, m.interface)] = m
        elif ev == "QueueEntry":
            entries.append(QueueEntry(q, f.get("Uniqueid") or "", f.get("Channel") or "",
                                      _int(f.get("Position")), _cid(f.get("CallerIDNum")),
                                      _cid(f.get("CallerIDName")), taken_at - _int(f.get("Wait"))))
    for f in queue_summary:
        if f.event == "QueueSummary":
            q = f.get("Queue") or ""
            queues[q] = replace(queues.get(q, QueueInfo(q)), logged_in=_int(f.get("LoggedIn")),
                                available=_int(f.get("Available")), callers=_int(f.get("Callers")),
                                longest_hold_time=_int(f.get("LongestHoldTime")))
    return Snapshot(taken_at, MappingProxyType(chans), tuple(entries), MappingProxyType(members),
                    MappingProxyType(queues), complete)


# ------------------------------------------------------------ live queues
@dataclass(frozen=True, slots=True)
class LiveQueues:
    """Queue callers and members now.  Replaced whole by a resync, updated
    by :func:`apply_frame` in between."""

    entries: tuple[QueueEntry, ...] = ()
    members: Mapping[tuple[str, str], MemberState] = field(default_factory=lambda: MappingProxyType({}))
    queues: Mapping[str, QueueInfo] = field(default_factory=lambda: MappingProxyType({}))
    synced_at: float | None = None

    @classmethod
    def from_snapshot(cls, snap: Snapshot) -> "LiveQueues":
        return cls(snap.entries, snap.members, snap.queues, snap.taken_at)

    def waiting(self, queue: str) -> list[QueueEntry]:
        return sorted((e for e in self.entries if e.queue == queue), key=lambda e: e.position)

    def agents(self) -> dict[str, list[MemberState]]:
        out: dict[str, list[MemberState]] = {}
        for m in self.members.values():
            out.setdefault(m.agent, []).append(m)
        return out


_MEMBER_EVENTS = ("QueueMemberStatus", "QueueMemberPause", "QueueMemberPenalty", "QueueMemberAdded",
                  "QueueMemberRinginuse")


def apply_frame(state: LiveQueues, f: Frame, now: float) -> LiveQueues:
    """Pure: the new state after one live event (unchanged for others)."""
    model = LiveModel(state)
    model.on_frame(f, now)
    return model.state


class LiveModel:
    """The live queue model the service keeps: callers and members, updated
    in place by each event in O(1) (a caller leaving does not renumber the
    ones behind; positions are the order in the queue, counted when
    :attr:`state` is read), replaced whole by a resync.  :attr:`state` is an
    immutable :class:`LiveQueues`, built again only after a change."""

    def __init__(self, state: LiveQueues | None = None) -> None:
        self.frames = 0
        self._load(state if state is not None else LiveQueues())

    def _load(self, st: LiveQueues) -> None:
        self._info = st.queues
        self._synced_at = st.synced_at
        self._members: dict[tuple[str, str], MemberState] = dict(st.members)
        self._queues: dict[str, dict[str, QueueEntry]] = {}  # queue -> uniqueid -> entry, in queue order
        for e in sorted(st.entries, key=lambda e: e.position):
            self._queues.setdefault(e.queue, {})[e.uniqueid] = e
        self._cache: LiveQueues | None = st

    @property
    def state(self) -> LiveQueues:
        st = self._cache
        if st is None:
            entries = []
            for waiting in self._queues.values():
                for i, e in enumerate(waiting.values(), 1):
                    entries.append(e if e.position == i else QueueEntry(
                        e.queue, e.uniqueid, e.channel, i, e.caller_num, e.caller_name, e.joined_at))
            st = self._cache = LiveQueues(tuple(entries), MappingProxyType(dict(self._members)), self._info,
                                          self._synced_at)
        return st

    @state.setter
    def state(self, st: LiveQueues) -> None:
        self._load(st)

    def waiting_count(self) -> int:
        return sum(len(w) for w in self._queues.values())

    def oldest_join(self) -> float | None:
        """When the longest-waiting caller joined (None: nobody waits); no
        snapshot is built (the surge check asks several times a second)."""
        return min((e.joined_at for w in self._queues.values() for e in w.values()), default=None)

    def on_frame(self, frame: Frame, ts: float) -> None:
        ev = frame.event
        if ev is None or not ev.startswith("Queue"):
            return
        if self._apply(ev, frame, ts):
            self._cache = None
        self.frames += 1

    def _apply(self, ev: str, f: Frame, now: float) -> bool:
        if ev in _MEMBER_EVENTS:
            m = MemberState.from_frame(f)
            key = (m.queue, m.interface)
            old = self._members.get(key)
            if old is not None and ev != "QueueMemberAdded":
                m = replace(m, in_call=old.in_call if ev != "QueueMemberStatus" else (m.status == 2 and old.in_call))
            self._members[key] = m
            return True
        if ev == "QueueMemberRemoved":
            return self._members.pop((f.get("Queue") or "", f.get("Interface") or ""), None) is not None
        if ev == "QueueCallerJoin":
            q, uid = f.get("Queue") or "", f.get("Uniqueid") or ""
            e = QueueEntry(q, uid, f.get("Channel") or "", _int(f.get("Position")), _cid(f.get("CallerIDNum")),
                           _cid(f.get("CallerIDName")), now)
            waiting = self._queues.setdefault(q, {})
            waiting.pop(uid, None)
            if 0 < e.position <= len(waiting):  # Asterisk put it ahead of others (priority)
                items = list(waiting.items())
                items.insert(e.position - 1, (uid, e))
                self._queues[q] = dict(items)
            else:
                waiting[uid] = e
            return True
        if ev in ("QueueCallerLeave", "QueueCallerAbandon"):
            waiting = self._queues.get(f.get("Queue") or "")
            return waiting is not None and waiting.pop(f.get("Uniqueid") or "", None) is not None
        return False

    def replace(self, snap: Snapshot) -> None:
        if snap.complete:
            self._load(LiveQueues.from_snapshot(snap))
        else:  # a query failed: keep what events said about queues
            self._synced_at = snap.taken_at
            self._cache = None


__all__ = ["ChannelInfo", "LiveModel", "LiveQueues", "MemberState", "QueueEntry", "QueueInfo", "Snapshot",
           "agent_of", "apply_frame", "build_snapshot", "interface_of_channel"]

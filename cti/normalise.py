"""AMI frames → typed domain events.  Pure, stdlib only.

The one place where Asterisk's CamelCase headers become snake_case fields.
Written for AMI 2 (Asterisk 22, see tests/fixtures/ami-traces/asterisk-22) and
tolerant of the AMI 1 shapes that are cheap to support (``UniqueID`` casing,
no ``Linkedid``, ``Member``/``AgentCalled``/``DestinationChannel`` fields of
the Asterisk 11 Agent* events).

Rules:

* ``normalise`` never raises: malformed integers become 0, missing fields "",
  ``<unknown>`` caller id becomes "", and anything unexpected is counted in
  :attr:`Normaliser.errors` and yields ``None``;
* ``Response`` frames (and client ``Action`` frames in recorded streams) yield
  ``None``; events the CTI does not model yield :class:`UnknownEvent` with the
  frame's headers (no copy), counted in :attr:`Normaliser.unknown`;
* ``VarSet`` is modelled only for the IVR variables (``IVR_CHOICE``,
  ``CUSTOMER_ID``, ``OUTAGE_ID``); the leading ``_``/``__`` inheritance marks
  are stripped.  Other ``VarSet`` events are :class:`UnknownEvent` too (the
  recordings index reads ``MIXMONITOR_FILENAME`` from them).
"""
from __future__ import annotations

from .events import (
    IVR_VARIABLES,
    UNKNOWN,
    AgentCalled,
    AgentCompleted,
    AgentConnected,
    AgentRingNoAnswer,
    CallerAbandoned,
    CallerJoinedQueue,
    CallerLeftQueue,
    ChannelCreated,
    ChannelEnteredBridge,
    ChannelHungUp,
    ChannelLeftBridge,
    ChannelSnapshot,
    ChannelVariableSet,
    DomainEvent,
    UnknownEvent,
)
from .frame import Frame

__all__ = ["Normaliser", "normalise", "default_normaliser"]

_IVR_VARS = frozenset(IVR_VARIABLES)


def _int(value: str | None) -> int:
    if not value:
        return 0
    try:
        return int(value)
    except (TypeError, ValueError):
        try:
            return int(float(value))
        except (TypeError, ValueError, OverflowError):
            return 0


def _cid(value: str | None) -> str:
    """Caller-id text: ``<unknown>`` (and a missing header) become ""."""
    if not value or value == UNKNOWN:
        return ""
    return value


def _lookup(d: dict[str, str], key: str) -> str | None:
    """Case-insensitive fallback for the rare AMI 1 spellings."""
    lk = key.lower()
    for k, v in d.items():
        if k.lower() == lk:
            return v
    return None


def _vars(headers: tuple[tuple[str, str], ...], key: str) -> tuple[tuple[str, str], ...]:
    """``<key>: NAME=value`` headers (repeats!) in wire order; also the legacy
    ``<key>(<chan>): NAME=value`` form (AMI 1, OriginateResponse)."""
    values = [v for k, v in headers if k == key]
    if not values:
        legacy = key + "("
        values = [v for k, v in headers if k.startswith(legacy) and k.endswith(")")]
        if not values:
            return ()
    out: dict[str, str] = {}
    for v in values:
        name, sep, value = v.partition("=")
        if sep:
            out[name.strip()] = value
    return tuple(out.items())


# Header names of a channel snapshot, per prefix ("" for the channel, "Dest"
# for the member channel of Agent* events).
_SNAP_KEYS = {
    p: (
        p + "Channel",
        p + "Uniqueid",
        p + "Linkedid",
        p + "ChannelState",
        p + "CallerIDNum",
        p + "CallerIDName",
        p + "ConnectedLineNum",
        p + "ConnectedLineName",
        p + "Context",
        p + "Exten",
        p + "ChanVariable",
    )
    for p in ("", "Dest")
}


def _snapshot(
    d: dict[str, str],
    headers: tuple[tuple[str, str], ...],
    prefix: str = "",
) -> ChannelSnapshot:
    (k_chan, k_uid, k_lid, k_state, k_num, k_name, k_cnum, k_cname, k_ctx, k_exten,
     k_vars) = _SNAP_KEYS[prefix]
    get = d.get
    uid = get(k_uid)
    if uid is None:
        uid = _lookup(d, k_uid) or ""  # AMI 1: UniqueID
    if uid == UNKNOWN:
        uid = ""
    lid = get(k_lid)
    if lid is None:
        lid = _lookup(d, k_lid)
    if not lid or lid == UNKNOWN:
        lid = uid  # AMI 1 has no Linkedid: each channel is its own call
    num = get(k_num)
    if num is None:
        num = _lookup(d, k_num)  # AMI 1 CEL: CallerIDnum
    return ChannelSnapshot(
        channel=get(k_chan, ""),
        uniqueid=uid,
        linkedid=lid,
        state=_int(get(k_state)),
        caller_num=_cid(num),
        caller_name=_cid(get(k_name)),
        connected_num=_cid(get(k_cnum)),
        connected_name=_cid(get(k_cname)),
        context=get(k_ctx, ""),
        exten=get(k_exten, ""),
        variables=_vars(headers, k_vars),
    )


def _dest_snapshot(d: dict[str, str], headers) -> ChannelSnapshot | None:
    if "DestUniqueid" in d or "DestChannel" in d:
        return _snapshot(d, headers, "Dest")
    # AMI 1 AgentCalled: DestinationChannel, no member uniqueid
    chan = d.get("DestinationChannel")
    if chan:
        return ChannelSnapshot(channel=chan, uniqueid="", linkedid="")
    return None


def _interface(d: dict[str, str]) -> str:
    return d.get("Interface") or d.get("Member") or d.get("AgentCalled") or ""


_new = object.__new__
_set_received_at = UnknownEvent.received_at.__set__
_set_name = UnknownEvent.name.__set__
_set_fields = UnknownEvent.fields.__set__


def _unknown(t: float, name: str, headers) -> UnknownEvent:
    """``UnknownEvent(t, name, headers)`` without the frozen ``__init__`` cost
    (most AMI traffic is Newexten/VarSet/DeviceStateChange...)."""
    ev = _new(UnknownEvent)
    _set_received_at(ev, t)
    _set_name(ev, name)
    _set_fields(ev, headers)
    return ev


# --- one builder per modelled event -----------------------------------------

def _newchannel(d, h, t):
    return ChannelCreated(t, _snapshot(d, h))


def _varset(d, h, t):
    name = d.get("Variable", "")
    bare = name.lstrip("_")
    if bare not in _IVR_VARS:  # pragma: no cover - filtered in Normaliser
        return _unknown(t, "VarSet", h)
    return ChannelVariableSet(t, _snapshot(d, h), bare, d.get("Value", ""))


def _varset_name(headers: tuple[tuple[str, str], ...]) -> str | None:
    """The ``Variable`` of a VarSet; it is near the end, so scan backwards."""
    for k, v in reversed(headers):
        if k == "Variable":
            return v
    return None


def _queue_join(d, h, t):
    return CallerJoinedQueue(t, _snapshot(d, h), d.get("Queue", ""),
                             _int(d.get("Position")), _int(d.get("Count")))


def _queue_leave(d, h, t):
    return CallerLeftQueue(t, _snapshot(d, h), d.get("Queue", ""),
                           _int(d.get("Position")), _int(d.get("Count")))


def _queue_abandon(d, h, t):
    return CallerAbandoned(t, _snapshot(d, h), d.get("Queue", ""),
                           _int(d.get("Position")), _int(d.get("OriginalPosition")),
                           _int(d.get("HoldTime")))


def _agent_called(d, h, t):
    return AgentCalled(t, _snapshot(d, h), _dest_snapshot(d, h), d.get("Queue", ""),
                       _interface(d), d.get("MemberName") or d.get("AgentName", ""))


def _agent_connect(d, h, t):
    return AgentConnected(t, _snapshot(d, h), _dest_snapshot(d, h), d.get("Queue", ""),
                          _interface(d), d.get("MemberName", ""),
                          _int(d.get("HoldTime")), _int(d.get("RingTime")))


def _agent_complete(d, h, t):
    return AgentCompleted(t, _snapshot(d, h), _dest_snapshot(d, h), d.get("Queue", ""),
                          _interface(d), d.get("MemberName", ""),
                          _int(d.get("HoldTime")), _int(d.get("TalkTime")),
                          d.get("Reason", ""))


def _agent_rna(d, h, t):
    return AgentRingNoAnswer(t, _snapshot(d, h), _dest_snapshot(d, h), d.get("Queue", ""),
                             _interface(d), d.get("MemberName", ""),
                             _int(d.get("RingTime")))


def _bridge_enter(d, h, t):
    return ChannelEnteredBridge(t, _snapshot(d, h), d.get("BridgeUniqueid", ""),
                                _int(d.get("BridgeNumChannels")))


def _bridge_leave(d, h, t):
    return ChannelLeftBridge(t, _snapshot(d, h), d.get("BridgeUniqueid", ""),
                             _int(d.get("BridgeNumChannels")))


def _hangup(d, h, t):
    return ChannelHungUp(t, _snapshot(d, h), _int(d.get("Cause")), d.get("Cause-txt", ""))


_BUILDERS = {
    "Newchannel": _newchannel,
    "VarSet": _varset,
    "QueueCallerJoin": _queue_join,
    "QueueCallerLeave": _queue_leave,
    "QueueCallerAbandon": _queue_abandon,
    "AgentCalled": _agent_called,
    "AgentConnect": _agent_connect,
    "AgentComplete": _agent_complete,
    "AgentRingNoAnswer": _agent_rna,
    "BridgeEnter": _bridge_enter,
    "BridgeLeave": _bridge_leave,
    "Hangup": _hangup,
}


def _event_name(headers: tuple[tuple[str, str], ...]) -> str | None:
    if not headers:
        return None
    k, v = headers[0]
    if k == "Event":  # Asterisk always sends it first
        return v
    for k, v in headers:
        if k.lower() == "event":
            return v
    return None


class Normaliser:
    """Callable ``(frame, received_at) -> DomainEvent | None`` with counters.

    ``errors``: frames that raised inside a builder (returned ``None``);
    ``unknown``: :class:`UnknownEvent` results; ``ignored``: frames without an
    ``Event`` header (responses, recorded actions); ``events``: modelled events.
    """

    __slots__ = ("errors", "unknown", "ignored", "events")

    def __init__(self) -> None:
        self.errors = 0
        self.unknown = 0
        self.ignored = 0
        self.events = 0

    def __call__(self, frame: Frame, received_at: float) -> DomainEvent | None:
        try:
            headers = frame.headers
            if headers and headers[0][0] == "Event":  # Asterisk sends it first
                name = headers[0][1]
            else:
                name = _event_name(headers)
                if name is None:
                    self.ignored += 1
                    return None
            builder = _BUILDERS.get(name)
            if builder is None or (
                    builder is _varset
                    and (_varset_name(headers) or "").lstrip("_") not in _IVR_VARS):
                # most AMI traffic (Newexten, VarSet, DeviceStateChange...):
                # UnknownEvent(received_at, name, headers) without __init__
                self.unknown += 1
                ev = _new(UnknownEvent)
                _set_received_at(ev, received_at)
                _set_name(ev, name)
                _set_fields(ev, headers)
                return ev
            # first value of each header name (Frame.get semantics)
            event = builder(dict(reversed(headers)), headers, received_at)
        except Exception:  # noqa: BLE001 - the edge must never raise
            self.errors += 1
            return None
        self.events += 1
        return event

    normalise = __call__

    def counts(self) -> dict[str, int]:
        return {"events": self.events, "unknown": self.unknown,
                "ignored": self.ignored, "errors": self.errors}


default_normaliser = Normaliser()


def normalise(frame: Frame, received_at: float) -> DomainEvent | None:
    """Module-level convenience; counts go to :data:`default_normaliser`."""
    return default_normaliser(frame, received_at)

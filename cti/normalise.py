"""AMI frames → typed domain events.  Pure, stdlib only.

The one place where Asterisk's CamelCase headers become snake_case fields.
Written for AMI 2 (Asterisk 22, see tests/fixtures/ami-traces/asterisk-22) and
tolerant of the AMI 1 shapes that are cheap to support (``UniqueID`` casing,
no ``Linkedid``, ``Member``/``AgentCalled``/``DestinationChannel`` fields of
the Asterisk 11 Agent* events).

Call shapes (for :mod:`cti.callflow`): AMI 2 Newstate, NewCallerid,
DialBegin/DialEnd, BridgeCreate/Enter/Leave/Destroy, LocalBridge,
BlindTransfer, AttendedTransfer, Pickup, OriginateResponse, and their AMI 1
forms (Dial SubEvent Begin/End, Bridge Link/Unlink, Transfer, Masquerade,
Rename); their snapshots are light (identity, state, caller id).  UserEvent
stays an :class:`UnknownEvent` with every header.

Rules:

* ``normalise`` never raises: malformed integers become 0, missing fields "",
  ``<unknown>`` caller id becomes "", and anything unexpected is counted in
  :attr:`Normaliser.errors` and yields ``None``;
* ``Response`` frames (and client ``Action`` frames in recorded streams) yield
  ``None``; events the CTI does not model yield :class:`UnknownEvent` with the
  frame's headers (no copy), counted in :attr:`Normaliser.unknown`;
* ``VarSet`` is modelled only for the IVR variables (``IVR_CHOICE``,
  ``CUSTOMER_ID``, ``OUTAGE_ID``; the leading ``_``/``__`` inheritance marks
  are stripped) and ``MIXMONITOR_FILENAME`` (:class:`RecordingStarted`, for
  the recordings index; MixMonitorStop is :class:`RecordingStopped`).  Other
  ``VarSet`` events are :class:`UnknownEvent`.
"""
from __future__ import annotations

from .events import (
    IVR_VARIABLES,
    UNKNOWN,
    AgentCalled,
    AgentCompleted,
    AgentConnected,
    AgentRingNoAnswer,
    AttendedTransferred,
    BlindTransferred,
    BridgeCreated,
    BridgeDestroyed,
    CallerAbandoned,
    CallerIdChanged,
    CallPickedUp,
    CallTransferred,
    CallerJoinedQueue,
    CallerLeftQueue,
    ChannelCreated,
    ChannelEnteredBridge,
    ChannelHungUp,
    ChannelLeftBridge,
    ChannelRenamed,
    ChannelsLinked,
    ChannelSnapshot,
    ChannelsMasqueraded,
    ChannelStateChanged,
    ChannelsUnlinked,
    ChannelVariableSet,
    DialEnded,
    DialStarted,
    DomainEvent,
    LocalChannelsBridged,
    OriginateResponded,
    RecordingStarted,
    RecordingStopped,
    UnknownEvent,
)
from .frame import Frame

__all__ = ["Normaliser", "normalise", "default_normaliser"]

_IVR_VARS = frozenset(IVR_VARIABLES)
_RECORDING_VAR = "MIXMONITOR_FILENAME"
# VarSet variables that become modelled events (without "_"/"__")
_MODELLED_VARS = _IVR_VARS | {_RECORDING_VAR}


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
    for p in ("", "Dest", "Transferer", "Transferee", "TransferTarget", "OrigTransferer",
              "SecondTransferer", "LocalOne", "LocalTwo", "Target")
}


_SNAP_SET = tuple(getattr(ChannelSnapshot, f).__set__ for f in ChannelSnapshot.__slots__)
assert ChannelSnapshot.__slots__ == ("channel", "uniqueid", "linkedid", "state", "caller_num",
                                     "caller_name", "connected_num", "connected_name",
                                     "context", "exten", "variables")


def _make_snapshot(channel, uniqueid, linkedid, state, caller_num, caller_name, connected_num,
                   connected_name, context, exten, variables,
                   _new=object.__new__, _cls=ChannelSnapshot, _s=_SNAP_SET) -> ChannelSnapshot:
    """``ChannelSnapshot(...)`` without the frozen ``__init__`` (about half the
    cost; built for most modelled frames)."""
    o = _new(_cls)
    _s[0](o, channel)
    _s[1](o, uniqueid)
    _s[2](o, linkedid)
    _s[3](o, state)
    _s[4](o, caller_num)
    _s[5](o, caller_name)
    _s[6](o, connected_num)
    _s[7](o, connected_name)
    _s[8](o, context)
    _s[9](o, exten)
    _s[10](o, variables)
    return o


_STATES = {str(i): i for i in range(11)}
_LIGHT_KEYS = {p: keys[:6] for p, keys in _SNAP_KEYS.items()}


def _light(d: dict[str, str], prefix: str = "") -> ChannelSnapshot:
    """The snapshot of a call-shape event (Newstate, Dial*, LocalBridge,
    transfers...): identity, state and caller id only -- no connected line,
    context, exten or ChanVariable values, no AMI 1 spelling fallbacks except
    ``UniqueID``.  Cheaper than :func:`_snapshot`; these are a third of the
    modelled frames."""
    k_chan, k_uid, k_lid, k_state, k_num, k_name = _LIGHT_KEYS[prefix]
    get = d.get
    uid = get(k_uid)
    if uid is None:
        uid = _lookup(d, k_uid) or ""
    elif uid == UNKNOWN:
        uid = ""
    lid = get(k_lid)
    if not lid or lid == UNKNOWN:
        lid = uid
    state = get(k_state)
    st = _STATES.get(state) if state else 0
    num = get(k_num)
    name = get(k_name)
    return _make_snapshot(
        get(k_chan, ""), uid, lid, _int(state) if st is None else st,
        "" if not num or num == UNKNOWN else num, "" if not name or name == UNKNOWN else name,
        "", "", "", "", ())


def _snapshot(
    d: dict[str, str],
    headers: tuple[tuple[str, str], ...] | None,
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
    state = get(k_state)
    st = _STATES.get(state) if state else 0
    name, cnum, cname = get(k_name), get(k_cnum), get(k_cname)
    return _make_snapshot(
        get(k_chan, ""), uid, lid, _int(state) if st is None else st,
        num if num and num != UNKNOWN else "", name if name and name != UNKNOWN else "",
        cnum if cnum and cnum != UNKNOWN else "", cname if cname and cname != UNKNOWN else "",
        get(k_ctx, ""), get(k_exten, ""),
        # ChanVariable headers (repeats!) when there are any; the legacy
        # ``ChanVariable(<chan>)`` form only exists in AMI 1 (no Linkedid).
        # ``headers is None``: a call-shape event, whose variables nobody reads
        () if headers is None else
        (_vars(headers, k_vars) if k_vars in d or k_lid not in d else ()),
    )


def _dest_snapshot(d: dict[str, str], headers) -> ChannelSnapshot | None:
    if "DestUniqueid" in d or "DestChannel" in d:
        return _snapshot(d, headers, "Dest")
    # AMI 1 AgentCalled: DestinationChannel, no member uniqueid
    chan = d.get("DestinationChannel")
    if chan:
        return ChannelSnapshot(channel=chan, uniqueid="", linkedid="")
    return None


def _opt_snapshot(d, headers, prefix: str) -> ChannelSnapshot | None:
    """The ``<prefix>*`` snapshot if the frame has one (AttendedTransfer of
    older Asterisk leaves out the transferee and target)."""
    if prefix + "Uniqueid" in d or prefix + "Channel" in d:
        return _snapshot(d, headers, prefix)
    return None


def _opt_light(d, prefix: str) -> ChannelSnapshot | None:
    if prefix + "Uniqueid" in d or prefix + "Channel" in d:
        return _light(d, prefix)
    return None


def _legacy_pair(d: dict[str, str], n: str) -> ChannelSnapshot:
    """AMI 1 ``Channel1``/``Uniqueid1``/``CallerID1`` (Bridge, LocalBridge)."""
    uid = d.get("Uniqueid" + n, "")
    return ChannelSnapshot(channel=d.get("Channel" + n, ""), uniqueid=uid, linkedid=uid,
                           caller_num=_cid(d.get("CallerID" + n)))


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
    if bare == _RECORDING_VAR:
        return RecordingStarted(t, _snapshot(d, h), d.get("Value", ""))
    if bare not in _IVR_VARS:  # pragma: no cover - filtered in Normaliser
        return _unknown(t, "VarSet", h)
    return ChannelVariableSet(t, _snapshot(d, h), bare, d.get("Value", ""))


def _varset_name(headers: tuple[tuple[str, str], ...]) -> str | None:
    """The ``Variable`` of a VarSet; it is near the end, so scan backwards."""
    for k, v in reversed(headers):
        if k == "Variable":
            return v
    return None


def _mixmonitor_stop(d, h, t):
    return RecordingStopped(t, _snapshot(d, h))


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


def _agent_caller(d, h) -> ChannelSnapshot:
    """The queue caller of an Agent* event.  AMI 1 names it ``ChannelCalling``
    (AgentCalled) or not at all: its ``Channel`` is the *member* channel
    (AgentConnect, AgentComplete), while ``Uniqueid`` is the caller's."""
    chan = _snapshot(d, h)
    if "Member" in d and "DestChannel" not in d and "Interface" not in d:
        return ChannelSnapshot(channel="", uniqueid=chan.uniqueid, linkedid=chan.linkedid,
                               caller_num=chan.caller_num, caller_name=chan.caller_name,
                               variables=chan.variables)
    calling = d.get("ChannelCalling")
    if calling and not chan.channel:
        return ChannelSnapshot(calling, chan.uniqueid, chan.linkedid, chan.state,
                               chan.caller_num, chan.caller_name, chan.connected_num,
                               chan.connected_name, chan.context, chan.exten, chan.variables)
    return chan


def _agent_member(d, h) -> ChannelSnapshot | None:
    dest = _dest_snapshot(d, h)
    if dest is None and "Member" in d and "Channel" in d:
        # AMI 1 AgentConnect/AgentComplete: Channel is the member channel,
        # BridgedChannel its uniqueid (AgentConnect only)
        uid = d.get("BridgedChannel", "")
        return ChannelSnapshot(channel=d["Channel"], uniqueid=uid, linkedid=uid)
    return dest


def _agent_called(d, h, t):
    return AgentCalled(t, _agent_caller(d, h), _agent_member(d, h), d.get("Queue", ""),
                       _interface(d), d.get("MemberName") or d.get("AgentName", ""))


def _agent_connect(d, h, t):
    return AgentConnected(t, _agent_caller(d, h), _agent_member(d, h), d.get("Queue", ""),
                          _interface(d), d.get("MemberName", ""),
                          _int(d.get("HoldTime")), _int(d.get("RingTime")))


def _agent_complete(d, h, t):
    return AgentCompleted(t, _agent_caller(d, h), _agent_member(d, h), d.get("Queue", ""),
                          _interface(d), d.get("MemberName", ""),
                          _int(d.get("HoldTime")), _int(d.get("TalkTime")),
                          d.get("Reason", ""))


def _agent_rna(d, h, t):
    return AgentRingNoAnswer(t, _snapshot(d, h), _dest_snapshot(d, h), d.get("Queue", ""),
                             _interface(d), d.get("MemberName", ""),
                             _int(d.get("RingTime")))


def _bridge_enter(d, h, t):
    return ChannelEnteredBridge(t, _snapshot(d, h), d.get("BridgeUniqueid", ""),
                                _int(d.get("BridgeNumChannels")), d.get("SwapUniqueid", ""))


def _bridge_leave(d, h, t):
    return ChannelLeftBridge(t, _snapshot(d, h), d.get("BridgeUniqueid", ""),
                             _int(d.get("BridgeNumChannels")))


def _hangup(d, h, t):
    return ChannelHungUp(t, _snapshot(d, h), _int(d.get("Cause")), d.get("Cause-txt", ""))


# The call-shape events below carry light channel snapshots (:func:`_light`,
# no ChanVariable values): nothing reads those there, and they are a good part
# of the cost of a frame (bench/ami_pipeline.py).

def _newstate(d, h, t):
    return ChannelStateChanged(t, _light(d))


def _newcallerid(d, h, t):
    return CallerIdChanged(t, _light(d))


def _dial_begin(d, h, t):
    return DialStarted(t, _light(d), _opt_light(d, "Dest"),
                       d.get("DialString", ""))


def _dial_end(d, h, t):
    return DialEnded(t, _light(d), _opt_light(d, "Dest"),
                     d.get("DialStatus", ""))


def _dial_legacy(d, h, t):
    """AMI 1 ``Dial`` with ``SubEvent: Begin|End``."""
    chan = _light(d)
    if d.get("SubEvent") == "End":
        return DialEnded(t, chan, None, d.get("DialStatus", ""))
    duid = d.get("DestUniqueID") or d.get("DestUniqueid") or ""
    dest = ChannelSnapshot(channel=d.get("Destination", ""), uniqueid=duid, linkedid=duid)
    return DialStarted(t, chan, dest, d.get("Dialstring", ""))


def _bridge_create(d, h, t):
    return BridgeCreated(t, d.get("BridgeUniqueid", ""), d.get("BridgeType", ""))


def _bridge_destroy(d, h, t):
    return BridgeDestroyed(t, d.get("BridgeUniqueid", ""))


def _bridge_legacy(d, h, t):
    cls = ChannelsUnlinked if d.get("Bridgestate") == "Unlink" else ChannelsLinked
    return cls(t, _legacy_pair(d, "1"), _legacy_pair(d, "2"))


def _local_bridge(d, h, t):
    if "LocalOneUniqueid" in d or "LocalOneChannel" in d:
        one, two = _light(d, "LocalOne"), _light(d, "LocalTwo")
    else:
        one, two = _legacy_pair(d, "1"), _legacy_pair(d, "2")
    return LocalChannelsBridged(t, one, two, d.get("LocalOptimization", "").lower() == "yes")


def _blind_transfer(d, h, t):
    return BlindTransferred(t, _opt_light(d, "Transferer"),
                            _opt_light(d, "Transferee"), d.get("Extension", ""),
                            d.get("Context", ""), d.get("Result", ""),
                            d.get("IsExternal", "").lower() == "yes",
                            d.get("BridgeUniqueid", ""))


def _attended_transfer(d, h, t):
    return AttendedTransferred(t, _opt_light(d, "OrigTransferer"),
                               _opt_light(d, "SecondTransferer"),
                               _opt_light(d, "Transferee"),
                               _opt_light(d, "TransferTarget"),
                               d.get("DestType", ""), d.get("Result", ""),
                               d.get("OrigBridgeUniqueid", ""), d.get("SecondBridgeUniqueid", ""),
                               d.get("DestBridgeUniqueid", ""), d.get("DestApp", ""))


def _transfer_legacy(d, h, t):
    return CallTransferred(t, _light(d), d.get("TransferType", ""),
                           d.get("TransferMethod", ""), d.get("TargetChannel", ""),
                           d.get("TargetUniqueid", ""), d.get("TransferExten", ""),
                           d.get("TransferContext", ""))


def _masquerade(d, h, t):
    return ChannelsMasqueraded(t, d.get("Clone", ""), d.get("Original", ""),
                               d.get("CloneState", ""), d.get("OriginalState", ""))


def _rename(d, h, t):
    chan = _light(d)
    if not chan.channel and "Oldname" in d:  # Asterisk 1.8 spelling
        chan = ChannelSnapshot(channel=d["Oldname"], uniqueid=chan.uniqueid,
                               linkedid=chan.linkedid)
    return ChannelRenamed(t, chan, d.get("Newname", ""))


def _pickup(d, h, t):
    return CallPickedUp(t, _light(d), _opt_light(d, "Target"))


def _originate_response(d, h, t):
    return OriginateResponded(t, d.get("ActionID", ""), d.get("Response", ""),
                              d.get("Channel", ""), d.get("Context", ""), d.get("Exten", ""),
                              _int(d.get("Reason")), _cid(d.get("Uniqueid")),
                              _cid(d.get("CallerIDNum")), _cid(d.get("CallerIDName")))


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
    "Newstate": _newstate,
    "NewCallerid": _newcallerid,
    "DialBegin": _dial_begin,
    "DialEnd": _dial_end,
    "Dial": _dial_legacy,
    "BridgeCreate": _bridge_create,
    "BridgeDestroy": _bridge_destroy,
    "Bridge": _bridge_legacy,
    "LocalBridge": _local_bridge,
    "BlindTransfer": _blind_transfer,
    "AttendedTransfer": _attended_transfer,
    "Transfer": _transfer_legacy,
    "Masquerade": _masquerade,
    "Rename": _rename,
    "Pickup": _pickup,
    "OriginateResponse": _originate_response,
    "MixMonitorStop": _mixmonitor_stop,
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
                    and (_varset_name(headers) or "").lstrip("_") not in _MODELLED_VARS):
                # most AMI traffic (Newexten, VarSet, DeviceStateChange...):
                # UnknownEvent(received_at, name, headers) without __init__
                self.unknown += 1
                ev = _new(UnknownEvent)
                _set_received_at(ev, received_at)
                _set_name(ev, name)
                _set_fields(ev, headers)
                return ev
            # first value of each header name (Frame.get semantics), shared
            # with the frame's other readers
            event = builder(frame.first_values(), headers, received_at)
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

"""Typed domain events made from AMI frames.  Pure model: stdlib only.

Asterisk's CamelCase keys become snake_case here, once; ``uniqueid`` and
``linkedid`` keep Asterisk's spelling.  Every event is a frozen dataclass.
The IVR's channel variables (``IVR_CHOICE``, ``CUSTOMER_ID``, ``OUTAGE_ID``)
ride on every channel event as ``ChanVariable`` headers and are carried in
``variables`` as a tuple of ``(name, value)`` pairs.
"""
from __future__ import annotations

from dataclasses import dataclass, field

IVR_VARIABLES = ("IVR_CHOICE", "CUSTOMER_ID", "OUTAGE_ID")

UNKNOWN = "<unknown>"


@dataclass(frozen=True, slots=True)
class ChannelSnapshot:
    """The channel fields Asterisk puts on every channel event."""

    channel: str
    uniqueid: str
    linkedid: str
    state: int = 0
    caller_num: str = ""
    caller_name: str = ""
    connected_num: str = ""
    connected_name: str = ""
    context: str = ""
    exten: str = ""
    variables: tuple[tuple[str, str], ...] = ()

    def var(self, name: str) -> str:
        for k, v in self.variables:
            if k == name:
                return v
        return ""


@dataclass(frozen=True, slots=True)
class DomainEvent:
    """Base of all events.  ``received_at`` is the monotonic-free wall clock
    (seconds since the epoch) at which the frame was read."""

    received_at: float


@dataclass(frozen=True, slots=True)
class ChannelEvent(DomainEvent):
    chan: ChannelSnapshot

    @property
    def uniqueid(self) -> str:
        return self.chan.uniqueid

    @property
    def linkedid(self) -> str:
        return self.chan.linkedid


@dataclass(frozen=True, slots=True)
class ChannelCreated(ChannelEvent):
    """Newchannel."""


@dataclass(frozen=True, slots=True)
class ChannelVariableSet(ChannelEvent):
    """VarSet of a variable the CTI cares about (leading ``_``/``__`` stripped)."""

    name: str = ""
    value: str = ""


@dataclass(frozen=True, slots=True)
class QueueCallerEvent(ChannelEvent):
    queue: str = ""
    position: int = 0
    count: int = 0


@dataclass(frozen=True, slots=True)
class CallerJoinedQueue(QueueCallerEvent):
    """QueueCallerJoin."""


@dataclass(frozen=True, slots=True)
class CallerLeftQueue(QueueCallerEvent):
    """QueueCallerLeave (the caller left to an agent, or by timeout/exit)."""


@dataclass(frozen=True, slots=True)
class CallerAbandoned(ChannelEvent):
    """QueueCallerAbandon (hung up while waiting, or Queue() timeout)."""

    queue: str = ""
    position: int = 0
    original_position: int = 0
    hold_time: int = 0


@dataclass(frozen=True, slots=True)
class AgentEvent(ChannelEvent):
    """Agent* events: ``chan`` is the caller, ``dest`` the member channel."""

    dest: ChannelSnapshot | None = None
    queue: str = ""
    interface: str = ""
    member_name: str = ""

    @property
    def agent(self) -> str:
        return agent_id_from_interface(self.interface)


@dataclass(frozen=True, slots=True)
class AgentCalled(AgentEvent):
    """AgentCalled: a member's phone rings for a queue caller."""


@dataclass(frozen=True, slots=True)
class AgentConnected(AgentEvent):
    """AgentConnect."""

    hold_time: int = 0
    ring_time: int = 0


@dataclass(frozen=True, slots=True)
class AgentCompleted(AgentEvent):
    """AgentComplete; ``reason`` is caller, agent or transfer."""

    hold_time: int = 0
    talk_time: int = 0
    reason: str = ""


@dataclass(frozen=True, slots=True)
class AgentRingNoAnswer(AgentEvent):
    """AgentRingNoAnswer."""

    ring_time: int = 0


@dataclass(frozen=True, slots=True)
class ChannelEnteredBridge(ChannelEvent):
    """BridgeEnter; ``swap_uniqueid`` is the channel this one replaces (Local
    channel optimisation, transfers)."""

    bridge_id: str = ""
    bridge_channels: int = 0
    swap_uniqueid: str = ""


@dataclass(frozen=True, slots=True)
class ChannelLeftBridge(ChannelEvent):
    """BridgeLeave."""

    bridge_id: str = ""
    bridge_channels: int = 0


@dataclass(frozen=True, slots=True)
class ChannelHungUp(ChannelEvent):
    """Hangup; ``cause`` is Q.850."""

    cause: int = 0
    cause_txt: str = ""


@dataclass(frozen=True, slots=True)
class RecordingStarted(ChannelEvent):
    """``VarSet MIXMONITOR_FILENAME``: MixMonitor records ``chan`` into
    ``filename`` (as Asterisk sent it -- hostile until checked; "" when the
    dialplan clears the variable).  MixMonitorStart itself names no file."""

    filename: str = ""


@dataclass(frozen=True, slots=True)
class RecordingStopped(ChannelEvent):
    """MixMonitorStop.  Asterisk 22 sends it only from StopMixMonitor (trace
    12): a recording also ends with its channel's Hangup."""


# --- call shapes (callflow.py): dials, bridges, transfers, pickups ------------

@dataclass(frozen=True, slots=True)
class ChannelStateChanged(ChannelEvent):
    """Newstate (``chan.state``: 4 ring, 5 ringing, 6 up)."""


@dataclass(frozen=True, slots=True)
class CallerIdChanged(ChannelEvent):
    """NewCallerid."""


@dataclass(frozen=True, slots=True)
class DialStarted(ChannelEvent):
    """DialBegin (AMI 2) / Dial SubEvent Begin (AMI 1).  ``chan`` is the
    dialling channel -- empty (``chan.uniqueid == ""``) for an AMI Originate
    dial, which carries only the ``Dest*`` side."""

    dest: ChannelSnapshot | None = None
    dial_string: str = ""


@dataclass(frozen=True, slots=True)
class DialEnded(ChannelEvent):
    """DialEnd / Dial SubEvent End.  ``dial_status``: ANSWER, BUSY, NOANSWER,
    CANCEL, CONGESTION, CHANUNAVAIL...  AMI 1 gives no ``dest``."""

    dest: ChannelSnapshot | None = None
    dial_status: str = ""


@dataclass(frozen=True, slots=True)
class BridgeCreated(DomainEvent):
    """BridgeCreate."""

    bridge_id: str = ""
    bridge_type: str = ""


@dataclass(frozen=True, slots=True)
class BridgeDestroyed(DomainEvent):
    """BridgeDestroy."""

    bridge_id: str = ""


@dataclass(frozen=True, slots=True)
class ChannelsLinked(DomainEvent):
    """AMI 1 ``Bridge`` with ``Bridgestate: Link`` (two channels talk)."""

    chan1: ChannelSnapshot | None = None
    chan2: ChannelSnapshot | None = None


@dataclass(frozen=True, slots=True)
class ChannelsUnlinked(DomainEvent):
    """AMI 1 ``Bridge`` with ``Bridgestate: Unlink``."""

    chan1: ChannelSnapshot | None = None
    chan2: ChannelSnapshot | None = None


@dataclass(frozen=True, slots=True)
class LocalChannelsBridged(DomainEvent):
    """LocalBridge: the two halves (``;1``, ``;2``) of one Local channel;
    ``optimise`` says whether Asterisk may optimise them away later."""

    one: ChannelSnapshot | None = None
    two: ChannelSnapshot | None = None
    optimise: bool = False


@dataclass(frozen=True, slots=True)
class BlindTransferred(DomainEvent):
    """BlindTransfer (AMI 2): ``transferer`` sent ``transferee`` to
    ``extension``."""

    transferer: ChannelSnapshot | None = None
    transferee: ChannelSnapshot | None = None
    extension: str = ""
    context: str = ""
    result: str = ""
    is_external: bool = False
    bridge_id: str = ""


@dataclass(frozen=True, slots=True)
class AttendedTransferred(DomainEvent):
    """AttendedTransfer (AMI 2).  ``dest_type`` ``Bridge``: the two bridges
    were merged (attended); ``App``: the target was still ringing (blonde /
    semi-attended).  Older Asterisk leaves out the transferee and target
    snapshots: then they are the other channels of the two bridges."""

    orig_transferer: ChannelSnapshot | None = None
    second_transferer: ChannelSnapshot | None = None
    transferee: ChannelSnapshot | None = None
    target: ChannelSnapshot | None = None
    dest_type: str = ""
    result: str = ""
    orig_bridge_id: str = ""
    second_bridge_id: str = ""
    dest_bridge_id: str = ""
    dest_app: str = ""


@dataclass(frozen=True, slots=True)
class CallTransferred(ChannelEvent):
    """AMI 1 ``Transfer``: ``chan`` (the transferer) transferred
    ``target_channel`` (``TargetChannel``: the party that stays);
    ``transfer_type`` Blind or Attended."""

    transfer_type: str = ""
    transfer_method: str = ""
    target_channel: str = ""
    target_uniqueid: str = ""
    exten: str = ""
    transfer_context: str = ""


@dataclass(frozen=True, slots=True)
class ChannelsMasqueraded(DomainEvent):
    """AMI 1 ``Masquerade``: ``clone`` takes the place of ``original``
    (followed by ``Rename`` events)."""

    clone: str = ""
    original: str = ""
    clone_state: str = ""
    original_state: str = ""


@dataclass(frozen=True, slots=True)
class ChannelRenamed(ChannelEvent):
    """AMI 1 ``Rename``: ``chan.channel`` is the old name."""

    new_name: str = ""


@dataclass(frozen=True, slots=True)
class CallPickedUp(ChannelEvent):
    """Pickup: ``chan`` picked up the ringing ``target``."""

    target: ChannelSnapshot | None = None


@dataclass(frozen=True, slots=True)
class OriginateResponded(DomainEvent):
    """OriginateResponse (async Originate): ``response`` Success/Failure;
    ``reason`` is Asterisk's AST_CONTROL code (4 answered, 5 busy, 3 no
    answer, 8 congestion, 0 failed)."""

    action_id: str = ""
    response: str = ""
    channel: str = ""
    context: str = ""
    exten: str = ""
    reason: int = 0
    uniqueid: str = ""
    caller_num: str = ""
    caller_name: str = ""


@dataclass(frozen=True, slots=True)
class UnknownEvent(DomainEvent):
    """An event the CTI does not model; kept so counts stay honest."""

    name: str = ""
    fields: tuple[tuple[str, str], ...] = field(default_factory=tuple)


def agent_id_from_interface(interface: str) -> str:
    """``Local/1001@agents`` → ``1001``; ``PJSIP/1002`` → ``1002``;
    ``SIP/1003-000001`` → ``1003``.  Anything else is returned unchanged."""
    if "/" not in interface:
        return interface
    rest = interface.split("/", 1)[1]
    rest = rest.split("@", 1)[0]
    rest = rest.split(";", 1)[0]
    if "-" in rest and interface.startswith(("SIP/", "PJSIP/")):
        rest = rest.rsplit("-", 1)[0]
    return rest

"""Customer calls tracked from domain events, keyed by Asterisk ``linkedid``.
Pure, stdlib only.

:class:`CallTracker.apply` takes one event from :mod:`cti.normalise` and
returns the new immutable :class:`Call` snapshot of the call it touched (or
``None``).  Facts from the recorded Asterisk 22 traces that shape it:

* the customer number is the *caller* channel's ``CallerIDNum`` — the channel
  that joined the queue.  Member channels say ``enter-queue`` (trace 01);
* ``QueueCallerAbandon`` can arrive after Hangup events (trace 03), so an
  ended call stays in a small bounded "recently ended" map where a late
  ``CallerAbandoned`` (or ``AgentCompleted``) still updates the final record;
* a ringall loser gets ``DialEnd CANCEL`` twice and no ``AgentRingNoAnswer``
  (trace 02): a ring ends when the member channel hangs up, not on DialEnd;
* after ``AgentComplete(Reason: transfer)`` the same caller uniqueid joins
  another queue, and the order of the two is racy (trace 07): hold and talk
  times are summed over the queue legs, so order does not matter;
* a call that was ever connected to an agent has outcome ``answered``.

Memory is bounded: at most ``max_calls`` live calls (the oldest is evicted
if Hangups were lost, e.g. across an AMI reconnect) and ``max_ended``
recently ended ones.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, fields
from enum import Enum

from .events import (
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
    ChannelVariableSet,
    DomainEvent,
)

__all__ = ["CallState", "Call", "CallTracker"]


class CallState(str, Enum):
    """``ivr``: in the dialplan, not waiting in a queue nor talking to an
    agent (before the queue, and again after AgentComplete, e.g. during a
    transfer).  ``ringing``: queued while at least one member rings."""

    IVR = "ivr"
    QUEUED = "queued"
    RINGING = "ringing"
    CONNECTED = "connected"
    ENDED = "ended"


_EMPTY: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Call:
    linkedid: str
    caller_num: str = ""
    caller_name: str = ""
    ivr_choice: str = ""
    customer_id: str = ""
    outage_id: str = ""
    queue: str = ""  # the latest queue (after a transfer: the new one)
    state: CallState = CallState.IVR
    agent: str = ""  # the latest connected agent, e.g. "1001"
    started_at: float | None = None
    queued_at: float | None = None  # first queue entry
    answered_at: float | None = None  # first agent connect
    ended_at: float | None = None
    outcome: str = ""  # "" | "answered" | "abandoned" | "unanswered"
    hangup_cause: int | None = None  # Q.850 cause of the caller channel
    hold_time: int = 0  # seconds, summed over queue legs
    talk_time: int = 0  # seconds, summed over queue legs
    complete_reason: str = ""  # latest AgentComplete reason: caller/agent/transfer
    channels: frozenset[str] = _EMPTY  # uniqueids alive
    rang_agents: tuple[str, ...] = ()  # agents rung, first ring order
    caller_uniqueid: str = ""  # the channel that joined the queue
    ringing: frozenset[str] = _EMPTY  # member uniqueids ringing now
    close_reason: str = ""  # set when the tracker closed it itself (resync), e.g. "ended_while_disconnected"

    @property
    def ended(self) -> bool:
        return self.state is CallState.ENDED


_CALL_FIELDS = tuple(f.name for f in fields(Call))
_CALL_SLOTS = tuple((name, getattr(Call, name).__set__) for name in _CALL_FIELDS)
_new = object.__new__


def replace(call: Call, **changes) -> Call:
    """``dataclasses.replace`` for :class:`Call`, without re-running the frozen
    ``__init__`` field by field (there is no ``__post_init__``)."""
    new = _new(Call)
    for name, setter in _CALL_SLOTS:
        setter(new, changes[name] if name in changes else getattr(call, name))
    return new


_IVR_FIELDS = {"IVR_CHOICE": "ivr_choice", "CUSTOMER_ID": "customer_id",
               "OUTAGE_ID": "outage_id"}

_CONNECTED = CallState.CONNECTED
_RINGING = CallState.RINGING
_QUEUED = CallState.QUEUED
_ENDED = CallState.ENDED


class CallTracker:
    """Live calls by linkedid.  Not thread-safe (one event loop feeds it)."""

    def __init__(self, max_calls: int = 10_000, max_ended: int = 1_000) -> None:
        self.max_calls = max_calls
        self.max_ended = max_ended
        self._calls: dict[str, Call] = {}
        self._gone: dict[str, set[str]] = {}  # linkedid -> uniqueids hung up
        self._ended: OrderedDict[str, Call] = OrderedDict()
        self.evicted = 0
        self._handlers = {
            ChannelCreated: self._on_nothing,
            ChannelVariableSet: self._on_variable_set,
            CallerJoinedQueue: self._on_caller_joined_queue,
            CallerLeftQueue: self._on_nothing,
            CallerAbandoned: self._on_caller_abandoned,
            AgentCalled: self._on_agent_called,
            AgentRingNoAnswer: self._on_agent_ring_no_answer,
            AgentConnected: self._on_agent_connected,
            AgentCompleted: self._on_agent_completed,
            ChannelEnteredBridge: self._on_nothing,
            ChannelLeftBridge: self._on_nothing,
            ChannelHungUp: self._on_hung_up,
        }

    # --- queries -------------------------------------------------------
    def get(self, linkedid: str) -> Call | None:
        """A live call, or a recently ended one."""
        call = self._calls.get(linkedid)
        if call is None:
            call = self._ended.get(linkedid)
        return call

    def active(self) -> list[Call]:
        return list(self._calls.values())

    def recently_ended(self) -> list[Call]:
        return list(self._ended.values())

    def __len__(self) -> int:
        return len(self._calls)

    # --- resync (cti/resync.py): after an AMI reconnect --------------------
    def hung_up_uniqueids(self, linkedid: str) -> frozenset[str]:
        """Channels of a live call already seen hanging up."""
        return frozenset(self._gone.get(linkedid, ()))

    def close_call(self, linkedid: str, reason: str, at: float, outcome: str | None = None) -> Call | None:
        """End a live call whose Hangup was never seen (it ended while the AMI
        link was down).  It moves to the recently-ended map, so a late event
        for it is not counted as a new call."""
        call = self._calls.get(linkedid)
        if call is None:
            return None
        if outcome is None:
            outcome = call.outcome or ("answered" if call.answered_at is not None else "")
        new = replace(call, state=_ENDED, ended_at=at, close_reason=reason, outcome=outcome,
                      channels=_EMPTY, ringing=_EMPTY)
        self._finish(new)
        return new

    def adopt(self, call: Call) -> Call:
        """Install ``call`` as the live state of its linkedid (a call found by
        a resync, or a live call corrected from a snapshot)."""
        if call.state is _ENDED:
            self._finish(call)
            return call
        self._ended.pop(call.linkedid, None)
        self._calls[call.linkedid] = call
        gone = self._gone.get(call.linkedid)
        if gone:
            gone -= call.channels
        return call

    # --- the one entry point --------------------------------------------
    def apply(self, event: DomainEvent | None) -> Call | None:
        handler = self._handlers.get(event.__class__)
        if handler is None:
            return None
        chan = event.chan
        uid = chan.uniqueid
        lid = chan.linkedid or uid
        if not lid:
            return None
        call = self._calls.get(lid)
        if call is None:
            ended = self._ended.get(lid)
            if ended is not None:
                return self._late(ended, event)
            if event.__class__ is ChannelHungUp or event.__class__ is ChannelLeftBridge:
                return None  # nothing known about it, nothing to end
            call = Call(linkedid=lid, started_at=event.received_at)
            self._calls[lid] = call
            if len(self._calls) > self.max_calls:
                self._evict_oldest()

        changes: dict = {}
        is_hangup = event.__class__ is ChannelHungUp
        if not is_hangup:
            # channels alive: every uniqueid seen that has not hung up
            if uid and uid not in call.channels:
                gone = self._gone.get(lid)
                if gone is None or uid not in gone:
                    changes["channels"] = call.channels | {uid}
            dest = getattr(event, "dest", None)
            if dest is not None and dest.uniqueid and dest.uniqueid not in call.channels:
                gone = self._gone.get(lid)
                if gone is None or dest.uniqueid not in gone:
                    changes["channels"] = changes.get("channels", call.channels) | {dest.uniqueid}
            # caller identity and IVR variables from the caller channel
            cu = call.caller_uniqueid
            if not cu or cu == uid:
                num = chan.caller_num
                if num and num != call.caller_num and (cu or not call.caller_num):
                    changes["caller_num"] = num
                name = chan.caller_name
                if name and name != call.caller_name and (cu or not call.caller_name):
                    changes["caller_name"] = name
                for k, v in chan.variables:
                    f = _IVR_FIELDS.get(k)
                    if f is not None and v and getattr(call, f) != v:
                        changes[f] = v
        new = handler(call, event, changes)
        if new is None:
            new = replace(call, **changes) if changes else call
        if new is not call:
            if new.state is _ENDED:
                self._finish(new)
            else:
                self._calls[lid] = new
        return new

    # --- handlers: (call, event, changes) -> Call | None ------------------
    # Returning None means "apply ``changes``".

    def _on_nothing(self, call, event, changes):
        return None

    def _on_variable_set(self, call, event, changes):
        cu = call.caller_uniqueid
        if not cu or cu == event.chan.uniqueid:
            f = _IVR_FIELDS.get(event.name)
            if f is not None:
                if getattr(call, f) != event.value:
                    changes[f] = event.value
                else:
                    changes.pop(f, None)
        return None

    def _on_caller_joined_queue(self, call, event, changes):
        chan = event.chan
        changes["caller_uniqueid"] = chan.uniqueid
        if chan.caller_num:
            changes["caller_num"] = chan.caller_num
        if chan.caller_name:
            changes["caller_name"] = chan.caller_name
        changes["queue"] = event.queue
        changes["state"] = _QUEUED
        changes["ringing"] = _EMPTY
        if call.queued_at is None:
            changes["queued_at"] = event.received_at
        return None

    def _on_caller_abandoned(self, call, event, changes):
        changes.update(self._abandon_changes(call, event))
        changes["ringing"] = _EMPTY
        if call.state is _RINGING:
            changes["state"] = _QUEUED
        return None

    @staticmethod
    def _abandon_changes(call, event) -> dict:
        ch: dict = {"hold_time": call.hold_time + event.hold_time}
        if call.outcome != "answered":
            ch["outcome"] = "abandoned"
        if not call.queue and event.queue:
            ch["queue"] = event.queue
        return ch

    def _on_agent_called(self, call, event, changes):
        agent = event.agent
        if agent and agent not in call.rang_agents:
            changes["rang_agents"] = call.rang_agents + (agent,)
        key = event.dest.uniqueid if event.dest is not None and event.dest.uniqueid else agent
        if key:
            changes["ringing"] = call.ringing | {key}
        if call.state is not _CONNECTED:
            changes["state"] = _RINGING
        if event.queue and event.queue != call.queue:
            changes["queue"] = event.queue
        if not call.caller_uniqueid:
            changes["caller_uniqueid"] = event.chan.uniqueid
        return None

    def _on_agent_ring_no_answer(self, call, event, changes):
        dest = event.dest
        key = dest.uniqueid if dest is not None and dest.uniqueid else event.agent
        ringing = call.ringing - {key}
        if ringing != call.ringing:
            changes["ringing"] = ringing
        if not ringing and call.state is _RINGING:
            changes["state"] = _QUEUED
        return None

    def _on_agent_connected(self, call, event, changes):
        changes["state"] = _CONNECTED
        changes["agent"] = event.agent
        changes["outcome"] = "answered"
        changes["hold_time"] = call.hold_time + event.hold_time
        changes["ringing"] = _EMPTY
        if event.queue:
            changes["queue"] = event.queue
        if call.answered_at is None:
            changes["answered_at"] = event.received_at
        if not call.caller_uniqueid:
            changes["caller_uniqueid"] = event.chan.uniqueid
        return None

    def _on_agent_completed(self, call, event, changes):
        changes.update(self._complete_changes(call, event))
        # the caller is back in the dialplan (transfer, survey, hang-up) --
        # unless this is a late AgentComplete of an earlier queue leg (the
        # transfer race of trace 07): then the newer state stands.
        if (call.state is _CONNECTED
                and (not event.queue or event.queue == call.queue)
                and (not event.agent or event.agent == call.agent)):
            changes["state"] = CallState.IVR
        return None

    @staticmethod
    def _complete_changes(call, event) -> dict:
        ch: dict = {"talk_time": call.talk_time + event.talk_time,
                    "complete_reason": event.reason}
        if call.answered_at is None and call.outcome != "answered":
            # connect not seen (tracker started mid-call): still answered
            ch["outcome"] = "answered"
            ch["hold_time"] = call.hold_time + event.hold_time
            if not call.agent:
                ch["agent"] = event.agent
        if not call.queue and event.queue:  # first seen at its AgentComplete (tracker started mid-call)
            ch["queue"] = event.queue
        return ch

    def _on_hung_up(self, call, event, changes):
        uid = event.chan.uniqueid
        lid = call.linkedid
        gone = self._gone.setdefault(lid, set())
        gone.add(uid)
        channels = call.channels - {uid}
        changes["channels"] = channels
        if uid in call.ringing:
            changes["ringing"] = call.ringing - {uid}
        cu = call.caller_uniqueid
        if cu == uid or (not cu and call.hangup_cause is None):
            changes["hangup_cause"] = event.cause
        if not channels:
            changes["state"] = _ENDED
            changes["ended_at"] = event.received_at
            changes["ringing"] = _EMPTY
            if not call.outcome:
                if call.answered_at is not None:
                    changes["outcome"] = "answered"
                elif call.queued_at is not None:
                    # may still become "abandoned" by a late QueueCallerAbandon
                    changes["outcome"] = "unanswered"
        return None

    # --- end of life -------------------------------------------------------
    def _finish(self, call: Call) -> None:
        lid = call.linkedid
        self._calls.pop(lid, None)
        self._gone.pop(lid, None)
        self._ended[lid] = call
        self._ended.move_to_end(lid)
        while len(self._ended) > self.max_ended:
            self._ended.popitem(last=False)

    def _late(self, ended: Call, event) -> Call | None:
        """An event for a call whose last channel already hung up."""
        cls = event.__class__
        if cls is CallerAbandoned:
            ch = self._abandon_changes(ended, event)
        elif cls is AgentCompleted:
            ch = self._complete_changes(ended, event)
        else:
            return None
        new = replace(ended, **ch)
        self._ended[ended.linkedid] = new
        return new

    def _evict_oldest(self) -> None:
        lid = next(iter(self._calls))
        self._calls.pop(lid)
        self._gone.pop(lid, None)
        self.evicted += 1

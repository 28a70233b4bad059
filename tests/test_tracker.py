"""Call tracking from real Asterisk 22 traces (tests/fixtures/ami-traces).

Ground truth: the ``.txt`` notes and ``.queue_log`` beside each trace.
Events are replayed in the recorded socket-read boundaries with the recorded
arrival times as ``received_at``; one test replays over real TCP.
"""
from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cti.events import (
    AgentCompleted,
    AgentConnected,
    CallerAbandoned,
    CallerJoinedQueue,
    ChannelCreated,
    ChannelHungUp,
    ChannelSnapshot,
    UnknownEvent,
)
from cti.frame import FrameReader
from cti.normalise import Normaliser
from cti.tracker import Call, CallState, CallTracker

A22 = Path(__file__).parent / "fixtures" / "ami-traces" / "asterisk-22"
CHUNKED = sorted(p for p in A22.glob("*.ami") if p.with_name(p.name + ".chunks").exists())


def read_chunks(path: Path) -> list[tuple[float, bytes]]:
    data = path.read_bytes()
    out = []
    for line in path.with_name(path.name + ".chunks").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            t, off, length = line.split()
            out.append((float(t), data[int(off): int(off) + int(length)]))
    return out


def trace(prefix: str) -> Path:
    (path,) = [p for p in CHUNKED if p.name.startswith(prefix)]
    return path


def events_of(prefix: str) -> list:
    reader = FrameReader()
    n = Normaliser()
    out = []
    for t, chunk in read_chunks(trace(prefix)):
        for f in reader.feed(chunk):
            ev = n(f, t)
            if ev is not None and not isinstance(ev, UnknownEvent):
                out.append(ev)
    assert n.errors == 0
    return out


def run(events, tracker: CallTracker | None = None):
    """Apply events; return (tracker, snapshots returned by apply)."""
    tracker = tracker or CallTracker()
    snaps = [s for ev in events if (s := tracker.apply(ev)) is not None]
    return tracker, snaps


def final_calls(snaps: list[Call]) -> dict[str, Call]:
    out: dict[str, Call] = {}
    for s in snaps:
        out[s.linkedid] = s
    return out


def states(snaps: list[Call]) -> list[str]:
    seq: list[str] = []
    for s in snaps:
        if not seq or seq[-1] != s.state.value:
            seq.append(s.state.value)
    return seq


# --- trace 01: IVR → repair queue → agent 1001 answers → agent hangs up -------

def test_trace01_ivr_to_queue_answered():
    tracker, snaps = run(events_of("01-"))
    calls = final_calls(snaps)
    assert list(calls) == ["1795374638.0"]
    call = calls["1795374638.0"]
    assert call.caller_num == "13800138000"
    assert call.caller_name == "张三"
    assert call.ivr_choice == "repair"
    assert call.customer_id == "3100012345"
    assert call.outage_id == "OUT-20261122-0042"
    assert call.queue == "repair"
    assert call.agent == "1001"
    assert call.state is CallState.ENDED
    assert call.outcome == "answered"
    assert (call.hold_time, call.talk_time) == (2, 5)  # queue_log CONNECT|2, COMPLETEAGENT|2|5
    assert call.complete_reason == "agent"
    assert call.hangup_cause == 16
    assert call.rang_agents == ("1001",)
    assert call.channels == frozenset() and call.ringing == frozenset()
    assert call.caller_uniqueid == "1795374638.1"
    # times from the recorded reads: queued ~5 s after start, answered 2 s later
    assert call.started_at < call.queued_at < call.answered_at < call.ended_at
    assert call.answered_at - call.queued_at == pytest.approx(2, abs=0.6)
    assert call.ended_at - call.answered_at == pytest.approx(5, abs=0.6)
    assert states(snaps) == ["ivr", "queued", "ringing", "connected", "ivr", "ended"]
    # ended calls leave the live map; the final snapshot stays reachable
    assert tracker.active() == [] and len(tracker) == 0
    assert tracker.get("1795374638.0") == call


def test_caller_number_is_the_callers_not_the_member_channels():
    _, snaps = run(events_of("01-"))
    assert {s.caller_num for s in snaps} <= {"", "13800138000"}
    assert "enter-queue" not in {s.caller_num for s in snaps}
    # the member channels do exist in the call while it is connected
    connected = [s for s in snaps if s.state is CallState.CONNECTED]
    assert any(len(s.channels) == 4 for s in connected)


def test_ivr_variables_follow_the_ivr_not_the_dialplan_default():
    _, snaps = run(events_of("01-"))
    ids = [s.customer_id for s in snaps if s.customer_id]
    # caller-setup sets a default, the IVR then identifies the customer
    assert ids[0] == "3100038000" and ids[-1] == "3100012345"
    queued = next(s for s in snaps if s.state is CallState.QUEUED)
    assert (queued.ivr_choice, queued.customer_id, queued.outage_id) == (
        "repair", "3100012345", "OUT-20261122-0042")


# --- trace 02: ringall, caller hangs up during talk ----------------------------

def test_trace02_complaint_caller_hangs_up_during_talk():
    _, snaps = run(events_of("02-"))
    (call,) = final_calls(snaps).values()
    assert (call.caller_num, call.caller_name) == ("13800138000", "国网客户")
    assert call.queue == "complaint" and call.ivr_choice == "complaint"
    assert call.agent == "1002"
    assert call.rang_agents == ("1003", "1002")
    assert call.complete_reason == "caller"
    assert (call.hold_time, call.talk_time) == (2, 9)  # COMPLETECALLER|2|9
    assert call.outcome == "answered" and call.state is CallState.ENDED
    assert call.hangup_cause == 16


def test_ringall_loser_is_no_longer_ringing_without_ring_no_answer():
    # trace 02: 1003 loses the ringall: DialEnd CANCEL twice, no AgentRingNoAnswer
    _, snaps = run(events_of("02-"))
    ringing = [s for s in snaps if s.state is CallState.RINGING]
    assert max(len(s.ringing) for s in ringing) == 2
    connected = next(s for s in snaps if s.state is CallState.CONNECTED)
    assert connected.ringing == frozenset() and connected.agent == "1002"


# --- trace 03: rings, no answer, caller abandons --------------------------------

def test_trace03_enquiry_abandon_after_ring():
    _, snaps = run(events_of("03-"))
    (call,) = final_calls(snaps).values()
    assert (call.caller_num, call.caller_name) == ("13800138000", "李四")
    assert call.queue == "enquiry"
    assert call.outcome == "abandoned"
    assert call.hold_time == 19  # queue_log ABANDON|1|1|19
    assert call.agent == "" and call.answered_at is None
    assert call.rang_agents == ("1003", "1004")
    assert call.state is CallState.ENDED
    assert states(snaps) == ["ivr", "queued", "ringing", "queued", "ringing", "queued", "ended"]


def test_ring_no_answer_puts_the_call_back_to_queued():
    _, snaps = run(events_of("03-"))
    seq = [(s.state.value, tuple(sorted(s.ringing))) for s in snaps]
    i = seq.index(("ringing", ("1795374669.12",)))
    assert seq[i + 1][0] == "queued"


def test_abandon_after_hangup_still_counts_as_abandoned():
    # Asterisk may send QueueCallerAbandon after the last Hangup (trace 03 has
    # it after the ;1 and member hangups): move it after ALL of them.
    events = events_of("03-")
    (abandon,) = [e for e in events if isinstance(e, CallerAbandoned)]
    reordered = [e for e in events if e is not abandon] + [abandon]
    tracker = CallTracker()
    snaps = [tracker.apply(e) for e in reordered]
    ended = snaps[-2]
    assert ended.state is CallState.ENDED and ended.outcome == "unanswered"
    late = snaps[-1]
    assert late.state is CallState.ENDED
    assert late.outcome == "abandoned" and late.hold_time == 19
    assert tracker.get(late.linkedid) == late
    assert tracker.active() == []


def test_late_abandon_does_not_undo_an_answer():
    events = events_of("01-")
    join = next(e for e in events if isinstance(e, CallerJoinedQueue))
    abandon = CallerAbandoned(999.0, join.chan, "repair", 1, 1, 7)
    tracker, _ = run(events)
    late = tracker.apply(abandon)
    assert late.outcome == "answered" and late.hold_time == 2 + 7


def test_late_unrelated_event_for_an_ended_call_is_ignored():
    events = events_of("01-")
    tracker, _ = run(events)
    hang = [e for e in events if isinstance(e, ChannelHungUp)][-1]
    assert tracker.apply(hang) is None
    assert tracker.active() == []


def test_recently_ended_map_is_bounded():
    tracker = CallTracker(max_ended=3)
    for i in range(10):
        chan = ChannelSnapshot(channel=f"SIP/a-{i}", uniqueid=f"{i}.1", linkedid=f"{i}.1")
        tracker.apply(ChannelCreated(float(i), chan))
        tracker.apply(ChannelHungUp(float(i) + 0.5, chan, 16))
    assert [c.linkedid for c in tracker.recently_ended()] == ["7.1", "8.1", "9.1"]
    assert tracker.get("1.1") is None


def test_live_map_is_bounded_when_hangups_are_lost():
    tracker = CallTracker(max_calls=50)
    for i in range(500):
        chan = ChannelSnapshot(channel=f"SIP/a-{i}", uniqueid=f"{i}.1", linkedid=f"{i}.1")
        tracker.apply(ChannelCreated(float(i), chan))
    assert len(tracker) == 50 and tracker.evicted == 450
    assert tracker.active()[0].linkedid == "450.1"


# --- trace 07: blind transfer to another queue ----------------------------------

def test_trace07_blind_transfer_into_complaint_queue():
    _, snaps = run(events_of("07-"))
    (call,) = final_calls(snaps).values()
    assert call.caller_num == "13800138000" and call.caller_name == "张三"
    assert call.queue == "complaint"  # the latest queue
    assert call.ivr_choice == "complaint"  # Set(__IVR_CHOICE=complaint) in hotline-xfer
    assert call.agent == "1002"
    assert call.rang_agents == ("1001", "1003", "1002")
    assert call.outcome == "answered" and call.complete_reason == "caller"
    # queue_log: repair CONNECT|2, BLINDTRANSFER ..|2|3; complaint CONNECT|2, COMPLETECALLER|2|17
    assert (call.hold_time, call.talk_time) == (2 + 2, 3 + 17)
    assert states(snaps) == ["ivr", "queued", "ringing", "connected", "ivr", "queued",
                             "ringing", "connected", "ivr", "ended"]
    transfer = next(s for s in snaps if s.complete_reason == "transfer")
    assert transfer.agent == "1001" and transfer.queue == "repair"


def test_transfer_race_agent_complete_after_the_new_queue_join():
    # trace 07 notes: in another run AgentComplete(transfer) came AFTER the
    # transferee's QueueCallerJoin, without Dest* headers.
    events = events_of("07-")
    complete = next(e for e in events if isinstance(e, AgentCompleted) and e.reason == "transfer")
    complete = dataclasses.replace(complete, dest=None)
    events = [e for e in events if not (isinstance(e, AgentCompleted) and e.reason == "transfer")]
    join2 = [i for i, e in enumerate(events) if isinstance(e, CallerJoinedQueue)][1]
    events.insert(join2 + 1, complete)
    tracker = CallTracker()
    snaps = [tracker.apply(e) for e in events]
    after = snaps[join2 + 1]
    assert after.state is CallState.QUEUED and after.queue == "complaint"
    assert after.complete_reason == "transfer"
    final = snaps[-1]
    assert final.state is CallState.ENDED and final.outcome == "answered"
    assert (final.agent, final.hold_time, final.talk_time) == ("1002", 4, 20)


# --- more traces -----------------------------------------------------------------

def test_trace12_recorded_call_without_stopmixmonitor():
    _, snaps = run(events_of("12-"))
    (call,) = final_calls(snaps).values()
    assert (call.caller_name, call.queue, call.agent) == ("国网客户", "repair", "1001")
    assert (call.hold_time, call.talk_time, call.complete_reason) == (2, 5, "agent")
    assert call.outcome == "answered" and call.state is CallState.ENDED
    assert call.outage_id == "OUT-20261122-0042"


def test_trace11_ivr_hangup_never_queued_has_no_queue_outcome():
    _, snaps = run(events_of("11-"))
    (call,) = final_calls(snaps).values()
    assert call.state is CallState.ENDED
    assert call.outcome == "" and call.queue == "" and call.queued_at is None
    assert call.caller_num == "13800138000" and call.caller_name == "张三"


def test_trace06_one_answered_two_abandoned_while_waiting():
    _, snaps = run(events_of("06-"))
    calls = final_calls(snaps)
    by_num = {c.caller_num: c for c in calls.values()}
    assert set(by_num) == {"13800138000", "13800138011", "13800138012"}
    assert by_num["13800138000"].outcome == "answered"
    assert by_num["13800138000"].agent == "1001"
    assert (by_num["13800138011"].outcome, by_num["13800138011"].caller_name) == (
        "abandoned", "国网客户")
    assert (by_num["13800138012"].outcome, by_num["13800138012"].caller_name) == (
        "abandoned", "赵六")
    assert all(c.state is CallState.ENDED for c in calls.values())


@pytest.mark.parametrize("path", CHUNKED, ids=lambda p: p.stem)
def test_every_trace_leaves_no_live_call(path):
    tracker, snaps = run(events_of(path.name[:3]))
    assert tracker.active() == []
    assert all(s.state is CallState.ENDED for s in final_calls(snaps).values())


# --- the objects -----------------------------------------------------------------

def test_calls_are_immutable_snapshots():
    tracker = CallTracker()
    events = events_of("01-")
    first = tracker.apply(events[0])
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.state = CallState.ENDED  # type: ignore[misc]
    second = tracker.apply(events[1])
    assert first is not second and first.channels == frozenset({"1795374638.0"})
    assert second.channels == frozenset({"1795374638.0", "1795374638.1"})


def test_unknown_events_and_none_are_ignored():
    tracker = CallTracker()
    assert tracker.apply(None) is None
    assert tracker.apply(UnknownEvent(0.0, "Newexten", ())) is None
    chan = ChannelSnapshot(channel="", uniqueid="", linkedid="")
    assert tracker.apply(ChannelCreated(0.0, chan)) is None
    assert tracker.apply(ChannelHungUp(0.0, ChannelSnapshot("x", "1.1", "1.1"))) is None
    assert len(tracker) == 0


def test_tracker_started_mid_call_still_records_the_answer():
    events = events_of("01-")
    start = next(i for i, e in enumerate(events) if isinstance(e, AgentConnected)) + 1
    tracker, snaps = run(events[start:])
    (call,) = final_calls(snaps).values()
    assert call.outcome == "answered" and call.agent == "1001" and call.talk_time == 5
    assert call.state is CallState.ENDED


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.randoms(use_true_random=False))
def test_any_order_of_real_events_never_raises_and_stays_bounded(rnd):
    events = events_of("07-") + events_of("03-")
    rnd.shuffle(events)
    tracker = CallTracker(max_calls=3, max_ended=3)
    for e in events:
        snap = tracker.apply(e)
        assert snap is None or isinstance(snap, Call)
    assert len(tracker) <= 3 and len(tracker.recently_ended()) <= 3


# --- over real TCP, as the service reads it --------------------------------------

async def test_trace01_replayed_over_tcp():
    chunks = read_chunks(trace("01-"))

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _, chunk in chunks:  # the recorded read boundaries, without the waits
            writer.write(chunk)
            await writer.drain()
            await asyncio.sleep(0)
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        frames = FrameReader()
        normalise = Normaliser()
        tracker = CallTracker()
        loop = asyncio.get_running_loop()
        snaps = []
        while data := await asyncio.wait_for(reader.read(65536), timeout=10):
            for frame in frames.feed(data):
                snap = tracker.apply(normalise(frame, loop.time()))
                if snap is not None:
                    snaps.append(snap)
        writer.close()
        await writer.wait_closed()
    finally:
        server.close()
        await server.wait_closed()

    assert frames.banner == "Asterisk Call Manager/11.0.0"
    assert frames.stats.frames == 225 and normalise.errors == 0
    (call,) = final_calls(snaps).values()
    assert (call.caller_num, call.caller_name, call.agent) == ("13800138000", "张三", "1001")
    assert (call.ivr_choice, call.customer_id, call.outage_id) == (
        "repair", "3100012345", "OUT-20261122-0042")
    assert (call.hold_time, call.talk_time, call.outcome) == (2, 5, "answered")
    assert call.state is CallState.ENDED and tracker.active() == []

"""AMI frames → domain events, checked against real recorded traces.

All data comes from tests/fixtures/ami-traces (a fresh clone has no
../shared): real Asterisk 22.10.1 sessions replayed in their recorded socket
read boundaries (``.ami.chunks``), plus the cacofonisk (AMI 2 and AMI 1) and
panoramisk corpora, which must go through without raising.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from cti.events import (
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
    OriginateResponded,
    UnknownEvent,
)
from cti.frame import Frame, FrameReader, _parse_slow, decode_frame_bytes, parse_frame
from cti.normalise import Normaliser, normalise
from cti.tracker import CallTracker

FIXTURES = Path(__file__).parent / "fixtures" / "ami-traces"
A22 = FIXTURES / "asterisk-22"
AMI_TRACES = sorted(A22.glob("*.ami"))
CHUNKED_TRACES = [p for p in AMI_TRACES if p.with_name(p.name + ".chunks").exists()]
CACOFONISK = sorted((FIXTURES / "cacofonisk").rglob("*.json")) + sorted(
    (FIXTURES / "cacofonisk-legacy-ami1").rglob("*.json"))
PANORAMISK = sorted((FIXTURES / "panoramisk" / "fixtures").glob("*.yaml"))

MODELLED = {
    "Newchannel": ChannelCreated,
    "QueueCallerJoin": CallerJoinedQueue,
    "QueueCallerLeave": CallerLeftQueue,
    "QueueCallerAbandon": CallerAbandoned,
    "AgentCalled": AgentCalled,
    "AgentConnect": AgentConnected,
    "AgentComplete": AgentCompleted,
    "AgentRingNoAnswer": AgentRingNoAnswer,
    "BridgeEnter": ChannelEnteredBridge,
    "BridgeLeave": ChannelLeftBridge,
    "Hangup": ChannelHungUp,
}


# --- replay helpers ----------------------------------------------------------

def read_chunks(path: Path) -> list[tuple[float, bytes]]:
    """(arrival offset, bytes) per recorded socket read."""
    data = path.read_bytes()
    chunks = []
    for line in path.with_name(path.name + ".chunks").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        t, off, length = line.split()
        chunks.append((float(t), data[int(off): int(off) + int(length)]))
    return chunks


def replay_frames(path: Path) -> list[tuple[float, Frame]]:
    reader = FrameReader()
    out = []
    for t, chunk in read_chunks(path):
        out.extend((t, f) for f in reader.feed(chunk))
    return out


def replay_events(path: Path, normaliser: Normaliser | None = None):
    n = normaliser or Normaliser()
    return [ev for t, f in replay_frames(path) if (ev := n(f, t)) is not None]


def trace(prefix: str) -> Path:
    (path,) = [p for p in AMI_TRACES if p.name.startswith(prefix)]
    return path


def frame_of(*headers: tuple[str, str]) -> Frame:
    return Frame(tuple(headers))


# --- the fixture folder ------------------------------------------------------

def test_fixtures_are_self_contained():
    assert (FIXTURES / "SOURCES.md").is_file()
    index = json.loads((FIXTURES / "index.json").read_text())
    assert index
    for folder in ("cacofonisk", "cacofonisk-legacy-ami1", "panoramisk"):
        assert (FIXTURES / folder / "LICENSE").is_file()
    assert (A22 / "README.md").is_file()
    assert (A22 / "config" / "manager.conf").is_file()
    assert len(CHUNKED_TRACES) >= 9
    assert len(CACOFONISK) == 106 and len(PANORAMISK) == 17


@pytest.mark.parametrize("path", CHUNKED_TRACES, ids=lambda p: p.stem)
def test_chunks_cover_the_trace_exactly(path):
    chunks = read_chunks(path)
    assert b"".join(c for _, c in chunks) == path.read_bytes()
    times = [t for t, _ in chunks]
    assert times == sorted(times)


@pytest.mark.parametrize("path", CHUNKED_TRACES, ids=lambda p: p.stem)
def test_chunked_reads_give_the_same_frames_as_one_read(path):
    whole = FrameReader().feed(path.read_bytes())
    assert [f for _, f in replay_frames(path)] == whole
    # and byte by byte (the worst split a socket can produce)
    reader = FrameReader()
    data = path.read_bytes()
    if len(data) < 120_000:
        one = [f for i in range(len(data)) for f in reader.feed(data[i:i + 1])]
        assert one == whole


# --- every real frame --------------------------------------------------------

@pytest.mark.parametrize("path", AMI_TRACES, ids=lambda p: p.stem)
def test_every_asterisk22_frame_normalises_without_error(path):
    n = Normaliser()
    frames = replay_frames(path) if path in CHUNKED_TRACES else [
        (0.0, f) for f in FrameReader().feed(path.read_bytes())]
    events = [n(f, t) for t, f in frames]
    assert n.errors == 0
    assert n.events + n.unknown + n.ignored == len(frames)
    # one typed event per modelled AMI event on the wire, none lost
    raw = path.read_bytes()
    got = Counter(type(e) for e in events if e is not None)
    for name, cls in MODELLED.items():
        assert got[cls] == raw.count(b"Event: %s\r\n" % name.encode()), name
    # every Response frame -> None; every Event frame -> an event
    for (_, f), ev in zip(frames, events):
        assert (ev is None) == (f.event is None)


def test_frame_parser_keeps_chinese_and_repeated_headers():
    frames = [f for _, f in replay_frames(trace("01-"))]
    join = next(f for f in frames if f.event == "QueueCallerJoin")
    assert join.get("CallerIDName") == "张三"
    assert join.get_all("ChanVariable") == [
        "IVR_CHOICE=repair", "CUSTOMER_ID=3100012345", "OUTAGE_ID=OUT-20261122-0042"]
    assert join.variables() == {"IVR_CHOICE": "repair", "CUSTOMER_ID": "3100012345",
                                "OUTAGE_ID": "OUT-20261122-0042"}
    assert all(f.encoding == "utf-8" and f.bad_lines == 0 for f in frames)


# --- trace 01: IVR to queue, answered ----------------------------------------

def test_trace01_events_carry_caller_ivr_vars_and_agent():
    events = replay_events(trace("01-"))
    created = [e for e in events if isinstance(e, ChannelCreated)]
    assert [e.chan.channel for e in created] == [
        "Local/ivr@hotline-00000000;1", "Local/ivr@hotline-00000000;2",
        "Local/1001@agents-00000001;1", "Local/1001@agents-00000001;2"]
    assert created[0].chan.caller_num == "" and created[0].chan.caller_name == ""  # <unknown>
    assert {e.linkedid for e in created} == {"1795374638.0"}
    assert created[0].chan.var("IVR_CHOICE") == ""

    (join,) = [e for e in events if isinstance(e, CallerJoinedQueue)]
    assert join.queue == "repair" and join.position == 1
    assert join.chan.caller_num == "13800138000" and join.chan.caller_name == "张三"
    assert join.chan.uniqueid == "1795374638.1" and join.linkedid == "1795374638.0"
    assert join.chan.var("IVR_CHOICE") == "repair"
    assert join.chan.var("CUSTOMER_ID") == "3100012345"
    assert join.chan.var("OUTAGE_ID") == "OUT-20261122-0042"

    (called,) = [e for e in events if isinstance(e, AgentCalled)]
    assert called.agent == "1001" and called.interface == "Local/1001@agents"
    assert called.dest.channel == "Local/1001@agents-00000001;1"
    assert called.dest.uniqueid == "1795374643.2"

    (conn,) = [e for e in events if isinstance(e, AgentConnected)]
    assert (conn.queue, conn.agent, conn.hold_time, conn.ring_time) == ("repair", "1001", 2, 2)
    assert conn.chan.caller_num == "13800138000"
    assert conn.dest.caller_num == "enter-queue"  # the member channel: not the customer
    assert conn.dest.var("IVR_CHOICE") == "repair"  # DestChanVariable

    (done,) = [e for e in events if isinstance(e, AgentCompleted)]
    assert (done.reason, done.hold_time, done.talk_time, done.agent) == ("agent", 2, 5, "1001")

    hangups = [e for e in events if isinstance(e, ChannelHungUp)]
    assert [h.cause for h in hangups] == [16, 16, 16, 16]
    assert hangups[-1].cause_txt == "Normal Clearing"

    enters = [e for e in events if isinstance(e, ChannelEnteredBridge)]
    assert len(enters) == 2 and len({e.bridge_id for e in enters}) == 1


def test_varset_strips_inheritance_underscores():
    sets = [e for e in replay_events(trace("01-")) if isinstance(e, ChannelVariableSet)]
    wire = trace("01-").read_bytes()
    assert b"Variable: __IVR_CHOICE\r\n" in wire
    assert {e.name for e in sets} == {"IVR_CHOICE", "CUSTOMER_ID", "OUTAGE_ID"}
    caller = [(e.name, e.value) for e in sets if e.uniqueid == "1795374638.1"]
    assert caller == [
        ("CUSTOMER_ID", "3100038000"), ("IVR_CHOICE", "repair"),
        ("CUSTOMER_ID", "3100012345"), ("OUTAGE_ID", "OUT-20261122-0042"),
        ("IVR_CHOICE", "repair")]


def test_other_varsets_are_unknown_events_with_their_headers():
    events = replay_events(trace("12-"))
    names = [dict(e.fields).get("Variable") for e in events
             if isinstance(e, UnknownEvent) and e.name == "VarSet"]
    assert names  # Newexten-time VarSets the CTI does not model
    assert "IVR_CHOICE" not in names and "__IVR_CHOICE" not in names
    # MIXMONITOR_FILENAME is modelled for the recordings index (issue 7)
    assert "MIXMONITOR_FILENAME" not in names


def test_received_at_is_the_read_time():
    events = replay_events(trace("01-"))
    assert events[0].received_at < 0.01
    (join,) = [e for e in events if isinstance(e, CallerJoinedQueue)]
    (conn,) = [e for e in events if isinstance(e, AgentConnected)]
    assert conn.received_at - join.received_at == pytest.approx(2.0, abs=0.6)


def test_trace03_abandon_and_ring_no_answer():
    events = replay_events(trace("03-"))
    (rna,) = [e for e in events if isinstance(e, AgentRingNoAnswer)]
    assert (rna.agent, rna.ring_time, rna.queue) == ("1003", 15000, "enquiry")
    (ab,) = [e for e in events if isinstance(e, CallerAbandoned)]
    assert (ab.queue, ab.position, ab.original_position, ab.hold_time) == ("enquiry", 1, 1, 19)
    assert ab.chan.caller_name == "李四"


def test_trace07_agent_complete_reason_transfer_then_new_queue():
    events = replay_events(trace("07-"))
    kinds = [(type(e).__name__, getattr(e, "queue", ""), getattr(e, "reason", ""))
             for e in events if isinstance(e, (CallerJoinedQueue, AgentCompleted))]
    assert kinds == [("CallerJoinedQueue", "repair", ""),
                     ("AgentCompleted", "repair", "transfer"),
                     ("CallerJoinedQueue", "complaint", ""),
                     ("AgentCompleted", "complaint", "caller")]


# --- rules on synthetic frames -------------------------------------------------

def test_response_frames_yield_none():
    n = Normaliser()
    assert n(frame_of(("Response", "Success"), ("ActionID", "x")), 1.0) is None
    assert n(frame_of(("Action", "Login")), 1.0) is None
    assert n(Frame(()), 1.0) is None
    assert n.ignored == 3 and n.errors == 0


def test_event_with_response_header_is_an_event():
    ev = normalise(frame_of(("Event", "OriginateResponse"), ("Response", "Failure")), 2.0)
    assert isinstance(ev, OriginateResponded) and ev.response == "Failure"
    ev = normalise(frame_of(("Event", "UserEvent"), ("Response", "x")), 2.0)
    assert isinstance(ev, UnknownEvent) and ev.name == "UserEvent"
    assert ev.fields == (("Event", "UserEvent"), ("Response", "x"))


def test_malformed_ints_become_zero_and_missing_fields_empty():
    ev = normalise(frame_of(("Event", "AgentConnect"), ("HoldTime", "x2"),
                            ("RingTime", ""), ("ChannelState", "<unknown>")), 3.0)
    assert isinstance(ev, AgentConnected)
    assert (ev.hold_time, ev.ring_time, ev.chan.state) == (0, 0, 0)
    assert (ev.chan.channel, ev.uniqueid, ev.linkedid, ev.queue, ev.agent) == ("", "", "", "", "")
    assert ev.dest is None
    hang = normalise(frame_of(("Event", "Hangup"), ("Cause", "16.0"), ("Uniqueid", "1.1")), 1)
    assert hang.cause == 16 and hang.linkedid == "1.1"


def test_unknown_caller_id_becomes_empty():
    ev = normalise(frame_of(("Event", "Newchannel"), ("CallerIDNum", "<unknown>"),
                            ("CallerIDName", "<unknown>"), ("ConnectedLineNum", "<unknown>"),
                            ("Uniqueid", "9.1"), ("Linkedid", "9.0")), 0.0)
    assert (ev.chan.caller_num, ev.chan.caller_name, ev.chan.connected_num) == ("", "", "")


def test_ami1_shapes_are_tolerated():
    # UniqueID casing (Dial, MusicOnHold in AMI 1), no Linkedid
    ev = normalise(frame_of(("Event", "Hangup"), ("UniqueID", "1414510600.0"),
                            ("Channel", "SIP/x-1"), ("CallerIDnum", "254")), 0.0)
    assert ev.uniqueid == "1414510600.0" and ev.linkedid == "1414510600.0"
    assert ev.chan.caller_num == "254"
    # AMI 1 AgentConnect: Member instead of Interface, DestinationChannel
    ev = normalise(frame_of(("Event", "AgentCalled"), ("AgentCalled", "Local/1002@agents"),
                            ("DestinationChannel", "Local/1002@agents-01;1"),
                            ("Uniqueid", "5.1")), 0.0)
    assert ev.agent == "1002" and ev.dest.channel == "Local/1002@agents-01;1"
    ev = normalise(frame_of(("Event", "AgentConnect"), ("Member", "SIP/1003"),
                            ("HoldTime", "9"), ("Uniqueid", "5.1")), 0.0)
    assert ev.agent == "1003" and ev.hold_time == 9


def test_legacy_chanvariable_with_channel_in_the_key():
    ev = normalise(frame_of(("Event", "Newchannel"), ("Uniqueid", "1.2"),
                            ("ChanVariable(SIP/a-01)", "IVR_CHOICE=repair")), 0.0)
    assert ev.chan.var("IVR_CHOICE") == "repair"


def test_normaliser_counts_errors_instead_of_raising():
    class Weird:
        @property
        def headers(self):
            raise RuntimeError("boom")

    n = Normaliser()
    assert n(Weird(), 0.0) is None  # type: ignore[arg-type]
    assert n(None, 0.0) is None  # type: ignore[arg-type]
    assert n.errors == 2


# --- the other corpora: nothing raises -----------------------------------------

def cacofonisk_frames(path: Path) -> list[Frame]:
    return [Frame(tuple((k, str(v)) for k, v in msg.items() if k != "content"))
            for msg in json.loads(path.read_text())]


@pytest.mark.parametrize("path", CACOFONISK, ids=lambda p: f"{p.parent.parent.parent.name}/{p.stem}")
def test_cacofonisk_fixture_goes_through_normalise_and_tracker(path):
    n = Normaliser()
    tracker = CallTracker()
    frames = cacofonisk_frames(path)
    for i, f in enumerate(frames):
        tracker.apply(n(f, float(i)))
    assert n.errors == 0
    assert n.events > 0
    hangups = sum(1 for f in frames if f.event == "Hangup")
    assert hangups > 0
    # every call we saw start has an end; AMI 1 has no Linkedid (one call per
    # channel), which still works
    assert len(tracker.active()) <= sum(1 for f in frames if f.event == "Newchannel")


@pytest.mark.parametrize("path", PANORAMISK, ids=lambda p: p.stem)
def test_panoramisk_raw_fixture_goes_through_reader_normalise_and_tracker(path):
    reader = FrameReader()
    n = Normaliser()
    tracker = CallTracker()
    data = path.read_bytes()
    frames = reader.feed(data) + reader.feed(b"\n\n")  # last frame may lack its blank line
    assert frames
    for f in frames:
        tracker.apply(n(f, 0.0))
    assert n.errors == 0
    assert n.events + n.unknown + n.ignored == len(frames)


def test_panoramisk_command_body_is_kept():
    data = (FIXTURES / "panoramisk" / "fixtures" / "command_core_show_version.yaml").read_bytes()
    frames = FrameReader().feed(data + b"\n\n")
    follows = [f for f in frames if f.response == "Follows"]
    assert follows and "11.11.0" in follows[0].body


# --- the parser's fast path is exactly the line-by-line path ------------------

_line = st.one_of(
    st.builds(lambda k, v: f"{k}: {v}",
              st.sampled_from(["Event", "Channel", "Uniqueid", "ChanVariable", "CallerIDName",
                               "Response", "Value", "Cause-txt"]),
              st.text(alphabet="ab :=\r/;张三<>\t", max_size=12)),
    st.text(alphabet="ab: \t\r张", max_size=10),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_line, min_size=0, max_size=8), st.sampled_from(["\r\n", "\n"]),
       st.sampled_from(["", "\r", "\r\n"]))
def test_parse_frame_fast_path_equals_slow_path(lines, eol, tail):
    raw = (eol.join(lines) + tail).encode("utf-8")
    text, enc = decode_frame_bytes(raw)
    assert parse_frame(raw) == _parse_slow(text, enc)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.binary(max_size=400))
def test_parse_frame_fast_path_equals_slow_path_on_bytes(a, b):
    for raw in (a, a + b"\r\n" + b, b"Event: X\r\n" + a):
        text, enc = decode_frame_bytes(raw)
        assert parse_frame(raw) == _parse_slow(text, enc)


def reference_frames(data: bytes) -> list[Frame]:
    """The reader's contract, written the slow obvious way: a frame ends at
    "\\n\\r\\n" or "\\n\\n"; each frame is parsed line by line."""
    out = []
    for raw in re.split(rb"\n\r?\n", data)[:-1]:
        text, enc = decode_frame_bytes(raw)
        frame = _parse_slow(text, enc)
        if frame is not None:
            out.append(frame)
    return out


_stream_piece = st.sampled_from([
    b"Event: Hangup", b"Uniqueid: 1.2", b"CallerIDName: \xe5\xbc\xa0\xe4\xb8\x89",
    b"ChanVariable: IVR_CHOICE=", b"Value: a: b", b"bad line", b"Key:", b" Sp: x",
    b"Response: Follows", b"--END COMMAND--", b"\xff\xfe: gbk?", b"\r", b"\r\n", b"\n",
    b"\r\n\r\n", b"\n\n", b"\n\r\n", b": ", b"Event: VarSet\r\nVariable: __IVR_CHOICE",
])


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_stream_piece, max_size=40), st.lists(st.integers(1, 40), min_size=1, max_size=8))
@example([b"Event: Hangup", b"\r\n\r\n", b"Uniqueid: 1.2", b"\n\n", b"Event: Hangup"], [99])
@example([b"Event: Hangup", b"\r\n\r\n", b"bad line", b"\n\r\n", b"Event: Hangup"], [99])
def test_reader_in_any_read_boundaries_equals_the_reference(pieces, cuts):
    data = b"".join(pieces)
    reader = FrameReader(expect_banner=False)
    got: list[Frame] = []
    pos = i = 0
    while pos < len(data):
        got += reader.feed(data[pos:pos + cuts[i % len(cuts)]])
        pos += cuts[i % len(cuts)]
        i += 1
    assert got == reference_frames(data)


# --- fuzz: nothing escapes -----------------------------------------------------

_wire_piece = st.one_of(
    st.binary(max_size=60),
    st.sampled_from([b"\r\n", b"\n", b"\r\n\r\n", b"\n\n", b": ", b"Event: ", b"Hangup",
                     b"AgentConnect", b"QueueCallerAbandon", b"Uniqueid: ", b"Linkedid: ",
                     b"HoldTime: ", b"Cause: ", b"ChanVariable: ", b"Variable: __IVR_CHOICE",
                     b"\xe5\xbc\xa0", b"\xff\xfe", b"<unknown>", b"Newchannel",
                     b"Asterisk Call Manager/11.0.0\r\n"]),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_wire_piece, max_size=60), st.lists(st.integers(1, 50), min_size=1, max_size=10))
def test_random_bytes_never_escape_reader_normalise_tracker(pieces, cuts):
    data = b"".join(pieces)
    reader = FrameReader(max_frame_bytes=512)
    n = Normaliser()
    tracker = CallTracker(max_calls=5, max_ended=5)
    pos = 0
    i = 0
    while pos < len(data):
        step = cuts[i % len(cuts)]
        for f in reader.feed(data[pos:pos + step]):
            tracker.apply(n(f, float(pos)))
        pos += step
        i += 1
    for f in reader.feed(b"\r\n\r\n"):
        tracker.apply(n(f, 0.0))
    assert n.errors == 0
    assert len(tracker.active()) <= 5 and len(tracker.recently_ended()) <= 5


_names = st.sampled_from(list(MODELLED) + ["VarSet", "DialEnd", "Event", ""])
_keys = st.sampled_from(["Event", "Uniqueid", "UniqueID", "Linkedid", "Channel", "HoldTime",
                         "TalkTime", "RingTime", "Cause", "Queue", "Interface", "Member",
                         "ChanVariable", "DestChanVariable", "DestUniqueid", "Variable",
                         "Value", "Position", "ChannelState", "Reason", "CallerIDNum"])


@settings(max_examples=400, deadline=None)
@given(_names, st.lists(st.tuples(_keys, st.text(max_size=8)), max_size=12))
def test_malformed_frames_never_escape_normalise(name, headers):
    n = Normaliser()
    tracker = CallTracker()
    frame = Frame((("Event", name),) + tuple(headers))
    ev = n(frame, 0.0)
    tracker.apply(ev)
    assert n.errors == 0

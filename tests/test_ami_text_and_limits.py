"""Text, headers and limits on the service's AMI path over real TCP
(issue 3 items 5 and 6): repeated headers kept, a Chinese caller name cut at
every byte offset, GBK, bytes invalid in both encodings; oversized frames,
lines without a colon, binary junk, an event flood; and a property-based
fuzz test that nothing escapes and the manager keeps its state."""
from __future__ import annotations

import asyncio
import time
import io
import json
import logging
import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cti.ami import AmiActionError, AmiTimeout, Backoff, HotlineManager
from cti.events import AgentCalled
from cti.frame import Frame, FrameReader
from cti.logs import setup_logging
from cti.pipeline import CallPipeline

from .harness import until

AGENT_CALLED = (
    "Event: AgentCalled\r\nPrivilege: agent,all\r\n"
    "Channel: Local/repair@hotline-00000001;2\r\nChannelState: 6\r\nChannelStateDesc: Up\r\n"
    "CallerIDNum: 13800138000\r\nCallerIDName: 张三丰电力客户\r\nConnectedLineNum: <unknown>\r\n"
    "ConnectedLineName: <unknown>\r\nLanguage: en\r\nAccountCode: \r\nContext: hotline\r\n"
    "Exten: enter-queue\r\nPriority: 5\r\nUniqueid: 10.2\r\nLinkedid: 10.1\r\n"
    "ChanVariable: IVR_CHOICE=repair\r\nChanVariable: CUSTOMER_ID=3100012345\r\n"
    "ChanVariable: OUTAGE_ID=OUT-1\r\n"
    "DestChannel: Local/1001@agents-00000002;1\r\nDestChannelState: 5\r\nDestChannelStateDesc: Ringing\r\n"
    "DestCallerIDNum: enter-queue\r\nDestCallerIDName: <unknown>\r\nDestConnectedLineNum: 13800138000\r\n"
    "DestConnectedLineName: 张三丰电力客户\r\nDestLanguage: en\r\nDestAccountCode: \r\nDestContext: agents\r\n"
    "DestExten: enter-queue\r\nDestPriority: 1\r\nDestUniqueid: 10.3\r\nDestLinkedid: 10.1\r\n"
    "DestChanVariable: IVR_CHOICE=repair\r\nDestChanVariable: CUSTOMER_ID=3100012345\r\n"
    "DestChanVariable: OUTAGE_ID=OUT-1\r\n"
    "Queue: repair\r\nInterface: Local/1001@agents\r\nMemberName: Agent 1001\r\n\r\n").encode("utf-8")


class ScriptedAsterisk:
    """Banner, Login, FullyBooted; answers Ping; then plays whatever the test
    pushes, with the read boundaries the test chooses."""

    def __init__(self) -> None:
        self.server = None
        self.writers: list[asyncio.StreamWriter] = []
        self.connections = 0
        self.answer_actions = True

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        for w in self.writers:
            w.transport.abort()
        self.server.close()
        await self.server.wait_closed()

    @property
    def writer(self) -> asyncio.StreamWriter:
        return self.writers[-1]

    async def _serve(self, reader, writer):
        self.connections += 1
        self.writers.append(writer)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        writer.write(b"Asterisk Call Manager/11.0.0\r\n")
        fr = FrameReader(expect_banner=False)
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    return
                for f in fr.feed(data):
                    act, aid = (f.get("Action") or "").lower(), f.get("ActionID") or ""
                    if act == "login":
                        writer.write(f"Response: Success\r\nActionID: {aid}\r\n"
                                     "Message: Authentication accepted\r\n\r\n".encode())
                        writer.write(b"Event: FullyBooted\r\nPrivilege: system,all\r\nUptime: 5\r\n"
                                     b"LastReload: 5\r\nStatus: Fully Booted\r\n\r\n")
                    elif act == "ping" and self.answer_actions:
                        writer.write(f"Response: Success\r\nActionID: {aid}\r\nPing: Pong\r\n"
                                     "Timestamp: 1.0\r\n\r\n".encode())
                    elif act == "queuepause" and self.answer_actions:
                        writer.write(f"Response: Error\r\nActionID: {aid}\r\n"
                                     "Message: Interface not found\r\n\r\n".encode())
                    elif act == "queueadd" and self.answer_actions:
                        writer.write(f"Response: Success\r\nActionID: {aid}\r\n"
                                     "Message: Added interface to queue\r\n\r\n".encode())
        except ConnectionError:
            return


async def _until(pred, timeout=5.0, step=0.005):
    return await until(pred, timeout, step)


@pytest.fixture
async def link():
    srv = ScriptedAsterisk()
    port = await srv.start()
    frames: list[Frame] = []
    pipeline = CallPipeline()
    pipeline.start()
    events = []
    pipeline.listeners.append(lambda ev, call: events.append(ev))

    def sink(frame, ts):
        frames.append(frame)
        pipeline.feed(frame, ts)

    m = HotlineManager(frame_sink=sink, host="127.0.0.1", port=port, username="u", secret="s",
                       backoff=Backoff(0.05, 0.2), ping_delay=3600, max_frame_bytes=16 * 1024,
                       warn_interval_s=3600)
    m.loop = asyncio.get_running_loop()
    m.connect()
    assert await _until(lambda: m.state == "logged_in")
    yield srv, m, frames, pipeline, events
    m.close()
    await pipeline.stop()
    await srv.stop()


async def _alive(m: HotlineManager) -> None:
    r = await m.action({"Action": "Ping"}, timeout=3)
    assert r.get("Ping") == "Pong"


# ------------------------------------------------------------ text, headers
async def test_repeated_chan_variables_are_all_kept_through_the_service_path(link):
    srv, m, frames, pipeline, events = link
    srv.writer.write(AGENT_CALLED)
    assert await _until(lambda: any(isinstance(e, AgentCalled) for e in events))
    f = frames[-1]
    assert f.get_all("ChanVariable") == ["IVR_CHOICE=repair", "CUSTOMER_ID=3100012345", "OUTAGE_ID=OUT-1"]
    assert f.get_all("DestChanVariable") == ["IVR_CHOICE=repair", "CUSTOMER_ID=3100012345", "OUTAGE_ID=OUT-1"]
    ev = next(e for e in events if isinstance(e, AgentCalled))
    assert dict(ev.chan.variables) == {"IVR_CHOICE": "repair", "CUSTOMER_ID": "3100012345", "OUTAGE_ID": "OUT-1"}
    assert dict(ev.dest.variables) == dict(ev.chan.variables)
    assert ev.chan.caller_name == "张三丰电力客户"
    await pipeline.drain()
    assert pipeline.tracker.get("10.1").customer_id == "3100012345"


def test_chinese_name_cut_at_every_byte_offset_pure():
    for i in range(len(AGENT_CALLED) + 1):
        r = FrameReader(expect_banner=False)
        out = r.feed(AGENT_CALLED[:i]) + r.feed(AGENT_CALLED[i:])
        assert len(out) == 1 and out[0].get("CallerIDName") == "张三丰电力客户", i


async def test_chinese_name_cut_at_every_byte_offset_over_tcp(link):
    srv, m, frames, pipeline, events = link
    start = AGENT_CALLED.index("张".encode())
    end = AGENT_CALLED.index(b"\r\n", start)
    offsets = list(range(start - 1, end + 2)) + [1, len(AGENT_CALLED) - 1]
    for i in offsets:
        n = len(frames)
        srv.writer.write(AGENT_CALLED[:i])
        await srv.writer.drain()
        await asyncio.sleep(0.003)  # a separate TCP segment / read
        srv.writer.write(AGENT_CALLED[i:])
        assert await _until(lambda: len(frames) > n), i
        assert frames[-1].get("CallerIDName") == "张三丰电力客户", i
    assert m.stats.frames.non_utf8 == 0 and m.state == "logged_in"


async def test_gbk_frame_decodes(link):
    srv, m, frames, *_ = link
    srv.writer.write("Event: Newchannel\r\nCallerIDName: 国网客户张三\r\nUniqueid: 1.1\r\n\r\n".encode("gbk"))
    assert await _until(lambda: frames and frames[-1].get("Uniqueid") == "1.1")
    assert frames[-1].get("CallerIDName") == "国网客户张三" and frames[-1].encoding == "gbk"


async def test_bytes_invalid_in_both_encodings_keep_every_other_character(link):
    srv, m, frames, *_ = link
    raw = ("Event: Newchannel\r\nCallerIDName: 张".encode() + b"\xff" + "三".encode()
           + b"\r\nUniqueid: 1.2\r\n\r\n")
    with pytest.raises(UnicodeDecodeError):
        raw.decode("gbk")
    srv.writer.write(raw)
    assert await _until(lambda: frames and frames[-1].get("Uniqueid") == "1.2")
    assert frames[-1].get("CallerIDName") == "张\ufffd三"  # nothing silently dropped
    assert m.stats.frames.non_utf8 >= 1


# ------------------------------------------------------------ actions
async def test_actions_typed_errors_timeouts_and_queueadd_completes(link):
    srv, m, *_ = link
    with pytest.raises(AmiActionError) as ei:
        await m.action({"Action": "QueuePause", "Interface": "Local/9999@agents", "Paused": "true"})
    assert ei.value.message == "Interface not found"
    # panoramisk's Action.multi would wait for a 2nd message after "Added interface to queue"
    r = await m.action({"Action": "QueueAdd", "Queue": "enquiry", "Interface": "Local/1005@agents"}, timeout=2)
    assert r.message == "Added interface to queue"
    srv.answer_actions = False
    with pytest.raises(AmiTimeout):
        await m.action({"Action": "Ping"}, timeout=0.2)
    assert not m.protocol.pending and m.stats.action_timeouts == 1
    with pytest.raises(ValueError):
        await m.action({"Action": "Ping", "X": "a\r\nAction: Originate"})


# ------------------------------------------------------------ limits
async def test_oversized_no_colon_and_junk_are_counted_skipped_and_warned_once(link):
    srv, m, frames, *_ = link
    buf = io.StringIO()
    setup_logging("INFO", json=True, stream=buf)
    m.warn_interval_s = 3600
    m._warned_at = 0.0
    for i in range(50):
        srv.writer.write(b"Event: Junk\r\nthis line has no colon\r\nUniqueid: j" + str(i).encode() + b"\r\n\r\n")
        srv.writer.write(b"Event: Big\r\nData: " + b"x" * (20 * 1024) + b"\r\n\r\n")
        srv.writer.write(bytes(range(256)) + b"\r\n\r\n")
    srv.writer.write(b"Event: After\r\nUniqueid: ok\r\n\r\n")
    assert await _until(lambda: frames and frames[-1].event == "After")
    s = m.stats.frames
    assert s.bad_lines >= 50 and s.oversized == 50
    assert [f.get("Uniqueid") for f in frames if f.event == "Junk"] == [f"j{i}" for i in range(50)]
    await _alive(m)
    assert m.state == "logged_in" and srv.connections == 1
    warnings = [json.loads(x) for x in buf.getvalue().splitlines() if "ami_malformed_input_skipped" in x]
    assert len(warnings) == 1  # rate-limited, not one line per bad frame


async def test_a_stream_that_never_resyncs_is_dropped_and_reconnected(link):
    srv, m, frames, *_ = link
    junk = b"\x00\x01garbage-without-any-frame-end" * 2048
    for _ in range(12):  # ~ 12 x 60 KB, no blank line ever: 16 KB frames
        srv.writer.write(junk)
    assert await _until(lambda: srv.connections == 2 and m.state == "logged_in")
    assert m.stats.unrecoverable_streams == 1
    await _alive(m)


async def test_event_flood_is_counted_not_logged_per_event_and_the_link_survives():
    srv = ScriptedAsterisk()
    port = await srv.start()
    buf = io.StringIO()
    setup_logging("INFO", json=True, stream=buf)
    pipeline = CallPipeline(max_queue=500)
    pipeline.start()
    m = HotlineManager(frame_sink=pipeline.feed, host="127.0.0.1", port=port, username="u", secret="s",
                       backoff=Backoff(0.05, 0.2), ping_delay=3600)
    m.loop = asyncio.get_running_loop()
    m.connect()
    try:
        assert await _until(lambda: m.state == "logged_in")
        n = 200_000
        one = b"Event: DeviceStateChange\r\nPrivilege: call,all\r\nDevice: Queue:repair_avail\r\nState: INUSE\r\n\r\n"
        chunk = one * 5000
        t0 = time.monotonic()
        for _ in range(n // 5000):
            srv.writer.write(chunk)
        await srv.writer.drain()
        assert await _until(lambda: m.stats.frames.frames >= n + 1, 30)
        await _alive(m)
        await pipeline.drain()
        assert pipeline.stats.frames == n + 1  # FullyBooted + the flood
        # what did not fit in the bounded queue is counted, and warned about
        # at most once per 10 s -- not one log line per dropped event
        elapsed = time.monotonic() - t0
        lines = [x for x in buf.getvalue().splitlines() if "pipeline_queue_full" in x]
        if pipeline.stats.queue_full:
            # one line per started 10 s window (a loaded machine may take longer than 10 s)
            assert 1 <= len(lines) <= 1 + int(elapsed // 10), (len(lines), elapsed)
            assert len(lines) <= max(1, pipeline.stats.queue_full // 100)  # not one per dropped event
        else:
            assert lines == []
        assert pipeline.stats.events + pipeline.stats.unknown + pipeline.stats.queue_full == n + 1
        assert m.state == "logged_in" and srv.connections == 1
    finally:
        m.close()
        await pipeline.stop()
        await srv.stop()


# ------------------------------------------------------------ fuzz
chunks = st.one_of(
    st.binary(max_size=600),
    st.lists(st.sampled_from([b"Event: X\r\n", b"no colon\r\n", b"\r\n", b"\n", b": v\r\n", b"\xff\xfe",
                              "CallerIDName: 张三\r\n".encode(), "名: 国网\r\n".encode("gbk"),
                              b"Response: Success\r\nActionID: nope\r\n", b"Response: Follows\r\n",
                              b"Event: OriginateResponse\r\nResponse: Failure\r\n", b"\x00" * 50,
                              b"ActionID: ", b"Event: Shutdown\r\n"]), max_size=30).map(b"".join),
)


@pytest.fixture(scope="module")
def fuzz_rig():
    loop = asyncio.new_event_loop()
    errors: list = []
    loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))
    srv = ScriptedAsterisk()
    port = loop.run_until_complete(srv.start())
    frames: list[Frame] = []
    m = HotlineManager(frame_sink=lambda f, t: frames.append(f), host="127.0.0.1", port=port, username="u",
                       secret="s", backoff=Backoff(0.02, 0.05), ping_delay=3600, max_frame_bytes=4096)
    m.loop = loop
    m.connect()
    loop.run_until_complete(_until(lambda: m.state == "logged_in"))
    yield loop, srv, m, frames, errors
    m.close()
    loop.run_until_complete(srv.stop())
    loop.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=st.lists(chunks, min_size=1, max_size=5))
def test_fuzzed_input_over_tcp_never_escapes_and_the_manager_keeps_its_state(fuzz_rig, parts):
    loop, srv, m, frames, errors = fuzz_rig

    async def scenario():
        assert await _until(lambda: m.state == "logged_in", 5)
        conns = srv.connections
        for p in parts:
            srv.writer.write(p)
            await asyncio.sleep(0)
        # whatever came before, a frame end then a marker frame resyncs the stream
        marker = f"m{len(frames)}-{id(parts)}"
        srv.writer.write(b"\r\n\r\n\r\n\r\nEvent: Marker\r\nUniqueid: " + marker.encode() + b"\r\n\r\n")
        got = await _until(lambda: any(f.get("Uniqueid") == marker for f in frames[-5:]), 3)
        if srv.connections == conns:  # a Shutdown or junk may legitimately end the session
            assert got or m.state != "logged_in"
        assert await _until(lambda: m.state == "logged_in", 5)
        r = await m.action({"Action": "Ping"}, timeout=3)
        assert r.get("Ping") == "Pong"
        assert not m.awaiting_actions

    loop.run_until_complete(scenario())
    assert errors == []


@pytest.mark.parametrize("size", [1, 3, 1000, 7000, 16384, 65536, 10**7])
def test_oversized_frames_counted_once_whatever_the_read_size(size):
    data = b""
    for i in range(20):
        data += b"Event: Junk\r\nno colon\r\nUniqueid: j" + str(i).encode() + b"\r\n\r\n"
        data += b"Event: Big\r\nData: " + b"x" * (20 * 1024) + b"\r\n\r\n"
    r = FrameReader(max_frame_bytes=16 * 1024, expect_banner=False)
    out = []
    for i in range(0, len(data), size):
        out += r.feed(data[i:i + size])
    assert [f.get("Uniqueid") for f in out] == [f"j{i}" for i in range(20)]
    assert (r.stats.oversized, r.stats.bad_lines, r.stats.skipped_empty) == (20, 20, 0)


@given(st.lists(st.tuples(st.sampled_from(["ActionID", "ActionId", "actionid", "ACTIONID", "Event", "Action",
                                           "ActionIDs", "XActionID", "Uniqueid"]),
                          st.text(max_size=4)), max_size=6))
def test_action_id_is_the_case_insensitive_first_action_id_header(headers):
    # frame.action_id has its own quick path (read on every frame); it must
    # answer exactly as the general case-insensitive get()
    frame = Frame(tuple(headers))
    assert frame.action_id == Frame(tuple(headers)).get("ActionID")
    expected = next((v for k, v in headers if k == "ActionID"), None)
    if expected is None:
        expected = next((v for k, v in headers if k.lower() == "actionid"), None)
    assert frame.action_id == expected


NEWCHANNEL_10_3 = (b"Event: Newchannel\r\nPrivilege: call,all\r\nChannel: Local/1001@agents-00000001;1\r\n"
                   b"ChannelState: 0\r\nUniqueid: 10.3\r\nLinkedid: 10.1\r\n\r\n")


async def test_a_reads_agent_called_is_fast_laned_before_the_frames_read_ahead_of_it_are_routed(link):
    """One socket read: Newchannel, Newchannel, AgentCalled.  The fast lane's
    hook runs before the first Newchannel reaches any frame consumer, and only
    once; the ordered path still sees all three in wire order."""
    srv, m, frames, pipeline, events = link
    order: list[str] = []
    pipeline.fast_lane["AgentCalled"] = lambda ev: order.append(f"fast {ev.agent} (routed so far: {len(frames)})")
    m.frames_read = pipeline.read_ahead
    m.frame_listeners.append(lambda f, ts: order.append(f"routed {f.event}"))
    before = len(frames)
    srv.writer.write(NEWCHANNEL_10_3 + NEWCHANNEL_10_3.replace(b";1", b";2").replace(b"10.3", b"10.4") + AGENT_CALLED)
    assert await _until(lambda: len(frames) == before + 3)
    assert order == [f"fast 1001 (routed so far: {before})", "routed Newchannel", "routed Newchannel",
                     "routed AgentCalled"]
    await pipeline.drain()
    assert [type(e).__name__ for e in events[-3:]] == ["ChannelCreated", "ChannelCreated", "AgentCalled"]


async def test_a_screen_pop_task_takes_its_first_step_before_its_read_is_routed(link):
    """The pop's task (its lookup goes out at its first step) runs before the
    read's frames are routed, those before the AgentCalled included; they
    are all routed right after, in wire order."""
    srv, m, frames, pipeline, events = link
    seen: list[str] = []

    async def pop(ev):
        seen.append(f"pop {ev.agent} (routed so far: {len(frames) - before})")

    pipeline.fast_lane["AgentCalled"] = lambda ev: asyncio.get_running_loop().create_task(pop(ev))
    m.frames_read = pipeline.read_ahead
    m.frame_listeners.append(lambda f, ts: seen.append(f"routed {f.event}"))
    before = len(frames)
    srv.writer.write(NEWCHANNEL_10_3 + AGENT_CALLED + NEWCHANNEL_10_3.replace(b";1", b";2").replace(b"10.3", b"10.4"))
    assert await _until(lambda: len(frames) == before + 3)
    assert seen == ["pop 1001 (routed so far: 0)", "routed Newchannel", "routed AgentCalled", "routed Newchannel"]
    await pipeline.drain()
    assert [type(e).__name__ for e in events[-3:]] == ["ChannelCreated", "AgentCalled", "ChannelCreated"]


def test_read_ahead_fires_each_frame_once_and_never_skips_another_frame():
    pipeline = CallPipeline()
    fired: list[str] = []
    pipeline.fast_lane["AgentCalled"] = lambda ev: fired.append(ev.linkedid)
    a, b = FrameReader(expect_banner=False).feed(AGENT_CALLED + AGENT_CALLED)
    assert a is not b and a == b
    pipeline.read_ahead([a], 1.0)
    pipeline.feed(a, 1.0)
    assert fired == ["10.1"]  # read ahead, not again when fed
    pipeline.feed(b, 1.0)  # equal content, another frame: its own hook
    assert fired == ["10.1", "10.1"]
    pipeline.read_ahead([a], 2.0)  # read ahead, then another read before it is fed (a big read
    pipeline.read_ahead([], 3.0)   # routed over several loop turns): still not fired twice
    pipeline.feed(a, 3.0)
    assert fired == ["10.1"] * 3
    pipeline.feed(a, 3.0)  # fed again (not read ahead this time): fires
    assert fired == ["10.1"] * 4
    # a list item of an action (it carries the ActionID) is not an event to pop
    listed = Frame(a.headers + (("ActionID", "q-1"),))
    pipeline.read_ahead([listed], 4.0)
    assert fired == ["10.1"] * 4


class _PausableTransport:
    def __init__(self) -> None:
        self.reading = True
        self.closing = False

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_closing(self) -> bool:
        return self.closing

    def write(self, data) -> None:
        pass

    def close(self) -> None:
        self.closing = True


def _manager_and_protocol(sink):
    from cti.ami import HotlineAMIProtocol

    m = HotlineManager(frame_sink=sink, host="127.0.0.1", port=1, username="u", secret="s")
    proto = HotlineAMIProtocol(m)
    transport = _PausableTransport()
    proto.connection_made(transport)
    proto.data_received(b"Asterisk Call Manager/11.0.0\r\n")
    return m, proto, transport


def _newchannels(start: int, n: int) -> bytes:
    return b"".join(NEWCHANNEL_10_3.replace(b"10.3", f"20.{i}".encode()) for i in range(start, start + n))


async def test_a_big_read_is_routed_in_order_a_batch_per_loop_turn_and_reading_waits_for_it():
    """A read of 300 frames (the loop was busy, the socket filled up) does
    not hold the loop for all of them: other callbacks (a screen-pop's next
    step) run between batches; the frames keep their order, also across a
    read that comes meanwhile; reading pauses only while too many wait."""
    turns = [0]
    routed: list[tuple[str, int]] = []
    m, proto, transport = _manager_and_protocol(lambda f, ts: routed.append((f.get("Uniqueid"), turns[0])))

    async def ticker():
        while True:
            turns[0] += 1
            await asyncio.sleep(0)

    tick = asyncio.create_task(ticker())
    try:
        proto.data_received(_newchannels(0, 300))
        assert len(routed) == 0 and transport.reading  # nothing routed inside the read; reading goes on
        proto.data_received(_newchannels(300, 5))  # the next read: queued behind
        assert await until(lambda: len(routed) == 305, 5.0)
        assert [u for u, _ in routed] == [f"20.{i}" for i in range(305)]
        batches = {}
        for _, turn in routed:
            batches[turn] = batches.get(turn, 0) + 1
        assert len(batches) >= 300 // proto.ROUTE_BATCH and max(batches.values()) <= proto.ROUTE_BATCH
        assert transport.reading
        # past UNROUTED_MAX frames waiting, reading pauses until they are routed
        proto.data_received(_newchannels(1000, proto.UNROUTED_MAX + 1))
        assert not transport.reading
        assert await until(lambda: len(routed) == 305 + proto.UNROUTED_MAX + 1, 10.0)
        assert transport.reading
        m.reading_paused = True  # ... but not against the pipeline's own backpressure
        proto.data_received(_newchannels(4000, proto.UNROUTED_MAX + 1))
        assert await until(lambda: len(routed) == 305 + 2 * (proto.UNROUTED_MAX + 1), 10.0)
        assert not transport.reading
        m.reading_paused = False
        routed.clear()
        # small reads are routed at once, as before
        proto.data_received(_newchannels(400, 3))
        assert [u for u, _ in routed[-3:]] == ["20.400", "20.401", "20.402"]
    finally:
        tick.cancel()


async def test_frames_read_before_the_link_drops_are_all_routed_before_it_is_reported_lost():
    routed: list[str] = []
    states: list[tuple[str, int]] = []
    m, proto, transport = _manager_and_protocol(lambda f, ts: routed.append(f.get("Uniqueid")))
    m.on_state_change = lambda state: states.append((state, len(routed)))
    m.state = "logged_in"
    proto.data_received(_newchannels(0, 200))
    assert len(routed) < 200
    transport.closing = True
    m._schedule_reconnect = lambda: None  # no real reconnect in this test
    m.loop = asyncio.get_running_loop()
    m.on_disconnect = lambda *a: None
    proto.connection_lost(ConnectionResetError("peer reset"))
    assert routed == [f"20.{i}" for i in range(200)]
    assert states and states[0] == ("lost", 200)
    await asyncio.sleep(0.01)  # the batches already scheduled find nothing left
    assert len(routed) == 200

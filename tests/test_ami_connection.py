"""The service's AMI path (panoramisk Manager + our protocol) over real TCP:
replayed real Asterisk 22 traces, refused and dropped connections."""
from __future__ import annotations

import asyncio
import io
import json
import logging
from pathlib import Path

import pytest

from cti.ami import AmiDisconnected, Backoff, HotlineManager
from cti.frame import FrameReader
from cti.logs import setup_logging
from cti.pipeline import CallPipeline
from cti.tracker import CallState

TRACES = Path(__file__).parent / "fixtures" / "ami-traces" / "asterisk-22"


def _chunks(name: str) -> list[bytes]:
    data = (TRACES / f"{name}.ami").read_bytes()
    out = []
    for line in (TRACES / f"{name}.ami.chunks").read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        _, off, length = line.split()
        out.append(data[int(off): int(off) + int(length)])
    assert b"".join(out) == data
    return out


class ReplayServer:
    """Plays a recorded AMI session with its original read boundaries; the
    recorded login response gets the client's ActionID."""

    def __init__(self, name: str, login_ok: bool = True):
        self.chunks = _chunks(name)
        self.login_ok = login_ok
        self.server: asyncio.base_events.Server | None = None
        self.connections = 0
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self, port: int = 0) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", port)
        return self.server.sockets[0].getsockname()[1]

    async def stop(self):
        for w in self.writers:
            w.close()
        if self.server:
            self.server.close()
            await self.server.wait_closed()

    async def _serve(self, reader, writer):
        self.connections += 1
        self.writers.append(writer)
        fr = FrameReader(expect_banner=False)
        writer.write(self.chunks[0])  # banner
        await writer.drain()
        login = None
        while login is None:
            data = await reader.read(4096)
            if not data:
                return
            for f in fr.feed(data):
                if (f.get("Action") or "").lower() == "login":
                    login = f
        aid = login.action_id.encode()
        if not self.login_ok:
            writer.write(b"Response: Error\r\nActionID: " + aid + b"\r\nMessage: Authentication failed\r\n\r\n")
            await writer.drain()
            return
        first = True
        for chunk in self.chunks[1:]:
            if first and b"ActionID: login-1" in chunk:
                chunk = chunk.replace(b"ActionID: login-1", b"ActionID: " + aid, 1)
                first = False
            writer.write(chunk)
            await writer.drain()
        try:
            await reader.read()  # keep open until the client goes
        except ConnectionError:
            pass


async def _manager(port: int, sink, **kw) -> HotlineManager:
    m = HotlineManager(frame_sink=sink, host="127.0.0.1", port=port, username="acceptance",
                       secret="acceptance-secret", backoff=Backoff(0.05, 0.2), ping_delay=3600, **kw)
    m.loop = asyncio.get_running_loop()
    return m


async def _wait(pred, timeout=5.0):
    for _ in range(int(timeout / 0.01)):
        if pred():
            return True
        await asyncio.sleep(0.01)
    return pred()


@pytest.mark.parametrize("trace,expect", [
    ("01-ivr-to-queue-answered", {"queue": "repair", "agent": "1001", "outcome": "answered",
                                  "caller_name": "张三", "ivr_choice": "repair"}),
    ("03-enquiry-queue-abandon-after-ring", {"queue": "enquiry", "outcome": "abandoned"}),
])
async def test_real_trace_over_tcp_through_the_service_path(trace, expect):
    srv = ReplayServer(trace)
    port = await srv.start()
    pipeline = CallPipeline()
    ended = []
    pipeline.listeners.append(lambda ev, call: call is not None and call.queue and call.state is CallState.ENDED
                              and ended.append(call))
    pipeline.start()
    m = await _manager(port, pipeline.feed)
    m.connect()
    try:
        assert await _wait(lambda: m.state == "logged_in")
        assert await _wait(lambda: any(c.outcome == expect["outcome"] for c in ended))
        await pipeline.drain()
        call = [c for c in ended if c.queue][-1]
        for k, v in expect.items():
            assert getattr(call, k) == v, (k, getattr(call, k))
        assert pipeline.normaliser.counts()["errors"] == 0 if hasattr(pipeline.normaliser, "counts") else True
    finally:
        m.close()
        await pipeline.stop()
        await srv.stop()


async def test_refused_connection_is_retried_with_backoff_and_logged_once_per_state():
    buf = io.StringIO()
    setup_logging("INFO", json=True, stream=buf)
    # find a port nobody listens on
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    m = await _manager(port, lambda f, t: None)
    m.connect()
    await asyncio.sleep(0.8)  # several attempts at 0.05..0.2 s
    srv = ReplayServer("01-ivr-to-queue-answered")
    await srv.start(port)
    try:
        assert await _wait(lambda: m.state == "logged_in", 5)
    finally:
        m.close()
        await srv.stop()
    states = [json.loads(l) for l in buf.getvalue().splitlines()]
    states = [s["state"] for s in states if s.get("event") == "ami_state_changed"]
    assert states.count("refused") == 1, states
    assert states[-2:] == ["logged_in", "closed"]


async def test_failed_login_is_reported_and_retried():
    srv = ReplayServer("01-ivr-to-queue-answered", login_ok=False)
    port = await srv.start()
    seen = []
    m = await _manager(port, lambda f, t: None, on_state=seen.append)
    m.connect()
    try:
        assert await _wait(lambda: srv.connections >= 2)
        assert "login_failed" in seen and "logged_in" not in seen
        assert not m.authenticated
    finally:
        m.close()
        await srv.stop()


async def test_dropped_connection_reconnects_and_unanswered_originate_is_not_resent():
    srv = ReplayServer("01-ivr-to-queue-answered")
    port = await srv.start()
    m = await _manager(port, lambda f, t: None)
    m.connect()
    try:
        assert await _wait(lambda: m.state == "logged_in")
        fut = m.send_action({"Action": "Originate", "Channel": "Local/1001@agents", "Exten": "s",
                             "Context": "hotline", "Priority": "1", "Async": "true"})
        await asyncio.sleep(0.05)
        for w in srv.writers:
            w.transport.abort()
        with pytest.raises(AmiDisconnected):
            await asyncio.wait_for(fut, 2)
        assert await _wait(lambda: srv.connections >= 2 and m.state == "logged_in")
        assert m.logins == 2
        assert not m.awaiting_actions
    finally:
        m.close()
        await srv.stop()


async def test_sink_exception_is_logged_not_swallowed_and_reading_goes_on(caplog):
    srv = ReplayServer("01-ivr-to-queue-answered")
    port = await srv.start()
    seen = []

    def sink(frame, ts):
        seen.append(frame.event)
        if frame.event == "Newchannel":
            raise RuntimeError("handler bug")

    m = await _manager(port, sink)
    with caplog.at_level(logging.ERROR):
        m.connect()
        try:
            assert await _wait(lambda: "BridgeDestroy" in seen)
        finally:
            m.close()
            await srv.stop()
    assert seen.count("Newchannel") == 4
    assert any("ami_frame_handling_failed" in r.getMessage() for r in caplog.records)

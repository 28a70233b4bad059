"""The PBX simulator against the real Asterisk 22.10.1 captures.

The simulator is driven over real TCP on 127.0.0.1 with a plain asyncio
client; its frames are parsed with :class:`cti.frame.FrameReader`, exactly
like the recorded ``.ami`` files, and compared with them after the values that
legitimately differ between runs are replaced by placeholders (uniqueids,
Local channel counters, bridge ids, timestamps).
"""
from __future__ import annotations

import asyncio
import re
from collections import Counter
from pathlib import Path

import pytest

from cti.frame import Frame, FrameReader
from cti.simulator import CallSpec, PbxSimulator

TRACES = Path(__file__).parent / "fixtures" / "ami-traces" / "asterisk-22"
T01 = TRACES / "01-ivr-to-queue-answered.ami"
T02 = TRACES / "02-complaint-queue-caller-hangs-up-during-talk.ami"
T03 = TRACES / "03-enquiry-queue-abandon-after-ring.ami"

USER, SECRET = "acceptance", "acceptance-secret"
# queues.conf of the capture: repair 1001,1002; complaint 1002,1003;
# enquiry 1003,1004,1001 (penalty 1)
TRACE_AGENTS = {
    "1001": {"repair": 0, "enquiry": 1},
    "1002": ["repair", "complaint"],
    "1003": ["complaint", "enquiry"],
    "1004": ["enquiry"],
}
SPEED = 200.0  # trace 03 lasts 19 virtual seconds: < 0.1 s here

# the event types the simulator emits; VarSet only for these variables
EMITTED = {
    "Newchannel", "NewCallerid", "Newstate", "VarSet", "DialBegin", "DialState", "DialEnd",
    "QueueCallerJoin", "AgentCalled", "QueueMemberStatus", "AgentRingNoAnswer",
    "MixMonitorStart", "QueueCallerLeave", "AgentConnect", "BridgeCreate", "BridgeEnter",
    "BridgeLeave", "AgentComplete", "MixMonitorStop", "BridgeDestroy", "Hangup",
    "QueueCallerAbandon",
}
VARSET_NAMES = {"IVR_CHOICE", "__IVR_CHOICE", "__CUSTOMER_ID", "__OUTAGE_ID", "MIXMONITOR_FILENAME"}

SPEC_01 = CallSpec(caller_num="13800138000", caller_name="张三", ivr_choice="repair",
                   customer_id="3100012345", outage_id="OUT-20261122-0042", agent="1001",
                   outcome="answered", ring_s=2, talk_s=5, wait_s=0, via_ivr=True)
SPEC_02 = CallSpec(caller_num="13800138000", caller_name="国网客户", ivr_choice="complaint",
                   customer_id="3100038000", agent="1002", ring_order=("1003", "1002"),
                   outcome="caller_hangup", ring_s=2, talk_s=9, via_ivr=False)
SPEC_03 = CallSpec(caller_num="13800138000", caller_name="李四", ivr_choice="enquiry",
                   customer_id="3100038000", agent="1003", ring_order=("1003", "1004"),
                   outcome="abandoned", ring_s=15, wait_s=19, via_ivr=False)


# ------------------------------------------------------------------ helpers
def trace_frames(path: Path) -> list[Frame]:
    assert path.exists(), f"missing fixture {path}"
    reader = FrameReader()
    frames = reader.feed(path.read_bytes())
    assert reader.banner == "Asterisk Call Manager/11.0.0"
    return frames


def relevant(frames: list[Frame]) -> list[Frame]:
    out = []
    for f in frames:
        ev = f.event
        if ev not in EMITTED:
            continue
        if ev == "VarSet" and f.get("Variable") not in VARSET_NAMES:
            continue
        out.append(f)
    return out


_COUNTER = re.compile(r"-([0-9a-f]{8});")
_MONITOR = re.compile(r"-\d{8}-\d{6}-(\d+\.\d+)\.wav$")


def normalise(frames: list[Frame]) -> list[tuple[tuple[str, str], ...]]:
    """Replace run-specific values by placeholders in order of appearance."""
    ids: dict[str, str] = {}
    counters: dict[str, str] = {}
    bridges: dict[str, str] = {}
    out = []
    for f in frames:
        hs = []
        for k, v in f.headers:
            if k == "BridgeUniqueid":
                v = bridges.setdefault(v, f"B{len(bridges)}")
            elif k.endswith(("Uniqueid", "Linkedid")):
                v = ids.setdefault(v, f"U{len(ids)}")
            elif k.endswith("Channel"):
                v = _COUNTER.sub(lambda m: "-" + counters.setdefault(m.group(1), f"N{len(counters)}") + ";", v)
            elif k == "LoginTime" or (k == "LastCall" and v != "0"):
                v = "<time>"
            elif k == "Value" and f.get("Variable") == "MIXMONITOR_FILENAME":
                v = _MONITOR.sub(lambda m: "-<ts>-" + ids.get(m.group(1), "?") + ".wav", v)
            hs.append((k, v))
        out.append(tuple(hs))
    return out


def brief(frames) -> list[str]:
    """One line per normalised frame, for readable assertion diffs."""
    lines = []
    for hs in frames:
        d = dict(hs)
        lines.append(" ".join(x for x in (d.get("Event"), d.get("Channel"), d.get("DestChannel"),
                                          d.get("Variable"), d.get("DialStatus"), d.get("Queue"),
                                          d.get("Status")) if x))
    return lines


class Client:
    """A plain AMI client on asyncio streams."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.frames = FrameReader()
        self.pending: list[Frame] = []
        self.n = 0

    @classmethod
    async def connect(cls, port: int) -> "Client":
        r, w = await asyncio.open_connection("127.0.0.1", port)
        return cls(r, w)

    async def banner(self) -> bytes:
        return await asyncio.wait_for(self.reader.readline(), 5)

    def send(self, *headers: tuple[str, str], raw: bytes | None = None) -> None:
        self.writer.write(raw if raw is not None else
                          ("".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n").encode())

    async def next_frame(self, timeout: float = 5.0) -> Frame | None:
        while not self.pending:
            data = await asyncio.wait_for(self.reader.read(65536), timeout)
            if not data:
                return None
            self.pending.extend(self.frames.feed(data))
        return self.pending.pop(0)

    async def action(self, name: str, *headers: tuple[str, str]) -> tuple[Frame, list[Frame]]:
        """Send an action; return its response and the events read before it."""
        self.n += 1
        aid = f"{name.lower()}-{self.n}"
        self.send(("Action", name), ("ActionID", aid), *headers)
        before = []
        while True:
            f = await self.next_frame()
            assert f is not None, "connection closed"
            if f.response is not None and f.action_id == aid:
                return f, before
            before.append(f)

    async def login(self, events: str = "on") -> tuple[Frame, list[Frame]]:
        assert (await self.banner()) == b"Asterisk Call Manager/11.0.0\r\n"
        resp, _ = await self.action("Login", ("Username", USER), ("Secret", SECRET), ("Events", events))
        assert resp.response == "Success", resp
        return resp, []

    async def drain_events(self) -> list[Frame]:
        """Every event sent so far (a Ping response is queued behind them)."""
        _, events = await self.action("Ping")
        return events

    async def eof(self, timeout: float = 5.0) -> bool:
        while True:
            data = await asyncio.wait_for(self.reader.read(65536), timeout)
            if not data:
                return True

    def close(self) -> None:
        self.writer.close()


@pytest.fixture
async def sim():
    s = PbxSimulator("127.0.0.1", 0, USER, SECRET, speed=SPEED, agents=TRACE_AGENTS,
                     auth_fail_delay=0.01, seed=7)
    port = await s.start()
    assert port == s.port and port > 0
    yield s
    await s.stop()


async def play(sim: PbxSimulator, spec: CallSpec, clients: int = 1) -> list[list[Frame]]:
    cs = [await Client.connect(sim.port) for _ in range(clients)]
    for c in cs:
        await c.login()
    for c in cs:  # FullyBooted, and SuccessfulAuth of every login (a broadcast)
        await c.drain_events()
    await sim.place_call(spec)
    out = [[f for f in await c.drain_events() if f.event] for c in cs]
    for c in cs:
        c.close()
    return out


# -------------------------------------------------------------- the traces
CASES = [("01", T01, SPEC_01), ("02", T02, SPEC_02), ("03", T03, SPEC_03)]


@pytest.mark.parametrize("name,path,spec", CASES, ids=[c[0] for c in CASES])
async def test_call_matches_trace_frame_for_frame(sim, name, path, spec):
    (got,) = await play(sim, spec)
    want = relevant(trace_frames(path))
    assert {f.event for f in got} <= EMITTED
    g, w = normalise(got), normalise(want)
    assert brief(g) == brief(w), "event order differs from the trace"
    for i, (a, b) in enumerate(zip(g, w)):
        assert a == b, f"frame {i} ({dict(b).get('Event')}) differs:\n sim  ={a}\n trace={b}"
    assert len(g) == len(w)


@pytest.mark.parametrize("name,path,spec", CASES, ids=[c[0] for c in CASES])
async def test_field_layout_per_event_type(sim, name, path, spec):
    """Field names in order, repeats included, per event type."""
    (got,) = await play(sim, spec)
    layouts: dict[str, set[tuple[str, ...]]] = {}
    for f in trace_frames(T01) + trace_frames(T02) + trace_frames(T03):
        if f.event:
            layouts.setdefault(f.event, set()).add(tuple(k for k, _ in f.headers))
    for f in got:
        keys = tuple(k for k, _ in f.headers)
        assert keys in layouts[f.event], f"{f.event}: {keys}"
        assert Counter(keys)["ChanVariable"] in (0, 3)


async def test_stable_values_and_ordering_01(sim):
    (got,) = await play(sim, SPEC_01)
    evs = [f.event for f in got]
    i = evs.index
    assert i("MixMonitorStart") < i("QueueCallerLeave") < i("AgentConnect") < i("BridgeCreate")
    connect = got[i("AgentConnect")]
    assert connect.get("Queue") == "repair" and connect.get("Interface") == "Local/1001@agents"
    assert connect.get("MemberName") == "Agent 1001"
    assert (connect.get("HoldTime"), connect.get("RingTime")) == ("2", "2")
    assert connect.get("CallerIDNum") == "13800138000" and connect.get("CallerIDName") == "张三"
    assert connect.get("DestCallerIDNum") == "enter-queue"
    assert connect.variables() == {"IVR_CHOICE": "repair", "CUSTOMER_ID": "3100012345",
                                   "OUTAGE_ID": "OUT-20261122-0042"}
    complete = got[i("AgentComplete")]
    assert (complete.get("Reason"), complete.get("TalkTime"), complete.get("HoldTime")) == ("agent", "5", "2")
    # AgentComplete sits between the member's ;2 and ;1 hangups
    hangups = [(k, f.get("Channel")) for k, f in enumerate(got) if f.event == "Hangup"]
    m2 = next(k for k, c in hangups if c.startswith("Local/1001@agents") and c.endswith(";2"))
    m1 = next(k for k, c in hangups if c.startswith("Local/1001@agents") and c.endswith(";1"))
    assert m2 < i("AgentComplete") < m1
    qms = [(f.get("Queue"), f.get("Status")) for f in got if f.event == "QueueMemberStatus"]
    assert qms == [("repair", "2"), ("enquiry", "2"), ("repair", "1"), ("enquiry", "1")]
    assert all(f.get("Linkedid") == got[0].get("Uniqueid") for f in got if f.get("Linkedid"))
    assert re.fullmatch(r"Local/ivr@hotline-[0-9a-f]{8};1", got[0].get("Channel"))
    assert re.fullmatch(r"\d+\.\d+", got[0].get("Uniqueid"))


async def test_abandon_03_ordering(sim):
    (got,) = await play(sim, SPEC_03)
    evs = [f.event for f in got]
    rna = got[evs.index("AgentRingNoAnswer")]
    assert (rna.get("Interface"), rna.get("RingTime")) == ("Local/1003@agents", "15000")
    assert evs.count("AgentRingNoAnswer") == 1  # the cancelled ring of 1004 has none
    ab = evs.index("QueueCallerAbandon")
    f = got[ab]
    assert (f.get("Position"), f.get("OriginalPosition"), f.get("HoldTime")) == ("1", "1", "19")
    caller1 = next(k for k, f in enumerate(got) if f.event == "Hangup" and f.get("Channel").endswith("hotline-" + got[0].get("Channel")[-10:-2] + ";1"))
    assert caller1 < ab < evs.index("QueueCallerLeave")
    cancels = [f for f in got if f.event == "DialEnd" and f.get("DialStatus") == "CANCEL"
               and f.get("DestChannel", "").startswith("Local/1004@")]
    assert len(cancels) == 2


# ------------------------------------------------------ the AMI session
async def test_banner_login_fullybooted_like_trace(sim):
    c = await Client.connect(sim.port)
    assert await c.banner() == b"Asterisk Call Manager/11.0.0\r\n"
    c.send(("Action", "Login"), ("ActionID", "login-1"), ("Username", USER),
           ("Secret", SECRET), ("Events", "on"))
    got = [await c.next_frame() for _ in range(3)]
    want = trace_frames(T01)[:3]
    assert got[0].headers == want[0].headers  # Success / ActionID / Authentication accepted
    for g, w in zip(got[1:], want[1:]):
        assert [k for k, _ in g.headers] == [k for k, _ in w.headers]
        assert g.event == w.event
    assert got[1].get("Status") == "Fully Booted"
    assert got[2].get("AccountID") == USER
    assert got[2].get("LocalAddress") == f"IPV4/TCP/127.0.0.1/{sim.port}"
    c.close()


async def test_login_failure_closes(sim):
    c = await Client.connect(sim.port)
    await c.banner()
    c.send(("Action", "Login"), ("ActionID", "bad-1"), ("Username", USER), ("Secret", "wrong"))
    f = await c.next_frame()
    assert f.headers == (("Response", "Error"), ("ActionID", "bad-1"), ("Message", "Authentication failed"))
    assert await c.eof()


async def test_actions_before_login_are_denied(sim):
    c = await Client.connect(sim.port)
    await c.banner()
    resp, _ = await c.action("Ping")
    assert (resp.response, resp.get("Message")) == ("Error", "Permission denied")
    c.close()


async def test_ping_logoff_unknown(sim):
    c = await Client.connect(sim.port)
    await c.login()
    await c.drain_events()
    resp, _ = await c.action("Ping")
    assert [k for k, _ in resp.headers] == ["Response", "ActionID", "Ping", "Timestamp"]
    assert resp.get("Ping") == "Pong" and re.fullmatch(r"\d{10}\.\d{6}", resp.get("Timestamp"))
    resp, _ = await c.action("NoSuchThing")
    assert resp.response == "Error" and resp.action_id.startswith("nosuchthing-")
    assert resp.get("Message").startswith("Invalid/unknown command: NoSuchThing.")
    assert [k for k, _ in resp.headers] == ["Response", "ActionID", "Message"]
    resp, _ = await c.action("Logoff")
    assert resp.headers[0] == ("Response", "Goodbye")
    assert resp.get("Message") == "Thanks for all the fish."
    assert await c.eof()


async def test_junk_from_client_never_crashes(sim):
    c = await Client.connect(sim.port)
    await c.login()
    await c.drain_events()
    c.send(raw=bytes(range(256)) * 4 + b"\r\n\r\n")           # binary junk
    c.send(raw=b"no colon here\r\nstill none\r\n\r\n")         # headerless frame: ignored
    c.send(raw=b"Foo: bar\r\nActionID: x-1\r\n\r\n")           # no Action
    c.send(raw=b"Action: \xff\xfe\x00\r\nActionID: x-2\r\n\r\n")  # undecodable action
    c.send(raw=b"A" * 200_000 + b"\r\n\r\n")                   # oversized frame
    c.send(raw=b"Action: Ping\nActionID: x-3\n\n")             # bare LF
    seen = {}
    while "x-3" not in seen:
        f = await c.next_frame()
        assert f is not None
        if f.action_id:
            seen[f.action_id] = f
    assert (seen["x-1"].response, seen["x-1"].get("Message")) == ("Error", "Missing action in request")
    assert seen["x-2"].response == "Error"
    assert seen["x-3"].get("Ping") == "Pong"
    c.close()
    # the server still serves
    d = await Client.connect(sim.port)
    await d.login()
    d.close()


async def test_junk_before_login_and_abrupt_close(sim):
    c = await Client.connect(sim.port)
    c.writer.write(b"\x00\x01\x02\xff" * 1000)
    c.writer.transport.abort()
    await asyncio.sleep(0.05)
    d = await Client.connect(sim.port)
    await d.login()
    resp, _ = await d.action("Ping")
    assert resp.get("Ping") == "Pong"
    d.close()


async def test_two_clients_receive_the_same_events(sim):
    a, b = await play(sim, SPEC_01, clients=2)
    assert a and normalise(a) == normalise(b)


async def test_events_off_gets_no_events(sim):
    c = await Client.connect(sim.port)
    await c.login(events="off")
    await sim.place_call(SPEC_01)
    assert await c.drain_events() == []
    c.close()


async def test_drop_connections(sim):
    c = await Client.connect(sim.port)
    await c.login()
    sim.drop_connections()
    with pytest.raises((ConnectionError, AssertionError)):
        assert not await c.eof()
        raise ConnectionError
    d = await Client.connect(sim.port)  # still listening
    await d.login()
    d.close()


async def test_speed_and_unscaled_fields(sim):
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    (got,) = await play(sim, SPEC_02)
    assert loop.time() - t0 < 1.0
    complete = next(f for f in got if f.event == "AgentComplete")
    assert (complete.get("Reason"), complete.get("TalkTime")) == ("caller", "9")


async def test_random_traffic_never_rings_a_busy_agent():
    s = PbxSimulator("127.0.0.1", 0, USER, SECRET, speed=2000.0, agents=TRACE_AGENTS, seed=3)
    await s.start()
    c = await Client.connect(s.port)
    await c.login()
    task = asyncio.create_task(s.run_traffic(
        120, mix={"repair": .5, "complaint": .2, "enquiry": .3}, abandon_ratio=0.15,
        callers=[("13800138000", "张三", "3100012345"), ("13900139001", "李四", "3100023456")],
        agents=["1001", "1002", "1003", "1004"], talk_s=(5, 30)))
    # read all along, as an AMI client must: the simulator drops a client
    # that leaves 10 000 frames unread (Asterisk's writetimeout)
    events: list[Frame] = []
    deadline = asyncio.get_running_loop().time() + 0.5
    while (left := deadline - asyncio.get_running_loop().time()) > 0:
        try:
            f = await c.next_frame(timeout=left)
        except asyncio.TimeoutError:
            break
        assert f is not None, "connection closed"
        events.append(f)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    events += await c.drain_events()
    await s.stop()
    c.close()
    live: Counter[str] = Counter()
    joined = Counter(f.event for f in events)
    assert joined["QueueCallerJoin"] >= 5
    assert joined["AgentConnect"] >= 1
    for f in events:
        ch = f.get("Channel") or ""
        m = re.match(r"Local/(\d+)@agents-[0-9a-f]{8};1$", ch)
        if not m:
            continue
        if f.event == "Newchannel":
            live[m.group(1)] += 1
            assert live[m.group(1)] == 1, f"agent {m.group(1)} rung while busy"
        elif f.event == "Hangup":
            live[m.group(1)] -= 1

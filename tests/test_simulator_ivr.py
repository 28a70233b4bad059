"""The PBX simulator places its calls through the FastAGI IVR (real TCP on
127.0.0.1): the real AGI server (ivr.agi) with the PostgreSQL lookup and the
outage registry, the simulator playing Asterisk's side of the dialogue
(cti.agi_peer) and putting the matching AMI events on the wire."""
from __future__ import annotations

import asyncio
import re
import wave
from datetime import datetime, timedelta, timezone
from pathlib import Path

import aiohttp
import pytest
from structlog.testing import capture_logs

from cti.agi_peer import agi_environment
from cti.customer_repo import import_customers_file
from cti.simulator import CallSpec, IvrMix, PbxSimulator
from ivr.agi import db_decide, start_agi_server
from ivr.menu import load_menu
from ivr.tts import PromptStore, outage_prompt_hook

from .harness import next_pop, running_service
from .test_simulator_vs_traces import (SECRET, TRACE_AGENTS, USER, Client, normalise, trace_frames)

ROOT = Path(__file__).resolve().parent.parent
TRACES = Path(__file__).parent / "fixtures" / "ami-traces" / "asterisk-22"
MENU = load_menu()
ZHANG = ("13800138000", "张三", "3100012345")           # 才湾2号台区, 10kV才湾线
OUTSIDE = ("13800138005", "蒋丽华", "3100020003")        # 湘山花园1号台区, 10kV湘山线


async def fake_engine(text, out, voice, rate, timeout):
    """A TTS engine that writes 0.5 s of silence at once (8 kHz mono 16-bit)."""
    with wave.open(str(out), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x00\x00" * 4000)


def fast_store(sounds_dir) -> PromptStore:
    return PromptStore(sounds_dir, engines=[fake_engine], generic_text=MENU.prompt("outage_generic"))


def playback(store: PromptStore, text: str) -> str:
    return str(store.path_for(text).with_suffix(""))


@pytest.fixture
async def world(pool, tmp_path):
    """Demo customers, an outage on 张三's transformer area, the AGI server."""
    result = await import_customers_file(pool, ROOT / "cti" / "data" / "demo_customers.csv")
    assert not result.errors
    from ivr.outage_repo import create_outage
    from ivr.outages import AreaType, NewOutage, OutageArea, OutageKind

    now = datetime.now(timezone.utc)
    async with pool.acquire() as conn:
        outage = await create_outage(conn, NewOutage(
            kind=OutageKind.FAULT, reason="10kV才湾线故障", actor="调度所",
            areas=(OutageArea(AreaType.TRANSFORMER_AREA, "才湾2号台区"),),
            start_at=now - timedelta(hours=1), expected_restore_at=now + timedelta(hours=3)))
    store = fast_store(tmp_path / "sounds")
    await outage_prompt_hook(store, pool)(outage)       # what publishing runs
    srv = await start_agi_server("127.0.0.1", 0, db_decide(pool), store, MENU,
                                 env_timeout=2.0, reply_timeout=5.0)
    yield type("World", (), {"outage": outage, "store": store, "agi": srv})
    await srv.stop()


async def simulator(agi_port: int | None, **kw) -> PbxSimulator:
    sim = PbxSimulator("127.0.0.1", 0, USER, SECRET, speed=1000.0, agents=TRACE_AGENTS, auth_fail_delay=0.01,
                       seed=5, agi_port=agi_port, agi_timeout=5.0, **kw)
    await sim.start()
    return sim


async def call_with_events(sim: PbxSimulator, spec: CallSpec):
    c = await Client.connect(sim.port)
    await c.login()
    await c.drain_events()
    placed = await asyncio.wait_for(sim.place_call(spec), 20)
    events = [f for f in await c.drain_events() if f.event]
    c.close()
    return placed, events


def chan_vars(frame) -> dict[str, str]:
    return dict(v.split("=", 1) for v in frame.get_all("ChanVariable"))


def spec(caller, choice="repair", agent="1001", **kw) -> CallSpec:
    num, name, _account = caller
    return CallSpec(num, name, choice, agent=agent, ring_s=2, talk_s=5, **kw)


# -- the AGI environment ----------------------------------------------------------------

def test_environment_is_the_traces_field_for_field():
    raw = (TRACES / "01-ivr-to-queue-answered.agi.raw").read_bytes()
    env = raw.split(b"\n\n", 1)[0] + b"\n\n"
    ours = agi_environment("127.0.0.1", 4573, "ivr", channel="Local/ivr@hotline-00000000;2",
                           uniqueid="1795374638.1", callerid="13800138000", calleridname="张三",
                           threadid=140380134901440, args=("enquiry",))
    assert ours == env


# -- calls through the IVR ------------------------------------------------------------------

async def test_caller_in_outage_area_hears_announcement_and_queue_events_carry_outage(world):
    sim = await simulator(world.agi.port)
    try:
        placed, events = await call_with_events(sim, spec(ZHANG, "repair"))
    finally:
        await sim.stop()
    ivr = placed.ivr
    assert ivr is not None and ivr.agi_status == "SUCCESS"
    announcement = world.outage.announcement
    assert playback(world.store, announcement) in ivr.transcript.played      # STREAM FILE of the outage prompt
    assert ivr.transcript.played[:2] == [playback(world.store, MENU.prompt("greeting")),
                                         playback(world.store, announcement)]
    assert ivr.transcript.variables == {"IVR_CHOICE": "repair", "__CUSTOMER_ID": "3100012345",
                                        "__OUTAGE_ID": world.outage.outage_no}
    assert ivr.transcript.got_eof and ivr.transcript.replies[-1] == "200 result=1"
    assert (placed.queue, placed.outcome, placed.agent) == ("repair", "answered", "1001")
    join = next(f for f in events if f.event == "QueueCallerJoin")
    assert chan_vars(join) == {"IVR_CHOICE": "repair", "CUSTOMER_ID": "3100012345",
                               "OUTAGE_ID": world.outage.outage_no}
    called = next(f for f in events if f.event == "AgentCalled")
    assert f"OUTAGE_ID={world.outage.outage_no}" in called.get_all("DestChanVariable")
    # the IVR's commands are on AMI, each as AGIExecStart/AGIExecEnd
    starts = [f.get("Command") for f in events if f.event == "AGIExecStart"]
    assert starts == ivr.transcript.commands
    assert starts[:2] == ["ANSWER", "GET VARIABLE CALLERID(name)"]
    assert [f.get("Digit") for f in events if f.event == "DTMFEnd"] == ["1", "1"]   # outage prompt, menu
    varsets = [(f.get("Variable"), f.get("Value")) for f in events if f.event == "VarSet"]
    assert ("__OUTAGE_ID", world.outage.outage_no) in varsets
    assert world.agi.stats["completed"] == 1


async def test_caller_outside_outage_area_hears_no_announcement(world):
    sim = await simulator(world.agi.port)
    try:
        placed, events = await call_with_events(sim, spec(OUTSIDE, "complaint", agent="1002"))
    finally:
        await sim.stop()
    t = placed.ivr.transcript
    assert t.played == [playback(world.store, MENU.prompt("greeting")), playback(world.store, MENU.prompt("menu"))]
    assert t.variables == {"IVR_CHOICE": "complaint", "__CUSTOMER_ID": "3100020003", "__OUTAGE_ID": ""}
    assert placed.queue == "complaint"
    join = next(f for f in events if f.event == "QueueCallerJoin")
    assert chan_vars(join) == {"IVR_CHOICE": "complaint", "CUSTOMER_ID": "3100020003", "OUTAGE_ID": ""}


async def test_ivr_decides_the_queue_not_the_callspec(world):
    # the spec says repair / customer 999 / outage X; the caller presses 3
    sim = await simulator(world.agi.port)
    try:
        placed, events = await call_with_events(sim, CallSpec(
            OUTSIDE[0], OUTSIDE[1], "repair", customer_id="999", outage_id="OUT-X", agent="1001",
            ring_order=("1002", "1001"), dtmf=("3",), ring_s=1, talk_s=1))
    finally:
        await sim.stop()
    assert placed.queue == "enquiry" and placed.agent in ("1001", "1003", "1004")
    after = events[next(i for i, f in enumerate(events) if f.event == "QueueCallerJoin"):]
    for f in after:
        if re.match(r"Local/ivr@hotline-[0-9a-f]{8};2$", f.get("Channel", "")):
            assert chan_vars(f) == {"IVR_CHOICE": "enquiry", "CUSTOMER_ID": "3100020003", "OUTAGE_ID": ""}, f
    assert all(f.get("Queue") in (None, "enquiry") for f in after if f.event != "QueueMemberStatus")


async def test_wrong_key_then_right_key(world):
    sim = await simulator(world.agi.port)
    try:
        with capture_logs() as logs:
            placed, events = await call_with_events(sim, spec(OUTSIDE, "complaint", agent="1002", dtmf=("9",)))
    finally:
        await sim.stop()
    t = placed.ivr.transcript
    names = {playback(world.store, text): n for n, text in MENU.prompts.items()}
    assert [names.get(p, p) for p in t.played] == ["greeting", "menu", "invalid", "menu"]
    assert t.pressed == ["9", "2"]
    assert placed.queue == "complaint" and t.variables["IVR_CHOICE"] == "complaint"
    assert [e["digits"] for e in logs if e["event"] == "ivr_invalid_key"] == ["9"]
    assert [f.get("Digit") for f in events if f.event == "DTMFBegin"] == ["9", "2"]


async def test_no_key_three_times_goes_to_enquiry_with_note(world):
    sim = await simulator(world.agi.port)
    try:
        placed, events = await call_with_events(sim, spec(OUTSIDE, "repair", dtmf=(None, None, None)))
    finally:
        await sim.stop()
    assert placed.queue == "enquiry" and placed.ivr.note.startswith("语音导航3次未按键")
    notes = [f.get("Value") for f in events if f.event == "VarSet" and f.get("Variable") == "__IVR_NOTE"]
    assert notes == [placed.ivr.note]


async def test_withheld_number_types_account_number(world):
    sim = await simulator(world.agi.port)
    try:
        placed, events = await call_with_events(sim, CallSpec("", "", "repair", agent="1001", account_no="3100012345",
                                                              ring_s=1, talk_s=1))
    finally:
        await sim.stop()
    t = placed.ivr.transcript
    assert t.pressed[0] == "3100012345"
    assert t.variables["__CUSTOMER_ID"] == "3100012345" and t.variables["__OUTAGE_ID"] == world.outage.outage_no
    join = next(f for f in events if f.event == "QueueCallerJoin")
    assert chan_vars(join)["CUSTOMER_ID"] == "3100012345"


async def test_hangup_mid_prompt_no_queue_and_server_keeps_serving(world):
    sim = await simulator(world.agi.port)
    try:
        with capture_logs() as logs:
            placed, events = await call_with_events(sim, spec(ZHANG, "repair", ivr_hangup_at=1))
            await asyncio.sleep(0.05)
        assert (placed.outcome, placed.queue, placed.agent) == ("ivr_hangup", "", None)
        t = placed.ivr.transcript
        assert t.caller_hung_up and t.got_eof
        # trace 11 on the wire: result=-1, then HANGUP + 511, VERBOSE still answered
        assert t.replies[-3:] == ["200 result=-1 endpos=28000",
                                  "HANGUP\n511 Command Not Permitted on a dead channel or intercept routine",
                                  "200 result=1"]
        assert t.commands[-1] == 'VERBOSE "caller hung up during prompt" 1'
        assert not t.variables
        kinds = [f.event for f in events]
        assert "QueueCallerJoin" not in kinds and "AgentCalled" not in kinds
        hangups = [f for f in events if f.event == "Hangup"]
        assert [h.get("Channel")[-2:] for h in hangups] == [";1", ";2"]
        ends = [f for f in events if f.event == "AGIExecEnd"]
        assert [(f.get("ResultCode"), f.get("Result")) for f in ends[-3:]] == [
            ("-1", "Failure"), ("511", "Command Not Permitted on a dead channel or intercept routine"),
            ("200", "Success")]
        # the phone half hangs up inside the prompt's AGIExecStart/End (trace 11)
        i_end = events.index(ends[-3])
        assert events[i_end - 1].event == "Hangup" and events[i_end - 1].get("Channel").endswith(";1")
        assert len([e for e in logs if e["event"] == "ivr_caller_hung_up"]) == 1
        assert world.agi.stats["hung_up"] == 1
        assert sim.busy_agents == frozenset()
        # the AGI server keeps serving
        placed2, _ = await call_with_events(sim, spec(OUTSIDE, "complaint", agent="1002"))
        assert placed2.queue == "complaint" and placed2.outcome == "answered"
    finally:
        await sim.stop()


async def test_agi_server_down_routes_to_enquiry(world):
    port = world.agi.port
    await world.agi.stop()
    sim = await simulator(port)
    try:
        with capture_logs():
            placed, events = await call_with_events(sim, spec(ZHANG, "repair"))
    finally:
        await sim.stop()
    assert placed.ivr.agi_status == "FAILURE" and "connect" in placed.ivr.transcript.failure
    assert placed.queue == "enquiry" and placed.outcome == "answered" and placed.agent in ("1001", "1003", "1004")
    assert placed.ivr.note == "ivr-unavailable"
    kinds = [f.event for f in events]
    assert "AGIExecStart" not in kinds
    assert kinds.index("Newstate") < kinds.index("QueueCallerJoin")      # answered, then queued
    join = next(f for f in events if f.event == "QueueCallerJoin")
    assert join.get("Queue") == "enquiry" and chan_vars(join)["IVR_CHOICE"] == "enquiry"
    assert ("__IVR_NOTE", "ivr-unavailable") in [(f.get("Variable"), f.get("Value")) for f in events
                                                 if f.event == "VarSet"]


async def test_agi_server_closing_early_routes_to_enquiry():
    async def rude(reader, writer):           # reads the environment, says nothing, closes
        while (await reader.readline()) not in (b"\n", b""):
            pass
        writer.close()

    srv = await asyncio.start_server(rude, "127.0.0.1", 0)
    sim = await simulator(srv.sockets[0].getsockname()[1])
    try:
        placed, _ = await call_with_events(sim, spec(ZHANG, "complaint", agent="1002"))
    finally:
        await sim.stop()
        srv.close()
    assert placed.queue == "enquiry" and placed.ivr.note == "no-valid-choice"


async def test_without_agi_config_nothing_changes():
    sim = await simulator(None)
    try:
        placed, events = await call_with_events(sim, CallSpec(*ZHANG[:2], "repair", customer_id="3100012345",
                                                              outage_id="OUT-1", ring_s=1, talk_s=1))
    finally:
        await sim.stop()
    assert placed.ivr is None and placed.queue == "repair"
    assert not [f for f in events if f.event.startswith(("AGIExec", "DTMF"))]


# -- the AMI side field for field against trace 01 ---------------------------------------

AGI_EVENTS = {"AGIExecStart", "AGIExecEnd", "DTMFBegin", "DTMFEnd"}


async def test_agi_events_match_trace_01_frame_for_frame():
    """A FastAGI server sending trace 01's exact commands: the simulator's AMI
    output equals the capture (IVR, queue, agent), AGIExec*/DTMF* included."""
    from .test_simulator_vs_traces import EMITTED, VARSET_NAMES, relevant

    commands = [m.group(1) for m in re.finditer(r"\] >>> (.*)", (TRACES / "01-ivr-to-queue-answered.agi")
                                                 .read_text("utf-8"))]
    got_env: list[bytes] = []

    async def scripted(reader, writer):
        env = b""
        while (line := await reader.readline()) not in (b"\n", b""):
            env += line
        got_env.append(env)
        for cmd in commands:
            writer.write(cmd.encode() + b"\n")
            await writer.drain()
            await reader.readline()
        writer.write_eof()
        await reader.read()
        writer.close()

    srv = await asyncio.start_server(scripted, "127.0.0.1", 0)
    sim = PbxSimulator("127.0.0.1", 0, USER, SECRET, speed=200.0, agents=TRACE_AGENTS, auth_fail_delay=0.01,
                       agi_port=srv.sockets[0].getsockname()[1])
    await sim.start()
    try:
        placed, got = await call_with_events(sim, CallSpec("13800138000", "张三", "repair", agent="1001",
                                                           ring_s=2, talk_s=5))
    finally:
        await sim.stop()
        srv.close()
    assert placed.ivr.transcript.replies == ["200 result=0", "200 result=1 (张三)", "200 result=0 endpos=16000",
                                             "200 result=1", "200 result=1", "200 result=1", "200 result=1",
                                             "200 result=1"]
    env = dict(line.split(": ", 1) for line in got_env[0].decode().splitlines())
    assert env["agi_channel"] == placed.channel and env["agi_uniqueid"] == placed.uniqueid
    assert env["agi_callerid"] == "13800138000" and env["agi_calleridname"] == "张三"
    assert env["agi_arg_1"] == "enquiry" and env["agi_version"] == "22.10.1"

    def pick(frames):
        out = []
        for f in frames:
            if f.event in AGI_EVENTS or (f.event in EMITTED and f in relevant([f])):
                if f.event == "VarSet" and f.get("Variable") not in VARSET_NAMES:
                    continue
                out.append(f)
        return out

    def ids(frames):
        cmd_ids: dict[str, str] = {}
        return [tuple((k, cmd_ids.setdefault(v, f"C{len(cmd_ids)}") if k == "CommandId" else v) for k, v in hs)
                for hs in normalise(frames)]

    want = ids(pick(trace_frames(TRACES / "01-ivr-to-queue-answered.ami")))
    have = ids(pick(got))
    # MIXMONITOR_FILENAME carries a wall-clock stamp in both
    strip = [tuple(kv for kv in hs if not (kv[0] == "Value" and kv[1].endswith(".wav"))) for hs in want]
    mine = [tuple(kv for kv in hs if not (kv[0] == "Value" and kv[1].endswith(".wav"))) for hs in have]
    assert [dict(h)["Event"] for h in mine] == [dict(h)["Event"] for h in strip]
    for a, b in zip(mine, strip):
        assert a == b


# -- random traffic through the IVR ----------------------------------------------------------

async def test_random_traffic_goes_through_the_ivr(world):
    sim = await simulator(world.agi.port)
    c = await Client.connect(sim.port)
    await c.login()
    callers = [ZHANG, OUTSIDE, ("13800138006", "刘建国", "3100012348"), ("", "", "")]
    task = asyncio.create_task(sim.run_traffic(
        600, abandon_ratio=0.1, callers=callers, talk_s=(5, 20),
        ivr_mix=IvrMix(wrong_key=0.3, no_key=0.1, hangup=0.2, withheld=0.1, withheld_account=0.5)))
    await asyncio.sleep(2.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.5)
    events = [f for f in await c.drain_events() if f.event]
    c.close()
    await sim.stop()
    stats = world.agi.stats
    assert stats["sessions"] >= 5 and stats["failed"] == 0 and stats["bad_peer"] == 0
    assert stats["hung_up"] >= 1 and stats["completed"] >= 3
    joins = [f for f in events if f.event == "QueueCallerJoin"]
    assert joins and all(chan_vars(j)["IVR_CHOICE"] == j.get("Queue") for j in joins)
    assert any(chan_vars(j)["OUTAGE_ID"] == world.outage.outage_no for j in joins)


# -- end to end: the service in demo mode ------------------------------------------------------

async def _next_pop(ws, timeout=15.0):
    return await next_pop(ws, timeout)


async def test_end_to_end_ivr_to_queue_to_screen_pop(db_url):
    async with running_service(db_url) as svc, aiohttp.ClientSession() as http:
        await svc.login(http)
        from cti.app import services_key

        agi = svc.app[services_key]["agi"]
        assert svc.simulator.agi_port == agi.port
        svc.app[services_key]["prompts"].engines = [("fake", fake_engine)]   # no real TTS in the test
        async with http.ws_connect(f"{svc.base_url}/ws/agent/1002") as ws:
            # the caller means repair but presses 2 in the IVR: the IVR's choice counts
            call = asyncio.create_task(svc.simulator.place_call(CallSpec(
                caller_num="13800138000", caller_name="张三", ivr_choice="repair", agent="1002",
                dtmf=("2",), ring_s=2, talk_s=3)))
            pop = await _next_pop(ws)
            placed = await asyncio.wait_for(call, 30)
        assert placed.ivr.transcript.variables["IVR_CHOICE"] == "complaint"
        assert placed.queue == "complaint" and placed.agent == "1002"
        assert pop["agent"] == "1002" and pop["queue"] == "complaint"
        assert pop["customer"]["account_no"] == "3100012345"
        assert agi.stats["completed"] >= 1

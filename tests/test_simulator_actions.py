"""The simulator's actions against the real Asterisk 22 captures, field for
field: QueueStatus / QueueSummary / CoreShowChannels / Status (trace 06),
Originate (trace 09), QueuePause / QueueAdd / QueueRemove / QueuePenalty and
their error texts (trace 05).  The actions are the ones recorded in each
trace's ``.txt``, sent with the same ActionIDs over real TCP."""
from __future__ import annotations

import asyncio
import re
from collections import Counter
from pathlib import Path

import pytest

from cti.frame import Frame
from cti.simulator import CallSpec, PbxSimulator

from .test_simulator_vs_traces import SECRET, TRACE_AGENTS, USER, Client, trace_frames

TRACES = Path(__file__).parent / "fixtures" / "ami-traces" / "asterisk-22"
T05, T06, T09 = (TRACES / f"{n}.ami" for n in (
    "05-agent-pause-unpause-add-remove", "06-status-snapshots", "09-originate-click-to-call"))


def recorded_actions(path: Path) -> list[list[tuple[str, str]]]:
    """The raw actions listed under 'Actions sent' in a trace's .txt."""
    out: list[list[tuple[str, str]]] = []
    cur: list[tuple[str, str]] | None = None
    for line in path.with_suffix(".txt").read_text(encoding="utf-8").splitlines():
        if re.match(r"\s*\[\+\s*[\d.]+s\]", line):
            cur = []
            out.append(cur)
        elif cur is not None and line.startswith("      ") and ": " in line:
            k, v = line.strip().split(": ", 1)
            cur.append((k, v))
        elif cur is not None and line.strip() and not line.startswith("      "):
            cur = None
    return [a for a in out if a]


def by_action_id(frames: list[Frame], aid: str) -> list[Frame]:
    return [f for f in frames if f.action_id == aid]


def keys(f: Frame) -> tuple[str, ...]:
    return tuple(k for k, _ in f.headers)


_COUNTER = re.compile(r"-[0-9a-f]{8};")
VOLATILE = {"Uniqueid", "Linkedid", "Duration", "Seconds", "LastCall", "LastPause", "LoginTime",
            "CallsTaken", "Wait", "Holdtime", "HoldTime", "TalkTime", "Completed", "Abandoned",
            "ServicelevelPerf", "LongestHoldTime", "ActionID"}


def stable(f: Frame, skip: set[str] = frozenset()) -> tuple[tuple[str, str], ...]:
    out = []
    for k, v in f.headers:
        if k in VOLATILE or k in skip:
            v = "<v>"
        elif k in ("BridgeId", "BridgeID"):
            v = "<bridge>" if v else ""
        elif k.endswith("Channel") or k.startswith("ChanVariable("):
            v = _COUNTER.sub("-N;", v)
        elif k == "ApplicationData" or k == "Data":
            v = v if not v.isdigit() else "<secs>"
        out.append((_COUNTER.sub("-N;", k), v))
    return tuple(out)


@pytest.fixture
async def sim():
    s = PbxSimulator("127.0.0.1", 0, USER, SECRET, speed=200.0, agents=TRACE_AGENTS,
                     auth_fail_delay=0.01, seed=7)
    await s.start()
    yield s
    await s.stop()


async def _client(sim) -> Client:
    c = await Client.connect(sim.port)
    await c.login()
    await c.drain_events()
    return c


async def _send_raw(c: Client, action: list[tuple[str, str]]) -> tuple[Frame, list[Frame]]:
    """Send a recorded action as is; return its Response and every frame
    with its ActionID up to the end of its list (or just the Response)."""
    aid = dict(action)["ActionID"]
    c.send(*action)
    resp = None
    items: list[Frame] = []
    while True:
        f = await c.next_frame()
        assert f is not None
        if f.action_id != aid:
            continue
        if f.event is None:
            resp = f
            if f.get("EventList") != "start":
                return resp, items
        else:
            items.append(f)
            if f.get("EventList") == "Complete":
                return resp, items


# ---------------------------------------------------------------- trace 06
async def _trace06_scene(sim: PbxSimulator) -> list[asyncio.Task]:
    """As recorded: 1001 talks to 13800138000 (repair), two callers wait in
    repair, 1002 is paused in repair ('meeting')."""
    c = await _client(sim)
    resp, _ = await c.action("QueuePause", ("Queue", "repair"), ("Interface", "Local/1002@agents"),
                             ("Paused", "true"), ("Reason", "meeting"))
    assert resp.response == "Success"
    c.close()
    common = dict(ivr_choice="repair", outage_id="OUT-20261122-0042", via_ivr=False)
    talk = asyncio.create_task(sim.place_call(CallSpec(
        "13800138000", "张三", customer_id="3100038000", agent="1001", outcome="answered",
        ring_s=2, talk_s=900, **common)))
    await asyncio.sleep(0.05)
    waits = [asyncio.create_task(sim.place_call(CallSpec(
        num, name, customer_id="31000" + num[-5:], agent="", outcome="abandoned", wait_s=900, **common)))
        for num, name in (("13800138011", "国网客户"), ("13800138012", "赵六"))]
    await asyncio.sleep(0.05)
    assert len(sim._live) == 8
    return [talk, *waits]


async def test_status_snapshots_match_trace_06(sim):
    tasks = await _trace06_scene(sim)
    want = trace_frames(T06)
    actions = [a for a in recorded_actions(T06)
               if dict(a)["Action"] in ("QueueStatus", "QueueSummary", "CoreShowChannels", "Status")]
    assert [dict(a)["ActionID"] for a in actions] == [
        "queuestatus-5", "queuesummary-6", "coreshowchannels-7", "status-8", "status-9", "status-10"]
    c = await _client(sim)
    # the recorded Status for one channel names Local/repair@hotline-0000000b;2: ours is the talking caller
    talking = next(ch for ch in sim._live.values() if ch.cid_num == "13800138000" and ch.name.endswith(";2"))
    try:
        for action in actions:
            action = [(k, talking.name if k == "Channel" else v) for k, v in action]
            aid = dict(action)["ActionID"]
            resp, items = await _send_raw(c, action)
            w = by_action_id(want, aid)
            w_resp, w_items = w[0], w[1:]
            assert resp.headers == w_resp.headers, aid  # Response/ActionID/EventList/Message
            # the closing event, exactly (ListItems counts every row, Items too for Status)
            assert items[-1].headers == w_items[-1].headers, aid
            got_rows, want_rows = items[:-1], w_items[:-1]
            assert [f.event for f in got_rows if f.event != "QueueMember"] == \
                [f.event for f in want_rows if f.event != "QueueMember"], aid
            all_vars = bool(dict(action).get("AllVariables"))
            for g in got_rows:  # field names, order and repeats as on the wire
                k = keys(g)
                want_keys = {keys(x) for x in want_rows if x.event == g.event}
                if all_vars:  # dumps every variable the dialplan set: the count differs
                    k = tuple(x for x in k if x != "Variable")
                    want_keys = {tuple(x for x in w if x != "Variable") for w in want_keys}
                    assert "Variable" in keys(g)
                assert k in want_keys, (aid, g.event, keys(g))
            if all_vars:
                continue
            skip = {"Variable"} if dict(action).get("Variables") else set()
            assert Counter(stable(f, skip) for f in got_rows) == Counter(stable(f, skip) for f in want_rows), aid
    finally:
        c.close()
        for t in tasks:
            t.cancel()


# ---------------------------------------------------------------- trace 05
async def test_queue_member_actions_match_trace_05(sim):
    want = trace_frames(T05)
    c = await _client(sim)
    try:
        for action in recorded_actions(T05):
            name = dict(action)["Action"]
            if name in ("Login", "Logoff"):
                continue
            aid = dict(action)["ActionID"]
            c.send(*action)
            # read up to our Response, then everything up to a Ping's answer
            frames: list[Frame] = []
            while True:
                f = await c.next_frame()
                frames.append(f)
                if f.event is None and f.action_id == aid:
                    break
            frames += [f for f in await c.drain_events()]
            if name == "QueueStatus":
                while not any(f.event == "QueueStatusComplete" for f in frames):
                    frames.append(await c.next_frame())
            w_idx = next(i for i, f in enumerate(want) if f.event is None and f.action_id == aid)
            w_resp = want[w_idx]
            resp = next(f for f in frames if f.event is None and f.action_id == aid)
            assert resp.headers == w_resp.headers, aid  # incl. the exact error texts
            # the events it caused (trace: after the Response, before the next Response)
            w_events = []
            for f in want[w_idx + 1:]:
                if f.event is None:
                    break
                if f.event not in ("DeviceStateChange",):
                    w_events.append(f)
            got_events = [f for f in frames if f.event and f.event not in ("DeviceStateChange",)]
            assert [f.event for f in got_events] == [f.event for f in w_events], aid
            for g, w in zip(got_events, w_events):
                assert keys(g) == keys(w), (aid, g.event)
                assert stable(g) == stable(w), (aid, g.event)
    finally:
        c.close()


# ---------------------------------------------------------------- trace 09
async def test_originate_matches_trace_09_and_runs_once_per_action_id(sim):
    sim.originate_noanswer = {"1004"}
    want = trace_frames(T09)
    c = await _client(sim)
    try:
        for action in recorded_actions(T09):
            if dict(action)["Action"] != "Originate":
                continue
            aid = dict(action)["ActionID"]
            c.send(*action)
            resp = final = None
            events: list[str] = []
            while final is None:
                f = await c.next_frame(10)
                if f.event is None and f.action_id == aid:
                    resp = f
                elif f.event == "OriginateResponse" and f.action_id == aid:
                    final = f
                elif f.event:
                    events.append(f.event)
            w_resp = next(f for f in want if f.event is None and f.action_id == aid)
            w_final = next(f for f in want if f.event == "OriginateResponse" and f.action_id == aid)
            assert resp.headers == w_resp.headers
            assert keys(final) != () and [k for k in (_COUNTER.sub("-N;", k) for k in keys(final))] == \
                [_COUNTER.sub("-N;", k) for k in keys(w_final)]
            assert stable(final) == stable(w_final)
            assert events.index("Newchannel") < events.index("DialBegin")
            assert sim.originate_counts[aid] == 1
        assert final.get("Uniqueid") == "<unknown>" and final.get("Channel") == "Local/1004@agents"
    finally:
        c.close()


async def test_action_errors_and_unknown_channel(sim):
    c = await _client(sim)
    try:
        resp, _ = await c.action("Status", ("Channel", "Local/nobody@x-00000000;1"))
        assert (resp.response, resp.get("Message")) == ("Error", "No such channel")
        resp, _ = await c.action("Originate")
        assert resp.response == "Error"
        resp, items = await _send_raw(c, [("Action", "QueueStatus"), ("ActionID", "qs-x"), ("Queue", "nosuch")])
        assert resp.response == "Success" and items[-1].get("ListItems") == "0"
    finally:
        c.close()

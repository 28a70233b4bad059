"""Resync after an AMI outage, end to end: the whole service (simulator over
real TCP → manager → pipeline → tracker → PostgreSQL) loses its AMI link in
the middle of calls; while it is away some calls end, one is answered, a new
one starts.  On reconnect the resync must close the ended ones with a
recorded reason, continue the live ones, adopt the new one, and count every
call once.  Plus: an Originate cut before its answer runs exactly once."""
from __future__ import annotations

import asyncio

import asyncpg
import pytest

from cti.ami import AmiDisconnected
from cti.app import manager_key, services_key
from cti.frame import Frame
from cti.live import build_snapshot
from cti.normalise import Normaliser
from cti.resync import ENDED_WHILE_DISCONNECTED, TrackerView, reconcile
from cti.simulator import CallSpec, PbxSimulator
from cti.tracker import CallState, CallTracker

from .harness import Inbox, resyncing_manager, running_service, until



async def _until(pred, timeout=10.0, step=0.02):
    return await until(pred, timeout, step)


def _linkedid_of(sim: PbxSimulator, caller_num: str) -> str:
    for ch in sim._live.values():
        if ch.cid_num == caller_num and ch.name.endswith(";2") and "@hotline" in ch.name:
            return ch.linkedid
    raise AssertionError(f"no live call from {caller_num}")


async def test_outage_mid_call_closes_continues_and_adopts_calls_once(db_url):
    async with running_service(db_url, ami_backoff_initial_s=0.05,
                               ami_backoff_max_s=0.2) as svc:
        sim, pipeline = svc.simulator, svc.pipeline
        resync = svc.app[services_key]["resync"]
        assert await _until(lambda: resync.runs >= 1)  # the resync of the first login
        ended: dict[str, int] = {}
        answered: dict[str, int] = {}
        last: dict[str, tuple] = {}

        def listener(event, call):
            if call is None:
                return
            prev = last.get(call.linkedid, (None, ""))
            if call.state is CallState.ENDED and prev[0] is not CallState.ENDED:
                ended[call.linkedid] = ended.get(call.linkedid, 0) + 1
            if call.outcome == "answered" and prev[1] != "answered":
                answered[call.linkedid] = answered.get(call.linkedid, 0) + 1
            last[call.linkedid] = (call.state, call.outcome)

        pipeline.listeners.append(listener)
        direct = dict(via_ivr=False, outage_id="")
        # virtual seconds, 20 per real second
        specs = {
            "A": CallSpec("13800000001", "张三", "repair", "3100000001", agent="1001", outcome="answered",
                          ring_s=2, talk_s=110, **direct),           # talks across the outage
            "B": CallSpec("13800000002", "李四", "repair", "3100000002", agent="", outcome="abandoned",
                          wait_s=30, **direct),                       # hangs up during the outage
            "C": CallSpec("13800000003", "王五", "complaint", "3100000003", agent="1002", outcome="caller_hangup",
                          ring_s=2, talk_s=20, **direct),             # ends during the outage
            "E": CallSpec("13800000005", "国网客户", "enquiry", "3100000005", agent="1003", outcome="answered",
                          wait_s=24, ring_s=2, talk_s=110, **direct),  # answered during the outage
        }
        tasks = {k: asyncio.create_task(sim.place_call(s)) for k, s in specs.items()}
        await asyncio.sleep(0.2)
        lids = {k: _linkedid_of(sim, s.caller_num) for k, s in specs.items()}
        await pipeline.drain()
        assert await _until(lambda: (c := pipeline.tracker.get(lids["C"])) is not None
                            and c.state is CallState.CONNECTED)
        assert pipeline.tracker.get(lids["E"]).state is CallState.QUEUED

        # the outage: TCP cut, reconnects refused for a while
        sim.accepting = False
        sim.drop_connections()
        manager = svc.app[manager_key]
        assert await _until(lambda: manager.state != "logged_in")
        await asyncio.sleep(0.5)
        specs["D"] = CallSpec("13800000004", "赵六", "enquiry", "3100000004", agent="", outcome="abandoned",
                              wait_s=110, **direct)                    # starts during the outage
        tasks["D"] = asyncio.create_task(sim.place_call(specs["D"]))
        await asyncio.sleep(0.05)
        lids["D"] = _linkedid_of(sim, "13800000004")
        assert await _until(lambda: tasks["B"].done() and tasks["C"].done(), 5)
        assert await _until(lambda: any(ch.linkedid == lids["E"] and ch.bridge for ch in sim._live.values()), 5)
        assert not tasks["A"].done() and not tasks["E"].done()

        sim.accepting = True
        assert await _until(lambda: resync.runs >= 2, 10)
        plan = resync.last_plan
        assert {c.linkedid for c in plan.closed} == {lids["B"], lids["C"]}
        assert {c.linkedid for c in plan.adopted} == {lids["D"]}
        assert lids["E"] in {c.linkedid for c in plan.continued}
        await pipeline.drain()
        tr = pipeline.tracker
        assert tr.get(lids["B"]).close_reason == ENDED_WHILE_DISCONNECTED
        assert tr.get(lids["C"]).outcome == "answered"
        assert tr.get(lids["E"]).state is CallState.CONNECTED and tr.get(lids["E"]).agent == "1003"
        assert tr.get(lids["D"]).state is CallState.QUEUED and tr.get(lids["D"]).queue == "enquiry"
        live = resync.live.state
        assert [e.uniqueid for e in live.waiting("enquiry")] == [tr.get(lids["D"]).caller_uniqueid]

        # the live calls go on and end with their own events, tracked as usual
        await asyncio.wait_for(asyncio.gather(*tasks.values()), 20)
        await pipeline.drain()
        for k in "ADE":
            call = tr.get(lids[k])
            assert call.state is CallState.ENDED, (k, call)
            assert call.close_reason == "", k
        assert tr.get(lids["D"]).outcome == "abandoned"
        assert tr.get(lids["E"]).talk_time == 110 and tr.get(lids["A"]).talk_time == 110
        assert ended == {lid: 1 for lid in lids.values()}, ended
        assert answered == {lids["A"]: 1, lids["C"]: 1, lids["E"]: 1}, answered

    conn = await asyncpg.connect(db_url)
    try:
        rows = {r["linkedid"]: r for r in await conn.fetch("SELECT * FROM calls")}
    finally:
        await conn.close()
    assert set(rows) == set(lids.values())  # one row per call, none twice
    want = {"A": ("answered", ""), "B": ("unknown", ENDED_WHILE_DISCONNECTED),
            "C": ("answered", ENDED_WHILE_DISCONNECTED), "D": ("abandoned", ""), "E": ("answered", "")}
    for k, (outcome, reason) in want.items():
        r = rows[lids[k]]
        assert (r["state"], r["outcome"], r["close_reason"]) == ("ended", outcome, reason), (k, dict(r))
    assert rows[lids["E"]]["agent"] == "1003" and rows[lids["A"]]["agent"] == "1001"


async def test_originate_cut_before_its_answer_runs_once():
    sim = PbxSimulator("127.0.0.1", 0, "u", "s", speed=50.0, auth_fail_delay=0.01)
    await sim.start()
    try:
        async with resyncing_manager(sim) as (m, _pipeline, resync):
            sim.originate_response_delay_s = 100.0  # Asterisk runs it, the answer is slow
            act = {"Action": "Originate", "ActionID": "c2c-once-1", "Channel": "Local/1001@agents",
                   "Context": "click2call", "Exten": "13800138000", "Priority": "1",
                   "CallerID": '"张三" <13800138000>', "Async": "true"}
            call = asyncio.create_task(m.action(act, timeout=30))
            raw = None
            assert await _until(lambda: sim.originate_counts["c2c-once-1"] == 1)
            # panoramisk's own API too: it would queue this one for FullyBooted
            raw = m.send_action({"Action": "Originate", "ActionID": "c2c-once-2", "Channel": "Local/1002@agents",
                                 "Context": "click2call", "Exten": "13800138001", "Priority": "1", "Async": "true"})
            assert await _until(lambda: sim.originate_counts["c2c-once-2"] == 1)
            sim.drop_connections()
            with pytest.raises(AmiDisconnected):
                await asyncio.wait_for(call, 5)
            with pytest.raises(AmiDisconnected):
                await asyncio.wait_for(raw, 5)
            # reconnect, login, FullyBooted, resync: nothing re-sent
            assert await _until(lambda: m.logins == 2 and resync.runs >= 2)
            await asyncio.sleep(0.3)
            assert sim.originate_counts == {"c2c-once-1": 1, "c2c-once-2": 1}
            assert not m.awaiting_actions and not m.protocol.pending
            assert m.stats.actions_disconnected >= 1
            # and the link works: a fresh Originate is answered, its OriginateResponse arrives
            sim.originate_response_delay_s = 0
            resp = await m.originate({"Channel": "Local/1003@agents", "Context": "click2call",
                                      "Exten": "13800138002", "Priority": "1", "ActionID": "c2c-once-3"},
                                     timeout=5, answer_timeout=5)
            assert resp.event == "OriginateResponse" and resp.get("Response") == "Success"
            assert sim.originate_counts["c2c-once-3"] == 1
    finally:
        await sim.stop()


# ------------------------------------------------------------- pure parts
def _frames(*blocks: str) -> list[Frame]:
    out = []
    for b in blocks:
        out.append(Frame(tuple((k, v.lstrip(" ")) for k, _, v in
                               (line.partition(":") for line in b.strip("\n").splitlines()))))
    return out


def _chan(uid: str, lid: str, name: str, app: str = "", bridge: str = "", num: str = "<unknown>") -> Frame:
    return _frames(f"""Event: CoreShowChannel
Channel: {name}
ChannelState: 6
CallerIDNum: {num}
CallerIDName: <unknown>
Uniqueid: {uid}
Linkedid: {lid}
ChanVariable: IVR_CHOICE=repair
Application: {app}
ApplicationData: repair,,,,
Duration: 00:00:07
BridgeId: {bridge}""")[0]


def test_reconcile_is_pure_and_handles_each_case():
    tracker = CallTracker()
    from cti.tracker import Call
    gone = Call("1.1", caller_num="138", state=CallState.QUEUED, queued_at=10.0, channels=frozenset({"1.1", "1.2"}))
    talking = Call("2.1", state=CallState.QUEUED, queued_at=10.0, caller_uniqueid="2.2",
                   channels=frozenset({"2.1", "2.2", "2.9"}))
    for c in (gone, talking):
        tracker.adopt(c)
    snap = build_snapshot(100.0, channels=[
        _chan("2.1", "2.1", "Local/repair@hotline-00000001;1"),
        _chan("2.2", "2.1", "Local/repair@hotline-00000001;2", "Queue", "br-1", "13800138000"),
        _chan("2.3", "2.1", "Local/1001@agents-00000002;1", "AppQueue", "br-1"),
        _chan("3.1", "3.1", "Local/repair@hotline-00000003;1"),
        _chan("3.2", "3.1", "Local/repair@hotline-00000003;2", "Queue", "", "13900139000"),
    ], queue_status=_frames("""Event: QueueMember
Queue: repair
Name: Agent 1001
Location: Local/1001@agents
Status: 2
Paused: 0""", """Event: QueueEntry
Queue: repair
Position: 1
Channel: Local/repair@hotline-00000003;2
Uniqueid: 3.2
CallerIDNum: 13900139000
CallerIDName: 赵六
Wait: 5"""), queue_summary=())
    view = TrackerView.of(tracker)
    plan = reconcile(view, snap, 100.0)
    assert plan == reconcile(view, snap, 100.0)  # pure, deterministic
    assert [(c.linkedid, c.reason, c.outcome) for c in plan.closed] == [
        ("1.1", ENDED_WHILE_DISCONNECTED, "unknown")]
    (cont,) = plan.continued
    assert (cont.linkedid, cont.state, cont.agent, cont.outcome) == ("2.1", CallState.CONNECTED, "1001", "answered")
    assert cont.channels == frozenset({"2.1", "2.2", "2.3"})  # 2.9 hung up while we were away
    (new,) = plan.adopted
    assert (new.linkedid, new.state, new.queue, new.caller_num, new.caller_uniqueid, new.queued_at) == (
        "3.1", CallState.QUEUED, "repair", "13900139000", "3.2", 95.0)
    assert new.ivr_choice == "repair"


def test_a_late_hangup_after_a_resync_close_counts_nothing():
    tracker = CallTracker()
    norm = Normaliser()
    from cti.tracker import Call
    tracker.adopt(Call("5.1", state=CallState.CONNECTED, answered_at=1.0, outcome="answered",
                       channels=frozenset({"5.1", "5.2"})))
    closed = tracker.close_call("5.1", ENDED_WHILE_DISCONNECTED, 50.0)
    assert closed.state is CallState.ENDED and closed.outcome == "answered"
    assert tracker.close_call("5.1", ENDED_WHILE_DISCONNECTED, 51.0) is None  # once
    hangup = _frames("""Event: Hangup
Privilege: call,all
Channel: Local/repair@hotline-00000005;2
ChannelState: 6
ChannelStateDesc: Up
CallerIDNum: 138
CallerIDName: x
Uniqueid: 5.2
Linkedid: 5.1
Cause: 16
Cause-txt: Normal Clearing""")[0]
    ev = norm(hangup, 60.0)
    assert tracker.apply(ev) is None  # no new call, no second end
    assert len(tracker) == 0 and [c.linkedid for c in tracker.recently_ended()] == ["5.1"]
    assert tracker.get("5.1").ended_at == 50.0


async def test_draft_of_a_call_that_ended_while_disconnected_is_withdrawn(db_url):
    import json

    import aiohttp

    async with running_service(db_url, ami_backoff_initial_s=0.05, ami_backoff_max_s=0.2) as svc, \
            aiohttp.ClientSession() as http:
        await svc.login(http)
        sim = svc.simulator
        resync = svc.app[services_key]["resync"]
        assert await _until(lambda: resync.runs >= 1)
        async with http.ws_connect(f"{svc.base_url}/ws/agent/1004") as ws:
            # rings 1004 for 40 virtual s (2 real s), then the caller gives up
            task = asyncio.create_task(sim.place_call(CallSpec(
                "13800138000", "张三", "enquiry", "", agent="", outcome="abandoned", ring_order=("1004",),
                ring_s=40, wait_s=40, via_ivr=False)))
            box = Inbox(ws)
            pop = await box.pop()
            sim.accepting = False
            sim.drop_connections()
            await asyncio.wait_for(task, 20)
            sim.accepting = True
            assert await _until(lambda: resync.runs >= 2, 10)
            withdrawn = await box.next("screen_pop_withdrawn")
    assert withdrawn["linkedid"] == pop["linkedid"]
    assert withdrawn["reason"] == "ended_while_disconnected"
    conn = await asyncpg.connect(db_url)
    try:
        status = await conn.fetchval("SELECT status FROM work_orders WHERE id = $1", pop["order"]["id"])
    finally:
        await conn.close()
    assert status == "cancelled"

"""Issue #8: the AMI link cut mid-storm, with resync and zero loss.

The whole service (tests/harness.py: simulator over real TCP → AMI manager →
pipeline → tracker → PostgreSQL, websockets) takes a storm of queue calls
(~12/s: answered, caller hang-ups, ringall with a loser, rrmemory with a
member who rings out, abandoned with and without rings) over 40 agents,
each with a websocket logged in as that agent.  The AMI TCP link is cut
twice mid-storm; while it is down reconnects are refused and the storm goes
on.  The simulator writes Asterisk's CDR rows (as cdr_pgsql would) into the
``cdr`` table at every hang-up.  At each cut, besides the random traffic:

* a call seen ringing before the cut, answered and ended inside the gap;
* a ringall call seen ringing two agents before the cut, answered by one of
  them inside the gap and still talking after it;
* a call that starts inside the gap and is still talking after it;
* three short calls that start *and* end inside the gap (AMI never shows them).

Asserted once the storm has drained (waiting on conditions, no fixed sleeps):

* every simulated call has exactly one ``calls`` row, ``ended``, with its
  true outcome (``answered`` and the answering agent for answered and
  caller-hang-up calls, ``abandoned`` otherwise) and queue; none is left
  open in the tracker; each ended exactly once there;
* the calls AMI never showed are exactly the ones recorded from the CDR
  (``close_reason`` ``recovered_from_cdr``), all inside a gap, the short gap
  calls among them; the calls seen before a cut and ended inside it are
  closed ``ended_while_disconnected`` with the outcome and agent from their
  CDR rows; the gap-spanning calls are continued / adopted and end by their
  own events; a further CDR pass records nothing more (once);
* screen-pops: exactly one per AgentCalled the CTI received (a member rung
  again after a no-answer gets another one), so none replayed by a resync;
  exactly one for every answered call whose answering agent's ring the CTI
  saw; every AgentCalled written to the socket more than 1.5 s before a cut
  or after the resync that followed it was received (nothing lost while up);
* the only draft work orders left are the answering agents': none for a
  ring that was not answered, including the loser of a ringall answered
  while the link was down;
* handler errors, pipeline overflows, AMI reader/sink errors, screen-pop
  failures, resync and CDR failures, tracker evictions stay at zero; no
  websocket message dropped; the disk spool is empty.

* late screen-pops (``late: true``, made by the resync): only for answered
  calls whose answering agent's ring the CTI never saw, once each; every call
  started inside a gap and still talking after it got one;

Not guaranteed, hence not asserted: a ring that starts and ends inside a gap
gets no screen-pop (the CTI cannot know the phone rang; a call answered and
ended inside the gap gets none either -- the agent has finished with it); a call recorded from the CDR has
no hold time and approximate answer/talk times (the CDR has no queue-entry
time); a draft withdrawn because the resync could not yet tell answered from
abandoned (CDR row written late) is not restored when the CDR pass later
finds the call answered.
"""
from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter

import aiohttp
import asyncpg

from cti.app import manager_key, services_key
from cti.events import AgentCalled
from cti.resync import (ENDED_WHILE_DISCONNECTED, RECOVERED_FROM_CDR, CallResynced, CdrRecord, TrackerView,
                        call_from_cdr, cdr_verdict, reconcile, recover_from_cdr)
from cti.simulator import CallSpec, CdrPgsqlWriter
from cti.tracker import Call, CallState, CallTracker
from cti.web import hub_key

from .harness import running_service, until

QUEUES = ("repair", "complaint", "enquiry")
AGENTS = tuple(str(2001 + i) for i in range(40))
STORM_AGENTS = AGENTS[:28]  # the random storm; the others ring for the deliberate calls at the cuts
RATE = 12.0  # new calls per real second (the simulator runs 20x: virtual seconds / 20)
STORM_S = 7.0  # real seconds of storm, gaps not counted
CUTS_AT = (1.8, 4.6)  # real seconds into the storm
GAP_CALLS = 3  # short calls placed inside each gap, ended before it closes
CDR_RECHECK_S = 0.5  # the service's second CDR pass (30 s in production)



async def _until(pred, timeout=20.0, step=0.02):
    return await until(pred, timeout, step)


def _counters(svc, pipeline, manager, resync):
    return {"handler_errors": pipeline.stats.handler_errors, "queue_full": pipeline.stats.queue_full,
            "sink_errors": manager.stats.sink_errors, "reader_failures": manager.stats.reader_failures,
            "unrecoverable_streams": manager.stats.unrecoverable_streams,
            "screenpop_failures": svc.screenpop.failures, "resync_failures": resync.failures,
            "cdr_failures": resync.cdr_failures, "tracker_evicted": pipeline.tracker.evicted}


async def test_ami_link_cut_twice_mid_storm_resyncs_with_zero_loss(db_url):
    t_test = time.monotonic()
    async with running_service(db_url, ami_backoff_initial_s=0.05, ami_backoff_max_s=0.2,
                               db_pool_max=20) as svc:
        sim, pipeline = svc.simulator, svc.pipeline
        manager = svc.app[manager_key]
        resync = svc.app[services_key]["resync"]
        spool = svc.app[services_key]["spool"]
        hub = svc.app[hub_key]
        assert await _until(lambda: resync.runs >= 1)
        resync.cdr_recheck_s = CDR_RECHECK_S
        writer = CdrPgsqlWriter(db_url)  # Asterisk's cdr_pgsql
        sim.cdr_sink = writer
        for a in AGENTS:
            sim.add_agent(a, QUEUES)
        await resync.resync_once("test")  # the live model knows the new members
        counters0 = _counters(svc, pipeline, manager, resync)

        # ---- what the CTI saw, and what each agent's page got
        seen_called: Counter[tuple[str, str]] = Counter()  # AgentCalled received by the CTI
        seen_lids: set[str] = set()  # calls the CTI saw any AMI event of
        first_seen: dict[str, str] = {}  # linkedid -> the first event the tracker took it from
        resynced: Counter[str] = Counter()  # CallResynced actions
        ended: Counter[str] = Counter()
        last_state: dict[str, CallState] = {}

        def listener(event, call):
            if isinstance(event, AgentCalled):
                seen_called[(event.linkedid, event.agent)] += 1
            if isinstance(event, CallResynced):
                resynced[event.action] += 1
            elif call is not None:
                seen_lids.add(call.linkedid)
                first_seen.setdefault(call.linkedid, type(event).__name__)
            if call is not None:
                if call.state is CallState.ENDED and last_state.get(call.linkedid) is not CallState.ENDED:
                    ended[call.linkedid] += 1
                last_state[call.linkedid] = call.state
        pipeline.listeners.append(listener)

        written: dict[tuple[str, str], float] = {}  # AgentCalled bytes written to the CTI's socket

        def on_write(data: bytes) -> None:
            if not data.startswith(b"Event: AgentCalled\r\n"):
                return
            lid = agent = ""
            for line in data.split(b"\r\n"):
                if not lid and line.startswith(b"Linkedid: "):
                    lid = line[10:].decode()
                elif line.startswith(b"Interface: "):
                    agent = line[11:].decode().removeprefix("Local/").split("@", 1)[0]
            written.setdefault((lid, agent), time.monotonic())
        sim.on_write = on_write

        pops: Counter[tuple[str, str]] = Counter()
        late_pops: Counter[tuple[str, str]] = Counter()  # made at a resync: answered while the link was down
        markers: set[str] = set()
        hellos: set[str] = set()
        sessions: list[aiohttp.ClientSession] = []
        readers: list[asyncio.Task] = []

        async def reader(agent: str, ws) -> None:
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                m = json.loads(msg.data)
                if m["type"] == "screen_pop":
                    key = (m["linkedid"], m["agent"] if m["agent"] == agent else f"WRONG:{agent}")
                    (late_pops if m.get("late") else pops)[key] += 1
                elif m["type"] == "hello":
                    hellos.add(agent)
                elif m["type"] == "test_marker":
                    markers.add(agent)

        try:
            for a in AGENTS:
                http = aiohttp.ClientSession()
                sessions.append(http)
                await svc.login(http, f"agent{a}")
                ws = await http.ws_connect(f"{svc.base_url}/ws/agent/{a}")
                readers.append(asyncio.create_task(reader(a, ws)))
            assert await _until(lambda: len(hellos) == len(AGENTS))

            rng = random.Random(8)
            free = list(STORM_AGENTS)
            rng.shuffle(free)
            special = list(AGENTS[len(STORM_AGENTS):])  # six per cut
            placed: list = []  # (spec, PlacedCall, started, ended): real monotonic times
            failures: list[BaseException] = []

            async def one(spec: CallSpec, agents: tuple[str, ...] = (), give_back: bool = True):
                t0 = time.monotonic()
                try:
                    p = await sim.place_call(spec)
                    placed.append((spec, p, t0, time.monotonic()))
                    return p
                except BaseException as exc:  # noqa: BLE001 - asserted below
                    failures.append(exc)
                    return None
                finally:
                    if give_back:
                        free.extend(agents)

            def take(n: int) -> tuple[str, ...]:
                if len(free) < n:
                    return ()
                got = tuple(free[:n])
                del free[:n]
                return got

            def storm_spec() -> tuple[CallSpec, tuple[str, ...]]:
                num = f"13{rng.randrange(10**9):09d}"
                kind = rng.random()
                wait = rng.uniform(0, 4)
                if kind < 0.12 and (ag := take(3)):  # ringall: three ring, the second answers
                    return CallSpec(num, "", "complaint", "", agent=ag[1], outcome="answered", wait_s=wait,
                                    ring_s=rng.uniform(2, 6), talk_s=rng.uniform(6, 30), ring_order=ag,
                                    via_ivr=False), ag
                if kind < 0.20 and (ag := take(2)):  # rrmemory: the first rings out (15 s), the second answers
                    return CallSpec(num, "", "enquiry", "", agent=ag[1], outcome="answered", wait_s=wait,
                                    ring_s=rng.uniform(1, 4), talk_s=rng.uniform(6, 20), ring_order=ag,
                                    via_ivr=False), ag
                if kind < 0.30 and (ag := take(1)):  # rung 5 s twice, not answered; gives up after 8 s
                    return CallSpec(num, "", rng.choice(("repair", "enquiry")), "", agent=ag[0],
                                    outcome="abandoned", ring_s=5, wait_s=8, ring_order=ag, via_ivr=False), ag
                ag = take(1) if kind >= 0.42 else ()
                if not ag:  # nobody rung: waits and gives up
                    return CallSpec(num, "", rng.choice(QUEUES), "", agent="", outcome="abandoned",
                                    wait_s=rng.uniform(2, 15), via_ivr=False), ()
                return CallSpec(num, "", rng.choice(("repair", "enquiry")), "", agent=ag[0],
                                outcome="caller_hangup" if kind < 0.55 else "answered", wait_s=wait,
                                ring_s=rng.uniform(1, 4), talk_s=rng.uniform(6, 30), ring_order=ag,
                                via_ivr=False), ag

            tasks: list[asyncio.Task] = []
            gaps: list[tuple[float, float]] = []  # (cut, resynced after the reconnect): real monotonic
            gap_lids: set[str] = set()  # started and ended inside a gap
            pre_lids: set[str] = set()  # seen ringing before a cut, answered and ended inside the gap
            long_lids: set[str] = set()  # started inside a gap, still talking after it
            ringall_lids: set[str] = set()  # two rung before a cut, one answered inside the gap

            async def cut() -> None:
                runs = resync.runs
                g = len(gaps)
                a_pre, a_long, a_lose, a_win, *a_gap = special[6 * g:6 * g + 6]
                pre = asyncio.create_task(one(CallSpec(
                    f"1370000{g}001", "", "repair", "", agent=a_pre, outcome="answered", ring_s=12, talk_s=2,
                    ring_order=(a_pre,), via_ivr=False), give_back=False))
                both = asyncio.create_task(one(CallSpec(
                    f"1360000{g}001", "", "complaint", "", agent=a_win, outcome="answered", ring_s=12, talk_s=60,
                    ring_order=(a_lose, a_win), via_ivr=False), give_back=False))

                def ringing(num: str, n: int) -> bool:
                    return any(c.caller_num == num and c.state is CallState.RINGING and len(c.rang_agents) == n
                               for c in pipeline.tracker.active())
                assert await _until(lambda: ringing(f"1370000{g}001", 1) and ringing(f"1360000{g}001", 2), 10)
                sim.accepting = False
                t_cut = time.monotonic()
                sim.drop_connections()
                assert await _until(lambda: manager.state != "logged_in", 5)
                inside = [asyncio.create_task(one(CallSpec(
                    f"1390000{g}{k:03d}", "停电户", "repair", "", agent=a_gap[k] if k < len(a_gap) else "",
                    outcome="answered" if k < len(a_gap) else "abandoned", ring_s=1, talk_s=3, wait_s=2,
                    ring_order=(a_gap[k],) if k < len(a_gap) else (), via_ivr=False), give_back=False))
                    for k in range(GAP_CALLS)]
                long = asyncio.create_task(one(CallSpec(
                    f"1380000{g}001", "", "enquiry", "", agent=a_long, outcome="answered", ring_s=1, talk_s=60,
                    wait_s=1, ring_order=(a_long,), via_ivr=False), give_back=False))
                await asyncio.sleep(0.3)  # the storm goes on meanwhile
                await asyncio.wait_for(asyncio.gather(pre, *inside), 10)
                gap_lids.update(p.linkedid for t in inside if (p := t.result()) is not None)
                pre_lids.add(pre.result().linkedid)
                await sim.cdr_flush()  # Asterisk has written their CDR rows
                assert manager.state != "logged_in" and not long.done()
                long_lids.add(next(ch.linkedid for ch in sim._live.values()
                                   if ch.cid_num == f"1380000{g}001" and ch.name.endswith(";2")))
                ringall_lids.add(next(ch.linkedid for ch in sim._live.values()
                                      if ch.cid_num == f"1360000{g}001" and ch.name.endswith(";2")))
                tasks.extend((long, both))
                sim.accepting = True
                assert await _until(lambda: resync.runs > runs, 15), "no resync after the reconnect"
                gaps.append((t_cut, time.monotonic()))

            # ---- the storm, cut twice
            start = time.monotonic()
            cuts = list(CUTS_AT)
            for i in range(int(RATE * STORM_S)):
                if cuts and i / RATE >= cuts[0]:
                    cuts.pop(0)
                    await cut()
                    start += gaps[-1][1] - gaps[-1][0]  # the schedule resumes after the gap
                delay = start + i / RATE - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                spec, ag = storm_spec()
                tasks.append(asyncio.create_task(one(spec, ag)))
            await asyncio.wait_for(asyncio.gather(*tasks), 30)
            assert not failures, failures
            await sim.cdr_flush()
            assert len(gaps) == 2 and len(gap_lids) == 2 * GAP_CALLS
            assert len(pre_lids) == len(long_lids) == len(ringall_lids) == 2

            # ---- drain: every call has its ended row, the CDR rechecks ran, every pop is delivered
            lids = [p.linkedid for _s, p, _a, _b in placed]
            assert len(set(lids)) == len(lids)
            conn = await asyncpg.connect(db_url)
            try:
                async def rows() -> dict[str, asyncpg.Record]:
                    return {r["linkedid"]: r for r in await conn.fetch("SELECT * FROM calls")}
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 30
                while True:
                    await pipeline.drain()
                    got = await rows()
                    if (not resync._rechecks and set(got) >= set(lids)
                            and all(r["state"] == "ended" for r in got.values())) or loop.time() > deadline:
                        break
                    await asyncio.sleep(0.1)
                # once: another CDR pass over all rows finds nothing more to record or correct
                assert await resync.cdr_pass(0.0) == ()
                await pipeline.drain()
                for a in AGENTS:  # FIFO per socket: the marker comes after every earlier message
                    hub.deliver(f"agent:{a}", {"type": "test_marker"})
                assert await _until(lambda: markers == set(AGENTS), 15)
                got = await rows()
                drafts = await conn.fetch("SELECT linkedid, agent, status FROM work_orders")
                cdr_linkedids = {r["linkedid"] for r in await conn.fetch("SELECT DISTINCT linkedid FROM cdr")}
            finally:
                await conn.close()
            counters1 = _counters(svc, pipeline, manager, resync)
            tracker_active = [c.linkedid for c in pipeline.tracker.active()]
            spool_pending = spool.pending
            ws_dropped = sum(sub.dropped for subs in hub._subs.values() for sub in subs)
        finally:
            for t in readers:
                t.cancel()
            for s in sessions:
                await s.close()
            await writer.close()

    # ---------------------------------------------------------- assertions
    by_lid = {p.linkedid: (s, p, t0, t1) for s, p, t0, t1 in placed}
    answered = {(p.linkedid, p.agent) for _s, p, _a, _b in placed if p.outcome in ("answered", "caller_hangup")}
    # every call: one row, none extra, ended, its true outcome, agent and queue
    assert set(got) == set(by_lid), (set(by_lid) - set(got), set(got) - set(by_lid))
    assert cdr_linkedids == set(by_lid)
    # (a call first seen at its AgentComplete -- it started while the link was
    # down and its last events came between the login and the resync's
    # snapshot -- has no queue: the tracker takes none from AgentComplete)
    wrong = []
    for lid, (_spec, p, _t0, _t1) in by_lid.items():
        r = got[lid]
        want = ("answered", p.agent) if p.outcome in ("answered", "caller_hangup") else ("abandoned", "")
        queue = p.queue if first_seen.get(lid) != "AgentCompleted" else r["queue"]
        if (r["state"], r["outcome"], r["agent"] if want[0] == "answered" else "", r["queue"]) != (
                "ended", *want, queue):
            wrong.append((lid, p.outcome, p.agent, p.queue, first_seen.get(lid), dict(r)))
    assert not wrong, wrong
    assert not tracker_active, tracker_active
    assert {lid: n for lid, n in ended.items() if n != 1} == {} and set(ended) >= set(by_lid)

    # the resync closed, continued and adopted calls; the CDR recovered the unseen ones
    reasons = {lid: r["close_reason"] for lid, r in got.items()}
    assert set(reasons.values()) <= {"", ENDED_WHILE_DISCONNECTED, RECOVERED_FROM_CDR}
    recovered = {lid for lid, why in reasons.items() if why == RECOVERED_FROM_CDR}
    assert gap_lids <= recovered, gap_lids - recovered
    assert recovered == set(by_lid) - seen_lids  # exactly the calls AMI never showed
    assert all(any(cut_t - 1.5 <= by_lid[lid][2] and by_lid[lid][3] <= up_t for cut_t, up_t in gaps)
               for lid in recovered)
    assert resync.recovered == len(recovered) == resynced["recovered"]
    for lid in pre_lids:  # seen ringing, answered and ended while away: closed, outcome from the CDR
        assert (reasons[lid], got[lid]["outcome"], got[lid]["agent"]) == (
            ENDED_WHILE_DISCONNECTED, "answered", by_lid[lid][1].agent), dict(got[lid])

    def cuts_during(lid: str) -> int:
        return sum(1 for cut_t, _up in gaps if by_lid[lid][2] < cut_t < by_lid[lid][3])
    # started while away, talking after: adopted, then ended by its own events;
    # answered while away, talking after: continued, ended by its own events
    # (unless a loaded machine stretched it across the next cut too)
    for lid in long_lids:
        assert (reasons[lid] == "" or cuts_during(lid) >= 1) and got[lid]["outcome"] == "answered"
    for lid in ringall_lids:
        assert (reasons[lid] == "" or cuts_during(lid) >= 2) and got[lid]["outcome"] == "answered"
    assert resynced["closed"] >= 2 and resynced["adopted"] >= 2 and resynced["continued"] >= 1

    # screen-pops: one per AgentCalled the CTI received (a member rung again
    # after a no-answer gets another), none replayed by a resync, none lost
    # while the link was up, exactly one for each answered call whose
    # answering agent's ring the CTI saw
    assert not [k for k in pops if k[1].startswith("WRONG:")]
    mismatch = {k: (pops[k], seen_called[k]) for k in set(pops) | set(seen_called) if pops[k] != seen_called[k]}
    assert not mismatch, mismatch
    assert not {k for k in answered if k in seen_called and pops[k] != 1}
    for lid in pre_lids | ringall_lids:
        assert pops[(lid, by_lid[lid][1].agent)] == 1
    assert all(n == 2 for lid in ringall_lids for n in [sum(1 for k in pops if k[0] == lid)])
    # late pops: only for an answered call whose answering agent's ring the
    # CTI never saw, once; every call started inside a gap and still talking
    # when the link came back got one (its agent needs the work order)
    assert not [k for k in late_pops if k[1].startswith("WRONG:")]
    assert all(n == 1 and k in answered and k not in seen_called for k, n in late_pops.items()), late_pops
    for lid in long_lids:
        k = (lid, by_lid[lid][1].agent)
        assert k in seen_called or cuts_during(lid) >= 2 or late_pops[k] == 1, (k, late_pops)

    def while_up(w: float) -> bool:
        return all(not (cut_t - 1.5 <= w <= up_t) for cut_t, up_t in gaps)
    lost_while_up = {k for k, w in written.items() if while_up(w) and k not in seen_called}
    assert not lost_while_up, lost_while_up
    assert len([k for k in answered if k in seen_called]) >= 0.6 * len(answered)

    # drafts: none left for a ring that was not answered; the answering agent keeps his
    left = {(d["linkedid"], d["agent"]) for d in drafts if d["status"] == "draft"}
    stale = {k: (by_lid[k[0]][1].outcome, by_lid[k[0]][1].agent, reasons[k[0]]) for k in left - answered}
    assert not stale, ("drafts left for rings that were not answered (call outcome, answering agent, "
                       "close_reason); a call answered while the link was down must withdraw the other "
                       "members' drafts", stale)
    assert {(lid, by_lid[lid][1].agent) for lid in pre_lids | ringall_lids} <= left

    # no errors, nothing dropped, nothing stuck
    assert counters1 == counters0, (counters0, counters1)
    assert spool_pending == 0 and ws_dropped == 0
    assert time.monotonic() - t_test < 90


# ------------------------------------------------------------------ the rules
def _rec(lid="9.1", **kw) -> CdrRecord:
    base = dict(uniqueid=lid, channel="PJSIP/carrier-00000001", src="13800138000", clid='"张三" <13800138000>',
                lastapp="Queue", lastdata="repair,t", start=100.0, end=160.0)
    base.update(kw)
    return CdrRecord(lid, **base)


def test_cdr_call_is_answered_only_when_a_member_channel_answered_else_abandoned_if_it_reached_a_queue():
    # the dialplan answered the caller (IVR): ANSWERED without dstchannel is not an agent
    ivr_up = _rec(answer=101.0, disposition="ANSWERED", billsec=59)
    rung = _rec(dstchannel="PJSIP/1001-0000002a", disposition="NO ANSWER", start=110.0, end=125.0, sequence=1)
    assert cdr_verdict([ivr_up]).outcome == "abandoned"
    assert cdr_verdict([rung, ivr_up]) == cdr_verdict([ivr_up, rung])  # order of rows does not matter
    assert cdr_verdict([ivr_up, rung]).outcome == "abandoned" and cdr_verdict([rung]).agent == ""
    talked = _rec(dstchannel="PJSIP/1002-0000002b", disposition="ANSWERED", answer=126.0, billsec=34,
                  start=110.0, sequence=2)
    v = cdr_verdict([ivr_up, rung, talked])
    assert (v.outcome, v.agent, v.queue, v.answered_at, v.talk_time) == ("answered", "1002", "repair", 126.0, 34)
    local = _rec(dstchannel="Local/2003@agents-0000000c;1", disposition="ANSWERED", answer=120.0, billsec=5)
    assert cdr_verdict([local]).agent == "2003"
    ivr_only = _rec(lastapp="AGI", lastdata="agi://127.0.0.1:4573/ivr", disposition="ANSWERED", answer=101.0)
    assert cdr_verdict([ivr_only]).outcome == ""

    call = call_from_cdr([rung, talked, ivr_up])
    assert (call.linkedid, call.state, call.outcome, call.agent, call.queue, call.close_reason) == (
        "9.1", CallState.ENDED, "answered", "1002", "repair", RECOVERED_FROM_CDR)
    assert (call.caller_num, call.caller_name, call.started_at, call.ended_at, call.queued_at) == (
        "13800138000", "张三", 100.0, 160.0, 100.0)


def test_cdr_rows_become_calls_only_for_linkedids_neither_tracked_nor_live():
    tracker = CallTracker()
    tracker.adopt(Call("1.1", state=CallState.QUEUED, queued_at=10.0, channels=frozenset({"1.1"})))
    tracker.adopt(Call("2.1", state=CallState.ENDED, ended_at=20.0))
    cdr = {lid: [_rec(lid)] for lid in ("1.1", "2.1", "3.1", "4.1")}
    from cti.live import build_snapshot

    from .test_resync import _chan
    snap = build_snapshot(100.0, channels=[_chan("4.1", "4.1", "Local/repair@hotline-00000004;2", "Queue")])
    got = recover_from_cdr(TrackerView.of(tracker), snap, cdr)
    assert [c.linkedid for c in got] == ["3.1"]
    assert recover_from_cdr(TrackerView.of(tracker), None, cdr)[-1].linkedid == "4.1"


def test_a_call_closed_while_away_takes_its_outcome_from_the_cdr_unless_seen_answered():
    tracker = CallTracker()
    tracker.adopt(Call("5.1", state=CallState.RINGING, queued_at=10.0, channels=frozenset({"5.1", "5.2"})))
    tracker.adopt(Call("6.1", state=CallState.QUEUED, queued_at=10.0, channels=frozenset({"6.1"})))
    tracker.adopt(Call("7.1", state=CallState.CONNECTED, queued_at=10.0, answered_at=12.0, outcome="answered",
                       agent="1001", channels=frozenset({"7.1"})))
    tracker.adopt(Call("8.1", state=CallState.QUEUED, queued_at=10.0, channels=frozenset({"8.1"})))
    from cti.live import build_snapshot
    snap = build_snapshot(100.0)
    view = TrackerView.of(tracker)
    cdr = {"5.1": [_rec("5.1", dstchannel="PJSIP/1004-00000001", disposition="ANSWERED", answer=30.0,
                        billsec=40)],
           "6.1": [_rec("6.1", disposition="ANSWERED", answer=11.0)],
           "7.1": [_rec("7.1", disposition="ANSWERED", answer=11.0)]}
    plan = reconcile(view, snap, 100.0, cdr)
    got = {c.linkedid: (c.outcome, c.agent, c.answered_at, c.talk_time) for c in plan.closed}
    assert got == {"5.1": ("answered", "1004", 30.0, 40), "6.1": ("abandoned", "", None, 0),
                   "7.1": ("answered", "", None, 0), "8.1": ("unknown", "", None, 0)}
    assert all(c.reason == ENDED_WHILE_DISCONNECTED for c in plan.closed)
    assert reconcile(view, snap, 100.0) == reconcile(view, snap, 100.0, {})


# --------------------------------------------------- asterisk-conf contract
def test_cdr_pgsql_conf_writes_the_table_the_cti_reads_in_utc():
    from pathlib import Path

    from cti.resync import CdrSource

    from .test_asterisk_conf import CONF, EXPECTED, lint, parse_conf, real_problems, single

    conf = single(parse_conf(CONF / "cdr_pgsql.conf"))["global"]
    want = EXPECTED["cdr"]
    assert conf.get("table") == want["table"] == CdrSource(None).table
    assert conf.get("timezone") == want["timezone"] == "UTC"
    assert conf.get("user") == want["user"]
    assert conf.get("password", "").startswith("CHANGE-ME")
    assert conf.get("hostname") in ("127.0.0.1", "localhost", "::1")
    assert real_problems(lint("config", CONF / "cdr_pgsql.conf"), "cdr_pgsql.conf") == []
    migration = (Path(__file__).resolve().parent.parent / "migrations" / "011_asterisk_cdr.sql").read_text()
    assert f"CREATE TABLE IF NOT EXISTS {want['table']} (" in migration
    for column in ("start", "answer", '"end"', "linkedid", "uniqueid", "dstchannel", "disposition", "billsec",
                   "duration", "lastapp", "lastdata", "src", "clid", "sequence"):
        assert f"\n    {column} " in migration, column

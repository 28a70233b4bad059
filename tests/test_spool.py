"""Issue 8.3 durability: the on-disk spool, its exactly-once replay, and the
whole service surviving PostgreSQL stopped and restarted mid-run."""
from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import time
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from cti.screenpop import create_draft_record, upsert_call_row
from cti.simulator import CallSpec
from cti.spool import Spool, SpoolFull, SpoolReplayer

from .harness import running_service


def _call(linkedid: str, state: str = "queued", outcome: str = "", agent: str = "") -> dict:
    t = time.time()
    return {"linkedid": linkedid, "caller_num": "13800138000", "caller_num_norm": "13800138000",
            "caller_name": "", "customer_id": None, "ivr_choice": "repair", "outage_id": "", "queue": "repair",
            "agent": agent, "state": state, "outcome": outcome, "hangup_cause": None, "started_at": t,
            "queued_at": t, "answered_at": None, "ended_at": t if state == "ended" else None,
            "hold_time_s": None, "talk_time_s": None, "close_reason": ""}


def _draft(linkedid: str, agent: str = "1001") -> dict:
    return {"linkedid": linkedid, "local_id": f"local-{linkedid}", "pop": {}, "fields": {
        "linkedid": linkedid, "agent": agent, "queue": "repair", "ivr_choice": "repair", "order_type": "repair",
        "caller_num": "13800138000", "caller_num_norm": "13800138000", "caller_name": "", "customer_id": None,
        "customer_snapshot": {}, "contact_name": "", "contact_phone": "13800138000", "address": "",
        "transformer_area": "", "outage_id": ""}}


async def test_records_come_back_in_order_after_reopen_and_a_torn_line_is_ignored(tmp_path):
    sp = Spool(tmp_path, segment_records=3)
    seqs = [await sp.append("call" if i % 2 else "draft", {"linkedid": f"L{i}", "i": i}) for i in range(10)]
    assert seqs == sorted(seqs) and len(set(seqs)) == 10
    sp.close()
    assert len(list(tmp_path.glob("seg-*.jsonl"))) >= 3  # segments rotated
    last = sorted(tmp_path.glob("seg-*.jsonl"))[-1]
    with open(last, "ab") as fh:
        fh.write(b'{"seq": 99, "kind": "call", "da')  # crash mid-write: never acknowledged
    again = Spool(tmp_path)
    recs = again.pending_records(100)
    assert [r.data["i"] for r in recs] == list(range(10))
    assert [r.seq for r in recs] == seqs
    assert await again.append("call", {"linkedid": "L10"}) == seqs[-1] + 1


async def test_the_bound_drops_drafts_first_and_counts_every_refusal(tmp_path):
    sp = Spool(tmp_path, max_records=10, reserve=0.2)
    for i in range(8):
        await sp.append("draft", {"linkedid": f"D{i}"})
    with pytest.raises(SpoolFull):
        await sp.append("draft", {"linkedid": "D8"})  # the reserve is for call records
    await sp.append("call", {"linkedid": "C1"})
    await sp.append("call", {"linkedid": "C2"})
    with pytest.raises(SpoolFull):
        await sp.append("call", {"linkedid": "C3"})
    assert sp.counters["dropped"] == 2 and sp.counters["dropped_calls"] == 1
    assert sp.counters["spooled"] == 10 and sp.pending == 10


async def test_crash_between_database_commit_and_truncation_applies_nothing_twice(tmp_path, pool):
    sp = Spool(tmp_path)
    for i in range(5):
        await sp.append("call", _call(f"L{i}"))
        await sp.append("draft", _draft(f"L{i}"))
        await sp.append("call", _call(f"L{i}", "ended", "answered", agent="1001"))
    appliers = {"call": upsert_call_row, "draft": create_draft_record}
    r1 = SpoolReplayer(sp, pool, appliers, batch=4)

    def crash(seq):
        if seq >= 8:
            raise KeyboardInterrupt("simulated crash after the commit, before the local marker")
    r1.after_commit_hook = crash
    with pytest.raises(KeyboardInterrupt):
        await r1.replay_once()
    sp.close()
    # the process "restarts": the spool still holds the batch the database already has
    sp2 = Spool(tmp_path)
    assert sp2.pending == 15 - 4
    r2 = SpoolReplayer(sp2, pool, appliers, batch=4)
    await r2.replay_once()
    assert sp2.pending == 0 and sp2.counters["skipped_already_applied"] == 4
    assert not list(tmp_path.glob("seg-*.jsonl"))  # truncated
    async with pool.acquire() as conn:
        calls = await conn.fetch("SELECT linkedid, state, outcome FROM calls ORDER BY linkedid")
        drafts = await conn.fetch("SELECT linkedid, count(*) AS n, min(id) AS id FROM work_orders "
                                  "GROUP BY linkedid ORDER BY min(id)")
    assert [(c["linkedid"], c["state"], c["outcome"]) for c in calls] == [
        (f"L{i}", "ended", "answered") for i in range(5)]
    assert [(d["linkedid"], d["n"]) for d in drafts] == [(f"L{i}", 1) for i in range(5)]  # in order, once
    # a crash after the marker but before the segments were deleted: nothing pending on reopen
    sp2.close()
    sp3 = Spool(tmp_path)
    await sp3.append("call", _call("L9"))
    sp3.close()
    (tmp_path / "committed").write_text(str(sp3._next_seq - 1))
    sp4 = Spool(tmp_path)
    assert sp4.pending == 0 and not list(tmp_path.glob("seg-*.jsonl"))


# ---- PostgreSQL stopped and restarted mid-run ------------------------------

def _start_pg(d: str):
    import pgserver

    return pgserver.get_server(d, cleanup_mode="stop")


async def _messages(ws, into: list, stop: asyncio.Event):
    while not stop.is_set():
        try:
            msg = await asyncio.wait_for(ws.receive(), 0.2)
        except asyncio.TimeoutError:
            continue
        if msg.type != aiohttp.WSMsgType.TEXT:
            return
        into.append(json.loads(msg.data))


async def _wait_for(pred, timeout=30.0, what=""):
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def test_postgresql_stopped_and_restarted_mid_run_loses_nothing():
    loop = asyncio.get_running_loop()
    d = tempfile.mkdtemp(prefix="hotline-spool-pg-")
    srv = await loop.run_in_executor(None, _start_pg, d)
    url = srv.get_uri()
    try:
        async with running_service(url) as svc, aiohttp.ClientSession() as http:
            from cti.app import services_key
            spool = svc.app[services_key]["spool"]
            await svc.login(http, "agent1001")
            msgs: list[dict] = []
            stop = asyncio.Event()
            async with http.ws_connect(f"{svc.base_url}/ws/agent/1001") as ws:
                reader = asyncio.create_task(_messages(ws, msgs, stop))
                known = dict(caller_num="13800138000", caller_name="张三", ivr_choice="repair", customer_id="",
                             outage_id="", agent="1001", ring_s=1, talk_s=1)
                placed = []
                # 1. database up: a normal call fills the cache
                placed.append(await svc.simulator.place_call(CallSpec(outcome="answered", **known)))
                await svc.pipeline.drain()
                pops = lambda: [m for m in msgs if m["type"] == "screen_pop"]  # noqa: E731

                def completed(pop):  # the pop as its screen_pop_update left it (the draft written)
                    return next((m["pop"] for m in msgs if m["type"] == "screen_pop_update"
                                 and m["linkedid"] == pop["linkedid"]), pop)

                await _wait_for(lambda: len(pops()) == 1 and completed(pops()[0])["order"], what="first pop")
                assert completed(pops()[0])["order"]["id"] and pops()[0]["customer"]["account_no"] == "3100012345"

                # 2. PostgreSQL goes away
                await loop.run_in_executor(None, srv.cleanup)
                outage_specs = [dict(known, outcome="answered"), dict(known, outcome="abandoned", ring_s=3, wait_s=1),
                                dict(known, caller_num="13912345678", caller_name="", outcome="answered"),
                                dict(known, outcome="caller_hangup")]
                for spec in outage_specs:
                    placed.append(await svc.simulator.place_call(CallSpec(**spec)))
                await svc.pipeline.drain()
                await _wait_for(lambda: len(pops()) == 5, what="outage pops")
                outage_pops = pops()[1:]
                assert all(p["pending"] and p["order"] is None for p in outage_pops)
                assert all("数据库恢复后自动保存" in p["error"] for p in outage_pops)
                by_num = {p["caller_num"]: p for p in outage_pops}
                assert by_num["13800138000"]["customer"]["account_no"] == "3100012345"  # from the cache
                assert by_num["13800138000"]["provisional_order"]["local_id"].startswith("local-")
                assert by_num["13912345678"]["customer"] is None
                assert spool.pending > 0 and spool.counters["spooled"] > 0
                async with http.get(f"{svc.base_url}/health") as r:
                    health = await r.json()
                assert r.status == 503 and health["spool"]["spooled"] > 0 and health["spool"]["dropped"] == 0

                # 3. PostgreSQL comes back (same data directory, same socket)
                srv = await loop.run_in_executor(None, _start_pg, d)
                assert srv.get_uri() == url
                await _wait_for(lambda: spool.pending == 0, timeout=60, what="spool replay")
                saved = lambda: [m for m in msgs if m["type"] == "screen_pop_order_saved"]  # noqa: E731
                await _wait_for(lambda: len(saved()) == 4, what="order-saved pushes")
                assert [s["linkedid"] for s in saved()] == [p["linkedid"] for p in outage_pops]
                assert all(s["order"]["id"] and s["pop"]["order"]["id"] == s["order"]["id"] for s in saved())
                async with http.get(f"{svc.base_url}/health") as r:
                    health = await r.json()
                assert r.status == 200 and health["spool"]["pending"] == 0
                assert health["spool"]["replayed"] > 0 and health["spool"]["dropped"] == 0

                # 4. and the service keeps writing directly afterwards
                placed.append(await svc.simulator.place_call(CallSpec(outcome="answered", **known)))
                await svc.pipeline.drain()
                await _wait_for(lambda: len(pops()) == 6 and completed(pops()[-1])["order"], what="pop after recovery")
                assert completed(pops()[-1])["order"]["id"] and not completed(pops()[-1]).get("pending")
                stop.set()
                await reader
            all_pops = pops()
            conn = await asyncpg.connect(url)
            try:
                calls = {r["linkedid"]: r for r in await conn.fetch("SELECT * FROM calls")}
                orders_ = await conn.fetch("SELECT id, linkedid, agent, status FROM work_orders ORDER BY id")
                replay = await conn.fetchval("SELECT count(*) FROM spool_replay")
            finally:
                await conn.close()
        # zero loss: one call row per simulated call, with the right outcome
        assert sorted(calls) == sorted(p.linkedid for p in placed)
        for p in placed:
            want = "answered" if p.outcome == "caller_hangup" else p.outcome
            assert calls[p.linkedid]["outcome"] == want, (p, dict(calls[p.linkedid]))
            assert calls[p.linkedid]["state"] == "ended"
        assert calls[placed[1].linkedid]["customer_id"] is not None  # the cached customer was recorded
        # one draft per AgentCalled, created in the order the agent's phone rang
        assert [(o["linkedid"], o["agent"]) for o in orders_] == [(p["linkedid"], "1001") for p in all_pops]
        status = {o["linkedid"]: o["status"] for o in orders_}
        assert status[placed[2].linkedid] == "cancelled"  # the abandoned call's draft withdrawn on replay
        assert replay == 1
    finally:
        await loop.run_in_executor(None, srv.cleanup)
        shutil.rmtree(d, ignore_errors=True)

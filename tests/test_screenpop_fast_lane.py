"""The screen-pop's fast lane: an agent's first ring of a call is popped as
its AgentCalled is read, ahead of a backlog in the ordered pipeline, and
nothing about the call changes -- one pop, one draft, the true call row, the
withdrawals after the pop."""
from __future__ import annotations

import asyncio

import aiohttp
import asyncpg

from cti.events import AgentCalled, AgentRingNoAnswer, ChannelSnapshot
from cti.simulator import CallSpec

from .harness import next_pop, running_service, screenpop_keeping_sent


async def _next_pop(ws, timeout=10.0):
    return await next_pop(ws, timeout)


async def test_screen_pop_arrives_while_the_ordered_pipeline_is_stalled(db_url):
    async with running_service(db_url) as svc, aiohttp.ClientSession() as http:
        await svc.login(http)
        async with http.ws_connect(f"{svc.base_url}/ws/agent/1001") as ws:
            gate = asyncio.Event()
            svc.pipeline.run_in_order(gate.wait)  # the ordered worker is stuck: every frame from now waits
            call = asyncio.create_task(svc.simulator.place_call(CallSpec(
                caller_num="+8613800138000", caller_name="张三", ivr_choice="repair", customer_id="",
                outage_id="", agent="1001", outcome="answered", ring_s=2, talk_s=2)))
            pop = await _next_pop(ws)
            assert svc.pipeline.backlog() > 0 and not gate.is_set()  # popped ahead of the queue
            assert pop["customer"]["account_no"] == "3100012345"
            assert pop["order"]["status"] == "draft" and pop["order"]["transformer_area"] == "才湾2号台区"
            assert svc.screenpop.fast_pops == 1
            await call
            gate.set()
            await svc.pipeline.drain()
            try:  # the ordered AgentCalled found the pop made: no second one
                again = await asyncio.wait_for(_next_pop(ws), 0.5)
            except asyncio.TimeoutError:
                again = None
            assert again is None
        conn = await asyncpg.connect(db_url)
        try:
            orders = await conn.fetch("SELECT status, customer_id FROM work_orders WHERE linkedid = $1",
                                      pop["linkedid"])
            assert [o["status"] for o in orders] == ["draft"]
            c = await conn.fetchrow("SELECT * FROM calls WHERE linkedid = $1", pop["linkedid"])
            # the recorder's rows replaced the fast lane's: true state, start before answer
            assert c["outcome"] == "answered" and c["agent"] == "1001" and c["state"] == "ended"
            assert c["customer_id"] == orders[0]["customer_id"] is not None
            assert c["started_at"] <= c["answered_at"] <= c["ended_at"]
        finally:
            await conn.close()


def _called(linkedid: str, agent: str) -> AgentCalled:
    return AgentCalled(1.0, ChannelSnapshot("PJSIP/trunk-1", linkedid, linkedid, caller_num="13800138000"),
                       queue="repair", interface=f"Local/{agent}@agents")


async def test_an_agent_rung_again_for_a_call_is_popped_in_order_not_on_the_fast_lane(pool):
    """A ring again (after a no-answer) must come after the withdrawal of
    the first ring's draft, which may still be queued: no fast lane."""
    svc, sent = screenpop_keeping_sent(pool)
    async with pool.acquire() as conn:
        await conn.execute("INSERT INTO calls (linkedid) VALUES ('1795500000.1')")
    first = _called("1795500000.1", "1001")
    svc.fast_pop(first)
    await svc(first, None)  # the ordered AgentCalled waits for the fast pop and does not pop again
    assert [m["type"] for m in sent] == ["screen_pop", "screen_pop_update"] and svc.fast_pops == 1
    await svc(AgentRingNoAnswer(2.0, first.chan, queue="repair", interface="Local/1001@agents"), None)
    assert sent[-1]["type"] == "screen_pop_withdrawn"
    again = _called("1795500000.1", "1001")
    svc.fast_pop(again)
    assert not svc._fast  # not on the fast lane
    await svc(again, None)
    assert [m["type"] for m in sent[-2:]] == ["screen_pop", "screen_pop_update"] and svc.fast_pops == 1
    async with pool.acquire() as conn:
        status = await conn.fetchval("SELECT status FROM work_orders WHERE linkedid = '1795500000.1'")
    assert status == "draft"  # revived for the second ring, not left withdrawn


async def test_fast_lane_leaves_the_pop_to_the_ordered_path_when_the_database_fails(pool):
    svc, sent = screenpop_keeping_sent(pool)
    ev = _called("1795500000.2", "1002")

    class Broken:
        def acquire(self, **kw):
            raise ConnectionRefusedError("database down")

    svc.pool = Broken()
    svc.fast_pop(ev)
    assert await svc._fast[("1795500000.2", "1002")] == "" and not sent  # nothing sent, nothing counted
    svc.pool = pool  # back: the ordered handler makes the pop
    async with pool.acquire() as conn:
        await conn.execute("INSERT INTO calls (linkedid) VALUES ('1795500000.2')")  # the recorder's row
    await svc(ev, None)
    assert [m["type"] for m in sent] == ["screen_pop", "screen_pop_update"]
    assert sent[0]["order"] is None and sent[0]["order_pending"] and sent[0]["provisional_order"]["status"] == "draft"
    assert sent[1]["order"]["status"] == "draft" and sent[1]["pop"]["order"] == sent[1]["order"]
    assert svc.failures == 0 and svc.fast_pops == 0


async def test_a_pop_sent_before_its_draft_failed_is_completed_by_the_ordered_path_not_sent_twice(
        pool, monkeypatch):
    import cti.screenpop as sp

    svc, sent = screenpop_keeping_sent(pool)
    async with pool.acquire() as conn:
        await conn.execute("INSERT INTO calls (linkedid) VALUES ('1795500000.3')")
    real = sp.orders.create_draft
    calls = []

    async def flaky(*a, **kw):
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionResetError("connection lost mid-pop")
        return await real(*a, **kw)

    monkeypatch.setattr(sp.orders, "create_draft", flaky)
    ev = _called("1795500000.3", "1003")
    svc.fast_pop(ev)
    await svc(ev, None)  # the fast lane popped, the draft failed: the ordered path writes it
    assert [m["type"] for m in sent] == ["screen_pop", "screen_pop_update"]
    assert sent[0]["order"] is None and sent[0]["order_pending"]
    assert sent[1]["order"]["status"] == "draft" and len(calls) == 2 and svc.pops == 1


async def test_fast_pops_whose_ring_never_reached_the_ordered_handler_do_not_fill_the_lane(pool):
    svc, _sent = screenpop_keeping_sent(pool)
    svc.max_fast = 2
    async with pool.acquire() as conn:
        await conn.execute("INSERT INTO calls (linkedid) SELECT '1795500001.' || g FROM generate_series(1, 3) g")
    for i in (1, 2):  # popped, but their AgentCalled is never handled in order (e.g. the tracker failed)
        svc.fast_pop(_called(f"1795500001.{i}", "1001"))
    await asyncio.gather(*svc._fast.values())
    third = _called("1795500001.3", "1001")
    svc.fast_pop(third)
    assert ("1795500001.3", "1001") not in svc._fast  # the lane is full: the ordered path will pop it
    now = svc.clock()
    svc.clock = lambda: now + 121  # two minutes on: they are stale
    fourth = _called("1795500001.3", "1002")
    svc.fast_pop(fourth)  # the two stale entries are forgotten: room again
    assert set(svc._fast) == {("1795500001.3", "1002")}
    assert await svc._fast[("1795500001.3", "1002")] == "done"

"""来电预取: the caller is looked up when they join a queue, while they wait;
the ring's screen-pop shows that lookup at once (no round trip to
PostgreSQL before the pop) -- unless it is too old, for another account or
number, or failed, when the ring looks up again.  Against a real PostgreSQL."""
from __future__ import annotations

import asyncio

import aiohttp
import asyncpg

from cti.events import AgentCalled, CallerJoinedQueue, ChannelSnapshot
from cti.screenpop import ScreenPopService
from cti.simulator import CallSpec

from .harness import next_pop, running_service, screenpop_keeping_sent
from .tickets_support import add_customer, draft


def _chan(linkedid: str, number: str, account: str = "") -> ChannelSnapshot:
    return ChannelSnapshot("PJSIP/trunk-1", linkedid, linkedid, caller_num=number,
                           variables=(("CUSTOMER_ID", account),) if account else ())


def _joined(linkedid: str, number: str, account: str = "") -> CallerJoinedQueue:
    return CallerJoinedQueue(1.0, _chan(linkedid, number, account), queue="repair", position=1, count=1)


def _called(linkedid: str, number: str, agent: str = "1001", account: str = "") -> AgentCalled:
    return AgentCalled(2.0, _chan(linkedid, number, account), queue="repair", interface=f"Local/{agent}@agents")


async def _customer_with_an_order(pool) -> dict:
    async with pool.acquire() as conn:
        cust = await add_customer(conn, name="王芳")
        await draft(conn, cust)  # a draft never saved is not a recent order: save it
        await conn.execute("UPDATE work_orders SET status = 'accepted'")
    return cust


async def _ring(svc: ScreenPopService, ev: AgentCalled) -> None:
    async with svc.pool.acquire() as conn:
        await conn.execute("INSERT INTO calls (linkedid) VALUES ($1) ON CONFLICT DO NOTHING", ev.linkedid)
    await svc(ev, None)


async def test_a_caller_looked_up_while_waiting_is_popped_from_that_lookup(pool):
    svc, sent = screenpop_keeping_sent(pool)
    cust = await _customer_with_an_order(pool)
    svc.prefetch(_joined("1795600000.1", cust["phones"][0]))
    await svc._prefetches["1795600000.1"].task
    async with pool.acquire() as conn:  # renamed after the lookup: the pop shows the lookup's name
        await conn.execute("UPDATE customers SET name = '王芳芳' WHERE id = $1", cust["id"])
    await _ring(svc, _called("1795600000.1", cust["phones"][0]))
    pop, update = sent
    assert pop["type"] == "screen_pop" and pop["customer"]["name"] == "王芳"
    assert len(pop["recent_orders"]) == 1 and pop["provisional_order"]["customer_id"] == cust["id"]
    assert update["type"] == "screen_pop_update" and update["order"]["status"] == "draft"
    assert update["order"]["customer_id"] == cust["id"]
    assert svc.prefetch_hits == 1


async def test_a_lookup_older_than_its_max_age_is_not_used(pool):
    svc, sent = screenpop_keeping_sent(pool)
    cust = await _customer_with_an_order(pool)
    svc.prefetch(_joined("1795600000.2", cust["phones"][0]))
    await svc._prefetches["1795600000.2"].task
    async with pool.acquire() as conn:
        await conn.execute("UPDATE customers SET name = '王芳芳' WHERE id = $1", cust["id"])
    now = svc.clock()
    svc.clock = lambda: now + svc.prefetch_max_age_s + 1  # the caller waited long: look up again
    await _ring(svc, _called("1795600000.2", cust["phones"][0]))
    assert sent[0]["customer"]["name"] == "王芳芳" and svc.prefetch_hits == 0


async def test_a_lookup_for_another_account_is_not_used(pool):
    svc, sent = screenpop_keeping_sent(pool)
    a = await _customer_with_an_order(pool)
    async with pool.acquire() as conn:
        b = await add_customer(conn, name="李雷")
    svc.prefetch(_joined("1795600000.3", a["phones"][0]))
    await svc._prefetches["1795600000.3"].task
    # the ring carries an account (typed in at the IVR): its customer, not the number's
    await _ring(svc, _called("1795600000.3", a["phones"][0], account=b["account_no"]))
    assert sent[0]["customer"]["name"] == "李雷" and svc.prefetch_hits == 0


async def test_a_failed_lookup_at_join_leaves_the_pop_to_its_own_lookup(pool):
    svc, sent = screenpop_keeping_sent(pool)
    cust = await _customer_with_an_order(pool)

    class Broken:
        def acquire(self, **kw):
            raise ConnectionRefusedError("database down")

    svc.pool = Broken()
    svc.prefetch(_joined("1795600000.4", cust["phones"][0]))
    assert await svc._prefetches["1795600000.4"].task is None and svc.prefetch_failures == 1
    svc.pool = pool
    await _ring(svc, _called("1795600000.4", cust["phones"][0]))
    assert sent[0]["customer"]["name"] == "王芳" and len(sent[0]["recent_orders"]) == 1
    assert sent[1]["order"]["status"] == "draft" and svc.prefetch_hits == 0 and svc.failures == 0


async def test_a_ring_while_the_lookup_is_under_way_waits_for_it(pool):
    svc, sent = screenpop_keeping_sent(pool)
    cust = await _customer_with_an_order(pool)
    svc.prefetch(_joined("1795600000.5", cust["phones"][0]))
    assert not svc._prefetches["1795600000.5"].task.done()
    await _ring(svc, _called("1795600000.5", cust["phones"][0]))  # rung at once: no second lookup
    assert sent[0]["customer"]["name"] == "王芳" and svc.prefetch_hits == 1


async def test_lookups_at_join_are_bounded_the_oldest_go_first(pool):
    svc, _sent = screenpop_keeping_sent(pool)
    svc.max_prefetches = 2
    for i in (1, 2, 3):
        svc.prefetch(_joined(f"1795600001.{i}", f"1380000000{i}"))
    assert list(svc._prefetches) == ["1795600001.2", "1795600001.3"]
    await asyncio.gather(*(p.task for p in svc._prefetches.values()))


async def test_hostile_caller_id_at_join_is_only_a_parameter(pool):
    svc, sent = screenpop_keeping_sent(pool)
    number = "'; DROP TABLE customers; --<script>alert(1)</script>"
    svc.prefetch(_joined("1795600002.1", number, account="1' OR '1'='1"))
    assert await svc._prefetches["1795600002.1"].task == (None, [])
    await _ring(svc, _called("1795600002.1", number, account="1' OR '1'='1"))
    assert sent[0]["customer"] is None and sent[0]["caller_num"] == number and svc.prefetch_hits == 1
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM customers") == 0


async def test_a_simulated_call_is_looked_up_at_queue_join_and_forgotten_when_it_ends(db_url):
    async with running_service(db_url) as svc, aiohttp.ClientSession() as http:
        await svc.login(http)
        async with http.ws_connect(f"{svc.base_url}/ws/agent/1001") as ws:
            call = asyncio.create_task(svc.simulator.place_call(CallSpec(
                caller_num="+8613800138000", caller_name="张三", ivr_choice="repair", customer_id="",
                outage_id="", agent="1001", outcome="answered", ring_s=2, talk_s=2, wait_s=1)))
            pop = await next_pop(ws, 10.0)
            assert pop["customer"]["account_no"] == "3100012345"
            assert svc.screenpop.prefetch_hits == 1
            await call
            await svc.pipeline.drain()
        assert pop["linkedid"] not in svc.screenpop._prefetches
        conn = await asyncpg.connect(db_url)
        try:
            status = await conn.fetchval("SELECT status FROM work_orders WHERE linkedid = $1", pop["linkedid"])
        finally:
            await conn.close()
        assert status == "draft"


async def test_a_finished_lookup_keeps_its_result_not_its_task(pool):
    """10 000 callers may wait in a storm: a finished lookup holds only what
    it found, and a ring then pops from that."""
    svc, sent = screenpop_keeping_sent(pool)
    cust = await _customer_with_an_order(pool)
    svc.prefetch(_joined("1795600003.1", cust["phones"][0]))
    entry = svc._prefetches["1795600003.1"]
    await entry.task
    await asyncio.sleep(0)  # its done-callback
    assert entry.task is None and entry.found[0]["name"] == "王芳" and len(entry.found[1]) == 1
    await _ring(svc, _called("1795600003.1", cust["phones"][0]))
    assert sent[0]["customer"]["name"] == "王芳" and svc.prefetch_hits == 1

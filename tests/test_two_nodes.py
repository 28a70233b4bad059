"""Two service processes (here: two apps in one test process) on one
PostgreSQL, each with its own simulated Asterisk: a call arriving on node A
pops up on the page of an agent connected to node B (LISTEN/NOTIFY), and
node B's wallboard counts it."""
from __future__ import annotations

import asyncio

import aiohttp
import asyncpg

from cti.simulator import CallSpec

from .harness import Inbox, next_message, running_service


async def _next(ws, kind: str, timeout: float = 10.0) -> dict:
    return await next_message(ws, kind, timeout)


async def test_call_on_node_a_pops_up_for_agent_on_node_b_and_counts_on_both_wallboards(db_url):
    async with running_service(db_url, node_id="node-a") as a, running_service(db_url, node_id="node-b") as b, \
            aiohttp.ClientSession() as http_b, aiohttp.ClientSession() as sup_b:
        await b.login(http_b, "agent1001")
        await b.login(sup_b, "supervisor")
        async with http_b.ws_connect(f"{b.base_url}/ws/agent/1001") as ws:
            call = asyncio.create_task(a.simulator.place_call(CallSpec(
                caller_num="+8613800138000", caller_name="张三", ivr_choice="repair",
                agent="1001", outcome="answered", ring_s=1, talk_s=1)))
            box = Inbox(ws)
            pop = await box.pop()
            assert pop["agent"] == "1001" and pop["caller_name"] == "张三"
            assert pop["customer"]["account_no"] == "3100012345"
            assert pop["order"]["status"] == "draft"
            connected = await box.next("call_state")
            assert connected["linkedid"] == pop["linkedid"]
            await call
        await a.pipeline.drain()

        # node B's wallboard totals include node A's call (from the shared calls table)
        figures = None
        for _ in range(100):
            async with sup_b.get(f"{b.base_url}/api/wallboard") as r:
                assert r.status == 200, await r.text()
                figures = (await r.json())["total"]["figures"]
            if figures["offered"] >= 1 and figures["answered"] >= 1:
                break
            await asyncio.sleep(0.1)
        assert figures["offered"] == 1 and figures["answered"] == 1, figures
        # node A counted it from its own AMI events, not twice
        from cti.app import services_key
        assert a.app[services_key]["wallboard"].snapshot()["total"]["figures"]["offered"] == 1

    conn = await asyncpg.connect(db_url)
    try:
        orders = await conn.fetch("SELECT agent, status FROM work_orders WHERE linkedid = $1", pop["linkedid"])
        calls = await conn.fetch("SELECT node, outcome FROM calls WHERE linkedid = $1", pop["linkedid"])
    finally:
        await conn.close()
    assert [(r["agent"], r["status"]) for r in orders] == [("1001", "draft")]  # one order, made on node A
    assert [(r["node"], r["outcome"]) for r in calls] == [("node-a", "answered")]


async def test_big_message_travels_by_reference(db_url):
    """Over the NOTIFY payload limit the message is stored and loaded by the other node."""
    async with running_service(db_url, node_id="node-a") as a, running_service(db_url, node_id="node-b") as b, \
            aiohttp.ClientSession() as http_b:
        from cti.app import services_key
        from cti.web import hub_key

        await b.login(http_b, "agent1002")
        async with http_b.ws_connect(f"{b.base_url}/ws/agent/1002") as ws:
            big = {"type": "call_state", "linkedid": "x", "state": "ringing", "note": "长" * 6000}
            a.app[hub_key].publish("agent:1002", big)
            got = await _next(ws, "call_state")
            assert got == big
        assert a.app[services_key]["cluster"].refs == 1


async def test_a_node_skips_its_own_notifications_and_takes_every_other_nodes():
    """PostgreSQL hands every listener every notification; a node drops its
    own by their first characters, before decoding them -- so a node whose
    name another node's name starts or ends with must still be heard."""
    from cti import cluster
    from cti.hub import Hub

    for node in ("node-a", 'no"de\\', "节点一"):
        bus = cluster.ClusterBus("postgresql://unused", node, Hub(), pool=None)
        own = [cluster._compact({"n": node, "k": "hub", "t": "agent:1001", "m": {"type": "call_state"}}),
               cluster._compact({"n": node, "k": "ref", "id": 7}),
               cluster._compact({"n": node, "k": "calls"})]
        others = [cluster._compact({"n": node + "x", "k": "calls"}),
                  cluster._compact({"n": "x" + node, "k": "calls"}),
                  cluster._compact({"n": node[:-1], "k": "calls"})]
        for text in own + others + ["not json", '{"n":']:
            bus._on_notify(None, 0, cluster.CHANNEL, text)
        heard = [bus._in.get_nowait()["n"] for _ in range(bus._in.qsize())]
        assert heard == [node + "x", "x" + node, node[:-1]]

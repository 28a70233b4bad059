"""Two service processes (here: two apps in one test process) on one
PostgreSQL, each with its own simulated Asterisk: a call arriving on node A
pops up on the page of an agent connected to node B (LISTEN/NOTIFY), and
node B's wallboard counts it."""
from __future__ import annotations

import asyncio
import contextlib
import json

import aiohttp
import asyncpg

from cti.simulator import CallSpec

from .harness import Inbox, next_message, running_service, until


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
            assert await until(lambda: a.app[services_key]["cluster"].knows("agent:1002"))  # B's page, heard on A
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


# -- presence: a hub message goes only where a page for it is -----------------

class Page:
    """A page's websocket as the hub sees it: what it was sent, decoded."""

    def __init__(self) -> None:
        self.got: list[dict] = []

    async def send_str(self, data: str) -> None:
        self.got.append(json.loads(data))

    async def close(self) -> None:
        pass

    def kinds(self) -> list[tuple[str, bool]]:
        return [(m["type"], bool(m.get("replay"))) for m in self.got]


@contextlib.asynccontextmanager
async def nodes(db_url, *names, heartbeat_s: float = 30.0):
    """Light nodes (a hub and its cluster bus each) on one database, and a
    listener that records every notification on the channel."""
    from cti import cluster
    from cti.hub import Hub

    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=4)
    spy = await asyncpg.connect(db_url)
    heard: list[dict] = []
    await spy.add_listener(cluster.CHANNEL, lambda *args: heard.append(json.loads(args[3])))
    buses = [cluster.ClusterBus(db_url, n, Hub(), pool, heartbeat_s=heartbeat_s) for n in names]
    try:
        for bus in buses:
            await bus.start()
        yield buses, heard
    finally:
        for bus in buses:
            await bus.stop()
            await bus.hub.close()
        await spy.close()
        await pool.close()


POP = {"type": "screen_pop", "linkedid": "1795413731.0", "agent": "1001", "caller_num": "13800000001"}
STATE = {"type": "call_state", "linkedid": "1795413731.0", "state": "ringing"}


async def test_a_single_node_sends_no_notification_for_its_pops(db_url):
    async with nodes(db_url, "node-a") as ((a,), heard):
        page = Page()
        a.hub.subscribe("agent:1001", page)
        await a.hub.publish_now("agent:1001", POP)
        a.hub.publish("agent:1001", STATE)
        a.calls_changed()
        await asyncio.sleep(0.3)
        await a.flush()
        await asyncio.sleep(0.1)
        assert page.kinds() == [("screen_pop", False), ("call_state", False)]
        # only its own presence went out: no pop, no call state, no call milestone
        assert {m["k"] for m in heard} <= {"all", "on"}, heard
        assert not a.knows("agent:1001")


async def test_a_page_opened_on_node_b_after_the_pop_on_node_a_gets_it_once(db_url):
    """The pop was made on A before any page for the agent was open on B
    (nothing relayed); B's page gets A's replay as a page opened on A
    would, and a page on C that already showed the pop gets nothing twice."""
    async with nodes(db_url, "node-a", "node-b", "node-c") as ((a, b, c), heard):
        on_c = Page()
        c.hub.subscribe("agent:1001", on_c)
        assert await until(lambda: a.knows("agent:1001"))
        await a.hub.publish_now("agent:1001", POP)
        a.hub.publish("agent:1001", STATE)
        assert await until(lambda: len(on_c.got) == 2)
        assert on_c.kinds() == [("screen_pop", False), ("call_state", False)]

        on_b = Page()
        sub_b = b.hub.subscribe("agent:1001", on_b)
        assert await until(lambda: len(on_b.got) == 2)
        assert on_b.kinds() == [("screen_pop", True), ("call_state", False)]
        assert on_b.got[0]["linkedid"] == POP["linkedid"]
        await asyncio.sleep(0.3)
        assert len(on_b.got) == 2 and len(on_c.got) == 2  # once each

        # B's page closes and opens again: B forgot A's call, A replays it once more
        b.hub.unsubscribe(sub_b)
        assert await until(lambda: a._present.get("agent:1001") == {"node-c"})
        again = Page()
        b.hub.subscribe("agent:1001", again)
        assert await until(lambda: len(again.got) == 2)
        await asyncio.sleep(0.3)
        assert again.kinds() == [("screen_pop", True), ("call_state", False)]


async def test_a_node_that_stops_or_falls_silent_gets_no_more_relays(db_url):
    async with nodes(db_url, "node-a", "node-b", "node-c") as ((a, b, c), heard):
        b.hub.subscribe("agent:1001", Page())
        c.hub.subscribe("agent:1002", Page())
        assert await until(lambda: a.knows("agent:1001") and a.knows("agent:1002"))
        await b.stop()  # says bye
        assert await until(lambda: not a.knows("agent:1001"))
        assert a.knows("agent:1002")
        # C falls silent (no heartbeat for three periods): forgotten
        a._heard["node-c"] -= 3 * a.heartbeat_s + 1
        a._forget_silent()
        assert not a.knows("agent:1002") and "node-c" not in a._heard
        # ...until it is heard again: its heartbeat lists its pages
        c._announce()
        assert await until(lambda: a.knows("agent:1002"))


async def test_a_node_whose_listener_reconnects_asks_the_others_for_their_pages(db_url):
    async with nodes(db_url, "node-a", "node-b") as ((a, b), heard):
        b.hub.subscribe("agent:1001", Page())
        assert await until(lambda: a.knows("agent:1001"))
        a._set_topics("node-b", set())  # as if A had missed B's announcements
        assert not a.knows("agent:1001")
        admin = await asyncpg.connect(db_url)
        try:  # cut A's listening connection (the only one listening besides the spy's and B's)
            pids = await admin.fetch("SELECT pid FROM pg_stat_activity WHERE query LIKE 'LISTEN%' "
                                     "AND datname = current_database()")
            await admin.fetch("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE pid = ANY($1::int[])", [r["pid"] for r in pids])
        finally:
            await admin.close()
        assert await until(lambda: a.knows("agent:1001"), timeout=15)


async def test_an_escalation_fired_on_node_a_reaches_a_supervisors_wallboard_on_node_b(db_url):
    from cti.hub import SUPERVISOR_TOPIC

    alert = {"type": "sla_alert", "alert": "SlaBreached", "deadline_id": 7, "order_no": "GD20261123000001"}
    async with nodes(db_url, "node-a", "node-b") as ((a, b), heard):
        wallboard_b = Page()
        b.hub.subscribe(SUPERVISOR_TOPIC, wallboard_b)
        b.hub.subscribe("wallboard", Page())
        assert await until(lambda: a.knows(SUPERVISOR_TOPIC))
        assert not a.knows("wallboard")  # each node computes its own figures
        a.hub.publish(SUPERVISOR_TOPIC, alert)
        a.hub.publish("wallboard", {"type": "wallboard"})
        assert await until(lambda: wallboard_b.got == [alert])
        await asyncio.sleep(0.2)
        assert [m["t"] for m in heard if m["k"] == "hub"] == [SUPERVISOR_TOPIC]

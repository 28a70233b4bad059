"""Simulator → AMI over TCP → tracker → PostgreSQL → websocket, end to end."""
from __future__ import annotations

import asyncio
import json

import aiohttp
import asyncpg

from cti.simulator import CallSpec

from .harness import Inbox, next_pop, running_service


async def _next_pop(ws, timeout=10.0):
    return await next_pop(ws, timeout)


async def test_ringing_agent_gets_prefilled_work_order_and_saves_it(db_url):
    async with running_service(db_url) as svc, aiohttp.ClientSession() as http:
        await svc.login(http)
        async with http.ws_connect(f"{svc.base_url}/ws/agent/1001") as ws, \
                http.ws_connect(f"{svc.base_url}/ws/agent/1002") as other:
            call = asyncio.create_task(svc.simulator.place_call(CallSpec(
                caller_num="+8613800138000", caller_name="张三", ivr_choice="repair",
                customer_id="", outage_id="", agent="1001", outcome="answered", ring_s=2, talk_s=5)))
            pop = await _next_pop(ws)
            assert pop["agent"] == "1001" and pop["queue"] == "repair"
            assert pop["caller_name"] == "张三"
            assert pop["customer"]["account_no"] == "3100012345"
            assert pop["customer"]["transformer_area"] == "才湾2号台区"
            order = pop["order"]
            assert order["status"] == "draft" and order["order_type"] == "repair"
            assert order["address"] == pop["customer"]["address"] != ""
            assert order["transformer_area"] == "才湾2号台区"
            assert order["contact_phone"] == "13800138000"
            # the other agent's page got nothing
            assert other.closed is False
            try:
                stray = await asyncio.wait_for(_next_pop(other), 0.3)
            except asyncio.TimeoutError:
                stray = None
            assert stray is None
            await call

            async with http.post(f"{svc.base_url}/api/orders/{order['id']}", json={
                    "order_type": "repair", "contact_name": "张三", "contact_phone": "13800138000",
                    "address": order["address"], "transformer_area": order["transformer_area"],
                    "description": "家中全部停电,邻居也停", "version": order["version"]}) as r:
                assert r.status == 200, await r.text()
                saved = await r.json()
            assert saved["status"] == "accepted"

            # a second save with the old version is refused: nothing overwritten
            async with http.post(f"{svc.base_url}/api/orders/{order['id']}", json={
                    "order_type": "repair", "contact_phone": "1", "address": "x",
                    "description": "覆盖", "version": order["version"]}) as r:
                assert r.status == 409

        await svc.pipeline.drain()
        conn = await asyncpg.connect(db_url)
        try:
            row = await conn.fetchrow("SELECT * FROM work_orders WHERE id = $1", order["id"])
            assert row["status"] == "accepted" and row["description"] == "家中全部停电,邻居也停"
            assert row["linkedid"] == pop["linkedid"]
            c = await conn.fetchrow("SELECT * FROM calls WHERE linkedid = $1", pop["linkedid"])
            assert c["outcome"] == "answered" and c["agent"] == "1001" and c["queue"] == "repair"
            assert c["customer_id"] == row["customer_id"] is not None
        finally:
            await conn.close()


async def test_next_call_shows_the_callers_recent_orders(db_url):
    async with running_service(db_url) as svc, aiohttp.ClientSession() as http:
        await svc.login(http)
        async with http.ws_connect(f"{svc.base_url}/ws/agent/1003") as ws:
            spec = dict(caller_num="13800138000", caller_name="张三", ivr_choice="complaint",
                        customer_id="", outage_id="", agent="1003", outcome="answered", ring_s=1, talk_s=1)
            task = asyncio.create_task(svc.simulator.place_call(CallSpec(**spec)))
            first = await _next_pop(ws)
            await task
            o = first["order"]
            async with http.post(f"{svc.base_url}/api/orders/{o['id']}", json={
                    "order_type": "complaint", "contact_phone": "13800138000",
                    "description": "抄表员态度差", "version": o["version"]}) as r:
                assert r.status == 200
            task = asyncio.create_task(svc.simulator.place_call(CallSpec(**spec)))
            second = await _next_pop(ws)
            await task
            assert [r["order_no"] for r in second["recent_orders"]] == [o["order_no"]]
            assert second["order"]["id"] != o["id"]


async def test_unknown_caller_gets_number_and_empty_customer_section(db_url):
    async with running_service(db_url) as svc, aiohttp.ClientSession() as http:
        await svc.login(http)
        async with http.ws_connect(f"{svc.base_url}/ws/agent/1002") as ws:
            task = asyncio.create_task(svc.simulator.place_call(CallSpec(
                caller_num="13912345678", caller_name="", ivr_choice="complaint", customer_id="",
                outage_id="", agent="1002", outcome="answered", ring_s=1, talk_s=1)))
            pop = await _next_pop(ws)
            await task
    assert pop["customer"] is None
    assert pop["order"]["customer_id"] is None
    assert pop["order"]["contact_phone"] == "13912345678"
    assert pop["order"]["address"] == ""


async def test_abandoned_call_is_recorded_as_abandoned(db_url):
    async with running_service(db_url) as svc:
        await svc.simulator.place_call(CallSpec(
            caller_num="13800138001", caller_name="", ivr_choice="enquiry", customer_id="",
            outage_id="", agent="1003", outcome="abandoned", ring_s=2, talk_s=0))
        await asyncio.sleep(0.2)
        await svc.pipeline.drain()
        conn = await asyncpg.connect(db_url)
        try:
            rows = await conn.fetch("SELECT outcome, queue FROM calls")
        finally:
            await conn.close()
    assert [(r["outcome"], r["queue"]) for r in rows] == [("abandoned", "enquiry")]


async def test_screen_pop_survives_a_broken_database(db_url):
    """The agent still sees the caller when the work-order store fails."""
    async with running_service(db_url) as svc, aiohttp.ClientSession() as http:
        await svc.login(http)
        async with http.ws_connect(f"{svc.base_url}/ws/agent/1004") as ws:
            conn = await asyncpg.connect(db_url)
            try:
                await conn.execute("ALTER TABLE work_orders RENAME TO work_orders_away")
                task = asyncio.create_task(svc.simulator.place_call(CallSpec(
                    caller_num="13800138000", caller_name="张三", ivr_choice="repair", customer_id="",
                    outage_id="", agent="1004", outcome="answered", ring_s=1, talk_s=1)))
                pop = await _next_pop(ws)
                await task
            finally:
                await conn.execute("ALTER TABLE work_orders_away RENAME TO work_orders")
                await conn.close()
    assert pop["caller_num"] == "13800138000"
    assert pop["order"] is None and "error" in pop


async def test_ringall_loser_draft_is_withdrawn_and_winner_keeps_it(db_url):
    """complaint is a ringall queue: both agents ring and get a draft; the one
    who did not answer sees it withdrawn, nothing half-written remains."""
    async with running_service(db_url) as svc, aiohttp.ClientSession() as http:
        await svc.login(http)
        async with http.ws_connect(f"{svc.base_url}/ws/agent/1002") as ws2, \
                http.ws_connect(f"{svc.base_url}/ws/agent/1003") as ws3:
            task = asyncio.create_task(svc.simulator.place_call(CallSpec(
                caller_num="13800138000", caller_name="张三", ivr_choice="complaint", agent="1002",
                ring_order=("1002", "1003"), outcome="answered", ring_s=1, talk_s=1)))
            box3 = Inbox(ws3)
            pop2, pop3 = await _next_pop(ws2), await box3.pop()
            assert pop2["linkedid"] == pop3["linkedid"]
            withdrawn = await box3.next("screen_pop_withdrawn")
            assert withdrawn["reason"] == "answered_elsewhere"
            await task
        await svc.pipeline.drain()
        conn = await asyncpg.connect(db_url)
        try:
            rows = {r["agent"]: r["status"] for r in await conn.fetch(
                "SELECT agent, status FROM work_orders WHERE linkedid = $1", pop2["linkedid"])}
        finally:
            await conn.close()
    assert rows == {"1002": "draft", "1003": "cancelled"}


async def test_a_page_opened_mid_call_gets_the_current_pop_and_call_state(db_url):
    """An agent who reloads the desk (or opens it late) during a call sees the
    pop again, marked as a replay, with the call's state; a withdrawn pop is
    not replayed."""
    async with running_service(db_url) as svc, aiohttp.ClientSession() as http:
        await svc.login(http)
        async with http.ws_connect(f"{svc.base_url}/ws/agent/1001") as ws:
            call = asyncio.create_task(svc.simulator.place_call(CallSpec(
                caller_num="13800138000", caller_name="张三", ivr_choice="repair", customer_id="", outage_id="",
                agent="1001", outcome="answered", ring_s=1, talk_s=60)))
            box = Inbox(ws)
            pop = await box.pop()
            await box.next("call_state", where=lambda m: m["state"] == "connected")  # until the call is connected
        async with http.ws_connect(f"{svc.base_url}/ws/agent/1001") as again:  # the page reloaded
            got = [json.loads((await asyncio.wait_for(again.receive(), 5)).data) for _ in range(2)]
            assert got[0]["type"] == "screen_pop" and got[0]["replay"] is True
            assert got[0]["linkedid"] == pop["linkedid"] and got[0]["order"]["id"] == pop["order"]["id"]
            assert got[1] == {"type": "call_state", "linkedid": pop["linkedid"], "state": "connected"}
        async with http.ws_connect(f"{svc.base_url}/ws/agent/1002") as other:  # nothing for another agent
            first = json.loads((await asyncio.wait_for(other.receive(), 5)).data)
            assert first["type"] == "hello"
        call.cancel()

        # a ring that goes unanswered: its draft is withdrawn, and so is the replay
        async with http.ws_connect(f"{svc.base_url}/ws/agent/1003") as ws:
            await svc.simulator.place_call(CallSpec(
                caller_num="13900139000", caller_name="", ivr_choice="complaint", customer_id="", outage_id="",
                agent="1003", outcome="abandoned", ring_s=1, wait_s=2, ring_order=("1003",)))
            await svc.pipeline.drain()
        async with http.ws_connect(f"{svc.base_url}/ws/agent/1003") as again:
            first = json.loads((await asyncio.wait_for(again.receive(), 5)).data)
            assert first["type"] == "hello"

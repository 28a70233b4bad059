"""The /api/tickets/ HTTP API with aiohttp's test client on a real PostgreSQL."""
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from cti.web import add_routes, pool_key
from tickets.routes import add_ticket_routes
from tickets.workflow import TicketSettings

from .harness import auth_for_app
from .tickets_support import Clock, add_customer, cst, draft

CREW = {"department": "城关抢修班", "assignee": "王师傅", "assignee_phone": "13900001111"}


@pytest.fixture
async def api(pool):
    clock = Clock(cst(2026, 9, 30, 9, 0))
    app = web.Application()
    add_routes(app)                     # the agent desktop's routes and error middleware, as in cti/app.py
    app[pool_key] = pool
    add_ticket_routes(app, settings=TicketSettings(clock=clock))
    auth = auth_for_app(app, pool)
    async with TestClient(TestServer(app)) as client:
        client.clock = clock
        client.auth = auth
        await auth.login(client, "supervisor")   # the whole loop: a supervisor may take every step
        yield client


async def _ok(resp, status=200):
    body = await resp.json()
    assert resp.status == status, body
    return body


async def _accept(api, pool, customer=None, **extra):
    async with pool.acquire() as conn:
        o = await draft(conn, customer or await add_customer(conn))
    body = {"order_type": "repair", "contact_name": "张三", "contact_phone": o["contact_phone"],
            "address": o["address"] or "城关镇1号", "transformer_area": o["transformer_area"], "description": "停电",
            "version": o["version"], "actor": "1001", **extra}
    return await _ok(await api.post(f"/api/tickets/orders/{o['id']}/accept", json=body))


async def test_an_agent_and_a_department_take_a_repair_round_the_loop_through_the_api(api, pool):
    o = await _accept(api, pool)
    assert o["status"] == "accepted" and {d["kind"] for d in o["deadlines"]} == {"dispatch", "arrival"}
    oid = o["id"]
    o = await _ok(await api.post(f"/api/tickets/orders/{oid}/dispatch",
                                 json={**CREW, "version": o["version"], "actor": "1001"}))
    assert o["status"] == "dispatched"
    assert [m["status"] for m in o["crew_messages"]] == ["sent", "sent"]     # delivered after commit
    inbox = await _ok(await api.get("/api/tickets/departments/城关抢修班/inbox"))
    assert [i["id"] for i in inbox] == [oid] and inbox[0]["reply_due_at"]
    api.clock.advance(minutes=25)
    o = await _ok(await api.post(f"/api/tickets/orders/{oid}/crew-report",
                                 json={"kind": "arrival", "version": o["version"], "actor": "王师傅"}))
    o = await _ok(await api.post(f"/api/tickets/orders/{oid}/crew-report",
                                 json={"kind": "findings", "findings": "表箱进线烧断", "expected_repair_at":
                                       "2026-09-30T11:00:00+08:00", "version": o["version"], "actor": "王师傅"}))
    o = await _ok(await api.post(f"/api/tickets/orders/{oid}/crew-report",
                                 json={"kind": "result", "result": "restored", "version": o["version"],
                                       "actor": "王师傅"}))
    o = await _ok(await api.post(f"/api/tickets/orders/{oid}/feedback",
                                 json={"result": "已更换进线,恢复送电", "version": o["version"], "actor": "班长"}))
    work = await _ok(await api.get("/api/tickets/callbacks"))
    assert [w["id"] for w in work] == [oid] and work[0]["callable_now"] is True
    o = await _ok(await api.post(f"/api/tickets/orders/{oid}/callback",
                                 json={"result": "satisfied", "version": o["version"], "actor": "1001"}))
    o = await _ok(await api.post(f"/api/tickets/orders/{oid}/close", json={"version": o["version"], "actor": "1001"}))
    assert o["status"] == "closed"
    assert await _ok(await api.get("/api/tickets/callbacks")) == []
    events = await _ok(await api.get(f"/api/tickets/orders/{oid}/events"))
    assert [e["event"] for e in events][0] == "OrderAccepted" and events[-1]["event"] == "OrderClosed"
    stats = await _ok(await api.get("/api/tickets/stats/arrival?from=2026-09-01&to=2026-09-30"))
    assert (stats["on_time"], stats["counted"], stats["rate"]) == (1, 1, 1.0)


async def _state(pool, oid):
    async with pool.acquire() as conn:
        return (await conn.fetchval("SELECT version FROM work_orders WHERE id = $1", oid),
                await conn.fetchval("SELECT count(*) FROM work_order_events WHERE order_id = $1", oid))


async def test_api_errors_are_clear_and_nothing_is_half_written(api, pool):
    o = await _accept(api, pool)
    oid, v = o["id"], o["version"]
    before = await _state(pool, oid)
    r = await api.post(f"/api/tickets/orders/{oid}/feedback", json={"result": "x", "version": v, "actor": "a"})
    body = await r.json()
    assert r.status == 409 and body["error"] == "illegal_transition" and body["status"] == "accepted"
    r = await api.post(f"/api/tickets/orders/{oid}/dispatch", json={"department": "抢修班", "version": v})
    body = await r.json()
    assert r.status == 422 and set(body["fields"]) == {"actor"}
    r = await api.post(f"/api/tickets/orders/{oid}/dispatch", json={"department": "抢修班", "version": v, "actor": "a"})
    body = await r.json()
    assert r.status == 422 and set(body["fields"]) == {"assignee", "assignee_phone"} and " / " in body["message"]
    r = await api.post(f"/api/tickets/orders/{oid}/dispatch", json={**CREW, "version": v - 1, "actor": "a"})
    body = await r.json()
    assert r.status == 409 and body["error"] == "stale" and body["current_version"] == v
    r = await api.post(f"/api/tickets/orders/{oid}/dispatch", json={**CREW, "actor": "a"})
    assert r.status == 422 and "version" in (await r.json())["fields"]
    r = await api.post(f"/api/tickets/orders/{oid}/dispatch", data="not json")
    assert r.status == 400 and (await r.json())["error"] == "bad_json"
    r = await api.post(f"/api/tickets/orders/{oid}/teleport", json={"version": v, "actor": "a"})
    assert r.status == 404
    assert (await api.get("/api/tickets/orders/999999")).status == 404
    assert (await api.post("/api/tickets/orders/999999/start", json={"version": 1, "actor": "a"})).status == 404
    assert (await api.get("/api/tickets/orders/abc")).status == 404
    assert await _state(pool, oid) == before


async def test_a_complaint_needs_a_known_category(api, pool):
    async with pool.acquire() as conn:
        o = await draft(conn, await add_customer(conn), ivr_choice="complaint")
    body = {"order_type": "complaint", "contact_phone": o["contact_phone"], "description": "营业厅人员态度差",
            "version": o["version"], "actor": "1002"}
    r = await api.post(f"/api/tickets/orders/{o['id']}/accept", json=body)
    assert r.status == 422 and "category" in (await r.json())["fields"]
    r = await api.post(f"/api/tickets/orders/{o['id']}/accept", json={**body, "category": "ZZ0101"})
    assert r.status == 422 and "category" in (await r.json())["fields"]
    got = await _ok(await api.get(f"/api/tickets/orders/{o['id']}"))
    assert got["status"] == "draft" and got["events"] == []
    saved = await _ok(await api.post(f"/api/tickets/orders/{o['id']}/accept", json={**body, "category": "FW0101"}))
    assert saved["category"]["names"] == ["服务投诉", "服务行为", "营业厅人员服务态度"]
    r = await api.post(f"/api/tickets/orders/{o['id']}/classify",
                       json={"category": ["FW", "YY01", "YY0101"], "version": saved["version"], "actor": "1002"})
    body = await r.json()
    assert r.status == 422 and body["error"] in ("invalid", "unknown_category") and "category" in body["fields"]
    ok = await _ok(await api.post(f"/api/tickets/orders/{o['id']}/classify",
                                  json={"category": "YY0202", "version": saved["version"], "actor": "1002"}))
    assert ok["category"]["codes"] == ["YY", "YY02", "YY0202"]


async def test_search_by_order_number_phone_and_customer(api, pool):
    async with pool.acquire() as conn:
        c = await add_customer(conn, name="欧阳明", phone="13812345678")
    o = await _accept(api, pool, c)
    await _accept(api, pool, transformer_area="别处台区")
    for q in (o["order_no"], o["order_no"][-6:], "13812345678", "2345678", "欧阳", c["account_no"]):
        hits = await _ok(await api.get("/api/tickets/orders", params={"q": q}))
        assert o["id"] in [h["id"] for h in hits], q
    assert await _ok(await api.get("/api/tickets/orders", params={"q": "没有这个人"})) == []
    assert len(await _ok(await api.get("/api/tickets/orders", params={"status": "accepted"}))) == 2
    assert (await api.get("/api/tickets/orders", params={"status": "bogus"})).status == 422
    # % and _ are literal characters, not wildcards
    assert await _ok(await api.get("/api/tickets/orders", params={"q": "%"})) == []


async def test_duplicate_repair_reports_are_merged_and_the_form_sees_the_known_fault(api, pool):
    first = await _accept(api, pool)
    faults = await _ok(await api.get("/api/tickets/known-faults", params={"transformer_area": "才湾2号台区"}))
    assert [f["ref"] for f in faults] == [first["order_no"]]
    second = await _accept(api, pool)
    assert second["merged_into_order_id"] == first["id"] and second["attached_to"]["fault_order_no"] == first["order_no"]
    callers = await _ok(await api.get(f"/api/tickets/orders/{first['id']}/callers"))
    assert [c["order_id"] for c in callers] == [second["id"]]
    r = await api.post(f"/api/tickets/orders/{second['id']}/dispatch",
                       json={**CREW, "version": second["version"], "actor": "1001"})
    assert r.status == 409
    third = await _accept(api, pool, new_fault=True, new_fault_reason="只有本户停电,邻居有电")
    assert not third["merged"]
    r = await api.post(f"/api/tickets/orders/{second['id']}/detach",
                       json={"reason": "地址不在该台区", "version": second["version"], "actor": "1001"})
    assert (await r.json())["merged"] is False


async def test_deadlines_worklist_reference_data_and_load(api, pool):
    await _accept(api, pool)
    api.clock.advance(minutes=10)
    dl = await _ok(await api.get("/api/tickets/deadlines"))
    assert [d["kind"] for d in dl] == ["dispatch", "arrival"] and dl[0]["overdue"] is True
    assert (await api.get("/api/tickets/deadlines", params={"state": "nope"})).status == 422
    # the wallboard's list: only deadlines the worker warned of or escalated
    assert await _ok(await api.get("/api/tickets/deadlines", params={"state": "alerts"})) == []
    async with pool.acquire() as conn:
        await conn.execute("UPDATE work_order_deadlines SET state = 'breached', breached_at = now() WHERE kind = 'dispatch'")
    alerts = await _ok(await api.get("/api/tickets/deadlines", params={"state": "alerts"}))
    assert [(d["kind"], d["deadline_state"]) for d in alerts] == [("dispatch", "breached")]
    tree = await _ok(await api.get("/api/tickets/categories"))
    assert [f["name"] for f in tree] == ["服务投诉", "营业投诉", "停送电投诉", "供电质量投诉", "电网建设投诉"]
    meta = await _ok(await api.get("/api/tickets/meta"))
    assert meta["quiet_hours"] == "12:00-14:30,21:00-08:00" and meta["arrival_minutes"]["remote"] == 120
    assert "抢修班" in await _ok(await api.get("/api/tickets/departments"))
    load = await _ok(await api.put("/api/tickets/load", json={"heavy": True, "actor": "值班长"}))
    assert load["heavy"] is True and load["override"] is True
    assert (await api.put("/api/tickets/load", json={"heavy": "yes", "actor": "x"})).status == 422
    complaints = await _ok(await api.get("/api/tickets/stats/complaints"))
    assert complaints["total"] == 0


@pytest.mark.parametrize("q,slug", [("电费怎么交", "bill-query-payment"), ("业扩报装", "new-connection"),
                                    ("阶梯电价", "tariff-residential-ladder"), ("电表不准", "meter-check"),
                                    ("增容", "capacity-change"), ("停电计划", "outage-schedule"),
                                    ("电线断了", "safety-fallen-wire")])
async def test_knowledge_base_finds_the_standard_answer(api, q, slug):
    hits = await _ok(await api.get("/api/tickets/knowledge", params={"q": q}))
    assert hits and hits[0]["slug"] == slug, [h["slug"] for h in hits]
    article = await _ok(await api.get(f"/api/tickets/knowledge/{slug}"))
    assert article["body"]
    assert (await api.get("/api/tickets/knowledge/nope")).status == 404


async def test_knowledge_base_lists_every_topic_without_a_query(api):
    everything = await _ok(await api.get("/api/tickets/knowledge"))
    topics = {a["topic"] for a in everything}
    assert {"电价", "电费", "停电信息", "业扩报装", "用电变更", "计量", "安全用电"} <= topics


async def test_listeners_hear_each_committed_change_and_a_failing_one_undoes_nothing(api, pool):
    """``TicketServices.on_changed`` (what tells the wallboards) is called
    after each committed accept, transition and crew report -- not for a
    refused one -- and a listener that raises changes nothing for the caller."""
    from tickets.routes import tickets_key

    heard: list[tuple[int, str]] = []

    def broken(order_id: int, action: str) -> None:
        raise RuntimeError("wallboard gone")

    api.server.app[tickets_key].on_changed.extend([broken, lambda oid, action: heard.append((oid, action))])
    o = await _accept(api, pool)
    oid = o["id"]
    # a stale version is refused: nothing committed, nothing heard
    await _ok(await api.post(f"/api/tickets/orders/{oid}/dispatch",
                             json={**CREW, "version": o["version"] - 1, "actor": "1001"}), 409)
    o = await _ok(await api.post(f"/api/tickets/orders/{oid}/dispatch",
                                 json={**CREW, "version": o["version"], "actor": "1001"}))
    assert o["status"] == "dispatched"
    await _ok(await api.post(f"/api/tickets/orders/{oid}/crew-report",
                             json={"kind": "arrival", "version": o["version"], "actor": "王师傅"}))
    assert heard == [(oid, "accept"), (oid, "dispatch"), (oid, "crew_arrival")]

"""The work-order loop on a real PostgreSQL: transitions, audit trail,
deadline rows, callbacks, optimistic locking, nothing half-written."""
import asyncpg
import pytest

from tickets import crew, queries, repository
from tickets.crew import LoggingCrewMessenger
from tickets.model import ValidationError
from tickets.states import IllegalTransition

from .tickets_support import accepted, add_customer, cst, workflow_at

CREW = {"department": "城关抢修班", "assignee": "王师傅", "assignee_phone": "13900001111"}


async def _deadlines(conn, order_id):
    return {(r["kind"], r["state"]): r for r in await conn.fetch(
        "SELECT * FROM work_order_deadlines WHERE order_id = $1 ORDER BY id", order_id)}


async def test_repair_goes_round_the_loop_with_an_audit_trail_and_deadline_rows(pool):
    wf, clock = workflow_at(cst(2026, 9, 30, 9, 0))
    async with pool.acquire() as conn:
        cust = await add_customer(conn, area_class="countryside")
        o = await accepted(conn, wf, cust)
        assert o["status"] == "accepted" and o["area_class"] == "countryside" and o["feeder"] == "10kV才湾线"
        d = await _deadlines(conn, o["id"])
        assert d[("dispatch", "pending")]["due_at"] == cst(2026, 9, 30, 9, 5)
        assert d[("arrival", "pending")]["due_at"] == cst(2026, 9, 30, 10, 30)    # countryside: 90 min

        clock.advance(minutes=3)
        o = await wf.act(conn, o["id"], "dispatch", CREW, actor="1001", version=o["version"])
        msgs = await crew.list_messages(conn, o["id"])
        assert [(m["channel"], m["status"]) for m in msgs] == [("sms", "pending"), ("phone", "pending")]
        assert o["order_no"] in msgs[0]["body"] and "才湾2号台区" in msgs[0]["body"]
        assert await crew.deliver_pending(conn, LoggingCrewMessenger()) == 2
        assert {m["status"] for m in await crew.list_messages(conn, o["id"])} == {"sent"}

        clock.advance(minutes=40)
        o = await wf.act(conn, o["id"], "crew_arrival", {}, actor="王师傅", version=o["version"])
        o = await wf.act(conn, o["id"], "crew_findings", {"findings": "跌落式熔断器熔断"}, actor="王师傅",
                         version=o["version"])
        clock.advance(minutes=30)
        o = await wf.act(conn, o["id"], "crew_result", {"result": "restored"}, actor="王师傅", version=o["version"])
        clock.advance(minutes=20)
        o = await wf.act(conn, o["id"], "feedback", {"result": "更换熔丝,已恢复送电"}, actor="抢修班长",
                         version=o["version"])
        assert o["status"] == "feedback"
        task = await conn.fetchrow("SELECT * FROM callback_tasks WHERE order_id = $1", o["id"])
        assert task["state"] == "pending" and task["due_at"] == cst(2026, 10, 8, 20, 59, 59)  # after National Day
        clock.advance(hours=2)
        o = await wf.act(conn, o["id"], "callback", {"result": "satisfied"}, actor="1001", version=o["version"])
        o = await wf.act(conn, o["id"], "close", {}, actor="1001", version=o["version"])
        assert o["status"] == "closed" and o["callback_by"] == "1001" and o["dispatched_by"] == "1001"

        events = await wf.events(conn, o["id"])
        assert [(e["event"], e["from_status"], e["to_status"]) for e in events] == [
            ("OrderAccepted", "draft", "accepted"),
            ("OrderDispatched", "accepted", "dispatched"),
            ("CrewArrived", "dispatched", "in_progress"),
            ("CrewFindingsReported", "in_progress", "in_progress"),
            ("CrewResultReported", "in_progress", "in_progress"),
            ("FeedbackGiven", "in_progress", "feedback"),
            ("CallbackRecorded", "feedback", "callback"),
            ("OrderClosed", "callback", "closed"),
        ]
        assert events[1]["actor"] == "1001" and events[1]["payload"]["department"] == "城关抢修班"
        assert [e["version"] for e in events] == sorted(e["version"] for e in events)
        states = {r["kind"]: r["state"] for r in await conn.fetch(
            "SELECT kind, state FROM work_order_deadlines WHERE order_id = $1", o["id"])}
        assert states == {"dispatch": "met", "arrival": "met", "department_reply": "met",
                          "repair_feedback": "met", "callback": "met"}
        assert await conn.fetchval("SELECT state FROM callback_tasks WHERE order_id = $1", o["id"]) == "done"


async def test_the_audit_trail_is_append_only(pool):
    wf, _ = workflow_at(cst(2026, 10, 8))
    async with pool.acquire() as conn:
        o = await accepted(conn, wf, order_type="enquiry", description="电价咨询")
        with pytest.raises(asyncpg.PostgresError):
            await conn.execute("UPDATE work_order_events SET actor = 'x' WHERE order_id = $1", o["id"])
        with pytest.raises(asyncpg.PostgresError):
            await conn.execute("DELETE FROM work_order_events WHERE order_id = $1", o["id"])


async def _snapshot(conn, order_id):
    return (await conn.fetchval("SELECT version FROM work_orders WHERE id = $1", order_id),
            await conn.fetchval("SELECT count(*) FROM work_order_events WHERE order_id = $1", order_id),
            await conn.fetchval("SELECT count(*) FROM work_order_deadlines WHERE order_id = $1", order_id),
            await conn.fetchval("SELECT count(*) FROM crew_messages WHERE order_id = $1", order_id))


async def test_illegal_transition_or_missing_field_writes_nothing(pool):
    wf, _ = workflow_at(cst(2026, 10, 8))
    async with pool.acquire() as conn:
        o = await accepted(conn, wf, await add_customer(conn))
        before = await _snapshot(conn, o["id"])
        with pytest.raises(IllegalTransition):
            await wf.act(conn, o["id"], "feedback", {"result": "x", "repair_result": "restored"}, actor="1001",
                         version=o["version"])
        with pytest.raises(ValidationError) as ei:
            await wf.act(conn, o["id"], "dispatch", {"department": "抢修班"}, actor="1001", version=o["version"])
        assert set(ei.value.errors) == {"assignee", "assignee_phone"}
        with pytest.raises(ValidationError):
            await wf.act(conn, o["id"], "dispatch", CREW, actor=" ", version=o["version"])
        assert await _snapshot(conn, o["id"]) == before


async def test_two_people_editing_one_order_the_second_gets_a_stale_version_error(pool):
    wf, _ = workflow_at(cst(2026, 10, 8))
    async with pool.acquire() as conn:
        o = await accepted(conn, wf, order_type="service_request", description="申请增容")
        v = o["version"]
        await wf.act(conn, o["id"], "dispatch", {"department": "营销部", "assignee": "甲"}, actor="1001", version=v)
        before = await _snapshot(conn, o["id"])
        with pytest.raises(repository.StaleOrder):
            await wf.act(conn, o["id"], "dispatch", {"department": "运检部", "assignee": "乙"}, actor="1002", version=v)
        assert await _snapshot(conn, o["id"]) == before
        assert (await wf.get(conn, o["id"]))["department"] == "营销部"


async def test_unsatisfied_callback_returns_the_order_and_the_cycle_repeats(pool):
    wf, clock = workflow_at(cst(2026, 10, 8, 9))
    async with pool.acquire() as conn:
        o = await accepted(conn, wf, order_type="complaint", description="抄表员态度恶劣", category="FW0103")
        assert o["category"]["label"] == "服务投诉 / 服务行为 / 抄表人员服务行为"
        o = await wf.act(conn, o["id"], "dispatch", {"department": "城关供电营业所", "assignee": "刘所长"},
                         actor="1003", version=o["version"])
        o = await wf.act(conn, o["id"], "feedback", {"result": "已约谈抄表员"}, actor="刘所长", version=o["version"])
        clock.advance(hours=3)
        o = await wf.act(conn, o["id"], "callback", {"result": "inconsistent", "note": "客户称无人联系过他"},
                         actor="1003", version=o["version"])
        assert o["status"] == "dispatched" and o["return_count"] == 1
        assert "无人联系" in o["last_return_reason"]
        d = await conn.fetch("SELECT kind, state, due_at FROM work_order_deadlines WHERE order_id = $1 "
                             "AND kind = 'department_reply' ORDER BY id", o["id"])
        assert [r["state"] for r in d] == ["met", "pending"]
        # returned on Thu 8 Oct: Fri 9, Sat 10 (worked), Mon 12
        assert d[1]["due_at"] == cst(2026, 10, 12, 23, 59, 59)
        assert await conn.fetchval("SELECT result FROM callback_tasks WHERE order_id = $1", o["id"]) == "inconsistent"
        o = await wf.act(conn, o["id"], "feedback", {"result": "营业所长上门致歉"}, actor="刘所长", version=o["version"])
        o = await wf.act(conn, o["id"], "callback", {"result": "satisfied"}, actor="1003", version=o["version"])
        o = await wf.act(conn, o["id"], "close", {}, actor="1003", version=o["version"])
        assert o["status"] == "closed"
        assert await conn.fetchval("SELECT count(*) FROM callback_tasks WHERE order_id = $1", o["id"]) == 2


async def test_upheld_appeal_removes_a_complaint_from_the_valid_count_but_keeps_the_record(pool):
    wf, _ = workflow_at(cst(2026, 10, 8, 9))
    since, until = cst(2026, 10, 1, 0), cst(2026, 11, 1, 0)
    async with pool.acquire() as conn:
        ids = []
        for _ in range(2):
            o = await accepted(conn, wf, await add_customer(conn, transformer_area="城东1号台区"),
                               order_type="complaint", description="频繁停电", category="TD0201")
            o = await wf.act(conn, o["id"], "dispatch", {"department": "运检部", "assignee": "周工"},
                             actor="1002", version=o["version"])
            ids.append(o)
        stats = await queries.complaint_stats(conn, since=since, until=until)
        assert (stats["total"], stats["valid"]) == (2, 2)
        assert stats["flagged_transformer_areas"] == [{"transformer_area": "城东1号台区", "valid": 2}]
        o = await wf.act(conn, ids[0]["id"], "appeal", {"reason": "系上级电网故障,不可抗力"}, actor="周工",
                         version=ids[0]["version"])
        o = await wf.act(conn, o["id"], "appeal_decide", {"decision": "upheld", "note": "经核实属实"},
                         actor="值班长", version=o["version"])
        assert o["appeal_status"] == "upheld" and o["valid_complaint"] is False and o["status"] == "dispatched"
        stats = await queries.complaint_stats(conn, since=since, until=until)
        assert (stats["total"], stats["valid"], stats["appeals_upheld"]) == (2, 1, 1)
        assert stats["flagged_transformer_areas"] == []
        assert [e["event"] for e in await wf.events(conn, o["id"])][-2:] == ["AppealFiled", "AppealUpheld"]


async def test_extension_records_progress_person_and_phone_and_moves_the_reply_deadline(pool):
    wf, clock = workflow_at(cst(2026, 10, 8, 9))
    async with pool.acquire() as conn:
        o = await accepted(conn, wf, order_type="service_request", description="低电压,需台区改造")
        o = await wf.act(conn, o["id"], "dispatch", {"department": "运检部", "assignee": "周工"}, actor="1001",
                         version=o["version"])
        clock.advance(days=6)      # past the 3 working days
        o = await wf.act(conn, o["id"], "extend", {"progress": "改造计划已上报待批", "responsible_person": "周工",
                                                   "responsible_phone": "13700007777",
                                                   "until": "2026-10-30T18:00:00+08:00"},
                         actor="周工", version=o["version"])
        assert (o["responsible_person"], o["responsible_phone"]) == ("周工", "13700007777")
        due = await conn.fetchval("SELECT due_at FROM work_order_deadlines WHERE order_id = $1 "
                                  "AND kind = 'department_reply' AND state = 'pending'", o["id"])
        assert due == cst(2026, 10, 30, 18)


async def test_enquiry_settled_on_the_phone_is_closed_by_the_hotline(pool):
    wf, _ = workflow_at(cst(2026, 10, 8, 9))
    async with pool.acquire() as conn:
        o = await accepted(conn, wf, order_type="enquiry", description="阶梯电价怎么算")
        o = await wf.act(conn, o["id"], "close", {"note": "已按知识库答复"}, actor="1004", version=o["version"])
        assert o["status"] == "closed" and o["close_note"] == "已按知识库答复"


async def test_repair_callback_for_key_customer_never_slips_under_heavy_load(pool):
    wf, _ = workflow_at(cst(2026, 9, 29, 15))
    async with pool.acquire() as conn:
        plain = await accepted(conn, wf, await add_customer(conn, transformer_area="A台区", feeder="A线"))
        key = await accepted(conn, wf, await add_customer(conn, transformer_area="B台区", feeder="B线",
                                                          high_rise=True))
        assert key["key_customer"] and not plain["key_customer"]
        for o in (plain, key):
            o = await wf.act(conn, o["id"], "dispatch", CREW, actor="1001", version=o["version"])
            await wf.act(conn, o["id"], "feedback", {"result": "已恢复", "repair_result": "restored"},
                         actor="班长", version=o["version"], heavy_load=True)
        rows = {r["order_id"]: r for r in await conn.fetch("SELECT * FROM callback_tasks")}
        assert rows[key["id"]]["due_at"] == cst(2026, 9, 30, 20, 59, 59)
        assert not rows[key["id"]]["deferred"]
        assert rows[plain["id"]]["deferred"] and rows[plain["id"]]["due_at"] == cst(2026, 10, 8, 20, 59, 59)
        work = await queries.callback_worklist(conn, now=wf.now(), quiet=wf.policy.quiet)
        assert [w["id"] for w in work] == [key["id"], plain["id"]]       # soonest due first


async def test_on_time_arrival_rate_in_sql_matches_the_pure_rule(pool):
    from tickets.deadlines import on_time_arrival_rate
    wf, clock = workflow_at(cst(2026, 10, 8, 8))
    async with pool.acquire() as conn:
        made = []
        for i, (area, minutes) in enumerate([("town", 20), ("town", 45), ("remote", 100), ("countryside", None)]):
            clock.t = cst(2026, 10, 8, 8 + i)
            o = await accepted(conn, wf, await add_customer(conn, transformer_area=f"T{i}", feeder=f"F{i}",
                                                            area_class=area))
            o = await wf.act(conn, o["id"], "dispatch", CREW, actor="1001", version=o["version"])
            if minutes is not None:
                clock.t = cst(2026, 10, 8, 8 + i) + __import__("datetime").timedelta(minutes=minutes)
                await wf.act(conn, o["id"], "crew_arrival", {}, actor="crew", version=o["version"])
            made.append(o["id"])
        now = cst(2026, 10, 8, 23)
        stats = await queries.arrival_stats(conn, since=cst(2026, 10, 8, 0), until=cst(2026, 10, 9, 0), now=now)
        recs = [(r["accepted_at"], r["due_at"], r["arrived_at"]) for r in await conn.fetch(
            """SELECT w.accepted_at, d.due_at, w.arrived_at FROM work_orders w
               JOIN work_order_deadlines d ON d.order_id = w.id AND d.kind = 'arrival'""")]
        assert stats == on_time_arrival_rate(recs, now=now)
        assert (stats.on_time, stats.late, stats.rate) == (2, 2, 0.5)

"""Duplicate-fault merging: callers of one transformer area / feeder are one
fault; every attached caller lands on the callback list when power is back."""
from datetime import timedelta

import pytest

from ivr import outage_repo
from ivr.outages import AreaType, NewOutage, OutageArea, OutageKind
from tickets import queries
from tickets.merging import KnownFault, area_key, choose_fault
from tickets.outage_source import NoOutages, RegistryOutageSource
from tickets.states import IllegalTransition
from tickets.worker import DeadlineWorker

from .tickets_support import accepted, add_customer, cst, workflow_at

CREW = {"department": "城关抢修班", "assignee": "王师傅", "assignee_phone": "13900001111"}


def test_area_names_compare_regardless_of_width_spaces_case_and_kilovolt_spelling():
    assert area_key(" 10千伏 才湾线 ") == area_key("10kV才湾线") == area_key("１０KV才湾线")


def test_the_most_specific_and_oldest_known_fault_is_chosen():
    t = cst(2026, 10, 8, 9)
    feeder_order = KnownFault("order", 1, "GD1", "feeder", "F", t)
    ta_outage = KnownFault("outage", 2, "TD1", "transformer_area", "T", t)
    ta_order_new = KnownFault("order", 3, "GD3", "transformer_area", "T", t + timedelta(minutes=5))
    ta_order_old = KnownFault("order", 4, "GD4", "transformer_area", "T", t)
    assert choose_fault([feeder_order, ta_outage, ta_order_new, ta_order_old]) is ta_order_old
    assert choose_fault([feeder_order, ta_outage]) is ta_outage
    assert choose_fault([]) is None


async def test_several_callers_from_one_transformer_area_are_one_fault_and_all_get_called_back(pool):
    wf, clock = workflow_at(cst(2026, 10, 8, 9))
    async with pool.acquire() as conn:
        first = await accepted(conn, wf, await add_customer(conn, name="张三", transformer_area="才湾2号台区"))
        assert not first["merged"]
        callers = []
        for i, spelling in enumerate(["才湾2号台区", " 才湾２号台区 ", "才湾2号台区"]):
            clock.advance(minutes=2)
            c = await add_customer(conn, name=f"邻居{i}", transformer_area=spelling, feeder=f"其他线{i}",
                                   sensitive=(i == 1))
            callers.append(await accepted(conn, wf, c))
        for c in callers:
            assert c["merged_into_order_id"] == first["id"] and c["status"] == "accepted"
            # no second crew: no dispatch or arrival clock for an attached caller
            assert await conn.fetchval("SELECT count(*) FROM work_order_deadlines WHERE order_id = $1", c["id"]) == 0
            assert [e["event"] for e in await wf.events(conn, c["id"])] == ["OrderAccepted", "CallerAttached"]
            with pytest.raises(IllegalTransition):
                await wf.act(conn, c["id"], "dispatch", CREW, actor="1001", version=c["version"])
        attached = await wf.attached_callers(conn, first["id"])
        assert [a["order_id"] for a in attached] == [c["id"] for c in callers]
        assert {a["matched_on"] for a in attached} == {"transformer_area"}
        assert [e["event"] for e in await wf.events(conn, first["id"])].count("CallerAttachedToFault") == 3
        faults = await wf.known_faults(conn, transformer_area="才湾2号台区", feeder="")
        assert [(f.ref, f.callers) for f in faults] == [(first["order_no"], 3)]

        # a caller on the same feeder but another transformer area joins the fault too
        feeder_caller = await accepted(conn, wf, await add_customer(conn, transformer_area="才湾5号台区"))
        assert feeder_caller["merged_into_order_id"] == first["id"]
        # one from elsewhere is a fault of its own
        other = await accepted(conn, wf, await add_customer(conn, transformer_area="城东1号台区", feeder="10kV城东线"))
        assert not other["merged"]
        # the agent may judge a same-area call to be a new fault
        own = await accepted(conn, wf, await add_customer(conn, transformer_area="才湾2号台区"), merge=False)
        assert not own["merged"]

        o = await wf.act(conn, first["id"], "dispatch", CREW, actor="1001", version=first["version"])
        clock.advance(minutes=50)
        o = await wf.act(conn, o["id"], "crew_result", {"result": "restored"}, actor="王师傅", version=o["version"])
        assert await conn.fetchval("SELECT count(*) FROM callback_tasks") == 0   # not before the feedback
        clock.advance(minutes=10)
        await wf.act(conn, o["id"], "feedback", {"result": "更换变压器熔丝,恢复送电"}, actor="班长",
                     version=o["version"])
        everyone = [first["id"]] + [c["id"] for c in callers] + [feeder_caller["id"]]
        tasks = {r["order_id"]: r for r in await conn.fetch("SELECT * FROM callback_tasks WHERE state = 'pending'")}
        assert set(tasks) == set(everyone)
        assert {tasks[c["id"]]["reason"] for c in callers} == {"fault_restored"}
        for c in callers:
            got = await wf.get(conn, c["id"])
            assert got["status"] == "feedback" and got["repair_result"] == "restored"
            assert first["order_no"] in got["feedback_result"]
        work = await queries.callback_worklist(conn, now=wf.now(), quiet=wf.policy.quiet)
        assert {w["id"] for w in work} == set(everyone)
        assert [w["callback_due_at"] for w in work] == sorted(w["callback_due_at"] for w in work)
        # the sensitive neighbour is a key customer: first among equal due times
        assert work[0]["id"] == callers[1]["id"]

        # a neighbour still without power after the restoration: a fault of its own
        c = await wf.get(conn, callers[0]["id"])
        c = await wf.act(conn, c["id"], "callback", {"result": "unsatisfied", "note": "我家还是没电"},
                         actor="1001", version=c["version"])
        assert c["status"] == "accepted" and not c["merged"]
        assert await conn.fetchval("SELECT count(*) FROM work_order_deadlines WHERE order_id = $1 "
                                   "AND kind = 'dispatch' AND state = 'pending'", c["id"]) == 1
        c = await wf.act(conn, c["id"], "dispatch", CREW, actor="1001", version=c["version"])
        assert c["status"] == "dispatched"


async def _outage(conn, now, *areas, kind=OutageKind.FAULT):
    new = NewOutage(kind=kind, reason="10kV才湾线故障跳闸", start_at=now - timedelta(minutes=30),
                    expected_restore_at=now + timedelta(hours=3), actor="调度所", department="调度所",
                    areas=tuple(OutageArea(t, n) for t, n in areas))
    return await outage_repo.create_outage(conn, new, now=now - timedelta(minutes=20))


async def test_caller_in_a_published_outage_is_attached_and_called_back_when_it_is_restored(pool):
    wf, clock = workflow_at(cst(2026, 10, 8, 9))
    async with pool.acquire() as conn:
        outage = await _outage(conn, clock.t, (AreaType.TRANSFORMER_AREA, "才湾2号台区"))
        a = await accepted(conn, wf, await add_customer(conn))
        b = await accepted(conn, wf, await add_customer(conn))
        assert a["merged_outage_id"] == outage.id and a["merged_outage_no"] == outage.outage_no
        assert b["merged_outage_id"] == outage.id
        assert not a["major_outage"]         # one transformer area: not a major outage
        faults = await wf.known_faults(conn, transformer_area="才湾2号台区", feeder="")
        assert faults[0].kind == "outage" and "预计" in faults[0].summary

    worker = DeadlineWorker(pool, workflow=wf)
    await worker.run_once()
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM callback_tasks") == 0    # still out
        await outage_repo.restore_outage(conn, outage.id, actor="调度所", now=clock.advance(hours=1))
    await worker.run_once()
    async with pool.acquire() as conn:
        tasks = await conn.fetch("SELECT * FROM callback_tasks ORDER BY due_at")
        assert {t["order_id"] for t in tasks} == {a["id"], b["id"]}
        assert {t["reason"] for t in tasks} == {"outage_restored"}
        assert (await wf.get(conn, a["id"]))["status"] == "feedback"
    assert await worker.run_once() == []      # the sweep is idempotent
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM callback_tasks") == 2


async def test_callers_of_a_feeder_wide_outage_are_key_callers(pool):
    wf, clock = workflow_at(cst(2026, 10, 8, 9))
    async with pool.acquire() as conn:
        await _outage(conn, clock.t, (AreaType.FEEDER, "10千伏才湾线"))
        a = await accepted(conn, wf, await add_customer(conn, transformer_area="才湾9号台区", feeder="10kV才湾线"))
        assert a["merged_outage_id"] and a["major_outage"]


async def test_without_the_outage_registry_merging_uses_open_repair_orders_only(pool):
    wf, clock = workflow_at(cst(2026, 10, 8, 9))
    async with pool.acquire() as conn:
        await conn.execute("DROP TABLE outage_areas, outage_events, outages CASCADE")
        assert await RegistryOutageSource().published_for(conn, transformer_area="x", feeder="y", village="z",
                                                          at=clock.t) == []
        assert await RegistryOutageSource().restored_among(conn, [1]) == []
        first = await accepted(conn, wf, await add_customer(conn))
        second = await accepted(conn, wf, await add_customer(conn))
        assert not first["merged"] and second["merged_into_order_id"] == first["id"]
        assert await NoOutages().published_for(conn, transformer_area="", feeder="", village="", at=clock.t) == []


async def test_callers_of_a_fault_closed_without_restoration_become_faults_of_their_own(pool):
    wf, clock = workflow_at(cst(2026, 10, 8, 9))
    async with pool.acquire() as conn:
        first = await accepted(conn, wf, await add_customer(conn))
        second = await accepted(conn, wf, await add_customer(conn))
        assert second["merged_into_order_id"] == first["id"]
        o = await wf.act(conn, first["id"], "dispatch", CREW, actor="1001", version=first["version"])
        o = await wf.act(conn, o["id"], "feedback", {"result": "客户产权设备故障,已告知", "repair_result":
                                                    "customer_equipment"}, actor="班长", version=o["version"])
        o = await wf.act(conn, o["id"], "callback", {"result": "satisfied"}, actor="1001", version=o["version"])
        await wf.act(conn, o["id"], "close", {}, actor="1001", version=o["version"])
        s = await wf.get(conn, second["id"])
        assert s["status"] == "accepted" and not s["merged"]
        assert [e["event"] for e in await wf.events(conn, s["id"])][-1] == "CallerDetached"
        assert await conn.fetchval("SELECT count(*) FROM work_order_deadlines WHERE order_id = $1 "
                                   "AND kind = 'dispatch' AND state = 'pending'", s["id"]) == 1

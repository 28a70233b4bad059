"""The work order's state machine (pure, tickets.states)."""
from datetime import datetime, timedelta

import pytest

from cti.workdays import CHINA_TZ
from tickets.categories import default_categories
from tickets.model import ValidationError
from tickets.states import Action, IllegalTransition, OrderState, decide

NOW = datetime(2026, 10, 8, 10, 0, tzinfo=CHINA_TZ)
TREE = default_categories()
DISPATCH = {"department": "城关供电营业所", "assignee": "李四", "assignee_phone": "13900001111"}


def step(st: OrderState, action, payload=None, **kw) -> tuple[OrderState, object]:
    d = decide(st, action, payload or {}, now=NOW, categories=TREE)
    c = d.changes
    st = OrderState(d.to_status, st.order_type,
                    merged=st.merged if "merged_into_order_id" not in c else False,
                    appeal_status=c.get("appeal_status", st.appeal_status),
                    category_l3=c.get("category_l3", st.category_l3),
                    repair_result=c.get("repair_result", st.repair_result),
                    arrived=st.arrived or "arrived_at" in c)
    return st, d


def test_complaint_goes_round_the_closed_loop():
    st = OrderState("accepted", "complaint")
    events = []
    for action, payload in [("dispatch", {**DISPATCH, "category": "FW0102"}), ("start", {}),
                            ("feedback", {"result": "已核实并批评教育当事坐席"}),
                            ("callback", {"result": "satisfied"}), ("close", {})]:
        st, d = step(st, action, payload)
        events.append((d.event, d.to_status))
    assert events == [("OrderDispatched", "dispatched"), ("OrderStarted", "in_progress"),
                      ("FeedbackGiven", "feedback"), ("CallbackRecorded", "callback"), ("OrderClosed", "closed")]


def test_dispatch_needs_a_department_and_a_named_person():
    with pytest.raises(ValidationError) as ei:
        decide(OrderState("accepted", "enquiry"), "dispatch", {"department": " "}, now=NOW, categories=TREE)
    assert set(ei.value.errors) == {"department", "assignee"}


def test_repair_dispatch_needs_the_crews_phone():
    with pytest.raises(ValidationError) as ei:
        decide(OrderState("accepted", "repair"), "dispatch", {"department": "抢修班", "assignee": "王五"},
               now=NOW, categories=TREE)
    assert set(ei.value.errors) == {"assignee_phone"}


def test_complaint_dispatch_needs_a_valid_three_level_category():
    with pytest.raises(ValidationError) as ei:
        decide(OrderState("accepted", "complaint"), "dispatch", DISPATCH, now=NOW, categories=TREE)
    assert "category" in ei.value.errors
    with pytest.raises(ValidationError) as ei:
        decide(OrderState("accepted", "complaint"), "dispatch", {**DISPATCH, "category": ["FW", "YY01", "YY0101"]},
               now=NOW, categories=TREE)
    assert "category" in ei.value.errors
    d = decide(OrderState("accepted", "complaint", category_l3="TD0301"), "dispatch", DISPATCH, now=NOW,
               categories=TREE)   # already classified
    assert d.to_status == "dispatched"


@pytest.mark.parametrize("status,action", [
    ("accepted", "feedback"), ("accepted", "start"), ("accepted", "callback"), ("dispatched", "callback"),
    ("feedback", "close"), ("in_progress", "close"), ("closed", "dispatch"), ("draft", "dispatch"),
    ("cancelled", "start"), ("callback", "feedback"), ("accepted", "return"), ("accepted", "no_such_action"),
])
def test_illegal_transitions_are_refused_with_a_clear_error(status, action):
    with pytest.raises(IllegalTransition) as ei:
        decide(OrderState(status, "complaint", category_l3="FW0101"), action,
               {**DISPATCH, "result": "x", "reason": "x"}, now=NOW, categories=TREE)
    assert ei.value.status == status and " / " in ei.value.message


@pytest.mark.parametrize("verdict", ["unsatisfied", "disputed", "inconsistent"])
def test_unsatisfied_disputed_or_inconsistent_callback_returns_the_order_to_the_department(verdict):
    d = decide(OrderState("feedback", "repair"), "callback", {"result": verdict, "note": "仍然没电"}, now=NOW)
    assert (d.to_status, d.event) == ("dispatched", "OrderReturned")
    assert "last_return_reason" in d.changes


def test_a_returned_callback_needs_a_note():
    with pytest.raises(ValidationError) as ei:
        decide(OrderState("feedback", "repair"), "callback", {"result": "unsatisfied"}, now=NOW)
    assert set(ei.value.errors) == {"note"}


def test_merged_caller_still_without_power_is_detached_for_its_own_dispatch():
    d = decide(OrderState("feedback", "repair", merged=True), "callback",
               {"result": "unsatisfied", "note": "我家还是没电"}, now=NOW)
    assert d.to_status == "accepted" and d.changes["merged_into_order_id"] is None


def test_attached_caller_is_not_dispatched_a_second_crew():
    with pytest.raises(IllegalTransition):
        decide(OrderState("accepted", "repair", merged=True), "dispatch", DISPATCH, now=NOW)


def test_hotline_settles_an_enquiry_itself_but_a_repair_must_go_round_the_loop():
    d = decide(OrderState("accepted", "enquiry"), "close", {"note": "已告知阶梯电价标准"}, now=NOW)
    assert d.to_status == "closed"
    with pytest.raises(ValidationError):
        decide(OrderState("accepted", "enquiry"), "close", {}, now=NOW)
    with pytest.raises(IllegalTransition):
        decide(OrderState("accepted", "repair"), "close", {"note": "x"}, now=NOW)


def test_order_past_its_deadline_stays_open_only_with_progress_person_and_phone():
    with pytest.raises(ValidationError) as ei:
        decide(OrderState("in_progress", "service_request"), "extend", {"progress": "待停电计划批复"}, now=NOW)
    assert set(ei.value.errors) == {"responsible_person", "responsible_phone"}
    d = decide(OrderState("in_progress", "service_request"), "extend",
               {"progress": "待停电计划批复", "responsible_person": "赵六", "responsible_phone": "0773-5551234",
                "until": (NOW + timedelta(days=10)).isoformat()}, now=NOW)
    assert d.event == "ExtensionRecorded" and d.to_status == "in_progress"
    with pytest.raises(ValidationError):   # an extension into the past
        decide(OrderState("in_progress", "service_request"), "extend",
               {"progress": "x", "responsible_person": "赵六", "responsible_phone": "1",
                "until": (NOW - timedelta(days=1)).isoformat()}, now=NOW)


def test_complaint_appeal_is_filed_once_and_upheld_or_rejected():
    st = OrderState("closed", "complaint")
    st, d = step(st, "appeal", {"reason": "客户诉求不属实,有录音为证"})
    assert d.event == "AppealFiled" and st.status == "closed" and st.appeal_status == "pending"
    with pytest.raises(IllegalTransition):
        step(st, "appeal", {"reason": "again"})
    with pytest.raises(ValidationError):
        step(st, "appeal_decide", {"decision": "maybe", "note": "x"})
    st, d = step(st, "appeal_decide", {"decision": "upheld", "note": "经核实申诉成立"})
    assert d.event == "AppealUpheld" and st.appeal_status == "upheld"
    with pytest.raises(IllegalTransition):
        step(st, "appeal_decide", {"decision": "rejected", "note": "x"})
    with pytest.raises(IllegalTransition):
        decide(OrderState("closed", "repair"), "appeal", {"reason": "x"}, now=NOW)


def test_crew_reports_arrival_once_findings_and_result():
    st = OrderState("dispatched", "repair")
    st, d = step(st, "crew_arrival", {})
    assert d.event == "CrewArrived" and st.status == "in_progress" and d.changes["arrived_at"] == NOW
    with pytest.raises(IllegalTransition):
        step(st, "crew_arrival", {})
    st, d = step(st, "crew_findings", {"findings": "台区低压出线电缆头烧损",
                                        "expected_repair_at": "2026-10-08T13:00:00"})
    assert d.changes["expected_repair_at"] == datetime(2026, 10, 8, 13, tzinfo=CHINA_TZ)
    st, d = step(st, "crew_result", {"result": "restored"})
    assert st.repair_result == "restored"
    st, d = step(st, "feedback", {"result": "已更换电缆头,恢复送电"})   # the crew's result is used
    assert d.changes["repair_result"] == "restored"
    with pytest.raises(IllegalTransition):
        decide(OrderState("dispatched", "complaint"), "crew_arrival", {}, now=NOW)


def test_crew_cannot_report_an_arrival_in_the_future():
    with pytest.raises(ValidationError):
        decide(OrderState("dispatched", "repair"), "crew_arrival",
               {"arrived_at": (NOW + timedelta(hours=2)).isoformat()}, now=NOW)


def test_repair_feedback_needs_the_repair_result():
    with pytest.raises(ValidationError) as ei:
        decide(OrderState("in_progress", "repair"), "feedback", {"result": "处理完毕"}, now=NOW)
    assert set(ei.value.errors) == {"repair_result"}


def test_only_complaints_are_classified_and_the_category_must_exist():
    with pytest.raises(IllegalTransition):
        decide(OrderState("accepted", "repair"), Action.CLASSIFY.value, {"category": "FW0101"}, now=NOW,
               categories=TREE)
    with pytest.raises(ValidationError) as ei:
        decide(OrderState("accepted", "complaint"), "classify", {"category": "XX9999"}, now=NOW, categories=TREE)
    assert "category" in ei.value.errors

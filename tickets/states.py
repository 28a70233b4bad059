"""The work order's closed loop (闭环) as a pure state machine.  Stdlib only
(plus :mod:`tickets.categories`, itself pure).

::

    draft ──save──▶ accepted 受理 ──dispatch──▶ dispatched 已派发 ──start──▶ in_progress 处理中
                        │  ▲                      ▲   │                          │
      close (enquiry,   │  │ detach / returned     │   └────────feedback─────────┤
      opinion, sugges-  │  │ (merged caller)       │ return / callback           ▼
      tion, praise)     │  │                       │ unsatisfied, disputed,   feedback 已反馈
                        ▼  │                       │ inconsistent (退回)         │
                     closed ◀──close── callback 已回访 ◀──callback satisfied─────┘

* ``dispatch`` needs a department **and** a named person; a repair also the
  person's phone (the crew is called and sent an SMS); a complaint a valid
  3-level category.  ``dispatch`` again while dispatched / in progress is an
  internal transfer (内转, ``OrderTransferred``).
* A repair caller attached to a known fault (merged) is not dispatched: the
  order waits in ``accepted`` until the fault is restored (``fault_restored``,
  a system action -> ``feedback``) or until the agent detaches it.
* ``feedback`` needs the result; a repair also its repair result.
* ``callback`` records the customer's verdict; anything but *satisfied* sends
  the order back to the department (``dispatched`` again, ``return_count``
  + 1); a merged caller who still has no power goes back to ``accepted``,
  detached, to be dispatched as a fault of its own.
* ``extend`` (延期): an order that cannot be finished in time stays open only
  with the current progress, the responsible person and phone.
* Complaint appeal (申诉): ``appeal`` files it (pending), ``appeal_decide``
  upholds it (the complaint no longer counts as valid; the record stays) or
  rejects it.  The order's status does not change.
* Crew reports on a repair: ``crew_arrival``, ``crew_findings``,
  ``crew_result`` (the first of them also starts the order).

:func:`decide` checks one action against the order's current state and the
payload and returns the new status, the event name and the columns to set;
it raises :class:`IllegalTransition` or :class:`ValidationError` and never
has side effects.  The adapter (:mod:`tickets.workflow`) writes the result,
the event row and the deadlines in one transaction.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum
from typing import Any, Mapping

from cti.workdays import CHINA_TZ

from .categories import CategoryTree, UnknownCategory
from .model import ORDER_TYPE_LABELS, ValidationError

__all__ = [
    "Action", "CALLBACK_RESULTS", "Decision", "IllegalTransition", "OrderState", "REPAIR_RESULTS",
    "STATUS_LABELS", "SELF_SETTLED_TYPES", "Status", "decide", "parse_instant", "validate_actor",
]


class Status(str, Enum):
    DRAFT = "draft"
    ACCEPTED = "accepted"
    DISPATCHED = "dispatched"
    IN_PROGRESS = "in_progress"
    FEEDBACK = "feedback"
    CALLBACK = "callback"
    CLOSED = "closed"
    CANCELLED = "cancelled"


STATUS_LABELS = {
    "draft": "草稿 Draft",
    "accepted": "已受理 Accepted",
    "dispatched": "已派发 Dispatched",
    "in_progress": "处理中 In progress",
    "feedback": "已反馈 Fed back",
    "callback": "已回访 Called back",
    "closed": "已归档 Closed",
    "cancelled": "已撤销 Cancelled",
}


class Action(str, Enum):
    DISPATCH = "dispatch"
    START = "start"
    FEEDBACK = "feedback"
    CALLBACK = "callback"
    RETURN = "return"
    CLOSE = "close"
    EXTEND = "extend"
    CLASSIFY = "classify"
    APPEAL = "appeal"
    APPEAL_DECIDE = "appeal_decide"
    CREW_ARRIVAL = "crew_arrival"
    CREW_FINDINGS = "crew_findings"
    CREW_RESULT = "crew_result"
    DETACH = "detach"
    FAULT_RESTORED = "fault_restored"   # system: the fault a caller is attached to is restored


ACTION_LABELS = {
    "dispatch": "派发", "start": "签收处理", "feedback": "反馈", "callback": "回访", "return": "退回",
    "close": "归档", "extend": "延期", "classify": "投诉分类", "appeal": "申诉", "appeal_decide": "申诉审核",
    "crew_arrival": "到达现场", "crew_findings": "现场勘查", "crew_result": "抢修结果", "detach": "解除并单",
    "fault_restored": "故障恢复",
}

CALLBACK_RESULTS = {
    "satisfied": "满意 Satisfied",
    "unsatisfied": "不满意 Unsatisfied",
    "disputed": "有异议 Disputed",
    "inconsistent": "反馈不一致 Inconsistent with the department's account",
}
REPAIR_RESULTS = {
    "restored": "已恢复送电 Power restored",
    "not_restored": "未恢复 Not yet restored",
    "customer_equipment": "客户产权设备 Customer-owned equipment (guided)",
}
APPEAL_DECISIONS = {"upheld": "申诉成立 Upheld", "rejected": "申诉不成立 Rejected"}
# types the hotline settles itself (答复办结) without a department
SELF_SETTLED_TYPES = frozenset({"enquiry", "opinion", "suggestion", "praise"})
WORKING = ("dispatched", "in_progress")
MAX_TEXT = 4000
MAX_NAME = 100
MAX_PHONE = 32
CLOCK_SKEW = timedelta(minutes=10)


class IllegalTransition(RuntimeError):
    """The action is not allowed in the order's current state (HTTP 409)."""

    def __init__(self, action: str, status: str, message: str):
        super().__init__(message)
        self.action = action
        self.status = status
        self.message = message


@dataclass(frozen=True)
class OrderState:
    """What the rules need to know about an order."""

    status: str
    order_type: str
    merged: bool = False
    appeal_status: str = ""
    category_l3: str = ""
    repair_result: str = ""
    arrived: bool = False

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "OrderState":
        return cls(status=row["status"], order_type=row["order_type"],
                   merged=bool(row.get("merged_into_order_id") or row.get("merged_outage_id")),
                   appeal_status=row.get("appeal_status") or "", category_l3=row.get("category_l3") or "",
                   repair_result=row.get("repair_result") or "", arrived=row.get("arrived_at") is not None)


@dataclass(frozen=True)
class Decision:
    to_status: str
    event: str
    changes: dict[str, Any] = field(default_factory=dict)   # column -> value
    audit: dict[str, Any] = field(default_factory=dict)      # what goes into the event's payload


def _label(status: str) -> str:
    return STATUS_LABELS.get(status, status)


def _illegal(action: str, st: OrderState, why_zh: str = "", why_en: str = "") -> IllegalTransition:
    zh = why_zh or f"工单{_label(st.status).split()[0]},不能{ACTION_LABELS.get(action, action)}"
    en = why_en or f"cannot {action} an order that is {st.status}"
    return IllegalTransition(action, st.status, f"{zh} / {en}")


def validate_actor(actor: Any) -> str:
    if not isinstance(actor, str) or not actor.strip():
        raise ValidationError({"actor": "请填写操作人 / who is doing this (actor) is required"})
    actor = actor.strip()
    if len(actor) > 64:
        raise ValidationError({"actor": "操作人过长 / actor too long (max 64)"})
    return actor


def parse_instant(value: Any) -> datetime:
    """ISO 8601; a naive time is China time."""
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, str) and value.strip():
        dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    else:
        raise ValueError("not a time")
    return dt if dt.tzinfo else dt.replace(tzinfo=CHINA_TZ)


class _Fields:
    """Collects the payload's fields and their errors."""

    def __init__(self, payload: Mapping[str, Any]):
        self.p = payload
        self.errors: dict[str, str] = {}

    def text(self, name: str, *, required: bool = False, limit: int = MAX_TEXT, zh: str = "") -> str:
        raw = self.p.get(name)
        if raw is None:
            raw = ""
        if not isinstance(raw, str):
            self.errors[name] = "格式错误 / must be text"
            return ""
        v = "".join(ch for ch in raw.strip() if ch >= " " or ch in "\n\t")
        if len(v) > limit:
            self.errors[name] = f"过长(最多{limit}字)/ too long (max {limit})"
        elif required and not v:
            self.errors[name] = f"请填写{zh or name} / {name} is required"
        return v

    def phone(self, name: str, *, required: bool = False, zh: str = "电话") -> str:
        v = self.text(name, required=required, limit=MAX_PHONE, zh=zh)
        if v and not all(ch.isdigit() or ch in "+-() " for ch in v):
            self.errors[name] = f"{zh}格式错误 / {name} must be a phone number"
        return v

    def choice(self, name: str, options: Mapping[str, str], *, zh: str = "") -> str:
        v = self.p.get(name)
        if v not in options:
            self.errors[name] = f"请选择{zh or name}:{'/'.join(options)} / {name} must be one of {', '.join(options)}"
            return ""
        return v

    def instant(self, name: str, *, default: datetime | None = None, required: bool = False,
                not_after: datetime | None = None, not_before: datetime | None = None) -> datetime | None:
        raw = self.p.get(name)
        if raw in (None, ""):
            if required:
                self.errors[name] = f"请填写时间 / {name} is required"
            return default
        try:
            dt = parse_instant(raw)
        except (ValueError, TypeError):
            self.errors[name] = "时间格式错误(ISO 8601)/ time must be ISO 8601"
            return default
        if not_after is not None and dt > not_after:
            self.errors[name] = "时间不能晚于现在 / time is in the future"
        if not_before is not None and dt <= not_before:
            self.errors[name] = "时间须晚于现在 / time must be later than now"
        return dt

    def flag(self, name: str) -> bool | None:
        v = self.p.get(name)
        if v is None:
            return None
        if not isinstance(v, bool):
            self.errors[name] = "须为 true/false / must be a boolean"
            return None
        return v

    def done(self) -> None:
        if self.errors:
            raise ValidationError(self.errors)


def _category(st: OrderState, f: _Fields, categories: CategoryTree | None, *, required: bool) -> dict[str, Any]:
    raw = f.p.get("category")
    if raw in (None, "", []):
        if required and not st.category_l3:
            f.errors["category"] = "投诉须选择三级分类 / a complaint needs a 3-level category"
        return {}
    if categories is None:  # pragma: no cover - the adapter always passes the tree
        raise RuntimeError("categories not loaded")
    try:
        path = categories.resolve(raw)
    except UnknownCategory as exc:
        f.errors.update(exc.errors)
        return {}
    return {"category_l1": path.l1.code, "category_l2": path.l2.code, "category_l3": path.l3.code}


def decide(st: OrderState, action: str, payload: Mapping[str, Any], *, now: datetime,
           categories: CategoryTree | None = None) -> Decision:
    """Check ``action`` on an order in state ``st``; see the module doc."""
    try:
        act = Action(action)
    except ValueError:
        raise IllegalTransition(action, st.status, f"未知操作 {action!r} / unknown action") from None
    f = _Fields(payload)
    s = st.status
    repair = st.order_type == "repair"
    complaint = st.order_type == "complaint"

    if s in ("draft", "cancelled") and act is not Action.CLASSIFY:
        raise _illegal(action, st, "工单未受理或已撤销" if s == "draft" else "工单已撤销",
                       f"the order is {s}")
    if s == "closed" and act not in (Action.APPEAL, Action.APPEAL_DECIDE):
        raise _illegal(action, st, "工单已归档", "the order is closed")

    if act is Action.DISPATCH:
        if s not in ("accepted", *WORKING):
            raise _illegal(action, st)
        if st.merged:
            raise _illegal(action, st, "该报修已并入已知故障,不再派发抢修;如确属新故障请先解除并单",
                           "this caller is attached to a known fault; detach first if it is a new fault")
        department = f.text("department", required=True, limit=MAX_NAME, zh="派发部门")
        assignee = f.text("assignee", required=True, limit=MAX_NAME, zh="处理人姓名")
        phone = f.phone("assignee_phone", required=repair, zh="处理人电话")
        note = f.text("note")
        major = f.flag("major_outage")
        changes: dict[str, Any] = {"department": department, "assignee": assignee, "assignee_phone": phone}
        changes.update(_category(st, f, categories, required=complaint))
        if major is not None:
            changes["major_outage"] = major
        f.done()
        if s == "accepted":
            changes["dispatched_at"] = now
            return Decision("dispatched", "OrderDispatched", changes, {**changes, "note": note})
        return Decision(s, "OrderTransferred", changes, {**changes, "note": note})

    if act is Action.START:
        if s != "dispatched":
            raise _illegal(action, st)
        note = f.text("note")
        f.done()
        return Decision("in_progress", "OrderStarted", {"started_at": now}, {"note": note})

    if act is Action.FEEDBACK:
        if s not in WORKING:
            raise _illegal(action, st)
        result = f.text("result", required=True, zh="处理结果")
        changes = {"feedback_result": result, "feedback_at": now}
        if repair:
            rr = payload.get("repair_result")
            if rr in (None, "") and st.repair_result:
                rr = st.repair_result
            else:
                rr = f.choice("repair_result", REPAIR_RESULTS, zh="抢修结果")
                finished = f.instant("finished_at", default=now, not_after=now + CLOCK_SKEW)
                changes["repair_finished_at"] = finished
            changes["repair_result"] = rr
        if s == "dispatched":
            changes["started_at"] = now
        f.done()
        return Decision("feedback", "FeedbackGiven", changes, {k: v for k, v in changes.items()})

    if act is Action.CALLBACK:
        if s != "feedback":
            raise _illegal(action, st, "工单尚未反馈或已回访", "only a fed-back order is called back")
        result = f.choice("result", CALLBACK_RESULTS, zh="回访结果")
        note = f.text("note", required=bool(result) and result != "satisfied", zh="回访情况说明")
        hot = f.flag("hot_topic")
        f.done()
        changes = {"callback_result": result, "callback_note": note, "callback_at": now}
        audit = {"result": result, "note": note, "hot_topic": bool(hot)}
        if result == "satisfied":
            return Decision("callback", "CallbackRecorded", changes, audit)
        return _returned(st, changes, audit, reason=f"回访{CALLBACK_RESULTS[result].split()[0]}: {note}")

    if act is Action.RETURN:
        if s not in ("feedback", "callback"):
            raise _illegal(action, st, "只有已反馈或已回访的工单可以退回", "only a fed-back order can be returned")
        reason = f.text("reason", required=True, zh="退回原因")
        f.done()
        return _returned(st, {}, {"reason": reason}, reason=reason)

    if act is Action.CLOSE:
        note = f.text("note", required=(s == "accepted"), zh="答复内容")
        if s == "callback":
            f.done()
            return Decision("closed", "OrderClosed", {"closed_at": now, "close_note": note}, {"note": note})
        if s == "accepted" and st.order_type in SELF_SETTLED_TYPES and not st.merged:
            f.done()
            return Decision("closed", "OrderClosed", {"closed_at": now, "close_note": note},
                            {"note": note, "settled_by_hotline": True})
        if s == "accepted":
            raise _illegal(action, st, f"{ORDER_TYPE_LABELS.get(st.order_type, st.order_type).split()[0]}工单须派发处理并回访后归档",
                           f"a {st.order_type} order must be dispatched, fed back and called back before it is closed")
        raise _illegal(action, st, "工单须回访满意后归档", "an order is closed only after a satisfied callback")

    if act is Action.EXTEND:
        if s not in WORKING:
            raise _illegal(action, st, "只有处理中的工单可以延期", "only an open, dispatched order can be extended")
        progress = f.text("progress", required=True, zh="目前进度")
        person = f.text("responsible_person", required=True, limit=MAX_NAME, zh="责任人姓名")
        phone = f.phone("responsible_phone", required=True, zh="责任人电话")
        until = f.instant("until", not_before=now)
        f.done()
        changes = {"progress_note": progress, "responsible_person": person, "responsible_phone": phone,
                   "extended_until": until}
        return Decision(s, "ExtensionRecorded", changes, dict(changes))

    if act is Action.CLASSIFY:
        if st.order_type != "complaint":
            raise _illegal(action, st, "只有投诉工单需要投诉分类", "only complaints are classified")
        changes = _category(st, f, categories, required=True)
        if not changes and "category" not in f.errors:
            f.errors["category"] = "请选择三级分类 / choose a 3-level category"
        f.done()
        return Decision(s, "CategoryChosen", changes, dict(changes))

    if act is Action.APPEAL:
        if not complaint:
            raise _illegal(action, st, "只有投诉可以申诉", "only a complaint can be appealed")
        if s not in (*WORKING, "feedback", "callback", "closed"):
            raise _illegal(action, st, "投诉尚未派发,不能申诉", "a complaint is appealed by the department it was dispatched to")
        if st.appeal_status:
            raise _illegal(action, st, "该投诉已申诉过", f"an appeal was already filed ({st.appeal_status})")
        reason = f.text("reason", required=True, zh="申诉理由")
        f.done()
        return Decision(s, "AppealFiled", {"appeal_status": "pending", "appeal_reason": reason,
                                           "appeal_filed_at": now}, {"reason": reason})

    if act is Action.APPEAL_DECIDE:
        if st.appeal_status != "pending":
            raise _illegal(action, st, "没有待审核的申诉", "there is no pending appeal")
        decision = f.choice("decision", APPEAL_DECISIONS, zh="审核结论")
        note = f.text("note", required=True, zh="审核意见")
        f.done()
        event = "AppealUpheld" if decision == "upheld" else "AppealRejected"
        return Decision(s, event, {"appeal_status": decision, "appeal_note": note, "appeal_decided_at": now},
                        {"decision": decision, "note": note})

    if act in (Action.CREW_ARRIVAL, Action.CREW_FINDINGS, Action.CREW_RESULT):
        if not repair:
            raise _illegal(action, st, "只有报修工单有抢修回报", "crew reports are for repair orders")
        if s not in WORKING:
            raise _illegal(action, st, "抢修工单未派发或已反馈", "the repair is not dispatched or already fed back")
        changes = {}
        if s == "dispatched":
            changes["started_at"] = now
        if act is Action.CREW_ARRIVAL:
            if st.arrived:
                raise _illegal(action, st, "已报到达现场", "arrival already reported")
            changes["arrived_at"] = f.instant("arrived_at", default=now, not_after=now + CLOCK_SKEW)
            event = "CrewArrived"
        elif act is Action.CREW_FINDINGS:
            changes["findings"] = f.text("findings", required=True, zh="现场情况")
            changes["expected_repair_at"] = f.instant("expected_repair_at")
            event = "CrewFindingsReported"
        else:
            changes["repair_result"] = f.choice("result", REPAIR_RESULTS, zh="抢修结果")
            changes["repair_finished_at"] = f.instant("finished_at", default=now, not_after=now + CLOCK_SKEW)
            note = f.text("note")
            if note:
                changes["findings"] = note
            event = "CrewResultReported"
        f.done()
        return Decision("in_progress", event, changes, {k: v for k, v in changes.items() if k != "started_at"})

    if act is Action.DETACH:
        if not (st.merged and s == "accepted"):
            raise _illegal(action, st, "该工单未并入其他故障", "the order is not attached to a fault")
        reason = f.text("reason", required=True, zh="解除原因")
        f.done()
        return Decision("accepted", "CallerDetached", {"merged_into_order_id": None, "merged_outage_id": None,
                                                       "merged_outage_no": ""}, {"reason": reason})

    if act is Action.FAULT_RESTORED:
        if not (st.merged and s == "accepted"):
            raise _illegal(action, st, "该工单未并入待恢复的故障", "the order is not waiting on a fault")
        result = f.text("result", required=True)
        finished = f.instant("finished_at", default=now)
        f.done()
        changes = {"feedback_result": result, "feedback_at": now, "repair_result": "restored",
                   "repair_finished_at": finished}
        return Decision("feedback", "FaultRestored", changes, dict(changes))

    raise _illegal(action, st)  # pragma: no cover - every Action is handled above


def _returned(st: OrderState, changes: dict[str, Any], audit: dict[str, Any], *, reason: str) -> Decision:
    changes = {**changes, "last_return_reason": reason[:MAX_TEXT]}
    if st.merged:
        # the fault was restored but this caller still has no power: a fault of its own
        changes.update({"merged_into_order_id": None, "merged_outage_id": None, "merged_outage_no": ""})
        return Decision("accepted", "OrderReturned", changes, {**audit, "detached": True})
    return Decision("dispatched", "OrderReturned", changes, audit)

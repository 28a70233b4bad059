"""Work-order model and the pure rules of the screen-pop draft.  Stdlib only."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any, Mapping


class OrderType(str, Enum):
    REPAIR = "repair"                  # 故障报修
    COMPLAINT = "complaint"            # 投诉
    REPORT = "report"                  # 举报
    ENQUIRY = "enquiry"                # 咨询查询
    SERVICE_REQUEST = "service_request"  # 服务申请 / 业扩
    OPINION = "opinion"                # 意见
    SUGGESTION = "suggestion"          # 建议
    PRAISE = "praise"                  # 表扬


ORDER_TYPE_LABELS: dict[str, str] = {
    "repair": "故障报修 Repair",
    "complaint": "投诉 Complaint",
    "report": "举报 Report",
    "enquiry": "咨询查询 Enquiry",
    "service_request": "服务申请 Service request",
    "opinion": "意见 Opinion",
    "suggestion": "建议 Suggestion",
    "praise": "表扬 Praise",
}

# the IVR menu's choice → the order type the agent starts from
IVR_CHOICE_TO_TYPE: dict[str, OrderType] = {
    "repair": OrderType.REPAIR,
    "complaint": OrderType.COMPLAINT,
    "enquiry": OrderType.ENQUIRY,
}

MAX_DESCRIPTION = 4000
MAX_SHORT = 200


class ValidationError(ValueError):
    """A work order failed validation; ``errors`` maps field → message (zh / en)."""

    def __init__(self, errors: dict[str, str]):
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


def order_type_for_ivr_choice(choice: str) -> str:
    t = IVR_CHOICE_TO_TYPE.get((choice or "").strip().lower())
    return t.value if t else ""


def format_order_no(day: datetime, seq: int) -> str:
    """GD + date + six-digit sequence, e.g. GD20261122000042."""
    return f"GD{day:%Y%m%d}{seq % 1_000_000:06d}"


@dataclass(frozen=True)
class RecentOrder:
    order_no: str
    order_type: str
    status: str
    created_at: datetime
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "order_no": self.order_no,
            "order_type": self.order_type,
            "order_type_label": ORDER_TYPE_LABELS.get(self.order_type, self.order_type),
            "status": self.status,
            "created_at": self.created_at.isoformat(),
            "description": self.description[:200],
        }


@dataclass(frozen=True)
class DraftRequest:
    """Everything the screen-pop knows when an agent's phone rings."""

    linkedid: str
    agent: str
    queue: str
    caller_num: str          # as received from Asterisk (hostile)
    caller_num_norm: str     # normalised national form, "" if not a number
    caller_name: str         # hostile
    ivr_choice: str
    outage_id: str = ""
    customer: Mapping[str, Any] | None = None  # Customer.to_dict() or None
    recent_orders: tuple[RecentOrder, ...] = field(default_factory=tuple)


def build_draft_fields(req: DraftRequest) -> dict[str, Any]:
    """The pre-filled fields of the draft work order.

    Known customer: customer, address and transformer area filled from the
    customer record; unknown caller: only the number is filled and the
    customer section stays empty.  The contact phone is the number as the
    agent can dial it back (normalised when possible)."""
    cust = dict(req.customer) if req.customer else None
    contact_phone = req.caller_num_norm or _clip(req.caller_num, 32)
    return {
        "linkedid": req.linkedid,
        "agent": req.agent,
        "queue": req.queue,
        "ivr_choice": req.ivr_choice,
        "order_type": order_type_for_ivr_choice(req.ivr_choice),
        "caller_num": _clip(req.caller_num, 64),
        "caller_num_norm": req.caller_num_norm,
        "caller_name": _clip(req.caller_name, MAX_SHORT),
        "customer_id": cust.get("id") if cust else None,
        "customer_snapshot": cust or {},
        "contact_name": (cust.get("name", "") if cust else ""),
        "contact_phone": contact_phone,
        "address": (cust.get("address", "") if cust else ""),
        "transformer_area": (cust.get("transformer_area", "") if cust else ""),
        "outage_id": _clip(req.outage_id, 64),
    }


AREA_CLASSES = ("town", "countryside", "remote")


def validate_completion(data: Mapping[str, Any], categories: Any = None) -> dict[str, Any]:
    """Check what the agent sends when saving the order; return clean values.

    Mandatory: order type, contact phone, description; a repair also needs
    an address (the crew must find the place).

    Optional, only when sent: ``feeder``, ``village`` (text) and
    ``area_class`` (town / countryside / remote) -- they override what the
    customer record says.  With ``categories`` (a
    :class:`tickets.categories.CategoryTree`, the full accept endpoint) a
    complaint must carry a valid 3-level ``category``; the codes are returned
    as ``category_l1..3``.  Without it (the screen-pop's save) the category
    is chosen later, at the latest before dispatch."""
    errors: dict[str, str] = {}
    clean: dict[str, Any] = {}
    otype = str(data.get("order_type") or "").strip()
    if otype not in ORDER_TYPE_LABELS:
        errors["order_type"] = "请选择工单类型 / choose an order type"
    clean["order_type"] = otype
    for name, limit in (("contact_name", MAX_SHORT), ("contact_phone", 32), ("address", 500),
                        ("transformer_area", MAX_SHORT), ("description", MAX_DESCRIPTION)):
        raw = data.get(name, "")
        if raw is None:
            raw = ""
        if not isinstance(raw, str):
            errors[name] = "格式错误 / must be text"
            continue
        value = raw.strip()
        if len(value) > limit:
            errors[name] = f"过长(最多{limit}字)/ too long (max {limit})"
        clean[name] = value
    if not clean.get("contact_phone"):
        errors.setdefault("contact_phone", "请填写联系电话 / contact phone is required")
    if not clean.get("description"):
        errors.setdefault("description", "请填写诉求内容 / describe the matter")
    if otype == "repair" and not clean.get("address"):
        errors.setdefault("address", "报修须填写地址 / a repair needs an address")
    for name in ("feeder", "village"):
        if name in data:
            raw = data.get(name) or ""
            if not isinstance(raw, str):
                errors[name] = "格式错误 / must be text"
            elif len(raw.strip()) > MAX_SHORT:
                errors[name] = f"过长(最多{MAX_SHORT}字)/ too long (max {MAX_SHORT})"
            else:
                clean[name] = raw.strip()
    if data.get("area_class") not in (None, ""):
        if data.get("area_class") not in AREA_CLASSES:
            errors["area_class"] = "区域类别须为 城区/农村/偏远山区 / area_class must be town, countryside or remote"
        else:
            clean["area_class"] = data["area_class"]
    if categories is not None and otype == "complaint":
        raw = data.get("category")
        if raw in (None, "", []):
            errors["category"] = "投诉须选择三级分类 / a complaint needs a 3-level category"
        else:
            try:
                path = categories.resolve(raw)
            except ValueError as exc:
                errors["category"] = getattr(exc, "errors", {}).get("category", str(exc))
            else:
                clean["category_l1"], clean["category_l2"], clean["category_l3"] = path.codes
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        errors["version"] = "缺少版本号 / version is required"
    clean["version"] = version
    if errors:
        raise ValidationError(errors)
    return clean


def _clip(s: str | None, n: int) -> str:
    s = s or ""
    # strip control characters (except none are wanted in one-line fields)
    s = "".join(ch for ch in s if ch >= " " or ch == "\t")
    return s[:n]

"""Outage information (停电信息): the pure model and its rules.

Stdlib and :mod:`cti.workdays` only (no I/O): the registry's adapters are
:mod:`ivr.outage_repo` (PostgreSQL) and :mod:`ivr.outage_web` (HTTP).

Rules (../shared/DOMAIN.md, "Outage information")
-------------------------------------------------
* Kinds and notice: planned maintenance (计划检修) at least 7 working days
  ahead, temporary maintenance (临时检修) at least 24 hours ahead, fault
  (故障停电) at once.  A late notice is *accepted* and flagged
  (:func:`notice_check`): the outage is real whether or not it was announced
  in time, and callers must hear about it.
* "7 working days ahead": the start day is at least the 7th working day after
  the publication day, both taken in China time -- i.e. at least 7 working
  days in ``(publication day, start day]`` (:func:`cti.workdays.workdays_between`).
  A year the official calendar does not know yet is counted Monday to Friday
  and the check says so (``calendar_estimated``).
* Status: draft -> published -> restored; draft|published -> cancelled.
  The expected restoration time of a draft or published outage can change
  (faults are "updated as work goes on").  Anything else raises
  :class:`IllegalTransition`.
* An area is feeders (线路), transformer areas (台区) and villages/streets
  (村/街道); a customer is covered when any of them names the customer's own.
  Names are compared by :func:`area_key` (width, spaces, ASCII case and
  ``千伏``/``kV`` do not matter); the same normalisation exists in SQL as
  ``outage_area_key()`` (migrations/002_outages.sql) -- keep them equal.
* Relevance for the IVR (:func:`relevance`): *active* when published, started
  and not restored; *imminent* when published and starting within
  ``window`` (default 24 h) or a planned outage starting later today.  An
  active outage whose expected restoration passed more than ``overdue_grace``
  ago (default 6 h) is no longer announced: the registry is probably stale
  and the caller is better served by an agent.  Among several, the caller
  hears an active one first -- the one restored last (power is back only when
  every outage on the way is over) -- then the imminent one starting first.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from enum import Enum
from typing import Any, Iterable, Literal, Mapping

from cti.workdays import CHINA_TZ, CalendarUnknownYear, add_workdays, local_date, workdays_between

__all__ = [
    "AreaType", "CustomerArea", "IllegalTransition", "InvalidOutage", "IvrDecision", "NewOutage",
    "NoticeCheck", "Outage", "OutageArea", "OutageKind", "OutageStatus", "PromptStatus",
    "DEFAULT_IMMINENT_WINDOW", "DEFAULT_OVERDUE_GRACE", "PLANNED_NOTICE_WORKDAYS", "TEMPORARY_NOTICE",
    "announcement_text", "area_key", "cancel", "change_restoration", "covers", "is_active_or_imminent",
    "notice_check", "pick_most_relevant", "publish", "relevance", "restore", "summary_en",
    "summary_zh", "validate_new_outage", "parse_time", "spoken_text",
]

PLANNED_NOTICE_WORKDAYS = 7
TEMPORARY_NOTICE = timedelta(hours=24)
DEFAULT_IMMINENT_WINDOW = timedelta(hours=24)
DEFAULT_OVERDUE_GRACE = timedelta(hours=6)
# a fault is announced "at once": a start a little in the future is clock skew
FAULT_START_SKEW = timedelta(minutes=10)
MAX_DURATION = timedelta(days=30)

MAX_REASON = 200
MAX_DESCRIPTION = 2000
MAX_AREA_NAME = 100
MAX_AREAS = 500
MAX_ACTOR = 100

Relevance = Literal["active", "imminent"]


class OutageKind(str, Enum):
    PLANNED = "planned"          # 计划检修
    TEMPORARY = "temporary"      # 临时检修
    FAULT = "fault"              # 故障停电

    @property
    def label_zh(self) -> str:
        return {"planned": "计划检修", "temporary": "临时检修", "fault": "故障停电"}[self.value]

    @property
    def label_en(self) -> str:
        return {"planned": "planned maintenance", "temporary": "temporary maintenance",
                "fault": "fault"}[self.value]


class OutageStatus(str, Enum):
    DRAFT = "draft"              # 草稿
    PUBLISHED = "published"      # 已发布
    RESTORED = "restored"        # 已恢复送电
    CANCELLED = "cancelled"      # 已取消

    @property
    def label_zh(self) -> str:
        return {"draft": "草稿", "published": "已发布", "restored": "已送电", "cancelled": "已取消"}[self.value]


class AreaType(str, Enum):
    FEEDER = "feeder"                        # 线路
    TRANSFORMER_AREA = "transformer_area"    # 台区
    VILLAGE = "village"                      # 村 / 街道

    @property
    def label_zh(self) -> str:
        return {"feeder": "线路", "transformer_area": "台区", "village": "村/街道"}[self.value]


class PromptStatus(str, Enum):
    NONE = "none"          # nothing to announce (draft) or not requested
    PENDING = "pending"    # text changed, the TTS has not delivered yet
    READY = "ready"        # announcement_path is playable
    FAILED = "failed"      # TTS failed: the IVR plays the generic announcement


class OutageRuleError(ValueError):
    """Base of the outage rule errors; ``message`` is Chinese first, English second."""

    code = "outage_rule"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class IllegalTransition(OutageRuleError):
    code = "illegal_transition"


class InvalidOutage(OutageRuleError):
    """Validation failed; ``errors`` maps field -> message (zh / en)."""

    code = "invalid"

    def __init__(self, errors: Mapping[str, str]):
        self.errors = dict(errors)
        super().__init__("; ".join(f"{k}: {v}" for k, v in self.errors.items()))


# -- areas -------------------------------------------------------------------

_WS = dict.fromkeys(map(ord, " \t\r\n\f\v"))
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def area_key(name: str) -> str:
    """Comparison key of an area name: NFKC, no ASCII whitespace, ASCII lower
    case, ``千伏`` read as ``kv``.  Mirrors SQL ``outage_area_key()``."""
    s = unicodedata.normalize("NFKC", name or "")
    s = s.translate(_WS).translate(_ASCII_LOWER)
    return s.replace("千伏", "kv")


@dataclass(frozen=True, slots=True)
class OutageArea:
    type: AreaType
    name: str

    @property
    def key(self) -> str:
        return area_key(self.name)

    def to_dict(self) -> dict[str, str]:
        return {"type": self.type.value, "name": self.name}


@dataclass(frozen=True, slots=True)
class CustomerArea:
    """Where a customer is supplied from (customers.transformer_area/feeder/village)."""

    transformer_area: str = ""
    feeder: str = ""
    village: str = ""

    def name_of(self, t: AreaType) -> str:
        return {AreaType.FEEDER: self.feeder, AreaType.TRANSFORMER_AREA: self.transformer_area,
                AreaType.VILLAGE: self.village}[t]


# -- the outage --------------------------------------------------------------

@dataclass(frozen=True)
class Outage:
    id: int | None
    outage_no: str
    kind: OutageKind
    status: OutageStatus
    reason: str
    areas: tuple[OutageArea, ...]
    start_at: datetime
    expected_restore_at: datetime
    description: str = ""
    department: str = ""
    restored_at: datetime | None = None
    published_at: datetime | None = None
    cancelled_at: datetime | None = None
    cancel_reason: str = ""
    late_notice: bool = False
    late_notice_reason: str = ""
    notice_estimated: bool = False
    announcement: str = ""            # the TTS text of the current announcement
    prompt_status: PromptStatus = PromptStatus.NONE
    announcement_path: str | None = None
    prompt_error: str = ""
    version: int = 1
    created_at: datetime | None = None
    updated_at: datetime | None = None

    def to_dict(self, at: datetime | None = None) -> dict[str, Any]:
        """JSON-able; with ``at`` also the IVR relevance at that moment."""
        iso = lambda v: v.isoformat() if v is not None else None  # noqa: E731
        d = {
            "id": self.id,
            "outage_no": self.outage_no,
            "kind": self.kind.value,
            "kind_label": f"{self.kind.label_zh} {self.kind.label_en}",
            "status": self.status.value,
            "status_label": self.status.label_zh,
            "reason": self.reason,
            "description": self.description,
            "department": self.department,
            "areas": [a.to_dict() for a in self.areas],
            "start_at": iso(self.start_at),
            "expected_restore_at": iso(self.expected_restore_at),
            "restored_at": iso(self.restored_at),
            "published_at": iso(self.published_at),
            "cancelled_at": iso(self.cancelled_at),
            "cancel_reason": self.cancel_reason,
            "late_notice": self.late_notice,
            "late_notice_reason": self.late_notice_reason,
            "notice_estimated": self.notice_estimated,
            "announcement": self.announcement,
            "summary_zh": summary_zh(self),
            "summary_en": summary_en(self),
            "prompt_status": self.prompt_status.value,
            "announcement_path": self.announcement_path,
            "prompt_error": self.prompt_error,
            "version": self.version,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
        }
        if at is not None:
            d["relevance"] = relevance(self, at)
            d["started"] = self.start_at <= at
            d["overdue"] = self.status is OutageStatus.PUBLISHED and self.expected_restore_at < at
        return d


@dataclass(frozen=True)
class NewOutage:
    """A validated request to register an outage (see :func:`validate_new_outage`)."""

    kind: OutageKind
    reason: str
    areas: tuple[OutageArea, ...]
    start_at: datetime
    expected_restore_at: datetime
    actor: str
    description: str = ""
    department: str = ""


@dataclass(frozen=True)
class NoticeCheck:
    late: bool
    reason_zh_en: str = ""          # why it is late (or why the count is estimated)
    calendar_estimated: bool = False  # a year unknown to the official calendar: counted Mon-Fri
    notice_workdays: int | None = None  # planned: working days of notice
    notice_hours: float | None = None   # temporary: hours of notice


# -- notice ------------------------------------------------------------------

def notice_check(kind: OutageKind | str, published_at: datetime, start_at: datetime) -> NoticeCheck:
    """Was the outage announced early enough?  Never refuses: a late notice is
    accepted and flagged."""
    kind = OutageKind(kind)
    if kind is OutageKind.FAULT:
        return NoticeCheck(late=False)
    if kind is OutageKind.TEMPORARY:
        hours = (start_at - published_at).total_seconds() / 3600
        if start_at - published_at >= TEMPORARY_NOTICE:
            return NoticeCheck(late=False, notice_hours=round(hours, 2))
        return NoticeCheck(
            late=True, notice_hours=round(hours, 2),
            reason_zh_en=(f"临时检修应提前24小时公告,实际提前{_hours_zh(hours)} / temporary maintenance "
                          f"needs 24 h notice, got {hours:.1f} h"))
    # planned
    pub_day, start_day = local_date(published_at), local_date(start_at)
    estimated = False
    try:
        days = workdays_between(pub_day, start_day)
        due = add_workdays(pub_day, PLANNED_NOTICE_WORKDAYS)
    except CalendarUnknownYear:
        estimated = True
        days = workdays_between(pub_day, start_day, strict=False)
        due = add_workdays(pub_day, PLANNED_NOTICE_WORKDAYS, strict=False)
    note = ("(法定节假日安排未知,按周一至周五估算,请人工核对 / official calendar unknown for that year, "
            "counted Mon-Fri, please check)" if estimated else "")
    if start_day >= due and start_at > published_at:
        return NoticeCheck(late=False, calendar_estimated=estimated, notice_workdays=days, reason_zh_en=note)
    shown = max(days, 0) if start_at > published_at else 0
    reason = (f"计划检修应提前{PLANNED_NOTICE_WORKDAYS}个工作日公告(开始日期不早于{due.month}月{due.day}日),"
              f"实际提前{shown}个工作日 / planned maintenance needs {PLANNED_NOTICE_WORKDAYS} working days "
              f"notice (start on {due.isoformat()} or later), got {shown}")
    if estimated:
        reason += " " + note
    return NoticeCheck(late=True, reason_zh_en=reason, calendar_estimated=estimated, notice_workdays=days)


def _hours_zh(hours: float) -> str:
    if hours <= 0:
        return "0小时(开始时间已过)"
    return f"{hours:.1f}小时"


# -- validation --------------------------------------------------------------

def parse_time(value: Any) -> datetime:
    """ISO 8601; a time without offset is China time (what departments type)."""
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, str) and 10 <= len(value.strip()) <= 40:
        dt = datetime.fromisoformat(value.strip())
    else:
        raise ValueError("not an ISO 8601 time")
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=CHINA_TZ)
    if not 2000 <= dt.year <= 2100:
        raise ValueError("year out of range")
    return dt


def _text(data: Mapping[str, Any], key: str, limit: int, errors: dict[str, str], *,
          required: bool, label: str) -> str:
    v = data.get(key)
    if v is None:
        v = ""
    if not isinstance(v, str):
        errors[key] = f"{label}必须是文字 / {key} must be a string"
        return ""
    v = _clean(v)
    if required and not v:
        errors[key] = f"请填写{label} / {key} is required"
    elif len(v) > limit:
        errors[key] = f"{label}不能超过{limit}字 / {key} longer than {limit}"
    return v


def _clean(s: str) -> str:
    """Strip, drop control characters (keep newlines in descriptions)."""
    return "".join(ch for ch in s if ch in "\n" or unicodedata.category(ch)[0] != "C").strip()


def validate_new_outage(data: Mapping[str, Any], now: datetime) -> NewOutage:
    """Check a department's submission.  Raises :class:`InvalidOutage` with
    every problem at once.  Required: kind, reason, a non-empty area, start
    before expected restoration, the expected restoration in the future, and
    who submits it (``actor``)."""
    if not isinstance(data, Mapping):
        raise InvalidOutage({"body": "请求必须是JSON对象 / body must be a JSON object"})
    errors: dict[str, str] = {}
    kind = None
    try:
        kind = OutageKind(data.get("kind"))
    except ValueError:
        errors["kind"] = "停电类型应为 planned(计划检修)/temporary(临时检修)/fault(故障停电) / kind must be planned, temporary or fault"
    reason = _text(data, "reason", MAX_REASON, errors, required=True, label="停电原因")
    description = _text(data, "description", MAX_DESCRIPTION, errors, required=False, label="说明")
    department = _text(data, "department", MAX_ACTOR, errors, required=False, label="发布单位")
    actor = _text(data, "actor", MAX_ACTOR, errors, required=True, label="发布人")
    areas = _areas(data.get("areas"), errors)
    start = restore_at = None
    for key, label in (("start_at", "停电开始时间"), ("expected_restore_at", "预计恢复时间")):
        try:
            t = parse_time(data.get(key))
        except (ValueError, TypeError):
            errors[key] = f"{label}格式错误(如 2026-11-22T14:30+08:00) / {key} must be an ISO 8601 time"
            continue
        if key == "start_at":
            start = t
        else:
            restore_at = t
    if start is not None and restore_at is not None:
        if restore_at <= start:
            errors["expected_restore_at"] = "预计恢复时间必须晚于停电开始时间 / expected_restore_at must be after start_at"
        elif restore_at - start > MAX_DURATION:
            errors["expected_restore_at"] = "停电时长超过30天,请核对 / outage longer than 30 days, check the times"
        elif restore_at <= now:
            errors["expected_restore_at"] = "预计恢复时间已过 / expected_restore_at is in the past"
    if kind is OutageKind.FAULT and start is not None and start > now + FAULT_START_SKEW:
        errors["start_at"] = "故障停电的开始时间不能在将来 / a fault cannot start in the future"
    if errors:
        raise InvalidOutage(errors)
    return NewOutage(kind=kind, reason=reason, areas=areas, start_at=start, expected_restore_at=restore_at,
                     actor=actor, description=description, department=department)


def _areas(raw: Any, errors: dict[str, str]) -> tuple[OutageArea, ...]:
    if not isinstance(raw, list) or not raw:
        errors["areas"] = "请至少填写一个停电范围(线路/台区/村) / areas must be a non-empty list"
        return ()
    if len(raw) > MAX_AREAS:
        errors["areas"] = f"停电范围不能超过{MAX_AREAS}项 / at most {MAX_AREAS} areas"
        return ()
    out: dict[tuple[AreaType, str], OutageArea] = {}
    for i, item in enumerate(raw):
        if not isinstance(item, Mapping):
            errors[f"areas[{i}]"] = "格式应为 {type, name} / each area must be {type, name}"
            continue
        try:
            t = AreaType(item.get("type"))
        except ValueError:
            errors[f"areas[{i}].type"] = "范围类型应为 feeder/transformer_area/village / bad area type"
            continue
        name = item.get("name")
        name = _clean(name) if isinstance(name, str) else ""
        if not name or not area_key(name):
            errors[f"areas[{i}].name"] = "请填写范围名称 / area name is required"
        elif len(name) > MAX_AREA_NAME:
            errors[f"areas[{i}].name"] = f"名称不能超过{MAX_AREA_NAME}字 / name longer than {MAX_AREA_NAME}"
        else:
            out.setdefault((t, area_key(name)), OutageArea(t, name))
    return tuple(out.values())


# -- state transitions (pure; the repository persists the result) -----------

_OPEN = (OutageStatus.DRAFT, OutageStatus.PUBLISHED)


def _refuse(outage: Outage, action_zh: str, action_en: str) -> IllegalTransition:
    return IllegalTransition(
        f"停电信息 {outage.outage_no} 状态为“{outage.status.label_zh}”,不能{action_zh} / "
        f"outage {outage.outage_no} is {outage.status.value}, cannot {action_en}")


def publish(outage: Outage, now: datetime) -> Outage:
    """draft -> published; the notice period is checked against ``now`` and a
    late notice flagged (never refused)."""
    if outage.status is not OutageStatus.DRAFT:
        raise _refuse(outage, "再次发布", "publish it again")
    check = notice_check(outage.kind, now, outage.start_at)
    published = replace(outage, status=OutageStatus.PUBLISHED, published_at=now, late_notice=check.late,
                        late_notice_reason=check.reason_zh_en, notice_estimated=check.calendar_estimated)
    return _with_announcement(published)


def change_restoration(outage: Outage, expected_restore_at: datetime, now: datetime) -> Outage:
    """A new expected restoration time (faults are updated as work goes on)."""
    if outage.status not in _OPEN:
        raise _refuse(outage, "修改预计恢复时间", "change its restoration time")
    if expected_restore_at <= outage.start_at:
        raise InvalidOutage({"expected_restore_at":
                             "预计恢复时间必须晚于停电开始时间 / expected_restore_at must be after start_at"})
    if expected_restore_at <= now:
        raise InvalidOutage({"expected_restore_at": "预计恢复时间已过 / expected_restore_at is in the past"})
    if expected_restore_at - outage.start_at > MAX_DURATION:
        raise InvalidOutage({"expected_restore_at": "停电时长超过30天,请核对 / outage longer than 30 days"})
    changed = replace(outage, expected_restore_at=expected_restore_at)
    return _with_announcement(changed) if outage.status is OutageStatus.PUBLISHED else changed


def restore(outage: Outage, now: datetime, restored_at: datetime | None = None) -> Outage:
    """published -> restored (送电).  ``restored_at`` defaults to ``now``;
    it cannot be in the future nor before the start (then cancel instead)."""
    if outage.status is not OutageStatus.PUBLISHED:
        raise _refuse(outage, "登记恢复送电", "restore it")
    at = restored_at or now
    if at > now + FAULT_START_SKEW:
        raise InvalidOutage({"restored_at": "恢复送电时间不能在将来 / restored_at is in the future"})
    if at < outage.start_at:
        raise IllegalTransition(
            f"停电尚未开始({_when_zh(outage.start_at)}),请取消而不是登记送电 / the outage has not started, "
            "cancel it instead")
    return replace(outage, status=OutageStatus.RESTORED, restored_at=at)


def cancel(outage: Outage, now: datetime, reason: str = "") -> Outage:
    """draft|published -> cancelled (e.g. a planned outage called off, a fault
    reported by mistake)."""
    if outage.status not in _OPEN:
        raise _refuse(outage, "取消", "cancel it")
    return replace(outage, status=OutageStatus.CANCELLED, cancelled_at=now,
                   cancel_reason=_clean(reason)[:MAX_REASON])


def _with_announcement(outage: Outage) -> Outage:
    """Recompute the announcement; a new text needs a new prompt (pending)."""
    text = announcement_text(outage)
    if text == outage.announcement and outage.prompt_status is not PromptStatus.NONE:
        return outage
    return replace(outage, announcement=text, prompt_status=PromptStatus.PENDING, announcement_path=None,
                   prompt_error="")


# -- coverage and relevance --------------------------------------------------

def covers(outage: Outage, customer_area: CustomerArea) -> bool:
    """Does any of the outage's areas name the customer's feeder, transformer area or village?"""
    return matched_area(outage, customer_area) is not None


def matched_area(outage: Outage, customer_area: CustomerArea) -> OutageArea | None:
    """The outage area covering the customer, the most specific first
    (transformer area, then village, then feeder)."""
    best = None
    for a in outage.areas:
        own = customer_area.name_of(a.type)
        if own and area_key(own) and area_key(own) == a.key:
            if best is None or _SPECIFIC[a.type] < _SPECIFIC[best.type]:
                best = a
    return best


_SPECIFIC = {AreaType.TRANSFORMER_AREA: 0, AreaType.VILLAGE: 1, AreaType.FEEDER: 2}


def relevance(outage: Outage, at: datetime, *, window: timedelta = DEFAULT_IMMINENT_WINDOW,
              overdue_grace: timedelta = DEFAULT_OVERDUE_GRACE) -> Relevance | None:
    """'active', 'imminent' or None at moment ``at`` (see the module doc)."""
    if outage.status is not OutageStatus.PUBLISHED:
        return None
    if outage.expected_restore_at <= at - overdue_grace:
        return None
    if outage.start_at <= at:
        return "active"
    if outage.start_at <= at + window:
        return "imminent"
    if outage.kind is OutageKind.PLANNED and outage.start_at < end_of_local_day(at):
        return "imminent"
    return None


def is_active_or_imminent(outage: Outage, at: datetime, *, window: timedelta = DEFAULT_IMMINENT_WINDOW,
                          overdue_grace: timedelta = DEFAULT_OVERDUE_GRACE) -> bool:
    return relevance(outage, at, window=window, overdue_grace=overdue_grace) is not None


def end_of_local_day(at: datetime) -> datetime:
    """Midnight after ``at`` in China time (an aware datetime)."""
    day = local_date(at)
    return datetime.combine(day + timedelta(days=1), time(0), tzinfo=CHINA_TZ)


def relevance_sort_key(outage: Outage, at: datetime) -> tuple:
    """Smaller is more relevant: active before imminent; among active the one
    restored last; among imminent the one starting first; then newest id.
    ``ivr.outage_repo`` orders the same way in SQL."""
    if outage.start_at <= at:
        return (0, -outage.expected_restore_at.timestamp(), 0.0, -(outage.id or 0))
    return (1, 0.0, outage.start_at.timestamp(), -(outage.id or 0))


def pick_most_relevant(outages: Iterable[Outage], customer_area: CustomerArea, at: datetime, *,
                       window: timedelta = DEFAULT_IMMINENT_WINDOW,
                       overdue_grace: timedelta = DEFAULT_OVERDUE_GRACE) -> Outage | None:
    live = [o for o in outages if covers(o, customer_area)
            and relevance(o, at, window=window, overdue_grace=overdue_grace) is not None]
    return min(live, key=lambda o: relevance_sort_key(o, at)) if live else None


# -- what the IVR decides for one caller -------------------------------------

@dataclass(frozen=True)
class IvrDecision:
    """The answer of :func:`ivr.outage_repo.outage_for_caller`.

    ``customer_id`` is None for an unknown caller (ask for the account number);
    ``outage`` is None when nothing covers the customer (play nothing extra).
    ``channel_vars()`` are the dialplan variables: ``CUSTOMER_ID`` is the
    account number (what the screen-pop looks up), ``OUTAGE_ID`` the outage
    number (e.g. TD20261122-0042)."""

    customer_id: int | None = None
    account_no: str = ""
    customer_area: CustomerArea | None = None
    outage: Outage | None = None
    relevance: Relevance | None = None
    matched_area: OutageArea | None = None
    candidates: int = 0            # customers sharing the caller's number that were considered

    @property
    def known_customer(self) -> bool:
        return self.customer_id is not None

    @property
    def outage_no(self) -> str:
        return self.outage.outage_no if self.outage else ""

    @property
    def outage_id(self) -> str:
        """What goes into the ``OUTAGE_ID`` channel variable: the outage
        number (``/api/outages/{ref}`` accepts it), '' when none."""
        return self.outage_no

    @property
    def announcement(self) -> str:
        """The TTS text to play before the menu ('' = nothing)."""
        if self.outage is None:
            return ""
        return self.outage.announcement or announcement_text(self.outage)

    @property
    def prompt_path(self) -> str | None:
        """A generated WAV to play, when the prompt is ready; otherwise the
        IVR plays its generic outage announcement."""
        o = self.outage
        if o is not None and o.prompt_status is PromptStatus.READY and o.announcement_path:
            return o.announcement_path
        return None

    def channel_vars(self) -> dict[str, str]:
        return {"CUSTOMER_ID": self.account_no or "", "OUTAGE_ID": self.outage_no}


# -- what the caller hears ---------------------------------------------------

# the voltage unit wherever it is written (10kV, 35KV, "kV线路"); kVA (a
# transformer's capacity) first: espeak-ng would spell the letters out
_KVA = re.compile(r"\s*[kK][vV][aA]")
_KV = re.compile(r"\s*[kK][vV]")
_DECIMAL = re.compile(r"(?<=\d)\.(?=\d)")
_RANGE = re.compile(r"(?<=\d)\s*[-~～—–]\s*(?=\d)")
_SHARP = re.compile(r"(?<=\d)\s*#")
# what espeak-ng's Mandarin voice reads: CJK, ASCII letters and digits, and a
# few punctuation marks it treats as pauses
_SPEAKABLE = re.compile(r"[\u4e00-\u9fff0-9A-Za-z,。、;:]")


def spoken_text(s: str) -> str:
    """Department text made safe for the TTS: 10kV -> 10千伏, 1# -> 1号,
    3-5 -> 3至5, other punctuation -> a pause, the rest dropped."""
    s = unicodedata.normalize("NFKC", s or "")
    s = _KVA.sub("千伏安", s)
    s = _KV.sub("千伏", s)
    s = _DECIMAL.sub("点", s)
    s = _RANGE.sub("至", s)
    s = _SHARP.sub("号", s)
    s = s.replace(",", ",").replace(";", ";").replace(":", ":").replace(".", "。")
    out = []
    for ch in s:
        if _SPEAKABLE.match(ch):
            out.append(ch)
        elif ch in "()()[]【】《》“”\"'!!??/\\|·.":
            out.append(",")
        # anything else (emoji, markup, control characters) is dropped
    # again: dropping a character may have joined a k and a V ("k&V")
    text = _KV.sub("千伏", _KVA.sub("千伏安", "".join(out)))
    text = re.sub(r"[,。、;:]*([,。、;:])[,。、;:]*", r"\1", text)
    return text.strip(",。、;:")


def _clock_zh(t: datetime) -> str:
    """14时30分; 18时 (espeak-ng reads '00分' as 'ling ling fen')."""
    t = t.astimezone(CHINA_TZ)
    return f"{t.hour}时" if t.minute == 0 else f"{t.hour}时{t.minute:02d}分"


def _when_zh(t: datetime) -> str:
    t = t.astimezone(CHINA_TZ)
    return f"{t.month}月{t.day}日{_clock_zh(t)}"


def _areas_zh(areas: tuple[OutageArea, ...], limit: int = 3) -> str:
    ordered = sorted(areas, key=lambda a: _SPECIFIC[a.type])
    names = [spoken_text(a.name) for a in ordered]
    names = [n for n in names if n]
    if not names:
        return "部分地区"
    shown = "、".join(names[:limit])
    if len(names) > limit:
        return shown + "等地区"
    if len(names) == 1 and ordered[0].type is AreaType.FEEDER:
        return shown + "供电区域"
    return shown


_KIND_WORD = {OutageKind.FAULT: "停电", OutageKind.PLANNED: "计划停电", OutageKind.TEMPORARY: "临时停电"}


def announcement_text(outage: Outage) -> str:
    """The Mandarin announcement played before the menu, e.g.
    您好,您所在的才湾2号台区因10千伏才湾线故障停电,停电时间11月22日14时30分起,
    预计18时恢复供电。如您反映的是其他问题,请按1。

    It depends on the outage only (not on the caller), so one prompt per
    outage text can be generated on publish and cached by content hash."""
    reason = spoken_text(outage.reason)
    cause = f"因{reason}" if reason else ""
    kind_word = _KIND_WORD[outage.kind]
    if reason.endswith(kind_word) or (reason.endswith("停电") and outage.kind is OutageKind.FAULT):
        kind_word = ""
    start, end = outage.start_at.astimezone(CHINA_TZ), outage.expected_restore_at.astimezone(CHINA_TZ)
    end_zh = _clock_zh(end) if end.date() == start.date() else _when_zh(end)
    return (f"您好,您所在的{_areas_zh(outage.areas)}{cause}{kind_word},"
            f"停电时间{_when_zh(start)}起,预计{end_zh}恢复供电。"
            "如您反映的是其他问题,请按1。")


def summary_zh(outage: Outage) -> str:
    names = "、".join(a.name for a in outage.areas[:5]) + ("等" if len(outage.areas) > 5 else "")
    start, end = outage.start_at.astimezone(CHINA_TZ), outage.expected_restore_at.astimezone(CHINA_TZ)
    return (f"{outage.kind.label_zh}:{names},{outage.reason};"
            f"{start:%m-%d %H:%M} 起,预计 {end:%m-%d %H:%M} 恢复")


def summary_en(outage: Outage) -> str:
    """A short English line for the page (names stay Chinese)."""
    n = len(outage.areas)
    where = outage.areas[0].name if n == 1 else f"{n} areas"
    start, end = outage.start_at.astimezone(CHINA_TZ), outage.expected_restore_at.astimezone(CHINA_TZ)
    state = {"draft": "draft", "published": "published", "restored": "restored",
             "cancelled": "cancelled"}[outage.status.value]
    return (f"{outage.kind.label_en.capitalize()} in {where}: from {start:%Y-%m-%d %H:%M}, "
            f"expected back {end:%Y-%m-%d %H:%M} (China time); {state}")

"""HTTP JSON API of the work-order loop (aiohttp).  See ``tickets/API.md``.

``add_ticket_routes(app)`` registers everything under ``/api/tickets/``; the
pool is ``cti.web.pool_key``.  Errors are ``{"error", "message"}`` (Chinese
first, then English) like the rest of the API: 404 not found, 409 illegal
transition / stale version / not editable, 422 missing or bad fields (with
``fields``) and unknown category.  Every write is one transaction: an error
leaves nothing half-written.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Awaitable, Callable

from aiohttp import web

from cti.auth import Role, principal_key, require
from cti.logs import get_logger
from cti.web import pool_key
from cti.workdays import CHINA_TZ
from cti.http import json_error as _error

from . import queries
from . import repository as orders
from .categories import UnknownCategory
from .crew import LoggingCrewMessenger, deliver_pending
from .deadlines import DEADLINE_KINDS, DEADLINE_LABELS, local
from .knowledge import Article, load_knowledge
from .model import ORDER_TYPE_LABELS, ValidationError, validate_completion
from .ports import CrewMessenger
from .states import (
    ACTION_LABELS, APPEAL_DECISIONS, CALLBACK_RESULTS, REPAIR_RESULTS, STATUS_LABELS, Action,
    IllegalTransition, validate_actor,
)
from .workflow import TicketSettings, Workflow

log = get_logger("hotline.tickets.web")

__all__ = ["DEFAULT_DEPARTMENTS", "TicketServices", "add_ticket_routes", "tickets_key"]

# suggestions for the dispatch form (DOMAIN.md, "Who uses it"); any name is accepted
DEFAULT_DEPARTMENTS = ["抢修班", "供电营业所", "调度所", "计量中心", "35kV巡线班", "营销部", "运检部"]

# URL segment -> action
URL_ACTIONS = {
    "dispatch": Action.DISPATCH, "start": Action.START, "feedback": Action.FEEDBACK,
    "callback": Action.CALLBACK, "return": Action.RETURN, "close": Action.CLOSE, "extend": Action.EXTEND,
    "classify": Action.CLASSIFY, "appeal": Action.APPEAL, "appeal-decide": Action.APPEAL_DECIDE,
    "detach": Action.DETACH,
}
#: who may take each action (admins always may); the department signs for,
#: feeds back, extends and appeals; the hotline does the rest
ACTION_ROLES: dict[Action, tuple[Role, ...]] = {
    Action.DISPATCH: (Role.AGENT, Role.SUPERVISOR), Action.START: (Role.DEPARTMENT, Role.SUPERVISOR),
    Action.FEEDBACK: (Role.DEPARTMENT, Role.SUPERVISOR), Action.CALLBACK: (Role.AGENT, Role.SUPERVISOR),
    Action.RETURN: (Role.AGENT, Role.SUPERVISOR), Action.CLOSE: (Role.AGENT, Role.SUPERVISOR),
    Action.EXTEND: (Role.DEPARTMENT, Role.SUPERVISOR), Action.CLASSIFY: (Role.AGENT, Role.SUPERVISOR),
    Action.APPEAL: (Role.DEPARTMENT, Role.SUPERVISOR), Action.APPEAL_DECIDE: (Role.SUPERVISOR,),
    Action.DETACH: (Role.AGENT, Role.SUPERVISOR),
    Action.CREW_ARRIVAL: (Role.AGENT, Role.SUPERVISOR, Role.DEPARTMENT),
    Action.CREW_FINDINGS: (Role.AGENT, Role.SUPERVISOR, Role.DEPARTMENT),
    Action.CREW_RESULT: (Role.AGENT, Role.SUPERVISOR, Role.DEPARTMENT),
}
CREW_REPORTS = {"arrival": Action.CREW_ARRIVAL, "findings": Action.CREW_FINDINGS, "result": Action.CREW_RESULT}


@dataclass
class TicketServices:
    workflow: Workflow
    messenger: CrewMessenger
    knowledge: list[Article]
    departments: list[str] = field(default_factory=lambda: list(DEFAULT_DEPARTMENTS))
    heavy_load: bool | None = None          # supervisor's override; None = from the callback backlog
    knowledge_seeded: bool = False
    # called with (order_id, action) after an order's change is committed
    # (accept, every transition and crew report): cti/app.py tells the
    # supervisors' wallboards, whose deadline list then drops what was met
    on_changed: list[Callable[[int, str], Any]] = field(default_factory=list)

    def changed(self, order_id: int, action: str) -> None:
        for fn in self.on_changed:
            try:
                fn(order_id, action)
            except Exception:  # a listener never undoes a committed change
                log.exception("order_changed_listener_failed", order_id=order_id, action=action)


tickets_key = web.AppKey("tickets", TicketServices)



def _guard(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
    """Domain errors -> HTTP, the same way for every handler."""
    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except UnknownCategory as exc:
            return _error(422, "unknown_category", "投诉分类无效 / unknown complaint category", fields=exc.errors)
        except ValidationError as exc:
            return _error(422, "invalid", "请补全或更正以下内容 / missing or invalid fields", fields=exc.errors)
        except IllegalTransition as exc:
            return _error(409, "illegal_transition", exc.message, status=exc.status, action=exc.action)
        except orders.StaleOrder as exc:
            current = exc.args[0] if exc.args else None
            return _error(409, "stale", "工单已被他人修改,请刷新后重试 / changed by someone else, reload",
                          current_version=current)
        except orders.OrderNotEditable as exc:
            return _error(409, "not_editable", f"工单状态为 {exc} ,不能修改 / order is {exc}")
        except orders.OrderNotFound:
            return _error(404, "not_found", "工单不存在 / no such work order")
        except _BadJson:
            return _error(400, "bad_json", "请求须为 JSON 对象 / body must be a JSON object")
        except _NotAllowed:
            return _error(403, "forbidden", "您的角色不能执行此操作 / your role may not do this")
    return wrapped


class _NotAllowed(Exception):
    pass


def _own_department(request: web.Request) -> str | None:
    """A department user's own department (their reads are limited to it); None for others."""
    principal = request.get(principal_key)
    if principal is not None and principal.role is Role.DEPARTMENT:
        return principal.department
    return None


def _check_department(request: web.Request, order: dict[str, Any]) -> None:
    """Department users see only orders dispatched to their department (404 otherwise)."""
    dept = _own_department(request)
    if dept is not None and order.get("department") != dept:
        raise orders.OrderNotFound(order.get("id"))


def _svc(request: web.Request) -> TicketServices:
    return request.app[tickets_key]


def _order_id(request: web.Request) -> int:
    raw = request.match_info["order_id"]
    if not raw.isdigit() or len(raw) > 18:
        raise orders.OrderNotFound(raw)
    return int(raw)


class _BadJson(Exception):
    pass


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except (ValueError, UnicodeDecodeError):
        raise _BadJson() from None
    if not isinstance(data, dict):
        raise _BadJson()
    return data


def _version(data: dict[str, Any]) -> int:
    v = data.get("version")
    if not isinstance(v, int) or isinstance(v, bool):
        raise ValidationError({"version": "缺少版本号 / version is required"})
    return v


def _limit(request: web.Request, default: int = 50, cap: int = 500) -> int:
    raw = request.query.get("limit", "")
    return min(int(raw), cap) if raw.isdigit() and int(raw) > 0 else default


def _opt(request: web.Request, name: str, limit: int = 100) -> str | None:
    v = request.query.get(name, "").strip()
    return v[:limit] if v else None


async def _deliver(request: web.Request, order_id: int) -> None:
    try:
        await deliver_pending(request.app[pool_key], _svc(request).messenger, order_id=order_id)
    except Exception as exc:  # the outbox keeps it; the worker retries
        log.warning("crew_delivery_deferred", order_id=order_id, error=f"{type(exc).__name__}: {exc}")


# -- orders ---------------------------------------------------------------------------

@require(Role.AGENT, Role.SUPERVISOR, Role.DEPARTMENT)
@_guard
async def get_order(request: web.Request) -> web.Response:
    async with request.app[pool_key].acquire() as conn:
        detail = await _svc(request).workflow.detail(conn, _order_id(request))
        _check_department(request, detail)
        return web.json_response(detail)


@require(Role.AGENT, Role.SUPERVISOR, Role.DEPARTMENT)
@_guard
async def get_events(request: web.Request) -> web.Response:
    wf = _svc(request).workflow
    async with request.app[pool_key].acquire() as conn:
        oid = _order_id(request)
        _check_department(request, await wf.get(conn, oid))
        return web.json_response(await wf.events(conn, oid))


@require(Role.AGENT, Role.SUPERVISOR, Role.DEPARTMENT)
@_guard
async def search(request: web.Request) -> web.Response:
    status = _opt(request, "status", 20)
    if status is not None and status not in STATUS_LABELS:
        raise ValidationError({"status": f"未知状态 / status must be one of {', '.join(STATUS_LABELS)}"})
    otype = _opt(request, "type", 20)
    if otype is not None and otype not in ORDER_TYPE_LABELS:
        raise ValidationError({"type": "未知工单类型 / unknown order type"})
    async with request.app[pool_key].acquire() as conn:
        return web.json_response(await queries.search_orders(
            conn, request.query.get("q", ""), status=status, order_type=otype,
            department=_own_department(request) or _opt(request, "department"), limit=_limit(request)))


@require(Role.AGENT, Role.SUPERVISOR)
@_guard
async def accept(request: web.Request) -> web.Response:
    """Save the draft as an accepted order, with the category, and the
    duplicate-fault check for repairs (``new_fault: true`` + reason skips it)."""
    svc = _svc(request)
    oid = _order_id(request)
    data = await _body(request)
    errors: dict[str, str] = {}
    try:
        actor = validate_actor(data.get("actor"))
    except ValidationError as exc:
        errors.update(exc.errors)
    new_fault = data.get("new_fault", False)
    reason = data.get("new_fault_reason") or ""
    if not isinstance(new_fault, bool):
        errors["new_fault"] = "须为 true/false / must be a boolean"
    elif new_fault and (not isinstance(reason, str) or not reason.strip()):
        errors["new_fault_reason"] = "判定为新故障须说明原因 / say why it is a new fault"
    try:
        clean = validate_completion(data, categories=svc.workflow.settings.categories)
    except ValidationError as exc:
        errors = {**exc.errors, **errors}
    if errors:
        raise ValidationError(errors)
    async with request.app[pool_key].acquire() as conn:
        async with conn.transaction():
            await orders.save_order(conn, oid, clean, actor=actor, workflow=svc.workflow,
                                    merge=not new_fault, new_fault_reason=str(reason).strip()[:500])
        svc.changed(oid, "accept")
        return web.json_response(await svc.workflow.detail(conn, oid))


async def _act(request: web.Request, action: Action, data: dict[str, Any]) -> web.Response:
    svc = _svc(request)
    oid = _order_id(request)
    if not request[principal_key].has(*ACTION_ROLES.get(action, (Role.SUPERVISOR,))):
        raise _NotAllowed()
    errors: dict[str, str] = {}
    try:
        actor = validate_actor(data.get("actor"))
    except ValidationError as exc:
        errors.update(exc.errors)
    try:
        version = _version(data)
    except ValidationError as exc:
        errors.update(exc.errors)
    if errors:
        raise ValidationError(errors)
    async with request.app[pool_key].acquire() as conn:
        if _own_department(request) is not None:
            _check_department(request, await svc.workflow.get(conn, oid))
        async with conn.transaction():
            await svc.workflow.act(conn, oid, action.value, data, actor=actor, version=version,
                                   heavy_load=svc.heavy_load)
    svc.changed(oid, action.value)
    if action is Action.DISPATCH:
        await _deliver(request, oid)
    async with request.app[pool_key].acquire() as conn:
        return web.json_response(await svc.workflow.detail(conn, oid))


@require(Role.AGENT, Role.SUPERVISOR, Role.DEPARTMENT)
@_guard
async def transition(request: web.Request) -> web.Response:
    name = request.match_info["action"]
    action = URL_ACTIONS.get(name)
    if action is None:
        return _error(404, "not_found", f"没有这个操作 {name!r} / no such action")
    return await _act(request, action, await _body(request))


@require(Role.AGENT, Role.SUPERVISOR, Role.DEPARTMENT)
@_guard
async def crew_report(request: web.Request) -> web.Response:
    data = await _body(request)
    action = CREW_REPORTS.get(data.get("kind"))
    if action is None:
        raise ValidationError({"kind": "回报类型须为 arrival/findings/result / kind must be arrival, findings or result"})
    return await _act(request, action, data)


@require(Role.AGENT, Role.SUPERVISOR, Role.DEPARTMENT)
@_guard
async def known_faults(request: web.Request) -> web.Response:
    wf = _svc(request).workflow
    async with request.app[pool_key].acquire() as conn:
        exclude = None
        ta, feeder, village = (request.query.get(k, "").strip()[:200] for k in ("transformer_area", "feeder", "village"))
        if request.query.get("order_id", "").isdigit():
            o = await wf.get(conn, int(request.query["order_id"]))
            exclude = o["id"]
            ta, feeder, village = ta or o["transformer_area"], feeder or o["feeder"], village or o["village"]
            snap = o.get("customer_snapshot") or {}
            feeder = feeder or str(snap.get("feeder") or "")
            village = village or str(snap.get("village") or "")
        faults = await wf.known_faults(conn, transformer_area=ta, feeder=feeder, village=village,
                                       exclude_order_id=exclude)
        return web.json_response([f.to_dict() for f in faults])


@require(Role.AGENT, Role.SUPERVISOR, Role.DEPARTMENT)
@_guard
async def attached_callers(request: web.Request) -> web.Response:
    wf = _svc(request).workflow
    async with request.app[pool_key].acquire() as conn:
        oid = _order_id(request)
        _check_department(request, await wf.get(conn, oid))
        return web.json_response(await wf.attached_callers(conn, oid))


# -- worklists ------------------------------------------------------------------------------

@require(Role.AGENT, Role.SUPERVISOR)
@_guard
async def callbacks(request: web.Request) -> web.Response:
    wf = _svc(request).workflow
    agent = _opt(request, "agent", 32)
    async with request.app[pool_key].acquire() as conn:
        return web.json_response(await queries.callback_worklist(
            conn, now=wf.now(), quiet=wf.policy.quiet, limit=_limit(request, 200), agent=agent))


@require(Role.AGENT, Role.SUPERVISOR, Role.DEPARTMENT)
@_guard
async def deadlines(request: web.Request) -> web.Response:
    wf = _svc(request).workflow
    state = request.query.get("state", "open")
    # alerts: warned or breached (what the supervisor's wallboard lists)
    states = {"open": ("pending", "warned", "breached"), "breached": ("breached",), "warned": ("warned",),
              "pending": ("pending",), "alerts": ("warned", "breached")}.get(state)
    if states is None:
        raise ValidationError({"state": "state 须为 open/pending/warned/breached/alerts"})
    kind = _opt(request, "kind", 30)
    if kind is not None and kind not in DEADLINE_KINDS:
        raise ValidationError({"kind": f"kind must be one of {', '.join(DEADLINE_KINDS)}"})
    async with request.app[pool_key].acquire() as conn:
        return web.json_response(await queries.deadline_list(
            conn, states=states, kind=kind, department=_own_department(request) or _opt(request, "department"),
            now=wf.now(),
            limit=_limit(request, 200)))


@require(Role.SUPERVISOR, Role.DEPARTMENT)
@_guard
async def inbox(request: web.Request) -> web.Response:
    dept = request.match_info["department"].strip()[:100]
    if not request[principal_key].may_see_department(dept):
        raise _NotAllowed()
    async with request.app[pool_key].acquire() as conn:
        return web.json_response(await queries.department_inbox(
            conn, dept, include_done=request.query.get("all") == "1", limit=_limit(request, 200)))


@require(Role.AGENT, Role.SUPERVISOR, Role.DEPARTMENT)
@_guard
async def departments_list(request: web.Request) -> web.Response:
    async with request.app[pool_key].acquire() as conn:
        used = await queries.departments_in_use(conn)
    names = list(dict.fromkeys([*_svc(request).departments, *used]))
    return web.json_response(names)


@require(Role.AGENT, Role.SUPERVISOR)
@_guard
async def get_load(request: web.Request) -> web.Response:
    svc = _svc(request)
    async with request.app[pool_key].acquire() as conn:
        computed = await svc.workflow.is_heavy_load(conn)
        pending = await conn.fetchval("SELECT count(*) FROM callback_tasks WHERE state = 'pending'")
    return web.json_response({"override": svc.heavy_load, "computed": computed, "pending_callbacks": pending,
                              "heavy": computed if svc.heavy_load is None else svc.heavy_load,
                              "threshold": svc.workflow.policy.heavy_load_pending_callbacks})


@require(Role.SUPERVISOR)
@_guard
async def put_load(request: web.Request) -> web.Response:
    data = await _body(request)
    heavy = data.get("heavy")
    if heavy is not None and not isinstance(heavy, bool):
        raise ValidationError({"heavy": "须为 true/false/null / must be true, false or null"})
    validate_actor(data.get("actor"))
    _svc(request).heavy_load = heavy
    log.info("heavy_load_set", heavy=heavy, actor=data.get("actor"))
    return await get_load(request)


# -- reference data ----------------------------------------------------------------------

@require(Role.AGENT, Role.SUPERVISOR, Role.DEPARTMENT)
@_guard
async def categories(request: web.Request) -> web.Response:
    return web.json_response(_svc(request).workflow.settings.categories.to_json())


@require(Role.AGENT, Role.SUPERVISOR, Role.DEPARTMENT)
@_guard
async def meta(request: web.Request) -> web.Response:
    policy = _svc(request).workflow.policy
    return web.json_response({
        "order_types": [{"value": k, "label": v} for k, v in ORDER_TYPE_LABELS.items()],
        "statuses": [{"value": k, "label": v} for k, v in STATUS_LABELS.items()],
        "actions": [{"value": k, "label": v} for k, v in ACTION_LABELS.items()],
        "callback_results": [{"value": k, "label": v} for k, v in CALLBACK_RESULTS.items()],
        "repair_results": [{"value": k, "label": v} for k, v in REPAIR_RESULTS.items()],
        "appeal_decisions": [{"value": k, "label": v} for k, v in APPEAL_DECISIONS.items()],
        "deadline_kinds": [{"value": k, "label": DEADLINE_LABELS[k]} for k in DEADLINE_KINDS],
        "area_classes": [{"value": "town", "label": "城区 Town"}, {"value": "countryside", "label": "农村 Countryside"},
                         {"value": "remote", "label": "偏远山区 Remote"}],
        "quiet_hours": str(policy.quiet),
        "arrival_minutes": dict(policy.arrival_minutes),
        "reply_workdays": policy.reply_workdays,
    })


# -- statistics -------------------------------------------------------------------------------

def _period(request: web.Request) -> tuple[datetime, datetime]:
    """?from=YYYY-MM-DD&to=YYYY-MM-DD (China days, ``to`` inclusive); default this month."""
    today = local(_svc(request).workflow.now()).date()
    try:
        start = date.fromisoformat(request.query["from"]) if request.query.get("from") else today.replace(day=1)
        end = date.fromisoformat(request.query["to"]) if request.query.get("to") else today
    except ValueError:
        raise ValidationError({"from": "日期格式 YYYY-MM-DD / dates must be YYYY-MM-DD"}) from None
    return (datetime.combine(start, datetime.min.time(), CHINA_TZ),
            datetime.combine(end + timedelta(days=1), datetime.min.time(), CHINA_TZ))


@require(Role.SUPERVISOR)
@_guard
async def arrival(request: web.Request) -> web.Response:
    since, until = _period(request)
    async with request.app[pool_key].acquire() as conn:
        stats = await queries.arrival_stats(conn, since=since, until=until, now=_svc(request).workflow.now())
    return web.json_response({"from": since.isoformat(), "until": until.isoformat(), **stats.to_dict(),
                              "target": 0.99})


@require(Role.SUPERVISOR)
@_guard
async def complaints(request: web.Request) -> web.Response:
    since, until = _period(request)
    async with request.app[pool_key].acquire() as conn:
        stats = await queries.complaint_stats(conn, since=since, until=until)
    return web.json_response({"from": since.isoformat(), "until": until.isoformat(), **stats})


# -- knowledge base ---------------------------------------------------------------------------

async def _seeded(request: web.Request, conn) -> None:
    svc = _svc(request)
    if not svc.knowledge_seeded:
        await queries.seed_knowledge(conn, svc.knowledge)
        svc.knowledge_seeded = True


@require(Role.AGENT, Role.SUPERVISOR, Role.DEPARTMENT)
@_guard
async def knowledge(request: web.Request) -> web.Response:
    async with request.app[pool_key].acquire() as conn:
        await _seeded(request, conn)
        return web.json_response(await queries.search_knowledge(
            conn, request.query.get("q", "")[:100], topic=_opt(request, "topic"), limit=_limit(request, 20, 100)))


@require(Role.AGENT, Role.SUPERVISOR, Role.DEPARTMENT)
@_guard
async def knowledge_article(request: web.Request) -> web.Response:
    async with request.app[pool_key].acquire() as conn:
        await _seeded(request, conn)
        a = await queries.get_article(conn, request.match_info["slug"][:100])
    if a is None:
        return _error(404, "not_found", "没有这篇知识 / no such article")
    return web.json_response(a)


def add_ticket_routes(app: web.Application, *, settings: TicketSettings | None = None,
                      messenger: CrewMessenger | None = None, departments: list[str] | None = None,
                      workflow: Workflow | None = None) -> TicketServices:
    """Register the ``/api/tickets/`` routes.  Returns the services object
    (also ``app[tickets_key]``): its ``workflow`` is what the deadline worker
    should share (``start_deadline_worker(pool, notifier, workflow=svc.workflow,
    messenger=svc.messenger)``)."""
    svc = TicketServices(workflow=workflow or Workflow(settings), messenger=messenger or LoggingCrewMessenger(),
                         knowledge=load_knowledge(),
                         departments=list(departments) if departments is not None else list(DEFAULT_DEPARTMENTS))
    app[tickets_key] = svc
    r = app.router
    r.add_get("/api/tickets/meta", meta)
    r.add_get("/api/tickets/categories", categories)
    r.add_get("/api/tickets/departments", departments_list)
    r.add_get("/api/tickets/orders", search)
    r.add_get("/api/tickets/orders/{order_id}", get_order)
    r.add_get("/api/tickets/orders/{order_id}/events", get_events)
    r.add_get("/api/tickets/orders/{order_id}/callers", attached_callers)
    r.add_post("/api/tickets/orders/{order_id}/accept", accept)
    r.add_post("/api/tickets/orders/{order_id}/crew-report", crew_report)
    r.add_post("/api/tickets/orders/{order_id}/{action}", transition)
    r.add_get("/api/tickets/known-faults", known_faults)
    r.add_get("/api/tickets/callbacks", callbacks)
    r.add_get("/api/tickets/deadlines", deadlines)
    r.add_get("/api/tickets/departments/{department}/inbox", inbox)
    r.add_get("/api/tickets/load", get_load)
    r.add_put("/api/tickets/load", put_load)
    r.add_get("/api/tickets/stats/arrival", arrival)
    r.add_get("/api/tickets/stats/complaints", complaints)
    r.add_get("/api/tickets/knowledge", knowledge)
    r.add_get("/api/tickets/knowledge/{slug}", knowledge_article)
    from .pages import add_ticket_pages

    add_ticket_pages(app)   # the HTML pages (/orders, /callbacks, /department, /knowledge)
    return svc

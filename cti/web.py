"""aiohttp routes: the agent desktop (screen-pop + work-order form) and its API."""
from __future__ import annotations

import json
import re
from pathlib import Path

import asyncpg
from aiohttp import WSMsgType, web

from tickets import repository as orders
from tickets.model import ORDER_TYPE_LABELS, ValidationError, validate_completion

from .http import json_error as _error
from .auth import Role, principal_key, public, require
from .hub import Hub
from .logs import get_logger

log = get_logger("hotline.web")

STATIC = Path(__file__).parent / "static"
AGENT_RE = re.compile(r"^[0-9A-Za-z_-]{1,32}$")

pool_key = web.AppKey("pool", asyncpg.Pool)
hub_key = web.AppKey("hub", Hub)
status_key = web.AppKey("status", dict)



@web.middleware
async def error_middleware(request: web.Request, handler):
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status >= 400 and request.path.startswith("/api/"):
            if exc.content_type == "application/json" and exc.text:  # already a clear JSON error
                return web.Response(status=exc.status, text=exc.text, content_type="application/json")
            if exc.status == 413:
                return _error(413, "too_large", "请求过大 / request body too large")
            return _error(exc.status, exc.reason.lower().replace(" ", "_"), exc.reason)
        raise
    except (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError) as exc:
        log.error("request_db_unavailable", path=request.path, error=str(exc))
        return _error(503, "database_unavailable", "数据库暂不可用,请稍后重试 / database unavailable, retry shortly")


def _agent(request: web.Request) -> str:
    agent = request.match_info["agent"]
    if not AGENT_RE.match(agent):
        raise web.HTTPBadRequest(reason="bad agent id")
    principal = request.get(principal_key)
    if principal is None or not principal.may_act_as_agent(agent):  # an agent sees only their own desk
        raise web.HTTPForbidden(reason="not your agent desk")
    return agent


@require()
async def index(request: web.Request) -> web.Response:
    return web.FileResponse(STATIC / "index.html")


@require(Role.AGENT, Role.SUPERVISOR)
async def agent_page(request: web.Request) -> web.StreamResponse:
    _agent(request)
    return web.FileResponse(STATIC / "agent.html")


@require(Role.AGENT, Role.SUPERVISOR)
async def agent_ws(request: web.Request) -> web.WebSocketResponse:
    agent = _agent(request)
    ws = web.WebSocketResponse(heartbeat=20, max_msg_size=64 * 1024)
    await ws.prepare(request)
    hub = request.app[hub_key]
    sub = hub.subscribe(f"agent:{agent}", ws)
    log.info("agent_page_connected", agent=agent)
    hub.publish(f"agent:{agent}", {"type": "hello", "agent": agent,
                                   "ami": request.app[status_key].get("ami", "unknown")})
    try:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT and msg.data == "ping":
                await ws.send_str(json.dumps({"type": "pong"}))
    finally:
        hub.unsubscribe(sub)
        log.info("agent_page_disconnected", agent=agent)
    return ws


def _order_id(request: web.Request) -> int:
    raw = request.match_info["order_id"]
    if not raw.isdigit() or len(raw) > 18:
        raise web.HTTPBadRequest(reason="bad order id")
    return int(raw)


@require(Role.AGENT, Role.SUPERVISOR)
async def get_order(request: web.Request) -> web.Response:
    async with request.app[pool_key].acquire() as conn:
        try:
            order = await orders.get_order(conn, _order_id(request))
        except orders.OrderNotFound:
            return _error(404, "not_found", "工单不存在 / no such work order")
    if not _own_pop(request, order):
        return _error(403, "forbidden", "只能查看本人的弹屏工单 / not your screen-pop")
    return web.json_response(order)


def _own_pop(request: web.Request, order: dict) -> bool:
    """Agents read and save only their own screen-pop orders."""
    principal = request[principal_key]
    return principal.role is not Role.AGENT or order.get("agent") == principal.agent_id


@require(Role.AGENT, Role.SUPERVISOR)
async def save_order(request: web.Request) -> web.Response:
    order_id = _order_id(request)
    try:
        data = await request.json()
    except (ValueError, UnicodeDecodeError):
        return _error(400, "bad_json", "请求格式错误 / body must be JSON")
    if not isinstance(data, dict):
        return _error(400, "bad_json", "请求格式错误 / body must be a JSON object")
    try:
        clean = validate_completion(data)
    except ValidationError as exc:
        return _error(422, "invalid", "请补全工单 / the work order is incomplete", fields=exc.errors)
    async with request.app[pool_key].acquire() as conn:
        try:
            if not _own_pop(request, await orders.get_order(conn, order_id)):
                return _error(403, "forbidden", "只能保存本人的弹屏工单 / not your screen-pop")
            async with conn.transaction():
                order = await orders.save_order(conn, order_id, clean)
        except orders.OrderNotFound:
            return _error(404, "not_found", "工单不存在 / no such work order")
        except orders.StaleOrder:
            return _error(409, "stale", "工单已被他人修改,请刷新 / changed by someone else, reload")
        except orders.OrderNotEditable as exc:
            return _error(409, "not_editable", f"工单状态为 {exc} ,不能修改 / order is {exc}")
    log.info("work_order_saved", order_no=order["order_no"], agent=order["agent"])
    return web.json_response(order)


@require(Role.AGENT, Role.SUPERVISOR)
async def list_orders(request: web.Request) -> web.Response:
    agent = request.query.get("agent") or None
    if agent is not None and not AGENT_RE.match(agent):
        return _error(400, "bad_agent", "坐席工号格式错误 / bad agent id")
    principal = request[principal_key]
    if principal.role is Role.AGENT and agent != principal.agent_id:  # agents list their own orders
        return _error(403, "forbidden", "只能查看本人工单 / agents see their own orders only")
    async with request.app[pool_key].acquire() as conn:
        return web.json_response(await orders.list_orders(conn, agent=agent))


@require()
async def order_types(request: web.Request) -> web.Response:
    return web.json_response([{"value": k, "label": v} for k, v in ORDER_TYPE_LABELS.items()])


@public
async def health(request: web.Request) -> web.Response:
    status = dict(request.app[status_key])
    try:
        async with request.app[pool_key].acquire(timeout=2) as conn:
            await conn.fetchval("SELECT 1")
        status["database"] = "ok"
    except Exception as exc:
        status["database"] = f"unavailable: {type(exc).__name__}"
    code = 200 if status["database"] == "ok" else 503
    return web.json_response(status, status=code)


def add_routes(app: web.Application) -> None:
    app.middlewares.append(error_middleware)
    app.router.add_get("/", index)
    app.router.add_get("/agent/{agent}", agent_page)
    app.router.add_get("/ws/agent/{agent}", agent_ws)
    app.router.add_get("/api/orders", list_orders)
    app.router.add_get("/api/orders/{order_id}", get_order)
    app.router.add_post("/api/orders/{order_id}", save_order)
    app.router.add_get("/api/order-types", order_types)
    app.router.add_get("/health", health)
    app.router.add_static("/static/", STATIC)

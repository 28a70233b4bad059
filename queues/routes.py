"""aiohttp routes of the supervisors' wallboard.

``GET /wallboard`` (page), ``GET /ws/wallboard`` (push), ``GET /api/wallboard``
(one snapshot), and the agent control / surge switch JSON endpoints::

    POST /api/wallboard/pause   {"interface", "queue"?, "paused": bool, "reason"?}
    POST /api/wallboard/login   {"interface", "queue", "name"?, "paused"?, "reason"?}
    POST /api/wallboard/logout  {"interface", "queue"}
    POST /api/wallboard/surge   {"mode": "auto" | "on" | "off"}

Errors are ``{"error": code, "message": "中文 / English", "asterisk": "..."}``.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from cti.logs import get_logger
from cti.auth import Role, principal_key, require
from cti.http import json_error as _error
from cti.hub import SUPERVISOR_TOPIC

from .service import TOPIC, ActionFailed, WallboardService

log = get_logger("hotline.wallboard")

STATIC = Path(__file__).resolve().parent.parent / "cti" / "static"
INTERFACE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9]{0,15}/[A-Za-z0-9_.@+-]{1,64}$")
QUEUE_RE = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")
MAX_REASON = 40

wallboard_key = web.AppKey("wallboard", WallboardService)



def _clean_text(value: Any, limit: int) -> str:
    s = "".join(ch for ch in str(value or "") if ch.isprintable()).strip()
    return s[:limit]


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except (ValueError, UnicodeDecodeError):
        data = None
    if not isinstance(data, dict):
        raise web.HTTPBadRequest(text=json.dumps({"error": "bad_json", "message": "请求格式错误 / body must be a JSON "
                                                  "object"}, ensure_ascii=False), content_type="application/json")
    return data


def _interface(data: dict[str, Any]) -> str:
    iface = str(data.get("interface") or "").strip()
    if not INTERFACE_RE.match(iface):
        raise _Invalid("interface", "坐席接口格式错误,例如 PJSIP/1001 / bad interface, e.g. PJSIP/1001")
    return iface


def _queue(data: dict[str, Any], required: bool) -> str:
    q = str(data.get("queue") or "").strip()
    if not q and not required:
        return ""
    if not QUEUE_RE.match(q):
        raise _Invalid("queue", "请选择队列 / choose a queue")
    return q


class _Invalid(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def _who(request: web.Request) -> str:
    principal = request.get(principal_key)
    if principal is not None and principal.username != "metrics-token":
        return principal.username
    return _clean_text(request.headers.get("X-Supervisor", ""), 32) or (request.remote or "")


@require(Role.SUPERVISOR)
async def wallboard_page(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC / "wallboard.html")


@require(Role.SUPERVISOR)
async def wallboard_ws(request: web.Request) -> web.WebSocketResponse:
    svc = request.app[wallboard_key]
    ws = web.WebSocketResponse(heartbeat=20, max_msg_size=16 * 1024)
    await ws.prepare(request)
    hub = svc.hub
    # the figures, and the work orders' deadline warnings and escalations
    subs = [hub.subscribe(TOPIC, ws), hub.subscribe(SUPERVISOR_TOPIC, ws)]
    log.info("wallboard_connected", remote=request.remote)
    try:
        await ws.send_str(json.dumps(svc.snapshot(), ensure_ascii=False, default=str))
        async for msg in ws:
            if msg.type == WSMsgType.TEXT and msg.data == "ping":
                await ws.send_str(json.dumps({"type": "pong"}))
    finally:
        for sub in subs:
            hub.unsubscribe(sub)
        log.info("wallboard_disconnected", remote=request.remote)
    return ws


@require(Role.SUPERVISOR)
async def wallboard_snapshot(request: web.Request) -> web.Response:
    return web.json_response(request.app[wallboard_key].snapshot(), dumps=lambda o: json.dumps(
        o, ensure_ascii=False, default=str))


async def _act(request: web.Request, kind: str) -> web.Response:
    svc = request.app[wallboard_key]
    data = await _body(request)
    try:
        iface = _interface(data)
        if kind == "pause":
            queue = _queue(data, required=False)
            paused = data.get("paused")
            if not isinstance(paused, bool):
                raise _Invalid("paused", "paused 必须为 true/false / paused must be true or false")
            reason = _clean_text(data.get("reason"), MAX_REASON) if paused else ""
            if paused and not reason:
                raise _Invalid("reason", "请填写示忙原因 / give a reason for the pause")
            result = await svc.pause(iface, queue, paused, reason, who=_who(request))
        elif kind == "login":
            queue = _queue(data, required=True)
            paused = bool(data.get("paused", False))
            result = await svc.login(iface, queue, _clean_text(data.get("name"), 40), paused,
                                     _clean_text(data.get("reason"), MAX_REASON), who=_who(request))
        else:
            queue = _queue(data, required=True)
            result = await svc.logout(iface, queue, who=_who(request))
    except _Invalid as exc:
        return _error(422, "invalid", exc.message, field=exc.field)
    except ActionFailed as exc:
        return _error(exc.status, exc.code, exc.message, asterisk=exc.asterisk)
    if not result["confirmed"]:
        result["message"] = "交换机已受理,尚未收到状态确认 / accepted by Asterisk, no confirming event yet"
    return web.json_response(result)


@require(Role.SUPERVISOR)
async def pause_agent(request: web.Request) -> web.Response:
    return await _act(request, "pause")


@require(Role.SUPERVISOR)
async def login_agent(request: web.Request) -> web.Response:
    return await _act(request, "login")


@require(Role.SUPERVISOR)
async def logout_agent(request: web.Request) -> web.Response:
    return await _act(request, "logout")


@require(Role.SUPERVISOR)
async def set_surge(request: web.Request) -> web.Response:
    data = await _body(request)
    mode = data.get("mode")
    if mode not in ("auto", "on", "off"):
        return _error(422, "invalid", "mode 须为 auto / on / off", field="mode")
    svc = request.app[wallboard_key]
    s = svc.set_surge_mode(mode, who=_who(request))
    return web.json_response({"ok": True, "mode": s.mode, "active": s.active})


def add_wallboard_routes(app: web.Application) -> None:
    app.router.add_get("/wallboard", wallboard_page)
    app.router.add_get("/ws/wallboard", wallboard_ws)
    app.router.add_get("/api/wallboard", wallboard_snapshot)
    app.router.add_post("/api/wallboard/pause", pause_agent)
    app.router.add_post("/api/wallboard/login", login_agent)
    app.router.add_post("/api/wallboard/logout", logout_agent)
    app.router.add_post("/api/wallboard/surge", set_surge)


__all__ = ["add_wallboard_routes", "wallboard_key"]

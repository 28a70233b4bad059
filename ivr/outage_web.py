"""HTTP for the outage registry: the departments' JSON API and the page
listing active and coming outages for agents and supervisors.

Wire it in the composition root::

    from ivr.outage_web import add_outage_routes, outage_hooks_key
    add_outage_routes(app)                      # after cti.web.add_routes(app) (pool_key, error middleware)
    app[outage_hooks_key].append(make_prompt)   # async def make_prompt(outage: Outage) -> None

Hooks run after a publish or a change of the restoration time has been
committed, in order, each bounded by ``hook_timeout``; a failing or slow hook
is logged and never fails the request (the outage is published either way).

Errors: ``{"error": code, "message": "中文 / English", ...}`` with 400 (not
JSON / bad id), 404 (no such outage), 409 (illegal transition or stale
version), 422 (validation; ``fields`` maps field -> message).
"""
from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Awaitable, Callable

from aiohttp import web

from cti.logs import get_logger
from cti.auth import Role, require
from cti.web import pool_key
from cti.http import json_error as _error

from . import outage_repo as repo
from .outages import (
    MAX_ACTOR, MAX_REASON, IllegalTransition, InvalidOutage, Outage, parse_time, validate_new_outage,
)

log = get_logger("hotline.outages")

STATIC = Path(__file__).resolve().parent.parent / "cti" / "static"

OutageHook = Callable[[Outage], Awaitable[None]]
outage_hooks_key = web.AppKey("outage_hooks", list)
#: tests and the simulator may pin the clock: a callable returning an aware datetime
outage_clock_key = web.AppKey("outage_clock", object)



def _now(request: web.Request) -> datetime:
    clock = request.app.get(outage_clock_key)
    return clock() if clock else datetime.now(timezone.utc)


async def _body(request: web.Request) -> dict[str, Any] | web.Response:
    if request.content_length is not None and request.content_length > 256 * 1024:
        return _error(413, "too_large", "请求过大 / request body too large")
    try:
        data = await request.json()
    except (ValueError, UnicodeDecodeError):
        return _error(400, "bad_json", "请求格式错误 / body must be JSON")
    if not isinstance(data, dict):
        return _error(400, "bad_json", "请求格式错误 / body must be a JSON object")
    return data


def _actor(data: dict[str, Any]) -> str | web.Response:
    actor = data.get("actor")
    if not isinstance(actor, str) or not actor.strip():
        return _error(422, "invalid", "请填写操作人 / actor is required",
                      fields={"actor": "请填写操作人 / actor is required"})
    return actor.strip()[:MAX_ACTOR]


def _version(data: dict[str, Any]) -> int | None | web.Response:
    v = data.get("version")
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        return _error(422, "invalid", "版本号错误 / version must be a positive integer",
                      fields={"version": "版本号错误 / version must be a positive integer"})
    return v


def _json(outage: Outage, now: datetime, **extra) -> dict[str, Any]:
    d = outage.to_dict(at=now)
    d.update(extra)
    return d


async def _run_hooks(request: web.Request, outage: Outage, timeout: float) -> None:
    for hook in list(request.app.get(outage_hooks_key, [])):
        try:
            await asyncio.wait_for(hook(outage), timeout)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a hook must never fail the publish
            log.error("outage_hook_failed", outage_no=outage.outage_no, hook=getattr(hook, "__name__", repr(hook)),
                      error=f"{type(exc).__name__}: {exc}")


def _mapped(exc: Exception) -> web.Response:
    if isinstance(exc, repo.OutageNotFound):
        return _error(404, "not_found", "停电信息不存在 / no such outage")
    if isinstance(exc, repo.StaleOutage):
        return _error(409, "stale", "停电信息已被他人修改,请刷新后重试 / changed by someone else, reload",
                      current_version=exc.current_version)
    if isinstance(exc, InvalidOutage):
        return _error(422, "invalid", "停电信息不完整或有误 / the outage is incomplete or wrong", fields=exc.errors)
    if isinstance(exc, IllegalTransition):
        return _error(409, "illegal_transition", exc.message)
    raise exc


# -- handlers ----------------------------------------------------------------

@require(Role.SUPERVISOR, Role.DEPARTMENT)
async def publish_outage(request: web.Request) -> web.Response:
    """POST /api/outages — register and publish (``"publish": false`` keeps a draft)."""
    data = await _body(request)
    if isinstance(data, web.Response):
        return data
    now = _now(request)
    try:
        new = validate_new_outage(data, now)
    except InvalidOutage as exc:
        return _mapped(exc)
    publish = data.get("publish", True) is not False
    async with request.app[pool_key].acquire() as conn:
        async with conn.transaction():
            outage = await repo.create_outage(conn, new, publish=publish, now=now)
    log.info("outage_published" if publish else "outage_drafted", outage_no=outage.outage_no,
             kind=outage.kind.value, late_notice=outage.late_notice, areas=len(outage.areas), actor=new.actor)
    if publish:
        await _run_hooks(request, outage, request.app[_hook_timeout_key])
    body = _json(outage, now)
    if outage.late_notice:
        body["warning"] = "已发布,但公告时间不足(已标记) / published, but the notice was late (flagged): " \
                          + outage.late_notice_reason
    return web.json_response(body, status=201)


async def _change(request: web.Request, action: str) -> web.Response:
    ref = request.match_info["ref"]
    data = await _body(request)
    if isinstance(data, web.Response):
        return data
    actor = _actor(data)
    if isinstance(actor, web.Response):
        return actor
    version = _version(data)
    if isinstance(version, web.Response):
        return version
    now = _now(request)
    note = data.get("note") if isinstance(data.get("note"), str) else ""
    async with request.app[pool_key].acquire() as conn:
        try:
            async with conn.transaction():
                current = await repo.find_outage(conn, ref)
                if action == "restoration":
                    try:
                        when = parse_time(data.get("expected_restore_at"))
                    except (ValueError, TypeError):
                        raise InvalidOutage({"expected_restore_at":
                                             "预计恢复时间格式错误 / expected_restore_at must be an ISO 8601 time"})
                    outage = await repo.change_restoration(conn, current.id, when, actor=actor,
                                                           expected_version=version, note=note[:2000], now=now)
                elif action == "restore":
                    restored_at = None
                    if data.get("restored_at") is not None:
                        try:
                            restored_at = parse_time(data.get("restored_at"))
                        except (ValueError, TypeError):
                            raise InvalidOutage({"restored_at": "送电时间格式错误 / restored_at must be ISO 8601"})
                    outage = await repo.restore_outage(conn, current.id, actor=actor, restored_at=restored_at,
                                                       expected_version=version, note=note[:2000], now=now)
                else:
                    reason = data.get("reason")
                    if not isinstance(reason, str) or not reason.strip():
                        raise InvalidOutage({"reason": "请填写取消原因 / reason is required"})
                    outage = await repo.cancel_outage(conn, current.id, actor=actor, reason=reason[:MAX_REASON],
                                                      expected_version=version, now=now)
        except (repo.OutageNotFound, repo.StaleOutage, InvalidOutage, IllegalTransition) as exc:
            return _mapped(exc)
    event = {"restoration": "outage_restoration_changed", "restore": "outage_restored",
             "cancel": "outage_cancelled"}[action]
    log.info(event, outage_no=outage.outage_no, actor=actor, version=outage.version)
    if action == "restoration" and outage.status.value == "published":
        await _run_hooks(request, outage, request.app[_hook_timeout_key])
    return web.json_response(_json(outage, now))


@require(Role.SUPERVISOR, Role.DEPARTMENT)
async def change_restoration(request: web.Request) -> web.Response:
    """POST /api/outages/{ref}/restoration {"expected_restore_at", "actor", "version"?, "note"?}"""
    return await _change(request, "restoration")


@require(Role.SUPERVISOR, Role.DEPARTMENT)
async def restore_outage(request: web.Request) -> web.Response:
    """POST /api/outages/{ref}/restore {"actor", "restored_at"?, "version"?, "note"?}"""
    return await _change(request, "restore")


@require(Role.SUPERVISOR, Role.DEPARTMENT)
async def cancel_outage(request: web.Request) -> web.Response:
    """POST /api/outages/{ref}/cancel {"actor", "reason", "version"?}"""
    return await _change(request, "cancel")


@require(Role.AGENT, Role.SUPERVISOR, Role.DEPARTMENT)
async def list_outages(request: web.Request) -> web.Response:
    """GET /api/outages?state=active|coming|all"""
    state = request.query.get("state", "all")
    if state not in ("active", "coming", "all"):
        return _error(400, "bad_state", "state 应为 active、coming 或 all / state must be active, coming or all")
    now = _now(request)
    async with request.app[pool_key].acquire() as conn:
        outages = await repo.list_outages(conn, state, at=now)
    return web.json_response({"state": state, "now": now.isoformat(),
                              "outages": [o.to_dict(at=now) for o in outages]})


@require(Role.AGENT, Role.SUPERVISOR, Role.DEPARTMENT)
async def get_outage(request: web.Request) -> web.Response:
    """GET /api/outages/{ref} — by id or outage number, with its history."""
    now = _now(request)
    async with request.app[pool_key].acquire() as conn:
        try:
            outage = await repo.find_outage(conn, request.match_info["ref"])
        except repo.OutageNotFound as exc:
            return _mapped(exc)
        events = await repo.outage_events(conn, outage.id)
    return web.json_response(_json(outage, now, events=events))


@require(Role.AGENT, Role.SUPERVISOR, Role.DEPARTMENT)
async def outages_page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "outages.html")


_hook_timeout_key = web.AppKey("outage_hook_timeout", float)


def add_outage_routes(app: web.Application, *, hook_timeout: float = 10.0) -> None:
    """Add the outage API and page.  Needs ``cti.web.pool_key`` set on ``app``
    before it starts; creates ``app[outage_hooks_key]`` (empty) if absent."""
    if outage_hooks_key not in app:
        app[outage_hooks_key] = []
    app[_hook_timeout_key] = hook_timeout
    app.router.add_get("/outages", outages_page)
    app.router.add_get("/api/outages", list_outages)
    app.router.add_post("/api/outages", publish_outage)
    app.router.add_get("/api/outages/{ref}", get_outage)
    app.router.add_post("/api/outages/{ref}/restoration", change_restoration)
    app.router.add_post("/api/outages/{ref}/restore", restore_outage)
    app.router.add_post("/api/outages/{ref}/cancel", cancel_outage)

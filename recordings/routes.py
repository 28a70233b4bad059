"""HTTP: recording metadata, playback/download with range requests, the
access audit, quality scores, and the pages.

    GET  /api/recordings?order=<id>        recordings of a work order (those you may hear; "hidden" counts the rest)
    GET  /api/recordings?agent=<id>        recent recordings (filtered by role)
    GET  /api/recordings/{id}              metadata
    GET  /recordings/{id}/audio            playback; HTTP Range → 206 + Content-Range
    GET  /recordings/{id}/download         the same file as an attachment
    GET  /api/recordings/{id}/access-log   who listened (supervisor)
    PUT  /api/recordings/{id}/legal-hold   manual hold {"until": ISO date|null, "reason"} (supervisor)
    POST /api/recordings/{id}/scores       质检评分 {"score": 0-100, "comment", "criteria": {...}} (supervisor)
    GET  /api/recordings/{id}/scores
    GET  /api/agents/{agent}/scores        an agent's scores over time (+ monthly trend)
    GET  /recordings                       page: ?order=<id> or recent recordings
    GET  /quality                          page: scores of an agent (?agent=)

Every listen, download and denial is written to ``recording_access_log``.
A recording without a playable file answers a JSON error that says why:
410 ``expired``, 404 ``missing`` / ``corrupt`` / ``rejected``, 409
``in_progress`` -- never an empty 200."""
from __future__ import annotations

import re
from datetime import date, datetime, time, timezone
from pathlib import Path
from typing import Any

from aiohttp import web

from cti.auth import Principal, Role, principal_key, require
from cti.logs import get_logger
from cti.web import pool_key
from cti.http import json_error as _error

from . import access
from . import repository as repo
from .audio import CONTENT_TYPES
from .model import (
    PLAYABLE, SCORE_CRITERIA, STATE_LABELS, RecordingState, ScoreInvalid, UnsafeName, validate_score,
)
from .service import RecordingSettings, inside_root

log = get_logger("hotline.recordings.web")

STATIC = Path(__file__).parent / "static"
AGENT_RE = re.compile(r"^[0-9A-Za-z_-]{1,32}$")
recording_settings_key = web.AppKey("recording_settings", RecordingSettings)

UNAVAILABLE = {
    RecordingState.EXPIRED: (410, "expired", "录音已超过保存期限并已删除 / recording expired and was deleted"),
    RecordingState.MISSING: (404, "missing", "录音文件缺失 / the recording file is missing"),
    RecordingState.CORRUPT: (404, "corrupt", "录音文件损坏 / the recording file is corrupt"),
    RecordingState.REJECTED: (404, "rejected", "录音文件名不安全,已拒绝 / the recording's file name was unsafe "
                                               "and was rejected"),
    RecordingState.RECORDING: (409, "in_progress", "通话录音尚未结束 / the call is still being recorded"),
}



def _id(request: web.Request) -> int | None:
    raw = request.match_info.get("rec_id", "")
    if not raw.isdigit() or len(raw) > 18:
        return None
    return int(raw)


def _iso(v: Any) -> Any:
    if isinstance(v, (datetime, date)):
        return v.isoformat()
    return v


def _public_row(row, orders=None, *, may_manage: bool = False) -> dict[str, Any]:
    state = RecordingState(row["state"])
    out = {
        "id": row["id"], "linkedid": row["linkedid"], "uniqueid": row["uniqueid"], "queue": row["queue"],
        "agent": row["agent"], "state": state.value, "state_label": STATE_LABELS[state],
        "error": row["error"], "started_at": _iso(row["started_at"]), "ended_at": _iso(row["ended_at"]),
        "end_reason": row["end_reason"], "duration_s": row["duration_s"], "size_bytes": row["size_bytes"],
        "sha256": row["sha256"], "format": row["format"],
        "compact": {"format": row["transcoded_format"], "size_bytes": row["transcoded_size"],
                    "verified": row["transcoded_verified"], "at": _iso(row["transcoded_at"])}
        if row["transcoded_path"] else None,
        "original_kept": not row["original_removed"],
        "retention_until": _iso(row["retention_until"]), "legal_hold_until": _iso(row["legal_hold_until"]),
        "legal_hold_reason": row["legal_hold_reason"], "expired_at": _iso(row["expired_at"]),
        "playable": state in PLAYABLE,
        "audio_url": f"/recordings/{row['id']}/audio", "download_url": f"/recordings/{row['id']}/download",
    }
    if state not in PLAYABLE:
        status, code, message = UNAVAILABLE[state]
        out["unavailable"] = {"status": status, "error": code, "message": message}
    if may_manage:
        out["path"] = row["path"]
    if orders is not None:
        out["orders"] = [{"id": o["order_id"], "order_no": o["order_no"], "order_type": o["order_type"],
                          "status": o["status"], "department": o["department"]} for o in orders]
    return out


async def _audit(request: web.Request, rec_id: int | None, action: str, status: int, detail: str = "") -> None:
    p: Principal = request[principal_key]
    try:
        async with request.app[pool_key].acquire() as conn:
            await repo.audit(conn, recording_id=rec_id, username=p.username, role=p.role.value, action=action,
                             byte_range=request.headers.get("Range", ""), status=status,
                             remote=request.remote or "", detail=detail)
    except Exception:  # the audit must not hide the answer, but it must be loud
        log.exception("recording_audit_failed", recording_id=rec_id, action=action, username=p.username)
        raise


async def _load(request: web.Request, action: str):
    """``(row, None)`` when the principal may have it, else ``(None, response)``
    (denials are audited)."""
    rec_id = _id(request)
    if rec_id is None:
        return None, _error(400, "bad_id", "录音编号无效 / bad recording id")
    p: Principal = request[principal_key]
    async with request.app[pool_key].acquire() as conn:
        row = await repo.get(conn, rec_id)
        facts = await repo.facts(conn, rec_id) if row is not None else None
    if row is None:
        return None, _error(404, "not_found", "没有这条录音 / no such recording")
    allowed = access.may_download(p, facts) if action == "download" else access.may_listen(p, facts)
    if not allowed:
        await _audit(request, rec_id, "denied", 403, detail=action)
        log.warning("recording_access_denied", recording_id=rec_id, username=p.username, role=p.role.value,
                    action=action)
        return None, _error(403, "forbidden", "无权收听此录音 / you may not hear this recording")
    return row, None


@require()
async def get_recording(request: web.Request) -> web.Response:
    row, denied = await _load(request, "metadata")
    if denied is not None:
        return denied
    p = request[principal_key]
    async with request.app[pool_key].acquire() as conn:
        orders = await repo.linked_orders(conn, row["id"])
        scores = await repo.scores_for_recording(conn, row["id"]) if access.may_see_scores(p, row["agent"]) else []
    out = _public_row(row, orders, may_manage=access.may_manage(p))
    out["scores"] = [_score(s) for s in scores]
    out["may_score"] = access.may_score(p)
    return web.json_response(out)


async def _serve(request: web.Request, action: str) -> web.StreamResponse:
    row, denied = await _load(request, action)
    if denied is not None:
        return denied
    rec_id = row["id"]
    state = RecordingState(row["state"])
    settings = request.app[recording_settings_key]
    if state not in PLAYABLE:
        status, code, message = UNAVAILABLE[state]
        await _audit(request, rec_id, "unavailable", status, detail=f"{action}: {state.value}")
        return _error(status, code, message, state=state.value, recording_id=rec_id)
    try:
        if state is RecordingState.TRANSCODED:
            path, rel = settings.copy(row["transcoded_path"]), row["transcoded_path"]
        else:
            path, rel = settings.original(row["path"]), row["path"]
    except UnsafeName:
        await _audit(request, rec_id, "unavailable", 404, detail="bad stored path")
        return _error(404, "missing", UNAVAILABLE[RecordingState.MISSING][2], state="missing")
    if not inside_root(settings.copy_root if state is RecordingState.TRANSCODED else settings.root, path):
        log.error("recording_file_outside_root", recording_id=rec_id, path=rel)
        await _audit(request, rec_id, "unavailable", 404, detail=f"{action}: file leaves the recordings directory")
        return _error(404, "rejected", UNAVAILABLE[RecordingState.REJECTED][2], state="rejected",
                      recording_id=rec_id)
    if not path.is_file():
        log.error("recording_file_vanished", recording_id=rec_id, path=rel)
        async with request.app[pool_key].acquire() as conn:
            await repo.mark_file_missing(conn, rec_id, "文件在播放时不存在 / file not found at playback")
        await _audit(request, rec_id, "unavailable", 404, detail=f"{action}: file vanished")
        return _error(404, "missing", UNAVAILABLE[RecordingState.MISSING][2], state="missing", recording_id=rec_id)
    suffix = path.suffix.lower()
    headers = {"Content-Type": CONTENT_TYPES.get(suffix, "application/octet-stream"),
               "Cache-Control": "private, no-store", "Accept-Ranges": "bytes"}
    if action == "download":
        headers["Content-Disposition"] = f'attachment; filename="recording-{rec_id}{suffix}"'
    username = request[principal_key].username

    async def sent(status: int, _error: BaseException | None) -> None:
        await _audit(request, rec_id, action, status)
        log.info("recording_played" if action == "listen" else "recording_downloaded", recording_id=rec_id,
                 username=username, range=request.headers.get("Range", ""), status=status)

    return _AuditedFileResponse(path, sent, headers=headers)


class _AuditedFileResponse(web.FileResponse):
    """A FileResponse (Range → 206/416, HEAD, sendfile) whose audit row is
    written with the status it answers, before the first byte of audio
    leaves (``on_response_prepare``, see :func:`_audit_before_sending`)."""

    def __init__(self, path: Path, on_sent, **kw: Any) -> None:
        super().__init__(path, **kw)
        self._on_sent = on_sent
        self._audited = False


async def _audit_before_sending(request: web.Request, response: web.StreamResponse) -> None:
    if isinstance(response, _AuditedFileResponse) and not response._audited:
        response._audited = True
        await response._on_sent(response.status, None)


@require()
async def audio(request: web.Request) -> web.StreamResponse:
    return await _serve(request, "listen")


@require()
async def download(request: web.Request) -> web.StreamResponse:
    return await _serve(request, "download")


@require()
async def list_recordings(request: web.Request) -> web.Response:
    p: Principal = request[principal_key]
    q = request.query
    async with request.app[pool_key].acquire() as conn:
        if "order" in q:
            raw = q["order"]
            if not raw.isdigit() or len(raw) > 18:
                return _error(400, "bad_order", "工单号无效 / bad order id")
            rows = await repo.for_order(conn, int(raw))
            visible, hidden = [], 0
            for r in rows:
                facts = await repo.facts(conn, r["id"])
                if access.may_listen(p, facts):
                    visible.append(_public_row(r, may_manage=access.may_manage(p)))
                else:
                    hidden += 1
            return web.json_response({"order_id": int(raw), "recordings": visible, "hidden": hidden})
        agent = q.get("agent") or None
        if agent is not None and not AGENT_RE.match(agent):
            return _error(400, "bad_agent", "坐席工号格式错误 / bad agent id")
        kind, value = access.listing_filter(p)
        rows = await repo.search(conn, kind=kind, value=value, agent=agent)
    return web.json_response({"recordings": [_public_row(r, may_manage=access.may_manage(p)) for r in rows]})


@require(Role.SUPERVISOR)
async def access_log(request: web.Request) -> web.Response:
    rec_id = _id(request)
    if rec_id is None:
        return _error(400, "bad_id", "录音编号无效 / bad recording id")
    async with request.app[pool_key].acquire() as conn:
        rows = await repo.access_log(conn, rec_id)
    return web.json_response([{k: _iso(v) for k, v in dict(r).items()} for r in rows])


@require(Role.SUPERVISOR)
async def legal_hold(request: web.Request) -> web.Response:
    rec_id = _id(request)
    if rec_id is None:
        return _error(400, "bad_id", "录音编号无效 / bad recording id")
    try:
        data = await request.json()
        if not isinstance(data, dict):
            raise ValueError
    except (ValueError, UnicodeDecodeError):
        return _error(400, "bad_json", "请求格式错误 / body must be a JSON object")
    until_raw, reason = data.get("until"), str(data.get("reason") or "").strip()
    until = None
    if until_raw is not None:
        try:
            d = date.fromisoformat(str(until_raw)[:10])
            until = datetime.combine(d, time.max, tzinfo=timezone.utc)
        except ValueError:
            return _error(422, "invalid", "日期格式错误 / until must be YYYY-MM-DD or null",
                          fields={"until": "YYYY-MM-DD"})
    if until is not None and not reason:
        return _error(422, "invalid", "请填写保全原因 / a hold needs a reason", fields={"reason": "required"})
    p = request[principal_key]
    async with request.app[pool_key].acquire() as conn:
        ok = await repo.set_legal_hold(conn, rec_id, until, f"{reason} ({p.username})" if until else "")
    if not ok:
        return _error(404, "not_found", "没有这条录音或已过期 / no such recording, or expired")
    log.info("recording_legal_hold_set", recording_id=rec_id, until=str(until), by=p.username)
    return web.json_response({"id": rec_id, "legal_hold_until": _iso(until)})


def _score(s) -> dict[str, Any]:
    import json

    crit = s["criteria"]
    if isinstance(crit, str):
        crit = json.loads(crit)
    return {"id": s["id"], "recording_id": s["recording_id"], "agent": s["agent"], "supervisor": s["supervisor"],
            "score": s["score"], "comment": s["comment"], "criteria": crit, "created_at": _iso(s["created_at"])}


@require(Role.SUPERVISOR)
async def add_score(request: web.Request) -> web.Response:
    row, denied = await _load(request, "metadata")
    if denied is not None:
        return denied
    try:
        data = await request.json()
    except (ValueError, UnicodeDecodeError):
        return _error(400, "bad_json", "请求格式错误 / body must be JSON")
    try:
        clean = validate_score(data)
    except ScoreInvalid as exc:
        return _error(422, "invalid", "评分不完整 / the score is incomplete", fields=exc.errors)
    if not row["agent"]:
        return _error(409, "no_agent", "这条录音没有坐席,无法评分 / the recording has no agent to score")
    p = request[principal_key]
    async with request.app[pool_key].acquire() as conn:
        s = await repo.add_score(conn, row["id"], agent=row["agent"], supervisor=p.username, score=clean.score,
                                 comment=clean.comment, criteria=clean.criteria)
    log.info("recording_scored", recording_id=row["id"], agent=row["agent"], score=clean.score, by=p.username)
    return web.json_response(_score(s), status=201)


@require()
async def recording_scores(request: web.Request) -> web.Response:
    row, denied = await _load(request, "metadata")
    if denied is not None:
        return denied
    if not access.may_see_scores(request[principal_key], row["agent"]):
        return _error(403, "forbidden", "无权查看评分 / you may not see these scores")
    async with request.app[pool_key].acquire() as conn:
        rows = await repo.scores_for_recording(conn, row["id"])
    return web.json_response([_score(s) for s in rows])


@require(Role.AGENT, Role.SUPERVISOR)
async def agent_scores(request: web.Request) -> web.Response:
    agent = request.match_info["agent"]
    if not AGENT_RE.match(agent):
        return _error(400, "bad_agent", "坐席工号格式错误 / bad agent id")
    if not access.may_see_scores(request[principal_key], agent):
        return _error(403, "forbidden", "只能查看本人评分 / agents see their own scores only")
    since = None
    if request.query.get("since"):
        try:
            since = datetime.combine(date.fromisoformat(request.query["since"]), time.min, tzinfo=timezone.utc)
        except ValueError:
            return _error(400, "bad_since", "日期格式错误 / since must be YYYY-MM-DD")
    async with request.app[pool_key].acquire() as conn:
        rows = await repo.scores_for_agent(conn, agent, since=since)
        trend = await repo.score_trend(conn, agent)
    scores = [{**_score(r), "queue": r["queue"], "linkedid": r["linkedid"],
               "call_started_at": _iso(r["call_started_at"]), "duration_s": r["duration_s"]} for r in rows]
    avg = round(sum(s["score"] for s in scores) / len(scores), 1) if scores else None
    return web.json_response({"agent": agent, "count": len(scores), "average": avg, "scores": scores,
                              "by_month": [dict(t) for t in trend], "criteria": SCORE_CRITERIA})


@require()
async def recordings_page(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC / "recordings.html")


@require(Role.AGENT, Role.SUPERVISOR)
async def quality_page(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC / "quality.html")


def add_recording_routes(app: web.Application, settings: RecordingSettings) -> None:
    app[recording_settings_key] = settings
    app.on_response_prepare.append(_audit_before_sending)
    r = app.router
    r.add_get("/api/recordings", list_recordings)
    r.add_get("/api/recordings/{rec_id}", get_recording)
    r.add_get("/api/recordings/{rec_id}/access-log", access_log)
    r.add_put("/api/recordings/{rec_id}/legal-hold", legal_hold)
    r.add_post("/api/recordings/{rec_id}/scores", add_score)
    r.add_get("/api/recordings/{rec_id}/scores", recording_scores)
    r.add_get("/api/agents/{agent}/scores", agent_scores)
    r.add_get("/recordings/{rec_id}/audio", audio)
    r.add_get("/recordings/{rec_id}/download", download)
    r.add_get("/recordings", recordings_page)
    r.add_get("/quality", quality_page)
    r.add_static("/recordings-static/", STATIC)

"""History reports over HTTP: a report is computed as an in-memory job with
a progress counter; the page polls it and then shows the tables and the
CSV / XLSX download links.

::

    GET  /reports                       the page (supervisors)
    POST /api/reports                   {"kind": "day|month|quarter|year", "period": "2026-03"} → 202 job
    GET  /api/reports/{id}              {"state", "done", "total", "progress", "step", "report"?}
    GET  /api/reports/{id}/csv          UTF-8 with BOM
    GET  /api/reports/{id}/xlsx

Errors are ``{"error": code, "message": "中文 / English"}``.
"""
from __future__ import annotations

import asyncio
import json
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote

from aiohttp import web

from cti.auth import Role, principal_key, require
from cti.logs import get_logger
from cti.http import json_error as _error

from . import reports as r
from .metrics import SHANGHAI
from .report_export import to_xlsx
from .report_repo import compute_report

log = get_logger("hotline.reports")

STATIC = Path(__file__).resolve().parent.parent / "cti" / "static"
MAX_JOBS = 32  # finished jobs kept (oldest dropped first)
MAX_RUNNING = 2  # reports computed at once; more wait their turn
JOB_TTL_S = 3600


@dataclass
class ReportJob:
    id: str
    period: r.Period
    owner: str
    state: str = "queued"  # queued / running / done / failed
    done: int = 0
    total: int = 0
    step: str = ""
    error: str = ""
    created: float = field(default_factory=time.time)
    finished: float | None = None
    report: r.Report | None = None
    task: asyncio.Task | None = None

    def to_dict(self, *, with_report: bool = True) -> dict[str, Any]:
        d: dict[str, Any] = {
            "id": self.id, "kind": self.period.kind, "period": self.period.key, "label": self.period.label,
            "state": self.state, "done": self.done, "total": self.total,
            "progress": (self.done / self.total) if self.total else 0.0, "step": self.step,
            "error": self.error}
        if self.state == "done":
            d["csv_url"] = f"/api/reports/{self.id}/csv"
            d["xlsx_url"] = f"/api/reports/{self.id}/xlsx"
            if with_report and self.report is not None:
                d["report"] = self.report.to_dict()
        return d


class ReportJobs:
    """The running and recent report jobs of this process."""

    def __init__(self, get_pool: Callable[[], Any], threshold_s: float, *,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
                 max_running: int = MAX_RUNNING) -> None:
        self.get_pool = get_pool
        self.threshold_s = threshold_s
        self.clock = clock
        self.jobs: dict[str, ReportJob] = {}
        self._slots = asyncio.Semaphore(max_running)

    def get(self, job_id: str) -> ReportJob | None:
        return self.jobs.get(job_id)

    def start(self, period: r.Period, owner: str = "") -> ReportJob:
        self._prune()
        job = ReportJob(secrets.token_urlsafe(12), period, owner)
        self.jobs[job.id] = job
        job.task = asyncio.get_running_loop().create_task(self._run(job), name=f"report-{job.id}")
        return job

    async def _run(self, job: ReportJob) -> None:
        async with self._slots:
            job.state = "running"
            t0 = time.perf_counter()

            def progress(done: int, total: int, step: str) -> None:
                job.done, job.total, job.step = done, total, step

            try:
                job.report = await compute_report(self.get_pool(), job.period, now=self.clock(),
                                                  threshold_s=self.threshold_s, progress=progress)
                job.state = "done"
                log.info("report_done", kind=job.period.kind, period=job.period.key,
                         elapsed_s=round(time.perf_counter() - t0, 3))
            except asyncio.CancelledError:
                job.state, job.error = "failed", "cancelled"
                raise
            except Exception as exc:  # noqa: BLE001 -- shown on the page, logged in full
                job.state = "failed"
                job.error = "报表生成失败 / report failed"
                log.exception("report_failed", kind=job.period.kind, period=job.period.key,
                              error=f"{type(exc).__name__}: {exc}"[:300])
            finally:
                job.finished = time.time()

    def _prune(self) -> None:
        now = time.time()
        for jid, j in list(self.jobs.items()):
            if j.finished is not None and now - j.finished > JOB_TTL_S:
                del self.jobs[jid]
        finished = sorted((j for j in self.jobs.values() if j.finished is not None), key=lambda j: j.finished)
        while len(self.jobs) >= MAX_JOBS and finished:
            del self.jobs[finished.pop(0).id]

    async def close(self) -> None:
        tasks = [j.task for j in self.jobs.values() if j.task is not None and not j.task.done()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


report_jobs_key = web.AppKey("report_jobs", ReportJobs)



def _dumps(o: Any) -> str:
    return json.dumps(o, ensure_ascii=False, default=str)


@require(Role.SUPERVISOR)
async def reports_page(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC / "reports.html")


@require(Role.SUPERVISOR)
async def start_report(request: web.Request) -> web.Response:
    try:
        data = await request.json()
    except (ValueError, UnicodeDecodeError):
        return _error(400, "bad_json", "请求须为 JSON / body must be JSON")
    if not isinstance(data, dict):
        return _error(400, "bad_json", "请求须为 JSON 对象 / body must be a JSON object")
    kind = str(data.get("kind") or "")
    value = str(data.get("period") or "")[:20]
    try:
        period = (r.parse_period(kind, value) if value or kind not in r.KINDS
                  else r.current_period(kind, datetime.now(SHANGHAI).date()))
    except r.PeriodError as exc:
        return _error(422, "invalid_period", str(exc))
    principal = request.get(principal_key)
    job = request.app[report_jobs_key].start(period, principal.username if principal else "")
    return web.json_response(job.to_dict(), status=202, dumps=_dumps)


def _job(request: web.Request) -> ReportJob:
    job = request.app[report_jobs_key].get(request.match_info["job_id"])
    if job is None:
        raise web.HTTPNotFound(text=_dumps({"error": "not_found", "message": "报表不存在或已过期 / no such report"}),
                               content_type="application/json")
    return job


@require(Role.SUPERVISOR)
async def report_status(request: web.Request) -> web.Response:
    return web.json_response(_job(request).to_dict(), dumps=_dumps, headers={"Cache-Control": "no-store"})


def _download(job: ReportJob, body: bytes, ext: str, content_type: str) -> web.Response:
    assert job.report is not None
    name = job.report.filename(ext)
    zh = f"966022热线报表-{job.period.label}.{ext}"
    return web.Response(body=body, content_type=content_type, headers={
        "Content-Disposition": f"attachment; filename=\"{name}\"; filename*=UTF-8''{quote(zh)}",
        "Cache-Control": "no-store"})


def _finished(job: ReportJob) -> web.Response | None:
    if job.state != "done" or job.report is None:
        return _error(409, "not_ready", "报表尚未生成完成 / the report is not ready yet")
    return None


@require(Role.SUPERVISOR)
async def report_csv(request: web.Request) -> web.Response:
    job = _job(request)
    if (bad := _finished(job)) is not None:
        return bad
    resp = _download(job, r.to_csv(job.report), "csv", "text/csv")
    resp.charset = "utf-8"
    return resp


@require(Role.SUPERVISOR)
async def report_xlsx(request: web.Request) -> web.Response:
    job = _job(request)
    if (bad := _finished(job)) is not None:
        return bad
    body = await asyncio.get_running_loop().run_in_executor(None, to_xlsx, job.report)
    return _download(job, body, "xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")


def add_report_routes(app: web.Application, *, get_pool: Callable[[], Any], threshold_s: float) -> ReportJobs:
    jobs = ReportJobs(get_pool, threshold_s)
    app[report_jobs_key] = jobs
    app.router.add_get("/reports", reports_page)
    app.router.add_post("/api/reports", start_report)
    app.router.add_get("/api/reports/{job_id}", report_status)
    app.router.add_get("/api/reports/{job_id}/csv", report_csv)
    app.router.add_get("/api/reports/{job_id}/xlsx", report_xlsx)

    async def close_jobs(app: web.Application) -> None:
        await jobs.close()

    app.on_shutdown.append(close_jobs)
    return jobs


__all__ = ["ReportJob", "ReportJobs", "add_report_routes", "report_jobs_key"]

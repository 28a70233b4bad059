"""``GET /metrics``: queue gauges and service counters for Prometheus.

Gauges are "now" (callers waiting, longest wait, agents by state, surge
mode) and "today" (the wallboard's tallies, which restart at 00:00 Beijing
time).  Counters (``*_total``) only grow while the process lives: calls
offered / answered / abandoned seen since start, AMI frames and errors,
screen-pops, work-order callbacks requested from the IVR.
"""
from __future__ import annotations

from typing import Any

from aiohttp import web

from cti.auth import Role, bearer_token_allowed, require

from .model import AgentState
from .prometheus import CONTENT_TYPE, Family, render
from .routes import wallboard_key


def collect(snapshot: dict[str, Any], lifetime, ami_stats: dict[str, int] | None,
            pipeline_stats: Any = None, screenpops: tuple[int, int] | None = None,
            callbacks_total: int = 0, ami_connected: bool | None = None) -> list[Family]:
    waiting = Family("hotline_queue_waiting_callers", "gauge", "Callers waiting in the queue now")
    longest = Family("hotline_queue_longest_wait_seconds", "gauge", "Longest wait of a caller waiting now")
    agents = Family("hotline_queue_agents", "gauge", "Queue members by state now")
    today = {k: Family(f"hotline_queue_today_{k}", "gauge", h) for k, h in (
        ("offered", "Calls offered to the queue today (Asia/Shanghai day)"),
        ("answered", "Calls answered by an agent today"),
        ("abandoned", "Calls abandoned while queued today"))}
    sl = Family("hotline_queue_today_service_level_ratio", "gauge",
                "Answered within the threshold / (answered + abandoned + exited), today")
    ans_rate = Family("hotline_queue_today_answer_ratio", "gauge", "Answered / offered today (manual answer rate)")
    for q in snapshot["queues"]:
        name = q["name"]
        waiting.add(q["waiting"], queue=name)
        longest.add(float(q["longest_wait_s"]), queue=name)
        for state in AgentState:
            agents.add(q["agents"].get(state.value, 0), queue=name, state=state.value)
        f = q["figures"]
        for k, fam in today.items():
            fam.add(f[k], queue=name)
        if f["service_level"] is not None:
            sl.add(float(f["service_level"]), queue=name)
        if f["answer_rate"] is not None:
            ans_rate.add(float(f["answer_rate"]), queue=name)
    counters = {k: Family(f"hotline_queue_calls_{k}_total", "counter", h) for k, h in (
        ("offered", "Calls offered to the queue since the service started"),
        ("answered", "Calls answered by an agent since the service started"),
        ("abandoned", "Calls abandoned while queued since the service started"))}
    names = [q["name"] for q in snapshot["queues"]]
    for k, fam in counters.items():
        d = getattr(lifetime, k)
        for name in names + sorted(set(d) - set(names)):
            fam.add(d.get(name, 0), queue=name)
    surge = Family("hotline_surge_active", "gauge", "1 while surge mode is on (callback offered in the IVR)")
    surge.add(1 if snapshot["surge"]["active"] else 0, mode=snapshot["surge"]["mode"])
    fams = [waiting, longest, agents, *today.values(), sl, ans_rate, *counters.values(), surge,
            Family("hotline_ivr_callbacks_requested_total", "counter",
                   "Callback requests made in the IVR during surge mode").add(callbacks_total)]
    if ami_stats is not None:
        fams.append(Family("hotline_ami_frames_total", "counter", "AMI frames read").add(ami_stats["frames"]))
        err = Family("hotline_ami_errors_total", "counter", "AMI errors by kind")
        for kind in ("action_errors", "action_timeouts", "actions_disconnected", "oversized", "bad_lines",
                     "reader_failures", "ping_timeouts", "sink_errors"):
            err.add(ami_stats.get(kind, 0), kind=kind)
        fams.append(err)
        fams.append(Family("hotline_ami_actions_sent_total", "counter", "AMI actions sent")
                    .add(ami_stats.get("actions_sent", 0)))
    if ami_connected is not None:
        fams.append(Family("hotline_ami_up", "gauge", "1 while logged in to the AMI").add(1 if ami_connected else 0))
    if pipeline_stats is not None:
        fams.append(Family("hotline_pipeline_events_total", "counter", "Domain events processed")
                    .add(pipeline_stats.events))
        fams.append(Family("hotline_pipeline_handler_errors_total", "counter", "Call handlers that raised")
                    .add(pipeline_stats.handler_errors))
    if screenpops is not None:
        fams.append(Family("hotline_screenpops_total", "counter", "Screen-pops sent to agent pages")
                    .add(screenpops[0]))
        fams.append(Family("hotline_screenpop_failures_total", "counter", "Screen-pops that failed")
                    .add(screenpops[1]))
    return fams


def metrics_handler(get_manager, get_pipeline, get_screenpop):
    @require(Role.SUPERVISOR)  # or the HOTLINE_METRICS_TOKEN bearer token (Prometheus)
    @bearer_token_allowed
    async def metrics(request: web.Request) -> web.Response:
        svc = request.app[wallboard_key]
        manager = get_manager(request.app)
        pipeline = get_pipeline(request.app)
        screenpop = get_screenpop(request.app)
        fams = collect(svc.snapshot(), svc.board.lifetime,
                       manager.stats.as_dict() if manager is not None else None,
                       pipeline.stats if pipeline is not None else None,
                       (screenpop.pops, screenpop.failures) if screenpop is not None else None,
                       svc.callbacks_total, manager.state == "logged_in" if manager is not None else None)
        return web.Response(body=render(fams).encode("utf-8"), headers={"Content-Type": CONTENT_TYPE})
    return metrics


__all__ = ["collect", "metrics_handler"]

"""Composition helpers for :mod:`cti.app`: the wallboard's routes, its
cleanup context, the IVR's surge hooks and ``/metrics``."""
from __future__ import annotations

from typing import Any

from aiohttp import web

from cti.live import LiveModel
from cti.logs import get_logger

from .callbacks import ivr_hooks
from .live import QueueBoard
from .metrics import local_day
from .metrics_http import metrics_handler
from .model import parse_wrapup, surge_settings_of
from .routes import add_wallboard_routes, wallboard_key
from .service import WallboardService

log = get_logger("hotline.wallboard")


def install_wallboard(app: web.Application, cfg: Any, *, services_key, pool_key, hub_key, status_key,
                      pipeline_key, manager_key):
    """Add the routes; return the cleanup context that builds the service
    (put it after the pipeline and before the AMI context, which calls
    ``app[services_key]["wallboard"].attach(manager, resync.live)``)."""
    add_wallboard_routes(app)
    app.router.add_get("/metrics", metrics_handler(
        lambda a: a.get(manager_key), lambda a: a.get(pipeline_key),
        lambda a: a[services_key].get("screenpop")))

    async def wallboard_ctx(app: web.Application):
        board = QueueBoard(LiveModel(), sl_threshold_s=cfg.sl_threshold_s,
                           wrapup_s=parse_wrapup(cfg.queue_wrapup_s))
        svc = WallboardService(board, app[hub_key], surge=surge_settings_of(cfg), status=app[status_key])
        try:  # today's figures survive a restart: seed them from the call records
            from .repository import day_tallies

            async with app[pool_key].acquire() as conn:
                board.seed(board.day, await day_tallies(conn, local_day(board.clock()), cfg.sl_threshold_s))
        except Exception as exc:  # the wallboard still starts, from zero
            log.warning("wallboard_seed_failed", error=f"{type(exc).__name__}: {exc}")
        app[wallboard_key] = svc
        app[services_key]["wallboard"] = svc
        svc.start()
        yield
        await svc.stop()

    return wallboard_ctx


def ivr_surge_hooks(app: web.Application, *, services_key, pool_key) -> dict[str, Any]:
    """``surge_active`` / ``on_callback`` keyword arguments for ``start_agi_server``."""
    surge_active, on_callback = ivr_hooks(lambda: app[pool_key], lambda: app[services_key].get("wallboard"))
    return {"surge_active": surge_active, "on_callback": on_callback}


__all__ = ["install_wallboard", "ivr_surge_hooks"]

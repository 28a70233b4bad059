"""Composition helper for :mod:`cti.app`: the recordings' routes, the
pipeline handler that indexes MixMonitor files, and the background worker
(transcoding, retention, index recovery)."""
from __future__ import annotations

import os
import time
from dataclasses import replace
from typing import Any, Callable

from aiohttp import web

from cti.logs import get_logger

from .routes import add_recording_routes
from .service import RecordingIndexer, RecordingWorker, settings_from_config

log = get_logger("hotline.recordings")


class BusyGauge:
    """Is the hotline busy?  True while the call pipeline has a backlog or has
    handled more than ``events_per_s`` AMI events a second since the last
    look (a storm: about 45 events a call, so the default 450 is ~10 new
    calls a second).  The recording worker defers transcoding meanwhile."""

    def __init__(self, events: Callable[[], int], backlog: Callable[[], int], *,
                 events_per_s: float = 450.0, max_backlog: int = 100,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.events, self.backlog, self.clock = events, backlog, clock
        self.events_per_s, self.max_backlog = events_per_s, max_backlog
        self._t = clock()
        self._n = events()
        self.rate = 0.0

    def __call__(self) -> bool:
        now, n = self.clock(), self.events()
        if now - self._t >= 1.0 or n < self._n:
            self.rate = max(0, n - self._n) / max(now - self._t, 1e-9)
            self._t, self._n = now, n
        return self.backlog() > self.max_backlog or self.rate > self.events_per_s


def install_recordings(app: web.Application, cfg: Any, *, services_key, pool_key, pipeline_key,
                       **worker_options: Any):
    """Add the routes; return the cleanup context (put it after the pipeline
    context and before the AMI context)."""
    settings = settings_from_config(cfg)
    settings = replace(settings, root=os.path.abspath(settings.root))
    add_recording_routes(app, settings)

    async def recordings_ctx(app: web.Application):
        pool = app[pool_key]
        pipeline = app[pipeline_key]
        if "busy" not in worker_options:
            worker_options["busy"] = BusyGauge(lambda: pipeline.stats.events, pipeline.backlog)
        worker = RecordingWorker(pool, settings, **worker_options)
        indexer = RecordingIndexer(pool, settings, on_indexed=worker.wake)
        pipeline.add_handler(indexer)
        app[services_key]["recording_indexer"] = indexer
        app[services_key]["recording_worker"] = worker
        if not os.path.isdir(settings.root):
            log.warning("recordings_dir_missing", root=settings.root)
        worker.start()
        yield
        await worker.stop()
        await indexer.close()

    return recordings_ctx


__all__ = ["BusyGauge", "install_recordings"]

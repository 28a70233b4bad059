"""Composition helper for :mod:`cti.app`: the recordings' routes, the
pipeline handler that indexes MixMonitor files, and the background worker
(transcoding, retention, index recovery)."""
from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

from aiohttp import web

from cti.logs import get_logger

from .routes import add_recording_routes
from .service import RecordingIndexer, RecordingWorker, settings_from_config

log = get_logger("hotline.recordings")


def install_recordings(app: web.Application, cfg: Any, *, services_key, pool_key, pipeline_key,
                       **worker_options: Any):
    """Add the routes; return the cleanup context (put it after the pipeline
    context and before the AMI context)."""
    settings = settings_from_config(cfg)
    settings = replace(settings, root=os.path.abspath(settings.root))
    add_recording_routes(app, settings)

    async def recordings_ctx(app: web.Application):
        pool = app[pool_key]
        worker = RecordingWorker(pool, settings, **worker_options)
        indexer = RecordingIndexer(pool, settings, on_indexed=worker.wake)
        app[pipeline_key].add_handler(indexer)
        app[services_key]["recording_indexer"] = indexer
        app[services_key]["recording_worker"] = worker
        if not os.path.isdir(settings.root):
            log.warning("recordings_dir_missing", root=settings.root)
        worker.start()
        yield
        await worker.stop()
        await indexer.close()

    return recordings_ctx


__all__ = ["install_recordings"]

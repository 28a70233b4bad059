"""Start the whole service (embedded test PostgreSQL, the PBX simulator over
real TCP, the aiohttp app on a free port) for end-to-end tests."""
from __future__ import annotations

import asyncio
import contextlib
import tempfile
from dataclasses import replace

from aiohttp import web

from cti.app import DemoOptions, build_app, demo_config, manager_key, pipeline_key, services_key
from cti.config import load_config


@contextlib.asynccontextmanager
async def running_service(db_url: str, **overrides):
    overrides.setdefault("state_dir", tempfile.mkdtemp(prefix="hotline-svc-"))
    cfg = demo_config(load_config(env={}, http_port=0, sim_speed=20.0, **overrides))
    app = build_app(cfg, demo=DemoOptions(traffic=False), dsn=db_url)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    manager = app[manager_key]
    for _ in range(200):  # wait for the AMI login
        if manager.state == "logged_in":
            break
        await asyncio.sleep(0.02)
    assert manager.state == "logged_in", manager.state
    try:
        yield Service(app, f"http://127.0.0.1:{port}")
    finally:
        await runner.cleanup()


class Service:
    def __init__(self, app: web.Application, base_url: str):
        self.app = app
        self.base_url = base_url

    @property
    def simulator(self):
        return self.app[services_key]["simulator"]

    @property
    def pipeline(self):
        return self.app[pipeline_key]

    @property
    def screenpop(self):
        return self.app[services_key]["screenpop"]

"""Start the whole service (embedded test PostgreSQL, the PBX simulator over
real TCP, the aiohttp app on a free port) for end-to-end tests."""
from __future__ import annotations

import asyncio
import contextlib
import tempfile
from dataclasses import replace

from aiohttp import web

from cti.app import DemoOptions, build_app, demo_config, manager_key, pipeline_key, services_key
from cti.auth import COOKIE, DEMO_DEPARTMENTS, AuthStore, Role, auth_store_key, install_auth, make_hasher
from cti.config import load_config


@contextlib.asynccontextmanager
async def running_service(db_url: str, **overrides):
    overrides.setdefault("state_dir", tempfile.mkdtemp(prefix="hotline-svc-"))
    cfg = demo_config(load_config(env={}, http_port=0, sim_speed=20.0, **overrides))
    app = build_app(cfg, demo=DemoOptions(traffic=False, accounts=False), dsn=db_url)
    app[auth_store_key].hasher = make_hasher(cheap=True)  # tests: argon2id at a small cost
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


def account_for(username: str, role: Role | str | None = None, agent_id: str | None = None,
                department: str | None = None) -> tuple[Role, str, str]:
    """Role, agent id and department from a test username: ``agent1001``,
    ``supervisor``, ``admin``, ``qiangxiu`` (抢修班) / ``yingye`` (供电营业所),
    ``dept…`` (pass ``department=``); or say it with the keywords."""
    if role is None:
        if username.startswith("agent"):
            role = Role.AGENT
        elif username.startswith("admin"):
            role = Role.ADMIN
        elif username in DEMO_DEPARTMENTS or username.startswith("dept") or department:
            role = Role.DEPARTMENT
        else:
            role = Role.SUPERVISOR
    role = Role(role)
    if role is Role.AGENT and not agent_id:
        agent_id = username.removeprefix("agent") or "1001"
    if role is Role.DEPARTMENT and not department:
        department = DEMO_DEPARTMENTS.get(username, "抢修班")
    return role, agent_id or "", department or ""


def password_for(username: str) -> str:
    return f"pw-{username}-0123456789"


class AuthHelper:
    """Log test clients in: users are created on the fly (role from the name,
    see :func:`account_for`)."""

    def __init__(self, base_url: str, store: AuthStore):
        self.base_url = base_url
        self.store = store
        self._made: set[str] = set()

    async def user(self, username: str, **kw) -> str:
        if username not in self._made:
            role, agent_id, department = account_for(username, **kw)
            await self.store.create_user(username, password_for(username), role, agent_id=agent_id,
                                         department=department, display_name=username, replace=True)
            self._made.add(username)
        return password_for(username)

    async def login(self, session, username: str = "supervisor", **kw) -> str:
        """Log an ``aiohttp.ClientSession`` (or a ``TestClient``) in; the
        session then sends the cookie and the CSRF header on every request
        (and websocket).  Returns the CSRF token."""
        password = await self.user(username, **kw)
        http = getattr(session, "session", session)  # TestClient wraps a ClientSession
        for h in ("Cookie", "X-CSRF-Token"):
            http.headers.popall(h, None)
        url = session.make_url("/api/login") if hasattr(session, "make_url") else self.base_url + "/api/login"
        async with http.post(url, json={"username": username, "password": password}) as r:
            body = await r.json()
            assert r.status == 200, body
            token = r.cookies[COOKIE].value
        http.headers["Cookie"] = f"{COOKIE}={token}"
        http.headers["X-CSRF-Token"] = body["csrf_token"]
        return body["csrf_token"]

    async def login_page(self, page, username: str = "supervisor", **kw) -> None:
        """Log a Playwright page in through the real login form."""
        password = await self.user(username, **kw)
        await page.goto(self.base_url + "/login")
        await page.fill("#username", username)
        await page.fill("#password", password)
        async with page.expect_navigation():
            await page.click("#login-submit")
        assert "/login" not in page.url, page.url


def auth_for_app(app: web.Application, pool, base_url: str = "") -> AuthHelper:
    """For tests that build their own app: install the auth middleware and
    routes (call before the app starts) and return a helper to log in."""
    store = install_auth(app, lambda: pool, hasher=make_hasher(cheap=True))
    return AuthHelper(base_url, store)


async def login_page(page, svc, username: str = "supervisor", **kw) -> None:
    await svc.auth.login_page(page, username, **kw)


async def until(pred, timeout: float = 10.0, step: float = 0.02) -> bool:
    """Wait for a condition (never a fixed sleep as an assertion)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while loop.time() < end:
        if pred():
            return True
        await asyncio.sleep(step)
    return pred()


class Service:
    def __init__(self, app: web.Application, base_url: str):
        self.app = app
        self.base_url = base_url
        self.auth = AuthHelper(base_url, app[auth_store_key])

    async def login(self, session, username: str = "supervisor", **kw) -> str:
        return await self.auth.login(session, username, **kw)

    @property
    def simulator(self):
        return self.app[services_key]["simulator"]

    @property
    def pipeline(self):
        return self.app[pipeline_key]

    @property
    def screenpop(self):
        return self.app[services_key]["screenpop"]


class Inbox:
    """An agent page's websocket, read by message type: messages of other
    types wait in the inbox for a later ``next()``, none is lost."""

    def __init__(self, ws) -> None:
        self.ws = ws
        self.kept: list[dict] = []

    async def next(self, *kinds: str, timeout: float = 10.0, where=None) -> dict:
        import json

        import aiohttp

        for i, m in enumerate(self.kept):
            if m["type"] in kinds and (where is None or where(m)):
                return self.kept.pop(i)
        while True:
            msg = await asyncio.wait_for(self.ws.receive(), timeout)
            assert msg.type == aiohttp.WSMsgType.TEXT, msg
            data = json.loads(msg.data)
            if data["type"] in kinds and (where is None or where(data)):
                return data
            self.kept.append(data)

    async def pop(self, timeout: float = 10.0) -> dict:
        """The next screen-pop as the agent ends up with it: the screen_pop
        frame (customer, recent orders, the pre-filled provisional order),
        completed by its screen_pop_update once the draft is written."""
        pop = await self.next("screen_pop", timeout=timeout)
        if not pop.get("order_pending"):
            return pop
        update = await self.next("screen_pop_update", timeout=timeout,
                                 where=lambda m: m["linkedid"] == pop["linkedid"])
        assert update["pop"]["type"] == "screen_pop" and update["order"] == update["pop"]["order"]
        return update["pop"]


def screenpop_keeping_sent(pool):
    """A screen-pop service (cti.screenpop) whose hub keeps what it would
    send to the agents' sockets, in order: ``(service, sent)``."""
    from cti.hub import Hub
    from cti.screenpop import ScreenPopService

    hub = Hub()
    sent: list[dict] = []
    hub.publish = lambda topic, message: sent.append(message) or 1  # type: ignore[method-assign]

    async def publish_now(topic, message):
        sent.append(message)
        return 1

    hub.publish_now = publish_now  # type: ignore[method-assign]
    return ScreenPopService(pool, hub), sent


async def next_message(ws, kind: str, timeout: float = 10.0) -> dict:
    """The next message of ``kind`` on ``ws`` (others are skipped)."""
    return await Inbox(ws).next(kind, timeout=timeout)


async def next_pop(ws, timeout: float = 10.0) -> dict:
    """:meth:`Inbox.pop` for a test that reads nothing else from ``ws``."""
    return await Inbox(ws).pop(timeout)


@contextlib.asynccontextmanager
async def resyncing_manager(sim):
    """A started call pipeline and an AMI manager with resync, logged in to
    the (started) simulator ``sim`` and resynced once: ``(manager, pipeline,
    resync)``; all stopped afterwards (the simulator is the caller's)."""
    from cti.ami import Backoff, HotlineManager
    from cti.pipeline import CallPipeline
    from cti.resync import install_resync

    pipeline = CallPipeline()
    pipeline.start()
    m = HotlineManager(frame_sink=pipeline.feed, host="127.0.0.1", port=sim.port, username="u", secret="s",
                       backoff=Backoff(0.05, 0.2), ping_delay=3600)
    m.loop = asyncio.get_running_loop()
    resync = install_resync(m, pipeline)
    m.connect()
    try:
        assert await until(lambda: m.state == "logged_in" and resync.runs >= 1)
        yield m, pipeline, resync
    finally:
        m.close()
        await pipeline.stop()
        await resync.close()

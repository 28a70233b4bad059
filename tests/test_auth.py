"""Accounts and roles: deny by default, the role matrix over HTTP and
websocket, CSRF, login rate limiting, session expiry and logout, request
limits and clear 4xx errors, the create-user command and demo accounts."""
from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote, unquote

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from cti.app import build_app
from cti.auth import (
    COOKIE, AuthStore, Principal, Role, TooManyAttempts, auth_rule, auth_store_key, create_demo_accounts, make_hasher,
    route_rule, undecorated_routes,
)
from cti.config import load_config
from cti.db import create_pool

from .harness import auth_for_app, password_for, running_service

ROOT = Path(__file__).resolve().parent.parent

A, S, D = "agent1001", "supervisor", "qiangxiu"   # qiangxiu = 抢修班
ALL = {A, S, D}
Q_DEPT, Y_DEPT = quote("抢修班", safe=""), quote("供电营业所", safe="")

# (method, path, roles allowed besides admin).  Admin passes everywhere.
MATRIX: list[tuple[str, str, set[str]]] = [
    ("GET", "/", ALL),
    ("GET", "/agent/1001", {A, S}),
    ("GET", "/agent/1002", {S}),            # an agent has only their own desk
    ("WS", "/ws/agent/1001", {A, S}),
    ("WS", "/ws/agent/1002", {S}),          # ... and only their own screen-pops
    ("GET", "/api/orders?agent=1001", {A, S}),
    ("GET", "/api/orders", {S}),
    ("GET", "/api/orders/999999", {A, S}),
    ("POST", "/api/orders/999999", {A, S}),
    ("GET", "/api/order-types", ALL),
    ("GET", "/api/me", ALL),
    ("GET", "/outages", ALL),
    ("GET", "/api/outages", ALL),
    ("GET", "/api/outages/TD20990101-0001", ALL),
    ("POST", "/api/outages", {S, D}),
    ("POST", "/api/outages/999999/restoration", {S, D}),
    ("POST", "/api/outages/999999/restore", {S, D}),
    ("POST", "/api/outages/999999/cancel", {S, D}),
    ("GET", "/api/tickets/meta", ALL),
    ("GET", "/api/tickets/categories", ALL),
    ("GET", "/api/tickets/departments", ALL),
    ("GET", "/api/tickets/orders", ALL),
    ("GET", "/api/tickets/orders/999999", ALL),
    ("GET", "/api/tickets/orders/999999/events", ALL),
    ("GET", "/api/tickets/orders/999999/callers", ALL),
    ("POST", "/api/tickets/orders/999999/accept", {A, S}),
    ("POST", "/api/tickets/orders/999999/crew-report", ALL),
    ("POST", "/api/tickets/orders/999999/dispatch", {A, S}),
    ("POST", "/api/tickets/orders/999999/start", {S, D}),
    ("POST", "/api/tickets/orders/999999/feedback", {S, D}),
    ("POST", "/api/tickets/orders/999999/callback", {A, S}),
    ("POST", "/api/tickets/orders/999999/appeal-decide", {S}),
    ("GET", "/api/tickets/known-faults?transformer_area=x", ALL),
    ("GET", "/api/tickets/callbacks", {A, S}),
    ("GET", "/api/tickets/deadlines", ALL),
    ("GET", f"/api/tickets/departments/{Q_DEPT}/inbox", {S, D}),
    ("GET", f"/api/tickets/departments/{Y_DEPT}/inbox", {S}),   # not the department's own
    ("GET", "/api/tickets/load", {A, S}),
    ("PUT", "/api/tickets/load", {S}),
    ("GET", "/api/tickets/stats/arrival", {S}),
    ("GET", "/api/tickets/stats/complaints", {S}),
    ("GET", "/api/tickets/knowledge", ALL),
    ("GET", "/api/tickets/knowledge/no-such-article", ALL),
    ("GET", "/orders", ALL),
    ("GET", "/orders/999999", ALL),
    ("GET", "/callbacks", {A, S}),
    ("GET", "/department", {S, D}),
    ("GET", f"/department/{Q_DEPT}", {S, D}),
    ("GET", f"/department/{Y_DEPT}", {S}),
    ("GET", "/knowledge", ALL),
    ("GET", "/wallboard", {S}),
    ("WS", "/ws/wallboard", {S}),
    ("GET", "/api/wallboard", {S}),
    ("POST", "/api/wallboard/pause", {S}),
    ("POST", "/api/wallboard/login", {S}),
    ("POST", "/api/wallboard/logout", {S}),
    ("POST", "/api/wallboard/surge", {S}),
    ("GET", "/metrics", {S}),
    ("GET", "/api/ivr/prompts", {S}),
]
PUBLIC = {("GET", "/login"), ("POST", "/login"), ("POST", "/api/login"), ("GET", "/health")}


def _app():
    return build_app(load_config(env={}))


def test_every_route_of_the_real_app_has_an_access_rule():
    app = _app()
    assert undecorated_routes(app) == [], "every handler needs @require(...) or @public"
    public = {(r.method, r.resource.canonical) for r in app.router.routes()
              if route_rule(r) == "public" and not isinstance(r.resource, web.StaticResource)
              and r.method != "HEAD"}
    assert public == PUBLIC, "only the login page and the health check are public"


def test_the_matrix_names_real_routes():
    app = _app()
    for method, path, _ in MATRIX:
        m = "GET" if method == "WS" else method
        bare = unquote(path.split("?")[0])
        assert any(r.method == m and re.fullmatch(re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(r.resource.canonical)), bare)
                   for r in app.router.routes() if not isinstance(r.resource, web.StaticResource)), (method, path)


async def _status(http, base, method, path) -> int | str:
    if method == "WS":
        try:
            async with http.ws_connect(base + path) as ws:
                await ws.close()
                return 101
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status
    kw = {"json": {}} if method in ("POST", "PUT") else {}
    async with http.request(method, base + path, allow_redirects=False, **kw) as r:
        if r.status == 302:
            return "login" if r.headers["Location"].startswith("/login") else 302
        return r.status


def _denied(status) -> bool:
    return status in (401, 403, "login")


@pytest.mark.parametrize("user", [A, S, D, "admin"])
async def test_role_matrix_over_http_and_websocket(db_url, user):
    async with running_service(db_url) as svc, aiohttp.ClientSession() as http:
        await svc.login(http, user)
        wrong = []
        for method, path, allowed in MATRIX:
            status = await _status(http, svc.base_url, method, path)
            expect_allowed = user == "admin" or user in allowed
            if _denied(status) == expect_allowed or (isinstance(status, int) and status >= 500
                                                     and path not in ("/api/ivr/prompts",)):
                wrong.append((method, path, status, "should be allowed" if expect_allowed else "should be denied"))
        assert wrong == []


async def test_anonymous_is_refused_on_every_route_but_login_health_and_static(db_url):
    async with running_service(db_url) as svc, aiohttp.ClientSession() as http:
        wrong = []
        for route in svc.app.router.routes():
            canonical = route.resource.canonical
            if route.method == "HEAD" or isinstance(route.resource, web.StaticResource) \
                    or (route.method, canonical) in PUBLIC:
                continue
            path = re.sub(r"\{[^}]+\}", "1", canonical)
            status = await _status(http, svc.base_url, route.method, path)
            if not _denied(status):
                wrong.append((route.method, path, status))
            if route.method == "GET" and path.startswith("/ws/"):
                if not _denied(await _status(http, svc.base_url, "WS", path)):
                    wrong.append(("WS", path))
        assert wrong == []
        # pages send the browser to the login page and back; the API answers JSON
        async with http.get(svc.base_url + "/orders?q=1", allow_redirects=False) as r:
            loc = r.headers["Location"]
            assert r.status == 302 and loc.startswith("/login?next=") and unquote(loc[12:]) == "/orders?q=1"
        async with http.get(svc.base_url + "/api/tickets/meta") as r:
            assert r.status == 401 and (await r.json())["error"] == "unauthorized"
        async with http.get(svc.base_url + "/static/style.css") as r:
            assert r.status == 200
        async with http.get(svc.base_url + "/login") as r:
            assert r.status == 200 and "登录" in await r.text()
            assert "script-src 'self'" in r.headers["Content-Security-Policy"]
        async with http.get(svc.base_url + "/health") as r:
            assert r.status == 200


async def test_an_undecorated_route_is_refused_even_when_logged_in(pool):
    from aiohttp.test_utils import TestClient, TestServer

    from cti.web import add_routes, pool_key

    async def naked(request):   # a route added the way a careless change would
        return web.Response(text="secret")

    app = web.Application()
    app[pool_key] = pool
    add_routes(app)
    auth = auth_for_app(app, pool)
    app.router.add_get("/naked", naked)
    app.router.add_post("/api/naked", naked)
    assert auth_rule(naked) is None and sorted(undecorated_routes(app)) == ["GET /naked", "HEAD /naked", "POST /api/naked"]
    async with TestClient(TestServer(app)) as client:
        await auth.login(client, "admin")
        r = await client.get("/naked")
        assert r.status == 403 and "secret" not in await r.text()
        r = await client.post("/api/naked")
        assert r.status == 403 and (await r.json())["error"] == "no_access_rule"


async def test_csrf_token_is_required_on_every_state_changing_request(db_url):
    async with running_service(db_url) as svc, aiohttp.ClientSession() as http:
        token = await svc.login(http, S)
        url = svc.base_url + "/api/wallboard/surge"
        del http.headers["X-CSRF-Token"]
        async with http.post(url, json={"mode": "on"}) as r:
            assert r.status == 403 and (await r.json())["error"] == "csrf"
        async with http.post(url, json={"mode": "on"}, headers={"X-CSRF-Token": "forged"}) as r:
            assert r.status == 403 and (await r.json())["error"] == "csrf"
        async with http.put(svc.base_url + "/api/tickets/load", json={"heavy": True, "actor": "x"}) as r:
            assert r.status == 403
        async with http.post(svc.base_url + "/api/logout") as r:
            assert r.status == 403       # logout is state-changing too
        async with http.post(url, json={"mode": "on"}, headers={"X-CSRF-Token": token}) as r:
            assert r.status == 200, await r.text()
        async with http.get(svc.base_url + "/api/me") as r:
            assert (await r.json())["csrf_token"] == token   # what the pages read (static/auth.js)
        # a websocket opened from another site is refused
        with pytest.raises(aiohttp.WSServerHandshakeError) as ei:
            async with http.ws_connect(svc.base_url + "/ws/wallboard", headers={"Origin": "http://evil.example"}):
                pass
        assert ei.value.status == 403
        # a login form posted from another site is refused
        async with http.post(svc.base_url + "/api/login", json={"username": S, "password": password_for(S)},
                             headers={"Origin": "http://evil.example"}) as r:
            assert r.status == 403


async def test_login_rate_limit_locks_the_username_after_five_failures(db_url):
    async with running_service(db_url) as svc, aiohttp.ClientSession() as http:
        await svc.auth.user("agent1002")
        login = svc.base_url + "/api/login"
        for _ in range(5):
            async with http.post(login, json={"username": "agent1002", "password": "wrong-password"}) as r:
                assert r.status == 401 and (await r.json())["error"] == "bad_credentials"
        async with http.post(login, json={"username": "agent1002", "password": password_for("agent1002")}) as r:
            assert r.status == 429 and int(r.headers["Retry-After"]) > 0
            assert "登录失败次数过多" in (await r.json())["message"]
        # another account is not locked; an unknown user answers like a wrong password
        async with http.post(login, json={"username": "nobody", "password": "whatever-1"}) as r:
            assert r.status == 401
        await svc.login(http, "agent1003")
    conn = await asyncpg.connect(db_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM login_attempts WHERE username = 'agent1002' "
                                   "AND NOT success") == 5
    finally:
        await conn.close()


async def test_logout_and_expiry_end_the_session(db_url):
    async with running_service(db_url) as svc, aiohttp.ClientSession() as http:
        await svc.login(http, A)
        async with http.get(svc.base_url + "/api/me") as r:
            me = await r.json()
            assert me["role"] == "agent" and me["agent_id"] == "1001" and me["username"] == A
        async with http.post(svc.base_url + "/api/logout") as r:
            assert r.status == 200
            assert r.cookies[COOKIE].value == ""
        async with http.get(svc.base_url + "/api/me") as r:
            assert r.status == 401   # the old cookie is dead server-side
        async with http.get(svc.base_url + "/agent/1001", allow_redirects=False) as r:
            assert r.status == 302
        with pytest.raises(aiohttp.WSServerHandshakeError):
            async with http.ws_connect(svc.base_url + "/ws/agent/1001"):
                pass

        await svc.login(http, A)
        conn = await asyncpg.connect(db_url)
        try:
            await conn.execute("UPDATE auth_sessions SET expires_at = now() - interval '1 second'")
            async with http.get(svc.base_url + "/api/me") as r:
                assert r.status == 401
            await svc.login(http, A)
            await conn.execute("UPDATE auth_sessions SET last_seen_at = now() - interval '3 hours'")  # idle
            async with http.get(svc.base_url + "/api/me") as r:
                assert r.status == 401
            await svc.login(http, A)
            await conn.execute("UPDATE app_users SET active = false WHERE username = $1", A)
            async with http.get(svc.base_url + "/api/me") as r:
                assert r.status == 401   # a disabled account is out at once
            stored = await conn.fetchval("SELECT token_hash FROM auth_sessions LIMIT 1")
            assert stored is None or len(stored) == 64   # only the SHA-256 of the token is kept
            hashed = await conn.fetchval("SELECT password_hash FROM app_users WHERE username = $1", A)
            assert hashed.startswith("$argon2id$")
        finally:
            await conn.close()


async def test_login_form_sets_an_httponly_lax_cookie_and_only_local_redirects(db_url):
    async with running_service(db_url) as svc, aiohttp.ClientSession() as http:
        await svc.auth.user(D)
        async with http.post(svc.base_url + "/login", data={"username": D, "password": password_for(D),
                                                            "next": "//evil.example/x"},
                             allow_redirects=False) as r:
            assert r.status == 302 and r.headers["Location"] == "/department/" + Q_DEPT
            cookie = r.headers["Set-Cookie"]
            assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/" in cookie
        async with http.post(svc.base_url + "/login", data={"username": D, "password": "nope-nope"},
                             allow_redirects=False) as r:
            assert r.status == 302 and r.headers["Location"].startswith("/login?error=bad")


async def test_oversized_request_is_413_and_malformed_json_is_400_json(db_url):
    async with running_service(db_url) as svc, aiohttp.ClientSession() as http:
        await svc.login(http, "admin")
        big = "x" * (300 * 1024)
        for path in ("/api/outages", "/api/orders/1", "/api/tickets/orders/1/dispatch", "/api/wallboard/surge"):
            async with http.post(svc.base_url + path, data=big, headers={"Content-Type": "application/json"}) as r:
                assert r.status == 413, (path, r.status)
                assert (await r.json())["error"] == "too_large"
        for method, path in (("POST", "/api/outages"), ("POST", "/api/orders/1"),
                             ("POST", "/api/tickets/orders/1/dispatch"), ("POST", "/api/wallboard/surge"),
                             ("PUT", "/api/tickets/load"), ("POST", "/api/outages/1/cancel")):
            for bad in ("{not json", "[1, 2]", "\xff"):
                async with http.request(method, svc.base_url + path, data=bad.encode("latin-1"),
                                        headers={"Content-Type": "application/json"}) as r:
                    body = await r.json()
                    assert r.status == 400 and body["error"] == "bad_json", (method, path, bad, r.status, body)
                    assert body["message"]
        # a login with a huge or odd body is a clean 4xx too
        async with http.post(svc.base_url + "/api/login", data="{", headers={"Content-Type": "application/json"}) as r:
            assert r.status == 400


async def test_authenticate_and_store_rules(pool):
    store = AuthStore(lambda: pool, hasher=make_hasher(cheap=True), max_failures=2)
    p = await store.create_user("agent2001", "s3cret-pass", Role.AGENT, agent_id="2001")
    assert p == Principal("agent2001", Role.AGENT, "", "2001", "")
    assert p.may_act_as_agent("2001") and not p.may_act_as_agent("2002")
    assert Principal("s", Role.SUPERVISOR).may_act_as_agent("2002")
    assert not Principal("d", Role.DEPARTMENT, department="抢修班").may_act_as_agent("2001")
    assert Principal("x", Role.ADMIN).has(Role.AGENT)
    from cti.auth import AccountError

    with pytest.raises(AccountError):
        await store.create_user("agent2001", "s3cret-pass", Role.AGENT, agent_id="2001")   # exists
    with pytest.raises(AccountError):
        await store.create_user("a2", "short", Role.AGENT, agent_id="2")
    with pytest.raises(AccountError):
        await store.create_user("a3", "long-enough", Role.AGENT)                # no agent id
    with pytest.raises(AccountError):
        await store.create_user("d1", "long-enough", Role.DEPARTMENT)           # no department
    with pytest.raises(AccountError):
        await store.create_user("<script>", "long-enough", Role.ADMIN)
    assert await store.authenticate("agent2001", "s3cret-pass", "10.0.0.1") == p
    assert await store.authenticate("agent2001", "nope", "10.0.0.1") is None
    assert await store.authenticate("agent2001", "nope", "10.0.0.1") is None
    with pytest.raises(TooManyAttempts):
        await store.authenticate("agent2001", "s3cret-pass", "10.0.0.1")
    token, csrf = await store.start_session("agent2001")
    assert (await store.lookup(token)) == (p, csrf)
    assert await store.lookup(token + "x") is None
    await store.end_session(token)
    assert await store.lookup(token) is None


async def test_demo_accounts_cover_every_role(pool):
    store = AuthStore(lambda: pool, hasher=make_hasher(cheap=True))
    accounts = await create_demo_accounts(store, ["1001", "1002", "1003", "1004"])
    roles = {u: r for u, r, _, _ in accounts}
    assert roles == {"agent1001": "agent", "agent1002": "agent", "agent1003": "agent", "agent1004": "agent",
                     "supervisor": "supervisor", "qiangxiu": "department", "yingye": "department", "admin": "admin"}
    pw = {u: p for u, _, p, _ in accounts}
    assert len(set(pw.values())) == len(pw)
    d = await store.authenticate("yingye", pw["yingye"])
    assert d.department == "供电营业所"
    again = await create_demo_accounts(store, ["1001"])   # a restart: new passwords, no error
    assert dict((u, p) for u, _, p, _ in again)["admin"] != pw["admin"]


def _run(args, **kw):
    return asyncio.to_thread(subprocess.run, args, **kw)


async def test_create_user_command(db_url, tmp_path):
    env = {**os.environ, "DATABASE_URL": db_url, "HOTLINE_STATE_DIR": str(tmp_path)}
    r = await _run([sys.executable, "-m", "cti", "create-user", "zhang", "--role", "agent", "--agent-id", "1009",
                        "--password-stdin"], input="a-good-password\n", env=env, cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "zhang" in r.stdout and "password:" not in r.stdout
    r = await _run([sys.executable, "-m", "cti", "create-user", "li", "--role", "department"],
                       env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "department" in r.stderr
    r = await _run([sys.executable, "-m", "cti", "create-user", "boss", "--role", "admin"],
                       env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "password: " in r.stdout
    password = r.stdout.split("password: ")[1].strip()
    pool = await create_pool(db_url, 1, 2)
    try:
        store = AuthStore(lambda: pool)
        z = await store.authenticate("zhang", "a-good-password")
        assert z is not None and z.role is Role.AGENT and z.agent_id == "1009"
        b = await store.authenticate("boss", password)
        assert b is not None and b.role is Role.ADMIN
    finally:
        await pool.close()


def test_session_settings_are_sane():
    store = AuthStore(lambda: None)
    assert store.session_ttl <= timedelta(hours=24) and store.idle_timeout <= store.session_ttl


async def test_metrics_accept_the_configured_bearer_token(db_url, monkeypatch):
    monkeypatch.setenv("HOTLINE_METRICS_TOKEN", "scrape-token-123")
    async with running_service(db_url) as svc, aiohttp.ClientSession() as http:
        async with http.get(svc.base_url + "/metrics", headers={"Authorization": "Bearer scrape-token-123"}) as r:
            assert r.status == 200 and "hotline_" in await r.text()
        async with http.get(svc.base_url + "/metrics", headers={"Authorization": "Bearer wrong"}) as r:
            assert r.status == 401
        async with http.get(svc.base_url + "/api/wallboard",
                            headers={"Authorization": "Bearer scrape-token-123"}) as r:
            assert r.status == 401   # the token opens /metrics only


async def test_an_agent_reads_and_saves_only_their_own_screen_pop_orders(db_url):
    from .tickets_support import draft

    conn = await asyncpg.connect(db_url)
    try:
        order = await draft(conn, agent="1001")
    finally:
        await conn.close()
    body = {"order_type": "enquiry", "contact_name": "张三", "contact_phone": order["contact_phone"],
            "description": "问电费", "version": order["version"]}
    async with running_service(db_url) as svc, aiohttp.ClientSession() as http:
        url = svc.base_url + f"/api/orders/{order['id']}"
        await svc.login(http, "agent1002")
        async with http.get(url) as r:
            assert r.status == 403
        async with http.post(url, json=body) as r:
            assert r.status == 403
        async with http.get(svc.base_url + "/api/orders?agent=1001") as r:
            assert r.status == 403
        await svc.login(http, "agent1001")
        async with http.get(url) as r:
            assert r.status == 200 and (await r.json())["agent"] == "1001"
        async with http.post(url, json=body) as r:
            assert r.status == 200, await r.text()


async def test_logging_out_closes_the_sessions_open_websockets_and_a_dead_session_is_found(db_url):
    """A desk left open after logout must not go on receiving screen-pops;
    a session that ends elsewhere (expiry, another node) is found by the
    periodic re-check."""
    async with running_service(db_url) as svc:
        store = svc.app[auth_store_key]
        async with aiohttp.ClientSession() as http, aiohttp.ClientSession() as other:
            await svc.login(http, "agent1001")
            await svc.login(other, "agent1002")
            ws = await http.ws_connect(f"{svc.base_url}/ws/agent/1001")
            ws2 = await other.ws_connect(f"{svc.base_url}/ws/agent/1002")
            assert (await ws.receive_json(timeout=5))["type"] == "hello"
            async with http.post(f"{svc.base_url}/api/logout") as r:
                assert r.status == 200
            msg = await ws.receive(timeout=5)
            assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)
            assert (await ws2.receive_json(timeout=5))["type"] == "hello"  # the other session is untouched
            assert not ws2.closed

            store.socket_recheck_s = 0.2  # the next re-check comes soon
            ws3 = await other.ws_connect(f"{svc.base_url}/ws/agent/1002")
            async with store.pool.acquire() as conn:
                await conn.execute("DELETE FROM auth_sessions")  # ended through another node / expired
            while True:
                msg = await ws3.receive(timeout=5)
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
            assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)

"""Accounts, roles, sessions and CSRF for every HTTP route and websocket.

Public API (other packages code against it)::

    Role, Principal, principal_key, require(*roles), public(handler)

The auth middleware DENIES BY DEFAULT: a route whose handler carries
neither :func:`require` nor :func:`public` is refused with 403.  Static
files under ``/static/`` (CSS/JS, no data) are public.

Sessions are server-side rows (``auth_sessions``); the cookie carries a
random token whose SHA-256 is stored.  Every state-changing request
(POST/PUT/PATCH/DELETE) needs the session's CSRF token in the
``X-CSRF-Token`` header (pages get it from ``GET /api/me``; see
``static/auth.js``).  Passwords are argon2id hashes (argon2-cffi)."""
from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import os
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta
from enum import Enum
from pathlib import Path
from typing import Any, Awaitable, Callable
from urllib.parse import quote, urlsplit

from aiohttp import web

from .http import json_error
from .logs import get_logger

log = get_logger("hotline.auth")


class Role(str, Enum):
    AGENT = "agent"
    SUPERVISOR = "supervisor"
    DEPARTMENT = "department"
    ADMIN = "admin"


ROLE_LABELS = {Role.AGENT: "坐席", Role.SUPERVISOR: "班长", Role.DEPARTMENT: "部门", Role.ADMIN: "管理员"}


@dataclass(frozen=True)
class Principal:
    username: str
    role: Role
    display_name: str = ""
    agent_id: str = ""  # for agents, e.g. "1001"
    department: str = ""  # for department users, e.g. "抢修班"

    def has(self, *roles: Role) -> bool:
        """True if this principal's role is one of ``roles`` (admin always)."""
        return self.role is Role.ADMIN or self.role in roles

    def may_act_as_agent(self, agent: str) -> bool:
        """Agents only for themselves; supervisors/admins for any agent."""
        if self.role is Role.AGENT:
            return bool(self.agent_id) and self.agent_id == agent
        return self.role in (Role.SUPERVISOR, Role.ADMIN)

    def may_see_department(self, department: str) -> bool:
        if self.role is Role.DEPARTMENT:
            return bool(self.department) and self.department == department
        return self.role in (Role.SUPERVISOR, Role.ADMIN)

    def to_dict(self) -> dict[str, str]:
        return {"username": self.username, "role": self.role.value, "display_name": self.display_name,
                "agent_id": self.agent_id, "department": self.department}


principal_key = web.RequestKey("principal", Principal)
csrf_key = web.RequestKey("csrf_token", str)

_AUTH_ATTR = "__cti_auth__"
_PUBLIC = "public"
_BEARER_ATTR = "__cti_bearer__"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _wants_json(request: web.Request) -> bool:
    path = request.path
    return (path.startswith("/api/") or path.startswith("/ws/") or path == "/metrics"
            or "application/json" in request.headers.get("Accept", ""))


def unauthorized(request: web.Request) -> web.StreamResponse:
    if _wants_json(request) or request.method not in ("GET", "HEAD"):
        return json_error(401, "unauthorized", "请先登录 / please log in")
    return web.HTTPFound(f"/login?next={quote(request.path_qs, safe='')}")


def forbidden(request: web.Request, message: str = "无权访问 / not allowed for your role",
              code: str = "forbidden") -> web.Response:
    if _wants_json(request):
        return json_error(403, code, message)
    body = ("<!doctype html><html lang=zh-CN><meta charset=utf-8><title>403 无权访问</title>"
            "<body style='font-family:sans-serif;padding:2em'><h1>403 无权访问</h1>"
            f"<p>{_html_escape(message)}</p><p><a href='/'>返回首页</a> · "
            "<a href='/login'>切换账号 / switch account</a></p></body></html>")
    return web.Response(status=403, text=body, content_type="text/html")


def _html_escape(s: str) -> str:
    return (s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;").replace("'", "&#x27;"))


def require(*roles: Role) -> Callable[[Handler], Handler]:
    """Decorator for aiohttp handlers: 401 if not logged in (JSON for /api/,
    redirect to /login for pages), 403 if the role is not allowed.  ADMIN
    passes everywhere.  ``require()`` with no roles admits any logged-in
    user.  The middleware enforces the same rule before the handler runs;
    the wrapper re-checks in case the handler is mounted without it."""
    allowed = frozenset(Role(r) for r in roles)

    def deco(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def wrapper(request: web.Request) -> web.StreamResponse:
            principal = request.get(principal_key)
            if principal is None:
                resp = unauthorized(request)
                if isinstance(resp, web.HTTPException):
                    raise resp
                return resp
            if not _role_ok(principal, allowed):
                return forbidden(request)
            return await handler(request)

        setattr(wrapper, _AUTH_ATTR, allowed)
        if getattr(handler, _BEARER_ATTR, False):
            setattr(wrapper, _BEARER_ATTR, True)
        return wrapper

    return deco


def public(handler: Handler) -> Handler:
    """Mark a handler that needs no login (login page, health, static assets)."""
    setattr(handler, _AUTH_ATTR, _PUBLIC)
    return handler


def bearer_token_allowed(handler: Handler) -> Handler:
    """Allow the configured metrics bearer token (``HOTLINE_METRICS_TOKEN``)
    in place of a session (Prometheus scraping).  Apply it under ``require``::

        @require(Role.SUPERVISOR)
        @bearer_token_allowed
        async def metrics(request): ..."""
    setattr(handler, _BEARER_ATTR, True)
    return handler


def _role_ok(principal: Principal, allowed: frozenset[Role]) -> bool:
    return not allowed or principal.has(*allowed)


def auth_rule(handler: Any) -> frozenset[Role] | str | None:
    """The handler's rule: a role set (``require``), ``"public"`` or None."""
    return getattr(handler, _AUTH_ATTR, None)


def route_rule(route: web.AbstractRoute) -> frozenset[Role] | str | None:
    if isinstance(route.resource, web.StaticResource):
        return _PUBLIC
    return auth_rule(route.handler)


def undecorated_routes(app: web.Application) -> list[str]:
    """Every route of ``app`` whose handler has neither require nor public."""
    bad = []
    for route in app.router.routes():
        if route_rule(route) is None:
            info = route.resource.canonical if route.resource is not None else "?"
            bad.append(f"{route.method} {info}")
    return bad


# --- passwords ------------------------------------------------------------

def make_hasher(cheap: bool = False):
    from argon2 import PasswordHasher

    if cheap:  # tests only: same algorithm, small cost
        return PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1)
    return PasswordHasher()


USERNAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
AGENT_ID_RE = re.compile(r"^[0-9A-Za-z_-]{1,32}$")
MIN_PASSWORD = 8
MAX_PASSWORD = 256


class AccountError(ValueError):
    pass


class TooManyAttempts(Exception):
    def __init__(self, retry_after: int):
        super().__init__(retry_after)
        self.retry_after = retry_after


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class AuthStore:
    """Users, sessions and login attempts in PostgreSQL (migration 007)."""

    def __init__(self, pool_getter: Callable[[], Any], *, hasher=None,
                 session_ttl: timedelta = timedelta(hours=12), idle_timeout: timedelta = timedelta(hours=2),
                 max_failures: int = 5, ip_max_failures: int = 30, window: timedelta = timedelta(minutes=15)):
        self._pool_getter = pool_getter
        self.hasher = hasher or make_hasher()
        self.session_ttl = session_ttl
        self.idle_timeout = idle_timeout
        self.max_failures = max_failures
        self.ip_max_failures = ip_max_failures
        self.window = window
        self._dummy_hash: str | None = None
        # open websockets by session: closed when the session ends (logout)
        self._sockets: dict[str, set[Callable[[], None]]] = {}
        self.socket_recheck_s = 30.0  # and re-checked this often (expiry, a user disabled, logout on another node)

    def watch_socket(self, token: str, close: Callable[[], None]) -> Callable[[], None]:
        """Register an open websocket of this session; returns the unregister."""
        key = _token_hash(token)
        self._sockets.setdefault(key, set()).add(close)

        def unwatch() -> None:
            closers = self._sockets.get(key)
            if closers is not None:
                closers.discard(close)
                if not closers:
                    self._sockets.pop(key, None)
        return unwatch

    def _close_sockets(self, token: str) -> None:
        for close in list(self._sockets.pop(_token_hash(token), ())):
            try:
                close()
            except Exception:
                log.exception("ws_close_on_logout_failed")

    @property
    def pool(self):
        return self._pool_getter()

    async def _hash(self, password: str) -> str:
        return await asyncio.get_running_loop().run_in_executor(None, self.hasher.hash, password)

    async def _verify(self, hashed: str, password: str) -> bool:
        from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

        def check() -> bool:
            try:
                return self.hasher.verify(hashed, password)
            except (VerifyMismatchError, VerificationError, InvalidHashError):
                return False

        return await asyncio.get_running_loop().run_in_executor(None, check)

    async def create_user(self, username: str, password: str, role: Role | str, *, agent_id: str = "",
                          department: str = "", display_name: str = "", replace: bool = False) -> Principal:
        role = Role(role)
        if not USERNAME_RE.match(username or ""):
            raise AccountError("用户名只能包含字母、数字和 _.@- / username: letters, digits, _.@- (1-64)")
        if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
            raise AccountError(f"密码至少 {MIN_PASSWORD} 位 / password must be {MIN_PASSWORD}-{MAX_PASSWORD} chars")
        if role is Role.AGENT and not AGENT_ID_RE.match(agent_id or ""):
            raise AccountError("坐席账号需要工号 / agent accounts need --agent-id")
        if role is Role.DEPARTMENT and not (department or "").strip():
            raise AccountError("部门账号需要部门 / department accounts need --department")
        hashed = await self._hash(password)
        conflict = ("ON CONFLICT (username) DO UPDATE SET password_hash = EXCLUDED.password_hash, "
                    "role = EXCLUDED.role, agent_id = EXCLUDED.agent_id, department = EXCLUDED.department, "
                    "display_name = EXCLUDED.display_name, active = true" if replace else "")
        async with self.pool.acquire() as conn:
            try:
                await conn.execute(
                    "INSERT INTO app_users (username, password_hash, role, agent_id, department, display_name) "
                    "VALUES ($1, $2, $3, $4, $5, $6) " + conflict,
                    username, hashed, role.value, agent_id or "", department or "", display_name or "")
            except Exception as exc:
                if type(exc).__name__ == "UniqueViolationError":
                    raise AccountError(f"用户已存在 / user {username!r} exists") from exc
                raise
            if replace:  # a reset password ends the old sessions
                await conn.execute("DELETE FROM auth_sessions s USING app_users u "
                                   "WHERE s.user_id = u.id AND u.username = $1", username)
        return Principal(username, role, display_name or "", agent_id or "", department or "")

    async def set_active(self, username: str, active: bool) -> None:
        async with self.pool.acquire() as conn:
            await conn.execute("UPDATE app_users SET active = $2 WHERE username = $1", username, active)
            if not active:
                await conn.execute("DELETE FROM auth_sessions s USING app_users u "
                                   "WHERE s.user_id = u.id AND u.username = $1", username)

    async def authenticate(self, username: str, password: str, remote: str = "") -> Principal | None:
        """Check a password; raises :class:`TooManyAttempts` when the
        username (or the client address) had too many recent failures."""
        username = (username or "")[:64]
        remote = (remote or "")[:64]
        async with self.pool.acquire() as conn:
            since = self.window
            row = await conn.fetchrow(
                "SELECT count(*) FILTER (WHERE username = $1) AS by_user, "
                "count(*) FILTER (WHERE remote = $2 AND $2 <> '') AS by_ip, "
                "min(at) FILTER (WHERE username = $1) AS first_user, min(at) FILTER (WHERE remote = $2) AS first_ip "
                "FROM login_attempts WHERE NOT success AND at > now() - $3::interval "
                "AND (username = $1 OR remote = $2)", username, remote, since)
            if row["by_user"] >= self.max_failures or row["by_ip"] >= self.ip_max_failures:
                raise TooManyAttempts(int(self.window.total_seconds()))
            user = await conn.fetchrow(
                "SELECT username, password_hash, role, agent_id, department, display_name, active "
                "FROM app_users WHERE username = $1", username)
        if user is None or not password or len(password) > MAX_PASSWORD:
            if self._dummy_hash is None:
                self._dummy_hash = await self._hash(secrets.token_hex(8))
            await self._verify(self._dummy_hash, password[:MAX_PASSWORD] if password else "x")  # same timing
            ok = False
        else:
            ok = await self._verify(user["password_hash"], password) and user["active"]
        async with self.pool.acquire() as conn:
            await conn.execute("INSERT INTO login_attempts (username, remote, success) VALUES ($1, $2, $3)",
                               username, remote, ok)
            if ok:  # a success clears this user's failure count
                await conn.execute("DELETE FROM login_attempts WHERE username = $1 AND NOT success", username)
            await conn.execute("DELETE FROM login_attempts WHERE at < now() - interval '1 day'")
        if not ok:
            log.warning("login_failed", username=username, remote=remote)
            return None
        log.info("login_ok", username=username, role=user["role"], remote=remote)
        return Principal(user["username"], Role(user["role"]), user["display_name"], user["agent_id"],
                         user["department"])

    async def start_session(self, username: str) -> tuple[str, str]:
        """New session → (cookie token, csrf token)."""
        token = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        async with self.pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO auth_sessions (token_hash, user_id, csrf_token, expires_at) "
                "SELECT $1, id, $2, now() + $3::interval FROM app_users WHERE username = $4 AND active",
                _token_hash(token), csrf, self.session_ttl, username)
            await conn.execute("DELETE FROM auth_sessions WHERE expires_at < now() "
                               "OR last_seen_at < now() - $1::interval", self.idle_timeout)
        return token, csrf

    async def lookup(self, token: str) -> tuple[Principal, str] | None:
        if not token or len(token) > 128:
            return None
        hashed = _token_hash(token)
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT u.username, u.role, u.display_name, u.agent_id, u.department, s.csrf_token, "
                "s.last_seen_at < now() - interval '1 minute' AS stale "
                "FROM auth_sessions s JOIN app_users u ON u.id = s.user_id "
                "WHERE s.token_hash = $1 AND u.active AND s.expires_at > now() "
                "AND s.last_seen_at > now() - $2::interval", hashed, self.idle_timeout)
            if row is not None and row["stale"]:  # idle clock: at most one write a minute per session
                await conn.execute("UPDATE auth_sessions SET last_seen_at = now() WHERE token_hash = $1", hashed)
        if row is None:
            return None
        return (Principal(row["username"], Role(row["role"]), row["display_name"], row["agent_id"],
                          row["department"]), row["csrf_token"])

    async def end_session(self, token: str) -> None:
        async with self.pool.acquire() as conn:
            await conn.execute("DELETE FROM auth_sessions WHERE token_hash = $1", _token_hash(token))
        self._close_sockets(token)  # a page left open must not go on receiving screen-pops


auth_store_key = web.AppKey("auth_store", AuthStore)
metrics_token_key = web.AppKey("metrics_token", str)

COOKIE = "cti_session"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _same_origin(request: web.Request) -> bool:
    """False when an Origin header names another site (cross-site POST or
    websocket hijacking).  No Origin header (non-browser clients) passes."""
    origin = request.headers.get("Origin")
    if not origin or origin == "null":
        return origin != "null"
    host = request.headers.get("Host", request.host)
    return urlsplit(origin).netloc == host


@web.middleware
async def auth_middleware(request: web.Request, handler):
    match = request.match_info
    if match.http_exception is not None:  # 404 / 405: nothing to protect
        return await handler(request)
    route = match.route
    rule = route_rule(route)
    if rule is None:
        log.error("route_not_decorated", path=request.path, method=request.method)
        return forbidden(request, "此地址未配置访问权限 / route has no access rule", code="no_access_rule")
    if rule == _PUBLIC:
        if request.method in UNSAFE_METHODS and not _same_origin(request):
            return forbidden(request, "跨站请求被拒绝 / cross-site request refused", code="bad_origin")
        return await handler(request)
    store = request.app.get(auth_store_key)
    token = request.cookies.get(COOKIE, "")
    found = await store.lookup(token) if (store is not None and token) else None
    if found is None and getattr(route.handler, _BEARER_ATTR, False):
        expected = request.app.get(metrics_token_key, "")
        header = request.headers.get("Authorization", "")
        if expected and header.startswith("Bearer ") and hmac.compare_digest(header[7:].encode(),
                                                                               expected.encode()):
            request[principal_key] = Principal("metrics-token", Role.SUPERVISOR)
            return await handler(request)
    if found is None:
        resp = unauthorized(request)
        if isinstance(resp, web.HTTPException):
            raise resp
        return resp
    principal, csrf = found
    request[principal_key] = principal
    request[csrf_key] = csrf
    if not _role_ok(principal, rule):  # type: ignore[arg-type]
        return forbidden(request)
    if request.method in UNSAFE_METHODS:
        sent = request.headers.get("X-CSRF-Token", "")
        if not sent or not hmac.compare_digest(sent.encode(), csrf.encode()):
            return json_error(403, "csrf", "页面已过期,请刷新后重试 / missing or bad CSRF token, reload the page")
    if request.headers.get("Upgrade", "").lower() == "websocket":
        if not _same_origin(request):
            return forbidden(request, "跨站连接被拒绝 / cross-site websocket refused", code="bad_origin")
        return await _websocket_in_session(request, handler, store, token)
    return await handler(request)


async def _websocket_in_session(request: web.Request, handler, store: "AuthStore", token: str):
    """A websocket lives only as long as its session: closed at logout at
    once, and when a periodic re-check finds the session gone (expired, the
    user disabled, logged out through another node)."""
    transport = request.transport

    def close() -> None:
        if transport is not None and not transport.is_closing():
            transport.close()

    unwatch = store.watch_socket(token, close)

    async def recheck() -> None:
        while True:
            await asyncio.sleep(store.socket_recheck_s)
            try:
                still = await store.lookup(token)
            except Exception as exc:  # database trouble is not a logout: keep the page
                log.warning("ws_session_recheck_failed", error=f"{type(exc).__name__}: {exc}")
                continue
            if still is None:
                log.info("ws_closed_session_ended", user=request[principal_key].username)
                close()
                return

    checker = asyncio.create_task(recheck())
    try:
        return await handler(request)
    finally:
        checker.cancel()
        unwatch()


# --- pages and API ----------------------------------------------------------

STATIC = Path(__file__).parent / "static"


def _safe_next(raw: str | None) -> str:
    """Only local paths: never redirect to another site after login."""
    if not raw or not raw.startswith("/") or raw.startswith("//") or "\\" in raw or raw.startswith("/login"):
        return "/"
    return raw


def _remote(request: web.Request) -> str:
    return request.remote or ""


@public
async def login_page(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC / "login.html", headers={"Cache-Control": "no-store"})


@public
async def login_submit(request: web.Request) -> web.StreamResponse:
    store = request.app[auth_store_key]
    is_json = request.content_type == "application/json"
    try:
        if is_json:
            data = await request.json()
            if not isinstance(data, dict):
                raise ValueError
        else:
            data = dict(await request.post())
    except (ValueError, UnicodeDecodeError):
        return json_error(400, "bad_json", "请求格式错误 / body must be JSON")
    username = str(data.get("username") or "").strip()
    password = str(data.get("password") or "")
    nxt = _safe_next(str(data.get("next") or request.query.get("next") or ""))
    try:
        principal = await store.authenticate(username, password, _remote(request))
    except TooManyAttempts as exc:
        resp = json_error(429, "too_many_attempts", "登录失败次数过多,请稍后再试 / too many failed logins, "
                          "try again later", retry_after=exc.retry_after)
        resp.headers["Retry-After"] = str(exc.retry_after)
        if not is_json:
            raise web.HTTPFound(f"/login?error=locked&next={quote(nxt, safe='')}")
        return resp
    if principal is None:
        if not is_json:
            raise web.HTTPFound(f"/login?error=bad&next={quote(nxt, safe='')}")
        return json_error(401, "bad_credentials", "用户名或密码错误 / wrong username or password")
    token, csrf = await store.start_session(principal.username)
    if is_json:
        resp = web.json_response({**principal.to_dict(), "csrf_token": csrf, "next": _landing(principal, nxt)})
    else:
        resp = web.HTTPFound(_landing(principal, nxt))
    secure = request.secure or request.headers.get("X-Forwarded-Proto") == "https"
    resp.set_cookie(COOKIE, token, httponly=True, samesite="Lax", secure=secure, path="/",
                    max_age=int(store.session_ttl.total_seconds()))
    if isinstance(resp, web.HTTPException):
        raise resp
    return resp


def _landing(principal: Principal, nxt: str) -> str:
    if nxt != "/":
        return nxt
    if principal.role is Role.AGENT:
        return f"/agent/{principal.agent_id}"
    if principal.role is Role.DEPARTMENT:
        return "/department/" + quote(principal.department, safe="")
    return "/"


@require()
async def logout(request: web.Request) -> web.StreamResponse:
    token = request.cookies.get(COOKIE, "")
    if token:
        await request.app[auth_store_key].end_session(token)
    resp = web.json_response({"ok": True, "next": "/login"})
    resp.del_cookie(COOKIE, path="/")
    return resp


@require()
async def me(request: web.Request) -> web.Response:
    principal = request[principal_key]
    return web.json_response({**principal.to_dict(), "role_label": ROLE_LABELS[principal.role],
                              "csrf_token": request[csrf_key]},
                             headers={"Cache-Control": "no-store"})


CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


@web.middleware
async def security_headers_middleware(request: web.Request, handler):
    resp = await handler(request)
    if not isinstance(resp, web.WebSocketResponse) and not resp.prepared:
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        resp.headers.setdefault("X-Frame-Options", "DENY")
        resp.headers.setdefault("Referrer-Policy", "same-origin")
        resp.headers.setdefault("Content-Security-Policy", CSP)  # no inline or foreign script, ever
    return resp


def install_auth(app: web.Application, pool_getter: Callable[[], Any], *, hasher=None,
                 metrics_token: str | None = None, **store_options: Any) -> AuthStore:
    """Add the auth middleware, the login/logout/me routes and the store.
    Call after the error middleware is installed (auth runs inside it)."""
    store = AuthStore(pool_getter, hasher=hasher, **store_options)
    app[auth_store_key] = store
    app[metrics_token_key] = metrics_token if metrics_token is not None else os.environ.get(
        "HOTLINE_METRICS_TOKEN", "")
    app.middlewares.append(security_headers_middleware)
    app.middlewares.append(auth_middleware)
    app.router.add_get("/login", login_page)
    app.router.add_post("/login", login_submit)
    app.router.add_post("/api/login", login_submit)
    app.router.add_post("/logout", logout)
    app.router.add_post("/api/logout", logout)
    app.router.add_get("/api/me", me)
    return store


__all__ = ["Role", "Principal", "principal_key", "csrf_key", "require", "public", "bearer_token_allowed",
           "AuthStore", "AccountError", "TooManyAttempts", "install_auth", "auth_store_key", "undecorated_routes",
           "auth_rule", "route_rule", "make_hasher", "COOKIE", "ROLE_LABELS"]


DEMO_DEPARTMENTS = {"qiangxiu": "抢修班", "yingye": "供电营业所"}


async def create_demo_accounts(store: AuthStore, agents: Any = ("1001", "1002", "1003", "1004")
                               ) -> list[tuple[str, str, str, str]]:
    """Demo: agents, a supervisor, two department users and an admin, each
    with a fresh random password → [(username, role, password, note)]."""
    specs: list[tuple[str, Role, str, str, str]] = [
        (f"agent{a}", Role.AGENT, a, "", f"坐席 {a}") for a in agents]
    specs += [("supervisor", Role.SUPERVISOR, "", "", "值班长 supervisor")]
    specs += [(u, Role.DEPARTMENT, "", d, d) for u, d in DEMO_DEPARTMENTS.items()]
    specs += [("admin", Role.ADMIN, "", "", "管理员 admin")]
    out = []

    async def one(username: str, role: Role, agent: str, dept: str, name: str) -> tuple[str, str, str, str]:
        password = secrets.token_urlsafe(9)
        await store.create_user(username, password, role, agent_id=agent, department=dept, display_name=name,
                                replace=True)
        return username, role.value, password, name

    out = list(await asyncio.gather(*(one(*spec) for spec in specs)))
    log.info("demo_accounts_created", accounts=len(out))
    return out

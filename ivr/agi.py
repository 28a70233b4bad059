"""The FastAGI IVR server (``agi://host:4573/ivr``), on panoramisk's ``fast_agi``.

Dialogue (as in the Asterisk 22 traces ``01-ivr-to-queue-answered.agi`` and
``11-ivr-hangup-mid-prompt.agi``)::

    ANSWER                                      200 result=0
    GET VARIABLE CALLERID(name)                 200 result=1 (张三)
    STREAM FILE <sounds>/tts-<hash> ""          200 result=0 endpos=16000
    [STREAM FILE <outage announcement> ""]
    GET DATA <sounds>/tts-<hash> 5000 1         200 result=1   | 200 result= (timeout)
    ...                                         (menu, account number: see ivr.menu)
    SET VARIABLE IVR_CHOICE repair              200 result=1
    SET VARIABLE __CUSTOMER_ID 3100012345       200 result=1   ("" when unknown)
    SET VARIABLE __OUTAGE_ID OUT-20261122-0042  200 result=1   ("" when none)
    [SET VARIABLE __IVR_NOTE "..."]             only when routed by default / not identified
    VERBOSE "IVR digits=1 choice=repair" 1      200 result=1
    (half-close; Asterisk sends HANGUP, then EOF; the dialplan runs Queue(${IVR_CHOICE}))

Why panoramisk 1.4's ``fast_agi`` is wrapped (``HotlineAgiApplication`` keeps
its route table, ``add_route``, and replaces ``Application.handler``;
``AgiChannel`` subclasses ``Request`` and replaces ``send_command``):

* ``handler`` reads the environment with ``while b'\\n\\n' not in buffer:
  buffer += await reader.read(100)``: a peer that closes before the blank line
  makes ``read`` return ``b''`` forever without suspending -- the event loop
  spins and *every* call on the server stops.  No timeout either.
* The environment is decoded strictly outside any ``try``: one invalid UTF-8
  byte raises out of the connection callback (logged by asyncio as "Unhandled
  exception in client_connected_cb"), the socket is left open.
* ``send_command`` on EOF parses ``''`` and raises ``ValueError: invalid literal
  for int()``; a garbage line raises the same; no read timeout.
* An unsolicited ``HANGUP`` line (trace 11: ``HANGUP`` then ``511 Command Not
  Permitted on a dead channel``) is returned as the reply of the current
  command, and the real reply (511) is then read as the reply of the *next*
  command: every later reply is off by one.  Here ``HANGUP`` marks the channel
  dead and the real reply is still read.
* Results are dicts, not exceptions: ``200 result=-1`` becomes ``{'error':
  'AGIAppError'}``, ``endpos`` is dropped, 511 is an ``AGIUnknownError``.  Here
  replies are :class:`AgiReply`; a dead channel raises :class:`AgiHangup`.
* ``add_route`` wraps plain functions with ``asyncio.coroutine``, gone in
  Python 3.11 -- only ``async`` endpoints are accepted here.
* After the script, panoramisk just closes; here the socket is half-closed and
  drained until Asterisk's trailing ``HANGUP``/EOF, as the trace's listener did.

Every bad input gives one log line and ends only that session.
"""
from __future__ import annotations

import asyncio
import contextlib
import re
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Protocol

import structlog
from panoramisk import fast_agi

from cti.logs import get_logger
from cti.phone import normalise_phone
from ivr.menu import (Ask, Callback, Decision, IvrState, LookupAccount, Menu, Route, Say, account_resolved,
                      as_decision, begin, callback_failed, next_step)

__all__ = [
    "AgiError", "AgiHangup", "AgiProtocolError", "AgiReply", "parse_reply", "AgiChannel",
    "HotlineAgiApplication", "IvrHandler", "AgiServer", "start_agi_server", "db_decide",
    "Decide", "Prompts", "CallbackRequest", "SurgeCheck", "OnCallback",
]

log = get_logger("ivr.agi")

Decide = Callable[[str | None, str | None], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class CallbackRequest:
    """Surge mode: a caller asked for a callback (see :class:`ivr.menu.Callback`)."""

    queue: str                  # the menu choice (work-order type)
    caller_num: str | None      # normalised national number, None if unusable
    raw_callerid: str
    customer_id: str | None     # account number (户号) when known
    outage_id: str | None
    uniqueid: str


# surge_active() -> bool; on_callback(request) -> awaitable (e.g. the order number)
SurgeCheck = Callable[[], bool]
OnCallback = Callable[[CallbackRequest], Awaitable[Any]]


class Prompts(Protocol):
    """What the IVR needs from :class:`ivr.tts.PromptStore`."""

    async def playback(self, text: str, *, kind: str = "static") -> str: ...
    async def fallback_playback(self, kind: str) -> str: ...


# -- wire level ---------------------------------------------------------------------

class AgiError(Exception):
    pass


class AgiHangup(AgiError):
    """The channel is gone (``HANGUP``, ``511``, ``result=-1`` on GET DATA, EOF)."""


class AgiProtocolError(AgiError):
    """The peer sent something that is not AGI (or nothing in time)."""


@dataclass(frozen=True, slots=True)
class AgiReply:
    code: int
    result: str = ""
    data: str | None = None          # the "(...)" part: 张三, timeout
    endpos: int | None = None
    line: str = ""

    @property
    def failed(self) -> bool:
        return self.code != 200 or self.result == "-1"


_REPLY = re.compile(r"(?P<code>[1-5][0-9]{2})(?:[ -](?P<rest>.*))?\Z", re.S)
_RESULT = re.compile(r"result=(?P<result>\S*)(?P<tail>.*)\Z", re.S)
_DATA = re.compile(r"\s*\((?P<data>.*)\)")
_ENDPOS = re.compile(r"endpos=(?P<endpos>-?[0-9]+)")


def parse_reply(line: str) -> AgiReply:
    """One AGI reply line (without the newline).  :class:`AgiProtocolError` if it is not one."""
    m = _REPLY.match(line)
    if not m:
        raise AgiProtocolError(f"not an AGI reply: {line[:120]!r}")
    code, rest = int(m.group("code")), m.group("rest") or ""
    if code != 200:
        return AgiReply(code=code, line=line)
    r = _RESULT.match(rest)
    if not r:
        raise AgiProtocolError(f"200 reply without result=: {line[:120]!r}")
    tail = r.group("tail")
    data = None
    d = _DATA.match(tail)
    if d:
        data = d.group("data")
        tail = tail[d.end():]
    e = _ENDPOS.search(tail)
    return AgiReply(code=200, result=r.group("result"), data=data,
                    endpos=int(e.group("endpos")) if e else None, line=line)


def agi_quote(value: str) -> str:
    """An AGI command argument: bare when safe (as in the trace), else quoted."""
    value = "".join(ch for ch in str(value) if ch >= " " and ch != "\x7f")
    if value and re.fullmatch(r"[A-Za-z0-9_.:/+@=-]+", value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _clean(text: str | None, limit: int = 64) -> str | None:
    if text is None:
        return None
    s = "".join(ch for ch in text if ch.isprintable()).strip()[:limit]
    return None if not s or s.lower() in ("unknown", "anonymous", "<unknown>") else s


class AgiChannel(fast_agi.Request):
    """One FastAGI session (panoramisk's ``Request`` with a strict, hang-up-aware
    ``send_command`` that returns :class:`AgiReply`)."""

    def __init__(self, app: Any, headers: dict[str, str], reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, *, reply_timeout: float = 30.0,
                 play_timeout: float = 300.0) -> None:
        super().__init__(app=app, headers=headers, reader=reader, writer=writer, encoding="utf-8")
        self.reply_timeout = reply_timeout
        self.play_timeout = play_timeout
        self.hung_up = False
        self.closed = False
        self.commands: list[str] = []

    async def _readline(self, timeout: float) -> str:
        try:
            raw = await asyncio.wait_for(self.reader.readline(), timeout)
        except asyncio.TimeoutError:
            raise AgiProtocolError(f"no reply within {timeout:.0f} s") from None
        except (asyncio.LimitOverrunError, ValueError):
            raise AgiProtocolError("reply line too long") from None
        except (ConnectionError, OSError) as e:
            self.closed = True
            raise AgiHangup(f"connection lost: {e}") from None
        if not raw:
            self.closed = True
            raise AgiHangup("peer closed the connection (EOF)")
        if not raw.endswith(b"\n"):
            self.closed = True
            raise AgiHangup(f"peer closed mid-line: {raw[:80]!r}")
        return raw.decode("utf-8", "replace").rstrip("\r\n")

    async def send_command(self, command: str, *, timeout: float | None = None) -> AgiReply:  # type: ignore[override]
        if self.closed:
            raise AgiHangup("connection already closed")
        self.commands.append(command)
        try:
            self.writer.write(command.encode("utf-8") + b"\n")
            await self.writer.drain()
        except (ConnectionError, OSError) as e:
            self.closed = True
            raise AgiHangup(f"connection lost while sending: {e}") from None
        t = timeout or self.reply_timeout
        while True:
            line = await self._readline(t)
            if line == "HANGUP":            # unsolicited: the reply still follows
                self.hung_up = True
                continue
            reply = parse_reply(line)
            if reply.code == 100:           # 100 result=0 Trying...
                continue
            if reply.code == 520 and line.startswith("520-"):
                while True:                 # usage text up to "520 End of proper usage."
                    more = await self._readline(t)
                    if more.startswith("520 "):
                        break
            if reply.code == 511:
                self.hung_up = True
                raise AgiHangup(f"{command.split(' ', 1)[0]}: {line}")
            return reply

    # commands used by the IVR
    async def answer(self) -> AgiReply:
        r = await self.send_command("ANSWER")
        if r.result == "-1":
            raise AgiHangup("ANSWER failed (result=-1)")
        return r

    async def get_variable(self, name: str) -> str | None:
        r = await self.send_command(f"GET VARIABLE {name}")
        return r.data if r.result == "1" else None

    async def stream_file(self, path: str, escape_digits: str = "") -> AgiReply:
        return await self.send_command(f'STREAM FILE {agi_quote(path)} "{escape_digits}"',
                                       timeout=self.play_timeout)

    async def get_data(self, path: str, timeout_ms: int, max_digits: int) -> tuple[str | None, AgiReply]:
        """Digits typed; ``None`` for nothing at all (timeout), ``""`` for ``#`` alone."""
        r = await self.send_command(f"GET DATA {agi_quote(path)} {int(timeout_ms)} {int(max_digits)}",
                                    timeout=self.play_timeout)
        if r.code != 200:
            raise AgiProtocolError(f"GET DATA: {r.line}")
        if r.result == "-1":
            raise AgiHangup("GET DATA result=-1")
        digits = r.result
        if digits and not re.fullmatch(r"[0-9*#A-D]+", digits):
            raise AgiProtocolError(f"GET DATA returned {digits[:40]!r}")
        if digits == "" and r.data == "timeout":
            return None, r
        return digits, r

    async def set_variable(self, name: str, value: str) -> AgiReply:
        return await self.send_command(f"SET VARIABLE {name} {agi_quote(value)}")

    async def verbose(self, message: str, level: int = 1) -> AgiReply:
        msg = "".join(ch for ch in message if ch >= " ").replace('"', "'").replace("\\", "/")
        return await self.send_command(f'VERBOSE "{msg}" {level}')

    async def finish(self, drain_timeout: float = 2.0) -> None:
        """Half-close and read until Asterisk's trailing ``HANGUP`` and EOF."""
        if self.closed:
            return
        try:
            if self.writer.can_write_eof():
                self.writer.write_eof()
            deadline = time.monotonic() + drain_timeout
            while (left := deadline - time.monotonic()) > 0:
                chunk = await asyncio.wait_for(self.reader.read(4096), left)
                if not chunk:
                    break
        except (asyncio.TimeoutError, ConnectionError, OSError):
            pass
        self.closed = True


# -- the application: panoramisk's route table, a handler that cannot be broken --------------

class HotlineAgiApplication(fast_agi.Application):
    MAX_ENV_BYTES = 16384
    MAX_ENV_LINES = 200

    def __init__(self, *, env_timeout: float = 5.0, reply_timeout: float = 30.0,
                 play_timeout: float = 300.0) -> None:
        super().__init__(default_encoding="utf-8", loop=asyncio.get_running_loop())
        self.env_timeout = env_timeout
        self.reply_timeout = reply_timeout
        self.play_timeout = play_timeout
        self.sessions: set[asyncio.Task[Any]] = set()
        self.stats: dict[str, int] = {"sessions": 0, "completed": 0, "hung_up": 0, "bad_peer": 0,
                                      "failed": 0}

    def add_route(self, path: str, endpoint: Callable[[AgiChannel], Awaitable[Any]]) -> None:
        if not (asyncio.iscoroutinefunction(endpoint)
                or asyncio.iscoroutinefunction(getattr(endpoint, "__call__", None))):
            raise TypeError(f"route {path!r}: the endpoint must be async")
        if path in self._route:
            raise ValueError(f"a route {path!r} already exists")
        self._route[path] = endpoint

    async def read_environment(self, reader: asyncio.StreamReader) -> dict[str, str]:
        env: dict[str, str] = {}
        size = 0
        deadline = time.monotonic() + self.env_timeout
        for _ in range(self.MAX_ENV_LINES):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AgiProtocolError(f"incomplete AGI environment after {self.env_timeout:.0f} s")
            try:
                raw = await asyncio.wait_for(reader.readline(), left)
            except asyncio.TimeoutError:
                raise AgiProtocolError(f"incomplete AGI environment after {self.env_timeout:.0f} s") from None
            except (asyncio.LimitOverrunError, ValueError):
                raise AgiProtocolError("AGI environment line too long") from None
            if not raw or not raw.endswith(b"\n"):
                raise AgiHangup(f"peer closed before the end of the AGI environment "
                                f"({len(env)} lines received)")
            size += len(raw)
            if size > self.MAX_ENV_BYTES:
                raise AgiProtocolError("AGI environment too large")
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if line == "":
                if not env:
                    raise AgiProtocolError("empty AGI environment")
                return env
            key, sep, value = line.partition(":")
            if not sep or not re.fullmatch(r"agi_[a-z0-9_]+", key):
                raise AgiProtocolError(f"not an AGI environment line: {line[:80]!r}")
            env[key] = value[1:] if value.startswith(" ") else value
        raise AgiProtocolError("AGI environment has too many lines")

    async def handler(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One connection.  Never raises: every failure is one log line."""
        task = asyncio.current_task()
        if task is not None:
            self.sessions.add(task)
        peer = writer.get_extra_info("peername")
        peer_s = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else str(peer)
        started = time.monotonic()
        self.stats["sessions"] += 1
        channel: AgiChannel | None = None
        try:
            try:
                env = await self.read_environment(reader)
            except AgiHangup as e:
                self.stats["bad_peer"] += 1
                log.warning("agi_peer_closed_early", peer=peer_s, reason=str(e))
                return
            except AgiProtocolError as e:
                self.stats["bad_peer"] += 1
                log.warning("agi_garbage_from_peer", peer=peer_s, stage="environment", reason=str(e))
                return
            script = env.get("agi_network_script", "").split("?", 1)[0].strip("/")
            route = self._route.get(script)
            with structlog.contextvars.bound_contextvars(
                    uniqueid=env.get("agi_uniqueid", ""), agi_channel=env.get("agi_channel", "")):
                if route is None:
                    self.stats["bad_peer"] += 1
                    log.warning("agi_no_route", peer=peer_s, script=script[:80])
                    return
                channel = AgiChannel(self, env, reader, writer, reply_timeout=self.reply_timeout,
                                     play_timeout=self.play_timeout)
                try:
                    await route(channel)
                    self.stats["hung_up" if channel.hung_up or channel.closed else "completed"] += 1
                except AgiHangup as e:
                    self.stats["hung_up"] += 1
                    log.info("agi_caller_hung_up", script=script, reason=str(e))
                except AgiProtocolError as e:
                    self.stats["bad_peer"] += 1
                    log.warning("agi_garbage_from_peer", peer=peer_s, stage="dialogue", reason=str(e),
                                last_command=(channel.commands[-1] if channel.commands else "")[:80])
                except asyncio.CancelledError:
                    raise
                except Exception:
                    self.stats["failed"] += 1
                    log.exception("agi_handler_failed", script=script)
                await channel.finish()
                log.info("agi_session_ended", script=script, commands=len(channel.commands),
                         seconds=round(time.monotonic() - started, 3))
        except asyncio.CancelledError:
            raise
        except Exception:  # the last line of defence: this session only
            self.stats["failed"] += 1
            log.exception("agi_session_failed", peer=peer_s)
        finally:
            if task is not None:
                self.sessions.discard(task)
            with contextlib.suppress(Exception):
                writer.close()


# -- the IVR route ---------------------------------------------------------------------

class IvrHandler:
    """The ``ivr`` route: caller -> decision -> announcement/menu -> channel variables."""

    def __init__(self, decide: Decide, prompts: Prompts, menu: Menu, *,
                 decide_timeout: float = 2.0, prompt_wait: float = 3.0,
                 surge_active: SurgeCheck | None = None, on_callback: OnCallback | None = None,
                 callback_timeout: float = 3.0) -> None:
        self.decide = decide
        self.prompts = prompts
        self.menu = menu
        self.decide_timeout = decide_timeout
        self.prompt_wait = prompt_wait
        # surge mode hook (queues/): asked once per call, at its start
        self.surge_active = surge_active
        self.on_callback = on_callback
        self.callback_timeout = callback_timeout

    def _surge(self) -> bool:
        if self.surge_active is None or self.on_callback is None:
            return False
        try:
            return bool(self.surge_active())
        except Exception:  # noqa: BLE001 -- never keep a caller from the menu
            log.exception("ivr_surge_check_failed")
            return False

    async def _callback(self, ch: AgiChannel, action: Callback, state: IvrState, caller_num: str | None,
                        raw_num: str) -> Route | None:
        """Create the callback order; ``None`` when done (the caller is told
        and the dialplan hangs up), else the :class:`Route` to queue after all."""
        assert self.on_callback is not None
        req = CallbackRequest(queue=action.queue, caller_num=caller_num, raw_callerid=raw_num[:40],
                              customer_id=action.customer_id, outage_id=action.outage_id,
                              uniqueid=ch.headers.get("agi_uniqueid", ""))
        try:
            ref = await asyncio.wait_for(self.on_callback(req), self.callback_timeout)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 -- the caller queues instead
            log.error("ivr_callback_failed", queue=action.queue, error=f"{type(e).__name__}: {e}"[:300])
            r = await ch.stream_file(await self._playback(Say(self.menu.prompt("callback_failed"),
                                                              "callback_failed")))
            if r.failed:
                log.warning("ivr_prompt_not_played", prompt="callback_failed", reply=r.line)
            return callback_failed(state)[1]
        log.info("ivr_callback_requested", queue=action.queue, customer_id=action.customer_id,
                 order_no=str(ref or ""))
        await ch.set_variable("IVR_CHOICE", action.queue)
        await ch.set_variable("__CUSTOMER_ID", _token(action.customer_id))
        await ch.set_variable("__OUTAGE_ID", _token(action.outage_id))
        await ch.set_variable("IVR_CALLBACK", "1")
        await ch.set_variable("__IVR_NOTE", f"回拨请求 {_token(str(ref or ''))}".strip())
        await ch.stream_file(await self._playback(Say(self.menu.prompt("callback_done"), "callback_done")))
        await ch.verbose(f"IVR callback requested choice={action.queue}")
        return None

    async def _lookup(self, caller_num: str | None, account_no: str | None) -> Decision | None:
        try:
            return as_decision(await asyncio.wait_for(self.decide(caller_num, account_no),
                                                      self.decide_timeout))
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 -- the caller still gets the menu
            log.error("ivr_lookup_failed", caller_num=caller_num, account_no=account_no,
                      error=f"{type(e).__name__}: {e}"[:300])
            return None

    async def _playback(self, say: Say) -> str:
        try:
            return await asyncio.wait_for(self.prompts.playback(say.text, kind=say.kind), self.prompt_wait)
        except asyncio.TimeoutError:
            log.error("ivr_prompt_not_ready", prompt=say.name, kind=say.kind, wait_s=self.prompt_wait)
            return await self.prompts.fallback_playback(say.kind)

    async def _ask(self, ch: AgiChannel, ask: Ask) -> str | None:
        *before, last = ask.prompts
        for say in before:
            r = await ch.stream_file(await self._playback(say))
            if r.failed:   # caller gone (the next command says so) or the file is unplayable
                log.warning("ivr_prompt_not_played", prompt=say.name, reply=r.line)
        digits, _ = await ch.get_data(await self._playback(last), ask.timeout_ms, ask.max_digits)
        return digits

    async def __call__(self, ch: AgiChannel) -> None:
        env = ch.headers
        raw_num = env.get("agi_callerid", "")
        norm = normalise_phone(raw_num)
        caller_num = norm.national if norm else None
        caller_name = _clean(env.get("agi_calleridname"))
        if caller_num is None:
            log.info("ivr_caller_id_unusable", raw_callerid=raw_num[:40], caller_name=caller_name)
        state: IvrState | None = None
        # the lookup runs while Asterisk answers (ANSWER alone took 0.5 s in the trace)
        lookup = asyncio.ensure_future(self._lookup(caller_num, None)) if caller_num else None
        try:
            await ch.answer()
            asterisk_name = _clean(await ch.get_variable("CALLERID(name)"))
            decision = await lookup if lookup is not None else Decision()
            log.info("ivr_call_started", caller_num=caller_num, caller_name=asterisk_name or caller_name,
                     customer_id=decision.customer_id if decision else None,
                     outage_id=decision.outage_id if decision else None)
            surge = self._surge()
            if surge:
                log.info("ivr_surge_mode", caller_num=caller_num)
            state, action = begin(self.menu, decision or Decision(), ask_account=decision is not None,
                                  surge=surge)
            if state.phase == "outage":
                log.info("ivr_outage_announced", outage_id=state.decision.outage_id)
            while not isinstance(action, Route):
                if isinstance(action, Callback):
                    routed = await self._callback(ch, action, state, caller_num, raw_num)
                    if routed is None:
                        return
                    action = routed
                    continue
                if isinstance(action, LookupAccount):
                    account_no = action.account_no
                    found = await self._lookup(None, account_no)
                    state, action = account_resolved(state, found or Decision())
                    if found is not None and found.identified:
                        log.info("ivr_account_identified", customer_id=found.customer_id)
                        if state.phase == "outage":
                            log.info("ivr_outage_announced", outage_id=state.decision.outage_id)
                    else:
                        log.info("ivr_account_not_found", account_no=account_no, tries=state.tries)
                    continue
                phase = state.phase
                digits = await self._ask(ch, action)
                state, action = next_step(state, digits)
                if phase == "menu" and isinstance(action, Ask):
                    if action.reason == "no_input":
                        log.info("ivr_no_key", tries=state.tries, limit=self.menu.tries)
                    elif action.reason == "invalid":
                        log.info("ivr_invalid_key", digits=digits, tries=state.tries, limit=self.menu.tries)
                elif phase == "account" and isinstance(action, Ask) and action.phase == "account":
                    log.info("ivr_account_entry_rejected", digits=digits, tries=state.tries)
            await self._route(ch, action, state)
        except AgiHangup as e:
            log.info("ivr_caller_hung_up", phase=state.phase if state else "answer", reason=str(e),
                     last_command=(ch.commands[-1] if ch.commands else "")[:80])
            if not ch.closed:
                with contextlib.suppress(AgiError):
                    await ch.verbose("caller hung up during prompt")
        except (AgiProtocolError, asyncio.CancelledError):
            raise
        except Exception:
            # a bug of ours must not leave the caller without a queue: the
            # dialplan's default (agi_arg_1, as in the trace) or the menu's
            queue = env.get("agi_arg_1", "").strip()
            queue = queue if queue in self.menu.queues else self.menu.default_queue
            log.exception("ivr_failed_routed_to_default", queue=queue,
                          phase=state.phase if state else "answer")
            if not (ch.closed or ch.hung_up):
                with contextlib.suppress(AgiError):
                    await ch.set_variable("IVR_CHOICE", queue)
                    await ch.set_variable("__IVR_NOTE", "语音导航异常，默认转人工 / IVR error, routed by default")
        finally:
            if lookup is not None and not lookup.done():
                lookup.cancel()

    async def _route(self, ch: AgiChannel, route: Route, state: IvrState) -> None:
        await ch.set_variable("IVR_CHOICE", route.queue)
        await ch.set_variable("__CUSTOMER_ID", _token(route.customer_id))
        await ch.set_variable("__OUTAGE_ID", _token(route.outage_id))
        if route.note:
            await ch.set_variable("__IVR_NOTE", route.note)
        digits = ",".join(state.inputs) or "-"
        if route.by_default:
            log.info("ivr_routed_by_default", queue=route.queue, reason=route.reason, note=route.note,
                     digits=digits)
        else:
            log.info("ivr_routed", queue=route.queue, key=route.key, customer_id=route.customer_id,
                     outage_id=route.outage_id, note=route.note)
        await ch.verbose(f"IVR digits={digits} choice={route.queue}")


def _token(value: str | None) -> str:
    """Account / outage ids as channel variable values: no quotes, no spaces."""
    if not value:
        return ""
    return re.sub(r"[^A-Za-z0-9_.:-]", "", str(value))[:64]


# -- server --------------------------------------------------------------------------

@dataclass
class AgiServer:
    app: HotlineAgiApplication
    server: asyncio.base_events.Server
    host: str
    port: int
    handler: IvrHandler
    stopped: bool = field(default=False)

    @property
    def stats(self) -> dict[str, int]:
        return dict(self.app.stats, active=len(self.app.sessions))

    async def stop(self, grace: float = 2.0) -> None:
        if self.stopped:
            return
        self.stopped = True
        self.server.close()
        tasks = list(self.app.sessions)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.wait(pending, timeout=grace)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.server.wait_closed(), grace)
        log.info("agi_server_stopped", host=self.host, port=self.port)


async def start_agi_server(host: str, port: int, decide: Decide, prompts: Prompts, menu: Menu, *,
                           routes: tuple[str, ...] = ("ivr",), decide_timeout: float = 2.0, prompt_wait: float = 3.0,
                           env_timeout: float = 5.0, reply_timeout: float = 30.0,
                           play_timeout: float = 300.0, surge_active: SurgeCheck | None = None,
                           on_callback: OnCallback | None = None) -> AgiServer:
    """Listen for FastAGI on ``host:port`` (``port=0``: any free port, see ``.port``).

    ``decide(caller_num, account_no)`` -> awaitable decision (an
    :class:`ivr.menu.Decision` or anything :func:`ivr.menu.as_decision`
    understands); ``prompts``: an :class:`ivr.tts.PromptStore`.  ``routes``:
    the FastAGI script names served (``agi://host:port/<route>``).
    """
    app = HotlineAgiApplication(env_timeout=env_timeout, reply_timeout=reply_timeout,
                                play_timeout=play_timeout)
    ivr = IvrHandler(decide, prompts, menu, decide_timeout=decide_timeout, prompt_wait=prompt_wait,
                     surge_active=surge_active, on_callback=on_callback)
    for route in routes:
        app.add_route(route, ivr.__call__)
    server = await asyncio.start_server(app.handler, host, port)
    actual = server.sockets[0].getsockname()[1]
    log.info("agi_server_started", host=host, port=actual, routes=list(routes))
    return AgiServer(app=app, server=server, host=host, port=actual, handler=ivr)


def db_decide(pool: Any, *, area_code: str | None = None) -> Decide:
    """``decide`` backed by PostgreSQL: ``ivr.outage_repo.outage_for_caller``."""
    async def decide(caller_num: str | None, account_no: str | None) -> Decision:
        from ivr.outage_repo import outage_for_caller
        async with pool.acquire() as conn:
            return as_decision(await outage_for_caller(conn, caller_num=caller_num, account_no=account_no,
                                                       area_code=area_code))
    return decide

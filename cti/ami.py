"""The AMI connection: panoramisk's Manager for login, actions and pings,
with the parts panoramisk 1.4 gets wrong for a call centre wrapped:

* bytes are split into frames first and decoded per whole frame (UTF-8, GBK
  fallback) by :mod:`cti.frame` — panoramisk decodes each socket read with
  ``errors='ignore'``, which can lose a Chinese caller name cut across reads;
* repeated headers (``ChanVariable``) are kept;
* events go to one sink; an exception in it is logged, never swallowed;
* reconnect with exponential backoff and jitter, logged once per state change;
* a failed login closes the socket and retries with backoff;
* an action that is not idempotent (Originate) is never re-sent after a
  reconnect: its future fails with :class:`AmiDisconnected`.
"""
from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from typing import Callable

from panoramisk.ami_protocol import AMIProtocol
from panoramisk.manager import Manager
from panoramisk.message import Message

from .frame import Frame, FrameReader
from .logs import get_logger

log = get_logger("hotline.ami")

FrameSink = Callable[[Frame, float], None]


class AmiDisconnected(ConnectionError):
    """The AMI link dropped before the action was answered."""


class AmiActionError(RuntimeError):
    """Asterisk answered ``Response: Error``."""

    def __init__(self, action: str, message: str):
        super().__init__(f"{action} failed: {message}")
        self.action = action
        self.message = message


def frame_to_message(frame: Frame) -> Message:
    headers: dict[str, object] = {}
    for k, v in frame.headers:
        if k in headers:
            prev = headers[k]
            if isinstance(prev, list):
                prev.append(v)
            else:
                headers[k] = [prev, v]
        else:
            headers[k] = v
    return Message(headers, frame.body)


class HotlineAMIProtocol(AMIProtocol):
    """Splits and decodes whole frames before anything else sees them."""

    def connection_made(self, transport):
        super().connection_made(transport)
        self.reader: FrameReader | None = None
        self.last_read = time.monotonic()

    def data_received(self, data: bytes) -> None:  # type: ignore[override]
        now = time.time()
        self.last_read = time.monotonic()
        if self.reader is None:
            limit = getattr(self.factory, "max_frame_bytes", None) or 256 * 1024
            self.reader = FrameReader(max_frame_bytes=limit)
        try:
            frames = self.reader.feed(data)
        except Exception:  # the reader must never raise; if it does, log and resync
            log.exception("ami_reader_failed")
            self.reader = None
            return
        if self.version is None and self.reader.banner:
            self.version = self.reader.banner.partition("/")[2]
            log.info("ami_banner", version=self.version)
        for frame in frames:
            try:
                self._route(frame, now)
            except Exception:
                log.exception("ami_frame_handling_failed", ami_event=frame.event)

    def close(self):
        # fail every unanswered action now: nothing is re-sent after a reconnect
        for key in list(getattr(self, "responses", {}).keys()):
            action = self.responses.pop(key)
            fut = getattr(action, "future", None)
            if fut is not None and not fut.done():
                fut.set_exception(AmiDisconnected(f"AMI link lost before {action['Action']} was answered"))
        super().close()

    def _route(self, frame: Frame, now: float) -> None:
        action_id = frame.action_id
        if frame.response is not None or (action_id and action_id in self.responses):
            msg = frame_to_message(frame)
            self.handle_message(msg)
            return
        if frame.event is None:
            log.warning("ami_frame_without_event", headers=len(frame.headers))
            return
        factory = self.factory
        if frame.event == "Shutdown":
            log.warning("ami_asterisk_shutdown")
        sink = getattr(factory, "frame_sink", None)
        if sink is not None:
            sink(frame, now)
        # panoramisk's own listeners (FullyBooted → awaiting actions, user patterns)
        if factory.patterns:
            factory.dispatch(frame_to_message(frame))


@dataclass
class Backoff:
    initial: float = 0.5
    maximum: float = 30.0
    attempt: int = 0

    def next_delay(self) -> float:
        d = min(self.maximum, self.initial * (2 ** self.attempt))
        self.attempt += 1
        return d * (0.8 + 0.4 * random.random())

    def reset(self) -> None:
        self.attempt = 0


class HotlineManager(Manager):
    """panoramisk Manager with backoff, state logging and no unsafe resends."""

    def __init__(self, *, frame_sink: FrameSink, on_state: Callable[[str], None] | None = None,
                 backoff: Backoff | None = None, max_frame_bytes: int = 256 * 1024, **config):
        config.setdefault("protocol_factory", HotlineAMIProtocol)
        # panoramisk would re-send these after a reconnect; we never do
        config.setdefault("forgetable_actions", ("ping", "login", "originate", "logoff"))
        config.setdefault("encoding", "utf8")
        super().__init__(**config)
        self.frame_sink = frame_sink
        self.on_state_change = on_state
        self.backoff = backoff or Backoff()
        self.max_frame_bytes = max_frame_bytes
        self.state = "disconnected"
        self._closing = False
        self._reconnect_handle: asyncio.TimerHandle | None = None
        self.logins = 0

    # -- state ------------------------------------------------------------
    def _set_state(self, state: str, **kw) -> None:
        if state == self.state:
            return
        prev, self.state = self.state, state
        level = "warning" if state in ("refused", "lost", "login_failed") else "info"
        getattr(log, level)("ami_state_changed", state=state, previous=prev,
                            host=self.config["host"], port=self.config["port"], **kw)
        if self.on_state_change:
            try:
                self.on_state_change(state)
            except Exception:
                log.exception("ami_state_callback_failed")

    def _schedule_reconnect(self) -> None:
        if self._closing:
            return
        delay = self.backoff.next_delay()
        log.debug("ami_reconnect_scheduled", delay_s=round(delay, 2))
        self._reconnect_handle = self.loop.call_later(delay, self.connect)

    # -- panoramisk hooks --------------------------------------------------
    def connect(self, run_forever=False, on_startup=None, on_shutdown=None):
        if self._closing:
            return None
        if self.loop is None:
            self.loop = asyncio.get_running_loop()
        self._set_state("connecting") if self.state == "disconnected" else None
        return super().connect(run_forever, on_startup, on_shutdown)

    def connection_made(self, f):
        try:
            exc = f.exception()
        except asyncio.CancelledError:
            return
        if exc is not None:
            if self._closing:
                return
            self._set_state("refused", error=f"{type(exc).__name__}: {exc}")
            self._schedule_reconnect()
            return
        if self._closing:
            f.result()[0].close()
            return
        self._set_state("connected")
        super().connection_made(f)

    def login(self, future):
        try:
            resp = future.result()
        except Exception as exc:
            log.warning("ami_login_no_answer", error=str(exc))
            return False
        ok = bool(getattr(resp, "success", False))
        self.authenticated_future = None
        self.authenticated = ok
        if not ok:
            self._set_state("login_failed", message=str(resp.get("Message", "")))
            if self.protocol is not None:
                self.protocol.transport.close()
            return False
        self.backoff.reset()
        self.logins += 1
        self._set_state("logged_in")
        return super().login(future)

    def connection_lost(self, exc):
        self._connected = False
        if self.pinger:
            self.pinger.cancel()
            self.pinger = None
        # fail what was in flight: never re-send, never leave a caller waiting forever
        while self.awaiting_actions:
            action = self.awaiting_actions.popleft()
            if not action.future.done():
                action.future.set_exception(AmiDisconnected(f"AMI link lost before {action['Action']} was answered"))
        if self._closing:
            self._set_state("closed")
            return
        if self.state != "login_failed":
            self._set_state("lost")
        self.loop.call_soon(self.on_disconnect, self, exc)
        self._schedule_reconnect()

    def close(self):
        self._closing = True
        if self._reconnect_handle is not None:
            self._reconnect_handle.cancel()
        super().close()
        self._set_state("closed")

    async def action(self, action: dict, timeout: float = 10.0):
        """Send one action; raise :class:`AmiActionError` on ``Response: Error``
        and :class:`asyncio.TimeoutError` if Asterisk does not answer."""
        if self.protocol is None or not self.authenticated:
            raise AmiDisconnected("AMI not logged in")
        fut = self.send_action(dict(action))
        resp = await asyncio.wait_for(fut, timeout)
        if isinstance(resp, Message) and resp.get("Response") == "Error":
            raise AmiActionError(action.get("Action", "?"), str(resp.get("Message", "")))
        return resp


def make_manager(cfg, frame_sink: FrameSink, on_state=None) -> HotlineManager:
    return HotlineManager(
        frame_sink=frame_sink,
        on_state=on_state,
        backoff=Backoff(cfg.ami_backoff_initial_s, cfg.ami_backoff_max_s),
        max_frame_bytes=cfg.ami_max_frame_bytes,
        host=cfg.ami_host,
        port=cfg.ami_port,
        username=cfg.ami_username,
        secret=cfg.ami_secret,
        ping_delay=10,
        ping_interval=10,
    )


__all__ = ["AmiActionError", "AmiDisconnected", "Backoff", "HotlineManager", "make_manager"]

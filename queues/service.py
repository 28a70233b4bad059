"""Wallboard service: pushes the live queue picture to supervisors, runs the
surge switch, and carries out agent control actions through the AMI.

* Push: on every change (coalesced to at most one message per
  ``coalesce_s``) and on a ``tick_s`` tick (wait times grow by themselves),
  so a wallboard is never more than ``tick_s`` (1 s) stale.  Each socket has
  its own send queue (:class:`cti.hub.Hub`, topic ``wallboard``).
* Surge: :func:`queues.model.decide_surge` on every tick; the IVR asks
  :meth:`WallboardService.surge_active`.
* Actions: QueueAdd / QueueRemove / QueuePause, each answered by Asterisk
  (its error message is kept) and then *confirmed* by the QueueMember*
  event that shows the change in the live model.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import asdict
from typing import Any, Callable

from cti.aio import stop_task
from cti.ami import AmiActionError, AmiDisconnected, AmiTimeout, HotlineManager
from cti.hub import Hub
from cti.logs import get_logger

from .live import QueueBoard
from .model import SurgeSettings, SurgeState, decide_surge, set_surge_mode

log = get_logger("hotline.wallboard")

TOPIC = "wallboard"

# Asterisk's error messages (trace 05) → what a supervisor reads first
ASTERISK_ERRORS_ZH = {
    "Interface not found": "该坐席不在队列中",
    "Unable to add interface: Already there": "该坐席已在队列中",
    "Unable to remove interface: Not there": "该坐席不在此队列中",
    "Member not dynamic": "静态坐席(配置文件中固定)不能签出",
    "No such queue": "队列不存在",
    "Invalid interface, queuename or penalty": "坐席或队列无效",
}


def explain_ami_error(message: str) -> str:
    """Chinese-first text wrapping Asterisk's own message."""
    for en, zh in ASTERISK_ERRORS_ZH.items():
        if en.lower() in message.lower():
            return f"操作失败：{zh} / Asterisk: {message}"
    return f"操作失败 / Asterisk: {message}"


class ActionFailed(Exception):
    """An agent control action failed; ``status`` is the HTTP status to use."""

    def __init__(self, status: int, code: str, message: str, asterisk: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.asterisk = asterisk


class WallboardService:
    def __init__(self, board: QueueBoard, hub: Hub, *, surge: SurgeSettings | None = None,
                 status: dict | None = None, tick_s: float = 1.0, coalesce_s: float = 0.1,
                 confirm_timeout_s: float = 5.0, action_timeout_s: float = 10.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.board = board
        self.hub = hub
        self.surge_settings = surge or SurgeSettings()
        self.surge_settings.check()
        self.surge = SurgeState(since=clock())
        self.status = status if status is not None else {}
        self.tick_s = tick_s
        self.coalesce_s = coalesce_s
        self.confirm_timeout_s = confirm_timeout_s
        self.action_timeout_s = action_timeout_s
        self.clock = clock
        self.manager: HotlineManager | None = None
        self.callbacks_today = 0
        self.callbacks_total = 0
        self.callback_day = board.day
        self.pushes = 0
        self.action_errors = 0
        self._dirty = asyncio.Event()
        self._waiters: list[asyncio.Future] = []
        self._task: asyncio.Task | None = None
        board.listeners.append(self._on_board_change)

    # --------------------------------------------------------------- wiring
    def attach(self, manager: HotlineManager, live=None) -> None:
        """Listen to the manager's event frames (after
        :func:`cti.resync.install_resync`, before ``connect()``); ``live``
        is the resync's :class:`cti.live.LiveModel`."""
        self.manager = manager
        if live is not None:
            self.board.live = live
        manager.frame_listeners.append(self.board.on_frame)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="wallboard-push")

    async def stop(self) -> None:
        await stop_task(self._task)
        self._task = None

    def _on_board_change(self) -> None:
        self._dirty.set()
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(None)

    # ----------------------------------------------------------------- push
    async def _run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._dirty.wait(), self.tick_s)
            except asyncio.TimeoutError:
                pass
            self._dirty.clear()
            try:
                self.evaluate_surge()
                if self.hub.count(TOPIC):
                    self.hub.publish(TOPIC, self.snapshot())
                    self.pushes += 1
            except Exception:
                log.exception("wallboard_push_failed")
            await asyncio.sleep(self.coalesce_s)

    def notify(self) -> None:
        """Something outside the frame stream changed (surge switch, callback)."""
        self._on_board_change()

    def snapshot(self) -> dict[str, Any]:
        now = self.clock()
        view = self.board.view(now)
        if self.callback_day != self.board.day:
            self.callback_day, self.callbacks_today = self.board.day, 0
        s = self.surge
        view["surge"] = {"active": s.active, "mode": s.mode, "auto_on": s.auto_on, "since": s.since,
                         "reason": s.reason, "changed_by": s.changed_by,
                         "settings": asdict(self.surge_settings), "callbacks_today": self.callbacks_today}
        view["ami"] = self.status.get("ami", "unknown")
        return view

    # ---------------------------------------------------------------- surge
    def evaluate_surge(self, now: float | None = None) -> SurgeState:
        now = self.clock() if now is None else now
        waiting, longest = self.board.longest_wait(now)
        before = self.surge
        self.surge = decide_surge(before, self.surge_settings, waiting, longest, now)
        if self.surge.active != before.active:
            log.warning("surge_mode_switched", active=self.surge.active, mode=self.surge.mode,
                        by=self.surge.changed_by, reason=self.surge.reason, waiting=waiting,
                        longest_wait_s=round(longest))
        return self.surge

    def surge_active(self) -> bool:
        return self.surge.active

    def set_surge_mode(self, mode: str, who: str = "supervisor") -> SurgeState:
        before = self.surge.active
        self.surge = set_surge_mode(self.surge, mode)
        self.evaluate_surge()
        log.warning("surge_mode_set", mode=mode, by=who, active=self.surge.active, was_active=before)
        self.notify()
        return self.surge

    def callback_requested(self) -> None:
        if self.callback_day != self.board.day:
            self.callback_day, self.callbacks_today = self.board.day, 0
        self.callbacks_today += 1
        self.callbacks_total += 1
        self.notify()

    # -------------------------------------------------------------- actions
    async def _wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            left = deadline - loop.time()
            if left <= 0:
                return False
            fut = loop.create_future()
            self._waiters.append(fut)
            try:
                await asyncio.wait_for(fut, left)
            except asyncio.TimeoutError:
                return predicate()
        return True

    async def _send(self, action: dict[str, Any]) -> str:
        if self.manager is None:
            raise ActionFailed(503, "ami_unavailable", "与交换机的连接未就绪 / AMI link not ready")
        try:
            result = await self.manager.action(action, self.action_timeout_s)
        except AmiActionError as exc:
            self.action_errors += 1
            log.warning("agent_action_rejected", action=action.get("Action"), interface=action.get("Interface"),
                        queue=action.get("Queue", ""), asterisk=exc.message)
            raise ActionFailed(409, "asterisk_error", explain_ami_error(exc.message), exc.message) from None
        except AmiTimeout:
            self.action_errors += 1
            raise ActionFailed(504, "ami_timeout", "交换机未响应 / Asterisk did not answer in time") from None
        except AmiDisconnected:
            self.action_errors += 1
            raise ActionFailed(503, "ami_disconnected",
                               "与交换机的连接已断开，操作可能未执行 / AMI link down, the action may not have run") \
                from None
        return result.message

    def _members(self, iface: str, queue: str):
        return [mem for (q, i), mem in self.board.live.state.members.items()
                if i == iface and (not queue or q == queue)]

    async def pause(self, iface: str, queue: str, paused: bool, reason: str, who: str = "") -> dict[str, Any]:
        action: dict[str, Any] = {"Action": "QueuePause", "Interface": iface, "Paused": paused}
        if queue:
            action["Queue"] = queue
        if paused and reason:
            action["Reason"] = reason
        message = await self._send(action)

        def done() -> bool:
            ms = self._members(iface, queue)
            return bool(ms) and all(mm.paused == paused and (not paused or not reason or mm.paused_reason == reason)
                                    for mm in ms)
        confirmed = await self._wait_for(done, self.confirm_timeout_s)
        log.info("agent_paused" if paused else "agent_unpaused", interface=iface, queue=queue or "*",
                 reason=reason, by=who, confirmed=confirmed)
        return {"ok": True, "confirmed": confirmed, "asterisk": message}

    async def login(self, iface: str, queue: str, name: str = "", paused: bool = False, reason: str = "",
                    who: str = "") -> dict[str, Any]:
        action: dict[str, Any] = {"Action": "QueueAdd", "Queue": queue, "Interface": iface, "Paused": paused}
        if name:
            action["MemberName"] = name
        if paused and reason:
            action["Reason"] = reason
        message = await self._send(action)
        confirmed = await self._wait_for(lambda: bool(self._members(iface, queue)), self.confirm_timeout_s)
        log.info("agent_logged_in", interface=iface, queue=queue, by=who, confirmed=confirmed)
        return {"ok": True, "confirmed": confirmed, "asterisk": message}

    async def logout(self, iface: str, queue: str, who: str = "") -> dict[str, Any]:
        message = await self._send({"Action": "QueueRemove", "Queue": queue, "Interface": iface})
        confirmed = await self._wait_for(lambda: not self._members(iface, queue), self.confirm_timeout_s)
        log.info("agent_logged_out", interface=iface, queue=queue, by=who, confirmed=confirmed)
        return {"ok": True, "confirmed": confirmed, "asterisk": message}


__all__ = ["ASTERISK_ERRORS_ZH", "ActionFailed", "TOPIC", "WallboardService", "explain_ami_error"]

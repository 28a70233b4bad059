"""Push to agent pages: each websocket has its own bounded send queue and
writer task, so one slow browser never delays another agent's screen-pop."""
from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from .logs import get_logger

log = get_logger("hotline.hub")


class Socket(Protocol):
    async def send_str(self, data: str) -> None: ...
    async def close(self) -> Any: ...


@dataclass(eq=False)
class Subscriber:
    topic: str
    ws: Socket
    queue: asyncio.Queue = field(default_factory=lambda: asyncio.Queue(maxsize=256))
    task: asyncio.Task | None = None
    dropped: int = 0
    # Frames never interleave or overtake: ``sending`` while the writer
    # task writes one; ``reserved`` from the moment Hub.publish_now picks
    # this idle socket until its frame is written (the writer waits on
    # ``free``, so what is published meanwhile comes after it)
    sending: bool = False
    reserved: bool = False
    free: asyncio.Event = field(default_factory=asyncio.Event)
    dead: bool = False

    def idle(self) -> bool:
        """Nothing waiting and nothing being written: a frame written now
        comes after everything published before it."""
        return not (self.dead or self.sending or self.reserved) and self.queue.empty()

    async def _writer(self) -> None:
        while True:
            text = await self.queue.get()
            while self.reserved:
                await self.free.wait()
            self.sending = True
            try:
                await self.ws.send_str(text)
            except Exception as exc:  # closed socket: stop quietly, the handler unsubscribes
                self.dead = True
                log.info("ws_send_failed", topic=self.topic, error=str(exc))
                return
            finally:
                self.sending = False

    def reserve(self) -> None:
        self.reserved = True
        self.free.clear()

    def release(self) -> None:
        self.reserved = False
        self.free.set()


# what the supervisors' pages (the wallboard) hear besides the wallboard's own
# figures: deadline warnings and escalations of work orders (SLA alerts)
SUPERVISOR_TOPIC = "supervisor"


def encode(message: dict[str, Any]) -> str:
    """A hub message as its sockets (and the other nodes) receive it."""
    return json.dumps(message, ensure_ascii=False, default=str)


class Hub:
    """Topics are ``agent:<id>`` (screen-pops), ``wallboard`` and
    :data:`SUPERVISOR_TOPIC`."""

    def __init__(self) -> None:
        self._subs: dict[str, set[Subscriber]] = defaultdict(set)
        self.sent = 0
        # other nodes (cti.cluster): publish() also hands the message to each relay
        # relay(topic, message, text): text is the message as this hub encoded it
        self.relays: list[Callable[[str, dict[str, Any], str], None]] = []
        # (cti.cluster) watcher(topic, True) when this node's first socket for
        # a topic subscribes, watcher(topic, False) when its last one leaves
        self.watchers: list[Callable[[str, bool], None]] = []
        # each agent's current screen-pop and its call state, replayed to a page
        # that connects later (opened or reloaded mid-call):
        # agent topic -> [pop, call_state, remote (came from another node)]
        self._current: dict[str, list[Any]] = {}

    def subscribe(self, topic: str, ws: Socket) -> Subscriber:
        sub = Subscriber(topic, ws)
        sub.task = asyncio.create_task(sub._writer())
        subs = self._subs[topic]
        subs.add(sub)
        for m in self.replay(topic):  # this page missed the pop: replay it (to this page only)
            sub.queue.put_nowait(encode(m))
        if len(subs) == 1:
            self._watch(topic, True)
        return sub

    def replay(self, topic: str, *, local_only: bool = False) -> list[dict[str, Any]]:
        """What a page that opens now is sent first: the agent's current pop
        (marked ``replay``) and its call state.  ``local_only``: not if the
        call is another node's (that node replays its own calls)."""
        cur = self._current.get(topic)
        if cur is None or (local_only and cur[2]):
            return []
        pop, state, _remote = cur
        return [m for m in ({**pop, "replay": True}, state) if m is not None]

    def topics(self) -> list[str]:
        """The topics this node has sockets for."""
        return list(self._subs)

    def _watch(self, topic: str, opened: bool) -> None:
        for watcher in self.watchers:
            try:
                watcher(topic, opened)
            except Exception:
                log.exception("hub_watcher_failed", topic=topic)

    def _remember(self, topic: str, message: dict[str, Any], remote: bool = False) -> None:
        if not topic.startswith("agent:"):
            return
        kind = message.get("type")
        if kind == "screen_pop":
            self._current[topic] = [message, None, remote]
            return
        cur = self._current.get(topic)
        if cur is None or cur[0].get("linkedid") != message.get("linkedid"):
            return
        if kind == "call_state":
            cur[1] = message
        elif kind == "screen_pop_withdrawn":
            del self._current[topic]
        elif kind in ("screen_pop_update", "screen_pop_order_saved") and message.get("pop"):
            cur[0] = message["pop"]

    def unsubscribe(self, sub: Subscriber) -> None:
        topic = sub.topic
        subs = self._subs.get(topic)
        if sub.task is not None:
            sub.task.cancel()
        if subs is None or sub not in subs:
            return
        subs.discard(sub)
        if not subs:
            del self._subs[topic]
            cur = self._current.get(topic)
            if cur is not None and cur[2]:
                # another node's call: that node stops relaying to us now and
                # replays it again when a page here opens (cti.cluster)
                del self._current[topic]
            self._watch(topic, False)

    def count(self, topic: str) -> int:
        return len(self._subs.get(topic, ()))

    def publish(self, topic: str, message: dict[str, Any]) -> int:
        """Deliver to this node's sockets and relay to the other nodes."""
        text = encode(message)
        n = self.deliver(topic, message, text, remote=False)
        self._relay(topic, message, text)
        return n

    def _relay(self, topic: str, message: dict[str, Any], text: str) -> None:
        for relay in self.relays:
            try:
                relay(topic, message, text)
            except Exception:
                log.exception("hub_relay_failed", topic=topic)

    async def publish_now(self, topic: str, message: dict[str, Any]) -> int:
        """:meth:`publish`, but to a socket with nothing waiting the frame is
        written by the caller's task before this returns, not one loop turn
        later by the socket's writer task (the screen-pop: under load a loop
        turn is milliseconds).  A socket with frames waiting gets it queued
        behind them, as publish() would."""
        text = encode(message)
        self._remember(topic, message)
        subs = list(self._subs.get(topic, ()))
        now = [sub for sub in subs if sub.idle()]
        for sub in now:  # before any await: whatever is published from here on queues behind
            sub.reserve()
        n = self._enqueue(topic, [sub for sub in subs if sub not in now], text)
        self._relay(topic, message, text)
        done = 0
        try:
            for sub in now:
                try:
                    await sub.ws.send_str(text)
                    n += 1
                    self.sent += 1
                except Exception as exc:  # its writer task and the page's handler clean up
                    sub.dead = True
                    log.info("ws_send_failed", topic=topic, error=str(exc))
                finally:
                    done += 1
                    sub.release()
        finally:  # cancelled half-way: the sockets not written yet get it the usual way
            rest = now[done:]
            if rest:
                n += self._enqueue(topic, rest, text)
                for sub in rest:
                    sub.release()
        return n

    def _enqueue(self, topic: str, subs: list[Subscriber], text: str) -> int:
        n = 0
        for sub in subs:
            try:
                sub.queue.put_nowait(text)
                n += 1
            except asyncio.QueueFull:
                sub.dropped += 1
                log.warning("ws_queue_full", topic=topic, dropped=sub.dropped)
        self.sent += n
        return n

    def deliver(self, topic: str, message: dict[str, Any], text: str | None = None, *,
                remote: bool = True) -> int:
        """Deliver to this node's sockets only (``remote``: a message from
        another node).  ``text``: the message already encoded (:func:`encode`)."""
        subs = self._subs.get(topic)
        if not remote or subs:
            # another node's pop is kept only while a page here shows it:
            # that node replays it to a page that opens later
            self._remember(topic, message, remote)
        if not subs:
            return 0
        return self._enqueue(topic, list(subs), encode(message) if text is None else text)

    async def close(self) -> None:
        for subs in list(self._subs.values()):
            for sub in list(subs):
                self.unsubscribe(sub)
                try:
                    await sub.ws.close()
                except Exception:
                    pass

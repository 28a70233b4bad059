"""Several service processes on one PostgreSQL, each with its own Asterisk.

Fan-out through PostgreSQL ``LISTEN``/``NOTIFY`` on one channel:

* **hub messages** for agents and supervisors (screen-pops, withdrawals,
  call states, SLA alerts) published on one node are delivered to the
  sockets connected to every other node (:meth:`cti.hub.Hub.deliver`).  A
  payload over :data:`MAX_PAYLOAD` bytes is stored in ``cluster_messages``
  and the notification carries its id; the receiving node loads it.
* **call milestones**: after a node writes a ``calls`` row it says so
  (coalesced); the other nodes reload today's figures of the other nodes'
  calls from the shared ``calls`` table into their wallboard
  (:meth:`queues.live.QueueBoard.set_remote`).

A hub message goes out only when another node has a page for its topic
(**presence**): each node says when its first socket for a topic opens and
its last one closes, lists all its topics when its listener (re)connects
(and the others answer with theirs) and every ``heartbeat_s`` (a node not
heard from for three heartbeats is forgotten; one that stops says so).  A
single node thus sends no notification at all for its pops.  A page that
opens on node B while node A already has a pop for that agent gets it when A
learns of the page: A replays its current pop and call state to B alone,
as a page opened on A would get them.  Call milestones go out only while
another node is known; a node that hears of a new one reloads its figures.

Every notification names its origin node; a node ignores its own.  The
listener has a dedicated connection and reconnects when it drops (a
notification sent while it is down is lost for that node; the wallboard is
reloaded and the topics asked again after a reconnect).  Delivery order per
origin node is kept: one sender task, one receiver task.
"""
from __future__ import annotations

import asyncio
import json
import time
from typing import Any, Callable

import asyncpg

from .hub import SUPERVISOR_TOPIC, Hub
from .logs import get_logger

log = get_logger("hotline.cluster")

CHANNEL = "hotline_cluster"
MAX_PAYLOAD = 7900  # PostgreSQL's limit is 8000 bytes
RELAYED = ("agent:", SUPERVISOR_TOPIC)  # the wallboard topic is computed on each node


class ClusterBus:
    def __init__(self, dsn: str, node_id: str, hub: Hub, pool: asyncpg.Pool, *,
                 on_calls_changed: Callable[[], Any] | None = None, coalesce_s: float = 0.2,
                 reconnect_s: float = 1.0, max_queue: int = 10000, gather_s: float = 0.002,
                 heartbeat_s: float = 30.0) -> None:
        """``gather_s``: the sender waits this long after the first message
        of a batch for more (one NOTIFY statement then carries the messages
        of several calls; a storm makes a message every ~0.5 ms).
        ``heartbeat_s``: how often this node lists its topics to the others."""
        self.dsn = dsn
        self.node_id = node_id
        self.hub = hub
        self.pool = pool
        self.on_calls_changed = on_calls_changed
        self.coalesce_s = coalesce_s
        self.reconnect_s = reconnect_s
        self.gather_s = gather_s
        self.heartbeat_s = heartbeat_s
        # presence of the other nodes: node -> its topics, topic -> nodes,
        # node -> when it was last heard (monotonic)
        self._node_topics: dict[str, set[str]] = {}
        self._present: dict[str, set[str]] = {}
        self._heard: dict[str, float] = {}
        # every notification of this node starts with this text (compact
        # JSON, "n" first): its own are skipped before they are decoded
        self._own_prefix = '{"n":' + json.dumps(node_id, ensure_ascii=False) + ","
        self._out: asyncio.Queue = asyncio.Queue(maxsize=max_queue)
        self._in: asyncio.Queue = asyncio.Queue(maxsize=max_queue)
        self._calls_dirty = False
        self._calls_event = asyncio.Event()
        self._remote_dirty = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._listening = asyncio.Event()
        self.sent = self.received = self.refs = self.dropped = self.reconnects = 0
        self.send_failures = 0

    # ------------------------------------------------------------- outward
    def relay(self, topic: str, message: dict[str, Any], text: str | None = None) -> None:
        """:attr:`cti.hub.Hub.relays` hook.  ``text``: the message as the hub
        encoded it; the notification embeds it rather than encoding it again
        (same JSON as :func:`_compact` of the item, but for whitespace)."""
        if topic not in self._present:  # no other node has a page for it
            return
        if text is None:
            self._put_out({"n": self.node_id, "k": "hub", "t": topic, "m": message})
        else:
            self._put_out(f'{self._own_prefix}"k":"hub","t":{json.dumps(topic, ensure_ascii=False)},"m":{text}}}')

    def watch(self, topic: str, opened: bool) -> None:
        """:attr:`cti.hub.Hub.watchers` hook: this node's first page for a
        topic opened, or its last one closed."""
        if topic.startswith(RELAYED):
            self._put_out({"n": self.node_id, "k": "on" if opened else "off", "t": topic})

    def knows(self, topic: str) -> bool:
        """Another node has a page for ``topic`` (as far as this node heard)."""
        return topic in self._present

    def _announce(self, hello: bool = False) -> None:
        """All this node's topics; ``hello``: the others answer with theirs."""
        topics = sorted(t for t in self.hub.topics() if t.startswith(RELAYED))
        self._put_out({"n": self.node_id, "k": "all", "ts": topics, "hello": hello})

    def _set_topics(self, node: str, topics: set[str]) -> set[str]:
        """Node ``node`` has pages for ``topics`` (and no others); returns the
        ones it did not have."""
        old = self._node_topics.pop(node, set())
        for t in old - topics:
            nodes = self._present.get(t)
            if nodes is not None:
                nodes.discard(node)
                if not nodes:
                    del self._present[t]
        for t in topics - old:
            self._present.setdefault(t, set()).add(node)
        if topics:
            self._node_topics[node] = topics
        return topics - old

    def _replay_to(self, node: str, topics: set[str]) -> None:
        """Node ``node`` just opened pages for ``topics``: what a page opened
        here would be replayed, of this node's own calls, goes to it alone."""
        for topic in topics:
            for m in self.hub.replay(topic, local_only=True):
                self._put_out({"n": self.node_id, "k": "hub", "t": topic, "m": m, "to": node})

    def _on_presence(self, node: str, item: dict[str, Any]) -> None:
        kind = item.get("k")
        new_node = node not in self._heard
        self._heard[node] = time.monotonic()
        if kind == "bye":
            self._set_topics(node, set())
            del self._heard[node]
            return
        if new_node:  # its calls so far are in the table: count them now
            self._remote_dirty.set()
        topics = self._node_topics.get(node, set())
        if kind == "all":
            topics = {str(t) for t in item.get("ts") or ()}
            if item.get("hello"):
                self._announce()
        elif kind == "on":
            topics = topics | {str(item.get("t"))}
        elif kind == "off":
            topics = topics - {str(item.get("t"))}
        topics = {t for t in topics if t.startswith(RELAYED)}
        self._replay_to(node, self._set_topics(node, topics))

    def _forget_silent(self) -> None:
        """Nodes not heard from for three heartbeats are gone."""
        limit = time.monotonic() - 3 * self.heartbeat_s
        for node in [n for n, t in self._heard.items() if t < limit]:
            log.warning("cluster_node_silent", node=node)
            self._set_topics(node, set())
            del self._heard[node]

    def calls_changed(self) -> None:
        """``calls`` rows were written here (:attr:`cti.screenpop.CallRecorder.on_written`);
        coalesced into one notification."""
        self._calls_dirty = True
        self._calls_event.set()

    def _put_out(self, item: dict[str, Any] | str) -> None:
        """``item``: a notification, or its text already encoded (compact
        JSON that starts with this node's prefix)."""
        try:
            self._out.put_nowait(item)
        except asyncio.QueueFull:
            self.dropped += 1
            log.warning("cluster_queue_full", dropped=self.dropped)

    async def _sender(self) -> None:
        while True:
            batch = [await self._out.get()]
            if self.gather_s > 0 and self._out.qsize() < 200:
                await asyncio.sleep(self.gather_s)
            while not self._out.empty() and len(batch) < 200:
                batch.append(self._out.get_nowait())
            payloads: list[str] = []
            try:
                async with self.pool.acquire() as conn:
                    for item in batch:
                        text = item if isinstance(item, str) else _compact(item)
                        if len(text.encode()) > MAX_PAYLOAD:
                            ref = await conn.fetchval(
                                "INSERT INTO cluster_messages (origin, body) VALUES ($1, $2) RETURNING id",
                                self.node_id, text)
                            text = _compact({"n": self.node_id, "k": "ref", "id": ref})
                            self.refs += 1
                        payloads.append(text)
                    # one statement: the notifications keep their order
                    await conn.execute("SELECT pg_notify($1, p) FROM unnest($2::text[]) WITH ORDINALITY AS x(p, i) "
                                       "ORDER BY i", CHANNEL, payloads)
                self.sent += len(payloads)
            except Exception as exc:
                self.send_failures += 1
                log.error("cluster_notify_failed", messages=len(batch), error=f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(self.reconnect_s)

    async def _calls_notifier(self) -> None:
        while True:
            await self._calls_event.wait()
            self._calls_event.clear()
            if self._calls_dirty:
                self._calls_dirty = False
                if self._heard:  # a node that starts later reads the table itself
                    self._put_out({"n": self.node_id, "k": "calls"})
            await asyncio.sleep(self.coalesce_s)

    # -------------------------------------------------------------- inward
    def _on_notify(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        if payload.startswith(self._own_prefix):
            return  # our own (PostgreSQL sends every listener every notification)
        try:
            item = json.loads(payload)
        except ValueError:
            return
        if not isinstance(item, dict) or item.get("n") == self.node_id:
            return
        try:
            self._in.put_nowait(item)
        except asyncio.QueueFull:
            self.dropped += 1

    async def _listener(self) -> None:
        while True:
            conn = None
            try:
                conn = await asyncpg.connect(self.dsn)
                lost = asyncio.Event()
                conn.add_termination_listener(lambda c: lost.set())
                await conn.add_listener(CHANNEL, self._on_notify)
                self._listening.set()
                self._remote_dirty.set()  # missed changes while not listening
                self._announce(hello=True)  # and the other nodes' pages: they list them again
                log.info("cluster_listening", node=self.node_id)
                while not lost.is_set() and not conn.is_closed():
                    try:
                        await asyncio.wait_for(lost.wait(), 5.0)
                    except asyncio.TimeoutError:
                        await conn.execute("SELECT 1")  # notice a dead link
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("cluster_listener_lost", error=f"{type(exc).__name__}: {exc}")
            finally:
                self._listening.clear()
                if conn is not None and not conn.is_closed():
                    try:
                        await asyncio.wait_for(conn.close(), 2.0)
                    except (Exception, asyncio.CancelledError):
                        conn.terminate()
            self.reconnects += 1
            await asyncio.sleep(self.reconnect_s)

    async def _receiver(self) -> None:
        while True:
            item = await self._in.get()
            self.received += 1
            try:
                if item.get("k") == "ref":
                    async with self.pool.acquire() as conn:
                        body = await conn.fetchval("SELECT body FROM cluster_messages WHERE id = $1", int(item["id"]))
                    if body is None:
                        continue
                    item = json.loads(body)
                kind = item.get("k")
                if kind == "hub":
                    if item.get("to", self.node_id) == self.node_id:
                        self.hub.deliver(str(item["t"]), item["m"])
                else:
                    if kind == "calls":
                        self._remote_dirty.set()
                    self._on_presence(str(item.get("n")), item)
            except Exception:
                log.exception("cluster_receive_failed")

    async def _remote_refresher(self) -> None:
        while True:
            await self._remote_dirty.wait()
            self._remote_dirty.clear()
            if self.on_calls_changed is not None:
                try:
                    await self.on_calls_changed()
                except Exception as exc:
                    log.warning("cluster_refresh_failed", error=f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(self.coalesce_s)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            self._announce()
            self._forget_silent()

    async def _janitor(self) -> None:
        while True:
            await asyncio.sleep(600)
            try:
                async with self.pool.acquire() as conn:
                    await conn.execute("DELETE FROM cluster_messages WHERE created_at < now() - interval '1 hour'")
            except Exception:
                pass

    # ----------------------------------------------------------- lifecycle
    async def start(self, timeout: float = 10.0) -> None:
        self.hub.relays.append(self.relay)
        self.hub.watchers.append(self.watch)
        for fn in (self._listener, self._sender, self._receiver, self._calls_notifier, self._remote_refresher,
                   self._heartbeat, self._janitor):
            self._tasks.append(asyncio.create_task(fn(), name=f"cluster-{fn.__name__.strip('_')}"))
        try:
            await asyncio.wait_for(self._listening.wait(), timeout)
        except asyncio.TimeoutError:
            log.warning("cluster_not_listening_yet", node=self.node_id)

    async def flush(self, timeout: float = 5.0) -> None:
        """Wait until everything queued so far has been sent (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        while (not self._out.empty() or self._calls_dirty) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        if self.relay in self.hub.relays:
            self.hub.relays.remove(self.relay)
        if self.watch in self.hub.watchers:
            self.hub.watchers.remove(self.watch)
        self._put_out({"n": self.node_id, "k": "bye"})  # the others stop relaying to us now
        await self.flush(2.0)
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass
        self._tasks.clear()


def _compact(item: dict[str, Any]) -> str:
    """A notification's text: compact JSON, the origin node ("n") first."""
    return json.dumps(item, ensure_ascii=False, default=str, separators=(",", ":"))


def wallboard_refresher(pool: asyncpg.Pool, board: Any, node_id: str, since: float, threshold_s: float):
    """Reload the other nodes' share of today's figures from the calls table
    (calls queued since this node started; earlier ones were in the seed)."""
    from queues.metrics import day_bounds, local_day
    from queues.model import tally_of
    from queues.repository import stints_between

    async def refresh() -> None:
        day = local_day(board.clock())
        start, end = day_bounds(day)
        async with pool.acquire() as conn:
            stints = await stints_between(conn, max(start, since), end, other_nodes_than=node_id)
        board.set_remote(day, tally_of(stints, threshold_s))

    return refresh


__all__ = ["CHANNEL", "ClusterBus", "MAX_PAYLOAD", "wallboard_refresher"]

"""Frame → domain event → call tracker → handlers, in arrival order.

The AMI reader only enqueues (it must never block on the database); one
worker applies events in order and awaits each handler.  A handler that
raises is logged with the call context and the next handler still runs."""
from __future__ import annotations

import asyncio
import gc
import time
import zlib
from dataclasses import dataclass
from typing import Awaitable, Callable

from .aio import stop_task
from .events import AgentEvent, ChannelEvent, DomainEvent, UnknownEvent
from .frame import Frame
from .logs import bind_call, clear_call, get_logger
from .callflow import CallFlow
from .normalise import Normaliser
from .tracker import Call, CallTracker

log = get_logger("hotline.pipeline")

Handler = Callable[[DomainEvent, "Call | None"], Awaitable[None]]


@dataclass
class PipelineStats:
    frames: int = 0
    events: int = 0
    unknown: int = 0
    handler_errors: int = 0
    queue_full: int = 0
    backpressure: int = 0  # times the reader was asked to pause
    behind: int = 0  # times the worker fell behind_frames behind (see CallPipeline._run)


class _InOrder:
    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[], Awaitable[None]]) -> None:
        self.fn = fn


class CallPipeline:
    def __init__(self, handlers: list[Handler] | None = None, tracker: CallTracker | None = None,
                 max_queue: int = 100_000, shards: int = 32) -> None:
        self.normaliser = Normaliser()
        self.tracker = tracker or CallTracker()
        # call-level outcomes (transfers, pickups, who called whom) beside the
        # linkedid-keyed queue-call model of the screen-pop
        # (nothing reads ended calls' shapes later: a short history is kept)
        self.callflow = CallFlow(max_ended_records=2_000, max_dead_channels=8_000)
        self.handlers: list[Handler] = list(handlers or [])
        self.stats = PipelineStats()
        self._queue: asyncio.Queue[tuple[Frame, float]] = asyncio.Queue(maxsize=max_queue)
        self._task: asyncio.Task | None = None
        self.listeners: list[Callable[[DomainEvent, Call | None], None]] = []
        self._full_warned_at = -1e9
        # Handlers (database writes, screen-pops) run in per-call shards: the
        # events of one call (one linkedid) are handled in order, one at a
        # time; different calls do not wait for each other's database round
        # trips.  Normalising, tracking and listeners stay in the one ordered
        # worker above.
        self._shards: list[asyncio.Queue] = [asyncio.Queue() for _ in range(max(1, shards))]
        self._shard_tasks: list[asyncio.Task] = []
        self._wants: dict[type, tuple[Handler, ...]] = {}
        self._wants_for = -1
        # Backpressure: past high_water frames waiting, on_backpressure(True)
        # (the AMI reader pauses); at low_water, on_backpressure(False).
        # A surge beyond what the worker handles waits here rather than in
        # Asterisk, which drops an AMI client it cannot write to for its
        # writetimeout (5 s): so the reader pauses only near the bound, and
        # briefly (from 90 % down to 85 %).  max_queue stays as the last
        # guard against a flood.
        self.on_backpressure: Callable[[bool], None] | None = None
        self.high_water = max(1, max_queue * 9 // 10)
        self.low_water = max(0, max_queue * 85 // 100)
        self._pressed = False
        self.slice_s = 0.0005  # the ordered worker yields to the loop at least this often
        # "Behind": this many frames wait (a surge beyond what the worker
        # handles, ~0.5 s of work).  With pause_gc the cyclic garbage
        # collector then waits until the backlog is gone (the waiting frames
        # would otherwise be walked again and again: pauses of 50-90 ms), for
        # at most gc_max_pause_s; reference counting still frees everything
        # that is not a cycle.
        self.behind_frames = 2_000
        self.behind = False
        self.pause_gc = False
        self.gc_max_pause_s = 120.0
        self._gc_paused_at: float | None = None
        # awaited by drain() once the shards are empty (write-behind buffers)
        self.flushers: list[Callable[[], Awaitable[None]]] = []
        # The fast lane: AMI event name -> hook called with the typed event as
        # soon as its frame is read, ahead of any backlog (the screen-pop's
        # AgentCalled).  The frame still takes the ordered path afterwards;
        # a hook must only start work that its ordered handler waits for.
        # A hook returns the task it started (or None): while such a task is
        # in flight the ordered worker takes one frame per loop turn, so that
        # the screen-pop's few steps do not each wait for a slice of backlog.
        self.fast_lane: dict[str, Callable[[DomainEvent], "asyncio.Task | None"]] = {}
        self._urgent: set[asyncio.Task] = set()
        self._fast_normaliser = Normaliser()
        # frames whose hook read_ahead() has run (id -> the frame itself: an
        # identity check, so a recycled id never skips another frame's hook)
        self._fired: dict[int, Frame] = {}

    def backlog(self) -> int:
        """Frames and events waiting (the ordered worker and the shards)."""
        return self._queue.qsize() + sum(q.qsize() for q in self._shards)

    def add_handler(self, handler: Handler) -> None:
        self.handlers.append(handler)

    def read_ahead(self, frames: list[Frame], received_at: float) -> bool:
        """The frames of one socket read, before any of them is routed (the
        AMI protocol's ``frames_read`` hook): the fast lane's hooks run now,
        not after the frames read before them in the same read went their
        way (a ring's AgentCalled comes after its Newchannel, NewCallerid,
        VarSet... frames, often in one read).  feed() then skips the hook of
        these frames (they are fed later, in order, also when a big read is
        routed over several loop turns).  True when a hook started a task
        (a screen-pop) that has yet to run: the caller lets it go first."""
        fired = self._fired
        if len(fired) > 10_000:  # frames read ahead but never fed (routing failed): let them go
            fired.clear()
        if not self.fast_lane:
            return False
        started = False
        for frame in frames:
            hook = self._hook_for(frame)
            if hook is not None and frame.action_id is None:  # not a list item of an action
                fired[id(frame)] = frame
                started = self._fire(hook, frame, received_at) or started
        return started

    def _hook_for(self, frame: Frame) -> Callable[[DomainEvent], "asyncio.Task | None"] | None:
        """The fast lane's hook for this frame's event, if it has one."""
        headers = frame.headers
        return self.fast_lane.get(headers[0][1]) if headers and headers[0][0] == "Event" else None

    def _fire(self, hook: Callable[[DomainEvent], "asyncio.Task | None"], frame: Frame,
              received_at: float) -> bool:
        """Run the hook; True when it started a task that is not done."""
        event = self._fast_normaliser(frame, received_at)
        if event is not None and not isinstance(event, UnknownEvent):
            try:
                task = hook(event)
            except Exception:
                log.exception("fast_lane_failed", ami_event=frame.headers[0][1])
                return False
            if task is not None and not task.done():
                self._urgent.add(task)
                task.add_done_callback(self._urgent.discard)
                return True
        return False

    # called synchronously from the AMI protocol
    def feed(self, frame: Frame, received_at: float | None = None) -> None:
        self.stats.frames += 1
        if received_at is None:
            received_at = time.time()
        if self.fast_lane:
            if not (self._fired and self._fired.pop(id(frame), None) is frame):  # else read_ahead() fired it
                hook = self._hook_for(frame)
                if hook is not None:
                    self._fire(hook, frame, received_at)
        try:
            self._queue.put_nowait((frame, received_at))
            if not self._pressed and self.on_backpressure is not None and self._queue.qsize() >= self.high_water:
                self._pressed = True  # stop reading until the worker catches up (nothing is dropped)
                self.stats.backpressure += 1
                self._signal(True)
        except asyncio.QueueFull:  # an event flood: count, warn at most every 10 s
            self.stats.queue_full += 1
            now = time.monotonic()
            if now - self._full_warned_at >= 10.0:
                self._full_warned_at = now
                log.error("pipeline_queue_full", ami_event=frame.event, dropped_total=self.stats.queue_full)

    def _set_behind(self, behind: bool) -> None:
        self.behind = behind
        if behind:
            self.stats.behind += 1
            log.warning("pipeline_behind", waiting=self._queue.qsize())
            if self.pause_gc and gc.isenabled():
                gc.disable()
                self._gc_paused_at = time.perf_counter()
        else:
            log.info("pipeline_caught_up", waiting=self._queue.qsize())
            if self._gc_paused_at is not None:
                self._resume_gc("caught up")

    @property
    def gc_paused(self) -> bool:
        """The collector waits for the backlog to go (``pause_gc``)."""
        return self._gc_paused_at is not None

    def _resume_gc(self, why: str) -> None:
        log.info("pipeline_gc_resumed", why=why, paused_s=round(time.perf_counter() - self._gc_paused_at, 1))
        self._gc_paused_at = None
        # Everything made while paused is still in the youngest generation:
        # the next young pass would walk all of it at once (685 ms after a
        # 120 s surge at 150 calls/s; the whole backlog when still behind).
        # It goes straight to the oldest generation instead (freeze +
        # unfreeze: list splices, no walk), where the next full collection
        # finds its cycles.
        gc.freeze()
        gc.unfreeze()
        gc.enable()

    def _signal(self, pressed: bool) -> None:
        try:
            self.on_backpressure(pressed)  # type: ignore[misc]
        except Exception:
            log.exception("backpressure_signal_failed")

    def run_in_order(self, fn: Callable[[], Awaitable[None]]) -> None:
        """Run ``fn`` in the worker after every frame fed so far and before
        any frame fed later (resync applies its snapshot at the point of the
        event stream where Asterisk answered)."""
        try:
            self._queue.put_nowait((_InOrder(fn), 0.0))
        except asyncio.QueueFull:  # a flood: wait for room rather than lose it
            asyncio.get_running_loop().create_task(self._queue.put((_InOrder(fn), 0.0)))

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="call-pipeline")
            self._shard_tasks = [asyncio.create_task(self._run_shard(q), name=f"call-pipeline-shard-{i}")
                                 for i, q in enumerate(self._shards)]

    async def stop(self) -> None:
        for t in ([self._task] if self._task is not None else []) + self._shard_tasks:
            await stop_task(t)
        self._task = None
        self._shard_tasks = []
        if self._gc_paused_at is not None:
            self._resume_gc("stopped")

    async def drain(self) -> None:
        """Wait until every fed frame has been handled, handlers included
        (tests, shutdown)."""
        while True:
            await self._queue.join()
            for q in self._shards:
                await q.join()
            if self._queue.empty() and all(q.empty() for q in self._shards):
                for flush in self.flushers:
                    await flush()
                if self._queue.empty() and all(q.empty() for q in self._shards):
                    return

    def _shard_for(self, event: DomainEvent, call: Call | None) -> asyncio.Queue:
        key = call.linkedid if call is not None else getattr(event, "linkedid", "")
        return self._shards[zlib.crc32(key.encode("utf-8", "replace")) % len(self._shards)]

    async def _run_shard(self, q: asyncio.Queue) -> None:
        while True:
            event, call = await q.get()
            try:
                await self._handle(event, call)
            finally:
                q.task_done()

    async def _run(self) -> None:
        # The worker must not hold the loop: queue.get() on a non-empty queue
        # does not yield, so a backlog of thousands of frames would starve the
        # handlers' database replies and the websockets.  Yield every slice.
        clock = time.perf_counter
        slice_end = clock()  # look at the backlog first
        while True:
            if self._queue.empty() or clock() >= slice_end:
                await asyncio.sleep(0)
                if (self._queue.qsize() >= self.behind_frames) is not self.behind:
                    self._set_behind(not self.behind)
                elif self._gc_paused_at is not None and clock() - self._gc_paused_at > self.gc_max_pause_s:
                    self._resume_gc("still behind")
                slice_end = clock() + (0.0 if self._urgent else self.slice_s)
            frame, ts = await self._queue.get()
            if self._pressed and self._queue.qsize() <= self.low_water:
                self._pressed = False
                self._signal(False)
            try:
                if frame.__class__ is _InOrder:
                    try:
                        await frame.fn()
                    except Exception:
                        log.exception("pipeline_in_order_call_failed")
                    continue
                await self.process(frame, ts)
            finally:
                self._queue.task_done()

    async def process(self, frame: Frame, ts: float) -> None:
        event = self.normaliser(frame, ts)
        if event is None:
            return
        if isinstance(event, UnknownEvent):
            self.stats.unknown += 1
            return
        self.stats.events += 1
        try:
            call = self.tracker.apply(event)
        except Exception:
            log.exception("tracker_failed", ami_event=type(event).__name__)
            return
        try:
            self.callflow.feed(event)
        except Exception:
            log.exception("callflow_failed", ami_event=type(event).__name__)
        if isinstance(event, ChannelEvent):
            bind_call(uniqueid=event.uniqueid, linkedid=event.linkedid,
                      queue=getattr(event, "queue", "") or (call.queue if call else ""),
                      agent=event.agent if isinstance(event, AgentEvent) else (call.agent if call else ""))
        await self.publish(event, call)

    async def publish(self, event: DomainEvent, call: Call | None) -> None:
        """Listeners and handlers for one event (also used by resync for the
        calls it closes, continues or adopts)."""
        if call is not None and not isinstance(event, ChannelEvent):
            bind_call(linkedid=call.linkedid, queue=call.queue, agent=call.agent)
        try:
            for listener in self.listeners:
                try:
                    listener(event, call)
                except Exception:  # one failing listener must not cost the others (or the handlers) the event
                    self.stats.handler_errors += 1
                    log.exception("listener_failed", listener=getattr(listener, "__qualname__", repr(listener)),
                                  ami_event=type(event).__name__)
        finally:
            clear_call()
        if not self.handlers or not self._handlers_for(event.__class__):
            return  # no handler wants this kind of event: it does not queue behind those that do
        if self._shard_tasks:
            self._shard_for(event, call).put_nowait((event, call))
        else:  # not started (unit use): handle inline
            await self._handle(event, call)

    def _handlers_for(self, cls: type) -> tuple[Handler, ...]:
        """The handlers that want events of ``cls``: a handler may declare
        ``wants`` (a collection of event classes); one without gets all."""
        if self._wants_for != len(self.handlers):
            self._wants.clear()
            self._wants_for = len(self.handlers)
        hs = self._wants.get(cls)
        if hs is None:
            hs = self._wants[cls] = tuple(
                h for h in self.handlers
                if getattr(h, "wants", None) is None or any(issubclass(cls, w) for w in h.wants))
        return hs

    async def _handle(self, event: DomainEvent, call: Call | None) -> None:
        if isinstance(event, ChannelEvent):
            bind_call(uniqueid=event.uniqueid, linkedid=event.linkedid,
                      queue=getattr(event, "queue", "") or (call.queue if call else ""),
                      agent=event.agent if isinstance(event, AgentEvent) else (call.agent if call else ""))
        elif call is not None:
            bind_call(linkedid=call.linkedid, queue=call.queue, agent=call.agent)
        try:
            for handler in self._handlers_for(event.__class__):
                try:
                    await handler(event, call)
                except Exception:
                    self.stats.handler_errors += 1
                    log.exception("handler_failed", handler=getattr(handler, "__qualname__", repr(handler)),
                                  ami_event=type(event).__name__)
        finally:
            clear_call()

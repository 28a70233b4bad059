"""The cyclic garbage collector's policy while the service runs.

Almost everything the service makes is freed by reference counting; the
collector's passes during a call storm find next to nothing (1 object per
pass at 80 calls/s) but stop the event loop while they walk.  What they walk
decides the pause: a young pass walks what was made since the last one; a
middle-generation pass walks everything that outlived a young pass -- the
live calls, the agents' sockets, the caches: 120-130 ms at 80 calls/s, once
every half minute or so, on the ringing agents' screen-pops.

So, once the service is up (:func:`install`):

* what start-up made is frozen (never walked again);
* the automatic passes are young passes only, and small ones (every 2 000
  net allocations: a few ms each);
* what outlives a young pass waits in the older generations, walked only by
  :class:`Sweeper`'s full collection every ``every_s`` (default 15 min) --
  postponed while the call pipeline is behind (a surge), for at most
  ``max_wait_s`` -- which finds the cycles among them."""
from __future__ import annotations

import asyncio
import gc
import time
from typing import Callable

from .logs import get_logger

log = get_logger("hotline.collector")

YOUNG_THRESHOLD = 2_000
NEVER = 1 << 30  # an automatic middle or full pass would wait for this many young passes


def install() -> tuple[int, int, int]:
    """Freeze what start-up made, collect young-only automatically; returns
    the thresholds before (:func:`uninstall`)."""
    before = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, NEVER, NEVER)
    return before


def uninstall(before: tuple[int, int, int]) -> None:
    gc.set_threshold(*before)
    gc.unfreeze()


class Sweeper:
    """The full collection, every ``every_s`` seconds, not while ``busy()``
    (the pipeline behind, or the collector paused by it) unless it has
    waited ``max_wait_s`` beyond its time."""

    def __init__(self, busy: Callable[[], bool] = lambda: False, every_s: float = 900.0,
                 max_wait_s: float = 3600.0, poll_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.busy = busy
        self.every_s = every_s
        self.max_wait_s = max_wait_s
        self.poll_s = poll_s
        self.clock = clock
        self.due = clock() + every_s
        self.sweeps = 0

    def should_sweep(self) -> bool:
        """The rule: due, and the hotline not in a surge -- or overdue by
        ``max_wait_s`` (cycles must not pile up for ever)."""
        now = self.clock()
        if now < self.due:
            return False
        return not self.busy() or now >= self.due + self.max_wait_s

    def sweep(self) -> tuple[int, float]:
        t = time.perf_counter()
        collected = gc.collect()
        took = time.perf_counter() - t
        self.sweeps += 1
        self.due = self.clock() + self.every_s
        log.info("gc_full_collection", collected=collected, ms=round(took * 1000, 1))
        return collected, took

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                if self.should_sweep():
                    self.sweep()
            except Exception:  # never let the policy stop the service
                log.exception("gc_sweep_failed")

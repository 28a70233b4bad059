"""The collector's policy (cti/collector.py): automatic passes are small
young ones; the older generations are swept on a schedule, not in a surge."""
from __future__ import annotations

import gc
import weakref

from cti import collector


class _Node:
    pass


def _old_cycle() -> weakref.ref:
    """A reference cycle that outlived a young pass, then became garbage."""
    a = _Node()
    a.me = a
    ref = weakref.ref(a)
    gc.collect(0)  # alive: it moves on to the middle generation
    del a
    return ref


def test_automatic_passes_never_walk_what_outlived_a_young_pass_and_the_sweep_frees_it():
    before = collector.install()
    try:
        assert gc.get_threshold() == (collector.YOUNG_THRESHOLD, collector.NEVER, collector.NEVER)
        ref = _old_cycle()
        young = _Node()
        young.me = young
        young_ref = weakref.ref(young)
        del young
        for _ in range(20):  # far past the young threshold: automatic young passes run
            junk = [[i] for i in range(collector.YOUNG_THRESHOLD * 2)]
            del junk
        assert young_ref() is None, "a young cycle is freed by the automatic young passes"
        assert ref() is not None, "an automatic pass walked the middle generation"
        collected, took = collector.Sweeper().sweep()
        assert ref() is None and collected >= 1 and took >= 0
    finally:
        collector.uninstall(before)
    assert gc.get_threshold() == before


class _Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_the_sweep_waits_while_the_hotline_is_in_a_surge_but_not_for_ever():
    clock = _Clock()
    busy = [True]
    s = collector.Sweeper(busy=lambda: busy[0], every_s=900, max_wait_s=3600, clock=clock)
    assert not s.should_sweep()  # not due
    clock.t += 900
    assert not s.should_sweep()  # due, but the pipeline is behind
    busy[0] = False
    assert s.should_sweep()
    busy[0] = True
    clock.t += 3600
    assert s.should_sweep()  # overdue by max_wait_s: swept even in a surge


def test_a_sweep_sets_the_next_one_a_period_later():
    clock = _Clock()
    s = collector.Sweeper(every_s=900, clock=clock)
    clock.t += 950
    assert s.should_sweep()
    s.sweep()
    assert s.sweeps == 1 and s.due == clock.t + 900 and not s.should_sweep()

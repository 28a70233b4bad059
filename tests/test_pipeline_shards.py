"""Handlers run per call: one call's events in order, other calls not held up
by its slow database round trips (the storm rule: a screen-pop must not wait
behind another call's writes)."""
from __future__ import annotations

import asyncio
import zlib
from pathlib import Path

from cti.events import AgentCalled
from cti.frame import FrameReader
from cti.pipeline import CallPipeline

TRACE = Path(__file__).parent / "fixtures" / "ami-traces" / "asterisk-22" / "01-ivr-to-queue-answered.ami"


def _frames_for(linkedid_suffix: str):
    """Trace 01's frames with its linkedid/uniqueids renamed, as another call."""
    data = TRACE.read_bytes().replace(b"1795374638.", f"17953746{linkedid_suffix}.".encode())
    data = data.replace(b"1795374643.", f"17953747{linkedid_suffix}.".encode())
    return FrameReader().feed(data)


async def test_one_calls_events_stay_in_order_and_a_slow_call_does_not_hold_up_another():
    seen: list[tuple[str, str]] = []
    slow_linkedid = "1795374611.0"
    release = asyncio.Event()

    async def handler(event, call):
        if call is None:
            return
        if call.linkedid == slow_linkedid and isinstance(event, AgentCalled):
            await release.wait()  # a database that hangs for this call only
        seen.append((call.linkedid, type(event).__name__))

    pipeline = CallPipeline(handlers=[handler], shards=4)
    pipeline.start()
    try:
        for f in _frames_for("11"):
            pipeline.feed(f)
        for f in _frames_for("22"):
            pipeline.feed(f)
        fast = "1795374622.0"
        for _ in range(1000):  # up to 10 s on a loaded machine (the assertions are about order, not speed)
            if (fast, "ChannelHungUp") in seen:
                break
            await asyncio.sleep(0.01)
        # the two linkedids land on different shards (crc32 % 4: 0 and 3)
        assert zlib.crc32(slow_linkedid.encode()) % 4 != zlib.crc32(fast.encode()) % 4
        assert (fast, "AgentCompleted") in seen
        assert (slow_linkedid, "AgentConnected") not in seen
        release.set()
        await pipeline.drain()
    finally:
        await pipeline.stop()
    for lid in (slow_linkedid, "1795374622.0"):
        names = [n for l, n in seen if l == lid]
        assert names.index("CallerJoinedQueue") < names.index("AgentCalled") < names.index("AgentConnected") \
            < names.index("AgentCompleted")
    assert [n for l, n in seen if l == slow_linkedid] == [n for l, n in seen if l == "1795374622.0"]

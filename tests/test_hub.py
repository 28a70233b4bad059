"""The hub's sockets: a screen-pop written by the task that made it when the
agent's socket is idle (no wait for the socket's writer task to get a loop
turn), and never out of order with the frames published around it."""
from __future__ import annotations

import asyncio
import json

from cti.hub import Hub


class FakeSocket:
    def __init__(self) -> None:
        self.got: list[str] = []
        self.gate: asyncio.Event | None = None  # set: send_str waits for it (a slow browser)
        self.broken = False

    async def send_str(self, data: str) -> None:
        if self.broken:
            raise ConnectionResetError("closed")
        if self.gate is not None:
            await self.gate.wait()
        self.got.append(json.loads(data)["n"])

    async def close(self) -> None:
        pass


async def test_a_pop_to_an_idle_socket_is_on_the_wire_when_publish_now_returns():
    hub, ws = Hub(), FakeSocket()
    hub.subscribe("agent:1001", ws)
    await asyncio.sleep(0)
    assert await hub.publish_now("agent:1001", {"type": "screen_pop", "n": 1, "linkedid": "1.1"}) == 1
    assert ws.got == [1]  # no loop turn needed
    hub.publish("agent:1001", {"type": "call_state", "n": 2, "linkedid": "1.1"})
    assert ws.got == [1]  # publish() leaves it to the writer task...
    await asyncio.sleep(0)
    assert ws.got == [1, 2]  # ...one loop turn later
    # the hub still remembers the pop for a page that connects later
    late = FakeSocket()
    hub.subscribe("agent:1001", late)
    await asyncio.sleep(0)
    assert late.got == [1, 2]


async def test_a_pop_never_overtakes_frames_published_before_it():
    hub, ws = Hub(), FakeSocket()
    hub.subscribe("agent:1001", ws)
    ws.gate = asyncio.Event()
    hub.publish("agent:1001", {"type": "call_state", "n": 1})  # the writer takes it and waits on the socket
    await asyncio.sleep(0)
    hub.publish("agent:1001", {"type": "call_state", "n": 2})  # queued
    pop = asyncio.create_task(hub.publish_now("agent:1001", {"type": "screen_pop", "n": 3}))
    await asyncio.sleep(0)
    assert pop.done() and pop.result() == 1  # queued behind, not written
    ws.gate.set()
    for _ in range(5):
        await asyncio.sleep(0)
    assert ws.got == [1, 2, 3]


async def test_frames_published_while_a_pop_is_being_written_come_after_it():
    hub, ws, other = Hub(), FakeSocket(), FakeSocket()
    hub.subscribe("agent:1001", ws)
    hub.subscribe("agent:1001", other)  # the agent's second tab
    await asyncio.sleep(0)
    ws.gate = asyncio.Event()
    pop = asyncio.create_task(hub.publish_now("agent:1001", {"type": "screen_pop", "n": 1}))
    await asyncio.sleep(0)  # the pop's write to the first socket waits on it
    hub.publish("agent:1001", {"type": "call_state", "n": 2})
    await asyncio.sleep(0)
    ws.gate.set()
    await pop
    for _ in range(5):
        await asyncio.sleep(0)
    assert ws.got == [1, 2] and other.got == [1, 2]


async def test_a_closed_socket_does_not_fail_the_pop_and_is_not_written_to_again():
    hub, ws, tab = Hub(), FakeSocket(), FakeSocket()
    hub.subscribe("agent:1001", ws)
    hub.subscribe("agent:1001", tab)
    await asyncio.sleep(0)
    ws.broken = True
    assert await hub.publish_now("agent:1001", {"type": "screen_pop", "n": 1}) == 1  # the other tab got it
    assert tab.got == [1]
    ws.broken = False  # (a closed socket stays closed; here: would it be tried again?)
    assert await hub.publish_now("agent:1001", {"type": "screen_pop", "n": 2}) == 2  # queued for it, not written
    assert ws.got == [] and tab.got == [1, 2]


async def test_two_pops_at_once_for_one_agent_both_arrive_in_order():
    hub, ws = Hub(), FakeSocket()
    hub.subscribe("agent:1001", ws)
    await asyncio.sleep(0)
    ws.gate = asyncio.Event()
    first = asyncio.create_task(hub.publish_now("agent:1001", {"type": "screen_pop", "n": 1}))
    await asyncio.sleep(0)  # written by its task, waiting on the socket
    second = asyncio.create_task(hub.publish_now("agent:1001", {"type": "screen_pop", "n": 2}))
    await asyncio.sleep(0)
    assert second.done() and second.result() == 1  # queued behind the first, not dropped
    ws.gate.set()
    await first
    for _ in range(5):
        await asyncio.sleep(0)
    assert ws.got == [1, 2]


async def test_a_pop_cancelled_while_writing_leaves_no_socket_blocked_or_unserved():
    hub, slow, tab = Hub(), FakeSocket(), FakeSocket()
    hub.subscribe("agent:1001", slow)
    hub.subscribe("agent:1001", tab)
    await asyncio.sleep(0)
    slow.gate = asyncio.Event()
    tab.gate = asyncio.Event()
    pop = asyncio.create_task(hub.publish_now("agent:1001", {"type": "screen_pop", "n": 1}))
    await asyncio.sleep(0)
    pop.cancel()  # the service stopping, say
    await asyncio.gather(pop, return_exceptions=True)
    slow.gate.set()
    tab.gate.set()
    hub.publish("agent:1001", {"type": "call_state", "n": 2})
    for _ in range(10):
        await asyncio.sleep(0)
    # the socket being written when it was cancelled lost that frame (cancelled
    # mid-write); every other socket still got it, first; no writer is stuck
    assert sorted([slow.got, tab.got]) == [[1, 2], [2]]

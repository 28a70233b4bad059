"""The fast paths the storm (bench/storm.py) relies on, each held to the rule
it must keep: batched call rows lose nothing and keep the latest state,
screen-pop drafts stay one per ring with unique numbers across nodes, the
live queue model stays exact with thousands waiting, the wallboard lists a
bounded number of callers but counts them all, pooled connections skip the
reset round trip unless marked."""
from __future__ import annotations

import asyncio
import time

from cti.db import create_pool, needs_full_reset
from cti.frame import Frame
from cti.live import LiveModel, LiveQueues, apply_frame
from cti.screenpop import CallRecorder, upsert_call_rows, call_row
from cti.tracker import Call, CallState
from queues.live import CALLERS_SHOWN, QueueBoard
from tickets import repository as orders
from tickets.model import DraftRequest, build_draft_fields


def _call(linkedid: str, state: CallState, **kw) -> Call:
    return Call(linkedid, caller_num="13800138000", queue="repair", state=state, started_at=time.time(), **kw)


class _Ev:  # an event the recorder treats as a milestone by the call's state
    pass


async def test_batched_call_rows_keep_the_latest_state_of_every_call(pool):
    rec = CallRecorder(pool)
    rec.start()
    try:
        for i in range(300):
            lid = f"1795400000.{i}"
            await rec(_Ev(), _call(lid, CallState.QUEUED, queued_at=time.time()))
            await rec(_Ev(), _call(lid, CallState.CONNECTED, agent="1001", queued_at=time.time(),
                                   answered_at=time.time(), outcome="answered"))
            if i % 2 == 0:
                await rec(_Ev(), _call(lid, CallState.ENDED, agent="1001", outcome="answered",
                                       ended_at=time.time(), talk_time=42))
        await rec.flush()
    finally:
        await rec.stop()
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT linkedid, state, talk_time_s FROM calls ORDER BY linkedid")
    assert len(rows) == 300
    by = {r["linkedid"]: r for r in rows}
    assert by["1795400000.0"]["state"] == "ended" and by["1795400000.0"]["talk_time_s"] == 42
    assert by["1795400000.1"]["state"] == "connected"
    assert sum(1 for r in rows if r["state"] == "ended") == 150
    assert rec.rows_written >= 300 and rec.batches < 300  # rows went out in batches, not one by one


async def test_call_rows_wait_in_the_buffer_while_the_database_refuses_then_go_in(pool):
    """A batch that fails for a reason other than a lost connection is split:
    every good row is written, the bad one is logged and counted, never
    silently dropped."""
    rec = CallRecorder(pool)
    rec.start()
    try:
        await rec(_Ev(), _call("1795400001.1", CallState.QUEUED))
        bad = _call("1795400001.2", CallState.QUEUED, hold_time=2**40)  # out of range for integer
        await rec(_Ev(), bad)
        await rec(_Ev(), _call("1795400001.3", CallState.QUEUED))
        await rec.flush()
    finally:
        await rec.stop()
    async with pool.acquire() as conn:
        got = {r["linkedid"] for r in await conn.fetch("SELECT linkedid FROM calls")}
    assert got == {"1795400001.1", "1795400001.3"}
    assert rec.rejected == 1


async def test_many_call_rows_upsert_in_one_statement_like_one_by_one(pool):
    calls = [_call(f"1795400002.{i}", CallState.ENDED, outcome="abandoned", hold_time=i + 1, ended_at=time.time())
             for i in range(5)]
    async with pool.acquire() as conn:
        await upsert_call_rows(conn, [call_row(c) for c in calls])
        await upsert_call_rows(conn, [call_row(c) for c in calls])  # again: an update, not a second row
        rows = await conn.fetch("SELECT linkedid, hold_time_s, outcome FROM calls ORDER BY hold_time_s")
    assert [(r["hold_time_s"], r["outcome"]) for r in rows] == [(i + 1, "abandoned") for i in range(5)]


async def test_a_replayed_ring_never_makes_a_second_draft_and_numbers_are_unique_across_nodes(pool):
    node_a, node_b = orders.OrderNumbers(block=3), orders.OrderNumbers(block=3)
    made = []
    async with pool.acquire() as conn:
        await conn.execute("INSERT INTO calls (linkedid, state) VALUES ('1795400003.0', 'ringing')")
        for i in range(8):
            fields = build_draft_fields(DraftRequest(
                linkedid="1795400003.0", agent=str(1001 + i), queue="repair", caller_num="13800138000",
                caller_num_norm="13800138000", caller_name="", ivr_choice="repair", outage_id="", customer=None,
                recent_orders=()))
            order, created = await orders.create_draft(conn, fields, numbers=node_a if i % 2 else node_b)
            again, created_again = await orders.create_draft(conn, fields, numbers=node_a)
            assert created and not created_again and again["id"] == order["id"]
            made.append(order["order_no"])
        n = await conn.fetchval("SELECT count(*) FROM work_orders WHERE linkedid = '1795400003.0'")
    assert n == 8
    assert len(set(made)) == 8


async def test_concurrent_rings_for_one_agent_make_one_draft(pool):
    async with pool.acquire() as conn:
        await conn.execute("INSERT INTO calls (linkedid, state) VALUES ('1795400004.0', 'ringing')")
    fields = build_draft_fields(DraftRequest(
        linkedid="1795400004.0", agent="1001", queue="repair", caller_num="13800138000",
        caller_num_norm="13800138000", caller_name="", ivr_choice="repair", outage_id="", customer=None,
        recent_orders=()))

    async def one():
        async with pool.acquire() as conn:
            return await orders.create_draft(conn, fields, numbers=orders.OrderNumbers())

    results = await asyncio.gather(*(one() for _ in range(4)))
    assert sum(1 for _, created in results if created) == 1
    assert len({o["id"] for o, _ in results}) == 1


def _join(q: str, uid: str, pos: int) -> Frame:
    return Frame((("Event", "QueueCallerJoin"), ("Queue", q), ("Uniqueid", uid), ("Channel", f"Local/{uid}"),
                  ("Position", str(pos)), ("CallerIDNum", "13800138000"), ("CallerIDName", "")))


def _leave(q: str, uid: str) -> Frame:
    return Frame((("Event", "QueueCallerLeave"), ("Queue", q), ("Uniqueid", uid)))


def test_positions_close_up_when_a_caller_leaves_even_with_thousands_waiting():
    live = LiveModel()
    n = 5000
    for i in range(n):
        live.on_frame(_join("repair", f"u{i}", i + 1), 1000.0 + i)
    live.on_frame(_join("enquiry", "e0", 1), 1000.0)
    for i in range(0, n, 2):  # every other caller leaves
        live.on_frame(_leave("repair", f"u{i}"), 9000.0)
    waiting = live.state.waiting("repair")
    assert [e.uniqueid for e in waiting[:3]] == ["u1", "u3", "u5"]
    assert [e.position for e in waiting] == list(range(1, n // 2 + 1))
    assert [e.position for e in live.state.waiting("enquiry")] == [1]
    assert live.waiting_count() == n // 2 + 1


def test_the_pure_rule_and_the_live_model_agree():
    frames = [_join("repair", "a", 1), _join("repair", "b", 2), _join("repair", "c", 3), _leave("repair", "a"),
              _join("repair", "d", 1)]  # Asterisk puts a priority caller first
    st = LiveQueues()
    live = LiveModel()
    for f in frames:
        st = apply_frame(st, f, 5.0)
        live.on_frame(f, 5.0)
    assert [(e.uniqueid, e.position) for e in st.waiting("repair")] == [("d", 1), ("b", 2), ("c", 3)]
    assert [(e.uniqueid, e.position) for e in live.state.waiting("repair")] == [("d", 1), ("b", 2), ("c", 3)]


def test_wallboard_lists_the_first_callers_and_counts_all_of_them():
    live = LiveModel()
    for i in range(CALLERS_SHOWN + 30):
        live.on_frame(_join("repair", f"u{i}", i + 1), 100.0 + i)
    board = QueueBoard(live, clock=lambda: 1000.0)
    view = board.view(1000.0)
    repair = next(q for q in view["queues"] if q["name"] == "repair")
    assert repair["waiting"] == CALLERS_SHOWN + 30
    assert len(repair["callers"]) == CALLERS_SHOWN and repair["callers_not_listed"] == 30
    assert repair["longest_wait_s"] == 900  # the longest wait counts every caller, listed or not


async def test_pooled_connections_keep_no_session_state_when_marked(db_url):
    pool = await create_pool(db_url, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            await conn.execute("SET application_name = 'dirty'")
            await conn.execute("SELECT pg_advisory_lock(4242)")
            needs_full_reset(conn)
        async with pool.acquire() as conn:
            assert await conn.fetchval("SHOW application_name") != "dirty"
            assert await conn.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                                       "AND pid = pg_backend_pid()") == 0
    finally:
        await pool.close()



def test_call_records_stay_bounded_and_finished_calls_go_before_live_ones():
    from pathlib import Path

    from cti.callflow import CallFlow
    from cti.frame import FrameReader
    from cti.normalise import Normaliser

    trace = (Path(__file__).parent / "fixtures" / "ami-traces" / "asterisk-22"
             / "01-ivr-to-queue-answered.ami").read_bytes()
    flow, norm = CallFlow(max_records=20), Normaliser()

    def play(i: int, *, upto: int | None = None) -> None:
        data = trace.replace(b"1795374638.", f"18{i:08d}.".encode()).replace(b"1795374643.", f"19{i:08d}.".encode())
        frames = FrameReader().feed(data)
        for f in frames[:upto]:
            ev = norm(f, 0.0)
            if ev is not None:
                flow.feed(ev)

    play(0, upto=100)  # a call still going when the others come and go
    live = [r.caller.uniqueid for r in flow.records() if not r.reason]
    assert live
    for i in range(1, 60):
        play(i)
    recs = flow.records()
    assert len(recs) <= 20
    kept = {r.caller.uniqueid for r in recs}
    assert set(live) <= kept  # the live call was kept; finished ones made room
    assert sum(1 for r in recs if r.reason) >= 10  # and the newest finished calls are there


async def test_a_member_rung_again_after_no_answer_gets_a_live_draft_again(pool):
    async with pool.acquire() as conn:
        await conn.execute("INSERT INTO calls (linkedid, state) VALUES ('1795400005.0', 'ringing')")
        fields = build_draft_fields(DraftRequest(
            linkedid="1795400005.0", agent="1001", queue="repair", caller_num="13800138000",
            caller_num_norm="13800138000", caller_name="", ivr_choice="repair", outage_id="", customer=None,
            recent_orders=()))
        first, _ = await orders.create_draft(conn, fields)
        assert await orders.cancel_drafts(conn, "1795400005.0", agent="1001") == ["1001"]  # rang out
        again, created = await orders.create_draft(conn, fields)  # rrmemory comes round to 1001 again
        assert again["id"] == first["id"] and again["status"] == "draft" and not created
        saved = await conn.fetchval("UPDATE work_orders SET status = 'accepted', saved_at = now() "
                                    "WHERE id = $1 RETURNING id", first["id"])
        assert saved
        await conn.execute("UPDATE work_orders SET status = 'cancelled' WHERE id = $1", first["id"])
        third, _ = await orders.create_draft(conn, fields)  # an order once saved is never revived
        assert third["status"] == "cancelled"


async def test_a_late_screen_pop_never_reopens_a_call_already_recorded_as_ended(pool):
    """Under load the recorder (in event order) runs ahead of the per-call
    handlers: the pop of a ring may be made after the call's end is written."""
    from cti.screenpop import _CALL_BEFORE_DRAFT, upsert_call_args

    ringing = _call("1795400006.0", CallState.RINGING, queued_at=time.time())
    ended = _call("1795400006.0", CallState.ENDED, outcome="abandoned", ended_at=time.time(), hold_time=30)
    async with pool.acquire() as conn:
        await upsert_call_rows(conn, [call_row(ended)])
        fields = build_draft_fields(DraftRequest(
            linkedid="1795400006.0", agent="1001", queue="repair", caller_num="13800138000",
            caller_num_norm="13800138000", caller_name="", ivr_choice="repair", outage_id="", customer=None,
            recent_orders=()))
        await orders.create_draft(conn, fields, before_sql=_CALL_BEFORE_DRAFT,
                                  before_args=upsert_call_args(call_row(ringing)))
        row = await conn.fetchrow("SELECT state, outcome, ended_at, hold_time_s FROM calls "
                                  "WHERE linkedid = '1795400006.0'")
    assert (row["state"], row["outcome"], row["hold_time_s"]) == ("ended", "abandoned", 30)
    assert row["ended_at"] is not None


async def test_the_reader_pauses_only_near_the_bound_briefly_and_nothing_is_dropped():
    """A backlog waits in the pipeline, not in Asterisk (which drops an AMI
    client it cannot write to for 5 s): the reader pauses at 90 % of the
    bound and reads again at 85 %."""
    from cti.pipeline import CallPipeline

    seen = []

    async def handler(event, call):
        seen.append(event)

    pipeline = CallPipeline(handlers=[handler], max_queue=100)
    signals: list[tuple[bool, int]] = []
    pipeline.on_backpressure = lambda pressed: signals.append((pressed, pipeline._queue.qsize()))
    frames = [_join("repair", f"u{i}", i + 1) for i in range(95)]
    for f in frames[:89]:  # the worker is not running yet: they all wait, and reading goes on
        pipeline.feed(f)
    assert signals == []
    for f in frames[89:]:
        pipeline.feed(f)
    assert signals == [(True, 90)] and pipeline.stats.backpressure == 1
    pipeline.start()
    try:
        await pipeline.drain()
    finally:
        await pipeline.stop()
    assert signals[1:] == [(False, 85)]
    assert pipeline.stats.queue_full == 0 and pipeline.stats.frames == 95 and len(seen) == 95


async def test_while_a_fast_lane_pop_is_in_flight_the_worker_takes_one_frame_per_loop_turn():
    """The screen-pop's few steps (database, websocket) each need a loop turn:
    while one is in flight the ordered worker lets the loop turn between two
    of its frames, then goes back to slices of several frames."""
    from cti.pipeline import CallPipeline

    turns = 0

    async def ticker():
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    release = asyncio.Event()
    pop_done = asyncio.Event()

    async def pop():
        await release.wait()
        pop_done.set()

    def hook(event):  # the first join "pops"; the pop ends when released
        return asyncio.get_running_loop().create_task(pop()) if event.uniqueid == "u0" else None

    pipeline = CallPipeline(max_queue=1000)
    pipeline.fast_lane["QueueCallerJoin"] = hook
    seen: list[tuple[bool, int]] = []  # per event, in the worker: a pop in flight, ticker turns
    pipeline.listeners.append(lambda event, call: seen.append((not pop_done.is_set(), turns)))
    for i in range(400):
        pipeline.feed(_join("repair", f"u{i}", i + 1))
    tick = asyncio.create_task(ticker())
    pipeline.start()
    try:
        while len(seen) < 30:
            await asyncio.sleep(0)
        release.set()
        await pipeline.drain()
    finally:
        await pipeline.stop()
        tick.cancel()
    urgent = [t for in_flight, t in seen if in_flight]
    after = [t for in_flight, t in seen if not in_flight]
    assert len(urgent) >= 30 and len(after) > 300
    assert all(b > a for a, b in zip(urgent, urgent[1:])), urgent  # a loop turn between every two frames
    assert any(b == a for a, b in zip(after, after[1:]))  # slices again: frames without a turn between


async def test_a_worker_behind_pauses_the_collector_until_it_caught_up():
    """Behind (a surge's backlog waiting), the cyclic garbage collector waits:
    it would walk the waiting frames again and again (50-90 ms pauses).  It
    collects again once the backlog is gone."""
    import gc

    from cti.pipeline import CallPipeline

    pipeline = CallPipeline(max_queue=1000)
    pipeline.behind_frames = 20
    pipeline.pause_gc = True
    seen: list[tuple[bool, bool]] = []  # per event, in the worker: behind, collector on
    pipeline.listeners.append(lambda event, call: seen.append((pipeline.behind, gc.isenabled())))
    for i in range(60):  # the worker is not running yet: 60 wait
        pipeline.feed(_join("repair", f"u{i}", i + 1))
    assert gc.isenabled()
    pipeline.start()
    try:
        await pipeline.drain()
    finally:
        await pipeline.stop()
    assert pipeline.stats.behind == 1 and not pipeline.behind and gc.isenabled()  # caught up: collecting again
    behind = [on for was_behind, on in seen if was_behind]
    assert len(behind) >= 60 - 20 - 1 and not any(behind), seen  # the collector waited
    assert seen[-1] == (False, True)


async def test_caught_up_what_the_surge_left_skips_the_young_collector_pass():
    """While the collector waited, everything made stays in its youngest
    generation; caught up, the first young pass would walk all of it at once
    (685 ms after a 120 s surge).  It goes to the oldest generation instead,
    where the next full collection still frees its cycles."""
    import gc
    import weakref

    from cti.pipeline import CallPipeline

    pipeline = CallPipeline(max_queue=1000)
    pipeline.behind_frames = 20
    pipeline.pause_gc = True
    kept: list = []
    refs: list[weakref.ref] = []

    class Cycle:
        pass

    def listener(event, call):
        if pipeline.behind:
            kept.extend([i] for i in range(1000))  # state the surge leaves behind
            c = Cycle()
            c.me = c  # garbage only the collector frees
            refs.append(weakref.ref(c))

    pipeline.listeners.append(listener)
    for i in range(60):
        pipeline.feed(_join("repair", f"u{i}", i + 1))
    pipeline.start()
    try:
        await pipeline.drain()
    finally:
        await pipeline.stop()
    assert pipeline.stats.behind == 1 and gc.isenabled() and len(kept) >= 20_000
    assert gc.get_count()[0] < 1000  # nothing of the surge waits for a young pass
    assert refs and any(r() is not None for r in refs)
    gc.collect()
    assert all(r() is None for r in refs)  # its cycles are still collected


async def test_a_paused_ami_reader_is_not_taken_for_a_dead_link(db_url):
    from cti.app import manager_key
    from tests.harness import running_service

    async with running_service(db_url) as svc:
        manager = svc.app[manager_key]
        transport = manager.protocol.transport
        manager.set_reading(False)
        assert not transport.is_reading() and manager.stats.read_pauses == 1
        manager.ping()  # a Pong nobody reads proves nothing: the link stays
        manager.ping()
        assert manager.state == "logged_in" and not transport.is_closing() and manager.stats.ping_timeouts == 0
        manager.set_reading(True)
        assert transport.is_reading()


def test_a_long_days_history_stays_bounded_and_live_calls_and_outcomes_are_untouched():
    """The pipeline's CallFlow keeps only a bounded history of ended calls
    and hung-up channels (nothing reads older ones; a long day's would grow
    the memory and every full pass of the garbage collector): beyond the
    bounds the oldest go, a live call never does, and the newest ended
    call's shape is what an unbounded flow makes of it."""
    from pathlib import Path

    from cti.callflow import CallFlow
    from cti.frame import FrameReader
    from cti.normalise import Normaliser
    from cti.pipeline import CallPipeline

    trace = (Path(__file__).parent / "fixtures" / "ami-traces" / "asterisk-22"
             / "01-ivr-to-queue-answered.ami").read_bytes()
    bounded, unbounded = CallFlow(max_ended_records=10, max_dead_channels=30), CallFlow()
    norm = Normaliser()

    def play(i: int, *, upto: int | None = None) -> None:
        data = trace.replace(b"1795374638.", f"18{i:08d}.".encode()).replace(b"1795374643.", f"19{i:08d}.".encode())
        for f in FrameReader().feed(data)[:upto]:
            ev = norm(f, 0.0)
            if ev is not None:
                bounded.feed(ev)
                unbounded.feed(ev)

    play(0, upto=100)  # a call still going while a hundred others come and go
    live = {r.caller.uniqueid for r in bounded.records() if not r.reason}
    live_chans = {uid for uid, c in bounded._chans.items() if c.alive}
    assert live and live_chans
    for i in range(1, 101):
        play(i)
    ended = [r for r in bounded.records() if r.reason]
    assert 1 <= len(ended) <= 10
    assert sum(1 for c in bounded._chans.values() if not c.alive) <= 30
    assert live <= {r.caller.uniqueid for r in bounded.records()}
    assert live_chans <= set(bounded._chans)
    assert ended[-1] == [r for r in unbounded.records() if r.reason][-1]
    assert len(unbounded.records()) == 101  # the bounds, not the trace, made the difference
    # the history's own end-order indexes stay within the bounds too
    assert len(bounded._ended) <= 10 and len(bounded._dead) <= 30
    flow = CallPipeline().callflow
    assert flow.max_ended_records is not None and flow.max_dead_channels is not None


def test_trimming_the_history_never_walks_the_live_calls():
    """With thousands of callers waiting, a trim of the call-flow history
    takes the oldest ended calls and channels from their own end-order
    index: it never walks the live calls (a loop stall of milliseconds per
    trim with 10 000 waiting)."""
    from collections import OrderedDict
    from pathlib import Path

    from cti.callflow import CallFlow
    from cti.frame import FrameReader
    from cti.normalise import Normaliser

    trace = (Path(__file__).parent / "fixtures" / "ami-traces" / "asterisk-22"
             / "01-ivr-to-queue-answered.ami").read_bytes()
    frames = FrameReader().feed(trace)
    flow, norm = CallFlow(max_ended_records=5, max_dead_channels=10), Normaliser()

    def play(i: int, upto: int | None = None) -> None:
        data = trace.replace(b"1795374638.", f"18{i:08d}.".encode()).replace(b"1795374643.", f"19{i:08d}.".encode())
        for f in FrameReader().feed(data)[:upto]:
            ev = norm(f, 0.0)
            if ev is not None:
                flow.feed(ev)

    for i in range(200):  # two hundred callers waiting
        play(i, upto=100)
    live_recs, live_chans = dict(flow._recs), dict(flow._chans)
    assert len(live_recs) == 200 and frames

    class NoWalk(OrderedDict):
        """Fails any walk over its entries until ``allowed``."""
        allowed = False

        def _check(self):
            if not NoWalk.allowed:
                raise AssertionError("the trim walked every call")

        def __iter__(self):
            self._check()
            return super().__iter__()

        def items(self):
            self._check()
            return super().items()

        def values(self):
            self._check()
            return super().values()

        def keys(self):
            self._check()
            return super().keys()

    flow._recs, flow._chans = NoWalk(flow._recs), NoWalk(flow._chans)
    for i in range(200, 260):  # sixty calls come and go meanwhile
        play(i)
    NoWalk.allowed = True
    recs, chans = dict(flow._recs), dict(flow._chans)
    assert set(live_recs) <= set(recs) and set(live_chans) <= set(chans)  # no live call trimmed
    assert sum(1 for r in recs.values() if r.reason) <= 5
    assert sum(1 for c in chans.values() if not c.alive) <= 10

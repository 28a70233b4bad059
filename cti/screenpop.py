"""Screen-pop: when an agent's phone rings (AgentCalled), look the caller up,
make the pre-filled draft work order and push it to that agent's page.
Also records every call in the ``calls`` table."""
from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

import asyncpg

from tickets import repository as orders
from tickets.model import DraftRequest, RecentOrder, build_draft_fields

from .aio import stop_task
from . import customer_repo
from .events import (AgentCalled, AgentCompleted, AgentConnected, AgentRingNoAnswer, CallerAbandoned,
                     CallerJoinedQueue, ChannelCreated, ChannelEvent, ChannelHungUp, ChannelSnapshot, DomainEvent)
from .hub import Hub
from .logs import get_logger
from .phone import normalise_phone
from .resync import CallResynced
from .spool import Spool, SpoolRecord, is_connection_error
from .tracker import Call, CallState

log = get_logger("hotline.screenpop")


def _ts(t: float | None) -> datetime | None:
    return datetime.fromtimestamp(t, timezone.utc) if t else None


def call_row(call: Call, customer_id: int | None = None) -> dict[str, Any]:
    """The values of one ``calls`` row (JSON-able: what the spool keeps)."""
    norm = normalise_phone(call.caller_num)
    return {
        "linkedid": call.linkedid, "caller_num": call.caller_num[:64], "caller_num_norm": norm.national if norm else "",
        "caller_name": call.caller_name[:200], "customer_id": customer_id, "ivr_choice": call.ivr_choice[:32],
        "outage_id": call.outage_id[:64], "queue": call.queue[:64], "agent": call.agent[:64],
        "state": str(call.state.value), "outcome": call.outcome, "hangup_cause": call.hangup_cause,
        "started_at": call.started_at, "queued_at": call.queued_at, "answered_at": call.answered_at,
        "ended_at": call.ended_at, "hold_time_s": call.hold_time or None, "talk_time_s": call.talk_time or None,
        "close_reason": getattr(call, "close_reason", "")[:64],
    }


_INSERT_CALL = """INSERT INTO calls (linkedid, caller_num, caller_num_norm, caller_name, customer_id, ivr_choice,
                              outage_id, queue, agent, state, outcome, hangup_cause, started_at, queued_at,
                              answered_at, ended_at, hold_time_s, talk_time_s, close_reason)
           VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,coalesce($13, now()),$14,$15,$16,$17,$18,$19)"""
_KEEP_CUSTOMER = "customer_id = coalesce(EXCLUDED.customer_id, calls.customer_id)"
_UPSERT_CALL = _INSERT_CALL + f"""
           ON CONFLICT (linkedid) DO UPDATE SET
               caller_num = EXCLUDED.caller_num, caller_num_norm = EXCLUDED.caller_num_norm,
               caller_name = EXCLUDED.caller_name, {_KEEP_CUSTOMER},
               ivr_choice = EXCLUDED.ivr_choice, outage_id = EXCLUDED.outage_id,
               queue = EXCLUDED.queue, agent = EXCLUDED.agent, state = EXCLUDED.state,
               outcome = EXCLUDED.outcome, hangup_cause = EXCLUDED.hangup_cause,
               queued_at = EXCLUDED.queued_at, answered_at = EXCLUDED.answered_at,
               ended_at = EXCLUDED.ended_at, hold_time_s = EXCLUDED.hold_time_s,
               talk_time_s = EXCLUDED.talk_time_s, close_reason = EXCLUDED.close_reason,
               started_at = least(calls.started_at, EXCLUDED.started_at),
               updated_at = now()"""


def ringing_call_row(event: AgentCalled, customer_id: int | None = None) -> dict[str, Any]:
    """The ``calls`` row of a call known only by its AgentCalled (the fast
    lane): what the caller's channel says.  Written only when the call
    recorder has not written the row yet; the recorder's next write of the
    call replaces it (``started_at``, now() here, by the earlier true start)."""
    chan = event.chan
    norm = normalise_phone(chan.caller_num)
    return {
        "linkedid": event.linkedid, "caller_num": chan.caller_num[:64], "caller_num_norm": norm.national if norm else "",
        "caller_name": chan.caller_name[:200], "customer_id": customer_id, "ivr_choice": chan.var("IVR_CHOICE")[:32],
        "outage_id": chan.var("OUTAGE_ID")[:64], "queue": event.queue[:64], "agent": "",
        "state": CallState.RINGING.value, "outcome": "", "hangup_cause": None,
        "started_at": None, "queued_at": None, "answered_at": None, "ended_at": None,
        "hold_time_s": None, "talk_time_s": None, "close_reason": "",
    }


def upsert_call_args(r: dict[str, Any]) -> tuple[Any, ...]:
    return (r["linkedid"], r["caller_num"], r["caller_num_norm"], r["caller_name"], r["customer_id"],
            r["ivr_choice"], r["outage_id"], r["queue"], r["agent"], r["state"], r["outcome"], r["hangup_cause"],
            _ts(r["started_at"]), _ts(r["queued_at"]), _ts(r["answered_at"]), _ts(r["ended_at"]),
            r["hold_time_s"], r["talk_time_s"], r["close_reason"])


# The screen-pop's own write of the call row, in the draft's statement (the
# draft insert takes $1..$16, the row's 19 parameters follow): it makes the
# row the draft references if the call recorder has not written it yet, and
# otherwise only adds the customer.  It must never overwrite the state: the
# recorder's buffer runs in event order ahead of the per-call handlers, so
# under load the call may already be recorded as ended when its pop is made.
_CALL_BEFORE_DRAFT = re.sub(r"\$(\d+)", lambda m: f"${int(m.group(1)) + 16}", _INSERT_CALL) + (
    f" ON CONFLICT (linkedid) DO UPDATE SET {_KEEP_CUSTOMER}")


async def upsert_call_row(conn: asyncpg.Connection, r: dict[str, Any]) -> None:
    await conn.execute(_UPSERT_CALL, *upsert_call_args(r))


_CALL_TYPES = ("text", "text", "text", "text", "bigint", "text", "text", "text", "text", "text", "text", "integer",
               "timestamptz", "timestamptz", "timestamptz", "timestamptz", "integer", "integer", "text")
# Many calls in one statement: the same upsert over unnest() of column arrays.
_UPSERT_CALLS = _UPSERT_CALL.replace(
    "VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,coalesce($13, now()),$14,$15,$16,$17,$18,$19)",
    "SELECT r1, r2, r3, r4, r5, r6, r7, r8, r9, r10, r11, r12, coalesce(r13, now()), r14, r15, r16, r17, r18, "
    "r19 FROM unnest(" + ", ".join(f"${i + 1}::{t}[]" for i, t in enumerate(_CALL_TYPES)) + ") AS u("
    + ", ".join(f"r{i + 1}" for i in range(19)) + ")")


async def upsert_call_rows(conn: asyncpg.Connection, rows: list[dict[str, Any]]) -> None:
    """Upsert many call rows in one statement (one row per linkedid: the
    latest wins, as a batch never holds two rows of one call)."""
    if len(rows) == 1:
        await upsert_call_row(conn, rows[0])
        return
    cols = list(zip(*(upsert_call_args(r) for r in rows)))
    await conn.execute(_UPSERT_CALLS, *[list(c) for c in cols])


async def create_draft_record(conn: asyncpg.Connection, data: dict[str, Any]) -> dict[str, Any]:
    """Spool applier for a draft: (order, created) from the idempotent insert."""
    order, _created = await orders.create_draft(conn, data["fields"])
    return order


async def cancel_drafts_record(conn: asyncpg.Connection, data: dict[str, Any]) -> list[str]:
    return await orders.cancel_drafts(conn, data["linkedid"], agent=data.get("agent"),
                                      except_agent=data.get("except_agent"))


_MISS = object()


class LookupCache:
    """Bounded LRU of what a screen-pop looked up (customer by number or
    account, the caller's recent orders), so that pops keep showing the
    customer while PostgreSQL is unreachable."""

    def __init__(self, max_entries: int = 20_000) -> None:
        self.max_entries = max_entries
        self._d: OrderedDict[tuple, Any] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple) -> Any:
        v = self._d.get(key, _MISS)
        if v is _MISS:
            self.misses += 1
            return _MISS
        self._d.move_to_end(key)
        self.hits += 1
        return v

    def put(self, key: tuple, value: Any) -> None:
        self._d[key] = value
        self._d.move_to_end(key)
        while len(self._d) > self.max_entries:
            self._d.popitem(last=False)

    def __len__(self) -> int:
        return len(self._d)

    def put_customer(self, cust: dict[str, Any]) -> None:
        if cust.get("account_no"):
            self.put(("account", str(cust["account_no"])), cust)
        for phone in cust.get("phones") or ():
            self.put(("phone", phone), cust)

    async def prewarm(self, pool: asyncpg.Pool, limit: int = 2000) -> int:
        """The most recently updated customers, by each of their numbers."""
        if limit <= 0:
            return 0
        async with pool.acquire(timeout=5) as conn:
            rows = await conn.fetch(customer_repo._SELECT + " ORDER BY c.updated_at DESC, c.id DESC LIMIT $1",
                                    limit)
        for r in reversed(rows):
            self.put_customer(customer_repo._customer(r).to_dict())
        return len(rows)


class CallRecorder:
    """Writes the call row when the call reaches a milestone (queued,
    answered, ended), not on every event -- and not one statement per
    milestone either: rows wait in a small write-behind buffer (the latest
    row of each call) that one task writes as a single multi-row upsert per
    batch.  A storm of 200 calls/s makes a few statements a second instead of
    hundreds.  While PostgreSQL is unreachable the rows go to the spool, in
    order, behind anything spooled before.  ``flush()`` waits until every
    row handed in so far is written (or spooled)."""

    MILESTONES = ("queued", "connected", "ended")

    def __init__(self, pool: asyncpg.Pool, spool: Spool | None = None, *, max_batch: int = 500,
                 on_written: list[Callable[[], None]] | None = None, gather_s: float = 0.05) -> None:
        """``gather_s``: the writer waits this long after a row arrives for
        more rows to write with it (write-behind; nothing reads the calls
        table within milliseconds of a change: the live wallboard counts
        from the events, the screen-pop writes the row its draft needs)."""
        self.pool = pool
        self.gather_s = gather_s
        self.spool = spool
        self.max_batch = max_batch
        self.on_written: list[Callable[[], None]] = list(on_written or [])
        self._last: dict[str, tuple] = {}
        self._rows: dict[str, dict[str, Any]] = {}  # linkedid -> latest row, in first-change order
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task | None = None
        self.batches = 0
        self.rows_written = 0
        self.rejected = 0  # rows PostgreSQL refused (a bug, logged with the row); never silently

    def observe(self, event: DomainEvent, call: Call | None) -> None:
        """Pipeline listener (synchronous, in event order): buffer the call's
        row when it reached a milestone."""
        if call is None:
            return
        key = (call.state, call.outcome, call.agent, call.queue)
        if call.state.value not in self.MILESTONES and not isinstance(
                event, (AgentCompleted, AgentConnected, CallerAbandoned)):
            return
        if self._last.get(call.linkedid) == key:
            return
        self._last[call.linkedid] = key
        if call.state.value == "ended":
            self._last.pop(call.linkedid, None)
        self._rows.pop(call.linkedid, None)
        self._rows[call.linkedid] = call_row(call)
        self._idle.clear()
        self._wake.set()

    async def __call__(self, event: DomainEvent, call: Call | None) -> None:
        """Handler form: buffer, and write at once unless the writer runs."""
        self.observe(event, call)
        if self._task is None:
            await self.flush()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._writer(), name="call-recorder")

    async def stop(self) -> None:
        """Write what is buffered, then stop."""
        if self._task is None:
            return
        try:
            await asyncio.wait_for(self.flush(), 10)
        except asyncio.TimeoutError:
            log.warning("call_rows_left_unwritten", rows=len(self._rows))
        await stop_task(self._task)
        self._task = None
        if self._rows:  # the database never came back: keep them on disk
            rows, self._rows = list(self._rows.values()), {}
            if self.spool is not None:
                for row in rows:
                    await self.spool.append("call", row)

    async def flush(self) -> None:
        if self._task is None:  # no writer task (unit use, or stopped): write here
            await self._write_buffered()
            return
        await self._idle.wait()

    async def _writer(self) -> None:
        while True:
            await self._wake.wait()
            if self.gather_s > 0 and len(self._rows) < self.max_batch:
                await asyncio.sleep(self.gather_s)
            self._wake.clear()
            await self._write_buffered()
            if not self._rows:
                self._idle.set()

    async def _write_buffered(self) -> None:
        while self._rows:
            batch: list[dict[str, Any]] = []
            for linkedid in list(self._rows)[: self.max_batch]:
                batch.append(self._rows.pop(linkedid))
            try:
                await self._write(batch)
            except Exception:  # not a connection error: find the row at fault, write the others
                log.exception("call_rows_write_failed", rows=len(batch))
                for row in batch:
                    try:
                        await self._write([row])
                    except Exception as exc:
                        self.rejected += 1
                        log.error("call_row_rejected", linkedid=row["linkedid"],
                                  error=f"{type(exc).__name__}: {exc}", row=repr(row)[:2000])

    async def _write(self, rows: list[dict[str, Any]]) -> None:
        if self.spool is None:
            async with self.pool.acquire() as conn:
                await upsert_call_rows(conn, rows)
            self._written(len(rows))
            return
        if not self.spool.pending:  # nothing older waiting: straight to PostgreSQL
            try:
                async with self.pool.acquire(timeout=5) as conn:
                    await upsert_call_rows(conn, rows)
                self._written(len(rows))
                return
            except Exception as exc:
                if not is_connection_error(exc):
                    raise
                log.warning("call_rows_spooled", rows=len(rows), error=f"{type(exc).__name__}: {exc}")
        for row in rows:  # in order after anything spooled before
            await self.spool.append("call", row)

    def _written(self, n: int) -> None:
        self.batches += 1
        self.rows_written += n
        for cb in self.on_written:
            try:
                cb()
            except Exception:
                log.exception("call_rows_listener_failed")


class ScreenPopService:
    PENDING_NOTICE = "数据库暂不可用,工单将在数据库恢复后自动保存 / database unavailable: the work order will be saved when it is back"

    def __init__(self, pool: asyncpg.Pool, hub: Hub, recent_limit: int = 5, *, spool: Spool | None = None,
                 cache: LookupCache | None = None, pop_pool: asyncpg.Pool | None = None) -> None:
        self.pool = pool
        self.pop_pool = pop_pool  # the pops' own connections (lookup + draft); None: ``pool``
        self.hub = hub
        self.recent_limit = recent_limit
        self.spool = spool
        self.cache = cache if cache is not None else LookupCache()
        self.numbers = orders.OrderNumbers()
        # withdrawals that cannot find a draft skip the database (_may_have_drafts)
        self._fresh: set[str] = set()  # linkedids whose first channel was created while we listened
        self._drafts: dict[str, set[str]] = {}  # linkedid -> agents with a draft from this process
        self.withdrawals_skipped = 0
        self.late_pops = 0  # pops made at a resync for calls answered while the link was down
        self.pops = 0
        self.failures = 0
        self.spooled_drafts = 0
        # the fast lane (cti.pipeline.CallPipeline.fast_lane): a first ring of
        # an agent for a call is popped as soon as its AgentCalled is read,
        # ahead of the events queued before it; the ordered handler of that
        # AgentCalled then waits for it (so every later event of the call --
        # withdrawals included -- comes after the pop) and does not pop again
        self.fast_lane = True
        # pops on the fast lane whose ordered handler has not run yet; more
        # wait for the ordered path.  Under a surge the ordered path may be a
        # minute behind (cti.pipeline backlog): 20 000 = 200 calls/s for 100 s
        self.max_fast = 20_000
        self._fast: dict[tuple[str, str], asyncio.Task] = {}
        self._fast_done: dict[tuple[str, str], float] = {}  # finished, waiting for the ordered handler
        self.clock: Callable[[], float] = time.monotonic
        self._rung: OrderedDict[tuple[str, str], None] = OrderedDict()  # (linkedid, agent) rung before
        self.fast_pops = 0
        # 来电预取: the caller's customer and recent orders are looked up when
        # the caller joins a queue (QueueCallerJoin, on the fast lane), while
        # the caller waits; the ring's pop then shows them at once instead of
        # waiting for its own round trip to PostgreSQL.  A lookup older than
        # prefetch_max_age_s, or made for another account or number, is not
        # used: the ring looks up again.  Forgotten when the call ends.
        self.prefetch_on_join = True
        self.prefetch_max_age_s = 30.0
        self.max_prefetches = 20_000
        self._prefetches: OrderedDict[str, _Prefetch] = OrderedDict()  # linkedid ->
        self.prefetch_hits = 0
        self.prefetch_failures = 0

    def on_spool_applied(self, rec: SpoolRecord, result: Any) -> None:
        """Replayer hook: the database is back and a spooled write is in."""
        if rec.kind == "draft" and result is not None:
            pop = dict(rec.data.get("pop") or {})
            pop.update(order=result, pending=False, error=None)
            self.hub.publish(f"agent:{rec.data['fields']['agent']}", {
                "type": "screen_pop_order_saved", "linkedid": rec.data["fields"]["linkedid"],
                "agent": rec.data["fields"]["agent"], "local_id": rec.data.get("local_id"), "order": result,
                "pop": pop, "message": "工单已保存 / work order saved"})
        elif rec.kind == "cancel" and result:
            for a in result:
                self.hub.publish(f"agent:{a}", {"type": "screen_pop_withdrawn", "linkedid": rec.data["linkedid"],
                                                "reason": rec.data.get("reason", "")})

    # the events this handler acts on (cti.pipeline: others never queue for it)
    wants = (ChannelCreated, AgentCalled, AgentConnected, AgentRingNoAnswer, ChannelHungUp, CallerAbandoned,
             CallResynced)

    async def __call__(self, event: DomainEvent, call: Call | None) -> None:
        cls = event.__class__
        if cls is ChannelCreated and event.uniqueid and event.uniqueid == event.linkedid:
            if len(self._fresh) >= 200_000:  # calls whose end was never seen: forget (safe: we ask the database)
                self._fresh.clear()
                self._drafts.clear()
            self._fresh.add(event.linkedid)  # the call's first channel: its whole life is ahead of us
        elif isinstance(event, AgentCalled):
            fast = self._fast.pop((event.linkedid, event.agent), None)
            self._fast_done.pop((event.linkedid, event.agent), None)
            state = await fast if fast is not None else ""
            if state == "done":
                return  # popped, and the draft written, on the fast lane
            await self.on_agent_called(event, call, popped=state == "popped")
        elif isinstance(event, AgentConnected):
            await self.on_agent_connected(event)
        elif isinstance(event, AgentRingNoAnswer):
            await self._withdraw(event.linkedid, "no_answer", agent=event.agent)
        elif call is not None and call.ended and isinstance(event, (ChannelHungUp, CallerAbandoned)):
            await self.on_call_ended(call)
        elif isinstance(event, CallResynced) and call is not None:
            if call.outcome == "answered" and call.agent:
                # answered while the AMI link was down (resync, CDR): the other
                # members' rings are over, their AgentConnect was never seen
                await self._withdraw(call.linkedid, "answered_elsewhere", except_agent=call.agent)
                if call.state is CallState.CONNECTED and call.agent not in self._drafts.get(call.linkedid, ()):
                    await self.late_pop(call)
            if call.ended:  # the call ended while the AMI link was down
                await self.on_call_ended(call, reason="ended_while_disconnected")
        if call is not None and call.ended and cls is not CallResynced:
            self._fresh.discard(call.linkedid)
            self._drafts.pop(call.linkedid, None)
            self._prefetches.pop(call.linkedid, None)

    def _may_have_drafts(self, linkedid: str, agent: str | None, except_agent: str | None) -> bool:
        """Whether a withdrawal can find anything.  Drafts are made only by
        screen-pops; for a call whose first channel this process saw created,
        every draft it has is one this process made (or spooled) and
        remembers in ``_drafts``.  Any other call (live across a restart,
        adopted by a resync) is asked of the database."""
        if linkedid not in self._fresh:
            return True
        mine = self._drafts.get(linkedid)
        if not mine:
            return False
        if agent is not None:
            return agent in mine
        return bool(mine - {except_agent}) if except_agent is not None else True

    def _made_draft(self, linkedid: str, agent: str) -> None:
        # kept even before the call's first channel is handled (a fast-lane
        # pop runs ahead of it): once the call is fresh, this must be known
        self._drafts.setdefault(linkedid, set()).add(agent)

    # --- the lookup made while the caller waits ---------------------------------
    def prefetch(self, event: DomainEvent) -> None:
        """The fast lane's hook for QueueCallerJoin: start looking up the
        caller (the same lookup as the pop's, by the same account and
        number) while the caller waits in the queue.  Returns None: nothing
        waits for it (it is not a pop)."""
        if not (self.prefetch_on_join and isinstance(event, CallerJoinedQueue) and event.linkedid):
            return None
        if self.spool is not None and self.spool.pending:
            return None  # the database is away: the pop takes the spool's path
        account, caller_num, phone_key, by_number = self._lookup_keys(event, None)
        old = self._prefetches.get(event.linkedid)
        if old is not None and (old.account, old.phone_key) == (account, phone_key) \
                and self.clock() - old.at <= self.prefetch_max_age_s:
            return None  # joined another queue a moment ago (the IVR's fallback): looked up already
        while len(self._prefetches) >= self.max_prefetches:
            self._prefetches.popitem(last=False)  # its lookup runs on, unused
        task = asyncio.get_running_loop().create_task(
            self._lookup(account, caller_num if by_number else None, phone_key, event.linkedid))
        entry = self._prefetches[event.linkedid] = _Prefetch(account, phone_key, self.clock(), task)
        task.add_done_callback(entry.settle)
        self._prefetches.move_to_end(event.linkedid)
        return None

    def _lookup_keys(self, event: ChannelEvent, call: Call | None) -> tuple[str, str, str, bool]:
        """``(account, caller_num, phone_key, by_number)`` of the pop's lookup:
        the account the IVR identified, the caller's number (its national
        form the key of the recent orders; ``by_number``: it parsed as a
        number, so customers are matched by it too)."""
        caller_num = call.caller_num if call and call.caller_num else event.chan.caller_num
        norm = normalise_phone(caller_num)
        account = event.chan.var("CUSTOMER_ID") or (call.customer_id if call else "")
        return account, caller_num, (norm.national if norm else ""), norm is not None

    async def _lookup(self, account: str, raw_number: str | None, phone_key: str,
                      linkedid: str) -> tuple[dict[str, Any] | None, list[RecentOrder]] | None:
        """The prefetch's lookup: ``(customer, recent orders)``, or None when
        it failed (the ring looks up again; nothing is lost)."""
        try:
            async with (self.pop_pool or self.pool).acquire(timeout=5) as conn:
                return await self._find_caller(conn, account, raw_number, phone_key, linkedid)
        except Exception as exc:
            self.prefetch_failures += 1
            log.debug("screen_pop_prefetch_failed", error=f"{type(exc).__name__}: {exc}")
            return None

    async def _find_caller(self, conn: asyncpg.Connection, account: str, raw_number: str | None, phone_key: str,
                           linkedid: str) -> tuple[dict[str, Any] | None, list[RecentOrder]]:
        """The pop's lookup, one round trip: the customer by the account the
        IVR identified (e.g. typed in by DTMF), else by the number, and the
        recent orders; remembered for the pops made while the database is
        away (the spool's)."""
        customer, recent_rows = await customer_repo.find_caller(
            conn, account=account, raw_number=raw_number, phone=phone_key,
            recent_limit=self.recent_limit, exclude_linkedid=linkedid)
        cust = customer.to_dict() if customer is not None else None
        recent = [RecentOrder(*r) for r in recent_rows]
        self._remember(account, phone_key, cust, recent)
        return cust, recent

    async def _prefetched(self, linkedid: str, account: str,
                          phone_key: str) -> tuple[dict[str, Any] | None, list[RecentOrder]] | None:
        """The lookup made when this caller joined the queue, if it is for
        the same account and number, recent enough and came through; else
        None.  One still under way is waited for (it went out earlier than a
        new one would)."""
        p = self._prefetches.get(linkedid)
        if p is None or (p.account, p.phone_key) != (account, phone_key) \
                or self.clock() - p.at > self.prefetch_max_age_s:
            return None
        found = p.found if p.task is None else await asyncio.shield(p.task)
        if found is not None:
            self.prefetch_hits += 1
        return found

    # --- the fast lane --------------------------------------------------------
    def fast_pop(self, event: DomainEvent) -> asyncio.Task | None:
        """Called by the pipeline as the AgentCalled frame is read.  Only an
        agent's first ring for a call takes the fast lane: a ring again (after
        a no-answer) must come after the withdrawal of the first, which may
        still be queued.  Nothing here is written to the spool: when the
        database is unreachable (or older writes wait on disk) the ordered
        path makes the pop, in order with the rest.  Returns the pop's task
        (the pipeline lets it go before its backlog), or None."""
        if not (self.fast_lane and isinstance(event, AgentCalled) and event.linkedid and event.agent):
            return None
        key = (event.linkedid, event.agent)
        if key in self._rung:
            return None
        self._rung[key] = None
        if len(self._rung) > 100_000:
            self._rung.popitem(last=False)
        if len(self._fast) >= self.max_fast:
            self._forget_stale_fast()
        if (self.spool is not None and self.spool.pending) or len(self._fast) >= self.max_fast:
            return None
        task = self._fast[key] = asyncio.get_running_loop().create_task(self._fast_pop(event))
        return task

    def _forget_stale_fast(self, older_than_s: float = 120.0) -> None:
        """Fast pops whose AgentCalled never reached the ordered handler (a
        tracker failure drops an event): forgotten once finished long ago, so
        they do not fill the lane.  The ordered path is about a minute
        behind at most (the pipeline's bound on its backlog)."""
        now = self.clock()
        for key, done_at in list(self._fast_done.items()):
            if now - done_at > older_than_s:
                del self._fast_done[key]
                self._fast.pop(key, None)

    async def _fast_pop(self, event: AgentCalled) -> str:
        """"done" (pop and draft), "popped" (the pop only: the ordered path
        writes the draft) or "" (nothing sent: the ordered path does it all)."""
        try:
            state, _message = await self._pop(event, None, fast=True)
        except Exception:
            log.exception("screen_pop_fast_lane_failed")
            state = ""
        if state:
            self.fast_pops += 1
        key = (event.linkedid, event.agent)
        if key in self._fast:  # still waiting for its ordered handler
            self._fast_done[key] = self.clock()
        return state

    async def late_pop(self, call: Call) -> dict[str, Any]:
        """The agent is talking to a caller whose ring this process never saw
        (rung while the AMI link was down, or before a restart): the
        screen-pop now, with the same draft (idempotent per call and agent)."""
        ev = AgentCalled(time.time(), ChannelSnapshot("", call.caller_uniqueid or call.linkedid, call.linkedid,
                                                      caller_num=call.caller_num, caller_name=call.caller_name),
                         queue=call.queue, interface=call.agent)
        self.late_pops += 1
        message = await self.on_agent_called(ev, call, late=True)
        self.hub.publish(f"agent:{call.agent}", {"type": "call_state", "linkedid": call.linkedid,
                                                  "state": "connected"})
        return message

    async def on_agent_connected(self, event: AgentConnected) -> None:
        self.hub.publish(f"agent:{event.agent}", {"type": "call_state", "linkedid": event.linkedid,
                                                   "state": "connected"})
        await self._withdraw(event.linkedid, "answered_elsewhere", except_agent=event.agent)

    async def on_call_ended(self, call: Call, reason: str = "caller_hung_up") -> None:
        if call.agent:
            self.hub.publish(f"agent:{call.agent}", {"type": "call_state", "linkedid": call.linkedid,
                                                      "state": "ended", "outcome": call.outcome})
        if call.outcome != "answered":
            await self._withdraw(call.linkedid, reason)

    async def _withdraw(self, linkedid: str, reason: str, *, agent: str | None = None,
                        except_agent: str | None = None) -> None:
        if not self._may_have_drafts(linkedid, agent, except_agent):
            self.withdrawals_skipped += 1
            return
        mine = self._drafts.get(linkedid)
        if mine is not None:  # withdrawn below (or by the spool, later): forget them once it is done
            gone = {agent} if agent is not None else mine - {except_agent}
            await self._withdraw_now(linkedid, reason, agent=agent, except_agent=except_agent)
            mine.difference_update(gone)  # not reached if it raised: a later withdrawal asks again
            return
        await self._withdraw_now(linkedid, reason, agent=agent, except_agent=except_agent)

    async def _withdraw_now(self, linkedid: str, reason: str, *, agent: str | None,
                            except_agent: str | None) -> None:
        if self.spool is not None and self.spool.pending:
            await self.spool.append("cancel", {"linkedid": linkedid, "agent": agent, "except_agent": except_agent,
                                               "reason": reason})
            return
        try:
            async with self.pool.acquire(timeout=5) as conn:
                agents = await orders.cancel_drafts(conn, linkedid, agent=agent, except_agent=except_agent)
        except Exception as exc:
            if self.spool is None or not is_connection_error(exc):
                raise
            await self.spool.append("cancel", {"linkedid": linkedid, "agent": agent, "except_agent": except_agent,
                                               "reason": reason})
            return
        for a in agents:
            self.hub.publish(f"agent:{a}", {"type": "screen_pop_withdrawn", "linkedid": linkedid,
                                            "reason": reason})

    async def on_agent_called(self, event: AgentCalled, call: Call | None, *, late: bool = False,
                              popped: bool = False) -> dict[str, Any]:
        """The screen-pop of one ring, then its draft.  The agent sees the
        caller (customer, recent orders, the pre-filled work order as
        ``provisional_order``, ``order_pending``) after one read; the saved
        draft follows in a ``screen_pop_update`` (the whole pop, ``order``
        set) as soon as it is written.  ``popped``: this ring's pop was sent
        already (by the fast lane, which could not write the draft): only the
        update.  Returns the pop as it ends up."""
        _state, message = await self._pop(event, call, late=late, popped=popped)
        assert message is not None
        return message

    async def _pop(self, event: AgentCalled, call: Call | None, *, late: bool = False, fast: bool = False,
                   popped: bool = False) -> tuple[str, dict[str, Any] | None]:
        """``(state, message)``; state "done", "popped" (sent, no draft:
        ``fast`` only) or "" (nothing sent: ``fast`` only).  ``fast`` (the
        fast lane, no tracked call yet): the call row comes from the event;
        trouble is left to the ordered path, nothing is spooled here."""
        t0 = time.perf_counter()
        agent = event.agent
        # the customer's number is on the caller channel; the member channel says 'enter-queue'
        account, caller_num, phone_key, by_number = self._lookup_keys(event, call)
        caller_name = (call.caller_name if call and call.caller_name else event.chan.caller_name)
        ivr_choice = (call.ivr_choice if call and call.ivr_choice else event.chan.var("IVR_CHOICE"))
        outage_id = (call.outage_id if call and call.outage_id else event.chan.var("OUTAGE_ID"))
        message: dict[str, Any] = {
            "type": "screen_pop",
            "linkedid": event.linkedid,
            "uniqueid": event.uniqueid,
            "queue": event.queue,
            "agent": agent,
            "caller_num": caller_num,
            "caller_name": caller_name,
            "ivr_choice": ivr_choice,
            "customer": None,
            "recent_orders": [],
            "order": None,
        }
        if late:
            message["late"] = True  # 补弹: rung while the PBX link was down
        sent = popped
        try:
            if self.spool is not None and self.spool.pending:
                raise _SpoolFirst()  # older writes wait on disk: this one queues behind them

            async def show(cust: dict[str, Any] | None, recent: list[RecentOrder]) -> dict[str, Any]:
                """The pop with what was looked up; its draft's fields."""
                nonlocal sent
                fields = build_draft_fields(DraftRequest(
                    linkedid=event.linkedid, agent=agent, queue=event.queue, caller_num=caller_num,
                    caller_num_norm=phone_key, caller_name=caller_name,
                    ivr_choice=ivr_choice, outage_id=outage_id, customer=cust, recent_orders=tuple(recent)))
                message.update(customer=cust, recent_orders=[r.to_dict() for r in recent])
                if not sent:  # the agent sees the caller now; the draft's number follows
                    await self._send({**message, "order_pending": True,
                                      "provisional_order": {**fields, "status": "draft"}}, t0)
                    sent = True
                return fields

            found = await self._prefetched(event.linkedid, account, phone_key)
            if found is not None:  # looked up while the caller waited: no round trip before the pop
                fields = await show(*found)
            async with (self.pop_pool or self.pool).acquire(timeout=5) as conn:
                if found is None:
                    fields = await show(*await self._find_caller(
                        conn, account, caller_num if by_number else None, phone_key, event.linkedid))
                cust = message["customer"]
                if call is not None or fast:  # the call row and the draft in one statement
                    row = (call_row(call, cust["id"] if cust else None) if call is not None
                           else ringing_call_row(event, cust["id"] if cust else None))
                    order, created = await orders.create_draft(
                        conn, fields, numbers=self.numbers, before_sql=_CALL_BEFORE_DRAFT,
                        before_args=upsert_call_args(row))
                else:
                    order, created = await orders.create_draft(conn, fields, numbers=self.numbers)
                self._made_draft(event.linkedid, agent)
            message["order"] = order
            await self._update(message, t0)
            return "done", message
        except Exception as exc:  # database trouble must not cost the agent the caller's number
            if fast:
                if not isinstance(exc, _SpoolFirst):
                    log.warning("screen_pop_fast_lane_deferred", error=f"{type(exc).__name__}: {exc}",
                                popped=sent)
                return ("popped" if sent else ""), None
            if self.spool is not None and (isinstance(exc, _SpoolFirst) or is_connection_error(exc)):
                try:
                    await self._spool_pop(event, call, message, account=account, phone_key=phone_key,
                                          caller_num=caller_num, caller_name=caller_name, ivr_choice=ivr_choice,
                                          outage_id=outage_id, exc=exc)
                    return "done", (await self._update(message, t0) if sent else await self._send(message, t0))
                except Exception as spool_exc:
                    exc = spool_exc
            self.failures += 1
            log.error("screen_pop_degraded", error=f"{type(exc).__name__}: {exc}")
            message["error"] = "工单库暂不可用,已显示来电号码 / work-order store unavailable"
        return "done", (await self._update(message, t0) if sent else await self._send(message, t0))

    async def _update(self, message: dict[str, Any], t0: float) -> dict[str, Any]:
        """The pop of this ring again, completed (the draft written, or the
        spool's provisional order, or the error): the page redraws it keeping
        what the agent typed meanwhile; the hub replays this version."""
        message["elapsed_ms"] = round((time.perf_counter() - t0) * 1000, 2)
        await self.hub.publish_now(f"agent:{message['agent']}", {
            "type": "screen_pop_update", "linkedid": message["linkedid"], "agent": message["agent"],
            "order": message["order"], "pop": message})
        return message

    async def _send(self, message: dict[str, Any], t0: float) -> dict[str, Any]:
        """The screen-pop frame, written to the agent's idle sockets by this
        task (Hub.publish_now)."""
        self.pops += 1
        message["elapsed_ms"] = round((time.perf_counter() - t0) * 1000, 2)
        delivered = await self.hub.publish_now(f"agent:{message['agent']}", message)
        log.info("screen_pop_sent", delivered=delivered, order_no=(message["order"] or {}).get("order_no"),
                 known_customer=message["customer"] is not None, pending=bool(message.get("pending")))
        return message

    def _remember(self, account: str, phone_key: str, cust: dict[str, Any] | None,
                  recent: list[RecentOrder]) -> None:
        if cust is not None:
            self.cache.put_customer(cust)
        elif phone_key and not account:
            self.cache.put(("phone", phone_key), None)  # a known unknown caller
        key = ("recent", cust["id"]) if cust else ("recent", phone_key)
        if cust or phone_key:
            self.cache.put(key, list(recent))

    def _cached(self, account: str, phone_key: str) -> tuple[dict[str, Any] | None, list[RecentOrder]]:
        cust = None
        if account:
            v = self.cache.get(("account", str(account)))
            cust = v if v is not _MISS else None
        if cust is None and phone_key:
            v = self.cache.get(("phone", phone_key))
            cust = v if v is not _MISS else None
        key = ("recent", cust["id"]) if cust else ("recent", phone_key)
        recent = self.cache.get(key) if (cust or phone_key) else _MISS
        return cust, (list(recent) if recent is not _MISS else [])

    async def _spool_pop(self, event: AgentCalled, call: Call | None, message: dict[str, Any], *, account: str,
                         phone_key: str, caller_num: str, caller_name: str, ivr_choice: str, outage_id: str,
                         exc: Exception) -> None:
        """PostgreSQL unreachable: the pop from the cache, the call row and the
        draft to the spool (in that order: the draft references the call)."""
        cust, recent = self._cached(account, phone_key)
        fields = build_draft_fields(DraftRequest(
            linkedid=event.linkedid, agent=event.agent, queue=event.queue, caller_num=caller_num,
            caller_num_norm=phone_key, caller_name=caller_name, ivr_choice=ivr_choice, outage_id=outage_id,
            customer=cust, recent_orders=tuple(recent)))
        local_id = "local-" + uuid.uuid4().hex[:12]
        message.update(customer=cust, recent_orders=[r.to_dict() for r in recent], pending=True,
                       provisional_order={**fields, "local_id": local_id, "status": "pending"},
                       error=self.PENDING_NOTICE, from_cache=cust is not None)
        if call is not None:
            await self.spool.append("call", call_row(call, cust["id"] if cust else None))
        pop = {k: v for k, v in message.items() if k not in ("provisional_order", "error", "elapsed_ms")}
        self._made_draft(event.linkedid, event.agent)
        await self.spool.append("draft", {"linkedid": event.linkedid, "local_id": local_id, "fields": fields,
                                          "pop": pop})
        self.spooled_drafts += 1
        if not isinstance(exc, _SpoolFirst):
            log.warning("screen_pop_spooled", linkedid=event.linkedid, error=f"{type(exc).__name__}: {exc}")


@dataclass(slots=True)
class _Prefetch:
    """A lookup started when the caller joined a queue (ScreenPopService.prefetch)."""

    account: str
    phone_key: str
    at: float  # ScreenPopService.clock() when it started
    task: asyncio.Task | None  # under way; None once done, its result in ``found``
    found: tuple[dict[str, Any] | None, list[RecentOrder]] | None = None

    def settle(self, task: asyncio.Task) -> None:
        """Done: keep the result, not the task (a waiting caller's entry
        goes from about 1 KB to a few hundred bytes: 10 000 callers wait
        in a storm)."""
        if self.task is task:
            self.found = task.result() if not task.cancelled() and task.exception() is None else None
            self.task = None


class _SpoolFirst(Exception):
    """Internal: writes are queued on disk, take the spool path."""

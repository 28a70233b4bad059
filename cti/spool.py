"""Local-disk spool for database writes while PostgreSQL is unreachable.

When a call-row upsert or a screen-pop draft cannot be written because the
database is *unreachable* (a connection-class error, see
:func:`is_connection_error`), the write is appended to a bounded,
append-only spool under ``<state_dir>/spool/`` (JSON-lines segments, one
fsync per batch of appends: group commit).  While anything is pending, every
later write of the same kinds goes to the spool too, so nothing overtakes an
older spooled write.  :class:`SpoolReplayer` retries with backoff and, once
PostgreSQL answers, applies the records **in sequence order, exactly once**:

* each replay batch runs in one transaction that also advances the row
  ``spool_replay(spool_id, seq)``; records with ``seq`` at or below that row
  are skipped, so a crash after the commit but before the local
  ``committed`` marker / segment truncation never applies a record twice;
* the keys are idempotent anyway (calls by ``linkedid`` upsert - the latest
  state wins, drafts by ``(linkedid, agent)``).

Bound (``max_records`` / ``max_bytes``): the last ``reserve`` share of the
room is kept for call records.  When the spool is that full, **drafts and
draft withdrawals are refused first** (the agent still has the pop and the
caller's number); call records are refused only when the spool is completely
full.  Every refusal raises :class:`SpoolFull`, logs ``spool_full`` at ERROR
with the linkedid and is counted (``dropped``, ``dropped_calls``) - never
silent.
"""
from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable

import asyncpg

from .aio import stop_task
from .logs import get_logger

log = get_logger("hotline.spool")

__all__ = ["Spool", "SpoolFull", "SpoolRecord", "SpoolReplayer", "is_connection_error"]

CALL = "call"


def is_connection_error(exc: BaseException) -> bool:
    """True for errors meaning 'the database is not reachable right now'
    (as opposed to a bad statement or bad data)."""
    return isinstance(exc, (
        asyncpg.PostgresConnectionError,        # SQLSTATE class 08
        asyncpg.exceptions.OperatorInterventionError,  # 57: admin shutdown, cannot connect now
        asyncpg.InterfaceError,                 # incl. ConnectionDoesNotExistError, pool closing
        asyncpg.exceptions.ConnectionDoesNotExistError,
        asyncpg.exceptions.TooManyConnectionsError,
        OSError,                                # refused, socket file gone
        asyncio.TimeoutError, TimeoutError,     # pool acquire / connect timeouts
    ))


class SpoolFull(RuntimeError):
    pass


@dataclass(frozen=True)
class SpoolRecord:
    seq: int
    kind: str
    data: dict[str, Any]


class Spool:
    def __init__(self, directory: str | Path, *, max_records: int = 100_000, max_bytes: int = 64 << 20,
                 reserve: float = 0.1, segment_records: int = 5_000) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.reserve = reserve
        self.segment_records = segment_records
        self.counters: dict[str, Any] = {"spooled": 0, "replayed": 0, "skipped_already_applied": 0,
                                         "dropped": 0, "dropped_calls": 0, "failed": 0, "pending": 0,
                                         "replay_attempts": 0, "last_error": ""}
        id_file = self.dir / "spool.id"
        if not id_file.exists():
            _atomic_write(id_file, uuid.uuid4().hex)
        self.spool_id = id_file.read_text().strip()
        self.committed = int((self.dir / "committed").read_text() or 0) if (self.dir / "committed").exists() else 0
        self._pending: deque[tuple[SpoolRecord, int]] = deque()  # (record, bytes)
        self._bytes = 0
        self._segments: list[tuple[Path, int]] = []  # (path, last seq written to it)
        self._seg_count = 0
        self._fh = None
        self._next_seq = self.committed + 1
        self._load()
        # group commit
        self._buf: list[tuple[SpoolRecord, str]] = []
        self._waiters: list[asyncio.Future] = []
        self._flusher: asyncio.Task | None = None
        self.wakeup = asyncio.Event()  # set when something was spooled

    # ---- recovery ---------------------------------------------------
    def _load(self) -> None:
        for path in sorted(self.dir.glob("seg-*.jsonl")):
            last = 0
            raw = path.read_bytes()
            good = 0
            for line in raw.splitlines(keepends=True):
                if not line.endswith(b"\n"):
                    break  # torn last line (crash mid-write, never acknowledged)
                try:
                    d = json.loads(line)
                except ValueError:
                    break
                good += len(line)
                last = d["seq"]
                self._next_seq = max(self._next_seq, last + 1)
                if last > self.committed:
                    rec = SpoolRecord(d["seq"], d["kind"], d["data"])
                    self._pending.append((rec, len(line)))
                    self._bytes += len(line)
            if good != len(raw):
                with open(path, "r+b") as fh:
                    fh.truncate(good)
                    os.fsync(fh.fileno())
            if last and last <= self.committed:
                path.unlink()  # fully applied: the crash came before the truncation
            else:
                self._segments.append((path, last))
        self.counters["pending"] = len(self._pending)
        if self._pending:
            log.warning("spool_recovered", pending=len(self._pending), first_seq=self._pending[0][0].seq)

    # ---- appending --------------------------------------------------
    @property
    def pending(self) -> int:
        """Records spooled (or being spooled) and not yet applied."""
        return len(self._pending) + len(self._buf)

    def _room(self, kind: str) -> bool:
        n, b = self.pending, self._bytes
        if kind != CALL:
            return n < self.max_records * (1 - self.reserve) and b < self.max_bytes * (1 - self.reserve)
        return n < self.max_records and b < self.max_bytes

    async def append(self, kind: str, data: dict[str, Any]) -> int:
        """Durably spool one write; returns its sequence number once fsynced."""
        if not self._room(kind):
            self.counters["dropped"] += 1
            if kind == CALL:
                self.counters["dropped_calls"] += 1
            log.error("spool_full", kind=kind, linkedid=data.get("linkedid", ""), pending=self.pending,
                      max_records=self.max_records, dropped_total=self.counters["dropped"])
            raise SpoolFull(f"spool full ({self.pending} records): {kind} {data.get('linkedid', '')} not kept")
        rec = SpoolRecord(self._next_seq, kind, data)
        self._next_seq += 1
        line = json.dumps({"seq": rec.seq, "kind": kind, "data": data}, ensure_ascii=False, default=str) + "\n"
        fut = asyncio.get_running_loop().create_future()
        self._buf.append((rec, line))
        self._waiters.append(fut)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_loop(), name="spool-flush")
        await asyncio.shield(fut)
        return rec.seq

    async def _flush_loop(self) -> None:
        while self._buf:
            batch, waiters = self._buf, self._waiters
            self._buf, self._waiters = [], []
            try:
                await asyncio.to_thread(self._write, [line for _, line in batch], batch[-1][0].seq)
            except BaseException as exc:  # disk trouble: the writers learn it
                for f in waiters:
                    if not f.done():
                        f.set_exception(exc if isinstance(exc, Exception) else RuntimeError(str(exc)))
                log.error("spool_write_failed", error=f"{type(exc).__name__}: {exc}", records=len(batch))
                continue
            for (rec, line) in batch:
                n = len(line.encode())
                self._pending.append((rec, n))
                self._bytes += n
            self.counters["spooled"] += len(batch)
            self.counters["pending"] = len(self._pending)
            for f in waiters:
                if not f.done():
                    f.set_result(None)
            self.wakeup.set()
        self._flusher = None
        self._truncate()

    def _write(self, lines: list[str], last_seq: int) -> None:
        if self._fh is None or self._seg_count >= self.segment_records:
            if self._fh is not None:
                self._fh.close()
            path = self.dir / f"seg-{last_seq - len(lines) + 1:012d}.jsonl"
            self._fh = open(path, "ab")
            self._seg_count = 0
            self._segments.append((path, 0))
            _fsync_dir(self.dir)
        self._fh.write("".join(lines).encode())
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._seg_count += len(lines)
        path, _ = self._segments[-1]
        self._segments[-1] = (path, last_seq)

    # ---- replay side ------------------------------------------------
    def pending_records(self, limit: int = 100) -> list[SpoolRecord]:
        """The oldest durable, not yet applied records, in order."""
        return [rec for rec, _ in list(self._pending)[:limit]]

    def mark_applied(self, upto_seq: int) -> None:
        """Records up to ``upto_seq`` are in PostgreSQL: remember it on disk,
        forget them, and delete segments that hold nothing newer."""
        _atomic_write(self.dir / "committed", str(upto_seq))
        self.committed = upto_seq
        while self._pending and self._pending[0][0].seq <= upto_seq:
            _, n = self._pending.popleft()
            self._bytes -= n
        self.counters["pending"] = len(self._pending)
        self._truncate()

    def _truncate(self) -> None:
        if self._flusher is not None and not self._flusher.done():
            return  # the writer thread owns the segment list now; done after the flush
        keep = []
        for i, (path, last) in enumerate(self._segments):
            current = i == len(self._segments) - 1 and self._fh is not None
            if last and last <= self.committed:
                if current:
                    self._fh.close()
                    self._fh = None
                try:
                    path.unlink()
                except FileNotFoundError:
                    pass
            else:
                keep.append((path, last))
        self._segments = keep

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


Applier = Callable[[asyncpg.Connection, dict[str, Any]], Awaitable[Any]]
AppliedHook = Callable[[SpoolRecord, Any], None]

_DDL = """CREATE TABLE IF NOT EXISTS spool_replay (
    spool_id text PRIMARY KEY, seq bigint NOT NULL, updated_at timestamptz NOT NULL DEFAULT now())"""


class SpoolReplayer:
    """Writes the spool back to PostgreSQL in order once it answers."""

    def __init__(self, spool: Spool, pool: asyncpg.Pool, appliers: dict[str, Applier], *,
                 on_applied: AppliedHook | None = None, batch: int = 100,
                 min_backoff: float = 0.2, max_backoff: float = 5.0) -> None:
        self.spool = spool
        self.pool = pool
        self.appliers = appliers
        self.on_applied = on_applied
        self.batch = batch
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self._task: asyncio.Task | None = None
        self._ddl_done = False
        # tests: called after the database commit, before the local marker
        self.after_commit_hook: Callable[[int], None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="spool-replayer")
            if self.spool.pending:
                self.spool.wakeup.set()

    async def stop(self) -> None:
        await stop_task(self._task)
        self._task = None

    async def _run(self) -> None:
        delay = self.min_backoff
        while True:
            await self.spool.wakeup.wait()
            self.spool.wakeup.clear()
            while self.spool.pending:
                try:
                    await self.replay_once()
                    delay = self.min_backoff
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self.spool.counters["last_error"] = f"{type(exc).__name__}: {exc}"[:200]
                    if not is_connection_error(exc):
                        log.exception("spool_replay_failed")
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.max_backoff)

    async def replay_once(self) -> int:
        """Apply everything pending (raises on a connection error; what was
        committed so far stays committed).  Returns records applied."""
        applied = 0
        sp = self.spool
        while True:
            batch = sp.pending_records(self.batch)
            if not batch:
                return applied
            sp.counters["replay_attempts"] += 1
            results: list[tuple[SpoolRecord, Any]] = []
            async with self.pool.acquire(timeout=5) as conn:
                async with conn.transaction():
                    if not self._ddl_done:
                        await conn.execute(_DDL)
                    done = await conn.fetchval(
                        "SELECT seq FROM spool_replay WHERE spool_id = $1 FOR UPDATE", sp.spool_id) or 0
                    for rec in batch:
                        if rec.seq <= done:
                            sp.counters["skipped_already_applied"] += 1
                            continue
                        if rec.kind == CALL and self._superseded(rec, batch):
                            results.append((rec, None))
                            continue
                        try:
                            async with conn.transaction():  # savepoint: a bad record can't block the rest
                                res = await self.appliers[rec.kind](conn, rec.data)
                        except Exception as exc:
                            if is_connection_error(exc):
                                raise
                            sp.counters["failed"] += 1
                            log.error("spool_record_failed", seq=rec.seq, kind=rec.kind,
                                      linkedid=rec.data.get("linkedid", ""), error=f"{type(exc).__name__}: {exc}")
                            continue
                        results.append((rec, res))
                    await conn.execute(
                        """INSERT INTO spool_replay (spool_id, seq) VALUES ($1, $2)
                           ON CONFLICT (spool_id) DO UPDATE SET seq = EXCLUDED.seq, updated_at = now()""",
                        sp.spool_id, batch[-1].seq)
            self._ddl_done = True
            if self.after_commit_hook is not None:
                self.after_commit_hook(batch[-1].seq)
            sp.mark_applied(batch[-1].seq)
            sp.counters["replayed"] += len(results)
            applied += len(results)
            log.info("spool_replayed", records=len(results), upto_seq=batch[-1].seq, pending=sp.pending)
            if self.on_applied is not None:
                for rec, res in results:
                    try:
                        self.on_applied(rec, res)
                    except Exception:
                        log.exception("spool_on_applied_failed", seq=rec.seq)

    @staticmethod
    def _superseded(rec: SpoolRecord, batch: list[SpoolRecord]) -> bool:
        """A later call record of the same call in this batch with nothing
        else of that call in between: keep only the latest state."""
        lid = rec.data.get("linkedid")
        for later in batch:
            if later.seq <= rec.seq or later.data.get("linkedid") != lid:
                continue
            return later.kind == CALL and rec.data.get("customer_id") in (None, later.data.get("customer_id"))
        return False


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

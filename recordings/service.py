"""Recording use-cases: the pipeline handler that indexes MixMonitor files,
the durable background worker (index recovery, transcoding, retention).

Life of a recording row::

    VarSet MIXMONITOR_FILENAME ──▶ recording ──MixMonitorStop / Hangup (first; once)──▶
        indexed | missing | corrupt          (rejected: unsafe name, at once)
    indexed ──worker: compact copy verified, original removed──▶ transcoded
    indexed/transcoded/missing/corrupt ──retention over, no legal hold──▶ expired (files deleted)

Nothing here raises into the pipeline: a bad file or name is a row state
plus an error log line."""
from __future__ import annotations

import asyncio
import errno
import functools
import os
import stat
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import asyncpg

from cti.aio import stop_task
from cti.events import AgentConnected, ChannelHungUp, RecordingStarted, RecordingStopped
from cti.logs import get_logger

from . import repository as repo
from .audio import (
    COMPACT_FORMATS, RecordingFileError, Writer, make_compact_copy, probe_open_wav, pydub_writer,
)
from .model import (
    UnsafeName, check_relative, is_expired, legal_hold_until, parse_name, relative_path, retention_until,
    safe_error_text,
)

log = get_logger("hotline.recordings")


@dataclass(frozen=True)
class RecordingSettings:
    root: str                         # where the CTI reads the files
    asterisk_root: str = ""           # the same directory as Asterisk names it ("" = root)
    archive_root: str = ""            # where compact copies go ("" = root)
    retention_days: int = 365
    compact_format: str = "opus"      # opus | mp3 | "" (no transcoding)
    # the file may still be closing when MixMonitorStop arrives: retry these delays
    index_retry_delays: tuple[float, ...] = (0.5, 2.0, 5.0)
    stale_after_s: float = 6 * 3600   # a recording never ended after this is indexed anyway
    transcode_batch: int = 4
    transcode_lease_s: float = 600.0
    transcode_retry_s: float = 300.0  # first retry after a failure (doubles, max 1 day)

    @property
    def ami_root(self) -> str:
        return self.asterisk_root or self.root

    @property
    def copy_root(self) -> str:
        return self.archive_root or self.root

    def original(self, rel: str) -> Path:
        return Path(self.root) / check_relative(rel)

    def copy(self, rel: str) -> Path:
        return Path(self.copy_root) / check_relative(rel)


def settings_from_config(cfg: Any, **overrides: Any) -> RecordingSettings:
    values = dict(root=cfg.recordings_dir, asterisk_root=cfg.recordings_asterisk_dir,
                  archive_root=cfg.recordings_archive_dir, retention_days=cfg.recording_retention_days,
                  compact_format=cfg.recording_compact_format)
    values.update(overrides)
    return RecordingSettings(**values)


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, timezone.utc)


def inside_root(root: str, path: Path) -> bool:
    """The real file is under the real root (no symlink leaving it).  The
    root's own resolution is kept for a minute (every recording asks)."""
    try:
        real_root = _real_root_now(root)
        return os.path.commonpath([real_root, os.path.realpath(path)]) == real_root
    except ValueError:
        return False


def _real_root_now(root: str) -> str:
    return _real_root(root, int(time.monotonic() // 60))


@functools.lru_cache(maxsize=8)
def _real_root(root: str, _minute: int) -> str:
    return os.path.realpath(root)


_SYMLINK = ("录音文件指向录音目录之外 / file resolves outside the recordings directory (symlink: "
            "MixMonitor never makes one)")


def open_beneath(root: str, rel: str):
    """``root/rel`` opened for reading (binary), refusing a symbolic link
    anywhere below the root: each directory is opened from the one before
    with ``O_NOFOLLOW`` (no window for swapping in a link, unlike resolving
    the path first) and the file must be a regular file.  Raises
    :class:`RecordingFileError` (``rejected``: a link or not a file;
    ``missing``)."""
    try:
        parts = check_relative(rel).split("/")
    except UnsafeName:
        raise RecordingFileError("rejected", "录音文件路径不安全 / unsafe recording path") from None
    nofollow = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(_real_root_now(root), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise RecordingFileError("missing", f"录音目录无法打开 / recordings directory: {exc.strerror}") from None
    try:
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            try:  # a FIFO must not block the thread: O_NONBLOCK (a regular file ignores it)
                nxt = os.open(part, nofollow | (os.O_NONBLOCK if last else os.O_DIRECTORY), dir_fd=fd)
            except FileNotFoundError:
                raise RecordingFileError("missing", f"录音文件不存在 / recording file not found: "
                                                    f"{parts[-1]}") from None
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
                    raise RecordingFileError("rejected", _SYMLINK) from None
                raise RecordingFileError("missing", f"录音文件无法读取 / cannot read recording file: "
                                                    f"{exc.strerror}") from None
            os.close(fd)
            fd = nxt
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise RecordingFileError("rejected", "录音路径不是普通文件 / recording path is not a regular file")
        os.set_blocking(fd, True)
        f = os.fdopen(fd, "rb")
        fd = -1
        return f
    finally:
        if fd >= 0:
            os.close(fd)


def _probe_inside(root: str, rel: str):
    """:func:`probe_open_wav` of ``root/rel``, a file that really is under
    ``root`` (:func:`open_beneath`)."""
    with open_beneath(root, rel) as f:
        return probe_open_wav(f)


@dataclass
class _Open:
    rec_id: int  # 0 until the start row is written (``written``)
    rel: str
    linkedid: str
    written: "asyncio.Future[tuple[int, bool]]"
    start: dict[str, Any]  # the start row, written again at the end if its batch failed
    agent: str = ""
    queue: str = ""


class _StartRows:
    """Write-behind of the rows of recordings that start: each waits up to
    ``gather_s`` for others, and one multi-row insert writes them (at 200
    calls/s a few statements a second instead of one per call).  ``add``
    returns the future of the row's ``(id, created)``; ``flush`` writes now
    (a recording that ends needs its id)."""

    def __init__(self, pool: asyncpg.Pool, gather_s: float = 0.05, max_batch: int = 500) -> None:
        self.pool = pool
        self.gather_s = gather_s
        self.max_batch = max_batch
        self._rows: list[tuple[dict[str, Any], asyncio.Future]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._writing: set[asyncio.Task] = set()

    def add(self, row: dict[str, Any]) -> "asyncio.Future[tuple[int, bool]]":
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._rows.append((row, fut))
        if len(self._rows) >= self.max_batch:
            self._start_write()
        elif self._timer is None:
            self._timer = loop.call_later(self.gather_s, self._start_write)
        return fut

    def flush(self) -> None:
        if self._rows:
            self._start_write()

    async def idle(self) -> None:
        self.flush()
        while self._writing:
            await asyncio.gather(*list(self._writing), return_exceptions=True)

    def _start_write(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._rows = self._rows, []
        if batch:
            task = asyncio.get_running_loop().create_task(self._write(batch))
            self._writing.add(task)
            task.add_done_callback(self._writing.discard)

    async def _write(self, batch: list[tuple[dict[str, Any], asyncio.Future]]) -> None:
        try:
            async with self.pool.acquire() as conn:
                got = await repo.insert_started_many(conn, [row for row, _ in batch])
        except Exception as exc:  # each recording's end tries its own row again
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
                    fut.exception()  # retrieved: the end handles it
            return
        for (_, fut), result in zip(batch, got):
            if not fut.done():
                fut.set_result(result)


class RecordingIndexer:
    """Pipeline handler ``(event, call)``.  Remembers the file of each
    recorded channel (``VarSet MIXMONITOR_FILENAME``) and indexes it when
    the recording ends -- MixMonitorStop or the channel's Hangup, whichever
    comes first, never twice (also guarded in the database)."""

    def __init__(self, pool: asyncpg.Pool, settings: RecordingSettings,
                 on_indexed: Callable[[int, str], None] | None = None) -> None:
        self.pool = pool
        self.settings = settings
        self.on_indexed = on_indexed
        self._open: dict[str, _Open] = {}
        self.max_open = 20_000
        self._tasks: set[asyncio.Task] = set()
        self._starts = _StartRows(pool)

    wants = (RecordingStarted, RecordingStopped, ChannelHungUp, AgentConnected)  # cti.pipeline routing

    async def __call__(self, event, call) -> None:
        cls = event.__class__
        if cls is RecordingStarted:
            await self.on_recording_started(event, call)
        elif cls is RecordingStopped:
            await self._end(event.uniqueid, "stopped", event.received_at, call)
        elif cls is ChannelHungUp:
            if event.uniqueid in self._open:
                await self._end(event.uniqueid, "hangup", event.received_at, call)
        elif cls is AgentConnected:
            self.on_agent_connected(event)

    # --- events -------------------------------------------------------------
    async def on_recording_started(self, event: RecordingStarted, call) -> None:
        uid, value = event.uniqueid, event.filename
        if not uid or not value:
            return  # the dialplan clearing MIXMONITOR_FILENAME after StopMixMonitor
        current = self._open.get(uid)
        if current is not None:
            try:
                same = relative_path(value, self.settings.ami_root) == current.rel
            except UnsafeName:
                same = False
            if same:
                return
            await self._end(uid, "replaced", event.received_at, call)
        linkedid = event.linkedid or uid
        started = _utc(event.received_at)
        try:
            rel = relative_path(value, self.settings.ami_root)
        except UnsafeName as exc:
            log.error("recording_name_rejected", uniqueid=uid, linkedid=linkedid, reason=str(exc),
                      name=safe_error_text(value))
            async with self.pool.acquire() as conn:
                await repo.insert_started(conn, path="", linkedid=linkedid[:64], uniqueid=uid[:64],
                                          channel=event.chan.channel, queue=event.chan.var("IVR_CHOICE"),
                                          agent=call.agent if call is not None else "", started_at=started,
                                          state="rejected", ended_at=started,
                                          error=f"{exc}: {safe_error_text(value)}")
            return
        parts = parse_name(rel)
        queue = parts.queue or event.chan.var("IVR_CHOICE")
        agent = ""
        if queue == "outbound":  # click-to-call: the recorded channel is the agent's phone
            from cti.events import agent_id_from_interface

            agent = agent_id_from_interface(event.chan.channel)[:32]
        row = dict(path=rel, linkedid=linkedid[:64], uniqueid=uid[:64], channel=event.chan.channel,
                   queue=queue, agent=agent, started_at=started)
        rec = _Open(0, rel, linkedid, self._starts.add(row), row, agent, queue)
        self._open[uid] = rec
        if len(self._open) > self.max_open:  # hang-ups lost (AMI down): the worker ends them when stale
            oldest = next(iter(self._open))
            log.warning("recording_tracking_dropped", path=self._open.pop(oldest).rel)
        log.info("recording_started", path=rel, uniqueid=uid, linkedid=linkedid)

    async def _written(self, rec: _Open) -> None:
        """Sets the recording's row id (written now if it waits in the
        batch; a batch that failed -- PostgreSQL away, or a row it refused --
        is retried for this row alone)."""
        if rec.rec_id:
            return
        try:
            if not rec.written.done():
                self._starts.flush()
            rec.rec_id, created = await asyncio.shield(rec.written)
        except Exception:
            async with self.pool.acquire() as conn:
                rec.rec_id, created = await repo.insert_started(conn, **rec.start)
        if not created:
            log.warning("recording_name_repeated", recording_id=rec.rec_id, path=rec.rel)

    def on_agent_connected(self, event: AgentConnected) -> None:
        dest = event.dest.uniqueid if event.dest is not None else ""
        for uid in (event.uniqueid, dest):
            rec = self._open.get(uid) if uid else None
            if rec is not None:
                rec.agent = rec.agent or event.agent[:32]
                rec.queue = rec.queue or event.queue[:32]

    async def _end(self, uid: str, reason: str, ts: float, call) -> None:
        rec = self._open.pop(uid, None)
        if rec is None:
            return
        try:
            await self._written(rec)
        except Exception as exc:  # PostgreSQL away at the start and now: the file stays, unindexed
            log.error("recording_row_unwritten", path=rec.rel, linkedid=rec.linkedid,
                      error=f"{type(exc).__name__}: {exc}")
            return
        agent = rec.agent or (call.agent if call is not None else "")
        queue = rec.queue or (call.queue if call is not None else "")
        if not agent:  # the agent comes from the calls row: end now, index after
            await self._end_then_index(rec, reason, ts, agent, queue)
            return
        task = asyncio.get_running_loop().create_task(self._end_and_index(rec, reason, ts, agent, queue))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _end_then_index(self, rec: _Open, reason: str, ts: float, agent: str, queue: str) -> None:
        async with self.pool.acquire() as conn:
            row = await repo.end_recording(conn, rec.rec_id, ended_at=_utc(ts), reason=reason,
                                           agent=agent, queue=queue)
        if row is None:
            return
        log.info("recording_ended", recording_id=rec.rec_id, path=rec.rel, reason=reason)
        task = asyncio.get_running_loop().create_task(self._index_soon(rec.rec_id, row))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _end_and_index(self, rec: _Open, reason: str, ts: float, agent: str, queue: str) -> None:
        """The usual end: the file is checked first, and when that check is
        conclusive (a finished WAV, or a path leaving the directory) the end
        and the index are one statement.  Otherwise (Asterisk may still be
        closing the file) the end is written and the file checked again
        after ``index_retry_delays``, as before.  A crash in between leaves
        the row 'recording' for the worker (index recovery)."""
        try:
            info, err = await _probe(self.settings, rec.rel)
            if (info is not None and info.header_complete) or (err is not None and err.kind == "rejected"):
                ended = _utc(ts)
                async with self.pool.acquire() as conn:
                    state = await _record_index(conn, self.settings, rec.rec_id, rec.rel, info, err, ended,
                                                agent, queue, end_reason=reason)
                if state and self.on_indexed is not None:
                    self.on_indexed(rec.rec_id, state)
                return
            await self._end_then_index(rec, reason, ts, agent, queue)
        except Exception:  # the worker retries rows left in 'recording'
            log.exception("recording_end_failed", recording_id=rec.rec_id)

    async def _index_soon(self, rec_id: int, row=None) -> None:
        try:
            state = await index_recording(self.pool, self.settings, rec_id, row=row)
            if self.on_indexed is not None and state:
                self.on_indexed(rec_id, state)
        except Exception:  # the worker retries rows left in 'recording'
            log.exception("recording_index_failed", recording_id=rec_id)

    async def idle(self) -> None:
        """Wait for the start rows and the indexing tasks so far (tests, shutdown)."""
        await self._starts.idle()
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        await self.idle()


async def index_recording(pool: asyncpg.Pool, settings: RecordingSettings, rec_id: int, *,
                          retry_delays: tuple[float, ...] | None = None, row=None) -> str:
    """Check the file of ``rec_id`` and record what it is.  Returns the new
    state ('' if the row was not waiting to be indexed).  ``row``: the
    recording as :func:`repo.end_recording` returned it (saves a read)."""
    if row is None or not row["agent"]:
        async with pool.acquire() as conn:
            if row is None:
                row = await repo.for_indexing(conn, rec_id)
            if row is None or row["state"] != "recording":
                return ""
            agent, queue = row["agent"], row["queue"]
            if not agent:
                agent, call_queue = await repo.call_agent(conn, row["linkedid"])
                queue = queue or call_queue
    else:
        if row["state"] != "recording":
            return ""
        agent, queue = row["agent"], row["queue"]
    rel = row["path"]
    delays = settings.index_retry_delays if retry_delays is None else retry_delays
    ended = row["ended_at"] or datetime.now(timezone.utc)
    for attempt in range(len(delays) + 1):
        info, err = await _probe(settings, rel)
        if (err is not None and err.kind == "rejected") or (info is not None and info.header_complete):
            break
        if attempt < len(delays):  # Asterisk may still be closing the file
            await asyncio.sleep(delays[attempt])
    async with pool.acquire() as conn:
        return await _record_index(conn, settings, rec_id, rel, info, err, ended, agent, queue)


async def _probe(settings: RecordingSettings, rel: str) -> tuple[Any, RecordingFileError | None]:
    """(info, None) or (None, the file's error); in a thread: resolving the
    path and reading the file are system calls."""
    try:
        info = await asyncio.get_running_loop().run_in_executor(None, _probe_inside, settings.root, rel)
        return info, None
    except RecordingFileError as exc:
        return None, exc


async def _record_index(conn: asyncpg.Connection, settings: RecordingSettings, rec_id: int, rel: str, info,
                        err: RecordingFileError | None, ended: datetime, agent: str, queue: str, *,
                        end_reason: str = "") -> str:
    """One statement: the new state and the call's work orders (with
    ``end_reason``, also the end, of a recording not ended yet); a legal
    hold (complaint/report orders) is raised after it -- the retention sweep
    checks the orders again before it deletes anything.  '' when the row was
    not waiting for this."""
    keep_until = retention_until(ended, settings.retention_days)
    end = (ended, end_reason) if end_reason else None
    if info is not None:
        note = "" if info.header_complete else "WAV 头未完成,时长按实际数据计算 / WAV header not finalised"
        orders = await repo.set_indexed_with_orders(
            conn, rec_id, duration_s=info.duration_s, size_bytes=info.size_bytes, sha256=info.sha256,
            fmt=info.format, retention_until=keep_until, agent=agent, queue=queue, note=note, end=end)
        state = "indexed"
    else:
        assert err is not None
        state = {"missing": "missing", "rejected": "rejected"}.get(err.kind, "corrupt")
        orders = await repo.set_failed_with_orders(conn, rec_id, state=state, error=err.message,
                                                   retention_until=keep_until, agent=agent, queue=queue, end=end)
    if orders is None:
        return ""
    hold, _open = legal_hold_until(repo.as_linked(orders), settings.retention_days, datetime.now(timezone.utc))
    if hold is not None:
        await repo.set_hold(conn, rec_id, hold, "complaint/report order")
    if end is not None:
        log.info("recording_ended", recording_id=rec_id, path=rel, reason=end_reason)
    if info is not None:
        log.info("recording_indexed", recording_id=rec_id, path=rel, duration_s=round(info.duration_s, 2),
                 size_bytes=info.size_bytes, orders=len(orders))
    else:
        log.error("recording_file_bad", recording_id=rec_id, path=rel, state=state, kind=err.kind,
                  error=err.message)
    return state


# --- the background worker -----------------------------------------------------

@dataclass
class WorkerStats:
    indexed: int = 0
    transcoded: int = 0
    transcode_errors: int = 0
    expired: int = 0
    held: int = 0
    errors: list[str] = field(default_factory=list)


class RecordingWorker:
    """Durable background work, safe with several processes on one database:
    rows are claimed with ``FOR UPDATE SKIP LOCKED`` (transcoding with a lease,
    so a crashed worker's claim runs out)."""

    def __init__(self, pool: asyncpg.Pool, settings: RecordingSettings, *, writer: Writer = pydub_writer,
                 decoder: Callable[[Path], float] | None = None, interval_s: float = 30.0,
                 sweep_every_s: float = 3600.0, busy: Callable[[], bool] | None = None,
                 min_gap_s: float = 1.0) -> None:
        """``min_gap_s``: a wake-up (a recording indexed) starts the next
        pass no sooner than this after the previous one began: in a storm
        one pass serves many recordings, not one pass per recording."""
        self.pool = pool
        self.min_gap_s = min_gap_s
        # transcoding is deferred while busy() says the hotline is (a storm:
        # the CPU goes to the calls); the originals are kept meanwhile
        self.busy = busy
        self.deferred = 0
        self.settings = settings
        self.writer = writer
        self.decoder = decoder
        self.interval_s = interval_s
        self.sweep_every_s = sweep_every_s
        self.stats = WorkerStats()
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._last_sweep = -1e18

    def wake(self, *_args: Any) -> None:
        self._wake.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="recording-worker")

    async def stop(self) -> None:
        await stop_task(self._task)
        self._task = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            began = loop.time()
            self._wake.clear()  # what wakes us from here on is served by the next pass
            try:
                sweep = loop.time() - self._last_sweep >= self.sweep_every_s
                await self.run_once(sweep=sweep)
                if sweep:
                    self._last_sweep = loop.time()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("recording_worker_pass_failed")
            try:
                await asyncio.wait_for(self._wake.wait(), self.interval_s)
            except asyncio.TimeoutError:
                pass
            gap = self.min_gap_s - (loop.time() - began)
            if gap > 0:
                await asyncio.sleep(gap)

    async def run_once(self, *, sweep: bool = True) -> WorkerStats:
        await self.recover()
        while await self.transcode_batch():
            pass
        await self.remove_originals()
        if sweep:
            await self.retention_sweep()
        return self.stats

    # --- index recovery ---------------------------------------------------------
    async def recover(self) -> None:
        async with self.pool.acquire() as conn:
            rows = await repo.pending_index(conn, stale_after_s=self.settings.stale_after_s)
        for r in rows:
            if r["ended_at"] is None:
                log.warning("recording_never_ended", recording_id=r["id"])
            if await index_recording(self.pool, self.settings, r["id"], retry_delays=()):
                self.stats.indexed += 1

    # --- transcoding ------------------------------------------------------------
    async def transcode_batch(self) -> int:
        fmt = self.settings.compact_format
        if not fmt:
            return 0
        if self._busy():
            return 0
        async with self.pool.acquire() as conn:
            rows = await repo.claim_transcode(conn, limit=self.settings.transcode_batch,
                                              lease_s=self.settings.transcode_lease_s)
        for r in rows:
            await self.transcode_one(r["id"], r["path"], r["duration_s"] or 0.0, r["transcode_attempts"])
        return len(rows)

    def _busy(self) -> bool:
        try:
            busy = self.busy is not None and bool(self.busy())
        except Exception:
            log.exception("recording_busy_check_failed")
            return False
        if busy:
            self.deferred += 1
            if self.deferred == 1 or self.deferred % 100 == 0:
                log.info("recording_transcode_deferred", times=self.deferred)
        return busy

    async def transcode_one(self, rec_id: int, rel: str, duration_s: float, attempts: int) -> bool:
        fmt = self.settings.compact_format
        suffix = COMPACT_FORMATS[fmt][3]
        src = self.settings.original(rel)
        copy_rel = rel[: -len(".wav")] + suffix if rel.lower().endswith(".wav") else rel + suffix
        dst = self.settings.copy(copy_rel)
        kw: dict[str, Any] = {"writer": self.writer}
        if self.decoder is not None:
            kw["decoder"] = self.decoder
        loop = asyncio.get_running_loop()
        try:
            copy = await loop.run_in_executor(None, lambda: make_compact_copy(src, dst, fmt, duration_s, **kw))
        except RecordingFileError as exc:
            self.stats.transcode_errors += 1
            self.stats.errors.append(exc.kind)
            async with self.pool.acquire() as conn:
                if exc.kind == "missing":
                    await repo.mark_file_missing(conn, rec_id, exc.message)
                    log.error("recording_original_missing", recording_id=rec_id, path=rel)
                    return False
                retry = min(86400.0, self.settings.transcode_retry_s * 2 ** max(0, attempts - 1))
                await repo.transcode_failed(conn, rec_id, error=exc.message, retry_in_s=retry)
            log.error("recording_transcode_failed", recording_id=rec_id, path=rel, kind=exc.kind,
                      error=exc.message, retry_in_s=retry, original_kept=True)
            return False
        async with self.pool.acquire() as conn:
            ok = await repo.set_transcoded(conn, rec_id, path=copy_rel, fmt=f"{fmt}/{COMPACT_FORMATS[fmt][2]}",
                                           size=copy.size_bytes, sha256=copy.sha256)
        if not ok:  # the row changed meanwhile (expired?): drop our copy
            dst.unlink(missing_ok=True)
            return False
        self.stats.transcoded += 1
        log.info("recording_transcoded", recording_id=rec_id, path=copy_rel, size_bytes=copy.size_bytes,
                 duration_s=round(copy.duration_s, 2))
        await self._remove_original(rec_id, rel)
        return True

    async def _remove_original(self, rec_id: int, rel: str) -> None:
        try:
            self.settings.original(rel).unlink(missing_ok=True)
        except OSError as exc:
            log.error("recording_original_not_removed", recording_id=rec_id, path=rel, error=str(exc))
            return
        async with self.pool.acquire() as conn:
            await repo.set_original_removed(conn, rec_id)

    async def remove_originals(self) -> None:
        """Originals whose verified copy exists but that could not be removed before."""
        async with self.pool.acquire() as conn:
            rows = await repo.originals_to_remove(conn)
        for r in rows:
            await self._remove_original(r["id"], r["path"])

    # --- retention --------------------------------------------------------------
    async def retention_sweep(self) -> int:
        now = datetime.now(timezone.utc)
        async with self.pool.acquire() as conn:
            ids = await repo.retention_candidates(conn)
        expired = 0
        for rec_id in ids:
            async with self.pool.acquire() as conn:
                async with conn.transaction():
                    row = await repo.lock_for_expiry(conn, rec_id)
                    if row is None:
                        continue
                    orders = repo.as_linked(await repo.linked_orders(conn, rec_id))
                    hold, open_hold = legal_hold_until(orders, self.settings.retention_days, now)
                    if hold is not None:
                        await repo.set_hold(conn, rec_id, hold, "complaint/report order"
                                            + (" open" if open_hold else " closed"))
                    current_hold = row["legal_hold_until"]
                    if hold is not None and (current_hold is None or hold > current_hold):
                        current_hold = hold
                    if not is_expired(row["retention_until"], current_hold, open_hold, now):
                        self.stats.held += 1
                        log.info("recording_held", recording_id=rec_id, hold_until=str(current_hold),
                                 open_order=open_hold)
                        continue
                    try:
                        self._delete_files(row)
                    except OSError as exc:
                        log.error("recording_expiry_delete_failed", recording_id=rec_id, error=str(exc))
                        continue
                    await repo.set_expired(conn, rec_id)
            expired += 1
            self.stats.expired += 1
            log.info("recording_expired", recording_id=rec_id)
        return expired

    def _delete_files(self, row) -> None:
        if row["path"]:
            self.settings.original(row["path"]).unlink(missing_ok=True)
        if row["transcoded_path"]:
            self.settings.copy(row["transcoded_path"]).unlink(missing_ok=True)

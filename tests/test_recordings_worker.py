"""Recordings worker on PostgreSQL: transcoding to Opus (real ffmpeg), the
original kept until the copy is verified, a full disk, retention and legal
hold, SKIP LOCKED claims, the append-only audit log."""
from __future__ import annotations

import errno
from datetime import datetime, timedelta, timezone
from pathlib import Path

import asyncpg
import pytest
from structlog.testing import capture_logs

from recordings import repository as repo
from recordings.audio import decoded_duration
from recordings.service import RecordingSettings, RecordingWorker, index_recording
from tests.recordings_util import make_order, tone


def settings_for(root: Path, **kw) -> RecordingSettings:
    kw.setdefault("index_retry_delays", ())
    return RecordingSettings(root=str(root), **kw)


async def indexed(pool, settings, rel: str, *, seconds: float = 2.0, linkedid: str = "100.1",
                  agent: str = "1001", ended_days_ago: float = 0.0) -> int:
    tone(Path(settings.root) / rel, seconds)
    ended = datetime.now(timezone.utc) - timedelta(days=ended_days_ago)
    async with pool.acquire() as conn:
        rec_id, _ = await repo.insert_started(conn, path=rel, linkedid=linkedid, uniqueid=linkedid, channel="x",
                                              queue="repair", agent=agent, started_at=ended - timedelta(minutes=3))
        await repo.end_recording(conn, rec_id, ended_at=ended, reason="stopped")
    assert await index_recording(pool, settings, rec_id) == "indexed"
    return rec_id


async def get(pool, rec_id):
    async with pool.acquire() as conn:
        return await repo.get(conn, rec_id)


async def test_transcode_to_opus_verified_then_original_removed(pool, tmp_path):
    archive = tmp_path / "archive"
    s = settings_for(tmp_path / "spool", archive_root=str(archive))
    rel = "20261122/100.1-100.1-repair-120000.wav"
    rec_id = await indexed(pool, s, rel, seconds=4.0)
    worker = RecordingWorker(pool, s)
    await worker.run_once(sweep=False)
    r = await get(pool, rec_id)
    assert r["state"] == "transcoded" and r["transcoded_verified"] and r["original_removed"]
    copy = archive / r["transcoded_path"]
    assert r["transcoded_path"] == "20261122/100.1-100.1-repair-120000.opus"
    assert copy.read_bytes()[:4] == b"OggS" and r["transcoded_size"] == copy.stat().st_size
    assert r["transcoded_size"] < r["size_bytes"] / 4
    assert decoded_duration(copy) == pytest.approx(4.0, abs=0.25)
    assert not (tmp_path / "spool" / rel).exists()
    # the original's checksum and duration stay on record
    assert r["sha256"] and r["duration_s"] == pytest.approx(4.0)
    assert not list(archive.rglob("*.part"))


async def test_full_disk_keeps_the_original_and_retries_later(pool, tmp_path):
    s = settings_for(tmp_path, transcode_retry_s=60.0)
    rel = "20261122/101.1-101.1-repair-120000.wav"
    rec_id = await indexed(pool, s, rel)

    def full_disk(src: Path, dst: Path, fmt: str) -> None:
        dst.write_bytes(b"OggS partial")      # half-written before the disk filled up
        raise OSError(errno.ENOSPC, "No space left on device", str(dst))

    with capture_logs() as logs:
        await RecordingWorker(pool, s, writer=full_disk).run_once(sweep=False)
    r = await get(pool, rec_id)
    assert r["state"] == "indexed" and not r["original_removed"] and "disk full" in r["error"]
    assert (tmp_path / rel).exists() and not list(tmp_path.rglob("*.opus*"))   # partial copy removed
    (err,) = [x for x in logs if x["event"] == "recording_transcode_failed"]
    assert err["log_level"] == "error" and err["kind"] == "disk_full" and err["original_kept"]
    assert r["transcode_after"] > datetime.now(timezone.utc) + timedelta(seconds=30)
    # not before its time...
    await RecordingWorker(pool, s).run_once(sweep=False)
    assert (await get(pool, rec_id))["state"] == "indexed"
    # ...but once due, with room on the disk again, it is done
    async with pool.acquire() as conn:
        await conn.execute("UPDATE recordings SET transcode_after = now() WHERE id = $1", rec_id)
    await RecordingWorker(pool, s).run_once(sweep=False)
    r = await get(pool, rec_id)
    assert r["state"] == "transcoded" and r["error"] == "" and not (tmp_path / rel).exists()


async def test_a_copy_that_does_not_verify_is_discarded(pool, tmp_path):
    s = settings_for(tmp_path)
    rel = "20261122/102.1-102.1-repair-120000.wav"
    rec_id = await indexed(pool, s, rel, seconds=3.0)
    with capture_logs() as logs:
        await RecordingWorker(pool, s, decoder=lambda p: 1.0).run_once(sweep=False)  # a copy 2 s short
    r = await get(pool, rec_id)
    assert r["state"] == "indexed" and (tmp_path / rel).exists() and "时长" in r["error"]
    assert not list(tmp_path.rglob("*.opus"))
    assert [x["kind"] for x in logs if x["event"] == "recording_transcode_failed"] == ["verify_failed"]


async def test_transcode_claims_skip_locked_rows(pool, tmp_path):
    s = settings_for(tmp_path)
    ids = [await indexed(pool, s, f"20261122/{110 + i}.1-x-repair-120000.wav", linkedid=f"{110 + i}.1")
           for i in range(3)]
    async with pool.acquire() as a, pool.acquire() as b:
        async with a.transaction():
            first = await a.fetch("SELECT id FROM recordings WHERE id = $1 FOR UPDATE", ids[0])
            got_b = await repo.claim_transcode(b, limit=10, lease_s=60)   # skips the locked row
        assert [r["id"] for r in first] == [ids[0]]
        assert sorted(r["id"] for r in got_b) == ids[1:]
        again = await repo.claim_transcode(a, limit=10, lease_s=60)       # the lease holds the others
        assert [r["id"] for r in again] == [ids[0]]


async def test_retention_and_legal_hold(pool, tmp_path):
    s = settings_for(tmp_path, retention_days=30, compact_format="")
    old = 40  # days since the call
    plain = await indexed(pool, s, "d/200.1.wav", linkedid="200.1", ended_days_ago=old)
    repair = await indexed(pool, s, "d/201.1.wav", linkedid="201.1", ended_days_ago=old)
    open_complaint = await indexed(pool, s, "d/202.1.wav", linkedid="202.1", ended_days_ago=old)
    recently_closed = await indexed(pool, s, "d/203.1.wav", linkedid="203.1", ended_days_ago=old)
    long_closed = await indexed(pool, s, "d/204.1.wav", linkedid="204.1", ended_days_ago=old)
    report_open = await indexed(pool, s, "d/205.1.wav", linkedid="205.1", ended_days_ago=old)
    manual = await indexed(pool, s, "d/206.1.wav", linkedid="206.1", ended_days_ago=old)
    young = await indexed(pool, s, "d/207.1.wav", linkedid="207.1", ended_days_ago=5)
    async with pool.acquire() as conn:
        await make_order(conn, "201.1", order_type="repair", status="closed", closed_days_ago=35)
        await make_order(conn, "202.1", order_type="complaint", status="dispatched", department="营销部")
        await make_order(conn, "203.1", order_type="complaint", status="closed", closed_days_ago=10)
        await make_order(conn, "204.1", order_type="complaint", status="closed", closed_days_ago=31)
        await make_order(conn, "205.1", order_type="report", status="accepted")
        await repo.set_legal_hold(conn, manual, datetime.now(timezone.utc) + timedelta(days=3), "纠纷 (s1)")
        # retention_until was set at indexing time (ended + 30 days)
        for rec_id in (plain, repair, open_complaint, recently_closed, long_closed, report_open, manual, young):
            await conn.execute("UPDATE recordings SET legal_hold_until = NULL WHERE id = $1 AND id <> $2",
                               rec_id, manual)
    worker = RecordingWorker(pool, s)
    with capture_logs() as logs:
        assert await worker.retention_sweep() == 3
    states = {i: (await get(pool, i))["state"] for i in
              (plain, repair, open_complaint, recently_closed, long_closed, report_open, manual, young)}
    assert states == {plain: "expired", repair: "expired", open_complaint: "indexed", recently_closed: "indexed",
                      long_closed: "expired", report_open: "indexed", manual: "indexed", young: "indexed"}
    for name in ("200.1", "201.1", "204.1"):
        assert not (tmp_path / f"d/{name}.wav").exists()
    assert (tmp_path / "d/202.1.wav").exists() and (tmp_path / "d/203.1.wav").exists()
    r = await get(pool, recently_closed)
    assert r["legal_hold_until"] > datetime.now(timezone.utc) + timedelta(days=19)
    assert {x["event"] for x in logs} >= {"recording_expired", "recording_held"}
    # a second sweep changes nothing; the held ones stay until their hold ends
    assert await worker.retention_sweep() == 0
    # once the complaint is closed long enough ago, it goes
    async with pool.acquire() as conn:
        await conn.execute("UPDATE work_orders SET closed_at = now() - interval '31 days' WHERE linkedid = '203.1'")
        await conn.execute("UPDATE recordings SET legal_hold_until = now() - interval '1 day' WHERE id = $1",
                           recently_closed)
    assert await worker.retention_sweep() == 1
    assert (await get(pool, recently_closed))["state"] == "expired"


async def test_transcoded_copies_are_deleted_at_expiry(pool, tmp_path):
    s = settings_for(tmp_path, retention_days=1)
    rec_id = await indexed(pool, s, "d/300.1.wav", linkedid="300.1", ended_days_ago=3)
    worker = RecordingWorker(pool, s)
    await worker.run_once(sweep=False)
    assert (tmp_path / "d/300.1.opus").exists()
    await worker.run_once(sweep=True)
    r = await get(pool, rec_id)
    assert r["state"] == "expired" and r["expired_at"] is not None and not (tmp_path / "d/300.1.opus").exists()


async def test_access_log_is_append_only(pool):
    async with pool.acquire() as conn:
        await repo.audit(conn, recording_id=None, username="s1", role="supervisor", action="denied", status=403)
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("UPDATE recording_access_log SET username = 'x'")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("DELETE FROM recording_access_log")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("TRUNCATE recording_access_log")
        assert await conn.fetchval("SELECT count(*) FROM recording_access_log") == 1


async def test_database_refuses_traversal_in_stored_paths(pool):
    async with pool.acquire() as conn:
        for bad in ("../etc/passwd.wav", "/abs.wav", "a/../../b.wav"):
            with pytest.raises(asyncpg.CheckViolationError):
                await repo.insert_started(conn, path=bad, linkedid="1", uniqueid="1", channel="", queue="",
                                          agent="", started_at=datetime.now(timezone.utc))


async def test_transcoding_waits_while_the_hotline_is_busy(pool, tmp_path):
    s = settings_for(tmp_path / "spool")
    rec_id = await indexed(pool, s, "20261122/100.7-100.7-repair-120000.wav", linkedid="100.7")
    storm = [True]
    worker = RecordingWorker(pool, s, busy=lambda: storm[0])
    await worker.run_once(sweep=False)
    r = await get(pool, rec_id)
    assert r["state"] == "indexed" and not r["original_removed"] and worker.deferred >= 1
    storm[0] = False  # the storm is over: the copy is made
    await worker.run_once(sweep=False)
    r = await get(pool, rec_id)
    assert r["state"] == "transcoded" and r["original_removed"]


async def test_a_failing_busy_check_does_not_stop_transcoding(pool, tmp_path):
    s = settings_for(tmp_path / "spool")
    rec_id = await indexed(pool, s, "20261122/100.8-100.8-repair-120000.wav", linkedid="100.8")

    def broken() -> bool:
        raise RuntimeError("gauge broken")

    await RecordingWorker(pool, s, busy=broken).run_once(sweep=False)
    assert (await get(pool, rec_id))["state"] == "transcoded"


def test_hotline_is_busy_with_a_backlog_or_a_high_event_rate():
    from recordings.wiring import BusyGauge

    t, events, backlog = [0.0], [0], [0]
    g = BusyGauge(lambda: events[0], lambda: backlog[0], events_per_s=450, max_backlog=100,
                  clock=lambda: t[0])
    t[0], events[0] = 2.0, 600  # 300 events/s: a normal hour
    assert g() is False
    t[0], events[0] = 3.0, 1600  # 1000 events/s: a storm
    assert g() is True
    t[0] = 3.5  # within the second: the last rate stands
    assert g() is True
    t[0], events[0] = 5.0, 1700  # quiet again
    assert g() is False
    backlog[0] = 101  # the pipeline cannot keep up
    assert g() is True


async def test_a_burst_of_wake_ups_is_served_by_few_passes_and_the_last_recording_is_still_transcoded(
        pool, tmp_path):
    """A storm indexes a recording every few ms and each wakes the worker:
    passes are at least min_gap_s apart, and a recording indexed during the
    gap is served by the next pass (nothing waits for the 30 s timer)."""
    import asyncio

    s = settings_for(tmp_path)
    passes = []

    class Counting(RecordingWorker):
        async def run_once(self, *, sweep: bool = True):
            passes.append(asyncio.get_running_loop().time())
            return await super().run_once(sweep=sweep)

    worker = Counting(pool, s, interval_s=30.0, min_gap_s=0.4)
    worker.start()
    try:
        await asyncio.sleep(0.1)
        assert len(passes) == 1  # the start-up pass
        for i in range(30):  # 30 wake-ups in ~0.3 s
            worker.wake()
            await asyncio.sleep(0.01)
        last = await indexed(pool, s, "d/400.1.wav", linkedid="400.1")
        worker.wake()
        for _ in range(100):
            if (await get(pool, last))["state"] == "transcoded":
                break
            await asyncio.sleep(0.05)
        assert (await get(pool, last))["state"] == "transcoded"
        assert 2 <= len(passes) <= 3
        assert all(b - a >= 0.39 for a, b in zip(passes, passes[1:]))
    finally:
        await worker.stop()

"""Recording index on PostgreSQL: from real Asterisk 22 traces and from the
PBX simulator over TCP; the bad inputs (missing, zero-length, corrupt,
path traversal, symlink) become row states and log lines, never exceptions."""
from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncpg
import pytest
from structlog.testing import capture_logs

from cti.events import RecordingStarted, RecordingStopped
from cti.frame import Frame
from cti.pipeline import CallPipeline
from recordings.service import RecordingIndexer, RecordingSettings, index_recording
from tests.recordings_util import corrupt_wav, make_call, make_order, tone, truncated_header_wav
from tests.test_normalise_traces import replay_events, replay_frames, trace

TRACE_ROOT = "/var/spool/asterisk/recordings"


def settings_for(root: Path, **kw) -> RecordingSettings:
    kw.setdefault("index_retry_delays", ())
    return RecordingSettings(root=str(root), **kw)


async def replay(pool, settings, prefix: str) -> RecordingIndexer:
    pipeline = CallPipeline()
    indexer = RecordingIndexer(pool, settings)
    pipeline.add_handler(indexer)
    t0 = time.time()
    for t, frame in replay_frames(trace(prefix)):
        await pipeline.process(frame, t0 + t)
    await indexer.idle()
    return indexer


async def rows(pool):
    async with pool.acquire() as conn:
        return [dict(r) for r in await conn.fetch("SELECT * FROM recordings ORDER BY id")]


def test_normaliser_models_the_recording_events():
    events = replay_events(trace("01-"))
    started = [e for e in events if isinstance(e, RecordingStarted)]
    stopped = [e for e in events if isinstance(e, RecordingStopped)]
    assert [e.filename for e in started] == [f"{TRACE_ROOT}/repair-20261122-191043-1795374638.1.wav"]
    assert [(e.uniqueid, e.linkedid) for e in stopped] == [("1795374638.1", "1795374638.0")]
    assert not [e for e in replay_events(trace("12-")) if isinstance(e, RecordingStopped)]


async def test_trace_01_indexed_once_on_mixmonitorstop(pool, tmp_path):
    f = tone(tmp_path / "repair-20261122-191043-1795374638.1.wav", 3.0)
    await replay(pool, settings_for(tmp_path, asterisk_root=TRACE_ROOT), "01-")
    (r,) = await rows(pool)
    assert r["state"] == "indexed" and r["end_reason"] == "stopped"
    assert r["path"] == f.name and r["linkedid"] == "1795374638.0" and r["uniqueid"] == "1795374638.1"
    assert r["agent"] == "1001" and r["queue"] == "repair"
    assert r["duration_s"] == pytest.approx(3.0) and r["size_bytes"] == f.stat().st_size
    import hashlib

    assert r["sha256"] == hashlib.sha256(f.read_bytes()).hexdigest()
    assert r["format"] == "wav/pcm_s16le/8000/1"
    assert r["retention_until"] > r["ended_at"]


async def test_trace_12_indexed_on_hangup_without_mixmonitorstop(pool, tmp_path):
    tone(tmp_path / "repair-20261122-191411-1795374850.119.wav", 5.0)
    await replay(pool, settings_for(tmp_path, asterisk_root=TRACE_ROOT), "12-")
    (r,) = await rows(pool)
    assert (r["state"], r["end_reason"], r["uniqueid"]) == ("indexed", "hangup", "1795374850.119")


async def test_trace_02_complaint_member_leg_links_to_the_order(pool, tmp_path):
    tone(tmp_path / "complaint-20261122-191056-1795374654.8.wav", 2.0)
    async with pool.acquire() as conn:
        order_id = await make_order(conn, "1795374653.4", order_type="complaint", status="accepted", agent="1002")
    await replay(pool, settings_for(tmp_path, asterisk_root=TRACE_ROOT), "02-")
    (r,) = await rows(pool)
    assert (r["state"], r["linkedid"], r["uniqueid"], r["agent"]) == (
        "indexed", "1795374653.4", "1795374654.8", "1002")
    async with pool.acquire() as conn:
        linked = await conn.fetch("SELECT order_id FROM recording_orders WHERE recording_id = $1", r["id"])
    assert [x["order_id"] for x in linked] == [order_id]
    # an open complaint: held
    assert r["legal_hold_until"] is not None


async def test_trace_with_the_production_root_rejects_the_acceptance_path(pool, tmp_path):
    """The capture's files lie outside /var/spool/asterisk/recordings/hotline: a clear rejection."""
    with capture_logs() as logs:
        await replay(pool, settings_for(tmp_path, asterisk_root=TRACE_ROOT + "/hotline"), "01-")
    (r,) = await rows(pool)
    assert r["state"] == "rejected" and r["path"] == "" and "outside" in r["error"]
    assert [x["log_level"] for x in logs if x["event"] == "recording_name_rejected"] == ["error"]


def _chan(uid: str, lid: str, channel: str = "PJSIP/carrier-00000001") -> list[tuple[str, str]]:
    return [("Channel", channel), ("ChannelState", "6"), ("Uniqueid", uid), ("Linkedid", lid),
            ("ChanVariable", "IVR_CHOICE=repair")]


def varset(uid: str, value: str, lid: str | None = None) -> Frame:
    return Frame((("Event", "VarSet"), *_chan(uid, lid or uid), ("Variable", "MIXMONITOR_FILENAME"),
                  ("Value", value)))


def stop(uid: str, lid: str | None = None) -> Frame:
    return Frame((("Event", "MixMonitorStop"), *_chan(uid, lid or uid)))


def hangup(uid: str, lid: str | None = None) -> Frame:
    return Frame((("Event", "Hangup"), *_chan(uid, lid or uid), ("Cause", "16")))


ROOT = "/var/spool/asterisk/recordings/hotline"


async def feed(pool, settings, *frames: Frame) -> RecordingIndexer:
    pipeline = CallPipeline()
    indexer = RecordingIndexer(pool, settings)
    pipeline.add_handler(indexer)
    for f in frames:
        await pipeline.process(f, time.time())
    await indexer.idle()
    return indexer


async def test_stop_then_hangup_indexes_once_and_a_repeated_varset_is_one_row(pool, tmp_path):
    rel = "20261122/1.1-1.1-repair-120000.wav"
    tone(tmp_path / rel, 1.0)
    await feed(pool, settings_for(tmp_path, asterisk_root=ROOT),
               varset("1.1", f"{ROOT}/{rel}"), varset("1.1", f"{ROOT}/{rel}"),
               stop("1.1"), hangup("1.1"), hangup("1.1"), varset("1.1", ""))
    (r,) = await rows(pool)
    assert (r["state"], r["end_reason"], r["path"]) == ("indexed", "stopped", rel)


async def test_a_new_file_on_the_same_channel_ends_the_previous_one(pool, tmp_path):
    """A caller transferred back into a queue: the next recording starts a new file."""
    a, b = "20261122/1.1-1.1-repair-120000.wav", "20261122/1.1-1.1-enquiry-120500.wav"
    tone(tmp_path / a, 1.0)
    tone(tmp_path / b, 2.0)
    await feed(pool, settings_for(tmp_path, asterisk_root=ROOT),
               varset("1.1", f"{ROOT}/{a}"), varset("1.1", f"{ROOT}/{b}"), hangup("1.1"))
    got = [(r["path"], r["state"], r["end_reason"], r["queue"]) for r in await rows(pool)]
    assert got == [(a, "indexed", "replaced", "repair"), (b, "indexed", "hangup", "enquiry")]


async def test_bad_files_become_states_and_log_lines(pool, tmp_path):
    names = {"2.1": "20261122/2.1-2.1-repair-120000.wav",   # missing
             "3.1": "20261122/3.1-3.1-repair-120000.wav",   # zero-length
             "4.1": "20261122/4.1-4.1-repair-120000.wav",   # corrupt
             "5.1": "20261122/5.1-5.1-repair-120000.wav"}   # tone, but the header is unfinished
    (tmp_path / "20261122").mkdir()
    (tmp_path / names["3.1"]).write_bytes(b"")
    corrupt_wav(tmp_path / names["4.1"])
    truncated_header_wav(tmp_path / names["5.1"], 2.0)
    frames = []
    for uid, rel in names.items():
        frames += [varset(uid, f"{ROOT}/{rel}"), hangup(uid)]
    with capture_logs() as logs:
        await feed(pool, settings_for(tmp_path, asterisk_root=ROOT), *frames)
    got = {r["uniqueid"]: r for r in await rows(pool)}
    assert got["2.1"]["state"] == "missing" and "not found" in got["2.1"]["error"]
    assert got["3.1"]["state"] == "corrupt" and "empty" in got["3.1"]["error"]
    assert got["4.1"]["state"] == "corrupt" and got["4.1"]["error"]
    assert got["5.1"]["state"] == "indexed" and got["5.1"]["duration_s"] == pytest.approx(2.0)
    assert "header" in got["5.1"]["error"]
    bad = [x for x in logs if x["event"] == "recording_file_bad"]
    assert sorted(x["state"] for x in bad) == ["corrupt", "corrupt", "missing"]
    assert all(x["log_level"] == "error" for x in bad)


@pytest.mark.parametrize("value", [
    f"{ROOT}/../../../../etc/passwd.wav",
    f"{ROOT}/20261122/../../shadow.wav",
    "/etc/asterisk/manager.conf",
    "20261122/relative.wav",
    f"{ROOT}/20261122/x\x00y.wav",
])
async def test_path_traversal_in_the_file_name_is_rejected(pool, tmp_path, value):
    with capture_logs() as logs:
        await feed(pool, settings_for(tmp_path, asterisk_root=ROOT), varset("6.1", value), hangup("6.1"))
    (r,) = await rows(pool)
    assert (r["state"], r["path"]) == ("rejected", "")
    assert [x["event"] for x in logs if x["log_level"] == "error"] == ["recording_name_rejected"]


async def test_a_symlink_leaving_the_root_is_rejected(pool, tmp_path):
    outside = tmp_path / "outside"
    tone(outside / "secret.wav", 1.0)
    root = tmp_path / "root"
    (root / "20261122").mkdir(parents=True)
    (root / "20261122" / "7.1-7.1-repair-120000.wav").symlink_to(outside / "secret.wav")
    await feed(pool, settings_for(root, asterisk_root=ROOT),
               varset("7.1", f"{ROOT}/20261122/7.1-7.1-repair-120000.wav"), hangup("7.1"))
    (r,) = await rows(pool)
    assert r["state"] == "rejected" and "outside" in r["error"]


def test_open_beneath_refuses_every_link_below_the_root_and_what_is_not_a_file(tmp_path):
    import os

    from recordings.audio import RecordingFileError
    from recordings.service import open_beneath

    outside = tmp_path / "outside"
    tone(outside / "x.wav", 0.5)
    root = tmp_path / "root"
    (root / "20261122").mkdir(parents=True)
    tone(root / "20261122" / "ok.wav", 0.5)
    with open_beneath(str(root), "20261122/ok.wav") as f:
        assert f.read(4) == b"RIFF"
    (root / "20261123").symlink_to(outside)                       # a linked directory
    (root / "20261122" / "inside-link.wav").symlink_to(root / "20261122" / "ok.wav")  # even to a file inside
    os.mkfifo(root / "20261122" / "fifo.wav")                     # would block a plain open()
    (root / "20261122" / "dir.wav").mkdir()
    for rel, kind in [("20261123/x.wav", "rejected"), ("20261122/inside-link.wav", "rejected"),
                      ("20261122/fifo.wav", "rejected"), ("20261122/dir.wav", "rejected"),
                      ("20261122/none.wav", "missing"), ("20261199/none.wav", "missing"),
                      ("20261122/../../outside/x.wav", "rejected")]:
        with pytest.raises(RecordingFileError) as e:
            open_beneath(str(root), rel)
        assert e.value.kind == kind, rel


async def test_a_late_file_is_found_by_the_retry(pool, tmp_path):
    rel = "20261122/8.1-8.1-repair-120000.wav"
    settings = settings_for(tmp_path, asterisk_root=ROOT, index_retry_delays=(0.3,))
    pipeline = CallPipeline()
    indexer = RecordingIndexer(pool, settings)
    pipeline.add_handler(indexer)
    await pipeline.process(varset("8.1", f"{ROOT}/{rel}"), time.time())
    truncated_header_wav(tmp_path / rel, 1.0)   # Asterisk still writing
    await pipeline.process(stop("8.1"), time.time())
    await asyncio.sleep(0.1)
    tone(tmp_path / rel, 1.5)                    # closed: header final
    await indexer.idle()
    (r,) = await rows(pool)
    assert r["state"] == "indexed" and r["duration_s"] == pytest.approx(1.5) and r["error"] == ""


async def test_worker_recovers_rows_a_crash_left_unindexed(pool, tmp_path):
    from recordings import repository as repo
    from recordings.service import RecordingWorker
    from datetime import datetime, timedelta, timezone

    rel = "20261122/9.1-9.1-repair-120000.wav"
    tone(tmp_path / rel, 1.0)
    now = datetime.now(timezone.utc)
    async with pool.acquire() as conn:
        await make_call(conn, "9.1", agent="1003")
        rec_id, _ = await repo.insert_started(conn, path=rel, linkedid="9.1", uniqueid="9.1", channel="x",
                                              queue="repair", agent="", started_at=now - timedelta(hours=7))
        never_ended, _ = await repo.insert_started(conn, path="20261122/9.2-9.2-repair-120000.wav",
                                                   linkedid="9.2", uniqueid="9.2", channel="x", queue="repair",
                                                   agent="", started_at=now - timedelta(hours=7))
        await repo.end_recording(conn, rec_id, ended_at=now - timedelta(hours=6), reason="hangup")
    worker = RecordingWorker(pool, settings_for(tmp_path, compact_format=""))
    await worker.recover()
    got = {r["id"]: r for r in await rows(pool)}
    assert got[rec_id]["state"] == "indexed" and got[rec_id]["agent"] == "1003"   # agent from the call row
    assert got[never_ended]["state"] == "missing"
    # indexing is idempotent
    assert await index_recording(pool, settings_for(tmp_path), rec_id) == ""


async def test_indexing_from_simulator_calls(db_url):
    """Whole service: the simulator names files like extensions.conf and
    writes them; the indexer picks them up over real AMI."""
    from cti.simulator import CallSpec
    from tests.harness import running_service

    async with running_service(db_url) as svc:
        from cti.app import config_key, services_key
        from cti.web import pool_key

        root = Path(svc.app[config_key].recordings_dir)
        assert svc.simulator.recording_names == "dialplan" and svc.simulator.write_recordings
        repair = await svc.simulator.place_call(CallSpec("13800138000", "张三", "repair", agent="1001",
                                                         talk_s=3.0, via_ivr=False))
        complaint = await svc.simulator.place_call(CallSpec("13900139000", "李四", "complaint", agent="1002",
                                                            talk_s=2.0, outcome="caller_hangup",
                                                            via_ivr=False))
        for _ in range(250):  # the last frames are still on their way over TCP
            await svc.pipeline.drain()
            await svc.app[services_key]["recording_indexer"].idle()
            got = {r["linkedid"]: r for r in await rows(svc.app[pool_key])}
            if len(got) == 2 and all(r["state"] != "recording" for r in got.values()):
                break
            await asyncio.sleep(0.02)
    r = got[repair.linkedid]
    assert r["state"] in ("indexed", "transcoded") and r["agent"] == "1001" and r["queue"] == "repair"
    assert r["duration_s"] == pytest.approx(3.0) and r["end_reason"] == "stopped"
    assert r["path"].startswith(time.strftime("%Y", time.gmtime())) and f"-{repair.uniqueid}-repair-" in r["path"]
    c = got[complaint.linkedid]
    assert c["state"] in ("indexed", "transcoded") and c["agent"] == "1002" and c["queue"] == "complaint"
    assert c["uniqueid"] != complaint.uniqueid   # pattern B: the member leg
    assert (root / c["path"]).exists() or c["state"] == "transcoded"


async def _pool_logging_updates(db_url, seen: list[str]):
    """A pool whose connections note every UPDATE of recordings they run."""
    def log_query(q) -> None:
        if q.query.lstrip().startswith(("UPDATE recordings", "WITH u AS (UPDATE recordings")):
            seen.append(q.query)

    async def init(conn) -> None:
        conn.add_query_logger(log_query)

    return await asyncpg.create_pool(db_url, min_size=1, max_size=2, init=init)


async def test_a_finished_file_is_ended_and_indexed_in_one_statement(db_url, tmp_path):
    tone(tmp_path / "repair-20261122-191043-1795374638.1.wav", 3.0)
    updates: list[str] = []
    p = await _pool_logging_updates(db_url, updates)
    try:
        await replay(p, settings_for(tmp_path, asterisk_root=TRACE_ROOT), "01-")
        (r,) = await rows(p)
    finally:
        await p.close()
    assert len(updates) == 1 and "ended_at IS NULL" in updates[0]
    assert (r["state"], r["end_reason"], r["agent"]) == ("indexed", "stopped", "1001")
    assert r["ended_at"] is not None and r["indexed_at"] is not None
    assert r["duration_s"] == pytest.approx(3.0)


async def test_a_file_still_being_written_is_ended_at_once_and_indexed_when_final(db_url, tmp_path):
    f = truncated_header_wav(tmp_path / "repair-20261122-191043-1795374638.1.wav", 1.0)  # Asterisk still writing
    updates: list[str] = []
    p = await _pool_logging_updates(db_url, updates)
    try:
        indexer_task = asyncio.create_task(
            replay(p, settings_for(tmp_path, asterisk_root=TRACE_ROOT, index_retry_delays=(0.4,)), "01-"))
        for _ in range(100):  # the end is written while the file is not final yet
            await asyncio.sleep(0.02)
            if updates:
                break
        (ended,) = await rows(p)
        assert (ended["state"], ended["end_reason"]) == ("recording", "stopped") and ended["ended_at"] is not None
        tone(f, 2.5)  # closed: header final
        await indexer_task
        (r,) = await rows(p)
    finally:
        await p.close()
    assert len(updates) == 2
    assert r["state"] == "indexed" and r["duration_s"] == pytest.approx(2.5) and r["error"] == ""
    assert r["ended_at"] == ended["ended_at"]


async def _pool_logging_inserts(db_url, seen: list[str]):
    def log_query(q) -> None:
        if "INSERT INTO recordings" in q.query:
            seen.append(q.query)

    async def init(conn) -> None:
        conn.add_query_logger(log_query)

    return await asyncpg.create_pool(db_url, min_size=1, max_size=2, init=init)


async def test_recordings_starting_together_are_written_in_one_insert(db_url, tmp_path):
    uids = [f"20.{i}" for i in range(5)]
    rels = [f"20261122/{u}-{u}-repair-120000.wav" for u in uids]
    for rel in rels:
        tone(tmp_path / rel, 1.0)
    inserts: list[str] = []
    p = await _pool_logging_inserts(db_url, inserts)
    try:
        await feed(p, settings_for(tmp_path, asterisk_root=ROOT),
                   *[varset(u, f"{ROOT}/{rel}") for u, rel in zip(uids, rels)], *[stop(u) for u in uids])
        got = await rows(p)
    finally:
        await p.close()
    assert len(inserts) == 1
    assert sorted(r["path"] for r in got) == sorted(rels)
    assert {r["state"] for r in got} == {"indexed"} and all(r["end_reason"] == "stopped" for r in got)


async def test_a_start_row_postgresql_refuses_never_loses_the_rows_batched_with_it(pool, tmp_path):
    rels = {u: f"20261122/{u}-{u}-repair-120000.wav" for u in ("21.1", "21.2", "21.3")}
    for rel in rels.values():
        tone(tmp_path / rel, 1.0)
    with capture_logs() as logs:
        await feed(pool, settings_for(tmp_path, asterisk_root=ROOT),
                   varset("21.1", f"{ROOT}/{rels['21.1']}"),
                   varset("21.2", f"{ROOT}/{rels['21.2']}", lid="21.2\x00bad"),  # text PostgreSQL refuses
                   varset("21.3", f"{ROOT}/{rels['21.3']}"),
                   stop("21.1", None), stop("21.2", "21.2\x00bad"), stop("21.3"))
    got = {r["path"]: r for r in await rows(pool)}
    assert set(got) == {rels["21.1"], rels["21.3"]}
    assert {r["state"] for r in got.values()} == {"indexed"}
    (bad,) = [e for e in logs if e["event"] == "recording_row_unwritten"]
    assert bad["path"] == rels["21.2"]

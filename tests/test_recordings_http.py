"""Recordings over HTTP (whole service, real logins): access per role,
range requests, downloads, the audit log, expired/missing files, quality
scores, and the player on the work-order page (headless Chromium)."""
from __future__ import annotations

import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import aiohttp
import pytest

from cti.app import config_key, services_key
from cti.web import pool_key
from recordings import repository as repo
from recordings.service import RecordingSettings, RecordingWorker, index_recording
from tests.harness import login_page, running_service
from tests.recordings_util import make_order, tone


async def add_recording(svc, linkedid: str, *, agent: str = "1001", seconds: float = 2.0,
                        state: str = "indexed") -> tuple[int, Path]:
    root = Path(svc.app[config_key].recordings_dir)
    rel = f"20261122/{linkedid}-{linkedid}-repair-120000.wav"
    f = tone(root / rel, seconds)
    pool = svc.app[pool_key]
    async with pool.acquire() as conn:
        rec_id, _ = await repo.insert_started(conn, path=rel, linkedid=linkedid, uniqueid=linkedid, channel="x",
                                              queue="repair", agent=agent, started_at=datetime.now(timezone.utc))
        await conn.execute("UPDATE recordings SET transcode_after = now() + interval '1 day' WHERE id = $1", rec_id)
        if state == "recording":
            return rec_id, f
        await repo.end_recording(conn, rec_id, ended_at=datetime.now(timezone.utc), reason="stopped")
    settings = RecordingSettings(root=str(root), index_retry_delays=())
    assert await index_recording(pool, settings, rec_id) == "indexed"
    async with pool.acquire() as conn:
        await conn.execute("UPDATE recordings SET transcode_after = now() + interval '1 day' WHERE id = $1", rec_id)
    return rec_id, f


async def audit_rows(svc, rec_id):
    async with svc.app[pool_key].acquire() as conn:
        return [dict(r) for r in await conn.fetch(
            "SELECT username, role, action, byte_range, status FROM recording_access_log "
            "WHERE recording_id = $1 ORDER BY id", rec_id)]


@pytest.fixture
async def svc(db_url):
    async with running_service(db_url) as s:
        yield s


async def client(svc, user: str | None) -> aiohttp.ClientSession:
    http = aiohttp.ClientSession(base_url=svc.base_url)
    if user:
        await svc.login(http, user)
    return http


async def test_access_per_role_and_every_listen_and_denial_audited(svc):
    rec_id, f = await add_recording(svc, "500.1", agent="1001")
    async with svc.app[pool_key].acquire() as conn:
        order_id = await make_order(conn, "500.1", order_type="repair", status="dispatched", department="抢修班")
    body = f.read_bytes()
    expect = {"agent1001": 200, "agent1002": 403, "supervisor": 200, "admin": 200,
              "qiangxiu": 200,  # 抢修班: the order was dispatched to it
              "dept-yx": 403}
    for user, status in expect.items():
        http = aiohttp.ClientSession(base_url=svc.base_url)
        await svc.login(http, user, **({"department": "营销部"} if user == "dept-yx" else {}))
        async with http:
            async with http.get(f"/recordings/{rec_id}/audio") as r:
                assert r.status == status, (user, r.status)
                if status == 200:
                    assert await r.read() == body and r.headers["Content-Type"] == "audio/wav"
                    assert r.headers["Accept-Ranges"] == "bytes"
                else:
                    assert (await r.json())["error"] == "forbidden"
            async with http.get(f"/api/recordings/{rec_id}") as r:
                assert r.status == status
                if status == 200:
                    meta = await r.json()
                    assert meta["playable"] and meta["orders"][0]["id"] == order_id
                    assert meta["duration_s"] == pytest.approx(2.0) and meta["sha256"]
    log = await audit_rows(svc, rec_id)
    listens = [(x["username"], x["action"], x["status"]) for x in log if x["action"] in ("listen", "denied")]
    assert listens == [("agent1001", "listen", 200), ("agent1002", "denied", 403), ("agent1002", "denied", 403),
                       ("supervisor", "listen", 200), ("admin", "listen", 200), ("qiangxiu", "listen", 200),
                       ("dept-yx", "denied", 403), ("dept-yx", "denied", 403)]
    # not logged in: 401, nothing served
    async with aiohttp.ClientSession(base_url=svc.base_url) as anon:
        async with anon.get(f"/recordings/{rec_id}/audio", headers={"Accept": "application/json"}) as r:
            assert r.status == 401
        async with anon.get(f"/api/recordings/{rec_id}") as r:
            assert r.status == 401


async def test_range_requests_and_download(svc):
    rec_id, f = await add_recording(svc, "501.1", seconds=3.0)
    body = f.read_bytes()
    size = len(body)
    async with await client(svc, "agent1001") as http:
        async with http.get(f"/recordings/{rec_id}/audio", headers={"Range": "bytes=0-99"}) as r:
            assert r.status == 206 and r.headers["Content-Range"] == f"bytes 0-99/{size}"
            assert await r.read() == body[:100]
        async with http.get(f"/recordings/{rec_id}/audio", headers={"Range": f"bytes={size - 1000}-"}) as r:
            assert r.status == 206 and await r.read() == body[-1000:]
        async with http.get(f"/recordings/{rec_id}/audio", headers={"Range": "bytes=-50"}) as r:
            assert r.status == 206 and await r.read() == body[-50:]
        async with http.get(f"/recordings/{rec_id}/audio", headers={"Range": f"bytes={size + 10}-"}) as r:
            assert r.status == 416
        async with http.get(f"/recordings/{rec_id}/download") as r:
            assert r.status == 200 and await r.read() == body
            assert r.headers["Content-Disposition"] == f'attachment; filename="recording-{rec_id}.wav"'
    log = await audit_rows(svc, rec_id)
    assert [(x["action"], x["byte_range"], x["status"]) for x in log] == [
        ("listen", "bytes=0-99", 206), ("listen", f"bytes={size - 1000}-", 206), ("listen", "bytes=-50", 206),
        ("listen", f"bytes={size + 10}-", 416), ("download", "", 200)]


async def test_expired_missing_and_unfinished_recordings_say_so(svc):
    expired, f1 = await add_recording(svc, "502.1")
    missing, f2 = await add_recording(svc, "503.1")
    vanished, f3 = await add_recording(svc, "504.1")
    running, _ = await add_recording(svc, "505.1", state="recording")
    async with svc.app[pool_key].acquire() as conn:
        await conn.execute("UPDATE recordings SET state = 'expired', expired_at = now() WHERE id = $1", expired)
        await conn.execute("UPDATE recordings SET state = 'missing', error = 'x' WHERE id = $1", missing)
    f1.unlink()
    f2.unlink()
    f3.unlink()   # gone behind the index's back
    async with await client(svc, "supervisor") as http:
        for rec_id, status, code in ((expired, 410, "expired"), (missing, 404, "missing"),
                                     (vanished, 404, "missing"), (running, 409, "in_progress")):
            for url in (f"/recordings/{rec_id}/audio", f"/recordings/{rec_id}/download"):
                async with http.get(url) as r:
                    assert r.status == status, (rec_id, url)
                    j = await r.json()
                    assert j["error"] == code and j["message"] and j["recording_id"] == rec_id
            async with http.get(f"/api/recordings/{rec_id}") as r:
                meta = await r.json()
                assert not meta["playable"] and meta["unavailable"]["error"] == code
        async with http.get("/api/recordings/999999") as r:
            assert r.status == 404
        async with http.get("/recordings/abc/audio") as r:
            assert r.status in (400, 404)
    async with svc.app[pool_key].acquire() as conn:
        assert await conn.fetchval("SELECT state FROM recordings WHERE id = $1", vanished) == "missing"
    assert [x["action"] for x in await audit_rows(svc, expired)] == ["unavailable", "unavailable"]


async def test_order_listing_hides_what_you_may_not_hear(svc):
    mine, _ = await add_recording(svc, "506.1", agent="1001")
    async with svc.app[pool_key].acquire() as conn:
        order_id = await make_order(conn, "506.1")
    async with await client(svc, "agent1001") as http:
        async with http.get(f"/api/recordings?order={order_id}") as r:
            j = await r.json()
            assert [x["id"] for x in j["recordings"]] == [mine] and j["hidden"] == 0
        async with http.get("/api/recordings") as r:
            assert [x["id"] for x in (await r.json())["recordings"]] == [mine]
    async with await client(svc, "agent1002") as http:
        async with http.get(f"/api/recordings?order={order_id}") as r:
            j = await r.json()
            assert j["recordings"] == [] and j["hidden"] == 1
        async with http.get("/api/recordings") as r:
            assert (await r.json())["recordings"] == []


async def test_transcoded_recording_plays_as_ogg_opus(svc):
    rec_id, f = await add_recording(svc, "507.1", seconds=2.0)
    root = Path(svc.app[config_key].recordings_dir)
    async with svc.app[pool_key].acquire() as conn:
        await conn.execute("UPDATE recordings SET transcode_after = now() WHERE id = $1", rec_id)
    await RecordingWorker(svc.app[pool_key], RecordingSettings(root=str(root))).run_once(sweep=False)
    assert not f.exists()
    async with await client(svc, "agent1001") as http:
        async with http.get(f"/recordings/{rec_id}/audio", headers={"Range": "bytes=0-3"}) as r:
            assert r.status == 206 and r.headers["Content-Type"] == "audio/ogg" and await r.read() == b"OggS"
        async with http.get(f"/api/recordings/{rec_id}") as r:
            meta = await r.json()
            assert meta["state"] == "transcoded" and meta["compact"]["verified"] and not meta["original_kept"]


async def test_quality_scores(svc):
    rec_id, _ = await add_recording(svc, "508.1", agent="1001")
    rec2, _ = await add_recording(svc, "509.1", agent="1001")
    async with await client(svc, "supervisor") as http:
        async with http.post(f"/api/recordings/{rec_id}/scores",
                             json={"score": 88, "comment": "用语规范,记录完整", "criteria": {"greeting": 9}}) as r:
            assert r.status == 201, await r.text()
            s = await r.json()
            assert (s["agent"], s["supervisor"], s["score"]) == ("1001", "supervisor", 88)
        async with http.post(f"/api/recordings/{rec2}/scores", json={"score": 72}) as r:
            assert r.status == 201
        async with http.post(f"/api/recordings/{rec2}/scores", json={"score": 172}) as r:
            assert r.status == 422 and "score" in (await r.json())["fields"]
        async with http.get("/api/agents/1001/scores") as r:
            j = await r.json()
            assert [x["score"] for x in j["scores"]] == [88, 72] and j["average"] == 80.0
            assert j["by_month"][0]["count"] == 2 and j["by_month"][0]["average"] == 80.0
        async with http.get(f"/api/recordings/{rec_id}") as r:
            assert [x["score"] for x in (await r.json())["scores"]] == [88]
        async with http.get("/quality?agent=1001") as r:
            assert r.status == 200 and "质检" in await r.text()
    async with await client(svc, "agent1001") as http:
        async with http.post(f"/api/recordings/{rec_id}/scores", json={"score": 100}) as r:
            assert r.status == 403                       # agents do not score
        async with http.get("/api/agents/1001/scores") as r:
            assert r.status == 200 and (await r.json())["count"] == 2   # their own
    async with await client(svc, "agent1002") as http:
        async with http.get("/api/agents/1001/scores") as r:
            assert r.status == 403
    async with await client(svc, "qiangxiu") as http:
        async with http.post(f"/api/recordings/{rec_id}/scores", json={"score": 1}) as r:
            assert r.status == 403


async def test_every_recording_route_has_an_access_rule(svc):
    from cti.auth import undecorated_routes

    assert [r for r in undecorated_routes(svc.app) if "recording" in r or "quality" in r or "scores" in r] == []


CHROMIUM = shutil.which("chromium")


async def test_work_order_page_plays_the_recording(svc):
    from playwright.async_api import async_playwright

    rec_id, _ = await add_recording(svc, "510.1", agent="1001", seconds=2.0)
    gone, f = await add_recording(svc, "510.2", agent="1001")
    async with svc.app[pool_key].acquire() as conn:
        order_id = await make_order(conn, "510.1")
        await conn.execute("UPDATE recordings SET linkedid = '510.1', state = 'expired' WHERE id = $1", gone)
    f.unlink()
    errors: list[str] = []
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                          args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                                                "--autoplay-policy=no-user-gesture-required"])
        try:
            page = await browser.new_page()
            page.set_default_timeout(10_000)
            page.on("pageerror", lambda e: errors.append(str(e)))
            await login_page(page, svc, "supervisor")
            await page.goto(f"{svc.base_url}/orders/{order_id}")
            await page.wait_for_selector("#recordings-card:not([hidden]) audio")
            src = await page.get_attribute(f"li[data-recording='{rec_id}'] audio", "src")
            assert src == f"/recordings/{rec_id}/audio"
            assert "已过保存期" in await page.inner_text(f"li[data-recording='{gone}']")
            duration = await page.evaluate("""async () => {
                const a = document.querySelector('#recordings-list audio');
                a.muted = true; a.preload = 'auto'; a.load();
                await new Promise((ok, bad) => { a.onloadedmetadata = ok; a.onerror = () => bad(a.error && a.error.code); });
                return a.duration; }""")
            assert duration == pytest.approx(2.0, abs=0.1)
        finally:
            await browser.close()
    assert errors == []
    assert "listen" in [x["action"] for x in await audit_rows(svc, rec_id)]

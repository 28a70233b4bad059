"""The departments' outage API and the outage page, over HTTP on a real PostgreSQL."""
from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from structlog.testing import capture_logs

from cti.web import add_routes, pool_key
from cti.workdays import CHINA_TZ
from ivr import outage_repo
from ivr.outage_web import add_outage_routes, outage_clock_key, outage_hooks_key

from .harness import auth_for_app

NOW = datetime(2026, 9, 28, 10, 0, tzinfo=CHINA_TZ)   # Monday before National Day


def body(**over):
    b = {
        "kind": "fault",
        "reason": "10kV才湾线故障",
        "areas": [{"type": "transformer_area", "name": "才湾2号台区"}],
        "start_at": (NOW - timedelta(minutes=20)).isoformat(),
        "expected_restore_at": (NOW + timedelta(hours=4)).isoformat(),
        "actor": "调度所 王工",
        "department": "全州供电所",
    }
    b.update(over)
    return b


@pytest.fixture
async def client(pool):
    app = web.Application()
    app[pool_key] = pool
    app[outage_clock_key] = lambda: NOW
    add_routes(app)
    add_outage_routes(app, hook_timeout=2.0)
    auth = auth_for_app(app, pool)
    async with TestClient(TestServer(app)) as c:
        c.hooked = []
        c.auth = auth
        await auth.login(c, "qiangxiu")   # departments publish outages
        yield c


async def test_publish_returns_201_with_number_announcement_and_history(client):
    r = await client.post("/api/outages", json=body())
    assert r.status == 201
    o = await r.json()
    assert o["outage_no"].startswith("TD20260928-") and o["status"] == "published"
    assert o["late_notice"] is False and o["prompt_status"] == "pending"
    assert o["announcement"].startswith("您好,您所在的才湾2号台区因10千伏才湾线故障停电")
    r = await client.get(f"/api/outages/{o['outage_no']}")
    got = await r.json()
    assert got["id"] == o["id"] and [e["action"] for e in got["events"]] == ["created", "published"]


async def test_planned_outage_across_national_day_with_short_notice_is_published_and_flagged(client):
    # published Mon 28 Sep, starts Fri 9 Oct: only 4 working days (29, 30 Sep, 8, 9 Oct)
    r = await client.post("/api/outages", json=body(
        kind="planned", reason="线路检修", start_at="2026-10-09T08:00:00+08:00",
        expected_restore_at="2026-10-09T18:00:00+08:00"))
    assert r.status == 201
    o = await r.json()
    assert o["status"] == "published" and o["late_notice"] is True
    assert "7个工作日" in o["late_notice_reason"] and "warning" in o


@pytest.mark.parametrize("over, field", [
    ({"kind": "blackout"}, "kind"),
    ({"areas": []}, "areas"),
    ({"areas": [{"type": "province", "name": "广西"}]}, "areas[0].type"),
    ({"reason": "  "}, "reason"),
    ({"expected_restore_at": (NOW - timedelta(hours=1)).isoformat()}, "expected_restore_at"),
    ({"start_at": "tomorrow"}, "start_at"),
    ({"actor": ""}, "actor"),
])
async def test_invalid_submission_is_refused_with_422_and_nothing_is_written(client, pool, over, field):
    r = await client.post("/api/outages", json=body(**over))
    assert r.status == 422
    err = await r.json()
    assert err["error"] == "invalid" and field in err["fields"]
    assert err["message"].startswith("停电信息")
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM outages") == 0


async def test_not_json_is_400(client):
    r = await client.post("/api/outages", data=b"<xml/>", headers={"Content-Type": "application/json"})
    assert r.status == 400 and (await r.json())["error"] == "bad_json"
    r = await client.post("/api/outages", json=["a"])
    assert r.status == 400


async def test_change_restoration_restore_and_conflicts(client):
    o = await (await client.post("/api/outages", json=body())).json()
    later = (NOW + timedelta(hours=7)).isoformat()
    r = await client.post(f"/api/outages/{o['id']}/restoration",
                          json={"expected_restore_at": later, "actor": "抢修班", "version": o["version"]})
    assert r.status == 200
    changed = await r.json()
    assert changed["version"] == o["version"] + 1 and "预计17时恢复供电" in changed["announcement"]
    # a second client still holding the old version
    r = await client.post(f"/api/outages/{o['id']}/restoration",
                          json={"expected_restore_at": later, "actor": "别人", "version": o["version"]})
    assert r.status == 409 and (await r.json())["error"] == "stale"
    r = await client.post(f"/api/outages/{o['outage_no']}/restore", json={"actor": "抢修班"})
    assert r.status == 200 and (await r.json())["status"] == "restored"
    r = await client.post(f"/api/outages/{o['id']}/restore", json={"actor": "抢修班"})
    assert r.status == 409 and (await r.json())["error"] == "illegal_transition"
    r = await client.post(f"/api/outages/{o['id']}/restoration", json={"expected_restore_at": "x", "actor": "a"})
    assert r.status == 422


async def test_cancel_needs_a_reason_and_unknown_outage_is_404(client):
    o = await (await client.post("/api/outages", json=body())).json()
    assert (await client.post(f"/api/outages/{o['id']}/cancel", json={"actor": "a"})).status == 422
    r = await client.post(f"/api/outages/{o['id']}/cancel", json={"actor": "a", "reason": "误报"})
    assert r.status == 200 and (await r.json())["status"] == "cancelled"
    assert (await client.get("/api/outages/999999")).status == 404
    assert (await client.get("/api/outages/TD20000101-0001")).status == 404
    assert (await client.post("/api/outages/999999/restore", json={"actor": "a"})).status == 404


async def test_listing_active_coming_and_bad_state(client):
    await client.post("/api/outages", json=body())
    await client.post("/api/outages", json=body(kind="temporary", start_at=(NOW + timedelta(days=2)).isoformat(),
                                                expected_restore_at=(NOW + timedelta(days=2, hours=5)).isoformat()))
    active = await (await client.get("/api/outages?state=active")).json()
    coming = await (await client.get("/api/outages?state=coming")).json()
    assert [o["kind"] for o in active["outages"]] == ["fault"]
    assert [o["kind"] for o in coming["outages"]] == ["temporary"]
    assert active["outages"][0]["relevance"] == "active"
    assert len((await (await client.get("/api/outages")).json())["outages"]) == 2
    r = await client.get("/api/outages?state=<script>")
    assert r.status == 400 and (await r.json())["message"].startswith("state")


async def test_hooks_are_called_after_publish_and_change_and_a_failing_hook_does_not_fail_it(client):
    seen = []

    async def good(outage):
        seen.append((outage.outage_no, outage.announcement))

    async def bad(outage):
        raise RuntimeError("espeak-ng exploded")

    client.app[outage_hooks_key].extend([bad, good])
    with capture_logs() as logs:
        r = await client.post("/api/outages", json=body())
    assert r.status == 201
    o = await r.json()
    assert seen == [(o["outage_no"], o["announcement"])]
    failed = [e for e in logs if e["event"] == "outage_hook_failed"]
    assert failed and "espeak-ng exploded" in failed[0]["error"] and failed[0]["outage_no"] == o["outage_no"]
    await client.post(f"/api/outages/{o['id']}/restoration",
                      json={"expected_restore_at": (NOW + timedelta(hours=9)).isoformat(), "actor": "a"})
    assert len(seen) == 2 and seen[1][1] != seen[0][1]
    await client.post(f"/api/outages/{o['id']}/restore", json={"actor": "a"})
    assert len(seen) == 2  # restore is not a prompt change


async def test_the_ivr_sees_what_the_api_published(client, pool):
    from cti.customer_repo import import_customers_file
    from pathlib import Path
    await import_customers_file(pool, Path(__file__).resolve().parent.parent / "cti" / "data" / "demo_customers.csv")
    o = await (await client.post("/api/outages", json=body())).json()
    async with pool.acquire() as conn:
        d = await outage_repo.outage_for_caller(conn, caller_num="13800138000", at=NOW)
    assert d.outage_no == o["outage_no"]


async def test_outage_page_is_served(client):
    r = await client.get("/outages")
    assert r.status == 200
    html = await r.text()
    assert "停电信息" in html and "/static/outages.js" in html
    js = await client.get("/static/outages.js")
    assert js.status == 200
    text = await js.text()
    assert "innerHTML" not in text.replace("never innerHTML", "")

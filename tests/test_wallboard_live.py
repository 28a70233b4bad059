"""The wallboard's live model against simulator runs whose true figures are
known, agent control through the AMI (confirmed or refused), the resync
after a reconnect, surge switching in the service, and /metrics."""
from __future__ import annotations

import asyncio
import re

import aiohttp

from cti.app import services_key
from cti.simulator import CallSpec

from .harness import running_service

IFACE = "Local/{}@agents"


async def _get(svc, path):
    async with aiohttp.ClientSession() as s:
        await svc.login(s, "supervisor")
        async with s.get(svc.base_url + path) as r:
            return r.status, (await r.json() if r.content_type == "application/json" else await r.text())


async def _post(svc, path, body):
    async with aiohttp.ClientSession() as s:
        await svc.login(s, "supervisor")
        async with s.post(svc.base_url + path, json=body) as r:
            return r.status, await r.json()


def _queue(snap, name):
    return next(q for q in snap["queues"] if q["name"] == name)


def _agent(snap, agent):
    return next(a for a in snap["agents"] if a["agent"] == agent)


async def _settle(svc):
    await asyncio.sleep(0.1)
    await svc.pipeline.drain()


async def test_live_figures_match_a_simulated_run_with_known_outcomes(db_url):
    async with running_service(db_url) as svc:
        sim = svc.simulator
        # repair: waits 2 s, rings 2 s → HoldTime 4 (within 20 s), talks 5 s
        await sim.place_call(CallSpec("13800138000", "张三", "repair", agent="1001", outcome="answered",
                                      wait_s=2, ring_s=2, talk_s=5, via_ivr=False))
        # complaint: rings 25 s before 1002 answers → HoldTime 25 (outside 20 s), caller hangs up after 3 s
        await sim.place_call(CallSpec("13900139000", "李四", "complaint", agent="1002", outcome="caller_hangup",
                                      ring_s=25, talk_s=3, via_ivr=False))
        # enquiry: 1004 rings 15 s unanswered, caller gives up after 30 s
        await sim.place_call(CallSpec("13511112222", "王五", "enquiry", agent="1004", outcome="abandoned",
                                      ring_s=15, wait_s=30, ring_order=("1004",), via_ivr=False))
        # repair again: answered at once (HoldTime 1), talks 7 s
        await sim.place_call(CallSpec("13800138000", "张三", "repair", agent="1002", outcome="answered",
                                      ring_s=1, talk_s=7, ring_order=("1002",), via_ivr=False))
        await _settle(svc)
        status, snap = await _get(svc, "/api/wallboard")
        assert status == 200
    rep, com, enq = _queue(snap, "repair")["figures"], _queue(snap, "complaint")["figures"], \
        _queue(snap, "enquiry")["figures"]
    assert (rep["offered"], rep["answered"], rep["abandoned"], rep["answered_within"]) == (2, 2, 0, 2)
    assert rep["asa_s"] == 2.5 and rep["service_level"] == 1.0 and rep["answer_rate"] == 1.0
    assert rep["aht_s"] == 6 + 10  # (5 + 7) / 2 + repair's wrapuptime 10 s
    assert (com["offered"], com["answered"], com["answered_within"], com["asa_s"]) == (1, 1, 0, 25)
    assert com["service_level"] == 0.0 and com["aht_s"] == 3 + 30
    assert (enq["offered"], enq["answered"], enq["abandoned"]) == (1, 0, 1)
    assert enq["abandon_rate"] == 1.0 and enq["answer_rate"] == 0.0 and enq["avg_wait_s"] == 30
    tot = snap["total"]["figures"]
    assert (tot["offered"], tot["answered"], tot["abandoned"], tot["answered_within"]) == (4, 3, 1, 2)
    assert tot["answer_rate"] == 0.75 and tot["service_level"] == 0.5
    assert tot["asa_s"] == (4 + 25 + 1) / 3
    assert snap["total"]["waiting"] == 0 and snap["day"]


async def test_waiting_callers_and_agent_states_while_calls_are_in_progress(db_url):
    async with running_service(db_url) as svc:  # the simulator runs 20× fast
        sim = svc.simulator
        call = asyncio.create_task(sim.place_call(CallSpec(
            "13800138000", "<b>张三</b>", "repair", agent="1001", outcome="answered", wait_s=40, ring_s=40,
            talk_s=40, via_ivr=False)))
        await asyncio.sleep(1.0)  # waiting (40 virtual s = 2 s real)
        snap = (await _get(svc, "/api/wallboard"))[1]
        q = _queue(snap, "repair")
        assert q["waiting"] == 1 and q["callers"][0]["caller_name"] == "<b>张三</b>"
        assert 0 <= q["longest_wait_s"] <= 3
        await asyncio.sleep(2.0)  # ringing
        snap = (await _get(svc, "/api/wallboard"))[1]
        assert _agent(snap, "1001")["state"] == "ringing"
        await asyncio.sleep(2.5)  # talking
        snap = (await _get(svc, "/api/wallboard"))[1]
        assert _agent(snap, "1001")["state"] == "on_call" and _queue(snap, "repair")["waiting"] == 0
        await call
        await _settle(svc)
        snap = (await _get(svc, "/api/wallboard"))[1]
        assert _agent(snap, "1001")["state"] == "wrapup"  # repair's wrapuptime is 10 s
        assert _agent(snap, "1003")["state"] == "available"


async def test_supervisor_actions_are_confirmed_or_show_asterisks_error(db_url):
    async with running_service(db_url) as svc:
        st, r = await _post(svc, "/api/wallboard/pause", {"interface": IFACE.format(1001), "queue": "repair",
                                                          "paused": True, "reason": "午休"})
        assert st == 200 and r["confirmed"] is True
        snap = (await _get(svc, "/api/wallboard"))[1]
        a = _agent(snap, "1001")
        assert a["paused_reason"] == "午休"
        assert {x["queue"]: x["state"] for x in a["queues"]} == {"repair": "paused", "enquiry": "available"}
        st, r = await _post(svc, "/api/wallboard/pause", {"interface": IFACE.format(1001), "paused": False})
        assert st == 200 and r["confirmed"]
        assert _agent((await _get(svc, "/api/wallboard"))[1], "1001")["state"] == "available"

        st, r = await _post(svc, "/api/wallboard/pause", {"interface": IFACE.format(9999), "queue": "repair",
                                                          "paused": True, "reason": "x"})
        assert st == 409 and r["asterisk"] == "Interface not found"
        assert r["message"].startswith("操作失败：该坐席不在队列中")

        st, r = await _post(svc, "/api/wallboard/login", {"interface": IFACE.format(1005), "queue": "enquiry",
                                                          "name": "Agent 1005"})
        assert st == 200 and r["confirmed"]
        a = _agent((await _get(svc, "/api/wallboard"))[1], "1005")
        assert a["state"] == "available" and a["queues"][0]["membership"] == "dynamic"
        st, r = await _post(svc, "/api/wallboard/login", {"interface": IFACE.format(1005), "queue": "enquiry"})
        assert st == 409 and "Already there" in r["asterisk"]
        st, r = await _post(svc, "/api/wallboard/logout", {"interface": IFACE.format(1005), "queue": "enquiry"})
        assert st == 200 and r["confirmed"]
        assert _agent((await _get(svc, "/api/wallboard"))[1], "1005")["state"] == "logged_off"
        st, r = await _post(svc, "/api/wallboard/logout", {"interface": IFACE.format(1001), "queue": "repair"})
        assert st == 409 and r["asterisk"] == "Member not dynamic" and "静态坐席" in r["message"]

        st, r = await _post(svc, "/api/wallboard/pause", {"interface": "Local/1001@agents\r\nAction: Originate",
                                                          "paused": True, "reason": "x"})
        assert st == 422 and r["field"] == "interface"
        st, r = await _post(svc, "/api/wallboard/pause", {"interface": IFACE.format(1001), "paused": True})
        assert st == 422 and r["field"] == "reason"


async def test_reconnect_resync_replaces_members_changed_while_disconnected(db_url):
    async with running_service(db_url) as svc:
        sim = svc.simulator
        resync = svc.app[services_key]["resync"]
        runs = resync.runs
        sim.accepting = False
        sim.drop_connections()
        await asyncio.sleep(0.2)
        m = sim.members["complaint"][IFACE.format(1003)]
        m.paused, m.reason = True, "培训"  # paused behind our back
        sim.accepting = True
        for _ in range(200):
            if resync.runs > runs:
                break
            await asyncio.sleep(0.05)
        assert resync.runs > runs
        a = _agent((await _get(svc, "/api/wallboard"))[1], "1003")
        assert {x["queue"]: (x["state"], x["reason"]) for x in a["queues"]}["complaint"] == ("paused", "培训")


async def test_surge_switches_on_from_waiting_callers_and_supervisor_turns_it_off(db_url):
    async with running_service(db_url, surge_on_waiting=2, surge_off_waiting=0,
                               surge_min_on_s=0.0, surge_off_after_s=0.0) as svc:
        wb = svc.app[services_key]["wallboard"]
        sim = svc.simulator
        calls = [asyncio.create_task(sim.place_call(CallSpec(
            f"1380013800{i}", "", "enquiry", agent="1004", outcome="abandoned", ring_s=100, wait_s=60,
            ring_order=(), via_ivr=False))) for i in range(2)]
        for _ in range(40):
            await asyncio.sleep(0.1)
            if wb.surge_active():
                break
        assert wb.surge_active() and "排队 2" in wb.surge.reason
        st, r = await _post(svc, "/api/wallboard/surge", {"mode": "off"})
        assert st == 200 and r == {"ok": True, "mode": "off", "active": False}
        assert not wb.surge_active()
        await asyncio.gather(*calls)
        st, r = await _post(svc, "/api/wallboard/surge", {"mode": "auto"})
        await asyncio.sleep(1.3)
        assert not wb.surge_active()  # nobody waits any more
        st, r = await _post(svc, "/api/wallboard/surge", {"mode": "sometimes"})
        assert st == 422


_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (-?[0-9.eE+]+|NaN|[+-]Inf)$')


def parse_exposition(text: str) -> dict[tuple[str, frozenset], float]:
    """A strict reader of the Prometheus text format (what the scraper does)."""
    out: dict[tuple[str, frozenset], float] = {}
    types: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("gauge", "counter")
            types[name] = kind
            continue
        mt = _SAMPLE.match(line)
        assert mt, f"not a sample line: {line!r}"
        name, labels = mt.group(1), mt.group(3) or ""
        assert name in types, f"{name} has no TYPE"
        assert re.fullmatch(r'(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*"(?:,(?=.)|$))*', labels), line
        pairs = frozenset(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', labels))
        out[(name, pairs)] = float(mt.group(4))
    return out


async def test_metrics_endpoint_in_prometheus_text_format(db_url):
    async with running_service(db_url) as svc:
        await svc.simulator.place_call(CallSpec("13800138000", "张三", "repair", agent="1001", outcome="answered",
                                                ring_s=1, talk_s=1, via_ivr=False))
        await svc.simulator.place_call(CallSpec("13800138001", "", "enquiry", agent="1004", outcome="abandoned",
                                                ring_s=5, wait_s=3, ring_order=(), via_ivr=False))
        await _settle(svc)
        async with aiohttp.ClientSession() as s:
            await svc.login(s, "supervisor")
            async with s.get(svc.base_url + "/metrics") as r:
                assert r.status == 200
                assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
                text = await r.text()
    v = parse_exposition(text)

    def g(name, **labels):
        return v[(name, frozenset(labels.items()))]
    assert g("hotline_queue_calls_offered_total", queue="repair") == 1
    assert g("hotline_queue_calls_answered_total", queue="repair") == 1
    assert g("hotline_queue_calls_abandoned_total", queue="enquiry") == 1
    assert g("hotline_queue_waiting_callers", queue="repair") == 0
    # demo members of repair: 1001 (just answered: repair's 10 s wrap-up), 1002, 1004
    assert g("hotline_queue_agents", queue="repair", state="wrapup") == 1
    assert g("hotline_queue_agents", queue="repair", state="available") == 2
    assert g("hotline_queue_today_answer_ratio", queue="repair") == 1.0
    assert g("hotline_ami_frames_total") > 0
    assert ("hotline_ami_errors_total", frozenset({("kind", "action_errors")})) in v
    assert g("hotline_screenpops_total") >= 1
    assert g("hotline_surge_active", mode="auto") == 0
    assert g("hotline_ami_up") == 1


def test_exposition_parser_rejects_garbage():
    import pytest
    with pytest.raises(AssertionError):
        parse_exposition("# TYPE a gauge\na{x=1} 2\n")
    assert parse_exposition('# TYPE a gauge\na{x="1",y="a\\"b"} 2\n') == {
        ("a", frozenset({("x", "1"), ("y", 'a\\"b')})): 2.0}

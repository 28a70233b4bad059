"""The outage registry on a real PostgreSQL: publish, change, restore, history,
and the IVR decision (caller -> customer -> outage)."""
from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from cti.customer_repo import import_customers_file
from cti.workdays import CHINA_TZ
from ivr import outage_repo as repo
from ivr.outages import (
    AreaType, CustomerArea, IllegalTransition, InvalidOutage, NewOutage, OutageArea, OutageKind, OutageStatus,
    PromptStatus, pick_most_relevant,
)

DEMO = Path(__file__).resolve().parent.parent / "cti" / "data" / "demo_customers.csv"
NOW = datetime(2026, 11, 22, 15, 0, tzinfo=CHINA_TZ)
ZHANG = "13800138000"       # 张三, 才湾2号台区 / 10kV才湾线 / 才湾村
HOSPITAL = "13800138003"    # 全州县人民医院, 县医院专用台区 / 10kV城东线 / 城东社区


def new(kind=OutageKind.FAULT, areas=(("transformer_area", "才湾2号台区"),), start=NOW - timedelta(minutes=30),
        restore=NOW + timedelta(hours=3), reason="10kV才湾线故障", actor="调度所 王工"):
    return NewOutage(kind=kind, reason=reason, areas=tuple(OutageArea(AreaType(t), n) for t, n in areas),
                     start_at=start, expected_restore_at=restore, actor=actor, department="全州供电所")


@pytest.fixture
async def conn(pool):
    await import_customers_file(pool, DEMO)
    async with pool.acquire() as c:
        yield c


async def test_publish_numbers_the_outage_and_records_created_and_published(conn):
    o = await repo.create_outage(conn, new(), now=NOW)
    assert o.outage_no == "TD20261122-0001"
    assert o.status is OutageStatus.PUBLISHED and o.published_at == NOW
    assert o.prompt_status is PromptStatus.PENDING
    assert "才湾2号台区" in o.announcement and "10千伏" in o.announcement
    o2 = await repo.create_outage(conn, new(), now=NOW)
    assert o2.outage_no == "TD20261122-0002"
    events = await repo.outage_events(conn, o.id)
    assert [e["action"] for e in events] == ["created", "published"]
    assert events[0]["actor"] == "调度所 王工"
    assert events[1]["changes"]["status"] == ["draft", "published"]


async def test_late_planned_notice_is_stored_flagged(conn):
    o = await repo.create_outage(conn, new(kind=OutageKind.PLANNED, start=NOW + timedelta(days=2),
                                           restore=NOW + timedelta(days=2, hours=8), reason="线路检修"), now=NOW)
    assert o.status is OutageStatus.PUBLISHED
    assert o.late_notice is True and "7个工作日" in o.late_notice_reason


async def test_change_restoration_time_is_in_history_and_bumps_version(conn):
    o = await repo.create_outage(conn, new(), now=NOW)
    later = NOW + timedelta(hours=6)
    o2 = await repo.change_restoration(conn, o.id, later, actor="抢修班 李工", expected_version=o.version,
                                       note="倒杆,需更换", now=NOW + timedelta(minutes=5))
    assert o2.expected_restore_at == later and o2.version == o.version + 1
    assert o2.announcement != o.announcement and o2.prompt_status is PromptStatus.PENDING
    ev = (await repo.outage_events(conn, o.id))[-1]
    assert ev["action"] == "restoration_changed" and ev["actor"] == "抢修班 李工" and ev["note"] == "倒杆,需更换"
    old, new_ = ev["changes"]["expected_restore_at"]
    assert datetime.fromisoformat(old) == o.expected_restore_at and datetime.fromisoformat(new_) == later


async def test_stale_version_is_refused_and_nothing_is_written(conn):
    o = await repo.create_outage(conn, new(), now=NOW)
    await repo.change_restoration(conn, o.id, NOW + timedelta(hours=5), actor="a", expected_version=o.version, now=NOW)
    with pytest.raises(repo.StaleOutage):
        await repo.change_restoration(conn, o.id, NOW + timedelta(hours=9), actor="b",
                                      expected_version=o.version, now=NOW)
    assert (await repo.get_outage(conn, o.id)).expected_restore_at == NOW + timedelta(hours=5)
    assert len(await repo.outage_events(conn, o.id)) == 3


async def test_restore_then_restore_again_is_illegal(conn):
    o = await repo.create_outage(conn, new(), now=NOW)
    r = await repo.restore_outage(conn, o.id, actor="抢修班", now=NOW + timedelta(hours=1))
    assert r.status is OutageStatus.RESTORED and r.restored_at == NOW + timedelta(hours=1)
    with pytest.raises(IllegalTransition):
        await repo.restore_outage(conn, o.id, actor="抢修班", now=NOW + timedelta(hours=2))
    with pytest.raises(IllegalTransition):
        await repo.change_restoration(conn, o.id, NOW + timedelta(hours=5), actor="x", now=NOW)
    assert [e["action"] for e in await repo.outage_events(conn, o.id)] == ["created", "published", "restored"]


async def test_invalid_restoration_change_writes_nothing(conn):
    o = await repo.create_outage(conn, new(), now=NOW)
    with pytest.raises(InvalidOutage):
        await repo.change_restoration(conn, o.id, o.start_at - timedelta(hours=1), actor="x", now=NOW)
    assert (await repo.get_outage(conn, o.id)).version == o.version


async def test_cancel_a_draft(conn):
    o = await repo.create_outage(conn, new(kind=OutageKind.PLANNED, start=NOW + timedelta(days=20),
                                           restore=NOW + timedelta(days=20, hours=6)), publish=False, now=NOW)
    assert o.status is OutageStatus.DRAFT and o.prompt_status is PromptStatus.NONE
    c = await repo.cancel_outage(conn, o.id, actor="运检部", reason="天气原因改期", now=NOW)
    assert c.status is OutageStatus.CANCELLED and c.cancel_reason == "天气原因改期"


async def test_history_is_append_only(conn):
    o = await repo.create_outage(conn, new(), now=NOW)
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await conn.execute("UPDATE outage_events SET actor = 'me' WHERE outage_id = $1", o.id)
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await conn.execute("DELETE FROM outage_events WHERE outage_id = $1", o.id)


async def test_prompt_state_is_recorded_and_a_stale_result_ignored(conn):
    o = await repo.create_outage(conn, new(), now=NOW)
    assert await repo.set_prompt_state(conn, o.id, announcement=o.announcement, status="ready",
                                       path="/var/lib/asterisk/sounds/outage/ab12.wav")
    got = await repo.get_outage(conn, o.id)
    assert got.prompt_status is PromptStatus.READY and got.announcement_path.endswith("ab12.wav")
    assert got.version == o.version  # not a department's edit
    changed = await repo.change_restoration(conn, o.id, NOW + timedelta(hours=8), actor="x", now=NOW)
    assert changed.prompt_status is PromptStatus.PENDING and changed.announcement_path is None
    # the TTS result for the old text arrives late: ignored
    assert not await repo.set_prompt_state(conn, o.id, announcement=o.announcement, status="ready", path="/old.wav")
    assert await repo.set_prompt_state(conn, o.id, announcement=changed.announcement, status="failed",
                                       error="espeak-ng missing")
    assert (await repo.get_outage(conn, o.id)).prompt_status is PromptStatus.FAILED
    assert (await repo.outage_events(conn, o.id))[-1]["action"] == "prompt_failed"


async def test_lists_active_coming_and_all(conn):
    active = await repo.create_outage(conn, new(), now=NOW)
    coming = await repo.create_outage(conn, new(kind=OutageKind.PLANNED, start=NOW + timedelta(days=12),
                                                restore=NOW + timedelta(days=12, hours=8)), now=NOW)
    gone = await repo.create_outage(conn, new(), now=NOW)
    await repo.restore_outage(conn, gone.id, actor="x", now=NOW)
    assert [o.id for o in await repo.list_active(conn, at=NOW)] == [active.id]
    assert [o.id for o in await repo.list_coming(conn, at=NOW)] == [coming.id]
    assert {o.id for o in await repo.list_outages(conn, "all", at=NOW)} == {active.id, coming.id, gone.id}
    assert (await repo.find_outage(conn, coming.outage_no)).id == coming.id
    assert (await repo.find_outage(conn, str(coming.id))).outage_no == coming.outage_no
    with pytest.raises(repo.OutageNotFound):
        await repo.find_outage(conn, "TD19990101-0001")


# -- the IVR decision --------------------------------------------------------

async def test_caller_inside_an_outage_area_gets_it(conn):
    o = await repo.create_outage(conn, new(), now=NOW)
    d = await repo.outage_for_caller(conn, caller_num="+86 138 0013 8000", at=NOW)
    assert d.known_customer and d.account_no == "3100012345"
    assert d.outage is not None and d.outage.id == o.id and d.outage_no == o.outage_no
    assert d.relevance == "active"
    assert d.matched_area == OutageArea(AreaType.TRANSFORMER_AREA, "才湾2号台区")
    assert d.announcement.startswith("您好,您所在的才湾2号台区")
    assert d.channel_vars() == {"CUSTOMER_ID": "3100012345", "OUTAGE_ID": o.outage_no}
    from ivr.menu import as_decision  # the FastAGI side reads it duck-typed
    ivr = as_decision(d)
    assert (ivr.customer_id, ivr.outage_id, ivr.announcement) == ("3100012345", o.outage_no, d.announcement)
    assert d.prompt_path is None  # not generated yet: the IVR plays its generic announcement


async def test_caller_outside_the_outage_area_hears_nothing(conn):
    await repo.create_outage(conn, new(), now=NOW)
    d = await repo.outage_for_caller(conn, caller_num=HOSPITAL, at=NOW)
    assert d.known_customer and d.account_no == "3100020001"
    assert d.outage is None and d.announcement == "" and d.channel_vars()["OUTAGE_ID"] == ""


async def test_account_number_typed_by_dtmf_finds_the_outage(conn):
    o = await repo.create_outage(conn, new(areas=(("feeder", "10KV 才湾线"),)), now=NOW)
    d = await repo.outage_for_caller(conn, caller_num=None, account_no="3100012345#", at=NOW)
    assert d.account_no == "3100012345" and d.outage.id == o.id
    assert d.matched_area.type is AreaType.FEEDER


async def test_unknown_withheld_and_garbage_numbers_get_an_empty_decision(conn):
    await repo.create_outage(conn, new(), now=NOW)
    for raw in ("13912345678", None, "", "anonymous", "<script>", "１３８００１３８０００"):
        d = await repo.outage_for_caller(conn, caller_num=raw, at=NOW)
        assert not d.known_customer and d.outage is None, raw
    assert not (await repo.outage_for_caller(conn, account_no="99999", at=NOW)).known_customer
    assert not (await repo.outage_for_caller(conn, account_no="1' OR '1'='1", at=NOW)).known_customer


async def test_restored_or_cancelled_outage_no_longer_matches(conn):
    o = await repo.create_outage(conn, new(), now=NOW)
    await repo.restore_outage(conn, o.id, actor="抢修班", now=NOW + timedelta(minutes=10))
    d = await repo.outage_for_caller(conn, caller_num=ZHANG, at=NOW + timedelta(minutes=11))
    assert d.known_customer and d.outage is None
    c = await repo.create_outage(conn, new(areas=(("village", "才湾村"),)), now=NOW)
    assert (await repo.outage_for_caller(conn, caller_num=ZHANG, at=NOW)).outage.id == c.id
    await repo.cancel_outage(conn, c.id, actor="x", reason="误报", now=NOW)
    assert (await repo.outage_for_caller(conn, caller_num=ZHANG, at=NOW)).outage is None


async def test_imminent_planned_outage_is_announced_a_far_one_is_not(conn):
    soon = await repo.create_outage(conn, new(kind=OutageKind.PLANNED, start=NOW + timedelta(hours=20),
                                              restore=NOW + timedelta(hours=28), reason="线路检修"), now=NOW)
    d = await repo.outage_for_caller(conn, caller_num=ZHANG, at=NOW)
    assert d.outage.id == soon.id and d.relevance == "imminent"
    assert (await repo.outage_for_caller(conn, caller_num=ZHANG, at=NOW - timedelta(days=2))).outage is None
    # narrower window: not imminent any more
    assert (await repo.outage_for_caller(conn, caller_num=ZHANG, at=NOW, window=timedelta(hours=2))).outage is None


async def test_active_outage_wins_over_imminent_and_the_latest_restoration_wins(conn):
    await repo.create_outage(conn, new(kind=OutageKind.TEMPORARY, start=NOW + timedelta(hours=2),
                                       restore=NOW + timedelta(hours=30)), now=NOW)
    short = await repo.create_outage(conn, new(areas=(("village", "才湾村"),), restore=NOW + timedelta(hours=1)), now=NOW)
    long = await repo.create_outage(conn, new(areas=(("feeder", "10kV才湾线"),), restore=NOW + timedelta(hours=4)), now=NOW)
    d = await repo.outage_for_caller(conn, caller_num=ZHANG, at=NOW)
    assert d.outage.id == long.id and d.relevance == "active"
    all_ = [await repo.get_outage(conn, i) for i in (short.id, long.id)]
    assert pick_most_relevant(all_, d.customer_area, NOW).id == long.id  # SQL and model agree


async def test_long_overdue_outage_is_no_longer_announced(conn):
    o = await repo.create_outage(conn, new(), now=NOW)
    assert (await repo.outage_for_caller(conn, caller_num=ZHANG, at=o.expected_restore_at + timedelta(hours=5))).outage
    assert (await repo.outage_for_caller(conn, caller_num=ZHANG,
                                         at=o.expected_restore_at + timedelta(hours=7))).outage is None


async def test_shared_number_answers_for_the_customer_with_an_outage(conn):
    # 13800138003 belongs to the hospital; give it to 张三 as well (a shared phone)
    zhang = await conn.fetchval("SELECT id FROM customers WHERE account_no = '3100012345'")
    await conn.execute("INSERT INTO customer_phones (customer_id, phone) VALUES ($1, $2)", zhang, HOSPITAL)
    o = await repo.create_outage(conn, new(), now=NOW)
    d = await repo.outage_for_caller(conn, caller_num=HOSPITAL, at=NOW)
    assert d.candidates == 2 and d.account_no == "3100012345" and d.outage.id == o.id


async def test_area_names_match_across_width_spacing_and_kv_spelling(conn):
    o = await repo.create_outage(conn, new(areas=(("feeder", "１０ 千伏 才湾线"),)), now=NOW)
    d = await repo.outage_for_caller(conn, caller_num=ZHANG, at=NOW)
    assert d.outage is not None and d.outage.id == o.id
    assert d.customer_area == CustomerArea("才湾2号台区", "10kV才湾线", "才湾村")


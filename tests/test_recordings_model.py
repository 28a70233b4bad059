"""Recordings: pure rules (names from AMI, retention/legal hold, scores, access)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from cti.auth import Principal, Role
from recordings import access
from recordings.access import RecordingFacts
from recordings.model import (
    LinkedOrder, ScoreInvalid, UnsafeName, is_expired, legal_hold_until, parse_name, relative_path,
    validate_score,
)

ROOT = "/var/spool/asterisk/recordings/hotline"
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=timezone.utc)


def test_dialplan_name_is_stored_relative_with_its_ids():
    rel = relative_path(f"{ROOT}/20261122/1795374653.4-1795374654.8-complaint-191056.wav", ROOT)
    assert rel == "20261122/1795374653.4-1795374654.8-complaint-191056.wav"
    p = parse_name(rel)
    assert (p.linkedid, p.uniqueid, p.queue) == ("1795374653.4", "1795374654.8", "complaint")
    # the acceptance captures' shape
    t = parse_name(relative_path("/var/spool/asterisk/recordings/repair-20261122-191043-1795374638.1.wav",
                                 "/var/spool/asterisk/recordings/"))
    assert (t.uniqueid, t.queue) == ("1795374638.1", "repair")
    assert parse_name("x/other.wav").queue == ""


@pytest.mark.parametrize("name", [
    "",
    f"{ROOT}/../../../etc/passwd.wav",
    f"{ROOT}/20261122/../../x.wav",
    f"{ROOT}/./x.wav",
    f"{ROOT}//x.wav",
    f"{ROOT}/20261122/a\x00b.wav",
    f"{ROOT}/20261122/a\nb.wav",
    f"{ROOT}\\..\\x.wav",
    "relative/20261122/x.wav",
    "/etc/passwd",
    "/var/spool/asterisk/recordings/hotline-evil/x.wav",   # a sibling with the root as prefix
    f"{ROOT}/20261122/x.gsm",
    f"{ROOT}/.wav",
    f"{ROOT}/20261122/.hidden.wav",
    f"{ROOT}/" + "a" * 2000 + ".wav",
])
def test_hostile_names_are_rejected(name):
    with pytest.raises(UnsafeName):
        relative_path(name, ROOT)


def test_legal_hold_for_complaint_and_report_orders():
    days = 30
    # no complaint/report: no hold
    assert legal_hold_until([LinkedOrder("repair", "accepted")], days, NOW) == (None, False)
    # an open complaint holds it indefinitely
    hold, open_hold = legal_hold_until([LinkedOrder("complaint", "dispatched")], days, NOW)
    assert open_hold and hold == NOW + timedelta(days=days)
    # closed: closed + retention period
    closed = NOW - timedelta(days=10)
    hold, open_hold = legal_hold_until([LinkedOrder("report", "closed", closed)], days, NOW)
    assert not open_hold and hold == closed + timedelta(days=days)
    # the latest of several
    hold, _ = legal_hold_until([LinkedOrder("complaint", "closed", closed),
                                LinkedOrder("complaint", "closed", closed + timedelta(days=5)),
                                LinkedOrder("repair", "closed", NOW)], days, NOW)
    assert hold == closed + timedelta(days=35)


def test_expiry_never_while_held():
    past = NOW - timedelta(days=1)
    assert is_expired(past, None, False, NOW)
    assert not is_expired(past, None, True, NOW)            # open complaint
    assert not is_expired(past, NOW + timedelta(days=1), False, NOW)
    assert is_expired(past, past, False, NOW)
    assert not is_expired(NOW + timedelta(days=1), None, False, NOW)
    assert not is_expired(None, None, False, NOW)


def test_score_validation():
    ok = validate_score({"score": 85, "comment": " 用语规范 ", "criteria": {"greeting": 9, "accuracy": 8}})
    assert (ok.score, ok.comment, ok.criteria) == (85, "用语规范", {"greeting": 9, "accuracy": 8})
    for bad in ({"score": 101}, {"score": -1}, {"score": "90"}, {"score": True}, {},
                {"score": 80, "criteria": {"bogus": 1}}, {"score": 80, "criteria": {"greeting": 11}},
                {"score": 80, "comment": "x" * 2001}, {"score": 80, "comment": 5}, [1]):
        with pytest.raises(ScoreInvalid):
            validate_score(bad)


AGENT = Principal("a1", Role.AGENT, agent_id="1001")
OTHER_AGENT = Principal("a2", Role.AGENT, agent_id="1002")
SUPERVISOR = Principal("s", Role.SUPERVISOR)
DEPT = Principal("d", Role.DEPARTMENT, department="抢修班")
OTHER_DEPT = Principal("d2", Role.DEPARTMENT, department="营销部")
ADMIN = Principal("root", Role.ADMIN)
BROKEN_AGENT = Principal("x", Role.AGENT)          # no agent id: hears nothing
BROKEN_DEPT = Principal("y", Role.DEPARTMENT)       # no department: hears nothing


def test_access_per_role():
    facts = RecordingFacts(agent="1001", departments=frozenset({"抢修班"}))
    assert access.may_listen(AGENT, facts)
    assert not access.may_listen(OTHER_AGENT, facts)
    assert access.may_listen(SUPERVISOR, facts) and access.may_listen(ADMIN, facts)
    assert access.may_listen(DEPT, facts)
    assert not access.may_listen(OTHER_DEPT, facts)
    assert not access.may_listen(BROKEN_AGENT, RecordingFacts(agent=""))
    assert not access.may_listen(BROKEN_DEPT, RecordingFacts(departments=frozenset({""})))
    assert access.may_download(AGENT, facts) == access.may_listen(AGENT, facts)
    # no order dispatched anywhere: no department hears it
    assert not access.may_listen(DEPT, RecordingFacts(agent="1001"))


def test_scoring_and_score_visibility():
    assert access.may_score(SUPERVISOR) and access.may_score(ADMIN)
    assert not access.may_score(AGENT) and not access.may_score(DEPT)
    assert access.may_see_scores(AGENT, "1001") and not access.may_see_scores(AGENT, "1002")
    assert access.may_see_scores(SUPERVISOR, "1002") and not access.may_see_scores(DEPT, "1001")
    assert access.listing_filter(AGENT) == ("agent", "1001")
    assert access.listing_filter(DEPT) == ("department", "抢修班")
    assert access.listing_filter(SUPERVISOR) == ("all", "")
    assert access.listing_filter(BROKEN_AGENT) == ("none", "")


def test_model_and_access_need_only_the_standard_library():
    import subprocess
    import sys

    code = ("import sys\n"
            "for m in ('asyncpg', 'aiohttp', 'panoramisk', 'pydub'): sys.modules[m] = None\n"
            "import recordings.model, recordings.access\n")
    subprocess.run([sys.executable, "-c", code], check=True)

"""Call-level outcomes of every cacofonisk fixture (AMI 2 and AMI 1) through
``cti.frame.Frame`` -> :class:`cti.normalise.Normaliser` -> :class:`cti.callflow.CallFlow`,
checked against what cacofonisk's own upstream tests expect
(``tests/fixtures/cacofonisk_expectations.json``, transcribed from them), and the
call shapes of the Asterisk 22 captures 07 (blind transfer from a queue call)
and 09 (click-to-call Originate).
"""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from cti.callflow import CallFlow, CallRecord, Party
from cti.events import UnknownEvent
from cti.frame import Frame, FrameReader
from cti.normalise import Normaliser
from cti.tracker import CallTracker

HERE = Path(__file__).parent
TRACES = HERE / "fixtures" / "ami-traces"
EXPECT = json.loads((HERE / "fixtures" / "cacofonisk_expectations.json").read_text())["fixtures"]

# Fixtures whose upstream label cannot be met, and why: none at present.  The
# AMI 1 labels come from cacofonisk 0.4, whose conventions CallFlow follows
# when it sees AMI 1 (see cti/callflow.py, "AMI 1 conventions"); an entry here
# becomes a strict xfail with its reason.
XFAIL: dict[str, str] = {}


def fixture_path(key: str) -> Path:
    folder, rest = key.split("/", 1)
    return TRACES / folder / "fixtures" / rest


def frames_of(path: Path) -> list[Frame]:
    out = []
    for msg in json.loads(path.read_text()):
        out.append(Frame(tuple((k, str(v)) for k, v in msg.items() if k != "content")))
    return out


def replay(frames, flow: CallFlow | None = None) -> tuple[CallFlow, Normaliser, list]:
    flow = flow or CallFlow()
    n = Normaliser()
    tracker = CallTracker()  # the screen-pop model runs beside it, as in the pipeline
    unknown = []
    for i, f in enumerate(frames):
        ev = n(f, float(i))
        if ev is None:
            continue
        if isinstance(ev, UnknownEvent):
            unknown.append(ev)
            continue
        tracker.apply(ev)
        flow.apply(ev)
    assert n.errors == 0
    return flow, n, unknown


# --- projection: upstream labels and our records into one comparable shape ---

def _key_caller(p: Party, ami1: bool) -> str:
    return p.num if ami1 else p.channel


def _key_party(p: Party, ami1: bool) -> str:
    return p.ident if ami1 else p.channel


def project_expected(events: list) -> tuple[dict, list]:
    calls: dict[str, dict] = {}

    def rec(c):
        return calls.setdefault(c, {"rang": set(), "connected": set(), "reasons": []})

    transfers = []
    for e in events:
        kind = e[0]
        if kind == "ring":
            rec(e[1])["rang"].update(e[2])
        elif kind == "up":
            rec(e[1])["connected"].add(e[2])
        elif kind == "transfer":
            _, how, transferer, caller, targets = e
            transfers.append((how, transferer, caller, tuple(sorted(targets))))
            r = rec(caller)
            if how == "attended":
                r["connected"].update(targets)
            else:
                r["rang"].update(targets)
        elif kind == "hangup":
            rec(e[1])["reasons"].append(e[2])
    for c, r in calls.items():
        r["reasons"] = sorted(set(r["reasons"] or ["transferred"]))
    return calls, sorted(transfers)


def project_records(records: list[CallRecord], ami1: bool) -> tuple[dict, list]:
    calls: dict[str, dict] = {}
    transfers = []
    for r in records:
        key = _key_caller(r.caller, ami1)
        d = calls.setdefault(key, {"rang": set(), "connected": set(), "reasons": []})
        d["rang"].update(_key_party(p, ami1) for p in r.rang)
        d["connected"].update(_key_party(p, ami1) for p in r.connected)
        d["reasons"].append(r.reason or "live")
        for t in r.transfers:
            transfers.append((t.kind, _key_party(t.transferer, ami1), key,
                              tuple(sorted(_key_party(p, ami1) for p in t.targets))))
    for d in calls.values():
        d["reasons"] = sorted(set(d["reasons"]))
    return calls, sorted(transfers)


def _params():
    out = []
    for key, exp in sorted(EXPECT.items()):
        if exp.get("events") is None or "user_events" in exp:
            continue
        marks = [pytest.mark.xfail(strict=True, reason=XFAIL[key])] if key in XFAIL else []
        out.append(pytest.param(key, id=key.replace("cacofonisk-legacy-ami1/", "ami1/")
                                .replace("cacofonisk/", "ami2/").removesuffix(".json"),
                                marks=marks))
    return out


@pytest.mark.parametrize("key", _params())
def test_call_outcomes_match_upstream_expectations(key):
    exp = EXPECT[key]
    ami1 = key.startswith("cacofonisk-legacy-ami1/")
    flow, _, _ = replay(frames_of(fixture_path(key)))
    want_calls, want_transfers = project_expected(exp["events"])
    got_calls, got_transfers = project_records(flow.records(), ami1)
    assert got_calls == want_calls
    assert got_transfers == want_transfers
    if exp.get("originated"):
        assert any(r.originated for r in flow.records()) or not want_calls
    if "picked_up_by" in exp:
        pass  # the answering party is checked above through "connected"
    if "numbers" in exp:
        by_chan = {}
        for r in flow.records():
            by_chan[r.caller.channel] = r.caller.num
            for p in r.rang + r.connected:
                by_chan.setdefault(p.channel, p.num)
        for chan, num in exp["numbers"].items():
            assert by_chan.get(chan) == num, chan


# --- fixtures without call labels ----------------------------------------------

@pytest.mark.parametrize("key", sorted(k for k, e in EXPECT.items() if "user_events" in e))
def test_user_events_pass_through_unmodelled_with_every_header(key):
    _, n, unknown = replay(frames_of(fixture_path(key)))
    got = [dict(ev.fields) for ev in unknown if ev.name == "UserEvent"]
    want = EXPECT[key]["user_events"]
    # upstream reports the UserEvents that reach its reporter: a subset of
    # those on the wire, in order, with those headers
    it = iter(got)
    for w in want:
        assert any(all(g.get(k) == v for k, v in w.items()) for g in it), w


def test_every_fixture_has_an_expectation_or_a_note():
    on_disk = {f"{p.parent.parent.parent.name}/{p.relative_to(p.parent.parent).as_posix()}"
               for folder in ("cacofonisk", "cacofonisk-legacy-ami1")
               for p in (TRACES / folder / "fixtures").rglob("*.json")}
    assert on_disk == set(EXPECT)
    assert len(on_disk) == 106


def test_fixture_without_upstream_label_replays_and_every_call_ends():
    key = "cacofonisk-legacy-ami1/xfer_misc/call_forwarding_multiple.json"
    flow, _, _ = replay(frames_of(fixture_path(key)))
    recs = flow.records()
    assert recs and all(r.reason for r in recs)
    assert any(r.answered for r in recs)


# --- rules, named -----------------------------------------------------------------

def _flow(key: str) -> CallFlow:
    return replay(frames_of(fixture_path(key)))[0]


def test_blind_transfer_keeps_the_caller_and_names_the_transferer():
    flow = _flow("cacofonisk/xfer_blind/xfer_blind_abbcac.json")
    (t,) = flow.transfers()
    assert (t.kind, t.caller.channel, t.transferer.channel) == (
        "blind", "SIP/150010001-00000003", "SIP/150010002-00000004")
    rec = flow.record("SIP/150010001-00000003")
    assert [p.channel for p in rec.connected] == ["SIP/150010002-00000004",
                                                   "SIP/150010003-00000005"]
    assert rec.reason == "completed" and rec.caller.num == "201"


def test_blind_transfer_by_the_caller_hands_the_call_to_the_transferee():
    flow = _flow("cacofonisk/xfer_blind/xfer_blind_abacbc.json")
    assert flow.record("SIP/150010001-00000006").reason == "transferred"
    assert flow.record("SIP/150010002-00000007").reason == "completed"


def test_blind_transfer_to_a_phone_that_never_rings_is_no_transfer():
    flow = _flow("cacofonisk/xfer_blind/xfer_blind_a_no_answer.json")
    assert flow.transfers() == []
    assert [r.reason for r in flow.records()] == ["completed"]


def test_attended_transfer_connects_transferee_and_target_and_ends_the_helper_call():
    flow = _flow("cacofonisk/xfer_attended/xfer_abbcac.json")
    (t,) = flow.transfers()
    assert t.kind == "attended" and t.transferer.channel == "SIP/150010002-0000002e"
    a = flow.record("SIP/150010001-0000002c")
    assert a.connected[-1].channel == "SIP/150010003-0000002f" and a.reason == "completed"
    assert flow.record("SIP/150010002-0000002e").reason == "transferred"


def test_blonde_transfer_hands_the_ringing_targets_to_the_transferee():
    flow = _flow("cacofonisk/xfer_blonde/xfer_blonde_group_b.json")
    (t,) = flow.transfers()
    assert t.kind == "blonde"
    assert {p.channel for p in t.targets} == {"SIP/150010002-000000aa", "SIP/150010003-000000ab"}
    rec = flow.record(t.caller.channel)
    assert rec.connected[-1].channel == "SIP/150010002-000000aa"


def test_pickup_answers_without_ringing():
    flow = _flow("cacofonisk/xfer_misc/star_pickup.json")
    rec = flow.record("SIP/150010001-00000022")
    assert [p.channel for p in rec.rang] == ["SIP/150010002-00000023"]
    assert [p.channel for p in rec.picked_up_by] == ["SIP/150010003-00000024"]
    assert [p.channel for p in rec.connected] == ["SIP/150010003-00000024"]


def test_forwarded_call_reports_the_phone_that_answered():
    flow = _flow("cacofonisk/xfer_misc/call_forwarding.json")
    (rec,) = flow.records()
    assert [p.channel for p in rec.connected] == ["SIP/150010002-00000018"]


def test_local_channel_optimisation_is_invisible():
    # every AMI 2 phone-to-phone call goes through two optimised Local halves
    flow = _flow("cacofonisk/simple/ab_success_a_hangup.json")
    (rec,) = flow.records()
    assert not any(p.channel.startswith("Local/") for p in rec.rang + rec.connected)


def test_queue_abandon_is_a_queue_leg_outcome_and_the_call_still_completed():
    flow = _flow("cacofonisk/queue/queue_a_cancel.json")
    (rec,) = flow.records()
    assert rec.reason == "completed" and not rec.answered
    assert [(leg.queue, leg.outcome) for leg in rec.queue_legs] == [("670100-540100", "abandoned")]


def test_click_to_dial_makes_the_first_called_phone_the_caller():
    flow = _flow("cacofonisk/originate/ctd-account-account.json")
    (rec,) = flow.records()
    assert rec.originated and rec.caller.channel == "SIP/150010001-00000002"
    assert [p.channel for p in rec.connected] == ["SIP/150010002-00000003"]


def test_ami1_blind_transfer_is_a_dial_by_the_transferer_then_a_cold_transfer():
    # cacofonisk 0.4: 202 (transferer, the callee of 203) "dials" 201, then
    # hands 203 over; AMI 2 (above) reports only the transferee's ring
    flow = _flow("cacofonisk-legacy-ami1/xfer_blind/xfer_blind_abbcac.json")
    (t,) = flow.transfers()
    assert (t.kind, t.transferer.num, t.caller.num) == ("blind", "202", "203")
    tr = flow.record(t.transferer.channel)
    assert [p.account for p in tr.rang] == ["150010001"] and tr.reason == "transferred"
    assert not tr.connected
    assert flow.record("SIP/150010003-0000000f").reason == "completed"


def test_ami1_click_to_dial_is_named_by_the_cli_shown_to_b():
    flow = _flow("cacofonisk-legacy-ami1/connectab/ctd-account-world.json")
    (rec,) = flow.records()
    assert rec.originated and rec.caller.channel == "SIP/126680005-0000002c"
    assert rec.caller.num == "+31853030900"  # the A phone's own number is 217


def test_ami1_click_to_dial_that_never_reaches_b_is_no_call():
    flow = _flow("cacofonisk-legacy-ami1/connectab/ctd-account-world-deny_a.json")
    assert flow.records() == []
    # still there when asked for by name
    rec = flow.record("SIP/150010003-0000014f")
    assert rec is not None and rec.originated and rec.reason == "busy"
    # AMI 2 reports the A leg's end
    assert [r.reason for r in _flow(
        "cacofonisk/originate/ctd-account-world-deny-a.json").records()] == ["busy"]


def test_ami1_click_to_dial_keeps_its_call_through_an_attended_transfer_by_a():
    flow = _flow("cacofonisk-legacy-ami1/connectab/ctd-attn-xfer.json")
    (t,) = flow.transfers()
    assert (t.kind, t.caller.num) == ("attended", "217")
    rec = flow.record(t.caller.channel)
    assert rec.originated and rec.reason == "completed"
    assert [p.account or p.num for p in rec.connected] == ["126680010", "+31612345678"]


def test_hangup_reasons_follow_cause_and_answer():
    assert [r.reason for r in _flow("cacofonisk/simple/ab_reject.json").records()] == ["busy"]
    assert [r.reason for r in _flow("cacofonisk/simple/ab_a_cancel.json").records()] == ["cancelled"]
    assert [r.reason for r in _flow(
        "cacofonisk/simple/ab_callgroup_no_answer.json").records()] == ["no-answer"]


# --- Asterisk 22 captures ----------------------------------------------------------

A22 = TRACES / "asterisk-22"


def _a22(name: str) -> tuple[CallFlow, CallTracker, list]:
    reader, n, flow, tracker = FrameReader(), Normaliser(), CallFlow(), CallTracker()
    events = []
    for f in reader.feed((A22 / name).read_bytes()):
        ev = n(f, 0.0)
        if ev is None or isinstance(ev, UnknownEvent):
            continue
        events.append(ev)
        tracker.apply(ev)
        flow.apply(ev)
    assert n.errors == 0
    return flow, tracker, events


def test_blind_transfer_from_a_queue_call_requeues_the_same_caller():
    from cti.events import AgentCompleted, BlindTransferred
    flow, tracker, events = _a22("07-blind-transfer-from-queue-call.ami")
    (bt,) = [e for e in events if isinstance(e, BlindTransferred)]
    assert bt.result == "Success" and bt.extension == "complaint" and bt.is_external
    assert bt.transferee.channel == "Local/repair@hotline-0000000f;2"
    assert bt.transferer.channel == "Local/1001@agents-00000010;1"
    assert any(isinstance(e, AgentCompleted) and e.reason == "transfer" for e in events)
    (rec,) = flow.records()
    assert rec.caller.uniqueid == bt.transferee.uniqueid and rec.caller.num == "13800138000"
    assert [(leg.queue, leg.outcome, leg.agent, leg.complete_reason) for leg in rec.queue_legs] == [
        ("repair", "answered", "1001", "transfer"), ("complaint", "answered", "1002", "caller")]
    (t,) = rec.transfers
    assert (t.kind, t.to, t.transferer.channel) == ("blind", "complaint", bt.transferer.channel)
    # the screen-pop model agrees: one call, now in the complaint queue
    (call,) = tracker.recently_ended()
    assert call.queue == "complaint" and call.outcome == "answered"


def test_click_to_call_originate_answered_and_failed():
    from cti.events import DialEnded, DialStarted
    flow, _, events = _a22("09-originate-click-to-call.ami")
    ok, failed = flow.originate_responses()
    assert (ok.action_id, ok.response, ok.reason) == ("c2c-20261122-0001", "Success", 4)
    assert ok.channel == "Local/1001@agents-00000013;1" and ok.uniqueid
    assert (failed.action_id, failed.response, failed.reason) == ("c2c-20261122-0002", "Failure", 3)
    assert failed.channel == "Local/1004@agents" and failed.uniqueid == ""
    # the originated agent half then dials the customer, who answers
    dials = [e for e in events if isinstance(e, DialStarted) and e.chan.uniqueid == ok.uniqueid]
    assert [d.dest.channel.split("-")[0] for d in dials] == ["Local/13800138000@pstn"]
    ends = [e for e in events if isinstance(e, DialEnded) and e.chan.uniqueid == ok.uniqueid]
    assert [e.dial_status for e in ends] == ["ANSWER"]
    # AMI Originate dials carry only the Dest side
    assert any(isinstance(e, DialStarted) and not e.chan.uniqueid for e in events)


# --- the same code path as the service: real TCP through FrameReader ---------------

TCP_SAMPLE = ["cacofonisk/xfer_blind/xfer_blind_abbcac.json",
              "cacofonisk/xfer_attended/xfer_abcbac.json",
              "cacofonisk/originate/ctd-account-world.json",
              "cacofonisk-legacy-ami1/xfer_blonde/xfer_blondeanon.json",
              "cacofonisk-legacy-ami1/queue/queue_attn_xfer.json"]


@pytest.mark.parametrize("key", TCP_SAMPLE)
async def test_outcomes_are_the_same_over_tcp(key):
    frames = frames_of(fixture_path(key))
    payload = b"Asterisk Call Manager/2.10.4\r\n" + b"".join(f.to_bytes() for f in frames)

    async def serve(reader, writer):
        for i in range(0, len(payload), 1337):  # odd chunking on purpose
            writer.write(payload[i:i + 1337])
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    fr = FrameReader()
    got = []
    while chunk := await reader.read(4096):
        got.extend(fr.feed(chunk))
    writer.close()
    server.close()
    await server.wait_closed()
    got = [f for f in got if f.headers and not f.headers[0][1].startswith("Asterisk Call Manager")]
    ami1 = key.startswith("cacofonisk-legacy-ami1/")
    over_tcp = project_records(replay(got)[0].records(), ami1)
    direct = project_records(replay(frames)[0].records(), ami1)
    assert over_tcp == direct
    assert over_tcp == project_expected(EXPECT[key]["events"])

"""The AMI ``eventfilter`` lines of asterisk-conf/manager.conf.

* the filter rules of Asterisk's main/manager.c (match_filter /
  should_send_event), as :class:`cti.simulator.AmiEventFilter` applies them,
  checked rule by rule and, for the regex flavour, against glibc's own
  ``regcomp``/``regexec`` (what Asterisk calls) where the platform has them;
* :func:`cti.simulator.load_manager_eventfilters` on the shipped file;
* equivalence: every real trace in tests/fixtures (Asterisk 22 captures, the
  cacofonisk AMI 2 corpus) through the service's own models -- normaliser,
  call tracker, call flow, call-row recorder, the handlers' event stream, the
  live queue model and the wallboard -- once as sent and once as Asterisk
  would send it with the shipped filters: the results must be identical;
* the same end to end: the whole service against the simulator applying the
  shipped filters (screen-pops, withdrawals, call rows, resync, click-to-call);
* how many events per answered queue call are left.

The cacofonisk AMI 1 corpus (Asterisk 11) is not replayed filtered: the
shipped filters are for Asterisk 20/22, where its events (Dial, Bridge,
Transfer, Masquerade, Rename, ...) do not exist.
"""
from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import json
import re
from collections import Counter
from pathlib import Path

import aiohttp
import asyncpg
import pytest

import cti.simulator as simulator_module
from cti.app import services_key
from cti.events import DomainEvent
from cti.frame import Frame, FrameReader
from cti.live import LiveModel
from cti.pipeline import CallPipeline
from cti.screenpop import CallRecorder, ScreenPopService
from cti.simulator import AmiEventFilter, CallSpec, PbxSimulator, _posix_ere, load_manager_eventfilters
from queues.live import QueueBoard
from recordings.service import RecordingIndexer

from .harness import next_message, resyncing_manager, running_service, until

ROOT = Path(__file__).resolve().parent.parent
MANAGER_CONF = ROOT / "asterisk-conf" / "manager.conf"
USER = "hotline-cti"
SHIPPED = load_manager_eventfilters(MANAGER_CONF, USER)
TRACES = Path(__file__).parent / "fixtures" / "ami-traces"
A22 = sorted((TRACES / "asterisk-22").glob("*.ami"))
CACOFONISK = sorted((TRACES / "cacofonisk" / "fixtures").rglob("*.json"))

# what the service consumes (see the comments in manager.conf)
KEPT = {
    "Newchannel", "Newstate", "NewCallerid", "Hangup", "DialBegin", "DialEnd", "BridgeEnter",
    "BridgeLeave", "LocalBridge", "BlindTransfer", "AttendedTransfer", "Pickup", "OriginateResponse",
    "MixMonitorStop", "QueueCallerJoin", "QueueCallerLeave", "QueueCallerAbandon", "AgentCalled",
    "AgentConnect", "AgentComplete", "AgentRingNoAnswer", "QueueMemberStatus", "QueueMemberAdded",
    "QueueMemberRemoved", "QueueMemberPause", "QueueMemberPenalty", "QueueMemberRinginuse",
    "FullyBooted", "Shutdown",
}
KEPT_VARIABLES = {"IVR_CHOICE", "CUSTOMER_ID", "OUTAGE_ID", "MIXMONITOR_FILENAME"}


def text_of(headers) -> bytes:
    """The event as Asterisk queues it for the sessions (and writes it):
    ``Event`` and ``Privilege`` first (the cacofonisk JSON has its keys sorted)."""
    headers = sorted(headers, key=lambda kv: {"Event": 0, "Privilege": 1}.get(kv[0], 2))
    return ("".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n").encode("utf-8")


def ev(name: str, *headers: tuple[str, str], privilege: str = "call,all") -> tuple[str, bytes]:
    return name, text_of([("Event", name), ("Privilege", privilege), *headers])


def allowed(lines, event) -> bool:
    return AmiEventFilter(lines).allows(*event)


# ============================================================ filter rules
NEWCHANNEL = ev("Newchannel", ("Channel", "PJSIP/1001-00000001"), ("Uniqueid", "1.1"),
                ("ChanVariable", "IVR_CHOICE=repair"))
HANGUP = ev("Hangup", ("Channel", "Local/1001@agents-00000002;1"), ("Cause", "16"))
HANGUP_REQUEST = ev("HangupRequest", ("Channel", "Local/1001@agents-00000002;1"))
VARSET_NOTE = ev("VarSet", ("Channel", "Local/ivr@hotline-00000001;2"), ("ChanVariable", "IVR_CHOICE=repair"),
                 ("Variable", "__IVR_NOTE"), ("Value", "x"), privilege="dialplan,all")
VARSET_CHOICE = ev("VarSet", ("Channel", "Local/ivr@hotline-00000001;2"), ("ChanVariable", "IVR_CHOICE="),
                   ("Variable", "__IVR_CHOICE"), ("Value", "repair"), privilege="dialplan,all")


def test_no_filters_sends_every_event():
    f = AmiEventFilter([])
    assert all(f.allows(*e) for e in (NEWCHANNEL, HANGUP, HANGUP_REQUEST, VARSET_NOTE))


def test_include_only_sends_just_the_events_one_include_matches():
    lines = ["Event: Newchannel", "Event: Hangup"]  # OR-ed
    assert allowed(lines, NEWCHANNEL) and allowed(lines, HANGUP)
    assert not allowed(lines, VARSET_NOTE)


def test_exclude_only_sends_every_event_no_exclude_matches():
    lines = ["!Event: VarSet", "!Event: Hangup"]
    assert allowed(lines, NEWCHANNEL)
    assert not allowed(lines, VARSET_NOTE) and not allowed(lines, HANGUP)


def test_include_and_exclude_need_an_include_match_and_no_exclude_match():
    lines = ["Event: VarSet", "Event: Newchannel", "!Variable: __IVR_NOTE"]
    assert allowed(lines, VARSET_CHOICE) and allowed(lines, NEWCHANNEL)
    assert not allowed(lines, VARSET_NOTE)  # included, then excluded
    assert not allowed(lines, HANGUP)  # an exclude never includes: no include matched


def test_bang_prefix_makes_an_exclude_line_and_a_bare_bang_is_refused():
    assert not allowed(["!Channel: PJSIP/"], NEWCHANNEL) and allowed(["!Channel: PJSIP/"], HANGUP)
    with pytest.raises(ValueError):
        AmiEventFilter(["!"])


def test_the_regex_is_searched_in_every_header_line_of_the_whole_event():
    assert allowed(["Channel: PJSIP/"], NEWCHANNEL) and not allowed(["Channel: PJSIP/"], HANGUP)
    assert allowed(["Privilege: dialplan"], VARSET_NOTE) and not allowed(["Privilege: dialplan"], HANGUP)
    assert allowed(["Cause: 16"], HANGUP)
    # ChanVariable lines are part of it: "Variable: IVR_CHOICE" is in "ChanVariable: IVR_CHOICE=..."
    assert allowed(["Variable: IVR_CHOICE"], NEWCHANNEL)
    assert not allowed(["[[:space:]]Variable: _*IVR_CHOICE[[:space:]]"], NEWCHANNEL)
    assert allowed(["[[:space:]]Variable: _*IVR_CHOICE[[:space:]]"], VARSET_CHOICE)


def test_the_shipped_varset_lines_keep_exactly_the_four_variables():
    f = AmiEventFilter(SHIPPED)

    def varset(name: str) -> tuple[str, bytes]:
        return ev("VarSet", ("Channel", "Local/ivr@hotline-00000001;2"), ("ChanVariable", "IVR_CHOICE=repair"),
                  ("ChanVariable", "CUSTOMER_ID=3100012345"), ("ChanVariable", "OUTAGE_ID="),
                  ("Variable", name), ("Value", "v"), privilege="dialplan,all")

    for var in KEPT_VARIABLES:
        assert all(f.allows(*varset(p + var)) for p in ("", "_", "__")), var
        assert not f.allows(*varset(var + "_OLD")) and not f.allows(*varset("X" + var)), var
    for other in ("__IVR_NOTE", "MONITOR_FILENAME", "AGISTATUS", "QUEUESTATUS", "CHOICE"):
        assert not f.allows(*varset(other)), other
    # every channel event says "ChanVariable: IVR_CHOICE=...": not a VarSet, dropped when not kept
    assert not f.allows(*ev("Newexten", ("ChanVariable", "IVR_CHOICE=repair"), ("Application", "Set")))


def test_ivr_result_inherited_by_a_rung_agent_channel_is_dropped_but_the_callers_and_click_to_calls_pass():
    f = AmiEventFilter(SHIPPED)

    def varset(channel: str, context: str, name: str) -> tuple[str, bytes]:
        return ev("VarSet", ("Channel", channel), ("Context", context), ("Exten", "s"),
                  ("ChanVariable", "IVR_CHOICE=repair"), ("Variable", name), ("Value", "v"),
                  privilege="dialplan,all")

    for chan, ctx in (("PJSIP/1001-0000002a", "hotline-agents"), ("Local/1001@agents-00000001;2", "agents")):
        assert not f.allows(*varset(chan, ctx, "__IVR_CHOICE"))
        assert not f.allows(*varset(chan, ctx, "__OUTAGE_ID"))
        assert f.allows(*varset(chan, ctx, "__CUSTOMER_ID"))  # click-to-call sets it there
        assert f.allows(*varset(chan, ctx, "MIXMONITOR_FILENAME"))
    for ctx in ("hotline-inbound", "hotline-queue", "hotline-transfer", "hotline-agents-x", "my-agents"):
        assert f.allows(*varset("PJSIP/trunk-00000001", ctx, "__IVR_CHOICE")), ctx
        assert f.allows(*varset("PJSIP/trunk-00000001", ctx, "__OUTAGE_ID")), ctx


def test_an_unanchored_event_line_also_matches_longer_event_names():
    assert allowed(["Event: Hangup"], HANGUP_REQUEST)
    assert not allowed(["^Event: Hangup[[:space:]]"], HANGUP_REQUEST)
    assert allowed(["^Event: Hangup[[:space:]]"], HANGUP)


def test_caret_and_dollar_anchor_the_whole_event_and_dot_matches_a_newline():
    # no REG_NEWLINE: ^ is the start of "Event: ...", not of every line
    assert not allowed(["^Channel: "], NEWCHANNEL)
    assert allowed(["^Event: Newchannel.*Uniqueid: 1[.]1"], NEWCHANNEL)
    assert not allowed(["Uniqueid: 1.1$"], NEWCHANNEL)  # the event ends with the blank line
    assert allowed(["Uniqueid: 1.1[[:space:]]"], NEWCHANNEL)


def test_unsupported_regex_constructs_are_refused_not_guessed():
    for bad in ("(?i)hangup", "Event: [[=a=]]", "Event: [abc", "Event: x*+"):
        with pytest.raises(ValueError):
            AmiEventFilter([bad])


def _brute_force(lines, event_name: str, data: bytes) -> bool:
    """Every pattern searched in the whole text (manager.c), no shortcut."""
    text = data.decode("latin-1")
    inc = [_posix_ere(x) for x in lines if not x.startswith("!")]
    exc = [_posix_ere(x[1:]) for x in lines if x.startswith("!")]
    i = any(r.search(text) for r in inc)
    e = any(r.search(text) for r in exc)
    if inc and exc:
        return i and not e
    return i if inc else (not e if exc else True)


def all_trace_events():
    for path in A22:
        for f in FrameReader().feed(path.read_bytes()):
            if f.event is not None:
                yield f.event, text_of(f.headers)
    for path in CACOFONISK:
        for m in json.loads(path.read_text()):
            if m.get("Event"):
                yield m["Event"], text_of((k, str(v)) for k, v in m.items() if k != "content")


FILTER_SETS = {
    "shipped": SHIPPED,
    "shipped+exclude": SHIPPED + ["!Channel: Local/1004@", "!^Event: Hangup[[:space:]].*Cause: 26"],
    "exclude-only": ["!^Event: VarSet[[:space:]]", "!^Event: Newexten", "!Local/.*;1"],
    "unanchored": ["Event: Queue", "Event: Agent", "Variable: IVR", "Uniqueid: 17"],
}


@pytest.mark.parametrize("name", FILTER_SETS)
def test_the_per_event_name_shortcut_gives_the_verdict_of_searching_every_pattern(name):
    lines = FILTER_SETS[name]
    f = AmiEventFilter(lines)
    n = 0
    for event_name, data in all_trace_events():
        assert f.allows(event_name, data) == _brute_force(lines, event_name, data), (name, data[:200])
        n += 1
    assert n > 5000


# --- glibc as the oracle: Asterisk compiles with regcomp() and tests with regexec()
_LIBC = ctypes.util.find_library("c")
REG_EXTENDED, REG_NOSUB = 1, 8


class _GlibcRegex:
    def __init__(self, pattern: str, extended: bool) -> None:
        self.libc = ctypes.CDLL(_LIBC)
        self.buf = ctypes.create_string_buffer(1024)  # >= sizeof(regex_t)
        rc = self.libc.regcomp(self.buf, pattern.encode("utf-8"),
                               (REG_EXTENDED if extended else 0) | REG_NOSUB)
        assert rc == 0, (pattern, rc)

    def search(self, data: bytes) -> bool:
        return self.libc.regexec(self.buf, data, 0, None, 0) == 0

    def free(self) -> None:
        self.libc.regfree(self.buf)


def _glibc_verdict(regexes, data: bytes) -> bool:
    inc = [r for neg, r in regexes if not neg]
    exc = [r for neg, r in regexes if neg]
    i, e = any(r.search(data) for r in inc), any(r.search(data) for r in exc)
    if inc and exc:
        return i and not e
    return i if inc else (not e if exc else True)


@pytest.mark.skipif(not _LIBC or "libc.so" not in _LIBC, reason="needs glibc's regcomp/regexec")
@pytest.mark.parametrize("extended", [True, False], ids=["ERE (Asterisk 22)", "BRE (older manager.c)"])
def test_shipped_filters_decide_like_glibc_as_extended_and_as_basic_regex(extended):
    """The emulation agrees with regexec() on every real event, and the
    shipped lines give the same verdicts whether Asterisk compiles them as an
    extended or (older manager.c) as a basic regex."""
    regexes = [(x.startswith("!"), _GlibcRegex(x.lstrip("!"), extended)) for x in SHIPPED]
    try:
        f = AmiEventFilter(SHIPPED)
        for event_name, data in all_trace_events():
            assert f.allows(event_name, data) == _glibc_verdict(regexes, data), data[:200]
    finally:
        for _, r in regexes:
            r.free()


@pytest.mark.skipif(not _LIBC or "libc.so" not in _LIBC, reason="needs glibc's regcomp/regexec")
def test_posix_translation_matches_glibc_on_hand_made_patterns():
    patterns = ["Event: Hangup", "^Event: (Hangup|Newchannel)[[:space:]]", "Channel: [^L]", "Cause: 1[0-9]",
                "Uniqueid: [[:digit:]]+[.][[:digit:]]+$", "[[:upper:]][[:lower:]]+Transfer", "X{2,3}",
                "Variable: _?_?IVR", "a|b|Exten: s[[:space:]]", r"Context: hotline\-queue", "[]a]", "[a-]",
                "CallerIDName: 张三[[:space:]]", "CallerIDName: [^<]"]
    events = list(all_trace_events())[::7]
    for p in patterns:
        g = _GlibcRegex(p, True)
        try:
            ours = _posix_ere(p)
            for _, data in events:
                assert (ours.search(data.decode("latin-1")) is not None) == g.search(data), (p, data[:120])
        finally:
            g.free()


# ================================================================ loader
def test_loader_reads_the_shipped_manager_conf():
    assert len(SHIPPED) == len(set(SHIPPED)) == 37
    # an include list, and four excludes: the IVR's variables inherited by the agent channels rung
    assert [x for x in SHIPPED if x.startswith("!")] == [
        f"!^Event: VarSet[[:space:]].*Context: {ctx}[[:space:]].*Variable: __{var}[[:space:]]"
        for ctx in ("hotline-agents", "agents") for var in ("IVR_CHOICE", "OUTAGE_ID")]
    names = set()
    for line in SHIPPED:
        m = re.fullmatch(r"!?\^Event: ([A-Za-z]+)\[\[:space:\]\](.*)", line)
        assert m, line
        names.add(m.group(1))
        # flavour-neutral: nothing whose meaning differs between basic and extended regex
        assert not set(line) & set("()|+?{}\\"), line
        assert ";" not in line  # would start a comment in a .conf
    assert names == KEPT | {"VarSet"}
    varset = [re.search(r"Variable: _\*([A-Z_]+)\[", x).group(1) for x in SHIPPED if "Variable: _*" in x]
    assert set(varset) == KEPT_VARIABLES
    # and the simulator takes them as they are
    AmiEventFilter(SHIPPED)


def test_every_event_the_code_reads_is_kept():
    """What the code reads, from the code: a new modelled event or variable
    fails here until manager.conf lets it through."""
    from cti import normalise
    from cti.callflow import CallFlow
    from cti.events import BridgeCreated, BridgeDestroyed
    from cti.live import _MEMBER_EVENTS
    from cti.tracker import CallTracker

    ami1_only = {"Dial", "Bridge", "Transfer", "Masquerade", "Rename"}  # not sent by Asterisk 20/22
    # normalised, but no tracker, call flow, handler or listener reads them
    unread = {"BridgeCreate": BridgeCreated, "BridgeDestroy": BridgeDestroyed}
    for cls in unread.values():
        assert cls not in CallTracker()._handlers and cls not in CallFlow()._handlers
        assert cls not in ScreenPopService.wants and cls not in RecordingIndexer.wants
    read = (set(normalise._BUILDERS) - ami1_only - set(unread) - {"VarSet"}) | set(_MEMBER_EVENTS) | {
        "QueueMemberRemoved",  # cti/live.py, queues/live.py
        "FullyBooted",  # cti/resync.py register_event
    }
    assert read <= KEPT, read - KEPT
    assert KEPT - read == {"Shutdown"}  # cti/ami.py logs it
    assert normalise._MODELLED_VARS == KEPT_VARIABLES


def test_loader_follows_asterisks_config_syntax(tmp_path):
    conf = tmp_path / "manager.conf"
    conf.write_text("""[general]
enabled=yes
eventfilter=not-a-user-line
;-- a block comment
eventfilter=ignored
--;
[base](!)
eventfilter = Event: FromTemplate ; trailing comment
[cti](base)
secret=x
eventfilter=!Channel: DAHDI/.*
EventFilter =>  Value: a\\;b
[other]
eventfilter=Event: Other
""", encoding="utf-8")
    assert load_manager_eventfilters(conf, "cti") == ["Event: FromTemplate", "!Channel: DAHDI/.*", "Value: a;b"]
    assert load_manager_eventfilters(conf, "other") == ["Event: Other"]
    with pytest.raises(KeyError):
        load_manager_eventfilters(conf, "nobody")
    conf.write_text("[cti]\neventfilter(name(Newchannel)) =\n", encoding="utf-8")
    with pytest.raises(ValueError):
        load_manager_eventfilters(conf, "cti")


# ===================================================== equivalence (traces)
def frames_of_ami(path: Path) -> list[tuple[float, Frame]]:
    chunks = path.with_name(path.name + ".chunks")
    reader = FrameReader()
    if not chunks.exists():
        return [(float(i), f) for i, f in enumerate(reader.feed(path.read_bytes()))]
    data, out = path.read_bytes(), []
    for line in chunks.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            t, off, length = line.split()
            out.extend((float(t), f) for f in reader.feed(data[int(off): int(off) + int(length)]))
    return out


def frames_of_json(path: Path) -> list[tuple[float, Frame]]:
    return [(float(i), Frame(tuple((k, str(v)) for k, v in m.items() if k != "content")))
            for i, m in enumerate(json.loads(path.read_text()))]


def is_filtered_kind(f: Frame) -> bool:
    """An event Asterisk queues for all sessions (manager_event): only those
    pass the eventfilter.  Responses and the list events of an action
    (they carry its ActionID) are written straight to the session;
    OriginateResponse carries the ActionID but is an event."""
    return f.event is not None and (f.action_id is None or f.event == "OriginateResponse")


def as_sent(frames, flt: AmiEventFilter | None):
    if flt is None:
        return list(frames)
    return [(t, f) for t, f in frames if not is_filtered_kind(f) or flt.allows(f.event, text_of(f.headers))]


class _Rows(dict):
    """CallRecorder's write-behind buffer, logging every row handed in."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[dict] = []

    def __setitem__(self, k, v) -> None:
        self.log.append(v)
        super().__setitem__(k, v)


class _HandlerStream:
    """What the pipeline's handlers (screen-pop, recordings index) are given."""

    wants = tuple(set(ScreenPopService.wants) | set(RecordingIndexer.wants))

    def __init__(self) -> None:
        self.seen: list[tuple[DomainEvent, object]] = []

    async def __call__(self, event, call) -> None:
        self.seen.append((event, call))


async def service_models(frames, end: float) -> dict:
    """The service's pure path over frames as they arrive: frame listeners
    (the wallboard's LiveModel and QueueBoard) then CallPipeline (normaliser,
    tracker, callflow, the call-row recorder, the handlers)."""
    pipeline = CallPipeline()
    recorder = CallRecorder(None)  # type: ignore[arg-type]  # observe() only buffers
    recorder._rows = rows = _Rows()
    pipeline.listeners.append(recorder.observe)
    handlers = _HandlerStream()
    pipeline.add_handler(handlers)
    live = LiveModel()
    board = QueueBoard(live, clock=lambda: end)
    for t, f in frames:
        if f.event is None or (f.action_id is not None and f.event != "OriginateResponse"):
            continue  # a response or a list item: the action's, not the listeners' (cti/ami.py _route)
        live.on_frame(f, t)
        board.on_frame(f, t)
        await pipeline.process(f, t)
    flow, tracker = pipeline.callflow, pipeline.tracker
    return {
        "call rows": rows.log,
        "handler stream": handlers.seen,
        "tracker live": tracker.active(),
        "tracker ended": tracker.recently_ended(),
        "callflow records": flow.records(),
        "callflow transfers": flow.transfers(),
        "originate responses": flow.originate_responses(),
        "live queues": live.state,
        "wallboard": board.view(end),
        "wallboard tallies": dict(board.tallies),
        "agent activity": dict(board.activity),
    }


TRACE_CASES = [(p.stem, frames_of_ami, p) for p in A22] + \
    [("cacofonisk/" + p.relative_to(TRACES / "cacofonisk" / "fixtures").as_posix(), frames_of_json, p)
     for p in CACOFONISK]


@pytest.mark.parametrize("name,read,path", TRACE_CASES, ids=[c[0] for c in TRACE_CASES])
async def test_service_models_are_the_same_with_the_shipped_filters(name, read, path):
    frames = read(path)
    flt = AmiEventFilter(SHIPPED)
    filtered = as_sent(frames, flt)
    end = frames[-1][0] + 1.0  # "now" for the wallboard view
    full, less = await service_models(frames, end), await service_models(filtered, end)
    for key in full:
        assert less[key] == full[key], f"{name}: {key} differs with the shipped eventfilter"
    # not vacuous: the filter did drop events wherever there was something to drop
    dropped = {f.event for _, f in frames} - {f.event for _, f in filtered}
    assert dropped <= {f.event for _, f in frames} - KEPT


def test_equivalence_is_not_vacuous():
    """Dropping an event the service does read changes the result (so the
    comparison above can fail)."""
    for lost, trace in (("BlindTransfer", "07"), ("QueueCallerAbandon", "03"), ("AgentConnect", "01"),
                        ("QueueMemberStatus", "02"), ("VarSet", "01"), ("OriginateResponse", "09"),
                        ("AgentRingNoAnswer", "03"), ("QueueCallerLeave", "01")):
        (path,) = [p for p in A22 if p.name.startswith(trace + "-")]
        frames = frames_of_ami(path)
        less = [(t, f) for t, f in frames if f.event != lost]
        assert len(less) < len(frames), lost
        full, got = asyncio.run(service_models(frames, 1e6)), asyncio.run(service_models(less, 1e6))
        assert got != full, lost


def test_events_left_in_the_real_traces():
    flt = AmiEventFilter(SHIPPED)
    before = after = 0
    lines = []
    for path in A22:
        events = [f for _, f in frames_of_ami(path) if is_filtered_kind(f)]
        kept = [f for f in events if flt.allows(f.event, text_of(f.headers))]
        before, after = before + len(events), after + len(kept)
        lines.append(f"{path.stem:48} {len(events):5} -> {len(kept):4}")
    print("\nevents per trace, as sent -> with the shipped eventfilter\n" + "\n".join(lines)
          + f"\n{'total':48} {before:5} -> {after:4} ({100 * (before - after) / before:.0f}% dropped)")
    assert after < 0.45 * before


# ============================================= the simulator with the filters
def simulator(filters=None, **kw) -> PbxSimulator:
    return PbxSimulator("127.0.0.1", 0, "u", "s", speed=200.0, auth_fail_delay=0.01, seed=7,
                        event_filters=filters, **kw)


async def raw_login(sim: PbxSimulator):
    r, w = await asyncio.open_connection("127.0.0.1", sim.port)
    await r.readline()
    w.write(b"Action: Login\r\nActionID: l\r\nUsername: u\r\nSecret: s\r\n\r\n")
    reader = FrameReader()
    return r, w, reader


async def read_until(r, reader, pred, timeout=5.0) -> list[Frame]:
    got: list[Frame] = []
    while not any(pred(f) for f in got):
        data = await asyncio.wait_for(r.read(65536), timeout)
        assert data, "closed"
        got.extend(reader.feed(data))
    return got


ANSWERED = CallSpec(caller_num="13800138000", caller_name="张三", ivr_choice="repair", customer_id="3100012345",
                    outage_id="OUT-1", agent="1001", outcome="answered", ring_s=2, talk_s=5)


async def events_of_one_call(filters) -> Counter:
    sim = simulator(filters)
    await sim.start()
    written: list[bytes] = []
    try:
        r, w, reader = await raw_login(sim)
        await read_until(r, reader, lambda f: f.action_id == "l")
        sim.on_write = written.append
        await sim.place_call(ANSWERED)
        w.write(b"Action: Ping\r\nActionID: p\r\n\r\n")
        frames = await read_until(r, reader, lambda f: f.action_id == "p")
        w.close()
    finally:
        await sim.stop()
    events = [f for f in frames if f.event]
    # on_write saw exactly what went out, nothing filtered away
    assert Counter(f.event for f in events) == Counter(
        m.group(1).decode() for d in written if (m := re.match(rb"Event: (\w+)", d)))
    return Counter(f.event for f in events)


async def test_events_per_answered_queue_call_from_the_simulator():
    before, after = await events_of_one_call(None), await events_of_one_call(SHIPPED)
    n0, n = sum(before.values()), sum(after.values())
    print(f"\nevents per answered queue call (simulator): {n0} -> {n} with the shipped eventfilter;"
          f" dropped {sorted((before - after).items())}")
    assert set(before - after) == {"DialState", "BridgeCreate", "BridgeDestroy", "MixMonitorStart", "VarSet"}
    # the IVR's IVR_CHOICE and OUTAGE_ID inherited by the two halves of the agent's Local channel
    assert (before - after)["VarSet"] == 4
    assert set(after) <= KEPT | {"VarSet"} and after == before & after
    assert n <= n0 - 8 and n <= 43


async def test_list_events_responses_and_login_fullybooted_pass_any_filter():
    sim = simulator(["^Event: Nothing[[:space:]]"])  # lets no event through
    await sim.start()
    try:
        r, w, reader = await raw_login(sim)
        got = await read_until(r, reader, lambda f: f.event == "FullyBooted")
        assert [f.response for f in got if f.response] == ["Success"]
        w.write(b"Action: QueueStatus\r\nActionID: qs\r\n\r\n")
        got = await read_until(r, reader, lambda f: f.event == "QueueStatusComplete")
        assert {f.event for f in got} >= {"QueueParams", "QueueMember"}
        call = asyncio.create_task(sim.place_call(ANSWERED))
        await call
        w.write(b"Action: Ping\r\nActionID: p\r\n\r\n")
        got = await read_until(r, reader, lambda f: f.action_id == "p")
        assert [f.event for f in got if f.event] == []  # the call's events were all filtered
        w.close()
    finally:
        await sim.stop()


async def test_each_session_keeps_the_filters_it_logged_in_with():
    sim = simulator(SHIPPED)
    await sim.start()
    try:
        r1, w1, rd1 = await raw_login(sim)
        await read_until(r1, rd1, lambda f: f.action_id == "l")
        sim.event_filter = None  # "manager reload" without the lines: new logins only
        r2, w2, rd2 = await raw_login(sim)
        await read_until(r2, rd2, lambda f: f.action_id == "l")
        await sim.place_call(ANSWERED)
        seen = []
        for r, w, rd in ((r1, w1, rd1), (r2, w2, rd2)):
            w.write(b"Action: Ping\r\nActionID: p\r\n\r\n")
            seen.append({f.event for f in await read_until(r, rd, lambda f: f.action_id == "p") if f.event})
            w.close()
        assert "DialState" not in seen[0] and "AgentCalled" in seen[0]
        assert {"DialState", "AgentCalled"} <= seen[1]
    finally:
        await sim.stop()


# ===================================================== end to end (service)
def _with_filters(monkeypatch, filters) -> list[bytes]:
    """The demo service builds its PbxSimulator itself (with the shipped
    filters): hand it these filters instead, and keep what it writes."""
    written: list[bytes] = []

    class Filtered(PbxSimulator):
        def __init__(self, *a, **kw):
            kw["event_filters"] = filters
            super().__init__(*a, **kw)
            self.on_write = written.append

    monkeypatch.setattr(simulator_module, "PbxSimulator", Filtered)
    return written


async def _next(ws, kind: str, timeout: float = 10.0) -> dict:
    return await next_message(ws, kind, timeout)


@pytest.mark.parametrize("filters", [None, SHIPPED], ids=["as sent", "shipped eventfilter"])
async def test_service_end_to_end_is_the_same_with_the_shipped_filters(db_url, monkeypatch, filters):
    written = _with_filters(monkeypatch, filters)
    async with running_service(db_url) as svc, aiohttp.ClientSession() as http:
        await svc.login(http)
        async with http.ws_connect(f"{svc.base_url}/ws/agent/1002") as ws2, \
                http.ws_connect(f"{svc.base_url}/ws/agent/1003") as ws3:
            # complaint rings 1002 and 1003 together; 1002 answers, 1003's draft is withdrawn
            task = asyncio.create_task(svc.simulator.place_call(CallSpec(
                caller_num="13800138000", caller_name="张三", ivr_choice="complaint", agent="1002",
                customer_id="3100012345", outage_id="", ring_order=("1002", "1003"), outcome="answered",
                ring_s=1, talk_s=1)))
            pop2, pop3 = await _next(ws2, "screen_pop"), await _next(ws3, "screen_pop")
            withdrawn = await _next(ws3, "screen_pop_withdrawn")
            await task
        # an abandoned call, with a ring that goes unanswered (AgentRingNoAnswer)
        await svc.simulator.place_call(CallSpec(
            caller_num="13912345678", caller_name="", ivr_choice="enquiry", agent="1003", customer_id="",
            outage_id="", outcome="abandoned", ring_s=2, wait_s=3))
        await asyncio.sleep(0.2)
        await svc.pipeline.drain()
        figures = {q["name"]: q["figures"] for q in svc.app[services_key]["wallboard"].board.view()["queues"]}
        conn = await asyncpg.connect(db_url)
        try:
            calls = sorted((r["caller_num"], r["queue"], r["agent"], r["outcome"], r["state"], r["ivr_choice"],
                            r["customer_id"] is not None)
                           for r in await conn.fetch("SELECT * FROM calls"))
            orders = sorted((r["agent"], r["status"]) for r in await conn.fetch("SELECT * FROM work_orders"))
        finally:
            await conn.close()
    assert (pop2["queue"], pop2["caller_num"], pop2["customer"]["account_no"]) == (
        "complaint", "13800138000", "3100012345")
    assert pop3["linkedid"] == pop2["linkedid"] and withdrawn["reason"] == "answered_elsewhere"
    assert calls == [("13800138000", "complaint", "1002", "answered", "ended", "complaint", True),
                     ("13912345678", "enquiry", "", "abandoned", "ended", "enquiry", False)]
    # the loser's draft, and the draft of the abandoned call's unanswered ring: withdrawn
    assert orders == [("1002", "draft"), ("1003", "cancelled"), ("1003", "cancelled")]
    assert (figures["complaint"]["offered"], figures["complaint"]["answered"]) == (1, 1)
    assert (figures["enquiry"]["offered"], figures["enquiry"]["abandoned"]) == (1, 1)
    names = Counter(m.group(1).decode() for d in written  # events, not the list items of the resync
                    if (m := re.match(rb"Event: (\w+)", d)) and b"\r\nActionID: " not in d)
    if filters is None:
        assert names["DialState"] and names["BridgeCreate"] and names["MixMonitorStart"]
    else:
        assert set(names) <= KEPT | {"VarSet"}, set(names) - KEPT
        assert names["AgentCalled"] == 3 and names["QueueMemberStatus"] and names["FullyBooted"] == 1


async def _resync_and_click_to_call(filters) -> dict:
    sim = simulator(filters)
    sim.speed = 50.0
    await sim.start()
    try:
        async with resyncing_manager(sim) as (m, pipeline, resync):
            members = sorted((q, i, ms.status, ms.paused) for (q, i), ms in resync.live.state.members.items())
            resp = await m.originate({"Channel": "Local/1003@agents", "Context": "click2call",
                                      "Exten": "13800138002", "Priority": "1", "ActionID": "c2c-1"},
                                     timeout=5, answer_timeout=5)
            assert await until(lambda: not sim._live)
            await asyncio.sleep(0.1)
            await pipeline.drain()
            return {
                "members after resync": members,
                "originate": (resp.event, resp.get("Response"), resp.get("Reason")),
                "originate responses": [(o.action_id, o.response, o.reason) for o in
                                        pipeline.callflow.originate_responses()],
                "call flow": [(r.originated, r.reason, len(r.rang), len(r.connected)) for r in
                              pipeline.callflow.records()],
                "wallboard members": sorted((q, i, ms.status) for (q, i), ms in resync.live.state.members.items()),
            }
    finally:
        await sim.stop()


async def test_resync_and_click_to_call_are_the_same_through_the_shipped_filters():
    """The resync's list events (QueueStatus, QueueSummary, CoreShowChannels)
    are never filtered; OriginateResponse is an event and must be kept."""
    full, less = await _resync_and_click_to_call(None), await _resync_and_click_to_call(SHIPPED)
    assert less == full
    assert len(full["members after resync"]) == 7
    assert full["originate"] == ("OriginateResponse", "Success", "4")
    assert full["originate responses"] == [("c2c-1", "Success", 4)]


def test_the_demo_simulator_sends_what_the_shipped_manager_conf_lets_through():
    from cti.app import SHIPPED_MANAGER_CONF, _shipped_event_filters
    from cti.simulator import load_manager_eventfilters

    got = _shipped_event_filters(load_manager_eventfilters)
    assert got and got == load_manager_eventfilters(SHIPPED_MANAGER_CONF, "hotline-cti")
    assert any("AgentCalled" in f for f in got)

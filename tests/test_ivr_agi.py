"""The FastAGI IVR over real TCP on 127.0.0.1, driven by a scripted Asterisk peer
that speaks like Asterisk 22 (tests/fixtures/ami-traces/asterisk-22/*.agi)."""
from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from cti.agi_peer import AsteriskAgiPeer
from ivr.agi import AgiProtocolError, parse_reply, start_agi_server
from ivr.menu import Decision, load_menu
from ivr.tts import check_wav, store_for_menu

TRACES = Path(__file__).parent / "fixtures" / "ami-traces" / "asterisk-22"
RAW01 = (TRACES / "01-ivr-to-queue-answered.agi.raw").read_bytes()
RAW11 = (TRACES / "11-ivr-hangup-mid-prompt.agi.raw").read_bytes()
MENU = load_menu()

ANNOUNCEMENT = "您好，您所在的城关镇东街台区因10千伏城关线故障停电，抢修人员正在处理，预计今天18:00恢复供电。"
# the fake lookup: phone -> account; accounts inside the outage area
PHONES = {"13800138000": "3100012345", "13900139000": "3100054321"}
IN_OUTAGE = {"3100012345": "OUT-20261122-0042"}


class FakeLookup:
    """In-test stand-in for the lookup callable (caller/account -> decision)."""

    def __init__(self, *, fail: bool = False, delay: float = 0.0):
        self.calls: list[tuple[str | None, str | None]] = []
        self.fail = fail
        self.delay = delay

    async def __call__(self, caller_num, account_no):
        self.calls.append((caller_num, account_no))
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail:
            raise ConnectionError("database is down")
        account = account_no if account_no in IN_OUTAGE or account_no in PHONES.values() else PHONES.get(caller_num or "")
        if account is None:
            return Decision()
        outage = IN_OUTAGE.get(account)
        return Decision(customer_id=account, outage_id=outage, announcement=ANNOUNCEMENT if outage else None)


# -- the scripted Asterisk peer ------------------------------------------------------

def trace_env(raw: bytes) -> bytes:
    return raw.split(b"\n\n", 1)[0] + b"\n\n"


def env_block(raw: bytes = RAW01, **values: str | None) -> bytes:
    """The trace's agi_ environment with some values replaced (None: line dropped)."""
    lines = trace_env(raw).decode("utf-8").rstrip("\n").split("\n")
    out = []
    for line in lines:
        key = line.split(":", 1)[0]
        short = key[len("agi_"):]
        if short in values:
            if values[short] is None:
                continue
            line = f"{key}: {values[short]}"
        out.append(line)
    return ("\n".join(out) + "\n\n").encode("utf-8")


def reply_units(raw: bytes) -> tuple[list[bytes], bytes]:
    """Split a trace's replies into one unit per command (an unsolicited HANGUP
    belongs to the reply after it) and the trailing bytes sent after our EOF."""
    lines = raw.split(b"\n\n", 1)[1].split(b"\n")[:-1]
    units, pending = [], b""
    for line in lines:
        if line == b"HANGUP":
            pending += b"HANGUP\n"
            continue
        units.append(pending + line + b"\n")
        pending = b""
    return units, pending


def trace_commands(name: str) -> list[str]:
    text = (TRACES / name).read_text("utf-8")
    return [m.group(1) for m in re.finditer(r"\] >>> (.*)", text)]


def shape(cmd: str) -> str:
    """A command with its sound file and timeout abstracted."""
    cmd = re.sub(r"^(STREAM FILE|GET DATA) (\S+)", r"\1 <file>", cmd)
    return re.sub(r"^(GET DATA <file>) \d+", r"\1 <ms>", cmd)


@dataclass
class Session:
    commands: list[str] = field(default_factory=list)
    played: list[str] = field(default_factory=list)        # prompt names, in order
    variables: dict[str, str] = field(default_factory=dict)
    got_eof: bool = False
    bad_files: list[str] = field(default_factory=list)


class Asterisk:
    """Answers FastAGI commands the way Asterisk 22 does (cti.agi_peer), and
    names the prompts it is asked to play."""

    def __init__(self, port: int, store, *, keys=(), name: str | None = "张三",
                 hangup_at_play: int | None = None, close_at: str | None = None,
                 slow_get_data: float = 0.0, raw_env: bytes | None = None, **env: str | None):
        self.port = port
        self.store = store
        self.keys = list(keys)
        self.name = name
        self.hangup_at_play = hangup_at_play
        self.close_at = close_at
        self.slow_get_data = slow_get_data
        self.env = raw_env if raw_env is not None else env_block(**env)
        self.names = {str(store.path_for(t).with_suffix("")): n for n, t in MENU.prompts.items()}
        self.names[str(store.path_for(ANNOUNCEMENT).with_suffix(""))] = "announcement"

    async def call(self) -> Session:
        peer = AsteriskAgiPeer("127.0.0.1", self.port, self.env, keys=self.keys, caller_name=self.name,
                               hangup_at_play=self.hangup_at_play, close_at=self.close_at,
                               slow_get_data=self.slow_get_data)
        t = await peer.call()
        if t.failure and "within" in t.failure:
            raise asyncio.TimeoutError(t.failure)
        s = Session(commands=t.commands, variables=t.variables, got_eof=t.got_eof)
        for path in t.played:
            s.played.append(self.names.get(path, path))
            try:
                check_wav(path + ".wav")
            except Exception as e:  # noqa: BLE001
                s.bad_files.append(f"{path}: {e}")
        return s


async def replay(port: int, raw: bytes) -> tuple[list[str], bool]:
    """Send a trace's exact bytes: the environment, one reply unit per command,
    the trailing HANGUP after the server's EOF."""
    units, trailer = reply_units(raw)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(trace_env(raw))
    commands, eof = [], False
    while True:
        line = await asyncio.wait_for(reader.readline(), 10)
        if not line:
            eof = True
            writer.write(trailer)
            await writer.drain()
            break
        commands.append(line.decode("utf-8").rstrip("\n"))
        writer.write(units.pop(0) if units else b"200 result=1\n")
        await writer.drain()
    writer.close()
    return commands, eof


# -- fixtures -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sounds(tmp_path_factory):
    d = tmp_path_factory.mktemp("sounds")
    r = subprocess.run([sys.executable, "-m", "ivr", "build-prompts", "--sounds-dir", str(d)],
                       capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    return d


@pytest.fixture
async def store(sounds):
    s = store_for_menu(MENU, sounds)
    await s.prepare_announcement(ANNOUNCEMENT)     # what publishing the outage does
    return s


@pytest.fixture
def lookup():
    return FakeLookup()


@pytest.fixture
async def server(store, lookup):
    srv = await start_agi_server("127.0.0.1", 0, lookup, store, MENU, env_timeout=1.0, reply_timeout=5.0)
    yield srv
    await srv.stop()


def events(logs, name):
    return [e for e in logs if e["event"] == name]


async def assert_still_serving(server, store):
    s = await Asterisk(server.port, store, keys=["2"], callerid="13900139000").call()
    assert s.variables["IVR_CHOICE"] == "complaint"


# -- the traces, byte for byte ----------------------------------------------------------

async def test_trace_01_dialogue_exactly(store):
    # the trace's call: a known customer, with an outage id on record, presses 1
    async def decide(caller_num, account_no):
        assert (caller_num, account_no) == ("13800138000", None)
        return Decision(customer_id="3100012345", outage_id="OUT-20261122-0042")

    srv = await start_agi_server("127.0.0.1", 0, decide, store, MENU)
    try:
        with capture_logs() as logs:
            commands, eof = await replay(srv.port, RAW01)
            await asyncio.sleep(0.05)
    finally:
        await srv.stop()
    assert [shape(c) for c in commands] == [shape(c) for c in trace_commands("01-ivr-to-queue-answered.agi")]
    assert commands[2] == f'STREAM FILE {store.path_for(MENU.prompt("greeting")).with_suffix("")} ""'
    assert commands[3] == f'GET DATA {store.path_for(MENU.prompt("menu")).with_suffix("")} 5000 1'
    assert eof                                     # half-closed, then read Asterisk's HANGUP
    routed = events(logs, "ivr_routed")
    assert len(routed) == 1 and routed[0]["queue"] == "repair" and routed[0]["key"] == "1"
    assert events(logs, "ivr_call_started")[0]["caller_name"] == "张三"
    assert srv.stats["completed"] == 1 and srv.stats["hung_up"] == 0


async def test_trace_11_hangup_mid_prompt_exactly(store):
    # the trace's bytes as they are (script "ivr-outage"); the caller hangs up
    # during the first prompt, Asterisk answers the next command with HANGUP + 511
    async def decide(caller_num, account_no):
        return Decision(customer_id="3100012345")

    server = await start_agi_server("127.0.0.1", 0, decide, store, MENU, routes=("ivr", "ivr-outage"))
    try:
        with capture_logs() as logs:
            commands, eof = await replay(server.port, RAW11)
            await asyncio.sleep(0.05)
        await assert_still_serving(server, store)
    finally:
        await server.stop()
    assert [shape(c) for c in commands] == [shape(c) for c in trace_commands("11-ivr-hangup-mid-prompt.agi")]
    assert not any(c.startswith("SET VARIABLE") for c in commands)
    hung = events(logs, "ivr_caller_hung_up")
    assert len(hung) == 1 and "511" in hung[0]["reason"] and hung[0]["phase"] == "menu"
    assert not events(logs, "agi_handler_failed") and not events(logs, "agi_garbage_from_peer")
    assert eof and server.stats["hung_up"] == 1


def test_reply_parser_against_asterisk_lines():
    r = parse_reply("200 result=1 (张三)")
    assert (r.code, r.result, r.data) == (200, "1", "张三")
    r = parse_reply("200 result=-1 endpos=28000")
    assert (r.result, r.endpos, r.failed) == ("-1", 28000, True)
    r = parse_reply("200 result= (timeout)")
    assert (r.result, r.data) == ("", "timeout")
    assert parse_reply("200 result=12 (timeout)").result == "12"
    assert parse_reply("511 Command Not Permitted on a dead channel or intercept routine").code == 511
    for garbage in ("", "HTTP/1.1 400 Bad Request", "result=1", "2OO result=1", "\x00\xff"):
        with pytest.raises(AgiProtocolError):
            parse_reply(garbage)


# -- every menu path -------------------------------------------------------------------

@pytest.mark.parametrize("key, queue", [("1", "repair"), ("2", "complaint"), ("3", "enquiry"), ("0", "enquiry")])
async def test_menu_keys_outside_outage_area(server, store, lookup, key, queue):
    s = await Asterisk(server.port, store, keys=[key], callerid="13900139000").call()
    assert s.played == ["greeting", "menu"]                 # no announcement outside the area
    assert s.variables == {"IVR_CHOICE": queue, "__CUSTOMER_ID": "3100054321", "__OUTAGE_ID": ""}
    assert s.commands[:2] == ["ANSWER", "GET VARIABLE CALLERID(name)"]
    assert s.commands[-1] == f'VERBOSE "IVR digits={key} choice={queue}" 1'
    assert s.got_eof and not s.bad_files
    assert lookup.calls == [("13900139000", None)]


async def test_caller_in_outage_area_hears_announcement_then_presses_1(server, store):
    with capture_logs() as logs:
        s = await Asterisk(server.port, store, keys=["1", "1"]).call()
    assert s.played == ["greeting", "announcement", "outage_other", "menu"]
    assert s.commands[2].startswith("STREAM FILE") and s.commands[3].startswith("STREAM FILE")
    assert s.commands[4].startswith("GET DATA") and s.commands[4].endswith(" 1")
    assert s.variables == {"IVR_CHOICE": "repair", "__CUSTOMER_ID": "3100012345",
                           "__OUTAGE_ID": "OUT-20261122-0042"}
    assert events(logs, "ivr_outage_announced")[0]["outage_id"] == "OUT-20261122-0042"
    assert not s.bad_files


async def test_caller_in_outage_area_presses_nothing_after_announcement(server, store):
    s = await Asterisk(server.port, store, keys=[None, "2"]).call()
    assert s.played == ["greeting", "announcement", "outage_other", "menu"]
    assert s.variables["IVR_CHOICE"] == "complaint" and "__IVR_NOTE" not in s.variables


async def test_star_repeats_menu(server, store):
    s = await Asterisk(server.port, store, keys=["*", "3"], callerid="13900139000").call()
    assert s.played == ["greeting", "menu", "menu"]
    assert s.variables["IVR_CHOICE"] == "enquiry"


async def test_no_key_three_times_goes_to_enquiry_with_note(server, store):
    with capture_logs() as logs:
        s = await Asterisk(server.port, store, keys=[None, None, None], callerid="13900139000").call()
    assert s.played == ["greeting", "menu", "no_input", "menu", "no_input", "menu"]
    assert s.variables["IVR_CHOICE"] == "enquiry"
    assert s.variables["__IVR_NOTE"].startswith("语音导航3次未按键")
    assert any(c.startswith('SET VARIABLE __IVR_NOTE "') for c in s.commands)
    assert len(events(logs, "ivr_no_key")) == 2
    routed = events(logs, "ivr_routed_by_default")
    assert len(routed) == 1 and routed[0]["reason"] == "no_input" and routed[0]["digits"] == "-,-,-"


async def test_unknown_keys_three_times_go_to_enquiry_with_note(server, store):
    with capture_logs() as logs:
        s = await Asterisk(server.port, store, keys=["9", "#", "7"], callerid="13900139000").call()
    assert s.played == ["greeting", "menu", "invalid", "menu", "invalid", "menu"]
    assert s.variables["IVR_CHOICE"] == "enquiry"
    assert s.variables["__IVR_NOTE"].startswith("语音导航3次按键无效")
    assert [e["digits"] for e in events(logs, "ivr_invalid_key")] == ["9", "#"]


@pytest.mark.parametrize("callerid", ["", "unknown", "anonymous", "<script>alert(1)</script>", "abc", "110"])
async def test_withheld_or_unusable_number_is_asked_for_account(server, store, lookup, callerid):
    with capture_logs() as logs:
        s = await Asterisk(server.port, store, keys=["3100012345", "1", "1"], callerid=callerid).call()
    assert s.played == ["greeting", "account_request", "announcement", "outage_other", "menu"]
    get_account = s.commands[3]
    assert get_account.startswith("GET DATA") and get_account.endswith(f" {MENU.account.max_digits}")
    assert lookup.calls == [(None, "3100012345")]
    assert s.variables == {"IVR_CHOICE": "repair", "__CUSTOMER_ID": "3100012345",
                           "__OUTAGE_ID": "OUT-20261122-0042"}
    assert events(logs, "ivr_caller_id_unusable")[0]["raw_callerid"] == callerid
    assert events(logs, "ivr_account_identified")


async def test_unknown_number_with_wrong_accounts_gets_menu_with_note(server, store, lookup):
    with capture_logs() as logs:
        s = await Asterisk(server.port, store, keys=["12", "3109999999", None, "2"],
                           callerid="13700137000").call()
    # too short, not found, nothing: three failed tries, then the menu
    assert s.played == ["greeting", "account_request", "account_invalid", "account_invalid", "menu"]
    assert lookup.calls == [("13700137000", None), (None, "3109999999")]
    assert s.variables["IVR_CHOICE"] == "complaint" and s.variables["__CUSTOMER_ID"] == ""
    assert s.variables["__IVR_NOTE"] == MENU.notes["account_not_found"]
    assert events(logs, "ivr_account_not_found")


async def test_unknown_number_may_skip_account_with_pound(server, store):
    s = await Asterisk(server.port, store, keys=["", "3"], callerid="13700137000").call()
    assert s.played == ["greeting", "account_request", "menu"]
    assert s.variables == {"IVR_CHOICE": "enquiry", "__CUSTOMER_ID": "", "__OUTAGE_ID": ""}


@pytest.mark.parametrize("name", ["<b>王五</b>\"; DROP TABLE", "unknown", None, "Alice Smith", "\x1b[31m红\x07"])
async def test_hostile_caller_names(server, store, name):
    with capture_logs() as logs:
        s = await Asterisk(server.port, store, keys=["1"], name=name, calleridname=name,
                           callerid="13900139000").call()
    assert s.variables["IVR_CHOICE"] == "repair"
    logged = events(logs, "ivr_call_started")[0]["caller_name"]
    if name in (None, "unknown"):
        assert logged is None
    else:
        assert logged and all(ch.isprintable() for ch in logged)


# -- bad input, hang-ups, bad peers -------------------------------------------------------

async def test_hangup_during_announcement(server, store):
    with capture_logs() as logs:
        s = await Asterisk(server.port, store, keys=["1"], hangup_at_play=2).call()
    assert s.played == ["greeting", "announcement"]
    assert s.commands[-2].startswith("GET DATA")          # answered HANGUP + 511
    assert s.commands[-1] == 'VERBOSE "caller hung up during prompt" 1'
    assert not s.variables
    assert len(events(logs, "ivr_caller_hung_up")) == 1
    assert s.got_eof
    await assert_still_serving(server, store)


async def test_hangup_during_get_data(server, store):
    with capture_logs() as logs:
        s = await Asterisk(server.port, store, hangup_at_play=2, callerid="13900139000").call()
    assert not s.variables
    hung = events(logs, "ivr_caller_hung_up")
    assert len(hung) == 1 and "GET DATA result=-1" in hung[0]["reason"]


async def test_peer_closes_mid_dialogue(server, store):
    with capture_logs() as logs:
        s = await Asterisk(server.port, store, close_at="GET DATA", callerid="13900139000").call()
        await asyncio.sleep(0.1)
    hung = events(logs, "ivr_caller_hung_up")
    assert len(hung) == 1 and "EOF" in hung[0]["reason"]
    assert not events(logs, "agi_handler_failed")
    await assert_still_serving(server, store)


async def raw_session(port: int, data: bytes, *, close: bool = True, read_replies: int = 0) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    got = b""
    for _ in range(read_replies):
        got += await asyncio.wait_for(reader.readline(), 5)
    if close:
        writer.write_eof()
    try:
        got += await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
    return got


@pytest.mark.parametrize("data, event, reason", [
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "agi_garbage_from_peer", "not an AGI environment line"),
    (b"\xff\xfe\x00garbage\n\n", "agi_garbage_from_peer", "not an AGI environment line"),
    (b"\n", "agi_garbage_from_peer", "empty AGI environment"),
    (b"agi_network: yes\nagi_network_script: ivr\n", "agi_peer_closed_early", "before the end"),
    (b"", "agi_peer_closed_early", "before the end"),
    (b"agi_network: yes\nagi_request: agi://x/ivr" + b"A" * 70000, "agi_garbage_from_peer", "too long"),
    (env_block(network_script="billing"), "agi_no_route", None),
])
async def test_garbage_or_early_close_in_environment(server, store, data, event, reason):
    with capture_logs() as logs:
        await raw_session(server.port, data)
        await asyncio.sleep(0.05)
    found = events(logs, event)
    assert len(found) == 1, logs
    if reason:
        assert reason in found[0]["reason"]
    assert not events(logs, "agi_session_failed") and not events(logs, "agi_handler_failed")
    await assert_still_serving(server, store)


async def test_silent_peer_times_out(server, store):
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    with capture_logs() as logs:
        writer.write(b"agi_network: yes\n")
        await writer.drain()
        await assert_still_serving(server, store)        # served while the silent one waits
        assert await asyncio.wait_for(reader.read(), 5) == b""   # closed after env_timeout
    writer.close()
    assert "incomplete AGI environment" in events(logs, "agi_garbage_from_peer")[0]["reason"]


async def test_garbage_reply_mid_dialogue(server, store):
    env = env_block(callerid="13900139000")
    with capture_logs() as logs:
        got = await raw_session(server.port, env + b"200 result=0\nlol what\n", close=False)
    assert got.startswith(b"ANSWER\nGET VARIABLE CALLERID(name)\n")
    bad = events(logs, "agi_garbage_from_peer")
    assert len(bad) == 1 and bad[0]["stage"] == "dialogue" and "lol what" in bad[0]["reason"]
    await assert_still_serving(server, store)


async def test_lookup_failure_still_gives_the_menu(store):
    lookup = FakeLookup(fail=True)
    srv = await start_agi_server("127.0.0.1", 0, lookup, store, MENU)
    try:
        with capture_logs() as logs:
            s = await Asterisk(srv.port, store, keys=["1"]).call()
    finally:
        await srv.stop()
    assert s.played == ["greeting", "menu"]                 # no account question either
    assert s.variables == {"IVR_CHOICE": "repair", "__CUSTOMER_ID": "", "__OUTAGE_ID": ""}
    assert "database is down" in events(logs, "ivr_lookup_failed")[0]["error"]


async def test_slow_lookup_is_cut_short(store):
    srv = await start_agi_server("127.0.0.1", 0, FakeLookup(delay=5), store, MENU, decide_timeout=0.2)
    try:
        with capture_logs() as logs:
            s = await asyncio.wait_for(Asterisk(srv.port, store, keys=["3"]).call(), 3)
    finally:
        await srv.stop()
    assert s.variables["IVR_CHOICE"] == "enquiry"
    assert "TimeoutError" in events(logs, "ivr_lookup_failed")[0]["error"]


async def test_two_concurrent_callers(server, store):
    slow = Asterisk(server.port, store, keys=["1", "2"], slow_get_data=0.8, uniqueid="1795374700.1")
    fast = Asterisk(server.port, store, keys=["3"], callerid="13900139000", uniqueid="1795374700.2")
    order: list[str] = []

    async def run(name, peer):
        s = await peer.call()
        order.append(name)
        return s

    a, b = await asyncio.gather(run("slow", slow), run("fast", fast))
    assert order == ["fast", "slow"]
    assert a.variables == {"IVR_CHOICE": "complaint", "__CUSTOMER_ID": "3100012345",
                           "__OUTAGE_ID": "OUT-20261122-0042"}
    assert b.variables == {"IVR_CHOICE": "enquiry", "__CUSTOMER_ID": "3100054321", "__OUTAGE_ID": ""}


async def test_many_bad_peers_and_good_callers_at_once(server, store):
    bad = [raw_session(server.port, b"\x00\x01\x02\n\n") for _ in range(5)]
    early = [raw_session(server.port, b"agi_network: yes\n") for _ in range(5)]
    good = [Asterisk(server.port, store, keys=[k], callerid="13900139000").call() for k in "1230"]
    results = await asyncio.gather(*bad, *early, *good)
    assert [s.variables["IVR_CHOICE"] for s in results[10:]] == ["repair", "complaint", "enquiry", "enquiry"]
    await asyncio.sleep(0.05)
    assert server.stats["active"] == 0


async def test_stop_ends_live_sessions(store, lookup):
    srv = await start_agi_server("127.0.0.1", 0, lookup, store, MENU)
    reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
    writer.write(env_block(callerid="13900139000"))
    await writer.drain()
    assert await asyncio.wait_for(reader.readline(), 5) == b"ANSWER\n"   # then never answer
    await asyncio.wait_for(srv.stop(grace=0.2), 3)
    assert await asyncio.wait_for(reader.read(), 3) == b""
    writer.close()


def test_panoramisk_handler_spins_on_early_close():
    """Why Application.handler is replaced: panoramisk 1.4 loops forever (without
    yielding to the event loop) when the peer closes before the blank line."""
    code = textwrap.dedent("""
        import asyncio
        from panoramisk import fast_agi
        async def main():
            app = fast_agi.Application()
            srv = await asyncio.start_server(app.handler, '127.0.0.1', 0)
            port = srv.sockets[0].getsockname()[1]
            r, w = await asyncio.open_connection('127.0.0.1', port)
            w.write(b'agi_network: yes\\n'); w.close()
            await asyncio.sleep(0.5)
            print('loop still alive')
        asyncio.run(main())
    """)
    with pytest.raises(subprocess.TimeoutExpired):
        subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=3)


async def test_a_bug_in_the_ivr_still_routes_the_call(store):
    class Broken:
        async def playback(self, text, *, kind="static"):
            raise RuntimeError("bug")

        async def fallback_playback(self, kind):
            raise RuntimeError("bug")

    srv = await start_agi_server("127.0.0.1", 0, FakeLookup(), Broken(), MENU)
    try:
        with capture_logs() as logs:
            s = await Asterisk(srv.port, store, keys=["1"], callerid="13900139000",
                               arg_1="complaint").call()
    finally:
        await srv.stop()
    assert s.variables["IVR_CHOICE"] == "complaint"          # agi_arg_1, the dialplan's default
    assert "__IVR_NOTE" in s.variables
    failed = events(logs, "ivr_failed_routed_to_default")
    assert len(failed) == 1 and failed[0]["queue"] == "complaint"


# -- with the real lookup: PostgreSQL, the outage registry, the publish hook ------------------

async def test_real_lookup_outage_area_and_publish_hook(pool, store):
    from datetime import datetime, timedelta, timezone

    from cti.customer_repo import upsert_customers
    from cti.customers import Customer
    from ivr.agi import db_decide
    from ivr.outage_repo import create_outage, get_outage
    from ivr.outages import AreaType, NewOutage, OutageArea, OutageKind, PromptStatus
    from ivr.tts import outage_prompt_hook

    now = datetime.now(timezone.utc)
    async with pool.acquire() as conn:
        await upsert_customers(conn, [
            Customer(account_no="3100012345", name="张三", feeder="城关线", transformer_area="东街2号台区",
                     village="东街", phones=("13800138000",)),
            Customer(account_no="3100054321", name="李四", feeder="才湾线", transformer_area="才湾1号台区",
                     village="才湾村", phones=("13900139000",)),
        ])
        outage = await create_outage(conn, NewOutage(
            kind=OutageKind.FAULT, reason="10kV城关线故障", areas=(OutageArea(AreaType.FEEDER, "城关线"),),
            start_at=now - timedelta(hours=1), expected_restore_at=now + timedelta(hours=3), actor="调度所"))
    assert outage.announcement and outage.prompt_status is PromptStatus.PENDING

    t0 = asyncio.get_running_loop().time()
    await outage_prompt_hook(store, pool)(outage)          # what publishing runs
    elapsed = asyncio.get_running_loop().time() - t0
    async with pool.acquire() as conn:
        stored = await get_outage(conn, outage.id)
    print(f"\npublish hook -> playable + recorded: {elapsed * 1000:.0f} ms")
    assert stored.prompt_status is PromptStatus.READY
    assert stored.announcement_path == str(store.path_for(outage.announcement).with_suffix(""))
    check_wav(stored.announcement_path + ".wav")
    assert elapsed < 10

    srv = await start_agi_server("127.0.0.1", 0, db_decide(pool), store, MENU)
    try:
        inside = Asterisk(srv.port, store, keys=["1", "1"], callerid="13800138000")
        outside = Asterisk(srv.port, store, keys=["3"], callerid="13900139000")
        unknown = Asterisk(srv.port, store, keys=["3100012345", "1", "2"], callerid="")
        for peer in (inside, outside, unknown):
            peer.names[stored.announcement_path] = "announcement"
        a, b, c = await asyncio.gather(inside.call(), outside.call(), unknown.call())
    finally:
        await srv.stop()
    # the registry's announcement already ends with "请按1": no second outage_other prompt
    assert a.played == ["greeting", "announcement", "menu"]
    assert a.variables == {"IVR_CHOICE": "repair", "__CUSTOMER_ID": "3100012345",
                           "__OUTAGE_ID": outage.outage_no}
    assert b.played == ["greeting", "menu"]
    assert b.variables == {"IVR_CHOICE": "enquiry", "__CUSTOMER_ID": "3100054321", "__OUTAGE_ID": ""}
    assert c.played == ["greeting", "account_request", "announcement", "menu"]
    assert c.variables["__OUTAGE_ID"] == outage.outage_no and c.variables["IVR_CHOICE"] == "complaint"
    assert not (a.bad_files or b.bad_files or c.bad_files)

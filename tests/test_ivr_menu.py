"""The IVR menu file and the pure dialogue state machine (no I/O)."""
from __future__ import annotations

import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

from ivr.menu import (DEFAULT_MENU_PATH, Ask, Decision, LookupAccount, MenuError, Route,
                      account_resolved, as_decision, begin, load_menu, next_step, parse_menu)

MENU = load_menu()
KNOWN = Decision(customer_id="3100012345")
OUTAGE = Decision(customer_id="3100012345", outage_id="OUT-20261122-0042",
                  announcement="城关10千伏线路故障停电，预计今天18点恢复供电。")


def names(action: Ask) -> list[str]:
    return [s.name for s in action.prompts]


def raw_menu() -> dict:
    return tomllib.loads(DEFAULT_MENU_PATH.read_text("utf-8"))


# -- the file -----------------------------------------------------------------

def test_shipped_menu_is_valid_and_complete():
    assert MENU.queues == ("repair", "complaint", "enquiry")
    assert {k: o.queue for k, o in MENU.keys.items() if o.action == "route"} == {
        "1": "repair", "2": "complaint", "3": "enquiry", "0": "enquiry"}
    assert MENU.keys["*"].action == "repeat"
    assert MENU.keys["1"].label == "故障报修" and MENU.keys["2"].label == "投诉举报"
    assert MENU.tries == 3 and MENU.default_queue == "enquiry"
    for name in ("greeting", "menu", "outage_other", "account_request", "outage_generic"):
        assert any("\u4e00" <= ch <= "\u9fff" for ch in MENU.prompt(name)), name  # Mandarin


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["keys"].__setitem__("7", {"action": "route", "queue": "billing"}), "keys.'7'.queue = 'billing'"),
    (lambda d: d["keys"].__setitem__("#", {"action": "repeat"}), "keys.'#'"),
    (lambda d: d["keys"].__setitem__("1", {"action": "dial", "queue": "repair"}), "keys.'1'.action = 'dial'"),
    (lambda d: d.__setitem__("tries", 0), "tries = 0"),
    (lambda d: d.__setitem__("default_queue", "sales"), "default_queue = 'sales'"),
    (lambda d: d["prompts"].pop("menu"), "prompts.menu is missing"),
    (lambda d: d["prompts"].__setitem__("greeting", "  "), "prompts.greeting must be non-empty"),
    (lambda d: d.__setitem__("tires", 3), "unknown entry 'tires'"),
    (lambda d: d["account"].__setitem__("min_digits", 20), "account.min_digits (20) > account.max_digits"),
    (lambda d: d.__setitem__("queues", ["repair", "Bad Queue"]), "queues[1] = 'Bad Queue'"),
    (lambda d: d["notes"].pop("no_input"), "notes.no_input is missing"),
])
def test_bad_menu_names_the_bad_entry(mutate, message):
    d = raw_menu()
    mutate(d)
    with pytest.raises(MenuError) as e:
        parse_menu(d)
    assert message in str(e.value)


def test_bad_menu_file_names_file(tmp_path):
    p = tmp_path / "menu.toml"
    p.write_text("tries = [", "utf-8")
    with pytest.raises(MenuError, match="menu.toml: not valid TOML"):
        load_menu(p)


def test_operator_queue_is_configurable():
    d = raw_menu()
    d["queues"].append("operator")
    d["keys"]["0"] = {"action": "route", "queue": "operator", "label": "人工服务"}
    m = parse_menu(d)
    s, a = begin(m, KNOWN)
    assert next_step(s, "0")[1].queue == "operator"


def test_menu_module_is_pure():
    code = textwrap.dedent("""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split('.')[0] in ('asyncpg', 'aiohttp', 'panoramisk', 'pyttsx3', 'pydub', 'structlog'):
                    raise ImportError('blocked: ' + name)
        sys.meta_path.insert(0, Block())
        import ivr.menu
        ivr.menu.load_menu()
        print('ok')
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=Path(__file__).resolve().parent.parent)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


# -- the dialogue ---------------------------------------------------------------

@pytest.mark.parametrize("key, queue", [("1", "repair"), ("2", "complaint"), ("3", "enquiry"), ("0", "enquiry")])
def test_every_menu_key_routes(key, queue):
    s, a = begin(MENU, KNOWN)
    assert isinstance(a, Ask) and names(a) == ["greeting", "menu"] and a.max_digits == 1
    assert a.timeout_ms == MENU.timeout_ms
    s, r = next_step(s, key)
    assert r == Route(queue=queue, customer_id="3100012345", outage_id=None, note=None,
                      by_default=False, reason="key", key=key)


def test_star_repeats_menu_without_greeting_and_without_costing_a_try():
    s, a = begin(MENU, KNOWN)
    for _ in range(2):
        s, a = next_step(s, "*")
        assert names(a) == ["menu"] and a.reason == "repeat"
    s, a = next_step(s, "9")
    s, a = next_step(s, "9")
    assert isinstance(a, Ask)          # 2 wrong keys: still asking (repeats did not count)
    s, r = next_step(s, "2")
    assert r.queue == "complaint" and not r.by_default


def test_star_is_capped():
    s, a = begin(MENU, KNOWN)
    for _ in range(MENU.max_repeats):
        s, a = next_step(s, "*")
        assert isinstance(a, Ask)
    s, r = next_step(s, "*")
    assert isinstance(r, Route) and r.by_default and r.queue == "enquiry"
    assert r.reason == "too_many_repeats" and "重听" in r.note


def test_unknown_key_replays_menu_then_enquiry_with_note():
    s, a = begin(MENU, KNOWN)
    s, a = next_step(s, "9")
    assert names(a) == ["invalid", "menu"] and a.reason == "invalid"
    s, a = next_step(s, "#")
    assert names(a) == ["invalid", "menu"]
    s, r = next_step(s, "8")
    assert isinstance(r, Route)
    assert (r.queue, r.by_default, r.reason, r.customer_id) == ("enquiry", True, "invalid_input", "3100012345")
    assert r.note == "语音导航3次按键无效，默认转咨询查询 / invalid keys after 3 tries, routed to enquiry"


def test_no_key_replays_menu_then_enquiry_with_note():
    s, a = begin(MENU, KNOWN)
    s, a = next_step(s, None)
    assert names(a) == ["no_input", "menu"] and a.reason == "no_input"
    s, a = next_step(s, None)
    s, r = next_step(s, None)
    assert isinstance(r, Route) and r.by_default and r.reason == "no_input" and r.queue == "enquiry"
    assert r.note.startswith("语音导航3次未按键")
    assert s.inputs == ("-", "-", "-")


def test_pound_alone_in_menu_is_a_wrong_key():
    s, a = begin(MENU, KNOWN)
    s, a = next_step(s, "")
    assert a.reason == "invalid"


def test_mixed_mistakes_then_a_valid_key():
    s, a = begin(MENU, KNOWN)
    s, a = next_step(s, None)
    s, a = next_step(s, "7")
    s, r = next_step(s, "1")
    assert r.queue == "repair" and not r.by_default and r.note is None


def test_outage_announcement_first_then_1_goes_to_menu():
    s, a = begin(MENU, OUTAGE)
    assert names(a) == ["greeting", "announcement", "outage_other"] and a.phase == "outage"
    assert a.prompts[1].kind == "announcement" and a.prompts[1].text == OUTAGE.announcement
    assert a.max_digits == 1
    s, a = next_step(s, "1")
    assert names(a) == ["menu"] and a.phase == "menu"
    s, r = next_step(s, "1")
    assert (r.queue, r.customer_id, r.outage_id, r.by_default) == ("repair", "3100012345", "OUT-20261122-0042", False)


def test_outage_announcement_then_nothing_goes_to_menu():
    s, a = begin(MENU, OUTAGE)
    s, a = next_step(s, None)
    assert names(a) == ["menu"]
    # the silence after the announcement did not cost a menu try
    s, a = next_step(s, None)
    s, a = next_step(s, None)
    assert isinstance(a, Ask)
    s, r = next_step(s, None)
    assert r.by_default and r.outage_id == "OUT-20261122-0042"


def test_outage_star_repeats_announcement():
    s, a = begin(MENU, OUTAGE)
    s, a = next_step(s, "*")
    assert names(a) == ["announcement", "outage_other"] and a.reason == "repeat"


def test_no_outage_no_announcement():
    s, a = begin(MENU, KNOWN)
    assert all(p.kind == "static" for p in a.prompts) and "announcement" not in names(a)


def test_unknown_caller_is_asked_for_account_then_identified_with_outage():
    s, a = begin(MENU, Decision())
    assert names(a) == ["greeting", "account_request"] and a.phase == "account"
    assert a.max_digits == MENU.account.max_digits and a.timeout_ms == MENU.account.timeout_ms
    s, a = next_step(s, "3100012345")
    assert a == LookupAccount("3100012345")
    s, a = account_resolved(s, OUTAGE)
    assert names(a) == ["announcement", "outage_other"]      # no second greeting
    s, a = next_step(s, "1")
    s, r = next_step(s, "3")
    assert (r.queue, r.customer_id, r.outage_id, r.note) == ("enquiry", "3100012345", "OUT-20261122-0042", None)


def test_account_tries_are_limited_then_menu_with_note():
    s, a = begin(MENU, None)
    s, a = next_step(s, "12")                          # too short
    assert names(a) == ["account_invalid"] and a.reason == "retry"
    s, a = next_step(s, "3100099999")
    assert isinstance(a, LookupAccount)
    s, a = account_resolved(s, Decision())             # not found
    assert names(a) == ["account_invalid"]
    s, a = next_step(s, None)                          # nothing: the 3rd failure
    assert names(a) == ["menu"] and a.phase == "menu"
    s, r = next_step(s, "1")
    assert r.queue == "repair" and r.customer_id is None and not r.by_default
    assert r.note == MENU.notes["account_not_found"]


def test_account_no_input_re_asks_the_request():
    s, a = begin(MENU, None)
    s, a = next_step(s, None)
    assert names(a) == ["account_request"]


def test_account_pound_alone_skips_to_menu():
    s, a = begin(MENU, None)
    s, a = next_step(s, "")
    assert names(a) == ["menu"]
    s, r = next_step(s, "2")
    assert r.queue == "complaint" and r.note is None


def test_account_star_is_not_an_account_number():
    s, a = begin(MENU, None)
    s, a = next_step(s, "31000*1234")
    assert names(a) == ["account_invalid"]


def test_lookup_failure_skips_account_question():
    s, a = begin(MENU, Decision(), ask_account=False)
    assert names(a) == ["greeting", "menu"]


def test_default_route_note_accumulates_with_account_note():
    s, a = begin(MENU, None)
    for _ in range(3):
        s, a = next_step(s, None)
    for _ in range(3):
        s, a = next_step(s, None)
    assert isinstance(a, Route) and a.by_default
    assert a.note.split("；")[0] == MENU.notes["account_not_found"]


def test_as_decision_accepts_duck_typed_results():
    class Customer:
        account_no = "3100012345"
        id = 17

    class Outage:
        id = "OUT-1"

    class IvrDecision:
        customer = Customer()
        outage = Outage()
        announcement_text = "停电公告"

    d = as_decision(IvrDecision())
    assert d == Decision("3100012345", "OUT-1", "停电公告")
    assert as_decision(None) == Decision()


def test_announcement_that_already_says_press_1_is_not_followed_by_outage_other():
    text = "您好,您所在的东街台区因10千伏城关线故障停电,预计18时恢复供电。如您反映的是其他问题,请按1。"
    s, a = begin(MENU, Decision("3100012345", "TD20261122-0001", text))
    assert names(a) == ["greeting", "announcement"] and a.max_digits == 1
    s, a = next_step(s, "1")
    assert names(a) == ["menu"]


def test_as_decision_reads_the_registry_decision_shape():
    class Outage:
        id = 7
        outage_no = "TD20261122-0042"

    class IvrDecision:                      # ivr.outages.IvrDecision's fields
        customer_id = 17                    # database id: not what CUSTOMER_ID carries
        account_no = "3100012345"
        outage = Outage()
        outage_no = "TD20261122-0042"
        announcement = "停电公告"

    class Unknown:
        customer_id = None
        account_no = ""
        outage = None
        outage_no = ""
        announcement = ""

    assert as_decision(IvrDecision()) == Decision("3100012345", "TD20261122-0042", "停电公告")
    assert as_decision(Unknown()) == Decision()

"""The IVR menu as data and the IVR dialogue as a pure state machine.

Pure: stdlib only (``tomllib``), no I/O besides reading the menu file.

The dialogue, driven by :mod:`ivr.agi`::

    state, action = begin(menu, decision)
    while not isinstance(action, Route):
        if isinstance(action, Ask):            # play prompts, read DTMF
            state, action = next_step(state, digits)   # digits: str | None
        elif isinstance(action, LookupAccount):  # caller typed an account number
            state, action = account_resolved(state, await decide(None, action.account_no))

Input convention for ``next_step``: ``None`` means no key at all (GET DATA
timed out with nothing typed); ``""`` means the caller pressed ``#`` alone;
otherwise the DTMF digits typed (``"1"``, ``"*"``, ``"3100012345"``).

Phases:

* ``outage``  -- greeting, the outage announcement, "if your problem is
  something else, press 1"; ``1``, nothing, or any other key -> the menu;
  ``*`` repeats the announcement (capped by ``max_repeats``).
* ``account`` -- withheld/unknown caller (no customer found): ask for the
  account number (户号) by DTMF, ``account.tries`` attempts; ``#`` alone skips.
  A recognised account may lead to the outage phase.
* ``menu``    -- 1 repair, 2 complaint, 3 enquiry, 0 agent, * repeat; no key
  or a wrong key replays the menu up to ``tries`` attempts, then the call is
  routed to ``default_queue`` with a note (``IVR_NOTE``).
"""
from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, Mapping

__all__ = [
    "DEFAULT_MENU_PATH", "MenuError", "KeyOption", "AccountSettings", "Menu",
    "load_menu", "parse_menu", "Decision", "as_decision",
    "Say", "Ask", "LookupAccount", "Route", "Callback", "Action", "IvrState",
    "begin", "next_step", "account_resolved", "callback_failed", "CALLBACK_KEY", "SURGE_PROMPTS",
]

DEFAULT_MENU_PATH = Path(__file__).with_name("menu.toml")

DTMF_KEYS = frozenset("0123456789*")     # '#' ends GET DATA, it cannot be a menu key
REQUIRED_PROMPTS = ("greeting", "menu", "invalid", "no_input", "outage_other",
                    "outage_generic", "account_request", "account_invalid")
REQUIRED_NOTES = ("no_input", "invalid_input", "too_many_repeats", "account_not_found")
# surge mode (queues/ issue 6): optional in a menu file, these are the defaults
SURGE_PROMPTS = {
    "surge_notice": "当前来电较多。如您是反映停电，我们已经知晓，抢修人员正在处理，请您耐心等待恢复供电。",
    "surge_offer": "目前排队等候的客户较多。如需我们稍后给您回电，请按9；继续等待人工服务，请按其他键。",
    "callback_done": "已为您登记回拨，我们会尽快给您回电，请挂机。",
    "callback_failed": "回拨登记未成功，正在为您转接人工服务，请稍候。",
}
CALLBACK_KEY = "9"
MAX_PROMPT_CHARS = 500
_QUEUE_NAME = re.compile(r"[a-z][a-z0-9_-]{0,39}\Z")
_TOP_LEVEL = {"version", "queues", "tries", "max_repeats", "timeout_ms", "default_queue",
              "keys", "account", "notes", "prompts"}


class MenuError(ValueError):
    """The menu file is wrong; the message names the bad entry."""


# -- the menu ------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class KeyOption:
    key: str
    action: Literal["route", "repeat"]
    label: str
    queue: str | None = None


@dataclass(frozen=True, slots=True)
class AccountSettings:
    enabled: bool = True
    min_digits: int = 6
    max_digits: int = 12
    tries: int = 3
    timeout_ms: int = 10000


@dataclass(frozen=True, eq=False)
class Menu:
    queues: tuple[str, ...]
    tries: int
    max_repeats: int
    timeout_ms: int
    default_queue: str
    keys: Mapping[str, KeyOption]
    account: AccountSettings
    notes: Mapping[str, str]
    prompts: Mapping[str, str]
    version: int = 1

    def prompt(self, name: str) -> str:
        if name not in self.prompts and name in SURGE_PROMPTS:
            return SURGE_PROMPTS[name]
        return self.prompts[name]

    def static_prompts(self) -> dict[str, str]:
        """Every fixed prompt text, by name (what ``build-prompts`` generates)."""
        return dict(self.prompts)


def load_menu(path: str | Path | None = None) -> Menu:
    """Read and validate a menu file (``ivr/menu.toml`` by default)."""
    p = Path(path) if path is not None else DEFAULT_MENU_PATH
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise MenuError(f"{p}: cannot read the menu file: {e}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise MenuError(f"{p}: not UTF-8: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise MenuError(f"{p}: not valid TOML: {e}") from None
    try:
        return parse_menu(data)
    except MenuError as e:
        raise MenuError(f"{p}: {e}") from None


def parse_menu(data: Mapping[str, Any]) -> Menu:
    """Validate a parsed menu document; :class:`MenuError` names the bad entry."""
    if not isinstance(data, Mapping):
        raise MenuError("the menu must be a table")
    unknown = sorted(set(data) - _TOP_LEVEL)
    if unknown:
        raise MenuError(f"unknown entry {unknown[0]!r} (allowed: {', '.join(sorted(_TOP_LEVEL))})")

    version = _int(data, "version", 1, lo=1, hi=1)
    queues_raw = data.get("queues")
    if not isinstance(queues_raw, list) or not queues_raw:
        raise MenuError("'queues' must be a non-empty list of queue names")
    for i, q in enumerate(queues_raw):
        if not isinstance(q, str) or not _QUEUE_NAME.match(q):
            raise MenuError(f"queues[{i}] = {q!r} is not a queue name (lower-case letters, digits, - _)")
    queues = tuple(queues_raw)
    if len(set(queues)) != len(queues):
        raise MenuError("'queues' lists a queue twice")

    tries = _int(data, "tries", 3, lo=1, hi=10)
    max_repeats = _int(data, "max_repeats", 5, lo=0, hi=20)
    timeout_ms = _int(data, "timeout_ms", 5000, lo=1000, hi=60000)
    default_queue = data.get("default_queue", "enquiry")
    if default_queue not in queues:
        raise MenuError(f"default_queue = {default_queue!r} is not one of queues {list(queues)}")

    keys_raw = data.get("keys")
    if not isinstance(keys_raw, Mapping) or not keys_raw:
        raise MenuError("'keys' must be a table of DTMF keys")
    keys: dict[str, KeyOption] = {}
    for key, spec in keys_raw.items():
        where = f"keys.{key!r}"
        if key not in DTMF_KEYS:
            raise MenuError(f"{where}: not a menu key (one of 0-9 or *; # ends input)")
        if not isinstance(spec, Mapping):
            raise MenuError(f"{where}: must be a table like {{ action = \"route\", queue = \"repair\" }}")
        extra = sorted(set(spec) - {"action", "queue", "label"})
        if extra:
            raise MenuError(f"{where}: unknown field {extra[0]!r}")
        action = spec.get("action")
        label = spec.get("label", "")
        if not isinstance(label, str):
            raise MenuError(f"{where}.label must be text")
        if action == "route":
            q = spec.get("queue")
            if q not in queues:
                raise MenuError(f"{where}.queue = {q!r} is not one of queues {list(queues)}")
            keys[key] = KeyOption(key, "route", label, q)
        elif action == "repeat":
            if "queue" in spec:
                raise MenuError(f"{where}: a 'repeat' key has no queue")
            keys[key] = KeyOption(key, "repeat", label)
        else:
            raise MenuError(f"{where}.action = {action!r} (must be 'route' or 'repeat')")
    if not any(o.action == "route" for o in keys.values()):
        raise MenuError("'keys' routes nowhere: at least one key needs action = 'route'")

    acc = data.get("account", {})
    if not isinstance(acc, Mapping):
        raise MenuError("'account' must be a table")
    extra = sorted(set(acc) - {"enabled", "min_digits", "max_digits", "tries", "timeout_ms"})
    if extra:
        raise MenuError(f"account: unknown field {extra[0]!r}")
    enabled = acc.get("enabled", True)
    if not isinstance(enabled, bool):
        raise MenuError("account.enabled must be true or false")
    account = AccountSettings(
        enabled=enabled,
        min_digits=_int(acc, "min_digits", 6, lo=1, hi=20, prefix="account."),
        max_digits=_int(acc, "max_digits", 12, lo=1, hi=20, prefix="account."),
        tries=_int(acc, "tries", 3, lo=1, hi=10, prefix="account."),
        timeout_ms=_int(acc, "timeout_ms", 10000, lo=1000, hi=60000, prefix="account."),
    )
    if account.min_digits > account.max_digits:
        raise MenuError(f"account.min_digits ({account.min_digits}) > account.max_digits ({account.max_digits})")

    notes = _texts(data, "notes", REQUIRED_NOTES)
    prompts = _texts(data, "prompts", REQUIRED_PROMPTS)
    return Menu(queues=queues, tries=tries, max_repeats=max_repeats, timeout_ms=timeout_ms,
                default_queue=default_queue, keys=MappingProxyType(keys), account=account,
                notes=MappingProxyType(notes), prompts=MappingProxyType(prompts), version=version)


def _int(d: Mapping[str, Any], name: str, default: int, *, lo: int, hi: int, prefix: str = "") -> int:
    v = d.get(name, default)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise MenuError(f"{prefix}{name} = {v!r} (must be a whole number {lo}..{hi})")
    return v


def _texts(data: Mapping[str, Any], section: str, required: tuple[str, ...]) -> dict[str, str]:
    t = data.get(section)
    if not isinstance(t, Mapping):
        raise MenuError(f"'{section}' must be a table")
    for name in required:
        if name not in t:
            raise MenuError(f"{section}.{name} is missing")
    out: dict[str, str] = {}
    for name, text in t.items():
        if not isinstance(text, str) or not text.strip():
            raise MenuError(f"{section}.{name} must be non-empty text")
        if len(text) > MAX_PROMPT_CHARS:
            raise MenuError(f"{section}.{name} is longer than {MAX_PROMPT_CHARS} characters")
        if any(ord(c) < 32 for c in text):
            raise MenuError(f"{section}.{name} contains a control character")
        out[name] = text.strip()
    return out


# -- what the lookup says about the caller ---------------------------------------

@dataclass(frozen=True, slots=True)
class Decision:
    """Customer + outage for one caller.

    ``customer_id`` is the account number (户号) the CTI side looks up
    (``CUSTOMER_ID``); ``announcement`` is the text to speak, ``None`` when
    no outage covers the caller.
    """

    customer_id: str | None = None
    outage_id: str | None = None
    announcement: str | None = None

    @property
    def identified(self) -> bool:
        return bool(self.customer_id)


def as_decision(obj: Any) -> Decision:
    """Accept a :class:`Decision`, ``None``, or a duck-typed decision such as
    ``ivr.outages.IvrDecision`` (``account_no`` -- the 户号, not the database
    id --, ``outage_no`` / ``outage.outage_no``, ``announcement``), or one with
    ``customer.account_no``, ``outage_id``, ``announcement_text``."""
    if obj is None:
        return Decision()
    if isinstance(obj, Decision):
        return obj
    customer = getattr(obj, "customer", None)
    if hasattr(obj, "account_no"):             # ivr.outage_repo.IvrDecision: "" = unknown
        account = obj.account_no
    elif customer is not None:
        account = getattr(customer, "account_no", None)
    else:
        account = getattr(obj, "customer_id", None)
    outage = getattr(obj, "outage", None)
    outage_id = getattr(obj, "outage_id", None) or getattr(obj, "outage_no", None)
    if not outage_id and outage is not None:
        outage_id = (getattr(outage, "outage_no", None) or getattr(outage, "outage_id", None)
                     or getattr(outage, "code", None) or getattr(outage, "id", None))
    text = getattr(obj, "announcement", None)
    if text is None:
        text = getattr(obj, "announcement_text", None)
    if callable(text):
        text = text()
    return Decision(
        customer_id=str(account) if account not in (None, "") else None,
        outage_id=str(outage_id) if outage_id not in (None, "") else None,
        announcement=text if isinstance(text, str) and text.strip() else None,
    )


# -- actions ----------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Say:
    """One prompt to play.  ``kind`` is ``"static"`` (a menu prompt, named
    ``name``) or ``"announcement"`` (outage text; falls back to
    ``prompts.outage_generic`` when TTS fails)."""

    text: str
    name: str
    kind: Literal["static", "announcement"] = "static"


@dataclass(frozen=True, slots=True)
class Ask:
    """Play ``prompts`` (all but the last with STREAM FILE, the last with
    GET DATA) and read up to ``max_digits`` keys."""

    prompts: tuple[Say, ...]
    max_digits: int
    timeout_ms: int
    phase: str
    reason: str          # start / repeat / invalid / no_input / retry / continue


@dataclass(frozen=True, slots=True)
class LookupAccount:
    """Look up the account number the caller typed (``decide(None, account_no)``),
    then call :func:`account_resolved`."""

    account_no: str


@dataclass(frozen=True, slots=True)
class Route:
    """End of the IVR: set the channel variables and return to the dialplan."""

    queue: str                   # IVR_CHOICE
    customer_id: str | None      # __CUSTOMER_ID
    outage_id: str | None        # __OUTAGE_ID
    note: str | None             # __IVR_NOTE (routed by default / caller not identified)
    by_default: bool
    reason: str                  # key / no_input / invalid_input / too_many_repeats
    key: str | None = None


@dataclass(frozen=True, slots=True)
class Callback:
    """Surge mode: the caller pressed 9 for a callback instead of waiting.
    Create the callback work order, then play ``callback_done`` (or
    ``callback_failed`` and route to ``queue`` as a :class:`Route`)."""

    queue: str                   # the menu choice: the work order's type
    customer_id: str | None
    outage_id: str | None
    key: str | None = None


Action = Ask | LookupAccount | Route | Callback


@dataclass(frozen=True)
class IvrState:
    menu: Menu
    decision: Decision = field(default_factory=Decision)
    phase: str = "start"          # outage / account / account_lookup / menu / done
    tries: int = 0                # failed attempts in the current phase
    repeats: int = 0
    greeted: bool = False
    notes: tuple[str, ...] = ()
    inputs: tuple[str, ...] = ()  # what was typed, for the log ('-' = no key)
    surge: bool = False           # surge mode: notice first, callback offered
    chosen: str | None = None     # surge: the queue chosen before the callback offer
    chosen_key: str | None = None


# -- transitions ------------------------------------------------------------------

def begin(menu: Menu, decision: Decision | Any = None, *,
          ask_account: bool = True, surge: bool = False) -> tuple[IvrState, Action]:
    """First action for a caller whose lookup gave ``decision``.

    ``ask_account=False`` skips the account-number phase for an unidentified
    caller (use it when the lookup itself failed: asking would not help).

    ``surge=True`` (surge mode, see ``queues/``): every caller hears the
    ``surge_notice`` (outage first) right after the greeting, and after
    choosing a queue is offered a callback (``9``) instead of waiting."""
    d = as_decision(decision)
    state = IvrState(menu=menu, decision=d, surge=surge)
    if d.announcement:
        return _outage(state, "start")
    if not d.identified and menu.account.enabled and ask_account:
        return _account(state, "start", (Say(menu.prompt("account_request"), "account_request"),))
    return _menu(state, "start")


def next_step(state: IvrState, digits: str | None) -> tuple[IvrState, Action]:
    """The caller typed ``digits`` (``None``: no key) in answer to the last :class:`Ask`."""
    menu = state.menu
    state = replace(state, inputs=state.inputs + ("-" if digits is None else (digits or "#"),))
    if state.phase == "outage":
        if digits is not None and digits[:1] == "*" and _repeat_key(menu, "*"):
            if state.repeats >= menu.max_repeats:
                return _menu(replace(state, repeats=0), "continue")
            return _outage(replace(state, repeats=state.repeats + 1), "repeat")
        # 1, nothing, or anything else: on to the menu
        return _menu(replace(state, repeats=0), "continue")

    if state.phase == "account":
        acc = menu.account
        if digits == "":
            return _menu(state, "continue")              # '#' alone: skip
        if digits is not None and digits.isascii() and digits.isdigit() \
                and acc.min_digits <= len(digits) <= acc.max_digits:
            return replace(state, phase="account_lookup"), LookupAccount(digits)
        return _account_failed(state, "no_input" if digits is None else "invalid")

    if state.phase == "callback_offer":
        d = state.decision
        if (digits or "")[:1] == CALLBACK_KEY:
            return replace(state, phase="callback"), Callback(
                queue=state.chosen or menu.default_queue, customer_id=d.customer_id, outage_id=d.outage_id,
                key=state.chosen_key)
        return _route(state, state.chosen or menu.default_queue, "key", key=state.chosen_key)

    if state.phase == "menu":
        key = (digits or "")[:1]
        opt = menu.keys.get(key) if digits else None
        if opt is not None and opt.action == "route":
            if state.surge:
                state = replace(state, phase="callback_offer", chosen=opt.queue, chosen_key=key)
                return state, Ask((Say(menu.prompt("surge_offer"), "surge_offer"),), max_digits=1,
                                  timeout_ms=menu.timeout_ms, phase="callback_offer", reason="surge")
            return _route(state, opt.queue, "key", key=key)   # type: ignore[arg-type]
        if opt is not None and opt.action == "repeat":
            if state.repeats >= menu.max_repeats:
                return _route(state, menu.default_queue, "too_many_repeats",
                              note=menu.notes["too_many_repeats"])
            return _menu(replace(state, repeats=state.repeats + 1), "repeat")
        kind = "no_input" if digits is None else "invalid_input"
        tries = state.tries + 1
        if tries >= menu.tries:
            note = menu.notes[kind].replace("{tries}", str(tries))
            return _route(replace(state, tries=tries), menu.default_queue, kind, note=note)
        sorry = Say(menu.prompt("no_input" if digits is None else "invalid"),
                    "no_input" if digits is None else "invalid")
        return _menu(replace(state, tries=tries), "no_input" if digits is None else "invalid", (sorry,))

    raise ValueError(f"next_step: nothing is being asked in phase {state.phase!r}")


def account_resolved(state: IvrState, decision: Decision | Any) -> tuple[IvrState, Action]:
    """The lookup of the typed account number gave ``decision``."""
    if state.phase != "account_lookup":
        raise ValueError(f"account_resolved: no account lookup pending (phase {state.phase!r})")
    d = as_decision(decision)
    if d.identified:
        state = replace(state, decision=d, tries=0)
        if d.announcement:
            return _outage(state, "start")
        return _menu(state, "continue")
    return _account_failed(replace(state, phase="account"), "not_found")


# -- helpers ----------------------------------------------------------------------

def _repeat_key(menu: Menu, key: str) -> bool:
    opt = menu.keys.get(key)
    return opt is not None and opt.action == "repeat"


def _greet(state: IvrState, prompts: tuple[Say, ...]) -> tuple[IvrState, tuple[Say, ...]]:
    if state.greeted:
        return state, prompts
    first: tuple[Say, ...] = (Say(state.menu.prompt("greeting"), "greeting"),)
    if state.surge:   # outage first, to every caller
        first += (Say(state.menu.prompt("surge_notice"), "surge_notice"),)
    return replace(state, greeted=True), first + prompts


def callback_failed(state: IvrState) -> tuple[IvrState, Route]:
    """The callback order could not be created: the caller waits in the
    queue after all (``callback_failed`` is played by the caller)."""
    return _route(state, state.chosen or state.menu.default_queue, "callback_failed",
                  key=state.chosen_key)


_PRESS_1 = re.compile(r"请按\s*(1|一)")


def _outage(state: IvrState, reason: str) -> tuple[IvrState, Action]:
    m = state.menu
    text = state.decision.announcement
    assert text
    prompts: tuple[Say, ...] = (Say(text, "announcement", "announcement"),)
    # ivr.outages.announcement_text already ends with "如您反映的是其他问题,请按1。":
    # do not say it twice
    if not _PRESS_1.search(text):
        prompts += (Say(m.prompt("outage_other"), "outage_other"),)
    state, prompts = _greet(replace(state, phase="outage", tries=0), prompts)
    return state, Ask(prompts, max_digits=1, timeout_ms=m.timeout_ms, phase="outage", reason=reason)


def _account(state: IvrState, reason: str, prompts: tuple[Say, ...]) -> tuple[IvrState, Action]:
    acc = state.menu.account
    state, prompts = _greet(replace(state, phase="account"), prompts)
    return state, Ask(prompts, max_digits=acc.max_digits, timeout_ms=acc.timeout_ms,
                      phase="account", reason=reason)


def _account_failed(state: IvrState, why: str) -> tuple[IvrState, Action]:
    m = state.menu
    tries = state.tries + 1
    if tries >= m.account.tries:
        state = replace(state, tries=0, notes=state.notes + (m.notes["account_not_found"],))
        return _menu(state, "continue")
    if why == "no_input":
        prompts = (Say(m.prompt("account_request"), "account_request"),)
    else:
        prompts = (Say(m.prompt("account_invalid"), "account_invalid"),)
    return _account(replace(state, tries=tries), "retry", prompts)


def _menu(state: IvrState, reason: str, before: tuple[Say, ...] = ()) -> tuple[IvrState, Action]:
    m = state.menu
    if state.phase != "menu":
        state = replace(state, phase="menu", tries=0, repeats=0)
    state, prompts = _greet(state, before + (Say(m.prompt("menu"), "menu"),))
    return state, Ask(prompts, max_digits=1, timeout_ms=m.timeout_ms, phase="menu", reason=reason)


def _route(state: IvrState, queue: str, reason: str, *, key: str | None = None,
           note: str | None = None) -> tuple[IvrState, Route]:
    notes = state.notes + ((note,) if note else ())
    d = state.decision
    return replace(state, phase="done", notes=notes), Route(
        queue=queue, customer_id=d.customer_id, outage_id=d.outage_id,
        note="；".join(notes) if notes else None, by_default=reason != "key", reason=reason, key=key)

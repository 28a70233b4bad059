"""The project's own PBX simulator: an AMI server over real TCP that plays
queue calls the way Asterisk 22 puts them on the wire.

Every frame is generated from the per-channel field layout seen in the real
Asterisk 22.10.1 captures (``tests/fixtures/ami-traces/asterisk-22``, traces
01, 02 and 03): the same event names, field names, field order, repeated
``ChanVariable`` headers and the same relative order of events within a call.
The simulated customer call is, like in the captures, an originated
``Local/<exten>@hotline`` channel pair whose ``;2`` half runs the dialplan and
sits in ``Queue()``; agents are queue members ``Local/<ext>@agents``.

Emitted event types (a faithful subset of the capture; DeviceStateChange,
Newexten, LocalBridge, NewConnectedLine, (Soft)HangupRequest,
HangupHandler* and MusicOnHold* are left out):

    FullyBooted, SuccessfulAuth, Newchannel, NewCallerid, Newstate, VarSet
    (IVR_CHOICE, __IVR_CHOICE, __CUSTOMER_ID, __OUTAGE_ID, MIXMONITOR_FILENAME),
    DialBegin, DialState, DialEnd, QueueCallerJoin, AgentCalled,
    QueueMemberStatus, AgentRingNoAnswer, MixMonitorStart, QueueCallerLeave,
    AgentConnect, BridgeCreate, BridgeEnter, BridgeLeave, AgentComplete,
    MixMonitorStop, BridgeDestroy, Hangup, QueueCallerAbandon

The IVR over FastAGI: with ``agi_host``/``agi_port`` set, a call with
``via_ivr=True`` runs a real FastAGI session against that server
(:class:`cti.agi_peer.AsteriskAgiPeer`, playing Asterisk's side as in traces
01 and 11): the caller presses the keys of its :class:`CallSpec` (or hangs up
mid-prompt), and the queue, CUSTOMER_ID and OUTAGE_ID are what the IVR set.
On AMI this adds AGIExecStart/AGIExecEnd for every command, DTMFBegin/DTMFEnd
for the keys and VarSet for every SET VARIABLE (``__IVR_NOTE`` included),
field for field as in trace 01.  An unreachable or failing AGI server routes
the call to ``enquiry`` with ``__IVR_NOTE=ivr-unavailable``, as the
dialplan's fallback (asterisk-conf/extensions.conf) does.  Without an AGI
server the IVR is skipped and the CallSpec's values are used, as before.

Optionally (``event_filters``, off by default) the sessions get only the
events that the AMI user's manager.conf ``eventfilter`` lines let through,
with Asterisk's rules (:class:`AmiEventFilter`, :func:`load_manager_eventfilters`).

Optionally (``cdr_sink``, off by default) every finished call also posts
the CDR rows Asterisk's cdr_pgsql would write (:class:`CdrPgsqlWriter`
inserts them into the ``cdr`` table); nothing on AMI changes.

Durations are virtual seconds; ``speed`` compresses them (``speed=100`` runs
a 5 s talk in 50 ms) while HoldTime/RingTime/TalkTime keep virtual values.

Client input is treated as hostile: frames are parsed with
:class:`cti.frame.FrameReader` (bounded size, junk lines skipped), a frame
without ``Action`` gets ``Response: Error``, and nothing a client sends can
raise out of the session handler.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
import os
import random
import re
import secrets
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Awaitable, Callable, Iterable, Mapping, Sequence

from cti.agi_peer import AgiTranscript, AsteriskAgiPeer, agi_environment
from cti.frame import FrameReader

log = logging.getLogger(__name__)

BANNER = b"Asterisk Call Manager/11.0.0\r\n"
UNKNOWN = "<unknown>"
DEFAULT_CHANNEL_VARS = ("IVR_CHOICE", "CUSTOMER_ID", "OUTAGE_ID")
DEFAULT_RECORDINGS_DIR = "/var/spool/asterisk/recordings"
STATE_DESC = {0: "Down", 4: "Ring", 5: "Ringing", 6: "Up"}
CAUSE_TXT = {0: "Unknown", 16: "Normal Clearing", 19: "User alerting, no answer",
             26: "Answered elsewhere"}
# device states of QueueMember/QueueMemberStatus (AST_DEVICE_*)
DEV_NOT_INUSE, DEV_INUSE, DEV_RINGING = 1, 2, 6
# app_queue walks its queue container in hash order, not config order; the
# captures show repair, enquiry, complaint.  Unknown queues follow, as given.
QUEUE_HASH_ORDER = ("repair", "enquiry", "complaint")
MAX_CLIENT_FRAME = 64 * 1024
SEND_QUEUE_MAX = 10_000

# member ;2 priorities in [agents] of the capture dialplan
_PRIO_ANSWER = 9        # Answer()
_PRIO_TALK_CUT = 10     # Wait(TALKSECS) cut by the caller
_PRIO_AGENT_HANGUP = 11  # Hangup() after talking
_PRIO_RING_CUT = 8      # Wait(RINGSECS) cut (answered elsewhere)
_PRIO_NOANSWER = 13     # Wait(120) in the noanswer branch

# the IVR (ivr/menu.toml): the key for each queue; the dialplan's fallback queue
IVR_KEYS = {"repair": "1", "complaint": "2", "enquiry": "3"}
IVR_FALLBACK_QUEUE = "enquiry"


@dataclass(frozen=True, slots=True)
class QueueConfig:
    """How a simulated queue behaves.

    ``recording``: ``caller`` (app_queue monitor-format: MixMonitor on the
    caller channel, trace 01), ``member`` (membergosub starts MixMonitor on
    the member channel, trace 02) or ``none``.
    """

    strategy: str = "rrmemory"  # rrmemory | ringall
    recording: str = "caller"
    ring_timeout_s: float = 15.0  # member timeout for no-answer rings
    retry_s: float = 2.0


DEFAULT_QUEUES: dict[str, QueueConfig] = {
    "repair": QueueConfig("rrmemory", "caller"),
    "complaint": QueueConfig("ringall", "member"),
    "enquiry": QueueConfig("rrmemory", "caller"),
}

DEFAULT_AGENTS: dict[str, dict[str, int]] = {
    "1001": {"repair": 0, "enquiry": 1},
    "1002": {"repair": 0, "complaint": 0},
    "1003": {"complaint": 0, "enquiry": 0},
    "1004": {"enquiry": 0},
}


@dataclass(frozen=True, slots=True)
class CallSpec:
    """One customer call through the IVR into a queue.

    outcome:
      * ``answered`` – ``agent`` answers after ``ring_s`` and hangs up after
        ``talk_s`` (AgentComplete Reason agent);
      * ``caller_hangup`` – as answered, but the caller ends the call after
        ``talk_s`` (Reason caller);
      * ``abandoned`` – nobody answers; each ring lasts ``ring_s`` and ends
        with AgentRingNoAnswer; the caller hangs up ``wait_s`` after joining
        the queue (QueueCallerAbandon HoldTime), cancelling a ring in progress.

    ``ring_order``: the members rung, in order (default: just ``agent``).  In
    a ringall queue they ring together; in an rrmemory queue one after another
    (members before ``agent`` ring the queue's ``ring_timeout_s`` unanswered).
    ``wait_s`` for answered calls is the time in queue before the first ring.
    ``via_ivr``: enter through ``Local/ivr@hotline`` (FastAGI menu) instead
    of the direct ``Local/<queue>@hotline`` entry.

    With a FastAGI server configured on the simulator (``agi_port``), a
    ``via_ivr`` call really goes through the IVR, and the IVR decides the
    queue, CUSTOMER_ID and OUTAGE_ID (``customer_id``/``outage_id`` here are
    then ignored; ``ivr_choice`` is what the caller means to choose):

    * ``dtmf``: what the caller types for the first ``GET DATA`` prompts, in
      order (``None``: no key, the prompt times out; ``""``: ``#`` alone);
      afterwards every one-key prompt gets the key of ``ivr_choice`` (repair
      1, complaint 2, enquiry 3) and an account-number prompt gets
      ``account_no`` (default ``customer_id``; empty: ``#``, skip);
    * ``ivr_hangup_at``: the caller hangs up during the n-th prompt (1-based,
      STREAM FILE and GET DATA counted; 0: never) -- no queue, outcome
      ``ivr_hangup``.
    """

    caller_num: str
    caller_name: str
    ivr_choice: str
    customer_id: str = ""
    outage_id: str = ""
    agent: str = "1001"
    outcome: str = "answered"
    ring_s: float = 2.0
    talk_s: float = 5.0
    wait_s: float = 0.0
    ring_order: tuple[str, ...] = ()
    via_ivr: bool = True
    ivr_s: float = 0.0
    dtmf: tuple[str | None, ...] = ()
    account_no: str | None = None
    ivr_hangup_at: int = 0


@dataclass(frozen=True, slots=True)
class IvrOutcome:
    """What the FastAGI IVR did with a call (``PlacedCall.ivr``)."""

    agi_status: str            # SUCCESS | HANGUP | FAILURE (Asterisk's AGISTATUS)
    queue: str                 # "" when the caller hung up in the IVR
    customer_id: str
    outage_id: str
    note: str
    transcript: AgiTranscript

    @property
    def hung_up(self) -> bool:
        return self.agi_status == "HANGUP"


@dataclass(frozen=True, slots=True)
class PlacedCall:
    """What :meth:`PbxSimulator.place_call` returns once the call has ended."""

    uniqueid: str  # the queued (;2) caller channel
    linkedid: str
    channel: str
    queue: str
    outcome: str   # answered | abandoned | caller_hangup | ivr_hangup
    agent: str | None  # who talked to the caller, if anyone
    ivr: IvrOutcome | None = None  # set when the call went through the FastAGI IVR


@dataclass(frozen=True, slots=True)
class IvrMix:
    """How random callers (:meth:`PbxSimulator.run_traffic`) behave in the IVR.

    Shares of calls: ``wrong_key`` press a wrong key first, ``no_key`` let
    the first prompt time out, ``hangup`` hang up during one of the first
    ``hangup_within`` prompts, ``withheld`` call with a withheld number; of
    the withheld callers, ``withheld_account`` type their account number
    (the others press ``#``).  The queue mix is ``run_traffic``'s ``mix``.
    """

    wrong_key: float = 0.1
    no_key: float = 0.05
    hangup: float = 0.05
    hangup_within: int = 3
    withheld: float = 0.05
    withheld_account: float = 0.7


OUTCOMES = ("answered", "abandoned", "caller_hangup")


class _Chan:
    __slots__ = ("name", "state", "cid_num", "cid_name", "con_num", "con_name",
                 "context", "exten", "priority", "uniqueid", "linkedid", "vars",
                 "created", "app", "appdata", "bridge", "allvars")

    def __init__(self, name: str, state: int, context: str, exten: str,
                 uniqueid: str, linkedid: str) -> None:
        self.name = name
        self.state = state
        self.cid_num = self.cid_name = self.con_num = self.con_name = UNKNOWN
        self.context = context
        self.exten = exten
        self.priority = 1
        self.uniqueid = uniqueid
        self.linkedid = linkedid
        self.vars: dict[str, str] = {}
        self.created = time.monotonic()
        self.app = ""
        self.appdata = ""
        self.bridge = ""
        self.allvars: dict[str, str] = {}

    def run(self, app: str, data: str) -> "_Chan":
        self.app, self.appdata = app, data
        return self

    def at(self, context: str, exten: str, priority: int) -> "_Chan":
        self.context, self.exten, self.priority = context, exten, priority
        return self


@dataclass(eq=False)
class _Member:
    """One queue member as app_queue keeps it (QueueStatus / member events)."""

    queue: str
    interface: str
    name: str
    penalty: int = 0
    membership: str = "static"
    paused: bool = False
    reason: str = ""
    last_pause: int = 0
    login_time: int = 0


@dataclass(eq=False)
class _Session:
    writer: asyncio.StreamWriter
    peer: tuple
    queue: asyncio.Queue = field(default_factory=lambda: asyncio.Queue(SEND_QUEUE_MAX))
    authenticated: bool = False
    event_classes: frozenset[str] | None = None  # None = no events
    closing: bool = False
    sender: asyncio.Task | None = None
    event_filter: "AmiEventFilter | None" = None  # the user's eventfilter lines, taken at login

    def wants(self, privilege: str) -> bool:
        if not self.authenticated or self.event_classes is None:
            return False
        if "all" in self.event_classes:
            return True
        return any(p in self.event_classes for p in privilege.split(",") if p != "all")


Headers = list[tuple[str, str]]


def _frame_bytes(headers: Iterable[tuple[str, str]]) -> bytes:
    return "".join(f"{k}: {v}\r\n" for k, v in headers).encode("utf-8") + b"\r\n"


def _clean(value: str) -> str:
    """Header values never carry line breaks (a hostile name cannot inject)."""
    return value.replace("\r", " ").replace("\n", " ")


def _cor(value: str) -> str:
    """app_queue's S_COR(..., "unknown") for QueueEntry caller fields."""
    return "unknown" if not value or value == UNKNOWN else _clean(value)


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("true", "yes", "1", "on", "y", "t")


def agent_of(interface: str) -> str:
    """``Local/1001@agents`` -> ``1001``."""
    return interface.partition("/")[2].partition("@")[0] or interface


# ------------------------------------------------------- manager.conf eventfilter
# Asterisk's legacy ``eventfilter = [!]<regex>`` (main/manager.c: match_filter,
# whitefilter_cmp_fn/blackfilter_cmp_fn; since late 2024 should_send_event,
# filter_cmp_fn, match_eventdata): the POSIX regex is searched (unanchored)
# in the whole text of the event as queued for the sessions -- "Event: X",
# "Privilege: ...", every header, the blank line -- and only for events
# (manager_event); responses and the list events of an action are written to
# the session directly and never filtered.  No filters: all; includes only:
# an event passes when one matches; excludes only: when none matches; both:
# when an include matches and no exclude does.  The current manager.c compiles
# the regex REG_EXTENDED (emulated here); Asterisk 13's compiled it *basic*.

_POSIX_CLASSES = {
    "alpha": "a-zA-Z", "digit": "0-9", "alnum": "0-9a-zA-Z", "upper": "A-Z", "lower": "a-z",
    "space": " \\t\\n\\r\\f\\v", "blank": " \\t", "xdigit": "0-9A-Fa-f", "cntrl": "\\x00-\\x1f\\x7f",
    "print": "\\x20-\\x7e", "graph": "\\x21-\\x7e", "punct": re.escape("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"),
}


def _posix_ere(pattern: str) -> re.Pattern:
    """A POSIX extended regex (glibc, no REG_NEWLINE, C locale) as a Python
    regex over text decoded as latin-1 (one character per byte, as regexec
    sees it): ``.`` matches a newline, ``^``/``$`` only the start/end of the
    whole event, bracket expressions take ``[:class:]`` and a backslash in
    them is literal.  Raises ValueError for what it does not emulate."""
    pattern = pattern.encode("utf-8").decode("latin-1")  # bytes, like the text it is searched in
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\":
            if i + 1 >= n:
                raise ValueError(f"trailing backslash in {pattern!r}")
            d = pattern[i + 1]
            out.append({"<": r"\b", ">": r"\b", "`": r"\A", "'": r"\Z"}.get(
                d, "\\" + d if d in "wWsSbB123456789" else re.escape(d)))
            i += 2
        elif c == "[":
            j = i + 1
            neg = j < n and pattern[j] == "^"
            j += neg
            items: list[str] = []
            first = True
            while True:
                if j >= n:
                    raise ValueError(f"unterminated [ in {pattern!r}")
                ch = pattern[j]
                if ch == "]" and not first:
                    j += 1
                    break
                first = False
                if ch == "[" and j + 1 < n and pattern[j + 1] in ":=.":
                    kind = pattern[j + 1]
                    end = pattern.find(kind + "]", j + 2)
                    if kind != ":" or end < 0 or pattern[j + 2:end] not in _POSIX_CLASSES:
                        raise ValueError(f"unsupported bracket item in {pattern!r}")
                    items.append(_POSIX_CLASSES[pattern[j + 2:end]])
                    j = end + 2
                elif j + 2 < n and pattern[j + 1] == "-" and pattern[j + 2] != "]":
                    items.append(re.escape(ch) + "-" + re.escape(pattern[j + 2]))
                    j += 3
                else:
                    items.append(re.escape(ch))
                    j += 1
            out.append("[" + ("^" if neg else "") + "".join(items) + "]")
            i = j
        elif c == "(" and pattern.startswith("(?", i):
            raise ValueError(f"'(?' is not POSIX: {pattern!r}")
        elif c in "*+?}" and out and out[-1] in ("*", "+", "?", "}"):
            raise ValueError(f"stacked quantifiers are not emulated: {pattern!r}")
        else:
            out.append({"$": r"\Z", "^": r"\A"}.get(c, c))
            i += 1
    return re.compile("".join(out), re.DOTALL | re.ASCII)


# "^Event: NAME" (+ one "[[:space:]]") and the rest: which events a pattern
# can match is then known from the event name alone
_NAME_HEAD = re.compile(r"\^Event: ([A-Za-z0-9_]+)(\[\[:space:\]\])?(.*)", re.DOTALL)


class _EventPattern:
    __slots__ = ("source", "regex", "name", "exact", "first_line")

    def __init__(self, source: str) -> None:
        self.source = source
        self.regex = _posix_ere(source)
        m = _NAME_HEAD.fullmatch(source)
        rest = m.group(3) if m else ""
        if m is None or rest[:1] in ("*", "+", "?", "{") or "|" in rest:
            self.name, self.exact, self.first_line = None, False, False  # any event may match
        else:
            self.name = m.group(1)  # the event name must be this (exact) / start with it
            self.exact = m.group(2) is not None
            self.first_line = rest == ""  # decided by the "Event:" line alone

    def may_match(self, event: str) -> bool:
        if self.name is None:
            return True
        if not event.startswith(self.name):
            return False
        return not self.exact or len(event) == len(self.name) or event[len(self.name)].isspace()


class AmiEventFilter:
    """One session's ``eventfilter`` lines (legacy form, as in manager.conf:
    ``[!]<POSIX regex>``), applied the way Asterisk's manager.c does (see the
    comment above).  :meth:`allows` works out once per event name which
    patterns can matter (``^Event: Name[[:space:]]`` is decided by the name
    alone) and searches the event's text only with the others."""

    def __init__(self, lines: Iterable[str]) -> None:
        self.lines = tuple(lines)
        self.include: list[_EventPattern] = []
        self.exclude: list[_EventPattern] = []
        for line in self.lines:
            neg = line.startswith("!")
            pattern = line[1:] if neg else line
            if not pattern:
                raise ValueError(f"eventfilter {line!r}: a legacy filter needs a pattern")
            (self.exclude if neg else self.include).append(_EventPattern(pattern))
        self._plans: dict[str, tuple] = {}

    def _plan(self, event: str) -> tuple:
        first = f"Event: {event}\r\n"
        plan = []
        for pats in (self.include, self.exclude):
            certain, search = False, []
            for p in pats:
                if not p.may_match(event):
                    continue
                if p.first_line:
                    certain = certain or p.regex.search(first) is not None
                else:
                    search.append(p.regex)
            plan += [certain, tuple(search)]
        return tuple(plan)

    def allows(self, event: str, data: bytes) -> bool:
        """Whether Asterisk would send this event (``data``: the whole frame
        as written, ``Event: <event>`` first) to a session with these filters."""
        if not self.include and not self.exclude:
            return True
        plan = self._plans.get(event)
        if plan is None:
            plan = self._plans[event] = self._plan(event)
        inc_certain, inc_search, exc_certain, exc_search = plan
        text = data.decode("latin-1") if inc_search or exc_search else ""
        if self.include and not (inc_certain or any(r.search(text) for r in inc_search)):
            return False
        return not (exc_certain or any(r.search(text) for r in exc_search))


def load_manager_eventfilters(path: str | os.PathLike, user: str) -> list[str]:
    """The ``eventfilter`` values of ``[user]`` in an Asterisk manager.conf,
    in file order, templates (``[user](tmpl)``) first, as Asterisk reads them
    (``;`` comments, ``\\;`` for a literal ``;``, ``;-- --;`` blocks, values
    stripped).  The advanced form ``eventfilter(...) =`` (late-2024 releases
    of 20 and 22) is not emulated: ValueError."""
    sections: dict[str, list[tuple[list[str], list[tuple[str, str]]]]] = {}
    entries: list[tuple[str, str]] | None = None
    in_block = False
    for raw in Path(path).read_text(encoding="utf-8").splitlines():
        if in_block:
            in_block = "--;" not in raw
            continue
        raw = re.sub(r";--.*?--;", "", raw)
        if ";--" in raw:
            in_block = True
            raw = raw.split(";--", 1)[0]
        line = re.split(r"(?<!\\);", raw, maxsplit=1)[0].replace("\\;", ";").strip()
        if not line:
            continue
        m = re.fullmatch(r"\[([^\]]+)\](?:\(([^)]*)\))?", line)
        if m:
            opts = [o.strip() for o in (m.group(2) or "").split(",") if o.strip() and o.strip() != "!"]
            entries = []
            sections.setdefault(m.group(1).strip(), []).append((opts, entries))
            continue
        key, sep, value = line.partition("=")
        if sep and entries is not None:
            entries.append((key.strip().lower(), value.lstrip(">").strip()))

    def values(name: str, seen: frozenset[str] = frozenset()) -> list[str]:
        out: list[str] = []
        for templates, ents in sections.get(name, []):
            for t in templates:
                if t not in seen:
                    out += values(t, seen | {name})
            for k, v in ents:
                if k.startswith("eventfilter("):
                    raise ValueError(f"[{user}]: advanced '{k}' is not emulated by the simulator")
                if k == "eventfilter":
                    out.append(v)
        return out

    if user not in sections:
        raise KeyError(f"no [{user}] in {path}")
    return values(user)


class PbxSimulator:
    """AMI server + call player.  See the module docstring."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 5038,
        username: str = "acceptance",
        secret: str = "acceptance-secret",
        *,
        speed: float = 1.0,
        agents: Mapping[str, Sequence[str] | Mapping[str, int]] | None = None,
        queues: Mapping[str, QueueConfig] | None = None,
        channel_vars: Sequence[str] = DEFAULT_CHANNEL_VARS,
        recordings_dir: str = DEFAULT_RECORDINGS_DIR,
        recording_names: str = "trace",
        write_recordings: bool = False,
        auth_fail_delay: float = 1.0,
        seed: int | None = None,
        agi_host: str | None = None,
        agi_port: int | None = None,
        agi_route: str = "ivr",
        agi_timeout: float = 10.0,
        ivr_prompt_s: float = 2.0,
        ivr_key_s: float = 1.5,
        cdr_sink: "CdrSink | None" = None,
        event_filters: Sequence[str] | None = None,
    ) -> None:
        """``cdr_sink``: where Asterisk's CDR backend would write (off by
        default): called once per finished call with its CDR rows (see
        :meth:`_cdr_rows`), in a task of its own, as cdr_pgsql posts records
        after the hang-up; e.g. :class:`CdrPgsqlWriter`.  The AMI side is the
        same with or without it.
        ``agi_host``/``agi_port``: the FastAGI IVR that ``via_ivr`` calls go
        through (``agi://host:port/<agi_route>``); None: no IVR dialogue.
        ``agi_timeout``: real seconds to wait for the next AGI command.
        ``ivr_prompt_s``/``ivr_key_s``: virtual seconds a STREAM FILE plays and
        a caller takes to answer a GET DATA.
        ``recording_names``: ``trace`` names recordings like the acceptance
        captures (``<dir>/<queue>-<YYYYMMDD>-<HHMMSS>-<uniqueid>.wav``),
        ``dialplan`` like asterisk-conf/extensions.conf
        (``<dir>/<YYYYMMDD>/<linkedid>-<uniqueid>-<queue>-<HHMMSS>.wav``).
        ``write_recordings``: write each recording (a tone as long as the
        talk) before the recording ends, as MixMonitor would.
        ``event_filters``: the AMI user's ``eventfilter`` lines (legacy form,
        e.g. :func:`load_manager_eventfilters` of asterisk-conf/manager.conf),
        applied per session as Asterisk does (:class:`AmiEventFilter`); a
        session keeps the filters it logged in with.  None (default): every
        event is sent."""
        if speed <= 0:
            raise ValueError("speed must be > 0")
        if recording_names not in ("trace", "dialplan"):
            raise ValueError("recording_names must be 'trace' or 'dialplan'")
        self.recording_names = recording_names
        self.write_recordings = write_recordings
        self.agi_host = agi_host or ("127.0.0.1" if agi_port else None)
        self.agi_port = agi_port
        self.agi_route = agi_route
        self.agi_timeout = agi_timeout
        self.ivr_prompt_s = ivr_prompt_s
        self.ivr_key_s = ivr_key_s
        self.host = host
        self.port = port
        self.username = username
        self.secret = secret
        self.speed = speed
        self.queues: dict[str, QueueConfig] = dict(queues or DEFAULT_QUEUES)
        self.agents: dict[str, dict[str, int]] = {}
        for ext, qs in (agents if agents is not None else DEFAULT_AGENTS).items():
            pen = dict(qs) if isinstance(qs, Mapping) else {q: 0 for q in qs}
            order = [q for q in QUEUE_HASH_ORDER if q in pen] + [q for q in pen if q not in QUEUE_HASH_ORDER]
            self.agents[str(ext)] = {q: int(pen[q]) for q in order}
            for q in pen:
                self.queues.setdefault(q, QueueConfig())
        self.channel_vars = tuple(channel_vars)
        self.recordings_dir = recordings_dir.rstrip("/")
        self.auth_fail_delay = auth_fail_delay
        self.rng = random.Random(seed)
        self._server: asyncio.base_events.Server | None = None
        self._sessions: set[_Session] = set()
        self.on_write: Callable[[bytes], None] | None = None  # observer of every frame written
        self.event_filter = AmiEventFilter(event_filters) if event_filters else None
        self._handlers: set[asyncio.Task] = set()
        self._calls: set[asyncio.Task] = set()
        self._uid = itertools.count()
        self._local = itertools.count()
        self._epoch0 = time.time()
        self._mono0 = time.monotonic()
        self._login_time = int(self._epoch0)
        self._calls_taken: dict[str, int] = {a: 0 for a in self.agents}
        self._last_call: dict[str, int] = {a: 0 for a in self.agents}
        self._waiting: dict[str, list[object]] = {q: [] for q in self.queues}
        self._busy: dict[str, int] = {}
        # live state that the status actions report
        self._live: dict[str, _Chan] = {}  # uniqueid -> channel, creation order
        self.members: dict[str, dict[str, _Member]] = {q: {} for q in self.queues}
        for ext, qs in self.agents.items():
            for q, pen in qs.items():
                self.members.setdefault(q, {})[self.interface(ext)] = _Member(
                    q, self.interface(ext), self.member_name(ext), pen, login_time=self._login_time)
        self._dev_state: dict[str, int] = {}  # interface -> device state
        self._in_call: set[tuple[str, str]] = set()  # (interface, queue) talking
        self._qstats: dict[str, dict[str, int]] = {
            q: {"completed": 0, "abandoned": 0, "holdtime": 0, "talktime": 0} for q in self.queues}
        # Originate: how many times each ActionID was executed, failure knobs
        self.accepting = True  # False: new AMI connections are dropped at once
        self.originate_counts: Counter[str] = Counter()
        self.originate_noanswer: set[str] = set()  # agent extensions that never answer
        self.originate_response_delay_s = 0.0  # virtual seconds before the Response
        self.originate_ring_s = 2.0
        self.originate_talk_s = 10.0
        # CDR (cdr_pgsql), off unless a sink is given
        self.cdr_sink = cdr_sink
        self.cdr_posted = 0  # calls whose CDR rows were handed to the sink
        self.cdr_failures = 0
        self._cdr_tasks: set[asyncio.Task] = set()
        self._cdr_seq = itertools.count(1)

    @property
    def agi_enabled(self) -> bool:
        return bool(self.agi_host and self.agi_port)

    # ------------------------------------------------------------------ clock
    def now(self) -> float:
        """Virtual wall clock (epoch seconds), running ``speed`` times fast."""
        return self._epoch0 + (time.monotonic() - self._mono0) * self.speed

    async def _sleep(self, virtual_s: float) -> None:
        if virtual_s > 0:
            await asyncio.sleep(virtual_s / self.speed)

    # ----------------------------------------------------------------- server
    async def start(self) -> int:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("pbx simulator listening on %s:%s", self.host, self.port)
        return self.port

    async def stop(self) -> None:
        for t in list(self._calls):
            t.cancel()
        if self._server is not None:
            self._server.close()
        self.drop_connections()
        await asyncio.gather(*self._handlers, *self._calls, *self._cdr_tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    def drop_connections(self) -> None:
        """Close every client socket abruptly (no Goodbye), as a crash would."""
        for s in list(self._sessions):
            s.closing = True
            with contextlib.suppress(Exception):
                s.writer.transport.abort()
        self._sessions.clear()

    @property
    def session_count(self) -> int:
        return len(self._sessions)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.accepting:  # an outage: the TCP connect succeeds, then drops
            with contextlib.suppress(Exception):
                writer.transport.abort()
            return
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        sess = _Session(writer, writer.get_extra_info("peername") or ("?", 0))
        self._sessions.add(sess)
        sess.sender = asyncio.create_task(self._sender(sess))
        self._send(sess, BANNER)
        frames = FrameReader(max_frame_bytes=MAX_CLIENT_FRAME, expect_banner=False)
        try:
            while not sess.closing:
                data = await reader.read(65536)
                if not data:
                    break
                for frame in frames.feed(data):
                    try:
                        keep = await self._action(sess, frame)
                    except Exception:  # never let one action kill the server
                        log.exception("simulator action failed")
                        self._respond(sess, "Error", frame.get("ActionID"), "Internal error")
                        keep = True
                    if not keep:
                        sess.closing = True
                        break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            self._sessions.discard(sess)
            sess.closing = True
            with contextlib.suppress(asyncio.QueueFull):
                sess.queue.put_nowait(None)  # flush what was queued, then close
            if sess.sender is not None:
                with contextlib.suppress(BaseException):
                    await asyncio.wait_for(sess.sender, 2.0)
            with contextlib.suppress(Exception):
                writer.close()
            if task is not None:
                self._handlers.discard(task)

    async def _sender(self, sess: _Session) -> None:
        try:
            while True:
                data = await sess.queue.get()
                if data is None:
                    break
                sess.writer.write(data)
                if self.on_write is not None:  # bench/storm.py: when the bytes went out
                    self.on_write(data)
                await sess.writer.drain()
        except (ConnectionError, RuntimeError):
            sess.closing = True
        finally:
            with contextlib.suppress(Exception):
                if sess.writer.can_write_eof():
                    sess.writer.write_eof()

    def _send(self, sess: _Session, data: bytes) -> None:
        try:
            sess.queue.put_nowait(data)
        except asyncio.QueueFull:  # a client that does not read is dropped
            log.warning("simulator: client %s too slow, dropped", sess.peer)
            sess.closing = True
            self._sessions.discard(sess)
            with contextlib.suppress(Exception):
                sess.writer.transport.abort()

    def _respond(self, sess: _Session, response: str, action_id: str | None,
                 message: str | None = None, extra: Headers = ()) -> None:
        h: Headers = [("Response", response)]
        if action_id is not None:
            h.append(("ActionID", _clean(action_id)))
        if message is not None:
            h.append(("Message", message))
        h.extend(extra)
        self._send(sess, _frame_bytes(h))

    async def _action(self, sess: _Session, frame) -> bool:
        """Handle one client frame; False closes the session."""
        action = (frame.get("Action") or "").strip()
        aid = frame.get("ActionID")
        if not action:
            self._respond(sess, "Error", aid, "Missing action in request")
            return True
        act = action.lower()
        if act == "logoff":
            self._respond(sess, "Goodbye", aid, "Thanks for all the fish.")
            return False
        if act == "login":
            return await self._login(sess, frame, aid)
        if not sess.authenticated:
            self._respond(sess, "Error", aid, "Permission denied")
            return True
        if act == "ping":
            t = time.time()
            self._respond(sess, "Success", aid, None,
                          [("Ping", "Pong"), ("Timestamp", f"{int(t)}.{int((t % 1) * 1e6):06d}")])
            return True
        handler = {
            "coreshowchannels": self._act_core_show_channels,
            "queuestatus": self._act_queue_status,
            "queuesummary": self._act_queue_summary,
            "status": self._act_status,
            "originate": self._act_originate,
            "queueadd": self._act_queue_add,
            "queueremove": self._act_queue_remove,
            "queuepause": self._act_queue_pause,
            "queuepenalty": self._act_queue_penalty,
        }.get(act)
        if handler is not None:
            await handler(sess, frame, aid)
            return True
        self._respond(sess, "Error", aid,
                      f"Invalid/unknown command: {_clean(action)}. "
                      "Use Action: ListCommands to show available commands.")
        return True

    async def _login(self, sess: _Session, frame, aid: str | None) -> bool:
        if sess.authenticated:
            self._respond(sess, "Success", aid, "Already authenticated")
            return True
        user, secret = frame.get("Username") or "", frame.get("Secret") or ""
        ok = secrets.compare_digest(user.encode(), self.username.encode()) and \
            secrets.compare_digest(secret.encode(), self.secret.encode())
        if not ok:
            # Asterisk sleeps 1 s, answers, then closes the session
            await asyncio.sleep(self.auth_fail_delay)
            self._respond(sess, "Error", aid, "Authentication failed")
            return False
        ev = (frame.get("Events") or "on").strip().lower()
        if ev in ("off", "no", "false", "0"):
            sess.event_classes = None
        elif ev in ("on", "yes", "true", "1", "all"):
            sess.event_classes = frozenset({"all"})
        else:
            sess.event_classes = frozenset(p.strip() for p in ev.split(",") if p.strip())
        sess.authenticated = True
        sess.event_filter = self.event_filter
        self._respond(sess, "Success", aid, "Authentication accepted")
        up = str(int(self.now() - self._epoch0))
        if sess.wants("system,all"):  # written by action_login itself: no eventfilter applies
            self._send(sess, _frame_bytes([
                ("Event", "FullyBooted"), ("Privilege", "system,all"),
                ("Uptime", up), ("LastReload", up), ("Status", "Fully Booted")]))
        tv = self._event_tv()
        local = sess.writer.get_extra_info("sockname") or ("127.0.0.1", self.port)
        self._emit("SuccessfulAuth", "security,all", [
            ("EventTV", tv), ("Severity", "Informational"), ("Service", "AMI"),
            ("EventVersion", "1"), ("AccountID", _clean(user)),
            ("SessionID", f"0x7f{secrets.token_hex(5)}"),
            ("LocalAddress", self._addr(local)), ("RemoteAddress", self._addr(sess.peer)),
            ("UsingPassword", "0"), ("SessionTV", tv)])
        return True

    @staticmethod
    def _addr(sockaddr: tuple) -> str:
        ip, port = sockaddr[0], sockaddr[1]
        fam = "IPV6" if ":" in str(ip) else "IPV4"
        return f"{fam}/TCP/{ip}/{port}"

    def _event_tv(self) -> str:
        t = self.now()
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int((t % 1) * 1000):03d}+0000"

    # ----------------------------------------------------------------- events
    def _emit(self, event: str, privilege: str, *parts: Iterable[tuple[str, str]]) -> None:
        headers: Headers = [("Event", event), ("Privilege", privilege)]
        for p in parts:
            headers.extend(p)
        data = _frame_bytes(headers)
        verdicts: dict[int, bool] = {}  # filter -> allowed (sessions of one user share theirs)
        for s in list(self._sessions):
            if not s.closing and s.wants(privilege):
                f = s.event_filter
                if f is not None:
                    ok = verdicts.get(id(f))
                    if ok is None:
                        ok = verdicts[id(f)] = f.allows(event, data)
                    if not ok:
                        continue
                self._send(s, data)

    def _snap(self, ch: _Chan, prefix: str = "", vars_: Mapping[str, str] | None = None) -> Headers:
        v = ch.vars if vars_ is None else vars_
        p = prefix
        h: Headers = [
            (p + "Channel", ch.name), (p + "ChannelState", str(ch.state)),
            (p + "ChannelStateDesc", STATE_DESC.get(ch.state, "Unknown")),
            (p + "CallerIDNum", _clean(ch.cid_num)), (p + "CallerIDName", _clean(ch.cid_name)),
            (p + "ConnectedLineNum", _clean(ch.con_num)), (p + "ConnectedLineName", _clean(ch.con_name)),
            (p + "Language", "en"), (p + "AccountCode", ""),
            (p + "Context", ch.context), (p + "Exten", ch.exten), (p + "Priority", str(ch.priority)),
            (p + "Uniqueid", ch.uniqueid), (p + "Linkedid", ch.linkedid),
        ]
        h.extend((p + "ChanVariable", f"{n}={_clean(v.get(n, ''))}") for n in self.channel_vars)
        return h

    def _var_set(self, ch: _Chan, variable: str, value: str, *, stale: bool = False) -> None:
        """VarSet.  ``stale`` reproduces the ;2 member half, whose snapshot
        does not show the inherited value yet (trace 01, frames 86-89): the
        caller updates ``ch.vars`` afterwards."""
        name = variable.lstrip("_")
        if not stale:
            ch.allvars[name] = value
        if not stale and name in self.channel_vars:
            ch.vars[name] = value
        self._emit("VarSet", "dialplan,all", self._snap(ch),
                   [("Variable", variable), ("Value", _clean(value))])

    def _newchannel(self, ch: _Chan) -> None:
        self._live[ch.uniqueid] = ch
        self._emit("Newchannel", "call,all", self._snap(ch))

    def _newcallerid(self, ch: _Chan) -> None:
        self._emit("NewCallerid", "call,all", self._snap(ch),
                   [("CID-CallingPres", "0 (Presentation Allowed, Not Screened)")])

    def _newstate(self, ch: _Chan, state: int) -> None:
        ch.state = state
        self._emit("Newstate", "call,all", self._snap(ch))

    def _hangup(self, ch: _Chan, cause: int) -> None:
        self._live.pop(ch.uniqueid, None)
        self._emit("Hangup", "call,all", self._snap(ch),
                   [("Cause", str(cause)), ("Cause-txt", CAUSE_TXT.get(cause, "Unknown"))])

    def _dial(self, event: str, caller: _Chan | None, dest: _Chan, tail: Headers) -> None:
        parts = [self._snap(caller)] if caller is not None else []
        self._emit(event, "call,all", *parts, self._snap(dest, "Dest"), tail)

    def _agent_event(self, event: str, caller: _Chan, dest: _Chan, queue: str, agent: str,
                     tail: Headers = ()) -> None:
        self._emit(event, "agent,all", self._snap(caller), self._snap(dest, "Dest"),
                   [("Queue", queue), ("Interface", self.interface(agent)),
                    ("MemberName", self.member_name(agent))], tail)

    def _bridge(self, event: str, bridge_id: str, n: int, ch: _Chan | None = None) -> None:
        h: Headers = [
            ("BridgeUniqueid", bridge_id), ("BridgeType", "basic"),
            ("BridgeTechnology", "simple_bridge"), ("BridgeCreator", UNKNOWN),
            ("BridgeName", UNKNOWN), ("BridgeNumChannels", str(n)),
            ("BridgeVideoSourceMode", "none")]
        if ch is not None:
            ch.bridge = bridge_id if event == "BridgeEnter" else ""
        self._emit(event, "call,all", h, self._snap(ch) if ch is not None else [])

    def _member_status(self, agent: str, status: int) -> None:
        iface = self.interface(agent)
        self._dev_state[iface] = status
        for q in self.agents.get(agent, {}):
            m = self.members.get(q, {}).get(iface)
            if m is not None:
                self._emit("QueueMemberStatus", "agent,all", self._member_fields(m, "Interface"))

    def _member_fields(self, m: _Member, location: str = "Interface", *,
                       in_call: bool = False) -> Headers:
        """QueueMember* fields; QueueStatus's QueueMember says Name/Location
        and has no Ringinuse (traces 05, 06)."""
        agent = agent_of(m.interface)
        status = self._dev_state.get(m.interface, DEV_NOT_INUSE)
        listing = location == "Location"
        h: Headers = [("Queue", m.queue)]
        if listing:
            h += [("Name", m.name), ("Location", m.interface)]
        else:
            h += [("MemberName", m.name), ("Interface", m.interface)]
        h += [("StateInterface", m.interface), ("Membership", m.membership),
              ("Penalty", str(m.penalty)), ("CallsTaken", str(self._calls_taken.get(agent, 0))),
              ("LastCall", str(self._last_call.get(agent, 0))), ("LastPause", str(m.last_pause)),
              ("LoginTime", str(m.login_time)),
              ("InCall", "1" if in_call and (m.interface, m.queue) in self._in_call else "0"),
              ("Status", str(status)), ("Paused", "1" if m.paused else "0"),
              ("PausedReason", _clean(m.reason))]
        if not listing:
            h.append(("Ringinuse", "0"))
        h.append(("Wrapuptime", "0"))
        return h

    # ---------------------------------------------------- status / queue actions
    # Frames as in the real captures: trace 06 (QueueStatus, QueueSummary,
    # CoreShowChannels, Status), 09 (Originate), 05 (QueueAdd/Remove/Pause).
    def _list_start(self, sess: _Session, aid: str | None, message: str) -> None:
        h: Headers = [("Response", "Success")]
        if aid is not None:
            h.append(("ActionID", _clean(aid)))
        h += [("EventList", "start"), ("Message", message)]
        self._send(sess, _frame_bytes(h))

    def _list_item(self, sess: _Session, aid: str | None, event: str, fields: Headers,
                   *, aid_first: bool = False) -> None:
        h: Headers = [("Event", event)]
        a: Headers = [("ActionID", _clean(aid))] if aid is not None else []
        h += a + fields if aid_first else fields + a
        self._send(sess, _frame_bytes(h))

    def _list_complete(self, sess: _Session, aid: str | None, event: str, n: int,
                       items: bool = False) -> None:
        h: Headers = [("Event", event)]
        if aid is not None:
            h.append(("ActionID", _clean(aid)))
        h += [("EventList", "Complete"), ("ListItems", str(n))]
        if items:
            h.append(("Items", str(n)))
        self._send(sess, _frame_bytes(h))

    def _entries(self, queue: str) -> list["_CallPlayer"]:
        return [t for t in self._waiting.get(queue, []) if isinstance(t, _CallPlayer)]

    def _queue_order(self, only: str | None) -> list[str]:
        qs = [q for q in QUEUE_HASH_ORDER if q in self.queues]
        qs += [q for q in self.queues if q not in qs]
        return [q for q in qs if only is None or q == only]

    async def _act_queue_status(self, sess: _Session, frame, aid: str | None) -> None:
        only = (frame.get("Queue") or "").strip() or None
        member_filter = (frame.get("Member") or "").strip() or None
        self._list_start(sess, aid, "Queue status will follow")
        n = 0
        now = self.now()
        for q in self._queue_order(only):
            conf = self.queues[q]
            st = self._qstats.get(q, {})
            entries = self._entries(q)
            done = st.get("completed", 0)
            self._list_item(sess, aid, "QueueParams", [
                ("Queue", q), ("Max", "0"), ("Strategy", conf.strategy), ("Calls", str(len(entries))),
                ("Holdtime", str(st.get("holdtime", 0))), ("TalkTime", str(st.get("talktime", 0))),
                ("Completed", str(done)), ("Abandoned", str(st.get("abandoned", 0))),
                ("ServiceLevel", "20"), ("ServicelevelPerf", "100.0" if done else "0.0"),
                ("ServicelevelPerf2", "100.0"), ("Weight", "0")])
            n += 1
            for m in self.members.get(q, {}).values():
                if member_filter and member_filter not in (m.interface, m.name):
                    continue
                self._list_item(sess, aid, "QueueMember", self._member_fields(m, "Location", in_call=True))
                n += 1
            for pos, p in enumerate(entries, 1):
                c2 = p.c2
                self._list_item(sess, aid, "QueueEntry", [
                    ("Queue", q), ("Position", str(pos)), ("Channel", c2.name),
                    ("Uniqueid", c2.uniqueid), ("CallerIDNum", _cor(c2.cid_num)),
                    ("CallerIDName", _cor(c2.cid_name)), ("ConnectedLineNum", _cor(c2.con_num)),
                    ("ConnectedLineName", _cor(c2.con_name)),
                    ("Wait", str(int(now - p.joined_at))), ("Priority", "0")])
                n += 1
        self._list_complete(sess, aid, "QueueStatusComplete", n)

    async def _act_queue_summary(self, sess: _Session, frame, aid: str | None) -> None:
        only = (frame.get("Queue") or "").strip() or None
        self._list_start(sess, aid, "Queue summary will follow")
        n = 0
        now = self.now()
        for q in self._queue_order(only):
            st = self._qstats.get(q, {})
            members = list(self.members.get(q, {}).values())
            available = sum(1 for m in members if not m.paused
                            and self._dev_state.get(m.interface, DEV_NOT_INUSE) == DEV_NOT_INUSE)
            entries = self._entries(q)
            longest = max((int(now - p.joined_at) for p in entries), default=0)
            self._list_item(sess, aid, "QueueSummary", [
                ("Queue", q), ("LoggedIn", str(len(members))), ("Available", str(available)),
                ("Callers", str(len(entries))), ("HoldTime", str(st.get("holdtime", 0))),
                ("TalkTime", str(st.get("talktime", 0))), ("LongestHoldTime", str(longest))])
            n += 1
        self._list_complete(sess, aid, "QueueSummaryComplete", n)

    @staticmethod
    def _duration(ch: _Chan, speed: float) -> int:
        return int((time.monotonic() - ch.created) * speed)

    async def _act_core_show_channels(self, sess: _Session, frame, aid: str | None) -> None:
        self._list_start(sess, aid, "Channels will follow")
        chans = list(self._live.values())
        for ch in chans:
            secs = self._duration(ch, self.speed)
            self._list_item(sess, aid, "CoreShowChannel", self._snap(ch) + [
                ("Application", ch.app), ("ApplicationData", ch.appdata),
                ("Duration", f"{secs // 3600:02d}:{secs // 60 % 60:02d}:{secs % 60:02d}"),
                ("BridgeId", ch.bridge)], aid_first=True)
        self._list_complete(sess, aid, "CoreShowChannelsComplete", len(chans))

    async def _act_status(self, sess: _Session, frame, aid: str | None) -> None:
        name = (frame.get("Channel") or "").strip()
        chans = list(self._live.values())
        if name:
            chans = [c for c in chans if c.name == name]
            if not chans:
                self._respond(sess, "Error", aid, "No such channel")
                return
        wanted = [v.strip() for v in (frame.get("Variables") or "").split(",") if v.strip()]
        all_vars = (frame.get("AllVariables") or "").strip().lower() in ("true", "yes", "1", "on")
        self._list_start(sess, aid, "Channel status will follow")
        for ch in chans:
            h = [("Privilege", "Call")] + self._snap(ch) + [
                ("Type", ch.name.split("/", 1)[0]), ("DNID", ""),
                ("EffectiveConnectedLineNum", _clean(ch.con_num)),
                ("EffectiveConnectedLineName", _clean(ch.con_name)),
                ("TimeToHangup", "0"), ("BridgeID", ch.bridge), ("Application", ch.app),
                ("Data", ch.appdata), ("Nativeformats", "(slin)"), ("Readformat", "slin"),
                ("Readtrans", ""), ("Writeformat", "slin"), ("Writetrans", ""),
                ("Callgroup", "0"), ("Pickupgroup", "0"),
                ("Seconds", str(self._duration(ch, self.speed)))]
            names = list(reversed(ch.allvars)) if all_vars else wanted
            h += [("Variable", f"{n}={_clean(ch.allvars.get(n, ''))}") for n in names]
            self._list_item(sess, aid, "Status", h)
        self._list_complete(sess, aid, "StatusComplete", len(chans), items=True)

    # -- queue membership ----------------------------------------------------
    async def _act_queue_add(self, sess: _Session, frame, aid: str | None) -> None:
        q = (frame.get("Queue") or "").strip()
        iface = (frame.get("Interface") or "").strip()
        if not q or not iface:
            self._respond(sess, "Error", aid, "'Queue' or 'Interface' not set.")
            return
        if q not in self.queues:
            self._respond(sess, "Error", aid, "Unable to add interface to queue: No such queue")
            return
        members = self.members.setdefault(q, {})
        if iface in members:
            self._respond(sess, "Error", aid, "Unable to add interface: Already there")
            return
        paused = _truthy(frame.get("Paused"))
        now = int(self.now())
        m = _Member(q, iface, (frame.get("MemberName") or "").strip() or iface,
                    int(frame.get("Penalty") or 0), "dynamic", paused,
                    (frame.get("Reason") or "") if paused else "", now if paused else 0, now)
        members[iface] = m
        self._respond(sess, "Success", aid, "Added interface to queue")
        self._emit("QueueMemberAdded", "agent,all", self._member_fields(m))

    async def _act_queue_remove(self, sess: _Session, frame, aid: str | None) -> None:
        q = (frame.get("Queue") or "").strip()
        iface = (frame.get("Interface") or "").strip()
        if not q or not iface:
            self._respond(sess, "Error", aid, "Need 'Queue' and 'Interface' parameters.")
            return
        m = self.members.get(q, {}).get(iface)
        if m is None:
            if q not in self.queues:
                self._respond(sess, "Error", aid, "Unable to remove interface from queue: No such queue")
            else:
                self._respond(sess, "Error", aid, "Unable to remove interface: Not there")
            return
        if m.membership != "dynamic":
            self._respond(sess, "Error", aid, "Member not dynamic")
            return
        del self.members[q][iface]
        self._respond(sess, "Success", aid, "Removed interface from queue")
        self._emit("QueueMemberRemoved", "agent,all", self._member_fields(m))

    async def _act_queue_pause(self, sess: _Session, frame, aid: str | None) -> None:
        q = (frame.get("Queue") or "").strip()
        iface = (frame.get("Interface") or "").strip()
        if not iface or frame.get("Paused") is None:
            self._respond(sess, "Error", aid, "Need 'Interface' and 'Paused' parameters.")
            return
        paused = _truthy(frame.get("Paused"))
        found = [ms[iface] for qn, ms in self.members.items()
                 if (not q or qn == q) and iface in ms]
        if not found:
            self._respond(sess, "Error", aid, "Interface not found")
            return
        self._respond(sess, "Success", aid,
                      "Interface paused successfully" if paused else "Interface unpaused successfully")
        reason = (frame.get("Reason") or "") if paused else ""
        for m in found:
            m.paused, m.reason = paused, reason
            if paused:
                m.last_pause = int(self.now())
            self._emit("QueueMemberPause", "agent,all", self._member_fields(m))

    async def _act_queue_penalty(self, sess: _Session, frame, aid: str | None) -> None:
        q = (frame.get("Queue") or "").strip()
        iface = (frame.get("Interface") or "").strip()
        try:
            penalty = int(frame.get("Penalty") or "")
        except ValueError:
            penalty = -1
        found = [ms[iface] for qn, ms in self.members.items() if (not q or qn == q) and iface in ms]
        if not found or penalty < 0:
            self._respond(sess, "Error", aid, "Invalid interface, queuename or penalty")
            return
        self._respond(sess, "Success", aid, "Interface penalty set successfully")
        for m in found:
            m.penalty = penalty
            self._emit("QueueMemberPenalty", "agent,all", self._member_fields(m))

    # -- Originate (click-to-call, trace 09) --------------------------------
    async def _act_originate(self, sess: _Session, frame, aid: str | None) -> None:
        channel = (frame.get("Channel") or "").strip()
        if not channel:
            self._respond(sess, "Error", aid, "Channel not specified")
            return
        if not (frame.get("Exten") or frame.get("Application")):
            self._respond(sess, "Error", aid, "Exten not specified")
            return
        self.originate_counts[aid or ""] += 1  # executed: the call starts now
        task = asyncio.create_task(self._originate_call(frame, aid))
        self._calls.add(task)
        task.add_done_callback(self._calls.discard)
        delay = self.originate_response_delay_s
        if not delay:
            self._respond(sess, "Success", aid, "Originate successfully queued")
            return

        async def late_answer() -> None:  # a slow answer that a cut link loses
            await self._sleep(delay)
            if not sess.closing:
                self._respond(sess, "Success", aid, "Originate successfully queued")
        t = asyncio.create_task(late_answer())
        self._calls.add(t)
        t.add_done_callback(self._calls.discard)

    async def _originate_call(self, frame, aid: str | None) -> None:
        channel = (frame.get("Channel") or "").strip()
        context = (frame.get("Context") or "").strip()
        exten = (frame.get("Exten") or "").strip()
        cid = frame.get("CallerID") or ""
        cid_name, _, cid_num = cid.rpartition("<")
        cid_num = cid_num.rstrip(">").strip() or cid.strip()
        cid_name = cid_name.strip().strip('"') or cid_num
        timeout_s = int(frame.get("Timeout") or 30000) / 1000.0
        tech, _, rest = channel.partition("/")
        ext, _, ctx = rest.partition("@")
        variables = {}
        for v in frame.get_all("Variable"):
            for item in v.split(","):
                k, sep, val = item.partition("=")
                if sep:
                    variables[k.strip().lstrip("_")] = val
        m1, m2 = self._local_pair(ext, ctx or "default", None)
        for ch in (m1, m2):
            ch.vars.update({k: v for k, v in variables.items() if k in self.channel_vars})
            ch.allvars.update(variables)
        m1.run("AppDial2", "(Outgoing Line)")
        m2.run("Wait", str(int(self.originate_ring_s)))
        self._newchannel(m1)
        self._newchannel(m2)
        m1.cid_num = m1.con_num = cid_num or UNKNOWN
        m1.cid_name = m1.con_name = cid_name or UNKNOWN
        self._newcallerid(m1)
        self._dial("DialBegin", None, m1, [("DialString", rest)])
        self._newstate(m1, 5)
        agent = ext if ctx == "agents" else ""
        if agent in self.agents:
            self._member_status(agent, DEV_RINGING)
        self._dial("DialState", None, m1, [("DialStatus", "RINGING")])
        fail = agent in self.originate_noanswer or (ctx == "agents" and agent not in self.agents)
        common = [("Context", context), ("Exten", exten)]
        if fail:
            await self._sleep(timeout_s)
            self._emit("OriginateResponse", "call,all",
                       [("ActionID", _clean(aid))] if aid is not None else [],
                       [("Response", "Failure"), ("Channel", channel)], common,
                       [("Reason", "3"), ("Uniqueid", UNKNOWN), ("CallerIDNum", _clean(cid_num)),
                        ("CallerIDName", _clean(cid_name))])
            self._hangup(m1, 19)
            self._hangup(m2, 19)
            if agent in self.agents:
                self._member_status(agent, DEV_NOT_INUSE)
            return
        await self._sleep(self.originate_ring_s)
        self._newstate(m1, 6)
        self._newstate(m2, 6)
        self._dial("DialEnd", None, m1, [("DialStatus", "ANSWER")])
        if agent in self.agents:
            self._member_status(agent, DEV_INUSE)
        legacy = [(f"ChanVariable({m1.name})", f"{n}={_clean(m1.vars.get(n, ''))}")
                  for n in self.channel_vars]
        self._emit("OriginateResponse", "call,all",
                   [("ActionID", _clean(aid))] if aid is not None else [],
                   [("Response", "Success"), ("Channel", m1.name)], common,
                   [("Reason", "4"), ("Uniqueid", m1.uniqueid), ("CallerIDNum", _clean(cid_num)),
                    ("CallerIDName", _clean(cid_name))], legacy)
        m1.at(context, exten, 1).run("Dial", f"Local/{exten}@pstn")
        await self._sleep(self.originate_talk_s)
        self._hangup(m2, 16)
        self._hangup(m1, 16)
        if agent in self.agents:
            self._member_status(agent, DEV_NOT_INUSE)

    # --------------------------------------------------------------- channels
    @staticmethod
    def interface(agent: str) -> str:
        return f"Local/{agent}@agents"

    @staticmethod
    def member_name(agent: str) -> str:
        return f"Agent {agent}"

    def _uniqueid(self) -> str:
        return f"{int(self.now())}.{next(self._uid)}"

    def _local_pair(self, exten: str, context: str, linkedid: str | None) -> tuple[_Chan, _Chan]:
        n = next(self._local)
        u1 = self._uniqueid()
        u2 = self._uniqueid()
        link = linkedid or u1
        base = f"Local/{exten}@{context}-{n:08x}"
        return (_Chan(base + ";1", 0, context, exten, u1, link),
                _Chan(base + ";2", 4, context, exten, u2, link))

    def _filename_ts(self) -> str:
        return time.strftime("%Y%m%d-%H%M%S", time.gmtime(self.now()))

    def _recording_name(self, queue: str, chan: "_Chan") -> str:
        """The MIXMONITOR_FILENAME of a recording of ``chan`` (see ``recording_names``)."""
        if self.recording_names == "dialplan":
            day, hms = time.strftime("%Y%m%d %H%M%S", time.gmtime(self.now())).split()
            return f"{self.recordings_dir}/{day}/{chan.linkedid}-{chan.uniqueid}-{queue}-{hms}.wav"
        return f"{self.recordings_dir}/{queue}-{self._filename_ts()}-{chan.uniqueid}.wav"

    def _write_recording(self, name: str, seconds: float) -> None:
        """What MixMonitor leaves behind (``write_recordings``); errors are logged."""
        if not self.write_recordings or not name:
            return
        try:
            from recordings.audio import write_tone_wav

            write_tone_wav(name, max(0.0, seconds))
        except OSError as exc:
            log.warning("simulator could not write recording %s: %s", name, exc)

    # ------------------------------------------------------------------ calls
    async def place_call(self, spec: CallSpec) -> PlacedCall:
        """Play one call to its end; returns when the last event is sent."""
        if spec.outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}")
        if spec.ivr_choice not in self.queues:
            raise ValueError(f"unknown queue {spec.ivr_choice!r}")
        order = tuple(spec.ring_order) or ((spec.agent,) if spec.agent else ())
        answering = () if spec.outcome == "abandoned" else (spec.agent,)
        for a in order + answering:
            if a not in self.agents:
                raise ValueError(f"unknown agent {a!r}")
        if answering and spec.agent not in order:
            raise ValueError("ring_order must contain the answering agent")
        reserved = set(order) | set(answering)
        self._reserve(reserved)
        # the call runs in a task of its own, so that stop() can end it
        # without cancelling the task that asked for it
        task = asyncio.create_task(_CallPlayer(self, spec, order).run())
        self._calls.add(task)
        try:
            return await asyncio.shield(task)
        finally:
            if task.done():
                self._release(reserved)
                self._calls.discard(task)
            else:  # our caller was cancelled: the call plays on
                def _done(t: asyncio.Task, r: set[str] = reserved) -> None:
                    self._release(r)
                    self._calls.discard(t)
                task.add_done_callback(_done)

    def _reserve(self, agents: Iterable[str]) -> None:
        for a in agents:
            self._busy[a] = self._busy.get(a, 0) + 1

    def _release(self, agents: Iterable[str]) -> None:
        for a in agents:
            n = self._busy.get(a, 0) - 1
            if n > 0:
                self._busy[a] = n
            else:
                self._busy.pop(a, None)

    @property
    def busy_agents(self) -> frozenset[str]:
        """Agents ringing or talking on a simulated call right now."""
        return frozenset(self._busy)

    def free_agents(self, queue: str) -> list[str]:
        members = self.members.get(queue, {})
        return [a for a, qs in self.agents.items() if queue in qs and a not in self._busy
                and not (self.interface(a) in members and members[self.interface(a)].paused)]

    def add_agent(self, ext: str, queues: Sequence[str] | Mapping[str, int], *, announce: bool = False) -> None:
        """Make ``ext`` a static member of ``queues`` (as if queues.conf had
        listed it; storms with many agents).  Nothing is sent on AMI unless
        ``announce`` (then QueueMemberAdded per queue, as a QueueAdd would)."""
        ext = str(ext)
        pen = dict(queues) if isinstance(queues, Mapping) else {q: 0 for q in queues}
        for q in pen:
            if q not in self.queues:
                raise ValueError(f"unknown queue {q!r}")
        order = [q for q in QUEUE_HASH_ORDER if q in pen] + [q for q in pen if q not in QUEUE_HASH_ORDER]
        self.agents[ext] = {**self.agents.get(ext, {}), **{q: int(pen[q]) for q in order}}
        self._calls_taken.setdefault(ext, 0)
        self._last_call.setdefault(ext, 0)
        for q in order:
            members = self.members.setdefault(q, {})
            if self.interface(ext) in members:
                continue
            m = _Member(q, self.interface(ext), self.member_name(ext), int(pen[q]), login_time=self._login_time)
            members[m.interface] = m
            if announce:
                self._emit("QueueMemberAdded", "agent,all", self._member_fields(m))

    # ------------------------------------------------------------------- CDR
    async def cdr_flush(self, timeout: float = 10.0) -> None:
        """Wait until every CDR handed to the sink so far is written."""
        tasks = list(self._cdr_tasks)
        if tasks:
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout)

    def _post_cdr(self, player: "_CallPlayer", placed: "PlacedCall") -> None:
        sink = self.cdr_sink
        if sink is None:
            return
        rows = self._cdr_rows(player, placed)

        async def post() -> None:
            try:
                res = sink(rows)
                if asyncio.iscoroutine(res) or isinstance(res, asyncio.Future):
                    await res
                self.cdr_posted += 1
            except Exception:  # Asterisk logs and drops the record
                self.cdr_failures += 1
                log.exception("simulator: CDR sink failed for %s", placed.linkedid)
        t = asyncio.get_running_loop().create_task(post())
        self._cdr_tasks.add(t)
        t.add_done_callback(self._cdr_tasks.discard)

    def _cdr_rows(self, player: "_CallPlayer", placed: "PlacedCall") -> list[dict]:
        """The CDR rows Asterisk 12+ would post for one queue call, keyed as
        cdr_pgsql names its columns (party A = the caller channel):

        * one row per member rung who did not answer: ``dstchannel`` the
          member channel, ``disposition`` ``NO ANSWER``, no ``answer``;
        * the caller's row: answered by an agent → ``dstchannel`` that
          member channel, ``ANSWERED``, ``answer`` when the agent answered,
          ``billsec`` the talk; otherwise ``dstchannel`` empty and
          ``ANSWERED`` (the dialplan answered the caller before the IVR),
          ``lastapp`` ``Queue`` (gave up in the queue) or ``AGI`` (hung up
          in the IVR).
        Times are the simulator's clock (:meth:`now`), as aware datetimes."""
        from datetime import datetime, timezone

        def ts(t: float | None):
            return datetime.fromtimestamp(t, timezone.utc) if t is not None else None

        c2 = player.c2
        end = player.cdr_ended if player.cdr_ended is not None else self.now()
        start = player.cdr_started
        num = "" if c2.cid_num == UNKNOWN else c2.cid_num
        name = "" if c2.cid_name == UNKNOWN else c2.cid_name
        queued = placed.outcome != "ivr_hangup"
        base = {"clid": f'"{name}" <{num}>' if name else (f"<{num}>" if num else ""), "src": num,
                "dst": player.entry, "dcontext": "hotline", "channel": c2.name,
                "lastapp": "Queue" if queued else "AGI",
                "lastdata": f"{player.queue},,,," if queued else f"agi://{self.agi_host}:{self.agi_port}/ivr",
                "amaflags": 3, "accountcode": "", "uniqueid": c2.uniqueid, "linkedid": c2.linkedid,
                "peeraccount": "", "userfield": ""}
        rows: list[dict] = []
        answered_chan = player.cdr_answer[0] if player.cdr_answer else ""
        for _agent, chan, rang_at in player.cdr_rings:
            if chan == answered_chan:
                continue
            r_end = player.cdr_ring_end.get(chan, end)
            rows.append({**base, "start": ts(rang_at), "answer": None, "end": ts(r_end),
                         "duration": int(round(r_end - rang_at)), "billsec": 0, "dstchannel": chan,
                         "disposition": "NO ANSWER", "sequence": next(self._cdr_seq)})
        if player.cdr_answer is not None:
            chan, at = player.cdr_answer
            rows.append({**base, "start": ts(start), "answer": ts(at), "end": ts(end),
                         "duration": int(round(end - start)), "billsec": int(round(end - at)),
                         "dstchannel": chan, "disposition": "ANSWERED", "sequence": next(self._cdr_seq)})
        else:
            up = player.cdr_up
            rows.append({**base, "start": ts(start), "answer": ts(up), "end": ts(end),
                         "duration": int(round(end - start)), "billsec": int(round(end - up)) if up else 0,
                         "dstchannel": "", "disposition": "ANSWERED" if up is not None else "NO ANSWER",
                         "sequence": next(self._cdr_seq)})
        return rows

    async def run_traffic(
        self,
        rate_per_min: float,
        mix: Mapping[str, float] | None = None,
        abandon_ratio: float = 0.15,
        callers: Sequence[tuple[str, str, str]] | None = None,
        agents: Sequence[str] | None = None,
        *,
        caller_hangup_ratio: float = 0.3,
        ring_s: tuple[float, float] = (2.0, 8.0),
        talk_s: tuple[float, float] = (30.0, 240.0),
        wait_s: tuple[float, float] = (0.0, 20.0),
        outages: Mapping[str, str] | None = None,
        ivr_mix: IvrMix | None = None,
    ) -> None:
        """Place random calls (Poisson arrivals) until cancelled.

        ``callers`` are ``(number, name, customer_id)``; ``agents`` limits the
        members used (default all).  An agent busy on a call is not rung
        until free; a call finding no free agent waits and abandons.
        ``outages`` maps a customer_id to an OUTAGE_ID (without an IVR).
        With a FastAGI IVR configured, every call goes through it: ``mix`` is
        what the callers mean to choose, ``ivr_mix`` how they behave in the
        IVR (wrong keys, no key, hang-ups, withheld numbers); the IVR decides
        the queue, the customer and the outage.
        """
        mix = dict(mix or {"repair": 0.5, "complaint": 0.2, "enquiry": 0.3})
        callers = list(callers or [("13800138000", "张三", "3100012345")])
        allowed = set(agents) if agents is not None else set(self.agents)
        queues = [q for q in mix if q in self.queues]
        weights = [mix[q] for q in queues]
        rng = self.rng
        try:
            while True:
                await self._sleep(rng.expovariate(rate_per_min / 60.0))
                queue = rng.choices(queues, weights)[0]
                num, name, cust = rng.choice(callers)
                free = [a for a in self.free_agents(queue) if a in allowed]
                rng.shuffle(free)
                abandoned = not free or rng.random() < abandon_ratio
                if self.queues[queue].strategy == "ringall":
                    ring_order = tuple(free)
                else:
                    ring_order = tuple(free[:1])
                agent = ring_order[0] if ring_order else ""
                outage = (outages or {}).get(cust, "")
                if abandoned:
                    spec = CallSpec(num, name, queue, cust, outage, agent=agent,
                                    outcome="abandoned",
                                    ring_s=self.queues[queue].ring_timeout_s,
                                    wait_s=rng.uniform(*wait_s) + 1.0, ring_order=ring_order)
                else:
                    outcome = "caller_hangup" if rng.random() < caller_hangup_ratio else "answered"
                    spec = CallSpec(num, name, queue, cust, outage, agent=agent, outcome=outcome,
                                    ring_s=rng.uniform(*ring_s), talk_s=rng.uniform(*talk_s),
                                    ring_order=ring_order)
                if self.agi_enabled:
                    spec = self._ivr_behaviour(spec, ivr_mix or IvrMix(), callers)
                # reserve now, so that the next arrival does not pick them
                self._reserve(ring_order)
                t = asyncio.create_task(self._traffic_call(spec, ring_order))
                self._calls.add(t)
                t.add_done_callback(self._calls.discard)
        except asyncio.CancelledError:
            raise

    def _ivr_behaviour(self, spec: CallSpec, m: IvrMix,
                       callers: Sequence[tuple[str, str, str]]) -> CallSpec:
        """Draw how one random caller behaves in the IVR (see :class:`IvrMix`)."""
        rng = self.rng
        num, name, account = spec.caller_num, spec.caller_name, spec.customer_id
        dtmf: tuple[str | None, ...] = ()
        if not num or rng.random() < m.withheld:
            num, name = "", ""
            if rng.random() < m.withheld_account:
                known = [c[2] for c in callers if c[2]]
                account = account or (rng.choice(known) if known else "")
            else:
                account = ""
        else:
            r = rng.random()
            if r < m.wrong_key:
                dtmf = (rng.choice("456789"),)
            elif r < m.wrong_key + m.no_key:
                dtmf = (None,)
        hangup_at = rng.randint(1, max(1, m.hangup_within)) if rng.random() < m.hangup else 0
        return replace(spec, caller_num=num, caller_name=name, customer_id=account, account_no=account,
                       outage_id="", dtmf=dtmf, ivr_hangup_at=hangup_at)

    async def _traffic_call(self, spec: CallSpec, reserved: Sequence[str]) -> None:
        try:
            await self.place_call(spec)
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("simulated call failed")
        finally:
            self._release(reserved)


class _SimAgiPeer(AsteriskAgiPeer):
    """The Asterisk side of one call's FastAGI session, with the AMI events
    Asterisk sends meanwhile (trace 01: AGIExecStart/End around every
    command, the answer inside ANSWER, VarSet inside SET VARIABLE,
    DTMFBegin/End inside GET DATA; trace 11: the phone half's Hangup inside
    the prompt the caller hung up in)."""

    def __init__(self, player: "_CallPlayer", env: bytes) -> None:
        sim, spec = player.sim, player.spec
        super().__init__(sim.agi_host or "127.0.0.1", sim.agi_port or 0, env, keys=spec.dtmf,
                         default_key=player._default_key, hangup_at_play=spec.ivr_hangup_at or None,
                         timeout=sim.agi_timeout)
        self.player = player
        self.sim = sim
        self.answered = False

    def get_variable(self, name: str) -> str | None:
        c2 = self.player.c2
        if name == "CALLERID(name)":
            return None if c2.cid_name in ("", UNKNOWN) else c2.cid_name
        if name == "CALLERID(num)":
            return None if c2.cid_num in ("", UNKNOWN) else c2.cid_num
        return c2.allvars.get(name.lstrip("_")) or None

    async def on_start(self, command_id: int, command: str) -> None:
        self.sim._emit("AGIExecStart", "agi,all", self.sim._snap(self.player.c2),
                       [("CommandId", str(command_id)), ("Command", _clean(command))])

    async def on_end(self, command_id: int, command: str, reply: str) -> None:
        code, _, rest = reply.partition(" ")
        if code == "200":
            code, result = ("-1", "Failure") if rest.startswith("result=-1") else ("200", "Success")
        else:
            result = rest
        self.sim._emit("AGIExecEnd", "agi,all", self.sim._snap(self.player.c2),
                       [("CommandId", str(command_id)), ("Command", _clean(command)),
                        ("ResultCode", code), ("Result", _clean(result))])

    async def on_answer(self) -> None:
        if not self.answered:
            self.answered = True
            self.player._answer_caller()

    async def on_play(self, verb: str, path: str, max_digits: int) -> None:
        await self.sim._sleep(self.sim.ivr_prompt_s if verb == "STREAM FILE" else self.sim.ivr_key_s)

    async def on_dtmf(self, digits: str) -> None:
        c2 = self.player.c2
        for d in digits:
            self.sim._emit("DTMFBegin", "dtmf,all", self.sim._snap(c2),
                           [("Digit", d), ("Direction", "Received")])
            self.sim._emit("DTMFEnd", "dtmf,all", self.sim._snap(c2),
                           [("Digit", d), ("DurationMs", "250"), ("Direction", "Received")])

    async def on_caller_hangup(self) -> None:
        self.sim._hangup(self.player.c1, 0)

    async def on_set_variable(self, name: str, value: str) -> None:
        self.sim._var_set(self.player.c2, name, value)


class _CallPlayer:
    """Plays one call; the order of emits below is the order in the traces."""

    def __init__(self, sim: PbxSimulator, spec: CallSpec, order: tuple[str, ...]) -> None:
        self.sim = sim
        self.spec = spec
        self.order = order
        self.queue = spec.ivr_choice
        self.qconf = sim.queues[self.queue]
        self.entry = "ivr" if spec.via_ivr else spec.ivr_choice
        self.token = self  # what QueueStatus lists: self.c2, self.joined_at
        self.joined_at = sim.now()
        # who answers and how the call ends; the IVR may change the queue,
        # and with it the members rung (_replan)
        self.agent = spec.agent
        self.outcome = spec.outcome
        self.wait_s = spec.wait_s
        self.extra_reserved: set[str] = set()
        # what Asterisk's CDR would record (PbxSimulator.cdr_sink); sends nothing
        self.cdr_started = sim.now()
        self.cdr_up: float | None = None  # the caller channel answered (dialplan)
        self.cdr_rings: list[tuple[str, str, float]] = []  # (agent, member channel, rung at)
        self.cdr_ring_end: dict[str, float] = {}  # member channel -> ring ended at
        self.cdr_answer: tuple[str, float] | None = None  # (member channel, answered at)
        self.cdr_ended: float | None = None

    # helpers -----------------------------------------------------------------
    def _join(self) -> tuple[int, int]:
        w = self.sim._waiting.setdefault(self.queue, [])
        w.append(self.token)
        return len(w), len(w)

    def _leave(self) -> tuple[int, int]:
        w = self.sim._waiting.setdefault(self.queue, [])
        pos = w.index(self.token) + 1 if self.token in w else 1
        if self.token in w:
            w.remove(self.token)
        return pos, len(w)

    def _position(self) -> int:
        w = self.sim._waiting.get(self.queue, [])
        return w.index(self.token) + 1 if self.token in w else 1

    async def run(self) -> PlacedCall:
        try:
            placed = await self._run()
            self.cdr_ended = self.sim.now()
            self.sim._post_cdr(self, placed)
            return placed
        finally:
            w = self.sim._waiting.get(self.queue, [])
            if self.token in w:
                w.remove(self.token)
            self.sim._release(self.extra_reserved)
            self.extra_reserved.clear()

    async def _run(self) -> PlacedCall:
        sim, spec = self.sim, self.spec
        c1, c2 = sim._local_pair(self.entry, "hotline", None)
        self.c1, self.c2 = c1, c2
        c1.run("Wait", "3600")
        agi = spec.via_ivr and sim.agi_enabled
        if agi:
            c2.run("AGI", f"agi://{sim.agi_host}:{sim.agi_port}/{sim.agi_route},{IVR_FALLBACK_QUEUE}")
        elif spec.via_ivr:
            c2.run("AGI", "agi://127.0.0.1:4573/ivr")
        sim._newchannel(c1)
        sim._newchannel(c2)
        sim._dial("DialBegin", None, c1, [("DialString", f"{self.entry}@hotline")])
        cust = spec.customer_id or ("31000" + spec.caller_num[-5:])
        ivr: IvrOutcome | None = None
        if agi:
            # caller-setup derives a default CRM id; the IVR then sets the real one
            self._caller_setup("31000" + spec.caller_num[-5:])
            c2.at("hotline", "ivr", 3)
            ivr = await self._run_ivr()
            if ivr.hung_up:  # trace 11: the ;2 half goes once the AGI socket closed
                sim._hangup(c2, 0)
                return PlacedCall(c2.uniqueid, c2.linkedid, c2.name, "", "ivr_hangup", None, ivr)
            self._replan(ivr.queue)
        elif spec.via_ivr:
            # caller-setup derives a default CRM id; the IVR then sets the real one
            self._caller_setup("31000" + spec.caller_num[-5:])
            c2.at("hotline", "ivr", 3)
            self._answer_caller()
            await sim._sleep(spec.ivr_s)
            sim._var_set(c2, "IVR_CHOICE", spec.ivr_choice)
            sim._var_set(c2, "__CUSTOMER_ID", cust)
            if spec.outage_id:
                sim._var_set(c2, "__OUTAGE_ID", spec.outage_id)
        else:
            c2.at("hotline", self.entry, 2)
            self._answer_caller()
            self._caller_setup(cust)
            c2.at("hotline", self.entry, 4)
            sim._var_set(c2, "IVR_CHOICE", spec.ivr_choice)
            if spec.outage_id:
                c2.priority = 5
                sim._var_set(c2, "__OUTAGE_ID", spec.outage_id)
        c2.at("hotline", "enter-queue", 2)
        sim._var_set(c2, "__IVR_CHOICE", self.queue)
        self.monitor_name = sim._recording_name(self.queue, c2)[: -len(".wav")]
        c2.priority = 5
        c2.run("Queue", f"{self.queue},,,,")
        self.joined_at = sim.now()
        pos, count = self._join()
        self.orig_pos = pos
        sim._emit("QueueCallerJoin", "agent,all", sim._snap(c2),
                  [("Queue", self.queue), ("Position", str(pos)), ("Count", str(count))])
        if self.outcome == "abandoned":
            await self._abandon_flow()
            agent = None
        else:
            await self._answer_flow()
            agent = self.agent
        return PlacedCall(c2.uniqueid, c2.linkedid, c2.name, self.queue, self.outcome, agent, ivr)

    # the IVR over FastAGI ------------------------------------------------------
    def _default_key(self, max_digits: int) -> str | None:
        spec = self.spec
        if max_digits > 1:  # the account-number prompt of a withheld/unknown caller
            account = spec.account_no if spec.account_no is not None else spec.customer_id
            return "".join(ch for ch in account if ch.isdigit())  # "" = '#': skip
        return IVR_KEYS.get(spec.ivr_choice, "0")

    async def _run_ivr(self) -> IvrOutcome:
        sim, spec, c2 = self.sim, self.spec, self.c2
        env = agi_environment(sim.agi_host or "127.0.0.1", sim.agi_port or 0, sim.agi_route,
                              channel=c2.name, uniqueid=c2.uniqueid,
                              callerid="" if c2.cid_num == UNKNOWN else c2.cid_num,
                              calleridname="" if c2.cid_name == UNKNOWN else c2.cid_name,
                              context=c2.context, extension=c2.exten, priority=c2.priority,
                              args=(IVR_FALLBACK_QUEUE,))
        peer = _SimAgiPeer(self, env)
        t = await peer.call()
        if t.caller_hung_up:
            return IvrOutcome("HANGUP", "", c2.vars.get("CUSTOMER_ID", ""), c2.vars.get("OUTAGE_ID", ""),
                              "", t)
        if not peer.answered:  # [hotline-inbound] answers before AGI() in production
            self._answer_caller()
        status = "SUCCESS" if t.ok else "FAILURE"
        note = t.variables.get("__IVR_NOTE", t.variables.get("IVR_NOTE", ""))
        c2.priority = 5
        if status != "SUCCESS":
            log.warning("simulator: FastAGI IVR agi://%s:%s/%s failed for %s (%s); "
                        "routing to %s like the dialplan", sim.agi_host, sim.agi_port, sim.agi_route,
                        c2.uniqueid, t.failure, IVR_FALLBACK_QUEUE)
            note = "ivr-unavailable"
            sim._var_set(c2, "__IVR_NOTE", note)
        choice = "".join(ch for ch in t.variables.get("IVR_CHOICE", "").lower() if "a" <= ch <= "z")
        if choice not in sim.queues:
            fallback = IVR_FALLBACK_QUEUE if IVR_FALLBACK_QUEUE in sim.queues else spec.ivr_choice
            if status == "SUCCESS":
                log.warning("simulator: IVR set no valid IVR_CHOICE (%r) for %s; routing to %s",
                            t.variables.get("IVR_CHOICE"), c2.uniqueid, fallback)
            if not note:
                note = "no-valid-choice"
                sim._var_set(c2, "__IVR_NOTE", note)
            choice = fallback
        return IvrOutcome(status, choice, c2.vars.get("CUSTOMER_ID", ""), c2.vars.get("OUTAGE_ID", ""),
                          note, t)

    def _replan(self, queue: str) -> None:
        """The IVR chose ``queue``: ring members of that queue."""
        sim = self.sim
        if queue == self.queue:
            return
        log.info("simulator: IVR routed %s to %s (caller meant %s)", self.c2.uniqueid, queue, self.queue)
        self.queue, self.qconf = queue, sim.queues[queue]
        keep = [a for a in self.order if queue in sim.agents.get(a, {})]
        if self.outcome != "abandoned" and self.agent not in keep:
            free = [a for a in sim.free_agents(queue) if a not in keep]
            sim.rng.shuffle(free)
            if free:
                self.agent = free[0]
                sim._reserve([self.agent])
                self.extra_reserved.add(self.agent)
                keep.append(self.agent)
            else:  # nobody free in that queue: the caller waits and gives up
                self.outcome = "abandoned"
                self.wait_s = max(self.wait_s, 10.0)
        if self.outcome != "abandoned" and self.qconf.strategy != "ringall":
            keep = [self.agent]
        self.order = tuple(keep)

    def _caller_setup(self, cust: str) -> None:
        sim, c2, spec = self.sim, self.c2, self.spec
        prio_back = (c2.context, c2.exten, c2.priority)
        c2.at("caller-setup", "s", 1)
        c2.cid_num = spec.caller_num
        sim._newcallerid(c2)
        c2.priority = 2
        c2.cid_name = spec.caller_name
        sim._newcallerid(c2)
        c2.priority = 3
        sim._var_set(c2, "__CUSTOMER_ID", cust)
        c2.at(*prio_back)

    def _answer_caller(self) -> None:
        sim = self.sim
        if self.cdr_up is None:
            self.cdr_up = sim.now()
        sim._newstate(self.c2, 6)
        sim._newstate(self.c1, 6)
        sim._dial("DialEnd", None, self.c1, [("DialStatus", "ANSWER")])

    def _ring(self, agents: Sequence[str]) -> dict[str, tuple[_Chan, _Chan]]:
        """AgentCalled … DialState RINGING for members rung together."""
        sim, c2 = self.sim, self.c2
        legs: dict[str, tuple[_Chan, _Chan]] = {}
        inherited = [(n, c2.vars.get(n, "")) for n in ("IVR_CHOICE", "OUTAGE_ID", "CUSTOMER_ID")]
        inherited = [(n, v) for n, v in inherited if v]
        for a in agents:
            m1, m2 = sim._local_pair(a, "agents", c2.linkedid)
            m1.run("AppQueue", "(Outgoing Line)")
            m2.run("Wait", str(int(round(self.spec.ring_s))))
            legs[a] = (m1, m2)
            self.cdr_rings.append((a, m1.name, sim.now()))
            sim._newchannel(m1)
            sim._newchannel(m2)
            m1.cid_num = c2.exten  # app_queue: the caller's dialplan extension
            sim._newcallerid(m1)
            m1.con_num, m1.con_name = c2.cid_num, c2.cid_name
            for n, v in inherited:
                sim._var_set(m1, "__" + n, v)
            for n, v in inherited:
                sim._var_set(m2, "__" + n, v, stale=True)
            m2.vars.update(dict(inherited))
            m2.cid_num, m2.cid_name = c2.cid_num, c2.cid_name
            m2.con_num, m2.con_name = m1.cid_num, m1.cid_name
            sim._newcallerid(m2)
            m1.exten = c2.exten
            sim._agent_event("AgentCalled", c2, m1, self.queue, a)
            sim._dial("DialBegin", c2, m1, [("DialString", sim.interface(a))])
        for a in agents:
            sim._newstate(legs[a][0], 5)
        for a in agents:
            sim._member_status(a, 2)
        for a in reversed(agents):
            sim._dial("DialState", c2, legs[a][0], [("DialStatus", "RINGING")])
        return legs

    def _no_answer(self, legs: dict[str, tuple[_Chan, _Chan]], ring_s: float) -> None:
        sim, c2 = self.sim, self.c2
        for a, (m1, m2) in legs.items():
            self.cdr_ring_end[m1.name] = sim.now()
            sim._agent_event("AgentRingNoAnswer", c2, m1, self.queue, a,
                             [("RingTime", str(int(round(ring_s * 1000))))])
            sim._dial("DialEnd", c2, m1, [("DialStatus", "NOANSWER")])
            sim._dial("DialEnd", c2, m1, [("DialStatus", "CANCEL")])
            sim._hangup(m1, 0)
            m2.priority = _PRIO_NOANSWER
            sim._hangup(m2, 0)
            sim._member_status(a, 1)

    def _groups(self) -> list[tuple[str, ...]]:
        if self.qconf.strategy == "ringall":
            return [self.order]
        return [(a,) for a in self.order]

    async def _abandon_flow(self) -> None:
        sim, spec, c1, c2 = self.sim, self.spec, self.c1, self.c2
        wait = self.wait_s
        t = 0.0
        ringing: dict[str, tuple[_Chan, _Chan]] = {}
        groups = self._groups()
        gi = 0
        while groups and t < wait:
            group = groups[gi % len(groups)]
            gi += 1
            legs = self._ring(group)
            if t + spec.ring_s < wait:
                await sim._sleep(spec.ring_s)
                self._no_answer(legs, spec.ring_s)
                t += spec.ring_s
                pause = min(self.qconf.retry_s, wait - t)
                await sim._sleep(pause)
                t += pause
            else:
                ringing = legs
                await sim._sleep(wait - t)
                t = wait
        if t < wait:
            await sim._sleep(wait - t)
        # the caller's phone half hangs up
        sim._hangup(c1, 0)
        for a, (m1, _m2) in ringing.items():
            self.cdr_ring_end[m1.name] = sim.now()
            sim._dial("DialEnd", c2, m1, [("DialStatus", "CANCEL")])
            sim._dial("DialEnd", c2, m1, [("DialStatus", "CANCEL")])
            sim._hangup(m1, 0)
        pos = self._position()
        sim._qstats.setdefault(self.queue, {}).setdefault("abandoned", 0)
        sim._qstats[self.queue]["abandoned"] += 1
        sim._emit("QueueCallerAbandon", "agent,all", sim._snap(c2), [
            ("Queue", self.queue), ("Position", str(pos)),
            ("OriginalPosition", str(self.orig_pos)), ("HoldTime", str(int(round(wait))))])
        pos, count = self._leave()
        sim._emit("QueueCallerLeave", "agent,all", sim._snap(c2),
                  [("Queue", self.queue), ("Position", str(pos)), ("Count", str(count))])
        for a, (_m1, m2) in ringing.items():
            m2.priority = _PRIO_NOANSWER
            sim._hangup(m2, 0)
            sim._member_status(a, 1)
        sim._hangup(c2, 0)

    async def _answer_flow(self) -> None:
        sim, spec, c1, c2 = self.sim, self.spec, self.c1, self.c2
        hold = self.wait_s
        await sim._sleep(self.wait_s)
        if self.qconf.strategy == "ringall":
            group = self.order
        else:
            # members before the answering agent ring out unanswered
            for a in self.order:
                if a == self.agent:
                    break
                legs = self._ring((a,))
                await sim._sleep(self.qconf.ring_timeout_s)
                self._no_answer(legs, self.qconf.ring_timeout_s)
                await sim._sleep(self.qconf.retry_s)
                hold += self.qconf.ring_timeout_s + self.qconf.retry_s
            group = (self.agent,)
        legs = self._ring(group)
        await sim._sleep(spec.ring_s)
        hold += spec.ring_s
        m1, m2 = legs[self.agent]
        losers = [(a, l) for a, l in legs.items() if a != self.agent]
        # the agent answers
        m2.priority = _PRIO_ANSWER
        sim._newstate(m2, 6)
        sim._newstate(m1, 6)
        sim._dial("DialEnd", c2, m1, [("DialStatus", "ANSWER")])
        m2.priority = _PRIO_TALK_CUT  # in Wait(TALKSECS) now (CoreShowChannels, trace 06)
        for _a, (l1, _l2) in losers:
            self.cdr_ring_end[l1.name] = sim.now()
            sim._dial("DialEnd", c2, l1, [("DialStatus", "CANCEL")])
            sim._dial("DialEnd", c2, l1, [("DialStatus", "CANCEL")])
            sim._hangup(l1, 26)
        rec = self.qconf.recording
        member_file = ""
        if rec == "caller":
            sim._var_set(c2, "MIXMONITOR_FILENAME", self.monitor_name + ".wav")
            sim._emit("MixMonitorStart", "call,all", sim._snap(c2))
        pos, count = self._leave()
        sim._emit("QueueCallerLeave", "agent,all", sim._snap(c2),
                  [("Queue", self.queue), ("Position", str(pos)), ("Count", str(count))])
        if rec == "member":
            m1.at("queue-member-connect", "s", 2)
            member_file = sim._recording_name(self.queue, m1)
            sim._var_set(m1, "MIXMONITOR_FILENAME", member_file)
            sim._emit("MixMonitorStart", "call,all", sim._snap(m1))
            m1.at("agents", c2.exten, 1)
        for a, (_l1, l2) in losers:
            sim._member_status(a, 1)
            l2.priority = _PRIO_RING_CUT
            sim._hangup(l2, 26)
        hold_time = str(int(round(hold)))
        m2.run("Wait", str(int(round(spec.talk_s))))
        sim._in_call.add((sim.interface(self.agent), self.queue))
        self.cdr_answer = (m1.name, sim.now())
        sim._agent_event("AgentConnect", c2, m1, self.queue, self.agent,
                         [("HoldTime", hold_time), ("RingTime", str(int(round(spec.ring_s))))])
        bridge = str(uuid.uuid4())
        sim._bridge("BridgeCreate", bridge, 0)
        sim._bridge("BridgeEnter", bridge, 1, m1)
        sim._bridge("BridgeEnter", bridge, 2, c2)
        await sim._sleep(spec.talk_s)
        talk = str(int(round(spec.talk_s)))

        def complete(reason: str) -> None:
            st = sim._qstats.setdefault(self.queue, {"completed": 0, "abandoned": 0,
                                                     "holdtime": 0, "talktime": 0})
            n = st["completed"] = st.get("completed", 0) + 1
            st["holdtime"] = (st.get("holdtime", 0) * (n - 1) + int(hold_time)) // n
            st["talktime"] = (st.get("talktime", 0) * (n - 1) + int(talk)) // n
            sim._in_call.discard((sim.interface(self.agent), self.queue))
            sim._calls_taken[self.agent] = sim._calls_taken.get(self.agent, 0) + 1
            sim._last_call[self.agent] = int(sim.now())
            sim._agent_event("AgentComplete", c2, m1, self.queue, self.agent,
                             [("HoldTime", hold_time), ("TalkTime", talk), ("Reason", reason)])

        def stop_member_recording() -> None:
            if rec == "member":
                sim._write_recording(member_file, spec.talk_s)
                m1.at("agent-hangup", "s", 2)
                sim._emit("MixMonitorStop", "call,all", sim._snap(m1))
                m1.at("agents", c2.exten, 1)

        def stop_caller_recording() -> None:
            if rec == "caller":
                sim._write_recording(self.monitor_name + ".wav", spec.talk_s)
                back = (c2.context, c2.exten, c2.priority)
                c2.at("caller-hangup", "s", 2)
                sim._emit("MixMonitorStop", "call,all", sim._snap(c2))
                c2.at(*back)

        if self.outcome == "answered":  # trace 01: the agent hangs up
            m2.priority = _PRIO_AGENT_HANGUP
            sim._hangup(m2, 16)
            sim._bridge("BridgeLeave", bridge, 1, m1)
            complete("agent")
            stop_member_recording()
            sim._hangup(m1, 16)
            sim._member_status(self.agent, 1)
            sim._bridge("BridgeLeave", bridge, 0, c2)
            stop_caller_recording()
            sim._hangup(c1, 16)
            sim._bridge("BridgeDestroy", bridge, 0)
            sim._hangup(c2, 16)
        else:  # trace 02: the caller hangs up
            sim._hangup(c1, 0)
            complete("caller")
            sim._bridge("BridgeLeave", bridge, 1, c2)
            sim._bridge("BridgeLeave", bridge, 0, m1)
            stop_member_recording()
            sim._bridge("BridgeDestroy", bridge, 0)
            m2.priority = _PRIO_TALK_CUT
            sim._hangup(m2, 16)
            sim._hangup(m1, 16)
            stop_caller_recording()
            sim._hangup(c2, 16)
            sim._member_status(self.agent, 1)


# ---------------------------------------------------------------------- CDR
CdrSink = Callable[[list[dict]], "Awaitable[None] | None"]


class CdrPgsqlWriter:
    """A :data:`CdrSink` that writes like Asterisk's ``cdr_pgsql``: it reads
    the table's columns once and inserts, per CDR row, the values of the
    columns it has (names double-quoted: ``"end"`` is reserved), one
    INSERT per row.  ``await close()`` when done."""

    def __init__(self, dsn: str, table: str = "cdr") -> None:
        self.dsn = dsn
        self.table = table
        self._conn = None
        self._columns: tuple[str, ...] | None = None
        self._lock = asyncio.Lock()
        self.rows_written = 0

    async def __call__(self, rows: list[dict]) -> None:
        import asyncpg

        async with self._lock:
            if self._conn is None or self._conn.is_closed():
                self._conn = await asyncpg.connect(self.dsn)
                cols = await self._conn.fetch(
                    "SELECT attname FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 "
                    "AND NOT attisdropped ORDER BY attnum", self.table)
                self._columns = tuple(r["attname"] for r in cols)
            for row in rows:
                names = [c for c in self._columns or () if c in row]
                sql = 'INSERT INTO {} ({}) VALUES ({})'.format(
                    self.table, ", ".join(f'"{c}"' for c in names),
                    ", ".join(f"${i}" for i in range(1, len(names) + 1)))
                await self._conn.execute(sql, *(row[c] for c in names))
                self.rows_written += 1

    async def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
            self._conn = None


# ---------------------------------------------------------------------- CLI
async def _amain(args: argparse.Namespace) -> None:
    agi_host, _, agi_port = (args.agi or "").rpartition(":")
    sim = PbxSimulator(args.host, args.port, args.username, args.secret, speed=args.speed,
                       agi_host=agi_host or None, agi_port=int(agi_port) if agi_port else None)
    port = await sim.start()
    print(f"PBX simulator (AMI) on {args.host}:{port} user={args.username}", flush=True)
    traffic = None
    if args.rate > 0:
        traffic = asyncio.create_task(sim.run_traffic(args.rate, abandon_ratio=args.abandon_ratio, callers=[
            ("13800138000", "张三", "3100012345"), ("13900139001", "李四", "3100023456"),
            ("13700137002", "王五", "3100034567"), ("13600136003", "国网客户", "3100045678")]))
    try:
        await asyncio.Event().wait()
    finally:
        if traffic is not None:
            traffic.cancel()
        await sim.stop()


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m cti.simulator", description="AMI PBX simulator")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5038)
    p.add_argument("--username", default="acceptance")
    p.add_argument("--secret", default="acceptance-secret")
    p.add_argument("--speed", type=float, default=1.0, help="time compression factor")
    p.add_argument("--rate", type=float, default=6.0, help="random calls per minute (0: none)")
    p.add_argument("--abandon-ratio", type=float, default=0.15)
    p.add_argument("--agi", metavar="HOST:PORT", default="",
                   help="FastAGI IVR to run the calls through (e.g. 127.0.0.1:4573); default: no IVR dialogue")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_amain(args))


if __name__ == "__main__":
    main()

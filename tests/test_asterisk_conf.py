"""asterisk-conf/: lint with asterisklint, parse with a small own parser, and
cross-check against asterisk-conf/expected.toml and the Python code.

asterisklint 0.4.3 is used in two ways:
  * its CLI ``asterisklint dialplan-check`` (invoked as
    ``python -c "from asterisklint.main import main; ..."`` so the venv's
    interpreter is used) must exit 0 on extensions.conf with no messages;
  * its Python API (``FileDialplanParser`` / ``FileConfigParser``), run in a
    subprocess because its message registry is process-global, returns every
    message as JSON.  All errors and warnings fail the test except these
    documented asterisklint limitations (false positives):
      - ``I_*`` messages are informational (e.g. I_NOTIMPL_TEMPLATES: "does
        not implement template use yet") and never fail;
      - ``E_CONF_BAD_LINE`` on a section header that uses a template,
        ``[1001](agent-endpoint)``, in pjsip.conf: asterisklint 0.4.3 only
        knows ``[name](!)`` template *definitions*; template use is standard
        Asterisk syntax.  Suppressed only for lines that are exactly such a
        header; this parser checks those sections instead.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "asterisk-conf"
EXPECTED = tomllib.loads((CONF / "expected.toml").read_text(encoding="utf-8"))


# --------------------------------------------------------------------------
# a small parser for Asterisk's .conf format
# --------------------------------------------------------------------------
@dataclass
class Entry:
    key: str
    op: str  # "=" or "=>"
    value: str
    lineno: int


@dataclass
class Section:
    name: str
    lineno: int
    templates: list[str] = field(default_factory=list)
    is_template: bool = False
    entries: list[Entry] = field(default_factory=list)

    def get(self, key: str, default: str | None = None) -> str | None:
        vals = self.getall(key)
        return vals[-1] if vals else default

    def getall(self, key: str) -> list[str]:
        return [e.value for e in self.entries if e.key == key]


_SECTION_RE = re.compile(r"^\[([^\]]+)\](?:\(([^)]*)\))?\s*$")


def _strip_comment(line: str) -> str:
    out = []
    i = 0
    while i < len(line):
        c = line[i]
        if c == "\\" and i + 1 < len(line) and line[i + 1] == ";":
            out.append(";")
            i += 2
            continue
        if c == ";":
            break
        out.append(c)
        i += 1
    return "".join(out).strip()


def parse_conf(path: Path) -> list[Section]:
    sections: list[Section] = []
    cur: Section | None = None
    in_block = False
    for n, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if in_block:
            if "--;" in raw:
                in_block = False
            continue
        if raw.lstrip().startswith(";--"):
            in_block = "--;" not in raw[raw.index(";--") + 3:]
            continue
        line = _strip_comment(raw)
        if not line:
            continue
        m = _SECTION_RE.match(line)
        if m:
            opts = [o.strip() for o in (m.group(2) or "").split(",") if o.strip()]
            cur = Section(m.group(1).strip(), n, [o for o in opts if o != "!"], "!" in opts)
            sections.append(cur)
            continue
        assert not line.startswith("#"), f"{path.name}:{n}: preprocessor lines not expected: {line}"
        m = re.match(r"^([^=]+?)\s*(=>|=)\s*(.*)$", line)
        assert m, f"{path.name}:{n}: not 'key = value': {raw!r}"
        assert cur is not None, f"{path.name}:{n}: entry outside a section"
        cur.entries.append(Entry(m.group(1).strip(), m.group(2), m.group(3).strip(), n))
    return sections


def sections_by_name(sections: list[Section]) -> dict[str, list[Section]]:
    out: dict[str, list[Section]] = {}
    for s in sections:
        out.setdefault(s.name, []).append(s)
    return out


def single(sections: list[Section]) -> dict[str, Section]:
    by = sections_by_name(sections)
    dupes = [k for k, v in by.items() if len(v) > 1]
    assert not dupes, f"duplicate sections: {dupes}"
    return {k: v[0] for k, v in by.items()}


def split_args(s: str, sep: str = ",") -> list[str]:
    """Split at top-level ``sep`` (outside (), [], {} and quotes)."""
    parts, depth, buf, quote = [], 0, [], False
    for c in s:
        if c == '"':
            quote = not quote
        elif not quote and c in "([{":
            depth += 1
        elif not quote and c in ")]}":
            depth -= 1
        if c == sep and depth == 0 and not quote:
            parts.append("".join(buf))
            buf = []
        else:
            buf.append(c)
    parts.append("".join(buf))
    return parts


def split_first(s: str, sep: str) -> tuple[str, str | None]:
    parts = split_args(s, sep)
    if len(parts) == 1:
        return s, None
    return parts[0], sep.join(parts[1:])


# --------------------------------------------------------------------------
# dialplan model
# --------------------------------------------------------------------------
@dataclass
class Prio:
    context: str
    exten: str
    prio: str
    label: str | None
    app: str
    args: str
    lineno: int


def parse_app(text: str) -> tuple[str, str]:
    text = text.strip()
    if "(" not in text:
        return text, ""
    name, rest = text.split("(", 1)
    assert rest.endswith(")"), f"unbalanced application call: {text}"
    return name.strip(), rest[:-1]


class Dialplan:
    def __init__(self, path: Path):
        self.sections = parse_conf(path)
        by = single(self.sections)
        self.globals = {e.key: e.value for e in by["globals"].entries} if "globals" in by else {}
        self.contexts: dict[str, list[Prio]] = {}
        self.includes: dict[str, list[str]] = {}
        for sec in self.sections:
            if sec.name in ("general", "globals"):
                continue
            prios: list[Prio] = []
            self.includes[sec.name] = []
            exten = None
            for e in sec.entries:
                if e.key == "include":
                    self.includes[sec.name].append(e.value)
                    continue
                if e.key == "exten":
                    exten, prio, rest = e.value.split(",", 2)
                elif e.key == "same":
                    assert exten is not None, f"line {e.lineno}: 'same' without 'exten'"
                    prio, rest = e.value.split(",", 1)
                else:
                    raise AssertionError(f"line {e.lineno}: unexpected dialplan key {e.key!r}")
                label = None
                m = re.match(r"^([^()]+)\((\w+)\)$", prio.strip())
                if m:
                    prio, label = m.group(1), m.group(2)
                app, args = parse_app(rest)
                prios.append(Prio(sec.name, exten.strip(), prio.strip(), label, app, args, e.lineno))
            self.contexts[sec.name] = prios

    def resolve(self, text: str) -> str:
        """Substitute dialplan globals (repeatedly)."""
        for _ in range(5):
            new = re.sub(r"\$\{(\w+)\}", lambda m: self.globals.get(m.group(1), m.group(0)), text)
            if new == text:
                break
            text = new
        return text

    def apps(self, context: str):
        """Every application executed in ``context``, ExecIf bodies included."""
        for p in self.contexts[context]:
            yield p, p.app, p.args
            if p.app.lower() == "execif":
                _cond, body = split_first(p.args, "?")
                for branch in split_args(body or "", ":"):
                    if branch.strip():
                        a, b = parse_app(branch)
                        yield p, a, b


def _dest_context(current: str, dest: str) -> str:
    parts = [x.strip() for x in split_args(dest)]
    if parts and "(" in parts[-1]:  # Gosub arguments
        parts[-1] = parts[-1].split("(", 1)[0]
    return parts[0] if len(parts) == 3 else current


def references(dp: Dialplan, queues: dict[str, Section], context: str,
               queue_resolver, agents_context: str) -> set[str]:
    """Contexts a channel in ``context`` can get to."""
    out = set(dp.includes.get(context, []))
    for _p, app, args in dp.apps(context):
        a = app.lower()
        dests: list[str] = []
        if a in ("goto", "gosub"):
            dests = [args]
        elif a in ("gotoif", "gosubif"):
            _cond, body = split_first(args, "?")
            dests = [d for d in split_args(body or "", ":") if d.strip()]
        elif a == "set":
            m = re.match(r"^CHANNEL\(hangup_handler_push\)=(.*)$", args)
            if m:
                dests = [m.group(1)]
        elif a == "queue":
            for q in queue_resolver(split_args(args)[0]):
                qs = queues[q]
                for key in ("membergosub", "context"):
                    if qs.get(key):
                        out.add(split_args(qs.get(key))[0].strip())
                # an agent who took the call can blind-transfer the caller:
                # the caller then runs in the agent endpoint's context
                out.add(agents_context)
        for d in dests:
            out.add(dp.resolve(_dest_context(context, d)))
    return out


def closure(dp: Dialplan, queues, start: str, queue_resolver, agents_context: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        c = todo.pop()
        if c in seen:
            continue
        assert "${" not in c, f"dynamic context {c!r} reachable from {start}"
        assert c in dp.contexts, f"context {c!r} reachable from {start} does not exist"
        seen.add(c)
        todo.extend(references(dp, queues, c, queue_resolver, agents_context) - seen)
    return seen


def outside_dials(dp: Dialplan, context: str, agent_endpoints: set[str]) -> list[str]:
    """Dial()s (or other ways out) in ``context`` that could reach a trunk."""
    bad = []
    for p, app, args in dp.apps(context):
        a = app.lower()
        if a == "dial":
            for target in split_args(args)[0].split("&"):
                t = dp.resolve(target.strip())
                m = re.fullmatch(r"PJSIP/(\w+|\$\{EXTEN\})", t)
                ok = bool(m) and (
                    m.group(1) in agent_endpoints
                    or (m.group(1) == "${EXTEN}" and internal_pattern(p.exten, agent_endpoints))
                )
                if not ok:
                    bad.append(f"{context}:{p.lineno} Dial({args})")
        elif a in ("originate", "channelredirect", "page", "followme", "dialplan", "system", "trysystem"):
            bad.append(f"{context}:{p.lineno} {app}({args})")
    return bad


def internal_pattern(pattern: str, agent_endpoints: set[str]) -> bool:
    """An extension like ``_100X``: fixed length of an agent number, digits
    and X only -- it cannot form a PSTN number."""
    lengths = {len(x) for x in agent_endpoints}
    return re.fullmatch(r"_?\d+X*", pattern) is not None and len(pattern.lstrip("_")) in lengths


# --------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dp() -> Dialplan:
    return Dialplan(CONF / "extensions.conf")


@pytest.fixture(scope="module")
def queues() -> dict[str, Section]:
    return single(parse_conf(CONF / "queues.conf"))


@pytest.fixture(scope="module")
def manager() -> dict[str, Section]:
    return single(parse_conf(CONF / "manager.conf"))


@pytest.fixture(scope="module")
def pjsip() -> list[Section]:
    return parse_conf(CONF / "pjsip.conf")


def pjsip_objects(sections: list[Section]) -> dict[tuple[str, str], dict[str, list[str]]]:
    """(type, name) -> merged options, templates applied."""
    templates = {s.name: s for s in sections if s.is_template}

    def merged(sec: Section) -> dict[str, list[str]]:
        opts: dict[str, list[str]] = {}
        for t in sec.templates:
            assert t in templates, f"pjsip.conf [{sec.name}] uses unknown template {t}"
            for k, v in merged(templates[t]).items():
                opts.setdefault(k, []).extend(v)
        for e in sec.entries:
            opts.setdefault(e.key, []).append(e.value)
        return opts

    out = {}
    for s in sections:
        if s.is_template:
            continue
        o = merged(s)
        assert "type" in o, f"pjsip.conf [{s.name}] line {s.lineno} has no type"
        key = (o["type"][-1], s.name)
        assert key not in out, f"pjsip.conf: two {key[0]} objects named {s.name}"
        out[key] = o
    return out


def one(opts: dict[str, list[str]], key: str) -> str | None:
    v = opts.get(key)
    return v[-1] if v else None


def queue_resolver_for(dp: Dialplan):
    names = EXPECTED["queues"]["names"]

    def resolve(arg: str) -> list[str]:
        arg = dp.resolve(arg.strip())
        if arg == "${IVR_CHOICE}":  # validated to one of the names in hotline-inbound
            return list(names)
        assert "${" not in arg, f"Queue() with unresolvable name {arg}"
        return [arg]
    return resolve


# --------------------------------------------------------------------------
# asterisklint
# --------------------------------------------------------------------------
_LINT_RUNNER = textwrap.dedent("""
    import json, sys
    from asterisklint import FileConfigParser, FileDialplanParser
    from asterisklint.defines import MessageDefManager
    kind, path = sys.argv[1], sys.argv[2]
    if kind == "dialplan":
        parser = FileDialplanParser()
        parser.include(path)
        dialplan = next(iter(parser))
        dialplan.walk_jump_destinations()
    else:
        parser = FileConfigParser()
        parser.include(path)
        list(parser)
    out = []
    for name, msgs in MessageDefManager.raised.items():
        for m in msgs:
            line = m.where.line
            if isinstance(line, bytes):
                line = line.decode("utf-8", "replace")
            out.append({"cls": name, "lineno": m.where.lineno, "line": str(line).strip(),
                        "message": m.message.format(**m.fmtkwargs)})
    print(json.dumps(out))
""")


def lint(kind: str, path: Path) -> list[dict]:
    r = subprocess.run([sys.executable, "-c", _LINT_RUNNER, kind, str(path)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


_TEMPLATE_USE = re.compile(r"^\[[^\]]+\]\([\w-]+(,[\w-]+)*\)$")


def real_problems(msgs: list[dict], filename: str) -> list[dict]:
    keep = []
    for m in msgs:
        if m["cls"].startswith("I_"):
            continue  # informational
        if (filename == "pjsip.conf" and m["cls"] == "E_CONF_BAD_LINE"
                and _TEMPLATE_USE.match(m["line"])):
            continue  # asterisklint 0.4.3 does not know template use (see module doc)
        keep.append(m)
    return keep


def test_asterisklint_cli_dialplan_check_is_clean():
    r = subprocess.run(
        [sys.executable, "-c",
         "import os, sys; from asterisklint.main import main; sys.exit(main(sys.argv[1:], os.environ))",
         "dialplan-check", str(CONF / "extensions.conf")],
        capture_output=True, text=True, timeout=120, cwd=CONF)
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip() == "", r.stderr


def test_asterisklint_dialplan_api_has_no_messages():
    msgs = lint("dialplan", CONF / "extensions.conf")
    assert real_problems(msgs, "extensions.conf") == []
    assert msgs == [], "extensions.conf needs no suppression at all"


@pytest.mark.parametrize("name", ["queues.conf", "manager.conf", "pjsip.conf"])
def test_asterisklint_config_files(name):
    msgs = lint("config", CONF / name)
    assert real_problems(msgs, name) == [], msgs


def test_asterisklint_suppressions_are_exactly_the_template_headers(pjsip):
    msgs = lint("config", CONF / "pjsip.conf")
    suppressed = {m["lineno"] for m in msgs if m["cls"] == "E_CONF_BAD_LINE"}
    template_users = {s.lineno for s in pjsip if s.templates}
    assert suppressed == template_users


def test_asterisklint_is_not_vacuous(tmp_path):
    text = (CONF / "extensions.conf").read_text(encoding="utf-8")
    broken = text.replace("Goto(hotline-queue,s,1)", "Goto(hotline-queeu,s,1)", 1)
    broken = broken.replace("same => n,Answer()", "same => n,Answr()", 1)
    assert broken != text
    p = tmp_path / "extensions.conf"
    p.write_text(broken, encoding="utf-8")
    classes = {m["cls"] for m in lint("dialplan", p)}
    assert {"E_DP_GOTO_NOCONTEXT", "E_APP_MISSING"} <= classes


# --------------------------------------------------------------------------
# the contract: expected.toml vs the code
# --------------------------------------------------------------------------
def test_expected_queues_match_the_code():
    from cti.simulator import DEFAULT_AGENTS, DEFAULT_QUEUES
    from tickets.model import IVR_CHOICE_TO_TYPE

    names = EXPECTED["queues"]["names"]
    assert set(names) == set(IVR_CHOICE_TO_TYPE) == set(DEFAULT_QUEUES)
    assert EXPECTED["queues"]["fallback"] in names
    for q, cfg in DEFAULT_QUEUES.items():
        assert EXPECTED["queues"][q]["strategy"] == cfg.strategy
        assert EXPECTED["queues"][q]["recording"] == cfg.recording
    assert sorted(EXPECTED["agents"]["endpoints"]) == sorted(DEFAULT_AGENTS)


def test_expected_variables_match_the_code():
    from cti.events import IVR_VARIABLES

    assert list(EXPECTED["variables"]["channelvars"]) == list(IVR_VARIABLES)
    set_by_ivr = {v.lstrip("_") for v in EXPECTED["variables"]["set_by_ivr"]}
    assert set(IVR_VARIABLES) <= set_by_ivr


def test_expected_agi_and_ami_match_cti_config():
    from cti.config import Config

    cfg = Config()
    agi = EXPECTED["agi"]
    assert agi["port"] == cfg.agi_port == 4573
    assert agi["host"] == cfg.agi_host
    assert agi["url"] == f"agi://{agi['host']}:{agi['port']}/{agi['script']}"
    ami = EXPECTED["ami"]
    assert ami["bindaddr"] == cfg.ami_host
    assert ami["port"] == cfg.ami_port
    assert ami["username"] == cfg.ami_username
    for name in ("sounds_dir", "recordings_dir"):  # only if the code grows such a setting
        if hasattr(cfg, name):
            want = EXPECTED["sounds" if name == "sounds_dir" else "recordings"]["dir"]
            assert getattr(cfg, name).rstrip("/") == want


def test_ivr_menu_uses_known_queues():
    menu = ROOT / "ivr" / "menu.toml"
    assert menu.exists()
    data = tomllib.loads(menu.read_text(encoding="utf-8"))
    # values under these keys name a queue / an IVR_CHOICE
    keys = {"queue", "ivr_choice", "fallback_queue", "default_queue"}
    found: list[str] = []

    def walk(node):
        if isinstance(node, dict):
            for k, v in node.items():
                if k in keys and isinstance(v, str):
                    found.append(v)
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
    walk(data)
    if isinstance(data.get("queues"), list):
        assert data["queues"] == EXPECTED["queues"]["names"]
    if "default_queue" in data:
        assert data["default_queue"] == EXPECTED["queues"]["fallback"]
    assert found, "ivr/menu.toml names no queue"
    assert set(found) <= set(EXPECTED["queues"]["names"]), found


# --------------------------------------------------------------------------
# queues.conf
# --------------------------------------------------------------------------
# keywords app_queue (Asterisk 20/22) knows that this project may use
KNOWN_QUEUE_KEYS = {
    "strategy", "weight", "timeout", "retry", "timeoutpriority", "timeoutrestart",
    "wrapuptime", "servicelevel", "maxlen", "joinempty", "leavewhenempty", "ringinuse",
    "autopause", "autopausedelay", "autopausebusy", "autopauseunavail",
    "announce-frequency", "min-announce-frequency", "periodic-announce-frequency",
    "announce-holdtime", "announce-position", "announce-to-first-user", "musicclass",
    "setinterfacevar", "setqueueentryvar", "setqueuevar", "monitor-format", "membergosub",
    "member", "memberdelay", "reportholdtime", "context", "penaltymemberslimit",
    "defaultrule", "relative-periodic-announce", "random-periodic-announce",
}
GONE_IN_22 = {"eventwhencalled", "eventmemberstatus", "monitor-type", "monitor-join"}


def test_every_expected_queue_exists_with_servicelevel_20(queues):
    for q in EXPECTED["queues"]["names"]:
        assert q in queues, f"queue {q} missing in queues.conf"
        assert queues[q].get("servicelevel") == str(EXPECTED["queues"]["servicelevel"]) == "20"
    assert set(queues) - {"general"} == set(EXPECTED["queues"]["names"])


def test_queue_keywords_are_known_to_asterisk_22(queues):
    for name, sec in queues.items():
        if name == "general":
            continue
        keys = {e.key for e in sec.entries}
        assert not keys & GONE_IN_22, f"[{name}] uses keywords Asterisk 22 no longer knows"
        assert keys <= KNOWN_QUEUE_KEYS, f"[{name}] unknown keywords {keys - KNOWN_QUEUE_KEYS}"
        for e in sec.entries:
            if e.key == "member":
                assert e.op == "=>", f"queues.conf:{e.lineno} member needs '=>'"


def test_queue_settings_match_simulator_and_storm_policy(queues):
    from cti.simulator import DEFAULT_QUEUES

    for q, cfg in DEFAULT_QUEUES.items():
        s = queues[q]
        assert s.get("strategy") == cfg.strategy
        assert float(s.get("timeout")) == cfg.ring_timeout_s
        assert float(s.get("retry")) == cfg.retry_s
        assert s.get("ringinuse") == "no"
        assert s.get("joinempty") == "yes"      # a storm backlog may always join
        assert s.get("leavewhenempty") == "no"  # ... and is never pushed out
        assert s.get("maxlen", "0") == "0"
        assert int(s.get("wrapuptime")) >= 0


def test_queue_members_match_simulator_agents(queues):
    from cti.simulator import DEFAULT_AGENTS

    want = {(f"PJSIP/{ext}", q, pen) for ext, qs in DEFAULT_AGENTS.items() for q, pen in qs.items()}
    got = set()
    for q in EXPECTED["queues"]["names"]:
        for m in queues[q].getall("member"):
            iface, penalty, *rest = [x.strip() for x in m.split(",")]
            assert iface.startswith(EXPECTED["queues"]["member_technology"] + "/")
            got.add((iface, q, int(penalty)))
    assert got == want


def test_queue_recording_patterns(queues, dp):
    member_ctx = EXPECTED["contexts"]["member_connect"]
    for q in EXPECTED["queues"]["names"]:
        s = queues[q]
        if EXPECTED["queues"][q]["recording"] == "caller":
            assert s.get("monitor-format") == "wav"   # pattern A
            assert s.get("membergosub") is None
        else:
            assert s.get("monitor-format") is None     # pattern B
            ctx, *args = split_args(s.get("membergosub"))
            assert ctx == member_ctx and args == [q]
            assert member_ctx in dp.contexts


# --------------------------------------------------------------------------
# manager.conf
# --------------------------------------------------------------------------
def test_manager_loopback_and_channelvars(manager):
    g = manager["general"]
    assert g.get("enabled") == "yes"
    assert g.get("bindaddr") == "127.0.0.1" == EXPECTED["ami"]["bindaddr"]
    assert int(g.get("port")) == EXPECTED["ami"]["port"]
    assert g.get("webenabled", "no") == "no"
    chanvars = [v.strip() for v in g.get("channelvars").split(",")]
    assert chanvars == EXPECTED["variables"]["channelvars"]
    assert {"IVR_CHOICE", "CUSTOMER_ID", "OUTAGE_ID"} <= set(chanvars)


def test_manager_cti_user_least_privilege(manager):
    users = [n for n in manager if n != "general"]
    assert users == [EXPECTED["ami"]["username"]], "only the CTI user"
    u = manager[EXPECTED["ami"]["username"]]
    read = {x.strip() for x in u.get("read").split(",")}
    write = {x.strip() for x in u.get("write").split(",")}
    assert read == set(EXPECTED["ami"]["read"]) == {"call", "agent", "dialplan", "system"}
    assert write == set(EXPECTED["ami"]["write"]) == {"originate", "agent", "reporting"}
    forbidden = {"all", "command", "config", "system", "user", "message"}
    assert not write & forbidden
    assert "all" not in read
    assert u.getall("deny") == ["0.0.0.0/0.0.0.0"]
    assert u.getall("permit") == ["127.0.0.1/255.255.255.255"]
    assert "CHANGE-ME" in u.get("secret"), "no real secret in the repository"


# --------------------------------------------------------------------------
# extensions.conf
# --------------------------------------------------------------------------
def test_contexts_exist(dp):
    for role, ctx in EXPECTED["contexts"].items():
        assert ctx in dp.contexts, f"{role} context {ctx} missing"


def test_agi_call_with_port_4573(dp):
    from cti.config import Config

    agi = EXPECTED["agi"]
    assert dp.globals[agi["global"]] == agi["url"]
    calls = [dp.resolve(a) for _p, app, a in dp.apps(EXPECTED["contexts"]["inbound"]) if app == "AGI"]
    assert calls == [agi["url"]]
    m = re.fullmatch(r"agi://([\d.]+):(\d+)/(\w+)", calls[0])
    assert m and int(m.group(2)) == Config().agi_port == 4573 and m.group(1) == "127.0.0.1"
    # the IVR is answered first, and a failing AGI is handled
    apps = [app for _p, app, _a in dp.apps(EXPECTED["contexts"]["inbound"])]
    assert apps.index("Answer") < apps.index("AGI")
    assert any("AGISTATUS" in a for _p, app, a in dp.apps(EXPECTED["contexts"]["inbound"]) if app == "GotoIf")


def test_choice_is_validated_with_enquiry_fallback(dp):
    inbound = EXPECTED["contexts"]["inbound"]
    rows = list(dp.apps(inbound))
    validate = [a for _p, app, a in rows if app == "GotoIf" and "CHOICE" in a and "repair" in a]
    assert validate, "IVR_CHOICE is checked against the queue names"
    for q in EXPECTED["queues"]["names"]:
        assert f'"{q}"' in validate[0]
    assert dp.globals["HOTLINE_FALLBACK_QUEUE"] == EXPECTED["queues"]["fallback"] == "enquiry"
    sets = [dp.resolve(a) for _p, app, a in rows if app == "Set"]
    assert "CHOICE=enquiry" in sets
    assert "__IVR_CHOICE=${CHOICE}" in sets
    # the value is reduced to lower-case letters before use
    assert any(a.startswith("CHOICE=${FILTER(a-z,") for a in sets)
    # and the call continues to the queue context in every case
    assert rows[-1][1] == "Goto" and rows[-1][2] == f"{EXPECTED['contexts']['queue']},s,1"


def _simulate_choice(dp: Dialplan, agistatus: str, ivr_choice: str, ivr_note: str = "") -> tuple[str, str]:
    """Tiny interpreter for [hotline-inbound]: enough for its GotoIf/Set rows."""
    env = dict(dp.globals, AGISTATUS=agistatus, IVR_CHOICE=ivr_choice, IVR_NOTE=ivr_note)
    rows = dp.contexts[EXPECTED["contexts"]["inbound"]]
    labels = {p.label: i for i, p in enumerate(rows) if p.label}

    def sub(text: str) -> str:
        text = re.sub(r"\$\{FILTER\(a-z,\$\{TOLOWER\(\$\{(\w+)\}\)\}\)\}",
                      lambda m: re.sub("[^a-z]", "", env.get(m.group(1), "").lower()), text)
        text = re.sub(r"\$\{LEN\(\$\{(\w+)\}\)\}", lambda m: str(len(env.get(m.group(1), ""))), text)
        return re.sub(r"\$\{(\w+)\}", lambda m: env.get(m.group(1), ""), text)

    def cond(expr: str) -> bool:
        expr = sub(expr.strip()[2:-1])
        ors = [o.strip() for o in expr.split("|")]
        def term(t):
            n = re.fullmatch(r"(\d+)\s*>\s*(\d+)", t)
            if n:
                return int(n.group(1)) > int(n.group(2))
            m = re.fullmatch(r'"([^"]*)"\s*(=|!=)\s*"([^"]*)"', t)
            assert m, t
            return (m.group(1) == m.group(3)) == (m.group(2) == "=")
        return any(term(t) for t in ors)

    i = 0
    while i < len(rows):
        p = rows[i]
        if p.app == "GotoIf":
            c, dest = split_first(p.args, "?")
            if cond(c):
                i = labels[dest]
                continue
        elif p.app == "Set":
            k, v = p.args.split("=", 1)
            env[k.lstrip("_")] = sub(v)
        elif p.app == "Goto":
            return env["IVR_CHOICE"], env.get("IVR_NOTE", "")
        i += 1
    raise AssertionError("fell off the end of the inbound context")


@pytest.mark.parametrize("agistatus,choice,want,note", [
    ("SUCCESS", "repair", "repair", ""),
    ("SUCCESS", "complaint", "complaint", ""),
    ("SUCCESS", "enquiry", "enquiry", ""),
    ("SUCCESS", "Repair", "repair", ""),
    ("SUCCESS", "", "enquiry", "no-valid-choice"),
    ("SUCCESS", "billing", "enquiry", "no-valid-choice"),
    ("SUCCESS", "repair,1", "repair", ""),  # FILTER leaves only "repair": no injection
    ("SUCCESS", "re pair", "repair", ""),
    ("SUCCESS", "../../etc", "enquiry", "no-valid-choice"),
    ("FAILURE", "", "enquiry", "ivr-unavailable"),
    ("NOTFOUND", "", "enquiry", "ivr-unavailable"),
    ("FAILURE", "complaint", "complaint", "ivr-unavailable"),
])
def test_inbound_routing_never_drops_the_caller(dp, agistatus, choice, want, note):
    assert _simulate_choice(dp, agistatus, choice) == (want, note)


def test_inbound_routing_keeps_the_ivr_note(dp):
    note = '语音导航3次未按键 "x" / (routed)'
    assert _simulate_choice(dp, "SUCCESS", "", note) == ("enquiry", note)
    assert _simulate_choice(dp, "SUCCESS", "enquiry", note) == ("enquiry", note)


def test_queue_by_ivr_choice_and_overflow(dp):
    ctx = EXPECTED["contexts"]["queue"]
    queue_calls = [(split_args(a)[0], split_args(a)[1:]) for _p, app, a in dp.apps(ctx) if app == "Queue"]
    assert queue_calls[0][0] == "${IVR_CHOICE}"
    assert dp.resolve(queue_calls[1][0]) == EXPECTED["queues"]["fallback"]
    for _name, opts in queue_calls:
        # only the agent may transfer (t); no caller-side features
        assert opts and set(opts[0]) <= set("t"), opts


def _eval_recording_name(dp: Dialplan, queue: str, uniqueid: str, linkedid: str, epoch: float) -> str:
    rows = dp.contexts[EXPECTED["contexts"]["recording_name"]]
    env = dict(dp.globals, UNIQUEID=uniqueid, ARG1=queue)

    def expand(text: str) -> str:
        # innermost-first evaluation of ${...} and $[...]
        for _ in range(50):
            m = re.search(r"\$\[([^\[\]$]*)\]", text)
            if m:
                a, op, b = re.fullmatch(r'\s*"([^"]*)"\s*(=|!=)\s*"([^"]*)"\s*', m.group(1)).groups()
                text = text[:m.start()] + ("1" if (a == b) == (op == "=") else "0") + text[m.end():]
                continue
            m = re.search(r"\$\{([^${}]*)\}", text)
            if not m:
                return text
            body = m.group(1)
            f = re.fullmatch(r"(\w+)\((.*)\)", body)
            if not f:
                val = env.get(body, "")
            elif f.group(1) == "STRFTIME":
                when, _tz, fmt = split_args(f.group(2))
                val = time.strftime(fmt, time.localtime(float(when)))
            elif f.group(1) == "CHANNEL" and f.group(2) == "linkedid":
                val = linkedid
            elif f.group(1) == "FILTER":
                allowed, s = f.group(2).split(",", 1)
                assert allowed == "a-z0-9"
                val = re.sub("[^a-z0-9]", "", s)
            elif f.group(1) == "IF":
                c, rest = split_first(f.group(2), "?")
                yes, no = (split_args(rest, ":") + [""])[:2]
                val = yes if c not in ("", "0") else no
            else:
                raise AssertionError(f"unexpected function {body}")
            text = text[:m.start()] + val + text[m.end():]
        raise AssertionError("expansion did not terminate")

    env["EPOCH"] = str(int(epoch))
    for p in rows:
        if p.app == "Set":
            k, v = p.args.split("=", 1)
            k = re.sub(r"^LOCAL\((\w+)\)$", r"\1", k)
            env[k] = expand(v)
    return env["HOTLINE_REC"]


def test_recording_file_names_carry_linkedid_and_uniqueid(dp):
    rx = re.compile(EXPECTED["recordings"]["pattern"])
    assert dp.globals[EXPECTED["recordings"]["global"]] == EXPECTED["recordings"]["dir"]
    epoch = 1795374643.0
    day = time.strftime("%Y%m%d", time.localtime(epoch))
    # pattern A: caller leg, linkedid == uniqueid; app_queue appends ".wav"
    a = _eval_recording_name(dp, "repair", "1795374638.1", "1795374638.1", epoch) + ".wav"
    assert rx.match(a), a
    assert f"/{day}/1795374638.1-1795374638.1-repair-" in a
    # pattern B: agent leg, linkedid = the caller's uniqueid
    b = _eval_recording_name(dp, "complaint", "1795374654.8", "1795374653.5", epoch) + ".wav"
    assert rx.match(b) and "/1795374653.5-1795374654.8-complaint-" in b, b
    # a hostile queue argument cannot leave the directory
    c = _eval_recording_name(dp, "../../etc/passwd", "1.2", "1.2", epoch) + ".wav"
    assert rx.match(c) and ".." not in c, c


def test_recording_rows_use_the_name(dp):
    rec_ctx = EXPECTED["contexts"]["recording_name"]
    name_row = [a for _p, app, a in dp.apps(rec_ctx) if app == "Set" and a.startswith("HOTLINE_REC=")][0]
    assert "${CHANNEL(linkedid)}" in name_row and "${UNIQUEID}" in name_row
    assert name_row.startswith(f"HOTLINE_REC=${{{EXPECTED['recordings']['global']}}}/")
    # pattern A: MONITOR_FILENAME set from it before Queue()
    q_rows = [(app, a) for _p, app, a in dp.apps(EXPECTED["contexts"]["queue"])]
    first_queue = [i for i, (app, _a) in enumerate(q_rows) if app == "Queue"][0]
    assert ("Set", "MONITOR_FILENAME=${HOTLINE_REC}") in q_rows[:first_queue]
    assert ("Gosub", f"{rec_ctx},s,1(${{IVR_CHOICE}})") in q_rows[:first_queue]
    # pattern B: MixMonitor on the member channel
    m_rows = [(app, a) for _p, app, a in dp.apps(EXPECTED["contexts"]["member_connect"])]
    assert ("MixMonitor", "${HOTLINE_REC}.wav,b") in m_rows
    assert m_rows[-1][0] == "Return"


def _pushed_handlers(dp: Dialplan, ctx: str) -> list[str]:
    out = []
    for _p, app, a in dp.apps(ctx):
        m = re.match(r"^CHANNEL\(hangup_handler_push\)=(.*)$", a) if app == "Set" else None
        if m:
            out.append(_dest_context(ctx, m.group(1)))
    return out


def test_hangup_handlers_call_stopmixmonitor(dp):
    hh = EXPECTED["contexts"]["hangup_handler"]
    for ctx in (EXPECTED["contexts"]["queue"], EXPECTED["contexts"]["member_connect"],
                EXPECTED["contexts"]["click2call"]):
        assert _pushed_handlers(dp, ctx) == [hh], ctx
    apps = [(app, a) for _p, app, a in dp.apps(hh)]
    assert ("StopMixMonitor", "") in apps
    assert apps[-1][0] == "Return"
    # in the caller path the handler is pushed before the first Queue()
    q_apps = [app for _p, app, _a in dp.apps(EXPECTED["contexts"]["queue"])]
    assert q_apps.index("Set") < q_apps.index("Queue")


def test_trunk_cannot_reach_outbound_dialing(dp, queues):
    agent_eps = set(EXPECTED["agents"]["endpoints"])
    ctxs = EXPECTED["contexts"]
    reach = closure(dp, queues, ctxs["trunk"], queue_resolver_for(dp), ctxs["agents"])
    # the call path really is covered ...
    assert {ctxs["inbound"], ctxs["queue"], ctxs["hangup_handler"], ctxs["member_connect"],
            ctxs["recording_name"], ctxs["agents"], ctxs["transfer"]} <= reach
    # ... and never reaches click-to-call or a Dial() that leaves the PBX
    assert ctxs["click2call"] not in reach
    bad = [b for c in sorted(reach) for b in outside_dials(dp, c, agent_eps)]
    assert bad == []
    trunk = EXPECTED["trunk"]["endpoint"]
    for c in reach:
        for _p, app, a in dp.apps(c):
            text = dp.resolve(a)
            assert f"@{trunk}" not in text and ctxs["click2call"] not in text, f"{c}: {app}({a})"
    # the checker itself finds the one context that does dial out
    assert outside_dials(dp, ctxs["click2call"], agent_eps)
    # nothing references click-to-call (AMI Originate only)
    for c in dp.contexts:
        assert ctxs["click2call"] not in dp.includes[c]
        if c != ctxs["click2call"]:
            for _p, _app, a in dp.apps(c):
                assert ctxs["click2call"] not in a
    # the agents' own context reaches no trunk either
    agent_reach = closure(dp, queues, ctxs["agents"], queue_resolver_for(dp), ctxs["agents"])
    assert ctxs["click2call"] not in agent_reach
    assert [b for c in sorted(agent_reach) for b in outside_dials(dp, c, agent_eps)] == []


def test_click2call_only_domestic_numbers(dp):
    ctx = EXPECTED["contexts"]["click2call"]
    gate = [a for _p, app, a in dp.apps(ctx) if app == "GotoIf"][0]
    rx = re.search(r'=~ "([^"]+)"', gate).group(1)
    ok = ["13800138000", "19912345678", "057112345678", "01012345678"]
    refused = ["0085212345678", "12345", "95598", "966022", "10086", "+8613800138000", "900123"]
    assert all(re.search(rx, n) for n in ok)
    assert not any(re.search(rx, n) for n in refused)


# --------------------------------------------------------------------------
# pjsip.conf
# --------------------------------------------------------------------------
def test_pjsip_agents_and_trunk(pjsip, queues):
    objs = pjsip_objects(pjsip)
    endpoints = {name: o for (t, name), o in objs.items() if t == "endpoint"}
    assert "anonymous" not in endpoints
    for ext in EXPECTED["agents"]["endpoints"]:
        ep = endpoints[ext]
        assert one(ep, "context") == EXPECTED["agents"]["context"]
        auth = objs[("auth", one(ep, "auth"))]
        assert one(auth, "username") == ext
        assert one(auth, "password").startswith("CHANGE-ME"), "placeholder passwords only"
        assert ("aor", one(ep, "aors")) in objs
    trunk = endpoints[EXPECTED["trunk"]["endpoint"]]
    assert one(trunk, "context") == EXPECTED["trunk"]["context"] == EXPECTED["contexts"]["trunk"]
    assert one(trunk, "allow_transfer") == "no"
    assert ("aor", one(trunk, "aors")) in objs
    regs = [o for (t, _n), o in objs.items() if t == "registration"]
    assert regs and all(one(r, "outbound_auth") == one(trunk, "outbound_auth") for r in regs)
    idents = [o for (t, _n), o in objs.items() if t == "identify"]
    assert [one(i, "endpoint") for i in idents] == [EXPECTED["trunk"]["endpoint"]]
    # only the trunk lands in the trunk context
    assert [n for n, o in endpoints.items() if one(o, "context") == EXPECTED["contexts"]["trunk"]] == [
        EXPECTED["trunk"]["endpoint"]]
    # every queue member is a PJSIP endpoint defined here
    for q in EXPECTED["queues"]["names"]:
        for m in queues[q].getall("member"):
            assert m.split(",")[0].split("/", 1)[1] in endpoints


def test_no_real_looking_secrets_anywhere(pjsip, manager):
    for name in ("pjsip.conf", "manager.conf"):
        for sec in parse_conf(CONF / name):
            for e in sec.entries:
                if e.key in ("password", "secret", "md5_cred"):
                    assert e.value.startswith("CHANGE-ME"), f"{name}:{e.lineno}"

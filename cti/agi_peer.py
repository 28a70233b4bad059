"""A scripted Asterisk 22 FastAGI peer: the channel side of ``agi://host:port/route``.

It connects to a FastAGI server over TCP and speaks exactly like Asterisk
22.10.1 in the captures ``tests/fixtures/ami-traces/asterisk-22/01-ivr-to-queue-answered.agi``
and ``11-ivr-hangup-mid-prompt.agi``:

* the ``agi_*`` environment (field list and order of the trace), a blank line;
* replies: ``ANSWER`` -> ``200 result=0``; ``GET VARIABLE X`` -> ``200 result=1 (value)``
  or ``200 result=0``; ``STREAM FILE`` -> ``200 result=0 endpos=N``; ``GET DATA`` ->
  ``200 result=<digits>`` or ``200 result= (timeout)``; ``SET VARIABLE`` and
  ``VERBOSE`` -> ``200 result=1``; anything else -> ``510 Invalid or unknown command``;
* a caller hanging up mid-prompt: ``200 result=-1 endpos=N`` for the prompt, then
  an unsolicited ``HANGUP`` before ``511 Command Not Permitted ...`` for the next
  command, ``511`` after that (``VERBOSE`` still works on a dead channel);
* when the server half-closes after its script: ``HANGUP``, then EOF.

Used by the tests (``tests/test_ivr_agi.py``) and by the PBX simulator
(:mod:`cti.simulator`), which overrides the ``on_*`` hooks to put the matching
AMI events on the wire.
"""
from __future__ import annotations

import asyncio
import contextlib
import random
import shlex
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

__all__ = ["AGI_VERSION", "DEAD_CHANNEL", "agi_environment", "AgiTranscript", "AsteriskAgiPeer"]

AGI_VERSION = "22.10.1"
DEAD_CHANNEL = "511 Command Not Permitted on a dead channel or intercept routine"
UNKNOWN_COMMAND = "510 Invalid or unknown command"
BAD_SYNTAX = "520 Invalid command syntax.  Proper usage not available."
MAX_COMMANDS = 500          # a server looping forever: the caller gives up
MAX_LINE = 16 * 1024

Key = str | None            # digits typed for one GET DATA; None: nothing (timeout)


def _env_value(value: object) -> str:
    return str(value).replace("\r", " ").replace("\n", " ")


def agi_environment(host: str, port: int, route: str = "ivr", *, channel: str, uniqueid: str,
                    callerid: str = "", calleridname: str = "", context: str = "hotline",
                    extension: str = "ivr", priority: int = 3, args: Sequence[str] = ("enquiry",),
                    language: str = "en", accountcode: str = "", threadid: int | None = None,
                    version: str = AGI_VERSION) -> bytes:
    """The ``agi_*`` block Asterisk sends first, fields in the trace's order.
    An empty caller ID is sent as ``unknown``, as Asterisk does."""
    pairs = [
        ("network", "yes"), ("network_script", route), ("request", f"agi://{host}:{port}/{route}"),
        ("channel", channel), ("language", language), ("type", channel.split("/", 1)[0] or "Local"),
        ("uniqueid", uniqueid), ("version", version),
        ("callerid", callerid or "unknown"), ("calleridname", calleridname or "unknown"),
        ("callingpres", "0"), ("callingani2", "0"), ("callington", "0"), ("callingtns", "0"),
        ("dnid", "unknown"), ("rdnis", "unknown"), ("context", context), ("extension", extension),
        ("priority", str(priority)), ("enhanced", "0.0"), ("accountcode", accountcode),
        ("threadid", str(threadid if threadid is not None else random.randrange(10**14, 10**15))),
    ]
    pairs += [(f"arg_{i}", a) for i, a in enumerate(args, 1)]
    return "".join(f"agi_{k}: {_env_value(v)}\n" for k, v in pairs).encode("utf-8") + b"\n"


@dataclass
class AgiTranscript:
    """What happened on one FastAGI session, from the channel's side."""

    commands: list[str] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)
    played: list[str] = field(default_factory=list)          # files of STREAM FILE / GET DATA
    pressed: list[Key] = field(default_factory=list)          # one per answered GET DATA
    variables: dict[str, str] = field(default_factory=dict)   # SET VARIABLE, as written
    caller_hung_up: bool = False
    got_eof: bool = False           # the server ended the session (half-close / close)
    failure: str | None = None      # unreachable, reset, timeout, too chatty

    @property
    def ok(self) -> bool:
        """The script ran to its end (Asterisk's AGISTATUS=SUCCESS or HANGUP)."""
        return self.failure is None


class AsteriskAgiPeer:
    """Plays the Asterisk side of one FastAGI session.

    ``keys``: what the caller types for successive ``GET DATA`` (``None``: no
    key, the prompt times out; ``""``: ``#`` alone); when exhausted,
    ``default_key(max_digits)`` decides (default: no key).
    ``hangup_at_play``: the caller hangs up during the n-th prompt (1-based,
    STREAM FILE and GET DATA counted).  ``close_at``: drop the socket when a
    command starting with it arrives (a crash).  ``variables``: what
    ``GET VARIABLE`` finds (``CALLERID(name)`` from ``caller_name``).
    """

    def __init__(self, host: str, port: int, env: bytes, *, keys: Sequence[Key] = (),
                 default_key: Callable[[int], Key] | None = None, caller_name: str | None = None,
                 hangup_at_play: int | None = None, close_at: str | None = None,
                 slow_get_data: float = 0.0, variables: Mapping[str, str] | None = None,
                 endpos: int = 16000, timeout: float = 10.0, connect_timeout: float = 3.0) -> None:
        self.host = host
        self.port = port
        self.env = env
        self.keys = list(keys)
        self.default_key = default_key
        self.caller_name = caller_name
        self.hangup_at_play = hangup_at_play
        self.close_at = close_at
        self.slow_get_data = slow_get_data
        self.variables = dict(variables or {})
        self.endpos = endpos
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.transcript = AgiTranscript()
        self._dead = False
        self._hangup_sent = False
        self._plays = 0

    # -- hooks (the simulator emits AMI events here) ------------------------------
    async def on_start(self, command_id: int, command: str) -> None:
        """A command arrived (AGIExecStart)."""

    async def on_end(self, command_id: int, command: str, reply: str) -> None:
        """Its reply is about to be sent (AGIExecEnd)."""

    async def on_answer(self) -> None:
        """ANSWER: the channel goes Up."""

    async def on_play(self, verb: str, path: str, max_digits: int) -> None:
        """A prompt is playing (time may pass here)."""

    async def on_dtmf(self, digits: str) -> None:
        """The caller typed ``digits`` during GET DATA."""

    async def on_caller_hangup(self) -> None:
        """The caller hung up during a prompt."""

    async def on_set_variable(self, name: str, value: str) -> None:
        """SET VARIABLE name value (as written, ``__`` prefix kept)."""

    # -- the dialogue ---------------------------------------------------------------
    def next_key(self, max_digits: int) -> Key:
        if self.keys:
            return self.keys.pop(0)
        return self.default_key(max_digits) if self.default_key is not None else None

    def get_variable(self, name: str) -> str | None:
        if name == "CALLERID(name)":
            return self.caller_name or None
        return self.variables.get(name) or None

    async def reply(self, command: str) -> str:
        """The reply line(s) to one command, without the final newline."""
        t = self.transcript
        words = command.split()
        verb = " ".join(words[:2]).upper()
        if self._dead and not command.upper().startswith("VERBOSE"):
            first = not self._hangup_sent
            self._hangup_sent = True
            return ("HANGUP\n" if first else "") + DEAD_CHANNEL
        if command.upper() == "ANSWER":
            await self.on_answer()
            return "200 result=0"
        if verb == "GET VARIABLE" and len(words) >= 3:
            value = self.get_variable(command.split(None, 2)[2].strip())
            return f"200 result=1 ({value})" if value is not None else "200 result=0"
        if verb in ("STREAM FILE", "GET DATA"):
            try:
                args = shlex.split(command)[2:]
            except ValueError:
                return BAD_SYNTAX
            if not args:
                return BAD_SYNTAX
            path = args[0]
            max_digits = 1024
            if verb == "GET DATA" and len(args) >= 3 and args[2].isdigit():
                max_digits = int(args[2])
            self._plays += 1
            t.played.append(path)
            await self.on_play(verb, path, max_digits)
            if self.hangup_at_play == self._plays:
                self._dead = True
                t.caller_hung_up = True
                await self.on_caller_hangup()
                return f"200 result=-1 endpos={self.endpos + 12000}"
            if verb == "STREAM FILE":
                return f"200 result=0 endpos={self.endpos}"
            if self.slow_get_data:
                await asyncio.sleep(self.slow_get_data)
            key = self.next_key(max_digits)
            t.pressed.append(key)
            if key is None:
                return "200 result= (timeout)"
            if key:
                await self.on_dtmf(key)
            return f"200 result={key}"
        if verb == "SET VARIABLE":
            try:
                parts = shlex.split(command)
            except ValueError:
                return BAD_SYNTAX
            if len(parts) < 3:
                return BAD_SYNTAX
            name, value = parts[2], (parts[3] if len(parts) > 3 else "")
            t.variables[name] = value
            await self.on_set_variable(name, value)
            return "200 result=1"
        if command.upper().startswith("VERBOSE"):
            return "200 result=1"
        return UNKNOWN_COMMAND

    async def call(self) -> AgiTranscript:
        """Run the session to its end; never raises for network trouble
        (``transcript.failure`` says what went wrong)."""
        t = self.transcript
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port, limit=MAX_LINE), self.connect_timeout)
        except (OSError, asyncio.TimeoutError) as e:
            t.failure = f"connect to {self.host}:{self.port} failed: {type(e).__name__}: {e}"
            return t
        try:
            writer.write(self.env)
            await writer.drain()
            while True:
                if len(t.commands) >= MAX_COMMANDS:
                    t.failure = f"more than {MAX_COMMANDS} commands"
                    break
                line = await asyncio.wait_for(reader.readline(), self.timeout)
                if not line or not line.endswith(b"\n"):
                    # the server ended its script: Asterisk says HANGUP, then closes
                    t.got_eof = True
                    with contextlib.suppress(OSError):
                        writer.write(b"HANGUP\n")
                        await writer.drain()
                    break
                command = line.decode("utf-8", "replace").rstrip("\r\n")
                t.commands.append(command)
                if self.close_at and command.startswith(self.close_at):
                    break
                command_id = random.randrange(1, 2**31)
                await self.on_start(command_id, command)
                out = await self.reply(command)
                t.replies.append(out)
                await self.on_end(command_id, command, out.rsplit("\n", 1)[-1])
                writer.write(out.encode("utf-8") + b"\n")
                await writer.drain()
        except asyncio.TimeoutError:
            t.failure = f"no command from the AGI server within {self.timeout:.0f} s"
        except (ValueError, asyncio.LimitOverrunError):
            t.failure = "line from the AGI server too long"
        except OSError as e:
            t.failure = f"connection lost: {type(e).__name__}: {e}"
        finally:
            with contextlib.suppress(Exception):
                writer.close()
        return t

"""AMI wire frames: bytes in, immutable frames out.  Pure, stdlib only.

Asterisk sends ``Key: Value`` lines separated by CRLF, one blank line between
messages.  Rules kept here (see ../shared/ami-traces/asterisk-22/README.md):

* bytes are decoded only once a whole frame has arrived, as UTF-8, falling
  back to GBK for frames that are not valid UTF-8, and finally to UTF-8 with
  replacement characters (never silently dropping a character);
* a header may repeat in one frame (``ChanVariable``, ``DestChanVariable``):
  every value is kept, in wire order;
* a malformed line (no colon) or an oversized frame is counted and skipped,
  never raised.
"""
from __future__ import annotations

import operator
import re
from dataclasses import dataclass, field
from itertools import repeat

DEFAULT_MAX_FRAME_BYTES = 256 * 1024

_FRAME_END = re.compile(rb"\n\r?\n")


@dataclass(frozen=True, slots=True)
class Frame:
    """One AMI message, headers in wire order (repeats kept)."""

    headers: tuple[tuple[str, str], ...]
    encoding: str = "utf-8"
    bad_lines: int = 0
    body: str = ""  # the text after the headers of a ``Response: Follows``

    def get(self, key: str, default: str | None = None) -> str | None:
        """First value of ``key`` (case-insensitive, as Asterisk is inconsistent)."""
        for k, v in self.headers:  # exact spelling first: no lowercasing
            if k == key:
                return v
        lk = key.lower()
        for k, v in self.headers:
            if k.lower() == lk:
                return v
        return default

    def get_all(self, key: str) -> list[str]:
        lk = key.lower()
        return [v for k, v in self.headers if k == key or k.lower() == lk]

    def variables(self, key: str = "ChanVariable") -> dict[str, str]:
        """``ChanVariable: NAME=value`` headers as a dict (also the legacy
        ``ChanVariable(<chan>): NAME=value`` form)."""
        out: dict[str, str] = {}
        lk = key.lower()
        for k, v in self.headers:
            kl = k.lower()
            if kl == lk or (kl.startswith(lk + "(") and kl.endswith(")")):
                name, sep, value = v.partition("=")
                if sep:
                    out[name.strip()] = value
        return out

    @property
    def event(self) -> str | None:
        return self.get("Event")

    @property
    def response(self) -> str | None:
        return self.get("Response")

    @property
    def action_id(self) -> str | None:
        return self.get("ActionID")

    def to_bytes(self) -> bytes:
        lines = [f"{k}: {v}" for k, v in self.headers]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")


def decode_frame_bytes(raw: bytes) -> tuple[str, str]:
    """Decode one whole frame: UTF-8, else GBK, else UTF-8 with U+FFFD."""
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    try:
        return raw.decode("gbk"), "gbk"
    except UnicodeDecodeError:
        return raw.decode("utf-8", "replace"), "utf-8-replace"


_contains = operator.contains
_COLON_SP = ": "


def _fast_headers(text: str) -> tuple[tuple[str, str], ...] | None:
    """Headers of a well-formed CRLF frame, or ``None`` to take the slow path.

    Well-formed: CRLF line ends only, every line ``Key: value`` with exactly
    one ``": "``, keys without spaces or colons, no ``Response: Follows``
    body.  Then all lines split at once in C (``str.split``/``zip``) instead
    of one partition per line -- the same result as :func:`_parse_slow`.
    """
    if text.endswith("\r\n"):
        text = text[:-2]
    elif text.endswith("\r"):
        text = text[:-1]
    if not text or "Follows" in text:
        return None
    lines = text.split("\r\n")
    n = len(lines)
    if n - 1 != text.count("\n") or text.count(_COLON_SP) != n:
        return None
    if not all(map(_contains, lines, repeat(_COLON_SP))):
        return None
    parts = _COLON_SP.join(lines).split(_COLON_SP)
    keys = parts[::2]
    if "" in keys:
        return None
    joined = "\x00".join(keys)
    if " " in joined or ":" in joined or "\t" in joined or "\r" in joined:
        return None
    return tuple(zip(keys, parts[1::2]))


def parse_frame(raw: bytes) -> Frame | None:
    """Parse the bytes of one frame (without the blank-line terminator).

    Returns ``None`` for an empty frame or one without a single valid header.
    """
    try:
        text, encoding = raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = decode_frame_bytes(raw)
    headers = _fast_headers(text)
    if headers is not None:
        return Frame(headers, encoding)
    return _parse_slow(text, encoding)


def _parse_slow(text: str, encoding: str) -> Frame | None:
    headers: list[tuple[str, str]] = []
    bad = 0
    body_lines: list[str] = []
    follows = False
    for line in text.split("\n"):
        if line.endswith("\r"):
            line = line[:-1]
        if not line:
            continue
        if follows and not body_lines and ":" not in line:
            body_lines.append(line)
            continue
        if body_lines:
            body_lines.append(line)
            continue
        key, sep, value = line.partition(":")
        if not sep or not key or " " in key.strip() and not key.strip().startswith("ChanVariable("):
            if follows:
                body_lines.append(line)
            else:
                bad += 1
            continue
        key = key.strip()
        if value.startswith(" "):
            value = value[1:]
        headers.append((key, value))
        if key.lower() == "response" and value.strip() == "Follows":
            follows = True
    if not headers:
        return None
    return Frame(tuple(headers), encoding, bad, "\n".join(body_lines))


@dataclass
class FrameStats:
    frames: int = 0
    skipped_empty: int = 0
    oversized: int = 0
    bad_lines: int = 0
    non_utf8: int = 0


@dataclass
class FrameReader:
    """Incremental splitter: feed socket reads, get whole frames.

    Accepts CRLF (Asterisk) and bare LF (some recorders) separators.  The
    banner line (``Asterisk Call Manager/x.y.z``) is reported once through
    :attr:`banner`.
    """

    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    banner: str | None = None
    stats: FrameStats = field(default_factory=FrameStats)
    _buf: bytes = b""  # the incomplete tail of the stream
    _discarding: bool = False
    expect_banner: bool = True

    def feed(self, data: bytes) -> list[Frame]:
        buf = self._buf + data if self._buf else bytes(data)
        out: list[Frame] = []
        if self.expect_banner and self.banner is None:
            nl = buf.find(b"\n")
            if nl < 0:
                self._keep(buf)
                return out
            first = buf[:nl].rstrip(b"\r")
            if first.startswith(b"Asterisk Call Manager/"):
                self.banner = first.decode("utf-8", "replace")
                buf = buf[nl + 1:]
            else:
                self.banner = ""
        # A frame ends at "\n\r\n" or "\n\n"; split in C, keep the tail.
        if b"\n\n" in buf:
            parts = _FRAME_END.split(buf)
        else:
            parts = buf.split(b"\n\r\n")
        self._buf = b""
        self._keep(parts.pop())
        if not parts:
            return out
        if self._discarding:
            # the end of a frame already counted as oversized
            self._discarding = False
            del parts[0]
        stats = self.stats
        limit = self.max_frame_bytes
        append = out.append
        for raw in parts:
            if len(raw) > limit:
                stats.oversized += 1
                continue
            frame = parse_frame(raw)
            if frame is None:
                stats.skipped_empty += 1
                continue
            append(frame)
            if frame.bad_lines:
                stats.bad_lines += frame.bad_lines
            if frame.encoding != "utf-8":
                stats.non_utf8 += 1
        stats.frames += len(out)
        return out

    def _keep(self, tail: bytes) -> None:
        if len(tail) > self.max_frame_bytes:
            # a frame that can never fit: drop what we have, skip to its end
            self.stats.oversized += 1
            self._buf = b""
            self._discarding = True
        else:
            self._buf = tail

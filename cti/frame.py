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

Speed (bench/ami_pipeline.py): the normal case -- whole CRLF frames, no
command output -- is split into lines once per socket read and each line is
looked up in a per-connection :class:`LineCache` (most header lines repeat
verbatim within a session).  Anything unusual takes the line-by-line path;
tests/test_normalise_traces.py checks that both give the same frames for any
input and any read boundaries.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

DEFAULT_MAX_FRAME_BYTES = 256 * 1024

_FRAME_END = re.compile(rb"\n\r?\n")
# "ActionID" in every mix of upper and lower case (256 spellings)
_ACTIONID_SPELLINGS = frozenset(
    "".join(c.upper() if bits >> i & 1 else c for i, c in enumerate("actionid")) for bits in range(256))
_LOWER: dict[str, str] = {}  # header name -> lower case (header names repeat endlessly)


@dataclass(frozen=True, slots=True)
class Frame:
    """One AMI message, headers in wire order (repeats kept)."""

    headers: tuple[tuple[str, str], ...]
    encoding: str = "utf-8"
    bad_lines: int = 0
    body: str = ""  # the text after the headers of a ``Response: Follows``
    # first value by exact spelling (built at the first get(); a frame is read
    # by several consumers) and, only when a name is missed, by lower case
    _index: dict[str, str] | None = field(default=None, init=False, repr=False, compare=False, hash=False)
    _lower: dict[str, str] | None = field(default=None, init=False, repr=False, compare=False, hash=False)

    def first_values(self) -> dict[str, str]:
        """Header name (exact spelling) -> its first value; built once per
        frame and shared by every reader (do not modify)."""
        index = self._index
        if index is None:
            index = dict(reversed(self.headers))  # reversed: the first occurrence wins
            object.__setattr__(self, "_index", index)
        return index

    def get(self, key: str, default: str | None = None) -> str | None:
        """First value of ``key`` (case-insensitive, as Asterisk is inconsistent;
        a header spelt exactly as asked wins over an earlier one in another case)."""
        index = self._index
        if index is None:
            index = self.first_values()
        v = index.get(key)
        if v is not None:
            return v
        lower = self._lower
        if lower is None:
            low = _LOWER
            lower = {}
            for k, val in reversed(self.headers):
                lk = low.get(k)
                if lk is None:
                    lk = k.lower()
                    if len(low) < 10_000:  # bounded: hostile frames may invent names
                        low[k] = lk
                lower[lk] = val
            object.__setattr__(self, "_lower", lower)
        return lower.get(key.lower(), default)

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
        # Read for every frame and absent from nearly every event: a miss
        # must not build the case-folded index of get() (that was ~5 % of
        # the service's CPU in a storm).  Same answer as get("ActionID").
        index = self._index
        if index is None:
            index = self.first_values()
        v = index.get("ActionID")
        if v is not None:
            return v
        if _ACTIONID_SPELLINGS.isdisjoint(index):  # the usual miss: one pass in C
            return None
        for k, v in self.headers:
            if k in _ACTIONID_SPELLINGS:
                return v
        return None

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


LINE_CACHE_SIZE = 8192


def _parse_line(line: str) -> tuple[str, str] | None:
    """One ``Key: value`` line (CR already removed), or ``None`` if malformed.

    The key is stripped; one space after the colon is dropped; a key with a
    space inside is malformed, except the legacy ``ChanVariable(<chan>)``.
    """
    key, sep, value = line.partition(":")
    if not sep:
        return None
    key = key.strip()
    if not key or (" " in key and not key.startswith("ChanVariable(")):
        return None
    if value.startswith(" "):
        value = value[1:]
    return key, value


class LineCache(dict):
    """Raw header line (bytes) -> parsed ``(key, value)`` (or ``None``).

    Within one AMI session about 90 % of the header lines repeat verbatim
    (``Privilege: call,all``, ``Language: en``, the channel names and
    ``ChanVariable`` values of the calls in progress...), so a frame's
    headers are mostly dictionary look-ups made in C, without decoding or
    splitting again.  Bounded: emptied when ``limit`` entries are reached.
    """

    __slots__ = ("limit",)

    def __init__(self, limit: int = LINE_CACHE_SIZE) -> None:
        super().__init__()
        self.limit = limit

    def __missing__(self, raw_line: bytes) -> tuple[str, str] | None:
        try:
            line = raw_line.decode("utf-8")
        except UnicodeDecodeError:
            return None  # not UTF-8: the whole frame takes the slow path
        # _parse_line, inlined: this runs for every line not seen before
        key, sep, value = line.partition(":")
        parsed = None
        if sep:
            key = key.strip()
            if key and (" " not in key or key.startswith("ChanVariable(")):
                parsed = (key, value[1:] if value[:1] == " " else value)
        if len(self) >= self.limit:
            self.clear()
        self[raw_line] = parsed
        return parsed


_DEFAULT_LINE_CACHE = LineCache()

_new = object.__new__
_set_headers = Frame.headers.__set__  # type: ignore[attr-defined]
_set_encoding = Frame.encoding.__set__  # type: ignore[attr-defined]
_set_bad_lines = Frame.bad_lines.__set__  # type: ignore[attr-defined]
_set_body = Frame.body.__set__  # type: ignore[attr-defined]
_set_index = Frame._index.__set__  # type: ignore[attr-defined]
_set_lower = Frame._lower.__set__  # type: ignore[attr-defined]


def _utf8_frame(headers: tuple[tuple[str, str], ...]) -> Frame:
    """``Frame(headers)`` without the frozen-dataclass ``__init__`` overhead."""
    f = _new(Frame)
    _set_headers(f, headers)
    _set_encoding(f, "utf-8")
    _set_bad_lines(f, 0)
    _set_body(f, "")
    _set_index(f, None)
    _set_lower(f, None)
    return f


def parse_frame(raw: bytes, cache: LineCache | None = None) -> Frame | None:
    """Parse the bytes of one frame (without the blank-line terminator).

    Returns ``None`` for an empty frame or one without a single valid header.
    ``cache`` (one per connection, see :class:`FrameReader`) speeds up
    well-formed CRLF frames; anything else (bare LF, a malformed line, a
    ``Response: Follows`` body, not UTF-8) takes the line-by-line path, with
    the same result.
    """
    body = raw
    if body.endswith(b"\r\n"):
        body = body[:-2]
    elif body.endswith(b"\r"):
        body = body[:-1]
    if body and b"Follows" not in body:
        lines = body.split(b"\r\n")
        if len(lines) - 1 == body.count(b"\n"):
            if cache is None:
                cache = _DEFAULT_LINE_CACHE
            headers = tuple(map(cache.__getitem__, lines))
            if None not in headers:
                return _utf8_frame(headers)
    text, encoding = decode_frame_bytes(raw)
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
        kv = _parse_line(line)
        if kv is None:
            if follows:
                body_lines.append(line)
            else:
                bad += 1
            continue
        key, value = kv
        headers.append(kv)
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
    _lines: LineCache = field(default_factory=LineCache, repr=False)
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
        if not self._discarding:
            # Fast path: whole CRLF frames up to the last blank line.
            end = buf.rfind(b"\r\n\r\n")
            if 0 < end <= self.max_frame_bytes:
                region = buf[:end]
                rest = buf[end + 4:]
                if (region.count(b"\n") == region.count(b"\r\n")
                        and b"Follows" not in region
                        and b"\n\n" not in rest and b"\n\r\n" not in rest):
                    self._keep(rest)
                    self._feed_lines(region, out)
                    return out
        # A frame ends at "\n\r\n" or "\n\n"; split in C, keep the tail.
        if b"\n\n" in buf:
            parts = _FRAME_END.split(buf)
        else:
            parts = buf.split(b"\n\r\n")
        self._buf = b""
        tail = parts.pop()
        if self._discarding:
            if not parts:  # still inside the oversized frame: drop it, but keep
                self._buf = tail[-3:]  # a frame end that may straddle two reads
                return out
            # the end of a frame already counted as oversized
            self._discarding = False
            del parts[0]
        self._keep(tail)
        if not parts:
            return out
        stats = self.stats
        limit = self.max_frame_bytes
        lines = self._lines
        append = out.append
        for raw in parts:
            if len(raw) > limit:
                stats.oversized += 1
                continue
            frame = parse_frame(raw, lines)
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

    def _feed_lines(self, region: bytes, out: list[Frame]) -> None:
        """Fast path for a run of whole CRLF frames (the normal Asterisk case,
        no bare LF, no command output): split the run into lines once, look
        every line up in the line cache in one C-level ``map``, then cut the
        result at the blank lines.  Same frames as :func:`parse_frame`."""
        lines = region.split(b"\r\n")
        parsed = tuple(map(self._lines.__getitem__, lines))
        index = lines.index
        append = out.append
        stats = self.stats
        n = len(lines)
        i = 0
        while i < n:
            try:
                j = index(b"", i)
            except ValueError:
                j = n
            if j > i:
                headers = parsed[i:j]
                if None not in headers:
                    append(_utf8_frame(headers))
                else:  # a malformed or non-UTF-8 line: the careful path
                    frame = parse_frame(b"\r\n".join(lines[i:j]) + b"\r\n", self._lines)
                    if frame is None:
                        stats.skipped_empty += 1
                    else:
                        append(frame)
                        stats.bad_lines += frame.bad_lines
                        if frame.encoding != "utf-8":
                            stats.non_utf8 += 1
            i = j + 1
        stats.frames += len(out)

    def _keep(self, tail: bytes) -> None:
        if len(tail) > self.max_frame_bytes:
            # a frame that can never fit: drop what we have, skip to its end
            self.stats.oversized += 1
            self._buf = b""
            self._discarding = True
        else:
            self._buf = tail

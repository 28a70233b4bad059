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

from dataclasses import dataclass, field

DEFAULT_MAX_FRAME_BYTES = 256 * 1024


@dataclass(frozen=True, slots=True)
class Frame:
    """One AMI message, headers in wire order (repeats kept)."""

    headers: tuple[tuple[str, str], ...]
    encoding: str = "utf-8"
    bad_lines: int = 0
    body: str = ""  # the text after the headers of a ``Response: Follows``

    def get(self, key: str, default: str | None = None) -> str | None:
        """First value of ``key`` (case-insensitive, as Asterisk is inconsistent)."""
        lk = key.lower()
        for k, v in self.headers:
            if k.lower() == lk:
                return v
        return default

    def get_all(self, key: str) -> list[str]:
        lk = key.lower()
        return [v for k, v in self.headers if k.lower() == lk]

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


def parse_frame(raw: bytes) -> Frame | None:
    """Parse the bytes of one frame (without the blank-line terminator).

    Returns ``None`` for an empty frame or one without a single valid header.
    """
    text, encoding = decode_frame_bytes(raw)
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
    _buf: bytearray = field(default_factory=bytearray)
    _discarding: bool = False
    expect_banner: bool = True

    def feed(self, data: bytes) -> list[Frame]:
        buf = self._buf
        buf += data
        out: list[Frame] = []
        if self.expect_banner and self.banner is None:
            nl = buf.find(b"\n")
            if nl < 0:
                return out
            first = bytes(buf[:nl]).rstrip(b"\r")
            if first.startswith(b"Asterisk Call Manager/"):
                self.banner = first.decode("utf-8", "replace")
                del buf[: nl + 1]
            else:
                self.banner = ""
        start = 0
        n = len(buf)
        while start < n:
            i = buf.find(b"\n", start)
            # find the end of a frame: "\n\r\n" or "\n\n"
            end = -1
            sep_len = 0
            while i >= 0:
                if buf[i + 1 : i + 3] == b"\r\n":
                    end, sep_len = i, 3
                    break
                if buf[i + 1 : i + 2] == b"\n":
                    end, sep_len = i, 2
                    break
                if i + 1 >= n or (i + 2 >= n and buf[i + 1 : i + 2] == b"\r"):
                    break
                i = buf.find(b"\n", i + 1)
            if end < 0:
                break
            raw = bytes(buf[start : end + 1])
            start = end + sep_len
            if self._discarding:
                self._discarding = False
                continue
            if len(raw) > self.max_frame_bytes:
                self.stats.oversized += 1
                continue
            frame = parse_frame(raw)
            if frame is None:
                self.stats.skipped_empty += 1
                continue
            self.stats.frames += 1
            self.stats.bad_lines += frame.bad_lines
            if frame.encoding != "utf-8":
                self.stats.non_utf8 += 1
            out.append(frame)
        if start:
            del buf[:start]
        if len(buf) > self.max_frame_bytes:
            # a frame that can never fit: drop what we have, skip to its end
            self.stats.oversized += 1
            buf.clear()
            self._discarding = True
        return out

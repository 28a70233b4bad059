"""Recording index: pure model (stdlib only).

File names come from AMI (``VarSet MIXMONITOR_FILENAME``) and are treated as
hostile: :func:`relative_path` accepts only an absolute ``.wav`` path inside
the recordings directory, without ``..``, control characters or odd bytes,
and returns it relative to that directory (what the database stores).
"""
from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum


class RecordingState(str, Enum):
    RECORDING = "recording"      # MixMonitor running (VarSet seen, no stop/hangup yet)
    INDEXED = "indexed"          # file checked: duration, size, checksum
    MISSING = "missing"          # the file was not there when the recording ended
    CORRUPT = "corrupt"          # zero-length or not a readable WAV
    REJECTED = "rejected"        # the name from AMI was unsafe (path traversal, outside the root)
    TRANSCODED = "transcoded"    # compact copy verified, original removed
    EXPIRED = "expired"          # retention over: files deleted


STATE_LABELS = {
    RecordingState.RECORDING: "录音中 Recording",
    RecordingState.INDEXED: "已归档 Indexed",
    RecordingState.MISSING: "录音文件缺失 File missing",
    RecordingState.CORRUPT: "录音文件损坏 File corrupt",
    RecordingState.REJECTED: "文件名不安全,已拒绝 Unsafe name rejected",
    RecordingState.TRANSCODED: "已压缩 Compressed",
    RecordingState.EXPIRED: "已过保存期并删除 Expired (deleted)",
}

# states in which there is a file to play
PLAYABLE = frozenset({RecordingState.INDEXED, RecordingState.TRANSCODED})

# order types whose recordings are under legal hold until the order is closed
# (plus the retention period): 投诉 complaint, 举报 report
HELD_ORDER_TYPES = frozenset({"complaint", "report"})

MAX_NAME = 1024
_BAD_CHARS = re.compile(r"[\x00-\x1f\x7f\\]")
# the ids Asterisk puts in names (uniqueid/linkedid: "1795374638.1")
_ID = r"\d{1,12}\.\d{1,9}"
# asterisk-conf/extensions.conf: <YYYYMMDD>/<linkedid>-<uniqueid>-<queue>-<HHMMSS>.wav
DIALPLAN_NAME = re.compile(rf"^(?:.*/)?(?P<day>\d{{8}})/(?P<linkedid>{_ID})-(?P<uniqueid>{_ID})-"
                           r"(?P<queue>[a-z0-9]{1,32})-(?P<time>\d{6})\.wav$")
# the acceptance captures (tests/fixtures/ami-traces): <queue>-<YYYYMMDD>-<HHMMSS>-<uniqueid>.wav
TRACE_NAME = re.compile(rf"^(?:.*/)?(?P<queue>[a-z0-9]{{1,32}})-(?P<day>\d{{8}})-(?P<time>\d{{6}})-"
                        rf"(?P<uniqueid>{_ID})\.wav$")


class UnsafeName(ValueError):
    """A file name from AMI that must not be used (the message says why)."""


def relative_path(value: str, root: str) -> str:
    """``/root/20261122/1.0-1.1-repair-120000.wav`` → ``20261122/1.0-1.1-repair-120000.wav``.

    ``root`` is the recordings directory as Asterisk names it.  Raises
    :class:`UnsafeName` for anything else: empty, too long, control
    characters or backslashes, a relative path, ``..`` or ``.`` segments,
    empty segments, a path outside ``root``, a name not ending in ``.wav``."""
    if not value:
        raise UnsafeName("empty file name")
    if len(value) > MAX_NAME:
        raise UnsafeName("file name too long")
    if _BAD_CHARS.search(value):
        raise UnsafeName("control character or backslash in file name")
    if not value.startswith("/"):
        raise UnsafeName("file name is not an absolute path")
    parts = value.split("/")[1:]
    if any(p in ("", ".", "..") for p in parts):
        raise UnsafeName("'..', '.' or empty segment in file name (path traversal)")
    root = posixpath.normpath(root or "/")
    prefix = root.rstrip("/") + "/"
    if not value.startswith(prefix):
        raise UnsafeName(f"file is outside the recordings directory {root}")
    rel = value[len(prefix):]
    if not rel.lower().endswith(".wav") or len(rel) <= 4:
        raise UnsafeName("not a .wav file")
    if rel.split("/")[-1].startswith("."):
        raise UnsafeName("hidden file name")
    return rel


def check_relative(rel: str) -> str:
    """A stored relative path again (defence in depth before opening a file)."""
    if not rel or rel.startswith("/") or _BAD_CHARS.search(rel) or len(rel) > MAX_NAME:
        raise UnsafeName("bad stored path")
    if any(p in ("", ".", "..") for p in rel.split("/")):
        raise UnsafeName("bad stored path")
    return rel


@dataclass(frozen=True, slots=True)
class NameParts:
    linkedid: str = ""
    uniqueid: str = ""
    queue: str = ""


def parse_name(rel: str) -> NameParts:
    """Ids and queue from a dialplan or trace-style name; empty parts if
    the name has another shape (the AMI event's ids are used then)."""
    m = DIALPLAN_NAME.match(rel)
    if m:
        return NameParts(m["linkedid"], m["uniqueid"], m["queue"])
    m = TRACE_NAME.match(rel)
    if m:
        return NameParts("", m["uniqueid"], m["queue"])
    return NameParts()


def safe_error_text(value: str, limit: int = 200) -> str:
    """A hostile name, shown in logs and the database as an escaped excerpt."""
    return repr(value[:limit])


# --- retention and legal hold --------------------------------------------

@dataclass(frozen=True, slots=True)
class LinkedOrder:
    order_type: str
    status: str
    closed_at: datetime | None = None
    updated_at: datetime | None = None


def retention_until(ended_at: datetime, days: int) -> datetime:
    return ended_at + timedelta(days=days)


def legal_hold_until(orders: list[LinkedOrder] | tuple[LinkedOrder, ...], days: int,
                     now: datetime) -> tuple[datetime | None, bool]:
    """``(hold_until, open_hold)`` for a recording's orders: complaint and
    report orders hold it until closed + ``days``; an order of those types
    that is still open holds it indefinitely (``open_hold`` True, and
    ``hold_until`` at least ``now + days``).  Cancelled orders count as
    closed when they were last changed."""
    until: datetime | None = None
    open_hold = False
    for o in orders:
        if o.order_type not in HELD_ORDER_TYPES:
            continue
        if o.status == "closed" and o.closed_at is not None:
            end = o.closed_at
        elif o.status == "cancelled":
            end = o.updated_at or o.closed_at or now
        else:
            open_hold = True
            end = now
        t = end + timedelta(days=days)
        if until is None or t > until:
            until = t
    return until, open_hold


def is_expired(retention: datetime | None, hold: datetime | None, open_hold: bool, now: datetime) -> bool:
    if open_hold or retention is None:
        return False
    if hold is not None and hold > now:
        return False
    return retention <= now


# --- quality scores -------------------------------------------------------

# 质检评分项 (each 0..10, optional); the overall score is 0..100
SCORE_CRITERIA = {
    "greeting": "服务规范用语 Greeting & courtesy",
    "listening": "倾听与沟通 Listening & communication",
    "accuracy": "业务解答准确 Accuracy",
    "order": "工单记录完整 Work order completeness",
    "efficiency": "处理效率 Efficiency",
}
MAX_COMMENT = 2000


class ScoreInvalid(ValueError):
    def __init__(self, errors: dict[str, str]):
        super().__init__(errors)
        self.errors = errors


@dataclass(frozen=True, slots=True)
class ScoreInput:
    score: int
    comment: str
    criteria: dict[str, int]


def validate_score(data: object) -> ScoreInput:
    if not isinstance(data, dict):
        raise ScoreInvalid({"body": "需要 JSON 对象 / JSON object expected"})
    errors: dict[str, str] = {}
    score = data.get("score")
    if isinstance(score, bool) or not isinstance(score, int) or not 0 <= score <= 100:
        errors["score"] = "评分须为 0–100 的整数 / score must be an integer 0-100"
    comment = data.get("comment", "")
    if not isinstance(comment, str):
        errors["comment"] = "评语须为文字 / comment must be text"
        comment = ""
    comment = comment.strip()
    if len(comment) > MAX_COMMENT:
        errors["comment"] = f"评语最多 {MAX_COMMENT} 字 / comment too long"
    raw = data.get("criteria") or {}
    crit: dict[str, int] = {}
    if not isinstance(raw, dict):
        errors["criteria"] = "评分项格式错误 / criteria must be an object"
    else:
        for k, v in raw.items():
            if k not in SCORE_CRITERIA:
                errors["criteria"] = f"未知评分项 / unknown criterion {str(k)[:40]!r}"
            elif isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 10:
                errors["criteria"] = f"评分项 {k} 须为 0–10 / criterion {k} must be 0-10"
            else:
                crit[k] = v
    if errors:
        raise ScoreInvalid(errors)
    return ScoreInput(int(score), comment, crit)  # type: ignore[arg-type]

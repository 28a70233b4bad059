"""Helpers for the recordings tests: real WAV files and work orders."""
from __future__ import annotations

import itertools
import wave
from pathlib import Path

from recordings.audio import write_tone_wav

_seq = itertools.count(1)


def tone(path: Path, seconds: float = 2.0) -> Path:
    return write_tone_wav(path, seconds)


def truncated_header_wav(path: Path, seconds: float = 1.0) -> Path:
    """A WAV whose header still says 0 frames (what Asterisk leaves while writing)."""
    write_tone_wav(path, seconds)
    data = bytearray(path.read_bytes())
    data[4:8] = (0).to_bytes(4, "little")
    data[40:44] = (0).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    return path


def corrupt_wav(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk" + b"\x00" * 64)
    return path


def wav_seconds(path: Path) -> float:
    with wave.open(str(path)) as w:
        return w.getnframes() / w.getframerate()


async def make_call(conn, linkedid: str, agent: str = "1001", queue: str = "repair") -> None:
    await conn.execute("INSERT INTO calls (linkedid, agent, queue) VALUES ($1, $2, $3) "
                       "ON CONFLICT (linkedid) DO NOTHING", linkedid, agent, queue)


async def make_order(conn, linkedid: str | None, *, order_type: str = "repair", status: str = "accepted",
                     department: str = "", agent: str = "1001", closed_days_ago: float | None = None) -> int:
    if linkedid:
        await make_call(conn, linkedid, agent)
    n = next(_seq)
    return await conn.fetchval(
        """INSERT INTO work_orders (order_no, status, order_type, linkedid, agent, department, assignee,
                                    closed_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7,
                   CASE WHEN $8::float8 IS NULL THEN NULL ELSE now() - make_interval(secs => $8 * 86400) END)
           RETURNING id""",
        f"GDTEST{n:08d}{linkedid or ''}"[:40], status, order_type, linkedid, agent, department,
        "张师傅" if department else "", closed_days_ago)

"""Call records for the queue figures (asyncpg).  The ``calls`` table has
one row per call (cti.screenpop.CallRecorder); :func:`stints_between` turns
its rows into :class:`queues.model.Stint` so that the wallboard (today,
after a restart) and the history reports sum them with the same
:func:`queues.model.tally_of`."""
from __future__ import annotations

from datetime import date, datetime, timezone

import asyncpg

from .metrics import day_bounds
from .model import Stint, Tally, tally_of


async def stints_between(conn: asyncpg.Connection, start: float, end: float, *,
                         other_nodes_than: str | None = None) -> list[Stint]:
    """Calls that entered a queue in ``[start, end)`` (epoch seconds);
    ``other_nodes_than``: only calls carried by other nodes (cti.cluster)."""
    rows = await conn.fetch(
        """SELECT queue, outcome, hold_time_s, talk_time_s, ended_at
             FROM calls
            WHERE queued_at >= $1 AND queued_at < $2 AND queue <> ''
              AND ($3::text IS NULL OR (node <> $3 AND node <> ''))""",
        datetime.fromtimestamp(start, timezone.utc), datetime.fromtimestamp(end, timezone.utc), other_nodes_than)
    out = []
    for r in rows:
        outcome = r["outcome"] if r["outcome"] in ("answered", "abandoned") else (
            "waiting" if r["ended_at"] is None else "exited")
        out.append(Stint(r["queue"], outcome, float(r["hold_time_s"] or 0),
                         float(r["talk_time_s"]) if r["talk_time_s"] is not None and r["ended_at"] is not None
                         else None))
    return out


async def day_tallies(conn: asyncpg.Connection, day: date, threshold_s: float) -> dict[str, Tally]:
    start, end = day_bounds(day)
    return tally_of(await stints_between(conn, start, end), threshold_s)


__all__ = ["day_tallies", "stints_between"]

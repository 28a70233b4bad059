"""asyncpg access to the recordings tables (migration 008).  Every function
takes a connection: the caller owns the transaction."""
from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import asyncpg

from .access import RecordingFacts
from .model import LinkedOrder

_COLUMNS = """r.id, r.path, r.linkedid, r.uniqueid, r.channel, r.queue, r.agent, r.state, r.error,
    r.started_at, r.ended_at, r.end_reason, r.indexed_at, r.duration_s, r.size_bytes, r.sha256, r.format,
    r.transcoded_path, r.transcoded_format, r.transcoded_size, r.transcoded_sha256, r.transcoded_verified,
    r.transcoded_at, r.original_removed, r.transcode_attempts, r.transcode_after,
    r.retention_until, r.legal_hold_until, r.legal_hold_reason, r.expired_at"""


async def insert_started(conn: asyncpg.Connection, *, path: str, linkedid: str, uniqueid: str, channel: str,
                         queue: str, agent: str, started_at: datetime, state: str = "recording",
                         error: str = "", ended_at: datetime | None = None) -> tuple[int, bool]:
    """``(id, created)``; a second VarSet for the same file finds the first row."""
    row = await conn.fetchrow(
        """INSERT INTO recordings (path, linkedid, uniqueid, channel, queue, agent, started_at, state, error,
                                   ended_at, end_reason)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, CASE WHEN $10::timestamptz IS NULL THEN '' ELSE $8 END)
           ON CONFLICT (path) WHERE path <> '' DO NOTHING
           RETURNING id""",
        path, linkedid, uniqueid, channel[:200], queue[:32], agent[:32], started_at, state, error[:1000],
        ended_at)
    if row is not None:
        return row["id"], True
    return await conn.fetchval("SELECT id FROM recordings WHERE path = $1", path), False


_INSERT_STARTED_MANY = """
WITH r AS (
    SELECT *, row_number() OVER (PARTITION BY path ORDER BY i) AS nth
      FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::timestamptz[])
           WITH ORDINALITY AS u(path, linkedid, uniqueid, channel, queue, agent, started_at, i)
), ins AS (
    INSERT INTO recordings (path, linkedid, uniqueid, channel, queue, agent, started_at, state, error,
                            ended_at, end_reason)
    SELECT path, linkedid, uniqueid, channel, queue, agent, started_at, 'recording', '', NULL, ''
      FROM r ORDER BY i
    ON CONFLICT (path) WHERE path <> '' DO NOTHING
    RETURNING id, path
)
SELECT coalesce(ins.id, old.id) AS id, (ins.id IS NOT NULL AND r.nth = 1) AS created
  FROM r LEFT JOIN ins ON ins.path = r.path LEFT JOIN recordings old ON old.path = r.path
 ORDER BY r.i"""


async def insert_started_many(conn: asyncpg.Connection, rows: list[dict[str, Any]]) -> list[tuple[int, bool]]:
    """:func:`insert_started` of many recordings (safe names: ``path`` not
    empty) in one statement; ``(id, created)`` of each, in order (a file
    named twice is one row, created once)."""
    if not rows:
        return []
    cols = ([r["path"] for r in rows], [r["linkedid"] for r in rows], [r["uniqueid"] for r in rows],
            [r["channel"][:200] for r in rows], [r["queue"][:32] for r in rows], [r["agent"][:32] for r in rows],
            [r["started_at"] for r in rows])
    if not all(cols[0]):
        raise ValueError("insert_started_many: every row needs its path")
    got = [(r["id"], r["created"]) for r in await conn.fetch(_INSERT_STARTED_MANY, *cols)]
    missing = [rows[i]["path"] for i, (rec_id, _) in enumerate(got) if rec_id is None]
    if missing:  # another node's insert, committed after this statement's snapshot
        found = {r["path"]: r["id"] for r in await conn.fetch(
            "SELECT id, path FROM recordings WHERE path = ANY($1::text[])", missing)}
        got = [(rec_id if rec_id is not None else found[rows[i]["path"]], created)
               for i, (rec_id, created) in enumerate(got)]
    return got


_INDEX_COLUMNS = "id, path, linkedid, agent, queue, state, started_at, ended_at"


async def end_recording(conn: asyncpg.Connection, rec_id: int, *, ended_at: datetime, reason: str,
                        agent: str = "", queue: str = "") -> asyncpg.Record | None:
    """End a recording once.  Returns what indexing needs (the columns of
    :func:`for_indexing`), or ``None`` when it had already ended."""
    return await conn.fetchrow(
        f"""UPDATE recordings SET ended_at = $2, end_reason = $3,
                  agent = CASE WHEN agent = '' THEN $4 ELSE agent END,
                  queue = CASE WHEN queue = '' THEN $5 ELSE queue END,
                  updated_at = now()
            WHERE id = $1 AND ended_at IS NULL
           RETURNING {_INDEX_COLUMNS}""", rec_id, ended_at, reason, agent[:32], queue[:32])


async def pending_index(conn: asyncpg.Connection, *, stale_after_s: float, limit: int = 50) -> list[asyncpg.Record]:
    """Recordings that ended but were never indexed (a crash in between), or
    that never ended (the hang-up was missed) and are older than the longest call."""
    return await conn.fetch(
        """SELECT id, ended_at FROM recordings
            WHERE state = 'recording'
              AND (ended_at IS NOT NULL AND ended_at < now() - interval '1 minute'
                   OR ended_at IS NULL AND started_at < now() - make_interval(secs => $1))
            ORDER BY id LIMIT $2""", stale_after_s, limit)


async def for_indexing(conn: asyncpg.Connection, rec_id: int) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {_INDEX_COLUMNS} FROM recordings WHERE id = $1", rec_id)


async def call_agent(conn: asyncpg.Connection, linkedid: str) -> tuple[str, str]:
    row = await conn.fetchrow("SELECT agent, queue FROM calls WHERE linkedid = $1", linkedid)
    return (row["agent"], row["queue"]) if row else ("", "")


_SET_INDEXED = """UPDATE recordings SET state = 'indexed', indexed_at = now(), duration_s = $2, size_bytes = $3,
                  sha256 = $4, format = $5, retention_until = $6, error = $9,
                  ended_at = coalesce(ended_at, now()),
                  agent = CASE WHEN agent = '' THEN $7 ELSE agent END,
                  queue = CASE WHEN queue = '' THEN $8 ELSE queue END,
                  transcode_after = now(), updated_at = now()
            WHERE id = $1 AND state = 'recording' RETURNING id"""

_SET_FAILED = """UPDATE recordings SET state = $2, error = $3, indexed_at = now(), retention_until = $4,
                  ended_at = coalesce(ended_at, now()),
                  agent = CASE WHEN agent = '' THEN $5 ELSE agent END,
                  queue = CASE WHEN queue = '' THEN $6 ELSE queue END, updated_at = now()
            WHERE id = $1 AND state IN ('recording', 'indexed') RETURNING id"""

_ORDER_COLUMNS = "order_id, order_no, order_type, status, department, assignee, order_agent, closed_at, updated_at"

# the update and the recording's work orders in one round trip (the view
# joins on linkedid, which the update does not change)
_WITH_ORDERS = f"""WITH u AS ({{update}})
    SELECT u.id AS updated, {', '.join('o.' + c for c in _ORDER_COLUMNS.split(', '))}
      FROM u LEFT JOIN recording_orders o ON o.recording_id = u.id ORDER BY o.order_id"""


def _ending(update: str, first: int) -> str:
    """``update`` that also ends the recording (``$first`` = ended_at,
    ``$first+1`` = end_reason), once: only a row not ended yet."""
    for part in ("ended_at = coalesce(ended_at, now())", "WHERE id = $1 AND"):
        if update.count(part) != 1:  # the statement changed: this derivation must change with it
            raise AssertionError(f"_ending: {part!r} not once in the update")
    return (update.replace("ended_at = coalesce(ended_at, now())",
                           f"ended_at = ${first}, end_reason = ${first + 1}")
            .replace("WHERE id = $1 AND", "WHERE id = $1 AND ended_at IS NULL AND"))


_END_INDEXED = _ending(_SET_INDEXED, 10)
_END_FAILED = _ending(_SET_FAILED, 7)


async def set_indexed_with_orders(conn: asyncpg.Connection, rec_id: int, *, duration_s: float, size_bytes: int,
                                  sha256: str, fmt: str, retention_until: datetime, agent: str = "",
                                  queue: str = "", note: str = "",
                                  end: tuple[datetime, str] | None = None) -> list[asyncpg.Record] | None:
    """Indexed (it was waiting to be), and :func:`linked_orders`, in one
    statement: the recording's orders, or ``None`` when it was not waiting.
    ``end=(ended_at, reason)``: it is also the recording's end, which
    happens once (``None`` when it had already ended)."""
    args = [rec_id, duration_s, size_bytes, sha256, fmt, retention_until, agent[:32], queue[:32], note]
    if end is not None:
        args += [end[0], end[1]]
    rows = await conn.fetch(_WITH_ORDERS.format(update=_SET_INDEXED if end is None else _END_INDEXED), *args)
    return [r for r in rows if r["order_id"] is not None] if rows else None


async def set_failed_with_orders(conn: asyncpg.Connection, rec_id: int, *, state: str, error: str,
                                 retention_until: datetime | None = None, agent: str = "",
                                 queue: str = "",
                                 end: tuple[datetime, str] | None = None) -> list[asyncpg.Record] | None:
    """Missing/corrupt/rejected (from 'recording' or 'indexed'), and
    :func:`linked_orders`, in one statement; ``None`` when neither.
    ``end``: as in :func:`set_indexed_with_orders`."""
    args = [rec_id, state, error[:1000], retention_until, agent[:32], queue[:32]]
    if end is not None:
        args += [end[0], end[1]]
    rows = await conn.fetch(_WITH_ORDERS.format(update=_SET_FAILED if end is None else _END_FAILED), *args)
    return [r for r in rows if r["order_id"] is not None] if rows else None


async def linked_orders(conn: asyncpg.Connection, rec_id: int) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"SELECT {_ORDER_COLUMNS} FROM recording_orders WHERE recording_id = $1 ORDER BY order_id", rec_id)


def as_linked(rows) -> list[LinkedOrder]:
    return [LinkedOrder(r["order_type"], r["status"], r["closed_at"], r["updated_at"]) for r in rows]


async def set_hold(conn: asyncpg.Connection, rec_id: int, until: datetime | None, reason: str) -> None:
    """Raise the legal hold (never lowers a longer one, e.g. a manual hold)."""
    await conn.execute(
        """UPDATE recordings SET legal_hold_until = greatest(legal_hold_until, $2),
                  legal_hold_reason = CASE WHEN legal_hold_until IS NULL OR $2 > legal_hold_until
                                           THEN $3 ELSE legal_hold_reason END,
                  updated_at = now()
            WHERE id = $1 AND $2::timestamptz IS NOT NULL""", rec_id, until, reason)


async def get(conn: asyncpg.Connection, rec_id: int) -> asyncpg.Record | None:
    return await conn.fetchrow(f"SELECT {_COLUMNS} FROM recordings r WHERE r.id = $1", rec_id)


async def facts(conn: asyncpg.Connection, rec_id: int) -> RecordingFacts | None:
    row = await conn.fetchrow(
        """SELECT r.agent, coalesce(array_agg(DISTINCT o.department) FILTER (WHERE o.department <> ''),
                                    '{}') AS departments
             FROM recordings r LEFT JOIN recording_orders o ON o.recording_id = r.id
            WHERE r.id = $1 GROUP BY r.id""", rec_id)
    if row is None:
        return None
    return RecordingFacts(row["agent"], frozenset(row["departments"]))


async def for_order(conn: asyncpg.Connection, order_id: int) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"""SELECT {_COLUMNS} FROM recordings r
             WHERE r.linkedid IN (SELECT linkedid FROM work_orders WHERE id = $1 AND linkedid IS NOT NULL)
             ORDER BY r.started_at, r.id""", order_id)


async def search(conn: asyncpg.Connection, *, kind: str, value: str, agent: str | None = None,
                 limit: int = 100) -> list[asyncpg.Record]:
    """Recent recordings visible under ``access.listing_filter`` (kind, value)."""
    if kind == "none":
        return []
    where, args = ["true"], []
    if kind == "agent":
        args.append(value)
        where.append(f"r.agent = ${len(args)}")
    elif kind == "department":
        args.append(value)
        where.append(f"EXISTS (SELECT 1 FROM recording_orders o WHERE o.recording_id = r.id "
                     f"AND o.department = ${len(args)})")
    if agent:
        args.append(agent)
        where.append(f"r.agent = ${len(args)}")
    args.append(limit)
    return await conn.fetch(
        f"SELECT {_COLUMNS} FROM recordings r WHERE {' AND '.join(where)} "
        f"ORDER BY r.started_at DESC, r.id DESC LIMIT ${len(args)}", *args)


async def mark_file_missing(conn: asyncpg.Connection, rec_id: int, error: str) -> None:
    await conn.execute(
        "UPDATE recordings SET state = 'missing', error = $2, updated_at = now() "
        "WHERE id = $1 AND state IN ('indexed', 'transcoded')", rec_id, error[:1000])


# --- transcoding ------------------------------------------------------------

async def claim_transcode(conn: asyncpg.Connection, *, limit: int, lease_s: float) -> list[asyncpg.Record]:
    return await conn.fetch(
        """UPDATE recordings SET transcode_claimed_until = now() + make_interval(secs => $2),
                  transcode_attempts = transcode_attempts + 1, updated_at = now()
            WHERE id IN (SELECT id FROM recordings
                          WHERE state = 'indexed' AND transcode_after <= now()
                            AND (transcode_claimed_until IS NULL OR transcode_claimed_until < now())
                          ORDER BY transcode_after, id LIMIT $1
                          FOR UPDATE SKIP LOCKED)
           RETURNING id, path, duration_s, transcode_attempts""", limit, lease_s)


async def set_transcoded(conn: asyncpg.Connection, rec_id: int, *, path: str, fmt: str, size: int,
                         sha256: str) -> bool:
    return await conn.fetchval(
        """UPDATE recordings SET state = 'transcoded', transcoded_path = $2, transcoded_format = $3,
                  transcoded_size = $4, transcoded_sha256 = $5, transcoded_verified = true,
                  transcoded_at = now(), transcode_claimed_until = NULL, error = '', updated_at = now()
            WHERE id = $1 AND state = 'indexed' RETURNING true""",
        rec_id, path, fmt, size, sha256) is not None


async def set_original_removed(conn: asyncpg.Connection, rec_id: int) -> None:
    await conn.execute("UPDATE recordings SET original_removed = true, updated_at = now() WHERE id = $1", rec_id)


async def transcode_failed(conn: asyncpg.Connection, rec_id: int, *, error: str, retry_in_s: float) -> None:
    await conn.execute(
        """UPDATE recordings SET error = $2, transcode_claimed_until = NULL,
                  transcode_after = now() + make_interval(secs => $3), updated_at = now()
            WHERE id = $1""", rec_id, error[:1000], retry_in_s)


async def originals_to_remove(conn: asyncpg.Connection, limit: int = 50) -> list[asyncpg.Record]:
    return await conn.fetch(
        """SELECT id, path FROM recordings WHERE state = 'transcoded' AND transcoded_verified
              AND NOT original_removed ORDER BY id LIMIT $1""", limit)


# --- retention --------------------------------------------------------------

async def retention_candidates(conn: asyncpg.Connection, limit: int = 200) -> list[int]:
    rows = await conn.fetch(
        """SELECT id FROM recordings
            WHERE state IN ('indexed', 'transcoded', 'missing', 'corrupt')
              AND retention_until IS NOT NULL AND retention_until <= now()
              AND (legal_hold_until IS NULL OR legal_hold_until <= now())
            ORDER BY retention_until, id LIMIT $1""", limit)
    return [r["id"] for r in rows]


async def lock_for_expiry(conn: asyncpg.Connection, rec_id: int) -> asyncpg.Record | None:
    return await conn.fetchrow(
        """SELECT id, path, transcoded_path, state, retention_until, legal_hold_until FROM recordings
            WHERE id = $1 AND state IN ('indexed', 'transcoded', 'missing', 'corrupt')
            FOR UPDATE SKIP LOCKED""", rec_id)


async def set_expired(conn: asyncpg.Connection, rec_id: int) -> None:
    await conn.execute(
        """UPDATE recordings SET state = 'expired', expired_at = now(), updated_at = now()
            WHERE id = $1""", rec_id)


async def set_legal_hold(conn: asyncpg.Connection, rec_id: int, until: datetime | None, reason: str) -> bool:
    """A supervisor's manual hold (may also shorten or lift it: None)."""
    return await conn.fetchval(
        "UPDATE recordings SET legal_hold_until = $2, legal_hold_reason = $3, updated_at = now() "
        "WHERE id = $1 AND state <> 'expired' RETURNING true", rec_id, until, reason[:200]) is not None


# --- audit ------------------------------------------------------------------

async def audit(conn: asyncpg.Connection, *, recording_id: int | None, username: str, role: str, action: str,
                byte_range: str = "", status: int | None = None, remote: str = "", detail: str = "") -> None:
    await conn.execute(
        """INSERT INTO recording_access_log (recording_id, username, role, action, byte_range, status, remote,
                                             detail)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
        recording_id, username[:64], role[:16], action, byte_range[:100], status, remote[:64], detail[:300])


async def access_log(conn: asyncpg.Connection, rec_id: int, limit: int = 200) -> list[asyncpg.Record]:
    return await conn.fetch(
        """SELECT id, at, username, role, action, byte_range, status, remote, detail
             FROM recording_access_log WHERE recording_id = $1 ORDER BY id DESC LIMIT $2""", rec_id, limit)


# --- quality scores ---------------------------------------------------------

async def add_score(conn: asyncpg.Connection, rec_id: int, *, agent: str, supervisor: str, score: int,
                    comment: str, criteria: dict[str, Any]) -> asyncpg.Record:
    return await conn.fetchrow(
        """INSERT INTO recording_scores (recording_id, agent, supervisor, score, comment, criteria)
           VALUES ($1, $2, $3, $4, $5, $6::jsonb)
           RETURNING id, recording_id, agent, supervisor, score, comment, criteria, created_at""",
        rec_id, agent, supervisor[:64], score, comment, json.dumps(criteria))


async def scores_for_recording(conn: asyncpg.Connection, rec_id: int) -> list[asyncpg.Record]:
    return await conn.fetch(
        """SELECT id, recording_id, agent, supervisor, score, comment, criteria, created_at
             FROM recording_scores WHERE recording_id = $1 ORDER BY id""", rec_id)


async def scores_for_agent(conn: asyncpg.Connection, agent: str, *, since: datetime | None = None,
                           limit: int = 500) -> list[asyncpg.Record]:
    return await conn.fetch(
        """SELECT s.id, s.recording_id, s.agent, s.supervisor, s.score, s.comment, s.criteria, s.created_at,
                  r.linkedid, r.queue, r.started_at AS call_started_at, r.duration_s
             FROM recording_scores s JOIN recordings r ON r.id = s.recording_id
            WHERE s.agent = $1 AND ($2::timestamptz IS NULL OR s.created_at >= $2)
            ORDER BY s.created_at, s.id LIMIT $3""", agent, since, limit)


async def score_trend(conn: asyncpg.Connection, agent: str, *, tz: str = "Asia/Shanghai") -> list[asyncpg.Record]:
    """Monthly average, count, minimum and maximum (local months)."""
    return await conn.fetch(
        """SELECT to_char(date_trunc('month', created_at AT TIME ZONE $2), 'YYYY-MM') AS month,
                  round(avg(score)::numeric, 1)::float8 AS average, count(*) AS count,
                  min(score) AS min, max(score) AS max
             FROM recording_scores WHERE agent = $1
            GROUP BY 1 ORDER BY 1""", agent, tz)

"""The outage registry in PostgreSQL (asyncpg).

Functions take a connection; every mutation runs in ``conn.transaction()``
(a savepoint inside the caller's transaction), locks the row, checks the
optional ``expected_version`` (optimistic locking: :class:`StaleOutage`),
applies the pure transition from :mod:`ivr.outages` and appends to
``outage_events``.  Nothing is half-written.

The IVR's hot path is :func:`outage_for_caller`: one statement from the
caller's number (or a typed account number) to the customer and the most
relevant live outage covering the customer's feeder, transformer area or
village.
"""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

import asyncpg

from cti.phone import lookup_keys
from cti.workdays import local_date

from . import outages as m
from .outages import (
    DEFAULT_IMMINENT_WINDOW, DEFAULT_OVERDUE_GRACE, AreaType, CustomerArea, IvrDecision, NewOutage, Outage,
    OutageArea, OutageKind, OutageStatus, PromptStatus,
)

__all__ = [
    "OutageNotFound", "StaleOutage",
    "create_outage", "publish_outage", "change_restoration", "restore_outage", "cancel_outage",
    "get_outage", "get_by_no", "find_outage", "list_outages", "list_active", "list_coming",
    "outage_events", "set_prompt_state", "outage_for_caller", "next_outage_no", "clean_account_no",
]

ListState = Literal["active", "coming", "all"]


class OutageNotFound(LookupError):
    pass


class StaleOutage(RuntimeError):
    """The outage changed since the client read it (its version moved on)."""

    def __init__(self, current_version: int):
        super().__init__(f"outage changed, now version {current_version}")
        self.current_version = current_version


_COLS = """o.id, o.outage_no, o.kind, o.status, o.reason, o.description, o.department, o.start_at,
    o.expected_restore_at, o.restored_at, o.published_at, o.cancelled_at, o.cancel_reason,
    o.late_notice, o.late_notice_reason, o.notice_estimated, o.announcement, o.prompt_status,
    o.announcement_path, o.prompt_error, o.version, o.created_at, o.updated_at,
    (SELECT coalesce(json_agg(json_build_array(a.area_type, a.name) ORDER BY a.position, a.area_type, a.name), '[]')
     FROM outage_areas a WHERE a.outage_id = o.id) AS areas"""


def _outage(r: asyncpg.Record, prefix: str = "") -> Outage:
    g = lambda k: r[prefix + k]  # noqa: E731
    areas = g("areas")
    if isinstance(areas, str):
        areas = json.loads(areas)
    return Outage(
        id=g("id"), outage_no=g("outage_no"), kind=OutageKind(g("kind")), status=OutageStatus(g("status")),
        reason=g("reason"), description=g("description"), department=g("department"),
        areas=tuple(OutageArea(AreaType(t), n) for t, n in areas),
        start_at=g("start_at"), expected_restore_at=g("expected_restore_at"), restored_at=g("restored_at"),
        published_at=g("published_at"), cancelled_at=g("cancelled_at"), cancel_reason=g("cancel_reason"),
        late_notice=g("late_notice"), late_notice_reason=g("late_notice_reason"),
        notice_estimated=g("notice_estimated"), announcement=g("announcement"),
        prompt_status=PromptStatus(g("prompt_status")), announcement_path=g("announcement_path"),
        prompt_error=g("prompt_error"), version=g("version"), created_at=g("created_at"),
        updated_at=g("updated_at"),
    )


def _now(now: datetime | None) -> datetime:
    return now if now is not None else datetime.now(timezone.utc)


def _jsonable(v: Any) -> Any:
    if isinstance(v, datetime):
        return v.isoformat()
    if hasattr(v, "value"):
        return v.value
    return v


async def _event(conn: asyncpg.Connection, outage_id: int, actor: str, action: str,
                 changes: dict[str, Any] | None = None, note: str = "", at: datetime | None = None) -> None:
    await conn.execute(
        "INSERT INTO outage_events (outage_id, at, actor, action, changes, note) VALUES ($1, $2, $3, $4, $5::jsonb, $6)",
        outage_id, _now(at), actor[:100] or "?", action, json.dumps(changes or {}, ensure_ascii=False), note[:2000])


# -- numbering ---------------------------------------------------------------

async def next_outage_no(conn: asyncpg.Connection, now: datetime | None = None) -> str:
    """TD + China date + '-' + that day's counter: TD20261122-0042."""
    day = local_date(_now(now))
    n = await conn.fetchval(
        """INSERT INTO outage_no_counters (day, last) VALUES ($1, 1)
           ON CONFLICT (day) DO UPDATE SET last = outage_no_counters.last + 1
           RETURNING last""", day)
    return f"TD{day:%Y%m%d}-{n:04d}"


# -- create / transitions ----------------------------------------------------

async def create_outage(conn: asyncpg.Connection, new: NewOutage, *, publish: bool = True,
                        now: datetime | None = None) -> Outage:
    """Register a validated outage (:func:`ivr.outages.validate_new_outage`),
    published at once unless ``publish=False`` (a draft)."""
    now = _now(now)
    async with conn.transaction():
        outage_no = await next_outage_no(conn, now)
        row = await conn.fetchrow(
            """INSERT INTO outages (outage_no, kind, reason, description, department, start_at,
                                    expected_restore_at, created_at, updated_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) RETURNING id""",
            outage_no, new.kind.value, new.reason, new.description, new.department, new.start_at,
            new.expected_restore_at, now)
        oid = row["id"]
        await conn.executemany(
            "INSERT INTO outage_areas (outage_id, area_type, name, position) VALUES ($1, $2, $3, $4)",
            [(oid, a.type.value, a.name, i) for i, a in enumerate(new.areas)])
        await _event(conn, oid, new.actor, "created", {
            "kind": new.kind.value, "reason": new.reason, "start_at": new.start_at.isoformat(),
            "expected_restore_at": new.expected_restore_at.isoformat(),
            "areas": [a.to_dict() for a in new.areas]}, at=now)
        if not publish:
            return await get_outage(conn, oid)
        return await _transition(conn, oid, None, new.actor, "published", lambda o: m.publish(o, now), now=now)


async def publish_outage(conn: asyncpg.Connection, outage_id: int, *, actor: str,
                         expected_version: int | None = None, now: datetime | None = None) -> Outage:
    now = _now(now)
    return await _transition(conn, outage_id, expected_version, actor, "published",
                             lambda o: m.publish(o, now), now=now)


async def change_restoration(conn: asyncpg.Connection, outage_id: int, expected_restore_at: datetime, *,
                             actor: str, expected_version: int | None = None, note: str = "",
                             now: datetime | None = None) -> Outage:
    now = _now(now)
    return await _transition(conn, outage_id, expected_version, actor, "restoration_changed",
                             lambda o: m.change_restoration(o, expected_restore_at, now), note=note, now=now)


async def restore_outage(conn: asyncpg.Connection, outage_id: int, *, actor: str,
                         restored_at: datetime | None = None, expected_version: int | None = None,
                         note: str = "", now: datetime | None = None) -> Outage:
    now = _now(now)
    return await _transition(conn, outage_id, expected_version, actor, "restored",
                             lambda o: m.restore(o, now, restored_at), note=note, now=now)


async def cancel_outage(conn: asyncpg.Connection, outage_id: int, *, actor: str, reason: str,
                        expected_version: int | None = None, now: datetime | None = None) -> Outage:
    now = _now(now)
    return await _transition(conn, outage_id, expected_version, actor, "cancelled",
                             lambda o: m.cancel(o, now, reason), note=reason, now=now)


# fields a transition may change; the prompt fields are not part of the history's diff
_MUTABLE = ("status", "expected_restore_at", "restored_at", "published_at", "cancelled_at", "cancel_reason",
            "late_notice", "late_notice_reason", "notice_estimated", "announcement", "prompt_status",
            "announcement_path", "prompt_error")
_NOT_DIFFED = {"announcement", "prompt_status", "announcement_path", "prompt_error"}


async def _transition(conn, outage_id, expected_version, actor, action, apply, *, note="", now) -> Outage:
    async with conn.transaction():
        row = await conn.fetchrow(f"SELECT {_COLS} FROM outages o WHERE o.id = $1 FOR UPDATE", outage_id)
        if row is None:
            raise OutageNotFound(outage_id)
        before = _outage(row)
        if expected_version is not None and expected_version != before.version:
            raise StaleOutage(before.version)
        after = apply(before)  # pure; raises IllegalTransition / InvalidOutage
        values = [_jsonable(getattr(after, f)) if f in ("status", "prompt_status") else getattr(after, f)
                  for f in _MUTABLE]
        sets = ", ".join(f"{f} = ${i + 2}" for i, f in enumerate(_MUTABLE))
        await conn.execute(
            f"""UPDATE outages SET {sets}, version = version + 1, updated_at = ${len(_MUTABLE) + 2},
                    prompt_updated_at = CASE WHEN prompt_status IS DISTINCT FROM ${_MUTABLE.index('prompt_status') + 2}
                                             THEN ${len(_MUTABLE) + 2} ELSE prompt_updated_at END
                WHERE id = $1""",
            outage_id, *values, now)
        changes = {f: [_jsonable(getattr(before, f)), _jsonable(getattr(after, f))]
                   for f in _MUTABLE if f not in _NOT_DIFFED and getattr(before, f) != getattr(after, f)}
        await _event(conn, outage_id, actor, action, changes, note, at=now)
        return await get_outage(conn, outage_id)


async def set_prompt_state(conn: asyncpg.Connection, outage_id: int, *, announcement: str,
                           status: PromptStatus | str, path: str | None = None, error: str = "",
                           actor: str = "tts") -> bool:
    """Record what the TTS made of ``announcement``.  Ignored (returns False)
    when the outage's text changed meanwhile -- a late result for an older
    text must not overwrite the newer one.  Does not bump ``version``."""
    status = PromptStatus(status)
    if status is PromptStatus.READY and not path:
        raise ValueError("a ready prompt needs its path")
    async with conn.transaction():
        row = await conn.fetchrow(
            """UPDATE outages SET prompt_status = $3, announcement_path = $4, prompt_error = $5,
                                  prompt_updated_at = now()
               WHERE id = $1 AND announcement = $2 RETURNING id""",
            outage_id, announcement, status.value,
            path if status is PromptStatus.READY else None, error[:500])
        if row is None:
            return False
        if status in (PromptStatus.READY, PromptStatus.FAILED):
            await _event(conn, outage_id, actor, f"prompt_{status.value}",
                         {"announcement_path": path} if path else {}, error[:500])
        return True


# -- reading -----------------------------------------------------------------

async def get_outage(conn: asyncpg.Connection, outage_id: int) -> Outage:
    row = await conn.fetchrow(f"SELECT {_COLS} FROM outages o WHERE o.id = $1", outage_id)
    if row is None:
        raise OutageNotFound(outage_id)
    return _outage(row)


async def get_by_no(conn: asyncpg.Connection, outage_no: str) -> Outage:
    row = await conn.fetchrow(f"SELECT {_COLS} FROM outages o WHERE o.outage_no = $1", outage_no.strip().upper())
    if row is None:
        raise OutageNotFound(outage_no)
    return _outage(row)


async def find_outage(conn: asyncpg.Connection, ref: str) -> Outage:
    """By numeric id or by outage number (TD20261122-0042)."""
    ref = (ref or "").strip()
    if ref.isascii() and ref.isdigit() and len(ref) <= 18:
        return await get_outage(conn, int(ref))
    if 0 < len(ref) <= 40:
        return await get_by_no(conn, ref)
    raise OutageNotFound(ref)


async def list_outages(conn: asyncpg.Connection, state: ListState = "all", *, at: datetime | None = None,
                       limit: int = 500) -> list[Outage]:
    """``active``: published and started (overdue ones included, the page
    flags them); ``coming``: published, not started, soonest first; ``all``:
    every status, newest start first."""
    at = _now(at)
    if state == "active":
        sql = f"""SELECT {_COLS} FROM outages o WHERE o.status = 'published' AND o.start_at <= $1
                  ORDER BY o.expected_restore_at, o.id LIMIT $2"""
    elif state == "coming":
        sql = f"""SELECT {_COLS} FROM outages o WHERE o.status = 'published' AND o.start_at > $1
                  ORDER BY o.start_at, o.id LIMIT $2"""
    elif state == "all":
        sql = f"""SELECT {_COLS} FROM outages o WHERE $1::timestamptz IS NOT NULL
                  ORDER BY o.start_at DESC, o.id DESC LIMIT $2"""
    else:
        raise ValueError(f"unknown state {state!r}")
    return [_outage(r) for r in await conn.fetch(sql, at, limit)]


async def list_active(conn: asyncpg.Connection, *, at: datetime | None = None) -> list[Outage]:
    return await list_outages(conn, "active", at=at)


async def list_coming(conn: asyncpg.Connection, *, at: datetime | None = None) -> list[Outage]:
    return await list_outages(conn, "coming", at=at)


async def outage_events(conn: asyncpg.Connection, outage_id: int) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT id, at, actor, action, changes, note FROM outage_events WHERE outage_id = $1 ORDER BY id",
        outage_id)
    return [{"id": r["id"], "at": r["at"].isoformat(), "actor": r["actor"], "action": r["action"],
             "changes": json.loads(r["changes"]) if isinstance(r["changes"], str) else r["changes"],
             "note": r["note"]} for r in rows]


# -- the IVR decision --------------------------------------------------------

# one round trip: the statement lives in migrations/002_outages.sql (plpgsql
# keeps its plan per session; see the comment there)
_IVR_SQL = "SELECT * FROM ivr_outage_for_caller($1::text[], $2::text, $3, $4, $5, $6, $7)"


def clean_account_no(raw: str | None) -> str | None:
    """A DTMF-typed or agent-typed account number: digits (and letters, for
    other systems) only, '#' terminator dropped; None if not plausible."""
    if not isinstance(raw, str):
        return None
    s = raw.strip().rstrip("#").strip()
    if not s or len(s) > 32 or not s.isascii() or not s.isalnum():
        return None
    return s


async def outage_for_caller(conn: asyncpg.Connection, *, caller_num: str | None = None,
                            account_no: str | None = None, at: datetime | None = None,
                            area_code: str | None = None,
                            window: timedelta = DEFAULT_IMMINENT_WINDOW,
                            overdue_grace: timedelta = DEFAULT_OVERDUE_GRACE,
                            max_candidates: int = 5) -> IvrDecision:
    """Caller number (or typed account number, which wins) -> customer ->
    the most relevant active or imminent outage covering the customer.

    One round trip.  A number shared by several customers (a village shop, a
    landlord) considers up to ``max_candidates`` of them and answers for the
    one with the most relevant outage, else the best phone match.  Unknown
    or withheld number -> ``IvrDecision()`` (``known_customer`` False); never
    raises for hostile input (database errors do propagate)."""
    at = _now(at)
    account = clean_account_no(account_no) if account_no is not None else None
    keys: list[str] = [] if account else lookup_keys(caller_num, area_code=area_code)
    if not keys and not account:
        return IvrDecision()
    r = await conn.fetchrow(_IVR_SQL, keys, account, max_candidates, at, window, overdue_grace,
                            m.end_of_local_day(at))
    if r is None:
        return IvrDecision()
    area = CustomerArea(transformer_area=r["c_transformer_area"], feeder=r["c_feeder"], village=r["c_village"])
    base = dict(customer_id=r["c_id"], account_no=r["c_account_no"], customer_area=area, candidates=r["n_cand"])
    if r["o_id"] is None:
        return IvrDecision(**base)
    return IvrDecision(**base, outage=_outage(r, "o_"), relevance="active" if r["o_active"] else "imminent",
                       matched_area=OutageArea(AreaType(r["m_type"]), r["m_name"]))


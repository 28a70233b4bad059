"""Work orders in PostgreSQL (asyncpg).  Functions take a connection: the
caller owns the transaction."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import asyncpg

from .model import RecentOrder, format_order_no


class OrderNotFound(LookupError):
    pass


class StaleOrder(RuntimeError):
    """Someone else saved the order since it was loaded (optimistic locking)."""


class OrderNotEditable(RuntimeError):
    pass


_COLUMNS = """id, order_no, status, order_type, ivr_choice, linkedid, agent, queue,
    caller_num, caller_num_norm, caller_name, customer_id, customer_snapshot,
    contact_name, contact_phone, address, transformer_area, description, outage_id,
    version, created_at, updated_at, saved_at"""


def _row(r: asyncpg.Record | dict[str, Any]) -> dict[str, Any]:
    d = dict(r)
    snap = d.get("customer_snapshot")
    if isinstance(snap, str):
        d["customer_snapshot"] = json.loads(snap)
    for k in ("created_at", "updated_at", "saved_at"):
        if d.get(k) is not None:
            d[k] = d[k].isoformat()
    return d


async def next_order_no(conn: asyncpg.Connection, now: datetime | None = None) -> str:
    seq = await conn.fetchval("SELECT nextval('work_order_seq')")
    return format_order_no(now or datetime.now(timezone.utc), seq)


class OrderNumbers:
    """Work-order sequence numbers taken from PostgreSQL a block at a time
    (one round trip per ``block`` screen-pops instead of one per pop).
    Numbers stay unique across nodes; like any sequence they may have gaps
    (a restart drops the rest of a block)."""

    def __init__(self, block: int = 64) -> None:
        self.block = block
        self._free: list[int] = []

    async def next(self, conn: asyncpg.Connection, now: datetime | None = None) -> str:
        if not self._free:
            rows = await conn.fetch("SELECT nextval('work_order_seq') AS n FROM generate_series(1, $1)", self.block)
            self._free = sorted((r["n"] for r in rows), reverse=True)
        return format_order_no(now or datetime.now(timezone.utc), self._free.pop())


_DRAFT_INSERT = f"""INSERT INTO work_orders (order_no, status, order_type, ivr_choice, linkedid, agent, queue,
                caller_num, caller_num_norm, caller_name, customer_id, customer_snapshot,
                contact_name, contact_phone, address, transformer_area, outage_id)
            VALUES ($1, 'draft', $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::jsonb, $12, $13, $14, $15, $16)
            ON CONFLICT (linkedid, agent) WHERE linkedid IS NOT NULL DO UPDATE
                SET status = 'draft', version = work_orders.version + 1, updated_at = now()
                WHERE work_orders.status = 'cancelled' AND work_orders.saved_at IS NULL
            RETURNING {_COLUMNS}, (xmax = 0) AS inserted"""

# One statement: a new draft, or the one already made for this (linkedid,
# agent) -- a replayed AgentCalled never makes a second order; a draft
# withdrawn when an earlier ring went unanswered (never saved) is a draft
# again when the same member rings again (rrmemory comes round).  ``{before}``
# is an optional data-modifying CTE run in the same statement (the screen-pop
# writes the call row the draft references; foreign keys are checked at the
# end of the statement).
_DRAFT_SQL = """WITH {before} ins AS ({insert})
SELECT inserted AS created, {columns} FROM ins
UNION ALL
SELECT false, {columns} FROM work_orders
 WHERE linkedid = $4 AND agent = $5 AND NOT EXISTS (SELECT 1 FROM ins)"""


def _draft_args(order_no: str, fields: dict[str, Any]) -> list[Any]:
    return [order_no, fields["order_type"], fields["ivr_choice"], fields["linkedid"] or None,
            fields["agent"], fields["queue"], fields["caller_num"], fields["caller_num_norm"],
            fields["caller_name"], fields["customer_id"], json.dumps(fields["customer_snapshot"], ensure_ascii=False),
            fields["contact_name"], fields["contact_phone"], fields["address"], fields["transformer_area"],
            fields["outage_id"]]


async def create_draft(conn: asyncpg.Connection, fields: dict[str, Any], *, numbers: OrderNumbers | None = None,
                       before_sql: str = "", before_args: tuple[Any, ...] = ()) -> tuple[dict[str, Any], bool]:
    """Insert the screen-pop draft; idempotent per (linkedid, agent) so that a
    replayed AgentCalled never makes a second order.  Returns (order, created).

    One statement (plus a sequence block now and then with ``numbers``).
    ``before_sql``: a data-modifying statement whose parameters are ``$17``
    onwards (``before_args``), run in the same statement ahead of the insert."""
    order_no = await (numbers.next(conn) if numbers is not None else next_order_no(conn))
    args = _draft_args(order_no, fields)
    if not fields.get("linkedid"):  # a draft not tied to a call: no idempotency key
        if before_sql:
            raise ValueError("before_sql needs a linkedid")
        d = dict(await conn.fetchrow(_DRAFT_INSERT, *args))
        inserted = d.pop("inserted")
        return _row(d), inserted
    before = f"before AS ({before_sql})," if before_sql else ""
    sql = _DRAFT_SQL.format(before=before, insert=_DRAFT_INSERT, columns=_COLUMNS)
    row = await conn.fetchrow(sql, *args, *before_args)
    if row is None:  # lost a race with another node's insert, committed after our snapshot: theirs
        theirs = await conn.fetchrow(f"SELECT {_COLUMNS} FROM work_orders WHERE linkedid = $1 AND agent = $2",
                                     fields["linkedid"], fields["agent"])
        if theirs is None:
            raise RuntimeError("draft neither inserted nor found")
        return _row(theirs), False
    d = dict(row)
    created = d.pop("created")
    return _row(d), created


async def get_order(conn: asyncpg.Connection, order_id: int) -> dict[str, Any]:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM work_orders WHERE id = $1", order_id)
    if row is None:
        raise OrderNotFound(order_id)
    return _row(row)


async def save_order(conn: asyncpg.Connection, order_id: int, clean: dict[str, Any], *,
                     actor: str | None = None, now: datetime | None = None, workflow: Any = None,
                     merge: bool = True, new_fault_reason: str = "") -> dict[str, Any]:
    """The agent completes and saves the draft: it becomes an accepted order
    (受理).  Optimistic locking on ``version``.

    Issue #5: the acceptance is recorded in ``work_order_events``
    (``OrderAccepted``; a later edit ``OrderEdited``); a repair order is
    checked against the known faults of its transformer area / feeder and
    either attached to one (no second crew, ``CallerAttached``) or given its
    dispatch and arrival deadlines -- see :meth:`tickets.workflow.Workflow.after_save`.
    ``merge=False`` (with ``new_fault_reason``) is the agent's judgement that
    it is a new fault.  Runs in a transaction (a savepoint inside the
    caller's)."""
    from .workflow import default_workflow

    wf = workflow or default_workflow()
    now = now or wf.now()
    async with conn.transaction():
        current = await conn.fetchrow(
            "SELECT status, version, agent FROM work_orders WHERE id = $1 FOR NO KEY UPDATE", order_id)
        if current is None:
            raise OrderNotFound(order_id)
        if current["status"] not in ("draft", "accepted"):
            raise OrderNotEditable(current["status"])
        if current["version"] != clean["version"]:
            raise StaleOrder(current["version"])
        row = await conn.fetchrow(
            """UPDATE work_orders SET order_type = $2, contact_name = $3, contact_phone = $4,
                    address = $5, transformer_area = $6, description = $7,
                    status = CASE WHEN status = 'draft' THEN 'accepted' ELSE status END,
                    feeder = coalesce($9, feeder), village = coalesce($10, village),
                    area_class = coalesce($11, area_class),
                    category_l1 = coalesce($12, category_l1), category_l2 = coalesce($13, category_l2),
                    category_l3 = coalesce($14, category_l3),
                    version = version + 1, updated_at = $15,
                    saved_at = $15,
                    accepted_at = CASE WHEN status = 'draft' THEN $15 ELSE accepted_at END
                WHERE id = $1 AND version = $8
                RETURNING *""",
            order_id, clean["order_type"], clean["contact_name"], clean["contact_phone"],
            clean["address"], clean["transformer_area"], clean["description"], clean["version"],
            clean.get("feeder"), clean.get("village"), clean.get("area_class"),
            clean.get("category_l1"), clean.get("category_l2"), clean.get("category_l3"), now)
        await wf.after_save(conn, current["status"], row, actor=actor or current["agent"] or "agent", now=now,
                            merge=merge, new_fault_reason=new_fault_reason,
                            area_class_given=clean.get("area_class") is not None)
        final = await conn.fetchrow(f"SELECT {_COLUMNS} FROM work_orders WHERE id = $1", order_id)
    return _row(final)


def recent_orders_sql(customer_id: str, phone: str, limit: str, exclude_linkedid: str) -> str:
    """The rule for a caller's recent work orders, as a query over the given
    SQL expressions (parameters or outer columns): the customer's orders and
    the number's, newest first, without drafts never saved nor the current
    call's own.  Columns: order_no, order_type, status, created_at,
    description (:class:`RecentOrder`).  Also composed into the screen-pop's
    single read (cti.customer_repo.find_caller)."""
    # Two index scans (work_orders_customer_idx, work_orders_caller_num_idx,
    # both (key, created_at DESC)) merged, rather than one OR: the plan
    # stays two short index scans whatever the parameters and the table
    # statistics, so the screen-pop's connections can keep one generic plan
    # (cti.app: plan_cache_mode) instead of planning every pop.
    cols = "order_no, order_type, status, created_at, description"
    keep = f"status <> 'draft' AND coalesce(linkedid, '') <> {exclude_linkedid}"
    return f"""SELECT {cols} FROM (
          (SELECT {cols} FROM work_orders WHERE customer_id = {customer_id} AND {keep}
            ORDER BY created_at DESC LIMIT {limit})
          UNION
          (SELECT {cols} FROM work_orders WHERE caller_num_norm = {phone} AND {phone} <> '' AND {keep}
            ORDER BY created_at DESC LIMIT {limit})) recent
        ORDER BY created_at DESC LIMIT {limit}"""


async def recent_orders(conn: asyncpg.Connection, *, customer_id: int | None, phone: str,
                        limit: int = 5, exclude_linkedid: str = "") -> list[RecentOrder]:
    """The caller's recent work orders: by customer when known, else by number.
    Drafts never saved are not shown."""
    if limit <= 0 or (customer_id is None and not phone):
        return []
    rows = await conn.fetch(recent_orders_sql("$1", "$2", "$3", "$4"),
                            customer_id, phone or "", limit, exclude_linkedid)
    return [RecentOrder(r["order_no"], r["order_type"], r["status"], r["created_at"], r["description"])
            for r in rows]


async def list_orders(conn: asyncpg.Connection, *, agent: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    if agent:
        rows = await conn.fetch(f"SELECT {_COLUMNS} FROM work_orders WHERE agent = $1 ORDER BY id DESC LIMIT $2",
                                agent, limit)
    else:
        rows = await conn.fetch(f"SELECT {_COLUMNS} FROM work_orders ORDER BY id DESC LIMIT $1", limit)
    return [_row(r) for r in rows]


async def cancel_drafts(conn: asyncpg.Connection, linkedid: str, *, agent: str | None = None,
                        except_agent: str | None = None) -> list[str]:
    """Withdraw screen-pop drafts never saved: the ring went unanswered, another
    agent took the call, or the caller hung up.  Saved orders are never touched.
    Returns the agents whose draft was withdrawn."""
    rows = await conn.fetch(
        """UPDATE work_orders SET status = 'cancelled', version = version + 1, updated_at = now()
           WHERE linkedid = $1 AND status = 'draft'
             AND ($2::text IS NULL OR agent = $2) AND ($3::text IS NULL OR agent <> $3)
           RETURNING agent""",
        linkedid, agent, except_agent)
    return [r["agent"] for r in rows]


CALLBACK_REQUEST_NOTE = "回拨请求 callback requested"


async def create_callback_request(conn: asyncpg.Connection, *, order_type: str, ivr_choice: str,
                                  caller_num: str, caller_num_norm: str, account_no: str = "",
                                  outage_id: str = "", note: str = CALLBACK_REQUEST_NOTE) -> dict[str, Any]:
    """A caller asked the IVR for a callback instead of waiting (surge mode):
    a draft order with no agent yet, typed by the IVR choice, the caller's
    number as contact phone and the customer filled in when the account
    number is known.  Not tied to a ``calls`` row (the caller never queued)."""
    cust = None
    if account_no:
        cust = await conn.fetchrow(
            "SELECT id, account_no, name, address, transformer_area FROM customers WHERE account_no = $1",
            account_no)
    snapshot = dict(cust) if cust is not None else {}
    order_no = await next_order_no(conn)
    row = await conn.fetchrow(
        f"""INSERT INTO work_orders (order_no, status, order_type, ivr_choice, caller_num, caller_num_norm,
                customer_id, customer_snapshot, contact_name, contact_phone, address, transformer_area,
                description, outage_id)
            VALUES ($1, 'draft', $2, $3, $4, $5, $6, $7::jsonb, $8, $9, $10, $11, $12, $13)
            RETURNING {_COLUMNS}""",
        order_no, order_type, ivr_choice, caller_num[:64], caller_num_norm, cust["id"] if cust else None,
        json.dumps(snapshot, ensure_ascii=False, default=str), cust["name"] if cust else "",
        caller_num_norm or caller_num[:32], cust["address"] if cust else "",
        cust["transformer_area"] if cust else "", note, outage_id[:64])
    return _row(row)

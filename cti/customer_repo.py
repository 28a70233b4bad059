"""Customers in PostgreSQL (asyncpg adapter).

Functions take a connection so that the caller owns the transaction;
``import_customers_file`` is the one use-case that takes the pool and opens
its own transaction (parse + upsert, all or nothing for the good rows).
"""
from __future__ import annotations

import asyncio
from pathlib import Path
from dataclasses import replace
from typing import Iterable

import asyncpg

from tickets.repository import recent_orders_sql

from .customers import Customer, CsvImportResult, parse_customers_csv
from .phone import lookup_keys, normalise_phone

__all__ = [
    "upsert_customers",
    "find_by_phone",
    "get_customer",
    "get_by_account",
    "import_customers_file",
    "import_parsed",
]

_COLUMNS = (
    "account_no", "name", "address", "transformer_area", "feeder", "village",
    "area_class", "customer_class", "dedicated_transformer", "large_customer",
    "sensitive", "high_rise",
)
_TYPES = ("text",) * 8 + ("boolean",) * 4

# One statement for the whole batch (unnest of column arrays).  A row whose
# values did not change is left alone, so updated_at means "really changed"
# and a re-import is a no-op.
_UPSERT_SQL = f"""
INSERT INTO customers ({", ".join(_COLUMNS)})
SELECT * FROM unnest({", ".join(f"${i + 1}::{t}[]" for i, t in enumerate(_TYPES))})
ON CONFLICT (account_no) DO UPDATE SET
    {", ".join(f"{c} = EXCLUDED.{c}" for c in _COLUMNS[1:])},
    updated_at = now()
WHERE ({", ".join(f"customers.{c}" for c in _COLUMNS[1:])})
      IS DISTINCT FROM ({", ".join(f"EXCLUDED.{c}" for c in _COLUMNS[1:])})
RETURNING id, (xmax = 0) AS inserted
"""

_IDS_SQL = "SELECT account_no, id FROM customers WHERE account_no = ANY($1::text[])"

# Replace the phones of the given customers with exactly the wanted set, and
# bump updated_at of those whose phones changed.
_PHONES_SQL = """
WITH wanted AS (
    SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[]) AS w(customer_id, phone, kind)
), removed AS (
    DELETE FROM customer_phones cp
    WHERE cp.customer_id = ANY($4::bigint[])
      AND NOT EXISTS (SELECT 1 FROM wanted w WHERE w.customer_id = cp.customer_id AND w.phone = cp.phone)
    RETURNING cp.customer_id
), added AS (
    INSERT INTO customer_phones (customer_id, phone, kind)
    SELECT customer_id, phone, kind FROM wanted
    ON CONFLICT (customer_id, phone) DO UPDATE SET kind = EXCLUDED.kind
    WHERE customer_phones.kind IS DISTINCT FROM EXCLUDED.kind
    RETURNING customer_id
)
UPDATE customers SET updated_at = now()
WHERE id IN (SELECT customer_id FROM removed UNION SELECT customer_id FROM added)
RETURNING id
"""

_SELECT = """
SELECT c.id, c.account_no, c.name, c.address, c.transformer_area, c.feeder, c.village,
       c.area_class, c.customer_class, c.dedicated_transformer, c.large_customer,
       c.sensitive, c.high_rise,
       ARRAY(SELECT p.phone FROM customer_phones p WHERE p.customer_id = c.id
             ORDER BY p.kind = 'mobile' DESC, p.phone) AS phones
FROM customers c
"""

_FIND_BY_PHONE_SQL = f"""
{_SELECT}
JOIN (SELECT customer_id, min(array_position($1::text[], phone)) AS rank
      FROM customer_phones WHERE phone = ANY($1::text[])
      GROUP BY customer_id) m ON m.customer_id = c.id
ORDER BY m.rank, c.updated_at DESC, c.id DESC
LIMIT $2
"""


def _customer(rec: asyncpg.Record) -> Customer:
    return Customer(
        id=rec["id"],
        account_no=rec["account_no"],
        name=rec["name"],
        address=rec["address"],
        transformer_area=rec["transformer_area"],
        feeder=rec["feeder"],
        village=rec["village"],
        area_class=rec["area_class"],
        customer_class=rec["customer_class"],
        dedicated_transformer=rec["dedicated_transformer"],
        large_customer=rec["large_customer"],
        sensitive=rec["sensitive"],
        high_rise=rec["high_rise"],
        phones=tuple(rec["phones"]),
    )


async def _upsert(conn: asyncpg.Connection, customers: Iterable[Customer]) -> tuple[int, int, int]:
    """(inserted, updated, unchanged)."""
    batch = sorted(customers, key=lambda c: c.account_no)  # stable lock order
    if not batch:
        return 0, 0, 0
    accounts = [c.account_no for c in batch]
    if len(set(accounts)) != len(accounts):
        raise ValueError("duplicate account_no in one upsert batch")

    async with conn.transaction():  # a savepoint when the caller has one open
        columns = [[getattr(c, col) for c in batch] for col in _COLUMNS]
        changed = await conn.fetch(_UPSERT_SQL, *columns)
        inserted = {r["id"] for r in changed if r["inserted"]}
        updated = {r["id"] for r in changed if not r["inserted"]}

        ids = {r["account_no"]: r["id"] for r in await conn.fetch(_IDS_SQL, accounts)}
        p_ids: list[int] = []
        p_phones: list[str] = []
        p_kinds: list[str] = []
        for c in batch:
            for phone in dict.fromkeys(c.phones):
                n = normalise_phone(phone)
                if n is None:
                    raise ValueError(f"customer {c.account_no}: not a phone number: {phone!r}")
                p_ids.append(ids[c.account_no])
                p_phones.append(n.national)
                p_kinds.append(n.kind)
        bumped = await conn.fetch(_PHONES_SQL, p_ids, p_phones, p_kinds, list(ids.values()))
        updated |= {r["id"] for r in bumped} - inserted
    return len(inserted), len(updated), len(batch) - len(inserted) - len(updated)


async def upsert_customers(conn: asyncpg.Connection, customers: Iterable[Customer]) -> int:
    """Insert or update by account_no, replacing each customer's phones.
    Returns the number of customers written (inserted + updated + unchanged)."""
    inserted, updated, unchanged = await _upsert(conn, customers)
    return inserted + updated + unchanged


async def find_by_phone(conn: asyncpg.Connection, raw_number: str | None, *,
                        area_code: str | None = None, limit: int = 20) -> list[Customer]:
    """Customers owning the caller's number: exact canonical match first, then
    most recently updated.  ``area_code`` (e.g. ``"0773"``) also matches
    records typed without area code (see :func:`cti.phone.lookup_keys`).
    A shared number (a village shop, a landlord) can return several."""
    keys = lookup_keys(raw_number, area_code=area_code)
    if not keys:
        return []
    return [_customer(r) for r in await conn.fetch(_FIND_BY_PHONE_SQL, keys, limit)]


# The screen-pop's whole read in one round trip: the customer (by the account
# the IVR identified, else by the caller's number as find_by_phone ranks
# them) and the caller's recent work orders (tickets.repository.recent_orders_sql,
# by that customer or by the number, drafts never saved left out).
_FIND_CALLER_SQL = f"""
WITH by_account AS (
    SELECT c.id, 0 AS rank FROM customers c WHERE $1 <> '' AND c.account_no = $1
), by_phone AS (
    SELECT p.customer_id AS id, 1 + min(array_position($2::text[], p.phone)) AS rank
      FROM customer_phones p
     WHERE p.phone = ANY($2::text[]) AND NOT EXISTS (SELECT 1 FROM by_account)
     GROUP BY p.customer_id
), chosen AS (
    -- the candidates' updated_at by primary key, not by a join the planner
    -- may make a scan of customers (a generic plan knows no row counts)
    SELECT x.id FROM (SELECT id, rank FROM by_account UNION ALL SELECT id, rank FROM by_phone) x
     ORDER BY x.rank, (SELECT c.updated_at FROM customers c WHERE c.id = x.id) DESC NULLS LAST, x.id DESC
     LIMIT 1
), found AS (
    {_SELECT} JOIN chosen ON chosen.id = c.id
)
SELECT f.*, ARRAY(
    SELECT ROW(r.order_no, r.order_type, r.status, r.created_at, r.description)
      FROM ({recent_orders_sql("f.id", "$3::text", "$4::int", "$5::text")}) r
     ORDER BY r.created_at DESC) AS recent
  FROM (SELECT 1) one LEFT JOIN found f ON true
"""


async def find_caller(conn: asyncpg.Connection, *, account: str, raw_number: str | None, phone: str,
                      recent_limit: int = 5, exclude_linkedid: str = "",
                      area_code: str | None = None) -> tuple[Customer | None, list[tuple]]:
    """What the screen-pop shows, in one statement: the customer (``account``
    first, then the number as :func:`find_by_phone`) and the caller's recent
    work orders as ``(order_no, order_type, status, created_at, description)``
    tuples, newest first (``phone``: the normalised national number)."""
    keys = lookup_keys(raw_number, area_code=area_code) if raw_number else []
    row = await conn.fetchrow(_FIND_CALLER_SQL, str(account or "").strip(), keys or [], phone or "",
                              max(0, recent_limit), exclude_linkedid or "")
    customer = _customer(row) if row["id"] is not None else None
    return customer, [tuple(r) for r in row["recent"]]


async def get_customer(conn: asyncpg.Connection, customer_id: int) -> Customer | None:
    rec = await conn.fetchrow(_SELECT + " WHERE c.id = $1", customer_id)
    return _customer(rec) if rec else None


async def get_by_account(conn: asyncpg.Connection, account_no: str) -> Customer | None:
    rec = await conn.fetchrow(_SELECT + " WHERE c.account_no = $1", str(account_no).strip())
    return _customer(rec) if rec else None


async def import_customers_file(pool: asyncpg.Pool, path: str | Path) -> CsvImportResult:
    """Parse the marketing system's CSV and upsert its good rows in one
    transaction.  Bad rows are reported in ``errors`` (spreadsheet line
    numbers), never sink the import."""
    data = await asyncio.to_thread(Path(path).read_bytes)
    result = parse_customers_csv(data)
    return await import_parsed(pool, result)


async def import_parsed(pool: asyncpg.Pool, result: CsvImportResult) -> CsvImportResult:
    if not result.customers:
        return result
    async with pool.acquire() as conn:
        async with conn.transaction():
            inserted, updated, unchanged = await _upsert(conn, result.customers)
    return replace(result, inserted=inserted, updated=updated, unchanged=unchanged)

"""Crew notification adapters and the ``crew_messages`` outbox (asyncpg).

:class:`LoggingCrewMessenger` is the default: it logs the message (one
structured line) and the outbox row is marked ``sent`` with
``adapter='log'`` -- the table is the record tests and supervisors read.
A real SMS gateway / outbound-call adapter implements
:class:`tickets.ports.CrewMessenger` and is passed to the routes and the
deadline worker instead.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from cti.logs import get_logger

from .ports import CrewMessage, CrewMessenger

log = get_logger("hotline.tickets.crew")

__all__ = ["LoggingCrewMessenger", "crew_message_bodies", "deliver_pending", "enqueue_messages", "list_messages"]


class LoggingCrewMessenger:
    name = "log"

    async def send(self, message: CrewMessage) -> None:
        log.info("crew_notified", order_no=message.order_no, channel=message.channel,
                 recipient=message.recipient, phone=message.phone, body=message.body)


def crew_message_bodies(order: dict[str, Any], *, transfer: bool = False) -> str:
    """The SMS text (also read out on the phone call)."""
    what = "抢修" if order["order_type"] == "repair" else "工单"
    parts = [f"【966022{what}{'转派' if transfer else '派单'}】{order['order_no']}"]
    if order.get("address"):
        parts.append(f"地址:{order['address']}")
    if order.get("transformer_area"):
        parts.append(f"台区:{order['transformer_area']}")
    if order.get("description"):
        parts.append(f"内容:{order['description'][:200]}")
    if order.get("contact_phone"):
        parts.append(f"联系:{order.get('contact_name') or ''} {order['contact_phone']}".strip())
    return ";".join(parts)


async def enqueue_messages(conn: asyncpg.Connection, order: dict[str, Any], *, transfer: bool = False) -> list[int]:
    """Outbox rows for a dispatch: SMS to the assignee, and for a repair also
    a phone call (DOMAIN.md: the crew is notified by phone and SMS)."""
    phone = (order.get("assignee_phone") or "").strip()
    if not phone:
        return []
    body = crew_message_bodies(order, transfer=transfer)
    channels = ["sms", "phone"] if order["order_type"] == "repair" else ["sms"]
    ids = []
    for ch in channels:
        ids.append(await conn.fetchval(
            """INSERT INTO crew_messages (order_id, channel, recipient, phone, body)
               VALUES ($1, $2, $3, $4, $5) RETURNING id""",
            order["id"], ch, order.get("assignee") or "", phone, body))
    return ids


async def deliver_pending(pool_or_conn: Any, messenger: CrewMessenger, *, order_id: int | None = None,
                          limit: int = 50, now: datetime | None = None) -> int:
    """Hand pending outbox rows to the messenger, each claimed with
    ``FOR UPDATE SKIP LOCKED`` so two nodes never send one twice at once.
    Returns how many were sent."""
    sent = 0
    acquire = getattr(pool_or_conn, "acquire", None)
    if acquire is not None:
        async with pool_or_conn.acquire() as conn:
            return await deliver_pending(conn, messenger, order_id=order_id, limit=limit, now=now)
    conn: asyncpg.Connection = pool_or_conn
    for _ in range(limit):
        async with conn.transaction():
            row = await conn.fetchrow(
                """SELECT m.id, m.order_id, w.order_no, m.channel, m.recipient, m.phone, m.body
                   FROM crew_messages m JOIN work_orders w ON w.id = m.order_id
                   WHERE m.status = 'pending' AND ($1::bigint IS NULL OR m.order_id = $1) AND m.attempts < 10
                   ORDER BY m.id LIMIT 1 FOR UPDATE OF m SKIP LOCKED""", order_id)
            if row is None:
                break
            msg = CrewMessage(**dict(row))
            try:
                await messenger.send(msg)
            except Exception as exc:  # the gateway failed: keep it pending, count the attempt
                await conn.execute(
                    """UPDATE crew_messages SET attempts = attempts + 1, last_error = $2,
                           status = CASE WHEN attempts + 1 >= 10 THEN 'failed' ELSE 'pending' END
                       WHERE id = $1""", msg.id, f"{type(exc).__name__}: {exc}"[:500])
                log.warning("crew_message_failed", message_id=msg.id, error=str(exc))
                break
            await conn.execute(
                """UPDATE crew_messages SET status = 'sent', attempts = attempts + 1,
                       sent_at = coalesce($2, now()), adapter = $3 WHERE id = $1""",
                msg.id, now, getattr(messenger, "name", type(messenger).__name__))
            sent += 1
    return sent


async def list_messages(conn: asyncpg.Connection, order_id: int) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        """SELECT id, channel, recipient, phone, body, status, attempts, created_at, sent_at, last_error, adapter
           FROM crew_messages WHERE order_id = $1 ORDER BY id""", order_id)
    out = []
    for r in rows:
        d = dict(r)
        for k in ("created_at", "sent_at"):
            if d[k] is not None:
                d[k] = d[k].isoformat()
        out.append(d)
    return out

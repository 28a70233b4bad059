"""Read-side queries of the work-order loop (asyncpg): search, callback
worklist, deadlines, department inbox, statistics, knowledge base."""
from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Sequence

import asyncpg

from .deadlines import DEADLINE_LABELS, ArrivalStats, QuietHours
from .knowledge import Article, search_terms
from .workflow import order_dict

__all__ = [
    "arrival_stats", "callback_worklist", "complaint_stats", "deadline_list", "department_inbox",
    "departments_in_use", "get_article", "search_knowledge", "search_orders", "seed_knowledge",
]

_SUMMARY = """w.id, w.order_no, w.status, w.order_type, w.agent, w.caller_num_norm, w.contact_name,
    w.contact_phone, w.address, w.transformer_area, w.feeder, w.description, w.customer_id, w.customer_snapshot,
    w.category_l1, w.category_l2, w.category_l3, w.department, w.assignee, w.assignee_phone, w.key_customer,
    w.major_outage, w.merged_into_order_id, w.merged_outage_id, w.merged_outage_no, w.return_count,
    w.appeal_status, w.version, w.created_at, w.accepted_at, w.dispatched_at, w.feedback_at, w.closed_at,
    w.updated_at, w.area_class, w.repair_result, w.arrived_at, w.extended_until, w.responsible_person"""


def _like(term: str) -> str:
    return "%" + term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


_DIGITS = re.compile(r"^[0-9+\-\s]+$")


async def search_orders(conn: asyncpg.Connection, q: str = "", *, status: str | None = None,
                        order_type: str | None = None, department: str | None = None,
                        limit: int = 50) -> list[dict[str, Any]]:
    """By order number, phone (contact or caller), account number, customer or
    contact name, address.  Newest first.  Drafts and cancelled drafts are not
    listed unless asked for by ``status``."""
    q = (q or "").strip()[:100]
    digits = re.sub(r"[^0-9]", "", q) if _DIGITS.match(q or "x") else ""
    rows = await conn.fetch(
        f"""SELECT {_SUMMARY} FROM work_orders w
            WHERE ($1 = '' OR upper(w.order_no) = upper($1) OR upper(w.order_no) LIKE upper($2) ESCAPE '\\'
                   OR ($3 <> '' AND (w.contact_phone LIKE $4 ESCAPE '\\' OR w.caller_num_norm LIKE $4 ESCAPE '\\'
                                     OR w.customer_snapshot->>'account_no' = $3))
                   OR w.contact_name ILIKE $2 ESCAPE '\\' OR w.caller_name ILIKE $2 ESCAPE '\\'
                   OR w.customer_snapshot->>'name' ILIKE $2 ESCAPE '\\' OR w.address ILIKE $2 ESCAPE '\\')
              AND (($5::text IS NULL AND w.status NOT IN ('draft', 'cancelled')) OR w.status = $5)
              AND ($6::text IS NULL OR w.order_type = $6)
              AND ($7::text IS NULL OR w.department = $7)
            ORDER BY w.id DESC LIMIT $8""",
        q, _like(q), digits, _like(digits) if digits else "", status, order_type, department, limit)
    return [order_dict(r) for r in rows]


async def callback_worklist(conn: asyncpg.Connection, *, now: datetime, quiet: QuietHours,
                            limit: int = 200, agent: str | None = None) -> list[dict[str, Any]]:
    """Pending callbacks, soonest due first (key customers first at equal due
    time).  Each says whether a call is allowed right now (quiet hours)."""
    rows = await conn.fetch(
        f"""SELECT t.id AS task_id, t.reason, t.not_before, t.due_at AS callback_due_at, t.key_customer AS task_key,
                   t.deferred, t.approximate, t.fault_order_id, t.outage_id, f.order_no AS fault_order_no,
                   w.feedback_result, {_SUMMARY}
            FROM callback_tasks t JOIN work_orders w ON w.id = t.order_id
            LEFT JOIN work_orders f ON f.id = t.fault_order_id
            WHERE t.state = 'pending' AND ($2::text IS NULL OR w.agent = $2)
            ORDER BY t.due_at, t.key_customer DESC, t.id
            LIMIT $1""", limit, agent)
    quiet_now = quiet.is_quiet(now)
    out = []
    for r in rows:
        d = order_dict(r)
        d["overdue"] = r["callback_due_at"] < now
        d["callable_now"] = not quiet_now and r["not_before"] <= now
        d["next_call_at"] = max(quiet.next_allowed(now), r["not_before"]).isoformat()
        out.append(d)
    return out


async def deadline_list(conn: asyncpg.Connection, *, states: Sequence[str] = ("pending", "warned", "breached"),
                        kind: str | None = None, department: str | None = None, now: datetime,
                        limit: int = 200) -> list[dict[str, Any]]:
    """Deadlines soonest due first, with the order.  ``overdue_without_extension``:
    the department reply is breached and no progress / responsible person /
    phone was recorded -- DOMAIN.md does not allow such an order to stay open."""
    rows = await conn.fetch(
        f"""SELECT d.id AS deadline_id, d.kind, d.due_at, d.warn_at, d.state AS deadline_state, d.approximate,
                   d.warned_at, d.breached_at, w.progress_note, {_SUMMARY}
            FROM work_order_deadlines d JOIN work_orders w ON w.id = d.order_id
            WHERE d.state = ANY($1::text[]) AND ($2::text IS NULL OR d.kind = $2)
              AND ($3::text IS NULL OR w.department = $3)
              AND w.status NOT IN ('closed', 'cancelled')
            ORDER BY d.due_at, d.id LIMIT $4""", list(states), kind, department, limit)
    out = []
    for r in rows:
        d = order_dict(r)
        d["deadline_label"] = DEADLINE_LABELS.get(r["kind"], r["kind"])
        d["overdue"] = r["due_at"] < now
        d["overdue_without_extension"] = (r["kind"] == "department_reply" and r["due_at"] < now
                                          and not (r["progress_note"] and r["responsible_person"]))
        out.append(d)
    return out


async def department_inbox(conn: asyncpg.Connection, department: str, *, include_done: bool = False,
                           limit: int = 200) -> list[dict[str, Any]]:
    """Orders dispatched to a department: waiting for it (dispatched = to
    accept, in_progress = to feed back), soonest reply deadline first."""
    statuses = ["dispatched", "in_progress"] + (["feedback", "callback", "closed"] if include_done else [])
    rows = await conn.fetch(
        f"""SELECT {_SUMMARY},
                   (SELECT min(d.due_at) FROM work_order_deadlines d WHERE d.order_id = w.id
                      AND d.state IN ('pending', 'warned', 'breached') AND d.kind IN ('department_reply', 'arrival', 'repair_feedback')) AS reply_due_at,
                   (SELECT bool_or(d.state = 'breached') FROM work_order_deadlines d WHERE d.order_id = w.id
                      AND d.state IN ('pending', 'warned', 'breached')) AS breached
            FROM work_orders w
            WHERE w.department = $1 AND w.status = ANY($2::text[])
            ORDER BY (SELECT min(d.due_at) FROM work_order_deadlines d WHERE d.order_id = w.id
                      AND d.state IN ('pending', 'warned', 'breached')) NULLS LAST, w.id
            LIMIT $3""", department, statuses, limit)
    out = []
    for r in rows:
        d = order_dict(r)
        d["returned"] = r["return_count"] > 0
        d["breached"] = bool(r["breached"])
        out.append(d)
    return out


async def departments_in_use(conn: asyncpg.Connection) -> list[str]:
    return [r["department"] for r in await conn.fetch(
        "SELECT DISTINCT department FROM work_orders WHERE department <> '' ORDER BY 1")]


async def arrival_stats(conn: asyncpg.Connection, *, since: datetime, until: datetime, now: datetime) -> ArrivalStats:
    """到达现场及时率 of repairs accepted in [since, until), in SQL; the same
    rule as :func:`tickets.deadlines.on_time_arrival_rate`."""
    r = await conn.fetchrow(
        """WITH a AS (
               SELECT DISTINCT ON (d.order_id) d.due_at, w.arrived_at, coalesce(w.accepted_at, w.created_at) AS accepted_at
               FROM work_order_deadlines d JOIN work_orders w ON w.id = d.order_id
               WHERE d.kind = 'arrival' AND d.state <> 'cancelled'
                 AND coalesce(w.accepted_at, w.created_at) >= $1 AND coalesce(w.accepted_at, w.created_at) < $2
               ORDER BY d.order_id, d.id DESC)
           SELECT count(*) FILTER (WHERE arrived_at IS NOT NULL AND arrived_at <= due_at) AS on_time,
                  count(*) FILTER (WHERE (arrived_at IS NOT NULL AND arrived_at > due_at)
                                      OR (arrived_at IS NULL AND due_at < $3)) AS late,
                  count(*) FILTER (WHERE arrived_at IS NULL AND due_at >= $3) AS pending,
                  avg(extract(epoch FROM arrived_at - accepted_at) / 60) FILTER (WHERE arrived_at IS NOT NULL) AS avg_min
           FROM a""", since, until, now)
    counted = r["on_time"] + r["late"]
    return ArrivalStats(counted, r["on_time"], r["late"], r["pending"],
                        (r["on_time"] / counted) if counted else None,
                        float(r["avg_min"]) if r["avg_min"] is not None else None)


async def complaint_stats(conn: asyncpg.Connection, *, since: datetime, until: datetime) -> dict[str, Any]:
    """Complaints accepted in [since, until): all, valid (appeal not upheld),
    by level-1 family, and transformer areas with 2+ valid complaints."""
    rows = await conn.fetch(
        """SELECT category_l1, count(*) AS total, count(*) FILTER (WHERE valid_complaint) AS valid
           FROM work_orders WHERE order_type = 'complaint' AND status NOT IN ('draft', 'cancelled')
             AND coalesce(accepted_at, created_at) >= $1 AND coalesce(accepted_at, created_at) < $2
           GROUP BY category_l1 ORDER BY category_l1""", since, until)
    areas = await conn.fetch(
        """SELECT transformer_area, count(*) AS valid FROM work_orders
           WHERE valid_complaint AND status NOT IN ('draft', 'cancelled') AND transformer_area <> ''
             AND coalesce(accepted_at, created_at) >= $1 AND coalesce(accepted_at, created_at) < $2
           GROUP BY transformer_area HAVING count(*) >= 2 ORDER BY 2 DESC, 1""", since, until)
    return {
        "total": sum(r["total"] for r in rows),
        "valid": sum(r["valid"] for r in rows),
        "appeals_upheld": sum(r["total"] - r["valid"] for r in rows),
        "by_family": [{"category_l1": r["category_l1"], "total": r["total"], "valid": r["valid"]} for r in rows],
        "flagged_transformer_areas": [dict(r) for r in areas],
    }


# -- knowledge base -------------------------------------------------------------------

async def seed_knowledge(conn: asyncpg.Connection, articles: Sequence[Article]) -> int:
    """Upsert the seed file's articles by slug (the file is the source)."""
    n = 0
    for a in articles:
        status = await conn.execute(
            """INSERT INTO knowledge_articles (slug, topic, title, keywords, body) VALUES ($1, $2, $3, $4, $5)
               ON CONFLICT (slug) DO UPDATE SET topic = EXCLUDED.topic, title = EXCLUDED.title,
                   keywords = EXCLUDED.keywords, body = EXCLUDED.body, updated_at = now()
               WHERE (knowledge_articles.topic, knowledge_articles.title, knowledge_articles.keywords,
                      knowledge_articles.body) IS DISTINCT FROM
                     (EXCLUDED.topic, EXCLUDED.title, EXCLUDED.keywords, EXCLUDED.body)""",
            a.slug, a.topic, a.title, a.keywords, a.body)
        n += int(status.split()[-1])
    return n


async def search_knowledge(conn: asyncpg.Connection, q: str, *, topic: str | None = None,
                           limit: int = 20) -> list[dict[str, Any]]:
    """ILIKE over the (small) table; each term scores 3 in the title, 2 in
    the keywords or topic, 1 in the body.  Empty query: everything by topic."""
    terms = search_terms(q)
    if not terms:
        rows = await conn.fetch(
            """SELECT slug, topic, title, keywords, body, 0 AS score FROM knowledge_articles
               WHERE ($1::text IS NULL OR topic = $1) ORDER BY topic, title LIMIT $2""", topic, limit)
        return [dict(r) for r in rows]
    pats = [_like(t) for t in terms]
    rows = await conn.fetch(
        """SELECT slug, topic, title, keywords, body,
                  (SELECT sum(CASE WHEN k.title ILIKE p ESCAPE '\\' THEN 3 ELSE 0 END
                            + CASE WHEN k.keywords ILIKE p ESCAPE '\\' OR k.topic ILIKE p ESCAPE '\\' THEN 2 ELSE 0 END
                            + CASE WHEN k.body ILIKE p ESCAPE '\\' THEN 1 ELSE 0 END)
                   FROM unnest($1::text[]) AS p) AS score
           FROM knowledge_articles k
           WHERE ($2::text IS NULL OR topic = $2)
           ORDER BY score DESC, title LIMIT $3""", pats, topic, limit)
    return [dict(r) for r in rows if r["score"] > 0]


async def get_article(conn: asyncpg.Connection, slug: str) -> dict[str, Any] | None:
    r = await conn.fetchrow("SELECT slug, topic, title, keywords, body, updated_at FROM knowledge_articles "
                            "WHERE slug = $1", slug)
    if r is None:
        return None
    d = dict(r)
    d["updated_at"] = d["updated_at"].isoformat()
    return d

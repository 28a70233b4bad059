"""SQL of the history reports (asyncpg).  Everything is aggregated in
PostgreSQL (``count(*) FILTER``, ``sum``, ``GROUP BY``): Python only sees a
handful of rows per query, so a year over a large ``calls`` table does not
hold the event loop.  :func:`compute_report` runs the queries one bucket /
one section at a time and reports progress after each.

Work-order figures reuse :func:`tickets.queries.arrival_stats` and
:func:`tickets.queries.complaint_stats`."""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Awaitable, Callable

import asyncpg

from tickets import queries as tq
from tickets.categories import default_categories
from tickets.model import ORDER_TYPE_LABELS

from . import reports as r
from .model import Tally

Progress = Callable[[int, int, str], Awaitable[None] | None]

# a call row's outcome as queues.repository.stints_between maps it:
# answered / abandoned; other ended rows "exited"; not ended: still waiting
_TALLY_SQL = """
SELECT queue,
       count(*) AS offered,
       count(*) FILTER (WHERE outcome = 'answered') AS answered,
       count(*) FILTER (WHERE outcome = 'abandoned') AS abandoned,
       count(*) FILTER (WHERE outcome NOT IN ('answered', 'abandoned') AND ended_at IS NOT NULL) AS exited,
       count(*) FILTER (WHERE outcome = 'answered' AND coalesce(hold_time_s, 0) <= $3) AS answered_within,
       coalesce(sum(coalesce(hold_time_s, 0)) FILTER (WHERE outcome = 'answered'), 0) AS wait_answered_s,
       coalesce(sum(coalesce(hold_time_s, 0)) FILTER (WHERE outcome = 'abandoned'), 0) AS wait_abandoned_s,
       count(*) FILTER (WHERE outcome = 'answered' AND talk_time_s IS NOT NULL AND ended_at IS NOT NULL)
           AS completed,
       coalesce(sum(talk_time_s) FILTER (WHERE outcome = 'answered' AND ended_at IS NOT NULL), 0) AS talk_s
  FROM calls
 WHERE queued_at >= $1 AND queued_at < $2 AND queue <> ''
 GROUP BY queue"""


async def call_tallies(conn: asyncpg.Connection, start: datetime, end: datetime,
                       threshold_s: float) -> dict[str, Tally]:
    """Per-queue :class:`Tally` of the calls that entered a queue in
    ``[start, end)`` — the same figures as
    ``tally_of(stints_between(...))``, summed by PostgreSQL."""
    rows = await conn.fetch(_TALLY_SQL, start, end, threshold_s)
    return {row["queue"]: Tally(row["offered"], row["answered"], row["abandoned"], row["exited"],
                                row["answered_within"], float(row["wait_answered_s"]),
                                float(row["wait_abandoned_s"]), row["completed"], float(row["talk_s"]))
            for row in rows}


async def ivr_counts(conn: asyncpg.Connection, start: datetime, end: datetime) -> r.IvrCounts:
    """Calls that started in ``[start, end)``: incoming (external callers;
    agents' extensions and feature codes are internal), self-service (ended
    without ever queueing or reaching an agent, no menu choice recorded) and
    IVR callback requests (ended after a menu choice without queueing: the
    surge callback, whose dialplan hangs up instead of queueing)."""
    row = await conn.fetchrow(
        """SELECT count(*) AS incoming,
                  count(*) FILTER (WHERE queued_at IS NULL AND answered_at IS NULL AND ended_at IS NOT NULL
                                     AND agent = '' AND ivr_choice = '') AS self_service,
                  count(*) FILTER (WHERE queued_at IS NULL AND answered_at IS NULL AND ended_at IS NOT NULL
                                     AND agent = '' AND ivr_choice <> '') AS ivr_callbacks
             FROM calls
            WHERE started_at >= $1 AND started_at < $2 AND caller_num !~ $3""",
        start, end, r.INTERNAL_CALLER_PATTERN)
    return r.IvrCounts(row["incoming"], row["self_service"], row["ivr_callbacks"])


_COHORT = """status NOT IN ('draft', 'cancelled')
             AND coalesce(accepted_at, created_at) >= $1 AND coalesce(accepted_at, created_at) < $2"""


async def orders_by_type(conn: asyncpg.Connection, start: datetime, end: datetime) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"SELECT order_type, count(*) AS n FROM work_orders WHERE {_COHORT} GROUP BY order_type", start, end)


async def complaint_categories(conn: asyncpg.Connection, start: datetime, end: datetime) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"""SELECT category_l1, category_l2, category_l3, count(*) AS total,
                   count(*) FILTER (WHERE valid_complaint) AS valid
              FROM work_orders WHERE order_type = 'complaint' AND {_COHORT}
             GROUP BY 1, 2, 3""", start, end)


async def order_counts(conn: asyncpg.Connection, start: datetime, end: datetime, now: datetime) -> r.OrderCounts:
    o = await conn.fetchrow(
        f"""SELECT count(*) AS accepted,
                   count(*) FILTER (WHERE status IN ('feedback', 'callback', 'closed')) AS processed,
                   count(*) FILTER (WHERE dispatched_at IS NOT NULL) AS dispatched,
                   count(*) FILTER (WHERE dispatched_at IS NOT NULL
                                      AND status IN ('feedback', 'callback', 'closed')) AS fed_back
              FROM work_orders WHERE {_COHORT}""", start, end)
    t = await conn.fetchrow(
        f"""SELECT count(*) FILTER (WHERE t.state = 'done') AS done,
                   count(*) FILTER (WHERE t.state = 'pending' AND t.due_at < $3) AS overdue,
                   count(*) FILTER (WHERE t.state = 'pending' AND t.due_at >= $3) AS pending,
                   count(*) FILTER (WHERE t.state = 'done' AND t.result = 'satisfied') AS satisfied
              FROM callback_tasks t JOIN work_orders w ON w.id = t.order_id
             WHERE w.status NOT IN ('draft', 'cancelled')
               AND coalesce(w.accepted_at, w.created_at) >= $1 AND coalesce(w.accepted_at, w.created_at) < $2""",
        start, end, now)
    return r.OrderCounts(o["accepted"], o["processed"], o["dispatched"], o["fed_back"], t["done"], t["overdue"],
                         t["pending"], t["satisfied"])


async def overdue_by_department(conn: asyncpg.Connection, start: datetime, end: datetime,
                                now: datetime) -> list[asyncpg.Record]:
    return await conn.fetch(
        """WITH d AS (
               SELECT w.department, d.order_id,
                      (d.breached_at IS NOT NULL OR d.state = 'breached'
                       OR (d.state IN ('pending', 'warned') AND d.due_at < $3)
                       OR (d.state = 'met' AND d.met_at > d.due_at)) AS overdue
                 FROM work_order_deadlines d JOIN work_orders w ON w.id = d.order_id
                WHERE d.kind IN ('arrival', 'department_reply', 'repair_feedback') AND d.state <> 'cancelled'
                  AND d.due_at >= $1 AND d.due_at < $2)
           SELECT department, count(*) AS due, count(*) FILTER (WHERE overdue) AS overdue,
                  count(DISTINCT order_id) FILTER (WHERE overdue) AS overdue_orders
             FROM d GROUP BY department""", start, end, now)


# the area of a complaint: the order's (a snapshot at acceptance), else the customer's
_AREA = "coalesce(nullif(w.transformer_area, ''), c.transformer_area, '')"


async def complaint_areas(conn: asyncpg.Connection, period: r.Period) -> tuple[dict, dict, dict]:
    """``(in_period, month_counts, names)`` for :func:`queues.reports.area_rows`;
    areas are compared with ``ticket_area_key`` (migration 004)."""
    since = r.month_start(*r.prev_month(period.first.year, period.first.month))  # the month before
    rows = await conn.fetch(
        f"""SELECT ticket_area_key({_AREA}) AS area, min({_AREA}) AS name,
                   extract(year FROM (coalesce(w.accepted_at, w.created_at) AT TIME ZONE 'UTC')
                                     + interval '8 hours')::int AS y,
                   extract(month FROM (coalesce(w.accepted_at, w.created_at) AT TIME ZONE 'UTC')
                                      + interval '8 hours')::int AS m,
                   count(*) AS n,
                   count(*) FILTER (WHERE coalesce(w.accepted_at, w.created_at) >= $2) AS in_period
              FROM work_orders w LEFT JOIN customers c ON c.id = w.customer_id
             WHERE w.valid_complaint AND w.status NOT IN ('draft', 'cancelled') AND {_AREA} <> ''
               AND coalesce(w.accepted_at, w.created_at) >= $1 AND coalesce(w.accepted_at, w.created_at) < $3
             GROUP BY 1, 3, 4""", since, period.start, period.end)
    in_period: dict[str, int] = {}
    months: dict[str, dict[tuple[int, int], int]] = {}
    names: dict[str, str] = {}
    for row in rows:
        a = row["area"]
        in_period[a] = in_period.get(a, 0) + row["in_period"]
        months.setdefault(a, {})[(row["y"], row["m"])] = row["n"]
        names[a] = min(names.get(a, row["name"]), row["name"])
    return in_period, months, names


async def repeat_complaints(conn: asyncpg.Connection, start: datetime, end: datetime,
                            window_days: int = r.REPEAT_WINDOW_DAYS) -> list[dict[str, Any]]:
    """Customers with a valid complaint in the period that followed another
    valid complaint of theirs within ``window_days`` (the earlier one may be
    before the period)."""
    rows = await conn.fetch(
        f"""WITH cp AS (
               SELECT w.order_no, coalesce(w.accepted_at, w.created_at) AS at,
                      CASE WHEN w.customer_id IS NOT NULL THEN 'c' || w.customer_id
                           WHEN w.contact_phone <> '' THEN 'p' || w.contact_phone
                           WHEN w.caller_num_norm <> '' THEN 'p' || w.caller_num_norm END AS who,
                      coalesce(nullif(w.customer_snapshot->>'name', ''), nullif(w.contact_name, ''),
                               w.contact_phone) AS who_label,
                      {_AREA} AS area
                 FROM work_orders w LEFT JOIN customers c ON c.id = w.customer_id
                WHERE w.valid_complaint AND w.status NOT IN ('draft', 'cancelled')
                  AND coalesce(w.accepted_at, w.created_at) >= $1 AND coalesce(w.accepted_at, w.created_at) < $2),
           l AS (
               SELECT *, lag(at) OVER (PARTITION BY who ORDER BY at, order_no) AS prev_at FROM cp WHERE who IS NOT NULL)
           SELECT who, min(who_label) AS who_label, max(area) AS area, count(*) AS repeats,
                  array_agg(order_no ORDER BY at) AS orders
             FROM l WHERE at >= $3 AND prev_at IS NOT NULL AND at - prev_at <= $4
            GROUP BY who""", start - timedelta(days=window_days), end, start, timedelta(days=window_days))
    return [dict(x) for x in rows]


async def compute_report(pool: asyncpg.Pool, period: r.Period, *, now: datetime, threshold_s: float,
                         progress: Progress | None = None) -> r.Report:
    """The whole report, one query at a time; ``progress(done, total, step)``
    after each."""
    buckets = period.buckets()
    total = len(buckets) + 6
    done = 0

    async def step(label: str) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            res = progress(done, total, label)
            if res is not None:
                await res

    per_bucket = []
    async with pool.acquire() as conn:
        for b in buckets:
            per_bucket.append((b, await call_tallies(conn, b.start, b.end, threshold_s),
                               await ivr_counts(conn, b.start, b.end)))
            await step(f"话务 {b.label}")
        sections = r.calls_tables(period, per_bucket, threshold_s)

        s, e = period.start, period.end
        cats = default_categories()
        by_type = r.orders_by_type_table(await orders_by_type(conn, s, e), ORDER_TYPE_LABELS)
        by_cat = r.categories_table(await complaint_categories(conn, s, e),
                                    lambda code: (cats.get(code).name if cats.get(code) else code))
        await step("工单分类")
        counts = await order_counts(conn, s, e, now)
        await step("处理与回访")
        overdue = r.overdue_rows(await overdue_by_department(conn, s, e, now))
        await step("超期")
        a = await tq.arrival_stats(conn, since=s, until=e, now=now)
        arrival = r.ArrivalFigures(a.counted, a.on_time, a.late, a.pending, a.rate, a.average_minutes)
        await step("到达现场")
        complaints = await tq.complaint_stats(conn, since=s, until=e)
        areas = r.area_rows(period, *await complaint_areas(conn, period))
        await step("台区投诉")
        repeats = await repeat_complaints(conn, s, e)
        figures = r.order_figures(counts, arrival, sum(x["repeats"] for x in repeats), complaints["valid"])
        await step("重复投诉")
    sections += [figures, by_type, by_cat, overdue, areas, r.repeat_table(repeats)]
    return r.Report(period, now, sections)


__all__ = ["call_tallies", "complaint_areas", "complaint_categories", "compute_report", "ivr_counts",
           "order_counts", "orders_by_type", "overdue_by_department", "repeat_complaints"]

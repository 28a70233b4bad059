"""The work-order loop in PostgreSQL (asyncpg): transitions, audit trail,
deadlines, callbacks, crew outbox and duplicate-fault merging.

Every write goes through :meth:`Workflow.act` (or the screen-pop's
:func:`tickets.repository.save_order` for draft -> accepted), which, inside
one transaction (a savepoint if the caller already has one):

1. locks the order row (``FOR NO KEY UPDATE``: the deadline worker's event
   inserts only need ``KEY SHARE``, so the two never deadlock);
2. checks the client's ``version`` (optimistic locking -> :class:`StaleOrder`);
3. asks the pure rules (:func:`tickets.states.decide`) -- an illegal
   transition or a missing field raises before anything is written;
4. updates the row (``version + 1``), appends one ``work_order_events`` row,
   and applies the side effects: deadline rows met / created / cancelled,
   callback tasks, crew messages (outbox), and the callers attached to a
   fault put on the callback list when power is back.

Nothing is half-written: any error rolls the whole action back.

Times come from ``settings.clock`` (UTC-aware ``datetime``); tests pass a
fake clock.  Deadlines are computed by :mod:`tickets.deadlines`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Mapping, Sequence

import asyncpg

from cti.logs import get_logger

from . import crew
from .categories import CategoryTree, default_categories
from .deadlines import (
    DEADLINE_LABELS, Due, SlaPolicy, arrival_due, callback_plan, department_reply_due, dispatch_due,
    extension_default_due, is_key_customer, repair_feedback_due, warn_at,
)
from .merging import KnownFault, area_key, choose_fault
from .model import ORDER_TYPE_LABELS
from .outage_source import RegistryOutageSource
from .ports import OutageSource
from .states import Action, Decision, OrderState, STATUS_LABELS, decide, validate_actor

log = get_logger("hotline.tickets")

__all__ = ["TicketSettings", "Workflow", "default_workflow", "order_dict", "utcnow"]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class TicketSettings:
    policy: SlaPolicy = field(default_factory=SlaPolicy)
    categories: CategoryTree = field(default_factory=default_categories)
    outages: OutageSource = field(default_factory=RegistryOutageSource)
    clock: Callable[[], datetime] = utcnow


# columns a decision may set (anything else is a programming error)
_SETTABLE = frozenset({
    "department", "assignee", "assignee_phone", "dispatched_at", "dispatched_by", "major_outage",
    "category_l1", "category_l2", "category_l3", "started_at", "arrived_at", "findings",
    "expected_repair_at", "repair_result", "repair_finished_at", "feedback_result", "feedback_by",
    "feedback_at", "callback_result", "callback_note", "callback_by", "callback_at", "last_return_reason",
    "closed_at", "close_note", "progress_note", "responsible_person", "responsible_phone", "extended_until",
    "appeal_status", "appeal_reason", "appeal_note", "appeal_filed_at", "appeal_decided_at",
    "merged_into_order_id", "merged_outage_id", "merged_outage_no",
})
_ACTOR_COLUMN = {"OrderDispatched": "dispatched_by", "OrderTransferred": "dispatched_by",
                 "FeedbackGiven": "feedback_by", "CallbackRecorded": "callback_by"}
OPEN_FAULT_STATUSES = ("accepted", "dispatched", "in_progress")


def _jsonable(v: Any) -> Any:
    if isinstance(v, datetime):
        return v.isoformat()
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


def _dumps(v: Any) -> str:
    return json.dumps(_jsonable(v), ensure_ascii=False)


def order_dict(row: Mapping[str, Any], categories: CategoryTree | None = None) -> dict[str, Any]:
    """A full ``work_orders`` row, JSON-ready, with labels."""
    d = dict(row)
    snap = d.get("customer_snapshot")
    if isinstance(snap, str):
        d["customer_snapshot"] = json.loads(snap)
    for k, v in list(d.items()):
        if isinstance(v, datetime):
            d[k] = v.isoformat()
    d["status_label"] = STATUS_LABELS.get(d.get("status", ""), d.get("status", ""))
    d["order_type_label"] = ORDER_TYPE_LABELS.get(d.get("order_type", ""), d.get("order_type", ""))
    d["merged"] = bool(d.get("merged_into_order_id") or d.get("merged_outage_id"))
    d["category"] = None
    if d.get("category_l3"):
        tree = categories or default_categories()
        try:
            d["category"] = tree.path_of(d["category_l3"]).to_dict()
        except ValueError:  # the file changed since: show the codes
            d["category"] = {"codes": [d["category_l1"], d["category_l2"], d["category_l3"]],
                             "names": [], "label": d["category_l3"]}
    return d


class Workflow:
    def __init__(self, settings: TicketSettings | None = None):
        self.settings = settings or TicketSettings()

    @property
    def policy(self) -> SlaPolicy:
        return self.settings.policy

    def now(self) -> datetime:
        return self.settings.clock()

    # -- reading --------------------------------------------------------------
    async def get(self, conn: asyncpg.Connection, order_id: int) -> dict[str, Any]:
        from .repository import OrderNotFound
        row = await conn.fetchrow("SELECT * FROM work_orders WHERE id = $1", order_id)
        if row is None:
            raise OrderNotFound(order_id)
        return order_dict(row, self.settings.categories)

    async def detail(self, conn: asyncpg.Connection, order_id: int) -> dict[str, Any]:
        """The order with its audit trail, deadlines, callback tasks, crew
        messages, the callers attached to it and the fault it is attached to."""
        order = await self.get(conn, order_id)
        order["events"] = await self.events(conn, order_id)
        order["deadlines"] = await deadlines_of(conn, order_id)
        order["callback_tasks"] = [_iso(dict(r)) for r in await conn.fetch(
            "SELECT * FROM callback_tasks WHERE order_id = $1 ORDER BY id", order_id)]
        order["crew_messages"] = await crew.list_messages(conn, order_id)
        order["attached_callers"] = await self.attached_callers(conn, order_id)
        link = await conn.fetchrow(
            """SELECT f.*, w.order_no AS fault_order_no FROM fault_callers f
               LEFT JOIN work_orders w ON w.id = f.fault_order_id
               WHERE f.order_id = $1 ORDER BY f.id DESC LIMIT 1""", order_id)
        order["attached_to"] = _iso(dict(link)) if link else None
        return order

    async def events(self, conn: asyncpg.Connection, order_id: int) -> list[dict[str, Any]]:
        rows = await conn.fetch(
            """SELECT id, at, actor, event, from_status, to_status, version, payload
               FROM work_order_events WHERE order_id = $1 ORDER BY id""", order_id)
        out = []
        for r in rows:
            d = dict(r)
            d["at"] = d["at"].isoformat()
            d["payload"] = json.loads(d["payload"]) if isinstance(d["payload"], str) else d["payload"]
            out.append(d)
        return out

    async def attached_callers(self, conn: asyncpg.Connection, fault_order_id: int) -> list[dict[str, Any]]:
        rows = await conn.fetch(
            """SELECT f.*, w.order_no, w.status FROM fault_callers f JOIN work_orders w ON w.id = f.order_id
               WHERE f.fault_order_id = $1 ORDER BY f.id""", fault_order_id)
        return [_iso(dict(r)) for r in rows]

    # -- events ---------------------------------------------------------------
    async def _event(self, conn: asyncpg.Connection, order_id: int, *, actor: str, event: str,
                     from_status: str = "", to_status: str = "", version: int | None = None,
                     payload: Mapping[str, Any] | None = None, at: datetime | None = None) -> None:
        await conn.execute(
            """INSERT INTO work_order_events (order_id, at, actor, event, from_status, to_status, version, payload)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb)""",
            order_id, at or self.now(), actor, event, from_status, to_status, version, _dumps(payload or {}))

    # -- transitions ------------------------------------------------------------
    async def act(self, conn: asyncpg.Connection, order_id: int, action: str, payload: Mapping[str, Any],
                  *, actor: str, version: int | None, heavy_load: bool | None = None) -> dict[str, Any]:
        """Apply one action.  ``version`` is the version the client loaded
        (required from people; ``None`` only for system actions)."""
        from .repository import OrderNotFound, StaleOrder
        actor = validate_actor(actor)
        async with conn.transaction():
            row = await conn.fetchrow("SELECT * FROM work_orders WHERE id = $1 FOR NO KEY UPDATE", order_id)
            if row is None:
                raise OrderNotFound(order_id)
            if version is not None and row["version"] != version:
                raise StaleOrder(row["version"])
            now = self.now()
            decision = decide(OrderState.from_row(row), action, payload, now=now,
                              categories=self.settings.categories)
            new = await self._apply(conn, row, decision, actor=actor, now=now)
            await self._side_effects(conn, row, new, decision, actor=actor, now=now, heavy_load=heavy_load)
            log.info("work_order_changed", order_no=new["order_no"], change=decision.event,
                     from_status=row["status"], to_status=new["status"], actor=actor)
            return order_dict(new, self.settings.categories)

    async def _apply(self, conn: asyncpg.Connection, row: asyncpg.Record, decision: Decision, *,
                     actor: str, now: datetime) -> asyncpg.Record:
        changes = dict(decision.changes)
        if decision.event in _ACTOR_COLUMN:
            changes[_ACTOR_COLUMN[decision.event]] = actor
        bad = set(changes) - _SETTABLE
        if bad:  # pragma: no cover - a rule returned an unknown column
            raise RuntimeError(f"rules tried to set {bad}")
        cols = sorted(changes)
        sets = [f"{c} = ${i + 3}" for i, c in enumerate(cols)]
        extra = ", return_count = return_count + 1" if decision.event == "OrderReturned" else ""
        new = await conn.fetchrow(
            f"""UPDATE work_orders SET status = $2, version = version + 1, updated_at = ${len(cols) + 3}
                    {''.join(', ' + s for s in sets)}{extra}
                WHERE id = $1 RETURNING *""",
            row["id"], decision.to_status, *[changes[c] for c in cols], now)
        await self._event(conn, row["id"], actor=actor, event=decision.event, from_status=row["status"],
                          to_status=new["status"], version=new["version"], payload=decision.audit, at=now)
        return new

    def _key(self, row: Mapping[str, Any]) -> bool:
        snap = row["customer_snapshot"]
        if isinstance(snap, str):
            snap = json.loads(snap)
        return bool(row["key_customer"]) or is_key_customer(snap, major_outage=bool(row["major_outage"]))

    async def _side_effects(self, conn: asyncpg.Connection, old: asyncpg.Record, new: asyncpg.Record,
                            decision: Decision, *, actor: str, now: datetime, heavy_load: bool | None) -> None:
        ev = decision.event
        oid = new["id"]
        key = self._key(new)
        if ev == "OrderDispatched":
            await self.meet(conn, oid, "dispatch", now)
            await self.add_deadline(conn, oid, "department_reply", department_reply_due(now, self.policy), now, key)
            await crew.enqueue_messages(conn, dict(new))
        elif ev == "OrderTransferred":
            await crew.enqueue_messages(conn, dict(new), transfer=True)
        elif ev == "CrewArrived":
            await self.meet(conn, oid, "arrival", new["arrived_at"])
        elif ev == "CrewResultReported":
            if new["repair_result"] in ("restored", "customer_equipment"):
                await self.add_deadline(conn, oid, "repair_feedback",
                                        repair_feedback_due(new["repair_finished_at"]), now, key)
        elif ev == "FeedbackGiven":
            await self.meet(conn, oid, "department_reply", now)
            if new["order_type"] == "repair":
                if new["repair_finished_at"] is not None and new["repair_result"] in ("restored", "customer_equipment"):
                    await self.add_deadline(conn, oid, "repair_feedback",
                                            repair_feedback_due(new["repair_finished_at"]), now, key,
                                            replace=False)
                await self.meet(conn, oid, "repair_feedback", now)
                # a crew that never reported arrival: the arrival deadline stays as it is (breached if passed)
            await self.schedule_callback(conn, new, reason="feedback", now=now, heavy_load=heavy_load)
            if new["order_type"] == "repair" and new["repair_result"] == "restored" and not _merged(new):
                await self.restore_attached(conn, new, now=now)
        elif ev == "FaultRestored":
            await self.schedule_callback(
                conn, new, now=now, heavy_load=heavy_load,
                reason="outage_restored" if new["merged_outage_id"] else "fault_restored")
            await conn.execute("UPDATE fault_callers SET restored_at = $2 WHERE order_id = $1 AND restored_at IS NULL "
                               "AND detached_at IS NULL", oid, now)
        elif ev == "CallbackRecorded":
            await self.meet(conn, oid, "callback", now)
            await self._finish_callback_task(conn, oid, now, actor, new["callback_result"])
        elif ev == "OrderReturned":
            via_callback = old["status"] == "feedback" and decision.changes.get("callback_result")
            if via_callback:
                await self.meet(conn, oid, "callback", now)
                await self._finish_callback_task(conn, oid, now, actor, new["callback_result"])
            else:
                await self.cancel_deadlines(conn, oid, now, kinds=("callback",))
                await conn.execute("UPDATE callback_tasks SET state = 'cancelled', done_at = $2, done_by = $3 "
                                   "WHERE order_id = $1 AND state = 'pending'", oid, now, actor)
            if new["status"] == "dispatched":
                await self.add_deadline(conn, oid, "department_reply", department_reply_due(now, self.policy), now, key)
            else:  # a merged caller still without power: now a fault of its own
                await conn.execute("UPDATE fault_callers SET detached_at = $2 WHERE order_id = $1 "
                                   "AND detached_at IS NULL", oid, now)
                await self._repair_clock(conn, new, now, key)
        elif ev == "CallerDetached":
            await conn.execute("UPDATE fault_callers SET detached_at = $2 WHERE order_id = $1 AND detached_at IS NULL",
                               oid, now)
            await self._repair_clock(conn, new, now, key)
        elif ev == "OrderClosed":
            await self.cancel_deadlines(conn, oid, now)
            await conn.execute("UPDATE callback_tasks SET state = 'cancelled', done_at = $2 "
                               "WHERE order_id = $1 AND state = 'pending'", oid, now)
            # callers still waiting on this fault (closed without power restored): each is now a fault of its own
            waiting = await conn.fetch(
                """SELECT f.order_id FROM fault_callers f JOIN work_orders w ON w.id = f.order_id
                   WHERE f.fault_order_id = $1 AND f.restored_at IS NULL AND f.detached_at IS NULL
                     AND w.status = 'accepted' ORDER BY f.id""", oid)
            for r in waiting:
                await self.act(conn, r["order_id"], Action.DETACH.value,
                               {"reason": f"主单 {new['order_no']} 已归档但未恢复送电,转为独立报修"},
                               actor="system", version=None)
        elif ev == "ExtensionRecorded":
            due = (Due(new["extended_until"]) if new["extended_until"] is not None
                   else extension_default_due(now, self.policy))
            await self.add_deadline(conn, oid, "department_reply", due, now, key)

    async def _repair_clock(self, conn: asyncpg.Connection, order: Mapping[str, Any], now: datetime,
                            key: bool) -> None:
        """Dispatch and arrival deadlines of a repair that is (now) a fault of its own."""
        await self.add_deadline(conn, order["id"], "dispatch", dispatch_due(now, self.policy), now, key)
        await self.add_deadline(conn, order["id"], "arrival",
                                arrival_due(now, order["area_class"], self.policy), now, key)

    # -- deadlines ----------------------------------------------------------------
    async def add_deadline(self, conn: asyncpg.Connection, order_id: int, kind: str, due: Due,
                           start: datetime, key: bool, *, replace: bool = True) -> None:
        """Create the live deadline of this kind, or move it (``replace``)."""
        w = warn_at(kind, start, due.due_at, self.policy)
        conflict = ("DO UPDATE SET due_at = EXCLUDED.due_at, warn_at = EXCLUDED.warn_at, state = 'pending', "
                    "warned_at = NULL, approximate = EXCLUDED.approximate, key_customer = EXCLUDED.key_customer"
                    if replace else "DO NOTHING")
        await conn.execute(
            f"""INSERT INTO work_order_deadlines (order_id, kind, due_at, warn_at, approximate, key_customer, created_at)
                VALUES ($1, $2, $3, $4, $5, $6, $7)
                ON CONFLICT (order_id, kind) WHERE state IN ('pending', 'warned') {conflict}""",
            order_id, kind, due.due_at, w, due.approximate, key, start)
        if due.approximate:
            log.warning("deadline_calendar_approximate", order_id=order_id, kind=kind, due_at=due.due_at.isoformat())

    async def meet(self, conn: asyncpg.Connection, order_id: int, kind: str, at: datetime) -> None:
        await conn.execute(
            """UPDATE work_order_deadlines SET state = 'met', met_at = $3
               WHERE order_id = $1 AND kind = $2 AND state IN ('pending', 'warned', 'breached')""",
            order_id, kind, at)

    async def cancel_deadlines(self, conn: asyncpg.Connection, order_id: int, now: datetime,
                               kinds: Sequence[str] | None = None) -> None:
        await conn.execute(
            """UPDATE work_order_deadlines SET state = 'cancelled', cancelled_at = $2
               WHERE order_id = $1 AND state IN ('pending', 'warned')
                 AND ($3::text[] IS NULL OR kind = ANY($3::text[]))""",
            order_id, now, list(kinds) if kinds else None)

    # -- callbacks ------------------------------------------------------------------
    async def is_heavy_load(self, conn: asyncpg.Connection) -> bool:
        n = await conn.fetchval("SELECT count(*) FROM callback_tasks WHERE state = 'pending'")
        return n >= self.policy.heavy_load_pending_callbacks

    async def schedule_callback(self, conn: asyncpg.Connection, order: Mapping[str, Any], *, reason: str,
                                now: datetime, heavy_load: bool | None) -> None:
        key = self._key(order)
        if heavy_load is None:
            heavy_load = await self.is_heavy_load(conn)
        plan = callback_plan(now, key_customer=key, heavy_load=heavy_load, policy=self.policy)
        await conn.execute(
            """UPDATE callback_tasks SET state = 'cancelled', done_at = $2 WHERE order_id = $1 AND state = 'pending'""",
            order["id"], now)
        await conn.execute(
            """INSERT INTO callback_tasks (order_id, reason, fault_order_id, outage_id, not_before, due_at,
                   key_customer, deferred, approximate, created_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)""",
            order["id"], reason, order["merged_into_order_id"], order["merged_outage_id"], plan.not_before,
            plan.due_at, key, plan.deferred, plan.approximate, now)
        await self.add_deadline(conn, order["id"], "callback", Due(plan.due_at, plan.approximate), now, key)

    async def _finish_callback_task(self, conn: asyncpg.Connection, order_id: int, now: datetime, actor: str,
                                    result: str) -> None:
        await conn.execute(
            """UPDATE callback_tasks SET state = 'done', done_at = $2, done_by = $3, result = $4
               WHERE order_id = $1 AND state = 'pending'""", order_id, now, actor, result)

    # -- acceptance and merging -------------------------------------------------------
    async def after_save(self, conn: asyncpg.Connection, before_status: str, order: asyncpg.Record, *,
                         actor: str, now: datetime, merge: bool = True, new_fault_reason: str = "",
                         area_class_given: bool = False) -> asyncpg.Record:
        """Called by :func:`tickets.repository.save_order` inside its transaction."""
        if before_status != "draft":
            await self._event(conn, order["id"], actor=actor, event="OrderEdited", from_status=before_status,
                              to_status=order["status"], version=order["version"], at=now,
                              payload={"order_type": order["order_type"], "description": order["description"]})
            return order
        snap = order["customer_snapshot"]
        if isinstance(snap, str):
            snap = json.loads(snap)
        snap = snap or {}
        order = await conn.fetchrow(
            """UPDATE work_orders SET
                   feeder = CASE WHEN feeder = '' THEN $2 ELSE feeder END,
                   village = CASE WHEN village = '' THEN $3 ELSE village END,
                   area_class = CASE WHEN $4 IN ('town', 'countryside', 'remote') AND NOT $6 THEN $4 ELSE area_class END,
                   key_customer = $5
               WHERE id = $1 RETURNING *""",
            order["id"], str(snap.get("feeder") or ""), str(snap.get("village") or ""),
            str(snap.get("area_class") or ""), is_key_customer(snap), area_class_given)
        await self._event(conn, order["id"], actor=actor, event="OrderAccepted", from_status="draft",
                          to_status="accepted", version=order["version"], at=now,
                          payload={"order_type": order["order_type"], "key_customer": order["key_customer"],
                                   "category": order["category_l3"] or None})
        if order["order_type"] != "repair":
            return order
        fault = None
        if merge:
            fault = choose_fault(await self.known_faults(
                conn, transformer_area=order["transformer_area"], feeder=order["feeder"],
                village=order["village"], exclude_order_id=order["id"], at=now))
        if fault is None:
            if not merge and new_fault_reason:
                await self._event(conn, order["id"], actor=actor, event="NewFaultDeclared", at=now,
                                  version=order["version"], payload={"reason": new_fault_reason})
            await self._repair_clock(conn, order, now, self._key(order))
            return order
        return await self.attach(conn, order, fault, actor=actor, now=now)

    async def known_faults(self, conn: asyncpg.Connection, *, transformer_area: str, feeder: str, village: str = "",
                           exclude_order_id: int | None = None, at: datetime | None = None) -> list[KnownFault]:
        """Open repair faults on the same transformer area or feeder, and
        published outages covering the transformer area, feeder or village
        (a village is matched only against the registry: one village may be
        fed by several transformer areas), best first."""
        at = at or self.now()
        out: list[KnownFault] = []
        if transformer_area.strip() or feeder.strip() or village.strip():
            rows = await conn.fetch(
                """SELECT w.id, w.order_no, w.status, w.transformer_area, w.feeder, w.village, w.accepted_at,
                           w.created_at, w.major_outage, w.description, w.department, w.assignee, w.arrived_at,
                           w.expected_repair_at, w.findings,
                           (SELECT count(*) FROM fault_callers f WHERE f.fault_order_id = w.id
                              AND f.detached_at IS NULL) AS callers
                    FROM work_orders w
                    WHERE w.order_type = 'repair' AND w.status = ANY($4::text[])
                      AND w.merged_into_order_id IS NULL AND w.merged_outage_id IS NULL
                      AND ($3::bigint IS NULL OR w.id <> $3)
                      AND (   ($1 <> '' AND w.transformer_area <> '' AND ticket_area_key(w.transformer_area) = ticket_area_key($1))
                           OR ($2 <> '' AND w.feeder <> '' AND ticket_area_key(w.feeder) = ticket_area_key($2)))""",
                transformer_area or "", feeder or "", exclude_order_id, list(OPEN_FAULT_STATUSES))
            for r in rows:
                if transformer_area and area_key(r["transformer_area"]) == area_key(transformer_area):
                    on, name = "transformer_area", r["transformer_area"]
                else:
                    on, name = "feeder", r["feeder"]
                bits = [r["description"][:100]]
                if r["assignee"]:
                    bits.append(f"已派{r['department']} {r['assignee']}")
                if r["arrived_at"]:
                    bits.append("抢修人员已到达现场")
                if r["findings"]:
                    bits.append(f"现场:{r['findings'][:100]}")
                out.append(KnownFault("order", r["id"], r["order_no"], on, name, r["accepted_at"] or r["created_at"],
                                      bool(r["major_outage"]), r["status"], ";".join(b for b in bits if b),
                                      r["expected_repair_at"], int(r["callers"])))
            out += await self.settings.outages.published_for(
                conn, transformer_area=transformer_area, feeder=feeder, village=village, at=at)
        # one entry per fault (a fault may match on several areas: keep its best match)
        best: dict[tuple[str, int], KnownFault] = {}
        from .merging import rank
        for f in sorted(out, key=rank):
            best.setdefault((f.kind, f.id), f)
        return sorted(best.values(), key=rank)

    async def attach(self, conn: asyncpg.Connection, order: Mapping[str, Any], fault: KnownFault, *, actor: str,
                     now: datetime) -> asyncpg.Record:
        """Attach a caller's repair order to a known fault (no second crew)."""
        is_order = fault.kind == "order"
        new = await conn.fetchrow(
            """UPDATE work_orders SET merged_into_order_id = $2, merged_outage_id = $3, merged_outage_no = $4,
                   major_outage = major_outage OR $5
               WHERE id = $1 RETURNING *""",
            order["id"], fault.id if is_order else None, None if is_order else fault.id,
            "" if is_order else fault.ref, fault.major)
        await conn.execute(
            """INSERT INTO fault_callers (order_id, fault_order_id, outage_id, outage_no, matched_on, matched_name,
                   customer_id, contact_name, contact_phone, major, attached_at, attached_by)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)""",
            order["id"], fault.id if is_order else None, None if is_order else fault.id,
            "" if is_order else fault.ref, fault.matched_on, fault.matched_name, order["customer_id"],
            order["contact_name"], order["contact_phone"], fault.major, now, actor)
        await self._event(conn, order["id"], actor=actor, event="CallerAttached", at=now, version=new["version"],
                          from_status=new["status"], to_status=new["status"], payload=fault.to_dict())
        if is_order:
            await self._event(conn, fault.id, actor=actor, event="CallerAttachedToFault", at=now,
                              payload={"order_id": order["id"], "order_no": order["order_no"],
                                       "contact_phone": order["contact_phone"], "matched_on": fault.matched_on})
        log.info("caller_attached_to_fault", order_no=order["order_no"], fault=fault.ref, matched_on=fault.matched_on)
        return new

    async def restore_attached(self, conn: asyncpg.Connection, fault: Mapping[str, Any], *, now: datetime) -> int:
        """Power is back on a fault order: every attached caller -> feedback and the callback list."""
        rows = await conn.fetch(
            """SELECT f.order_id FROM fault_callers f JOIN work_orders w ON w.id = f.order_id
               WHERE f.fault_order_id = $1 AND f.restored_at IS NULL AND f.detached_at IS NULL
                 AND w.status = 'accepted'
               ORDER BY f.id""", fault["id"])
        result = f"故障已处理,已恢复送电(主单 {fault['order_no']}):{fault['feedback_result']}"[:4000]
        for r in rows:
            await self.act(conn, r["order_id"], Action.FAULT_RESTORED.value,
                           {"result": result, "finished_at": fault["repair_finished_at"] or now},
                           actor="system", version=None)
        return len(rows)

    async def restore_outage_callers(self, conn: asyncpg.Connection, outage_id: int, *,
                                     restored_at: datetime | None = None, outage_no: str = "") -> int:
        """A registry outage is restored: its attached callers -> feedback and the callback list.
        Called by the deadline worker's sweep (or directly by whoever restores the outage)."""
        now = self.now()
        rows = await conn.fetch(
            """SELECT f.order_id, f.outage_no FROM fault_callers f JOIN work_orders w ON w.id = f.order_id
               WHERE f.outage_id = $1 AND f.restored_at IS NULL AND f.detached_at IS NULL
                 AND w.status = 'accepted' ORDER BY f.id""", outage_id)
        for r in rows:
            await self.act(conn, r["order_id"], Action.FAULT_RESTORED.value,
                           {"result": f"停电已结束,已恢复送电(停电信息 {r['outage_no'] or outage_no})",
                            "finished_at": restored_at or now},
                           actor="system", version=None)
        return len(rows)

    async def sweep_restored_outages(self, conn: asyncpg.Connection) -> int:
        ids = [r["outage_id"] for r in await conn.fetch(
            """SELECT DISTINCT outage_id FROM fault_callers
               WHERE outage_id IS NOT NULL AND restored_at IS NULL AND detached_at IS NULL""")]
        n = 0
        for oid, restored_at in await self.settings.outages.restored_among(conn, ids):
            n += await self.restore_outage_callers(conn, oid, restored_at=restored_at)
        return n


def _merged(row: Mapping[str, Any]) -> bool:
    return bool(row["merged_into_order_id"] or row["merged_outage_id"])


def _iso(d: dict[str, Any]) -> dict[str, Any]:
    for k, v in list(d.items()):
        if isinstance(v, datetime):
            d[k] = v.isoformat()
    return d


async def deadlines_of(conn: asyncpg.Connection, order_id: int) -> list[dict[str, Any]]:
    rows = await conn.fetch("SELECT * FROM work_order_deadlines WHERE order_id = $1 ORDER BY id", order_id)
    out = []
    for r in rows:
        d = _iso(dict(r))
        d["label"] = DEADLINE_LABELS.get(d["kind"], d["kind"])
        out.append(d)
    return out


_default: Workflow | None = None


def default_workflow() -> Workflow:
    global _default
    if _default is None:
        _default = Workflow()
    return _default

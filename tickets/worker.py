"""The deadline worker: fires SLA warnings and escalations from the durable
``work_order_deadlines`` rows.

Each :meth:`DeadlineWorker.run_once`:

1. claims due rows with ``FOR UPDATE SKIP LOCKED`` (batches of ``batch``):
   a pending row whose ``warn_at`` has passed becomes ``warned`` and writes
   a ``SlaWarning`` event; a pending or warned row whose ``due_at`` has
   passed becomes ``breached`` and writes ``SlaBreached`` (the escalation).
   The state change and the event are one transaction, so any number of
   workers on any number of nodes fire each deadline once, and a restarted
   process simply picks up what is still pending -- nothing lives only in
   memory;
2. puts the callers of restored registry outages on the callback list
   (:meth:`tickets.workflow.Workflow.sweep_restored_outages`);
3. retries crew messages still pending in the outbox;
4. after commit, hands each fired event to the ``notifier`` (sync or async
   callable; errors are logged, never fatal).  A crash between commit and
   notification loses the live push, not the event: it is in
   ``work_order_events``.

Use in the composition root (an aiohttp ``cleanup_ctx``)::

    async def tickets_worker_ctx(app):
        worker = await start_deadline_worker(app[pool_key], notifier=hub_notifier)
        yield
        await worker.stop()
"""
from __future__ import annotations

import asyncio
import inspect
import json
import os
import socket
from datetime import datetime
from typing import Any, Callable, Mapping

import asyncpg

from cti.logs import get_logger

from .crew import LoggingCrewMessenger, deliver_pending
from .deadlines import DEADLINE_LABELS
from .ports import CrewMessenger
from .workflow import Workflow, default_workflow

log = get_logger("hotline.tickets.worker")

__all__ = ["DeadlineWorker", "start_deadline_worker"]

_CLAIM = """
SELECT d.id, d.order_id, d.kind, d.due_at, d.warn_at, d.state, d.approximate, d.key_customer,
       w.order_no, w.order_type, w.status, w.department, w.assignee, w.agent
FROM work_order_deadlines d JOIN work_orders w ON w.id = d.order_id
WHERE (d.state = 'pending' AND d.warn_at <= $1) OR (d.state IN ('pending', 'warned') AND d.due_at <= $1)
ORDER BY d.due_at, d.id
LIMIT $2
FOR UPDATE OF d SKIP LOCKED
"""


class DeadlineWorker:
    def __init__(self, pool: asyncpg.Pool, notifier: Callable[[Mapping[str, Any]], Any] | None = None, *,
                 workflow: Workflow | None = None, messenger: CrewMessenger | None = None,
                 interval: float = 5.0, batch: int = 50, worker_id: str | None = None):
        self.pool = pool
        self.notifier = notifier
        self.workflow = workflow or default_workflow()
        self.messenger = messenger or LoggingCrewMessenger()
        self.interval = interval
        self.batch = batch
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self._task: asyncio.Task | None = None
        self._stopping = asyncio.Event()

    def now(self) -> datetime:
        return self.workflow.now()

    async def fire_due(self) -> list[dict[str, Any]]:
        """Claim and fire every deadline whose warning or due time has passed."""
        fired: list[dict[str, Any]] = []
        now = self.now()
        async with self.pool.acquire() as conn:
            while True:
                batch_events: list[dict[str, Any]] = []
                async with conn.transaction():
                    rows = await conn.fetch(_CLAIM, now, self.batch)
                    for r in rows:
                        breach = r["due_at"] <= now
                        state, event = ("breached", "SlaBreached") if breach else ("warned", "SlaWarning")
                        await conn.execute(
                            f"""UPDATE work_order_deadlines SET state = $2, {state}_at = $3, fired_by = $4
                                WHERE id = $1""", r["id"], state, now, self.worker_id)
                        payload = {
                            "deadline_id": r["id"], "kind": r["kind"], "label": DEADLINE_LABELS.get(r["kind"], r["kind"]),
                            "due_at": r["due_at"].isoformat(), "key_customer": r["key_customer"],
                            "approximate": r["approximate"], "department": r["department"],
                            "assignee": r["assignee"],
                        }
                        await conn.execute(
                            """INSERT INTO work_order_events (order_id, at, actor, event, from_status, to_status, payload)
                               VALUES ($1, $2, 'sla', $3, $4, $4, $5::jsonb)""",
                            r["order_id"], now, event, r["status"], json.dumps(payload, ensure_ascii=False))
                        batch_events.append({"type": event, "order_id": r["order_id"], "order_no": r["order_no"],
                                             "order_type": r["order_type"], "status": r["status"],
                                             "agent": r["agent"], "at": now.isoformat(), **payload})
                fired += batch_events  # committed
                for e in batch_events:
                    (log.warning if e["type"] == "SlaBreached" else log.info)(
                        "sla_breached" if e["type"] == "SlaBreached" else "sla_warning",
                        order_no=e["order_no"], kind=e["kind"], due_at=e["due_at"], worker=self.worker_id)
                if len(rows) < self.batch:
                    break
        return fired

    async def run_once(self) -> list[dict[str, Any]]:
        fired = await self.fire_due()
        try:
            async with self.pool.acquire() as conn:
                async with conn.transaction():
                    restored = await self.workflow.sweep_restored_outages(conn)
            if restored:
                log.info("outage_callers_restored", callers=restored)
        except Exception as exc:  # never let the sweep stop the SLA loop
            log.error("outage_sweep_failed", error=f"{type(exc).__name__}: {exc}")
        try:
            await deliver_pending(self.pool, self.messenger)
        except Exception as exc:
            log.error("crew_delivery_failed", error=f"{type(exc).__name__}: {exc}")
        for event in fired:
            await self._notify(event)
        return fired

    async def _notify(self, event: Mapping[str, Any]) -> None:
        if self.notifier is None:
            return
        try:
            result = self.notifier(event)
            if inspect.isawaitable(result):
                await result
        except Exception as exc:
            log.error("sla_notifier_failed", error=f"{type(exc).__name__}: {exc}", order_no=event.get("order_no"))

    async def run_forever(self) -> None:
        log.info("deadline_worker_started", worker=self.worker_id, interval=self.interval)
        while not self._stopping.is_set():
            try:
                await self.run_once()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.error("deadline_worker_db_error", error=f"{type(exc).__name__}: {exc}")
            except Exception as exc:  # pragma: no cover - keep the loop alive, loudly
                log.exception("deadline_worker_error", error=str(exc))
            try:
                await asyncio.wait_for(self._stopping.wait(), self.interval)
            except asyncio.TimeoutError:
                pass
        log.info("deadline_worker_stopped", worker=self.worker_id)

    def start(self) -> "DeadlineWorker":
        if self._task is None:
            self._stopping.clear()
            self._task = asyncio.create_task(self.run_forever(), name="deadline-worker")
        return self

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, 10)
            except asyncio.TimeoutError:  # pragma: no cover
                self._task.cancel()
            self._task = None


async def start_deadline_worker(pool: asyncpg.Pool, notifier: Callable[[Mapping[str, Any]], Any] | None = None,
                                **kwargs: Any) -> DeadlineWorker:
    """Start a :class:`DeadlineWorker` loop; ``await worker.stop()`` on shutdown.
    Keyword arguments go to the constructor (workflow, messenger, interval, batch, worker_id)."""
    return DeadlineWorker(pool, notifier, **kwargs).start()

"""Screen-pop: when an agent's phone rings (AgentCalled), look the caller up,
make the pre-filled draft work order and push it to that agent's page.
Also records every call in the ``calls`` table."""
from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

import asyncpg

from tickets import repository as orders
from tickets.model import DraftRequest, build_draft_fields

from . import customer_repo
from .events import (AgentCalled, AgentCompleted, AgentConnected, AgentRingNoAnswer, CallerAbandoned,
                     ChannelHungUp, DomainEvent)
from .hub import Hub
from .logs import get_logger
from .phone import normalise_phone
from .resync import CallResynced
from .tracker import Call

log = get_logger("hotline.screenpop")


def _ts(t: float | None) -> datetime | None:
    return datetime.fromtimestamp(t, timezone.utc) if t else None


async def upsert_call(conn: asyncpg.Connection, call: Call, customer_id: int | None = None) -> None:
    norm = normalise_phone(call.caller_num)
    await conn.execute(
        """INSERT INTO calls (linkedid, caller_num, caller_num_norm, caller_name, customer_id, ivr_choice,
                              outage_id, queue, agent, state, outcome, hangup_cause, started_at, queued_at,
                              answered_at, ended_at, hold_time_s, talk_time_s, close_reason)
           VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,coalesce($13, now()),$14,$15,$16,$17,$18,$19)
           ON CONFLICT (linkedid) DO UPDATE SET
               caller_num = EXCLUDED.caller_num, caller_num_norm = EXCLUDED.caller_num_norm,
               caller_name = EXCLUDED.caller_name,
               customer_id = coalesce(EXCLUDED.customer_id, calls.customer_id),
               ivr_choice = EXCLUDED.ivr_choice, outage_id = EXCLUDED.outage_id,
               queue = EXCLUDED.queue, agent = EXCLUDED.agent, state = EXCLUDED.state,
               outcome = EXCLUDED.outcome, hangup_cause = EXCLUDED.hangup_cause,
               queued_at = EXCLUDED.queued_at, answered_at = EXCLUDED.answered_at,
               ended_at = EXCLUDED.ended_at, hold_time_s = EXCLUDED.hold_time_s,
               talk_time_s = EXCLUDED.talk_time_s, close_reason = EXCLUDED.close_reason,
               updated_at = now()""",
        call.linkedid, call.caller_num[:64], norm.national if norm else "", call.caller_name[:200], customer_id,
        call.ivr_choice[:32], call.outage_id[:64], call.queue[:64], call.agent[:64], str(call.state.value),
        call.outcome, call.hangup_cause, _ts(call.started_at), _ts(call.queued_at), _ts(call.answered_at),
        _ts(call.ended_at), call.hold_time or None, call.talk_time or None,
        getattr(call, "close_reason", "")[:64])


class CallRecorder:
    """Writes the call row when the call reaches a milestone (queued,
    answered, ended), not on every event."""

    MILESTONES = ("queued", "connected", "ended")

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._last: dict[str, tuple] = {}

    async def __call__(self, event: DomainEvent, call: Call | None) -> None:
        if call is None:
            return
        key = (call.state, call.outcome, call.agent, call.queue)
        if call.state.value not in self.MILESTONES and not isinstance(
                event, (AgentCompleted, AgentConnected, CallerAbandoned)):
            return
        if self._last.get(call.linkedid) == key:
            return
        self._last[call.linkedid] = key
        if call.state.value == "ended":
            self._last.pop(call.linkedid, None)
        async with self.pool.acquire() as conn:
            await upsert_call(conn, call)


class ScreenPopService:
    def __init__(self, pool: asyncpg.Pool, hub: Hub, recent_limit: int = 5) -> None:
        self.pool = pool
        self.hub = hub
        self.recent_limit = recent_limit
        self.pops = 0
        self.failures = 0

    async def __call__(self, event: DomainEvent, call: Call | None) -> None:
        if isinstance(event, AgentCalled):
            await self.on_agent_called(event, call)
        elif isinstance(event, AgentConnected):
            await self.on_agent_connected(event)
        elif isinstance(event, AgentRingNoAnswer):
            await self._withdraw(event.linkedid, "no_answer", agent=event.agent)
        elif call is not None and call.ended and isinstance(event, (ChannelHungUp, CallerAbandoned)):
            await self.on_call_ended(call)
        elif isinstance(event, CallResynced) and call is not None and call.ended:
            # the call ended while the AMI link was down
            await self.on_call_ended(call, reason="ended_while_disconnected")

    async def on_agent_connected(self, event: AgentConnected) -> None:
        self.hub.publish(f"agent:{event.agent}", {"type": "call_state", "linkedid": event.linkedid,
                                                   "state": "connected"})
        await self._withdraw(event.linkedid, "answered_elsewhere", except_agent=event.agent)

    async def on_call_ended(self, call: Call, reason: str = "caller_hung_up") -> None:
        if call.agent:
            self.hub.publish(f"agent:{call.agent}", {"type": "call_state", "linkedid": call.linkedid,
                                                      "state": "ended", "outcome": call.outcome})
        if call.outcome != "answered":
            await self._withdraw(call.linkedid, reason)

    async def _withdraw(self, linkedid: str, reason: str, *, agent: str | None = None,
                        except_agent: str | None = None) -> None:
        async with self.pool.acquire() as conn:
            agents = await orders.cancel_drafts(conn, linkedid, agent=agent, except_agent=except_agent)
        for a in agents:
            self.hub.publish(f"agent:{a}", {"type": "screen_pop_withdrawn", "linkedid": linkedid,
                                            "reason": reason})

    async def on_agent_called(self, event: AgentCalled, call: Call | None) -> dict[str, Any]:
        t0 = time.perf_counter()
        agent = event.agent
        # the customer's number is on the caller channel; the member channel says 'enter-queue'
        caller_num = (call.caller_num if call and call.caller_num else event.chan.caller_num)
        caller_name = (call.caller_name if call and call.caller_name else event.chan.caller_name)
        ivr_choice = (call.ivr_choice if call and call.ivr_choice else event.chan.var("IVR_CHOICE"))
        outage_id = (call.outage_id if call and call.outage_id else event.chan.var("OUTAGE_ID"))
        norm = normalise_phone(caller_num)
        message: dict[str, Any] = {
            "type": "screen_pop",
            "linkedid": event.linkedid,
            "uniqueid": event.uniqueid,
            "queue": event.queue,
            "agent": agent,
            "caller_num": caller_num,
            "caller_name": caller_name,
            "ivr_choice": ivr_choice,
            "customer": None,
            "recent_orders": [],
            "order": None,
        }
        try:
            async with self.pool.acquire() as conn:
                customer = None
                account = event.chan.var("CUSTOMER_ID") or (call.customer_id if call else "")
                if account:  # the IVR identified the account (e.g. typed in by DTMF)
                    customer = await customer_repo.get_by_account(conn, account)
                if customer is None and norm is not None:
                    found = await customer_repo.find_by_phone(conn, caller_num)
                    customer = found[0] if found else None
                cust = customer.to_dict() if customer is not None else None
                recent = await orders.recent_orders(
                    conn, customer_id=cust["id"] if cust else None, phone=norm.national if norm else "",
                    limit=self.recent_limit, exclude_linkedid=event.linkedid)
                fields = build_draft_fields(DraftRequest(
                    linkedid=event.linkedid, agent=agent, queue=event.queue, caller_num=caller_num,
                    caller_num_norm=norm.national if norm else "", caller_name=caller_name,
                    ivr_choice=ivr_choice, outage_id=outage_id, customer=cust, recent_orders=tuple(recent)))
                async with conn.transaction():
                    if call is not None:
                        await upsert_call(conn, call, cust["id"] if cust else None)
                    order, created = await orders.create_draft(conn, fields)
            message.update(customer=cust, recent_orders=[r.to_dict() for r in recent], order=order)
        except Exception as exc:  # database trouble must not cost the agent the caller's number
            self.failures += 1
            log.error("screen_pop_degraded", error=f"{type(exc).__name__}: {exc}")
            message["error"] = "工单库暂不可用,已显示来电号码 / work-order store unavailable"
        self.pops += 1
        message["elapsed_ms"] = round((time.perf_counter() - t0) * 1000, 2)
        delivered = self.hub.publish(f"agent:{agent}", message)
        log.info("screen_pop_sent", delivered=delivered, order_no=(message["order"] or {}).get("order_no"),
                 known_customer=message["customer"] is not None)
        return message

"""Surge mode's callback requests: the IVR's ``on_callback`` hook makes a
work order (``tickets.repository.create_callback_request``) and counts it
on the wallboard."""
from __future__ import annotations

from typing import Any, Callable

from cti.logs import get_logger
from tickets import repository as orders
from tickets.model import order_type_for_ivr_choice

log = get_logger("hotline.wallboard")


def ivr_hooks(get_pool: Callable[[], Any], get_wallboard: Callable[[], Any]):
    """``(surge_active, on_callback)`` for :func:`ivr.agi.start_agi_server`.
    Both look the services up when called: the IVR starts before them."""

    def surge_active() -> bool:
        wb = get_wallboard()
        return bool(wb is not None and wb.surge_active())

    async def on_callback(req) -> str:
        pool = get_pool()
        async with pool.acquire() as conn:
            async with conn.transaction():
                order = await orders.create_callback_request(
                    conn, order_type=order_type_for_ivr_choice(req.queue), ivr_choice=req.queue,
                    caller_num=req.raw_callerid, caller_num_norm=req.caller_num or "",
                    account_no=req.customer_id or "", outage_id=req.outage_id or "")
        log.info("callback_order_created", order_no=order["order_no"], queue=req.queue,
                 customer_id=req.customer_id)
        wb = get_wallboard()
        if wb is not None:
            wb.callback_requested()
        return order["order_no"]

    return surge_active, on_callback


__all__ = ["ivr_hooks"]

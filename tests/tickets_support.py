"""Shared helpers of the work-order loop tests: customers, drafts, a fake clock."""
from __future__ import annotations

import itertools
from datetime import datetime, timedelta

from cti.workdays import CHINA_TZ
from tickets import repository
from tickets.model import DraftRequest, build_draft_fields
from tickets.workflow import TicketSettings, Workflow

_seq = itertools.count(1)


class Clock:
    def __init__(self, start: datetime):
        self.t = start

    def __call__(self) -> datetime:
        return self.t

    def advance(self, **kw) -> datetime:
        self.t += timedelta(**kw)
        return self.t


def cst(y, m, d, hh=10, mm=0, ss=0):
    return datetime(y, m, d, hh, mm, ss, tzinfo=CHINA_TZ)


def workflow_at(start: datetime, **settings) -> tuple[Workflow, Clock]:
    clock = Clock(start)
    return Workflow(TicketSettings(clock=clock, **settings)), clock


async def add_customer(conn, *, name="张三", transformer_area="才湾2号台区", feeder="10kV才湾线", village="南一村",
                       area_class="town", phone=None, **flags) -> dict:
    n = next(_seq)
    phone = phone or f"1380013{n:04d}"
    row = await conn.fetchrow(
        """INSERT INTO customers (account_no, name, address, transformer_area, feeder, village, area_class,
               dedicated_transformer, large_customer, sensitive, high_rise)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING *""",
        f"31000{n:05d}", name, f"{village}{n}号", transformer_area, feeder, village, area_class,
        flags.get("dedicated_transformer", False), flags.get("large_customer", False),
        flags.get("sensitive", False), flags.get("high_rise", False))
    await conn.execute("INSERT INTO customer_phones (customer_id, phone) VALUES ($1, $2)", row["id"], phone)
    d = dict(row)
    d.pop("created_at"), d.pop("updated_at")
    d["phones"] = [phone]
    return d


async def draft(conn, customer: dict | None = None, *, ivr_choice="repair", agent="1001", phone=None) -> dict:
    n = next(_seq)
    num = phone or (customer["phones"][0] if customer else f"1391234{n:04d}")
    fields = build_draft_fields(DraftRequest(
        linkedid=f"1700000000.{n}", agent=agent, queue=ivr_choice, caller_num=num, caller_num_norm=num,
        caller_name=customer["name"] if customer else "", ivr_choice=ivr_choice, customer=customer))
    await conn.execute("INSERT INTO calls (linkedid, caller_num) VALUES ($1, $2)", fields["linkedid"], num)
    order, _ = await repository.create_draft(conn, fields)
    return order


async def accepted(conn, wf: Workflow, customer: dict | None = None, *, order_type="repair",
                   description="家里停电了", merge=True, **extra) -> dict:
    """A draft saved by the agent (the screen-pop's save)."""
    from tickets.model import validate_completion
    o = await draft(conn, customer, ivr_choice=order_type if order_type in ("repair", "complaint", "enquiry") else "")
    data = {"order_type": order_type, "contact_name": o["contact_name"] or "来电人",
            "contact_phone": o["contact_phone"], "address": o["address"] or "城关镇解放路1号",
            "transformer_area": o["transformer_area"], "description": description, "version": o["version"], **extra}
    clean = validate_completion(data, categories=wf.settings.categories if "category" in extra else None)
    await repository.save_order(conn, o["id"], clean, workflow=wf, actor=o["agent"], merge=merge)
    return await wf.get(conn, o["id"])

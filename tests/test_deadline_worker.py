"""The deadline worker on a real PostgreSQL: durable rows survive a restart,
two workers never fire one deadline twice, notifier failures are harmless."""
import asyncio
import json

from tickets.worker import DeadlineWorker, start_deadline_worker

from .tickets_support import accepted, add_customer, cst, workflow_at


async def _events(pool, kind):
    async with pool.acquire() as conn:
        return await conn.fetch("SELECT * FROM work_order_events WHERE event = $1 ORDER BY id", kind)


async def test_deadline_loop_survives_a_restart(pool):
    wf, clock = workflow_at(cst(2026, 10, 8, 9, 0))
    async with pool.acquire() as conn:
        o = await accepted(conn, wf, await add_customer(conn))   # dispatch due 09:05, warn 09:03
    got = []
    first = DeadlineWorker(pool, got.append, workflow=wf, worker_id="node-a")
    clock.advance(minutes=1)
    assert await first.run_once() == []
    clock.advance(minutes=3)                                     # 09:04: warn
    fired = await first.run_once()
    assert [(e["type"], e["kind"]) for e in fired] == [("SlaWarning", "dispatch")]
    assert got == fired and got[0]["order_no"] == o["order_no"]
    del first                                                     # the process dies

    clock.advance(minutes=2)                                      # 09:06: a new process
    second = DeadlineWorker(pool, got.append, workflow=wf, worker_id="node-b")
    fired = await second.run_once()
    assert [(e["type"], e["kind"]) for e in fired] == [("SlaBreached", "dispatch")]
    assert await second.run_once() == []
    async with pool.acquire() as conn:
        row = await conn.fetchrow("SELECT * FROM work_order_deadlines WHERE order_id = $1 AND kind = 'dispatch'",
                                  o["id"])
        assert row["state"] == "breached" and row["fired_by"] == "node-b" and row["warned_at"] is not None
    breached = await _events(pool, "SlaBreached")
    assert len(breached) == 1 and json.loads(breached[0]["payload"])["kind"] == "dispatch"
    # the late dispatch still meets the deadline (late: met_at > due_at), and the breach stays on record
    async with pool.acquire() as conn:
        o = await wf.get(conn, o["id"])
        await wf.act(conn, o["id"], "dispatch", {"department": "抢修班", "assignee": "王", "assignee_phone": "139"},
                     actor="1001", version=o["version"])
        row = await conn.fetchrow("SELECT * FROM work_order_deadlines WHERE order_id = $1 AND kind = 'dispatch'",
                                  o["id"])
        assert row["state"] == "met" and row["met_at"] > row["due_at"] and row["breached_at"] is not None


async def test_two_workers_running_concurrently_never_fire_one_deadline_twice(pool):
    wf, clock = workflow_at(cst(2026, 10, 8, 9, 0))
    async with pool.acquire() as conn:
        for i in range(40):
            await accepted(conn, wf, await add_customer(conn, transformer_area=f"T{i}", feeder=f"F{i}"))
    clock.advance(hours=3)          # every dispatch (5 min) and arrival (30 min) deadline has passed
    a = DeadlineWorker(pool, workflow=wf, batch=7, worker_id="a")
    b = DeadlineWorker(pool, workflow=wf, batch=7, worker_id="b")
    results = await asyncio.gather(a.run_once(), b.run_once(), a.run_once(), b.run_once())
    fired = [e for r in results for e in r]
    assert len(fired) == 80
    assert len({e["deadline_id"] for e in fired}) == 80
    assert {e["type"] for e in fired} == {"SlaBreached"}
    async with pool.acquire() as conn:
        dup = await conn.fetchval(
            """SELECT count(*) FROM (SELECT payload->>'deadline_id' FROM work_order_events WHERE event = 'SlaBreached'
               GROUP BY 1 HAVING count(*) > 1) x""")
        assert dup == 0
        assert await conn.fetchval("SELECT count(*) FROM work_order_deadlines WHERE state = 'breached'") == 80
        by = {r["fired_by"]: r["n"] for r in await conn.fetch(
            "SELECT fired_by, count(*) AS n FROM work_order_deadlines GROUP BY 1")}
        assert sum(by.values()) == 80


async def test_a_failing_notifier_does_not_stop_the_loop_and_the_loop_starts_and_stops(pool):
    wf, clock = workflow_at(cst(2026, 10, 8, 9, 0))
    async with pool.acquire() as conn:
        await accepted(conn, wf, await add_customer(conn))
    clock.advance(hours=1)
    seen = []

    async def notifier(event):
        seen.append(event["type"])
        raise RuntimeError("websocket gone")

    worker = await start_deadline_worker(pool, notifier, workflow=wf, interval=0.05)
    for _ in range(100):
        if len(seen) >= 2:
            break
        await asyncio.sleep(0.05)
    await worker.stop()
    assert seen == ["SlaBreached", "SlaBreached"]         # dispatch and arrival, once each


async def test_the_worker_retries_crew_messages_left_in_the_outbox(pool):
    wf, clock = workflow_at(cst(2026, 10, 8, 9, 0))

    class Flaky:
        name = "flaky"

        def __init__(self):
            self.calls = 0

        async def send(self, message):
            self.calls += 1
            if self.calls == 1:
                raise ConnectionError("SMS gateway down")

    async with pool.acquire() as conn:
        o = await accepted(conn, wf, await add_customer(conn))
        await wf.act(conn, o["id"], "dispatch", {"department": "抢修班", "assignee": "王", "assignee_phone": "139"},
                     actor="1001", version=o["version"])
    flaky = Flaky()
    worker = DeadlineWorker(pool, workflow=wf, messenger=flaky)
    await worker.run_once()          # first send fails: stays pending
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT status, attempts, last_error FROM crew_messages ORDER BY id")
        assert rows[0]["status"] == "pending" and "gateway" in rows[0]["last_error"]
    await worker.run_once()
    async with pool.acquire() as conn:
        assert [r["status"] for r in await conn.fetch("SELECT status FROM crew_messages ORDER BY id")] == ["sent", "sent"]

"""Storm: the PBX simulator plays a surge against the whole service.

Three processes, so that the service is measured alone:

* this process runs the **service** (aiohttp app, AMI client, pipeline,
  screen-pops, wallboard, cluster bus, FastAGI server) exactly as
  ``python -m cti serve`` composes it, against PostgreSQL (embedded pgserver
  in a temporary directory unless ``DATABASE_URL`` is set);
* a child process (``--loadgen``) runs the simulated Asterisk (AMI over real
  TCP) and the traffic, and writes Asterisk's CDR rows as ``cdr_pgsql``
  would;
* another child (``--clients``) runs one websocket client per agent, each
  logged in as that agent over HTTP (apart from the simulator, so that a busy
  simulator does not delay the arrival stamps).

Latency is taken across the processes with ``time.perf_counter()``
(CLOCK_MONOTONIC, one clock for the machine): the simulator stamps the
moment it writes an AgentCalled frame to the socket (by Linkedid + agent),
the agent's client stamps the screen_pop frame's arrival.

Traffic: ``--rate`` new calls/s for ``--seconds``; ``--area-share`` (60 %)
of them from one outage area (those callers are known customers of that
台区, carry its OUTAGE_ID and go to the repair queue); ``--abandon`` of them
hang up in the queue; ``--known`` of the others are known customers.

``--live-calls N`` (memory mode): N callers are put in the queues and stay
there (no agent free for them) while the normal storm runs on; the service's
RSS is read when all N are live.  Afterwards they all hang up and are
counted in the loss check like every other call.

Printed: screen-pop latency p50/p90/p99/max, events/s, work orders/s, the
service's CPU per event, PostgreSQL's CPU, peak RSS of each process (and the
service's at the live-calls plateau), AMI reconnects and backpressure
pauses, and the loss checks: every simulated call exactly one closed call
record with its true outcome, every answered call exactly one screen-pop at
its agent, no duplicate.  The last
two lines are ``screenpop_p99_ms=<value>`` and ``lost=<count>``.

    .venv/bin/python bench/storm.py                              # 50 calls/s for 60 s
    .venv/bin/python bench/storm.py --rate 200 --seconds 30 --agents 700
    .venv/bin/python bench/storm.py --rate 20 --seconds 30 --live-calls 10000
    .venv/bin/python bench/storm.py --profile /tmp/storm.prof    # cProfile of the service
    .venv/bin/python bench/storm.py --rate 200 --service-cpus 0-1 --others-cpus 2-5   # no CPU shared
    .venv/bin/python bench/storm.py --rate 100 --seconds 30 --agents 700 --repeat 5   # medians of 5 runs

With ``--repeat N`` the last two lines are the median p99 of the N runs and
the calls lost in all of them together.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cti.aio import run as aio_run  # noqa: E402  (uvloop when installed, as the service)

QUEUES = ("repair", "complaint", "enquiry")
AREA = "才湾2号台区"
AREA_OUTAGE = "STORM-AREA-1"
SIM_USER, SIM_SECRET = "storm", "storm-secret-0123"


def percentile(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    k = min(len(xs) - 1, max(0, int(round(p / 100 * (len(xs) - 1)))))
    return xs[k]


def cpu_list(text: str) -> set[int]:
    """``"0"``, ``"2-3"``, ``"0,2-3"`` -> the CPU numbers (taskset's list syntax)."""
    cpus: set[int] = set()
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    if not cpus or not cpus <= os.sched_getaffinity(0):
        raise argparse.ArgumentTypeError(f"CPUs {text!r}: this machine offers {_cpus(os.sched_getaffinity(0))}")
    return cpus


def _cpus(cpus) -> str:
    return ",".join(str(c) for c in sorted(cpus))


def rss_now_mb() -> float:
    """Current resident set (VmRSS) of this process."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def postgres_cpu_s() -> float:
    """CPU seconds of every postgres process on this machine so far (ended
    backends are lost, so read it often enough -- the pool keeps its own)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1: stat.rindex(")")]
        if comm.startswith("postgres"):
            fields = stat[stat.rindex(")") + 2:].split()
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def agent_ids(n: int) -> list[str]:
    return [str(2001 + i) for i in range(n)]


def customer_numbers(n: int) -> list[str]:
    return [f"139{i:08d}" for i in range(n)]


def write_customers_csv(path: Path, n: int) -> None:
    """``n`` customers; the first 60 % in the outage's 台区."""
    head = "户号,户名,联系电话,用电地址,台区,线路,村/街道,区域类别,客户类别,专变用户,大客户,敏感客户,高层住宅\n"
    rows = []
    for i, phone in enumerate(customer_numbers(n)):
        area = AREA if i < n * 0.6 else f"城东{i % 40}号台区"
        rows.append(f"{5100000000 + i},客户{i},{phone},全州县才湾镇{i}号,{area},10kV才湾线,才湾村,"
                    f"{'农村' if i % 3 else '城市'},居民,否,否,否,否\n")
    path.write_text(head + "".join(rows), encoding="utf-8")


# =========================================================== load generator
async def _pipes():
    """JSON lines with the parent: (say, hear)."""
    out = sys.stdout

    def say(**msg) -> None:
        out.write(json.dumps(msg) + "\n")
        out.flush()

    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader(limit=1 << 24)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)

    async def hear() -> dict:
        line = await stdin.readline()
        if not line:
            raise SystemExit("parent went away")
        return json.loads(line)

    return say, hear


async def loadgen(cfg: dict) -> None:
    """Child process: simulated Asterisk + traffic.  Talks to the parent by
    JSON lines on stdin/stdout."""
    import logging

    from cti.simulator import CallSpec, CdrPgsqlWriter, PbxSimulator, load_manager_eventfilters

    if cfg.get("nice"):  # --loadgen-nice: the simulated Asterisk yields the CPU to the service
        os.nice(int(cfg["nice"]))

    logging.disable(logging.WARNING)
    say, hear = await _pipes()
    cdr = CdrPgsqlWriter(cfg["db_url"]) if cfg["cdr"] else None  # as Asterisk's cdr_pgsql: an INSERT per row
    agents = agent_ids(cfg["agents"])
    # the live-calls mode parks callers in a queue no agent serves
    queues_of = {a: list(QUEUES) for a in agents}
    sim = PbxSimulator("127.0.0.1", 0, SIM_USER, SIM_SECRET, speed=cfg["speed"],
                       agents=queues_of | ({"9999": ["parking"]} if cfg["live_calls"] else {}),
                       seed=cfg["seed"], recordings_dir=cfg["recordings_dir"], recording_names="dialplan",
                       cdr_sink=cdr,
                       # what a real Asterisk with the shipped manager.conf sends the CTI
                       event_filters=(load_manager_eventfilters(ROOT / "asterisk-conf" / "manager.conf",
                                                                "hotline-cti") if cfg["eventfilter"] else None))
    written: dict[tuple[str, str], float] = {}

    def on_write(data: bytes) -> None:
        if not data.startswith(b"Event: AgentCalled\r\n"):
            return
        t = time.perf_counter()
        linkedid = agent = ""
        for line in data.split(b"\r\n"):
            if not linkedid and line.startswith(b"Linkedid: "):
                linkedid = line[10:].decode()
            elif line.startswith(b"Interface: "):
                agent = line[11:].decode().removeprefix("Local/").split("@", 1)[0]
        written.setdefault((linkedid, agent), t)

    sim.on_write = on_write
    # MixMonitor leaves a file behind, so the service indexes a real WAV (not
    # a missing one, retried and logged): one short tone, written as bytes
    if cfg["recordings"]:
        import io
        import wave

        buf = io.BytesIO()
        with wave.open(buf, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(8000)
            w.writeframes(bytes(16000))
        blob = buf.getvalue()

        def write_recording(name: str, seconds: float) -> None:
            p = Path(name)
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(blob)

        sim.write_recordings = True
        sim._write_recording = write_recording
    port = await sim.start()
    say(port=port)

    await hear()  # start

    rng = random.Random(cfg["seed"])
    known = customer_numbers(cfg["customers"])
    in_area_numbers = known[: int(len(known) * 0.6)]
    other_numbers = known[int(len(known) * 0.6):]
    free = list(agents)
    rng.shuffle(free)
    results: list[dict] = []
    failures: list[str] = []
    no_agent = 0

    async def one(spec: CallSpec, agent: str | None) -> None:
        try:
            p = await sim.place_call(spec)
            results.append({"linkedid": p.linkedid, "agent": p.agent, "outcome": p.outcome,
                            "queue": p.queue})
        except Exception as exc:
            failures.append(f"{type(exc).__name__}: {exc}")
        finally:
            if agent:
                free.append(agent)

    tasks: list[asyncio.Task] = []

    # memory mode: park live_calls callers first (a queue with one member who
    # is never free), ramped at park_rate calls/s
    parked: list[asyncio.Task] = []
    if cfg["live_calls"]:
        sim._reserve(["9999"])  # the parking member is "busy": nobody is rung
        # they hang up by themselves some seconds after the storm (virtual s)
        hold = (cfg["live_calls"] / cfg["park_rate"] + cfg["seconds"] + 15) * cfg["speed"]
        t0 = time.perf_counter()
        for i in range(cfg["live_calls"]):
            due = t0 + i / cfg["park_rate"]
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            spec = CallSpec(f"138{i:08d}", "", "parking", "", "", agent="", outcome="abandoned",
                            wait_s=hold, ring_order=(), via_ivr=False)
            parked.append(asyncio.create_task(one(spec, None)))
        while sum(1 for t in parked if not t.done()) < cfg["live_calls"] and any(t.done() for t in parked):
            await asyncio.sleep(0.1)
        await asyncio.sleep(2.0)
        say(parked=sum(1 for t in parked if not t.done()), seconds=round(time.perf_counter() - t0, 1))
        await hear()  # the parent has read its RSS

    n_calls = int(cfg["rate"] * cfg["seconds"])
    start = time.perf_counter()
    peak_live = 0
    for i in range(n_calls):
        due = start + i / cfg["rate"]
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        in_area = rng.random() < cfg["area_share"]
        queue = "repair" if in_area else rng.choice(QUEUES)
        abandoned = rng.random() < cfg["abandon"]
        agent = None
        if not abandoned:
            if not free:
                no_agent += 1
                abandoned = True
            else:
                agent = free.pop()
        if in_area and in_area_numbers:
            num = rng.choice(in_area_numbers)
        elif other_numbers and rng.random() < cfg["known"]:
            num = rng.choice(other_numbers)
        else:
            num = f"1{rng.choice('358')}{rng.randrange(10**9):09d}"
        spec = CallSpec(num, "", queue, "", AREA_OUTAGE if in_area else "",
                        agent=agent or "", outcome="abandoned" if abandoned else "answered",
                        ring_s=cfg["ring_s"], talk_s=cfg["talk_s"], wait_s=cfg["ring_s"],
                        ring_order=(), via_ivr=False)
        tasks.append(asyncio.create_task(one(spec, agent)))
        if i % 50 == 0:
            peak_live = max(peak_live, sum(1 for t in tasks[-5000:] if not t.done()))
    sent_s = time.perf_counter() - start
    await asyncio.gather(*tasks)
    await asyncio.gather(*parked)  # the parked callers give up (QueueCallerAbandon, hangup)
    await sim.cdr_flush(60)
    say(traffic_done=True, sent_s=sent_s, n_calls=n_calls, no_agent=no_agent, peak_live=peak_live)
    await hear()  # the parent has drained its pipeline
    await sim.stop()
    if cdr is not None:
        await cdr.close()
    say(results=results, failures=failures, written=[[k[0], k[1], v] for k, v in written.items()],
        sim_rss_mb=peak_rss_mb(), sim_cpu_s=cpu_s())


async def clients(cfg: dict) -> None:
    """Child process: one websocket client per agent, logged in as that
    agent; stamps each screen_pop's arrival.  Kept apart from the simulator
    so that a busy simulator does not delay the stamps."""
    import logging

    import aiohttp

    logging.disable(logging.WARNING)
    say, hear = await _pipes()
    go = await hear()
    base = go["base"]
    agents = agent_ids(cfg["agents"])
    received: dict[tuple[str, str], list[float]] = defaultdict(list)
    in_service: list[float] = []  # the pop's own elapsed_ms (the lookup in the service)
    drafted: dict[tuple[str, str], float] = {}  # when the pop's saved draft (its number) arrived
    pending: set[tuple[str, str]] = set()  # pops that came before their draft
    sessions: list[aiohttp.ClientSession] = []
    sockets = []
    for agent in agents:
        http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))  # a cookie for 127.0.0.1
        sessions.append(http)
        user = f"agent{agent}"
        async with http.post(base + "/api/login", json={"username": user, "password": go["passwords"][agent]}) as r:
            body = await r.json()
            assert r.status == 200, body
        http.headers["X-CSRF-Token"] = body["csrf_token"]
        sockets.append(await http.ws_connect(f"{base}/ws/agent/{agent}", max_msg_size=0))

    async def reader(ws) -> None:
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            t = time.perf_counter()
            if '"screen_pop' not in msg.data[:40]:
                continue
            data = json.loads(msg.data)
            kind = data.get("type")
            key = (data.get("linkedid"), data.get("agent"))
            if kind == "screen_pop":
                received[key].append(t)
                in_service.append(data.get("elapsed_ms") or 0.0)
                if data.get("order") is not None:
                    drafted.setdefault(key, t)
                elif data.get("order_pending"):
                    pending.add(key)
            elif kind == "screen_pop_update" and data.get("order"):
                drafted.setdefault(key, t)

    readers = [asyncio.create_task(reader(ws)) for ws in sockets]
    say(ready=True)
    await hear()  # finish
    await asyncio.sleep(1.0)  # last frames in flight
    for ws in sockets:
        await ws.close()
    for t in readers:
        t.cancel()
    for s in sessions:
        await s.close()
    say(received=[[k[0], k[1], v] for k, v in received.items()], in_service=in_service,
        drafted=[[k[0], k[1], v] for k, v in drafted.items()], pending=[list(k) for k in pending],
        clients_rss_mb=peak_rss_mb(), clients_cpu_s=cpu_s())


# ================================================================= service
async def run(args) -> int:
    import logging

    import asyncpg
    from aiohttp import web

    from cti.app import build_app, demo_config, manager_key, pipeline_key, services_key
    from cti.auth import Role, auth_store_key, make_hasher
    from cti.config import load_config
    from cti.logs import setup_logging

    setup_logging("WARNING", json=True, stream=sys.stderr)  # per-call INFO logs would dominate the measurement
    logging.disable(logging.WARNING)
    if args.others_cpus:  # inherited by what this process starts: PostgreSQL and the two children
        os.sched_setaffinity(0, args.others_cpus)
    embedded = None
    db_url = os.environ.get("DATABASE_URL")
    if not db_url:
        import pgserver

        pgdir = tempfile.mkdtemp(prefix="hotline-storm-pg-")
        embedded = pgserver.get_server(pgdir, cleanup_mode="delete")
        db_url = embedded.get_uri()
    if args.async_commit:  # experiment: is the commit's WAL flush what the pops wait for?
        c = await asyncpg.connect(db_url)
        await c.execute("ALTER SYSTEM SET synchronous_commit = off")
        await c.execute("SELECT pg_reload_conf()")
        await c.close()

    lg_cfg = {"agents": args.agents, "speed": args.speed, "seed": args.seed, "rate": args.rate,
              "seconds": args.seconds, "area_share": args.area_share, "abandon": args.abandon,
              "ring_s": args.ring_s, "talk_s": args.talk_s, "customers": args.customers, "known": args.known,
              "live_calls": args.live_calls, "park_rate": args.park_rate}
    state = tempfile.mkdtemp(prefix="hotline-storm-")
    lg_cfg["recordings_dir"] = str(Path(state) / "recordings")
    lg_cfg["recordings"] = not args.no_recordings
    lg_cfg["eventfilter"] = not args.no_eventfilter
    lg_cfg["db_url"] = db_url  # the simulator writes Asterisk's CDR rows there
    lg_cfg["cdr"] = not args.no_cdr
    lg_cfg["nice"] = args.loadgen_nice
    async def spawn(role: str):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(Path(__file__).resolve()), role, json.dumps(lg_cfg),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, limit=1 << 28)

        async def hear() -> dict:
            line = await proc.stdout.readline()
            if not line:
                raise SystemExit(f"{role} exited ({await proc.wait()})")
            return json.loads(line)

        def tell(**msg) -> None:
            proc.stdin.write((json.dumps(msg) + "\n").encode())

        return proc, hear, tell

    child, hear, tell = await spawn("--loadgen")
    clients_proc, c_hear, c_tell = await spawn("--clients")
    port = (await hear())["port"]
    if args.service_cpus:  # the service itself (and the threads it starts from here on)
        os.sched_setaffinity(0, args.service_cpus)
    from dataclasses import replace

    cfg = demo_config(load_config(env={}, http_port=0, state_dir=state, log_level="WARNING", log_json=True,
                                  db_pool_max=args.pool, node_id="storm",
                                  **({"db_pop_pool": args.pop_pool} if args.pop_pool is not None else {})))
    cfg = replace(cfg, ami_port=port, ami_username=SIM_USER, ami_secret=SIM_SECRET)
    app = build_app(cfg, demo=None, dsn=db_url)  # serve mode: the AMI peer is the child's simulator
    app[auth_store_key].hasher = make_hasher(cheap=True)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    manager = app[manager_key]
    for _ in range(500):
        if manager.state == "logged_in":
            break
        await asyncio.sleep(0.02)
    assert manager.state == "logged_in", manager.state
    pipeline = app[pipeline_key]
    pool = app[services_key]["screenpop"].pool

    from cti import customer_repo

    csv = Path(state) / "customers.csv"
    write_customers_csv(csv, args.customers)
    await customer_repo.import_customers_file(pool, csv)
    store = app[auth_store_key]
    passwords = {}
    for agent in agent_ids(args.agents):
        user = f"agent{agent}"
        passwords[agent] = f"pw-{user}-storm-0123456789"
        await store.create_user(user, passwords[agent], Role.AGENT, agent_id=agent, display_name=user,
                                replace=True)
    c_tell(base=base, passwords=passwords)
    await c_hear()  # clients connected
    print(f"storm: {args.rate:g} calls/s for {args.seconds:g} s, {args.agents} agents, speed {args.speed:g}, "
          f"area share {args.area_share:.0%}, abandon {args.abandon:.0%}, live calls {args.live_calls}, "
          f"db={'embedded' if embedded else 'DATABASE_URL'}, eventfilter {'off' if args.no_eventfilter else 'shipped'}, "
          f"loop {type(asyncio.get_running_loop()).__module__.split('.')[0]}; service and load generator in "
          f"separate processes; CPUs: service {_cpus(os.sched_getaffinity(0))}, simulator + clients + "
          f"PostgreSQL {_cpus(args.others_cpus) if args.others_cpus else 'any'} of {os.cpu_count()}"
          f"{f'; simulator at nice {args.loadgen_nice}' if args.loadgen_nice else ''}",
          flush=True)
    rss_before = rss_now_mb()
    profiler = None
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    conn = await asyncpg.connect(db_url)
    orders0 = await conn.fetchval("SELECT count(*) FROM work_orders")
    events0, t0, epoch0 = pipeline.stats.events, time.perf_counter(), time.time()
    cpu0 = cpu_s()
    pg0 = postgres_cpu_s()
    tell(start=True)

    samples: list[tuple[float, int, int, float]] = []
    lag = [0.0]

    async def lag_probe() -> None:  # how late the loop runs a 5 ms timer: the longest stretch without a yield
        while True:
            t = time.perf_counter()
            await asyncio.sleep(0.005)
            lag[0] = max(lag[0], time.perf_counter() - t - 0.005)

    probing = asyncio.create_task(lag_probe())
    import gc

    gc_pauses: list[tuple[int, float]] = []  # (generation, seconds) of each collection in the service
    gc_t = [0.0]

    def gc_timer(phase: str, info: dict) -> None:
        if phase == "start":
            gc_t[0] = time.perf_counter()
        else:
            gc_pauses.append((info["generation"], time.perf_counter() - gc_t[0]))

    gc.callbacks.append(gc_timer)
    slow: list[str] = []
    if args.debug_loop:  # which callbacks hold the loop (asyncio debug mode; slows everything a little)
        import logging as _logging

        class _Slow(_logging.Handler):
            def emit(self, record):
                slow.append(record.getMessage())

        _logging.disable(_logging.NOTSET)
        alog = _logging.getLogger("asyncio")
        alog.addHandler(_Slow())
        alog.propagate = False
        loop = asyncio.get_running_loop()
        loop.slow_callback_duration = 0.02
        loop.set_debug(True)

    async def sampler() -> None:  # where a backlog builds: the ordered worker or the per-call shards
        last = cpu_s()
        while True:
            await asyncio.sleep(1.0)
            now = cpu_s()
            samples.append((time.perf_counter() - t0, pipeline._queue.qsize(),
                            sum(q.qsize() for q in pipeline._shards), now - last, lag[0]))
            last, lag[0] = now, 0.0

    sampling = asyncio.create_task(sampler())

    plateau = None
    msg = await hear()
    if "parked" in msg:
        await pipeline.drain()
        tracked = len(pipeline.tracker.calls) if hasattr(pipeline.tracker, "calls") else -1
        plateau = {"parked": msg["parked"], "rss": rss_now_mb(), "tracked": tracked, "seconds": msg["seconds"]}
        print(f"live calls: {msg['parked']} callers waiting in the service's model "
              f"(ramp {msg['seconds']} s); service RSS now {plateau['rss']:.0f} MB (before the storm "
              f"{rss_before:.0f} MB)", flush=True)
        tell(ok=True)
        msg = await hear()
    done = msg
    await pipeline.drain()
    if manager.logins > 1:  # the link dropped: the resync's CDR pass, now rather than at its 30 s recheck
        resync = app[services_key]["resync"]
        if resync.cdr is not None:
            await resync.cdr_pass(epoch0 - 5)
            await pipeline.drain()
    await asyncio.sleep(1.0)  # last screen-pops in flight to the clients
    await pipeline.drain()
    elapsed = time.perf_counter() - t0
    sampling.cancel()
    probing.cancel()
    gc.callbacks.remove(gc_timer)
    if args.debug_loop:
        asyncio.get_running_loop().set_debug(False)
        import collections
        import re as _re

        kinds = collections.Counter(_re.sub(r"0x[0-9a-f]+|\d+\.\d+ seconds|id=\d+", "", m)[:160] for m in slow)
        for k, n in kinds.most_common(12):
            print(f"  slow callback x{n}: {k}")
    if args.verbose:
        for t, q0, qs, c, lg in samples:
            print(f"  t={t:5.1f}s ordered queue {q0:6d}  shard queues {qs:6d}  service CPU {c:.0%}  "
                  f"loop lag max {lg * 1000:.0f} ms")
    cpu = cpu_s() - cpu0
    pg_cpu = postgres_cpu_s() - pg0
    events = pipeline.stats.events - events0
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(args.profile)
    orders = await conn.fetchval("SELECT count(*) FROM work_orders") - orders0
    rss_service = peak_rss_mb()
    tell(finish=True)
    final = await hear()
    c_tell(finish=True)
    final.update(await c_hear())
    await child.wait()
    await clients_proc.wait()

    # --- loss checks
    results = final["results"]
    linkedids = [r["linkedid"] for r in results]
    rows = await conn.fetch("SELECT linkedid, count(*) AS n, bool_and(ended_at IS NOT NULL) AS closed, "
                            "min(outcome) AS outcome FROM calls WHERE linkedid = ANY($1) GROUP BY linkedid",
                            linkedids)
    recorded = {r["linkedid"]: r["n"] for r in rows}
    open_calls = sum(1 for r in rows if not r["closed"])
    want = {r["linkedid"]: ("answered" if r["outcome"] in ("answered", "caller_hangup") else "abandoned")
            for r in results}
    wrong_outcome = sum(1 for r in rows if r["closed"] and r["outcome"] != want.get(r["linkedid"]))
    missing_records = sum(1 for lid in linkedids if recorded.get(lid, 0) != 1)
    received = {(a, b): [] for a, b, _ in final["received"]}
    for a, b, ts in final["received"]:
        received[(a, b)] = ts
    written = {(a, b): t for a, b, t in final["written"]}
    answered = [(r["linkedid"], r["agent"]) for r in results
                if r["outcome"] in ("answered", "caller_hangup") and r["agent"]]
    pop_loss = sum(1 for key in answered if len(received.get(key, ())) != 1)
    extra_pops = sum(len(v) - 1 for v in received.values() if len(v) > 1)
    drafted = {(a, b): t for a, b, t in final["drafted"]}
    missing_drafts = sum(1 for key in answered if key in received and key not in drafted)
    await conn.close()
    lat = [(received[k][0] - written[k]) * 1000 for k in answered if k in written and received.get(k)]
    lat_draft = [(drafted[k] - written[k]) * 1000 for k in answered if k in written and k in drafted]
    sp = app[services_key]["screenpop"]
    handler_errors = pipeline.stats.handler_errors
    await runner.cleanup()
    if embedded is not None:
        embedded.cleanup()

    failures = final["failures"]
    for f in failures[:5]:
        print("  call failed:", f, file=sys.stderr)
    lost = missing_records + open_calls + wrong_outcome + pop_loss + len(failures) + extra_pops + missing_drafts
    print(f"calls placed {done['n_calls']} in {done['sent_s']:.1f} s ({done['n_calls'] / done['sent_s']:.1f}/s "
          f"offered), answered {len(answered)}, abandoned {len(results) - len(answered)}, "
          f"no free agent {done['no_agent']}, simulator failures {len(failures)}")
    print(f"peak live calls {done['peak_live']} (storm) + {args.live_calls} parked")
    print(f"screen-pop latency ms (AgentCalled written -> websocket frame received, n={len(lat)}): "
          f"p50 {percentile(lat, 50):.2f}  p90 {percentile(lat, 90):.2f}  p99 {percentile(lat, 99):.2f}  "
          f"max {max(lat) if lat else float('nan'):.2f}  mean {statistics.fmean(lat) if lat else float('nan'):.2f}")
    ins = final["in_service"]
    print(f"  of which in the screen-pop handler (the lookup): p50 {percentile(ins, 50):.2f}  "
          f"p99 {percentile(ins, 99):.2f}")
    print(f"  the saved draft's number on screen (AgentCalled written -> screen_pop_update received, "
          f"n={len(lat_draft)}; {len(final['pending'])} pops came before their draft): p50 "
          f"{percentile(lat_draft, 50):.2f}  p99 {percentile(lat_draft, 99):.2f}")
    print(f"pipeline events {events} in {elapsed:.1f} s = {events / elapsed:.0f} events/s; service CPU "
          f"{cpu:.1f} s = {cpu / elapsed:.0%} of one core ({cpu / max(events, 1) * 1e6:.0f} us per event, "
          f"{cpu / max(len(results), 1) * 1e3:.2f} ms per call, {events / max(len(results), 1):.1f} events per "
          f"call); "
          f"PostgreSQL CPU {pg_cpu:.1f} s")
    print(f"work orders {orders} = {orders / elapsed:.1f} orders/s  (screen-pop failures {sp.failures}, "
          f"handler errors {handler_errors}; pops from the lookup made at queue join {sp.prefetch_hits}, "
          f"such lookups failed {sp.prefetch_failures})")
    print(f"peak RSS: service {rss_service:.0f} MB, simulator {final['sim_rss_mb']:.0f} MB, clients "
          f"{final['clients_rss_mb']:.0f} MB; CPU over the whole run: simulator {final['sim_cpu_s']:.1f} s, "
          f"clients {final['clients_cpu_s']:.1f} s")
    by_gen = {g: [d for gg, d in gc_pauses if gg == g] for g in (0, 1, 2)}
    print("garbage collector in the service: " + ", ".join(
        f"gen{g} x{len(ds)} total {sum(ds) * 1000:.0f} ms longest {max(ds, default=0) * 1000:.1f} ms"
        for g, ds in by_gen.items()), flush=True)
    t_full = time.perf_counter()
    freed = gc.collect()  # what the service's 15-minute sweep (cti/collector.py) would cost now
    print(f"a full collection right after the storm (the service's 15-minute sweep): "
          f"{(time.perf_counter() - t_full) * 1000:.0f} ms, {freed} objects freed", flush=True)
    print(f"AMI logins {manager.logins} (1 = the link never dropped), reads paused for backpressure "
          f"{manager.stats.read_pauses}, frames dropped by the pipeline's bound {pipeline.stats.queue_full}")
    print(f"loss: calls without exactly one record {missing_records}, left open {open_calls}, wrong outcome "
          f"{wrong_outcome}, answered calls "
          f"without exactly one screen-pop {pop_loss}, duplicate pops {extra_pops}, "
          f"pops whose saved draft never arrived {missing_drafts}")
    if plateau is not None:
        print(f"live_calls_rss_mb={plateau['rss']:.1f}  (at {plateau['parked']} live calls)")
    print(f"screenpop_p99_ms={percentile(lat, 99):.2f}")
    print(f"lost={lost}")
    return 0 if lost == 0 else 1


# --- several runs: medians (--repeat) ----------------------------------------
_FIGURES = (  # (label, regular expression on one run's output)
    ("p50 ms", r"screen-pop latency ms .*?: p50 ([0-9.]+)"),
    ("p99 ms", r"^screenpop_p99_ms=([0-9.]+)"),
    ("max ms", r"screen-pop latency ms .*?max ([0-9.]+)"),
    ("lookup p99 ms", r"of which in the screen-pop handler .*?p99 ([0-9.]+)"),
    ("service ms/call", r"service CPU .*?([0-9.]+) ms per call"),
    ("PostgreSQL CPU s", r"PostgreSQL CPU ([0-9.]+) s"),
    ("peak RSS MB", r"peak RSS: service ([0-9.]+) MB"),
    ("live-calls RSS MB", r"^live_calls_rss_mb=([0-9.]+)"),
    ("AMI logins", r"^AMI logins ([0-9]+)"),
    ("lost", r"^lost=([0-9]+)"),
)


def summarise_runs(outputs: list[str]) -> tuple[list[str], float, int]:
    """The figures of several runs' outputs: one line per figure with each
    run's value, the median and the range; returns those lines, the median
    p99 and the lost calls of all runs together (a run that printed no
    ``lost=`` line -- it failed -- counts as one lost)."""
    import re

    lines = []
    p99s: list[float] = []
    lost = 0
    for label, pattern in _FIGURES:
        rx = re.compile(pattern, re.M)
        vals = [float(m.group(1)) if (m := rx.search(out)) else None for out in outputs]
        if label == "lost":
            lost = sum(int(v) if v is not None else 1 for v in vals)
        got = [v for v in vals if v is not None]
        if label == "p99 ms":
            p99s = got
        if not got:
            continue
        each = "  ".join("—" if v is None else f"{v:g}" for v in vals)
        lines.append(f"{label:18} median {statistics.median(got):8.2f}   range {min(got):g}–{max(got):g}   "
                     f"runs: {each}")
    return lines, (statistics.median(p99s) if p99s else float("nan")), lost


def repeat(argv: list[str], n: int) -> int:
    """Run the storm ``n`` times, each in a fresh process with a fresh
    embedded PostgreSQL (seed, seed+1, ...), one after the other; print each
    run's output, then the medians.  The last two lines are the median
    ``screenpop_p99_ms`` and ``lost`` summed over the runs."""
    base = list(argv)
    seed = 1
    if "--seed" in base:
        i = base.index("--seed")
        seed = int(base[i + 1])
        del base[i:i + 2]
    outputs = []
    for k in range(n):
        cmd = [sys.executable, str(Path(__file__).resolve()), *base, "--seed", str(seed + k)]
        print(f"=== run {k + 1} of {n} (seed {seed + k})", flush=True)
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
        print(proc.stdout, end="", flush=True)
        outputs.append(proc.stdout)
    lines, p99, lost = summarise_runs(outputs)
    print(f"=== {n} runs: medians")
    for line in lines:
        print(line)
    print(f"screenpop_p99_ms={p99:.2f}")
    print(f"lost={lost}")
    return 0 if lost == 0 else 1


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] in ("--loadgen", "--clients"):
        aio_run((loadgen if sys.argv[1] == "--loadgen" else clients)(json.loads(sys.argv[2])))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=float, default=50.0, help="new calls per second (default 50)")
    ap.add_argument("--seconds", type=float, default=60.0, help="surge length (default 60)")
    ap.add_argument("--agents", type=int, default=200, help="agents, each with a websocket client (default 200)")
    ap.add_argument("--speed", type=float, default=10.0, help="simulator time compression (default 10)")
    ap.add_argument("--ring-s", type=float, default=2.0, help="virtual ring/wait seconds (default 2)")
    ap.add_argument("--talk-s", type=float, default=20.0, help="virtual talk seconds (default 20)")
    ap.add_argument("--area-share", type=float, default=0.6, help="share of calls from the outage area")
    ap.add_argument("--abandon", type=float, default=0.1, help="share of callers hanging up in the queue")
    ap.add_argument("--customers", type=int, default=5000, help="customers in the database (default 5000)")
    ap.add_argument("--known", type=float, default=0.7, help="share of other callers who are known customers")
    ap.add_argument("--live-calls", type=int, default=0, help="memory mode: callers parked in a queue first")
    ap.add_argument("--park-rate", type=float, default=500.0, help="calls/s while parking (default 500)")
    ap.add_argument("--pool", type=int, default=20, help="database pool size")
    ap.add_argument("--pop-pool", type=int, default=None,
                    help="connections kept for the screen-pops (default: the service's default)")
    ap.add_argument("--profile", default="", help="write a cProfile of the service's storm to this file")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--service-cpus", type=cpu_list, default=None, metavar="LIST",
                    help="pin the service to these CPUs (e.g. 0-3; default: any)")
    ap.add_argument("--others-cpus", type=cpu_list, default=None, metavar="LIST",
                    help="pin the simulator, the clients and the embedded PostgreSQL to these CPUs (e.g. 4-7), "
                         "so that the service's figures are not the load generator's CPU contention")
    ap.add_argument("--async-commit", action="store_true",
                    help="experiment: synchronous_commit=off on the server (not how the service runs)")
    ap.add_argument("--debug-loop", action="store_true", help="list the callbacks that hold the loop > 20 ms (runs on asyncio's loop)")
    ap.add_argument("--no-cdr", action="store_true",
                    help="the simulator writes no CDR rows (calls missed during a link drop are then lost)")
    ap.add_argument("--no-eventfilter", action="store_true",
                    help="the simulator sends every event (no manager.conf eventfilter lines)")
    ap.add_argument("--no-recordings", action="store_true",
                    help="the simulator writes no recording files (the indexer finds them missing)")
    ap.add_argument("--loadgen-nice", type=int, default=0, metavar="N",
                    help="run the simulated Asterisk at this niceness (e.g. 10: on a small machine it then takes "
                         "the CPU the service leaves, as if Asterisk ran on its own server; default 0)")
    ap.add_argument("--verbose", action="store_true", help="print the pipeline's backlog every second")
    ap.add_argument("--repeat", type=int, default=1, metavar="N",
                    help="run the storm N times (fresh processes and database each, seeds seed..seed+N-1) "
                         "and end with the medians: the machine is noisy, one run's p99 is not a figure")
    args = ap.parse_args()
    if args.repeat > 1:
        argv = sys.argv[1:]
        i = next(j for j, a in enumerate(argv) if a == "--repeat" or a.startswith("--repeat="))
        del argv[i:i + (1 if "=" in argv[i] else 2)]
        return repeat(argv, args.repeat)
    if args.debug_loop:  # slow-callback reports come from asyncio's own loop (uvloop has none)
        os.environ["HOTLINE_LOOP"] = "asyncio"
    return aio_run(run(args))


if __name__ == "__main__":
    sys.exit(main())

"""Composition root: configuration → database → pipeline → AMI → web.

Every resource lives in an aiohttp ``cleanup_ctx`` generator, so start-up
and shut-down happen in one order and nothing leaks on failure."""
from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
from aiohttp import web

from .ami import HotlineManager, make_manager
from .auth import Role, require
from .config import Config
from .db import POP_POOL_SETTINGS, EmbeddedPostgres, create_pool, migrate, resolve_database_url
from .hub import SUPERVISOR_TOPIC, Hub
from .logs import get_logger
from .pipeline import CallPipeline
from .screenpop import CallRecorder, ScreenPopService
from .web import add_routes, hub_key, pool_key, status_key

log = get_logger("hotline.app")

DEMO_CUSTOMERS = Path(__file__).parent / "data" / "demo_customers.csv"

pipeline_key = web.AppKey("pipeline", CallPipeline)
manager_key = web.AppKey("ami", HotlineManager)
config_key = web.AppKey("config", Config)
services_key = web.AppKey("services", dict)


@dataclass
class DemoOptions:
    agents: dict[str, list[str]] = field(default_factory=lambda: {
        "1001": ["repair", "enquiry"], "1002": ["repair", "complaint"],
        "1003": ["complaint", "enquiry"], "1004": ["enquiry", "repair"]})
    traffic: bool = True
    accounts: bool = True  # create the demo login accounts (random passwords, printed at start)


SHIPPED_MANAGER_CONF = Path(__file__).resolve().parents[1] / "asterisk-conf" / "manager.conf"


def _shipped_event_filters(load) -> list[str] | None:
    """The CTI user's eventfilter lines from the shipped manager.conf: the
    demo's simulated Asterisk sends what a real one configured with it would
    (None when the file is not beside the package, e.g. a wheel install)."""
    if not SHIPPED_MANAGER_CONF.is_file():
        return None
    try:
        return load(SHIPPED_MANAGER_CONF, "hotline-cti") or None
    except (OSError, ValueError) as exc:
        log.warning("shipped_eventfilters_unreadable", error=str(exc))
        return None


def build_app(cfg: Config, *, demo: DemoOptions | None = None, dsn: str | None = None) -> web.Application:
    app = web.Application(client_max_size=256 * 1024)
    app[config_key] = cfg
    app[status_key] = {"mode": "demo" if demo else "serve", "ami": "disconnected"}
    app[hub_key] = Hub()
    app[services_key] = {}
    add_routes(app)
    from .auth import install_auth

    install_auth(app, lambda: app[pool_key])  # deny by default: every route needs require()/public
    from ivr.outage_web import add_outage_routes

    add_outage_routes(app, hook_timeout=10.0)
    from queues.wiring import install_wallboard, ivr_surge_hooks

    wallboard_ctx = install_wallboard(app, cfg, services_key=services_key, pool_key=pool_key, hub_key=hub_key,
                                      status_key=status_key, pipeline_key=pipeline_key, manager_key=manager_key)
    from tickets.routes import add_ticket_routes

    tickets = add_ticket_routes(app)
    # an order changed (dispatched, fed back, ...): the wallboards' deadline
    # lists reload if they show it, so that a met deadline leaves at once
    tickets.on_changed.append(lambda order_id, action: app[hub_key].publish(
        SUPERVISOR_TOPIC, {"type": "order_changed", "order_id": order_id, "action": action}))
    from recordings.wiring import install_recordings

    recordings_ctx = install_recordings(app, cfg, services_key=services_key, pool_key=pool_key,
                                        pipeline_key=pipeline_key)  # issue 7
    from queues.report_routes import add_report_routes

    add_report_routes(app, get_pool=lambda: app[pool_key], threshold_s=cfg.sl_threshold_s)  # /reports (issue 6.3)

    async def database_ctx(app: web.Application):
        embedded: EmbeddedPostgres | None = None
        url = dsn
        if url is None:
            url, embedded = await asyncio.get_running_loop().run_in_executor(
                None, resolve_database_url, cfg.database_url, cfg.state_dir)
        try:
            pool = await create_pool(url, cfg.db_pool_min, cfg.db_pool_max,
                                     server_settings={"hotline.node": cfg.node_id})  # calls.node (cti.cluster)
            app[services_key]["database_url"] = url  # the cluster's LISTEN connection
            async with pool.acquire() as conn:
                await migrate(conn)
            app[pool_key] = pool
            pop_pool = None
            if cfg.db_pop_pool:
                # generic plans: the pop's two statements (find_caller,
                # create_draft) are shaped to plan well without parameter
                # values, and planning them for every pop cost PostgreSQL
                # about 1 ms per pop (bench/storm.py)
                pop_pool = await create_pool(url, cfg.db_pop_pool, cfg.db_pop_pool,
                                             server_settings={"hotline.node": cfg.node_id, **POP_POOL_SETTINGS})
                app[services_key]["pop_pool"] = pop_pool
            yield
            if pop_pool is not None:
                await pop_pool.close()
            await pool.close()
        finally:
            if embedded is not None:
                await asyncio.get_running_loop().run_in_executor(None, embedded.stop)

    async def demo_ctx(app: web.Application):
        if demo is None:
            yield
            return
        from . import customer_repo
        from .simulator import PbxSimulator, load_manager_eventfilters

        result = await customer_repo.import_customers_file(app[pool_key], DEMO_CUSTOMERS)
        log.info("demo_customers_loaded", customers=len(result.customers), errors=len(result.errors))
        if demo.accounts:
            from .auth import auth_store_key, create_demo_accounts

            app[services_key]["demo_accounts"] = await create_demo_accounts(app[auth_store_key], demo.agents)
        agi = app[services_key].get("agi")  # ivr_ctx runs first: calls go through the IVR
        sim = PbxSimulator(cfg.ami_host, cfg.ami_port, cfg.ami_username, cfg.ami_secret,
                           speed=cfg.sim_speed, agents=demo.agents,
                           recordings_dir=cfg.recordings_dir, recording_names="dialplan", write_recordings=True,
                           agi_host=agi.host if agi is not None else None,
                           agi_port=agi.port if agi is not None else None,
                           event_filters=_shipped_event_filters(load_manager_eventfilters))
        port = await sim.start()
        app[status_key]["simulator_port"] = port
        app[services_key]["simulator"] = sim
        app[services_key]["ami_port"] = port
        callers = [(c.phones[0] if c.phones else "", c.name, c.account_no) for c in result.customers]
        callers += [("13912345678", "", ""), ("+8613511112222", "<b>王五</b>", ""), ("", "", "")]
        app[services_key]["demo_callers"] = callers
        yield
        await sim.stop()

    async def traffic_ctx(app: web.Application):
        """Demo traffic starts last, once the AMI link and the IVR are up."""
        traffic = None
        if demo is not None and demo.traffic:
            sim = app[services_key]["simulator"]
            traffic = asyncio.create_task(sim.run_traffic(
                cfg.sim_calls_per_min, abandon_ratio=cfg.sim_abandon_ratio,
                callers=app[services_key]["demo_callers"]))
        yield
        if traffic is not None:
            traffic.cancel()
            try:
                await traffic
            except (asyncio.CancelledError, Exception):
                pass

    async def ivr_ctx(app: web.Application):
        """FastAGI IVR server and the prompt store (outage announcements are
        generated when an outage is published or changed)."""
        from ivr.agi import db_decide, start_agi_server
        from ivr.menu import load_menu
        from ivr.outage_web import outage_hooks_key
        from ivr.tts import outage_prompt_hook, store_for_menu

        menu = load_menu()
        sounds = Path(cfg.sounds_dir)
        store = store_for_menu(menu, sounds, voice=cfg.tts_voice)
        app[services_key]["prompts"] = store
        app[outage_hooks_key].append(outage_prompt_hook(store, app[pool_key]))
        server = await start_agi_server(cfg.agi_host, cfg.agi_port, db_decide(app[pool_key],
                                        area_code=cfg.area_code or None), store, menu,
                                        **ivr_surge_hooks(app, services_key=services_key, pool_key=pool_key))
        app[services_key]["agi"] = server
        app[status_key]["agi_port"] = server.port
        yield
        await server.stop()

    async def pipeline_ctx(app: web.Application):
        pool = app[pool_key]
        pipeline = CallPipeline(max_queue=cfg.pipeline_max_frames)
        pipeline.pause_gc = True  # no collector pauses while a surge's backlog waits (cti/pipeline.py)
        # issue 8.3: writes spooled on local disk while PostgreSQL is unreachable
        from .screenpop import LookupCache, cancel_drafts_record, create_draft_record, upsert_call_row
        from .spool import Spool, SpoolReplayer

        spool = Spool(Path(cfg.state_dir) / "spool", max_records=getattr(cfg, "spool_max_records", 100_000))
        recorder = CallRecorder(pool, spool=spool)
        pipeline.listeners.append(recorder.observe)  # in event order, no await: rows are written in batches
        pipeline.flushers.append(recorder.flush)  # drain() waits for the buffered call rows too
        app[services_key]["call_recorder"] = recorder
        cache = LookupCache(getattr(cfg, "screenpop_cache_size", 20_000))
        try:
            await cache.prewarm(pool, getattr(cfg, "screenpop_cache_prewarm", 2000))
        except Exception as exc:
            log.warning("screenpop_cache_prewarm_failed", error=f"{type(exc).__name__}: {exc}")
        screenpop = ScreenPopService(pool, app[hub_key], cfg.recent_orders_limit, spool=spool, cache=cache,
                                     pop_pool=app[services_key].get("pop_pool"))
        pipeline.add_handler(screenpop)
        pipeline.fast_lane["AgentCalled"] = screenpop.fast_pop
        pipeline.fast_lane["QueueCallerJoin"] = screenpop.prefetch  # looked up while the caller waits
        replayer = SpoolReplayer(spool, pool, {"call": upsert_call_row, "draft": create_draft_record,
                                               "cancel": cancel_drafts_record}, on_applied=screenpop.on_spool_applied)
        app[services_key]["screenpop"] = screenpop
        app[services_key]["spool"] = spool
        app[services_key]["spool_replayer"] = replayer
        app[status_key]["spool"] = spool.counters  # live counters in /health
        app[pipeline_key] = pipeline
        pipeline.start()
        recorder.start()
        replayer.start()
        yield
        await pipeline.stop()
        await recorder.stop()
        await replayer.stop()
        if spool.pending:  # one last try; what stays is replayed at the next start
            try:
                await asyncio.wait_for(replayer.replay_once(), 5)
            except Exception as exc:
                log.warning("spool_left_for_next_start", pending=spool.pending, error=f"{type(exc).__name__}: {exc}")
        spool.close()

    async def ami_ctx(app: web.Application):
        pipeline = app[pipeline_key]
        port = app[services_key].get("ami_port", cfg.ami_port)

        def on_state(state: str) -> None:
            app[status_key]["ami"] = state

        from dataclasses import replace
        manager = make_manager(replace(cfg, ami_port=port), pipeline.feed, on_state)
        app[manager_key] = manager
        manager.frames_read = pipeline.read_ahead  # the screen-pop's fast lane, ahead of the read's other frames
        pipeline.on_backpressure = lambda pressed: manager.set_reading(not pressed)
        from .resync import CdrSource, install_resync

        # what happened while the AMI link was down: Asterisk's CDR (cdr_pgsql → table cdr, migrations/011)
        resync = install_resync(manager, pipeline, cdr=CdrSource(app[pool_key]))
        app[services_key]["resync"] = resync
        app[services_key]["wallboard"].attach(manager, resync.live)
        manager.connect()
        yield
        manager.close()
        await resync.close()

    async def tickets_worker_ctx(app: web.Application):
        """Durable deadlines (SLA warnings and breaches) → supervisors' and agents' pages."""
        from tickets.worker import start_deadline_worker

        hub = app[hub_key]

        def notify(alert) -> None:
            alert = dict(alert)
            msg = {**alert, "type": "sla_alert", "alert": alert.get("type", "")}
            hub.publish(SUPERVISOR_TOPIC, msg)
            agent = alert.get("agent")
            if agent:
                hub.publish(f"agent:{agent}", msg)

        worker = await start_deadline_worker(app[pool_key], notify, workflow=tickets.workflow,
                                             messenger=tickets.messenger)
        app[services_key]["deadline_worker"] = worker
        yield
        await worker.stop()

    async def cluster_ctx(app: web.Application):
        """Other nodes on the same PostgreSQL (cti.cluster): hub fan-out and wallboard totals."""
        import time

        from .cluster import ClusterBus, wallboard_refresher

        wallboard = app[services_key]["wallboard"]
        bus = ClusterBus(app[services_key]["database_url"], cfg.node_id, app[hub_key], app[pool_key],
                         on_calls_changed=wallboard_refresher(app[pool_key], wallboard.board, cfg.node_id,
                                                              time.time(), cfg.sl_threshold_s))
        app[services_key]["call_recorder"].on_written.append(bus.calls_changed)  # rows are in the table
        await bus.start()
        app[services_key]["cluster"] = bus
        yield
        await bus.stop()

    async def gc_ctx(app: web.Application):
        """Everything is up: what start-up made (modules, menus, caches) goes
        out of the collector's sight; the automatic passes are small young
        ones; the older generations are swept every 15 minutes, not during
        a surge (cti/collector.py)."""
        from . import collector
        from .aio import stop_task

        before = collector.install()
        pipeline = app[pipeline_key]
        sweeper = collector.Sweeper(busy=lambda: pipeline.behind or pipeline.gc_paused)
        app[services_key]["gc_sweeper"] = sweeper
        task = asyncio.get_running_loop().create_task(sweeper.run(), name="gc-sweeper")
        yield
        await stop_task(task)
        collector.uninstall(before)

    app.cleanup_ctx.extend([database_ctx, tickets_worker_ctx, ivr_ctx, demo_ctx, pipeline_ctx, recordings_ctx,
                            wallboard_ctx, cluster_ctx, ami_ctx, traffic_ctx, gc_ctx])

    @require(Role.SUPERVISOR)
    async def prompt_status(request: web.Request) -> web.Response:
        store = request.app[services_key].get("prompts")
        if store is None:
            return web.json_response({"error": "not_ready", "message": "语音提示未就绪 / prompts not ready"},
                                     status=503)
        return web.json_response(store.status.to_dict())

    app.router.add_get("/api/ivr/prompts", prompt_status)

    async def close_hub(app: web.Application) -> None:
        await app[hub_key].close()

    app.on_shutdown.append(close_hub)
    return app


async def run(cfg: Config, *, demo: DemoOptions | None = None) -> None:
    app = build_app(cfg, demo=demo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, cfg.http_host, cfg.http_port)
        await site.start()
        url = f"http://{cfg.http_host}:{cfg.http_port}/"
        log.info("http_listening", url=url)
        if demo:
            print(f"\n  966022 demo running — 坐席页面 agent page: {url}agent/1001"
                  f"\n  all agents: {url}   (Ctrl-C to stop)\n", flush=True)
            accounts = app[services_key].get("demo_accounts") or []
            if accounts:
                print(f"  演示账号 demo accounts (login: {url}login; new passwords every start):", flush=True)
                for username, role, password, what in accounts:
                    print(f"    {username:<14} {password:<20} {role:<11} {what}", flush=True)
                print(flush=True)
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def demo_config(cfg: Config) -> Config:
    """Demo: the simulator plays Asterisk on a free loopback port with a
    one-off secret; nothing real is contacted."""
    from dataclasses import replace

    return replace(cfg, ami_host="127.0.0.1", ami_port=0, agi_host="127.0.0.1", agi_port=0, ami_username="demo",
                   sounds_dir=str(Path(cfg.state_dir) / "sounds"),
                   recordings_dir=str((Path(cfg.state_dir) / "recordings").resolve()),
                   ami_secret=cfg.ami_secret or secrets.token_hex(8))


__all__ = ["build_app", "run", "demo_config", "DemoOptions", "asyncpg"]

"""``python -m cti {serve,demo,migrate,import-customers,create-user}``."""
from __future__ import annotations

import argparse
import sys

from .aio import run as aio_run
from .config import ConfigError, load_config


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m cti", description="966022 hotline CTI backend")
    p.add_argument("--config", help="TOML config file (or HOTLINE_CONFIG)")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run against a real Asterisk (AMI) and DATABASE_URL")
    d = sub.add_parser("demo", help="everything on embedded defaults: PostgreSQL, PBX simulator, web")
    d.add_argument("--no-traffic", action="store_true", help="do not generate random calls")
    d.add_argument("--port", type=int, help="HTTP port (default from config, 8080)")
    sub.add_parser("migrate", help="apply database migrations and exit")
    imp = sub.add_parser("import-customers", help="import customers from the marketing system's CSV export")
    imp.add_argument("csv", help="path of the CSV file (UTF-8 or GBK)")
    cu = sub.add_parser("create-user", help="create (or with --reset, reset) a login account")
    cu.add_argument("username")
    cu.add_argument("--role", required=True, choices=["agent", "supervisor", "department", "admin"])
    cu.add_argument("--agent-id", default="", help="agent number for --role agent, e.g. 1001")
    cu.add_argument("--department", default="", help="department for --role department, e.g. 抢修班")
    cu.add_argument("--display-name", default="")
    cu.add_argument("--password-stdin", action="store_true",
                    help="read the password from standard input (default: generate and print one)")
    cu.add_argument("--reset", action="store_true", help="replace an existing account's password and role")
    return p


def _fail(msg: str, code: int = 2) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return code


async def _migrate(cfg) -> int:
    from .db import create_pool, migrate, resolve_database_url

    url, emb = resolve_database_url(cfg.database_url, cfg.state_dir)
    try:
        pool = await create_pool(url, 1, 2)
        async with pool.acquire() as conn:
            applied = await migrate(conn)
        await pool.close()
        print(f"migrations applied: {', '.join(applied) if applied else 'none (up to date)'}")
        return 0
    finally:
        if emb:
            emb.stop()


async def _import(cfg, path: str) -> int:
    from . import customer_repo
    from .db import create_pool, migrate, resolve_database_url

    url, emb = resolve_database_url(cfg.database_url, cfg.state_dir)
    try:
        pool = await create_pool(url, 1, 2)
        async with pool.acquire() as conn:
            await migrate(conn)
        result = await customer_repo.import_customers_file(pool, path)
        await pool.close()
        for line, msg in result.errors:
            print(f"错误 error 第{line}行 line {line}: {msg}", file=sys.stderr)
        for line, msg in result.warnings:
            print(f"提示 warning 第{line}行 line {line}: {msg}", file=sys.stderr)
        print(f"导入 imported {len(result.customers)} customers, {len(result.errors)} bad rows "
              f"(kept the good ones), {len(result.warnings)} warnings")
        return 0 if not result.errors else 1
    finally:
        if emb:
            emb.stop()


async def _create_user(cfg, args) -> int:
    import secrets

    from .auth import AccountError, AuthStore
    from .db import create_pool, migrate, resolve_database_url

    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        generated = False
    else:
        password = secrets.token_urlsafe(12)
        generated = True
    url, emb = resolve_database_url(cfg.database_url, cfg.state_dir)
    try:
        pool = await create_pool(url, 1, 2)
        try:
            async with pool.acquire() as conn:
                await migrate(conn)
            store = AuthStore(lambda: pool)
            try:
                p = await store.create_user(args.username, password, args.role, agent_id=args.agent_id,
                                            department=args.department, display_name=args.display_name,
                                            replace=args.reset)
            except AccountError as exc:
                return _fail(str(exc))
        finally:
            await pool.close()
        print(f"账号已创建 user created: {p.username} role={p.role.value}"
              + (f" agent={p.agent_id}" if p.agent_id else "") + (f" department={p.department}" if p.department else ""))
        if generated:
            print(f"password: {password}")
        return 0
    finally:
        if emb:
            emb.stop()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        return _fail(str(exc))
    from .logs import setup_logging

    setup_logging(cfg.log_level, cfg.log_json)
    from .db import DatabaseUnavailable

    try:
        if args.command == "migrate":
            return aio_run(_migrate(cfg))
        if args.command == "import-customers":
            return aio_run(_import(cfg, args.csv))
        if args.command == "create-user":
            return aio_run(_create_user(cfg, args))
        from .app import DemoOptions, demo_config, run

        if args.command == "serve":
            if not cfg.ami_secret:
                return _fail("invalid setting ami_secret: set HOTLINE_AMI_SECRET (or ami_secret in the config file)")
            aio_run(run(cfg))
        elif args.command == "demo":
            from dataclasses import replace

            cfg = demo_config(cfg)
            if args.port is not None:
                cfg = replace(cfg, http_port=args.port)
            aio_run(run(cfg, demo=DemoOptions(traffic=not args.no_traffic)))
    except DatabaseUnavailable as exc:
        return _fail(str(exc))
    except OSError as exc:
        return _fail(f"cannot start: {exc}")
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())

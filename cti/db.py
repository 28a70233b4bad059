"""PostgreSQL: the embedded server (pgserver) when no DATABASE_URL is given,
the asyncpg pool, and plain-SQL migrations recorded in the database."""
from __future__ import annotations

import asyncio
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from .logs import get_logger

log = get_logger("hotline.db")

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


class DatabaseUnavailable(RuntimeError):
    """The database cannot be reached; the message is one clear line."""


@dataclass
class EmbeddedPostgres:
    """A PostgreSQL 16 server from the ``pgserver`` wheel, data kept in
    ``<state_dir>/pgdata`` between runs."""

    data_dir: Path
    _server: object | None = None

    def start(self) -> str:
        import pgserver  # imported lazily: production never needs it

        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._server = pgserver.get_server(str(self.data_dir), cleanup_mode="stop")
        uri = self._server.get_uri()
        log.info("embedded_postgres_started", data_dir=str(self.data_dir))
        return uri

    def stop(self) -> None:
        if self._server is not None:
            try:
                self._server.cleanup()
            finally:
                self._server = None


def resolve_database_url(database_url: str, state_dir: str) -> tuple[str, EmbeddedPostgres | None]:
    if database_url:
        return database_url, None
    emb = EmbeddedPostgres(Path(state_dir).resolve() / "pgdata")
    return emb.start(), emb


# The screen-pop's own connections (cti.app, db_pop_pool): one generic plan
# per statement instead of a custom plan per pop.
POP_POOL_SETTINGS = {"plan_cache_mode": "force_generic_plan"}


async def create_pool(dsn: str, min_size: int = 1, max_size: int = 10, timeout: float = 10.0,
                      server_settings: dict[str, str] | None = None) -> asyncpg.Pool:
    """``server_settings``: e.g. ``{"hotline.node": node_id}`` (cti.cluster)."""
    try:
        return await asyncio.wait_for(
            asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size, command_timeout=30,
                                server_settings=server_settings or None, reset=_light_reset),
            timeout,
        )
    except (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise DatabaseUnavailable(
            f"database unreachable at {_safe_dsn(dsn)}: {type(exc).__name__}: {exc}".replace("\n", " ")
        ) from None


async def _light_reset(conn: asyncpg.Connection) -> None:
    """Run when a pooled connection goes back: asyncpg has already rolled
    back a transaction left open and dropped listeners.  Its default reset
    adds a round trip per release (advisory unlock all, CLOSE ALL, UNLISTEN,
    RESET ALL) -- about a third of the database time of a screen-pop.  Our
    pooled connections hold no session state: no session SET, no LISTEN (the
    cluster listens on its own connection), no cursor outside a transaction,
    and the one session advisory lock (migrations) is released in a
    ``finally``.  The full reset still runs for a connection marked with
    :func:`needs_full_reset` (the migrations run arbitrary SQL)."""
    if conn in _DIRTY:
        _DIRTY.discard(conn)
        await conn.execute(conn.get_reset_query())


_DIRTY: set = set()


def needs_full_reset(conn) -> None:
    """This pooled connection may carry session state: reset it fully when
    it goes back to the pool."""
    _DIRTY.add(getattr(conn, "_con", None) or conn)


def _safe_dsn(dsn: str) -> str:
    from .config import _redact_url

    return _redact_url(dsn)


def migration_files(directory: Path = MIGRATIONS_DIR) -> list[Path]:
    files = sorted(p for p in directory.glob("*.sql") if p.name[:3].isdigit())
    names = [p.name[:3] for p in files]
    if len(names) != len(set(names)):
        raise RuntimeError(f"two migrations share a number in {directory}")
    return files


async def migrate(conn: asyncpg.Connection, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply pending migrations, each in its own transaction, under an
    advisory lock so that two nodes starting at once do not race.  Returns
    the names applied.  A migration whose file changed after it was applied
    is reported (the checksum is recorded), not re-run."""
    await conn.execute(
        """CREATE TABLE IF NOT EXISTS schema_migrations (
               name text PRIMARY KEY,
               checksum text NOT NULL,
               applied_at timestamptz NOT NULL DEFAULT now())"""
    )
    applied: list[str] = []
    needs_full_reset(conn)
    await conn.execute("SELECT pg_advisory_lock(966022)")
    try:
        done = {r["name"]: r["checksum"] for r in await conn.fetch("SELECT name, checksum FROM schema_migrations")}
        for path in migration_files(directory):
            sql = path.read_text(encoding="utf-8")
            checksum = hashlib.sha256(sql.encode()).hexdigest()
            if path.name in done:
                if done[path.name] != checksum:
                    log.warning("migration_changed_after_apply", migration=path.name)
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (name, checksum) VALUES ($1, $2)", path.name, checksum
                )
            log.info("migration_applied", migration=path.name)
            applied.append(path.name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock(966022)")
    return applied


def state_dir_default() -> str:
    return os.environ.get("HOTLINE_STATE_DIR", ".state")

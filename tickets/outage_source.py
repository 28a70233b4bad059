"""The outage registry as seen by duplicate-fault merging (asyncpg).

:class:`RegistryOutageSource` reads ``outages`` / ``outage_areas`` of
migration 002 when they exist; in a database without them (a deployment
without the outage registry) it finds nothing, so merging falls back to open
repair orders only.  :class:`NoOutages` is the explicit "no registry".

An outage counts as a *major outage* for the callback rule when it takes out
a whole feeder (an area of type ``feeder``): its callers never slip.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any, Sequence

import asyncpg

from .merging import KnownFault

__all__ = ["NoOutages", "RegistryOutageSource"]


class NoOutages:
    async def published_for(self, conn: Any, *, transformer_area: str, feeder: str, village: str,
                            at: datetime) -> Sequence[KnownFault]:
        return []

    async def restored_among(self, conn: Any, outage_ids: Sequence[int]) -> Sequence[tuple[int, Any]]:
        return []


class RegistryOutageSource:
    async def _present(self, conn: asyncpg.Connection) -> bool:
        return bool(await conn.fetchval(
            "SELECT to_regclass('outages') IS NOT NULL AND to_regclass('outage_areas') IS NOT NULL"))

    async def published_for(self, conn: asyncpg.Connection, *, transformer_area: str, feeder: str,
                            village: str, at: datetime) -> Sequence[KnownFault]:
        if not (transformer_area or feeder or village) or not await self._present(conn):
            return []
        rows = await conn.fetch(
            """SELECT o.id, o.outage_no, o.reason, o.start_at, o.expected_restore_at, o.published_at,
                      a.area_type, a.name,
                      EXISTS (SELECT 1 FROM outage_areas f WHERE f.outage_id = o.id AND f.area_type = 'feeder') AS major
               FROM outage_areas a JOIN outages o ON o.id = a.outage_id
               WHERE a.live AND o.status = 'published' AND o.start_at <= $4
                 AND (   (a.area_type = 'transformer_area' AND $1 <> '' AND a.name_key = ticket_area_key($1))
                      OR (a.area_type = 'feeder' AND $2 <> '' AND a.name_key = ticket_area_key($2))
                      OR (a.area_type = 'village' AND $3 <> '' AND a.name_key = ticket_area_key($3)))""",
            transformer_area or "", feeder or "", village or "", at)
        out = []
        for r in rows:
            summary = f"{r['reason']};预计 {r['expected_restore_at'].astimezone(_cst()):%m-%d %H:%M} 恢复送电"
            out.append(KnownFault("outage", r["id"], r["outage_no"], r["area_type"], r["name"],
                                  r["published_at"] or r["start_at"], bool(r["major"]), "published", summary,
                                  r["expected_restore_at"]))
        return out

    async def restored_among(self, conn: asyncpg.Connection, outage_ids: Sequence[int]) -> Sequence[tuple[int, Any]]:
        if not outage_ids or not await self._present(conn):
            return []
        rows = await conn.fetch(
            "SELECT id, restored_at FROM outages WHERE id = ANY($1::bigint[]) AND status = 'restored'",
            list(outage_ids))
        return [(r["id"], r["restored_at"]) for r in rows]


def _cst():
    from cti.workdays import CHINA_TZ
    return CHINA_TZ

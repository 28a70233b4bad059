"""The work-order pages (HTML + JS in ``cti/static``): order search, the order
view, the callback worklist, the department inbox and the knowledge base.

``add_ticket_pages(app)`` registers them; :func:`tickets.routes.add_ticket_routes`
calls it, so the service needs no extra wiring.  The pages are static files:
every value they show comes from the JSON API (``tickets/API.md``) and is put
in the page as text, never as markup."""
from __future__ import annotations

from pathlib import Path

from aiohttp import web

from cti.auth import Role, principal_key, require

__all__ = ["PAGES", "add_ticket_pages"]

STATIC = Path(__file__).resolve().parent.parent / "cti" / "static"

# URL -> file in cti/static
PAGES: dict[str, str] = {
    "/orders": "orders.html",
    "/orders/{order_id}": "order.html",
    "/callbacks": "callbacks.html",
    "/department": "department.html",
    "/department/{department}": "department.html",
    "/knowledge": "knowledge.html",
}


_A, _S, _D = Role.AGENT, Role.SUPERVISOR, Role.DEPARTMENT
# URL -> who may open it (admins always may)
PAGE_ROLES: dict[str, tuple[Role, ...]] = {
    "/orders": (_A, _S, _D),
    "/orders/{order_id}": (_A, _S, _D),
    "/callbacks": (_A, _S),
    "/department": (_S, _D),
    "/department/{department}": (_S, _D),
    "/knowledge": (_A, _S, _D),
}


def _page(filename: str, roles: tuple[Role, ...]):
    async def handler(request: web.Request) -> web.StreamResponse:
        dept = request.match_info.get("department")
        if dept is not None and not request[principal_key].may_see_department(dept):
            raise web.HTTPForbidden(reason="not your department")
        return web.FileResponse(STATIC / filename, headers={"Cache-Control": "no-cache"})
    handler.__name__ = "page_" + filename.replace(".", "_")
    return require(*roles)(handler)


def add_ticket_pages(app: web.Application) -> None:
    for path, filename in PAGES.items():
        app.router.add_get(path, _page(filename, PAGE_ROLES[path]))

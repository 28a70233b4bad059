"""The work-order pages (HTML + JS in ``cti/static``): order search, the order
view, the callback worklist, the department inbox and the knowledge base.

``add_ticket_pages(app)`` registers them; :func:`tickets.routes.add_ticket_routes`
calls it, so the service needs no extra wiring.  The pages are static files:
every value they show comes from the JSON API (``tickets/API.md``) and is put
in the page as text, never as markup."""
from __future__ import annotations

from pathlib import Path

from aiohttp import web

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


def _page(filename: str):
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / filename, headers={"Cache-Control": "no-cache"})
    handler.__name__ = "page_" + filename.replace(".", "_")
    return handler


def add_ticket_pages(app: web.Application) -> None:
    for path, filename in PAGES.items():
        app.router.add_get(path, _page(filename))

"""The one JSON error shape of every HTTP API: ``{"error": code, "message":
"中文 / English", ...}``."""
from __future__ import annotations

from typing import Any

from aiohttp import web


def json_error(http_status: int, code: str, message: str, /, **extra: Any) -> web.Response:
    """``extra`` may carry any key, ``status`` (an order's state) included."""
    return web.json_response({"error": code, "message": message, **extra}, status=http_status)

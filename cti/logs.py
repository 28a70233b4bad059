"""structlog set-up: one shape for our log lines and for panoramisk, aiohttp
and asyncpg (standard-library loggers, rendered through ProcessorFormatter).

JSON when stdout is not a TTY (or when forced), coloured console otherwise.
Bind call context with :func:`bind_call` at each entry point.
"""
from __future__ import annotations

import contextvars
import logging
import sys

import structlog

# The call context (uniqueid, linkedid, queue, agent) is one ContextVar
# holding a tuple: binding it is a single ContextVar.set on the hot path of
# every AMI event; it is turned into log fields only when a line is written.
_CALL: contextvars.ContextVar[tuple[str, str, str, str] | None] = contextvars.ContextVar(
    "hotline_call", default=None)


def merge_call_context(_logger, _name, event_dict):
    call = _CALL.get()
    if call is not None:
        for key, value in zip(("uniqueid", "linkedid", "queue", "agent"), call):
            event_dict.setdefault(key, value)
    return event_dict


_SHARED = [
    structlog.contextvars.merge_contextvars,
    merge_call_context,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    structlog.processors.StackInfoRenderer(),
]


def setup_logging(level: str = "INFO", json: bool | None = None, stream=None) -> None:
    stream = stream or sys.stderr
    if json is None:
        json = not (hasattr(stream, "isatty") and stream.isatty())
    renderer = (
        structlog.processors.JSONRenderer(ensure_ascii=False)
        if json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        # below the level: dropped before any processor runs (a storm logs per call at INFO)
        processors=[structlog.stdlib.filter_by_level, *_SHARED,
                    structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*_SHARED, structlog.stdlib.ExtraAdder()],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_hotline", False):
            root.removeHandler(h)
    handler._hotline = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    # panoramisk logs every frame at DEBUG; keep it at INFO unless asked
    for name in ("panoramisk", "asyncpg", "aiohttp.access"):
        logging.getLogger(name).setLevel(max(logging.INFO, root.level))


def get_logger(name: str = "hotline"):
    return structlog.get_logger(name)


def bind_call(*, uniqueid: str = "", linkedid: str = "", queue: str = "", agent: str = "") -> None:
    """Bind the call context for every log line of the current task."""
    _CALL.set((uniqueid, linkedid, queue, agent))


def clear_call() -> None:
    _CALL.set(None)

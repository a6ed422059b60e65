"""The ids of the work in hand, on every log line written while doing it.

The candle path binds what it is working on (``log_context(strategy_id=..., execution_id=...)``)
and every record logged inside, by any logger, carries those ids: as fields of the JSON line in
production, as ``key=value`` pairs after the message in development. Bindings live in a
context variable, so threads and asyncio tasks each keep their own.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

from pythonjsonlogger.json import JsonFormatter

# The ids of the candle path, in the order plain lines show them.
FIELDS = (
    "task_id",
    "task",
    "strategy_id",
    "execution_id",
    "interval_start",
    "subscription_id",
    "client_order_id",
)

_bound: ContextVar[dict[str, Any]] = ContextVar("log_context", default={})  # noqa: B039


@contextlib.contextmanager
def log_context(**ids: Any) -> Iterator[None]:
    """Bind ids (None values are left out) to every record logged inside the block."""
    fresh = {key: _plain(value) for key, value in ids.items() if value is not None}
    token = _bound.set({**_bound.get(), **fresh})
    try:
        yield
    finally:
        _bound.reset(token)


def log_context_current() -> dict[str, Any]:
    """What is bound now: to carry into work another thread does on this one's behalf."""
    return dict(_bound.get())


def _plain(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value


class ContextFilter(logging.Filter):
    """Puts the bound ids on the record (attached to handlers, so every logger's records get
    them, those of Celery and libraries too)."""

    def filter(self, record: logging.LogRecord) -> bool:
        bound = _bound.get()
        for key, value in bound.items():
            if not hasattr(record, key):
                setattr(record, key, value)
        record.log_context = " ".join(f"{k}={bound[k]}" for k in FIELDS if k in bound)
        return True


class PlainFormatter(logging.Formatter):
    """Development lines: the message, then the bound ids."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = getattr(record, "log_context", "")
        return f"{line} [{context}]" if context else line


class JsonLineFormatter(JsonFormatter):
    """Production lines: one JSON object per record, the bound ids as fields of their own."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("rename_fields", {"levelname": "level", "name": "logger"})
        kwargs.setdefault("timestamp", True)
        super().__init__(*args, **kwargs)

    def add_fields(self, log_data: dict, record: logging.LogRecord, message_dict: dict) -> None:
        super().add_fields(log_data, record, message_dict)
        log_data.pop("log_context", None)  # the plain formatter's copy of the fields

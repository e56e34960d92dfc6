"""Logging for people and for machines, with the run on every line and secrets never shown.

An operator reading cron mail wants short human lines; a log pipeline wants JSON. Either way every line a run
writes carries its run id and connector (a context variable set by the runner, so it follows the run's
thread), and every secret dcsync was given (connector settings declared ``SecretStr``) is replaced by ``***``
wherever it would appear, including in a remote's error message that echoed it back.
"""

from __future__ import annotations

import contextvars
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from connector_core.redaction import (
    MASK,
    redact,
    redact_value,
    register_secret,
    register_secrets_of,
    register_url_credentials,
)

_run: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("dcsync_run", default=None)
__all__ = [
    "MASK",
    "configure_logging",
    "redact",
    "redact_value",
    "register_secret",
    "register_secrets_of",
    "register_url_credentials",
    "run_context",
]


@contextmanager
def run_context(**fields: Any) -> Iterator[None]:
    """Attach ``fields`` (run id, connector, direction) to every log line written inside the block."""
    current = _run.get() or {}
    token = _run.set({**current, **fields})
    try:
        yield
    finally:
        _run.reset(token)


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        fields = _run.get() or {}
        record.run_id = fields.get("run_id")
        record.connector = fields.get("connector")
        record.dcsync = fields
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        doc.update({k: v for k, v in (getattr(record, "dcsync", None) or {}).items() if v is not None})
        if record.exc_info:
            doc["error"] = redact(self.formatException(record.exc_info))
        return json.dumps(doc, ensure_ascii=False, default=str)


class HumanFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        run_id = getattr(record, "run_id", None)
        prefix = f"[run {run_id}] " if run_id is not None else ""
        return f"{prefix}{record.getMessage()}"


def configure_logging(level: int = logging.WARNING, fmt: str = "human", stream: Any = None) -> None:
    """Install one handler on the root logger; ``fmt`` is ``human`` (rich, for terminals) or ``json``."""
    handler: logging.Handler
    if fmt == "json":
        handler = logging.StreamHandler(stream)
        handler.setFormatter(JsonFormatter())
    else:
        from rich.console import Console
        from rich.logging import RichHandler

        handler = RichHandler(
            console=Console(stderr=True, file=stream), show_path=False, rich_tracebacks=False, markup=False
        )
        handler.setFormatter(HumanFormatter())
    handler.addFilter(_ContextFilter())
    logging.basicConfig(level=level, handlers=[handler], force=True)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("apscheduler").setLevel(max(level, logging.WARNING))

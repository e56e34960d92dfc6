"""Event logs: the protocol every backend meets, and the embedded SQLite backend."""

from connector_core.eventlog.base import AppendResult, EventLog, EventPage
from connector_core.eventlog.jsonl import export_jsonl, import_jsonl, iter_jsonl
from connector_core.eventlog.sqlite import SchemaVersionError, SqliteEventLog

__all__ = [
    "AppendResult",
    "EventLog",
    "EventPage",
    "SchemaVersionError",
    "SqliteEventLog",
    "export_jsonl",
    "import_jsonl",
    "iter_jsonl",
]

"""State stores: the protocol (checkpoints, links, dead letters, runs) and the SQLite backend."""

from connector_core.state.base import DeadLetter, Direction, Link, RunRecord, StateStore, StateTxn
from connector_core.state.sqlite import (
    DuplicateExternalIdError,
    SchemaVersionError,
    SqliteStateStore,
    SqliteStateTxn,
)

__all__ = [
    "DeadLetter",
    "Direction",
    "DuplicateExternalIdError",
    "Link",
    "RunRecord",
    "SchemaVersionError",
    "SqliteStateStore",
    "SqliteStateTxn",
    "StateStore",
    "StateTxn",
]

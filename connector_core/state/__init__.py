"""State stores: the protocol (checkpoints, links, dead letters, runs), the backends, and the one place that
opens them. ``sqlite`` is the embedded default; ``postgres`` (imported only when used) lets dcsync processes
on several machines share one store, and its connector lease then covers them all."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, cast

from connector_core.state.base import DeadLetter, Direction, Link, RunRecord, StateStore, StateTxn
from connector_core.state.lease import ConnectorBusy, LeasedStateStore, LeaseHolder
from connector_core.state.redacting import RedactingStateStore
from connector_core.state.sqlite import (
    DuplicateExternalIdError,
    SchemaVersionError,
    SqliteStateStore,
    SqliteStateTxn,
)

if TYPE_CHECKING:
    from connector_core.config import StateConfig

__all__ = [
    "ConnectorBusy",
    "DeadLetter",
    "Direction",
    "DuplicateExternalIdError",
    "LeaseHolder",
    "LeasedStateStore",
    "Link",
    "RunRecord",
    "SchemaVersionError",
    "SqliteStateStore",
    "SqliteStateTxn",
    "StateStore",
    "StateTxn",
    "open_state_store",
]


def open_state_store(config: StateConfig, base_dir: Path) -> LeasedStateStore:
    """The state store a project file's ``state`` section describes (relative paths from ``base_dir``)."""
    from connector_core.config import PostgresStateConfig

    store: LeasedStateStore
    if isinstance(config, PostgresStateConfig):
        from connector_core.state.postgres import PostgresStateStore

        store = PostgresStateStore(config.url.get_secret_value(), schema=config.db_schema)
    else:
        path = Path(config.path).expanduser()
        store = SqliteStateStore(path if path.is_absolute() else base_dir / path)
    # the one redaction boundary for everything persisted: dead letters, runs, parked reasons, conflicts
    return cast(LeasedStateStore, RedactingStateStore(store))

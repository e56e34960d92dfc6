"""State stores: the protocol (checkpoints, links, dead letters, runs), the backends, and the one place that
opens them. ``sqlite`` is the embedded default; ``postgres`` (imported only when used) lets dcsync processes
on several machines share one store, and its connector lease then covers them all."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, cast

from connector_core.state.base import DeadLetter, Direction, Link, RunRecord, StateStore, StateTxn
from connector_core.state.lease import ConnectorBusy, LeasedStateStore, LeaseHolder
from connector_core.state.redacting import RedactingStateStore
from connector_core.state.sealing import PLAIN, StateCipher, StateKeyError, decode_key
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
    "StateKeyError",
    "SqliteStateStore",
    "SqliteStateTxn",
    "StateStore",
    "StateTxn",
    "open_state_store",
    "state_cipher",
]


def open_state_store(config: StateConfig, base_dir: Path, *, read_only: bool = False) -> LeasedStateStore:
    """The state store a project file's ``state`` section describes (relative paths from ``base_dir``).

    ``read_only`` (``status``, ``runs``, ``dlq list``/``show``, a dry run) creates nothing: no file, no
    schema, no lock file. A store that does not exist yet reads as empty; every write fails; its lease holds
    nothing (a run that writes nothing cannot collide with one that does).
    """
    from connector_core.config import PostgresStateConfig

    store: LeasedStateStore
    if isinstance(config, PostgresStateConfig):
        from connector_core.state.postgres import PostgresStateStore

        url = config.url.get_secret_value()
        if read_only:
            store = PostgresStateStore(url, schema=config.db_schema, read_only=True)
            if not store.exists:
                store.close()
                store = SqliteStateStore(":memory:", read_only=True)  # no schema yet: an empty store
        else:
            store = PostgresStateStore(url, schema=config.db_schema)
    else:
        path = Path(config.path).expanduser()
        store = SqliteStateStore(path if path.is_absolute() else base_dir / path, read_only=read_only)
    try:
        store.use_cipher(state_cipher(config, base_dir))
    except BaseException:
        store.close()
        raise
    # the one redaction boundary for everything persisted: dead letters, runs, parked reasons, conflicts
    return cast(LeasedStateStore, RedactingStateStore(store))


def state_cipher(config: StateConfig, base_dir: Path) -> StateCipher:
    """The cipher the ``state`` section's keys describe (:data:`PLAIN` without a key).

    A key file is read here, not when the project file is loaded, so that commands that never open the
    store do not need it; a file that is missing or does not hold a key is one line naming the file.
    """
    key = config.encryption_key.get_secret_value() if config.encryption_key is not None else None
    if config.encryption_key_file is not None:
        path = Path(config.encryption_key_file).expanduser()
        path = path if path.is_absolute() else base_dir / path
        try:
            key = path.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise StateKeyError(f"state.encryption_key_file {path}: {exc.strerror or exc}") from None
        current = decode_key(key, f"state.encryption_key_file {path}")
    elif key is not None:
        current = decode_key(key)
    else:
        return PLAIN
    previous = [decode_key(k.get_secret_value(), "state.previous_keys") for k in config.previous_keys]
    return StateCipher(current, previous)

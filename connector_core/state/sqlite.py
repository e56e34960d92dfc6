"""The embedded state store: checkpoints, links, dead letters and runs in one SQLite file (WAL mode).

The queries are :mod:`connector_core.state.store`'s, the tables :mod:`connector_core.state.schema`'s; this
module holds what only SQLite does: opening the file with its pragmas, and the connector lease as a lock file
beside it. A batch's outcome is one ``BEGIN IMMEDIATE`` transaction.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from connector_core._sql import Migration, SchemaVersionError, SqliteDatabase, connect_sqlite
from connector_core.state.base import DuplicateExternalIdError
from connector_core.state.lease import ConnectorBusy, LeaseHolder, this_process
from connector_core.state.schema import MIGRATIONS
from connector_core.state.store import DEAD_LETTER_CLOSED, FAILED_OUTCOMES, SqlStateStore, SqlStateTxn

__all__ = [
    "DEAD_LETTER_CLOSED",
    "FAILED_OUTCOMES",
    "MIGRATIONS",
    "DuplicateExternalIdError",
    "Migration",
    "SchemaVersionError",
    "SqliteStateStore",
    "SqliteStateTxn",
]


class SqliteStateTxn(SqlStateTxn):
    """The writes of one ``transaction()`` block of a :class:`SqliteStateStore`."""


class SqliteStateStore(SqlStateStore):
    """A :class:`~connector_core.state.base.StateStore` in one SQLite file (WAL mode)."""

    _txn_class = SqliteStateTxn

    def __init__(self, path: str | Path, *, migrations: Sequence[Migration] = MIGRATIONS) -> None:
        self.path = str(path)
        # 16 KiB pages for a new store: a batch's links land on random pages of the guid index, and each
        # commit writes every page it dirtied; fewer, larger pages halve the cost of a commit. (An existing
        # store keeps the page size it was created with.)
        conn = connect_sqlite(self.path, ("page_size = 16384", "journal_mode = WAL", "synchronous = NORMAL"))
        super().__init__(SqliteDatabase(conn), migrations, self.path)

    def __enter__(self) -> SqliteStateStore:
        return self

    @contextmanager
    def lease(self, connector: str, *, wait: bool = False) -> Iterator[None]:
        """An exclusive lock file beside the store (``state.db.<connector>.lock``) naming its holder.

        The OS releases the lock when the holding process dies, however it dies; the file itself stays, and
        its stale content is overwritten by the next holder.
        """
        lock_path = Path(f"{self.path}.{connector}.lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                busy = ConnectorBusy(connector, _lock_holder(fd))
                if not wait:
                    raise busy from None
                logging.getLogger("dcsync.run").warning("%s; waiting for it", busy)
                fcntl.flock(fd, fcntl.LOCK_EX)
            os.ftruncate(fd, 0)
            os.pwrite(fd, this_process().encode().encode(), 0)
            try:
                yield
            finally:
                os.ftruncate(fd, 0)  # released: an empty file names nobody (a crash leaves the name)
        finally:
            os.close(fd)


def _lock_holder(fd: int, patience: float = 1.0) -> LeaseHolder | None:
    """The holder named in a lock file another process holds.

    The winner of a lease writes its name just after it takes the lock, so a loser that reads in between
    finds the file empty: it waits a moment for the name rather than report an anonymous holder.
    """
    deadline = time.monotonic() + patience
    while True:
        holder = LeaseHolder.decode(os.pread(fd, 512, 0).decode(errors="replace"))
        if holder is not None or time.monotonic() >= deadline:
            return holder
        time.sleep(0.02)

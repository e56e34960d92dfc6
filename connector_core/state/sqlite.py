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
from dataclasses import replace
from pathlib import Path

from connector_core._sql import (
    BUSY_TIMEOUT_MS,
    Migration,
    SchemaVersionError,
    SqliteDatabase,
    connect_sqlite,
    existing_version,
    memory_sqlite,
)
from connector_core._sqlite_read import connect_read_only
from connector_core.state.base import DuplicateExternalIdError
from connector_core.state.lease import ConnectorBusy, LeaseHolder, this_process
from connector_core.state.schema import LAYOUT, MIGRATIONS
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

    def __init__(
        self, path: str | Path, *, migrations: Sequence[Migration] = MIGRATIONS, read_only: bool = False
    ) -> None:
        self.path = str(path)
        self.read_only = read_only
        if read_only:
            self._open_read_only(migrations)
            return
        # 16 KiB pages for a new store: a batch's links land on random pages of the guid index, and each
        # commit writes every page it dirtied; fewer, larger pages halve the cost of a commit. (An existing
        # store keeps the page size it was created with.)
        conn = connect_sqlite(self.path, ("page_size = 16384", "journal_mode = WAL", "synchronous = NORMAL"))
        super().__init__(SqliteDatabase(conn), migrations, self.path)

    def _open_read_only(self, migrations: Sequence[Migration]) -> None:
        """The store at ``path`` for reading (``status``, ``runs``, ``dlq list``, a dry run): nothing is
        created. A file that does not exist, or holds no store yet, reads as an empty store kept in memory.
        A store of an older layout is upgraded first, as the next command that writes would do: its tables
        must match the queries, and upgrading an existing file creates no file."""
        layout = replace(LAYOUT, migrations=tuple(migrations))
        for _ in range(2):
            conn = connect_read_only(Path(self.path), BUSY_TIMEOUT_MS / 1000)
            if conn is None:
                break
            db = SqliteDatabase(conn)
            current = existing_version(db, layout, "schema_version", f"state store {self.path}")
            if current == len(migrations):
                super().__init__(db, migrations, self.path, lay_out=False)
                return
            db.close()
            if current is None:
                break
            SqliteStateStore(self.path, migrations=migrations).close()  # an older layout: upgraded
        super().__init__(SqliteDatabase(memory_sqlite()), migrations, ":memory:")

    def __enter__(self) -> SqliteStateStore:
        return self

    @contextmanager
    def lease(self, connector: str, *, wait: bool = False) -> Iterator[None]:
        """An exclusive lock file beside the store (``state.db.<connector>.lock``) naming its holder.

        The OS releases the lock when the holding process dies, however it dies; the file itself stays, and
        its stale content is overwritten by the next holder.
        """
        if self.read_only:  # a dry run's: it writes nothing, so it cannot collide with a run that does,
            yield  # and it must not keep a scheduled run waiting (nor leave a lock file behind)
            return
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

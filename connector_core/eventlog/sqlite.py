"""The embedded event log: one SQLite file holding the events and the entities folded from them.

The queries and the fold are :mod:`connector_core.eventlog.store`'s, the tables
:mod:`connector_core.eventlog.schema`'s; this module holds what only SQLite does: opening the file with
pragmas chosen for a log, and the bulk writes of an append. Events are numbered by an ``AUTOINCREMENT``
ingestion sequence. WAL mode lets readers (one instance per thread) read while a writer appends.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path

from connector_core._sql import (
    BUSY_TIMEOUT_MS,
    SchemaVersionError,
    SqliteDatabase,
    connect_sqlite,
    existing_version,
    memory_sqlite,
)
from connector_core._sqlite_read import connect_read_only
from connector_core.eventlog.base import AppendResult
from connector_core.eventlog.schema import LAYOUT, guid_key
from connector_core.eventlog.store import (
    _TOUCH_COLUMNS,
    SCHEMA_VERSION,
    EntityRow,
    EntityUpdate,
    EventRow,
    IssueRow,
    SqlEventLog,
    _dumps,
    _referenced_guids,
    parse_cursor,
)
from connector_core.events import FormSubmission

__all__ = [
    "SCHEMA_VERSION",
    "_TOUCH_COLUMNS",
    "SchemaVersionError",
    "SqliteEventLog",
    "_dumps",
    "_referenced_guids",
    "parse_cursor",
]

log = logging.getLogger("dcsync.eventlog")

_NAMES = {
    "n": "",
    "issue_id": "",
    "issue_key": "rowid",
    "without_rowid": " WITHOUT ROWID",
}  # see eventlog/schema.py

_PRAGMAS = (
    # The default 4 KiB pages, not the state store's 16 KiB: an append's rows land at the end of their
    # tables, but its guids land on random pages of three indexes (event guid, entity guid, parent guid),
    # and once those outgrow the cache each commit writes a whole page per guid. With 16 KiB pages a
    # 1,000,000-event log appended 9,000 events/s here, with 4 KiB 17,000.
    "journal_mode = WAL",
    "synchronous = NORMAL",  # as before: never corrupt; a power cut may undo the last commits, a crash none
    # 64 MiB of page cache rather than 2: every append probes the guid keys at random (is this event
    # stored? is this entity?) before it inserts into them, so the cache should hold the key tables of a
    # log of a few million events (about 14 MB per million events per table), and the pages one append
    # dirties, so a transaction never spills half-written pages to the WAL only to write them again at its
    # commit. Measured with one level of keys: 16 MiB appended a 1,000,000-event log at 38,700 events/s
    # here, 64 MiB at 42,100. A fixed size, so memory stays flat however large the log grows.
    "cache_size = -65536",
)
CHUNK_EVENTS = 5000
"""Events an append inserts and folds at a time: its memory bound. 5,000 rather than 1,000: a million events
appended 5-7% faster in 10,000-event appends, measured in pairs on this machine (fewer statements, and each
probe of the key levels walks a larger sorted batch); a chunk of 5,000 mobile events holds a few MB."""
_WAL_CHECKPOINT_BYTES = 40 * 2**20
_ROW_BYTES = 2000  # WAL bytes one appended row costs, index pages included, roughly (for the trigger)

# ?2..?8: a row's first value is its guid key, which goes to the key table instead
_INSERT_EVENT = (
    "INSERT INTO events (guid, entity_guid, type, data, timestamp, user_id, sync_level) "
    "VALUES (?2, ?3, ?4, ?5, ?6, ?7, ?8)"
)
_HANDED_OUT = "SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0)"
_INSERT_ENTITY = (
    "INSERT INTO entities (guid, type, entity_name, parent_guid, version, doc, last_seq) "
    "VALUES (?2, ?3, ?4, ?5, ?6, ?7, ?8)"
)
_LAST_ENTITY = "SELECT coalesce(max(id), 0) FROM entities"
_INSERT_EVENT_KEY = "INSERT INTO event_keys_recent (guid_key, ref) VALUES (?, ?)"
_INSERT_ENTITY_KEY = "INSERT INTO entity_keys_recent (guid_key, ref) VALUES (?, ?)"
_UPDATE_ENTITY = (
    "UPDATE entities SET type = ?, entity_name = ?, parent_guid = ?, version = ?, doc = ?, last_seq = ? "
    "WHERE id = ?"
)
_INSERT_ISSUE = "INSERT INTO event_issues (event_guid, entity_guid, reason, seq) VALUES (?, ?, ?, ?)"


def _register_guid_key(conn: sqlite3.Connection) -> None:
    """``dcsync_guid_key(text)``: :func:`~connector_core.eventlog.schema.guid_key` in SQL, which the
    migration to schema version 4 keys the rows already stored with."""
    conn.create_function("dcsync_guid_key", 1, guid_key, deterministic=True)


class _Checkpointer:
    """Copies the WAL into the database file on a thread and connection of its own.

    A checkpoint writes every page the last appends dirtied and syncs the file: done inside an append's
    COMMIT (SQLite's automatic checkpoint) it took most of that commit's time. Here it overlaps the next
    append's fold. It is a PASSIVE checkpoint, the kind SQLite runs itself: it waits for no one, copies only
    what no reader still needs, and a crash half-way through loses nothing (the WAL still holds it all).
    """

    def __init__(self, path: str) -> None:
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="dcsync-wal-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while True:
                self._wake.wait()
                self._wake.clear()
                if self._stopping:
                    return
                try:
                    self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as exc:  # the writer's own backstop checkpoint still bounds the WAL
                    log.debug("background WAL checkpoint of the event log failed: %s", exc)
        finally:
            self._conn.close()

    def poke(self) -> None:
        self._wake.set()

    def close(self) -> None:
        self._stopping = True
        self._wake.set()
        self._thread.join()


class SqliteEventLog(SqlEventLog):
    """An :class:`~connector_core.eventlog.base.EventLog` in one SQLite file (WAL mode)."""

    def __init__(self, path: str | Path, *, chunk_size: int = CHUNK_EVENTS, read_only: bool = False) -> None:
        self.path = str(path)
        self.read_only = read_only
        self._checkpointer: _Checkpointer | None = None  # started by the first append that needs it
        if read_only:
            self._open_read_only(chunk_size)
            return
        conn = connect_sqlite(self.path, _PRAGMAS)
        _register_guid_key(conn)
        # The WAL is copied into the file by a thread of its own (see _Checkpointer) every ~40 MB; the
        # append's own automatic checkpoint stays, at four times that, only as a backstop.
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]  # an existing log keeps its own
        conn.execute(f"PRAGMA wal_autocheckpoint = {4 * _WAL_CHECKPOINT_BYTES // page_size}")
        self._checkpoint_rows = _WAL_CHECKPOINT_BYTES // _ROW_BYTES
        self._rows_at_checkpoint = 0
        super().__init__(SqliteDatabase(conn, _NAMES), self.path, chunk_size)

    def _open_read_only(self, chunk_size: int) -> None:
        """The log at ``path`` for reading (``status``, ``log stats``, a dry run): nothing is created. A
        file that does not exist, or holds no event log yet, reads as an empty log kept in memory; an older
        layout is upgraded first, as the next append would do."""
        for _ in range(2):
            conn = connect_read_only(Path(self.path), BUSY_TIMEOUT_MS / 1000)
            if conn is None:
                break
            db = SqliteDatabase(conn, _NAMES)
            current = existing_version(db, LAYOUT, "meta", f"event log {self.path}")
            if current == SCHEMA_VERSION:
                super().__init__(db, self.path, chunk_size, lay_out=False)
                return
            db.close()
            if current is None:
                break
            SqliteEventLog(self.path).close()  # an older layout: upgraded
        memory = memory_sqlite()
        _register_guid_key(memory)
        super().__init__(SqliteDatabase(memory, _NAMES), ":memory:", chunk_size)

    def append(self, events: Iterable[FormSubmission]) -> AppendResult:
        result = super().append(events)
        if self.read_only:
            return result
        with self._lock:
            changed = self._conn.total_changes
            if changed - self._rows_at_checkpoint >= self._checkpoint_rows and self.path != ":memory:":
                self._rows_at_checkpoint = changed
                if self._checkpointer is None:  # a log only read (or appended to little) never starts one
                    self._checkpointer = _Checkpointer(self.path)
                self._checkpointer.poke()
        return result

    def close(self) -> None:
        with self._lock:
            if self._checkpointer is not None:
                self._checkpointer.close()
        super().close()

    def __enter__(self) -> SqliteEventLog:
        return self

    def _insert_events(self, rows: list[EventRow]) -> list[tuple[int, str]]:
        conn = self._conn
        # Within this write transaction nobody else inserts, and AUTOINCREMENT numbers each new row one
        # above the largest it ever handed out (sqlite_sequence, which no earlier row exceeds): so this
        # chunk's rows are numbered on from there, in order, and need not be read back.
        before = conn.execute(_HANDED_OUT).fetchone()[0]
        conn.executemany(_INSERT_EVENT, rows)
        self._check_numbered("events", before, conn.execute(_HANDED_OUT).fetchone()[0], len(rows))
        conn.executemany(_INSERT_EVENT_KEY, [(row[0], before + i) for i, row in enumerate(rows, 1)])
        return [(before + i, row[1]) for i, row in enumerate(rows, 1)]

    def _insert_entities(self, rows: list[EntityRow]) -> None:
        conn = self._conn
        # a rowid table numbers each new row one above its largest: as above, within this transaction
        before = conn.execute(_LAST_ENTITY).fetchone()[0]
        conn.executemany(_INSERT_ENTITY, rows)
        self._check_numbered("entities", before, conn.execute(_LAST_ENTITY).fetchone()[0], len(rows))
        conn.executemany(_INSERT_ENTITY_KEY, [(row[0], before + i) for i, row in enumerate(rows, 1)])

    def _check_numbered(self, table: str, before: int, after: int, count: int) -> None:
        if after - before != count:  # never seen; a wrong number would key a guid to another row
            raise RuntimeError(
                f"event log {self.where}: {count} rows inserted into {table}, its key moved {before}->{after}"
            )

    def _update_entities(self, rows: list[EntityUpdate]) -> None:
        self._conn.executemany(_UPDATE_ENTITY, rows)

    def _insert_issues(self, rows: list[IssueRow]) -> None:
        self._conn.executemany(_INSERT_ISSUE, rows)

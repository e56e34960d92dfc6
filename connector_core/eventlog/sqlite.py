"""The embedded event log: one SQLite file holding the events and the entities folded from them.

Events are numbered by an ``AUTOINCREMENT`` ingestion sequence, and that number is the cursor; so
a reader never skips an event, whatever its (client-supplied) timestamp says (datacollect.md §2.1
a-d). The entity table is folded in the same transaction as the events it comes from, so it never
disagrees with the log, and a sync engine can read current state without replaying the log.

One instance owns one connection. Calls are serialised by a lock, so an instance may be handed
between threads (a scheduler creates it in one and runs jobs in another); for parallel readers open
one instance per thread: WAL mode lets them read while a writer appends.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from connector_core import codec
from connector_core import entities as _entities
from connector_core._sqlite_read import connect_read_only, has_table
from connector_core.entities import Entity, EventIssue, overlay
from connector_core.eventlog.base import MEMBERSHIP_EVENTS, AppendResult, EventPage, EventTouch, TouchPage
from connector_core.events import FormSubmission
from connector_core.streams import chunks

SCHEMA_VERSION = 1
"""Version of the layout below; a file written by a newer dcsync is refused rather than misread."""

BUSY_TIMEOUT_MS = 30_000
_IN_CHUNK = 500  # guids per IN (...) query: well under SQLite's bound-parameter limit on every build

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        guid TEXT UNIQUE NOT NULL,
        entity_guid TEXT NOT NULL,
        type TEXT NOT NULL,
        data TEXT NOT NULL,
        timestamp TEXT NOT NULL,
        user_id TEXT NOT NULL,
        sync_level INTEGER NOT NULL
    )""",
    # A rowid table, not WITHOUT ROWID: new docs land in insertion order and only the small guid
    # index takes random (uuid) inserts, which halves the pages an append dirties and commits.
    """CREATE TABLE IF NOT EXISTS entities (
        guid TEXT PRIMARY KEY,
        type TEXT NOT NULL,
        entity_name TEXT,
        parent_guid TEXT,
        version INTEGER NOT NULL,
        doc TEXT NOT NULL,
        last_seq INTEGER NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS entities_entity_name ON entities(entity_name)",
    "CREATE INDEX IF NOT EXISTS entities_parent_guid ON entities(parent_guid)",
    """CREATE TABLE IF NOT EXISTS event_issues (
        event_guid TEXT NOT NULL,
        entity_guid TEXT NOT NULL,
        reason TEXT NOT NULL,
        seq INTEGER NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS event_issues_seq ON event_issues(seq)",
)

_EVENT_COLUMNS = "seq, guid, entity_guid, type, data, timestamp, user_id, sync_level"
_TOUCH_COLUMNS = (
    "seq, entity_guid, type, user_id, CASE WHEN type IN ("
    + ", ".join(f"'{t}'" for t in sorted(MEMBERSHIP_EVENTS))
    + ") THEN data END"
)
_INSERT_EVENT = (
    "INSERT OR IGNORE INTO events (guid, entity_guid, type, data, timestamp, user_id, sync_level) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_UPSERT_ENTITY = (
    "INSERT INTO entities (guid, type, entity_name, parent_guid, version, doc, last_seq) "
    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(guid) DO UPDATE SET type = excluded.type, "
    "entity_name = excluded.entity_name, parent_guid = excluded.parent_guid, "
    "version = excluded.version, doc = excluded.doc, last_seq = excluded.last_seq"
)
_INSERT_ISSUE = "INSERT INTO event_issues (event_guid, entity_guid, reason, seq) VALUES (?, ?, ?, ?)"


class SchemaVersionError(RuntimeError):
    """The file was written by a newer dcsync: reading it with this code could corrupt it."""


_dumps = codec.dumps


def parse_cursor(cursor: str | None) -> int:
    """The ingestion sequence a cursor stands for (0: the start); anything else is a caller bug."""
    if cursor is None:
        return 0
    if not isinstance(cursor, str) or not cursor.isascii() or not cursor.isdigit():
        raise ValueError(
            f"malformed event log cursor {cursor!r}: expected a cursor returned by this log "
            "(a decimal ingestion sequence) or None"
        )
    return int(cursor)


def _guid_param(value: Any) -> str | None:
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _referenced_guids(event: FormSubmission, into: set[str]) -> None:
    """Guids the fold will look up for ``event``, so a chunk can load them in one query.

    Only a hint: whatever the fold asks for beyond these (cascade members) is loaded one by one.
    """
    into.add(event.entity_guid)
    data = event.data
    members = data.get("members")
    if isinstance(members, list):
        for member in members:
            if isinstance(member, Mapping) and (guid := _guid_param(member.get("guid"))):
                into.add(guid)
    if guid := _guid_param(data.get("memberId")):
        into.add(guid)
    pairs = data.get("duplicates")
    first = pairs[0] if isinstance(pairs, list) and pairs else None
    if isinstance(first, Mapping) and (guid := _guid_param(first.get("entityGuid"))):
        into.add(guid)


def _event_row(event: FormSubmission) -> tuple[str, str, str, str, str, str, int]:
    return (
        event.guid,
        event.entity_guid,
        event.type,
        _dumps(event.data),
        event.timestamp,
        event.user_id,
        int(event.sync_level),
    )


def _event_from_row(row: sqlite3.Row | tuple[Any, ...]) -> FormSubmission:
    # Rows were validated on the way in; validating again on every read doubles the cost of a scan.
    return FormSubmission.stored(row[1], row[2], row[3], codec.loads(row[4]), row[5], row[6], row[7])


def _entity_from_doc(doc: str) -> Entity:
    return Entity.stored(codec.loads(doc))


class SqliteEventLog:
    """An :class:`~connector_core.eventlog.base.EventLog` in one SQLite file (WAL mode)."""

    def __init__(self, path: str | Path, *, chunk_size: int = 1000, read_only: bool = False) -> None:
        if chunk_size < 1:
            raise ValueError("chunk_size must be at least 1")
        self.path = str(path)
        self._chunk_size = chunk_size
        self._lock = threading.RLock()
        self.read_only = read_only
        if read_only:
            self._conn = self._open_read_only()
            return
        if self.path != ":memory:" and not self.path.startswith("file:"):
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(
            self.path,
            isolation_level=None,  # explicit BEGIN IMMEDIATE / COMMIT below
            check_same_thread=False,  # guarded by self._lock
            timeout=BUSY_TIMEOUT_MS / 1000,
        )
        try:
            self._conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = NORMAL")
            # Checkpoint the WAL every ~40 MB rather than every 4 MB: each checkpoint syncs the file,
            # and one append of 1,000 events alone dirties a few MB of (random-guid) index pages.
            self._conn.execute("PRAGMA wal_autocheckpoint = 10000")
            self._create_schema()
        except BaseException:
            self._conn.close()
            raise

    # -- lifecycle ---------------------------------------------------------------------------------

    def _open_read_only(self) -> sqlite3.Connection:
        """The log at ``path`` for reading (``status``, ``log stats``, a dry run): nothing is created.

        A file that does not exist, or that holds no event log yet, reads as an empty log kept in memory.
        """
        conn = connect_read_only(Path(self.path), BUSY_TIMEOUT_MS / 1000)
        if conn is not None:
            try:
                if has_table(conn, "meta"):
                    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
                    if row is not None and int(row[0]) > SCHEMA_VERSION:
                        raise SchemaVersionError(
                            f"event log {self.path} has schema version {row[0]}, newer than this dcsync "
                            f"understands ({SCHEMA_VERSION}): upgrade dcsync to open it"
                        )
                    return conn
            except BaseException:
                conn.close()
                raise
            conn.close()
        self._conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        self._create_schema()
        return self._conn

    def _create_schema(self) -> None:
        with self._write():
            self._conn.execute(_SCHEMA[0])
            row = self._conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            found = int(row[0]) if row else None
            if found is not None and found > SCHEMA_VERSION:
                raise SchemaVersionError(
                    f"event log {self.path} has schema version {found}, newer than this dcsync "
                    f"understands ({SCHEMA_VERSION}): upgrade dcsync to open it"
                )
            for statement in _SCHEMA[1:]:
                self._conn.execute(statement)
            if found is None:
                self._conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', ?)",
                    (str(SCHEMA_VERSION),),
                )

    def schema_version(self) -> int:
        with self._lock:
            row = self._conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            return int(row[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()  # a second close is a no-op

    def __enter__(self) -> SqliteEventLog:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[None]:
        """One write transaction, taken eagerly so two writers queue instead of failing mid-way."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            try:
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:  # a failed COMMIT may leave it open
                    self._conn.execute("ROLLBACK")
                raise

    # -- append ------------------------------------------------------------------------------------

    def append(self, events: Iterable[FormSubmission]) -> AppendResult:
        """Store and fold ``events`` in one transaction, a chunk at a time.

        ``events`` may be a stream of any length: chunks are inserted and folded inside the one
        transaction, so memory stays at one chunk while the call as a whole remains all-or-nothing
        (an exception from the stream itself rolls everything back too).
        """
        result = AppendResult()
        with self._write():
            for chunk in chunks(events, self._chunk_size):
                self._append_chunk(chunk, result)
        return result

    def _append_chunk(self, chunk: list[FormSubmission], result: AppendResult) -> None:
        conn = self._conn
        unique: dict[str, FormSubmission] = {}
        for event in chunk:
            if event.guid in unique:
                result.duplicates += 1
            else:
                unique[event.guid] = event
        # Within this write transaction nobody else inserts and AUTOINCREMENT never reuses a number,
        # so the rows above the old maximum are exactly those this chunk added, in insertion order.
        before = conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0]
        conn.executemany(_INSERT_EVENT, map(_event_row, unique.values()))
        inserted = conn.execute(
            "SELECT seq, guid FROM events WHERE seq > ? ORDER BY seq", (before,)
        ).fetchall()
        result.duplicates += len(unique) - len(inserted)
        if not inserted:
            return
        new = [(seq, unique[guid]) for seq, guid in inserted]
        result.new_guids.extend(guid for _seq, guid in inserted)
        self._fold_into_entities(new, result)

    def _fold_into_entities(self, new: list[tuple[int, FormSubmission]], result: AppendResult) -> None:
        touched: set[str] = set()
        for _seq, event in new:
            _referenced_guids(event, touched)
        stored: dict[str, Entity | None] = dict.fromkeys(touched)
        stored.update(self._load_entities(touched))

        def from_table(guid: str) -> Entity | None:
            if guid not in stored:  # e.g. the members of a cascade delete
                stored[guid] = self._load_entity(guid)
            return stored[guid]

        changes: dict[str, Entity | None] = {}
        last_seq: dict[str, int] = {}
        lookup = overlay(from_table, changes)
        issue_rows: list[tuple[str, str, str, int]] = []
        # One event per fold call so each changed entity knows the seq of the event that last
        # changed it; the overlay makes this equal to folding the chunk at once.
        for seq, event in new:
            folded = _entities.fold((event,), lookup)
            for issue in folded.issues:
                result.issues.append(issue)
                issue_rows.append((issue.event_guid, issue.entity_guid, issue.reason, seq))
            for guid, entity in folded.changed.items():
                changes[guid] = entity
                last_seq[guid] = seq

        upserts = []
        deletes = []
        for guid, entity in changes.items():
            if entity is None:
                deletes.append((guid,))
            else:
                upserts.append(
                    (
                        guid,
                        entity.type,
                        entity.entity_name,
                        entity.parent_guid,
                        entity.version,
                        _dumps(entity.to_json()),
                        last_seq[guid],
                    )
                )
        conn = self._conn
        if upserts:
            conn.executemany(_UPSERT_ENTITY, upserts)
        if deletes:
            conn.executemany("DELETE FROM entities WHERE guid = ?", deletes)
        if issue_rows:
            conn.executemany(_INSERT_ISSUE, issue_rows)

    def _load_entities(self, guids: Iterable[str]) -> dict[str, Entity]:
        found: dict[str, Entity] = {}
        batch = list(guids)
        for start in range(0, len(batch), _IN_CHUNK):
            part = batch[start : start + _IN_CHUNK]
            marks = ",".join("?" * len(part))
            for guid, doc in self._conn.execute(
                f"SELECT guid, doc FROM entities WHERE guid IN ({marks})", part
            ):
                found[guid] = _entity_from_doc(doc)
        return found

    def _load_entity(self, guid: str) -> Entity | None:
        if not isinstance(guid, str):
            return None  # the fold may probe with whatever an event carried; no such entity
        row = self._conn.execute("SELECT doc FROM entities WHERE guid = ?", (guid,)).fetchone()
        return _entity_from_doc(row[0]) if row else None

    # -- read --------------------------------------------------------------------------------------

    def get_events(self, guids: Iterable[str]) -> dict[str, FormSubmission]:
        """The stored events among ``guids`` (an import checks a page of its file against them)."""
        wanted = list(dict.fromkeys(guids))
        found: dict[str, FormSubmission] = {}
        with self._lock:
            for start in range(0, len(wanted), 500):
                part = wanted[start : start + 500]
                marks = ",".join("?" * len(part))
                for row in self._conn.execute(
                    f"SELECT {_EVENT_COLUMNS} FROM events WHERE guid IN ({marks})", part
                ).fetchall():
                    found[row[1]] = _event_from_row(row)
        return found

    def read(self, after: str | None, limit: int) -> EventPage:
        rows, cursor, at_end = self._page(_EVENT_COLUMNS, after, limit)
        return EventPage(events=[_event_from_row(r) for r in rows], cursor=cursor, at_end=at_end)

    def read_touches(self, after: str | None, limit: int) -> TouchPage:
        rows, cursor, at_end = self._page(_TOUCH_COLUMNS, after, limit)
        touches = [
            EventTouch(r[1], r[2], r[3], codec.loads(r[4]) if r[4] is not None else None) for r in rows
        ]
        return TouchPage(touches=touches, cursor=cursor, at_end=at_end)

    def _page(self, columns: str, after: str | None, limit: int) -> tuple[list[Any], str | None, bool]:
        """Rows of ``columns`` (the first is ``seq``) after ``after``: rows, next cursor, at end."""
        start = parse_cursor(after)
        if limit < 1:
            raise ValueError("limit must be at least 1")
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {columns} FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
                (start, limit + 1),
            ).fetchall()
            if not rows and start:
                self._check_not_beyond_head(start)
        at_end = len(rows) <= limit
        rows = rows[:limit]
        return rows, (str(rows[-1][0]) if rows else after), at_end

    def _check_not_beyond_head(self, start: int) -> None:
        """A cursor past the head comes from another (replaced or restored) log; following it would
        silently skip every event appended until the sequence catches up."""
        head = self._conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0]
        if start > head:
            raise ValueError(
                f"event log cursor {start} is beyond the head of {self.path} ({head}): "
                "the checkpoint belongs to another log (was the log replaced or restored?)"
            )

    def iter_events(self, after: str | None = None, page_size: int = 1000) -> Iterator[FormSubmission]:
        cursor = after
        while True:
            page = self.read(cursor, page_size)
            yield from page.events
            if page.at_end:
                return
            cursor = page.cursor

    def head(self) -> str | None:
        with self._lock:
            seq = self._conn.execute("SELECT max(seq) FROM events").fetchone()[0]
        return None if seq is None else str(seq)

    def count(self, after: str | None = None) -> int:
        start = parse_cursor(after)
        with self._lock:
            return int(
                self._conn.execute("SELECT count(*) FROM events WHERE seq > ?", (start,)).fetchone()[0]
            )

    # -- entities ----------------------------------------------------------------------------------

    def get_entity(self, guid: str) -> Entity | None:
        with self._lock:
            return self._load_entity(guid)

    def get_entities(self, guids: Iterable[str]) -> dict[str, Entity]:
        with self._lock:
            return self._load_entities(dict.fromkeys(guids))

    def iter_entities(self, page_size: int = 1000) -> Iterator[Entity]:
        """Every entity in guid order, a page per query (keyset paging: no OFFSET rescans)."""
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        last = ""
        while True:
            with self._lock:
                rows = self._conn.execute(
                    "SELECT guid, doc FROM entities WHERE guid > ? ORDER BY guid LIMIT ?",
                    (last, page_size),
                ).fetchall()
            for _guid, doc in rows:
                yield _entity_from_doc(doc)
            if len(rows) < page_size:
                return
            last = rows[-1][0]

    def iter_issues(self, after: str | None = None) -> Iterator[EventIssue]:
        """Events stored but not applicable (after a cursor), oldest first: what to fix."""
        last = parse_cursor(after)
        last_rowid = 0
        while True:
            with self._lock:
                rows = self._conn.execute(
                    "SELECT rowid, event_guid, entity_guid, reason FROM event_issues "
                    "WHERE seq > ? AND rowid > ? ORDER BY rowid LIMIT 1000",
                    (last, last_rowid),
                ).fetchall()
            for _rowid, event_guid, entity_guid, reason in rows:
                yield EventIssue(event_guid, entity_guid, reason)
            if len(rows) < 1000:
                return
            last_rowid = rows[-1][0]

    def stats(self) -> dict[str, Any]:
        with self._lock:
            conn = self._conn
            events = conn.execute("SELECT count(*) FROM events").fetchone()[0]
            by_type = dict(conn.execute("SELECT type, count(*) FROM entities GROUP BY type ORDER BY type"))
            by_name = {
                (name if name is not None else "(none)"): n
                for name, n in conn.execute(
                    "SELECT entity_name, count(*) FROM entities GROUP BY entity_name ORDER BY entity_name"
                )
            }
            issues = conn.execute("SELECT count(*) FROM event_issues").fetchone()[0]
        return {
            "events": events,
            "entities": sum(by_type.values()),
            "entities_by_type": by_type,
            "entities_by_name": by_name,
            "issues": issues,
            "head": self.head(),
        }

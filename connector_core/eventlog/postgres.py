"""dcsync's own event log in PostgreSQL: the SQLite log's semantics, for operators who outgrow one file.

Layout (in a configurable schema, ``dcsync`` by default): ``dcsync_events`` numbered by a ``BIGSERIAL seq``
that is the cursor, ``dcsync_entities`` folded from the events in the same transaction,
``dcsync_event_issues`` for events stored but not applicable, and ``dcsync_meta`` for the layout version.
Guids are ``COLLATE "C"`` so keyset pages order them byte-wise, as SQLite and Python do.

Why appends take a lock: a sequence hands out numbers when rows are inserted, not when they commit. With two
writers, transaction A can take seq 11, B seq 12, and B commit first; a reader at cursor 10 then sees 12,
moves its cursor to 12, and never sees 11 once A commits. Every append therefore takes a transaction-level
advisory lock first, so appends commit one after another, in seq order, and a reader can never pass a seq that
is still to come. Reads take no lock. The cost is that appends to one log do not run in parallel, which they
could not usefully do anyway: the entity fold of one append depends on the previous one."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql

from connector_core import entities as _entities
from connector_core._postgres import advisory_key, check_identifier, connect, redact_url
from connector_core.entities import Entity, EventIssue, overlay
from connector_core.eventlog.base import AppendResult, EventPage, EventTouch, TouchPage
from connector_core.eventlog.sqlite import _TOUCH_COLUMNS, _dumps, _referenced_guids, parse_cursor
from connector_core.events import FormSubmission
from connector_core.streams import chunks

SCHEMA_VERSION = 1
DEFAULT_SCHEMA = "dcsync"


class SchemaVersionError(RuntimeError):
    """The schema was written by a newer dcsync: reading it with this code could corrupt it."""


_DDL = (
    "CREATE TABLE IF NOT EXISTS {s}.dcsync_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS {s}.dcsync_events (
        seq BIGSERIAL PRIMARY KEY,
        guid TEXT COLLATE "C" NOT NULL UNIQUE,
        entity_guid TEXT COLLATE "C" NOT NULL,
        type TEXT NOT NULL,
        data JSONB NOT NULL,
        timestamp TEXT NOT NULL,
        user_id TEXT NOT NULL,
        sync_level SMALLINT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS {s}.dcsync_entities (
        guid TEXT COLLATE "C" PRIMARY KEY,
        type TEXT NOT NULL,
        entity_name TEXT,
        parent_guid TEXT COLLATE "C",
        version INTEGER NOT NULL,
        doc JSONB NOT NULL,
        last_seq BIGINT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS dcsync_entities_entity_name ON {s}.dcsync_entities (entity_name)",
    "CREATE INDEX IF NOT EXISTS dcsync_entities_parent_guid ON {s}.dcsync_entities (parent_guid)",
    """CREATE TABLE IF NOT EXISTS {s}.dcsync_event_issues (
        id BIGSERIAL PRIMARY KEY,
        event_guid TEXT NOT NULL,
        entity_guid TEXT NOT NULL,
        reason TEXT NOT NULL,
        seq BIGINT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS dcsync_event_issues_seq ON {s}.dcsync_event_issues (seq)",
)

_EVENT_COLUMNS = "seq, guid, entity_guid, type, data, timestamp, user_id, sync_level"


# One statement per chunk: arrays in, the rows that were new out. ORDER BY ord makes the sequence follow the
# caller's order; ON CONFLICT DO NOTHING makes a known guid a no-op. Arrays go in binary (%b): in text form
# psycopg escapes every quote of every JSON document, which cost more than the whole insert.
_INSERT_EVENTS = """
    INSERT INTO {s}.dcsync_events (guid, entity_guid, type, data, timestamp, user_id, sync_level)
    SELECT g, e, t, d::jsonb, ts, u, l
    FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::text[], %b::text[], %b::smallint[])
         WITH ORDINALITY AS x(g, e, t, d, ts, u, l, ord)
    ORDER BY ord
    ON CONFLICT (guid) DO NOTHING
    RETURNING seq, guid
"""
_UPSERT_ENTITIES = """
    INSERT INTO {s}.dcsync_entities (guid, type, entity_name, parent_guid, version, doc, last_seq)
    SELECT g, t, n, p, v, d::jsonb, l
    FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::int[], %b::text[], %b::bigint[])
         AS x(g, t, n, p, v, d, l)
    ON CONFLICT (guid) DO UPDATE SET type = excluded.type, entity_name = excluded.entity_name,
        parent_guid = excluded.parent_guid, version = excluded.version, doc = excluded.doc,
        last_seq = excluded.last_seq
"""
_INSERT_ISSUES = """
    INSERT INTO {s}.dcsync_event_issues (event_guid, entity_guid, reason, seq)
    SELECT * FROM unnest(%b::text[], %b::text[], %b::text[], %b::bigint[])
"""


def _event_from_row(row: tuple[Any, ...]) -> FormSubmission:
    # Rows were validated on the way in; psycopg has already decoded the JSONB.
    return FormSubmission.stored(row[1], row[2], row[3], row[4], row[5], row[6], row[7])


class PostgresEventLog:
    """An :class:`~connector_core.eventlog.base.EventLog` in PostgreSQL (psycopg 3).

    One instance owns one connection in autocommit mode: each read is one statement and sees every append
    committed before it; each append is one explicit transaction. Calls are serialised by a lock, so an
    instance may be handed between threads; open one instance per thread for parallel readers.
    """

    def __init__(
        self,
        url: str,
        *,
        schema: str = DEFAULT_SCHEMA,
        chunk_size: int = 1000,
        connection: psycopg.Connection[Any] | None = None,
        read_only: bool = False,
    ) -> None:
        if chunk_size < 1:
            raise ValueError("chunk_size must be at least 1")
        self.schema = check_identifier(schema, "event log schema")
        self.where = f"{redact_url(url)} (schema {schema})"
        self._chunk_size = chunk_size
        self._lock = threading.RLock()
        self.read_only = read_only
        self.exists = True
        self._conn = connection or connect(url, application_name="dcsync eventlog", read_only=read_only)
        self._append_key = advisory_key("dcsync-eventlog-append", schema)
        s = sql.Identifier(schema)

        def q(text: str) -> str:
            return sql.SQL(text).format(s=s).as_string(self._conn)

        self._q = q
        self._insert_events = q(_INSERT_EVENTS)
        self._upsert_entities = q(_UPSERT_ENTITIES)
        self._insert_issues = q(_INSERT_ISSUES)
        try:
            if read_only:
                self.exists = self._check_schema()
            else:
                self._create_schema()
        except BaseException:
            self._conn.close()
            raise

    # -- lifecycle ---------------------------------------------------------------------------------

    def _check_schema(self) -> bool:
        """For a read-only log: whether its tables exist (nothing is created); a newer layout is refused."""
        with self._lock:
            table = f'"{self.schema}".dcsync_events'
            found = self._conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()
            if found is None or found[0] is None:
                return False
            row = self._conn.execute(
                self._q("SELECT value FROM {s}.dcsync_meta WHERE key = 'schema_version'")
            ).fetchone()
        if row is not None and int(row[0]) > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"event log {self.where} has schema version {row[0]}, newer than this dcsync "
                f"understands ({SCHEMA_VERSION}): upgrade dcsync to open it"
            )
        return True

    def _create_schema(self) -> None:
        with self._lock, self._conn.transaction():
            # CREATE ... IF NOT EXISTS is not safe against a second process doing the same at once.
            self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (advisory_key("dcsync-ddl", self.schema),))
            self._conn.execute(self._q("CREATE SCHEMA IF NOT EXISTS {s}"))
            self._conn.execute(self._q(_DDL[0]))
            row = self._conn.execute(
                self._q("SELECT value FROM {s}.dcsync_meta WHERE key = 'schema_version'")
            ).fetchone()
            found = int(row[0]) if row else None
            if found is not None and found > SCHEMA_VERSION:
                raise SchemaVersionError(
                    f"event log {self.where} has schema version {found}, newer than this dcsync "
                    f"understands ({SCHEMA_VERSION}): upgrade dcsync to open it"
                )
            for statement in _DDL[1:]:
                self._conn.execute(self._q(statement))
            if found is None:
                self._conn.execute(
                    self._q("INSERT INTO {s}.dcsync_meta (key, value) VALUES ('schema_version', %s)"),
                    (str(SCHEMA_VERSION),),
                )

    def schema_version(self) -> int:
        with self._lock:
            row = self._conn.execute(
                self._q("SELECT value FROM {s}.dcsync_meta WHERE key = 'schema_version'")
            ).fetchone()
        assert row is not None
        return int(row[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()  # a second close is a no-op

    def __enter__(self) -> PostgresEventLog:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @contextmanager
    def _cursor(self) -> Iterator[psycopg.Cursor[Any]]:
        with self._lock, self._conn.cursor() as cur:
            yield cur

    # -- append ------------------------------------------------------------------------------------

    def append(self, events: Iterable[FormSubmission]) -> AppendResult:
        """Store and fold ``events`` in one transaction, a chunk at a time (see the module docstring)."""
        result = AppendResult()
        with self._lock, self._conn.transaction(), self._conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (self._append_key,))
            for chunk in chunks(events, self._chunk_size):
                self._append_chunk(cur, chunk, result)
        return result

    def _append_chunk(
        self, cur: psycopg.Cursor[Any], chunk: list[FormSubmission], result: AppendResult
    ) -> None:
        unique: dict[str, FormSubmission] = {}
        for event in chunk:
            if event.guid in unique:
                result.duplicates += 1
            else:
                unique[event.guid] = event
        columns: list[list[Any]] = [[], [], [], [], [], [], []]
        for event in unique.values():
            columns[0].append(event.guid)
            columns[1].append(event.entity_guid)
            columns[2].append(event.type)
            columns[3].append(_dumps(event.data))
            columns[4].append(event.timestamp)
            columns[5].append(event.user_id)
            columns[6].append(int(event.sync_level))
        inserted = sorted(cur.execute(self._insert_events, columns).fetchall())
        result.duplicates += len(unique) - len(inserted)
        if not inserted:
            return
        result.new_guids.extend(guid for _seq, guid in inserted)
        self._fold_into_entities(cur, [(seq, unique[guid]) for seq, guid in inserted], result)

    def _fold_into_entities(
        self, cur: psycopg.Cursor[Any], new: list[tuple[int, FormSubmission]], result: AppendResult
    ) -> None:
        touched: set[str] = set()
        for _seq, event in new:
            _referenced_guids(event, touched)
        stored: dict[str, Entity | None] = dict.fromkeys(touched)
        stored.update(self._load_entities(cur, touched))

        def from_table(guid: str) -> Entity | None:
            if guid not in stored:  # e.g. the members of a cascade delete
                found = self._load_entities(cur, [guid]) if isinstance(guid, str) else {}
                stored[guid] = found.get(guid)
            return stored[guid]

        changes: dict[str, Entity | None] = {}
        last_seq: dict[str, int] = {}
        lookup = overlay(from_table, changes)
        issues: list[list[Any]] = [[], [], [], []]
        for seq, event in new:  # one event per fold call, so each entity knows its last event's seq
            folded = _entities.fold((event,), lookup)
            for issue in folded.issues:
                result.issues.append(issue)
                for column, value in zip(
                    issues, (issue.event_guid, issue.entity_guid, issue.reason, seq), strict=True
                ):
                    column.append(value)
            for guid, entity in folded.changed.items():
                changes[guid] = entity
                last_seq[guid] = seq

        upserts: list[list[Any]] = [[], [], [], [], [], [], []]
        deletes: list[str] = []
        for guid, entity in changes.items():
            if entity is None:
                deletes.append(guid)
                continue
            row = (
                guid,
                entity.type,
                entity.entity_name,
                entity.parent_guid,
                entity.version,
                _dumps(entity.to_json()),
                last_seq[guid],
            )
            for column, value in zip(upserts, row, strict=True):
                column.append(value)
        if upserts[0]:
            cur.execute(self._upsert_entities, upserts)
        if deletes:
            cur.execute(self._q("DELETE FROM {s}.dcsync_entities WHERE guid = ANY(%s)"), (deletes,))
        if issues[0]:
            cur.execute(self._insert_issues, issues)

    def _load_entities(self, cur: psycopg.Cursor[Any], guids: Iterable[str]) -> dict[str, Entity]:
        wanted = [g for g in guids if isinstance(g, str)]
        if not wanted:
            return {}
        rows = cur.execute(
            self._q("SELECT guid, doc FROM {s}.dcsync_entities WHERE guid = ANY(%s)"), (wanted,)
        ).fetchall()
        return {guid: Entity.stored(doc) for guid, doc in rows}

    # -- read --------------------------------------------------------------------------------------

    def get_events(self, guids: Iterable[str]) -> dict[str, FormSubmission]:
        """The stored events among ``guids`` (an import checks a page of its file against them)."""
        wanted = list(dict.fromkeys(guids))
        if not wanted:
            return {}
        with self._cursor() as cur:
            rows = cur.execute(
                self._q(f"SELECT {_EVENT_COLUMNS} FROM {{s}}.dcsync_events WHERE guid = ANY(%s)"), (wanted,)
            ).fetchall()
        return {row[1]: _event_from_row(row) for row in rows}

    def read(self, after: str | None, limit: int) -> EventPage:
        rows, cursor, at_end = self._page(_EVENT_COLUMNS, after, limit)
        return EventPage(events=[_event_from_row(r) for r in rows], cursor=cursor, at_end=at_end)

    def read_touches(self, after: str | None, limit: int) -> TouchPage:
        rows, cursor, at_end = self._page(_TOUCH_COLUMNS, after, limit)
        return TouchPage(
            touches=[EventTouch(r[1], r[2], r[3], r[4]) for r in rows], cursor=cursor, at_end=at_end
        )

    def _page(self, columns: str, after: str | None, limit: int) -> tuple[list[Any], str | None, bool]:
        """Rows of ``columns`` (the first is ``seq``) after ``after``: rows, next cursor, at end."""
        start = parse_cursor(after)
        if limit < 1:
            raise ValueError("limit must be at least 1")
        with self._cursor() as cur:
            rows = cur.execute(
                self._q(f"SELECT {columns} FROM {{s}}.dcsync_events WHERE seq > %s ORDER BY seq LIMIT %s"),
                (start, limit + 1),
            ).fetchall()
            if not rows and start:
                self._check_not_beyond_head(cur, start)
        at_end = len(rows) <= limit
        rows = rows[:limit]
        return rows, (str(rows[-1][0]) if rows else after), at_end

    def _check_not_beyond_head(self, cur: psycopg.Cursor[Any], start: int) -> None:
        """A cursor past the head belongs to another (replaced or restored) log; following it would
        silently skip every event appended until the sequence catches up."""
        row = cur.execute(self._q("SELECT coalesce(max(seq), 0) FROM {s}.dcsync_events")).fetchone()
        head = int(row[0]) if row else 0
        if start > head:
            raise ValueError(
                f"event log cursor {start} is beyond the head of {self.where} ({head}): "
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
        with self._cursor() as cur:
            row = cur.execute(self._q("SELECT max(seq) FROM {s}.dcsync_events")).fetchone()
        return None if row is None or row[0] is None else str(row[0])

    def count(self, after: str | None = None) -> int:
        start = parse_cursor(after)
        with self._cursor() as cur:
            row = cur.execute(
                self._q("SELECT count(*) FROM {s}.dcsync_events WHERE seq > %s"), (start,)
            ).fetchone()
        return int(row[0]) if row else 0

    # -- entities ----------------------------------------------------------------------------------

    def get_entity(self, guid: str) -> Entity | None:
        if not isinstance(guid, str):
            return None
        with self._cursor() as cur:
            return self._load_entities(cur, [guid]).get(guid)

    def get_entities(self, guids: Iterable[str]) -> dict[str, Entity]:
        with self._cursor() as cur:
            return self._load_entities(cur, list(dict.fromkeys(guids)))

    def iter_entities(self, page_size: int = 1000) -> Iterator[Entity]:
        """Every entity in guid order, a page per query (keyset paging: no OFFSET rescans)."""
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        last = ""
        while True:
            with self._cursor() as cur:
                rows = cur.execute(
                    self._q(
                        "SELECT guid, doc FROM {s}.dcsync_entities WHERE guid > %s ORDER BY guid LIMIT %s"
                    ),
                    (last, page_size),
                ).fetchall()
            for _guid, doc in rows:
                yield Entity.stored(doc)
            if len(rows) < page_size:
                return
            last = rows[-1][0]

    def iter_issues(self, after: str | None = None) -> Iterator[EventIssue]:
        """Events stored but not applicable (after a cursor), oldest first: what to fix."""
        start = parse_cursor(after)
        last_id = 0
        while True:
            with self._cursor() as cur:
                rows = cur.execute(
                    self._q(
                        "SELECT id, event_guid, entity_guid, reason FROM {s}.dcsync_event_issues "
                        "WHERE seq > %s AND id > %s ORDER BY id LIMIT 1000"
                    ),
                    (start, last_id),
                ).fetchall()
            for _id, event_guid, entity_guid, reason in rows:
                yield EventIssue(event_guid, entity_guid, reason)
            if len(rows) < 1000:
                return
            last_id = rows[-1][0]

    def stats(self) -> dict[str, Any]:
        with self._cursor() as cur:
            events_row = cur.execute(self._q("SELECT count(*), max(seq) FROM {s}.dcsync_events")).fetchone()
            assert events_row is not None
            by_type = dict(
                cur.execute(
                    self._q("SELECT type, count(*) FROM {s}.dcsync_entities GROUP BY type ORDER BY type")
                ).fetchall()
            )
            by_name = {
                (name if name is not None else "(none)"): n
                for name, n in cur.execute(
                    self._q(
                        "SELECT entity_name, count(*) FROM {s}.dcsync_entities "
                        "GROUP BY entity_name ORDER BY entity_name"
                    )
                ).fetchall()
            }
            issues_row = cur.execute(self._q("SELECT count(*) FROM {s}.dcsync_event_issues")).fetchone()
        return {
            "events": int(events_row[0]),
            "entities": sum(by_type.values()),
            "entities_by_type": by_type,
            "entities_by_name": by_name,
            "issues": int(issues_row[0]) if issues_row else 0,
            "head": None if events_row[1] is None else str(events_row[1]),
        }

    def size_bytes(self) -> int:
        """Bytes on disk of this log's tables and indexes (what ``bench/eventlog.py`` reports)."""
        with self._cursor() as cur:
            row = cur.execute(
                "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relkind = 'r'",
                (self.schema,),
            ).fetchone()
        return int(row[0]) if row else 0

"""dcsync's own event log in PostgreSQL: the SQLite log's semantics, for operators who outgrow one file.

The queries and the fold are :mod:`connector_core.eventlog.store`'s, the tables
:mod:`connector_core.eventlog.schema`'s, here in a configurable schema (``dcsync`` by default) and named
``dcsync_events``, ``dcsync_entities``, ``dcsync_event_issues``, ``dcsync_cascades`` and ``dcsync_meta``.
Guids are ``COLLATE "C"`` so keyset pages order them byte-wise, as SQLite and Python do.

Why appends take a lock: a sequence hands out numbers when rows are inserted, not when they commit. With two
writers, transaction A can take seq 11, B seq 12, and B commit first; a reader at cursor 10 then sees 12,
moves its cursor to 12, and never sees 11 once A commits. Every append therefore takes a transaction-level
advisory lock first, so appends commit one after another, in seq order, and a reader can never pass a seq that
is still to come. Reads take no lock. The cost is that appends to one log do not run in parallel, which they
could not usefully do anyway: the entity fold of one append depends on the previous one."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from connector_core._postgres import advisory_key, check_identifier, connect, redact_url
from connector_core._sql import PostgresDatabase, SchemaVersionError, existing_version
from connector_core.eventlog.schema import LAYOUT
from connector_core.eventlog.store import (
    SCHEMA_VERSION,
    EntityRow,
    EntityUpdate,
    EventRow,
    IssueRow,
    SqlEventLog,
)

__all__ = ["DEFAULT_SCHEMA", "NOTIFY_CHANNEL", "SCHEMA_VERSION", "PostgresEventLog", "SchemaVersionError"]

DEFAULT_SCHEMA = "dcsync"
# Raised by every append that added events, inside its transaction, so listeners (``dcsync serve``) hear it
# exactly when the events become visible: PostgreSQL delivers a NOTIFY at COMMIT, and never on ROLLBACK. The
# payload is the log's schema: one channel serves every log in a database.
NOTIFY_CHANNEL = "dcsync_eventlog"

_NAMES = {
    "n": "dcsync_",
    "issue_id": "id BIGSERIAL PRIMARY KEY,",
    "issue_key": "id",
    "without_rowid": "",
}  # eventlog/schema.py

# One statement per chunk: arrays in, the new rows' seqs out. ORDER BY ord makes the sequence follow the
# caller's order; the store has left out every guid the log holds already. Arrays go in binary (%b): in text
# form psycopg escapes every quote of every JSON document, which cost more than the whole insert.
_INSERT_EVENTS = """
    INSERT INTO {s}.dcsync_events (guid, entity_guid, type, data, timestamp, user_id, sync_level)
    SELECT g, e, t, d::jsonb, ts, u, l
    FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::text[], %b::text[], %b::smallint[])
         WITH ORDINALITY AS x(g, e, t, d, ts, u, l, ord)
    ORDER BY ord
    RETURNING seq, guid
"""
_INSERT_ENTITIES = """
    INSERT INTO {s}.dcsync_entities (guid, type, entity_name, parent_guid, version, doc, last_seq)
    SELECT g, t, n, p, v, d::jsonb, l
    FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::int[], %b::text[], %b::bigint[])
         AS x(g, t, n, p, v, d, l)
    RETURNING id, guid
"""
# The guid keys of the rows just inserted, as the store computed them for its probes: computing them again
# in SQL (GUID_KEY_POSTGRES: md5, text and bit casts) cost more per row than this second round trip per chunk.
_INSERT_KEYS = "INSERT INTO {s}.dcsync_{level} (guid_key, ref) SELECT * FROM unnest(%b::int[], %b::bigint[])"
_INSERT_EVENT_KEYS = _INSERT_KEYS.replace("{level}", "event_keys_recent")
_INSERT_ENTITY_KEYS = _INSERT_KEYS.replace("{level}", "entity_keys_recent")
_UPDATE_ENTITIES = """
    UPDATE {s}.dcsync_entities AS e SET type = x.t, entity_name = x.n, parent_guid = x.p, version = x.v,
        doc = x.d::jsonb, last_seq = x.l
    FROM unnest(%b::text[], %b::text[], %b::text[], %b::int[], %b::text[], %b::bigint[], %b::bigint[])
         AS x(t, n, p, v, d, l, i)
    WHERE e.id = x.i
"""
_INSERT_ISSUES = """
    INSERT INTO {s}.dcsync_event_issues (event_guid, entity_guid, reason, seq)
    SELECT * FROM unnest(%b::text[], %b::text[], %b::text[], %b::bigint[])
"""


def _columns(rows: list[Any]) -> list[list[Any]]:
    return [list(column) for column in zip(*rows, strict=True)]


class PostgresEventLog(SqlEventLog):
    """An :class:`~connector_core.eventlog.base.EventLog` in PostgreSQL (psycopg 3).

    One instance owns one connection in autocommit mode: each read is one statement and sees every append
    committed before it; each append is one explicit transaction.
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
        self.schema = check_identifier(schema, "event log schema")
        self.read_only = read_only
        self.exists = True
        conn = connection or connect(url, application_name="dcsync eventlog", read_only=read_only)
        db = PostgresDatabase(conn, schema, table_prefix="dcsync_", names=_NAMES)
        self._append_key = advisory_key("dcsync-eventlog-append", schema)
        # %b (binary arrays) is psycopg's own: these three statements are this backend's, not shared text.
        prefix = f'"{schema}".'
        self._insert_events_sql = _INSERT_EVENTS.replace("{s}.", prefix)
        self._insert_entities_sql = _INSERT_ENTITIES.replace("{s}.", prefix)
        self._update_entities_sql = _UPDATE_ENTITIES.replace("{s}.", prefix)
        self._insert_issues_sql = _INSERT_ISSUES.replace("{s}.", prefix)
        self._insert_event_keys_sql = _INSERT_EVENT_KEYS.replace("{s}.", prefix)
        self._insert_entity_keys_sql = _INSERT_ENTITY_KEYS.replace("{s}.", prefix)
        where = f"{redact_url(url)} (schema {schema})"
        if read_only:  # nothing is created: a missing schema is reported (``exists``) and reads as empty
            current = existing_version(db, LAYOUT, "meta", f"event log {where}")
            self.exists = current is not None
            if current is not None and current < SCHEMA_VERSION:
                PostgresEventLog(
                    url, schema=schema, chunk_size=chunk_size
                ).close()  # upgraded, as a run would
            super().__init__(db, where, chunk_size, lay_out=False)
            return
        super().__init__(db, where, chunk_size)

    # One level of guid keys: PostgreSQL writes a dirtied page once per checkpoint, not once per commit,
    # so random inserts into one key table cost it little, and merges only wrote every key twice (measured:
    # 1,000,000 events appended 3.5% faster without them).
    merges_keys = False

    def __enter__(self) -> PostgresEventLog:
        return self

    @contextmanager
    def _append_transaction(self) -> Iterator[None]:
        with self._db.transaction():
            self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (self._append_key,))
            yield

    def _insert_events(self, rows: list[EventRow]) -> list[tuple[int, str]]:
        if not rows:
            return []
        added = sorted(self._conn.execute(self._insert_events_sql, _columns(rows)[1:]).fetchall())
        self._insert_keys(self._insert_event_keys_sql, rows, added)
        if added:  # one per transaction is enough: PostgreSQL folds identical notifications of one commit
            self._conn.execute("SELECT pg_notify(%s, %s)", (NOTIFY_CHANNEL, self.schema))
        return added

    def _insert_entities(self, rows: list[EntityRow]) -> None:
        added = self._conn.execute(self._insert_entities_sql, _columns(rows)[1:]).fetchall()
        self._insert_keys(self._insert_entity_keys_sql, rows, added)

    def _insert_keys(self, sql: str, rows: list[Any], added: list[tuple[int, str]]) -> None:
        """The recent key level's rows for ``added`` (``(ref, guid)``), keyed as ``rows`` (key first)."""
        if added:
            key_of = {row[1]: row[0] for row in rows}
            self._conn.execute(sql, [[key_of[guid] for _ref, guid in added], [ref for ref, _guid in added]])

    def _update_entities(self, rows: list[EntityUpdate]) -> None:
        self._conn.execute(self._update_entities_sql, _columns(rows))

    def _insert_issues(self, rows: list[IssueRow]) -> None:
        self._conn.execute(self._insert_issues_sql, _columns(rows))

    def size_bytes(self) -> int:
        """Bytes on disk of this log's tables and indexes (what ``bench/eventlog.py`` reports)."""
        with self._lock:
            row = self._conn.execute(
                "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relkind = 'r'",
                (self.schema,),
            ).fetchone()
        return int(row[0]) if row else 0

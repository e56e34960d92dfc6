"""dcsync's state store in PostgreSQL: SQLite's semantics, shared by dcsync processes on many machines.

Same tables, same migrations, same numbering as ``state/sqlite.py`` (a store moves between backends with the
same meaning), in a configurable schema (``dcsync`` by default); JSON columns are ``JSONB`` and keys are
``COLLATE "C"`` so pages order as they do in SQLite. A batch's outcome is one transaction, as there.
Migrations run one per transaction under an advisory lock, so two processes starting at once do not both
migrate.

The connector lease (connector_core/state/lease.py) is a session-level advisory lock keyed by schema and
connector, held on a connection of its own for the length of the run, plus a row in ``dcsync_leases`` naming
the holder (host, pid, start) so that a second process can say who has it. PostgreSQL releases the lock when
the holder's session ends, whether it exited, crashed or lost its machine (TCP keepalives bound the last case
to about a minute and a half). The lease table lives outside the versioned migrations: it is this backend's
own, and keeping it out keeps the version numbers equal to SQLite's.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from connector_core._postgres import advisory_key, check_identifier, connect, redact_url
from connector_core.events import now_timestamp
from connector_core.state._rows import keyset_pages
from connector_core.state.base import (
    Conflict,
    DeadLetter,
    Direction,
    DuplicateExternalIdError,
    Link,
    OpenCounts,
    Parked,
    RunRecord,
)
from connector_core.state.lease import ConnectorBusy, LeaseHolder, this_process

log = logging.getLogger("dcsync.state")

DEFAULT_SCHEMA = "dcsync"
DEAD_LETTER_CLOSED = frozenset({"replayed", "discarded"})
FAILED_OUTCOMES = ("failed", "interrupted", "abandoned")

Migration = Sequence[str]

MIGRATIONS: tuple[Migration, ...] = (
    # 1: the initial layout
    (
        """CREATE TABLE {s}.checkpoints (
            connector TEXT COLLATE "C" NOT NULL,
            direction TEXT NOT NULL,
            value TEXT,
            updated_at TEXT NOT NULL,
            PRIMARY KEY (connector, direction)
        )""",
        """CREATE TABLE {s}.links (
            connector TEXT COLLATE "C" NOT NULL,
            entity_guid TEXT COLLATE "C" NOT NULL,
            external_id TEXT COLLATE "C" NOT NULL,
            entity_name TEXT,
            snapshot JSONB NOT NULL,
            remote_version TEXT,
            synced_at TEXT,
            deleted BOOLEAN NOT NULL DEFAULT false,
            PRIMARY KEY (connector, entity_guid),
            UNIQUE (connector, external_id)
        )""",
        """CREATE TABLE {s}.dead_letters (
            id BIGSERIAL PRIMARY KEY,
            connector TEXT COLLATE "C" NOT NULL,
            direction TEXT NOT NULL,
            ref TEXT COLLATE "C" NOT NULL,
            reason TEXT NOT NULL,
            payload JSONB NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 1,
            status TEXT NOT NULL DEFAULT 'open',
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )""",
        # at most one *open* dead letter per record; closed ones are history
        """CREATE UNIQUE INDEX dead_letters_open ON {s}.dead_letters (connector, direction, ref)
            WHERE status = 'open'""",
        "CREATE INDEX dead_letters_status ON {s}.dead_letters (status, connector)",
        """CREATE TABLE {s}.runs (
            id BIGSERIAL PRIMARY KEY,
            connector TEXT COLLATE "C" NOT NULL,
            direction TEXT NOT NULL,
            trigger TEXT NOT NULL,
            started_at TEXT NOT NULL,
            finished_at TEXT,
            outcome TEXT NOT NULL,
            counts JSONB NOT NULL,
            error TEXT
        )""",
        "CREATE INDEX runs_connector ON {s}.runs (connector, id)",
    ),
    # 2: three-way merge base on links; create intents; parked children; conflicts
    (
        "ALTER TABLE {s}.links ADD COLUMN base JSONB NOT NULL DEFAULT '{{}}'",
        """CREATE TABLE {s}.intents (
            connector TEXT COLLATE "C" NOT NULL,
            ref TEXT COLLATE "C" NOT NULL,
            created_at TEXT NOT NULL,
            PRIMARY KEY (connector, ref)
        )""",
        """CREATE TABLE {s}.parked (
            connector TEXT COLLATE "C" NOT NULL,
            entity_guid TEXT COLLATE "C" NOT NULL,
            parent_guid TEXT NOT NULL,
            reason TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 1,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            PRIMARY KEY (connector, entity_guid)
        )""",
        """CREATE TABLE {s}.conflicts (
            id BIGSERIAL PRIMARY KEY,
            connector TEXT COLLATE "C" NOT NULL,
            entity_guid TEXT COLLATE "C" NOT NULL,
            external_id TEXT NOT NULL,
            policy TEXT NOT NULL,
            status TEXT NOT NULL,
            resolution TEXT,
            base JSONB NOT NULL,
            local JSONB NOT NULL,
            remote JSONB NOT NULL,
            remote_version TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )""",
        """CREATE UNIQUE INDEX conflicts_open ON {s}.conflicts (connector, entity_guid)
            WHERE status = 'open'""",
    ),
    # 3: scheduled runs claimed per tick, so schedulers sharing a store run each tick once
    (
        """CREATE TABLE {s}.ticks (
            connector TEXT COLLATE "C" NOT NULL,
            direction TEXT NOT NULL,
            tick TEXT NOT NULL,
            holder TEXT NOT NULL,
            claimed_at TEXT NOT NULL,
            PRIMARY KEY (connector, direction, tick)
        )""",
    ),
)
"""Ordered like ``state.sqlite.MIGRATIONS``: migration ``i`` takes version ``i`` to ``i + 1``. Only append."""

_LEASES = """CREATE TABLE IF NOT EXISTS {s}.dcsync_leases (
    connector TEXT COLLATE "C" PRIMARY KEY,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    started_at TEXT NOT NULL
)"""

_LINK_COLUMNS = (
    "connector, entity_guid, external_id, entity_name, snapshot, remote_version, synced_at, deleted, base"
)
_PARKED_COLUMNS = "connector, entity_guid, parent_guid, reason, attempts, created_at, updated_at"
_CONFLICT_COLUMNS = (
    "id, connector, entity_guid, external_id, policy, status, resolution, base, local, remote, "
    "remote_version, created_at, updated_at"
)
_DEAD_LETTER_COLUMNS = (
    "id, connector, direction, ref, reason, payload, attempts, status, created_at, updated_at"
)
_RUN_COLUMNS = "id, connector, direction, trigger, started_at, finished_at, outcome, counts, error"


class SchemaVersionError(RuntimeError):
    """The schema was written by a newer dcsync: this code cannot know what its tables mean."""


def _link_from_row(row: tuple[Any, ...]) -> Link:
    return Link(
        connector=row[0],
        entity_guid=row[1],
        external_id=row[2],
        entity_name=row[3],
        snapshot=row[4],
        remote_version=row[5],
        synced_at=row[6],
        deleted=bool(row[7]),
        base=row[8],
    )


def _dead_letter_from_row(row: tuple[Any, ...]) -> DeadLetter:
    return DeadLetter(
        id=row[0],
        connector=row[1],
        direction=Direction(row[2]),
        ref=row[3],
        reason=row[4],
        payload=row[5],
        attempts=row[6],
        status=row[7],
        created_at=row[8],
        updated_at=row[9],
    )


def _run_from_row(row: tuple[Any, ...]) -> RunRecord:
    return RunRecord(
        id=row[0],
        connector=row[1],
        direction=row[2],
        trigger=row[3],
        started_at=row[4],
        finished_at=row[5],
        outcome=row[6],
        counts=row[7],
        error=row[8],
    )


def _conflict_from_row(row: tuple[Any, ...]) -> Conflict:
    return Conflict(*row)


class PostgresStateTxn:
    """The writes of one ``transaction()`` block; unusable once the block has ended, so a stray write can
    never land outside the transaction it was meant for."""

    def __init__(self, store: PostgresStateStore, cur: psycopg.Cursor[Any]) -> None:
        self._store = store
        self._cursor: psycopg.Cursor[Any] | None = cur

    def _c(self) -> psycopg.Cursor[Any]:
        if self._cursor is None:
            raise RuntimeError("this state transaction has already ended")
        return self._cursor

    def _end(self) -> None:
        self._cursor = None

    def _q(self, text: str) -> str:
        return self._store._q(text)

    def set_checkpoint(self, connector: str, direction: Direction, value: str | None) -> None:
        self._c().execute(
            self._q(
                "INSERT INTO {s}.checkpoints (connector, direction, value, updated_at) "
                "VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (connector, direction) DO UPDATE SET value = excluded.value, "
                "updated_at = excluded.updated_at"
            ),
            (connector, Direction(direction).value, value, now_timestamp()),
        )

    def upsert_link(self, link: Link) -> None:
        self.upsert_links([link])

    def upsert_links(self, links: Iterable[Link]) -> None:
        rows = [
            (
                link.connector,
                link.entity_guid,
                str(link.external_id),
                link.entity_name,
                Jsonb(link.snapshot),
                link.remote_version,
                link.synced_at,
                bool(link.deleted),
                Jsonb(link.base),
            )
            for link in links
        ]
        if not rows:
            return
        statement = self._q(
            f"INSERT INTO {{s}}.links ({_LINK_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (connector, entity_guid) DO UPDATE SET "
            "external_id = excluded.external_id, entity_name = excluded.entity_name, "
            "snapshot = excluded.snapshot, remote_version = excluded.remote_version, "
            "synced_at = excluded.synced_at, deleted = excluded.deleted, base = excluded.base"
        )
        cur = self._c()
        conn = cur.connection
        try:
            with conn.transaction():  # a savepoint: a failure leaves the outer transaction usable
                cur.executemany(statement, rows)
        except psycopg.errors.UniqueViolation as exc:
            for row in rows:  # name the offending link; the whole transaction rolls back anyway
                try:
                    with conn.transaction():
                        cur.execute(statement, row)
                except psycopg.errors.UniqueViolation:
                    raise DuplicateExternalIdError(
                        f"connector {row[0]!r}: external id {row[2]!r} is already linked "
                        f"to another entity (while linking {row[1]})"
                    ) from exc
            raise

    def delete_link(self, connector: str, entity_guid: str) -> None:
        self._c().execute(
            self._q("DELETE FROM {s}.links WHERE connector = %s AND entity_guid = %s"),
            (connector, entity_guid),
        )

    def add_dead_letter(
        self,
        connector: str,
        direction: Direction,
        ref: str,
        reason: str,
        payload: dict[str, Any],
    ) -> None:
        now = now_timestamp()
        self._c().execute(
            self._q(
                "INSERT INTO {s}.dead_letters AS d (connector, direction, ref, reason, payload, attempts, "
                "status, created_at, updated_at) VALUES (%s, %s, %s, %s, %s, 1, 'open', %s, %s) "
                "ON CONFLICT (connector, direction, ref) WHERE status = 'open' DO UPDATE SET "
                "attempts = d.attempts + 1, reason = excluded.reason, payload = excluded.payload, "
                "updated_at = excluded.updated_at"
            ),
            (connector, Direction(direction).value, ref, reason, Jsonb(payload), now, now),
        )

    def resolve_dead_letter(self, connector: str, direction: Direction, ref: str, status: str) -> None:
        if status not in DEAD_LETTER_CLOSED:
            raise ValueError(
                f"a dead letter is resolved as one of {sorted(DEAD_LETTER_CLOSED)}, not {status!r}"
            )
        self._c().execute(
            self._q(
                "UPDATE {s}.dead_letters SET status = %s, updated_at = %s "
                "WHERE connector = %s AND direction = %s AND ref = %s AND status = 'open'"
            ),
            (status, now_timestamp(), connector, Direction(direction).value, ref),
        )

    def add_intents(self, connector: str, refs: Iterable[str]) -> None:
        now = now_timestamp()
        rows = [(connector, ref, now) for ref in refs]
        if rows:
            self._c().executemany(
                self._q(
                    "INSERT INTO {s}.intents (connector, ref, created_at) VALUES (%s, %s, %s) "
                    "ON CONFLICT DO NOTHING"
                ),
                rows,
            )

    def clear_intents(self, connector: str, refs: Iterable[str]) -> None:
        wanted = list(refs)
        if wanted:
            self._c().execute(
                self._q("DELETE FROM {s}.intents WHERE connector = %s AND ref = ANY(%s)"), (connector, wanted)
            )

    def park(
        self, connector: str, entity_guid: str, parent_guid: str, reason: str, *, count: bool = True
    ) -> None:
        now = now_timestamp()
        step = 1 if count else 0
        self._c().execute(
            self._q(
                f"INSERT INTO {{s}}.parked AS p ({_PARKED_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (connector, entity_guid) DO UPDATE SET attempts = p.attempts + %s, "
                "parent_guid = excluded.parent_guid, reason = excluded.reason, "
                "updated_at = excluded.updated_at"
            ),
            (connector, entity_guid, parent_guid, reason, step, now, now, step),
        )

    def unpark(self, connector: str, entity_guid: str) -> None:
        self._c().execute(
            self._q("DELETE FROM {s}.parked WHERE connector = %s AND entity_guid = %s"),
            (connector, entity_guid),
        )

    def add_conflict(
        self,
        connector: str,
        entity_guid: str,
        external_id: str,
        policy: str,
        base: dict[str, Any],
        local: dict[str, Any],
        remote: dict[str, Any],
        remote_version: str | None,
        *,
        resolution: str | None = None,
    ) -> None:
        now = now_timestamp()
        status = "open" if resolution is None else "resolved"
        cur = self._c()
        if status == "open":
            cur.execute(
                self._q(
                    "DELETE FROM {s}.conflicts WHERE connector = %s AND entity_guid = %s AND status = 'open'"
                ),
                (connector, entity_guid),
            )
        cur.execute(
            self._q(
                "INSERT INTO {s}.conflicts (connector, entity_guid, external_id, policy, status, resolution, "
                "base, local, remote, remote_version, created_at, updated_at) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            ),
            (
                connector,
                entity_guid,
                str(external_id),
                policy,
                status,
                resolution,
                Jsonb(base),
                Jsonb(local),
                Jsonb(remote),
                remote_version,
                now,
                now,
            ),
        )

    def resolve_conflict(self, conflict_id: int, resolution: str) -> None:
        cur = self._c()
        cur.execute(
            self._q(
                "UPDATE {s}.conflicts SET status = 'resolved', resolution = %s, updated_at = %s "
                "WHERE id = %s AND status = 'open'"
            ),
            (resolution, now_timestamp(), conflict_id),
        )
        if cur.rowcount == 0:
            raise KeyError(f"no open conflict with id {conflict_id}")


class PostgresStateStore:
    """A :class:`~connector_core.state.base.StateStore` (and lease granter) in PostgreSQL (psycopg 3).

    One instance owns one connection in autocommit mode; each ``transaction()`` block is one explicit
    transaction. Calls are serialised by a lock, so an instance may be handed between threads, and an open
    transaction keeps other threads out until it commits.
    """

    def __init__(
        self,
        url: str,
        *,
        schema: str = DEFAULT_SCHEMA,
        migrations: Sequence[Migration] = MIGRATIONS,
        read_only: bool = False,
    ) -> None:
        self.schema = check_identifier(schema, "state store schema")
        self.where = f"{redact_url(url)} (schema {schema})"
        self._url = url
        self._lock = threading.RLock()
        self._in_transaction = False
        self.read_only = read_only
        self.exists = True
        self._conn = connect(url, application_name="dcsync state", read_only=read_only)
        self._ident = sql.Identifier(schema)
        try:
            if read_only:
                self.exists = self._check_schema(migrations)
            else:
                self._migrate(migrations)
        except BaseException:
            self._conn.close()
            raise

    def _q(self, text: str) -> str:
        return sql.SQL(text).format(s=self._ident).as_string(self._conn)

    # -- lifecycle ---------------------------------------------------------------------------------

    def _migrate(self, migrations: Sequence[Migration]) -> None:
        """Bring the schema to ``len(migrations)``, each step in its own transaction, under an advisory lock.

        A step that fails rolls back whole, leaving the previous version intact and recorded.
        """
        latest = len(migrations)
        ddl_key = advisory_key("dcsync-state-ddl", self.schema)
        with self._lock:
            with self._conn.transaction():
                self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (ddl_key,))
                self._conn.execute(self._q("CREATE SCHEMA IF NOT EXISTS {s}"))
                self._conn.execute(
                    self._q("CREATE TABLE IF NOT EXISTS {s}.schema_version (version INTEGER NOT NULL)")
                )
                self._conn.execute(self._q(_LEASES))
            while True:
                with self._conn.transaction():
                    self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (ddl_key,))
                    row = self._conn.execute(
                        self._q("SELECT max(version) FROM {s}.schema_version")
                    ).fetchone()
                    current = int(row[0]) if row and row[0] is not None else 0
                    if current > latest:
                        raise SchemaVersionError(
                            f"state store {self.where} has schema version {current}, newer than this dcsync "
                            f"understands ({latest}): upgrade dcsync to open it"
                        )
                    if current < latest:
                        for statement in migrations[current]:
                            self._conn.execute(self._q(statement))
                        self._conn.execute(self._q("DELETE FROM {s}.schema_version"))
                        self._conn.execute(
                            self._q("INSERT INTO {s}.schema_version (version) VALUES (%s)"), (current + 1,)
                        )
                if current == latest:
                    return

    def _check_schema(self, migrations: Sequence[Migration]) -> bool:
        """For a read-only store: whether its tables exist (nothing is created). A store of an older layout is
        migrated first on a connection of its own, as the next command that writes would do; a newer one is
        refused."""
        latest = len(migrations)
        with self._lock:
            found = self._conn.execute(
                "SELECT to_regclass(%s)", (f'"{self.schema}".schema_version',)
            ).fetchone()
            if found is None or found[0] is None:
                return False
            row = self._conn.execute(self._q("SELECT max(version) FROM {s}.schema_version")).fetchone()
        current = int(row[0]) if row and row[0] is not None else 0
        if current > latest:
            raise SchemaVersionError(
                f"state store {self.where} has schema version {current}, newer than this dcsync "
                f"understands ({latest}): upgrade dcsync to open it"
            )
        if current < latest:
            PostgresStateStore(self._url, schema=self.schema, migrations=migrations).close()
        return True

    def schema_version(self) -> int:
        with self._lock:
            row = self._conn.execute(self._q("SELECT max(version) FROM {s}.schema_version")).fetchone()
        assert row is not None
        return int(row[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> PostgresStateStore:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[PostgresStateTxn]:
        with self._lock:
            if self._in_transaction:
                raise RuntimeError("state transactions do not nest: commit the open one first")
            self._in_transaction = True
            try:
                with self._conn.transaction(), self._conn.cursor() as cur:
                    txn = PostgresStateTxn(self, cur)
                    try:
                        yield txn
                    finally:
                        txn._end()
            finally:
                self._in_transaction = False

    def _rows(self, text: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._conn.execute(self._q(text), params).fetchall()

    def _row(self, text: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        with self._lock:
            return self._conn.execute(self._q(text), params).fetchone()

    # -- the connector lease (connector_core/state/lease.py) ----------------------------------------

    @contextmanager
    def lease(self, connector: str, *, wait: bool = False) -> Iterator[None]:
        """A session-level advisory lock on a connection of its own, plus a row naming the holder.

        The lock is tried while this connection holds the holder row's row lock, and the row is rewritten
        before that lock is let go: a process that loses the contest reads the winner's row, never the gap
        between the winner's lock and its row (nor a dead holder's stale row).
        """
        if self.read_only:  # a dry run's: see SqliteStateStore.lease
            yield
            return
        key = advisory_key("dcsync-lease", self.schema, connector)
        me = this_process()
        conn = connect(self._url, application_name=f"dcsync lease {connector} pid {me.pid}")
        claim = self._q(
            "UPDATE {s}.dcsync_leases SET host = %s, pid = %s, started_at = %s WHERE connector = %s"
        )
        try:
            conn.execute(
                self._q(
                    "INSERT INTO {s}.dcsync_leases (connector, host, pid, started_at) "
                    "VALUES (%s, '', 0, '') ON CONFLICT (connector) DO NOTHING"
                ),
                (connector,),
            )
            busy: ConnectorBusy | None = None
            with conn.transaction():
                conn.execute(
                    self._q("SELECT 1 FROM {s}.dcsync_leases WHERE connector = %s FOR UPDATE"), (connector,)
                )
                acquired = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
                if acquired and acquired[0]:
                    conn.execute(claim, (me.host, me.pid, me.started_at, connector))
                else:
                    busy = ConnectorBusy(connector, self._holder(conn, connector))
            if busy is not None:
                if not wait:
                    raise busy
                log.warning("%s; waiting for it", busy)
                conn.execute("SELECT pg_advisory_lock(%s)", (key,))
                conn.execute(claim, (me.host, me.pid, me.started_at, connector))
            try:
                yield
            finally:
                try:
                    conn.execute(
                        self._q(
                            "UPDATE {s}.dcsync_leases SET host = '', pid = 0, started_at = '' "
                            "WHERE connector = %s AND host = %s AND pid = %s"
                        ),
                        (connector, me.host, me.pid),
                    )
                    conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
                except psycopg.Error as exc:  # the session is gone, and with it the lock
                    log.warning("releasing the lease of %r: %s", connector, exc)
        finally:
            conn.close()

    def _holder(self, conn: psycopg.Connection[Any], connector: str) -> LeaseHolder | None:
        row = conn.execute(
            self._q("SELECT host, pid, started_at FROM {s}.dcsync_leases WHERE connector = %s"), (connector,)
        ).fetchone()
        if not row or not row[0]:  # no holder written (released, or a dcsync older than this one)
            return None
        return LeaseHolder(host=row[0], pid=int(row[1]), started_at=row[2])

    # -- checkpoints -------------------------------------------------------------------------------

    def get_checkpoint(self, connector: str, direction: Direction) -> str | None:
        row = self._row(
            "SELECT value FROM {s}.checkpoints WHERE connector = %s AND direction = %s",
            (connector, Direction(direction).value),
        )
        return row[0] if row else None

    def checkpoints(self) -> dict[tuple[str, str], str | None]:
        rows = self._rows(
            "SELECT connector, direction, value FROM {s}.checkpoints ORDER BY connector, direction"
        )
        return {(connector, direction): value for connector, direction, value in rows}

    # -- links -------------------------------------------------------------------------------------

    def get_link(self, connector: str, entity_guid: str) -> Link | None:
        row = self._row(
            f"SELECT {_LINK_COLUMNS} FROM {{s}}.links WHERE connector = %s AND entity_guid = %s",
            (connector, entity_guid),
        )
        return _link_from_row(row) if row else None

    def get_links(self, connector: str, entity_guids: Iterable[str]) -> dict[str, Link]:
        rows = self._rows_any(
            f"SELECT {_LINK_COLUMNS} FROM {{s}}.links WHERE connector = %s AND entity_guid",
            (connector,),
            entity_guids,
        )
        return {row[1]: _link_from_row(row) for row in rows}

    def _rows_any(self, select: str, params: tuple[Any, ...], keys: Iterable[str]) -> list[tuple[Any, ...]]:
        """``select`` (ending in the column to match) ``= ANY`` the distinct ``keys``, in one query."""
        wanted = list(dict.fromkeys(keys))
        return self._rows(f"{select} = ANY(%s)", (*params, wanted)) if wanted else []

    def find_link(self, connector: str, external_id: str) -> Link | None:
        row = self._row(
            f"SELECT {_LINK_COLUMNS} FROM {{s}}.links WHERE connector = %s AND external_id = %s",
            (connector, str(external_id)),
        )
        return _link_from_row(row) if row else None

    def iter_links(self, connector: str, page_size: int = 1000) -> Iterator[Link]:
        """Every link of ``connector`` in guid order, a page per query, so memory stays flat."""
        select = (
            f"SELECT {_LINK_COLUMNS} FROM {{s}}.links WHERE connector = %s AND entity_guid > %s "
            "ORDER BY entity_guid LIMIT %s"
        )
        for row in self._pages(select, (connector,), 1, "", page_size):
            yield _link_from_row(row)

    def _pages(
        self, select: str, params: tuple[Any, ...], key: int, start: Any, page_size: int
    ) -> Iterator[Any]:
        """``select`` takes ``params``, the last key seen and the page size: see :func:`keyset_pages`."""
        return keyset_pages(
            lambda last: self._rows(select, (*params, last, page_size)), key, start, page_size
        )

    # -- dead letters ------------------------------------------------------------------------------

    @staticmethod
    def _filters(connector: str | None, status: str | None) -> tuple[str, list[Any]]:
        where: list[str] = []
        params: list[Any] = []
        if connector is not None:
            where.append("connector = %s")
            params.append(connector)
        if status is not None:
            where.append("status = %s")
            params.append(status)
        return (f"WHERE {' AND '.join(where)}" if where else ""), params

    def dead_letters(
        self, connector: str | None = None, status: str | None = "open", limit: int = 100
    ) -> list[DeadLetter]:
        clause, params = self._filters(connector, status)
        rows = self._rows(
            f"SELECT {_DEAD_LETTER_COLUMNS} FROM {{s}}.dead_letters {clause} ORDER BY id LIMIT %s",
            (*params, limit),
        )
        return [_dead_letter_from_row(row) for row in rows]

    def iter_dead_letters(
        self, connector: str, status: str | None = "open", page_size: int = 1000
    ) -> Iterator[DeadLetter]:
        select = (
            f"SELECT {_DEAD_LETTER_COLUMNS} FROM {{s}}.dead_letters WHERE connector = %s "
            "AND (%s::text IS NULL OR status = %s) AND id > %s ORDER BY id LIMIT %s"
        )
        for row in self._pages(select, (connector, status, status), 0, 0, page_size):
            yield _dead_letter_from_row(row)

    def open_dead_letter_refs(self, connector: str, direction: Direction, refs: Iterable[str]) -> set[str]:
        rows = self._rows_any(
            "SELECT ref FROM {s}.dead_letters WHERE connector = %s AND direction = %s AND status = 'open' "
            "AND ref",
            (connector, Direction(direction).value),
            refs,
        )
        return {row[0] for row in rows}

    def open_dead_letter_reasons(
        self, connector: str, direction: Direction, refs: Iterable[str]
    ) -> dict[str, str]:
        rows = self._rows_any(
            "SELECT ref, reason FROM {s}.dead_letters WHERE connector = %s AND direction = %s "
            "AND status = 'open' AND ref",
            (connector, Direction(direction).value),
            refs,
        )
        return {row[0]: row[1] for row in rows}

    def get_dead_letter(self, dead_letter_id: int) -> DeadLetter | None:
        row = self._row(
            f"SELECT {_DEAD_LETTER_COLUMNS} FROM {{s}}.dead_letters WHERE id = %s", (dead_letter_id,)
        )
        return _dead_letter_from_row(row) if row else None

    # -- intents, parked children, conflicts --------------------------------------------------------

    def intents(self, connector: str) -> set[str]:
        return {
            row[0] for row in self._rows("SELECT ref FROM {s}.intents WHERE connector = %s", (connector,))
        }

    def parked(self, connector: str, limit: int = 1000) -> list[Parked]:
        rows = self._rows(
            f"SELECT {_PARKED_COLUMNS} FROM {{s}}.parked WHERE connector = %s ORDER BY created_at LIMIT %s",
            (connector, limit),
        )
        return [Parked(*row) for row in rows]

    def iter_parked(self, connector: str, page_size: int = 1000) -> Iterator[Parked]:
        select = (
            f"SELECT {_PARKED_COLUMNS} FROM {{s}}.parked WHERE connector = %s AND entity_guid > %s "
            "ORDER BY entity_guid LIMIT %s"
        )
        for row in self._pages(select, (connector,), 1, "", page_size):
            yield Parked(*row)

    def parked_attempts(self, connector: str, entity_guids: Iterable[str]) -> dict[str, int]:
        rows = self._rows_any(
            "SELECT entity_guid, attempts FROM {s}.parked WHERE connector = %s AND entity_guid",
            (connector,),
            entity_guids,
        )
        return {row[0]: row[1] for row in rows}

    def parked_children(self, connector: str, parent_guids: Iterable[str]) -> list[str]:
        rows = self._rows_any(
            "SELECT entity_guid FROM {s}.parked WHERE connector = %s AND parent_guid",
            (connector,),
            parent_guids,
        )
        return sorted(row[0] for row in rows)

    def open_counts(self, connector: str) -> OpenCounts:
        row = self._row(
            "SELECT (SELECT count(*) FROM {s}.dead_letters WHERE status = 'open' AND connector = %s), "
            "(SELECT count(*) FROM {s}.conflicts WHERE status = 'open' AND connector = %s), "
            "(SELECT count(*) FROM {s}.parked WHERE connector = %s)",
            (connector, connector, connector),
        )
        assert row is not None
        return OpenCounts(*(int(n) for n in row))

    def conflicts(
        self, connector: str | None = None, status: str | None = "open", limit: int = 100
    ) -> list[Conflict]:
        clause, params = self._filters(connector, status)
        rows = self._rows(
            f"SELECT {_CONFLICT_COLUMNS} FROM {{s}}.conflicts {clause} ORDER BY id LIMIT %s", (*params, limit)
        )
        return [_conflict_from_row(row) for row in rows]

    def get_conflict(self, conflict_id: int) -> Conflict | None:
        row = self._row(f"SELECT {_CONFLICT_COLUMNS} FROM {{s}}.conflicts WHERE id = %s", (conflict_id,))
        return _conflict_from_row(row) if row else None

    def open_conflicts(self, connector: str, entity_guids: Iterable[str]) -> set[str]:
        rows = self._rows_any(
            "SELECT entity_guid FROM {s}.conflicts WHERE connector = %s AND status = 'open' AND entity_guid",
            (connector,),
            entity_guids,
        )
        return {row[0] for row in rows}

    # -- scheduled ticks ---------------------------------------------------------------------------

    def claim_tick(self, connector: str, direction: str, tick: str, holder: str) -> bool:
        row = self._row(
            "INSERT INTO {s}.ticks (connector, direction, tick, holder, claimed_at) "
            "VALUES (%s, %s, %s, %s, %s) "
            "ON CONFLICT DO NOTHING RETURNING 1",
            (connector, direction, tick, holder, now_timestamp()),
        )
        return row is not None

    def last_tick(self, connector: str, direction: str) -> str | None:
        row = self._row(
            "SELECT max(tick) FROM {s}.ticks WHERE connector = %s AND direction = %s", (connector, direction)
        )
        return row[0] if row else None

    # -- runs --------------------------------------------------------------------------------------

    def start_run(self, connector: str, direction: str, trigger: str) -> int:
        row = self._row(
            "INSERT INTO {s}.runs (connector, direction, trigger, started_at, outcome, counts) "
            "VALUES (%s, %s, %s, %s, 'running', '{{}}') RETURNING id",
            (connector, str(direction), trigger, now_timestamp()),
        )
        assert row is not None
        return int(row[0])

    def abandon_runs(self, connector: str, reason: str) -> int:
        rows = self._rows(
            "UPDATE {s}.runs SET finished_at = %s, outcome = 'abandoned', error = %s "
            "WHERE connector = %s AND outcome = 'running' RETURNING id",
            (now_timestamp(), reason, connector),
        )
        return len(rows)

    def finish_run(self, run_id: int, outcome: str, counts: dict[str, int], error: str | None = None) -> None:
        row = self._row(
            "UPDATE {s}.runs SET finished_at = %s, outcome = %s, counts = %s, error = %s "
            "WHERE id = %s RETURNING id",
            (now_timestamp(), outcome, Jsonb(counts), error, run_id),
        )
        if row is None:
            raise KeyError(f"no run with id {run_id}")

    def runs(
        self, connector: str | None = None, limit: int = 20, failed_only: bool = False
    ) -> list[RunRecord]:
        """Newest first. ``failed_only`` includes interrupted runs: both need an operator's look."""
        where: list[str] = []
        params: list[Any] = []
        if connector is not None:
            where.append("connector = %s")
            params.append(connector)
        if failed_only:
            where.append("outcome = ANY(%s)")
            params.append(list(FAILED_OUTCOMES))
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = self._rows(
            f"SELECT {_RUN_COLUMNS} FROM {{s}}.runs {clause} ORDER BY id DESC LIMIT %s", (*params, limit)
        )
        return [_run_from_row(row) for row in rows]

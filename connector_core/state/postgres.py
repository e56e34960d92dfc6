"""dcsync's state store in PostgreSQL: SQLite's semantics, shared by dcsync processes on many machines.

The queries are :mod:`connector_core.state.store`'s and the tables :mod:`connector_core.state.schema`'s, the
same as SQLite's with the same numbering (a store moves between backends with the same meaning), in a
configurable schema (``dcsync`` by default); JSON columns are ``JSONB`` and keys are ``COLLATE "C"`` so pages
order as they do in SQLite. Migrations run one per transaction under an advisory lock, so two processes
starting at once do not both migrate.

What only PostgreSQL does lives here: the connector lease (connector_core/state/lease.py) is a session-level
advisory lock keyed by schema and connector, held on a connection of its own for the length of the run, plus
a row in ``dcsync_leases`` naming the holder (host, pid, start) so that a second process can say who has it.
PostgreSQL releases the lock when the holder's session ends, whether it exited, crashed or lost its machine
(TCP keepalives bound the last case to about a minute and a half). The lease table lives outside the
versioned migrations: it is this backend's own, and keeping it out keeps the version numbers equal to
SQLite's.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import psycopg

from connector_core._postgres import advisory_key, check_identifier, connect, redact_url
from connector_core._sql import Migration, PostgresDatabase, SchemaVersionError, existing_version
from connector_core.state.lease import ConnectorBusy, LeaseHolder, LeaseLost, this_process
from connector_core.state.schema import LAYOUT, MIGRATIONS
from connector_core.state.store import DEAD_LETTER_CLOSED, FAILED_OUTCOMES, SqlStateStore, SqlStateTxn

__all__ = [
    "DEAD_LETTER_CLOSED",
    "DEFAULT_SCHEMA",
    "FAILED_OUTCOMES",
    "MIGRATIONS",
    "PostgresStateStore",
    "PostgresStateTxn",
    "SchemaVersionError",
]

log = logging.getLogger("dcsync.state")

DEFAULT_SCHEMA = "dcsync"

_LEASES = """CREATE TABLE IF NOT EXISTS {s}.dcsync_leases (
    connector TEXT COLLATE "C" PRIMARY KEY,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    started_at TEXT NOT NULL
)"""


class PostgresStateTxn(SqlStateTxn):
    """The writes of one ``transaction()`` block of a :class:`PostgresStateStore`."""


class PostgresStateStore(SqlStateStore):
    """A :class:`~connector_core.state.base.StateStore` (and lease granter) in PostgreSQL (psycopg 3).

    One instance owns one connection in autocommit mode; each ``transaction()`` block is one explicit
    transaction.
    """

    _txn_class = PostgresStateTxn

    def __init__(
        self,
        url: str,
        *,
        schema: str = DEFAULT_SCHEMA,
        migrations: Sequence[Migration] = MIGRATIONS,
        read_only: bool = False,
    ) -> None:
        self.schema = check_identifier(schema, "state store schema")
        self._held: dict[str, tuple[int, int]] = {}  # leases held: connector -> (lock key, session pid)
        self.where = f"{redact_url(url)} (schema {schema})"
        self._url = url
        self.read_only = read_only
        self.exists = True
        db = PostgresDatabase(connect(url, application_name="dcsync state", read_only=read_only), schema)
        if read_only:
            # nothing is created: a missing schema is reported (``exists``) for the caller to read as empty;
            # an older layout is upgraded first on a connection of its own, as the next run would
            layout = replace(LAYOUT, migrations=tuple(migrations))
            current = existing_version(db, layout, "schema_version", f"state store {self.where}")
            self.exists = current is not None
            if current is not None and current < len(migrations):
                PostgresStateStore(url, schema=schema, migrations=migrations).close()
            super().__init__(db, migrations, self.where, lay_out=False)
            return
        try:
            db.prepare((_LEASES,), "dcsync-state-ddl")
        except BaseException:
            db.close()
            raise
        super().__init__(db, migrations, self.where)

    def __enter__(self) -> PostgresStateStore:
        return self

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
        q = self._db.sql
        key = advisory_key("dcsync-lease", self.schema, connector)
        me = this_process()
        conn = connect(self._url, application_name=f"dcsync lease {connector} pid {me.pid}")
        claim = q("UPDATE {s}.dcsync_leases SET host = ?, pid = ?, started_at = ? WHERE connector = ?")
        try:
            conn.execute(
                q(
                    "INSERT INTO {s}.dcsync_leases (connector, host, pid, started_at) "
                    "VALUES (?, '', 0, '') ON CONFLICT (connector) DO NOTHING"
                ),
                (connector,),
            )
            busy: ConnectorBusy | None = None
            with conn.transaction():
                conn.execute(
                    q("SELECT 1 FROM {s}.dcsync_leases WHERE connector = ? FOR UPDATE"), (connector,)
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
            self._held[connector] = (key, conn.info.backend_pid)
            try:
                yield
            finally:
                self._held.pop(connector, None)
                try:
                    conn.execute(
                        q(
                            "UPDATE {s}.dcsync_leases SET host = '', pid = 0, started_at = '' "
                            "WHERE connector = ? AND host = ? AND pid = ?"
                        ),
                        (connector, me.host, me.pid),
                    )
                    conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
                except psycopg.Error as exc:  # the session is gone, and with it the lock
                    log.warning("releasing the lease of %r: %s", connector, exc)
        finally:
            conn.close()

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        """A transaction that, while this store holds leases, commits only if it still holds them all: a
        lease whose session ended (its advisory lock with it) raises :class:`LeaseLost` and rolls back."""
        with super().transaction() as txn:
            yield txn
            if self._held:
                self._check_held()

    def _check_held(self) -> None:
        for connector, (key, backend) in list(self._held.items()):
            row = self._db.row(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 "
                "AND classid = CAST(? AS oid) AND objid = CAST(? AS oid) AND pid = ?",
                ((key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF, backend),
            )
            if not row or not row[0]:
                raise LeaseLost(connector, "its PostgreSQL session ended, and the advisory lock with it")

    def _holder(self, conn: psycopg.Connection[Any], connector: str) -> LeaseHolder | None:
        row = conn.execute(
            self._db.sql("SELECT host, pid, started_at FROM {s}.dcsync_leases WHERE connector = ?"),
            (connector,),
        ).fetchone()
        if not row or not row[0]:  # no holder written (released, or a dcsync older than this one)
            return None
        return LeaseHolder(host=row[0], pid=int(row[1]), started_at=row[2])

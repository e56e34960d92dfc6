"""The embedded state store: checkpoints, links, dead letters and runs in one SQLite file.

A batch's outcome (links written, dead letters recorded, checkpoint moved) is committed in one
``BEGIN IMMEDIATE`` transaction, so a crash can never leave a checkpoint past a record that was
neither delivered nor dead-lettered. The schema is versioned and migrated forward in order, each
step in a transaction, because a state store outlives many dcsync upgrades and losing it means
re-syncing everything.

One instance owns one connection; calls are serialised by a lock, so an instance may be handed
between threads, and an open transaction keeps other threads out until it commits.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from connector_core import codec
from connector_core._sqlite_read import connect_read_only, has_table
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
from connector_core.streams import chunks

BUSY_TIMEOUT_MS = 30_000
_IN_CHUNK = 500

Migration = Callable[[sqlite3.Connection], None]


def _statements(*sql: str) -> Migration:
    # Not executescript(): it COMMITs first, which would break one transaction per migration.
    def run(conn: sqlite3.Connection) -> None:
        for statement in sql:
            conn.execute(statement)

    return run


MIGRATIONS: tuple[Migration, ...] = (
    # 1: the initial layout
    _statements(
        """CREATE TABLE checkpoints (
            connector TEXT NOT NULL,
            direction TEXT NOT NULL,
            value TEXT,
            updated_at TEXT NOT NULL,
            PRIMARY KEY (connector, direction)
        )""",
        """CREATE TABLE links (
            connector TEXT NOT NULL,
            entity_guid TEXT NOT NULL,
            external_id TEXT NOT NULL,
            entity_name TEXT,
            snapshot TEXT NOT NULL,
            remote_version TEXT,
            synced_at TEXT,
            deleted INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (connector, entity_guid),
            UNIQUE (connector, external_id)
        )""",
        """CREATE TABLE dead_letters (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            connector TEXT NOT NULL,
            direction TEXT NOT NULL,
            ref TEXT NOT NULL,
            reason TEXT NOT NULL,
            payload TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 1,
            status TEXT NOT NULL DEFAULT 'open',
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )""",
        # at most one *open* dead letter per record; closed ones are history
        """CREATE UNIQUE INDEX dead_letters_open ON dead_letters (connector, direction, ref)
            WHERE status = 'open'""",
        "CREATE INDEX dead_letters_status ON dead_letters (status, connector)",
        """CREATE TABLE runs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            connector TEXT NOT NULL,
            direction TEXT NOT NULL,
            trigger TEXT NOT NULL,
            started_at TEXT NOT NULL,
            finished_at TEXT,
            outcome TEXT NOT NULL,
            counts TEXT NOT NULL,
            error TEXT
        )""",
        "CREATE INDEX runs_connector ON runs (connector, id)",
    ),
    # 2: three-way merge base on links; create intents; parked children; conflicts
    _statements(
        "ALTER TABLE links ADD COLUMN base TEXT NOT NULL DEFAULT '{}'",
        """CREATE TABLE intents (
            connector TEXT NOT NULL,
            ref TEXT NOT NULL,
            created_at TEXT NOT NULL,
            PRIMARY KEY (connector, ref)
        )""",
        """CREATE TABLE parked (
            connector TEXT NOT NULL,
            entity_guid TEXT NOT NULL,
            parent_guid TEXT NOT NULL,
            reason TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 1,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            PRIMARY KEY (connector, entity_guid)
        )""",
        """CREATE TABLE conflicts (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            connector TEXT NOT NULL,
            entity_guid TEXT NOT NULL,
            external_id TEXT NOT NULL,
            policy TEXT NOT NULL,
            status TEXT NOT NULL,
            resolution TEXT,
            base TEXT NOT NULL,
            local TEXT NOT NULL,
            remote TEXT NOT NULL,
            remote_version TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )""",
        """CREATE UNIQUE INDEX conflicts_open ON conflicts (connector, entity_guid)
            WHERE status = 'open'""",
    ),
    # 3: scheduled runs claimed per tick, so schedulers sharing a store run each tick once
    _statements(
        """CREATE TABLE ticks (
            connector TEXT NOT NULL,
            direction TEXT NOT NULL,
            tick TEXT NOT NULL,
            holder TEXT NOT NULL,
            claimed_at TEXT NOT NULL,
            PRIMARY KEY (connector, direction, tick)
        )""",
    ),
)
"""Ordered: migration ``i`` takes the schema from version ``i`` to ``i + 1``. Only ever append."""

DEAD_LETTER_CLOSED = frozenset({"replayed", "discarded"})
FAILED_OUTCOMES = ("failed", "interrupted", "abandoned")


class SchemaVersionError(RuntimeError):
    """The file was written by a newer dcsync: this code cannot know what its tables mean."""


_dumps = codec.dumps


def migrate(conn: sqlite3.Connection, migrations: Sequence[Migration], where: str) -> int:
    """Bring ``conn`` to ``len(migrations)``, each step in its own transaction; return the version.

    A step that fails rolls back whole, leaving the previous version intact and recorded.
    """
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    latest = len(migrations)
    while True:
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
            current = int(row[0]) if row[0] is not None else 0
            if current > latest:
                raise SchemaVersionError(
                    f"state store {where} has schema version {current}, newer than this dcsync "
                    f"understands ({latest}): upgrade dcsync to open it"
                )
            if current < latest:
                migrations[current](conn)
                conn.execute("DELETE FROM schema_version")
                conn.execute("INSERT INTO schema_version (version) VALUES (?)", (current + 1,))
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        _commit(conn)
        if current == latest:
            return current


def _commit(conn: sqlite3.Connection) -> None:
    """COMMIT, and if that fails make sure the transaction is gone rather than left half-open."""
    try:
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _link_from_row(row: tuple[Any, ...]) -> Link:
    return Link(
        connector=row[0],
        entity_guid=row[1],
        external_id=row[2],
        entity_name=row[3],
        snapshot=codec.loads(row[4]),
        remote_version=row[5],
        synced_at=row[6],
        deleted=bool(row[7]),
        base=codec.loads(row[8]),
    )


_LINK_COLUMNS = (
    "connector, entity_guid, external_id, entity_name, snapshot, remote_version, synced_at, deleted, base"
)
_PARKED_COLUMNS = "connector, entity_guid, parent_guid, reason, attempts, created_at, updated_at"
_CONFLICT_COLUMNS = (
    "id, connector, entity_guid, external_id, policy, status, resolution, base, local, remote, "
    "remote_version, created_at, updated_at"
)


def _conflict_from_row(row: tuple[Any, ...]) -> Conflict:
    return Conflict(
        id=row[0],
        connector=row[1],
        entity_guid=row[2],
        external_id=row[3],
        policy=row[4],
        status=row[5],
        resolution=row[6],
        base=codec.loads(row[7]),
        local=codec.loads(row[8]),
        remote=codec.loads(row[9]),
        remote_version=row[10],
        created_at=row[11],
        updated_at=row[12],
    )


_DEAD_LETTER_COLUMNS = (
    "id, connector, direction, ref, reason, payload, attempts, status, created_at, updated_at"
)
_RUN_COLUMNS = "id, connector, direction, trigger, started_at, finished_at, outcome, counts, error"


def _dead_letter_from_row(row: tuple[Any, ...]) -> DeadLetter:
    return DeadLetter(
        id=row[0],
        connector=row[1],
        direction=Direction(row[2]),
        ref=row[3],
        reason=row[4],
        payload=codec.loads(row[5]),
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
        counts=codec.loads(row[7]),
        error=row[8],
    )


class SqliteStateTxn:
    """The writes of one ``transaction()`` block; unusable once the block has ended, so a stray
    write can never land outside the transaction it was meant for."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn: sqlite3.Connection | None = conn

    def _c(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("this state transaction has already ended")
        return self._conn

    def _end(self) -> None:
        self._conn = None

    def set_checkpoint(self, connector: str, direction: Direction, value: str | None) -> None:
        self._c().execute(
            "INSERT INTO checkpoints (connector, direction, value, updated_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (connector, direction) DO UPDATE SET value = excluded.value, "
            "updated_at = excluded.updated_at",
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
                _dumps(link.snapshot),
                link.remote_version,
                link.synced_at,
                int(link.deleted),
                _dumps(link.base),
            )
            for link in links
        ]
        sql = (
            f"INSERT INTO links ({_LINK_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (connector, entity_guid) DO UPDATE SET "
            "external_id = excluded.external_id, entity_name = excluded.entity_name, "
            "snapshot = excluded.snapshot, remote_version = excluded.remote_version, "
            "synced_at = excluded.synced_at, deleted = excluded.deleted, base = excluded.base"
        )
        conn = self._c()
        try:
            conn.executemany(sql, rows)
        except sqlite3.IntegrityError as exc:
            for row in rows:  # name the offending link; the whole transaction rolls back anyway
                try:
                    conn.execute(sql, row)
                except sqlite3.IntegrityError:
                    raise DuplicateExternalIdError(
                        f"connector {row[0]!r}: external id {row[2]!r} is already linked "
                        f"to another entity (while linking {row[1]})"
                    ) from exc
            raise

    def delete_link(self, connector: str, entity_guid: str) -> None:
        self._c().execute(
            "DELETE FROM links WHERE connector = ? AND entity_guid = ?", (connector, entity_guid)
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
            "INSERT INTO dead_letters (connector, direction, ref, reason, payload, attempts, "
            "status, created_at, updated_at) VALUES (?, ?, ?, ?, ?, 1, 'open', ?, ?) "
            "ON CONFLICT (connector, direction, ref) WHERE status = 'open' DO UPDATE SET "
            "attempts = attempts + 1, reason = excluded.reason, payload = excluded.payload, "
            "updated_at = excluded.updated_at",
            (connector, Direction(direction).value, ref, reason, _dumps(payload), now, now),
        )

    def resolve_dead_letter(self, connector: str, direction: Direction, ref: str, status: str) -> None:
        if status not in DEAD_LETTER_CLOSED:
            raise ValueError(
                f"a dead letter is resolved as one of {sorted(DEAD_LETTER_CLOSED)}, not {status!r}"
            )
        self._c().execute(
            "UPDATE dead_letters SET status = ?, updated_at = ? "
            "WHERE connector = ? AND direction = ? AND ref = ? AND status = 'open'",
            (status, now_timestamp(), connector, Direction(direction).value, ref),
        )

    def add_intents(self, connector: str, refs: Iterable[str]) -> None:
        now = now_timestamp()
        self._c().executemany(
            "INSERT OR IGNORE INTO intents (connector, ref, created_at) VALUES (?, ?, ?)",
            [(connector, ref, now) for ref in refs],
        )

    def clear_intents(self, connector: str, refs: Iterable[str]) -> None:
        conn = self._c()
        for part in chunks(refs, _IN_CHUNK):  # a statement per chunk: one per ref costs twice as much
            conn.execute(
                f"DELETE FROM intents WHERE connector = ? AND ref IN ({','.join('?' * len(part))})",
                (connector, *part),
            )

    def park(
        self, connector: str, entity_guid: str, parent_guid: str, reason: str, *, count: bool = True
    ) -> None:
        now = now_timestamp()
        step = 1 if count else 0
        self._c().execute(
            f"INSERT INTO parked ({_PARKED_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (connector, entity_guid) DO UPDATE SET attempts = attempts + ?, "
            "parent_guid = excluded.parent_guid, reason = excluded.reason, updated_at = excluded.updated_at",
            (connector, entity_guid, parent_guid, reason, step, now, now, step),
        )

    def unpark(self, connector: str, entity_guid: str) -> None:
        self._c().execute(
            "DELETE FROM parked WHERE connector = ? AND entity_guid = ?", (connector, entity_guid)
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
        conn = self._c()
        if status == "open":
            conn.execute(
                "DELETE FROM conflicts WHERE connector = ? AND entity_guid = ? AND status = 'open'",
                (connector, entity_guid),
            )
        conn.execute(
            f"INSERT INTO conflicts ({_CONFLICT_COLUMNS}) VALUES (NULL, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                connector,
                entity_guid,
                str(external_id),
                policy,
                status,
                resolution,
                _dumps(base),
                _dumps(local),
                _dumps(remote),
                remote_version,
                now,
                now,
            ),
        )

    def resolve_conflict(self, conflict_id: int, resolution: str) -> None:
        cur = self._c().execute(
            "UPDATE conflicts SET status = 'resolved', resolution = ?, updated_at = ? "
            "WHERE id = ? AND status = 'open'",
            (resolution, now_timestamp(), conflict_id),
        )
        if cur.rowcount == 0:
            raise KeyError(f"no open conflict with id {conflict_id}")


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


def _open_read_only(path: Path, migrations: Sequence[Migration]) -> sqlite3.Connection:
    """The store at ``path`` for reading (``status``, ``runs``, ``dlq list``, a dry run): nothing is created.

    A file that does not exist, or holds no store yet, reads as an empty store kept in memory. A store of an
    older schema is migrated first, as the next command that writes would do: its tables must match the
    queries, and upgrading an existing file creates none.
    """
    latest = len(migrations)
    conn = connect_read_only(path, BUSY_TIMEOUT_MS / 1000)
    if conn is not None:
        try:
            row = (
                conn.execute("SELECT max(version) FROM schema_version").fetchone()
                if has_table(conn, "schema_version")
                else None
            )
            current = int(row[0]) if row is not None and row[0] is not None else None
            if current is not None and current > latest:
                raise SchemaVersionError(
                    f"state store {path} has schema version {current}, newer than this dcsync "
                    f"understands ({latest}): upgrade dcsync to open it"
                )
        except BaseException:
            conn.close()
            raise
        if current == latest:
            return conn
        conn.close()
        if current is not None:
            SqliteStateStore(path, migrations=migrations).close()
            upgraded = connect_read_only(path, BUSY_TIMEOUT_MS / 1000)
            assert upgraded is not None
            return upgraded
    memory = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
    migrate(memory, migrations, ":memory:")
    return memory


class SqliteStateStore:
    """A :class:`~connector_core.state.base.StateStore` in one SQLite file (WAL mode).

    Opened ``read_only``, it reads what the file holds (or nothing, creating no file), every write fails, and
    its lease holds nothing: see :meth:`lease`.
    """

    def __init__(
        self, path: str | Path, *, migrations: Sequence[Migration] = MIGRATIONS, read_only: bool = False
    ) -> None:
        self.path = str(path)
        self._lock = threading.RLock()
        self.read_only = read_only
        if read_only:
            self._conn = _open_read_only(Path(self.path), migrations)
            return
        if self.path != ":memory:" and not self.path.startswith("file:"):
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(
            self.path,
            isolation_level=None,  # explicit BEGIN IMMEDIATE / COMMIT
            check_same_thread=False,  # guarded by self._lock
            timeout=BUSY_TIMEOUT_MS / 1000,
        )
        try:
            self._conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            # 16 KiB pages for a new store: a batch's links land on random pages of the guid index, and
            # each commit writes every page it dirtied; fewer, larger pages halve the cost of a commit.
            # (An existing store keeps the page size it was created with.)
            self._conn.execute("PRAGMA page_size = 16384")
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = NORMAL")
            migrate(self._conn, migrations, self.path)
        except BaseException:
            self._conn.close()
            raise

    # -- lifecycle ---------------------------------------------------------------------------------

    def schema_version(self) -> int:
        with self._lock:
            row = self._conn.execute("SELECT max(version) FROM schema_version").fetchone()
        return int(row[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> SqliteStateStore:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[SqliteStateTxn]:
        with self._lock:
            if self._conn.in_transaction:
                raise RuntimeError("state transactions do not nest: commit the open one first")
            self._conn.execute("BEGIN IMMEDIATE")
            txn = SqliteStateTxn(self._conn)
            try:
                yield txn
            except BaseException:
                txn._end()
                self._conn.execute("ROLLBACK")
                raise
            txn._end()
            _commit(self._conn)

    # -- the connector lease (connector_core/state/lease.py) -------------------------------------------

    @contextmanager
    def lease(self, connector: str, *, wait: bool = False) -> Iterator[None]:
        """An exclusive lock file beside the store (``state.db.<connector>.lock``) naming its holder.

        The OS releases the lock when the holding process dies, however it dies; the file itself stays, and
        its stale content is overwritten by the next holder.

        A read-only store (a dry run's) holds nothing and creates no file: a run that writes nothing cannot
        collide with one that does, and it must not keep a scheduled run waiting while it plans.
        """
        if self.read_only:
            yield
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

    # -- checkpoints -------------------------------------------------------------------------------

    def get_checkpoint(self, connector: str, direction: Direction) -> str | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT value FROM checkpoints WHERE connector = ? AND direction = ?",
                (connector, Direction(direction).value),
            ).fetchone()
        return row[0] if row else None

    def checkpoints(self) -> dict[tuple[str, str], str | None]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT connector, direction, value FROM checkpoints ORDER BY connector, direction"
            ).fetchall()
        return {(connector, direction): value for connector, direction, value in rows}

    # -- links -------------------------------------------------------------------------------------

    def get_link(self, connector: str, entity_guid: str) -> Link | None:
        with self._lock:
            row = self._conn.execute(
                f"SELECT {_LINK_COLUMNS} FROM links WHERE connector = ? AND entity_guid = ?",
                (connector, entity_guid),
            ).fetchone()
        return _link_from_row(row) if row else None

    def get_links(self, connector: str, entity_guids: Iterable[str]) -> dict[str, Link]:
        rows = self._rows_in(
            f"SELECT {_LINK_COLUMNS} FROM links WHERE connector = ? AND entity_guid",
            (connector,),
            entity_guids,
        )
        return {row[1]: _link_from_row(row) for row in rows}

    def _rows_in(self, select: str, params: tuple[Any, ...], keys: Iterable[str]) -> list[tuple[Any, ...]]:
        """``select`` (ending in the column to match) ``IN`` the distinct ``keys``, a chunk per query."""
        rows: list[tuple[Any, ...]] = []
        with self._lock:
            for part in chunks(dict.fromkeys(keys), _IN_CHUNK):
                rows += self._conn.execute(f"{select} IN ({','.join('?' * len(part))})", (*params, *part))
        return rows

    def _pages(
        self, select: str, params: tuple[Any, ...], key: int, start: Any, page_size: int
    ) -> Iterator[Any]:
        """``select`` takes ``params``, the last key seen and the page size: see :func:`keyset_pages`."""

        def fetch(last: Any) -> list[tuple[Any, ...]]:
            with self._lock:
                return self._conn.execute(select, (*params, last, page_size)).fetchall()

        return keyset_pages(fetch, key, start, page_size)

    def find_link(self, connector: str, external_id: str) -> Link | None:
        with self._lock:
            row = self._conn.execute(
                f"SELECT {_LINK_COLUMNS} FROM links WHERE connector = ? AND external_id = ?",
                (connector, str(external_id)),
            ).fetchone()
        return _link_from_row(row) if row else None

    def iter_links(self, connector: str, page_size: int = 1000) -> Iterator[Link]:
        """Every link of ``connector`` in guid order, a page per query, so memory stays flat."""
        select = (
            f"SELECT {_LINK_COLUMNS} FROM links WHERE connector = ? AND entity_guid > ? "
            "ORDER BY entity_guid LIMIT ?"
        )
        for row in self._pages(select, (connector,), 1, "", page_size):
            yield _link_from_row(row)

    # -- dead letters ------------------------------------------------------------------------------

    def dead_letters(
        self, connector: str | None = None, status: str | None = "open", limit: int = 100
    ) -> list[DeadLetter]:
        rows = self._select_by_status("dead_letters", _DEAD_LETTER_COLUMNS, connector, status, limit)
        return [_dead_letter_from_row(row) for row in rows]

    def _select_by_status(
        self, table: str, columns: str, connector: str | None, status: str | None, limit: int
    ) -> list[tuple[Any, ...]]:
        """Rows of ``table`` (dead letters, conflicts) for an optional connector and status, oldest first."""
        where, params = [], []
        if connector is not None:
            where.append("connector = ?")
            params.append(connector)
        if status is not None:
            where.append("status = ?")
            params.append(status)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        with self._lock:
            return self._conn.execute(
                f"SELECT {columns} FROM {table} {clause} ORDER BY id LIMIT ?", (*params, limit)
            ).fetchall()

    def iter_dead_letters(
        self, connector: str, status: str | None = "open", page_size: int = 1000
    ) -> Iterator[DeadLetter]:
        select = (
            f"SELECT {_DEAD_LETTER_COLUMNS} FROM dead_letters WHERE connector = ? "
            "AND (? IS NULL OR status = ?) AND id > ? ORDER BY id LIMIT ?"
        )
        for row in self._pages(select, (connector, status, status), 0, 0, page_size):
            yield _dead_letter_from_row(row)

    def open_dead_letter_refs(self, connector: str, direction: Direction, refs: Iterable[str]) -> set[str]:
        rows = self._rows_in(
            "SELECT ref FROM dead_letters WHERE connector = ? AND direction = ? AND status = 'open' AND ref",
            (connector, Direction(direction).value),
            refs,
        )
        return {row[0] for row in rows}

    def open_dead_letter_reasons(
        self, connector: str, direction: Direction, refs: Iterable[str]
    ) -> dict[str, str]:
        rows = self._rows_in(
            "SELECT ref, reason FROM dead_letters WHERE connector = ? AND direction = ? "
            "AND status = 'open' AND ref",
            (connector, Direction(direction).value),
            refs,
        )
        return {row[0]: row[1] for row in rows}

    def get_dead_letter(self, dead_letter_id: int) -> DeadLetter | None:
        with self._lock:
            row = self._conn.execute(
                f"SELECT {_DEAD_LETTER_COLUMNS} FROM dead_letters WHERE id = ?", (dead_letter_id,)
            ).fetchone()
        return _dead_letter_from_row(row) if row else None

    # -- intents, parked children, conflicts --------------------------------------------------------

    def intents(self, connector: str) -> set[str]:
        with self._lock:
            rows = self._conn.execute("SELECT ref FROM intents WHERE connector = ?", (connector,)).fetchall()
        return {row[0] for row in rows}

    def parked(self, connector: str, limit: int = 1000) -> list[Parked]:
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {_PARKED_COLUMNS} FROM parked WHERE connector = ? ORDER BY created_at LIMIT ?",
                (connector, limit),
            ).fetchall()
        return [Parked(*row) for row in rows]

    def iter_parked(self, connector: str, page_size: int = 1000) -> Iterator[Parked]:
        select = (
            f"SELECT {_PARKED_COLUMNS} FROM parked WHERE connector = ? AND entity_guid > ? "
            "ORDER BY entity_guid LIMIT ?"
        )
        for row in self._pages(select, (connector,), 1, "", page_size):
            yield Parked(*row)

    def parked_attempts(self, connector: str, entity_guids: Iterable[str]) -> dict[str, int]:
        rows = self._rows_in(
            "SELECT entity_guid, attempts FROM parked WHERE connector = ? AND entity_guid",
            (connector,),
            entity_guids,
        )
        return {row[0]: row[1] for row in rows}

    def parked_children(self, connector: str, parent_guids: Iterable[str]) -> list[str]:
        rows = self._rows_in(
            "SELECT entity_guid FROM parked WHERE connector = ? AND parent_guid", (connector,), parent_guids
        )
        return sorted(row[0] for row in rows)

    def open_counts(self, connector: str) -> OpenCounts:
        with self._lock:
            (counts,) = self._conn.execute(
                "SELECT (SELECT count(*) FROM dead_letters WHERE status = 'open' AND connector = ?), "
                "(SELECT count(*) FROM conflicts WHERE status = 'open' AND connector = ?), "
                "(SELECT count(*) FROM parked WHERE connector = ?)",
                (connector, connector, connector),
            ).fetchall()
        return OpenCounts(*counts)

    def conflicts(
        self, connector: str | None = None, status: str | None = "open", limit: int = 100
    ) -> list[Conflict]:
        rows = self._select_by_status("conflicts", _CONFLICT_COLUMNS, connector, status, limit)
        return [_conflict_from_row(row) for row in rows]

    def get_conflict(self, conflict_id: int) -> Conflict | None:
        with self._lock:
            row = self._conn.execute(
                f"SELECT {_CONFLICT_COLUMNS} FROM conflicts WHERE id = ?", (conflict_id,)
            ).fetchone()
        return _conflict_from_row(row) if row else None

    def open_conflicts(self, connector: str, entity_guids: Iterable[str]) -> set[str]:
        rows = self._rows_in(
            "SELECT entity_guid FROM conflicts WHERE connector = ? AND status = 'open' AND entity_guid",
            (connector,),
            entity_guids,
        )
        return {row[0] for row in rows}

    # -- scheduled ticks -------------------------------------------------------------------------------

    def claim_tick(self, connector: str, direction: str, tick: str, holder: str) -> bool:
        with self._lock:
            cur = self._conn.execute(
                "INSERT OR IGNORE INTO ticks (connector, direction, tick, holder, claimed_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (connector, direction, tick, holder, now_timestamp()),
            )
        return cur.rowcount == 1

    def last_tick(self, connector: str, direction: str) -> str | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT max(tick) FROM ticks WHERE connector = ? AND direction = ?", (connector, direction)
            ).fetchone()
        return row[0] if row else None

    # -- runs --------------------------------------------------------------------------------------

    def start_run(self, connector: str, direction: str, trigger: str) -> int:
        with self._lock:
            cur = self._conn.execute(
                "INSERT INTO runs (connector, direction, trigger, started_at, outcome, counts) "
                "VALUES (?, ?, ?, ?, 'running', '{}')",
                (connector, str(direction), trigger, now_timestamp()),
            )
            run_id = cur.lastrowid
        assert run_id is not None
        return run_id

    def abandon_runs(self, connector: str, reason: str) -> int:
        with self._lock:
            cur = self._conn.execute(
                "UPDATE runs SET finished_at = ?, outcome = 'abandoned', error = ? "
                "WHERE connector = ? AND outcome = 'running'",
                (now_timestamp(), reason, connector),
            )
        return cur.rowcount

    def finish_run(self, run_id: int, outcome: str, counts: dict[str, int], error: str | None = None) -> None:
        with self._lock:
            cur = self._conn.execute(
                "UPDATE runs SET finished_at = ?, outcome = ?, counts = ?, error = ? WHERE id = ?",
                (now_timestamp(), outcome, _dumps(counts), error, run_id),
            )
        if cur.rowcount == 0:
            raise KeyError(f"no run with id {run_id}")

    def runs(
        self, connector: str | None = None, limit: int = 20, failed_only: bool = False
    ) -> list[RunRecord]:
        """Newest first. ``failed_only`` includes interrupted runs: both need an operator's look."""
        where: list[str] = []
        params: list[Any] = []
        if connector is not None:
            where.append("connector = ?")
            params.append(connector)
        if failed_only:
            where.append(f"outcome IN ({','.join('?' * len(FAILED_OUTCOMES))})")
            params.extend(FAILED_OUTCOMES)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {_RUN_COLUMNS} FROM runs {clause} ORDER BY id DESC LIMIT ?",
                (*params, limit),
            ).fetchall()
        return [_run_from_row(row) for row in rows]

"""The one place where SQLite and PostgreSQL differ, for the stores that run on both.

The state store and the event log write each query once, in one spelling: ``?`` parameters, ``{s}.`` before
every table name, and a few DDL tokens (``{key}``, ``{json}``, ``{serial}``, ``{bool}``, ``{false}``,
``{small}``, ``{bigint}``; a store may add names of its own). A
:class:`Database` renders that text for its dialect (once per distinct text: the rendered form is cached) and
runs it on a DB-API connection it owns, under a lock. Everything else a backend does differently lives here
too, as one named method each:

============================  ====================================  ==========================================
what                          SQLite                                PostgreSQL
============================  ====================================  ==========================================
parameters, schema            ``?``, none                           ``%s``, ``"schema".``
DDL types (``TOKENS``)        TEXT, INTEGER AUTOINCREMENT           JSONB, BIGSERIAL, TEXT COLLATE "C"
JSON in / out                 ``codec.dumps`` / ``codec.loads``     ``Jsonb`` / decoded by psycopg
a key list (:meth:`in_`)      ``IN (?, ...)``, 500 keys a query     ``= ANY(%s)``, one array, one query
transactions                  ``BEGIN IMMEDIATE`` / ``COMMIT``      psycopg's ``transaction()``
a savepoint                   none (a failed statement undoes       ``SAVEPOINT`` (a failed statement aborts
                              only itself)                          the whole transaction otherwise)
DDL serialised by             the write lock of ``BEGIN IMMEDIATE``  a transaction-level advisory lock
a unique key violated         ``sqlite3.IntegrityError``            ``psycopg.errors.UniqueViolation``
============================  ====================================  ==========================================

Why not SQLAlchemy Core: see docs/architecture.md ("One SQL layer"); in short, measured on this machine its
compiled ``executemany`` inserted and its compiled ``select`` read at half the driver's own speed, and the
stores need nothing of it but these few rows of differences.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from connector_core import codec
from connector_core.streams import chunks

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger("dcsync.storage")

_IN_CHUNK = 500  # keys per IN (...) query: well under SQLite's bound-parameter limit on every build
_TOKEN = re.compile(r"\{s\}\.|\{(\w+)\}")

Migration = Sequence[str] | Mapping[str, Sequence[str]] | Callable[[Any], None]
"""One schema step: statements in the shared spelling; or, where the dialects cannot take the same path
(SQLite drops a constraint only by rebuilding its table, PostgreSQL alters it in place), the statements of
each dialect by its :attr:`Database.name`; or (for a data fix) a function of the raw connection."""


class SchemaVersionError(RuntimeError):
    """The store was written by a newer dcsync: this code cannot know what its tables mean."""


class Database(ABC):
    """One connection, a lock around it, and the rendering of shared SQL text for its dialect."""

    name: ClassVar[str]
    TOKENS: ClassVar[dict[str, str]]
    unique_violation: type[BaseException]

    def __init__(self, conn: Any, prefix: str, names: dict[str, str] | None = None) -> None:
        self.conn = conn
        self.lock = threading.RLock()
        self._prefix = prefix
        self._names = {**self.TOKENS, **(names or {})}
        self._rendered: dict[str, str] = {}
        self._in_transaction = False

    # -- rendering ------------------------------------------------------------------------------------

    def sql(self, text: str) -> str:
        """``text`` in this dialect's spelling (cached: the hot paths render nothing twice)."""
        done = self._rendered.get(text)
        if done is None:
            done = self._rendered[text] = self._render(_TOKEN.sub(self._token, text))
        return done

    def _token(self, match: re.Match[str]) -> str:
        name = match.group(1)
        if name is None:  # ``{s}.``: the schema of a table name
            return self._prefix
        return self._names.get(name, match.group(0))

    def _render(self, text: str) -> str:
        return text

    # -- values ---------------------------------------------------------------------------------------

    @abstractmethod
    def json_in(self, value: Any) -> Any:
        """Each dialect's own."""

    @abstractmethod
    def json_out(self, value: Any) -> Any:
        """Each dialect's own."""

    @abstractmethod
    def in_(self, keys: Iterable[Any]) -> Iterator[tuple[str, tuple[Any, ...]]]:
        """``(fragment, params)`` pairs matching a column against ``keys``: ``f"col {fragment}"``."""

    # -- statements -----------------------------------------------------------------------------------

    def execute(self, text: str, params: Sequence[Any] = ()) -> Any:
        """Run one statement; the cursor is for ``rowcount``. Read rows with :meth:`rows`/:meth:`row`."""
        with self.lock:
            return self.conn.execute(self.sql(text), params)

    def rows(self, text: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self.lock:
            return self.conn.execute(self.sql(text), params).fetchall()

    def row(self, text: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        with self.lock:
            row: tuple[Any, ...] | None = self.conn.execute(self.sql(text), params).fetchone()
            return row

    def rows_in(self, select: str, params: Sequence[Any], keys: Iterable[Any]) -> list[tuple[Any, ...]]:
        """``select`` (ending in the column to match) against the distinct ``keys``."""
        found: list[tuple[Any, ...]] = []
        with self.lock:
            for fragment, part in self.in_(dict.fromkeys(keys)):
                found += self.conn.execute(self.sql(f"{select} {fragment}"), (*params, *part)).fetchall()
        return found

    @abstractmethod
    def executemany(self, text: str, rows: Sequence[Sequence[Any]]) -> None:
        """Each dialect's own."""

    # -- transactions ---------------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One write transaction, holding the lock: other threads queue until it ends."""
        with self.lock:
            if self._in_transaction:
                raise RuntimeError("transactions do not nest: commit the open one first")
            self._in_transaction = True
            try:
                with self._transaction():
                    yield
            finally:
                self._in_transaction = False

    @abstractmethod
    def _transaction(self) -> AbstractContextManager[Any]:
        """Each dialect's own."""

    def savepoint(self) -> AbstractContextManager[Any]:
        """A nested scope whose failure leaves the enclosing transaction usable."""
        return nullcontext()

    def ddl_transaction(self, lock_name: str) -> AbstractContextManager[Any]:
        """A transaction in which no other process changes the same schema."""
        return self.transaction()

    def prepare(self, statements: Iterable[str], lock_name: str) -> None:
        """Run idempotent ``CREATE ... IF NOT EXISTS`` statements before the versioned steps."""
        with self.ddl_transaction(lock_name):
            for statement in (*self._preamble(), *statements):
                self.conn.execute(self.sql(statement))

    def _preamble(self) -> tuple[str, ...]:
        return ()

    @abstractmethod
    def has_table(self, name: str) -> bool:
        """Whether the store's table ``name`` exists (a read-only open creates nothing, so it asks)."""

    def close(self) -> None:
        with self.lock:
            self.conn.close()


class SqliteDatabase(Database):
    name = "sqlite"
    TOKENS: ClassVar[dict[str, str]] = {
        "key": "TEXT",
        "json": "TEXT",
        "serial": "INTEGER PRIMARY KEY AUTOINCREMENT",
        "bool": "INTEGER",
        "false": "0",
        "small": "INTEGER",
        "bigint": "INTEGER",
    }

    def __init__(self, conn: sqlite3.Connection, names: dict[str, str] | None = None) -> None:
        super().__init__(conn, "", names)
        self.unique_violation = sqlite3.IntegrityError

    json_in = staticmethod(codec.dumps)  # type: ignore[assignment]
    json_out = staticmethod(codec.loads)  # type: ignore[assignment]

    def has_table(self, name: str) -> bool:
        with self.lock:
            row = self.conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
            ).fetchone()
        return row is not None

    def in_(self, keys: Iterable[Any]) -> Iterator[tuple[str, tuple[Any, ...]]]:
        for part in chunks(keys, _IN_CHUNK):
            yield f"IN ({','.join('?' * len(part))})", tuple(part)

    def executemany(self, text: str, rows: Sequence[Sequence[Any]]) -> None:
        with self.lock:
            self.conn.executemany(self.sql(text), rows)

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")  # taken eagerly, so two writers queue instead of failing mid-way
        try:
            yield
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        try:
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:  # a failed COMMIT may leave it open
                conn.execute("ROLLBACK")
            raise


class PostgresDatabase(Database):
    name = "postgres"
    TOKENS: ClassVar[dict[str, str]] = {
        "key": 'TEXT COLLATE "C"',
        "json": "JSONB",
        "serial": "BIGSERIAL PRIMARY KEY",
        "bool": "BOOLEAN",
        "false": "false",
        "small": "SMALLINT",
        "bigint": "BIGINT",
    }

    def __init__(
        self,
        conn: psycopg.Connection[Any],
        schema: str,
        *,
        table_prefix: str = "",
        names: dict[str, str] | None = None,
    ) -> None:
        import psycopg
        from psycopg.types.json import Jsonb

        super().__init__(conn, f'"{schema}".{table_prefix}', names)  # schema: a checked plain identifier
        self.schema = schema
        self._jsonb = Jsonb
        self.unique_violation = psycopg.errors.UniqueViolation

    def _preamble(self) -> tuple[str, ...]:
        return (f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"',)

    def has_table(self, name: str) -> bool:
        with self.lock:
            row = self.conn.execute("SELECT to_regclass(%s)", (f"{self._prefix}{name}",)).fetchone()
        return row is not None and row[0] is not None

    def _render(self, text: str) -> str:
        if "%" in text:
            raise ValueError(f"a literal % in shared SQL would be read as a parameter: {text!r}")
        return text.replace("?", "%s")

    def json_in(self, value: Any) -> Any:
        return self._jsonb(value)

    def json_out(self, value: Any) -> Any:
        return value  # JSONB arrives decoded (by codec.loads: see _postgres.connect)

    def in_(self, keys: Iterable[Any]) -> Iterator[tuple[str, tuple[Any, ...]]]:
        wanted = list(keys)
        if wanted:
            yield "= ANY(?)", (wanted,)

    def executemany(self, text: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            with self.lock, self.conn.cursor() as cur:
                cur.executemany(self.sql(text), rows)

    def _transaction(self) -> AbstractContextManager[Any]:
        return self.conn.transaction()

    def savepoint(self) -> AbstractContextManager[Any]:
        return self.conn.transaction()

    @contextmanager
    def ddl_transaction(self, lock_name: str) -> Iterator[None]:
        from connector_core._postgres import advisory_key

        with self.transaction():
            # CREATE ... IF NOT EXISTS is not safe against a second process doing the same at once.
            self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (advisory_key(lock_name, self.schema),))
            yield


@dataclass(frozen=True)
class Layout:
    """A store's tables: the statements run before the versioned steps (idempotent), the steps, how the
    version is read (no row: 0) and recorded (its one ``?``), and the advisory-lock name for its DDL."""

    prepare: tuple[str, ...]
    migrations: tuple[Migration, ...]
    get_version: str
    set_version: tuple[str, ...]
    lock_name: str


def migrate(db: Database, layout: Layout, what: str) -> int:
    """Bring ``db`` to ``len(layout.migrations)``, each step in its own transaction; return the version.

    A step that fails rolls back whole, leaving the previous version intact and recorded; a version newer
    than the steps this code knows is refused, because this code cannot know what those tables mean. On
    any failure the connection is closed: a half-opened store is no use to anyone.
    """
    try:
        db.prepare(layout.prepare, layout.lock_name)
        latest = len(layout.migrations)
        while True:
            with db.ddl_transaction(layout.lock_name):
                row = db.conn.execute(db.sql(layout.get_version)).fetchone()
                current = int(row[0]) if row and row[0] is not None else 0
                if current > latest:
                    raise SchemaVersionError(
                        f"{what} has schema version {current}, newer than this dcsync "
                        f"understands ({latest}): upgrade dcsync to open it"
                    )
                if current < latest:
                    if current:  # a new store's first steps are its creation, not an upgrade
                        log.info("%s: upgrading its layout from version %d to %d", what, current, current + 1)
                    _run_step(db, layout.migrations[current])
                    for statement in layout.set_version:
                        db.conn.execute(db.sql(statement), (current + 1,) if "?" in statement else ())
            if current == latest:
                return current
    except BaseException:
        db.close()
        raise


def existing_version(db: Database, layout: Layout, table: str, what: str) -> int | None:
    """For a read-only open, which creates nothing: the version of the layout the store has, ``None`` when
    it has none yet (its version table ``table`` does not exist). A newer layout is refused, as
    :func:`migrate` refuses it; on any failure the connection is closed."""
    try:
        if not db.has_table(table):
            return None
        with db.lock:
            row = db.conn.execute(db.sql(layout.get_version)).fetchone()
        current = int(row[0]) if row and row[0] is not None else 0
        if current > len(layout.migrations):
            raise SchemaVersionError(
                f"{what} has schema version {current}, newer than this dcsync "
                f"understands ({len(layout.migrations)}): upgrade dcsync to open it"
            )
        return current
    except BaseException:
        db.close()
        raise


def memory_sqlite() -> sqlite3.Connection:
    """An empty in-memory database: what a read-only open of a store that does not exist yet reads."""
    return sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)


def _run_step(db: Database, step: Migration) -> None:
    if callable(step):
        step(db.conn)
        return
    statements = step[db.name] if isinstance(step, Mapping) else step
    for statement in statements:
        db.conn.execute(db.sql(statement))


BUSY_TIMEOUT_MS = 30_000


def connect_sqlite(path: str, pragmas: Sequence[str]) -> sqlite3.Connection:
    """Open (creating its folder) a SQLite file for a store: autocommit, since every write transaction is
    an explicit ``BEGIN IMMEDIATE``; shareable between threads, since the :class:`Database` lock guards it;
    waiting up to 30 s for another process's write lock; then ``pragmas``, in order."""
    if path != ":memory:" and not path.startswith("file:"):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(
        path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000
    )
    try:
        for pragma in (f"busy_timeout = {BUSY_TIMEOUT_MS}", *pragmas):
            conn.execute(f"PRAGMA {pragma}")
    except BaseException:
        conn.close()
        raise
    return conn

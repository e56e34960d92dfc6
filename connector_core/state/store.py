"""The state store's queries, written once for SQLite and PostgreSQL.

A batch's outcome (links written, dead letters recorded, checkpoint moved) is committed in one transaction, so
a crash can never leave a checkpoint past a record that was neither delivered nor dead-lettered. Each query is
one method here, in the shared spelling of :mod:`connector_core._sql`; what differs between the databases
(parameters, schema, JSON, key lists, transactions) is the :class:`~connector_core._sql.Database`'s, and the
connector lease is each backend module's own (``state/sqlite.py``, ``state/postgres.py``).

One instance owns one connection; calls are serialised by a lock, so an instance may be handed between
threads, and an open transaction keeps other threads out until it commits.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, ClassVar

from connector_core import codec
from connector_core._sql import Database, Migration, migrate
from connector_core.connector import part_ref
from connector_core.events import now_timestamp
from connector_core.state import schema
from connector_core.state._rows import keyset_pages
from connector_core.state.base import (
    ActionRecord,
    BulkPlanRecord,
    BulkShardRecord,
    Conflict,
    DeadLetter,
    DeadLetterGroup,
    Direction,
    DuplicateExternalIdError,
    Link,
    OpenCounts,
    Parked,
    RunRecord,
)
from connector_core.state.sealing import PLAIN, SEALED, StateCipher

DEAD_LETTER_CLOSED = frozenset({"replayed", "discarded"})
FAILED_OUTCOMES = ("failed", "interrupted", "abandoned")

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
_PLAN_COLUMNS = "id, connector, shards, start_cursor, mark, status, created_at, finished_at"
_PURGE: dict[str, tuple[str, str]] = {
    "dead_letters": ("dead_letters", "status IN ('replayed', 'discarded') AND updated_at < ?"),
    "runs": ("runs", "outcome <> 'running' AND finished_at < ?"),
    "conflicts": ("conflicts", "status = 'resolved' AND updated_at < ?"),
    "deleted_snapshots": ("links", "deleted = ? AND synced_at < ?"),
    "audit": ("actions", "at < ?"),
}
"""What ``retention:`` purges: each kind's table and the rows past keeping (never open work)."""


def _purge_params(kind: str, before: str) -> tuple[Any, ...]:
    if kind not in _PURGE:
        raise ValueError(f"nothing to purge called {kind!r} (one of {', '.join(_PURGE)})")
    return (True, before) if kind == "deleted_snapshots" else (before,)


_SHARD_COLUMNS = "plan_id, shard, status, run_id, updated_at"
_RUN_COLUMNS = "id, connector, direction, trigger, started_at, finished_at, outcome, counts, error"
_ACTION_COLUMNS = "id, at, actor, action, connector, target, detail"
_INSERT_ACTION = (
    "INSERT INTO {s}.actions (at, actor, action, connector, target, detail) VALUES (?, ?, ?, ?, ?, ?)"
)


def _action_row(
    db: Database,
    cipher: StateCipher,
    actor: str,
    action: str,
    connector: str | None,
    target: str | None,
    detail: Any,
) -> tuple[Any, ...]:
    """An audit row; its ``detail`` is sealed like a payload: an operator's note may name a person."""
    if not actor or not action:
        raise ValueError("an audited action needs an actor and an action name")
    sealed = cipher.seal(dict(detail or {}), "actions.detail")
    return (now_timestamp(), actor, action, connector, target, db.json_in(sealed))


_SEALED_KEY = "sealed_key:"
"""``state_meta`` rows ``sealed_key:<key id>``: the keys that may have sealed a value in the store."""

_UPSERT_LINK = (
    f"INSERT INTO {{s}}.links ({_LINK_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (connector, entity_guid) DO UPDATE SET "
    "external_id = excluded.external_id, entity_name = excluded.entity_name, "
    "snapshot = excluded.snapshot, remote_version = excluded.remote_version, "
    "synced_at = excluded.synced_at, deleted = excluded.deleted, base = excluded.base"
)


class SqlStateTxn:
    """The writes of one ``transaction()`` block; unusable once the block has ended, so a stray write can
    never land outside the transaction it was meant for."""

    def __init__(self, db: Database, cipher: StateCipher = PLAIN) -> None:
        self._db: Database | None = db
        self._cipher = cipher

    # -- sealing (connector_core/state/sealing.py): personal data is sealed here, on its way in ---------

    def _json_in(self, value: Any, column: str) -> Any:
        return self._c().json_in(self._cipher.seal(value, column))

    def _text_in(self, text: str | None, column: str) -> str | None:
        return self._cipher.seal(text, column)  # type: ignore[no-any-return]

    def _reason_in(self, reason: str) -> str:
        """A dead letter's reason, sealed deterministically: equal reasons stay equal (GROUP BY)."""
        return self._cipher.seal(reason, "dead_letters.reason")  # type: ignore[no-any-return]

    def _c(self) -> Database:
        if self._db is None:
            raise RuntimeError("this state transaction has already ended")
        return self._db

    def _end(self) -> None:
        self._db = None

    def set_checkpoint(self, connector: str, direction: Direction, value: str | None) -> None:
        self._c().execute(
            "INSERT INTO {s}.checkpoints (connector, direction, value, updated_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (connector, direction) DO UPDATE SET value = excluded.value, "
            "updated_at = excluded.updated_at",
            (connector, Direction(direction).value, value, now_timestamp()),
        )

    def upsert_link(self, link: Link) -> None:
        self.upsert_links([link])

    def upsert_links(self, links: Iterable[Link]) -> None:
        db = self._c()
        json = self._json_in
        rows = [
            (
                link.connector,
                link.entity_guid,
                str(link.external_id),
                link.entity_name,
                json(link.snapshot, "links.snapshot"),
                link.remote_version,
                link.synced_at,
                bool(link.deleted),
                json(link.base, "links.base"),
            )
            for link in links
        ]
        if not rows:
            return
        try:
            with db.savepoint():
                db.executemany(_UPSERT_LINK, rows)
        except db.unique_violation as exc:
            for row in rows:  # name the offending link; the whole transaction rolls back anyway
                try:
                    with db.savepoint():
                        db.execute(_UPSERT_LINK, row)
                except db.unique_violation:
                    raise DuplicateExternalIdError(
                        f"connector {row[0]!r}: external id {row[2]!r} is already linked "
                        f"to another entity (while linking {row[1]})"
                    ) from exc
            raise

    def delete_link(self, connector: str, entity_guid: str) -> None:
        self._c().execute(
            "DELETE FROM {s}.links WHERE connector = ? AND entity_guid = ?", (connector, entity_guid)
        )

    def add_dead_letter(
        self,
        connector: str,
        direction: Direction,
        ref: str,
        reason: str,
        payload: dict[str, Any],
        *,
        attempt: bool = True,
    ) -> None:
        now = now_timestamp()
        db = self._c()
        db.execute(
            "INSERT INTO {s}.dead_letters AS d (connector, direction, ref, reason, payload, attempts, "
            "status, created_at, updated_at) VALUES (?, ?, ?, ?, ?, 1, 'open', ?, ?) "
            "ON CONFLICT (connector, direction, ref) WHERE status = 'open' DO UPDATE SET "
            "attempts = d.attempts + ?, reason = excluded.reason, payload = excluded.payload, "
            "updated_at = excluded.updated_at",
            (
                connector,
                Direction(direction).value,
                ref,
                self._reason_in(reason),
                self._json_in(payload, "dead_letters.payload"),
                now,
                now,
                int(attempt),
            ),
        )

    def resolve_dead_letter(self, connector: str, direction: Direction, ref: str, status: str) -> None:
        if status not in DEAD_LETTER_CLOSED:
            raise ValueError(
                f"a dead letter is resolved as one of {sorted(DEAD_LETTER_CLOSED)}, not {status!r}"
            )
        self._c().execute(
            "UPDATE {s}.dead_letters SET status = ?, updated_at = ? "
            "WHERE connector = ? AND direction = ? AND ref = ? AND status = 'open'",
            (status, now_timestamp(), connector, Direction(direction).value, ref),
        )

    def resolve_part_dead_letters(self, connector: str, direction: Direction, ref: str, status: str) -> None:
        if status not in DEAD_LETTER_CLOSED:
            raise ValueError(
                f"a dead letter is resolved as one of {sorted(DEAD_LETTER_CLOSED)}, not {status!r}"
            )
        prefix = part_ref(ref, "")
        # substr, not LIKE or a range: a guid may hold LIKE's wildcards, and a range follows the collation
        self._c().execute(
            "UPDATE {s}.dead_letters SET status = ?, updated_at = ? "
            "WHERE connector = ? AND direction = ? AND status = 'open' AND substr(ref, 1, ?) = ?",
            (status, now_timestamp(), connector, Direction(direction).value, len(prefix), prefix),
        )

    def add_intents(self, connector: str, refs: Iterable[str]) -> None:
        now = now_timestamp()
        self._c().executemany(
            "INSERT INTO {s}.intents (connector, ref, created_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
            [(connector, ref, now) for ref in refs],
        )

    def clear_intents(self, connector: str, refs: Iterable[str]) -> None:
        db = self._c()
        for fragment, part in db.in_(refs):  # a statement per key list: one per ref costs twice as much
            db.execute(
                f"DELETE FROM {{s}}.intents WHERE connector = ? AND ref {fragment}", (connector, *part)
            )

    def park(
        self, connector: str, entity_guid: str, parent_guid: str, reason: str, *, count: bool = True
    ) -> None:
        now = now_timestamp()
        step = 1 if count else 0
        self._c().execute(
            f"INSERT INTO {{s}}.parked AS p ({_PARKED_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (connector, entity_guid) DO UPDATE SET attempts = p.attempts + ?, "
            "parent_guid = excluded.parent_guid, reason = excluded.reason, updated_at = excluded.updated_at",
            (connector, entity_guid, parent_guid, self._text_in(reason, "parked.reason"), step, now, now)
            + (step,),
        )

    def unpark(self, connector: str, entity_guid: str) -> None:
        self._c().execute(
            "DELETE FROM {s}.parked WHERE connector = ? AND entity_guid = ?", (connector, entity_guid)
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
        db = self._c()
        if status == "open":
            db.execute(
                "DELETE FROM {s}.conflicts WHERE connector = ? AND entity_guid = ? AND status = 'open'",
                (connector, entity_guid),
            )
        json = self._json_in
        db.execute(
            "INSERT INTO {s}.conflicts (connector, entity_guid, external_id, policy, status, resolution, "
            "base, local, remote, remote_version, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                connector,
                entity_guid,
                str(external_id),
                policy,
                status,
                resolution,
                json(base, "conflicts.base"),
                json(local, "conflicts.local"),
                json(remote, "conflicts.remote"),
                remote_version,
                now,
                now,
            ),
        )

    def resolve_conflict(self, conflict_id: int, resolution: str) -> None:
        cur = self._c().execute(
            "UPDATE {s}.conflicts SET status = 'resolved', resolution = ?, updated_at = ? "
            "WHERE id = ? AND status = 'open'",
            (resolution, now_timestamp(), conflict_id),
        )
        if cur.rowcount == 0:
            raise KeyError(f"no open conflict with id {conflict_id}")

    def set_bulk_shard(self, plan_id: str, shard: int, status: str, run_id: int | None = None) -> None:
        cur = self._c().execute(
            "UPDATE {s}.bulk_shards SET status = ?, run_id = coalesce(?, run_id), updated_at = ? "
            "WHERE plan_id = ? AND shard = ?",
            (status, run_id, now_timestamp(), plan_id, shard),
        )
        if cur.rowcount == 0:
            raise KeyError(f"bulk load plan {plan_id} has no shard {shard}")

    def record_action(
        self,
        actor: str,
        action: str,
        *,
        connector: str | None = None,
        target: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        db = self._c()
        db.execute(_INSERT_ACTION, _action_row(db, self._cipher, actor, action, connector, target, detail))

    def finish_bulk_plan(self, plan_id: str) -> None:
        self._c().execute(
            "UPDATE {s}.bulk_plans SET status = 'finished', finished_at = ? WHERE id = ? AND status = 'open'",
            (now_timestamp(), plan_id),
        )


class SqlStateStore:
    """A :class:`~connector_core.state.base.StateStore` over a :class:`~connector_core._sql.Database`.

    A backend subclass opens the connection, picks its transaction class and grants the connector lease.
    """

    _txn_class: ClassVar[type[SqlStateTxn]] = SqlStateTxn

    read_only = False

    def __init__(
        self, db: Database, migrations: Sequence[Migration], where: str, *, lay_out: bool = True
    ) -> None:
        """``lay_out=False``: the tables are there at the latest version already (a read-only open)."""
        self._db = db
        self._conn = db.conn
        self._lock = db.lock
        self._cipher: StateCipher = PLAIN
        if lay_out:
            migrate(db, replace(schema.LAYOUT, migrations=tuple(migrations)), f"state store {where}")

    # -- encryption at rest (connector_core/state/sealing.py) --------------------------------------

    def use_cipher(self, cipher: StateCipher) -> None:
        """Seal and open personal data with ``cipher`` from now on.

        The store's marker rows (``state_meta``: one ``sealed_key:<id>`` row per key that may have sealed
        a value here) are checked first, so a missing or wrong key is one line at open, not a failure in
        the middle of a run; a writable store then records the sealing key's id (an insert that does
        nothing when it is there, so processes opening at once do not race).
        """
        cipher.check_store_keys(self.sealed_key_ids())
        if cipher.key_id is not None and not self.read_only:
            self._db.execute(
                "INSERT INTO {s}.state_meta (key, value) VALUES (?, ?) ON CONFLICT DO NOTHING",
                (f"{_SEALED_KEY}{cipher.key_id}", now_timestamp()),
            )
        self._cipher = cipher

    @property
    def cipher(self) -> StateCipher:
        return self._cipher

    def sealed_key_ids(self) -> list[str]:
        """The ids of every key that may have sealed a value in this store (the marker rows)."""
        if not self._db.has_table("state_meta"):  # a read-only open of a store of an older layout
            return []
        rows = self._db.rows("SELECT key FROM {s}.state_meta")
        return sorted(k.removeprefix(_SEALED_KEY) for (k,) in rows if k.startswith(_SEALED_KEY))

    def forget_sealed_keys(self, keep: str) -> None:
        """After a complete ``rekey``: only ``keep`` (the current key) may have sealed anything here."""
        self._db.execute(
            "DELETE FROM {s}.state_meta WHERE substr(key, 1, ?) = ? AND key <> ?",
            (len(_SEALED_KEY), _SEALED_KEY, f"{_SEALED_KEY}{keep}"),
        )

    def _open(self, stored: Any, column: str, row: object) -> Any:
        return self._cipher.open(stored, column, row)

    def _json_out(self, stored: Any, column: str, row: object) -> Any:
        return self._cipher.open(self._db.json_out(stored), column, row)

    def _reason_out(self, stored: str, row: object = None) -> str:
        """A dead letter's reason as written (sealed deterministically: see ``SqlStateTxn._reason_in``).
        Every query returning ``dead_letters.reason`` maps it through here (``row``: its id, for errors)."""
        return self._cipher.open(stored, "dead_letters.reason", row)  # type: ignore[no-any-return]

    def _payload_out(self, stored: Any, row: object = None) -> Any:
        """A dead letter's payload as written: every query returning ``dead_letters.payload`` maps it here."""
        return self._json_out(stored, "dead_letters.payload", row)

    def _reason_in(self, reason: str) -> str:
        """A reason as stored, to compare with or look up in the ``reason`` column (deterministic)."""
        return self._cipher.seal(reason, "dead_letters.reason")  # type: ignore[no-any-return]

    def rekey_page(self, table: str, after: tuple[Any, ...] | None, limit: int) -> tuple[Any, int, int]:
        """Reseal one page of ``table`` under the current key: ``(last key seen or None, rows read, rows
        rewritten)``. One transaction per page, keyset-paged, so ``rekey`` runs beside live runs, holds
        no lock for long, and resumes where it stopped (a row already under the current key is skipped).

        Each row is rewritten only if its sealed columns still hold what was read (compare-and-set on the
        columns' text), so a run that updated the row in between wins; its write is under the current key
        already (every process seals with it), or the next ``rekey`` pass catches it.
        """
        spec = next(t for t in SEALED if t.table == table)
        keys = ", ".join(spec.key)
        cols = [c for c, _ in spec.columns]
        as_text = ", ".join(f"CAST({c} AS TEXT)" for c in cols)
        where = f"WHERE ({keys}) > ({', '.join('?' * len(spec.key))}) " if after is not None else ""
        db = self._db
        cipher = self._cipher
        rewritten = 0
        with db.transaction():
            rows = db.rows(
                f"SELECT {keys}, {as_text} FROM {{s}}.{table} {where}ORDER BY {keys} LIMIT ?",
                (*(after or ()), limit),
            )
            n = len(spec.key)
            for row in rows:
                key, texts = row[:n], row[n:]
                values = [
                    codec.loads(t) if t is not None and kind == "json" else t
                    for t, (_, kind) in zip(texts, spec.columns, strict=True)
                ]
                if not any(cipher.needs_reseal(v) for v in values):
                    continue
                where_row = "/".join(str(k) for k in key)
                sealed = []
                for value, (column, kind) in zip(values, spec.columns, strict=True):
                    name = f"{table}.{column}"
                    plain = cipher.open(value, name, where_row)
                    new = cipher.seal(plain, name)
                    sealed.append(db.json_in(new) if kind == "json" else new)
                sets = ", ".join(f"{c} = ?" for c in cols)
                same = " AND ".join(
                    [f"{k} = ?" for k in spec.key]
                    + [f"coalesce(CAST({c} AS TEXT), '') = coalesce(CAST(? AS TEXT), '')" for c in cols]
                )
                cur = db.execute(f"UPDATE {{s}}.{table} SET {sets} WHERE {same}", (*sealed, *key, *texts))
                rewritten += int(cur.rowcount)
        last = tuple(rows[-1][: len(spec.key)]) if rows else None
        return last, len(rows), rewritten

    def count_unsealed(self, table: str) -> int:
        """Rows of ``table`` with a sealed column that is plain or under another key than the current:
        what a complete ``rekey`` leaves at zero (read in pages, so memory stays flat)."""
        after: tuple[Any, ...] | None = None
        spec = next(t for t in SEALED if t.table == table)
        keys = ", ".join(spec.key)
        as_text = ", ".join(f"CAST({c} AS TEXT)" for c, _ in spec.columns)
        n = len(spec.key)
        found = 0
        while True:
            where = f"WHERE ({keys}) > ({', '.join('?' * n)}) " if after is not None else ""
            rows = self._db.rows(
                f"SELECT {keys}, {as_text} FROM {{s}}.{table} {where}ORDER BY {keys} LIMIT 1000",
                tuple(after or ()),
            )
            if not rows:
                return found
            for row in rows:
                values = [
                    codec.loads(t) if t is not None and kind == "json" else t
                    for t, (_, kind) in zip(row[n:], spec.columns, strict=True)
                ]
                found += any(self._cipher.needs_reseal(v) for v in values)
            after = tuple(rows[-1][:n])

    # -- lifecycle ---------------------------------------------------------------------------------

    def schema_version(self) -> int:
        row = self._db.row(schema.GET_VERSION)
        assert row is not None
        return int(row[0])

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        with self._db.transaction():
            txn = self._txn_class(self._db, self._cipher)
            try:
                yield txn
            finally:
                txn._end()

    # -- row mapping -------------------------------------------------------------------------------

    def _link(self, row: tuple[Any, ...]) -> Link:
        where = f"{row[0]}/{row[1]}"
        return Link(
            connector=row[0],
            entity_guid=row[1],
            external_id=row[2],
            entity_name=row[3],
            snapshot=self._json_out(row[4], "links.snapshot", where),
            remote_version=row[5],
            synced_at=row[6],
            deleted=bool(row[7]),
            base=self._json_out(row[8], "links.base", where),
        )

    def _dead_letter(self, row: tuple[Any, ...]) -> DeadLetter:
        return DeadLetter(
            id=row[0],
            connector=row[1],
            direction=Direction(row[2]),
            ref=row[3],
            reason=self._reason_out(row[4], row[0]),
            payload=self._payload_out(row[5], row[0]),
            attempts=row[6],
            status=row[7],
            created_at=row[8],
            updated_at=row[9],
        )

    def _conflict(self, row: tuple[Any, ...]) -> Conflict:
        def json(stored: Any, column: str) -> Any:
            return self._json_out(stored, f"conflicts.{column}", row[0])

        return Conflict(
            id=row[0],
            connector=row[1],
            entity_guid=row[2],
            external_id=row[3],
            policy=row[4],
            status=row[5],
            resolution=row[6],
            base=json(row[7], "base"),
            local=json(row[8], "local"),
            remote=json(row[9], "remote"),
            remote_version=row[10],
            created_at=row[11],
            updated_at=row[12],
        )

    def _run(self, row: tuple[Any, ...]) -> RunRecord:
        return RunRecord(
            id=row[0],
            connector=row[1],
            direction=row[2],
            trigger=row[3],
            started_at=row[4],
            finished_at=row[5],
            outcome=row[6],
            counts=self._db.json_out(row[7]),
            error=self._open(row[8], "runs.error", row[0]),
        )

    def _parked(self, row: tuple[Any, ...]) -> Parked:
        connector, guid, parent, reason, attempts, created, updated = row
        return Parked(
            connector,
            guid,
            parent,
            self._open(reason, "parked.reason", f"{connector}/{guid}"),
            attempts,
            created,
            updated,
        )

    def _pages(
        self, select: str, params: tuple[Any, ...], key: int, start: Any, page_size: int
    ) -> Iterator[Any]:
        """``select`` takes ``params``, the last key seen and the page size: see :func:`keyset_pages`."""
        return keyset_pages(
            lambda last: self._db.rows(select, (*params, last, page_size)), key, start, page_size
        )

    @staticmethod
    def _filters(connector: str | None, status: str | None) -> tuple[str, list[Any]]:
        where: list[str] = []
        params: list[Any] = []
        if connector is not None:
            where.append("connector = ?")
            params.append(connector)
        if status is not None:
            where.append("status = ?")
            params.append(status)
        return (f"WHERE {' AND '.join(where)}" if where else ""), params

    # -- checkpoints -------------------------------------------------------------------------------

    def get_checkpoint(self, connector: str, direction: Direction) -> str | None:
        row = self._db.row(
            "SELECT value FROM {s}.checkpoints WHERE connector = ? AND direction = ?",
            (connector, Direction(direction).value),
        )
        return row[0] if row else None

    def checkpoints(self) -> dict[tuple[str, str], str | None]:
        rows = self._db.rows(
            "SELECT connector, direction, value FROM {s}.checkpoints ORDER BY connector, direction"
        )
        return {(connector, direction): value for connector, direction, value in rows}

    # -- links -------------------------------------------------------------------------------------

    def get_link(self, connector: str, entity_guid: str) -> Link | None:
        row = self._db.row(
            f"SELECT {_LINK_COLUMNS} FROM {{s}}.links WHERE connector = ? AND entity_guid = ?",
            (connector, entity_guid),
        )
        return self._link(row) if row else None

    def get_links(self, connector: str, entity_guids: Iterable[str]) -> dict[str, Link]:
        rows = self._db.rows_in(
            f"SELECT {_LINK_COLUMNS} FROM {{s}}.links WHERE connector = ? AND entity_guid",
            (connector,),
            entity_guids,
        )
        return {row[1]: self._link(row) for row in rows}

    def find_link(self, connector: str, external_id: str) -> Link | None:
        row = self._db.row(
            f"SELECT {_LINK_COLUMNS} FROM {{s}}.links WHERE connector = ? AND external_id = ?",
            (connector, str(external_id)),
        )
        return self._link(row) if row else None

    def linked_entities(self, connector: str, external_ids: Iterable[str]) -> dict[str, str]:
        rows = self._db.rows_in(
            "SELECT external_id, entity_guid FROM {s}.links WHERE connector = ? AND external_id",
            (connector,),
            (str(e) for e in external_ids),
        )
        return {row[0]: row[1] for row in rows}

    def iter_links(self, connector: str, page_size: int = 1000) -> Iterator[Link]:
        """Every link of ``connector`` in guid order, a page per query, so memory stays flat."""
        select = (
            f"SELECT {_LINK_COLUMNS} FROM {{s}}.links WHERE connector = ? AND entity_guid > ? "
            "ORDER BY entity_guid LIMIT ?"
        )
        for row in self._pages(select, (connector,), 1, "", page_size):
            yield self._link(row)

    # -- dead letters ------------------------------------------------------------------------------

    def dead_letters(
        self, connector: str | None = None, status: str | None = "open", limit: int = 100
    ) -> list[DeadLetter]:
        clause, params = self._filters(connector, status)
        rows = self._db.rows(
            f"SELECT {_DEAD_LETTER_COLUMNS} FROM {{s}}.dead_letters {clause} ORDER BY id LIMIT ?",
            (*params, limit),
        )
        return [self._dead_letter(row) for row in rows]

    def iter_dead_letters(
        self,
        connector: str,
        status: str | None = "open",
        page_size: int = 1000,
        *,
        direction: str | None = None,
        reason: str | None = None,
    ) -> Iterator[DeadLetter]:
        """Every matching dead letter in id order: :meth:`dead_letter_page` walked by keyset."""
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        after: int | None = None
        while True:
            page = self.dead_letter_page(
                connector, direction=direction, reason=reason, status=status, after_id=after, limit=page_size
            )
            yield from page
            if len(page) < page_size:
                return
            after = page[-1].id

    def open_dead_letter_refs(self, connector: str, direction: Direction, refs: Iterable[str]) -> set[str]:
        rows = self._db.rows_in(
            "SELECT ref FROM {s}.dead_letters WHERE connector = ? AND direction = ? AND status = 'open' "
            "AND ref",
            (connector, Direction(direction).value),
            refs,
        )
        return {row[0] for row in rows}

    def open_dead_letter_reasons(
        self, connector: str, direction: Direction, refs: Iterable[str]
    ) -> dict[str, str]:
        rows = self._db.rows_in(
            "SELECT ref, reason FROM {s}.dead_letters WHERE connector = ? AND direction = ? "
            "AND status = 'open' AND ref",
            (connector, Direction(direction).value),
            refs,
        )
        return {row[0]: self._reason_out(row[1], row[0]) for row in rows}

    def get_dead_letter(self, dead_letter_id: int) -> DeadLetter | None:
        row = self._db.row(
            f"SELECT {_DEAD_LETTER_COLUMNS} FROM {{s}}.dead_letters WHERE id = ?", (dead_letter_id,)
        )
        return self._dead_letter(row) if row else None

    def _letter_filters(
        self, connector: str | None, direction: str | None, reason: str | None, status: str | None
    ) -> tuple[list[str], list[Any]]:
        where, params = [], []
        for column, value in (
            ("status", status),
            ("connector", connector),
            ("direction", None if direction is None else Direction(direction).value),
            ("reason", None if reason is None else self._reason_in(reason)),
        ):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        return where, params

    def dead_letter_groups(
        self, connector: str | None = None, status: str | None = "open", limit: int = 200
    ) -> list[DeadLetterGroup]:
        where, params = self._letter_filters(connector, None, None, status)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = self._db.rows(
            f"SELECT connector, direction, reason, count(*) AS n FROM {{s}}.dead_letters {clause} "
            "GROUP BY connector, direction, reason ORDER BY n DESC, connector, direction LIMIT ?",
            (*params, limit),
        )
        return [DeadLetterGroup(c, d, self._reason_out(r), int(n)) for c, d, r, n in rows]

    def dead_letter_page(
        self,
        connector: str | None = None,
        *,
        direction: str | None = None,
        reason: str | None = None,
        status: str | None = "open",
        after_id: int | None = None,
        limit: int = 50,
    ) -> list[DeadLetter]:
        where, params = self._letter_filters(connector, direction, reason, status)
        if after_id is not None:
            where.append("id > ?")
            params.append(after_id)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = self._db.rows(
            f"SELECT {_DEAD_LETTER_COLUMNS} FROM {{s}}.dead_letters {clause} ORDER BY id LIMIT ?",
            (*params, limit),
        )
        return [self._dead_letter(row) for row in rows]

    def count_dead_letters(
        self,
        connector: str | None = None,
        *,
        direction: str | None = None,
        reason: str | None = None,
        status: str | None = "open",
    ) -> int:
        where, params = self._letter_filters(connector, direction, reason, status)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        row = self._db.row(f"SELECT count(*) FROM {{s}}.dead_letters {clause}", tuple(params))
        return int(row[0]) if row else 0

    # -- intents, parked children, conflicts --------------------------------------------------------

    def intents(self, connector: str) -> set[str]:
        return {
            row[0] for row in self._db.rows("SELECT ref FROM {s}.intents WHERE connector = ?", (connector,))
        }

    def parked(self, connector: str, limit: int = 1000) -> list[Parked]:
        rows = self._db.rows(
            f"SELECT {_PARKED_COLUMNS} FROM {{s}}.parked WHERE connector = ? ORDER BY created_at LIMIT ?",
            (connector, limit),
        )
        return [self._parked(row) for row in rows]

    def iter_parked(self, connector: str, page_size: int = 1000) -> Iterator[Parked]:
        select = (
            f"SELECT {_PARKED_COLUMNS} FROM {{s}}.parked WHERE connector = ? AND entity_guid > ? "
            "ORDER BY entity_guid LIMIT ?"
        )
        for row in self._pages(select, (connector,), 1, "", page_size):
            yield self._parked(row)

    def parked_attempts(self, connector: str, entity_guids: Iterable[str]) -> dict[str, int]:
        rows = self._db.rows_in(
            "SELECT entity_guid, attempts FROM {s}.parked WHERE connector = ? AND entity_guid",
            (connector,),
            entity_guids,
        )
        return {row[0]: row[1] for row in rows}

    def parked_children(self, connector: str, parent_guids: Iterable[str]) -> list[str]:
        rows = self._db.rows_in(
            "SELECT entity_guid FROM {s}.parked WHERE connector = ? AND parent_guid",
            (connector,),
            parent_guids,
        )
        return sorted(row[0] for row in rows)

    def open_counts(self, connector: str) -> OpenCounts:
        row = self._db.row(
            "SELECT (SELECT count(*) FROM {s}.dead_letters WHERE status = 'open' AND connector = ?), "
            "(SELECT count(*) FROM {s}.conflicts WHERE status = 'open' AND connector = ?), "
            "(SELECT count(*) FROM {s}.parked WHERE connector = ?)",
            (connector, connector, connector),
        )
        assert row is not None
        return OpenCounts(*(int(n) for n in row))

    def conflicts(
        self, connector: str | None = None, status: str | None = "open", limit: int = 100
    ) -> list[Conflict]:
        clause, params = self._filters(connector, status)
        rows = self._db.rows(
            f"SELECT {_CONFLICT_COLUMNS} FROM {{s}}.conflicts {clause} ORDER BY id LIMIT ?", (*params, limit)
        )
        return [self._conflict(row) for row in rows]

    def conflict_page(
        self,
        connector: str | None = None,
        *,
        status: str | None = "open",
        after_id: int | None = None,
        limit: int = 50,
    ) -> list[Conflict]:
        clause, params = self._filters(connector, status)
        if after_id is not None:
            clause = f"{clause} AND id > ?" if clause else "WHERE id > ?"
            params.append(after_id)
        rows = self._db.rows(
            f"SELECT {_CONFLICT_COLUMNS} FROM {{s}}.conflicts {clause} ORDER BY id LIMIT ?", (*params, limit)
        )
        return [self._conflict(row) for row in rows]

    def get_conflict(self, conflict_id: int) -> Conflict | None:
        row = self._db.row(f"SELECT {_CONFLICT_COLUMNS} FROM {{s}}.conflicts WHERE id = ?", (conflict_id,))
        return self._conflict(row) if row else None

    def open_conflicts(self, connector: str, entity_guids: Iterable[str]) -> set[str]:
        rows = self._db.rows_in(
            "SELECT entity_guid FROM {s}.conflicts WHERE connector = ? AND status = 'open' AND entity_guid",
            (connector,),
            entity_guids,
        )
        return {row[0] for row in rows}

    # -- scheduled ticks ---------------------------------------------------------------------------

    def claim_tick(self, connector: str, direction: str, tick: str, holder: str) -> bool:
        cur = self._db.execute(
            "INSERT INTO {s}.ticks (connector, direction, tick, holder, claimed_at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT DO NOTHING",
            (connector, direction, tick, holder, now_timestamp()),
        )
        return bool(cur.rowcount == 1)

    def last_tick(self, connector: str, direction: str) -> str | None:
        row = self._db.row(
            "SELECT max(tick) FROM {s}.ticks WHERE connector = ? AND direction = ?", (connector, direction)
        )
        return row[0] if row else None

    # -- bulk loads --------------------------------------------------------------------------------

    def create_bulk_plan(
        self, plan_id: str, connector: str, shards: int, start_cursor: str | None, mark: str | None
    ) -> BulkPlanRecord:
        now = now_timestamp()
        db = self._db
        try:
            with db.transaction():
                db.execute(
                    f"INSERT INTO {{s}}.bulk_plans ({_PLAN_COLUMNS}) VALUES (?, ?, ?, ?, ?, 'open', ?, NULL)",
                    (plan_id, connector, shards, start_cursor, mark, now),
                )
                db.executemany(
                    f"INSERT INTO {{s}}.bulk_shards ({_SHARD_COLUMNS}) VALUES (?, ?, 'pending', NULL, ?)",
                    [(plan_id, shard, now) for shard in range(shards)],
                )
        except db.unique_violation:
            pass  # another planner opened one first: its plan is the one
        plan = self.open_bulk_plan(connector)
        assert plan is not None
        return plan

    def open_bulk_plan(self, connector: str) -> BulkPlanRecord | None:
        row = self._db.row(
            f"SELECT {_PLAN_COLUMNS} FROM {{s}}.bulk_plans WHERE connector = ? AND status = 'open'",
            (connector,),
        )
        return BulkPlanRecord(*row) if row else None

    def get_bulk_plan(self, plan_id: str) -> BulkPlanRecord | None:
        row = self._db.row(f"SELECT {_PLAN_COLUMNS} FROM {{s}}.bulk_plans WHERE id = ?", (plan_id,))
        return BulkPlanRecord(*row) if row else None

    def bulk_shards(self, plan_id: str) -> list[BulkShardRecord]:
        rows = self._db.rows(
            f"SELECT {_SHARD_COLUMNS} FROM {{s}}.bulk_shards WHERE plan_id = ? ORDER BY shard", (plan_id,)
        )
        return [BulkShardRecord(*row) for row in rows]

    # -- retention and erasure (connector_core/retention.py) -----------------------------------------

    def purgeable(self, kind: str, before: str) -> dict[str | None, int]:
        params = _purge_params(kind, before)
        table, where = _PURGE[kind]
        rows = self._db.rows(
            f"SELECT connector, count(*) FROM {{s}}.{table} WHERE {where} GROUP BY connector", params
        )
        return {row[0]: int(row[1]) for row in rows}

    def purge_batch(self, kind: str, before: str, limit: int) -> int:
        params = _purge_params(kind, before)
        table, where = _PURGE[kind]
        db = self._db
        with db.transaction():
            if kind == "deleted_snapshots":
                cur = db.execute(
                    "UPDATE {s}.links SET snapshot = ?, base = ?, synced_at = NULL "
                    "WHERE (connector, entity_guid) IN "
                    f"(SELECT connector, entity_guid FROM {{s}}.links WHERE {where} LIMIT ?)",
                    (self._blank_json("links.snapshot"), self._blank_json("links.base"), *params, limit),
                )
            else:
                cur = db.execute(
                    f"DELETE FROM {{s}}.{table} WHERE id IN "
                    f"(SELECT id FROM {{s}}.{table} WHERE {where} ORDER BY id LIMIT ?)",
                    (*params, limit),
                )
        return int(cur.rowcount)

    def forget_entity(self, entity_guid: str, *, dry_run: bool = False) -> dict[str, Any]:
        """Blank the entity's link snapshots and bases (identifiers kept), delete its dead letters (push:
        by guid and its sub-records' ``<guid>#<part>``; pull: by the external ids it is linked to) and its
        conflicts, in one transaction; ``dry_run`` counts and changes nothing."""
        db = self._db
        prefix = part_ref(entity_guid, "")
        links = db.rows(
            "SELECT connector, external_id, deleted FROM {s}.links WHERE entity_guid = ? ORDER BY connector",
            (entity_guid,),
        )
        letters_where = (
            "(direction = 'push' AND (ref = ? OR substr(ref, 1, ?) = ?)) OR (direction = 'pull' AND "
            "EXISTS (SELECT 1 FROM {s}.links l WHERE l.entity_guid = ? AND l.connector = d.connector "
            "AND l.external_id = d.ref))"
        )
        letter_params = (entity_guid, len(prefix), prefix, entity_guid)
        count = (
            "SELECT (SELECT count(*) FROM {s}.links WHERE entity_guid = ? AND synced_at IS NOT NULL), "
            f"(SELECT count(*) FROM {{s}}.dead_letters d WHERE {letters_where}), "
            "(SELECT count(*) FROM {s}.conflicts WHERE entity_guid = ?)"
        )
        count_params = (entity_guid, *letter_params, entity_guid)
        if dry_run:  # read only: a dry run may run on a store opened read-only
            counted = db.row(count, count_params)
        else:
            with db.transaction():
                counted = db.row(count, count_params)
                db.execute(
                    "UPDATE {s}.links SET snapshot = ?, base = ?, synced_at = NULL WHERE entity_guid = ?",
                    (self._blank_json("links.snapshot"), self._blank_json("links.base"), entity_guid),
                )
                db.execute(f"DELETE FROM {{s}}.dead_letters AS d WHERE {letters_where}", letter_params)
                db.execute("DELETE FROM {s}.conflicts WHERE entity_guid = ?", (entity_guid,))
        assert counted is not None
        return {
            "snapshots": int(counted[0]),
            "dead_letters": int(counted[1]),
            "conflicts": int(counted[2]),
            "linked": [(row[0], row[1], bool(row[2])) for row in links],
        }

    def _blank_json(self, column: str) -> Any:
        """An empty snapshot or merge base as the store writes one (sealed, when sealing is on: an empty
        value in the clear would tell which links were forgotten)."""
        return self._db.json_in(self._cipher.seal({}, column))

    # -- audit trail -------------------------------------------------------------------------------

    def record_action(
        self,
        actor: str,
        action: str,
        *,
        connector: str | None = None,
        target: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> int:
        row = self._db.row(
            f"{_INSERT_ACTION} RETURNING id",
            _action_row(self._db, self._cipher, actor, action, connector, target, detail),
        )
        assert row is not None
        return int(row[0])

    def actions(
        self,
        *,
        connector: str | None = None,
        action: str | None = None,
        before_id: int | None = None,
        limit: int = 100,
    ) -> list[ActionRecord]:
        where: list[str] = []
        params: list[Any] = []
        for column, value in (("connector", connector), ("action", action)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if before_id is not None:
            where.append("id < ?")
            params.append(before_id)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = self._db.rows(
            f"SELECT {_ACTION_COLUMNS} FROM {{s}}.actions {clause} ORDER BY id DESC LIMIT ?", (*params, limit)
        )
        return [
            ActionRecord(
                row[0],
                row[1],
                row[2],
                row[3],
                row[4],
                row[5],
                self._json_out(row[6], "actions.detail", row[0]),
            )
            for row in rows
        ]

    # -- runs --------------------------------------------------------------------------------------

    def start_run(self, connector: str, direction: str, trigger: str) -> int:
        row = self._db.row(
            "INSERT INTO {s}.runs (connector, direction, trigger, started_at, outcome, counts) "
            "VALUES (?, ?, ?, ?, 'running', '{}') RETURNING id",
            (connector, str(direction), trigger, now_timestamp()),
        )
        assert row is not None
        return int(row[0])

    def abandon_runs(self, connector: str, reason: str) -> int:
        cur = self._db.execute(
            "UPDATE {s}.runs SET finished_at = ?, outcome = 'abandoned', error = ? "
            "WHERE connector = ? AND outcome = 'running'",
            (now_timestamp(), self._cipher.seal(reason, "runs.error"), connector),
        )
        return int(cur.rowcount)

    def finish_run(self, run_id: int, outcome: str, counts: dict[str, int], error: str | None = None) -> None:
        cur = self._db.execute(
            "UPDATE {s}.runs SET finished_at = ?, outcome = ?, counts = ?, error = ? WHERE id = ?",
            (
                now_timestamp(),
                outcome,
                self._db.json_in(counts),
                self._cipher.seal(error, "runs.error"),
                run_id,
            ),
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
            ((fragment, outcomes),) = self._db.in_(FAILED_OUTCOMES)
            where.append(f"outcome {fragment}")
            params.extend(outcomes)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = self._db.rows(
            f"SELECT {_RUN_COLUMNS} FROM {{s}}.runs {clause} ORDER BY id DESC LIMIT ?", (*params, limit)
        )
        return [self._run(row) for row in rows]

    def run_page(
        self,
        connector: str | None = None,
        *,
        direction: str | None = None,
        outcome: str | None = None,
        before_id: int | None = None,
        limit: int = 50,
    ) -> list[RunRecord]:
        where: list[str] = []
        params: list[Any] = []
        for column, value in (("connector", connector), ("direction", direction), ("outcome", outcome)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if before_id is not None:
            where.append("id < ?")
            params.append(before_id)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = self._db.rows(
            f"SELECT {_RUN_COLUMNS} FROM {{s}}.runs {clause} ORDER BY id DESC LIMIT ?", (*params, limit)
        )
        return [self._run(row) for row in rows]

    def get_run(self, run_id: int) -> RunRecord | None:
        row = self._db.row(f"SELECT {_RUN_COLUMNS} FROM {{s}}.runs WHERE id = ?", (run_id,))
        return self._run(row) if row else None

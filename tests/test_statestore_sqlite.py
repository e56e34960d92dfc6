"""The SQLite state store: the shared contract, plus its migrations and transaction guards."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from contracts.statestore_contract import StateStoreContract

from connector_core.state import Direction, Link, SchemaVersionError, SqliteStateStore
from connector_core.state.sqlite import MIGRATIONS


@pytest.fixture
def make_state_store(tmp_path: Path) -> Callable[[], SqliteStateStore]:
    path = tmp_path / "state.db"
    return lambda: SqliteStateStore(path)


class TestSqliteStateStore(StateStoreContract):
    pass


def _version(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("SELECT max(version) FROM schema_version").fetchone()[0])
    finally:
        conn.close()


def test_a_fresh_file_gets_every_migration(tmp_path: Path) -> None:
    store = SqliteStateStore(tmp_path / "state.db")
    assert store.schema_version() == len(MIGRATIONS)
    store.close()
    assert _version(tmp_path / "state.db") == len(MIGRATIONS)


def test_a_file_from_a_newer_dcsync_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    SqliteStateStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE schema_version SET version = 99")
    conn.commit()
    conn.close()
    with pytest.raises(SchemaVersionError, match="schema version 99.*upgrade dcsync"):
        SqliteStateStore(path)


def test_an_upgrade_applies_only_the_new_migrations_in_order(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    old = SqliteStateStore(path)
    with old.transaction() as txn:
        txn.set_checkpoint("openspp", Direction.PUSH, "5")
    old.close()

    applied: list[int] = []

    n = len(MIGRATIONS)

    def add_note(conn: sqlite3.Connection) -> None:
        applied.append(n + 1)
        conn.execute("ALTER TABLE checkpoints ADD COLUMN note TEXT")

    def fill_note(conn: sqlite3.Connection) -> None:
        applied.append(n + 2)
        conn.execute("UPDATE checkpoints SET note = 'migrated'")

    new = SqliteStateStore(path, migrations=(*MIGRATIONS, add_note, fill_note))
    assert applied == [n + 1, n + 2] and new.schema_version() == n + 2
    assert new.get_checkpoint("openspp", Direction.PUSH) == "5"
    assert new._conn.execute("SELECT note FROM checkpoints").fetchone()[0] == "migrated"
    new.close()
    SqliteStateStore(path, migrations=(*MIGRATIONS, add_note, fill_note)).close()
    assert applied == [n + 1, n + 2]  # reopening is a no-op


def test_a_failing_migration_leaves_the_previous_version_intact(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    SqliteStateStore(path).close()

    def half_done(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE half_done (id INTEGER PRIMARY KEY)")
        raise sqlite3.OperationalError("disk full")

    with pytest.raises(sqlite3.OperationalError, match="disk full"):
        SqliteStateStore(path, migrations=(*MIGRATIONS, half_done))
    assert _version(path) == len(MIGRATIONS)
    conn = sqlite3.connect(path)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    conn.close()
    assert "half_done" not in tables


def test_a_transaction_object_is_dead_after_its_block(tmp_path: Path) -> None:
    store = SqliteStateStore(tmp_path / "state.db")
    with store.transaction() as txn:
        txn.set_checkpoint("openspp", Direction.PUSH, "1")
    with pytest.raises(RuntimeError, match="ended"):
        txn.set_checkpoint("openspp", Direction.PUSH, "2")
    assert store.get_checkpoint("openspp", Direction.PUSH) == "1"
    store.close()


def test_transactions_do_not_nest(tmp_path: Path) -> None:
    store = SqliteStateStore(tmp_path / "state.db")
    with store.transaction(), pytest.raises(RuntimeError, match="nest"), store.transaction():
        pass
    store.close()


def test_a_dead_letter_is_closed_only_as_replayed_or_discarded(tmp_path: Path) -> None:
    store = SqliteStateStore(tmp_path / "state.db")
    with pytest.raises(ValueError, match="replayed"), store.transaction() as txn:
        txn.resolve_dead_letter("openspp", Direction.PUSH, "p-1", "done")
    store.close()


def test_another_instance_sees_only_committed_batches(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    one, two = SqliteStateStore(path), SqliteStateStore(path)
    with one.transaction() as txn:
        txn.upsert_link(Link("openspp", "p-1", "101"))
        assert two.get_link("openspp", "p-1") is None  # readers see only committed batches
    assert two.get_link("openspp", "p-1") is not None
    one.close()
    two.close()


def test_finishing_an_unknown_run_is_an_error(tmp_path: Path) -> None:
    store = SqliteStateStore(tmp_path / "state.db")
    with pytest.raises(KeyError):
        store.finish_run(12345, "ok", {})
    store.close()

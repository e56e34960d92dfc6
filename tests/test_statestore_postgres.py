"""The PostgreSQL state store: the shared contract unchanged, plus its migrations, guards and lease."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import psycopg
import pytest
from contracts.statestore_contract import StateStoreContract
from sync_support import contend_for_lease

from connector_core._postgres import advisory_key
from connector_core.state import ConnectorBusy, Direction, Link
from connector_core.state.postgres import MIGRATIONS, PostgresStateStore, SchemaVersionError
from connector_core.state.sqlite import MIGRATIONS as SQLITE_MIGRATIONS

pytestmark = pytest.mark.postgres


@pytest.fixture
def make_state_store(postgres_url: str, pg_schema: str) -> Callable[[], PostgresStateStore]:
    return lambda: PostgresStateStore(postgres_url, schema=pg_schema)


class TestPostgresStateStore(StateStoreContract):
    pass


def test_the_migrations_are_numbered_as_sqlites(make_state_store: Callable[[], PostgresStateStore]) -> None:
    assert len(MIGRATIONS) == len(SQLITE_MIGRATIONS)
    store = make_state_store()
    assert store.schema_version() == len(SQLITE_MIGRATIONS)
    store.close()


def test_a_newer_schema_is_refused(postgres_url: str, pg_schema: str) -> None:
    PostgresStateStore(postgres_url, schema=pg_schema).close()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"UPDATE {pg_schema}.schema_version SET version = 99")
    with pytest.raises(SchemaVersionError, match="schema version 99.*upgrade dcsync"):
        PostgresStateStore(postgres_url, schema=pg_schema)


def test_an_upgrade_applies_only_the_new_migrations(postgres_url: str, pg_schema: str) -> None:
    old = PostgresStateStore(postgres_url, schema=pg_schema)
    with old.transaction() as txn:
        txn.set_checkpoint("openspp", Direction.PUSH, "5")
    old.close()
    extra = (*MIGRATIONS, ("ALTER TABLE {s}.checkpoints ADD COLUMN note TEXT",))
    new = PostgresStateStore(postgres_url, schema=pg_schema, migrations=extra)
    assert new.schema_version() == len(MIGRATIONS) + 1
    assert new.get_checkpoint("openspp", Direction.PUSH) == "5"
    new.close()
    PostgresStateStore(postgres_url, schema=pg_schema, migrations=extra).close()  # reopening is a no-op


def test_a_failing_migration_leaves_the_previous_version_intact(postgres_url: str, pg_schema: str) -> None:
    PostgresStateStore(postgres_url, schema=pg_schema).close()
    broken = (*MIGRATIONS, ("CREATE TABLE {s}.half_done (id INT)", "SELECT no_such_function()"))
    with pytest.raises(psycopg.Error):
        PostgresStateStore(postgres_url, schema=pg_schema, migrations=broken)
    store = PostgresStateStore(postgres_url, schema=pg_schema)
    assert store.schema_version() == len(MIGRATIONS)
    store.close()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        assert conn.execute("SELECT to_regclass(%s)", (f"{pg_schema}.half_done",)).fetchone() == (None,)


def test_transactions_do_not_nest_and_end_with_their_block(postgres_url: str, pg_schema: str) -> None:
    store = PostgresStateStore(postgres_url, schema=pg_schema)
    with store.transaction() as txn, pytest.raises(RuntimeError, match="nest"), store.transaction():
        pass
    with pytest.raises(RuntimeError, match="ended"):
        txn.set_checkpoint("openspp", Direction.PUSH, "2")
    store.close()


def test_another_instance_sees_only_committed_batches(postgres_url: str, pg_schema: str) -> None:
    one = PostgresStateStore(postgres_url, schema=pg_schema)
    two = PostgresStateStore(postgres_url, schema=pg_schema)
    with one.transaction() as txn:
        txn.upsert_link(Link("openspp", "p-1", "101"))
        assert two.get_link("openspp", "p-1") is None
    assert two.get_link("openspp", "p-1") is not None
    one.close()
    two.close()


def test_two_stores_starting_at_once_migrate_once(postgres_url: str, pg_schema: str) -> None:
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            PostgresStateStore(postgres_url, schema=pg_schema).close()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


# -- the lease -------------------------------------------------------------------------------------------


def test_a_held_lease_names_its_holder(postgres_url: str, pg_schema: str) -> None:
    first = PostgresStateStore(postgres_url, schema=pg_schema)
    second = PostgresStateStore(postgres_url, schema=pg_schema)
    with first.lease("reg"):
        with (
            pytest.raises(
                ConnectorBusy, match=r"'reg' is already running \(lease held by pid \d+ on .+ since "
            ),
            second.lease("reg"),
        ):
            pass
        with second.lease("other"):  # another connector is free
            pass
    with second.lease("reg"):  # released
        pass
    first.close()
    second.close()


def test_a_waiting_lease_is_granted_when_the_holder_finishes(postgres_url: str, pg_schema: str) -> None:
    first = PostgresStateStore(postgres_url, schema=pg_schema)
    second = PostgresStateStore(postgres_url, schema=pg_schema)
    order: list[str] = []
    held = threading.Event()

    def hold() -> None:
        with first.lease("reg"):
            held.set()
            time.sleep(0.5)
            order.append("first done")

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(5)
    with second.lease("reg", wait=True):
        order.append("second runs")
    holder.join()
    assert order == ["first done", "second runs"]
    first.close()
    second.close()


def test_a_lease_dies_with_its_session(postgres_url: str, pg_schema: str) -> None:
    store = PostgresStateStore(postgres_url, schema=pg_schema)
    with store.lease("reg"):
        with psycopg.connect(postgres_url, autocommit=True) as admin:  # the holder's machine vanishes
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name LIKE 'dcsync lease reg%%'"
            )
        other = PostgresStateStore(postgres_url, schema=pg_schema)
        with other.lease("reg"):
            pass
        other.close()
    store.close()


def test_a_loser_arriving_between_the_winners_lock_and_its_row_names_the_winner(
    postgres_url: str, pg_schema: str
) -> None:
    """The lock is contested under the holder row's row lock: a loser waits for the winner's row."""
    store = PostgresStateStore(postgres_url, schema=pg_schema)
    with store.lease("reg"):  # leaves a released row behind, as every earlier run does
        pass
    key = advisory_key("dcsync-lease", pg_schema, "reg")
    with psycopg.connect(postgres_url, autocommit=True) as winner:
        with winner.transaction():  # a winner mid-contest: row locked, advisory lock taken, row not written
            winner.execute(f"SELECT 1 FROM {pg_schema}.dcsync_leases WHERE connector = 'reg' FOR UPDATE")
            assert winner.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone() == (True,)
            loser, errors = contend_for_lease(store, "reg")
            time.sleep(0.3)
            winner.execute(
                f"UPDATE {pg_schema}.dcsync_leases SET host = 'winner-host', pid = 4242, "
                "started_at = '2026-01-01T00:00:00.000Z' WHERE connector = 'reg'"
            )
        loser.join(10)
        assert [str(e) for e in errors] == [
            "connector 'reg' is already running "
            "(lease held by pid 4242 on winner-host since 2026-01-01T00:00:00.000Z)"
        ]
    with store.lease("reg"):  # the winner's session ended: free again
        pass
    store.close()

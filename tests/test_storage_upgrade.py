"""Stores written by the previous release open in place with this code, data and all.

``tests/fixtures/storage/`` holds a state store and an event log of each backend exactly as the release
before the shared SQL layer wrote them (dumps made by ``make_fixtures.py`` run against that release): its own
migrations, its own row encodings. Each test loads one, opens it with the current classes and checks that
every kind of row reads back, that the version is current, and that the store goes on working.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from contracts.scenarios import as_docs, event, fold_state

from connector_core.eventlog.postgres import PostgresEventLog
from connector_core.eventlog.sqlite import SqliteEventLog
from connector_core.eventlog.store import SCHEMA_VERSION
from connector_core.state import Direction, DuplicateExternalIdError, Link
from connector_core.state.postgres import PostgresStateStore
from connector_core.state.schema import MIGRATIONS
from connector_core.state.sqlite import SqliteStateStore
from connector_core.state.store import SqlStateStore

FIXTURES = Path(__file__).parent / "fixtures" / "storage"


def _sqlite(tmp_path: Path, fixture: str) -> Path:
    path = tmp_path / f"{fixture}.db"
    conn = sqlite3.connect(path)
    conn.executescript((FIXTURES / f"{fixture}.sqlite.sql").read_text())
    conn.close()
    return path


def _postgres(url: str, schema: str, fixture: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute((FIXTURES / f"{fixture}.postgres.sql").read_text().replace("__SCHEMA__", schema))


def _check_state(store: SqlStateStore) -> None:
    assert store.schema_version() == len(MIGRATIONS)
    assert store.get_checkpoint("openspp", Direction.PUSH) == "42"
    household = store.get_link("openspp", "hh-1")
    assert (
        household is not None and household.external_id == "101" and household.snapshot == {"name": "Doe HH"}
    )
    assert household.base == {} and household.remote_version == "v1" and not household.deleted
    person = store.find_link("openspp", "102")
    assert person is not None and person.deleted and person.base == {"b": 1}
    (letter,) = store.dead_letters("openspp")
    assert (letter.ref, letter.payload, letter.attempts) == ("ind-2", {"gender": "x"}, 1)
    assert store.intents("openspp") == {"ind-3"}
    (parked,) = store.parked("openspp")
    assert (parked.entity_guid, parked.parent_guid) == ("ind-4", "hh-9")
    (conflict,) = store.conflicts("openspp")
    assert (conflict.base, conflict.local, conflict.remote) == ({"a": 1}, {"a": 2}, {"a": 3})
    (run,) = store.runs("openspp")
    assert run.outcome == "degraded" and run.counts == {"pushed": 2, "dead_lettered": 1}
    assert store.last_tick("openspp", "push") == "2026-01-01T00:00:00Z"
    assert store.open_counts("openspp") == type(store.open_counts("openspp"))(1, 1, 1)

    # ... and it goes on: the open dead letter is found again, ids continue, constraints still hold
    with store.transaction() as txn:
        txn.add_dead_letter("openspp", Direction.PUSH, "ind-2", "HTTP 422 again", {"gender": "y"})
    (letter,) = store.dead_letters("openspp")
    assert letter.attempts == 2 and letter.payload == {"gender": "y"}
    assert store.start_run("openspp", "push", "manual") > run.id
    with pytest.raises(DuplicateExternalIdError), store.transaction() as txn:
        txn.upsert_link(Link("openspp", "hh-2", "101", "household", {}))
    assert not store.claim_tick("openspp", "push", "2026-01-01T00:00:00Z", "host-2")


def test_a_sqlite_state_store_of_the_previous_release_upgrades_in_place(tmp_path: Path) -> None:
    store = SqliteStateStore(_sqlite(tmp_path, "state"))
    _check_state(store)
    store.close()


@pytest.mark.postgres
def test_a_postgres_state_store_of_the_previous_release_upgrades_in_place(
    postgres_url: str, pg_schema: str
) -> None:
    _postgres(postgres_url, pg_schema, "state")
    store = PostgresStateStore(postgres_url, schema=pg_schema)
    _check_state(store)
    store.close()


def _check_log(log: SqliteEventLog | PostgresEventLog, version: Callable[[], int]) -> None:
    assert version() == SCHEMA_VERSION
    stored = list(log.iter_events())
    assert len(stored) == log.count() > 0 and log.head() == str(len(stored))
    entities, issues = fold_state(stored)
    assert as_docs(log.iter_entities()) == as_docs(entities)
    assert issues and [i.reason for i in log.iter_issues()] == [i.reason for i in issues]

    again = log.append(stored[:3])
    assert again.new == 0 and again.duplicates == 3
    more = log.append(
        [event("update-individual", stored[0].entity_guid, {"phone": "+1"}, guid="after-upgrade")]
    )
    assert more.new == 1 and log.count() == len(stored) + 1  # (PostgreSQL's sequence may leave gaps)
    assert [e.guid for e in log.iter_events(log.read(None, len(stored)).cursor)] == ["after-upgrade"]
    updated = log.get_entity(stored[0].entity_guid)
    assert updated is not None and updated.data["phone"] == "+1"


# ``eventlog``: the release before the shared SQL layer (version 1); ``eventlog-v3``: the release before
# guids were found by their 64-bit key (version 3), whose tables migration 4 rebuilds (SQLite) or alters
# (PostgreSQL).
LOG_FIXTURES = ("eventlog", "eventlog-v3")


@pytest.mark.parametrize("fixture", LOG_FIXTURES)
def test_a_sqlite_event_log_of_an_earlier_release_upgrades_in_place(tmp_path: Path, fixture: str) -> None:
    path = _sqlite(tmp_path, fixture)
    log = SqliteEventLog(path)
    _check_log(log, log.schema_version)
    log.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    # AUTOINCREMENT's counter moved with the rebuilt table, and no table of an old layout is left behind
    (seq,) = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
    assert seq == conn.execute("SELECT max(seq) FROM events").fetchone()[0]
    tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables == {"events", "entities", "event_issues", "cascades", "meta", "sqlite_sequence"} | {
        "event_keys",
        "event_keys_recent",
        "entity_keys",
        "entity_keys_recent",
    }
    conn.close()


@pytest.mark.postgres
@pytest.mark.parametrize("fixture", LOG_FIXTURES)
def test_a_postgres_event_log_of_an_earlier_release_upgrades_in_place(
    postgres_url: str, pg_schema: str, fixture: str
) -> None:
    _postgres(postgres_url, pg_schema, fixture)
    log = PostgresEventLog(postgres_url, schema=pg_schema)
    _check_log(log, log.schema_version)
    log.close()


def test_a_sqlite_event_log_that_handed_out_seqs_beyond_its_rows_never_hands_them_out_again(
    tmp_path: Path,
) -> None:
    """AUTOINCREMENT's promise (a seq is never reused, even after its row is gone) survives the rebuild: a
    cursor a reader holds can never come to stand for a different event."""
    path = _sqlite(tmp_path, "eventlog-v3")
    conn = sqlite3.connect(path)
    conn.execute("UPDATE sqlite_sequence SET seq = 500 WHERE name = 'events'")
    conn.commit()
    conn.close()
    log = SqliteEventLog(path)
    log.append([event("update-individual", "hh-doe", {"phone": "+2"}, guid="after-gap")])
    assert [e.guid for e in log.iter_events("500")] == ["after-gap"]
    assert log.head() == "501"
    log.close()

"""Stores opened read-only: nothing is created (file, schema, lock), what exists is read, writes fail."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg
import pytest

from connector_core.config import PostgresEventLogConfig, PostgresStateConfig, SqliteStateConfig
from connector_core.eventlog import SqliteEventLog, open_event_log
from connector_core.events import FormSubmission
from connector_core.state import Direction, SqliteStateStore, open_state_store
from connector_core.state.sqlite import MIGRATIONS, SchemaVersionError


def _event(guid: str, entity: str) -> FormSubmission:
    return FormSubmission(
        guid=guid,
        entity_guid=entity,
        type="create-individual",
        data={"name": entity},
        timestamp="2025-03-01T10:00:00.000Z",
        user_id="admin",
    )


def _files(directory: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in directory.iterdir()}


def test_a_missing_sqlite_store_reads_as_empty_and_is_not_created(tmp_path: Path) -> None:
    store = SqliteStateStore(tmp_path / "state.db", read_only=True)
    assert store.runs() == [] and store.get_checkpoint("reg", Direction.PUSH) is None
    with store.lease("reg"):  # a dry run's lease: holds nothing, creates no lock file
        pass
    store.close()
    log = SqliteEventLog(tmp_path / "sub" / "events.db", read_only=True)
    assert log.count() == 0 and log.head() is None
    log.close()
    assert list(tmp_path.iterdir()) == []


def test_an_existing_sqlite_store_is_read_and_never_written(tmp_path: Path) -> None:
    writer = SqliteStateStore(tmp_path / "state.db")
    with writer.transaction() as tx:
        tx.set_checkpoint("reg", Direction.PUSH, "7")
    writer.close()
    log = SqliteEventLog(tmp_path / "events.db")
    log.append([_event("e1", "a")])
    log.close()
    before = _files(tmp_path)

    store = SqliteStateStore(tmp_path / "state.db", read_only=True)
    assert store.get_checkpoint("reg", Direction.PUSH) == "7"
    with pytest.raises(sqlite3.OperationalError, match="readonly"), store.transaction() as tx:
        tx.set_checkpoint("reg", Direction.PUSH, "8")
    store.close()
    reader = SqliteEventLog(tmp_path / "events.db", read_only=True)
    assert reader.count() == 1
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        reader.append([_event("e2", "b")])
    reader.close()
    assert _files(tmp_path) == before, "no -wal/-shm left behind, nothing rewritten"


def test_a_read_only_store_sees_what_a_writer_commits_meanwhile(tmp_path: Path) -> None:
    writer = SqliteStateStore(tmp_path / "state.db")
    reader = SqliteStateStore(tmp_path / "state.db", read_only=True)
    with writer.transaction() as tx:
        tx.set_checkpoint("reg", Direction.PUSH, "3")
    assert reader.get_checkpoint("reg", Direction.PUSH) == "3"
    reader.close()
    writer.close()


def test_a_read_only_open_refuses_a_newer_store_and_upgrades_an_older_one(tmp_path: Path) -> None:
    SqliteStateStore(tmp_path / "old.db", migrations=MIGRATIONS[:1]).close()
    upgraded = SqliteStateStore(tmp_path / "old.db", read_only=True)
    assert upgraded.schema_version() == len(MIGRATIONS) and upgraded.parked("reg") == []
    upgraded.close()

    SqliteStateStore(tmp_path / "new.db").close()
    with sqlite3.connect(tmp_path / "new.db") as conn:
        conn.execute("UPDATE schema_version SET version = 99")
    conn.close()
    with pytest.raises(SchemaVersionError, match="schema version 99"):
        SqliteStateStore(tmp_path / "new.db", read_only=True)


def test_open_state_store_read_only_from_a_project_section(tmp_path: Path) -> None:
    store = open_state_store(SqliteStateConfig(path="nested/state.db"), tmp_path, read_only=True)
    assert store.open_counts("reg").dead_letters == 0
    store.close()
    assert list(tmp_path.iterdir()) == []


def _schema_exists(url: str, schema: str) -> bool:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone()
    return row is not None


@pytest.mark.postgres
def test_postgres_read_only_creates_no_schema_and_reads_an_existing_one(
    postgres_url: str, pg_schema: str, tmp_path: Path
) -> None:
    state_config = PostgresStateConfig.model_validate(
        {"backend": "postgres", "url": postgres_url, "schema": pg_schema}
    )
    log_config = PostgresEventLogConfig.model_validate(
        {"backend": "postgres", "url": postgres_url, "schema": pg_schema}
    )
    store = open_state_store(state_config, tmp_path, read_only=True)
    log = open_event_log(log_config, tmp_path, read_only=True)
    assert store.runs() == [] and log.count() == 0
    with store.lease("reg"):
        pass
    store.close()
    log.close()
    assert not _schema_exists(postgres_url, pg_schema), "a read-only command created the schema"

    writer = open_state_store(state_config, tmp_path)
    with writer.transaction() as tx:
        tx.set_checkpoint("reg", Direction.PUSH, "4")
    writer.close()
    writing_log = open_event_log(log_config, tmp_path)
    writing_log.append([_event("e1", "a")])
    writing_log.close()

    store = open_state_store(state_config, tmp_path, read_only=True)
    log = open_event_log(log_config, tmp_path, read_only=True)
    assert store.get_checkpoint("reg", Direction.PUSH) == "4" and log.count() == 1
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction), store.transaction() as tx:
        tx.set_checkpoint("reg", Direction.PUSH, "5")
    with store.lease("reg"):  # holds nothing: a real run may take the lease meanwhile
        other = open_state_store(state_config, tmp_path)
        with other.lease("reg"):
            pass
        other.close()
    store.close()
    log.close()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.postgres
def test_read_only_commands_create_no_postgresql_schema(
    postgres_url: str, pg_schema: str, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from connector_core.cli import app

    config = tmp_path / "dcsync.yaml"
    config.write_text(
        f"eventlog: {{backend: postgres, url: '{postgres_url}', schema: {pg_schema}}}\n"
        f"state: {{backend: postgres, url: '{postgres_url}', schema: {pg_schema}}}\n"
        "connectors:\n"
        "  reg: {type: mock, settings: {url: '${DCSYNC_TEST_UNSET_SECRET}'}}\n"
    )
    for command in (["status"], ["runs"], ["dlq", "list"], ["log", "stats"], ["run", "reg", "--dry-run"]):
        result = CliRunner().invoke(
            app, [*command, "-c", str(config)], env={"DCSYNC_TEST_UNSET_SECRET": None}
        )
        assert result.exit_code == 0, (command, result.output)
    assert not _schema_exists(postgres_url, pg_schema)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dcsync.yaml"]

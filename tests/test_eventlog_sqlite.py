"""The SQLite event log: the shared contract, plus what only an embedded file can show."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from contracts.eventlog_contract import EventLogContract
from contracts.scenarios import as_docs, event, fold_state, group_log, mobile_log

from connector_core.eventlog import SchemaVersionError, SqliteEventLog, store
from connector_core.eventlog.schema import KEY_LEVELS, guid_key
from connector_core.eventlog.store import SCHEMA_VERSION


@pytest.fixture(params=["chunk1000", "chunk2-merge3", "chunk2-merge3-one-key"])
def make_event_log(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[[], SqliteEventLog]:
    """Also run with 2-event chunks, so every scenario crosses the chunks one append is split into, with the
    recent guid keys merged every 3 events, so lookups cross both key levels; and with every guid given
    the same key, so every lookup finds rows of other guids and must tell them apart by the guid."""
    path = tmp_path / "events.db"
    if request.param == "chunk1000":
        return lambda: SqliteEventLog(path)
    monkeypatch.setattr(store, "MERGE_EVERY", 3)
    if request.param.endswith("one-key"):
        monkeypatch.setattr(store, "guid_key", lambda _guid: 42)
    return lambda: SqliteEventLog(path, chunk_size=2)


class TestSqliteEventLog(EventLogContract):
    pass


@pytest.fixture
def log(tmp_path: Path) -> SqliteEventLog:
    return SqliteEventLog(tmp_path / "events.db")


def test_the_file_is_in_wal_mode_with_a_busy_timeout(log: SqliteEventLog) -> None:
    conn = sqlite3.connect(log.path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    assert log._conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 1000
    assert log._conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL


def test_events_come_back_byte_for_byte(log: SqliteEventLog) -> None:
    sent = mobile_log()
    log.append(sent)
    assert [e.to_json_line() for e in log.iter_events()] == [e.to_json_line() for e in sent]


def test_a_cursor_is_the_ingestion_sequence(log: SqliteEventLog) -> None:
    log.append(mobile_log()[:3])
    assert log.head() == "3"
    assert log.read(None, 2).cursor == "2"
    with pytest.raises(ValueError, match="cursor"):
        log.read("٣", 1)  # a unicode digit is not a cursor this log handed out


def test_a_cursor_from_another_log_is_refused(tmp_path: Path) -> None:
    big = SqliteEventLog(tmp_path / "big.db")
    big.append(mobile_log())
    cursor = big.head()
    small = SqliteEventLog(tmp_path / "small.db")
    small.append(mobile_log()[:2])
    with pytest.raises(ValueError, match="beyond the head"):
        small.read(cursor, 10)
    big.close()
    small.close()


def test_a_newer_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    SqliteEventLog(path).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(SchemaVersionError, match="schema version 99.*upgrade dcsync"):
        SqliteEventLog(path)


def test_reopening_keeps_the_schema(tmp_path: Path) -> None:
    first = SqliteEventLog(tmp_path / "events.db")
    first.append(group_log())
    first.close()
    again = SqliteEventLog(tmp_path / "events.db")
    assert again.schema_version() == SCHEMA_VERSION
    assert again.count() == len(group_log())
    again.close()


def test_each_entity_remembers_the_event_that_last_changed_it(log: SqliteEventLog) -> None:
    batch = mobile_log()
    log.append(batch)
    rows = dict(log._conn.execute("SELECT guid, last_seq FROM entities"))
    assert rows["hh-doe-p0"] == len(batch) - 1  # the late edit
    assert rows["hh-roe"] == len(batch)
    assert rows["apg-1"] == 1


def test_issues_can_be_listed(log: SqliteEventLog) -> None:
    log.append(group_log())
    reasons = [i.reason for i in log.iter_issues()]
    assert len(reasons) == 2 and "INVALID_GROUP" in reasons[0]
    assert list(log.iter_issues(log.head())) == []


def test_a_reader_in_another_instance_sees_committed_appends(tmp_path: Path) -> None:
    writer = SqliteEventLog(tmp_path / "events.db")
    reader = SqliteEventLog(tmp_path / "events.db")
    writer.append(mobile_log())
    assert reader.count() == len(mobile_log())
    writer.close()
    reader.close()


def test_an_instance_can_be_used_from_several_threads(log: SqliteEventLog) -> None:
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(20):
                log.append([event("create-individual", f"t{n}-{i}", {"name": "x"})])
                log.read(None, 5)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert log.count() == 80


def test_cascade_members_not_in_the_chunk_are_looked_up(tmp_path: Path) -> None:
    log = SqliteEventLog(tmp_path / "events.db", chunk_size=1)
    batch = group_log()
    log.append(batch)
    assert as_docs(log.iter_entities()) == as_docs(fold_state(batch)[0])
    log.close()


def test_close_is_idempotent(log: SqliteEventLog) -> None:
    log.close()
    log.close()


def test_the_wal_is_copied_into_the_file_in_the_background_and_the_thread_ends_with_close(
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.db"
    log = SqliteEventLog(path)
    log._checkpoint_rows = 1  # after every append, rather than every ~40 MB
    empty = path.stat().st_size
    log.append(mobile_log())
    deadline = time.monotonic() + 10
    while path.stat().st_size == empty and time.monotonic() < deadline:  # only a checkpoint writes the file
        time.sleep(0.01)
    assert path.stat().st_size > empty
    reader = SqliteEventLog(path)  # and what is in the file is the whole log
    assert reader.count() == len(mobile_log())
    reader.close()
    assert log._checkpointer is not None
    thread = log._checkpointer._thread
    log.close()
    assert not thread.is_alive()
    log.close()  # a second close is still a no-op


def test_each_event_and_entity_keeps_one_guid_key_across_merges_and_deletes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The key levels stay an exact index of the rows: a merge moves keys without losing or doubling one,
    and a deleted entity takes its key along, from whichever level holds it."""
    monkeypatch.setattr(store, "MERGE_EVERY", 4)
    log = SqliteEventLog(tmp_path / "events.db", chunk_size=3)
    sent = [*mobile_log(), *group_log()]
    for one in sent:  # an append each: merges fall between them, and deletes reach keys of both levels
        log.append([one])
    conn = log._conn

    def keys(levels: tuple[str, ...]) -> list[tuple[int, int]]:
        return sorted(row for level in levels for row in conn.execute(f"SELECT guid_key, ref FROM {level}"))

    events = conn.execute("SELECT guid, seq FROM events").fetchall()
    assert keys(KEY_LEVELS["events"]) == sorted((guid_key(guid), seq) for guid, seq in events)
    entities = conn.execute("SELECT guid, id FROM entities").fetchall()
    assert keys(KEY_LEVELS["entities"]) == sorted((guid_key(guid), id_) for guid, id_ in entities)
    assert conn.execute("SELECT count(*) FROM event_keys").fetchone()[0] > 0, "no merge happened"
    assert conn.execute("SELECT count(*) FROM entity_keys").fetchone()[0] > 0
    assert as_docs(log.iter_entities()) == as_docs(fold_state(sent)[0])
    again = log.append(sent)
    assert again.new == 0 and again.duplicates == len(sent)
    log.close()

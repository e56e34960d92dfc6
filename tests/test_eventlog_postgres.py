"""The PostgreSQL event log: the shared contract unchanged, plus what only a shared server can show."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import psycopg
import pytest
from contracts.eventlog_contract import EventLogContract
from contracts.scenarios import as_docs, event, fold_state, group_log, mobile_log

from connector_core._postgres import PostgresUnavailable
from connector_core.eventlog.postgres import PostgresEventLog, SchemaVersionError

pytestmark = pytest.mark.postgres


@pytest.fixture(params=[1000, 2], ids=["chunk1000", "chunk2"])
def make_event_log(
    request: pytest.FixtureRequest, postgres_url: str, pg_schema: str
) -> Callable[[], PostgresEventLog]:
    """Also run with 2-event chunks, so every scenario crosses the chunks one append is split into (keys
    stay in one level here: ``merges_keys``; merges are the SQLite suite's)."""
    return lambda: PostgresEventLog(postgres_url, schema=pg_schema, chunk_size=request.param)


class TestPostgresEventLog(EventLogContract):
    pass


@pytest.fixture
def log(postgres_url: str, pg_schema: str) -> Iterator[PostgresEventLog]:
    opened = PostgresEventLog(postgres_url, schema=pg_schema)
    yield opened
    opened.close()


def test_events_come_back_equal_and_in_ingestion_order(log: PostgresEventLog) -> None:
    sent = mobile_log()
    log.append(sent)
    assert list(log.iter_events(page_size=4)) == sent


def test_a_newer_schema_is_refused(postgres_url: str, pg_schema: str) -> None:
    PostgresEventLog(postgres_url, schema=pg_schema).close()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"UPDATE {pg_schema}.dcsync_meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(SchemaVersionError, match="schema version 99.*upgrade dcsync"):
        PostgresEventLog(postgres_url, schema=pg_schema)


def test_a_cursor_from_another_log_is_refused(log: PostgresEventLog) -> None:
    log.append(mobile_log()[:2])
    with pytest.raises(ValueError, match="beyond the head"):
        log.read("1000", 10)


def test_a_schema_name_that_is_not_an_identifier_is_refused(postgres_url: str) -> None:
    with pytest.raises(ValueError, match="not a plain identifier"):
        PostgresEventLog(postgres_url, schema="dcsync; drop table x")


def test_an_unreachable_server_is_one_clear_line_without_the_password() -> None:
    url = "postgresql://dcsync:s3cret-pw@127.0.0.1:1/nowhere"
    with pytest.raises(PostgresUnavailable) as caught:
        PostgresEventLog(url)
    message = str(caught.value)
    assert "cannot connect to PostgreSQL at postgresql://dcsync:***@127.0.0.1:1/nowhere" in message
    assert "s3cret-pw" not in message


def test_two_instances_creating_one_schema_at_once_both_succeed(postgres_url: str, pg_schema: str) -> None:
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            PostgresEventLog(postgres_url, schema=pg_schema).close()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_concurrent_writers_never_let_a_reader_skip_an_event(postgres_url: str, pg_schema: str) -> None:
    """Appends commit in seq order, so a reader following the cursor while four writers append sees all."""
    writers = [PostgresEventLog(postgres_url, schema=pg_schema) for _ in range(4)]
    reader = PostgresEventLog(postgres_url, schema=pg_schema)
    done = threading.Event()
    errors: list[BaseException] = []

    def write(n: int) -> None:
        try:
            for i in range(25):
                writers[n].append([event("create-individual", f"w{n}-{i}", {"name": "x"})])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    seen: list[str] = []

    def read() -> None:
        cursor = None
        while True:
            finished = done.is_set()
            page = reader.read(cursor, 7)
            seen.extend(e.guid for e in page.events)
            cursor = page.cursor
            if finished and page.at_end:
                return

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    follower = threading.Thread(target=read)
    follower.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    follower.join(timeout=30)
    assert errors == []
    assert len(seen) == len(set(seen)) == 100
    for log in (*writers, reader):
        log.close()


def test_the_entity_table_matches_a_fresh_fold_with_one_event_per_chunk(
    postgres_url: str, pg_schema: str
) -> None:
    log = PostgresEventLog(postgres_url, schema=pg_schema, chunk_size=1)
    batch = group_log()
    log.append(batch)
    assert as_docs(log.iter_entities()) == as_docs(fold_state(batch)[0])
    assert len(list(log.iter_issues())) == 2
    assert list(log.iter_issues(log.head())) == []
    log.close()


def test_close_is_idempotent(log: PostgresEventLog) -> None:
    log.close()
    log.close()

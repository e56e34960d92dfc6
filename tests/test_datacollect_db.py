"""The ``datacollect`` mirror reading DataCollect's own ``events`` table (a copy of its layout, §2.2).

What the sync API cannot do, the table can: page through any number of tied events, read microseconds,
and never see another tenant's rows; writes still go through the API.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from contracts.scenarios import T0

from connector_core.config import DataCollectEventLogConfig
from connector_core.eventlog import open_event_log
from connector_core.eventlog.datacollect_db import DataCollectDbFeed
from connector_core.eventlog.datacollect_http import DataCollectClient, DataCollectEventLog
from connector_core.testing.fake_datacollect import FakeDataCollect, create_app
from connector_core.testing.server import ServedApp, serve

pytestmark = pytest.mark.postgres

_DATACOLLECT_EVENTS = """CREATE TABLE {s}.events (
    guid TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL DEFAULT 'default',
    entity_guid TEXT,
    type TEXT,
    data JSONB,
    timestamp TIMESTAMPTZ,
    user_id TEXT,
    sync_level INT
)"""


@pytest.fixture
def datacollect_db(postgres_url: str, pg_schema: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {pg_schema}")
        conn.execute(_DATACOLLECT_EVENTS.format(s=pg_schema))
        yield conn


def insert(conn: psycopg.Connection[Any], schema: str, tenant: str, guid: str, at: Any, n: int) -> None:
    conn.execute(
        f"INSERT INTO {schema}.events VALUES (%s, %s, %s, 'create-individual', %s, %s, 'admin', 1)",
        (guid, tenant, f"person-{n}", json.dumps({"name": f"Person {n}", "n": n}), at),
    )


@pytest.fixture
def fake_server() -> Iterator[ServedApp]:
    with serve(create_app(FakeDataCollect())) as served:
        yield served


def _mirror(
    tmp_path: Path, server: ServedApp, postgres_url: str, schema: str, **kw: Any
) -> DataCollectEventLog:
    lookback = timedelta(seconds=kw.pop("lookback_seconds", 3600))
    feed = DataCollectDbFeed(postgres_url, "demo", lookback=lookback, schema=schema, page_size=7)
    client = DataCollectClient(server.url, "demo", token="unused-for-reads")
    return DataCollectEventLog(
        client,
        tmp_path / "mirror.db",
        lookback_seconds=lookback.total_seconds(),
        refresh_interval=None,
        feed=feed,
    )


def test_ties_microseconds_and_late_events_all_arrive_once_and_only_for_the_tenant(
    tmp_path: Path,
    fake_server: ServedApp,
    postgres_url: str,
    pg_schema: str,
    datacollect_db: psycopg.Connection[Any],
) -> None:
    for i in range(25):  # far more ties than any API page
        insert(datacollect_db, pg_schema, "demo", f"tie-{i:02d}", T0, i)
    for i in range(5):
        insert(datacollect_db, pg_schema, "demo", f"us-{i}", T0 + timedelta(microseconds=100 + i), 100 + i)
        insert(datacollect_db, pg_schema, "other", f"other-{i}", T0, 200 + i)

    mirror = _mirror(tmp_path, fake_server, postgres_url, pg_schema)
    report = mirror.refresh()
    stored = [e.guid for e in mirror.local.iter_events()]
    assert sorted(stored) == sorted([f"tie-{i:02d}" for i in range(25)] + [f"us-{i}" for i in range(5)])
    assert report.new == 30 and report.batches == 5  # pages of 7

    insert(datacollect_db, pg_schema, "demo", "late", T0 - timedelta(minutes=10), 300)  # an offline phone
    assert mirror.refresh().new == 1
    assert mirror.count() == 31 and mirror.refresh().new == 0
    mirror.close()


def test_milliseconds_the_api_left_pending_are_read_whole(
    tmp_path: Path,
    fake_server: ServedApp,
    postgres_url: str,
    pg_schema: str,
    datacollect_db: psycopg.Connection[Any],
) -> None:
    old = T0 - timedelta(days=30)
    for i in range(12):
        insert(datacollect_db, pg_schema, "demo", f"crowded-{i}", old + timedelta(microseconds=i), i)
    insert(datacollect_db, pg_schema, "demo", "recent", T0, 50)
    mirror = _mirror(tmp_path, fake_server, postgres_url, pg_schema, lookback_seconds=60)
    mirror._meta.put("high_water", "2025-01-01T10:00:00.000Z")
    mirror._meta.set_pending({"2024-12-02T10:00:00.000Z"})
    mirror.refresh()
    assert sorted(e.guid for e in mirror.local.iter_events()) == sorted(
        [f"crowded-{i}" for i in range(12)] + ["recent"]
    )
    assert mirror.stats()["datacollect"]["pending_milliseconds"] == 0
    mirror.close()


_DATACOLLECT_AUDIT = """CREATE TABLE {s}.audit_log (
    id SERIAL PRIMARY KEY, tenant_id TEXT, action TEXT, guid TEXT, entity_guid TEXT, event_guid TEXT,
    changes JSONB, signature TEXT, user_id TEXT, timestamp TIMESTAMPTZ
)"""


def test_events_datacollect_kept_local_are_stored_unfolded_with_its_reason(
    tmp_path: Path,
    fake_server: ServedApp,
    postgres_url: str,
    pg_schema: str,
    datacollect_db: psycopg.Connection[Any],
) -> None:
    datacollect_db.execute(_DATACOLLECT_AUDIT.format(s=pg_schema))
    insert(datacollect_db, pg_schema, "demo", "created", T0, 1)
    datacollect_db.execute(
        f"INSERT INTO {pg_schema}.events VALUES ('stale', 'demo', 'person-1', 'update-individual', %s, %s, "
        "'admin', 1)",
        (json.dumps({"name": "Stale"}), T0 + timedelta(seconds=1)),
    )
    changes = {"resolution": "kept-local", "localLastUpdated": "2026-01-01T00:00:00.000Z", "localVersion": 2}
    datacollect_db.execute(
        f"INSERT INTO {pg_schema}.audit_log (tenant_id, action, guid, entity_guid, event_guid, changes, "
        "signature, user_id, timestamp) VALUES "
        "('demo', 'conflict-resolution', 'a1', 'person-1', 'stale', %s, '', 'admin', now())",
        (json.dumps(changes),),
    )
    mirror = _mirror(tmp_path, fake_server, postgres_url, pg_schema)
    mirror.refresh()
    assert sorted(e.guid for e in mirror.local.iter_events()) == ["created", "stale"]
    entity = mirror.get_entity("person-1")
    assert entity is not None and entity.data["name"] == "Person 1"  # not folded
    issues = list(mirror.iter_issues())
    assert [i.event_guid for i in issues] == ["stale"] and "kept-local" in issues[0].reason
    mirror.close()


def test_the_reader_cannot_write(
    postgres_url: str, pg_schema: str, datacollect_db: psycopg.Connection[Any]
) -> None:
    feed = DataCollectDbFeed(postgres_url, "demo", lookback=timedelta(0), schema=pg_schema)
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        feed._conn.execute(f"DELETE FROM {pg_schema}.events")
    feed.close()


def test_the_project_file_selects_the_database_reader(
    tmp_path: Path,
    fake_server: ServedApp,
    postgres_url: str,
    pg_schema: str,
    datacollect_db: psycopg.Connection[Any],
) -> None:
    insert(datacollect_db, pg_schema, "demo", "one", T0, 1)
    config = DataCollectEventLogConfig.model_validate(
        {
            "backend": "datacollect",
            "url": fake_server.url,
            "config_id": "demo",
            "token": "t0ken-for-writes",
            "read": "database",
            "database_url": postgres_url,
            "database_schema": pg_schema,
            "mirror": "m.db",
        }
    )
    log = open_event_log(config, tmp_path)
    assert isinstance(log, DataCollectEventLog) and isinstance(log.feed, DataCollectDbFeed)
    assert [e.guid for e in log.iter_events()] == ["one"]  # reading past the head refreshed the mirror
    assert (tmp_path / "m.db").exists()
    log.close()

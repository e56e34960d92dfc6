"""Issue 15: every stored DataCollect event reaches dcsync exactly once, through crowded milliseconds,
kept-local events (whose only audit trace is a ``conflict-resolution`` row), transient faults, 429 with
``Retry-After`` and expiring tokens; each run keeps what it read and the next goes on from there."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from connector_core.eventlog import copy_events, open_event_log_spec
from connector_core.eventlog.datacollect_http import (
    DataCollectAuthError,
    DataCollectClient,
    DataCollectError,
    DataCollectEventLog,
)
from connector_core.eventlog.sqlite import SqliteEventLog
from connector_core.events import FormSubmission, format_timestamp
from connector_core.retry import RetryPolicy
from connector_core.testing.fake_datacollect import FakeDataCollect, create_app
from connector_core.testing.fault_transport import FaultTransport
from connector_core.testing.server import ServedApp, serve

EMAIL, PASSWORD = "sync@example.org", "correct horse"
FAST = RetryPolicy(max_attempts=12, initial_delay=0.001, max_delay=0.01, max_elapsed=60)
BASE = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)


def _stamp(at: datetime) -> str:
    """ISO with microseconds: how a phone's sync stores an event (the server keeps the µs)."""
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond:06d}Z"


def crowded_tenant(people: int = 860, crowd_every: int = 100, crowd: int = 13) -> list[dict[str, Any]]:
    """A mobile log: each person created then updated on the phone (so DataCollect holds local changes),
    every third one also gets a stale server-synced update that DataCollect stores but keeps local; the
    events of ``crowd`` persons out of every ``crowd_every`` share one millisecond each (creates in one,
    updates in the next, stale updates in the next: all crowded)."""
    events: list[dict[str, Any]] = []
    for i in range(people):
        block, k = divmod(i, crowd_every)
        if k < crowd:
            at = BASE + timedelta(hours=block, microseconds=k)
            step = timedelta(milliseconds=1)
        else:
            at = BASE + timedelta(hours=block, seconds=k)
            step = timedelta(milliseconds=100)
        entity = f"person-{i}"
        data = {"entityName": "individual", "name": f"Person {i}", "national_id": f"ID-{i:05d}"}
        common = {"entityGuid": entity, "userId": "admin"}
        events.append(
            {
                **common,
                "guid": f"c-{i}",
                "type": "create-individual",
                "data": data,
                "timestamp": _stamp(at),
                "syncLevel": 0,
            }
        )
        events.append(
            {
                **common,
                "guid": f"u-{i}",
                "type": "update-individual",
                "data": {**data, "phone": f"+{i}"},
                "timestamp": _stamp(at + step),
                "syncLevel": 0,
            }
        )
        if i % 3 == 0 or k < crowd:
            events.append(
                {
                    **common,
                    "guid": f"s-{i}",
                    "type": "update-individual",
                    "data": {"phone": "stale"},
                    "timestamp": _stamp(at + 2 * step),
                    "syncLevel": 1,
                }
            )
    return events


@pytest.fixture(scope="module")
def seeded() -> Iterator[tuple[FakeDataCollect, ServedApp]]:
    fake = FakeDataCollect(email=EMAIL, password=PASSWORD, tenants=("demo",))
    problems = fake.store("demo", crowded_tenant())
    assert problems == []  # kept-local is not a refusal: the event is stored
    with serve(create_app(fake)) as served:
        yield fake, served


def _stored(fake: FakeDataCollect) -> list[str]:
    with fake.lock:
        return [e.guid for e in fake.tenants["demo"].events]


def _pulled_name(guid: str) -> FormSubmission:
    """What a registry pull appends: only the changed field (person-1's name), stamped with the registry's
    (older) clock."""
    return FormSubmission.from_json(
        {
            "guid": guid,
            "entityGuid": "person-1",
            "type": "update-individual",
            "data": {"name": "Anabel"},
            "timestamp": "2025-03-01T09:00:00.000Z",
            "userId": "dcsync:reg",
            "syncLevel": 2,
        }
    )


def _mirror(
    url: str, path: Path, transport: httpx.BaseTransport | None = None, retry: RetryPolicy = FAST
) -> DataCollectEventLog:
    http = httpx.Client(base_url=url, timeout=5, transport=transport) if transport else None
    client = DataCollectClient(url, "demo", email=EMAIL, password=PASSWORD, retry=retry, client=http)
    return DataCollectEventLog(client, path, refresh_interval=None)


def test_the_tenant_really_has_crowded_milliseconds_and_kept_local_events(
    seeded: tuple[FakeDataCollect, ServedApp],
) -> None:
    fake, _ = seeded
    stored = _stored(fake)
    assert 1900 <= len(stored) <= 2100
    kept = [r for r in fake.conflict_rows("demo") if r.changes["resolution"] == "kept-local"]
    assert len(kept) >= 280
    kept_guids = {r.event_guid for r in kept}
    actions = {r.event_guid for r in fake.tenants["demo"].audit if r.action != "conflict-resolution"}
    assert not kept_guids & actions  # their only audit trace is the conflict-resolution row
    assert fake.entity("demo", "person-0").data["phone"] == "+0"  # DataCollect kept its own state


def test_an_api_copy_of_a_crowded_tenant_with_kept_local_events_holds_every_event_once(
    seeded: tuple[FakeDataCollect, ServedApp], tmp_path: Path
) -> None:
    fake, served = seeded
    with fake.lock:
        fake.requests.clear()
    with _mirror(served.url, tmp_path / "m.db") as mirror:
        pulled: set[str] = set()
        fetched: list[str] = []
        client = mirror.client
        real_pull, real_entity_events = client.pull, client.entity_events

        def pull(since: str) -> Any:
            page = real_pull(since)
            pulled.update(e.guid for e in page.events)
            return page

        def entity_events(guid: str) -> Any:
            answer = real_entity_events(guid)
            # no entity is asked for whose events the walk has all read already
            assert {e.guid for e in answer} - pulled, f"entity {guid} re-fetched: all its events were read"
            fetched.append(guid)
            return answer

        client.pull = pull  # type: ignore[method-assign]
        client.entity_events = entity_events  # type: ignore[method-assign]
        with SqliteEventLog(tmp_path / "copy.db") as target:
            report = copy_events(mirror, target)
            copied = [e.guid for e in target.iter_events()]
        assert sorted(copied) == sorted(_stored(fake))
        assert len(copied) == len(set(copied)) == report.read
        assert len(fetched) == len(set(fetched))  # each entity at most once
    entity_calls = [r for r in fake.requests if r["path"].startswith("/api/entities/")]
    assert len(entity_calls) == len(fetched) <= 10 * 14


@pytest.mark.parametrize(
    "attempts, seed", [(12, 15), (5, 6)], ids=["ample-retries", "tight-retries-runs-fail-and-resume"]
)
def test_copies_through_thirty_percent_transient_faults_finish_within_five_runs_and_are_exact(
    seeded: tuple[FakeDataCollect, ServedApp], tmp_path: Path, attempts: int, seed: int
) -> None:
    fake, served = seeded
    faults = FaultTransport(rate=0.3, seed=seed, retry_after="1")
    policy = FAST.model_copy(update={"max_attempts": attempts})
    counts: list[int] = []
    failed = 0
    finished_at = None
    for run in range(1, 6):
        try:
            with (
                _mirror(served.url, tmp_path / "m.db", faults, policy) as mirror,
                SqliteEventLog(tmp_path / "copy.db") as target,
            ):
                copy_events(mirror, target)
            finished_at = run
            break
        except DataCollectError:
            failed += 1
        finally:
            with SqliteEventLog(tmp_path / "m.db") as kept:
                counts.append(kept.count())
    assert finished_at is not None, f"no copy finished in 5 runs; the mirror held {counts}"
    assert counts == sorted(counts), counts  # every run kept what it read
    if failed:
        assert any(counts[:failed]), counts  # a failed run kept the pages it read
    assert set(faults.injected) == {"reset-before", "reset-after", "502", "503", "429"}
    with SqliteEventLog(tmp_path / "copy.db") as target:
        copied = [e.guid for e in target.iter_events()]
    assert sorted(copied) == sorted(_stored(fake))
    assert len(copied) == len(set(copied))


def test_a_failed_refresh_keeps_every_page_it_read_and_the_next_goes_on_from_there(
    tmp_path: Path,
) -> None:
    fake = FakeDataCollect(email=EMAIL, password=PASSWORD, tenants=("demo",))
    assert fake.store("demo", crowded_tenant(people=40, crowd_every=100, crowd=0)) == []
    with serve(create_app(fake)) as served:
        fake.faults.html_errors = [{"path": "/api/sync/pull", "status": 500}]
        with _mirror(served.url, tmp_path / "m.db") as mirror:
            with pytest.raises(DataCollectError):
                mirror.refresh()
            assert mirror.count() == 0  # the very first pull failed
        with _mirror(served.url, tmp_path / "m.db") as mirror:
            calls = 0
            real = mirror.client.pull

            def failing_pull(since: str) -> Any:
                nonlocal calls
                calls += 1
                if calls == 4:
                    raise DataCollectError("the network went away")
                return real(since)

            mirror.client.pull = failing_pull  # type: ignore[method-assign]
            with pytest.raises(DataCollectError):
                mirror.refresh()
            assert mirror.count() >= 27  # three pages kept (less the re-read ties), not thrown away
        with fake.lock:
            fake.requests.clear()
        with _mirror(served.url, tmp_path / "m.db") as mirror:
            mirror.refresh()
            assert sorted(e.guid for e in mirror.local.iter_events()) == sorted(_stored(fake))
        pulls = fake.requests_to("/api/sync/pull")
        # it resumed at the fourth page instead of re-reading the look-back window from the start
        assert pulls[0]["params"]["since"] > _stamp(BASE)
        assert len(pulls) < 10


def test_429_is_retried_after_the_time_retry_after_asks_for(tmp_path: Path) -> None:
    fake = FakeDataCollect(email=EMAIL, password=PASSWORD, tenants=("demo",))
    with serve(create_app(fake)) as served:
        fake.faults.throttle = [{"path": "/api/sync/pull", "retry_after": 1}]
        policy = RetryPolicy(max_attempts=3, initial_delay=0.001, max_delay=5, max_elapsed=30)
        client = DataCollectClient(served.url, "demo", email=EMAIL, password=PASSWORD, retry=policy)
        started = time.monotonic()
        assert client.pull("").events == []
        assert time.monotonic() - started >= 0.95
        client.close()
        assert len(fake.requests_to("/api/sync/pull")) == 2


def test_connection_resets_502_and_503_are_retried_by_the_configured_policy(tmp_path: Path) -> None:
    fake = FakeDataCollect(email=EMAIL, password=PASSWORD, tenants=("demo",))
    with serve(create_app(fake)) as served:
        faults = FaultTransport(rate=1.0, seed=1, kinds=("reset-before", "502", "503"))
        http = httpx.Client(base_url=served.url, timeout=5, transport=faults)
        once = RetryPolicy(max_attempts=1, initial_delay=0, max_delay=0, max_elapsed=10)
        client = DataCollectClient(served.url, "demo", token=fake.issue_token(), retry=once, client=http)
        with pytest.raises(DataCollectError, match="gave up after retries"):
            client.pull("")
        faults.rate = 0.5
        client.retry = FAST
        for _ in range(20):
            assert client.pull("").events == []
        client.close()


def test_an_expired_token_says_to_configure_email_and_password_and_a_login_renews_itself(
    tmp_path: Path,
) -> None:
    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    fake = FakeDataCollect(
        email=EMAIL, password=PASSWORD, tenants=("demo",), clock=lambda: now[0], token_ttl=60
    )
    with serve(create_app(fake)) as served:
        token_only = DataCollectClient(served.url, "demo", token=fake.issue_token(), retry=FAST)
        assert token_only.pull("").events == []
        login = DataCollectClient(served.url, "demo", email=EMAIL, password=PASSWORD, retry=FAST)
        assert login.pull("").events == []
        now[0] += timedelta(minutes=5)
        with pytest.raises(DataCollectAuthError) as refused:
            token_only.pull("")
        message = str(refused.value)
        assert "Invalid token" in message and "expired" in message and "email and password" in message
        assert login.pull("").events == []  # logged in again by itself
        token_only.close()
        login.close()


def test_an_unknown_address_option_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown option read"):
        open_event_log_spec("datacollect+http://127.0.0.1:9/?config_id=T&read=database")


def test_the_standalone_fake_is_seeded_from_a_jsonl_file(tmp_path: Path) -> None:
    seed = tmp_path / "seed.jsonl"
    seed.write_text(
        "\n".join(__import__("json").dumps(e) for e in crowded_tenant(people=3, crowd_every=100, crowd=0))
        + "\n",
        encoding="utf-8",
    )
    fake = FakeDataCollect(tenants=())
    assert fake.seed_jsonl("field", seed) == []
    assert [e.guid for e in fake.tenants["field"].events][:2] == ["c-0", "u-0"]
    (tmp_path / "bad.jsonl").write_text('{"guid": "x"}\nnot json\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.jsonl:2: not JSON"):
        fake.seed_jsonl("field", tmp_path / "bad.jsonl")
    assert format_timestamp(BASE).endswith("Z")


# -- a mirror that agrees with DataCollect ---------------------------------------------------------------


def test_the_mirror_keeps_kept_local_events_unfolded_as_issues_and_agrees_with_datacollect(
    seeded: tuple[FakeDataCollect, ServedApp], tmp_path: Path
) -> None:
    fake, served = seeded
    with _mirror(served.url, tmp_path / "m.db") as mirror:
        mirror.refresh()
        assert sorted(e.guid for e in mirror.local.iter_events()) == sorted(_stored(fake))
        kept = {r.event_guid for r in fake.conflict_rows("demo") if r.changes["resolution"] == "kept-local"}
        issues = {i.event_guid: i.reason for i in mirror.iter_issues()}
        assert set(issues) == kept
        assert all("kept-local" in reason and "not applied" in reason for reason in issues.values())
        with fake.lock:
            theirs = {g: p.modified for g, p in fake.tenants["demo"].pairs.items()}
        ours = {e.guid: e for e in mirror.iter_entities()}
        assert set(ours) == set(theirs)
        assert all(ours[g].data == theirs[g].data for g in theirs)
        assert all(ours[g].version == theirs[g].version for g in theirs)


def test_a_pulled_change_of_one_field_leaves_datacollect_equal_to_the_mirror(tmp_path: Path) -> None:
    fake = FakeDataCollect(email=EMAIL, password=PASSWORD, tenants=("demo",))
    assert fake.store("demo", crowded_tenant(people=2, crowd_every=100, crowd=0)) == []
    pair = fake.entity_pair("demo", "person-1")
    assert pair is not None and pair.initial.version != pair.modified.version  # a phone update since create
    with serve(create_app(fake)) as served, _mirror(served.url, tmp_path / "m.db") as mirror:
        mirror.refresh()
        # what a registry pull appends: only the changed field, stamped with the registry's (older) clock
        pulled = _pulled_name("pull-person-1-1")
        result = mirror.append([pulled])
        assert result.issues == [] and result.new_guids == ["pull-person-1-1"]
        theirs = fake.entity("demo", "person-1")
        ours = mirror.get_entity("person-1")
        assert theirs is not None and ours is not None
        assert theirs.data["name"] == "Anabel" and theirs.data["phone"] == "+1"  # the phone update survived
        assert ours.data == theirs.data


def test_an_event_whose_guid_another_tenant_holds_is_reported_and_not_counted(tmp_path: Path) -> None:
    fake = FakeDataCollect(email=EMAIL, password=PASSWORD, tenants=("demo", "other"))
    taken = crowded_tenant(people=1, crowd_every=100, crowd=0)[0]
    assert fake.store("other", [taken]) == []
    with serve(create_app(fake)) as served, _mirror(served.url, tmp_path / "m.db") as mirror:
        with pytest.raises(DataCollectError, match=f"did not store 1 of 1 pushed events: {taken['guid']}"):
            mirror.append([FormSubmission.from_json(taken)])
        assert mirror.count() == 0
        assert fake.entity("demo", taken["entityGuid"]) is None


def test_with_json_logs_the_final_error_line_is_json_too(tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from connector_core.cli import app

    result = CliRunner().invoke(
        app,
        [
            "--log-format",
            "json",
            "log",
            "copy",
            "datacollect+http://127.0.0.1:9/?config_id=T&read=database",
            str(tmp_path / "x.db"),
        ],
    )
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines and all(json.loads(line)["level"] == "error" for line in lines)
    assert "unknown option read" in json.loads(lines[-1])["message"]


# -- dcsync log verify -----------------------------------------------------------------------------------


def _verify_cli(url: str, mirror: Path) -> Any:
    from typer.testing import CliRunner

    from connector_core.cli import app

    spec = f"datacollect+http://{url.split('://', 1)[1]}/?config_id=demo&mirror={mirror}"
    env = {"DCSYNC_DATACOLLECT_EMAIL": EMAIL, "DCSYNC_DATACOLLECT_PASSWORD": PASSWORD}
    return CliRunner().invoke(app, ["log", "verify", spec, "--no-refresh"], env=env)


def test_log_verify_reports_no_difference_for_a_mirror_of_the_crowded_tenant(
    seeded: tuple[FakeDataCollect, ServedApp], tmp_path: Path
) -> None:
    fake, served = seeded
    with _mirror(served.url, tmp_path / "m.db") as mirror:
        mirror.refresh()
    result = _verify_cli(served.url, tmp_path / "m.db")
    assert result.exit_code == 0, result.output
    assert "agrees with DataCollect" in result.stdout
    assert f"{len(_stored(fake))} events" in result.stdout


def test_log_verify_names_missing_events_and_entities_that_differ(tmp_path: Path) -> None:
    import sqlite3

    fake = FakeDataCollect(email=EMAIL, password=PASSWORD, tenants=("demo",))
    assert fake.store("demo", crowded_tenant(people=30, crowd_every=100, crowd=0)) == []
    with serve(create_app(fake)) as served:
        with _mirror(served.url, tmp_path / "m.db") as mirror:
            mirror.refresh()
        # what today's client did: a kept-local event folded, and one event never read
        conn = sqlite3.connect(tmp_path / "m.db")
        with conn:
            doc = conn.execute("SELECT doc FROM entities WHERE guid = 'person-3'").fetchone()[0]
            conn.execute(
                "UPDATE entities SET doc = ? WHERE guid = 'person-3'", (doc.replace('"+3"', '"stale"'),)
            )
            conn.execute("DELETE FROM events WHERE guid = 'u-7'")
        conn.close()
        result = _verify_cli(served.url, tmp_path / "m.db")
    assert result.exit_code == 1, result.output
    assert "events of type update-individual: mirror" in result.stdout
    assert "missing from the mirror, e.g. u-7" in result.stdout
    assert "entity person-3: DataCollect holds other values of phone" in result.stdout


def test_after_a_push_the_entity_datacollect_holds_is_read_back_and_a_difference_is_an_issue(
    tmp_path: Path,
) -> None:
    fake = FakeDataCollect(email=EMAIL, password=PASSWORD, tenants=("demo",))
    assert fake.store("demo", crowded_tenant(people=2, crowd_every=100, crowd=0)) == []
    with serve(create_app(fake)) as served, _mirror(served.url, tmp_path / "m.db") as mirror:
        mirror.refresh()
        real = mirror.client.entity_events

        def entity_events(guid: str) -> Any:
            # a phone's sync lands between dcsync's push and its read-back (a concurrent writer)
            fake.store(
                "demo",
                [
                    {
                        "guid": "phone-late",
                        "entityGuid": "person-1",
                        "type": "update-individual",
                        "data": {"phone": "+999"},
                        "timestamp": _stamp(BASE),
                        "userId": "admin",
                        "syncLevel": 0,
                    }
                ],
            )
            return real(guid)

        mirror.client.entity_events = entity_events  # type: ignore[method-assign]
        pulled = _pulled_name("pull-1")
        result = mirror.append([pulled])
        assert result.new_guids == ["pull-1"]
        assert [i.event_guid for i in result.issues] == ["pull-1"]
        assert "fields phone differ" in result.issues[0].reason
        assert [i.event_guid for i in mirror.iter_issues()] == ["s-0", "pull-1"]  # s-0: kept-local


def test_a_copy_whose_refresh_left_crowded_milliseconds_pending_fails_and_the_next_completes_it(
    tmp_path: Path,
) -> None:
    fake = FakeDataCollect(email=EMAIL, password=PASSWORD, tenants=("demo",))
    assert fake.store("demo", crowded_tenant(people=13, crowd_every=100, crowd=13)) == []
    with serve(create_app(fake)) as served:
        with _mirror(served.url, tmp_path / "m.db") as mirror:
            real, calls = mirror.client.audit_logs, []

            def audit_logs(since: str) -> Any:
                calls.append(since)
                if len(calls) == 2:  # the recovery's read of the audit feed
                    raise DataCollectError("audit feed down")
                return real(since)

            mirror.client.audit_logs = audit_logs  # type: ignore[method-assign]
            with (
                SqliteEventLog(tmp_path / "copy.db") as target,
                pytest.raises(DataCollectError, match="crowded milliseconds .* run the copy again"),
            ):
                copy_events(mirror, target)
        with _mirror(served.url, tmp_path / "m.db") as mirror, SqliteEventLog(tmp_path / "copy.db") as target:
            copy_events(mirror, target)
            assert sorted(e.guid for e in target.iter_events()) == sorted(_stored(fake))


def test_dcsync_mock_server_datacollect_serves_a_tenant_seeded_from_jsonl(tmp_path: Path) -> None:
    import json
    import socket
    import subprocess
    import sys

    from connector_core.testing.server import free_port

    seed = tmp_path / "seed.jsonl"
    events = crowded_tenant(people=20, crowd_every=100, crowd=13)
    seed.write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")
    port = free_port()
    command = [sys.executable, "-m", "connector_core.cli", "mock-server", "datacollect", "--port", str(port)]
    child = subprocess.Popen(
        [*command, "--seed", str(seed), "--tenant", "field"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        for _ in range(200):  # bounded: 20 s at most
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert child.poll() is None, child.stdout.read() if child.stdout else ""
                time.sleep(0.1)
        url = f"http://127.0.0.1:{port}"
        client = DataCollectClient(
            url, "field", email="admin@example.com", password="admin-password", retry=FAST
        )
        with DataCollectEventLog(client, tmp_path / "m.db", refresh_interval=None) as mirror:
            mirror.refresh()
            assert sorted(e.guid for e in mirror.local.iter_events()) == sorted(e["guid"] for e in events)
    finally:
        child.terminate()
        child.wait(timeout=10)


def test_the_event_log_retry_policy_is_read_from_the_project_file(tmp_path: Path) -> None:
    from connector_core.config import DataCollectEventLogConfig, load_config
    from connector_core.eventlog import open_event_log

    (tmp_path / "dcsync.yaml").write_text(
        "eventlog:\n"
        "  backend: datacollect\n"
        "  url: http://127.0.0.1:9\n"
        "  config_id: demo\n"
        "  token: t0ken\n"
        "  retry:\n"
        "    max_attempts: 9\n"
        "    initial_delay: 0.25\n"
        "connectors: {}\n"
    )
    loaded = load_config(tmp_path / "dcsync.yaml")
    assert isinstance(loaded.project.eventlog, DataCollectEventLogConfig)
    with open_event_log(loaded.project.eventlog, tmp_path) as log:
        assert isinstance(log, DataCollectEventLog)
        assert (log.client.retry.max_attempts, log.client.retry.initial_delay) == (9, 0.25)
    with pytest.raises(Exception, match="max_attemps"):
        DataCollectEventLogConfig.model_validate(
            {
                "backend": "datacollect",
                "url": "u",
                "config_id": "d",
                "token": "t",
                "retry": {"max_attemps": 1},
            }
        )


def test_a_phone_update_datacollect_applies_on_top_of_initial_is_folded_there_in_the_mirror_too(
    tmp_path: Path,
) -> None:
    from connector_core.events import utc_now

    fake = FakeDataCollect(email=EMAIL, password=PASSWORD, tenants=("demo",))
    create = crowded_tenant(people=1, crowd_every=100, crowd=0)[0]  # person-0, phone-local create
    assert fake.store("demo", [create]) == []
    with serve(create_app(fake)) as served, _mirror(served.url, tmp_path / "m.db") as mirror:
        mirror.refresh()
        # dcsync writes a registry field to the person: DataCollect now has local changes
        registry = FormSubmission.from_json(
            {
                "guid": "pull-0",
                "entityGuid": "person-0",
                "type": "update-individual",
                "data": {"registry_id": "R-7"},
                "timestamp": "2025-03-01T09:00:00.000Z",
                "userId": "dcsync:reg",
                "syncLevel": 2,
            }
        )
        assert mirror.append([registry]).issues == []
        # the phone then syncs its whole form, which knows nothing of registry_id: DataCollect applies it on
        # top of initial (the state before dcsync's update), and registry_id is gone there
        phone = {
            **create,
            "guid": "phone-1",
            "type": "update-individual",
            "data": {**create["data"], "phone": "+5"},
            "timestamp": _stamp(utc_now() + timedelta(seconds=5)),
        }
        raw = DataCollectClient(served.url, "demo", email=EMAIL, password=PASSWORD, retry=FAST)
        raw.push([FormSubmission.from_json(phone)])
        raw.close()
        assert [r.changes["resolution"] for r in fake.conflict_rows("demo")] == ["applied-remote"]
        mirror.refresh()
        theirs = fake.entity("demo", "person-0")
        ours = mirror.get_entity("person-0")
        assert theirs is not None and ours is not None
        assert "registry_id" not in theirs.data and theirs.data["phone"] == "+5"
        assert (ours.data, ours.version) == (theirs.data, theirs.version)

"""The storage backends as an operator meets them: ``dcsync.yaml`` keys, ``log copy``, one-line errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from contracts.scenarios import event, mobile_log, ts
from typer.testing import CliRunner

from connector_core.cli import app
from connector_core.config import ConfigError, load_config
from connector_core.eventlog import SqliteEventLog, open_event_log_spec
from connector_core.eventlog.datacollect_http import DataCollectEventLog
from connector_core.eventlog.postgres import PostgresEventLog
from connector_core.testing.fake_datacollect import FakeDataCollect, create_app
from connector_core.testing.server import ServedApp, serve

runner = CliRunner()


def _invoke(*args: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return runner.invoke(app, list(args), env={"COLUMNS": "200", **(env or {})})


# -- dcsync.yaml -----------------------------------------------------------------------------------------


def test_backend_mistakes_are_reported_at_their_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DC_PASSWORD", "s3cret-pass")
    config = tmp_path / "dcsync.yaml"
    config.write_text(
        "eventlog:\n"
        "  backend: datacollect\n"
        "  url: https://sync.example.org\n"
        "  config_id: demo\n"
        "  email: sync@example.org\n"
        "  lookback_seconds: -5\n"
        "state:\n"
        "  backend: postgres\n"
        "  url: ${DC_PASSWORD}\n"
        "  path: state.db\n"
        "connectors: {}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    problems = caught.value.problems
    assert f"{config}:6:21: eventlog.lookback_seconds: Input should be greater than or equal to 0" in problems
    assert f"{config}:10:9: state.path: unknown key" in problems
    assert "s3cret-pass" not in str(caught.value)

    config.write_text("eventlog:\n  backend: mysql\n")
    with pytest.raises(
        ConfigError, match=r"dcsync.yaml:2:3: eventlog: unknown backend \(expected sqlite, postgres"
    ):
        load_config(config)
    config.write_text("eventlog:\n  backend: datacollect\n  url: http://x\n  config_id: demo\n")
    with pytest.raises(ConfigError, match=r"dcsync.yaml:2:3: eventlog: .*set token, or email and password"):
        load_config(config)


def test_a_project_without_backend_keys_is_still_sqlite(tmp_path: Path) -> None:
    config = tmp_path / "dcsync.yaml"
    config.write_text("eventlog:\n  path: e.db\nconnectors: {}\n")
    loaded = load_config(config)
    assert loaded.project.eventlog.backend == "sqlite" and loaded.project.state.backend == "sqlite"


@pytest.mark.postgres
def test_a_project_on_postgres_runs_its_log_commands(
    tmp_path: Path, postgres_url: str, pg_schema: str
) -> None:
    config = tmp_path / "dcsync.yaml"
    config.write_text(
        f"eventlog:\n  backend: postgres\n  url: ${{PG_URL}}\n  schema: {pg_schema}\n"
        f"state:\n  backend: postgres\n  url: ${{PG_URL}}\n  schema: {pg_schema}\n"
        "connectors: {}\n"
    )
    source = tmp_path / "in.jsonl"
    source.write_text("".join(e.to_json_line() + "\n" for e in mobile_log()))
    env = {"PG_URL": postgres_url}
    assert _invoke("log", "import", str(source), "-c", str(config), env=env).exit_code == 0
    stats = _invoke("log", "stats", "--json", "-c", str(config), env=env)
    assert stats.exit_code == 0, stats.output
    assert json.loads(stats.stdout)["events"] == len(mobile_log())


def test_an_unreachable_postgres_is_one_line_without_the_password(tmp_path: Path) -> None:
    config = tmp_path / "dcsync.yaml"
    config.write_text(
        "eventlog:\n  backend: postgres\n  url: postgresql://dcsync:pw-123456@127.0.0.1:1/x\nconnectors: {}\n"
    )
    result = _invoke("log", "stats", "-c", str(config))
    assert result.exit_code == 1
    assert result.stderr.startswith(
        "error: cannot connect to PostgreSQL at postgresql://dcsync:***@127.0.0.1:1/x"
    )
    assert "pw-123456" not in result.output and "Traceback" not in result.output


# -- dcsync log copy -------------------------------------------------------------------------------------


@pytest.mark.postgres
def test_copy_sqlite_to_postgres_and_back_is_complete_and_idempotent(
    tmp_path: Path, postgres_url: str, pg_schema: str
) -> None:
    sent = mobile_log()
    source = SqliteEventLog(tmp_path / "a.db")
    source.append(sent)
    source.close()
    pg = f"{postgres_url}?schema={pg_schema}"
    first = _invoke("log", "copy", f"sqlite:{tmp_path / 'a.db'}", pg, "--batch", "4")
    assert first.exit_code == 0, first.output
    assert f"copied {len(sent)} events: {len(sent)} new, 0 already present" in first.stdout
    again = _invoke("log", "copy", f"sqlite:{tmp_path / 'a.db'}", pg)
    assert f"0 new, {len(sent)} already present" in again.stdout

    back = _invoke("log", "copy", pg, str(tmp_path / "b.db"))
    assert back.exit_code == 0, back.output
    copied = SqliteEventLog(tmp_path / "b.db")
    assert [e.to_json() for e in copied.iter_events()] == [e.to_json() for e in sent]
    copied.close()
    log = open_event_log_spec(pg)
    assert isinstance(log, PostgresEventLog) and log.schema == pg_schema
    log.close()


@pytest.fixture
def datacollect() -> Iterator[tuple[FakeDataCollect, ServedApp]]:
    fake = FakeDataCollect(email="ops@example.org", password="pa55word")
    with serve(create_app(fake)) as served:
        yield fake, served


def test_copy_a_datacollect_tenant_into_sqlite_for_a_dry_run(
    tmp_path: Path, datacollect: tuple[FakeDataCollect, ServedApp]
) -> None:
    fake, served = datacollect
    phone = [event("create-individual", f"p-{i}", {"name": f"P {i}", "n": i}, at=ts(1)) for i in range(23)]
    assert fake.store("demo", [e.to_json() for e in phone]) == []
    host = served.url.removeprefix("http://")
    env = {"DCSYNC_DATACOLLECT_EMAIL": "ops@example.org", "DCSYNC_DATACOLLECT_PASSWORD": "pa55word"}
    result = _invoke(
        "log", "copy", f"datacollect+http://{host}/?config_id=demo", str(tmp_path / "dry.db"), env=env
    )
    assert result.exit_code == 0, result.output
    assert "copied 23 events: 23 new" in result.stdout
    copied = SqliteEventLog(tmp_path / "dry.db")
    assert sorted(e.guid for e in copied.iter_events()) == sorted(e.guid for e in phone)
    copied.close()

    fake.set_duplicates("demo", [("p-1", "p-2")])
    blocked = _invoke(
        "log", "copy", f"datacollect+http://{host}/?config_id=demo", str(tmp_path / "x.db"), env=env
    )
    assert blocked.exit_code == 1
    assert "blocked by unresolved duplicates in DataCollect" in blocked.stderr
    assert "pa55word" not in blocked.output and "Traceback" not in blocked.output


def test_a_named_mirror_is_kept_and_a_temporary_one_removed(
    tmp_path: Path, datacollect: tuple[FakeDataCollect, ServedApp], monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake, served = datacollect
    monkeypatch.setenv("DCSYNC_DATACOLLECT_EMAIL", "ops@example.org")
    monkeypatch.setenv("DCSYNC_DATACOLLECT_PASSWORD", "pa55word")
    spec = f"datacollect+{served.url}/?config_id=demo&mirror={tmp_path / 'keep.db'}&lookback_seconds=60"
    kept = open_event_log_spec(spec)
    assert isinstance(kept, DataCollectEventLog) and kept.lookback.total_seconds() == 60
    kept.close()
    assert (tmp_path / "keep.db").exists()
    scratch = open_event_log_spec(f"datacollect+{served.url}/?config_id=demo")
    assert isinstance(scratch, DataCollectEventLog)
    mirror = Path(scratch.local.path)
    scratch.close()
    assert not mirror.exists()


def test_a_spec_that_names_nothing_is_refused_with_the_grammar(tmp_path: Path) -> None:
    result = _invoke("log", "copy", "mysql://x", str(tmp_path / "b.db"))
    assert result.exit_code == 2
    assert "cannot tell which event log 'mysql://x' is" in result.stderr
    same = _invoke("log", "copy", "a.db", "a.db")
    assert same.exit_code == 2 and "same event log" in same.stderr
    with pytest.raises(ValueError, match="config_id"):
        open_event_log_spec("datacollect+http://127.0.0.1:1/")


def test_a_run_on_a_blocked_tenant_fails_with_one_line_and_records_the_failure(
    tmp_path: Path, datacollect: tuple[FakeDataCollect, ServedApp]
) -> None:
    fake, served = datacollect
    token = fake.issue_token()
    fake.set_duplicates("demo", [("p-1", "p-2")])
    config = tmp_path / "dcsync.yaml"
    config.write_text(
        "eventlog:\n"
        "  backend: datacollect\n"
        f"  url: {served.url}\n"
        "  config_id: demo\n"
        "  token: ${DC_TOKEN}\n"
        "connectors:\n"
        "  reg:\n"
        "    type: mock\n"
        "    pull: false\n"
        "    settings: {url: 'http://127.0.0.1:9'}\n"
    )
    result = _invoke("run", "reg", "-c", str(config), env={"DC_TOKEN": token})
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: DataCollect tenant 'demo' at http://127.0.0.1:")
    assert "blocked by unresolved duplicates in DataCollect" in result.stderr
    assert token not in result.output and "Traceback" not in result.output
    runs = _invoke("runs", "-c", str(config), env={"DC_TOKEN": token})
    assert "failed" in runs.stdout

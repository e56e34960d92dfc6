"""Issue 14: a failure that is about the run, not a record, stops the run; nothing is dead-lettered.

A misspelt database, a user outside the Registrar group, a login answered 401 or 500: each used to
dead-letter every household and move the checkpoint past them. Now the connector raises a
:class:`SystemicError` (or a transient error for what a retry may cure) before anything is written, the run
ends failed with one line, ``dlq list`` is empty and the push lag is what it was.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from connector_core.cli import app
from connector_core.connector import Operation, PushRecord
from connector_core.project import Project
from connector_core.retry import RetryPolicy
from connector_core.state.base import Direction
from connector_core.sync.runner import run_connector
from connector_core.testing.harness import SyncHarness
from connectors.openspp.client import OdooAuthError, OdooTransientError
from connectors.openspp.connector import OpenSppConnector
from connectors.openspp.fake import DATABASE, FakeOpenSpp
from connectors.openspp.fake.models import USER
from connectors.openspp.sample import registry_log

MAPPING = Path(__file__).resolve().parents[2] / "mappings" / "openspp.yaml"
FAST = RetryPolicy(max_attempts=3, initial_delay=0.01, max_delay=0.02, max_elapsed=10)
runner = CliRunner()


MakeProject = Callable[..., Path]


@pytest.fixture
def make_project(tmp_path: Path, url: str) -> Iterator[MakeProject]:
    """A project directory with a log of 5 households aimed at the served fake; returns its config."""

    def make(**settings: Any) -> Path:
        directory = tmp_path / f"p{len(list(tmp_path.iterdir()))}"
        directory.mkdir()
        config = {
            "connectors": {
                "reg": {
                    "type": "openspp",
                    "mapping": str(MAPPING),
                    "retry": FAST.model_dump(),
                    "settings": {
                        "url": url,
                        "database": DATABASE,
                        "username": "registrar",
                        "password": "registrar",
                        "timeout": 5.0,
                        "login_cooldown": 0,
                        **settings,
                    },
                }
            }
        }
        path = directory / "dcsync.yaml"
        path.write_text(yaml.safe_dump(config))
        project = Project.open(path)
        try:
            project.eventlog.append(registry_log(households=5, members=2))
        finally:
            project.close()
        return path

    yield make


def _state(config: Path) -> tuple[int, str | None, int]:
    """Open dead letters, the push checkpoint and the push lag (events after it)."""
    project = Project.open(config)
    try:
        letters = len(list(project.state.iter_dead_letters("reg", "open")))
        checkpoint = project.state.get_checkpoint("reg", Direction.PUSH)
        return letters, checkpoint, project.eventlog.count(checkpoint)
    finally:
        project.close()


def _run(config: Path) -> Any:
    project = Project.open(config)
    try:
        return run_connector(project, "reg")
    finally:
        project.close()


def _dlq_list(config: Path) -> str:
    answer = runner.invoke(app, ["dlq", "list", "-c", str(config)])
    assert answer.exit_code == 0, answer.output
    return answer.output


# -- the connector raises the right thing ----------------------------------------------------------------
def test_a_misspelt_database_is_systemic_and_nothing_was_sent(
    make_connector: Callable[..., OpenSppConnector], fake: FakeOpenSpp
) -> None:
    connector = make_connector(database="opensp")
    household = PushRecord("h-1", Operation.CREATE, "household", {"name": "H"})
    with pytest.raises(Exception) as caught:
        connector.push([household])
    error = caught.value
    assert getattr(error, "systemic", False) and getattr(error, "unsent", False), repr(error)
    assert "database 'opensp' does not exist" in str(error)
    assert not connector.check().ok


def test_a_user_outside_the_registrar_group_is_systemic(
    make_connector: Callable[..., OpenSppConnector], fake: FakeOpenSpp
) -> None:
    fake.add_user("clerk", "clerk", [USER])
    connector = make_connector(username="clerk", password="clerk")
    with pytest.raises(Exception) as caught:
        connector.push([PushRecord("h-1", Operation.CREATE, "household", {"name": "H"})])
    error = caught.value
    assert getattr(error, "systemic", False) and getattr(error, "unsent", False), repr(error)
    assert "membership kinds" in str(error) and "Registrar group" in str(error)
    assert "\n" not in str(error), "one line"
    with pytest.raises(Exception) as pulled:
        connector.pull(None, 10)
    assert getattr(pulled.value, "systemic", False)


def test_a_login_answered_401_is_an_authentication_error(
    make_connector: Callable[..., OpenSppConnector], fake: FakeOpenSpp
) -> None:
    fake.faults.add({"kind": "http_status", "status": 401, "service": "common", "probability": 1.0})
    with pytest.raises(OdooAuthError) as caught:
        make_connector().push([PushRecord("h-1", Operation.CREATE, "household", {"name": "H"})])
    assert caught.value.systemic and caught.value.unsent


@pytest.mark.parametrize("fault", [{"kind": "http_status", "status": 500}, {"kind": "reset_connection"}])
def test_a_login_answered_500_or_cut_is_transient_and_nothing_was_sent(
    make_connector: Callable[..., OpenSppConnector], fake: FakeOpenSpp, fault: dict[str, Any]
) -> None:
    fake.faults.add({**fault, "service": "common", "probability": 1.0})
    with pytest.raises(OdooTransientError) as caught:
        make_connector().push([PushRecord("h-1", Operation.CREATE, "household", {"name": "H"})])
    assert caught.value.unsent and not caught.value.systemic


# -- through the engine: the run fails, nothing is dead-lettered, the lag stays ----------------------------
def test_a_login_answered_401_stops_the_run_with_the_checkpoint_unmoved(
    make_project: MakeProject, fake: FakeOpenSpp
) -> None:
    config = make_project()
    before = _state(config)
    fake.faults.add({"kind": "http_status", "status": 401, "service": "common", "probability": 1.0})
    report = _run(config)
    assert not report.ok and "HTTP 401" in (report.error or "")
    assert _state(config) == before == (0, None, before[2])
    assert "reg" not in _dlq_list(config), "dlq list shows no letter of this connector"


def test_a_login_answered_500_is_retried_then_the_run_stops_and_the_next_run_delivers(
    make_project: MakeProject, fake: FakeOpenSpp
) -> None:
    config = make_project()
    before = _state(config)
    fake.faults.add({"kind": "http_status", "status": 500, "service": "common", "probability": 1.0})
    report = _run(config)
    assert not report.ok and "HTTP 500" in (report.error or "")
    logins = [r for r in fake.requests if r["method"] == "authenticate"]
    assert len(logins) > 1, "a login answered 500 is retried"
    assert _state(config) == before
    fake.faults.clear()
    again = _run(config)
    assert again.ok, again.error
    letters, _checkpoint, lag = _state(config)
    assert (letters, lag) == (0, 0)


@pytest.mark.parametrize("case", ["database", "group"])
def test_a_wrong_database_or_a_user_without_registry_rights_fails_the_run_and_dead_letters_nothing(
    make_project: MakeProject, fake: FakeOpenSpp, case: str
) -> None:
    if case == "database":
        config = make_project(database="opensp")
    else:
        fake.add_user("clerk", "clerk", [USER])
        config = make_project(username="clerk", password="clerk")
    before = _state(config)
    assert before[2] > 0
    answer = runner.invoke(app, ["run", "reg", "-c", str(config)])
    assert answer.exit_code == 1, answer.output
    reason = "database 'opensp' does not exist" if case == "database" else "Registrar group"
    assert reason in answer.output
    assert "Traceback" not in answer.output
    assert _state(config) == before, "no dead letter, the push lag unchanged"
    assert "reg" not in _dlq_list(config), "dlq list shows no letter of this connector"
    assert not [r for r in fake.state("res.partner")["res.partner"] if r.get("is_registrant")]


def test_status_shows_the_failed_run_its_one_line_reason_and_the_whole_lag(
    make_project: MakeProject, fake: FakeOpenSpp
) -> None:
    config = make_project()
    lag = _state(config)[2]
    fake.faults.add({"kind": "http_status", "status": 401, "service": "common", "probability": 1.0})
    _run(config)
    answer = runner.invoke(app, ["status", "--json", "-c", str(config)])
    [row] = json.loads(answer.output)
    assert row["last_outcome"] == "failed" and "HTTP 401" in row["last_error"]
    assert "\n" not in row["last_error"]
    assert row["push_lag"] == lag and row["dead_letters"] == 0


# -- call-level retries (issue 14 item 5) ---------------------------------------------------------------
def test_under_a_third_of_calls_failing_a_push_still_makes_progress(
    make_connector: Callable[..., OpenSppConnector], fake: FakeOpenSpp, tmp_path: Path
) -> None:
    """Each read is retried on its own and the catalog is read once: a lost answer costs one call, not
    the batch's attempt (observed: 8 of 9 runs gave up with no progress under ~35% faults)."""
    from connector_core.mapping import load_mapping

    policy = RetryPolicy(max_attempts=6, initial_delay=0.001, max_delay=0.005, max_elapsed=60)
    connector = make_connector(lag_seconds=0)
    connector.retry_policy = policy
    harness = SyncHarness(connector, tmp_path, mappings=load_mapping(MAPPING), retry=policy, batch_size=20)
    harness.append(registry_log(households=6, members=2))
    fake.faults.reseed(11)
    fake.faults.add({"kind": "serialization_failure", "service": "object", "probability": 0.35})
    report = harness.push()
    fake.faults.clear()
    assert report.error is None, report.error
    assert harness.dead_letters() == []
    assert harness.checkpoint(Direction.PUSH) == harness.eventlog.head()
    catalog_reads = [
        r for r in fake.requests if r["model"] == "g2p.group.membership.kind" and r.get("outcome") == "result"
    ]
    assert len(catalog_reads) == 1, "a catalog read that answered is kept for the run"

"""Runs tell the truth: a failure that is not about a record stops the run; run history never lies.

Each scenario is one an operator met: every record refused for one reason (a field the registry lacks),
a run killed with SIGKILL, a second Ctrl-C, a run that failed before anything left the machine, a dry run
over a log whose entities span pages.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx
import pytest
from sync_support import FAST_RETRY, event, remote_records, write_config

from connector_core.connector import PushRecord, PushResult
from connector_core.project import Project
from connector_core.sample import mobile_log
from connector_core.state.base import Direction
from connector_core.sync.push import reason_key
from connector_core.sync.runner import run_connector
from connector_core.testing.harness import SyncHarness, host_for
from connector_core.testing.server import free_port, serve
from connectors.mock.connector import MockConnector
from connectors.rest.connector import RestConnector
from connectors.rest.fake import FakeRestOptions, connector_settings, create_app


def _households(count: int) -> list:
    return [
        event(f"e{i}", f"hh{i}", "create-individual", {"entityName": "household", "household_name": f"H{i}"})
        for i in range(count)
    ]


def test_reasons_that_differ_only_in_ids_and_numbers_are_one_reason() -> None:
    assert reason_key("national id 1234 already registered") == reason_key(
        "National ID 99 already  registered"
    )
    assert reason_key("record 5f1c2a9e-8d1b-4f0a-9c2e-0b1d2c3e4f5a refused") == reason_key(
        "record 0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d refused"
    )
    assert reason_key("Invalid field 'hh_size'") != reason_key("Invalid field 'area_id'")


def test_the_same_refusal_twenty_times_in_a_row_stops_the_run_with_nothing_dead_lettered(
    make_project: Callable[..., Project], mock_server: httpx.Client
) -> None:
    project = make_project("    systemic_after: 5\n", batch_size=3, page_size=4)
    project.eventlog.append(_households(8))
    reason = "Invalid field 'hh_size' on model 'res.partner'"
    mock_server.put("/_control/faults", json={"reject": {f"hh{i}": reason for i in range(8)}})
    report = run_connector(project, "reg", pull=False, retry=FAST_RETRY)
    assert not report.ok and report.error is not None
    assert "5 records in a row" in report.error and "hh_size" in report.error
    assert project.state.dead_letters("reg") == [], "a systemic refusal dead-letters nothing"
    assert project.state.get_checkpoint("reg", Direction.PUSH) is None, "nothing past the first refusal"
    (run,) = project.state.runs("reg")
    assert run.outcome == "failed" and run.error is not None and "hh_size" in run.error
    mock_server.put("/_control/faults", json={})
    fixed = run_connector(project, "reg", pull=False, retry=FAST_RETRY)
    assert fixed.ok, fixed.error
    assert sorted(r["entityGuid"] for r in remote_records(mock_server)) == [f"hh{i}" for i in range(8)]


def test_refusals_for_different_reasons_are_dead_lettered_one_by_one(
    make_project: Callable[..., Project], mock_server: httpx.Client
) -> None:
    project = make_project("    systemic_after: 3\n", batch_size=3, page_size=4)
    project.eventlog.append(_households(6))
    rejects = {f"hh{i}": f"problem number {i}" if i % 2 else f"another kind of problem {i}" for i in range(6)}
    mock_server.put("/_control/faults", json={"reject": rejects})
    report = run_connector(project, "reg", pull=False, retry=FAST_RETRY)
    assert report.ok, report.error
    assert sorted(d.ref for d in project.state.dead_letters("reg")) == sorted(rejects)
    assert project.state.get_checkpoint("reg", Direction.PUSH) == project.eventlog.head()


def test_a_streak_broken_by_a_delivery_is_dead_lettered(
    make_project: Callable[..., Project], mock_server: httpx.Client
) -> None:
    project = make_project("    systemic_after: 3\n", batch_size=10, page_size=10)
    project.eventlog.append(_households(5))
    mock_server.put(
        "/_control/faults", json={"reject": {"hh0": "bad phone", "hh1": "bad phone", "hh3": "bad phone"}}
    )
    report = run_connector(project, "reg", pull=False, retry=FAST_RETRY)
    assert report.ok, report.error
    assert sorted(d.ref for d in project.state.dead_letters("reg")) == ["hh0", "hh1", "hh3"]
    assert report.push is not None and report.push.counts.dead_lettered == 3


def test_a_run_that_failed_before_anything_left_holds_no_intents(tmp_path: Path) -> None:
    """A refused login and a refused connection: nothing was sent, so the next run has nothing to look up
    (and does not warn that creates 'may have reached the remote')."""
    options = FakeRestOptions(auth="api_key", pagination="cursor")
    with serve(create_app(options)) as served, httpx.Client(base_url=served.url) as control:
        control.put("/_control/faults", json={"refuse_credentials": True}).raise_for_status()
        cases = [
            ("login", served.url, "credentials"),
            ("refused", f"http://127.0.0.1:{free_port()}", "reach"),
        ]
        for label, url, says in cases:
            connector = RestConnector(
                "reg", RestConnector.config_model.model_validate(connector_settings(url, options))
            )
            harness = SyncHarness(connector, tmp_path / label)
            try:
                harness.append(mobile_log(households=2, members=1, updates=0))
                report = harness.push()
                assert report.error is not None and says in report.error, (label, report.error)
                assert harness.state.intents("reg") == set(), label
            finally:
                harness.close()
                connector.close()


def test_a_run_killed_with_sigkill_is_shown_abandoned_by_the_next(
    tmp_path: Path, mock_server: httpx.Client
) -> None:
    config = write_config(tmp_path / "dcsync.yaml", str(mock_server.base_url), batch_size=5, page_size=10)
    project = Project.open(config)
    project.eventlog.append(mobile_log(households=20, members=2, updates=0))
    project.close()
    mock_server.put("/_control/faults", json={"latency": 0.2})
    command = [sys.executable, "-m", "connector_core.cli", "run", "reg", "--push", "-c", str(config)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # killed once its run is recorded and a request is in flight
            if mock_server.get("/_control/records").json():
                break
            time.sleep(0.05)
        else:
            pytest.fail("the run never reached the mock server")
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    project = Project.open(config)
    try:
        assert [r.outcome for r in project.state.runs("reg")] == ["running"]
        mock_server.put("/_control/faults", json={})
        report = run_connector(project, "reg", pull=False, retry=FAST_RETRY)
        assert report.ok, report.error
        outcomes = [r.outcome for r in project.state.runs("reg")]
        assert outcomes == ["ok", "abandoned"], "the killed run is closed as abandoned, never left running"
        killed = project.state.runs("reg")[1]
        assert killed.finished_at is not None and killed.error is not None and "killed" in killed.error
    finally:
        project.close()


class _AbortedByOperator(MockConnector):
    """Its push is where a second Ctrl-C lands (Python raises KeyboardInterrupt in the main thread)."""

    def push(self, batch: Sequence[PushRecord]) -> list[PushResult]:
        raise KeyboardInterrupt


def test_a_second_ctrl_c_is_recorded_interrupted_not_failed(
    tmp_path: Path, mock_server: httpx.Client
) -> None:
    config = write_config(tmp_path / "dcsync.yaml", str(mock_server.base_url), extra="    in_flight: 1\n")
    config.write_text(config.read_text().replace("type: mock", "type: aborted"))
    _AbortedByOperator.type_name = "aborted"
    project = Project.open(config, host=host_for(_AbortedByOperator))
    try:
        project.eventlog.append(_households(2))
        with pytest.raises(KeyboardInterrupt):
            run_connector(project, "reg", pull=False, retry=FAST_RETRY)
        (run,) = project.state.runs("reg")
        assert run.outcome == "interrupted" and "KeyboardInterrupt" not in (run.error or "")
    finally:
        project.close()


def test_a_dry_run_counts_each_entity_once_however_its_events_fall_across_pages(
    make_project: Callable[..., Project],
) -> None:
    project = make_project(page_size=7)
    events = list(mobile_log(households=10, members=3, updates=25))
    project.eventlog.append(events)
    entities = {e.entity_guid for e in events}
    report = run_connector(project, "reg", pull=False, dry_run=True)
    assert report.push is not None
    assert report.push.counts.created == len(entities)
    assert len({p.ref for p in report.push.plan if p.operation == "create"}) == len(entities)
    assert len([p for p in report.push.plan if p.operation == "create"]) == len(entities)


def test_a_mock_url_with_no_sync_endpoint_stops_the_run_with_nothing_dead_lettered(
    tmp_path: Path, mock_server: httpx.Client
) -> None:
    """A misspelt URL answers 404 to every push: that is about the address, not the records."""
    config = write_config(tmp_path / "dcsync.yaml", f"{mock_server.base_url}/no-such-path")
    project = Project.open(config)
    try:
        project.eventlog.append(_households(3))
        report = run_connector(project, "reg", pull=False, retry=FAST_RETRY)
        assert not report.ok and report.error is not None and "no sync endpoint" in report.error
        assert project.state.dead_letters("reg") == []
        assert project.state.get_checkpoint("reg", Direction.PUSH) is None
        assert project.state.intents("reg") == set(), "a refused request created nothing to look up"
    finally:
        project.close()


def test_a_run_the_gate_skips_still_closes_the_runs_a_dead_process_left_running(
    make_project: Callable[..., Project],
) -> None:
    """A retried job whose tick was already claimed holds the lease: the dead run it follows is abandoned
    even though this run does nothing (no later run may come for a while)."""
    project = make_project()
    left = project.state.start_run("reg", "both", "schedule")  # its process was SIGKILLed
    report = run_connector(project, "reg", gate=lambda: False)
    assert report.skipped and report.run_id is None
    (run,) = project.state.runs("reg")
    assert (run.id, run.outcome) == (left, "abandoned")

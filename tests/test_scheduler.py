"""Unattended runs: ticks on a real clock against the mock system, two schedulers, signals, metrics."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg
import pytest
from typer.testing import CliRunner

from connector_core.cli import app
from connector_core.config import ScheduleConfig
from connector_core.metrics import Metrics
from connector_core.project import Project
from connector_core.sample import mobile_log
from connector_core.scheduler import ScheduledJob, Scheduler
from connector_core.state.base import Direction
from connector_core.sync.runner import run_connector


def _config(path: Path, url: str, schedule: str, **extra: str) -> Path:
    lines = [
        "connectors:",
        "  reg:",
        "    type: mock",
        "    batch_size: 10",
        "    page_size: 50",
        "    retry: {max_attempts: 2, initial_delay: 0.01, max_delay: 0.02, max_elapsed: 5}",
        *(f"    {k}: {v}" for k, v in extra.items()),
        "    schedule:",
        *(f"      {line}" for line in schedule.strip().splitlines()),
        "    settings:",
        f"      url: {url}",
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def _append(config: Path, seed: int, households: int = 5) -> None:
    project = Project.open(config)
    try:
        project.eventlog.append(mobile_log(households=households, members=3, updates=2, seed=seed))
    finally:
        project.close()


def _no_overlap(runs: list) -> None:
    spans = sorted((r.started_at, r.finished_at) for r in runs)
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        assert end is not None and end <= start, f"runs overlap: one ended {end}, the next began {start}"


def test_schedules_are_validated_with_their_line(tmp_path: Path) -> None:
    config = _config(tmp_path / "dcsync.yaml", "http://x", "- {direction: push, every: 10s, jitter: 20}")
    result = CliRunner().invoke(app, ["schedule", "list", "-c", str(config)])
    assert result.exit_code == 2
    assert (
        f"{config}:8:9: connectors.reg.schedule.0: jitter must be shorter than the interval" in result.stderr
    )


def test_ticks_are_the_same_on_every_machine_and_cron_follows_its_time_zone() -> None:
    job = ScheduledJob("reg", "push", ScheduleConfig(every="15m"))
    from datetime import UTC, datetime

    assert job.tick_at(datetime(2026, 5, 1, 10, 7, 59, tzinfo=UTC)) == datetime(2026, 5, 1, 10, 0, tzinfo=UTC)
    nightly = ScheduledJob("reg", "pull", ScheduleConfig(cron="0 2 * * *", timezone="Africa/Nairobi"))
    (first,) = nightly.next_times(1, now=datetime(2026, 5, 1, 12, 0, tzinfo=UTC))
    assert first.astimezone(UTC) == datetime(2026, 5, 1, 23, 0, tzinfo=UTC)  # 02:00 in Nairobi (UTC+3)


def test_a_one_second_schedule_pushes_every_event_once_without_overlapping_runs(
    tmp_path: Path, mock_server: httpx.Client
) -> None:
    config = _config(tmp_path / "dcsync.yaml", str(mock_server.base_url), "- {direction: push, every: 1}")
    # the first run's first request answers late (after doing the work): that run outlasts the interval
    mock_server.put("/_control/faults", json={"script": [{"kind": "slow", "delay": 1.3, "commit": True}]})
    _append(config, seed=1, households=10)
    finished: list = []
    scheduler = Scheduler(config, on_run=lambda job, report: finished.append(report))
    scheduler.start()
    try:
        for seed in range(2, 6):  # new registrations keep arriving between ticks
            time.sleep(0.8)
            _append(config, seed=seed)
        deadline = time.monotonic() + 20
        project = Project.open(config)
        try:
            while time.monotonic() < deadline and project.eventlog.count(
                project.state.get_checkpoint("reg", Direction.PUSH)
            ):
                time.sleep(0.2)
        finally:
            project.close()
    finally:
        scheduler.stop()
    project = Project.open(config)
    try:
        entities = sum(1 for _ in project.eventlog.iter_entities())
        records = mock_server.get("/_control/records").json()
        assert len(records) == entities
        assert [ref for ref, n in Counter(r["entityGuid"] for r in records).items() if n > 1] == []
        runs = project.state.runs("reg", limit=1000)
        assert len(finished) >= 3 and len(runs) == len(finished), "history shows every run"
        assert {r.trigger for r in runs} == {"schedule"} and all(r.outcome == "ok" for r in runs)
        _no_overlap(runs)
        assert any((_seconds(r.finished_at) - _seconds(r.started_at)) > 1.0 for r in runs), (
            "at least one run outlasted the interval"
        )
    finally:
        project.close()


def _seconds(timestamp: str | None) -> float:
    from connector_core.events import parse_timestamp

    assert timestamp is not None
    return parse_timestamp(timestamp).timestamp()


def test_two_schedulers_sharing_a_state_store_run_each_tick_once(
    tmp_path: Path, mock_server: httpx.Client
) -> None:
    config = _config(tmp_path / "dcsync.yaml", str(mock_server.base_url), "- {direction: push, every: 1}")
    _append(config, seed=1)
    first, second = Scheduler(config, holder="host-a:1"), Scheduler(config, holder="host-b:2")
    first.start()
    second.start()
    time.sleep(4.5)
    first.stop()
    second.stop()
    project = Project.open(config)
    try:
        runs = project.state.runs("reg", limit=1000)
        assert 3 <= len(runs) <= 6
        _no_overlap(runs)
        assert len(mock_server.get("/_control/records").json()) == 20
    finally:
        project.close()


def test_a_failing_schedule_is_loud_backs_off_and_keeps_going(
    tmp_path: Path, mock_server: httpx.Client
) -> None:
    config = _config(tmp_path / "dcsync.yaml", str(mock_server.base_url), "- {direction: push, every: 1}")
    _append(config, seed=1)
    mock_server.put("/_control/faults", json={"script": [{"status": 503}] * 4})
    metrics = Metrics()
    reports: list = []
    clock = {"wall": datetime(2026, 1, 1, tzinfo=UTC), "mono": 1000.0}

    def step(seconds: float) -> None:
        clock["wall"] += timedelta(seconds=seconds)
        clock["mono"] += seconds

    scheduler = Scheduler(
        config,
        metrics=metrics,
        on_run=lambda job, report: reports.append(report),
        utcnow=lambda: clock["wall"],
        monotonic=lambda: clock["mono"],
    )
    (job,) = scheduler.jobs
    runs_made = []
    for _tick in range(12):  # one a second, as the schedule says, on a clock the test steps
        before = len(reports)
        scheduler.run_now(job)
        runs_made.append(len(reports) > before)
        if reports and reports[-1].ok:
            break
        step(1)
    outcomes = [r.ok for r in reports]
    assert outcomes[0] is False and outcomes[-1] is True, outcomes
    # after failure n the runs wait 2**(n-1) intervals: from the second failure on, ticks are skipped
    assert False in runs_made and runs_made[0] is True, runs_made
    failed = metrics.registry.get_sample_value(
        "dcsync_runs_total", {"connector": "reg", "direction": "push", "outcome": "failed"}
    )
    assert failed == outcomes.count(False) >= 1
    result = CliRunner().invoke(app, ["runs", "--failed", "-c", str(config)], env={"COLUMNS": "250"})
    assert "failed" in result.stdout and "gave up after retries" in result.stdout


def test_a_scheduled_push_during_a_bulk_load_is_skipped_with_its_reason_and_does_not_back_off(
    tmp_path: Path, mock_server: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    """The shards of an open bulk load write the connector's records, so its pushes wait; each tick of the
    load is a skip with the reason, in the log and in run history, never a failure that backs off."""
    from connector_core.sync.bulk import plan_bulk_load

    config = _config(tmp_path / "dcsync.yaml", str(mock_server.base_url), "- {direction: push, every: 1}")
    _append(config, seed=1)
    project = Project.open(config)
    try:
        plan = plan_bulk_load(project, "reg", 2)
    finally:
        project.close()
    metrics = Metrics()
    reports: list = []
    clock = {"wall": datetime(2026, 1, 1, tzinfo=UTC), "mono": 1000.0}
    scheduler = Scheduler(
        config,
        metrics=metrics,
        on_run=lambda job, report: reports.append(report),
        utcnow=lambda: clock["wall"],
        monotonic=lambda: clock["mono"],
    )
    (job,) = scheduler.jobs
    with caplog.at_level("INFO", logger="dcsync.scheduler"):
        for _tick in range(3):
            scheduler.run_now(job)
            clock["wall"] += timedelta(seconds=1)
            clock["mono"] += 1
    reason = f"bulk load {plan.id} in progress: pushes resume from its mark when it finishes"
    assert caplog.text.count(reason) == 3, caplog.text
    assert "failed" not in caplog.text and "wait" not in caplog.text.replace(reason, "")
    failed = metrics.registry.get_sample_value(
        "dcsync_runs_total", {"connector": "reg", "direction": "push", "outcome": "failed"}
    )
    assert not failed and reports == []
    skipped = metrics.registry.get_sample_value(
        "dcsync_runs_total", {"connector": "reg", "direction": "push", "outcome": "skipped"}
    )
    assert skipped == 3, "a paused push shows in the metrics"
    assert metrics.registry.get_sample_value("dcsync_run_duration_seconds_count", {"connector": "reg"}) in (
        None,
        0,
    )
    project = Project.open(config, read_only=True)
    try:
        runs = project.state.runs("reg")
        assert [(r.outcome, r.error) for r in runs] == [("skipped", reason)] * 3
        assert project.state.get_checkpoint("reg", Direction.PUSH) is None
    finally:
        project.close()
    assert mock_server.get("/_control/records").json() == []


def test_status_shows_dead_letters_and_the_metrics_endpoint_serves_counters(
    tmp_path: Path, mock_server: httpx.Client
) -> None:
    from connector_core.testing.server import free_port

    config = _config(tmp_path / "dcsync.yaml", str(mock_server.base_url), "- {direction: push, every: 1h}")
    _append(config, seed=3, households=2)
    project = Project.open(config)
    refused = next(e.guid for e in project.eventlog.iter_entities() if e.entity_name == "individual")
    project.close()
    mock_server.put("/_control/faults", json={"reject": {refused: "duplicate national id"}})
    metrics = Metrics()
    port = free_port()
    metrics.serve(port)
    scheduler = Scheduler(config, metrics=metrics)
    (job,) = scheduler.jobs
    scheduler.run_now(job)
    status = CliRunner().invoke(app, ["status", "--json", "-c", str(config)])
    assert status.exit_code == 0, status.output
    (row,) = json.loads(status.stdout)
    # finished, but left a dead letter: degraded, the same in status and in the metrics
    assert row["dead_letters"] == 1 and row["push_lag"] == 0 and row["last_outcome"] == "degraded"
    assert row["next_run"] is not None
    scraped = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    assert 'dcsync_runs_total{connector="reg",direction="push",outcome="degraded"} 1.0' in scraped
    assert 'dcsync_dead_letters_open{connector="reg"} 1.0' in scraped
    assert 'dcsync_parked_children{connector="reg"} 0.0' in scraped
    assert 'dcsync_records_total{connector="reg",direction="push",result="created"} 7.0' in scraped


@pytest.mark.slow
def test_sigterm_during_a_scheduled_run_leaves_consistent_state_and_the_next_start_resumes(
    tmp_path: Path, mock_server: httpx.Client
) -> None:
    config = _config(tmp_path / "dcsync.yaml", str(mock_server.base_url), "- {direction: push, every: 1}")
    _append(config, seed=1, households=60)
    mock_server.put("/_control/faults", json={"latency": 0.2})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    command = [sys.executable, "-m", "connector_core.cli", "schedule", "run", "-c", str(config)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    project = Project.open(config)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any(
            r.outcome == "running" for r in project.state.runs("reg")
        ):
            time.sleep(0.1)
        time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
        assert process.returncode == 0, stderr
        assert "Traceback" not in stderr
        (run,) = project.state.runs("reg")
        assert run.outcome == "interrupted"
        delivered = mock_server.get("/_control/records").json()
        links = list(project.state.iter_links("reg"))
        assert 0 < len(delivered) == len(links), "every delivered record is linked: nothing in limbo"
        mock_server.put("/_control/faults", json={})
        assert run_connector(project, "reg", pull=False, trigger="schedule").ok
        records = mock_server.get("/_control/records").json()
        assert len(records) == sum(1 for _ in project.eventlog.iter_entities())
        assert mock_server.get("/_control/stats").json()["duplicate_creates"] == {}
    finally:
        project.close()
        if process.poll() is None:
            process.kill()


@pytest.mark.slow
def test_two_scheduler_processes_on_one_postgresql_state_store_run_each_tick_once(
    tmp_path: Path, mock_server: httpx.Client, postgres_url: str, pg_schema: str
) -> None:
    config = tmp_path / "dcsync.yaml"
    config.write_text(
        "eventlog:\n  backend: postgres\n  url: ${PG_URL}\n  schema: " + pg_schema + "\n"
        "state:\n  backend: postgres\n  url: ${PG_URL}\n  schema: " + pg_schema + "\n"
        "connectors:\n  reg:\n    type: mock\n    batch_size: 10\n"
        "    schedule:\n      - {direction: push, every: 1}\n"
        f"    settings:\n      url: {mock_server.base_url}\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "PG_URL": postgres_url}
    os.environ["PG_URL"] = postgres_url
    try:
        _append(config, seed=1, households=10)
        command = [sys.executable, "-m", "connector_core.cli", "schedule", "run", "-c", str(config)]
        procs = [
            subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            for _ in range(2)
        ]
        time.sleep(2.5)
        for seed in (2, 3):
            _append(config, seed=seed)
            time.sleep(1.5)
        time.sleep(1.5)
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            _, stderr = proc.communicate(timeout=30)
            assert proc.returncode == 0, stderr
        project = Project.open(config)
        try:
            runs = project.state.runs("reg", limit=1000)
            _no_overlap(runs)
            # a tick is claimed by the run holding the lease, once (the key); so one run per claimed tick.
            # (Wall-clock seconds are no proxy: a late tick and the next one may start in the same second.)
            with psycopg.connect(postgres_url) as conn:
                holders = conn.execute(
                    f"SELECT holder, count(*) FROM {pg_schema}.ticks "
                    "WHERE connector = 'reg' AND direction = 'push' GROUP BY holder"
                ).fetchall()
            assert runs and len(runs) == sum(n for _holder, n in holders), (runs, holders)
            records = mock_server.get("/_control/records").json()
            assert len(records) == sum(1 for _ in project.eventlog.iter_entities()) == 80
            assert mock_server.get("/_control/stats").json()["duplicate_creates"] == {}
        finally:
            project.close()
    finally:
        os.environ.pop("PG_URL", None)

"""Nothing lost, nothing duplicated: a flaky network and a process killed at random points."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from sync_support import write_config

from connector_core.project import Project
from connector_core.retry import RetryPolicy
from connector_core.sample import mobile_log
from connector_core.state.base import Direction
from connector_core.sync.runner import run_connector

FAULTS = [
    {"kind": "status", "status": 429, "on": "any"},
    {"kind": "status", "status": 429, "retry_after": 1, "on": "any"},
    {"kind": "status", "status": 503, "on": "any"},
    {"kind": "status", "status": 500, "on": "any"},
    {"kind": "commit_then_fail", "status": 502, "on": "push"},
    {"kind": "reset", "commit": True, "on": "push"},
    {"kind": "reset", "commit": False, "on": "any"},
    {"kind": "slow", "delay": 0.6, "commit": True, "on": "push"},
]


def _assert_exactly_once(project: Project, mock: httpx.Client, expected: int) -> None:
    records = mock.get("/_control/records").json()
    per_ref = Counter(r["entityGuid"] for r in records)
    assert len(records) == expected, f"{len(records)} records for {expected} entities"
    assert [ref for ref, n in per_ref.items() if n > 1] == []
    assert mock.get("/_control/stats").json()["duplicate_creates"] == {}
    links = {link.entity_guid: link.external_id for link in project.state.iter_links("reg")}
    by_ref = {r["entityGuid"]: r["id"] for r in records}
    assert links == by_ref, "the state store agrees with the remote"
    assert project.state.get_checkpoint("reg", Direction.PUSH) == project.eventlog.head()
    assert project.state.intents("reg") == set()
    assert project.state.dead_letters("reg") == []


@pytest.mark.parametrize("in_flight", [1, 4])
def test_five_thousand_entities_arrive_exactly_once_through_thirty_percent_failures(
    make_project, mock_server: httpx.Client, in_flight: int
) -> None:
    project = make_project(f"    in_flight: {in_flight}\n", batch_size=100, page_size=1000, timeout=0.4)
    project.eventlog.append(mobile_log(households=1000, members=4, updates=0))
    mock_server.put("/_control/faults", json={"random": {"rate": 0.3, "seed": 11, "faults": FAULTS}})
    policy = RetryPolicy(max_attempts=15, initial_delay=0.01, max_delay=0.05, max_elapsed=120)
    report = run_connector(project, "reg", pull=False, retry=policy)
    assert report.ok, report.error
    injected = mock_server.get("/_control/faults").json()["injected"]
    assert injected > 20 and report.push.counts.retries >= injected // 2
    _assert_exactly_once(project, mock_server, 5000)


@pytest.mark.slow
def test_killed_at_random_points_then_rerun_delivers_everything_once(
    tmp_path: Path, mock_server: httpx.Client
) -> None:
    """New registrations keep arriving while runs are SIGKILLed mid-batch; a final run settles it all."""
    config = write_config(tmp_path / "dcsync.yaml", str(mock_server.base_url), batch_size=10, page_size=40)
    mock_server.put("/_control/faults", json={"latency": 0.04})
    rng = random.Random(int(os.environ.get("DCSYNC_KILL_SEED", "5")))
    command = [sys.executable, "-m", "connector_core.cli", "run", "reg", "--push", "-c", str(config)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    kills = attempts = 0
    while kills < 12 and attempts < 40:
        attempts += 1
        log = Project.open(config)
        log.eventlog.append(mobile_log(households=25, members=3, updates=10, seed=attempts))
        log.close()
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.5, 1.5))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait()
    assert kills >= 10, f"only {kills} kills landed while a run was in flight"
    mock_server.put("/_control/faults", json={})
    final = subprocess.run(command, env=env, capture_output=True, text=True)
    assert final.returncode == 0, final.stderr
    reopened = Project.open(config)
    try:
        expected = sum(1 for _ in reopened.eventlog.iter_entities())
        assert expected == attempts * 100
        _assert_exactly_once(reopened, mock_server, expected)
    finally:
        reopened.close()

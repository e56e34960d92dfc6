"""One run of a connector at a time: two ``dcsync run`` processes started together, and the leases beneath.

The process tests start real ``python -m connector_core.cli run`` subprocesses against a mock system whose
first push answers slowly, so the first run is still going when the second asks for the lease.
"""

from __future__ import annotations

import fcntl
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fleet_support import runs_in_progress
from sync_support import contend_for_lease

from connector_core.project import Project
from connector_core.sample import mobile_log
from connector_core.state import ConnectorBusy, SqliteStateStore
from connector_core.state.lease import LeaseHolder
from connector_core.testing.server import serve
from connectors.mock.server import create_app


@pytest.fixture
def mock_url() -> Iterator[str]:
    with serve(create_app()) as served:
        yield served.url


def _project(tmp_path: Path, mock_url: str, state: str) -> Path:
    config = tmp_path / "dcsync.yaml"
    config.write_text(
        "eventlog:\n"
        "  path: events.db\n"
        f"state:\n{state}"
        "connectors:\n"
        "  reg:\n"
        "    type: mock\n"
        "    retry: {initial_delay: 0.05, max_delay: 0.1}\n"
        "    settings:\n"
        f"      url: {mock_url}\n"
        "      timeout: 10\n"
    )
    project = Project.open(config)
    project.eventlog.append(mobile_log(households=2, members=2, updates=0))
    project.close()
    # the first push is answered after 2 s (its records committed): the first run holds the lease meanwhile
    httpx.put(f"{mock_url}/_control/faults", json={"script": [{"kind": "slow", "delay": 2, "commit": True}]})
    return config


def _start(config: Path, *extra: str) -> subprocess.Popen[str]:
    env = {**os.environ, "COLUMNS": "200", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "connector_core.cli", "run", "reg", "-c", str(config), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _both(config: Path, *extra: str) -> list[tuple[int, int, str]]:
    runs = [_start(config, *extra), _start(config, *extra)]
    results = []
    for run in runs:
        _out, err = run.communicate(timeout=60)
        results.append((run.returncode, run.pid, err))
    return results


@pytest.mark.postgres
def test_two_runs_at_once_on_one_postgres_store_one_runs_the_other_names_the_holder(
    tmp_path: Path, mock_url: str, postgres_url: str, pg_schema: str
) -> None:
    config = _project(
        tmp_path, mock_url, f"  backend: postgres\n  url: {postgres_url}\n  schema: {pg_schema}\n"
    )
    results = _both(config)
    assert sorted(code for code, _pid, _err in results) == [0, 1], results
    (winner,) = [pid for code, pid, _err in results if code == 0]
    (loser_err,) = [err for code, _pid, err in results if code == 1]
    assert re.search(
        rf"'reg' is already running \(lease held by pid {winner} on \S+ since \S+Z\)", loser_err
    ), loser_err
    assert "Traceback" not in loser_err
    pushed = httpx.get(f"{mock_url}/_control/stats").json()
    assert pushed["records"] == 6 and pushed["duplicate_creates"] == {}


@pytest.mark.postgres
@pytest.mark.slow
def test_with_wait_the_second_run_waits_for_the_first(
    tmp_path: Path, mock_url: str, postgres_url: str, pg_schema: str
) -> None:
    config = _project(
        tmp_path, mock_url, f"  backend: postgres\n  url: {postgres_url}\n  schema: {pg_schema}\n"
    )
    results = _both(config, "--wait")
    assert [code for code, _pid, _err in results] == [0, 0], results
    assert any("waiting for it" in err for _code, _pid, err in results)
    assert httpx.get(f"{mock_url}/_control/stats").json()["duplicate_creates"] == {}


def test_two_runs_at_once_on_one_sqlite_store_one_runs_the_other_names_the_holder(
    tmp_path: Path, mock_url: str
) -> None:
    config = _project(tmp_path, mock_url, "  path: state.db\n")
    results = _both(config)
    assert sorted(code for code, _pid, _err in results) == [0, 1], results
    (winner,) = [pid for code, pid, _err in results if code == 0]
    (loser_err,) = [err for code, _pid, err in results if code == 1]
    assert f"lease held by pid {winner} on " in loser_err


def test_a_sqlite_lease_names_its_holder_and_can_be_waited_for(tmp_path: Path) -> None:
    first = SqliteStateStore(tmp_path / "state.db")
    second = SqliteStateStore(tmp_path / "state.db")
    with first.lease("reg"):
        busy = rf"lease held by pid {os.getpid()} on \S+ since"
        with pytest.raises(ConnectorBusy, match=busy), second.lease("reg"):
            pass
        with second.lease("other"):
            pass

    order: list[str] = []
    held = threading.Event()

    def hold() -> None:
        with first.lease("reg"):
            held.set()
            time.sleep(0.3)
            order.append("first done")

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(5)
    with second.lease("reg", wait=True):
        order.append("second runs")
    holder.join()
    assert order == ["first done", "second runs"]
    first.close()
    second.close()


def test_a_sqlite_loser_arriving_before_the_winner_wrote_its_name_still_names_it(tmp_path: Path) -> None:
    """The winner writes its name just after it takes the lock; a loser in between waits for the name."""
    store = SqliteStateStore(tmp_path / "state.db")
    with store.lease("reg"):
        pass
    assert (tmp_path / "state.db.reg.lock").read_bytes() == b""  # a released lease names nobody
    fd = os.open(tmp_path / "state.db.reg.lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)  # a winner that holds the lock and has not written its name yet
    loser, errors = contend_for_lease(store, "reg")
    time.sleep(0.2)
    os.pwrite(
        fd,
        LeaseHolder(host="winner-host", pid=4242, started_at="2026-01-01T00:00:00.000Z").encode().encode(),
        0,
    )
    loser.join(5)
    os.close(fd)
    assert [str(e) for e in errors] == [
        "connector 'reg' is already running "
        "(lease held by pid 4242 on winner-host since 2026-01-01T00:00:00.000Z)"
    ]
    store.close()


@pytest.mark.postgres
def test_a_run_whose_postgres_lease_connection_dies_commits_nothing_more_and_fails(
    tmp_path: Path, mock_url: str, postgres_url: str, pg_schema: str
) -> None:
    """The advisory lock goes with its session: once the lease's connection is gone (a network cut, a
    server restart, an idle timeout), another process may run the connector. The run that lost it must
    not commit another batch as if it still held it: it stops, failed, naming the lease."""
    import psycopg

    config = _project(
        tmp_path, mock_url, f"  backend: postgres\n  url: {postgres_url}\n  schema: {pg_schema}\n"
    )
    run = _start(config)
    try:
        deadline = time.monotonic() + 30
        killed = 0
        while not killed and time.monotonic() < deadline:
            if not runs_in_progress(postgres_url, pg_schema, run.pid):
                time.sleep(0.02)  # not before the lease is claimed and the run begun: then it is running
                continue
            with psycopg.connect(postgres_url, autocommit=True) as conn:
                killed = len(
                    conn.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE application_name LIKE 'dcsync lease reg pid %%'"
                    ).fetchall()
                )
            time.sleep(0.05)
        assert killed, "the run never held its lease"
        _out, err = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 1, err
    assert "lease" in err and "lost" in err and "Traceback" not in err, err
    project = Project.open(config)
    try:
        (record,) = project.state.runs("reg")
        assert record.outcome == "failed" and "lease" in (record.error or ""), record
        assert record.counts.get("created", 0) == 0  # the slow first batch was not committed as ours
    finally:
        project.close()

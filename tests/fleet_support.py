"""Helpers of the worker-fleet tests: real ``dcsync worker`` processes, and which runs one of them holds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

DCSYNC = [sys.executable, "-m", "connector_core.cli"]


def dcsync_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}


@contextmanager
def fleet_workers(
    config: Path, count: int, logs: Path, cwd: Path | None = None
) -> Iterator[list[subprocess.Popen]]:
    """``count`` ``dcsync worker -c config`` processes (``w0``...), their output in ``logs/worker{n}.log``;
    on leaving, the ones still running get SIGTERM and are waited for (their return codes stay readable)."""
    handles = [open(logs / f"worker{n}.log", "w") for n in range(count)]  # noqa: SIM115
    workers = [
        subprocess.Popen(
            [*DCSYNC, "-v", "worker", "-c", str(config), "--name", f"w{n}"],
            env=dcsync_env(),
            stdout=handles[n],
            stderr=subprocess.STDOUT,
            cwd=cwd,
        )
        for n in range(count)
    ]
    try:
        yield workers
    finally:
        alive = [proc for proc in workers if proc.poll() is None]
        for proc in alive:
            proc.send_signal(signal.SIGTERM)
        for proc in alive:
            proc.wait(timeout=30)
        for handle in handles:
            handle.close()


def runs_in_progress(url: str, schema: str, pid: int) -> list[str]:
    """Runs in progress (started in run history, not finished) whose lease process ``pid`` holds."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            f"SELECT r.connector FROM {schema}.runs r JOIN {schema}.dcsync_leases l USING (connector) "
            "WHERE r.outcome = 'running' AND l.pid = %s",
            (pid,),
        ).fetchall()
    return [name for (name,) in rows]


def runs_in_progress_on(url: str, schemas: list[str], pid: int) -> list[str]:
    """:func:`runs_in_progress` across several projects' schemas, each named ``schema/connector``."""
    return [f"{schema}/{name}" for schema in schemas for name in runs_in_progress(url, schema, pid)]


def kill_inside_a_run(proc: subprocess.Popen, url: str, schemas: list[str]) -> list[str]:
    """SIGKILL ``proc`` only if it is inside a run, and name those runs (``schema/connector``); ``[]`` and
    the process left running otherwise.

    Reading run history and then killing races with the run's own close: a run that ends between the two
    leaves nothing to abandon. So the process is frozen (SIGSTOP) first, its last statements are given time
    to land, and the check runs on a history that can no longer move.
    """
    proc.send_signal(signal.SIGSTOP)
    time.sleep(0.3)  # a COMMIT already on the wire still lands after the stop
    inside = runs_in_progress_on(url, schemas, proc.pid)
    proc.send_signal(signal.SIGKILL if inside else signal.SIGCONT)
    return inside

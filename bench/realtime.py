"""Real-time latency: how long an event appended to a PostgreSQL log takes to be visible at the remote.

Two phases in one run, each on a fresh log schema and an emptied mock system (run as its own process):
``dcsync serve`` with ``realtime: true`` (LISTEN/NOTIFY, coalesced pushes), then the schedule-only baseline
(``dcsync serve`` with a push every 15 s and no real-time). Events are appended at a steady rate, one commit
each; a poller notes when each record first appears at the remote. Latency is that moment minus the
append's commit; the polling adds up to ``--poll`` seconds.

Usage: python bench/realtime.py [--rate 50] [--seconds 60] [--every 15] [--poll 0.05]
Needs PostgreSQL at ``DCSYNC_TEST_POSTGRES_URL`` (default postgresql://postgres@127.0.0.1:5432/test).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psycopg

from connector_core.events import FormSubmission
from connector_core.project import Project
from connector_core.sample import mobile_log
from connector_core.testing.server import fake_server_process, free_port

POSTGRES_URL = os.environ.get("DCSYNC_TEST_POSTGRES_URL") or "postgresql://postgres@127.0.0.1:5432/test"


def _config(workdir: Path, schema: str, fake: str, *, realtime: bool, every: float) -> Path:
    config = workdir / "dcsync.yaml"
    schedule = "" if realtime else f"    schedule:\n      - {{direction: push, every: {every:g}}}\n"
    config.write_text(
        f"eventlog:\n  backend: postgres\n  url: ${{BENCH_PG_URL}}\n  schema: {schema}\n"
        "connectors:\n  bench:\n    type: mock\n    pull: false\n    batch_size: 200\n"
        f"    realtime: {str(realtime).lower()}\n{schedule}"
        f"    settings:\n      url: {fake}\n"
    )
    return config


def _wait_listening(port: int, process: subprocess.Popen[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"dcsync serve exited: {process.stderr.read() if process.stderr else ''}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError("dcsync serve did not become ready")


def phase(
    fake: str, *, realtime: bool, rate: float, seconds: float, every: float, poll: float
) -> list[float]:
    schema = f"bench_realtime_{os.getpid()}_{'rt' if realtime else 'sched'}"
    httpx.post(f"{fake}/_control/reset").raise_for_status()
    count = int(rate * seconds)
    events: list[FormSubmission] = list(
        mobile_log(households=count, members=0, updates=0, seed=11 if realtime else 12)
    )[:count]
    appended: dict[str, float] = {}
    seen: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        config = _config(Path(tmp), schema, fake, realtime=realtime, every=every)
        env = {**os.environ, "BENCH_PG_URL": POSTGRES_URL}
        os.environ["BENCH_PG_URL"] = POSTGRES_URL
        project = Project.open(config)  # lays the log out before the server starts watching it
        port = free_port()
        serve = subprocess.Popen(
            [sys.executable, "-m", "connector_core.cli", "serve", "--port", str(port), "-c", str(config)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        done = threading.Event()

        def observe() -> None:
            with httpx.Client(base_url=fake, timeout=30) as client:
                while not done.is_set():
                    now = time.monotonic()
                    for record in client.get("/_control/records").json():
                        seen.setdefault(record["entityGuid"], now)
                    if len(seen) >= count:
                        return
                    time.sleep(poll)

        try:
            _wait_listening(port, serve)
            observer = threading.Thread(target=observe, daemon=True)
            observer.start()
            start = time.monotonic()
            for index, event in enumerate(events):
                pause = start + index / rate - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                project.eventlog.append([event])
                appended[event.entity_guid] = time.monotonic()
            observer.join(timeout=every + 60)
            done.set()
        finally:
            serve.terminate()
            serve.wait(timeout=60)
            project.close()
            with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    missing = [guid for guid in appended if guid not in seen]
    if missing:
        raise RuntimeError(f"{len(missing)} records never reached the remote")
    return [seen[guid] - at for guid, at in appended.items()]


def _row(name: str, latencies: list[float]) -> str:
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    p50, p95, p99 = cuts[49], cuts[94], cuts[98]
    return f"{name:<22} {len(latencies):>7} {p50:>8.3f} {p95:>8.3f} {p99:>8.3f} {max(latencies):>8.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rate", type=float, default=50.0, help="events appended per second")
    parser.add_argument("--seconds", type=float, default=60.0, help="seconds of appending, per phase")
    parser.add_argument("--every", type=float, default=15.0, help="the baseline's schedule, seconds")
    parser.add_argument("--poll", type=float, default=0.05, help="seconds between looks at the remote")
    args = parser.parse_args()
    try:
        psycopg.connect(POSTGRES_URL, connect_timeout=3).close()
    except psycopg.Error as exc:
        raise SystemExit(f"PostgreSQL is unreachable: {str(exc).splitlines()[0]}") from None
    with fake_server_process("mock") as fake:
        realtime = phase(
            fake, realtime=True, rate=args.rate, seconds=args.seconds, every=args.every, poll=args.poll
        )
        baseline = phase(
            fake, realtime=False, rate=args.rate, seconds=args.seconds, every=args.every, poll=args.poll
        )
    print(f"append -> visible at the mock system, {args.rate:g} events/s for {args.seconds:g} s per phase")
    print(f"{'mode':<22} {'events':>7} {'p50 s':>8} {'p95 s':>8} {'p99 s':>8} {'max s':>8}")
    print(_row("dcsync serve realtime", realtime))
    print(_row(f"schedule every {args.every:g}s", baseline))
    goal = statistics.quantiles(realtime, n=100, method="inclusive")[94]
    print(f"goal p95 <= 1 s: {'met' if goal <= 1.0 else 'NOT met'} ({goal:.3f} s)")


if __name__ == "__main__":
    main()

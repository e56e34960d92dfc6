"""Acceptance: a fleet of ``dcsync worker`` processes on the real PostgreSQL, one of them SIGKILLed mid-run.

Three workers serve 20 connectors of 4 projects (registered by name) on periodic schedules of 2, 3 and 5 s,
push and pull, against 20 mock systems (one per connector, so each remote's records can be counted
exactly), for 60 s while events are appended to the logs and records are created on the remotes. One worker
is SIGKILLed while one of its runs is in progress (started in run history, its lease held). Judged on the
databases, not on logs: no job failed and none is left doing (the killed one was retried and succeeded; a
tick that waited behind it is ``cancelled`` as superseded), the killed run is ``abandoned`` in run history,
no connector's runs overlap, and every remote holds each entity of its project's log exactly once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import psycopg
import pytest
from fleet_support import fleet_workers, kill_inside_a_run, runs_in_progress_on

from connector_core.project import Project
from connector_core.sample import mobile_log
from connector_core.testing.server import serve
from connectors.mock.server import create_app

pytest.importorskip("procrastinate", reason="needs the workers extra: pip install 'dcsync[workers]'")

PROJECTS = 4
CONNECTORS = 5
WORKERS = 3
SERVE_SECONDS = 60
SCHEDULES = (
    "[{direction: both, every: 2s}]",
    "[{direction: push, every: 3s}, {direction: pull, every: 5s}]",
    "[{direction: both, every: 5s}]",
    "[{direction: push, every: 2s}, {direction: pull, every: 3s}]",
    "[{direction: both, every: 3s}]",
)


def _project_file(path: Path, url: str, schema: str, fakes: list[str]) -> Path:
    lines = [
        f"eventlog: {{backend: postgres, url: {url}, schema: {schema}}}",
        f"state: {{backend: postgres, url: {url}, schema: {schema}}}",
        "scheduler: {engine: procrastinate}",
        "connectors:",
    ]
    for index, fake in enumerate(fakes):
        lines += [
            f"  reg{index}:",
            "    type: mock",
            "    batch_size: 5",
            "    page_size: 20",
            f"    schedule: {SCHEDULES[index % len(SCHEDULES)]}",
            f"    settings: {{url: '{fake}', timeout: 10}}",
        ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def _append(config: Path, seed: int, households: int = 2) -> None:
    project = Project.open(config)
    try:
        project.eventlog.append(mobile_log(households=households, members=2, updates=1, seed=seed))
    finally:
        project.close()


def _no_overlap(connector: str, runs: list) -> None:
    spans = sorted((r.started_at, r.finished_at) for r in runs)
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        assert end is not None and end <= start, (
            f"{connector}: runs overlap: one ended {end}, next began {start}"
        )


@pytest.mark.slow
@pytest.mark.postgres
def test_three_workers_serve_twenty_connectors_and_survive_a_sigkill(
    tmp_path: Path, postgres_url: str, pg_schema: str
) -> None:
    started = time.monotonic()
    queue_schema = f"{pg_schema}_q"
    with ExitStack() as stack:
        fakes = [
            [stack.enter_context(serve(create_app())).url for _ in range(CONNECTORS)] for _ in range(PROJECTS)
        ]
        clients = [[stack.enter_context(httpx.Client(base_url=u, timeout=10)) for u in row] for row in fakes]
        for row in clients:
            for client in row:  # a run then lasts long enough to be killed in the middle of one
                client.put("/_control/faults", json={"latency": 0.05}).raise_for_status()
        schemas = [f"{pg_schema}_p{i}" for i in range(PROJECTS)]
        configs = [
            _project_file(tmp_path / f"p{i}" / "dcsync.yaml", postgres_url, schemas[i], fakes[i])
            for i in range(PROJECTS)
        ]
        registry = tmp_path / "projects.yaml"
        registry.write_text("projects:\n" + "".join(f"  p{i}: p{i}/dcsync.yaml\n" for i in range(PROJECTS)))
        fleet = tmp_path / "fleet.yaml"
        fleet.write_text(
            f"workers: {{postgres: '{postgres_url}', schema: {queue_schema}, concurrency: 4, "
            "projects: projects.yaml, heartbeat: 1, stalled_after: 4, busy_retry: 1}\n"
        )
        for i, config in enumerate(configs):
            _append(config, seed=100 + i, households=4)

        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        dcsync = [sys.executable, "-m", "connector_core.cli"]
        init = subprocess.run(
            [*dcsync, "queue", "init", "-c", str(fleet)], env=env, capture_output=True, text=True
        )
        assert init.returncode == 0 and "installed" in init.stdout, init.stderr
        with fleet_workers(fleet, WORKERS, tmp_path, cwd=tmp_path) as workers:
            victim = workers[0]
            killed_at = None
            killed_runs: list[str] = []
            seed = 200
            deadline = time.monotonic() + SERVE_SECONDS
            while time.monotonic() < deadline:
                time.sleep(0.25)
                warm = time.monotonic() > deadline - SERVE_SECONDS + 10
                if killed_at is None and warm and runs_in_progress_on(postgres_url, schemas, victim.pid):
                    killed_runs = kill_inside_a_run(victim, postgres_url, schemas)
                    if killed_runs:
                        killed_at = time.monotonic()
                if int(time.monotonic() * 4) % 12 == 0:  # every ~3 s: new local events and remote records
                    seed += 1
                    _append(configs[seed % PROJECTS], seed=seed)
                    client = clients[seed % PROJECTS][seed % CONNECTORS]
                    client.post("/_control/records", json={"entityName": "individual", "data": {"n": seed}})
            assert killed_at is not None, "the victim worker never held a lease during the test"
            assert victim.wait(timeout=5) == -signal.SIGKILL

            # Quiescence: the fleet (not the test) brings every remote level with its project's log.
            def level() -> bool:
                for i, config in enumerate(configs):
                    project = Project.open(config)
                    try:
                        entities = sum(1 for _ in project.eventlog.iter_entities())
                    finally:
                        project.close()
                    if any(len(c.get("/_control/records").json()) != entities for c in clients[i]):
                        return False
                return True

            settle = time.monotonic() + 40
            while not level():
                assert time.monotonic() < settle, "the remotes did not converge with the logs"
                time.sleep(1)
            time.sleep(6)  # the killed job has long been retried; let jobs in flight finish
        for proc in workers[1:]:
            assert proc.returncode == 0, (tmp_path / "worker1.log").read_text()[-3000:]

        # every job completed: none failed, none stuck on the dead worker
        with psycopg.connect(postgres_url) as conn:
            states = dict(
                conn.execute(
                    f"SELECT status::text, count(*) FROM {queue_schema}.procrastinate_jobs GROUP BY status"
                ).fetchall()
            )
            retried = conn.execute(
                f"SELECT count(*) FROM {queue_schema}.procrastinate_jobs WHERE attempts > 1 "
                "AND status = 'succeeded'"
            ).fetchone()
        assert states.get("failed", 0) == 0 and states.get("doing", 0) == 0, states
        assert states["succeeded"] > 100, states
        assert retried is not None and retried[0] >= 1, "the killed worker's job was not retried"

        abandoned: set[str] = set()
        for i, config in enumerate(configs):
            project = Project.open(config)
            try:
                entities = {e.guid for e in project.eventlog.iter_entities()}
                for c in range(CONNECTORS):
                    name = f"reg{c}"
                    runs = project.state.runs(name, limit=10_000)
                    assert runs, f"p{i}/{name} never ran"
                    _no_overlap(f"p{i}/{name}", runs)
                    # the last run may have been stopped by the final SIGTERM, at its batch boundary
                    outcomes = {r.outcome for r in runs[1:]} | (
                        {"ok"} if runs[0].outcome == "interrupted" else {runs[0].outcome}
                    )
                    assert outcomes <= {"ok", "abandoned"}, (name, [(r.outcome, r.error) for r in runs])
                    if any(r.outcome == "abandoned" for r in runs):
                        abandoned.add(f"{schemas[i]}/{name}")
                    records = clients[i][c].get("/_control/records").json()
                    refs = [r["entityGuid"] for r in records if r.get("entityGuid")]
                    assert len(refs) == len(set(refs)), f"p{i}/{name}: a record was created twice"
                    assert len(records) == len(entities), (f"p{i}/{name}", len(records), len(entities))
                    assert clients[i][c].get("/_control/stats").json()["duplicate_creates"] == {}
            finally:
                project.close()
        assert set(killed_runs) <= abandoned, f"killed inside {killed_runs}; abandoned: {sorted(abandoned)}"
    print(f"fleet acceptance took {time.monotonic() - started:.0f}s")  # noqa: T201

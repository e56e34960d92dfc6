"""Issue 19 acceptance: a 2,000-household bulk load into the fake OpenSPP in 4 shards on 2 local processes,
one process SIGKILLed mid-shard, then run again: every household and individual exactly once, memberships
right, the push checkpoint at the snapshot mark, and a following push sends nothing. Through the CLI, as an
operator runs it, with the state store in SQLite and in the real PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml
from fleet_support import fleet_workers, kill_inside_a_run
from test_openspp_sync import MAPPING, assert_mirrors, partner_ids, rows

from connector_core.project import Project
from connector_core.state.base import Direction
from connector_core.sync.bulk import shard_name
from connector_core.sync.runner import run_connector
from connectors.openspp.fake import DATABASE, FakeOpenSpp
from connectors.openspp.sample import registry_log

HOUSEHOLDS = 2000


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found.extend(int(p) for p in text)
    return found


def _pool_workers(pid: int) -> list[int]:
    """The spawned shard processes of a ``bulk-load --local`` (not multiprocessing's resource tracker)."""
    workers = []
    for child in _children(pid):
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "multiprocessing" in cmdline and "resource_tracker" not in cmdline:
            workers.append(child)
    return workers


def _config(directory: Path, url: str, state: dict[str, str] | None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    connector = {
        "type": "openspp",
        "mapping": str(MAPPING),
        "batch_size": 100,
        "page_size": 500,
        "settings": {
            "url": url,
            "database": DATABASE,
            "username": "registrar",
            "password": "registrar",
            "timeout": 10.0,
            "lag_seconds": 60.0,
        },
    }
    config: dict[str, object] = {"connectors": {"reg": connector}}
    if state is not None:
        config["state"] = state
    path = directory / "dcsync.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(params=["sqlite", "postgres"])
def state_config(request: pytest.FixtureRequest) -> dict[str, str] | None:
    if request.param == "sqlite":
        return None
    url = request.getfixturevalue("postgres_url")
    schema = request.getfixturevalue("pg_schema")
    return {"backend": "postgres", "url": url, "schema": schema}


def _assert_loaded_once(fake: FakeOpenSpp, config: Path, local: set[str], mark: str | None) -> None:
    """Exact on the registry: one partner per entity, each membership once and in the right household;
    the push checkpoint at the mark, nothing left pending, and a following push sends nothing."""
    ids = partner_ids(fake)
    assert set(ids) == set(local)
    partners = [p for p in rows(fake, "res.partner") if p.get("is_registrant")]
    assert len(partners) == len(local) and len({p["id"] for p in partners}) == len(local)
    memberships = [m for m in rows(fake, "g2p.group.membership") if not m["ended_date"]]
    assert len(memberships) == 2 * HOUSEHOLDS
    assert max(Counter(m["individual"] for m in memberships).values()) == 1
    project = Project.open(config)
    try:
        assert_mirrors(fake, project)
        state = project.state
        assert state.get_checkpoint("reg", Direction.PUSH) == mark
        assert state.open_bulk_plan("reg") is None
        assert state.intents("reg") == set() and state.dead_letters("reg") == []
        assert {link.entity_guid: int(link.external_id) for link in state.iter_links("reg")} == ids
        follow = run_connector(project, "reg", pull=False)
        assert follow.ok and follow.push is not None
        sent = follow.push.counts
        assert (sent.read, sent.created, sent.updated, sent.deleted) == (0, 0, 0, 0), sent
    finally:
        project.close()


@pytest.mark.slow
def test_two_thousand_households_in_four_shards_with_a_killed_worker_arrive_exactly_once(
    tmp_path: Path, url: str, fake: FakeOpenSpp, state_config: dict[str, str] | None
) -> None:
    config = _config(tmp_path / "field", url, state_config)
    project = Project.open(config)
    try:
        project.eventlog.append(registry_log(households=HOUSEHOLDS, members=2, seed=19))
        local = {e.guid: e for e in project.eventlog.iter_entities()}
        mark = project.eventlog.head()
    finally:
        project.close()
    assert len(local) == 3 * HOUSEHOLDS

    command = [sys.executable, "-m", "connector_core.cli", "bulk-load", "reg", "--shards", "4", "--local"]
    command += ["--processes", "2", "-c", str(config)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # kill one shard process once the registry holds a fair part of the load, with batches in flight
    deadline = time.monotonic() + 300
    killed = None
    while killed is None and first.poll() is None and time.monotonic() < deadline:
        if len(rows(fake, "res.partner")) >= len(local) // 4:
            workers = _pool_workers(first.pid)
            if workers:
                killed = workers[0]
                os.kill(killed, signal.SIGKILL)
                break
        time.sleep(0.05)
    out, err = first.communicate(timeout=300)
    assert killed is not None, f"no shard process was killed mid-load: {err}"
    assert first.returncode != 0, "the killed load must not claim to be finished"
    assert "run the bulk load again" in err or "not done" in err, err
    assert len(rows(fake, "res.partner")) < len(local), "the kill landed before the end"

    project = Project.open(config)
    try:
        plan = project.state.open_bulk_plan("reg")
        assert plan is not None and plan.mark == mark
        assert project.state.get_checkpoint("reg", Direction.PUSH) is None, "not moved while shards remain"
    finally:
        project.close()

    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert f"finished; the push checkpoint is at the snapshot mark {mark}" in again.stdout

    # each shard ran as a run of its own name; the killed one shows as not ok before its rerun
    project = Project.open(config)
    try:
        runs = project.state.runs(limit=100)
    finally:
        project.close()
    assert {r.connector for r in runs} == {shard_name("reg", k) for k in range(4)}
    assert any(r.outcome in ("abandoned", "failed", "interrupted") for r in runs)
    _assert_loaded_once(fake, config, set(local), mark)


@pytest.mark.slow
@pytest.mark.postgres
def test_a_bulk_load_on_two_fleet_workers_survives_one_killed_mid_shard(
    tmp_path: Path, url: str, fake: FakeOpenSpp, postgres_url: str, pg_schema: str
) -> None:
    """The same load deferred to the worker fleet: `dcsync bulk-load` queues the shards, two `dcsync worker`
    processes run them, one is SIGKILLed inside a shard; another worker retries its stalled job, the last
    shard to end queues the final job, and the registry holds every record exactly once."""
    pytest.importorskip("procrastinate", reason="needs the workers extra: pip install 'dcsync[workers]'")
    import psycopg

    queue_schema = f"{pg_schema}_q"
    config = _config(
        tmp_path / "field", url, {"backend": "postgres", "url": postgres_url, "schema": pg_schema}
    )
    with config.open("a") as handle:
        handle.write(
            f"workers: {{postgres: '{postgres_url}', schema: {queue_schema}, concurrency: 2, heartbeat: 1, "
            "stalled_after: 4, busy_retry: 1}\n"
        )
    project = Project.open(config)
    try:
        project.eventlog.append(registry_log(households=HOUSEHOLDS, members=2, seed=23))
        local = {e.guid for e in project.eventlog.iter_entities()}
        mark = project.eventlog.head()
    finally:
        project.close()

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    dcsync = [sys.executable, "-m", "connector_core.cli"]
    init = subprocess.run(
        [*dcsync, "queue", "init", "-c", str(config)], env=env, capture_output=True, text=True
    )
    assert init.returncode == 0, init.stderr
    deferred = subprocess.run(
        [*dcsync, "bulk-load", "reg", "--shards", "4", "-c", str(config)],
        env=env,
        capture_output=True,
        text=True,
    )
    assert deferred.returncode == 0, deferred.stderr
    assert "4 shard job(s)" in deferred.stdout, deferred.stdout
    with fleet_workers(config, 2, tmp_path) as workers:
        victim = workers[0]
        deadline = time.monotonic() + 300
        killed = False
        while not killed and time.monotonic() < deadline:
            if len(rows(fake, "res.partner")) >= len(local) // 4:
                killed = bool(kill_inside_a_run(victim, postgres_url, [pg_schema]))  # inside a shard
            time.sleep(0.05)
        assert killed, "the victim worker never ran a shard"
        assert victim.wait(timeout=10) == -signal.SIGKILL
        assert len(rows(fake, "res.partner")) < len(local), "the kill landed before the end"

        def finished() -> bool:
            project = Project.open(config)
            try:
                return project.state.open_bulk_plan("reg") is None
            finally:
                project.close()

        while not finished():
            assert time.monotonic() < deadline, (tmp_path / "worker1.log").read_text()[-3000:]
            time.sleep(0.5)

        def queue_jobs() -> list[tuple[str, str, int]]:
            with psycopg.connect(postgres_url) as conn:
                return conn.execute(
                    f"SELECT task_name, status::text, attempts FROM {queue_schema}.procrastinate_jobs"
                ).fetchall()

        # a shard that ended while the first final job ran queued one more (at most one waits, see
        # bulk_tasks.py); it finds the plan closed and does nothing, but the workers must drain it
        jobs = queue_jobs()
        while any(status in ("todo", "doing") for _task, status, _n in jobs):
            assert time.monotonic() < deadline, jobs
            time.sleep(0.5)
            jobs = queue_jobs()

    assert {status for _task, status, _n in jobs} <= {"succeeded", "cancelled"}, jobs
    assert sorted(t for t, s, _n in jobs if t == "bulk_shard" and s == "succeeded") == ["bulk_shard"] * 4
    assert any(t == "bulk_shard" and n > 1 for t, _s, n in jobs), "the killed shard's job was not retried"
    assert any(t == "bulk_finish" and s == "succeeded" for t, s, _n in jobs), jobs

    project = Project.open(config)
    try:
        outcomes = {r.outcome for r in project.state.runs(limit=100)}
    finally:
        project.close()
    assert "abandoned" in outcomes, f"the killed shard run is not shown: {outcomes}"
    _assert_loaded_once(fake, config, local, mark)

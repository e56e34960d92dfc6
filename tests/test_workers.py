"""The worker fleet's parts: lock keys and lanes, schedules as periodic tasks, config errors, the project
registry and cache, the queue commands (on the real PostgreSQL where a queue is involved)."""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg
import pytest
from typer.testing import CliRunner

from connector_core.cli import app
from connector_core.config import ConfigError, ScheduleConfig, load_config
from connector_core.scheduler import ScheduledJob
from connector_core.workers.lanes import connector_key, lane_of, queueing_lock, run_lock
from connector_core.workers.periodic import PeriodicError, cron_of, periodic_runs
from connector_core.workers.projects import ProjectCache, ProjectRegistry, use_registry

procrastinate = pytest.importorskip("procrastinate", reason="needs the workers extra")


def _project(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body)
    return path


TARGETED = """\
scheduler: {engine: procrastinate}
targets:
  registry: {max_writers: 2}
connectors:
  a: {type: mock, target: registry, schedule: [{direction: push, every: 5s}], settings: {url: 'http://x'}}
  b: {type: mock, target: registry, schedule: [{direction: both, every: 15m}], settings: {url: 'http://x'}}
  c: {type: mock, target: registry, settings: {url: 'http://x'}}
  d: {type: mock, target: registry, settings: {url: 'http://x'}}
  free: {type: mock, schedule: [{direction: pull, cron: '0 2 * * *'}], settings: {url: 'http://x'}}
"""


# -- locks and lanes ------------------------------------------------------------------------------------


def test_a_connector_without_target_is_locked_on_its_own_key(tmp_path: Path) -> None:
    loaded = load_config(_project(tmp_path / "dcsync.yaml", TARGETED))
    assert (
        run_lock("tenant-a", loaded, "free") == connector_key("tenant-a", "free") == "connector:tenant-a:free"
    )
    assert queueing_lock("tenant-a", "free", "pull") == "connector:tenant-a:free:pull"


def test_a_target_s_connectors_share_its_lanes_evenly_and_each_keeps_one(tmp_path: Path) -> None:
    loaded = load_config(_project(tmp_path / "dcsync.yaml", TARGETED))
    locks = {name: run_lock("tenant-a", loaded, name) for name in "abcd"}
    assert set(locks.values()) == {"target:registry:0", "target:registry:1"}  # N = 2 lanes, both used
    assert sorted(list(locks.values()).count(lock) for lock in set(locks.values())) == [2, 2]
    # stable: the same lane every time, on every machine (no per-process hash seed)
    assert {name: run_lock("tenant-a", loaded, name) for name in "abcd"} == locks
    lanes = {p: lane_of(p, loaded, "a") for p in ("t1", "t2", "t3", "t4", "t5", "t6")}
    assert {lane[1] for lane in lanes.values() if lane is not None} == {
        0,
        1,
    }  # projects start on different lanes


def test_bulk_shards_spread_over_their_target_s_lanes_or_lock_alone(tmp_path: Path) -> None:
    from connector_core.workers.bulk_tasks import finish_lock, shard_lock, shard_queueing_lock

    loaded = load_config(_project(tmp_path / "dcsync.yaml", TARGETED))
    # on a target: shard k writes on lane k mod max_writers, so a bulk load never passes the cap
    assert [shard_lock("t", loaded, "a", "p1", k) for k in range(4)] == [
        "target:registry:0",
        "target:registry:1",
        "target:registry:0",
        "target:registry:1",
    ]
    # without one: a lock per shard (a rerun or a stalled job's retry never runs a shard twice at once)
    free = {shard_lock("t", loaded, "free", "p1", k) for k in range(4)}
    assert free == {f"connector:t:free:bulk:p1:{k}" for k in range(4)}
    assert len({shard_queueing_lock("t", "a", "p1", k) for k in range(4)} | free) == 8
    assert finish_lock("t", "a", "p1") != finish_lock("t", "a", "p2")


@pytest.mark.postgres
def test_the_engine_runs_at_most_max_writers_jobs_of_a_target_at_once(
    tmp_path: Path, postgres_url: str, pg_schema: str
) -> None:
    """Four connectors on a target with two lanes: the queue hands out two jobs, then nothing until one
    of them finishes; the other connector's job is not held up."""
    import asyncio

    from connector_core.workers.app import build_app, init_schema, queue_settings
    from connector_core.workers.tasks import defer_job

    loaded = load_config(_project(tmp_path / "dcsync.yaml", TARGETED))
    settings = queue_settings(None, postgres=postgres_url, schema=pg_schema)
    init_schema(settings)
    queue = build_app(settings)
    with queue.open():
        for name in ("a", "b", "c", "d", "free"):
            job = defer_job(
                queue,
                "run",
                lock=run_lock("t", loaded, name),
                queueing_lock=queueing_lock("t", name, "both"),
                project="t",
                connector=name,
                direction="both",
            )
            assert job is not None

    async def fetch_all() -> list[str]:
        async with queue.open_async():
            worker_id = await queue.job_manager.register_worker()
            taken = []
            while (job := await queue.job_manager.fetch_job(None, worker_id)) is not None:
                taken.append(job)
            names = [job.task_kwargs["connector"] for job in taken]
            await queue.job_manager.finish_job(taken[0], procrastinate.jobs.Status.SUCCEEDED, False)
            after = await queue.job_manager.fetch_job(None, worker_id)
            assert after is not None and after.lock == taken[0].lock  # the freed lane, to the next in line
            return names

    names = asyncio.run(fetch_all())
    assert sorted(names) == ["a", "b", "free"]  # a and b hold the two lanes; c and d wait behind them


# -- schedules as periodic tasks -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("every", "cron"),
    [("2s", "* * * * * */2"), ("30s", "* * * * * */30"), ("15m", "*/15 * * * *"), ("6h", "0 */6 * * *")],
)
def test_intervals_become_cron_firing_on_the_embedded_scheduler_s_ticks(every: str, cron: str) -> None:
    import croniter

    schedule = ScheduleConfig(every=every)
    assert cron_of(schedule) == cron
    job = ScheduledJob("reg", "push", schedule)
    start = datetime(2026, 5, 1, 10, 7, 59, tzinfo=UTC)
    fired = croniter.croniter(cron, start).get_next(datetime)
    assert job.tick_at(fired) == fired  # every periodic fire time is a tick of the embedded scheduler


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        (ScheduleConfig(every="7s"), "every: 7s cannot be fired by the procrastinate engine"),
        (ScheduleConfig(every="90s"), "cannot be fired"),
        (ScheduleConfig(every="10s", jitter=2), "jitter is not supported"),
        (ScheduleConfig(cron="0 2 * * *", timezone="Africa/Nairobi"), "reads cron in UTC"),
    ],
)
def test_schedules_a_periodic_task_cannot_fire_are_refused(schedule: ScheduleConfig, message: str) -> None:
    with pytest.raises(PeriodicError, match=message):
        cron_of(schedule)


def test_each_schedule_is_one_periodic_run_with_its_connector_s_locks(tmp_path: Path) -> None:
    loaded = load_config(_project(tmp_path / "dcsync.yaml", TARGETED))
    runs = {run.periodic_id: run for run in periodic_runs("t", loaded)}
    assert set(runs) == {"t:a:push:0", "t:b:both:0", "t:free:pull:0"}
    assert runs["t:free:pull:0"].cron == "0 2 * * *"
    assert runs["t:free:pull:0"].lock == "connector:t:free"
    assert runs["t:a:push:0"].lock.startswith("target:registry:")
    assert runs["t:a:push:0"].queueing_lock == "connector:t:a:push"
    embedded = load_config(
        _project(tmp_path / "e" / "dcsync.yaml", TARGETED.replace("procrastinate", "embedded"))
    )
    assert periodic_runs("t", embedded) == []  # the embedded scheduler's projects are left to it


# -- config errors with their line -----------------------------------------------------------------------


def test_config_errors_name_file_line_and_key(tmp_path: Path) -> None:
    path = _project(
        tmp_path / "dcsync.yaml",
        "scheduler: {engine: procrastinate}\n"
        "workers: {heartbeat: 10, stalled_after: 5}\n"
        "targets: {registry: {max_writers: 2}}\n"
        "connectors:\n"
        "  a:\n"
        "    type: mock\n"
        "    target: registri\n"
        "    schedule:\n"
        "      - {direction: push, every: 7s}\n",
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    (problem,) = caught.value.problems
    reason = "stalled_after must be at least twice heartbeat (or a live worker looks dead)"
    assert problem == f"{path}:2:10: workers: {reason}"
    path.write_text(path.read_text().replace("stalled_after: 5", "stalled_after: 30"))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.problems[0] == (
        f"{path}:7:13: connectors.a.target: no target named 'registri' under targets: (configured: registry)"
    )
    assert caught.value.problems[1].startswith(
        f"{path}:9:9: connectors.a.schedule.0: every: 7s cannot be fired by the procrastinate engine"
    )
    assert len(caught.value.problems) == 2


# -- project registry and cache -------------------------------------------------------------------------


def test_the_registry_resolves_names_and_paths_to_one_key(tmp_path: Path) -> None:
    config = _project(tmp_path / "a" / "dcsync.yaml", "connectors: {}\n")
    registry_file = _project(tmp_path / "projects.yaml", "projects:\n  tenant-a: a/dcsync.yaml\n")
    registry = ProjectRegistry.load(registry_file)
    assert registry.resolve("tenant-a").path == config.resolve()
    assert registry.resolve(str(config)).key == "tenant-a"  # named by path, still keyed by its name
    assert registry.resolve(str(tmp_path / "a")).key == "tenant-a"  # a directory means its dcsync.yaml
    other = _project(tmp_path / "b" / "dcsync.yaml", "connectors: {}\n")
    assert registry.resolve(str(other)).key == str(other.resolve())
    with pytest.raises(ConfigError, match=r"project 'tenant-z': no such registered name in .*projects.yaml"):
        registry.resolve("tenant-z")


def test_registry_errors_name_their_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    registry_file = _project(tmp_path / "projects.yaml", "projects:\n  a: nowhere/dcsync.yaml\n  'b c': x\n")
    with pytest.raises(ConfigError) as caught:
        ProjectRegistry.load(registry_file)
    assert (
        caught.value.problems[0]
        == f"{registry_file}:2:6: projects.a: {tmp_path}/nowhere/dcsync.yaml does not exist"
    )
    assert caught.value.problems[1].startswith(f"{registry_file}:3:10: projects.b c: a name is letters")
    monkeypatch.setenv("DCSYNC_PROJECTS", str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match="missing.yaml: no such project registry file"):
        ProjectRegistry.load(None)


def test_the_cache_lends_a_project_to_one_job_at_a_time_and_reopens_a_changed_one(tmp_path: Path) -> None:
    config = _project(tmp_path / "dcsync.yaml", "connectors: {}\n")
    cache = ProjectCache()
    try:
        with cache.borrow(str(config)) as (_ref, first), cache.borrow(str(config)) as (_ref, second):
            assert second is not first  # two jobs at once: two projects (stores are not shared)
        with cache.borrow(str(config)) as (_ref, again):
            assert again in (first, second)  # kept open for the next job
        time.sleep(0.01)
        config.write_text("connectors: {}\n# changed\n")
        with cache.borrow(str(config)) as (_ref, fresh):
            assert fresh not in (first, second)
    finally:
        cache.close()


def test_a_job_refused_for_a_busy_connector_gives_its_project_back_open(tmp_path: Path) -> None:
    """A busy lease is the normal answer while another worker runs the connector: the job is retried in a
    second, and reopening the project (config, plugins, two store connections) each time was waste."""
    from connector_core.state.lease import ConnectorBusy

    config = _project(tmp_path / "dcsync.yaml", "connectors: {}\n")
    cache = ProjectCache()
    try:
        with pytest.raises(ConnectorBusy), cache.borrow(str(config)) as (_ref, first):
            raise ConnectorBusy("reg", None)
        with cache.borrow(str(config)) as (_ref, again):
            assert again is first
            again.state.runs(limit=1)  # and it still works
        with pytest.raises(RuntimeError), cache.borrow(str(config)) as (_ref, broken):
            raise RuntimeError("a store error mid-job")
        with cache.borrow(str(config)) as (_ref, fresh):
            assert fresh is not broken  # anything else: closed, never lent again
    finally:
        cache.close()


# -- the run task's retry policy --------------------------------------------------------------------------


def test_a_busy_connector_is_retried_later_and_a_failed_run_is_not(tmp_path: Path) -> None:
    from connector_core.state.lease import ConnectorBusy
    from connector_core.workers.app import build_app, queue_settings
    from connector_core.workers.tasks import RunFailed

    settings = queue_settings(None, postgres="postgresql://nobody@127.0.0.1:1/none", schema="q")
    task = build_app(settings).tasks["run"]
    job = procrastinate.jobs.Job(
        id=1, queue="default", lock=None, queueing_lock=None, task_name="run", attempts=500
    )
    strategy = task.retry_strategy
    assert strategy is not None
    decision = strategy.get_retry_exception(exception=ConnectorBusy("reg", None), job=job)
    assert decision is not None  # however many times it found the connector busy
    assert strategy.get_retry_exception(exception=RunFailed("reg: run 3 failed"), job=job) is None


def test_a_run_job_during_a_bulk_load_is_skipped_with_its_reason_not_failed(
    tmp_path: Path, mock_server: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A periodic push of a connector whose bulk load is open waits for the shards: the job succeeds as
    skipped (with the reason) instead of filling ``dcsync queue list --state failed`` for the whole load."""
    from sync_support import write_config

    from connector_core.project import Project
    from connector_core.sample import mobile_log
    from connector_core.sync.bulk import plan_bulk_load
    from connector_core.workers import projects
    from connector_core.workers.tasks import run_job

    config = write_config(tmp_path / "dcsync.yaml", str(mock_server.base_url))
    project = Project.open(config)
    try:
        project.eventlog.append(mobile_log(households=3, members=1, seed=1))
        plan = plan_bulk_load(project, "reg", 2)
    finally:
        project.close()
    cache = projects.ProjectCache()
    monkeypatch.setattr(projects, "_cache", cache)
    job = procrastinate.jobs.Job(
        id=7, queue="default", lock=None, queueing_lock=None, task_name="run", attempts=0
    )
    reason = f"bulk load {plan.id} in progress: pushes resume from its mark when it finishes"
    try:
        assert run_job(job, str(config), "reg", "push", int(time.time())) == {"skipped": reason}
        both = run_job(job, str(config), "reg", "both", None)
        assert both["push_skipped"] == reason and isinstance(both["run_id"], int)
    finally:
        cache.close()


# -- the commands -----------------------------------------------------------------------------------------


def test_without_the_extra_the_commands_say_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "procrastinate", None)  # as if not installed: import fails
    monkeypatch.chdir(tmp_path)
    for command in (["worker"], ["queue", "init", "--postgres", "postgresql://x@127.0.0.1/db"]):
        result = CliRunner().invoke(app, command)
        assert result.exit_code == 2, result.output
        assert (
            result.stderr.strip()
            == "error: the worker fleet needs procrastinate: pip install 'dcsync[workers]'"
        )


def test_the_embedded_scheduler_refuses_a_project_the_fleet_schedules(tmp_path: Path) -> None:
    config = _project(tmp_path / "dcsync.yaml", TARGETED)
    result = CliRunner().invoke(app, ["schedule", "run", "-c", str(config)])
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"error: {config.resolve()}:1:21: scheduler.engine: this project's schedules are fired by the worker "
        "fleet (`dcsync worker`, docs/scale-out.md), not `schedule run`"
    )


def test_queue_commands_refuse_bad_input_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["queue", "list"])
    assert result.exit_code == 1
    assert result.stderr.strip().startswith("error: no queue database: set workers.postgres in dcsync.yaml")
    result = CliRunner().invoke(app, ["queue", "list", "--state", "done"])
    assert result.exit_code == 2 and "--state must be one of todo, doing, succeeded" in result.stderr
    result = CliRunner().invoke(app, ["queue", "defer", "reg", "--direction", "sideways"])
    assert result.exit_code == 2 and "--direction must be push, pull or both" in result.stderr


@pytest.mark.postgres
def test_queue_init_is_idempotent_and_refuses_a_newer_schema(
    tmp_path: Path, postgres_url: str, pg_schema: str
) -> None:
    url = postgres_url
    first = CliRunner().invoke(app, ["queue", "init", "--postgres", url, "-c", "none.yaml"])
    assert first.exit_code == 2  # an explicit --config that does not exist is an error, not ignored
    fleet = _project(tmp_path / "dcsync.yaml", f"workers: {{postgres: '{url}', schema: {pg_schema}}}\n")
    result = CliRunner().invoke(app, ["queue", "init", "-c", str(fleet)])
    assert result.exit_code == 0 and "queue schema installed" in result.stdout
    result = CliRunner().invoke(app, ["queue", "init", "-c", str(fleet)])
    assert result.exit_code == 0 and "queue schema up to date" in result.stdout
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"UPDATE {pg_schema}.dcsync_queue_version SET version = '99.0.0'")
    result = CliRunner().invoke(app, ["queue", "init", "-c", str(fleet)])
    assert result.exit_code == 1
    assert "is from procrastinate 99.0.0, newer than this installation's" in result.stderr
    assert "@" not in result.stderr.replace("postgres@", "")  # no credentials beyond the user name


@pytest.mark.postgres
def test_queue_defer_queues_one_run_per_connector_and_direction_and_list_shows_it(
    tmp_path: Path, postgres_url: str, pg_schema: str
) -> None:
    config = _project(
        tmp_path / "dcsync.yaml",
        f"workers: {{postgres: '{postgres_url}', schema: {pg_schema}}}\n"
        "connectors:\n  reg: {type: mock, settings: {url: 'http://127.0.0.1:9'}}\n",
    )
    cli = CliRunner()
    missing = cli.invoke(app, ["queue", "defer", "reg", "-c", str(config)])
    assert missing.exit_code == 1 and "run `dcsync queue init`" in missing.stderr
    assert cli.invoke(app, ["queue", "init", "-c", str(config)]).exit_code == 0
    first = cli.invoke(app, ["queue", "defer", "reg", "--direction", "push", "-c", str(config)])
    assert first.exit_code == 0 and first.stdout.startswith("queued job "), first.output
    again = cli.invoke(app, ["queue", "defer", "reg", "--direction", "push", "-c", str(config)])
    assert again.exit_code == 0 and again.stdout.startswith("not queued: a push run of reg"), again.output
    pull = cli.invoke(app, ["queue", "defer", "reg", "--direction", "pull", "-c", str(config)])
    assert pull.stdout.startswith("queued job ")
    unknown = cli.invoke(app, ["queue", "defer", "nope", "-c", str(config)])
    assert unknown.exit_code == 2 and "no connector named 'nope' (configured: reg)" in unknown.stderr
    listed = cli.invoke(app, ["queue", "list", "--state", "todo", "--json", "-c", str(config)])
    jobs = json.loads(listed.stdout)
    key = str(config.resolve())
    assert [(j["task"], j["lock"], j["args"]["direction"]) for j in jobs] == [
        ("run", f"connector:{key}:reg", "pull"),
        ("run", f"connector:{key}:reg", "push"),
    ]
    assert cli.invoke(app, ["queue", "list", "--state", "failed", "-c", str(config)]).stderr.strip() == (
        "no jobs in state failed"
    )


def test_a_broken_tenant_is_reported_and_left_out_and_the_others_served(tmp_path: Path) -> None:
    from connector_core.workers.fleet import served_projects

    _project(
        tmp_path / "good" / "dcsync.yaml",
        TARGETED.replace("  free: {type: mock,", "  free: {type: mock, queue: slow,"),
    )
    bad = _project(
        tmp_path / "bad" / "dcsync.yaml",
        "scheduler: {engine: procrastinate}\nconnectors:\n  x: {type: nosuch}\n",
    )
    registry = ProjectRegistry.load(
        _project(tmp_path / "projects.yaml", "projects:\n  good: good/dcsync.yaml\n  bad: bad/dcsync.yaml\n")
    )
    served = served_projects(registry, None)
    assert set(served.projects) == {"good"}
    assert {run.periodic_id: run.queue for run in served.runs} == {
        "good:a:push:0": "default",
        "good:b:both:0": "default",
        "good:free:pull:0": "slow",
    }
    (problem,) = served.problems
    assert problem.startswith(
        f"project bad not served: {bad.resolve()}:3:13: connectors.x.type: no connector"
    )


@pytest.mark.postgres
def test_a_job_that_finds_its_connector_busy_waits_and_runs_once_it_is_free(
    tmp_path: Path, postgres_url: str, pg_schema: str, mock_server: httpx.Client
) -> None:
    """A manual run holds the lease: the queued run is retried later (not failed), then delivers."""
    import asyncio

    from connector_core.project import Project
    from connector_core.sample import mobile_log
    from connector_core.workers.app import build_app, init_schema, queue_settings
    from connector_core.workers.fleet import start
    from connector_core.workers.tasks import defer_job

    config = _project(
        tmp_path / "dcsync.yaml",
        f"workers: {{postgres: '{postgres_url}', schema: {pg_schema}, busy_retry: 1}}\n"
        f"connectors:\n  reg: {{type: mock, settings: {{url: '{mock_server.base_url}'}}}}\n",
    )
    loaded = load_config(config)
    settings = queue_settings(loaded)
    init_schema(settings)
    start(settings, loaded)
    project = Project.open(config)
    project.eventlog.append(mobile_log(households=2, members=1, updates=0, seed=5))
    queue = build_app(settings)

    def work() -> None:
        async def go() -> None:
            async with queue.open_async():
                await queue.run_worker_async(wait=False, install_signal_handlers=False, listen_notify=False)

        asyncio.run(go())

    def job_row() -> tuple[str, int]:
        with psycopg.connect(postgres_url) as conn:
            row = conn.execute(
                f"SELECT status::text, attempts FROM {pg_schema}.procrastinate_jobs"
            ).fetchone()
        assert row is not None
        return row[0], row[1]

    try:
        with queue.open():
            key = str(config.resolve())
            defer_job(
                queue,
                "run",
                lock=run_lock(key, loaded, "reg"),
                project=key,
                connector="reg",
                direction="push",
            )
        with project.state.lease("reg"):
            work()
            assert job_row() == ("todo", 1)  # retried later, not failed
            assert mock_server.get("/_control/records").json() == []
        time.sleep(1.2)
        work()
        assert job_row() == ("succeeded", 2)
        assert len(mock_server.get("/_control/records").json()) == 4
        assert [run.outcome for run in project.state.runs("reg")] == ["ok"]
    finally:
        project.close()
        use_registry(ProjectRegistry())  # closes the projects this process's jobs opened


def test_a_shard_stopped_by_its_worker_is_retried_not_failed_and_resumes(
    tmp_path: Path, mock_server: httpx.Client
) -> None:
    """SIGTERM (a deploy) sets STOP: the shard ends at a batch boundary, not done but not wrong either, so
    its job raises the retried ShardStopped, not the failing ShardNotDone; the retry finishes the shard."""
    from sync_support import write_config

    from connector_core.project import Project
    from connector_core.sample import mobile_log
    from connector_core.sync.bulk import plan_bulk_load
    from connector_core.workers import bulk_tasks, tasks

    config = write_config(tmp_path / "dcsync.yaml", str(mock_server.base_url))
    project = Project.open(config)
    try:
        project.eventlog.append(mobile_log(households=6, members=2, seed=3))
        plan = plan_bulk_load(project, "reg", 2)
    finally:
        project.close()
    tasks.STOP.set()
    try:
        with pytest.raises(bulk_tasks.ShardStopped):
            bulk_tasks.run_shard_job(str(config), "reg", plan.id, 0)
    finally:
        tasks.STOP.clear()
    for shard in (0, 1):
        result, _queue = bulk_tasks.run_shard_job(str(config), "reg", plan.id, shard)
        assert result["shard"] == shard
    assert bulk_tasks.finish_job(str(config), "reg", plan.id) == {"plan": plan.id, "finished": True}
    use_registry(ProjectRegistry())  # closes the projects these jobs opened
    records = mock_server.get("/_control/records").json()
    assert len(records) == len({r["entityGuid"] for r in records}) == 6 * 3

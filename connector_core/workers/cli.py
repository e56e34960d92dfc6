"""``dcsync worker`` and ``dcsync queue``: the fleet's commands (procrastinate is imported only when run).

Without the ``workers`` extra each says, in one line, what to install; every other failure is one line too
(a config error with its file:line, an unreachable database without its password, a missing schema naming
``dcsync queue init``).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from connector_core.config import CONFIG_FILE_NAME, LoadedConfig, load_config
from connector_core.outcomes import EXIT_BAD_INPUT, EXIT_FAILED
from connector_core.workers.app import QueueError, QueueSettings, WorkersUnavailable, queue_settings

queue_app = typer.Typer(
    help="The worker fleet's job queue: install, defer a run, list jobs.", no_args_is_help=True
)

# The dcsync command's module, given by ``mount``: importing it here would import it twice when it runs as
# ``python -m connector_core.cli`` (its error handling, output consoles and table helper are used).
_cli: Any = None

ConfigOption = Annotated[
    Path,
    typer.Option("--config", "-c", envvar="DCSYNC_CONFIG", help="Project file.", show_default=True),
]
Postgres = Annotated[
    str | None,
    typer.Option(
        "--postgres",
        envvar="DCSYNC_QUEUE_URL",
        help="Queue database URL (default: workers.postgres).",
        show_default=False,
    ),
]
Projects = Annotated[
    Path | None,
    typer.Option("--projects", help="Project registry file (default: workers.projects, $DCSYNC_PROJECTS)."),
]
STATES = ("todo", "doing", "succeeded", "failed", "cancelled", "aborting", "aborted")


@contextmanager
def _queue_errors() -> Iterator[None]:
    try:
        yield
    except WorkersUnavailable as exc:
        _cli.fail(str(exc), EXIT_BAD_INPUT)
    except QueueError as exc:
        _cli.fail(str(exc), EXIT_FAILED)


def _own_config(config: Path) -> LoadedConfig | None:
    """The ``--config`` project; a missing default ``dcsync.yaml`` is no error for a fleet-only worker."""
    if not config.exists() and config == Path(CONFIG_FILE_NAME):
        return None
    return load_config(config)


def _settings(config: Path, postgres: str | None, **kw: Any) -> tuple[LoadedConfig | None, QueueSettings]:
    loaded = _own_config(config)
    return loaded, queue_settings(loaded, postgres=postgres, **kw)


def worker(
    concurrency: Annotated[
        int | None, typer.Option(min=1, max=256, help="Jobs run at once (default: workers.concurrency).")
    ] = None,
    queue: Annotated[
        list[str] | None, typer.Option("--queue", help="Serve this queue (repeat; default: all).")
    ] = None,
    postgres: Postgres = None,
    projects: Projects = None,
    name: Annotated[str | None, typer.Option(help="Worker name in the queue (default: host:pid).")] = None,
    config: ConfigOption = Path(CONFIG_FILE_NAME),
) -> None:
    """Run a worker of the fleet in the foreground until SIGINT/SIGTERM (runs in flight end cleanly)."""
    with _cli.handled(), _queue_errors():
        from connector_core.workers.app import require_procrastinate

        require_procrastinate()
        from connector_core.workers import fleet

        loaded, settings = _settings(
            config, postgres, concurrency=concurrency, queues=queue, projects=projects
        )
        served = fleet.start(settings, loaded)
        for problem in served.problems:
            _cli._error_line(problem)
        label = name or f"{socket.gethostname()}:{os.getpid()}"
        _cli.err.print(
            f"worker {label}: {len(served.projects)} project(s), {len(served.runs)} schedule(s), "
            f"concurrency {settings.concurrency}; Ctrl-C to stop",
            highlight=False,
        )
        asyncio.run(fleet.run_worker(settings, served, name=label))
    _cli.err.print("worker stopped")


@queue_app.command("init")
def queue_init(postgres: Postgres = None, config: ConfigOption = Path(CONFIG_FILE_NAME)) -> None:
    """Install or migrate the queue's schema (in its own PostgreSQL schema); safe to run again."""
    with _cli.handled(), _queue_errors():
        from connector_core.workers.app import init_schema

        _loaded, settings = _settings(config, postgres)
        _cli.out.print(init_schema(settings), highlight=False, soft_wrap=True)


@queue_app.command("defer")
def queue_defer(
    connector: Annotated[str, typer.Argument(help="Connector instance of the project.")],
    direction: Annotated[str, typer.Option(help="push, pull or both.")] = "both",
    project: Annotated[
        str | None, typer.Option(help="Registered project name or dcsync.yaml path (default: --config).")
    ] = None,
    postgres: Postgres = None,
    projects: Projects = None,
    config: ConfigOption = Path(CONFIG_FILE_NAME),
) -> None:
    """Queue one run of a connector now (with its connector lock; skipped when one is already waiting)."""
    if direction not in ("push", "pull", "both"):
        _cli.fail("--direction must be push, pull or both")
    with _cli.handled(), _queue_errors():
        from connector_core.workers.app import build_app, check_schema
        from connector_core.workers.lanes import queueing_lock, run_lock
        from connector_core.workers.projects import ProjectRegistry
        from connector_core.workers.tasks import defer_job

        own, settings = _settings(config, postgres, projects=projects)
        registry = ProjectRegistry.load(settings.projects)
        ref = registry.resolve(project if project is not None else str(config))
        loaded = own if own is not None and own.path == ref.path else load_config(ref.path)
        if connector not in loaded.project.connectors:
            known = ", ".join(loaded.project.connectors) or "none"
            _cli.fail(f"{loaded.path}: no connector named {connector!r} (configured: {known})")
        check_schema(settings)
        app = build_app(settings)
        with app.open():
            job_id = defer_job(
                app,
                "run",
                lock=run_lock(ref.key, loaded, connector),
                queueing_lock=queueing_lock(ref.key, connector, direction),
                queue=loaded.project.connectors[connector].queue,
                project=ref.key,
                connector=connector,
                direction=direction,
            )
    if job_id is None:
        _cli.out.print(
            f"not queued: a {direction} run of {connector} ({ref.key}) is already waiting", highlight=False
        )
    else:
        _cli.out.print(f"queued job {job_id}: {direction} run of {connector} ({ref.key})", highlight=False)


@queue_app.command("list")
def queue_list(
    state: Annotated[
        str | None, typer.Option(help="todo, doing, succeeded, failed, cancelled, aborted.")
    ] = None,
    task: Annotated[str | None, typer.Option(help="Only this task (run, ...).")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000, help="Newest jobs shown.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    postgres: Postgres = None,
    config: ConfigOption = Path(CONFIG_FILE_NAME),
) -> None:
    """The newest jobs of the queue, by state."""
    if state is not None and state not in STATES:
        _cli.fail(f"--state must be one of {', '.join(STATES)}")
    with _cli.handled(), _queue_errors():
        from connector_core._postgres import connect
        from connector_core.workers.app import check_schema

        _loaded, settings = _settings(config, postgres)
        check_schema(settings)
        with connect(settings.url, application_name="dcsync-queue") as conn:
            rows = conn.execute(
                "SELECT id, task_name, status::text, attempts, queue_name, lock, args, scheduled_at,"
                f' worker_id FROM "{settings.schema}".procrastinate_jobs '
                "WHERE (%(state)s::text IS NULL OR status::text = %(state)s) "
                "AND (%(task)s::text IS NULL OR task_name = %(task)s) ORDER BY id DESC LIMIT %(limit)s",
                {"state": state, "task": task, "limit": limit},
            ).fetchall()
    jobs = [
        {
            "id": r[0],
            "task": r[1],
            "state": r[2],
            "attempts": r[3],
            "queue": r[4],
            "lock": r[5],
            "args": {k: v for k, v in (r[6] or {}).items()},
            "scheduled_at": r[7].isoformat() if r[7] else None,
            "worker": r[8],
        }
        for r in rows
    ]
    if as_json:
        _cli.out.print_json(json.dumps(jobs))
        return
    if not jobs:
        _cli.err.print("no jobs" + (f" in state {state}" if state else ""))
        return
    _cli.show_rows(
        ["job", "task", "state", "attempts", "queue", "lock", "arguments"],
        [
            [
                str(j["id"]),
                j["task"],
                j["state"],
                str(j["attempts"]),
                j["queue"],
                j["lock"] or "",
                " ".join(f"{k}={v}" for k, v in j["args"].items()),
            ]
            for j in jobs
        ],
        wrap=("arguments",),
    )


@contextmanager
def _bulk_queue_errors() -> Iterator[None]:
    """A bulk load with no usable queue is a bad invocation (exit 2) that names the way without one."""
    try:
        yield
    except (WorkersUnavailable, QueueError) as exc:
        _cli.fail(f"{exc}; or run the shards on this machine with --local (--processes P)", EXIT_BAD_INPUT)


def bulk_defer(config: Path, connector: str, shards: int) -> None:
    """``dcsync bulk-load NAME --shards K`` on a fleet: plan the load here, defer a job per shard not done
    (the last one to end defers the final job); the workers do the rest."""
    with _cli.handled(), _bulk_queue_errors():
        from connector_core.project import Project
        from connector_core.sync import bulk
        from connector_core.workers.app import build_app, check_schema
        from connector_core.workers.bulk_tasks import defer_shards
        from connector_core.workers.projects import ProjectRegistry

        loaded, settings = _settings(config, None)
        if loaded is None:
            _cli.fail(f"{config}: no project file")
        assert loaded is not None
        ref = ProjectRegistry.load(settings.projects).resolve(str(config))
        check_schema(settings)
        project = Project.open(config)
        try:
            try:
                plan = bulk.plan_bulk_load(project, connector, shards)
            except bulk.BulkLoadError as exc:
                _cli.fail(str(exc))
        finally:
            project.close()
        if plan.shards != shards:
            _cli.err.print(
                f"[yellow]resumed[/] the open plan {plan.id} of {plan.shards} shards", highlight=False
            )
        app = build_app(settings)
        with app.open():
            jobs = defer_shards(app, ref.key, loaded, connector, plan.id, plan.pending)
    rows = [[str(k), "already waiting" if job is None else f"job {job}"] for k, job in jobs.items()]
    if rows:
        _cli.show_rows(["shard", "queued"], rows, title=f"bulk load {plan.id} of {connector}")
    _cli.out.print(
        f"{connector}: {len(jobs)} shard job(s) of bulk load {plan.id} on the queue; the last shard to end "
        f"queues the final job, which moves the push checkpoint to {plan.mark}. Watch: dcsync queue list; "
        f"progress: dcsync runs",
        highlight=False,
        soft_wrap=True,
    )


def mount(app: typer.Typer, cli_module: Any) -> None:
    """Add ``worker`` and ``queue`` to the ``dcsync`` command (``cli_module``: connector_core.cli)."""
    global _cli
    _cli = cli_module
    app.command("worker")(worker)
    app.add_typer(queue_app, name="queue")

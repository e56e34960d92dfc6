"""``dcsync worker``: one procrastinate worker serving every project of the fleet.

On start it checks the queue's schema, registers the periodic tasks of every served project whose
``dcsync.yaml`` says ``scheduler: {engine: procrastinate}`` (the ``--config`` project and those of the
registry; a change of schedules takes a worker restart), and runs procrastinate's worker with the
configured concurrency and queues. Every worker also watches for **stalled jobs**: jobs ``doing`` on a
worker whose heartbeat is older than ``workers.stalled_after`` (a SIGKILLed process, a vanished machine)
are put back to ``todo`` through procrastinate's own ``get_stalled_jobs``/``retry_job``, so another worker
runs them. Several workers may find the same stalled job; the first retry wins, the others find it no
longer ``doing``.

SIGTERM/SIGINT: no new job is taken, runs in flight end at their batch boundary (``interrupted``, their
checkpoint consistent), then the worker unregisters and exits.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass
from typing import Any

from connector_core.config import ConfigError, LoadedConfig, load_config
from connector_core.workers.app import QueueSettings, build_app, check_schema
from connector_core.workers.periodic import PeriodicRun, periodic_runs, register_schedules
from connector_core.workers.projects import ProjectRegistry, use_registry
from connector_core.workers.tasks import STOP

log = logging.getLogger("dcsync.worker")


@dataclass(frozen=True)
class Served:
    """What a worker found to serve: projects with their keys, the periodic runs they schedule, and the
    problems of the registered projects it could not serve (one line each, with file:line)."""

    projects: dict[str, LoadedConfig]
    runs: list[PeriodicRun]
    problems: list[str]


def served_projects(registry: ProjectRegistry, own: LoadedConfig | None) -> Served:
    """The registry's projects and the worker's own (``--config``), each checked as ``run`` checks it
    (connector types, settings, mappings). The worker's own project must be sound; a registered project
    that is not is reported and left out (its schedules do not fire; a job naming it fails with the same
    line), so one tenant's mistake does not stop a fleet serving hundreds."""
    from connector_core.plugins import load_plugins
    from connector_core.project import check_project

    host = load_plugins()
    projects: dict[str, LoadedConfig] = {}
    problems: list[str] = []
    if own is not None:
        check_project(own, host)
        projects[registry.resolve(str(own.path)).key] = own
    for name, path in registry.names.items():
        if name in projects:
            continue
        try:
            loaded = load_config(path)
            check_project(loaded, host)
        except ConfigError as exc:
            problems += [f"project {name} not served: {problem}" for problem in exc.problems]
            continue
        projects[name] = loaded
    runs = [run for key, loaded in projects.items() for run in periodic_runs(key, loaded)]
    return Served(projects, runs, problems)


async def _retry(manager: Any, job: Any) -> None:
    """Put a stalled job back to ``todo``. While it was ``doing``, its queueing lock was free, so a later tick
    of the same connector and direction may be waiting: that job would do the same work, and the two cannot
    both wait (the queueing lock). The waiting one is cancelled (status ``cancelled``, in ``dcsync queue
    list``) and the stalled one retried, so the job that was cut short is the one that finishes."""
    from procrastinate.exceptions import UniqueViolation

    try:
        await manager.retry_job(job)
    except UniqueViolation:
        if not job.queueing_lock:
            raise
        for waiting in await manager.list_jobs_async(queueing_lock=job.queueing_lock, status="todo"):
            if await manager.cancel_job_by_id_async(waiting.id):
                log.warning("job %s cancelled: superseded by the retry of stalled job %s", waiting.id, job.id)
        await manager.retry_job(job)


async def _retry_stalled(app: object, settings: QueueSettings) -> None:
    manager = app.job_manager  # type: ignore[attr-defined]
    every = max(0.5, min(settings.stalled_after / 4, 30.0))
    while True:
        await asyncio.sleep(every)
        try:
            stalled = await manager.get_stalled_jobs(seconds_since_heartbeat=settings.stalled_after)
            for job in stalled:
                try:
                    await _retry(manager, job)
                except Exception as exc:  # another worker retried it first
                    log.debug("stalled job %s not retried here: %s", job.id, exc)
                else:
                    log.warning(
                        "job %s (%s) was running on a worker silent for %.0fs: retried",
                        job.id,
                        job.call_string,
                        settings.stalled_after,
                    )
        except Exception as exc:  # the database went away for a moment: try again next round
            log.warning("looking for stalled jobs failed: %s", exc)


async def run_worker(settings: QueueSettings, served: Served, *, name: str | None = None) -> None:
    """Run until SIGTERM/SIGINT (or cancellation)."""
    check_schema(settings)
    app = build_app(settings)
    register_schedules(app, served.runs)
    async with app.open_async():
        options: Any = {
            "concurrency": settings.concurrency,
            "queues": list(settings.queues) or None,  # None: every queue
            "name": name,
            "install_signal_handlers": False,  # ours: they also tell runs in flight to stop (STOP)
            "update_heartbeat_interval": settings.heartbeat,
            "stalled_worker_timeout": settings.stalled_after,
            "shutdown_graceful_timeout": None,  # wait for runs to reach their batch boundary
        }
        work = asyncio.create_task(
            app.run_worker_async(**options),
            name="dcsync-worker",
        )
        watcher = asyncio.create_task(_retry_stalled(app, settings), name="dcsync-stalled-jobs")
        loop = asyncio.get_running_loop()

        def stop() -> None:
            if STOP.is_set():
                return
            log.warning("stopping: no new jobs; runs in flight end at their batch boundary")
            STOP.set()
            work.cancel()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop)
        try:
            await work
        except asyncio.CancelledError:
            pass
        finally:
            watcher.cancel()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)


def start(settings: QueueSettings, own: LoadedConfig | None) -> Served:
    """Prepare this process to serve: the registry it resolves jobs' projects with, and what it serves."""
    registry = ProjectRegistry.load(settings.projects)
    use_registry(registry)
    return served_projects(registry, own)

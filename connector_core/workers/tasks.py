"""The fleet's tasks, and how more are added.

**Adding tasks.** Every App a fleet builds (``app.build_app``) imports the modules listed in
:data:`TASK_MODULES` and calls their ``install_tasks(app, settings)``, which adds tasks with
``app.task(name=...)``. A module holding more work (e.g. sharded bulk loads: ``bulk_shard``,
``bulk_finish``) defines its own ``install_tasks`` and is added to that list (one line, here: a worker must
know every task before it fetches a job of it). Its tasks take a project reference (a registered name or a
path) and open it with :func:`open_project`, lock what they write with ``workers.lanes`` (a connector's
``run_lock`` keeps them apart from its runs), and are deferred with :func:`defer_job` (from the CLI, or
from a sync task: ``bulk_shard`` defers ``bulk_finish`` so). Task names are plain (``run``), unique in the
fleet. Example::

    def install_tasks(app: procrastinate.App, settings: QueueSettings) -> None:
        @app.task(name="bulk_shard", retry=procrastinate.RetryStrategy(retry_exceptions={ConnectorBusy}))
        def bulk_shard(project: str, connector: str, plan_id: str, shard: int) -> None:
            with open_project(project) as opened:
                run_shard(opened, connector, plan_id, shard)

**The run task.** ``run(project, connector, direction)`` is one ``run_connector`` of a connector, whether a
periodic tick deferred it (with ``timestamp``, the tick) or someone did by hand (``dcsync queue defer``). It
still takes the connector's lease and, for a tick, claims the tick in the state store (belt and braces with
the job's ``lock``: a run from ``dcsync run`` on a laptop, or from an embedded scheduler, is kept out too).

- **Lease busy** (``ConnectorBusy``: someone else is running that connector): the job is retried after
  ``workers.busy_retry`` seconds, as many times as it takes. It is not a failure: the connector is being
  synced, just not by this job. The retry keeps the job's place (its lock), and the queueing lock keeps a
  later tick from queueing behind it.
- **A failed run** (the remote refused, a systemic error): the job fails, visible in ``dcsync queue list
  --state failed`` as well as in ``dcsync runs``; the next tick runs again from the checkpoint.
- **A push held by a bulk load** (the connector's bulk load is open; its shards write the records): the
  job succeeds as skipped, with that reason as its result (a ``both`` run still pulls), and the run is
  ``skipped`` in ``dcsync runs``; pushes resume from the load's mark once it is finished.
- **A run that left dead letters** is done (degraded, as ``dcsync run`` exits 3): the job succeeds.
- **A worker killed mid-run**: procrastinate retries the job on another worker once the dead worker's
  heartbeat is older than ``workers.stalled_after`` (fleet.py); the retry takes the lease the dead process
  lost with its connection, marks the dead run abandoned, and resumes from the checkpoint; create intents
  make the records that were in flight land once (the retry of a tick is not refused by the tick's claim).
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from connector_core.workers.app import QueueSettings, require_procrastinate
from connector_core.workers.projects import open_project

if TYPE_CHECKING:  # pragma: no cover
    import procrastinate

__all__ = [
    "STOP",
    "TASK_MODULES",
    "RunFailed",
    "defer_job",
    "install_tasks",
    "open_project",
]

TASK_MODULES: list[str] = ["connector_core.workers.tasks", "connector_core.workers.bulk_tasks"]
"""Modules whose ``install_tasks(app, settings)`` adds tasks to every App a fleet builds."""

log = logging.getLogger("dcsync.worker")

STOP = threading.Event()
"""Set when the worker is asked to stop: runs in flight end at their batch boundary as ``interrupted``."""

DIRECTIONS = ("push", "pull", "both")


class RunFailed(Exception):
    """A run ended failed; the job fails with the run's reason (already redacted)."""


def install_tasks(app: procrastinate.App, settings: QueueSettings) -> None:
    """Add ``run`` to ``app``."""
    procrastinate = require_procrastinate()
    from connector_core.state.lease import ConnectorBusy

    busy = procrastinate.RetryStrategy(
        retry_exceptions={ConnectorBusy}, wait=max(1, round(settings.busy_retry))
    )

    @app.task(name="run", pass_context=True, retry=busy)
    def run(
        context: Any, project: str, connector: str, direction: str = "both", timestamp: int | None = None
    ) -> dict[str, Any]:
        return run_job(context.job, project, connector, direction, timestamp)


def run_job(job: Any, project: str, connector: str, direction: str, timestamp: int | None) -> dict[str, Any]:
    """The body of the ``run`` task (``job``: procrastinate's job, for its id and attempts)."""
    from connector_core.events import format_timestamp
    from connector_core.sync.runner import run_connector

    if direction not in DIRECTIONS:
        raise RunFailed(f"direction {direction!r}: expected push, pull or both")
    with open_project(project) as opened:
        gate = None
        trigger = "queue"
        if timestamp is not None:
            trigger = "schedule"
            tick = format_timestamp(datetime.fromtimestamp(timestamp, UTC))
            holder = f"queue-job:{job.id}"
            retried = job.attempts > 0  # this job may have claimed the tick before its worker died

            def gate() -> bool:
                return opened.state.claim_tick(connector, direction, tick, holder) or retried

        report = run_connector(
            opened,
            connector,
            push=direction in ("push", "both"),
            pull=direction in ("pull", "both"),
            trigger=trigger,
            stop=STOP,
            gate=gate,
        )
    if report.skipped:
        if report.held:
            log.info("%s: push skipped: %s", connector, report.held)
        return {"skipped": report.held or "the tick was already run"}
    if not report.ok:
        raise RunFailed(f"{connector}: run {report.run_id} failed: {report.error}")
    held = {"push_skipped": report.held} if report.held else {}
    return {"run_id": report.run_id, **report.totals().as_dict(), **held}


def defer_job(
    app: procrastinate.App,
    task_name: str,
    *,
    lock: str | None = None,
    queueing_lock: str | None = None,
    queue: str | None = None,
    schedule_in: float | None = None,
    **kwargs: Any,
) -> int | None:
    """Defer ``task_name`` with ``kwargs`` on an opened ``app``; the new job's id, or ``None`` when a job
    with the same ``queueing_lock`` is already waiting (so nothing was added)."""
    procrastinate = require_procrastinate()
    options: dict[str, Any] = {"lock": lock, "queueing_lock": queueing_lock}
    if queue is not None:
        options["queue"] = queue
    if schedule_in is not None:
        options["schedule_in"] = {"seconds": schedule_in}
    try:
        return int(app.tasks[task_name].configure(**options).defer(**kwargs))
    except procrastinate.exceptions.AlreadyEnqueued:
        return None

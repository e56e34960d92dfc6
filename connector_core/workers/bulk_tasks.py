"""A sharded bulk load (connector_core/sync/bulk.py) on the worker fleet: one job per shard, then a final job.

``dcsync bulk-load NAME --shards K`` (without ``--local``) plans the load (the snapshot mark is taken
there, once) and defers K ``bulk_shard`` jobs. Each shard job pushes its share of the households with its
own checkpoint; when it is done it defers ``bulk_finish``, which moves the connector's push checkpoint to
the mark once every shard is done (before that it finds shards pending and does nothing: the last shard
to finish defers it again). So no job polls, and the order in which shards end does not matter.

Locks, from the engine:

- a shard job's ``lock`` keeps two runs of one shard apart (a rerun of the command, a stalled job's retry)
  and, on a target with ``max_writers: N``, is one of the target's N lanes (shard k on lane k mod N), so a
  bulk load never has more writers on a registry than its cap; its ``queueing_lock`` is per shard: running
  the command again adds no second waiting copy;
- ``bulk_finish`` has one lock and one queueing lock per plan: at most one waits, and two never run at once.

A killed worker's shard job is retried by another worker once its heartbeat is stale (fleet.py); the shard
resumes at its own checkpoint and the create intents make the records in flight land once. A shard that
stops with an error fails its job (``dcsync queue list --state failed``); running ``dcsync bulk-load`` again
defers the shards not done, and the plan (and its mark) stays the same.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from connector_core.workers.app import QueueSettings, require_procrastinate
from connector_core.workers.projects import open_project

if TYPE_CHECKING:  # pragma: no cover
    import procrastinate

    from connector_core.config import LoadedConfig

log = logging.getLogger("dcsync.worker")

SHARD_TASK = "bulk_shard"
FINISH_TASK = "bulk_finish"


class ShardNotDone(Exception):
    """A shard failed before its mark (its run's error); its job fails with why."""


class ShardStopped(Exception):
    """The worker was asked to stop (SIGTERM: a deploy, a scale-down) in the middle of a shard: nothing is
    wrong with it, so its job is retried (by another worker, or this one once restarted) and the shard
    resumes at its own checkpoint."""


def shard_lock(project: str, loaded: LoadedConfig, connector: str, plan_id: str, shard: int) -> str:
    """The ``lock`` of shard ``shard``'s jobs: a lane of the connector's target (k mod max_writers), or the
    shard's own key when the connector names no target."""
    from connector_core.workers.lanes import connector_key, lane_lock

    instance = loaded.project.connectors[connector]
    if instance.target is not None:
        return lane_lock(instance.target, shard % loaded.project.targets[instance.target].max_writers)
    return f"{connector_key(project, connector)}:bulk:{plan_id}:{shard}"


def shard_queueing_lock(project: str, connector: str, plan_id: str, shard: int) -> str:
    from connector_core.workers.lanes import connector_key

    return f"{connector_key(project, connector)}:bulk:{plan_id}:{shard}:waiting"


def finish_lock(project: str, connector: str, plan_id: str) -> str:
    from connector_core.workers.lanes import connector_key

    return f"{connector_key(project, connector)}:bulk:{plan_id}:finish"


def install_tasks(app: procrastinate.App, settings: QueueSettings) -> None:
    """Add ``bulk_shard`` and ``bulk_finish`` to ``app``."""
    procrastinate = require_procrastinate()
    from connector_core.state.lease import ConnectorBusy

    busy = procrastinate.RetryStrategy(
        retry_exceptions={ConnectorBusy}, wait=max(1, round(settings.busy_retry))
    )
    resumable = procrastinate.RetryStrategy(
        retry_exceptions={ConnectorBusy, ShardStopped}, wait=max(1, round(settings.busy_retry))
    )

    @app.task(name=SHARD_TASK, retry=resumable)
    def bulk_shard(project: str, connector: str, plan_id: str, shard: int) -> dict[str, Any]:
        result, queue = run_shard_job(project, connector, plan_id, shard)
        defer_finish(app, project, connector, plan_id, queue)
        return result

    @app.task(name=FINISH_TASK, retry=busy)
    def bulk_finish(project: str, connector: str, plan_id: str) -> dict[str, Any]:
        return finish_job(project, connector, plan_id)


def run_shard_job(project: str, connector: str, plan_id: str, shard: int) -> tuple[dict[str, Any], str]:
    """The body of ``bulk_shard``: the shard pushed to its mark (its counts, and the connector's queue for
    the final job); :class:`ShardStopped` when the worker is stopping, :class:`ShardNotDone` with why."""
    from connector_core.sync.bulk import run_shard
    from connector_core.workers.tasks import STOP

    with open_project(project) as opened:
        queue = opened.config.project.connectors[connector].queue
        report = run_shard(opened, connector, plan_id, shard, stop=STOP)
    if not report.done and STOP.is_set():
        raise ShardStopped(
            f"{connector}: shard {shard} of bulk load {plan_id} stopped; it resumes when retried"
        )
    if not report.done:
        raise ShardNotDone(f"{connector}: shard {shard} of bulk load {plan_id} not done: {report.error}")
    return {"run_id": report.run_id, "shard": shard, **report.counts.as_dict()}, queue


def finish_job(project: str, connector: str, plan_id: str) -> dict[str, Any]:
    """The body of ``bulk_finish``: ``finished`` is false while shards remain (the last to end defers it
    again)."""
    from connector_core.sync.bulk import finish_bulk_load

    with open_project(project) as opened:
        finished = finish_bulk_load(opened, connector, plan_id)
    return {"plan": plan_id, "finished": finished}


def defer_finish(
    app: procrastinate.App, project: str, connector: str, plan_id: str, queue: str | None
) -> int | None:
    from connector_core.workers.tasks import defer_job

    lock = finish_lock(project, connector, plan_id)
    return defer_job(
        app,
        FINISH_TASK,
        lock=lock,
        queueing_lock=lock,
        queue=queue,
        project=project,
        connector=connector,
        plan_id=plan_id,
    )


def defer_shards(
    app: procrastinate.App,
    project: str,
    loaded: LoadedConfig,
    connector: str,
    plan_id: str,
    shards: list[int],
) -> dict[int, int | None]:
    """Defer a job per shard in ``shards`` (on the connector's queue); per shard its job id, or ``None``
    when one is already waiting. With no shard left to run, the final job is deferred instead."""
    from connector_core.workers.tasks import defer_job

    queue = loaded.project.connectors[connector].queue
    jobs: dict[int, int | None] = {}
    for shard in shards:
        jobs[shard] = defer_job(
            app,
            SHARD_TASK,
            lock=shard_lock(project, loaded, connector, plan_id, shard),
            queueing_lock=shard_queueing_lock(project, connector, plan_id, shard),
            queue=queue,
            project=project,
            connector=connector,
            plan_id=plan_id,
            shard=shard,
        )
    if not shards:
        defer_finish(app, project, connector, plan_id, queue)
    return jobs

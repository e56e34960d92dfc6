"""Schedules of ``dcsync.yaml`` as procrastinate periodic tasks (``scheduler: {engine: procrastinate}``).

procrastinate fires a periodic task on cron times and defers one job per (task, periodic id, time) across
the whole fleet: the database's unique key, not a leader, decides. Its cron follows the clock in UTC, so an
``every:`` becomes a cron expression only when the interval divides a minute, an hour or a day (the ticks
then fall where the embedded scheduler's epoch-anchored ticks fall); anything else is refused with the
schedule's line, as are ``jitter`` and a cron in another time zone, rather than fired at other times than
the file says.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from connector_core.config import LoadedConfig, ScheduleConfig

if TYPE_CHECKING:  # pragma: no cover
    import procrastinate


class PeriodicError(ValueError):
    """A schedule the procrastinate engine cannot fire as written."""


def cron_of(schedule: ScheduleConfig) -> str:
    """The croniter expression (a sixth field is seconds) that fires ``schedule``'s ticks, in UTC."""
    if schedule.jitter:
        raise PeriodicError("jitter is not supported by the procrastinate engine (remove it)")
    if schedule.cron is not None:
        if schedule.timezone != "UTC":
            raise PeriodicError(
                f"the procrastinate engine reads cron in UTC: write {schedule.cron!r} in UTC "
                f"instead of {schedule.timezone}"
            )
        return schedule.cron
    seconds = schedule.interval_seconds
    assert seconds is not None
    whole = int(seconds)
    if whole == seconds:
        if whole < 60 and 60 % whole == 0:
            return f"* * * * * */{whole}"
        if whole % 60 == 0 and whole < 3600 and 60 % (whole // 60) == 0:
            return f"*/{whole // 60} * * * *"
        if whole % 3600 == 0 and whole < 86400 and 24 % (whole // 3600) == 0:
            return f"0 */{whole // 3600} * * *"
        if whole == 86400:
            return "0 0 * * *"
    raise PeriodicError(
        f"every: {schedule.every} cannot be fired by the procrastinate engine, whose ticks follow the clock: "
        "use an interval that divides a minute, an hour or a day (e.g. 5s, 15m, 6h), or cron"
    )


@dataclass(frozen=True)
class PeriodicRun:
    """One schedule of one connector as a periodic task: what ``register_schedules`` gives procrastinate."""

    periodic_id: str
    cron: str
    project: str
    connector: str
    direction: str
    lock: str
    queueing_lock: str
    queue: str = "default"


def periodic_runs(project_key: str, loaded: LoadedConfig) -> list[PeriodicRun]:
    """Every enabled schedule of an ``engine: procrastinate`` project (none for an embedded one)."""
    from connector_core.workers.lanes import queueing_lock, run_lock

    if loaded.project.scheduler.engine != "procrastinate":
        return []
    runs = []
    for name, instance in loaded.project.connectors.items():
        if not instance.enabled:
            continue
        for index, schedule in enumerate(instance.schedule):
            if not schedule.enabled:
                continue
            runs.append(
                PeriodicRun(
                    periodic_id=f"{project_key}:{name}:{schedule.direction}:{index}",
                    cron=cron_of(schedule),
                    project=project_key,
                    connector=name,
                    direction=schedule.direction,
                    lock=run_lock(project_key, loaded, name),
                    queueing_lock=queueing_lock(project_key, name, schedule.direction),
                    queue=instance.queue,
                )
            )
    return runs


def register_schedules(app: procrastinate.App, runs: Iterable[PeriodicRun]) -> int:
    """Each schedule becomes a periodic ``run`` job with its connector's lock and queueing lock."""
    task = app.tasks["run"]
    count = 0
    for run in runs:
        options: Any = {
            "lock": run.lock,
            "queueing_lock": run.queueing_lock,
            "queue": run.queue,
            "task_kwargs": {"project": run.project, "connector": run.connector, "direction": run.direction},
        }
        app.periodic(cron=run.cron, periodic_id=run.periodic_id, **options)(task)
        count += 1
    return count

"""Unattended runs: APScheduler 3 jobs built from ``dcsync.yaml``, one per connector and direction.

What makes it safe to leave alone:

- **No overlap.** ``max_instances=1`` and coalescing per job; the jobs of one connector share a lock in the
  process, and the connector's lease (a lock file, or PostgreSQL's advisory lock) keeps other machines out.
- **Each tick runs once, across schedulers.** Interval schedules are anchored at a fixed epoch, so every
  scheduler computes the same fire times; a run claims its tick in the state store *after* taking the lease,
  and a scheduler that finds the tick claimed skips it. APScheduler's own persistent job stores are not
  safe to share between processes (its documentation says so), so job state lives in our state store.
- **Missed ticks.** A scheduler that starts less than ``misfire_grace`` after an unclaimed tick runs it.
- **A push held by a bulk load is skipped, not failed.** While a bulk load of the connector is open its
  shards write the records; a tick's push is recorded ``skipped`` with that reason (its pull still runs),
  and pushes resume from the load's mark once it is finished.
- **Failures are loud and back off.** A failed run is logged with its reason, counted in metrics and kept
  in run history (``dcsync status`` shows it); the connector's next runs wait a growing number of
  intervals (1, 2, 4, ... capped at an hour) so a broken registry is not hammered.
- **Graceful shutdown.** ``stop()`` lets the batch in flight finish, the run end as ``interrupted`` with its
  checkpoint consistent, and the next start resume from there.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from connector_core.config import LoadedConfig, ScheduleConfig, load_config
from connector_core.events import format_timestamp
from connector_core.logs import run_context
from connector_core.metrics import Metrics
from connector_core.retry import doubling_delay

log = logging.getLogger("dcsync.scheduler")
ANCHOR = datetime(2000, 1, 1, tzinfo=UTC)
MAX_BACKOFF = 3600.0


@dataclass(frozen=True)
class ScheduledJob:
    connector: str
    direction: str  # push | pull | both
    schedule: ScheduleConfig

    @property
    def job_id(self) -> str:
        return f"{self.connector}:{self.direction}"

    def trigger(self, *, with_jitter: bool = True) -> BaseTrigger:
        jitter = int(self.schedule.jitter) if with_jitter and self.schedule.jitter else None
        seconds = self.schedule.interval_seconds
        if seconds is not None:
            return IntervalTrigger(seconds=seconds, start_date=ANCHOR, timezone=UTC, jitter=jitter)
        assert self.schedule.cron is not None
        trigger = CronTrigger.from_crontab(self.schedule.cron, timezone=self.schedule.timezone)
        trigger.jitter = jitter
        return trigger

    def tick_at(self, now: datetime) -> datetime:
        """The latest fire time at or before ``now`` (jitter ignored): the identity of a scheduled run."""
        seconds = self.schedule.interval_seconds
        if seconds is not None:
            steps = int((now - ANCHOR).total_seconds() // seconds)
            return ANCHOR + timedelta(seconds=steps * seconds)
        trigger = self.trigger(with_jitter=False)
        probe = now - timedelta(days=366)
        last = None
        fire = trigger.get_next_fire_time(None, probe)
        while fire is not None and fire <= now:
            last = fire
            fire = trigger.get_next_fire_time(fire, fire + timedelta(seconds=1))
        return last or probe

    def next_times(self, count: int, now: datetime | None = None) -> list[datetime]:
        trigger = self.trigger(with_jitter=False)
        now = now or datetime.now(UTC)
        times: list[datetime] = []
        previous = None
        fire = trigger.get_next_fire_time(previous, now)
        while fire is not None and len(times) < count:
            times.append(fire)
            previous = fire
            fire = trigger.get_next_fire_time(previous, fire + timedelta(microseconds=1))
        return times

    def backoff_base(self) -> float:
        return self.schedule.interval_seconds or 60.0


def jobs_from_config(loaded: LoadedConfig) -> list[ScheduledJob]:
    jobs = []
    for name, instance in loaded.project.connectors.items():
        if not instance.enabled:
            continue
        for schedule in instance.schedule:
            if schedule.enabled:
                jobs.append(ScheduledJob(name, schedule.direction, schedule))
    return jobs


@dataclass
class _JobState:
    failures: int = 0
    resume_at: float = 0.0


PURGE_JOB = "dcsync:retention"
PURGE_DELAY = 60
"""Seconds after start before the first purge: a start's catch-up runs go first."""


@dataclass
class Scheduler:
    """Runs the schedules of one project until :meth:`stop`."""

    config_path: Path
    metrics: Metrics | None = None
    holder: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    busy_wait: float = 1.0
    stop_event: threading.Event = field(default_factory=threading.Event)
    _connector_locks: dict[str, threading.Lock] = field(default_factory=dict)
    _states: dict[str, _JobState] = field(default_factory=dict)
    _scheduler: BackgroundScheduler | None = None
    on_run: Callable[[ScheduledJob, Any], None] | None = None
    # The clocks a run reads: which tick it is (wall time) and when a backoff ends (monotonic). Given, so a
    # test can step through failures and backoffs without sleeping on a loaded machine.
    utcnow: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    monotonic: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        self.loaded = load_config(self.config_path)
        self.jobs = jobs_from_config(self.loaded)

    def start(self) -> None:
        scheduler = BackgroundScheduler(timezone=UTC)
        for job in self.jobs:
            self._connector_locks.setdefault(job.connector, threading.Lock())
            self._states[job.job_id] = _JobState()
            scheduler.add_job(
                self._run_job,
                job.trigger(),
                args=[job],
                id=job.job_id,
                name=job.job_id,
                max_instances=1,
                coalesce=True,
                misfire_grace_time=int(job.schedule.misfire_grace),
            )
        if self.loaded.project.retention.periods():
            # daily, and once soon after start: a scheduler restarted every night would otherwise never purge
            scheduler.add_job(
                self.purge_now,
                IntervalTrigger(days=1, timezone=UTC),
                id=PURGE_JOB,
                name=PURGE_JOB,
                max_instances=1,
                coalesce=True,
                next_run_time=self.utcnow() + timedelta(seconds=PURGE_DELAY),
            )
        self._scheduler = scheduler
        scheduler.start()
        self._catch_up()
        log.info("scheduler %s started with %d jobs", self.holder, len(self.jobs))

    def _catch_up(self) -> None:
        """Run, once, any tick missed within its grace while no scheduler was up."""
        from connector_core.project import Project

        now = self.utcnow()
        project = Project.open(self.config_path)
        try:
            missed = []
            for job in self.jobs:
                tick = job.tick_at(now)
                last = project.state.last_tick(job.connector, job.direction)
                grace = job.schedule.misfire_grace
                if (last is None or last < format_timestamp(tick)) and (now - tick).total_seconds() < grace:
                    missed.append(job)
        finally:
            project.close()
        for job in missed:
            assert self._scheduler is not None
            self._scheduler.add_job(self._run_job, args=[job], id=f"catch-up:{job.job_id}")

    def purge_now(self) -> int | None:
        """The daily purge of ``retention:`` (``dcsync purge``), once a UTC day across every scheduler that
        shares the state store (the day is claimed like a tick). Returns the rows removed, ``None`` when
        another scheduler had the day or the purge failed (logged; it never takes the scheduler down)."""
        from connector_core.project import Project
        from connector_core.retention import purge

        day = format_timestamp(self.utcnow().replace(hour=0, minute=0, second=0, microsecond=0))
        try:
            project = Project.open(self.config_path)
        except Exception as exc:
            log.error("retention purge not run: %s", exc)
            return None
        try:
            if not project.state.claim_tick(PURGE_JOB, "purge", day, self.holder):
                return None
            periods = project.config.project.retention.periods()
            report = purge(project.state, periods, actor=f"scheduler:{self.holder}", now=self.utcnow())
            log.info("retention purge removed %d rows", report.total())
            return report.total()
        except Exception as exc:  # a purge must never take the scheduler down
            log.error("retention purge failed: %s: %s", type(exc).__name__, exc)
            return None
        finally:
            project.close()

    def run_now(self, job: ScheduledJob) -> None:
        """Run one job's current tick in this thread (as its trigger would), e.g. from a test or a shell."""
        self._connector_locks.setdefault(job.connector, threading.Lock())
        self._states.setdefault(job.job_id, _JobState())
        self._run_job(job)

    def connector_lock(self, connector: str) -> threading.Lock:
        """The lock this process's runs of ``connector`` share (scheduled and real-time alike)."""
        return self._connector_locks.setdefault(connector, threading.Lock())

    def stop(self, wait: bool = True) -> None:
        """Let runs in flight finish their batch and end cleanly, then stop."""
        self.stop_event.set()
        if self._scheduler is not None and self._scheduler.running:
            self._scheduler.shutdown(wait=wait)

    def wait(self) -> None:
        while not self.stop_event.wait(0.5):
            pass

    # -- one scheduled run -----------------------------------------------------------------------
    def _run_job(self, job: ScheduledJob) -> None:
        from connector_core.project import Project
        from connector_core.sync.runner import ConnectorBusy, run_connector

        state = self._states[job.job_id]
        tick = format_timestamp(job.tick_at(self.utcnow()))
        if self.monotonic() < state.resume_at:
            log.warning(
                "%s: skipping the %s run: backing off after %d failures", job.job_id, tick, state.failures
            )
            return
        with self._connector_locks[job.connector], run_context(connector=job.connector, tick=tick):
            deadline = time.monotonic() + job.schedule.misfire_grace
            while not self.stop_event.is_set():
                project = Project.open(self.config_path)
                started = time.monotonic()
                try:
                    report = run_connector(
                        project,
                        job.connector,
                        push=job.direction in ("push", "both"),
                        pull=job.direction in ("pull", "both"),
                        trigger="schedule",
                        stop=self.stop_event,
                        gate=partial(
                            project.state.claim_tick, job.connector, job.direction, tick, self.holder
                        ),
                    )
                except ConnectorBusy as exc:
                    if time.monotonic() > deadline:
                        log.warning("%s: tick %s not run: %s", job.job_id, tick, exc)
                        return
                    self.stop_event.wait(self.busy_wait * (0.5 + random.random()))
                    continue
                except Exception as exc:  # a scheduled run must never take the scheduler down
                    log.error("%s: run failed: %s: %s", job.job_id, type(exc).__name__, exc)
                    self._failed(job, state)
                    return
                else:
                    self._finished(job, state, project, report, time.monotonic() - started)
                    return
                finally:
                    project.close()

    def _finished(
        self, job: ScheduledJob, state: _JobState, project: Any, report: Any, duration: float
    ) -> None:
        if report.skipped:
            if report.held:  # in run history as skipped; the tick is done, and nothing failed
                log.info("%s: tick skipped: %s", job.job_id, report.held)
                if self.metrics is not None:
                    self.metrics.record_run(report, duration, time.time())
            else:
                log.info("%s: tick already run by another scheduler", job.job_id)
            return
        if report.held:
            log.info("%s: run %s pulled; its push skipped: %s", job.job_id, report.run_id, report.held)
        if self.metrics is not None:
            self.metrics.record_run(report, duration, time.time())
            self.record_levels(project, job.connector)
        if self.on_run is not None:
            self.on_run(job, report)
        if report.ok:
            state.failures, state.resume_at = 0, 0.0
            if dead := report.totals().dead_lettered:  # not a failure: no backoff, but someone must look
                log.warning("%s: run %s degraded: %d new dead letters", job.job_id, report.run_id, dead)
        else:
            log.error("%s: run %s failed: %s", job.job_id, report.run_id, report.error)
            self._failed(job, state, counted=True)

    def _failed(self, job: ScheduledJob, state: _JobState, counted: bool = False) -> None:
        state.failures += 1
        delay = doubling_delay(state.failures, job.backoff_base(), MAX_BACKOFF)
        state.resume_at = self.monotonic() + delay
        if self.metrics is not None and not counted:
            self.metrics.record_failure(job.connector, job.direction)
        log.warning("%s: next runs wait %.0fs (failure %d in a row)", job.job_id, delay, state.failures)

    def record_levels(self, project: Any, connector: str) -> None:
        """Push lag and open work of ``connector`` into the metrics, after any run of it (scheduled or, in
        ``dcsync serve``, real-time)."""
        if self.metrics is None:
            return
        from connector_core.state.base import Direction

        checkpoint = project.state.get_checkpoint(connector, Direction.PUSH)
        self.metrics.set_levels(
            connector, lag=project.eventlog.count(checkpoint), waiting=project.state.open_counts(connector)
        )

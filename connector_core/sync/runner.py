"""One run of one connector, in one or both directions: what the CLI, the demo and the scheduler call.

Pull goes before push: remote changes are merged into the log (conflicts detected against the merge base)
before local changes are sent, so a push never overwrites a remote edit it has not seen.
A run holds the connector's lock for its whole length: two runs of one connector would each read the same
checkpoint and deliver the same page twice.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from connector_core.connector import Capability, ConnectorError
from connector_core.project import Project
from connector_core.retry import RetryPolicy
from connector_core.sync.context import RunStopped, SyncContext
from connector_core.sync.pull import run_pull
from connector_core.sync.push import run_push
from connector_core.sync.report import DirectionReport, RunReport

log = logging.getLogger("dcsync.run")


class ConnectorBusy(Exception):
    """Another process is running this connector right now."""


@contextmanager
def connector_lock(project: Project, name: str) -> Iterator[None]:
    """An exclusive lock file beside the state store; the OS releases it if the process dies."""
    state_path = project.config.resolve_path(project.config.project.state.path)
    lock_path = Path(f"{state_path}.{name}.lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            raise ConnectorBusy(
                f"connector {name!r} is already running (lock held by pid {holder})"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)


@contextmanager
def sync_session(
    project: Project,
    name: str,
    *,
    dry_run: bool = False,
    stop: threading.Event | None = None,
    retry: RetryPolicy | None = None,
) -> Iterator[SyncContext]:
    """Hold the connector's lock and give the engine everything one run works with."""
    instance = project.instance(name)
    with connector_lock(project, name):
        connector = project.build_connector(name)
        try:
            yield SyncContext(
                name=name,
                connector=connector,
                eventlog=project.eventlog,
                state=project.state,
                mappings=project.mapping(name),
                batch_size=instance.batch_size,
                page_size=instance.page_size,
                retry=retry or instance.retry,
                dry_run=dry_run,
                park_limit=instance.park_limit,
                conflict_policy=instance.conflict_policy,
                merge_fallback=instance.merge_fallback,
                stop=stop or threading.Event(),
            )
        finally:
            connector.close()


def run_connector(
    project: Project,
    name: str,
    *,
    push: bool = True,
    pull: bool = True,
    dry_run: bool = False,
    trigger: str = "manual",
    stop: threading.Event | None = None,
    retry: RetryPolicy | None = None,
) -> RunReport:
    instance = project.instance(name)
    cls = project.connector_class(name)
    do_push = push and instance.push and Capability.PUSH in cls.capabilities
    do_pull = pull and instance.pull and Capability.PULL in cls.capabilities
    report = RunReport(connector=name, dry_run=dry_run)
    direction = "both" if do_push and do_pull else ("push" if do_push else "pull")
    with sync_session(project, name, dry_run=dry_run, stop=stop, retry=retry) as ctx:
        if not dry_run:
            report.run_id = project.state.start_run(name, direction, trigger)
        outcome = "ok"
        try:
            if do_pull:
                report.pull = DirectionReport("pull")
                _guarded(run_pull, ctx, report.pull)
            if do_push and not ctx.stop.is_set():
                report.push = DirectionReport("push")
                _guarded(run_push, ctx, report.push)
            if ctx.stop.is_set():
                outcome = "interrupted"
            elif not report.ok:
                outcome = "failed"
        except BaseException as exc:
            if report.run_id is not None:
                project.state.finish_run(
                    report.run_id, "failed", report.totals().as_dict(), f"{type(exc).__name__}: {exc}"
                )
                report.run_id = None
            raise
        if report.run_id is not None:
            project.state.finish_run(report.run_id, outcome, report.totals().as_dict(), report.error)
    return report


def _guarded(step, ctx: SyncContext, part: DirectionReport) -> None:  # type: ignore[no-untyped-def]
    try:
        step(ctx, part)
    except (RunStopped, ConnectorError) as exc:
        part.error = str(exc)
        log.error("%s %s stopped: %s", ctx.name, part.direction, exc)

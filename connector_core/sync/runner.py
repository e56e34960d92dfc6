"""One run of one connector, in one or both directions: what the CLI, the demo and the scheduler call.

Pull goes before push: remote changes are merged into the log (conflicts detected against the merge base)
before local changes are sent, so a push never overwrites a remote edit it has not seen.
A run holds the connector's lock for its whole length: two runs of one connector would each read the same
checkpoint and deliver the same page twice.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

from connector_core.connector import Capability, ConnectorError
from connector_core.logs import redact, run_context
from connector_core.project import Project
from connector_core.retry import RetryPolicy
from connector_core.scopes import FieldScopes
from connector_core.state.base import Direction
from connector_core.state.lease import ConnectorBusy, LeaseLost
from connector_core.sync.context import RunStopped, SyncContext
from connector_core.sync.pull import run_pull
from connector_core.sync.push import bulk_load_hold, run_push
from connector_core.sync.report import DirectionReport, RunReport

log = logging.getLogger("dcsync.run")

__all__ = [
    "ConnectorBusy",
    "RecordedRun",
    "batch_collector",
    "connector_lock",
    "guarded_step",
    "recorded_run",
    "run_connector",
    "sync_session",
]

ABANDONED = (
    "the process running it stopped before the run ended (killed or crashed); "
    "the next run resumed from its checkpoint"
)

_gc_lock = threading.Lock()
_gc_runs = 0
_gc_saved: tuple[int, ...] = ()
# A page of events, its entities and their payloads are thousands of young containers that mostly survive
# the page; with the default first threshold (700) the collector runs every few records and keeps promoting
# them, and the resulting full collections walk every object the process holds. A run is batch work: a
# higher first threshold cuts a push's time by about a tenth, and the memory it lets through is bounded by
# the page, not by the log.
BATCH_GC_THRESHOLD = 20_000


@contextmanager
def batch_collector() -> Iterator[None]:
    """Collect less often while any run is in progress in this process; the last run out restores."""
    global _gc_runs, _gc_saved
    with _gc_lock:
        if _gc_runs == 0:
            _gc_saved = gc.get_threshold()
            gc.set_threshold(max(BATCH_GC_THRESHOLD, _gc_saved[0]), *_gc_saved[1:])
        _gc_runs += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_runs -= 1
            if _gc_runs == 0:
                gc.set_threshold(*_gc_saved)


def connector_lock(project: Project, name: str, *, wait: bool = False) -> AbstractContextManager[None]:
    """The connector's lease, granted by the state store (connector_core/state/lease.py): a lock file beside
    a SQLite store, an advisory lock for a PostgreSQL one. Raises ``ConnectorBusy`` naming the holder, or with
    ``wait`` blocks until the holder is done."""
    return project.state.lease(name, wait=wait)


@contextmanager
def sync_session(
    project: Project,
    name: str,
    *,
    dry_run: bool = False,
    stop: threading.Event | None = None,
    retry: RetryPolicy | None = None,
    on_progress: Callable[[str, int, int | None], None] | None = None,
    wait: bool = False,
    lease: str | None = None,
) -> Iterator[SyncContext]:
    """Hold the connector's lock and give the engine everything one run works with.

    ``lease``: hold this lease instead of the connector's (a bulk load's shard holds ``NAME#shard-K``, so
    the shards of one connector run side by side)."""
    instance = project.instance(name)
    with connector_lock(project, lease or name, wait=wait):
        connector = project.build_connector(name)
        connector.retry_policy = retry or instance.retry  # for connectors that retry each call too
        try:
            yield SyncContext(
                name=name,
                connector=connector,
                eventlog=project.eventlog,
                state=project.state,
                mappings=project.mapping(name),
                batch_size=instance.batch_size,
                page_size=instance.page_size,
                in_flight=max(1, min(instance.in_flight, type(connector).max_in_flight)),
                retry=retry or instance.retry,
                dry_run=dry_run,
                park_limit=instance.park_limit,
                systemic_after=instance.systemic_after,
                conflict_policy=instance.conflict_policy,
                merge_fallback=instance.merge_fallback,
                scopes=FieldScopes.of(name, instance.scopes),
                stop=stop or threading.Event(),
                on_progress=on_progress,
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
    gate: Callable[[], bool] | None = None,
    on_progress: Callable[[str, int, int | None], None] | None = None,
    wait: bool = False,
) -> RunReport:
    """Run one connector. ``gate`` is asked once the connector's lock is held; ``False`` skips the run
    (the scheduler's tick was already run by another process)."""
    instance = project.instance(name)
    cls = project.connector_class(name)
    do_push = push and instance.push and Capability.PUSH in cls.capabilities
    do_pull = pull and instance.pull and Capability.PULL in cls.capabilities
    report = RunReport(connector=name, dry_run=dry_run)
    with (
        batch_collector(),
        sync_session(
            project, name, dry_run=dry_run, stop=stop, retry=retry, on_progress=on_progress, wait=wait
        ) as ctx,
    ):
        if gate is not None and not gate():
            if not dry_run:  # skipped, but the lease is ours: a record still running was left by the dead
                abandon_stale(project.state, name)
            report.skipped = True
            return report
        if dry_run:  # writes nothing, so it has no run record either
            _run_directions(ctx, report, do_pull=do_pull, do_push=do_push)
            return report
        # read with the lease held: a bulk load is planned and finished under it, so this stays true
        report.held = bulk_load_hold(project.state, name) if do_push else None
        if report.held is not None:  # expected while the load runs: not a failure, not a backoff
            do_push = False
            if not do_pull:
                report.skipped = True
                nothing = report.totals().as_dict
                with recorded_run(project.state, name, "push", trigger, nothing) as run:
                    report.run_id = run.run_id
                    run.finish("skipped", report.held)
                log.info("%s: push skipped: %s", name, report.held)
                return report
        direction = "both" if do_push and do_pull else ("push" if do_push else "pull")

        def totals() -> dict[str, int]:
            counts = report.totals().as_dict()
            if report.push is not None:  # the lag it left behind: the console charts it run by run
                try:
                    checkpoint = project.state.get_checkpoint(name, Direction.PUSH)
                    counts["push_lag"] = project.eventlog.count(checkpoint)
                except Exception:  # a store that failed the run: the run's own error is what to record
                    log.debug("%s: push lag not recorded", name, exc_info=True)
            return counts

        with recorded_run(project.state, name, direction, trigger, totals) as run:
            report.run_id = run.run_id
            _run_directions(ctx, report, do_pull=do_pull, do_push=do_push)
            notes = [report.error, report.held and f"push skipped: {report.held}"]
            error = "; ".join(n for n in notes if n) or None
            run.finish("ok" if report.ok else "failed", error, stopped=ctx.stop.is_set())
    return report


@dataclass
class RecordedRun:
    """The run record being written: ``finish`` says how the run ended, if it ends without raising."""

    run_id: int
    outcome: str = "ok"
    error: str | None = None

    def finish(self, outcome: str, error: str | None, *, stopped: bool = False) -> None:
        """``stopped``: the run was asked to stop (Ctrl-C, SIGTERM) and ended at a batch boundary."""
        self.outcome, self.error = ("interrupted" if stopped else outcome), error


def abandon_stale(state: Any, name: str) -> None:
    """Close as abandoned the runs of ``name`` still marked running: called with its lease held, so their
    process is gone (killed or crashed)."""
    abandoned = state.abandon_runs(name, ABANDONED)
    if abandoned:
        log.warning("%s: %d earlier run(s) ended without closing; marked abandoned", name, abandoned)


@contextmanager
def recorded_run(
    state: Any, name: str, direction: str, trigger: str, totals: Callable[[], dict[str, int]]
) -> Iterator[RecordedRun]:
    """A run's record in the run history, from start to end, for every kind of run (a connector's, a bulk
    load's shard): the lease is held, so a record still ``running`` was left by a process that is gone and
    is closed as abandoned first; an exception closes the record before it propagates, ``interrupted`` for
    a second Ctrl-C (the operator's choice, not a fault) and ``failed`` otherwise."""
    abandon_stale(state, name)
    run = RecordedRun(state.start_run(name, direction, trigger))
    try:
        with run_context(run_id=run.run_id, connector=name, trigger=trigger):
            yield run
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            outcome, error = "interrupted", "interrupted before the batch in flight was committed"
        else:
            outcome, error = "failed", f"{type(exc).__name__}: {exc}"
        state.finish_run(run.run_id, outcome, totals(), redact(error))
        raise
    state.finish_run(run.run_id, run.outcome, totals(), run.error)


def _run_directions(ctx: SyncContext, report: RunReport, *, do_pull: bool, do_push: bool) -> None:
    """Pull, then push: a pull that stopped has not seen every remote edit, and a push now would write
    over them."""
    if do_pull:
        report.pull = DirectionReport("pull")
        guarded_step(run_pull, ctx, report.pull)
    pulled = report.pull is None or report.pull.error is None
    if do_push and not ctx.stop.is_set() and pulled:
        report.push = DirectionReport("push")
        guarded_step(run_push, ctx, report.push)


def guarded_step(
    step: Callable[[SyncContext, DirectionReport], None], ctx: SyncContext, part: DirectionReport
) -> None:
    """Run one direction; a stop it reports (a remote that failed the run, a stop asked for, a lost lease)
    becomes the direction's error, so the run is closed with it and every other exception propagates to
    :func:`recorded_run`. Shared by runs and bulk-load shards, so both end the same way."""
    try:
        step(ctx, part)
    except (RunStopped, ConnectorError, LeaseLost) as exc:
        part.error = redact(str(exc))
        # the caller reports it (the CLI as its one error line, the scheduler in its log)
        log.info("%s %s stopped: %s", ctx.name, part.direction, part.error)

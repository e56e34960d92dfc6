"""Sharded bulk load: one connector's backlog pushed by K writers at once, each a share of the households.

A registry takes tens of records per second per writer, so an initial load of millions of registrants with
one writer takes days. A bulk load splits the backlog instead of the work of a run:

1. :func:`plan_bulk_load` takes the connector's lease for a moment and snapshots two cursors: the push
   checkpoint (where the backlog starts) and the event log's head (the *mark*, where it ends). The plan and
   its K shards are stored in the state store; while it is open, an ordinary push of the connector is
   refused with a one-line reason (``run_push``), so nothing races the shards. Planning again returns the
   open plan.
2. :func:`run_shard` pushes shard ``k`` of the plan: the events between the start and the mark, narrowed to
   the entities whose *household root* hashes to ``k``. The root is found by walking ``parent_guid`` up to
   an entity whose parent is not in the log; a household and all its members therefore go to one shard, and
   a registry never sees two writers on one household. The shard is the ordinary push engine
   (:func:`~connector_core.sync.push.run_push` with a :class:`~connector_core.sync.push.PushScope`): its own
   checkpoint (``NAME#<plan>/shard-k``), the mark as upper bound, the connector's links, intents, dead
   letters and parked children -- so a shard killed mid-batch and run again resumes at its checkpoint and
   looks up its pending creates before resending them (exactly once). Each shard holds its own lease
   (``NAME#shard-k``) and is a run in history under that name.
3. :func:`finish_bulk_load` moves the connector's push checkpoint to the mark once every shard is done and
   closes the plan, in one transaction. Pushes then continue from the mark; everything before it is linked,
   so they send nothing already sent.

The shard functions are plain: :func:`bulk_load` runs a plan's pending shards on a :class:`ShardExecutor`
(:class:`LocalProcesses` here: a process pool on this machine; a job queue can be another executor).

Shard membership follows the entities' current parents when a shard runs. An individual that moves to a
household of another shard between two shards' runs may be pushed by both (the second finds it linked and
sends an update, or nothing) or by neither before the mark -- its move is an event after the mark, which
the first push after the load sends. A deleted entity has no parent left to walk; it goes by its own guid.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from connector_core.connector import Capability
from connector_core.eventlog.base import EventLog
from connector_core.logs import redact
from connector_core.outcomes import shown_outcome
from connector_core.project import Project
from connector_core.state.base import BulkPlanRecord, Direction
from connector_core.state.lease import ConnectorBusy
from connector_core.sync.push import PushScope, run_push
from connector_core.sync.report import Counts, DirectionReport
from connector_core.sync.runner import batch_collector, guarded_step, recorded_run, sync_session

log = logging.getLogger("dcsync.bulk")

__all__ = [
    "BulkLoadError",
    "BulkLoadReport",
    "BulkPlan",
    "HouseholdShards",
    "LocalProcesses",
    "ShardExecutor",
    "ShardJob",
    "ShardReport",
    "bulk_load",
    "finish_bulk_load",
    "plan_bulk_load",
    "run_shard",
    "shard_of",
    "shard_states",
]

TRIGGER = "bulk-load"
ROOT_CACHE = 50_000
"""Guid -> household root entries kept per shard run: enough for the households of several pages, bounded
however large the log."""


class BulkLoadError(Exception):
    """A bulk load cannot go on as asked (unknown plan, wrong connector, shard out of range); one line."""


@dataclass(frozen=True, slots=True)
class BulkPlan:
    """A stored plan and where each of its shards stands."""

    id: str
    connector: str
    shards: int
    start: str | None
    mark: str | None
    status: str  # open | finished
    shard_status: tuple[str, ...]  # pending | running | done, per shard (see shard_states)
    shard_runs: tuple[int | None, ...] = ()  # each shard's latest run in history, None before its first

    @classmethod
    def of(cls, project: Project, record: BulkPlanRecord) -> BulkPlan:
        rows = project.state.bulk_shards(record.id)
        return cls(
            id=record.id,
            connector=record.connector,
            shards=record.shards,
            start=record.start_cursor,
            mark=record.mark,
            status=record.status,
            shard_status=tuple(r.status for r in rows),
            shard_runs=tuple(r.run_id for r in rows),
        )

    @property
    def pending(self) -> list[int]:
        return [k for k, status in enumerate(self.shard_status) if status != "done"]

    def checkpoint_key(self, shard: int) -> str:
        return f"{self.connector}#{self.id}/shard-{shard}"


@dataclass(slots=True)
class ShardReport:
    plan_id: str
    shard: int
    run_id: int | None = None
    done: bool = False
    counts: Counts = field(default_factory=Counts)
    checkpoint: str | None = None
    error: str | None = None
    seconds: float = 0.0


def shard_name(connector: str, shard: int) -> str:
    """The shard's lease and its name in run history."""
    return f"{connector}#shard-{shard}"


def shard_of(root_guid: str, shards: int) -> int:
    """The shard of a household root: a stable hash (blake2b), the same in every process and every run --
    never Python's ``hash``, which is salted per process."""
    digest = hashlib.blake2b(root_guid.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards


class HouseholdShards:
    """Which shard each entity belongs to: the shard of its household root.

    Roots are found a page at a time (one ``get_entities`` per level of the page's parent chains) and kept in
    a bounded cache, so a shard never loads the whole log. A parent cycle (a data error) takes the smallest
    guid on the cycle as root, so every entity of the cycle lands in one shard whichever it is reached from.
    """

    def __init__(self, eventlog: EventLog, shards: int, cache_size: int = ROOT_CACHE):
        if shards < 1:
            raise BulkLoadError(f"a bulk load needs at least one shard, not {shards}")
        self.eventlog = eventlog
        self.shards = shards
        self._cache: OrderedDict[str, str] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def _cached(self, guid: str) -> str | None:
        root = self._cache.get(guid)
        if root is not None:
            self._cache.move_to_end(guid)
        return root

    def _remember(self, chain: Iterable[str], root: str) -> None:
        for guid in chain:
            self._cache[guid] = root
            self._cache.move_to_end(guid)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def roots(self, guids: Iterable[str]) -> dict[str, str]:
        """Guid -> household root guid, for each of ``guids``."""
        with self._lock:
            out: dict[str, str] = {}
            chains: dict[str, list[str]] = {}
            for guid in guids:
                if guid in out or guid in chains:
                    continue
                known = self._cached(guid)
                if known is not None:
                    out[guid] = known
                else:
                    chains[guid] = [guid]
            while chains:
                tops = {chain[-1] for chain in chains.values()}
                found = self.eventlog.get_entities(tops)
                following: dict[str, list[str]] = {}
                for guid, chain in chains.items():
                    top = chain[-1]
                    entity = found.get(top)
                    if entity is None:  # not in the log: the entity below it is the root
                        root = chain[-2] if len(chain) > 1 else top
                        chain = chain[:-1] if len(chain) > 1 else chain
                    else:
                        parent = entity.parent_guid
                        if not parent:
                            root = top
                        elif parent in chain:
                            root = min(chain[chain.index(parent) :])
                        else:
                            cached = self._cached(parent)
                            if cached is None:
                                following[guid] = [*chain, parent]
                                continue
                            root = cached
                    out[guid] = root
                    self._remember(chain, root)
                chains = following
            return out

    def shard(self, guid: str) -> int:
        return shard_of(self.roots([guid])[guid], self.shards)

    def selector(self, shard: int) -> Callable[[Iterable[str]], set[str]]:
        """What a :class:`PushScope` narrows a page with: the guids of ``shard``."""

        def select(guids: Iterable[str]) -> set[str]:
            return {g for g, root in self.roots(guids).items() if shard_of(root, self.shards) == shard}

        return select


# -- the three steps -------------------------------------------------------------------------------


def plan_bulk_load(project: Project, connector: str, shards: int) -> BulkPlan:
    """Snapshot the push checkpoint and the log's head as a plan of ``shards`` shards, or return the
    connector's open plan (whatever its shard count: its shards may be half done)."""
    if shards < 1:
        raise BulkLoadError(f"a bulk load needs at least one shard, not {shards}")
    project.instance(connector)  # an unknown name is a config error naming the known ones
    cls = project.connector_class(connector)
    if Capability.PUSH not in cls.capabilities or not project.instance(connector).push:
        raise BulkLoadError(f"connector {connector!r} does not push, so it has nothing to bulk load")
    existing = project.state.open_bulk_plan(connector)
    if existing is not None:
        return BulkPlan.of(project, existing)
    # the connector's lease: no ordinary push is between reading its checkpoint and moving it
    with project.state.lease(connector, wait=True):
        existing = project.state.open_bulk_plan(connector)
        if existing is None:
            start = project.state.get_checkpoint(connector, Direction.PUSH)
            mark = project.eventlog.head()
            existing = project.state.create_bulk_plan(uuid.uuid4().hex[:12], connector, shards, start, mark)
            log.info(
                "%s: bulk load %s planned: %d shards, events after %s up to %s",
                connector,
                existing.id,
                shards,
                start,
                mark,
            )
    return BulkPlan.of(project, existing)


def _plan(project: Project, connector: str, plan_id: str) -> BulkPlan:
    record = project.state.get_bulk_plan(plan_id)
    if record is None:
        raise BulkLoadError(f"no bulk load plan {plan_id!r}")
    if record.connector != connector:
        raise BulkLoadError(
            f"bulk load plan {plan_id} is for connector {record.connector!r}, not {connector!r}"
        )
    return BulkPlan.of(project, record)


def run_shard(
    project: Project, connector: str, plan_id: str, shard: int, *, stop: threading.Event | None = None
) -> ShardReport:
    """Push shard ``shard`` of plan ``plan_id``; safe to run again (it resumes at its own checkpoint).

    Raises :class:`ConnectorBusy` if the shard is running elsewhere, :class:`BulkLoadError` for a plan or
    shard that does not exist. A shard of a finished plan has nothing to do."""
    plan = _plan(project, connector, plan_id)
    if not 0 <= shard < plan.shards:
        raise BulkLoadError(f"bulk load plan {plan_id} has shards 0-{plan.shards - 1}, not {shard}")
    report = ShardReport(plan_id=plan_id, shard=shard)
    if plan.status != "open" or plan.shard_status[shard] == "done":
        report.done = True
        report.checkpoint = plan.mark
        return report
    name = shard_name(connector, shard)
    scope = PushScope(
        checkpoint=plan.checkpoint_key(shard),
        start=plan.start,
        until=plan.mark,
        select=HouseholdShards(project.eventlog, plan.shards).selector(shard),
    )
    state = project.state
    with (
        batch_collector(),
        sync_session(project, connector, stop=stop, lease=name) as ctx,
        recorded_run(state, name, "push", TRIGGER, report.counts.as_dict) as run,
    ):
        report.run_id = run.run_id
        with state.transaction() as tx:
            tx.set_bulk_shard(plan_id, shard, "running", report.run_id)
        part = DirectionReport("push", counts=report.counts)
        if plan.mark is not None and plan.mark != plan.start:  # else the log held nothing new
            guarded_step(lambda c, p: run_push(c, p, scope), ctx, part)
        else:
            part.checkpoint_after = plan.mark
        report.error = part.error
        report.checkpoint = part.checkpoint_after
        report.done = part.error is None and not ctx.stop.is_set() and part.checkpoint_after == plan.mark
        with state.transaction() as tx:
            tx.set_bulk_shard(plan_id, shard, "done" if report.done else "pending")
        run.finish("ok" if report.done else "failed", report.error, stopped=ctx.stop.is_set())
    return report


def shard_states(project: Project, plan: BulkPlan) -> list[str]:
    """Where each shard of ``plan`` stands, for an operator: ``done``, ``running`` or ``pending``, with its
    latest run. A stored ``running`` is only as true as that run: a shard stopped by Ctrl-C or an exception
    leaves it, so a shard whose run has ended is pending, and the run's outcome says how it ended."""
    states = []
    for status, run_id in zip(plan.shard_status, plan.shard_runs, strict=True):
        run = project.state.get_run(run_id) if run_id is not None else None
        if run is None:
            states.append("done" if status == "done" else "pending")
        elif status == "done" or (status == "running" and run.outcome == "running"):
            states.append(f"{status} (run {run.id})")
        else:
            states.append(f"pending (run {run.id} ended {shown_outcome(run.outcome, run.counts)})")
    return states


def finish_bulk_load(project: Project, connector: str, plan_id: str) -> bool:
    """Move the connector's push checkpoint to the plan's mark and close the plan, once every shard is done.

    ``True`` when the plan is finished (now or before: idempotent); ``False`` while shards remain, with the
    reason logged (``pending_reason`` gives it to a caller)."""
    plan = _plan(project, connector, plan_id)
    if plan.status == "finished":
        return True
    reason = pending_reason(plan)
    if reason is not None:
        log.warning("%s", reason)
        return False
    with project.state.lease(connector, wait=True):
        again = project.state.get_bulk_plan(plan_id)
        if again is not None and again.status == "finished":
            return True  # another finisher was first; pushes may have moved the checkpoint on since
        with project.state.transaction() as tx:
            tx.set_checkpoint(connector, Direction.PUSH, plan.mark)
            tx.finish_bulk_plan(plan_id)
    log.info("%s: bulk load %s finished; pushes continue from event cursor %s", connector, plan_id, plan.mark)
    return True


def pending_reason(plan: BulkPlan) -> str | None:
    """Why ``plan`` cannot be finished yet, in one line (``None``: it can)."""
    pending = plan.pending
    if not pending:
        return None
    return (
        f"bulk load {plan.id} of {plan.connector} cannot finish: shard(s) {', '.join(map(str, pending))} of "
        f"{plan.shards} not done; run them again (each resumes at its own checkpoint)"
    )


# -- executors -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ShardJob:
    """One shard to run, as a process or a job queue can carry it: the project by its file."""

    config: str
    connector: str
    plan_id: str
    shard: int


class ShardExecutor(Protocol):
    """Runs shard jobs somewhere and reports each as it ends (in any order)."""

    workers: int

    def run(self, jobs: Sequence[ShardJob]) -> Iterator[ShardReport]: ...


def run_job(job: ShardJob) -> ShardReport:
    """A shard job in this process: open the project, run the shard, close it. Never raises: a failure is
    the report's one-line error."""
    import time

    started = time.perf_counter()
    try:
        project = Project.open(job.config)
    except Exception as exc:  # noqa: BLE001 - the report carries it to the caller
        return ShardReport(job.plan_id, job.shard, error=redact(f"{type(exc).__name__}: {exc}"))
    try:
        report = run_shard(project, job.connector, job.plan_id, job.shard)
    except (ConnectorBusy, BulkLoadError) as exc:
        report = ShardReport(job.plan_id, job.shard, error=redact(str(exc)))
    except Exception as exc:  # noqa: BLE001
        report = ShardReport(job.plan_id, job.shard, error=redact(f"{type(exc).__name__}: {exc}"))
    finally:
        project.close()
    report.seconds = time.perf_counter() - started
    return report


class LocalProcesses:
    """Shards in a pool of ``workers`` processes on this machine (spawned: each opens its own project,
    connections and leases, as a worker on another machine would).

    Used as a context manager, the pool outlives one :meth:`run` and :meth:`warm` starts its processes ahead
    (a benchmark then times the load, not the interpreters starting); otherwise each run has its own pool."""

    def __init__(self, workers: int):
        if workers < 1:
            raise BulkLoadError(f"a bulk load needs at least one process, not {workers}")
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None

    def _new_pool(self, workers: int) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))

    def __enter__(self) -> LocalProcesses:
        self._pool = self._new_pool(self.workers)
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def warm(self) -> None:
        """Start every process of the pool and import the engine in it."""
        if self._pool is None:
            raise RuntimeError("warm() is for a pool opened with `with LocalProcesses(n)`")
        list(self._pool.map(_warm, [0.2] * self.workers))

    def run(self, jobs: Sequence[ShardJob]) -> Iterator[ShardReport]:
        if not jobs:
            return
        if self._pool is not None:
            yield from self._run(self._pool, jobs)
            return
        with self._new_pool(min(self.workers, len(jobs))) as pool:
            yield from self._run(pool, jobs)

    @staticmethod
    def _run(pool: ProcessPoolExecutor, jobs: Sequence[ShardJob]) -> Iterator[ShardReport]:
        futures = {pool.submit(run_job, job): job for job in jobs}
        for future in as_completed(futures):
            try:
                yield future.result()
            except BrokenProcessPool:
                # a worker was killed (the pool then stops the others): each shard stays resumable
                job = futures[future]
                yield ShardReport(
                    job.plan_id,
                    job.shard,
                    error="a worker process died before the shard ended (killed?); run the bulk load "
                    "again to resume it",
                )


def _warm(seconds: float) -> None:
    """Hold a pool process a moment, so that each process of the pool gets one."""
    import time

    time.sleep(seconds)


@dataclass(slots=True)
class BulkLoadReport:
    plan: BulkPlan
    shards: list[ShardReport] = field(default_factory=list)
    finished: bool = False
    reason: str | None = None

    @property
    def counts(self) -> Counts:
        total = Counts()
        for shard in self.shards:
            total.add(shard.counts)
        return total


def bulk_load(
    project: Project,
    connector: str,
    shards: int,
    executor: ShardExecutor,
    *,
    on_shard: Callable[[ShardReport], None] | None = None,
) -> BulkLoadReport:
    """Plan (or resume) a bulk load, run its pending shards on ``executor``, and finish it if all are done."""
    plan = plan_bulk_load(project, connector, shards)
    config = str(Path(project.config.path).resolve())
    jobs = [ShardJob(config, connector, plan.id, k) for k in plan.pending]
    report = BulkLoadReport(plan)
    for shard in executor.run(jobs):
        report.shards.append(shard)
        if on_shard is not None:
            on_shard(shard)
    report.shards.sort(key=lambda s: s.shard)
    report.finished = finish_bulk_load(project, connector, plan.id)
    report.plan = _plan(project, connector, plan.id)
    if not report.finished:
        report.reason = pending_reason(report.plan)
    return report

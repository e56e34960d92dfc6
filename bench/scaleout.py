"""Scale-out of a bulk load: the same households pushed into the cost-faithful fake OpenSPP by 1, 2 and 4
writers (``connector_core/sync/bulk.py``: one shard per writer), in one run; prints records per second for
each and the speedup of 4 writers over 1 (goal >= 3x).

The fake runs as its own process with ``--costs real`` (``connectors/openspp/fake/costs.py``: every call
charged what a real Odoo 17 + OpenG2P registry takes, about 5 ms per partner and 7-18 ms per call) and
``--odoo-workers`` modelled Odoo workers (default 8): a registry sized for a national load runs several
worker processes, and the bulk load can only scale up to their number -- with the 2 workers that were
measured, 4 writers are capped at 2x. Before the loads, the bench checks that the fake overlaps concurrent
calls (``--odoo-workers`` calls at once take about as long as one) and prints the overlap it found: without
it, the registry would not be the bottleneck this bench models.

Writers are pluggable (``EXECUTORS``): ``local`` runs the shards in processes on this machine; ``fleet``
runs them as ``bulk_shard`` jobs on that many ``dcsync worker`` processes (the ``workers`` extra and the
PostgreSQL at ``DCSYNC_TEST_POSTGRES_URL``), as ``dcsync bulk-load`` does on a fleet. An executor's
workers are started (and warmed) before the clock starts, as a
fleet's workers are running before a load; the time is the load's: plan, shards, finish. Each writer
count starts from an empty registry (the fake is reset) and a fresh project with the same log; the
registry's census is checked to be identical every time.

Usage: python bench/scaleout.py [--households 300] [--members 4] [--writers 1,2,4] [--executor local|fleet]
                                [--odoo-workers 8] [--costs-scale 1] [--batch-size 100]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import httpx
import psycopg
import yaml
from openspp import MAPPING, Target, fake_openspp_process  # bench/openspp.py

from connector_core.config import load_config
from connector_core.events import FormSubmission
from connector_core.project import Project
from connector_core.sync.bulk import (
    LocalProcesses,
    ShardExecutor,
    ShardJob,
    ShardReport,
    bulk_load,
    shard_name,
)
from connector_core.sync.report import Counts
from connectors.openspp.fake import DATABASE, REGISTRAR_LOGIN, REGISTRAR_PASSWORD
from connectors.openspp.sample import registry_log

POSTGRES_URL = os.environ.get("DCSYNC_TEST_POSTGRES_URL") or "postgresql://postgres@127.0.0.1:5432/test"


class Executor(ShardExecutor, Protocol):
    """What the bench needs of an executor: a context manager whose workers can be started ahead."""

    def __enter__(self) -> Executor: ...

    def __exit__(self, *_exc: object) -> None: ...

    def warm(self) -> None: ...


class FleetWorkers:
    """``writers`` ``dcsync worker`` processes (concurrency 1 each) on a queue schema of their own in the
    PostgreSQL at ``DCSYNC_TEST_POSTGRES_URL``: shards deferred as ``bulk_shard`` jobs, as ``dcsync
    bulk-load`` does on a fleet, and reported from the shard runs the workers recorded."""

    def __init__(self, writers: int) -> None:
        self.workers = writers
        self._dir = tempfile.TemporaryDirectory(prefix="dcsync-fleet-")
        self._schema = f"dcsync_bench_q_{uuid.uuid4().hex[:10]}"
        self._config = Path(self._dir.name) / "fleet.yaml"
        self._config.write_text(
            yaml.safe_dump(
                {
                    "workers": {
                        "postgres": POSTGRES_URL,
                        "schema": self._schema,
                        "concurrency": 1,
                        "heartbeat": 1,
                        "stalled_after": 60,
                    }
                }
            )
        )
        self._procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> FleetWorkers:
        dcsync = [sys.executable, "-m", "connector_core.cli"]
        subprocess.run([*dcsync, "queue", "init", "-c", str(self._config)], check=True, capture_output=True)
        self._procs = [
            subprocess.Popen(
                [*dcsync, "worker", "-c", str(self._config), "--name", f"bench-{n}"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd=self._dir.name,
            )
            for n in range(self.workers)
        ]
        return self

    def warm(self) -> None:
        """Until every worker has registered with the queue (its heartbeat row)."""
        deadline = time.monotonic() + 60
        while self._registered() < self.workers:
            if time.monotonic() > deadline:
                raise SystemExit("the fleet's workers did not start")
            time.sleep(0.2)

    def _registered(self) -> int:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            try:
                row = conn.execute(f"SELECT count(*) FROM {self._schema}.procrastinate_workers").fetchone()
            except psycopg.errors.UndefinedTable:
                return 0
        return int(row[0]) if row else 0

    def run(self, jobs: Sequence[ShardJob]) -> Iterator[ShardReport]:
        from connector_core.workers.app import build_app, queue_settings
        from connector_core.workers.bulk_tasks import defer_shards

        settings = queue_settings(load_config(self._config))
        app = build_app(settings)
        if not jobs:
            return
        ids: dict[int, ShardJob] = {}
        by_shard = {job.shard: job for job in jobs}  # one plan's shards, as bulk_load hands them over
        first = jobs[0]
        with app.open():  # as `dcsync bulk-load` defers them on a fleet: same tasks, locks and queue
            deferred = defer_shards(
                app, first.config, load_config(first.config), first.connector, first.plan_id, list(by_shard)
            )
        for shard, job_id in deferred.items():
            assert job_id is not None
            ids[job_id] = by_shard[shard]
        started = time.perf_counter()
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            while ids:
                ended = conn.execute(
                    f"SELECT id, status::text FROM {self._schema}.procrastinate_jobs "
                    "WHERE id = ANY(%s) AND status IN ('succeeded', 'failed')",
                    (list(ids),),
                ).fetchall()
                for job_id, status in ended:
                    job = ids.pop(job_id)
                    yield self._report(job, status, time.perf_counter() - started)
                time.sleep(0.05)

    @staticmethod
    def _report(job: ShardJob, status: str, seconds: float) -> ShardReport:
        project = Project.open(job.config)
        try:
            (last,) = project.state.runs(shard_name(job.connector, job.shard), limit=1)
        finally:
            project.close()
        counts = Counts(**{k: v for k, v in last.counts.items() if k in Counts.__dataclass_fields__})
        done = status == "succeeded"
        error = None if done else (last.error or "the shard job failed")
        return ShardReport(job.plan_id, job.shard, last.id, done, counts, None, error, seconds)

    def __exit__(self, *_exc: object) -> None:
        for proc in self._procs:
            proc.send_signal(signal.SIGTERM)
        for proc in self._procs:
            proc.wait(timeout=60)
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{self._schema}" CASCADE')
        self._dir.cleanup()


EXECUTORS: dict[str, Callable[[int], Executor]] = {"local": LocalProcesses, "fleet": FleetWorkers}
"""Executor name -> factory of an executor with that many writers (``fleet``: the workers extra and the
PostgreSQL at ``DCSYNC_TEST_POSTGRES_URL``)."""


@dataclass(frozen=True, slots=True)
class Load:
    writers: int
    seconds: float
    records: int
    census: dict[str, int]
    shard_seconds: list[float]


def overlap(url: str, calls: int) -> float:
    """How many of ``calls`` simultaneous ``common.version`` calls the fake serves at once: the time of one
    after another over the time of all at once (``calls`` if fully concurrent, 1 if serialised)."""

    def one(client: httpx.Client) -> None:
        body = {
            "jsonrpc": "2.0",
            "method": "call",
            "id": 1,
            "params": {"service": "common", "method": "version", "args": []},
        }
        client.post(f"{url}/jsonrpc", json=body).raise_for_status()

    clients = [httpx.Client(timeout=30) for _ in range(calls)]
    try:
        for client in clients:
            one(client)  # connections open
        started = time.perf_counter()
        for client in clients:
            one(client)
        serial = time.perf_counter() - started
        with ThreadPoolExecutor(calls) as pool:
            started = time.perf_counter()
            list(pool.map(one, clients))
            parallel = time.perf_counter() - started
    finally:
        for client in clients:
            client.close()
    return serial / parallel


def load(
    url: str, events: list[FormSubmission], writers: int, executor: str, batch_size: int, in_flight: int
) -> Load:
    Target(url).reset()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "dcsync.yaml"
        connector = {
            "type": "openspp",
            "mapping": str(MAPPING),
            "batch_size": batch_size,
            "page_size": 5000,
            "in_flight": in_flight,
            "settings": {
                "url": url,
                "database": DATABASE,
                "username": REGISTRAR_LOGIN,
                "password": REGISTRAR_PASSWORD,
                "batch_size": batch_size,
                "in_flight": in_flight,
            },
        }
        config.write_text(yaml.safe_dump({"connectors": {"bench": connector}}))
        project = Project.open(config)
        try:
            project.eventlog.append(events)
            records = sum(1 for _ in project.eventlog.iter_entities())
            with EXECUTORS[executor](writers) as pool:
                pool.warm()  # workers of a fleet are running before a load: their start is not timed
                started = time.perf_counter()
                report = bulk_load(project, "bench", writers, pool)
                elapsed = time.perf_counter() - started
        finally:
            project.close()
    assert report.finished, report.reason
    assert report.counts.created == records and report.counts.dead_lettered == 0, report.counts
    return Load(writers, elapsed, records, Target(url).census(), [s.seconds for s in report.shards])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--households", type=int, default=300)
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--writers", default="1,2,4", help="writer counts, one bulk load each")
    parser.add_argument("--executor", choices=sorted(EXECUTORS), default="local")
    parser.add_argument("--odoo-workers", type=int, default=8, help="modelled Odoo workers of the fake")
    parser.add_argument("--costs-scale", type=float, default=1.0, help="multiply the real costs")
    parser.add_argument("--batch-size", type=int, default=100, help="records per push call")
    parser.add_argument("--in-flight", type=int, default=1, help="requests in flight per writer")
    args = parser.parse_args()
    writer_counts = [int(w) for w in str(args.writers).split(",") if w.strip()]
    events = list(registry_log(households=args.households, members=args.members))
    loads: list[Load] = []
    with fake_openspp_process("real", args.costs_scale, args.odoo_workers) as url:
        concurrency = overlap(url, max(writer_counts))
        for writers in writer_counts:
            loads.append(load(url, events, writers, args.executor, args.batch_size, args.in_flight))
    first = loads[0]
    assert all(x.census == first.census for x in loads), [x.census for x in loads]
    print(
        f"{first.records} registrants in {args.households} households ({first.census}); fake OpenSPP with "
        f"real-Odoo costs x{args.costs_scale:g}, {args.odoo_workers} modelled Odoo workers; "
        f"{max(writer_counts)} simultaneous calls overlap {concurrency:.1f}x; executor {args.executor}, "
        f"batch {args.batch_size}, in flight {args.in_flight}"
    )
    for x in loads:
        shards = ", ".join(f"{s:.1f}" for s in x.shard_seconds)
        print(
            f"{x.writers} writer{'s' if x.writers > 1 else ' '}  {x.seconds:7.2f}s  "
            f"{x.records / x.seconds:7,.0f} records/s  (shards: {shards} s)"
        )
    by_writers = {x.writers: x for x in loads}
    if 1 in by_writers and 4 in by_writers:
        speedup = by_writers[1].seconds / by_writers[4].seconds
        print(f"speedup of 4 writers over 1: {speedup:.2f}x (goal >= 3x)")


if __name__ == "__main__":
    main()

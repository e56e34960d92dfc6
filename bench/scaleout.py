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

Writers are pluggable (``EXECUTORS``): ``local`` runs the shards in processes on this machine; a job queue
can add its own column. An executor's workers are started (and warmed) before the clock starts, as a
fleet's workers are running before a load; the time is the load's: plan, shards, finish. Each writer
count starts from an empty registry (the fake is reset) and a fresh project with the same log; the
registry's census is checked to be identical every time.

Usage: python bench/scaleout.py [--households 300] [--members 4] [--writers 1,2,4] [--executor local]
                                [--odoo-workers 8] [--costs-scale 1] [--batch-size 100]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import httpx
import yaml
from openspp import MAPPING, census, fake_openspp_process, reset  # bench/openspp.py

from connector_core.events import FormSubmission
from connector_core.project import Project
from connector_core.sync.bulk import LocalProcesses, ShardExecutor, bulk_load
from connectors.openspp.fake import DATABASE, REGISTRAR_LOGIN, REGISTRAR_PASSWORD
from connectors.openspp.sample import registry_log


class Executor(ShardExecutor, Protocol):
    """What the bench needs of an executor: a context manager whose workers can be started ahead."""

    def __enter__(self) -> Executor: ...

    def __exit__(self, *_exc: object) -> None: ...

    def warm(self) -> None: ...


EXECUTORS: dict[str, Callable[[int], Executor]] = {"local": LocalProcesses}
"""Executor name -> factory of an executor with that many writers."""


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
    reset(url)
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
    return Load(writers, elapsed, records, census(url), [s.seconds for s in report.shards])


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

"""Push throughput: the engine (batched) against one request per record, as DataCollect's adapters do.

Both push the same entities to the same mock server over loopback HTTP in this run; the figure that matters
is the ratio. Usage: python bench/push.py [--entities 20000] [--batch-size 500]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import httpx

from connector_core.project import Project
from connector_core.sample import mobile_log
from connector_core.sync.runner import run_connector
from connector_core.testing.server import serve
from connectors.mock.server import create_app


def bench_engine(entities: int, batch_size: int) -> tuple[float, int]:
    households = max(1, entities // 5)
    with tempfile.TemporaryDirectory() as tmp, serve(create_app()) as server:
        config = Path(tmp) / "dcsync.yaml"
        config.write_text(
            "connectors:\n  bench:\n    type: mock\n"
            f"    batch_size: {batch_size}\n    page_size: 5000\n"
            f"    settings:\n      url: {server.url}\n"
        )
        project = Project.open(config)
        project.eventlog.append(mobile_log(households=households, members=4, updates=0))
        started = time.perf_counter()
        report = run_connector(project, "bench", pull=False)
        elapsed = time.perf_counter() - started
        project.close()
        assert report.ok, report.error
        return elapsed, report.push.counts.created


def bench_per_record(entities: int) -> tuple[float, int]:
    households = max(1, entities // 5)
    events = list(mobile_log(households=households, members=4, updates=0))
    with serve(create_app()) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        started = time.perf_counter()
        for event in events:
            client.post("/", json={"data": [event.to_json()]}).raise_for_status()
        elapsed = time.perf_counter() - started
    return elapsed, len(events)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entities", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=500)
    args = parser.parse_args()
    engine_s, engine_n = bench_engine(args.entities, args.batch_size)
    naive_s, naive_n = bench_per_record(args.entities)
    engine_rate, naive_rate = engine_n / engine_s, naive_n / naive_s
    print(
        f"engine (batch {args.batch_size}): {engine_n} records in {engine_s:.2f}s = {engine_rate:,.0f} records/s"
    )
    print(f"one request per record:     {naive_n} records in {naive_s:.2f}s = {naive_rate:,.0f} records/s")
    print(f"ratio engine/per-record: {engine_rate / naive_rate:.1f}x (goal >= 10x)")


if __name__ == "__main__":
    main()

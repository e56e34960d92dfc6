"""Prometheus metrics: what an operator alerts on (failed runs, growing lag, dead letters piling up).

A registry of our own (not the process-global one) so tests and embedded uses do not collide; ``serve``
exposes it on 127.0.0.1 by default.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from connector_core.outcomes import shown_outcome
from connector_core.state.base import OpenCounts
from connector_core.sync.report import RunReport


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.runs = Counter(
            "dcsync_runs",
            "Runs by connector, direction and outcome (ok, degraded: left new dead letters, failed, skipped: "
            "a push held back by a bulk load in progress)",
            ["connector", "direction", "outcome"],
            registry=r,
        )
        self.records = Counter(
            "dcsync_records",
            "Records by connector, direction and what happened to them",
            ["connector", "direction", "result"],
            registry=r,
        )
        self.retries = Counter("dcsync_retries", "Retried requests", ["connector", "direction"], registry=r)
        self.duration = Histogram(
            "dcsync_run_duration_seconds",
            "How long runs take",
            ["connector"],
            registry=r,
            buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600),
        )
        self.push_lag = Gauge(
            "dcsync_push_lag_events", "Events in the log after the push checkpoint", ["connector"], registry=r
        )
        self.dead_letters = Gauge("dcsync_dead_letters_open", "Open dead letters", ["connector"], registry=r)
        self.conflicts = Gauge("dcsync_conflicts_open", "Open conflicts", ["connector"], registry=r)
        self.parked = Gauge(
            "dcsync_parked_children",
            "Children waiting for their parent to be delivered",
            ["connector"],
            registry=r,
        )
        self.last_success = Gauge(
            "dcsync_last_success_timestamp_seconds",
            "When the connector last ran without error",
            ["connector"],
            registry=r,
        )

    def record_run(self, report: RunReport, duration: float, finished_at: float) -> None:
        name = report.connector
        if report.held:  # asked for, not run: counted, so a dashboard sees pushes paused, not just quiet
            self.runs.labels(name, "push", "skipped").inc()
        if report.skipped:  # nothing ran: no duration, and not a success either
            return
        for part in (report.pull, report.push):
            if part is None:
                continue
            counts = part.counts.as_dict()
            outcome = shown_outcome("failed" if part.error else "ok", counts)
            self.runs.labels(name, part.direction, outcome).inc()
            for result in (
                "created",
                "updated",
                "deleted",
                "unchanged",
                "dead_lettered",
                "appended",
                "parked",
                "conflicts",
                "out_of_scope",
            ):
                if counts[result]:
                    self.records.labels(name, part.direction, result).inc(counts[result])
            if counts["retries"]:
                self.retries.labels(name, part.direction).inc(counts["retries"])
        self.duration.labels(name).observe(duration)
        if report.ok:
            self.last_success.labels(name).set(finished_at)

    def record_failure(self, connector: str, direction: str) -> None:
        self.runs.labels(connector, direction, "failed").inc()

    def set_levels(self, connector: str, *, lag: int, waiting: OpenCounts) -> None:
        self.push_lag.labels(connector).set(lag)
        self.dead_letters.labels(connector).set(waiting.dead_letters)
        self.conflicts.labels(connector).set(waiting.conflicts)
        self.parked.labels(connector).set(waiting.parked)

    def serve(self, port: int, addr: str = "127.0.0.1") -> None:
        start_http_server(port, addr=addr, registry=self.registry)

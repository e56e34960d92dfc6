"""Where each connector stands, computed once for ``dcsync status`` and the console's overview.

Both front ends answer the same question (is it running, what waits for an operator); computing it in one
place keeps their numbers equal: the outcome shown (``degraded``), the push lag counted by the log, the open
work counted by the store, the next tick from the same schedules the scheduler fires.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from connector_core.events import format_timestamp
from connector_core.outcomes import shown_outcome
from connector_core.state.base import Direction


@dataclass(frozen=True, slots=True)
class ConnectorStatus:
    connector: str
    last_run: str | None
    last_outcome: str | None
    last_dead_lettered: int
    last_error: str | None
    next_run: str | None
    push_lag: int
    dead_letters: int
    conflicts: int
    parked: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def connector_statuses(project: Any) -> list[ConnectorStatus]:
    """One row per connector of ``project`` (an open :class:`~connector_core.project.Project`)."""
    from connector_core.scheduler import jobs_from_config

    jobs = jobs_from_config(project.config)
    rows = []
    for name in project.connector_names():
        last = project.state.runs(name, limit=1)
        nexts = [t for job in jobs if job.connector == name for t in job.next_times(1)]
        checkpoint = project.state.get_checkpoint(name, Direction.PUSH)
        waiting = project.state.open_counts(name)
        rows.append(
            ConnectorStatus(
                connector=name,
                last_run=last[0].started_at if last else None,
                last_outcome=shown_outcome(last[0].outcome, last[0].counts) if last else None,
                last_dead_lettered=last[0].counts.get("dead_lettered", 0) if last else 0,
                last_error=last[0].error if last else None,
                next_run=format_timestamp(min(nexts)) if nexts else None,
                push_lag=project.eventlog.count(checkpoint),
                dead_letters=waiting.dead_letters,
                conflicts=waiting.conflicts,
                parked=waiting.parked,
            )
        )
    return rows

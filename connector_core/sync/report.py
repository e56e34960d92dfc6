"""What one run did, counted the same way everywhere (CLI summary, run history, metrics)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class Counts:
    read: int = 0  # events read from the log (push) or records read from the remote (pull)
    created: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0
    skipped: int = 0  # no mapping applies, or nothing to do
    dead_lettered: int = 0
    retries: int = 0
    appended: int = 0  # events appended to the log by a pull
    conflicts: int = 0
    parked: int = 0
    out_of_scope: int = 0  # records sent or pulled without some fields, or not at all, by the field scopes

    def add(self, other: Counts) -> None:
        for key, value in asdict(other).items():
            setattr(self, key, getattr(self, key) + value)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class PlannedOperation:
    """One line of a dry run's plan (kept for real runs only when asked)."""

    operation: str
    ref: str
    entity_name: str | None
    detail: str = ""


@dataclass
class DirectionReport:
    direction: str
    counts: Counts = field(default_factory=Counts)
    plan: list[PlannedOperation] = field(default_factory=list)
    checkpoint_before: str | None = None
    checkpoint_after: str | None = None
    error: str | None = None


@dataclass
class RunReport:
    connector: str
    run_id: int | None = None
    push: DirectionReport | None = None
    pull: DirectionReport | None = None
    dry_run: bool = False
    skipped: bool = False  # nothing ran: the tick was already run, or the push it was is held (``held``)
    held: str | None = None  # why the push did not run although asked for (a bulk load in progress)

    @property
    def ok(self) -> bool:
        return all(d is None or d.error is None for d in (self.push, self.pull))

    @property
    def error(self) -> str | None:
        errors = [d.error for d in (self.push, self.pull) if d is not None and d.error]
        return "; ".join(errors) if errors else None

    def totals(self) -> Counts:
        total = Counts()
        for part in (self.push, self.pull):
            if part is not None:
                total.add(part.counts)
        return total

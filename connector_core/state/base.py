"""The state store contract: what dcsync remembers about each connector, committed with each batch.

Checkpoints, links and dead letters move together in one transaction (:meth:`StateStore.transaction`), so a
crash leaves either the whole outcome of a batch or none of it, and the checkpoint never passes a record that
is neither delivered nor dead-lettered.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable


class Direction(StrEnum):
    PUSH = "push"
    PULL = "pull"


@dataclass(slots=True)
class Link:
    """Entity guid <-> external id for one connector, with the mapped payload last synced.

    ``snapshot`` is the base of every diff: an unchanged mapped payload sends nothing, a pulled record equal
    to it appends nothing, and a three-way merge compares both sides against it.
    """

    connector: str
    entity_guid: str
    external_id: str
    entity_name: str | None = None
    snapshot: dict[str, Any] = field(default_factory=dict)
    remote_version: str | None = None
    synced_at: str | None = None
    deleted: bool = False
    base: dict[str, Any] = field(default_factory=dict)
    """The entity's data as of the last sync, in entity space: the common ancestor of a three-way merge."""


class DuplicateExternalIdError(ValueError):
    """Another entity already holds this external id for this connector: two local records would
    otherwise push to (and be overwritten by) one remote record."""


@dataclass(slots=True)
class Parked:
    """A child held back until its parent is delivered (never dropped: dead-lettered after a limit)."""

    connector: str
    entity_guid: str
    parent_guid: str
    reason: str
    attempts: int
    created_at: str
    updated_at: str


@dataclass(slots=True)
class Conflict:
    """An entity changed on both sides since its last sync, with the three versions that disagree."""

    id: int
    connector: str
    entity_guid: str
    external_id: str
    policy: str
    status: str  # open | resolved
    resolution: str | None
    base: dict[str, Any]
    local: dict[str, Any]
    remote: dict[str, Any]
    remote_version: str | None
    created_at: str
    updated_at: str


@dataclass(slots=True)
class DeadLetter:
    id: int
    connector: str
    direction: Direction
    ref: str
    reason: str
    payload: dict[str, Any]
    attempts: int
    status: str  # open | replayed | discarded
    created_at: str
    updated_at: str


@dataclass(slots=True)
class RunRecord:
    id: int
    connector: str
    direction: str  # push | pull | both
    trigger: str  # manual | schedule | demo
    started_at: str
    finished_at: str | None
    # running | ok | degraded | failed | interrupted | abandoned | skipped (a push a bulk load held back)
    outcome: str
    counts: dict[str, int]
    error: str | None


@dataclass(frozen=True, slots=True)
class DeadLetterGroup:
    """Open (or closed) dead letters sharing connector, direction and reason, counted by the store: one bad
    field refused across 400 records is one group, whatever the number of letters."""

    connector: str
    direction: str
    reason: str
    count: int


@dataclass(frozen=True, slots=True)
class OpenCounts:
    """What waits for an operator on one connector, counted by the store rather than by listing rows,
    so ``dcsync status`` and the metrics cost the same with ten open dead letters or a million."""

    dead_letters: int
    conflicts: int
    parked: int


@dataclass(frozen=True, slots=True)
class BulkPlanRecord:
    """A sharded bulk load of one connector, as the store keeps it (``connector_core/sync/bulk.py``).

    ``start_cursor`` is the connector's push checkpoint and ``mark`` the event log's head when the plan was
    made: the shards push what lies between, and finishing moves the push checkpoint to ``mark``."""

    id: str
    connector: str
    shards: int
    start_cursor: str | None
    mark: str | None
    status: str  # open | finished
    created_at: str
    finished_at: str | None


@dataclass(frozen=True, slots=True)
class BulkShardRecord:
    plan_id: str
    shard: int
    status: str  # pending | running | done
    run_id: int | None
    updated_at: str


@dataclass(frozen=True, slots=True)
class ActionRecord:
    """One operator action in the audit trail: who did what to which records, and when.

    ``detail`` holds counts, ids, field names and the operator's own note, never a record's data: the trail
    is kept longer than the data it talks about, and is shown to whoever may read the console."""

    id: int
    at: str
    actor: str  # os:<login> from the CLI, ui:<login> from the console
    action: str  # replay | discard | resolve | purge | rekey | forget | login | ...
    connector: str | None
    target: str | None
    detail: dict[str, Any]


@runtime_checkable
class StateTxn(Protocol):
    """Writes that commit together when the ``transaction()`` block exits without an exception."""

    def set_checkpoint(self, connector: str, direction: Direction, value: str | None) -> None: ...

    def upsert_link(self, link: Link) -> None: ...

    def upsert_links(self, links: Iterable[Link]) -> None:
        """Many links at once (a delivered batch): same rules as :meth:`upsert_link`."""
        ...

    def delete_link(self, connector: str, entity_guid: str) -> None: ...

    def add_dead_letter(
        self,
        connector: str,
        direction: Direction,
        ref: str,
        reason: str,
        payload: dict[str, Any],
        *,
        attempt: bool = True,
    ) -> None:
        """Record a failure; a second open dead letter for the same (connector, direction, ref) bumps
        ``attempts`` and replaces reason and payload instead of adding a row. ``attempt=False`` keeps the
        count: the failure came from an ordinary run offering the record again, not from a replay, and only
        its reason (which may have changed) is news."""
        ...

    def resolve_dead_letter(self, connector: str, direction: Direction, ref: str, status: str) -> None:
        """Close the open dead letter of ``ref`` (a later successful delivery marks it ``replayed``)."""
        ...

    def resolve_part_dead_letters(self, connector: str, direction: Direction, ref: str, status: str) -> None:
        """Close every open letter of a sub-record of ``ref`` (``<ref>#<part>``): its record was deleted, so
        no later delivery can ever close them."""
        ...

    def add_intents(self, connector: str, refs: Iterable[str]) -> None:
        """Record that creates of ``refs`` are about to be sent, before they are.

        If the process dies before their outcome commits, the next run finds the intents and asks the
        remote for those refs first, so a create whose answer was lost is never sent twice.
        """
        ...

    def clear_intents(self, connector: str, refs: Iterable[str]) -> None: ...

    def park(
        self, connector: str, entity_guid: str, parent_guid: str, reason: str, *, count: bool = True
    ) -> None:
        """Hold a child back until its parent lands; parking it again bumps ``attempts``.

        ``count=False`` holds it without counting a run towards ``park_limit``: the parent is
        dead-lettered, so the child waits for the parent's replay, however many runs that takes."""
        ...

    def unpark(self, connector: str, entity_guid: str) -> None: ...

    def add_conflict(
        self,
        connector: str,
        entity_guid: str,
        external_id: str,
        policy: str,
        base: dict[str, Any],
        local: dict[str, Any],
        remote: dict[str, Any],
        remote_version: str | None,
        *,
        resolution: str | None = None,
    ) -> None:
        """Record a conflict: ``resolution=None`` leaves it open (manual policy); an automatic policy
        records how it was settled, as history."""
        ...

    def resolve_conflict(self, conflict_id: int, resolution: str) -> None: ...

    def set_bulk_shard(self, plan_id: str, shard: int, status: str, run_id: int | None = None) -> None:
        """Record where one shard of a bulk load stands (``run_id`` ``None`` keeps the one recorded)."""
        ...

    def record_action(
        self,
        actor: str,
        action: str,
        *,
        connector: str | None = None,
        target: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Add to the audit trail in this transaction, so an action and its record commit together."""
        ...

    def finish_bulk_plan(self, plan_id: str) -> None:
        """Close a bulk load's plan (committed with the push checkpoint moved to its mark)."""
        ...


@runtime_checkable
class StateStore(Protocol):
    def transaction(self) -> AbstractContextManager[StateTxn]: ...

    def get_checkpoint(self, connector: str, direction: Direction) -> str | None: ...

    def checkpoints(self) -> dict[tuple[str, str], str | None]: ...

    def get_link(self, connector: str, entity_guid: str) -> Link | None: ...

    def get_links(self, connector: str, entity_guids: Iterable[str]) -> dict[str, Link]: ...

    def find_link(self, connector: str, external_id: str) -> Link | None:
        """The link holding ``external_id`` for ``connector``, if any."""
        ...

    def linked_entities(self, connector: str, external_ids: Iterable[str]) -> dict[str, str]:
        """For each of ``external_ids`` already linked for ``connector``, the entity guid holding it."""
        ...

    def iter_links(self, connector: str) -> Iterator[Link]: ...

    def dead_letters(
        self, connector: str | None = None, status: str | None = "open", limit: int = 100
    ) -> list[DeadLetter]: ...

    def iter_dead_letters(
        self,
        connector: str,
        status: str | None = "open",
        page_size: int = 1000,
        *,
        direction: str | None = None,
        reason: str | None = None,
    ) -> Iterator[DeadLetter]:
        """Every dead letter of ``connector`` (with ``status``, ``None``: any; ``direction`` and ``reason``
        narrow it, as the console's groups do) oldest first, a page per query: ``dlq replay --all`` over a
        million letters holds one page. Rows resolved while the iteration runs are not seen again."""
        ...

    def open_dead_letter_refs(self, connector: str, direction: Direction, refs: Iterable[str]) -> set[str]:
        """Which of ``refs`` have an open dead letter in ``direction`` (closed by a later delivery)."""
        ...

    def open_dead_letter_reasons(
        self, connector: str, direction: Direction, refs: Iterable[str]
    ) -> dict[str, str]:
        """The open dead letters among ``refs`` with their reasons (what a held child is told)."""
        ...

    def get_dead_letter(self, dead_letter_id: int) -> DeadLetter | None: ...

    def start_run(self, connector: str, direction: str, trigger: str) -> int: ...

    def finish_run(
        self, run_id: int, outcome: str, counts: dict[str, int], error: str | None = None
    ) -> None: ...

    def abandon_runs(self, connector: str, reason: str) -> int:
        """Close every run of ``connector`` still marked ``running`` as ``abandoned``; called by the run
        that holds the connector's lease, so those runs' processes are known to be gone."""
        ...

    def runs(
        self, connector: str | None = None, limit: int = 20, failed_only: bool = False
    ) -> list[RunRecord]: ...

    def intents(self, connector: str) -> set[str]: ...

    def parked(self, connector: str, limit: int = 1000) -> list[Parked]: ...

    def iter_parked(self, connector: str, page_size: int = 1000) -> Iterator[Parked]:
        """Every parked child of ``connector`` in guid order, a page per query; children unparked or
        parked again while the iteration runs are not seen twice."""
        ...

    def parked_attempts(self, connector: str, entity_guids: Iterable[str]) -> dict[str, int]:
        """The parked ones among ``entity_guids``, with the runs each has waited so far."""
        ...

    def parked_children(self, connector: str, parent_guids: Iterable[str]) -> list[str]:
        """Guids of the children parked behind any of ``parent_guids`` (delivered once a parent is)."""
        ...

    def open_counts(self, connector: str) -> OpenCounts:
        """Open dead letters (both directions), open conflicts and parked children of ``connector``."""
        ...

    def conflicts(
        self, connector: str | None = None, status: str | None = "open", limit: int = 100
    ) -> list[Conflict]: ...

    def get_conflict(self, conflict_id: int) -> Conflict | None: ...

    def open_conflicts(self, connector: str, entity_guids: Iterable[str]) -> set[str]:
        """Which of ``entity_guids`` have an open conflict (held back from push until resolved)."""
        ...

    def claim_tick(self, connector: str, direction: str, tick: str, holder: str) -> bool:
        """Claim one scheduled run (a schedule's fire time); only the first claimant gets ``True``.

        Several schedulers may share one state store (one per machine, for availability); the claim makes
        each tick run once, even when the first run is over before the second scheduler wakes up.
        """
        ...

    def last_tick(self, connector: str, direction: str) -> str | None:
        """The latest claimed tick: where a restarted scheduler decides whether it missed one."""
        ...

    def create_bulk_plan(
        self, plan_id: str, connector: str, shards: int, start_cursor: str | None, mark: str | None
    ) -> BulkPlanRecord:
        """Store a new open plan with its shards pending, or return the connector's open plan if there is
        one already (two planners racing: the first one's plan is everyone's)."""
        ...

    def open_bulk_plan(self, connector: str) -> BulkPlanRecord | None: ...

    def get_bulk_plan(self, plan_id: str) -> BulkPlanRecord | None: ...

    def bulk_shards(self, plan_id: str) -> list[BulkShardRecord]: ...

    def record_action(
        self,
        actor: str,
        action: str,
        *,
        connector: str | None = None,
        target: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> int:
        """Add to the audit trail on its own; returns the action's id."""
        ...

    def actions(
        self,
        *,
        connector: str | None = None,
        action: str | None = None,
        before_id: int | None = None,
        limit: int = 100,
    ) -> list[ActionRecord]:
        """The audit trail, newest first; ``before_id`` pages back from an earlier page's last id."""
        ...

    def dead_letter_groups(
        self, connector: str | None = None, status: str | None = "open", limit: int = 200
    ) -> list[DeadLetterGroup]:
        """Dead letters grouped by (connector, direction, reason), largest group first (``GROUP BY`` in the
        store: the console shows 100,000 letters as the handful of reasons they share)."""
        ...

    def dead_letter_page(
        self,
        connector: str | None = None,
        *,
        direction: str | None = None,
        reason: str | None = None,
        status: str | None = "open",
        after_id: int | None = None,
        limit: int = 50,
    ) -> list[DeadLetter]:
        """One keyset page of dead letters in id order, after ``after_id`` (no OFFSET: a deep page costs what
        the first one does)."""
        ...

    def count_dead_letters(
        self,
        connector: str | None = None,
        *,
        direction: str | None = None,
        reason: str | None = None,
        status: str | None = "open",
    ) -> int:
        """How many dead letters match (what a confirmation page says before a bulk action)."""
        ...

    def run_page(
        self,
        connector: str | None = None,
        *,
        direction: str | None = None,
        outcome: str | None = None,
        before_id: int | None = None,
        limit: int = 50,
    ) -> list[RunRecord]:
        """One keyset page of the run history, newest first, before ``before_id``."""
        ...

    def get_run(self, run_id: int) -> RunRecord | None: ...

    def conflict_page(
        self,
        connector: str | None = None,
        *,
        status: str | None = "open",
        after_id: int | None = None,
        limit: int = 50,
    ) -> list[Conflict]:
        """One keyset page of conflicts in id order, after ``after_id``."""
        ...

    def purgeable(self, kind: str, before: str) -> dict[str | None, int]:
        """Rows of ``kind`` (``connector_core.retention.KINDS``) stamped before ``before``, per connector."""
        ...

    def purge_batch(self, kind: str, before: str, limit: int) -> int:
        """Purge up to ``limit`` of those rows in one transaction; returns how many went."""
        ...

    def forget_entity(self, entity_guid: str, *, dry_run: bool = False) -> dict[str, Any]:
        """Erase the entity's snapshots, dead letters and conflicts; counts and the links that remain."""
        ...

    def schema_version(self) -> int: ...

    def close(self) -> None: ...

"""Retention and erasure: dcsync's own copies of personal data are kept only as long as they serve.

dcsync keeps history (closed dead letters, finished runs, resolved conflicts, the audit trail) and merge bases
(link snapshots) of registry records. An operator needs the history for a while after the fact and never
after; a deleted entity's snapshot serves nothing once its delete reached the remote. ``retention:`` says
how long each kind is kept, and :func:`purge` removes what is older, a batch per transaction, so a purge of
millions of rows holds one batch and a crash leaves every committed batch purged and the rest for next time.

Open work is never purged: open dead letters and conflicts, runs in progress, links of live entities and
parked children are what the next run works from. A deleted entity's link keeps its identifiers (entity guid,
external id, deleted flag) when its snapshot is purged: the link is what stops a later pull from bringing
the deleted record back as a new entity.

:func:`forget` answers an erasure request for one person: it removes what dcsync itself keeps of them (the
snapshots and merge bases of their links, their dead letters and conflicts) and says what remains elsewhere
(the event log, which is the source's history, and each remote's record, named by its external id). With
``with_members`` a household's members go with it, each as if named.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from connector_core.entities import Entity
from connector_core.events import format_timestamp

KINDS: tuple[str, ...] = ("dead_letters", "runs", "conflicts", "deleted_snapshots", "audit")
"""What ``retention:`` can name, in the order ``dcsync purge`` reports them."""

DESCRIPTIONS: Mapping[str, str] = {
    "dead_letters": "dead letters replayed or discarded",
    "runs": "finished runs in the run history",
    "conflicts": "resolved conflicts",
    "deleted_snapshots": "snapshots of deleted entities' links (identifiers kept)",
    "audit": "audit trail entries",
}

BATCH = 1000
"""Rows purged per transaction."""


@dataclass
class PurgeReport:
    """Rows purged (or, for a dry run, that would be) per kind and connector (``None``: no connector)."""

    dry_run: bool
    cutoffs: dict[str, str] = field(default_factory=dict)
    counts: dict[str, dict[str | None, int]] = field(default_factory=dict)

    def total(self, kind: str | None = None) -> int:
        kinds = [kind] if kind else list(self.counts)
        return sum(sum(self.counts.get(k, {}).values()) for k in kinds)


def cutoffs(periods: Mapping[str, float], now: datetime | None = None) -> dict[str, str]:
    """The stored-timestamp bound per kind: rows stamped before it are older than their period.

    Stored timestamps are ``format_timestamp`` text (UTC, fixed width), so they compare as strings."""
    moment = now or datetime.now(UTC)
    return {
        kind: format_timestamp(moment - timedelta(seconds=periods[kind])) for kind in KINDS if kind in periods
    }


def purge(
    state: Any,
    periods: Mapping[str, float],
    *,
    actor: str,
    dry_run: bool = False,
    now: datetime | None = None,
    batch: int = BATCH,
) -> PurgeReport:
    """Remove (or with ``dry_run`` count) what ``periods`` says is past keeping; recorded in the audit
    trail when anything went."""
    report = PurgeReport(dry_run=dry_run, cutoffs=cutoffs(periods, now))
    for kind, before in report.cutoffs.items():
        counts = state.purgeable(kind, before)
        if dry_run:
            report.counts[kind] = counts
            continue
        removed = 0
        while True:  # a batch per transaction; what a crash leaves is purged by the next purge
            n = state.purge_batch(kind, before, batch)
            removed += n
            if n < batch:
                break
        # counted before and removed since: rows that aged past the cutoff meanwhile are not in the figures
        # per connector, but the total is what was removed
        report.counts[kind] = counts if removed == sum(counts.values()) else {None: removed}
    if not dry_run and report.total():
        state.record_action(
            actor,
            "purge",
            detail={kind: sum(c.values()) for kind, c in report.counts.items() if sum(c.values())},
        )
    return report


@dataclass
class ForgetReport:
    """What :func:`forget` removed from dcsync's stores, and what remains outside them."""

    guid: str
    dry_run: bool
    snapshots: int = 0
    dead_letters: int = 0
    conflicts: int = 0
    linked: list[tuple[str, str, bool]] = field(default_factory=list)  # connector, external id, deleted
    in_event_log: bool = False
    event_log: str = ""
    members: list[str] | None = None
    """With ``with_members``: the household's members, forgotten right after it (their reports follow)."""

    @property
    def removed(self) -> int:
        return self.snapshots + self.dead_letters + self.conflicts


def forget(
    state: Any,
    eventlog: Any,
    guids: Iterable[str],
    *,
    actor: str,
    dry_run: bool = False,
    event_log: str = "",
    with_members: bool = False,
) -> list[ForgetReport]:
    """Erase what dcsync keeps of each entity in ``guids`` (see the module docstring), one transaction per
    entity, each recorded in the audit trail by its guid and counts.

    ``with_members``: each household's members (:func:`household_members`) are forgotten after it, each as
    any entity named, and the household's record counts them (``members``): an erasure request for a family
    is one command, and the trail says how many people it reached without naming anyone's data. An entity
    named twice (a member also listed) is forgotten once."""
    reports: list[ForgetReport] = []
    done: set[str] = set()
    for guid in dict.fromkeys(guids):
        if guid in done:
            continue
        done.add(guid)
        household = eventlog.get_entity(guid)
        members = None
        if with_members:
            members = (
                [m for m in household_members(eventlog, household) if m not in done] if household else []
            )
        reports.append(_forget_one(state, guid, household, members, actor, dry_run, event_log))
        for member in members or ():
            done.add(member)
            reports.append(
                _forget_one(state, member, eventlog.get_entity(member), None, actor, dry_run, event_log)
            )
    return reports


def household_members(eventlog: Any, household: Entity) -> list[str]:
    """Whom the push sends as members of ``household`` (``push.household_of``): a group's ``memberIds``,
    and those whose ``parentGuid`` names it unless it is a group that no longer lists them (a
    ``remove-member`` leaves the person's ``parentGuid``); a mobile household has members by ``parentGuid``
    alone."""
    from connector_core.sync.push import household_of

    by_parent = [
        e.guid for e in eventlog.children_of(household.guid) if household_of(e, household) == household.guid
    ]
    return [g for g in dict.fromkeys([*household.member_ids, *by_parent]) if g != household.guid]


def _forget_one(
    state: Any,
    guid: str,
    entity: Entity | None,
    members: list[str] | None,
    actor: str,
    dry_run: bool,
    event_log: str,
) -> ForgetReport:
    found = state.forget_entity(guid, dry_run=dry_run)
    report = ForgetReport(
        guid=guid,
        dry_run=dry_run,
        snapshots=found["snapshots"],
        dead_letters=found["dead_letters"],
        conflicts=found["conflicts"],
        linked=found["linked"],
        in_event_log=entity is not None,
        event_log=event_log,
        members=members,
    )
    if not dry_run and (report.removed or report.linked or members):
        detail: dict[str, Any] = {
            "snapshots": report.snapshots,
            "dead_letters": report.dead_letters,
            "conflicts": report.conflicts,
            "connectors": sorted({c for c, _, _ in report.linked}),
        }
        if members is not None:
            detail["members"] = len(members)  # how many, never who: each member has its own record
        state.record_action(actor, "forget", target=guid, detail=detail)
    return report

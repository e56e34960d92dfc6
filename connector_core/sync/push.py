"""Push: entity changes from the event log to a connector.

Pages of events are read from the push checkpoint; the entities they touch are coalesced (many events of one
entity become one change of its current state), mapped, compared with the payload last synced (an unchanged
payload sends nothing, which is also what keeps pulled changes from echoing back), ordered parents first, and
delivered in batches. Each batch's outcomes (links, dead letters, parked children) commit in one
transaction; the checkpoint moves past a page only once every record of it is delivered, dead-lettered or
parked.

Before a batch of creates leaves, their refs are written down as *intents*. A create whose answer was lost
(a timeout, a reset, a 5xx, or this process killed mid-request) is therefore always looked up on the remote
before it is sent again, and turned into an update if it is there: a retry never creates a second record.
"""

from __future__ import annotations

import contextvars
import copy
import logging
import re
import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from connector_core.connector import (
    ConnectorError,
    Operation,
    PushRecord,
    PushResult,
    TransientError,
    part_ref,
)
from connector_core.entities import Entity
from connector_core.eventlog.base import MEMBERSHIP_EVENTS, EventLog, EventTouch
from connector_core.events import now_timestamp
from connector_core.mapping import MapContext
from connector_core.retry import call_with_retry
from connector_core.scopes import runtime_key
from connector_core.state.base import Direction, Link, StateStore, StateTxn
from connector_core.streams import KeptOnDisk, SeenOnDisk, chunks
from connector_core.sync.context import RunStopped, SyncContext
from connector_core.sync.report import Counts, DirectionReport, PlannedOperation
from connector_core.sync.scoping import PushScopeNotes, scoped_push

log = logging.getLogger("dcsync.push")

_MEMBER_EVENTS = MEMBERSHIP_EVENTS - {"remove-member"}  # events that list a group's members
_VARYING = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|\d+(?:\.\d+)?", re.IGNORECASE
)


def reason_key(reason: str) -> str:
    """What two refusals have in common once the parts that name the record are gone (guids, numbers):
    "Invalid field 'hh_size' on model 'res.partner'" is one reason however many households hit it."""
    return " ".join(_VARYING.sub("#", reason).lower().split())


@dataclass
class PageChanges:
    """What one page of events asks the remote to do."""

    entities: list[str] = field(default_factory=list)
    unlinks: list[tuple[str, str]] = field(default_factory=list)  # (group guid, member guid)
    # groups the page listed members in: a member's household even where the group itself is not
    # delivered with the page (a bulk load's shard keeps the member, another shard the group)
    listers: list[str] = field(default_factory=list)


def touched_entities(events: Iterable[EventTouch], own_user_id: str) -> PageChanges:
    """Entity guids a page changed (first-touch order) and memberships it ended, minus this
    connector's own pulls (echo suppression)."""
    seen: dict[str, None] = {}
    listers: dict[str, None] = {}
    changes = PageChanges()
    for event in events:
        if event.user_id == own_user_id:
            continue
        seen.setdefault(event.entity_guid, None)
        if not event.data:
            continue
        if event.type in _MEMBER_EVENTS:
            for member in event.data.get("members") or []:
                if isinstance(member, dict) and member.get("guid"):
                    seen.setdefault(str(member["guid"]), None)
                    listers.setdefault(event.entity_guid, None)
        elif event.type == "remove-member" and event.data.get("memberId"):
            member_guid = str(event.data["memberId"])
            seen.setdefault(member_guid, None)
            changes.unlinks.append((event.entity_guid, member_guid))
    changes.entities = list(seen)
    changes.listers = list(listers)
    changes.unlinks = list(dict.fromkeys(changes.unlinks))  # one membership ends once, however often removed
    return changes


def _depths(entities: dict[str, Entity], households: dict[str, str | None]) -> dict[str, int]:
    """Depth of each entity below its nearest ancestor outside the set: parents go out first.

    A walk up each parent chain, not a recursive closure: a closure that calls itself is a reference
    cycle, and it would keep the page's entities alive until the next full garbage collection.
    """
    depths: dict[str, int] = {}
    for guid in entities:
        chain: list[str] = []
        on_chain: set[str] = set()
        current: str | None = guid
        while current is not None and current not in depths:
            chain.append(current)
            on_chain.add(current)
            parent = households.get(current)
            current = parent if parent in entities and parent not in on_chain else None
        below = depths[current] if current is not None else -1
        for member in reversed(chain):  # the topmost first: a parent in a cycle counts as a root
            below += 1
            depths[member] = below
    return depths


def _parent_of(data: dict[str, Any]) -> str | None:
    value = data.get("parentGuid")
    return value if isinstance(value, str) and value else None


def household_of(
    entity: Entity,
    parent: Entity | None,
    listing: Iterable[Entity] = (),
    held: str | None = None,
) -> str | None:
    """The parent the push sends for ``entity``. ``parent`` is the entity its ``parentGuid`` names, if
    the log holds it; ``listing`` the groups known to list it among their ``memberIds`` (those of the
    page, and the one the remote holds); ``held`` the household the remote holds (the link's merge base).

    Its ``parentGuid``, unless that names a real group (type ``group``) whose ``memberIds`` do not list
    it: DataCollect's ``remove-member`` takes the person out of the group's ``memberIds`` and leaves their
    own ``parentGuid`` as it was, and a later edit of the person must not make them a member again. A
    mobile household is a ``create-individual`` entity with no ``memberIds`` at all: its members belong to
    it by ``parentGuid`` alone, and the rule leaves them be. A parent the log does not hold is kept (the
    push waits for it, or sends the member without it, as before).

    Without a ``parentGuid`` that holds, a real group that lists the person is their household:
    ``create-group`` and ``add-member`` make members whose own answers need not name the group, and
    DataCollect shows them as its members. When several groups list them, the most recently changed
    one (``lastUpdated``; on a tie, not the one the remote holds) is their household: a registry holds
    one household per person through dcsync, and the newest listing is the field worker's latest word. A
    move done as ``add-member`` to the new group first and ``remove-member`` from the old one in a later
    sync then ends where DataCollect does; holding the old household until the ``remove-member`` would
    leave the person in none, as nothing finds the other group then (the log has no member-to-group
    index). A dead letter instead would hold every later edit of the person back for a question of
    DataCollect's data the registry's operator cannot answer."""
    guid = entity.parent_guid
    if guid is not None and (parent is None or parent.type != "group" or entity.guid in parent.member_ids):
        return guid
    groups = {g.guid: g for g in listing if g.type == "group" and entity.guid in g.member_ids}
    if not groups:
        return None
    return max(groups.values(), key=lambda g: (g.last_updated or "", g.guid != held, g.guid)).guid


def household_outside_a_run(eventlog: EventLog, entity: Entity, link: Link | None) -> str | None:
    """``household_of`` for one entity looked at alone (the console's mapping page): its ``parentGuid``'s
    entity, and the household the remote holds (the link's merge base) as the one group known to list it.
    A member listed only by a group and never delivered shows without one: a run finds that group in the
    same page as the ``create-group``/``add-member`` that lists them, a look at one entity cannot."""
    held = _parent_of(link.base) if link is not None and not link.deleted and link.base else None
    wanted = [g for g in (entity.parent_guid, held) if g]
    found = eventlog.get_entities(wanted) if wanted else {}
    parent = found.get(entity.parent_guid or "")
    return household_of(entity, parent, [found[held]] if held in found else [], held)


def pushed_doc(entity: Entity, household: str | None) -> dict[str, Any]:
    """The entity as the push maps it: its document, with ``parentGuid`` null when ``household``
    (``household_of``) is not it, so a mapping that reads ``$.data.parentGuid`` itself (a ``link`` to the
    household in a payload field) agrees with the parent the record travels with, and writes that field
    null (an absent field would leave the old household on a remote that merges updates)."""
    doc = entity.to_json()
    if entity.parent_guid != household:
        doc["data"] = {**entity.data, "parentGuid": household}
    return doc


def _without_parent(data: dict[str, Any], household: str | None) -> dict[str, Any]:
    """The merge base of a delivered record: its data, naming as its parent the one the remote now holds
    (none, for a member its group no longer lists, so a later add-back reads as a move; the group that
    lists a member without a ``parentGuid`` of its own, so a later edit of the member alone finds it)."""
    if _parent_of(data) == household:
        return dict(data)
    if household is not None:
        return {**data, "parentGuid": household}
    return {k: v for k, v in data.items() if k != "parentGuid"}


def _parent_moved(
    household: str | None, link: Link, leaving: str | None = None, left: str | None = None
) -> bool:
    """Is the entity's household (``household_of``) not the one the remote holds? The parent travels
    beside the payload (``parent_external_id``), not in it, so an equal payload does not mean an equal
    record: a member moved to another household, added back to the one it was unlinked from, or taken out
    of a group's ``memberIds``, must still go. The link's merge base holds the parent at the last sync (a
    link without one, from an older store, is not compared). ``leaving``: the group an unlink of this page
    takes the member out of; the unlink says that, and the member need not go for it too. ``left``: the
    group a dry run's rehearsed unlink took it out of, which a real run would have dropped from the base."""
    if not link.base:
        return False
    synced = _parent_of(link.base)
    if left is not None and synced == left:
        synced = None
    return synced != household and not (household is None and synced == leaving)


def _left_group(link: Link, group_guid: str | None) -> list[Link]:
    """The member's link once the remote ended its membership of ``group_guid``: its merge base no longer
    names that parent, so adding it back (in any later run) reads as a move and sends it again."""
    if not link.base or group_guid is None or _parent_of(link.base) != group_guid:
        return []
    return [replace(link, base={k: v for k, v in link.base.items() if k != "parentGuid"})]


@dataclass
class _Sent:
    results: dict[str, PushResult]
    sender: _BatchSender
    error: ConnectorError | None


@dataclass
class _Planned:
    record: PushRecord
    snapshot: dict[str, Any]
    base: dict[str, Any]


class Pusher:
    """Plans and delivers entity changes for one run; also used to replay dead letters."""

    def __init__(
        self,
        ctx: SyncContext,
        counts: Counts,
        plan: list[PlannedOperation] | None = None,
        *,
        replaying: bool = False,
        select: Callable[[Iterable[str]], set[str]] | None = None,
    ):
        self.ctx = ctx
        self.replaying = replaying
        self._count_lock = threading.Lock()
        self.counts = counts
        self.plan = plan
        # What a page needs to know, loaded with the page and dropped after it (memory stays flat however
        # many links, parked children and dead letters the store holds): entity guid -> external id of
        # what this page delivered or refers to as a parent, parked guid -> runs waited, open dead letters.
        self._links: dict[str, str] = {}
        # the entities the page's parentGuids name (a group's memberIds say who is its member), the real
        # groups that list each member of the page (the page's own, and those the remote holds as their
        # household), and the group each member of the page leaves by an unlink of that page
        self._parents: dict[str, Entity] = {}
        self._listing: dict[str, list[Entity]] = {}
        self._leaving: dict[str, str] = {}
        self._parked: dict[str, int] = {}
        self._open_letters: set[str] = set()
        self._stale_intents = ctx.state.intents(ctx.name) if not ctx.dry_run else set()
        if select is not None:  # a bulk load's shard: the other shards' intents are theirs, in flight now
            self._stale_intents = select(self._stale_intents)
        self._parked_now: set[str] = set()  # parked in this run: a retry at its end is no new attempt
        # Parents this page's children wait for that are dead-lettered, with the reason: such a child is
        # held (not counted towards park_limit) until the parent is replayed.
        self._parent_letters: dict[str, str] = {}
        # Refusals of the current run of same-reason refusals, not yet written as dead letters: when
        # ``systemic_after`` records in a row are refused for one reason, the cause is not in the records,
        # and the run stops with them undelivered instead of dead-lettering them one by one.
        self._streak_key: str | None = None
        self._streak = 0
        self._deferred: list[tuple[str, str, dict[str, Any]]] = []
        self.systemic_stop: str | None = None
        # refs a replay delivered (cleared by each replay page): their held children follow them
        self.delivered_now: set[str] = set()
        # Entities whose sub-record dead letters are being replayed -> those letters' refs: they are sent
        # even when unchanged (the sub-record goes again), and a letter whose part is gone is closed.
        self._replayed_parts: dict[str, set[str]] = {}
        # a dry run plans each entity once, however its events fall across pages
        self._rehearsed = SeenOnDisk() if ctx.dry_run else None
        # and remembers the memberships it ended (member -> group), which a real run drops from the
        # member's merge base: made on the first unlink, so a dry run without one opens no file
        self._rehearsed_left: KeptOnDisk | None = None
        self._map_context = MapContext(link=self.external_id)
        self._scope_notes = PushScopeNotes(ctx.name)
        if self._stale_intents:
            log.warning(
                "%s: %d creates of an interrupted run may have reached the remote; they are looked up first",
                ctx.name,
                len(self._stale_intents),
            )

    # -- links as the mapping sees them ---------------------------------------------------------
    def external_id(self, guid: str) -> str | None:
        if guid in self._links:
            return self._links[guid]
        link = self.ctx.state.get_link(self.ctx.name, guid)
        if link is None or link.deleted:
            # a dry run pretends what it rehearsed on an earlier page was delivered (kept on disk, not in a
            # dict that would grow with the log)
            if self._rehearsed is not None and guid in self._rehearsed:
                return "(new)"
            return None
        return link.external_id

    def _preload_parents(
        self, entities: dict[str, Entity], links: dict[str, Link], listers: Iterable[str] = ()
    ) -> None:
        """One query for every parent a page refers to, instead of one per child: the parent entities (is
        it a group, whom does it list), their links, and the dead letters of those not delivered. A parent
        is one a ``parentGuid`` names, the household the remote holds (a member listed only by a group's
        ``memberIds`` has no ``parentGuid`` to find it by, and the log has no member-to-group index: the
        link's merge base is that index for what was delivered), or a group of the page listing a member
        (``listers``: those the caller knows of beyond the page's entities).
        """
        named = {e.parent_guid for e in entities.values() if e.parent_guid}
        named.update(h for g in entities if (h := self._held(links.get(g))))
        named.update(listers)
        self._parents = {g: entities[g] for g in named if g in entities}
        self._parents.update(self.ctx.eventlog.get_entities([g for g in named if g not in entities]))
        self._listing = {}
        groups = {g.guid: g for g in (*entities.values(), *self._parents.values()) if g.type == "group"}
        for group in groups.values():
            for member in group.member_ids:
                if member in entities:
                    self._listing.setdefault(member, []).append(group)
                    named.add(group.guid)
        parents = named - set(self._links)
        for guid, link in self.ctx.state.get_links(self.ctx.name, parents).items():
            if not link.deleted:
                self._links[guid] = link.external_id
        self._parent_letters = self.ctx.state.open_dead_letter_reasons(
            self.ctx.name, Direction.PUSH, parents - set(self._links)
        )
        self._parent_letters.update((ref, reason) for ref, reason, _ in self._deferred if ref in parents)

    def replay_parts(self, parts: dict[str, set[str]]) -> None:
        """Send these entities again even if unchanged: each has sub-record dead letters (``<guid>#<part>``)
        being replayed, and only sending the entity sends its sub-records."""
        self._replayed_parts = {guid: set(refs) for guid, refs in parts.items()}

    # -- planning -------------------------------------------------------------------------------
    def push_entities(
        self, guids: list[str], unlinks: Sequence[tuple[str, str]] = (), listers: Iterable[str] = ()
    ) -> None:
        """Deliver ended memberships, then the current state of ``guids`` (parents first), then deletes.
        ``listers``: groups that may list members among ``guids`` (``household_of``), not delivered here."""
        ctx = self.ctx
        held = ctx.state.open_conflicts(ctx.name, guids)
        if held:
            self.counts.skipped += len(held)
            log.info("%s: %d entities held back by open conflicts", ctx.name, len(held))
            guids = [g for g in guids if g not in held]
        entities = ctx.eventlog.get_entities(guids)
        links = ctx.state.get_links(ctx.name, guids)
        self._links.clear()  # a rehearsal's earlier pages are in self._rehearsed: see external_id
        self._parked = ctx.state.parked_attempts(ctx.name, guids)
        self._open_letters = ctx.state.open_dead_letter_refs(ctx.name, Direction.PUSH, guids)
        self._preload_parents(entities, links, listers)
        households = {g: self._household(e, links.get(g)) for g, e in entities.items()}
        deletes = [g for g in guids if g not in entities and g in links and not links[g].deleted]
        made = self._made_by_lost_creates([g for g in guids if g not in entities and g not in links])
        # an ended membership the log holds again (added back later in the log) is not ended remotely: the
        # push sends the current state, and an unlink now would end a membership nothing ever restores
        ended = [(g, m) for g, m in unlinks if g not in entities or m not in entities[g].member_ids]
        self._leaving = {member: group for group, member in ended}
        # ended memberships first: a member that moved (removed from one group, added to another) then goes
        # with its new household, and no unlink that a remote can only read as "no household" (the mock
        # server's, REST's parent_id) follows the move and undoes it
        self._deliver(p for group, member in ended if (p := self._plan_unlink(group, member)))
        depths = _depths(entities, households)
        for level in sorted(set(depths.values())):
            wave = [entities[g] for g in guids if g in entities and depths[g] == level]
            self._deliver(p for e in wave if (p := self._plan(e, links.get(e.guid), households[e.guid])))
        self._deliver(
            [
                _Planned(
                    PushRecord(
                        ref=g,
                        operation=Operation.DELETE,
                        entity_name=links[g].entity_name,
                        payload={},
                        external_id=links[g].external_id,
                    ),
                    {},
                    {},
                )
                for g in deletes
            ]
            + [
                _Planned(
                    PushRecord(
                        ref=g, operation=Operation.DELETE, entity_name=None, payload={}, external_id=external
                    ),
                    {},
                    {},
                )
                for g, external in made.items()
            ]
        )
        for guid in guids:
            if guid not in entities and guid not in deletes and guid not in made:
                self.counts.skipped += 1
                self._unpark(guid)

    def _made_by_lost_creates(self, gone: list[str]) -> dict[str, str]:
        """External ids of what creates of a killed run made for entities deleted since (no link, an intent
        left): with no create to send, nothing else would look them up, and the records would stay on the
        remote for good. Intents of those not found are settled: the create never arrived."""
        ctx = self.ctx
        lost = [g for g in gone if g in self._stale_intents]
        if not lost or ctx.dry_run:
            return {}
        found = call_with_retry(
            lambda: ctx.connector.lookup(lost),
            ctx.retry,
            what=f"lookup of {len(lost)} records on {ctx.name}",
            on_retry=lambda *_: self._count_retry(),
        )
        absent = [g for g in lost if g not in found]
        if absent:
            with ctx.state.transaction() as tx:
                tx.clear_intents(ctx.name, absent)
            self._stale_intents.difference_update(absent)
        return {g: str(found[g]) for g in lost if g in found}

    @staticmethod
    def _held(link: Link | None) -> str | None:
        """The household the remote holds for a delivered entity, as its link's merge base names it."""
        return _parent_of(link.base) if link is not None and not link.deleted and link.base else None

    def _household(self, entity: Entity, link: Link | None) -> str | None:
        """``household_of`` with what the page knows; a person several groups list is logged (ids only)."""
        listing = self._listing.get(entity.guid)
        if listing is None:  # most entities, on every push: no group of the page lists them
            guid = entity.parent_guid
            if guid is None:
                return None  # a group that lists it is in _listing (the held one too: _preload_parents)
            parent = self._parents.get(guid)
            return household_of(entity, parent) if parent is not None and parent.type == "group" else guid
        parent_guid = household_of(
            entity, self._parents.get(entity.parent_guid or ""), listing, self._held(link)
        )
        if len(listing) > 1 and entity.parent_guid != parent_guid:
            log.warning(
                "%s: %s is listed by %d groups (%s); sent as a member of %s",
                self.ctx.name,
                entity.guid,
                len(listing),
                ", ".join(sorted(g.guid for g in listing)),
                parent_guid,
            )
        return parent_guid

    def _plan(self, entity: Entity, link: Link | None, parent_guid: str | None) -> _Planned | None:
        ctx = self.ctx
        doc = pushed_doc(entity, parent_guid)
        mapping = ctx.mappings.for_entity(doc)
        if mapping is None:
            self.counts.skipped += 1
            self._unpark(entity.guid)
            return None
        scoped = scoped_push(ctx, mapping, doc, self._map_context, link)
        if scoped.denied:
            self.counts.skipped += 1
            self.counts.out_of_scope += 1
            self._scope_notes.denied(entity.entity_name or entity.type)
            if self.plan is not None and len(self.plan) < 10_000:
                self.plan.append(
                    PlannedOperation("skip", entity.guid, entity.entity_name, "not in the push scope")
                )
            self._unpark(entity.guid)
            return None
        if scoped.dropped:
            self.counts.out_of_scope += 1
            self._scope_notes.dropped(entity.entity_name or entity.type, scoped.dropped)
        result = scoped.result
        if result.errors:
            self._record_failure(entity.guid, f"mapping failed: {result.reason}", {"entity": doc})
            return None
        if result.record is None:
            self.counts.skipped += 1
            self._unpark(entity.guid)
            return None
        payload = result.record
        live_link = link if link is not None and not link.deleted else None
        forced = entity.guid in self._replayed_parts
        if (
            live_link is not None
            and live_link.snapshot == payload
            and not forced
            and not _parent_moved(
                parent_guid, live_link, self._leaving.get(entity.guid), self._left(entity.guid)
            )
        ):
            self.counts.unchanged += 1
            self._unpark(entity.guid)
            if self.replaying:  # delivered meanwhile: the remote already holds this payload
                with ctx.state.transaction() as tx:
                    tx.resolve_dead_letter(ctx.name, Direction.PUSH, entity.guid, "replayed")
            return None
        parent_external = self.external_id(parent_guid) if parent_guid else None
        if parent_guid and parent_external is None and self._parent_expected(parent_guid):
            letter = self._parent_letters.get(parent_guid)
            if letter is not None:
                self._park(
                    entity.guid, parent_guid, f"parent {parent_guid} dead-lettered: {letter}", hold=True
                )
            else:
                self._park(
                    entity.guid, parent_guid, f"parent {parent_guid} is not delivered to {ctx.name} yet"
                )
            return None
        operation = Operation.UPDATE if live_link is not None else Operation.CREATE
        return _Planned(
            PushRecord(
                ref=entity.guid,
                operation=operation,
                entity_name=entity.entity_name or entity.type,
                payload=payload,
                external_id=live_link.external_id if live_link is not None else None,
                parent_ref=parent_guid,
                parent_external_id=parent_external,
            ),
            payload,
            _without_parent(entity.data, parent_guid),
        )

    def _plan_unlink(self, group_guid: str, member_guid: str) -> _Planned | None:
        group_external, member_external = self.external_id(group_guid), self.external_id(member_guid)
        if group_external is None or member_external is None:
            self.counts.skipped += 1  # never delivered as a membership: nothing to end remotely
            return None
        record = PushRecord(
            ref=member_guid,
            operation=Operation.UNLINK,
            entity_name=None,
            payload={},
            external_id=member_external,
            parent_ref=group_guid,
            parent_external_id=group_external,
        )
        return _Planned(record, {}, {})

    def _left(self, guid: str) -> str | None:
        """The group a dry run's rehearsed unlink took ``guid`` out of, if any."""
        return self._rehearsed_left.get(guid) if self._rehearsed_left is not None else None

    def _parent_expected(self, parent_guid: str) -> bool:
        """A parent must be delivered first only if it exists, some mapping sends it and the push scope lets
        it be sent (a household kept out of scope never comes; its members go without it)."""
        parent = self._parents.get(parent_guid) or self.ctx.eventlog.get_entity(parent_guid)
        if parent is None:
            return False
        doc = parent.to_json()
        mapping = self.ctx.mappings.for_entity(doc)
        if mapping is None:
            return False
        scopes = self.ctx.scopes
        if scopes is not None and scopes.push is not None:
            return scopes.push_tree(runtime_key(mapping, parent.entity_name, parent.type)) is not None
        return True

    # -- parked children --------------------------------------------------------------------------
    def _park(self, guid: str, parent_guid: str, reason: str, *, hold: bool = False) -> None:
        """Hold a child back; one attempt per run, dead-lettered with the reason after ``park_limit`` runs.

        ``hold``: the parent is dead-lettered, so waiting runs out nothing -- the child follows its
        parent's fate at once and stays held, uncounted, until the parent's replay delivers it."""
        ctx = self.ctx
        self._note(Operation.CREATE, guid, None, f"{'held' if hold else 'parked'}: {reason}")
        if guid in self._parked_now:
            return  # parked earlier in this run: the retry at the end of a run is not a new attempt
        self._parked_now.add(guid)
        self.counts.parked += 1
        if ctx.dry_run:
            return
        if hold:
            with ctx.state.transaction() as tx:
                tx.park(ctx.name, guid, parent_guid, reason, count=False)
            self._parked.setdefault(guid, 0)
            return
        attempts = self._parked.get(guid, 0) + 1
        with ctx.state.transaction() as tx:
            if attempts >= ctx.park_limit:
                tx.unpark(ctx.name, guid)
                entity = ctx.eventlog.get_entity(guid)
                tx.add_dead_letter(
                    ctx.name,
                    Direction.PUSH,
                    guid,
                    f"{reason} after {attempts} runs",
                    {"entity": entity.to_json() if entity else None},
                )
                self.counts.dead_lettered += 1
                self._parked.pop(guid, None)
            else:
                tx.park(ctx.name, guid, parent_guid, reason)
                self._parked[guid] = attempts

    def _unpark(self, guid: str) -> None:
        if guid in self._parked and not self.ctx.dry_run:
            with self.ctx.state.transaction() as tx:
                tx.unpark(self.ctx.name, guid)
            del self._parked[guid]

    def retry_parked(self, select: Callable[[Iterable[str]], set[str]] | None = None) -> None:
        """Give every parked child another chance now that this run delivered what it could, a page of
        them at a time (a child delivered, dead-lettered or parked again is not met twice). ``select``:
        only the children it keeps (a bulk load's shard retries its own households' children, no other's)."""
        ctx = self.ctx
        if ctx.dry_run:
            return
        waiting = ctx.state.open_counts(ctx.name).parked
        if not waiting:
            return
        log.info("%s: retrying %d parked children", ctx.name, waiting)
        parked = ctx.state.iter_parked(ctx.name, page_size=ctx.page_size)
        for chunk in chunks(parked, ctx.page_size):
            if ctx.stop.is_set():
                break
            page = [p.entity_guid for p in chunk]
            if select is not None:
                kept = select(page)
                page = [g for g in page if g in kept]
            if page:
                # the parent each waited for: for a member a group lists alone, the only way to find it
                self.push_entities(page, listers={p.parent_guid for p in chunk if p.parent_guid})
        self.flush_refusals()

    # -- delivery -------------------------------------------------------------------------------
    def _note(self, operation: Operation, ref: str, entity_name: str | None, detail: str = "") -> None:
        if self.plan is not None and len(self.plan) < 10_000:
            self.plan.append(PlannedOperation(str(operation), ref, entity_name, detail))

    def close(self) -> None:
        """Drop what the run kept on disk (a dry run's record of what it planned)."""
        if self._rehearsed is not None:
            self._rehearsed.close()
            self._rehearsed = None
        if self._rehearsed_left is not None:
            self._rehearsed_left.close()
            self._rehearsed_left = None

    def _record_failure(self, ref: str, reason: str, payload: dict[str, Any]) -> None:
        self.counts.dead_lettered += 1
        self._note(Operation.CREATE, ref, None, f"invalid: {reason}")
        log.warning("dead letter %s: %s", ref, reason)
        if not self.ctx.dry_run:
            with self.ctx.state.transaction() as tx:
                tx.unpark(self.ctx.name, ref)
                tx.add_dead_letter(self.ctx.name, Direction.PUSH, ref, reason, payload)
            self._parked.pop(ref, None)
            self._open_letters.add(ref)
            self._parent_letters[ref] = reason

    # -- refusals: one record's fault, or the run's ------------------------------------------------------
    def _refused(self, tx: StateTxn, ref: str, reason: str, payload: dict[str, Any]) -> None:
        """A record the remote refused for good; its dead letter waits until the streak it belongs to
        is broken (by a delivery or another reason), or is never written if the streak stops the run."""
        if self.systemic_stop is not None:
            return  # the run is stopping: this record stays pending behind the checkpoint
        key = reason_key(reason)
        if key != self._streak_key:
            self._write_refusals(tx)
            self._streak_key, self._streak = key, 0
        self._streak += 1
        self._deferred.append((ref, reason, payload))
        self._parent_letters[ref] = reason  # its children are held, whatever the streak turns out to be
        limit = self.ctx.systemic_after
        if not limit:  # no streak ever stops the run: nothing to wait for, and memory stays flat
            self._write_refusals(tx)
        elif self._streak >= limit:
            self.systemic_stop = reason
            self._deferred.clear()

    def _streak_broken(self, tx: StateTxn) -> None:
        self._write_refusals(tx)
        self._streak_key, self._streak = None, 0

    def _write_refusals(self, tx: StateTxn) -> None:
        """Dead-letter the refusals held back so far (they were not a systemic streak after all)."""
        if self.systemic_stop is not None:
            self._deferred.clear()
            return
        for ref, reason, payload in self._deferred:
            self.counts.dead_lettered += 1
            self._open_letters.add(ref)
            self._parent_letters[ref] = reason
            log.warning("dead letter %s: %s", ref, reason)
            tx.add_dead_letter(self.ctx.name, Direction.PUSH, ref, reason, payload)
        self._deferred.clear()

    @property
    def holding_refusals(self) -> bool:
        """Refusals wait to be written: the checkpoint must not pass them yet."""
        return bool(self._deferred)

    def flush_refusals(self) -> None:
        """Write the held-back refusals as dead letters: the run ends without a systemic streak."""
        if self._deferred and self.systemic_stop is None:
            with self.ctx.state.transaction() as tx:
                self._write_refusals(tx)

    def _deliver(self, planned: Iterable[_Planned]) -> None:
        """Send ``planned`` in batches, up to ``in_flight`` requests at once; outcomes commit in order.

        ``planned`` is consumed lazily: the next batch is planned (read, mapped, compared) while the
        batches before it are on the wire, so the remote and this process work at the same time even
        with one request in flight. Records of one call never depend on each other (parents go in an
        earlier call), so planning ahead of a commit sees nothing stale.

        A batch the remote took whole (no error, no refusal) is committed after the next batch is sent:
        its commit then overlaps that request, and still no more than ``in_flight`` are on the wire. An
        answer with a failure or a refusal is committed first, since it may stop the run (a systemic
        error, a streak of refusals) before anything more is sent.
        """
        ctx = self.ctx
        batches = chunks(planned, ctx.batch_size)
        if ctx.dry_run:
            for batch in batches:
                self._rehearse(batch)
            return
        stopped: RunStopped | None = None
        pending: deque[tuple[list[_Planned], Future[_Sent]]] = deque()
        with ThreadPoolExecutor(ctx.in_flight, thread_name_prefix=f"push-{ctx.name}") as pool:
            try:
                for batch in batches:
                    taken: tuple[list[_Planned], _Sent] | None = None
                    while pending and (len(pending) >= ctx.in_flight or stopped is not None):
                        done, future = pending.popleft()
                        sent = future.result()
                        if stopped is None and _taken_whole(done, sent):
                            taken = (done, sent)  # committed below, once the next batch is on its way
                            break
                        stopped = self._settle(done, sent) or stopped
                    try:
                        if stopped is not None or ctx.stop.is_set():
                            stopped = stopped or RunStopped(
                                "shutdown requested; the checkpoint stays before the undelivered records"
                            )
                            break
                        self._record_intents(batch)
                        # the worker logs with this run's id: copy the context the log lines read it from
                        future = pool.submit(contextvars.copy_context().run, self._send, batch)
                        pending.append((batch, future))
                    finally:
                        if taken is not None:
                            stopped = self._settle(*taken) or stopped
            finally:
                while pending:  # whatever left is answered and committed, even when planning failed
                    done, future = pending.popleft()
                    stopped = self._settle(done, future.result()) or stopped
        if stopped is not None:
            raise stopped

    def _rehearse(self, batch: list[_Planned]) -> None:
        assert self._rehearsed is not None
        first = self._rehearsed.first_seen(
            p.record.ref for p in batch if p.record.operation is not Operation.UNLINK
        )
        left = {
            p.record.ref: p.record.parent_ref
            for p in batch
            if p.record.operation is Operation.UNLINK and p.record.parent_ref is not None
        }
        if left:
            if self._rehearsed_left is None:
                self._rehearsed_left = KeptOnDisk()
            self._rehearsed_left.put(left)
        for item in batch:
            if item.record.operation is not Operation.UNLINK and item.record.ref not in first:
                continue  # planned on an earlier page: its later events change what goes, not how often
            self._count(item.record.operation)
            self._note(item.record.operation, item.record.ref, item.record.entity_name)
            if item.record.operation in (Operation.CREATE, Operation.UPDATE):
                self._links[item.record.ref] = item.record.external_id or "(new)"

    def _record_intents(self, batch: list[_Planned]) -> None:
        creates = [p.record.ref for p in batch if p.record.operation is Operation.CREATE]
        if creates:
            with self.ctx.state.transaction() as tx:
                tx.add_intents(self.ctx.name, creates)

    def _send(self, batch: list[_Planned]) -> _Sent:
        """The network part of a batch (may run in a worker thread): no state store writes here."""
        ctx = self.ctx
        results: dict[str, PushResult] = {}
        sender = _BatchSender(ctx, [p.record for p in batch], results, self._stale_intents)
        error: ConnectorError | None = None
        try:
            call_with_retry(
                sender.attempt,
                ctx.retry,
                what=f"push of {len(batch)} records to {ctx.name}",
                on_retry=lambda *_: self._count_retry(),
            )
        except ConnectorError as exc:
            error = exc
        return _Sent(results, sender, error)

    def _settle(self, batch: list[_Planned], sent: _Sent) -> RunStopped | None:
        """Commit one batch's outcome; say whether the run must stop (the checkpoint then stays put)."""
        error = sent.error
        if error is not None and error.systemic:
            self._commit(batch, sent.results, sent.sender, None)
            return RunStopped(error.message)
        refused = error is not None and not error.transient
        self._commit(batch, sent.results, sent.sender, error.message if refused and error else None)
        if error is not None and error.transient:
            return RunStopped(
                f"gave up after retries: {error.message}; the checkpoint stays before the undelivered records"
            )
        if self.systemic_stop is not None:
            return RunStopped(
                f"{self._streak} records in a row were refused by {self.ctx.name} for the same reason, so "
                f"the cause is not in the records: {self.systemic_stop}; none of them was dead-lettered "
                "and the checkpoint stays before them (systemic_after sets how many refusals stop a run)"
            )
        return None

    def _count_retry(self) -> None:
        with self._count_lock:  # retries are counted from the worker threads of in-flight batches
            self.counts.retries += 1

    def _count(self, operation: Operation) -> None:
        if operation is Operation.CREATE:
            self.counts.created += 1
        elif operation in (Operation.UPDATE, Operation.UNLINK):
            self.counts.updated += 1
        else:
            self.counts.deleted += 1

    def _commit(
        self,
        batch: list[_Planned],
        results: dict[str, PushResult],
        sender: _BatchSender,
        refused: str | None,
    ) -> None:
        """One transaction for the batch: links, dead letters, parked children and intents move together."""
        ctx = self.ctx
        now = now_timestamp()
        settled: list[str] = []
        links: list[Link] = []
        parts = [part_ref(r.ref, p.part) for r in results.values() if r.ok for p in r.parts]
        open_parts = ctx.state.open_dead_letter_refs(ctx.name, Direction.PUSH, parts) if parts else set()
        created = {
            str(r.external_id)
            for item in batch
            if (r := results.get(item.record.ref)) is not None
            and r.ok
            and r.external_id is not None
            and sender.final.get(item.record.ref, item.record).operation is Operation.CREATE
        }
        holders = ctx.state.linked_entities(ctx.name, created) if created else {}
        left = [
            item.record.ref
            for item in batch
            if item.record.operation is Operation.UNLINK
            and (r := results.get(item.record.ref)) is not None
            and r.ok
        ]
        members = ctx.state.get_links(ctx.name, left) if left else {}
        with ctx.state.transaction() as tx:
            for item in batch:
                record = sender.final.get(item.record.ref, item.record)
                result = results.get(record.ref)
                if result is None and refused is not None:
                    result = PushResult.rejected(record.ref, refused)
                if result is not None and result.ok and record.operation is Operation.CREATE:
                    result = _unless_merged(ctx.name, record, result, holders)
                if result is None:
                    if not sender.may_have_sent and record.ref not in self._stale_intents:
                        settled.append(record.ref)  # never left this machine: no create to look up
                    continue  # transient to the end: stays pending behind the unmoved checkpoint
                settled.append(record.ref)
                if result.ok:
                    self._streak_broken(tx)
                    self._delivered(tx, item, record, result, now, links)
                    if record.operation is Operation.UNLINK and record.ref in members:
                        links.extend(_left_group(members[record.ref], record.parent_ref))
                    self._settle_parts(tx, record, result, open_parts)
                else:
                    payload = {
                        "operation": str(record.operation),
                        "entity_name": record.entity_name,
                        "payload": record.payload,
                    }
                    self._refused(tx, record.ref, result.error or "rejected without a reason", payload)
            tx.upsert_links(links)
            tx.clear_intents(ctx.name, settled)
        self._stale_intents.difference_update(settled)

    def _delivered(
        self,
        tx: StateTxn,
        item: _Planned,
        record: PushRecord,
        result: PushResult,
        now: str,
        links: list[Link],
    ) -> None:
        ctx = self.ctx
        self._count(record.operation)
        self._note(record.operation, record.ref, record.entity_name)
        if record.operation is Operation.DELETE:
            tx.delete_link(ctx.name, record.ref)
            # its refused sub-records went with it: no delivery will ever close their letters
            tx.resolve_part_dead_letters(ctx.name, Direction.PUSH, record.ref, "discarded")
        elif record.operation in (Operation.CREATE, Operation.UPDATE):
            external_id = result.external_id or record.external_id
            if external_id is None:
                self.counts.dead_lettered += 1
                tx.add_dead_letter(
                    ctx.name,
                    Direction.PUSH,
                    record.ref,
                    f"{ctx.name} answered success without an external id",
                    {"operation": str(record.operation), "payload": record.payload},
                )
                return
            links.append(
                Link(
                    connector=ctx.name,
                    entity_guid=record.ref,
                    external_id=str(external_id),
                    entity_name=record.entity_name,
                    snapshot=_without_refused(item.snapshot, result),
                    synced_at=now,
                    base=item.base,
                )
            )
            if self._parked.pop(record.ref, None) is not None:
                tx.unpark(ctx.name, record.ref)
            self._links[record.ref] = str(external_id)
            if self.replaying:
                self.delivered_now.add(record.ref)
        if record.ref in self._open_letters:
            tx.resolve_dead_letter(ctx.name, Direction.PUSH, record.ref, "replayed")
            self._open_letters.discard(record.ref)

    def _settle_parts(
        self, tx: StateTxn, record: PushRecord, result: PushResult, open_parts: set[str]
    ) -> None:
        """Sub-records of a delivered record: a refused one is dead-lettered on its own (the record and
        its children are delivered); a delivered one closes its letter; a replayed letter whose part the
        record no longer carries is discarded."""
        ctx = self.ctx
        replayed = self._replayed_parts.pop(record.ref, set())
        for part in result.parts:
            ref = part_ref(record.ref, part.part)
            replaying = ref in replayed
            replayed.discard(ref)
            if part.error is None:
                if ref in open_parts:
                    tx.resolve_dead_letter(ctx.name, Direction.PUSH, ref, "replayed")
                continue
            payload = {
                "operation": str(record.operation),
                "entity_name": record.entity_name,
                "part": part.part,
                "payload": record.payload,
            }
            if ref in open_parts and not replaying:
                # refused again on a later push: not a new letter nor an attempt, but the reason and the
                # payload an operator reads are today's
                tx.add_dead_letter(ctx.name, Direction.PUSH, ref, part.error, payload, attempt=False)
                continue
            self.counts.dead_lettered += 1
            log.warning("dead letter %s: %s", ref, part.error)
            tx.add_dead_letter(ctx.name, Direction.PUSH, ref, part.error, payload)
        for ref in replayed:
            tx.resolve_dead_letter(ctx.name, Direction.PUSH, ref, "discarded")


def _unless_merged(
    connector: str, record: PushRecord, result: PushResult, holders: dict[str, str]
) -> PushResult:
    """A create the remote answered with an external id another entity already holds (the remote merged
    two local records, e.g. one person registered twice): linking it would give one remote record two
    entities, so it is the record's failure, with both sides named. ``holders`` learns the new links of the
    batch, so two creates answered alike in one batch link the first only."""
    if result.external_id is None:
        return result
    external_id = str(result.external_id)
    holder = holders.setdefault(external_id, record.ref)
    if holder == record.ref:
        return result
    return PushResult.rejected(
        record.ref,
        f"{connector} answered the create with external id {external_id}, which is already linked to "
        f"entity {holder}: the remote holds both as one record (a duplicate?); merge them in the log or "
        f"split them in the remote, then replay",
    )


def _without_refused(snapshot: dict[str, Any], result: PushResult) -> dict[str, Any]:
    """The snapshot of what the remote now holds: the payload without the sub-records it refused."""
    paths = [p.path for p in result.parts if p.error is not None and p.path]
    if not paths:
        return snapshot
    out = copy.deepcopy(snapshot)
    # the highest index first: removing an item does not move the ones before it
    for path in sorted(paths, key=lambda p: p[-1] if isinstance(p[-1], int) else -1, reverse=True):
        container: Any = out
        try:
            for key in path[:-1]:
                container = container[key]
            del container[path[-1]]
        except (KeyError, IndexError, TypeError):
            continue  # not where the connector said: the snapshot keeps it
    return out


def _taken_whole(batch: list[_Planned], sent: _Sent) -> bool:
    """Every record of ``batch`` answered and accepted: committing it cannot stop the run."""
    results = sent.results
    return (
        sent.error is None
        and len(results) == len(batch)
        and all((r := results.get(p.record.ref)) is not None and r.ok for p in batch)
    )


class _BatchSender:
    """One batch through retries: after an ambiguous failure, creates are looked up before they are re-sent.

    A timeout or a 5xx after the request left may have created records; asking the connector for the refs
    first turns those creates into updates, so a retry never creates a second record.
    """

    def __init__(
        self,
        ctx: SyncContext,
        records: Sequence[PushRecord],
        results: dict[str, PushResult],
        stale_intents: set[str],
    ):
        self.ctx = ctx
        self.pending = list(records)
        self.results = results
        self.final: dict[str, PushRecord] = {}
        self.ambiguous = any(r.operation is Operation.CREATE and r.ref in stale_intents for r in self.pending)
        self.may_have_sent = False
        """Whether any request carrying this batch's records may have left this machine."""

    def attempt(self) -> None:
        connector = self.ctx.connector
        pending = self.pending
        if self.ambiguous:
            creates = [r.ref for r in pending if r.operation is Operation.CREATE]
            found = connector.lookup(creates) if creates else {}
            if found:
                log.info("%d records of an unanswered request already exist; updating them", len(found))
            pending = [
                replace(r, operation=Operation.UPDATE, external_id=found[r.ref]) if r.ref in found else r
                for r in pending
            ]
            self.pending = pending
            self.ambiguous = False
        for record in pending:
            self.final[record.ref] = record
        try:
            answers = connector.push(pending)
        except ConnectorError as exc:
            self.may_have_sent = self.may_have_sent or not exc.unsent
            self.ambiguous = exc.transient and not exc.unsent
            raise
        by_ref = {a.ref: a for a in answers}
        settled_before = len(self.results)
        again = []
        last_error = None
        waits = []
        maybe_sent = False
        for record in pending:
            answer = by_ref.get(record.ref)
            if answer is None or (not answer.ok and answer.transient):
                again.append(record)
                maybe_sent = maybe_sent or answer is None or not answer.unsent
                last_error = answer.error if answer else "no result for this record"
                if answer is not None and answer.retry_after is not None:
                    waits.append(answer.retry_after)
            else:
                self.results[record.ref] = answer
        self.pending = again
        if again:
            self.ambiguous = maybe_sent
            self.may_have_sent = self.may_have_sent or maybe_sent
            raise TransientError(
                f"{len(again)} records failed transiently: {last_error}",
                retry_after=max(waits, default=None),
                progress=len(self.results) > settled_before,
            )


@dataclass(frozen=True)
class PushScope:
    """Which part of the log one push covers; the default is the connector's ordinary push (everything
    after its checkpoint). A shard of a bulk load (``connector_core/sync/bulk.py``) narrows all three: it
    keeps its own cursor under ``checkpoint`` (a key of the checkpoints table, starting at ``start``), reads
    no event past ``until`` (the plan's snapshot mark), and delivers only the entities ``select`` keeps (its
    share of the households). Everything else -- links, intents, dead letters, parked children -- stays the
    connector's, so what a shard delivered is what an ordinary push finds delivered afterwards."""

    checkpoint: str | None = None
    """Checkpoint key (``None``: the connector's own push checkpoint)."""
    start: str | None = None
    """Where to begin when ``checkpoint`` holds nothing yet."""
    until: str | None = None
    select: Callable[[Iterable[str]], set[str]] | None = None
    """The guids of this scope among those given (``None``: all)."""

    def narrow(self, changes: PageChanges) -> PageChanges:
        if self.select is None:
            return changes
        # an ended membership goes with its group: the group's household is the one being written
        kept = self.select([*changes.entities, *(group for group, _ in changes.unlinks)])
        return PageChanges(
            entities=[g for g in changes.entities if g in kept],
            unlinks=[(group, member) for group, member in changes.unlinks if group in kept],
            listers=changes.listers,
        )


ORDINARY = PushScope()


def bulk_load_hold(state: StateStore, connector: str) -> str | None:
    """Why an ordinary push of ``connector`` waits (``None``: it does not): an open bulk load's shards write
    the same records, so a push now would race them on the same households; once the load is finished its
    mark is the push checkpoint."""
    plan = state.open_bulk_plan(connector)
    if plan is None:
        return None
    return f"bulk load {plan.id} in progress: pushes resume from its mark when it finishes"


def run_push(ctx: SyncContext, report: DirectionReport, scope: PushScope = ORDINARY) -> None:
    key = scope.checkpoint or ctx.name
    if scope.checkpoint is None and not ctx.dry_run:
        # run_connector skips such a push before it starts; this guards every other caller
        held = bulk_load_hold(ctx.state, ctx.name)
        if held is not None:
            raise RunStopped(held)
    cursor = ctx.state.get_checkpoint(key, Direction.PUSH)
    if cursor is None and scope.checkpoint is not None:
        cursor = scope.start
    report.checkpoint_before = cursor
    pusher = Pusher(ctx, report.counts, report.plan if ctx.dry_run else None, select=scope.select)
    try:
        _push_pages(ctx, report, pusher, cursor, scope, key)
    finally:
        pusher.close()


def _push_pages(
    ctx: SyncContext, report: DirectionReport, pusher: Pusher, cursor: str | None, scope: PushScope, key: str
) -> None:
    total = None
    if ctx.on_progress is not None:
        total = ctx.eventlog.count(cursor) - (ctx.eventlog.count(scope.until) if scope.until else 0)
    # a shard whose checkpoint reached the mark before a crash has nothing left to read
    while not ctx.stop.is_set() and (scope.until is None or cursor != scope.until):
        page = ctx.eventlog.read_touches(cursor, ctx.page_size, scope.until)
        if not page.touches:
            break
        report.counts.read += len(page.touches)
        changes = scope.narrow(touched_entities(page.touches, ctx.user_id))
        pusher.push_entities(changes.entities, changes.unlinks, changes.listers)
        if not ctx.dry_run and not pusher.holding_refusals:  # a streak may yet stop the run before them
            with ctx.state.transaction() as tx:
                tx.set_checkpoint(key, Direction.PUSH, page.cursor)
        cursor = page.cursor
        ctx.progress("push", report.counts.read, total)
        log.info("%s: pushed through event cursor %s", key, cursor)
        if page.at_end:
            break
    if pusher.holding_refusals:  # the run ended without a systemic streak: they are one record's fault
        pusher.flush_refusals()
        with ctx.state.transaction() as tx:
            tx.set_checkpoint(key, Direction.PUSH, cursor)
    if not ctx.stop.is_set():
        pusher.retry_parked(scope.select)
    report.checkpoint_after = cursor

"""Pull: remote changes appended to the event log as DataCollect events.

Each remote record is mapped back, resolved to its entity through links (a record dcsync never saw gets a
deterministic guid, uuid5 of connector and external id, so a re-pull cannot make a second entity), and
compared with the remote's state at the last sync (the *merge base* kept on its link, the entity's data as
of the last sync, overlaid with the link's snapshot mapped back, so what the mapping cannot carry never
reads as a remote change): only fields the remote changed since then are applied, so re-reading an
unchanged record never reverts a local edit that is waiting to be pushed. When both sides changed, the
connector's conflict policy decides (see ``sync/conflicts.py``); an entity deleted here since the last sync
is left deleted, since the push that follows sends the delete. An event is appended only when something
changes, in DataCollect's mobile style, with a deterministic guid, so re-reading a page appends nothing. The
link's snapshot becomes the pushed form of the remote's state, which is what stops a pulled change echoing
back on the next push. The pull cursor moves only after the page's events are committed.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

from connector_core.connector import PullPage, RemoteRecord
from connector_core.entities import Entity, EventIssue, fold
from connector_core.events import FormSubmission, SyncLevel, normalize_timestamp, now_timestamp
from connector_core.mapping import EntityMapping, MapContext
from connector_core.retry import call_with_retry
from connector_core.scopes import runtime_key
from connector_core.state.base import Direction, Link
from connector_core.sync.conflicts import decide
from connector_core.sync.context import SyncContext
from connector_core.sync.push import household_of, pushed_doc
from connector_core.sync.rehearsal import PullRehearsal
from connector_core.sync.report import DirectionReport
from connector_core.sync.scoping import scoped_push

log = logging.getLogger("dcsync.pull")

ENTITY_NS = uuid.UUID("8d0c5f8e-7a51-4c1b-9a59-3f4f3f0a6b21")
EVENT_NS = uuid.UUID("1b4e28ba-2fa1-4d3b-a3f5-ef19b5a7633b")
_BOOKKEEPING = ("entityName",)


def entity_guid_for(connector: str, external_id: str) -> str:
    """The guid of an entity first seen remotely: stable, so pulling it twice yields one entity."""
    return str(uuid.uuid5(ENTITY_NS, f"{connector}|{external_id}"))


def parents_first(records: list[RemoteRecord]) -> list[RemoteRecord]:
    """Order a page so a record comes after its parent when both are in it (a household's new members
    can then be linked to it in the same page)."""
    in_page = {r.external_id: r for r in records}
    depth: dict[str, int] = {}

    def level(record: RemoteRecord, trail: frozenset[str]) -> int:
        if record.external_id in depth:
            return depth[record.external_id]
        parent = in_page.get(record.parent_external_id or "")
        value = 0
        if parent is not None and parent.external_id not in trail:
            value = level(parent, trail | {record.external_id}) + 1
        depth[record.external_id] = value
        return value

    return sorted(records, key=lambda r: level(r, frozenset()))


class PagePuller:
    """Turns remote records into events and links, seeing its own earlier records (also used to replay)."""

    def __init__(self, ctx: SyncContext, report: DirectionReport, rehearsal: PullRehearsal | None = None):
        self.ctx = ctx
        self.rehearsal = rehearsal  # a dry run: what its earlier pages would have committed
        self.counts = report.counts
        self.plan = report.plan if ctx.dry_run else None
        self.events: list[FormSubmission] = []
        self.links: dict[str, Link] = {}  # external id -> link, this page
        self._external_ids: dict[str, str] = {}  # entity guid -> external id, this page
        self.deleted_links: list[str] = []
        self.dead_letters: list[tuple[str, str, dict[str, Any]]] = []
        self.resolved_dead_letters: list[str] = []
        self.conflicts: list[dict[str, Any]] = []
        self.relearnt: list[Entity] = []  # forgotten merge bases learnt again: the push sends these entities
        self.local: dict[str, Entity | None] = {}

    # -- lookups that see this page's own work ----------------------------------------------------
    def find_link(self, external_id: str) -> Link | None:
        if external_id in self.links:
            return self.links[external_id]
        if self.rehearsal is not None and (kept := self.rehearsal.find_link(external_id))[0]:
            return kept[1]
        return self.ctx.state.find_link(self.ctx.name, external_id)

    def resolve(self, external_id: str, entity_name: str | None = None) -> str | None:
        link = self.find_link(str(external_id))
        return link.entity_guid if link else None

    def entity(self, guid: str) -> Entity | None:
        if guid in self.local:
            return self.local[guid]
        if self.rehearsal is not None and (kept := self.rehearsal.entity(guid))[0]:
            return kept[1]
        return self.ctx.eventlog.get_entity(guid)

    def external_id_of(self, guid: str) -> str | None:
        if guid in self._external_ids:
            return self._external_ids[guid]
        if self.rehearsal is not None and (kept := self.rehearsal.external_id_of(guid))[0]:
            return kept[1]
        stored = self.ctx.state.get_link(self.ctx.name, guid)
        return stored.external_id if stored else None

    # -- one record -------------------------------------------------------------------------------
    def take(self, record: RemoteRecord) -> None:
        ctx = self.ctx
        link = self.find_link(record.external_id)
        guid = (
            link.entity_guid
            if link is not None
            else (record.ref or entity_guid_for(ctx.name, record.external_id))
        )
        if link is None and record.ref and self._held_by_another(record, guid):
            return
        entity = self.entity(guid)
        entity_name = (
            record.entity_name
            or (link.entity_name if link else None)
            or (entity.entity_name if entity else None)
        )
        if record.deleted:
            self._deleted(record, guid, entity)
            return
        if entity is None and link is not None and not link.deleted:
            # deleted here since the last sync: the push (which follows the pull) deletes it remotely, so
            # the remote's copy must not bring it back
            self.counts.skipped += 1
            return
        mapping = ctx.mappings.for_entity_name(entity_name) if entity_name else None
        if mapping is None and entity is not None:
            mapping = ctx.mappings.for_entity(entity.to_json())
        if mapping is None:
            self.counts.skipped += 1
            return
        result = mapping.pull(record.data, MapContext(link=self.external_id_of, resolve=self.resolve))
        if result.errors:
            self._dead_letter(record, f"mapping failed: {result.reason}")
            return
        if result.record is None:
            self.counts.skipped += 1
            return
        remote = dict(result.record)
        if entity_name:
            remote["entityName"] = entity_name
        if record.parent_external_id:
            parent_guid = self.resolve(record.parent_external_id)
            if parent_guid is None:
                self._dead_letter(record, f"parent {record.parent_external_id} is not known to dcsync yet")
                return
            remote["parentGuid"] = parent_guid
        version = record.version or record.updated_at or ""
        base = link.base if link is not None and link.base else None
        synced = self._synced_form(mapping, link, base) if link is not None and base is not None else None
        remote, held, declined = self._scoped(remote, mapping, entity_name, entity, synced)
        if entity is None and held and set(remote) <= set(_BOOKKEEPING) | {"parentGuid"}:
            # nothing of it may land: no entity made of bookkeeping alone (reported again if it changes)
            if declined:
                self._out_of_scope(record, guid, entity_name, declined)
            self.counts.skipped += 1
            return
        if declined:
            self._out_of_scope(record, guid, entity_name, declined)

        if entity is None:
            apply = news = remote
        elif link is not None and link.synced_at is None and not link.base:
            # dcsync forgot its merge base (`dcsync forget`): it cannot tell which side changed a field that
            # differs. The log is not rewritten from the remote (that would put the person's data back into
            # the log and undo local edits): the base is learnt again from the remote, and local changes go
            # out with the push that follows (held for it, as a resolved conflict's entity is: the push's
            # checkpoint is already past the entity's events)
            apply = news = {}
            if not self.ctx.dry_run:
                self.relearnt.append(entity)
        elif base is None:
            apply = news = {k: v for k, v in remote.items() if entity.data.get(k) != v}
        else:
            assert link is not None and synced is not None  # a merge base only exists on a link
            remote_delta = {k: v for k, v in remote.items() if synced.get(k) != v}
            pushed = self._as_pushed(entity, link) if remote_delta else None
            decision = decide(
                ctx,
                entity,
                link,
                remote_delta,
                record.updated_at,
                local_changed=pushed is not None and self._changed_locally(pushed, link),
                local=pushed["data"] if pushed is not None else None,
            )
            if decision.conflict is not None:
                self.counts.conflicts += 1
                self.conflicts.append(
                    {**decision.conflict, "external_id": record.external_id, "remote_version": version}
                )
                if decision.hold:
                    log.warning("%s: conflict on %s held for an operator", ctx.name, guid)
                    return
            news = decision.apply
            apply = {k: v for k, v in decision.apply.items() if entity.data.get(k) != v}
        if set(apply) <= set(_BOOKKEEPING) and entity is not None:
            apply = {}
        if base is not None and synced is not None:  # keep the base's richer form of unchanged fields
            remote_state = {**base, **{k: v for k, v in remote.items() if synced.get(k) != v}}
        else:
            remote_state = {**(entity.data if entity else {}), **remote}
        household = news.get("parentGuid")
        synced_household = base.get("parentGuid") if base is not None else None
        left = self._left(record, entity, synced_household)
        if left is not None:  # the base says what the remote holds now: no household
            remote_state.pop("parentGuid", None)
        if not apply:
            if self._join(record, guid, entity, household, version, synced_household, left):
                self.counts.updated += 1
                self._note("update", guid, entity_name, f"member of {household}")
            else:
                self.counts.unchanged += 1
            if link is None or link.remote_version != version or link.base != remote_state or declined:
                self._link(record, guid, entity_name, entity, remote_state, version, held)
            self.resolved_dead_letters.append(record.external_id)
            return
        event = self._event(
            record, guid, "create-individual" if entity is None else "update-individual", apply, version
        )
        new_state = fold([event], self.entity).changed[guid]
        self.local[guid] = new_state
        self._join(record, guid, entity, household, version, synced_household, left)
        if entity is None:
            self.counts.created += 1
        else:
            self.counts.updated += 1
        self._note("create" if entity is None else "update", guid, entity_name)
        self._link(record, guid, entity_name, new_state, remote_state, version, held)
        self.resolved_dead_letters.append(record.external_id)

    def _left(self, record: RemoteRecord, entity: Entity | None, held: Any) -> str | None:
        """The real group of the log the remote took the record out of, leaving it in no household: the
        one the merge base names (the remote's household at the last sync), for a remote whose pulled
        individuals always say their household (``Connector.pulls_households``). A mobile household (an
        individual-typed entity) is no such group: its membership is the person's ``parentGuid``, which
        the pull does not rewrite."""
        if (
            record.parent_external_id is not None
            or not self.ctx.connector.pulls_households
            or entity is None
            or entity.type != "individual"
            or not isinstance(held, str)
            or not held
        ):
            return None
        group = self.entity(held)
        return held if group is not None and group.type == "group" else None

    def _join(
        self,
        record: RemoteRecord,
        guid: str,
        before: Entity | None,
        household: Any,
        version: str,
        held: Any = None,
        left: str | None = None,
    ) -> bool:
        """The remote put the record in ``household`` (changed since the last sync), or took it out of
        ``left`` into none: where that is a real group of the log (type ``group``), say so in the group's
        terms, as the push reads membership (``sync/push.py``'s ``household_of``: a group's ``memberIds``
        is the truth): ``add-member`` on the new group if it does not list the record, and
        ``remove-member`` on the group it left, if that one still lists it (the group its ``parentGuid``
        named before, or the household of the last sync: a member a group lists has no ``parentGuid`` to
        say so). Without the ``remove-member`` the group would still list the person, and their next
        local edit would undo the registrar's end of the membership. A mobile household (an
        individual-typed entity) has no ``memberIds``: its members belong to it by ``parentGuid`` alone,
        and nothing more is written."""
        joined = isinstance(household, str) and bool(household)
        if not joined and left is None:
            return False
        member = self.entity(guid)
        if member is None or member.type != "individual":
            return False
        events: list[FormSubmission] = []
        if joined:
            group = self.entity(household)
            if group is not None and group.type == "group" and guid not in group.member_ids:
                events.append(
                    self._event(record, household, "add-member", {"members": [{"guid": guid}]}, version)
                )
            previous = {before.parent_guid if before is not None else None, held}
        else:
            previous = {left}
        for old in sorted(g for g in previous if isinstance(g, str) and g and g != household):
            old_group = self.entity(old)
            if old_group is not None and old_group.type == "group" and guid in old_group.member_ids:
                events.append(self._event(record, old, "remove-member", {"memberId": guid}, version))
        if events:
            self.local.update(fold(events, self.entity).changed)
        return bool(events)

    def _scoped(
        self,
        remote: dict[str, Any],
        mapping: EntityMapping,
        entity_name: str | None,
        entity: Entity | None,
        synced: dict[str, Any] | None,
    ) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
        """Split a mapped record by the pull scope: what may be written, what the remote holds outside the
        scope (kept for the link's snapshot only), and the names of the refused fields that are news (the
        remote changed them since the last sync; for a record not in the log yet, all of them)."""
        scopes = self.ctx.scopes
        kind = entity.type if entity is not None else None
        allowed = scopes.pull_fields(runtime_key(mapping, entity_name, kind)) if scopes is not None else None
        if allowed is None:
            return remote, {}, []
        held = {k: v for k, v in remote.items() if k not in allowed}
        kept = {k: v for k, v in remote.items() if k in allowed}
        if entity is None:  # all it holds, but an empty value is no change anyone loses
            declined = sorted(k for k, v in held.items() if v not in (None, "", [], {}))
        elif synced is not None:
            declined = sorted(k for k, v in held.items() if synced.get(k) != v)
        else:
            declined = sorted(k for k, v in held.items() if entity.data.get(k) != v)
        return kept, held, declined

    def _out_of_scope(
        self, record: RemoteRecord, guid: str, entity_name: str | None, fields: list[str]
    ) -> None:
        """One line per record whose change the pull scope refused: its ids and the field names, no values."""
        self.counts.out_of_scope += 1
        names = ", ".join(fields)
        self._note("out of scope", guid, entity_name, f"not written: {names}")
        log.warning(
            "%s: record %s (entity %s, %s): not written, outside the pull scope: %s",
            self.ctx.name,
            record.external_id,
            guid,
            entity_name or "entity",
            names,
        )

    def _held_by_another(self, record: RemoteRecord, guid: str) -> bool:
        """One entity, one remote record: a record carrying the reference of an entity linked to another
        record (a copy made on the remote, guid and all) is that record's dead letter, naming both, and
        never takes the link; re-linking would flip the entity between the two on every pull. Its letter
        is written once: the look-back re-reads the copy, and an open letter already says it all.

        A link whose external id is the entity's own guid names no remote record (a webhook assigns no
        ids, so the push links a delivered record by its ref): the first pulled record carrying that ref
        is the record, and takes the link."""
        holder = self.external_id_of(guid)
        if holder is None or holder in (record.external_id, guid):
            return False
        if record.external_id in self.ctx.state.open_dead_letter_refs(
            self.ctx.name, Direction.PULL, [record.external_id]
        ):
            self.counts.skipped += 1
            return True
        self._dead_letter(
            record,
            f"{self.ctx.name} record {record.external_id} carries the reference of entity {guid}, which is "
            f"linked to record {holder}: a duplicate on the remote; merge or unlink one there",
        )
        return True

    def _synced_form(self, mapping: EntityMapping, link: Link, base: dict[str, Any]) -> dict[str, Any]:
        """The remote's state at the last sync as a pull reads it: the link's snapshot (the payload last
        pushed, or the pushed form of the last pull) mapped back, over the merge base.

        The base is entity data, which can hold what the mapping never carries to the remote (a list item's
        key the remote has no field for, a date in a non-canonical form). Compared with the base itself,
        such a value would read as a remote change on every pull after a push, and be overwritten.
        """
        if not link.snapshot:
            return base
        back = mapping.pull(link.snapshot, MapContext(link=self.external_id_of, resolve=self.resolve))
        return {**base, **back.record} if back.record is not None else base

    def _as_pushed(self, entity: Entity, link: Link) -> dict[str, Any]:
        """The entity's document as the push sends it (its household as ``household_of`` finds it)."""
        parent = self.entity(entity.parent_guid) if entity.parent_guid else None
        held = link.base.get("parentGuid") if link.base else None
        group = self.entity(held) if isinstance(held, str) and held else None
        return pushed_doc(entity, household_of(entity, parent, [group] if group else [], held))

    def _changed_locally(self, doc: dict[str, Any], link: Link) -> bool:
        """Has the entity (``doc``: as the push sends it) changed since its last sync in a way its push
        mapping would send?"""
        mapping = self.ctx.mappings.for_entity(doc)
        if mapping is None:
            return False
        mapped = scoped_push(self.ctx, mapping, doc, MapContext(link=self.external_id_of), link)
        return mapped.result.errors != [] or mapped.result.record != link.snapshot

    def _event(
        self, record: RemoteRecord, guid: str, kind: str, data: dict[str, Any], version: str
    ) -> FormSubmission:
        body = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
        event = FormSubmission(
            guid=str(uuid.uuid5(EVENT_NS, f"{self.ctx.name}|{record.external_id}|{version}|{kind}|{body}")),
            entity_guid=guid,
            type=kind,
            data=data,
            timestamp=_event_time(record.updated_at),
            user_id=self.ctx.user_id,
            sync_level=SyncLevel.EXTERNAL,
        )
        self.events.append(event)
        return event

    def _link(
        self,
        record: RemoteRecord,
        guid: str,
        entity_name: str | None,
        template: Entity | None,
        remote_state: dict[str, Any],
        version: str,
        held: dict[str, Any] | None = None,
    ) -> None:
        """Remember the remote's state: in entity space as the merge base, and in its pushed form as the
        snapshot, so the next push sends exactly the local changes the remote does not have. ``held``: the
        remote's values the pull scope kept out of the log, in the snapshot only (``sync/scoping.py``)."""
        self._external_ids[guid] = record.external_id
        self.links[record.external_id] = remote_link(
            self.ctx,
            guid,
            record.external_id,
            entity_name,
            template,
            remote_state,
            version,
            self.external_id_of,
            held,
        )

    def _deleted(self, record: RemoteRecord, guid: str, entity: Entity | None) -> None:
        if entity is None:
            self.counts.unchanged += 1
            return
        self._event(record, guid, "delete-entity", {"reason": f"deleted in {self.ctx.name}"}, "deleted")
        self.local[guid] = None
        self.counts.deleted += 1
        self._note("delete", guid, entity.entity_name)
        self.deleted_links.append(guid)

    def _note(self, operation: str, ref: str, entity_name: str | None, detail: str = "") -> None:
        if self.plan is not None and len(self.plan) < 10_000:
            from connector_core.sync.report import PlannedOperation

            self.plan.append(PlannedOperation(f"pull {operation}", ref, entity_name, detail))

    def _dead_letter(self, record: RemoteRecord, reason: str) -> None:
        self.counts.dead_lettered += 1
        self._note("invalid", record.external_id, record.entity_name, reason)
        log.warning("dead letter %s/%s: %s", self.ctx.name, record.external_id, reason)
        payload = {
            "external_id": record.external_id,
            "entity_name": record.entity_name,
            "ref": record.ref,
            "data": record.data,
            "updated_at": record.updated_at,
            "version": record.version,
            "parent_external_id": record.parent_external_id,
        }
        self.dead_letters.append((record.external_id, reason, payload))

    def _hold_unapplied(self, issues: list[EventIssue]) -> None:
        """Events the log stored but did not apply as appended (a DataCollect tenant's conflict rule, or a
        read-back that differs): the log and the remote now disagree, so each is an open conflict for an
        operator (``dcsync status`` counts it, the entity is held back from push), never a resolved one."""
        ours = {e.guid: e for e in self.events}
        links = {link.entity_guid: link for link in self.links.values()}
        for issue in issues:
            event, link = ours.get(issue.event_guid), links.get(issue.entity_guid)
            if event is None or link is None:
                continue
            entity = self.ctx.eventlog.get_entity(issue.entity_guid)
            local = {k: entity.data.get(k) for k in event.data} if entity is not None else {}
            if not any(c["entity_guid"] == issue.entity_guid for c in self.conflicts):
                self.counts.conflicts += 1
            self.conflicts = [c for c in self.conflicts if c["entity_guid"] != issue.entity_guid]
            self.conflicts.append(
                {
                    "entity_guid": issue.entity_guid,
                    "external_id": link.external_id,
                    "base": {},  # the merge base is gone: the link already holds the remote state
                    "local": local,
                    "remote": dict(event.data),
                    "remote_version": link.remote_version,
                    "resolution": None,
                }
            )
            log.warning("%s: %s; recorded as an open conflict", self.ctx.name, issue)

    def rehearse(self) -> None:
        """A dry run's stand-in for :meth:`commit`: later pages see this one's links and entities."""
        assert self.rehearsal is not None
        unlinked = {guid: self.external_id_of(guid) for guid in self.deleted_links}
        self.rehearsal.keep(self.links.values(), unlinked, self.local)

    def commit(self, next_cursor: str | None, *, move_cursor: bool = True) -> None:
        ctx = self.ctx
        if self.events:
            appended = ctx.eventlog.append(self.events)
            self.counts.appended += appended.new
            self._hold_unapplied(appended.issues)
        with ctx.state.transaction() as tx:
            for link in self.links.values():
                tx.upsert_link(link)
            for guid in self.deleted_links:
                tx.delete_link(ctx.name, guid)
            for ref in self.resolved_dead_letters:
                tx.resolve_dead_letter(ctx.name, Direction.PULL, ref, "replayed")
            for ref, reason, payload in self.dead_letters:
                tx.add_dead_letter(ctx.name, Direction.PULL, ref, reason, payload)
            for conflict in self.conflicts:
                tx.add_conflict(
                    ctx.name,
                    conflict["entity_guid"],
                    conflict["external_id"],
                    ctx.conflict_policy,
                    conflict["base"],
                    conflict["local"],
                    conflict["remote"],
                    conflict["remote_version"],
                    resolution=conflict["resolution"],
                )
            for entity in self.relearnt:
                tx.park(
                    ctx.name,
                    entity.guid,
                    entity.parent_guid or "",
                    "merge base forgotten (dcsync forget): the log's state is sent by the next push",
                    count=False,
                )
            if move_cursor:
                tx.set_checkpoint(ctx.name, Direction.PULL, next_cursor)


def _event_time(updated_at: str | None) -> str:
    """When the remote changed the record, or now when it says nothing a log can read: a connector may
    order by an ``updated_at`` that is no timestamp (the REST connector takes any field, epoch milliseconds
    included), and the event's guid does not depend on its timestamp."""
    if updated_at:
        try:
            return normalize_timestamp(updated_at)
        except ValueError:
            pass
    return now_timestamp()


def remote_link(
    ctx: SyncContext,
    guid: str,
    external_id: str,
    entity_name: str | None,
    template: Entity | None,
    remote_state: dict[str, Any],
    version: str | None,
    external_id_of: Any,
    held: dict[str, Any] | None = None,
) -> Link:
    """The link that records ``remote_state`` as what the remote holds for ``guid`` (with ``held``, the
    remote's values the pull scope refused, in the snapshot but not in the merge base)."""
    snapshot: dict[str, Any] = {}
    shape = template.copy() if template is not None else Entity(guid=guid, type="individual")
    shape.data = {**remote_state, **(held or {})}
    mapping = ctx.mappings.for_entity(shape.to_json())
    if mapping is not None:
        mapped = scoped_push(ctx, mapping, shape.to_json(), MapContext(link=external_id_of)).result
        if not mapped.errors and mapped.record is not None:
            snapshot = mapped.record
    return Link(
        connector=ctx.name,
        entity_guid=guid,
        external_id=external_id,
        entity_name=entity_name,
        snapshot=snapshot,
        remote_version=version,
        synced_at=now_timestamp(),
        base=dict(remote_state),
    )


def run_pull(ctx: SyncContext, report: DirectionReport) -> None:
    # An event log that mirrors a remote log (datacollect) is brought up to date first, so conflicts are
    # detected against the log as of the start of the run, not as of the last refresh.
    refresh = getattr(ctx.eventlog, "refresh", None)
    if callable(refresh):
        refresh()
    cursor = ctx.state.get_checkpoint(ctx.name, Direction.PULL)
    report.checkpoint_before = cursor
    rehearsal = PullRehearsal() if ctx.dry_run else None
    while not ctx.stop.is_set():
        current = cursor

        def fetch(at: str | None = current) -> PullPage:
            return ctx.connector.pull(at, ctx.page_size)

        page = call_with_retry(
            fetch,
            ctx.retry,
            what=f"pull from {ctx.name}",
            on_retry=lambda *_: setattr(report.counts, "retries", report.counts.retries + 1),
        )
        report.counts.read += len(page.records)
        puller = PagePuller(ctx, report, rehearsal)
        for record in parents_first(page.records):
            puller.take(record)
        if rehearsal is not None:
            puller.rehearse()
        else:
            puller.commit(page.next_cursor)
        ctx.progress("pull", report.counts.read, None)
        if page.has_more and page.next_cursor == current:
            log.warning("%s: the remote answered a full page without moving its cursor", ctx.name)
            break
        cursor = page.next_cursor
        if not page.has_more:
            break
    if rehearsal is not None:
        rehearsal.close()
    report.checkpoint_after = cursor

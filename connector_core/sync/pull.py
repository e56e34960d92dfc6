"""Pull: remote changes appended to the event log as DataCollect events.

Each remote record is mapped back, resolved to its entity through links (a record dcsync never saw gets a
deterministic guid, uuid5 of connector and external id, so a re-pull cannot make a second entity), and
diffed against the entity's current state: an event is appended only when a mapped field changed, in
DataCollect's mobile style, with a deterministic guid, so re-reading a page appends nothing. The link's
snapshot becomes the pushed form of the new state, which is what stops the change echoing back on the next
push. The pull cursor moves only after the page's events are committed.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

from connector_core.connector import RemoteRecord
from connector_core.entities import Entity, fold
from connector_core.events import FormSubmission, SyncLevel, normalize_timestamp, now_timestamp
from connector_core.mapping import MapContext
from connector_core.retry import call_with_retry
from connector_core.state.base import Direction, Link
from connector_core.sync.context import SyncContext
from connector_core.sync.report import DirectionReport

log = logging.getLogger("dcsync.pull")

ENTITY_NS = uuid.UUID("8d0c5f8e-7a51-4c1b-9a59-3f4f3f0a6b21")
EVENT_NS = uuid.UUID("1b4e28ba-2fa1-4d3b-a3f5-ef19b5a7633b")


def entity_guid_for(connector: str, external_id: str) -> str:
    """The guid of an entity first seen remotely: stable, so pulling it twice yields one entity."""
    return str(uuid.uuid5(ENTITY_NS, f"{connector}|{external_id}"))


class _PagePuller:
    """Turns one page of remote records into events and links, seeing its own earlier records."""

    def __init__(self, ctx: SyncContext, report: DirectionReport):
        self.ctx = ctx
        self.counts = report.counts
        self.events: list[FormSubmission] = []
        self.links: dict[str, Link] = {}  # external id -> link, this page
        self.deleted_links: list[str] = []
        self.dead_letters: list[tuple[str, str, dict[str, Any]]] = []
        self.local: dict[str, Entity | None] = {}

    def find_link(self, external_id: str) -> Link | None:
        if external_id in self.links:
            return self.links[external_id]
        return self.ctx.state.find_link(self.ctx.name, external_id)

    def resolve(self, external_id: str, entity_name: str | None = None) -> str | None:
        link = self.find_link(str(external_id))
        return link.entity_guid if link else None

    def entity(self, guid: str) -> Entity | None:
        if guid in self.local:
            return self.local[guid]
        return self.ctx.eventlog.get_entity(guid)

    def external_id_of(self, guid: str) -> str | None:
        for link in self.links.values():
            if link.entity_guid == guid:
                return link.external_id
        link = self.ctx.state.get_link(self.ctx.name, guid)
        return link.external_id if link else None

    def take(self, record: RemoteRecord) -> None:
        ctx = self.ctx
        link = self.find_link(record.external_id)
        if link is not None:
            guid = link.entity_guid
        else:
            guid = record.ref or entity_guid_for(ctx.name, record.external_id)
        entity = self.entity(guid)
        entity_name = (
            record.entity_name
            or (link.entity_name if link else None)
            or (entity.entity_name if entity else None)
        )
        if record.deleted:
            self._deleted(record, guid, entity)
            return
        mapping = ctx.mappings.for_entity_name(entity_name) if entity_name else None
        if mapping is None and entity is not None:
            mapping = ctx.mappings.for_entity(entity.to_json())
        if mapping is None:
            self.counts.skipped += 1
            return
        result = mapping.pull(record.data, MapContext(link=self.external_id_of, resolve=self.resolve))
        if result.errors:
            reason = "; ".join(f"field {e.field}: {e.reason} (value {e.value!r})" for e in result.errors)
            self._dead_letter(record, f"mapping failed: {reason}")
            return
        if result.record is None:
            self.counts.skipped += 1
            return
        data = dict(result.record)
        if entity_name:
            data["entityName"] = entity_name
        if record.parent_external_id:
            parent_guid = self.resolve(record.parent_external_id)
            if parent_guid is None:
                self._dead_letter(
                    record, f"parent {record.parent_external_id} is not known to dcsync yet"
                )
                return
            data["parentGuid"] = parent_guid
        if entity is None:
            changed = data
        else:
            changed = {k: v for k, v in data.items() if entity.data.get(k) != v}
            if set(changed) <= {"entityName"}:
                changed = {}
        version = record.version or record.updated_at or ""
        if not changed:
            self.counts.unchanged += 1
            if link is None or link.remote_version != version:
                self._link(record, guid, entity_name, entity, version)
            return
        kind = "create-individual" if entity is None else "update-individual"
        body = json.dumps(changed, sort_keys=True, separators=(",", ":"), default=str)
        event = FormSubmission(
            guid=str(uuid.uuid5(EVENT_NS, f"{ctx.name}|{record.external_id}|{version}|{body}")),
            entity_guid=guid,
            type=kind,
            data=changed,
            timestamp=normalize_timestamp(record.updated_at) if record.updated_at else now_timestamp(),
            user_id=ctx.user_id,
            sync_level=SyncLevel.EXTERNAL,
        )
        new_state = fold([event], self.entity).changed[guid]
        self.local[guid] = new_state
        self.events.append(event)
        if entity is None:
            self.counts.created += 1
        else:
            self.counts.updated += 1
        self._link(record, guid, entity_name, new_state, version)

    def _link(
        self,
        record: RemoteRecord,
        guid: str,
        entity_name: str | None,
        state: Entity | None,
        version: str,
    ) -> None:
        """Remember the record with the pushed form of the entity as the snapshot (no echo on push)."""
        snapshot: dict[str, Any] = {}
        if state is not None:
            mapping = self.ctx.mappings.for_entity(state.to_json())
            if mapping is not None:
                mapped = mapping.push(state.to_json(), MapContext(link=self.external_id_of))
                if not mapped.errors and mapped.record is not None:
                    snapshot = mapped.record
        self.links[record.external_id] = Link(
            connector=self.ctx.name,
            entity_guid=guid,
            external_id=record.external_id,
            entity_name=entity_name,
            snapshot=snapshot,
            remote_version=version,
            synced_at=now_timestamp(),
        )

    def _deleted(self, record: RemoteRecord, guid: str, entity: Entity | None) -> None:
        if entity is None:
            self.counts.unchanged += 1
            return
        event = FormSubmission(
            guid=str(uuid.uuid5(EVENT_NS, f"{self.ctx.name}|{record.external_id}|deleted")),
            entity_guid=guid,
            type="delete-entity",
            data={"reason": f"deleted in {self.ctx.name}"},
            timestamp=normalize_timestamp(record.updated_at) if record.updated_at else now_timestamp(),
            user_id=self.ctx.user_id,
            sync_level=SyncLevel.EXTERNAL,
        )
        self.events.append(event)
        self.local[guid] = None
        self.counts.deleted += 1
        self.deleted_links.append(guid)

    def _dead_letter(self, record: RemoteRecord, reason: str) -> None:
        self.counts.dead_lettered += 1
        log.warning("dead letter %s/%s: %s", self.ctx.name, record.external_id, reason)
        payload = {"external_id": record.external_id, "entity_name": record.entity_name, "data": record.data}
        self.dead_letters.append((record.external_id, reason, payload))

    def commit(self, next_cursor: str | None) -> None:
        ctx = self.ctx
        if self.events:
            appended = ctx.eventlog.append(self.events)
            self.counts.appended += appended.new
        with ctx.state.transaction() as tx:
            for link in self.links.values():
                tx.upsert_link(link)
            for guid in self.deleted_links:
                tx.delete_link(ctx.name, guid)
            for ref, reason, payload in self.dead_letters:
                tx.add_dead_letter(ctx.name, Direction.PULL, ref, reason, payload)
            tx.set_checkpoint(ctx.name, Direction.PULL, next_cursor)


def run_pull(ctx: SyncContext, report: DirectionReport) -> None:
    cursor = ctx.state.get_checkpoint(ctx.name, Direction.PULL)
    report.checkpoint_before = cursor
    while not ctx.stop.is_set():
        current = cursor
        page = call_with_retry(
            lambda: ctx.connector.pull(current, ctx.page_size),
            ctx.retry,
            what=f"pull from {ctx.name}",
            on_retry=lambda *_: setattr(report.counts, "retries", report.counts.retries + 1),
        )
        report.counts.read += len(page.records)
        puller = _PagePuller(ctx, report)
        for record in page.records:
            puller.take(record)
        if not ctx.dry_run:
            puller.commit(page.next_cursor)
        if page.has_more and page.next_cursor == current:
            log.warning("%s: the remote answered a full page without moving its cursor", ctx.name)
            break
        cursor = page.next_cursor
        if not page.has_more:
            break
    report.checkpoint_after = cursor

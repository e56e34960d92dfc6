"""Push: entity changes from the event log to a connector.

Pages of events are read from the push checkpoint; the entities they touch are coalesced (many events of one
entity become one change of its current state), mapped, compared with the payload last synced (an unchanged
payload sends nothing, which is also what keeps pulled changes from echoing back), ordered parents first, and
delivered in batches. Each batch's outcomes (links, dead letters) commit in one transaction; the checkpoint
moves past a page only once every record of it is delivered or dead-lettered.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from connector_core.connector import (
    ConnectorError,
    Operation,
    PushRecord,
    PushResult,
    TransientError,
)
from connector_core.entities import Entity
from connector_core.events import FormSubmission, now_timestamp
from connector_core.mapping import MapContext
from connector_core.retry import call_with_retry
from connector_core.state.base import Direction, Link
from connector_core.sync.context import RunStopped, SyncContext
from connector_core.sync.report import Counts, DirectionReport

log = logging.getLogger("dcsync.push")

_MEMBER_EVENTS = {"create-group", "update-group", "add-member"}


def touched_entities(events: Iterable[FormSubmission], own_user_id: str) -> list[str]:
    """Entity guids a page of events changed, in first-touch order, minus this connector's own pulls."""
    seen: dict[str, None] = {}
    for event in events:
        if event.user_id == own_user_id:
            continue
        seen.setdefault(event.entity_guid, None)
        if event.type in _MEMBER_EVENTS:
            for member in event.data.get("members") or []:
                if isinstance(member, dict) and member.get("guid"):
                    seen.setdefault(str(member["guid"]), None)
        elif event.type == "remove-member" and event.data.get("memberId"):
            seen.setdefault(str(event.data["memberId"]), None)
    return list(seen)


def _depths(entities: dict[str, Entity]) -> dict[str, int]:
    """Depth of each entity below its nearest ancestor outside the set: parents go out first."""
    depths: dict[str, int] = {}

    def depth(guid: str, trail: frozenset[str]) -> int:
        if guid in depths:
            return depths[guid]
        parent = entities[guid].parent_guid
        value = 0
        if parent and parent in entities and parent not in trail:
            value = depth(parent, trail | {guid}) + 1
        depths[guid] = value
        return value

    for guid in entities:
        depth(guid, frozenset())
    return depths


@dataclass
class _Planned:
    record: PushRecord
    snapshot: dict


class _Pusher:
    def __init__(self, ctx: SyncContext, counts: Counts):
        self.ctx = ctx
        self.counts = counts
        self._links: dict[str, str] = {}  # delivered in this run: entity guid -> external id

    # -- links as the mapping sees them ---------------------------------------------------------
    def external_id(self, guid: str) -> str | None:
        if guid in self._links:
            return self._links[guid]
        link = self.ctx.state.get_link(self.ctx.name, guid)
        if link is None or link.deleted:
            return None
        return link.external_id

    # -- one page -------------------------------------------------------------------------------
    def push_entities(self, guids: list[str]) -> None:
        ctx = self.ctx
        entities = ctx.eventlog.get_entities(guids)
        links = ctx.state.get_links(ctx.name, guids)
        deletes = [
            g for g in guids if g not in entities and g in links and not links[g].deleted
        ]
        depths = _depths(entities)
        for level in sorted(set(depths.values())):
            wave = [entities[g] for g in guids if g in entities and depths[g] == level]
            self._deliver([p for e in wave if (p := self._plan(e, links.get(e.guid)))])
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
                )
                for g in deletes
            ]
        )
        self.counts.skipped += sum(1 for g in guids if g not in entities and g not in deletes)

    def _plan(self, entity: Entity, link: Link | None) -> _Planned | None:
        ctx = self.ctx
        doc = entity.to_json()
        mapping = ctx.mappings.for_entity(doc)
        if mapping is None:
            self.counts.skipped += 1
            return None
        result = mapping.push(doc, MapContext(link=self.external_id))
        if result.errors:
            reason = "; ".join(
                f"field {e.field}: {e.reason} (value {e.value!r})" for e in result.errors
            )
            self._dead_letter(entity.guid, f"mapping failed: {reason}", {"entity": doc})
            return None
        if result.record is None:
            self.counts.skipped += 1
            return None
        payload = result.record
        if link is not None and not link.deleted and link.snapshot == payload:
            self.counts.unchanged += 1
            return None
        parent_guid = entity.parent_guid
        parent_external = self.external_id(parent_guid) if parent_guid else None
        if parent_guid and parent_external is None and self._parent_expected(parent_guid):
            self._dead_letter(
                entity.guid,
                f"parent {parent_guid} is not delivered to {ctx.name} yet",
                {"entity": doc},
            )
            return None
        operation = Operation.UPDATE if link is not None and not link.deleted else Operation.CREATE
        return _Planned(
            PushRecord(
                ref=entity.guid,
                operation=operation,
                entity_name=entity.entity_name or entity.type,
                payload=payload,
                external_id=link.external_id if operation is Operation.UPDATE else None,
                parent_ref=parent_guid,
                parent_external_id=parent_external,
            ),
            payload,
        )

    def _parent_expected(self, parent_guid: str) -> bool:
        """A parent must be delivered first only if it exists and some mapping sends it."""
        parent = self.ctx.eventlog.get_entity(parent_guid)
        return parent is not None and self.ctx.mappings.for_entity(parent.to_json()) is not None

    def _dead_letter(self, ref: str, reason: str, payload: dict) -> None:
        self.counts.dead_lettered += 1
        log.warning("dead letter %s: %s", ref, reason)
        if not self.ctx.dry_run:
            with self.ctx.state.transaction() as tx:
                tx.add_dead_letter(self.ctx.name, Direction.PUSH, ref, reason, payload)

    # -- delivery -------------------------------------------------------------------------------
    def _deliver(self, planned: list[_Planned]) -> None:
        size = self.ctx.batch_size
        for start in range(0, len(planned), size):
            if self.ctx.stop.is_set():
                raise RunStopped("shutdown requested")
            self._deliver_batch(planned[start : start + size])

    def _deliver_batch(self, batch: list[_Planned]) -> None:
        ctx = self.ctx
        if ctx.dry_run:
            for item in batch:
                self._count(item.record.operation)
                if item.record.operation is not Operation.DELETE:
                    self._links[item.record.ref] = item.record.external_id or "(new)"
            return
        results: dict[str, PushResult] = {}
        sender = _BatchSender(ctx, [p.record for p in batch], results)
        error: ConnectorError | None = None
        try:
            call_with_retry(
                sender.attempt,
                ctx.retry,
                what=f"push of {len(sender.pending)} records to {ctx.name}",
                on_retry=lambda *_: self._count_retry(),
            )
        except ConnectorError as exc:
            error = exc
        self._commit(batch, results, sender)
        if error is not None:
            if error.transient:
                raise RunStopped(
                    f"{ctx.name}: gave up after retries: {error.message}; "
                    "the checkpoint stays before the undelivered records"
                ) from None
            # the whole batch was refused for a reason a retry cannot fix: dead-letter each record
            for item in batch:
                if item.record.ref not in results:
                    self._dead_letter(
                        item.record.ref,
                        error.message,
                        {"operation": str(item.record.operation), "payload": item.record.payload},
                    )

    def _count_retry(self) -> None:
        self.counts.retries += 1

    def _count(self, operation: Operation) -> None:
        if operation is Operation.CREATE:
            self.counts.created += 1
        elif operation is Operation.UPDATE:
            self.counts.updated += 1
        else:
            self.counts.deleted += 1

    def _commit(
        self, batch: list[_Planned], results: dict[str, PushResult], sender: _BatchSender
    ) -> None:
        ctx = self.ctx
        now = now_timestamp()
        with ctx.state.transaction() as tx:
            for item in batch:
                record = sender.final.get(item.record.ref, item.record)
                result = results.get(record.ref)
                if result is None:
                    continue
                if result.ok:
                    self._count(record.operation)
                    if record.operation is Operation.DELETE:
                        tx.delete_link(ctx.name, record.ref)
                    else:
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
                            continue
                        tx.upsert_link(
                            Link(
                                connector=ctx.name,
                                entity_guid=record.ref,
                                external_id=str(external_id),
                                entity_name=record.entity_name,
                                snapshot=item.snapshot,
                                synced_at=now,
                            )
                        )
                        self._links[record.ref] = str(external_id)
                    tx.resolve_dead_letter(ctx.name, Direction.PUSH, record.ref, "replayed")
                else:
                    self.counts.dead_lettered += 1
                    tx.add_dead_letter(
                        ctx.name,
                        Direction.PUSH,
                        record.ref,
                        result.error or "rejected without a reason",
                        {
                            "operation": str(record.operation),
                            "entity_name": record.entity_name,
                            "payload": record.payload,
                        },
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
    ):
        self.ctx = ctx
        self.pending = list(records)
        self.results = results
        self.final: dict[str, PushRecord] = {}
        self.ambiguous = False

    def attempt(self) -> None:
        connector = self.ctx.connector
        pending = self.pending
        if self.ambiguous:
            creates = [r.ref for r in pending if r.operation is Operation.CREATE]
            found = connector.lookup(creates) if creates else {}
            if found:
                log.info("%d records of an unanswered request already exist; updating them", len(found))
            pending = [
                replace(r, operation=Operation.UPDATE, external_id=found[r.ref])
                if r.ref in found
                else r
                for r in pending
            ]
            self.pending = pending
            self.ambiguous = False
        for record in pending:
            self.final[record.ref] = record
        try:
            answers = connector.push(pending)
        except ConnectorError as exc:
            self.ambiguous = exc.transient
            raise
        by_ref = {a.ref: a for a in answers}
        again = []
        last_error = None
        for record in pending:
            answer = by_ref.get(record.ref)
            if answer is None or (not answer.ok and answer.transient):
                again.append(record)
                last_error = answer.error if answer else "no result for this record"
            else:
                self.results[record.ref] = answer
        self.pending = again
        if again:
            self.ambiguous = True
            raise TransientError(f"{len(again)} records failed transiently: {last_error}")


def run_push(ctx: SyncContext, report: DirectionReport) -> None:
    cursor = ctx.state.get_checkpoint(ctx.name, Direction.PUSH)
    report.checkpoint_before = cursor
    pusher = _Pusher(ctx, report.counts)
    while not ctx.stop.is_set():
        page = ctx.eventlog.read(cursor, ctx.page_size)
        if not page.events:
            break
        report.counts.read += len(page.events)
        pusher.push_entities(touched_entities(page.events, ctx.user_id))
        if not ctx.dry_run:
            with ctx.state.transaction() as tx:
                tx.set_checkpoint(ctx.name, Direction.PUSH, page.cursor)
        cursor = page.cursor
        log.info("%s: pushed through event cursor %s", ctx.name, cursor)
        if page.at_end:
            break
    report.checkpoint_after = cursor

"""Replaying dead letters once their cause is fixed (a mapping corrected, a registry record repaired).

A push dead letter is replayed by delivering the entity's *current* state (not the stale payload kept for
reading), through the same planning and delivery as a run, so ordering, intents and links hold. A pull dead
letter is replayed by taking the stored remote record again. Successful replays close their dead letters as
``replayed``; failures bump ``attempts`` and keep them open with the new reason.
"""

from __future__ import annotations

from collections.abc import Iterable

from connector_core.connector import RemoteRecord
from connector_core.state.base import DeadLetter, Direction
from connector_core.sync.context import SyncContext
from connector_core.sync.pull import PagePuller
from connector_core.sync.push import Pusher
from connector_core.sync.report import DirectionReport


def replay(ctx: SyncContext, letters: Iterable[DeadLetter]) -> DirectionReport:
    report = DirectionReport("replay")
    letters = list(letters)
    push_refs = [d.ref for d in letters if d.direction == Direction.PUSH]
    pull_letters = [d for d in letters if d.direction == Direction.PULL]
    report.counts.read = len(letters)
    if push_refs:
        pusher = Pusher(ctx, report.counts, replaying=True)
        gone = [ref for ref in push_refs if ctx.eventlog.get_entity(ref) is None]
        pusher.push_entities([ref for ref in push_refs if ref not in gone])
        if gone:
            with ctx.state.transaction() as tx:
                for ref in gone:
                    tx.resolve_dead_letter(ctx.name, Direction.PUSH, ref, "discarded")
    if pull_letters:
        puller = PagePuller(ctx, report)
        for letter in pull_letters:
            p = letter.payload
            puller.take(
                RemoteRecord(
                    external_id=str(p.get("external_id", letter.ref)),
                    data=dict(p.get("data") or {}),
                    entity_name=p.get("entity_name"),
                    ref=p.get("ref"),
                    updated_at=p.get("updated_at"),
                    version=p.get("version"),
                    parent_external_id=p.get("parent_external_id"),
                )
            )
        puller.commit(None, move_cursor=False)
    return report

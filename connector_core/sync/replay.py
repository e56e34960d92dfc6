"""Replaying dead letters once their cause is fixed (a mapping corrected, a registry record repaired).

A push dead letter is replayed by delivering the entity's *current* state (not the stale payload kept for
reading), through the same planning and delivery as a run, so ordering, intents and links hold; a
sub-record's letter (``<guid>#<part>``, see ``PartResult``) sends its entity again, unchanged or not. A pull
dead letter is replayed by taking the stored remote record again. Successful replays close their dead
letters as ``replayed``; failures bump ``attempts`` and keep them open with the new reason.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from connector_core.connector import RemoteRecord, split_part_ref
from connector_core.state.base import DeadLetter, Direction
from connector_core.streams import chunks
from connector_core.sync.context import SyncContext
from connector_core.sync.pull import PagePuller
from connector_core.sync.push import Pusher
from connector_core.sync.report import DirectionReport


def replay(
    ctx: SyncContext,
    letters: Iterable[DeadLetter],
    on_page: Callable[[DirectionReport], None] | None = None,
) -> DirectionReport:
    """Deliver ``letters`` again, a page (``ctx.page_size``) at a time: ``letters`` may be a stream of a
    million dead letters, and only one page of them is held.

    ``on_page`` is told the report so far after each page, once that page is committed and nothing is held
    open: the console's job shows it, and lets other pages use the project there (docs/console.md)."""
    report = DirectionReport("replay")
    pusher: Pusher | None = None
    for page in chunks(letters, ctx.page_size):
        if ctx.stop.is_set():
            break
        report.counts.read += len(page)
        push_refs = [d.ref for d in page if d.direction == Direction.PUSH]
        pull_letters = [d for d in page if d.direction == Direction.PULL]
        if push_refs:
            pusher = pusher or Pusher(ctx, report.counts, replaying=True)
            _replay_pushes(ctx, pusher, push_refs)
            pusher.flush_refusals()  # each letter failed again on its own: bump it now
        if pull_letters:
            puller = PagePuller(ctx, report)  # one per page: its commit writes all it has taken
            for letter in pull_letters:
                puller.take(_remote_record(letter))
            puller.commit(None, move_cursor=False)
        if on_page is not None:
            on_page(report)
    return report


def _replay_pushes(ctx: SyncContext, pusher: Pusher, refs: list[str]) -> None:
    """The entities' current state goes out; a letter whose entity is gone from the log sends the delete
    when the entity is still linked (a refused delete), and is discarded when it is not.

    Children held behind a replayed parent follow it at once, and theirs after them: they were waiting
    for exactly this delivery, and an operator who replays a household expects its members to arrive."""
    pusher.delivered_now.clear()  # one page's worth: memory stays flat over a million letters
    guid_of = {ref: split_part_ref(ref)[0] for ref in refs}
    parts: dict[str, set[str]] = {}
    for ref, guid in guid_of.items():
        if ref != guid:  # a sub-record's letter: its entity goes again, and the sub-record with it
            parts.setdefault(guid, set()).add(ref)
    pusher.replay_parts(parts)
    guids = list(dict.fromkeys(guid_of.values()))
    present = ctx.eventlog.get_entities(guids)
    # an entity gone from the log that is still linked is a refused delete: replaying it sends the delete
    absent = [guid for guid in guids if guid not in present]
    deleting = {guid for guid, link in ctx.state.get_links(ctx.name, absent).items() if not link.deleted}
    pusher.push_entities([guid for guid in guids if guid in present or guid in deleting])
    gone = [ref for ref in refs if guid_of[ref] not in present and guid_of[ref] not in deleting]
    if gone:
        with ctx.state.transaction() as tx:
            for ref in gone:
                tx.resolve_dead_letter(ctx.name, Direction.PUSH, ref, "discarded")
    parents = [guid for guid in guids if guid in pusher.delivered_now]
    while parents and not ctx.stop.is_set():
        before = set(pusher.delivered_now)
        for page in chunks(ctx.state.parked_children(ctx.name, parents), ctx.page_size):
            pusher.push_entities(page, listers=parents)  # a member a group lists alone finds it so
        parents = sorted(pusher.delivered_now - before)


def _remote_record(letter: DeadLetter) -> RemoteRecord:
    """The remote record a pull dead letter kept, as the connector first gave it."""
    p = letter.payload
    return RemoteRecord(
        external_id=str(p.get("external_id", letter.ref)),
        data=dict(p.get("data") or {}),
        entity_name=p.get("entity_name"),
        ref=p.get("ref"),
        updated_at=p.get("updated_at"),
        version=p.get("version"),
        parent_external_id=p.get("parent_external_id"),
    )

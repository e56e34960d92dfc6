"""Conflicts: a record changed on both sides since its last sync.

The three versions are the merge base (the entity's data at the last sync, kept on the link), the local
entity now, and the remote record now. Policies, per connector:

- ``external-wins``: the remote's changes are applied; local changes to *other* fields stay and are pushed.
- ``local-wins``: the remote's changes are discarded; the next push writes the local state over them.
- ``newest-wins``: whichever side changed last (entity ``lastUpdated`` vs the record's ``updated_at``) wins;
  the remote, as when it gives no time, when its ``updated_at`` is no timestamp.
- ``merge``: field by field: disjoint changes both survive; a field both sides changed goes to
  ``merge_fallback``.
- ``manual``: nothing is applied; the conflict is recorded open and the entity is held back from push until
  ``dcsync conflicts resolve`` settles it.

Every conflict is recorded (automatic ones as resolved history), so an operator can see what was decided.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from connector_core.entities import Entity
from connector_core.events import FormSubmission, SyncLevel, now_timestamp, parse_timestamp
from connector_core.state.base import Conflict, Link
from connector_core.sync.context import SyncContext

SIDES = ("external", "local")


@dataclass
class Decision:
    apply: dict[str, Any]
    conflict: dict[str, Any] | None = None
    hold: bool = False


def _newer_side(entity: Entity, remote_updated_at: str | None) -> str:
    if not remote_updated_at or not entity.last_updated:
        return "external"
    try:
        remote = parse_timestamp(remote_updated_at)
    except ValueError:  # a remote's own ordering (epoch milliseconds, a counter): no time to compare
        return "external"
    local = parse_timestamp(entity.last_updated)
    return "local" if local > remote else "external"


def decide(
    ctx: SyncContext,
    entity: Entity,
    link: Link,
    remote_delta: dict[str, Any],
    remote_updated_at: str | None,
    *,
    local_changed: bool,
    local: Mapping[str, Any] | None = None,
) -> Decision:
    """What to apply of ``remote_delta`` (the fields the remote changed since the base).

    ``local``: the entity as the push sends it (``push.pushed_doc``), which the base was written from; its
    household may differ from the entity's own ``parentGuid`` (a member only its group lists has none), and
    compared with the bare entity that would read as a local change nobody made."""
    if not remote_delta or not local_changed:
        return Decision(apply=remote_delta)
    base = link.base
    mine = entity.data if local is None else local
    local_delta = {k: mine.get(k) for k in set(mine) | set(base) if mine.get(k) != base.get(k)}
    if all(mine.get(k) == v for k, v in remote_delta.items()):
        return Decision(apply={})  # both sides made the same change: nothing disagrees
    overlapping = {k for k, v in remote_delta.items() if k in local_delta and local_delta[k] != v}
    policy = ctx.conflict_policy
    side = _newer_side(entity, remote_updated_at) if policy == "newest-wins" else None
    keys = set(local_delta) | set(remote_delta)
    record = {
        "entity_guid": entity.guid,
        "base": {k: base.get(k) for k in sorted(keys)},
        "local": local_delta,
        "remote": remote_delta,
    }
    if policy == "manual":
        return Decision(apply={}, conflict={**record, "resolution": None}, hold=True)
    if policy == "external-wins" or side == "external":
        apply, resolution = remote_delta, "external"
    elif policy == "local-wins" or side == "local":
        apply, resolution = {}, "local"
    else:  # merge
        take_remote_overlap = ctx.merge_fallback == "external"
        apply = {k: v for k, v in remote_delta.items() if k not in overlapping or take_remote_overlap}
        resolution = f"merged ({ctx.merge_fallback} won {sorted(overlapping)})" if overlapping else "merged"
    return Decision(apply=apply, conflict={**record, "resolution": resolution})


def resolve_open_conflict(
    ctx: SyncContext, conflict: Conflict, take: str | Mapping[str, str]
) -> FormSubmission | None:
    """Settle a held conflict. ``take`` is ``external`` (apply the remote's changes), ``local`` (keep the
    entity; the next push overwrites the remote), or a side per field (``{"phone": "external"}``; fields not
    named stay local). Returns the event appended, if any."""
    from connector_core.sync.pull import EVENT_NS, remote_link

    chosen, resolution = _sides(conflict, take)
    entity = ctx.eventlog.get_entity(conflict.entity_guid)
    link = ctx.state.get_link(ctx.name, conflict.entity_guid)
    event = None
    base = link.base if link is not None else dict(conflict.base)
    remote_state = {**base, **conflict.remote}
    if chosen and entity is not None:
        apply = {k: v for k, v in chosen.items() if entity.data.get(k) != v}
        if apply:
            body = json.dumps(apply, sort_keys=True, separators=(",", ":"), default=str)
            event = FormSubmission(
                guid=str(uuid.uuid5(EVENT_NS, f"{ctx.name}|conflict|{conflict.id}|{body}")),
                entity_guid=entity.guid,
                type="update-individual",
                data=apply,
                timestamp=now_timestamp(),
                user_id=ctx.user_id,
                sync_level=SyncLevel.EXTERNAL,
            )
            ctx.eventlog.append([event])
            entity = ctx.eventlog.get_entity(conflict.entity_guid)
    new_link = remote_link(
        ctx,
        conflict.entity_guid,
        conflict.external_id,
        link.entity_name if link else (entity.entity_name if entity else None),
        entity,
        remote_state,
        conflict.remote_version,
        lambda guid: found.external_id if (found := ctx.state.get_link(ctx.name, guid)) else None,
    )
    with ctx.state.transaction() as tx:
        tx.upsert_link(new_link)
        tx.resolve_conflict(conflict.id, resolution)
        if entity is not None:
            # the run that held the entity back moved its checkpoint past the entity's events: waiting with
            # the parked children (retried, uncounted, at the end of every push) is how the next push meets it
            tx.park(
                ctx.name,
                entity.guid,
                entity.parent_guid or "",
                f"conflict {conflict.id} resolved ({resolution}): sent by the next push",
                count=False,
            )
    return event


def conflict_fields(conflict: Conflict) -> list[str]:
    """The fields an operator decides on: changed on either side since the base."""
    return sorted(set(conflict.local) | set(conflict.remote))


def _sides(conflict: Conflict, take: str | Mapping[str, str]) -> tuple[dict[str, Any], str]:
    """The remote values to apply for ``take``, and the resolution recorded.

    Taking the whole record from the remote applies the remote's changes and keeps local changes to other
    fields (as ``external-wins`` does). Taking one field from the remote takes the remote's value of it even
    when only the local side changed it (the remote still holds the base value then): the operator chose
    that field's remote value, whichever side moved."""
    if isinstance(take, str):
        if take not in SIDES:
            raise ValueError("take must be 'external' or 'local'")
        return (dict(conflict.remote) if take == "external" else {}), take
    fields = conflict_fields(conflict)
    unknown = sorted(set(take) - set(fields))
    if unknown:
        raise ValueError(f"conflict {conflict.id} has no changed field {', '.join(unknown)}")
    bad = sorted(f for f, side in take.items() if side not in SIDES)
    if bad:
        raise ValueError(f"each field takes 'external' or 'local' (not for {', '.join(bad)})")
    sides = {f: take.get(f, "local") for f in fields}
    if len(set(sides.values())) == 1:
        only = next(iter(sides.values()))
        return _sides(conflict, only)
    chosen = {
        f: conflict.remote[f] if f in conflict.remote else conflict.base.get(f)
        for f, side in sides.items()
        if side == "external"
    }
    resolution = "fields: " + ", ".join(f"{f}={side}" for f, side in sides.items())
    return chosen, resolution

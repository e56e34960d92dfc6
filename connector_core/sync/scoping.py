"""Field scopes in the engine: what a push leaves out, and what a pulled value the log refused means later.

Push: a mapping is checked against the push scope before anything runs (``project.py``), so at run time the
scope only has work to do for an identity push (entity data sent as it is) and as a guard. There the
out-of-scope fields are **dropped**, counted (``out_of_scope``) and named once per run and field set, never
with values; the record is not refused. Why: an identity push has no other way to say "only these fields",
so a scope narrower than the forms is the point of configuring one, and refusing would dead-letter every
record. An entity whose name the push scope does not list is not sent at all (deny by default).

Pull: the out-of-scope fields of a pulled record are not appended; the in-scope fields of the same record are
(a registry that may correct a phone number should not lose that because it also sends a name it may not
change). The merge base on the link keeps the **log's** value of a refused field while the snapshot keeps the
pushed form of the **remote's** value: the next pull compares the remote with the snapshot, sees nothing
new and reports nothing again; the next push, which sends the whole record, puts the remote's own value back
in place of the log's for every field the pull scope keeps out and the log has not changed since the last
sync (:func:`keep_remote_values`), so it never overwrites the registry's value with the log's older one. A
field the log does change later is an ordinary local edit and is pushed (if the push scope allows it).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from connector_core.mapping import EntityMapping, MapContext
from connector_core.mapping.engine import MapResult
from connector_core.scopes import runtime_key, trim
from connector_core.state.base import Link
from connector_core.sync.context import SyncContext

log = logging.getLogger("dcsync.scopes")


@dataclass(slots=True)
class ScopedPush:
    """A mapped push payload after the push scope: ``dropped`` names what was left out; ``denied``: the
    entity's name is not in the push scope, nothing of it may be sent."""

    result: MapResult
    dropped: list[str] = field(default_factory=list)
    denied: bool = False


def _key(mapping: EntityMapping, entity_json: Mapping[str, Any], link: Link | None = None) -> str | None:
    data = entity_json.get("data")
    name = data.get("entityName") if isinstance(data, Mapping) else None
    if not isinstance(name, str):
        name = link.entity_name if link is not None else None
    kind = entity_json.get("type")
    return runtime_key(mapping, name, kind if isinstance(kind, str) else None)


def keep_remote_values(
    ctx: SyncContext,
    mapping: EntityMapping,
    entity_json: Mapping[str, Any],
    link: Link | None,
    map_ctx: MapContext,
) -> Mapping[str, Any]:
    """``entity_json`` with the remote's value (from the link's snapshot, mapped back) in place of the log's
    for every field the pull scope keeps out that the log has not changed since the last sync and the remote
    holds otherwise. Without a pull scope, or a merge base, the entity as it is."""
    scopes = ctx.scopes
    if scopes is None or scopes.pull is None or link is None or link.deleted:
        return entity_json
    if not link.base or not link.snapshot:
        return entity_json
    data = entity_json.get("data")
    if not isinstance(data, Mapping):
        return entity_json
    allowed = scopes.pull_fields(_key(mapping, entity_json, link))
    assert allowed is not None
    back = mapping.pull(link.snapshot, MapContext(link=map_ctx.link))
    if back.record is None:
        return entity_json
    base = link.base
    kept = {
        key: value
        for key, value in back.record.items()
        if key not in allowed and data.get(key) == base.get(key) and value != base.get(key)
    }
    if not kept:
        return entity_json
    return {**entity_json, "data": {**data, **kept}}


def scoped_push(
    ctx: SyncContext,
    mapping: EntityMapping,
    entity_json: Mapping[str, Any],
    map_ctx: MapContext,
    link: Link | None = None,
) -> ScopedPush:
    """What the push sends for ``entity_json``: the mapping's payload, the remote's own values kept where the
    pull scope refused them (see :func:`keep_remote_values`), trimmed to the push scope. Every payload the
    engine compares with a link's snapshot is made here, so both sides of the comparison agree."""
    doc = keep_remote_values(ctx, mapping, entity_json, link, map_ctx)
    result = mapping.push(doc, map_ctx)
    scopes = ctx.scopes
    if scopes is None or scopes.push is None or result.record is None:
        return ScopedPush(result)
    tree = scopes.push_tree(_key(mapping, entity_json))
    if tree is None:
        return ScopedPush(MapResult(None), denied=True)
    kept, dropped = trim(result.record, tree)
    return ScopedPush(MapResult(kept, result.errors), dropped)


class PushScopeNotes:
    """Names out-of-scope fields once per run and field set (never values): an identity push of a thousand
    records with the same extra answers is one line, not a thousand."""

    def __init__(self, connector: str):
        self.connector = connector
        self._seen: set[tuple[str | None, tuple[str, ...]]] = set()

    def dropped(self, entity_name: str | None, fields: list[str]) -> None:
        key = (entity_name, tuple(fields))
        if key not in self._seen:
            self._seen.add(key)
            log.warning(
                "%s: %s fields outside the push scope are not sent: %s",
                self.connector,
                entity_name or "entity",
                ", ".join(fields),
            )

    def denied(self, entity_name: str | None) -> None:
        key = (entity_name, ())
        if key not in self._seen:
            self._seen.add(key)
            log.warning(
                "%s: %s is not in the push scope: nothing of it is sent",
                self.connector,
                entity_name or "entity",
            )


__all__ = ["PushScopeNotes", "ScopedPush", "keep_remote_values", "scoped_push"]

"""The fold: DataCollect's applier semantics as pure functions.

Entity state is never stored as truth, only derived from events; so the rules here must match DataCollect's
``EventApplierService`` exactly (shallow merge, version += 1, ``members[0]`` for add-member, cascade delete
through ``memberIds``) or a registry would receive records that the phones never saw. The one deliberate
difference: ``lastUpdated`` is the event's timestamp, not the applying server's wall clock, so folding is
deterministic and folding page by page equals folding whole.

An event that cannot be applied (unknown type, add-member on a missing group, ...) is reported as an
:class:`EventIssue` and skipped, as DataCollect does after it has already stored the event.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from connector_core.events import FormSubmission

EntityType = Literal["individual", "group"]


@dataclass(slots=True)
class Entity:
    guid: str
    type: EntityType
    version: int = 0
    data: dict[str, Any] = field(default_factory=dict)
    name: str | None = None
    external_id: str | int | None = None
    member_ids: list[str] = field(default_factory=list)
    last_updated: str | None = None

    @property
    def entity_name(self) -> str | None:
        """The mobile form this entity came from (``household``, ``individual``, ...)."""
        value = self.data.get("entityName")
        return value if isinstance(value, str) and value else None

    @property
    def parent_guid(self) -> str | None:
        value = self.data.get("parentGuid")
        return value if isinstance(value, str) and value else None

    def copy(self) -> Entity:
        return Entity(
            guid=self.guid,
            type=self.type,
            version=self.version,
            data=dict(self.data),
            name=self.name,
            external_id=self.external_id,
            member_ids=list(self.member_ids),
            last_updated=self.last_updated,
        )

    def to_json(self) -> dict[str, Any]:
        """DataCollect's ``EntityDoc`` shape (``id`` and ``guid`` both the entity guid)."""
        doc: dict[str, Any] = {
            "id": self.guid,
            "guid": self.guid,
            "type": self.type,
            "name": self.name,
            "version": self.version,
            "data": self.data,
            "lastUpdated": self.last_updated,
        }
        if self.external_id is not None:
            doc["externalId"] = self.external_id
        if self.type == "group":
            doc["memberIds"] = self.member_ids
        return doc

    @classmethod
    def stored(cls, doc: dict[str, Any]) -> Entity:
        """An entity from a document a store just decoded and hands over: its ``data`` and ``memberIds``
        are taken, not copied (a push reads every touched entity, and nothing else holds that document)."""
        return cls(
            doc["guid"],
            doc["type"],
            int(doc.get("version", 0)),
            doc.get("data") or {},
            doc.get("name"),
            doc.get("externalId"),
            doc.get("memberIds") or [],
            doc.get("lastUpdated"),
        )

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Entity:
        return cls(
            guid=doc["guid"],
            type=doc["type"],
            version=int(doc.get("version", 0)),
            data=dict(doc.get("data") or {}),
            name=doc.get("name"),
            external_id=doc.get("externalId"),
            member_ids=list(doc.get("memberIds") or []),
            last_updated=doc.get("lastUpdated"),
        )


@dataclass(frozen=True, slots=True)
class EventIssue:
    """An event that was stored but could not be applied, with DataCollect's reason."""

    event_guid: str
    entity_guid: str
    reason: str

    def __str__(self) -> str:
        return f"event {self.event_guid} (entity {self.entity_guid}): {self.reason}"


@dataclass(slots=True)
class FoldResult:
    """What a run of events changed: ``changed[guid]`` is the new state, ``None`` when deleted."""

    changed: dict[str, Entity | None] = field(default_factory=dict)
    applied: int = 0
    issues: list[EventIssue] = field(default_factory=list)


Lookup = Callable[[str], "Entity | None"]


def no_entities(_guid: str) -> Entity | None:
    return None


class _ApplyError(Exception):
    pass


_ABSENT = object()


class _View:
    """Entities as the base lookup sees them, overlaid with this fold's changes (copy on write)."""

    def __init__(self, lookup: Lookup, changed: dict[str, Entity | None]):
        self._lookup = lookup
        self.changed = changed
        self._undo: dict[str, Entity | None | object] = {}

    def begin(self) -> None:
        self._undo = {}

    def rollback(self) -> None:
        """Undo the current event's writes: a failed event leaves no trace, as in DataCollect."""
        for guid, prior in self._undo.items():
            if prior is _ABSENT:
                self.changed.pop(guid, None)
            else:
                self.changed[guid] = prior  # type: ignore[assignment]
        self._undo = {}

    def written(self) -> Iterable[str]:
        """The guids the current event wrote."""
        return self._undo.keys()

    def _remember(self, guid: str) -> None:
        if guid not in self._undo:
            self._undo[guid] = self.changed.get(guid, _ABSENT)

    def get(self, guid: str) -> Entity | None:
        if guid in self.changed:
            return self.changed[guid]
        return self._lookup(guid)

    def put(self, entity: Entity) -> None:
        self._remember(entity.guid)
        self.changed[entity.guid] = entity

    def delete(self, guid: str) -> None:
        self._remember(guid)
        self.changed[guid] = None


def _upsert_individual(view: _View, guid: str, data: Mapping[str, Any], ts: str) -> Entity:
    old = view.get(guid)
    entity = (
        old.copy()
        if old is not None
        else Entity(guid=guid, type="individual", data={"name": "Unnamed Individual"})
    )
    entity.data.update(data)
    entity.name = entity.data.get("name")
    if entity.data.get("externalId"):
        entity.external_id = entity.data["externalId"]
    entity.version += 1
    entity.last_updated = ts
    view.put(entity)
    return entity


def _upsert_group(view: _View, guid: str, data: Mapping[str, Any], ts: str) -> Entity:
    old = view.get(guid)
    if old is not None and old.type == "group":
        entity = old.copy()
        entity.data.update(data)
    else:
        entity = Entity(guid=guid, type="group", data=dict(data))
        if old is not None:  # a group event on an individual's guid turns it into a group, as upsert does
            entity.version, entity.name = old.version, old.name
    members = data.get("members")
    if members is not None:
        if not isinstance(members, list):
            raise _ApplyError("data.members must be a list")
        for member in members:
            member_guid = _add_member_entity(view, member, ts)
            if member_guid not in entity.member_ids:
                entity.member_ids.append(member_guid)
    entity.data.pop("members", None)
    entity.name = entity.data.get("name") or entity.name or "Unnamed Group"
    if entity.data.get("externalId"):
        entity.external_id = entity.data["externalId"]
    entity.version += 1
    entity.last_updated = ts
    view.put(entity)
    return entity


def _add_member_entity(view: _View, member: Any, ts: str) -> str:
    if not isinstance(member, Mapping) or not member.get("guid"):
        raise _ApplyError("every member needs a guid")
    guid = str(member["guid"])
    member_data = {k: v for k, v in member.items() if k != "guid"}
    if member.get("type") == "group":
        _upsert_group(view, guid, member_data, ts)
    else:
        _upsert_individual(view, guid, member_data, ts)
    return guid


def _delete_cascade(view: _View, guid: str) -> None:
    stack, seen = [guid], set()
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        entity = view.get(current)
        if entity is None:
            continue
        stack.extend(entity.member_ids)
        view.delete(current)


def _apply(view: _View, event: FormSubmission) -> None:
    kind, guid, data, ts = event.type, event.entity_guid, event.data, event.timestamp
    if kind in ("create-individual", "update-individual"):
        _upsert_individual(view, guid, data, ts)
    elif kind in ("create-group", "update-group"):
        _upsert_group(view, guid, data, ts)
    elif kind == "add-member":
        group = view.get(guid)
        if group is None or group.type != "group":
            raise _ApplyError("INVALID_GROUP: add-member needs an existing group")
        members = data.get("members")
        if not isinstance(members, list) or not members:
            raise _ApplyError("add-member needs data.members with one member")
        member_guid = _add_member_entity(view, members[0], ts)
        group = view.get(guid)
        assert group is not None
        if member_guid not in group.member_ids:
            group = group.copy()
            group.member_ids.append(member_guid)
            group.version += 1
            group.last_updated = ts
            view.put(group)
    elif kind == "remove-member":
        member_id = data.get("memberId")
        if isinstance(member_id, int) and not isinstance(member_id, bool):
            member_id = str(member_id)  # as add-member does with a member's guid
        if not isinstance(member_id, str) or not member_id:
            # an object or list here used to escape the fold as a TypeError (unhashable guid)
            raise _ApplyError("INVALID_MEMBER_DATA: remove-member needs data.memberId (a guid)")
        group = view.get(guid)
        if group is None or group.type != "group":
            raise _ApplyError("INVALID_GROUP: remove-member needs an existing group")
        group = group.copy()
        if member_id in group.member_ids:
            group.member_ids.remove(member_id)
        group.version += 1
        group.last_updated = ts
        view.put(group)
        member = view.get(member_id)
        if member is not None and member.type == "group":
            _delete_cascade(view, member_id)
    elif kind == "delete-entity":
        _delete_cascade(view, guid)
    elif kind == "resolve-duplicate":
        pairs = data.get("duplicates")
        if not isinstance(pairs, list) or not pairs or not isinstance(pairs[0], Mapping):
            raise _ApplyError("resolve-duplicate needs data.duplicates with one pair")
        if data.get("shouldDelete") and pairs[0].get("entityGuid"):
            _delete_cascade(view, str(pairs[0]["entityGuid"]))
    else:
        raise _ApplyError(f"No event applier found for event type: {kind}")


class Folder:
    """A fold taken one event at a time, telling after each which entities that event wrote.

    What a store needs to record, per entity, the event that last changed it, and per event, the entities
    it deleted besides its own; one view serves the whole run, so this costs no more than :func:`fold`.
    """

    def __init__(self, lookup: Lookup = no_entities) -> None:
        self.result = FoldResult()
        self._view = _View(lookup, self.result.changed)

    def apply(self, event: FormSubmission) -> EventIssue | None:
        """Apply ``event`` (new states go to ``result.changed``, ``None`` when deleted); its issue, also
        appended to ``result.issues``, when it could not be applied."""
        view = self._view
        view.begin()
        try:
            _apply(view, event)
        except _ApplyError as exc:
            view.rollback()
            issue = EventIssue(event.guid, event.entity_guid, str(exc))
            self.result.issues.append(issue)
            return issue
        self.result.applied += 1
        return None

    @property
    def written(self) -> Iterable[str]:
        """The guids the last event applied wrote (none when it could not be applied)."""
        return self._view.written()


def fold(events: Iterable[FormSubmission], lookup: Lookup = no_entities) -> FoldResult:
    """Apply ``events`` in order on top of the entities ``lookup`` returns.

    ``lookup`` is never written to; the result holds every entity the events touched. Feeding the result of
    one page as the lookup of the next gives the same state as folding both pages at once.
    """
    folder = Folder(lookup)
    for event in events:
        folder.apply(event)
    return folder.result


def overlay(lookup: Lookup, changes: Mapping[str, Entity | None]) -> Lookup:
    """A lookup that sees ``changes`` first: how the next page of a fold sees the previous one."""

    def get(guid: str) -> Entity | None:
        if guid in changes:
            return changes[guid]
        return lookup(guid)

    return get

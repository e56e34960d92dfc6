"""The objects the sync engine calls.

:class:`MappingSet` selects an :class:`EntityMapping` per entity, which maps one entity to an external
record (push) or one external record to entity data (pull).

Mapping is a pure function of its inputs and the :class:`MapContext`; it never raises for bad data.
A record's failures come back as :class:`FieldError` values in :class:`MapResult`, and the caller
dead-letters the record with them while the run goes on.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from connector_core.mapping.conditions import CompiledCondition
from connector_core.mapping.context import DEFAULT_CONTEXT, MapContext, Scope
from connector_core.mapping.errors import FieldError
from connector_core.mapping.explain import Explanation, FieldTrace
from connector_core.mapping.runtime import FieldPlan, Runner, make_runner, trace_field

METADATA_KEYS = ("entityName", "parentGuid")
"""Keys of entity data that are DataCollect's bookkeeping, not form answers."""


@dataclass(slots=True)
class MapResult:
    """The outcome of mapping one record.

    ``record`` is ``None`` only when a whole-record ``when`` excluded it (the caller skips it). A
    non-empty ``errors`` means the record must not be delivered: dead-letter it with :attr:`reason`.
    ``record`` then still holds the fields that did map, which helps whoever fixes it.
    """

    record: dict[str, Any] | None
    errors: list[FieldError] = field(default_factory=list)
    explanation: Explanation | None = None

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def excluded(self) -> bool:
        return self.record is None and not self.errors

    @property
    def reason(self) -> str:
        """All field errors in one line, for a dead letter."""
        return "; ".join(str(e) for e in self.errors)


@dataclass(frozen=True, slots=True)
class ReversibleField:
    """A field used both ways: ``target`` in the external record, ``entity_path`` in the entity."""

    target: str
    entity_path: str


class EntityMapping:
    """One compiled mapping: push and pull field plans, their runners, record-level conditions."""

    def __init__(
        self,
        name: str,
        *,
        entity_name: str | None,
        entity_type: str | None = None,
        description: str | None = None,
        push_fields: Sequence[FieldPlan] = (),
        pull_fields: Sequence[FieldPlan] = (),
        push_when: CompiledCondition | None = None,
        pull_when: CompiledCondition | None = None,
        reversible_fields: Sequence[ReversibleField] = (),
        source: str = "",
    ):
        self.name = name
        self.entity_name = entity_name
        self.entity_type = entity_type
        self.description = description
        self.push_fields = tuple(push_fields)
        self.pull_fields = tuple(pull_fields)
        self.push_when = push_when
        self.pull_when = pull_when
        self.reversible_fields = tuple(reversible_fields)
        self.source = source
        self._push_runners: tuple[Runner, ...] = tuple(make_runner(p) for p in self.push_fields)
        self._pull_runners: tuple[Runner, ...] = tuple(make_runner(p) for p in self.pull_fields)
        self._push_test = push_when.test if push_when is not None else None
        self._pull_test = pull_when.test if pull_when is not None else None

    def __repr__(self) -> str:
        return f"EntityMapping({self.name!r}, entity_name={self.entity_name!r})"

    @property
    def push_targets(self) -> list[str]:
        return [t for p in self.push_fields for t in p.targets]

    @property
    def pull_targets(self) -> list[str]:
        return [t for p in self.pull_fields for t in p.targets]

    def reads(self, direction: str) -> list[str]:
        """Source fields (dotted, ``[]`` for list items) this mapping reads in ``direction``."""
        fields = self.push_fields if direction == "push" else self.pull_fields
        cond = self.push_when if direction == "push" else self.pull_when
        out = [r for p in fields for r in p.reads]
        if cond is not None:
            out.extend(_dotted(p.prefix) for p in cond.paths)
        if direction == "push":
            out.extend(f"data.{k}" for k in METADATA_KEYS)
        return out

    def push(
        self,
        entity_json: Mapping[str, Any],
        ctx: MapContext = DEFAULT_CONTEXT,
        *,
        explain: bool = False,
    ) -> MapResult:
        """Map an entity (DataCollect ``EntityDoc`` dict) to an external record."""
        if explain:
            return self._explain("push", entity_json, ctx, self.push_fields, self.push_when)
        if self._push_test is not None and not self._push_test(entity_json):
            return MapResult(None)
        out: dict[str, Any] = {}
        errors: list[FieldError] = []
        scope = Scope(entity_json, ctx)
        for run in self._push_runners:
            run(entity_json, scope, out, errors)
        return MapResult(out, errors)

    def pull(
        self, record: Mapping[str, Any], ctx: MapContext = DEFAULT_CONTEXT, *, explain: bool = False
    ) -> MapResult:
        """Map an external record to entity ``data``, with the mapping's ``entityName`` added."""
        if explain:
            result = self._explain("pull", record, ctx, self.pull_fields, self.pull_when)
        else:
            if self._pull_test is not None and not self._pull_test(record):
                return MapResult(None)
            out: dict[str, Any] = {}
            errors: list[FieldError] = []
            scope = Scope(record, ctx)
            for run in self._pull_runners:
                run(record, scope, out, errors)
            result = MapResult(out, errors)
        if result.record is not None and self.entity_name and "entityName" not in result.record:
            result.record["entityName"] = self.entity_name
        return result

    def _explain(
        self,
        direction: str,
        doc: Mapping[str, Any],
        ctx: MapContext,
        plans: Sequence[FieldPlan],
        when: CompiledCondition | None,
    ) -> MapResult:
        record_id = _record_id(doc)
        explanation = Explanation(self.name, direction, record_id)
        if when is not None and not when.test(doc):
            explanation.excluded = f"when is false: {when.text}"
            return MapResult(None, [], explanation)
        out: dict[str, Any] = {}
        errors: list[FieldError] = []
        scope = Scope(doc, ctx)
        traces: list[FieldTrace] = [trace_field(p, doc, scope, out, errors) for p in plans]
        explanation.fields = traces
        return MapResult(out, errors, explanation)


def _is_mapping(value: Any) -> TypeGuard[Mapping[str, Any]]:
    """``isinstance(value, Mapping)`` with the common case first: the ABC check costs a microsecond."""
    return type(value) is dict or isinstance(value, Mapping)


def _record_id(doc: Mapping[str, Any]) -> str | None:
    for key in ("guid", "external_id", "id"):
        value = doc.get(key) if isinstance(doc, Mapping) else None
        if value not in (None, ""):
            return str(value)
    return None


def _dotted(keys: tuple[str | int, ...]) -> str:
    out = ""
    for k in keys:
        out += "[]" if type(k) is int else (f".{k}" if out else str(k))
    return out


class IdentityMapping(EntityMapping):
    """Used when a connector has no mapping file: the entity's form answers go out as they are."""

    def __init__(self, entity_name: str | None = None):
        super().__init__("identity", entity_name=entity_name, description="data as-is, both ways")

    def push(
        self,
        entity_json: Mapping[str, Any],
        ctx: MapContext = DEFAULT_CONTEXT,
        *,
        explain: bool = False,
    ) -> MapResult:
        data = entity_json.get("data") if _is_mapping(entity_json) else None
        if not _is_mapping(data):
            return MapResult({}, [FieldError("data", data, "entity has no data object")])
        out = {k: v for k, v in data.items() if k not in METADATA_KEYS}
        return MapResult(out, [], self._identity_explanation("push", entity_json, out) if explain else None)

    def pull(
        self, record: Mapping[str, Any], ctx: MapContext = DEFAULT_CONTEXT, *, explain: bool = False
    ) -> MapResult:
        out = dict(record)
        if self.entity_name and "entityName" not in out:
            out["entityName"] = self.entity_name
        return MapResult(out, [], self._identity_explanation("pull", record, out) if explain else None)

    def _identity_explanation(
        self, direction: str, doc: Mapping[str, Any], out: dict[str, Any]
    ) -> Explanation:
        prefix = "$.data." if direction == "push" else "$."
        explanation = Explanation(self.name, direction, _record_id(doc))
        explanation.fields = [
            FieldTrace(target=k, source=f"{prefix}{k}", raw=v, result=v) for k, v in out.items()
        ]
        return explanation

    def reads(self, direction: str) -> list[str]:
        return ["data"] if direction == "push" else [""]


class MappingSet:
    """The mappings of one file, selectable per entity (push) or per entity name (pull)."""

    def __init__(self, mappings: Sequence[EntityMapping], source: str = "", *, identity: bool = False):
        self.mappings = tuple(mappings)
        self.source = source
        self.identity = identity
        self._by_entity_name: dict[str, EntityMapping] = {}
        self._by_name: dict[str, EntityMapping] = {}
        self._by_type: dict[str, EntityMapping] = {}
        self._identities: dict[str | None, EntityMapping] = {}
        for m in self.mappings:
            self._by_name[m.name] = m
            if m.entity_name:
                self._by_entity_name[m.entity_name] = m
            elif m.entity_type:
                self._by_type[m.entity_type] = m

    def __iter__(self) -> Iterator[EntityMapping]:
        return iter(self.mappings)

    def __len__(self) -> int:
        return len(self.mappings)

    def __repr__(self) -> str:
        return f"MappingSet({self.source!r}, {[m.name for m in self.mappings]})"

    @property
    def entity_names(self) -> list[str]:
        """Entity names with a mapping (empty for the identity mapping, which takes any)."""
        return [m.entity_name for m in self.mappings if m.entity_name]

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.mappings]

    def get(self, name: str) -> EntityMapping | None:
        """A mapping by its name in the file."""
        return self._by_name.get(name)

    def for_entity(self, entity_json: Mapping[str, Any]) -> EntityMapping | None:
        """The mapping for an entity: by ``data.entityName``, then by entity ``type``; ``None``: skip it."""
        data = entity_json.get("data")
        name = data.get("entityName") if _is_mapping(data) else None
        if self.identity:
            return self._identity(name if isinstance(name, str) else None)
        kind = entity_json.get("type")
        if isinstance(name, str) and name in self._by_entity_name:
            m = self._by_entity_name[name]
            if m.entity_type is None or m.entity_type == kind:
                return m
            return None
        if isinstance(kind, str):
            return self._by_type.get(kind)
        return None

    def for_entity_name(self, name: str) -> EntityMapping | None:
        """The mapping pulled records of ``name`` go through (by entity name, then mapping name)."""
        if self.identity:
            return self._identity(name)
        return self._by_entity_name.get(name) or self._by_name.get(name)

    def _identity(self, name: str | None) -> EntityMapping:
        found = self._identities.get(name)
        if found is None:
            found = self._identities[name] = IdentityMapping(name)
        return found


def identity_mapping() -> MappingSet:
    """What the engine uses for a connector without a mapping file.

    Push sends the entity's ``data`` without ``entityName``/``parentGuid``; pull takes the record's
    data as entity data.
    """
    return MappingSet([IdentityMapping()], "<identity>", identity=True)

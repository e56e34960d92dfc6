"""Field scopes: the fields a connector may send per entity, and the fields its pull may write into the log.

A data protection officer signs off what a registry receives and what a registry may change in the log; a
mapping is written by an integrator and changes more often. Scopes are the DPO's half, kept in
``dcsync.yaml`` next to the connector::

    scopes:
      push: {individual: [given_name, family_name, ids.id_type, ids.value], household: [name]}
      pull: {individual: [phone_number, email_address]}

Choices, and why:

- **Keys are entity names as the log names them** (``data.entityName``: ``individual``, ``household``; for an
  entity without one, its type), the same names a mapping selects and a remote schema describes.
- **Push names remote fields** (what leaves: the mapping's targets, or the data keys an identity push sends),
  because the scope is about what the registry receives, whatever the mapping reads to make it. A dotted
  entry names a sub-field (``ids.value``: that key of every ID document; ``address.city``); a bare entry
  allows the whole value, sub-records included. The household link of a member is structure, not a field
  (the engine passes it as the parent): a scoped individual still joins its household.
- **Pull names log fields** (top-level keys of entity ``data``), because the scope is about what the log
  accepts. ``entityName`` and ``parentGuid`` are bookkeeping and always allowed.
- **Absent ``scopes`` (or an absent direction) restricts nothing**, so existing projects keep working; **an
  entity name missing from a present scope allows nothing** of it (deny by default: a new form is not sent
  to a registry because nobody thought of it).

This module is pure: building the trees, checking a compiled mapping statically (an error at the mapping's
file:line:column), and trimming a payload at run time. The engine's use of it is in ``sync/scoping.py``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

from connector_core.mapping.engine import EntityMapping, IdentityMapping, MappingSet
from connector_core.mapping.errors import MappingIssue
from connector_core.mapping.runtime import FieldPlan

BOOKKEEPING = frozenset({"entityName", "parentGuid"})
"""Entity data keys that are structure, not answers: a pull may always write them."""

_FIELD = re.compile(r"^[^\s.]+(\.[^\s.]+)*$")

Tree = dict[str, Union[bool, "Tree"]]
"""Allowed push fields as a tree: ``True`` allows a key with everything below it; a dict allows only the
sub-keys it holds (list items are walked through, so ``ids.value`` applies to every item of ``ids``)."""


class ScopesConfig(BaseModel):
    """``connectors.NAME.scopes`` in ``dcsync.yaml`` (docs/data-protection.md#field-scopes)."""

    model_config = ConfigDict(extra="forbid")

    push: dict[str, list[str]] | None = Field(
        default=None,
        description="Entity name -> remote fields the push may send (dotted for sub-fields); absent: any",
    )
    pull: dict[str, list[str]] | None = Field(
        default=None,
        description="Entity name -> entity data keys the pull may write into the log; absent: any",
    )

    @field_validator("push")
    @classmethod
    def _push_fields(cls, value: dict[str, list[str]] | None) -> dict[str, list[str]] | None:
        for entity, fields in (value or {}).items():
            for name in fields:
                if not _FIELD.match(name):
                    raise ValueError(f"{entity}: {name!r} is not a field name (dots separate sub-fields)")
        return value

    @field_validator("pull")
    @classmethod
    def _pull_fields(cls, value: dict[str, list[str]] | None) -> dict[str, list[str]] | None:
        for entity, fields in (value or {}).items():
            for name in fields:
                if not _FIELD.match(name) or "." in name:
                    raise ValueError(
                        f"{entity}: {name!r}: a pull scope names top-level keys of entity data (no dots)"
                    )
        return value


def build_tree(entries: Iterable[str]) -> Tree:
    tree: Tree = {}
    for entry in entries:
        keys = entry.split(".")
        node = tree
        for key in keys[:-1]:
            child = node.get(key)
            if child is True:
                break
            if not isinstance(child, dict):
                child = node[key] = {}
            node = child
        else:
            node[keys[-1]] = True
    return tree


def _walk(tree: Tree, keys: Iterable[str]) -> bool | Tree | None:
    """``True``: allowed whole; a dict: only its sub-keys; ``None``: not allowed."""
    node: bool | Tree = tree
    for key in keys:
        if node is True:
            return True
        assert isinstance(node, dict)
        found = node.get(key)
        if found is None or found is False:
            return None
        node = found
    return node


def _entries(tree: Tree, prefix: str = "") -> list[str]:
    out: list[str] = []
    for key, node in tree.items():
        name = f"{prefix}{key}"
        out.extend([name] if node is True else _entries(node, f"{name}.") if isinstance(node, dict) else [])
    return out


@dataclass(frozen=True)
class FieldScopes:
    """One connector's scopes, compiled. ``push``/``pull`` is ``None`` when that direction is unrestricted."""

    connector: str
    push: dict[str, Tree] | None = None
    pull: dict[str, frozenset[str]] | None = None

    @classmethod
    def of(cls, connector: str, config: ScopesConfig | None) -> FieldScopes | None:
        if config is None or (config.push is None and config.pull is None):
            return None
        push = {k: build_tree(v) for k, v in config.push.items()} if config.push is not None else None
        pull = {k: frozenset(v) for k, v in config.pull.items()} if config.pull is not None else None
        return cls(connector, push, pull)

    def push_tree(self, key: str | None) -> Tree | None:
        """The allowed tree for scope key ``key`` (:func:`runtime_key`); ``None`` (send nothing of it) when
        the scope does not list it or lists no field. Only call when ``push`` is set."""
        assert self.push is not None
        found = self.push.get(key) if key is not None else None
        return found or None  # listed with no fields: nothing to send, not an empty record

    def pull_fields(self, key: str | None) -> frozenset[str] | None:
        """Entity data keys a pull may write for scope key ``key``; ``None``: any (no pull scope); only the
        bookkeeping keys when the scope does not list it."""
        if self.pull is None:
            return None
        found = self.pull.get(key) if key is not None else None
        return found | BOOKKEEPING if found is not None else BOOKKEEPING


# -- run time -------------------------------------------------------------------------------------------


def trim(record: Mapping[str, Any], tree: Tree, prefix: str = "") -> tuple[dict[str, Any], list[str]]:
    """``record`` with only what ``tree`` allows, and the dotted names of what was left out (no values)."""
    out: dict[str, Any] = {}
    dropped: list[str] = []
    for key, value in record.items():
        name = f"{prefix}{key}"
        node = tree.get(key)
        if node is None or node is False:
            dropped.append(name)
        elif node is True:
            out[key] = value
        elif isinstance(value, Mapping):
            out[key], below = trim(value, node, f"{name}.")
            dropped.extend(below)
        elif isinstance(value, list):
            items: list[Any] = []
            for item in value:
                if isinstance(item, Mapping):
                    kept, below = trim(item, node, f"{name}.")
                    items.append(kept)
                    dropped.extend(below)
                else:
                    dropped.append(name)  # a bare value where only sub-fields are allowed
            out[key] = items
        elif value is None:
            out[key] = None  # an emptied sub-record says nothing
        else:
            dropped.append(name)
    return out, sorted(set(dropped))


# -- validation -----------------------------------------------------------------------------------------


def scope_key(mapping: EntityMapping) -> str:
    """The scope key a mapping's records are found under: its entity name, else the type it selects, else its
    name (the same key ``compare_schema`` uses)."""
    return mapping.entity_name or mapping.entity_type or mapping.name


def runtime_key(mapping: EntityMapping, entity_name: str | None, entity_type: str | None) -> str | None:
    """The scope key of one record at run time, the same one validation used for its mapping: the mapping's
    key, or for an identity push (no mapping file) the record's entity name, else its type. A type is never
    a fallback for a named entity: a household the log keeps as an individual is not an ``individual``."""
    if isinstance(mapping, IdentityMapping):
        return entity_name or entity_type
    return scope_key(mapping)


def unknown_entities(scopes: ScopesConfig, mappings: MappingSet) -> list[tuple[str, str, str]]:
    """``(direction, key, message)`` for every scope key no mapping of the file selects (a typo such as
    ``indivdual`` would otherwise deny that entity everything, silently). Identity connectors take any."""
    if mappings.identity:
        return []
    known = sorted({scope_key(m) for m in mappings})
    out = []
    for direction, table in (("push", scopes.push), ("pull", scopes.pull)):
        for key in table or {}:
            if key not in known:
                near = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
                hint = f" (did you mean {near[0]!r}?)" if near else ""
                out.append(
                    (
                        direction,
                        key,
                        f"unknown entity {key!r}{hint}: {mappings.source} maps {', '.join(known)}",
                    )
                )
    return out


def check_push_scope(mappings: MappingSet, scopes: FieldScopes) -> list[MappingIssue]:
    """Every push target of ``mappings`` outside ``scopes.push``, at the mapping's file:line:column."""
    if scopes.push is None or mappings.identity:
        return []
    issues: list[MappingIssue] = []
    for mapping in mappings:
        key = scope_key(mapping)
        file = mapping.source or mappings.source
        tree = scopes.push.get(key)
        if tree is None:
            first = min(mapping.push_fields, key=lambda p: (p.line, p.column), default=None)
            issues.append(
                MappingIssue(
                    file,
                    first.line if first else 0,
                    first.column if first else 0,
                    mapping.name,
                    None,
                    f"connector {scopes.connector!r} may send nothing of {key!r}: its push scope has no "
                    f"entry for it (scopes.push.{key} in dcsync.yaml), so this mapping cannot be used",
                )
            )
            continue
        for plan in mapping.push_fields:
            issues.extend(_check_plan(plan, tree, tree, (), mapping, file, scopes.connector, key))
    return issues


def _check_plan(
    plan: FieldPlan,
    root: Tree,
    tree: Tree,
    prefix: tuple[str, ...],
    mapping: EntityMapping,
    file: str,
    connector: str,
    key: str,
) -> list[MappingIssue]:
    node = _walk(tree, plan.keys)
    dotted = ".".join((*prefix, *plan.keys))
    label = ".".join((*prefix, plan.target))

    def issue(message: str) -> MappingIssue:
        return MappingIssue(file, plan.line, plan.column, mapping.name, label, message)

    allowed = ", ".join(_entries(root)) or "nothing"
    if node is None:
        return [
            issue(
                f"sends {dotted!r}, which is outside the push scope of connector {connector!r} for {key!r} "
                f"(allowed: {allowed})"
            )
        ]
    if node is True:
        return []
    assert isinstance(node, dict)
    if plan.each is None:
        parts = ", ".join(f"{dotted}.{e}" for e in _entries(node))
        return [
            issue(
                f"sends the whole value of {dotted!r}, but the push scope of connector {connector!r} for "
                f"{key!r} allows only {parts}: map its sub-fields with each/fields, or allow {dotted!r}"
            )
        ]
    out: list[MappingIssue] = []
    for sub in plan.each:
        out.extend(_check_plan(sub, root, node, (*prefix, *plan.keys), mapping, file, connector, key))
    return out


__all__ = [
    "BOOKKEEPING",
    "FieldScopes",
    "ScopesConfig",
    "Tree",
    "build_tree",
    "check_push_scope",
    "runtime_key",
    "scope_key",
    "trim",
    "unknown_entities",
]

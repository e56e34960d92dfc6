"""A mapping against the remote's own schema: what ``dcsync check`` finds before a run would dead-letter it.

A mapping can be valid on its own and still not fit the system it feeds: it names a field the registry
does not have (``hh_size``), sends a list where the remote keeps one value, or looks codes up into values
the registry is not set up for (a gender type, an ID type, a bank nobody created). Each of those makes
every record fail the same way, one dead letter at a time. The connector describes what its remote
accepts (:meth:`~connector_core.connector.Connector.describe_schema`); this module compares every push
target of the mapping with it and names the mapping's file and line.

A field the remote lacks is fatal, unless the mapping lets it be empty (``default: null``,
``drop_if_empty``): a connector leaves such an empty value out, so it only matters when an entity holds a
value for it, which :func:`confirm_absent` finds by mapping the log's entities.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from connector_core.connector import FieldSpec
from connector_core.mapping.engine import EntityMapping, MappingSet
from connector_core.mapping.runtime import FieldPlan

RemoteSchema = Mapping[str, Mapping[str, FieldSpec]]

_ACCEPTS: dict[str, frozenset[str]] = {
    "str": frozenset({"str", "int", "float", "number"}),  # a number given to a text field is kept as text
    "date": frozenset({"str"}),
    "datetime": frozenset({"str"}),
    "int": frozenset({"int", "number", "str"}),  # digits as text are converted (Odoo does); a list is not
    "float": frozenset({"int", "float", "number", "str"}),
    "bool": frozenset({"bool"}),
    "reference": frozenset({"int", "str", "number"}),
    "list": frozenset({"list"}),
    "dict": frozenset({"dict"}),
}


@dataclass(frozen=True, slots=True)
class SchemaProblem:
    """One push target that does not fit the remote; ``fatal=False`` is a warning."""

    file: str
    line: int
    mapping: str
    target: str
    message: str
    fix: str = ""
    fatal: bool = True
    absent_optional: bool = False
    """The remote lacks the field, but the mapping lets it be empty: fatal only if an entity has a value."""

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        text = f"{where}: {self.mapping}: field '{self.target}': {self.message}"
        return f"{text}; fix: {self.fix}" if self.fix else text


def compare_schema(
    mappings: MappingSet, schema: RemoteSchema, *, remote: str = "the remote"
) -> list[SchemaProblem]:
    """Every push target of ``mappings`` that ``schema`` says the remote cannot take."""
    if mappings.identity:
        return []  # the entity's own keys go out: nothing is declared to compare
    problems: list[SchemaProblem] = []
    for mapping in mappings:
        key = mapping.entity_name or mapping.name
        fields = schema.get(key)
        if fields is None:
            known = ", ".join(sorted(schema)) or "none"
            line = min((p.line for p in mapping.push_fields if p.line), default=0)
            problems.append(
                SchemaProblem(
                    mapping.source or mappings.source,
                    line,
                    mapping.name,
                    "*",
                    f"{remote} takes no records of entity {key!r} (it takes: {known})",
                )
            )
            continue
        for plan in mapping.push_fields:
            problems.extend(_compare(mapping, mappings.source, plan, plan.keys[0], fields, remote, key))
    return _merged(problems)


def _merged(problems: list[SchemaProblem]) -> list[SchemaProblem]:
    """One problem per place and message: a field shared by two mappings (a YAML anchor) is named once."""
    seen: dict[tuple[str, int, str, str, bool], int] = {}
    out: list[SchemaProblem] = []
    for p in problems:
        key = (p.file, p.line, p.target, p.message.replace(p.mapping, "*"), p.absent_optional)
        if key in seen and p.line:
            first = out[seen[key]]
            out[seen[key]] = replace(first, mapping=f"{first.mapping}, {p.mapping}")
            continue
        seen[key] = len(out)
        out.append(p)
    return out


def _compare(
    mapping: EntityMapping,
    source: str,
    plan: FieldPlan,
    name: str,
    fields: Mapping[str, FieldSpec],
    remote: str,
    where: str,
) -> list[SchemaProblem]:
    file = mapping.source or source

    def problem(message: str, fix: str = "", **kw: Any) -> SchemaProblem:
        return SchemaProblem(file, plan.line, mapping.name, name, message, fix, **kw)

    spec = fields.get(name)
    if spec is None:
        near = difflib.get_close_matches(name, list(fields), n=1, cutoff=0.8)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        message = f"{remote} has no field {name!r} for {where}{hint}"
        fix = "rename or remove the field in the mapping, or add the field to the remote"
        if plan.may_be_empty:
            return [problem(message, fix, fatal=False, absent_optional=True)]
        return [problem(message, fix)]
    if spec.computed:
        kind = f" ({spec.remote_type})" if spec.remote_type else ""
        return [
            problem(
                f"{remote} computes it{kind}: a value sent to it is dropped",
                "remove the field from the mapping",
            )
        ]
    out: list[SchemaProblem] = []
    if len(plan.keys) > 1:
        return out  # a nested target (``address.city``): its value is not the top field's
    accepted = _ACCEPTS.get(spec.type)
    if accepted is not None and plan.value_type != "any" and plan.value_type not in accepted:
        kind = f" ({spec.remote_type})" if spec.remote_type else ""
        out.append(
            problem(f"the mapping gives it {_a(plan.value_type)}, but {remote} keeps {_a(spec.type)}{kind}")
        )
        return out
    if plan.values and spec.choices is not None:
        known = {_fold(c, spec.ignore_case) for c in spec.choices}
        for value in plan.values:
            if _fold(str(value), spec.ignore_case) in known:
                continue
            has = ", ".join(repr(c) for c in spec.choices) or "none"
            fix = spec.choices_fix.format(value=value) if spec.choices_fix else ""
            out.append(
                problem(f"its lookup gives {value!r}, which {remote} does not know (it has: {has})", fix)
            )
    if plan.each is not None and spec.fields is not None:
        for sub in plan.each:
            out.extend(_compare(mapping, source, sub, sub.keys[0], spec.fields, remote, f"{where}.{name}[]"))
    return out


def _a(type_name: str) -> str:
    return f"an {type_name}" if type_name[:1] in "aeiou" else f"a {type_name}"


def _fold(text: str, ignore_case: bool) -> str:
    return text.casefold() if ignore_case else text


def confirm_absent(
    problems: Sequence[SchemaProblem], mappings: MappingSet, entities: Iterable[Mapping[str, Any]]
) -> list[SchemaProblem]:
    """Settle the fields the remote lacks but the mapping lets be empty, by mapping ``entities`` (entity
    JSON, streamed): one that holds a value would be refused, so its field becomes fatal; the others stay
    warnings saying the field is left out."""
    pending = {(p.mapping, p.target): p for p in problems if p.absent_optional}
    if not pending:
        return list(problems)
    counts: dict[tuple[str, str], int] = dict.fromkeys(pending, 0)
    first: dict[tuple[str, str], str] = {}
    wanted = {m for m, _ in pending}
    for entity in entities:
        mapping = mappings.for_entity(entity)
        if mapping is None or mapping.name not in wanted:
            continue
        result = mapping.push(entity)
        record = result.record or {}
        for (name, target), _ in pending.items():
            if name == mapping.name and record.get(target) not in (None, False, "", [], {}):
                counts[(name, target)] += 1
                first.setdefault((name, target), str(entity.get("guid")))
    out = []
    for p in problems:
        key = (p.mapping, p.target)
        if key not in pending:
            out.append(p)
        elif counts[key]:
            many = f"{counts[key]} entities have" if counts[key] > 1 else "1 entity has"
            message = f"{p.message}; {many} a value for it (first: {first[key]})"
            out.append(replace(p, message=message, fatal=True))
        else:
            message = f"{p.message}; no entity has a value for it, so it is left out of every record"
            out.append(replace(p, message=message, fix=""))
    return out

"""From YAML text to a :class:`MappingSet`: parse once, check everything, compile everything.

The compiler never stops at the first mistake: each mapping and each field is validated and compiled
on its own, and every issue is collected with the YAML node it came from; :class:`MappingError` then
carries them all. What comes out is a set of plans whose getters, steps and setters are plain
closures, so mapping a record does no parsing, no regex compiling and no name lookups.
"""

from __future__ import annotations

import copy
import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from connector_core.bounded import MAX_YAML_BYTES, BoundedInputError, decode_utf8, read_limited
from connector_core.mapping.conditions import CompiledCondition, ConditionSpec, compile_condition
from connector_core.mapping.engine import EntityMapping, MappingSet, ReversibleField
from connector_core.mapping.errors import MISSING, MappingError, MappingIssue, Missing, ParamError
from connector_core.mapping.lookups import LookupTable, load_table_file, table_from_mapping
from connector_core.mapping.paths import (
    CompiledPath,
    Getter,
    PathSyntaxError,
    compile_path,
    parse_target,
    plain_getter,
)
from connector_core.mapping.runtime import FieldPlan, StepPlan
from connector_core.mapping.schema import (
    BlockSpec,
    EntityMappingSpec,
    FieldSpec,
    FileSpec,
    LookupSpec,
    MatchSpec,
)
from connector_core.mapping.source import Document, parse_yaml
from connector_core.mapping.source import Path as YPath
from connector_core.mapping.transforms import (
    BoundTransform,
    BuildEnv,
    TransformDef,
    TransformRegistry,
    compatible,
    default_registry,
    describe_params,
    table_outputs,
    to_str,
    type_of_constant,
)
from connector_core.mapping.validate import TargetUse, pydantic_issues, target_conflicts, vocabulary

_VOCABULARY = vocabulary(
    [FileSpec, LookupSpec, EntityMappingSpec, MatchSpec, BlockSpec, FieldSpec, ConditionSpec]
)
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")


@dataclass(slots=True)
class _Compiled:
    """A field compiled in its forward direction, plus (reversible only) its inverse."""

    forward: FieldPlan
    inverse: FieldPlan | None
    inverse_keys: tuple[str, ...] | None
    entity_path: str | None


class _Compiler:
    def __init__(self, doc: Document, registry: TransformRegistry, base_dir: Path):
        self.doc = doc
        self.registry = registry
        self.base_dir = base_dir
        self.issues: list[MappingIssue] = []
        self.tables: dict[str, LookupTable] = {}
        self._reads: list[list[CompiledPath]] = []
        self.entity_refs: list[tuple[str, YPath, str | None, str | None, str]] = []
        self.env = BuildEnv(base_dir, self.tables, self._compile_path)

    # ---- helpers ---------------------------------------------------------------------------------

    def _issue(
        self,
        ypath: YPath,
        message: str,
        mapping: str | None = None,
        field_name: str | None = None,
        *,
        key: bool = False,
    ) -> None:
        self.issues.append(self.doc.issue(ypath, message, mapping=mapping, field_name=field_name, key=key))

    def _validate(
        self,
        model: type[BaseModel],
        raw: Any,
        ypath: YPath,
        mapping: str | None,
        field_name: str | None,
    ) -> Any:
        try:
            return model.model_validate(raw)
        except ValidationError as exc:
            self.issues.extend(
                pydantic_issues(
                    self.doc,
                    exc,
                    ypath,
                    mapping=mapping,
                    field_name=field_name,
                    vocabulary=_VOCABULARY,
                )
            )
            return None

    def _compile_path(self, text: str) -> CompiledPath:
        compiled = compile_path(text)
        if self._reads:
            self._reads[-1].append(compiled)
        return compiled

    def _path(
        self,
        text: str,
        ypath: YPath,
        mapping: str | None,
        field_name: str | None,
        *,
        record: bool = True,
    ) -> CompiledPath | None:
        try:
            return self._compile_path(text) if record else compile_path(text)
        except PathSyntaxError as exc:
            self._issue(ypath, str(exc), mapping, field_name)
            return None

    def _condition(
        self, spec: ConditionSpec, ypath: YPath, mapping: str, field_name: str | None
    ) -> CompiledCondition | None:
        errors: list[tuple[tuple[str | int, ...], str]] = []
        compiled = compile_condition(spec, self._compile_path, errors)
        for loc, message in errors:
            self._issue((*ypath, *loc), message, mapping, field_name)
        return compiled

    # ---- file ------------------------------------------------------------------------------------

    def run(self) -> MappingSet | None:
        data = self.doc.data
        if not isinstance(data, dict):
            self._issue((), "a mapping file is a YAML mapping with a 'mappings:' key")
            return None
        spec: FileSpec | None = self._validate(FileSpec, data, (), None, None)
        lookups = spec.lookups if spec else data.get("lookups")
        mappings = spec.mappings if spec else data.get("mappings")
        if isinstance(lookups, dict):
            for name, raw in lookups.items():
                self._lookup(name, raw)
        compiled: list[EntityMapping] = []
        if isinstance(mappings, dict):
            if not mappings:
                self._issue(("mappings",), "'mappings' is empty: declare at least one mapping")
            for name, raw in mappings.items():
                m = self._mapping(name, raw)
                if m is not None:
                    compiled.append(m)
        self._check_selection(compiled)
        self._check_entity_refs(mappings if isinstance(mappings, dict) else {})
        if self.issues:
            return None
        return MappingSet(compiled, self.doc.file)

    def _check_entity_refs(self, mappings: dict[str, Any]) -> None:
        """A ``link``/``resolve`` names an entity this file maps: otherwise pull can never resolve it (a typo
        such as ``entity: houshold`` would pass every record's parent as missing)."""
        known: set[str] = set()
        for name, raw in mappings.items():
            known.add(str(name))
            match = raw.get("match") if isinstance(raw, dict) else None
            if isinstance(match, dict) and isinstance(match.get("entity_name"), str):
                known.add(match["entity_name"])
        for entity, where, mapping, label, transform in self.entity_refs:
            if entity not in known:
                hint = difflib.get_close_matches(entity, sorted(known), n=1, cutoff=0.6)
                did = f" (did you mean {hint[0]!r}?)" if hint else ""
                names = ", ".join(sorted(known)) or "none"
                self._issue(
                    where,
                    f"{transform}: unknown entity {entity!r}{did}: this file maps {names}",
                    mapping,
                    label,
                )

    def _lookup(self, name: str, raw: Any) -> None:
        ypath: YPath = ("lookups", name)
        label = f"lookups.{name}"
        spec: LookupSpec | None = self._validate(LookupSpec, raw, ypath, None, label)
        if spec is None:
            return
        if (spec.values is None) == (spec.file is None):
            self._issue(ypath, "a lookup needs exactly one of 'values' or 'file'", None, label)
            return
        try:
            if spec.values is not None:
                table = table_from_mapping(name, spec.values)
            else:
                assert spec.file is not None
                table = load_table_file(name, spec.file, self.base_dir, spec.key, spec.value)
        except ParamError as exc:
            self._issue((*ypath, exc.param or "file"), str(exc), None, label)
            return
        table.has_fallback = "fallback" in spec.model_fields_set
        table.fallback = spec.fallback
        table.passthrough = spec.passthrough
        self.tables[name] = table

    def _check_selection(self, mappings: list[EntityMapping]) -> None:
        seen: dict[str, str] = {}
        for m in mappings:
            key = f"entity_name {m.entity_name!r}" if m.entity_name else f"type {m.entity_type!r}"
            if key in seen:
                self._issue(
                    ("mappings", m.name),
                    f"mappings {seen[key]!r} and {m.name!r} both select {key}",
                    m.name,
                    None,
                    key=True,
                )
            else:
                seen[key] = m.name

    # ---- mapping ---------------------------------------------------------------------------------

    def _mapping(self, name: str, raw: Any) -> EntityMapping | None:
        ypath: YPath = ("mappings", name)
        before = len(self.issues)
        spec: EntityMappingSpec | None = self._validate(EntityMappingSpec, raw, ypath, name, None)
        if spec is None:
            return None
        match = spec.match
        entity_type = match.type if match else None
        if match is not None and match.entity_name is not None:
            entity_name: str | None = match.entity_name
        elif match is not None and match.type is not None:
            entity_name = None
        else:
            entity_name = name

        push_plans: list[FieldPlan] = []
        pull_plans: list[FieldPlan] = []
        push_uses: list[TargetUse] = []
        pull_uses: list[TargetUse] = []
        reversible: list[ReversibleField] = []

        for fname, fraw in spec.fields.items():
            fpath: YPath = (*ypath, "fields", fname)
            done = self._field(fraw, fpath, name, fname, mode="reversible", base="", item=False)
            if done is None:
                # still claim its targets, so a clash with another field is reported in the same run
                push_uses.extend(TargetUse(k, fname, fpath) for k in _safe_target(fname))
                pull_uses.extend(TargetUse(k, fname, fpath) for k in _entity_keys_of(fraw))
                continue
            push_plans.append(done.forward)
            push_uses.append(TargetUse(done.forward.keys, fname, fpath))
            if done.inverse is not None and done.inverse_keys is not None:
                pull_plans.append(done.inverse)
                pull_uses.append(TargetUse(done.inverse_keys, fname, fpath))
                reversible.append(ReversibleField(fname, done.entity_path or ""))

        whens: dict[str, CompiledCondition | None] = {"push": None, "pull": None}
        for direction, block in (("push", spec.push), ("pull", spec.pull)):
            if block is None:
                continue
            bpath: YPath = (*ypath, direction)
            if block.when is not None:
                self._reads.append([])
                whens[direction] = self._condition(block.when, (*bpath, "when"), name, None)
                self._reads.pop()
            plans, uses = (push_plans, push_uses) if direction == "push" else (pull_plans, pull_uses)
            for fname, fraw in block.fields.items():
                fpath = (*bpath, "fields", fname)
                done = self._field(fraw, fpath, name, fname, mode=direction, base="", item=False)
                if done is not None:
                    plans.append(done.forward)
                    uses.append(TargetUse(done.forward.keys, fname, fpath))
                else:
                    uses.extend(TargetUse(k, fname, fpath) for k in _safe_target(fname))

        self.issues.extend(target_conflicts(self.doc, push_uses, mapping=name, direction="push"))
        self.issues.extend(target_conflicts(self.doc, pull_uses, mapping=name, direction="pull"))
        if not spec.fields and not (spec.push and spec.push.fields) and not (spec.pull and spec.pull.fields):
            self._issue(ypath, "mapping has no fields", name, None, key=True)
        if len(self.issues) > before:
            return None
        return EntityMapping(
            name,
            entity_name=entity_name,
            entity_type=entity_type,
            description=spec.description,
            push_fields=push_plans,
            pull_fields=pull_plans,
            push_when=whens["push"],
            pull_when=whens["pull"],
            reversible_fields=reversible,
            source=self.doc.file,
        )

    # ---- field -----------------------------------------------------------------------------------

    def _field(
        self,
        raw: Any,
        ypath: YPath,
        mapping: str,
        label: str,
        *,
        mode: str,
        base: str,
        item: bool,
    ) -> _Compiled | None:
        """Compile one field (``mode``: reversible/push/pull; ``base``: read prefix inside ``each``)."""
        before = len(self.issues)
        spec: FieldSpec | None = self._validate(FieldSpec, raw, ypath, mapping, label)
        if spec is None:
            return None
        target = ypath[-1]
        assert isinstance(target, str)
        try:
            keys = parse_target(target)
        except PathSyntaxError as exc:
            self._issue(ypath, str(exc), mapping, label, key=True)
            keys = (target,)
        reversible = mode == "reversible"
        sources = spec.sources()
        if len(sources) != 1:
            got = ", ".join(sources) if sources else "none"
            self._issue(
                ypath,
                f"a field needs exactly one source: path, const, template or each (got {got})",
                mapping,
                label,
            )
            return None
        kind = sources[0]
        set_ = spec.model_fields_set
        if kind != "each":
            for extra in ("fields", "filter"):
                if extra in set_:
                    self._issue(
                        (*ypath, extra),
                        f"'{extra}' only goes with 'each'",
                        mapping,
                        label,
                        key=True,
                    )

        self._reads.append([])
        get: Getter | None = None
        vtype = "any"
        source_text = ""
        source_path: CompiledPath | None = None
        sub_forward: list[FieldPlan] = []
        sub_inverse: list[FieldPlan] = []
        item_filter: CompiledCondition | None = None
        sub_targets: list[str] = []
        sub_reads: list[str] = []
        sub_inverse_targets: list[str] = []
        sub_inverse_reads: list[str] = []

        if kind == "path":
            assert spec.path is not None
            source_path = self._path(spec.path, (*ypath, "path"), mapping, label)
            if source_path is not None:
                get, source_text = source_path.get, source_path.text
                vtype = "list" if source_path.multi else "any"
        elif kind == "const":
            get, source_text = _const_getter(spec.const), f"const {spec.const!r}"
            vtype = type_of_constant(spec.const)
        elif kind == "template":
            assert spec.template is not None
            get = self._template(spec.template, (*ypath, "template"), mapping, label)
            source_text, vtype = f"template {spec.template!r}", "str"
            if reversible:
                self._issue(
                    (*ypath, "template"),
                    "a template cannot be reversed; put this field under push: (and pull:)",
                    mapping,
                    label,
                )
        else:
            assert spec.each is not None
            # not a read of its own: coverage counts the item fields actually used, not the list
            source_path = self._path(spec.each, (*ypath, "each"), mapping, label, record=False)
            vtype = "list"
            if source_path is not None:
                get, source_text = source_path.get, f"each {source_path.text}"
            item_base = _join(base, _dotted(source_path.prefix if source_path else ())) + "[]"
            if not spec.fields:
                self._issue(ypath, "'each' needs 'fields' describing each item", mapping, label)
            if spec.filter is not None:
                if reversible:
                    self._issue(
                        (*ypath, "filter"),
                        "a filter drops items, so it cannot be reversed; move the field under push:",
                        mapping,
                        label,
                    )
                self._reads.append([])
                item_filter = self._condition(spec.filter, (*ypath, "filter"), mapping, label)
                sub_reads.extend(_join(item_base, _dotted(p.prefix)) for p in self._reads.pop())
            sub_uses: list[TargetUse] = []
            sub_inverse_uses: list[TargetUse] = []
            for sname, sraw in (spec.fields or {}).items():
                spath: YPath = (*ypath, "fields", sname)
                sub = self._field(
                    sraw, spath, mapping, f"{label}.{sname}", mode=mode, base=item_base, item=True
                )
                if sub is None:
                    continue
                sub_forward.append(sub.forward)
                sub_uses.append(TargetUse(sub.forward.keys, f"{label}.{sname}", spath))
                sub_targets.extend(f"{target}[].{t}" for t in sub.forward.targets)
                sub_reads.extend(sub.forward.reads)
                if sub.inverse is not None and sub.inverse_keys is not None:
                    sub_inverse.append(sub.inverse)
                    sub_inverse_uses.append(TargetUse(sub.inverse_keys, f"{label}.{sname}", spath))
                    sub_inverse_targets.extend(sub.inverse.targets)
                    sub_inverse_reads.extend(sub.inverse.reads)
            self.issues.extend(
                target_conflicts(
                    self.doc,
                    sub_uses,
                    mapping=mapping,
                    direction="push" if mode != "pull" else "pull",
                )
            )
            if reversible:
                self.issues.extend(
                    target_conflicts(self.doc, sub_inverse_uses, mapping=mapping, direction="pull")
                )

        # pipe, then the field-level default/required sugar (applied to the result)
        bound: list[tuple[BoundTransform, YPath]] = []
        for i, step_raw in enumerate(spec.pipe):
            b = self._bind(step_raw, (*ypath, "pipe", i), mapping, label, reversible)
            if b is not None:
                bound.append((b, (*ypath, "pipe", i)))
        if "default" in set_:
            b = self._bind(
                {"default": {"value": spec.default}},
                (*ypath, "default"),
                mapping,
                label,
                reversible,
            )
            if b is not None:
                bound.append((b, (*ypath, "default")))
        if spec.required:
            b = self._bind("required", (*ypath, "required"), mapping, label, reversible)
            if b is not None:
                bound.append((b, (*ypath, "required")))
        value_type = self._check_types(vtype, source_text or kind, bound, mapping, label)

        cond: CompiledCondition | None = None
        if spec.when is not None:
            if reversible:
                self._issue(
                    (*ypath, "when"),
                    "'when' is not allowed in a reversible field (its paths name one side only); "
                    "put the field under push: and pull:",
                    mapping,
                    label,
                )
            else:
                cond = self._condition(spec.when, (*ypath, "when"), mapping, label)
        reads = [_join(base, _dotted(p.prefix)) for p in self._reads.pop()]
        reads.extend(sub_reads)

        if len(self.issues) > before or get is None:
            return None

        forward = FieldPlan(
            target=target,
            keys=keys,
            source=source_text,
            get=get,
            steps=tuple(StepPlan(b.label, b.step, b.handles_missing, b.definition.name) for b, _ in bound),
            when=cond,
            drop_if_empty=spec.drop_if_empty,
            optional=spec.optional,
            each=tuple(sub_forward) if kind == "each" else None,
            item_filter=item_filter,
            reads=tuple(reads),
            targets=(target, *sub_targets),
            line=self.doc.at(ypath, key=True)[0],
            column=self.doc.at(ypath, key=True)[1],
            value_type=value_type,
            values=self._closing_values(bound),
            may_be_empty=spec.optional or spec.drop_if_empty or ("default" in set_ and spec.default is None),
        )
        if not reversible or kind == "const":
            return _Compiled(forward, None, None, None)

        # the inverse: read the external record at the target, undo the steps, write the entity path
        assert source_path is not None
        entity_keys = self._writable(source_path, ypath, mapping, label, kind, item)
        if entity_keys is None:
            return None
        inverse_steps: list[StepPlan] = []
        for b, _ in reversed(bound):
            assert b.inverse is not None
            inverse_steps.append(
                StepPlan(f"{b.label} (inverse)", b.inverse, b.handles_missing, b.definition.name)
            )
        entity_target = ".".join(entity_keys)
        inverse = FieldPlan(
            target=entity_target,
            keys=entity_keys,
            source=f"$.{target}" if kind == "path" else f"each $.{target}",
            get=plain_getter(keys),
            steps=tuple(inverse_steps),
            drop_if_empty=spec.drop_if_empty,
            optional=spec.optional,
            inverse=True,
            each=tuple(sub_inverse) if kind == "each" else None,
            # record-side reads, relative to the record (or item); a list counts through its items
            reads=tuple(f"{target}[].{r}" for r in sub_inverse_reads) if kind == "each" else (target,),
            targets=(entity_target, *(f"{entity_target}[].{t}" for t in sub_inverse_targets)),
        )
        return _Compiled(forward, inverse, entity_keys, source_path.text)

    def _writable(
        self, path: CompiledPath, ypath: YPath, mapping: str, label: str, kind: str, item: bool
    ) -> tuple[str, ...] | None:
        """Entity-data keys a reversible field writes on pull; ``None`` (plus an issue) if none."""
        loc = (*ypath, kind)
        keys = path.keys
        if keys is None or any(type(k) is int for k in keys):
            self._issue(
                loc,
                "a reversible field needs a plain path of names (no wildcards, filters, indexes), "
                f"got {path.text!r}",
                mapping,
                label,
            )
            return None
        names = tuple(str(k) for k in keys)
        if item:
            if not names:
                self._issue(loc, "a reversible item field needs a path below the item", mapping, label)
                return None
            return names
        if len(names) < 2 or names[0] != "data":
            self._issue(
                loc,
                f"a reversible field must read $.data.<name> so pull can write it back, got {path.text!r}",
                mapping,
                label,
            )
            return None
        return names[1:]

    def _bind(
        self, raw: Any, ypath: YPath, mapping: str, label: str, reversible: bool
    ) -> BoundTransform | None:
        if isinstance(raw, str):
            name, params_raw, name_path = raw, None, ypath
        elif isinstance(raw, dict) and len(raw) == 1:
            name, params_raw = next(iter(raw.items()))
            name_path = (*ypath, name)
        else:
            self._issue(
                ypath,
                "a pipe step is a transform name or a one-key mapping {name: params}",
                mapping,
                label,
            )
            return None
        definition: TransformDef | None = self.registry.get(name)
        if definition is None:
            hint = self.registry.suggest(name)
            tail = f" (did you mean {hint!r}?)" if hint else " (list them with `dcsync mapping transforms`)"
            self._issue(
                name_path,
                f"unknown transform {name!r}{tail}",
                mapping,
                label,
                key=name_path != ypath,
            )
            return None
        params_path = (*ypath, name) if name_path != ypath else ypath
        try:
            params, wrapped = definition.parse_params(params_raw)
        except ParamError as exc:
            if exc.param is not None and isinstance(params_raw, dict):
                self._issue((*params_path, exc.param), f"{name}: {exc}", mapping, label, key=True)
            else:
                self._issue(params_path, f"{name}: {exc}", mapping, label)
            return None
        except ValidationError as exc:
            for issue in pydantic_issues(
                self.doc,
                exc,
                params_path,
                mapping=mapping,
                field_name=label,
                vocabulary=sorted(_param_vocabulary(definition)),
            ):
                self.issues.append(
                    MappingIssue(
                        issue.file,
                        issue.line,
                        issue.column,
                        issue.mapping,
                        issue.field,
                        f"{name}: {issue.message}",
                    )
                )
            return None
        try:
            step = definition.make_step(params, self.env)
            inverse = definition.make_inverse(params, self.env) if reversible else None
        except ParamError as exc:
            where = params_path if wrapped or exc.param is None else (*params_path, exc.param)
            self._issue(where, f"{name}: {exc}", mapping, label)
            return None
        except Exception as exc:  # a plugin's builder failing must be reported, not crash validation
            self._issue(params_path, f"{name}: cannot build transform: {exc}", mapping, label)
            return None
        if reversible:
            try:
                reason = definition.irreversible_reason(params, self.env)
            except ParamError as exc:
                reason = str(exc)
            if reason is None and inverse is None:
                reason = f"'{name}' has no inverse"
            if reason is not None:
                self._issue(
                    name_path,
                    f"{reason}, so it cannot be used in a reversible field; "
                    "move the field under push: (and pull:)",
                    mapping,
                    label,
                    key=name_path != ypath,
                )
                return None
        entity_ref = getattr(params, "entity", None)
        if definition.name in ("link", "resolve") and isinstance(entity_ref, str):
            self.entity_refs.append((entity_ref, params_path, mapping, label, name))
        text = name if params_raw is None else f"{name} {describe_params(params_raw)}"
        return BoundTransform(definition, params, text, step, inverse, definition.handles_missing)

    def _closing_values(self, bound: list[tuple[BoundTransform, YPath]]) -> tuple[Any, ...] | None:
        """The table values of the field's last ``lookup``/``map``, when only ``default``/``required``
        follow it (any other step may change the value)."""
        for b, _ in reversed(bound):
            if b.definition.name in ("default", "required"):
                continue
            try:
                return table_outputs(b.definition.name, b.params, self.env)
            except ParamError:
                return None
        return None

    def _check_types(
        self,
        vtype: str,
        origin: str,
        bound: list[tuple[BoundTransform, YPath]],
        mapping: str,
        label: str,
    ) -> str:
        """Report a step fed a type it cannot take; return the type the chain ends with."""
        current, producer = vtype, origin
        for b, ypath in bound:
            expected = b.definition.input
            if not compatible(current, expected):
                self._issue(
                    ypath,
                    f"type mismatch: '{b.definition.name}' expects {expected} but gets {current} "
                    f"from {producer}",
                    mapping,
                    label,
                )
                return "any"
            out = b.definition.output_type(b.params)
            if out != "same":
                current, producer = out, f"'{b.definition.name}'"
        return current

    def _template(self, text: str, ypath: YPath, mapping: str, label: str) -> Getter | None:
        pieces: list[tuple[bool, Any]] = []
        pos = 0
        ok = True
        for m in _PLACEHOLDER.finditer(text):
            literal = text[pos : m.start()]
            if "{" in literal or "}" in literal:
                ok = False
            pieces.append((False, literal))
            token = m.group(0)
            if token == "{{":
                pieces.append((False, "{"))
            elif token == "}}":
                pieces.append((False, "}"))
            else:
                inner = (m.group(1) or "").strip()
                compiled = self._path(inner, ypath, mapping, label)
                if compiled is None:
                    return None
                pieces.append((True, compiled.get))
            pos = m.end()
        tail = text[pos:]
        if "{" in tail or "}" in tail:
            ok = False
        pieces.append((False, tail))
        if not ok:
            self._issue(
                ypath,
                "unbalanced brace in template (write {{ or }} for a literal brace)",
                mapping,
                label,
            )
            return None
        if not any(is_path for is_path, _ in pieces):
            self._issue(
                ypath,
                "a template needs at least one {$.path}; use const for fixed text",
                mapping,
                label,
            )
            return None
        merged: list[tuple[bool, Any]] = []
        for is_path, part in pieces:
            if not is_path and merged and not merged[-1][0]:
                merged[-1] = (False, merged[-1][1] + part)
            elif is_path or part:
                merged.append((is_path, part))
        frozen = tuple(merged)

        def render(doc: Any) -> Any:
            out: list[str] = []
            found = False
            for is_path, part in frozen:
                if is_path:
                    v = part(doc)
                    if v is None or type(v) is Missing:
                        continue
                    if v != "":
                        found = True
                    out.append(to_str(v))
                else:
                    out.append(part)
            return "".join(out) if found else MISSING

        return render


def _safe_target(name: str) -> list[tuple[str, ...]]:
    try:
        return [parse_target(name)]
    except PathSyntaxError:
        return []


def _entity_keys_of(raw: Any) -> list[tuple[str, ...]]:
    """Best-effort entity keys of a reversible field that failed to compile (for clash checks)."""
    text = raw if isinstance(raw, str) else None
    if isinstance(raw, dict):
        candidate = raw.get("path", raw.get("each"))
        text = candidate if isinstance(candidate, str) else None
    if text is None:
        return []
    try:
        keys = compile_path(text).keys
    except PathSyntaxError:
        return []
    if keys is None or len(keys) < 2 or keys[0] != "data" or any(type(k) is int for k in keys):
        return []
    return [tuple(str(k) for k in keys[1:])]


def _param_vocabulary(definition: TransformDef) -> set[str]:
    if definition.params is None:
        return set()
    return {info.alias or name for name, info in definition.params.model_fields.items()}


def _const_getter(value: Any) -> Getter:
    if isinstance(value, dict | list):

        def fresh(doc: Any) -> Any:
            return copy.deepcopy(value)

        return fresh

    def const(doc: Any) -> Any:
        return value

    return const


def _dotted(keys: tuple[str | int, ...]) -> str:
    out = ""
    for k in keys:
        out += "[]" if type(k) is int else (f".{k}" if out else str(k))
    return out


def _join(base: str, rest: str) -> str:
    if not base:
        return rest
    if not rest:
        return base
    return f"{base}{rest}" if rest.startswith("[") else f"{base}.{rest}"


def load_mapping_text(
    text: str,
    source_name: str = "<string>",
    *,
    base_dir: str | Path | None = None,
    registry: TransformRegistry | None = None,
) -> MappingSet:
    """Compile mapping YAML; raise :class:`MappingError` with every issue found.

    ``base_dir`` is where lookup files are looked for (default: the current directory).
    """
    doc, issues = parse_yaml(text, source_name)
    if doc is None or issues:
        raise MappingError(issues)
    compiler = _Compiler(doc, registry or default_registry(), Path(base_dir) if base_dir else Path.cwd())
    result = compiler.run()
    if result is None:
        raise MappingError(compiler.issues)
    return result


def load_mapping(path: str | Path, *, registry: TransformRegistry | None = None) -> MappingSet:
    """Read and compile a mapping file; lookup files are relative to it."""
    p = Path(path)
    try:
        text = decode_utf8(read_limited(p, MAX_YAML_BYTES, "mapping file"), str(path))
    except BoundedInputError as exc:
        raise MappingError([MappingIssue(str(path), exc.line, exc.column, None, None, exc.message)]) from None
    except FileNotFoundError:
        raise MappingError([MappingIssue(str(path), 0, 0, None, None, "mapping file not found")]) from None
    except IsADirectoryError:
        raise MappingError(
            [MappingIssue(str(path), 0, 0, None, None, "is a directory, not a mapping file")]
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise MappingError(
            [MappingIssue(str(path), 0, 0, None, None, f"cannot read mapping file: {reason}")]
        ) from None
    return load_mapping_text(text, str(path), base_dir=p.parent, registry=registry)


__all__ = ["load_mapping", "load_mapping_text"]

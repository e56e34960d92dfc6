"""Compiled field plans and the closures that run them: the engine's hot path.

Each field becomes a :class:`FieldPlan` (getter, built steps, setter) and then one runner closure
specialised for its shape (no steps / no condition / single-key target are the common, fast cases).
A runner never raises: a failing step appends a :class:`FieldError` and the record goes on with its
other fields, so one run reports every error of a record. :func:`trace_field` runs the same plan
step by step for explanations.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from connector_core.mapping.conditions import CompiledCondition
from connector_core.mapping.context import Scope
from connector_core.mapping.errors import MISSING, FieldError, Missing
from connector_core.mapping.explain import FieldTrace, StepTrace
from connector_core.mapping.paths import Getter, make_setter
from connector_core.mapping.transforms import Step

Runner = Callable[[Any, Scope, dict[str, Any], list[FieldError]], None]


@dataclass(frozen=True, slots=True)
class StepPlan:
    label: str
    """The transform as written (name and parameters), for explanations."""
    fn: Step
    total: bool
    """``True`` when the step also sees absent/null values (``default``, ``required``, ...)."""
    name: str = ""
    """The transform's name, prefixed to error reasons."""


@dataclass(slots=True)
class FieldPlan:
    """One target field in one direction, fully compiled."""

    target: str
    keys: tuple[str, ...]
    source: str
    get: Getter
    steps: tuple[StepPlan, ...] = ()
    when: CompiledCondition | None = None
    drop_if_empty: bool = False
    each: tuple[FieldPlan, ...] | None = None
    item_filter: CompiledCondition | None = None
    reads: tuple[str, ...] = ()
    targets: tuple[str, ...] = field(default_factory=tuple)
    """Every target this field can produce, including ``ids[].type`` for collections (coverage)."""
    line: int = 0
    """Line of the field in its mapping file (0: not from a file), for messages about the target."""
    column: int = 0
    """Column of the field's key on that line (scope errors point at the entry, docs/data-protection.md)."""
    value_type: str = "any"
    """The type the field's last typed step produces (``str``, ``int``, ``list``, ...; ``any``: unknown)."""
    values: tuple[Any, ...] | None = None
    """The values a closing ``lookup``/``map`` can produce (the table's), for checks against the remote."""
    optional: bool = False
    """A sample set need not exercise this field's source (``mapping test`` does not call it a typo)."""
    may_be_empty: bool = False
    """The field may be left empty (``optional: true``, ``default: null`` or ``drop_if_empty``): a remote
    that lacks its target is a warning in ``check``, an error only when an entity holds a value for it."""
    inverse: bool = False
    """Derived from a reversible field for pull: its source is the push target, not a path someone typed."""


def _is_empty(v: Any) -> bool:
    return v is None or type(v) is Missing or (type(v) in (str, list, dict) and not v)


def _fail(errors: list[FieldError], target: str, value: Any, label: str, exc: Exception) -> None:
    reason = str(exc) or type(exc).__name__
    errors.append(FieldError(target, value, f"{label}: {reason}"))


def make_runner(plan: FieldPlan) -> Runner:
    """The fastest closure for ``plan``'s shape."""
    if plan.each is not None:
        return _each_runner(plan)
    get, target = plan.get, plan.target
    steps = tuple((s.fn, s.total, s.name or s.label) for s in plan.steps)
    cond = plan.when.test if plan.when is not None else None
    drop = plan.drop_if_empty
    single = len(plan.keys) == 1
    key = plan.keys[0]
    setter = make_setter(plan.keys)

    if not steps and cond is None and not drop:
        if single:

            def run_plain(doc: Any, scope: Scope, out: dict[str, Any], errors: list[FieldError]) -> None:
                v = get(doc)
                if v is not MISSING:
                    out[key] = v

            return run_plain

        def run_plain_nested(doc: Any, scope: Scope, out: dict[str, Any], errors: list[FieldError]) -> None:
            v = get(doc)
            if v is not MISSING:
                setter(out, v)

        return run_plain_nested

    if len(steps) == 1 and not steps[0][1] and cond is None and not drop and single:
        only, only_label = steps[0][0], steps[0][2]

        def run_one_step(doc: Any, scope: Scope, out: dict[str, Any], errors: list[FieldError]) -> None:
            v = get(doc)
            if v is MISSING:
                return
            if v is not None:
                try:
                    v = only(v, scope)
                except Exception as exc:  # a plugin's bug must dead-letter the record, not stop the run
                    _fail(errors, target, v, only_label, exc)
                    return
                if type(v) is Missing:
                    return
            out[key] = v

        return run_one_step

    def run(doc: Any, scope: Scope, out: dict[str, Any], errors: list[FieldError]) -> None:
        if cond is not None and not cond(doc):
            return
        v = get(doc)
        for fn, total, label in steps:
            if total or (v is not None and type(v) is not Missing):
                try:
                    v = fn(v, scope)
                except Exception as exc:  # a plugin's bug must dead-letter the record, not stop the run
                    _fail(errors, target, v, label, exc)
                    return
        if type(v) is Missing:
            return
        if drop and (v is None or (type(v) in (str, list, dict) and not v)):
            return
        if single:
            out[key] = v
        else:
            setter(out, v)

    return run


def _each_runner(plan: FieldPlan) -> Runner:
    assert plan.each is not None
    get, target = plan.get, plan.target
    subs = tuple(make_runner(p) for p in plan.each)
    keep = plan.item_filter.test if plan.item_filter is not None else None
    steps = tuple((s.fn, s.total, s.name or s.label) for s in plan.steps)
    cond = plan.when.test if plan.when is not None else None
    drop = plan.drop_if_empty
    setter = make_setter(plan.keys)

    def run(doc: Any, scope: Scope, out: dict[str, Any], errors: list[FieldError]) -> None:
        if cond is not None and not cond(doc):
            return
        items = get(doc)
        v: Any
        if type(items) is Missing:
            v = items
        elif items is None:
            v = None
        elif type(items) is not list:
            errors.append(FieldError(target, items, f"each: expected a list, got {type(items).__name__}"))
            return
        else:
            v = []
            ctx = scope.ctx
            for i, item in enumerate(items):
                if keep is not None and not keep(item):
                    continue
                sub: dict[str, Any] = {}
                item_scope = Scope(item, ctx)
                before = len(errors)
                for r in subs:
                    r(item, item_scope, sub, errors)
                if len(errors) > before:
                    for err in errors[before:]:
                        err.field = f"{target}[{i}].{err.field}"
                v.append(sub)
        for fn, total, label in steps:
            if total or (v is not None and type(v) is not Missing):
                try:
                    v = fn(v, scope)
                except Exception as exc:
                    _fail(errors, target, v, label, exc)
                    return
        if type(v) is Missing or (drop and _is_empty(v)):
            return
        setter(out, v)

    return run


def trace_field(
    plan: FieldPlan, doc: Any, scope: Scope, out: dict[str, Any], errors: list[FieldError]
) -> FieldTrace:
    """Run ``plan`` like its runner does, recording every step (slow path, for explanations)."""
    trace = FieldTrace(target=plan.target, source=plan.source)
    if plan.when is not None and not plan.when.test(doc):
        trace.status, trace.reason, trace.raw = (
            "skipped",
            f"when is false: {plan.when.text}",
            MISSING,
        )
        return trace
    raw = plan.get(doc)
    trace.raw = raw
    v: Any = raw
    if plan.each is not None:
        if type(raw) is Missing or raw is None:
            pass
        elif type(raw) is not list:
            reason = f"each: expected a list, got {type(raw).__name__}"
            errors.append(FieldError(plan.target, raw, reason))
            trace.status, trace.reason = "error", reason
            return trace
        else:
            v = []
            for i, item in enumerate(raw):
                if plan.item_filter is not None and not plan.item_filter.test(item):
                    skipped = FieldTrace(target=f"[{i}]", source="filter", raw=item, status="skipped")
                    skipped.reason = f"filter is false: {plan.item_filter.text}"
                    trace.items.append([skipped])
                    continue
                sub: dict[str, Any] = {}
                item_scope = Scope(item, scope.ctx)
                before = len(errors)
                trace.items.append([trace_field(p, item, item_scope, sub, errors) for p in plan.each])
                for err in errors[before:]:
                    err.field = f"{plan.target}[{i}].{err.field}"
                v.append(sub)
    for step in plan.steps:
        if not (step.total or (v is not None and type(v) is not Missing)):
            trace.steps.append(StepTrace(step.label, v, skipped=True))
            continue
        try:
            result = step.fn(v, scope)
        except Exception as exc:
            reason = f"{step.name or step.label}: {str(exc) or type(exc).__name__}"
            trace.steps.append(StepTrace(step.label, v, error=str(exc) or type(exc).__name__))
            errors.append(FieldError(plan.target, v, reason))
            trace.status, trace.reason = "error", reason
            return trace
        trace.steps.append(StepTrace(step.label, v, output=result))
        v = result
    if type(v) is Missing:
        trace.status, trace.reason = "missing", v.reason
        if v is MISSING and raw is MISSING:
            trace.reason = f"{plan.source.removeprefix('each ')} not found in the record"
        return trace
    if plan.drop_if_empty and _is_empty(v):
        trace.status, trace.reason = "dropped", "empty value dropped (drop_if_empty)"
        return trace
    make_setter(plan.keys)(out, v)
    trace.result = v
    return trace

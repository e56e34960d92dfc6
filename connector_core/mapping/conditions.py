"""``when:`` conditions, compiled once into predicates.

A condition is written as data, not as an expression language, so it can be validated without
running it and explained in words: ``{path: $.data.gender, in: [female, male]}``, ``{all: [...]}``,
``{not: {...}}``. A bare path (``when: $.data.phone_number``) means "present and not empty".
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from connector_core.mapping.errors import Missing
from connector_core.mapping.lookups import key_text
from connector_core.mapping.paths import CompiledPath

Predicate = Callable[[Any], bool]
Loc = tuple[str | int, ...]


class ConditionSpec(BaseModel):
    """One condition: ``path`` with at most one test, or one of ``all``/``any``/``not``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    path: str | None = None
    exists: bool | None = None
    empty: bool | None = None
    equals: Any = None
    not_equals: Any = None
    in_: list[Any] | None = Field(default=None, alias="in")
    matches: str | None = None
    all: list[ConditionSpec] | None = None
    any: list[ConditionSpec] | None = None
    not_: ConditionSpec | None = Field(default=None, alias="not")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"path": value}
        return value


_TESTS = ("exists", "empty", "equals", "not_equals", "in_", "matches")
_GROUPS = ("all", "any", "not_")


@dataclass(frozen=True, slots=True)
class CompiledCondition:
    test: Predicate
    text: str
    paths: tuple[CompiledPath, ...]


def _same(a: Any, b: Any) -> bool:
    if a == b and type(a) is type(b):
        return True
    ka, kb = key_text(a), key_text(b)
    return ka is not None and ka == kb


def compile_condition(
    spec: ConditionSpec,
    compile_path: Callable[[str], CompiledPath],
    errors: list[tuple[Loc, str]],
    loc: Loc = (),
) -> CompiledCondition | None:
    """Compile ``spec``; problems are appended to ``errors`` as ``(loc, message)``."""
    fields = spec.model_fields_set
    groups = [g for g in _GROUPS if getattr(spec, g) is not None]
    tests = [t for t in _TESTS if t in fields]
    if groups:
        if len(groups) > 1 or spec.path is not None or tests:
            errors.append((loc, "a condition combines with exactly one of all/any/not, without path"))
            return None
        return _compile_group(spec, groups[0], compile_path, errors, loc)
    if spec.path is None:
        errors.append((loc, "a condition needs 'path' (or all/any/not)"))
        return None
    if len(tests) > 1:
        errors.append((loc, f"one test per condition, got {', '.join(t.rstrip('_') for t in tests)}"))
        return None
    try:
        path = compile_path(spec.path)
    except ValueError as exc:
        errors.append(((*loc, "path"), str(exc)))
        return None
    get = path.get
    test_name = tests[0] if tests else "present"
    text = f"{path.text} is present and not empty"
    test: Predicate
    if test_name == "present":

        def test(doc: Any) -> bool:
            v = get(doc)
            return not (v is None or type(v) is Missing or (type(v) in (str, list, dict) and not v))

    elif test_name == "exists":
        want = bool(spec.exists)
        text = f"{path.text} {'exists' if want else 'is absent'}"

        def test(doc: Any) -> bool:
            return (type(get(doc)) is not Missing) is want

    elif test_name == "empty":
        want = bool(spec.empty)
        text = f"{path.text} {'is empty' if want else 'is not empty'}"

        def test(doc: Any) -> bool:
            v = get(doc)
            is_empty = v is None or type(v) is Missing or (type(v) in (str, list, dict) and not v)
            return is_empty is want

    elif test_name in ("equals", "not_equals", "in_"):
        if test_name == "in_":
            options = list(spec.in_ or [])
        else:
            options = [spec.equals if test_name == "equals" else spec.not_equals]
        negate = test_name == "not_equals"
        text = f"{path.text} {'!=' if negate else ('in' if test_name == 'in_' else '==')} " + (
            repr(options) if test_name == "in_" else repr(options[0])
        )

        def test(doc: Any) -> bool:
            v = get(doc)
            values = v if path.multi and type(v) is list else [v]
            hit = any(_same(x, o) for x in values for o in options)
            return hit is not negate

    else:
        try:
            regex = re.compile(spec.matches or "")
        except re.error as exc:
            errors.append(((*loc, "matches"), f"invalid regular expression: {exc}"))
            return None
        search = regex.search
        text = f"{path.text} matches {regex.pattern!r}"

        def test(doc: Any) -> bool:
            v = get(doc)
            values = v if path.multi and type(v) is list else [v]
            return any(type(x) is str and search(x) is not None for x in values)

    return CompiledCondition(test, text, (path,))


def _compile_group(
    spec: ConditionSpec,
    kind: str,
    compile_path: Callable[[str], CompiledPath],
    errors: list[tuple[Loc, str]],
    loc: Loc,
) -> CompiledCondition | None:
    if kind == "not_":
        assert spec.not_ is not None
        inner = compile_condition(spec.not_, compile_path, errors, (*loc, "not"))
        if inner is None:
            return None
        inner_test = inner.test

        def negated(doc: Any) -> bool:
            return not inner_test(doc)

        return CompiledCondition(negated, f"not ({inner.text})", inner.paths)
    items = spec.all if kind == "all" else spec.any
    assert items is not None
    if not items:
        errors.append(((*loc, kind), f"'{kind}' needs at least one condition"))
        return None
    parts = [compile_condition(item, compile_path, errors, (*loc, kind, i)) for i, item in enumerate(items)]
    if any(p is None for p in parts):
        return None
    compiled = [p for p in parts if p is not None]
    tests = tuple(p.test for p in compiled)
    paths = tuple(path for p in compiled for path in p.paths)
    joiner = " and " if kind == "all" else " or "
    text = joiner.join(f"({p.text})" for p in compiled)
    if kind == "all":

        def every(doc: Any) -> bool:
            return all(t(doc) for t in tests)

        return CompiledCondition(every, text, paths)

    def some(doc: Any) -> bool:
        return any(t(doc) for t in tests)

    return CompiledCondition(some, text, paths)

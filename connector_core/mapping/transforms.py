"""Transforms: what they are, the registry plugins extend, and the built-ins.

A transform is declared once (:class:`TransformDef`) and *built* once per use in a mapping: its
parameters are validated with pydantic and turned into a plain step function ``step(value, scope) ->
value`` at compile time, so regexes, time zones and lookup tables are resolved before the first
record. Each definition declares the value type it accepts and produces (so ``[split, upper]`` is
rejected without data) and whether it is reversible, with its inverse, so a reversible field can be
run backwards for pull.

Steps are null-safe by default: an absent (:class:`~connector_core.mapping.errors.Missing`) or
``None`` value skips the step, unless the transform says it ``handles_missing`` (``default``,
``required``, ...).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, tzinfo
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field

from connector_core.mapping.context import Scope
from connector_core.mapping.errors import MISSING, Missing, ParamError, TransformError
from connector_core.mapping.lookups import LookupTable, key_text, load_table_file
from connector_core.mapping.paths import CompiledPath

ValueType = Literal["any", "str", "int", "float", "number", "bool", "list", "dict"]
VALUE_TYPES: tuple[str, ...] = ("any", "str", "int", "float", "number", "bool", "list", "dict")

Step = Callable[[Any, Scope], Any]
"""A built transform: ``step(value, scope) -> value``; raise :class:`TransformError` to reject a
value."""


def compatible(actual: str, expected: str) -> bool:
    """Can a value statically typed ``actual`` feed a transform expecting ``expected``?"""
    if actual == "any" or expected == "any" or actual == expected:
        return True
    if expected == "number" and actual in ("int", "float"):
        return True
    return actual == "number" and expected in ("int", "float")


def type_of_constant(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "dict"
    return "any"


@dataclass(frozen=True, slots=True)
class BuildEnv:
    """What a transform may use while it is being built: lookup tables, files, and the path
    compiler.

    ``compile_path`` compiles paths relative to the document the field reads (the item inside
    ``each:``).
    """

    base_dir: Path
    tables: Mapping[str, LookupTable]
    compile_path: Callable[[str], CompiledPath]


Builder = Callable[[Any, BuildEnv], Step]


class Params(BaseModel):
    """Base for transform parameter models: an unknown parameter is a mistake, reported by name."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, arbitrary_types_allowed=True)


@dataclass(frozen=True, slots=True)
class TransformDef:
    """A transform definition, as built-ins declare them and plugins return them from
    ``dcsync_transforms``.

    Give either ``function(value, params) -> value`` (simple) or ``build(params, env) -> step``
    (compile-time factory; the step receives ``(value, scope)``). ``params`` is a pydantic model of
    the parameters (``None``: takes none); ``shorthand`` names the parameter a bare argument fills
    (``{default: 0}``). ``input``/``output`` are value types for the static chain check; ``output``
    may depend on the params. A ``reversible`` transform must provide ``inverse``/``build_inverse``;
    ``check_reversible`` may still veto reversibility for some parameters (a value map that is not
    one-to-one) by returning the reason.
    """

    name: str
    function: Callable[[Any, Any], Any] | None = None
    inverse: Callable[[Any, Any], Any] | None = None
    build: Builder | None = None
    build_inverse: Builder | None = None
    params: type[BaseModel] | None = None
    shorthand: str | None = None
    input: str = "any"
    output: str | Callable[[Any], str] = "any"
    """A value type, or ``"same"`` for transforms that pass their input type through."""
    reversible: bool = False
    check_reversible: Callable[[Any, BuildEnv], str | None] | None = None
    handles_missing: bool = False
    summary: str = ""

    def problems(self) -> list[str]:
        """Why this definition is unusable (empty when it is fine); checked at registration."""
        out: list[str] = []
        if not isinstance(self.name, str) or not re.match(r"^[a-z][a-z0-9_]*$", self.name):
            out.append(f"transform name {self.name!r} must be lower_snake_case")
        if (self.function is None) == (self.build is None):
            out.append(f"transform {self.name!r} needs exactly one of 'function' or 'build'")
        if self.reversible and self.inverse is None and self.build_inverse is None:
            out.append(f"transform {self.name!r} is declared reversible but has no inverse")
        if self.input not in VALUE_TYPES:
            out.append(f"transform {self.name!r}: unknown input type {self.input!r}")
        if isinstance(self.output, str) and self.output not in (*VALUE_TYPES, "same"):
            out.append(f"transform {self.name!r}: unknown output type {self.output!r}")
        if self.shorthand is not None and self.params is None:
            out.append(f"transform {self.name!r} has a shorthand but no params model")
        return out

    def parse_params(self, raw: Any) -> tuple[Any, bool]:
        """Validate ``raw`` into the params model; return ``(params, shorthand_used)``.

        Raises :class:`ParamError` or pydantic's ``ValidationError``; the compiler turns both into
        issues located at the parameter's YAML node.
        """
        if self.params is None:
            if raw is None or raw == {}:
                return None, False
            raise ParamError(f"'{self.name}' takes no parameters")
        wrapped = False
        if raw is None:
            data: Any = {}
        elif isinstance(raw, dict):
            data = raw
            if self.params.model_config.get("extra") != "allow":
                # plugin models may not forbid extras; an unknown parameter is still a typo
                known = _param_names(self.params)
                for key in raw:
                    if key not in known:
                        hint = difflib.get_close_matches(str(key), sorted(known), n=1)
                        did = f" (did you mean {hint[0]!r}?)" if hint else ""
                        raise ParamError(f"unknown key {key!r}{did}", str(key))
        elif self.shorthand is not None:
            data, wrapped = {self.shorthand: raw}, True
        else:
            raise ParamError(f"'{self.name}' parameters must be a mapping of name: value")
        return self.params.model_validate(data), wrapped

    def output_type(self, params: Any) -> str:
        return self.output(params) if callable(self.output) else self.output

    def make_step(self, params: Any, env: BuildEnv) -> Step:
        if self.build is not None:
            return self.build(params, env)
        assert self.function is not None
        return _wrap(self.function, params)

    def make_inverse(self, params: Any, env: BuildEnv) -> Step | None:
        if self.build_inverse is not None:
            return self.build_inverse(params, env)
        if self.inverse is not None:
            return _wrap(self.inverse, params)
        return None

    def irreversible_reason(self, params: Any, env: BuildEnv) -> str | None:
        if not self.reversible:
            return f"'{self.name}' is not reversible"
        if self.check_reversible is not None:
            return self.check_reversible(params, env)
        return None


def _wrap(function: Callable[[Any, Any], Any], params: Any) -> Step:
    def step(value: Any, scope: Scope) -> Any:
        return function(value, params)

    return step


def _param_names(model: type[BaseModel]) -> set[str]:
    names: set[str] = set()
    for name, info in model.model_fields.items():
        names.add(name)
        if info.alias:
            names.add(info.alias)
    return names


class RegistryError(ValueError):
    """A transform definition that cannot be registered (bad shape, or a name already taken)."""


class TransformRegistry:
    """Transforms by name. One default registry holds the built-ins plus what plugins register."""

    def __init__(self, defs: Iterable[TransformDef] = ()):
        self._defs: dict[str, TransformDef] = {}
        for d in defs:
            self.register(d)

    def register(self, definition: TransformDef | Mapping[str, Any], *, replace: bool = False) -> None:
        d = definition if isinstance(definition, TransformDef) else _def_from_mapping(definition)
        problems = d.problems()
        if problems:
            raise RegistryError("; ".join(problems))
        if d.name in self._defs and not replace:
            raise RegistryError(f"transform {d.name!r} is already registered")
        self._defs[d.name] = d

    def get(self, name: str) -> TransformDef | None:
        return self._defs.get(name)

    def names(self) -> list[str]:
        return sorted(self._defs)

    def suggest(self, name: str) -> str | None:
        found = difflib.get_close_matches(name, self._defs.keys(), n=1, cutoff=0.6)
        return found[0] if found else None

    def copy(self) -> TransformRegistry:
        clone = TransformRegistry()
        clone._defs = dict(self._defs)
        return clone

    def __contains__(self, name: object) -> bool:
        return name in self._defs

    def __iter__(self) -> Any:
        return iter(self._defs.values())


def _def_from_mapping(raw: Mapping[str, Any]) -> TransformDef:
    try:
        return TransformDef(**dict(raw))
    except TypeError as exc:
        raise RegistryError(f"not a transform definition: {exc}") from None


# --------------------------------------------------------------------------------------------------
# Built-ins. Each section: params model, builder(s), definition.
# --------------------------------------------------------------------------------------------------


def _is_empty(value: Any) -> bool:
    return value is None or type(value) is Missing or (type(value) in (str, list, dict) and not value)


def _expect_str(name: str, value: Any) -> str:
    if type(value) is str:
        return value
    raise TransformError(f"{name} expects text, got {type(value).__name__}")


# ---- type coercion -------------------------------------------------------------------------------


class PullAsParams(Params):
    pull_as: Literal["same", "str"] = "same"


def to_int(value: Any) -> int:
    kind = type(value)
    if kind is int:
        return value  # type: ignore[no-any-return]
    if kind is bool:
        raise TransformError(f"not an integer: {value!r}")
    if kind is float:
        if value.is_integer():
            return int(value)
        raise TransformError(f"not a whole number: {value!r}")
    if kind is str:
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            pass
        try:
            number = float(text)
        except ValueError:
            raise TransformError(f"not an integer: {value!r}") from None
        if number.is_integer():
            return int(number)
        raise TransformError(f"not a whole number: {value!r}")
    raise TransformError(f"not an integer: {value!r}")


def to_float(value: Any) -> float:
    kind = type(value)
    if kind is float:
        return value  # type: ignore[no-any-return]
    if kind is int:
        return float(value)
    if kind is str:
        try:
            return float(value.strip())
        except ValueError:
            raise TransformError(f"not a number: {value!r}") from None
    raise TransformError(f"not a number: {value!r}")


def to_str(value: Any) -> str:
    kind = type(value)
    if kind is str:
        return value  # type: ignore[no-any-return]
    if kind is bool:
        return "true" if value else "false"
    if kind is int or kind is float:
        return str(value)
    if kind is dict or kind is list:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return str(value)


def _build_int(p: PullAsParams, env: BuildEnv) -> Step:
    def step(value: Any, scope: Scope) -> Any:
        return to_int(value)

    return step


def _build_float(p: PullAsParams, env: BuildEnv) -> Step:
    def step(value: Any, scope: Scope) -> Any:
        return to_float(value)

    return step


def _build_number_inverse(p: PullAsParams, env: BuildEnv) -> Step:
    if p.pull_as == "str":

        def as_text(value: Any, scope: Scope) -> Any:
            return to_str(value)

        return as_text

    def same(value: Any, scope: Scope) -> Any:
        return value

    return same


def _build_str(p: None, env: BuildEnv) -> Step:
    def step(value: Any, scope: Scope) -> Any:
        return to_str(value)

    return step


class BoolParams(Params):
    true_values: list[Any] = Field(default_factory=lambda: ["yes", "y", "true", "1", "on"])
    false_values: list[Any] = Field(default_factory=lambda: ["no", "n", "false", "0", "off"])
    pull_as: list[Any] | None = Field(
        default=None, description="[true-value, false-value] written back on pull; default booleans"
    )


def _build_bool(p: BoolParams, env: BuildEnv) -> Step:
    trues = {k for k in (key_text(v, True) for v in p.true_values) if k is not None}
    falses = {k for k in (key_text(v, True) for v in p.false_values) if k is not None}
    if trues & falses:
        raise ParamError(f"values both true and false: {sorted(trues & falses)}", "true_values")

    def step(value: Any, scope: Scope) -> Any:
        if value is True or value is False:
            return value
        text = key_text(value.strip() if type(value) is str else value, True)
        if text in trues:
            return True
        if text in falses:
            return False
        raise TransformError(f"not a yes/no value: {value!r}")

    return step


def _build_bool_inverse(p: BoolParams, env: BuildEnv) -> Step:
    if p.pull_as is not None and len(p.pull_as) != 2:
        raise ParamError("pull_as needs exactly two values: [when true, when false]", "pull_as")
    true_out, false_out = (p.pull_as[0], p.pull_as[1]) if p.pull_as else (True, False)

    def step(value: Any, scope: Scope) -> Any:
        if value is True:
            return true_out
        if value is False:
            return false_out
        raise TransformError(f"expected a boolean, got {value!r}")

    return step


# ---- dates and times -----------------------------------------------------------------------------


def _zone(name: str | None, param: str) -> tzinfo | None:
    if name is None:
        return None
    if name.upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ParamError(f"unknown time zone {name!r}", param) from None


def _parser(formats: list[str] | None) -> Callable[[Any], datetime]:
    """Parse ISO-8601 (DataCollect), ``YYYY-MM-DD HH:MM:SS`` (Odoo), bare dates, or ``formats``."""

    def parse(value: Any) -> datetime:
        if type(value) is not str:
            if isinstance(value, datetime):
                return value
            if isinstance(value, date):
                return datetime(value.year, value.month, value.day)
            raise TransformError(f"not a date: {value!r}")
        text = value.strip()
        if formats:
            for fmt in formats:
                try:
                    return datetime.strptime(text, fmt)
                except ValueError:
                    continue
            raise TransformError(f"not a date in {' or '.join(formats)}: {value!r}")
        try:
            return datetime.fromisoformat(text)
        except ValueError:
            raise TransformError(f"not an ISO-8601 date: {value!r}") from None

    return parse


DATACOLLECT_MIDNIGHT = "%Y-%m-%dT00:00:00.000Z"


class DateParams(Params):
    format: str = "%Y-%m-%d"
    input_formats: list[str] | None = None
    tz: str | None = Field(default=None, description="take the date in this zone (aware inputs only)")
    pull_format: str | None = Field(
        default=None, description="format written back on pull; default first input format or ISO"
    )


def _build_date(p: DateParams, env: BuildEnv) -> Step:
    parse = _parser(p.input_formats)
    zone = _zone(p.tz, "tz")
    fmt = p.format
    iso = fmt == "%Y-%m-%d"

    def step(value: Any, scope: Scope) -> Any:
        dt = parse(value)
        if zone is not None and dt.tzinfo is not None:
            dt = dt.astimezone(zone)
        return dt.date().isoformat() if iso else dt.strftime(fmt)

    return step


def _build_date_inverse(p: DateParams, env: BuildEnv) -> Step:
    fmt = p.format
    out = p.pull_format or (p.input_formats[0] if p.input_formats else DATACOLLECT_MIDNIGHT)

    def step(value: Any, scope: Scope) -> Any:
        if type(value) is not str:
            raise TransformError(f"not a date: {value!r}")
        try:
            dt = datetime.strptime(value, fmt)
        except ValueError:
            raise TransformError(f"not a date in {fmt}: {value!r}") from None
        return dt.strftime(out)

    return step


class DateTimeParams(Params):
    format: str = Field(default="iso", description="'iso' (DataCollect), 'odoo' or a strftime format")
    input_formats: list[str] | None = None
    tz: str = Field(default="UTC", description="zone the output is written in")
    assume_tz: str = Field(default="UTC", description="zone of inputs without an offset")
    pull_format: str = "iso"


def _render(dt: datetime, fmt: str) -> str:
    if fmt == "iso":
        if dt.utcoffset() == UTC.utcoffset(None):
            return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"
        return dt.isoformat(timespec="milliseconds")
    if fmt == "odoo":
        return dt.strftime("%Y-%m-%d %H:%M:%S")
    return dt.strftime(fmt)


def _build_datetime(p: DateTimeParams, env: BuildEnv) -> Step:
    parse = _parser(p.input_formats)
    zone = _zone(p.tz, "tz") or UTC
    assume = _zone(p.assume_tz, "assume_tz") or UTC
    fmt = p.format

    def step(value: Any, scope: Scope) -> Any:
        dt = parse(value)
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=assume)
        return _render(dt.astimezone(zone), fmt)

    return step


def _build_datetime_inverse(p: DateTimeParams, env: BuildEnv) -> Step:
    zone = _zone(p.tz, "tz") or UTC
    fmt = p.format
    parse = _parser(None if fmt in ("iso", "odoo") else [fmt])
    out = p.pull_format

    def step(value: Any, scope: Scope) -> Any:
        dt = parse(value)
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=zone)
        return _render(dt.astimezone(UTC), out)

    return step


# ---- presence ------------------------------------------------------------------------------------


class DefaultParams(Params):
    value: Any
    on_empty: bool = Field(default=True, description="also replace empty text")


def _build_default(p: DefaultParams, env: BuildEnv) -> Step:
    fallback, on_empty = p.value, p.on_empty

    def step(value: Any, scope: Scope) -> Any:
        if value is None or type(value) is Missing or (on_empty and value == ""):
            return fallback
        return value

    return step


def _build_default_inverse(p: DefaultParams, env: BuildEnv) -> Step:
    fallback = p.value

    def step(value: Any, scope: Scope) -> Any:
        if type(value) is type(fallback) and value == fallback:
            return Missing(f"equals the default {fallback!r}")
        return value

    return step


class RequiredParams(Params):
    message: str | None = None
    allow_empty: bool = False


def _build_required(p: RequiredParams, env: BuildEnv) -> Step:
    message, allow_empty = p.message, p.allow_empty

    def step(value: Any, scope: Scope) -> Any:
        if type(value) is Missing:
            raise TransformError(message or f"required value is missing ({value.reason})")
        if value is None or (not allow_empty and type(value) in (str, list, dict) and not value):
            raise TransformError(message or "required value is empty")
        return value

    return step


def _build_drop_if_empty(p: None, env: BuildEnv) -> Step:
    def step(value: Any, scope: Scope) -> Any:
        if _is_empty(value):
            return value if type(value) is Missing else Missing("empty value dropped")
        return value

    return step


class NullIfParams(Params):
    values: list[Any]


def _build_null_if(p: NullIfParams, env: BuildEnv) -> Step:
    values = list(p.values)

    def step(value: Any, scope: Scope) -> Any:
        for candidate in values:
            if type(candidate) is type(value) and candidate == value:
                return None
        return value

    return step


# ---- value maps and lookup tables ----------------------------------------------------------------


class MapParams(Params):
    values: dict[str, Any]
    fallback: Any = None
    passthrough: bool = Field(default=False, description="unknown values pass through unchanged")
    ignore_case: bool = False


class LookupParams(Params):
    table: str | None = None
    file: str | None = None
    key: str | None = Field(default=None, description="CSV key column (default: first)")
    value: str | None = Field(default=None, description="CSV value column (default: second)")
    fallback: Any = None
    passthrough: bool | None = None
    ignore_case: bool = False


@dataclass(slots=True)
class _Table:
    values: dict[str, Any]
    originals: dict[str, Any]
    has_fallback: bool
    fallback: Any
    passthrough: bool
    ignore_case: bool
    label: str


def _map_table(p: MapParams, env: BuildEnv) -> _Table:
    values: dict[str, Any] = {}
    originals: dict[str, Any] = {}
    for key, value in p.values.items():
        text = key_text(key, p.ignore_case)
        assert text is not None
        values[text] = value
        originals[text] = key
    return _Table(
        values,
        originals,
        "fallback" in p.model_fields_set,
        p.fallback,
        p.passthrough,
        p.ignore_case,
        "map",
    )


def _lookup_table(p: LookupParams, env: BuildEnv) -> _Table:
    if (p.table is None) == (p.file is None):
        raise ParamError("lookup needs exactly one of 'table' (a name under lookups:) or 'file'")
    if p.table is not None:
        table = env.tables.get(p.table)
        if table is None:
            known = ", ".join(sorted(env.tables)) or "none declared"
            hint = difflib.get_close_matches(p.table, list(env.tables), n=1)
            did = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ParamError(f"unknown lookup table {p.table!r}{did}; tables: {known}", "table")
    else:
        assert p.file is not None
        table = load_table_file(p.file, p.file, env.base_dir, p.key, p.value)
    values = {key_text(k, p.ignore_case) or k: v for k, v in table.values.items()}
    originals = {key_text(k, p.ignore_case) or k: table.original_keys.get(k, k) for k in table.values}
    has_fallback = "fallback" in p.model_fields_set or table.has_fallback
    fallback = p.fallback if "fallback" in p.model_fields_set else table.fallback
    passthrough = table.passthrough if p.passthrough is None else p.passthrough
    return _Table(values, originals, has_fallback, fallback, passthrough, p.ignore_case, table.name)


def table_outputs(name: str, params: Any, env: BuildEnv) -> tuple[Any, ...] | None:
    """The values a bound ``map`` or ``lookup`` can produce (its table's, and its fallback); ``None`` for
    other transforms. What a check against the remote's schema compares with the values it accepts."""
    if name == "map":
        table = _map_table(params, env)
    elif name == "lookup":
        table = _lookup_table(params, env)
    else:
        return None
    values = list(table.values.values())
    if table.has_fallback:
        values.append(table.fallback)
    return tuple(dict.fromkeys(v for v in values if v is not None and not isinstance(v, list | dict)))


def _table_step(t: _Table) -> Step:
    values, ignore_case = t.values, t.ignore_case
    has_fallback, fallback, passthrough, label = t.has_fallback, t.fallback, t.passthrough, t.label

    def step(value: Any, scope: Scope) -> Any:
        if type(value) is str and not ignore_case:
            found = values.get(value, MISSING)
        else:
            text = key_text(value, ignore_case)
            found = MISSING if text is None else values.get(text, MISSING)
        if found is not MISSING:
            return found
        if has_fallback:
            return fallback
        if passthrough:
            return value
        raise TransformError(f"{value!r} is not in {label} and no fallback is declared")

    return step


def _inverse_table(t: _Table) -> dict[str, Any]:
    inverse: dict[str, Any] = {}
    for key, value in t.values.items():
        text = key_text(value, t.ignore_case)
        if text is not None:
            inverse.setdefault(text, t.originals.get(key, key))
    return inverse


def _table_inverse_step(t: _Table) -> Step:
    inverse, ignore_case, passthrough, label = (
        _inverse_table(t),
        t.ignore_case,
        t.passthrough,
        t.label,
    )

    def step(value: Any, scope: Scope) -> Any:
        text = key_text(value, ignore_case)
        found = MISSING if text is None else inverse.get(text, MISSING)
        if found is not MISSING:
            return found
        if passthrough:
            return value
        raise TransformError(f"{value!r} is not a value of {label}, so it cannot be mapped back")

    return step


def _table_irreversible(t: _Table) -> str | None:
    if t.has_fallback:
        return f"{t.label} declares a fallback, so different inputs give the same output"
    seen: dict[str, Any] = {}
    for key, value in t.values.items():
        text = key_text(value, t.ignore_case)
        if text is None:
            return f"{t.label} maps {t.originals.get(key, key)!r} to a list or mapping"
        if text in seen:
            return (
                f"{t.label} is not one-to-one: {seen[text]!r} and {t.originals.get(key, key)!r} "
                f"both map to {value!r}"
            )
        seen[text] = t.originals.get(key, key)
    return None


# ---- text ----------------------------------------------------------------------------------------


def _simple_str(name: str, op: Callable[[str], str]) -> Builder:
    def build(p: Any, env: BuildEnv) -> Step:
        def step(value: Any, scope: Scope) -> Any:
            if type(value) is str:
                return op(value)
            raise TransformError(f"{name} expects text, got {type(value).__name__}")

        return step

    return build


class TrimParams(Params):
    chars: str | None = Field(default=None, description="characters to strip (default whitespace)")
    collapse: bool = Field(default=False, description="also turn inner runs of whitespace into one")


_WHITESPACE_RUN = re.compile(r"\s+")


def _build_trim(p: TrimParams, env: BuildEnv) -> Step:
    chars, collapse = p.chars, p.collapse
    squeeze = _WHITESPACE_RUN.sub

    def step(value: Any, scope: Scope) -> Any:
        text = _expect_str("trim", value).strip(chars)
        return squeeze(" ", text) if collapse else text

    return step


def _identity_step(p: Any, env: BuildEnv) -> Step:
    def step(value: Any, scope: Scope) -> Any:
        return value

    return step


class SplitParams(Params):
    sep: str = ","
    trim: bool = True
    drop_empty: bool = True
    maxsplit: int = -1


def _build_split(p: SplitParams, env: BuildEnv) -> Step:
    if p.sep == "":
        raise ParamError("sep must not be empty", "sep")
    sep, trim, drop, maxsplit = p.sep, p.trim, p.drop_empty, p.maxsplit

    def step(value: Any, scope: Scope) -> Any:
        parts = _expect_str("split", value).split(sep, maxsplit)
        if trim:
            parts = [part.strip() for part in parts]
        if drop:
            parts = [part for part in parts if part]
        return parts

    return step


def _build_split_inverse(p: SplitParams, env: BuildEnv) -> Step:
    sep = p.sep

    def step(value: Any, scope: Scope) -> Any:
        if type(value) is not list:
            raise TransformError(f"expected a list, got {type(value).__name__}")
        return sep.join(to_str(v) for v in value if v is not None)

    return step


class JoinParams(Params):
    sep: str = ","
    skip_empty: bool = True


def _build_join(p: JoinParams, env: BuildEnv) -> Step:
    sep, skip = p.sep, p.skip_empty

    def step(value: Any, scope: Scope) -> Any:
        if type(value) is not list:
            raise TransformError(f"join expects a list, got {type(value).__name__}")
        return sep.join(to_str(v) for v in value if not (skip and _is_empty(v)))

    return step


def _build_join_inverse(p: JoinParams, env: BuildEnv) -> Step:
    sep = p.sep

    def step(value: Any, scope: Scope) -> Any:
        text = _expect_str("join (pull)", value)
        return text.split(sep) if text else []

    return step


class ConcatParams(Params):
    with_: list[Any] = Field(alias="with", description="paths ($...) or literal text appended in order")
    sep: str = ""
    skip_empty: bool = True


def _build_concat(p: ConcatParams, env: BuildEnv) -> Step:
    parts: list[tuple[bool, Any]] = []
    for item in p.with_:
        if isinstance(item, str) and item.startswith("$"):
            try:
                parts.append((True, env.compile_path(item).get))
            except ValueError as exc:
                raise ParamError(str(exc), "with") from None
        else:
            parts.append((False, item))
    sep, skip = p.sep, p.skip_empty

    def step(value: Any, scope: Scope) -> Any:
        pieces = [value]
        for is_path, part in parts:
            pieces.append(part(scope.doc) if is_path else part)
        kept = [to_str(v) for v in pieces if not (_is_empty(v) if skip else type(v) is Missing)]
        if not kept:
            return Missing("every part is empty")
        return sep.join(kept)

    return step


class RegexExtractParams(Params):
    pattern: str
    group: int | str | None = Field(default=None, description="default: 1 if the pattern has a group")
    ignore_case: bool = False
    on_no_match: Literal["missing", "error", "keep"] = "missing"


def _compile_regex(pattern: str, ignore_case: bool) -> re.Pattern[str]:
    try:
        return re.compile(pattern, re.IGNORECASE if ignore_case else 0)
    except re.error as exc:
        raise ParamError(f"invalid regular expression: {exc}", "pattern") from None


def _build_regex_extract(p: RegexExtractParams, env: BuildEnv) -> Step:
    regex = _compile_regex(p.pattern, p.ignore_case)
    group = p.group if p.group is not None else (1 if regex.groups else 0)
    if isinstance(group, int) and group > regex.groups:
        raise ParamError(f"pattern has {regex.groups} group(s), not {group}", "group")
    if isinstance(group, str) and group not in regex.groupindex:
        raise ParamError(f"pattern has no group named {group!r}", "group")
    mode, search = p.on_no_match, regex.search

    def step(value: Any, scope: Scope) -> Any:
        m = search(_expect_str("regex_extract", value))
        if m is not None:
            return m.group(group)
        if mode == "keep":
            return value
        if mode == "error":
            raise TransformError(f"{value!r} does not match {regex.pattern!r}")
        return Missing(f"no match for {regex.pattern!r}")

    return step


class RegexReplaceParams(Params):
    pattern: str
    replace: str = ""
    count: int = 0
    ignore_case: bool = False


def _build_regex_replace(p: RegexReplaceParams, env: BuildEnv) -> Step:
    regex = _compile_regex(p.pattern, p.ignore_case)
    try:
        regex.sub(p.replace, "")
    except (re.error, IndexError) as exc:
        raise ParamError(f"invalid replacement: {exc}", "replace") from None
    sub, replace, count = regex.sub, p.replace, p.count

    def step(value: Any, scope: Scope) -> Any:
        return sub(replace, _expect_str("regex_replace", value), count=count)

    return step


class HashParams(Params):
    algorithm: str = "sha256"
    salt: str = ""


def _build_hash(p: HashParams, env: BuildEnv) -> Step:
    if p.algorithm not in hashlib.algorithms_guaranteed:
        raise ParamError(f"unknown hash algorithm {p.algorithm!r}", "algorithm")
    algorithm, salt = p.algorithm, p.salt.encode()

    def step(value: Any, scope: Scope) -> Any:
        return hashlib.new(algorithm, salt + to_str(value).encode()).hexdigest()

    return step


def _build_first(p: None, env: BuildEnv) -> Step:
    def step(value: Any, scope: Scope) -> Any:
        if type(value) is not list:
            return value
        return value[0] if value else Missing("empty list")

    return step


# ---- location ------------------------------------------------------------------------------------


class CoordsParams(Params):
    part: Literal["latitude", "longitude"] | None = None
    key: str = Field(default="coords", description="object holding latitude/longitude")


def _coordinate(value: Any, name: str) -> float | None:
    if value is None or value is False or value == "":
        return None  # OpenSPP sends false for an empty coordinate
    if type(value) is bool:
        raise TransformError(f"{name} is not a number: {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TransformError(f"{name} is not a number: {value!r}") from None


def _build_coords(p: CoordsParams, env: BuildEnv) -> Step:
    key, part = p.key, p.part

    def step(value: Any, scope: Scope) -> Any:
        if type(value) is str:
            text = value.strip()
            if not text:
                return Missing("empty location")
            try:
                obj = json.loads(text)
            except ValueError:
                raise TransformError(f"location is not JSON: {value!r}") from None
        elif type(value) is dict:
            obj = value
        else:
            raise TransformError(f"location must be a JSON string or object, got {value!r}")
        if not isinstance(obj, dict):
            raise TransformError(f"location is not an object: {value!r}")
        inner = obj.get(key)
        if not isinstance(inner, dict):
            if "latitude" in obj or "longitude" in obj:
                inner = obj
            else:
                raise TransformError(f"location has no {key!r} object: {value!r}")
        lat = _coordinate(inner.get("latitude"), "latitude")
        lon = _coordinate(inner.get("longitude"), "longitude")
        if part == "latitude":
            return lat if lat is not None else Missing("location has no latitude")
        if part == "longitude":
            return lon if lon is not None else Missing("location has no longitude")
        if lat is None and lon is None:
            return Missing("location has no coordinates")
        return {"latitude": lat, "longitude": lon}

    return step


def _build_coords_inverse(p: CoordsParams, env: BuildEnv) -> Step:
    key = p.key

    def step(value: Any, scope: Scope) -> Any:
        if type(value) is not dict:
            raise TransformError(f"expected {{latitude, longitude}}, got {value!r}")
        inner = {"latitude": value.get("latitude"), "longitude": value.get("longitude")}
        return json.dumps({key: inner}, separators=(",", ":"))

    return step


def _coords_output(p: CoordsParams) -> str:
    return "float" if p.part else "dict"


def _coords_irreversible(p: CoordsParams, env: BuildEnv) -> str | None:
    if p.part:
        return "coords with 'part' keeps one coordinate, so the location cannot be rebuilt"
    return None


# ---- links between entities ----------------------------------------------------------------------


class LinkParams(Params):
    entity: str | None = Field(default=None, description="entity name of the linked entity (for pull)")


class ResolveParams(Params):
    entity: str | None = None


def _build_link(p: LinkParams | ResolveParams, env: BuildEnv) -> Step:
    def step(value: Any, scope: Scope) -> Any:
        guid = to_str(value)
        external = scope.ctx.link(guid)
        if external is None:
            return Missing(f"no external id held for entity {guid}")
        return external

    return step


def _build_resolve(p: LinkParams | ResolveParams, env: BuildEnv) -> Step:
    entity = p.entity

    def step(value: Any, scope: Scope) -> Any:
        external = to_str(value)
        guid = scope.ctx.resolve(external, entity)
        if guid is None:
            return Missing(f"no local {entity or 'entity'} for external id {external}")
        return guid

    return step


def _link_irreversible(p: LinkParams, env: BuildEnv) -> str | None:
    if p.entity is None:
        return "link needs 'entity' (the linked entity's name) to resolve external ids on pull"
    return None


def builtin_transforms() -> list[TransformDef]:
    """The transforms every mapping can use (see docs/mapping.md for each one's parameters)."""
    return [
        TransformDef("str", build=_build_str, output="str", summary="to text (booleans as true/false)"),
        TransformDef(
            "int",
            build=_build_int,
            build_inverse=_build_number_inverse,
            params=PullAsParams,
            output="int",
            reversible=True,
            summary="to a whole number ('4', 4.0 -> 4)",
        ),
        TransformDef(
            "float",
            build=_build_float,
            build_inverse=_build_number_inverse,
            params=PullAsParams,
            output="float",
            reversible=True,
            summary="to a number",
        ),
        TransformDef(
            "bool",
            build=_build_bool,
            build_inverse=_build_bool_inverse,
            params=BoolParams,
            output="bool",
            reversible=True,
            summary="yes/no answers to booleans",
        ),
        TransformDef(
            "date",
            build=_build_date,
            build_inverse=_build_date_inverse,
            params=DateParams,
            shorthand="format",
            output="str",
            reversible=True,
            summary="a timestamp or date to a date in 'format'",
        ),
        TransformDef(
            "datetime",
            build=_build_datetime,
            build_inverse=_build_datetime_inverse,
            params=DateTimeParams,
            shorthand="format",
            output="str",
            reversible=True,
            summary="a timestamp re-written in 'format' and zone 'tz'",
        ),
        TransformDef(
            "default",
            build=_build_default,
            build_inverse=_build_default_inverse,
            params=DefaultParams,
            shorthand="value",
            reversible=True,
            handles_missing=True,
            output="same",
            summary="a value for a missing/null input",
        ),
        TransformDef(
            "required",
            build=_build_required,
            build_inverse=_build_required,
            params=RequiredParams,
            shorthand="message",
            reversible=True,
            handles_missing=True,
            output="same",
            summary="fail the record when the value is missing or empty",
        ),
        TransformDef(
            "drop_if_empty",
            build=_build_drop_if_empty,
            build_inverse=_build_drop_if_empty,
            reversible=True,
            handles_missing=True,
            output="same",
            summary="omit the field when the value is null, '' , [] or {}",
        ),
        TransformDef(
            "null_if",
            build=_build_null_if,
            params=NullIfParams,
            shorthand="values",
            output="same",
            summary="turn sentinel values (false, 'N/A') into null",
        ),
        TransformDef(
            "map",
            build=lambda p, env: _table_step(_map_table(p, env)),
            build_inverse=lambda p, env: _table_inverse_step(_map_table(p, env)),
            params=MapParams,
            reversible=True,
            check_reversible=lambda p, env: _table_irreversible(_map_table(p, env)),
            summary="inline value map",
        ),
        TransformDef(
            "lookup",
            build=lambda p, env: _table_step(_lookup_table(p, env)),
            build_inverse=lambda p, env: _table_inverse_step(_lookup_table(p, env)),
            params=LookupParams,
            shorthand="table",
            reversible=True,
            check_reversible=lambda p, env: _table_irreversible(_lookup_table(p, env)),
            summary="lookup in a named table or a CSV/YAML file",
        ),
        TransformDef(
            "upper",
            build=_simple_str("upper", str.upper),
            input="str",
            output="str",
            summary="UPPER CASE",
        ),
        TransformDef(
            "lower",
            build=_simple_str("lower", str.lower),
            input="str",
            output="str",
            summary="lower case",
        ),
        TransformDef(
            "title",
            build=_simple_str("title", str.title),
            input="str",
            output="str",
            summary="Title Case",
        ),
        TransformDef(
            "trim",
            build=_build_trim,
            build_inverse=_identity_step,
            params=TrimParams,
            shorthand="chars",
            input="str",
            output="str",
            reversible=True,
            summary="strip surrounding whitespace (normalises; pull keeps the trimmed text)",
        ),
        TransformDef(
            "split",
            build=_build_split,
            build_inverse=_build_split_inverse,
            params=SplitParams,
            shorthand="sep",
            input="str",
            output="list",
            reversible=True,
            summary="text to a list",
        ),
        TransformDef(
            "join",
            build=_build_join,
            build_inverse=_build_join_inverse,
            params=JoinParams,
            shorthand="sep",
            input="list",
            output="str",
            reversible=True,
            summary="a list to text",
        ),
        TransformDef(
            "concat",
            build=_build_concat,
            params=ConcatParams,
            shorthand="with",
            output="str",
            handles_missing=True,
            summary="append other paths/literals to the value",
        ),
        TransformDef(
            "regex_extract",
            build=_build_regex_extract,
            params=RegexExtractParams,
            shorthand="pattern",
            input="str",
            output="str",
            summary="the first match (or a group) of a pattern",
        ),
        TransformDef(
            "regex_replace",
            build=_build_regex_replace,
            params=RegexReplaceParams,
            input="str",
            output="str",
            summary="replace every match of a pattern",
        ),
        TransformDef(
            "coords",
            build=_build_coords,
            build_inverse=_build_coords_inverse,
            params=CoordsParams,
            shorthand="part",
            output=_coords_output,
            reversible=True,
            check_reversible=_coords_irreversible,
            summary="DataCollect location_gps JSON to {latitude, longitude}",
        ),
        TransformDef(
            "link",
            build=_build_link,
            build_inverse=_build_resolve,
            params=LinkParams,
            shorthand="entity",
            output="str",
            reversible=True,
            check_reversible=_link_irreversible,
            summary="an entity guid to the external id the connector holds for it",
        ),
        TransformDef(
            "resolve",
            build=_build_resolve,
            build_inverse=_build_link,
            params=ResolveParams,
            shorthand="entity",
            output="str",
            reversible=True,
            summary="an external id to the local entity guid",
        ),
        TransformDef(
            "hash",
            build=_build_hash,
            params=HashParams,
            shorthand="algorithm",
            output="str",
            summary="one-way hash (for identifiers that must not leave in clear)",
        ),
        TransformDef(
            "first",
            build=_build_first,
            output="any",
            summary="first element of a list (e.g. of a filter's matches)",
        ),
    ]


_DEFAULT = TransformRegistry(builtin_transforms())


def default_registry() -> TransformRegistry:
    """The process-wide registry: built-ins plus whatever plugins registered."""
    return _DEFAULT


def register_transforms(
    defs: Iterable[TransformDef | Mapping[str, Any]] | None,
    *,
    registry: TransformRegistry | None = None,
) -> list[str]:
    """Register what ``dcsync_transforms()`` hooks returned; return the problems (one line each).

    A bad definition is skipped and reported, so one broken plugin cannot stop the others'
    transforms.
    """
    target = registry or _DEFAULT
    problems: list[str] = []
    for d in defs or ():
        try:
            definition = d if isinstance(d, TransformDef) else _def_from_mapping(d)
            if target.get(definition.name) == definition:
                continue  # the same plugin loaded again (another project opened in this process)
            target.register(definition)
        except (RegistryError, TypeError, ValueError) as exc:
            problems.append(str(exc))
    return problems


@dataclass(frozen=True, slots=True)
class BoundTransform:
    """One use of a transform in a field: the built step, its inverse and a label for explain."""

    definition: TransformDef
    params: Any
    label: str
    step: Step
    inverse: Step | None = None
    handles_missing: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def describe_params(raw: Any) -> str:
    """Compact text of the parameters as written, for explanations."""
    if raw is None:
        return ""
    return json.dumps(raw, ensure_ascii=False, separators=(", ", ": "), default=str)


__all__ = [
    "VALUE_TYPES",
    "BoundTransform",
    "BuildEnv",
    "Params",
    "RegistryError",
    "Step",
    "TransformDef",
    "TransformRegistry",
    "ValueType",
    "builtin_transforms",
    "compatible",
    "default_registry",
    "register_transforms",
]

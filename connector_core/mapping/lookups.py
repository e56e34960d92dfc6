"""Lookup tables for ``map``/``lookup``: inline, or loaded once from a CSV or YAML file.

Keys are compared as text (``1``, ``"1"`` and ``1.0`` are the same key) because DataCollect form
answers arrive as strings while YAML turns bare digits into numbers; without this a code table
silently misses.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from connector_core.bounded import BoundedInputError, load_yaml_file
from connector_core.mapping.errors import ParamError


def key_text(value: Any, ignore_case: bool = False) -> str | None:
    """The text a value is looked up by; ``None`` for values that cannot be keys (lists, dicts)."""
    if isinstance(value, str):
        text = value
    elif value is True:
        text = "true"
    elif value is False:
        text = "false"
    elif value is None:
        text = "null"
    elif isinstance(value, float) and value.is_integer():
        text = str(int(value))
    elif isinstance(value, int | float):
        text = str(value)
    else:
        return None
    return text.casefold() if ignore_case else text


@dataclass(slots=True)
class LookupTable:
    """A code table: text key -> value, with the table's own fallback (if declared)."""

    name: str
    values: dict[str, Any]
    source: str = "inline"
    fallback: Any = None
    has_fallback: bool = False
    passthrough: bool = False
    original_keys: dict[str, Any] = field(default_factory=dict)


def table_from_mapping(name: str, raw: Mapping[Any, Any], source: str = "inline") -> LookupTable:
    values: dict[str, Any] = {}
    originals: dict[str, Any] = {}
    for key, value in raw.items():
        text = key_text(key)
        if text is None:
            raise ParamError(f"lookup {name!r}: key {key!r} is not a scalar")
        values[text] = value
        originals[text] = key
    return LookupTable(name=name, values=values, source=source, original_keys=originals)


def load_table_file(
    name: str, file: str, base_dir: Path, key: str | None = None, value: str | None = None
) -> LookupTable:
    """Load a CSV (``key``/``value`` columns, default the first two) or YAML (a mapping) table."""
    path = (base_dir / file) if not Path(file).is_absolute() else Path(file)
    if not path.is_file():
        raise ParamError(f"lookup file not found: {file} (looked in {path.parent})", "file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            return _load_csv(name, path, file, key, value)
        if suffix in (".yaml", ".yml"):
            raw = load_yaml_file(path, "lookup file")
            if not isinstance(raw, Mapping):
                raise ParamError(f"lookup file {file} must hold a mapping of key: value", "file")
            return table_from_mapping(name, raw, source=file)
    except BoundedInputError as exc:
        raise ParamError(f"cannot read lookup file {exc}", "file") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError, csv.Error) as exc:
        raise ParamError(f"cannot read lookup file {file}: {exc}", "file") from None
    raise ParamError(f"lookup file {file} must be .csv, .yaml or .yml", "file")


def _load_csv(name: str, path: Path, file: str, key: str | None, value: str | None) -> LookupTable:
    with path.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        columns = reader.fieldnames or []
        if len(columns) < 2:
            raise ParamError(f"lookup file {file} needs a header with at least two columns", "file")
        key_col = key or columns[0]
        value_col = value or columns[1]
        for col, param in ((key_col, "key"), (value_col, "value")):
            if col not in columns:
                raise ParamError(
                    f"lookup file {file} has no column {col!r} (columns: {', '.join(columns)})",
                    param,
                )
        raw: dict[str, Any] = {}
        for lineno, row in enumerate(reader, start=2):
            k = row.get(key_col)
            if k is None or k == "":
                continue
            if k in raw:
                raise ParamError(f"lookup file {file}:{lineno}: duplicate key {k!r}", "file")
            raw[k] = row.get(value_col)
    return table_from_mapping(name, raw, source=file)

"""JSON for the stores and the wire: orjson where it can, the standard library where it must.

A pushed record is encoded three or four times (event log, request body, link snapshot, merge base) and
decoded twice; with the standard library that was a third of a push run's CPU. orjson does the same work
several times faster. Where it refuses a value the standard library accepts (integers beyond 64 bits,
non-string keys, lone surrogates), the standard library takes over, so nothing that was storable before
stops being storable. One difference is kept on purpose: a non-finite float (``NaN``, ``Infinity``) is
written as ``null``, as JSON has no such numbers and PostgreSQL's ``jsonb`` refuses them; before, SQLite
stored a token no other JSON reader accepts.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import orjson

_stdlib_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _finite(value: Any) -> Any:
    """``value`` with ``NaN``/``Infinity`` as ``null``, as orjson writes them: the standard library would
    write tokens no JSON reader (and no ``jsonb``) accepts, so both paths must agree."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def dumps_bytes(value: Any, *, default: Callable[[Any], Any] | None = None) -> bytes:
    """Compact UTF-8 JSON; ``default`` converts what JSON has no type for (as in :func:`json.dumps`)."""
    try:
        return orjson.dumps(value, default=default)
    except TypeError:  # escaped to ASCII, so even a lone surrogate gives valid bytes
        return json.dumps(_finite(value), separators=(",", ":"), default=default).encode()


def dumps(value: Any, *, default: Callable[[Any], Any] | None = None) -> str:
    """Compact JSON text, non-ASCII kept as is."""
    try:
        return orjson.dumps(value, default=default).decode()
    except TypeError:
        if default is None:
            return _stdlib_dumps(_finite(value))
        return json.dumps(_finite(value), ensure_ascii=False, separators=(",", ":"), default=default)


def loads(text: str | bytes | bytearray | memoryview) -> Any:
    """Parse JSON; tokens only the standard library reads (``NaN`` from an older store) still parse."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text if isinstance(text, str | bytes | bytearray) else bytes(text))

"""Paths compiled once into getters, targets compiled once into setters.

Nearly every path in a real mapping is plain (``$.data.first_name``,
``$.data.document_ids[0].id_type``); those become closures doing dict/list indexing, which is what
makes the engine close to hand-written code. Only an expression that needs JSONPath machinery
(wildcards, filters, slices, recursive descent) is handed to jsonpath-ng, parsed here once, and
returns the list of its matches. Nothing is parsed per record.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from connector_core.mapping.errors import MISSING

Getter = Callable[[Any], Any]
Setter = Callable[[dict[str, Any], Any], None]
Key = str | int

_NAME = re.compile(r"\.([A-Za-z_][A-Za-z0-9_\-]*)")
_INDEX = re.compile(r"\[\s*(-?[0-9]+)\s*\]")
_QUOTED = re.compile(r"""\[\s*(?:'((?:[^'\\]|\\.)*)'|"((?:[^"\\]|\\.)*)")\s*\]""")
_TARGET_PART = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")


class PathSyntaxError(ValueError):
    """A path that neither the plain-path reader nor jsonpath-ng accepts."""


@dataclass(frozen=True, slots=True)
class CompiledPath:
    """A path and its getter.

    ``keys`` is the key sequence of a plain path (``None`` for a JSONPath expression); ``prefix`` is
    the plain part an expression starts with, used by the coverage report to tell which source
    fields it reads. ``multi`` paths return a list of every match.
    """

    text: str
    keys: tuple[Key, ...] | None
    prefix: tuple[Key, ...]
    get: Getter
    multi: bool

    @property
    def plain(self) -> bool:
        return self.keys is not None


def _read_plain(text: str) -> tuple[tuple[Key, ...], bool]:
    """Tokenize the plain prefix of ``text``; return its keys and whether all of it was plain."""
    keys: list[Key] = []
    pos = 1
    while pos < len(text):
        m = _NAME.match(text, pos)
        if m:
            keys.append(m.group(1))
            pos = m.end()
            continue
        m = _INDEX.match(text, pos)
        if m:
            keys.append(int(m.group(1)))
            pos = m.end()
            continue
        m = _QUOTED.match(text, pos)
        if m:
            raw = m.group(1) if m.group(1) is not None else m.group(2)
            keys.append(re.sub(r"\\(.)", r"\1", raw))
            pos = m.end()
            continue
        return tuple(keys), False
    return tuple(keys), True


def compile_path(text: str) -> CompiledPath:
    """Compile ``text`` (starting with ``$``) into a getter; :class:`PathSyntaxError` if invalid."""
    if not isinstance(text, str) or not text.startswith("$"):
        raise PathSyntaxError(f"a path must start with '$', got {text!r}")
    stripped = text.strip()
    keys, plain = _read_plain(stripped)
    if plain:
        return CompiledPath(stripped, keys, keys, plain_getter(keys), multi=False)
    return CompiledPath(stripped, None, keys, _jsonpath_getter(stripped), multi=True)


def _jsonpath_getter(text: str) -> Getter:
    from jsonpath_ng.exceptions import JSONPathError
    from jsonpath_ng.ext import parse

    try:
        expr = parse(text)
    except (
        JSONPathError,
        Exception,
    ) as exc:  # jsonpath-ng raises bare Exception for some lexer errors
        raise PathSyntaxError(f"invalid path {text!r}: {exc}") from None
    find = expr.find

    def get(doc: Any) -> Any:
        try:
            matches = find(doc)
        except Exception:  # a filter comparing incompatible types, etc.: treat as no match
            return MISSING
        if not matches:
            return MISSING
        return [m.value for m in matches]

    return get


def plain_getter(keys: tuple[Key, ...]) -> Getter:
    """A closure doing direct indexing, specialised by length: this is the engine's hot path."""
    if any(type(k) is int for k in keys):
        return _generic_getter(keys)
    n = len(keys)
    if n == 0:
        return _identity
    if n == 1:
        (k0,) = keys

        def get1(doc: Any) -> Any:
            try:
                return doc[k0]
            except (KeyError, TypeError, IndexError):
                return MISSING

        return get1
    if n == 2:
        k0, k1 = keys

        def get2(doc: Any) -> Any:
            try:
                return doc[k0][k1]
            except (KeyError, TypeError, IndexError):
                return MISSING

        return get2
    if n == 3:
        k0, k1, k2 = keys

        def get3(doc: Any) -> Any:
            try:
                return doc[k0][k1][k2]
            except (KeyError, TypeError, IndexError):
                return MISSING

        return get3
    return _generic_getter(keys)


def _identity(doc: Any) -> Any:
    return doc


def _generic_getter(keys: tuple[Key, ...]) -> Getter:
    def get(doc: Any) -> Any:
        cur = doc
        for k in keys:
            if type(k) is int:
                if not isinstance(cur, list):
                    return MISSING
                try:
                    cur = cur[k]
                except IndexError:
                    return MISSING
            else:
                if not isinstance(cur, dict):
                    return MISSING
                try:
                    cur = cur[k]
                except KeyError:
                    return MISSING
        return cur

    return get


def parse_target(text: str) -> tuple[str, ...]:
    """``location.latitude`` -> ``("location", "latitude")``; :class:`PathSyntaxError` if bad."""
    if not isinstance(text, str) or not text:
        raise PathSyntaxError("a target must be a non-empty name")
    parts = tuple(text.split("."))
    for part in parts:
        if not _TARGET_PART.match(part):
            raise PathSyntaxError(
                f"invalid target {text!r}: use dotted names (letters, digits, '_', '-') "
                "such as 'location.latitude'"
            )
    return parts


def make_setter(keys: tuple[str, ...]) -> Setter:
    """A closure writing a value at ``keys``, creating the nested dicts on the way."""
    n = len(keys)
    if n == 1:
        (k0,) = keys

        def set1(out: dict[str, Any], value: Any) -> None:
            out[k0] = value

        return set1
    if n == 2:
        k0, k1 = keys

        def set2(out: dict[str, Any], value: Any) -> None:
            inner = out.get(k0)
            if inner is None:
                inner = out[k0] = {}
            inner[k1] = value

        return set2

    head, last = keys[:-1], keys[-1]

    def setn(out: dict[str, Any], value: Any) -> None:
        cur = out
        for k in head:
            nxt = cur.get(k)
            if nxt is None:
                nxt = cur[k] = {}
            cur = nxt
        cur[last] = value

    return setn


def keys_text(keys: tuple[Key, ...]) -> str:
    """Keys back to a readable dotted form (``data.document_ids[0].id_type``)."""
    out = ""
    for k in keys:
        out += f"[{k}]" if type(k) is int else (f".{k}" if out else str(k))
    return out

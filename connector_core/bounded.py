"""Limits on everything dcsync parses from a file someone else wrote: YAML and JSON events.

A project file, a mapping or an event file may come from a colleague, a script gone wrong or an attacker. A
YAML alias bomb ("billion laughs") expands a 1 KB file into billions of nodes, a JSON line nested 100,000
deep overflows a recursive parser, a 5,000-digit number costs quadratic time to convert. Each is refused here,
before any of that work starts, with the place (file:line:column) and the limit it broke, so the command fails
in milliseconds with exit 2 instead of growing to gigabytes and ignoring SIGTERM.
"""

from __future__ import annotations

import gc
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.reader import ReaderError

MAX_YAML_BYTES = 32 * 1024 * 1024
"""A mapping of 95,000 fields is 5 MB; nothing dcsync reads by hand comes near this."""
MAX_YAML_DEPTH = 64
MAX_ALIAS_NODES = 100_000
"""Nodes an alias may bring in again, summed over the file (``<<: *defaults`` uses a few dozen)."""

MAX_JSON_LINE_BYTES = 16 * 1024 * 1024
MAX_JSON_DEPTH = 64
MAX_NUMBER_CHARS = 100
"""Digits of one JSON number: a float needs 25, a 64-bit integer 20."""


class BoundedInputError(ValueError):
    """Input refused before it was parsed in full: ``where`` is ``file:line:column`` (or ``file``)."""

    def __init__(self, where: str, message: str, *, line: int = 0, column: int = 0):
        self.where = where
        self.message = message
        self.line = line
        self.column = column
        super().__init__(f"{where}: {message}")


def read_limited(path: Path, limit: int, what: str = "file") -> bytes:
    """The bytes of ``path``, refused without reading it when it is larger than ``limit``."""
    size = path.stat().st_size
    if size > limit:
        raise BoundedInputError(
            str(path), f"{what} is {size:,} bytes, more than the limit of {limit:,} bytes"
        )
    return path.read_bytes()


def decode_utf8(raw: bytes, name: str, *, first_line: int = 1) -> str:
    """UTF-8 text, or an error naming the line and column (in characters) of the first bad byte."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = raw[: exc.start]
        line = first_line + before.count(b"\n")
        start_of_line = before.rfind(b"\n") + 1
        column = len(before[start_of_line:].decode("utf-8", errors="replace")) + 1
        bad = raw[exc.start : exc.end].hex()
        raise BoundedInputError(
            f"{name}:{line}:{column}",
            f"not UTF-8 (byte 0x{bad} cannot start or continue a character)",
            line=line,
            column=column,
        ) from None


try:  # libyaml's parser (C) under PyYAML's composer: the events come 2-3 times faster, marks unchanged
    from yaml._yaml import CParser
    from yaml.composer import Composer
    from yaml.constructor import SafeConstructor
    from yaml.resolver import Resolver

    class _Base(Composer, CParser, SafeConstructor, Resolver):  # type: ignore[misc]
        def __init__(self, stream: str) -> None:
            CParser.__init__(self, stream)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)
            Composer.__init__(self)

except ImportError:  # PyYAML built without libyaml
    _Base = yaml.SafeLoader  # type: ignore[misc,assignment]


class _BoundedLoader(_Base):
    """PyYAML's safe loader, counting nesting depth and the nodes that aliases bring in again.

    PyYAML composes an alias as a second reference to the anchored node, so the document stays small; it is
    every walk over the result (construction, our own builders) that expands it. Counting the weight (nodes
    below) of each node as it is composed, and adding it again at each alias, gives the expanded size before
    anything walks it.
    """

    def __init__(self, stream: str, name: str):
        super().__init__(stream)
        self.name = name
        self._depth = 0
        self._alias_nodes = 0
        self._weights: dict[int, int] = {}

    def _fail(self, mark: Any, message: str) -> BoundedInputError:
        line, column = (mark.line + 1, mark.column + 1) if mark is not None else (0, 0)
        where = f"{self.name}:{line}:{column}" if mark is not None else self.name
        return BoundedInputError(where, message, line=line, column=column)

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:  # type: ignore[override]
        if self.check_event(AliasEvent):
            mark = getattr(self.peek_event(), "start_mark", None)
            node = super().compose_node(parent, index)
            self._alias_nodes += self._weights.get(id(node), 1)
            if self._alias_nodes > MAX_ALIAS_NODES:
                raise self._fail(
                    mark, f"YAML aliases expand to more than {MAX_ALIAS_NODES:,} nodes (alias bomb?)"
                )
            return node
        self._depth += 1
        if self._depth > MAX_YAML_DEPTH:
            mark = getattr(self.peek_event(), "start_mark", None)
            raise self._fail(mark, f"YAML nested deeper than {MAX_YAML_DEPTH} levels")
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        weight = 1
        if isinstance(node, ScalarNode):
            if node.style == "":
                node.style = None  # libyaml says "" for a plain scalar, PyYAML's parser None
        elif isinstance(node, SequenceNode):
            weight += sum(self._weights.get(id(child), 1) for child in node.value)
        elif isinstance(node, MappingNode):
            weight += sum(self._weights.get(id(k), 1) + self._weights.get(id(v), 1) for k, v in node.value)
        if weight > 1:
            self._weights[id(node)] = weight
        return node


def compose_yaml(text: str, name: str) -> Node | None:
    """The node tree of ``text`` (``None`` when empty) within the limits above.

    Raises :class:`BoundedInputError` for a broken limit and ``yaml.YAMLError`` for a syntax error.
    """
    if len(text) > MAX_YAML_BYTES:
        raise BoundedInputError(name, f"YAML is larger than the limit of {MAX_YAML_BYTES:,} bytes")
    loader = _BoundedLoader(text, name)
    collecting = gc.isenabled()
    gc.disable()  # a node tree holds no cycles; collecting while it grows made large files superlinear
    try:
        return loader.get_single_node()
    except ReaderError as exc:  # a character YAML forbids: reported by position, which we turn into a place
        before = text[: exc.position]
        line = before.count("\n") + 1
        column = exc.position - (before.rfind("\n") + 1) + 1
        char = exc.character if isinstance(exc.character, str) else chr(exc.character)
        raise BoundedInputError(
            f"{name}:{line}:{column}",
            f"invalid YAML: character {char!r} (U+{ord(char):04X}) is not allowed",
            line=line,
            column=column,
        ) from None
    finally:
        loader.dispose()
        if collecting:
            gc.enable()


def load_yaml_file(path: Path, what: str = "YAML file") -> Any:
    """A whole YAML file as Python values (safe types), within every limit: for small side files such as
    lookup tables, where line numbers of the values are not needed."""
    text = decode_utf8(read_limited(path, MAX_YAML_BYTES, what), str(path))
    node = compose_yaml(text, str(path))
    if node is None:
        return None
    return yaml.SafeLoader("").construct_document(node)


# -- JSON -------------------------------------------------------------------------------------------------


_LONG_NUMBER = re.compile(r"[0-9+\-.eE]{" + str(MAX_NUMBER_CHARS + 1) + ",}")


_JSON_TOKENS = re.compile(
    r'(?P<string>"[^"\\]*(?:\\.[^"\\]*)*"?)|(?P<open>[\[{])|(?P<close>[\]}])|(?P<number>[0-9+\-.eE]+)'
)


def check_json_text(text: str, where: str) -> None:
    """Refuse a JSON document that is too deep or holds an overlong number, before any parser sees it.

    One linear scan that skips strings: cheaper than the parse it protects, and it works the same for
    orjson (which stops at 1024 levels with a cryptic message) and the standard library (which recurses
    until Python's stack gives out).
    """
    if len(text) > MAX_JSON_LINE_BYTES:
        raise BoundedInputError(where, f"line is longer than the limit of {MAX_JSON_LINE_BYTES:,} bytes")
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH and not _LONG_NUMBER.search(text):
        return  # nearly every line: two C-speed passes prove it within the limits
    depth = 0
    for token in _JSON_TOKENS.finditer(text):  # strings are skipped whole, at C speed
        kind = token.lastgroup
        if kind == "open":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                column = token.start() + 1
                raise BoundedInputError(
                    f"{where}:{column}", f"JSON nested deeper than {MAX_JSON_DEPTH} levels", column=column
                )
        elif kind == "close":
            depth -= 1
        elif kind == "number" and token.end() - token.start() > MAX_NUMBER_CHARS:
            column = token.start() + 1
            raise BoundedInputError(
                f"{where}:{column}", f"number longer than {MAX_NUMBER_CHARS} characters", column=column
            )


def reject_constant(token: str) -> Any:
    """``parse_constant`` for :func:`json.loads`: JSON has no ``NaN`` or ``Infinity``."""
    raise ValueError(f"{token} is not a JSON number")


def non_finite(value: Any) -> bool:
    """Whether a decoded value holds ``NaN`` or an infinity anywhere (overflowing literals such as ``1e999``
    decode to ``inf``)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float):
            if not math.isfinite(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


@dataclass(frozen=True, slots=True)
class Limits:
    """The limits in force, for documentation and error messages."""

    yaml_bytes: int = MAX_YAML_BYTES
    yaml_depth: int = MAX_YAML_DEPTH
    alias_nodes: int = MAX_ALIAS_NODES
    json_line_bytes: int = MAX_JSON_LINE_BYTES
    json_depth: int = MAX_JSON_DEPTH
    number_chars: int = MAX_NUMBER_CHARS

"""Reading mapping YAML while remembering where every node came from.

PyYAML's ``compose`` keeps a mark (line, column) on every node; we build plain Python values from
the node tree ourselves and record each node's mark under its path (``("mappings", "individual",
"fields", ...)``), so a later check can point at the exact node it rejects.

Building values ourselves also lets us apply YAML 1.2 scalar rules: under PyYAML's YAML 1.1 a bare
``yes``, ``no``, ``on`` or ``off`` becomes a boolean, which silently breaks value maps of
DataCollect answers such as ``belongs_to_ethnic_group: "yes"``. Here only ``true``/``false`` are
booleans; dates stay strings. Duplicate keys, which PyYAML silently overwrites, are reported.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from connector_core.bounded import BoundedInputError, compose_yaml
from connector_core.mapping.errors import MappingIssue

Path = tuple[str | int, ...]

_INT = re.compile(r"^[-+]?[0-9]+$")
_HEX = re.compile(r"^0x[0-9a-fA-F]+$")
_OCT = re.compile(r"^0o[0-7]+$")
_FLOAT = re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$")
_STR_TAG = "tag:yaml.org,2002:str"
_MERGE_TAG = "tag:yaml.org,2002:merge"


@dataclass(slots=True)
class Document:
    """A parsed mapping file: plain values plus the mark of every node, by path."""

    file: str
    data: Any
    marks: dict[Path, tuple[int, int]] = field(default_factory=dict)
    key_marks: dict[Path, tuple[int, int]] = field(default_factory=dict)

    def at(self, path: Path, *, key: bool = False) -> tuple[int, int]:
        """Line and column (1-based) of ``path``, or of its nearest ancestor that exists."""
        probe = tuple(path)
        while True:
            if key and probe in self.key_marks:
                return self.key_marks[probe]
            if probe in self.marks:
                return self.marks[probe]
            if not probe:
                return (1, 1)
            probe = probe[:-1]

    def issue(
        self,
        path: Path,
        message: str,
        *,
        mapping: str | None = None,
        field_name: str | None = None,
        key: bool = False,
    ) -> MappingIssue:
        line, column = self.at(path, key=key)
        return MappingIssue(self.file, line, column, mapping, field_name, message)


def _mark(node: Node) -> tuple[int, int]:
    return (node.start_mark.line + 1, node.start_mark.column + 1)


def scalar_value(node: ScalarNode) -> Any:
    """A scalar under YAML 1.2 core-schema rules (quoted and block scalars are always strings)."""
    text = node.value
    if node.style is not None or node.tag == _STR_TAG:
        return text
    if text in ("", "~", "null", "Null", "NULL"):
        return None
    if text in ("true", "True", "TRUE"):
        return True
    if text in ("false", "False", "FALSE"):
        return False
    if _INT.match(text):
        return int(text)
    if _HEX.match(text):
        return int(text, 16)
    if _OCT.match(text):
        return int(text[2:], 8)
    if _FLOAT.match(text):
        return float(text)
    lowered = text.lower()
    if lowered in (".inf", "+.inf"):
        return math.inf
    if lowered == "-.inf":
        return -math.inf
    if lowered == ".nan":
        return math.nan
    return text


class _Builder:
    def __init__(self, doc: Document, issues: list[MappingIssue]):
        self.doc = doc
        self.issues = issues
        self.depth = 0

    def build(self, node: Node, path: Path) -> Any:
        self.doc.marks.setdefault(path, _mark(node))
        self.depth += 1
        try:
            if self.depth > 200:
                self.issues.append(self.doc.issue(path, "YAML nesting too deep (recursive alias?)"))
                return None
            if isinstance(node, ScalarNode):
                return scalar_value(node)
            if isinstance(node, SequenceNode):
                return [self.build(child, (*path, i)) for i, child in enumerate(node.value)]
            if isinstance(node, MappingNode):
                return self._mapping(node, path)
            return None
        finally:
            self.depth -= 1

    def _mapping(self, node: MappingNode, path: Path) -> dict[str, Any]:
        result: dict[str, Any] = {}
        merged: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                sources = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
                for source in sources:
                    value = self.build(source, path)
                    if isinstance(value, dict):
                        for k, v in value.items():
                            merged.setdefault(k, v)
                    else:
                        line, col = _mark(source)
                        self.issues.append(
                            MappingIssue(self.doc.file, line, col, None, None, "'<<' needs a mapping")
                        )
                continue
            if not isinstance(key_node, ScalarNode):
                line, col = _mark(key_node)
                self.issues.append(
                    MappingIssue(self.doc.file, line, col, None, None, "keys must be plain scalars")
                )
                continue
            raw_key = scalar_value(key_node)
            key = raw_key if isinstance(raw_key, str) else _key_text(raw_key)
            child = (*path, key)
            if key in result:
                line, col = _mark(key_node)
                first_line, _ = self.doc.key_marks.get(child, (0, 0))
                self.issues.append(
                    MappingIssue(
                        self.doc.file,
                        line,
                        col,
                        None,
                        None,
                        f"duplicate key {key!r} (first defined on line {first_line})",
                    )
                )
                continue
            self.doc.key_marks[child] = _mark(key_node)
            result[key] = self.build(value_node, child)
        for k, v in merged.items():
            result.setdefault(k, v)
        return result


def _key_text(value: Any) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    return str(value)


def parse_yaml(text: str, file: str) -> tuple[Document | None, list[MappingIssue]]:
    """Parse ``text``; on a syntax error return one issue at the error's mark and no document."""
    try:
        node = compose_yaml(text, file)
    except BoundedInputError as exc:
        return None, [MappingIssue(file, exc.line, exc.column, None, None, exc.message)]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = exc.problem or exc.context or "invalid YAML"
        if exc.context and exc.problem:
            problem = f"{exc.problem} ({exc.context})"
        return None, [MappingIssue(file, line, col, None, None, f"YAML syntax error: {problem}")]
    except yaml.YAMLError as exc:
        return None, [MappingIssue(file, 1, 1, None, None, f"YAML error: {exc}")]
    doc = Document(file=file, data=None)
    issues: list[MappingIssue] = []
    if node is None:
        doc.data = None
        return doc, issues
    doc.data = _Builder(doc, issues).build(node, ())
    return doc, issues

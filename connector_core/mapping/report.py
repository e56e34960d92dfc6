"""Dry runs of a mapping over sample data: outputs, per-record errors, coverage and golden comparison.

This is what ``dcsync mapping test`` prints, kept apart from the CLI so it can be tested and reused (an
integrator's CI can call :func:`run_test` directly). Inputs are read line by line; a corrupt line is one
:class:`InputError` naming the file and line, never a traceback.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from connector_core.bounded import BoundedInputError, decode_utf8
from connector_core.entities import fold
from connector_core.events import EventError, FormSubmission, parse_json_line
from connector_core.mapping.context import MapContext
from connector_core.mapping.engine import EntityMapping, MappingSet
from connector_core.mapping.errors import FieldError
from connector_core.mapping.explain import Explanation

SIMULATED_PREFIX = "ext-"
"""In a dry run every sample entity is taken as already pushed, with external id ``ext-<guid>``."""


class InputError(Exception):
    """A sample, expected or links file that cannot be used; ``str()`` is one line."""


@dataclass(slots=True)
class Sample:
    """One input to map: an entity (push) or an external record (pull)."""

    key: str
    doc: dict[str, Any]
    entity_name: str | None


@dataclass(slots=True)
class Outcome:
    key: str
    mapping: str | None
    entity_name: str | None
    record: dict[str, Any] | None = None
    errors: list[FieldError] = field(default_factory=list)
    skipped: str | None = None
    explanation: Explanation | None = None

    @property
    def excluded(self) -> bool:
        return self.skipped is None and self.record is None and not self.errors

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "key": self.key,
            "mapping": self.mapping,
            "entity_name": self.entity_name,
            "record": self.record,
            "errors": [e.to_dict() for e in self.errors],
        }
        if self.skipped:
            out["skipped"] = self.skipped
        if self.excluded:
            out["excluded"] = True
        return out


@dataclass(slots=True)
class Coverage:
    """Per mapping: declared targets no record produced; source fields present but never read."""

    mapping: str
    records: int
    never_produced: list[str]
    unused_sources: list[str]
    unmatched_sources: list[str] = field(default_factory=list)
    """Fields whose source path no record had (``field <- path``): most often a typo in the path."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "mapping": self.mapping,
            "records": self.records,
            "never_produced": self.never_produced,
            "unused_sources": self.unused_sources,
            "unmatched_sources": self.unmatched_sources,
        }


@dataclass(slots=True)
class Difference:
    key: str
    path: str
    expected: Any
    actual: Any
    note: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "path": self.path,
            "expected": self.expected,
            "actual": self.actual,
            "note": self.note,
        }

    def __str__(self) -> str:
        where = f"{self.key}" + (f" {self.path}" if self.path else "")
        return f"{where}: {self.note}"


@dataclass(slots=True)
class TestReport:
    direction: str
    outcomes: list[Outcome]
    coverage: list[Coverage]
    unmatched: list[str] = field(default_factory=list)
    differences: list[Difference] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    explanation: Explanation | None = None
    explain_note: str | None = None

    @property
    def mapped(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.skipped is None]

    @property
    def errors(self) -> list[tuple[str, FieldError]]:
        return [(o.key, e) for o in self.outcomes for e in o.errors]

    @property
    def unmatched_sources(self) -> list[str]:
        return [f"{c.mapping}.{u}" for c in self.coverage for u in c.unmatched_sources]

    @property
    def ok(self) -> bool:
        return not self.errors and not self.differences and not self.unmatched and not self.unmatched_sources

    def summary(self) -> dict[str, int]:
        mapped = self.mapped
        return {
            "inputs": len(self.outcomes),
            "mapped": sum(1 for o in mapped if o.record is not None and not o.errors),
            "excluded": sum(1 for o in mapped if o.excluded),
            "with_errors": sum(1 for o in mapped if o.errors),
            "skipped": len(self.outcomes) - len(mapped),
            "errors": len(self.errors),
            "differences": len(self.differences),
            "unmatched_mappings": len(self.unmatched),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "direction": self.direction,
            "ok": self.ok,
            "summary": self.summary(),
            "records": [o.to_dict() for o in self.outcomes],
            "errors": [{"key": k, **e.to_dict()} for k, e in self.errors],
            "coverage": [c.to_dict() for c in self.coverage],
            "unmatched_mappings": self.unmatched,
            "differences": [d.to_dict() for d in self.differences],
            "notes": self.notes,
            "explanation": self.explanation.to_dict() if self.explanation else None,
            "explain_note": self.explain_note,
        }


# ---- reading inputs ----------------------------------------------------------------------------


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """Non-blank lines, each decoded on its own so a bad byte is reported by line and column."""
    try:
        with path.open("rb") as fh:
            for lineno, raw in enumerate(fh, start=1):
                line = decode_utf8(raw, str(path), first_line=lineno)
                if line.strip():
                    yield lineno, line
    except BoundedInputError as exc:
        raise InputError(str(exc)) from None
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None


def _json_line(line: str, where: str) -> Any:
    """One sample or golden line, within the same limits as an event file."""
    try:
        return parse_json_line(line, where=where)
    except EventError as exc:
        raise InputError(f"{exc.where or where}: {exc.reason}") from None


def read_events(path: Path) -> Iterator[FormSubmission]:
    for lineno, line in _lines(path):
        try:
            yield FormSubmission.from_json_line(line, where=f"{path}:{lineno}")
        except EventError as exc:
            raise InputError(str(exc)) from None


def load_entities(path: Path, notes: list[str]) -> list[Sample]:
    """Fold the sample's events into entities (deleted ones dropped), in first-touched order."""
    result = fold(read_events(path))
    for issue in result.issues:
        notes.append(f"{path}: {issue}")
    samples: list[Sample] = []
    for guid, entity in result.changed.items():
        if entity is None:
            continue
        samples.append(Sample(guid, entity.to_json(), entity.entity_name))
    return samples


def load_records(path: Path) -> list[Sample]:
    """External records for a pull dry run: ``{"entity_name", "external_id"?, "data": {...}}`` lines."""
    samples: list[Sample] = []
    for lineno, line in _lines(path):
        where = f"{path}:{lineno}"
        raw = _json_line(line, where)
        if not isinstance(raw, dict):
            raise InputError(f"{where}: a record line must be a JSON object")
        if "entityGuid" in raw and "type" in raw:
            raise InputError(
                f"{where}: this is an event; --direction pull reads external records "
                '({"entity_name": ..., "external_id": ..., "data": {...}})'
            )
        data = raw.get("data")
        if not isinstance(data, dict):
            raise InputError(f"{where}: 'data' must be a JSON object")
        key = raw.get("external_id")
        name = raw.get("entity_name")
        samples.append(
            Sample(
                str(key) if key not in (None, "") else f"line {lineno}",
                data,
                name if isinstance(name, str) else None,
            )
        )
    return samples


def load_expected(path: Path) -> dict[str, dict[str, Any] | None]:
    """Golden outputs: JSONL lines ``{"key"|"guid"|"external_id": ..., "record": {...} | null}``."""
    expected: dict[str, dict[str, Any] | None] = {}
    for lineno, line in _lines(path):
        where = f"{path}:{lineno}"
        raw = _json_line(line, where)
        if not isinstance(raw, dict) or "record" not in raw:
            raise InputError(f"{where}: an expected line needs 'key' (or 'guid') and 'record'")
        key = raw.get("key", raw.get("guid", raw.get("external_id")))
        if key in (None, ""):
            raise InputError(f"{where}: an expected line needs 'key' (or 'guid')")
        record = raw["record"]
        if record is not None and not isinstance(record, dict):
            raise InputError(f"{where}: 'record' must be an object or null")
        expected[str(key)] = record
    return expected


def load_links(path: Path) -> dict[str, str]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read: {exc}") from None
    if not isinstance(raw, dict) or not all(isinstance(v, str | int) for v in raw.values()):
        raise InputError(f"{path}: links must be a JSON object of entity guid -> external id")
    return {str(k): str(v) for k, v in raw.items()}


def context_for(samples: list[Sample], links: dict[str, str] | None) -> MapContext:
    """Links for a dry run: the given ones, or ``ext-<guid>`` for every entity of the sample."""
    if links is not None:
        reverse = {v: k for k, v in links.items()}
        return MapContext(link=links.get, resolve=lambda ext, _name: reverse.get(ext))
    known = {s.key for s in samples}

    def link(guid: str) -> str | None:
        return SIMULATED_PREFIX + guid if guid in known else None

    def resolve(external_id: str, _name: str | None) -> str | None:
        if external_id.startswith(SIMULATED_PREFIX):
            return external_id[len(SIMULATED_PREFIX) :]
        return None

    return MapContext(link=link, resolve=resolve)


# ---- running ------------------------------------------------------------------------------------


def run_test(
    mappings: MappingSet,
    samples: list[Sample],
    direction: str,
    ctx: MapContext,
    *,
    only: EntityMapping | None = None,
    explain_key: str | None = None,
) -> TestReport:
    outcomes: list[Outcome] = []
    used: dict[str, EntityMapping] = {}
    sources: dict[str, list[dict[str, Any]]] = {}
    outputs: dict[str, list[dict[str, Any]]] = {}
    explanation: Explanation | None = None
    explain_note: str | None = None
    explain_target = _find_key(samples, explain_key) if explain_key else None
    for sample in samples:
        mapping = only or _select(mappings, sample, direction)
        if mapping is None:
            reason = f"no mapping for entity name {sample.entity_name!r}"
            outcomes.append(Outcome(sample.key, None, sample.entity_name, skipped=reason))
            if sample.key == explain_target:
                explain_note = f"{sample.key}: {reason}"
            continue
        want = sample.key == explain_target
        if direction == "push":
            result = mapping.push(sample.doc, ctx, explain=want)
        else:
            result = mapping.pull(sample.doc, ctx, explain=want)
        if want:
            explanation = result.explanation
            if explanation is not None:
                explanation.record_id = sample.key
        outcomes.append(Outcome(sample.key, mapping.name, sample.entity_name, result.record, result.errors))
        used[mapping.name] = mapping
        sources.setdefault(mapping.name, []).append(sample.doc)
        if result.record is not None:
            outputs.setdefault(mapping.name, []).append(result.record)
    coverage = [
        coverage_of(m, direction, sources.get(name, []), outputs.get(name, [])) for name, m in used.items()
    ]
    unmatched = [] if only else _unmatched(mappings, samples, used, direction)
    return TestReport(
        direction,
        outcomes,
        coverage,
        unmatched,
        explanation=explanation,
        explain_note=explain_note,
    )


def _select(mappings: MappingSet, sample: Sample, direction: str) -> EntityMapping | None:
    if direction == "push":
        return mappings.for_entity(sample.doc)
    if sample.entity_name is None:
        return None
    return mappings.for_entity_name(sample.entity_name)


def _find_key(samples: list[Sample], key: str) -> str:
    """The sample whose key is ``key`` or, if unambiguous, starts with it (guids are long)."""
    exact = [s.key for s in samples if s.key == key]
    if exact:
        return exact[0]
    prefixed = [s.key for s in samples if s.key.startswith(key)]
    if len(prefixed) == 1:
        return prefixed[0]
    if prefixed:
        raise InputError(f"--explain {key!r} matches {len(prefixed)} records; give more of it")
    raise InputError(f"--explain {key!r}: no record with that key in the sample")


def _unmatched(
    mappings: MappingSet, samples: list[Sample], used: dict[str, EntityMapping], direction: str
) -> list[str]:
    if mappings.identity:
        return []
    names = sorted({s.entity_name for s in samples if s.entity_name})
    out: list[str] = []
    for m in mappings:
        if m.name in used:
            continue
        what = f"entity_name {m.entity_name!r}" if m.entity_name else f"type {m.entity_type!r}"
        hint = ""
        if m.entity_name:
            close = difflib.get_close_matches(m.entity_name, names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
        present = ", ".join(names) if names else "none"
        out.append(
            f"mapping {m.name!r} ({what}) matched nothing in the sample "
            f"(entity names in the sample: {present}{hint})"
        )
    return out


# ---- coverage and comparison ----------------------------------------------------------------------


def leaves(value: Any, prefix: str = "") -> Iterator[str]:
    """Dotted leaf paths of a JSON value; list items as ``[]``."""
    if isinstance(value, Mapping) and value:
        for k, v in value.items():
            yield from leaves(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(value, list) and value and any(isinstance(v, Mapping) for v in value):
        for v in value:
            if isinstance(v, Mapping):
                yield from leaves(v, f"{prefix}[]")
    elif prefix:
        yield prefix


def _prefixes(path: str) -> Iterator[str]:
    for i, ch in enumerate(path):
        if ch in ".[" and i:
            yield path[:i]
    yield path


def _read_covers(read: str, leaf: str) -> bool:
    if read == "" or read == leaf:
        return True
    if leaf.startswith(read) and leaf[len(read)] in ".[":
        return True
    return read.startswith(leaf) and read[len(leaf)] in ".["


def coverage_of(
    mapping: EntityMapping,
    direction: str,
    sources: list[dict[str, Any]],
    outputs: list[dict[str, Any]],
) -> Coverage:
    produced: set[str] = set()
    for record in outputs:
        for leaf in leaves(record):
            produced.update(_prefixes(leaf))
        produced.update(k for k in record)
    targets = mapping.push_targets if direction == "push" else mapping.pull_targets
    never = [t for t in dict.fromkeys(targets) if t not in produced]
    reads = mapping.reads(direction)
    present: set[str] = set()
    for doc in sources:
        if direction == "push":
            data = doc.get("data")
            present.update(leaves(data, "data") if isinstance(data, Mapping) else ())
        else:
            present.update(leaves(doc))
    unused = sorted(leaf for leaf in present if not any(_read_covers(r, leaf) for r in reads))
    unmatched: list[str] = []
    if sources:
        fields = mapping.push_fields if direction == "push" else mapping.pull_fields
        reachable = set(present)
        for doc in sources:
            reachable.update(leaves(doc))
        for plan in fields:
            if plan.optional or plan.inverse or not plan.reads:
                continue  # a remote's answer need not carry every pushed field back
            if not any(_read_covers(r, leaf) for r in plan.reads for leaf in reachable):
                unmatched.append(f"{plan.target} <- {plan.source}")
    return Coverage(mapping.name, len(sources), never, unused, unmatched)


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out if out or not prefix else {prefix: {}}
    if isinstance(value, list):
        out = {}
        for i, v in enumerate(value):
            out.update(_flatten(v, f"{prefix}[{i}]"))
        return out if out else {prefix: []}
    return {prefix: value}


def compare(outcomes: list[Outcome], expected: dict[str, dict[str, Any] | None]) -> list[Difference]:
    """Field-level differences between produced records and golden ones."""
    diffs: list[Difference] = []
    produced = {o.key: o for o in outcomes if o.skipped is None}
    for key, want in expected.items():
        outcome = produced.get(key)
        if outcome is None:
            diffs.append(Difference(key, "", want, None, "expected a record, none was produced"))
            continue
        got = outcome.record
        if want is None or got is None:
            if want != got:
                note = "expected the record to be excluded" if want is None else "record excluded"
                diffs.append(Difference(key, "", want, got, note))
            continue
        flat_want, flat_got = _flatten(want), _flatten(got)
        for path in dict.fromkeys([*flat_want, *flat_got]):
            if path not in flat_got:
                diffs.append(
                    Difference(key, path, flat_want[path], None, f"missing (expected {_j(flat_want[path])})")
                )
            elif path not in flat_want:
                diffs.append(Difference(key, path, None, flat_got[path], f"unexpected {_j(flat_got[path])}"))
            elif not _same(flat_want[path], flat_got[path]):
                diffs.append(
                    Difference(
                        key,
                        path,
                        flat_want[path],
                        flat_got[path],
                        f"expected {_j(flat_want[path])}, got {_j(flat_got[path])}",
                    )
                )
    for key, outcome in produced.items():
        if key not in expected:
            diffs.append(Difference(key, "", None, outcome.record, "record not in the expected file"))
    return diffs


def _same(a: Any, b: Any) -> bool:
    return bool(a == b and type(a) is type(b)) or (
        isinstance(a, int | float)
        and isinstance(b, int | float)
        and not isinstance(a, bool)
        and not isinstance(b, bool)
        and a == b
    )


def _j(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def expected_lines(outcomes: list[Outcome], direction: str) -> list[str]:
    """Golden JSONL for ``--write-expected``: one line per mapped input."""
    key_name = "guid" if direction == "push" else "key"
    lines = []
    for o in outcomes:
        if o.skipped is not None:
            continue
        row = {key_name: o.key, "mapping": o.mapping, "record": o.record}
        lines.append(json.dumps(row, ensure_ascii=False, sort_keys=False))
    return lines

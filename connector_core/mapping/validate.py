"""Static checks that need no data, and the wording of what they find.

Compilation *is* validation here: :func:`check_file` compiles the file and returns every issue
instead of raising, so ``dcsync mapping validate`` and ``load_mapping`` can never disagree. This
module holds the checks that look across fields (duplicate and conflicting targets) and turns
pydantic's errors into messages an integrator understands ("unknown key 'paht' (did you mean
'path'?)"), placed on YAML nodes.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from connector_core.mapping.errors import MappingError, MappingIssue
from connector_core.mapping.source import Document
from connector_core.mapping.source import Path as YPath


def vocabulary(models: list[type[BaseModel]]) -> list[str]:
    words: set[str] = set()
    for model in models:
        for name, info in model.model_fields.items():
            words.add(info.alias or name)
    return sorted(words)


def pydantic_issues(
    doc: Document,
    exc: ValidationError,
    base: YPath,
    *,
    mapping: str | None,
    field_name: str | None,
    vocabulary: list[str],
) -> list[MappingIssue]:
    """One located issue per pydantic error (union branches reported once)."""
    out: list[MappingIssue] = []
    seen: set[tuple[int, int, str]] = set()
    for err in exc.errors():
        loc = _existing_loc(doc, base, err["loc"])
        kind = err["type"]
        raw_loc = [str(p) for p in err["loc"]]
        if kind == "extra_forbidden":
            key = str(err["loc"][-1])
            hint = difflib.get_close_matches(key, vocabulary, n=1, cutoff=0.6)
            did = f" (did you mean {hint[0]!r}?)" if hint else ""
            message = f"unknown key {key!r}{did}"
            issue = doc.issue((*base, *loc), message, mapping=mapping, field_name=field_name, key=True)
        elif kind == "missing":
            message = f"missing required key {raw_loc[-1]!r}"
            issue = doc.issue((*base, *loc), message, mapping=mapping, field_name=field_name)
        elif "pipe" in raw_loc and len(raw_loc) >= 2 and raw_loc[raw_loc.index("pipe") + 1].isdigit():
            message = "a pipe step is a transform name or a one-key mapping {name: params}"
            issue = doc.issue((*base, *loc), message, mapping=mapping, field_name=field_name)
        else:
            where = ".".join(str(p) for p in loc)
            got = err.get("input")
            shown = repr(got) if not isinstance(got, dict | list) else type(got).__name__
            message = f"{where + ': ' if where else ''}{err['msg']}, got {shown}"
            issue = doc.issue((*base, *loc), message, mapping=mapping, field_name=field_name)
        key_ = (issue.line, issue.column, message)
        if key_ not in seen:
            seen.add(key_)
            out.append(issue)
    return out


def _existing_loc(doc: Document, base: YPath, loc: tuple[Any, ...]) -> YPath:
    """The part of a pydantic ``loc`` that names real YAML nodes (drops union-branch tags)."""
    kept: list[str | int] = []
    for part in loc:
        candidate = (*base, *kept, part)
        if candidate in doc.marks or candidate in doc.key_marks:
            kept.append(part)
    return tuple(kept)


@dataclass(frozen=True, slots=True)
class TargetUse:
    keys: tuple[str, ...]
    field_name: str
    ypath: YPath


def target_conflicts(
    doc: Document, uses: list[TargetUse], *, mapping: str, direction: str
) -> list[MappingIssue]:
    """Two fields writing the same target, or one writing inside the other's value.

    Each use is compared with the earlier ones through two indexes (whole targets, and every proper prefix
    of a target), not pairwise: a mapping of 95,000 fields validates in seconds, not hours. The earliest
    conflicting use is named, as a pairwise scan in file order would.
    """
    out: list[MappingIssue] = []
    whole: dict[tuple[str, ...], tuple[int, TargetUse]] = {}
    under: dict[tuple[str, ...], tuple[int, TargetUse]] = {}
    for index, use in enumerate(uses):
        keys = use.keys
        candidates: list[tuple[int, TargetUse]] = []
        if keys in whole:
            candidates.append(whole[keys])
        candidates.extend(whole[keys[:cut]] for cut in range(1, len(keys)) if keys[:cut] in whole)
        if keys in under:
            candidates.append(under[keys])
        if candidates:
            _, other = min(candidates, key=lambda c: c[0])
            line = doc.at(other.ypath, key=True)[0]
            dotted, other_dotted = ".".join(keys), ".".join(other.keys)
            if keys == other.keys:
                message = (
                    f"duplicate {direction} target {dotted!r}: also written by the "
                    f"{_block(other.ypath)} field {other.field_name!r} (line {line})"
                )
            else:
                message = (
                    f"conflicting {direction} targets {dotted!r} and {other_dotted!r} "
                    f"(line {line}): "
                    "a target cannot be both a value and an object holding other targets"
                )
            out.append(doc.issue(use.ypath, message, mapping=mapping, field_name=use.field_name, key=True))
        whole.setdefault(keys, (index, use))
        for cut in range(1, len(keys)):
            under.setdefault(keys[:cut], (index, use))
    return out


def _block(ypath: YPath) -> str:
    if len(ypath) > 2 and ypath[2] in ("push", "pull"):
        return f"{ypath[2]}:"
    return "reversible"


def check_file(path: str | Path, **kwargs: Any) -> list[MappingIssue]:
    """Every static issue of a mapping file (empty when it is valid)."""
    from connector_core.mapping.compiler import load_mapping

    try:
        load_mapping(path, **kwargs)
    except MappingError as exc:
        return exc.issues
    return []


def check_text(text: str, source_name: str = "<string>", **kwargs: Any) -> list[MappingIssue]:
    from connector_core.mapping.compiler import load_mapping_text

    try:
        load_mapping_text(text, source_name, **kwargs)
    except MappingError as exc:
        return exc.issues
    return []


__all__ = [
    "TargetUse",
    "check_file",
    "check_text",
    "pydantic_issues",
    "target_conflicts",
    "vocabulary",
]

"""Explanations: for every output field, where its value came from and what each transform did.

This is the answer to "why is this field null / wrong?", the question mapping tools are worst at. An
explanation is produced by running the very same compiled steps as the fast path, one at a time,
recording input and output of each, so what it shows is what a real run does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from connector_core.mapping.errors import Missing


def show(value: Any, limit: int = 70) -> str:
    """A short, unambiguous rendering of a value for humans."""
    if isinstance(value, Missing):
        return f"(missing: {value.reason})"
    try:
        text = json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def jsonable(value: Any) -> Any:
    """Values as they go into JSON output; an absent value becomes ``{"missing": reason}``."""
    if isinstance(value, Missing):
        return {"missing": value.reason}
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


@dataclass(slots=True)
class StepTrace:
    """One transform applied (or skipped because the value was absent/null)."""

    label: str
    input: Any
    output: Any = None
    error: str | None = None
    skipped: bool = False

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"transform": self.label, "input": jsonable(self.input)}
        if self.skipped:
            out["skipped"] = "value absent or null"
        elif self.error is not None:
            out["error"] = self.error
        else:
            out["output"] = jsonable(self.output)
        return out


@dataclass(slots=True)
class FieldTrace:
    """How one target field was produced: ``status`` is ok, missing, dropped, skipped or error."""

    target: str
    source: str
    raw: Any = None
    steps: list[StepTrace] = field(default_factory=list)
    result: Any = None
    status: str = "ok"
    reason: str | None = None
    items: list[list[FieldTrace]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "target": self.target,
            "source": self.source,
            "raw": jsonable(self.raw),
            "steps": [s.to_dict() for s in self.steps],
            "status": self.status,
        }
        if self.status == "ok":
            out["result"] = jsonable(self.result)
        if self.reason:
            out["reason"] = self.reason
        if self.items:
            out["items"] = [[f.to_dict() for f in item] for item in self.items]
        return out

    def lines(self, indent: str = "") -> list[str]:
        head = f"{indent}{self.target} <- {self.source}"
        out = [head, f"{indent}    raw: {show(self.raw)}"]
        for step in self.steps:
            if step.skipped:
                out.append(f"{indent}    | {step.label}: skipped (value absent or null)")
            elif step.error is not None:
                out.append(f"{indent}    | {step.label}: {show(step.input)} -> ERROR {step.error}")
            else:
                out.append(f"{indent}    | {step.label}: {show(step.input)} -> {show(step.output)}")
        for i, item in enumerate(self.items):
            out.append(f"{indent}    [{i}]")
            for sub in item:
                out.extend(sub.lines(indent + "      "))
        if self.status == "ok":
            out.append(f"{indent}    = {show(self.result)}")
        else:
            out.append(f"{indent}    = {self.status.upper()}: {self.reason}")
        return out


@dataclass(slots=True)
class Explanation:
    """Every field of one record, in mapping order, plus the whole-record ``when`` verdict."""

    mapping: str
    direction: str
    record_id: str | None
    fields: list[FieldTrace] = field(default_factory=list)
    excluded: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "mapping": self.mapping,
            "direction": self.direction,
            "record": self.record_id,
            "excluded": self.excluded,
            "fields": [f.to_dict() for f in self.fields],
        }

    def lines(self) -> list[str]:
        title = f"{self.direction} {self.record_id or ''} with mapping {self.mapping!r}".replace("  ", " ")
        out = [title]
        if self.excluded:
            out.append(f"  record excluded: {self.excluded}")
        for trace in self.fields:
            out.extend(trace.lines("  "))
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())

"""What can go wrong, in two families: mistakes in a mapping file and failures of one record.

A mapping mistake (:class:`MappingIssue`) is found before any data moves and always points at the
YAML node that caused it (file, line, column, mapping, field), because "invalid mapping" without a
place is the complaint integrators make most about mapping tools. A record failure
(:class:`FieldError`) names the target field, the value it was holding and the reason, so a dead
letter can be fixed without re-running anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class MappingIssue:
    """One static mistake in a mapping file; ``line``/``column`` are 1-based (0: unreadable file)."""

    file: str
    line: int
    column: int
    mapping: str | None
    field: str | None
    message: str

    @property
    def where(self) -> str:
        if self.line <= 0:
            return self.file
        return f"{self.file}:{self.line}:{self.column}"

    def __str__(self) -> str:
        scope = ".".join(part for part in (self.mapping, self.field) if part)
        label = f" [{scope}]" if scope else ""
        return f"{self.where}:{label} {self.message}"

    def sort_key(self) -> tuple[str, int, int, str]:
        return (self.file, self.line, self.column, self.message)


class MappingError(Exception):
    """A mapping file that cannot be used; carries every issue found, not only the first."""

    def __init__(self, issues: list[MappingIssue]):
        self.issues = sorted(issues, key=MappingIssue.sort_key)
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(str(issue) for issue in self.issues)


class TransformError(ValueError):
    """Raised by a transform for a value it cannot handle; the record is dead-lettered with it."""


class ParamError(ValueError):
    """Raised while building a transform; ``param`` names the offending parameter."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


class Missing:
    """A value that is absent (as opposed to ``None``, which is present and null).

    Absent values are not written to the output. Transforms may return ``Missing(reason)`` so the
    explanation can tell *why* a field is missing (e.g. "no link held for entity ...").
    """

    __slots__ = ("reason",)

    def __init__(self, reason: str = "not found"):
        self.reason = reason

    def __repr__(self) -> str:
        return f"<missing: {self.reason}>"

    def __bool__(self) -> bool:
        return False


MISSING = Missing()
"""The shared "absent" value returned by getters; compare with ``type(v) is Missing`` to catch
reasons
too."""


@dataclass(slots=True)
class FieldError:
    """One field of one record that could not be mapped."""

    field: str
    value: Any
    reason: str

    def __str__(self) -> str:
        return f"{self.field}: {self.reason} (value {_short(self.value)})"

    def to_dict(self) -> dict[str, Any]:
        value = None if isinstance(self.value, Missing) else self.value
        return {"field": self.field, "value": value, "reason": self.reason}


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."

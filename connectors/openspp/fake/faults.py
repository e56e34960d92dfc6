"""Fault injection: the failures a real OpenSPP deployment produces, on demand and reproducibly.

Every fault is scoped (service, model, method, and optionally a domain over the call's values, so a test
can fail only the record whose ``given_name`` is "Bad") and fires a number of times or with a
probability drawn from a seeded generator. The kinds cover what ``openspp.md`` §6.8 lists: database
concurrency errors Odoo reports after its own retries, Odoo exceptions, proxy and transport failures, and
the two that matter most for a sync engine: ``commit_then_fail`` (the call committed but the client never
learns it) and ``delay_commit`` (a transaction stamped early that becomes visible late).
"""

from __future__ import annotations

import random
import threading
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from connectors.openspp.fake.domain import match_dict
from connectors.openspp.fake.errors import (
    ACCESS_DENIED,
    ACCESS_ERROR,
    DEADLOCK_DETECTED,
    LOCK_NOT_AVAILABLE,
    MISSING_ERROR,
    OPERATIONAL_ERROR,
    POOL_ERROR,
    SERIALIZATION_FAILURE,
    USER_ERROR,
    VALIDATION_ERROR,
    RpcError,
    session_expired,
)

FaultKind = Literal[
    "serialization_failure",
    "lock_not_available",
    "deadlock",
    "operational_error",
    "pool_full",
    "access_denied",
    "access_error",
    "validation_error",
    "missing_error",
    "user_error",
    "session_expired",
    "http_status",
    "http_500_html",
    "invalid_json_body",
    "reset_connection",
    "slow",
    "omit_result",
    "commit_then_fail",
    "delay_commit",
]

ERRORS: dict[str, tuple[str, str]] = {
    "serialization_failure": (
        SERIALIZATION_FAILURE,
        "could not serialize access due to concurrent update",
    ),
    "lock_not_available": (
        LOCK_NOT_AVAILABLE,
        'could not obtain lock on row in relation "res_partner"',
    ),
    "deadlock": (
        DEADLOCK_DETECTED,
        "deadlock detected\nDETAIL:  Process 4242 waits for ShareLock on transaction 81234; "
        "blocked by process 4243.\nProcess 4243 waits for ShareLock on transaction 81233; "
        "blocked by process 4242.\nHINT:  See server log for query details.\n",
    ),
    "operational_error": (
        OPERATIONAL_ERROR,
        "server closed the connection unexpectedly\n\tThis probably means the server terminated "
        "abnormally\n\tbefore or while processing the request.\n",
    ),
    "pool_full": (POOL_ERROR, "The Connection Pool Is Full"),
    "access_denied": (ACCESS_DENIED, "Access Denied"),
    "access_error": (
        ACCESS_ERROR,
        "You are not allowed to modify 'Contact' (res.partner) records.\n\n"
        "No group currently allows this operation.\n\n"
        "Contact your administrator to request access if necessary.",
    ),
    "validation_error": (VALIDATION_ERROR, "The record is not valid."),
    "missing_error": (MISSING_ERROR, "Record does not exist or has been deleted."),
    "user_error": (USER_ERROR, "The operation cannot be completed."),
}

PROXY_STATUSES = (401, 403, 500, 502, 503, 504)
"""What a reverse proxy in front of Odoo answers on its own: refusals (an auth gateway) and outages."""

PRE_EXECUTION = frozenset(
    set(ERRORS) | {"session_expired", "http_status", "http_500_html", "invalid_json_body", "reset_connection"}
)


class FaultSpec(BaseModel):
    """One fault rule; unset scope fields match everything."""

    model_config = ConfigDict(extra="forbid")

    kind: FaultKind
    service: str | None = None
    model: str | None = None
    method: str | None = Field(
        default=None, description="object method (create, write, ...) or common method"
    )
    match: list[Any] | None = Field(
        default=None, description="domain over the call's value dicts (create/write/load rows)"
    )
    times: int | None = Field(default=None, ge=1)
    probability: float | None = Field(default=None, ge=0, le=1)
    message: str | None = None
    status: int = 502
    ms: int = Field(default=0, ge=0)
    then: Literal["502", "timeout", "reset"] = "502"

    @model_validator(mode="after")
    def _default_times(self) -> FaultSpec:
        if self.times is None and self.probability is None:
            self.times = 1
        if self.kind == "http_status" and self.status not in PROXY_STATUSES:
            raise ValueError("http_status takes status 401, 403, 500, 502, 503 or 504")
        return self


class Fault:
    def __init__(self, fid: int, spec: FaultSpec):
        self.id = fid
        self.spec = spec
        self.remaining = spec.times
        self.fired = 0

    def error(self) -> RpcError:
        if self.spec.kind == "session_expired":
            return session_expired()
        name, message = ERRORS[self.spec.kind]
        return RpcError(name, self.spec.message or message)

    def describe(self) -> dict[str, Any]:
        return {"id": self.id, **self.spec.model_dump(), "remaining": self.remaining, "fired": self.fired}


class Faults:
    """The active fault rules, consulted once per JSON-RPC call."""

    def __init__(self, seed: int = 0):
        self._lock = threading.Lock()
        self._rules: list[Fault] = []
        self._next = 0
        self.rng = random.Random(seed)

    def add(self, spec: FaultSpec | dict[str, Any]) -> int:
        spec = spec if isinstance(spec, FaultSpec) else FaultSpec.model_validate(spec)
        with self._lock:
            self._next += 1
            self._rules.append(Fault(self._next, spec))
            return self._next

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def reseed(self, seed: int) -> None:
        with self._lock:
            self.rng = random.Random(seed)

    def describe(self) -> list[dict[str, Any]]:
        with self._lock:
            return [f.describe() for f in self._rules]

    def pick(
        self, service: str, model: str | None, method: str | None, values: list[dict[str, Any]]
    ) -> Fault | None:
        """The first rule that matches this call and decides to fire (consuming one of its shots)."""
        with self._lock:
            for fault in self._rules:
                spec = fault.spec
                if fault.remaining is not None and fault.remaining <= 0:
                    continue
                if spec.service and spec.service != service:
                    continue
                if spec.model and spec.model != model:
                    continue
                if spec.method and spec.method != method:
                    continue
                if spec.match is not None and not any(_matches(spec.match, v) for v in values):
                    continue
                if spec.probability is not None and self.rng.random() >= spec.probability:
                    continue
                if fault.remaining is not None:
                    fault.remaining -= 1
                fault.fired += 1
                return fault
        return None


def _matches(domain: list[Any], values: dict[str, Any]) -> bool:
    try:
        return match_dict(domain, values)
    except RpcError:
        return False


def call_values(method: str | None, args: list[Any]) -> list[dict[str, Any]]:
    """The value dicts a fault predicate is evaluated on, for the methods that carry values."""
    try:
        if method == "create" and args:
            first = args[0]
            return [first] if isinstance(first, dict) else [v for v in first if isinstance(v, dict)]
        if method == "write" and len(args) > 1 and isinstance(args[1], dict):
            return [args[1]]
        if method == "load" and len(args) > 1:
            fields = args[0]
            return [
                {str(f).split("/")[0]: cell for f, cell in zip(fields, row, strict=False)}
                for row in args[1]
                if isinstance(row, list | tuple)
            ]
    except TypeError:
        return []
    return []

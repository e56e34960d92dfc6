"""Fault injection for the mock server: the ways real networks and registries fail a sync.

A fault is scripted (the next matching requests fail in order) or drawn at random at a given rate from a
seeded generator, so a stress test is reproducible. Kinds:

- ``status``: answer an error status (429 with or without ``Retry-After``, 5xx) without doing the work;
- ``commit_then_fail``: do the work, then answer the error status — the answer is lost, the data is not;
- ``reset``: drop the connection mid-answer (after doing the work when ``commit`` is set);
- ``slow``: wait ``delay`` seconds before answering (past the client's timeout), after doing the work when
  ``commit`` is set.

``latency`` adds a delay to every request, so a test can kill a client while its requests are in flight.
``quota`` makes a push take at most that many events per request and answer the rest one by one as
retryable ("over this request's quota"), as registries that throttle by records rather than by request do.
``down_after`` answers the first that many pushes as usual and every later one 503 without doing the work:
a registry that goes down part-way through a run and stays down past any retry budget.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field
from typing import Any, Literal

from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

Target = Literal["push", "pull", "lookup", "any"]


@dataclass
class Fault:
    kind: Literal["status", "commit_then_fail", "reset", "slow"] = "status"
    status: int = 503
    retry_after: float | None = None
    commit: bool = False
    delay: float = 0.0
    on: Target = "push"

    @property
    def applies_work(self) -> bool:
        return self.kind == "commit_then_fail" or (self.kind in ("reset", "slow") and self.commit)

    def matches(self, target: str) -> bool:
        return self.on in ("any", target)


@dataclass
class FaultPlan:
    script: list[Fault] = field(default_factory=list)
    rate: float = 0.0
    choices: list[Fault] = field(default_factory=list)
    rng: random.Random = field(default_factory=random.Random)
    rejects: dict[str, str] = field(default_factory=dict)
    latency: float = 0.0
    quota: int = 0
    down_after: int | None = None
    pushes: int = 0
    injected: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> FaultPlan:
        rand = body.get("random") or {}
        return cls(
            script=[Fault(**f) for f in body.get("script", [])],
            rate=float(rand.get("rate", 0.0)),
            choices=[Fault(**f) for f in rand.get("faults", [])],
            rng=random.Random(rand.get("seed", 0)),
            rejects=dict(body.get("reject", {})),
            latency=float(body.get("latency", 0.0)),
            quota=int(body.get("quota", 0)),
            down_after=None if body.get("down_after") is None else int(body["down_after"]),
        )

    def draw(self, target: str) -> Fault | None:
        """The fault for this request, if any: the next matching scripted one, else a random one."""
        with self.lock:
            if self.down_after is not None and target == "push":
                self.pushes += 1
                if self.pushes > self.down_after:
                    self.injected += 1
                    return Fault()
            for index, fault in enumerate(self.script):
                if fault.matches(target):
                    del self.script[index]
                    self.injected += 1
                    return fault
            candidates = [f for f in self.choices if f.matches(target)]
            if candidates and self.rng.random() < self.rate:
                self.injected += 1
                return self.rng.choice(candidates)
        return None


def status_response(fault: Fault) -> JSONResponse:
    headers = {"Retry-After": str(int(fault.retry_after))} if fault.retry_after is not None else {}
    return JSONResponse(
        {"status": "error", "message": f"injected fault: HTTP {fault.status}"},
        status_code=fault.status,
        headers=headers,
    )


class DroppedConnection(Response):
    """Starts an answer, then abandons it: the server closes the socket, the client sees a reset."""

    def __init__(self) -> None:
        super().__init__(content=b"")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"4096")],
            }
        )
        await send({"type": "http.response.body", "body": b'{"status": "succ', "more_body": True})
        raise ConnectionAbortedError("injected fault: connection dropped")

"""Fault injection for the fake Lightning (reference openfn.md §6.5): the ways a real instance and the network
between fail a sync.

A fault applies to requests whose ``"METHOD /path"`` matches its ``route`` (shell-style pattern). It comes
from a FIFO script (the next matching requests fail in order; ``times`` repeats one entry) or is drawn at a
given rate from a seeded generator, so a storm is reproducible. Faults that need the work to be done
(``timeout_after_commit``, ``too_many_runs``, ``reset`` with ``commit``) are drawn only by a request that
reaches the point where Lightning creates the work order, never by one refused earlier (a 413, a 404).
Actions:

- ``status``: a canned answer (``status``, ``body``, ``headers``) without side effects, e.g. 429, 502,
  503 with ``Retry-After``;
- ``delay``: wait ``seconds``, then handle the request normally;
- ``timeout_after_commit``: handle the request (the work order exists), then wait ``seconds`` before
  answering, past the client's timeout: the client cannot know its request was accepted;
- ``reset``: drop the connection without a complete answer (after doing the work when ``commit``);
- ``truncate_stream``: cut a collections list answer in the middle of its JSON;
- ``too_many_runs``: accept the request but reject its run, as a spent run quota does;
- ``flip_trigger``: set the trigger's ``enabled`` to ``enabled``, then handle the request;
- ``rotate_api_key``: give the trigger's API-key method a new key, then handle the request.
"""

from __future__ import annotations

import fnmatch
import random
import threading
from dataclasses import asdict, dataclass, field
from typing import Any

ACTIONS = frozenset(
    {
        "status",
        "delay",
        "timeout_after_commit",
        "reset",
        "truncate_stream",
        "too_many_runs",
        "flip_trigger",
        "rotate_api_key",
    }
)


@dataclass
class Fault:
    action: str = "status"
    route: str = "POST /i/*"
    status: int = 503
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    commit: bool = False
    enabled: bool = False
    times: int = 1

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"unknown fault action {self.action!r} (known: {', '.join(sorted(ACTIONS))})")

    @property
    def stage(self) -> str:
        """``commit`` for faults that act on an accepted request, ``request`` for the others."""
        if self.action in ("timeout_after_commit", "too_many_runs") or (
            self.action == "reset" and self.commit
        ):
            return "commit"
        return "request"

    def matches(self, method: str, path: str, stage: str = "request") -> bool:
        return self.stage == stage and fnmatch.fnmatchcase(f"{method} {path}", self.route)


@dataclass
class InjectedFault:
    action: str
    method: str
    path: str


@dataclass
class FaultPlan:
    script: list[Fault] = field(default_factory=list)
    rate: float = 0.0
    choices: list[Fault] = field(default_factory=list)
    seed: int = 0
    injected: list[InjectedFault] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._lock = threading.Lock()

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> FaultPlan:
        """``{"script": [fault...], "random": {"rate": 0.1, "seed": 1, "faults": [fault...]}}``."""
        rand = body.get("random") or {}
        return cls(
            script=[Fault(**f) for f in body.get("script", [])],
            rate=float(rand.get("rate", 0.0)),
            choices=[Fault(**f) for f in rand.get("faults", [])],
            seed=int(rand.get("seed", 0)),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "script": [asdict(f) for f in self.script],
            "random": {"rate": self.rate, "seed": self.seed, "faults": [asdict(f) for f in self.choices]},
            "injected": [asdict(i) for i in self.injected],
        }

    def add(self, fault: Fault) -> None:
        with self._lock:
            self.script.append(fault)

    def clear(self) -> None:
        with self._lock:
            self.script.clear()
            self.choices.clear()
            self.rate = 0.0
            self.injected.clear()

    def draw(self, method: str, path: str, stage: str = "request") -> Fault | None:
        """The fault for a request at a stage, if any: the next matching scripted one, else a random one."""
        with self._lock:
            for index, fault in enumerate(self.script):
                if fault.matches(method, path, stage):
                    fault.times -= 1
                    if fault.times <= 0:
                        del self.script[index]
                    self.injected.append(InjectedFault(fault.action, method, path))
                    return fault
            candidates = [f for f in self.choices if f.matches(method, path, stage)]
            if candidates and self._rng.random() < self.rate:
                fault = self._rng.choice(candidates)
                self.injected.append(InjectedFault(fault.action, method, path))
                return fault
        return None

    def count(self, action: str | None = None) -> int:
        with self._lock:
            return sum(1 for i in self.injected if action is None or i.action == action)

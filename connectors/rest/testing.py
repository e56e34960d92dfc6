"""The contract suite's adapter for the fake REST registry, for anyone testing a connector built on it.

A plugin that packages an API description for the REST connector (see ``examples/``) runs the contract
suite against :mod:`connectors.rest.fake` with this adapter instead of writing its own. Imports pytest
(through the contract module): for tests only.
"""

from __future__ import annotations

from typing import Any

import httpx

from connector_core.testing.contract import FakeControl


class FakeRestControl(FakeControl):
    """The fake REST registry's ``/_control`` API, as the contract suite needs it."""

    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=url, timeout=10)
        self.script: list[dict[str, Any]] = []
        self.rejects: dict[str, str] = {}
        self.switches: dict[str, bool] = {}

    def _send(self) -> None:
        self.http.put(
            "/_control/faults", json={"script": self.script, "reject": self.rejects, **self.switches}
        ).raise_for_status()

    def count(self, ref: str) -> int:
        return sum(1 for r in self.http.get("/_control/records").json() if r.get("external_ref") == ref)

    def fail_writes(self, times: int = 1, *, after_commit: bool = False) -> None:
        kind = "commit_then_fail" if after_commit else "status"
        self.script = [{"kind": kind, "status": 503, "on": "write"} for _ in range(times)]
        self._send()

    def reject(self, ref: str, message: str) -> None:
        self.rejects[ref] = message
        self._send()

    def clear_faults(self) -> None:
        self.script, self.rejects, self.switches = [], {}, {}
        self._send()

    def create_remote(self, entity_name: str, data: dict[str, Any]) -> str:
        answer = self.http.post("/_control/records", json={"type": entity_name, "data": data})
        return str(answer.raise_for_status().json()["id"])

    def update_remote(self, external_id: str, data: dict[str, Any]) -> None:
        self.http.patch(f"/_control/records/{external_id}", json={"data": data}).raise_for_status()

    def fail_reads(self, times: int = 1) -> None:
        self.script = [{"kind": "status", "status": 503, "on": "read"} for _ in range(times)]
        self._send()

    def fail_everything(self) -> None:
        self.switches["fail_all"] = True
        self._send()

    def refuse_login(self) -> None:
        self.switches["refuse_credentials"] = True
        self._send()

"""The mock connector passes the contract suite every connector must pass.

``MockControl`` is the whole adapter between the suite and the mock server's ``/_control`` API: this is
all a plugin author writes to run the suite against their own fake.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from connector_core.testing.contract import ConnectorContract, FakeControl, SettingsFactory
from connector_core.testing.server import ServedApp
from connectors.mock.connector import MockConnector
from connectors.mock.server import create_app


class MockControl(FakeControl):
    """The mock server's control API: a fault plan is replaced whole, so the adapter keeps its parts."""

    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=url, timeout=10)
        self.script: list[dict[str, Any]] = []
        self.rejects: dict[str, str] = {}
        self.storm: dict[str, Any] = {}

    def _send(self) -> None:
        self.http.put(
            "/_control/faults", json={"script": self.script, "reject": self.rejects, **self.storm}
        ).raise_for_status()

    def count(self, ref: str) -> int:
        records = self.http.get("/_control/records").json()
        return sum(1 for r in records if r["entityGuid"] == ref)

    def fail_writes(self, times: int = 1, *, after_commit: bool = False) -> None:
        kind = "commit_then_fail" if after_commit else "status"
        self.script = [{"kind": kind, "status": 503, "on": "push"} for _ in range(times)]
        self._send()

    def reject(self, ref: str, message: str) -> None:
        self.rejects[ref] = message
        self._send()

    def clear_faults(self) -> None:
        self.script, self.rejects, self.storm = [], {}, {}
        self._send()

    def fail_everything(self) -> None:
        """Every request answered 500 (a random storm at rate 1); the mock protocol has no login and no
        metadata, so those two clauses do not apply to it."""
        self.storm = {"random": {"rate": 1.0, "faults": [{"kind": "status", "status": 500, "on": "any"}]}}
        self._send()

    def create_remote(self, entity_name: str, data: dict[str, Any]) -> str:
        answer = self.http.post("/_control/records", json={"entityName": entity_name, "data": data})
        return str(answer.raise_for_status().json()["id"])

    def update_remote(self, external_id: str, data: dict[str, Any]) -> None:
        self.http.patch(f"/_control/records/{external_id}", json={"data": data}).raise_for_status()

    def fail_reads(self, times: int = 1) -> None:
        self.script = [{"kind": "status", "status": 503, "on": "pull"} for _ in range(times)]
        self._send()


class TestMockContract(ConnectorContract):
    connector_class = MockConnector

    @pytest.fixture
    def fake_app(self) -> Any:
        return create_app()

    @pytest.fixture
    def connector_settings(self) -> SettingsFactory:
        return lambda url: {"url": url, "timeout": 5, "lookback_seconds": 0}

    @pytest.fixture
    def invalid_settings(self, connector_settings: SettingsFactory) -> list[tuple[dict[str, Any], str]]:
        return [
            ({"url": "http://x", "timeout": 0}, "timeout"),
            ({"url": "http://x", "timeout": "soon"}, "timeout"),
        ]

    @pytest.fixture
    def fake_control(self, dcsync_fake_server: ServedApp) -> FakeControl:
        return MockControl(dcsync_fake_server.url)

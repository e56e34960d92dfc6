"""The mock connector passes the contract suite against a server speaking only the adapter protocol.

The server (``connectors.mock.plain``) has no per-record results and no by-ref lookup, so the connector
detects that and works from what the protocol gives: a whole-batch success, and the server's own events.
The one clause it cannot meet is a refusal of one record while the rest of its request arrives: the
protocol has no way to say that, so ``reject`` skips those clauses with the reason.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from connector_core.testing.contract import ConnectorContract, FakeControl, SettingsFactory
from connector_core.testing.server import ServedApp
from connectors.mock.connector import MockConnector
from connectors.mock.plain import create_plain_app


class PlainControl(FakeControl):
    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=url, timeout=10)

    def count(self, ref: str) -> int:
        entity = self.http.get("/_control/entities").json().get(ref)
        return int(entity["creates"]) if entity else 0

    def fail_writes(self, times: int = 1, *, after_commit: bool = False) -> None:
        kind = "commit_then_fail" if after_commit else "status"
        script = [{"kind": kind, "status": 503, "on": "push"} for _ in range(times)]
        self.http.put("/_control/faults", json={"script": script}).raise_for_status()

    def reject(self, ref: str, message: str) -> None:
        pytest.skip("DataCollect's mock-sync-server protocol cannot refuse one record of a request")

    def clear_faults(self) -> None:
        self.http.put("/_control/faults", json={}).raise_for_status()

    def create_remote(self, entity_name: str, data: dict[str, Any]) -> str:
        guid = str(uuid.uuid4())
        event = {
            "guid": str(uuid.uuid4()),
            "entityGuid": guid,
            "type": "create-individual",
            "data": {"entityName": entity_name, **data},
        }
        self.http.post("/_control/events", json=event).raise_for_status()
        return guid

    def update_remote(self, external_id: str, data: dict[str, Any]) -> None:
        event = {
            "guid": str(uuid.uuid4()),
            "entityGuid": external_id,
            "type": "update-individual",
            "data": data,
        }
        self.http.post("/_control/events", json=event).raise_for_status()

    def fail_reads(self, times: int = 1) -> None:
        script = [{"kind": "status", "status": 503, "on": "pull"} for _ in range(times)]
        self.http.put("/_control/faults", json={"script": script}).raise_for_status()


class TestMockContractOnThePlainProtocol(ConnectorContract):
    connector_class = MockConnector

    @pytest.fixture
    def fake_app(self) -> Any:
        return create_plain_app()

    @pytest.fixture
    def connector_settings(self) -> SettingsFactory:
        return lambda url: {"url": url, "timeout": 5, "lookback_seconds": 0}

    @pytest.fixture
    def fake_control(self, dcsync_fake_server: ServedApp) -> FakeControl:
        return PlainControl(dcsync_fake_server.url)

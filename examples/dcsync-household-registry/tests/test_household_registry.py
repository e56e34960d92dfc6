"""The Household Registry plugin: the connector contract, then the example project run end to end."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest
from connector_core.events import FormSubmission
from connector_core.project import Project
from connector_core.sync.runner import run_connector
from connector_core.testing.contract import ConnectorContract, FakeControl, SettingsFactory
from connector_core.testing.harness import FAST_RETRY
from connector_core.testing.server import ServedApp
from connectors.rest.fake import FakeRestOptions, create_app
from connectors.rest.testing import FakeRestControl

from household_registry.connector import HouseholdRegistryConnector

HERE = Path(__file__).resolve().parent.parent
SECRET = FakeRestOptions().client_secret


class TestHouseholdRegistryContract(ConnectorContract):
    connector_class = HouseholdRegistryConnector

    @pytest.fixture
    def fake_app(self) -> Any:
        return create_app(FakeRestOptions(auth="oauth2", pagination="link", max_page_size=4))

    @pytest.fixture
    def connector_settings(self) -> SettingsFactory:
        return lambda url: {"url": url, "client_id": "dcsync", "client_secret": SECRET}

    @pytest.fixture
    def fake_control(self, dcsync_fake_server: ServedApp) -> FakeControl:
        return FakeRestControl(dcsync_fake_server.url)


def test_the_example_project_syncs_both_ways(
    tmp_path: Path, dcsync_serve: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = dcsync_serve(create_app(FakeRestOptions(auth="oauth2", pagination="link")))
    monkeypatch.setenv("REGISTRY_URL", served.url)
    monkeypatch.setenv("REGISTRY_CLIENT_SECRET", SECRET)
    shutil.copy(HERE / "dcsync.yaml", tmp_path / "dcsync.yaml")
    shutil.copytree(HERE / "mappings", tmp_path / "mappings")
    control = httpx.Client(base_url=served.url, timeout=10)
    project = Project.open(tmp_path / "dcsync.yaml")
    try:
        lines = (HERE / "samples" / "events.jsonl").read_text().splitlines()
        project.eventlog.append(FormSubmission.from_json_line(line) for line in lines)
        entities = sum(1 for _ in project.eventlog.iter_entities())

        first = run_connector(project, "registry", retry=FAST_RETRY)
        assert first.ok, first.error
        records = control.get("/_control/records").json()
        assert len(records) == entities
        person = next(r for r in records if r["type"] == "individual")
        assert person["given_name"] and person["sex"] in ("F", "M") and person["parent_id"]

        control.patch(f"/_control/records/{person['id']}", json={"data": {"phone": "+639170000042"}})
        second = run_connector(project, "registry", retry=FAST_RETRY)
        assert second.ok, second.error
        assert second.pull is not None and second.pull.counts.appended == 1
        entity = project.eventlog.get_entity(person["external_ref"])
        assert entity is not None and entity.data["phone_number"] == "+639170000042"
        assert second.push is not None and second.push.counts.created + second.push.counts.updated == 0
    finally:
        project.close()

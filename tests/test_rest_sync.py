"""The demo data synced both ways with a REST system described only in dcsync.yaml.

The fake registry wants OAuth2 client credentials and pages with an opaque cursor; the project file below
is everything dcsync knows about it. The secret comes from the environment, as an operator would keep it.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from connector_core.cli import app as cli
from connector_core.project import Project
from connector_core.sample import mobile_log
from connector_core.testing.harness import FAST_RETRY
from connector_core.testing.server import ServedApp
from connectors.rest.fake import FakeRestOptions, create_app

PROJECT = """\
version: 1
connectors:
  registry:
    type: rest
    batch_size: 20
    page_size: 15
    settings:
      base_url: {url}
      timeout: 5
      auth:
        type: oauth2_client_credentials
        token_url: /oauth/token
        client_id: dcsync
        client_secret: ${{REGISTRY_CLIENT_SECRET}}
        scope: records
      rate_limit: {{requests_per_second: 500, burst: 50}}
      endpoints:
        check:  {{method: GET, path: /api/health}}
        create: {{method: POST, path: /api/records, id_path: $.data.id}}
        update: {{method: PATCH, path: "/api/records/{{external_id}}"}}
        delete: {{method: DELETE, path: "/api/records/{{external_id}}"}}
        lookup:
          path: /api/records
          params: {{external_ref: "{{refs}}"}}
          records: $.data
        list:
          path: /api/records
          records: $.data
          since_param: updated_since
          page_size_param: limit
          max_page_size: 10          # the registry's cap: a pull page of 15 takes two requests' worth
          pagination: {{type: cursor, param: cursor, next_path: $.next_cursor}}
      record:
        id: $.id
        ref: $.external_ref
        entity_name: $.type
        parent_id: $.parent_id
        updated_at: $.updated_at
        version: $.version
        deleted: $.deleted
      error_message: $.error.message
      errors:
        - {{status: 409, body_contains: already registered, action: permanent}}
"""


@pytest.fixture
def registry(dcsync_serve: Any) -> tuple[ServedApp, httpx.Client]:
    served = dcsync_serve(create_app(FakeRestOptions(auth="oauth2", pagination="cursor", max_page_size=10)))
    return served, httpx.Client(base_url=served.url, timeout=10)


@pytest.fixture
def project(tmp_path: Path, registry: tuple[ServedApp, httpx.Client], monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("REGISTRY_CLIENT_SECRET", "fake-client-secret")
    path = tmp_path / "dcsync.yaml"
    path.write_text(PROJECT.format(url=registry[0].url))
    opened = Project.open(path)
    yield opened
    opened.close()


def test_the_demo_data_goes_out_once_comes_back_edited_and_settles(
    project: Project, registry: tuple[ServedApp, httpx.Client]
) -> None:
    from connector_core.sync.runner import run_connector

    _, control = registry
    project.eventlog.append(mobile_log(households=20, members=3, updates=15))
    entities = {e.guid: e for e in project.eventlog.iter_entities()}

    first = run_connector(project, "registry", retry=FAST_RETRY)
    assert first.ok, first.error
    assert first.push is not None and first.push.counts.created == len(entities) == 80
    records = control.get("/_control/records").json()
    assert Counter(r["external_ref"] for r in records) == Counter({guid: 1 for guid in entities})
    by_ref = {r["external_ref"]: r for r in records}
    for guid, entity in entities.items():
        if entity.parent_guid:
            assert by_ref[guid]["parent_id"] == by_ref[entity.parent_guid]["id"], (
                "members point at households"
            )
        assert by_ref[guid]["type"] == entity.entity_name
    stats = control.get("/_control/stats").json()
    assert stats["tokens_issued"] == 1, "one token, cached for the whole run"

    people = [r for r in records if r["type"] == "individual"][:12]
    for record in people:
        control.patch(f"/_control/records/{record['id']}", json={"data": {"phone_number": "+639170000000"}})
    control.post("/_control/records", json={"type": "household", "data": {"household_name": "Walk-in"}})

    second = run_connector(project, "registry", retry=FAST_RETRY)
    assert second.ok, second.error
    assert second.pull is not None and second.pull.counts.appended == 13
    for record in people:
        entity = project.eventlog.get_entity(record["external_ref"])
        assert entity is not None and entity.data["phone_number"] == "+639170000000"
    assert any(e.data.get("household_name") == "Walk-in" for e in project.eventlog.iter_entities())
    assert second.push is not None and second.push.counts.created + second.push.counts.updated == 0

    third = run_connector(project, "registry", retry=FAST_RETRY)
    assert third.ok and third.pull is not None and third.push is not None
    assert third.pull.counts.appended == 0 and third.push.counts.created + third.push.counts.updated == 0
    assert len(control.get("/_control/records").json()) == 81


def test_a_revoked_token_mid_sync_is_renewed_and_nothing_is_lost(
    project: Project, registry: tuple[ServedApp, httpx.Client]
) -> None:
    from connector_core.sync.runner import run_connector

    _, control = registry
    project.eventlog.append(mobile_log(households=5, members=2, updates=0))
    assert run_connector(project, "registry", retry=FAST_RETRY).ok
    control.post("/_control/revoke")
    project.eventlog.append(mobile_log(households=5, members=2, updates=0, seed=99))
    report = run_connector(project, "registry", retry=FAST_RETRY)
    assert report.ok, report.error
    stats = control.get("/_control/stats").json()
    assert stats["tokens_issued"] == 2 and stats["duplicate_creates"] == {}
    assert stats["records"] == 30


def test_the_cli_checks_and_runs_it(project: Project, registry: tuple[ServedApp, httpx.Client]) -> None:
    path = str(project.config.path)
    project.eventlog.append(mobile_log(households=2, members=2, updates=0))
    runner = CliRunner()
    env = {"COLUMNS": "200", "REGISTRY_CLIENT_SECRET": "fake-client-secret"}
    checked = runner.invoke(cli, ["check", "registry", "-c", path], env=env)
    assert checked.exit_code == 0, checked.output
    assert "answers GET /api/health" in checked.output
    ran = runner.invoke(cli, ["run", "registry", "-c", path], env=env)
    assert ran.exit_code == 0, ran.output
    assert len(registry[1].get("/_control/records").json()) == 6
    wrong = runner.invoke(
        cli, ["check", "registry", "-c", path], env={**env, "REGISTRY_CLIENT_SECRET": "nope-nope"}
    )
    assert wrong.exit_code == 1 and "invalid_client" in wrong.output and "nope-nope" not in wrong.output

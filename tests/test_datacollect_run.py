"""Issue 15 §7: a run's pull sees the DataCollect tenant as of the start of the run, so a field edited on a
phone and on the remote between two runs is a conflict, decided by the policy, and afterwards DataCollect,
the mirror and the remote hold the same winner (checked on all three, not on dcsync's counts)."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from contracts.scenarios import event, ts

from connector_core.events import FormSubmission, format_timestamp, utc_now
from connector_core.project import Project
from connector_core.retry import RetryPolicy
from connector_core.sync.runner import run_connector
from connector_core.testing.fake_datacollect import FakeDataCollect, create_app
from connector_core.testing.server import serve
from connectors.mock.server import create_app as create_mock

EMAIL, PASSWORD = "sync@example.org", "correct horse"
FAST = RetryPolicy(max_attempts=3, initial_delay=0.01, max_delay=0.05, max_elapsed=10)


def _person(n: int) -> FormSubmission:
    data = {"entityName": "individual", "name": f"Person {n}", "national_id": f"ID-{n:05d}", "phone": "+0"}
    return event("create-individual", f"person-{n}", data, guid=f"ev-person-{n}", at=ts(n))


@pytest.mark.parametrize("policy, winner", [("external-wins", "+222"), ("local-wins", "+111")])
@pytest.mark.parametrize("phone_first", [True, False])
def test_a_field_edited_on_a_phone_and_on_the_remote_is_a_conflict_and_all_three_end_equal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, policy: str, winner: str, phone_first: bool
) -> None:
    fake = FakeDataCollect(email=EMAIL, password=PASSWORD, tenants=("demo",))
    assert fake.store("demo", [_person(i).to_json() for i in range(3)]) == []
    monkeypatch.setenv("DC_PASSWORD", PASSWORD)
    with serve(create_app(fake)) as server, serve(create_mock()) as mock:
        config = tmp_path / "dcsync.yaml"
        config.write_text(
            "eventlog:\n"
            "  backend: datacollect\n"
            f"  url: {server.url}\n"
            "  config_id: demo\n"
            f"  email: {EMAIL}\n"
            "  password: ${DC_PASSWORD}\n"
            "  lookback_seconds: 600\n"
            "connectors:\n"
            "  reg:\n"
            "    type: mock\n"
            f"    conflict_policy: {policy}\n"
            "    settings:\n"
            f"      url: {mock.url}\n"
        )
        project = Project.open(config)
        try:
            first = run_connector(project, "reg", retry=FAST)
            assert first.ok, first.error
            record = next(
                r for r in httpx.get(f"{mock.url}/_control/records").json() if r["entityGuid"] == "person-1"
            )

            def phone_edit() -> None:
                whole = {**_person(1).data, "phone": "+111"}  # the phone resends the whole form
                edit = {
                    **_person(1).to_json(),
                    "guid": "ev-phone-edit",
                    "type": "update-individual",
                    "data": whole,
                    "timestamp": format_timestamp(utc_now()),
                }
                assert fake.store("demo", [edit]) == []

            def remote_edit() -> None:
                httpx.patch(f"{mock.url}/_control/records/{record['id']}", json={"data": {"phone": "+222"}})

            for edit in (phone_edit, remote_edit) if phone_first else (remote_edit, phone_edit):
                edit()
                time.sleep(0.01)
            second = run_connector(project, "reg", retry=FAST)
            assert second.ok, second.error
            conflicts = project.state.conflicts("reg", status=None)
            assert [c.entity_guid for c in conflicts] == ["person-1"]
            mirror = project.eventlog.get_entity("person-1")
        finally:
            project.close()
        remote = httpx.get(f"{mock.url}/_control/records").json()
        remote_phone = next(r for r in remote if r["id"] == record["id"])["data"]["phone"]
    theirs = fake.entity("demo", "person-1")
    assert theirs is not None and mirror is not None
    assert (theirs.data["phone"], mirror.data["phone"], remote_phone) == (winner, winner, winner)
    assert mirror.data == theirs.data


def _project(tmp_path: Path, server_url: str, mock_url: str) -> Path:
    config = tmp_path / "dcsync.yaml"
    config.write_text(
        "eventlog:\n"
        "  backend: datacollect\n"
        f"  url: {server_url}\n"
        "  config_id: demo\n"
        f"  email: {EMAIL}\n"
        "  password: ${DC_PASSWORD}\n"
        "connectors:\n"
        "  reg:\n"
        "    type: mock\n"
        "    settings:\n"
        f"      url: {mock_url}\n"
    )
    return config


def _phone_edited_tenant(clock: Any = None) -> FakeDataCollect:
    fake = FakeDataCollect(email=EMAIL, password=PASSWORD, tenants=("demo",), clock=clock)
    edited = {**_person(1).to_json(), "guid": "ev-phone", "type": "update-individual"}
    edited["data"] = {**_person(1).data, "phone": "+111"}
    assert fake.store("demo", [_person(1).to_json(), edited]) == []  # initial != modified now
    return fake


def test_a_pulled_update_datacollect_keeps_local_is_re_sent_and_all_three_end_equal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # DataCollect's clock runs an hour ahead of dcsync's: an update dcsync stamps "now" is older than the
    # state DataCollect applied, and its conflict rule keeps its own (issue 15, 10)
    fake = _phone_edited_tenant(lambda: utc_now() + timedelta(hours=1))
    monkeypatch.setenv("DC_PASSWORD", PASSWORD)
    with serve(create_app(fake)) as server, serve(create_mock()) as mock:
        project = Project.open(_project(tmp_path, server.url, mock.url))
        try:
            assert run_connector(project, "reg", retry=FAST).ok
            record = httpx.get(f"{mock.url}/_control/records").json()[0]
            httpx.patch(f"{mock.url}/_control/records/{record['id']}", json={"data": {"phone": "+222"}})
            second = run_connector(project, "reg", retry=FAST)
            assert second.ok, second.error
            assert project.state.conflicts("reg", status="open") == []
            reasons = [i.reason for i in project.eventlog.iter_issues()]
            mirror = project.eventlog.get_entity("person-1")
        finally:
            project.close()
        remote = httpx.get(f"{mock.url}/_control/records").json()[0]["data"]["phone"]
    assert len(reasons) == 1 and "kept-local" in reasons[0] and "re-sent as" in reasons[0]
    theirs = fake.entity("demo", "person-1")
    assert theirs is not None and mirror is not None
    assert (theirs.data["phone"], mirror.data["phone"], remote) == ("+222", "+222", "+222")
    assert mirror.data == theirs.data


def test_a_pulled_update_datacollect_does_not_end_with_is_an_open_conflict_shown_by_status(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from connector_core.cli import app
    from connector_core.eventlog.datacollect_http import DataCollectClient

    fake = _phone_edited_tenant()
    monkeypatch.setenv("DC_PASSWORD", PASSWORD)
    with serve(create_app(fake)) as server, serve(create_mock()) as mock:
        config = _project(tmp_path, server.url, mock.url)
        project = Project.open(config)
        try:
            assert run_connector(project, "reg", retry=FAST).ok
            record = httpx.get(f"{mock.url}/_control/records").json()[0]
            httpx.patch(f"{mock.url}/_control/records/{record['id']}", json={"data": {"phone": "+222"}})
            real = DataCollectClient.entity_events
            late = {
                "guid": "ev-phone-late",
                "entityGuid": "person-1",
                "type": "update-individual",
                "data": {"phone": "+333"},
                "timestamp": ts(50),
                "userId": "admin",
                "syncLevel": 0,
            }

            def entity_events(self: DataCollectClient, guid: str) -> Any:
                if guid == "person-1" and "ev-phone-late" not in fake.events_by_guid:
                    fake.store("demo", [late])  # a phone's sync lands between dcsync's push and read-back
                return real(self, guid)

            monkeypatch.setattr(DataCollectClient, "entity_events", entity_events)
            second = run_connector(project, "reg", retry=FAST)
            assert second.ok, second.error
            open_ = project.state.conflicts("reg", status="open")
            assert [c.entity_guid for c in open_] == ["person-1"]
            assert open_[0].remote.get("phone") == "+222"
            issues = list(project.eventlog.iter_issues())
            assert any("DataCollect holds another state" in i.reason for i in issues)
        finally:
            project.close()
        status = CliRunner().invoke(app, ["status", "--json", "-c", str(config)])
    assert status.exit_code == 0, status.output
    assert json.loads(status.stdout)[0]["conflicts"] == 1  # dcsync status shows it

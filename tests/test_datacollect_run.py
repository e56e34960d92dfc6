"""Issue 15 §7: a run's pull sees the DataCollect tenant as of the start of the run, so a field edited on a
phone and on the remote between two runs is a conflict, decided by the policy, and afterwards DataCollect,
the mirror and the remote hold the same winner (checked on all three, not on dcsync's counts)."""

from __future__ import annotations

import time
from pathlib import Path

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


def test_a_pulled_update_datacollect_keeps_local_is_an_open_conflict_not_a_resolved_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import timedelta

    from typer.testing import CliRunner

    from connector_core.cli import app

    # DataCollect's clock runs an hour ahead of dcsync's: every update dcsync stamps "now" is older than
    # the state DataCollect applied, and its conflict rule keeps its own (issue 15, 10)
    fake = FakeDataCollect(
        email=EMAIL, password=PASSWORD, tenants=("demo",), clock=lambda: utc_now() + timedelta(hours=1)
    )
    edited = {**_person(1).to_json(), "guid": "ev-phone", "type": "update-individual"}
    edited["data"] = {**_person(1).data, "phone": "+111"}
    assert fake.store("demo", [_person(1).to_json(), edited]) == []  # initial != modified now
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
            "connectors:\n"
            "  reg:\n"
            "    type: mock\n"
            "    settings:\n"
            f"      url: {mock.url}\n"
        )
        project = Project.open(config)
        try:
            assert run_connector(project, "reg", retry=FAST).ok
            record = httpx.get(f"{mock.url}/_control/records").json()[0]
            httpx.patch(f"{mock.url}/_control/records/{record['id']}", json={"data": {"phone": "+222"}})
            second = run_connector(project, "reg", retry=FAST)
            assert second.ok, second.error
            open_ = project.state.conflicts("reg", status="open")
            assert [c.entity_guid for c in open_] == ["person-1"]
            assert open_[0].remote.get("phone") == "+222" and open_[0].local.get("phone") == "+111"
            issues = list(project.eventlog.iter_issues())
            assert any("kept-local" in i.reason for i in issues)
            mirror = project.eventlog.get_entity("person-1")
        finally:
            project.close()
        status = CliRunner().invoke(app, ["status", "--json", "-c", str(config)])
    theirs = fake.entity("demo", "person-1")
    assert theirs is not None and mirror is not None
    assert theirs.data["phone"] == mirror.data["phone"] == "+111"  # the mirror says what DataCollect holds
    assert status.exit_code == 0, status.output
    import json

    assert json.loads(status.stdout)[0]["conflicts"] == 1  # dcsync status shows it

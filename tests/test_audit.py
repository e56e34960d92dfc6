"""The audit trail: every operator action (replay, discard, resolve) is recorded with who and when, and
``dcsync audit`` lists it; per-field conflict resolution lands the chosen side of each field."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from sync_support import FAST_RETRY, event, remote_records
from typer.testing import CliRunner

from connector_core.actions import ActionError, current_actor, resolve_conflict
from connector_core.cli import app
from connector_core.project import Project
from connector_core.sync.runner import run_connector


def _audit(config: str, *args: str) -> list[dict]:
    shown = CliRunner().invoke(app, ["audit", "--json", *args, "-c", config])
    assert shown.exit_code == 0, shown.output
    return [json.loads(line) for line in shown.stdout.splitlines()]


def test_replay_and_discard_are_recorded_with_who_when_and_how_many(
    project: Project, mock_server: httpx.Client, tmp_path: Path
) -> None:
    mock_server.put("/_control/faults", json={"reject": {"p1": "bad phone", "p2": "bad phone"}})
    project.eventlog.append(
        [
            event("a", "p1", "create-individual", {"entityName": "individual", "phone_number": "x"}),
            event("b", "p2", "create-individual", {"entityName": "individual", "phone_number": "y"}),
        ]
    )
    run_connector(project, "reg", pull=False, retry=FAST_RETRY)
    first, second = project.state.dead_letters("reg")
    config = str(tmp_path / "dcsync.yaml")
    runner = CliRunner()
    discarded = runner.invoke(
        app, ["dlq", "discard", "reg", str(first.id), "--note", "duplicate of p7", "-c", config]
    )
    assert discarded.exit_code == 0, discarded.output
    mock_server.put("/_control/faults", json={})
    replayed = runner.invoke(app, ["dlq", "replay", "reg", "--all", "-c", config])
    assert replayed.exit_code == 0, replayed.output
    assert [r["entityGuid"] for r in remote_records(mock_server)] == ["p2"]

    replay, discard = _audit(config)  # newest first
    assert discard["action"] == "discard" and replay["action"] == "replay"
    assert discard["actor"] == replay["actor"] == current_actor() and current_actor().startswith("os:")
    assert discard["connector"] == "reg" and discard["detail"] == {
        "letters": 1,
        "ids": [first.id],
        "note": "duplicate of p7",
    }
    assert replay["detail"] == {"letters": 1, "delivered": 1, "failed_again": 0}
    assert discard["at"] <= replay["at"] and replay["id"] > discard["id"]
    assert [a["action"] for a in _audit(config, "--action", "discard")] == ["discard"]
    assert _audit(config, "--connector", "other") == []
    assert [a["id"] for a in _audit(config, "--before", str(replay["id"]))] == [discard["id"]]
    table = runner.invoke(app, ["audit", "-c", config], env={"COLUMNS": "200"})
    assert table.exit_code == 0 and "duplicate of p7" in table.stdout and "replay" in table.stdout


def test_a_secret_typed_into_a_note_is_not_kept(
    project: Project, mock_server: httpx.Client, tmp_path: Path
) -> None:
    mock_server.put("/_control/faults", json={"reject": {"p1": "bad phone"}})
    project.eventlog.append([event("a", "p1", "create-individual", {"entityName": "individual"})])
    run_connector(project, "reg", pull=False, retry=FAST_RETRY)
    config = str(tmp_path / "dcsync.yaml")
    note = "retried with https://admin:hunter2hunter2@registry.example/api"
    done = CliRunner().invoke(app, ["dlq", "discard", "reg", "--all", "--note", note, "-c", config])
    assert done.exit_code == 0, done.output
    (action,) = _audit(config)
    assert "hunter2hunter2" not in json.dumps(action) and "registry.example" in action["detail"]["note"]


PAST = "2025-03-01T10:00:00.000Z"


def _conflict(project: Project, mock: httpx.Client) -> int:
    """A person changed on both sides in two fields, held open by the manual policy."""
    project.eventlog.append(
        [
            event(
                "e0",
                "p1",
                "create-individual",
                {"entityName": "individual", "first_name": "Ana", "phone_number": "+1"},
            )
        ]
    )
    assert run_connector(project, "reg", retry=FAST_RETRY).ok
    (record,) = remote_records(mock)
    project.eventlog.append(
        [event("e1", "p1", "update-individual", {"first_name": "Anna", "phone_number": "+2"}, PAST)]
    )
    mock.patch(
        f"/_control/records/{record['id']}", json={"data": {"first_name": "Ann", "phone_number": "+3"}}
    )
    run_connector(project, "reg", retry=FAST_RETRY)
    (conflict,) = project.state.conflicts("reg")
    return conflict.id


def test_a_conflict_resolved_field_by_field_takes_each_fields_chosen_side_everywhere(
    make_project: Callable[..., Project], mock_server: httpx.Client, tmp_path: Path
) -> None:
    project = make_project("    conflict_policy: manual\n")
    conflict_id = _conflict(project, mock_server)
    config = str(tmp_path / "dcsync.yaml")
    runner = CliRunner()
    bad = runner.invoke(
        app, ["conflicts", "resolve", str(conflict_id), "--field", "nickname=external", "-c", config]
    )
    assert bad.exit_code != 0 and "no changed field nickname" in bad.output
    assert "Traceback" not in bad.output
    done = runner.invoke(
        app,
        [
            "conflicts",
            "resolve",
            str(conflict_id),
            "--field",
            "first_name=external",
            "--field",
            "phone_number=local",
            "-c",
            config,
        ],
    )
    assert done.exit_code == 0, done.output
    entity = project.eventlog.get_entity("p1")
    assert entity is not None
    assert (entity.data["first_name"], entity.data["phone_number"]) == ("Ann", "+2")
    settled = project.state.get_conflict(conflict_id)
    assert settled is not None and settled.status == "resolved"
    assert settled.resolution == "fields: first_name=external, phone_number=local"
    # the next push sends the field kept local; the remote's own choice stays
    assert run_connector(project, "reg", retry=FAST_RETRY).ok
    (record,) = remote_records(mock_server)
    assert (record["data"]["first_name"], record["data"]["phone_number"]) == ("Ann", "+2")
    (action,) = _audit(config, "--action", "resolve")
    assert action["target"] == "p1" and action["detail"]["conflict"] == conflict_id
    assert action["detail"]["resolution"] == settled.resolution


def test_resolving_a_closed_or_unknown_conflict_is_one_clear_error(
    make_project: Callable[..., Project], mock_server: httpx.Client
) -> None:
    project = make_project("    conflict_policy: manual\n")
    conflict_id = _conflict(project, mock_server)
    with pytest.raises(ActionError, match="each field takes 'external' or 'local'"):
        resolve_conflict(project, conflict_id, {"first_name": "mine"}, actor="ui:test")
    resolve_conflict(project, conflict_id, {"first_name": "local", "phone_number": "local"}, actor="ui:test")
    assert project.state.get_conflict(conflict_id).resolution == "local"  # every field local: the record
    with pytest.raises(ActionError, match=f"no open conflict with id {conflict_id}"):
        resolve_conflict(project, conflict_id, "external", actor="ui:test")
    assert [a.actor for a in project.state.actions()] == ["ui:test"]

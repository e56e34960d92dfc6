"""Reconciliation scenarios: conflicts under each policy, parked children, memberships, dead-letter replay."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from sync_support import FAST_RETRY, event, remote_records
from typer.testing import CliRunner

from connector_core.cli import app
from connector_core.events import FormSubmission
from connector_core.project import Project
from connector_core.state.base import Direction, OpenCounts
from connector_core.sync.runner import run_connector

PAST = "2025-03-01T10:00:00.000Z"
FUTURE = "2099-01-01T00:00:00.000Z"


def _synced_person(project: Project, mock: httpx.Client) -> dict:
    """One individual pushed to the remote; returns its remote record."""
    project.eventlog.append(
        [
            event(
                "e0",
                "p1",
                "create-individual",
                {"entityName": "individual", "first_name": "Ana", "last_name": "Cruz", "phone_number": "+1"},
            )
        ]
    )
    assert run_connector(project, "reg", retry=FAST_RETRY).ok
    (record,) = remote_records(mock)
    return record


def _both_sides_change(
    project: Project, mock: httpx.Client, local: dict, remote: dict, ts: str = PAST
) -> None:
    record = _synced_person(project, mock)
    project.eventlog.append([event("e1", "p1", "update-individual", local, ts)])
    mock.patch(f"/_control/records/{record['id']}", json={"data": remote})


def _person(project: Project) -> dict:
    entity = project.eventlog.get_entity("p1")
    assert entity is not None
    return entity.data


def test_external_wins_applies_the_remote_and_still_pushes_the_local_change_to_other_fields(
    make_project: Callable[..., Project], mock_server: httpx.Client
) -> None:
    project = make_project("    conflict_policy: external-wins\n")
    _both_sides_change(
        project, mock_server, {"phone_number": "+2", "first_name": "Anna"}, {"first_name": "Ann"}
    )
    report = run_connector(project, "reg", retry=FAST_RETRY)
    assert report.pull.counts.conflicts == 1
    assert _person(project)["first_name"] == "Ann" and _person(project)["phone_number"] == "+2"
    (record,) = remote_records(mock_server)
    assert record["data"]["phone_number"] == "+2" and record["data"]["first_name"] == "Ann"
    (history,) = project.state.conflicts("reg", status=None)
    assert history.resolution == "external" and history.remote == {"first_name": "Ann"}


def test_local_wins_keeps_the_entity_and_overwrites_the_remote(
    make_project: Callable[..., Project], mock_server: httpx.Client
) -> None:
    project = make_project("    conflict_policy: local-wins\n")
    _both_sides_change(
        project, mock_server, {"first_name": "Anna"}, {"first_name": "Ann", "last_name": "Cruz-Lee"}
    )
    report = run_connector(project, "reg", retry=FAST_RETRY)
    assert report.pull.counts.appended == 0 and report.pull.counts.conflicts == 1
    assert _person(project)["first_name"] == "Anna" and _person(project)["last_name"] == "Cruz"
    (record,) = remote_records(mock_server)
    assert record["data"]["first_name"] == "Anna" and record["data"]["last_name"] == "Cruz"


@pytest.mark.parametrize(("local_ts", "winner"), [(PAST, "Ann"), (FUTURE, "Anna")])
def test_newest_wins_follows_the_later_change(
    make_project: Callable[..., Project], mock_server: httpx.Client, local_ts: str, winner: str
) -> None:
    project = make_project("    conflict_policy: newest-wins\n")
    _both_sides_change(project, mock_server, {"first_name": "Anna"}, {"first_name": "Ann"}, ts=local_ts)
    run_connector(project, "reg", retry=FAST_RETRY)
    assert _person(project)["first_name"] == winner
    (record,) = remote_records(mock_server)
    assert record["data"]["first_name"] == winner


def test_merge_keeps_disjoint_changes_from_both_sides(
    make_project: Callable[..., Project], mock_server: httpx.Client
) -> None:
    project = make_project("    conflict_policy: merge\n")
    _both_sides_change(project, mock_server, {"phone_number": "+2"}, {"last_name": "Cruz-Lee"})
    run_connector(project, "reg", retry=FAST_RETRY)
    assert _person(project)["phone_number"] == "+2" and _person(project)["last_name"] == "Cruz-Lee"
    (record,) = remote_records(mock_server)
    assert record["data"]["phone_number"] == "+2" and record["data"]["last_name"] == "Cruz-Lee"
    assert run_connector(project, "reg", retry=FAST_RETRY).push.counts.updated == 0, "settled: nothing more"


def test_merge_gives_a_field_both_sides_changed_to_the_declared_side(
    make_project: Callable[..., Project], mock_server: httpx.Client
) -> None:
    project = make_project("    conflict_policy: merge\n    merge_fallback: local\n")
    _both_sides_change(
        project,
        mock_server,
        {"first_name": "Anna", "phone_number": "+2"},
        {"first_name": "Ann", "last_name": "Lee"},
    )
    run_connector(project, "reg", retry=FAST_RETRY)
    data = _person(project)
    assert (data["first_name"], data["phone_number"], data["last_name"]) == ("Anna", "+2", "Lee")
    (record,) = remote_records(mock_server)
    assert (record["data"]["first_name"], record["data"]["last_name"]) == ("Anna", "Lee")


def test_a_member_only_its_group_lists_has_no_local_household_change_to_win_with(
    make_project: Callable[..., Project], mock_server: httpx.Client
) -> None:
    """A ``create-group`` member with no ``parentGuid`` of its own goes with the group as its household, and
    the link's merge base keeps that household. Its entity still has no ``parentGuid``: compared with the
    base as it stands, that read as a local change of the household, so under ``merge`` with the local
    side winning a registrar's move lost to a household nobody changed locally, and the push moved the
    person back."""
    project = make_project("    conflict_policy: merge\n    merge_fallback: local\n")
    member = {"guid": "p1", "entityName": "individual", "first_name": "Ana", "phone_number": "+1"}
    project.eventlog.append(
        [
            event("e0", "hh", "create-group", {"entityName": "household", "members": [member]}),
            event("e1", "hh2", "create-group", {"entityName": "household", "members": []}),
        ]
    )
    assert run_connector(project, "reg", retry=FAST_RETRY).ok
    by_guid = {r["entityGuid"]: r for r in remote_records(mock_server)}
    assert by_guid["p1"]["data"]["parentExternalId"] == by_guid["hh"]["id"]

    project.eventlog.append([event("e2", "p1", "update-individual", {"phone_number": "+2"}, PAST)])
    moved = {**by_guid["p1"]["data"], "parentExternalId": by_guid["hh2"]["id"]}
    mock_server.patch(f"/_control/records/{by_guid['p1']['id']}", json={"data": moved})
    report = run_connector(project, "reg", retry=FAST_RETRY)
    assert report.ok, report.error
    for conflict in project.state.conflicts("reg", status=None):
        assert "parentGuid" not in conflict.local, conflict  # the household was not changed here
    by_guid = {r["entityGuid"]: r for r in remote_records(mock_server)}
    assert by_guid["p1"]["data"]["parentExternalId"] == by_guid["hh2"]["id"], "the move was undone"
    assert by_guid["p1"]["data"]["phone_number"] == "+2"


def test_manual_holds_the_entity_until_an_operator_resolves_it(
    make_project: Callable[..., Project], mock_server: httpx.Client, tmp_path: Path
) -> None:
    project = make_project("    conflict_policy: manual\n")
    _both_sides_change(project, mock_server, {"first_name": "Anna"}, {"first_name": "Ann"})
    report = run_connector(project, "reg", retry=FAST_RETRY)
    assert report.pull.counts.appended == 0 and report.push.counts.updated == 0
    (conflict,) = project.state.conflicts("reg")
    assert conflict.base["first_name"] == "Ana" and conflict.local == {"first_name": "Anna"}
    (record,) = remote_records(mock_server)
    assert record["data"]["first_name"] == "Ann", "held back: the local change is not pushed over it"

    runner = CliRunner()
    config = str(tmp_path / "dcsync.yaml")
    shown = runner.invoke(app, ["conflicts", "show", str(conflict.id), "-c", config], env={"COLUMNS": "200"})
    assert (
        shown.exit_code == 0
        and '"Ana"' in shown.stdout
        and '"Anna"' in shown.stdout
        and '"Ann"' in shown.stdout
    )
    done = runner.invoke(app, ["conflicts", "resolve", str(conflict.id), "--take", "external", "-c", config])
    assert done.exit_code == 0, done.output
    assert _person(project)["first_name"] == "Ann"
    assert project.state.conflicts("reg") == []
    assert run_connector(project, "reg", retry=FAST_RETRY).push.counts.updated == 0


def test_an_unchanged_remote_record_never_reverts_a_local_edit_waiting_to_be_pushed(
    project: Project, mock_server: httpx.Client
) -> None:
    _synced_person(project, mock_server)
    project.eventlog.append([event("e1", "p1", "update-individual", {"first_name": "Anna"})])
    with project.state.transaction() as tx:  # the remote record is read again (a look-back re-read)
        tx.set_checkpoint("reg", Direction.PULL, None)
    report = run_connector(project, "reg", push=False, retry=FAST_RETRY)
    assert report.pull.counts.appended == 0
    assert _person(project)["first_name"] == "Anna"


def test_a_child_that_arrives_before_its_parent_is_parked_then_delivered(
    make_project: Callable[..., Project], mock_server: httpx.Client
) -> None:
    project = make_project(page_size=1)
    project.eventlog.append(
        [
            event(
                "c",
                "kid",
                "create-individual",
                {"entityName": "individual", "parentGuid": "hh", "first_name": "K"},
            ),
            event("h", "hh", "create-individual", {"entityName": "household", "household_name": "H"}),
        ]
    )
    report = run_connector(project, "reg", pull=False, retry=FAST_RETRY)
    assert report.push.counts.parked == 1 and report.push.counts.created == 2
    kid = next(r for r in remote_records(mock_server) if r["entityGuid"] == "kid")
    hh = next(r for r in remote_records(mock_server) if r["entityGuid"] == "hh")
    assert kid["data"]["parentExternalId"] == hh["id"]
    assert project.state.parked("reg") == []


def _household_and_child() -> list[FormSubmission]:
    return [
        event("h", "hh", "create-individual", {"entityName": "household", "household_name": "H"}),
        event(
            "c",
            "kid",
            "create-individual",
            {"entityName": "individual", "parentGuid": "hh", "first_name": "K"},
        ),
    ]


def test_a_child_follows_its_dead_lettered_parent_and_arrives_when_the_parent_is_replayed(
    make_project: Callable[..., Project], mock_server: httpx.Client, tmp_path: Path
) -> None:
    project = make_project("    park_limit: 2\n")
    mock_server.put("/_control/faults", json={"reject": {"hh": "household rejected by the registry"}})
    project.eventlog.append(_household_and_child())
    for _ in range(4):  # however many runs pass, the child waits for its parent, uncounted
        run_connector(project, "reg", pull=False, retry=FAST_RETRY)
    (held,) = project.state.parked("reg")
    assert held.entity_guid == "kid" and held.attempts == 0
    assert held.reason == "parent hh dead-lettered: household rejected by the registry"
    assert [d.ref for d in project.state.dead_letters("reg")] == ["hh"], "the child is not dead-lettered"
    assert project.state.get_checkpoint("reg", Direction.PUSH) == project.eventlog.head()

    mock_server.put("/_control/faults", json={})
    fixed = CliRunner().invoke(app, ["dlq", "replay", "reg", "--all", "-c", str(tmp_path / "dcsync.yaml")])
    assert fixed.exit_code == 0, fixed.output
    assert project.state.parked("reg") == [] and project.state.dead_letters("reg") == []
    kid = next(r for r in remote_records(mock_server) if r["entityGuid"] == "kid")
    hh = next(r for r in remote_records(mock_server) if r["entityGuid"] == "hh")
    assert kid["data"]["parentExternalId"] == hh["id"], "the child arrived with the replay, under its parent"


def test_a_child_whose_parent_never_lands_is_dead_lettered_after_the_limit(
    make_project: Callable[..., Project], mock_server: httpx.Client, tmp_path: Path
) -> None:
    """A parent whose dead letter was discarded will not come: the child waits ``park_limit`` runs."""
    project = make_project("    park_limit: 3\n")
    mock_server.put("/_control/faults", json={"reject": {"hh": "household rejected by the registry"}})
    project.eventlog.append(_household_and_child())
    run_connector(project, "reg", pull=False, retry=FAST_RETRY)
    discard = CliRunner().invoke(app, ["dlq", "discard", "reg", "--all", "-c", str(tmp_path / "dcsync.yaml")])
    assert discard.exit_code == 0, discard.output
    run_connector(project, "reg", pull=False, retry=FAST_RETRY)
    (parked,) = project.state.parked("reg")
    assert parked.entity_guid == "kid" and "parent hh is not delivered" in parked.reason
    assert parked.attempts == 1
    run_connector(project, "reg", pull=False, retry=FAST_RETRY)
    assert project.state.parked("reg")[0].attempts == 2
    run_connector(project, "reg", pull=False, retry=FAST_RETRY)
    assert project.state.parked("reg") == []
    letters = {d.ref: d.reason for d in project.state.dead_letters("reg")}
    assert "parent hh is not delivered" in letters["kid"] and "after 3 runs" in letters["kid"]


def test_dead_letters_are_replayed_once_the_cause_is_fixed(
    project: Project, mock_server: httpx.Client, tmp_path: Path
) -> None:
    mock_server.put("/_control/faults", json={"reject": {"p9": "phone number format invalid"}})
    project.eventlog.append(
        [event("a", "p9", "create-individual", {"entityName": "individual", "phone_number": "x"})]
    )
    run_connector(project, "reg", pull=False, retry=FAST_RETRY)
    (letter,) = project.state.dead_letters("reg")
    runner = CliRunner()
    config = str(tmp_path / "dcsync.yaml")
    listed = runner.invoke(app, ["dlq", "list", "-c", config], env={"COLUMNS": "250"})
    assert "phone number format invalid" in listed.stdout
    again = runner.invoke(app, ["dlq", "replay", "reg", str(letter.id), "-c", config])
    assert again.exit_code == 1 and "1 failed again" in again.stdout
    assert project.state.dead_letters("reg")[0].attempts == 2
    mock_server.put("/_control/faults", json={})
    fixed = runner.invoke(app, ["dlq", "replay", "reg", "--all", "-c", config])
    assert fixed.exit_code == 0, fixed.output
    assert "1 created" in fixed.stdout and project.state.dead_letters("reg") == []
    assert [r["entityGuid"] for r in remote_records(mock_server)] == ["p9"]
    assert project.state.get_dead_letter(letter.id).status == "replayed"


def test_more_parked_children_than_a_page_are_all_delivered_once_their_parent_lands(
    make_project: Callable[..., Project], mock_server: httpx.Client, tmp_path: Path
) -> None:
    """The children held behind a dead-lettered parent follow its replay a page at a time: none is
    missed or sent twice."""
    project = make_project("    park_limit: 5\n", page_size=3, batch_size=2)
    mock_server.put("/_control/faults", json={"reject": {"hh": "household rejected by the registry"}})
    kids = [f"kid-{i}" for i in range(8)]
    project.eventlog.append(
        [event("h", "hh", "create-individual", {"entityName": "household", "household_name": "H"})]
        + [
            event(f"c{i}", kid, "create-individual", {"entityName": "individual", "parentGuid": "hh"})
            for i, kid in enumerate(kids)
        ]
    )
    first = run_connector(project, "reg", pull=False, retry=FAST_RETRY)
    assert first.push.counts.parked == 8 and first.push.counts.dead_lettered == 1
    assert project.state.open_counts("reg").parked == 8
    mock_server.put("/_control/faults", json={})
    replayed = CliRunner().invoke(app, ["dlq", "replay", "reg", "--all", "-c", str(tmp_path / "dcsync.yaml")])
    assert replayed.exit_code == 0 and "replayed 1: 9 created" in replayed.stdout, replayed.output
    second = run_connector(project, "reg", pull=False, retry=FAST_RETRY)
    assert second.push.counts.created == 0 and second.push.counts.parked == 0
    hh = next(r for r in remote_records(mock_server) if r["entityGuid"] == "hh")
    delivered = [r for r in remote_records(mock_server) if r["entityGuid"] in kids]
    assert sorted(r["entityGuid"] for r in delivered) == kids
    assert {r["data"]["parentExternalId"] for r in delivered} == {hh["id"]}
    assert mock_server.get("/_control/stats").json()["duplicate_creates"] == {}
    assert project.state.open_counts("reg") == OpenCounts(dead_letters=0, conflicts=0, parked=0)


def test_replay_and_discard_of_all_dead_letters_go_a_page_at_a_time_and_miss_none(
    make_project: Callable[..., Project], mock_server: httpx.Client, tmp_path: Path
) -> None:
    project = make_project(page_size=3, batch_size=2)
    refs = [f"p{i}" for i in range(10)]
    mock_server.put("/_control/faults", json={"reject": dict.fromkeys(refs, "registry is read-only")})
    project.eventlog.append(
        [event(f"e{i}", ref, "create-individual", {"entityName": "individual"}) for i, ref in enumerate(refs)]
    )
    run_connector(project, "reg", pull=False, retry=FAST_RETRY)
    assert project.state.open_counts("reg").dead_letters == 10
    config = str(tmp_path / "dcsync.yaml")
    runner = CliRunner()
    mock_server.put("/_control/faults", json={"reject": {"p9": "still read-only for this one"}})
    replayed = runner.invoke(app, ["dlq", "replay", "reg", "--all", "-c", config], env={"COLUMNS": "200"})
    assert replayed.exit_code == 1, replayed.output
    assert "replayed 10: 9 created" in replayed.stdout and "1 dead letters still open" in replayed.stdout
    assert sorted(r["entityGuid"] for r in remote_records(mock_server)) == refs[:9]
    (left,) = project.state.dead_letters("reg")
    assert left.ref == "p9" and left.attempts == 2 and "still read-only" in left.reason
    discarded = runner.invoke(app, ["dlq", "discard", "reg", "--all", "-c", config])
    assert discarded.exit_code == 0 and "discarded 1 dead letters" in discarded.stdout
    assert project.state.open_counts("reg").dead_letters == 0


def test_a_removed_member_reaches_the_remote_as_an_unlink(
    project: Project, mock_server: httpx.Client
) -> None:
    project.eventlog.append(
        [
            event(
                "g1",
                "grp",
                "create-group",
                {
                    "name": "Smith",
                    "members": [
                        {"guid": "m1", "name": "John", "type": "individual"},
                        {"guid": "m2", "name": "Mary", "type": "individual"},
                    ],
                },
            ),
        ]
    )
    assert run_connector(project, "reg", pull=False, retry=FAST_RETRY).push.counts.created == 3
    project.eventlog.append([event("g2", "grp", "remove-member", {"memberId": "m2"})])
    run_connector(project, "reg", pull=False, retry=FAST_RETRY)
    assert mock_server.get("/_control/stats").json()["types_received"]["remove-member"] == 1


def test_dry_run_prints_the_plan_and_writes_nothing(
    project: Project, mock_server: httpx.Client, tmp_path: Path
) -> None:
    project.eventlog.append(
        [
            event(
                "c",
                "kid",
                "create-individual",
                {"entityName": "individual", "parentGuid": "hh", "first_name": "K"},
            ),
            event("h", "hh", "create-individual", {"entityName": "household", "household_name": "H"}),
        ]
    )
    result = CliRunner().invoke(
        app, ["run", "reg", "--dry-run", "-c", str(tmp_path / "dcsync.yaml")], env={"COLUMNS": "250"}
    )
    assert result.exit_code == 0, result.output
    assert "dry run: nothing was written" in result.stdout
    plan = [line for line in result.stdout.splitlines() if line.startswith("push ")]
    assert any("create" in line and "hh" in line for line in plan)
    assert any("create" in line and "kid" in line for line in plan)
    assert remote_records(mock_server) == [] and project.state.runs("reg") == []

"""Retention and erasure end to end: what `dcsync purge` and `dcsync forget` remove, what they leave, and what
the next run does afterwards (docs/data-protection.md says the same)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from sync_support import FAST_RETRY, event, remote_records, write_config
from typer.testing import CliRunner

from connector_core.cli import app
from connector_core.project import Project
from connector_core.retention import purge
from connector_core.scheduler import Scheduler
from connector_core.state.base import Link
from connector_core.sync.runner import run_connector

PAST = "2025-03-01T10:00:00.000Z"


def _cli(config: Path, *args: str) -> str:
    result = CliRunner().invoke(app, [*args, "-c", str(config)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    return result.stdout


def _person_with_history(project: Project, mock: httpx.Client, config: Path) -> str:
    """p1 delivered after a refusal (a replayed dead letter), then changed on both sides (an open conflict
    under the manual policy); returns its external id."""
    mock.put("/_control/faults", json={"reject": {"p1": "phone number format invalid"}})
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
    run_connector(project, "reg", retry=FAST_RETRY)
    mock.put("/_control/faults", json={})
    _cli(config, "dlq", "replay", "reg", "--all")
    (record,) = remote_records(mock)
    project.eventlog.append([event("e1", "p1", "update-individual", {"phone_number": "+2"}, PAST)])
    mock.patch(f"/_control/records/{record['id']}", json={"data": {"first_name": "Ann"}})
    run_connector(project, "reg", retry=FAST_RETRY)
    assert len(project.state.conflicts("reg")) == 1
    assert project.state.dead_letters("reg", status=None)
    return str(record["id"])


def test_forget_removes_what_dcsync_keeps_says_what_remains_and_the_next_run_sends_the_log_state(
    make_project: Callable[..., Project], mock_server: httpx.Client, tmp_path: Path
) -> None:
    project = make_project("    conflict_policy: manual\n")
    config = tmp_path / "dcsync.yaml"
    external_id = _person_with_history(project, mock_server, config)

    planned = _cli(config, "forget", "p1", "--dry-run")
    assert "would remove 1 snapshot(s), 1 dead letter(s), 1 conflict(s)" in planned
    assert project.state.get_link("reg", "p1").snapshot, "a dry run removes nothing"

    shown = _cli(config, "forget", "p1")
    assert "p1: removed 1 snapshot(s), 1 dead letter(s), 1 conflict(s) from dcsync's state store" in shown
    assert "still in the event log" in shown
    assert f"reg: linked to external id {external_id} (still held there" in shown
    link = project.state.get_link("reg", "p1")
    assert link is not None and (link.external_id, link.snapshot, link.base) == (external_id, {}, {})
    assert project.state.dead_letters("reg", status=None) == []
    assert project.state.conflicts("reg", status=None) == []
    (action,) = json.loads(
        "[" + _cli(config, "audit", "--json", "--action", "forget").strip().replace("\n", ",") + "]"
    )
    assert (action["action"], action["target"]) == ("forget", "p1")
    assert action["detail"] == {"snapshots": 1, "dead_letters": 1, "conflicts": 1, "connectors": ["reg"]}
    assert "Ana" not in json.dumps(action)

    # the next run: the pull cannot tell which side changed what (the base is gone), so it writes nothing
    # into the log (no new copy of the person's data there) and learns the base again from the remote; the
    # push then sends the log's state to the same remote record (an update, never a second create)
    report = run_connector(project, "reg", retry=FAST_RETRY)
    assert report.ok and report.pull is not None and report.push is not None
    assert (report.pull.counts.appended, report.pull.counts.conflicts) == (0, 0)
    assert (report.push.counts.created, report.push.counts.updated) == (0, 1)
    (record,) = remote_records(mock_server)
    assert record["id"] == external_id
    assert (record["data"]["first_name"], record["data"]["phone_number"]) == ("Ana", "+2")
    entity = project.eventlog.get_entity("p1")
    assert entity is not None and entity.data["first_name"] == "Ana"
    relearnt = project.state.get_link("reg", "p1")
    assert relearnt is not None and relearnt.snapshot and relearnt.synced_at is not None
    # and then it is an ordinary synced record again
    again = run_connector(project, "reg", retry=FAST_RETRY)
    assert again.pull.counts.appended == 0 and again.push.counts.updated == 0


def test_forgetting_what_dcsync_never_held_is_not_an_error(project: Project, tmp_path: Path) -> None:
    shown = _cli(tmp_path / "dcsync.yaml", "forget", "nobody")
    assert "nobody: removed 0 snapshot(s), 0 dead letter(s), 0 conflict(s)" in shown
    assert "not in the event log" in shown and "dcsync holds nothing else for it" in shown
    assert project.state.actions() == [], "nothing was erased: nothing to audit"


def _households(project: Project) -> None:
    """A DataCollect group listing m1 and m2 (m3 removed from it: its ``parentGuid`` still names it), and
    a mobile household whose member k1 belongs to it by ``parentGuid`` alone; all delivered and linked."""

    def member(guid: str, name: str) -> dict[str, str]:
        return {"guid": guid, "entityName": "individual", "parentGuid": "grp", "first_name": name}

    project.eventlog.append(
        [
            event(
                "g1",
                "grp",
                "create-group",
                {
                    "entityName": "household",
                    "household_name": "Smith",
                    "members": [member("m1", "Ana"), member("m2", "Ben"), member("m3", "Cy")],
                },
            ),
            event("g2", "grp", "remove-member", {"memberId": "m3"}),
            event("h1", "hh", "create-individual", {"entityName": "household", "household_name": "Mo"}),
            event(
                "h2",
                "k1",
                "create-individual",
                {"entityName": "individual", "parentGuid": "hh", "first_name": "Kim"},
            ),
            event("o1", "p9", "create-individual", {"entityName": "individual", "first_name": "Other"}),
        ]
    )
    assert run_connector(project, "reg", pull=False, retry=FAST_RETRY).ok


def _audit_of(config: Path) -> list[dict]:
    shown = _cli(config, "audit", "--json", "--action", "forget").strip()
    return [json.loads(line) for line in shown.splitlines()] if shown else []


def test_forget_with_members_forgets_a_household_and_whoever_it_has_as_members_in_one_command(
    project: Project, tmp_path: Path
) -> None:
    config = tmp_path / "dcsync.yaml"
    _households(project)
    snapshot = {g: project.state.get_link("reg", g).snapshot for g in ("grp", "m1", "m2", "m3", "p9")}  # type: ignore[union-attr]
    assert all(snapshot.values())

    planned = _cli(config, "forget", "grp", "--with-members", "--dry-run")
    assert "grp: would remove 1 snapshot(s)" in planned
    assert "members: 2 (m1, m2), would be forgotten with it" in planned
    assert "m1: would remove 1 snapshot(s)" in planned and "m2: would remove 1 snapshot(s)" in planned
    assert "m3" not in planned, "removed from the group: no longer its member"
    assert {g: project.state.get_link("reg", g).snapshot for g in snapshot} == snapshot  # type: ignore[union-attr]
    assert _audit_of(config) == []

    shown = _cli(config, "forget", "grp", "--with-members")
    assert "grp: removed 1 snapshot(s)" in shown and "m2: removed 1 snapshot(s)" in shown
    for guid in ("grp", "m1", "m2"):
        assert project.state.get_link("reg", guid).snapshot == {}, guid  # type: ignore[union-attr]
    for guid in ("m3", "p9"):
        assert project.state.get_link("reg", guid).snapshot == snapshot[guid], guid  # type: ignore[union-attr]
    records = {a["target"]: a for a in _audit_of(config)}
    assert sorted(records) == ["grp", "m1", "m2"]
    assert records["grp"]["detail"]["members"] == 2
    assert "members" not in records["m1"]["detail"]
    trail = json.dumps(list(records.values()))
    assert "Ana" not in trail and "Ben" not in trail and "Smith" not in trail

    # a mobile household (an individual-typed entity) has its members by parentGuid alone
    mobile = _cli(config, "forget", "hh", "--with-members")
    assert "members: 1 (k1), forgotten with it" in mobile and "k1: removed 1 snapshot(s)" in mobile
    assert project.state.get_link("reg", "k1").snapshot == {}  # type: ignore[union-attr]
    # without the flag, only the household named; naming a member too forgets it once
    again = _cli(config, "forget", "grp", "m1", "--with-members")
    assert again.count("m1: removed") == 1


def test_forget_with_members_of_a_household_not_in_the_log_says_its_members_cannot_be_found(
    project: Project, tmp_path: Path
) -> None:
    shown = _cli(tmp_path / "dcsync.yaml", "forget", "gone", "--with-members")
    assert "not in the event log" in shown and "members cannot be found" in shown
    assert project.state.actions() == []


def _with_retention(tmp_path: Path, mock: httpx.Client, retention: str) -> Path:
    config = write_config(tmp_path / "dcsync.yaml", str(mock.base_url))
    config.write_text(config.read_text() + retention)
    return config


def test_purge_removes_history_past_its_period_keeps_open_work_and_a_deleted_record_stays_deleted(
    tmp_path: Path, mock_server: httpx.Client
) -> None:
    config = _with_retention(
        tmp_path,
        mock_server,
        "retention:\n  dead_letters: 30d\n  runs: 30d\n  conflicts: 30d\n  deleted_snapshots: 30d\n",
    )
    project = Project.open(config)
    try:
        mock_server.put("/_control/faults", json={"reject": {"p2": "bad", "p3": "bad"}})
        project.eventlog.append(
            [
                event("a", "p1", "create-individual", {"entityName": "individual", "first_name": "Ana"}),
                event("b", "p2", "create-individual", {"entityName": "individual", "first_name": "Ben"}),
                event("c", "p3", "create-individual", {"entityName": "individual", "first_name": "Cy"}),
            ]
        )
        run_connector(project, "reg", retry=FAST_RETRY)
        letter = next(d for d in project.state.dead_letters("reg") if d.ref == "p2")
        _cli(config, "dlq", "discard", "reg", str(letter.id))
        project.eventlog.append([event("d", "p1", "delete-entity", {"reason": "moved away"})])
        assert run_connector(project, "reg", retry=FAST_RETRY).push.counts.deleted == 1
        assert project.state.get_link("reg", "p1") is None, "a delete that reached the remote drops its link"
        with project.state.transaction() as tx:  # a link kept flagged deleted (as older releases wrote them)
            tx.upsert_link(
                Link("reg", "p9", "mock-9", snapshot={"first_name": "Di"}, synced_at=PAST, deleted=True)
            )
        runs_before = len(project.state.runs("reg", limit=100))

        # today nothing is 30 days old; a month on, the closed history is
        now = datetime.now(UTC)
        assert purge(project.state, {"runs": 30 * 86400}, actor="t", now=now).total() == 0
        later = now + timedelta(days=31)
        periods = project.config.project.retention.periods()
        planned = purge(project.state, periods, actor="os:test", dry_run=True, now=later)
        assert planned.counts == {
            "dead_letters": {"reg": 1},
            "runs": {"reg": runs_before},
            "conflicts": {},
            "deleted_snapshots": {"reg": 1},
        }
        assert len(project.state.runs("reg", limit=100)) == runs_before, "a dry run removes nothing"
        done = purge(project.state, periods, actor="os:test", now=later)
        assert done.counts == planned.counts and done.total() == 1 + runs_before + 1
        assert [(d.ref, d.status) for d in project.state.dead_letters("reg", status=None)] == [("p3", "open")]
        assert project.state.runs("reg") == []
        gone = project.state.get_link("reg", "p9")
        assert gone is not None and gone.deleted and gone.snapshot == {} and gone.base == {}
        assert gone.external_id == "mock-9", "identifiers kept: the link still says the record is deleted"
        (action,) = project.state.actions(action="purge")
        assert action.detail == {"dead_letters": 1, "runs": runs_before, "deleted_snapshots": 1}
        assert purge(project.state, periods, actor="os:test", now=later).total() == 0

        # the next run: the deleted record stays deleted (its link, identifiers only, still says so), the
        # open dead letter is still there to replay, and the run history starts again
        mock_server.put("/_control/faults", json={})
        report = run_connector(project, "reg", retry=FAST_RETRY)
        assert report.ok and report.pull.counts.appended == 0
        assert project.eventlog.get_entity("p1") is None
        assert {r["entityGuid"] for r in remote_records(mock_server) if not r.get("deleted")} == set()
        assert project.state.dead_letters("reg")[0].ref == "p3"
        assert len(project.state.runs("reg")) == 1
    finally:
        project.close()


def test_the_purge_command_shows_what_goes_and_an_empty_retention_keeps_everything(
    tmp_path: Path, mock_server: httpx.Client
) -> None:
    config = write_config(tmp_path / "dcsync.yaml", str(mock_server.base_url))
    assert "everything is kept" in _cli(config, "purge")
    config = _with_retention(tmp_path, mock_server, "retention:\n  runs: 0.001\n")
    project = Project.open(config)
    try:
        assert run_connector(project, "reg", retry=FAST_RETRY).ok
    finally:
        project.close()
    planned = _cli(config, "purge", "--dry-run")
    assert "dry run" in planned and "finished runs" in planned and "would remove 1 rows" in planned
    assert "removed 1 rows" in _cli(config, "purge")
    assert "removed 0 rows" in _cli(config, "purge")
    bad = _with_retention(tmp_path, mock_server, "retention:\n  runs: 0d\n")
    result = CliRunner().invoke(app, ["purge", "-c", str(bad)])
    assert result.exit_code != 0 and "dcsync.yaml:" in result.output and "retention.runs" in result.output


def test_schedulers_sharing_a_store_purge_once_a_day(tmp_path: Path, mock_server: httpx.Client) -> None:
    config = _with_retention(tmp_path, mock_server, "retention:\n  runs: 0.001\n")
    project = Project.open(config)
    try:
        assert run_connector(project, "reg", retry=FAST_RETRY).ok
        project.state.record_action("os:test", "replay", connector="reg")
    finally:
        project.close()
    day = datetime(2030, 5, 1, 3, 0, tzinfo=UTC)
    first = Scheduler(config, holder="a", utcnow=lambda: day)
    second = Scheduler(config, holder="b", utcnow=lambda: day + timedelta(hours=5))
    assert first.purge_now() == 1
    assert second.purge_now() is None, "the day was purged by the other scheduler"
    assert Scheduler(config, holder="b", utcnow=lambda: day + timedelta(days=1)).purge_now() == 0
    project = Project.open(config)
    try:
        assert project.state.runs("reg") == []
        assert [a.actor for a in project.state.actions(action="purge")] == ["scheduler:a"]
        assert project.state.actions(action="replay"), "the audit trail has no period here: kept"
    finally:
        project.close()

"""The audit trail: every operator action (replay, discard, resolve) is recorded with who and when, and
``dcsync audit`` lists it; per-field conflict resolution lands the chosen side of each field."""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from sync_support import FAST_RETRY, event, remote_records, write_config
from typer.testing import CliRunner

from connector_core.actions import (
    ActionError,
    Progress,
    current_actor,
    replay_dead_letters,
    resolve_conflict,
)
from connector_core.cli import app
from connector_core.project import Project
from connector_core.state import SqliteStateStore
from connector_core.state.lease import LeasedStateStore
from connector_core.state.postgres import PostgresStateStore
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


def _two_letters_refused_while_another_process_holds_reg(
    project: Project, mock_server: httpx.Client, config: str, other: LeasedStateStore
) -> None:
    """A discard closes the letters a run (or a replay elsewhere) is working on: it takes the connector's
    lease as a replay does, and a busy connector gives the CLI's one line, closing and recording nothing."""
    mock_server.put("/_control/faults", json={"reject": {"p1": "bad phone", "p2": "bad phone"}})
    project.eventlog.append(
        [
            event("a", "p1", "create-individual", {"entityName": "individual"}),
            event("b", "p2", "create-individual", {"entityName": "individual"}),
        ]
    )
    run_connector(project, "reg", pull=False, retry=FAST_RETRY)
    runner = CliRunner()
    with other.lease("reg"):
        answers = [
            runner.invoke(app, ["dlq", "discard", "reg", "--all", "--note", "dup", "-c", config]),
            runner.invoke(app, ["dlq", "replay", "reg", "--all", "-c", config]),
        ]
    for answer in answers:
        assert answer.exit_code == 1, answer.output
        assert "connector 'reg' is already running (lease held by pid " in answer.output
        assert "Traceback" not in answer.output
    assert project.state.open_counts("reg").dead_letters == 2 and _audit(config) == []
    done = runner.invoke(app, ["dlq", "discard", "reg", "--all", "--note", "dup", "-c", config])
    assert done.exit_code == 0 and "discarded 2" in done.output, done.output


def test_a_discard_while_another_process_holds_the_connector_is_refused_like_a_replay(
    project: Project, mock_server: httpx.Client, tmp_path: Path
) -> None:
    other = SqliteStateStore(tmp_path / "state.db")  # another process's connection to the store
    try:
        config = str(tmp_path / "dcsync.yaml")
        _two_letters_refused_while_another_process_holds_reg(project, mock_server, config, other)
    finally:
        other.close()


@pytest.mark.postgres
def test_a_discard_on_a_postgres_store_another_process_holds_is_refused_like_a_replay(
    mock_server: httpx.Client, tmp_path: Path, postgres_url: str, pg_schema: str
) -> None:
    config = tmp_path / "dcsync.yaml"
    config.write_text(
        f"state: {{backend: postgres, url: '{postgres_url}', schema: {pg_schema}}}\n"
        "connectors:\n"
        f"  reg: {{type: mock, settings: {{url: '{mock_server.base_url}'}}}}\n"
    )
    project = Project.open(config)
    other = PostgresStateStore(postgres_url, schema=pg_schema)
    try:
        _two_letters_refused_while_another_process_holds_reg(project, mock_server, str(config), other)
    finally:
        other.close()
        project.close()


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


STOPPING = (
    "    systemic_after: 0\n"
    "    retry:\n      max_attempts: 2\n      initial_delay: 0.01\n      max_delay: 0.02\n"
)
"""Refusals dead-lettered one by one, and a remote that is down given up on at once."""

REFUSED = "phone_number: not a valid phone number"


def _dead_lettered(project: Project, mock: httpx.Client, count: int) -> list[str]:
    """``count`` people refused by the remote, in order (their dead letters' ids follow it)."""
    refs = [f"p{i:02d}" for i in range(count)]
    mock.put("/_control/faults", json={"reject": dict.fromkeys(refs, REFUSED)})
    project.eventlog.append(
        [
            event(f"e{i:02d}", ref, "create-individual", {"entityName": "individual", "first_name": f"N{i}"})
            for i, ref in enumerate(refs)
        ]
    )
    report = run_connector(project, "reg", pull=False, retry=FAST_RETRY)
    assert report.push is not None and report.push.counts.dead_lettered == count
    return refs


def _settled(project: Project, mock: httpx.Client, refs: list[str]) -> tuple[set[str], set[str]]:
    """What the store and the remote say the replay settled: the letters it closed (each delivered, once),
    and those it refused again (still open, a second attempt)."""
    closed = {d.ref for d in project.state.dead_letters("reg", status="replayed", limit=1000)}
    on_remote = [r["entityGuid"] for r in remote_records(mock)]
    assert sorted(on_remote) == sorted(closed), "a letter closed as replayed is the record on the remote"
    failed = {d.ref for d in project.state.dead_letters("reg", limit=1000) if d.attempts > 1}
    assert (closed | failed) <= set(refs)
    return closed, failed


def test_a_replay_that_stops_on_an_error_still_records_exactly_what_it_settled(
    make_project: Callable[..., Project], mock_server: httpx.Client, tmp_path: Path
) -> None:
    """The remote goes down part-way: the pages (and batches) committed before stay delivered and closed,
    and the trail says who re-sent them, how many, and that the replay stopped and why."""
    project = make_project(STOPPING)  # pages of 13 letters, pushed in batches of 7 and 6
    refs = _dead_lettered(project, mock_server, 40)
    still_refused = [refs[1], refs[16]]  # failed again, on the first and the second page
    # five pushes answered: two pages, and the first batch of the third page; then down for good
    mock_server.put(
        "/_control/faults", json={"reject": dict.fromkeys(still_refused, REFUSED), "down_after": 5}
    )
    config = str(tmp_path / "dcsync.yaml")
    replayed = CliRunner().invoke(app, ["dlq", "replay", "reg", "--all", "-c", config])
    assert replayed.exit_code == 1, replayed.output
    assert "gave up after retries" in replayed.output and "Traceback" not in replayed.output

    closed, failed = _settled(project, mock_server, refs)
    assert failed == set(still_refused)
    assert len(closed) == 2 * 13 + 7 - 2  # the third page's first batch committed before the outage
    (action,) = _audit(config, "--action", "replay")
    assert action["actor"] == current_actor() and action["connector"] == "reg"
    detail = action["detail"]
    assert detail["outcome"] == "stopped"
    assert "gave up after retries" in detail["error"] and "\n" not in detail["error"]
    assert (detail["letters"], detail["delivered"], detail["failed_again"]) == (
        len(closed) + len(failed),
        len(closed),
        len(failed),
    )
    assert project.state.open_counts("reg").dead_letters == 40 - len(closed)


def test_a_replay_interrupted_by_ctrl_c_mid_page_still_records_exactly_what_it_settled(
    make_project: Callable[..., Project], mock_server: httpx.Client
) -> None:
    """Ctrl-C lands while a page's batch is on the wire: what committed before it is in the record, the
    letters of the page it cut short that did not commit are not."""
    project = make_project(STOPPING)
    refs = _dead_lettered(project, mock_server, 30)
    mock_server.put("/_control/faults", json={"reject": {refs[2]: REFUSED}, "latency": 0.3})
    armed = threading.Event()

    def ctrl_c(_signum: int, _frame: object) -> None:
        if armed.is_set():  # a signal that comes late (the replay over) interrupts nothing else
            raise KeyboardInterrupt

    def after_first_page(progress: Progress) -> None:
        if not armed.is_set():
            armed.set()  # the next page's first batch is on the wire for 0.3 s: Ctrl-C lands in it
            main = threading.main_thread().ident
            assert main is not None
            threading.Timer(0.1, signal.pthread_kill, (main, signal.SIGINT)).start()

    previous = signal.signal(signal.SIGINT, ctrl_c)
    try:
        with pytest.raises(KeyboardInterrupt):
            replay_dead_letters(
                project,
                "reg",
                project.state.iter_dead_letters("reg"),
                actor="os:tester",
                note="after the fix",
                on_page=after_first_page,
            )
    finally:
        armed.clear()
        signal.signal(signal.SIGINT, previous)

    closed = {d.ref for d in project.state.dead_letters("reg", status="replayed", limit=1000)}
    failed = {d.ref for d in project.state.dead_letters("reg", limit=1000) if d.attempts > 1}
    assert failed == {refs[2]} and closed <= {r["entityGuid"] for r in remote_records(mock_server)}
    assert 13 - 1 <= len(closed) < 30 - 1, "the first page committed, and not every letter"
    (action,) = project.state.actions(action="replay")
    assert action.actor == "os:tester"
    assert action.detail == {
        "letters": len(closed) + len(failed),
        "delivered": len(closed),
        "failed_again": len(failed),
        "note": "after the fix",
        "outcome": "stopped",
        "error": "interrupted (Ctrl-C); the letters it had not settled stay open",
    }
    assert project.state.open_counts("reg").dead_letters == 30 - len(closed)
    # a batch the remote took but the interrupt kept from committing is looked up, not sent twice
    mock_server.put("/_control/faults", json={})
    replay_dead_letters(project, "reg", project.state.iter_dead_letters("reg"), actor="os:tester")
    assert sorted(r["entityGuid"] for r in remote_records(mock_server)) == refs
    assert project.state.open_counts("reg").dead_letters == 0


def test_a_replay_stopped_by_a_refusal_streak_keeps_no_secret_the_remote_echoed(
    make_project: Callable[..., Project], mock_server: httpx.Client, tmp_path: Path
) -> None:
    """The remote refuses record after record for one reason, quoting a credential: the streak stops the
    replay mid-page (systemic_after), and neither the command's error nor the trail keeps the credential."""
    project = make_project("    systemic_after: 0\n")
    refs = _dead_lettered(project, mock_server, 10)
    config = str(
        write_config(tmp_path / "dcsync.yaml", str(mock_server.base_url), extra="    systemic_after: 3\n")
    )
    echoed = "duplicate of the record at https://admin:hunter2hunter2@registry.example/api"
    mock_server.put("/_control/faults", json={"reject": dict.fromkeys(refs[5:], echoed)})
    replayed = CliRunner().invoke(app, ["dlq", "replay", "reg", "--all", "-c", config])
    assert replayed.exit_code == 1, replayed.output
    assert "records in a row were refused" in replayed.output and "hunter2hunter2" not in replayed.output

    closed, failed = _settled(project, mock_server, refs)
    assert closed == set(refs[:5]) and failed == set()  # the streak's refusals are not dead-lettered
    (action,) = _audit(config, "--action", "replay")
    assert "hunter2hunter2" not in json.dumps(action)
    detail = action["detail"]
    assert (detail["letters"], detail["delivered"], detail["failed_again"]) == (5, 5, 0)
    assert detail["outcome"] == "stopped" and "registry.example" in detail["error"]
    assert "records in a row were refused" in detail["error"]

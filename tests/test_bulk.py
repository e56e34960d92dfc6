"""Sharded bulk load (issue 19 part B) against the mock system: the sharding, the plan's lifecycle and the
rules that keep an ordinary push from racing the shards. The 2,000-household load with a killed worker is in
``tests/openspp/test_openspp_bulk.py``."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from sync_support import write_config
from typer.testing import CliRunner

from connector_core.cli import app
from connector_core.events import FormSubmission
from connector_core.project import Project
from connector_core.sample import mobile_log
from connector_core.state.base import Direction
from connector_core.state.lease import ConnectorBusy
from connector_core.sync.bulk import (
    BulkLoadError,
    HouseholdShards,
    LocalProcesses,
    bulk_load,
    finish_bulk_load,
    pending_reason,
    plan_bulk_load,
    run_shard,
    shard_name,
    shard_of,
    shard_states,
)
from connector_core.sync.context import RunStopped
from connector_core.sync.push import run_push
from connector_core.sync.report import DirectionReport
from connector_core.sync.runner import run_connector, sync_session


def _event(guid: str, entity: str, parent: str | None = None, n: int = 0) -> FormSubmission:
    data: dict[str, object] = {"entityName": "individual" if parent else "household", "name": entity}
    if parent:
        data["parentGuid"] = parent
    return FormSubmission(
        guid=f"ev-{guid}-{n}",
        entity_guid=entity,
        type="create-individual" if parent else "create-group",
        data=data,
        timestamp=f"2025-01-01T00:00:{n % 60:02d}.000Z",
        user_id="u",
    )


# -- sharding ---------------------------------------------------------------------------------------------


def test_the_shard_of_a_guid_is_a_fixed_function_of_the_guid() -> None:
    """blake2b of the guid, never Python's salted ``hash``: the same shard in every process and run."""
    guids = [f"hh-{i}" for i in range(200)]
    here = [shard_of(g, 4) for g in guids]
    code = f"from connector_core.sync.bulk import shard_of;print([shard_of(g, 4) for g in {guids!r}])"
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": os.pathsep.join(sys.path)}
    there = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert there.stdout.strip() == str(here)
    assert shard_of("2d3b0c8e-1f4a-4c6e-9b2a-7f0e5d1c3a9b", 4) == shard_of(
        "2d3b0c8e-1f4a-4c6e-9b2a-7f0e5d1c3a9b", 4
    )
    assert set(Counter(here)) == {0, 1, 2, 3}, "every shard gets households"
    assert max(Counter(here).values()) < 80, "and no shard most of them"


def test_a_household_and_all_its_members_fall_in_one_shard(make_project: Callable[..., Project]) -> None:
    project = make_project()
    project.eventlog.append(mobile_log(households=60, members=4, seed=3))
    entities = {e.guid: e for e in project.eventlog.iter_entities()}
    assert sum(1 for e in entities.values() if e.parent_guid) == 240
    sharding = HouseholdShards(project.eventlog, 4)
    roots = sharding.roots(entities)
    for guid, entity in entities.items():
        if entity.parent_guid:  # an individual: its household is its root
            assert roots[guid] == entity.parent_guid
            assert sharding.shard(guid) == sharding.shard(entity.parent_guid)
        else:
            assert roots[guid] == guid
    # a tiny cache (evicting all the time) answers the same, page by page
    small = HouseholdShards(project.eventlog, 4, cache_size=3)
    guids = list(entities)
    assert {g: small.shard(g) for g in guids} == {g: sharding.shard(g) for g in guids}
    for k in range(4):
        picked = sharding.selector(k)(guids)
        assert picked == {g for g in guids if shard_of(roots[g], 4) == k}


def test_roots_follow_chains_stop_at_missing_parents_and_settle_cycles(
    make_project: Callable[..., Project],
) -> None:
    project = make_project()
    project.eventlog.append(
        [
            _event("a", "top"),
            _event("b", "mid", "top"),
            _event("c", "low", "mid"),
            _event("d", "orphan", "not-in-the-log"),
            _event("e", "x", "y"),
            _event("f", "y", "z"),
            _event("g", "z", "x"),
        ]
    )
    sharding = HouseholdShards(project.eventlog, 3)
    roots = sharding.roots(["low", "mid", "top", "orphan", "x", "y", "z", "never-seen"])
    assert roots == {
        "low": "top",
        "mid": "top",
        "top": "top",
        "orphan": "orphan",  # its parent is not in the log: it is its own household
        "x": "x",  # a cycle: the smallest guid on it, whichever member it is reached from
        "y": "x",
        "z": "x",
        "never-seen": "never-seen",
    }
    with pytest.raises(BulkLoadError, match="at least one shard"):
        HouseholdShards(project.eventlog, 0)


# -- the plan ---------------------------------------------------------------------------------------------


def _records(mock: httpx.Client) -> list[dict[str, object]]:
    return list(mock.get("/_control/records").json())


def test_a_bulk_load_in_shards_delivers_each_record_once_and_hands_over_to_push(
    make_project: Callable[..., Project], mock_server: httpx.Client
) -> None:
    project = make_project()
    project.eventlog.append(mobile_log(households=30, members=3, seed=1))
    first = run_connector(project, "reg", pull=False)  # an earlier push: the load starts where it ended
    assert first.ok and first.push is not None
    start = project.state.get_checkpoint("reg", Direction.PUSH)
    project.eventlog.append(mobile_log(households=40, members=3, updates=15, seed=2))
    expected = sum(1 for _ in project.eventlog.iter_entities())

    plan = plan_bulk_load(project, "reg", 3)
    assert (plan.start, plan.mark, plan.shards, plan.status) == (start, project.eventlog.head(), 3, "open")
    assert plan_bulk_load(project, "reg", 5) == plan, "planning again returns the open plan"

    # while the plan is open, an ordinary push is skipped with its reason; a pull would still run
    project.eventlog.append(mobile_log(households=5, members=1, seed=9))  # after the mark
    refused = run_connector(project, "reg", pull=False)
    assert refused.skipped and refused.push is None and f"bulk load {plan.id}" in (refused.held or "")
    assert project.state.get_checkpoint("reg", Direction.PUSH) == start

    assert run_shard(project, "reg", plan.id, 1).done
    assert not finish_bulk_load(project, "reg", plan.id)
    reason = pending_reason(plan_bulk_load(project, "reg", 3))
    assert reason is not None and "shard(s) 0, 2 of 3 not done" in reason
    for k in (0, 2):
        report = run_shard(project, "reg", plan.id, k)
        assert report.done and report.error is None and report.checkpoint == plan.mark
    assert run_shard(project, "reg", plan.id, 2).counts.created == 0, "a done shard is not pushed again"
    assert finish_bulk_load(project, "reg", plan.id)
    assert project.state.get_checkpoint("reg", Direction.PUSH) == plan.mark
    assert project.state.open_bulk_plan("reg") is None

    # the records of the plan went out once each; the five households after the mark did not go yet
    after_mark = {e.guid for e in project.eventlog.iter_entities()}
    records = _records(mock_server)
    per_ref = Counter(r["entityGuid"] for r in records)
    assert len(per_ref) == expected and max(per_ref.values()) == 1
    assert mock_server.get("/_control/stats").json()["duplicate_creates"] == {}

    # each shard is a run in history, under its own name
    runs = {r.connector: r for r in project.state.runs(limit=50)}
    for k in range(3):
        assert (
            runs[shard_name("reg", k)].outcome == "ok" and runs[shard_name("reg", k)].trigger == "bulk-load"
        )

    # the push after it sends what came after the mark, and nothing the shards sent
    follow = run_connector(project, "reg", pull=False)
    assert follow.ok and follow.push is not None
    assert follow.push.counts.created == len(after_mark) - expected
    assert follow.push.counts.updated == 0
    assert {r["entityGuid"] for r in _records(mock_server)} == after_mark
    assert finish_bulk_load(project, "reg", plan.id), "finishing again is a no-op"
    assert project.state.get_checkpoint("reg", Direction.PUSH) == project.eventlog.head()


def test_while_a_bulk_load_is_open_pushes_are_skipped_with_their_reason_not_failed(
    make_project: Callable[..., Project], mock_server: httpx.Client
) -> None:
    """A push during a load is expected, not a fault (the shards write the same records, so it waits for
    them): a scheduled or queued push that failed for it filled the failed lists and backed off. It is
    recorded ``skipped`` with the reason; a run of both directions still pulls and says the push waited;
    by hand the command says so and exits 1."""
    project = make_project()
    project.eventlog.append(mobile_log(households=3, members=1, seed=1))
    plan = plan_bulk_load(project, "reg", 2)
    reason = f"bulk load {plan.id} in progress: pushes resume from its mark when it finishes"

    pushed = run_connector(project, "reg", pull=False, trigger="schedule")
    assert pushed.skipped and pushed.ok and pushed.held == reason and pushed.push is None
    (run,) = project.state.runs("reg")
    assert (run.outcome, run.direction, run.trigger, run.error) == ("skipped", "push", "schedule", reason)
    assert run.finished_at is not None
    assert project.state.runs("reg", failed_only=True) == [], "a skipped push is no failure"

    both = run_connector(project, "reg", trigger="schedule")
    assert both.ok and not both.skipped and both.pull is not None and both.push is None
    assert both.held == reason
    latest = project.state.runs("reg", limit=1)[0]
    assert (latest.outcome, latest.direction, latest.error) == ("ok", "pull", f"push skipped: {reason}")
    assert project.state.get_checkpoint("reg", Direction.PUSH) is None
    with sync_session(project, "reg") as ctx, pytest.raises(RunStopped, match=reason):
        run_push(ctx, DirectionReport("push"))  # any other caller of the push engine is refused so
    assert _records(mock_server) == []

    config = str(project.config.path)
    result = CliRunner().invoke(app, ["run", "reg", "--push", "-c", config], env={"COLUMNS": "250"})
    assert result.exit_code == 1, result.output
    assert f"reg: push skipped: {reason}" in " ".join(result.output.split())
    listed = CliRunner().invoke(app, ["runs", "-c", config], env={"COLUMNS": "250"})
    assert "skipped" in listed.stdout and plan.id in listed.stdout


def test_shards_run_in_local_processes_side_by_side(tmp_path: Path, mock_server: httpx.Client) -> None:
    config = write_config(tmp_path / "dcsync.yaml", str(mock_server.base_url), batch_size=10, page_size=50)
    project = Project.open(config)
    try:
        project.eventlog.append(mobile_log(households=40, members=2, seed=4))
        report = bulk_load(project, "reg", 4, LocalProcesses(2))
        assert report.finished, report.reason
        assert [s.shard for s in report.shards] == [0, 1, 2, 3]
        assert all(s.done and s.error is None for s in report.shards)
        assert report.counts.created == 120
        assert project.state.get_checkpoint("reg", Direction.PUSH) == project.eventlog.head()
        assert len(_records(mock_server)) == 120
    finally:
        project.close()


def test_bad_requests_are_one_line_errors(make_project: Callable[..., Project]) -> None:
    project = make_project()
    project.eventlog.append(mobile_log(households=2, members=1, seed=1))
    with pytest.raises(BulkLoadError, match="no bulk load plan 'nope'"):
        run_shard(project, "reg", "nope", 0)
    plan = plan_bulk_load(project, "reg", 2)
    with pytest.raises(BulkLoadError, match="shards 0-1, not 2"):
        run_shard(project, "reg", plan.id, 2)
    with pytest.raises(BulkLoadError, match="at least one shard"):
        plan_bulk_load(project, "reg", 0)


def test_a_read_stops_at_the_mark(make_project: Callable[..., Project]) -> None:
    project = make_project()
    project.eventlog.append(_event(str(n), f"hh-{n}", n=n) for n in range(10))
    page = project.eventlog.read_touches(None, 100, until="4")
    assert [t.entity_guid for t in page.touches] == ["hh-0", "hh-1", "hh-2", "hh-3"]
    assert (page.cursor, page.at_end) == ("4", True)
    page = project.eventlog.read_touches("2", 1, until="4")
    assert ([t.entity_guid for t in page.touches], page.cursor, page.at_end) == (["hh-2"], "3", False)
    empty = project.eventlog.read_touches("4", 10, until="4")
    assert (empty.touches, empty.cursor, empty.at_end) == ([], "4", True)


def test_a_shard_leaves_the_intents_of_other_shards_alone(
    make_project: Callable[..., Project], caplog: pytest.LogCaptureFixture
) -> None:
    """Shards share the connector's intents table; the creates another shard has in flight are not an
    interrupted run of this one (no lookups for them, no warning)."""
    project = make_project()
    project.eventlog.append(mobile_log(households=20, members=2, seed=6))
    plan = plan_bulk_load(project, "reg", 2)
    sharding = HouseholdShards(project.eventlog, 2)
    theirs = next(e.guid for e in project.eventlog.iter_entities() if sharding.shard(e.guid) == 1)
    with project.state.transaction() as tx:
        tx.add_intents("reg", [theirs])
    with caplog.at_level("WARNING", logger="dcsync.push"):
        assert run_shard(project, "reg", plan.id, 0).done
    assert "interrupted run" not in caplog.text
    assert project.state.intents("reg") == {theirs}


def test_one_shard_never_runs_twice_at_once(make_project: Callable[..., Project]) -> None:
    project = make_project()
    project.eventlog.append(mobile_log(households=4, members=1, seed=2))
    plan = plan_bulk_load(project, "reg", 2)
    with project.state.lease(shard_name("reg", 0)), pytest.raises(ConnectorBusy, match="reg#shard-0"):
        run_shard(project, "reg", plan.id, 0)
    assert run_shard(project, "reg", plan.id, 1).done, "another shard runs meanwhile"


@pytest.mark.parametrize(
    ("raised", "outcome"), [(KeyboardInterrupt, "interrupted"), (RuntimeError, "failed")]
)
def test_a_shard_ended_by_an_exception_is_closed_in_the_history_as_a_run_is(
    make_project: Callable[..., Project], monkeypatch: pytest.MonkeyPatch, raised: type, outcome: str
) -> None:
    """A second Ctrl-C inside a shard is the operator's choice (interrupted), anything else a failure; the
    shard stays pending either way and a rerun finishes it."""
    import connector_core.sync.bulk as bulk

    project = make_project()
    project.eventlog.append(mobile_log(households=4, members=1, seed=2))
    plan = plan_bulk_load(project, "reg", 1)
    real_push = bulk.run_push

    def stopped(*_args: object) -> None:
        raise raised("stopped in the middle")

    monkeypatch.setattr(bulk, "run_push", stopped)
    with pytest.raises(raised):
        run_shard(project, "reg", plan.id, 0)
    (run,) = project.state.runs(shard_name("reg", 0))
    assert run.outcome == outcome and run.finished_at is not None
    # the stored shard row still says running; where it stands is read with its run record
    assert [s.status for s in project.state.bulk_shards(plan.id)] == ["running"]
    stands = f"pending (run {run.id} ended {outcome})"
    assert shard_states(project, plan_bulk_load(project, "reg", 1)) == [stands]
    dry = CliRunner().invoke(
        app, ["bulk-load", "reg", "--dry-run", "-c", str(project.config.path)], env={"COLUMNS": "200"}
    )
    assert dry.exit_code == 0 and stands in dry.output, dry.output
    monkeypatch.setattr(bulk, "run_push", real_push)
    assert run_shard(project, "reg", plan.id, 0).done
    latest, _ = project.state.runs(shard_name("reg", 0))
    assert latest.outcome == "ok"
    assert shard_states(project, plan_bulk_load(project, "reg", 1)) == [f"done (run {latest.id})"]


def test_the_command_plans_shows_and_runs_a_bulk_load(tmp_path: Path, mock_server: httpx.Client) -> None:
    config = write_config(tmp_path / "dcsync.yaml", str(mock_server.base_url))
    project = Project.open(config)
    project.eventlog.append(mobile_log(households=12, members=2, seed=8))
    project.close()
    env = {"COLUMNS": "200"}
    dry = CliRunner().invoke(
        app, ["bulk-load", "reg", "--shards", "3", "--dry-run", "-c", str(config)], env=env
    )
    assert dry.exit_code == 0, dry.output
    assert "56 events after cursor None up to the mark 56, in 3 shards" in dry.output
    shares = [
        int(line.split()[-2])
        for line in dry.output.splitlines()
        if line.startswith("│ ") and line.split()[1].isdigit()
    ]
    assert sum(shares) == 36 and len(shares) == 3
    assert mock_server.get("/_control/records").json() == [], "a dry run sends nothing"
    bare = CliRunner().invoke(app, ["bulk-load", "reg", "-c", str(config)], env=env)
    assert bare.exit_code == 2 and "--local" in bare.output
    done = CliRunner().invoke(
        app, ["bulk-load", "reg", "--shards", "3", "--local", "--processes", "1", "-c", str(config)], env=env
    )
    assert done.exit_code == 0, done.output
    assert "finished; the push checkpoint is at the snapshot mark 56" in done.output
    assert len(mock_server.get("/_control/records").json()) == 36


def test_refusals_and_held_children_of_a_shard_are_the_connectors_as_for_a_push(
    make_project: Callable[..., Project], mock_server: httpx.Client
) -> None:
    project = make_project()
    project.eventlog.append(mobile_log(households=10, members=2, seed=5))
    entities = list(project.eventlog.iter_entities())
    household = next(e for e in entities if not e.parent_guid)
    members = {e.guid for e in entities if e.parent_guid == household.guid}
    assert len(members) == 2
    mock_server.put("/_control/faults", json={"reject": {household.guid: "duplicate household"}})
    plan = plan_bulk_load(project, "reg", 2)
    reports = [run_shard(project, "reg", plan.id, k) for k in range(2)]
    assert all(r.done for r in reports), "a refused record does not hold a shard back"
    assert sum(r.counts.dead_lettered for r in reports) == 1
    (letter,) = project.state.dead_letters("reg")
    assert letter.ref == household.guid and "duplicate household" in letter.reason
    assert {p.entity_guid for p in project.state.parked("reg")} == members, "its members wait for it"
    assert finish_bulk_load(project, "reg", plan.id)
    delivered = {r["entityGuid"] for r in _records(mock_server)}
    assert delivered == {e.guid for e in entities} - members - {household.guid}


def test_a_member_its_group_lists_alone_goes_with_its_household_from_another_shard(
    make_project: Callable[..., Project], mock_server: httpx.Client
) -> None:
    """A member with no ``parentGuid`` of its own is sharded by its own guid, so its group may be another
    shard's. Its shard, run first, keeps it waiting for the group (it knows the group from the page's
    ``create-group``); the push after the load delivers it as the group's member."""
    project = make_project()
    group = "hh-listing"
    member = next(f"m-{i}" for i in range(100) if shard_of(f"m-{i}", 2) != shard_of(group, 2))
    project.eventlog.append(
        [
            FormSubmission(
                guid="ev-listing",
                entity_guid=group,
                type="create-group",
                data={"entityName": "household", "members": [{"guid": member, "entityName": "individual"}]},
                timestamp="2025-01-01T00:00:00.000Z",
                user_id="u",
            )
        ]
    )
    plan = plan_bulk_load(project, "reg", 2)
    assert run_shard(project, "reg", plan.id, shard_of(member, 2)).done
    assert run_shard(project, "reg", plan.id, shard_of(group, 2)).done
    assert finish_bulk_load(project, "reg", plan.id)
    follow = run_connector(project, "reg", pull=False)
    assert follow.ok, follow.error
    by_guid = {r["entityGuid"]: r for r in _records(mock_server)}
    assert by_guid[member]["data"].get("parentExternalId") == by_guid[group]["id"]
    assert project.state.open_counts("reg").parked == 0

"""Engine bugs found in the review of the merged sync engine and stores: each test failed before its fix."""

from __future__ import annotations

import dataclasses
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from sync_support import FAST_RETRY, event, remote_records
from typer.testing import CliRunner

from connector_core.cli import app
from connector_core.connector import Operation, PushRecord
from connector_core.project import Project
from connector_core.sample import mobile_log
from connector_core.state.base import Direction, OpenCounts
from connector_core.sync.runner import run_connector
from connector_core.testing.harness import SyncHarness
from connector_core.testing.server import serve
from connectors.rest.connector import RestConnector
from connectors.rest.fake import FakeRestOptions
from connectors.rest.fake import connector_settings as rest_settings
from connectors.rest.fake import create_app as create_rest_app


def _group_of_two(project: Project) -> None:
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


def _ana_synced(project: Project, mock_server: httpx.Client) -> dict:
    """One individual created locally and synced both ways: its record on the remote."""
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
    (record,) = remote_records(mock_server)
    return record


def _unlinks_received(mock: httpx.Client) -> int:
    return int(mock.get("/_control/stats").json()["types_received"].get("remove-member", 0))


def test_a_member_removed_and_added_back_before_the_push_is_not_unlinked(
    project: Project, mock_server: httpx.Client
) -> None:
    """The push sends the entities' current state; an unlink of a member that is back in its group
    would end on the remote a membership the log still holds, and nothing would ever restore it."""
    _group_of_two(project)
    project.eventlog.append(
        [
            event("g2", "grp", "remove-member", {"memberId": "m2"}),
            event("g3", "grp", "add-member", {"members": [{"guid": "m2", "type": "individual"}]}),
        ]
    )
    group = project.eventlog.get_entity("grp")
    assert group is not None and "m2" in group.member_ids
    assert run_connector(project, "reg", pull=False, retry=FAST_RETRY).ok
    assert _unlinks_received(mock_server) == 0


def test_a_member_removed_for_good_is_still_unlinked(project: Project, mock_server: httpx.Client) -> None:
    _group_of_two(project)
    project.eventlog.append([event("g2", "grp", "remove-member", {"memberId": "m2"})])
    assert run_connector(project, "reg", pull=False, retry=FAST_RETRY).ok
    assert _unlinks_received(mock_server) == 1


def test_a_membership_ended_twice_in_one_page_is_unlinked_once(
    project: Project, mock_server: httpx.Client
) -> None:
    """Removed, added back and removed again before a push: one membership ended, one unlink. Two went
    out in one batch, with one ref, so the remote was asked to end what it had just ended and the two
    answers were matched to each other by that ref."""
    _group_of_two(project)
    project.eventlog.append(
        [
            event("g2", "grp", "remove-member", {"memberId": "m2"}),
            event("g3", "grp", "add-member", {"members": [{"guid": "m2", "type": "individual"}]}),
            event("g4", "grp", "remove-member", {"memberId": "m2"}),
        ]
    )
    assert run_connector(project, "reg", pull=False, retry=FAST_RETRY).ok
    assert _unlinks_received(mock_server) == 1


def test_with_systemic_after_0_refusals_are_dead_lettered_page_by_page(
    make_project: Callable[..., Project], mock_server: httpx.Client
) -> None:
    """``systemic_after: 0`` (never stop) has no streak to wait for: holding every refusal of one reason
    back until the run ends kept them all in memory (a list growing with the log) and the checkpoint
    unmoved for the whole run, so a crash near its end redid all of it."""
    project = make_project("    systemic_after: 0\n", batch_size=3, page_size=4)
    project.eventlog.append(
        [
            event(f"e{i}", f"hh{i}", "create-individual", {"entityName": "household", "household_name": "H"})
            for i in range(12)
        ]
    )
    reason = "Invalid field 'hh_size' on model 'res.partner'"
    mock_server.put("/_control/faults", json={"reject": {f"hh{i}": reason for i in range(12)}})
    seen: list[tuple[str | None, int]] = []

    def after_page(direction: str, done: int, total: int | None) -> None:
        if direction == "push":
            seen.append(
                (
                    project.state.get_checkpoint("reg", Direction.PUSH),
                    project.state.open_counts("reg").dead_letters,
                )
            )

    report = run_connector(project, "reg", pull=False, retry=FAST_RETRY, on_progress=after_page)
    assert report.ok, report.error
    assert seen == [("4", 4), ("8", 8), ("12", 12)]


def test_a_push_does_not_overwrite_a_remote_edit_the_failed_pull_did_not_bring(
    project: Project, mock_server: httpx.Client
) -> None:
    """Pull goes first so that a push never overwrites a remote edit it has not seen (runner.py). When the
    pull gives up, the push must not go on as if it had seen everything: the local payload would write the
    old values over the remote's edit, and the next pull would find nothing left to merge."""
    record = _ana_synced(project, mock_server)
    mock_server.patch(f"/_control/records/{record['id']}", json={"data": {"first_name": "Ann"}})
    project.eventlog.append([event("e1", "p1", "update-individual", {"phone_number": "+2"})])
    mock_server.put("/_control/faults", json={"script": [{"on": "pull", "status": 503}] * 8})

    failed = run_connector(project, "reg", retry=FAST_RETRY)
    assert not failed.ok and failed.pull is not None and failed.pull.error is not None
    (record,) = remote_records(mock_server)
    assert record["data"]["first_name"] == "Ann", "the push wrote over a remote edit it had not seen"

    mock_server.put("/_control/faults", json={})
    assert run_connector(project, "reg", retry=FAST_RETRY).ok
    (record,) = remote_records(mock_server)
    assert (record["data"]["first_name"], record["data"]["phone_number"]) == ("Ann", "+2")


def test_a_conflict_resolved_local_is_pushed_on_the_next_run(
    make_project: Callable[..., Project], mock_server: httpx.Client, tmp_path: Path
) -> None:
    """``conflicts resolve --take local`` promises "keep ours; the next push overwrites the remote". The
    run that held the entity back moved its checkpoint past the entity's events, so the next push must
    still find it."""
    project = make_project("    conflict_policy: manual\n")
    record = _ana_synced(project, mock_server)
    project.eventlog.append([event("e1", "p1", "update-individual", {"first_name": "Anna"})])
    mock_server.patch(f"/_control/records/{record['id']}", json={"data": {"first_name": "Ann"}})
    held = run_connector(project, "reg", retry=FAST_RETRY)
    assert held.ok and held.push is not None and held.push.counts.updated == 0
    (conflict,) = project.state.conflicts("reg")

    config = str(tmp_path / "dcsync.yaml")
    done = CliRunner().invoke(
        app, ["conflicts", "resolve", str(conflict.id), "--take", "local", "-c", config]
    )
    assert done.exit_code == 0, done.output
    after = run_connector(project, "reg", retry=FAST_RETRY)
    assert after.ok, after.error
    (record,) = remote_records(mock_server)
    assert record["data"]["first_name"] == "Anna", "the local side was kept but never pushed"
    assert project.state.open_counts("reg") == OpenCounts(0, 0, 0)


def _dry_run_peak(tmp_path: Path, households: int) -> tuple[int, int]:
    config = tmp_path / f"{households}" / "dcsync.yaml"
    config.parent.mkdir()
    # a dry run sends nothing: no server behind the url
    config.write_text(
        "connectors:\n  reg:\n    type: mock\n    batch_size: 50\n    page_size: 200\n"
        "    settings:\n      url: http://127.0.0.1:9\n"
    )
    project = Project.open(config)
    try:
        project.eventlog.append(mobile_log(households=households, members=4, updates=1))
        tracemalloc.start()
        try:
            report = run_connector(project, "reg", pull=False, dry_run=True)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    finally:
        project.close()
    assert report.ok and report.push is not None, report.error
    return peak, report.push.counts.created


@pytest.mark.slow
def test_a_dry_run_of_a_log_four_times_larger_peaks_at_the_same_memory(tmp_path: Path) -> None:
    """A dry run kept every entity it rehearsed in a dict (so later pages saw their parents as delivered):
    memory grew with the log. Both logs are past the plan's cap of 10,000 lines, which is bounded."""
    _dry_run_peak(tmp_path, 2)  # what the first run of a process builds once
    small, small_created = _dry_run_peak(tmp_path, 2400)
    large, large_created = _dry_run_peak(tmp_path, 9600)
    assert (small_created, large_created) == (12000, 48000)
    assert large < 1.3 * small, f"peak {large:,} bytes for 48,000 entities vs {small:,} for 12,000"


def test_replaying_a_refused_delete_sends_the_delete(
    project: Project, mock_server: httpx.Client, tmp_path: Path
) -> None:
    """A refused delete's letter names an entity the log no longer holds. Discarding it as "gone" left the
    remote record alive and its link in place for good: the pull skips a linked record whose entity is
    gone ("the push deletes it"), and no push ever would."""
    project.eventlog.append(
        [event("a", "p9", "create-individual", {"entityName": "individual", "first_name": "Ana"})]
    )
    assert run_connector(project, "reg", pull=False, retry=FAST_RETRY).ok
    mock_server.put("/_control/faults", json={"reject": {"p9": "record is locked by an open case"}})
    project.eventlog.append([event("b", "p9", "delete-entity", {"reason": "duplicate"})])
    run_connector(project, "reg", pull=False, retry=FAST_RETRY)
    (letter,) = project.state.dead_letters("reg")
    assert letter.ref == "p9" and letter.payload["operation"] == "delete"

    mock_server.put("/_control/faults", json={})
    config = str(tmp_path / "dcsync.yaml")
    replayed = CliRunner().invoke(app, ["dlq", "replay", "reg", "--all", "-c", config])
    assert replayed.exit_code == 0, replayed.output
    assert project.state.get_dead_letter(letter.id).status == "replayed"
    assert project.state.get_link("reg", "p9") is None
    (record,) = remote_records(mock_server)
    assert record["deleted"] is True


def test_a_create_left_unanswered_whose_entity_is_then_deleted_is_not_left_on_the_remote(
    project: Project, mock_server: httpx.Client
) -> None:
    """A create whose answer was lost stays an intent: the next run looks it up before sending again.
    When the entity is deleted before that run, there is no create to send and no link to delete, so the
    intent was never looked up: the record the lost create made stayed on the remote for good (and every
    run warned about the intent)."""
    project.eventlog.append(
        [event("a", "p1", "create-individual", {"entityName": "individual", "first_name": "Ana"})]
    )
    # the state a run killed mid-request leaves: the intent written, the create arrived, no answer read
    with project.state.transaction() as tx:
        tx.add_intents("reg", ["p1"])
    connector = project.build_connector("reg")
    try:
        create = PushRecord(ref="p1", operation=Operation.CREATE, entity_name="individual", payload={"a": 1})
        (sent,) = connector.push([create])
    finally:
        connector.close()
    assert sent.ok
    (remote,) = remote_records(mock_server)
    assert remote["deleted"] is False

    project.eventlog.append([event("b", "p1", "delete-entity", {"reason": "entered by mistake"})])
    assert run_connector(project, "reg", pull=False, retry=FAST_RETRY).ok
    (record,) = remote_records(mock_server)
    assert record["deleted"] is True, "the record the lost create made is still alive on the remote"
    assert project.state.intents("reg") == set()


def test_a_remote_whose_updated_at_is_not_a_timestamp_is_still_pulled(tmp_path: Path) -> None:
    """The REST connector takes ``record.updated_at`` from any field and orders what it cannot read as a
    timestamp by its text (epoch milliseconds are common). The pull stamped each event with it through
    ``normalize_timestamp``, whose ValueError escaped the run as a traceback on every pull of that page."""
    options = FakeRestOptions(auth="api_key", pagination="cursor")
    with serve(create_rest_app(options)) as served, httpx.Client(base_url=served.url) as control:
        control.post(
            "/_control/records",
            json={"type": "individual", "data": {"first_name": "Ana", "modified_ms": 1709287200000}},
        ).raise_for_status()
        settings = rest_settings(served.url, options)
        settings["record"]["updated_at"] = "$.modified_ms"
        connector = RestConnector("reg", RestConnector.config_model.model_validate(settings))
        harness = SyncHarness(connector, tmp_path)
        try:
            report = harness.pull()
            assert report.error is None, report.error
            assert report.counts.appended == 1
            (entity,) = harness.eventlog.iter_entities()
            assert entity.data["first_name"] == "Ana"
        finally:
            harness.close()


def test_newest_wins_with_an_updated_at_that_is_no_timestamp_does_not_crash(tmp_path: Path) -> None:
    """``newest-wins`` compared the remote's updated_at with ``parse_timestamp``: an unreadable one (epoch
    milliseconds, which the REST connector orders by text) raised a ValueError out of the pull."""
    options = FakeRestOptions(auth="api_key", pagination="cursor")
    with serve(create_rest_app(options)) as served, httpx.Client(base_url=served.url) as control:
        made = control.post(
            "/_control/records",
            json={"type": "individual", "data": {"first_name": "Ana", "modified_ms": 1709287200000}},
        ).json()
        settings = rest_settings(served.url, options)
        settings["record"]["updated_at"] = "$.modified_ms"
        connector = RestConnector("reg", RestConnector.config_model.model_validate(settings))
        harness = SyncHarness(connector, tmp_path, conflict_policy="newest-wins")
        try:
            assert harness.pull().error is None
            (entity,) = harness.eventlog.iter_entities()
            harness.append([event("e1", entity.guid, "update-individual", {"first_name": "Anna"})])
            control.patch(
                f"/_control/records/{made['id']}",
                json={"data": {"first_name": "Ann", "modified_ms": 1709287300000}},
            ).raise_for_status()
            with harness.state.transaction() as tx:  # read from the start (the fake takes no epoch "since")
                tx.set_checkpoint("reg", Direction.PULL, None)
            report = harness.pull()
            assert report.error is None, report.error
            assert report.counts.conflicts == 1
        finally:
            harness.close()


def test_deleting_a_group_deletes_its_cascaded_members_on_the_remote_too(
    project: Project, mock_server: httpx.Client
) -> None:
    """DataCollect's delete-entity removes a group and, recursively, its members; only the group's guid is
    on the event. The members' remote records must go as well, or they outlive their household for good
    (the pull skips a linked record whose entity is gone: "the push deletes it")."""
    _group_of_two(project)
    assert len(remote_records(mock_server)) == 3
    project.eventlog.append([event("g9", "grp", "delete-entity", {"reason": "registered twice"})])
    assert project.eventlog.get_entities(["grp", "m1", "m2"]) == {}
    report = run_connector(project, "reg", pull=False, retry=FAST_RETRY)
    assert report.ok and report.push is not None and report.push.counts.deleted == 3, report.push
    assert sorted((r["entityGuid"], r.get("deleted")) for r in remote_records(mock_server)) == [
        ("grp", True),
        ("m1", True),
        ("m2", True),
    ]
    assert list(project.state.iter_links("reg")) == []
    again = run_connector(project, "reg", pull=False, retry=FAST_RETRY)
    assert again.push is not None and again.push.counts.deleted == 0


def test_a_member_unlinked_in_one_run_and_added_back_in_a_later_one_is_sent_again(
    project: Project, mock_server: httpx.Client
) -> None:
    """The member's answers did not change, but its membership did: the remote must hold it under its
    household again (the mock server keeps a membership as the member's ``parentExternalId``)."""
    member = {"guid": "m2", "type": "individual", "name": "Mary", "parentGuid": "grp"}
    project.eventlog.append([event("g1", "grp", "create-group", {"name": "Smith", "members": [member]})])
    assert run_connector(project, "reg", pull=False, retry=FAST_RETRY).push.counts.created == 2

    def parent_of_mary() -> str | None:
        (mary,) = [r for r in mock_server.get("/_control/records").json() if r["entityGuid"] == "m2"]
        return mary["data"].get("parentExternalId")

    household = parent_of_mary()
    assert household is not None
    project.eventlog.append([event("g2", "grp", "remove-member", {"memberId": "m2"})])
    assert run_connector(project, "reg", pull=False, retry=FAST_RETRY).ok
    assert _unlinks_received(mock_server) == 1 and parent_of_mary() is None
    project.eventlog.append([event("g3", "grp", "add-member", {"members": [member]})])
    again = run_connector(project, "reg", pull=False, retry=FAST_RETRY)
    assert again.ok and again.push.counts.updated == 1, again.push.counts
    assert parent_of_mary() == household
    assert run_connector(project, "reg", retry=FAST_RETRY).push.counts.updated == 0


def _records_by_ref(mock: httpx.Client) -> dict[str, dict]:
    return {r["entityGuid"]: r for r in remote_records(mock)}


def _parent_on_remote(mock: httpx.Client, guid: str) -> str | None:
    """The mock server keeps a membership as the member's ``parentExternalId``."""
    return _records_by_ref(mock)[guid]["data"].get("parentExternalId")


def _smiths(project: Project) -> dict:
    """A group whose two members also name it in their own ``parentGuid``, pushed; Mary's member dict."""
    mary = {"guid": "m2", "type": "individual", "name": "Mary", "parentGuid": "grp"}
    john = {"guid": "m1", "type": "individual", "name": "John", "parentGuid": "grp"}
    project.eventlog.append([event("g1", "grp", "create-group", {"name": "Smith", "members": [john, mary]})])
    assert run_connector(project, "reg", pull=False, retry=FAST_RETRY).push.counts.created == 3
    return mary


_COMPARED = ("created", "updated", "deleted", "unchanged", "skipped", "dead_lettered", "parked")


def _counts(report) -> dict[str, int]:  # type: ignore[no-untyped-def]
    return {k: getattr(report.push.counts, k) for k in _COMPARED}


def test_a_member_removed_and_edited_later_is_not_made_a_member_again(
    project: Project, mock_server: httpx.Client
) -> None:
    """``remove-member`` leaves the person's own ``parentGuid``; a later edit of the person alone (no
    add-member) carried it back out, and the remote made them a member of the group again. The group's
    ``memberIds`` say who its members are: the edit goes, the membership stays ended; the dry run says
    so too, and a rerun sends nothing."""
    _smiths(project)
    household = _parent_on_remote(mock_server, "m2")
    assert household is not None
    project.eventlog.append([event("g2", "grp", "remove-member", {"memberId": "m2"})])
    assert run_connector(project, "reg", pull=False, retry=FAST_RETRY).ok
    assert _parent_on_remote(mock_server, "m2") is None

    project.eventlog.append([event("g3", "m2", "update-individual", {"phone_number": "+255"})])
    assert project.eventlog.get_entity("m2").parent_guid == "grp"  # the fold keeps it, as DataCollect does
    dry = run_connector(project, "reg", pull=False, dry_run=True, retry=FAST_RETRY)
    edited = run_connector(project, "reg", pull=False, retry=FAST_RETRY)
    assert edited.ok and edited.push.counts.updated == 1, edited.push.counts
    assert _counts(dry) == _counts(edited)
    mary = _records_by_ref(mock_server)["m2"]["data"]
    assert mary["phone_number"] == "+255" and mary.get("parentExternalId") is None, mary
    assert _parent_on_remote(mock_server, "m1") == household, "the member who stayed keeps the group"
    again = run_connector(project, "reg", retry=FAST_RETRY)
    assert again.ok and again.push.counts.updated + again.push.counts.created == 0, again.push.counts
    assert _parent_on_remote(mock_server, "m2") is None


def test_a_removed_member_touched_without_a_change_sends_nothing(
    project: Project, mock_server: httpx.Client
) -> None:
    """A form saved again unchanged after the removal: nothing differs from what the remote holds."""
    _smiths(project)
    project.eventlog.append([event("g2", "grp", "remove-member", {"memberId": "m2"})])
    assert run_connector(project, "reg", pull=False, retry=FAST_RETRY).ok
    project.eventlog.append([event("g3", "m2", "update-individual", {"name": "Mary"})])
    touched = run_connector(project, "reg", pull=False, retry=FAST_RETRY)
    assert touched.ok and touched.push.counts.updated == 0, touched.push.counts
    assert _parent_on_remote(mock_server, "m2") is None


def test_a_member_removed_and_edited_in_one_push_is_unlinked_once_and_not_sent_twice(
    project: Project, mock_server: httpx.Client
) -> None:
    """The removal and an edit in one page: the edit and the unlink go, the membership ends; and an
    unchanged member of that page is not sent beside its unlink just because its group dropped it."""
    _smiths(project)
    project.eventlog.append(
        [
            event("g2", "grp", "remove-member", {"memberId": "m2"}),
            event("g3", "m2", "update-individual", {"phone_number": "+255"}),
            event("g4", "grp", "remove-member", {"memberId": "m1"}),
        ]
    )
    dry = run_connector(project, "reg", pull=False, dry_run=True, retry=FAST_RETRY)
    report = run_connector(project, "reg", pull=False, retry=FAST_RETRY)
    assert report.ok and _unlinks_received(mock_server) == 2
    # m2's edit, two unlinks, and the group itself (its memberIds changed; its payload did not)
    assert report.push.counts.updated == 3, report.push.counts
    assert _counts(dry) == _counts(report)
    records = _records_by_ref(mock_server)
    assert records["m2"]["data"]["phone_number"] == "+255"
    assert _parent_on_remote(mock_server, "m1") is None and _parent_on_remote(mock_server, "m2") is None
    again = run_connector(project, "reg", retry=FAST_RETRY)
    assert again.push.counts.updated + again.push.counts.created == 0, again.push.counts


def test_a_dry_run_over_pages_counts_a_removed_member_as_the_real_run_does(
    make_project: Callable[..., Project], mock_server: httpx.Client
) -> None:
    """The removal on one page, the removed member saved again unchanged on a later one: the real run's
    unlink has dropped the household from the member's merge base by then, so nothing more goes; the dry
    run commits nothing, and must remember the unlink it rehearsed to count the same."""
    project = make_project(page_size=1)
    _smiths(project)
    project.eventlog.append(
        [
            event("g2", "grp", "remove-member", {"memberId": "m2"}),
            event("g3", "m2", "update-individual", {"name": "Mary"}),
        ]
    )
    dry = run_connector(project, "reg", pull=False, dry_run=True, retry=FAST_RETRY)
    real = run_connector(project, "reg", pull=False, retry=FAST_RETRY)
    assert real.ok and real.push.counts.updated == 1, real.push.counts  # the unlink alone
    assert _counts(dry) == _counts(real)


def test_a_member_registered_before_its_group_lists_it_joins_with_the_add_member(
    project: Project, mock_server: httpx.Client
) -> None:
    """A person created naming a group that does not list them yet is not its member on the remote;
    the ``add-member`` that follows (in a later push) makes them one."""
    project.eventlog.append([event("g1", "grp", "create-group", {"name": "Smith"})])
    project.eventlog.append(
        [
            event(
                "g2",
                "m3",
                "create-individual",
                {"entityName": "individual", "name": "Ann", "parentGuid": "grp"},
            )
        ]
    )
    first = run_connector(project, "reg", pull=False, retry=FAST_RETRY)
    assert first.ok and first.push.counts.created == 2 and first.push.counts.parked == 0, first.push.counts
    assert _parent_on_remote(mock_server, "m3") is None
    project.eventlog.append([event("g3", "grp", "add-member", {"members": [{"guid": "m3"}]})])
    joined = run_connector(project, "reg", pull=False, retry=FAST_RETRY)
    assert joined.ok, joined.error
    assert _parent_on_remote(mock_server, "m3") == _records_by_ref(mock_server)["grp"]["id"]
    again = run_connector(project, "reg", retry=FAST_RETRY)
    assert again.push.counts.updated + again.push.counts.created == 0, again.push.counts


def test_a_member_moved_to_another_group_that_lists_it_is_moved(
    project: Project, mock_server: httpx.Client
) -> None:
    """Removed from one group, added to another whose add-member carries the new ``parentGuid``."""
    mary = _smiths(project)
    project.eventlog.append([event("g2", "new", "create-group", {"name": "Jones"})])
    assert run_connector(project, "reg", pull=False, retry=FAST_RETRY).ok
    project.eventlog.append(
        [
            event("g3", "grp", "remove-member", {"memberId": "m2"}),
            event("g4", "new", "add-member", {"members": [{**mary, "parentGuid": "new"}]}),
        ]
    )
    moved = run_connector(project, "reg", pull=False, retry=FAST_RETRY)
    assert moved.ok, moved.error
    assert _parent_on_remote(mock_server, "m2") == _records_by_ref(mock_server)["new"]["id"]
    again = run_connector(project, "reg", retry=FAST_RETRY)
    assert again.push.counts.updated + again.push.counts.created == 0, again.push.counts


def test_mobile_households_keep_their_members_by_parent_guid_alone(
    project: Project, mock_server: httpx.Client
) -> None:
    """The mobile app's household is an individual-typed entity with no memberIds: its members belong to
    it by ``parentGuid`` and an edit of one keeps the household."""
    project.eventlog.append(
        [
            event("e1", "hh", "create-individual", {"entityName": "household", "name": "Doe HH"}),
            event(
                "e2",
                "p1",
                "create-individual",
                {"entityName": "individual", "name": "Jo", "parentGuid": "hh"},
            ),
        ]
    )
    assert run_connector(project, "reg", pull=False, retry=FAST_RETRY).push.counts.created == 2
    household = _records_by_ref(mock_server)["hh"]["id"]
    assert _parent_on_remote(mock_server, "p1") == household
    project.eventlog.append([event("e3", "p1", "update-individual", {"phone_number": "+1"})])
    edited = run_connector(project, "reg", pull=False, retry=FAST_RETRY)
    assert edited.ok and edited.push.counts.updated == 1, edited.push.counts
    assert _parent_on_remote(mock_server, "p1") == household


def test_a_member_moved_on_the_remote_between_groups_is_moved_in_the_groups_too(
    project: Project, mock_server: httpx.Client
) -> None:
    """The remote moves a member to another group household: the pull says so as the groups do
    (``remove-member`` on the old, ``add-member`` on the new), so a later local edit sends the member
    with its new household and nothing echoes back."""
    _smiths(project)
    project.eventlog.append([event("g2", "new", "create-group", {"name": "Jones"})])
    assert run_connector(project, "reg", pull=False, retry=FAST_RETRY).ok
    records = _records_by_ref(mock_server)
    mock_server.patch(
        f"/_control/records/{records['m2']['id']}", json={"data": {"parentExternalId": records["new"]["id"]}}
    )
    pulled = run_connector(project, "reg", retry=FAST_RETRY)
    assert pulled.ok and pulled.push.counts.updated + pulled.push.counts.created == 0, pulled.push.counts
    old, new = project.eventlog.get_entity("grp"), project.eventlog.get_entity("new")
    assert "m2" not in old.member_ids and "m2" in new.member_ids
    assert project.eventlog.get_entity("m2").parent_guid == "new"
    project.eventlog.append([event("g3", "m2", "update-individual", {"phone_number": "+9"})])
    edited = run_connector(project, "reg", retry=FAST_RETRY)
    assert edited.ok and edited.push.counts.updated == 1, edited.push.counts
    assert _parent_on_remote(mock_server, "m2") == records["new"]["id"]
    again = run_connector(project, "reg", retry=FAST_RETRY)
    assert again.pull.counts.appended == 0 and again.push.counts.updated == 0


def test_a_mapping_that_links_the_household_in_a_field_clears_it_for_a_removed_member(
    make_project: Callable[..., Project], mock_server: httpx.Client
) -> None:
    """``datacollect-registrant.yaml`` carries the household in the payload (``parent_ref``, a ``link`` of
    ``$.data.parentGuid``): for a member its group no longer lists, the field goes out null, as the
    record's parent does; the pull reads that back as no change, and nothing is added back."""
    mapping = Path(__file__).resolve().parents[1] / "mappings" / "datacollect-registrant.yaml"
    project = make_project(f"    mapping: {mapping}\n")
    person = {"entityName": "individual", "parentGuid": "grp", "type": "individual"}
    members = [{"guid": "m1", **person, "first_name": "John"}, {"guid": "m2", **person, "first_name": "Mary"}]
    project.eventlog.append(
        [
            event(
                "g1",
                "grp",
                "create-group",
                {"entityName": "household", "household_name": "Smith", "members": members},
            )
        ]
    )
    assert run_connector(project, "reg", retry=FAST_RETRY).push.counts.created == 3
    household = _records_by_ref(mock_server)["grp"]["id"]
    assert _records_by_ref(mock_server)["m2"]["data"]["parent_ref"] == household
    project.eventlog.append([event("g2", "grp", "remove-member", {"memberId": "m2"})])
    assert run_connector(project, "reg", retry=FAST_RETRY).ok
    project.eventlog.append([event("g3", "m2", "update-individual", {"phone_number": "+255700000001"})])
    edited = run_connector(project, "reg", retry=FAST_RETRY)
    assert edited.ok and edited.push.counts.updated == 1, edited.push.counts
    mary = _records_by_ref(mock_server)["m2"]["data"]
    assert mary["phone"] == "+255700000001" and mary["parent_ref"] is None, mary
    assert _records_by_ref(mock_server)["m1"]["data"]["parent_ref"] == household
    for _ in range(2):
        again = run_connector(project, "reg", retry=FAST_RETRY)
        assert again.pull.counts.appended == 0, again.pull.counts
        assert again.push.counts.updated + again.push.counts.created == 0, again.push.counts
    assert "m2" not in project.eventlog.get_entity("grp").member_ids


def test_a_pull_dry_run_resolves_parents_from_its_earlier_pages(
    make_project: Callable[..., Project], mock_server: httpx.Client
) -> None:
    """Households made on the remote, their members after them, two records a page: the dry run's counts
    are the real run's (it saw no orphans), and it wrote nothing."""
    homes = [
        mock_server.post("/_control/records", json={"entityName": "household", "data": {"n": i}}).json()
        for i in range(2)
    ]
    for i in range(5):
        data = {"n": i, "parentExternalId": homes[i % 2]["id"]}
        mock_server.post("/_control/records", json={"entityName": "individual", "data": data})
    project = make_project(page_size=2)
    dry = run_connector(project, "reg", push=False, dry_run=True, retry=FAST_RETRY)
    assert dry.ok and project.eventlog.head() is None
    real = run_connector(project, "reg", push=False, retry=FAST_RETRY)
    assert real.ok and real.pull.counts.created == 7 and real.pull.counts.dead_lettered == 0
    written = {"appended": 0}  # the one count a dry run cannot have
    assert dataclasses.replace(dry.pull.counts, **written) == dataclasses.replace(real.pull.counts, **written)

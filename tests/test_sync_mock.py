"""Push and pull against the mock system over real loopback HTTP, as an operator would run them."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sync_support import FAST_RETRY
from sync_support import event as _event
from sync_support import remote_records as _remote

from connector_core.events import format_timestamp, parse_timestamp
from connector_core.project import Project
from connector_core.sample import mobile_log
from connector_core.state.base import Direction
from connector_core.sync.runner import ConnectorBusy, connector_lock, run_connector


def test_every_entity_arrives_once_and_a_second_run_sends_nothing(project: Project, mock_server) -> None:
    project.eventlog.append(mobile_log(households=6, members=3, updates=5))
    entities = sum(1 for _ in project.eventlog.iter_entities())

    first = run_connector(project, "reg", pull=False, retry=FAST_RETRY)
    assert first.ok, first.error
    assert first.push.counts.created == entities == len(_remote(mock_server))
    stats = mock_server.get("/_control/stats").json()
    assert stats["duplicate_creates"] == {}

    second = run_connector(project, "reg", pull=False, retry=FAST_RETRY)
    assert second.push.counts.read == 0
    assert second.push.counts.created + second.push.counts.updated == 0


def test_households_are_delivered_before_their_members(project: Project, mock_server) -> None:
    project.eventlog.append(mobile_log(households=3, members=2, updates=0))
    run_connector(project, "reg", pull=False, retry=FAST_RETRY)
    records = sorted(_remote(mock_server), key=lambda r: int(r["id"].split("-")[1]))
    position = {r["entityGuid"]: i for i, r in enumerate(records)}
    for record in records:
        if record["entityName"] == "individual":
            parent_id = record["data"]["parentExternalId"]
            parent = next(r for r in records if r["id"] == parent_id)
            assert position[parent["entityGuid"]] < position[record["entityGuid"]]


def test_a_local_edit_is_pushed_as_one_update_of_the_current_state(project: Project, mock_server) -> None:
    project.eventlog.append(
        [_event("e1", "p1", "create-individual", {"entityName": "individual", "first_name": "Ana"})]
    )
    run_connector(project, "reg", pull=False, retry=FAST_RETRY)
    project.eventlog.append(
        [
            _event("e2", "p1", "update-individual", {"first_name": "Anna"}),
            _event("e3", "p1", "update-individual", {"phone_number": "+1"}),
        ]
    )
    report = run_connector(project, "reg", pull=False, retry=FAST_RETRY)
    assert (report.push.counts.created, report.push.counts.updated) == (0, 1)
    (record,) = _remote(mock_server)
    assert record["data"]["first_name"] == "Anna" and record["data"]["phone_number"] == "+1"
    assert record["version"] == 2


def test_remote_edits_come_back_as_events_and_do_not_echo(project: Project, mock_server) -> None:
    project.eventlog.append(mobile_log(households=2, members=2, updates=0))
    run_connector(project, "reg", pull=False, retry=FAST_RETRY)
    person = next(r for r in _remote(mock_server) if r["entityName"] == "individual")
    mock_server.patch(f"/_control/records/{person['id']}", json={"data": {"phone_number": "+639999"}})

    pulled = run_connector(project, "reg", push=False, retry=FAST_RETRY)
    assert pulled.pull.counts.appended == 1
    entity = project.eventlog.get_entity(person["entityGuid"])
    assert entity is not None and entity.data["phone_number"] == "+639999"
    last = list(project.eventlog.iter_events())[-1]
    assert (last.type, last.user_id, int(last.sync_level)) == ("update-individual", "dcsync:reg", 2)
    assert last.data == {"phone_number": "+639999"}

    again = run_connector(project, "reg", retry=FAST_RETRY)
    assert again.push.counts.created + again.push.counts.updated == 0, "a pulled change was pushed back"
    assert again.pull.counts.appended == 0, "a pushed record was pulled back as a change"


def test_a_record_created_remotely_becomes_one_entity_however_often_it_is_pulled(
    project: Project, mock_server
) -> None:
    mock_server.post("/_control/records", json={"entityName": "individual", "data": {"first_name": "Remote"}})
    first = run_connector(project, "reg", push=False, retry=FAST_RETRY)
    assert first.pull.counts.created == 1
    # forget the pull cursor: a re-read of the same records must not make a second entity
    with project.state.transaction() as tx:
        tx.set_checkpoint("reg", Direction.PULL, None)
    second = run_connector(project, "reg", push=False, retry=FAST_RETRY)
    assert second.pull.counts.appended == 0
    people = [e for e in project.eventlog.iter_entities() if e.data.get("first_name") == "Remote"]
    assert len(people) == 1 and people[0].data["entityName"] == "individual"


def test_records_sharing_a_timestamp_across_page_boundaries_are_all_pulled(
    project: Project, mock_server
) -> None:
    for i in range(30):  # page_size is 13: ties straddle two page boundaries
        mock_server.post(
            "/_control/records",
            json={"entityName": "individual", "data": {"n": i}, "timestamp": "2025-05-05T05:05:05.005Z"},
        )
    report = run_connector(project, "reg", push=False, retry=FAST_RETRY)
    assert report.pull.counts.created == 30
    assert sorted(e.data["n"] for e in project.eventlog.iter_entities()) == list(range(30))
    assert run_connector(project, "reg", push=False, retry=FAST_RETRY).pull.counts.appended == 0


def test_transient_failures_are_retried_without_duplicates(project: Project, mock_server) -> None:
    project.eventlog.append(mobile_log(households=4, members=2, updates=0))
    mock_server.put(
        "/_control/faults",
        json={
            "script": [{"status": 503}, {"status": 502, "commit": True}, {"status": 429, "retry_after": 0}]
        },
    )
    report = run_connector(project, "reg", pull=False, retry=FAST_RETRY)
    assert report.ok, report.error
    assert report.push.counts.retries == 3
    assert len(_remote(mock_server)) == 12
    assert mock_server.get("/_control/stats").json()["duplicate_creates"] == {}


def test_a_refused_record_is_dead_lettered_with_the_remote_message_and_the_run_goes_on(
    project: Project, mock_server
) -> None:
    project.eventlog.append(
        [
            _event("a", "bad", "create-individual", {"entityName": "individual", "first_name": "X"}),
            _event("b", "good", "create-individual", {"entityName": "individual", "first_name": "Y"}),
        ]
    )
    mock_server.put("/_control/faults", json={"reject": {"bad": "national id already registered"}})
    report = run_connector(project, "reg", pull=False, retry=FAST_RETRY)
    assert report.ok
    assert (report.push.counts.created, report.push.counts.dead_lettered) == (1, 1)
    (letter,) = project.state.dead_letters("reg")
    assert letter.ref == "bad" and "national id already registered" in letter.reason
    assert project.state.get_checkpoint("reg", Direction.PUSH) == project.eventlog.head()


def test_when_retries_run_out_the_checkpoint_stays_and_the_next_run_delivers(
    project: Project, mock_server
) -> None:
    project.eventlog.append(mobile_log(households=2, members=1, updates=0))
    mock_server.put("/_control/faults", json={"script": [{"status": 503}] * 10})
    report = run_connector(project, "reg", pull=False, retry=FAST_RETRY)
    assert not report.ok and "gave up" in report.error
    assert project.state.get_checkpoint("reg", Direction.PUSH) is None
    mock_server.put("/_control/faults", json={"script": []})
    report = run_connector(project, "reg", pull=False, retry=FAST_RETRY)
    assert report.ok and len(_remote(mock_server)) == 4
    assert project.state.get_checkpoint("reg", Direction.PUSH) == project.eventlog.head()


def test_a_deleted_entity_is_deleted_remotely(project: Project, mock_server) -> None:
    project.eventlog.append(
        [_event("a", "p", "create-individual", {"entityName": "individual", "first_name": "Z"})]
    )
    run_connector(project, "reg", pull=False, retry=FAST_RETRY)
    project.eventlog.append([_event("b", "p", "delete-entity", {"reason": "moved away"})])
    report = run_connector(project, "reg", pull=False, retry=FAST_RETRY)
    assert report.push.counts.deleted == 1
    (record,) = _remote(mock_server)
    assert record["deleted"] is True
    assert project.state.get_link("reg", "p") is None


def test_dry_run_writes_nothing(project: Project, mock_server) -> None:
    project.eventlog.append(mobile_log(households=2, members=2, updates=0))
    report = run_connector(project, "reg", dry_run=True, retry=FAST_RETRY)
    assert report.push.counts.created == 6
    assert _remote(mock_server) == []
    assert project.state.get_checkpoint("reg", Direction.PUSH) is None
    assert project.state.runs("reg") == []


def test_two_runs_of_one_connector_never_overlap(project: Project) -> None:
    with connector_lock(project, "reg"), pytest.raises(ConnectorBusy, match="already running"):
        run_connector(project, "reg")


def test_run_history_records_each_run_with_counts(project: Project) -> None:
    project.eventlog.append(mobile_log(households=1, members=1, updates=0))
    run_connector(project, "reg", retry=FAST_RETRY)
    (run,) = project.state.runs("reg")
    assert run.outcome == "ok" and run.direction == "both" and run.counts["created"] == 2


def test_a_record_committed_late_behind_the_cursor_is_still_pulled(project: Project, mock_server) -> None:
    mock_server.post("/_control/records", json={"entityName": "individual", "data": {"n": 1}})
    assert run_connector(project, "reg", push=False, retry=FAST_RETRY).pull.counts.created == 1
    # a slow transaction on the remote commits a record stamped before what the last pull already read
    records = _remote(mock_server)
    late = format_timestamp(parse_timestamp(records[0]["timestamp"]) - timedelta(seconds=5))
    mock_server.post(
        "/_control/records", json={"entityName": "individual", "data": {"n": 2}, "timestamp": late}
    )
    second = run_connector(project, "reg", push=False, retry=FAST_RETRY)
    assert second.pull.counts.created == 1 and second.pull.counts.appended == 1
    assert sorted(e.data["n"] for e in project.eventlog.iter_entities()) == [1, 2]
    third = run_connector(project, "reg", push=False, retry=FAST_RETRY)
    assert third.pull.counts.appended == 0, "re-reading the look-back window appends nothing"


def test_a_member_a_group_lists_without_a_parent_guid_goes_with_its_household(
    project: Project, mock_server
) -> None:
    """A group's ``memberIds`` is a membership in DataCollect: members of a ``create-group`` without a
    ``parentGuid`` of their own, and a person an ``add-member`` lists later, carry the household's id."""
    project.eventlog.append(
        [
            _event(
                "e1",
                "hh",
                "create-group",
                {"entityName": "household", "members": [{"guid": "p1", "entityName": "individual"}]},
            ),
            _event("e2", "p2", "create-individual", {"entityName": "individual", "first_name": "Ben"}),
        ]
    )
    first = run_connector(project, "reg", pull=False, retry=FAST_RETRY)
    assert first.ok and first.push.counts.parked == 0, first.push.counts
    by_guid = {r["entityGuid"]: r for r in _remote(mock_server)}
    assert by_guid["p1"]["data"].get("parentExternalId") == by_guid["hh"]["id"]
    assert "parentExternalId" not in by_guid["p2"]["data"]

    project.eventlog.append([_event("e3", "hh", "add-member", {"members": [{"guid": "p2"}]})])
    joined = run_connector(project, "reg", pull=False, retry=FAST_RETRY)
    assert joined.ok and joined.push.counts.updated == 1, joined.push.counts
    by_guid = {r["entityGuid"]: r for r in _remote(mock_server)}
    assert by_guid["p2"]["data"].get("parentExternalId") == by_guid["hh"]["id"]
    again = run_connector(project, "reg", pull=False, retry=FAST_RETRY)
    assert again.push.counts.created + again.push.counts.updated == 0


def test_members_a_refused_group_lists_follow_it_with_their_household_when_it_is_replayed(
    project: Project, mock_server
) -> None:
    """The members of a refused group wait for it; replayed, the group is delivered and they follow with
    its id as their household, though they have no ``parentGuid`` to name it by, and so does a member
    the end of a later run retries."""
    from connector_core.actions import replay_dead_letters

    members = [{"guid": "p1", "entityName": "individual"}, {"guid": "p2", "entityName": "individual"}]
    project.eventlog.append(
        [_event("e1", "hh", "create-group", {"entityName": "household", "members": members})]
    )
    mock_server.put("/_control/faults", json={"reject": {"hh": "household refused"}})
    first = run_connector(project, "reg", pull=False, retry=FAST_RETRY)
    assert first.ok and first.push.counts.dead_lettered == 1, first.push.counts
    assert _remote(mock_server) == []
    mock_server.put("/_control/faults", json={"reject": {}})
    replay_dead_letters(project, "reg", project.state.dead_letters("reg"), actor="test")
    by_guid = {r["entityGuid"]: r for r in _remote(mock_server)}
    assert set(by_guid) == {"hh", "p1", "p2"}
    assert by_guid["p1"]["data"].get("parentExternalId") == by_guid["hh"]["id"]
    assert by_guid["p2"]["data"].get("parentExternalId") == by_guid["hh"]["id"]
    again = run_connector(project, "reg", pull=False, retry=FAST_RETRY)
    assert again.push.counts.created + again.push.counts.updated == 0, again.push.counts

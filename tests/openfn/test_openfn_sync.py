"""The acceptance scenarios: a project synced with the fake Lightning over loopback HTTP, as operators do."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable

from openfn_support import FAST_RETRY, event

from connector_core.project import Project
from connector_core.sample import mobile_log
from connector_core.state.base import Direction
from connector_core.sync.runner import run_connector
from connectors.openfn.fake import FakeLightning, Fault
from connectors.openfn.fake.faults import FaultPlan
from connectors.openfn.fake.seed import API_KEY, RESULTS_COLLECTION, TRIGGER_ID

MakeProject = Callable[..., Project]


def test_five_thousand_events_arrive_in_bounded_batches_each_accepted_once_or_resent_with_its_batch_id(
    make_project: MakeProject, lightning: FakeLightning
) -> None:
    project = make_project(
        instance={"batch_size": 500, "page_size": 1000, "pull": False},
        max_batch_records=250,
        max_body_bytes=512_000,
        timeout=0.5,
    )
    project.eventlog.append(mobile_log(households=800, members=5, updates=200))
    assert project.eventlog.head() is not None
    entities = {e.guid for e in project.eventlog.iter_entities()}
    assert len(entities) == 4800

    lightning.max_body_bytes = 60_000  # below a full 250-record body: Lightning answers 413
    lightning.faults = FaultPlan(
        script=[Fault("timeout_after_commit", seconds=1.0), Fault("reset", commit=True)],
        rate=0.06,
        seed=11,
        choices=[
            Fault("too_many_runs"),
            Fault("status", status=429, body={"error": "too_many_requests", "message": "slow down"}),
            Fault("status", status=503, headers={"Retry-After": "0"}, body={"error": "service_unavailable"}),
        ],
    )
    lightning.auto_run = False  # the job's work is not under test here

    # the engine counts attempts per engine batch (several bodies), so a storm gets a larger budget
    storm = FAST_RETRY.model_copy(update={"max_attempts": 12})
    report = run_connector(project, "fn", retry=storm)
    assert report.ok, report.error
    assert report.push.counts.created == 4800 and report.push.counts.dead_lettered == 0
    assert report.push.counts.retries > 0

    injected = Counter(i.action for i in lightning.faults.injected)
    assert injected["too_many_runs"] and injected["status"] and injected["timeout_after_commit"]
    assert lightning.answers.get(413, 0) > 0, "some bodies were split"
    assert lightning.answers.get(429, 0) > 0 and lightning.answers.get(503, 0) > 0

    bodies = list(lightning.accepted_bodies())
    by_batch: dict[str, set[tuple[str, ...]]] = {}
    for batch_id, body in bodies:
        assert batch_id == body["batch_id"]
        assert len(body["entities"]) <= 250
        assert len(json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()) <= 60_000
        by_batch.setdefault(batch_id, set()).add(tuple(e["guid"] for e in body["entities"]))
    assert all(len(contents) == 1 for contents in by_batch.values()), (
        "a batch_id always means the same events"
    )
    owners = Counter(guid for contents in by_batch.values() for guids in contents for guid in guids)
    assert set(owners.values()) == {1}, "every event belongs to exactly one batch_id"
    assert {e["entityGuid"] for _, body in bodies for e in body["entities"]} == entities
    resent = [len(orders) for orders in lightning.accepted_batches().values() if len(orders) > 1]
    assert sum(resent) - len(resent) == 2, (
        "the two answers lost after commit were re-sent with their batch_id"
    )
    rejected = {o.batch_id for o in lightning.work_orders.values() if o.state == "rejected"}
    assert rejected and rejected <= set(by_batch), "quota-rejected batches were re-sent and accepted"

    again = run_connector(project, "fn", retry=FAST_RETRY)
    assert again.ok and again.push.counts.created + again.push.counts.updated == 0


def test_three_thousand_items_updated_during_the_pull_and_at_the_boundary_each_become_one_event(
    make_project: MakeProject, lightning: FakeLightning
) -> None:
    project = make_project(
        instance={"push": False, "page_size": 500}, default_entity_name="individual", lag_seconds=0
    )
    lightning.clock.freeze("2025-09-09T09:09:09.090909Z")  # the first 1000 items share one updated_at
    for i in range(3000):
        if i == 1000:
            lightning.clock.unfreeze()
        lightning.put_json(RESULTS_COLLECTION, f"dc:result:{i:05d}", {"first_name": f"P{i}", "status": "new"})

    def during_the_pull(sequence: int) -> None:
        if sequence == 4:  # preflight, then pages 1 and 2 served: items 0..999 are behind the cursor
            for i in [*range(0, 50), *range(2500, 2550)]:
                lightning.put_json(
                    RESULTS_COLLECTION, f"dc:result:{i:05d}", {"first_name": f"P{i}", "status": "done"}
                )
            for i in range(3000, 3010):
                lightning.put_json(
                    RESULTS_COLLECTION, f"dc:result:{i:05d}", {"first_name": f"P{i}", "status": "new"}
                )

    lightning.on_collection_list = during_the_pull

    first = run_connector(project, "fn", retry=FAST_RETRY)
    assert first.ok, first.error
    lightning.on_collection_list = None
    # 3010 created; the 50 updated behind the cursor add one update each (those ahead were read updated)
    assert (first.pull.counts.created, first.pull.counts.updated) == (3010, 50)
    assert first.pull.counts.appended == 3060

    people = {e.data["first_name"]: e.data for e in project.eventlog.iter_entities()}
    assert len(people) == 3010
    assert all(people[f"P{i}"]["status"] == "done" for i in [*range(0, 50), *range(2500, 2550)])
    assert people["P60"]["status"] == "new"
    events = list(project.eventlog.iter_events())
    assert len(events) == len({e.guid for e in events}) == 3060
    assert all(e.user_id == "dcsync:fn" and int(e.sync_level) == 2 for e in events)

    second = run_connector(project, "fn", retry=FAST_RETRY)
    assert second.ok and second.pull.counts.appended == 0
    assert second.pull.counts.read == 0, "re-read item states are not even handed to the engine"

    boundary = json.loads(project.state.get_checkpoint("fn", Direction.PULL) or "{}")["after"]
    lightning.clock.freeze(boundary)  # new writes land exactly on the inclusive boundary
    for i in range(3010, 3015):
        lightning.put_json(RESULTS_COLLECTION, f"dc:result:{i:05d}", {"first_name": f"P{i}", "status": "new"})
    for i in range(100, 105):
        lightning.put_json(
            RESULTS_COLLECTION, f"dc:result:{i:05d}", {"first_name": f"P{i}", "status": "late"}
        )
    third = run_connector(project, "fn", retry=FAST_RETRY)
    assert (third.pull.counts.created, third.pull.counts.updated, third.pull.counts.appended) == (5, 5, 10)
    assert run_connector(project, "fn", retry=FAST_RETRY).pull.counts.appended == 0


def test_the_pull_cursor_moves_only_after_a_page_is_committed(
    make_project: MakeProject, lightning: FakeLightning
) -> None:
    project = make_project(instance={"push": False, "page_size": 100}, default_entity_name="individual")
    for i in range(450):
        lightning.put_json(RESULTS_COLLECTION, f"dc:result:{i:04d}", {"first_name": f"P{i}"})
    lightning.faults = FaultPlan(
        script=[
            Fault("delay", route="GET /collections/*", times=3),  # preflight and two pages go through
            Fault("status", route="GET /collections/*", status=502, times=50),
        ]
    )
    broken = run_connector(project, "fn", retry=FAST_RETRY)
    assert not broken.ok and "502" in (broken.error or "")
    assert broken.pull.counts.appended == 200
    cursor = json.loads(project.state.get_checkpoint("fn", Direction.PULL) or "{}")
    assert cursor["pages"] == 2 and cursor["cursor"], "resumes inside the pass, after the committed pages"

    lightning.faults = FaultPlan()
    resumed = run_connector(project, "fn", retry=FAST_RETRY)
    assert resumed.ok, resumed.error
    assert resumed.pull.counts.appended == 250
    assert len({e.data["first_name"] for e in project.eventlog.iter_entities()}) == 450


def test_what_was_pulled_from_openfn_is_never_pushed_back(
    make_project: MakeProject, lightning: FakeLightning
) -> None:
    project = make_project(default_entity_name="individual")
    project.eventlog.append(
        [
            event("e1", "p1", "create-individual", {"entityName": "individual", "first_name": "Ana"}),
            event("e2", "p2", "create-individual", {"entityName": "individual", "first_name": "Ben"}),
        ]
    )
    first = run_connector(project, "fn", retry=FAST_RETRY)
    assert first.ok, first.error
    assert first.push.counts.created == 2
    lightning.tick()
    results = lightning.collection(RESULTS_COLLECTION).items
    assert set(results) == {"dc:result:p1", "dc:result:p2"}, "the companion job wrote one result per entity"
    lightning.put_json(
        RESULTS_COLLECTION, "dc:result:remote-1", {"first_name": "Made in OpenFn", "status": "new"}
    )
    sent = len(lightning.requests)

    second = run_connector(project, "fn", retry=FAST_RETRY)
    assert second.ok, second.error
    assert second.pull.counts.updated == 2 and second.pull.counts.created == 1
    ana = project.eventlog.get_entity("p1")
    assert ana is not None and ana.data["status"] == "received" and ana.data["first_name"] == "Ana"
    assert second.push.counts.created + second.push.counts.updated == 0
    assert len(lightning.requests) == sent, "nothing pulled was sent back to the webhook"

    third = run_connector(project, "fn", retry=FAST_RETRY)
    assert third.pull.counts.appended == 0 and len(lightning.requests) == sent

    project.eventlog.append([event("e3", "p1", "update-individual", {"phone": "+1"})])
    fourth = run_connector(project, "fn", retry=FAST_RETRY)
    assert fourth.push.counts.updated == 1 and len(lightning.requests) == sent + 1
    ((_, body),) = list(lightning.accepted_bodies())[-1:]
    (sent_event,) = body["entities"]
    assert sent_event["entityGuid"] == "p1" and sent_event["data"]["phone"] == "+1"
    assert sent_event["userId"] == "dcsync:fn" and sent_event["type"] == "update-individual"


def test_a_key_rotated_mid_run_stops_the_run_and_the_next_run_delivers_the_rest(
    make_project: MakeProject, lightning: FakeLightning
) -> None:
    project = make_project(instance={"pull": False, "batch_size": 20}, max_batch_records=10)
    project.eventlog.append(mobile_log(households=20, members=2, updates=0))
    lightning.faults.add(Fault("delay", times=3))
    lightning.faults.add(Fault("rotate_api_key"))

    stopped = run_connector(project, "fn", retry=FAST_RETRY)
    assert not stopped.ok and "were refused" in (stopped.error or "")
    assert stopped.push.counts.created == 30 and stopped.push.counts.dead_lettered == 0
    assert project.state.dead_letters("fn") == []
    assert project.state.get_checkpoint("fn", Direction.PUSH) is None, "the page is not passed"

    lightning.triggers[TRIGGER_ID].auth[0].key = API_KEY  # the operator puts the right key back
    resumed = run_connector(project, "fn", retry=FAST_RETRY)
    assert resumed.ok, resumed.error
    assert resumed.push.counts.created == 30
    delivered = {e["entityGuid"] for _, body in lightning.accepted_bodies() for e in body["entities"]}
    assert delivered == {e.guid for e in project.eventlog.iter_entities()}
    assert lightning.duplicate_batches() == {}


def test_push_without_a_trigger_stops_the_run_and_dead_letters_nothing(
    make_project: MakeProject, lightning: FakeLightning
) -> None:
    project = make_project(trigger=None, api_key=None, default_entity_name="individual")
    project.eventlog.append(
        [event("e1", "p1", "create-individual", {"entityName": "individual", "first_name": "A"})]
    )
    report = run_connector(project, "fn", retry=FAST_RETRY)
    assert report.pull.error is None
    assert "no trigger is set" in (report.push.error or "") and "push: false" in (report.push.error or "")
    assert (
        project.state.dead_letters("fn") == [] and project.state.get_checkpoint("fn", Direction.PUSH) is None
    )

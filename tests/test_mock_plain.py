"""The mock connector against a server that speaks only DataCollect's ``MockSyncServerAdapter`` protocol.

Such a server (``connectors.mock.plain``) answers a push with a plain success, has no by-ref lookup (404,
or a JSON list where a server was seen answering one) and answers ``GET ?since=`` with the events it
stored. The connector must detect that, never dead-letter a record that may have arrived, and pull the
records back as the entities they are: their fields under their own guids.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sync_support import FAST_RETRY, write_config

from connector_core.connector import ConnectorError, Operation, PushRecord
from connector_core.project import Project
from connector_core.sample import mobile_log
from connector_core.state.base import Direction
from connector_core.sync.runner import run_connector
from connector_core.testing.harness import SyncHarness, sample_events
from connector_core.testing.server import ServedApp, serve
from connectors.mock.connector import MockConfig, MockConnector
from connectors.mock.plain import create_plain_app
from connectors.mock.server import create_app


@pytest.fixture(params=["missing", "list"], ids=["by-ref-404", "by-ref-list"])
def plain(request: pytest.FixtureRequest) -> Iterator[ServedApp]:
    with serve(create_plain_app(by_ref=request.param)) as served:
        yield served


@pytest.fixture
def control(plain: ServedApp) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=plain.url, timeout=10) as client:
        yield client


@pytest.fixture
def connector(plain: ServedApp) -> Iterator[MockConnector]:
    made = MockConnector("reg", MockConfig(url=plain.url, timeout=5, lookback_seconds=0))
    yield made
    made.close()


@pytest.fixture
def harness(connector: MockConnector, tmp_path: Path) -> Iterator[SyncHarness]:
    made = SyncHarness(connector, tmp_path / "harness", batch_size=7, page_size=11)
    yield made
    made.close()


def _entities(control: httpx.Client) -> dict[str, dict[str, Any]]:
    return dict(control.get("/_control/entities").json())


def _assert_once_each(control: httpx.Client, guids: list[str]) -> None:
    remote = _entities(control)
    assert sorted(remote) == sorted(guids), "the remote holds exactly the log's entities"
    repeated = {guid: e["creates"] for guid, e in remote.items() if e["creates"] != 1}
    assert repeated == {}, f"entities created more than once (guid: creates): {repeated}"


def test_the_plain_server_is_no_more_lenient_than_the_adapter_protocol(control: httpx.Client) -> None:
    assert control.get("/records/by-ref", params={"refs": "x"}).status_code in (200, 404)
    assert control.get("/no/such/path").status_code == 404
    event = {
        "guid": str(uuid.uuid4()),
        "entityGuid": str(uuid.uuid4()),
        "type": "create-individual",
        "data": {"name": "Ana"},
        "timestamp": "2025-01-01T10:00:00.000Z",
        "userId": "admin",
        "syncLevel": 0,
    }
    answer = control.post("/", json={"data": [event]})
    assert answer.status_code == 200 and answer.json() == {"status": "success"}, "no per-event results"
    assert control.post("/", json={"data": [event]}).json() == {"status": "success"}
    assert control.get("/_control/stats").json()["events"] == 1, "an event sent again is kept once"
    assert control.post("/", json={"data": [{**event, "data": {}}]}).status_code == 400
    assert control.post("/", json=[event]).status_code == 400
    rows = control.get("/", params={"since": "2025-01-01T09:59:59.999Z", "limit": 0}).json()
    assert [r["guid"] for r in rows] == [event["guid"]], "a JSON array of events; no limit"
    assert control.get("/", params={"since": "2025-01-01T10:00:00.000Z"}).json() == []


def test_events_sharing_a_timestamp_come_back_in_no_arrival_order(control: httpx.Client) -> None:
    # The adapter protocol promises no order for ties (its source is DataCollect's getEventsSince, §2.1 d):
    # the server breaks them by a hash of the guid, so a client leaning on arrival order fails in tests.
    def key(guid: str) -> str:
        return hashlib.sha256(guid.encode()).hexdigest()

    guids = sorted((f"tie-{n}" for n in range(6)), key=key, reverse=True)
    events = [
        {
            "guid": g,
            "entityGuid": f"p-{g}",
            "type": "create-individual",
            "data": {"name": g},
            "timestamp": "2025-01-01T10:00:00.000Z",
            "userId": "admin",
            "syncLevel": 0,
        }
        for g in guids
    ]
    assert control.post("/", json={"data": events}).status_code == 200
    assert [r["guid"] for r in control.get("/", params={"since": ""}).json()] == sorted(guids, key=key)


def test_check_says_which_protocol_the_server_speaks(connector: MockConnector, tmp_path: Path) -> None:
    result = connector.check()
    assert result.ok, result.message
    assert "no by-ref lookup" in result.message
    with serve(create_app()) as rich:
        full = MockConnector("rich", MockConfig(url=rich.url, timeout=5))
        try:
            answer = full.check()
        finally:
            full.close()
    assert answer.ok and "by-ref lookup" in answer.message and "no by-ref" not in answer.message


def test_lookup_never_raises_an_attribute_error_and_finds_what_arrived(
    connector: MockConnector, control: httpx.Client
) -> None:
    """Observed: a lookup answered 404 dead-lettered a root that had arrived; one answered with a JSON
    list raised AttributeError. Without a by-ref lookup, the connector reads the server's own events."""
    records = [
        PushRecord(
            ref=str(uuid.uuid4()), operation=Operation.CREATE, entity_name="individual", payload={"n": i}
        )
        for i in range(3)
    ]
    results = connector.push(records)
    assert all(r.ok for r in results)
    assert {r.ref: r.external_id for r in results} == {r.ref: r.ref for r in records}, (
        "the remote keeps no id of its own: the entity guid is the external id"
    )
    unknown = str(uuid.uuid4())
    assert connector.lookup([records[0].ref, unknown]) == {records[0].ref: records[0].ref}
    assert connector.lookup([]) == {}


def test_the_sample_log_arrives_once_without_dead_letters_or_parked_children(
    harness: SyncHarness, control: httpx.Client
) -> None:
    harness.append(sample_events(households=6, members=3, updates=4))
    guids = [e.guid for e in harness.entities()]
    report = harness.push()
    assert report.error is None, report.error
    assert harness.dead_letters() == []
    assert list(harness.state.iter_parked("reg")) == []
    assert report.counts.created == len(guids)
    assert harness.links() == {guid: guid for guid in guids}
    _assert_once_each(control, guids)
    assert harness.checkpoint(Direction.PUSH) == harness.eventlog.head()
    again = harness.push()
    assert again.counts.created + again.counts.updated == 0, "nothing changed, so nothing is sent"


def test_writes_that_committed_but_lost_their_answers_are_neither_dead_lettered_nor_repeated(
    harness: SyncHarness, control: httpx.Client
) -> None:
    harness.append(sample_events(households=4, members=2, updates=2))
    guids = [e.guid for e in harness.entities()]
    faults = [
        {"kind": "commit_then_fail", "status": 502, "on": "push"},
        {"kind": "reset", "commit": True, "on": "push"},
        {"kind": "commit_then_fail", "status": 503, "on": "push"},
    ]
    control.put("/_control/faults", json={"script": faults}).raise_for_status()
    report = harness.push()
    assert report.error is None, report.error
    assert report.counts.retries >= 3
    assert harness.dead_letters() == [], "a record that may have arrived is never dead-lettered"
    _assert_once_each(control, guids)
    assert set(harness.links()) == set(guids)


def test_when_failures_outlast_the_retries_nothing_is_dead_lettered_and_the_next_run_delivers(
    harness: SyncHarness, control: httpx.Client
) -> None:
    harness.append(sample_events(households=3, members=2, updates=0))
    guids = [e.guid for e in harness.entities()]
    script = [{"kind": "commit_then_fail", "status": 503, "on": "push"}] * 50
    control.put("/_control/faults", json={"script": script}).raise_for_status()
    stopped = harness.push()
    assert stopped.error is not None
    assert harness.dead_letters() == []
    assert harness.checkpoint(Direction.PUSH) is None
    control.put("/_control/faults", json={}).raise_for_status()
    report = harness.push()
    assert report.error is None, report.error
    _assert_once_each(control, guids)


def test_pull_gives_back_the_pushed_records_under_their_own_guids(
    harness: SyncHarness, control: httpx.Client
) -> None:
    """Observed: the pull appended a create per record, holding only ``entityName``, under new guids."""
    harness.append(sample_events(households=3, members=2, updates=2))
    before = {e.guid: e.data for e in harness.entities()}
    assert harness.push().error is None
    pulled = harness.pull()
    assert pulled.error is None, pulled.error
    assert pulled.counts.appended == 0, "records dcsync pushed came back as changes"
    assert {e.guid: e.data for e in harness.entities()} == before, "no new entity, no changed field"
    again = harness.push()
    assert again.counts.created + again.counts.updated == 0, "a pull must not make the next push resend"


def test_remote_edits_and_records_come_back_with_their_fields_and_guids(
    harness: SyncHarness, control: httpx.Client
) -> None:
    harness.append(sample_events(households=2, members=2, updates=0))
    assert harness.push().error is None
    assert harness.pull().counts.appended == 0
    person = next(e for e in harness.entities() if e.entity_name == "individual")
    edit = {"guid": str(uuid.uuid4()), "entityGuid": person.guid, "type": "update-individual"}
    control.post("/_control/events", json={**edit, "data": {"phone_number": "+639999"}}).raise_for_status()
    newcomer = str(uuid.uuid4())
    created = {
        "guid": str(uuid.uuid4()),
        "entityGuid": newcomer,
        "type": "create-individual",
        "data": {"entityName": "individual", "first_name": "Remote", "last_name": "Clerk"},
    }
    control.post("/_control/events", json=created).raise_for_status()

    pulled = harness.pull()
    assert pulled.error is None, pulled.error
    assert (pulled.counts.appended, pulled.counts.created, pulled.counts.updated) == (2, 1, 1)
    events = list(harness.eventlog.iter_events())[-2:]
    by_entity = {e.entity_guid: e for e in events}
    assert by_entity[person.guid].type == "update-individual"
    assert by_entity[person.guid].data == {"phone_number": "+639999"}, "exactly the remote's edit"
    assert by_entity[newcomer].type == "create-individual", "the remote's record under its own guid"
    entity = harness.eventlog.get_entity(newcomer)
    assert entity is not None and entity.entity_name == "individual"
    assert entity.data["first_name"] == "Remote" and entity.data["last_name"] == "Clerk"

    assert harness.pull().counts.appended == 0, "re-reading appends nothing"
    again = harness.push()
    assert again.counts.created + again.counts.updated == 0, "a pulled change is not pushed back"


def test_a_full_page_of_events_in_one_millisecond_is_pulled_whole(
    harness: SyncHarness, control: httpx.Client
) -> None:
    guids = [str(uuid.uuid4()) for _ in range(30)]
    for i, guid in enumerate(guids):
        control.post(
            "/_control/events",
            json={
                "guid": str(uuid.uuid4()),
                "entityGuid": guid,
                "type": "create-individual",
                "timestamp": "2025-06-01T08:00:00.000Z",
                "data": {"entityName": "individual", "first_name": f"Tie{i}"},
            },
        ).raise_for_status()
    report = harness.pull()
    assert report.error is None, report.error
    assert report.counts.created == 30
    assert {e.guid for e in harness.entities()} == set(guids)


def test_a_garbage_lookup_answer_is_a_clear_error_not_a_traceback() -> None:
    """A server that offered a lookup object once and then answers something else."""
    answers = iter([httpx.Response(200, json={}), httpx.Response(200, json=["not", "an", "object"])])

    def handler(request: httpx.Request) -> httpx.Response:
        return next(answers)

    client = httpx.Client(base_url="http://remote", transport=httpx.MockTransport(handler))
    connector = MockConnector("reg", MockConfig(url="http://remote"), client=client)
    with pytest.raises(ConnectorError) as info:
        connector.lookup(["a"])
    assert "by-ref" in info.value.message and "list" in info.value.message
    assert info.value.transient, "an answer that cannot be read must not dead-letter what may have arrived"


def test_a_project_runs_the_sample_log_both_ways_against_the_plain_server(
    tmp_path: Path, plain: ServedApp, control: httpx.Client
) -> None:
    config = write_config(tmp_path / "dcsync.yaml", plain.url, batch_size=50, page_size=120)
    project = Project.open(config)
    try:
        project.eventlog.append(mobile_log())
        guids = [e.guid for e in project.eventlog.iter_entities()]
        first = run_connector(project, "reg", retry=FAST_RETRY)
        assert first.ok, first.error
        assert first.push is not None and first.push.counts.created == len(guids)
        assert project.state.dead_letters("reg") == []
        _assert_once_each(control, guids)
        before = {e.guid: e.data for e in project.eventlog.iter_entities()}
        second = run_connector(project, "reg", retry=FAST_RETRY)
        assert second.ok, second.error
        assert second.pull is not None and second.pull.counts.appended == 0
        assert second.push is not None and second.push.counts.created + second.push.counts.updated == 0
        assert {e.guid: e.data for e in project.eventlog.iter_entities()} == before
        assert project.state.runs("reg")[0].outcome == "ok"
    finally:
        project.close()


def test_a_record_deleted_on_the_server_is_deleted_here(harness: SyncHarness, control: httpx.Client) -> None:
    harness.append(sample_events(households=1, members=2, updates=0))
    assert harness.push().error is None
    person = next(e for e in harness.entities() if e.entity_name == "individual")
    gone = {"guid": str(uuid.uuid4()), "entityGuid": person.guid, "type": "delete-entity"}
    control.post("/_control/events", json={**gone, "data": {"reason": "moved away"}}).raise_for_status()
    report = harness.pull()
    assert report.error is None, report.error
    assert report.counts.deleted == 1
    assert harness.eventlog.get_entity(person.guid) is None
    assert harness.pull().counts.appended == 0


def _plain_connector(rows: Any) -> MockConnector:
    """A server without a lookup whose ``GET ?since=`` answers ``rows``: shapes the fake never sends."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/records/by-ref":
            return httpx.Response(404, text="Not Found")
        return httpx.Response(200, json=rows)

    client = httpx.Client(base_url="http://remote", transport=httpx.MockTransport(handler))
    return MockConnector("reg", MockConfig(url="http://remote"), client=client)


def test_flat_records_are_read_as_the_adapter_reads_them() -> None:
    """The adapter takes a record's ``id`` for its entity and the record itself for its data."""
    rows = [{"id": "ext-1", "name": "From External", "timestamp": "2025-01-01T10:00:00.000Z"}]
    page = _plain_connector(rows).pull(None, 10)
    (record,) = page.records
    assert (record.external_id, record.data, record.ref) == ("ext-1", {"name": "From External"}, None)
    assert not page.has_more


@pytest.mark.parametrize(
    ("rows", "says"),
    [
        ({"events": []}, "GET / answered dict, expected a JSON array"),
        ([["x"]], "item 0: list, expected an event object"),
        ([{"type": "create-individual", "data": {}}], "item 0: neither an entityGuid nor an id"),
        ([{"entityGuid": "g", "type": "create-individual", "data": {}, "timestamp": "soon"}], "timestamp"),
        (
            [{"entityGuid": "g", "type": "x", "data": "text", "timestamp": "2025-01-01T10:00:00Z"}],
            "data is str",
        ),
    ],
)
def test_an_unreadable_answer_is_one_line_naming_the_item(rows: Any, says: str) -> None:
    with pytest.raises(ConnectorError) as info:
        _plain_connector(rows).pull(None, 10)
    assert says in info.value.message and "\n" not in info.value.message


def test_the_plain_fake_is_served_by_name_and_keeps_its_events(tmp_path: Path) -> None:
    from connector_core.plugins import load_plugins

    factory = load_plugins().fake_server("mock-plain")
    event = {
        "guid": str(uuid.uuid4()),
        "entityGuid": str(uuid.uuid4()),
        "type": "create-individual",
        "data": {"name": "Ana"},
        "timestamp": "2025-01-01T10:00:00.000Z",
        "userId": "admin",
        "syncLevel": 0,
    }
    with serve(factory(tmp_path / "events.json")) as served:
        httpx.post(served.url + "/", json={"data": [event]}).raise_for_status()
    with serve(factory(tmp_path / "events.json")) as served:
        assert [e["guid"] for e in httpx.get(served.url + "/", params={"since": ""}).json()] == [
            event["guid"]
        ]
        assert httpx.get(served.url + "/records/by-ref", params={"refs": ""}).status_code == 404


def test_an_operator_runs_it_from_the_command_line_without_a_traceback(
    tmp_path: Path, plain: ServedApp, control: httpx.Client
) -> None:
    from typer.testing import CliRunner

    from connector_core.cli import app

    config = write_config(tmp_path / "dcsync.yaml", plain.url, batch_size=40, page_size=100)
    log = tmp_path / "sample.jsonl"
    events = list(mobile_log(households=20, members=3, updates=10))
    log.write_text("".join(e.to_json_line() + "\n" for e in events))
    runner = CliRunner()

    def invoke(*args: str) -> str:
        result = runner.invoke(app, [*args, "-c", str(config)], env={"COLUMNS": "200"})
        assert result.exit_code == 0 and not isinstance(result.exception, Exception), result.output
        assert "Traceback" not in result.output
        return result.output

    invoke("log", "import", str(log))
    assert "no by-ref lookup" in invoke("check", "reg")
    invoke("run", "reg")
    invoke("run", "reg")
    _assert_once_each(control, list({e.entity_guid for e in events}))
    project = Project.open(config)
    try:
        assert project.state.dead_letters("reg") == []
        runs = project.state.runs("reg")
        assert [r.outcome for r in runs] == ["ok", "ok"]
        assert sum(1 for _ in project.eventlog.iter_events()) == len(events), "the pulls appended nothing"
    finally:
        project.close()


def test_a_change_sent_again_is_the_same_event_which_the_server_keeps_once(
    connector: MockConnector, control: httpx.Client
) -> None:
    """What makes a re-send safe when a lookup cannot answer: the event guid depends on the change only
    (not on when it was sent), and a server with DataCollect's semantics keeps an event guid once."""
    record = PushRecord(
        ref=str(uuid.uuid4()), operation=Operation.CREATE, entity_name="individual", payload={"a": 1}
    )
    assert connector.push([record])[0].ok
    assert connector.push([record])[0].ok
    assert control.get("/_control/stats").json()["resent"] == 1
    assert _entities(control)[record.ref]["creates"] == 1


def test_a_pages_events_of_one_entity_become_one_record_as_datacollect_folds_them() -> None:
    def ev(kind: str, data: dict[str, Any], ms: int) -> dict[str, Any]:
        ts = f"2025-01-01T10:00:00.{ms:03d}Z"
        return {"guid": f"e{ms}", "entityGuid": "g", "type": kind, "data": data, "timestamp": ts}

    rows = [
        ev("create-individual", {"entityName": "individual", "a": 1, "b": 1}, 1),
        ev("update-individual", {"b": 2}, 2),
        ev("add-member", {"members": [{"guid": "m"}]}, 3),
    ]
    (record,) = _plain_connector(rows).pull(None, 10).records
    assert (record.external_id, record.ref, record.entity_name) == ("g", "g", "individual")
    assert (record.data, record.deleted, record.version) == ({"a": 1, "b": 2}, False, "e2")
    rows = [*rows, ev("delete-entity", {"reason": "x"}, 4), ev("create-individual", {"c": 3}, 5)]
    (record,) = _plain_connector(rows).pull(None, 10).records
    assert (record.data, record.deleted) == ({"c": 3}, False), "a delete is a hard delete"
    (record,) = _plain_connector(rows[:4]).pull(None, 10).records
    assert record.deleted


def test_only_an_empty_object_for_no_refs_counts_as_a_lookup() -> None:
    """A server answering every path with the same object (a catch-all page) offers no lookup."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/records/by-ref":
            return httpx.Response(200, json={"status": "error", "message": "no such route"})
        if request.method == "POST":
            return httpx.Response(400, text="<html>\n<body>\n<h1>Bad Request</h1>\n</body>\n</html>\n")
        return httpx.Response(200, json=[])

    client = httpx.Client(base_url="http://remote", transport=httpx.MockTransport(handler))
    connector = MockConnector("reg", MockConfig(url="http://remote"), client=client)
    assert "no by-ref lookup" in connector.check().message
    record = PushRecord(ref="g", operation=Operation.CREATE, entity_name="individual", payload={"a": 1})
    with pytest.raises(ConnectorError) as info:
        connector.push([record])
    assert info.value.message == "HTTP 400: <html> <body> <h1>Bad Request</h1> </body> </html>"


@pytest.mark.parametrize("in_flight", [1, 4])
def test_a_thousand_entities_arrive_once_through_thirty_percent_failures(
    tmp_path: Path, in_flight: int
) -> None:
    from test_faults import FAULTS

    from connector_core.retry import RetryPolicy

    with serve(create_plain_app()) as served, httpx.Client(base_url=served.url, timeout=10) as control:
        extra = f"    in_flight: {in_flight}\n"
        config = write_config(tmp_path / "dcsync.yaml", served.url, extra=extra, batch_size=50, page_size=400)
        config.write_text(config.read_text().replace("timeout: 10", "timeout: 0.4"))
        project = Project.open(config)
        try:
            project.eventlog.append(mobile_log(households=250, members=3, updates=0))
            guids = [e.guid for e in project.eventlog.iter_entities()]
            faults = {"random": {"rate": 0.3, "seed": 11, "faults": FAULTS}}
            control.put("/_control/faults", json=faults).raise_for_status()
            policy = RetryPolicy(max_attempts=15, initial_delay=0.01, max_delay=0.05, max_elapsed=120)
            report = run_connector(project, "reg", retry=policy)
            assert report.ok, report.error
            assert control.get("/_control/faults").json()["injected"] > 10
            assert project.state.dead_letters("reg") == []
            _assert_once_each(control, guids)
            assert project.state.get_checkpoint("reg", Direction.PUSH) == project.eventlog.head()
            assert project.state.intents("reg") == set()
            again = run_connector(project, "reg", retry=policy)
            assert again.ok, again.error
            assert again.pull is not None and again.pull.counts.appended == 0
        finally:
            project.close()

"""The ``datacollect`` event log against a fake DataCollect that loses events the way the real one does.

Each scenario first shows the trap (the fake's API, used naively, loses or garbles something) where that is
cheap to show, then that the mirror gets every event into dcsync exactly once.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from contracts.scenarios import event, ts

from connector_core.eventlog.datacollect_http import (
    DataCollectAuthError,
    DataCollectBlocked,
    DataCollectClient,
    DataCollectError,
    DataCollectEventLog,
    DataCollectPushError,
    plan_pushes,
)
from connector_core.events import FormSubmission
from connector_core.testing.fake_datacollect import FakeDataCollect, create_app
from connector_core.testing.server import ServedApp, serve

EMAIL, PASSWORD = "sync@example.org", "correct horse"
OpenMirror = Callable[..., DataCollectEventLog]


@pytest.fixture
def fake() -> FakeDataCollect:
    return FakeDataCollect(email=EMAIL, password=PASSWORD, tenants=("demo", "other"))


@pytest.fixture
def server(fake: FakeDataCollect) -> Iterator[ServedApp]:
    with serve(create_app(fake)) as served:
        yield served


@pytest.fixture
def open_mirror(server: ServedApp, tmp_path: Path) -> Iterator[OpenMirror]:
    opened: list[DataCollectEventLog] = []

    def open_(config_id: str = "demo", url: str | None = None, **kw: Any) -> DataCollectEventLog:
        client = DataCollectClient(url or server.url, config_id, email=EMAIL, password=PASSWORD, timeout=5)
        kw.setdefault("refresh_interval", None)
        mirror = DataCollectEventLog(client, kw.pop("mirror", tmp_path / f"{config_id}-mirror.db"), **kw)
        opened.append(mirror)
        return mirror

    yield open_
    for mirror in opened:
        mirror.close()


def person(n: int, at: str, **extra: Any) -> FormSubmission:
    """A phone's registration; distinct data, so DataCollect does not flag two people as duplicates."""
    data = {"entityName": "individual", "name": f"Person {n}", "national_id": f"ID-{n:05d}", **extra}
    return event("create-individual", f"person-{n}", data, guid=f"ev-person-{n}-{at}", at=at)


def phone_sync(fake: FakeDataCollect, events: list[FormSubmission], tenant: str = "demo") -> None:
    assert fake.store(tenant, [e.to_json() for e in events]) == []


def _tie_key(guid: str) -> str:
    """How the fake orders events sharing a timestamp (a hash of the guid; the real order is undefined)."""
    return hashlib.sha256(guid.encode()).hexdigest()


def guids(mirror: DataCollectEventLog) -> list[str]:
    return [e.guid for e in mirror.local.iter_events()]


def naive_pull(server: ServedApp, since: str = "") -> list[str]:
    """The reference client's walk (§3.4): follow nextCursor until it is null."""
    client = DataCollectClient(server.url, "demo", email=EMAIL, password=PASSWORD)
    seen: list[str] = []
    while True:
        page = client.pull(since)
        seen += [e.guid for e in page.events]
        if page.next_cursor is None:
            client.close()
            return seen
        since = page.next_cursor


# -- reading ---------------------------------------------------------------------------------------------


def test_twelve_events_sharing_one_timestamp_each_reach_dcsync_once(
    fake: FakeDataCollect, server: ServedApp, open_mirror: OpenMirror
) -> None:
    same = [person(i, ts(5)) for i in range(12)]
    phone_sync(fake, [person(100, ts(1)), *same])
    assert len(naive_pull(server)) == 10, "the trap: 3 of the 12 tied events are never returned"

    mirror = open_mirror()
    report = mirror.refresh()
    assert sorted(guids(mirror)) == sorted(e.guid for e in [person(100, ts(1)), *same])
    assert report.new == 13
    assert mirror.refresh().new == 0  # the look-back re-read adds nothing


def test_a_boundary_tie_across_two_pages_is_not_skipped(
    fake: FakeDataCollect, server: ServedApp, open_mirror: OpenMirror
) -> None:
    phone_sync(fake, [person(i, ts(1)) for i in range(7)] + [person(i, ts(2)) for i in range(7, 12)])
    assert len(naive_pull(server)) == 10, "the trap: page 1 ends inside the tie at ts(2)"
    mirror = open_mirror()
    mirror.refresh()
    assert mirror.count() == 12


def test_an_event_arriving_late_with_an_older_timestamp_reaches_dcsync_once(
    fake: FakeDataCollect, server: ServedApp, open_mirror: OpenMirror
) -> None:
    phone_sync(fake, [person(i, ts(10 + i)) for i in range(5)])
    mirror = open_mirror(lookback_seconds=3600)
    mirror.refresh()
    high_water = mirror.stats()["datacollect"]["high_water"]
    assert high_water == ts(14)

    late = person(50, ts(3))  # a phone that was offline syncs an older edit
    phone_sync(fake, [late])
    assert naive_pull(server, since=high_water) == [], "the trap: the cursor has passed it"

    report = mirror.refresh()
    assert report.new == 1 and late.guid in guids(mirror)
    assert mirror.count() == 6 and len(set(guids(mirror))) == 6
    assert mirror.stats()["datacollect"]["high_water"] == high_water  # an older event does not move it back


def test_a_repeated_page_reaches_dcsync_once(fake: FakeDataCollect, open_mirror: OpenMirror) -> None:
    phone_sync(fake, [person(i, ts(i)) for i in range(25)])
    fake.faults.repeat_pulls = 1
    mirror = open_mirror()
    mirror.refresh()  # page 1 is answered again in place of page 2
    assert sorted(guids(mirror)) == sorted(person(i, ts(i)).guid for i in range(25))
    assert fake.faults.repeat_pulls == 0


def test_a_crowded_millisecond_stays_pending_through_an_audit_outage_and_is_recovered_later(
    fake: FakeDataCollect, open_mirror: OpenMirror
) -> None:
    crowded = [person(i, ts(5)) for i in range(12)]
    phone_sync(fake, crowded)
    mirror = open_mirror()
    real_audit = mirror.client.audit_logs
    calls = 0

    def audit_logs(since: str) -> Any:
        nonlocal calls
        calls += 1
        if calls == 2:  # the first read says which events were applied; the recovery's read fails
            fake.faults.html_errors = [
                {"path": "/api/sync/pull/audit-logs", "status": 500, "message": "Error: db"}
            ]
        return real_audit(since)

    mirror.client.audit_logs = audit_logs  # type: ignore[method-assign]
    report = mirror.refresh()
    assert report.pending == [ts(5)] and mirror.count() == 10
    assert mirror.stats()["datacollect"]["pending_milliseconds"] == 1

    again = open_mirror(mirror=Path(mirror.local.path))  # a restarted dcsync remembers what is pending
    report = again.refresh()
    assert report.pending == [] and again.count() == 12
    assert sorted(guids(again)) == sorted(e.guid for e in crowded)


def test_a_delete_in_a_crowded_millisecond_is_recovered_though_it_leaves_only_cascade_rows(
    fake: FakeDataCollect, open_mirror: OpenMirror
) -> None:
    # A delete-entity event leaves no audit row of its own, only cascade-delete-entity rows (one per entity
    # deleted, members first): the recovery must still find it, or the entity lives on in dcsync.
    family = {"name": "Doe", "members": [{"guid": "kid-1", "name": "Kid"}]}
    phone_sync(fake, [event("create-group", "hh-1", family, guid="ev-hh", at=ts(1))])
    crowded = [person(i, ts(5)) for i in range(11)]
    tie = sorted(_tie_key(e.guid) for e in crowded)[-1]  # the delete sorts last among its ties: on no page
    delete_guid = next(g for n in range(1000) if _tie_key(g := f"ev-del-{n}") > tie)
    crowded.append(event("delete-entity", "hh-1", {"reason": "moved"}, guid=delete_guid, at=ts(5)))
    phone_sync(fake, crowded)
    mirror = open_mirror()
    report = mirror.refresh()
    assert report.pending == []
    assert sorted(guids(mirror)) == sorted(["ev-hh", *(e.guid for e in crowded)])
    assert mirror.get_entity("hh-1") is None and mirror.get_entity("kid-1") is None


def test_an_event_whose_data_is_no_object_stops_the_refresh_with_one_line_naming_it(
    fake: FakeDataCollect, open_mirror: OpenMirror
) -> None:
    # DataCollect validates data by JavaScript truthiness (§1.1): an array is stored and applied. dcsync
    # cannot read such an event; it says which one and why, and commits nothing past it.
    phone_sync(fake, [person(1, ts(1))])
    odd = {**person(2, ts(2)).to_json(), "guid": "ev-odd", "data": ["not", "an", "object"]}
    assert fake.store("demo", [odd]) == []
    mirror = open_mirror()
    with pytest.raises(DataCollectError) as failed:
        mirror.refresh()
    message = str(failed.value)
    assert "\n" not in message and "ev-odd" in message and "'data'" in message
    assert mirror.count() == 0


def test_a_full_page_inside_one_millisecond_neither_loops_nor_loses_events(
    fake: FakeDataCollect, open_mirror: OpenMirror
) -> None:
    # Microsecond timestamps come back truncated to the millisecond (§2.1 c): a naive walk loops forever.
    base = "2025-01-01T10:00:00.007"
    stamps = [f"{base}{i:03d}Z" for i in range(100, 115)]
    raw = [
        {**person(i, ts(0)).to_json(), "guid": f"ev-us-{i}", "timestamp": at} for i, at in enumerate(stamps)
    ]
    assert fake.store("demo", raw) == []
    mirror = open_mirror()
    mirror.refresh()
    assert sorted(guids(mirror)) == sorted(f"ev-us-{i}" for i in range(15))
    assert len(fake.requests_to("/api/sync/pull")) < 10


def test_a_tenant_blocked_by_duplicates_is_an_error_not_an_empty_log_and_moves_nothing(
    fake: FakeDataCollect, open_mirror: OpenMirror
) -> None:
    phone_sync(fake, [person(i, ts(i)) for i in range(3)])
    mirror = open_mirror()
    mirror.refresh()
    before = (mirror.count(), mirror.stats()["datacollect"]["high_water"])

    twin = {"entityName": "individual", "name": "Same Person", "national_id": "ID-1"}
    phone_sync(fake, [event("create-individual", "twin-a", twin, at=ts(20))])
    phone_sync(fake, [event("create-individual", "twin-b", twin, at=ts(21))])  # flagged (§1.6)
    assert fake.tenants["demo"].duplicates

    with pytest.raises(DataCollectBlocked, match="blocked by unresolved duplicates in DataCollect"):
        mirror.refresh()
    assert (mirror.count(), mirror.stats()["datacollect"]["high_water"]) == before

    auto = open_mirror(mirror=mirror.local.path + ".2", refresh_interval=0)
    with pytest.raises(DataCollectBlocked, match="tenant 'demo'"):
        auto.read(None, 10)  # a reader is told, never handed an empty page

    fake.set_duplicates("demo", [])
    mirror.refresh()
    assert mirror.count() == 5


def test_reading_past_the_mirror_head_refreshes_it(fake: FakeDataCollect, open_mirror: OpenMirror) -> None:
    mirror = open_mirror(refresh_interval=0)
    assert mirror.read(None, 10).events == []
    phone_sync(fake, [person(i, ts(i)) for i in range(3)])
    page = mirror.read(None, 10)
    assert len(page.events) == 3 and page.at_end
    assert [e.guid for e in mirror.iter_events(page.cursor)] == []
    phone_sync(fake, [person(i, ts(i)) for i in range(3, 5)])
    touches = mirror.read_touches(page.cursor, 10)  # the push's read path refreshes the same way
    assert len(touches.touches) == 2 and touches.at_end and touches.cursor == mirror.head()


def test_since_is_url_encoded_with_microseconds_and_never_a_plus(
    fake: FakeDataCollect, open_mirror: OpenMirror
) -> None:
    phone_sync(fake, [person(i, ts(i)) for i in range(12)])
    mirror = open_mirror(lookback_seconds=60)
    mirror.refresh()
    mirror.refresh()
    sinces = [r["params"]["since"] for r in fake.requests_to("/api/sync/pull")]
    assert sinces[0] == ""
    assert sinces[1] == "2025-01-01T10:08:59.999999Z"  # the last of page 1, ts(9), minus 1µs
    assert sinces[-1] == "2025-01-01T10:09:59.999999Z"  # high water ts(11) - 60s - 1µs
    assert all("+" not in r["query"] for r in fake.requests)


# -- writing ---------------------------------------------------------------------------------------------


def registry_update(entity: str, n: int, data: dict[str, Any], at: str) -> FormSubmission:
    """An update dcsync pulled from a registry (userId dcsync:<connector>, syncLevel 2)."""
    return event(
        "update-individual",
        entity,
        data,
        guid=f"pull-{entity}-{n}",
        at=at,
        user_id="dcsync:reg",
        sync_level=2,
    )


def test_three_updates_of_one_entity_pushed_in_one_run_all_take_effect(
    fake: FakeDataCollect, server: ServedApp, open_mirror: OpenMirror
) -> None:
    phone_sync(fake, [person(1, ts(0)), person(2, ts(0))])
    updates = [
        registry_update("person-1", 1, {"phone": "+100"}, ts(60)),
        registry_update("person-1", 2, {"gender": "female"}, ts(61)),
        registry_update("person-1", 3, {"phone": "+200", "village": "North"}, ts(62)),
    ]

    # the trap: pushed as they are, only the first update is applied (§1.4)
    raw = DataCollectClient(server.url, "demo", email=EMAIL, password=PASSWORD)
    raw.push([u.model_copy(update={"entity_guid": "person-2", "guid": u.guid + "-raw"}) for u in updates])
    raw.close()
    assert "gender" not in fake.entity("demo", "person-2").data  # type: ignore[union-attr]
    assert [r.changes["resolution"] for r in fake.conflict_rows("demo")] == ["kept-local", "kept-local"]

    mirror = open_mirror()
    mirror.refresh()
    pushes_before = len(fake.requests_to("/api/sync/push"))
    result = mirror.append(updates)

    remote = fake.entity("demo", "person-1")
    assert remote is not None
    assert remote.data | {} == {
        **person(1, ts(0)).data,
        "phone": "+200",
        "gender": "female",
        "village": "North",
    }
    assert len(fake.requests_to("/api/sync/push")) == pushes_before + 1
    assert result.issues == []
    assert result.new_guids == [u.guid for u in updates]
    local = mirror.get_entity("person-1")
    assert local is not None and local.data == remote.data
    assert mirror.append(updates).duplicates == 3  # the merged-away guids are known too


def test_events_the_server_did_not_store_raise_naming_their_guids(
    fake: FakeDataCollect, open_mirror: OpenMirror
) -> None:
    mirror = open_mirror()
    taken = person(7, ts(1))
    phone_sync(fake, [taken], tenant="other")  # event guids are unique across tenants (§2.2)
    fine = person(8, ts(2))
    with pytest.raises(
        DataCollectPushError, match=f"did not store 1 of 2 pushed events: {taken.guid}"
    ) as caught:
        mirror.append([taken, fine])
    assert caught.value.missing == [taken.guid]
    assert guids(mirror) == [fine.guid]  # the mirror holds only what DataCollect stored

    fake.faults.swallow_pushes = 1
    lost = person(9, ts(3))
    with pytest.raises(DataCollectPushError, match=lost.guid):
        mirror.append([lost])
    assert mirror.append([lost]).new_guids == [lost.guid]  # the next attempt goes through


def test_an_event_datacollect_kept_local_is_re_sent_stamped_after_its_state_and_then_applied(
    fake: FakeDataCollect, open_mirror: OpenMirror, tmp_path: Path
) -> None:
    from datetime import timedelta

    from connector_core.events import utc_now

    fake.clock = lambda: utc_now() + timedelta(hours=1)  # DataCollect's clock is ahead of dcsync's
    phone_sync(fake, [person(1, ts(0))])
    raw = DataCollectClient(fake_url := open_mirror().client.url, "demo", email=EMAIL, password=PASSWORD)
    raw.push([registry_update("person-1", 0, {"phone": "+1"}, ts(1))])  # now initial != modified
    raw.close()
    mirror = open_mirror(mirror=tmp_path / (fake_url.replace(":", "_").replace("/", "_") + ".db"))
    mirror.refresh()
    result = mirror.append([registry_update("person-1", 1, {"phone": "+2"}, ts(2))])
    assert result.issues == [] and result.new_guids == ["pull-person-1-1"]
    remote = fake.entity("demo", "person-1")
    assert remote is not None and remote.data["phone"] == "+2"  # applied as meant, through the re-sent copy
    recorded = list(mirror.iter_issues())  # the original stays in the log, unfolded, with why
    assert [i.event_guid for i in recorded] == ["pull-person-1-1"]
    assert "kept-local" in recorded[0].reason and "re-sent as" in recorded[0].reason
    local = mirror.get_entity("person-1")
    assert local is not None and local.data["phone"] == "+2"
    assert mirror.append([registry_update("person-1", 1, {"phone": "+2"}, ts(2))]).duplicates == 1


def test_members_and_group_events_are_pushed_in_order(fake: FakeDataCollect, open_mirror: OpenMirror) -> None:
    mirror = open_mirror()
    batch = [
        event("create-group", "g-1", {"name": "Smiths", "members": [{"guid": "p-a", "name": "Ann Smith"}]}),
        event(
            "update-group",
            "g-1",
            {"headOfHousehold": "Ann", "members": [{"guid": "p-b", "name": "Bob Smith"}]},
        ),
        event("add-member", "g-1", {"members": [{"guid": "p-c", "name": "Cid Smith"}]}),
    ]
    mirror.append(batch)
    group = fake.entity("demo", "g-1")
    assert group is not None and group.member_ids == ["p-a", "p-b", "p-c"]
    assert group.data["headOfHousehold"] == "Ann"


# -- errors and secrets ----------------------------------------------------------------------------------


def test_html_error_pages_become_one_clear_line(
    fake: FakeDataCollect, server: ServedApp, open_mirror: OpenMirror
) -> None:
    fake.faults.html_errors = [{"path": "/api/sync/pull", "status": 500, "message": "Error: Config broke"}]
    with pytest.raises(DataCollectError, match=r"HTTP 500 with an HTML page: Error: Config broke$"):
        open_mirror().refresh()
    wrong = open_mirror(url=server.url + "/datacollect", mirror=Path(open_mirror().local.path + ".wrong"))
    with pytest.raises(
        DataCollectError, match=r"HTTP 404 with an HTML page: Cannot POST /datacollect/api/users/login$"
    ):
        wrong.refresh()


def test_an_unknown_tenant_and_bad_credentials_are_named(server: ServedApp, tmp_path: Path) -> None:
    client = DataCollectClient(server.url, "nope", email=EMAIL, password=PASSWORD)
    with pytest.raises(DataCollectError, match="App instance not found"):
        client.pull("")
    client.close()
    bad = DataCollectClient(server.url, "demo", email=EMAIL, password="wrong")
    with pytest.raises(DataCollectAuthError, match="Invalid email or password"):
        bad.pull("")
    bad.close()
    with pytest.raises(DataCollectAuthError, match="token, or an email and a password"):
        DataCollectClient(server.url, "demo")


def test_the_token_is_never_logged_nor_shown(
    fake: FakeDataCollect, server: ServedApp, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token = fake.issue_token()
    client = DataCollectClient(server.url, "demo", token=token)
    mirror = DataCollectEventLog(client, tmp_path / "m.db", refresh_interval=None)
    phone_sync(fake, [person(i, ts(i)) for i in range(12)])
    mirror.refresh()
    mirror.append([registry_update("person-1", 1, {"phone": "+1"}, ts(90))])
    assert token not in repr(client) and token not in repr(mirror)
    mirror.close()

    revoked = DataCollectClient(server.url, "demo", token=token + "x")
    with pytest.raises(DataCollectAuthError) as caught:
        revoked.pull("")
    revoked.close()
    assert token not in str(caught.value)
    assert token not in caplog.text and PASSWORD not in caplog.text


def test_a_mirror_belongs_to_one_tenant(open_mirror: OpenMirror, tmp_path: Path) -> None:
    open_mirror("demo", mirror=tmp_path / "shared.db").close()
    with pytest.raises(DataCollectError, match="holds DataCollect tenant 'demo', not 'other'"):
        open_mirror("other", mirror=tmp_path / "shared.db")


# -- planning pushes (pure) ------------------------------------------------------------------------------


def test_updates_of_one_person_merge_into_one_event_with_the_last_envelope() -> None:
    a = event("create-individual", "p", {"name": "A", "x": 1}, at=ts(1))
    b = event("update-individual", "p", {"x": 2, "y": 3}, at=ts(3))
    c = event("update-individual", "q", {"name": "Q"}, at=ts(2))
    (push,) = plan_pushes([a, c, b], batch=10)
    merged = push[0]
    assert merged.event.type == "create-individual" and merged.event.guid == b.guid
    assert merged.event.data == {"name": "A", "x": 2, "y": 3} and merged.event.timestamp == ts(3)
    assert merged.absorbed == [a.guid] and push[1].event == c


def test_events_that_cannot_merge_start_a_new_push_and_keep_their_order() -> None:
    g = event("create-group", "g", {"name": "G", "members": [{"guid": "m1"}]})
    add = event("add-member", "g", {"members": [{"guid": "m2"}]})
    m2 = event("update-individual", "m2", {"age": 3})
    other = event("create-individual", "z", {"name": "Z"})
    mine = event("update-individual", "p", {"a": 1}, user_id="admin")
    theirs = event("update-individual", "p", {"b": 2}, user_id="dcsync:reg")
    pushes = plan_pushes([g, add, m2, other, mine, theirs], batch=10)
    assert [[p.event.guid for p in push] for push in pushes] == [
        [g.guid],
        [add.guid],  # add-member touches g: a push of its own
        [m2.guid, other.guid, mine.guid],  # m2 was referenced by add-member
        [theirs.guid],  # different authors are never merged
    ]
    assert [
        len(p) for p in plan_pushes([event("create-individual", f"p{i}", {"n": i}) for i in range(25)], 10)
    ] == [
        10,
        10,
        5,
    ]


# -- a whole run on a DataCollect tenant -----------------------------------------------------------------


def test_a_connector_run_reads_the_tenant_and_writes_remote_edits_back_to_it(
    fake: FakeDataCollect, server: ServedApp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import httpx

    from connector_core.project import Project
    from connector_core.retry import RetryPolicy
    from connector_core.sync.runner import run_connector
    from connectors.mock.server import create_app as create_mock

    phone_sync(fake, [person(i, ts(i)) for i in range(5)])
    monkeypatch.setenv("DC_PASSWORD", PASSWORD)
    fast = RetryPolicy(max_attempts=3, initial_delay=0.01, max_delay=0.05, max_elapsed=10)
    with serve(create_mock()) as mock:
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
            "    settings:\n"
            f"      url: {mock.url}\n"
        )
        project = Project.open(config)
        try:
            first = run_connector(project, "reg", retry=fast)
            assert first.ok, first.error
            records = httpx.get(f"{mock.url}/_control/records").json()
            assert len(records) == 5

            target = next(r for r in records if r["entityGuid"] == "person-3")
            httpx.patch(f"{mock.url}/_control/records/{target['id']}", json={"data": {"phone": "+255 700"}})
            second = run_connector(project, "reg", retry=fast)
            assert second.ok, second.error
            assert second.pull is not None and second.pull.counts.appended == 1
        finally:
            project.close()
    remote = fake.entity("demo", "person-3")
    assert remote is not None and remote.data["phone"] == "+255 700"  # the edit reached DataCollect

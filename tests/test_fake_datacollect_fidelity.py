"""The fake DataCollect is held to the real backend's facts (reference datacollect.md), one fact a test.

A fake more lenient than the real server lets a client pass tests that fail in production; each test here
names the section of the reference whose fact it pins down.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from connector_core.testing.fake_datacollect import FakeDataCollect
from connector_core.testing.fault_transport import FaultTransport

AT = "2025-01-01T10:00:00.000Z"
LATER = "2025-01-01T10:01:00.000Z"


def raw(
    guid: str, entity: str, data: dict[str, Any], *, type_: str = "create-individual", at: str = AT
) -> dict[str, Any]:
    return {
        "guid": guid,
        "entityGuid": entity,
        "type": type_,
        "data": data,
        "timestamp": at,
        "userId": "admin",
        "syncLevel": 0,
    }


@pytest.fixture
def fake() -> FakeDataCollect:
    return FakeDataCollect(tenants=("demo",))


def _tie_key(guid: str) -> str:
    return hashlib.sha256(guid.encode()).hexdigest()


# -- §2.1 d: the order of equal timestamps is undefined -------------------------------------------------


def _tied_guids() -> list[str]:
    """Guids whose storage order is the reverse of their tie order, so storage order cannot pass for it."""
    guids = [f"ev-{n:02d}" for n in range(6)]
    return sorted(guids, key=_tie_key, reverse=True)


def test_pull_breaks_timestamp_ties_by_a_hash_of_the_guid_not_by_storage_order(fake: FakeDataCollect) -> None:
    guids = _tied_guids()
    fake.store("demo", [raw(g, f"p-{g}", {"name": g}) for g in guids])
    pulled = [e["guid"] for e in fake.pull(fake.tenants["demo"], "")["events"]]
    assert pulled == sorted(guids, key=_tie_key)
    assert pulled != guids


def test_an_entitys_events_break_timestamp_ties_by_a_hash_of_the_guid(fake: FakeDataCollect) -> None:
    guids = _tied_guids()
    fake.store("demo", [raw(g, "p-1", {"name": g}, type_="update-individual") for g in guids])
    listed = [e["guid"] for e in fake.entity_events(fake.tenants["demo"], "p-1")]
    assert listed == sorted(guids, key=_tie_key)
    assert listed != guids


# -- §7.5 / §1.5: audit rows carry the event data, minus the member guids the applier deleted -----------


def _rows(fake: FakeDataCollect, event_guid: str, action: str) -> list[dict[str, Any]]:
    return [
        r
        for r in fake.audit_since(fake.tenants["demo"], "")
        if r["eventGuid"] == event_guid and r["action"] == action
    ]


def test_create_group_audit_rows_lose_the_member_guids_the_stored_event_keeps(fake: FakeDataCollect) -> None:
    members = [{"guid": "m-1", "name": "John", "type": "individual"}, {"guid": "m-2", "name": "Mary"}]
    fake.store("demo", [raw("g-ev", "g-1", {"name": "Smith", "members": members}, type_="create-group")])
    (row,) = _rows(fake, "g-ev", "create-group")
    assert row["entityGuid"] == "g-1"
    assert row["changes"] == {
        "name": "Smith",
        "members": [{"name": "John", "type": "individual"}, {"name": "Mary"}],
    }
    (stored,) = fake.entity_events(fake.tenants["demo"], "g-1")
    assert [m["guid"] for m in stored["data"]["members"]] == ["m-1", "m-2"]


def test_add_member_audit_rows_lose_the_first_members_guid(fake: FakeDataCollect) -> None:
    fake.store("demo", [raw("g-ev", "g-1", {"name": "Smith"}, type_="create-group")])
    add = {"members": [{"guid": "m-3", "name": "Bob"}, {"guid": "m-4", "name": "Ignored"}]}
    fake.store("demo", [raw("a-ev", "g-1", add, type_="add-member", at=LATER)])
    (row,) = _rows(fake, "a-ev", "add-member")
    assert row["changes"] == {"members": [{"name": "Bob"}, {"guid": "m-4", "name": "Ignored"}]}


# -- §1.6: duplicate flagging is an interpolated SQL query, and behaves like one ------------------------


def _blocked(fake: FakeDataCollect) -> bool:
    return "error" in fake.pull(fake.tenants["demo"], "")


def test_a_value_with_a_quote_breaks_the_duplicate_query_so_nothing_is_flagged(fake: FakeDataCollect) -> None:
    twin = {"first_name": "Sean", "last_name": "O'Brien"}
    problems = fake.store("demo", [raw("ev-1", "p-1", twin), raw("ev-2", "p-2", dict(twin))])
    assert not _blocked(fake)
    assert fake.tenants["demo"].duplicates == set()
    assert not [r for r in fake.tenants["demo"].audit if r.action == "flag-potential-duplicate"]
    # the entity was saved and its audit row written before the query failed; the failure is reported
    assert (
        fake.entity("demo", "p-2") is not None and fake.entity("demo", "p-2").data["last_name"] == "O'Brien"
    )
    assert _rows(fake, "ev-2", "create-individual")
    assert len(problems) == 2 and all('syntax error at or near "Brien"' in p for p in problems)


def test_a_doubled_quote_is_an_sql_escape_and_matches_the_single_quote(fake: FakeDataCollect) -> None:
    fake.store("demo", [raw("ev-1", "p-1", {"last_name": "O'Brien", "n": "x"})])
    fake.store("demo", [raw("ev-2", "p-2", {"last_name": "o''brien", "n": "X"})])
    assert fake.tenants["demo"].duplicates == {("p-2", "p-1")}


def test_a_string_value_matches_the_text_of_a_number(fake: FakeDataCollect) -> None:
    fake.store(
        "demo", [raw("ev-1", "p-1", {"size": 4, "n": "a"}), raw("ev-2", "p-2", {"size": "4", "n": "A"})]
    )
    assert fake.tenants["demo"].duplicates == {("p-2", "p-1")}


def test_a_number_against_text_that_is_no_number_fails_the_query(fake: FakeDataCollect) -> None:
    fake.store("demo", [raw("ev-1", "p-1", {"n": "a", "size": "four"})])
    problems = fake.store("demo", [raw("ev-2", "p-2", {"n": "a", "size": 4})])
    assert fake.tenants["demo"].duplicates == set()
    assert problems == [
        "ev-2: stored and applied, then the duplicate check failed: "
        'invalid input syntax for type numeric: "four"'
    ]


def test_each_leaf_may_match_the_initial_or_the_modified_state(fake: FakeDataCollect) -> None:
    fake.store("demo", [raw("ev-1", "p-1", {"a": "1", "b": "1"})])
    update = raw("ev-2", "p-1", {"a": "2", "b": "2"}, type_="update-individual", at=LATER)
    fake.store("demo", [update])  # p-1: initial {a: 1, b: 1}, modified {a: 2, b: 2}
    fake.store("demo", [raw("ev-3", "p-2", {"a": "1", "b": "2"})])  # a as initial, b as modified
    assert fake.tenants["demo"].duplicates == {("p-2", "p-1")}


def test_flag_rows_are_written_by_system_with_the_real_keys(fake: FakeDataCollect) -> None:
    fake.store("demo", [raw("ev-1", "p-1", {"n": "a"}), raw("ev-2", "p-2", {"n": "A"})])
    (row,) = _rows(fake, "ev-2", "flag-potential-duplicate")
    assert row["userId"] == "system"
    assert row["entityGuid"] == "p-2"
    assert row["changes"] == {"entityId": "p-2", "duplicateId": "p-1"}


def test_resolving_a_duplicate_without_deleting_does_not_flag_it_again(fake: FakeDataCollect) -> None:
    fake.store("demo", [raw("ev-1", "p-1", {"n": "a"}), raw("ev-2", "p-2", {"n": "a"})])
    assert fake.tenants["demo"].duplicates == {("p-2", "p-1")}
    resolve = {"duplicates": [{"entityGuid": "p-2", "duplicateGuid": "p-1"}], "shouldDelete": False}
    fake.store("demo", [raw("ev-3", "p-2", resolve, type_="resolve-duplicate", at=LATER)])
    assert not _blocked(fake)


# -- §1.5 / applier source: which audit rows an event leaves ----------------------------------------------


def _actions(fake: FakeDataCollect, event_guid: str) -> list[tuple[str | None, str | None]]:
    """The rows an event left, in the order the applier wrote them (the feed itself is unordered)."""
    return [(r.action, r.entity_guid) for r in fake.tenants["demo"].audit if r.event_guid == event_guid]


def test_each_embedded_member_leaves_a_create_row_under_the_group_event(fake: FakeDataCollect) -> None:
    members = [{"guid": "m-1", "name": "John"}, {"guid": "m-2", "name": "Kids", "type": "group"}]
    fake.store("demo", [raw("g-ev", "g-1", {"name": "Smith", "members": members}, type_="create-group")])
    assert _actions(fake, "g-ev") == [
        ("create-individual", "m-1"),
        ("create-group", "m-2"),
        ("create-group", "g-1"),
    ]


def test_a_delete_leaves_only_cascade_rows_the_target_last(fake: FakeDataCollect) -> None:
    members = [{"guid": "m-1", "name": "John"}]
    fake.store("demo", [raw("g-ev", "g-1", {"name": "Smith", "members": members}, type_="create-group")])
    fake.store("demo", [raw("d-ev", "g-1", {"reason": "gone"}, type_="delete-entity", at=LATER)])
    assert _actions(fake, "d-ev") == [("cascade-delete-entity", "m-1"), ("cascade-delete-entity", "g-1")]
    fake.store("demo", [raw("d-ev2", "nobody", {"reason": "gone"}, type_="delete-entity", at=LATER)])
    assert _actions(fake, "d-ev2") == []  # a no-op leaves no row at all


def test_a_resolve_duplicate_that_deletes_nothing_leaves_no_row(fake: FakeDataCollect) -> None:
    fake.store("demo", [raw("ev-1", "p-1", {"n": "a"}), raw("ev-2", "p-2", {"n": "a"})])
    resolve = {"duplicates": [{"entityGuid": "p-2", "duplicateGuid": "p-1"}]}
    fake.store("demo", [raw("r-ev", "p-2", resolve, type_="resolve-duplicate", at=LATER)])
    assert _actions(fake, "r-ev") == []


# -- §2.1: the audit feed is unordered ----------------------------------------------------------------


def test_the_audit_feed_comes_in_no_particular_order(fake: FakeDataCollect) -> None:
    fake.store(
        "demo", [raw(f"ev-{n}", f"p-{n}", {"n": f"v{n}"}, at=f"2025-01-01T10:0{n}:00.000Z") for n in range(8)]
    )
    rows = [r["eventGuid"] for r in fake.audit_since(fake.tenants["demo"], "")]
    assert sorted(rows) == [f"ev-{n}" for n in range(8)]
    assert rows != [f"ev-{n}" for n in range(8)], "not in the order they were written"
    assert rows == [r["eventGuid"] for r in fake.audit_since(fake.tenants["demo"], "")], "but repeatably"


# -- fault transport: a gateway's pages say what their status means ----------------------------------


@pytest.mark.parametrize(("kind", "reason"), [("502", "Bad Gateway"), ("503", "Service Unavailable")])
def test_injected_gateway_pages_name_their_own_status(kind: str, reason: str) -> None:
    transport = FaultTransport(httpx.MockTransport(lambda r: httpx.Response(200)), rate=1.0, kinds=[kind])
    with httpx.Client(transport=transport, base_url="http://dc.invalid") as client:
        page = client.get("/api/sync/pull")
    assert page.status_code == int(kind)
    assert f"<title>{kind} {reason}</title>" in page.text


# -- §1.1: validation is JavaScript's truthiness, nothing more -----------------------------------------


@pytest.mark.parametrize("data", [["x"], "ab"], ids=["array", "string"])
def test_data_that_is_no_object_but_has_keys_is_stored_and_applied_as_javascript_spreads_it(
    fake: FakeDataCollect, data: Any
) -> None:
    assert fake.store("demo", [raw("ev-odd", "p-odd", {"n": "1"}) | {"data": data}]) == []
    (stored,) = fake.entity_events(fake.tenants["demo"], "p-odd")
    assert stored["data"] == data
    entity = fake.entity("demo", "p-odd")
    assert entity is not None and entity.data["0"] == data[0]


@pytest.mark.parametrize("data", [{}, [], "", 0, True, None], ids=["{}", "[]", "''", "0", "true", "null"])
def test_data_without_keys_is_refused(fake: FakeDataCollect, data: Any) -> None:
    assert fake.store("demo", [raw("ev-none", "p-none", {"n": "1"}) | {"data": data}]) == [
        "INVALID_FORM: ev-none"
    ]


# -- §1.4: the conflict rule compares Date.parse values, milliseconds -------------------------------------


def test_the_conflict_rule_sees_milliseconds_only() -> None:
    now = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
    fake = FakeDataCollect(tenants=("demo",), clock=lambda: now)
    fake.store(
        "demo", [raw("ev-1", "p-1", {"n": "a"}), raw("ev-2", "p-1", {"n": "b"}, type_="update-individual")]
    )
    remote = raw("ev-3", "p-1", {"n": "c"}, type_="update-individual", at="2025-01-01T12:00:00.000500Z")
    fake.store("demo", [remote | {"syncLevel": 1}])
    (row,) = fake.conflict_rows("demo")
    assert row.changes["resolution"] == "kept-local"  # Date.parse drops the microseconds: equal, local wins
    entity = fake.entity("demo", "p-1")
    assert entity is not None and entity.data["n"] == "b"

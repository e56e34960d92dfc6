"""The fake DataCollect is held to the real backend's facts (reference datacollect.md), one fact a test.

A fake more lenient than the real server lets a client pass tests that fail in production; each test here
names the section of the reference whose fact it pins down.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from connector_core.testing.fake_datacollect import FakeDataCollect

AT = "2025-01-01T10:00:00.000Z"


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
    fake.store("demo", [raw("a-ev", "g-1", add, type_="add-member", at="2025-01-01T10:01:00.000Z")])
    (row,) = _rows(fake, "a-ev", "add-member")
    assert row["changes"] == {"members": [{"name": "Bob"}, {"guid": "m-4", "name": "Ignored"}]}

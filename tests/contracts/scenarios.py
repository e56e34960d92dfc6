"""Event logs a DataCollect deployment really produces, shared by the contract suites and unit tests.

Two shapes matter (datacollect.md §1.5, §1.7): the mobile app's, where every form is a
``create-individual``/``update-individual`` and the hierarchy lives in ``data.parentGuid``; and the API's
group style, with ``members``, ``add-member``, ``remove-member`` and cascading ``delete-entity``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from connector_core.entities import Entity, EventIssue, fold, overlay
from connector_core.events import FormSubmission, format_timestamp

T0 = datetime(2025, 1, 1, 10, 0, tzinfo=UTC)
_counter = itertools.count(1)


def ts(minutes: float = 0) -> str:
    return format_timestamp(T0 + timedelta(minutes=minutes))


def event(
    type_: str,
    entity_guid: str,
    data: Mapping[str, Any],
    *,
    guid: str | None = None,
    at: str | None = None,
    user_id: str = "admin",
    sync_level: int = 0,
) -> FormSubmission:
    """A validated event, exactly as it would arrive from a phone or the API."""
    return FormSubmission.from_json(
        {
            "guid": guid or f"ev-{next(_counter):06d}",
            "entityGuid": entity_guid,
            "type": type_,
            "data": dict(data),
            "timestamp": at or ts(),
            "userId": user_id,
            "syncLevel": sync_level,
        }
    )


def mobile_log() -> list[FormSubmission]:
    """An enumerator registers an area, two households and their members, then edits some forms.

    Timestamps are the phones' clocks: one late edit carries a timestamp older than events ingested
    before it, and two households were saved in the same millisecond.
    """
    e = []
    e.append(event("create-individual", "apg-1", {"entityName": "apg", "name": "North", "id": "7"}))
    for h, hh in enumerate(("hh-doe", "hh-roe")):
        e.append(
            event(
                "create-individual",
                hh,
                {
                    "entityName": "household",
                    "parentGuid": "apg-1",
                    "household_name": f"{hh} HH",
                    "name": f"{hh} HH",
                    "household_size": 3,
                    "location_gps": '{"coords":{"latitude":20.1,"longitude":10.2}}',
                    "bank_details": [{"bank_name": "3", "account_number": "111"}],
                },
                at=ts(1),
            )
        )
        for i in range(3):
            e.append(
                event(
                    "create-individual",
                    f"{hh}-p{i}",
                    {
                        "entityName": "individual",
                        "parentGuid": hh,
                        "first_name": f"P{i}",
                        "last_name": hh,
                        "name": f"P{i} {hh}",
                        "training_records": [{"training_type": "agri"}],
                    },
                    at=ts(2 + h * 10 + i),
                )
            )
    # edits resend the full form; the second one was made offline and synced late
    e.append(
        event(
            "update-individual",
            "hh-doe-p0",
            {
                "entityName": "individual",
                "parentGuid": "hh-doe",
                "first_name": "Jane",
                "phone_number": "+100",
                "name": "Jane hh-doe",
            },
            at=ts(30),
        )
    )
    e.append(
        event(
            "update-individual",
            "hh-roe",
            {"entityName": "household", "name": "Roe HH", "household_size": 4, "externalId": 101},
            at=ts(0.5),
        )
    )
    return e


def group_log() -> list[FormSubmission]:
    """Group-style API usage ending in a cascade delete, plus two events that cannot be applied."""
    return [
        event(
            "create-group",
            "g-smith",
            {
                "name": "Smith Family",
                "headOfHousehold": "John Smith",
                "members": [
                    {"guid": "p-john", "name": "John Smith", "type": "individual"},
                    {"guid": "p-mary", "name": "Mary Smith", "type": "individual"},
                ],
            },
            user_id="u1",
        ),
        event(
            "create-group",
            "g-village",
            {"name": "Village", "members": [{"guid": "g-sub", "name": "Sub", "type": "group"}]},
            user_id="u1",
        ),
        event("add-member", "g-sub", {"members": [{"guid": "p-carl", "name": "Carl"}]}),
        event(
            "add-member",
            "g-smith",
            {
                "members": [
                    {"guid": "p-bob", "name": "Bob Smith", "dateOfBirth": "2010-05-15"},
                    {"guid": "p-ignored", "name": "Only members[0] is used"},
                ]
            },
        ),
        event("remove-member", "g-smith", {"memberId": "p-mary"}),
        event("add-member", "g-nowhere", {"members": [{"guid": "p-lost", "name": "Lost"}]}),
        event("external-pull", "x-1", {"id": "ext-1", "name": "From External"}),
        event("remove-member", "g-village", {"memberId": "g-sub"}),
        event("delete-entity", "g-smith", {"reason": "moved away"}),
    ]


def fold_state(
    events: Iterable[FormSubmission], base: Mapping[str, Entity] | None = None
) -> tuple[dict[str, Entity], list[EventIssue]]:
    """The entities a fresh fold of ``events`` gives (deleted ones dropped), and its issues."""
    start = dict(base or {})
    result = fold(events, start.get)
    return materialise(start, result.changed), result.issues


def materialise(base: Mapping[str, Entity], changes: Mapping[str, Entity | None]) -> dict[str, Entity]:
    state = dict(base)
    for guid, entity in changes.items():
        if entity is None:
            state.pop(guid, None)
        else:
            state[guid] = entity
    return state


def fold_in_pages(events: list[FormSubmission], cuts: Iterable[int]) -> dict[str, Entity]:
    """Fold page by page as a sync engine does, each page seeing the previous ones via overlay."""
    state: dict[str, Entity | None] = {}
    bounds = [0, *sorted(set(cuts)), len(events)]
    for start, end in itertools.pairwise(bounds):
        result = fold(events[start:end], overlay(lambda _g: None, state))
        state.update(result.changed)
    return {g: e for g, e in state.items() if e is not None}


def as_docs(entities: Mapping[str, Entity] | Iterable[Entity]) -> dict[str, dict[str, Any]]:
    items = entities.values() if isinstance(entities, Mapping) else entities
    return {e.guid: e.to_json() for e in items}

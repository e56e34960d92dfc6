"""The webhook rules without a server: what a body holds, how records are packed, what an answer means."""

from __future__ import annotations

import json

import httpx
import pytest

from connector_core.connector import Operation, PushRecord
from connectors.openfn.webhook import (
    BodyShape,
    Unit,
    Verdict,
    batch_id_for,
    change_id,
    classify,
    encode,
    render_event,
    render_record,
)

PATH = "/i/8b2e4c6d-1f3a-4b5c-9d7e-0a2c4e6f8a1b"


def record(ref: str, operation: Operation = Operation.CREATE, **payload: object) -> PushRecord:
    return PushRecord(ref=ref, operation=operation, entity_name="individual", payload=dict(payload))


def units(count: int, pad: int = 0) -> list[Unit]:
    out = []
    for i in range(count):
        rec = record(f"r{i}", first_name="x" * pad, n=i)
        event = render_event("fn", rec, "2025-01-01T00:00:00.000Z")
        out.append(Unit(i, rec, event["guid"], encode(event)))
    return out


def test_a_record_becomes_a_datacollect_event_in_mobile_style() -> None:
    rec = PushRecord(
        ref="e1",
        operation=Operation.UPDATE,
        entity_name="individual",
        payload={"first_name": "Ana"},
        parent_ref="h1",
    )
    event = render_event("fn", rec, "2025-01-01T10:00:00.123Z")
    assert event == {
        "guid": change_id("fn", rec),
        "entityGuid": "e1",
        "type": "update-individual",
        "data": {"first_name": "Ana", "entityName": "individual", "parentGuid": "h1"},
        "timestamp": "2025-01-01T10:00:00.123Z",
        "userId": "dcsync:fn",
        "syncLevel": 2,
    }
    assert render_event("fn", rec, "2030-01-01T00:00:00.000Z")["guid"] == event["guid"], (
        "stable across retries"
    )
    changed = PushRecord(
        ref="e1", operation=Operation.UPDATE, entity_name="individual", payload={"first_name": "Al"}
    )
    assert change_id("fn", changed) != event["guid"]
    assert change_id("other", rec) != event["guid"]


def test_deletes_and_unlinks_use_datacollect_event_types() -> None:
    delete = render_event("fn", record("e1", Operation.DELETE), "2025-01-01T00:00:00.000Z")
    assert delete["type"] == "delete-entity" and delete["data"]["reason"]
    unlink = PushRecord(
        ref="member", operation=Operation.UNLINK, entity_name=None, payload={}, parent_ref="group"
    )
    event = render_event("fn", unlink, "2025-01-01T00:00:00.000Z")
    assert (event["type"], event["entityGuid"], event["data"]) == (
        "remove-member",
        "group",
        {"memberId": "member"},
    )
    other_group = PushRecord(
        ref="member", operation=Operation.UNLINK, entity_name=None, payload={}, parent_ref="g2"
    )
    assert change_id("fn", other_group) != event["guid"]


def test_mapped_mode_wraps_the_mapped_record() -> None:
    rec = PushRecord(
        ref="e1",
        operation=Operation.CREATE,
        entity_name="individual",
        payload={"given_name": "Ana"},
        parent_ref="h",
    )
    assert render_record("fn", rec) == {
        "id": change_id("fn", rec),
        "ref": "e1",
        "operation": "create",
        "entityName": "individual",
        "record": {"given_name": "Ana"},
        "parentRef": "h",
    }


def test_packing_respects_count_and_bytes_and_keeps_order() -> None:
    shape = BodyShape("fn", "entities")
    parts = units(250, pad=100)
    by_count = shape.pack(parts, 100, 10_000_000)
    assert [len(b.units) for b in by_count] == [100, 100, 50]
    by_bytes = shape.pack(parts, 1000, 20_000)
    assert all(b.size <= 20_000 for b in by_bytes) and len(by_bytes) > 1
    assert [u.index for b in by_bytes for u in b.units] == list(range(250))
    for body in by_bytes:
        parsed = json.loads(body.content)
        assert parsed["batch_id"] == body.batch_id and parsed["source"] == "dcsync:fn"
        assert [e["guid"] for e in parsed["entities"]] == [u.id for u in body.units]
        assert body.size == shape.size_of(body.units)


def test_the_same_records_always_make_the_same_bodies_and_batch_ids() -> None:
    shape = BodyShape("fn", "entities")
    first = shape.pack(units(120, pad=50), 50, 10_000_000)
    again = shape.pack(units(120, pad=50), 50, 10_000_000)
    assert [b.batch_id for b in first] == [b.batch_id for b in again]
    assert len({b.batch_id for b in first}) == 3
    assert first[0].batch_id == batch_id_for([u.id for u in first[0].units])
    tail = shape.pack(units(120, pad=50)[50:], 50, 10_000_000)
    assert tail[0].batch_id == first[1].batch_id, "a retry from the failed body on rebuilds that body"


def test_a_unit_bigger_than_the_limit_goes_alone() -> None:
    shape = BodyShape("fn", "entities")
    bodies = shape.pack(units(3, pad=5000), 100, 2000)
    assert [len(b.units) for b in bodies] == [1, 1, 1]


def answer(status: int, body: object = None, headers: dict[str, str] | None = None, text: str | None = None):  # type: ignore[no-untyped-def]
    if text is not None:
        response = httpx.Response(status, text=text, headers=headers)
    elif body is None:
        response = httpx.Response(status, headers=headers)
    else:
        response = httpx.Response(status, json=body, headers=headers)
    return classify(response, PATH)


def test_success_is_2xx_without_an_error_key() -> None:
    ok = answer(200, {"work_order_id": "w1"}, {"x-meta-run-id": "r1"})
    assert (ok.verdict, ok.work_order_id, ok.run_id) == (Verdict.DELIVERED, "w1", "r1")
    assert answer(200, {"work_order_id": "w1", "run_id": "r2"}).run_id == "r2"
    sync = answer(201, {"data": {}, "meta": {"work_order_id": "w", "run_id": "r", "state": "success"}})
    assert (sync.verdict, sync.work_order_id, sync.state) == (Verdict.DELIVERED, "w", "success")
    assert answer(204).verdict is Verdict.DELIVERED
    quota = answer(200, {"work_order_id": "w2", "error": "too_many_runs"})
    assert quota.verdict is Verdict.RETRY and "too_many_runs" in quota.message and "w2" in quota.message
    assert answer(200, text="<html>proxy</html>").verdict is Verdict.RETRY


@pytest.mark.parametrize(
    ("status", "headers", "body", "verdict", "retry_after"),
    [
        (429, {}, {"error": "too_many_requests"}, Verdict.RETRY, None),
        (429, {"retry-after": "12"}, {"error": "too_many_requests"}, Verdict.RETRY, 12.0),
        (402, {}, {"error": "runs_hard_limit"}, Verdict.RETRY, None),
        (
            503,
            {"retry-after": "60"},
            {"error": "service_unavailable", "retry_after": 60},
            Verdict.RETRY,
            60.0,
        ),
        (503, {}, {"error": "service_unavailable", "retry_after": 9}, Verdict.RETRY, 9.0),
        (500, {}, {"error": "no_run_created"}, Verdict.RETRY, None),
        (502, {}, None, Verdict.RETRY, None),
        (504, {}, {"error": "timeout", "work_order_id": "w"}, Verdict.DELIVERED, None),
        (504, {}, None, Verdict.RETRY, None),
        (413, {}, None, Verdict.SPLIT, None),
        (401, {}, {"error": "Unauthorized"}, Verdict.REFUSED, None),
        (403, {}, {"error": "trigger_disabled"}, Verdict.REFUSED, None),
        (404, {}, {"error": "Webhook not found"}, Verdict.REFUSED, None),
        (415, {}, {"error": "Unsupported Media Type"}, Verdict.REFUSED, None),
        (400, {}, None, Verdict.REJECTED, None),
        (422, {}, {"error": "invalid_request"}, Verdict.REJECTED, None),
    ],
)
def test_answers_are_classified_as_the_reference_table_says(
    status: int, headers: dict, body: object, verdict: Verdict, retry_after: float | None
) -> None:
    result = answer(status, body, headers)
    assert result.verdict is verdict
    assert result.retry_after == retry_after


def test_refusals_name_the_trigger_and_say_what_happened() -> None:
    wrong = answer(404, {"error": "Webhook not found"})
    assert PATH in wrong.message and "credentials" in wrong.message and "refused" in wrong.message
    missing = answer(401, {"error": "Unauthorized"})
    assert PATH in missing.message and "credentials" in missing.message

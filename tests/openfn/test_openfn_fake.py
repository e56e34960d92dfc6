"""The fake Lightning answers the way reference openfn.md §1-§3 says Lightning does, over real HTTP.

These tests pin the wire behaviour a client sees, so a connector proven against the fake is proven against
the protocol, not against the fake's leniency.
"""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path

import httpx
import pytest

from connector_core.testing.server import serve
from connectors.openfn.fake import FakeLightning, Fault, basic_auth, create_app
from connectors.openfn.fake.seed import (
    API_KEY,
    BASIC_PASSWORD,
    BASIC_TRIGGER_ID,
    BASIC_USER,
    CUSTOM_PATH,
    PAT,
    PROJECT_ID,
    RESULTS_COLLECTION,
    TRIGGER_ID,
)
from connectors.openfn.fake.store import RunOutcome

KEY = {"x-api-key": API_KEY}
BEARER = {"authorization": f"Bearer {PAT}"}
HOOK = f"/i/{TRIGGER_ID}"
ITEMS = f"/collections/{RESULTS_COLLECTION}"


def wait_for(predicate, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


# -- webhook authentication and routing ------------------------------------------------------------


def test_a_get_on_a_trigger_is_an_authenticated_probe_that_creates_nothing(
    http: httpx.Client, lightning
) -> None:
    found = http.get(HOOK, headers=KEY)
    assert found.status_code == 200
    assert found.json() == {
        "message": "OpenFn webhook trigger found. Make a POST request to execute this workflow."
    }
    assert http.get(HOOK).status_code == 401
    assert http.get(HOOK, headers={"x-api-key": "nope"}).status_code == 404
    assert lightning.work_orders == {}


@pytest.mark.parametrize(
    ("path", "headers", "status", "error"),
    [
        (HOOK, {}, 401, "Unauthorized"),
        (HOOK, {"x-api-key": "wrong"}, 404, "Webhook not found"),
        (HOOK, {"authorization": basic_auth("x", "y")}, 404, "Webhook not found"),
        ("/i/00000000-0000-4000-8000-000000000000", KEY, 404, "Webhook not found"),
        (f"/i/{BASIC_TRIGGER_ID}", {"x-api-key": API_KEY}, 404, "Webhook not found"),
        (
            f"/i/{BASIC_TRIGGER_ID}",
            {"authorization": basic_auth(BASIC_USER, "wrong")},
            404,
            "Webhook not found",
        ),
    ],
)
def test_missing_credentials_are_401_and_wrong_ones_404(
    http: httpx.Client, path: str, headers: dict, status: int, error: str
) -> None:
    response = http.post(path, json={"a": 1}, headers=headers)
    assert (response.status_code, response.json()) == (status, {"error": error})


def test_both_url_forms_and_both_auth_methods_are_accepted(
    http: httpx.Client, lightning: FakeLightning
) -> None:
    assert http.post(HOOK, json={"a": 1}, headers=KEY).status_code == 200
    assert http.post(f"{HOOK}/Patient?x=1", json={"a": 2}, headers=KEY).status_code == 200
    assert http.post(f"/i/{PROJECT_ID}/{CUSTOM_PATH}", json={"a": 3}, headers=KEY).status_code == 200
    basic = {"authorization": basic_auth(BASIC_USER, BASIC_PASSWORD)}
    assert http.post(f"/i/{BASIC_TRIGGER_ID}", json={"a": 4}, headers=basic).status_code == 200
    paths = [o.dataclip.request["path"] for o in lightning.work_orders.values()]
    assert [TRIGGER_ID, "Patient"] in paths
    assert any(o.dataclip.request["query_params"] == {"x": "1"} for o in lightning.work_orders.values())


def test_options_skip_auth_and_a_disabled_trigger_is_403(
    http: httpx.Client, lightning: FakeLightning
) -> None:
    assert http.options(HOOK).status_code == 204
    lightning.triggers[TRIGGER_ID].enabled = False
    response = http.post(HOOK, json={"a": 1}, headers=KEY)
    assert response.status_code == 403 and response.json()["error"] == "trigger_disabled"


# -- webhook bodies --------------------------------------------------------------------------------


def test_only_json_and_form_bodies_are_taken(http: httpx.Client, lightning: FakeLightning) -> None:
    xml = http.post(HOOK, content=b"<a/>", headers={**KEY, "content-type": "text/xml"})
    assert (xml.status_code, xml.json()) == (415, {"error": "Unsupported Media Type"})
    bare = http.post(HOOK, content=b'{"a": 1}', headers=KEY)
    assert bare.status_code == 415, "no content type is not JSON"
    assert (
        http.post(HOOK, content=b"{oops", headers={**KEY, "content-type": "application/json"}).status_code
        == 400
    )
    form = http.post(HOOK, data={"a": "1"}, headers=KEY)
    assert form.status_code == 200
    array = http.post(HOOK, json=[1, 2], headers=KEY)
    order = lightning.work_orders[array.json()["work_order_id"]]
    assert order.dataclip.body == {"_json": [1, 2]}


def test_bodies_over_the_cap_are_413_after_gunzip(http: httpx.Client, lightning: FakeLightning) -> None:
    lightning.max_body_bytes = 1000
    big = json.dumps({"pad": "x" * 2000}).encode()
    assert (
        http.post(HOOK, content=big, headers={**KEY, "content-type": "application/json"}).status_code == 413
    )
    zipped = http.post(
        HOOK,
        content=gzip.compress(big),
        headers={**KEY, "content-type": "application/json", "content-encoding": "gzip"},
    )
    assert zipped.status_code == 413 and zipped.text == "Request Entity Too Large"
    small = json.dumps({"a": 1}).encode()
    ok = http.post(
        HOOK,
        content=gzip.compress(small),
        headers={**KEY, "content-type": "application/json", "content-encoding": "gzip"},
    )
    assert ok.status_code == 200
    assert lightning.work_orders[ok.json()["work_order_id"]].dataclip.body == {"a": 1}


def test_an_accepted_request_makes_a_work_order_and_a_run_that_finishes(
    http: httpx.Client, lightning: FakeLightning
) -> None:
    response = http.post(HOOK, json={"batch_id": "b-1", "entities": []}, headers={**KEY, "x-custom": "kept"})
    assert response.status_code == 200
    work_order = response.json()["work_order_id"]
    assert response.json() == {"work_order_id": work_order}
    assert response.headers["x-meta-work-order-id"] == work_order
    run_id = response.headers["x-meta-run-id"]
    wait_for(lambda: lightning.work_orders[work_order].state == "success")
    stored = lightning.work_orders[work_order].dataclip.request["headers"]
    assert stored["x-api-key"] == "[REDACTED]" and stored["x-custom"] == "kept"
    assert lightning.accepted_batches() == {"b-1": [work_order]}
    api = http.get(f"/api/work_orders/{work_order}", headers=BEARER).json()
    assert api["data"]["attributes"]["state"] == "success"
    assert (
        http.get(f"/api/runs/{run_id}", headers=BEARER).json()["data"]["attributes"]["priority"] == "normal"
    )


def test_the_rest_api_wants_a_member_token(http: httpx.Client, lightning: FakeLightning) -> None:
    work_order = http.post(HOOK, json={}, headers=KEY).json()["work_order_id"]
    lightning.add_pat("stranger", "s", {})
    assert http.get(f"/api/work_orders/{work_order}").status_code == 401
    assert (
        http.get(f"/api/work_orders/{work_order}", headers={"authorization": "Bearer stranger"}).status_code
        == 403
    )
    assert http.get("/api/work_orders/nope", headers=BEARER).status_code == 404
    listing = http.get(f"/api/projects/{PROJECT_ID}/work_orders?page_size=1", headers=BEARER).json()
    assert listing["meta"]["total_entries"] == 1 and listing["links"]["next"] is None


def test_a_spent_run_quota_answers_200_with_an_error_and_a_rejected_work_order(
    http: httpx.Client, lightning: FakeLightning
) -> None:
    lightning.soft_run_quota = 1
    assert "error" not in http.post(HOOK, json={"batch_id": "1"}, headers=KEY).json()
    refused = http.post(HOOK, json={"batch_id": "2"}, headers=KEY)
    assert refused.status_code == 200 and refused.json()["error"] == "too_many_runs"
    assert "x-meta-run-id" not in refused.headers
    assert lightning.work_orders[refused.json()["work_order_id"]].state == "rejected"
    assert list(lightning.accepted_batches()) == ["1"]


def test_rate_and_hard_limits(http: httpx.Client, lightning: FakeLightning) -> None:
    lightning.rate_limit = (1, 60.0)
    assert http.post(HOOK, json={}, headers=KEY).status_code == 200
    limited = http.post(HOOK, json={}, headers=KEY)
    assert limited.status_code == 429 and "retry-after" not in limited.headers
    lightning.rate_limit = None
    lightning.hard_run_quota = 0
    assert http.post(HOOK, json={}, headers=KEY).status_code == 429
    lightning.hard_limit_status = 402
    assert http.post(HOOK, json={}, headers=KEY).status_code == 402


def test_after_completion_triggers_answer_201_with_data_and_meta_or_504(
    http: httpx.Client, lightning: FakeLightning
) -> None:
    trigger = lightning.add_trigger(PROJECT_ID, api_key="k2", webhook_reply="after_completion")
    lightning.run_handler = lambda clip, fake: RunOutcome(final_state={"echo": clip.body})
    done = http.post(f"/i/{trigger.id}", json={"x": 1}, headers={"x-api-key": "k2"})
    assert done.status_code == 201
    assert done.json()["data"] == {"echo": {"x": 1}} and done.json()["meta"]["state"] == "success"
    lightning.run_handler = lambda clip, fake: RunOutcome(final_state={}, state="failed")
    failed = http.post(f"/i/{trigger.id}", json={"x": 2}, headers={"x-api-key": "k2"})
    assert failed.status_code == 201 and "security policy" in failed.json()["data"]
    trigger.run_seconds, trigger.response_timeout = 0.4, 0.1
    slow = http.post(f"/i/{trigger.id}", json={"x": 3}, headers={"x-api-key": "k2"})
    assert slow.status_code == 504 and slow.json()["error"] == "timeout"
    work_order = slow.json()["work_order_id"]
    wait_for(lambda: lightning.work_orders[work_order].state == "failed")


def test_timeout_after_commit_creates_the_work_order_then_stalls(
    http: httpx.Client, lightning: FakeLightning
) -> None:
    lightning.faults.add(Fault("timeout_after_commit", seconds=1.0))
    with pytest.raises(httpx.ReadTimeout):
        http.post(HOOK, json={"batch_id": "late"}, headers=KEY, timeout=0.2)
    assert list(lightning.accepted_batches()) == ["late"]


def test_canned_status_faults_carry_their_headers(http: httpx.Client, lightning: FakeLightning) -> None:
    lightning.faults.add(Fault("status", status=503, headers={"Retry-After": "7"}))
    response = http.post(HOOK, json={}, headers=KEY)
    assert response.status_code == 503 and response.headers["retry-after"] == "7"
    assert lightning.work_orders == {}


# -- collections -----------------------------------------------------------------------------------


def _fill(lightning: FakeLightning, count: int, prefix: str = "dc:result:") -> None:
    for i in range(count):
        lightning.put_json(RESULTS_COLLECTION, f"{prefix}{i:04d}", {"n": i})


def test_listing_needs_a_token_and_a_known_collection_and_whitelisted_params(
    http: httpx.Client, lightning: FakeLightning
) -> None:
    assert http.get(ITEMS).status_code == 401
    assert http.get(ITEMS, headers={"authorization": "Bearer nope"}).status_code == 401
    assert http.get("/collections/nope", headers=BEARER).json() == {"error": "Not Found"}
    assert http.get(ITEMS, params={"since": "x"}, headers=BEARER).status_code == 400
    assert http.get(ITEMS, params={"updated_after": "2025-01-01T00:00:00"}, headers=BEARER).status_code == 400
    assert http.get(ITEMS, params={"cursor": "%%%"}, headers=BEARER).status_code == 400
    lightning.add_pat("outsider", "o", {})
    assert http.get(ITEMS, headers={"authorization": "Bearer outsider"}).status_code == 401


def test_pages_follow_an_opaque_cursor_in_id_order_and_updates_keep_their_place(
    http: httpx.Client, lightning: FakeLightning
) -> None:
    _fill(lightning, 25)
    lightning.put_json(RESULTS_COLLECTION, "dc:result:0003", {"n": "updated"})
    keys, cursor, pages = [], None, 0
    while True:
        params = {"limit": 10, **({"cursor": cursor} if cursor else {})}
        body = http.get(ITEMS, params=params, headers=BEARER).json()
        keys += [i["key"] for i in body["items"]]
        pages += 1
        cursor = body["cursor"]
        if cursor is None:
            break
    assert pages == 3 and keys == [f"dc:result:{i:04d}" for i in range(25)]
    exact = http.get(ITEMS, params={"limit": 25}, headers=BEARER).json()
    assert exact["cursor"] is None, "a cursor only when more items match"


def test_updated_after_is_inclusive_and_updated_before_exclusive(
    http: httpx.Client, lightning: FakeLightning
) -> None:
    lightning.clock.freeze("2025-05-05T05:05:05.000005Z")
    _fill(lightning, 3)
    lightning.clock.advance(1)
    lightning.put_json(RESULTS_COLLECTION, "dc:result:0001", {"n": "later"})
    at = "2025-05-05T05:05:05.000005Z"
    after = http.get(ITEMS, params={"updated_after": at}, headers=BEARER).json()["items"]
    assert len(after) == 3
    before = http.get(ITEMS, params={"updated_before": "2025-05-05T05:05:06.000005Z"}, headers=BEARER).json()
    assert [i["key"] for i in before["items"]] == ["dc:result:0000", "dc:result:0002"]
    assert after[1]["updated"] == "2025-05-05T05:05:06.000005Z"


def test_an_underscore_in_a_key_pattern_matches_any_one_character(
    http: httpx.Client, lightning: FakeLightning
) -> None:
    for key in ("dc_result:1", "dcXresult:2", "dc:result:3", "dc_resultX4"):
        lightning.put_json(RESULTS_COLLECTION, key, {})
    found = http.get(ITEMS, params={"key": "dc_result:*"}, headers=BEARER).json()["items"]
    assert sorted(i["key"] for i in found) == ["dc:result:3", "dcXresult:2", "dc_result:1"]


def test_single_item_reads_and_writes(http: httpx.Client, lightning: FakeLightning) -> None:
    assert http.get(f"{ITEMS}/missing", headers=BEARER).status_code == 204
    assert http.put(f"{ITEMS}/k1", json={"value": '{"a":1}'}, headers=BEARER).json() == {
        "upserted": 1,
        "error": None,
    }
    assert http.get(f"{ITEMS}/k1", headers=BEARER).json()["value"] == '{"a":1}'
    assert http.put(f"{ITEMS}/k1", json={}, headers=BEARER).status_code == 422
    assert http.put(f"{ITEMS}/k1", json={"value": 3}, headers=BEARER).json() == {
        "upserted": 0,
        "error": "Format error",
    }
    duplicate = http.post(
        ITEMS, json={"items": [{"key": "a", "value": "1"}, {"key": "a", "value": "2"}]}, headers=BEARER
    )
    assert duplicate.status_code == 422 and duplicate.json()["error"] == "Duplicate key found"
    assert http.delete(f"{ITEMS}/k1", headers=BEARER).json() == {"key": "k1", "deleted": 1, "error": None}
    lightning.add_pat("viewer", "v", {PROJECT_ID: "viewer"})
    assert (
        http.put(f"{ITEMS}/k2", json={"value": "x"}, headers={"authorization": "Bearer viewer"}).status_code
        == 401
    )
    lightning.collection_byte_quota = 10
    quota = http.put(f"{ITEMS}/k3", json={"value": "x" * 50}, headers=BEARER)
    assert quota.status_code == 422 and quota.json()["upserted"] == 0


def test_lists_are_streamed_in_several_chunks_and_can_be_cut(served, lightning: FakeLightning) -> None:
    _fill(lightning, 150)
    with httpx.Client(base_url=served.url) as client, client.stream("GET", ITEMS, headers=BEARER) as response:
        chunks = [c for c in response.iter_raw() if c]
    assert len(chunks) >= 2 and json.loads(b"".join(chunks))["cursor"] is None
    lightning.faults.add(Fault("truncate_stream", route="GET /collections/*"))
    with httpx.Client(base_url=served.url) as client, pytest.raises(json.JSONDecodeError):
        client.get(ITEMS, headers=BEARER).json()


def test_a_data_file_keeps_triggers_and_collections_across_restarts(tmp_path: Path) -> None:
    data = tmp_path / "lightning.json"
    with serve(create_app(data)) as first:
        httpx.put(f"{first.url}{ITEMS}/kept", json={"value": '"v"'}, headers=BEARER)
    with serve(create_app(data)) as again:
        assert httpx.get(f"{again.url}{ITEMS}/kept", headers=BEARER).json()["value"] == '"v"'
        assert httpx.get(f"{again.url}{HOOK}", headers=KEY).status_code == 200

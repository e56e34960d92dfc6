"""The declarative REST connector: authentication, pagination, error rules and rate limits, from YAML only."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from connector_core.connector import (
    AuthenticationError,
    Operation,
    PermanentError,
    PushRecord,
    TransientError,
)
from connector_core.testing.harness import SyncHarness, sample_events
from connector_core.testing.server import ServedApp
from connectors.rest.client import TokenBucket
from connectors.rest.config import RestConfig
from connectors.rest.connector import RestConnector
from connectors.rest.fake import FakeRestOptions, connector_settings, create_app


def _record(ref: str, **payload: Any) -> PushRecord:
    return PushRecord(ref=ref, operation=Operation.CREATE, entity_name="individual", payload=payload)


@pytest.fixture
def fake_rest(dcsync_serve: Callable[[Any], ServedApp]) -> Callable[..., tuple[ServedApp, httpx.Client]]:
    """``start(**options)``: a fake registry on loopback and an httpx client for its control API."""

    def start(**options: Any) -> tuple[ServedApp, httpx.Client]:
        app = create_app(FakeRestOptions(**options))
        served = dcsync_serve(app)
        served.store = app.state.store  # type: ignore[attr-defined]
        return served, httpx.Client(base_url=served.url, timeout=10)

    return start


def _connector(url: str, **changes: Any) -> RestConnector:
    options = changes.pop("options", FakeRestOptions())
    settings = {**connector_settings(url, options), **changes}
    return RestConnector("registry", RestConfig.model_validate(settings))


# -- OAuth2 client credentials --------------------------------------------------------------------------


def test_an_oauth2_token_is_fetched_once_and_reused(fake_rest) -> None:
    served, control = fake_rest(auth="oauth2")
    connector = _connector(served.url)
    results = connector.push([_record(f"r{i}", n=i) for i in range(5)])
    assert all(r.ok for r in results)
    assert len(connector.lookup([f"r{i}" for i in range(5)])) == 5
    assert control.get("/_control/stats").json()["tokens_issued"] == 1


def test_a_revoked_token_is_renewed_once_and_the_request_goes_through(fake_rest) -> None:
    served, control = fake_rest(auth="oauth2")
    connector = _connector(served.url)
    assert connector.check().ok
    control.post("/_control/revoke")
    assert connector.push([_record("after-revoke", n=1)])[0].ok
    stats = control.get("/_control/stats").json()
    assert (stats["tokens_issued"], stats["unauthorized"]) == (2, 1)


def test_a_token_is_renewed_before_it_expires(fake_rest) -> None:
    import time

    served, control = fake_rest(auth="oauth2", token_ttl=0.4)
    connector = _connector(served.url)
    assert connector.check().ok
    time.sleep(0.3)  # past the renewal point (half the lifetime for a short-lived token)
    assert connector.check().ok
    stats = control.get("/_control/stats").json()
    assert (stats["tokens_issued"], stats["unauthorized"]) == (2, 0)


def test_wrong_client_credentials_stop_the_run_without_showing_the_secret(fake_rest, tmp_path) -> None:
    served, _ = fake_rest(auth="oauth2")
    settings = connector_settings(served.url)
    settings["auth"] = {**settings["auth"], "client_secret": "not-the-secret-1234"}
    connector = RestConnector("registry", RestConfig.model_validate(settings))
    check = connector.check()
    assert not check.ok and "invalid_client" in check.message
    assert "not-the-secret-1234" not in check.message
    with pytest.raises(AuthenticationError) as info:
        connector.push([_record("r1", n=1)])
    assert "not-the-secret-1234" not in str(info.value)
    assert "not-the-secret-1234" not in repr(connector.config)

    harness = SyncHarness(connector, tmp_path)
    harness.append(sample_events(households=1, members=1, updates=0))
    report = harness.push()
    assert report.error is not None and "refused client 'dcsync'" in report.error
    assert harness.dead_letters() == [], "refused credentials are not the records' fault"
    harness.close()


def test_a_bearer_token_the_api_refuses_is_an_authentication_error(fake_rest) -> None:
    served, _ = fake_rest(auth="bearer")
    settings = connector_settings(served.url, FakeRestOptions(auth="bearer"))
    settings["auth"] = {"type": "bearer", "token": "stale-token-5678"}
    connector = RestConnector("registry", RestConfig.model_validate(settings))
    with pytest.raises(AuthenticationError) as info:
        connector.push([_record("r1")])
    assert "credentials" in str(info.value) and "stale-token-5678" not in str(info.value)


def test_an_api_key_can_go_in_a_query_parameter(fake_rest) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"status": "ok"})

    settings = connector_settings("http://api.test", FakeRestOptions(auth="api_key"))
    settings["auth"] = {"type": "api_key", "query_param": "key", "value": "k-123456"}
    connector = RestConnector(
        "r", RestConfig.model_validate(settings), http=httpx.Client(transport=httpx.MockTransport(handler))
    )
    assert connector.check().ok
    assert seen[0].url.params["key"] == "k-123456" and "x-api-key" not in seen[0].headers


# -- error rules ----------------------------------------------------------------------------------------


def _mocked(handler: Callable[[httpx.Request], httpx.Response], **changes: Any) -> RestConnector:
    settings = {**connector_settings("http://api.test", FakeRestOptions(auth="none")), **changes}
    return RestConnector(
        "r", RestConfig.model_validate(settings), http=httpx.Client(transport=httpx.MockTransport(handler))
    )


def test_error_rules_come_before_the_defaults_and_carry_the_remote_message() -> None:
    answers = {
        "dup": httpx.Response(409, json={"error": {"message": "national id already registered"}}),
        "locked": httpx.Response(423, json={"error": {"message": "record locked by a clerk"}}),
        "soft": httpx.Response(200, json={"status": "error", "error": {"message": "quota exceeded"}}),
        "bad": httpx.Response(422, json={"error": {"message": "given_name is required"}}),
    }

    def handler(request: httpx.Request) -> httpx.Response:
        return answers[json.loads(request.content)["external_ref"]]

    connector = _mocked(
        handler,
        errors=[
            {"status": 423, "action": "transient"},
            {"status": 200, "body_contains": '"status":"error"', "action": "transient"},
        ],
    )
    results = {r.ref: r for r in connector.push([_record("dup"), _record("bad")])}
    assert not results["dup"].transient and "national id already registered" in (results["dup"].error or "")
    assert not results["bad"].transient and "given_name is required" in (results["bad"].error or "")
    (locked,) = connector.push([_record("locked")])
    assert locked.transient and "record locked by a clerk" in (locked.error or "")
    (soft,) = connector.push([_record("soft")])
    assert soft.transient and "quota exceeded" in (soft.error or "")


def test_after_a_transient_failure_the_rest_of_the_batch_waits_for_the_retry() -> None:
    sent: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        ref = json.loads(request.content)["external_ref"]
        sent.append(ref)
        if ref == "b":
            return httpx.Response(503, headers={"Retry-After": "2"}, json={"error": {"message": "busy"}})
        return httpx.Response(201, json={"data": {"id": f"id-{ref}"}})

    results = _mocked(handler).push([_record("a"), _record("b"), _record("c")])
    assert sent == ["a", "b"]
    assert [(r.ref, r.ok, r.transient) for r in results] == [
        ("a", True, False),
        ("b", False, True),
        ("c", False, True),
    ]
    assert results[1].retry_after == 2.0, "the API's Retry-After reaches the engine"


def test_retry_after_is_passed_to_the_engine() -> None:
    connector = _mocked(lambda request: httpx.Response(429, headers={"Retry-After": "7"}))
    with pytest.raises(TransientError) as info:
        connector.lookup(["x"])
    assert info.value.retry_after == 7.0


def test_a_create_answered_without_an_id_is_refused_with_the_setting_to_fix() -> None:
    connector = _mocked(lambda request: httpx.Response(201, json={"ok": True}))
    (result,) = connector.push([_record("a")])
    assert not result.ok and "endpoints.create.id_path" in (result.error or "")


# -- request and record shapes --------------------------------------------------------------------------


def test_envelopes_nested_refs_and_a_data_path_shape_both_directions() -> None:
    bodies: list[Any] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            bodies.append(json.loads(request.content))
            return httpx.Response(201, json={"result": {"uuid": "u-1"}})
        row = {"uuid": "u-1", "meta": {"ref": "g-1", "form": "individual"}, "attributes": {"name": "Ana"}}
        return httpx.Response(200, json={"items": [row]})

    settings = connector_settings("http://api.test", FakeRestOptions(auth="none"))
    settings["endpoints"]["create"] = {
        "method": "POST",
        "path": "/people",
        "envelope": "person",
        "id_path": "$.result.uuid",
    }
    settings["endpoints"]["lookup"] = {"path": "/people", "params": {"ref": "{ref}"}, "records": "$.items[*]"}
    settings["record"] = {
        "id": "$.uuid",
        "ref": "$.meta.ref",
        "entity_name": "$.meta.form",
        "updated_at": "$.meta.changed",
        "data": "$.attributes",
    }
    connector = RestConnector(
        "r", RestConfig.model_validate(settings), http=httpx.Client(transport=httpx.MockTransport(handler))
    )
    (result,) = connector.push([_record("g-1", name="Ana")])
    assert result.external_id == "u-1"
    assert bodies == [
        {"person": {"attributes": {"name": "Ana"}, "meta": {"ref": "g-1", "form": "individual"}}}
    ]
    assert connector.lookup(["g-1", "g-2"]) == {"g-1": "u-1"}


def test_lookup_by_path_treats_404_as_not_found() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/known"):
            return httpx.Response(200, json={"id": "7", "external_ref": "known"})
        return httpx.Response(404, json={"error": {"message": "no such ref"}})

    settings = connector_settings("http://api.test", FakeRestOptions(auth="none"))
    settings["endpoints"]["lookup"] = {"path": "/by-ref/{ref}"}
    connector = RestConnector(
        "r", RestConfig.model_validate(settings), http=httpx.Client(transport=httpx.MockTransport(handler))
    )
    assert connector.lookup(["known", "unknown"]) == {"known": "7"}


def test_a_next_link_to_another_host_is_not_followed() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, json={"data": []}, headers={"Link": '<https://elsewhere.test/steal>; rel="next"'}
        )

    settings = connector_settings("http://api.test", FakeRestOptions(auth="none", pagination="link"))
    connector = RestConnector(
        "r", RestConfig.model_validate(settings), http=httpx.Client(transport=httpx.MockTransport(handler))
    )
    page = connector.pull(None, 10)
    assert page.has_more
    with pytest.raises(PermanentError, match="leaves"):
        connector.pull(page.next_cursor, 10)


def _with(settings: dict[str, Any], section: str, key: str, value: Any) -> dict[str, Any]:
    return {**settings, section: {**settings[section], key: value}}


_GOOD = connector_settings("http://api.test")


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        (_with(_GOOD, "record", "ref", "$.refs[*]"), "plain path"),
        (_with(_GOOD, "endpoints", "update", {"path": "/r"}), "must name the record"),
        (_with(_GOOD, "endpoints", "lookup", {"path": "/r"}), "{ref} or {refs}"),
        ({**_GOOD, "errors": [{"action": "transient"}]}, "status, body_contains"),
        ({**_GOOD, "auth": {"type": "api_key", "value": "k", "header": None}}, "header or query_param"),
        (_with(_GOOD, "record", "updated_at", None), "needs record.updated_at"),
    ],
)
def test_settings_mistakes_are_named(settings: dict[str, Any], named: str) -> None:
    with pytest.raises(ValidationError) as info:
        RestConfig.model_validate(settings)
    assert named in str(info.value)


# -- rate limit -----------------------------------------------------------------------------------------


def test_the_token_bucket_allows_a_burst_then_paces() -> None:
    now = [0.0]
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    bucket = TokenBucket(4.0, burst=2, clock=lambda: now[0], sleep=sleep)
    for _ in range(5):
        bucket.acquire()
    assert waits == pytest.approx([0.25, 0.25, 0.25])
    now[0] += 10  # idle: the bucket refills to its burst, not beyond
    bucket.acquire()
    bucket.acquire()
    assert len(waits) == 3


def test_requests_to_a_rate_limited_api_are_spaced(fake_rest) -> None:
    served, _ = fake_rest(auth="api_key")
    options = FakeRestOptions(auth="api_key")
    connector = _connector(served.url, options=options, rate_limit={"requests_per_second": 25, "burst": 1})
    assert all(r.ok for r in connector.push([_record(f"r{i}") for i in range(6)]))
    times = [t for t, method, _ in served.store.requests if method == "POST"]  # type: ignore[attr-defined]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert min(gaps) >= 0.03, gaps

"""The connector's push against the fake Lightning: delivery, throttling, splitting, refusals, work orders."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import pytest

from connector_core.connector import (
    AuthenticationError,
    Operation,
    PermanentError,
    PushRecord,
    TransientError,
)
from connectors.openfn.config import OpenFnConfig
from connectors.openfn.connector import OpenFnConnector, TriggerRefused
from connectors.openfn.fake import FakeLightning, Fault
from connectors.openfn.fake.seed import (
    API_KEY,
    BASIC_PASSWORD,
    BASIC_TRIGGER_ID,
    BASIC_USER,
    CUSTOM_PATH,
    PROJECT_ID,
    RESULTS_COLLECTION,
    TRIGGER_ID,
)
from connectors.openfn.fake.store import RunOutcome

Make = Callable[..., OpenFnConnector]


def records(count: int, pad: int = 0, start: int = 0) -> list[PushRecord]:
    return [
        PushRecord(
            ref=f"00000000-0000-4000-8000-{i:012d}",
            operation=Operation.CREATE,
            entity_name="individual",
            payload={"first_name": f"P{i}", "note": "x" * pad},
        )
        for i in range(start, start + count)
    ]


def accepted_refs(lightning: FakeLightning) -> list[str]:
    return [e["entityGuid"] for _, body in lightning.accepted_bodies() for e in body.get("entities", [])]


# -- opening the connector -------------------------------------------------------------------------


def test_a_wrong_api_key_stops_the_connector_before_any_record_moves(
    make_connector: Make, lightning: FakeLightning, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(PermanentError) as refused:
        make_connector(api_key="not-the-key-s3cret")
    message = refused.value.message
    assert f"/i/{TRIGGER_ID}" in message and "credentials" in message and "refused" in message
    assert "s3cret" not in message and "s3cret" not in caplog.text
    assert lightning.work_orders == {}


def test_missing_credentials_and_a_disabled_trigger_are_named(
    make_connector: Make, lightning: FakeLightning
) -> None:
    with pytest.raises(PermanentError, match="requires credentials"):
        make_connector(api_key=None)
    lightning.triggers[TRIGGER_ID].enabled = False
    with pytest.raises(PermanentError, match="is disabled"):
        make_connector()


def test_a_refused_token_or_unknown_collection_is_named(make_connector: Make) -> None:
    with pytest.raises(PermanentError, match="token for collection 'dcsync-results' was refused"):
        make_connector(token="wrong-token")
    with pytest.raises(PermanentError, match="collection 'nope' does not exist"):
        make_connector(collection="nope")


def test_an_unreachable_lightning_does_not_fail_the_preflight() -> None:
    config = OpenFnConfig.model_validate(
        {"url": "http://127.0.0.1:9", "trigger": TRIGGER_ID, "api_key": API_KEY, "timeout": 0.5}
    )
    connector = OpenFnConnector("fn", config)
    try:
        with pytest.raises(TransientError, match=f"POST /i/{TRIGGER_ID}"):
            connector.push(records(1))
    finally:
        connector.close()


def test_check_reports_both_sides(make_connector: Make) -> None:
    result = make_connector().check()
    assert result.ok, result.message
    assert f"/i/{TRIGGER_ID}" in result.message and RESULTS_COLLECTION in result.message


# -- delivery --------------------------------------------------------------------------------------


def test_records_are_sent_in_bounded_batches_each_with_its_batch_id(
    make_connector: Make, lightning: FakeLightning
) -> None:
    batch = records(250)
    results = make_connector(max_batch_records=100).push(batch)
    assert [r.ok for r in results] == [True] * 250
    assert [r.external_id for r in results] == [r.ref for r in batch], "a webhook's external id is the ref"
    sizes = [len(body["entities"]) for _, body in lightning.accepted_bodies()]
    assert sizes == [100, 100, 50]
    for request in lightning.requests:
        assert request.headers["x-batch-id"] == request.body["batch_id"]
        assert request.headers["content-type"] == "application/json"
    assert accepted_refs(lightning) == [r.ref for r in batch]


def test_both_url_forms_and_basic_auth_deliver(make_connector: Make, lightning: FakeLightning) -> None:
    assert make_connector(trigger=f"{PROJECT_ID}/{CUSTOM_PATH}").push(records(1))[0].ok
    basic = make_connector(
        trigger=BASIC_TRIGGER_ID, api_key=None, username=BASIC_USER, password=BASIC_PASSWORD, collection=None
    )
    assert basic.push(records(1, start=1))[0].ok
    assert len(lightning.accepted_batches()) == 2


def test_mapped_mode_sends_records(make_connector: Make, lightning: FakeLightning) -> None:
    make_connector(payload_mode="mapped").push(records(2))
    ((_, body),) = list(lightning.accepted_bodies())
    assert set(body) == {"batch_id", "source", "records"}
    assert [r["record"]["first_name"] for r in body["records"]] == ["P0", "P1"]


def test_a_413_splits_the_body_and_later_bodies_stay_under_the_learned_cap(
    make_connector: Make, lightning: FakeLightning
) -> None:
    lightning.max_body_bytes = 40_000
    batch = records(300, pad=300)
    results = make_connector(max_batch_records=300, max_body_bytes=600_000).push(batch)
    assert all(r.ok for r in results)
    assert sorted(accepted_refs(lightning)) == sorted(r.ref for r in batch)
    assert lightning.duplicate_batches() == {}
    sent = [len(json.dumps(r.body)) for r in lightning.requests]
    assert max(sent) <= 40_000


def test_a_record_too_big_even_alone_is_rejected_and_the_rest_delivered(
    make_connector: Make, lightning: FakeLightning
) -> None:
    lightning.max_body_bytes = 2_000
    batch = [*records(2), *records(1, pad=5_000, start=2)]
    results = make_connector().push(batch)
    assert [r.ok for r in results] == [True, True, False]
    assert "413" in (results[2].error or "") and not results[2].transient


def test_a_record_over_max_body_bytes_is_never_sent(make_connector: Make, lightning: FakeLightning) -> None:
    results = make_connector(max_body_bytes=512_000).push([*records(1, pad=600_000), *records(1, start=1)])
    assert not results[0].ok and "max_body_bytes" in (results[0].error or "") and results[1].ok
    assert len(lightning.requests) == 1


def test_a_body_refused_as_it_is_is_halved_until_the_record_at_fault_is_alone(
    make_connector: Make, lightning: FakeLightning
) -> None:
    batch = records(100)
    lightning.rejects[batch[37].ref] = "invalid byte sequence for encoding UTF8: 0x00"
    results = make_connector(max_batch_records=100).push(batch)
    assert [i for i, r in enumerate(results) if not r.ok] == [37]
    assert not results[37].transient and "0x00" in (results[37].error or "")
    assert sorted(accepted_refs(lightning)) == sorted(r.ref for i, r in enumerate(batch) if i != 37)
    assert lightning.answers[422] <= 2 * 7, "a bisection, not one request per record"


# -- throttling and failures -----------------------------------------------------------------------


def test_a_quota_answer_is_not_a_delivery(make_connector: Make, lightning: FakeLightning) -> None:
    connector = make_connector(max_batch_records=10)
    lightning.faults.add(Fault("too_many_runs"))
    with pytest.raises(TransientError, match="too_many_runs"):
        connector.push(records(30))
    lightning.soft_run_quota = 1
    results = connector.push(records(30))
    assert [r.ok for r in results] == [True] * 10 + [False] * 20
    assert all(r.transient and "too_many_runs" in (r.error or "") for r in results[10:])


def test_retry_after_of_a_503_reaches_the_engine(make_connector: Make, lightning: FakeLightning) -> None:
    lightning.faults.add(Fault("status", status=503, headers={"Retry-After": "7"}, body={"error": "x"}))
    with pytest.raises(TransientError) as busy:
        make_connector().push(records(3))
    assert busy.value.retry_after == 7.0
    lightning.faults.add(Fault("status", status=429, body={"error": "too_many_requests"}))
    with pytest.raises(TransientError) as limited:
        make_connector().push(records(3))
    assert limited.value.retry_after is None


def test_a_refusal_mid_batch_keeps_what_was_delivered_and_dead_letters_nothing(
    make_connector: Make, lightning: FakeLightning
) -> None:
    connector = make_connector(max_batch_records=5)
    lightning.faults.add(Fault("status", route="POST /i/*", status=200, body={"work_order_id": "w"}))
    lightning.faults.add(Fault("rotate_api_key"))
    batch = records(15)
    results = connector.push(batch)
    assert [r.ok for r in results[:5]] == [True] * 5
    assert all(not r.ok and r.transient and "refused" in (r.error or "") for r in results[5:])
    assert API_KEY not in " ".join(r.error or "" for r in results)
    with pytest.raises(TriggerRefused, match="refused") as stopped:
        connector.push(batch[5:])
    assert isinstance(stopped.value, AuthenticationError), "the engine stops the run on it"


def test_an_answer_lost_after_commit_is_resent_with_the_same_batch_id_and_processed_once(
    make_connector: Make, lightning: FakeLightning
) -> None:
    connector = make_connector(timeout=0.3, max_batch_records=50)
    lightning.faults.add(Fault("timeout_after_commit", seconds=0.6))
    batch = records(100)
    with pytest.raises(TransientError, match="same batch_id"):
        connector.push(batch)
    assert all(r.ok for r in connector.push(batch))
    duplicates = lightning.duplicate_batches()
    assert len(duplicates) == 1 and list(duplicates.values()) == [2]
    lightning.tick()
    results = lightning.collection(RESULTS_COLLECTION).items
    assert len(results) == 100
    outcomes = [o.final_state for o in lightning.runs.values() if o.final_state]
    assert sum(1 for s in outcomes if "skipped" in s) == 1, "the job dropped the repeated batch"


def test_a_reset_connection_is_transient(make_connector: Make, lightning: FakeLightning) -> None:
    lightning.faults.add(Fault("reset", commit=True))
    with pytest.raises(TransientError):
        make_connector().push(records(2))
    assert len(lightning.accepted_batches()) == 1


# -- work orders -----------------------------------------------------------------------------------


def test_work_orders_are_polled_to_a_final_state(
    make_connector: Make, lightning: FakeLightning, caplog: pytest.LogCaptureFixture
) -> None:
    calls = []

    def job(clip, fake):  # type: ignore[no-untyped-def]
        calls.append(clip.body["batch_id"])
        return RunOutcome(final_state={}, state="failed" if len(calls) == 2 else "success")

    lightning.run_handler = job
    connector = make_connector(poll_work_orders=True, poll_timeout=5, max_batch_records=2)
    caplog.set_level(logging.INFO, logger="dcsync.openfn")
    assert all(r.ok for r in connector.push(records(4)))
    assert [o.state for o in connector.work_orders] == ["success", "failed"]
    assert all(o.work_order_id and o.run_id for o in connector.work_orders)
    assert "is failed" in caplog.text


def test_polling_gives_up_after_its_timeout(make_connector: Make, lightning: FakeLightning) -> None:
    lightning.auto_run = False
    connector = make_connector(poll_work_orders=True, poll_timeout=0.3)
    assert connector.push(records(1))[0].ok
    assert [o.state for o in connector.work_orders] == ["pending"]

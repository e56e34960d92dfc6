"""The standalone fake's starting instance, and a stand-in for the companion OpenFn job.

``dcsync mock-server openfn`` serves an instance with fixed, documented identifiers so a person can aim a
connector at it without setting anything up (docs/connectors/openfn.md lists them). The companion job is
what reference openfn.md §2.5/§5 recommends a real workflow do with a pushed batch: skip a ``batch_id`` it
has processed before, then write one result per entity into a collection, which is what the connector pulls.
"""

from __future__ import annotations

from typing import Any

from connectors.openfn.fake.store import Dataclip, FakeLightning, RunHandler, RunOutcome

PROJECT_ID = "3f6c1a2e-9b4d-4e8f-a1c2-5d7e9f0a1b2c"
TRIGGER_ID = "8b2e4c6d-1f3a-4b5c-9d7e-0a2c4e6f8a1b"
"""A webhook trigger with API-key auth; also reachable as ``/i/<PROJECT_ID>/<CUSTOM_PATH>``."""
CUSTOM_PATH = "datacollect"
API_KEY = "fake-lightning-api-key"
BASIC_TRIGGER_ID = "c5d7e9f1-3a5b-4c7d-8e9f-1a3b5c7d9e0f"
"""A webhook trigger with HTTP Basic auth."""
BASIC_USER = "openfn"
BASIC_PASSWORD = "fake-lightning-password"
PAT = "fake-lightning-pat"
"""A personal access token of the project's owner (Collections and the REST API)."""
RESULTS_COLLECTION = "dcsync-results"
PROCESSED_COLLECTION = "dcsync-processed"


def seed_defaults(fake: FakeLightning) -> None:
    fake.add_project("dcsync demo", PROJECT_ID)
    fake.add_trigger(PROJECT_ID, trigger_id=TRIGGER_ID, api_key=API_KEY, custom_path=CUSTOM_PATH)
    fake.add_trigger(PROJECT_ID, trigger_id=BASIC_TRIGGER_ID, username=BASIC_USER, password=BASIC_PASSWORD)
    fake.add_pat(PAT, "owner@example.org", {PROJECT_ID: "owner"})
    fake.add_collection(PROJECT_ID, RESULTS_COLLECTION)
    fake.add_collection(PROJECT_ID, PROCESSED_COLLECTION)
    fake.run_handler = companion_job()


def _changes(body: Any) -> list[tuple[str, str | None]]:
    """``(entity guid, entity name)`` of every create/update a dcsync body carries (deletes get no result)."""
    if not isinstance(body, dict):
        return []
    found: list[tuple[str, str | None]] = []
    for event in body.get("entities") or []:
        if isinstance(event, dict) and event.get("type") in ("create-individual", "update-individual"):
            data = event.get("data")
            name = data.get("entityName") if isinstance(data, dict) else None
            found.append((str(event.get("entityGuid")), name))
    for record in body.get("records") or []:
        if isinstance(record, dict) and record.get("operation") in ("create", "update"):
            found.append((str(record.get("ref")), record.get("entityName")))
    return found


def companion_job(
    results: str = RESULTS_COLLECTION, processed: str | None = PROCESSED_COLLECTION, status: str = "received"
) -> RunHandler:
    """A job that drops a ``batch_id`` it has already processed, then writes ``dc:result:<guid>`` items.

    Each result value is ``{"entityGuid", "entityName", "status", "batch_id", "work_order_id"}``, the
    shape docs/connectors/openfn.md asks a real job to write.
    """

    def job(dataclip: Dataclip, lightning: FakeLightning) -> RunOutcome:
        body = dataclip.body if isinstance(dataclip.body, dict) else {}
        batch_id = body.get("batch_id")
        done = lightning.collection(processed) if processed else None
        if done is not None and batch_id and batch_id in done.items:
            return RunOutcome(final_state={"skipped": batch_id})
        written = 0
        for guid, entity_name in _changes(body):
            lightning.put_json(
                results,
                f"dc:result:{guid}",
                {
                    "entityGuid": guid,
                    "entityName": entity_name,
                    "status": status,
                    "batch_id": batch_id,
                    "work_order_id": dataclip.work_order_id,
                },
            )
            written += 1
        if done is not None and batch_id:
            lightning.put_json(processed or "", batch_id, {"work_order_id": dataclip.work_order_id})
        return RunOutcome(final_state={"written": written, "batch_id": batch_id})

    return job

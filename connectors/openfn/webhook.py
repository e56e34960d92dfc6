"""The webhook side of Lightning as pure functions: what a batch body looks like, how records are packed
into bodies, and what an answer means (reference openfn.md §1.5, §5, §6.6).

Kept free of I/O so the rules are tested without a server:

- every record becomes one *unit*: a DataCollect event (``datacollect`` mode) or a mapped-record envelope
  (``mapped`` mode) with a deterministic id, so re-sending the same change produces the same bytes' worth
  of identity;
- units are packed greedily, in order, into bodies bounded by record count and bytes; a body's
  ``batch_id`` is derived from its unit ids, so re-sending the same records gives the same ``batch_id``
  (Lightning does not deduplicate webhook requests; the job can, by ``batch_id``);
- an answer is classified into what the connector does next: delivered, re-send later, split, or stop.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import httpx

from connector_core.connector import Operation, PushRecord

CHANGE_NS = uuid.UUID("0c9f5b1e-4f7a-4d52-9a3e-6b1d8e2f7c40")
BATCH_NS = uuid.UUID("5e2d7a91-c3b4-4f18-8a6d-2b9e0f4c1d73")

EVENT_TYPES = {
    Operation.CREATE: "create-individual",
    Operation.UPDATE: "update-individual",
    Operation.DELETE: "delete-entity",
    Operation.UNLINK: "remove-member",
}


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def change_id(connector: str, record: PushRecord) -> str:
    """The id of one change: the same record sent again (a retry) keeps it, a different change does not."""
    basis = "|".join(
        (connector, record.ref, str(record.operation), record.parent_ref or "", _canonical(record.payload))
    )
    return str(uuid.uuid5(CHANGE_NS, basis))


def batch_id_for(unit_ids: Sequence[str]) -> str:
    """A body's id: a function of its units, in order, so a re-sent body carries the same id."""
    return str(uuid.uuid5(BATCH_NS, "\n".join(unit_ids)))


def render_event(connector: str, record: PushRecord, timestamp: str) -> dict[str, Any]:
    """A record as the DataCollect event the reference adapter would send (``FormSubmission`` JSON).

    Creates and updates carry the payload plus ``entityName`` and ``parentGuid`` (DataCollect's mobile
    style); an unlink is DataCollect's ``remove-member`` on the group; a delete is ``delete-entity``.
    """
    entity_guid = record.ref
    if record.operation is Operation.DELETE:
        data: dict[str, Any] = {"reason": "deleted in DataCollect"}
        if record.entity_name:
            data["entityName"] = record.entity_name
    elif record.operation is Operation.UNLINK:
        entity_guid = record.parent_ref or record.ref
        data = {"memberId": record.ref}
    else:
        data = dict(record.payload)
        if record.entity_name:
            data.setdefault("entityName", record.entity_name)
        if record.parent_ref:
            data.setdefault("parentGuid", record.parent_ref)
    return {
        "guid": change_id(connector, record),
        "entityGuid": entity_guid,
        "type": EVENT_TYPES[record.operation],
        "data": data,
        "timestamp": timestamp,
        "userId": f"dcsync:{connector}",
        "syncLevel": 2,
    }


def render_record(connector: str, record: PushRecord) -> dict[str, Any]:
    """A record in ``mapped`` mode: the mapping's output inside a small envelope the job can route on."""
    out: dict[str, Any] = {
        "id": change_id(connector, record),
        "ref": record.ref,
        "operation": str(record.operation),
        "entityName": record.entity_name,
        "record": record.payload,
    }
    if record.parent_ref:
        out["parentRef"] = record.parent_ref
    return out


@dataclass(frozen=True, slots=True)
class Unit:
    """One record ready to send: its position in the batch, its id and its encoded JSON."""

    index: int
    record: PushRecord
    id: str
    encoded: bytes


@dataclass(frozen=True, slots=True)
class Body:
    units: tuple[Unit, ...]
    batch_id: str
    content: bytes

    @property
    def size(self) -> int:
        return len(self.content)


class BodyShape:
    """How units are wrapped: ``{"batch_id": ..., "source": ..., "<items key>": [units]}``."""

    def __init__(self, connector: str, items_key: str):
        self.connector = connector
        self.items_key = items_key
        self._prefix_len = len(self._prefix("0" * 36))

    def _prefix(self, batch_id: str) -> bytes:
        head = {"batch_id": batch_id, "source": f"dcsync:{self.connector}"}
        return json.dumps(head, separators=(",", ":")).encode()[:-1] + f',"{self.items_key}":['.encode()

    def overhead(self) -> int:
        return self._prefix_len + len(b"]}")

    def size_of(self, units: Sequence[Unit]) -> int:
        return self.overhead() + sum(len(u.encoded) for u in units) + max(0, len(units) - 1)

    def build(self, units: Sequence[Unit]) -> Body:
        batch_id = batch_id_for([u.id for u in units])
        content = self._prefix(batch_id) + b",".join(u.encoded for u in units) + b"]}"
        return Body(tuple(units), batch_id, content)

    def pack(self, units: Sequence[Unit], max_records: int, max_bytes: int) -> list[Body]:
        """Greedy, in order: a body closes when one more unit would pass the count or the byte limit.

        Deterministic for given units and limits, which is what keeps a re-sent body's ``batch_id``:
        after a failure the engine hands back the same records from the failed one on, so the first body
        packed again is the one that failed. A unit too big for any body still goes alone (the caller
        decides whether it is over the configured cap).
        """
        bodies: list[Body] = []
        current: list[Unit] = []
        size = self.overhead()
        for unit in units:
            extra = len(unit.encoded) + (1 if current else 0)
            if current and (len(current) >= max_records or size + extra > max_bytes):
                bodies.append(self.build(current))
                current, size, extra = [], self.overhead(), len(unit.encoded)
            current.append(unit)
            size += extra
        if current:
            bodies.append(self.build(current))
        return bodies


def encode(item: dict[str, Any]) -> bytes:
    return json.dumps(item, separators=(",", ":"), ensure_ascii=False, default=str).encode("utf-8")


class Verdict(StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"  # nothing was run: send the same body again later (throttled, 5xx, lost answer)
    SPLIT = "split"  # 413: the body is over Lightning's cap
    REFUSED = "refused"  # the trigger refuses every request (credentials, unknown, disabled, media type)
    REJECTED = "rejected"  # this body cannot be accepted as it is (400, 422, ...)


@dataclass(frozen=True, slots=True)
class Answer:
    verdict: Verdict
    status: int
    message: str = ""
    retry_after: float | None = None
    work_order_id: str | None = None
    run_id: str | None = None
    state: str | None = None


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except (ValueError, UnicodeDecodeError):
        return None


def retry_after_of(response: httpx.Response, body: Any) -> float | None:
    """Seconds from ``Retry-After`` (delta-seconds), else a body ``retry_after``; ``None`` if neither."""
    header = response.headers.get("retry-after", "").strip()
    if header:
        try:
            return max(0.0, float(header))
        except ValueError:
            return None  # an HTTP-date: rare for Lightning; the engine's backoff applies
    value = body.get("retry_after") if isinstance(body, dict) else None
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _text(body: Any, response: httpx.Response) -> str:
    if isinstance(body, dict):
        parts = [str(body[k]) for k in ("error", "message") if body.get(k)]
        if body.get("details"):
            parts.append(json.dumps(body["details"], separators=(",", ":"), default=str)[:300])
        if parts:
            return ": ".join(parts)
    return response.text.strip()[:200] or response.reason_phrase


def classify(response: httpx.Response, trigger_path: str) -> Answer:
    """What a webhook answer means for the body that was sent (reference openfn.md §5's table).

    Success is a 2xx **without** an ``error`` key: Lightning answers 200 with ``"error": "too_many_runs"``
    when it stored the work order but created no run, which is not a delivery. Refusals name the trigger
    path and never echo a credential.
    """
    status = response.status_code
    body = _json(response)
    raw_meta = body.get("meta") if isinstance(body, dict) else None
    meta: dict[str, Any] = raw_meta if isinstance(raw_meta, dict) else {}
    work_order = (body.get("work_order_id") if isinstance(body, dict) else None) or meta.get("work_order_id")
    work_order = work_order or response.headers.get("x-meta-work-order-id")
    run_id = response.headers.get("x-meta-run-id") or (body.get("run_id") if isinstance(body, dict) else None)
    run_id = run_id or meta.get("run_id")
    retry_after = retry_after_of(response, body)
    if 200 <= status < 300:
        if status != 204 and response.content and not isinstance(body, dict):
            return Answer(Verdict.RETRY, status, f"{trigger_path} answered {status} without a JSON object")
        if isinstance(body, dict) and body.get("error"):
            error = body["error"]
            if error == "too_many_runs":
                message = (
                    f"Lightning stored work order {work_order} for {trigger_path} but created no run: "
                    "the project's run quota is spent (too_many_runs)"
                )
            else:
                message = f"{trigger_path} answered {status} with error {error!r}"
            return Answer(Verdict.RETRY, status, message, retry_after, work_order)
        return Answer(Verdict.DELIVERED, status, "", None, work_order, run_id, meta.get("state"))
    if status == 413:
        return Answer(Verdict.SPLIT, status, f"{trigger_path} refused the body as too large (HTTP 413)")
    if status == 401:
        return Answer(
            Verdict.REFUSED,
            status,
            f"webhook trigger {trigger_path} requires credentials and none were accepted (HTTP 401); "
            "set api_key, or username and password",
        )
    if status == 404:
        return Answer(
            Verdict.REFUSED,
            status,
            f"the credentials for webhook trigger {trigger_path} were refused, or the trigger does not exist "
            "(HTTP 404: Lightning gives the same answer to both)",
        )
    if status == 403:
        return Answer(
            Verdict.REFUSED,
            status,
            f"webhook trigger {trigger_path} is disabled (HTTP 403: {_text(body, response)})",
        )
    if status == 415:
        return Answer(
            Verdict.REFUSED,
            status,
            f"{trigger_path} refused the content type (HTTP 415); a proxy may be rewriting requests",
        )
    if status in (402, 429):
        return Answer(
            Verdict.RETRY,
            status,
            f"{trigger_path} is rate limited (HTTP {status}: {_text(body, response)})",
            retry_after,
        )
    if status == 504 and work_order:
        # a synchronous trigger timed out waiting for its run: the work order exists and will run
        return Answer(Verdict.DELIVERED, status, "", None, work_order, run_id, "running")
    if status >= 500:
        return Answer(
            Verdict.RETRY,
            status,
            f"{trigger_path} answered HTTP {status}: {_text(body, response)}",
            retry_after,
        )
    return Answer(
        Verdict.REJECTED,
        status,
        f"{trigger_path} rejected the batch (HTTP {status}: {_text(body, response)})",
    )

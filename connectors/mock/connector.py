"""The mock connector: DataCollect's mock-sync-server protocol over httpx.

Push sends each record as a DataCollect event (``create-individual``/``update-individual`` carrying the
mapped payload, ``delete-entity`` for deletes) whose ``entityGuid`` is the record's ref. Like a real
registry, the server makes a new record for every create it receives; the ref is what ``/records/by-ref``
finds, which is how the engine learns that a create whose answer was lost did land.

Pull reads ``GET /?since=`` and survives the timestamp cursor's traps (ties at a page boundary, a full page
inside one millisecond) by re-reading from just before the last timestamp and skipping the ids it has
already seen there.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import httpx
from pydantic import Field

from connector_core import codec
from connector_core.connector import (
    Capability,
    CheckResult,
    Connector,
    ConnectorConfig,
    Operation,
    PermanentError,
    PullPage,
    PushRecord,
    PushResult,
    RemoteRecord,
    TransientError,
)
from connector_core.events import now_timestamp, shift_timestamp
from connector_core.http import released

_EVENT_NS = uuid.UUID("6f1f3c2e-3d5b-4a8e-9a0e-2f4d1c7b9e10")
_JSON_HEADERS = {"content-type": "application/json"}


def _uuid5(name: bytes) -> str:
    """``str(uuid.uuid5(_EVENT_NS, name))`` without building a UUID object (a third of the cost per event):
    a resent record carries the same event guid, which a DataCollect-style server deduplicates by."""
    digest = bytearray(hashlib.sha1(_EVENT_NS.bytes + name).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class MockConfig(ConnectorConfig):
    url: str = Field(description="Base URL of the mock sync server, e.g. http://127.0.0.1:8765")
    timeout: float = Field(default=10.0, gt=0, description="Seconds before a request is abandoned")
    lookback_seconds: float = Field(
        default=60.0, ge=0, description="Each pull re-reads this much before the newest record seen"
    )


def classify_status(response: httpx.Response) -> None:
    """Raise the right error for a failed HTTP answer: 429 and 5xx may pass, other 4xx will not."""
    if response.status_code < 400:
        return
    try:
        message = response.json().get("message") or response.text
    except (ValueError, AttributeError):
        message = response.text[:200]
    text = f"HTTP {response.status_code}: {message}"
    if response.status_code == 429 or response.status_code >= 500:
        retry_after = response.headers.get("Retry-After")
        delay = float(retry_after) if retry_after and retry_after.isdigit() else None
        raise TransientError(text, retry_after=delay)
    raise PermanentError(text)


class MockConnector(Connector):
    type_name = "mock"
    config_model = MockConfig
    capabilities = frozenset({Capability.PUSH, Capability.PULL})
    description = "DataCollect's mock-sync-server protocol (demo and tests)"
    max_in_flight = 8  # stateless requests on a thread-safe httpx client

    config: MockConfig

    def __init__(self, name: str, config: MockConfig, client: httpx.Client | None = None):
        super().__init__(name, config)
        self._client = client or httpx.Client(base_url=config.url.rstrip("/"), timeout=config.timeout)

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = released(self._client.request(method, path, **kwargs))
        except httpx.TimeoutException as exc:
            raise TransientError(f"timed out talking to {self.config.url}: {exc}") from None
        except httpx.TransportError as exc:
            raise TransientError(f"cannot reach {self.config.url}: {exc}") from None
        classify_status(response)
        return response

    def check(self) -> CheckResult:
        try:
            self._request("GET", "/", params={"since": "2999-01-01T00:00:00.000Z"})
        except (TransientError, PermanentError) as exc:
            return CheckResult(False, exc.message)
        return CheckResult(True, f"mock server at {self.config.url} answers")

    def _event_for(self, record: PushRecord, timestamp: str) -> dict[str, Any]:
        entity_guid = record.ref
        if record.operation is Operation.DELETE:
            kind, data = "delete-entity", {"reason": "deleted in DataCollect"}
        elif record.operation is Operation.UNLINK:
            kind, data = "remove-member", {"memberId": record.ref}
            entity_guid = record.parent_ref or record.ref
        else:
            kind = "create-individual" if record.operation is Operation.CREATE else "update-individual"
            data = dict(record.payload)
            if record.entity_name:
                data.setdefault("entityName", record.entity_name)
            if record.parent_external_id:
                data.setdefault("parentExternalId", record.parent_external_id)
        body = codec.dumps_bytes(data, default=str)  # mapped payloads keep a stable key order
        return {
            "guid": _uuid5(f"{self.name}|{record.ref}|{kind}|".encode() + body),
            "entityGuid": entity_guid,
            "type": kind,
            "data": data,
            "timestamp": timestamp,
            "userId": f"dcsync:{self.name}",
            "syncLevel": 2,
        }

    def push(self, batch: Sequence[PushRecord]) -> list[PushResult]:
        if not batch:
            return []
        timestamp = now_timestamp()
        events = [self._event_for(record, timestamp) for record in batch]
        response = self._request(
            "POST", "/", content=codec.dumps_bytes({"data": events}), headers=_JSON_HEADERS
        )
        answers = {a.get("guid"): a for a in codec.loads(response.content).get("results", [])}
        results = []
        for record, event in zip(batch, events, strict=True):
            answer = answers.get(event["guid"])
            if answer is None:
                results.append(PushResult.rejected(record.ref, "no answer for this record", transient=True))
            elif answer.get("status") == "ok":
                results.append(PushResult.delivered(record.ref, answer.get("id") or record.external_id))
            else:
                results.append(
                    PushResult.rejected(
                        record.ref, str(answer.get("error")), transient=bool(answer.get("retryable"))
                    )
                )
        return results

    def pull(self, cursor: str | None, limit: int) -> PullPage:
        """One page of a sweep through ``GET /?since=``.

        The cursor holds ``scan`` (where this sweep stands, with the ids already read at that very
        millisecond), and ``high`` (the newest timestamp ever read). Within a sweep, each page re-reads
        from just before ``scan`` and skips the ids seen there, because the server's ``since`` is a strict
        ``>`` on millisecond timestamps and records sharing the boundary millisecond would otherwise be
        lost. When a sweep ends, the next one starts ``lookback`` before ``high``: a record committed late,
        with a timestamp the sweep had already passed, is still found (the engine appends nothing for
        records it re-reads unchanged).
        """
        state = json.loads(cursor) if cursor else {}
        scan, seen, high = state.get("scan"), set(state.get("seen", [])), state.get("high")
        params: dict[str, Any] = {"limit": limit + len(seen)}
        if scan:
            params["since"] = shift_timestamp(scan, -timedelta(milliseconds=1))
        rows = self._request("GET", "/", params=params).json()
        if not isinstance(rows, list):
            raise PermanentError(f"GET / answered {type(rows).__name__}, expected a list of records")
        fresh = [r for r in rows if not (r["timestamp"] == scan and r["id"] in seen)]
        records = [self._record(r) for r in fresh]
        has_more = len(rows) >= params["limit"]
        if rows:
            last = rows[-1]["timestamp"]
            at_last = {r["id"] for r in rows if r["timestamp"] == last}
            scan, seen = last, (at_last | seen if last == scan else at_last)
            high = max(high, last) if high else last
        if has_more:
            next_state = {"scan": scan, "seen": sorted(seen), "high": high}
        else:  # sweep done: the next one re-reads the look-back window for late commits
            lookback = timedelta(seconds=self.config.lookback_seconds)
            next_state = {
                "scan": shift_timestamp(high, -lookback) if high else None,
                "seen": [],
                "high": high,
            }
        return PullPage(records=records, next_cursor=json.dumps(next_state), has_more=has_more)

    @staticmethod
    def _record(row: dict[str, Any]) -> RemoteRecord:
        data = row.get("data") or {}
        return RemoteRecord(
            external_id=str(row["id"]),
            data={k: v for k, v in data.items() if k != "parentExternalId"},
            entity_name=row.get("entityName"),
            ref=row.get("entityGuid"),
            updated_at=row["timestamp"],
            version=str(row.get("version")),
            deleted=bool(row.get("deleted")),
            parent_external_id=data.get("parentExternalId"),
        )

    def lookup(self, refs: Sequence[str]) -> dict[str, str]:
        if not refs:
            return {}
        found = self._request("GET", "/records/by-ref", params={"refs": ",".join(refs)}).json()
        return {str(k): str(v) for k, v in found.items()}

    def close(self) -> None:
        self._client.close()

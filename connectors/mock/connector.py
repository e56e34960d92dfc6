"""The mock connector: DataCollect's mock-sync-server protocol over httpx.

The protocol is the one DataCollect's ``MockSyncServerAdapter`` speaks (reference datacollect.md §4.2):
``POST <url>`` with ``{"data": [FormSubmission...]}``, and ``GET <url>?since=TS`` answering a JSON array.
Push sends each record as a DataCollect event (``create-individual``/``update-individual`` carrying the
mapped payload, ``delete-entity`` for deletes, ``remove-member`` for an unlink) whose ``entityGuid`` is the
record's ref and whose ``guid`` is derived from the connector, the ref, the type and the payload, so the
same change sent twice is the same event.

dcsync's own mock server (``connectors.mock.server``) answers more than that: per-event results with a
record id, and ``GET /records/by-ref`` to find what an unanswered request created. The connector uses
those answers only when the server offers them: it asks ``/records/by-ref`` once (in ``check()``, or before
its first push, pull or lookup) and takes a JSON object for "offered"; a 404, another 4xx or any other
answer means the plain adapter protocol. A 5xx or a timeout decides nothing and is retried. Then:

- **dcsync's mock server**: per-record results; the external id is the server's record id; lookup asks
  ``/records/by-ref``; pull reads the server's records and sweeps with a look-back window (below).
- **the plain adapter protocol**: a 2xx answer delivers the whole batch (a ``results`` list, if a server
  sends one, is honoured per record; a 2xx whose body says ``"status": "error"`` is a transient failure);
  the remote keeps no id of its own, so the external id is the entity guid. A lookup reads the server's
  events (``GET ?since=`` from the start) for the refs' entity guids, since no lookup by ref exists. When
  even that cannot answer, the engine sends the create again: the deterministic event guid makes that a
  no-op on a server with DataCollect's semantics (events are kept by guid, §2.2, §7.6), and a create there
  is an upsert by entity guid anyway. Every lookup failure is transient, never permanent: a permanent one
  would dead-letter records that may have arrived, so the run stops with its checkpoint unmoved instead.
  Pull reads the events back as records (``entityGuid``, ``data``, ``type``; ``delete-entity`` deletes;
  membership and other event types carry no entity fields and are passed over), folding a page's events
  of one entity into one record under its own guid.

Pull reads ``GET /?since=`` and survives the timestamp cursor's traps (ties at a page boundary, a full page
inside one millisecond) by re-reading from just before the last timestamp and skipping the ids (plain
protocol: event guids) it has already seen there. The plain protocol has no ``limit``: each answer holds
everything after the cursor, and the connector cuts its page from it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx
from pydantic import Field

from connector_core import codec
from connector_core.connector import (
    AuthenticationError,
    Capability,
    CheckResult,
    Connector,
    ConnectorConfig,
    ConnectorError,
    Operation,
    PermanentError,
    PullPage,
    PushRecord,
    PushResult,
    RemoteRecord,
    SystemicError,
    TransientError,
)
from connector_core.events import normalize_timestamp, now_timestamp, shift_timestamp
from connector_core.http import never_sent, released

log = logging.getLogger("dcsync.mock")

_EVENT_NS = uuid.UUID("6f1f3c2e-3d5b-4a8e-9a0e-2f4d1c7b9e10")
_JSON_HEADERS = {"content-type": "application/json"}
_LOOKUP_PATH = "/records/by-ref"
_UPSERTS = frozenset({"create-individual", "update-individual", "create-group", "update-group"})
_RICH = "dcsync's mock protocol (per-record results, by-ref lookup)"
_PLAIN = (
    "DataCollect's mock-sync-server adapter protocol only (no by-ref lookup, no per-record results): "
    "a 2xx delivers the whole batch, lookups read the server's events"
)


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
    text = f"HTTP {response.status_code}: {' '.join(str(message).split())[:200]}"  # an HTML page, on one line
    if response.status_code == 429 or response.status_code >= 500:
        retry_after = response.headers.get("Retry-After")
        delay = float(retry_after) if retry_after and retry_after.isdigit() else None
        raise TransientError(text, retry_after=delay)
    if response.status_code in (401, 403, 407):  # the protocol has no login: a proxy or gateway refused us
        raise AuthenticationError(f"{text}: the server refused dcsync's request (credentials or a proxy)")
    if response.status_code in (404, 405):  # no sync endpoint at this address: every record would fail
        raise SystemicError(f"{text}: no sync endpoint at {response.request.url} (check `url:`)", unsent=True)
    raise PermanentError(text)


@dataclass(frozen=True, slots=True)
class _Row:
    """One entry of a plain server's ``GET ?since=`` answer: an event (or a flat record) of one entity."""

    key: str  # what tells two rows of one millisecond apart: the event guid (a flat record's id)
    timestamp: str
    entity: str
    kind: str
    data: dict[str, Any]
    has_guid: bool  # an event names its entity guid; a flat record only has an id


def _row(index: int, raw: Any) -> _Row:
    """Read one row of a plain answer; a row that is neither an event nor a record is a one-line error."""
    where = f"GET / answered, item {index}"
    if not isinstance(raw, dict):
        raise PermanentError(f"{where}: {type(raw).__name__}, expected an event object")
    entity, has_guid = raw.get("entityGuid"), True
    if entity in (None, ""):
        entity, has_guid = raw.get("id"), False
    if entity in (None, "") or isinstance(entity, dict | list):
        raise PermanentError(f"{where}: neither an entityGuid nor an id")
    try:
        timestamp = normalize_timestamp(raw["timestamp"])
    except (KeyError, TypeError, ValueError):
        raise PermanentError(f"{where} ({entity}): no readable timestamp: {raw.get('timestamp')!r}") from None
    if has_guid:
        data = raw.get("data")
        kind = str(raw.get("type") or "")
        key = str(raw.get("guid") or f"{entity}|{kind}|{timestamp}")
    else:  # the adapter's own reading of a record: its id is the entity, the rest is its data
        data = {k: v for k, v in raw.items() if k not in ("id", "timestamp", "deleted")}
        kind = "delete-entity" if raw.get("deleted") is True else "update-individual"
        key = str(entity)
    if not isinstance(data, dict):
        raise PermanentError(f"{where} ({entity}): data is {type(data).__name__}, expected an object")
    return _Row(key, timestamp, str(entity), kind, data, has_guid)


@dataclass
class _Folded:
    """A page's events of one entity, as one record (DataCollect's shallow merge)."""

    row: _Row
    data: dict[str, Any] = field(default_factory=dict)
    deleted: bool = False

    def add(self, row: _Row) -> None:
        self.row = row
        if row.kind == "delete-entity":  # a hard delete: a later create starts afresh
            self.data, self.deleted = {}, True
        else:
            self.data = {**self.data, **row.data}
            self.deleted = False

    def record(self) -> RemoteRecord:
        data = dict(self.data)
        entity_name = data.pop("entityName", None)
        parent = data.pop("parentExternalId", None)
        return RemoteRecord(
            external_id=self.row.entity,
            data=data,
            entity_name=entity_name if isinstance(entity_name, str) else None,
            ref=self.row.entity if self.row.has_guid else None,
            updated_at=self.row.timestamp,
            version=self.row.key if self.row.has_guid else f"{self.row.key}@{self.row.timestamp}",
            deleted=self.deleted,
            parent_external_id=str(parent) if parent not in (None, "") else None,
        )


def _fold(rows: Iterable[_Row]) -> list[RemoteRecord]:
    folded: dict[str, _Folded] = {}
    for row in rows:
        if row.kind not in _UPSERTS and row.kind != "delete-entity":
            continue  # membership and other events carry no fields of an entity
        entry = folded.get(row.entity)
        if entry is None:
            entry = folded[row.entity] = _Folded(row)
        entry.add(row)
    return [entry.record() for entry in folded.values()]


class MockConnector(Connector):
    type_name = "mock"
    config_model = MockConfig
    capabilities = frozenset({Capability.PUSH, Capability.PULL})
    description = "DataCollect's mock-sync-server protocol; by-ref lookup and per-record results if offered"
    max_in_flight = 8  # stateless requests on a thread-safe httpx client

    config: MockConfig

    def __init__(self, name: str, config: MockConfig, client: httpx.Client | None = None):
        super().__init__(name, config)
        self._client = client or httpx.Client(base_url=config.url.rstrip("/"), timeout=config.timeout)
        self._rich: bool | None = None  # unknown until the server is asked
        self._probe_lock = threading.Lock()

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request; a transport failure becomes a :class:`TransientError` (``unsent`` when the
        connection never opened), whatever the answer's status."""
        try:
            return released(self._client.request(method, path, **kwargs))
        except httpx.TimeoutException as exc:
            raise TransientError(
                f"timed out talking to {self.config.url}: {exc}", unsent=never_sent(exc)
            ) from None
        except httpx.TransportError as exc:
            raise TransientError(f"cannot reach {self.config.url}: {exc}", unsent=never_sent(exc)) from None

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = self._send(method, path, **kwargs)
        classify_status(response)
        return response

    def _offers_lookup(self) -> bool:
        """Whether the server is dcsync's mock server (by-ref lookup, per-record results): asked once per
        connector, never assumed, since a server speaking only the adapter protocol offers neither."""
        if self._rich is None:
            with self._probe_lock:
                if self._rich is None:
                    self._rich = self._probe()
                    log.info("%s: %s speaks %s", self.name, self.config.url, _RICH if self._rich else _PLAIN)
        return self._rich

    def _probe(self) -> bool:
        response = self._send("GET", _LOOKUP_PATH, params={"refs": ""})
        if response.status_code == 429 or response.status_code >= 500:
            classify_status(response)  # says nothing about the protocol: decide on a later call
        if response.status_code >= 300:
            return False
        try:  # asked for no refs, the lookup finds none: anything else is some other page
            return codec.loads(response.content) == {}
        except ValueError:
            return False

    def check(self) -> CheckResult:
        try:
            self._request("GET", "/", params={"since": "2999-01-01T00:00:00.000Z"})
            protocol = _RICH if self._offers_lookup() else _PLAIN
        except (TransientError, PermanentError) as exc:
            return CheckResult(False, exc.message)
        return CheckResult(True, f"mock server at {self.config.url} answers; it speaks {protocol}")

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
        rich = self._offers_lookup()
        response = self._request(
            "POST", "/", content=codec.dumps_bytes({"data": events}), headers=_JSON_HEADERS
        )
        try:
            body = codec.loads(response.content)
        except ValueError:
            body = None
        if not rich:
            return self._plain_results(batch, events, body)
        listed = body.get("results") if isinstance(body, dict) else None
        answers = {a.get("guid"): a for a in listed or [] if isinstance(a, dict)}
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

    @staticmethod
    def _plain_results(
        batch: Sequence[PushRecord], events: list[dict[str, Any]], body: Any
    ) -> list[PushResult]:
        """A plain server's 2xx: the whole batch arrived, and the remote's only id is the entity guid."""
        if isinstance(body, dict) and body.get("status") == "error":
            message = body.get("message") or body.get("error") or "no message"
            raise TransientError(f"POST / answered success with an error body: {message}")
        listed = body.get("results") if isinstance(body, dict) else None
        answers = (
            {a.get("guid"): a for a in listed if isinstance(a, dict)} if isinstance(listed, list) else None
        )
        results = []
        for record, event in zip(batch, events, strict=True):
            external_id = record.external_id or record.ref
            answer = answers.get(event["guid"]) if answers is not None else {"status": "ok"}
            if answer is None:
                results.append(PushResult.rejected(record.ref, "no answer for this record", transient=True))
            elif answer.get("status") == "ok":
                results.append(PushResult.delivered(record.ref, external_id))
            else:
                error, transient = str(answer.get("error")), bool(answer.get("retryable"))
                results.append(PushResult.rejected(record.ref, error, transient=transient))
        return results

    def pull(self, cursor: str | None, limit: int) -> PullPage:
        if not self._offers_lookup():
            return self._pull_plain(cursor, limit)
        return self._pull_records(cursor, limit)

    def _pull_records(self, cursor: str | None, limit: int) -> PullPage:
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

    def _plain_rows(self, since: str | None) -> list[_Row]:
        """Everything a plain server holds after ``since``, oldest first (it has no paging)."""
        answer = self._request("GET", "/", params={"since": since or ""})
        try:
            raw = codec.loads(answer.content)
        except ValueError:
            raise PermanentError(f"GET / answered something that is not JSON: {answer.text[:80]!r}") from None
        if not isinstance(raw, list):
            raise PermanentError(f"GET / answered {type(raw).__name__}, expected a JSON array")
        rows = [_row(i, r) for i, r in enumerate(raw)]
        rows.sort(key=lambda r: r.timestamp)  # canonical ms timestamps sort as instants; ties keep order
        return rows

    def _pull_plain(self, cursor: str | None, limit: int) -> PullPage:
        """The sweep of :meth:`_pull_records` over a plain server: each answer is cut to ``limit`` here,
        the rows of the boundary millisecond are told apart by event guid, and a page's events of one
        entity become one record (so a page may hold fewer records than rows)."""
        state = json.loads(cursor) if cursor else {}
        scan, seen, high = state.get("scan"), set(state.get("seen", [])), state.get("high")
        since = shift_timestamp(scan, -timedelta(milliseconds=1)) if scan else None
        rows = self._plain_rows(since)
        fresh = [
            r
            for r in rows
            if scan is None or r.timestamp > scan or (r.timestamp == scan and r.key not in seen)
        ]
        taken, has_more = fresh[:limit], len(fresh) > limit
        if taken:
            last = taken[-1].timestamp
            at_last = {r.key for r in taken if r.timestamp == last}
            seen = at_last | seen if last == scan else at_last
            scan, high = last, max(high, last) if high else last
        if has_more:
            next_state = {"scan": scan, "seen": sorted(seen), "high": high}
        else:
            lookback = timedelta(seconds=self.config.lookback_seconds)
            next_state = {
                "scan": shift_timestamp(high, -lookback) if high else None,
                "seen": [],
                "high": high,
            }
        return PullPage(records=_fold(taken), next_cursor=json.dumps(next_state), has_more=has_more)

    def lookup(self, refs: Sequence[str]) -> dict[str, str]:
        """Find what an unanswered request created. Every failure here is transient: a permanent one
        would dead-letter records that may well have arrived; stopping the run keeps them pending."""
        if not refs:
            return {}
        try:
            if not self._offers_lookup():
                wanted = set(refs)
                return {
                    r.entity: r.entity
                    for r in self._plain_rows(None)
                    if r.entity in wanted and r.kind in _UPSERTS
                }
            answer = self._request("GET", _LOOKUP_PATH, params={"refs": ",".join(refs)})
        except ConnectorError as exc:
            if exc.transient or exc.systemic:
                raise
            raise TransientError(
                f"lookup failed, so records that may have arrived are kept: {exc.message}"
            ) from None
        try:
            found = codec.loads(answer.content)
        except ValueError:
            found = answer.text[:80]
        if not isinstance(found, dict):
            raise TransientError(
                f"GET {_LOOKUP_PATH} answered {type(found).__name__}, expected an object of ref: id; "
                "records that may have arrived are kept"
            )
        return {str(k): str(v) for k, v in found.items()}

    def close(self) -> None:
        self._client.close()

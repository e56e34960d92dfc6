"""A mock external system speaking DataCollect's mock-sync-server protocol.

Protocol (reference datacollect.md §4.2, §7.14): ``POST /`` with ``{"data": [FormSubmission...]}`` stores
what it receives; ``GET /?since=TS`` returns the records changed strictly after ``TS`` as a JSON array. On
top of that, as any real system would have, the server keeps records keyed by the entity guid it was sent
(so a re-sent event updates, never duplicates), answers per event, and offers ``GET /records/by-ref`` so a
client can find what an unanswered request created. ``/_control/*`` lets a test or the demo change records
"on the remote side", read what arrived and script faults (an error status with or without ``Retry-After``,
a slow answer, a write committed before its answer fails, a record refused with a message).

Those additions are not part of the adapter protocol: the connector uses them only when it finds them, and
``connectors.mock.plain`` is a server without them.

Server timestamps have millisecond precision and may tie, exactly like a real backend's: clients must cope.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from connector_core import codec
from connector_core.events import (
    EventError,
    FormSubmission,
    normalize_timestamp,
    now_timestamp,
    parse_timestamp,
)
from connectors.mock.faults import DroppedConnection, Fault, FaultPlan, status_response

UPSERT_TYPES = {"create-individual", "update-individual", "create-group", "update-group"}


@dataclass
class MockRecord:
    id: str
    entity_guid: str | None
    entity_name: str | None
    data: dict[str, Any]
    timestamp: str
    version: int = 1
    deleted: bool = False

    def to_wire(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "entityGuid": self.entity_guid,
            "entityName": self.entity_name,
            "data": self.data,
            "timestamp": self.timestamp,
            "version": self.version,
            "deleted": self.deleted,
        }


@dataclass
class MockState:
    """Everything the mock system holds; one lock makes each request one transaction."""

    records: dict[str, MockRecord] = field(default_factory=dict)
    by_ref: dict[str, str] = field(default_factory=dict)
    next_id: int = 1
    events_received: int = 0
    writes_by_ref: dict[str, int] = field(default_factory=dict)
    creates_by_ref: dict[str, int] = field(default_factory=dict)
    types_received: dict[str, int] = field(default_factory=dict)


class MockStore:
    def __init__(self, data_file: str | Path | None = None):
        self.lock = threading.RLock()
        self.faults = FaultPlan()
        self.data_file = Path(data_file) if data_file else None
        self.state = MockState()
        if self.data_file and self.data_file.exists():
            self._load()

    # persistence -------------------------------------------------------------------------------
    def _load(self) -> None:
        assert self.data_file is not None
        raw = json.loads(self.data_file.read_text(encoding="utf-8"))
        self.state = MockState(
            records={k: MockRecord(**v) for k, v in raw["records"].items()},
            by_ref=raw["by_ref"],
            next_id=raw["next_id"],
            events_received=raw.get("events_received", 0),
            writes_by_ref=raw.get("writes_by_ref", {}),
            creates_by_ref=raw.get("creates_by_ref", {}),
            types_received=raw.get("types_received", {}),
        )

    def save(self) -> None:
        if self.data_file is None:
            return
        tmp = self.data_file.with_suffix(".tmp")
        payload = asdict(self.state)
        tmp.write_text(json.dumps(payload, separators=(",", ":")), encoding="utf-8")
        os.replace(tmp, self.data_file)

    # operations ----------------------------------------------------------------------------------
    def _stamp(self) -> str:
        return now_timestamp()

    def _new_id(self) -> str:
        rid = f"mock-{self.state.next_id}"
        self.state.next_id += 1
        return rid

    def receive(self, event: FormSubmission) -> MockRecord | None:
        st = self.state
        st.events_received += 1
        st.types_received[event.type] = st.types_received.get(event.type, 0) + 1
        ref = event.entity_guid
        st.writes_by_ref[ref] = st.writes_by_ref.get(ref, 0) + 1
        rid = st.by_ref.get(ref)
        record = st.records.get(rid) if rid else None
        if event.type == "remove-member":
            member_id = st.by_ref.get(str(event.data.get("memberId")))
            member = st.records.get(member_id) if member_id else None
            if member is not None and "parentExternalId" in member.data:
                member.data = {k: v for k, v in member.data.items() if k != "parentExternalId"}
                member.version += 1
                member.timestamp = self._stamp()
            return member
        if event.type == "delete-entity":
            if record is not None and not record.deleted:
                record.deleted = True
                record.version += 1
                record.timestamp = self._stamp()
            return record
        if event.type not in UPSERT_TYPES:
            return record
        data = {k: v for k, v in event.data.items() if k != "entityName"}
        entity_name = event.data.get("entityName")
        if record is None or event.type.startswith("create-"):
            # Like most registries, a create makes a new record every time it is sent: only the client's
            # lookup-before-retry keeps a lost answer from becoming a duplicate.
            record = MockRecord(
                id=self._new_id(),
                entity_guid=ref,
                entity_name=entity_name if isinstance(entity_name, str) else None,
                data=data,
                timestamp=self._stamp(),
            )
            st.records[record.id] = record
            st.by_ref.setdefault(ref, record.id)
            st.creates_by_ref[ref] = st.creates_by_ref.get(ref, 0) + 1
        else:
            record.data = {**record.data, **data}
            record.deleted = False
            record.version += 1
            record.timestamp = self._stamp()
        return record

    def changed_since(self, since: str | None, limit: int | None) -> list[MockRecord]:
        rows = list(self.state.records.values())
        if since:
            cut = parse_timestamp(since)
            rows = [r for r in rows if parse_timestamp(r.timestamp) > cut]
        rows.sort(key=lambda r: (r.timestamp, int(r.id.split("-")[1])))
        return rows[:limit] if limit else rows

    def remote_create(
        self, entity_name: str | None, data: dict[str, Any], timestamp: str | None = None
    ) -> MockRecord:
        """A record made on the remote side; a test may pin its timestamp to build clock ties."""
        record = MockRecord(
            id=self._new_id(),
            entity_guid=None,
            entity_name=entity_name,
            data=data,
            timestamp=normalize_timestamp(timestamp) if timestamp else self._stamp(),
        )
        self.state.records[record.id] = record
        return record

    def remote_update(self, rid: str, data: dict[str, Any]) -> MockRecord | None:
        record = self.state.records.get(rid)
        if record is None:
            return None
        record.data = {**record.data, **data}
        record.version += 1
        record.timestamp = self._stamp()
        return record


async def _fail(fault: Fault) -> Response:
    if fault.kind == "slow":
        await asyncio.sleep(fault.delay)
        return JSONResponse({"status": "error", "message": "injected fault: too slow"}, status_code=504)
    if fault.kind == "reset":
        return DroppedConnection()
    return status_response(fault)


def _json(payload: Any, status: int = 200) -> Response:
    """Starlette's JSONResponse encodes with the standard library; a batch answer is large enough to care."""
    return Response(codec.dumps_bytes(payload), status_code=status, media_type="application/json")


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"status": "error", "message": message}, status_code=status)


def create_app(data_file: str | Path | None = None) -> Starlette:
    """The mock system as an ASGI app; ``data_file`` keeps its records across restarts (the demo)."""
    store = MockStore(data_file)

    async def receive_events(request: Request) -> Response:
        try:
            body = codec.loads(await request.body())
        except ValueError:
            return _error(400, "body is not JSON")
        events = body.get("data") if isinstance(body, dict) else None
        if not isinstance(events, list):
            return _error(400, 'body must be {"data": [events]}')
        results = []
        if store.faults.latency:
            await asyncio.sleep(store.faults.latency)
        fault = store.faults.draw("push")
        if fault is not None and not fault.applies_work:
            return await _fail(fault)
        with store.lock:
            for index, raw in enumerate(events):
                guid = raw.get("guid") if isinstance(raw, dict) else None
                try:
                    event = FormSubmission.from_json(raw, where=f"data[{index}]")
                except EventError as exc:
                    results.append({"guid": guid, "status": "error", "error": str(exc)})
                    continue
                if store.faults.quota and index >= store.faults.quota:
                    message = f"over this request's quota of {store.faults.quota} records; send it again"
                    results.append(
                        {"guid": event.guid, "status": "error", "error": message, "retryable": True}
                    )
                    continue
                if event.entity_guid in store.faults.rejects:
                    message = store.faults.rejects[event.entity_guid]
                    results.append({"guid": event.guid, "status": "error", "error": message})
                    continue
                record = store.receive(event)
                results.append(
                    {
                        "guid": event.guid,
                        "entityGuid": event.entity_guid,
                        "id": record.id if record else None,
                        "status": "ok",
                    }
                )
            store.save()
        if fault is not None:
            return await _fail(fault)
        return _json({"status": "success", "results": results})

    async def list_changes(request: Request) -> Response:
        fault = store.faults.draw("pull")
        if fault is not None and not fault.applies_work:
            return await _fail(fault)
        since = request.query_params.get("since") or None
        limit_text = request.query_params.get("limit")
        try:
            limit = int(limit_text) if limit_text else None
            if since:
                parse_timestamp(since)
        except ValueError as exc:
            return _error(400, str(exc))
        with store.lock:
            rows = [r.to_wire() for r in store.changed_since(since, limit)]
        return _json(rows)

    async def by_ref(request: Request) -> Response:
        fault = store.faults.draw("lookup")
        if fault is not None and not fault.applies_work:
            return await _fail(fault)
        refs = [r for r in request.query_params.get("refs", "").split(",") if r]
        with store.lock:
            found = {ref: store.state.by_ref[ref] for ref in refs if ref in store.state.by_ref}
        return JSONResponse(found)

    async def control_records(request: Request) -> Response:
        if request.method == "GET":
            with store.lock:
                return JSONResponse([r.to_wire() for r in store.state.records.values()])
        body = await request.json()
        with store.lock:
            record = store.remote_create(
                body.get("entityName"), dict(body.get("data") or {}), body.get("timestamp")
            )
            store.save()
        return JSONResponse(record.to_wire(), status_code=201)

    async def control_record(request: Request) -> Response:
        rid = request.path_params["rid"]
        with store.lock:
            if request.method == "GET":
                record = store.state.records.get(rid)
            else:
                body = await request.json()
                record = store.remote_update(rid, dict(body.get("data") or {}))
                store.save()
        if record is None:
            return _error(404, f"no record {rid}")
        return JSONResponse(record.to_wire())

    async def control_faults(request: Request) -> Response:
        if request.method == "GET":
            return JSONResponse({"injected": store.faults.injected})
        store.faults = FaultPlan.from_json(await request.json())
        return JSONResponse({"status": "success"})

    async def control_stats(request: Request) -> Response:
        with store.lock:
            st = store.state
            return JSONResponse(
                {
                    "records": len(st.records),
                    "events_received": st.events_received,
                    "types_received": st.types_received,
                    "duplicate_creates": {r: n for r, n in st.creates_by_ref.items() if n > 1},
                }
            )

    async def control_reset(request: Request) -> Response:
        with store.lock:
            store.state = MockState()
            store.save()
        return JSONResponse({"status": "success"})

    routes = [
        Route("/", receive_events, methods=["POST"]),
        Route("/", list_changes, methods=["GET"]),
        Route("/records/by-ref", by_ref, methods=["GET"]),
        Route("/_control/records", control_records, methods=["GET", "POST"]),
        Route("/_control/records/{rid}", control_record, methods=["GET", "PATCH"]),
        Route("/_control/stats", control_stats, methods=["GET"]),
        Route("/_control/faults", control_faults, methods=["GET", "PUT"]),
        Route("/_control/reset", control_reset, methods=["POST"]),
    ]
    app = Starlette(routes=routes)
    app.state.store = store
    return app

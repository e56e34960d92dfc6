"""A sync server that speaks only the protocol of DataCollect's own ``MockSyncServerAdapter``.

DataCollect ships no mock sync server: the protocol is defined by its adapter alone (reference
datacollect.md §4.2, §7.14), and this fake offers exactly that and nothing more:

- ``POST /`` with ``{"data": [FormSubmission...]}`` stores the events and answers a plain
  ``{"status": "success"}``: no per-event results, no ids. Events are kept by their ``guid``, as
  DataCollect's own event store keeps them (the guid is its primary key): an event sent again is a no-op.
  An invalid event (DataCollect's ``INVALID_FORM`` rules) refuses the whole request with a 400 and stores
  nothing.
- ``GET /?since=TS`` answers a JSON array of the stored events whose timestamp is strictly after ``TS``
  (all of them for an empty or missing ``since``), oldest first, ties in no arrival order (a hash of the
  guid). There is no ``limit``: the adapter sends
  none, so one is ignored.
- Any other path is a 404, ``/records/by-ref`` included: nothing can be looked up by ref. With
  ``by_ref="list"`` that path answers a JSON list instead (a server observed doing so), which a client
  must not mistake for a lookup either.

``data_file`` keeps the events across restarts (``dcsync mock-server mock-plain --data FILE``).
``/_control/*`` is for tests and never used by a connector: it lets a test append events as another client
of the server would (a clerk's edit, a record made on the server side), read what arrived per entity, and
script the faults of :mod:`connectors.mock.faults` on ``push`` and ``pull``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from connector_core import codec
from connector_core.events import EventError, FormSubmission, now_timestamp, parse_timestamp
from connectors.mock.faults import DroppedConnection, Fault, FaultPlan, status_response

CREATE_TYPES = ("create-individual", "create-group")


@dataclass
class PlainStore:
    """The server's event store: events by guid, in the order they arrived."""

    lock: threading.RLock = field(default_factory=threading.RLock)
    events: dict[str, dict[str, Any]] = field(default_factory=dict)
    faults: FaultPlan = field(default_factory=FaultPlan)
    requests: int = 0
    resent: int = 0
    data_file: Path | None = None

    def load(self) -> None:
        if self.data_file is not None and self.data_file.exists():
            events = json.loads(self.data_file.read_text(encoding="utf-8"))
            self.events = {e["guid"]: e for e in events}

    def save(self) -> None:
        if self.data_file is None:
            return
        tmp = self.data_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(list(self.events.values()), separators=(",", ":")), encoding="utf-8")
        os.replace(tmp, self.data_file)

    def store(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            if event["guid"] in self.events:
                self.resent += 1  # DataCollect: a duplicate guid stores nothing and still answers success
                continue
            self.events[event["guid"]] = event

    def since(self, since: str | None) -> list[dict[str, Any]]:
        cut = parse_timestamp(since) if since else None
        rows = [e for e in self.events.values() if cut is None or parse_timestamp(e["timestamp"]) > cut]
        # Ties have no order (the adapter's own source, getEventsSince, promises none, §2.1 d): a hash of
        # the guid breaks them, so a client leaning on arrival order fails in tests, repeatably.
        rows.sort(
            key=lambda e: (parse_timestamp(e["timestamp"]), hashlib.sha256(e["guid"].encode()).hexdigest())
        )
        return rows

    def entities(self) -> dict[str, dict[str, Any]]:
        """Per entity guid: its events folded (shallow merge), the number of distinct create events
        (two means a create was repeated), and whether its last event deleted it."""
        out: dict[str, dict[str, Any]] = {}
        for event in self.since(None):
            entity = out.setdefault(
                event["entityGuid"], {"data": {}, "creates": 0, "events": 0, "deleted": False}
            )
            entity["events"] += 1
            if event["type"] in CREATE_TYPES:
                entity["creates"] += 1
            if event["type"] == "delete-entity":
                entity["deleted"] = True
            elif event["type"] in (*CREATE_TYPES, "update-individual", "update-group"):
                entity["data"] = {**entity["data"], **event["data"]}
                entity["deleted"] = False
        return out


async def _fail(fault: Fault) -> Response:
    if fault.kind == "slow":
        await asyncio.sleep(fault.delay)
        return JSONResponse({"status": "error", "message": "injected fault: too slow"}, status_code=504)
    if fault.kind == "reset":
        return DroppedConnection()
    return status_response(fault)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"status": "error", "message": message}, status_code=status)


def create_plain_app(
    data_file: str | Path | None = None, *, by_ref: Literal["missing", "list"] = "missing"
) -> Starlette:
    """The adapter-protocol server as an ASGI app; in memory unless ``data_file`` is given."""
    store = PlainStore(data_file=Path(data_file) if data_file else None)
    store.load()

    async def receive_events(request: Request) -> Response:
        try:
            body = codec.loads(await request.body())
        except ValueError:
            return _error(400, "body is not JSON")
        raw_events = body.get("data") if isinstance(body, dict) else None
        if not isinstance(raw_events, list):
            return _error(400, 'body must be {"data": [events]}')
        try:
            events = [
                FormSubmission.from_json(raw, where=f"data[{i}]").to_json()
                for i, raw in enumerate(raw_events)
            ]
        except EventError as exc:
            return _error(400, str(exc))
        if store.faults.latency:
            await asyncio.sleep(store.faults.latency)
        fault = store.faults.draw("push")
        if fault is not None and not fault.applies_work:
            return await _fail(fault)
        with store.lock:
            store.requests += 1
            store.store(events)
            store.save()
        if fault is not None:
            return await _fail(fault)
        return JSONResponse({"status": "success"})

    async def list_events(request: Request) -> Response:
        fault = store.faults.draw("pull")
        if fault is not None and not fault.applies_work:
            return await _fail(fault)
        since = request.query_params.get("since") or None
        try:
            if since:
                parse_timestamp(since)
        except ValueError as exc:
            return _error(400, str(exc))
        with store.lock:
            rows = store.since(since)
        return Response(codec.dumps_bytes(rows), media_type="application/json")

    async def list_by_ref(request: Request) -> Response:
        return JSONResponse([])

    async def control_events(request: Request) -> Response:
        """GET: every stored event; POST: an event from another client of the server (the timestamp
        defaults to now, the user to ``clerk``)."""
        if request.method == "GET":
            with store.lock:
                return JSONResponse(store.since(None))
        raw = {"userId": "clerk", "syncLevel": 1, "timestamp": now_timestamp(), **(await request.json())}
        try:
            event = FormSubmission.from_json(raw).to_json()
        except EventError as exc:
            return _error(400, str(exc))
        with store.lock:
            store.store([event])
            store.save()
        return JSONResponse(event, status_code=201)

    async def control_entities(request: Request) -> Response:
        with store.lock:
            return JSONResponse(store.entities())

    async def control_stats(request: Request) -> Response:
        with store.lock:
            return JSONResponse(
                {"events": len(store.events), "requests": store.requests, "resent": store.resent}
            )

    async def control_faults(request: Request) -> Response:
        if request.method == "GET":
            return JSONResponse({"injected": store.faults.injected})
        store.faults = FaultPlan.from_json(await request.json())
        return JSONResponse({"status": "success"})

    routes = [
        Route("/", receive_events, methods=["POST"]),
        Route("/", list_events, methods=["GET"]),
        Route("/_control/events", control_events, methods=["GET", "POST"]),
        Route("/_control/entities", control_entities, methods=["GET"]),
        Route("/_control/stats", control_stats, methods=["GET"]),
        Route("/_control/faults", control_faults, methods=["GET", "PUT"]),
    ]
    if by_ref == "list":
        routes.append(Route("/records/by-ref", list_by_ref, methods=["GET"]))
    app = Starlette(routes=routes)
    app.state.store = store
    return app

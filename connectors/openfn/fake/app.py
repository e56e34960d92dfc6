"""The fake Lightning's HTTP surface: webhooks, Collections, the REST API, and a ``/_fake`` admin API.

Wire behaviour follows reference openfn.md §1-§3 and the spec of §6; where versions of Lightning differ, the
fake takes the stricter one, so a client that passes here does not rely on leniency. In request order, as
Lightning's plug pipeline does it: the body parser (gzip, the 10 MB cap -> 413, malformed JSON -> 400, a
top-level array wrapped as ``{"_json": [...]}``), then the trigger and its credentials (unknown trigger or
wrong credentials -> 404, none sent -> 401), then the controller (disabled -> 403, a body no parser took ->
415, rate limit -> 429, hard quota -> 429/402, soft quota -> 200 with ``"error": "too_many_runs"``).

``/_fake/*`` is for tests and people trying connectors by hand; no real client ever calls it.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import hmac
import json
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from connectors.openfn.fake.faults import Fault, FaultPlan
from connectors.openfn.fake.store import (
    ITEM_VALUE_LIMIT,
    ROLES,
    SECURITY_MESSAGE,
    Collection,
    Dataclip,
    FakeLightning,
    ListFilter,
    Pat,
    QuotaExceeded,
    Run,
    RunOutcome,
    Trigger,
    WebhookRequest,
    WorkOrder,
    decode_cursor,
    encode_cursor,
    iso,
    parse_iso,
)

FOUND_MESSAGE = "OpenFn webhook trigger found. Make a POST request to execute this workflow."
LIST_PARAMS = frozenset(
    {
        "key",
        "cursor",
        "limit",
        "created_after",
        "created_before",
        "updated_after",
        "updated_before",
        "project_id",
    }
)
"""The Collections list whitelist (``project_id`` is the newest versions' disambiguation parameter)."""
REDACTED_HEADERS = ("x-api-key", "authorization", "cookie", "proxy-authorization")
STREAM_CHUNK = 100
"""Lightning streams list answers in chunks of 100 items."""


def _error(status: int, error: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": error, **extra}, status_code=status)


class DroppedConnection(Response):
    """Starts an answer, then abandons it: the client sees the connection close mid-response."""

    def __init__(self) -> None:
        super().__init__(content=b"")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"4096")],
            }
        )
        await send({"type": "http.response.body", "body": b'{"work_order_id": "', "more_body": True})
        raise ConnectionAbortedError("injected fault: connection dropped")


def _redacted(headers: dict[str, str]) -> dict[str, str]:
    out = {}
    for name, value in headers.items():
        if name.lower() in REDACTED_HEADERS:
            value = "Basic [REDACTED]" if value.lower().startswith("basic ") else "[REDACTED]"
        out[name.lower()] = value
    return out


def _credentials_match(trigger: Trigger, headers: dict[str, str]) -> bool:
    api_key = headers.get("x-api-key")
    authorization = headers.get("authorization")
    for method in trigger.auth:
        if (
            method.type == "api"
            and api_key is not None
            and method.key is not None
            and hmac.compare_digest(api_key.encode(), method.key.encode())
        ):
            return True
        if method.type == "basic" and authorization is not None and authorization == method.basic_header():
            return True
    return False


def _wo_json(order: WorkOrder, base: str) -> dict[str, Any]:
    return {
        "type": "work_orders",
        "id": order.id,
        "attributes": {
            "state": order.state,
            "last_activity": iso(order.last_activity),
            "inserted_at": iso(order.inserted_at),
            "updated_at": iso(order.updated_at),
        },
        "relationships": {"runs": {"data": [{"type": "runs", "id": r} for r in order.runs]}},
        "links": {"self": f"{base}/api/work_orders/{order.id}"},
    }


def _run_json(run: Run, base: str) -> dict[str, Any]:
    return {
        "type": "runs",
        "id": run.id,
        "attributes": {
            "state": run.state,
            "started_at": iso(run.started_at) if run.started_at else None,
            "finished_at": iso(run.finished_at) if run.finished_at else None,
            "priority": run.priority,
            "error_type": run.error_type,
        },
        "links": {"self": f"{base}/api/runs/{run.id}"},
    }


def create_app(
    data_file: str | Path | None = None, *, lightning: FakeLightning | None = None, seed: bool = True
) -> Starlette:
    """The fake as an ASGI app; ``app.state.lightning`` is the :class:`FakeLightning` behind it.

    ``seed`` installs the defaults of :mod:`connectors.openfn.fake.seed` (a project, two webhook triggers,
    a personal access token and a results collection) unless ``data_file`` already holds a saved instance.
    """
    from connectors.openfn.fake.seed import seed_defaults

    fake = lightning or FakeLightning(data_file=data_file)
    if not fake.load() and seed:
        seed_defaults(fake)
        fake.save()
    tasks: set[asyncio.Task[None]] = set()

    def later(coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def run_in_background(run_id: str, delay: float) -> None:
        if delay:
            fake.start_run(run_id)
            await asyncio.sleep(delay)
        fake.finish_run(run_id)

    async def pre_fault(fault: Fault | None, trigger_path: list[str] | None = None) -> Response | None:
        """Faults that act before the request is handled; returns the answer that replaces it, if any."""
        if fault is None:
            return None
        if fault.action == "status":
            body = fault.body if fault.body is not None else {"error": f"injected fault: HTTP {fault.status}"}
            if isinstance(body, str):
                return PlainTextResponse(body, status_code=fault.status, headers=fault.headers)
            return JSONResponse(body, status_code=fault.status, headers=fault.headers)
        if fault.action == "delay":
            await asyncio.sleep(fault.seconds)
        elif fault.action == "reset" and not fault.commit:
            return DroppedConnection()
        elif fault.action in ("flip_trigger", "rotate_api_key") and trigger_path:
            trigger = fake.resolve_trigger(trigger_path)
            if trigger is not None:
                with fake.lock:
                    if fault.action == "flip_trigger":
                        trigger.enabled = fault.enabled
                    else:
                        for method in trigger.auth:
                            if method.type == "api":
                                method.key = fake.ids.uuid()
        return None

    # -- webhooks ----------------------------------------------------------------------------------
    async def webhook(request: Request) -> Response:
        response = await handle_webhook(request)
        if request.method == "POST":
            fake.count_answer(response.status_code)
        return response

    async def handle_webhook(request: Request) -> Response:
        if request.method == "OPTIONS":
            return Response(status_code=204, headers={"access-control-allow-origin": "*"})
        segments = [s for s in request.path_params["path"].split("/") if s]
        fault = fake.faults.draw(request.method, request.url.path)
        replaced = await pre_fault(fault, segments)
        if replaced is not None:
            return replaced
        headers = {k.lower(): v for k, v in request.headers.items()}
        body: Any = None
        parsed = request.method != "POST"
        if request.method == "POST":
            raw = await request.body()
            if headers.get("content-encoding", "").lower() == "gzip":
                try:
                    raw = gzip.decompress(raw)
                except (OSError, EOFError, zlib.error):
                    return PlainTextResponse("Bad Request", status_code=400)
            media = headers.get("content-type", "").split(";")[0].strip().lower()
            if media == "application/json" or media.endswith("+json"):
                if len(raw) > fake.max_body_bytes:
                    return PlainTextResponse("Request Entity Too Large", status_code=413)
                try:
                    body = json.loads(raw) if raw.strip() else {}
                except (ValueError, UnicodeDecodeError):
                    return PlainTextResponse("Bad Request", status_code=400)
                if not isinstance(body, dict):
                    body = {"_json": body}
                parsed = True
            elif media == "application/x-www-form-urlencoded":
                if len(raw) > fake.max_body_bytes:
                    return PlainTextResponse("Request Entity Too Large", status_code=413)
                body = dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
                parsed = True
        trigger = fake.resolve_trigger(segments)
        if trigger is None:
            return _error(404, "Webhook not found")
        if trigger.auth and not _credentials_match(trigger, headers):
            if "x-api-key" in headers or "authorization" in headers:
                return _error(404, "Webhook not found")
            return _error(401, "Unauthorized")
        if not trigger.enabled:
            return _error(
                403,
                "trigger_disabled",
                message="Unable to process request, trigger is disabled. "
                "Enable it on OpenFn to allow requests.",
            )
        if request.method == "GET":
            return JSONResponse({"message": FOUND_MESSAGE})
        if not parsed:
            return _error(415, "Unsupported Media Type")
        if fake.rate_limited():
            return _error(429, "too_many_requests", message="Too many runs in the last minute")
        if fake.hard_limited():
            return _error(
                fake.hard_limit_status, "runs_hard_limit", message="You have reached your run limit."
            )
        refusal = fake.rejected_ref(body)
        if refusal is not None:
            return _error(422, "invalid_request", details={"body": [refusal]})
        fault = fake.faults.draw(request.method, request.url.path, "commit") or fault
        dataclip = Dataclip(
            body=body,
            request={
                "method": "POST",
                "path": segments,
                "query_params": dict(request.query_params),
                "headers": _redacted(headers),
            },
        )
        order, run = fake.create_work_order(
            trigger, dataclip, force_reject=fault is not None and fault.action == "too_many_runs"
        )
        fake.record_request(
            WebhookRequest(
                at=iso(fake.clock.now()),
                method="POST",
                path=request.url.path,
                headers=dataclip.request["headers"],
                body=body,
                status=200,
                work_order_id=order.id,
                batch_id=order.batch_id,
                rejected=run is None,
            )
        )
        response: Response
        if run is None:
            response = JSONResponse(
                {"work_order_id": order.id, "error": "too_many_runs"},
                headers={"x-meta-work-order-id": order.id},
            )
        elif trigger.webhook_reply == "after_completion":
            response = await sync_reply(trigger, order, run)
        else:
            response = JSONResponse(
                {"work_order_id": order.id},
                headers={"x-meta-work-order-id": order.id, "x-meta-run-id": run.id},
            )
            if fake.run_inline:
                fake.run_now(run.id)
            elif fake.auto_run:
                later(run_in_background(run.id, trigger.run_seconds))
        if fault is not None and fault.action == "timeout_after_commit":
            await asyncio.sleep(fault.seconds)
        if fault is not None and fault.action == "reset":
            return DroppedConnection()
        return response

    async def sync_reply(trigger: Trigger, order: WorkOrder, run: Run) -> Response:
        meta_headers = {"x-meta-work-order-id": order.id, "x-meta-run-id": run.id}
        if trigger.run_seconds > trigger.response_timeout:
            later(run_in_background(run.id, trigger.run_seconds))
            await asyncio.sleep(trigger.response_timeout)
            return JSONResponse(
                {
                    "error": "timeout",
                    "message": "Workflow did not complete within timeout period",
                    "work_order_id": order.id,
                },
                status_code=504,
                headers=meta_headers,
            )
        fake.start_run(run.id)
        if trigger.run_seconds:
            await asyncio.sleep(trigger.run_seconds)
        outcome = fake.finish_run(run.id) or RunOutcome(final_state=run.final_state, state=run.state)
        success = outcome.state == "success"
        data: Any = outcome.final_state if success else SECURITY_MESSAGE.format(state=outcome.state)
        status = (trigger.success_code if success else trigger.error_code) or 201
        custom = outcome.webhook_response
        if custom is not None:
            if isinstance(custom, dict) and isinstance(custom.get("body", {}), dict):
                status = int(custom.get("status") or status)
                if "body" in custom:
                    data = custom["body"]
            else:
                data = "webhook_response was malformed; expected an object with optional status and body"
        meta = {
            "work_order_id": order.id,
            "run_id": run.id,
            "state": run.state,
            "error_type": run.error_type,
            "inserted_at": iso(run.inserted_at),
            "started_at": iso(run.started_at) if run.started_at else None,
            "claimed_at": iso(run.started_at) if run.started_at else None,
            "finished_at": iso(run.finished_at) if run.finished_at else None,
        }
        if status in (204, 304):
            return Response(status_code=status, headers=meta_headers)
        return JSONResponse({"data": data, "meta": meta}, status_code=status, headers=meta_headers)

    # -- collections -------------------------------------------------------------------------------
    def bearer(request: Request) -> Pat | None:
        header = request.headers.get("authorization", "")
        if not header.lower().startswith("bearer "):
            return None
        return fake.pats.get(header[7:].strip())

    def resolve_collection(request: Request, pat: Pat, need: str = "viewer") -> Collection | Response:
        found = fake.find_collections(request.path_params["name"], request.query_params.get("project_id"))
        if not found:
            return _error(404, "Not Found")
        if len(found) > 1:
            return _error(
                409, "Multiple collections found with this name. Add ?project_id=<uuid> to disambiguate."
            )
        collection = found[0]
        role = pat.projects.get(collection.project_id)
        if role is None or ROLES.index(role) < ROLES.index(need):
            return _error(401, "Unauthorized")
        return collection

    def list_filter(request: Request) -> ListFilter | Response:
        params = request.query_params
        if set(params.keys()) - LIST_PARAMS:
            return _error(400, "Bad Request")
        flt = ListFilter(key=params.get("key"))
        try:
            if "limit" in params:
                flt.limit = int(params["limit"])
                if flt.limit < 1:
                    raise ValueError("limit must be positive")
            if "cursor" in params:
                flt.cursor = decode_cursor(params["cursor"])
            for name in ("created_after", "created_before", "updated_after", "updated_before"):
                if name in params:
                    setattr(flt, name, parse_iso(params[name]))
        except ValueError:
            return _error(400, "Bad Request")
        return flt

    async def collection_root(request: Request) -> Response:
        fault = fake.faults.draw(request.method, request.url.path)
        replaced = await pre_fault(fault)
        if replaced is not None:
            return replaced
        pat = bearer(request)
        if pat is None:
            return _error(401, "Unauthorized")
        if request.method == "POST":
            return await bulk_put(request, pat)
        flt = list_filter(request)
        if isinstance(flt, Response):
            return flt
        need = "admin" if request.method == "DELETE" else "viewer"
        collection = resolve_collection(request, pat, need)
        if isinstance(collection, Response):
            return collection
        if request.method == "DELETE":
            deleted = fake.delete_items(collection, flt)
            fake.save()
            return JSONResponse({"key": flt.key, "deleted": deleted, "error": None})
        with fake.lock:
            fake.list_requests += 1
            sequence = fake.list_requests
        if fake.on_collection_list is not None:
            fake.on_collection_list(sequence)
        items, last = fake.list_items(collection, flt)
        truncate = fault is not None and fault.action == "truncate_stream"
        return StreamingResponse(
            stream_items([i.to_wire() for i in items], encode_cursor(last) if last else None, truncate),
            media_type="application/json",
        )

    async def stream_items(
        items: list[dict[str, Any]], cursor: str | None, truncate: bool
    ) -> AsyncIterator[bytes]:
        yield b'{"items":['
        for start in range(0, len(items), STREAM_CHUNK):
            chunk = ",".join(
                json.dumps(i, separators=(",", ":")) for i in items[start : start + STREAM_CHUNK]
            )
            prefix = "," if start else ""
            if truncate:
                yield (prefix + chunk)[: max(1, len(chunk) // 2)].encode()
                return
            yield (prefix + chunk).encode()
            await asyncio.sleep(0)
        yield b'],"cursor":' + json.dumps(cursor).encode() + b"}"

    async def bulk_put(request: Request, pat: Pat) -> Response:
        collection = resolve_collection(request, pat, "editor")
        if isinstance(collection, Response):
            return collection
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            return PlainTextResponse("Bad Request", status_code=400)
        items = body.get("items") if isinstance(body, dict) else None
        if not isinstance(items, list):
            return _error(422, "Missing required field: items")
        pairs = []
        for item in items:
            if not isinstance(item, dict) or not isinstance(item.get("key"), str):
                return JSONResponse({"upserted": 0, "error": "Format error"})
            value = item.get("value")
            if not isinstance(value, str) or len(value) > ITEM_VALUE_LIMIT:
                return JSONResponse({"upserted": 0, "error": "Format error"})
            pairs.append((item["key"], value))
        if len({k for k, _ in pairs}) != len(pairs):
            return JSONResponse({"upserted": 0, "error": "Duplicate key found"}, status_code=422)
        try:
            count = fake.put_items(collection, pairs)
        except QuotaExceeded as exc:
            return JSONResponse({"upserted": 0, "error": str(exc)}, status_code=422)
        fake.save()
        return JSONResponse({"upserted": count, "error": None})

    async def collection_item(request: Request) -> Response:
        fault = fake.faults.draw(request.method, request.url.path)
        replaced = await pre_fault(fault)
        if replaced is not None:
            return replaced
        pat = bearer(request)
        if pat is None:
            return _error(401, "Unauthorized")
        need = "viewer" if request.method == "GET" else "editor"
        collection = resolve_collection(request, pat, need)
        if isinstance(collection, Response):
            return collection
        key = request.path_params["key"]
        if request.method == "GET":
            item = collection.items.get(key)
            return JSONResponse(item.to_wire()) if item else Response(status_code=204)
        if request.method == "DELETE":
            with fake.lock:
                gone = collection.items.pop(key, None)
            fake.save()
            if gone is None:
                return JSONResponse({"key": key, "deleted": 0, "error": "Item Not Found"})
            return JSONResponse({"key": key, "deleted": 1, "error": None})
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            return PlainTextResponse("Bad Request", status_code=400)
        if not isinstance(body, dict) or "value" not in body:
            return _error(422, "Missing required field: value")
        value = body["value"]
        if not isinstance(value, str) or len(value) > ITEM_VALUE_LIMIT:
            return JSONResponse({"upserted": 0, "error": "Format error"})
        try:
            fake.put_items(collection, [(key, value)])
        except QuotaExceeded as exc:
            return JSONResponse({"upserted": 0, "error": str(exc)}, status_code=422)
        fake.save()
        return JSONResponse({"upserted": 1, "error": None})

    # -- REST API ----------------------------------------------------------------------------------
    def base_url(request: Request) -> str:
        return str(request.base_url).rstrip("/")

    def api_guard(request: Request, project_id: str | None) -> Response | None:
        pat = bearer(request)
        if pat is None:
            return _error(401, "Unauthorized")
        if project_id is not None and project_id not in pat.projects:
            return _error(403, "Forbidden")
        return None

    async def api_work_order(request: Request) -> Response:
        fault = fake.faults.draw(request.method, request.url.path)
        replaced = await pre_fault(fault)
        if replaced is not None:
            return replaced
        if bearer(request) is None:
            return _error(401, "Unauthorized")
        order = fake.work_orders.get(request.path_params["id"])
        if order is None:
            return _error(404, "Not Found")
        denied = api_guard(request, order.project_id)
        if denied is not None:
            return denied
        return JSONResponse(
            {"data": _wo_json(order, base_url(request)), "included": [], "links": {"self": str(request.url)}}
        )

    async def api_run(request: Request) -> Response:
        if bearer(request) is None:
            return _error(401, "Unauthorized")
        run = fake.runs.get(request.path_params["id"])
        if run is None:
            return _error(404, "Not Found")
        denied = api_guard(request, fake.work_orders[run.work_order_id].project_id)
        if denied is not None:
            return denied
        return JSONResponse(
            {"data": _run_json(run, base_url(request)), "included": [], "links": {"self": str(request.url)}}
        )

    async def api_project_list(request: Request) -> Response:
        project_id = request.path_params["pid"]
        if bearer(request) is None:
            return _error(401, "Unauthorized")
        if project_id not in fake.projects:
            return _error(404, "Not Found")
        denied = api_guard(request, project_id)
        if denied is not None:
            return denied
        params = request.query_params
        try:
            page = int(params.get("page", "1"))
            page_size = int(params.get("page_size", "10"))
            bounds = {
                name: parse_iso(params[name])
                for name in ("inserted_after", "inserted_before", "updated_after", "updated_before")
                if name in params
            }
        except ValueError:
            return _error(400, "Bad Request")
        kind = request.path_params["kind"]
        if kind not in ("work_orders", "runs"):
            return _error(404, "Not Found")
        with fake.lock:
            if kind == "work_orders":
                rows: list[Any] = [o for o in fake.work_orders.values() if o.project_id == project_id]
            else:
                rows = [
                    r
                    for r in fake.runs.values()
                    if fake.work_orders[r.work_order_id].project_id == project_id
                ]
        rows = [r for r in rows if _within(r, bounds)]
        rows.sort(key=lambda r: r.inserted_at)
        pages = max(1, -(-len(rows) // page_size))
        chunk = rows[(page - 1) * page_size : page * page_size]
        base = base_url(request)
        render = _wo_json if kind == "work_orders" else _run_json
        url = f"{base}/api/projects/{project_id}/{kind}?page_size={page_size}&page="
        return JSONResponse(
            {
                "data": [render(r, base) for r in chunk],
                "included": [],
                "meta": {
                    "total_entries": len(rows),
                    "total_pages": pages,
                    "page_number": page,
                    "page_size": page_size,
                },
                "links": {
                    "self": str(request.url),
                    "first": f"{url}1",
                    "last": f"{url}{pages}",
                    "next": f"{url}{page + 1}" if page < pages else None,
                    "prev": f"{url}{page - 1}" if page > 1 else None,
                },
            }
        )

    # -- /_fake admin ------------------------------------------------------------------------------
    async def admin(request: Request) -> Response:
        what = request.path_params["what"]
        handler = ADMIN.get((request.method, what))
        if handler is None:
            return _error(404, "Not Found")
        body = await request.json() if request.method in ("POST", "PUT") and await request.body() else {}
        try:
            result = handler(body if isinstance(body, dict) else {}, request)
        except (KeyError, TypeError, ValueError) as exc:
            return _error(400, str(exc))
        fake.save()
        return JSONResponse(result)

    def admin_requests(body: dict[str, Any], request: Request) -> Any:
        with fake.lock:
            return [asdict(r) for r in fake.requests]

    def admin_work_orders(body: dict[str, Any], request: Request) -> Any:
        base = base_url(request)
        with fake.lock:
            return [
                {**_wo_json(o, base), "batch_id": o.batch_id, "body": o.dataclip.body}
                for o in fake.work_orders.values()
            ]

    def admin_batches(body: dict[str, Any], request: Request) -> Any:
        accepted = fake.accepted_batches()
        return {
            "accepted": {b: len(w) for b, w in accepted.items()},
            "duplicates": fake.duplicate_batches(),
        }

    def admin_set_faults(body: dict[str, Any], request: Request) -> Any:
        fake.faults = FaultPlan.from_json(body)
        return {"status": "ok"}

    def admin_clock(body: dict[str, Any], request: Request) -> Any:
        if body.get("freeze"):
            fake.clock.freeze(body["freeze"] if isinstance(body["freeze"], str) else None)
        if body.get("advance"):
            fake.clock.advance(float(body["advance"]))
        if body.get("unfreeze"):
            fake.clock.unfreeze()
        return {"now": iso(fake.clock.now())}

    def admin_limits(body: dict[str, Any], request: Request) -> Any:
        with fake.lock:
            for name in (
                "max_body_bytes",
                "soft_run_quota",
                "hard_run_quota",
                "hard_limit_status",
                "collection_byte_quota",
                "auto_run",
            ):
                if name in body:
                    setattr(fake, name, body[name])
            if "rate_limit" in body:
                limit = body["rate_limit"]
                fake.rate_limit = (int(limit[0]), float(limit[1])) if limit else None
        return {"status": "ok"}

    def admin_trigger(body: dict[str, Any], request: Request) -> Any:
        trigger = fake.add_trigger(**body)
        return asdict(trigger) | {"auth": [m.type for m in trigger.auth]}

    def admin_pat(body: dict[str, Any], request: Request) -> Any:
        return {"token_user": fake.add_pat(**body).user}

    def admin_collection(body: dict[str, Any], request: Request) -> Any:
        collection = fake.add_collection(body["project_id"], body["name"])
        return {"name": collection.name, "project_id": collection.project_id}

    def admin_item(body: dict[str, Any], request: Request) -> Any:
        item = fake.put_json(body["collection"], body["key"], body["value"], body.get("project_id"))
        return item.to_wire()

    def admin_tick(body: dict[str, Any], request: Request) -> Any:
        return {"ran": fake.tick()}

    def admin_reset(body: dict[str, Any], request: Request) -> Any:
        from connectors.openfn.fake.seed import seed_defaults

        fake.reset()
        if body.get("seed", True):
            seed_defaults(fake)
        return {"status": "ok"}

    ADMIN: dict[tuple[str, str], Callable[[dict[str, Any], Request], Any]] = {
        ("GET", "requests"): admin_requests,
        ("GET", "work_orders"): admin_work_orders,
        ("GET", "batches"): admin_batches,
        ("GET", "faults"): lambda body, request: fake.faults.to_json(),
        ("PUT", "faults"): admin_set_faults,
        ("PUT", "clock"): admin_clock,
        ("PUT", "limits"): admin_limits,
        ("POST", "triggers"): admin_trigger,
        ("POST", "pats"): admin_pat,
        ("POST", "collections"): admin_collection,
        ("POST", "items"): admin_item,
        ("POST", "tick"): admin_tick,
        ("POST", "reset"): admin_reset,
    }

    routes = [
        Route("/i/{path:path}", webhook, methods=["GET", "POST", "OPTIONS"]),
        Route("/collections/{name}", collection_root, methods=["GET", "POST", "DELETE"]),
        Route("/collections/{name}/{key}", collection_item, methods=["GET", "PUT", "DELETE"]),
        Route("/api/work_orders/{id}", api_work_order, methods=["GET"]),
        Route("/api/runs/{id}", api_run, methods=["GET"]),
        Route("/api/projects/{pid}/{kind:str}", api_project_list, methods=["GET"]),
        Route("/_fake/{what}", admin, methods=["GET", "POST", "PUT"]),
    ]
    app = Starlette(routes=routes)
    app.state.lightning = fake
    return app


def _within(row: Any, bounds: dict[str, Any]) -> bool:
    for name, moment in bounds.items():
        value = (
            row.inserted_at if name.startswith("inserted") else getattr(row, "updated_at", row.inserted_at)
        )
        if name.endswith("_after") and value < moment:
            return False
        if name.endswith("_before") and value >= moment:
            return False
    return True


def basic_auth(username: str, password: str) -> str:
    """The ``Authorization`` header value for HTTP Basic (a helper for tests and docs)."""
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()

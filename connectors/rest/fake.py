"""A small JSON-over-HTTP registry for the REST connector's tests, the docs and ``dcsync mock-server rest``.

It behaves like the plain REST APIs the connector is meant for, in whichever style a test picks:

- auth: ``none``, ``api_key`` (``X-API-Key``), ``bearer``, ``basic`` or ``oauth2`` (client credentials at
  ``POST /oauth/token``; tokens expire after ``token_ttl`` seconds and can be revoked from ``/_control``);
- pagination of ``GET /api/records``: ``page``, ``offset``, ``cursor`` (``next_cursor`` in the body) or
  ``link`` (a ``Link: <...>; rel="next"`` header), pages capped at ``max_page_size``;
- ``updated_since`` is ``>=`` on millisecond timestamps that may tie, ordered oldest first;
- a create always makes a new record, as most registries do: only the client's lookup by
  ``external_ref`` keeps a lost answer from becoming a duplicate.

Records look like ``{"id", "external_ref", "type", "parent_id", "updated_at", "version", "deleted",
...fields}``; answers wrap them as ``{"data": ...}``; errors are ``{"error": {"code", "message"}}``.

``/_control/*`` (no auth) reads and edits records "on the remote side", scripts faults (``fail_all``: 500 to
every request; ``refuse_credentials``: 401 to every credential; an error status
before or after the write is committed, a dropped connection, for writes, reads or the token endpoint),
refuses refs with a validation message, revokes tokens and reports counts.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, urlencode

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from connector_core.events import now_timestamp, parse_timestamp

AuthMode = Literal["none", "api_key", "bearer", "basic", "oauth2"]
PaginationMode = Literal["page", "offset", "cursor", "link"]
Target = Literal["write", "read", "token", "any"]
SERVER_OWNED = ("id", "updated_at", "version", "deleted")


@dataclass
class FakeRestOptions:
    """How this fake behaves; the credentials are the ones it accepts."""

    auth: AuthMode = "oauth2"
    pagination: PaginationMode = "cursor"
    max_page_size: int = 100
    client_id: str = "dcsync"
    client_secret: str = "fake-client-secret"
    api_key: str = "fake-api-key"
    bearer_token: str = "fake-bearer-token"
    username: str = "dcsync"
    password: str = "fake-password"
    token_ttl: float = 3600.0


@dataclass
class Fault:
    kind: Literal["status", "commit_then_fail", "reset"] = "status"
    status: int = 503
    retry_after: float | None = None
    on: Target = "write"


@dataclass
class FakeRestState:
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    next_id: int = 1
    creates_by_ref: dict[str, int] = field(default_factory=dict)


class FakeRestStore:
    """The records, the faults, the tokens; one lock makes each request one transaction."""

    def __init__(self, options: FakeRestOptions, data_file: str | Path | None = None) -> None:
        self.options = options
        self.lock = threading.RLock()
        self.data_file = Path(data_file) if data_file else None
        self.state = FakeRestState()
        self.script: list[Fault] = []
        self.rejects: dict[str, str] = {}
        self.fail_all = False  # every request answered 500
        self.refuse_credentials = False  # every credential refused, as after a key is revoked
        self.tokens: dict[str, float] = {}  # token -> expiry (monotonic)
        self.tokens_issued = 0
        self.requests: list[tuple[float, str, str]] = []  # (monotonic time, method, path)
        self.unauthorized = 0
        if self.data_file is not None and self.data_file.exists():
            raw = json.loads(self.data_file.read_text(encoding="utf-8"))
            self.state = FakeRestState(raw["records"], raw["next_id"], raw.get("creates_by_ref", {}))

    def save(self) -> None:
        if self.data_file is None:
            return
        tmp = self.data_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state.__dict__, separators=(",", ":")), encoding="utf-8")
        os.replace(tmp, self.data_file)

    def draw(self, target: str) -> Fault | None:
        with self.lock:
            for index, fault in enumerate(self.script):
                if fault.on in ("any", target):
                    del self.script[index]
                    return fault
        return None

    def create(self, fields: dict[str, Any], ref: str | None) -> dict[str, Any]:
        st = self.state
        record = {k: v for k, v in fields.items() if k not in SERVER_OWNED}
        record.update(
            id=f"rec-{st.next_id}", updated_at=now_timestamp(), version=1, deleted=False, external_ref=ref
        )
        st.next_id += 1
        st.records[record["id"]] = record
        if ref:
            st.creates_by_ref[ref] = st.creates_by_ref.get(ref, 0) + 1
        return record

    def update(self, rid: str, fields: dict[str, Any]) -> dict[str, Any] | None:
        record = self.state.records.get(rid)
        if record is None:
            return None
        record.update({k: v for k, v in fields.items() if k not in SERVER_OWNED})
        record["version"] += 1
        record["updated_at"] = now_timestamp()
        return record

    def listing(self, since: str | None, ref: list[str] | None) -> list[dict[str, Any]]:
        rows = list(self.state.records.values())
        if ref is not None:
            rows = [r for r in rows if r.get("external_ref") in ref]
        if since:
            cut = parse_timestamp(since)
            rows = [r for r in rows if parse_timestamp(r["updated_at"]) >= cut]
        return sorted(rows, key=lambda r: (r["updated_at"], int(r["id"].split("-")[1])))


class _DroppedConnection(Response):
    """Starts an answer and abandons it: the client sees the connection reset mid-body."""

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
        await send({"type": "http.response.body", "body": b'{"data": {"id', "more_body": True})
        raise ConnectionAbortedError("injected fault: connection dropped")


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def _fail(fault: Fault) -> Response:
    if fault.kind == "reset":
        return _DroppedConnection()
    headers = {"Retry-After": str(int(fault.retry_after))} if fault.retry_after is not None else None
    return _error(fault.status, "unavailable", f"injected fault: HTTP {fault.status}", headers)


def create_app(options: FakeRestOptions | None = None, data_file: str | Path | None = None) -> Starlette:
    """The fake registry as an ASGI app; ``app.state.store`` is its :class:`FakeRestStore`."""
    opts = options or FakeRestOptions()
    store = FakeRestStore(opts, data_file)

    def authorized(request: Request) -> bool:
        header = request.headers.get("authorization", "")
        if opts.auth == "none":
            return True
        if opts.auth == "api_key":
            return secrets.compare_digest(request.headers.get("x-api-key", ""), opts.api_key)
        if opts.auth == "bearer":
            return secrets.compare_digest(header, f"Bearer {opts.bearer_token}")
        if opts.auth == "basic":
            expected = base64.b64encode(f"{opts.username}:{opts.password}".encode()).decode()
            return secrets.compare_digest(header, f"Basic {expected}")
        token = header.removeprefix("Bearer ")
        with store.lock:
            expiry = store.tokens.get(token)
        return expiry is not None and time.monotonic() < expiry

    def guard(request: Request) -> Response | None:
        with store.lock:
            store.requests.append((time.monotonic(), request.method, request.url.path))
            fail_all, refuse = store.fail_all, store.refuse_credentials
        if fail_all:
            return _error(500, "internal", "injected fault: internal server error")
        if authorized(request) and not refuse:
            return None
        with store.lock:
            store.unauthorized += 1
        return _error(401, "unauthorized", "missing, invalid or expired credentials")

    async def token(request: Request) -> Response:
        fault = store.draw("token")
        if fault is not None:
            return _fail(fault)
        with store.lock:
            fail_all, refuse = store.fail_all, store.refuse_credentials
        if fail_all:
            return _error(500, "internal", "injected fault: internal server error")
        if refuse:
            return JSONResponse(
                {"error": "invalid_client", "error_description": "unknown client or wrong secret"},
                status_code=401,
            )
        if opts.auth != "oauth2":
            return _error(404, "not_found", "this fake does not issue tokens")
        # application/x-www-form-urlencoded, read by hand: starlette's form parser needs python-multipart
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode("utf-8", "replace")).items()}
        client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
        header = request.headers.get("authorization", "")
        if header.startswith("Basic "):
            client_id, _, secret = base64.b64decode(header[6:]).decode().partition(":")
        if form.get("grant_type") != "client_credentials":
            return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
        if client_id != opts.client_id or not secrets.compare_digest(secret, opts.client_secret):
            return JSONResponse(
                {"error": "invalid_client", "error_description": "unknown client or wrong secret"},
                status_code=401,
            )
        issued = secrets.token_urlsafe(16)
        with store.lock:
            store.tokens[issued] = time.monotonic() + opts.token_ttl
            store.tokens_issued += 1
        return JSONResponse({"access_token": issued, "token_type": "Bearer", "expires_in": opts.token_ttl})

    async def health(request: Request) -> Response:
        return guard(request) or JSONResponse({"status": "ok"})

    async def list_records(request: Request) -> Response:
        refused = guard(request)
        if refused is not None:
            return refused
        fault = store.draw("read")
        if fault is not None:
            return _fail(fault)
        query = request.query_params
        refs = query.get("external_ref")
        try:
            size = min(int(query.get("limit") or opts.max_page_size), opts.max_page_size)
            since = query.get("updated_since") or None
            if since:
                parse_timestamp(since)
            with store.lock:
                rows = store.listing(since, refs.split(",") if refs is not None else None)
            start = _start(opts.pagination, query, size)
        except ValueError as exc:
            return _error(400, "bad_request", str(exc))
        page = rows[start : start + size]
        more = start + size < len(rows)
        body: dict[str, Any] = {"data": page}
        headers: dict[str, str] = {}
        if opts.pagination == "cursor":
            body["next_cursor"] = _encode_cursor(start + size) if more else None
        elif opts.pagination == "link" and more:
            params = {k: v for k, v in query.items() if k != "after"}
            params["after"] = _encode_cursor(start + size)
            headers["Link"] = f'<{request.url.path}?{urlencode(params)}>; rel="next"'
        return JSONResponse(body, headers=headers)

    async def write(request: Request) -> Response:
        refused = guard(request)
        if refused is not None:
            return refused
        try:
            fields = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _error(400, "bad_request", "the body is not JSON")
        if not isinstance(fields, dict):
            return _error(400, "bad_request", "the body must be a JSON object")
        rid = request.path_params.get("rid")
        fault = store.draw("write")
        if fault is not None and fault.kind == "status":
            return _fail(fault)
        with store.lock:
            existing = store.state.records.get(rid) if rid else None
            ref = fields.get("external_ref") or (existing or {}).get("external_ref")
            if ref in store.rejects:
                return _error(422, "invalid", store.rejects[ref])
            if request.method == "POST":
                record: dict[str, Any] | None = store.create(fields, ref)
                status = 201
            elif request.method == "DELETE":
                record = store.update(rid or "", {})
                if record is not None:
                    record["deleted"] = True
                status = 200
            else:
                record = store.update(rid or "", fields)
                status = 200
            store.save()
        if fault is not None:
            return _fail(fault)  # committed, but the answer is lost
        if record is None:
            return _error(404, "not_found", f"no record {rid}")
        return JSONResponse({"data": record}, status_code=status)

    # -- control ----------------------------------------------------------------------------------------

    async def control_records(request: Request) -> Response:
        if request.method == "GET":
            with store.lock:
                return JSONResponse(list(store.state.records.values()))
        body = await request.json()
        with store.lock:
            record = store.create({**(body.get("data") or {}), "type": body.get("type")}, None)
            store.save()
        return JSONResponse(record, status_code=201)

    async def control_record(request: Request) -> Response:
        body = await request.json()
        with store.lock:
            record = store.update(request.path_params["rid"], dict(body.get("data") or {}))
            store.save()
        if record is None:
            return _error(404, "not_found", "no such record")
        return JSONResponse(record)

    async def control_faults(request: Request) -> Response:
        body = await request.json()
        with store.lock:
            store.script = [Fault(**f) for f in body.get("script", [])]
            store.rejects = dict(body.get("reject", {}))
            store.fail_all = bool(body.get("fail_all", False))
            store.refuse_credentials = bool(body.get("refuse_credentials", False))
        return JSONResponse({"status": "ok"})

    async def control_revoke(request: Request) -> Response:
        with store.lock:
            store.tokens.clear()
        return JSONResponse({"status": "ok"})

    async def control_stats(request: Request) -> Response:
        with store.lock:
            return JSONResponse(
                {
                    "records": len(store.state.records),
                    "creates_by_ref": store.state.creates_by_ref,
                    "duplicate_creates": {r: n for r, n in store.state.creates_by_ref.items() if n > 1},
                    "tokens_issued": store.tokens_issued,
                    "unauthorized": store.unauthorized,
                    "requests": len(store.requests),
                }
            )

    async def control_reset(request: Request) -> Response:
        with store.lock:
            store.state = FakeRestState()
            store.script, store.rejects = [], {}
            store.save()
        return JSONResponse({"status": "ok"})

    routes = [
        Route("/oauth/token", token, methods=["POST"]),
        Route("/api/health", health, methods=["GET"]),
        Route("/api/records", list_records, methods=["GET"]),
        Route("/api/records", write, methods=["POST"]),
        Route("/api/records/{rid}", write, methods=["PATCH", "PUT", "DELETE"]),
        Route("/_control/records", control_records, methods=["GET", "POST"]),
        Route("/_control/records/{rid}", control_record, methods=["PATCH"]),
        Route("/_control/faults", control_faults, methods=["PUT"]),
        Route("/_control/revoke", control_revoke, methods=["POST"]),
        Route("/_control/stats", control_stats, methods=["GET"]),
        Route("/_control/reset", control_reset, methods=["POST"]),
    ]
    app = Starlette(routes=routes)
    app.state.store = store
    return app


def _encode_cursor(position: int) -> str:
    return base64.urlsafe_b64encode(f"pos:{position}".encode()).decode()


def _decode_cursor(text: str) -> int:
    try:
        kind, _, value = base64.urlsafe_b64decode(text.encode()).decode().partition(":")
        if kind != "pos":
            raise ValueError
        return int(value)
    except (ValueError, UnicodeDecodeError):
        raise ValueError(f"invalid cursor {text!r}") from None


def _start(mode: PaginationMode, query: Any, size: int) -> int:
    """Where a page starts, from whichever parameter this fake's pagination style uses."""
    if mode == "page":
        page = int(query.get("page") or 1)
        if page < 1:
            raise ValueError("page starts at 1")
        return (page - 1) * size
    if mode == "offset":
        return max(0, int(query.get("offset") or 0))
    if mode == "cursor":
        return _decode_cursor(query["cursor"]) if query.get("cursor") else 0
    return _decode_cursor(query["after"]) if query.get("after") else 0


def options_from_env() -> FakeRestOptions:
    """``DCSYNC_FAKE_REST_AUTH`` and ``DCSYNC_FAKE_REST_PAGINATION`` pick the style of a standalone fake."""
    options = FakeRestOptions()
    auth = os.environ.get("DCSYNC_FAKE_REST_AUTH")
    pagination = os.environ.get("DCSYNC_FAKE_REST_PAGINATION")
    if auth in ("none", "api_key", "bearer", "basic", "oauth2"):
        options.auth = auth  # type: ignore[assignment]
    if pagination in ("page", "offset", "cursor", "link"):
        options.pagination = pagination  # type: ignore[assignment]
    return options


def connector_settings(url: str, options: FakeRestOptions | None = None) -> dict[str, Any]:
    """The REST connector's settings for this fake at ``url``: the same thing as YAML in the docs.

    Tests build a connector from this; ``docs/connectors/rest.md`` shows it as dcsync.yaml.
    """
    opts = options or FakeRestOptions()
    auth: dict[str, Any] = {"type": "none"}
    if opts.auth == "api_key":
        auth = {"type": "api_key", "header": "X-API-Key", "value": opts.api_key}
    elif opts.auth == "bearer":
        auth = {"type": "bearer", "token": opts.bearer_token}
    elif opts.auth == "basic":
        auth = {"type": "basic", "username": opts.username, "password": opts.password}
    elif opts.auth == "oauth2":
        auth = {
            "type": "oauth2_client_credentials",
            "token_url": "/oauth/token",
            "client_id": opts.client_id,
            "client_secret": opts.client_secret,
            "scope": "records",
        }
    styles: dict[str, dict[str, Any]] = {
        "page": {"type": "page", "param": "page", "start": 1},
        "offset": {"type": "offset", "param": "offset"},
        "cursor": {"type": "cursor", "param": "cursor", "next_path": "$.next_cursor"},
        "link": {"type": "link"},
    }
    pagination = styles[opts.pagination]
    return {
        "base_url": url,
        "timeout": 5,
        "auth": auth,
        "endpoints": {
            "check": {"method": "GET", "path": "/api/health"},
            "create": {"method": "POST", "path": "/api/records", "id_path": "$.data.id"},
            "update": {"method": "PATCH", "path": "/api/records/{external_id}"},
            "delete": {"method": "DELETE", "path": "/api/records/{external_id}"},
            "lookup": {
                "method": "GET",
                "path": "/api/records",
                "params": {"external_ref": "{refs}"},
                "records": "$.data",
            },
            "list": {
                "method": "GET",
                "path": "/api/records",
                "records": "$.data",
                "since_param": "updated_since",
                "page_size_param": "limit",
                "max_page_size": opts.max_page_size,
                "pagination": pagination,
            },
        },
        "record": {
            "id": "$.id",
            "ref": "$.external_ref",
            "entity_name": "$.type",
            "parent_id": "$.parent_id",
            "updated_at": "$.updated_at",
            "version": "$.version",
            "deleted": "$.deleted",
        },
        "error_message": "$.error.message",
    }

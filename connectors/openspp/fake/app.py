"""The fake OpenSPP 17 server over HTTP: Odoo's JSON-RPC envelope, its faults, and a test-control API.

The envelope follows what a real Odoo 17 answered (``odoo-observed.md`` §3.2): application errors are
HTTP 200 with ``error.code`` 200 and ``data.{name, debug, message, arguments, context}``; a body that is
not JSON gets a plain-text 400; a non-JSON content type gets an HTML 400; ``params`` keys other than
``service``/``method``/``args`` are silently dropped (so ``params.kwargs`` does nothing, as on Odoo) but
recorded for tests. ``/__fake__/*`` is the control API described in ``openspp.md`` §6.1.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import traceback
from datetime import UTC, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any, Literal

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from connectors.openspp.fake.costs import CostModel
from connectors.openspp.fake.errors import (
    ACCESS_DENIED,
    RpcError,
    session_expired,
)
from connectors.openspp.fake.faults import PRE_EXECUTION, Fault, FaultSpec, call_values
from connectors.openspp.fake.models import Flavour
from connectors.openspp.fake.server import FakeOpenSpp
from connectors.openspp.odoo_formats import format_datetime_us, parse_server_datetime

log = logging.getLogger("connectors.openspp.fake")

JSON_TYPES = ("application/json", "application/json-rpc")
_INCOMPLETE = "ASGI callable returned without completing response."


class _DropIncompleteResponseNoise(logging.Filter):
    """``reset_connection`` aborts responses on purpose; uvicorn would log each one as an error."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != _INCOMPLETE


_noise_filter = _DropIncompleteResponseNoise()


class _ResetResponse(Response):
    """Headers promising a body that never comes: the client sees the connection die mid-response."""

    def __init__(self) -> None:
        super().__init__(status_code=200)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"4096")],
            }
        )


def _html_error(status: int, title: str, text: str) -> HTMLResponse:
    body = (
        f"<!doctype html>\n<html lang=en>\n<title>{status} {title}</title>\n<h1>{title}</h1>\n<p>{text}</p>\n"
    )
    return HTMLResponse(body, status_code=status)


def _proxy_error(status: int) -> HTMLResponse:
    titles = {
        401: "Authorization Required",
        403: "Forbidden",
        500: "Internal Server Error",
        502: "Bad Gateway",
        503: "Service Temporarily Unavailable",
        504: "Gateway Time-out",
    }
    title = titles.get(status, "Error")
    body = (
        f"<html>\r\n<head><title>{status} {title}</title></head>\r\n<body>\r\n"
        f"<center><h1>{status} {title}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
    )
    return HTMLResponse(body, status_code=status)


def error_envelope(rid: Any, exc: RpcError) -> dict[str, Any]:
    debug = (
        "Traceback (most recent call last):\n"
        '  File "/opt/odoo/odoo/http.py", line 1765, in _serve_db\n'
        "    return service_model.retrying(self._serve_ir_http, self.env)\n"
        '  File "/opt/odoo/odoo/service/model.py", line 133, in retrying\n'
        "    result = func()\n"
        f"{exc.name}: {exc.message}\n"
    )
    return {
        "jsonrpc": "2.0",
        "id": rid,
        "error": {
            "code": exc.code,
            "message": exc.http_message,
            "data": {
                "name": exc.name,
                "debug": debug,
                "message": exc.message,
                "arguments": [exc.message],
                "context": {},
            },
        },
    }


def _internal_error(exc: BaseException) -> RpcError:
    log.error("unexpected error inside the fake server\n%s", traceback.format_exc())
    return RpcError(f"builtins.{type(exc).__name__}", str(exc))


class FakeApp:
    """Request handlers bound to one :class:`FakeOpenSpp`."""

    def __init__(self, fake: FakeOpenSpp, costs: CostModel | None = None):
        self.fake = fake
        self.costs = costs or CostModel.off()  # real-Odoo call costs (fake/costs.py); off unless asked
        self.sessions: dict[str, int] = {}

    # -- helpers ---------------------------------------------------------------------------------
    def _date_header(self) -> dict[str, str]:
        now = self.fake.clock.peek() + timedelta(seconds=self.fake.clock_skew)
        return {"Date": format_datetime(now.replace(tzinfo=UTC), usegmt=True)}

    def _json(self, payload: Any, status: int = 200) -> Response:
        body = json.dumps(payload, default=str).encode()
        return Response(body, status_code=status, media_type="application/json", headers=self._date_header())

    async def _read_json(self, request: Request) -> tuple[Any, Response | None]:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype not in JSON_TYPES:
            path = request.url.path
            return None, _html_error(
                400,
                "Bad Request",
                f"Request inferred type is compatible with [&#39;http&#39;] but &#39;{path}&#39; "
                "is type=&#39;json&#39;.",
            )
        body = await request.body()
        try:
            return json.loads(body), None
        except ValueError:
            return None, PlainTextResponse("Invalid JSON data", status_code=400)

    # -- /jsonrpc --------------------------------------------------------------------------------
    async def jsonrpc(self, request: Request) -> Response:
        payload, failure = await self._read_json(request)
        if failure is not None:
            return failure
        fake = self.fake
        rid = payload.get("id") if isinstance(payload, dict) else None
        if not isinstance(payload, dict):
            return self._json(
                error_envelope(
                    None,
                    RpcError(
                        "builtins.AttributeError", f"'{type(payload).__name__}' object has no attribute 'get'"
                    ),
                )
            )
        params = payload.get("params", {})
        if not isinstance(params, dict):
            return self._json(
                error_envelope(
                    rid,
                    RpcError(
                        "builtins.ValueError",
                        "dictionary update sequence element #0 has length 1; 2 is required",
                    ),
                )
            )
        ignored = sorted(k for k in params if k not in ("service", "method", "args"))
        if "kwargs" in ignored:
            fake.flag("params_kwargs", detail="kwargs sent in params are ignored by Odoo")
        missing = [k for k in ("service", "method", "args") if k not in params]
        service, method, args = params.get("service"), params.get("method"), params.get("args")
        model = obj_method = None
        if service == "object" and isinstance(args, list) and len(args) >= 5:
            model, obj_method = args[3], args[4]
        entry: dict[str, Any] = {
            "seq": fake.calls,
            "at": format_datetime_us(fake.clock.peek()),
            "service": service,
            "method": method,
            "model": model,
            "obj_method": obj_method,
            "args": _masked(service, method, args),
            "ignored_params": ignored,
            "params_kwargs": params.get("kwargs"),
        }
        fake.log_request(entry)
        if missing:
            names = " and ".join(f"'{m}'" for m in missing)
            plural = "s" if len(missing) > 1 else ""
            err = RpcError(
                "builtins.TypeError",
                f"RPC.jsonrpc() missing {len(missing)} required positional argument{plural}: {names}",
            )
            entry["outcome"] = err.name
            return self._json(error_envelope(rid, err))
        scope_method = obj_method if service == "object" else method
        call_args = args[5] if service == "object" and isinstance(args, list) and len(args) > 5 else []
        fault = fake.faults.pick(
            str(service),
            model if isinstance(model, str) else None,
            scope_method if isinstance(scope_method, str) else None,
            call_values(
                scope_method if isinstance(scope_method, str) else None,
                call_args if isinstance(call_args, list) else [],
            ),
        )
        groups = fake.writer_groups(model, obj_method, call_args) if service == "object" else set()
        fake.enter_writers(groups)
        try:
            return await self._serve_call(rid, service, method, args, request, fault, entry)
        finally:
            fake.leave_writers(groups)

    async def _serve_call(
        self,
        rid: Any,
        service: Any,
        method: Any,
        args: Any,
        request: Request,
        fault: Fault | None,
        entry: dict[str, Any],
    ) -> Response:
        fake = self.fake
        kind = fault.spec.kind if fault else None
        if fault is not None:
            entry["fault"] = kind
        if kind == "slow":
            assert fault is not None
            await asyncio.sleep(fault.spec.ms / 1000)
        if kind in PRE_EXECUTION:
            assert fault is not None
            if kind == "http_status":
                return _proxy_error(fault.spec.status)
            if kind == "http_500_html":
                return _proxy_error(500)
            if kind == "invalid_json_body":
                return Response(b'{"jsonrpc": "2.0", "id": ', media_type="application/json")
            if kind == "reset_connection":
                _install_noise_filter()
                return _ResetResponse()
            return self._json(error_envelope(rid, fault.error()))
        client = request.client.host if request.client else "unknown"
        try:
            # cost hook: with a CostModel on, the call holds a modelled Odoo worker for its real price
            outcome = await self.costs.run(
                fake.dispatch, str(service), str(method), args if isinstance(args, list) else [], client
            )
        except RpcError as exc:
            entry["outcome"] = exc.name
            return self._json(error_envelope(rid, exc))
        except Exception as exc:  # noqa: BLE001 - Odoo turns any exception into an envelope
            err = _internal_error(exc)
            entry["outcome"] = err.name
            return self._json(error_envelope(rid, err))
        entry["outcome"] = "result"
        if kind == "delay_commit" and outcome.touched:
            assert fault is not None
            with fake.lock:
                token = fake.store.hold(outcome.touched)
            try:
                await asyncio.sleep(fault.spec.ms / 1000)
            finally:
                with fake.lock:
                    fake.store.release(token)
        if kind == "commit_then_fail":
            assert fault is not None
            if fault.spec.then == "502":
                return _proxy_error(502)
            if fault.spec.then == "reset":
                _install_noise_filter()
                return _ResetResponse()
            await asyncio.sleep((fault.spec.ms or 3000) / 1000)
        if kind == "omit_result" or outcome.result is None:
            return self._json({"jsonrpc": "2.0", "id": rid})
        return self._json({"jsonrpc": "2.0", "id": rid, "result": outcome.result})

    # -- session routes (optional in the spec, cheap to have) ---------------------------------------
    async def session_authenticate(self, request: Request) -> Response:
        payload, failure = await self._read_json(request)
        if failure is not None:
            return failure
        rid = payload.get("id") if isinstance(payload, dict) else None
        params = payload.get("params", {}) if isinstance(payload, dict) else {}
        fake = self.fake
        try:
            fake._check_db(params.get("db"))
        except RpcError as exc:
            return self._json(error_envelope(rid, exc))
        client = request.client.host if request.client else "unknown"
        uid = fake.authenticate(params.get("login"), params.get("password"), client)
        if not uid:
            return self._json(error_envelope(rid, RpcError(ACCESS_DENIED, "Access Denied")))
        sid = secrets.token_hex(20)
        self.sessions[sid] = int(uid)
        response = self._json(
            {
                "jsonrpc": "2.0",
                "id": rid,
                "result": {
                    "uid": uid,
                    "db": fake.database,
                    "username": params.get("login"),
                    "server_version": "17.0",
                },
            }
        )
        response.set_cookie("session_id", sid, httponly=True)
        return response

    async def call_kw(self, request: Request) -> Response:
        payload, failure = await self._read_json(request)
        if failure is not None:
            return failure
        rid = payload.get("id") if isinstance(payload, dict) else None
        uid = self.sessions.get(request.cookies.get("session_id", ""))
        if uid is None:
            return self._json(error_envelope(rid, session_expired()))
        params = payload.get("params", {}) if isinstance(payload, dict) else {}
        missing = [k for k in ("model", "method", "args", "kwargs") if k not in params]
        if missing:
            names = " and ".join(f"'{m}'" for m in missing)
            return self._json(
                error_envelope(
                    rid,
                    RpcError(
                        "builtins.TypeError",
                        f"DataSet.call_kw() missing {len(missing)} required positional argument(s): {names}",
                    ),
                )
            )
        fake = self.fake
        creds = fake.credentials.get(uid)
        try:
            outcome = fake.execute_kw(
                fake.database,
                uid,
                creds.password if creds else "",
                params["model"],
                params["method"],
                params["args"],
                params["kwargs"],
            )
        except RpcError as exc:
            return self._json(error_envelope(rid, exc))
        except Exception as exc:  # noqa: BLE001
            return self._json(error_envelope(rid, _internal_error(exc)))
        return self._json({"jsonrpc": "2.0", "id": rid, "result": outcome.result})

    async def not_found(self, request: Request) -> Response:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype in JSON_TYPES:
            err = RpcError(
                "werkzeug.exceptions.NotFound",
                "404 Not Found: The requested URL was not found on the server. If you entered the URL "
                "manually please check your spelling and try again.",
                code=404,
                http_message="404: Not Found",
            )
            return self._json(error_envelope(None, err))
        return _html_error(404, "Not Found", "The requested URL was not found on the server.")

    # -- /__fake__ control API ---------------------------------------------------------------------
    async def control(self, request: Request) -> Response:
        fake = self.fake
        action = request.path_params["action"]
        body: Any = {}
        if request.method in ("POST", "PUT"):
            raw = await request.body()
            body = json.loads(raw) if raw.strip() else {}
        if action == "reset" and request.method == "POST":
            fake.reset(seed=bool(body.get("seed", True)))
            return JSONResponse({"ok": True})
        if action == "seed" and request.method == "POST":
            fake.seed()
            return JSONResponse({"ok": True})
        if action == "state":
            return JSONResponse(fake.state(request.query_params.get("model")))
        if action == "clock":
            if request.method == "POST":
                if body.get("unfreeze"):
                    fake.clock.unfreeze()
                if "freeze" in body:
                    at = parse_server_datetime(body["freeze"]) if body["freeze"] else None
                    fake.clock.freeze(at, int(body.get("step_us", 0)))
                if "advance" in body:
                    fake.clock.advance(float(body["advance"]))
                if "skew" in body:
                    fake.clock_skew = float(body["skew"])
            return JSONResponse(
                {
                    "now": format_datetime_us(fake.clock.peek()),
                    "frozen": fake.clock.frozen,
                    "skew": fake.clock_skew,
                }
            )
        if action == "faults":
            if request.method == "POST":
                if isinstance(body, dict) and "reseed" in body:
                    fake.faults.reseed(int(body["reseed"]))
                    return JSONResponse({"ok": True})
                specs = body if isinstance(body, list) else [body]
                ids = []
                for spec in specs:
                    if spec.get("kind") == "clock_skew":
                        fake.clock_skew = float(spec.get("seconds", 0))
                        continue
                    try:
                        ids.append(fake.faults.add(FaultSpec.model_validate(spec)))
                    except ValueError as exc:
                        return JSONResponse({"error": str(exc)}, status_code=422)
                return JSONResponse({"ids": ids})
            if request.method == "DELETE":
                fake.faults.clear()
                return JSONResponse({"ok": True})
            return JSONResponse(fake.faults.describe())
        if action == "requests":
            if request.method == "DELETE":
                fake.requests.clear()
                return JSONResponse({"ok": True})
            return JSONResponse(list(fake.requests))
        if action == "flags":
            if request.method == "DELETE":
                fake.flags.clear()
                return JSONResponse({"ok": True})
            return JSONResponse(fake.flags)
        if action == "stats":
            return JSONResponse(fake.stats())
        if action == "jobs" and request.method == "POST":
            return JSONResponse({"groups": fake.run_jobs()})
        if action == "users" and request.method == "POST":
            uid = fake.add_user(
                body["login"],
                body["password"],
                body.get("groups", []),
                api_keys=body.get("api_keys"),
                tz=body.get("tz"),
            )
            return JSONResponse({"uid": uid})
        return JSONResponse({"error": f"unknown control action {action!r}"}, status_code=404)


def _masked(service: Any, method: Any, args: Any) -> Any:
    """The call log never keeps passwords or API keys."""
    if not isinstance(args, list):
        return args
    masked = list(args)
    if service == "object" and len(masked) > 2:
        masked[2] = "***"
    if service == "common" and method in ("authenticate", "login") and len(masked) > 2:
        masked[2] = "***"
    return masked


def _install_noise_filter() -> None:
    logger = logging.getLogger("uvicorn.error")
    if _noise_filter not in logger.filters:
        logger.addFilter(_noise_filter)


def create_app(
    seed: bool = True,
    *,
    database: str = "openspp",
    naming: Literal["onchange", "computed"] = "onchange",
    cooldown_after: int = 5,
    cooldown_seconds: float = 60.0,
    rng_seed: int = 0,
    data_file: Path | None = None,
    fake: FakeOpenSpp | None = None,
    costs: CostModel | None = None,
    flavour: Flavour = "openspp",
) -> Starlette:
    """A fake OpenSPP 17 server as an ASGI app; ``app.state.fake`` is its :class:`FakeOpenSpp`.

    ``costs`` makes each ``/jsonrpc`` call as slow as on a real Odoo (:mod:`connectors.openspp.fake.costs`);
    without it the fake answers at once. ``flavour="openg2p"`` serves the OpenG2P registry core without
    OpenSPP's modules (no areas)."""
    fake = fake or FakeOpenSpp(
        flavour=flavour,
        database=database,
        naming=naming,
        cooldown_after=cooldown_after,
        cooldown_seconds=cooldown_seconds,
        seed=seed,
        rng_seed=rng_seed,
        data_file=data_file,
    )
    handlers = FakeApp(fake, costs)
    any_method = ["GET", "POST", "PUT", "DELETE", "PATCH"]
    app = Starlette(
        routes=[
            Route("/jsonrpc", handlers.jsonrpc, methods=any_method),
            Route("/web/session/authenticate", handlers.session_authenticate, methods=any_method),
            Route("/web/dataset/call_kw", handlers.call_kw, methods=any_method),
            Route("/web/dataset/call_kw/{path:path}", handlers.call_kw, methods=any_method),
            Route("/__fake__/{action}", handlers.control, methods=["GET", "POST", "DELETE"]),
            Route("/{path:path}", handlers.not_found, methods=any_method),
        ]
    )
    app.state.fake = fake
    app.state.costs = handlers.costs
    return app

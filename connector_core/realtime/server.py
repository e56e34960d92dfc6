"""The HTTP side of ``dcsync serve``: webhooks, health, readiness and Prometheus metrics on one server.

``/healthz`` answers while the process lives; ``/readyz`` only when the stores answer and every log watcher
is connected (a load balancer or Kubernetes should send no webhook to a process that cannot act on it);
``/metrics`` is the registry the scheduler and the real-time runs record into.
A webhook never writes the log from its body: it only starts a pull, which reads the remote itself.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from connector_core.config import WebhookConfig
from connector_core.realtime.hooks import TokenBucket, authenticated

log = logging.getLogger("dcsync.realtime")


@dataclass
class HookEndpoint:
    config: WebhookConfig
    bucket: TokenBucket
    poke: Callable[[], None]


class RealtimeMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.signals = Counter(
            "dcsync_realtime_signals",
            "Changes that asked for a run, by connector and source (log, webhook)",
            ["connector", "source"],
            registry=registry,
        )
        self.webhooks = Counter(
            "dcsync_webhook_requests",
            "Webhook requests by connector and HTTP status",
            ["connector", "status"],
            registry=registry,
        )


def _answer(status: int, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"status": "error" if status >= 400 else "ok", "message": message}, status, headers)


def create_app(
    *,
    hooks: dict[str, HookEndpoint],
    ready: Callable[[], list[str]],
    registry: CollectorRegistry,
    metrics: RealtimeMetrics,
    mounts: Sequence[BaseRoute] = (),
) -> Starlette:
    """``ready()`` returns what is wrong (empty when ready); ``mounts`` adds apps under their own paths
    (the operator console at ``/ui``)."""

    async def hook(request: Request) -> Response:
        name = request.path_params["connector"]
        endpoint = hooks.get(name)
        if endpoint is None:
            return _answer(404, f"no webhook for connector {name!r}")
        response = await _hook(request, name, endpoint)
        metrics.webhooks.labels(name, str(response.status_code)).inc()
        log.info("webhook %s: %d", name, response.status_code)  # never the body, never a header
        return response

    async def _hook(request: Request, name: str, endpoint: HookEndpoint) -> Response:
        limit = endpoint.config.max_body
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            return _answer(413, f"body over {limit} bytes")
        body = bytearray()
        async for chunk in request.stream():  # a chunked body has no length to check up front
            body += chunk
            if len(body) > limit:
                return _answer(413, f"body over {limit} bytes")
        if not authenticated(endpoint.config, request.headers, bytes(body), request.query_params):
            return _answer(401, "bad or missing signature or token", **{"WWW-Authenticate": "Bearer"})
        wait = endpoint.bucket.take()
        if wait:
            retry_after = str(max(1, math.ceil(wait)))
            return _answer(429, "too many calls; retry later", **{"Retry-After": retry_after})
        endpoint.poke()
        metrics.signals.labels(name, "webhook").inc()
        return JSONResponse({"status": "accepted", "connector": name}, 202)

    def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    def readyz(request: Request) -> Response:  # sync: Starlette runs it on its thread pool (it does I/O)
        problems = ready()
        if problems:
            return JSONResponse({"status": "unavailable", "problems": problems}, 503)
        return JSONResponse({"status": "ready"})

    def metrics_page(request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return Starlette(
        routes=[
            Route("/hooks/{connector}", hook, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics_page, methods=["GET"]),
            *mounts,
        ]
    )

"""An httpx transport that makes a fraction of requests fail the way a flaky network and proxy do.

Why in-process: a fault-injecting proxy needs its own server and port; wrapping the client's transport gives
the same failures (the request never arrives, or it arrives and is committed but the answer is lost; a
gateway answers 502/503; a rate limiter answers 429 with ``Retry-After``) with a seeded random generator, so a
test is repeatable and fast.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Sequence

import httpx

FAULT_KINDS = ("reset-before", "reset-after", "502", "503", "429")


class FaultTransport(httpx.BaseTransport):
    """Forwards to ``inner``; with probability ``rate`` a request gets one of ``kinds`` instead.

    ``reset-before``: the connection drops before the request is sent (the server sees nothing).
    ``reset-after``: the server handles the request (and commits it) and the answer is lost.
    ``502``/``503``: a gateway's HTML page. ``429``: ``Retry-After: retry_after`` seconds.
    ``injected`` counts what was injected, by kind.
    """

    def __init__(
        self,
        inner: httpx.BaseTransport | None = None,
        *,
        rate: float = 0.3,
        seed: int = 0,
        kinds: Sequence[str] = FAULT_KINDS,
        retry_after: str = "1",
    ) -> None:
        unknown = set(kinds) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds: {sorted(unknown)}")
        self.inner = inner or httpx.HTTPTransport()
        self.rate = rate
        self.kinds = list(kinds)
        self.retry_after = retry_after
        self.injected: Counter[str] = Counter()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    def _roll(self) -> str | None:
        with self._lock:
            if self._rng.random() >= self.rate:
                return None
            kind = self._rng.choice(self.kinds)
            self.injected[kind] += 1
            return kind

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        kind = self._roll()
        if kind == "reset-before":
            raise httpx.ConnectError("[Errno 104] Connection reset by peer (injected)", request=request)
        if kind in ("502", "503"):
            reason = {"502": "Bad Gateway", "503": "Service Unavailable"}[kind]
            page = f"<html><head><title>{kind} {reason}</title></head><body>{kind} {reason}</body></html>"
            return httpx.Response(int(kind), html=page, request=request)
        if kind == "429":
            return httpx.Response(
                429, text="Too Many Requests", headers={"Retry-After": self.retry_after}, request=request
            )
        response = self.inner.handle_request(request)
        if kind == "reset-after":
            response.read()
            response.close()
            raise httpx.ReadError("[Errno 104] Connection reset by peer (injected)", request=request)
        return response

    def close(self) -> None:
        self.inner.close()

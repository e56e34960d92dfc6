"""Who may start a pull through ``POST /hooks/{connector}``, and how often.

A caller proves itself one of two ways (docs/realtime.md), each compared in constant time:

- ``X-Dcsync-Signature: sha256=<hex>``: the HMAC-SHA256 of the raw request body under the connector's
  ``webhook.secret`` (as GitHub and most SaaS webhooks sign). The body is never trusted for anything else.
- ``Authorization: Bearer <token>``: the connector's ``webhook.token``, for callers that cannot sign.
- ``?token=<value>``: the connector's ``webhook.query_token``, only for callers that can set no header at
  all. Odoo 17's "Send Webhook Notification" server action is one: it POSTs ``{"_action", "_id", "_model",
  ...}`` with nothing but ``Content-Type`` (odoo/addons/base/models/ir_actions.py, ``_run_action_webhook``),
  and logs the URL it calls, so this token is weaker and should be one of its own.

Rate limiting is a token bucket per connector, applied only to authenticated calls, so strangers sending bad
signatures cannot spend a real caller's budget.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from connector_core.config import WebhookConfig

SIGNATURE_HEADER = "X-Dcsync-Signature"
SIGNATURE_PREFIX = "sha256="


def sign(secret: str, body: bytes) -> str:
    """The header value a caller sends: ``sha256=`` and the hex HMAC-SHA256 of ``body``."""
    return SIGNATURE_PREFIX + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def authenticated(
    config: WebhookConfig, headers: Mapping[str, str], body: bytes, query: Mapping[str, str] | None = None
) -> bool:
    """True when the signature, the bearer token or the query token matches; anything malformed is a no."""
    if config.secret is not None:
        given = headers.get(SIGNATURE_HEADER.lower()) or headers.get(SIGNATURE_HEADER) or ""
        expected = sign(config.secret.get_secret_value(), body)
        if given and hmac.compare_digest(given.strip().lower().encode(), expected.encode()):
            return True
    if config.token is not None:
        authorization = headers.get("authorization") or ""
        scheme, _, value = authorization.partition(" ")
        token = config.token.get_secret_value().encode()
        if scheme.lower() == "bearer" and value and hmac.compare_digest(value.strip().encode(), token):
            return True
    if config.query_token is not None and query is not None:
        given = query.get("token") or ""
        if given and hmac.compare_digest(given.encode(), config.query_token.get_secret_value().encode()):
            return True
    return False


@dataclass
class TokenBucket:
    """``burst`` calls at once, refilled at ``rate`` per second."""

    rate: float
    burst: int
    clock: Callable[[], float] = time.monotonic
    _tokens: float = -1.0
    _at: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self) -> float:
        """0 when the call may go ahead (a token spent); else the seconds until one is there."""
        with self._lock:
            now = self.clock()
            if self._tokens < 0:
                self._tokens, self._at = float(self.burst), now
            self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.rate)
            self._at = now
            if self._tokens >= 1:
                self._tokens -= 1
                return 0.0
            return (1 - self._tokens) / self.rate

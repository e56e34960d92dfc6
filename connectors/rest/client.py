"""HTTP for the REST connector: authentication, a rate limit, and what an answer means.

The connector says which request to make; this module makes it the way the API wants (credentials, pacing)
and turns every failure into the engine's two words: transient (retry) or permanent (dead letter), plus
"the credentials were refused" (stop the run). Secrets stay in :class:`~pydantic.SecretStr` until the moment
they go on the wire, and no message built here carries a header, a form body or a query string.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

from connector_core.connector import AuthenticationError, PermanentError, TransientError
from connector_core.http import never_sent, released
from connector_core.mapping.errors import MISSING
from connector_core.mapping.paths import compile_path
from connectors.rest.config import (
    ApiKeyAuth,
    BasicAuth,
    BearerAuth,
    ErrorRule,
    OAuth2ClientCredentials,
    RestConfig,
)

DEFAULT_RULES = [
    ErrorRule(status=[401, 403], action="auth"),
    ErrorRule(status=[408, 425, 429], action="transient"),
    ErrorRule(status="5xx", action="transient"),
    ErrorRule(status="4xx", action="permanent"),
]
"""After the configured rules: refused credentials stop the run; time-outs, rate limits and server errors
pass; any other 4xx is the record's fault."""


class TokenBucket:
    """At most ``rate`` requests a second on average, ``burst`` back to back; safe across threads.

    A caller that finds the bucket empty reserves the next token and sleeps until it is due (outside the
    lock), so callers are paced in arrival order without polling.
    """

    def __init__(
        self,
        rate: float,
        burst: int = 1,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._sleep = sleep
        self._tokens = float(burst)
        self._last = clock()
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Take one token, waiting if needed; returns the seconds waited."""
        with self._lock:
            now = self._clock()
            self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.rate)
            self._last = now
            self._tokens -= 1
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if wait > 0:
            self._sleep(wait)
        return wait


class OAuth2Token:
    """A client-credentials token, fetched on first use and kept until shortly before it expires."""

    def __init__(
        self,
        auth: OAuth2ClientCredentials,
        base_url: str,
        clock: Callable[[], float],
        pace: Callable[[], object] | None = None,
    ) -> None:
        self.auth = auth
        self.url = auth.token_url if "://" in auth.token_url else base_url + auth.token_url
        self._clock = clock
        self._pace = pace
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires_at = 0.0
        self.fetched = 0

    def current(self, http: httpx.Client) -> tuple[str, bool]:
        """The token to use, and whether it was fetched just now (a fresh token is not renewed on a 401)."""
        with self._lock:
            if self._token is not None and self._clock() < self._expires_at:
                return self._token, False
            self._token, lifetime = self._fetch(http)
            margin = min(self.auth.expiry_margin, lifetime / 2)
            self._expires_at = self._clock() + lifetime - margin
            self.fetched += 1
            return self._token, True

    def invalidate(self, token: str) -> None:
        """Forget ``token`` (the API refused it); another thread may already have replaced it."""
        with self._lock:
            if self._token == token:
                self._token = None

    def _fetch(self, http: httpx.Client) -> tuple[str, float]:
        form = {"grant_type": "client_credentials"}
        if self.auth.scope:
            form["scope"] = self.auth.scope
        if self.auth.audience:
            form["audience"] = self.auth.audience
        secret = self.auth.client_secret.get_secret_value()
        basic: tuple[str, str] | None = None
        if self.auth.client_auth == "basic":
            basic = (self.auth.client_id, secret)
        else:
            form.update(client_id=self.auth.client_id, client_secret=secret)
        where = f"the token endpoint {_safe_url(self.url)}"
        if self._pace is not None:
            self._pace()  # the token request counts against the rate limit too
        try:
            response = http.post(self.url, data=form, auth=basic or httpx.USE_CLIENT_DEFAULT)
        except httpx.TimeoutException as exc:
            raise TransientError(f"{where} timed out", unsent=never_sent(exc)) from None
        except httpx.TransportError as exc:
            raise TransientError(
                f"cannot reach {where}: {_transport_reason(exc)}", unsent=never_sent(exc)
            ) from None
        if response.status_code in (400, 401, 403):
            reason = _oauth_error(response)
            raise AuthenticationError(f"{where} refused client {self.auth.client_id!r}: {reason}")
        if response.status_code == 429 or response.status_code >= 500:
            raise TransientError(
                f"{where} answered HTTP {response.status_code}", retry_after=_retry_after(response)
            )
        try:
            body = response.json()
            token = body["access_token"]
            lifetime = float(body.get("expires_in") or 3600)
        except (ValueError, KeyError, TypeError):
            raise PermanentError(
                f"{where} answered HTTP {response.status_code} without an access_token"
            ) from None
        if not isinstance(token, str) or not token:
            raise PermanentError(f"{where} answered an empty access_token")
        return token, lifetime


class RestClient:
    """Makes the connector's requests: base URL, credentials, pacing, one token renewal on a 401."""

    def __init__(
        self,
        config: RestConfig,
        http: httpx.Client | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.config = config
        self.base_url = config.base_url
        self.http = http or httpx.Client(timeout=config.timeout, headers=config.headers)
        self.bucket = (
            TokenBucket(
                config.rate_limit.requests_per_second, config.rate_limit.burst, clock=clock, sleep=sleep
            )
            if config.rate_limit
            else None
        )
        auth = config.auth
        pace = self.bucket.acquire if self.bucket is not None else None
        self.oauth = (
            OAuth2Token(auth, config.base_url, clock, pace)
            if isinstance(auth, OAuth2ClientCredentials)
            else None
        )
        self.rules = [*config.errors, *DEFAULT_RULES]
        self._message = compile_path(config.error_message).get if config.error_message else None

    def url(self, path: str) -> str:
        return self.base_url + path

    def request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        what: str,
    ) -> httpx.Response:
        """Send one request; transport failures raise :class:`TransientError`, HTTP answers are returned.

        A 401 on an OAuth2 token that was cached (not fetched for this very request) renews the token and
        sends the request once more: tokens are revoked or expire early, and that is not the record's fault.
        """
        token, fresh = self._pace_and_token()
        response = self._send(method, url, params, json, token, what)
        if response.status_code == 401 and self.oauth is not None and token is not None and not fresh:
            self.oauth.invalidate(token)
            token, _ = self._pace_and_token()
            response = self._send(method, url, params, json, token, what)
        return response

    def _pace_and_token(self) -> tuple[str | None, bool]:
        if self.oauth is not None:
            token, fresh = self.oauth.current(self.http)
        else:
            token, fresh = None, False
        if self.bucket is not None:
            self.bucket.acquire()
        return token, fresh

    def _send(
        self,
        method: str,
        url: str,
        params: Mapping[str, Any] | None,
        body: Any,
        token: str | None,
        what: str,
    ) -> httpx.Response:
        headers: dict[str, str] = {}
        query = dict(params or {})
        auth = self.config.auth
        basic: tuple[str, str] | None = None
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        elif isinstance(auth, BearerAuth):
            headers["Authorization"] = f"Bearer {auth.token.get_secret_value()}"
        elif isinstance(auth, BasicAuth):
            basic = (auth.username, auth.password.get_secret_value())
        elif isinstance(auth, ApiKeyAuth):
            if auth.query_param:
                query[auth.query_param] = auth.value.get_secret_value()
            elif auth.header:
                headers[auth.header] = auth.value.get_secret_value()
        try:
            return released(
                self.http.request(
                    method,
                    url,
                    params=query or None,
                    json=body,
                    headers=headers,
                    auth=basic or httpx.USE_CLIENT_DEFAULT,
                )
            )
        except httpx.TimeoutException as exc:
            raise TransientError(
                f"{what}: timed out after {self.config.timeout:g}s", unsent=never_sent(exc)
            ) from None
        except httpx.TransportError as exc:
            raise TransientError(
                f"{what}: cannot reach {_safe_url(self.base_url)}: {_transport_reason(exc)}",
                unsent=never_sent(exc),
            ) from None

    def classify(self, response: httpx.Response, what: str) -> None:
        """Raise what ``response`` means if it is a failure; return quietly for a success.

        The configured rules come first (they may also call a 200 with an error body a failure), then the
        defaults. The message is the remote's own (``error_message`` path, else the body's start).
        """
        status = response.status_code
        text = response.text
        for rule in self.rules:
            if rule.matches(status, text):
                break
        else:
            return
        message = f"{what}: HTTP {status}: {self._reason(response)}"
        if rule.action == "auth":
            raise AuthenticationError(f"{what}: the API refused dcsync's credentials (HTTP {status})")
        if rule.action == "transient":
            raise TransientError(message, retry_after=_retry_after(response))
        raise PermanentError(message)

    def _reason(self, response: httpx.Response) -> str:
        if self._message is not None:
            try:
                value = self._message(response.json())
            except ValueError:
                value = MISSING
            if isinstance(value, list):
                value = value[0] if value else MISSING
            if value is not MISSING and value is not None:
                return str(value)
        return " ".join(response.text.split())[:300] or response.reason_phrase

    def close(self) -> None:
        self.http.close()


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After", "").strip()
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None  # an HTTP date: the retry policy's own backoff is close enough


def _oauth_error(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}"
    if not isinstance(body, dict):
        return f"HTTP {response.status_code}"
    parts = [str(body[k]) for k in ("error", "error_description") if body.get(k)]
    return ": ".join(parts) or f"HTTP {response.status_code}"


def _safe_url(url: str) -> str:
    """Scheme, host and path only: a query string may carry a key."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def _transport_reason(exc: httpx.TransportError) -> str:
    text = str(exc).strip()
    return text.split("\n")[0][:200] if text else type(exc).__name__


def same_origin(url: str, base_url: str) -> bool:
    """Whether ``url`` points at the API itself (credentials are never sent anywhere else)."""
    a, b = urlsplit(url), urlsplit(base_url)
    return (a.scheme, a.hostname, a.port) == (b.scheme, b.hostname, b.port)


def resolve(url: str, against: str) -> str:
    return urljoin(against, url)

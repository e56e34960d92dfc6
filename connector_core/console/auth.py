"""Who may use the console: logins, the session they get, CSRF tokens and a brake on password guessing.

The console replays, discards and resolves records of a live registry, so every page but ``/healthz`` asks
for a login, every POST carries the session's CSRF token, and binding beyond loopback without any login
configured is refused before a socket is opened. Passwords are compared in constant time; the session is a
signed, HttpOnly, SameSite=Strict cookie (Starlette's ``SessionMiddleware``).
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from connector_core.config import ConfigError

TOKEN_ENV = "DCSYNC_UI_TOKEN"
TOKEN_LOGIN = "token"
"""The login name of whoever signs in with ``DCSYNC_UI_TOKEN`` (recorded as ``ui:token``)."""


class UnsafeBinding(ConfigError):
    """Binding beyond loopback without a login configured; ``str()`` is one line."""

    def __init__(self, message: str) -> None:
        super().__init__([message])


@dataclass
class Logins:
    """Login names with their passwords, plus the optional shared token."""

    users: dict[str, str] = field(default_factory=dict)
    token: str | None = None

    @classmethod
    def from_environment(cls, users: dict[str, str]) -> Logins:
        token = os.environ.get(TOKEN_ENV) or None
        return cls({name: pw for name, pw in users.items() if pw}, token)

    @property
    def configured(self) -> bool:
        return bool(self.users or self.token)

    def check(self, name: str, password: str) -> str | None:
        """The login name when ``password`` is right for ``name`` (or is the token), else ``None``.

        Every candidate is compared, whatever matched first, so the time taken says nothing of which names
        exist."""
        found: str | None = None
        given = password.encode()
        for user, expected in self.users.items():
            if hmac.compare_digest(given, expected.encode()) and hmac.compare_digest(
                name.encode(), user.encode()
            ):
                found = user
        if (
            self.token is not None
            and hmac.compare_digest(given, self.token.encode())
            and (name in ("", TOKEN_LOGIN))
        ):
            found = found or TOKEN_LOGIN
        return found


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_binding(host: str, logins: Logins) -> None:
    """Refuse a console reachable from other machines that anyone could use."""
    if not is_loopback(host) and not logins.configured:
        raise UnsafeBinding(
            f"refusing to serve the console on {host} without a login: set ui.users in dcsync.yaml "
            f"or {TOKEN_ENV} (or bind to 127.0.0.1)"
        )


class Throttle:
    """At most ``attempts`` failed logins per client address and per name in ``window`` seconds."""

    def __init__(self, attempts: int = 5, window: float = 300.0) -> None:
        self.attempts = attempts
        self.window = window
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        q = self._failures.setdefault(key, deque())
        while q and q[0] <= now - self.window:
            q.popleft()
        return q

    def blocked(self, *keys: str) -> bool:
        now = time.monotonic()
        with self._lock:
            return any(len(self._recent(k, now)) >= self.attempts for k in keys)

    def failed(self, *keys: str) -> None:
        now = time.monotonic()
        with self._lock:
            for key in keys:
                self._recent(key, now).append(now)
            if len(self._failures) > 10_000:  # a flood of names: forget the quiet ones
                for key in [k for k, q in self._failures.items() if not q]:
                    del self._failures[key]

    def succeeded(self, *keys: str) -> None:
        with self._lock:
            for key in keys:
                self._failures.pop(key, None)


CSRF_FIELD = "csrf_token"


def csrf_token(session: dict[str, object]) -> str:
    """The session's CSRF token, made on first use (also before login: the login form carries one)."""
    token = session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        session["csrf"] = token
    return token


def csrf_ok(session: dict[str, object], submitted: str | None) -> bool:
    expected = session.get("csrf")
    return isinstance(expected, str) and submitted is not None and hmac.compare_digest(expected, submitted)

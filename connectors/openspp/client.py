"""Odoo JSON-RPC client (``POST /jsonrpc``) with OpenSPP-aware error classification.

Pure protocol: it authenticates, calls ``object.execute_kw`` with keyword arguments as the seventh element
of ``args`` (Odoo silently ignores them anywhere else), and turns every failure into a
:class:`~connector_core.connector.TransientError` or :class:`~connector_core.connector.PermanentError`
carrying Odoo's own message. Writes are never retried here: the engine owns their retries, because only it
can look a create up before sending it again. Reads (and the login) are retried on their own under
``retry_policy`` when one is set, so one dropped answer among the many reads of a push does not cost the
whole batch; an expired session is re-authenticated once, because that is a property of the connection.

Failures that are about the run, not a record, are :class:`~connector_core.connector.SystemicError`: a
database that does not exist, a login refused (:class:`OdooAuthError`) or answered with an HTTP 401/403.
A login answered 5xx, or a connection that fails, is transient. Every failure of the login carries
``unsent=True``: no write can have left with it.

Classification follows ``openspp.md`` §1.8: concurrency and infrastructure failures (serialisation,
lock, deadlock, operational and pool errors, 502/503/504, timeouts, resets) are transient; access,
validation, missing-record and malformed-call errors are permanent. Errors that may have happened after
the server applied the call (timeouts, resets, proxy errors, unreadable answers) are marked
``maybe_applied`` so a caller knows to look the record up before re-creating it.

A refused login is never hammered: after ``authenticate`` answers ``false`` (bad credentials, or the
server's login cooldown) the client refuses to try again for ``login_cooldown`` seconds.
"""

from __future__ import annotations

import itertools
import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import httpx
from pydantic import SecretStr

from connector_core.connector import (
    AuthenticationError,
    ConnectorError,
    PermanentError,
    SystemicError,
    TransientError,
)
from connector_core.http import released
from connector_core.logs import redact
from connector_core.retry import RetryPolicy, call_with_retry

log = logging.getLogger(__name__)
T = TypeVar("T")

TRANSIENT_ERROR_NAMES = frozenset(
    {
        "psycopg2.errors.SerializationFailure",
        "psycopg2.errors.LockNotAvailable",
        "psycopg2.errors.DeadlockDetected",
        "psycopg2.extensions.TransactionRollbackError",
        "psycopg2.errors.TransactionRollbackError",
        "psycopg2.OperationalError",
        "psycopg2.errors.OperationalError",
        "psycopg2.InterfaceError",
        "psycopg2.pool.PoolError",
    }
)
TRANSIENT_HTTP = frozenset({429, 502, 503, 504})
AUTH_HTTP = frozenset({401, 403, 407})
"""Statuses a gateway in front of Odoo answers when it refuses the caller, whatever the call."""
WRITE_METHODS = frozenset({"create", "write", "unlink", "load"})
"""Methods that change data: never retried by the client (the engine looks creates up first)."""
_MISSING_DATABASE = re.compile(r'database "([^"]*)" does not exist')
ACCESS_DENIED = "odoo.exceptions.AccessDenied"
ACCESS_ERROR = "odoo.exceptions.AccessError"
SESSION_EXPIRED = "odoo.http.SessionExpiredException"


class OdooTransientError(TransientError):
    """A failure a later retry may get past. ``maybe_applied``: the call may have committed anyway."""

    def __init__(
        self,
        message: str,
        *,
        odoo_name: str | None = None,
        maybe_applied: bool = False,
        retry_after: float | None = None,
    ):
        super().__init__(message, retry_after=retry_after)
        self.odoo_name = odoo_name
        self.maybe_applied = maybe_applied


class OdooPermanentError(PermanentError):
    """A failure a retry cannot fix; ``odoo_name`` is Odoo's ``error.data.name`` when there was one."""

    def __init__(self, message: str, *, odoo_name: str | None = None, unsent: bool = False):
        super().__init__(message, unsent=unsent)
        self.odoo_name = odoo_name


class OdooSystemicError(OdooPermanentError, SystemicError):
    """Not about any record: the database does not exist, the user may not read the registry's setup.
    Every record would fail the same way, so the run stops instead of dead-lettering them."""


class OdooAuthError(OdooSystemicError, AuthenticationError):
    """Credentials refused (or a login cooldown is running): every call would fail the same way."""


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What ``Model.load`` answered: ids in row order, or ``None`` and per-row error messages."""

    ids: list[int] | None
    messages: list[dict[str, Any]]

    def errors_by_row(self) -> dict[int, str]:
        out: dict[int, str] = {}
        for message in self.messages:
            if message.get("type") != "error":
                continue
            row = message.get("record")
            if row is None:
                rows = message.get("rows") or {}
                row = rows.get("from")
            if isinstance(row, int):
                text = str(message.get("message") or "import error")
                out[row] = f"{out[row]}; {text}" if row in out else text
        return out


def classify(error: dict[str, Any], *, secret: str | None = None) -> ConnectorError:
    """Turn a JSON-RPC ``error`` member into the right exception, keeping Odoo's message."""
    raw = error.get("data")
    data: dict[str, Any] = raw if isinstance(raw, dict) else {}
    name = str(data.get("name") or "")
    message = str(data.get("message") or error.get("message") or "Odoo Server Error")
    if secret:
        message = message.replace(secret, "***")
    if error.get("code") == 100 or name == SESSION_EXPIRED:
        return OdooTransientError(message or "Odoo Session Expired", odoo_name=SESSION_EXPIRED)
    if name in TRANSIENT_ERROR_NAMES:
        missing = _MISSING_DATABASE.search(message)
        if "OperationalError" in name and missing:
            # the real message carries the database server's host and port: keep only what helps
            return OdooSystemicError(
                f"database {missing.group(1)!r} does not exist on the Odoo server (check `database:`)",
                odoo_name=name,
            )
        return OdooTransientError(message, odoo_name=name)
    if name == ACCESS_DENIED:
        return OdooAuthError(message, odoo_name=name)
    return OdooPermanentError(message, odoo_name=name or None)


class OdooClient:
    """A stateless-per-call Odoo JSON-RPC client; thread-safe, so parallel writers can share it."""

    def __init__(
        self,
        url: str,
        database: str,
        login: str,
        secret: SecretStr | str,
        *,
        http: httpx.Client | None = None,
        timeout: float | httpx.Timeout = 120.0,
        connect_timeout: float = 10.0,
        login_cooldown: float = 60.0,
        verify: bool = True,
    ):
        self.url = url.rstrip("/")
        self.database = database
        self.login = login
        self._secret = secret if isinstance(secret, SecretStr) else SecretStr(secret)
        if isinstance(timeout, httpx.Timeout):
            self._timeout = timeout
        else:
            self._timeout = httpx.Timeout(timeout, connect=min(connect_timeout, timeout))
        self._owns_http = http is None
        self._http = http or httpx.Client(timeout=self._timeout, verify=verify)
        self.login_cooldown = login_cooldown
        self._uid: int | None = None
        self._blocked_until = 0.0
        self._auth_lock = threading.Lock()
        self._ids = itertools.count(1)
        self.server_time: datetime | None = None
        self.server_version: dict[str, Any] | None = None
        self.retry_policy: RetryPolicy | None = None
        """Retries each read and the login on its own (writes never); ``None``: every call is tried once."""

    def __repr__(self) -> str:
        return f"OdooClient(url={self.url!r}, database={self.database!r}, login={self.login!r})"

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> OdooClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def uid(self) -> int | None:
        return self._uid

    # -- transport -------------------------------------------------------------------------------
    def call(self, service: str, method: str, args: Sequence[Any]) -> Any:
        """One JSON-RPC call; returns ``result`` (``None`` when Odoo sent neither result nor error)."""
        payload = {
            "jsonrpc": "2.0",
            "method": "call",
            "id": next(self._ids),
            "params": {"service": service, "method": method, "args": list(args)},
        }
        what = f"{service}.{method}" if service != "object" else f"{args[3]}.{args[4]}"
        try:
            response = released(self._http.post(f"{self.url}/jsonrpc", json=payload, timeout=self._timeout))
        except httpx.TimeoutException as exc:
            raise OdooTransientError(
                f"Odoo did not answer {what} in time ({type(exc).__name__}); it may have applied it",
                maybe_applied=True,
            ) from None
        except httpx.TransportError as exc:
            raise OdooTransientError(
                f"connection to Odoo failed during {what} ({type(exc).__name__}: {exc})",
                maybe_applied=not isinstance(exc, httpx.ConnectError),
            ) from None
        self._note_date(response)
        status = response.status_code
        if status in TRANSIENT_HTTP:
            raise OdooTransientError(
                f"HTTP {status} from Odoo during {what}",
                maybe_applied=status != 503,
                retry_after=_retry_after(response),
            )
        if status in AUTH_HTTP:
            raise OdooAuthError(f"HTTP {status} from Odoo during {what}: the server refused dcsync's request")
        snippet = " ".join(redact(response.text).split())[:200]  # redacted before it is cut
        if status >= 500:
            # a gateway or a crashed worker: nothing says the call was about this request's records
            raise OdooTransientError(f"HTTP {status} from Odoo during {what}: {snippet}", maybe_applied=True)
        if status != 200:
            raise OdooPermanentError(f"HTTP {status} from Odoo during {what}: {snippet}")
        try:
            body = response.json()
        except ValueError:
            raise OdooTransientError(
                f"Odoo answered {what} with a body that is not JSON; the outcome is unknown",
                maybe_applied=True,
            ) from None
        if not isinstance(body, dict):
            raise OdooTransientError(
                f"Odoo answered {what} with an unexpected body; the outcome is unknown",
                maybe_applied=True,
            )
        if "error" in body:
            error = body["error"] if isinstance(body["error"], dict) else {"message": str(body["error"])}
            raise classify(error, secret=self._secret.get_secret_value())
        return body.get("result")

    def _note_date(self, response: httpx.Response) -> None:
        """Remember the server's clock (the ``Date`` header) for the pull lag window."""
        values = response.headers.get_list("date")
        if not values:
            return
        try:
            parsed = parsedate_to_datetime(values[-1])
        except (TypeError, ValueError):
            return
        if parsed.tzinfo is not None:
            parsed = parsed.astimezone(UTC).replace(tzinfo=None)
        self.server_time = parsed

    # -- common service --------------------------------------------------------------------------
    def version(self) -> dict[str, Any]:
        result = self._retried(lambda: self.call("common", "version", []), "Odoo version")
        self.server_version = result if isinstance(result, dict) else None
        return result if isinstance(result, dict) else {}

    def authenticate(self, *, force: bool = False) -> int:
        """The uid for the configured login; ``false`` from Odoo becomes :class:`OdooAuthError`.

        Whatever goes wrong here is about the run (``unsent``: no write went with it): a permanent answer
        is systemic, a 5xx or a dropped connection transient. Not retried here: the read that needed the
        login is (``execute_kw``), and the engine retries the batch of a write."""
        with self._auth_lock:
            if self._uid is not None and not force:
                return self._uid
            remaining = self._blocked_until - time.monotonic()
            if remaining > 0:
                raise OdooAuthError(
                    f"not retrying the Odoo login of {self.login!r} for {remaining:.0f} s after it was "
                    "refused (login cooldown)",
                    unsent=True,
                )
            try:
                result = self.call(
                    "common", "authenticate", [self.database, self.login, self._secret.get_secret_value(), {}]
                )
            except OdooSystemicError as exc:
                exc.unsent = True
                raise
            except OdooPermanentError as exc:
                raise OdooSystemicError(
                    f"the Odoo login of {self.login!r} on database {self.database!r} failed: {exc.message}",
                    odoo_name=exc.odoo_name,
                    unsent=True,
                ) from None
            except ConnectorError as exc:
                exc.unsent = True
                raise
            if isinstance(result, bool) or not isinstance(result, int):
                self._refused()
                raise OdooAuthError(
                    f"Odoo refused the login {self.login!r} on database {self.database!r} "
                    "(wrong login, password or API key, or the server's login cooldown)",
                    unsent=True,
                )
            self._uid = result
            return result

    def _retried(self, fn: Callable[[], T], what: str) -> T:
        """``fn`` under ``retry_policy`` (transient failures only), or once when no policy is set."""
        policy = self.retry_policy
        if policy is None:
            return fn()
        return call_with_retry(fn, policy, what=what)

    def _refused(self) -> None:
        self._uid = None
        self._blocked_until = time.monotonic() + self.login_cooldown

    # -- object service --------------------------------------------------------------------------
    def execute_kw(
        self,
        model: str,
        method: str,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        """``object.execute_kw``; keyword arguments travel as the seventh element of ``args``.

        A read is retried on its own under ``retry_policy``; a write is sent once (see the module)."""
        if method in WRITE_METHODS:
            return self._execute_kw(model, method, args, kwargs)
        return self._retried(lambda: self._execute_kw(model, method, args, kwargs), f"{model}.{method}")

    def _execute_kw(
        self,
        model: str,
        method: str,
        args: Sequence[Any],
        kwargs: dict[str, Any] | None,
    ) -> Any:
        for attempt in (1, 2):
            uid = self.authenticate()
            call_args: list[Any] = [
                self.database,
                uid,
                self._secret.get_secret_value(),
                model,
                method,
                list(args),
            ]
            if kwargs:
                call_args.append(kwargs)
            try:
                return self.call("object", "execute_kw", call_args)
            except OdooTransientError as exc:
                if exc.odoo_name == SESSION_EXPIRED and attempt == 1:
                    log.info("Odoo session expired; authenticating again")
                    with self._auth_lock:
                        self._uid = None
                    continue
                raise
            except OdooAuthError:
                with self._auth_lock:
                    self._refused()
                raise
        raise OdooPermanentError("Odoo kept answering 'session expired' after a fresh login")

    # -- ORM conveniences ------------------------------------------------------------------------
    def search(
        self,
        model: str,
        domain: list[Any],
        *,
        order: str,
        offset: int = 0,
        limit: int | None = None,
        context: dict[str, Any] | None = None,
    ) -> list[int]:
        kwargs: dict[str, Any] = {"order": order, "offset": offset}
        if limit:
            kwargs["limit"] = limit
        if context:
            kwargs["context"] = context
        return list(self.execute_kw(model, "search", [domain], kwargs) or [])

    def search_read(
        self,
        model: str,
        domain: list[Any],
        fields: Sequence[str],
        *,
        order: str,
        offset: int = 0,
        limit: int | None = None,
        context: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """Always with explicit ``fields`` (``[]`` would return every field, images included)."""
        if not fields:
            raise ValueError("search_read needs an explicit field list")
        kwargs: dict[str, Any] = {"fields": list(fields), "order": order, "offset": offset}
        if limit:
            kwargs["limit"] = limit
        if context:
            kwargs["context"] = context
        return list(self.execute_kw(model, "search_read", [domain], kwargs) or [])

    def search_count(self, model: str, domain: list[Any], *, context: dict[str, Any] | None = None) -> int:
        kwargs = {"context": context} if context else None
        return int(self.execute_kw(model, "search_count", [domain], kwargs) or 0)

    def read(
        self,
        model: str,
        ids: Sequence[int],
        fields: Sequence[str],
        *,
        context: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        if not ids:
            return []
        if not fields:
            raise ValueError("read needs an explicit field list")
        kwargs: dict[str, Any] = {"fields": list(fields)}
        if context:
            kwargs["context"] = context
        return list(self.execute_kw(model, "read", [list(ids)], kwargs) or [])

    def create(self, model: str, values: dict[str, Any]) -> int:
        result = self.execute_kw(model, "create", [values])
        if isinstance(result, bool) or not isinstance(result, int):
            raise OdooTransientError(
                f"Odoo answered {model}.create without an id; the outcome is unknown", maybe_applied=True
            )
        return result

    def create_many(self, model: str, values: Sequence[dict[str, Any]]) -> list[int]:
        """One call, one transaction: a list of value dicts in, the new ids out (same order)."""
        if not values:
            return []
        result = self.execute_kw(model, "create", [list(values)])
        if not isinstance(result, list) or len(result) != len(values):
            raise OdooTransientError(
                f"Odoo answered {model}.create without the new ids; the outcome is unknown",
                maybe_applied=True,
            )
        return [int(i) for i in result]

    def write(self, model: str, ids: Sequence[int], values: dict[str, Any]) -> bool:
        result = self.execute_kw(model, "write", [list(ids), values])
        if result is None:
            raise OdooTransientError(
                f"Odoo answered {model}.write without a result; the outcome is unknown", maybe_applied=True
            )
        return bool(result)

    def unlink(self, model: str, ids: Sequence[int]) -> bool:
        return bool(self.execute_kw(model, "unlink", [list(ids)]))

    def load(self, model: str, fields: Sequence[str], rows: Sequence[Sequence[str]]) -> LoadResult:
        """``Model.load``: CSV-import upsert keyed by the ``id`` (xml-id) column.

        The import reads datetime cells in the context's time zone, else the user's preference; every
        value here is UTC (Odoo's wire convention), so the context says so."""
        result = self.execute_kw(
            model, "load", [list(fields), [list(r) for r in rows]], {"context": {"tz": "UTC"}}
        )
        if not isinstance(result, dict):
            raise OdooTransientError(
                f"Odoo answered {model}.load without a result; the outcome is unknown", maybe_applied=True
            )
        ids = result.get("ids")
        messages = list(result.get("messages") or [])
        return LoadResult([int(i) for i in ids] if isinstance(ids, list) else None, messages)

    def fields_get(self, model: str, attributes: Sequence[str] | None = None) -> dict[str, Any]:
        kwargs = {"attributes": list(attributes)} if attributes else None
        return dict(self.execute_kw(model, "fields_get", [], kwargs) or {})

    def name_search(
        self, model: str, name: str, *, operator: str = "ilike", limit: int = 100
    ) -> list[tuple[int, str]]:
        result = self.execute_kw(
            model, "name_search", [], {"name": name, "operator": operator, "limit": limit}
        )
        return [(int(r[0]), str(r[1])) for r in result or []]

    def xmlid_target(
        self, xmlid: str, *, context: dict[str, Any] | None = None
    ) -> tuple[str, int | None] | None:
        """``ir.model.data.check_object_reference``: usable by registrars, who cannot read that model."""
        module, _, name = xmlid.rpartition(".")
        try:
            kwargs = {"context": context} if context else None
            result = self.execute_kw("ir.model.data", "check_object_reference", [module, name], kwargs)
        except OdooPermanentError as exc:
            if exc.odoo_name == "builtins.ValueError" and "External ID not found" in exc.message:
                return None
            raise
        if not isinstance(result, list) or len(result) != 2:
            return None
        res_id = result[1]
        return str(result[0]), (
            int(res_id) if isinstance(res_id, int) and not isinstance(res_id, bool) else None
        )

    def has_group(self, group: str) -> bool:
        """Is the logged-in user in ``group``? Checked the way DataCollect does it.

        DataCollect reads the user's ``groups_id`` and resolves the group's xml-id through
        ``ir.model.data`` (``group`` may be ``module.name`` or just the name). A registrar cannot read
        ``ir.model.data``; then ``res.users.has_group`` answers instead, which needs ``module.name`` and, in
        Odoo 17, takes no ids (``@api.model``: it answers for the calling user).
        """
        uid = self.authenticate()
        users = self.read("res.users", [uid], ["groups_id"])
        group_ids = set(users[0]["groups_id"]) if users else set()
        module, _, name = group.rpartition(".")
        domain: list[Any] = [["model", "=", "res.groups"], ["name", "=", name]]
        if module:
            domain.append(["module", "=", module])
        try:
            rows = self.search_read("ir.model.data", domain, ["res_id", "module", "name"], order="id asc")
        except OdooPermanentError as exc:
            if exc.odoo_name != ACCESS_ERROR:
                raise
            if not module:
                raise OdooPermanentError(
                    f"cannot resolve group {group!r} without rights on ir.model.data; give it as "
                    "module.name (e.g. g2p_registry_base.group_g2p_registrar)"
                ) from None
            return bool(self.execute_kw("res.users", "has_group", [group]))  # @api.model in Odoo 17
        return any(r.get("res_id") in group_ids for r in rows)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value and value.strip().isdigit():
        return float(value)
    return None

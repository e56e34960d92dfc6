"""PostgreSQL plumbing shared by the event log, the state store and the DataCollect database reader.

Three things every PostgreSQL backend needs and must get right the same way: connecting with an error an
operator can act on (never a psycopg traceback, never the password), naming a schema safely (it comes from a
config file and ends up in SQL), and turning names into advisory-lock keys that every dcsync process computes
identically (Python's ``hash()`` is salted per process, so it cannot be used).
"""

from __future__ import annotations

import hashlib
import re
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg.types.json import set_json_dumps, set_json_loads

from connector_core import codec
from connector_core.logs import register_secret

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class PostgresUnavailable(RuntimeError):
    """PostgreSQL could not be reached or refused the connection; the message never holds a password."""


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***``, fit for a log line or an error message."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable PostgreSQL URL>"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    netloc = f"{user}:***@{host}{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def scrub(message: str, url: str) -> str:
    """Remove the password of ``url`` from ``message`` (psycopg echoes a malformed DSN back verbatim)."""
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    if password:
        message = message.replace(password, "***")
    return message


def split_option(url: str, name: str) -> tuple[str, str | None]:
    """Take a dcsync-only query option (``?schema=...``) out of a URL before libpq sees it."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    value = next((v for k, v in query if k == name), None)
    kept = urlencode([(k, v) for k, v in query if k != name])
    return urlunsplit((parts.scheme, parts.netloc, parts.path, kept, parts.fragment)), value


def check_identifier(name: str, what: str) -> str:
    """A schema or prefix from a config file, refused unless it is a plain identifier.

    Quoting would make any string safe in SQL, but a schema called ``"dcsync; drop"`` is a typo, not a wish.
    """
    if not _IDENTIFIER.match(name):
        raise ValueError(
            f"{what} {name!r} is not a plain identifier (letters, digits, underscore; at most 63 characters)"
        )
    return name


def advisory_key(*parts: str) -> int:
    """A signed 64-bit advisory-lock key, the same in every process and on every machine."""
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def connect(
    url: str,
    *,
    application_name: str = "dcsync",
    autocommit: bool = True,
    read_only: bool = False,
    **kwargs: Any,
) -> psycopg.Connection[Any]:
    """Open a connection, or raise :class:`PostgresUnavailable` with a message that names the server.

    TCP keepalives are on so that a lease held by a process whose machine vanished is released by the server
    within minutes, not after the kernel's two-hour default.
    """
    options: dict[str, Any] = {
        "autocommit": autocommit,
        "application_name": application_name[:63],
        "connect_timeout": 10,
        "keepalives": 1,
        "keepalives_idle": 30,
        "keepalives_interval": 10,
        "keepalives_count": 3,
    }
    if read_only:
        options["options"] = "-c default_transaction_read_only=on"
    options.update(kwargs)
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    if password:
        register_secret(password)  # a driver or server message that echoes it is masked in every log line
    try:
        conn = psycopg.connect(url, **options)
    except psycopg.Error as exc:
        reason = scrub(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__, url)
        raise PostgresUnavailable(f"cannot connect to PostgreSQL at {redact_url(url)}: {reason}") from None
    set_json_dumps(codec.dumps, conn)  # the same encoder as the SQLite backends, and several times faster
    set_json_loads(codec.loads, conn)
    return conn

"""Fixtures shared across the test suite.

PostgreSQL: tests that need one take ``pg_schema`` (a fresh, empty schema name, dropped after the test) or
``postgres_url``. The server is the one at ``DCSYNC_TEST_POSTGRES_URL`` (default
``postgresql://postgres@127.0.0.1:5432/test``). When it does not answer those tests are skipped with the
reason, unless ``DCSYNC_REQUIRE_POSTGRES=1`` (CI), which turns the skip into a failure: a CI run that silently
skipped the PostgreSQL backends would prove nothing about them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

# The end-to-end sync fixtures (a served mock system, a project aimed at it) for every test module.
pytest_plugins = ["sync_support"]

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
_SESSION = uuid.uuid4().hex[:8]
_counter = iter(range(1, 1_000_000))


def _require_postgres() -> bool:
    return os.environ.get("DCSYNC_REQUIRE_POSTGRES", "").strip() not in ("", "0", "false", "no")


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """The test server's URL, once it has answered; drops every schema this session made at the end."""
    url = os.environ.get("DCSYNC_TEST_POSTGRES_URL") or DEFAULT_POSTGRES_URL
    try:
        import psycopg

        conn = psycopg.connect(url, autocommit=True, connect_timeout=3)
    except Exception as exc:  # ImportError, OperationalError, a malformed URL: all mean "no PostgreSQL"
        from connector_core._postgres import redact_url, scrub

        reason = scrub(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__, url)
        message = f"PostgreSQL at {redact_url(url)} is unreachable ({reason})"
        if _require_postgres():
            pytest.fail(f"{message}; DCSYNC_REQUIRE_POSTGRES=1 forbids skipping", pytrace=False)
        pytest.skip(f"{message}; set DCSYNC_TEST_POSTGRES_URL to run these tests")
    try:
        yield url
    finally:
        rows = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE %s", (f"dcsync_test_{_SESSION}_%",)
        ).fetchall()
        for (name,) in rows:
            conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        conn.close()


@pytest.fixture
def pg_schema(postgres_url: str) -> Iterator[str]:
    """A schema name no other test uses (the backend under test creates it); dropped after the test."""
    name = f"dcsync_test_{_SESSION}_{next(_counter)}"
    yield name
    import psycopg

    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')

"""No secret persisted or printed (issue 17, and issue 14 item 11), proven against a remote that echoes.

For each built-in connector (mock, rest, openfn, openspp) the secret is given as a ``${VAR}`` (for mock, as
the password of a URL: ``http://user:${VAR}@host``), and the remote answers writes (then everything) with
an error quoting the request's headers and body. The secret, its base64 and URL-encoded forms, and the
base64 of ``user:secret`` (a ``Basic`` header) must then appear nowhere: not in stdout or stderr of ``run``
with ``-v`` (human and ``--log-format json``), ``check``, ``runs``, ``dlq list|show`` and ``status``, and
not in any table of the SQLite or PostgreSQL state store or of the event log. Each test also proves the
echo reached dcsync (a masked reason was stored), so it cannot pass by never being exercised; and removing
the registration of connector secrets (``register_secrets_of``) makes the openspp case fail, since an Odoo
JSON-RPC body carries the password as a bare positional argument that no key-based rule could find.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
from typer.testing import CliRunner

from connector_core.cli import app
from connector_core.redaction import forget_all
from connector_core.sample import mobile_log
from connector_core.testing.echo import EchoingRemote
from connector_core.testing.server import serve

SECRET = "Zq7!s3cr3t$Kx9~pw"
USER = "dcsync-user"
VAR = "DCSYNC_ECHO_TEST_SECRET"
RETRY = {"max_attempts": 2, "initial_delay": 0.01, "max_delay": 0.02, "max_elapsed": 2}
runner = CliRunner()


def forbidden_forms() -> list[str]:
    raw = SECRET.encode()
    pair = f"{USER}:{SECRET}".encode()
    return [
        SECRET,
        quote(SECRET, safe=""),
        quote_plus(SECRET),
        base64.b64encode(raw).decode(),
        base64.b64encode(raw).decode().rstrip("="),
        base64.b64encode(pair).decode(),
        base64.urlsafe_b64encode(pair).decode(),
    ]


def _leaks(text: str) -> list[str]:
    return [form for form in forbidden_forms() if form in text]


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """``dcsync -v`` reconfigures the root logger of this process; put it back afterwards. Secrets an
    earlier test registered are forgotten first, so each case proves its own registration."""
    forget_all()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


# -- the four connectors in front of an echoing remote ------------------------------------------------


def _mock(url: str) -> tuple[Any, dict[str, Any]]:
    from connectors.mock.server import create_app

    remote = EchoingRemote(create_app(), passes=lambda method, _path, _body: method == "GET")
    host = url.split("://", 1)[1]
    return remote, {"url": f"http://{USER}:${{{VAR}}}@{host}", "timeout": 5}


def _rest(url: str) -> tuple[Any, dict[str, Any]]:
    from connectors.rest.fake import FakeRestOptions, connector_settings, create_app

    options = FakeRestOptions(auth="basic", username=USER, password=SECRET)
    settings = connector_settings(url, options)
    settings["auth"] = {"type": "basic", "username": USER, "password": f"${{{VAR}}}"}
    return EchoingRemote(create_app(options), passes=lambda method, _p, _b: method == "GET"), settings


def _openfn(url: str) -> tuple[Any, dict[str, Any]]:
    from connectors.openfn.fake.seed import RESULTS_COLLECTION, TRIGGER_ID

    settings = {
        "url": url,
        "trigger": TRIGGER_ID,
        "api_key": f"${{{VAR}}}",
        "collection": RESULTS_COLLECTION,
        "token": f"${{{VAR}}}",
        "key_pattern": "dc:result:*",
        "timeout": 5.0,
        "preflight": False,
        "default_entity_name": "individual",
    }
    return EchoingRemote(), settings  # nothing passes: every request is echoed


def _openspp(url: str) -> tuple[Any, dict[str, Any]]:
    from connectors.openspp.fake import DATABASE, create_app

    fake_app = create_app(seed=True)
    fake_app.state.fake.add_user(USER, SECRET, ["g2p_registry_base.group_g2p_registrar"])
    writes = (b'"create"', b'"write"', b'"load"', b'"unlink"')
    remote = EchoingRemote(
        fake_app,
        passes=lambda _m, _p, body: not any(w in body for w in writes),
        always=lambda _m, _p, body: b'"version"' in body,  # so `check` reaches the login, which echoes
    )
    settings = {
        "url": url,
        "database": DATABASE,
        "username": USER,
        "password": f"${{{VAR}}}",
        "timeout": 5.0,
        "lag_seconds": 0,
        "login_cooldown": 0,
    }
    return remote, settings


CONNECTORS = {"mock": _mock, "rest": _rest, "openfn": _openfn, "openspp": _openspp}
MAPPINGS = {"openspp": Path(__file__).resolve().parent.parent / "mappings" / "openspp.yaml"}


class _Proxy:
    """The served app is chosen after the port is known (settings carry the URL)."""

    def __init__(self) -> None:
        self.app: Any = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


def _invoke(*args: str | Path) -> Any:
    result = runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "100000", VAR: SECRET})
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def _sqlite_dump(path: Path) -> str:
    with sqlite3.connect(path) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return "\n".join(repr(conn.execute(f'SELECT * FROM "{t}"').fetchall()) for t in tables)


def _postgres_dump(url: str, schema: str) -> str:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)
            )
        ]
        assert tables, f"no tables in schema {schema}"
        return "\n".join(repr(conn.execute(f'SELECT * FROM "{schema}"."{t}"').fetchall()) for t in tables)


@pytest.fixture(params=["sqlite", "postgres"])
def state_backend(request: pytest.FixtureRequest) -> tuple[str, str | None, str | None]:
    if request.param == "sqlite":
        return ("sqlite", None, None)
    url = request.getfixturevalue("postgres_url")
    schema = request.getfixturevalue("pg_schema")
    return ("postgres", url, schema)


@pytest.mark.parametrize("kind", sorted(CONNECTORS))
def test_no_secret_is_printed_or_persisted_when_the_remote_echoes_it(
    kind: str, tmp_path: Path, state_backend: tuple[str, str | None, str | None], monkeypatch
) -> None:
    monkeypatch.setenv(VAR, SECRET)
    backend, pg_url, pg_schema = state_backend
    proxy = _Proxy()
    with serve(proxy) as served:
        remote, settings = CONNECTORS[kind](served.url)
        proxy.app = remote
        state: dict[str, Any] = {"backend": "sqlite", "path": "state.db"}
        if backend == "postgres":
            state = {"backend": "postgres", "url": pg_url, "schema": pg_schema}
        instance: dict[str, Any] = {"type": kind, "batch_size": 5, "retry": RETRY, "settings": settings}
        if kind in MAPPINGS:
            instance["mapping"] = str(MAPPINGS[kind])
        config = tmp_path / "dcsync.yaml"
        config.write_text(json.dumps({"version": 1, "state": state, "connectors": {"reg": instance}}))
        events = tmp_path / "events.jsonl"
        events.write_text("".join(e.to_json_line() + "\n" for e in mobile_log(2, 2, 1)))
        assert _invoke("log", "import", events, "-c", config).exit_code == 0

        shown: list[str] = []

        def run(*args: str | Path) -> Any:
            result = _invoke(*args)
            shown.append(f"$ {args}\n{result.stdout}\n{result.stderr}")
            return result

        # 1. writes are refused with an echo: dead letters (or a failed run) quoting the request
        run("-v", "--log-format", "json", "run", "reg", "-c", config)
        # 2. everything is refused with a 500 echo: retries, then a failed run
        remote.mode, remote.status = "all", 500
        run("-v", "run", "reg", "-c", config)
        run("-v", "--log-format", "json", "run", "reg", "--push", "-c", config)
        check = run("check", "reg", "-c", config)
        assert check.exit_code == 1
        runs = run("runs", "-c", config)
        run("status", "-c", config)
        run("status", "--json", "-c", config)
        letters = run("dlq", "list", "--status", "all", "-c", config)
        for letter_id in re.findall(r"^\s*│?\s*(\d+)\s", letters.stdout, re.MULTILINE):
            run("dlq", "show", letter_id, "-c", config)
        assert remote.echoed > 0

    output = "\n".join(shown)
    assert not _leaks(output), (_leaks(output), output[-3000:])
    tables = _sqlite_dump(tmp_path / "events.db")
    if backend == "sqlite":
        tables += _sqlite_dump(tmp_path / "state.db")
    else:
        assert pg_url is not None and pg_schema is not None
        tables += _postgres_dump(pg_url, pg_schema)
    assert not _leaks(tables), _leaks(tables)
    # the echo did reach what dcsync shows and stores, masked: this test cannot pass by not being exercised
    assert "***" in check.stdout + check.stderr
    assert "***" in runs.stdout
    assert "***" in tables

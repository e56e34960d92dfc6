"""Acceptance of encryption at rest, through the CLI, on both backends: after the demo and a run with dead
letters and a conflict, no name, birthdate, ID or account number from the sample log is in the state store
in plain text (SQLite: the raw bytes of ``state.db`` and its ``-wal``; PostgreSQL: every table as text), and
replay, conflict resolution, status and runs still work; then a rotation, and the one-line key errors."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import httpx
import psycopg
import pytest
from sync_support import event
from typer.testing import CliRunner

from connector_core.cli import app
from connector_core.config import CONFIG_FILE_NAME
from connector_core.demo import DEMO_CONFIG, DEMO_CONNECTOR, URL_VARIABLE
from connector_core.outcomes import EXIT_BAD_INPUT, EXIT_DEAD_LETTERS
from connector_core.plugins import load_plugins
from connector_core.project import Project
from connector_core.state.sealing import StateCipher, decode_key, generate_key
from connector_core.testing.server import serve

PAST = "2025-03-01T10:00:00.000Z"
runner = CliRunner()


def _cli(*args: str, config: Path | None) -> tuple[int, str]:
    conf = ["-c", str(config)] if config is not None else []
    result = runner.invoke(app, [*args, *conf], env={"COLUMNS": "200"})
    return result.exit_code, result.output


def _config(workspace: Path, state: str) -> Path:
    """The demo's own project file, with the state section given and the manual conflict policy."""
    workspace.mkdir(parents=True, exist_ok=True)
    text = DEMO_CONFIG.replace("state:\n  backend: sqlite\n  path: state.db\n", state)
    text = text.replace("    page_size: 200\n", "    page_size: 200\n    conflict_policy: manual\n")
    assert "encryption_key" in text and "conflict_policy" in text
    path = workspace / CONFIG_FILE_NAME
    path.write_text(text, encoding="utf-8")
    return path


def _sample_values(config: Path) -> tuple[list[str], list[str]]:
    """(values that must never be on disk in plain text, names) read from the demo's own event log."""
    project = Project.open(config, read_only=True)
    try:
        people = [e.data for e in project.eventlog.iter_events() if "date_of_birth" in e.data]
        households = [e.data for e in project.eventlog.iter_events() if "bank_details" in e.data]
    finally:
        project.close()
    names = sorted({p["name"] for p in people})
    secret = names + sorted({p["date_of_birth"][:10] for p in people})
    secret += [d["id_number"] for p in people for d in p.get("document_ids", [])]
    secret += [b["account_number"] for h in households for b in h["bank_details"]]
    assert len(names) > 3 and all(" " in n for n in names)
    return secret, names


def _individuals(config: Path) -> list[tuple[str, dict]]:
    project = Project.open(config, read_only=True)
    try:
        return [(e.entity_guid, e.data) for e in project.eventlog.iter_events() if "date_of_birth" in e.data]
    finally:
        project.close()


def _append(config: Path, events: list) -> None:
    project = Project.open(config)
    try:
        project.eventlog.append(events)
    finally:
        project.close()


def _scenario(
    workspace: Path, config: Path, monkeypatch: pytest.MonkeyPatch, on_disk: Callable[[], str], old: str
) -> None:
    monkeypatch.setenv(URL_VARIABLE, "http://127.0.0.1:9")  # the demo sets it: restored after the test
    code, output = _cli("demo", "--workspace", str(workspace), "--households", "4", config=None)
    assert code == 0, output
    secret, names = _sample_values(config)
    people = _individuals(config)
    (refused, _), (also_refused, _), (clashing, clash_data) = people[0], people[1], people[2]

    mock = load_plugins().fake_server("mock")(workspace / "mock-server.json")
    with serve(mock) as server, httpx.Client(base_url=server.url) as client:
        monkeypatch.setenv(URL_VARIABLE, server.url)
        # dead letters whose reasons quote the person (a remote echoing the record)
        reasons = {g: f"refused {d['name']} born {d['date_of_birth']}" for g, d in people[:2]}
        client.put("/_control/faults", json={"reject": reasons})
        # a conflict: the same person changed here and on the remote
        (record,) = [r for r in client.get("/_control/records").json() if r.get("entityGuid") == clashing]
        client.patch(f"/_control/records/{record['id']}", json={"data": {"phone_number": "+639000000001"}})
        _append(
            config,
            [
                event("u1", refused, "update-individual", {"phone_number": "+639000000002"}),
                event("u2", also_refused, "update-individual", {"phone_number": "+639000000003"}),
                event("u3", clashing, "update-individual", {"phone_number": "+639000000004"}, PAST),
            ],
        )
        code, output = _cli("run", DEMO_CONNECTOR, config=config)
        assert code == EXIT_DEAD_LETTERS, output

        code, output = _cli("dlq", "list", config=config)
        assert code == 0 and "refused" in output, output  # reasons read back through the key
        code, output = _cli("conflicts", "list", config=config)
        assert code == 0 and clashing[:8] in output, output
        project = Project.open(config, read_only=True)
        try:
            (conflict,) = project.state.conflicts(DEMO_CONNECTOR)
            letters = project.state.dead_letters(DEMO_CONNECTOR)
            link = project.state.get_link(DEMO_CONNECTOR, clashing)
        finally:
            project.close()
        # the store does hold personal data, so its absence from the disk below means something
        assert {d.reason for d in letters} == set(reasons.values())
        assert link is not None and clash_data["name"] in str(link.snapshot) + str(link.base)

        text = on_disk()
        leaked = [value for value in secret if value in text]
        assert leaked == [], f"{len(leaked)} personal value(s) in plain text in the state store"
        for reason in reasons.values():
            assert reason not in text

        client.put("/_control/faults", json={})
        code, output = _cli("dlq", "replay", DEMO_CONNECTOR, "--all", config=config)
        assert code == 0, output
        code, output = _cli("conflicts", "resolve", str(conflict.id), "--take", "external", config=config)
        assert code == 0 and "resolved" in output, output
        code, output = _cli("status", config=config)
        assert code == 0, output
        code, output = _cli("runs", config=config)
        assert code == 0, output
        code, output = _cli("dlq", "list", "--status", "all", config=config)
        assert code == 0 and "replayed" in output, output

        text = on_disk()
        assert [value for value in secret if value in text] == []

    # rotation: a new key seals, the old one still opens; rekey; then the old key leaves
    new = generate_key()
    monkeypatch.setenv("DCSYNC_STATE_KEY", new)
    monkeypatch.setenv("DCSYNC_OLD_KEY", old)
    rotating = config.read_text().replace(
        "  encryption_key: ${DCSYNC_STATE_KEY}\n",
        "  encryption_key: ${DCSYNC_STATE_KEY}\n  previous_keys: ['${DCSYNC_OLD_KEY}']\n",
    )
    config.write_text(rotating)
    code, output = _cli("state", "rekey", "--batch", "5", config=config)
    assert code == 0 and "may be removed" in output, output
    code, output = _cli("audit", "--action", "rekey", "--json", config=config)
    assert code == 0 and '"rewritten"' in output, output
    config.write_text(rotating.replace("  previous_keys: ['${DCSYNC_OLD_KEY}']\n", ""))
    code, output = _cli("dlq", "list", "--status", "all", config=config)
    assert code == 0 and "refused" in output, output
    assert [value for value in secret if value in on_disk()] == []

    # the old key alone, or no key: one line naming what is wrong, never a traceback or a value
    monkeypatch.setenv("DCSYNC_STATE_KEY", old)
    code, output = _cli("status", config=config)
    new_id = StateCipher(decode_key(new)).key_id
    assert code == EXIT_BAD_INPUT and f"sealed under key id {new_id}" in output, output
    assert len(output.strip().splitlines()) == 1 and "Traceback" not in output
    config.write_text(config.read_text().replace("  encryption_key: ${DCSYNC_STATE_KEY}\n", ""))
    code, output = _cli("dlq", "list", config=config)
    assert code == EXIT_BAD_INPUT and output.strip() == (
        f"error: state store holds encrypted data (key id {new_id}) but state.encryption_key is not set"
    ), output
    assert not any(name in output for name in names)


@pytest.fixture
def state_key(monkeypatch: pytest.MonkeyPatch) -> str:
    key = generate_key()
    monkeypatch.setenv("DCSYNC_STATE_KEY", key)
    return key


def test_sqlite_state_holds_no_plain_personal_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, state_key: str
) -> None:
    workspace = tmp_path / "ws"
    config = _config(
        workspace, "state:\n  backend: sqlite\n  path: state.db\n  encryption_key: ${DCSYNC_STATE_KEY}\n"
    )
    db = workspace / "state.db"
    keep: list[sqlite3.Connection] = []

    def on_disk() -> str:
        if not keep:  # a reader held open keeps the -wal file in place between the commands
            keep.append(sqlite3.connect(db))
            keep[0].execute("SELECT count(*) FROM links").fetchall()
        wal = Path(f"{db}-wal")
        raw = db.read_bytes() + (wal.read_bytes() if wal.exists() else b"")
        return raw.decode("utf-8", errors="replace")

    try:
        _scenario(workspace, config, monkeypatch, on_disk, state_key)
    finally:
        for conn in keep:
            conn.close()


@pytest.mark.postgres
def test_postgres_state_holds_no_plain_personal_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, state_key: str, postgres_url: str, pg_schema: str
) -> None:
    workspace = tmp_path / "ws"
    monkeypatch.setenv("DCSYNC_TEST_STATE_URL", postgres_url)
    config = _config(
        workspace,
        "state:\n  backend: postgres\n  url: ${DCSYNC_TEST_STATE_URL}\n"
        f"  schema: {pg_schema}\n  encryption_key: ${{DCSYNC_STATE_KEY}}\n",
    )

    def on_disk() -> str:
        with psycopg.connect(postgres_url) as conn:
            tables = conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (pg_schema,)
            ).fetchall()
            assert {"links", "dead_letters", "conflicts", "runs", "state_meta"} <= {t for (t,) in tables}
            return "\n".join(
                str(row[0])
                for (t,) in tables
                for row in conn.execute(f'SELECT t::text FROM "{pg_schema}"."{t}" t').fetchall()
            )

    _scenario(workspace, config, monkeypatch, on_disk, state_key)


def test_keygen_prints_a_fresh_key_and_a_bad_key_is_one_line_that_never_quotes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = (runner.invoke(app, ["state", "keygen"]).stdout.strip() for _ in range(2))
    assert first != second and len(decode_key(first)) == len(decode_key(second)) == 32
    monkeypatch.setenv("DCSYNC_STATE_KEY", "hunter2hunter2")
    config = _config(tmp_path, "state:\n  path: state.db\n  encryption_key: ${DCSYNC_STATE_KEY}\n")
    code, output = _cli("status", config=config)
    assert code == EXIT_BAD_INPUT and "encryption_key: not a key" in output and "dcsync.yaml:" in output
    assert "hunter2" not in output and "Traceback" not in output
    config.write_text(
        config.read_text().replace("encryption_key: ${DCSYNC_STATE_KEY}", "encryption_key_file: k")
    )
    code, output = _cli("status", config=config)
    assert code == EXIT_BAD_INPUT and output.strip().startswith("error: state.encryption_key_file "), output
    assert len(output.strip().splitlines()) == 1

"""Commands that only look write nothing and need no connector secret; a run's exit code and status say
whether it left dead letters; tables fit 80 columns."""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from connector_core.cli import app
from connector_core.events import FormSubmission

runner = CliRunner()
UNSET = "DCSYNC_TEST_UNSET_SECRET"


def _invoke(*args: str, columns: int = 200, env: dict[str, str] | None = None):
    return runner.invoke(app, list(args), env={"COLUMNS": str(columns), **(env or {})})


def _listing(directory: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``directory`` with its size and modification time: any write shows."""
    return {
        str(path.relative_to(directory)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in sorted(directory.rglob("*"))
    }


def _config(directory: Path, url: str = "${" + UNSET + "}") -> Path:
    config = directory / "dcsync.yaml"
    config.write_text(
        "connectors:\n"
        "  reg:\n"
        "    type: mock\n"
        "    batch_size: 5\n"
        "    settings:\n"
        f"      url: {url}\n"
        "      timeout: 10\n"
        "  other:\n"
        "    type: mock\n"
        "    settings:\n"
        "      url: ${DCSYNC_TEST_OTHER_UNSET_SECRET}\n"
    )
    return config


@pytest.fixture(autouse=True)
def _secrets_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(UNSET, raising=False)
    monkeypatch.delenv("DCSYNC_TEST_OTHER_UNSET_SECRET", raising=False)


def _people(n: int, prefix: str = "p") -> list[FormSubmission]:
    return [
        FormSubmission(
            guid=f"ev-{prefix}{i}",
            entity_guid=f"{prefix}{i}",
            type="create-individual",
            data={"name": f"Person {i}"},
            timestamp=f"2025-03-01T10:00:{i:02d}.000Z",
            user_id="admin",
        )
        for i in range(n)
    ]


def _import(config: Path, events: list[FormSubmission]) -> None:
    source = config.parent.parent / f"{config.parent.name}-events.jsonl"
    source.write_text("".join(e.to_json_line() + "\n" for e in events))
    result = _invoke("log", "import", str(source), "-c", str(config))
    assert result.exit_code == 0, result.output


READ_ONLY = [
    ("run", "reg", "--dry-run"),
    ("run", "reg", "--dry-run", "--push"),
    ("status",),
    ("status", "--json"),
    ("runs",),
    ("dlq", "list"),
    ("log", "stats"),
    ("log", "export"),
    ("conflicts", "list"),
]


@pytest.mark.parametrize("command", READ_ONLY, ids=" ".join)
def test_read_only_commands_leave_a_fresh_directory_as_it_was(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    config = _config(tmp_path)
    before = _listing(tmp_path)
    result = _invoke(*command, "-c", str(config))
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    assert _listing(tmp_path) == before


def test_dlq_show_in_a_fresh_directory_creates_nothing(tmp_path: Path) -> None:
    config = _config(tmp_path)
    before = _listing(tmp_path)
    result = _invoke("dlq", "show", "1", "-c", str(config))
    assert result.exit_code == 2 and result.stderr.strip() == "error: no dead letter with id 1"
    assert _listing(tmp_path) == before


def test_a_dry_run_without_the_secret_plans_the_push_and_names_the_unset_variable(tmp_path: Path) -> None:
    config = _config(tmp_path)
    _import(config, _people(3))
    before = _listing(tmp_path)
    result = _invoke("run", "reg", "--dry-run", "-c", str(config))
    assert result.exit_code == 0, result.output
    assert (
        f"{config}:6:12: connectors.reg.settings.url: environment variable {UNSET} is not set"
        in result.stderr
    )
    assert "pull plan skipped" in result.stderr
    rows = {
        line.split("│")[1].strip(): line.split("│")[2].strip()
        for line in result.stdout.splitlines()
        if line.count("│") == 3
    }
    assert rows["created"] == "3", result.stdout
    assert _listing(tmp_path) == before, "no lock file, no -wal/-shm left behind, no store written"


def test_a_dry_run_of_the_pull_alone_needs_the_secret(tmp_path: Path) -> None:
    config = _config(tmp_path)
    result = _invoke("run", "reg", "--dry-run", "--pull", "-c", str(config))
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"error: {config}:6:12: connectors.reg.settings.url: environment variable {UNSET} is not set"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dcsync.yaml"]


def test_a_dry_run_with_the_secret_reads_the_remote_and_writes_nothing(
    tmp_path: Path, mock_server: httpx.Client
) -> None:
    """The acceptance: `dcsync run X --dry-run` in an empty directory with a valid config leaves it as is."""
    mock_server.post(
        "/_control/records", json={"entityName": "individual", "data": {"name": "R"}}
    ).raise_for_status()
    config = _config(tmp_path, url="${" + UNSET + "}")
    before = _listing(tmp_path)
    result = _invoke("run", "reg", "--dry-run", "-c", str(config), env={UNSET: str(mock_server.base_url)})
    assert result.exit_code == 0, result.output
    assert "pull" in result.stdout and "skipped" not in result.stderr
    assert _listing(tmp_path) == before


def test_check_still_names_the_unset_variable(tmp_path: Path) -> None:
    config = _config(tmp_path)
    result = _invoke("check", "reg", "-c", str(config))
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"error: {config}:6:12: connectors.reg.settings.url: environment variable {UNSET} is not set"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dcsync.yaml"]


def test_log_import_needs_no_connector_secret(tmp_path: Path) -> None:
    config = _config(tmp_path)
    _import(config, _people(2))
    stats = _invoke("log", "stats", "--json", "-c", str(config))
    assert stats.exit_code == 0 and json.loads(stats.stdout)["events"] == 2


def test_a_real_run_needs_only_its_own_connector_secret(tmp_path: Path, mock_server: httpx.Client) -> None:
    config = _config(tmp_path)
    _import(config, _people(2))
    result = _invoke("run", "reg", "--push", "-c", str(config), env={UNSET: str(mock_server.base_url)})
    assert result.exit_code == 0, result.output
    unset = _invoke("run", "reg", "--push", "-c", str(config))
    assert unset.exit_code == 2 and f"environment variable {UNSET} is not set" in unset.stderr


def _run_with_a_dead_letter(tmp_path: Path, mock_server: httpx.Client) -> Path:
    config = _config(tmp_path)
    _import(config, _people(4))
    mock_server.put("/_control/faults", json={"script": [], "reject": {"p2": "name: must be unique"}})
    result = _invoke("run", "reg", "--push", "-c", str(config), env={UNSET: str(mock_server.base_url)})
    assert result.exit_code == 3, result.output
    assert result.stderr.strip().splitlines()[-1] == (
        "degraded: reg: the run finished but left 1 new dead letter; see `dcsync dlq list --connector reg`"
    )
    return config


def test_a_run_that_left_dead_letters_exits_3_and_shows_degraded(
    tmp_path: Path, mock_server: httpx.Client
) -> None:
    config = _run_with_a_dead_letter(tmp_path, mock_server)
    status = json.loads(_invoke("status", "--json", "-c", str(config)).stdout)
    reg = next(r for r in status if r["connector"] == "reg")
    assert reg["last_outcome"] == "degraded" and reg["last_dead_lettered"] == 1 and reg["dead_letters"] == 1
    assert "degraded" in _invoke("status", "-c", str(config)).stdout
    assert "degraded" in _invoke("runs", "-c", str(config)).stdout

    # the next run delivers what it can and leaves no new dead letter: ok again, though one is still open
    mock_server.put("/_control/faults", json={"script": [], "reject": {}})
    _import(config, _people(1, prefix="q"))
    again = _invoke("run", "reg", "--push", "-c", str(config), env={UNSET: str(mock_server.base_url)})
    assert again.exit_code == 0, again.output
    status = json.loads(_invoke("status", "--json", "-c", str(config)).stdout)
    reg = next(r for r in status if r["connector"] == "reg")
    assert reg["last_outcome"] == "ok" and reg["dead_letters"] == 1


def test_read_only_commands_leave_an_existing_project_untouched(
    tmp_path: Path, mock_server: httpx.Client
) -> None:
    config = _run_with_a_dead_letter(tmp_path, mock_server)
    before = _listing(tmp_path)
    assert not [name for name in before if name.endswith(("-wal", "-shm"))]
    for command in [*READ_ONLY, ("dlq", "show", "1"), ("runs", "--failed")]:
        result = _invoke(*command, "-c", str(config))
        assert result.exit_code == 0, (command, result.output)
        assert _listing(tmp_path) == before, command


@pytest.mark.parametrize("command", [("runs",), ("status",), ("dlq", "list")], ids=" ".join)
def test_tables_fit_80_columns_without_cutting_a_header(
    tmp_path: Path, mock_server: httpx.Client, command: tuple[str, ...]
) -> None:
    config = _run_with_a_dead_letter(tmp_path, mock_server)
    narrow = _invoke(*command, "-c", str(config), columns=80)
    assert narrow.exit_code == 0, narrow.output
    lines = narrow.stdout.splitlines()
    assert all(len(line.rstrip()) <= 80 for line in lines), narrow.stdout
    assert "…" not in narrow.stdout, narrow.stdout
    wide = _invoke(*command, "-c", str(config), columns=250)
    assert "…" not in wide.stdout
    # whichever the layout, every header and value is there in full
    for text in (narrow.stdout, wide.stdout):
        if command == ("runs",):
            assert "degraded" in text and "dead_lettered=1" in text
        elif command == ("status",):
            assert "dead letters" in text and "degraded" in text
        else:
            assert "name: must be unique" in text and "p2" in text


def test_the_run_report_fits_80_columns(tmp_path: Path) -> None:
    config = _config(tmp_path)
    result = _invoke("run", "reg", "--dry-run", "--push", "-c", str(config), columns=80)
    assert result.exit_code == 0, result.output
    assert "dead letters" in result.stdout and "…" not in result.stdout


@pytest.mark.parametrize(
    "command",
    [(), ("run",), ("init",), ("status",), ("plugins",), ("dlq", "replay"), ("mapping", "validate")],
    ids=lambda c: " ".join(c) or "dcsync",
)
def test_flags_show_no_bool_metavar(command: tuple[str, ...]) -> None:
    result = _invoke(*command, "--help", columns=100)
    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.stdout, result.stdout


def test_run_help_says_pull_then_push_and_documents_exit_code_3() -> None:
    text = " ".join(_invoke("run", "--help", columns=200).stdout.split())
    assert "pull remote changes into the log as events, then push entity changes" in text
    assert "3 the run finished but left new dead letters" in text


def test_init_prints_the_next_step(tmp_path: Path) -> None:
    result = _invoke("init", str(tmp_path / "dcsync.yaml"))
    assert result.exit_code == 0
    assert "dcsync mock-server mock" in result.stdout
    assert f"dcsync run registry --dry-run -c {tmp_path / 'dcsync.yaml'}" in result.stdout


def test_the_readme_documents_the_exit_codes() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "3 a run finished but left new dead letters" in " ".join(readme.split())


def test_no_state_file_is_created_by_a_dry_run_beside_a_relative_config(tmp_path: Path) -> None:
    config = _config(tmp_path)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        result = _invoke("run", "reg", "--dry-run", "-c", "dcsync.yaml")
    finally:
        os.chdir(cwd)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == [config.name]


def test_a_datacollect_log_is_read_from_its_mirror_without_contacting_the_tenant(tmp_path: Path) -> None:
    config = tmp_path / "dcsync.yaml"
    config.write_text(
        "eventlog:\n"
        "  backend: datacollect\n"
        "  url: http://127.0.0.1:9\n"  # nothing listens: a contact would fail the command
        "  config_id: demo\n"
        "  token: ${DCSYNC_TEST_UNSET_TOKEN:-t}\n"
        "connectors:\n"
        "  reg:\n"
        "    type: mock\n"
        "    settings: {url: '${" + UNSET + "}'}\n"
    )
    for command in (("status",), ("log", "stats"), ("run", "reg", "--dry-run")):
        result = _invoke(*command, "-c", str(config))
        assert result.exit_code == 0, (command, result.output)
        assert "datacollect-mirror.db does not exist yet: the log reads as empty" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dcsync.yaml"]


def test_schedule_run_names_an_unset_secret_of_a_scheduled_connector_before_the_first_tick(
    tmp_path: Path,
) -> None:
    config = tmp_path / "dcsync.yaml"
    config.write_text(
        "connectors:\n"
        "  reg:\n"
        "    type: mock\n"
        "    schedule: [{direction: push, every: 1h}]\n"
        "    settings:\n"
        "      url: ${" + UNSET + "}\n"
    )
    result = _invoke("schedule", "run", "-c", str(config))
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"error: {config}:6:12: connectors.reg.settings.url: environment variable {UNSET} is not set"
    )


def test_a_dry_runs_plan_is_one_line_per_operation_at_80_columns(tmp_path: Path) -> None:
    config = _config(tmp_path)
    people = [
        FormSubmission(
            guid=f"ev-{i}",
            entity_guid=f"4a23d596-2217-4ead-9bc4-96cb8e81973{i}",
            type="create-individual",
            data={"entityName": "individual", "name": f"Person {i}"},
            timestamp="2025-03-01T10:00:00.000Z",
            user_id="admin",
        )
        for i in range(3)
    ]
    _import(config, people)
    result = _invoke("run", "reg", "--dry-run", "--push", "-c", str(config), columns=80)
    assert result.exit_code == 0, result.output
    planned = [line.split() for line in result.stdout.splitlines() if line.startswith("push create")]
    assert sorted(words[2] for words in planned) == sorted(p.entity_guid for p in people)
    assert all(words[3] == "individual" for words in planned)
    assert "…" not in result.stdout and all(len(line) <= 80 for line in result.stdout.splitlines())


def test_a_dry_run_plans_while_a_real_run_holds_the_lease(tmp_path: Path) -> None:
    """A dry run takes no lease: it writes nothing, so it cannot collide with the run that holds it, and it
    neither waits for that run nor keeps it (or a scheduled one) waiting."""
    from connector_core.state import SqliteStateStore

    config = _config(tmp_path)
    _import(config, _people(2))
    store = SqliteStateStore(tmp_path / "state.db")
    with store.lease("reg"):
        result = _invoke("run", "reg", "--dry-run", "--push", "-c", str(config))
        assert result.exit_code == 0, result.output
        assert "already running" not in result.output
    store.close()

"""The command line as a user meets it: one-line errors that name the place, nothing half-written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from connector_core.cli import app
from connector_core.sample import mobile_log

runner = CliRunner()


def _invoke(*args: str):
    return runner.invoke(app, list(args), env={"COLUMNS": "200"})


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "dcsync.yaml").write_text("connectors: {}\n")
    return tmp_path


def _stats(workdir: Path) -> dict:
    result = _invoke("log", "stats", "--json", "-c", str(workdir / "dcsync.yaml"))
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_import_export_round_trip(workdir: Path) -> None:
    source = workdir / "in.jsonl"
    source.write_text("".join(e.to_json_line() + "\n" for e in mobile_log(3, 2, 2)))
    result = _invoke("log", "import", str(source), "-c", str(workdir / "dcsync.yaml"))
    assert result.exit_code == 0, result.output
    assert "imported 11 new events" in result.stdout
    again = _invoke("log", "import", str(source), "-c", str(workdir / "dcsync.yaml"))
    assert "imported 0 new events (11 already present)" in again.stdout
    exported = workdir / "out.jsonl"
    assert _invoke("log", "export", "-o", str(exported), "-c", str(workdir / "dcsync.yaml")).exit_code == 0
    assert exported.read_text() == source.read_text()
    assert _stats(workdir)["events"] == 11


@pytest.mark.parametrize(
    ("bad_line", "expected"),
    [
        (
            '{"guid": "g-9", "entityGuid": "e", "type": "create-individual", ',
            ":3: event without guid: field '(line)': not valid JSON",
        ),
        (
            '{"guid": "g-9", "type": "create-individual", "data": {"a": 1}, '
            '"timestamp": "2025-01-01T00:00:00Z", "userId": "u"}',
            ":3: event g-9: field 'entityGuid': is missing",
        ),
    ],
)
def test_a_bad_line_is_named_and_nothing_is_written(workdir: Path, bad_line: str, expected: str) -> None:
    good = [e.to_json_line() for e in mobile_log(1, 1, 0)]
    source = workdir / "in.jsonl"
    source.write_text("\n".join([*good, bad_line]) + "\n")
    result = _invoke("log", "import", str(source), "-c", str(workdir / "dcsync.yaml"))
    assert result.exit_code == 2
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1 and "Traceback" not in message
    assert f"{source}{expected}" in message
    assert _stats(workdir)["events"] == 0


def test_config_with_an_unknown_key_is_one_line_naming_the_place(tmp_path: Path) -> None:
    config = tmp_path / "dcsync.yaml"
    config.write_text(
        "connectors:\n  r:\n    type: mock\n    bach_size: 10\n    settings: {url: 'http://x'}\n"
    )
    result = _invoke("run", "r", "-c", str(config))
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: {config}:4:16: connectors.r.bach_size: unknown key"


def test_config_with_an_unset_variable_is_one_line_naming_the_place(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("DCSYNC_NOT_SET", raising=False)
    config = tmp_path / "dcsync.yaml"
    config.write_text("connectors:\n  r:\n    type: mock\n    settings:\n      url: ${DCSYNC_NOT_SET}\n")
    result = _invoke("run", "r", "-c", str(config))
    assert result.exit_code == 2
    assert (
        f"{config}:5:12: connectors.r.settings.url: environment variable DCSYNC_NOT_SET is not set"
        in result.stderr
    )


def test_connector_settings_are_checked_against_the_connector_model(tmp_path: Path) -> None:
    config = tmp_path / "dcsync.yaml"
    config.write_text(
        "connectors:\n  r:\n    type: mock\n    settings:\n      url: http://x\n      colour: 3\n"
    )
    result = _invoke("run", "r", "-c", str(config))
    assert result.exit_code == 2
    assert f"{config}:6:15: connectors.r.settings.colour: unknown key" in result.stderr


def test_unknown_connector_type_is_reported_at_its_line(tmp_path: Path) -> None:
    config = tmp_path / "dcsync.yaml"
    config.write_text("connectors:\n  r:\n    type: nosuch\n")
    result = _invoke("run", "r", "-c", str(config))
    assert result.exit_code == 2
    assert f"{config}:3:11: connectors.r.type: no connector of type 'nosuch'" in result.stderr


def test_init_writes_a_valid_example(tmp_path: Path) -> None:
    target = tmp_path / "dcsync.yaml"
    assert _invoke("init", str(target)).exit_code == 0
    assert _invoke("init", str(target)).exit_code == 2, "never overwrite without --force"
    assert _invoke("log", "stats", "-c", str(target)).exit_code == 0


def test_demo_pushes_and_pulls_then_a_second_run_pushes_nothing(tmp_path: Path) -> None:
    first = _invoke("demo", "--workspace", str(tmp_path / "ws"))
    assert first.exit_code == 0, first.output
    rows = {
        line.split("│")[1].strip(): line.split("│")[2].strip()
        for line in first.stdout.splitlines()
        if line.count("│") >= 3
    }
    assert int(rows["records pushed"]) == 250
    assert int(rows["events appended by the pull"]) == 5
    assert rows["dead letters"] == "0"

    second = _invoke("demo", "--workspace", str(tmp_path / "ws"))
    assert second.exit_code == 0, second.output
    rows = {
        line.split("│")[1].strip(): line.split("│")[2].strip()
        for line in second.stdout.splitlines()
        if line.count("│") >= 3
    }
    assert rows["records pushed"] == "0"
    assert rows["events seeded (new)"] == "0"
    assert rows["events appended by the pull"] == "0"

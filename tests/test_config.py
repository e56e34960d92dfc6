"""The project file: every mistake reported with file, line and key, all at once; secrets from the env."""

from __future__ import annotations

from pathlib import Path

import pytest

from connector_core.config import EXAMPLE_CONFIG, ConfigError, load_config, resolve_settings


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "dcsync.yaml"
    path.write_text(text)
    return path


def test_the_example_written_by_init_is_valid(tmp_path: Path) -> None:
    loaded = load_config(_write(tmp_path, EXAMPLE_CONFIG))
    assert loaded.project.connectors["registry"].type == "mock"
    assert resolve_settings(loaded, "registry")["url"] == "http://127.0.0.1:8765"


def test_secrets_come_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REGISTRY_PASSWORD", "s3cret")
    text = "connectors:\n  r:\n    type: mock\n    settings:\n      password: ${REGISTRY_PASSWORD}\n"
    loaded = load_config(_write(tmp_path, text))
    assert resolve_settings(loaded, "r")["password"] == "s3cret"


def test_connector_settings_are_resolved_only_when_asked(tmp_path: Path, monkeypatch) -> None:
    """A command that never contacts a connector (status, runs, log import) needs none of its secrets; the
    one that does gets every unset variable named at its line."""
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    monkeypatch.delenv("NOT_SET_EITHER", raising=False)
    text = (
        "connectors:\n"
        "  r:\n"
        "    type: mock\n"
        "    settings:\n"
        "      url: ${NOT_SET_ANYWHERE}\n"
        "      nested: {headers: ['${NOT_SET_EITHER}', 'ok ${NOT_SET_EITHER:-fallback}']}\n"
    )
    path = _write(tmp_path, text)
    loaded = load_config(path)
    with pytest.raises(ConfigError) as info:
        resolve_settings(loaded, "r")
    assert info.value.problems == [
        f"{path}:5:12: connectors.r.settings.url: environment variable NOT_SET_ANYWHERE is not set",
        f"{path}:6:26: connectors.r.settings.nested.headers.0: "
        "environment variable NOT_SET_EITHER is not set",
    ]
    monkeypatch.setenv("NOT_SET_ANYWHERE", "http://x")
    monkeypatch.setenv("NOT_SET_EITHER", "h")
    assert resolve_settings(loaded, "r") == {"url": "http://x", "nested": {"headers": ["h", "ok h"]}}
    assert loaded.project.connectors["r"].settings["url"] == "${NOT_SET_ANYWHERE}", "kept for the next ask"


def test_unknown_key_and_missing_variable_are_all_reported_with_lines(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    text = (
        "version: 1\n"
        "eventlog:\n"
        "  path: events.db\n"
        "  colour: red\n"
        "connectors:\n"
        "  r:\n"
        "    type: mock\n"
        "    settings:\n"
        "      url: ${NOT_SET_ANYWHERE}\n"
        "      token: ${broken\n"
    )
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    problems = info.value.problems
    assert any(p.startswith(f"{path}:4:") and "eventlog.colour: unknown key" in p for p in problems)
    assert any(f"{path}:10:" in p and "malformed" in p for p in problems), "a typo is found up front"
    assert not any("NOT_SET_ANYWHERE" in p for p in problems), "a connector secret is read when it is used"
    assert all("\n" not in p for p in problems)


def test_broken_yaml_names_the_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "connectors:\n  r: [unclosed\n")
    with pytest.raises(ConfigError, match=rf"{path}:\d+:\d+: invalid YAML"):
        load_config(path)


def test_relative_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    sub = tmp_path / "proj"
    sub.mkdir()
    loaded = load_config(_write(sub, "eventlog:\n  path: data/events.db\n"))
    assert loaded.resolve_path(loaded.project.eventlog.path) == sub / "data" / "events.db"


def test_missing_file_suggests_init(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="dcsync init"):
        load_config(tmp_path / "nope.yaml")

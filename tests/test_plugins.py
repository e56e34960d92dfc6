"""The plugin host: third-party connectors install like any package; a broken one never takes dcsync down."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from connector_core.plugins import PluginError, load_plugins

TINY_CONNECTOR = """
from connector_core.connector import Capability, CheckResult, Connector, ConnectorConfig
from connector_core.hookspecs import hookimpl


class TinyConfig(ConnectorConfig):
    url: str = "http://example.invalid"


class TinyConnector(Connector):
    type_name = "tiny"
    config_model = TinyConfig
    capabilities = frozenset({Capability.PUSH})
    description = "a connector from another distribution"

    def check(self):
        return CheckResult(True, "tiny is fine")


@hookimpl
def dcsync_connectors():
    return [TinyConnector]


def _shout(value, params):
    return str(value).upper()


@hookimpl
def dcsync_transforms():
    from connector_core.mapping import TransformDef

    return [
        TransformDef("shout", function=_shout, input="any", output="str", summary="upper-case a value"),
        {"name": "Not A Name", "function": _shout},
    ]
"""

SHOUTING_MAPPING = """\
version: 1
mappings:
  person:
    match: {entity_name: individual}
    push:
      fields:
        name: {path: $.data.first_name, pipe: [shout]}
"""


def _make_dist(root: Path, name: str, module_source: str, entry_name: str) -> Path:
    src = root / name
    src.mkdir()
    (src / f"{name}.py").write_text(textwrap.dedent(module_source))
    (src / "pyproject.toml").write_text(
        textwrap.dedent(
            f"""
            [build-system]
            requires = ["setuptools>=61"]
            build-backend = "setuptools.build_meta"

            [project]
            name = "{name}"
            version = "0.3.1"

            [tool.setuptools]
            py-modules = ["{name}"]

            [project.entry-points."dcsync.connectors"]
            {entry_name} = "{name}"
            """
        )
    )
    return src


def _install(src: Path, target: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), str(src)],
        check=True,
        capture_output=True,
    )


def _dcsync(target: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), *sys.path]), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "connector_core.cli", *args],
        capture_output=True,
        text=True,
        env=env,
    )


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dists")
    target = root / "site"
    _install(_make_dist(root, "tiny_dcsync_plugin", TINY_CONNECTOR, "tiny"), target)
    broken = "raise ImportError('this plugin needs a library that is not installed')\n"
    _install(_make_dist(root, "broken_dcsync_plugin", broken, "broken"), target)
    return target


def test_a_connector_from_another_distribution_is_listed(installed: Path) -> None:
    result = _dcsync(installed, "plugins")
    assert result.returncode == 0, result.stderr
    lines = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if "│" in line}
    assert "tiny" in lines and "tiny_dcsync_plugin" in lines["tiny"] and "0.3.1" in lines["tiny"]
    assert "push" in lines["tiny"]
    assert "mock" in lines, "built-in connectors still load beside third-party ones"


def test_mapping_commands_use_the_transforms_plugins_add_and_name_the_ones_skipped(
    installed: Path, tmp_path: Path
) -> None:
    mapping = tmp_path / "shouting.yaml"
    mapping.write_text(SHOUTING_MAPPING)
    sample = tmp_path / "events.jsonl"
    sample.write_text(
        '{"guid": "e1", "entityGuid": "p1", "type": "create-individual", "timestamp": '
        '"2025-01-01T00:00:00.000Z", "userId": "u", "syncLevel": 0, '
        '"data": {"entityName": "individual", "first_name": "ana"}}\n'
    )
    validated = _dcsync(installed, "mapping", "validate", str(mapping))
    assert validated.returncode == 0, validated.stdout + validated.stderr
    assert "shouting.yaml: ok, 1 mapping" in validated.stdout
    assert "warning: plugin transform skipped:" in validated.stderr and "Not A Name" in validated.stderr
    tested = _dcsync(installed, "mapping", "test", str(mapping), "--sample", str(sample), "--format", "json")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert '"ANA"' in tested.stdout
    listed = _dcsync(installed, "mapping", "transforms")
    assert "shout" in listed.stdout and "upper-case a value" in listed.stdout
    without = subprocess.run(  # the same mapping where the plugin is not installed: an unknown transform
        [sys.executable, "-m", "connector_core.cli", "mapping", "validate", str(mapping)],
        capture_output=True,
        text=True,
    )
    assert without.returncode == 2 and "shout" in without.stdout


def test_a_plugin_that_fails_to_import_is_reported_and_skipped(installed: Path) -> None:
    result = _dcsync(installed, "plugins")
    assert result.returncode == 0
    assert "broken" in result.stderr and "needs a library that is not installed" in result.stderr
    assert "Traceback" not in result.stderr


def test_strict_mode_makes_a_broken_plugin_fatal(installed: Path) -> None:
    result = _dcsync(installed, "plugins", "--strict")
    assert result.returncode == 2
    assert "broken" in result.stderr and "Traceback" not in result.stderr


class _Misspelled:
    @staticmethod
    def dcsync_conectors() -> list:  # the typo a plugin author makes
        return []


class _NotAConnector:
    @staticmethod
    def dcsync_connectors() -> list:
        return [dict]


def test_hook_contract_violations_are_reported_with_the_plugin_name() -> None:
    host = load_plugins(extra_plugins=[("typo", _Misspelled()), ("wrong", _NotAConnector())])
    reported = {f.name: f.error for f in host.failures}
    assert "unknown hook 'dcsync_conectors'" in reported["typo"]
    assert "not a Connector subclass" in reported["wrong"]
    assert "mock" in host.connectors


def test_two_plugins_may_not_claim_one_connector_type() -> None:
    from connectors.mock import plugin as mock_plugin

    class Again:
        dcsync_connectors = staticmethod(mock_plugin.dcsync_connectors)

    host = load_plugins(extra_plugins=[("copycat", Again())])
    assert any("already provided" in f.error for f in host.failures)
    with pytest.raises(PluginError, match="already provided"):
        load_plugins(strict=True, extra_plugins=[("copycat", Again())])


def test_unknown_connector_type_names_what_is_installed() -> None:
    host = load_plugins()
    with pytest.raises(PluginError, match=r"no connector of type 'nope' .*mock"):
        host.connector_class("nope")

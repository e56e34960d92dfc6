"""The plugin author kit: a generated connector installs, registers and passes its tests out of the box.

Also here: the generated hook reference (docs/hooks.md) is the one committed.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from connector_core.cli import app
from connector_core.testing import hookdoc
from connector_core.testing.scaffold import LAYOUT, Names, ScaffoldError, generate

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()


def _env(*paths: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([*map(str, paths), *sys.path]), "COLUMNS": "200"}


def test_names_are_spelt_for_each_place_they_go() -> None:
    names = Names.of("acme-registry")
    assert (names.name, names.module, names.cls, names.dist, names.env) == (
        "acme-registry",
        "acme_registry_dcsync",
        "AcmeRegistry",
        "dcsync-acme-registry",
        "ACME_REGISTRY",
    )
    for bad in ("Acme", "1acme", "acme--x", "acme.x", ""):
        with pytest.raises(ScaffoldError, match="lower-case"):
            Names.of(bad)


def test_every_template_is_rendered_and_nothing_is_left_unfilled(tmp_path: Path) -> None:
    written = generate("acme", tmp_path / "acme")
    assert len(written) == len(LAYOUT)
    relative = {p.relative_to(tmp_path / "acme").as_posix() for p in written}
    assert {
        "pyproject.toml",
        "acme_dcsync/connector.py",
        "tests/test_contract.py",
        "mappings/acme.yaml",
    } <= relative
    for path in written:
        text = path.read_text()
        assert "{{" not in text.replace("{{{", ""), f"{path}: unfilled placeholder"
        for word in ("TODO", "FIXME", "NotImplementedError"):
            assert word not in text, f"{path} ships {word}"
    assert 'acme = "acme_dcsync.plugin"' in (tmp_path / "acme" / "pyproject.toml").read_text()


def test_generation_refuses_a_directory_with_files(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(ScaffoldError, match="not an empty directory"):
        generate("acme", tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_the_command_refuses_a_type_that_is_already_installed(tmp_path: Path) -> None:
    result = runner.invoke(app, ["new-connector", "mock", "--dir", str(tmp_path / "x")])
    assert result.exit_code == 2 and "already installed" in result.output
    assert not (tmp_path / "x").exists()
    bad = runner.invoke(app, ["new-connector", "Acme", "--dir", str(tmp_path / "y")])
    assert bad.exit_code == 2 and "lower-case" in bad.output


@pytest.mark.skipif(importlib.util.find_spec("ruff") is None, reason="ruff is not installed (dev extra)")
def test_the_generated_package_is_lint_clean(tmp_path: Path) -> None:
    generate("acme-registry", tmp_path / "pkg")
    for command in (["check", "."], ["format", "--check", "."]):
        result = subprocess.run(
            [sys.executable, "-m", "ruff", *command], cwd=tmp_path / "pkg", capture_output=True, text=True
        )
        assert result.returncode == 0, result.stdout + result.stderr


def test_a_generated_connector_installs_passes_its_tests_and_is_listed(tmp_path: Path) -> None:
    """The acceptance check: generate, pip install, run its tests, `dcsync plugins` lists it."""
    # DCSYNC_PLUGINS: an `acme` installed by an earlier CI step must not make the command refuse the name
    made = runner.invoke(
        app, ["new-connector", "acme", "--dir", str(tmp_path / "acme")], env={"DCSYNC_PLUGINS": "mock"}
    )
    assert made.exit_code == 0, made.output
    site = tmp_path / "site"
    install = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--target",
            str(site),
            str(tmp_path / "acme"),
        ],
        capture_output=True,
        text=True,
    )
    assert install.returncode == 0, install.stderr
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=tmp_path / "acme",
        env=_env(site),
        capture_output=True,
        text=True,
    )
    assert tests.returncode == 0, tests.stdout[-3000:] + tests.stderr[-2000:]
    assert " passed" in tests.stdout and "failed" not in tests.stdout
    listed = subprocess.run(
        [sys.executable, "-m", "connector_core.cli", "plugins"],
        env=_env(site),
        capture_output=True,
        text=True,
    )
    assert listed.returncode == 0, listed.stderr
    rows = {line.split("│")[1].strip(): line for line in listed.stdout.splitlines() if "│" in line}
    assert "acme" in rows and "dcsync-acme" in rows["acme"]


def test_the_committed_hook_reference_is_up_to_date() -> None:
    committed = (ROOT / "docs" / "hooks.md").read_text(encoding="utf-8")
    assert committed == hookdoc.render(), (
        "docs/hooks.md is stale: run `python -m connector_core.testing.hookdoc > docs/hooks.md`"
    )

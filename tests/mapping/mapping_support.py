"""Paths and a CLI runner shared by the mapping engine's scenarios."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner, Result

from connector_core.mapping.cli import app

HERE = Path(__file__).parent
REPO = HERE.parent.parent
SHIPPED = REPO / "mappings" / "datacollect-registrant.yaml"
SAMPLE = HERE / "samples" / "mobile-sample.jsonl"
EXPECTED = HERE / "samples" / "registrant-expected.jsonl"
BAD = HERE / "bad"


def invoke(*args: object) -> Result:
    """Run ``dcsync mapping ...`` as a user would (wide terminal so lines are not wrapped)."""
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})

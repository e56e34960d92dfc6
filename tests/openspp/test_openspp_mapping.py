"""The shipped OpenSPP mapping: valid, golden outputs both ways, and a lossless round trip of what it maps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from connector_core.cli import app
from connector_core.entities import fold
from connector_core.mapping import MapContext, load_mapping
from connector_core.mapping.report import read_events
from connectors.openspp.sample import registry_log

ROOT = Path(__file__).resolve().parents[2]
MAPPING = ROOT / "mappings" / "openspp.yaml"
SAMPLES = Path(__file__).resolve().parent / "samples"
runner = CliRunner()


def _cli(*args: str | Path) -> tuple[int, str]:
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def test_the_mapping_validates() -> None:
    code, out = _cli("mapping", "validate", MAPPING)
    assert code == 0, out
    assert "ok, 2 mappings: household (household), individual (individual)" in out


def test_push_matches_the_golden_payloads() -> None:
    code, out = _cli(
        "mapping",
        "test",
        MAPPING,
        "--sample",
        SAMPLES / "mobile-sample.jsonl",
        "--expect",
        SAMPLES / "openspp-expected.jsonl",
    )
    assert code == 0, out
    assert "matches" in out and "0 difference(s)" in out


def test_pull_matches_the_golden_entity_data() -> None:
    code, out = _cli(
        "mapping",
        "test",
        MAPPING,
        "--direction",
        "pull",
        "--sample",
        SAMPLES / "openspp-records.jsonl",
        "--expect",
        SAMPLES / "datacollect-expected.jsonl",
    )
    assert code == 0, out
    assert "matches" in out and "0 difference(s)" in out


def test_a_changed_golden_value_is_reported(tmp_path: Path) -> None:
    """The golden comparison is not vacuous: one changed expectation fails with its field path."""
    golden = (SAMPLES / "openspp-expected.jsonl").read_text().replace('"DOE, JANE, MARIE"', '"DOE, JANE"')
    changed = tmp_path / "changed-expected.jsonl"
    changed.write_text(golden)
    code, out = _cli(
        "mapping", "test", MAPPING, "--sample", SAMPLES / "mobile-sample.jsonl", "--expect", changed
    )
    assert code == 1 and "name" in out and "DOE, JANE, MARIE" in out


def _subset_of(pulled: Any, original: Any) -> bool:
    """Pulled data holds only what was there: the same scalars, and list items with a subset of keys."""
    if isinstance(pulled, dict):
        return isinstance(original, dict) and all(
            k in original and _subset_of(v, original[k]) for k, v in pulled.items()
        )
    if isinstance(pulled, list):
        return (
            isinstance(original, list)
            and len(pulled) == len(original)
            and all(_subset_of(p, o) for p, o in zip(pulled, original, strict=True))
        )
    return bool(pulled == original)


@pytest.mark.parametrize(
    "events",
    [
        pytest.param(lambda: list(read_events(SAMPLES / "mobile-sample.jsonl")), id="sample"),
        pytest.param(lambda: list(registry_log(households=30, members=5, updates=20)), id="generated"),
    ],
)
def test_what_is_pushed_comes_back_unchanged(events: Any) -> None:
    """pull(push(entity)) gives back every field it carries, as the entity holds it: a pushed entity read
    back from OpenSPP is not a change. The mapping's normalisations are the only differences: text comes
    back trimmed, and a coded answer (gender) in the case its lookup table writes it."""
    mappings = load_mapping(MAPPING)

    def link(guid: str) -> str:
        return f"ext-{guid}"

    def resolve(external_id: str, _name: str | None = None) -> str:
        return external_id.removeprefix("ext-")

    ctx = MapContext(link=link, resolve=resolve)
    entities = fold(events(), lambda guid: None).changed
    checked = 0
    for entity in entities.values():
        if entity is None:
            continue
        doc = entity.to_json()
        mapping = mappings.for_entity(doc)
        if mapping is None:
            continue
        pushed = mapping.push(doc, ctx)
        assert pushed.ok and pushed.record is not None, pushed.reason
        back = mapping.pull(pushed.record, ctx)
        assert back.ok and back.record is not None, back.reason
        original = {k: v.strip() if isinstance(v, str) else v for k, v in entity.data.items()}
        if "gender" in original:
            original["gender"] = original["gender"].lower()
        assert _subset_of(back.record, original), (entity.guid, back.record, entity.data)
        carried = {"first_name", "last_name", "date_of_birth", "gender", "relationship", "household_name"}
        assert carried & set(entity.data) <= set(back.record), entity.guid
        checked += 1
    assert checked >= 6

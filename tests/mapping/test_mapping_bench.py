"""The benchmark's hand-written baseline is a second, independent implementation of the shipped mapping:
the engine must agree with it record for record (this is what makes the benchmark's ratio honest)."""

from __future__ import annotations

import importlib.util
from types import ModuleType

from mapping_support import REPO

from connector_core.mapping import MapContext, MappingSet


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_mapping", REPO / "bench" / "mapping.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_engine_and_hand_written_code_agree_on_generated_individuals(shipped: MappingSet):
    bench = _bench()
    entities, links = bench.make_entities(500, seed=11)
    mapping = shipped.get("individual")
    ctx = MapContext(link=links.get)
    for entity in entities:
        result = mapping.push(entity, ctx)
        assert result.errors == []
        assert result.record == bench.handwritten(entity, links.get)
    for entity in entities[:5]:
        assert bench.naive(entity, links.get) == bench.handwritten(entity, links.get)


def test_the_benchmark_runs_and_reports_its_figures(capsys):
    _bench().main(["--records", "300", "--naive-records", "3"])
    out = capsys.readouterr().out
    assert "records/s" in out and "compiled / hand-written time" in out
    assert "extrapolated: timed 3 records" in out
    assert "outputs identical: compiled == hand-written on all 300" in out
    assert "validation-scale (8k / 2k fields)" in out


def test_the_generated_wide_mapping_is_valid_and_as_wide_as_asked():
    from connector_core.mapping.validate import check_text

    text = _bench().wide_mapping(500)
    assert check_text(text, "wide.yaml") == []
    assert text.count("$.data.answer_") == 500

"""The fast paths of the hot loop keep the slow paths' meaning: JSON codec, stored events, timestamps."""

from __future__ import annotations

import gc
import json
import uuid
from typing import Any

import pytest

from connector_core import codec
from connector_core.events import FormSubmission, SyncLevel, normalize_timestamp
from connectors.mock.connector import _EVENT_NS, _uuid5


@pytest.mark.parametrize(
    "value",
    [
        {"a": 1, "b": [1.5, None, True], "c": {"d": "é ü 中"}},
        {"big": 2**70},  # beyond orjson's 64-bit integers
        {1: "non-string key"},  # orjson refuses; the standard library writes "1"
        ["lone \ud800 surrogate"],
    ],
)
def test_dumps_writes_what_the_standard_library_would(value: Any) -> None:
    expected = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    assert codec.dumps(value) == expected
    assert json.loads(codec.dumps_bytes(value)) == json.loads(json.dumps(value))


class _Opaque:
    def __str__(self) -> str:
        return "opaque"


def test_dumps_uses_default_for_unknown_types() -> None:
    marker = _Opaque()
    assert codec.loads(codec.dumps({"u": marker}, default=str)) == {"u": str(marker)}
    assert codec.loads(codec.dumps_bytes({"u": marker}, default=str)) == {"u": str(marker)}
    with pytest.raises(TypeError):
        codec.dumps({"u": marker})


def test_loads_reads_tokens_only_the_standard_library_accepts() -> None:
    value = codec.loads('{"x": NaN}')
    assert value["x"] != value["x"]  # NaN, as an older SQLite store may hold
    with pytest.raises(ValueError):
        codec.loads("{not json")


def test_a_non_finite_float_is_written_as_null() -> None:
    assert codec.dumps({"x": float("inf")}) == '{"x":null}'


def test_a_stored_event_is_indistinguishable_from_a_validated_one() -> None:
    raw = {
        "guid": "e1",
        "entityGuid": "p1",
        "type": "create-individual",
        "data": {"name": "A"},
        "timestamp": "2024-05-01T10:00:00.123Z",
        "userId": "u1",
        "syncLevel": 2,
    }
    validated = FormSubmission.from_json(raw)
    stored = FormSubmission.stored("e1", "p1", "create-individual", {"name": "A"}, raw["timestamp"], "u1", 2)
    assert stored == validated
    assert stored.sync_level is SyncLevel.EXTERNAL
    assert stored.to_json() == validated.to_json() == raw
    assert stored.model_fields_set == validated.model_fields_set
    assert stored.model_copy(update={"guid": "e2"}).guid == "e2"
    with pytest.raises(ValueError):
        stored.guid = "changed"  # frozen like any other event


@pytest.mark.parametrize(
    ("given", "written"),
    [
        ("2024-05-01T10:00:00.123Z", "2024-05-01T10:00:00.123Z"),
        ("2024-05-01T10:00:00Z", "2024-05-01T10:00:00.000Z"),
        ("2024-05-01T12:00:00.123456+02:00", "2024-05-01T10:00:00.123Z"),
        ("2024-05-01 10:00:00", "2024-05-01T10:00:00.000Z"),
    ],
)
def test_timestamps_are_written_in_datacollect_form(given: str, written: str) -> None:
    assert normalize_timestamp(given) == written


@pytest.mark.parametrize(
    "bad", ["2024-13-01T10:00:00.000Z", "2024-02-30T10:00:00.000Z", "2024-05-01T25:00:00.000Z"]
)
def test_a_canonical_looking_timestamp_is_still_checked(bad: str) -> None:
    with pytest.raises(ValueError, match="not a timestamp"):
        normalize_timestamp(bad)


@pytest.mark.parametrize("name", ["mock|g1|create-individual|{}", "ü|中|" + "x" * 500, ""])
def test_the_mock_event_guid_is_uuid5(name: str) -> None:
    assert _uuid5(name.encode()) == str(uuid.uuid5(_EVENT_NS, name))


def test_a_run_restores_the_collector_threshold() -> None:
    from connector_core.sync.runner import batch_collector

    before = gc.get_threshold()
    with batch_collector():
        assert gc.get_threshold()[0] >= 20_000
        with batch_collector():  # a second run in the same process (the scheduler)
            pass
        assert gc.get_threshold()[0] >= 20_000  # still held by the outer run
    assert gc.get_threshold() == before

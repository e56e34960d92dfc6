"""Importing and exporting JSON Lines: an operator's bulk load, and what happens when a line is bad."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from contracts.scenarios import group_log, mobile_log

from connector_core.eventlog import SqliteEventLog, export_jsonl, import_jsonl, iter_jsonl
from connector_core.events import EventError


@pytest.fixture
def log(tmp_path: Path) -> Iterator[SqliteEventLog]:
    log = SqliteEventLog(tmp_path / "events.db")
    yield log
    log.close()


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_a_file_round_trips_byte_for_byte(log: SqliteEventLog, tmp_path: Path) -> None:
    events = mobile_log() + group_log()
    source = write_lines(tmp_path / "in.jsonl", [e.to_json_line() for e in events])

    result = import_jsonl(log, source, batch_size=4)
    assert result.new == len(events) and result.duplicates == 0
    assert len(result.issues) == 2  # the group log's two inapplicable events

    out = tmp_path / "out.jsonl"
    assert export_jsonl(log, out) == len(events)
    assert out.read_bytes() == source.read_bytes()


def test_reimporting_a_file_adds_nothing(log: SqliteEventLog, tmp_path: Path) -> None:
    source = write_lines(tmp_path / "in.jsonl", [e.to_json_line() for e in mobile_log()])
    import_jsonl(log, source)
    again = import_jsonl(log, source, batch_size=3)
    assert again.new == 0 and again.duplicates == len(mobile_log())


def test_export_after_a_cursor_writes_only_newer_events(log: SqliteEventLog) -> None:
    events = mobile_log()
    log.append(events)
    cursor = log.read(None, 4).cursor
    out = io.StringIO()
    assert export_jsonl(log, out, after=cursor) == len(events) - 4
    assert [json.loads(line)["guid"] for line in out.getvalue().splitlines()] == [e.guid for e in events[4:]]


def test_lenient_input_is_written_back_in_datacollect_form(log: SqliteEventLog, tmp_path: Path) -> None:
    raw = {
        "guid": "e-1",
        "entityGuid": "p-1",
        "type": "create-individual",
        "data": {"name": "Jane"},
        "timestamp": "2025-07-01 11:00:00+03:00",  # Odoo style with an offset
        "userId": 7,
        "syncLevel": "2",
    }
    source = write_lines(tmp_path / "in.jsonl", [json.dumps(raw)])
    import_jsonl(log, source)
    out = io.StringIO()
    export_jsonl(log, out)
    assert json.loads(out.getvalue()) == raw | {
        "timestamp": "2025-07-01T08:00:00.000Z",
        "userId": "7",
        "syncLevel": 2,
    }


def test_blank_lines_are_skipped_but_counted(tmp_path: Path) -> None:
    good = [e.to_json_line() for e in mobile_log()[:2]]
    source = write_lines(tmp_path / "in.jsonl", ["", good[0], "   ", good[1], "{oops"])
    with pytest.raises(EventError, match=r"in\.jsonl:5"):
        list(iter_jsonl(source))
    assert [e.guid for e in iter_jsonl(io.StringIO("\n".join(good[:2]) + "\n\n"))] == [
        json.loads(line)["guid"] for line in good
    ]


def test_a_malformed_line_names_its_place_and_nothing_is_written(log: SqliteEventLog, tmp_path: Path) -> None:
    lines = [e.to_json_line() for e in mobile_log()]
    lines.insert(7, '{"guid": "e-bad", "entityGuid": ')
    source = write_lines(tmp_path / "households.jsonl", lines)
    with pytest.raises(EventError) as caught:
        import_jsonl(log, source, batch_size=2)  # several batches would precede the bad line
    message = str(caught.value)
    assert f"{source}:8" in message and "not valid JSON" in message
    assert log.count() == 0 and list(log.iter_entities()) == []


def test_an_event_without_entity_guid_names_line_guid_and_field(log: SqliteEventLog, tmp_path: Path) -> None:
    lines = [e.to_json_line() for e in mobile_log()]
    broken = json.loads(lines[-1])
    del broken["entityGuid"]
    lines[-1] = json.dumps(broken)
    source = write_lines(tmp_path / "edits.jsonl", lines)
    with pytest.raises(EventError) as caught:
        import_jsonl(log, source, batch_size=1)
    err = caught.value
    assert err.where == f"{source}:{len(lines)}"
    assert err.guid == broken["guid"] and err.field == "entityGuid"
    assert f"{source}:{len(lines)}" in str(err) and broken["guid"] in str(err)
    assert "entityGuid" in str(err)
    assert log.count() == 0


def test_an_empty_data_object_is_refused_as_datacollect_does(tmp_path: Path) -> None:
    line = json.dumps(
        {
            "guid": "e-1",
            "entityGuid": "p-1",
            "type": "update-individual",
            "data": {},
            "timestamp": "2025-01-01T00:00:00.000Z",
            "userId": "admin",
        }
    )
    with pytest.raises(EventError, match=r"x\.jsonl:1: event e-1: field 'data'"):
        list(iter_jsonl(write_lines(tmp_path / "x.jsonl", [line])))


def test_a_file_object_can_be_imported_and_exported(log: SqliteEventLog) -> None:
    text = "".join(e.to_json_line() + "\n" for e in group_log())
    assert import_jsonl(log, io.StringIO(text)).new == len(group_log())
    out = io.StringIO()
    export_jsonl(log, out)
    assert out.getvalue() == text


class _CountingLog:
    """An event log that records how many events each append got, and whether they came as a stream."""

    def __init__(self, inner: SqliteEventLog) -> None:
        self.inner = inner
        self.appends: list[tuple[int, bool]] = []

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def append(self, events):  # type: ignore[no-untyped-def]
        streamed = not isinstance(events, list | tuple)
        events = list(events)
        self.appends.append((len(events), streamed))
        return self.inner.append(events)


def test_an_import_commits_a_streamed_run_of_events_per_append(log: SqliteEventLog, tmp_path: Path) -> None:
    events = mobile_log() + group_log()
    source = write_lines(tmp_path / "in.jsonl", [e.to_json_line() for e in events])
    counting = _CountingLog(log)

    result = import_jsonl(counting, source, batch_size=2, commit_every=5)  # type: ignore[arg-type]

    sizes = [size for size, _ in counting.appends]
    assert sizes == [5] * (len(events) // 5) + ([len(events) % 5] if len(events) % 5 else [])
    assert all(streamed for _, streamed in counting.appends)  # never a list built of the whole run
    assert result.new == len(events) == log.count()


def test_a_copy_commits_runs_spanning_pages_and_reports_progress_per_page(
    log: SqliteEventLog, tmp_path: Path
) -> None:
    from connector_core.eventlog import copy_events

    events = mobile_log() + group_log()
    log.append(events)
    target = _CountingLog(SqliteEventLog(tmp_path / "copy.db"))
    seen: list[int] = []
    try:
        report = copy_events(
            log, target, batch=3, commit_every=7, progress=lambda done, _total: seen.append(done)
        )  # type: ignore[arg-type]
        assert [size for size, _ in target.appends][:-1] == [7] * (len(target.appends) - 1)
        assert sum(size for size, _ in target.appends) == len(events) == report.read == target.inner.count()
        assert seen == sorted(seen) and seen[-1] == len(events) and len(seen) == -(-len(events) // 3)
        again = copy_events(log, target, batch=3, commit_every=7)  # type: ignore[arg-type]
        assert again.result.new == 0 and again.result.duplicates == len(events)
    finally:
        target.inner.close()

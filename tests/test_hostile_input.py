"""Hostile input, row by row (issue 17): every broken file a new user or an attacker may hand dcsync ends in
one located line and exit 2 (or the documented code), no traceback, nothing written, and fast.

Each test names the row of the issue's table it proves. Time limits are on this process's CPU time, not the
wall clock, so a busy machine cannot fail them (nor hide a slow parser: CPU time is what it costs).
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from connector_core.cli import app
from connector_core.mapping.source import Document
from connector_core.mapping.validate import TargetUse, target_conflicts

runner = CliRunner()
DCSYNC = [sys.executable, "-m", "connector_core.cli"]
LOCATED = re.compile(r"^error: \S+:\d+(:\d+)?: ")


def _invoke(*args: str | Path):
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "300"})


def _one_located_error(result, code: int = 2) -> str:
    """The contract of every row: the exit code, no traceback, one ``error: file:line[:col]: ...`` line."""
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert LOCATED.match(lines[0]), lines[0]
    return lines[0]


def _bomb(levels: int = 12) -> str:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        prev, cur = chr(ord("a") + i - 1), chr(ord("a") + i)
        lines.append(f"{cur}: &{cur} [" + ",".join([f"*{prev}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def _event(guid: str, entity: str, kind: str = "create-individual", **data: object) -> dict:
    return {
        "guid": guid,
        "entityGuid": entity,
        "type": kind,
        "data": data or {"name": "Jane"},
        "timestamp": "2025-01-01T10:00:00.000Z",
        "userId": "admin",
        "syncLevel": 0,
    }


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "dcsync.yaml").write_text("connectors: {}\n")
    return tmp_path


def _events_in_log(project: Path) -> int:
    db = project / "events.db"
    if not db.exists():
        return 0
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT count(*) FROM events").fetchone()[0])


# -- YAML: alias bombs, depth, size -------------------------------------------------------------------


def test_alias_bomb_in_the_project_file_fails_in_under_a_second_for_run_and_schedule_list(
    tmp_path: Path,
) -> None:
    config = tmp_path / "dcsync.yaml"
    config.write_text("version: 1\n" + _bomb())
    for args in (["run", "x", "--dry-run"], ["schedule", "list"]):
        started = time.process_time()
        result = _invoke(*args, "-c", config)
        elapsed = time.process_time() - started
        line = _one_located_error(result)
        assert f"{config}:7:" in line and "aliases expand to more than" in line
        assert elapsed < 1.0, elapsed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dcsync.yaml"]  # no store was created


def test_alias_bomb_in_a_mapping_fails_in_under_a_second(tmp_path: Path) -> None:
    mapping = tmp_path / "m.yaml"
    mapping.write_text(_bomb())
    started = time.process_time()
    result = _invoke("mapping", "validate", mapping)
    assert time.process_time() - started < 1.0
    assert result.exit_code == 2
    assert f"{mapping}:6:" in result.stdout and "aliases expand" in result.stdout
    assert "MemoryError" not in result.output


def test_alias_bomb_in_a_lookup_file_is_a_located_mapping_error(tmp_path: Path) -> None:
    (tmp_path / "codes.yaml").write_text(_bomb())
    mapping = tmp_path / "m.yaml"
    mapping.write_text(
        "mappings:\n  individual:\n    fields:\n      g: {path: $.data.g, pipe: [{lookup: codes}]}\n"
        "lookups:\n  codes: {file: codes.yaml}\n"
    )
    result = _invoke("mapping", "validate", mapping)
    assert result.exit_code == 2
    assert "aliases expand" in result.stdout and "codes.yaml:6:" in result.stdout


def test_yaml_nested_too_deep_and_a_file_too_large_are_refused(tmp_path: Path, monkeypatch) -> None:
    config = tmp_path / "dcsync.yaml"
    for depth in (100, 5000):  # ours, and libyaml's own limit (1000) when PyYAML has it
        config.write_text("a: " + "[" * depth + "]" * depth + "\n")
        line = _one_located_error(_invoke("run", "x", "-c", config))
        assert f"{config}:1:" in line and ("nested deeper than 64" in line or "nesting depth" in line)
    import connector_core.config as config_module

    monkeypatch.setattr(config_module, "MAX_YAML_BYTES", 100)
    config.write_text("connectors: {}\n" + "#" * 200 + "\n")
    result = _invoke("schedule", "list", "-c", config)
    assert result.exit_code == 2 and "more than the limit of 100 bytes" in result.stderr


def test_a_non_utf8_mapping_is_located_by_line_and_column(tmp_path: Path) -> None:
    mapping = tmp_path / "m.yaml"
    mapping.write_bytes(b"mappings:\n  individual:\n    fields:\n      name: $.data.n\xe9m\n")
    result = _invoke("mapping", "validate", mapping)
    assert result.exit_code == 2
    assert f"{mapping}:4:21: not UTF-8" in result.stdout


def test_a_control_character_in_yaml_is_located_by_line_and_column(tmp_path: Path) -> None:
    config = tmp_path / "dcsync.yaml"
    config.write_text("version: 1\nconnectors: {}\n# ok\x00\n")
    line = _one_located_error(_invoke("schedule", "list", "-c", config))
    assert f"{config}:3:5: invalid YAML: character '\\x00' (U+0000) is not allowed" in line
    mapping = tmp_path / "m.yaml"
    mapping.write_text("mappings:\n  individual:\n    fields: {a: $.data.\x07}\n")
    result = _invoke("mapping", "validate", mapping)
    assert result.exit_code == 2 and f"{mapping}:3:24: invalid YAML: character" in result.stdout


def test_a_non_utf8_project_file_is_located_by_line_and_column(tmp_path: Path) -> None:
    config = tmp_path / "dcsync.yaml"
    config.write_bytes(b"version: 1\nconnectors:\n  caf\xe9: {type: mock}\n")
    line = _one_located_error(_invoke("run", "x", "-c", config))
    assert f"{config}:3:6: not UTF-8" in line


# -- mappings: scale, typos, links, context through a config --------------------------------------


def test_target_conflicts_is_near_linear() -> None:
    """The 95k-field mapping took hours in the pairwise check; 60,000 uses must take well under a second
    (pairwise would be 1.8e9 comparisons)."""
    doc = Document(file="m.yaml", data=None)
    uses = [
        TargetUse((f"group_{i % 97}", f"field_{i}"), f"f{i}", ("mappings", "m", "fields", f"f{i}"))
        for i in range(60_000)
    ]
    uses.append(TargetUse(("group_3", "field_3"), "dup", ("mappings", "m", "fields", "dup")))
    uses.append(TargetUse(("group_5",), "parent", ("mappings", "m", "fields", "parent")))
    started = time.process_time()
    issues = target_conflicts(doc, uses, mapping="m", direction="push")
    assert time.process_time() - started < 1.0
    assert [i.field for i in issues] == ["dup", "parent"]
    assert "duplicate push target 'group_3.field_3'" in issues[0].message
    assert "conflicting push targets 'group_5' and 'group_5.field_5'" in issues[1].message


@pytest.mark.slow
def test_a_95k_field_mapping_validates_in_seconds(tmp_path: Path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    from mapping import wide_mapping  # type: ignore[import-not-found]

    mapping = tmp_path / "wide.yaml"
    mapping.write_text(wide_mapping(95_000))
    assert mapping.stat().st_size > 4_000_000
    started = time.perf_counter()
    result = _invoke("mapping", "validate", mapping)
    assert result.exit_code == 0, result.output[-500:]
    assert time.perf_counter() - started < 60


def test_a_typo_in_a_source_path_fails_mapping_test(tmp_path: Path) -> None:
    mapping = tmp_path / "m.yaml"
    mapping.write_text(
        "mappings:\n  individual:\n    fields:\n"
        "      given_name: $.data.frist_name\n"
        "      family_name: $.data.last_name\n"
        "      phone: {path: $.data.phone, optional: true}\n"
    )
    sample = tmp_path / "s.jsonl"
    sample.write_text(
        json.dumps(_event("e1", "p1", entityName="individual", first_name="Jane", last_name="Doe")) + "\n"
    )
    result = _invoke("mapping", "test", mapping, "--sample", sample)
    assert result.exit_code == 1, result.output
    assert "field given_name <- $.data.frist_name matched no sample record" in result.stdout
    assert "family_name" not in result.stdout.split("matched no sample record")[0].split("\n")[-1]
    assert "phone <-" not in result.stdout  # optional: true


def test_a_typo_in_a_pull_only_path_fails_mapping_test_on_pull(tmp_path: Path) -> None:
    mapping = tmp_path / "m.yaml"
    mapping.write_text(
        "mappings:\n  individual:\n    fields:\n      given_name: $.data.first_name\n"
        "    pull:\n      fields:\n        registry_status: $.stauts\n"
    )
    records = tmp_path / "r.jsonl"
    records.write_text(
        json.dumps({"entity_name": "individual", "external_id": "7", "data": {"status": "ok"}}) + "\n"
    )
    result = _invoke("mapping", "test", mapping, "--sample", records, "--direction", "pull")
    assert result.exit_code == 1, result.output
    assert "field registry_status <- $.stauts matched no sample record" in result.stdout
    assert "given_name <-" not in result.stdout  # inverted from push: not a typed path


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b'{"entity_name": "individual", "data": {"n": NaN}}', ":1: not valid JSON: NaN is not a"),
        (b'{"entity_name": "individual", "data": {"n": "\xff"}}', ":1:46: not UTF-8"),
        (b'{"data": ' + b"[" * 200 + b"]" * 200 + b"}", ":1:73: JSON nested deeper than 64 levels"),
    ],
    ids=["NaN", "non-utf8", "deep"],
)
def test_a_hostile_sample_line_is_a_located_error(tmp_path: Path, line: bytes, expected: str) -> None:
    mapping = tmp_path / "m.yaml"
    mapping.write_text(VALID_MAPPING)
    records = tmp_path / "r.jsonl"
    records.write_bytes(line + b"\n")
    result = _invoke("mapping", "test", mapping, "--sample", records, "--direction", "pull")
    assert result.exit_code == 2, result.output
    assert f"error: {records}{expected}" in result.stderr


def test_a_link_to_an_entity_the_mapping_does_not_define_is_invalid(tmp_path: Path) -> None:
    mapping = tmp_path / "m.yaml"
    mapping.write_text(
        "mappings:\n  individual:\n    fields:\n"
        "      parent: {path: $.data.parentGuid, pipe: [{link: {entity: household}}]}\n"
    )
    result = _invoke("mapping", "validate", mapping)
    assert result.exit_code == 2
    assert f"{mapping}:4:" in result.stdout
    assert "[individual.parent] link: unknown entity 'household'" in result.stdout


def _mapped_project(
    tmp_path: Path, mapping_text: str | None, settings: str = "url: http://127.0.0.1:9"
) -> Path:
    if mapping_text is not None:
        (tmp_path / "m.yaml").write_text(mapping_text)
    config = tmp_path / "dcsync.yaml"
    config.write_text(
        "version: 1\nconnectors:\n  reg:\n    type: mock\n    mapping: m.yaml\n"
        "    schedule: [{every: 15m}]\n"
        f"    settings: {{{settings}}}\n"
    )
    return config


def test_a_config_whose_mapping_is_broken_keeps_the_mapping_file_line_and_field(tmp_path: Path) -> None:
    config = _mapped_project(
        tmp_path,
        "mappings:\n  individual:\n    fields:\n      given_name: {path: $.data.x, pipe: [nosuch]}\n",
    )
    line = _one_located_error(_invoke("run", "reg", "--dry-run", "-c", config))
    assert f"{tmp_path / 'm.yaml'}:4:" in line
    assert "[individual.given_name] unknown transform 'nosuch'" in line


VALID_MAPPING = "mappings:\n  individual:\n    fields:\n      a: $.data.a\n"


@pytest.mark.parametrize(
    ("mapping_text", "settings", "expected"),
    [
        (
            "mappings:\n  individual:\n    fields:\n      a: {path: $.data.a, pipe: [nosuch]}\n",
            None,
            "nosuch",
        ),
        (None, None, "does not exist"),
        (VALID_MAPPING, "url: http://x, colour: red", "colour: unknown key"),
        (VALID_MAPPING, "timeout: 5", "url: is required"),
    ],
    ids=["broken-mapping", "missing-mapping", "unknown-setting", "missing-setting"],
)
def test_schedule_list_refuses_what_run_refuses(
    tmp_path: Path, mapping_text: str | None, settings: str | None, expected: str
) -> None:
    config = _mapped_project(tmp_path, mapping_text, settings if settings is not None else "url: http://x")
    run = _one_located_error(_invoke("run", "reg", "--dry-run", "-c", config))
    listed = _one_located_error(_invoke("schedule", "list", "-c", config))
    assert expected in run
    assert listed == run
    assert not (tmp_path / "state.db").exists() and not (tmp_path / "events.db").exists()


def test_schedule_list_refuses_an_unknown_connector_type(tmp_path: Path) -> None:
    config = tmp_path / "dcsync.yaml"
    config.write_text("connectors:\n  reg:\n    type: nosuch\n    schedule: [{every: 15m}]\n")
    line = _one_located_error(_invoke("schedule", "list", "-c", config))
    assert f"{config}:3:11: connectors.reg.type" in line


# -- event files ------------------------------------------------------------------------------------


def _import(project: Path, lines: list[str | bytes]):
    source = project / "in.jsonl"
    source.write_bytes(
        b"".join((line if isinstance(line, bytes) else line.encode()) + b"\n" for line in lines)
    )
    return _invoke("log", "import", source, "-c", project / "dcsync.yaml"), source


GOOD = json.dumps(_event("g-1", "p-1"))


@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        (
            '{"guid": "g-2", "data": {"n": ' + "1" * 5001 + "}}",
            ":2:31: event without guid: field '(line)': number longer than 100 characters",
        ),
        (
            '{"guid": "g-2", "data": ' + "[" * 100_000 + "]" * 100_000 + "}",
            ":2:88: event without guid: field '(line)': JSON nested deeper than 64 levels",
        ),
        (json.dumps(_event("g-2", "p-2", n=1))[:-1].replace('"n": 1', '"n": NaN') + "}", ":2: "),
        (json.dumps(_event("g-2", "p-2", n=1)).replace('"n": 1', '"n": -Infinity'), ":2: "),
        (json.dumps(_event("g-2", "p-2", n=1)).replace('"n": 1', '"n": 1e999'), ":2: "),
    ],
    ids=["5001-digits", "nested-100k", "NaN", "Infinity", "overflow"],
)
def test_a_hostile_event_line_is_one_located_error_and_nothing_is_written(
    project: Path, bad: str, expected: str
) -> None:
    result, source = _import(project, [GOOD, bad, GOOD])
    line = _one_located_error(result)
    assert f"{source}{expected}" in line, line
    assert _events_in_log(project) == 0


def test_a_non_utf8_byte_in_an_event_file_is_located_by_line_and_column(project: Path) -> None:
    bad = json.dumps(_event("g-2", "p-2", name="Jos")).encode().replace(b"Jos", b"Jos\xe9")
    result, source = _import(project, [GOOD, bad])
    line = _one_located_error(result)
    column = bad.index(b"\xe9") + 1
    assert f"{source}:2:{column}: event without guid: field '(line)': not UTF-8" in line
    assert _events_in_log(project) == 0


def test_a_guid_already_in_the_log_with_different_content_is_refused(project: Path) -> None:
    result, _ = _import(project, [GOOD])
    assert result.exit_code == 0
    changed = json.dumps(_event("g-1", "p-1", name="Mallory"))
    result, source = _import(project, [json.dumps(_event("g-5", "p-5")), changed])
    line = _one_located_error(result)
    assert f"{source}:2: event g-1: field 'guid': already in the event log" in line
    assert str(project / "events.db") in line and "different content" in line
    assert _events_in_log(project) == 1
    # the same event again (with a higher syncLevel, keys in another order) is still just "already present"
    same = dict(reversed(list(dict(_event("g-1", "p-1"), syncLevel=1).items())))
    result, _ = _import(project, [json.dumps(same)])
    assert result.exit_code == 0 and "1 already present" in result.stdout


def test_a_guid_reused_within_the_file_names_both_lines(project: Path) -> None:
    result, source = _import(
        project, [GOOD, json.dumps(_event("g-2", "p-2")), json.dumps(_event("g-1", "p-9"))]
    )
    line = _one_located_error(result)
    assert f"{source}:3: event g-1: field 'guid': also the guid of the event on {source}:1" in line
    assert _events_in_log(project) == 0


def test_an_update_before_its_create_is_refused_naming_both_lines(project: Path) -> None:
    update = json.dumps(_event("g-2", "p-1", "update-individual", name="Jane Smith"))
    create = json.dumps(_event("g-3", "p-1", name="Jane"))
    result, source = _import(project, [json.dumps(_event("g-0", "p-0")), update, create])
    line = _one_located_error(result)
    assert (
        f"{source}:3: event g-3: field 'type': create-individual of entity p-1 comes after its update on "
        in line
    )
    assert f"{source}:2" in line
    assert _events_in_log(project) == 0


def test_a_create_of_an_entity_the_log_already_holds_is_refused(project: Path) -> None:
    """The update came in an earlier import: the create would still land on top of it."""
    result, _ = _import(project, [json.dumps(_event("g-2", "p-1", "update-individual", name="Jane Smith"))])
    assert result.exit_code == 0
    result, source = _import(project, [json.dumps(_event("g-3", "p-1", name="Jane"))])
    line = _one_located_error(result)
    assert (
        f"{source}:1: event g-3: field 'type': create-individual of entity p-1, which the event log" in line
    )
    assert _events_in_log(project) == 1
    # deleted first in the same file, it may be created anew
    delete = json.dumps(_event("g-4", "p-1", "delete-entity", reason="wrong person"))
    result, _ = _import(project, [delete, json.dumps(_event("g-3", "p-1", name="Jane"))])
    assert result.exit_code == 0, result.output
    assert _events_in_log(project) == 3


def test_an_entity_deleted_and_created_again_is_not_an_update_before_its_create(project: Path) -> None:
    lines = [
        json.dumps(_event("g-1", "p-1")),
        json.dumps(_event("g-2", "p-1", "update-individual", name="Jane Smith")),
        json.dumps(_event("g-3", "p-1", "delete-entity", reason="duplicate")),
        json.dumps(_event("g-4", "p-1", name="Jane again")),
    ]
    result, _ = _import(project, lines)
    assert result.exit_code == 0, result.output
    assert _events_in_log(project) == 4


def test_a_timestamp_without_a_zone_is_refused(project: Path) -> None:
    naive = json.dumps(dict(_event("g-2", "p-2"), timestamp="2025-01-01T10:00:00"))
    result, source = _import(project, [GOOD, naive])
    line = _one_located_error(result)
    assert f"{source}:2: event g-2: field 'timestamp': '2025-01-01T10:00:00' has no time zone" in line
    assert _events_in_log(project) == 0


def test_an_unknown_event_type_is_stored_and_recorded_as_an_issue(project: Path) -> None:
    """DataCollect stores an event it has no applier for, then fails to apply it: dcsync does the same and
    says so, on the command line and in the log's issues (never a silent loss)."""
    result, _ = _import(project, [GOOD, json.dumps(_event("g-2", "p-2", "external-pull"))])
    assert result.exit_code == 0, result.output
    assert "not applied: event g-2 (entity p-2): No event applier found for event type: external-pull" in (
        result.stderr
    )
    with sqlite3.connect(project / "events.db") as conn:
        assert conn.execute("SELECT event_guid, reason FROM event_issues").fetchall() == [
            ("g-2", "No event applier found for event type: external-pull")
        ]


# -- signals while loading ----------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.parametrize(
    "command",
    [
        ["run", "x", "--dry-run", "-c", "{fifo}"],
        ["schedule", "list", "-c", "{fifo}"],
        ["mapping", "validate", "{fifo}"],
        ["log", "import", "{fifo}", "-c", "{config}"],
    ],
    ids=["run", "schedule-list", "mapping-validate", "log-import"],
)
def test_a_signal_stops_dcsync_while_it_reads_its_input(
    tmp_path: Path, signum: int, command: list[str]
) -> None:
    """An input that never finishes arriving (a FIFO nobody writes: the slowest possible file) must not
    make dcsync ignore ``timeout``, cron or systemd, whichever file it is reading."""
    fifo = tmp_path / "input.fifo"
    os.mkfifo(fifo)
    config = tmp_path / "dcsync.yaml"
    config.write_text("connectors: {}\n")
    args = [part.format(fifo=fifo, config=config) for part in command]
    proc = subprocess.Popen(
        [*DCSYNC, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # until the process is blocked opening the FIFO
            time.sleep(0.2)
            if _waits_on(proc.pid):
                break
        proc.send_signal(signum)
        _out, err = proc.communicate(timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode in (128 + signal.SIGTERM, 130), (proc.returncode, err)
    assert b"Traceback" not in err
    assert not (tmp_path / "events.db").exists() or _events_in_log(tmp_path) == 0


def _waits_on(pid: int) -> bool:
    try:
        syscall = Path(f"/proc/{pid}/wchan").read_text()
    except OSError:
        return False
    return any(word in syscall for word in ("fifo", "pipe", "wait_for_partner"))


@pytest.mark.postgres
def test_a_postgres_log_refuses_a_changed_event_too(
    tmp_path: Path, postgres_url: str, pg_schema: str
) -> None:
    from connector_core.eventlog.jsonl import import_jsonl
    from connector_core.eventlog.postgres import PostgresEventLog
    from connector_core.events import EventError

    log = PostgresEventLog(postgres_url, schema=pg_schema)
    try:
        first = tmp_path / "a.jsonl"
        first.write_text(GOOD + "\n")
        assert import_jsonl(log, first).new == 1
        changed = tmp_path / "b.jsonl"
        changed.write_text(
            json.dumps(_event("g-9", "p-9")) + "\n" + json.dumps(_event("g-1", "p-1", name="M")) + "\n"
        )
        with pytest.raises(
            EventError, match=r"b\.jsonl:2: event g-1: field 'guid': already in the event log"
        ):
            import_jsonl(log, changed)
        assert log.count() == 1
        assert import_jsonl(log, first).duplicates == 1
    finally:
        log.close()

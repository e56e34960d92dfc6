"""JSON Lines in and out of an event log: one ``FormSubmission`` per line, DataCollect's wire form.

Import validates the whole file before writing anything, so a typo on line 900,000 is reported
(with its file and line) while the log is still untouched, instead of leaving the first 899,999
events imported and the operator guessing where to resume. Both passes stream, so memory does not
grow with the file.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import orjson

from connector_core.bounded import MAX_JSON_LINE_BYTES, BoundedInputError, decode_utf8
from connector_core.eventlog.base import COMMIT_EVENTS, AppendResult, EventLog
from connector_core.events import EventError, FormSubmission, has_zone, parse_json_line
from connector_core.streams import chunks, runs

Source = str | Path | IO[str]


@contextmanager
def _opened(source: Source, mode: str) -> Iterator[tuple[IO[str], str]]:
    if isinstance(source, str | Path):
        with open(source, mode, encoding="utf-8", newline="\n" if "w" in mode else None) as fh:
            yield fh, str(source)
    else:
        yield source, str(getattr(source, "name", "<stream>"))


def _lines(source: Source) -> Iterator[tuple[int, str, str]]:
    """``(line number, text, file name)`` of each line, each at most ``MAX_JSON_LINE_BYTES`` long.

    A path is read as bytes, so a byte that is not UTF-8 is reported by line and column instead of as a
    decoder's byte offset; a line longer than the limit is refused without being read whole.
    """
    limit = MAX_JSON_LINE_BYTES
    if isinstance(source, str | Path):
        name = str(source)
        with open(source, "rb") as fh:
            lineno = 0
            while True:
                raw = fh.readline(limit + 1)
                if not raw:
                    return
                lineno += 1
                if len(raw) > limit and not raw.endswith(b"\n"):
                    raise EventError(
                        None, "(line)", f"line longer than {limit:,} bytes", where=f"{name}:{lineno}"
                    )
                try:
                    text = decode_utf8(raw, name, first_line=lineno)
                except BoundedInputError as exc:
                    raise EventError(None, "(line)", exc.message, where=exc.where) from None
                yield lineno, text, name
    else:
        name = str(getattr(source, "name", "<stream>"))
        for lineno, text in enumerate(source, start=1):
            if len(text) > limit:
                raise EventError(
                    None, "(line)", f"line longer than {limit:,} bytes", where=f"{name}:{lineno}"
                )
            yield lineno, text, name


def _located(source: Source) -> Iterator[tuple[str, FormSubmission]]:
    """``(file:line, event)`` for each non-blank line; a bad line raises ``EventError`` naming it."""
    for lineno, line, name in _lines(source):
        if not line.strip():
            continue
        where = f"{name}:{lineno}"
        raw = parse_json_line(line, where=where)
        event = FormSubmission.from_json(raw, where=where)
        if isinstance(raw, dict) and not has_zone(raw.get("timestamp")):
            raise EventError(
                event.guid,
                "timestamp",
                f"{raw.get('timestamp')!r} has no time zone: write Z (UTC) or an offset such as +03:00 "
                "(DataCollect would read it as each device's local time)",
                where=where,
            )
        yield where, event


def iter_jsonl(path_or_file: Source) -> Iterator[FormSubmission]:
    """Each event of a JSONL file, validated; a bad line raises ``EventError`` naming ``file:line``.

    Blank lines are skipped (editors and ``cat`` leave them) but counted, so line numbers match an
    editor's.
    """
    for _where, event in _located(path_or_file):
        yield event


_CREATES = frozenset({"create-individual", "create-group"})
_UPDATES = frozenset({"update-individual", "update-group"})


def _content(event: FormSubmission) -> bytes:
    """What makes an event the same event: everything but ``syncLevel``, which DataCollect raises as the
    event travels (a re-exported, already synced copy is the same event)."""
    doc = event.to_json()
    del doc["syncLevel"]
    try:  # keys sorted: the same answers written by another tool in another order are the same event
        text = orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # what orjson refuses (integers beyond 64 bits)
        text = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.blake2b(text, digest_size=16).digest()


class _FileIndex:
    """What the check pass remembers of the lines already read (guids, first updates), on disk.

    A temporary SQLite file rather than dicts, so checking a file of ten million events needs no more memory
    than one of ten.
    """

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="dcsync-import-")
        self.db = sqlite3.connect(Path(self._dir.name) / "index.db")
        self.db.execute("PRAGMA journal_mode=OFF")
        self.db.execute("PRAGMA synchronous=OFF")
        self.db.execute("CREATE TABLE seen (guid TEXT PRIMARY KEY, place TEXT, digest BLOB) WITHOUT ROWID")
        self.db.execute("CREATE TABLE updated (entity TEXT PRIMARY KEY, place TEXT) WITHOUT ROWID")
        self.db.execute("CREATE TABLE deleted (entity TEXT PRIMARY KEY) WITHOUT ROWID")

    def _rows(self, sql: str, keys: list[str]) -> Iterator[tuple]:  # type: ignore[type-arg]
        for start in range(0, len(keys), 500):  # within SQLite's limit on bound parameters
            part = keys[start : start + 500]
            yield from self.db.execute(sql.format(marks=",".join("?" * len(part))), part)

    def seen(self, guids: list[str]) -> dict[str, tuple[str, bytes]]:
        sql = "SELECT guid, place, digest FROM seen WHERE guid IN ({marks})"
        return {guid: (place, digest) for guid, place, digest in self._rows(sql, guids)}

    def updated(self, entities: list[str]) -> dict[str, str]:
        sql = "SELECT entity, place FROM updated WHERE entity IN ({marks})"
        return {entity: place for entity, place in self._rows(sql, entities)}

    def deleted(self, entities: list[str]) -> set[str]:
        sql = "SELECT entity FROM deleted WHERE entity IN ({marks})"
        return {entity for (entity,) in self._rows(sql, entities)}

    def close(self) -> None:
        self.db.close()
        self._dir.cleanup()


def _check_page(
    log: EventLog, index: _FileIndex, page: list[tuple[str, FormSubmission]], log_name: str
) -> None:
    """Events are immutable: a guid seen before (earlier in the file, or in the log) must carry the same
    event; and a create must not come after an update of its entity, where DataCollect's upsert would let
    the create's answers overwrite the newer ones."""
    guids = list(dict.fromkeys(event.guid for _w, event in page))
    earlier = index.seen(guids)
    stored = log.get_events(guids) if hasattr(log, "get_events") else {}
    rows: list[tuple[str, str, bytes]] = []
    for where, event in page:
        digest = _content(event)
        if event.guid in earlier:
            first, first_digest = earlier[event.guid]
            if first_digest != digest:
                raise EventError(
                    event.guid,
                    "guid",
                    f"also the guid of the event on {first}, with different content (events are immutable: "
                    "give a new event a new guid)",
                    where=where,
                )
            continue
        if event.guid in stored and _content(stored[event.guid]) != digest:
            other = stored[event.guid]
            raise EventError(
                event.guid,
                "guid",
                f"already in the event log {log_name} with different content (stored: {other.type} of "
                f"entity {other.entity_guid} at {other.timestamp}); events are immutable: give a new event "
                "a new guid",
                where=where,
            )
        earlier[event.guid] = (where, digest)
        rows.append((event.guid, where, digest))
    index.db.executemany("INSERT OR IGNORE INTO seen VALUES (?, ?, ?)", rows)
    creates = list(dict.fromkeys(e.entity_guid for _w, e in page if e.type in _CREATES))
    first_update = index.updated(creates) if creates else {}
    new_creates = [e.entity_guid for _w, e in page if e.type in _CREATES and e.guid not in stored]
    in_log = log.get_entities(dict.fromkeys(new_creates)) if new_creates else {}
    deleted = index.deleted(list(in_log)) if in_log else set()
    for where, event in page:
        entity = event.entity_guid
        if event.type in _UPDATES:
            if entity not in first_update:
                first_update[entity] = where
                index.db.execute("INSERT OR IGNORE INTO updated VALUES (?, ?)", (entity, where))
        elif event.type == "delete-entity":  # a deleted entity may be created anew
            first_update.pop(entity, None)
            deleted.add(entity)
            index.db.execute("DELETE FROM updated WHERE entity = ?", (entity,))
            index.db.execute("INSERT OR IGNORE INTO deleted VALUES (?)", (entity,))
        elif event.type in _CREATES and entity in first_update:
            raise EventError(
                event.guid,
                "type",
                f"{event.type} of entity {entity} comes after its update on "
                f"{first_update[entity]}; DataCollect would apply the create last and lose the "
                "update's values: put the create first",
                where=where,
            )
        elif (
            event.type in _CREATES and entity in in_log and entity not in deleted and event.guid not in stored
        ):
            raise EventError(
                event.guid,
                "type",
                f"{event.type} of entity {entity}, which the event log {log_name} already holds (version "
                f"{in_log[entity].version}); DataCollect would apply it over the answers the log has: "
                "send an update-* event instead",
                where=where,
            )


def import_jsonl(
    log: EventLog, path: Source, batch_size: int = 1000, commit_every: int = COMMIT_EVENTS
) -> AppendResult:
    """Validate every line of ``path`` (``batch_size`` lines at a time), then append its events.

    Nothing is written unless the whole file is valid: every line parses within the limits of
    :mod:`connector_core.bounded`, names its time zone, reuses no guid (in the file or the log) for a
    different event, and creates no entity after updating it. Each run of ``commit_every`` events is one
    atomic append, streamed (memory stays at one of the log's chunks); should the process die between
    runs, importing the file again completes it (appends are idempotent by guid). A file object must be
    seekable, since it is read twice.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    start = None
    if not isinstance(path, str | Path):
        if not path.seekable():
            raise ValueError("import_jsonl reads its input twice: pass a path or a seekable file")
        start = path.tell()
    log_name = str(getattr(log, "where", None) or getattr(log, "path", None) or "")
    index = _FileIndex()
    try:
        for page in chunks(_located(path), batch_size):
            _check_page(log, index, page, log_name)
    finally:
        index.close()
    if start is not None and not isinstance(path, str | Path):
        path.seek(start)
    result = AppendResult()
    for run in runs(iter_jsonl(path), commit_every):
        result.merge(log.append(run))
    return result


def export_jsonl(log: EventLog, out_file: Source, after: str | None = None) -> int:
    """Write every event after ``after`` as one JSON line each, streaming; returns how many."""
    written = 0
    with _opened(out_file, "w") as (fh, _name):
        for event in log.iter_events(after):
            fh.write(event.to_json_line())
            fh.write("\n")
            written += 1
    return written

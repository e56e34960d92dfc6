"""JSON Lines in and out of an event log: one ``FormSubmission`` per line, DataCollect's wire form.

Import validates the whole file before writing anything, so a typo on line 900,000 is reported
(with its file and line) while the log is still untouched, instead of leaving the first 899,999
events imported and the operator guessing where to resume. Both passes stream, so memory does not
grow with the file.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from connector_core.eventlog.base import AppendResult, EventLog
from connector_core.events import FormSubmission
from connector_core.streams import chunks

Source = str | Path | IO[str]


@contextmanager
def _opened(source: Source, mode: str) -> Iterator[tuple[IO[str], str]]:
    if isinstance(source, str | Path):
        with open(source, mode, encoding="utf-8", newline="\n" if "w" in mode else None) as fh:
            yield fh, str(source)
    else:
        yield source, str(getattr(source, "name", "<stream>"))


def iter_jsonl(path_or_file: Source) -> Iterator[FormSubmission]:
    """Each event of a JSONL file, validated; a bad line raises ``EventError`` naming ``file:line``.

    Blank lines are skipped (editors and ``cat`` leave them) but counted, so line numbers match an
    editor's.
    """
    with _opened(path_or_file, "r") as (fh, name):
        for lineno, line in enumerate(fh, start=1):
            if line.strip():
                yield FormSubmission.from_json_line(line, where=f"{name}:{lineno}")


def import_jsonl(log: EventLog, path: Source, batch_size: int = 1000) -> AppendResult:
    """Validate every line of ``path``, then append its events in batches of ``batch_size``.

    Nothing is written unless the whole file is valid. Each batch is one atomic append; should the
    process die between batches, importing the file again completes it (appends are idempotent by
    guid).
    A file object must be seekable, since it is read twice.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    start = None
    if not isinstance(path, str | Path):
        if not path.seekable():
            raise ValueError("import_jsonl reads its input twice: pass a path or a seekable file")
        start = path.tell()
    for _event in iter_jsonl(path):
        pass  # validation pass: raises on the first bad line, before anything is written
    if start is not None and not isinstance(path, str | Path):
        path.seek(start)
    result = AppendResult()
    for batch in chunks(iter_jsonl(path), batch_size):
        result.merge(log.append(batch))
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

"""Working through a stream a page at a time: the one loop every paged read, write and delivery uses, and
the one place a pass remembers a key per record without holding them in memory."""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from itertools import chain, islice
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """``items`` in lists of ``size`` (the last may be shorter), drawn lazily: one list is held at a time,
    whatever the length of the stream."""
    if size < 1:
        raise ValueError("size must be at least 1")
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def runs(items: Iterable[T], size: int) -> Iterator[Iterator[T]]:
    """``items`` in consecutive runs of up to ``size``, each a lazy iterator: one transaction per run over
    a stream of any length, with nothing held but the item in hand (an event log's ``append`` chunks a run
    itself). Consume each run before drawing the next: the runs share one iterator."""
    if size < 1:
        raise ValueError("size must be at least 1")
    iterator = iter(items)
    for first in iterator:
        yield chain((first,), islice(iterator, size - 1))


class SeenOnDisk:
    """A set of keys in a temporary SQLite file, removed by :meth:`close`.

    For a pass over a log of any size that must remember one key per record (a dry run plans each entity
    once, however its events fall across pages): a Python set would grow with the log, this stays flat.
    The file is written without a journal or syncs: it is scratch, gone when the pass ends.
    """

    def __init__(self) -> None:
        self._dir, self._conn = _scratch("dcsync-seen-")
        self._conn.execute("CREATE TABLE seen (key TEXT PRIMARY KEY) WITHOUT ROWID")

    def first_seen(self, keys: Iterable[str]) -> set[str]:
        """The keys among ``keys`` not seen before; all of them are remembered from now on."""
        new: set[str] = set()
        self._conn.execute("BEGIN")
        try:
            for key in dict.fromkeys(keys):
                if self._conn.execute("INSERT OR IGNORE INTO seen (key) VALUES (?)", (key,)).rowcount:
                    new.add(key)
        finally:
            self._conn.execute("COMMIT")
        return new

    def __contains__(self, key: str) -> bool:
        return self._conn.execute("SELECT 1 FROM seen WHERE key = ?", (key,)).fetchone() is not None

    def close(self) -> None:
        self._conn.close()
        self._dir.cleanup()


class KeptOnDisk:
    """A mapping of text keys to text values in a temporary SQLite file, removed by :meth:`close` (or, if a
    pass ends by an exception, when the object is collected: the temporary directory cleans itself up).

    For a pass that must see what it did on earlier pages without writing it anywhere (a pull dry run's
    links and entities), however many records the pass meets.
    """

    def __init__(self) -> None:
        self._dir, self._conn = _scratch("dcsync-kept-")
        self._conn.execute("CREATE TABLE kept (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID")

    def get(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM kept WHERE key = ?", (key,)).fetchone()
        return row[0] if row is not None else None

    def put(self, items: Mapping[str, str]) -> None:
        self._conn.execute("BEGIN")
        try:
            self._conn.executemany(
                "INSERT INTO kept (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                items.items(),
            )
        finally:
            self._conn.execute("COMMIT")

    def close(self) -> None:
        self._conn.close()
        self._dir.cleanup()


def _scratch(prefix: str) -> tuple[tempfile.TemporaryDirectory[str], sqlite3.Connection]:
    """A scratch SQLite file: no journal, no syncs (gone when the pass ends), a small cache."""
    directory = tempfile.TemporaryDirectory(prefix=prefix)
    conn = sqlite3.connect(Path(directory.name) / "scratch.db", isolation_level=None)
    for pragma in ("journal_mode = OFF", "synchronous = OFF", "cache_size = -2048"):
        conn.execute(f"PRAGMA {pragma}")
    return directory, conn

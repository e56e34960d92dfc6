"""Opening an existing SQLite file for reading only, leaving its directory exactly as it was.

``mode=ro`` is not enough for a WAL-mode file: a read-only connection creates the ``-wal`` and ``-shm`` files
and, unable to checkpoint, leaves them behind. A read-write connection that only reads removes them again when
it closes, without touching the database file; ``query_only`` makes every write through it fail, so a bug
cannot turn a read-only command into a writing one. A file that does not exist is never created.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path


def connect_read_only(path: Path, timeout: float) -> sqlite3.Connection | None:
    """A query-only connection to the database at ``path``, or ``None`` when there is no such file."""
    if str(path) == ":memory:" or not path.is_file():
        return None
    uri = path.resolve().as_uri()
    options = {"uri": True, "isolation_level": None, "check_same_thread": False, "timeout": timeout}
    try:
        conn = sqlite3.connect(f"{uri}?mode=rw", **options)  # type: ignore[arg-type]
    except sqlite3.OperationalError:  # a write-protected file or directory
        conn = sqlite3.connect(f"{uri}?mode=ro", **options)  # type: ignore[arg-type]
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
        conn.execute("PRAGMA query_only = ON")
    except BaseException:
        conn.close()
        raise
    return conn


def has_table(conn: sqlite3.Connection, name: str) -> bool:
    row = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone()
    return row is not None

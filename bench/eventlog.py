"""Event log benchmark: append and read throughput, and whether memory stays flat as the log grows.

    python bench/eventlog.py                    # 1,000,000 events, RSS checkpoint at 100,000
    python bench/eventlog.py --events 20000     # quick run (checkpoint at a tenth: 2,000)

Events are what the mobile app produces (datacollect.md §1.7): households and their individuals as
``create-individual`` with ``entityName``/``parentGuid``, plus edits that resend the whole form. They are
generated as a stream and appended in batches, so the only memory that could grow is the backend's:
peak RSS when the checkpoint's worth of events is in, against peak RSS at the end, must stay flat
(ratio <= 1.3). Each backend is a column; add one to ``BACKENDS``.

    python bench/eventlog.py --events 100000 --backend sqlite --backend postgres

The ``postgres`` column uses the server at ``DCSYNC_TEST_POSTGRES_URL`` (default
``postgresql://postgres@127.0.0.1:5432/test``) in a scratch schema dropped afterwards; it is left out, with
the reason, when that server does not answer (asking for it by name makes that an error). Each backend runs
in a child process of its own, so one backend's peak RSS cannot hide another's growth; the PostgreSQL
server's own memory is not counted, and its "files on disk" are the sizes of the schema's tables and indexes.

Each column also measures its database's bare insert speed in the same process, as the baseline: the same
events' rows (encoded beforehand, untimed) inserted into a table with no index but its integer key, the
same commit size and, for SQLite, the log's own pragmas; SQLite through ``executemany``, PostgreSQL
through the ``unnest`` insert the log uses. An append does more (it checks each guid, folds and writes
entities, indexes both), so the ratio is below 1; what it shows is how close the log comes to "SQLite's
speed" on this machine at this moment, which a bare events/s figure on a VM whose speed moves cannot.
A table with no index inserts at the same speed at any size, so the baseline's first
``BASELINE_EVENTS`` events stand for the whole log.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import resource
import sys
import tempfile
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from connector_core.eventlog.base import COMMIT_EVENTS, EventLog
from connector_core.eventlog.sqlite import SqliteEventLog
from connector_core.events import FormSubmission, SyncLevel, format_timestamp
from connector_core.streams import runs

POSTGRES_URL = os.environ.get("DCSYNC_TEST_POSTGRES_URL") or "postgresql://postgres@127.0.0.1:5432/test"


def _postgres(_workdir: Path) -> EventLog:
    from connector_core.eventlog.postgres import PostgresEventLog

    return PostgresEventLog(POSTGRES_URL, schema=f"dcsync_bench_{uuid.uuid4().hex[:12]}")


def _bare_sqlite(workdir: Path) -> tuple[Callable[[list[tuple[Any, ...]]], None], Callable[[], None]]:
    from connector_core._sql import connect_sqlite
    from connector_core.eventlog.sqlite import _PRAGMAS

    conn = connect_sqlite(str(workdir / "bare.db"), _PRAGMAS)
    conn.execute(
        "CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, guid TEXT NOT NULL, entity_guid TEXT "
        "NOT NULL, type TEXT NOT NULL, data TEXT NOT NULL, timestamp TEXT NOT NULL, user_id TEXT, "
        "sync_level INTEGER NOT NULL)"
    )
    insert = (
        "INSERT INTO events (guid, entity_guid, type, data, timestamp, user_id, sync_level) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)"
    )

    def commit(rows: list[tuple[Any, ...]]) -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(insert, rows)
        conn.execute("COMMIT")

    return commit, conn.close


def _bare_postgres(_workdir: Path) -> tuple[Callable[[list[tuple[Any, ...]]], None], Callable[[], None]]:
    import psycopg

    schema = f"dcsync_bench_bare_{uuid.uuid4().hex[:12]}"
    conn = psycopg.connect(POSTGRES_URL, autocommit=True)
    conn.execute(f'CREATE SCHEMA "{schema}"')
    conn.execute(
        f'CREATE TABLE "{schema}".events (seq BIGSERIAL PRIMARY KEY, guid TEXT NOT NULL, entity_guid TEXT '
        "NOT NULL, type TEXT NOT NULL, data JSONB NOT NULL, timestamp TEXT NOT NULL, user_id TEXT, "
        "sync_level SMALLINT NOT NULL)"
    )
    insert = (
        f'INSERT INTO "{schema}".events (guid, entity_guid, type, data, timestamp, user_id, sync_level) '
        "SELECT g, e, t, d::jsonb, ts, u, l FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], "
        "%b::text[], %b::text[], %b::smallint[]) WITH ORDINALITY AS x(g, e, t, d, ts, u, l, ord) ORDER BY ord"
    )

    def commit(rows: list[tuple[Any, ...]]) -> None:
        with conn.transaction():
            conn.execute(insert, [list(column) for column in zip(*rows, strict=True)])

    def close() -> None:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        conn.close()

    return commit, close


def _postgres_unavailable() -> str | None:
    """Why the PostgreSQL column cannot run, or ``None`` when the server answers."""
    try:
        import psycopg

        psycopg.connect(POSTGRES_URL, connect_timeout=3).close()
    except Exception as exc:  # ImportError, OperationalError: either way there is no column to measure
        from connector_core._postgres import redact_url, scrub

        return f"{redact_url(POSTGRES_URL)}: {scrub(str(exc).strip().splitlines()[0], POSTGRES_URL)}"
    return None


BACKENDS: dict[str, Callable[[Path], EventLog]] = {
    "sqlite": lambda workdir: SqliteEventLog(workdir / "events.db"),
    "postgres": _postgres,
}

BARE: dict[str, Callable[[Path], tuple[Callable[[list[tuple[Any, ...]]], None], Callable[[], None]]]] = {
    "sqlite": _bare_sqlite,
    "postgres": _bare_postgres,
}
"""Per backend: a bare table's ``(commit rows, close)``, the baseline (see the module's docstring)."""
BASELINE_EVENTS = 200_000
MEMORY_GOAL = 1.3
_FIRST = ("Jane", "John", "Amina", "Kofi", "Maria", "Wei", "Ana", "Omar", "Zoë", "Ravi")
_LAST = ("Doe", "Smith", "Mensah", "Garcia", "Chen", "Silva", "Haddad", "O'Brien")


def _guid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def generate(total: int, seed: int = 7) -> Iterator[FormSubmission]:
    """``total`` mobile-style events, streamed. Only a window of recent entities is remembered (edits
    mostly follow registration), so generating a million events costs no more memory than a thousand."""
    rng = random.Random(seed)
    clock = datetime(2025, 1, 1, 8, 0, tzinfo=UTC)
    recent: deque[tuple[str, dict[str, object]]] = deque(maxlen=5000)
    areas = [_guid(rng) for _ in range(20)]
    emitted = 0
    form: dict[str, object]

    def submit(type_: str, entity_guid: str, data: dict[str, object]) -> FormSubmission:
        nonlocal clock
        clock += timedelta(milliseconds=rng.randint(0, 900))
        # phones sync late: a few events carry a timestamp well before their neighbours'
        at = clock - timedelta(hours=rng.randint(1, 48)) if rng.random() < 0.03 else clock
        return FormSubmission.from_json(
            {
                "guid": _guid(rng),
                "entityGuid": entity_guid,
                "type": type_,
                "data": data,
                "timestamp": format_timestamp(at),
                "userId": "admin",
                "syncLevel": int(SyncLevel.LOCAL),
            }
        )

    while emitted < total:
        if recent and rng.random() < 0.12:
            guid, form = recent[rng.randrange(len(recent))]
            edited = dict(form)
            edited["phone_number"] = f"+1{rng.randint(1000000, 9999999)}"
            yield submit("update-individual", guid, edited)
            emitted += 1
            continue
        household = _guid(rng)
        last = rng.choice(_LAST)
        form = {
            "entityName": "household",
            "parentGuid": rng.choice(areas),
            "household_name": f"{last} HH",
            "name": f"{last} HH",
            "household_size": rng.randint(1, 8),
            "belongs_to_ethnic_group": rng.choice(["yes", "no"]),
            "location_gps": json.dumps(
                {"coords": {"latitude": rng.uniform(-30, 30), "longitude": rng.uniform(-30, 30)}}
            ),
            "bank_details": [{"bank_name": "3", "account_type": "savings", "account_number": str(emitted)}],
        }
        recent.append((household, form))
        yield submit("create-individual", household, form)
        emitted += 1
        for _ in range(rng.randint(1, 5)):
            if emitted >= total:
                break
            first = rng.choice(_FIRST)
            person = _guid(rng)
            form = {
                "entityName": "individual",
                "parentGuid": household,
                "first_name": first,
                "last_name": last,
                "name": f"{first} {last}",
                "gender": rng.choice(["female", "male"]),
                "date_of_birth": f"{rng.randint(1940, 2024)}-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}",
                "relationship": str(rng.randint(1, 4)),
                "training_records": [{"training_type": "agri", "training_start_date": "2024-01-01"}],
            }
            recent.append((person, form))
            yield submit("create-individual", person, form)
            emitted += 1


def peak_rss_mb() -> float:
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / (1024 * 1024) if sys.platform == "darwin" else kib / 1024  # bytes on macOS


class _Counted:
    """A run of generated events handed to ``append`` as a stream: counts them, and the time spent making
    them, so the append figure is the log's own time and not the generator's."""

    def __init__(self, events: Iterator[FormSubmission]) -> None:
        self._events = events
        self.n = 0
        self.generation_s = 0.0

    def __iter__(self) -> Iterator[FormSubmission]:
        return self

    def __next__(self) -> FormSubmission:
        t0 = time.perf_counter()
        try:
            event = next(self._events)
        finally:
            self.generation_s += time.perf_counter() - t0
        self.n += 1
        return event


def run(
    make: Callable[[Path], EventLog], total: int, checkpoint: int, batch: int, commit: int
) -> dict[str, float]:
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="dcsync-bench-") as tmp:
        log = make(Path(tmp))
        events = generate(total)
        appended = 0
        append_seconds = 0.0
        generation_s = 0.0
        started = time.perf_counter()
        for run_ in runs(events, commit):
            counted = _Counted(run_)
            t0 = time.perf_counter()
            log.append(counted)  # streamed, as log import and log copy hand it over
            append_seconds += time.perf_counter() - t0 - counted.generation_s
            generation_s += counted.generation_s
            before, appended = appended, appended + counted.n
            if before < checkpoint <= appended:
                figures["rss_at_checkpoint_mb"] = peak_rss_mb()
        figures["append_wall_s"] = time.perf_counter() - started
        figures["append_s"] = append_seconds
        figures["append_events_per_s"] = appended / append_seconds
        figures["rss_at_end_mb"] = peak_rss_mb()

        read = 0
        cursor = None
        t0 = time.perf_counter()
        while True:
            page = log.read(cursor, batch)
            read += len(page.events)
            cursor = page.cursor
            if page.at_end:
                break
        figures["read_s"] = time.perf_counter() - t0
        figures["read_events_per_s"] = read / figures["read_s"]
        figures["rss_after_read_mb"] = peak_rss_mb()
        if read != appended:
            raise SystemExit(f"read back {read} events, appended {appended}")
        stats = log.stats()
        figures["events"] = stats["events"]
        figures["entities"] = stats["entities"]
        size_bytes = getattr(log, "size_bytes", None)  # a server-side log: its tables, not local files
        on_server = size_bytes() if callable(size_bytes) else None
        schema = getattr(log, "schema", None)
        log.close()
        local = sum(p.stat().st_size for p in Path(tmp).iterdir())
        figures["file_mb"] = (on_server if on_server is not None else local) / 2**20
        if on_server is not None and schema:
            import psycopg

            with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    figures["memory_ratio"] = figures["rss_at_end_mb"] / figures["rss_at_checkpoint_mb"]
    return figures


def bare_insert(name: str, total: int, commit: int) -> float:
    """Events/s of ``name``'s bare insert of the first ``total`` events' rows, ``commit`` a transaction."""
    from connector_core.codec import dumps

    with tempfile.TemporaryDirectory(prefix="dcsync-bench-bare-") as tmp:
        insert, close = BARE[name](Path(tmp))
        seconds = 0.0
        inserted = 0
        try:
            for run_ in runs(generate(total), commit):
                rows = [
                    (e.guid, e.entity_guid, e.type, dumps(e.data), e.timestamp, e.user_id, int(e.sync_level))
                    for e in run_
                ]
                t0 = time.perf_counter()
                insert(rows)
                seconds += time.perf_counter() - t0
                inserted += len(rows)
        finally:
            close()
    return inserted / seconds


def _child(name: str, total: int, checkpoint: int, batch: int, commit: int, out: Any) -> None:
    figures = run(BACKENDS[name], total, checkpoint, batch, commit)
    figures["bare_events_per_s"] = bare_insert(name, min(total, BASELINE_EVENTS), commit)
    figures["append_to_bare"] = figures["append_events_per_s"] / figures["bare_events_per_s"]
    out.send(figures)
    out.close()


def _in_child(name: str, total: int, checkpoint: int, batch: int, commit: int) -> dict[str, float]:
    """``run`` in a forked process: peak RSS is per process, so each column gets its own."""
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_child, args=(name, total, checkpoint, batch, commit, send))
    child.start()
    send.close()
    try:
        figures: dict[str, float] = receive.recv()
    except EOFError:
        child.join()
        raise SystemExit(f"the {name} run failed (exit code {child.exitcode})") from None
    child.join()
    return figures


ROWS = (
    ("events", "events", "{:,.0f}"),
    ("entities", "entities", "{:,.0f}"),
    ("append events/s", "append_events_per_s", "{:,.0f}"),
    ("baseline: bare insert events/s", "bare_events_per_s", "{:,.0f}"),
    ("append / bare insert", "append_to_bare", "{:.2f}"),
    ("append time (s)", "append_s", "{:.1f}"),
    ("append incl. generation (s)", "append_wall_s", "{:.1f}"),
    ("read events/s (cursor pages)", "read_events_per_s", "{:,.0f}"),
    ("read time (s)", "read_s", "{:.1f}"),
    ("peak RSS at checkpoint (MB)", "rss_at_checkpoint_mb", "{:.1f}"),
    ("peak RSS at end (MB)", "rss_at_end_mb", "{:.1f}"),
    ("peak RSS after read (MB)", "rss_after_read_mb", "{:.1f}"),
    ("memory ratio end/checkpoint", "memory_ratio", "{:.2f}"),
    ("files on disk (MB)", "file_mb", "{:.0f}"),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--checkpoint", type=int, help="RSS checkpoint (default: events / 10)")
    parser.add_argument("--batch", type=int, default=1000, help="events per page read back")
    parser.add_argument(
        "--commit",
        type=int,
        action="append",
        help=f"events per append, one transaction each; a column per value (default: 1,000, a sync page, "
        f"and {COMMIT_EVENTS:,}, what log import and log copy commit)",
    )
    parser.add_argument("--backend", action="append", choices=sorted(BACKENDS))
    args = parser.parse_args(argv)
    checkpoint = args.checkpoint or max(1, args.events // 10)
    if not 0 < checkpoint <= args.events:
        parser.error("--checkpoint must lie between 1 and --events")
    commits = args.commit or [1000, COMMIT_EVENTS]
    if min(commits) < 1:
        parser.error("--commit must be at least 1")

    names = args.backend or list(BACKENDS)
    if "postgres" in names and (why := _postgres_unavailable()):
        if args.backend:
            parser.error(f"PostgreSQL is unreachable ({why})")
        print(f"postgres column left out: PostgreSQL is unreachable ({why})")
        names.remove("postgres")
    columns = [(name, commit) for name in names for commit in commits]
    results = {
        column: _in_child(column[0], args.events, checkpoint, args.batch, column[1]) for column in columns
    }

    print(
        f"event log benchmark: {args.events:,} events, pages of {args.batch:,} read back, "
        f"RSS checkpoint at {checkpoint:,}; a column per backend and events per append (commit)"
    )
    width = max(len(label) for label, _, _ in ROWS)
    heads = [
        f"{name} {commit // 1000}k" if commit % 1000 == 0 else f"{name} {commit}" for name, commit in columns
    ]
    print(f"{'':{width}}  " + "  ".join(f"{head:>14}" for head in heads))
    for label, key, fmt in ROWS:
        cells = "  ".join(f"{fmt.format(results[column][key]):>14}" for column in columns)
        print(f"{label:{width}}  {cells}")
    ok = all(r["memory_ratio"] <= MEMORY_GOAL for r in results.values())
    print(f"memory flat (ratio <= {MEMORY_GOAL}): {'yes' if ok else 'NO'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

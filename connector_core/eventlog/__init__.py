"""Event logs: the protocol every backend meets, the backends, and the one place that opens them.

Backends: ``sqlite`` (the embedded default), ``postgres`` (dcsync's own log in PostgreSQL) and
``datacollect`` (a live DataCollect tenant, mirrored locally; optionally read straight from its database).
docs/eventlog-backends.md describes each one and its keys. The PostgreSQL and DataCollect modules are imported
only when used, so a SQLite project never pays for psycopg or a network client.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from connector_core.eventlog.base import (
    COMMIT_EVENTS,
    AppendResult,
    EventLog,
    EventPage,
    EventTouch,
    TouchPage,
)
from connector_core.eventlog.jsonl import export_jsonl, import_jsonl, iter_jsonl
from connector_core.eventlog.sqlite import SchemaVersionError, SqliteEventLog
from connector_core.events import FormSubmission
from connector_core.streams import runs

if TYPE_CHECKING:
    from connector_core.config import DataCollectEventLogConfig, EventLogConfig
    from connector_core.eventlog.datacollect_http import DataCollectEventLog

__all__ = [
    "AppendResult",
    "CopyReport",
    "EventLog",
    "EventPage",
    "EventTouch",
    "SchemaVersionError",
    "SPEC_HELP",
    "SqliteEventLog",
    "TouchPage",
    "copy_events",
    "export_jsonl",
    "import_jsonl",
    "iter_jsonl",
    "open_event_log",
    "open_event_log_spec",
]


def _resolve(base_dir: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else base_dir / path


def open_event_log(config: EventLogConfig, base_dir: Path, *, read_only: bool = False) -> EventLog:
    """The event log a project file's ``eventlog`` section describes (relative paths from ``base_dir``).

    ``read_only`` (``status``, ``log stats``/``export``, a dry run) creates nothing: no file, no schema. A log
    that does not exist yet reads as empty, and a ``datacollect`` log is read from its local mirror as of its
    last refresh, without contacting the tenant.
    """
    from connector_core.config import DataCollectEventLogConfig, PostgresEventLogConfig

    if isinstance(config, PostgresEventLogConfig):
        from connector_core.eventlog.postgres import PostgresEventLog

        if read_only:
            log = PostgresEventLog(config.url.get_secret_value(), schema=config.db_schema, read_only=True)
            if log.exists:
                return log
            log.close()
            return SqliteEventLog(":memory:")  # no schema yet: an empty log
        return PostgresEventLog(config.url.get_secret_value(), schema=config.db_schema)
    if isinstance(config, DataCollectEventLogConfig):
        if read_only:
            mirror = _resolve(base_dir, config.mirror)
            if not mirror.exists():
                logging.getLogger("dcsync.eventlog").warning(
                    "the DataCollect mirror %s does not exist yet: the log reads as empty "
                    "(a run, or `dcsync log copy`, fills it)",
                    mirror,
                )
            return SqliteEventLog(mirror, read_only=True)
        return open_datacollect(config, base_dir)
    return SqliteEventLog(_resolve(base_dir, config.path), read_only=read_only)


def open_datacollect(config: DataCollectEventLogConfig, base_dir: Path) -> DataCollectEventLog:
    from datetime import timedelta

    from connector_core.eventlog.datacollect_http import DataCollectClient, DataCollectEventLog, Feed

    client = DataCollectClient(
        config.url,
        config.config_id,
        token=config.token.get_secret_value() if config.token else None,
        email=config.email,
        password=config.password.get_secret_value() if config.password else None,
        timeout=config.timeout,
        retry=config.retry,
    )
    feed: Feed | None = None
    try:
        if config.read == "database":
            from connector_core.eventlog.datacollect_db import DataCollectDbFeed

            assert config.database_url is not None  # checked by the config model
            feed = DataCollectDbFeed(
                config.database_url.get_secret_value(),
                config.config_id,
                lookback=timedelta(seconds=config.lookback_seconds),
                schema=config.database_schema,
            )
        return DataCollectEventLog(
            client,
            _resolve(base_dir, config.mirror),
            lookback_seconds=config.lookback_seconds,
            refresh_interval=config.refresh_interval,
            push_batch=config.push_batch,
            feed=feed,
        )
    except BaseException:
        client.close()
        raise


SPEC_HELP = """\
An event log is named by one of:
  path/to/dcsync.yaml
      the event log of that project, whatever its backend
  sqlite:PATH (sqlite:///abs/path too), or a PATH ending .db
      a SQLite event log file
  postgresql://USER@HOST/DB?schema=NAME
      dcsync's PostgreSQL event log (schema dcsync if left out)
  datacollect+https://HOST/?config_id=TENANT&mirror=PATH&lookback_seconds=N
      a DataCollect tenant read through its API (datacollect+http:// too);
      credentials from DCSYNC_DATACOLLECT_TOKEN, or DCSYNC_DATACOLLECT_EMAIL and
      DCSYNC_DATACOLLECT_PASSWORD; without mirror= a temporary mirror; also
      max_attempts=N, initial_delay=S, max_delay=S, max_elapsed=S (retries).
      Any other option is an error (read: database needs a dcsync.yaml)"""

_DATACOLLECT_OPTIONS = frozenset(
    {"config_id", "mirror", "lookback_seconds", "max_attempts", "initial_delay", "max_delay", "max_elapsed"}
)


def open_event_log_spec(spec: str, *, base_dir: Path | None = None) -> EventLog:
    """Open an event log from a one-word spec (``dcsync log copy SRC DST``); see :data:`SPEC_HELP`."""
    base = base_dir or Path.cwd()
    lowered = spec.lower()
    if lowered.startswith(("postgresql://", "postgres://")):
        from connector_core._postgres import split_option
        from connector_core.eventlog.postgres import DEFAULT_SCHEMA, PostgresEventLog

        url, schema = split_option(spec, "schema")
        return PostgresEventLog(url, schema=schema or DEFAULT_SCHEMA)
    if lowered.startswith(("datacollect+http://", "datacollect+https://")):
        return _open_datacollect_spec(spec, base)
    if lowered.startswith("sqlite:"):
        rest = spec[len("sqlite:") :]
        path = rest[2:] if rest.startswith("//") else rest
        if not path:
            raise ValueError(f"{spec!r}: no file after sqlite:")
        return SqliteEventLog(_resolve(base, path))
    if lowered.endswith((".yaml", ".yml")):
        from connector_core.config import load_config

        loaded = load_config(_resolve(base, spec))
        return open_event_log(loaded.project.eventlog, loaded.base_dir)
    if lowered.endswith((".db", ".sqlite", ".sqlite3")):
        return SqliteEventLog(_resolve(base, spec))
    raise ValueError(f"cannot tell which event log {spec!r} is\n{SPEC_HELP}")


def _open_datacollect_spec(spec: str, base: Path) -> EventLog:
    from connector_core.eventlog.datacollect_http import DataCollectClient, DataCollectEventLog
    from connector_core.retry import RetryPolicy

    parts = urlsplit(spec)
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = sorted(set(options) - _DATACOLLECT_OPTIONS)
    if unknown:
        raise ValueError(
            f"{parts.scheme}://{parts.netloc}: unknown option{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(unknown)} (known: {', '.join(sorted(_DATACOLLECT_OPTIONS))}; reading DataCollect's "
            "database needs read: database in a dcsync.yaml)"
        )
    try:
        retry = RetryPolicy(
            **{
                k: float(v) if k != "max_attempts" else int(v)
                for k, v in options.items()
                if k.startswith("max_") or k == "initial_delay"
            }
        )
        lookback = float(options.get("lookback_seconds", 3600))
    except ValueError as exc:
        first = str(exc).strip().splitlines()
        raise ValueError(
            f"{parts.scheme}://{parts.netloc}: bad option value: {first[-1] if first else exc}"
        ) from None
    config_id = options.get("config_id")
    if not config_id:
        raise ValueError(f"{parts.scheme}://{parts.netloc}: add ?config_id=TENANT (the app config id)")
    url = urlunsplit((parts.scheme.split("+", 1)[1], parts.netloc, parts.path, "", ""))
    client = DataCollectClient(
        url,
        config_id,
        token=os.environ.get("DCSYNC_DATACOLLECT_TOKEN") or None,
        email=os.environ.get("DCSYNC_DATACOLLECT_EMAIL") or None,
        password=os.environ.get("DCSYNC_DATACOLLECT_PASSWORD") or None,
        retry=retry,
    )
    scratch = None
    if options.get("mirror"):
        mirror = _resolve(base, options["mirror"])
    else:
        scratch = tempfile.mkdtemp(prefix="dcsync-mirror-")
        mirror = Path(scratch) / "mirror.db"
    try:
        log = DataCollectEventLog(
            client,
            mirror,
            lookback_seconds=lookback,
            refresh_interval=None,  # a copy refreshes once, explicitly
        )
    except BaseException:
        client.close()
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
        raise
    if scratch:
        log.on_close(lambda: shutil.rmtree(scratch, ignore_errors=True))
    return log


@dataclass(slots=True)
class CopyReport:
    """What ``copy_events`` did: events read from the source, and what the target made of them."""

    read: int = 0
    result: AppendResult = field(default_factory=AppendResult)


def copy_events(
    source: EventLog,
    target: EventLog,
    *,
    batch: int = 1000,
    commit_every: int = COMMIT_EVENTS,
    progress: Callable[[int, int], None] | None = None,
) -> CopyReport:
    """Stream every event of ``source`` into ``target``, a page of ``batch`` at a time, in ingestion order.

    Memory stays at one page whatever the size of the log; each run of ``commit_every`` events is one
    atomic append (pages are read while it is written), and appends are idempotent by guid, so an
    interrupted copy is completed by running it again. A source that mirrors a
    remote (``datacollect``) is refreshed first, so the copy holds the remote's log as of now; if that refresh
    could not read every event yet, the copy stops with an error rather than finish without them.
    ``progress(done, total)`` is called after each page.
    """
    if batch < 1:
        raise ValueError("batch must be at least 1")
    refresh = getattr(source, "refresh", None)
    if callable(refresh):
        refreshed = refresh()
        pending = getattr(refreshed, "pending", None)
        if pending:
            # A sync run can go on and pick these up on a later refresh; a copy that said "done" now would
            # be a copy that silently lacks events.
            from connector_core.eventlog.datacollect_http import DataCollectUnavailable

            raise DataCollectUnavailable(
                f"the events of {len(pending)} crowded milliseconds (from {pending[0]}) could not be read "
                "yet (DataCollect's audit feed failed); what was read is kept: run the copy again"
            )
    if commit_every < 1:
        raise ValueError("commit_every must be at least 1")
    total = source.count()
    report = CopyReport()

    def pages() -> Iterator[FormSubmission]:
        cursor: str | None = None
        while True:
            page = source.read(cursor, batch)
            yield from page.events
            report.read += len(page.events)
            if progress is not None and page.events:
                progress(report.read, max(total, report.read))
            cursor = page.cursor
            if page.at_end:
                return

    for run in runs(pages(), commit_every):
        report.result.merge(target.append(run))
    return report

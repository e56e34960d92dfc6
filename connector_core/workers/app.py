"""The procrastinate ``App`` of a fleet, its settings, and its schema in its own PostgreSQL schema.

Settings come from ``dcsync.yaml`` (``workers:``), overridden by the command's flags; the queue's database
defaults to the state store's when that is PostgreSQL (dcsync then needs no other server). procrastinate's
tables and functions live in a schema of their own (``dcsync_queue`` by default): every connection of the
App is opened with ``search_path`` set to it, so procrastinate's unqualified SQL finds them there.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from connector_core.config import LoadedConfig

if TYPE_CHECKING:  # pragma: no cover
    import procrastinate

INSTALL_HINT = "the worker fleet needs procrastinate: pip install 'dcsync[workers]'"
DEFAULT_SCHEMA = "dcsync_queue"
_SCHEMA = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
VERSION_TABLE = "dcsync_queue_version"


class WorkersUnavailable(RuntimeError):
    """procrastinate is not installed (the ``workers`` extra)."""


class QueueError(RuntimeError):
    """The queue cannot be used as configured; the message is one line, without secrets."""


def require_procrastinate() -> Any:
    try:
        import procrastinate
    except ImportError:
        raise WorkersUnavailable(INSTALL_HINT) from None
    return procrastinate


@dataclass(frozen=True)
class QueueSettings:
    url: str = field(repr=False)
    schema: str = DEFAULT_SCHEMA
    concurrency: int = 4
    queues: tuple[str, ...] = ()
    projects: Path | None = None
    heartbeat: float = 10.0
    stalled_after: float = 60.0
    busy_retry: float = 30.0


def queue_settings(
    loaded: LoadedConfig | None,
    *,
    postgres: str | None = None,
    schema: str | None = None,
    concurrency: int | None = None,
    queues: list[str] | None = None,
    projects: Path | None = None,
) -> QueueSettings:
    """``workers:`` of ``loaded`` (when there is a project file) with the flags given over it."""
    from connector_core.redaction import register_url_credentials

    workers = loaded.project.workers if loaded is not None else None
    url = postgres
    if url is None and workers is not None and workers.postgres is not None:
        url = workers.postgres.get_secret_value()
    if url is None and loaded is not None and loaded.project.state.backend == "postgres":
        url = loaded.project.state.url.get_secret_value()  # type: ignore[union-attr]
    if not url:
        raise QueueError(
            "no queue database: set workers.postgres in dcsync.yaml (or use a PostgreSQL state store), "
            "or pass --postgres URL"
        )
    register_url_credentials({"url": url})
    chosen_schema = schema or (workers.db_schema if workers is not None else DEFAULT_SCHEMA)
    if not _SCHEMA.match(chosen_schema):
        raise QueueError(f"queue schema {chosen_schema!r} is not a plain identifier")
    registry = projects
    if registry is None and workers is not None and workers.projects is not None and loaded is not None:
        registry = loaded.resolve_path(workers.projects)
    defaults = workers if workers is not None else None
    return QueueSettings(
        url=url,
        schema=chosen_schema,
        concurrency=concurrency or (defaults.concurrency if defaults else 4),
        queues=tuple(queues or (defaults.queues if defaults else ())),
        projects=registry,
        heartbeat=defaults.heartbeat if defaults else 10.0,
        stalled_after=defaults.stalled_after if defaults else 60.0,
        busy_retry=defaults.busy_retry if defaults else 30.0,
    )


def conninfo(settings: QueueSettings) -> str:
    """The queue's connection string, every session's ``search_path`` set to the queue's schema."""
    from psycopg.conninfo import make_conninfo

    return make_conninfo(
        settings.url,
        options=f"-c search_path={settings.schema}",
        application_name="dcsync-worker",
        keepalives=1,
        keepalives_idle=30,
        keepalives_interval=10,
        keepalives_count=3,
    )


def build_app(settings: QueueSettings) -> procrastinate.App:
    """A procrastinate App on the queue, with every dcsync task installed (not opened yet)."""
    procrastinate = require_procrastinate()
    connector = procrastinate.PsycopgConnector(
        conninfo=conninfo(settings),
        min_size=1,
        max_size=max(4, settings.concurrency + 2),
    )
    app = procrastinate.App(connector=connector)
    from connector_core.workers.tasks import TASK_MODULES

    for name in TASK_MODULES:
        importlib.import_module(name).install_tasks(app, settings)
    return app


# -- the schema ---------------------------------------------------------------------------------------


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def init_schema(settings: QueueSettings) -> str:
    """Install procrastinate's schema in the queue's schema, or bring it to this procrastinate's version.

    Idempotent, and safe when several processes run it at once (they queue on an advisory lock). The
    version the schema was installed or migrated with is kept in ``dcsync_queue_version``; migrating applies
    procrastinate's own migration files above that version, in order. Returns what was done, in one line.
    """
    procrastinate = require_procrastinate()
    from procrastinate.schema import SchemaManager

    from connector_core._postgres import advisory_key, connect, redact_url

    current = procrastinate.__version__
    schema = settings.schema
    with connect(settings.url, application_name="dcsync-queue-init", autocommit=False) as conn:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (advisory_key("dcsync-queue-init", schema),))
        conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        conn.execute(f'SET LOCAL search_path TO "{schema}"')
        conn.execute(f"CREATE TABLE IF NOT EXISTS {VERSION_TABLE} (version text NOT NULL)")
        installed = conn.execute(
            "SELECT to_regclass(%s) IS NOT NULL", (f'"{schema}".procrastinate_jobs',)
        ).fetchone()
        row = conn.execute(f"SELECT version FROM {VERSION_TABLE}").fetchone()
        where = f"{redact_url(settings.url)} schema {schema}"
        if not (installed and installed[0]):
            conn.execute(SchemaManager.get_schema())  # type: ignore[call-overload]
            conn.execute(f"DELETE FROM {VERSION_TABLE}")
            conn.execute(f"INSERT INTO {VERSION_TABLE} VALUES (%s)", (current,))
            conn.commit()
            return f"queue schema installed (procrastinate {current}) in {where}"
        if row is None:
            conn.execute(f"INSERT INTO {VERSION_TABLE} VALUES (%s)", (current,))
            conn.commit()
            return f"queue schema found (not made by dcsync); recorded as procrastinate {current}: {where}"
        recorded = str(row[0])
        if _version_tuple(recorded) == _version_tuple(current):
            conn.commit()
            return f"queue schema up to date (procrastinate {current}) in {where}"
        if _version_tuple(recorded) > _version_tuple(current):
            raise QueueError(
                f"the queue schema in {where} is from procrastinate {recorded}, newer than this "
                f"installation's {current}: upgrade dcsync[workers] here"
            )
        applied = 0
        for path in sorted(Path(SchemaManager.get_migrations_path()).glob("*.sql")):
            version = _version_tuple(path.name.split("_", 1)[0])
            if _version_tuple(recorded) < version <= _version_tuple(current):
                conn.execute(path.read_text(encoding="utf-8"))  # type: ignore[call-overload]
                applied += 1
        conn.execute(f"UPDATE {VERSION_TABLE} SET version = %s", (current,))
        conn.commit()
        return (
            f"queue schema migrated from procrastinate {recorded} to {current} ({applied} files) in {where}"
        )


def check_schema(settings: QueueSettings) -> None:
    """Raise ``QueueError`` naming ``dcsync queue init`` when the queue's schema is missing or behind."""
    procrastinate = require_procrastinate()
    from connector_core._postgres import connect, redact_url

    where = f"{redact_url(settings.url)} schema {settings.schema}"
    with connect(settings.url, application_name="dcsync-worker") as conn:
        found = conn.execute(
            "SELECT to_regclass(%s) IS NOT NULL, to_regclass(%s) IS NOT NULL",
            (f'"{settings.schema}".procrastinate_jobs', f'"{settings.schema}".{VERSION_TABLE}'),
        ).fetchone()
        if not (found and found[0]):
            raise QueueError(f"no queue schema in {where}: run `dcsync queue init`")
        if found[1]:
            row = conn.execute(f'SELECT version FROM "{settings.schema}".{VERSION_TABLE}').fetchone()
            if row and _version_tuple(str(row[0])) < _version_tuple(procrastinate.__version__):
                raise QueueError(
                    f"the queue schema in {where} is from procrastinate {row[0]}, older than this "
                    f"installation's {procrastinate.__version__}: run `dcsync queue init` to migrate it"
                )

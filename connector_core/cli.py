"""The ``dcsync`` command.

Every expected failure (a bad config, a bad event, a broken plugin, a busy connector, a remote that refused)
ends as one clear line on stderr and a non-zero exit, never a traceback: operators read these in cron mail.
Exit codes: 0 success, 1 the run or check failed, 2 bad input (config, mapping, events, usage).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from connector_core.config import CONFIG_FILE_NAME, EXAMPLE_CONFIG, ConfigError
from connector_core.connector import ConnectorError
from connector_core.events import EventError
from connector_core.plugins import PluginError, load_plugins

app = typer.Typer(
    name="dcsync",
    help="Keep a DataCollect event log and external systems in step, in both directions.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
log_app = typer.Typer(help="Inspect, import and export the event log.", no_args_is_help=True)
app.add_typer(log_app, name="log")

out = Console()
err = Console(stderr=True)

ConfigOption = Annotated[
    Path,
    typer.Option(
        "--config", "-c", envvar="DCSYNC_CONFIG", help="Project file.", show_default=True
    ),
]


def fail(message: str, code: int = 2) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@contextmanager
def handled() -> Iterator[None]:
    """Turn the errors a user can cause into one line each and the right exit code."""
    from connector_core.mapping import MappingError
    from connector_core.sync.runner import ConnectorBusy

    try:
        yield
    except ConfigError as exc:
        for problem in exc.problems:
            err.print(f"[bold red]error:[/] {problem}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except (EventError, MappingError, PluginError) as exc:
        fail(str(exc), 2)
    except ConnectorBusy as exc:
        fail(str(exc), 1)
    except ConnectorError as exc:
        fail(exc.message, 1)
    except OSError as exc:
        fail(f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": "), 2)


@app.callback()
def _root(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log each step.")] = False,
) -> None:
    level = logging.INFO if verbose else logging.WARNING
    logging.basicConfig(
        level=level,
        format="%(message)s",
        handlers=[RichHandler(console=err, show_path=False, rich_tracebacks=False)],
        force=True,
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)


# -- project -----------------------------------------------------------------------------------


@app.command()
def init(
    path: Annotated[Path, typer.Argument(help="Where to write the project file.")] = Path(
        CONFIG_FILE_NAME
    ),
    force: Annotated[bool, typer.Option(help="Overwrite an existing file.")] = False,
) -> None:
    """Write a commented example dcsync.yaml."""
    if path.exists() and not force:
        fail(f"{path} already exists (use --force to overwrite)")
    path.write_text(EXAMPLE_CONFIG, encoding="utf-8")
    out.print(f"wrote {path}")


@app.command()
def plugins(
    strict: Annotated[bool, typer.Option(help="Fail if any plugin cannot be loaded.")] = False,
) -> None:
    """List installed connectors with their package, version and capabilities."""
    with handled():
        host = load_plugins(strict=strict)
    table = Table("connector", "plugin", "package", "version", "capabilities", "description")
    for info in sorted(host.connectors.values(), key=lambda i: i.type_name):
        table.add_row(
            info.type_name,
            info.plugin,
            info.package or "-",
            info.version or "-",
            ", ".join(info.capabilities),
            info.cls.description,
        )
    out.print(table)
    for failure in host.failures:
        err.print(f"[yellow]warning:[/] {failure}", highlight=False, soft_wrap=True)


@app.command()
def check(name: str, config: ConfigOption = Path(CONFIG_FILE_NAME)) -> None:
    """Reach a connector's remote system and confirm the credentials work."""
    from connector_core.project import Project

    with handled():
        project = Project.open(config)
        try:
            connector = project.build_connector(name)
            try:
                result = connector.check()
            finally:
                connector.close()
        finally:
            project.close()
    if not result.ok:
        fail(f"{name}: {result.message}", 1)
    out.print(f"[green]ok[/] {name}: {result.message}")


@app.command()
def run(
    name: Annotated[str, typer.Argument(help="Connector instance from the project file.")],
    push: Annotated[bool, typer.Option("--push", help="Push only.")] = False,
    pull: Annotated[bool, typer.Option("--pull", help="Pull only.")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would happen; write nothing anywhere.")
    ] = False,
    config: ConfigOption = Path(CONFIG_FILE_NAME),
) -> None:
    """Run one connector: push new entity changes, then pull remote changes back as events."""
    from connector_core.project import Project
    from connector_core.sync.runner import run_connector

    both = not push and not pull
    with handled():
        project = Project.open(config)
        try:
            report = run_connector(
                project, name, push=push or both, pull=pull or both, dry_run=dry_run
            )
        finally:
            project.close()
    _print_report(report)
    if not report.ok:
        fail(f"{name}: {report.error}", 1)


def _print_report(report) -> None:  # type: ignore[no-untyped-def]
    title = f"{report.connector}" + (" (dry run: nothing was written)" if report.dry_run else "")
    table = Table("direction", "read", "created", "updated", "deleted", "unchanged", "skipped",
                  "dead letters", "appended", "retries", title=title)
    for part in (report.push, report.pull):
        if part is None:
            continue
        c = part.counts
        table.add_row(part.direction, *(str(v) for v in (
            c.read, c.created, c.updated, c.deleted, c.unchanged, c.skipped, c.dead_lettered,
            c.appended, c.retries)))
    out.print(table)


@app.command()
def runs(
    connector: Annotated[str | None, typer.Option(help="Only this connector.")] = None,
    failed: Annotated[bool, typer.Option("--failed", help="Only failed runs.")] = False,
    limit: int = 20,
    config: ConfigOption = Path(CONFIG_FILE_NAME),
) -> None:
    """Show run history with counts."""
    from connector_core.project import Project

    with handled():
        project = Project.open(config)
        try:
            rows = project.state.runs(connector, limit=limit, failed_only=failed)
        finally:
            project.close()
    table = Table("id", "connector", "direction", "trigger", "started", "outcome", "counts", "error")
    for r in rows:
        counts = ", ".join(f"{k}={v}" for k, v in r.counts.items() if v)
        table.add_row(str(r.id), r.connector, r.direction, r.trigger, r.started_at, r.outcome,
                      counts or "-", r.error or "")
    out.print(table)


@app.command("mock-server")
def mock_server(
    name: Annotated[str, typer.Argument(help="Which fake system: mock, openspp, openfn, ...")],
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 8765,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    data: Annotated[Path | None, typer.Option(help="Keep records in this JSON file.")] = None,
) -> None:
    """Serve a fake remote system standalone (for trying connectors and mappings by hand)."""
    import uvicorn

    with handled():
        factory = load_plugins().fake_server(name)
    out.print(f"serving fake {name!r} on http://{host}:{port} (Ctrl-C to stop)")
    uvicorn.run(factory(data), host=host, port=port, log_level="warning")


# -- event log -------------------------------------------------------------------------------------


def _open_log(config: Path):  # type: ignore[no-untyped-def]
    from connector_core.config import load_config
    from connector_core.eventlog.sqlite import SqliteEventLog

    loaded = load_config(config)
    return SqliteEventLog(loaded.resolve_path(loaded.project.eventlog.path))


@log_app.command("import")
def log_import(
    file: Annotated[Path, typer.Argument(help="JSONL file, one DataCollect event per line.")],
    config: ConfigOption = Path(CONFIG_FILE_NAME),
) -> None:
    """Append events from a JSONL file (the whole file is checked first; a bad line writes nothing)."""
    from connector_core.eventlog.jsonl import import_jsonl

    with handled():
        eventlog = _open_log(config)
        try:
            result = import_jsonl(eventlog, file)
        finally:
            eventlog.close()
    out.print(f"imported {result.new} new events ({result.duplicates} already present)")
    for issue in result.issues[:20]:
        err.print(f"[yellow]not applied:[/] {issue}", highlight=False, soft_wrap=True)
    if len(result.issues) > 20:
        err.print(f"[yellow]... and {len(result.issues) - 20} more not applied[/]")


@log_app.command("export")
def log_export(
    output: Annotated[Path | None, typer.Option("--out", "-o", help="File (default stdout).")] = None,
    config: ConfigOption = Path(CONFIG_FILE_NAME),
) -> None:
    """Write every event as JSONL, in ingestion order."""
    from connector_core.eventlog.jsonl import export_jsonl

    with handled():
        eventlog = _open_log(config)
        try:
            if output is None:
                export_jsonl(eventlog, sys.stdout)
            else:
                with output.open("w", encoding="utf-8") as fh:
                    export_jsonl(eventlog, fh)
        finally:
            eventlog.close()


@log_app.command("stats")
def log_stats(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    config: ConfigOption = Path(CONFIG_FILE_NAME),
) -> None:
    """Counts of events and entities, by type and form."""
    with handled():
        eventlog = _open_log(config)
        try:
            stats = eventlog.stats()
        finally:
            eventlog.close()
    if as_json:
        out.print_json(json.dumps(stats))
        return
    table = Table("what", "count")
    for key, value in stats.items():
        if isinstance(value, dict):
            for sub, n in value.items():
                table.add_row(f"{key}.{sub}", str(n))
        else:
            table.add_row(key, str(value))
    out.print(table)


# -- demo ------------------------------------------------------------------------------------------


@app.command()
def demo(
    workspace: Annotated[Path, typer.Option(help="Directory for the demo's files.")] = Path(
        "dcsync-demo"
    ),
    households: Annotated[int, typer.Option(min=1, max=100_000)] = 50,
) -> None:
    """Seed a sample log, push it to a local mock system, edit records there, pull them back."""
    from connector_core.demo import run_demo

    with handled():
        result = run_demo(workspace.resolve(), households=households)
    push, pull = result.push.push, result.pull.pull
    assert push is not None and pull is not None
    table = Table("", "count", title="dcsync demo")
    pushed = push.counts.created + push.counts.updated + push.counts.deleted
    table.add_row("events seeded (new)", str(result.seeded))
    table.add_row("events read for push", str(push.counts.read))
    table.add_row("records pushed", str(pushed))
    table.add_row("  created / updated / unchanged",
                  f"{push.counts.created} / {push.counts.updated} / {push.counts.unchanged}")
    table.add_row("records edited on the mock side", str(result.remote_edits))
    table.add_row("records pulled", str(pull.counts.read))
    table.add_row("events appended by the pull", str(pull.counts.appended))
    table.add_row("dead letters", str(push.counts.dead_lettered + pull.counts.dead_lettered))
    table.add_row("events in the log", str(result.events_total))
    table.add_row("push checkpoint", str(push.checkpoint_after))
    table.add_row("pull checkpoint", str(pull.checkpoint_after))
    out.print(table)
    out.print(f"workspace: {result.workspace}")
    out.print(f"  project file: {result.workspace / CONFIG_FILE_NAME}")
    out.print(f"  event log:    {result.workspace / 'events.db'}")
    out.print(f"  state store:  {result.workspace / 'state.db'}")
    out.print(f"  mock records: {result.workspace / 'mock-server.json'}")
    out.print(f"try: dcsync runs -c {result.workspace / CONFIG_FILE_NAME}")
    if not (result.push.ok and result.pull.ok):
        fail(result.push.error or result.pull.error or "demo failed", 1)


def _mount_optional() -> None:
    from connector_core.mapping import cli as mapping_cli

    app.add_typer(mapping_cli.app, name="mapping")


_mount_optional()


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()

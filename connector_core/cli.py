"""The ``dcsync`` command.

Every expected failure (a bad config, a bad event, a broken plugin, a busy connector, a remote that refused)
ends as one clear line on stderr and a non-zero exit, never a traceback: operators read these in cron mail.
Exit codes (connector_core/outcomes.py): 0 success, 1 the run or check failed or stopped, 2 bad input (config,
mapping, events, usage), 3 a run finished but left new dead letters, 130 interrupted.

The commands that only look (``status``, ``runs``, ``dlq list``/``show``, ``conflicts list``/``show``,
``log stats``/``export``, ``run --dry-run``) open the project read-only: they create no file, schema or lock,
and read no connector secret; only a command that contacts a connector resolves its ``${VAR}``s.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import signal
import sqlite3
import sys
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.cells import cell_len
from rich.console import Console
from rich.markup import escape
from rich.progress import TextColumn
from rich.table import Table
from rich.text import Text
from typer.core import TyperOption

from connector_core.bounded import BoundedInputError
from connector_core.config import CONFIG_FILE_NAME, EXAMPLE_CONFIG, ConfigError
from connector_core.connector import ConnectorError
from connector_core.eventlog import SPEC_HELP
from connector_core.events import EventError, format_timestamp
from connector_core.logs import configure_logging, redact
from connector_core.outcomes import (
    EXIT_BAD_INPUT,
    EXIT_DEAD_LETTERS,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    shown_outcome,
)
from connector_core.plugins import PluginError, load_plugins
from connector_core.redaction import redact_known, redact_value
from connector_core.streams import chunks


def _flag_takes_no_value(display_type_rich: Any) -> Any:
    """Typer's rich help shows ``<bool>`` after a flag as if it took a value; a flag takes none."""

    def display(self: TyperOption, ctx: Any) -> str | None:
        if self.is_flag and not self.count:
            return None
        return display_type_rich(self, ctx)  # type: ignore[no-any-return]

    return display


if hasattr(TyperOption, "display_type_rich"):
    TyperOption.display_type_rich = _flag_takes_no_value(TyperOption.display_type_rich)  # type: ignore[method-assign]

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
    typer.Option("--config", "-c", envvar="DCSYNC_CONFIG", help="Project file.", show_default=True),
]


def show_rows(
    headers: list[str],
    rows: list[list[str]],
    *,
    wrap: tuple[str, ...] = (),
    title: str | None = None,
    borders: bool = True,
    console: Console | None = None,
) -> None:
    """A table when it fits the terminal, else one block of ``header  value`` lines per row.

    Rich squeezes a table that is too wide until its headers read ``de…``. Here only the ``wrap`` columns
    (free text: errors, reasons, counts) may wrap, at their longest word; every other column keeps its
    width, and when that does not fit (80 columns, a phone's SSH client) each row is shown as a block, with
    every value in full. Nothing is cut. ``borders=False`` lists long tables (a plan) in the width of their
    values alone.
    """
    console = console or out

    def longest_word(text: str) -> int:
        return max((cell_len(word) for word in text.split()), default=0)

    # each cell's padding, and the box's lines (none without borders, nor padding at the outer edges)
    need = 3 * len(headers) + 1 if borders else 2 * len(headers) - 2
    for i, header in enumerate(headers):
        cells = [header, *(row[i] for row in rows)]
        need += max(longest_word(c) if header in wrap else cell_len(c) for c in cells)
    if need <= console.width:
        table = Table(title=title) if borders else Table(title=title, box=None, pad_edge=False)
        for header in headers:
            table.add_column(header, overflow="fold", no_wrap=header not in wrap)
        for row in rows:
            table.add_row(*(Text(value) for value in row))
        console.print(table)
        return
    if title:
        console.print(Text(title, style="italic"))
    for row in rows:
        console.rule(Text(f"{headers[0]} {row[0]}"), align="left", style="dim")
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold", no_wrap=True)
        grid.add_column(overflow="fold")
        for header, value in zip(headers[1:], row[1:], strict=True):
            if value:
                grid.add_row(header, Text(value))
        console.print(grid)


def _when(timestamp: str | None) -> str | None:
    """``2026-12-04 10:48:58`` for a stored timestamp: two words that wrap, to the second (UTC)."""
    return timestamp[:19].replace("T", " ") if timestamp else timestamp


_JSON_ERRORS = False
"""Set by ``--log-format json``: error lines then go out as JSON log records, like every other line."""


def _error_line(message: str) -> None:
    if _JSON_ERRORS:
        logging.getLogger("dcsync.cli").error(redact(message))
    else:
        err.print(f"[bold red]error:[/] {_shown(message)}", highlight=False, soft_wrap=True)


def fail(message: str, code: int = EXIT_BAD_INPUT) -> NoReturn:
    _error_line(message)
    raise typer.Exit(code)


def _shown(text: str) -> str:
    """Text for the console: registered secrets and URL credentials masked, and ``[mapping.field]`` kept
    as text, not read as markup. (A remote's words also go through the full :func:`redact` first.)"""
    return escape(redact_known(text))


@contextmanager
def handled() -> Iterator[None]:
    """Turn the errors a user can cause into one line each and the right exit code."""
    from connector_core.mapping import MappingError
    from connector_core.state.lease import LeaseLost
    from connector_core.state.sealing import StateKeyError
    from connector_core.sync.context import RunStopped
    from connector_core.sync.runner import ConnectorBusy

    try:
        yield
    except ConfigError as exc:
        for problem in exc.problems:
            _error_line(str(problem))
        raise typer.Exit(EXIT_BAD_INPUT) from None
    except BoundedInputError as exc:
        fail(str(exc), EXIT_BAD_INPUT)
    except (EventError, MappingError, PluginError) as exc:
        fail(str(exc), EXIT_BAD_INPUT)
    except (ConnectorBusy, LeaseLost) as exc:
        fail(str(exc), EXIT_FAILED)
    except StateKeyError as exc:  # names key ids, tables and rows, never a value
        fail(str(exc), EXIT_BAD_INPUT)
    except ConnectorError as exc:
        fail(redact(exc.message), EXIT_FAILED)
    except RunStopped as exc:  # a replay stopped: retries spent, or a failure about the run
        fail(redact(str(exc)), EXIT_FAILED)
    except OSError as exc:
        fail(f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": "), EXIT_BAD_INPUT)
    except (RecursionError, MemoryError) as exc:  # input beyond every limit: still one line, not a traceback
        fail(f"input too large or too deeply nested ({type(exc).__name__})", EXIT_BAD_INPUT)
    except Exception as exc:
        message = _backend_failure(exc)
        if message is None:
            raise
        fail(redact(message), EXIT_FAILED)


def _backend_failure(exc: BaseException) -> str | None:
    """The one-line message of a storage or DataCollect failure, or ``None`` for anything else.

    Checked through ``sys.modules`` so that a SQLite-only project never imports psycopg or the DataCollect
    client just to handle an error it cannot have.
    """
    datacollect = sys.modules.get("connector_core.eventlog.datacollect_http")
    if datacollect is not None and isinstance(exc, datacollect.DataCollectError):
        return str(exc)
    postgres = sys.modules.get("connector_core._postgres")
    if postgres is not None and isinstance(exc, postgres.PostgresUnavailable):
        return str(exc)
    for module_name in ("connector_core.eventlog.postgres", "connector_core.state.postgres"):
        module = sys.modules.get(module_name)
        if module is not None and isinstance(exc, module.SchemaVersionError):
            return str(exc)
    if isinstance(exc, sqlite3.Error):  # e.g. a write reaching a store opened read-only, a locked file
        return f"SQLite: {exc}"
    psycopg = sys.modules.get("psycopg")
    if psycopg is not None and isinstance(exc, psycopg.Error):
        from connector_core.logs import redact

        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"PostgreSQL: {redact(first)}"
    return None


@app.callback()
def _root(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log each step.")] = False,
    log_format: Annotated[
        str, typer.Option("--log-format", help="human (default) or json (one object per line).")
    ] = "human",
) -> None:
    global _JSON_ERRORS
    if log_format not in ("human", "json"):
        fail("--log-format must be 'human' or 'json'")
    configure_logging(logging.INFO if verbose else logging.WARNING, log_format)
    _JSON_ERRORS = log_format == "json"


# -- project -----------------------------------------------------------------------------------


@app.command()
def init(
    path: Annotated[Path, typer.Argument(help="Where to write the project file.")] = Path(CONFIG_FILE_NAME),
    force: Annotated[bool, typer.Option(help="Overwrite an existing file.")] = False,
) -> None:
    """Write a commented example dcsync.yaml."""
    if path.exists() and not force:
        fail(f"{path} already exists (use --force to overwrite)")
    path.write_text(EXAMPLE_CONFIG, encoding="utf-8")
    out.print(f"wrote {path}", markup=False)
    c = "" if path == Path(CONFIG_FILE_NAME) else f" -c {path}"
    out.print(
        "next:\n"
        "  1. in another terminal, start the fake system the example's `registry` talks to:\n"
        "       dcsync mock-server mock\n"
        f"  2. dcsync check registry{c}\n"
        f"  3. dcsync log import EVENTS.jsonl{c}   (or try `dcsync demo` for a seeded log)\n"
        f"  4. dcsync run registry --dry-run{c}   then   dcsync run registry{c}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


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
        err.print(f"[yellow]warning:[/] {_shown(str(failure))}", highlight=False, soft_wrap=True)


def _check_mapping(project, name, connector, result):  # type: ignore[no-untyped-def]
    """The mapping's push targets against ``connector.describe_schema()`` (``None``: not described).

    A field the remote lacks but the mapping lets be empty is settled by mapping the log's entities."""
    from connector_core.connector import CheckResult
    from connector_core.mapping.remote_schema import compare_schema, confirm_absent

    try:
        schema = connector.describe_schema()
    except ConnectorError as exc:
        return CheckResult(False, exc.message), None
    if schema is None:
        return result, None
    mappings = project.mapping(name)
    problems = compare_schema(mappings, schema, remote=f"{name} ({connector.type_name})")
    if any(p.absent_optional for p in problems):
        entities = (e.to_json() for e in project.eventlog.iter_entities())
        problems = confirm_absent(problems, mappings, entities)
    return result, problems


def _print_schema_problems(name: str, problems: list[Any] | None) -> None:
    if problems is None:
        return
    for problem in problems:
        label = "[bold red]error:[/]" if problem.fatal else "[yellow]warning:[/]"
        err.print(f"{label} {problem}", highlight=False, soft_wrap=True)
    fatal = sum(1 for p in problems if p.fatal)
    if fatal:
        count = f"{fatal} problems" if fatal > 1 else "1 problem"
        fail(f"{name}: the mapping does not fit the remote ({count} above)", 1)
    out.print(f"[green]ok[/] {name}: the mapping fits the remote's fields and setup")


@app.command()
def check(name: str, config: ConfigOption = Path(CONFIG_FILE_NAME)) -> None:
    """Reach a connector's remote system, confirm the credentials work, and check the mapping against the
    remote's schema and setup where the connector can describe them."""
    from connector_core.project import Project

    problems = None
    with handled():
        project = Project.open(config, read_only=True)  # contacts the remote; writes nothing here
        try:
            project.settings(name)  # an unset ${VAR} is bad input, named at its line
            connector = project.build_connector(name)
            try:
                result = connector.check()
                if result.ok:
                    result, problems = _check_mapping(project, name, connector, result)
            finally:
                connector.close()
        finally:
            project.close()
    if not result.ok:
        fail(f"{name}: {redact(result.message)}", 1)
    _print_schema_problems(name, problems)
    out.print(f"[green]ok[/] {name}: {_shown(redact(result.message))}")


RUN_HELP = (
    "Run one connector: pull remote changes into the log as events, then push entity changes.\n\n"
    "Exit codes: 0 everything delivered; 1 the run failed or stopped, or its push waits for an open bulk "
    "load (nothing is lost, the next run resumes); 2 bad input (config, mapping, events, usage); 3 the run "
    "finished but left new dead letters (see `dcsync dlq list`); 130 interrupted."
)


@app.command(help=RUN_HELP)
def run(
    name: Annotated[str, typer.Argument(help="Connector instance from the project file.")],
    push: Annotated[bool, typer.Option("--push", help="Push only.")] = False,
    pull: Annotated[bool, typer.Option("--pull", help="Pull only.")] = False,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Show the plan; write nothing anywhere (no file, no lock). The pull plan reads the remote "
            "and needs the connector's secrets; without them it is skipped with one line.",
        ),
    ] = False,
    wait: Annotated[
        bool, typer.Option("--wait", help="If another process is running this connector, wait for it.")
    ] = False,
    config: ConfigOption = Path(CONFIG_FILE_NAME),
) -> None:
    """See RUN_HELP: pull, then push, as the engine does; the exit codes a scheduler acts on."""
    from connector_core.project import Project
    from connector_core.sync.runner import run_connector

    both = not push and not pull
    want_push, want_pull = push or both, pull or both
    stop = threading.Event()
    # Loading and validating run under the default signal handlers, so SIGTERM/SIGINT stop them at once;
    # only a run, with batches in flight, finishes its batch first.
    with handled(), _progress() as on_progress:
        project = Project.open(config, read_only=dry_run)
        try:
            if dry_run and want_pull and (unset := project.unresolved(name)):
                if not want_push:
                    raise ConfigError(unset)  # asked for the pull plan only: it cannot be made
                want_pull = False
                err.print(
                    f"[yellow]pull plan skipped[/] (it reads the remote): {_shown(unset[0])}",
                    highlight=False,
                    soft_wrap=True,
                )
            with _graceful_stop(stop):
                report = run_connector(
                    project,
                    name,
                    push=want_push,
                    pull=want_pull,
                    dry_run=dry_run,
                    stop=stop,
                    on_progress=on_progress,
                    wait=wait,
                )
        finally:
            project.close()
    _print_report(report)
    if report.dry_run:
        _print_plan(report)
    if stop.is_set():
        fail(
            f"{name}: interrupted; the current batch finished and the checkpoint is consistent",
            EXIT_INTERRUPTED,
        )
    if not report.ok:
        fail(f"{name}: {redact(report.error or '')}", EXIT_FAILED)
    if report.held:  # asked to push and it did not: the one-line reason, as for a busy connector
        hint = f"`dcsync bulk-load {name} --local` completes it here"
        fail(f"{name}: push skipped: {report.held} ({hint})", EXIT_FAILED)
    dead = report.totals().dead_lettered
    if dead and report.dry_run:
        err.print(f"[yellow]dry run:[/] {dead} records would be dead-lettered (see the plan)")
    elif dead:
        err.print(
            f"[yellow]degraded:[/] {name}: the run finished but left {dead} new dead "
            f"letter{'' if dead == 1 else 's'}; "
            f"see `dcsync dlq list --connector {name}`",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(EXIT_DEAD_LETTERS)


class TransferSpeedColumnless(TextColumn):
    """Records per second (rich's speed column speaks bytes)."""

    def __init__(self) -> None:
        super().__init__("")

    def render(self, task: Any) -> Any:
        from rich.text import Text

        return Text(f"{task.speed:,.0f}/s" if task.speed else "")


def _print_issues(issues: list[Any], limit: int = 20) -> None:
    """Events stored but not applied (DataCollect's rules): shown, never silently dropped."""
    for issue in issues[:limit]:
        err.print(f"[yellow]not applied:[/] {_shown(str(issue))}", highlight=False, soft_wrap=True)
    if len(issues) > limit:
        err.print(f"[yellow]... and {len(issues) - limit} more not applied[/]")


_PROGRESS_LABELS = {"push": "pushing events", "pull": "pulling records", "copy": "copying events"}


@contextmanager
def _progress() -> Iterator[Any]:
    """Rich progress bars with rates and ETA on a terminal; nothing when output is piped or logged."""
    if not err.is_terminal:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TransferSpeedColumnless(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    ) as progress:
        tasks: dict[str, Any] = {}

        def update(direction: str, done: int, total: int | None) -> None:
            if direction not in tasks:
                tasks[direction] = progress.add_task(_PROGRESS_LABELS.get(direction, direction), total=total)
            progress.update(tasks[direction], completed=done, total=total)

        yield update


@contextmanager
def _graceful_stop(stop: threading.Event) -> Iterator[None]:
    """SIGINT/SIGTERM finish the batch in flight and stop cleanly; a second signal aborts at once."""

    def handler(signum: int, _frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        err.print(
            f"[yellow]{signal.Signals(signum).name}: finishing the current batch (again to abort)[/]",
            highlight=False,
        )

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _print_plan(report) -> None:  # type: ignore[no-untyped-def]
    """Pull's operations, then push's, each named with its direction (``pull create``, ``push update``)."""
    rows: list[list[str]] = []
    for part in (report.pull, report.push):
        if part is None:
            continue
        for op in part.plan[: 200 - len(rows)]:
            operation = (
                op.operation
                if op.operation.startswith(part.direction)
                else f"{part.direction} {op.operation}"
            )
            rows.append([operation, op.ref, op.entity_name or "-", op.detail])
    if rows:
        show_rows(
            ["operation", "entity", "form", "detail"],
            rows,
            wrap=("detail",),
            title="plan (first 200)",
            borders=False,
        )


_REPORT_ROWS = (
    ("read", "read"),
    ("created", "created"),
    ("updated", "updated"),
    ("deleted", "deleted"),
    ("unchanged", "unchanged"),
    ("skipped", "skipped"),
    ("dead letters", "dead_lettered"),
    ("appended", "appended"),
    ("retries", "retries"),
    ("parked", "parked"),
    ("conflicts", "conflicts"),
    ("out of scope", "out_of_scope"),
)


def _print_report(report) -> None:  # type: ignore[no-untyped-def]
    """One row per count and one column per direction, in the order they ran: fits any terminal."""
    title = f"{report.connector}" + (" (dry run: nothing was written)" if report.dry_run else "")
    parts = [part for part in (report.pull, report.push) if part is not None]
    if not parts:  # nothing ran (a push held by a bulk load): the reason is the command's last line
        return
    out.print(Text(title, style="italic"))
    table = Table("", *(part.direction for part in parts))
    for column in table.columns[1:]:
        column.justify = "right"
    for label, key in _REPORT_ROWS:
        table.add_row(label, *(str(getattr(part.counts, key)) for part in parts))
    out.print(table)


@app.command()
def runs(
    connector: Annotated[str | None, typer.Option(help="Only this connector.")] = None,
    failed: Annotated[bool, typer.Option("--failed", help="Only failed runs.")] = False,
    limit: int = 20,
    config: ConfigOption = Path(CONFIG_FILE_NAME),
) -> None:
    """Show run history with counts; a run that finished but left new dead letters is `degraded`."""
    from connector_core.project import Project

    with handled():
        project = Project.open(config, read_only=True)
        try:
            rows = project.state.runs(connector, limit=limit, failed_only=failed)
        finally:
            project.close()
    show_rows(
        ["run", "connector", "direction", "trigger", "started", "outcome", "counts", "error"],
        wrap=("counts", "error"),
        rows=[
            [
                str(r.id),
                r.connector,
                r.direction,
                r.trigger,
                _when(r.started_at) or "-",
                shown_outcome(r.outcome, r.counts),
                " ".join(f"{k}={v}" for k, v in r.counts.items() if v) or "-",
                redact(r.error or ""),
            ]
            for r in rows
        ],
    )


@app.command("bulk-load")
def bulk_load_command(
    name: Annotated[str, typer.Argument(help="Connector instance from the project file.")],
    shards: Annotated[int, typer.Option("--shards", min=1, help="How many shards (parallel writers).")] = 4,
    local: Annotated[
        bool, typer.Option("--local", help="Run the shards in processes on this machine.")
    ] = False,
    processes: Annotated[
        int | None, typer.Option("--processes", min=1, help="Local processes (default: one per shard).")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show the plan and each shard's share; write nothing.")
    ] = False,
    config: ConfigOption = Path(CONFIG_FILE_NAME),
) -> None:
    """Push a connector's backlog with several writers at once: households split into shards by a stable
    hash (a household and its members always in one shard), each shard with its own checkpoint, then the
    push checkpoint moved to the snapshot taken at the start. Safe to run again: it resumes the open plan."""
    from connector_core.project import Project
    from connector_core.sync import bulk

    if not dry_run and not local:
        from connector_core.workers.cli import bulk_defer

        bulk_defer(config, name, shards)  # the fleet's queue; without one, the error says to use --local
        return
    with handled():
        project = Project.open(config, read_only=dry_run)
        try:
            try:
                if dry_run:
                    _bulk_dry_run(project, name, shards)
                    return
                executor = bulk.LocalProcesses(processes or shards)

                def progress(shard: bulk.ShardReport) -> None:
                    state = "done" if shard.done else f"not done: {shard.error or 'stopped'}"
                    err.print(
                        f"shard {shard.shard}: {shard.counts.created} created, "
                        f"{shard.counts.updated} updated in {shard.seconds:.1f} s; {_shown(state)}",
                        highlight=False,
                        soft_wrap=True,
                    )

                report = bulk.bulk_load(project, name, shards, executor, on_shard=progress)
            except bulk.BulkLoadError as exc:
                fail(str(exc))
        finally:
            project.close()
    plan = report.plan
    if plan.shards != shards:
        err.print(f"[yellow]resumed[/] the open plan {plan.id} of {plan.shards} shards", highlight=False)
    rows = [
        [
            str(s.shard),
            "done" if s.done else "not done",
            str(s.counts.created),
            str(s.counts.updated),
            str(s.counts.unchanged),
            str(s.counts.dead_lettered),
            str(s.counts.parked),
            f"{s.seconds:.1f}",
            s.error or "",
        ]
        for s in report.shards
    ]
    headers = ["shard", "status", "created", "updated", "unchanged", "dead letters", "parked", "s", "error"]
    show_rows(headers, rows, wrap=("error",), title=f"bulk load {plan.id} of {name}")
    if not report.finished:
        fail(report.reason or f"bulk load {plan.id} did not finish", EXIT_FAILED)
    out.print(
        f"{name}: bulk load {plan.id} finished; the push checkpoint is at the snapshot mark {plan.mark}",
        highlight=False,
        soft_wrap=True,
    )


def _bulk_dry_run(project: Any, name: str, shards: int) -> None:
    """The plan a bulk load would make (or the open one it would resume) and each shard's share of the
    entities, counted by streaming the entity table through the household roots."""
    from connector_core.state.base import Direction
    from connector_core.sync import bulk

    open_plan = project.state.open_bulk_plan(name)
    project.instance(name)
    states: list[str] = []
    if open_plan is not None:
        start, mark, shards = open_plan.start_cursor, open_plan.mark, open_plan.shards
        out.print(f"would resume the open plan {open_plan.id} ({shards} shards)")
        states = bulk.shard_states(project, bulk.BulkPlan.of(project, open_plan))
    else:
        start, mark = project.state.get_checkpoint(name, Direction.PUSH), project.eventlog.head()
    events = project.eventlog.count(start) - (project.eventlog.count(mark) if mark else 0)
    sharding = bulk.HouseholdShards(project.eventlog, shards)
    sizes = [0] * shards
    for page in chunks(project.eventlog.iter_entities(), 1000):
        for root in sharding.roots(e.guid for e in page).values():
            sizes[bulk.shard_of(root, shards)] += 1
    out.print(f"{name}: {events} events after cursor {start} up to the mark {mark}, in {shards} shards")
    if states:  # an open plan: each shard's share, then where it stands
        rows = [[str(k), str(n), states[k]] for k, n in enumerate(sizes)]
        show_rows(["shard", "entities in the log", "state"], rows)
        return
    show_rows(["shard", "entities in the log"], [[str(k), str(n)] for k, n in enumerate(sizes)])


@app.command("mock-server")
def mock_server(
    name: Annotated[str, typer.Argument(help="Which fake system: mock, openspp, openfn, ...")],
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 8765,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    data: Annotated[Path | None, typer.Option(help="Keep records in this JSON file.")] = None,
    seed: Annotated[
        Path | None, typer.Option(help="datacollect: store this JSONL file's events in the tenant first.")
    ] = None,
    tenant: Annotated[str, typer.Option(help="datacollect: the tenant (config id) to create.")] = "demo",
) -> None:
    """Serve a fake remote system standalone (for trying connectors and mappings by hand).

    ``datacollect`` is the fake DataCollect backend, for trying a ``backend: datacollect`` event log.
    """
    import uvicorn

    if name == "datacollect":
        _serve_fake_datacollect(host, port, seed, tenant)
        return
    with handled():
        factory = load_plugins().fake_server(name)
    out.print(f"serving fake {name!r} on http://{host}:{port} (Ctrl-C to stop)")
    # A fake keeps every record in memory; at the default thresholds its collector walks them all every
    # few requests, and a benchmark against it would measure that instead of the client. It is batch work
    # as a run is, and collects as seldom.
    from connector_core.sync.runner import BATCH_GC_THRESHOLD

    gc.set_threshold(BATCH_GC_THRESHOLD, *gc.get_threshold()[1:])
    uvicorn.run(factory(data), host=host, port=port, log_level="warning")


def _serve_fake_datacollect(host: str, port: int, seed: Path | None, tenant: str) -> None:
    import uvicorn

    from connector_core.testing.fake_datacollect import FakeDataCollect, create_app

    fake = FakeDataCollect(tenants=(tenant,))
    if seed is not None:
        try:
            problems = fake.seed_jsonl(tenant, seed)
        except (OSError, ValueError) as exc:
            fail(str(exc))
        stored = len(fake.tenants[tenant].events)
        out.print(f"tenant {tenant!r}: {stored} events stored from {seed}, {len(problems)} refused or failed")
        for problem in problems[:20]:
            out.print(f"  {problem}")
    email = next(iter(fake.users))
    out.print(
        f"serving fake DataCollect on http://{host}:{port} (Ctrl-C to stop); tenant {tenant!r}, "
        f"login {email} / {fake.users[email][0]}"
    )
    uvicorn.run(create_app(fake), host=host, port=port, log_level="warning")


# -- dead letters and conflicts ----------------------------------------------------------------------

dlq_app = typer.Typer(
    help="Records that could not be delivered: list, show, replay, discard.", no_args_is_help=True
)
conflicts_app = typer.Typer(help="Records changed on both sides: list, show, resolve.", no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")
app.add_typer(conflicts_app, name="conflicts")


@contextmanager
def _project(config: Path, *, read_only: bool = False) -> Iterator[Any]:
    from connector_core.project import Project

    project = Project.open(config, read_only=read_only)
    try:
        yield project
    finally:
        project.close()


@dlq_app.command("list")
def dlq_list(
    connector: Annotated[str | None, typer.Option(help="Only this connector.")] = None,
    status: Annotated[str, typer.Option(help="open, replayed, discarded or all.")] = "open",
    limit: int = 100,
    config: ConfigOption = Path(CONFIG_FILE_NAME),
) -> None:
    """List dead letters with their reasons."""
    with handled(), _project(config, read_only=True) as project:
        letters = project.state.dead_letters(connector, None if status == "all" else status, limit)
    show_rows(
        ["id", "connector", "direction", "ref", "attempts", "status", "updated", "reason"],
        wrap=("reason",),
        rows=[
            [
                str(d.id),
                d.connector,
                str(d.direction),
                d.ref,
                str(d.attempts),
                d.status,
                _when(d.updated_at) or "-",
                redact(d.reason),
            ]
            for d in letters
        ],
    )


@dlq_app.command("show")
def dlq_show(dead_letter_id: int, config: ConfigOption = Path(CONFIG_FILE_NAME)) -> None:
    """Show one dead letter with its payload."""
    with handled(), _project(config, read_only=True) as project:
        letter = project.state.get_dead_letter(dead_letter_id)
    if letter is None:
        fail(f"no dead letter with id {dead_letter_id}")
    shown = redact_value({**asdict(letter), "direction": str(letter.direction)}, full=True)
    out.print_json(json.dumps(shown))


DeadLetterIds = Annotated[list[int] | None, typer.Argument(help="Dead letter ids (or --all).")]
AllOpen = Annotated[bool, typer.Option("--all", help="Every open dead letter of the connector.")]


def _select_letters(project: Any, connector: str, ids: list[int] | None, all_: bool) -> Iterable[Any]:
    """The named open dead letters, or with ``--all`` a stream of every open one (a page held at a time)."""
    if ids:
        letters = [project.state.get_dead_letter(i) for i in ids]
        missing = [str(i) for i, d in zip(ids, letters, strict=True) if d is None or d.connector != connector]
        if missing:
            fail(f"no dead letter of {connector!r} with id {', '.join(missing)}")
        return [d for d in letters if d is not None and d.status == "open"]
    if not all_:
        fail("name dead letter ids, or pass --all")
    return project.state.iter_dead_letters(connector, "open")


@dlq_app.command("replay")
def dlq_replay(
    connector: str,
    ids: DeadLetterIds = None,
    all_: AllOpen = False,
    config: ConfigOption = Path(CONFIG_FILE_NAME),
) -> None:
    """Deliver dead-lettered records again (the entity's current state for push)."""
    from connector_core.actions import current_actor, replay_dead_letters

    with handled(), _project(config) as project:
        letters = _select_letters(project, connector, ids, all_)
        report = replay_dead_letters(project, connector, letters, actor=current_actor())
        still_open = project.state.open_counts(connector).dead_letters
    c = report.counts
    out.print(
        f"replayed {c.read}: {c.created} created, {c.updated} updated, {c.appended} appended, "
        f"{c.dead_lettered} failed again; {still_open} dead letters still open"
    )
    if c.dead_lettered:
        raise typer.Exit(1)


@dlq_app.command("discard")
def dlq_discard(
    connector: str,
    ids: DeadLetterIds = None,
    all_: AllOpen = False,
    note: Annotated[
        str | None, typer.Option("--note", help="Why they are closed (kept in the audit trail).")
    ] = None,
    config: ConfigOption = Path(CONFIG_FILE_NAME),
) -> None:
    """Close dead letters without delivering them (kept as history, and in the audit trail)."""
    from connector_core.actions import current_actor, discard_dead_letters

    with handled(), _project(config) as project:
        letters = _select_letters(project, connector, ids, all_)
        discarded = discard_dead_letters(project, connector, letters, actor=current_actor(), note=note)
    out.print(f"discarded {discarded} dead letters")


@conflicts_app.command("list")
def conflicts_list(
    connector: Annotated[str | None, typer.Option(help="Only this connector.")] = None,
    status: Annotated[str, typer.Option(help="open, resolved or all.")] = "open",
    limit: int = 100,
    config: ConfigOption = Path(CONFIG_FILE_NAME),
) -> None:
    """List conflicts: open ones hold their entity back from push until resolved."""
    with handled(), _project(config, read_only=True) as project:
        rows = project.state.conflicts(connector, None if status == "all" else status, limit)
    table = Table("id", "connector", "entity", "external id", "policy", "status", "resolution", "fields")
    for c in rows:
        fields = ", ".join(sorted(set(c.local) | set(c.remote)))
        table.add_row(
            str(c.id),
            c.connector,
            c.entity_guid,
            c.external_id,
            c.policy,
            c.status,
            c.resolution or "-",
            fields,
        )
    out.print(table)


@conflicts_app.command("show")
def conflicts_show(conflict_id: int, config: ConfigOption = Path(CONFIG_FILE_NAME)) -> None:
    """Show the base, local and remote values of each field in a conflict."""
    with handled(), _project(config, read_only=True) as project:
        c = project.state.get_conflict(conflict_id)
    if c is None:
        fail(f"no conflict with id {conflict_id}")
    table = Table(
        "field",
        "base (last sync)",
        "local",
        "remote",
        title=f"conflict {c.id}: {c.connector} {c.entity_guid} ({c.status})",
    )
    for key in sorted(set(c.local) | set(c.remote)):
        table.add_row(
            key,
            json.dumps(c.base.get(key)),
            json.dumps(c.local.get(key, c.base.get(key))),
            json.dumps(c.remote.get(key, c.base.get(key))),
        )
    out.print(table)


@conflicts_app.command("resolve")
def conflicts_resolve(
    conflict_id: int,
    take: Annotated[
        str | None,
        typer.Option(help="external: apply the remote's changes; local: keep ours (the whole record)."),
    ] = None,
    field: Annotated[
        list[str] | None,
        typer.Option(
            "--field", help="FIELD=external|local, repeatable: decide field by field (others stay local)."
        ),
    ] = None,
    config: ConfigOption = Path(CONFIG_FILE_NAME),
) -> None:
    """Settle an open conflict; the entity is pushed again on the next run."""
    from connector_core.actions import ActionError, current_actor, resolve_conflict

    if (take is None) == (not field):
        fail("pass --take external|local, or one --field FIELD=external|local per field")
    choice: str | dict[str, str]
    if take is not None:
        if take not in ("external", "local"):
            fail("--take must be 'external' or 'local'")
        choice = take
    else:
        choice = {}
        for item in field or []:
            name, sep, side = item.partition("=")
            if not sep or not name.strip():
                fail(f"--field {item!r}: write FIELD=external or FIELD=local")
            choice[name.strip()] = side.strip()
    with handled(), _project(config) as project:
        try:
            event = resolve_conflict(project, conflict_id, choice, actor=current_actor())
        except ActionError as exc:
            fail(str(exc))
        settled = project.state.get_conflict(conflict_id)
    what = f"appended event {event.guid}" if event else "nothing appended"
    out.print(f"conflict {conflict_id} resolved ({settled.resolution if settled else choice}): {what}")


@app.command()
def audit(
    connector: Annotated[str | None, typer.Option(help="Only this connector.")] = None,
    action: Annotated[
        str | None, typer.Option(help="Only this action (replay, discard, resolve, ...).")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many, newest first.")] = 50,
    before: Annotated[int | None, typer.Option(help="Page back: only actions older than this id.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    config: ConfigOption = Path(CONFIG_FILE_NAME),
) -> None:
    """The audit trail: who replayed, discarded, resolved, purged, rekeyed or forgot what, and when."""
    with handled(), _project(config, read_only=True) as project:
        rows = project.state.actions(connector=connector, action=action, before_id=before, limit=limit)
    if as_json:
        for r in rows:
            print(json.dumps(asdict(r), sort_keys=True))
        return
    if not rows:
        out.print("no actions recorded")
        return
    table = Table("id", "when", "who", "action", "connector", "target", "detail")
    for r in rows:
        detail = ", ".join(
            f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in r.detail.items()
        )
        table.add_row(
            str(r.id), _when(r.at) or r.at, r.actor, r.action, r.connector or "-", r.target or "-", detail
        )
    out.print(table)
    if len(rows) == limit:
        out.print(f"older: dcsync audit --before {rows[-1].id}")


# -- retention and erasure ----------------------------------------------------------------------------


@app.command()
def purge(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would go; remove nothing.")] = False,
    config: ConfigOption = Path(CONFIG_FILE_NAME),
) -> None:
    """Remove what `retention:` in dcsync.yaml says is past keeping (never open work)."""
    from connector_core.actions import current_actor
    from connector_core.retention import DESCRIPTIONS, purge

    with handled(), _project(config, read_only=dry_run) as project:
        periods = project.config.project.retention.periods()
        if not periods:
            out.print("no retention: set in dcsync.yaml: everything is kept (see docs/data-protection.md)")
            return
        report = purge(project.state, periods, actor=current_actor(), dry_run=dry_run)
    table = Table(
        "kept for",
        "what",
        "older than",
        "connector",
        "would go" if dry_run else "removed",
        title="purge (dry run: nothing removed)" if dry_run else "purge",
    )
    for kind, before in report.cutoffs.items():
        counts = report.counts.get(kind) or {None: 0}
        for connector, n in sorted(counts.items(), key=lambda kv: kv[0] or ""):
            table.add_row(
                _period(periods[kind]), DESCRIPTIONS[kind], _when(before) or before, connector or "-", str(n)
            )
    out.print(table)
    verb = "would remove" if dry_run else "removed"
    out.print(f"{verb} {report.total()} rows")


def _period(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


@app.command()
def forget(
    guids: Annotated[list[str], typer.Argument(help="Entity guids of the people (or households) to forget.")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would go; remove nothing.")] = False,
    with_members: Annotated[
        bool,
        typer.Option(
            "--with-members",
            help="Also forget each household's members: its group's memberIds, or whoever's parentGuid "
            "names it (not a person the group no longer lists).",
        ),
    ] = False,
    config: ConfigOption = Path(CONFIG_FILE_NAME),
) -> None:
    """Answer an erasure request: remove what dcsync keeps of an entity (link snapshots, dead letters,
    conflicts) and say what remains in the event log and in each remote."""
    from connector_core.actions import current_actor
    from connector_core.retention import forget

    with handled(), _project(config, read_only=dry_run) as project:
        backend = project.config.project.eventlog.backend
        reports = forget(
            project.state,
            project.eventlog,
            guids,
            actor=current_actor(),
            dry_run=dry_run,
            with_members=with_members,
        )
    for r in reports:
        verb = "would remove" if dry_run else "removed"
        out.print(
            f"{r.guid}: {verb} {r.snapshots} snapshot(s), {r.dead_letters} dead letter(s), "
            f"{r.conflicts} conflict(s) from dcsync's state store"
        )
        if r.members is not None and r.in_event_log:
            listed = f" ({', '.join(r.members)})" if r.members else ""
            with_it = "would be forgotten with it" if dry_run else "forgotten with it"
            out.print(f"  members: {len(r.members)}{listed}, {with_it}" if r.members else "  members: none")
        elif r.members is not None:
            out.print("  its members cannot be found (not in the event log): name their guids")
        if r.in_event_log:
            where = (
                "the DataCollect tenant and its local mirror" if backend == "datacollect" else "the event log"
            )
            out.print(
                f"  still in {where}: its events (the source's immutable history; erase it at the source, "
                "e.g. a delete-entity in DataCollect, which dcsync then pushes as deletes)"
            )
        else:
            out.print("  not in the event log (never there, or deleted)")
        for connector, external_id, deleted in r.linked:
            state = "deleted there by dcsync" if deleted else "still held there"
            out.print(
                f"  {connector}: linked to external id {external_id} ({state}; identifiers kept by dcsync)"
            )
        if not r.linked and not r.removed:
            out.print("  dcsync holds nothing else for it")


# -- the state store's encryption key ----------------------------------------------------------------

state_app = typer.Typer(help="The state store: encryption keys.", no_args_is_help=True)
app.add_typer(state_app, name="state")


@state_app.command("keygen")
def state_keygen() -> None:
    """Print a fresh key for state.encryption_key (32 random bytes, URL-safe base64). Keep it out of the
    project file: put it in the environment (${DCSYNC_STATE_KEY}) or a file (encryption_key_file)."""
    from connector_core.state.sealing import generate_key

    print(generate_key())


@state_app.command("rekey")
def state_rekey(
    batch: Annotated[int, typer.Option(min=1, help="Rows per transaction.")] = 500,
    config: ConfigOption = Path(CONFIG_FILE_NAME),
) -> None:
    """Seal every row of the state store under state.encryption_key, while runs go on.

    Rows that are plain (written before encryption was switched on) or sealed under one of
    state.previous_keys are rewritten, a batch per transaction; stopped, it resumes where it was by being run
    again. When nothing is left under an old key, the old keys may leave the configuration.
    """
    from connector_core.actions import current_actor
    from connector_core.state.rekey import rekey

    def progress(table: str, read: int, rewritten: int) -> None:
        err.print(f"{table}: {read} read, {rewritten} resealed", highlight=False)

    with handled(), _project(config) as project:
        store = project.state.inner
        if store.cipher.key_id is None:
            fail("state rekey needs state.encryption_key (or encryption_key_file): the key to seal under")
        report = rekey(store, batch=batch, progress=progress)
        project.state.record_action(current_actor(), "rekey", detail=report.detail())
    total = sum(report.rewritten.values())
    out.print(f"{total} row(s) resealed under key id {report.key_id}")
    if report.left:
        fail(
            f"{report.left} row(s) were written under an old key meanwhile (a process with the old "
            "configuration?): run state rekey again before removing state.previous_keys",
            EXIT_FAILED,
        )
    out.print("every row is under the current key: state.previous_keys may be removed")


# -- schedules and status -----------------------------------------------------------------------------

schedule_app = typer.Typer(help="Unattended runs from the schedules in dcsync.yaml.", no_args_is_help=True)
app.add_typer(schedule_app, name="schedule")


@schedule_app.command("list")
def schedule_list(
    count: Annotated[int, typer.Option(help="Next run times to show per job.")] = 3,
    config: ConfigOption = Path(CONFIG_FILE_NAME),
) -> None:
    """Each scheduled job and its next run times."""
    from connector_core.config import load_config
    from connector_core.project import check_project
    from connector_core.scheduler import jobs_from_config

    with handled():
        loaded = load_config(config)
        check_project(loaded, load_plugins())  # what `run` refuses, this refuses too (stores untouched)
        jobs = jobs_from_config(loaded)
    table = Table("job", "schedule", "time zone", "jitter", "next runs (UTC)")
    for job in jobs:
        when = (
            f"every {job.schedule.every}" if job.schedule.every is not None else f"cron {job.schedule.cron}"
        )
        nexts = ", ".join(format_timestamp(t)[:19].replace("T", " ") for t in job.next_times(count))
        table.add_row(job.job_id, when, job.schedule.timezone, f"{job.schedule.jitter:g}s", nexts)
    out.print(table)
    if not jobs:
        err.print("no schedules: add `schedule:` to a connector in the project file")


@schedule_app.command("run")
def schedule_run(
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve Prometheus metrics on 127.0.0.1:PORT.")
    ] = None,
    config: ConfigOption = Path(CONFIG_FILE_NAME),
) -> None:
    """Run the schedules in the foreground until SIGINT/SIGTERM (the run in flight ends cleanly)."""
    from connector_core.metrics import Metrics
    from connector_core.scheduler import Scheduler, jobs_from_config

    with handled():
        from connector_core.config import load_config

        loaded = load_config(config)
        if loaded.project.scheduler.engine != "embedded":
            fail(
                f"{loaded.where('scheduler', 'engine')}: scheduler.engine: this project's schedules are "
                "fired by the worker fleet (`dcsync worker`, docs/scale-out.md), not `schedule run`"
            )
        # every config, plugin and mapping error, and every unset secret of a scheduled connector, surfaces
        # before the first tick
        with _project(config) as project:
            for connector in sorted({job.connector for job in jobs_from_config(project.config)}):
                project.settings(connector)
        metrics = Metrics()
        if metrics_port is not None:
            metrics.serve(metrics_port)
        scheduler = Scheduler(config, metrics=metrics)
        if not scheduler.jobs:
            fail("no schedules: add `schedule:` to a connector in the project file")
        stopping = threading.Event()

        def on_signal(signum: int, _frame: object) -> None:
            if stopping.is_set():
                raise KeyboardInterrupt
            stopping.set()
            err.print(f"{signal.Signals(signum).name}: finishing the run in flight, then stopping")
            threading.Thread(target=scheduler.stop, daemon=True).start()

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            scheduler.start()
            err.print(f"scheduler {scheduler.holder}: {len(scheduler.jobs)} jobs; Ctrl-C to stop")
            scheduler.wait()
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)
    err.print("scheduler stopped")


@app.command()
def serve(
    host: Annotated[
        str | None, typer.Option(help="Address to bind (default: serve.host, 127.0.0.1).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: serve.port, 8470).")] = None,
    with_ui: Annotated[
        bool | None,
        typer.Option("--ui/--no-ui", help="Mount the operator console at /ui (default: serve.ui)."),
    ] = None,
    config: ConfigOption = Path(CONFIG_FILE_NAME),
) -> None:
    """Real-time mode: push as soon as the log changes (`realtime: true`), pull on POST /hooks/CONNECTOR,
    run the schedules, serve /healthz, /readyz and /metrics; SIGINT/SIGTERM finish the batch in flight."""
    from connector_core.realtime.serve import RealtimeService

    with handled():
        with _project(config) as project:  # every config and plugin error, and unset secrets, first
            for name, instance in project.config.project.connectors.items():
                if instance.enabled and (instance.realtime or instance.webhook or instance.schedule):
                    project.settings(name)
        service = RealtimeService(config, host=host, port=port, ui=with_ui)
        if not (service.push_triggers or service.hooks or service.scheduler.jobs or service.serves_ui):
            fail("nothing to serve: give a connector `realtime: true`, a `webhook:` or a `schedule:`")
        stopping = threading.Event()

        def on_signal(signum: int, _frame: object) -> None:
            if stopping.is_set():
                raise KeyboardInterrupt
            stopping.set()
            err.print(f"{signal.Signals(signum).name}: finishing the batch in flight, then stopping")

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            service.start()
            err.print(f"dcsync serve on {service.url}; Ctrl-C to stop")
            while not stopping.wait(0.5):
                pass
            service.shutdown()
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)
    err.print("dcsync serve stopped")


@app.command()
def ui(
    host: Annotated[str | None, typer.Option(help="Address to bind (default: ui.host, 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: ui.port, 8471).")] = None,
    config: ConfigOption = Path(CONFIG_FILE_NAME),
) -> None:
    """The operator console in a browser, at http://HOST:PORT/ui/ (docs/console.md): overview, runs, dead
    letters, conflicts, mapping explorer, audit trail. Logins come from ui.users or DCSYNC_UI_TOKEN."""
    import uvicorn

    from connector_core.config import load_config
    from connector_core.console import open_console
    from connector_core.console.app import standalone_app

    with handled():
        settings = load_config(config).project.ui
        bind = host or settings.host
        console = open_console(config, host=bind)  # UnsafeBinding is a ConfigError: one line
        try:
            if console.generated_token:
                err.print(
                    "no login configured (ui.users, DCSYNC_UI_TOKEN): log in with this token, "
                    f"valid until the console stops: {console.generated_token}"
                )
            shown = f"[{bind}]" if ":" in bind else bind
            err.print(f"dcsync console on http://{shown}:{settings.port if port is None else port}/ui/")
            uvicorn.run(
                standalone_app(console.app),
                host=bind,
                port=settings.port if port is None else port,
                log_level="warning",
                access_log=False,
            )
        finally:
            console.close()


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    config: ConfigOption = Path(CONFIG_FILE_NAME),
) -> None:
    """Per connector: last run, next scheduled run, push lag, open dead letters, conflicts and parked.

    The outcome is `degraded` when the last run finished but left new dead letters.
    """
    from connector_core.status import connector_statuses

    with handled(), _project(config, read_only=True) as project:
        rows = [row.as_dict() for row in connector_statuses(project)]
    if as_json:
        out.print_json(json.dumps(rows))
        return
    show_rows(
        [
            "connector",
            "last run",
            "outcome",
            "next run",
            "push lag",
            "dead letters",
            "conflicts",
            "parked",
            "last error",
        ],
        wrap=("last error",),
        rows=[
            [
                r["connector"],
                _when(r["last_run"]) or "never",
                r["last_outcome"] or "-",
                _when(r["next_run"]) or "-",
                str(r["push_lag"]),
                str(r["dead_letters"]),
                str(r["conflicts"]),
                str(r["parked"]),
                redact(r["last_error"] or ""),
            ]
            for r in rows
        ],
    )


# -- event log -------------------------------------------------------------------------------------


def _open_log(config: Path, *, read_only: bool = False):  # type: ignore[no-untyped-def]
    from connector_core.config import load_config
    from connector_core.eventlog import open_event_log

    loaded = load_config(config)
    return open_event_log(loaded.project.eventlog, loaded.base_dir, read_only=read_only)


@log_app.command(
    "copy",
    epilog=SPEC_HELP,
)
def log_copy(
    source: Annotated[str, typer.Argument(metavar="SRC", help="The event log to read.")],
    target: Annotated[str, typer.Argument(metavar="DST", help="The event log to append to.")],
    batch: Annotated[
        int, typer.Option(min=1, max=100_000, help="Events per page read (10,000 are committed at a time).")
    ] = 1000,
) -> None:
    """Stream a whole event log into another (e.g. a DataCollect tenant into SQLite for a dry run).

    Idempotent by event guid: running it again copies only what is missing.
    """
    from connector_core.eventlog import copy_events, open_event_log_spec

    if source == target:
        fail("SRC and DST are the same event log")
    with handled():
        try:
            src = open_event_log_spec(source)
        except ValueError as exc:
            fail(str(exc))
        try:
            try:
                dst = open_event_log_spec(target)
            except ValueError as exc:
                fail(str(exc))
            try:
                with _progress() as update:
                    progress = (lambda done, total: update("copy", done, total)) if update else None
                    report = copy_events(src, dst, batch=batch, progress=progress)
            finally:
                dst.close()
        finally:
            src.close()
    result = report.result
    out.print(f"copied {report.read} events: {result.new} new, {result.duplicates} already present")
    _print_issues(result.issues)


@log_app.command("verify", epilog=SPEC_HELP)
def log_verify(
    log_spec: Annotated[
        str | None, typer.Argument(metavar="[LOG]", help="A datacollect event log (default: the project's).")
    ] = None,
    refresh: Annotated[
        bool, typer.Option("--refresh/--no-refresh", help="Bring the mirror up to date first.")
    ] = True,
    config: ConfigOption = Path(CONFIG_FILE_NAME),
) -> None:
    """Compare a datacollect mirror with its DataCollect tenant; exit 1 when they differ.

    Events per type and by guid, and per entity its version and data, against a fresh read of the tenant
    and against the entities DataCollect lists.
    """
    from connector_core.eventlog import open_event_log_spec
    from connector_core.eventlog.datacollect_http import DataCollectEventLog
    from connector_core.eventlog.datacollect_verify import verify_mirror

    with handled():
        try:
            eventlog = open_event_log_spec(log_spec) if log_spec else _open_log(config)
        except ValueError as exc:
            fail(str(exc))
        try:
            if not isinstance(eventlog, DataCollectEventLog):
                fail("log verify compares a datacollect event log with its tenant; this log is not one")
            if refresh:
                eventlog.refresh()
            report = verify_mirror(eventlog)
            events = eventlog.count()
        finally:
            eventlog.close()
    if report.differs:
        for line in report.lines():
            out.print(line, highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    out.print(
        f"the mirror agrees with DataCollect: {events} events, entities equal "
        f"({report.checked_listed} checked against DataCollect's own listing)"
    )


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
    _print_issues(result.issues)


@log_app.command("export")
def log_export(
    output: Annotated[Path | None, typer.Option("--out", "-o", help="File (default stdout).")] = None,
    config: ConfigOption = Path(CONFIG_FILE_NAME),
) -> None:
    """Write every event as JSONL, in ingestion order."""
    from connector_core.eventlog.jsonl import export_jsonl

    with handled():
        eventlog = _open_log(config, read_only=True)
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
        eventlog = _open_log(config, read_only=True)
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
    workspace: Annotated[Path, typer.Option(help="Directory for the demo's files.")] = Path("dcsync-demo"),
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
    table.add_row(
        "  created / updated / unchanged",
        f"{push.counts.created} / {push.counts.updated} / {push.counts.unchanged}",
    )
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


# -- plugin author kit -----------------------------------------------------------------------------


@app.command("new-connector")
def new_connector(
    name: Annotated[
        str, typer.Argument(help="Connector type name, e.g. acme (becomes `type:` in dcsync.yaml).")
    ],
    directory: Annotated[
        Path | None, typer.Option("--dir", help="Where to write the package (default ./NAME); new or empty.")
    ] = None,
) -> None:
    """Generate an installable connector package: connector, fake server, mapping, contract tests."""
    from connector_core.testing.scaffold import Names, ScaffoldError, generate

    target = directory or Path(name)
    try:
        names = Names.of(name)
        installed = load_plugins().connectors.get(name)
        if installed is not None:
            fail(f"a connector of type {name!r} is already installed (package {installed.package or '-'})")
        generate(name, target)
    except ScaffoldError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"{exc.filename or target}: {exc.strerror or exc}")
    out.print(
        f"wrote connector {name!r} ({names.dist}, package {names.module}) in {target}",
        markup=False,
        soft_wrap=True,
    )
    out.print(
        f"next: pip install -e '{target}[test]' && (cd {target} && python -m pytest -q) && dcsync plugins",
        markup=False,
        soft_wrap=True,
    )


def _mount_optional() -> None:
    from connector_core.mapping import cli as mapping_cli

    app.add_typer(mapping_cli.app, name="mapping")
    from connector_core.workers import cli as workers_cli  # imports procrastinate only when a command runs

    workers_cli.mount(app, sys.modules[__name__])


_mount_optional()


def _terminated(signum: int, _frame: object) -> None:
    """SIGTERM outside a run: stop now, but through ``finally`` blocks (a half-checked import's temporary
    index is removed, an open transaction rolls back), with the shell's code for it (128 + 15)."""
    err.print(f"{signal.Signals(signum).name}: stopped")
    raise SystemExit(128 + signum)


def main() -> None:
    signal.signal(signal.SIGTERM, _terminated)  # `run` and `schedule run` install their own while they run
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()

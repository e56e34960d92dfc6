"""``dcsync mapping``: validate a mapping file, dry-run it over sample events, explain one record.

Exit codes are part of the contract, so integrators can run these in their own CI:
0 clean; 1 record errors, differences from the expected outputs, or a mapping that matched nothing;
2 the mapping is invalid or an input file cannot be used. Every failure is one line (one per issue),
never a traceback.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from enum import StrEnum
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, ParamSpec

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from connector_core.mapping.compiler import load_mapping
from connector_core.mapping.engine import EntityMapping, MappingSet
from connector_core.mapping.errors import MappingError
from connector_core.mapping.explain import show
from connector_core.mapping.report import (
    InputError,
    TestReport,
    compare,
    context_for,
    expected_lines,
    load_entities,
    load_expected,
    load_links,
    load_records,
    run_test,
)
from connector_core.mapping.transforms import default_registry

EXIT_OK = 0
EXIT_RECORD_ERRORS = 1
EXIT_INVALID = 2

app = typer.Typer(
    name="mapping",
    help="Check, dry-run and explain YAML mappings (exit 0 clean, 1 record errors, 2 invalid).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _plugin_transforms() -> None:
    """Every mapping command sees the transforms installed plugins add, as ``dcsync run`` does."""
    from connector_core.plugins import load_plugins

    for problem in load_plugins().install_transforms():
        typer.echo(f"warning: plugin transform skipped: {problem}", err=True)


class Direction(StrEnum):
    push = "push"
    pull = "pull"


class Format(StrEnum):
    table = "table"
    json = "json"


P = ParamSpec("P")


def _one_line_errors(func: Callable[P, None]) -> Callable[P, None]:
    """Last line of defence: whatever escapes a command is reported in one line with exit 2."""

    @wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            func(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except Exception as exc:  # never show a traceback to an integrator
            typer.echo(f"error: {type(exc).__name__}: {exc}", err=True)
            raise typer.Exit(EXIT_INVALID) from None

    return wrapper


def _console() -> Console:
    return Console(highlight=False, soft_wrap=True)


def _load(file: Path) -> MappingSet:
    try:
        return load_mapping(file)
    except MappingError as exc:
        for issue in exc.issues:
            typer.echo(str(issue))
        n = len(exc.issues)
        typer.echo(f"{file}: {n} error{'s' if n != 1 else ''}", err=True)
        raise typer.Exit(EXIT_INVALID) from None


@app.command()
@_one_line_errors
def validate(
    files: Annotated[list[Path], typer.Argument(help="Mapping files to check.", show_default=False)],
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            envvar="DCSYNC_CONFIG",
            help="Project file whose connectors' field scopes a file is checked against, for every "
            "connector whose mapping: it is (default: ./dcsync.yaml when it exists).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Check mapping files without data: YAML, schema, paths, transforms, targets, reversibility, and the
    push scopes of the connectors that use them."""
    scoped = _project_scopes(config)
    failed = False
    for file in files:
        try:
            mappings = load_mapping(file)
        except MappingError as exc:
            failed = True
            for issue in exc.issues:
                typer.echo(str(issue))
            n = len(exc.issues)
            typer.echo(f"{file}: {n} error{'s' if n != 1 else ''}", err=True)
            continue
        problems = _scope_problems(scoped, file, mappings)
        if problems:
            failed = True
            for problem in problems:
                typer.echo(problem)
            n = len(problems)
            typer.echo(f"{file}: {n} scope error{'s' if n != 1 else ''}", err=True)
            continue
        names = ", ".join(f"{m.name} ({m.entity_name or m.entity_type})" for m in mappings.mappings)
        typer.echo(f"{file}: ok, {len(mappings)} mapping{'s' if len(mappings) != 1 else ''}: {names}")
    if failed:
        raise typer.Exit(EXIT_INVALID)


def _project_scopes(config: Path | None) -> Any:
    """The project whose scopes apply (``None``: no project file here), loaded without plugins or stores."""
    from connector_core.config import CONFIG_FILE_NAME, ConfigError, load_config

    path = config if config is not None else Path(CONFIG_FILE_NAME)
    if config is None and not path.exists():
        return None
    try:
        return load_config(path)
    except ConfigError as exc:
        if config is None:  # found, not asked for: the mapping is still checked, the scopes are not
            typer.echo(f"warning: field scopes not checked: {exc.problems[0]}", err=True)
            return None
        for problem in exc.problems:
            typer.echo(problem)
        raise typer.Exit(EXIT_INVALID) from None


def _scope_problems(loaded: Any, file: Path, mappings: MappingSet) -> list[str]:
    """Scope errors of ``file`` for every connector of ``loaded`` whose ``mapping:`` is that file."""
    if loaded is None:
        return []
    from connector_core.project import scope_problems

    out: list[str] = []
    for name, instance in loaded.project.connectors.items():
        if instance.mapping is None or instance.scopes is None:
            continue
        if loaded.resolve_path(instance.mapping).resolve() == file.resolve():
            out.extend(scope_problems(loaded, name, mappings))
    return out


@app.command()
@_one_line_errors
def test(
    file: Annotated[Path, typer.Argument(help="The mapping file.", show_default=False)],
    sample: Annotated[
        Path,
        typer.Option(
            "--sample",
            help="push: DataCollect events (JSONL), folded into entities; "
            'pull: external records (JSONL of {"entity_name", "external_id", "data"}).',
            show_default=False,
        ),
    ],
    direction: Annotated[Direction, typer.Option(help="Which way to map.")] = Direction.push,
    format: Annotated[Format, typer.Option("--format", help="Output format.")] = Format.table,
    explain: Annotated[
        str | None,
        typer.Option(help="Show how every field of this record (guid, or its prefix) was made."),
    ] = None,
    expect: Annotated[
        Path | None,
        typer.Option(help="Golden outputs (JSONL); any difference exits 1.", show_default=False),
    ] = None,
    entity: Annotated[str | None, typer.Option(help="Only use the mapping of this entity name.")] = None,
    links: Annotated[
        Path | None,
        typer.Option(
            help="JSON object entity guid -> external id (default: every sample entity is "
            "taken as pushed, with external id 'ext-<guid>').",
            show_default=False,
        ),
    ] = None,
    write_expected: Annotated[
        Path | None,
        typer.Option(help="Write this run's outputs as golden JSONL to this file.", show_default=False),
    ] = None,
) -> None:
    """Dry-run FILE over a sample: print outputs, record errors, coverage; compare with --expect."""
    mappings = _load(file)
    only: EntityMapping | None = None
    if entity is not None:
        only = mappings.for_entity_name(entity)
        if only is None:
            known = ", ".join(mappings.entity_names) or "none"
            typer.echo(
                f"error: {file} has no mapping for entity name {entity!r} (entity names: {known})", err=True
            )
            raise typer.Exit(EXIT_INVALID)
    try:
        notes: list[str] = []
        if direction == Direction.push:
            samples = load_entities(sample, notes)
            if only is not None:
                samples = [s for s in samples if mappings.for_entity(s.doc) is only]
        else:
            samples = load_records(sample)
        ctx = context_for(samples, load_links(links) if links else None)
        report = run_test(mappings, samples, direction.value, ctx, only=only, explain_key=explain)
        report.notes.extend(notes)
        if expect is not None:
            report.differences = compare(report.outcomes, load_expected(expect))
    except InputError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_INVALID) from None
    if write_expected is not None:
        lines = expected_lines(report.outcomes, direction.value)
        write_expected.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    if format == Format.json:
        typer.echo(json.dumps(report.to_dict(), ensure_ascii=False, indent=2, default=str))
    else:
        _print_report(report, file, sample, expect)
    raise typer.Exit(EXIT_OK if report.ok else EXIT_RECORD_ERRORS)


@app.command()
@_one_line_errors
def transforms() -> None:
    """List the transforms a mapping can use (built-ins and plugins')."""
    table = Table(title="transforms", show_lines=False)
    for col in ("name", "in -> out", "reversible", "params", "what it does"):
        table.add_column(col)
    for d in sorted(default_registry(), key=lambda d: d.name):
        params = (
            ", ".join((info.alias or name) for name, info in d.params.model_fields.items())
            if d.params
            else ""
        )
        out = d.output if isinstance(d.output, str) else "depends"
        table.add_row(
            Text(d.name),
            Text(f"{d.input} -> {out}"),
            "yes" if d.reversible else "",
            Text(params),
            Text(d.summary),
        )
    _console().print(table)


# ---- table output ----------------------------------------------------------------------------------


def _cell(value: Any) -> Text:
    return Text(show(value, limit=200))


def _print_report(report: TestReport, file: Path, sample: Path, expect: Path | None) -> None:
    console = _console()
    for outcome in report.outcomes:
        if outcome.skipped is not None:
            continue
        title = f"{outcome.mapping} {outcome.key}"
        if outcome.excluded:
            console.print(Text(f"{title}: excluded by the record's when"))
            continue
        table = Table(title=Text(title), title_justify="left", show_header=True)
        table.add_column("field")
        table.add_column("value", overflow="fold")
        for key, value in (outcome.record or {}).items():
            table.add_row(Text(key), _cell(value))
        console.print(table)
    skipped = [o for o in report.outcomes if o.skipped is not None]
    if skipped:
        names = ", ".join(sorted({repr(o.entity_name) for o in skipped}))
        console.print(Text(f"skipped {len(skipped)} input(s) without a mapping (entity names {names})"))
    if report.errors:
        table = Table(title=Text(f"record errors ({len(report.errors)})"), title_justify="left")
        for col in ("record", "field", "value", "reason"):
            table.add_column(col, overflow="fold")
        for key, err in report.errors:
            table.add_row(Text(key), Text(err.field), _cell(err.value), Text(err.reason))
        console.print(table)
    for cov in report.coverage:
        console.print(Text(f"coverage of {cov.mapping!r} over {cov.records} record(s):"))
        never = ", ".join(cov.never_produced) or "none"
        unused = ", ".join(cov.unused_sources) or "none"
        console.print(Text(f"  target fields never produced: {never}"))
        console.print(Text(f"  source fields present but never used: {unused}"))
    for cov in report.coverage:
        for what in cov.unmatched_sources:
            console.print(
                Text(
                    f"error: {cov.mapping}: field {what} matched no sample record "
                    "(a typo in the path? mark the field `optional: true` if the samples lack it)"
                )
            )
    for note in report.notes:
        console.print(Text(f"note: {note}"))
    for line in report.unmatched:
        console.print(Text(f"error: {line}"))
    if report.explanation is not None:
        console.print(Text("explain:"))
        console.print(Text("\n".join(report.explanation.lines())))
    elif report.explain_note:
        console.print(Text(f"explain: {report.explain_note}"))
    if expect is not None:
        if report.differences:
            table = Table(
                title=Text(f"differences from {expect} ({len(report.differences)})"), title_justify="left"
            )
            for col in ("record", "field", "difference"):
                table.add_column(col, overflow="fold")
            for d in report.differences:
                table.add_row(Text(d.key), Text(d.path or "(record)"), Text(d.note))
            console.print(table)
        else:
            console.print(Text(f"matches {expect}"))
    s = report.summary()
    verdict = "OK" if report.ok else "FAILED"
    console.print(
        Text(
            f"{verdict}: {file} over {sample}: {s['inputs']} input(s), {s['mapped']} mapped, "
            f"{s['excluded']} excluded, {s['with_errors']} with errors ({s['errors']} field errors), "
            f"{s['skipped']} without a mapping, {s['differences']} difference(s)"
        )
    )

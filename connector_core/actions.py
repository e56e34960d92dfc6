"""What an operator does to a project's state, the same from the CLI and the console, each in the audit trail.

Replaying, discarding and resolving change what reaches a registry, so a data-protection officer (and the next
operator on call) must be able to tell who did it and when. Keeping the actions here, rather than in each
front end, is what makes the trail complete: a front end cannot forget to record what it never does itself.
An action's record holds counts, ids and field names, never a record's data.
"""

from __future__ import annotations

import getpass
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from connector_core.events import FormSubmission
from connector_core.redaction import redact
from connector_core.state.base import DeadLetter
from connector_core.streams import chunks
from connector_core.sync.report import DirectionReport

log = logging.getLogger("dcsync.actions")

PAGE = 1000
"""Dead letters closed per transaction: a discard of a million letters holds one page at a time."""


@dataclass(frozen=True)
class Progress:
    """How far a replay or discard has got, told after each committed page (the console's job page)."""

    letters: int = 0
    delivered: int = 0
    failed_again: int = 0
    discarded: int = 0

    def __add__(self, other: Progress) -> Progress:
        return Progress(
            self.letters + other.letters,
            self.delivered + other.delivered,
            self.failed_again + other.failed_again,
            self.discarded + other.discarded,
        )


OnPage = Callable[[Progress], None]
"""Called between pages, with nothing held open: what was done so far is committed."""


class ActionError(Exception):
    """An action that cannot be done as asked (an unknown or closed id); ``str()`` is one line."""


def current_actor() -> str:
    """``os:<login>`` for a command run from a shell: the person behind it as the machine knows them."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (a container's uid) and no LOGNAME/USER
        user = f"uid{os.getuid()}" if hasattr(os, "getuid") else "unknown"
    return f"os:{user}"


def replay_dead_letters(
    project: Any,
    connector: str,
    letters: Iterable[DeadLetter],
    *,
    actor: str,
    note: str | None = None,
    on_page: OnPage | None = None,
    stop: threading.Event | None = None,
) -> DirectionReport:
    """Deliver ``letters`` again (a stream: a page held at a time) and record who asked for it (and why,
    when the operator said: ``note``).

    Each page commits as it goes, so a replay that ``stop`` ends (looked at between pages) or a process
    that dies leaves what it delivered closed and the rest open; the record counts what was done.
    ``on_page`` hears the counts so far after each page.

    A replay that stops on an error (the remote down past its retry budget, the lease lost, Ctrl-C) is
    recorded too, before the error goes on: whoever re-sent the letters of the pages before it is in the
    trail, with ``outcome: stopped`` and the error's line. ``on_page`` hears those final counts as well."""
    from connector_core.sync.replay import replay
    from connector_core.sync.runner import sync_session

    tally = _Tally(letters)
    began = False
    try:
        with sync_session(project, connector) as ctx:

            def between(report: DirectionReport) -> None:
                tally.committed(report)
                if on_page is not None:
                    on_page(tally.done)
                if stop is not None and stop.is_set():
                    # asked between pages only: a page cut short would count letters it never sent
                    ctx.stop.set()

            if stop is not None and stop.is_set():
                ctx.stop.set()
            began = True
            report = replay(ctx, tally.stream(), on_page=between)
    except BaseException as exc:
        if began:
            _record_stopped_replay(project, connector, tally, exc, actor=actor, note=note, on_page=on_page)
        raise
    stopped = "asked to stop; the letters it had not reached stay open" if tally.in_flight else None
    _record_replay(project, connector, _replayed(report), actor=actor, note=note, stopped=stopped)
    return report


class _Tally:
    """What a replay has settled: the counts its ``on_page`` tells after each committed page, and the
    letters drawn since (the page in flight).

    A replay page is not one transaction: its batches commit one by one (each delivery with its answer), so
    a replay that stops part-way may have closed some letters of its page in flight and not others. Those
    are read back from the store, which holds what committed; counting the page whole would name letters
    never sent, and leaving it out would hide letters re-sent and closed."""

    def __init__(self, letters: Iterable[DeadLetter]) -> None:
        self._letters = letters
        self.done = Progress()
        self.in_flight: list[DeadLetter] = []  # the letters of the page in flight, held by replay anyway

    def stream(self) -> Iterator[DeadLetter]:
        for letter in self._letters:
            self.in_flight.append(letter)
            yield letter

    def committed(self, report: DirectionReport) -> None:
        self.done = _replayed(report)
        self.in_flight.clear()

    def settled(self, state: Any) -> Progress:
        """``done`` and the letters of the page in flight whose outcome committed: closed (delivered, or
        discarded as gone from the log, counted as a page counts them) or refused again (an attempt more)."""
        delivered = failed = 0
        for letter in self.in_flight:
            now = state.get_dead_letter(letter.id)
            if now is None:
                continue
            if now.status != "open":
                delivered += 1
            elif now.attempts > letter.attempts:
                failed += 1
        return self.done + Progress(delivered + failed, delivered, failed)


def _record_stopped_replay(
    project: Any,
    connector: str,
    tally: _Tally,
    exc: BaseException,
    *,
    actor: str,
    note: str | None,
    on_page: OnPage | None,
) -> None:
    """The record of a replay an error ended, in a transaction of its own (the page in flight's was rolled
    back). Its own failure (the store is what failed) is logged, never raised over the replay's error."""
    try:
        progress = tally.settled(project.state)
        _record_replay(project, connector, progress, actor=actor, note=note, stopped=_stop_line(exc))
    except Exception as failure:
        log.warning(
            "the stopped replay of %s could not be recorded in the audit trail: %s",
            connector,
            redact(" ".join(str(failure).split()) or type(failure).__name__),
        )
        return
    if on_page is not None and isinstance(exc, Exception):
        try:
            on_page(progress)  # the console job's page shows what the record says
        except Exception:
            log.debug("on_page after a stopped replay of %s failed", connector, exc_info=True)


def _record_replay(
    project: Any, connector: str, done: Progress, *, actor: str, note: str | None, stopped: str | None
) -> None:
    detail: dict[str, Any] = {
        "letters": done.letters,
        "delivered": done.delivered,
        "failed_again": done.failed_again,
    }
    if note:
        detail["note"] = note
    if stopped is not None:
        detail["outcome"] = "stopped"
        detail["error"] = stopped
    with project.state.transaction() as tx:
        tx.record_action(actor, "replay", connector=connector, detail=detail)


def _stop_line(exc: BaseException) -> str:
    """Why a replay stopped, in one line with no secret (as the CLI prints and the run history keeps)."""
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted (Ctrl-C); the letters it had not settled stay open"
    if isinstance(exc, SystemExit):
        return "the process was told to stop; the letters it had not settled stay open"
    return redact(" ".join(str(exc).split()) or type(exc).__name__)


def discard_dead_letters(
    project: Any,
    connector: str,
    letters: Iterable[DeadLetter],
    *,
    actor: str,
    note: str | None = None,
    on_page: OnPage | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Close ``letters`` without delivering them, a transaction a page; each page's record commits with it,
    so an interrupted discard (``stop`` set, checked between pages) leaves a trail of exactly what it
    closed.

    The connector's lease is held throughout, as a replay holds it: a run or replay elsewhere (another
    console, the CLI, the scheduler) works on these very letters, and a discard between its read of a letter
    and its write would be undone or doubled. A busy connector raises ``ConnectorBusy`` before anything is
    closed or recorded."""
    from connector_core.sync.runner import connector_lock

    discarded = 0
    with connector_lock(project, connector):
        for page in chunks(letters, PAGE):
            if stop is not None and stop.is_set():
                break
            with project.state.transaction() as tx:
                for letter in page:
                    tx.resolve_dead_letter(letter.connector, letter.direction, letter.ref, "discarded")
                detail: dict[str, Any] = {"letters": len(page), "ids": _id_span(page)}
                if note:
                    detail["note"] = note
                tx.record_action(actor, "discard", connector=connector, detail=detail)
            discarded += len(page)
            if on_page is not None:
                on_page(Progress(letters=discarded, discarded=discarded))
    return discarded


def resolve_conflict(
    project: Any, conflict_id: int, take: str | Mapping[str, str], *, actor: str
) -> FormSubmission | None:
    """Settle an open conflict for the whole record or field by field (see ``resolve_open_conflict``)."""
    from connector_core.sync.conflicts import resolve_open_conflict
    from connector_core.sync.runner import sync_session

    conflict = project.state.get_conflict(conflict_id)
    if conflict is None or conflict.status != "open":
        raise ActionError(f"no open conflict with id {conflict_id}")
    try:
        with sync_session(project, conflict.connector) as ctx:
            event = resolve_open_conflict(ctx, conflict, take)
    except ValueError as exc:
        raise ActionError(str(exc)) from None
    settled = project.state.get_conflict(conflict_id)
    project.state.record_action(
        actor,
        "resolve",
        connector=conflict.connector,
        target=conflict.entity_guid,
        detail={
            "conflict": conflict_id,
            "resolution": settled.resolution if settled else None,
            "event": event.guid if event else None,
        },
    )
    return event


def _replayed(report: DirectionReport) -> Progress:
    c = report.counts
    return Progress(letters=c.read, delivered=c.read - c.dead_lettered, failed_again=c.dead_lettered)


def _id_span(letters: list[DeadLetter]) -> list[int] | str:
    """The ids a page closed: listed when few, as a range when many (a page of 1,000 stays one line)."""
    ids = sorted(letter.id for letter in letters)
    return ids if len(ids) <= 20 else f"{ids[0]}..{ids[-1]}"

"""What did not go through and why: dead letters grouped by reason (counted by the store), each group's
letters a keyset page at a time, one letter's payload and the remote's message; replay or discard one, a
selection, a whole group or a whole connector, after a page that says how many. The action runs as a
background job (console/jobs.py, pages/jobs.py): the operator is sent to its page at once."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from connector_core.actions import Progress, discard_dead_letters, replay_dead_letters
from connector_core.console.context import PAGE, Console, actor, opt, opt_int, redirect
from connector_core.console.jobs import Job, JobRefused, Step
from connector_core.redaction import redact, redact_value
from connector_core.state.base import DeadLetter
from connector_core.state.lease import ConnectorBusy
from connector_core.sync.runner import connector_lock

STREAM_PAGE = 500
ACTIONS = ("replay", "discard")
SCOPES = ("ids", "group", "connector")


@dataclass(frozen=True)
class Selection:
    """Which open dead letters an action is for: listed ids, one group, or a connector's (one direction's)."""

    scope: str
    connector: str | None
    direction: str | None = None
    reason: str | None = None
    ids: tuple[int, ...] = ()

    @classmethod
    def of(cls, form: FormData) -> Selection:
        def text(name: str) -> str | None:
            value = form.get(name)
            return value.strip() or None if isinstance(value, str) else None

        scope = text("scope") or "ids"
        if scope not in SCOPES:
            raise HTTPException(400, f"scope must be one of {', '.join(SCOPES)}")
        try:
            ids = tuple(sorted({int(v) for v in form.getlist("ids") if isinstance(v, str) and v}))
        except ValueError:
            raise HTTPException(400, "dead letter ids must be numbers") from None
        selection = cls(scope, text("connector"), text("direction"), text("reason"), ids)
        if scope == "ids" and not ids:
            raise HTTPException(400, "select at least one dead letter")
        if scope == "group" and not (selection.connector and selection.direction and selection.reason):
            raise HTTPException(400, "a group is a connector, a direction and a reason")
        if scope == "connector" and not selection.connector:
            raise HTTPException(400, "name the connector")
        return selection

    def hidden(self) -> list[tuple[str, str]]:
        """The form fields that carry this selection to the next page."""
        fields = [("scope", self.scope)]
        for name in ("connector", "direction", "reason"):
            value = getattr(self, name)
            if value is not None:
                fields.append((name, value))
        fields.extend(("ids", str(i)) for i in self.ids)
        return fields

    def count(self, state: Any) -> int:
        if self.scope == "ids":
            return sum(1 for _ in self._listed(state))
        return int(state.count_dead_letters(self.connector, direction=self.direction, reason=self._reason()))

    def _reason(self) -> str | None:
        return self.reason if self.scope == "group" else None

    def _listed(self, state: Any) -> Iterator[DeadLetter]:
        for i in self.ids:
            letter = state.get_dead_letter(i)
            if (
                letter is not None
                and letter.status == "open"
                and (self.connector is None or letter.connector == self.connector)
            ):
                yield letter

    def by_connector(self, state: Any) -> dict[str, Any]:
        """Per connector, a stream of its selected open letters (an action is done per connector)."""
        if self.scope == "ids":
            grouped: dict[str, list[DeadLetter]] = {}
            for letter in self._listed(state):
                grouped.setdefault(letter.connector, []).append(letter)
            return grouped
        assert self.connector is not None
        return {self.connector: stream(state, self.connector, self.direction, self._reason())}

    def describe(self) -> str:
        if self.scope == "ids":
            return f"the selected dead letters ({', '.join(map(str, self.ids))})"
        if self.scope == "group":
            return f"every open {self.direction} dead letter of {self.connector} with this reason"
        where = f" ({self.direction})" if self.direction else ""
        return f"every open dead letter of {self.connector}{where}"


def stream(state: Any, connector: str, direction: str | None, reason: str | None) -> Iterator[DeadLetter]:
    """The open letters matching, in id order, a keyset page per query (a replay closes them as it goes)."""
    return state.iter_dead_letters(connector, "open", STREAM_PAGE, direction=direction, reason=reason)  # type: ignore[no-any-return]


def _held_elsewhere(console: Console, connectors: tuple[str, ...]) -> str | None:
    """The one line of a connector whose lease another process holds (a run, a CLI replay, another console
    replica), so the operator gets the answer on the page they asked from rather than as a failed job.

    Tried by taking and letting go of each lease: no store can say whether a lease is free without
    contesting it (a dead holder's name lingers). A holder that comes between this and the job's start
    still stops the job, with the same line on its page. A connector with a job of this console running is
    left to :meth:`Jobs.start`, which names the job."""
    for name in connectors:
        if console.jobs.running(name) is not None:
            continue
        try:
            with connector_lock(console.project, name):
                pass
        except ConnectorBusy as exc:
            return str(exc)
    return None


def _back(selection: Selection) -> str:
    return "?" + urlencode({"connector": selection.connector}) if selection.connector else ""


def routes(console: Console) -> list[Route]:
    state = console.project.state

    async def letters(request: Request) -> Response:
        connector = opt(request, "connector")
        direction = opt(request, "direction")
        reason = opt(request, "reason")
        status = opt(request, "status") or "open"
        after = opt_int(request, "after")
        listing = reason is not None or request.query_params.get("list") == "1"
        wanted = None if status == "all" else status

        def work():  # type: ignore[no-untyped-def]
            names = console.project.connector_names()
            if not listing:
                return names, state.dead_letter_groups(connector, wanted), None
            page = state.dead_letter_page(
                connector,
                direction=direction,
                reason=reason,
                status=wanted,
                after_id=after,
                limit=PAGE + 1,
            )
            return names, None, page

        names, groups, page = await console.run(work)
        more = page is not None and len(page) > PAGE
        page = page[:PAGE] if page is not None else None
        return console.render(
            request,
            "dead_letters.html",
            connectors=names,
            groups=groups,
            letters=page,
            filters={"connector": connector, "direction": direction, "reason": reason, "status": status},
            next_after=page[-1].id if more and page else None,
            flash=request.session.pop("flash", None),
            running=[j for j in console.jobs.recent() if j.running],
            redact=redact,
        )

    async def letter(request: Request) -> Response:
        letter_id = int(request.path_params["letter_id"])
        found = await console.run(lambda: state.get_dead_letter(letter_id))
        if found is None:
            raise HTTPException(404, f"no dead letter with id {letter_id}")
        payload = json.dumps(redact_value(found.payload, full=True), indent=2, sort_keys=True)
        return console.render(
            request, "dead_letter.html", letter=found, reason=redact(found.reason), payload=payload
        )

    async def confirm(request: Request) -> Response:
        form = await console.form(request)
        action = form.get("action")
        if action not in ACTIONS:
            raise HTTPException(400, "action must be replay or discard")
        selection = Selection.of(form)
        count = await console.run(lambda: selection.count(state))
        return console.render(
            request,
            "confirm.html",
            action=action,
            selection=selection,
            count=count,
            reason=redact(selection.reason or ""),
        )

    async def apply(request: Request) -> Response:
        form = await console.form(request)
        action = form.get("action")
        if action not in ACTIONS:
            raise HTTPException(400, "action must be replay or discard")
        selection = Selection.of(form)
        note_value = form.get("note")
        note = note_value.strip() if isinstance(note_value, str) and note_value.strip() else None
        if action == "discard" and note is None:
            raise HTTPException(400, "say why these dead letters are discarded (the note)")
        who = actor(request)

        def prepare() -> tuple[dict[str, Any], int]:
            grouped = selection.by_connector(state)  # listed ids: read now; a group: a stream for the job
            total = sum(map(len, grouped.values())) if selection.scope == "ids" else selection.count(state)
            return grouped, total

        grouped, total = await console.run(prepare)
        if not grouped or not total:
            request.session["flash"] = "nothing to do: no open dead letter matches"
            return redirect(request, f"/dead-letters{_back(selection)}")
        busy = await console.run(lambda: _held_elsewhere(console, tuple(grouped)))
        if busy is not None:
            return console.render(request, "error.html", 409, message=busy, job=None)

        def work(job: Job, step: Step) -> None:
            """One action per connector (an audit record each, as the CLI makes), a page at a time."""
            done = Progress()
            for connector, letters in grouped.items():
                base = done

                def told(progress: Progress, base: Progress = base) -> None:
                    step(base + progress)

                if action == "replay":
                    counts = replay_dead_letters(
                        console.project, connector, letters, actor=who, note=note, on_page=told, stop=job.stop
                    ).counts
                    failed = counts.dead_lettered
                    done = base + Progress(counts.read, counts.read - failed, failed)
                else:
                    n = discard_dead_letters(
                        console.project, connector, letters, actor=who, note=note, on_page=told, stop=job.stop
                    )
                    done = base + Progress(letters=n, discarded=n)
                job.progress = done
                if job.stop.is_set():
                    break

        try:
            job = console.jobs.start(
                action=str(action),
                connectors=tuple(grouped),
                actor=who,
                what=selection.describe(),
                total=total,
                note=note,
                work=work,
            )
        except JobRefused as exc:
            return console.render(request, "error.html", 409, message=str(exc), job=exc.running)
        return redirect(request, f"/jobs/{job.id}")

    return [
        Route("/dead-letters", letters, methods=["GET"], name="dead_letters"),
        Route("/dead-letters/{letter_id:int}", letter, methods=["GET"], name="dead_letter"),
        Route("/dead-letters/confirm", confirm, methods=["POST"], name="dead_letters_confirm"),
        Route("/dead-letters/apply", apply, methods=["POST"], name="dead_letters_apply"),
    ]

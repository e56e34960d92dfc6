"""Which records changed on both sides: base, local and external side by side, the differing fields
marked; settled for the whole record or field by field (``connector_core.actions.resolve_conflict``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from connector_core.actions import ActionError, resolve_conflict
from connector_core.console.context import PAGE, Console, actor, opt, opt_int, redirect
from connector_core.redaction import redact_value
from connector_core.state.base import Conflict
from connector_core.state.lease import ConnectorBusy

SIDES = ("local", "external")


@dataclass(frozen=True)
class FieldRow:
    name: str
    base: str
    local: str
    external: str
    changed_local: bool
    changed_external: bool

    @property
    def differs(self) -> bool:
        return self.local != self.external


def _shown(value: Any) -> str:
    return json.dumps(redact_value(value, full=True), ensure_ascii=False, sort_keys=True)


def field_rows(conflict: Conflict) -> list[FieldRow]:
    """Each field either side changed, with the three versions (an unchanged side shows the base)."""
    rows = []
    for key in sorted(set(conflict.local) | set(conflict.remote)):
        base = conflict.base.get(key)
        local = conflict.local.get(key, base)
        remote = conflict.remote.get(key, base)
        changed = (key in conflict.local, key in conflict.remote)
        rows.append(FieldRow(key, _shown(base), _shown(local), _shown(remote), *changed))
    return rows


def routes(console: Console) -> list[Route]:
    state = console.project.state

    async def conflicts(request: Request) -> Response:
        connector = opt(request, "connector")
        status = opt(request, "status") or "open"
        after = opt_int(request, "after")

        def work():  # type: ignore[no-untyped-def]
            page = state.conflict_page(
                connector, status=None if status == "all" else status, after_id=after, limit=PAGE + 1
            )
            return page, console.project.connector_names()

        page, names = await console.run(work)
        more = len(page) > PAGE
        page = page[:PAGE]
        return console.render(
            request,
            "conflicts.html",
            conflicts=[(c, ", ".join(sorted(set(c.local) | set(c.remote)))) for c in page],
            connectors=names,
            filters={"connector": connector, "status": status},
            next_after=page[-1].id if more and page else None,
            flash=request.session.pop("flash", None),
        )

    async def conflict(request: Request) -> Response:
        conflict_id = int(request.path_params["conflict_id"])
        found = await console.run(lambda: state.get_conflict(conflict_id))
        if found is None:
            raise HTTPException(404, f"no conflict with id {conflict_id}")
        return console.render(request, "conflict.html", conflict=found, fields=field_rows(found))

    async def resolve(request: Request) -> Response:
        conflict_id = int(request.path_params["conflict_id"])
        form = await console.form(request)
        take: str | dict[str, str]
        whole = form.get("take")
        if whole in SIDES:
            take = str(whole)
        else:
            take = {
                key[len("field:") :]: str(value)
                for key, value in form.multi_items()
                if key.startswith("field:") and isinstance(value, str)
            }
            if not take:
                raise HTTPException(400, "choose a side for the record or for each field")
        who = actor(request)

        def work() -> str:
            try:
                event = resolve_conflict(console.project, conflict_id, take, actor=who)
            except (ActionError, ConnectorBusy) as exc:  # busy: a job replaying this connector, a run
                raise HTTPException(409, str(exc)) from None
            settled = state.get_conflict(conflict_id)
            what = f"appended event {event.guid}" if event else "nothing appended"
            return f"conflict {conflict_id} resolved ({settled.resolution if settled else take}): {what}"

        request.session["flash"] = await console.run(work)
        return redirect(request, "/conflicts")

    return [
        Route("/conflicts", conflicts, methods=["GET"], name="conflicts"),
        Route("/conflicts/{conflict_id:int}", conflict, methods=["GET"], name="conflict"),
        Route("/conflicts/{conflict_id:int}/resolve", resolve, methods=["POST"], name="resolve"),
    ]

"""Why does the remote hold this: one entity, every mapped field with its source values and transforms (the
same explanation as ``dcsync mapping test --explain``), the payload a push would send now (after the field
scopes, as the push makes it), and how it differs from the snapshot last synced (the link's, in the state
store)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, cast

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from connector_core.console.context import Console, opt
from connector_core.mapping import MapContext
from connector_core.redaction import redact_value
from connector_core.scopes import FieldScopes
from connector_core.sync.push import household_outside_a_run, pushed_doc
from connector_core.sync.scoping import scoped_push

SEARCH_LIMIT = 20


@dataclass(frozen=True)
class DiffRow:
    field: str
    synced: str
    now: str
    change: str  # same | changed | added | removed


def _shown(value: Any) -> str:
    return json.dumps(redact_value(value, full=True), ensure_ascii=False, sort_keys=True)


def diff(snapshot: dict[str, Any] | None, payload: dict[str, Any] | None) -> list[DiffRow]:
    before, after = snapshot or {}, payload or {}
    rows = []
    for key in sorted(set(before) | set(after)):
        if key not in before:
            change = "added"
        elif key not in after:
            change = "removed"
        else:
            change = "same" if before[key] == after[key] else "changed"
        rows.append(DiffRow(key, _shown(before.get(key)), _shown(after.get(key)), change))
    return rows


def routes(console: Console) -> list[Route]:
    project = console.project

    async def explorer(request: Request) -> Response:
        connector = opt(request, "connector")
        query = opt(request, "q")

        def work():  # type: ignore[no-untyped-def]
            names = project.connector_names()
            if not (connector and query):
                return names, None, None
            search = getattr(project.eventlog, "search_entities", None)
            if search is None:
                found = [e for e in [project.eventlog.get_entity(query)] if e is not None]
                return names, found, "this event log backend searches by guid only"
            return names, search(query, SEARCH_LIMIT), None

        names, found, note = await console.run(work)
        if connector is not None and connector not in names:
            raise HTTPException(404, f"no connector {connector!r}")
        return console.render(
            request,
            "mapping.html",
            connectors=names,
            filters={"connector": connector, "q": query},
            found=found,
            note=note,
            limit=SEARCH_LIMIT,
            label=_label,
        )

    async def entity(request: Request) -> Response:
        connector = request.path_params["connector"]
        guid = request.path_params["guid"]

        def work() -> dict[str, Any]:
            if connector not in project.connector_names():
                raise HTTPException(404, f"no connector {connector!r}")
            found = project.eventlog.get_entity(guid)
            if found is None:
                raise HTTPException(404, f"no entity {guid} in the event log")
            doc = found.to_json()
            # what the push maps: a member its group no longer lists goes without that household, one
            # only a group lists goes with it
            state = project.state
            link = state.get_link(connector, guid)
            pushed = pushed_doc(found, household_outside_a_run(project.eventlog, found, link))

            def link_of(other: str) -> str | None:
                link = state.get_link(connector, other)
                return link.external_id if link is not None and not link.deleted else None

            mapping = project.mapping(connector).for_entity(pushed)
            values: dict[str, Any] = {"entity": found, "doc": _pretty(doc), "link": link, "mapping": mapping}
            if mapping is not None:
                ctx = MapContext(link=link_of)
                explanation = mapping.push(pushed, ctx, explain=True).explanation
                # the payload as the push makes it: the remote's values kept where the pull scope refused
                # the log's, trimmed to the push scope (connector_core/sync/scoping.py)
                scopes = FieldScopes.of(connector, project.instance(connector).scopes)
                scoped = scoped_push(cast(Any, SimpleNamespace(scopes=scopes)), mapping, pushed, ctx, link)
                result = scoped.result
                values["out_of_scope"] = scoped.dropped
                values["denied"] = scoped.denied
                values["traces"] = explanation.fields if explanation is not None else []
                values["excluded"] = explanation.excluded if explanation is not None else None
                values["errors"] = [str(e) for e in result.errors]
                values["payload"] = _pretty(result.record) if result.record is not None else None
                values["diff"] = diff(link.snapshot if link else None, result.record)
            return values

        values = await console.run(work)
        return console.render(request, "entity.html", connector=connector, show=_shown_step, **values)

    return [
        Route("/mapping", explorer, methods=["GET"], name="mapping"),
        Route("/mapping/{connector}/{guid}", entity, methods=["GET"], name="entity"),
    ]


def _pretty(value: Any) -> str:
    return json.dumps(redact_value(value, full=True), ensure_ascii=False, indent=2, sort_keys=True)


def _shown_step(value: Any) -> str:
    from connector_core.mapping.explain import show

    return str(redact_value(show(value, limit=120), full=True))


def _label(entity: Any) -> str:
    """A line naming an entity in search results: its type, name and the first few fields."""
    data = entity.data if isinstance(entity.data, dict) else {}
    shown = ", ".join(f"{k}={v}" for k, v in list(data.items())[:4] if not isinstance(v, dict | list))
    return str(redact_value(shown, full=True))

"""Who did what: the audit trail (``state.actions()``), newest first, a keyset page at a time."""

from __future__ import annotations

import json

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from connector_core.console.context import PAGE, Console, opt, opt_int


def routes(console: Console) -> list[Route]:
    async def audit(request: Request) -> Response:
        connector = opt(request, "connector")
        action = opt(request, "action")
        before = opt_int(request, "before")

        def work():  # type: ignore[no-untyped-def]
            return console.project.state.actions(
                connector=connector, action=action, before_id=before, limit=PAGE + 1
            )

        rows = await console.run(work)
        more = len(rows) > PAGE
        rows = rows[:PAGE]
        return console.render(
            request,
            "audit.html",
            actions=[(a, _detail(a.detail)) for a in rows],
            filters={"connector": connector, "action": action},
            older=rows[-1].id if more and rows else None,
        )

    return [Route("/audit", audit, methods=["GET"], name="audit")]


def _detail(detail: dict[str, object]) -> str:
    return ", ".join(f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in detail.items())

"""What ran: the run history filtered by connector, direction and outcome, a keyset page at a time."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from connector_core.console.context import PAGE, Console, opt, opt_int
from connector_core.console.pages.overview import duration
from connector_core.outcomes import shown_outcome

DIRECTIONS = ("push", "pull", "both")
OUTCOMES = ("ok", "failed", "interrupted", "abandoned", "skipped", "running")
"""Outcomes as stored; ``degraded`` is shown (derived from a run's counts) but is stored as ``ok``."""


def routes(console: Console) -> list[Route]:
    async def runs(request: Request) -> Response:
        connector = opt(request, "connector")
        direction = opt(request, "direction")
        outcome = opt(request, "outcome")
        before = opt_int(request, "before")

        def work():  # type: ignore[no-untyped-def]
            rows = console.project.state.run_page(
                connector, direction=direction, outcome=outcome, before_id=before, limit=PAGE + 1
            )
            return rows, console.project.connector_names()

        rows, names = await console.run(work)
        more = len(rows) > PAGE
        rows = rows[:PAGE]
        return console.render(
            request,
            "runs.html",
            runs=[(r, shown_outcome(r.outcome, r.counts), duration(r)) for r in rows],
            connectors=names,
            directions=DIRECTIONS,
            outcomes=OUTCOMES,
            filters={"connector": connector, "direction": direction, "outcome": outcome},
            older=rows[-1].id if more and rows else None,
        )

    async def run(request: Request) -> Response:
        run_id = int(request.path_params["run_id"])
        found = await console.run(lambda: console.project.state.get_run(run_id))
        if found is None:
            raise HTTPException(404, f"no run with id {run_id}")
        return console.render(
            request,
            "run.html",
            run=found,
            outcome=shown_outcome(found.outcome, found.counts),
            duration=duration(found),
        )

    return [
        Route("/runs", runs, methods=["GET"], name="runs"),
        Route("/runs/{run_id:int}", run, methods=["GET"], name="run"),
    ]

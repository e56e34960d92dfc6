"""Is it running: each connector's last run, push lag, next run and open work, with the last runs charted."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from connector_core.console.charts import bars
from connector_core.console.context import Console
from connector_core.events import parse_timestamp
from connector_core.state.base import RunRecord
from connector_core.status import connector_statuses

CHART_RUNS = 30


def duration(run: RunRecord) -> float | None:
    if not run.finished_at:
        return None
    return round((parse_timestamp(run.finished_at) - parse_timestamp(run.started_at)).total_seconds(), 3)


def routes(console: Console) -> list[Route]:
    async def overview(request: Request) -> Response:
        def work() -> list[dict[str, object]]:
            rows = []
            for status in connector_statuses(console.project):
                runs = list(reversed(console.project.state.runs(status.connector, limit=CHART_RUNS)))
                lag = [r.counts.get("push_lag") for r in runs]
                rows.append(
                    {
                        "status": status,
                        "lag_chart": bars(lag, title=f"{status.connector}: push lag after each run"),
                        "duration_chart": bars(
                            [duration(r) for r in runs],
                            title=f"{status.connector}: duration of each run",
                            unit="s",
                        ),
                        "charted": len(runs),
                    }
                )
            return rows

        return console.render(request, "overview.html", rows=await console.run(work))

    return [Route("/", overview, methods=["GET"], name="overview")]

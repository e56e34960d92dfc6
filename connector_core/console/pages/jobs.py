"""The console's background jobs (a replay or discard started from the dead-letter page): the recent ones,
and one job's progress, a page that reloads itself while the job runs (``<meta http-equiv="refresh">``: the
console has no JavaScript). Jobs are in memory (console/jobs.py), so these pages never wait for the project
lock: they answer while a job holds it for a page."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from connector_core.console.context import Console

REFRESH = 2
"""Seconds between reloads of a running job's page."""


def routes(console: Console) -> list[Route]:
    async def jobs(request: Request) -> Response:
        return console.render(request, "jobs.html", jobs=console.jobs.recent())

    async def job(request: Request) -> Response:
        job_id = int(request.path_params["job_id"])
        found = console.jobs.get(job_id)
        if found is None:
            raise HTTPException(404, f"no job {job_id} (jobs are forgotten when the console restarts)")
        return console.render(request, "job.html", job=found, refresh=REFRESH if found.running else None)

    return [
        Route("/jobs", jobs, methods=["GET"], name="jobs"),
        Route("/jobs/{job_id:int}", job, methods=["GET"], name="job"),
    ]

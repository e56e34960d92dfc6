"""``dcsync demo``: the whole loop on embedded defaults, in a workspace a new user can look into.

It seeds a SQLite log with a realistic mobile-style sample, starts the mock system on a free loopback port
(its records kept in the workspace, so a second demo finds them), pushes, edits a few records on the remote
side, pulls those edits back as events, and reports. Run it twice on one workspace: the second run pushes
nothing, because nothing changed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import httpx

from connector_core.config import CONFIG_FILE_NAME
from connector_core.plugins import load_plugins
from connector_core.project import Project
from connector_core.sample import mobile_log
from connector_core.sync.report import RunReport
from connector_core.sync.runner import run_connector
from connector_core.testing.server import serve

DEMO_CONNECTOR = "demo-registry"
URL_VARIABLE = "DCSYNC_DEMO_MOCK_URL"

DEMO_CONFIG = f"""\
# Written by `dcsync demo`. The demo starts the mock server on a free port each run and passes its address in
# the environment; between demos, `dcsync mock-server mock --port 8765 --data mock-server.json` serves the
# same records for `dcsync run demo-registry`.
version: 1
eventlog:
  backend: sqlite
  path: events.db
state:
  backend: sqlite
  path: state.db
connectors:
  {DEMO_CONNECTOR}:
    type: mock
    batch_size: 50
    page_size: 200
    settings:
      url: ${{{URL_VARIABLE}:-http://127.0.0.1:8765}}
"""

# Remote-side edits: (index of a remote individual record, fields a registry clerk changed).
REMOTE_EDITS = [
    (0, {"phone_number": "+639170000001"}),
    (3, {"last_name": "Santos-Reyes", "name": "Amina Santos-Reyes"}),
    (7, {"gender": "female"}),
    (12, {"phone_number": "+639170000012"}),
    (20, {"relationship": "2"}),
]


@dataclass
class DemoResult:
    workspace: Path
    seeded: int
    events_total: int
    push: RunReport
    pull: RunReport
    remote_edits: int


def run_demo(workspace: Path, households: int = 50, members: int = 4) -> DemoResult:
    workspace.mkdir(parents=True, exist_ok=True)
    config_path = workspace / CONFIG_FILE_NAME
    if not config_path.exists():
        config_path.write_text(DEMO_CONFIG, encoding="utf-8")
    host = load_plugins()
    mock_app = host.fake_server("mock")(workspace / "mock-server.json")
    with serve(mock_app) as server:
        os.environ[URL_VARIABLE] = server.url
        project = Project.open(config_path, host=host)
        try:
            seeded = project.eventlog.append(mobile_log(households, members)).new
            push = run_connector(project, DEMO_CONNECTOR, pull=False, trigger="demo")
            edits = _edit_remote(server.url)
            pull = run_connector(project, DEMO_CONNECTOR, push=False, trigger="demo")
            total = project.eventlog.count()
        finally:
            project.close()
    return DemoResult(workspace, seeded, total, push, pull, edits)


def _edit_remote(url: str) -> int:
    """Change a few individuals on the remote side, as a registry clerk would."""
    with httpx.Client(base_url=url, timeout=10) as client:
        records = client.get("/_control/records").json()
        people = sorted(
            (r for r in records if r.get("entityName") == "individual" and not r.get("deleted")),
            key=lambda r: int(r["id"].split("-")[1]),
        )
        done = 0
        for index, fields in REMOTE_EDITS:
            if index < len(people):
                client.patch(f"/_control/records/{people[index]['id']}", json={"data": fields})
                done += 1
        return done

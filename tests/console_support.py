"""Shared pieces of the console tests: a project with a failing remote (dead letters) and a conflict, and
a logged-in client of the console's ASGI app."""

from __future__ import annotations

import re

import httpx
from sync_support import FAST_RETRY, event, remote_records

from connector_core.console.app import console_app, standalone_app
from connector_core.console.auth import Logins, Throttle
from connector_core.project import Project
from connector_core.sync.runner import run_connector

USER, PASSWORD = "ana", "correct horse battery"
REFUSAL = "phone_number: not a valid phone number"
PAST = "2025-03-01T10:00:00.000Z"


def failing_remote(project: Project, mock: httpx.Client, count: int = 3) -> list[str]:
    """``count`` people refused by the remote for one reason (one dead-letter group), one delivered."""
    refs = [f"p{i}" for i in range(count)]
    mock.put("/_control/faults", json={"reject": dict.fromkeys(refs, REFUSAL)})
    project.eventlog.append(
        [
            event(f"e{i}", ref, "create-individual", {"entityName": "individual", "first_name": f"N{i}"})
            for i, ref in enumerate(refs)
        ]
        + [event("eok", "ok1", "create-individual", {"entityName": "individual", "first_name": "Fine"})]
    )
    report = run_connector(project, "reg", pull=False, retry=FAST_RETRY)
    assert report.push is not None and report.push.counts.dead_lettered == count
    return refs


def conflict(project: Project, mock: httpx.Client) -> int:
    """A person changed on both sides in two fields, held open by the manual policy."""
    project.eventlog.append(
        [
            event(
                "c0",
                "c1",
                "create-individual",
                {"entityName": "individual", "first_name": "Ana", "phone_number": "+1"},
            )
        ]
    )
    assert run_connector(project, "reg", retry=FAST_RETRY).ok
    (record,) = [r for r in remote_records(mock) if r["entityGuid"] == "c1"]
    project.eventlog.append(
        [event("c2", "c1", "update-individual", {"first_name": "Anna", "phone_number": "+2"}, PAST)]
    )
    mock.patch(
        f"/_control/records/{record['id']}", json={"data": {"first_name": "Ann", "phone_number": "+3"}}
    )
    run_connector(project, "reg", retry=FAST_RETRY)
    (found,) = project.state.conflicts("reg")
    return found.id


def app_for(project: Project, **kw: object):  # type: ignore[no-untyped-def]
    return standalone_app(console_app(project, Logins({USER: PASSWORD}), **kw))  # type: ignore[arg-type]


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF field on the page"
    return match.group(1)


def log_in(client, name: str = USER, password: str = PASSWORD):  # type: ignore[no-untyped-def]
    page = client.get("/ui/login")
    return client.post(
        "/ui/login",
        data={"name": name, "password": password, "next": "/", "csrf_token": csrf_of(page.text)},
        follow_redirects=False,
    )


__all__ = ["Throttle", "app_for", "conflict", "csrf_of", "failing_remote", "log_in"]

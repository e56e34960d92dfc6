"""Shared pieces of the end-to-end sync tests: a served mock system and a project aimed at it."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from connector_core.events import FormSubmission
from connector_core.project import Project
from connector_core.retry import RetryPolicy
from connector_core.state.lease import ConnectorBusy, LeasedStateStore
from connector_core.testing.server import serve
from connectors.mock.server import create_app

FAST_RETRY = RetryPolicy(max_attempts=4, initial_delay=0.01, max_delay=0.05, max_elapsed=10)


@pytest.fixture
def mock_server() -> Iterator[httpx.Client]:
    with serve(create_app()) as served, httpx.Client(base_url=served.url, timeout=10) as client:
        yield client


def write_config(
    path: Path, url: str, *, extra: str = "", batch_size: int = 7, page_size: int = 13, timeout: float = 10
) -> Path:
    path.write_text(
        "connectors:\n"
        "  reg:\n"
        "    type: mock\n"
        f"    batch_size: {batch_size}\n"
        f"    page_size: {page_size}\n"
        f"{extra}"
        "    settings:\n"
        f"      url: {url}\n"
        f"      timeout: {timeout}\n"
    )
    return path


@pytest.fixture
def make_project(tmp_path: Path, mock_server: httpx.Client) -> Iterator[Callable[..., Project]]:
    opened: list[Project] = []

    def make(extra: str = "", **kw: float) -> Project:
        config = write_config(tmp_path / "dcsync.yaml", str(mock_server.base_url), extra=extra, **kw)  # type: ignore[arg-type]
        project = Project.open(config)
        opened.append(project)
        return project

    yield make
    for project in opened:
        project.close()


@pytest.fixture
def project(make_project: Callable[..., Project]) -> Project:
    return make_project()


def event(
    guid: str, entity: str, kind: str, data: dict, ts: str = "2025-03-01T10:00:00.000Z"
) -> FormSubmission:
    return FormSubmission(guid=guid, entity_guid=entity, type=kind, data=data, timestamp=ts, user_id="admin")


def remote_records(client: httpx.Client) -> list[dict]:
    return client.get("/_control/records").json()


def contend_for_lease(
    store: LeasedStateStore, connector: str
) -> tuple[threading.Thread, list[ConnectorBusy]]:
    """Ask for ``connector``'s lease in a thread; the list receives the refusal, if any."""
    refusals: list[ConnectorBusy] = []

    def contend() -> None:
        try:
            with store.lease(connector):
                pass
        except ConnectorBusy as exc:
            refusals.append(exc)

    thread = threading.Thread(target=contend)
    thread.start()
    return thread, refusals

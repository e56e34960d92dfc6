"""One fake Lightning on loopback HTTP for the whole session, back to its seeded state for every test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openfn_support import settings, write_project

from connector_core.project import Project
from connector_core.testing.server import ServedApp, serve
from connectors.openfn.config import OpenFnConfig
from connectors.openfn.connector import OpenFnConnector
from connectors.openfn.fake import FakeLightning, create_app, seed_defaults


@pytest.fixture(scope="session")
def served() -> Iterator[ServedApp]:
    app = create_app()
    with serve(app) as running:
        running.lightning = app.state.lightning  # type: ignore[attr-defined]
        yield running


@pytest.fixture
def lightning(served: ServedApp) -> Iterator[FakeLightning]:
    fake: FakeLightning = served.lightning  # type: ignore[attr-defined]
    fake.reset()
    seed_defaults(fake)
    yield fake
    fake.reset()
    seed_defaults(fake)


@pytest.fixture
def url(served: ServedApp, lightning: FakeLightning) -> str:
    return served.url


@pytest.fixture
def http(url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, timeout=10) as client:
        yield client


@pytest.fixture
def make_connector(url: str) -> Iterator[Callable[..., OpenFnConnector]]:
    made: list[OpenFnConnector] = []

    def factory(name: str = "fn", **overrides: Any) -> OpenFnConnector:
        connector = OpenFnConnector(name, OpenFnConfig.model_validate(settings(url, **overrides)))
        made.append(connector)
        return connector

    yield factory
    for connector in made:
        connector.close()


@pytest.fixture
def make_project(tmp_path: Path, url: str) -> Iterator[Callable[..., Project]]:
    opened: list[Project] = []

    def factory(**kwargs: Any) -> Project:
        project = Project.open(write_project(tmp_path, url, **kwargs))
        opened.append(project)
        return project

    yield factory
    for project in opened:
        project.close()

"""Fixtures for the OpenSPP tests: one fake OpenSPP server on real loopback HTTP, reset for every test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from openspp_support import Rpc

from connector_core.testing.server import ServedApp, serve
from connectors.openspp.connector import OpenSppConfig, OpenSppConnector
from connectors.openspp.fake import DATABASE, FakeOpenSpp, create_app


@pytest.fixture(scope="session")
def openspp_served() -> Iterator[ServedApp]:
    app = create_app(seed=True)
    with serve(app) as served:
        served.fake = app.state.fake  # type: ignore[attr-defined]
        yield served


@pytest.fixture
def fake(openspp_served: ServedApp) -> Iterator[FakeOpenSpp]:
    server: FakeOpenSpp = openspp_served.fake  # type: ignore[attr-defined]
    server.reset(seed=True)
    server.clock.unfreeze()
    server.clock_skew = 0.0
    server.naming = "onchange"
    yield server
    server.faults.clear()
    server.clock.unfreeze()


@pytest.fixture
def url(openspp_served: ServedApp, fake: FakeOpenSpp) -> str:
    return openspp_served.url


@pytest.fixture
def rpc(url: str) -> Iterator[Rpc]:
    caller = Rpc(url)
    yield caller
    caller.http.close()


@pytest.fixture
def make_connector(url: str) -> Iterator[Callable[..., OpenSppConnector]]:
    made: list[OpenSppConnector] = []

    def factory(**overrides: Any) -> OpenSppConnector:
        settings: dict[str, Any] = {
            "url": url,
            "database": DATABASE,
            "username": "registrar",
            "password": "registrar",
            "timeout": 5.0,
            "lag_seconds": 60.0,
        }
        settings.update(overrides)
        if "api_key" in overrides:
            settings.pop("password", None)
        connector = OpenSppConnector("openspp", OpenSppConfig.model_validate(settings))
        made.append(connector)
        return connector

    yield factory
    for connector in made:
        connector.close()

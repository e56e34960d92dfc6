"""Registers the Household Registry connector and a fake of the registry with dcsync."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from connector_core.connector import Connector
from connector_core.hookspecs import hookimpl

from household_registry.connector import HouseholdRegistryConnector


@hookimpl
def dcsync_connectors() -> list[type[Connector]]:
    return [HouseholdRegistryConnector]


@hookimpl
def dcsync_fake_servers() -> dict[str, Any]:
    def factory(data_file: Path | None = None) -> Any:
        from connectors.rest.fake import FakeRestOptions, create_app

        return create_app(FakeRestOptions(auth="oauth2", pagination="link"), data_file)

    return {"household-registry": factory}

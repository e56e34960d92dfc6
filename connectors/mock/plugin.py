"""Registers the mock connector and its server through the same hooks a third-party plugin uses."""

from pathlib import Path
from typing import Any

from connector_core.connector import Connector
from connector_core.hookspecs import hookimpl
from connectors.mock.connector import MockConnector
from connectors.mock.plain import create_plain_app
from connectors.mock.server import create_app


@hookimpl
def dcsync_connectors() -> list[type[Connector]]:
    return [MockConnector]


@hookimpl
def dcsync_fake_servers() -> dict[str, Any]:
    def factory(data_file: Path | None = None) -> Any:
        return create_app(data_file)

    def plain(data_file: Path | None = None) -> Any:
        return create_plain_app(data_file)

    # "mock-plain" speaks only the protocol of DataCollect's MockSyncServerAdapter (no lookup, no results)
    return {"mock": factory, "mock-plain": plain}

"""Registers the OpenFn connector and the fake Lightning through the hooks a third-party plugin uses."""

from pathlib import Path
from typing import Any

from connector_core.connector import Connector
from connector_core.hookspecs import hookimpl
from connectors.openfn.connector import OpenFnConnector
from connectors.openfn.fake import create_app


@hookimpl
def dcsync_connectors() -> list[type[Connector]]:
    return [OpenFnConnector]


@hookimpl
def dcsync_fake_servers() -> dict[str, Any]:
    def factory(data_file: Path | None = None) -> Any:
        return create_app(data_file)

    return {"openfn": factory}

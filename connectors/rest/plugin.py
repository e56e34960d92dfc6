"""Registers the REST connector and its fake registry through the same hooks a third-party plugin uses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from connector_core.connector import Connector
from connector_core.hookspecs import hookimpl
from connectors.rest.connector import RestConnector


@hookimpl
def dcsync_connectors() -> list[type[Connector]]:
    return [RestConnector]


@hookimpl
def dcsync_fake_servers() -> dict[str, Any]:
    def factory(data_file: Path | None = None) -> Any:
        from connectors.rest.fake import create_app, options_from_env

        return create_app(options_from_env(), data_file)

    return {"rest": factory}

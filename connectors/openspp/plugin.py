"""Registers the OpenSPP connector and its fake server through the same hooks a third-party plugin uses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from connector_core.connector import Connector
from connector_core.hookspecs import hookimpl
from connectors.openspp.connector import OpenSppConnector


@hookimpl
def dcsync_connectors() -> list[type[Connector]]:
    return [OpenSppConnector]


@hookimpl
def dcsync_fake_servers() -> dict[str, Any]:
    def factory(data_file: Path | None = None) -> Any:
        from connectors.openspp.fake import CostModel, create_app

        # DCSYNC_OPENSPP_FAKE_COSTS=real gives `dcsync mock-server openspp` real-Odoo call costs
        return create_app(seed=True, data_file=data_file, costs=CostModel.from_env())

    return {"openspp": factory}

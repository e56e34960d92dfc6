"""The OpenSPP plugin registers through the same hooks as any third-party plugin; its config is strict."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from connector_core.testing.server import serve
from connectors.openspp import plugin
from connectors.openspp.connector import OpenSppConfig, OpenSppConnector


def test_hooks_provide_the_connector_and_the_fake_server(tmp_path: Path) -> None:
    assert plugin.dcsync_connectors() == [OpenSppConnector]
    assert OpenSppConnector.type_name == "openspp" and OpenSppConnector.config_model is OpenSppConfig
    factory = plugin.dcsync_fake_servers()["openspp"]
    data = tmp_path / "openspp.json"
    body = {
        "params": {"service": "common", "method": "authenticate", "args": ["openspp", "admin", "admin", {}]}
    }
    with serve(factory(data)) as served:
        uid = httpx.post(f"{served.url}/jsonrpc", json=body).json()["result"]
        create = ["openspp", uid, "admin", "res.partner", "create", [{"name": "Kept"}]]
        httpx.post(
            f"{served.url}/jsonrpc",
            json={"params": {"service": "object", "method": "execute_kw", "args": create}},
        )
    with serve(factory(data)) as served:
        count = ["openspp", uid, "admin", "res.partner", "search_count", [[["name", "=", "Kept"]]]]
        answer = httpx.post(
            f"{served.url}/jsonrpc",
            json={"params": {"service": "object", "method": "execute_kw", "args": count}},
        )
        assert answer.json()["result"] == 1, "records survive a restart with a data file"


def test_config_requires_exactly_one_secret_and_hides_it() -> None:
    base = {"url": "http://odoo", "database": "db", "username": "u"}
    with pytest.raises(ValidationError, match="exactly one of password or api_key"):
        OpenSppConfig.model_validate(base)
    with pytest.raises(ValidationError, match="exactly one of password or api_key"):
        OpenSppConfig.model_validate({**base, "password": "a", "api_key": "b"})
    with pytest.raises(ValidationError, match="reference_id_type"):
        OpenSppConfig.model_validate({**base, "password": "a", "reference": "reg_id"})
    with pytest.raises(ValidationError, match="extra"):
        OpenSppConfig.model_validate({**base, "password": "a", "pasword": "typo"})
    config = OpenSppConfig.model_validate({**base, "api_key": "k-123-secret"})
    assert "k-123-secret" not in repr(config) and "k-123-secret" not in config.model_dump_json()
    assert (config.batch_size, config.in_flight, config.reference) == (50, 1, "xmlid")

"""The declarative REST connector passes the connector contract, in more than one API style.

The suite runs against the fake REST registry with OAuth2 client credentials and cursor pagination (the
issue's acceptance case), with an API key and Link-header pagination, and with basic auth and page numbers:
the connector's code is the same, only the YAML changes.
"""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from connector_core.testing.contract import ConnectorContract, FakeControl, SettingsFactory
from connector_core.testing.server import ServedApp
from connectors.rest.connector import RestConnector
from connectors.rest.fake import FakeRestOptions, connector_settings, create_app
from connectors.rest.testing import FakeRestControl


class _RestContract(ConnectorContract):
    connector_class = RestConnector
    options: ClassVar[FakeRestOptions]

    @pytest.fixture
    def fake_app(self) -> Any:
        return create_app(self.options)

    @pytest.fixture
    def connector_settings(self) -> SettingsFactory:
        return lambda url: connector_settings(url, self.options)

    @pytest.fixture
    def invalid_settings(self, connector_settings: SettingsFactory) -> list[tuple[dict[str, Any], str]]:
        good = connector_settings("http://127.0.0.1:1")
        no_ref = {**good, "record": {"id": "$.id"}}
        bad_path = {**good, "record": {**good["record"], "id": "$.[broken"}}
        unfillable = {
            **good,
            "endpoints": {**good["endpoints"], "update": {"method": "PATCH", "path": "/r/{nope}"}},
        }
        wrong_auth = {**good, "auth": {"type": "oauth2_client_credentials", "client_id": "x"}}
        return [
            (no_ref, "ref"),
            (bad_path, "id"),
            (unfillable, "{nope}"),
            (wrong_auth, "client_secret"),
            ({**good, "base_url": "registry.example.org"}, "base_url"),
        ]

    @pytest.fixture
    def fake_control(self, dcsync_fake_server: ServedApp) -> FakeControl:
        return FakeRestControl(dcsync_fake_server.url)


class TestRestOAuth2CursorContract(_RestContract):
    options = FakeRestOptions(auth="oauth2", pagination="cursor", max_page_size=4)


class TestRestApiKeyLinkContract(_RestContract):
    options = FakeRestOptions(auth="api_key", pagination="link", max_page_size=4)


class TestRestBasicPageContract(_RestContract):
    options = FakeRestOptions(auth="basic", pagination="page", max_page_size=4)

"""The Household Registry connector: the REST connector with this registry's API built in.

Operators of a well-known system should not have to describe its API in YAML themselves. This plugin
keeps the description (``api.yaml``) in the package and asks only for what differs per installation: the
URL and the client credentials. Everything else -- requests, OAuth2, pagination, error rules -- is the REST
connector's, so this file holds no protocol code at all.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Any

import httpx
import yaml
from connector_core.connector import ConnectorConfig
from connectors.rest.config import RestConfig
from connectors.rest.connector import RestConnector
from pydantic import Field, SecretStr


class HouseholdRegistryConfig(ConnectorConfig):
    url: str = Field(description="The registry's base URL, e.g. https://registry.example.org")
    client_id: str = Field(description="OAuth2 client id issued by the registry")
    client_secret: SecretStr = Field(description="OAuth2 client secret; keep it in the environment")
    timeout: float = Field(default=10.0, gt=0, description="Seconds before a request is abandoned")


def rest_config(config: HouseholdRegistryConfig) -> RestConfig:
    """The full REST description: the packaged API plus this installation's URL and credentials."""
    api: dict[str, Any] = yaml.safe_load(files("household_registry").joinpath("api.yaml").read_text("utf-8"))
    api["base_url"] = config.url
    api["timeout"] = config.timeout
    api["auth"] = {**api["auth"], "client_id": config.client_id, "client_secret": config.client_secret}
    return RestConfig.model_validate(api)


class HouseholdRegistryConnector(RestConnector):
    type_name = "household-registry"
    config_model = HouseholdRegistryConfig
    description = "the Household Registry (OAuth2, Link pagination), built on the rest connector"

    def __init__(self, name: str, config: HouseholdRegistryConfig, http: httpx.Client | None = None) -> None:
        super().__init__(name, rest_config(config), http)

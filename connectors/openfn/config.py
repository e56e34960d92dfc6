"""Settings of an ``openfn`` connector instance (the ``settings:`` block in ``dcsync.yaml``).

Secrets are :class:`~pydantic.SecretStr`, so a settings object printed in a log or an error shows
``'**********'``; they are read with ``get_secret_value()`` only where a request header is built.
"""

from __future__ import annotations

import re
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from connector_core.connector import ConnectorConfig

MIN_BODY_BYTES = 512_000
"""Hosted Lightning's smallest dataclip cap (the Free plan's 512 KB)."""
DEFAULT_BODY_BYTES = 10_000_000
"""Lightning's default ``MAX_DATACLIP_SIZE_MB`` (10) times 1,000,000: the cap on a webhook body."""

_SEGMENT = re.compile(r"^[A-Za-z0-9._~-]+$")
_COLLECTION = re.compile(r"^[a-z0-9]+([-_.][a-z0-9]+)*$")


class OpenFnConfig(ConnectorConfig):
    url: str = Field(description="Lightning's base URL, e.g. https://app.openfn.org")
    trigger: str | None = Field(
        default=None,
        description="Webhook trigger: its id (the <uuid> of /i/<uuid>) or '<project id>/<custom path>'",
    )
    api_key: SecretStr | None = Field(default=None, description="Sent as x-api-key (webhook auth)")
    username: str | None = Field(default=None, description="HTTP Basic user (webhook auth)")
    password: SecretStr | None = Field(default=None, description="HTTP Basic password (webhook auth)")
    payload_mode: Literal["datacollect", "mapped"] = Field(
        default="datacollect",
        description="datacollect: {'entities': [DataCollect events]}; mapped: {'records': [mapped records]}",
    )
    max_batch_records: int = Field(default=100, ge=1, le=10_000, description="Records per webhook request")
    max_body_bytes: int = Field(
        default=DEFAULT_BODY_BYTES,
        ge=MIN_BODY_BYTES,
        description="Largest webhook body in bytes; set it to your plan's dataclip cap (Free: 512000)",
    )
    timeout: float = Field(default=30.0, gt=0, description="Seconds to wait for an answer")
    connect_timeout: float = Field(default=10.0, gt=0, description="Seconds to wait for a connection")
    poll_work_orders: bool = Field(
        default=False,
        description="After a delivery, poll /api/work_orders/:id until a final state (needs token)",
    )
    poll_timeout: float = Field(default=60.0, gt=0, description="Seconds to keep polling work orders")
    collection: str | None = Field(default=None, description="Collection to pull results from")
    token: SecretStr | None = Field(
        default=None, description="Personal access token (Collections and the REST API)"
    )
    project_id: str | None = Field(
        default=None, description="Only if several projects have a collection of this name (Lightning 409)"
    )
    key_pattern: str | None = Field(
        default=None, description="Collection keys to pull, '*' any run of characters (e.g. 'dc:result:*')"
    )
    default_entity_name: str | None = Field(
        default=None, description="Entity name for pulled items whose value has no entityName"
    )
    page_size: int | None = Field(
        default=None, ge=1, description="Items per Collections request (default: the connector's page_size)"
    )
    lag_seconds: float = Field(
        default=1.0,
        ge=0,
        description="Re-read window before the pull boundary, for writes committed after their timestamp",
    )
    preflight: bool = Field(
        default=True,
        description="Probe the trigger and the collection (read-only) when the connector opens",
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http(s) URL such as https://app.openfn.org")
        if parts.username or parts.password:
            raise ValueError("must not carry credentials; use api_key or username/password")
        return value.rstrip("/")

    @field_validator("trigger")
    @classmethod
    def _trigger(cls, value: str | None) -> str | None:
        if value is None:
            return None
        text = value.strip().strip("/")
        if text.startswith("i/"):
            text = text[2:]
        segments = text.split("/")
        if not 1 <= len(segments) <= 2 or not all(_SEGMENT.match(s) for s in segments):
            raise ValueError("must be a trigger id or '<project id>/<custom path>'")
        return text

    @field_validator("collection")
    @classmethod
    def _collection(cls, value: str | None) -> str | None:
        if value is not None and not _COLLECTION.match(value):
            raise ValueError("is not a valid Lightning collection name (lowercase, digits, - _ .)")
        return value

    @model_validator(mode="after")
    def _coherent(self) -> OpenFnConfig:
        if self.trigger is None and self.collection is None:
            raise ValueError("set trigger (to push), collection (to pull), or both")
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together")
        if self.collection is not None and self.token is None:
            raise ValueError("collection needs token (a personal access token)")
        if self.poll_work_orders and self.token is None:
            raise ValueError("poll_work_orders needs token (a personal access token)")
        return self

    @property
    def trigger_path(self) -> str:
        return f"/i/{self.trigger}" if self.trigger else ""

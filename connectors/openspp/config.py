"""Settings of one OpenSPP connector (``settings:`` in ``dcsync.yaml``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator

from connector_core.connector import ConnectorConfig

DEFAULT_PULL_FIELDS = [
    "name",
    "given_name",
    "family_name",
    "addl_name",
    "birthdate",
    "birth_place",
    "gender",
    "phone",
    "mobile",
    "email",
    "address",
    "registration_date",
    "area_id",
    "disabled",
    "disabled_reason",
]


class OpenSppConfig(ConnectorConfig):
    """Settings of one OpenSPP 17 instance; ``password`` or ``api_key`` (an Odoo API key) is required."""

    url: str = Field(description="Base URL of the Odoo server, e.g. https://openspp.example.org")
    database: str = Field(description="Odoo database name")
    username: str = Field(description="Login of the integration user (a registrar is enough)")
    password: SecretStr | None = Field(default=None, description="The user's password")
    api_key: SecretStr | None = Field(default=None, description="An Odoo API key, used as the password")
    timeout: float = Field(default=120.0, gt=0, description="Seconds to wait for one RPC answer")
    connect_timeout: float = Field(default=10.0, gt=0)
    verify_tls: bool = True
    batch_size: int = Field(default=50, ge=1, le=500, description="Records per create/load call")
    in_flight: int = Field(
        default=1, ge=1, le=16, description="Concurrent requests; never two on one household"
    )
    page_size: int = Field(default=200, ge=1, le=1000, description="Rows per search_read page")
    lag_seconds: float = Field(
        default=900.0, ge=0, description="Pull window kept behind the server clock (late commits)"
    )
    reference: Literal["xmlid", "reg_id"] = Field(
        default="xmlid", description="Where the DataCollect guid is kept: an xml-id or a registrant ID"
    )
    xmlid_module: str = Field(default="dcsync", pattern=r"^[A-Za-z0-9_]+$")
    reference_id_type: str | None = Field(
        default=None, description="ID type name holding the guid (reference: reg_id)"
    )
    household_kind: str = Field(
        default="g2p_registry_group.group_kind_household",
        description="Group kind of households: an xml-id (module.name) or a kind name",
    )
    household_kind_name: str = Field(
        default="Household", description="Kind name used when the xml-id does not resolve"
    )
    registrar_group: str | None = Field(
        default=None, description="Require the user to be in this group (xml-id, as DataCollect)"
    )
    household_entity: str = "household"
    individual_entity: str = "individual"
    pull_fields: list[str] = Field(default_factory=lambda: list(DEFAULT_PULL_FIELDS))
    pull_domain: list[Any] = Field(default_factory=list, description="Extra res.partner domain for pulls")
    login_cooldown: float = Field(default=60.0, ge=0, description="Seconds without login retries")

    @model_validator(mode="after")
    def _check(self) -> OpenSppConfig:
        if (self.password is None) == (self.api_key is None):
            raise ValueError("give exactly one of password or api_key")
        if self.reference == "reg_id" and not self.reference_id_type:
            raise ValueError("reference: reg_id needs reference_id_type (the ID type's name)")
        return self

    @property
    def secret(self) -> SecretStr:
        secret = self.api_key or self.password
        assert secret is not None
        return secret

"""The REST connector's settings: a whole JSON-over-HTTP API described in YAML.

Everything the connector needs to know about a remote system is here, checked when the project opens, so a
misspelt key, a path that cannot be compiled or a placeholder an endpoint cannot fill is an error with its
line in dcsync.yaml, not a surprise in the middle of a run.
"""

from __future__ import annotations

import string
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from connector_core.connector import ConnectorConfig
from connector_core.mapping.paths import PathSyntaxError, compile_path

HttpMethod = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]

# What each endpoint may put in its path and parameters.
PLACEHOLDERS: dict[str, frozenset[str]] = {
    "check": frozenset(),
    "create": frozenset({"ref", "entity_name", "parent_external_id"}),
    "update": frozenset({"external_id", "ref", "entity_name", "parent_external_id"}),
    "delete": frozenset({"external_id", "ref", "entity_name"}),
    "lookup": frozenset({"ref", "refs"}),
    "list": frozenset(),
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def placeholders(text: str) -> set[str]:
    """The ``{name}`` placeholders of a path or parameter template (``{{`` is a literal brace)."""
    try:
        return {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}
    except ValueError as exc:
        raise ValueError(f"invalid template {text!r}: {exc}") from None


def check_path(text: str | None) -> str | None:
    if text is not None:
        try:
            compile_path(text)
        except PathSyntaxError as exc:
            raise ValueError(str(exc)) from None
    return text


# -- authentication -------------------------------------------------------------------------------------


class NoAuth(_Strict):
    type: Literal["none"] = "none"


class ApiKeyAuth(_Strict):
    """A static key sent with every request, in a header (the usual) or a query parameter."""

    type: Literal["api_key"]
    value: SecretStr
    header: str | None = Field(default="X-API-Key", description="Header carrying the key")
    query_param: str | None = Field(default=None, description="Query parameter carrying the key instead")

    @model_validator(mode="after")
    def _one_place(self) -> ApiKeyAuth:
        if self.query_param is not None:
            self.header = None
        if self.header is None and self.query_param is None:
            raise ValueError("give header or query_param: where the key goes")
        return self


class BearerAuth(_Strict):
    type: Literal["bearer"]
    token: SecretStr


class BasicAuth(_Strict):
    type: Literal["basic"]
    username: str
    password: SecretStr


class OAuth2ClientCredentials(_Strict):
    """OAuth2 client credentials: a token from ``token_url``, cached until it expires, renewed on a 401."""

    type: Literal["oauth2_client_credentials"]
    token_url: str = Field(description="Token endpoint, absolute or relative to base_url")
    client_id: str
    client_secret: SecretStr
    scope: str | None = None
    audience: str | None = None
    client_auth: Literal["body", "basic"] = Field(
        default="body", description="Send the client credentials in the form body or as HTTP basic auth"
    )
    expiry_margin: float = Field(
        default=30.0, ge=0, description="Renew a token this many seconds before it expires"
    )


Auth = Annotated[
    NoAuth | ApiKeyAuth | BearerAuth | BasicAuth | OAuth2ClientCredentials, Field(discriminator="type")
]


# -- endpoints ---------------------------------------------------------------------------------------------


class Endpoint(_Strict):
    """One request: method, path (relative to ``base_url``) and query parameters, with ``{placeholders}``."""

    method: HttpMethod = "GET"
    path: str
    params: dict[str, str | int | float | bool] = Field(default_factory=dict)
    envelope: str | None = Field(
        default=None, description="Writes: send the record as {envelope: record} instead of bare"
    )
    id_path: str = Field(default="$.id", description="Create: where the answer keeps the new record's id")
    records: str = Field(default="$", description="Lookup/list: where the answer keeps its records")

    _check_id = field_validator("id_path", "records")(check_path)

    @field_validator("path")
    @classmethod
    def _relative(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("a path starts with '/' (it is appended to base_url)")
        return value

    def templates(self) -> list[str]:
        return [self.path, *(v for v in self.params.values() if isinstance(v, str))]


class LookupEndpoint(Endpoint):
    """Finds records by ref: one request per ref (``{ref}``), or one per ``batch`` refs (``{refs}``)."""

    batch: int = Field(default=50, ge=1, description="Refs per request when the endpoint takes {refs}")
    separator: str = Field(default=",", description="Joins refs in {refs}")
    not_found: list[int] = Field(default=[404], description="Statuses that mean 'no such record'")


class NoPagination(_Strict):
    type: Literal["none"] = "none"


class PagePagination(_Strict):
    """``?page=N``: the listing ends at a page shorter than asked for."""

    type: Literal["page"]
    param: str = "page"
    start: int = 1


class OffsetPagination(_Strict):
    """``?offset=N``: the listing ends at a page shorter than asked for."""

    type: Literal["offset"]
    param: str = "offset"


class CursorPagination(_Strict):
    """The answer names the next page (``next_path``); sent back in ``param``; absent or null ends it."""

    type: Literal["cursor"]
    param: str = "cursor"
    next_path: str = "$.next"

    _check = field_validator("next_path")(check_path)


class LinkPagination(_Strict):
    """RFC 8288 ``Link: <url>; rel="next"`` headers; no such link ends the listing."""

    type: Literal["link"]
    rel: str = "next"


Pagination = Annotated[
    NoPagination | PagePagination | OffsetPagination | CursorPagination | LinkPagination,
    Field(discriminator="type"),
]


class ListEndpoint(Endpoint):
    """Lists records changed since a timestamp, oldest first, in pages: what ``pull`` reads."""

    since_param: str | None = Field(
        default=None, description="Query parameter for 'changed since'; without it every pull lists all"
    )
    since_inclusive: bool = Field(
        default=True, description="The remote's filter is >= (records at the boundary are read again)"
    )
    page_size_param: str | None = Field(default="limit", description="Query parameter for the page size")
    max_page_size: int | None = Field(default=None, ge=1, description="The remote's cap on a page")
    pagination: Pagination = Field(default_factory=NoPagination)


class Endpoints(_Strict):
    create: Endpoint
    update: Endpoint
    lookup: LookupEndpoint
    delete: Endpoint | None = None
    list: ListEndpoint | None = None
    check: Endpoint | None = Field(default=None, description="Default: the list endpoint, one record")

    @model_validator(mode="after")
    def _fillable(self) -> Endpoints:
        problems = []
        for kind, allowed in PLACEHOLDERS.items():
            endpoint = getattr(self, kind)
            if endpoint is None:
                continue
            for template in endpoint.templates():
                unknown = placeholders(template) - allowed
                if unknown:
                    names = ", ".join(f"{{{n}}}" for n in sorted(unknown))
                    can = ", ".join(f"{{{n}}}" for n in sorted(allowed)) or "none"
                    problems.append(f"{kind}: {template!r} uses {names}; this endpoint can fill {can}")
        if "external_id" not in placeholders(self.update.path):
            problems.append("update: the path must name the record, e.g. /records/{external_id}")
        if self.delete is not None and "external_id" not in placeholders(self.delete.path):
            problems.append("delete: the path must name the record, e.g. /records/{external_id}")
        lookup_names = set().union(*(placeholders(t) for t in self.lookup.templates()))
        if not lookup_names & {"ref", "refs"}:
            problems.append("lookup: put {ref} or {refs} in the path or a parameter")
        if problems:
            raise ValueError("; ".join(problems))
        return self


# -- records, errors, rate limit ------------------------------------------------------------------------


class RecordPaths(_Strict):
    """Where one remote record keeps each thing dcsync needs (paths relative to the record).

    ``ref``, ``entity_name`` and ``parent_id`` are also where dcsync writes them on create and update, so
    they must be plain paths (``$.external_ref``, ``$.meta.ref``). ``data`` defaults to the record minus
    the other paths, which is what the mapping sees.
    """

    id: str = "$.id"
    ref: str = Field(description="Where records keep dcsync's ref (the entity guid), written on create")
    entity_name: str | None = None
    parent_id: str | None = None
    updated_at: str | None = None
    version: str | None = None
    deleted: str | None = None
    data: str | None = None

    _check = field_validator("id", "updated_at", "version", "deleted")(check_path)

    @field_validator("ref", "entity_name", "parent_id", "data")
    @classmethod
    def _writable(cls, value: str | None) -> str | None:
        if value is None:
            return None
        check_path(value)
        compiled = compile_path(value)
        if compiled.keys is None or not all(isinstance(k, str) for k in compiled.keys):
            raise ValueError(f"{value!r}: dcsync writes here too, so use a plain path such as $.external_ref")
        return value


class ErrorRule(_Strict):
    """Matches an answer (status and/or text in the body) and says what it means; first match wins."""

    status: int | list[int] | Literal["2xx", "3xx", "4xx", "5xx"] | None = None
    body_contains: str | None = None
    action: Literal["transient", "permanent", "auth"]

    def matches(self, status: int, body: str) -> bool:
        if isinstance(self.status, int) and status != self.status:
            return False
        if isinstance(self.status, list) and status not in self.status:
            return False
        if isinstance(self.status, str) and str(status)[0] != self.status[0]:
            return False
        return self.body_contains is None or self.body_contains in body

    @model_validator(mode="after")
    def _something(self) -> ErrorRule:
        if self.status is None and self.body_contains is None:
            raise ValueError("a rule needs status, body_contains or both")
        return self


class RateLimit(_Strict):
    requests_per_second: float = Field(gt=0)
    burst: int = Field(default=1, ge=1, description="Requests allowed back to back before pacing starts")


class RestConfig(ConnectorConfig):
    base_url: str = Field(description="Where the API lives, e.g. https://registry.example.org/api")
    timeout: float = Field(default=10.0, gt=0, description="Seconds before a request is abandoned")
    auth: Auth = Field(default_factory=NoAuth)
    headers: dict[str, str] = Field(default_factory=dict, description="Sent with every request (no secrets)")
    rate_limit: RateLimit | None = None
    endpoints: Endpoints
    record: RecordPaths
    error_message: str | None = Field(
        default=None, description="Where an error answer keeps its message, e.g. $.error.message"
    )
    errors: list[ErrorRule] = Field(default_factory=list, description="Checked before the defaults")

    _check = field_validator("error_message")(check_path)

    @field_validator("base_url")
    @classmethod
    def _http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("base_url must start with http:// or https://")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _pull_needs_timestamps(self) -> RestConfig:
        listing = self.endpoints.list
        if listing is not None and listing.since_param and self.record.updated_at is None:
            raise ValueError("endpoints.list.since_param needs record.updated_at (the cursor is a timestamp)")
        return self

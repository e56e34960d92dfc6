"""The declarative REST connector: any JSON-over-HTTP API, described in YAML instead of code.

Push writes one record per request (create, update, delete), with dcsync's ref stored in the record where
``record.ref`` says, so ``lookup`` can find a create whose answer was lost. Pull lists records changed since
a timestamp, page by page with whichever pagination the API has; the cursor holds the listing's place and
the newest timestamp read, and the ids read at exactly that timestamp, so a ``>=`` filter re-reads the
boundary without returning those records twice.
"""

from __future__ import annotations

import copy
import functools
import json
import string
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from connector_core.connector import (
    Capability,
    CheckResult,
    Connector,
    ConnectorError,
    Operation,
    PermanentError,
    PullPage,
    PushRecord,
    PushResult,
    RemoteRecord,
)
from connector_core.events import parse_timestamp
from connector_core.mapping.errors import MISSING
from connector_core.mapping.paths import CompiledPath, compile_path, make_setter
from connectors.rest.client import RestClient, resolve, same_origin
from connectors.rest.config import (
    CursorPagination,
    Endpoint,
    LinkPagination,
    ListEndpoint,
    OffsetPagination,
    PagePagination,
    RestConfig,
)

_path = functools.lru_cache(maxsize=256)(compile_path)
"""Paths from the settings, compiled once (a JSONPath expression takes milliseconds to parse)."""


def _first(value: Any) -> Any:
    """A JSONPath expression gives the list of its matches; a record field wants the first."""
    if isinstance(value, list):
        return value[0] if value else MISSING
    return value


def _timestamp_key(value: str) -> tuple[int, Any]:
    try:
        return (0, parse_timestamp(value))
    except ValueError:
        return (1, value)  # not a timestamp we can read: the remote's own text order


class _Template(string.Formatter):
    """Fills ``{name}`` from a dict; values go into URL paths quoted, into parameters as they are."""

    def fill(self, template: str, values: dict[str, str], *, in_path: bool) -> str:
        if in_path:
            values = {k: quote(v, safe="") for k, v in values.items()}
        return self.vformat(template, (), values)


_TEMPLATE = _Template()


@dataclass
class _Cursor:
    """Where pull stands: the listing's filter, its place in the listing, and the newest record read.

    ``since`` is the timestamp the current listing asks for (the newest one the previous listing read) and
    ``seen`` the ids already read at exactly ``since``; ``token`` is the pagination's place (a page number,
    an offset, the API's cursor or the next link); ``high``/``high_ids`` the newest timestamp read so far
    in this listing and the ids read at it. A finished listing's ``high`` becomes the next one's ``since``.
    """

    since: str | None = None
    seen: list[str] = field(default_factory=list)
    token: Any = None
    high: str | None = None
    high_ids: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, text: str | None) -> _Cursor:
        if not text:
            return cls()
        try:
            raw = json.loads(text)
            return cls(**raw)
        except (ValueError, TypeError):
            raise PermanentError(f"pull cursor {text[:80]!r} was not written by the rest connector") from None

    def dump(self) -> str:
        return json.dumps(
            {
                "since": self.since,
                "seen": self.seen,
                "token": self.token,
                "high": self.high,
                "high_ids": self.high_ids,
            },
            separators=(",", ":"),
        )

    def note(self, external_id: str, updated_at: str | None) -> None:
        if updated_at is None:
            return
        if self.high is None or _timestamp_key(updated_at) > _timestamp_key(self.high):
            self.high, self.high_ids = updated_at, [external_id]
        elif _timestamp_key(updated_at) == _timestamp_key(self.high) and external_id not in self.high_ids:
            self.high_ids.append(external_id)

    def finished(self) -> _Cursor:
        """The cursor of the next listing: from the newest record read, skipping the ones read at it."""
        if self.high is None:
            return _Cursor(since=self.since, seen=self.seen)
        if self.since is not None and _timestamp_key(self.high) == _timestamp_key(self.since):
            return _Cursor(since=self.since, seen=sorted({*self.seen, *self.high_ids}))
        return _Cursor(since=self.high, seen=sorted(self.high_ids))


class RestConnector(Connector):
    type_name = "rest"
    config_model = RestConfig
    capabilities = frozenset({Capability.PUSH, Capability.PULL})
    description = "any JSON-over-HTTP API, described in YAML (endpoints, auth, pagination, errors)"

    config: RestConfig

    def __init__(self, name: str, config: RestConfig, http: httpx.Client | None = None) -> None:
        super().__init__(name, config)
        self.client = RestClient(config, http)
        paths = config.record
        self._id = compile_path(paths.id)
        self._ref = compile_path(paths.ref)
        self._optional = {
            key: compile_path(text)
            for key, text in (
                ("entity_name", paths.entity_name),
                ("parent_id", paths.parent_id),
                ("updated_at", paths.updated_at),
                ("version", paths.version),
                ("deleted", paths.deleted),
                ("data", paths.data),
            )
            if text is not None
        }
        self._bookkeeping = [self._id, self._ref, *(p for k, p in self._optional.items() if k != "data")]

    # -- requests -------------------------------------------------------------------------------------

    def _call(
        self,
        endpoint: Endpoint,
        what: str,
        values: dict[str, str] | None = None,
        *,
        body: Any = None,
        extra: dict[str, Any] | None = None,
        url: str | None = None,
        accept: Sequence[int] = (),
    ) -> httpx.Response:
        """One request to ``endpoint`` with its placeholders filled; failures raised as the rules say."""
        values = values or {}
        params: dict[str, Any] | None = None  # a next link already carries its query
        if url is None:
            url = self.client.url(_TEMPLATE.fill(endpoint.path, values, in_path=True))
            params = {
                k: _TEMPLATE.fill(v, values, in_path=False) if isinstance(v, str) else v
                for k, v in endpoint.params.items()
            }
            params.update(extra or {})
        if body is not None and endpoint.envelope:
            body = {endpoint.envelope: body}
        response = self.client.request(endpoint.method, url, params=params, json=body, what=what)
        if response.status_code not in accept:
            self.client.classify(response, what)
        return response

    @staticmethod
    def _json(response: httpx.Response, what: str) -> Any:
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise PermanentError(f"{what}: the answer is not JSON: {response.text[:120]!r}") from None

    def _records(self, body: Any, endpoint: Endpoint, what: str) -> list[dict[str, Any]]:
        """The records an answer holds at ``endpoint.records``: a list, a single object, or the matches
        of a JSONPath expression (``$.data[*]``, or ``$..items`` holding one list)."""
        selector = _path(endpoint.records)
        found = selector.get(body) if body is not None else MISSING
        if found is MISSING or found is None:
            return []
        rows: list[Any] = found if isinstance(found, list) else [found]
        if selector.multi and len(rows) == 1 and isinstance(rows[0], list):
            rows = rows[0]
        records = [r for r in rows if isinstance(r, dict)]
        if len(records) != len(rows):
            bad = next(type(r).__name__ for r in rows if not isinstance(r, dict))
            raise PermanentError(f"{what}: records at {endpoint.records} are {bad}, expected objects")
        return records

    # -- check ----------------------------------------------------------------------------------------

    def check(self) -> CheckResult:
        endpoints = self.config.endpoints
        endpoint: Endpoint = endpoints.check or endpoints.list or endpoints.lookup
        values = {"ref": "dcsync-check", "refs": "dcsync-check"}
        extra: dict[str, Any] = {}
        if endpoint is endpoints.list and endpoints.list is not None and endpoints.list.page_size_param:
            extra[endpoints.list.page_size_param] = 1
        what = f"{endpoint.method} {endpoint.path}"
        accept = endpoints.lookup.not_found if endpoint is endpoints.lookup else ()
        try:
            response = self._call(endpoint, what, values, extra=extra, accept=accept)
        except ConnectorError as exc:
            return CheckResult(False, exc.message)
        return CheckResult(True, f"{self.config.base_url} answers {what} (HTTP {response.status_code})")

    # -- push -----------------------------------------------------------------------------------------

    def push(self, batch: Sequence[PushRecord]) -> list[PushResult]:
        """One request per record. After a transient failure the rest of the batch is not sent (answered
        transient, so the engine retries them, looking creates up first); a permanent one refuses only
        its own record."""
        results: list[PushResult] = []
        halted: str | None = None
        for record in batch:
            if halted is not None:
                results.append(
                    PushResult.rejected(record.ref, f"not sent: {halted}", transient=True, unsent=True)
                )
                continue
            try:
                results.append(self._write(record))
            except ConnectorError as exc:
                if exc.systemic:
                    raise  # nothing in the batch can succeed: the engine stops the run
                if exc.transient:
                    halted = exc.message
                results.append(
                    PushResult.rejected(
                        record.ref,
                        exc.message,
                        transient=exc.transient,
                        retry_after=exc.retry_after,
                        unsent=exc.unsent,
                    )
                )
        return results

    def _body(self, record: PushRecord, payload: dict[str, Any]) -> dict[str, Any]:
        body: dict[str, Any] = {}
        data_path = self._optional.get("data")
        if data_path is not None and data_path.keys:
            make_setter(tuple(str(k) for k in data_path.keys))(body, dict(payload))
        else:
            body = dict(payload)
        self._write_at(self._ref, body, record.ref)
        if record.entity_name and "entity_name" in self._optional:
            self._write_at(self._optional["entity_name"], body, record.entity_name)
        if "parent_id" in self._optional and (
            record.parent_external_id is not None or record.operation is Operation.UNLINK
        ):
            self._write_at(self._optional["parent_id"], body, record.parent_external_id)
        return body

    @staticmethod
    def _write_at(path: CompiledPath, body: dict[str, Any], value: Any) -> None:
        if path.keys:
            make_setter(tuple(str(k) for k in path.keys))(body, value)

    def _values(self, record: PushRecord) -> dict[str, str]:
        return {
            "ref": record.ref,
            "external_id": record.external_id or "",
            "entity_name": record.entity_name or "",
            "parent_external_id": record.parent_external_id or "",
        }

    def _write(self, record: PushRecord) -> PushResult:
        endpoints = self.config.endpoints
        values = self._values(record)
        if record.operation is Operation.CREATE:
            endpoint = endpoints.create
            what = f"create {record.ref}"
            response = self._call(endpoint, what, values, body=self._body(record, record.payload))
            found = _first(_path(endpoint.id_path).get(self._json(response, what)))
            if found is MISSING or found is None or found == "":
                return PushResult.rejected(
                    record.ref,
                    f"{what}: HTTP {response.status_code} but no id at {endpoint.id_path} "
                    "(endpoints.create.id_path); lookup will find the record on replay",
                )
            return PushResult.delivered(record.ref, str(found))
        if record.external_id is None:
            return PushResult.rejected(
                record.ref, f"{record.operation} of {record.ref} without an external id"
            )
        if record.operation is Operation.UPDATE:
            what = f"update {record.external_id}"
            self._call(endpoints.update, what, values, body=self._body(record, record.payload))
            return PushResult.delivered(record.ref, record.external_id)
        if record.operation is Operation.DELETE:
            if endpoints.delete is None:
                return PushResult.rejected(
                    record.ref, "deleted in DataCollect, but endpoints.delete is not configured"
                )
            self._call(endpoints.delete, f"delete {record.external_id}", values, accept=(404, 410))
            return PushResult.delivered(record.ref, record.external_id)
        if "parent_id" not in self._optional:
            return PushResult.rejected(record.ref, "left its group, but record.parent_id is not configured")
        unlink = PushRecord(record.ref, Operation.UNLINK, record.entity_name, {}, record.external_id)
        self._call(endpoints.update, f"unlink {record.external_id}", values, body=self._body(unlink, {}))
        return PushResult.delivered(record.ref, record.external_id)

    # -- lookup ---------------------------------------------------------------------------------------

    def lookup(self, refs: Sequence[str]) -> dict[str, str]:
        endpoint = self.config.endpoints.lookup
        if not refs:
            return {}
        batched = any("refs" in _names(t) for t in endpoint.templates())
        groups = (
            [list(refs[i : i + endpoint.batch]) for i in range(0, len(refs), endpoint.batch)]
            if batched
            else [[ref] for ref in refs]
        )
        wanted = set(refs)
        found: dict[str, str] = {}
        for group in groups:
            values = {"ref": group[0], "refs": endpoint.separator.join(group)}
            what = f"lookup of {len(group)} refs" if batched else f"lookup of {group[0]}"
            response = self._call(endpoint, what, values, accept=endpoint.not_found)
            if response.status_code in endpoint.not_found:
                continue
            for row in self._records(self._json(response, what), endpoint, what):
                ref, external_id = _first(self._ref.get(row)), _first(self._id.get(row))
                if isinstance(ref, str) and ref in wanted and external_id not in (MISSING, None):
                    found.setdefault(ref, str(external_id))
        return found

    # -- pull -----------------------------------------------------------------------------------------

    def pull(self, cursor: str | None, limit: int) -> PullPage:
        listing = self.config.endpoints.list
        if listing is None:
            raise PermanentError("pull needs endpoints.list in the rest connector's settings")
        state = _Cursor.load(cursor)
        size = min(limit, listing.max_page_size) if listing.max_page_size else limit
        response, rows = self._list_page(listing, state, size)
        records = []
        for row in rows:
            record = self._remote(row)
            state.note(record.external_id, record.updated_at)
            if (
                listing.since_inclusive
                and state.since is not None
                and record.updated_at is not None
                and record.external_id in state.seen
                and _timestamp_key(record.updated_at) == _timestamp_key(state.since)
            ):
                continue  # read by the previous listing, at its newest timestamp
            records.append(record)
        token = self._next_token(listing, state.token, response, len(rows), size)
        if token is None:
            return PullPage(records=records, next_cursor=state.finished().dump(), has_more=False)
        state.token = token
        return PullPage(records=records, next_cursor=state.dump(), has_more=True)

    def _list_page(
        self, listing: ListEndpoint, state: _Cursor, size: int
    ) -> tuple[httpx.Response, list[dict[str, Any]]]:
        what = f"{listing.method} {listing.path}"
        pagination = listing.pagination
        if isinstance(pagination, LinkPagination) and state.token:
            url = resolve(str(state.token), self.client.base_url + "/")
            if not same_origin(url, self.client.base_url):
                raise PermanentError(f"{what}: the next link leaves {self.config.base_url}; not following it")
            response = self._call(listing, what, url=url)
        else:
            extra: dict[str, Any] = {}
            if listing.page_size_param:
                extra[listing.page_size_param] = size
            if listing.since_param and state.since is not None:
                extra[listing.since_param] = state.since
            if isinstance(pagination, PagePagination):
                extra[pagination.param] = state.token if state.token is not None else pagination.start
            elif isinstance(pagination, OffsetPagination):
                extra[pagination.param] = state.token or 0
            elif isinstance(pagination, CursorPagination) and state.token is not None:
                extra[pagination.param] = state.token
            response = self._call(listing, what, extra=extra)
        return response, self._records(self._json(response, what), listing, what)

    def _next_token(
        self, listing: ListEndpoint, token: Any, response: httpx.Response, count: int, size: int
    ) -> Any:
        """Where the listing goes on, or ``None`` when this page was its last."""
        pagination = listing.pagination
        if isinstance(pagination, PagePagination):
            page = token if token is not None else pagination.start
            return page + 1 if count >= size else None
        if isinstance(pagination, OffsetPagination):
            return (token or 0) + count if count >= size else None
        if isinstance(pagination, CursorPagination):
            found = _first(_path(pagination.next_path).get(self._json(response, "list")))
            return None if found in (MISSING, None, "") or found == token else found
        if isinstance(pagination, LinkPagination):
            link = response.links.get(pagination.rel)
            return link.get("url") if link else None
        return None

    def _remote(self, row: dict[str, Any]) -> RemoteRecord:
        external_id = _first(self._id.get(row))
        if external_id in (MISSING, None, ""):
            raise PermanentError(f"a listed record has no id at {self.config.record.id}: {str(row)[:120]}")
        values = {key: _first(path.get(row)) for key, path in self._optional.items()}

        def text(key: str) -> str | None:
            value = values.get(key, MISSING)
            return None if value is MISSING or value is None else str(value)

        data_value = values.get("data", MISSING)
        if "data" in self._optional:
            data = dict(data_value) if isinstance(data_value, dict) else {}
        else:
            data = self._without_bookkeeping(row)
        ref = _first(self._ref.get(row))
        deleted = values.get("deleted", MISSING)
        return RemoteRecord(
            external_id=str(external_id),
            data=data,
            entity_name=text("entity_name"),
            ref=ref if isinstance(ref, str) and ref else None,
            updated_at=text("updated_at"),
            version=text("version"),
            deleted=deleted is not MISSING and bool(deleted),
            parent_external_id=text("parent_id"),
        )

    def _without_bookkeeping(self, row: dict[str, Any]) -> dict[str, Any]:
        data = copy.deepcopy(row)
        for path in self._bookkeeping:
            keys = path.keys
            if not keys:
                continue
            holder: Any = data
            for key in keys[:-1]:
                holder = holder.get(key) if isinstance(holder, dict) else None
            if isinstance(holder, dict):
                holder.pop(keys[-1], None)
        return data

    def close(self) -> None:
        self.client.close()


def _names(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}

"""A fake DataCollect backend (``packages/backend``) that is wrong in exactly the ways the real one is.

dcsync's ``datacollect`` event log must survive a sync API that loses events; the only way to prove it does is
a server that loses them the same way. Everything below follows reference ``datacollect.md`` (§ numbers in the
comments), as observed against a live backend:

- ``GET /api/sync/pull``: ``timestamp > since`` (strict), ordered by timestamp; the real server promises no
  order for ties (§2.1 d), so the fake breaks them by a hash of the guid (deterministic, never storage order),
  **pages of 10**, ``nextCursor`` only when the page is full (§2.1, §3.4). Timestamps are stored with
  microseconds and returned truncated to milliseconds (§2.1 c). While the tenant has potential duplicates the
  answer is ``{"events": [], "nextCursor": null, "error": "Duplicates exist! ..."}`` (§1.6, §3.4). A ``since``
  the server cannot parse is an HTML 500 page.
- ``POST /api/sync/push``: sorts by timestamp, forces ``syncLevel = 1``, runs each event through the applier
  and **swallows every error**, answering ``{"status": "success"}`` to everything (§3.5). The event is stored
  before it is applied (§1.3), so a duplicate guid changes nothing and an inapplicable event stays stored.
- The conflict rule (§1.4): for an incoming event of ``syncLevel`` 1 or 2 on an entity whose ``initial`` and
  ``modified`` versions differ, the server keeps its own state when its ``lastUpdated`` (server clock at apply
  time) is not older than the event's timestamp; so of three updates of one person pushed together only the
  first takes effect. Otherwise the event is applied on top of ``initial``.
- Duplicate flagging (§1.6): an entity whose primitive data matches another's on every leaf (each leaf the
  other's ``initial`` or ``modified``) is flagged, which blocks pulls for the whole tenant until the pair is
  resolved. The real check is an SQL query built by interpolation, and the fake evaluates it as PostgreSQL
  would: a value with a lone ``'`` is a syntax error (nothing flagged, the event stored and applied, the
  submission failed), ``''`` is an escaped quote, a number compared with text that is not one fails the cast.
- ``GET /api/entities/:guid/events``, ``GET /api/sync/pull/audit-logs`` (server-time feed, unordered: rows
  come in a repeatable shuffle), ``POST
  /api/users/login`` (tokens never expire, §3.2), JSON ``{"error"}`` bodies from the auth middleware, HTML
  pages for unknown routes and thrown errors (§3.7).

The applier itself is :func:`connector_core.entities.fold`, which implements DataCollect's rules; the server
adds what the fold deliberately leaves out (server-clock ``lastUpdated``, ``initial``/``modified`` pairs, the
conflict rule, duplicate flagging, audit rows).

``/_control/*`` (no auth) lets a test or an operator create tenants, store events as a phone's sync would (any
timestamp, microseconds included), set potential duplicates, read entities, requests and audit rows, and
script faults: replay the previous pull answer (a repeated page), answer a route with an HTML error page,
acknowledge a push without storing anything, or throttle a route with ``429`` and a ``Retry-After`` header (as
a rate-limiting proxy in front of the backend does). Tokens can be made to expire (``token_ttl``): a token
with an ``exp`` claim is refused with nothing but ``{"error": "Invalid token"}``, as the real middleware
answers. :meth:`FakeDataCollect.seed_jsonl` fills a tenant from a JSONL file (``dcsync mock-server datacollect
--seed``). The same operations are methods of :class:`FakeDataCollect` for tests that run the server
in-process.

The conflict rule is reproduced as the real backend runs it: a remote event on an entity with local changes is
applied on top of ``initial`` (discarding the earlier updates), or skipped with only a ``conflict-resolution``
audit row (``kept-local``), and the event stays stored either way. The event primary key is global across
tenants: a push of a guid another tenant holds answers success and stores nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import html
import itertools
import json
import re
import secrets
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from connector_core.entities import Entity, fold
from connector_core.events import FormSubmission, SyncLevel, format_timestamp, parse_timestamp

PULL_PAGE_SIZE = 10
DUPLICATES_MESSAGE = "Duplicates exist! Please resolve them on admin page."
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_REQUIRED = ("guid", "entityGuid", "type", "timestamp", "userId")


def _spread(data: Any) -> dict[str, Any]:
    """``data`` as the applier sees it. Validation is ``!data || Object.keys(data).length === 0`` (§1.1), so
    a non-empty array or string passes, and the applier's ``{...old.data, ...data}`` spreads it by index;
    numbers, booleans, null and empty values have no keys and are refused (an empty result here)."""
    if isinstance(data, dict):
        return data
    if isinstance(data, (list, str)):
        return {str(i): item for i, item in enumerate(data)}
    return {}


class _Rejected(Exception):
    """An event the server refused or failed to apply; the push handler swallows it, as the real one does."""


class _ServerError(Exception):
    """A thrown error the real backend turns into Express's default HTML page."""

    def __init__(self, status: int, message: str):
        self.status = status
        super().__init__(message)


@dataclass
class StoredEvent:
    seq: int
    tenant: str
    guid: str
    entity_guid: str
    type: str
    data: Any  # an object in practice; anything with keys passes validation (§1.1)
    at: datetime  # microsecond precision, as PostgreSQL stores it
    user_id: str
    sync_level: int

    def order(self) -> tuple[datetime, str]:
        """Timestamp order. Ties have no defined order on the real server (§2.1 d): a hash of the guid
        breaks them here, so a client leaning on storage order fails in tests, and tests stay repeatable."""
        return (self.at, hashlib.sha256(self.guid.encode()).hexdigest())

    def to_wire(self) -> dict[str, Any]:
        """As JavaScript serialises a ``Date``: milliseconds, truncated (§2.1 c)."""
        return {
            "guid": self.guid,
            "entityGuid": self.entity_guid,
            "type": self.type,
            "data": self.data,
            "timestamp": format_timestamp(self.at),
            "userId": self.user_id,
            "syncLevel": self.sync_level,
        }


@dataclass
class EntityPair:
    initial: Entity
    modified: Entity


@dataclass
class AuditRow:
    guid: str
    action: str
    entity_guid: str | None
    event_guid: str | None
    changes: dict[str, Any]
    at: datetime
    user_id: str

    def to_wire(self) -> dict[str, Any]:
        return {
            "guid": self.guid,
            "action": self.action,
            "entityGuid": self.entity_guid,
            "eventGuid": self.event_guid,
            "changes": self.changes,
            "signature": "",
            "timestamp": format_timestamp(self.at),
            "userId": self.user_id,
        }


@dataclass
class Tenant:
    id: str
    events: list[StoredEvent] = field(default_factory=list)
    pairs: dict[str, EntityPair] = field(default_factory=dict)
    duplicates: set[tuple[str, str]] = field(default_factory=set)
    audit: list[AuditRow] = field(default_factory=list)


@dataclass
class Faults:
    """Scripted misbehaviour, each consumed as it fires."""

    repeat_pulls: int = 0  # the next N pulls answer the previous pull's body again (a replayed page)
    swallow_pushes: int = 0  # the next N pushes answer success and store nothing (a swallowed SQL error)
    html_errors: list[dict[str, Any]] = field(default_factory=list)  # [{"path": "/api/..", "status": 500}]
    throttle: list[dict[str, Any]] = field(default_factory=list)  # [{"path": "/api/..", "retry_after": 2}]

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Faults:
        return cls(
            repeat_pulls=int(body.get("repeat_pulls", 0)),
            swallow_pushes=int(body.get("swallow_pushes", 0)),
            html_errors=[dict(e) for e in body.get("html_errors", [])],
            throttle=[dict(e) for e in body.get("throttle", [])],
        )


def _express_page(status: int, message: str) -> HTMLResponse:
    """Express's default error page: HTML whatever the client asked for (§3.7)."""
    body = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>Error</title>\n</head>\n'
        f"<body>\n<pre>{html.escape(message)}<br> &nbsp; &nbsp;at Layer.handle [as handle_request] "
        "(/app/node_modules/express/lib/router/layer.js:95:5)</pre>\n</body>\n</html>\n"
    )
    return HTMLResponse(body, status_code=status)


def _searchable(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """The duplicate check's criteria (§1.6): primitive leaves, nested keys joined with dots; arrays, null and
    empty strings are left out."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if value is None or value == "" or isinstance(value, list):
            continue
        if isinstance(value, Mapping):
            out.update(_searchable(value, name))
        else:
            out[name] = value
    return out


class _QueryFailed(Exception):
    """The duplicate query raised in PostgreSQL; submitForm throws after the entity was saved (§1.6)."""


def _sql_literal(text: str) -> str:
    """What PostgreSQL reads from ``'<text>'`` built by interpolation: doubled quotes are an escape for one;
    any other quote ends the literal early and what follows is SQL, a syntax error. (A value crafted so that
    the rest parses, an injection, is beyond this fake: it still fails here.)"""
    if "'" not in text:
        return text
    rest = text.replace("''", "")
    if "'" not in rest:
        return text.replace("''", "'")
    after = rest[rest.index("'") + 1 :]  # what PostgreSQL reads as SQL once the literal has ended
    word = re.match(r"\s*(\w+|\S)", after)
    raise _QueryFailed(f'syntax error at or near "{word.group(1) if word else after}"')


def _json_text(value: Any) -> str | None:
    """``data->>'key'``: a string as is, JSON null as SQL NULL, anything else as jsonb prints it."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return json.dumps(value)
    return json.dumps(value, separators=(", ", ": "))


def _numeric(text: str) -> Decimal:
    try:
        number = Decimal(text.strip())
    except InvalidOperation:
        number = None
    if number is None or not re.fullmatch(
        r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*|\s*[+-]?(NaN|Infinity)\s*", text, re.I
    ):
        raise _QueryFailed(f'invalid input syntax for type numeric: "{text}"')
    return number


def _boolean(text: str) -> bool:
    word = text.strip().lower()
    for truth, spellings in ((True, ("true", "yes", "on", "1")), (False, ("false", "no", "off", "0"))):
        for spelling in spellings:
            shortest = 2 if spelling in ("on", "off") else len(spelling) if spelling in ("1", "0") else 1
            if len(word) >= shortest and spelling.startswith(word):
                return truth
    raise _QueryFailed(f'invalid input syntax for type boolean: "{text}"')


def _condition(key: str, value: Any) -> Callable[[Mapping[str, Any]], bool | None]:
    """One criterion of ``searchEntities`` as PostgreSQL evaluates it on one state's data (None is NULL)."""
    key = _sql_literal(key)
    if isinstance(value, bool):

        def test(data: Mapping[str, Any]) -> bool | None:
            text = _json_text(data.get(key))
            return None if text is None else _boolean(text) is value

    elif isinstance(value, (int, float)):
        wanted = Decimal(json.dumps(value))

        def test(data: Mapping[str, Any]) -> bool | None:
            text = _json_text(data.get(key))
            return None if text is None else _numeric(text) == wanted

    else:
        literal = _sql_literal(str(value)).lower()

        def test(data: Mapping[str, Any]) -> bool | None:
            text = _json_text(data.get(key))
            return None if text is None else text.lower() == literal

    return test


def _matches(conditions: list[Callable[[Mapping[str, Any]], bool | None]], pair: EntityPair) -> bool:
    """``AND`` over the criteria of ``(initial matches OR modified matches)``, each leaf on its own, with
    SQL's three values and its short-circuits (a cast that fails raises only where it is reached)."""
    for test in conditions:
        outcome = test(pair.initial.data)
        if outcome is not True:
            second = test(pair.modified.data)
            outcome = True if second is True else (False if outcome is False and second is False else None)
        if outcome is not True:
            return False
    return True


def _audited_changes(event_type: str, data: Mapping[str, Any]) -> dict[str, Any]:
    """An audit row's ``changes``: the event data as the applier left it. It deletes ``guid`` from every
    member it creates (each of ``members`` for create-group/update-group, ``members[0]`` for add-member)
    before the row is written, so the feed lacks the member guids the stored event keeps (§7.5)."""
    changes = json.loads(json.dumps(data))
    members = changes.get("members")
    if not isinstance(members, list):
        return changes
    if event_type in ("create-group", "update-group"):
        stripped = members
    elif event_type == "add-member":
        stripped = members[:1]
    else:
        return changes
    for member in stripped:
        if isinstance(member, dict):
            member.pop("guid", None)
    return changes


class FakeDataCollect:
    """The server's state and rules; :func:`create_app` puts HTTP in front of it."""

    def __init__(
        self,
        *,
        email: str = "admin@example.com",
        password: str = "admin-password",
        clock: Callable[[], datetime] | None = None,
        tenants: Iterable[str] = ("demo",),
        token_ttl: float | None = None,
    ) -> None:
        self.lock = threading.RLock()
        self.users: dict[str, tuple[str, int]] = {email: (password, 1)}
        self.tokens: dict[str, tuple[int, datetime | None]] = {}  # token -> (user id, expiry)
        self.token_ttl = token_ttl
        self.tenants: dict[str, Tenant] = {}
        self.events_by_guid: dict[str, StoredEvent] = {}  # the primary key is global, not per tenant (§2.2)
        self.clock = clock or (lambda: datetime.now(UTC))
        self.faults = Faults()
        self.requests: list[dict[str, Any]] = []
        self._last_pull: dict[str, Any] | None = None
        self._seq = itertools.count(1)
        for tenant in tenants:
            self.add_tenant(tenant)

    # -- setup -------------------------------------------------------------------------------------

    def add_tenant(self, tenant_id: str) -> Tenant:
        with self.lock:
            return self.tenants.setdefault(tenant_id, Tenant(tenant_id))

    def issue_token(self, user_id: int = 1, *, ttl: float | None = None) -> str:
        """A token; with a lifetime (``ttl`` or the server's ``token_ttl``) it carries an ``exp`` claim."""
        token = "eyJ" + secrets.token_urlsafe(24)
        lifetime = ttl if ttl is not None else self.token_ttl
        with self.lock:
            expires = None if lifetime is None else self.clock() + timedelta(seconds=lifetime)
            self.tokens[token] = (user_id, expires)
        return token

    def token_user(self, token: str) -> int | None:
        """The user a token stands for, or None if it is unknown or expired (both are "Invalid token")."""
        with self.lock:
            found = self.tokens.get(token)
            if found is None:
                return None
            user, expires = found
            if expires is not None and self.clock() >= expires:
                return None
            return user

    def seed_jsonl(self, tenant_id: str, path: str | Path) -> list[str]:
        """Store a JSONL file's events (one DataCollect event a line) as a phone's sync would."""
        self.add_tenant(tenant_id)
        events = []
        with Path(path).open(encoding="utf-8") as fh:
            for number, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    raw = json.loads(line)
                except ValueError as exc:
                    raise ValueError(f"{path}:{number}: not JSON: {exc}") from None
                if not isinstance(raw, dict):
                    raise ValueError(f"{path}:{number}: an event must be a JSON object")
                events.append(raw)
        return self.store(tenant_id, events)

    def entity_pair(self, tenant_id: str, guid: str) -> EntityPair | None:
        with self.lock:
            return self.tenants[tenant_id].pairs.get(guid)

    def store(self, tenant_id: str, events: Iterable[Mapping[str, Any]]) -> list[str]:
        """Events arriving as a phone's sync would bring them (any timestamp, any syncLevel); returns the
        reasons of those that were refused or not applied."""
        problems = []
        with self.lock:
            tenant = self.tenants[tenant_id]
            for raw in events:
                try:
                    self._submit(tenant, dict(raw), force_level=None)
                except _Rejected as exc:
                    problems.append(str(exc))
        return problems

    def set_duplicates(self, tenant_id: str, pairs: Iterable[tuple[str, str]]) -> None:
        with self.lock:
            self.tenants[tenant_id].duplicates = {(a, b) for a, b in pairs}

    def entity(self, tenant_id: str, guid: str) -> Entity | None:
        with self.lock:
            pair = self.tenants[tenant_id].pairs.get(guid)
            return pair.modified.copy() if pair else None

    def conflict_rows(self, tenant_id: str) -> list[AuditRow]:
        with self.lock:
            return [r for r in self.tenants[tenant_id].audit if r.action == "conflict-resolution"]

    def requests_to(self, path: str) -> list[dict[str, Any]]:
        with self.lock:
            return [r for r in self.requests if r["path"] == path]

    # -- the applier (§1.3) ------------------------------------------------------------------------

    def _submit(self, tenant: Tenant, raw: dict[str, Any], *, force_level: int | None) -> None:
        if force_level is not None:
            raw["syncLevel"] = force_level
        if any(not raw.get(key) for key in _REQUIRED) or not _spread(raw.get("data")):
            raise _Rejected(f"INVALID_FORM: {raw.get('guid')}")
        try:
            at = parse_timestamp(str(raw["timestamp"]))
            level = int(raw.get("syncLevel") or 0)
        except ValueError as exc:
            raise _Rejected(f"invalid input syntax: {exc}") from None
        guid = str(raw["guid"])
        if guid in self.events_by_guid:
            raise _Rejected(f'duplicate key value violates unique constraint "events_pkey": {guid}')
        stored = StoredEvent(
            seq=next(self._seq),
            tenant=tenant.id,
            guid=guid,
            entity_guid=str(raw["entityGuid"]),
            type=str(raw["type"]),
            data=json.loads(json.dumps(raw["data"])),
            at=at,
            user_id=str(raw["userId"]),
            sync_level=level,
        )
        self.events_by_guid[guid] = stored  # saved first: whatever happens next, the event stays (§1.3)
        tenant.events.append(stored)
        now = self.clock()
        event = FormSubmission.model_construct(
            guid=guid,
            entity_guid=stored.entity_guid,
            type=stored.type,
            data=_spread(stored.data),
            timestamp=format_timestamp(at),
            user_id=stored.user_id,
            sync_level=SyncLevel(level) if level in (0, 1, 2) else SyncLevel.REMOTE,
        )
        pair = tenant.pairs.get(event.entity_guid)
        base: Entity | None = None
        if level in (1, 2) and pair is not None and pair.initial.version != pair.modified.version:
            local = parse_timestamp(pair.modified.last_updated or format_timestamp(EPOCH))
            remote = parse_timestamp(event.timestamp)
            resolution = "kept-local" if local >= remote else "applied-remote"
            self._audit(
                tenant,
                "conflict-resolution",
                event,
                {
                    "resolution": resolution,
                    "eventType": event.type,
                    "localLastUpdated": pair.modified.last_updated,
                    "remoteTimestamp": event.timestamp,
                    "localVersion": pair.modified.version,
                },
                now,
                user_id="system",  # logConflictResolution writes as "system"
            )
            if resolution == "kept-local":
                return
            base = pair.initial

        def lookup(entity_guid: str) -> Entity | None:
            if entity_guid == event.entity_guid and base is not None:
                return base
            found = tenant.pairs.get(entity_guid)
            return found.modified if found else None

        result = fold([event], lookup)
        if result.issues:
            raise _Rejected(result.issues[0].reason)
        stamp = format_timestamp(now)
        gone = self._deletion_order(tenant, event, result.changed)
        for entity_guid, entity in result.changed.items():
            previous = tenant.pairs.get(entity_guid)
            if entity is None:
                continue
            entity.last_updated = stamp
            if entity_guid == event.entity_guid and event.type in ("add-member", "remove-member"):
                initial = previous.initial if previous else entity  # add/remove-member keep the old initial
            elif entity.type == "group" and entity_guid == event.entity_guid:
                initial = entity  # create-group/update-group save (group, group)
            else:
                initial = previous.modified if previous else entity
            tenant.pairs[entity_guid] = EntityPair(initial=initial, modified=entity)
        for entity_guid in gone:  # cascadeDeleteEntity: members first, each deleted entity its own row
            del tenant.pairs[entity_guid]
            changes = {"type": "cascade-delete-entity", "entityGuid": entity_guid}
            self._audit(tenant, "cascade-delete-entity", event, changes, now, entity_guid=entity_guid)
        if event.type in ("create-group", "update-group"):
            self._audit_members(tenant, event, event.data.get("members"), now)
        elif event.type == "add-member":
            self._audit_members(tenant, event, (event.data.get("members") or [])[:1], now)
        if event.type not in ("delete-entity", "resolve-duplicate"):  # those leave only cascade rows
            self._audit(tenant, event.type, event, _audited_changes(event.type, event.data), now)
        if event.type == "resolve-duplicate":
            first = (event.data.get("duplicates") or [{}])[0]
            tenant.duplicates.discard((str(first.get("entityGuid")), str(first.get("duplicateGuid"))))
        self._flag_duplicates(tenant, event, now)

    @staticmethod
    def _deletion_order(
        tenant: Tenant, event: FormSubmission, changed: Mapping[str, Entity | None]
    ) -> list[str]:
        """The entities an event deletes, in the order ``cascadeDeleteEntity`` deletes them: depth first,
        members before their group, so the event's own entity comes last."""
        doomed = {guid for guid, entity in changed.items() if entity is None and guid in tenant.pairs}
        order: list[str] = []

        def visit(guid: str) -> None:
            if guid not in doomed or guid in order:
                return
            for member in tenant.pairs[guid].modified.member_ids:
                visit(member)
            order.append(guid)

        for guid in [event.entity_guid, *sorted(doomed)]:
            visit(guid)
        return order

    def _audit_members(self, tenant: Tenant, event: FormSubmission, members: Any, now: datetime) -> None:
        """The rows of the members a group event creates: the applier creates each through its own
        create-individual/create-group path, which writes a row under the *group* event's guid with the
        member's guid as entity (its members' rows first, for a subgroup)."""
        if not isinstance(members, list):
            return
        for member in members:
            if not isinstance(member, dict) or not member.get("guid"):
                continue
            changes = {k: v for k, v in json.loads(json.dumps(member)).items() if k != "guid"}
            if member.get("type") == "group":
                self._audit_members(tenant, event, member.get("members"), now)
                action = "create-group"
            else:
                action = "create-individual"
            self._audit(
                tenant, action, event, _audited_changes(action, changes), now, entity_guid=str(member["guid"])
            )

    def _audit(
        self,
        tenant: Tenant,
        action: str,
        event: FormSubmission,
        changes: dict[str, Any],
        now: datetime,
        *,
        user_id: str | None = None,
        entity_guid: str | None = None,
    ) -> None:
        tenant.audit.append(
            AuditRow(
                guid=secrets.token_hex(16),
                action=action,
                entity_guid=entity_guid or event.entity_guid,
                event_guid=event.guid,
                changes=changes,
                at=now,
                user_id=user_id or event.user_id,
            )
        )

    def _flag_duplicates(self, tenant: Tenant, event: FormSubmission, now: datetime) -> None:
        """§1.6, as ``flagPotentialDuplicate`` and ``PostgresEntityStorageAdapter.searchEntities`` run it: one
        interpolated SQL query over the tenant's entities. Every criterion must match the other entity's
        ``initial`` or its ``modified`` data (each on its own); strings compare as lower-cased text, numbers
        and booleans through a cast that fails on text that is neither; a dotted key is looked up as a key
        of its own, so nested fields never match. A query that fails (a quote in a value, a failed cast)
        flags nothing and makes the submission fail after the entity was saved."""
        if event.type in ("delete-entity", "resolve-duplicate"):
            return  # no updated entity: the check does not run
        pair = tenant.pairs.get(event.entity_guid)
        if pair is None:
            return
        criteria = _searchable(pair.modified.data)
        if not criteria:
            return
        try:
            conditions = [_condition(key, value) for key, value in criteria.items()]
            found = [guid for guid, other in tenant.pairs.items() if _matches(conditions, other)]
        except _QueryFailed as exc:  # submitForm throws, though the event is stored and applied
            raise _Rejected(
                f"{event.guid}: stored and applied, then the duplicate check failed: {exc}"
            ) from None
        for other_guid in found:
            if other_guid == event.entity_guid:
                continue
            tenant.duplicates.add((event.entity_guid, other_guid))  # ON CONFLICT DO NOTHING
            self._audit(
                tenant,
                "flag-potential-duplicate",
                event,
                {"entityId": event.entity_guid, "duplicateId": other_guid},
                now,
                user_id="system",
            )

    # -- the API's operations ----------------------------------------------------------------------

    def pull(self, tenant: Tenant, since_text: str) -> dict[str, Any]:
        if self.faults.repeat_pulls and self._last_pull is not None:
            self.faults.repeat_pulls -= 1
            return self._last_pull
        if tenant.duplicates:
            return {"events": [], "nextCursor": None, "error": DUPLICATES_MESSAGE}
        since = EPOCH
        if since_text.strip():
            try:
                since = parse_timestamp(since_text)
            except ValueError:
                raise _ServerError(
                    500, f'error: invalid input syntax for type timestamp: "{since_text}"'
                ) from None
        rows = sorted((e for e in tenant.events if e.at > since), key=StoredEvent.order)
        page = rows[:PULL_PAGE_SIZE]
        body = {
            "events": [e.to_wire() for e in page],
            "nextCursor": format_timestamp(page[-1].at) if len(page) == PULL_PAGE_SIZE else None,
        }
        self._last_pull = body
        return body

    def push(self, tenant: Tenant, events: Any) -> None:
        if self.faults.swallow_pushes:
            self.faults.swallow_pushes -= 1
            return
        if not isinstance(events, list):
            return  # still "success" (§3.5)

        def order(raw: Any) -> datetime:
            try:
                return parse_timestamp(str(raw.get("timestamp")))
            except (ValueError, AttributeError):
                return datetime.max.replace(tzinfo=UTC)

        for raw in sorted(events, key=order):
            if not isinstance(raw, dict):
                continue
            with contextlib.suppress(_Rejected):  # swallowed (§3.5)
                self._submit(tenant, dict(raw), force_level=int(SyncLevel.REMOTE))

    def entity_events(self, tenant: Tenant, guid: str) -> list[dict[str, Any]]:
        rows = sorted((e for e in tenant.events if e.entity_guid == guid), key=StoredEvent.order)
        return [e.to_wire() for e in rows]

    def audit_since(self, tenant: Tenant, since_text: str) -> list[dict[str, Any]]:
        since = parse_timestamp(since_text) if since_text.strip() else EPOCH
        rows = [(n, r) for n, r in enumerate(tenant.audit) if r.at > since]

        def shuffled(row: tuple[int, AuditRow]) -> str:  # the real query has no ORDER BY (§2.1)
            n, r = row
            return hashlib.sha256(f"{n}|{r.event_guid}|{r.action}|{r.entity_guid}".encode()).hexdigest()

        return [r.to_wire() for _n, r in sorted(rows, key=shuffled)]


def create_app(fake: FakeDataCollect | None = None) -> Starlette:
    """The fake backend as an ASGI app (``app.state.fake`` is its :class:`FakeDataCollect`)."""
    fake = fake or FakeDataCollect()

    def record(request: Request) -> None:
        with fake.lock:
            fake.requests.append(
                {
                    "method": request.method,
                    "path": request.url.path,
                    "query": request.url.query,
                    "params": dict(request.query_params),
                }
            )

    def scripted_error(request: Request) -> Response | None:
        with fake.lock:
            for index, spec in enumerate(fake.faults.throttle):
                if spec.get("path") == request.url.path:
                    del fake.faults.throttle[index]
                    return Response(
                        "Too Many Requests",
                        status_code=429,
                        headers={"Retry-After": str(spec.get("retry_after", 1))},
                        media_type="text/plain",
                    )
            for index, spec in enumerate(fake.faults.html_errors):
                if spec.get("path") == request.url.path:
                    del fake.faults.html_errors[index]
                    return _express_page(int(spec.get("status", 500)), str(spec.get("message", "Error")))
        return None

    def user_of(request: Request) -> int | JSONResponse:
        header = request.headers.get("authorization")
        if not header:
            return JSONResponse({"error": "Authorization header missing"}, status_code=401)
        scheme, _, token = header.partition(" ")
        if scheme != "Bearer" or not token:
            return JSONResponse({"error": "Invalid authentication type"}, status_code=401)
        user = fake.token_user(token)
        if user is None:
            return JSONResponse({"error": "Invalid token"}, status_code=401)
        return user

    def admitted(request: Request) -> int | Response:
        """Every API route's door, in the backend's order: the request is logged, a scripted fault
        answers first, then the token is checked; the user id, or the answer that refuses the request."""
        record(request)
        if (failure := scripted_error(request)) is not None:
            return failure
        return user_of(request)

    def tenant_for(config_id: Any) -> Tenant | JSONResponse:
        with fake.lock:
            tenant = fake.tenants.get(str(config_id or "default"))
        if tenant is None:
            return JSONResponse({"error": "App instance not found"}, status_code=400)
        return tenant

    async def login(request: Request) -> Response:
        record(request)
        try:
            body = await request.json()
        except ValueError:
            body = {}
        email, password = body.get("email"), body.get("password")
        with fake.lock:
            known = fake.users.get(str(email))
        if known is None or known[0] != password:
            return JSONResponse({"message": "Invalid email or password"}, status_code=401)
        return JSONResponse({"token": fake.issue_token(known[1]), "userId": known[1]})

    async def sync_pull(request: Request) -> Response:
        user = admitted(request)
        if isinstance(user, Response):
            return user
        tenant = tenant_for(request.query_params.get("configId"))
        if isinstance(tenant, Response):
            return tenant
        try:
            with fake.lock:
                body = fake.pull(tenant, request.query_params.get("since", ""))
        except _ServerError as exc:
            return _express_page(exc.status, str(exc))
        return JSONResponse(body)

    async def sync_push(request: Request) -> Response:
        user = admitted(request)
        if isinstance(user, Response):
            return user
        try:
            body = await request.json()
        except ValueError:
            return _express_page(400, "SyntaxError: Unexpected token in JSON")
        tenant = tenant_for(body.get("configId") if isinstance(body, dict) else None)
        if isinstance(tenant, Response):
            return tenant
        with fake.lock:
            fake.push(tenant, body.get("events"))
        return JSONResponse({"status": "success"})

    async def entity_events(request: Request) -> Response:
        user = admitted(request)
        if isinstance(user, Response):
            return user
        config_id = request.query_params.get("configId") or "default"
        with fake.lock:
            tenant = fake.tenants.get(config_id)
            if tenant is None:
                return _express_page(500, f"Error: Config with id {config_id} not found")
            rows = fake.entity_events(tenant, request.path_params["guid"])
        return JSONResponse(rows)

    async def entities(request: Request) -> Response:
        """``GET /api/entities``: newest first, ``limit`` 100 by default and at most 1000 (§3.3)."""
        user = admitted(request)
        if isinstance(user, Response):
            return user
        config_id = request.query_params.get("configId") or "default"
        try:
            limit = min(1000, max(1, int(request.query_params.get("limit") or 100)))
        except ValueError:
            limit = 100
        with fake.lock:
            tenant = fake.tenants.get(config_id)
            if tenant is None:
                return _express_page(500, f"Error: Config with id {config_id} not found")
            docs = sorted(
                (p.modified for p in tenant.pairs.values()), key=lambda e: e.last_updated or "", reverse=True
            )[:limit]
            rows = [
                {
                    "guid": e.guid,
                    "id": e.guid,
                    "name": e.name,
                    "entityName": e.data.get("entityName"),
                    "type": e.type,
                    "data": e.data,
                    "lastUpdated": e.last_updated,
                }
                for e in docs
            ]
        return JSONResponse(rows)

    async def audit_logs(request: Request) -> Response:
        user = admitted(request)
        if isinstance(user, Response):
            return user
        config_id = request.query_params.get("configId") or "default"
        with fake.lock:
            tenant = fake.tenants.get(config_id)
            if tenant is None:
                return _express_page(500, f"Error: Config with id {config_id} not found")
            try:
                rows = fake.audit_since(tenant, request.query_params.get("since", ""))
            except ValueError:
                return _express_page(500, "error: invalid input syntax for type timestamp")
        return JSONResponse(rows)

    async def not_found(request: Request) -> Response:
        record(request)
        return HTMLResponse(
            '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>Error</title>\n'
            f"</head>\n<body>\n<pre>Cannot {request.method} {html.escape(request.url.path)}</pre>\n"
            "</body>\n</html>\n",
            status_code=404,
        )

    # -- control -----------------------------------------------------------------------------------

    async def control_tenants(request: Request) -> Response:
        body = await request.json()
        fake.add_tenant(str(body["id"]))
        return JSONResponse({"status": "success"}, status_code=201)

    async def control_events(request: Request) -> Response:
        config_id = request.query_params.get("configId") or "default"
        if request.method == "GET":
            with fake.lock:
                tenant = fake.tenants[config_id]
                rows = [
                    {**e.to_wire(), "storedAt": e.at.isoformat().replace("+00:00", "Z")}
                    for e in tenant.events
                ]
            return JSONResponse(rows)
        body = await request.json()
        problems = fake.store(str(body.get("configId") or config_id), body.get("events") or [])
        return JSONResponse({"status": "success", "problems": problems})

    async def control_duplicates(request: Request) -> Response:
        body = await request.json()
        fake.set_duplicates(str(body.get("configId") or "default"), [tuple(p) for p in body.get("pairs", [])])
        return JSONResponse({"status": "success"})

    async def control_entity(request: Request) -> Response:
        config_id = request.query_params.get("configId") or "default"
        with fake.lock:
            pair = fake.tenants[config_id].pairs.get(request.path_params["guid"])
            if pair is None:
                return JSONResponse({"error": "no such entity"}, status_code=404)
            return JSONResponse({"initial": pair.initial.to_json(), "modified": pair.modified.to_json()})

    async def control_requests(request: Request) -> Response:
        with fake.lock:
            if request.method == "DELETE":
                fake.requests.clear()
                return JSONResponse({"status": "success"})
            return JSONResponse(list(fake.requests))

    async def control_faults(request: Request) -> Response:
        body = await request.json()
        with fake.lock:
            fake.faults = Faults.from_json(body)
        return JSONResponse({"status": "success"})

    routes = [
        Route("/api/users/login", login, methods=["POST"]),
        Route("/api/sync/pull", sync_pull, methods=["GET"]),
        Route("/api/sync/push", sync_push, methods=["POST"]),
        Route("/api/sync/pull/audit-logs", audit_logs, methods=["GET"]),
        Route("/api/entities", entities, methods=["GET"]),
        Route("/api/entities/{guid}/events", entity_events, methods=["GET"]),
        Route("/_control/tenants", control_tenants, methods=["POST"]),
        Route("/_control/events", control_events, methods=["GET", "POST"]),
        Route("/_control/duplicates", control_duplicates, methods=["PUT"]),
        Route("/_control/entities/{guid}", control_entity, methods=["GET"]),
        Route("/_control/requests", control_requests, methods=["GET", "DELETE"]),
        Route("/_control/faults", control_faults, methods=["PUT"]),
        Route("/{path:path}", not_found, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
    ]
    app = Starlette(routes=routes)
    app.state.fake = fake
    return app

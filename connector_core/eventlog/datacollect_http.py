"""The ``datacollect`` event log: a live DataCollect backend as the source of truth, mirrored locally.

Why a mirror. The sync engine needs three things DataCollect's API cannot give: a cursor over *ingestion*
order that never skips (DataCollect's cursor is the client-supplied timestamp, compared with a strict ``>``,
datacollect.md §2.1), the current state of any entity in one call (``/api/entities`` loads every entity of
the tenant), and pages of more than 10 events. So this backend keeps a local SQLite event log (the *mirror*)
and fills it from DataCollect; readers read the mirror, with all of the SQLite log's guarantees.

Reading (:meth:`DataCollectEventLog.refresh`, run on its own when a reader reaches the mirror's head and the
last refresh is older than ``refresh_interval``): ``GET /api/sync/pull`` from a high-water mark minus a
look-back window, so events that arrive late with an older timestamp are picked up, and with every event
appended by guid, so re-reading the window duplicates nothing. Each next ``since`` is one microsecond before
the last timestamp of a page, so the events tied with it are read again rather than skipped (the server
stores microseconds and filters on them; ``since`` may carry them). A full page inside one millisecond cannot
be paged through at all (10 events, all tied), so for such a page the events of that millisecond are found
through the server-time audit feed and each entity's event list, and the walk steps past it; a ``since`` that
would not move forward stops the refresh with an error instead of looping. The recovery reads every audit
row that names an event, ``conflict-resolution`` (the only trace of an event DataCollect kept local) and
``cascade-delete-entity`` (the only trace of a delete) included, and fetches only entities with an event the
walk has not read. Each page is committed as it arrives;
the high-water mark lives in the mirror's own table and moves only after the events below it are committed,
and where an unfinished walk stopped is kept, so the next refresh goes on from there. Events DataCollect
stored but did not apply are learnt from the audit feed before their page is committed, and kept unfolded
(:class:`MirrorLog`), with DataCollect's reason as an event issue. A tenant whose pulls are blocked
by potential duplicates raises :class:`DataCollectBlocked` and moves nothing: it is not an empty log.

Writing (:meth:`DataCollectEventLog.append`, which is what a registry pull calls): events go to
``POST /api/sync/push`` with millisecond timestamps. DataCollect drops every update of an entity after the
first one it applies in a push (its conflict rule, §1.4), so several updates of one entity in one call are
coalesced into one event (the last event's guid and envelope, the data shallow-merged: what applying them in
order gives); events that cannot be merged go in successive pushes. An update carries the entity's whole
current form (DataCollect may apply it on top of ``initial``) and is stamped no earlier than now; one still
kept local is re-sent once, stamped after DataCollect's own last apply. DataCollect answers success to
everything (§3.5), so each push is verified by reading the entities' events back; what is missing raises
:class:`DataCollectPushError` naming the guids, and what is there is appended to the mirror *as DataCollect
stored it*. Events the server stored but did not apply (its conflict rule kept its own, newer state) are
reported as issues, found through the audit feed; the entities DataCollect then lists are compared with the
mirror's, and a difference is an issue too.
"""

from __future__ import annotations

import html
import json
import logging
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import quote

import httpx

from connector_core import codec
from connector_core.connector import ConnectorError
from connector_core.entities import Entity, EventIssue
from connector_core.eventlog.base import AppendResult, EventPage, TouchPage, events_after
from connector_core.eventlog.sqlite import _INSERT_ISSUE, SqliteEventLog, _referenced_guids
from connector_core.events import EventError, FormSubmission, format_timestamp, parse_timestamp, utc_now
from connector_core.http import released
from connector_core.logs import register_secret
from connector_core.retry import RetryPolicy, call_with_retry
from connector_core.streams import chunks

log = logging.getLogger("dcsync.datacollect")
_Page = TypeVar("_Page", EventPage, TouchPage)

PULL_PAGE_SIZE = 10
"""Fixed by the backend's route (§3.4); a full page is how the client knows more may follow."""
DEFAULT_LOOKBACK_SECONDS = 3600.0
DEFAULT_PUSH_BATCH = 10
DEFAULT_REFRESH_INTERVAL = 30.0
_RESENT_NS = uuid.UUID("5b0f3f51-7e0e-4a55-9d0c-2f3c1f7f5d15")
_US = timedelta(microseconds=1)
_MS = timedelta(milliseconds=1)
_APPEND_CHUNK = 500
_MERGEABLE = {
    "create-individual": "individual",
    "update-individual": "individual",
    "create-group": "group",
    "update-group": "group",
}


class DataCollectError(RuntimeError):
    """DataCollect refused, failed or answered something unusable. Messages never hold the token."""


class DataCollectAuthError(DataCollectError):
    """The credentials were refused (or none were configured)."""


class DataCollectUnavailable(DataCollectError):
    """DataCollect could not be reached, or kept answering 502/503/504."""


class DataCollectBlocked(DataCollectError):
    """The tenant's pulls are blocked by unresolved potential duplicates: nothing can be read until an
    administrator resolves them. Not an empty log."""


class DataCollectPushError(DataCollectError):
    """DataCollect answered success to a push but did not store some of its events."""

    def __init__(self, message: str, missing: Sequence[str]):
        super().__init__(message)
        self.missing = list(missing)


def since_text(value: datetime | None) -> str:
    """A ``since`` for the pull API: ISO with microseconds and ``Z`` (never ``+00:00``: an unencoded ``+``
    becomes a space), or empty for the start of the log."""
    if value is None:
        return ""
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond:06d}Z"


def _excerpt(text: str) -> str:
    """The one useful line of an Express error page (its ``<pre>`` up to the stack trace), or of any body."""
    found = re.search(r"<pre>(.*?)(?:<br>|</pre>)", text, re.S | re.I)
    if found is None:
        found = re.search(r"<title>(.*?)</title>", text, re.S | re.I)
    raw = found.group(1) if found else text
    line = html.unescape(re.sub(r"<[^>]+>", " ", raw))
    line = " ".join(line.split())
    return line[:200] + ("..." if len(line) > 200 else "")


# -- the HTTP client -------------------------------------------------------------------------------------


@dataclass(slots=True)
class PulledPage:
    events: list[FormSubmission]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class AuditEntry:
    action: str
    entity_guid: str | None
    event_guid: str | None
    changes: dict[str, Any]
    timestamp: str | None


_NOT_JSON = object()
_RETRIED_STATUS = frozenset({429, 502, 503, 504})


class _Transient(ConnectorError):
    """A failure worth another attempt (what :func:`call_with_retry` retries); never leaves the client."""

    transient = True


def _retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds: a number, or an HTTP date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


class DataCollectClient:
    """DataCollect's backend API as dcsync uses it: login, pull, push, an entity's events, audit rows.

    ``token`` is used as given (the backend's own tokens carry no ``exp``, §3.2, but a token with one is
    refused once it expires); without one the client logs in with ``email``/``password`` on first use, and
    once more if the token is refused. Every call goes through ``retry`` (:class:`RetryPolicy`). The token
    lives in request headers only: it is not in ``repr()``, in log lines or in error messages.
    """

    def __init__(
        self,
        url: str,
        config_id: str,
        *,
        token: str | None = None,
        email: str | None = None,
        password: str | None = None,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        client: httpx.Client | None = None,
    ) -> None:
        if not token and not (email and password):
            raise DataCollectAuthError(
                f"DataCollect at {url}: configure a token, or an email and a password to log in with"
            )
        self.url = url.rstrip("/")
        self.config_id = config_id
        for secret in (token, password):
            if secret:
                register_secret(secret)  # masked in every log line, should anything echo it
        self._token = token or None
        self._email = email
        self._password = password
        self.retry = retry or RetryPolicy()
        self._timeout = timeout
        self._http = client or httpx.Client(base_url=self.url, timeout=timeout)

    def __repr__(self) -> str:
        return f"DataCollectClient(url={self.url!r}, config_id={self.config_id!r})"

    def clone(self) -> DataCollectClient:
        """A second client with the same server, tenant, credentials and retry policy (own connection)."""
        return DataCollectClient(
            self.url,
            self.config_id,
            token=self._token if not (self._email and self._password) else None,
            email=self._email,
            password=self._password,
            timeout=self._timeout,
            retry=self.retry,
        )

    def close(self) -> None:
        self._http.close()

    # -- plumbing ----------------------------------------------------------------------------------

    def login(self) -> None:
        if not (self._email and self._password):
            raise DataCollectAuthError(
                f"DataCollect at {self.url} refused the token and no email/password is set"
            )
        body = self._request(
            "POST",
            "/api/users/login",
            json_body={"email": self._email, "password": self._password},
            what=f"login as {self._email}",
            auth=False,
        )
        token = body.get("token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise DataCollectAuthError(f"login as {self._email} at {self.url}: the answer held no token")
        register_secret(token)
        self._token = token

    def _request(
        self,
        method: str,
        path: str,
        *,
        what: str,
        params: Mapping[str, str] | None = None,
        json_body: Any = None,
        auth: bool = True,
    ) -> Any:
        """One API call through the retry policy: connection errors, 429 (``Retry-After`` honoured) and
        502/503/504 are retried with full jitter; a refused token logs in again once; the rest is final.
        A 500 is not retried: DataCollect answers it for thrown application errors, which repeat."""
        relogged = False

        def attempt() -> httpx.Response:
            headers = {}
            if auth:
                if self._token is None:
                    self.login()
                headers["Authorization"] = f"Bearer {self._token}"
            try:
                response = released(
                    self._http.request(method, path, params=params, json=json_body, headers=headers)
                )
            except httpx.TransportError as exc:
                raise _Transient(
                    f"{what}: cannot reach DataCollect at {self.url}: {type(exc).__name__}: {exc}"
                ) from None
            if response.status_code in _RETRIED_STATUS:
                raise _Transient(
                    self._failure(response, what),
                    retry_after=_retry_after(response.headers.get("retry-after")),
                )
            return response

        while True:
            try:
                response = call_with_retry(attempt, self.retry, what=what)
            except _Transient as exc:
                raise DataCollectUnavailable(f"{exc.message} (gave up after retries)") from None
            if response.status_code == 401 and auth and not relogged and self._email and self._password:
                relogged = True
                self._token = None
                continue
            return self._decode(response, what)

    def _failure(self, response: httpx.Response, what: str) -> str:
        status = response.status_code
        text = response.text
        if status == 429:
            wait = response.headers.get("retry-after")
            return f"{what}: DataCollect at {self.url} answered HTTP 429 (too many requests" + (
                f", retry after {wait}s)" if wait else ")"
            )
        kind = "an HTML page" if "<html" in text[:500].lower() else "a body"
        excerpt = _excerpt(text)
        return f"{what}: DataCollect at {self.url} answered HTTP {status} with {kind}" + (
            f": {excerpt}" if excerpt else ""
        )

    def _decode(self, response: httpx.Response, what: str) -> Any:
        status = response.status_code
        try:
            body = response.json()
        except ValueError:
            body = _NOT_JSON
        if body is _NOT_JSON:
            text = response.text
            kind = "an HTML page" if "<html" in text[:500].lower() else "a body that is not JSON"
            excerpt = _excerpt(text)
            raise (DataCollectUnavailable if status in (502, 503, 504) else DataCollectError)(
                f"{what}: DataCollect at {self.url} answered HTTP {status} with {kind}"
                + (f": {excerpt}" if excerpt else "")
            )
        message = ""
        if isinstance(body, dict):
            message = str(body.get("error") or body.get("message") or "")
        if status == 401:
            hint = ""
            if message == "Invalid token" and not (self._email and self._password):
                hint = (
                    ": the token is unknown to this server or has expired (a token with an exp claim "
                    "does); configure email and password (email:/password: under eventlog in dcsync.yaml, "
                    "or DCSYNC_DATACOLLECT_EMAIL and DCSYNC_DATACOLLECT_PASSWORD) so dcsync can log in "
                    "again by itself"
                )
            raise DataCollectAuthError(
                f"{what}: DataCollect at {self.url} refused the credentials: {message}{hint}"
            )
        if status >= 400:
            raise DataCollectError(f"{what}: DataCollect at {self.url} answered HTTP {status}: {message}")
        if isinstance(body, dict) and body.get("status") == "error":
            raise DataCollectError(f"{what}: DataCollect reported an error: {message or body}")
        return body

    def _event(self, raw: Any, what: str) -> FormSubmission:
        try:
            return FormSubmission.from_json(raw, where=what)
        except EventError as exc:
            raise DataCollectError(
                f"DataCollect at {self.url} returned an event dcsync cannot read: {exc}"
            ) from None

    # -- operations --------------------------------------------------------------------------------

    def pull(self, since: str) -> PulledPage:
        """One page (at most 10 events) with a timestamp strictly after ``since`` (``""``: the start)."""
        what = f"pull from tenant {self.config_id!r} since {since or 'the start'}"
        body = self._request(
            "GET", "/api/sync/pull", params={"since": since, "configId": self.config_id}, what=what
        )
        if not isinstance(body, dict) or not isinstance(body.get("events", []), list):
            raise DataCollectError(f"{what}: unexpected answer shape from DataCollect at {self.url}")
        if body.get("error"):
            error = str(body["error"])
            if "duplicate" in error.lower():
                raise DataCollectBlocked(
                    f"DataCollect tenant {self.config_id!r} at {self.url} is blocked by unresolved "
                    "duplicates in DataCollect: its sync API returns no events until an administrator "
                    "resolves the potential duplicates (admin app, or POST "
                    "/api/potential-duplicates/resolve). "
                    f"Server said: {error}"
                )
            raise DataCollectError(f"{what}: DataCollect reported: {error}")
        events = [self._event(raw, f"{what}, event {i}") for i, raw in enumerate(body.get("events") or [])]
        cursor = body.get("nextCursor")
        return PulledPage(events=events, next_cursor=cursor if isinstance(cursor, str) and cursor else None)

    def push(self, events: Sequence[FormSubmission]) -> None:
        """Send events; the answer says nothing (it is success whatever happened), so callers verify."""
        what = f"push of {len(events)} events to tenant {self.config_id!r}"
        body = self._request(
            "POST",
            "/api/sync/push",
            json_body={"events": [e.to_json() for e in events], "configId": self.config_id},
            what=what,
        )
        if not isinstance(body, dict) or body.get("status") != "success":
            raise DataCollectError(f"{what}: unexpected answer from DataCollect at {self.url}: {body!r:.200}")

    def entity_events(self, entity_guid: str) -> list[FormSubmission]:
        what = f"events of entity {entity_guid}"
        body = self._request(
            "GET",
            f"/api/entities/{quote(entity_guid, safe='')}/events",
            params={"configId": self.config_id},
            what=what,
        )
        if not isinstance(body, list):
            raise DataCollectError(f"{what}: unexpected answer shape from DataCollect at {self.url}")
        return [self._event(raw, what) for raw in body]

    def entities(self, limit: int = 1000) -> list[dict[str, Any]]:
        """The tenant's entities as ``GET /api/entities`` lists them: newest first, at most 1000 (§3.3)."""
        what = f"entities of tenant {self.config_id!r}"
        body = self._request(
            "GET", "/api/entities", params={"configId": self.config_id, "limit": str(limit)}, what=what
        )
        if not isinstance(body, list):
            raise DataCollectError(f"{what}: unexpected answer shape from DataCollect at {self.url}")
        return [row for row in body if isinstance(row, dict)]

    def audit_logs(self, since: str) -> list[AuditEntry]:
        """Audit rows written after ``since`` by the server's clock (unpaginated, §3.3)."""
        what = f"audit rows of tenant {self.config_id!r} since {since or 'the start'}"
        body = self._request(
            "GET", "/api/sync/pull/audit-logs", params={"since": since, "configId": self.config_id}, what=what
        )
        if not isinstance(body, list):
            raise DataCollectError(f"{what}: unexpected answer shape from DataCollect at {self.url}")
        return [
            AuditEntry(
                action=str(row.get("action") or ""),
                entity_guid=row.get("entityGuid") or None,
                event_guid=row.get("eventGuid") or None,
                changes=changes if isinstance(changes := row.get("changes"), dict) else {},
                timestamp=row.get("timestamp"),
            )
            for row in body
            if isinstance(row, dict)
        ]


# -- reading: feeds --------------------------------------------------------------------------------------


class Feed(Protocol):
    """Where a mirror's refresh reads DataCollect's events from, oldest first."""

    description: str

    def batches(self, high_water: datetime | None, pending: set[str]) -> Iterator[list[FormSubmission]]:
        """Every event from ``high_water`` minus the feed's look-back window on, in batches.

        After a batch is yielded, every event with an earlier timestamp has been yielded, except late
        arrivals and the events of the milliseconds in ``pending``: milliseconds (ISO-ms strings) the feed
        could not page through. The feed adds to ``pending`` before it yields anything past such a
        millisecond, and removes a millisecond once the batch holding its events has been yielded; the mirror
        persists the set, so a crash never loses track of one.
        """
        ...


class ApiFeed:
    """``GET /api/sync/pull`` walked so that nothing is lost (see the module docstring)."""

    def __init__(
        self,
        client: DataCollectClient,
        *,
        lookback: timedelta,
        known: Callable[[Iterable[str]], set[str]],
    ) -> None:
        self.client = client
        self.lookback = lookback
        self._known = known
        self.description = f"{client.url} /api/sync/pull (tenant {client.config_id!r})"
        self.resume: datetime | None = None
        """Where an unfinished walk stopped (the mirror keeps it): the next walk goes on from there."""
        self.position: datetime | None = None
        """The ``since`` of the next page, as of the batch last yielded."""
        self.pulled_at = time.monotonic()
        """When the batch last yielded was read (recovered batches: when they were fetched)."""

    def batches(self, high_water: datetime | None, pending: set[str]) -> Iterator[list[FormSubmission]]:
        since = None if high_water is None else high_water - self.lookback - _US
        if self.resume is not None and (since is None or self.resume > since):
            since = self.resume  # an earlier walk stopped here: go on from where it got to
        self.position = since
        while True:
            page = self.client.pull(since_text(since))
            self.pulled_at = time.monotonic()
            if not page.events:
                break
            if page.next_cursor is None:
                yield page.events
                break  # not a full page: nothing after it
            stamps = [parse_timestamp(e.timestamp) for e in page.events]
            last = max(stamps)
            step = last - _US  # re-read the ties of the last timestamp rather than skip them (§2.1 b)
            if since is not None and step <= since:
                # A full page inside one millisecond: the API cannot page within it (§2.1 c). Remember it
                # and step past; its other events are recovered once the walk has caught up.
                pending.update(format_timestamp(stamp) for stamp in stamps)
                log.info(
                    "more than %d events stamped %s: recovering them later",
                    PULL_PAGE_SIZE,
                    format_timestamp(last),
                )
                step = last + _MS - _US
                if step <= since:
                    raise DataCollectError(
                        f"pull from tenant {self.client.config_id!r} at {self.client.url} does not move past "
                        f"{format_timestamp(last)} (the server keeps answering the same page); stopped "
                        "instead of looping"
                    )
            since = step
            self.position = step  # set before the yield: the mirror commits the page with where to go on
            yield page.events
        if pending:
            yield from self._recover(pending)

    def _recover(self, pending: set[str]) -> Iterator[list[FormSubmission]]:
        """The events of milliseconds that held more than a page, found without the pull cursor.

        Run once the walk has caught up, so every event not in the mirror by now is one the cursor could not
        reach. The audit feed (server time) names each applied event and its entity, from the look-back window
        before the earliest pending millisecond on; each unknown event is fetched through its entity's event
        list. Unknown events stamped outside the pending milliseconds (late arrivals older than the look-back,
        events applied while the walk ran) are kept too: they are real events the mirror lacks.
        """
        earliest = min(parse_timestamp(ms) for ms in pending)
        window = max(self.lookback, timedelta(minutes=5))  # phones' clocks run ahead of the server's too
        try:
            rows = self.client.audit_logs(since_text(earliest - window))
        except DataCollectError as exc:
            log.warning(
                "events stamped %s outnumber a pull page and the audit feed failed (%s): they stay pending "
                "and are retried on the next refresh (the datacollect database reader has no such limit)",
                ", ".join(sorted(pending)),
                exc,
            )
            return
        # Every row naming an event counts, cascade-delete-entity included: a delete-entity event leaves no
        # row of its own, only one per entity it deleted (members first, its own entity last). A group event
        # also names the members it created. So each event keeps every entity its rows name, last row first
        # (the event's own entity, in both cases), and they are tried in that order until it is found.
        candidates: dict[str, list[str]] = {}
        for row in rows:
            if row.action != "flag-potential-duplicate" and row.event_guid and row.entity_guid:
                named = candidates.setdefault(row.event_guid, [])
                if row.entity_guid in named:
                    named.remove(row.entity_guid)
                named.append(row.entity_guid)
        unknown = set(candidates) - self._known(list(candidates))
        found: dict[str, FormSubmission] = {}
        listed: dict[str, list[FormSubmission]] = {}
        for event_guid in sorted(unknown):
            for entity_guid in reversed(candidates[event_guid]):
                if event_guid in found:
                    break
                if entity_guid not in listed:
                    listed[entity_guid] = self.client.entity_events(entity_guid)
                for event in listed[entity_guid]:
                    if event.guid in unknown:
                        found[event.guid] = event
        log.info(
            "recovered %d events of %d crowded milliseconds through the audit feed", len(found), len(pending)
        )
        recovered = sorted(found.values(), key=lambda e: e.timestamp)
        self.pulled_at = time.monotonic()
        pending.clear()
        if recovered:
            yield recovered


# -- the mirror's own bookkeeping ------------------------------------------------------------------------


def kept_local_reason(changes: Mapping[str, Any], timestamp: str | None = None) -> str:
    """DataCollect's own reason for not applying an event, in words (its audit row's ``changes``)."""
    return (
        "stored in DataCollect but not applied: its conflict rule kept the entity's state (kept-local; "
        f"entity last updated {changes.get('localLastUpdated')}, version {changes.get('localVersion')}, "
        f"event stamped {changes.get('remoteTimestamp') or timestamp})"
    )


class MirrorLog(SqliteEventLog):
    """The mirror's event log: a SQLite log whose entities are the ones DataCollect holds.

    Two of DataCollect's rules depend on more than the events (§1.4): an event it stored but kept local is
    not applied at all, and an event applied under its conflict rule is applied on top of the entity's
    ``initial`` state, discarding the updates since. ``not_applied(guids)`` names the first kind with
    DataCollect's reason: they are stored (the log holds every stored event exactly once), recorded as event
    issues, and not folded. ``on_initial(guids)`` names the second kind: they are folded on top of the
    entity's ``initial`` state, which this log keeps as DataCollect does (``datacollect_initial``).
    """

    def __init__(
        self,
        path: str | Path,
        not_applied: Callable[[Iterable[str]], dict[str, str]],
        on_initial: Callable[[Iterable[str]], set[str]] | None = None,
    ) -> None:
        super().__init__(path)
        self._not_applied = not_applied
        self._on_initial = on_initial or (lambda _guids: set())
        with self._lock:
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS datacollect_initial (guid TEXT PRIMARY KEY, doc TEXT NOT NULL)"
            )

    def record_issues(self, issues: Sequence[EventIssue]) -> None:
        """Record issues found after an append (a read-back) against the events they name."""
        if not issues:
            return
        with self._append_transaction():
            seqs = self._event_seqs(issue.event_guid for issue in issues)
            for issue in issues:
                if issue.event_guid in seqs:
                    self._conn.execute(
                        _INSERT_ISSUE,
                        (issue.event_guid, issue.entity_guid, issue.reason, seqs[issue.event_guid]),
                    )

    def initial(self, guid: str) -> Entity | None:
        """The entity's ``initial`` state as DataCollect keeps it (None: never applied, or deleted)."""
        with self._lock:
            row = self._conn.execute("SELECT doc FROM datacollect_initial WHERE guid = ?", (guid,)).fetchone()
        return Entity.from_json(json.loads(row[0])) if row else None

    def _fold_into_entities(self, new: list[tuple[int, FormSubmission]], result: AppendResult) -> None:
        reasons = self._not_applied(event.guid for _seq, event in new)
        if reasons:
            skipped = [(seq, event) for seq, event in new if event.guid in reasons]
            new = [(seq, event) for seq, event in new if event.guid not in reasons]
            rows = []
            for seq, event in skipped:
                issue = EventIssue(event.guid, event.entity_guid, reasons[event.guid])
                result.issues.append(issue)
                rows.append((issue.event_guid, issue.entity_guid, issue.reason, seq))
            self._conn.executemany(_INSERT_ISSUE, rows)
        if not new:
            return
        on_initial = self._on_initial(event.guid for _seq, event in new)
        for seq, event in new:  # one at a time: each event sees, and moves, DataCollect's initial state
            self._fold_one(seq, event, event.guid in on_initial, result)

    def _initials(self, guids: Iterable[str]) -> dict[str, Entity]:
        found: dict[str, Entity] = {}
        for part in chunks(dict.fromkeys(guids), 500):
            marks = ",".join("?" * len(part))
            for guid, doc in self._conn.execute(
                f"SELECT guid, doc FROM datacollect_initial WHERE guid IN ({marks})", part
            ):
                found[guid] = Entity.from_json(json.loads(doc))
        return found

    def _fold_one(self, seq: int, event: FormSubmission, on_initial: bool, result: AppendResult) -> None:
        touched: set[str] = set()
        _referenced_guids(event, touched)
        rows = self._load_rows(touched)
        before = {guid: entity for guid, (_id, entity) in rows.items()}
        initials = self._initials(touched)
        target = event.entity_guid
        if on_initial and target in initials and target in rows:
            base = initials[target]
            self._update_entities(
                [
                    (
                        base.type,
                        base.entity_name,
                        base.parent_guid,
                        base.version,
                        codec.dumps(base.to_json()),
                        seq,
                        rows[target][0],
                    )
                ]
            )
        super()._fold_into_entities([(seq, event)], result)
        after = self._load_entities(touched)
        upserts: list[tuple[str, str]] = []
        deletes: list[tuple[str]] = []
        for guid in touched:
            now, prior = after.get(guid), before.get(guid)
            if now is None:
                if guid in initials:
                    deletes.append((guid,))
                continue
            if prior is not None and now.to_json() == prior.to_json():
                continue  # not changed by this event
            if guid == target and event.type in ("add-member", "remove-member"):
                initial = initials.get(guid) or now  # add/remove-member keep the old initial
            elif guid == target and now.type == "group":
                initial = now  # create-group/update-group save (group, group)
            else:
                initial = prior if prior is not None else now
            upserts.append((guid, codec.dumps(initial.to_json())))
        if upserts:
            self._conn.executemany(
                "INSERT INTO datacollect_initial (guid, doc) VALUES (?, ?) "
                "ON CONFLICT (guid) DO UPDATE SET doc = excluded.doc",
                upserts,
            )
        if deletes:
            self._conn.executemany("DELETE FROM datacollect_initial WHERE guid = ?", deletes)


class AuditTrace:
    """Which pulled events DataCollect stored but did not apply, from its server-time audit feed.

    Every event DataCollect applies leaves an audit row under its own action; one it kept local leaves only
    a ``conflict-resolution`` row with ``resolution: kept-local``. The feed is read from a mark (server time,
    minus a margin, kept in the mirror) and the kept-local guids are saved in the mirror as soon as they are
    seen, so a crash between reading the feed and committing the event loses nothing. The feed is read again
    only when a page holds an event with no audit row yet and was pulled after the last read.
    """

    MARGIN = timedelta(minutes=5)

    def __init__(self, client: DataCollectClient, meta: _MirrorMeta) -> None:
        self.client = client
        self.meta = meta
        self._traced: set[str] = set()
        self._loaded_at: float | None = None

    def load(self) -> None:
        mark = self.meta.get("audit_mark")
        since = since_text(parse_timestamp(mark) - self.MARGIN) if mark else ""
        rows = self.client.audit_logs(since)
        kept: dict[str, str] = {}
        on_initial: list[str] = []
        newest = parse_timestamp(mark) if mark else None
        for row in rows:
            if row.event_guid:
                self._traced.add(row.event_guid)
                if row.action == "conflict-resolution" and row.changes.get("resolution") == "applied-remote":
                    on_initial.append(row.event_guid)
            if (
                row.event_guid
                and row.action == "conflict-resolution"
                and row.changes.get("resolution") == "kept-local"
            ):
                kept[row.event_guid] = kept_local_reason(row.changes)
            if row.timestamp:
                try:
                    stamp = parse_timestamp(row.timestamp)
                except ValueError:
                    continue
                if newest is None or stamp > newest:
                    newest = stamp
        self.meta.add_not_applied(kept)
        self.meta.add_on_initial(on_initial)
        if newest is not None:
            self.meta.put("audit_mark", format_timestamp(newest))
        self._loaded_at = time.monotonic()

    def reset(self) -> None:
        """Forget the guids seen (called at the start of each refresh, so memory does not grow run by run)."""
        self._traced = set()
        self._loaded_at = None

    def check(self, events: Sequence[FormSubmission], pulled_at: float) -> None:
        """Make sure the kept-local events among ``events`` (pulled at ``pulled_at``) are on record.

        Only events new to the mirror matter (one it holds was settled when it was committed), so re-reading
        the look-back window costs no audit request."""
        untraced = [e.guid for e in events if e.guid not in self._traced]
        if not untraced or (self._loaded_at is not None and self._loaded_at >= pulled_at):
            return
        if set(untraced) - self.meta.known(untraced):
            self.load()


class _MirrorMeta:
    """The mirror file's own tables: the high-water mark, the tenant it belongs to, and coalesced guids.

    A second connection to the mirror's SQLite file (WAL mode), so the event log itself stays a plain
    :class:`SqliteEventLog`.
    """

    def __init__(self, path: str, url: str, config_id: str) -> None:
        self.path = path
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        try:
            self._conn.execute("PRAGMA busy_timeout = 30000")
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS datacollect_mirror (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
            )
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS datacollect_aliases "
                "(guid TEXT PRIMARY KEY, stored_as TEXT NOT NULL)"
            )
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS datacollect_not_applied "
                "(guid TEXT PRIMARY KEY, reason TEXT NOT NULL)"
            )
            self._conn.execute("CREATE TABLE IF NOT EXISTS datacollect_on_initial (guid TEXT PRIMARY KEY)")
            tenant = self.get("config_id")
            if tenant is None:
                self.put("config_id", config_id)
                self.put("url", url)
            elif tenant != config_id:
                raise DataCollectError(
                    f"mirror {path} holds DataCollect tenant {tenant!r}, not {config_id!r}: "
                    "give each tenant its own mirror file"
                )
        except BaseException:
            self._conn.close()
            raise

    def get(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM datacollect_mirror WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def put(self, key: str, value: str) -> None:
        self._conn.execute(
            "INSERT INTO datacollect_mirror (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def high_water(self) -> datetime | None:
        value = self.get("high_water")
        return parse_timestamp(value) if value else None

    def pending(self) -> set[str]:
        return set(json.loads(self.get("pending_milliseconds") or "[]"))

    def set_pending(self, pending: set[str]) -> None:
        self.put("pending_milliseconds", json.dumps(sorted(pending)))

    def known(self, guids: Iterable[str]) -> set[str]:
        """Which guids the mirror holds, as events or folded into a coalesced event."""
        batch = list(dict.fromkeys(guids))
        found: set[str] = set()
        for start in range(0, len(batch), 500):
            part = batch[start : start + 500]
            marks = ",".join("?" * len(part))
            for table in ("events", "datacollect_aliases"):
                found.update(
                    row[0]
                    for row in self._conn.execute(f"SELECT guid FROM {table} WHERE guid IN ({marks})", part)
                )
        return found

    def add_aliases(self, aliases: Mapping[str, str]) -> None:
        if aliases:
            self._conn.executemany(
                "INSERT OR IGNORE INTO datacollect_aliases (guid, stored_as) VALUES (?, ?)",
                list(aliases.items()),
            )

    def add_not_applied(self, reasons: Mapping[str, str]) -> None:
        if reasons:
            self._conn.executemany(
                "INSERT OR REPLACE INTO datacollect_not_applied (guid, reason) VALUES (?, ?)",
                list(reasons.items()),
            )

    def add_on_initial(self, guids: Iterable[str]) -> None:
        rows = [(g,) for g in guids]
        if rows:
            self._conn.executemany("INSERT OR IGNORE INTO datacollect_on_initial (guid) VALUES (?)", rows)

    def on_initial(self, guids: Iterable[str]) -> set[str]:
        """The events among ``guids`` DataCollect applied on top of the entity's ``initial`` state."""
        found: set[str] = set()
        for part in chunks(dict.fromkeys(guids), 500):
            marks = ",".join("?" * len(part))
            found.update(
                row[0]
                for row in self._conn.execute(
                    f"SELECT guid FROM datacollect_on_initial WHERE guid IN ({marks})", part
                )
            )
        return found

    def not_applied(self, guids: Iterable[str]) -> dict[str, str]:
        """The events among ``guids`` DataCollect stored without applying, with its reason."""
        found: dict[str, str] = {}
        for part in chunks(dict.fromkeys(guids), 500):
            marks = ",".join("?" * len(part))
            found.update(
                self._conn.execute(
                    f"SELECT guid, reason FROM datacollect_not_applied WHERE guid IN ({marks})", part
                ).fetchall()
            )
        return found

    def close(self) -> None:
        self._conn.close()


def _resent(event: FormSubmission, changes: Mapping[str, Any]) -> FormSubmission | None:
    """A copy of ``event`` that DataCollect's conflict rule will apply: stamped just after the entity's last
    apply by DataCollect's clock (the kept-local row says when), under a guid derived from the original, so
    re-running the append re-sends nothing twice. ``None`` when the row does not say when."""
    try:
        local = parse_timestamp(str(changes.get("localLastUpdated") or ""))
    except ValueError:
        return None
    stamp = max(event.timestamp, format_timestamp(local + _MS))
    return event.model_copy(update={"guid": str(uuid.uuid5(_RESENT_NS, event.guid)), "timestamp": stamp})


# -- writing: one update per entity per push -------------------------------------------------------------


@dataclass(slots=True)
class PlannedEvent:
    """An event to push, with the guids of earlier events of the same entity merged into it."""

    event: FormSubmission
    absorbed: list[str] = field(default_factory=list)


def _mergeable(first: FormSubmission, later: FormSubmission) -> bool:
    kind = _MERGEABLE.get(first.type)
    if kind is None or kind != _MERGEABLE.get(later.type) or first.user_id != later.user_id:
        return False
    if later.type.startswith("create-") and not first.type.startswith("create-"):
        return False  # keep a re-create as its own event
    if kind == "group":
        for event in (first, later):
            members = event.data.get("members")
            if members is not None and not isinstance(members, list):
                return False
    return True


def _merge(first: FormSubmission, later: FormSubmission) -> FormSubmission:
    """One event that does what ``first`` then ``later`` do: DataCollect's upsert is a shallow merge."""
    data = {**first.data, **later.data}
    if "members" in first.data or "members" in later.data:
        merged: dict[Any, Any] = {}
        for member in [*(first.data.get("members") or []), *(later.data.get("members") or [])]:
            key = member.get("guid") if isinstance(member, Mapping) and member.get("guid") else object()
            previous = merged.get(key)
            merged[key] = {**previous, **member} if isinstance(previous, Mapping) else member
        data["members"] = list(merged.values())
    return FormSubmission(
        guid=later.guid,
        entity_guid=later.entity_guid,
        type=first.type if first.type.startswith("create-") else later.type,
        data=data,
        timestamp=max(first.timestamp, later.timestamp),  # same-format UTC strings order as times
        user_id=later.user_id,
        sync_level=later.sync_level,
    )


def plan_pushes(events: Iterable[FormSubmission], batch: int) -> list[list[PlannedEvent]]:
    """Split events into pushes that DataCollect applies exactly as the log would.

    Within one push the events are pairwise independent (no two touch the same entity, member or pair), so
    the server's re-sorting by timestamp cannot change the outcome and its conflict rule never sees a second
    event of an entity; a later event of an entity already in the push is merged into it when the merge is
    exact, and otherwise starts the next push. Pushes keep the caller's order.
    """
    if batch < 1:
        raise ValueError("batch must be at least 1")
    pushes: list[list[PlannedEvent]] = []
    current: list[PlannedEvent] = []
    owner: dict[str, int] = {}  # a guid referenced in the current push -> the index of the event that does

    def flush() -> None:
        nonlocal current
        if current:
            pushes.append(current)
        current = []
        owner.clear()

    for event in events:
        refs: set[str] = set()
        _referenced_guids(event, refs)
        hits = {owner[g] for g in refs if g in owner}
        if len(hits) == 1:
            index = next(iter(hits))
            planned = current[index]
            if planned.event.entity_guid == event.entity_guid and _mergeable(planned.event, event):
                current[index] = PlannedEvent(
                    _merge(planned.event, event), [*planned.absorbed, planned.event.guid]
                )
                for guid in refs:
                    owner[guid] = index
                continue
        if hits or len(current) >= batch:
            flush()
        for guid in refs:
            owner[guid] = len(current)
        current.append(PlannedEvent(event))
    flush()
    return pushes


# -- the backend -----------------------------------------------------------------------------------------


@dataclass(slots=True)
class RefreshReport:
    """What one refresh read: events seen (re-reads included), new to the mirror, and the marks."""

    seen: int = 0
    new: int = 0
    batches: int = 0
    high_water_before: str | None = None
    high_water_after: str | None = None
    pending: list[str] = field(default_factory=list)
    """Milliseconds whose events could not all be read yet (retried on the next refresh)."""
    issues: list[EventIssue] = field(default_factory=list)


class DataCollectEventLog:
    """An :class:`~connector_core.eventlog.base.EventLog` whose source of truth is a DataCollect tenant.

    See the module docstring. Cursors, counts and entities are the mirror's; ``append`` writes through to
    DataCollect and then to the mirror; reading past the mirror's head refreshes it first (at most once per
    ``refresh_interval`` seconds; ``None`` refreshes only when :meth:`refresh` is called).
    """

    def __init__(
        self,
        client: DataCollectClient,
        mirror: str | Path,
        *,
        lookback_seconds: float = DEFAULT_LOOKBACK_SECONDS,
        refresh_interval: float | None = DEFAULT_REFRESH_INTERVAL,
        push_batch: int = DEFAULT_PUSH_BATCH,
        feed: Feed | None = None,
        check_applied: bool = True,
    ) -> None:
        if lookback_seconds < 0:
            raise ValueError("lookback_seconds cannot be negative")
        if push_batch < 1:
            raise ValueError("push_batch must be at least 1")
        self.client = client
        self.lookback = timedelta(seconds=lookback_seconds)
        self.refresh_interval = refresh_interval
        self.push_batch = push_batch
        self.check_applied = check_applied
        self._lock = threading.RLock()
        self._last_refresh: float | None = None
        self._on_close: list[Callable[[], object]] = []
        self.local = MirrorLog(
            mirror, lambda guids: self._meta.not_applied(guids), lambda guids: self._meta.on_initial(guids)
        )
        try:
            self._meta = _MirrorMeta(self.local.path, client.url, client.config_id)
        except BaseException:
            self.local.close()
            raise
        self._trace = AuditTrace(client, self._meta) if check_applied else None
        self.feed: Feed = feed or ApiFeed(client, lookback=self.lookback, known=self._meta.known)

    def __repr__(self) -> str:
        return f"DataCollectEventLog({self.client!r}, mirror={self.local.path!r})"

    def on_close(self, callback: Callable[[], object]) -> None:
        """Run ``callback`` after :meth:`close` (e.g. remove a temporary mirror)."""
        self._on_close.append(callback)

    def close(self) -> None:
        with self._lock:
            self.local.close()
            self._meta.close()
            self.client.close()
            closer = getattr(self.feed, "close", None)
            if callable(closer):
                closer()
            callbacks, self._on_close = self._on_close, []
            for callback in callbacks:
                callback()

    def __enter__(self) -> DataCollectEventLog:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- refresh -----------------------------------------------------------------------------------

    def refresh(self) -> RefreshReport:
        """Bring the mirror up to date with DataCollect (see the module docstring)."""
        with self._lock:
            high_water = self._meta.high_water()
            pending = self._meta.pending()
            report = RefreshReport(high_water_before=format_timestamp(high_water) if high_water else None)
            buffer: list[FormSubmission] = []
            walk = self.feed if isinstance(self.feed, ApiFeed) else None
            if walk is not None:
                resume = self._meta.get("resume_since")
                walk.resume = datetime.fromisoformat(resume) if resume else None

            def flush() -> None:
                # Order matters for a crash at any point: a pending millisecond is recorded before the
                # high-water mark can pass it, and forgotten only after its events are committed.
                nonlocal high_water
                self._meta.set_pending(self._meta.pending() | pending)
                if buffer:
                    appended = self.local.append(buffer)
                    report.new += appended.new
                    report.issues.extend(appended.issues)
                    newest = max(parse_timestamp(e.timestamp) for e in buffer)
                    if high_water is None or newest > high_water:
                        high_water = newest
                        self._meta.put("high_water", format_timestamp(newest))
                    buffer.clear()
                self._meta.set_pending(pending)
                if walk is not None and walk.position is not None:
                    self._meta.put("resume_since", since_text(walk.position))

            # Every batch is committed as it arrives: a refresh that fails half way keeps what it read, the
            # next one resumes from there, and the recovery of crowded milliseconds sees every event the
            # walk already read as known (it never fetches those again).
            trace = self._trace if walk is not None else None
            if trace is not None:
                trace.reset()
            other = getattr(self.feed, "resolutions", None) if self.check_applied and walk is None else None
            for batch in self.feed.batches(high_water, pending):
                if trace is not None:
                    trace.check(batch, walk.pulled_at if walk is not None else time.monotonic())
                elif callable(other):
                    kept, on_initial = other(batch)
                    self._meta.add_not_applied(kept)
                    self._meta.add_on_initial(on_initial)
                report.batches += 1
                report.seen += len(batch)
                buffer.extend(batch)
                flush()
            flush()
            self._meta.put("resume_since", "")  # the walk finished: the next one starts at the look-back
            self._meta.put("last_refresh", format_timestamp(utc_now()))
            self._last_refresh = time.monotonic()
            report.high_water_after = format_timestamp(high_water) if high_water else None
            report.pending = sorted(pending)
            log.info(
                "refreshed mirror of %s: %d events read, %d new, high water %s",
                self.feed.description,
                report.seen,
                report.new,
                report.high_water_after,
            )
            return report

    def _refresh_due(self) -> bool:
        if self.refresh_interval is None:
            return False
        return self._last_refresh is None or time.monotonic() - self._last_refresh >= self.refresh_interval

    # -- append (push) -----------------------------------------------------------------------------

    def append(self, events: Iterable[FormSubmission]) -> AppendResult:
        """Push ``events`` to DataCollect (coalesced and verified), then append them to the mirror.

        Not atomic across the network: a push DataCollect stored stays stored even if a later one fails.
        What is guaranteed: the mirror holds only what DataCollect stored, an event DataCollect did not store
        raises :class:`DataCollectPushError`, and appending the same events again stores nothing twice.
        """
        result = AppendResult()
        with self._lock:
            for chunk in chunks(events, _APPEND_CHUNK):
                self._append_chunk(chunk, result)
        return result

    def _append_chunk(self, chunk: list[FormSubmission], result: AppendResult) -> None:
        unique = result.unique(chunk)
        known = self._meta.known(unique)
        result.duplicates += len(known)
        todo = [event for guid, event in unique.items() if guid not in known]
        for push in plan_pushes(todo, self.push_batch):
            self._push(push, result)

    def _push(self, push: list[PlannedEvent], result: AppendResult) -> None:
        started = utc_now()
        events = [self._as_meant(planned.event) for planned in push]
        stored = self._push_and_read(events)
        copies = [stored[e.guid] for e in events if e.guid in stored]
        repaired: dict[str, str] = {}  # an event DataCollect kept local -> the re-sent copy it applied
        followups: list[FormSubmission] = []
        if self.check_applied and copies:
            kept = self._kept_local(copies, started)
            resend = {g: again for g, changes in kept.items() if (again := _resent(stored[g], changes))}
            kept_again: dict[str, dict[str, Any]] = {}
            if resend:
                answered = self._push_and_read(list(resend.values()))
                followups = [answered[e.guid] for e in resend.values() if e.guid in answered]
                kept_again = self._kept_local(followups, started)
                repaired = {
                    g: e.guid for g, e in resend.items() if e.guid in answered and e.guid not in kept_again
                }
            reasons = {
                g: kept_local_reason(changes)
                + (
                    f"; re-sent as {repaired[g]} stamped after it, which DataCollect applied"
                    if g in repaired
                    else ""
                )
                for g, changes in kept.items()
            }
            reasons.update({g: kept_local_reason(changes) for g, changes in kept_again.items()})
            # recorded before the copies reach the mirror, so the mirror keeps them unfolded, as an issue
            self._meta.add_not_applied(reasons)
        appended = self.local.append([*copies, *followups])
        self._meta.add_aliases(
            {absorbed: p.event.guid for p in push if p.event.guid in stored for absorbed in p.absorbed}
        )
        new = set(appended.new_guids)
        for planned in push:
            if planned.event.guid in new:
                result.new_guids.extend([*planned.absorbed, planned.event.guid])
        resent = {e.guid for e in followups}
        unsettled = [
            i for i in appended.issues if i.event_guid not in repaired and i.event_guid not in resent
        ]
        result.issues.extend(unsettled)
        for issue in unsettled:
            log.warning("DataCollect did not apply event %s (entity %s)", issue.event_guid, issue.entity_guid)
        if self.check_applied and copies:
            result.issues.extend(self._read_back(copies, {i.event_guid for i in unsettled}))
        missing = [e.guid for e in events if e.guid not in stored]
        if missing:
            for guid in missing:
                log.error(
                    "event %s: DataCollect answered success but did not store it (a guid already used in any "
                    "tenant, or an invalid event)",
                    guid,
                )
            shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
            raise DataCollectPushError(
                f"DataCollect tenant {self.client.config_id!r} at {self.client.url} answered success but did "
                f"not store {len(missing)} of {len(events)} pushed events: {shown} (it swallows every "
                "error: an event guid must be unused in every tenant of the server, since its key is global; "
                "check the events are valid and the server's log)",
                missing,
            )

    def _push_and_read(self, events: list[FormSubmission]) -> dict[str, FormSubmission]:
        """Push ``events`` and read back, by guid, those DataCollect stored (as it stored them)."""
        self.client.push(events)
        stored: dict[str, FormSubmission] = {}
        wanted = {e.guid for e in events}
        for entity_guid in dict.fromkeys(e.entity_guid for e in events):
            for event in self.client.entity_events(entity_guid):
                if event.guid in wanted:
                    stored[event.guid] = event
        return stored

    def _as_meant(self, event: FormSubmission) -> FormSubmission:
        """The event DataCollect must receive to end in the state the mirror folds from ``event``.

        DataCollect applies a remote event to an entity with local changes on top of its ``initial`` state,
        discarding the updates since (§1.4): an update therefore carries the whole current form, not only
        the changed fields. And it skips an event stamped before its own last apply (server clock), so an
        update of an existing entity is stamped no earlier than now.
        """
        if event.type not in ("update-individual", "create-individual", "update-group", "create-group"):
            return event
        current = self.local.get_entity(event.entity_guid)
        if current is None:
            return event
        data = {**current.data, **event.data}
        if event.type.endswith("-group"):
            data.pop("members", None)
            if "members" in event.data:
                data["members"] = event.data["members"]
        stamp = max(event.timestamp, format_timestamp(utc_now()))
        if data == event.data and stamp == event.timestamp:
            return event
        return event.model_copy(update={"data": data, "timestamp": stamp})

    def _read_back(self, copies: list[FormSubmission], reported: set[str]) -> list[EventIssue]:
        """Compare the entities DataCollect holds after a push with the mirror's; a difference is an issue.

        DataCollect lists its entities newest first (``GET /api/entities``, at most 1000), so the ones a push
        just changed are at the top unless other writers were busier; one not listed is not checked.
        """
        last: dict[str, FormSubmission] = {}
        for event in copies:
            if event.guid not in reported and event.type != "delete-entity":
                last[event.entity_guid] = event
        if not last:
            return []
        try:
            listed = self.client.entities(limit=min(1000, 2 * len(last) + 20))
        except DataCollectError as exc:
            log.warning("could not read back the entities DataCollect holds after a push: %s", exc)
            return []
        theirs = {str(row.get("guid")): row.get("data") for row in listed}
        ours = self.local.get_entities(last)
        issues = []
        for guid, event in last.items():
            data = theirs.get(guid)
            mine = ours.get(guid)
            if not isinstance(data, dict) or mine is None or data == mine.data:
                continue
            fields = sorted(k for k in set(data) | set(mine.data) if data.get(k) != mine.data.get(k))
            issue = EventIssue(
                event.guid,
                guid,
                "DataCollect holds another state than the mirror after this event: fields "
                + ", ".join(fields[:10])
                + (f" and {len(fields) - 10} more" if len(fields) > 10 else "")
                + " differ (run dcsync log verify)",
            )
            log.warning("%s", issue)
            issues.append(issue)
        self.local.record_issues(issues)
        return issues

    def _kept_local(self, copies: list[FormSubmission], started: datetime) -> dict[str, dict[str, Any]]:
        """Events DataCollect stored but did not apply because its conflict rule kept its own state: their
        audit rows' ``changes`` (which say when DataCollect last applied the entity, by its clock)."""
        try:
            rows = self.client.audit_logs(since_text(started - timedelta(minutes=5)))
        except DataCollectError as exc:
            log.warning("could not check that DataCollect applied the pushed events: %s", exc)
            return {}
        ours = {e.guid for e in copies}
        resolved = [r for r in rows if r.event_guid in ours and r.action == "conflict-resolution"]
        # applied under the conflict rule: on top of initial (recorded before the mirror folds the event)
        self._meta.add_on_initial(
            r.event_guid for r in resolved if r.event_guid and r.changes.get("resolution") == "applied-remote"
        )
        return {
            r.event_guid: r.changes
            for r in resolved
            if r.event_guid and r.changes.get("resolution") == "kept-local"
        }

    # -- read (the mirror) -------------------------------------------------------------------------

    def read(self, after: str | None, limit: int) -> EventPage:
        return self._fresh(self.local.read, after, limit)

    def read_touches(self, after: str | None, limit: int, until: str | None = None) -> TouchPage:
        return self._fresh(lambda a, n: self.local.read_touches(a, n, until), after, limit)

    def _fresh(self, read: Callable[[str | None, int], _Page], after: str | None, limit: int) -> _Page:
        """A page of the mirror; one that reaches its head first pulls what the tenant has since."""
        page = read(after, limit)
        if page.at_end and self._refresh_due():
            self.refresh()
            page = read(after, limit)
        return page

    def iter_events(self, after: str | None = None, page_size: int = 1000) -> Iterator[FormSubmission]:
        return events_after(self, after, page_size)

    def head(self) -> str | None:
        return self.local.head()

    def count(self, after: str | None = None) -> int:
        return self.local.count(after)

    def get_entity(self, guid: str) -> Entity | None:
        return self.local.get_entity(guid)

    def get_entities(self, guids: Iterable[str]) -> dict[str, Entity]:
        return self.local.get_entities(guids)

    def children_of(self, guid: str) -> list[Entity]:
        return self.local.children_of(guid)

    def iter_entities(self, page_size: int = 1000) -> Iterator[Entity]:
        return self.local.iter_entities(page_size)

    def iter_issues(self, after: str | None = None) -> Iterator[EventIssue]:
        return self.local.iter_issues(after)

    def get_events(self, guids: Iterable[str]) -> dict[str, FormSubmission]:
        return self.local.get_events(guids)

    def stats(self) -> dict[str, Any]:
        stats = self.local.stats()
        stats["datacollect"] = {
            "url": self.client.url,
            "config_id": self.client.config_id,
            "mirror": self.local.path,
            "high_water": self._meta.get("high_water") or "-",
            "pending_milliseconds": len(self._meta.pending()),
            "last_refresh": self._meta.get("last_refresh") or "never",
        }
        return stats

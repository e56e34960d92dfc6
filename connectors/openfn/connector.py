"""The OpenFn connector: push to a Lightning webhook trigger, pull from a Lightning collection.

Push. The engine's batch is packed into bodies bounded by record count and bytes (``webhook.py``) and each
body is POSTed to ``/i/<trigger>``. A body is delivered when Lightning answers 2xx without ``error``; a
``too_many_runs`` answer, 429/402, 5xx, a timeout or a reset leave it undelivered and the push stops there
(the engine retries the rest with backoff, honouring ``Retry-After`` when the first body failed); a 413
splits the body and sends the pieces; a 400/422 halves it until the record at fault is alone (only that one
is dead-lettered); a 401/403/404/415 refuses the trigger itself. Webhooks assign no record ids, so a
record's external id is its ref, and :meth:`lookup` has nothing to query: idempotency is the body's
``batch_id`` (also in the ``x-batch-id`` header), identical whenever the same records are re-sent, which
the OpenFn job uses to drop a batch it has already processed.

Pull. Items of one collection become remote records (``collections.py``); the cursor is Lightning's cursor
plus an ``updated_after`` boundary and the item states already delivered at and after it.

Wrong settings should stop a run before any record moves, not dead-letter every batch: unless
``preflight`` is off, opening the connector probes the trigger with Lightning's free ``GET`` (it is
authenticated like a POST and creates no work order) and the collection with a one-item read, and a
refusal raises :class:`TriggerRefused` (an :class:`AuthenticationError`: the run stops, nothing is
dead-lettered) naming the trigger or collection, never the secret. A refusal in the middle of a run does
the same through :meth:`push`.
"""

from __future__ import annotations

import base64
import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from connector_core.connector import (
    AuthenticationError,
    Capability,
    CheckResult,
    Connector,
    ConnectorError,
    PermanentError,
    PullPage,
    PushRecord,
    PushResult,
    TransientError,
)
from connector_core.events import now_timestamp
from connector_core.http import never_sent, released
from connectors.openfn import webhook
from connectors.openfn.collections import PullState, check_page, key_matcher, to_record
from connectors.openfn.config import OpenFnConfig
from connectors.openfn.webhook import Answer, Body, BodyShape, Unit, Verdict

log = logging.getLogger("dcsync.openfn")

FINAL_WORK_ORDER_STATES = frozenset(
    {"rejected", "success", "failed", "crashed", "cancelled", "killed", "exception", "lost"}
)


@dataclass(frozen=True, slots=True)
class WorkOrderOutcome:
    """What became of one delivered body, as far as this connector saw (``state`` None: never asked)."""

    batch_id: str
    work_order_id: str | None
    run_id: str | None
    state: str | None


class Unusable(AuthenticationError):
    """Nothing can be sent with these settings, whatever the records.

    No record is at fault, so, like an authentication failure (which most of these are), the run stops
    with nothing dead-lettered and the checkpoint where it was.
    """


class TriggerRefused(Unusable):
    """The trigger refuses every request: wrong or missing credentials (401/404), a disabled trigger (403)
    or a proxy mangling requests (415). The message names the trigger path, never the secret."""


class OpenFnConnector(Connector):
    type_name = "openfn"
    config_model = OpenFnConfig
    capabilities = frozenset({Capability.PUSH, Capability.PULL})
    description = "OpenFn Lightning: webhook trigger push, Collections pull"
    max_in_flight = 1
    """One push at a time: a re-sent body keeps its ``batch_id`` only if it is packed again under the same
    body cap, and a concurrent 413 elsewhere could lower the cap in between."""

    config: OpenFnConfig

    def __init__(self, name: str, config: OpenFnConfig, client: httpx.Client | None = None):
        super().__init__(name, config)
        self._client = client or httpx.Client(
            base_url=config.url,
            timeout=httpx.Timeout(config.timeout, connect=config.connect_timeout),
            headers={"user-agent": "dcsync-openfn"},
        )
        self._shape = BodyShape(name, "entities" if config.payload_mode == "datacollect" else "records")
        self._body_limit = config.max_body_bytes
        self._matcher = key_matcher(config.key_pattern)
        self.work_orders: list[WorkOrderOutcome] = []
        """Every body this connector delivered, with its work order's final state when polled."""
        if config.preflight:
            try:
                self._preflight()
            except BaseException:
                self._client.close()
                raise

    # -- plumbing ----------------------------------------------------------------------------------
    def _webhook_headers(self) -> dict[str, str]:
        headers = {"content-type": "application/json"}
        if self.config.api_key is not None:
            headers["x-api-key"] = self.config.api_key.get_secret_value()
        if self.config.username is not None and self.config.password is not None:
            pair = f"{self.config.username}:{self.config.password.get_secret_value()}".encode()
            headers["authorization"] = "Basic " + base64.b64encode(pair).decode()
        return headers

    def _bearer(self) -> dict[str, str]:
        token = self.config.token.get_secret_value() if self.config.token else ""
        return {"authorization": f"Bearer {token}"}

    def _send(self, method: str, path: str, what: str, **kwargs: Any) -> httpx.Response:
        """One request; a transport failure becomes a :class:`TransientError` naming ``what``."""
        try:
            return released(self._client.request(method, path, **kwargs))
        except httpx.TimeoutException as exc:
            raise TransientError(
                f"{what}: no answer within {self.config.timeout:g}s", unsent=never_sent(exc)
            ) from None
        except httpx.TransportError as exc:
            raise TransientError(f"{what}: {type(exc).__name__}: {exc}", unsent=never_sent(exc)) from None

    def _probe_trigger(self) -> Answer:
        response = self._send(
            "GET",
            self.config.trigger_path,
            f"probing {self.config.trigger_path}",
            headers=self._webhook_headers(),
        )
        return webhook.classify(response, self.config.trigger_path)

    def _probe_collection(self) -> None:
        self._list({"limit": 1}, what=f"probing collection {self.config.collection!r}")

    def _preflight(self) -> None:
        """Refusals of the trigger or the collection stop here; anything transient is left to the run."""
        if self.config.trigger:
            try:
                answer = self._probe_trigger()
            except TransientError as exc:
                log.info("%s: preflight of the trigger skipped: %s", self.name, exc.message)
            else:
                if answer.verdict is Verdict.REFUSED:
                    raise TriggerRefused(f"{self.name}: {answer.message}")
        if self.config.collection:
            try:
                self._probe_collection()
            except TransientError as exc:
                log.info("%s: preflight of the collection skipped: %s", self.name, exc.message)
            except PermanentError as exc:  # printed on its own by the CLI: say which connector
                raise type(exc)(f"{self.name}: {exc.message}") from None

    def check(self) -> CheckResult:
        details: dict[str, Any] = {}
        try:
            if self.config.trigger:
                answer = self._probe_trigger()
                if answer.verdict is not Verdict.DELIVERED:
                    return CheckResult(False, answer.message or f"HTTP {answer.status}", details)
                details["trigger"] = self.config.trigger_path
            if self.config.collection:
                self._probe_collection()
                details["collection"] = self.config.collection
        except ConnectorError as exc:
            return CheckResult(False, exc.message, details)
        parts = [f"trigger {self.config.trigger_path} accepts the credentials"] if self.config.trigger else []
        if self.config.collection:
            parts.append(f"collection {self.config.collection!r} is readable")
        return CheckResult(True, " and ".join(parts), details)

    # -- push --------------------------------------------------------------------------------------
    def _units(self, batch: Sequence[PushRecord]) -> list[Unit]:
        timestamp = now_timestamp()
        units = []
        for index, record in enumerate(batch):
            if self.config.payload_mode == "datacollect":
                item = webhook.render_event(self.name, record, timestamp)
                unit_id = item["guid"]
            else:
                item = webhook.render_record(self.name, record)
                unit_id = item["id"]
            units.append(Unit(index, record, unit_id, webhook.encode(item)))
        return units

    def push(self, batch: Sequence[PushRecord]) -> list[PushResult]:
        if not batch:
            return []
        if not self.config.trigger:
            raise Unusable("no trigger is set, so nothing can be pushed (set push: false)")
        results: dict[int, PushResult] = {}
        units = []
        for unit in self._units(batch):
            size = self._shape.size_of([unit])
            if size > self.config.max_body_bytes:
                results[unit.index] = PushResult.rejected(
                    unit.record.ref,
                    f"the record alone makes a {size}-byte body, "
                    f"over max_body_bytes ({self.config.max_body_bytes})",
                )
            else:
                units.append(unit)
        queue: deque[Body] = deque(self._shape.pack(units, self.config.max_batch_records, self._body_limit))
        stop: ConnectorError | None = None
        delivered: list[tuple[Body, Answer]] = []
        while queue:
            body = queue.popleft()
            try:
                answer = self._post(body)
            except TransientError as exc:
                stop = TransientError(
                    f"{exc.message} (batch {body.batch_id} may have arrived; "
                    "it is re-sent with the same batch_id)"
                )
                queue.appendleft(body)
                break
            if answer.verdict is Verdict.DELIVERED:
                delivered.append((body, answer))
                for unit in body.units:
                    results[unit.index] = PushResult.delivered(unit.record.ref, unit.record.ref)
            elif answer.verdict is Verdict.SPLIT:
                if len(body.units) == 1:
                    unit = body.units[0]
                    results[unit.index] = PushResult.rejected(
                        unit.record.ref, f"{answer.message} even with this record alone ({body.size} bytes)"
                    )
                    continue
                # Learn the cap and re-pack everything not yet sent under it, so every body that leaves is
                # a greedy pack: the engine's retry of the same records then rebuilds the same bodies.
                self._body_limit = min(self._body_limit, body.size // 2)
                rest = [u for b in (body, *queue) for u in b.units]
                queue = deque(self._shape.pack(rest, self.config.max_batch_records, self._body_limit))
                log.info(
                    "%s: HTTP 413 for a %d-byte body; bodies now stay under %d bytes",
                    self.name,
                    body.size,
                    self._body_limit,
                )
            elif answer.verdict is Verdict.REJECTED:
                if len(body.units) == 1:
                    results[body.units[0].index] = PushResult.rejected(
                        body.units[0].record.ref, answer.message
                    )
                    continue
                # Lightning judges a body, not a record: halve it until the record at fault is alone, so one
                # bad record (a NUL in a text, say) is dead-lettered without the others.
                half = len(body.units) // 2
                queue.extendleft([self._shape.build(body.units[half:]), self._shape.build(body.units[:half])])
            elif answer.verdict is Verdict.RETRY:
                stop = TransientError(answer.message, retry_after=answer.retry_after)
                queue.appendleft(body)
                break
            else:
                stop = TriggerRefused(answer.message)
                queue.appendleft(body)
                break
        if delivered:
            self._record_work_orders(delivered)
        if stop is not None:
            if not results:
                raise stop  # nothing judged: the whole batch failed (Retry-After and refusals included)
            # Keep what was delivered and leave the rest pending: a refusal is not the records' fault, so
            # they are not dead-lettered; the engine asks again, and the refusal then stops the run.
            for body in queue:
                for unit in body.units:
                    results[unit.index] = PushResult.rejected(unit.record.ref, stop.message, transient=True)
        return [results[i] for i in range(len(batch))]

    def _post(self, body: Body) -> Answer:
        headers = {**self._webhook_headers(), "x-batch-id": body.batch_id}
        response = self._send(
            "POST",
            self.config.trigger_path,
            f"POST {self.config.trigger_path} (batch {body.batch_id}, {len(body.units)} records)",
            content=body.content,
            headers=headers,
        )
        answer = webhook.classify(response, self.config.trigger_path)
        log.debug(
            "%s: batch %s (%d records, %d bytes): %s %s",
            self.name,
            body.batch_id,
            len(body.units),
            body.size,
            answer.status,
            answer.verdict,
        )
        return answer

    # -- work orders -------------------------------------------------------------------------------
    def _record_work_orders(self, delivered: list[tuple[Body, Answer]]) -> None:
        outcomes = [WorkOrderOutcome(b.batch_id, a.work_order_id, a.run_id, a.state) for b, a in delivered]
        if self.config.poll_work_orders:
            outcomes = self._poll(outcomes)
        self.work_orders.extend(outcomes)

    def _poll(self, outcomes: list[WorkOrderOutcome]) -> list[WorkOrderOutcome]:
        """Ask ``/api/work_orders/:id`` until each is final or ``poll_timeout`` passes; only log the result.

        A job that fails does not make the delivery undone: the batch is in Lightning, and re-sending it
        would not fix the job. The state is logged (a warning unless ``success``) and kept on
        :attr:`work_orders`.
        """
        states: dict[str, str | None] = {o.work_order_id: o.state for o in outcomes if o.work_order_id}
        pending = [w for w, s in states.items() if s not in FINAL_WORK_ORDER_STATES]
        deadline = time.monotonic() + self.config.poll_timeout
        delay = 0.1
        while pending:
            still: list[str] = []
            for work_order in pending:
                try:
                    response = self._send(
                        "GET",
                        f"/api/work_orders/{work_order}",
                        f"polling work order {work_order}",
                        headers=self._bearer(),
                    )
                except TransientError:
                    still.append(work_order)
                    continue
                if response.status_code != 200:
                    log.warning(
                        "%s: work order %s cannot be polled (HTTP %d); polling stopped",
                        self.name,
                        work_order,
                        response.status_code,
                    )
                    return self._polled(outcomes, states)
                state = ((response.json().get("data") or {}).get("attributes") or {}).get("state")
                states[work_order] = state
                if state not in FINAL_WORK_ORDER_STATES:
                    still.append(work_order)
            pending = still
            if not pending or time.monotonic() + delay > deadline:
                break
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
        return self._polled(outcomes, states)

    def _polled(
        self, outcomes: list[WorkOrderOutcome], states: dict[str, str | None]
    ) -> list[WorkOrderOutcome]:
        final = []
        for outcome in outcomes:
            state = states.get(outcome.work_order_id or "", outcome.state)
            final.append(WorkOrderOutcome(outcome.batch_id, outcome.work_order_id, outcome.run_id, state))
            if state == "success":
                log.info(
                    "%s: batch %s: work order %s succeeded",
                    self.name,
                    outcome.batch_id,
                    outcome.work_order_id,
                )
            else:
                log.warning(
                    "%s: batch %s: work order %s is %s",
                    self.name,
                    outcome.batch_id,
                    outcome.work_order_id,
                    state
                    if state in FINAL_WORK_ORDER_STATES
                    else f"still {state} after {self.config.poll_timeout:g}s",
                )
        return final

    # -- pull --------------------------------------------------------------------------------------
    def _list(self, params: dict[str, Any], *, what: str) -> tuple[list[dict[str, Any]], str | None]:
        name = self.config.collection
        if self.config.project_id:
            params = {**params, "project_id": self.config.project_id}
        response = self._send("GET", f"/collections/{name}", what, params=params, headers=self._bearer())
        status = response.status_code
        if status == 401:
            raise AuthenticationError(
                f"the token for collection {name!r} was refused (HTTP 401: an invalid personal "
                "access token, or its user is not a member of the collection's project)"
            )
        if status == 404:
            raise PermanentError(
                f"collection {name!r} does not exist (HTTP 404); create it in the project's settings"
            )
        if status == 409:
            raise PermanentError(
                f"several projects have a collection named {name!r} (HTTP 409); set project_id"
            )
        if status == 429 or status >= 500:
            raise TransientError(
                f"{what}: HTTP {status}",
                retry_after=webhook.retry_after_of(response, None),
            )
        if status != 200:
            raise PermanentError(f"{what}: HTTP {status}: {response.text.strip()[:200]}")
        try:
            return check_page(response.json())
        except ValueError as exc:  # includes a list answer cut mid-JSON
            raise TransientError(f"{what}: unreadable answer ({exc})") from None

    def pull(self, cursor: str | None, limit: int) -> PullPage:
        if not self.config.collection:
            raise PermanentError("no collection is set, so nothing can be pulled (set pull: false)")
        state = PullState.load(cursor)
        params: dict[str, Any] = {"limit": min(limit, self.config.page_size or limit)}
        if self.config.key_pattern:
            params["key"] = self.config.key_pattern
        if state.after:
            params["updated_after"] = state.after
        if state.cursor:
            params["cursor"] = state.cursor
        items, next_cursor = self._list(params, what=f"reading collection {self.config.collection!r}")
        records = []
        for item in state.take_page(items, next_cursor):
            if self._matcher is not None and not self._matcher.match(item["key"]):
                continue  # selected only because Lightning reads '_' as a wildcard
            record = to_record(item, self.config.default_entity_name)
            if record is not None:
                records.append(record)
        has_more = next_cursor is not None
        if not has_more:
            has_more = state.finish_pass(self.config.lag_seconds)
            log.info(
                "%s: collection pass done; next pass from %s%s",
                self.name,
                state.after or "the beginning",
                " (catching up with changes made during it)" if has_more else "",
            )
        return PullPage(records=records, next_cursor=state.dump(), has_more=has_more)

    def lookup(self, refs: Sequence[str]) -> dict[str, str]:
        """A webhook cannot be asked what it holds: nothing is found, and the ``batch_id`` guards retries."""
        return {}

    def close(self) -> None:
        self._client.close()

"""What the fake Lightning holds, and the rules it applies to it (reference openfn.md §6.1).

Everything protocol-independent lives here, as plain Python a test can drive directly: projects, webhook
triggers with their auth methods, work orders and runs with their states, personal access tokens with project
roles, and collections of string values with Lightning's ordering, filters and LIKE patterns. The HTTP layer
(``app.py``) only parses requests and renders these objects the way Lightning does.

Time comes from an injectable :class:`FakeClock` (microsecond precision, freezable, so tests can make items
share an ``updated_at``), and identifiers from a seeded generator, so a scenario replays identically.
"""

from __future__ import annotations

import base64
import json
import os
import random
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from connectors.openfn.fake.faults import FaultPlan

RUN_FINAL_STATES = frozenset({"success", "failed", "crashed", "cancelled", "killed", "exception", "lost"})
"""Lightning's final run states (``lib/lightning/run.ex``); a work order ends in one or ``rejected``."""

ROLES = ("viewer", "editor", "admin", "owner")
ITEM_VALUE_LIMIT = 1_000_000
"""Collection values are capped at one million characters."""

COLLECTION_NAME = re.compile(r"^[a-z0-9]+([-_.][a-z0-9]+)*$")
CUSTOM_PATH = re.compile(r"^[a-z0-9_-]{1,255}$")
UUID_SHAPE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
SECURITY_MESSAGE = (
    "Run completed with status: {state}. As a security policy, OpenFn does not send state data "
    "for runs that did not succeed."
)


def iso(value: datetime) -> str:
    """Lightning's JSON form of a ``utc_datetime_usec``: ISO-8601, microseconds, ``Z``."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(value: str) -> datetime:
    """Parse like Elixir's ``DateTime.from_iso8601``: a full datetime *with* an offset, else ValueError."""
    text = value.strip()
    if not re.match(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})$", text):
        raise ValueError(f"not an ISO-8601 datetime with an offset: {value!r}")
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


class FakeClock:
    """Wall-clock time with microseconds, which a test can freeze, set and advance."""

    def __init__(self) -> None:
        self._frozen: datetime | None = None
        self._offset = timedelta()
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            if self._frozen is not None:
                return self._frozen
            return datetime.now(UTC) + self._offset

    def freeze(self, at: datetime | str | None = None) -> datetime:
        moment = parse_iso(at) if isinstance(at, str) else (at or self.now())
        with self._lock:
            self._frozen = moment
        return moment

    def advance(self, seconds: float) -> None:
        with self._lock:
            if self._frozen is not None:
                self._frozen += timedelta(seconds=seconds)
            else:
                self._offset += timedelta(seconds=seconds)

    def unfreeze(self) -> None:
        """Let time run again from the frozen moment."""
        with self._lock:
            if self._frozen is not None:
                self._offset = self._frozen - datetime.now(UTC)
            self._frozen = None

    def reset(self) -> None:
        """Back to the real wall clock."""
        with self._lock:
            self._frozen, self._offset = None, timedelta()


class IdGen:
    """UUIDs from a seeded generator: the same scenario yields the same work-order and run ids."""

    def __init__(self, seed: int = 0) -> None:
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    def uuid(self) -> str:
        with self._lock:
            return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))


@dataclass
class AuthMethod:
    """One webhook auth method; a trigger accepts a request if any of its methods matches."""

    type: str  # "api" | "basic"
    key: str | None = None
    username: str | None = None
    password: str | None = None

    def basic_header(self) -> str:
        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return f"Basic {token}"


@dataclass
class Trigger:
    id: str
    project_id: str
    enabled: bool = True
    custom_path: str | None = None
    auth: list[AuthMethod] = field(default_factory=list)
    webhook_reply: str = "before_start"  # | "after_completion"
    success_code: int | None = None
    error_code: int | None = None
    response_timeout: float = 30.0
    """Seconds an ``after_completion`` request waits for its run (``WEBHOOK_RESPONSE_TIMEOUT_MS``)."""
    run_seconds: float = 0.0
    """How long a run of this trigger takes once started (lets a test outlast ``response_timeout``)."""


@dataclass
class Dataclip:
    """What a run starts from: the request body and the request's method, path, query and headers."""

    body: Any
    request: dict[str, Any]
    work_order_id: str | None = None


@dataclass
class WorkOrder:
    id: str
    trigger_id: str
    project_id: str
    state: str
    dataclip: Dataclip
    inserted_at: datetime
    updated_at: datetime
    last_activity: datetime
    runs: list[str] = field(default_factory=list)
    batch_id: str | None = None


@dataclass
class Run:
    id: str
    work_order_id: str
    state: str
    inserted_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error_type: str | None = None
    priority: str = "normal"
    final_state: Any = None


@dataclass
class RunOutcome:
    """What the run handler decides: the job's final state, the run's end state, an optional reply."""

    final_state: Any
    state: str = "success"
    error_type: str | None = None
    webhook_response: dict[str, Any] | None = None


@dataclass
class Pat:
    token: str
    user: str
    projects: dict[str, str] = field(default_factory=dict)  # project id -> role


@dataclass
class Item:
    id: int
    key: str
    value: str
    inserted_at: datetime
    updated_at: datetime

    def to_wire(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "value": self.value,
            "created": iso(self.inserted_at),
            "updated": iso(self.updated_at),
        }


@dataclass
class Collection:
    project_id: str
    name: str
    next_id: int = 1
    items: dict[str, Item] = field(default_factory=dict)

    def byte_size(self) -> int:
        return sum(len(i.key) + len(i.value) for i in self.items.values())


@dataclass
class WebhookRequest:
    """One POST the fake received, as the assertions API shows it (credentials redacted like Lightning)."""

    at: str
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    status: int
    work_order_id: str | None = None
    batch_id: str | None = None
    rejected: bool = False


@dataclass
class ListFilter:
    key: str | None = None
    cursor: int | None = None
    limit: int = 1000
    created_after: datetime | None = None
    created_before: datetime | None = None
    updated_after: datetime | None = None
    updated_before: datetime | None = None


RunHandler = Callable[[Dataclip, "FakeLightning"], RunOutcome]


def default_handler(dataclip: Dataclip, lightning: FakeLightning) -> RunOutcome:
    """A job that does nothing and succeeds: ``state.data`` is the request body."""
    return RunOutcome(final_state={"data": dataclip.body})


def like_pattern(pattern: str) -> re.Pattern[str]:
    """Lightning's key pattern: ``*`` becomes SQL ``%`` and ``_`` stays SQL's one-character wildcard.

    Lightning escapes ``%`` and ``\\`` but not ``_`` (reference openfn.md §2.3), so ``dc_result`` also
    matches ``dcXresult``; the fake reproduces that so a client that forgets it fails here first.
    """
    out = []
    for char in pattern:
        if char == "*":
            out.append(".*")
        elif char == "_":
            out.append(".")
        else:
            out.append(re.escape(char))
    return re.compile("^" + "".join(out) + "$", re.DOTALL)


def encode_cursor(item_id: int) -> str:
    return base64.b64encode(str(item_id).encode()).decode()


def decode_cursor(cursor: str) -> int:
    try:
        return int(base64.b64decode(cursor.encode(), validate=True).decode())
    except (ValueError, UnicodeDecodeError):
        raise ValueError(f"bad cursor {cursor!r}") from None


class FakeLightning:
    """The whole fake instance; one re-entrant lock makes every request one transaction."""

    def __init__(self, *, seed: int = 0, data_file: str | Path | None = None) -> None:
        self.lock = threading.RLock()
        self.clock = FakeClock()
        self.data_file = Path(data_file) if data_file else None
        self.reset(seed)

    def reset(self, seed: int = 0) -> None:
        """A brand-new instance: no objects, default limits, real time, no faults, the default job."""
        with self.lock:
            self.ids = IdGen(seed)
            self.clock.reset()
            self.faults = FaultPlan()
            self.run_handler: RunHandler = default_handler
            self.auto_run = True
            """Run work orders right after answering (``False``: they stay pending until :meth:`tick`)."""
            self.max_body_bytes = 10_000_000
            self.rate_limit: tuple[int, float] | None = None
            """``(requests, seconds)``: more webhook requests than that in the window answer 429."""
            self.soft_run_quota: int | None = None
            """Runs left before work orders are ``rejected`` with ``too_many_runs`` (``None``: no limit)."""
            self.hard_run_quota: int | None = None
            self.hard_limit_status = 429
            """402 reproduces older Lightning versions' answer to a hard usage limit."""
            self.collection_byte_quota: int | None = None
            self.rejects: dict[str, str] = {}
            """Entity guid -> reason: a body carrying it is refused with 422 ``invalid_request``, as Lightning
            refuses a body it cannot store (a NUL character in a text cannot go into PostgreSQL jsonb)."""
            self.run_inline = False
            """Run the job before answering (still a ``before_start`` answer): tests need not wait for it."""
            self.on_collection_list: Callable[[int], None] | None = None
            """Called (outside the lock) before each collection list request with its sequence number."""
            self.clear()

    def clear(self) -> None:
        """Forget every object (configuration knobs and the run handler stay)."""
        with self.lock:
            self.projects: dict[str, str] = {}
            self.triggers: dict[str, Trigger] = {}
            self.work_orders: dict[str, WorkOrder] = {}
            self.runs: dict[str, Run] = {}
            self.pats: dict[str, Pat] = {}
            self.collections: dict[tuple[str, str], Collection] = {}
            self.requests: list[WebhookRequest] = []
            self.answers: dict[int, int] = {}
            self.list_requests = 0
            self._rate_window: list[float] = []

    # -- setup -------------------------------------------------------------------------------------
    def add_project(self, name: str = "project", project_id: str | None = None) -> str:
        with self.lock:
            pid = project_id or self.ids.uuid()
            self.projects[pid] = name
            return pid

    def add_trigger(
        self,
        project_id: str,
        *,
        trigger_id: str | None = None,
        api_key: str | None = None,
        username: str | None = None,
        password: str | None = None,
        custom_path: str | None = None,
        **options: Any,
    ) -> Trigger:
        if custom_path is not None and (not CUSTOM_PATH.match(custom_path) or UUID_SHAPE.match(custom_path)):
            raise ValueError(f"invalid custom webhook path {custom_path!r}")
        auth = []
        if api_key is not None:
            auth.append(AuthMethod("api", key=api_key))
        if username is not None:
            auth.append(AuthMethod("basic", username=username, password=password or ""))
        with self.lock:
            if custom_path and any(
                t.project_id == project_id and t.custom_path == custom_path for t in self.triggers.values()
            ):
                raise ValueError(f"custom path {custom_path!r} is already used in project {project_id}")
            trigger = Trigger(
                id=trigger_id or self.ids.uuid(),
                project_id=project_id,
                custom_path=custom_path,
                auth=auth,
                **options,
            )
            self.triggers[trigger.id] = trigger
            return trigger

    def add_pat(self, token: str, user: str = "user", projects: dict[str, str] | None = None) -> Pat:
        for role in (projects or {}).values():
            if role not in ROLES:
                raise ValueError(f"unknown role {role!r}")
        with self.lock:
            pat = Pat(token=token, user=user, projects=dict(projects or {}))
            self.pats[token] = pat
            return pat

    def add_collection(self, project_id: str, name: str) -> Collection:
        if not COLLECTION_NAME.match(name):
            raise ValueError(f"invalid collection name {name!r}")
        with self.lock:
            collection = Collection(project_id=project_id, name=name)
            self.collections[(project_id, name)] = collection
            return collection

    # -- webhooks ----------------------------------------------------------------------------------
    def resolve_trigger(self, segments: list[str]) -> Trigger | None:
        """``/i/<uuid>[/extra...]`` or ``/i/<project id>/<custom path>``."""
        if not segments:
            return None
        with self.lock:
            trigger = self.triggers.get(segments[0])
            if trigger is not None:
                return trigger
            if len(segments) == 2:
                for candidate in self.triggers.values():
                    if candidate.project_id == segments[0] and candidate.custom_path == segments[1]:
                        return candidate
        return None

    def rate_limited(self) -> bool:
        if self.rate_limit is None:
            return False
        count, seconds = self.rate_limit
        now = self.clock.now().timestamp()
        with self.lock:
            self._rate_window = [t for t in self._rate_window if t > now - seconds]
            if len(self._rate_window) >= count:
                return True
            self._rate_window.append(now)
            return False

    def hard_limited(self) -> bool:
        with self.lock:
            return self.hard_run_quota is not None and self.hard_run_quota <= 0

    def create_work_order(
        self, trigger: Trigger, dataclip: Dataclip, *, force_reject: bool = False
    ) -> tuple[WorkOrder, Run | None]:
        """A work order for an accepted request; ``rejected`` without a run when the soft quota is spent."""
        with self.lock:
            now = self.clock.now()
            body = dataclip.body if isinstance(dataclip.body, dict) else {}
            batch_id = body.get("batch_id") or _header(dataclip.request["headers"], "x-batch-id")
            rejected = force_reject or (self.soft_run_quota is not None and self.soft_run_quota <= 0)
            order = WorkOrder(
                id=self.ids.uuid(),
                trigger_id=trigger.id,
                project_id=trigger.project_id,
                state="rejected" if rejected else "pending",
                dataclip=dataclip,
                inserted_at=now,
                updated_at=now,
                last_activity=now,
                batch_id=str(batch_id) if batch_id else None,
            )
            dataclip.work_order_id = order.id
            self.work_orders[order.id] = order
            if rejected:
                return order, None
            if self.soft_run_quota is not None:
                self.soft_run_quota -= 1
            if self.hard_run_quota is not None:
                self.hard_run_quota -= 1
            run = Run(id=self.ids.uuid(), work_order_id=order.id, state="available", inserted_at=now)
            self.runs[run.id] = run
            order.runs.append(run.id)
            return order, run

    def start_run(self, run_id: str) -> None:
        with self.lock:
            run = self.runs[run_id]
            if run.state != "available":
                return
            now = self.clock.now()
            run.state, run.started_at = "started", now
            order = self.work_orders[run.work_order_id]
            order.state, order.updated_at, order.last_activity = "running", now, now

    def finish_run(self, run_id: str) -> RunOutcome | None:
        """Run the handler for a started run and record its end state (idempotent)."""
        with self.lock:
            run = self.runs[run_id]
            if run.state in RUN_FINAL_STATES:
                return None
            if run.state == "available":
                self.start_run(run_id)
            order = self.work_orders[run.work_order_id]
            try:
                outcome = self.run_handler(order.dataclip, self)
            except Exception as exc:  # the job crashed: that is the run's outcome, not the fake's
                outcome = RunOutcome(final_state=None, state="crashed", error_type=type(exc).__name__)
            now = self.clock.now()
            run.state, run.finished_at = outcome.state, now
            run.error_type, run.final_state = outcome.error_type, outcome.final_state
            order.state, order.updated_at, order.last_activity = outcome.state, now, now
            return outcome

    def run_now(self, run_id: str) -> RunOutcome | None:
        self.start_run(run_id)
        return self.finish_run(run_id)

    def tick(self) -> int:
        """Run every pending work order to its end (when ``auto_run`` is off); returns how many ran."""
        with self.lock:
            waiting = [r.id for r in self.runs.values() if r.state in ("available", "started")]
        for run_id in waiting:
            self.finish_run(run_id)
        return len(waiting)

    def rejected_ref(self, body: Any) -> str | None:
        """The reason to refuse ``body`` if it carries a ref in :attr:`rejects`."""
        if not self.rejects or not isinstance(body, dict):
            return None
        for item in [*(body.get("entities") or []), *(body.get("records") or [])]:
            if isinstance(item, dict):
                for ref in (item.get("entityGuid"), item.get("ref")):
                    if isinstance(ref, str) and ref in self.rejects:
                        return self.rejects[ref]
        return None

    def count_answer(self, status: int) -> None:
        """Tally every webhook POST answer by status (tests assert that a 413 or a 429 really happened)."""
        with self.lock:
            self.answers[status] = self.answers.get(status, 0) + 1

    def record_request(self, request: WebhookRequest) -> None:
        with self.lock:
            self.requests.append(request)

    # -- assertions --------------------------------------------------------------------------------
    def accepted_batches(self) -> dict[str, list[str]]:
        """``batch_id -> [work order ids]`` for every accepted (run-creating) webhook request."""
        found: dict[str, list[str]] = {}
        with self.lock:
            for order in self.work_orders.values():
                if order.state != "rejected" and order.batch_id:
                    found.setdefault(order.batch_id, []).append(order.id)
        return found

    def duplicate_batches(self) -> dict[str, int]:
        return {b: len(w) for b, w in self.accepted_batches().items() if len(w) > 1}

    def accepted_bodies(self) -> Iterator[tuple[str | None, Any]]:
        """``(batch_id, body)`` of every work order that got a run, in arrival order."""
        with self.lock:
            orders = sorted(self.work_orders.values(), key=lambda o: o.inserted_at)
        for order in orders:
            if order.state != "rejected":
                yield order.batch_id, order.dataclip.body

    # -- collections -------------------------------------------------------------------------------
    def find_collections(self, name: str, project_id: str | None = None) -> list[Collection]:
        with self.lock:
            return [
                c
                for (pid, cname), c in self.collections.items()
                if cname == name and (project_id is None or pid == project_id)
            ]

    def collection(self, name: str, project_id: str | None = None) -> Collection:
        found = self.find_collections(name, project_id)
        if len(found) != 1:
            raise KeyError(name)
        return found[0]

    def put_items(self, collection: Collection, pairs: list[tuple[str, str]]) -> int:
        """Upsert like Lightning: an existing key keeps its id and gets a new ``updated_at``."""
        with self.lock:
            if self.collection_byte_quota is not None:
                current = {k: len(k) + len(i.value) for k, i in collection.items.items()}
                for key, value in pairs:
                    current[key] = len(key) + len(value)
                if sum(current.values()) > self.collection_byte_quota:
                    raise QuotaExceeded("Storage limit exceeded for collections")
            now = self.clock.now()
            for key, value in pairs:
                item = collection.items.get(key)
                if item is None:
                    collection.items[key] = Item(collection.next_id, key, value, now, now)
                    collection.next_id += 1
                else:
                    item.value, item.updated_at = value, now
            return len(pairs)

    def put_json(self, name: str, key: str, value: Any, project_id: str | None = None) -> Item:
        """What a job's ``collections.set`` does: store ``JSON.stringify(value)`` under ``key``."""
        collection = self.collection(name, project_id)
        self.put_items(collection, [(key, json.dumps(value, separators=(",", ":")))])
        return collection.items[key]

    def list_items(self, collection: Collection, flt: ListFilter) -> tuple[list[Item], int | None]:
        """Items ordered by id after the cursor, filtered; the last id when more items match."""
        pattern = like_pattern(flt.key) if flt.key else None
        with self.lock:
            ordered = sorted(collection.items.values(), key=lambda i: i.id)
        selected: list[Item] = []
        more = False
        for item in ordered:
            if flt.cursor is not None and item.id <= flt.cursor:
                continue
            if pattern is not None and not pattern.match(item.key):
                continue
            if flt.created_after is not None and item.inserted_at < flt.created_after:
                continue
            if flt.created_before is not None and item.inserted_at >= flt.created_before:
                continue
            if flt.updated_after is not None and item.updated_at < flt.updated_after:
                continue
            if flt.updated_before is not None and item.updated_at >= flt.updated_before:
                continue
            if len(selected) == flt.limit:
                more = True
                break
            selected.append(item)
        return selected, (selected[-1].id if more and selected else None)

    def delete_items(self, collection: Collection, flt: ListFilter) -> int:
        """Delete every item the filter selects (``flt.key`` is the pattern; the limit is ignored)."""
        with self.lock:
            flt.limit = len(collection.items) + 1
            flt.cursor = None
            doomed, _ = self.list_items(collection, flt)
            for item in doomed:
                del collection.items[item.key]
            return len(doomed)

    # -- persistence (the standalone server's --data file) -------------------------------------------
    def save(self) -> None:
        if self.data_file is None:
            return
        with self.lock:
            state = {
                "projects": self.projects,
                "triggers": [asdict(t) for t in self.triggers.values()],
                "pats": [asdict(p) for p in self.pats.values()],
                "collections": [
                    {
                        "project_id": c.project_id,
                        "name": c.name,
                        "next_id": c.next_id,
                        "items": [
                            [i.id, i.key, i.value, iso(i.inserted_at), iso(i.updated_at)]
                            for i in c.items.values()
                        ],
                    }
                    for c in self.collections.values()
                ],
            }
        tmp = self.data_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state), encoding="utf-8")
        os.replace(tmp, self.data_file)

    def load(self) -> bool:
        """Restore configuration and collections from ``data_file``; work orders are not kept."""
        if self.data_file is None or not self.data_file.exists():
            return False
        state = json.loads(self.data_file.read_text(encoding="utf-8"))
        with self.lock:
            self.clear()
            self.projects = dict(state["projects"])
            for raw in state["triggers"]:
                raw["auth"] = [AuthMethod(**a) for a in raw["auth"]]
                self.triggers[raw["id"]] = Trigger(**raw)
            for raw in state["pats"]:
                self.pats[raw["token"]] = Pat(**raw)
            for raw in state["collections"]:
                collection = Collection(raw["project_id"], raw["name"], raw["next_id"])
                for item_id, key, value, inserted, updated in raw["items"]:
                    collection.items[key] = Item(item_id, key, value, parse_iso(inserted), parse_iso(updated))
                self.collections[(collection.project_id, collection.name)] = collection
        return True


class QuotaExceeded(Exception):
    """A collection write over the storage quota."""


def _header(headers: dict[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None

"""The pull side: Lightning collection items as remote records, and a cursor that loses no update.

Lightning lists a collection in item-id order (insertion order) with an opaque cursor, and an upsert keeps
an item's id (reference openfn.md §2.3), so "new since the cursor" misses updates; ``updated_after`` finds
them but is inclusive. The pull cursor therefore works in *passes*, each one ``updated_after=W`` followed
through Lightning's cursor:

- every item a pass returns has ``updated <= T0``, the server's time at its first page, so ``M1``, the
  largest ``updated`` of the first page, is ``<= T0``; an item updated during the pass behind the cursor
  has ``updated >= T0 >= M1``. The next pass starts at ``W' = max(W, M1 - lag)``: nothing is skipped,
  whatever the client's clock says, and ``lag`` covers writes committed after their timestamp;
- the keys delivered with ``updated >= W'`` are remembered with their ``updated``, so the re-read window
  (including the inclusive boundary) yields each item state once;
- a pass that spanned several pages and found something new is followed, in the same run, by a catch-up
  pass for what changed behind it (at most :data:`MAX_CATCHUP` in a row), so a run ends having seen every
  change made before its last pass began.

The engine commits each page before asking for the next, so the cursor moves only after commit.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from connector_core.connector import RemoteRecord

log = logging.getLogger("dcsync.openfn")

MAX_CATCHUP = 3
SEEN_CAP = 20_000
"""Most item states the cursor remembers; past it the boundary is raised (never past ``M1``)."""
_BOOKKEEPING = ("entityGuid", "entityName")


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.strip().replace("Z", "+00:00")).astimezone(UTC)


def format_time(value: datetime) -> str:
    """ISO-8601 with microseconds and ``Z``: what Lightning's ``DateTime.from_iso8601`` accepts."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def key_matcher(pattern: str | None) -> re.Pattern[str] | None:
    """The pattern as the user meant it: ``*`` is any run of characters and ``_`` is a plain underscore.

    Lightning turns ``*`` into SQL ``%`` but leaves ``_`` as SQL's one-character wildcard, so the server may
    return keys the pattern does not literally match (``dc_result`` also selects ``dcXresult``); the
    connector re-checks every key with this.
    """
    if not pattern:
        return None
    return re.compile("^" + ".*".join(re.escape(part) for part in pattern.split("*")) + "$", re.DOTALL)


@dataclass
class PullState:
    """The connector's opaque pull cursor, stored by the engine as JSON."""

    after: str | None = None
    seen: dict[str, str] = field(default_factory=dict)
    cursor: str | None = None
    first_max: str | None = None
    pages: int = 0
    fresh: int = 0
    rounds: int = 0

    @classmethod
    def load(cls, text: str | None) -> PullState:
        if not text:
            return cls()
        raw = json.loads(text)
        return cls(
            after=raw.get("after"),
            seen=dict(raw.get("seen") or {}),
            cursor=raw.get("cursor"),
            first_max=raw.get("first_max"),
            pages=int(raw.get("pages", 0)),
            fresh=int(raw.get("fresh", 0)),
            rounds=int(raw.get("rounds", 0)),
        )

    def dump(self) -> str:
        raw: dict[str, Any] = {"after": self.after, "seen": self.seen}
        if self.pages:
            raw.update(cursor=self.cursor, first_max=self.first_max, pages=self.pages, fresh=self.fresh)
        if self.rounds:
            raw["rounds"] = self.rounds
        return json.dumps(raw, separators=(",", ":"), sort_keys=True)

    def take_page(self, items: list[dict[str, Any]], next_cursor: str | None) -> list[dict[str, Any]]:
        """Record a page; return its items not delivered before (same key with the same ``updated``)."""
        if self.pages == 0 and items:
            self.first_max = format_time(max(parse_time(i["updated"]) for i in items))
        self.pages += 1
        self.cursor = next_cursor
        fresh = [i for i in items if self.seen.get(i["key"]) != i["updated"]]
        for item in fresh:
            self.seen[item["key"]] = item["updated"]
        self.fresh += len(fresh)
        return fresh

    def finish_pass(self, lag: float) -> bool:
        """Close the pass: move the boundary, forget what is behind it; ``True`` if a catch-up pass is due."""
        after = parse_time(self.after) if self.after else None
        bound = parse_time(self.first_max) if self.first_max else None
        if bound is not None:
            candidate = bound - timedelta(seconds=lag)
            after = candidate if after is None or candidate > after else after
        seen = self.seen
        if after is not None:
            seen = {k: u for k, u in seen.items() if parse_time(u) >= after}
        if len(seen) > SEEN_CAP and bound is not None:
            newest = sorted((parse_time(u) for u in seen.values()), reverse=True)
            raised = min(newest[SEEN_CAP - 1], bound)
            if after is None or raised > after:
                after = raised
                seen = {k: u for k, u in seen.items() if parse_time(u) >= after}
            if len(seen) > SEEN_CAP:  # a burst newer than M1: re-delivering the rest is harmless
                keep = sorted(seen.items(), key=lambda kv: parse_time(kv[1]), reverse=True)[:SEEN_CAP]
                seen = dict(keep)
        again = self.pages > 1 and self.fresh > 0 and self.rounds < MAX_CATCHUP
        self.after = format_time(after) if after is not None else None
        self.seen = seen
        self.cursor, self.first_max, self.pages, self.fresh = None, None, 0, 0
        self.rounds = self.rounds + 1 if again else 0
        return again


def to_record(item: dict[str, Any], default_entity_name: str | None) -> RemoteRecord | None:
    """An item as a remote record, or ``None`` (logged) when its value is not a JSON object.

    Two value shapes are understood: a DataCollect event (``{"guid", "entityGuid", "type", "data"}``,
    whose ``data`` is the entity data, and ``delete-entity`` a deletion) and a flat object whose keys are
    the data. In both, ``entityGuid`` is the ref and ``entityName`` the entity name; they are bookkeeping,
    not data, so they are taken out of ``data`` (the reference adapter kept the whole record as data).
    """
    key = item["key"]
    try:
        value = json.loads(item["value"])
    except (TypeError, ValueError):
        log.warning("collection item %r does not hold JSON; skipped", key)
        return None
    if not isinstance(value, dict):
        log.warning("collection item %r holds %s, not a JSON object; skipped", key, type(value).__name__)
        return None
    deleted = False
    if isinstance(value.get("data"), dict) and "entityGuid" in value and "type" in value:
        data = dict(value["data"])
        entity_name = data.pop("entityName", None)
        deleted = value["type"] == "delete-entity"
    else:
        data = {k: v for k, v in value.items() if k not in _BOOKKEEPING}
        entity_name = value.get("entityName")
    ref = value.get("entityGuid")
    return RemoteRecord(
        external_id=key,
        data=data,
        entity_name=str(entity_name) if entity_name else default_entity_name,
        ref=str(ref) if ref else None,
        updated_at=item["updated"],
        version=item["updated"],
        deleted=deleted,
    )


def check_page(body: Any) -> tuple[list[dict[str, Any]], str | None]:
    """The items and cursor of a list answer; ``ValueError`` for anything that is not one."""
    if not isinstance(body, dict) or not isinstance(body.get("items"), list):
        raise ValueError("expected an object with an 'items' list")
    items = body["items"]
    for item in items:
        if not (
            isinstance(item, dict)
            and isinstance(item.get("key"), str)
            and isinstance(item.get("updated"), str)
        ):
            raise ValueError("an item without a string 'key' and 'updated'")
        parse_time(item["updated"])
    cursor = body.get("cursor")
    if cursor is not None and not isinstance(cursor, str):
        raise ValueError("'cursor' is neither a string nor null")
    return items, cursor

"""The event log contract every backend meets (SQLite, PostgreSQL, a live DataCollect).

Reads go by an opaque cursor over the order of *ingestion*, never over event timestamps: DataCollect's own
timestamp cursor skips ties and late arrivals (reference datacollect.md §2.1), and a sync engine that skips an
event has lost it for good.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from connector_core.entities import Entity, EventIssue
from connector_core.events import FormSubmission


@dataclass(slots=True)
class AppendResult:
    """What an append did: the guids that were new, how many were already there, and fold issues."""

    new_guids: list[str] = field(default_factory=list)
    duplicates: int = 0
    issues: list[EventIssue] = field(default_factory=list)

    @property
    def new(self) -> int:
        return len(self.new_guids)

    def merge(self, other: AppendResult) -> None:
        self.new_guids.extend(other.new_guids)
        self.duplicates += other.duplicates
        self.issues.extend(other.issues)

    def unique(self, chunk: Iterable[FormSubmission]) -> dict[str, FormSubmission]:
        """``chunk``'s events by guid, the first of each: a repeat within the chunk counts as a duplicate."""
        unique: dict[str, FormSubmission] = {}
        for event in chunk:
            if event.guid in unique:
                self.duplicates += 1
            else:
                unique[event.guid] = event
        return unique


@dataclass(slots=True)
class EventPage:
    """Events after a cursor; ``cursor`` is where the next read starts (unchanged when empty)."""

    events: list[FormSubmission]
    cursor: str | None
    at_end: bool


# Events whose answers a push needs (who joined or left a group); for the rest, knowing the entity is enough.
COMMIT_EVENTS = 10_000
"""Events per transaction of a bulk write (``log import``, ``log copy``). Each commit writes every index page
its random guids landed on (one WAL frame each), however few rows a page got; at a million events a
1,000-event commit dirtied about 1,900 such pages, ten times that many events about 12,000, so the larger
commit costs less than a third per event. Memory does not grow with it: an append streams its events a
chunk at a time inside the one transaction."""

CASCADE_DELETE = "cascade-delete-entity"
"""The type of a touch (not of any event) for an entity an event deleted besides its own: a group's members
that ``delete-entity`` or ``resolve-duplicate`` removed with it (DataCollect's audit rows use the same
word). It follows its event's touch, with that event's user, so a push deletes them too."""

CASCADING_EVENTS = frozenset({"delete-entity", "resolve-duplicate", "remove-member"})
"""The event types whose fold may delete entities besides the event's own (a removed member that is itself a
group goes with its members): only a page holding one has cascades to read."""

MEMBERSHIP_EVENTS = frozenset({"create-group", "update-group", "add-member", "remove-member"})


@dataclass(frozen=True, slots=True)
class EventTouch:
    """What a push needs of one event: the entity it touched, how, and by whom.

    ``data`` is only read for :data:`MEMBERSHIP_EVENTS` (``None`` for every other type): a push takes an
    entity's current state from the entity table, so decoding every event's answers would be wasted.
    """

    entity_guid: str
    type: str
    user_id: str
    data: dict[str, Any] | None = None

    @classmethod
    def of(cls, event: FormSubmission) -> EventTouch:
        return cls(
            event.entity_guid,
            event.type,
            event.user_id,
            event.data if event.type in MEMBERSHIP_EVENTS else None,
        )


@dataclass(slots=True)
class TouchPage:
    """:class:`EventTouch` es after a cursor; paged exactly like :class:`EventPage`."""

    touches: list[EventTouch]
    cursor: str | None
    at_end: bool


@runtime_checkable
class EventLog(Protocol):
    def append(self, events: Iterable[FormSubmission]) -> AppendResult:
        """Store events not stored yet (by guid), in order, and fold them into the entity table.

        Atomic per call: after a crash either all of a call's events are there or none.
        """
        ...

    def read(self, after: str | None, limit: int) -> EventPage:
        """Up to ``limit`` events ingested after ``after`` (``None``: from the start)."""
        ...

    def read_touches(self, after: str | None, limit: int, until: str | None = None) -> TouchPage:
        """What ``read(after, limit)`` would return, as :class:`EventTouch` es: the push's read path.

        ``until``: no event past this cursor (a bulk load's snapshot mark); ``at_end`` once it is reached."""
        ...

    def iter_events(self, after: str | None = None, page_size: int = 1000) -> Iterator[FormSubmission]:
        """Every event after ``after``, streamed page by page."""
        ...

    def head(self) -> str | None:
        """The cursor after the last event ingested (``None`` for an empty log)."""
        ...

    def count(self, after: str | None = None) -> int:
        """How many events lie after ``after``: the lag of a checkpoint."""
        ...

    def get_entity(self, guid: str) -> Entity | None: ...

    def get_entities(self, guids: Iterable[str]) -> dict[str, Entity]:
        """The current state of each guid that exists (missing guids are left out)."""
        ...

    def children_of(self, guid: str) -> list[Entity]:
        """The entities whose ``parentGuid`` is ``guid``, as they are now (an operator's look-up, not a run's:
        it may scan)."""
        ...

    def iter_entities(self, page_size: int = 1000) -> Iterator[Entity]: ...

    def stats(self) -> dict[str, Any]:
        """Counts an operator wants at a glance: events, entities by type and form, issues, head."""
        ...

    def close(self) -> None: ...


def events_after(log: EventLog, after: str | None, page_size: int) -> Iterator[FormSubmission]:
    """Every event after ``after``, read a page at a time through ``log.read``: ``iter_events`` of a log."""
    cursor = after
    while True:
        page = log.read(cursor, page_size)
        yield from page.events
        if page.at_end:
            return
        cursor = page.cursor

"""The event log's queries and fold, written once for SQLite and PostgreSQL.

Events are numbered by an ingestion sequence, and that number is the cursor; so a reader never skips an
event, whatever its (client-supplied) timestamp says (datacollect.md §2.1 a-d). The entity table is folded
in the same transaction as the events it comes from, so it never disagrees with the log, and a sync engine
can read current state without replaying the log.

What differs between the databases is the :class:`~connector_core._sql.Database`'s, plus the bulk
writes of an append (:meth:`SqlEventLog._insert_events`, ``_insert_entities``, ``_update_entities``,
``_insert_issues``), which each backend does its fastest way; everything else is here once.

One instance owns one connection. Calls are serialised by a lock, so an instance may be handed between
threads (a scheduler creates it in one and runs jobs in another); for parallel readers open one instance per
thread.
"""

from __future__ import annotations

import gc
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from connector_core import codec
from connector_core._sql import Database, migrate
from connector_core.entities import Entity, EventIssue, Folder
from connector_core.eventlog import schema
from connector_core.eventlog.base import (
    CASCADE_DELETE,
    CASCADING_EVENTS,
    MEMBERSHIP_EVENTS,
    AppendResult,
    EventPage,
    EventTouch,
    TouchPage,
    events_after,
)
from connector_core.events import FormSubmission
from connector_core.streams import chunks

SCHEMA_VERSION = len(schema.MIGRATIONS)
"""Version of the layout; a log written by a newer dcsync is refused rather than misread."""

_EVENT_COLUMNS = schema.EVENT_COLUMNS

MERGE_EVERY = 100_000
"""Events between two merges of the recent guid keys into the rest (see eventlog/schema.py): the recent
level stays under this many keys per table, about 300 pages, which an append's random inserts dirty."""
_TOUCH_COLUMNS = (
    "seq, entity_guid, type, user_id, CASE WHEN type IN ("
    + ", ".join(f"'{t}'" for t in sorted(MEMBERSHIP_EVENTS))
    + ") THEN data END"
)

_ONE_ENTITY_EVENTS = frozenset({"create-individual", "update-individual"})

EventRow = tuple[int, str, str, str, str, str, str, int]
"""guid_key, guid, entity_guid, type, data, timestamp, user_id, sync_level (the key as computed once for the
append's probes; the backends insert it, none computes it again)"""
EntityRow = tuple[int, str, str, str | None, str | None, int, str, int]
"""guid_key, guid, type, entity_name, parent_guid, version, doc, last_seq"""
EntityUpdate = tuple[str, str | None, str | None, int, str, int, int]
"""type, entity_name, parent_guid, version, doc, last_seq, id (the key of the row to update)"""
IssueRow = tuple[str, str, str, int]
guid_key = schema.guid_key

_dumps = codec.dumps
_MERGED_AT = "keys_merged_at"  # the meta row holding the head seq of the last merge of the guid keys


def parse_cursor(cursor: str | None) -> int:
    """The ingestion sequence a cursor stands for (0: the start); anything else is a caller bug."""
    if cursor is None:
        return 0
    if not isinstance(cursor, str) or not cursor.isascii() or not cursor.isdigit():
        raise ValueError(
            f"malformed event log cursor {cursor!r}: expected a cursor returned by this log "
            "(a decimal ingestion sequence) or None"
        )
    return int(cursor)


def _guid_param(value: Any) -> str | None:
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _referenced_guids(event: FormSubmission, into: set[str]) -> None:
    """Guids the fold will look up for ``event``, so a chunk can load them in one query.

    Only a hint: whatever the fold asks for beyond these (cascade members) is loaded one by one.
    """
    into.add(event.entity_guid)
    if event.type in _ONE_ENTITY_EVENTS:  # most of a log: the fold reads nothing else for these
        return
    data = event.data
    members = data.get("members")
    if isinstance(members, list):
        for member in members:
            if isinstance(member, Mapping) and (guid := _guid_param(member.get("guid"))):
                into.add(guid)
    if guid := _guid_param(data.get("memberId")):
        into.add(guid)
    pairs = data.get("duplicates")
    first = pairs[0] if isinstance(pairs, list) and pairs else None
    if isinstance(first, Mapping) and (guid := _guid_param(first.get("entityGuid"))):
        into.add(guid)


@contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while a page of events is decoded or a chunk is folded.

    Both build thousands of small containers that all stay alive until the block ends, so every collection
    the allocations trigger walks them (and, in a long run, the whole heap) for nothing; pausing the
    collector for one page or chunk read 100k events 1.5x faster here. Reference counting still frees
    everything at once, memory stays bounded by the page, and a collector paused by someone else is left
    paused.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class SqlEventLog(ABC):
    """An :class:`~connector_core.eventlog.base.EventLog` over a :class:`~connector_core._sql.Database`."""

    read_only = False
    merges_keys = True
    """Whether appends merge the recent guid keys into the rest (see ``MERGE_EVERY``): what spares SQLite's
    commits the random index pages; a backend whose buffer pool absorbs them keeps one level instead."""

    def __init__(self, db: Database, where: str, chunk_size: int, *, lay_out: bool = True) -> None:
        """``lay_out=False``: the tables are there at the latest version already (a read-only open)."""
        if chunk_size < 1:
            db.close()
            raise ValueError("chunk_size must be at least 1")
        self.where = where
        self._db = db
        self._conn = db.conn
        self._lock = db.lock
        self._chunk_size = chunk_size
        if lay_out:
            migrate(db, schema.LAYOUT, f"event log {where}")

    # -- lifecycle ---------------------------------------------------------------------------------

    def schema_version(self) -> int:
        row = self._db.row(schema.GET_VERSION)
        assert row is not None
        return int(row[0])

    def close(self) -> None:
        self._db.close()  # a second close is a no-op

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- append ------------------------------------------------------------------------------------

    def _append_transaction(self) -> AbstractContextManager[Any]:
        """The write transaction of one append (PostgreSQL adds its append lock: see its module)."""
        return self._db.transaction()

    def append(self, events: Iterable[FormSubmission]) -> AppendResult:
        """Store and fold ``events`` in one transaction, a chunk at a time.

        ``events`` may be a stream of any length: chunks are inserted and folded inside the one
        transaction, so memory stays at one chunk while the call as a whole remains all-or-nothing
        (an exception from the stream itself rolls everything back too).
        """
        result = AppendResult()
        head = 0  # the seq of the last event this append stored
        with self._append_transaction():
            for chunk in chunks(events, self._chunk_size):
                with _gc_paused():
                    head = self._append_chunk(chunk, result) or head
            if head and self.merges_keys:
                self._merge_keys_if_due(head)
        return result

    def _append_chunk(self, chunk: list[FormSubmission], result: AppendResult) -> int | None:
        """Store and fold one chunk; the seq of its last new event (``None``: all were stored already)."""
        unique = result.unique(chunk)
        keys = {guid: guid_key(guid) for guid in unique}
        stored = self._stored_event_guids(keys)
        dumps = _dumps
        rows = [  # the columns of EventRow, inline: a function call per event cost a tenth of this loop
            (keys[g], g, e.entity_guid, e.type, dumps(e.data), e.timestamp, e.user_id, int(e.sync_level))
            for g, e in unique.items()
            if g not in stored
        ]
        inserted = self._insert_events(rows) if rows else []
        result.duplicates += len(unique) - len(inserted)
        if not inserted:
            return None
        result.new_guids.extend(guid for _seq, guid in inserted)
        self._fold_into_entities([(seq, unique[guid]) for seq, guid in inserted], result)
        return inserted[-1][0]

    def _stored_event_guids(self, keys: Mapping[str, int]) -> set[str]:
        """Which of the guids (with their :func:`guid_key`) the log holds already.

        Nothing enforces a guid's uniqueness but this check, made inside the append's write transaction
        (SQLite's write lock, PostgreSQL's append lock), so no other append can slip a guid in between."""
        rows = self._by_key("events", "SELECT guid FROM {s}.events WHERE seq", keys)
        return {guid for (guid,) in rows if guid in keys}

    def _event_seqs(self, guids: Iterable[str]) -> dict[str, int]:
        """The seq of each stored event among ``guids``."""
        keys = {guid: guid_key(guid) for guid in guids}
        rows = self._by_key("events", "SELECT guid, seq FROM {s}.events WHERE seq", keys)
        return {guid: seq for guid, seq in rows if guid in keys}

    def _by_key(self, table: str, select: str, keys: Mapping[str, int]) -> list[tuple[Any, ...]]:
        """``select`` (rows of ``table``, ending in its key column to match) for the guids of ``keys``,
        found through both levels of ``table``'s guid keys. Rows of other guids sharing a key come too: the
        caller compares.

        Two plain index lookups rather than a join: the key levels first (most probes find nothing, and
        stop there), then the rows they point at by primary key; no plan depends on table statistics, which
        a PostgreSQL without autovacuum never gathers (a join there chose to scan the whole event table)."""
        wanted = set(keys.values())
        refs: list[int] = []
        for level in schema.KEY_LEVELS[table]:
            refs += [
                ref
                for (ref,) in self._db.rows_in(f"SELECT ref FROM {{s}}.{level} WHERE guid_key", (), wanted)
            ]
        return self._db.rows_in(select, (), refs) if refs else []

    def _merge_keys_if_due(self, head: int) -> None:
        """Merge the recent guid keys into the rest once ``MERGE_EVERY`` events have come since the last
        merge: in key order, so the large level's pages are each written once per merge, not once per
        append. Inside the append's transaction, so a crash leaves either both levels as they were or the
        merge done."""
        db = self._db
        row = db.row("SELECT value FROM {s}.meta WHERE key = ?", (_MERGED_AT,))
        merged = int(row[0]) if row else 0
        if head - merged < MERGE_EVERY:
            return
        for rest, recent in schema.KEY_LEVELS.values():
            db.execute(
                f"INSERT INTO {{s}}.{rest} (guid_key, ref) "
                f"SELECT guid_key, ref FROM {{s}}.{recent} ORDER BY guid_key, ref"
            )
            db.execute(f"DELETE FROM {{s}}.{recent}")  # SQLite empties a table in place
        db.execute(
            "INSERT INTO {s}.meta (key, value) VALUES (?, CAST(? AS TEXT)) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (_MERGED_AT, head),
        )

    @abstractmethod
    def _insert_events(self, rows: list[EventRow]) -> list[tuple[int, str]]:
        """Insert the rows (none of whose guids is stored), in order, and their guid keys into the recent
        level; return ``(seq, guid)`` in seq order.

        Each backend's own, its fastest way (as are the three below)."""

    @abstractmethod
    def _insert_entities(self, rows: list[EntityRow]) -> None:
        """Insert the rows, and their guid keys into the recent level."""

    @abstractmethod
    def _update_entities(self, rows: list[EntityUpdate]) -> None:
        """Each backend's own, its fastest way."""

    @abstractmethod
    def _insert_issues(self, rows: list[IssueRow]) -> None:
        """Each backend's own, its fastest way."""

    def _fold_into_entities(self, new: list[tuple[int, FormSubmission]], result: AppendResult) -> None:
        touched: set[str] = set()
        for _seq, event in new:
            _referenced_guids(event, touched)
        stored: dict[str, Entity | None] = dict.fromkeys(touched)
        ids: dict[str, int] = {}  # the key of each stored row the fold has read: updated and deleted by it
        keys: dict[str, int] = {}  # guid_key of each guid looked up: a new entity's row needs it again
        for guid, (row_id, loaded) in self._load_rows(touched, keys).items():
            stored[guid] = loaded
            ids[guid] = row_id

        def from_table(guid: str) -> Entity | None:
            if guid not in stored:  # e.g. the members of a cascade delete
                found = self._load_rows([guid]).get(guid)
                stored[guid] = None
                if found is not None:
                    ids[guid], stored[guid] = found
            return stored[guid]

        folder = Folder(from_table)
        changes = folder.result.changed
        last_seq: dict[str, int] = {}
        cascades: list[tuple[int, str]] = []
        issue_rows: list[IssueRow] = []
        for seq, event in new:
            issue = folder.apply(event)
            if issue is not None:
                result.issues.append(issue)
                issue_rows.append((issue.event_guid, issue.entity_guid, issue.reason, seq))
            for guid in folder.written:
                last_seq[guid] = seq
                if changes[guid] is None and guid != event.entity_guid:
                    cascades.append((seq, guid))

        inserts: list[EntityRow] = []
        updates: list[EntityUpdate] = []
        deletes: list[tuple[int, int]] = []  # (guid key, id)
        for guid, entity in changes.items():
            known = ids.get(guid)
            if entity is None:
                if known is not None:  # else created and deleted within this chunk: never stored
                    key = keys.get(guid)
                    deletes.append((guid_key(guid) if key is None else key, known))
                continue
            row = (
                entity.type,
                entity.entity_name,
                entity.parent_guid,
                entity.version,
                _dumps(entity.to_json()),
                last_seq[guid],
            )
            if known is None:
                key = keys.get(guid)
                inserts.append((guid_key(guid) if key is None else key, guid, *row))
            else:
                updates.append((*row, known))
        if inserts:
            self._insert_entities(inserts)
        if updates:
            self._update_entities(updates)
        if deletes:
            for fragment, part in self._db.in_([id_ for _key, id_ in deletes]):
                self._db.execute(f"DELETE FROM {{s}}.entities WHERE id {fragment}", part)
            for level in schema.KEY_LEVELS["entities"]:
                self._db.executemany(f"DELETE FROM {{s}}.{level} WHERE guid_key = ? AND ref = ?", deletes)
        if issue_rows:
            self._insert_issues(issue_rows)
        if cascades:
            self._db.executemany("INSERT INTO {s}.cascades (seq, entity_guid) VALUES (?, ?)", cascades)

    def _load_rows(
        self, guids: Iterable[Any], keys: dict[str, int] | None = None
    ) -> dict[str, tuple[int, Entity]]:
        """The stored entities among ``guids``, with the key of their row (the fold may probe with
        whatever an event carried); each guid's :func:`guid_key` is added to ``keys`` when given."""
        json = self._db.json_out
        wanted = {guid: guid_key(guid) for guid in guids if isinstance(guid, str)}
        if keys is not None:
            keys.update(wanted)
        rows = self._by_key("entities", "SELECT id, guid, doc FROM {s}.entities WHERE id", wanted)
        return {guid: (id_, Entity.stored(json(doc))) for id_, guid, doc in rows if guid in wanted}

    def _load_entities(self, guids: Iterable[Any]) -> dict[str, Entity]:
        return {guid: entity for guid, (_id, entity) in self._load_rows(guids).items()}

    # -- read --------------------------------------------------------------------------------------

    def get_events(self, guids: Iterable[str]) -> dict[str, FormSubmission]:
        """The stored events among ``guids`` (an import checks a page of its file against them)."""
        json = self._db.json_out
        stored = FormSubmission.stored
        wanted = {guid: guid_key(guid) for guid in guids if isinstance(guid, str)}
        rows = self._by_key("events", f"SELECT {_EVENT_COLUMNS} FROM {{s}}.events WHERE seq", wanted)
        return {r[1]: stored(r[1], r[2], r[3], json(r[4]), r[5], r[6], r[7]) for r in rows if r[1] in wanted}

    def read(self, after: str | None, limit: int) -> EventPage:
        json = self._db.json_out
        stored = FormSubmission.stored
        with _gc_paused():
            rows, cursor, at_end = self._page(_EVENT_COLUMNS, after, limit)
            # Rows were validated on the way in; validating again on every read doubles the cost of a scan.
            events = [stored(r[1], r[2], r[3], json(r[4]), r[5], r[6], r[7]) for r in rows]
        return EventPage(events=events, cursor=cursor, at_end=at_end)

    def read_touches(self, after: str | None, limit: int, until: str | None = None) -> TouchPage:
        json = self._db.json_out
        with _gc_paused():
            rows, cursor, at_end = self._page(_TOUCH_COLUMNS, after, limit, until)
            cascading = any(r[2] in CASCADING_EVENTS for r in rows)  # else no query on the hot path
            cascaded = self._cascades(parse_cursor(after), rows[-1][0]) if cascading else {}
            touches = []
            for r in rows:
                touches.append(EventTouch(r[1], r[2], r[3], json(r[4]) if r[4] is not None else None))
                # the entities the event deleted besides its own, right after it, by the same user
                touches.extend(EventTouch(g, CASCADE_DELETE, r[3], None) for g in cascaded.get(r[0], ()))
        return TouchPage(touches=touches, cursor=cursor, at_end=at_end)

    def _cascades(self, after: int, last: int) -> dict[int, list[str]]:
        rows = self._db.rows(
            "SELECT seq, entity_guid FROM {s}.cascades WHERE seq > ? AND seq <= ? ORDER BY seq", (after, last)
        )
        out: dict[int, list[str]] = {}
        for seq, guid in rows:
            out.setdefault(seq, []).append(guid)
        return out

    def _page(
        self, columns: str, after: str | None, limit: int, until: str | None = None
    ) -> tuple[list[Any], str | None, bool]:
        """Rows of ``columns`` (the first is ``seq``) after ``after`` and up to ``until`` (``None``: no
        bound): rows, next cursor, at end."""
        start = parse_cursor(after)
        if limit < 1:
            raise ValueError("limit must be at least 1")
        bound = "" if until is None else f" AND seq <= {parse_cursor(until)}"
        with self._lock:
            rows = self._db.rows(
                f"SELECT {columns} FROM {{s}}.events WHERE seq > ?{bound} ORDER BY seq LIMIT ?",
                (start, limit + 1),
            )
            if not rows and start:
                self._check_not_beyond_head(start)
        at_end = len(rows) <= limit
        if not at_end:
            del rows[limit:]
        return rows, (str(rows[-1][0]) if rows else after), at_end

    def _check_not_beyond_head(self, start: int) -> None:
        """A cursor past the head comes from another (replaced or restored) log; following it would
        silently skip every event appended until the sequence catches up."""
        head = int(self.head() or 0)
        if start > head:
            raise ValueError(
                f"event log cursor {start} is beyond the head of {self.where} ({head}): "
                "the checkpoint belongs to another log (was the log replaced or restored?)"
            )

    def iter_events(self, after: str | None = None, page_size: int = 1000) -> Iterator[FormSubmission]:
        return events_after(self, after, page_size)

    def head(self) -> str | None:
        row = self._db.row("SELECT max(seq) FROM {s}.events")
        return None if row is None or row[0] is None else str(row[0])

    def count(self, after: str | None = None) -> int:
        start = parse_cursor(after)
        row = self._db.row("SELECT count(*) FROM {s}.events WHERE seq > ?", (start,))
        return int(row[0]) if row else 0

    # -- entities ----------------------------------------------------------------------------------

    def get_entity(self, guid: str) -> Entity | None:
        return self._load_entities([guid]).get(guid) if isinstance(guid, str) else None

    def get_entities(self, guids: Iterable[str]) -> dict[str, Entity]:
        return self._load_entities(dict.fromkeys(guids))

    def search_entities(self, text: str, limit: int = 20) -> list[Entity]:
        """Entities whose guid is ``text`` or whose document holds it (a name typed by an operator), at
        most ``limit``: the console's lookup, never a listing. Case-insensitive substring; LIKE's wildcards
        in ``text`` match themselves."""
        text = text.strip()
        if not text:
            return []
        pattern = "%" + text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        json = self._db.json_out
        rows = self._db.rows(
            "SELECT guid, doc FROM {s}.entities WHERE guid = ? "
            "OR lower(CAST(doc AS TEXT)) LIKE ? ESCAPE '\\' ORDER BY guid LIMIT ?",
            (text, pattern, max(1, min(limit, 200))),
        )
        return [Entity.stored(json(doc)) for _guid, doc in rows]

    def children_of(self, guid: str) -> list[Entity]:
        """The entities whose ``parentGuid`` is ``guid`` (a household's members, and people its group no
        longer lists): ``dcsync forget --with-members``. No index serves it (one would cost every append,
        schema migration 2), so it scans the entity table in the database: seconds on a large log, for an
        operator's command, never a run."""
        json = self._db.json_out
        rows = self._db.rows("SELECT doc FROM {s}.entities WHERE parent_guid = ? ORDER BY id", (guid,))
        return [Entity.stored(json(doc)) for (doc,) in rows]

    def iter_entities(self, page_size: int = 1000) -> Iterator[Entity]:
        """Every entity, in the order of its row's key (for entities first folded since schema version 4, the
        order they appeared in), a page per query (keyset paging: no OFFSET rescans)."""
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        json = self._db.json_out
        last = 0
        while True:
            rows = self._db.rows(
                "SELECT id, doc FROM {s}.entities WHERE id > ? ORDER BY id LIMIT ?", (last, page_size)
            )
            for _id, doc in rows:
                yield Entity.stored(json(doc))
            if len(rows) < page_size:
                return
            last = rows[-1][0]

    def iter_issues(self, after: str | None = None) -> Iterator[EventIssue]:
        """Events stored but not applicable (after a cursor), oldest first: what to fix."""
        start = parse_cursor(after)
        last_id = 0
        while True:
            rows = self._db.rows(
                "SELECT {issue_key}, event_guid, entity_guid, reason FROM {s}.event_issues "
                "WHERE seq > ? AND {issue_key} > ? ORDER BY {issue_key} LIMIT 1000",
                (start, last_id),
            )
            for _id, event_guid, entity_guid, reason in rows:
                yield EventIssue(event_guid, entity_guid, reason)
            if len(rows) < 1000:
                return
            last_id = rows[-1][0]

    def stats(self) -> dict[str, Any]:
        db = self._db
        with self._lock:
            events = db.row("SELECT count(*), max(seq) FROM {s}.events")
            by_type = dict(db.rows("SELECT type, count(*) FROM {s}.entities GROUP BY type ORDER BY type"))
            by_name = {
                (name if name is not None else "(none)"): n
                for name, n in db.rows(
                    "SELECT entity_name, count(*) FROM {s}.entities GROUP BY entity_name ORDER BY entity_name"
                )
            }
            issues = db.row("SELECT count(*) FROM {s}.event_issues")
        assert events is not None and issues is not None
        return {
            "events": int(events[0]),
            "entities": sum(by_type.values()),
            "entities_by_type": by_type,
            "entities_by_name": by_name,
            "issues": int(issues[0]),
            "head": None if events[1] is None else str(events[1]),
        }

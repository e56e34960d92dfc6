"""The event log's tables, for both backends: one list of migrations, one version number.

Written once in the shared spelling of :mod:`connector_core._sql`. A few names differ between the backends
and are given by each backend module: ``{n}`` prefixes index names (PostgreSQL's tables are ``dcsync_*``
so they can share a schema with other things), ``{issue_id}`` is the issue table's own key column
(PostgreSQL has a ``BIGSERIAL id``; SQLite uses the implicit ``rowid``), with ``{issue_key}`` the name to
order by. The version is the ``schema_version`` row of the ``meta`` table, as in every earlier release.

Why guids are found through :func:`guid_key` rather than an index on their text (migration 4): guids are
random uuids, so each appended event and each new entity lands on a random page of its guid index, and
every commit writes each page it touched. Once the indexes outgrow the cache, an append's cost is those
pages: an index of 32-bit integers is a fraction of the size of one of 36-character strings, so the same
inserts touch fewer pages. Measured on plain SQLite, one million random uuids in commits of 10,000: 70,700
rows/s with a text index, 104,600 with a 64-bit key (``bench/eventlog.py`` has dcsync's own figures, and
32 bits appended 8% faster than 64 there). The
guid itself stays in its row, and every lookup compares it, so two guids sharing a key are never confused.

Add a step at the end, never edit one: a log written by an older dcsync runs only the steps it lacks.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Any

from connector_core._sql import Layout, Migration


def guid_key(guid: str, _md5: Any = hashlib.md5, _first: Any = struct.Struct(">i").unpack_from) -> int:
    """The 32-bit key a guid is found by: the first 4 bytes of its MD5, big-endian, signed.

    MD5 because PostgreSQL computes the same number in SQL (see ``GUID_KEY_POSTGRES``), which lets the
    migration key millions of stored rows in place; not for security. 32 bits because the smaller the
    index, the fewer of its pages an append dirties: two guids sharing a key only cost the lookup a second
    row to compare (at 10,000,000 entities, one lookup in 430 reads one row too many). The defaults bind
    the two library functions once: an append calls this twice per event."""
    return int(_first(_md5(guid.encode(), usedforsecurity=False).digest())[0])


GUID_KEY_SQLITE = "dcsync_guid_key(guid)"
""":func:`guid_key` of the ``guid`` column in SQLite: a function each SQLite connection registers."""
GUID_KEY_POSTGRES = "('x' || left(md5(guid), 8))::bit(32)::int"
""":func:`guid_key` of the ``guid`` column in PostgreSQL, where it is built in (UTF-8 databases)."""

EVENT_COLUMNS = "seq, guid, entity_guid, type, data, timestamp, user_id, sync_level"
ENTITY_COLUMNS = "guid, type, entity_name, parent_guid, version, doc, last_seq"
"""The columns every layout has had, in the order of the rows the store reads and writes."""

MIGRATIONS: tuple[Migration, ...] = (
    # 1: the initial layout (IF NOT EXISTS: logs from before the version row existed had the tables)
    (
        """CREATE TABLE IF NOT EXISTS {s}.events (
            seq {serial},
            guid {key} NOT NULL UNIQUE,
            entity_guid {key} NOT NULL,
            type TEXT NOT NULL,
            data {json} NOT NULL,
            timestamp TEXT NOT NULL,
            user_id TEXT NOT NULL,
            sync_level {small} NOT NULL
        )""",
        # On SQLite a rowid table, not WITHOUT ROWID: new docs land in insertion order and only the small
        # guid index takes random (uuid) inserts, which halves the pages an append dirties and commits.
        """CREATE TABLE IF NOT EXISTS {s}.entities (
            guid {key} PRIMARY KEY,
            type TEXT NOT NULL,
            entity_name TEXT,
            parent_guid {key},
            version INTEGER NOT NULL,
            doc {json} NOT NULL,
            last_seq {bigint} NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS {n}entities_entity_name ON {s}.entities (entity_name)",
        "CREATE INDEX IF NOT EXISTS {n}entities_parent_guid ON {s}.entities (parent_guid)",
        """CREATE TABLE IF NOT EXISTS {s}.event_issues (
            {issue_id}
            event_guid TEXT NOT NULL,
            entity_guid TEXT NOT NULL,
            reason TEXT NOT NULL,
            seq {bigint} NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS {n}event_issues_seq ON {s}.event_issues (seq)",
    ),
    # 2: no index on an entity's parent: no query reads by it, and each append paid for it (a random
    # guid per entity written), about a fifth of an append's time on a large log
    ("DROP INDEX IF EXISTS {s}.entities_parent_guid",),
    # 3: the entities an event deleted besides its own (a group's members, cascaded by delete-entity or
    # resolve-duplicate): gone from the entity table, they would otherwise never reach a push, and their
    # remote records would outlive them
    (
        """CREATE TABLE IF NOT EXISTS {s}.cascades (
            seq {bigint} NOT NULL,
            entity_guid {key} NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS {n}cascades_seq ON {s}.cascades (seq)",
    ),
    # 4: guids found by a 64-bit key instead of a unique index on their text (see the module's docstring);
    # entities get an integer key of their own, for keyset listing and for updates that need no guid lookup.
    # SQLite drops a UNIQUE or a text PRIMARY KEY only by rebuilding the table; PostgreSQL alters in place.
    {
        "sqlite": (
            """CREATE TABLE events_v4 (
                seq INTEGER PRIMARY KEY AUTOINCREMENT,
                guid_key INTEGER NOT NULL,
                guid TEXT NOT NULL,
                entity_guid TEXT NOT NULL,
                type TEXT NOT NULL,
                data TEXT NOT NULL,
                timestamp TEXT NOT NULL,
                user_id TEXT NOT NULL,
                sync_level INTEGER NOT NULL
            )""",
            f"INSERT INTO events_v4 (guid_key, {EVENT_COLUMNS}) "
            f"SELECT {GUID_KEY_SQLITE}, {EVENT_COLUMNS} FROM events ORDER BY seq",
            # what AUTOINCREMENT had handed out, even where the rows holding it are gone
            "UPDATE sqlite_sequence SET seq = max(seq, coalesce((SELECT seq FROM sqlite_sequence "
            "WHERE name = 'events'), 0)) WHERE name = 'events_v4'",
            "DROP TABLE events",
            "ALTER TABLE events_v4 RENAME TO events",
            "CREATE INDEX events_guid_key ON events (guid_key)",
            """CREATE TABLE entities_v4 (
                id INTEGER PRIMARY KEY,
                guid_key INTEGER NOT NULL,
                guid TEXT NOT NULL,
                type TEXT NOT NULL,
                entity_name TEXT,
                parent_guid TEXT,
                version INTEGER NOT NULL,
                doc TEXT NOT NULL,
                last_seq INTEGER NOT NULL
            )""",
            f"INSERT INTO entities_v4 (guid_key, {ENTITY_COLUMNS}) "
            f"SELECT {GUID_KEY_SQLITE}, {ENTITY_COLUMNS} FROM entities ORDER BY last_seq, guid",
            "DROP TABLE entities",
            "ALTER TABLE entities_v4 RENAME TO entities",
            "CREATE INDEX entities_guid_key ON entities (guid_key)",
            "CREATE INDEX entities_entity_name ON entities (entity_name)",
        ),
        "postgres": (
            "ALTER TABLE {s}.events ADD COLUMN guid_key INTEGER",
            f"UPDATE {{s}}.events SET guid_key = {GUID_KEY_POSTGRES}",
            "ALTER TABLE {s}.events ALTER COLUMN guid_key SET NOT NULL",
            "ALTER TABLE {s}.events DROP CONSTRAINT IF EXISTS {n}events_guid_key",
            "CREATE INDEX {n}events_guid_key ON {s}.events (guid_key)",
            "ALTER TABLE {s}.entities ADD COLUMN guid_key INTEGER",
            f"UPDATE {{s}}.entities SET guid_key = {GUID_KEY_POSTGRES}",
            "ALTER TABLE {s}.entities ALTER COLUMN guid_key SET NOT NULL",
            "ALTER TABLE {s}.entities DROP CONSTRAINT IF EXISTS {n}entities_pkey",
            "ALTER TABLE {s}.entities ADD COLUMN id BIGSERIAL PRIMARY KEY",
            "CREATE INDEX {n}entities_guid_key ON {s}.entities (guid_key)",
        ),
    },
)
"""Ordered: migration ``i`` takes the layout from version ``i`` to ``i + 1``. Only ever append."""

GET_VERSION = "SELECT value FROM {s}.meta WHERE key = 'schema_version'"

LAYOUT = Layout(
    prepare=("CREATE TABLE IF NOT EXISTS {s}.meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",),
    migrations=MIGRATIONS,
    get_version=GET_VERSION,
    set_version=(
        "INSERT INTO {s}.meta (key, value) VALUES ('schema_version', CAST(? AS TEXT)) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    ),
    lock_name="dcsync-ddl",
)

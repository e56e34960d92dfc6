"""The event log's tables, for both backends: one list of migrations, one version number.

Written once in the shared spelling of :mod:`connector_core._sql`. A few names differ between the backends
and are given by each backend module: ``{n}`` prefixes index names (PostgreSQL's tables are ``dcsync_*``
so they can share a schema with other things), ``{issue_id}`` is the issue table's own key column
(PostgreSQL has a ``BIGSERIAL id``; SQLite uses the implicit ``rowid``), with ``{issue_key}`` the name to
order by, and ``{without_rowid}`` makes a key table one B-tree on SQLite. The version is the
``schema_version`` row of the ``meta`` table, as in every earlier release.

Why guids are found through keys rather than a unique index on their text (migration 4): guids are random
uuids, so each appended event and each new entity lands on a random page of its guid index, and every
commit writes each page it touched. Once the indexes outgrow the cache, an append's cost is those pages.
Two things shrink them. A key is :func:`guid_key`, 32 bits, where a uuid is 36 characters: an index a
fraction of the size. And the keys live in two levels, like a log-structured merge tree: ``*_keys_recent``
takes the keys of the latest appends and stays small, so an append dirties few of its pages, and every
``MERGE_EVERY`` events it is merged, in key order, into ``*_keys``, which that sorted insert walks once, a
page at a time (SQLite; PostgreSQL, whose commits do not write the pages they dirty, keeps its keys in the
recent level). ``ref`` is the row a key stands for: an event's ``seq``, an entity's ``id``. The guid itself
stays in its row, and every lookup compares it, so two guids sharing a key are never confused. Measured on
plain SQLite, one million random uuids in commits of 10,000: 70,700 rows/s with a text index, 104,600 with a
64-bit key, 118,700 with two levels of keys (``bench/eventlog.py`` has dcsync's own figures).
"""

from __future__ import annotations

import hashlib
import struct
from functools import partial
from typing import Any

from connector_core._sql import Layout, Migration

try:  # CPython's own MD5: half the time of OpenSSL's for a 36-byte guid (no EVP set-up per call)
    from _md5 import md5 as _builtin_md5
except ImportError:  # a build without it: the same digest, through OpenSSL
    _builtin_md5 = partial(hashlib.md5, usedforsecurity=False)


def guid_key(guid: str, _md5: Any = _builtin_md5, _first: Any = struct.Struct(">i").unpack_from) -> int:
    """The 32-bit key a guid is found by: the first 4 bytes of its MD5, big-endian, signed.

    MD5 because PostgreSQL computes the same number in SQL (see ``GUID_KEY_POSTGRES``), which lets the
    migration key millions of stored rows in place; not for security. 32 bits because the smaller the
    index, the fewer of its pages an append dirties: two guids sharing a key only cost the lookup a second
    row to compare (at 10,000,000 entities, one lookup in 430 reads one row too many). The defaults bind
    the two library functions once: an append calls this twice per event."""
    return int(_first(_md5(guid.encode()).digest())[0])


GUID_KEY_SQLITE = "dcsync_guid_key(guid)"
""":func:`guid_key` of the ``guid`` column in SQLite: a function each SQLite connection registers."""
GUID_KEY_POSTGRES = "('x' || left(md5(guid), 8))::bit(32)::int"
""":func:`guid_key` of the ``guid`` column in PostgreSQL, where it is built in (UTF-8 databases)."""

EVENT_COLUMNS = "seq, guid, entity_guid, type, data, timestamp, user_id, sync_level"
ENTITY_COLUMNS = "guid, type, entity_name, parent_guid, version, doc, last_seq"
"""The columns every layout has had, in the order of the rows the store reads and writes."""

KEY_LEVELS = {
    "events": ("event_keys", "event_keys_recent"),
    "entities": ("entity_keys", "entity_keys_recent"),
}
"""Each keyed table's two levels of guid keys: all but the latest, and the latest (see the docstring)."""

_KEY_TABLES = tuple(
    f"CREATE TABLE {{s}}.{level} (guid_key INTEGER NOT NULL, ref {{bigint}} NOT NULL, "
    f"PRIMARY KEY (guid_key, ref)){{without_rowid}}"
    for levels in KEY_LEVELS.values()
    for level in levels
)

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
    # 4: guids found through two levels of 32-bit keys instead of a unique index on their text (see the
    # module's docstring); entities get an integer key of their own, for keyset listing and for updates
    # that need no guid lookup. SQLite drops a UNIQUE or a text PRIMARY KEY only by rebuilding the table;
    # PostgreSQL alters in place.
    {
        "sqlite": (
            """CREATE TABLE events_v4 (
                seq INTEGER PRIMARY KEY AUTOINCREMENT,
                guid TEXT NOT NULL,
                entity_guid TEXT NOT NULL,
                type TEXT NOT NULL,
                data TEXT NOT NULL,
                timestamp TEXT NOT NULL,
                user_id TEXT NOT NULL,
                sync_level INTEGER NOT NULL
            )""",
            f"INSERT INTO events_v4 ({EVENT_COLUMNS}) SELECT {EVENT_COLUMNS} FROM events ORDER BY seq",
            # what AUTOINCREMENT had handed out, even where the rows holding it are gone
            "UPDATE sqlite_sequence SET seq = max(seq, coalesce((SELECT seq FROM sqlite_sequence "
            "WHERE name = 'events'), 0)) WHERE name = 'events_v4'",
            "DROP TABLE events",
            "ALTER TABLE events_v4 RENAME TO events",
            """CREATE TABLE entities_v4 (
                id INTEGER PRIMARY KEY,
                guid TEXT NOT NULL,
                type TEXT NOT NULL,
                entity_name TEXT,
                parent_guid TEXT,
                version INTEGER NOT NULL,
                doc TEXT NOT NULL,
                last_seq INTEGER NOT NULL
            )""",
            f"INSERT INTO entities_v4 ({ENTITY_COLUMNS}) "
            f"SELECT {ENTITY_COLUMNS} FROM entities ORDER BY last_seq, guid",
            "DROP TABLE entities",
            "ALTER TABLE entities_v4 RENAME TO entities",
            "CREATE INDEX entities_entity_name ON entities (entity_name)",
            *_KEY_TABLES,
            f"INSERT INTO event_keys SELECT {GUID_KEY_SQLITE}, seq FROM events ORDER BY 1, 2",
            f"INSERT INTO entity_keys SELECT {GUID_KEY_SQLITE}, id FROM entities ORDER BY 1, 2",
        ),
        "postgres": (
            "ALTER TABLE {s}.events DROP CONSTRAINT IF EXISTS {n}events_guid_key",
            "ALTER TABLE {s}.entities DROP CONSTRAINT IF EXISTS {n}entities_pkey",
            "ALTER TABLE {s}.entities ADD COLUMN id BIGSERIAL PRIMARY KEY",
            *_KEY_TABLES,
            f"INSERT INTO {{s}}.event_keys SELECT {GUID_KEY_POSTGRES}, seq FROM {{s}}.events ORDER BY 1, 2",
            f"INSERT INTO {{s}}.entity_keys SELECT {GUID_KEY_POSTGRES}, id FROM {{s}}.entities ORDER BY 1, 2",
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

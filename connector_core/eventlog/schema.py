"""The event log's tables, for both backends: one list of migrations, one version number.

Written once in the shared spelling of :mod:`connector_core._sql`. Two names differ between the backends
and are given by each backend module: ``{n}`` prefixes index names (PostgreSQL's tables are ``dcsync_*``
so they can share a schema with other things), and ``{issue_id}`` is the issue table's own key column
(PostgreSQL has a ``BIGSERIAL id``; SQLite uses the implicit ``rowid``), with ``{issue_key}`` the name to
order by. The version is the ``schema_version`` row of the ``meta`` table, as in every earlier release.

Add a step at the end, never edit one: a log written by an older dcsync runs only the steps it lacks.
"""

from __future__ import annotations

from connector_core._sql import Layout, Migration

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

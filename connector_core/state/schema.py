"""The state store's tables, for both backends: one list of migrations, one numbering.

Each step is written once in the shared spelling of :mod:`connector_core._sql` (``{s}.`` before a table,
``{key}`` for a text key that must sort byte-wise, ``{json}``, ``{serial}``, ``{bool}``/``{false}``), so a
store moves between SQLite and PostgreSQL with the same meaning and the same version number. The rendered DDL
is exactly what the two per-backend lists of earlier releases created, so their stores open unchanged.

Add a step at the end, never edit one: migration ``i`` takes the schema from version ``i`` to ``i + 1`` in
one transaction, and a store written by an older dcsync runs only the steps it lacks.
"""

from __future__ import annotations

from connector_core._sql import Layout, Migration

MIGRATIONS: tuple[Migration, ...] = (
    # 1: the initial layout
    (
        """CREATE TABLE {s}.checkpoints (
            connector {key} NOT NULL,
            direction TEXT NOT NULL,
            value TEXT,
            updated_at TEXT NOT NULL,
            PRIMARY KEY (connector, direction)
        )""",
        """CREATE TABLE {s}.links (
            connector {key} NOT NULL,
            entity_guid {key} NOT NULL,
            external_id {key} NOT NULL,
            entity_name TEXT,
            snapshot {json} NOT NULL,
            remote_version TEXT,
            synced_at TEXT,
            deleted {bool} NOT NULL DEFAULT {false},
            PRIMARY KEY (connector, entity_guid),
            UNIQUE (connector, external_id)
        )""",
        """CREATE TABLE {s}.dead_letters (
            id {serial},
            connector {key} NOT NULL,
            direction TEXT NOT NULL,
            ref {key} NOT NULL,
            reason TEXT NOT NULL,
            payload {json} NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 1,
            status TEXT NOT NULL DEFAULT 'open',
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )""",
        # at most one *open* dead letter per record; closed ones are history
        """CREATE UNIQUE INDEX dead_letters_open ON {s}.dead_letters (connector, direction, ref)
            WHERE status = 'open'""",
        "CREATE INDEX dead_letters_status ON {s}.dead_letters (status, connector)",
        """CREATE TABLE {s}.runs (
            id {serial},
            connector {key} NOT NULL,
            direction TEXT NOT NULL,
            trigger TEXT NOT NULL,
            started_at TEXT NOT NULL,
            finished_at TEXT,
            outcome TEXT NOT NULL,
            counts {json} NOT NULL,
            error TEXT
        )""",
        "CREATE INDEX runs_connector ON {s}.runs (connector, id)",
    ),
    # 2: three-way merge base on links; create intents; parked children; conflicts
    (
        "ALTER TABLE {s}.links ADD COLUMN base {json} NOT NULL DEFAULT '{}'",
        """CREATE TABLE {s}.intents (
            connector {key} NOT NULL,
            ref {key} NOT NULL,
            created_at TEXT NOT NULL,
            PRIMARY KEY (connector, ref)
        )""",
        """CREATE TABLE {s}.parked (
            connector {key} NOT NULL,
            entity_guid {key} NOT NULL,
            parent_guid TEXT NOT NULL,
            reason TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 1,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            PRIMARY KEY (connector, entity_guid)
        )""",
        """CREATE TABLE {s}.conflicts (
            id {serial},
            connector {key} NOT NULL,
            entity_guid {key} NOT NULL,
            external_id TEXT NOT NULL,
            policy TEXT NOT NULL,
            status TEXT NOT NULL,
            resolution TEXT,
            base {json} NOT NULL,
            local {json} NOT NULL,
            remote {json} NOT NULL,
            remote_version TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )""",
        """CREATE UNIQUE INDEX conflicts_open ON {s}.conflicts (connector, entity_guid)
            WHERE status = 'open'""",
    ),
    # 3: scheduled runs claimed per tick, so schedulers sharing a store run each tick once
    (
        """CREATE TABLE {s}.ticks (
            connector {key} NOT NULL,
            direction TEXT NOT NULL,
            tick TEXT NOT NULL,
            holder TEXT NOT NULL,
            claimed_at TEXT NOT NULL,
            PRIMARY KEY (connector, direction, tick)
        )""",
    ),
    # 4: children held behind a parent are found by the parent when its replay delivers it
    ("CREATE INDEX parked_parent ON {s}.parked (connector, parent_guid)",),
    # 5: sharded bulk loads: the plan (snapshot of the log's head and the push checkpoint) and its shards
    (
        """CREATE TABLE {s}.bulk_plans (
            id {key} NOT NULL PRIMARY KEY,
            connector {key} NOT NULL,
            shards INTEGER NOT NULL,
            start_cursor TEXT,
            mark TEXT,
            status TEXT NOT NULL,
            created_at TEXT NOT NULL,
            finished_at TEXT
        )""",
        # at most one open plan per connector: a rerun of plan_bulk_load finds it instead of adding one
        "CREATE UNIQUE INDEX bulk_plans_open ON {s}.bulk_plans (connector) WHERE status = 'open'",
        """CREATE TABLE {s}.bulk_shards (
            plan_id {key} NOT NULL,
            shard INTEGER NOT NULL,
            status TEXT NOT NULL,
            run_id INTEGER,
            updated_at TEXT NOT NULL,
            PRIMARY KEY (plan_id, shard)
        )""",
    ),
    # 6: the audit trail of operator actions (replay, discard, resolve, purge, rekey, forget, logins)
    (
        """CREATE TABLE {s}.actions (
            id {serial},
            at TEXT NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            connector TEXT,
            target TEXT,
            detail {json} NOT NULL
        )""",
        "CREATE INDEX actions_connector ON {s}.actions (connector, id)",
    ),
    # 7: facts about the store itself. Encryption at rest keeps a ``sealed_key:<key id>`` row per key that
    # may have sealed a value here, so that a missing or wrong key is caught at open, in one line, before any
    # row is read (connector_core/state/sealing.py).
    ("CREATE TABLE {s}.state_meta (key {key} NOT NULL PRIMARY KEY, value TEXT NOT NULL)",),
)
"""Ordered: migration ``i`` takes the schema from version ``i`` to ``i + 1``. Only ever append."""

GET_VERSION = "SELECT max(version) FROM {s}.schema_version"

LAYOUT = Layout(
    prepare=("CREATE TABLE IF NOT EXISTS {s}.schema_version (version INTEGER NOT NULL)",),
    migrations=MIGRATIONS,
    get_version=GET_VERSION,
    set_version=("DELETE FROM {s}.schema_version", "INSERT INTO {s}.schema_version (version) VALUES (?)"),
    lock_name="dcsync-state-ddl",
)

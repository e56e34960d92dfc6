"""Reading DataCollect's own PostgreSQL ``events`` table: the ``datacollect`` mirror's feed for large loads.

The sync API serves 10 events per request and cannot page inside a crowded millisecond (datacollect.md §2.1,
§3.4: 2,000 events took 201 requests). Reading the table directly pages by the keyset ``(timestamp, guid)``,
which is total (the guid breaks every tie), so no tie, microsecond or page boundary can hide an event; the
same look-back window as the API feed re-reads the recent past so that events which reached DataCollect late,
with older timestamps, are still picked up, and the mirror's append drops what it already has.

Read-only by construction (the connection sets ``default_transaction_read_only``), and each page is its own
short query: a long-open transaction on DataCollect's production database would hold back its vacuum.
DataCollect has no index on ``timestamp`` (§2.2), so each page scans the tenant's rows; an index on
``events (tenant_id, timestamp, guid)`` makes each page an index range scan, and is the DBA's call, not ours.
Writes never come here: they go through the API (:meth:`DataCollectEventLog.append`) so that DataCollect
applies them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

from connector_core._postgres import check_identifier, connect, redact_url
from connector_core.eventlog.datacollect_http import DataCollectError
from connector_core.events import EventError, FormSubmission, format_timestamp, parse_timestamp

log = logging.getLogger("dcsync.datacollect")

DEFAULT_PAGE_SIZE = 5000
_MS = timedelta(milliseconds=1)
_COLUMNS = "guid, entity_guid, type, data, timestamp, user_id, sync_level"


class DataCollectDbFeed:
    """A :class:`~connector_core.eventlog.datacollect_http.Feed` over DataCollect's ``events`` table."""

    def __init__(
        self,
        url: str,
        config_id: str,
        *,
        lookback: timedelta,
        schema: str = "public",
        page_size: int = DEFAULT_PAGE_SIZE,
        connection: psycopg.Connection[Any] | None = None,
    ) -> None:
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        self.config_id = config_id
        self.lookback = lookback
        self.page_size = page_size
        self.description = f"{redact_url(url)} events table (tenant {config_id!r})"
        self._conn = connection or connect(url, application_name="dcsync datacollect reader", read_only=True)
        table = sql.Identifier(check_identifier(schema, "DataCollect database schema"), "events")
        base = sql.SQL("SELECT {cols} FROM {table} WHERE tenant_id = %s").format(
            cols=sql.SQL(_COLUMNS), table=table
        )
        order = sql.SQL(' ORDER BY timestamp, guid COLLATE "C" LIMIT %s')
        self._first = (base + order).as_string(self._conn)
        self._after = (base + sql.SQL(' AND (timestamp, guid COLLATE "C") > (%s, %s)') + order).as_string(
            self._conn
        )
        self._within = (
            base + sql.SQL(" AND timestamp >= %s AND timestamp < %s ORDER BY timestamp, guid")
        ).as_string(self._conn)
        self._kept_local = (
            sql.SQL(
                "SELECT event_guid, changes FROM {table} WHERE tenant_id = %s "
                "AND action = 'conflict-resolution' AND event_guid = ANY(%s)"
            )
            .format(table=sql.Identifier(schema, "audit_log"))
            .as_string(self._conn)
        )
        self._audit_readable = True

    def close(self) -> None:
        self._conn.close()

    def resolutions(self, events: list[FormSubmission]) -> tuple[dict[str, str], set[str]]:
        """What DataCollect's conflict rule did with ``events`` (its ``audit_log`` says): those it stored but
        kept local, with its reason (the mirror keeps them unfolded), and those it applied on top of the
        entity's ``initial`` state. Without read access to ``audit_log`` (grant it to the read-only role)
        every event is folded as if applied normally, with one warning."""
        from connector_core.eventlog.datacollect_http import kept_local_reason

        if not events or not self._audit_readable:
            return {}, set()
        try:
            rows = self._conn.execute(self._kept_local, (self.config_id, [e.guid for e in events])).fetchall()
        except (psycopg.errors.UndefinedTable, psycopg.errors.InsufficientPrivilege) as exc:
            self._audit_readable = False
            log.warning(
                "cannot read DataCollect's audit_log (%s): events DataCollect kept local are folded into "
                "the mirror as if applied; grant the reader SELECT on audit_log",
                str(exc).strip().splitlines()[0],
            )
            return {}, set()
        kept: dict[str, str] = {}
        on_initial: set[str] = set()
        for guid, raw in rows:
            changes = raw if isinstance(raw, dict) else {}
            if changes.get("resolution") == "kept-local":
                kept[guid] = kept_local_reason(changes)
            elif changes.get("resolution") == "applied-remote":
                on_initial.add(guid)
        return kept, on_initial

    def _event(self, row: tuple[Any, ...]) -> FormSubmission:
        guid, entity_guid, type_, data, timestamp, user_id, sync_level = row
        try:
            return FormSubmission.from_json(
                {
                    "guid": guid,
                    "entityGuid": entity_guid,
                    "type": type_,
                    "data": data,
                    "timestamp": timestamp,
                    "userId": user_id,
                    "syncLevel": sync_level,
                },
                where=f"DataCollect events table, tenant {self.config_id!r}",
            )
        except EventError as exc:
            raise DataCollectError(f"a row dcsync cannot read as an event: {exc}") from None

    def batches(self, high_water: datetime | None, pending: set[str]) -> Iterator[list[FormSubmission]]:
        """Keyset pages from ``high_water`` minus the look-back window, oldest first.

        Milliseconds left pending by the API feed are read whole first: with the table, nothing is crowded.
        """
        for millisecond in sorted(pending):
            start = parse_timestamp(millisecond)
            rows = self._conn.execute(self._within, (self.config_id, start, start + _MS)).fetchall()
            if rows:
                yield [self._event(r) for r in rows]
        pending.clear()
        key: tuple[datetime, str] | None = None
        if high_water is not None:
            key = (high_water - self.lookback, "")
        while True:
            if key is None:
                rows = self._conn.execute(self._first, (self.config_id, self.page_size)).fetchall()
            else:
                rows = self._conn.execute(
                    self._after, (self.config_id, key[0], key[1], self.page_size)
                ).fetchall()
            if not rows:
                return
            yield [self._event(r) for r in rows]
            key = (rows[-1][4], rows[-1][0])
            log.debug("read %d events up to %s", len(rows), format_timestamp(key[0]))
            if len(rows) < self.page_size:
                return

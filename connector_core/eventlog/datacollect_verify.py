"""``dcsync log verify``: does a ``datacollect`` mirror agree with the DataCollect tenant it mirrors?

Why a second walk rather than trusting the mirror's own marks: the question is exactly whether those marks
lost something. The tenant is read again from the start into a scratch mirror (same lossless walk, its
own file, so memory stays flat), and the two SQLite files are compared with SQL: events per type, event guids
on one side only, and per entity the version and a digest of its data. Then the entities DataCollect itself
lists (``GET /api/entities``: at most 1000, newest first; the API offers no more) are compared with the
mirror's, field by field, which is what catches a mirror that folded an event DataCollect did not apply.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from connector_core.eventlog.datacollect_http import DataCollectError, DataCollectEventLog

_SHOWN = 10


@dataclass(slots=True)
class VerifyReport:
    """Differences between a mirror and its tenant; empty lists and equal counts mean they agree."""

    events_by_type: dict[str, tuple[int, int]] = field(default_factory=dict)
    """type -> (in the mirror, in DataCollect), only for the types whose counts differ."""
    missing_events: list[str] = field(default_factory=list)
    """In DataCollect, not in the mirror (first few)."""
    extra_events: list[str] = field(default_factory=list)
    """In the mirror, not in DataCollect (first few)."""
    entity_differences: list[str] = field(default_factory=list)
    """One line per entity whose presence, version or data differs (first few)."""
    counts: dict[str, int] = field(default_factory=dict)
    checked_listed: int = 0
    """Entities compared with DataCollect's own listing."""

    @property
    def differs(self) -> bool:
        return bool(
            self.events_by_type or self.missing_events or self.extra_events or self.entity_differences
        )

    def lines(self) -> list[str]:
        out = []
        for type_, (ours, theirs) in sorted(self.events_by_type.items()):
            out.append(f"events of type {type_}: mirror {ours}, DataCollect {theirs}")
        if self.missing_events:
            out.append(
                f"{self.counts.get('missing', 0)} events in DataCollect missing from the mirror, e.g. "
                + ", ".join(self.missing_events)
            )
        if self.extra_events:
            out.append(
                f"{self.counts.get('extra', 0)} events in the mirror that DataCollect does not hold, e.g. "
                + ", ".join(self.extra_events)
            )
        if self.entity_differences:
            out.append(f"{self.counts.get('entities', 0)} entities differ:")
            out.extend(f"  {line}" for line in self.entity_differences)
        return out


def _digest(doc: str) -> str:
    data = json.loads(doc).get("data") or {}
    return _data_digest(data)


def _data_digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def verify_mirror(mirror: DataCollectEventLog) -> VerifyReport:
    """Compare ``mirror`` with its tenant (see the module docstring). The mirror itself is not changed."""
    report = VerifyReport()
    scratch = tempfile.mkdtemp(prefix="dcsync-verify-")
    try:
        fresh = DataCollectEventLog(
            mirror.client.clone(),
            Path(scratch) / "fresh.db",
            lookback_seconds=mirror.lookback.total_seconds(),
            refresh_interval=None,
        )
        try:
            fresh.refresh()
            if fresh.stats()["datacollect"]["pending_milliseconds"]:
                raise DataCollectError(
                    "verify could not read every event of a crowded millisecond (the audit feed failed); "
                    "run it again"
                )
        finally:
            fresh.close()
        _compare_files(mirror.local.path, str(Path(scratch) / "fresh.db"), report)
        _compare_listing(mirror, report)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return report


def _compare_files(mirror_path: str, fresh_path: str, report: VerifyReport) -> None:
    conn = sqlite3.connect(f"file:{fresh_path}?mode=ro", uri=True)
    try:
        conn.execute("ATTACH DATABASE ? AS m", (f"file:{mirror_path}?mode=ro",))
        ours = dict(conn.execute("SELECT type, count(*) FROM m.events GROUP BY type").fetchall())
        theirs = dict(conn.execute("SELECT type, count(*) FROM main.events GROUP BY type").fetchall())
        for type_ in set(ours) | set(theirs):
            if ours.get(type_, 0) != theirs.get(type_, 0):
                report.events_by_type[type_] = (ours.get(type_, 0), theirs.get(type_, 0))
        missing_q = "SELECT guid FROM main.events EXCEPT SELECT guid FROM m.events"
        extra_q = "SELECT guid FROM m.events EXCEPT SELECT guid FROM main.events"
        report.counts["missing"] = conn.execute(f"SELECT count(*) FROM ({missing_q})").fetchone()[0]
        report.counts["extra"] = conn.execute(f"SELECT count(*) FROM ({extra_q})").fetchone()[0]
        report.missing_events = [r[0] for r in conn.execute(f"{missing_q} ORDER BY 1 LIMIT {_SHOWN}")]
        report.extra_events = [r[0] for r in conn.execute(f"{extra_q} ORDER BY 1 LIMIT {_SHOWN}")]
        differing = 0
        rows = conn.execute(
            "SELECT coalesce(a.guid, b.guid), a.version, a.doc, b.version, b.doc FROM m.entities a "
            "FULL OUTER JOIN main.entities b ON a.guid = b.guid "
            "WHERE a.guid IS NULL OR b.guid IS NULL OR a.version != b.version OR a.doc != b.doc"
        )
        for guid, our_version, our_doc, their_version, their_doc in rows:
            if our_doc is None:
                line = f"entity {guid}: in DataCollect (version {their_version}), not in the mirror"
            elif their_doc is None:
                line = f"entity {guid}: in the mirror (version {our_version}), not in DataCollect"
            elif our_version != their_version:
                line = f"entity {guid}: version {our_version} in the mirror, {their_version} in DataCollect"
            elif (our_hash := _digest(our_doc)) != (their_hash := _digest(their_doc)):
                line = f"entity {guid}: data digest {our_hash} in the mirror, {their_hash} in DataCollect"
            else:
                continue  # the same data, written in another key order
            differing += 1
            if len(report.entity_differences) < _SHOWN:
                report.entity_differences.append(line)
        report.counts["entities"] = differing
    finally:
        conn.close()


def _compare_listing(mirror: DataCollectEventLog, report: VerifyReport) -> None:
    listed = mirror.client.entities(limit=1000)
    ours = mirror.local.get_entities([str(row.get("guid")) for row in listed])
    for row in listed:
        guid = str(row.get("guid"))
        report.checked_listed += 1
        entity = ours.get(guid)
        if entity is None:
            line = f"entity {guid}: listed by DataCollect, not in the mirror"
        elif _data_digest(entity.data) != _data_digest(row.get("data") or {}):
            fields = sorted(
                k
                for k in set(entity.data) | set(row.get("data") or {})
                if entity.data.get(k) != (row.get("data") or {}).get(k)
            )
            line = f"entity {guid}: DataCollect holds other values of {', '.join(fields)}"
        else:
            continue
        report.counts["entities"] = report.counts.get("entities", 0) + 1
        if len(report.entity_differences) < _SHOWN:
            report.entity_differences.append(line)

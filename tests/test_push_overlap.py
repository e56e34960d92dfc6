"""A batch the remote took whole is committed while the next one is on the wire.

The overlap must not change what a run guarantees: no more requests at once than ``in_flight``, a refusal
still committed (and a systemic streak still stopping the run) before another batch leaves, and a commit
that fails after the next batch left loses and duplicates nothing once the run is repeated.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pytest

from connector_core.connector import (
    CheckResult,
    Connector,
    ConnectorConfig,
    Operation,
    PushRecord,
    PushResult,
)
from connector_core.sample import mobile_log
from connector_core.sync import push as push_module
from connector_core.testing.harness import SyncHarness


class _Remote(Connector):
    """Keeps records by ref, answers ``lookup`` truthfully, and watches how many pushes overlap."""

    type_name = "overlap"
    max_in_flight = 8

    def __init__(self, latency: float = 0.01) -> None:
        super().__init__("reg", ConnectorConfig())
        self.latency = latency
        self.records: dict[str, dict] = {}
        self.creates: Counter[str] = Counter()
        self.batches: list[list[str]] = []
        self.refuse_all: str | None = None
        self._lock = threading.Lock()
        self._active = 0
        self.most_at_once = 0

    def check(self) -> CheckResult:
        return CheckResult(True, "ok")

    def push(self, batch: Sequence[PushRecord]) -> list[PushResult]:
        with self._lock:
            self._active += 1
            self.most_at_once = max(self.most_at_once, self._active)
            self.batches.append([r.ref for r in batch])
        try:
            time.sleep(self.latency)  # long enough for the engine to plan and commit meanwhile
            results = []
            for record in batch:
                if self.refuse_all is not None:
                    results.append(PushResult.rejected(record.ref, self.refuse_all))
                    continue
                with self._lock:
                    if record.operation is Operation.CREATE:
                        self.creates[record.ref] += 1
                    self.records[record.ref] = dict(record.payload)
                results.append(PushResult.delivered(record.ref, f"x-{record.ref}"))
            return results
        finally:
            with self._lock:
                self._active -= 1

    def lookup(self, refs: Sequence[str]) -> dict[str, str]:
        with self._lock:
            return {ref: f"x-{ref}" for ref in refs if ref in self.records}


def _harness(tmp_path: Path, remote: _Remote, *, in_flight: int, systemic_after: int = 20) -> SyncHarness:
    harness = SyncHarness(
        remote, tmp_path, batch_size=10, page_size=200, in_flight=in_flight, systemic_after=systemic_after
    )
    harness.append(mobile_log(households=20, members=4, updates=0, seed=3))
    return harness


@pytest.mark.parametrize("in_flight", [1, 2, 4])
def test_no_more_requests_at_once_than_in_flight(tmp_path: Path, in_flight: int) -> None:
    remote = _Remote(latency=0.02)
    harness = _harness(tmp_path, remote, in_flight=in_flight)
    try:
        report = harness.push()
        assert report.error is None, report.error
        assert report.counts.created == 100
        assert remote.most_at_once <= in_flight
        if in_flight > 1:  # the bound is reached, not just respected by sending one at a time
            assert remote.most_at_once > 1
        assert len(harness.links()) == 100
    finally:
        harness.close()


def test_a_streak_of_refusals_stops_the_run_before_another_batch_leaves(tmp_path: Path) -> None:
    remote = _Remote()
    remote.refuse_all = "name is required"
    harness = _harness(tmp_path, remote, in_flight=1, systemic_after=15)
    try:
        report = harness.push()
        assert report.error is not None and "name is required" in report.error
        # 10 refusals, then 5 of the second batch reach the streak: no third batch is sent
        assert len(remote.batches) == 2, remote.batches
        assert harness.dead_letters() == []  # a systemic streak dead-letters none of its records
        assert harness.checkpoint("push") is None
    finally:
        harness.close()


def test_a_commit_that_fails_after_the_next_batch_left_duplicates_nothing_on_rerun(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    remote = _Remote()
    harness = _harness(tmp_path, remote, in_flight=1)
    real_commit = push_module.Pusher._commit
    commits = Counter[str]()

    def failing_commit(self, batch, results, sender, refused):  # type: ignore[no-untyped-def]
        commits["calls"] += 1
        if commits["calls"] == 3:
            waited = time.monotonic() + 2  # the next batch is submitted; its thread may not be in push yet
            while len(remote.batches) < 4 and time.monotonic() < waited:
                time.sleep(0.005)
            commits["sent_when_failed"] = len(remote.batches)
            raise OSError("disk I/O error")  # the state store fails while batch 4 is on the wire
        return real_commit(self, batch, results, sender, refused)

    monkeypatch.setattr(push_module.Pusher, "_commit", failing_commit)
    try:
        with pytest.raises(OSError, match="disk I/O error"):
            harness.push()
        assert commits["sent_when_failed"] == 4, "the failed batch's commit did not overlap the next request"
        assert len(remote.records) == 40  # delivered; the third batch's links were never written
        assert len(harness.links()) == 30  # batches 1, 2 and 4 (settled as the run unwound)
        assert harness.checkpoint("push") is None

        monkeypatch.setattr(push_module.Pusher, "_commit", real_commit)
        report = harness.push()
        assert report.error is None, report.error
        assert [ref for ref, n in remote.creates.items() if n > 1] == []  # looked up, then updated
        assert len(remote.records) == 100 and len(harness.links()) == 100
        assert harness.links() == {ref: f"x-{ref}" for ref in remote.records}
        assert harness.checkpoint("push") == harness.eventlog.head()
    finally:
        harness.close()

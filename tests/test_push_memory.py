"""Streams, not lists: a push holds a page of work, whatever the size of the log and the state store.

The fake registry runs in its own process, so the records it keeps are not counted; what tracemalloc sees
is the engine's own Python memory at its peak during the run.
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest

from connector_core.project import Project
from connector_core.sample import mobile_log
from connector_core.sync.runner import run_connector
from connector_core.testing.server import fake_server_process


def _push_peak(tmp_path: Path, url: str, households: int) -> tuple[int, int]:
    """Peak traced bytes of one push of ``households`` households (4 members each); records created."""
    config = tmp_path / f"{households}" / "dcsync.yaml"
    config.parent.mkdir()
    config.write_text(
        "connectors:\n  reg:\n    type: mock\n    batch_size: 50\n    page_size: 200\n"
        f"    settings:\n      url: {url}\n"
    )
    project = Project.open(config)
    try:
        project.eventlog.append(mobile_log(households=households, members=4, updates=1))
        tracemalloc.start()
        try:
            report = run_connector(project, "reg", pull=False)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    finally:
        project.close()
    assert report.ok, report.error
    return peak, report.push.counts.created


@pytest.mark.slow
def test_a_push_of_a_log_eight_times_larger_peaks_at_the_same_memory(tmp_path: Path) -> None:
    with fake_server_process("mock") as url:
        _push_peak(tmp_path, url, households=2)  # what the first run of a process builds once (TLS, imports)
        small, small_created = _push_peak(tmp_path, url, households=200)
        large, large_created = _push_peak(tmp_path, url, households=1600)
    assert (small_created, large_created) == (1000, 8000)
    # anything kept per record (links delivered, open letters, bodies waiting for the cyclic collector)
    # grows with the log: eight times the entities would peak several times higher
    assert large < 1.5 * small, f"peak {large:,} bytes for 8,000 entities vs {small:,} for 1,000"

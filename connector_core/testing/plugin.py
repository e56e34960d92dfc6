"""The pytest plugin for connector authors: fixtures for testing a connector the way dcsync runs it.

Installed dcsync registers this module under the ``pytest11`` entry point (as ``dcsync``), so pytest loads
it in every project that has dcsync installed; nothing needs to be listed in a conftest. With
``PYTEST_DISABLE_PLUGIN_AUTOLOAD`` set, load it with ``-p connector_core.testing.plugin``.

Every fixture is named ``dcsync_*`` so it cannot shadow a project's own. Imports of the engine happen inside
the fixtures: pytest loads this module in every run, including runs that never use it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from connector_core.connector import Connector
    from connector_core.eventlog.sqlite import SqliteEventLog
    from connector_core.events import FormSubmission
    from connector_core.state.sqlite import SqliteStateStore
    from connector_core.testing.harness import SyncHarness
    from connector_core.testing.server import ServedApp


@pytest.fixture
def dcsync_sample_events() -> list[FormSubmission]:
    """A small DataCollect log in the mobile app's style: 3 households of 2 members, then 2 edits."""
    from connector_core.testing.harness import sample_events

    return sample_events()


@pytest.fixture
def dcsync_eventlog(tmp_path: Path) -> Iterator[SqliteEventLog]:
    """An empty SQLite event log in the test's temporary directory."""
    from connector_core.eventlog.sqlite import SqliteEventLog

    log = SqliteEventLog(tmp_path / "dcsync-fixture" / "events.db")
    yield log
    log.close()


@pytest.fixture
def dcsync_state(tmp_path: Path) -> Iterator[SqliteStateStore]:
    """An empty SQLite state store (checkpoints, links, dead letters) in the test's temporary directory."""
    from connector_core.state.sqlite import SqliteStateStore

    path = tmp_path / "dcsync-fixture" / "state.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    store = SqliteStateStore(path)
    yield store
    store.close()


@pytest.fixture
def dcsync_serve() -> Iterator[Callable[[Any], ServedApp]]:
    """``serve(app)``: run an ASGI app on a free loopback port until the test ends; returns its handle.

    Real sockets, not an in-process transport, so timeouts, resets and half-written answers behave as
    they do in production.
    """
    from connector_core.testing.server import ServedApp

    running: list[ServedApp] = []

    def serve(app: Any) -> ServedApp:
        served = ServedApp(app).start()
        running.append(served)
        return served

    yield serve
    for served in reversed(running):
        served.stop()


@pytest.fixture
def dcsync_fake_server(fake_app: Any, dcsync_serve: Callable[[Any], ServedApp]) -> ServedApp:
    """The test's ``fake_app`` fixture (an ASGI app the test module defines), running on loopback."""
    return dcsync_serve(fake_app)


@pytest.fixture
def dcsync_harness(tmp_path: Path) -> Iterator[Callable[..., SyncHarness]]:
    """``make(connector, **options) -> SyncHarness``: the real engine around a connector, on fresh stores.

    Options are :class:`~connector_core.testing.harness.SyncHarness`'s (``mappings``, ``batch_size``,
    ``page_size``, ``retry``). Each harness gets its own directory and is closed after the test.
    """
    from connector_core.testing.harness import SyncHarness

    made: list[SyncHarness] = []

    def make(connector: Connector, **options: Any) -> SyncHarness:
        harness = SyncHarness(connector, tmp_path / f"dcsync-harness-{len(made)}", **options)
        made.append(harness)
        return harness

    yield make
    for harness in made:
        harness.close()

"""The real sync engine around one connector, on a throwaway event log and state store.

A connector is only correct the way dcsync uses it: batches cut by the engine, create intents written
before a request leaves, ``lookup`` after an ambiguous failure, per-record results turned into links and
dead letters, the pull cursor committed after each page. Calling ``push`` by hand proves none of that, so
the contract suite and plugin authors' own tests drive the connector through :func:`run_push` and
:func:`run_pull` here, with SQLite files in a temporary directory and a retry policy fast enough for tests.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any, cast

import pluggy

from connector_core import hookspecs
from connector_core.connector import Connector, ConnectorError, PullPage
from connector_core.entities import Entity
from connector_core.eventlog.sqlite import SqliteEventLog
from connector_core.events import FormSubmission
from connector_core.mapping import MappingSet, identity_mapping
from connector_core.plugins import ConnectorInfo, PluginHost
from connector_core.retry import RetryPolicy
from connector_core.sample import mobile_log
from connector_core.scopes import FieldScopes
from connector_core.state.base import DeadLetter, Direction
from connector_core.state.sqlite import SqliteStateStore
from connector_core.sync.context import RunStopped, SyncContext
from connector_core.sync.pull import run_pull
from connector_core.sync.push import run_push
from connector_core.sync.report import DirectionReport

FAST_RETRY = RetryPolicy(max_attempts=4, initial_delay=0.01, max_delay=0.05, max_elapsed=20)
"""Real backoff with waits short enough that a test suite full of injected faults stays quick."""


def sample_events(
    households: int = 3, members: int = 2, updates: int = 2, seed: int = 7
) -> list[FormSubmission]:
    """A small DataCollect log in the mobile app's style: households, their members, then edits.

    The same seed gives the same guids every time, so a failure names the same entity on every run.
    """
    return list(mobile_log(households=households, members=members, updates=updates, seed=seed))


class SyncHarness:
    """One connector, its own event log and state store, and the engine's push and pull.

    ``push()`` and ``pull()`` return the engine's :class:`DirectionReport`; a run the engine stops (retries
    spent, a whole batch refused) ends with ``report.error`` set, exactly as ``dcsync run`` would report it,
    instead of raising.
    """

    def __init__(
        self,
        connector: Connector,
        directory: str | Path,
        *,
        mappings: MappingSet | None = None,
        batch_size: int = 10,
        page_size: int = 25,
        retry: RetryPolicy = FAST_RETRY,
        conflict_policy: str = "external-wins",
        in_flight: int = 1,
        systemic_after: int = 20,
        scopes: FieldScopes | None = None,
    ) -> None:
        root = Path(directory)
        root.mkdir(parents=True, exist_ok=True)
        self.connector = connector
        self.name = connector.name
        self.eventlog = SqliteEventLog(root / "events.db")
        self.state = SqliteStateStore(root / "state.db")
        self.mappings = mappings if mappings is not None else identity_mapping()
        self.batch_size = batch_size
        self.page_size = page_size
        self.retry = retry
        self.conflict_policy = conflict_policy
        self.in_flight = max(1, min(in_flight, type(connector).max_in_flight))  # as the runner caps it
        self.systemic_after = systemic_after
        self.scopes = scopes

    def context(self) -> SyncContext:
        """What one run of the engine works with (a fresh one per run, as the runner makes)."""
        return SyncContext(
            name=self.name,
            connector=self.connector,
            eventlog=self.eventlog,
            state=self.state,
            mappings=self.mappings,
            batch_size=self.batch_size,
            page_size=self.page_size,
            in_flight=self.in_flight,
            retry=self.retry,
            conflict_policy=self.conflict_policy,
            systemic_after=self.systemic_after,
            scopes=self.scopes,
        )

    def append(self, events: Iterable[FormSubmission]) -> int:
        """Add events to the log as a phone's sync would; returns how many were new."""
        return self.eventlog.append(events).new

    def push(self) -> DirectionReport:
        """Push every entity change after the push checkpoint, as ``dcsync run NAME --push`` does."""
        report = DirectionReport("push")
        try:
            run_push(self.context(), report)
        except (RunStopped, ConnectorError) as exc:
            report.error = str(exc)
        return report

    def pull(self, *, max_pages: int = 1000) -> DirectionReport:
        """Pull every remote change after the pull checkpoint, as ``dcsync run NAME --pull`` does.

        The engine pages for as long as the connector says there is more; a connector whose cursor does
        not advance would page forever, so after ``max_pages`` the run is stopped and reported as failed.
        """
        report = DirectionReport("pull")
        ctx = self.context()
        budget = _PageBudget(self.connector, max_pages, ctx.stop)
        ctx.connector = cast(Connector, budget)
        try:
            run_pull(ctx, report)
        except (RunStopped, ConnectorError) as exc:
            report.error = str(exc)
        if budget.exhausted:
            report.error = (
                f"pull was still paging after {max_pages} pages: the connector's cursor does not advance"
            )
        return report

    def checkpoint(self, direction: Direction | str) -> str | None:
        return self.state.get_checkpoint(self.name, Direction(direction))

    def links(self) -> dict[str, str]:
        """Entity guid -> external id, for every entity the engine believes the remote holds."""
        return {link.entity_guid: link.external_id for link in self.state.iter_links(self.name)}

    def dead_letters(self, status: str = "open") -> list[DeadLetter]:
        return list(self.state.iter_dead_letters(self.name, status))

    def entities(self) -> list[Entity]:
        return list(self.eventlog.iter_entities())

    def close(self) -> None:
        """Close the stores (the connector belongs to whoever made it)."""
        self.eventlog.close()
        self.state.close()


class _PageBudget:
    """Stands in for the connector during a pull and asks the run to stop once the pages are spent."""

    def __init__(self, inner: Connector, max_pages: int, stop: threading.Event) -> None:
        self.inner = inner
        self.max_pages = max_pages
        self.stop = stop
        self.pages = 0
        self.exhausted = False

    def pull(self, cursor: str | None, limit: int) -> PullPage:
        self.pages += 1
        if self.pages >= self.max_pages:
            self.exhausted = True
            self.stop.set()
        return self.inner.pull(cursor, limit)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def host_for(*classes: type[Connector]) -> PluginHost:
    """A plugin host offering exactly ``classes``, for ``Project.open(path, host=...)`` in tests.

    Loading entry points would also find installed plugins, and a connector under test that shares a
    ``type_name`` with an installed one (a deliberately broken subclass, a development copy) would lose to
    it; a host built from the classes themselves runs the code under test and nothing else.
    """
    pm = pluggy.PluginManager("dcsync")
    pm.add_hookspecs(hookspecs)
    host = PluginHost(pm=pm)
    for cls in classes:
        host.connectors[cls.type_name] = ConnectorInfo(cls.type_name, cls, "under-test", None, None)
    return host

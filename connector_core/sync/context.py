"""Everything one run of one connector works with, and the ways a run stops early."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from connector_core.connector import Connector
from connector_core.eventlog.base import EventLog
from connector_core.mapping import MappingSet
from connector_core.retry import RetryPolicy
from connector_core.scopes import FieldScopes
from connector_core.state.base import StateStore


class RunStopped(Exception):
    """The run cannot go on (a transient failure outlived its retry budget, or a shutdown was asked).

    The checkpoint stays before every record that was not delivered or dead-lettered, so the next run
    resumes exactly there.
    """


@dataclass
class SyncContext:
    name: str
    connector: Connector
    eventlog: EventLog
    state: StateStore
    mappings: MappingSet
    batch_size: int = 100
    page_size: int = 500
    in_flight: int = 1
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    dry_run: bool = False
    park_limit: int = 5
    systemic_after: int = 20
    """Records refused in a row for one (normalised) reason that stop the run: the cause is not in them."""
    conflict_policy: str = "external-wins"
    merge_fallback: str = "external"
    scopes: FieldScopes | None = None
    """Fields the push may send and the pull may write back (``None``: any); see ``sync/scoping.py``."""
    stop: threading.Event = field(default_factory=threading.Event)
    on_progress: Callable[[str, int, int | None], None] | None = None
    """Called after each page with (direction, done, total or None): the CLI's progress bar."""

    def progress(self, direction: str, done: int, total: int | None) -> None:
        if self.on_progress is not None:
            self.on_progress(direction, done, total)

    @property
    def user_id(self) -> str:
        """The ``userId`` of events this connector pulled: how echo suppression recognises them."""
        return f"dcsync:{self.name}"

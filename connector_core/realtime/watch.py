"""Watching an event log for new events, one way per backend, each on a thread of its own.

- **PostgreSQL**: ``LISTEN`` on the channel the log's append raises inside its transaction, so a notification
  arrives exactly when the events are visible (at COMMIT), from any process that appends.
- **SQLite**: ``PRAGMA data_version`` on a connection of its own; it changes whenever another connection
  commits to the file. A cheap read of a counter, polled every ``poll_interval``.
- **DataCollect tenant**: nothing pushes to us, so the mirror is refreshed by short polling; an idle tenant
  is polled less and less often (up to ``idle_max``), and the first new event brings it back to the minimum.

Every watcher signals once when it starts (and after reconnecting): what was appended while nobody listened
is still after the checkpoint, and a run finds it.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from connector_core.retry import doubling_delay

log = logging.getLogger("dcsync.realtime")

RECONNECT_FIRST = 0.5
RECONNECT_MAX = 30.0


@dataclass
class Watcher(ABC):
    """Base: a daemon thread calling ``on_change`` until ``stop`` is set; ``healthy`` feeds ``/readyz``."""

    on_change: Callable[[], None]
    stop: threading.Event
    healthy: bool = False
    problem: str = "starting"
    _thread: threading.Thread | None = field(default=None, repr=False)
    _losses: int = field(default=0, repr=False)  # connections lost in a row: what the reconnect waits on

    kind = "watcher"

    def start(self) -> Watcher:
        self._thread = threading.Thread(target=self._guarded, name=f"dcsync-watch-{self.kind}", daemon=True)
        self._thread.start()
        return self

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _guarded(self) -> None:
        self._losses = 0
        while not self.stop.is_set():
            try:
                self._watch()
                return
            except Exception as exc:  # a lost connection: report, wait, reconnect
                from connector_core.logs import redact

                self.healthy, self.problem = False, redact(f"{type(exc).__name__}: {exc}".splitlines()[0])
                self._losses += 1
                delay = doubling_delay(self._losses, RECONNECT_FIRST, RECONNECT_MAX)
                log.warning("%s watcher: %s; reconnecting in %.1fs", self.kind, self.problem, delay)
                self.stop.wait(delay)

    def _up(self) -> None:
        # connected again: the next loss starts its backoff afresh, not where the last outage left it
        self._losses = 0
        self.healthy, self.problem = True, ""
        self.on_change()  # catch up on what was appended while nobody listened

    @abstractmethod
    def _watch(self) -> None:
        """Watch until ``stop``; raise to be reconnected."""


@dataclass
class PostgresWatcher(Watcher):
    url: str = ""
    schema: str = "dcsync"
    kind = "postgres"

    def _watch(self) -> None:
        from psycopg import sql

        from connector_core._postgres import connect
        from connector_core.eventlog.postgres import NOTIFY_CHANNEL

        conn = connect(self.url, application_name="dcsync serve listener")
        try:
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(NOTIFY_CHANNEL)))
            self._up()
            while not self.stop.is_set():
                for notice in conn.notifies(timeout=0.5):  # yields for half a second, then we look at stop
                    if notice.payload == self.schema:  # another log in this database is not ours
                        self.on_change()
        finally:
            conn.close()


@dataclass
class SqliteWatcher(Watcher):
    path: Path = Path("events.db")
    poll_interval: float = 0.05
    kind = "sqlite"

    def _watch(self) -> None:
        from connector_core._sqlite_read import connect_read_only

        conn = connect_read_only(self.path, 5.0)
        if conn is None:
            raise FileNotFoundError(f"no event log at {self.path}")
        try:
            version = conn.execute("PRAGMA data_version").fetchone()[0]
            self._up()
            while not self.stop.wait(self.poll_interval):
                now = conn.execute("PRAGMA data_version").fetchone()[0]
                if now != version:
                    version = now
                    self.on_change()
        finally:
            conn.close()


@dataclass
class DataCollectWatcher(Watcher):
    open_log: Callable[[], Any] = field(default=lambda: None)
    min_interval: float = 1.0
    idle_max: float = 30.0
    kind = "datacollect"

    def _watch(self) -> None:
        eventlog = self.open_log()
        try:
            self._up()
            delay = self.min_interval
            while not self.stop.wait(delay):
                report = eventlog.refresh()
                self.healthy, self.problem = True, ""
                if report.new:
                    self.on_change()
                    delay = self.min_interval
                else:
                    delay = min(delay * 2, self.idle_max)
        finally:
            eventlog.close()

"""``dcsync serve``: the scheduler, the log watchers, the triggers and the HTTP server in one process.

What holds it together:

- **One run per connector at a time.** Real-time and scheduled runs of a connector share the scheduler's
  in-process lock, and every run takes the connector's lease in the state store, which keeps other processes
  and machines out. A real-time run that finds either held answers ``BUSY``; its trigger keeps the change
  pending and tries again shortly (coalesced, never queued).
- **Pushes follow the log, pulls follow the webhook.** A connector with ``realtime: true`` gets a push
  trigger poked by the log's watcher; one with a ``webhook:`` gets a pull trigger poked by
  ``POST /hooks/{connector}``. A pull that appends events wakes the watcher in turn, so a remote's change
  reaches the other connectors too.
- **Schedules.** The embedded scheduler runs the connectors' ``schedule:`` entries, unless the project's
  ``scheduler.engine`` hands them to the worker fleet.
- **Stopping.** :meth:`RealtimeService.shutdown` closes the HTTP server first (no new webhooks), then sets
  the shared stop event: watchers return, a run in flight finishes its batch and ends ``interrupted`` with
  its checkpoint consistent, and the scheduler stops; the next start resumes from the checkpoints.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from starlette.routing import Mount

from connector_core.config import (
    ConfigError,
    DataCollectEventLogConfig,
    PostgresEventLogConfig,
    SqliteEventLogConfig,
)
from connector_core.connector import Capability
from connector_core.logs import redact, register_secrets_of, run_context
from connector_core.metrics import Metrics
from connector_core.realtime.hooks import TokenBucket
from connector_core.realtime.server import HookEndpoint, RealtimeMetrics, create_app
from connector_core.realtime.trigger import CoalescingTrigger, Outcome, TriggerPolicy
from connector_core.realtime.watch import DataCollectWatcher, PostgresWatcher, SqliteWatcher, Watcher
from connector_core.scheduler import Scheduler

log = logging.getLogger("dcsync.realtime")


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return redact(f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__)


@dataclass
class RealtimeService:
    """Everything ``dcsync serve`` runs; :meth:`start`, then :meth:`shutdown` (from a signal handler's thread
    or a test)."""

    config_path: Path
    host: str | None = None  # None: the project file's serve.host
    port: int | None = None  # None: the project file's serve.port; 0: any free port
    ui: bool | None = None  # None: the project file's serve.ui
    metrics: Metrics = field(default_factory=Metrics)
    push_triggers: dict[str, CoalescingTrigger] = field(default_factory=dict)
    pull_triggers: dict[str, CoalescingTrigger] = field(default_factory=dict)
    watchers: list[Watcher] = field(default_factory=list)
    _server: uvicorn.Server | None = None
    _thread: threading.Thread | None = None
    _console: Any = None

    def __post_init__(self) -> None:
        from connector_core.plugins import load_plugins

        self.scheduler = Scheduler(self.config_path, metrics=self.metrics)
        self.loaded = self.scheduler.loaded
        # With ``scheduler.engine: procrastinate`` the worker fleet fires the schedules (docs/scale-out.md);
        # serve then keeps to real time, and the connector's lease keeps its runs and the fleet's apart.
        self.runs_schedules = self.loaded.project.scheduler.engine == "embedded"
        if not self.runs_schedules:
            self.scheduler.jobs = []
        self.settings = self.loaded.project.serve
        self.stop = self.scheduler.stop_event
        self.plugins = load_plugins()
        self.realtime_metrics = RealtimeMetrics(self.metrics.registry)
        self._plan()

    # -- what runs -----------------------------------------------------------------------------------------
    def _plan(self) -> None:
        s = self.settings
        policy = TriggerPolicy(debounce=s.debounce, max_delay=s.max_delay, busy_retry=s.busy_retry)
        problems: list[str] = []
        self.hooks: dict[str, HookEndpoint] = {}
        for name, instance in self.loaded.project.connectors.items():
            if not instance.enabled:
                continue
            capabilities = self.plugins.connector_class(instance.type).capabilities
            if instance.realtime:
                if not (instance.push and Capability.PUSH in capabilities):
                    where = self.loaded.where("connectors", name, "realtime")
                    problems.append(f"{where}: connectors.{name}.realtime: this connector does not push")
                else:
                    run = self._runner(name, "push", "realtime")
                    self.push_triggers[name] = CoalescingTrigger(f"{name}:push", run, policy, self.stop)
            if instance.webhook is not None:
                register_secrets_of(instance.webhook)
                if not (instance.pull and Capability.PULL in capabilities):
                    where = self.loaded.where("connectors", name, "webhook")
                    problems.append(f"{where}: connectors.{name}.webhook: this connector does not pull")
                    continue
                run = self._runner(name, "pull", "webhook")
                trigger = CoalescingTrigger(f"{name}:pull", run, policy, self.stop)
                self.pull_triggers[name] = trigger
                hook = instance.webhook
                self.hooks[name] = HookEndpoint(hook, TokenBucket(hook.rate, hook.burst), trigger.poke)
        if problems:
            raise ConfigError(problems)

    def _runner(self, name: str, direction: str, trigger: str) -> Callable[[], Outcome]:
        def run() -> Outcome:
            from connector_core.project import Project
            from connector_core.sync.runner import ConnectorBusy, run_connector

            lock = self.scheduler.connector_lock(name)
            if not lock.acquire(blocking=False):  # a scheduled run of it is in flight here
                return Outcome.BUSY
            try:
                with run_context(connector=name, trigger=trigger):
                    started = time.monotonic()
                    project = Project.open(self.config_path, host=self.plugins)
                    try:
                        report = run_connector(
                            project,
                            name,
                            push=direction == "push",
                            pull=direction == "pull",
                            trigger=trigger,
                            stop=self.stop,
                        )
                        self.metrics.record_run(report, time.monotonic() - started, time.time())
                        self.scheduler.record_levels(project, name)
                    except ConnectorBusy:
                        return Outcome.BUSY
                    finally:
                        project.close()
                    if report.ok or self.stop.is_set():
                        return Outcome.DONE
                    log.error("%s %s: run %s failed: %s", name, direction, report.run_id, report.error)
                    return Outcome.FAILED
            except Exception as exc:  # the store or the project went away: back off, try again
                log.error("%s %s: run failed: %s", name, direction, _one_line(exc))
                self.metrics.record_failure(name, direction)
                return Outcome.FAILED
            finally:
                lock.release()

        return run

    def _log_changed(self) -> None:
        for name, trigger in self.push_triggers.items():
            trigger.poke()
            self.realtime_metrics.signals.labels(name, "log").inc()

    def _watcher(self) -> Watcher | None:
        if not self.push_triggers:
            return None
        config = self.loaded.project.eventlog
        base = self.loaded.base_dir
        if isinstance(config, PostgresEventLogConfig):
            return PostgresWatcher(
                self._log_changed, self.stop, url=config.url.get_secret_value(), schema=config.db_schema
            )
        if isinstance(config, SqliteEventLogConfig):
            path = self.loaded.resolve_path(config.path)
            interval = self.settings.poll_interval
            return SqliteWatcher(self._log_changed, self.stop, path=path, poll_interval=interval)
        assert isinstance(config, DataCollectEventLogConfig)
        from connector_core.eventlog import open_datacollect

        def open_log() -> Any:
            return open_datacollect(config, base)

        return DataCollectWatcher(
            self._log_changed,
            self.stop,
            open_log=open_log,
            min_interval=self.settings.remote_poll,
            idle_max=max(self.settings.idle_poll_max, self.settings.remote_poll),
        )

    # -- health ------------------------------------------------------------------------------------------
    def ready(self) -> list[str]:
        from connector_core.eventlog import open_event_log
        from connector_core.state import open_state_store
        from connector_core.state.base import Direction

        problems = [f"{w.kind} log watcher: {w.problem}" for w in self.watchers if not w.healthy]
        project = self.loaded.project
        try:
            eventlog = open_event_log(project.eventlog, self.loaded.base_dir, read_only=True)
            try:
                eventlog.head()
            finally:
                eventlog.close()
        except Exception as exc:
            problems.append(f"event log: {_one_line(exc)}")
        try:
            state = open_state_store(project.state, self.loaded.base_dir, read_only=True)
            try:
                state.get_checkpoint("", Direction.PUSH)
            finally:
                state.close()
        except Exception as exc:
            problems.append(f"state store: {_one_line(exc)}")
        return problems

    # -- lifecycle ---------------------------------------------------------------------------------------
    @property
    def serves_ui(self) -> bool:
        return self.settings.ui if self.ui is None else self.ui

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.servers[0].sockets[0].getsockname()[:2]
        return f"http://{host}:{port}"

    def start(self, timeout: float = 20.0) -> RealtimeService:
        host = self.host or self.settings.host
        mounts = []
        if self.serves_ui:  # refused before any socket when beyond loopback without a login
            from connector_core.console import open_console

            self._console = open_console(self.config_path, host=host, plugins=self.plugins)
            if self._console.generated_token:  # on stderr only: never in a log line
                print(
                    f"console token (no ui.users nor DCSYNC_UI_TOKEN): {self._console.generated_token}",
                    file=sys.stderr,
                )
            mounts.append(Mount("/ui", app=self._console.app))
        app = create_app(
            hooks=self.hooks,
            ready=self.ready,
            registry=self.metrics.registry,
            metrics=self.realtime_metrics,
            mounts=mounts,
        )
        config = uvicorn.Config(
            app,
            host=host,
            port=self.settings.port if self.port is None else self.port,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=5,
        )
        self._server = uvicorn.Server(config)  # on a thread, uvicorn leaves the process's signals alone
        self._thread = threading.Thread(target=self._server.run, name="dcsync-serve-http", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise OSError(f"dcsync serve could not listen on {config.host}:{config.port}")
            time.sleep(0.01)
        for trigger in (*self.push_triggers.values(), *self.pull_triggers.values()):
            trigger.start()
        watcher = self._watcher()
        if watcher is not None:
            self.watchers.append(watcher.start())
        self.scheduler.start()
        log.info(
            "dcsync serve on %s: real-time push %s, webhooks %s, %d scheduled jobs",
            self.url,
            sorted(self.push_triggers) or "none",
            sorted(self.hooks) or "none",
            len(self.scheduler.jobs),
        )
        return self

    def shutdown(self) -> None:
        """No new webhooks; the run in flight finishes its batch; then everything stops."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
        self.stop.set()
        for trigger in (*self.push_triggers.values(), *self.pull_triggers.values()):
            trigger.join()
        for watcher in self.watchers:
            watcher.join(10)
        self.scheduler.stop(wait=True)
        if self._console is not None:
            self._console.close()
            self._console = None

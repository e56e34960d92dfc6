"""Turning a stream of "something changed" signals into as few runs as keep the remote current.

A watcher may signal once per appended event, a webhook once per remote edit; a run costs a lease, a
connection and a page read however little it carries. So signals are *coalesced*: a trigger holds one
``pending`` flag, not a queue. A burst becomes one run once it has been quiet for ``debounce`` seconds (or has
lasted ``max_delay``); signals that arrive while a run is in flight set the flag again, so exactly one
follow-up run picks up whatever the first one could not have seen. Memory stays one flag per connector and
direction whatever the rate, which is the backpressure: a slow or failing remote makes runs rarer, never a
queue longer.

The run itself says how it went. A busy lease (a scheduled run, another process) keeps the flag set and tries
again shortly; a failure keeps it set too (the events are still after the checkpoint) and waits a growing
delay, as the scheduler's backoff does, so a broken remote is not hammered.
"""

from __future__ import annotations

import enum
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from connector_core.retry import doubling_delay

log = logging.getLogger("dcsync.realtime")


class Outcome(enum.Enum):
    DONE = "done"  # ran (or had nothing to do)
    BUSY = "busy"  # the connector's lease is held elsewhere: try again shortly
    FAILED = "failed"  # the run failed: back off, then try again


@dataclass(frozen=True)
class TriggerPolicy:
    debounce: float = 0.1
    max_delay: float = 0.5
    busy_retry: float = 0.5
    backoff_base: float = 1.0
    backoff_max: float = 300.0

    def backoff(self, failures: int) -> float:
        return doubling_delay(max(failures, 1), self.backoff_base, self.backoff_max)


@dataclass
class CoalescingTrigger:
    """One connector and direction: :meth:`poke` from any thread; runs happen on this trigger's thread."""

    name: str
    run: Callable[[], Outcome]
    policy: TriggerPolicy = field(default_factory=TriggerPolicy)
    stop: threading.Event = field(default_factory=threading.Event)
    clock: Callable[[], float] = time.monotonic
    runs: int = 0  # runs started (busy answers included)
    pokes: int = 0
    failures: int = 0
    _pending: bool = False
    _running: bool = False
    _first: float = 0.0
    _last: float = 0.0
    _resume_at: float = 0.0
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _thread: threading.Thread | None = None

    def start(self) -> CoalescingTrigger:
        self._thread = threading.Thread(target=self._loop, name=f"dcsync-trigger-{self.name}", daemon=True)
        self._thread.start()
        return self

    def poke(self) -> None:
        """Something changed: make sure a run starts after it (never more than one waiting)."""
        with self._cond:
            now = self.clock()
            if not self._pending:
                self._pending, self._first = True, now
            self._last = now
            self.pokes += 1
            self._cond.notify_all()

    def wake(self) -> None:
        """Let the thread see ``stop``."""
        with self._cond:
            self._cond.notify_all()

    def join(self, timeout: float | None = None) -> None:
        self.wake()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def idle(self) -> bool:
        with self._cond:
            return not self._pending and not self._running

    def wait_idle(self, timeout: float) -> bool:
        """True once nothing is pending or running (tests, the benchmark); False at the timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._pending or self._running:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.1))
            return True

    def _due(self) -> float:
        p = self.policy
        return max(min(self._last + p.debounce, self._first + p.max_delay), self._resume_at)

    def _loop(self) -> None:
        while not self.stop.is_set():
            with self._cond:
                while not self.stop.is_set():
                    if self._pending:
                        left = self._due() - self.clock()
                        if left <= 0:
                            break
                        self._cond.wait(min(left, 0.5))
                    else:
                        self._cond.wait(0.5)
                if self.stop.is_set():
                    return
                self._pending, self._running = False, True
                self.runs += 1
            outcome = Outcome.FAILED
            try:
                outcome = self.run()
            except Exception as exc:  # a run must never take the trigger down
                log.error("%s: run failed: %s: %s", self.name, type(exc).__name__, exc)
            finally:
                with self._cond:
                    self._running = False
                    self._settle(outcome)
                    self._cond.notify_all()

    def _settle(self, outcome: Outcome) -> None:
        now = self.clock()
        if outcome is Outcome.DONE:
            self.failures, self._resume_at = 0, 0.0
            return
        if not self._pending:
            self._pending, self._first, self._last = True, now, now
        if outcome is Outcome.BUSY:
            self._resume_at = now + self.policy.busy_retry * (0.5 + random.random())
        else:
            self.failures += 1
            delay = self.policy.backoff(self.failures)
            self._resume_at = now + delay
            log.warning("%s: next run waits %.1fs (failure %d in a row)", self.name, delay, self.failures)

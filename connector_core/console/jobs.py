"""The console's background jobs: a replay or discard of many dead letters runs on a thread of its own and
holds the project lock one page at a time, so the other pages (and other operators) get answers between
pages, while the job's page (``/jobs/<id>``) shows how far it has got.

Jobs live in the console process's memory: a restart forgets them. What a job did is committed page by page
by the action itself (``connector_core/actions.py``), so a console stopped mid-job leaves the rest of its
letters open, to be replayed or discarded again. One job per connector at a time: a second is refused
(:class:`JobRefused`), never queued behind the first. Across processes the connector's lease does the same:
the action holds it for the whole job, and the dead-letter page refuses a job whose connector another
process holds (pages/dead_letters.py).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from connector_core.actions import Progress
from connector_core.redaction import redact

if TYPE_CHECKING:
    from connector_core.console.context import FairLock

log = logging.getLogger("dcsync.console")

KEEP = 100
"""Finished jobs kept for their pages; older ones are forgotten."""

Step = Callable[[Progress], None]
"""What a job's work calls after each committed page: records the progress, then lets waiting pages run."""


@dataclass
class Job:
    """One replay or discard, as its page shows it. ``progress`` is replaced whole after each page, so a
    page rendering it never sees half an update."""

    id: int
    action: str
    connectors: tuple[str, ...]
    actor: str
    what: str
    total: int
    """Letters selected when the job started (a run may add more to a group while it goes)."""
    note: str | None
    started_at: datetime
    progress: Progress = field(default_factory=Progress)
    state: str = "running"
    error: str | None = None
    finished_at: datetime | None = None
    stop: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def running(self) -> bool:
        return self.state == "running"

    def summary(self) -> str:
        p = self.progress
        if self.action == "replay":
            return f"replayed {p.letters}: {p.delivered} delivered, {p.failed_again} failed again"
        return f"discarded {p.discarded}"


class JobRefused(Exception):
    """A job that cannot start (its connector has one running, or the console is stopping); one line."""

    def __init__(self, message: str, running: Job | None = None) -> None:
        super().__init__(message)
        self.running = running


class Jobs:
    """The jobs of one console; ``lock`` is the project lock its pages share."""

    def __init__(self, lock: FairLock, keep: int = KEEP) -> None:
        self._lock = lock
        self._keep = keep
        self._mutex = threading.Lock()
        self._jobs: dict[int, Job] = {}
        self._threads: dict[int, threading.Thread] = {}
        self._next_id = 1
        self._closed = False

    def start(
        self,
        *,
        action: str,
        connectors: tuple[str, ...],
        actor: str,
        what: str,
        total: int,
        note: str | None,
        work: Callable[[Job, Step], None],
    ) -> Job:
        """Start ``work(job, step)`` on its own thread, holding the project lock but while ``step`` lets
        go of it. Raises :class:`JobRefused` when one of ``connectors`` has a job running."""
        with self._mutex:
            if self._closed:
                raise JobRefused("the console is stopping: no new job")
            for other in self._jobs.values():
                shared = [c for c in other.connectors if c in connectors]
                if other.running and shared:
                    raise JobRefused(
                        f"a {other.action} of {shared[0]} is already running (job {other.id}, started by "
                        f"{other.actor}): wait for it to end, then try again",
                        other,
                    )
            started = datetime.now(UTC).replace(microsecond=0)
            job = Job(self._next_id, action, connectors, actor, what, total, note, started)
            self._next_id += 1
            self._jobs[job.id] = job
            self._forget_old()
            thread = threading.Thread(
                target=self._run, args=(job, work), name=f"dcsync-console-job-{job.id}", daemon=True
            )
            self._threads[job.id] = thread
        thread.start()
        return job

    def get(self, job_id: int) -> Job | None:
        with self._mutex:
            return self._jobs.get(job_id)

    def recent(self) -> list[Job]:
        """Newest first."""
        with self._mutex:
            return sorted(self._jobs.values(), key=lambda j: j.id, reverse=True)

    def running(self, connector: str) -> Job | None:
        with self._mutex:
            return next((j for j in self._jobs.values() if j.running and connector in j.connectors), None)

    def shutdown(self, timeout: float = 60.0) -> list[Job]:
        """Ask every running job to stop after its page and wait for them (up to ``timeout`` seconds in
        all); returns the jobs still running then."""
        with self._mutex:
            self._closed = True
            jobs = [j for j in self._jobs.values() if j.running]
            threads = [self._threads[j.id] for j in jobs if j.id in self._threads]
        for job in jobs:
            job.stop.set()
        deadline = threading.Event()
        timer = threading.Timer(timeout, deadline.set)
        timer.start()
        try:
            for thread in threads:
                while thread.is_alive() and not deadline.is_set():
                    thread.join(0.1)
        finally:
            timer.cancel()
        return [j for j in jobs if j.running]

    def _run(self, job: Job, work: Callable[[Job, Step], None]) -> None:
        def step(progress: Progress) -> None:
            job.progress = progress
            self._lock.pause()

        try:
            with self._lock:
                work(job, step)
        except Exception as exc:  # the job's page says what went wrong, in one line
            job.error = redact(" ".join(str(exc).split()) or type(exc).__name__)
            job.state = "failed"
            log.warning("console job %s (%s of %s) failed: %s", job.id, job.action, job.what, job.error)
        else:
            stopped = job.stop.is_set() and job.progress.letters < job.total
            job.state = "interrupted" if stopped else "finished"
        finally:
            job.finished_at = datetime.now(UTC).replace(microsecond=0)
            with self._mutex:
                self._threads.pop(job.id, None)

    def _forget_old(self) -> None:
        done = sorted(j.id for j in self._jobs.values() if not j.running)
        for job_id in done[: max(0, len(self._jobs) - self._keep)]:
            del self._jobs[job_id]

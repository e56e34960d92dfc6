"""The connector lease: at most one run of a connector at a time, across processes and machines.

Two runs of one connector would both read the same checkpoint and deliver the same page twice, so a run holds
its connector's lease for its whole length. The state store grants it, because the state store is what every
dcsync process that could run the connector shares: a lock file beside a SQLite store, a PostgreSQL advisory
lock (plus a row naming the holder) for a PostgreSQL store, which also covers processes on other machines.
Either way the lease dies with its holder: the OS drops a dead process's file lock, and PostgreSQL drops a
dead session's advisory lock.
"""

from __future__ import annotations

import os
import socket
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from connector_core.events import now_timestamp
from connector_core.state.base import StateStore


@dataclass(frozen=True, slots=True)
class LeaseHolder:
    """Who holds a lease: enough for an operator to find the process."""

    host: str
    pid: int
    started_at: str

    def __str__(self) -> str:
        return f"pid {self.pid} on {self.host} since {self.started_at}"

    def encode(self) -> str:
        return f"{self.pid} {self.host} {self.started_at}"

    @classmethod
    def decode(cls, text: str) -> LeaseHolder | None:
        parts = text.strip().split(" ")
        if len(parts) != 3 or not parts[0].isdigit():
            return None
        return cls(host=parts[1], pid=int(parts[0]), started_at=parts[2])


def this_process() -> LeaseHolder:
    return LeaseHolder(
        host=socket.gethostname() or "unknown-host", pid=os.getpid(), started_at=now_timestamp()
    )


class ConnectorBusy(Exception):
    """Another process is running this connector right now; ``holder`` says which, when known."""

    def __init__(self, connector: str, holder: LeaseHolder | None):
        self.connector = connector
        self.holder = holder
        who = f"lease held by {holder}" if holder else "lease held by another process"
        super().__init__(f"connector {connector!r} is already running ({who})")


class LeaseLost(RuntimeError):
    """The connector's lease went away while its run was in progress (PostgreSQL: the session holding the
    advisory lock ended). Another process may be running the connector now, so the run must not commit
    another batch: the transaction that found out is rolled back and the run stops."""

    def __init__(self, connector: str, why: str):
        self.connector = connector
        super().__init__(
            f"lost the lease of connector {connector!r} ({why}); stopped before committing more, as another "
            "process may run it now: the next run resumes from the checkpoint"
        )


@runtime_checkable
class Leasing(Protocol):
    def lease(self, connector: str, *, wait: bool = False) -> AbstractContextManager[None]:
        """Hold ``connector``'s lease for the ``with`` block.

        Raises :class:`ConnectorBusy` naming the holder when another process has it, or with ``wait`` blocks
        until it is released.
        """
        ...


@runtime_checkable
class LeasedStateStore(StateStore, Leasing, Protocol):
    """A state store that also grants connector leases (every backend dcsync ships)."""

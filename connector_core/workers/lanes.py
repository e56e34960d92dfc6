"""The locks a job takes: one run of a connector at a time, and at most ``max_writers`` jobs per target.

procrastinate gives a job one ``lock`` string: no two jobs with the same lock run at once, and they run in
the order they were deferred. Two guarantees must come from that one string:

- **One run per connector** (``connector:{project}:{name}``): the lock of a connector without a target.
- **At most N writers per target** (``targets: {name: {max_writers: N}}``): the target has N lanes,
  ``target:{name}:{i}`` for i in 0..N-1, and each connector writing to it is given one lane for good. A lane
  is a lock, so it runs one job at a time; N lanes run at most N. Since a connector always takes the same
  lane, its lane lock also keeps two runs of it apart: the one string carries both guarantees.

A connector's lane is its place among the project's connectors of that target (sorted by name), shifted by
a hash of the project so that many small projects spread over the lanes instead of all starting at lane 0:
connectors of one project share lanes evenly. The price of fixed lanes is that two connectors on one lane
wait for each other while another lane is idle; choosing a lane per job instead would let two runs of one
connector hold two lanes at once, and then only the lease would keep them apart. The lease stays anyway
(belt and braces): a run still takes its connector's lease in the state store.
"""

from __future__ import annotations

import hashlib

from connector_core.config import LoadedConfig


def connector_key(project: str, connector: str) -> str:
    return f"connector:{project}:{connector}"


def queueing_lock(project: str, connector: str, direction: str) -> str:
    """At most one waiting job per connector and direction: a late tick does not queue a second copy.

    Per direction, so that a waiting push does not swallow a pull's tick (one connector's jobs still never
    run at once: that is the ``lock``)."""
    return f"{connector_key(project, connector)}:{direction}"


def lane_lock(target: str, lane: int) -> str:
    return f"target:{target}:{lane}"


def lane_of(project: str, loaded: LoadedConfig, connector: str) -> tuple[str, int] | None:
    """``(target, lane)`` of a connector that names a target, else ``None``."""
    instance = loaded.project.connectors[connector]
    if instance.target is None:
        return None
    lanes = loaded.project.targets[instance.target].max_writers
    members = sorted(n for n, i in loaded.project.connectors.items() if i.target == instance.target)
    shift = int.from_bytes(hashlib.blake2b(project.encode(), digest_size=4).digest(), "big")
    return instance.target, (shift + members.index(connector)) % lanes


def run_lock(project: str, loaded: LoadedConfig, connector: str) -> str:
    """The ``lock`` of every job that runs ``connector`` (scheduled, deferred by hand, retried)."""
    lane = lane_of(project, loaded, connector)
    return connector_key(project, connector) if lane is None else lane_lock(*lane)

"""How a run ended, as an operator or a scheduler reads it.

A run record stores what the engine saw (``ok``, ``failed``, ``interrupted``, ...). A run that finished but
left new dead letters is stored ``ok`` with ``dead_lettered`` in its counts: it did everything it could, yet
records wait for a person. Every place that shows an outcome (``dcsync runs``, ``dcsync status`` and its
JSON, the scheduler's metrics) derives ``degraded`` from those counts here, so they always agree, and the run
command exits with :data:`EXIT_DEAD_LETTERS` for it.
"""

from __future__ import annotations

from collections.abc import Mapping

DEGRADED = "degraded"

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_DEAD_LETTERS = 3
EXIT_INTERRUPTED = 130


def shown_outcome(outcome: str, counts: Mapping[str, int]) -> str:
    """``outcome`` as shown: ``degraded`` for an ``ok`` run that dead-lettered records."""
    if outcome == "ok" and counts.get("dead_lettered", 0) > 0:
        return DEGRADED
    return outcome

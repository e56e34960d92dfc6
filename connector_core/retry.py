"""One retry policy for every connector, built on tenacity.

Flaky registries are the normal case, not the exception: a transient failure (connection error, timeout,
429, 502/503/504, or whatever the connector classifies as transient) is retried with exponential backoff and
full jitter, capped, within a budget of attempts and elapsed time, honouring ``Retry-After``. A permanent
failure is never retried: retrying a validation error only delays the dead letter.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import TypeVar

import tenacity
from pydantic import BaseModel, ConfigDict, Field

from connector_core.connector import ConnectorError

log = logging.getLogger("dcsync.retry")
T = TypeVar("T")


class RetryPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_attempts: int = Field(
        default=6, ge=1, description="Tries in a row without progress, the first included, before giving up"
    )
    initial_delay: float = Field(default=0.5, ge=0, description="Seconds; doubles on every attempt")
    max_delay: float = Field(default=30.0, ge=0, description="Cap on one wait, in seconds")
    max_elapsed: float = Field(default=300.0, gt=0, description="Give up after this many seconds")
    honour_retry_after: bool = True


def doubling_delay(failures: int, first: float, cap: float) -> float:
    """``first`` after one failure, doubling with each further failure in a row, never above ``cap``.

    The one backoff curve of dcsync: a request's retries (between them, jittered), a failed scheduled or
    real-time run, a lost watcher connection. They differ in ``first`` and ``cap`` only, for what each waits
    on: half a second for a request, the schedule's interval for a scheduled run."""
    if failures < 1:
        return 0.0
    return float(min(first * 2 ** min(failures - 1, 64), cap))  # 2**64 bounds the float for any count


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, ConnectorError) and exc.transient


class _Budget:
    """Attempts since the last one that made progress: what the attempt budget and the backoff count.

    An attempt that fails but settles part of its work (``ConnectorError.progress``) is not a wasted one;
    only ``max_attempts`` attempts in a row without progress, or ``max_elapsed`` in all, give up.
    """

    def __init__(self) -> None:
        self.last_progress = 0

    def stalled(self, state: tenacity.RetryCallState) -> int:
        exc = state.outcome.exception() if state.outcome is not None else None
        if getattr(exc, "progress", False):
            self.last_progress = max(self.last_progress, state.attempt_number)
        return state.attempt_number - self.last_progress


class _Stop(tenacity.stop.stop_base):
    def __init__(self, policy: RetryPolicy, budget: _Budget):
        self.policy = policy
        self.budget = budget

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        elapsed = retry_state.seconds_since_start or 0.0
        return (
            self.budget.stalled(retry_state) >= self.policy.max_attempts or elapsed >= self.policy.max_elapsed
        )


class _Wait(tenacity.wait.wait_base):
    """Full jitter (AWS style): uniform between 0 and the exponential bound; Retry-After wins if larger.

    The bound doubles with each attempt since the last progress, so a batch that is being drained
    a part at a time is not slowed down as if it were failing."""

    def __init__(self, policy: RetryPolicy, rng: random.Random, budget: _Budget):
        self.policy = policy
        self.rng = rng
        self.budget = budget

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        p = self.policy
        stalled = max(1, self.budget.stalled(retry_state))
        bound = doubling_delay(stalled, p.initial_delay, p.max_delay)
        delay = self.rng.uniform(0, bound)
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        retry_after = getattr(exc, "retry_after", None)
        if p.honour_retry_after and retry_after is not None:
            delay = max(delay, min(float(retry_after), p.max_delay))
        return delay


def call_with_retry(
    fn: Callable[[], T],
    policy: RetryPolicy,
    *,
    what: str,
    on_retry: Callable[[int, BaseException, float], None] | None = None,
    sleep: Callable[[float], None] | None = None,
    rng: random.Random | None = None,
) -> T:
    """Call ``fn`` until it succeeds, fails permanently, or the budget is spent (the last error is raised)."""

    budget = _Budget()

    def before_sleep(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else 0.0
        log.warning(
            "%s failed (attempt %d, %d/%d without progress): %s; retrying in %.2fs",
            what,
            state.attempt_number,
            budget.stalled(state),
            policy.max_attempts,
            exc,
            delay,
        )
        if on_retry is not None and exc is not None:
            on_retry(state.attempt_number, exc, delay)

    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception(is_transient),
        stop=_Stop(policy, budget),
        wait=_Wait(policy, rng or random.Random(), budget),
        before_sleep=before_sleep,
        reraise=True,
        sleep=sleep if sleep is not None else tenacity.nap.sleep,
    )
    return retrying(fn)

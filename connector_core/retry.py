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

    max_attempts: int = Field(default=6, ge=1, description="Tries in all, the first included")
    initial_delay: float = Field(default=0.5, ge=0, description="Seconds; doubles on every attempt")
    max_delay: float = Field(default=30.0, ge=0, description="Cap on one wait, in seconds")
    max_elapsed: float = Field(default=300.0, gt=0, description="Give up after this many seconds")
    honour_retry_after: bool = True


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, ConnectorError) and exc.transient


class _Wait(tenacity.wait.wait_base):
    """Full jitter (AWS style): uniform between 0 and the exponential bound; Retry-After wins if larger."""

    def __init__(self, policy: RetryPolicy, rng: random.Random):
        self.policy = policy
        self.rng = rng

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        p = self.policy
        bound = min(p.max_delay, p.initial_delay * (2 ** (retry_state.attempt_number - 1)))
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

    def before_sleep(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else 0.0
        log.warning(
            "%s failed (attempt %d/%d): %s; retrying in %.2fs",
            what,
            state.attempt_number,
            policy.max_attempts,
            exc,
            delay,
        )
        if on_retry is not None and exc is not None:
            on_retry(state.attempt_number, exc, delay)

    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception(is_transient),
        stop=tenacity.stop_after_attempt(policy.max_attempts) | tenacity.stop_after_delay(policy.max_elapsed),
        wait=_Wait(policy, rng or random.Random()),
        before_sleep=before_sleep,
        reraise=True,
        sleep=sleep if sleep is not None else tenacity.nap.sleep,
    )
    return retrying(fn)

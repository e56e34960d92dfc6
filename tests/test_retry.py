"""The retry policy: which failures are retried, how long it waits, and when it gives up."""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import httpx
import pytest
from sync_support import event, remote_records

from connector_core.connector import PermanentError, TransientError
from connector_core.project import Project
from connector_core.retry import RetryPolicy, call_with_retry, doubling_delay
from connector_core.state.base import Direction
from connector_core.sync.runner import run_connector


class _Top(random.Random):
    """Full jitter at its upper bound, so the bounds themselves are what a test sees."""

    def uniform(self, a: float, b: float) -> float:
        return b


def _failing(errors: list[Exception], result: str = "done") -> Callable[[], str]:
    """A call that raises each of ``errors`` in turn, then returns ``result``; ``calls`` counts it."""

    def call() -> str:
        call.calls += 1  # type: ignore[attr-defined]
        if errors:
            raise errors.pop(0)
        return result

    call.calls = 0  # type: ignore[attr-defined]
    return call


POLICY = RetryPolicy(max_attempts=3, initial_delay=1, max_delay=5, max_elapsed=60)


def _run(fn: Callable[[], str], policy: RetryPolicy = POLICY) -> tuple[str, list[float]]:
    slept: list[float] = []
    return call_with_retry(fn, policy, what="test", sleep=slept.append, rng=_Top()), slept


def test_transient_failures_back_off_doubling_up_to_the_cap_and_give_up_after_the_attempts() -> None:
    fn = _failing([TransientError(f"503 #{i}") for i in range(10)])
    slept: list[float] = []
    policy = RetryPolicy(max_attempts=5, initial_delay=1, max_delay=5, max_elapsed=60)
    with pytest.raises(TransientError, match="503 #4"):
        call_with_retry(fn, policy, what="test", sleep=slept.append, rng=_Top())
    assert fn.calls == 5  # type: ignore[attr-defined]
    assert slept == [1, 2, 4, 5]


def test_one_backoff_curve_doubles_from_the_first_wait_to_the_cap() -> None:
    """Requests, scheduled and real-time runs and watcher reconnects all wait on this curve."""
    assert [doubling_delay(n, 0.5, 30.0) for n in range(0, 9)] == [0.0, 0.5, 1, 2, 4, 8, 16, 30, 30]
    assert doubling_delay(10_000, 60.0, 3600.0) == 3600.0  # no overflow, never past the cap


def test_a_permanent_failure_is_not_retried() -> None:
    fn = _failing([PermanentError("422 bad gender")])
    with pytest.raises(PermanentError):
        _run(fn)
    assert fn.calls == 1  # type: ignore[attr-defined]


def test_retry_after_is_honoured_up_to_the_cap() -> None:
    result, slept = _run(
        _failing([TransientError("429", retry_after=3), TransientError("429", retry_after=99)])
    )
    assert result == "done" and slept == [3, 5]


def test_attempts_that_make_progress_do_not_spend_the_budget_nor_grow_the_wait() -> None:
    # five partial answers in a row, with a budget of three attempts: the batch is drained, not given up
    errors: list[Exception] = [TransientError("2 of 5 left", progress=True) for _ in range(5)]
    result, slept = _run(_failing(errors))
    assert result == "done" and slept == [1, 1, 1, 1, 1]


def test_the_budget_counts_the_attempts_since_the_last_progress() -> None:
    errors: list[Exception] = [
        TransientError("503"),
        TransientError("503"),
        TransientError("partly", progress=True),
        TransientError("503"),
        TransientError("503"),
        TransientError("503 again"),
        TransientError("never reached"),
    ]
    fn = _failing(errors)
    slept: list[float] = []
    with pytest.raises(TransientError, match="503 again"):
        call_with_retry(fn, POLICY, what="test", sleep=slept.append, rng=_Top())
    assert fn.calls == 6  # type: ignore[attr-defined]
    assert slept == [1, 2, 1, 1, 2]


def test_progress_never_outlasts_max_elapsed() -> None:
    calls = 0

    def slow_partial() -> str:
        nonlocal calls
        calls += 1
        if calls > 50:  # a budget that ignored max_elapsed would get here: fail rather than hang
            raise PermanentError("max_elapsed was not applied")
        time.sleep(0.03)
        raise TransientError("partly", progress=True)

    policy = RetryPolicy(max_attempts=2, initial_delay=0, max_delay=0, max_elapsed=0.1)
    started = time.monotonic()
    with pytest.raises(TransientError):
        call_with_retry(slow_partial, policy, what="test", sleep=lambda _s: None)
    assert time.monotonic() - started < 1
    assert 2 <= calls <= 5


def test_a_registry_that_takes_a_few_records_per_request_is_drained_through_a_small_budget(
    make_project: Callable[..., Project], mock_server: httpx.Client
) -> None:
    """A quota of 3 records per request and a batch of 12 need 4 attempts; 2 without progress would fail."""
    project = make_project(batch_size=12, page_size=50)
    mock_server.put("/_control/faults", json={"quota": 3})
    refs = [f"p{i:02d}" for i in range(12)]
    project.eventlog.append(
        [event(f"e{i}", ref, "create-individual", {"entityName": "individual"}) for i, ref in enumerate(refs)]
    )
    tight = RetryPolicy(max_attempts=2, initial_delay=0.01, max_delay=0.02, max_elapsed=10)
    report = run_connector(project, "reg", pull=False, retry=tight)
    assert report.ok, report.error
    assert report.push.counts.created == 12 and report.push.counts.retries == 3
    assert sorted(r["entityGuid"] for r in remote_records(mock_server)) == refs
    assert mock_server.get("/_control/stats").json()["duplicate_creates"] == {}


def test_without_progress_the_same_budget_stops_the_run_with_the_checkpoint_unmoved(
    make_project: Callable[..., Project], mock_server: httpx.Client
) -> None:
    project = make_project(batch_size=12, page_size=50)
    mock_server.put("/_control/faults", json={"script": [{"status": 503}, {"status": 503}]})
    project.eventlog.append([event("e0", "p00", "create-individual", {"entityName": "individual"})])
    tight = RetryPolicy(max_attempts=2, initial_delay=0.01, max_delay=0.02, max_elapsed=10)
    report = run_connector(project, "reg", pull=False, retry=tight)
    assert not report.ok and "gave up after retries" in (report.error or "")
    assert remote_records(mock_server) == []
    assert project.state.get_checkpoint("reg", Direction.PUSH) is None

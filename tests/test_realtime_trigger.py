"""The coalescing trigger alone: bursts, a change during a run, busy leases and failures."""

from __future__ import annotations

import threading

from connector_core.config import WebhookConfig
from connector_core.realtime.hooks import TokenBucket, authenticated, sign
from connector_core.realtime.trigger import CoalescingTrigger, Outcome, TriggerPolicy


def test_a_change_during_a_run_leads_to_exactly_one_follow_up() -> None:
    started, release = threading.Event(), threading.Event()
    calls: list[int] = []

    def run() -> Outcome:
        calls.append(1)
        if len(calls) == 1:
            started.set()
            assert release.wait(10)
        return Outcome.DONE

    stop = threading.Event()
    trigger = CoalescingTrigger("t", run, TriggerPolicy(debounce=0, max_delay=0), stop).start()
    try:
        trigger.poke()
        assert started.wait(10)
        for _ in range(500):  # a burst while the first run is on the wire
            trigger.poke()
        release.set()
        assert trigger.wait_idle(10)
        assert len(calls) == 2
    finally:
        stop.set()
        trigger.join(5)


def test_a_burst_before_the_debounce_ends_is_one_run() -> None:
    calls: list[int] = []
    now = [0.0]
    stop = threading.Event()
    policy = TriggerPolicy(debounce=1.0, max_delay=5.0)

    def run() -> Outcome:
        calls.append(1)
        return Outcome.DONE

    trigger = CoalescingTrigger("t", run, policy, stop, clock=lambda: now[0]).start()
    try:
        for _ in range(1000):
            trigger.poke()
        assert not trigger.wait_idle(0.3), "still quiet for less than the debounce: nothing ran"
        assert calls == []
        now[0] = 1.5  # the burst has been quiet for longer than the debounce
        assert trigger.wait_idle(10)
        assert len(calls) == 1
    finally:
        stop.set()
        trigger.join(5)


def test_busy_and_failed_runs_keep_the_change_pending_and_back_off() -> None:
    outcomes = [Outcome.BUSY, Outcome.FAILED, Outcome.DONE]
    calls: list[int] = []
    now = [0.0]
    stop = threading.Event()
    policy = TriggerPolicy(debounce=0, max_delay=0, busy_retry=0.1, backoff_base=60)

    def run() -> Outcome:
        calls.append(1)
        return outcomes[len(calls) - 1]

    trigger = CoalescingTrigger("t", run, policy, stop, clock=lambda: now[0]).start()
    try:
        trigger.poke()
        assert not trigger.wait_idle(0.3)
        assert len(calls) == 1, "busy: waits at least half the retry delay before asking again"
        now[0] = 0.2
        deadline = threading.Event()
        while len(calls) < 2 and not deadline.wait(0.01):
            pass
        assert len(calls) == 2 and trigger.failures == 1
        for _ in range(100):
            trigger.poke()
        assert not trigger.wait_idle(0.3), "the failure keeps the change pending"
        assert len(calls) == 2, "and backs off for a minute"
        now[0] = 61.0
        assert trigger.wait_idle(10)
        assert len(calls) == 3 and trigger.failures == 0
    finally:
        stop.set()
        trigger.join(5)


def test_signatures_tokens_and_the_bucket() -> None:
    config = WebhookConfig(secret="s" * 32, token="t" * 32)
    body = b'{"event": "res.partner.write"}'
    assert authenticated(config, {"x-dcsync-signature": sign("s" * 32, body)}, body)
    assert not authenticated(config, {"x-dcsync-signature": sign("s" * 32, body + b" ")}, body)
    assert not authenticated(config, {"x-dcsync-signature": sign("x" * 32, body)}, body)
    assert not authenticated(config, {"x-dcsync-signature": "sha256="}, body)
    assert not authenticated(config, {}, body)
    assert authenticated(config, {"authorization": "Bearer " + "t" * 32}, body)
    assert not authenticated(config, {"authorization": "Bearer " + "t" * 31}, body)
    assert not authenticated(config, {"authorization": "Basic " + "t" * 32}, body)
    now = [0.0]
    bucket = TokenBucket(rate=0.5, burst=2, clock=lambda: now[0])
    assert bucket.take() == 0 and bucket.take() == 0
    assert bucket.take() == 2.0  # one token refills in two seconds
    now[0] = 2.0
    assert bucket.take() == 0


def test_a_watcher_that_connected_again_starts_its_next_backoff_afresh() -> None:
    """One long outage must not leave every later dropped connection waiting the longest delay."""
    import threading
    from dataclasses import dataclass

    from connector_core.realtime.watch import Watcher

    waits: list[float] = []

    class RecordingStop(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            waits.append(float(timeout or 0))
            return False

    @dataclass
    class Flaky(Watcher):
        calls: int = 0

        def _watch(self) -> None:
            self.calls += 1
            if self.calls == 3:
                self._up()  # connected, then lost again
            if self.calls == 4:
                self.stop.set()
                return
            raise OSError("connection lost")

    Flaky(on_change=lambda: None, stop=RecordingStop())._guarded()
    assert waits == [0.5, 1.0, 0.5]

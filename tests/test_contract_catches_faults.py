"""The contract suite fails connectors that are broken in the ways that lose or duplicate records.

A suite that every connector passes proves nothing until it is seen failing one: here it runs (in an inner
pytest session) against two mock connectors with a classic bug each, and must fail exactly the clauses
that bug breaks, while passing the rest.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from test_contract_mock import MockControl

from connector_core.connector import ConnectorError, PullPage, PushRecord, PushResult
from connector_core.events import shift_timestamp
from connector_core.state.sqlite import SqliteStateTxn
from connector_core.sync.push import Pusher
from connector_core.testing.contract import ConnectorContract, FakeControl, SettingsFactory
from connector_core.testing.server import ServedApp
from connectors.mock.connector import MockConnector
from connectors.mock.server import create_app
from connectors.rest.connector import RestConnector
from connectors.rest.fake import FakeRestOptions
from connectors.rest.fake import connector_settings as rest_settings
from connectors.rest.fake import create_app as create_rest_app
from connectors.rest.testing import FakeRestControl

pytest_plugins = ["pytester"]


class CreatesTwiceOnRetry(MockConnector):
    """Forgets to look up refs: a create whose answer was lost is sent again and makes a second record."""

    def lookup(self, refs: Sequence[str]) -> dict[str, str]:
        return {}


class CursorMovesBackwards(MockConnector):
    """Builds its next cursor from the first record of the page instead of the last one."""

    def pull(self, cursor: str | None, limit: int) -> PullPage:
        page = super().pull(cursor, limit)
        if not page.records or page.records[0].updated_at is None:
            return page
        first = page.records[0].updated_at
        state = {"scan": shift_timestamp(first, -timedelta(milliseconds=1)), "seen": [], "high": first}
        return replace(page, next_cursor=json.dumps(state))


class _BrokenMockContract(ConnectorContract):
    """The mock's contract fixtures, for a broken subclass (not collected here: no ``Test`` prefix)."""

    @pytest.fixture
    def fake_app(self) -> Any:
        return create_app()

    @pytest.fixture
    def connector_settings(self) -> SettingsFactory:
        return lambda url: {"url": url, "timeout": 5, "lookback_seconds": 0}

    @pytest.fixture
    def fake_control(self, dcsync_fake_server: ServedApp) -> FakeControl:
        return MockControl(dcsync_fake_server.url)


class DeadLettersOnLoginFailure(RestConnector):
    """Turns a refused login into a per-record refusal: every record is dead-lettered and the run 'succeeds'
    (what the first OpenSPP connector did with a misspelt database)."""

    def push(self, batch: Sequence[PushRecord]) -> list[PushResult]:
        try:
            return super().push(batch)
        except ConnectorError as exc:
            if not exc.systemic:
                raise
            return [PushResult.rejected(r.ref, exc.message) for r in batch]


class DeadLettersOnLoginFailureContract(ConnectorContract):
    connector_class = DeadLettersOnLoginFailure
    options = FakeRestOptions(auth="api_key", pagination="cursor", max_page_size=4)

    @pytest.fixture
    def fake_app(self) -> Any:
        return create_rest_app(self.options)

    @pytest.fixture
    def connector_settings(self) -> SettingsFactory:
        return lambda url: rest_settings(url, self.options)

    @pytest.fixture
    def fake_control(self, dcsync_fake_server: ServedApp) -> FakeControl:
        return FakeRestControl(dcsync_fake_server.url)


class WithoutIntentsContract(_BrokenMockContract):
    """A correct connector under an engine that forgot to write create intents before sending."""

    connector_class = MockConnector

    @pytest.fixture(autouse=True)
    def _no_intents(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(Pusher, "_record_intents", lambda self, batch: None)


class WithoutSnapshotsContract(_BrokenMockContract):
    """A correct connector under an engine whose links forget the payload last synced."""

    connector_class = MockConnector

    @pytest.fixture(autouse=True)
    def _no_snapshots(self, monkeypatch: pytest.MonkeyPatch) -> None:
        real = SqliteStateTxn.upsert_links

        def forgetful(self: SqliteStateTxn, links: Any) -> None:
            real(self, [replace(link, snapshot={}) for link in links])

        monkeypatch.setattr(SqliteStateTxn, "upsert_links", forgetful)


class CreatesTwiceContract(_BrokenMockContract):
    connector_class = CreatesTwiceOnRetry


class BackwardsCursorContract(_BrokenMockContract):
    connector_class = CursorMovesBackwards


def _run_contract(pytester: pytest.Pytester, contract: str) -> tuple[set[str], set[str]]:
    """Run the contract for ``contract`` in an inner session; the names of the tests failed and passed."""
    pytester.makepyfile(
        test_inner=f"""
        from test_contract_catches_faults import {contract}


        class TestBroken({contract}):
            pass
        """
    )
    outcome = pytester.inline_run("-p", "no:cacheprovider", "-q")
    passed, _, failed = outcome.listoutcomes()

    def name(report: pytest.TestReport) -> str:
        return report.nodeid.rsplit("::", 1)[-1]

    return {name(r) for r in failed}, {name(r) for r in passed}


def test_a_connector_that_creates_twice_on_retry_fails_the_contract(pytester: pytest.Pytester) -> None:
    failed, passed = _run_contract(pytester, "CreatesTwiceContract")
    assert failed == {
        "test_lookup_finds_records_by_their_ref_and_nothing_else",
        "test_an_update_changes_the_record_it_names_and_creates_nothing",
        "test_after_an_ambiguous_failure_a_retry_never_creates_twice",
        "test_a_run_that_gave_up_on_unanswered_creates_is_looked_up_by_the_next_run",
        "test_batches_sent_at_once_arrive_once_each",
    }
    assert "test_every_entity_arrives_once_and_a_second_run_sends_nothing" in passed


def test_a_connector_that_dead_letters_on_a_login_failure_fails_the_contract(
    pytester: pytest.Pytester,
) -> None:
    failed, passed = _run_contract(pytester, "DeadLettersOnLoginFailureContract")
    assert failed == {"test_a_refused_login_stops_the_run_with_nothing_dead_lettered"}
    assert "test_a_remote_failing_every_call_stops_the_run_with_nothing_dead_lettered" in passed


def test_an_engine_without_create_intents_fails_the_contract(pytester: pytest.Pytester) -> None:
    """Within one run a lost answer is looked up anyway; only the intents carry it to the next run."""
    failed, _ = _run_contract(pytester, "WithoutIntentsContract")
    assert failed == {"test_a_run_that_gave_up_on_unanswered_creates_is_looked_up_by_the_next_run"}


def test_an_engine_that_forgets_what_it_sent_fails_the_contract(pytester: pytest.Pytester) -> None:
    failed, _ = _run_contract(pytester, "WithoutSnapshotsContract")
    assert "test_an_entity_touched_without_a_change_is_not_sent_again" in failed


def test_a_connector_whose_cursor_moves_backwards_fails_the_contract(pytester: pytest.Pytester) -> None:
    failed, passed = _run_contract(pytester, "BackwardsCursorContract")
    assert failed == {
        "test_pull_pages_through_every_record_exactly_once",
        "test_the_cursor_never_moves_backwards",
        "test_a_change_after_the_cursor_is_pulled",
    }
    assert "test_pulled_records_become_entities_once" in passed


def test_the_harness_stops_a_pull_that_pages_forever(dcsync_serve: Any, dcsync_harness: Any) -> None:
    """The engine pages while the connector says there is more; the harness turns a loop into a failure."""

    class NeverDone(MockConnector):
        def pull(self, cursor: str | None, limit: int) -> PullPage:
            page = super().pull(None, limit)  # always from the start, under a new cursor each time
            return replace(page, next_cursor=str(uuid.uuid4()), has_more=True)

    served = dcsync_serve(create_app())
    MockControl(served.url).create_remote("individual", {"first_name": "Loop"})
    harness = dcsync_harness(NeverDone("loop", NeverDone.config_model.model_validate({"url": served.url})))
    report = harness.pull(max_pages=20)
    assert report.error is not None and "does not advance" in report.error

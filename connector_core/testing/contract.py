"""The contract suite: what every connector must do for the sync engine to keep its promises.

dcsync promises nothing lost and nothing duplicated, and it can only keep that promise if each connector
answers once per record, writes the ref where ``lookup`` finds it again, tells a transient failure from a
permanent one, and pages with a cursor that only moves forward. These are easy to get subtly wrong and
invisible until a network fails in production, so the suite proves them against the connector's fake
remote, with faults injected, and -- where the engine is what keeps the promise -- through the real engine
(:class:`~connector_core.testing.harness.SyncHarness`), observed on the fake's own record counts.

Use it by subclassing (the pytest plugin in :mod:`connector_core.testing.plugin` provides the fixtures it
builds on and is loaded automatically once dcsync is installed)::

    from connector_core.testing.contract import ConnectorContract

    class TestAcmeContract(ConnectorContract):
        connector_class = AcmeConnector

        @pytest.fixture
        def fake_app(self):
            return create_app()

        @pytest.fixture
        def connector_settings(self):
            return lambda url: {"url": url, "api_key": "test-key"}

        @pytest.fixture
        def fake_control(self, dcsync_fake_server):
            return AcmeFakeControl(dcsync_fake_server.url)

Tests for a capability the connector does not declare (a push-only connector has no pull) are skipped
with the reason, and so are those needing a :class:`FakeControl` ability the adapter leaves out.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar, NoReturn

import pytest
from pydantic import ValidationError

from connector_core.connector import (
    Capability,
    CheckResult,
    Connector,
    ConnectorConfig,
    ConnectorError,
    Operation,
    PullPage,
    PushRecord,
    PushResult,
    RemoteRecord,
)
from connector_core.entities import Entity
from connector_core.events import FormSubmission
from connector_core.mapping import MappingSet, identity_mapping, load_mapping
from connector_core.state.base import Direction
from connector_core.sync.report import DirectionReport
from connector_core.testing.harness import FAST_RETRY, SyncHarness, host_for, sample_events
from connector_core.testing.server import ServedApp, free_port

ConnectorFactory = Callable[[str], Connector]
"""Builds a connector aimed at a base URL (the fake's, or an unreachable one)."""
SettingsFactory = Callable[[str], dict[str, Any]]
"""Connector settings, as they would appear under ``settings:`` in dcsync.yaml, aimed at a base URL."""

_SECRET_KEY = re.compile(r"(password|secret|token|api_?key|credential)", re.IGNORECASE)
_NOT_SECRET = re.compile(r"(url|path|param|header|type|name)$", re.IGNORECASE)  # token_url, key_header


class FakeControl(ABC):
    """What the suite asks of a fake remote beyond the protocol the connector speaks.

    Kept small on purpose: a fake written for one connector usually has a ``/_control`` API or an
    in-process store already, and the adapter is a few lines over it. The first four methods are
    required; the pull ones default to skipping the tests that need them, so a push-only fake stays short.
    """

    @abstractmethod
    def count(self, ref: str) -> int:
        """How many records the remote holds that carry ``ref`` (two means a create was repeated)."""

    @abstractmethod
    def fail_writes(self, times: int = 1, *, after_commit: bool = False) -> None:
        """Make the next ``times`` write requests fail transiently.

        ``after_commit=False``: fail before doing the work (a 503, a 429). ``after_commit=True``: do the
        work, then fail (an error status after the commit, or a dropped connection), so the client cannot
        know whether its write happened -- the ambiguous failure ``lookup`` exists for.
        """

    @abstractmethod
    def reject(self, ref: str, message: str) -> None:
        """Refuse every write of ``ref`` as invalid (a permanent error), answering with ``message``."""

    @abstractmethod
    def clear_faults(self) -> None:
        """Stop injecting failures and rejections."""

    def create_remote(self, entity_name: str, data: dict[str, Any]) -> str:
        """Create a record on the remote side, as a clerk would; return its external id."""
        _skip_missing(self, "create_remote")

    def update_remote(self, external_id: str, data: dict[str, Any]) -> None:
        """Change fields of a remote record on the remote side, as a clerk would."""
        _skip_missing(self, "update_remote")

    def fail_reads(self, times: int = 1) -> None:
        """Make the next ``times`` read (pull) requests fail transiently, without answering."""
        _skip_missing(self, "fail_reads")

    # -- systemic failures: the run must stop, not dead-letter every record ----------------------------

    def fail_everything(self) -> None:
        """Answer every request (login, metadata, writes, reads) with a server error (HTTP 500 or the
        protocol's equivalent) until :meth:`clear_faults`."""
        _skip_missing(self, "fail_everything")

    def refuse_login(self) -> None:
        """Refuse dcsync's credentials (a wrong password, a database that does not exist, a revoked key)
        on every request until :meth:`clear_faults`; a remote without a login may skip this."""
        _skip_missing(self, "refuse_login")

    def refuse_metadata(self) -> None:
        """Refuse the metadata reads the connector makes before it writes (catalogs, field lists) with an
        access error, as a registry does for a user outside the right group, until :meth:`clear_faults`;
        a connector that reads no metadata may skip this."""
        _skip_missing(self, "refuse_metadata")


def _skip_missing(control: FakeControl, method: str) -> NoReturn:
    pytest.skip(f"{type(control).__name__} does not implement FakeControl.{method}")


def _unchanged_edits(entities: Sequence[Entity]) -> list[FormSubmission]:
    """One update per entity that changes none of its fields (a form re-submitted as it was)."""
    return [
        FormSubmission(
            guid=new_ref(),
            entity_guid=entity.guid,
            type=f"update-{entity.type}",
            data=dict(entity.data),
            timestamp="2099-01-01T00:00:00.000Z",
            user_id="contract-clerk",
        )
        for entity in entities
    ]


def new_ref() -> str:
    """A fresh entity guid: refs are DataCollect guids, and some remotes check their shape."""
    return str(uuid.uuid4())


def secret_values(settings: Any) -> list[str]:
    """Values under keys that name secrets (password, token, api_key, ...), anywhere in ``settings``."""
    found: list[str] = []
    if isinstance(settings, dict):
        for key, value in settings.items():
            secret = _SECRET_KEY.search(str(key)) and not _NOT_SECRET.search(str(key))
            if isinstance(value, str) and secret and len(value) >= 4:
                found.append(value)
            else:
                found.extend(secret_values(value))
    elif isinstance(settings, list):
        for item in settings:
            found.extend(secret_values(item))
    return found


class ConnectorContract:
    """Subclass as ``TestXxxContract`` and provide the fixtures below; every ``test_*`` is a clause.

    Required: the class attribute :attr:`connector_class` and the fixtures ``fake_app``,
    ``connector_settings`` and ``fake_control``. Optional: ``connector_factory`` (when a connector needs
    more than its settings, e.g. an injected client), ``invalid_settings``, ``contract_events`` and
    ``contract_mapping_file`` (when the remote needs mapped records), and the methods :meth:`payload`,
    :meth:`remote_data` and :meth:`remote_change` that shape the records used.
    """

    connector_class: ClassVar[type[Connector]]
    connector_name: ClassVar[str] = "contract"
    entity_name: ClassVar[str] = "individual"
    """The entity name (form) of records the direct push and pull tests make."""
    max_pages: ClassVar[int] = 500
    """A pass that takes more pages than this is taken to be looping (a cursor that does not advance)."""
    clock_resolution: ClassVar[float] = 0.0
    """Seconds per tick of the remote's change timestamps (1.0 for a clock in whole seconds). A connector
    may re-read the records of the newest tick; the cursor tests let that tick pass before re-reading."""

    # -- what a subclass provides ---------------------------------------------------------------------

    @pytest.fixture
    def fake_app(self) -> Any:
        """The fake remote as an ASGI app (a fresh one per test)."""
        pytest.fail(f"{type(self).__name__} must define the fake_app fixture", pytrace=False)

    @pytest.fixture
    def connector_settings(self) -> SettingsFactory:
        """A function: base URL -> the connector's settings aimed at it."""
        pytest.fail(f"{type(self).__name__} must define the connector_settings fixture", pytrace=False)

    @pytest.fixture
    def fake_control(self, dcsync_fake_server: ServedApp) -> FakeControl:
        """The :class:`FakeControl` adapter for the running fake."""
        pytest.fail(f"{type(self).__name__} must define the fake_control fixture", pytrace=False)

    @pytest.fixture
    def invalid_settings(self, connector_settings: SettingsFactory) -> list[tuple[dict[str, Any], str]]:
        """``(settings, key)`` pairs the config model must refuse, naming ``key`` in its error."""
        return []

    @pytest.fixture
    def contract_events(self) -> list[FormSubmission]:
        """The DataCollect events the engine tests push: households, members, edits."""
        return sample_events(households=3, members=2, updates=2)

    @pytest.fixture
    def contract_mapping_file(self) -> Path | None:
        """A mapping file for the engine tests (``None``: entity data goes out as it is)."""
        return None

    def payload(self, index: int) -> dict[str, Any]:
        """A record body the remote accepts, as the mapping would have produced it."""
        return {"first_name": f"Contract{index}", "last_name": "Tester", "phone_number": f"+1555010{index}"}

    def remote_data(self, index: int) -> dict[str, Any]:
        """Fields of a record a clerk creates on the remote side."""
        return {"first_name": f"Remote{index}", "last_name": "Clerk"}

    def remote_change(self) -> dict[str, Any]:
        """Fields a clerk changes on the remote side; pulled records must carry them in ``data``."""
        return {"last_name": "Clerk-Changed"}

    # -- fixtures the suite builds from those ---------------------------------------------------------

    @pytest.fixture
    def connector_factory(self, connector_settings: SettingsFactory) -> Iterator[ConnectorFactory]:
        """Connectors built from settings exactly as ``dcsync run`` builds them; closed after the test."""
        made: list[Connector] = []

        def factory(url: str) -> Connector:
            cls = self.connector_class
            connector = cls(self.connector_name, cls.config_model.model_validate(connector_settings(url)))
            made.append(connector)
            return connector

        yield factory
        for connector in made:
            connector.close()

    @pytest.fixture
    def connector(self, connector_factory: ConnectorFactory, dcsync_fake_server: ServedApp) -> Connector:
        return connector_factory(dcsync_fake_server.url)

    @pytest.fixture
    def contract_mappings(self, contract_mapping_file: Path | None) -> MappingSet:
        return load_mapping(contract_mapping_file) if contract_mapping_file else identity_mapping()

    @pytest.fixture
    def harness(
        self, connector: Connector, tmp_path: Path, contract_mappings: MappingSet
    ) -> Iterator[SyncHarness]:
        made = SyncHarness(connector, tmp_path / "harness", mappings=contract_mappings, batch_size=5)
        yield made
        made.close()

    # -- helpers ---------------------------------------------------------------------------------------

    def require(self, capability: Capability) -> None:
        if capability not in self.connector_class.capabilities:
            pytest.skip(f"{self.connector_class.type_name} does not declare the {capability} capability")

    def push_record(self, ref: str, index: int) -> PushRecord:
        return PushRecord(
            ref=ref, operation=Operation.CREATE, entity_name=self.entity_name, payload=self.payload(index)
        )

    def push(self, connector: Connector, records: Sequence[PushRecord]) -> dict[str, PushResult]:
        """``connector.push``, checked for the first rule: exactly one result per record."""
        results = connector.push(list(records))
        assert isinstance(results, list), (
            f"push returned {type(results).__name__}, expected a list of PushResult"
        )
        refs = [r.ref for r in results]
        expected = sorted(r.ref for r in records)
        assert sorted(refs) == expected, (
            f"push must answer exactly once for every record: sent {expected}, answered {sorted(refs)}"
        )
        return {r.ref: r for r in results}

    def outcome(self, connector: Connector, records: Sequence[PushRecord]) -> str:
        """How a push of ``records`` ended, as the engine sees it: transient, permanent or ok."""
        try:
            results = self.push(connector, records)
        except ConnectorError as exc:
            return "transient" if exc.transient else "permanent"
        if all(r.ok for r in results.values()):
            return "ok"
        if all(not r.ok and r.transient for r in results.values()):
            return "transient"
        return "permanent"

    def read_all(
        self, connector: Connector, cursor: str | None, limit: int
    ) -> tuple[list[RemoteRecord], str | None]:
        """Pull pages from ``cursor`` until the connector says there are no more; fail on a repeat."""
        records: list[RemoteRecord] = []
        seen: set[str] = set()
        for _ in range(self.max_pages):
            page = connector.pull(cursor, limit)
            assert isinstance(page, PullPage), f"pull returned {type(page).__name__}, expected a PullPage"
            assert len(page.records) <= limit, f"a page of {len(page.records)} records for a limit of {limit}"
            for record in page.records:
                assert isinstance(record, RemoteRecord)
                assert record.external_id not in seen, (
                    f"record {record.external_id} came back twice in one pass: the cursor {cursor!r} led "
                    "back to records already read (a cursor must never move backwards)"
                )
                seen.add(record.external_id)
            records.extend(page.records)
            cursor = page.next_cursor
            if not page.has_more:
                return records, cursor
        pytest.fail(
            f"pull still had more after {self.max_pages} pages of {limit}: its cursor does not advance",
            pytrace=False,
        )

    def make_remote(self, control: FakeControl, count: int) -> dict[str, dict[str, Any]]:
        return {
            control.create_remote(self.entity_name, self.remote_data(i)): self.remote_data(i)
            for i in range(count)
        }

    @staticmethod
    def leaf_guid(harness: SyncHarness) -> str:
        """An entity nothing else points to as its parent (refusing it parks no children)."""
        entities = harness.entities()
        parents = {e.parent_guid for e in entities if e.parent_guid}
        return next(e.guid for e in reversed(entities) if e.guid not in parents)

    @staticmethod
    def assert_once_each(control: FakeControl, guids: Sequence[str], when: str) -> None:
        wrong = {guid: n for guid in guids if (n := control.count(guid)) != 1}
        assert not wrong, (
            f"{when}, {len(wrong)} entities are not on the remote exactly once (ref: count): {wrong}; "
            "after an ambiguous failure the engine calls lookup(refs) and must find every record an "
            "unanswered request created"
        )

    # -- identity and settings ----------------------------------------------------------------------

    def test_declares_a_type_name_a_config_model_and_capabilities(self) -> None:
        cls = self.connector_class
        assert isinstance(cls, type) and issubclass(cls, Connector)
        name = getattr(cls, "type_name", None)
        assert isinstance(name, str) and re.fullmatch(r"[a-z][a-z0-9_-]*", name), (
            f"type_name {name!r} is what users write as `type:`: lower-case letters, digits, '-' and '_'"
        )
        assert issubclass(cls.config_model, ConnectorConfig), (
            "config_model must subclass ConnectorConfig, so a misspelt setting is an error, not ignored"
        )
        assert cls.capabilities, "declare at least one capability (push, pull)"
        assert set(cls.capabilities) <= set(Capability)
        assert not getattr(cls, "__abstractmethods__", None), (
            f"abstract methods left: {cls.__abstractmethods__}"
        )

    def test_settings_aimed_at_the_fake_are_valid(
        self, connector_settings: SettingsFactory, dcsync_fake_server: ServedApp
    ) -> None:
        self.connector_class.config_model.model_validate(connector_settings(dcsync_fake_server.url))

    def test_an_unknown_setting_is_refused_by_name(
        self, connector_settings: SettingsFactory, dcsync_fake_server: ServedApp
    ) -> None:
        settings = {**connector_settings(dcsync_fake_server.url), "no_such_setting": 1}
        with pytest.raises(ValidationError) as info:
            self.connector_class.config_model.model_validate(settings)
        assert "no_such_setting" in str(info.value)

    def test_a_missing_required_setting_is_named(
        self, connector_settings: SettingsFactory, dcsync_fake_server: ServedApp
    ) -> None:
        model = self.connector_class.config_model
        settings = connector_settings(dcsync_fake_server.url)
        for name, field in model.model_fields.items():
            key = field.alias or name
            if not field.is_required() or key not in settings:
                continue
            with pytest.raises(ValidationError) as info:
                model.model_validate({k: v for k, v in settings.items() if k != key})
            assert key in str(info.value), f"the error for a missing {key!r} does not name it: {info.value}"

    def test_invalid_settings_are_refused_by_name(
        self, invalid_settings: list[tuple[dict[str, Any], str]]
    ) -> None:
        if not invalid_settings:
            pytest.skip("no invalid_settings cases given")
        for settings, key in invalid_settings:
            with pytest.raises(ValidationError) as info:
                self.connector_class.config_model.model_validate(settings)
            assert key in str(info.value), f"the error does not name {key!r}: {info.value}"

    # -- check -------------------------------------------------------------------------------------

    def test_check_confirms_the_remote_answers(self, connector: Connector) -> None:
        result = connector.check()
        assert isinstance(result, CheckResult), (
            f"check returned {type(result).__name__}, expected CheckResult"
        )
        assert result.ok, f"check failed against the fake: {result.message}"
        assert result.message

    def test_check_reports_an_unreachable_remote_without_raising_or_leaking_secrets(
        self, connector_factory: ConnectorFactory, connector_settings: SettingsFactory
    ) -> None:
        url = f"http://127.0.0.1:{free_port()}"
        result = connector_factory(url).check()
        assert isinstance(result, CheckResult) and not result.ok
        assert result.message, "say what failed"
        for secret in secret_values(connector_settings(url)):
            assert secret not in result.message, "check's message shows a secret from the settings"

    # -- push, called directly ---------------------------------------------------------------------

    def test_push_answers_once_for_every_record(
        self, connector: Connector, fake_control: FakeControl
    ) -> None:
        self.require(Capability.PUSH)
        assert connector.push([]) == [], "an empty batch has an empty answer (and sends nothing)"
        records = [self.push_record(new_ref(), i) for i in range(3)]
        results = self.push(connector, records)
        for record in records:
            result = results[record.ref]
            assert result.ok, f"{record.ref} was refused: {result.error}"
            assert result.external_id, "a delivered create must carry the remote's id for the link"
            assert fake_control.count(record.ref) == 1
        assert len({r.external_id for r in results.values()}) == len(records), "each record has its own id"

    def test_lookup_finds_records_by_their_ref_and_nothing_else(self, connector: Connector) -> None:
        self.require(Capability.PUSH)
        records = [self.push_record(new_ref(), i) for i in range(3)]
        results = self.push(connector, records)
        unknown = new_ref()
        found = connector.lookup([*(r.ref for r in records), unknown])
        expected = {r.ref: str(results[r.ref].external_id) for r in records}
        assert {k: str(v) for k, v in found.items()} == expected, (
            "lookup(refs) must map the ref of every record the remote holds to its external id, and leave "
            "out refs it does not hold: after an ambiguous failure it is what stops a second create"
        )
        assert connector.lookup([]) == {}

    def test_an_update_changes_the_record_it_names_and_creates_nothing(
        self, connector: Connector, fake_control: FakeControl
    ) -> None:
        self.require(Capability.PUSH)
        record = self.push_record(new_ref(), 0)
        external_id = self.push(connector, [record])[record.ref].external_id
        update = replace(record, operation=Operation.UPDATE, external_id=external_id, payload=self.payload(1))
        result = self.push(connector, [update])[record.ref]
        assert result.ok, f"the update was refused: {result.error}"
        assert result.external_id in (None, external_id), "an update keeps the record's id"
        assert fake_control.count(record.ref) == 1, "an update must not create a record"
        assert {k: str(v) for k, v in connector.lookup([record.ref]).items()} == {
            record.ref: str(external_id)
        }

    def test_a_failure_before_the_write_is_transient(
        self, connector: Connector, fake_control: FakeControl
    ) -> None:
        self.require(Capability.PUSH)
        record = self.push_record(new_ref(), 0)
        fake_control.fail_writes(1)
        assert self.outcome(connector, [record]) == "transient", (
            "a 503/429 (or whatever the fake injects) must raise a transient ConnectorError or answer "
            "PushResult.rejected(..., transient=True), so the engine retries it"
        )
        fake_control.clear_faults()
        assert fake_control.count(record.ref) == 0

    def test_a_refused_record_is_permanent_and_named_while_the_rest_arrive(
        self, connector: Connector, fake_control: FakeControl
    ) -> None:
        self.require(Capability.PUSH)
        bad, good = self.push_record(new_ref(), 0), self.push_record(new_ref(), 1)
        fake_control.reject(bad.ref, "national id already registered")
        results = self.push(connector, [bad, good])
        refused = results[bad.ref]
        assert not refused.ok and not refused.transient, (
            "a validation error is permanent: retrying cannot fix it"
        )
        assert refused.error and "national id already registered" in refused.error, (
            f"the dead letter must carry the remote's reason, got {refused.error!r}"
        )
        assert results[good.ref].ok, f"one refused record must not sink its batch: {results[good.ref].error}"
        assert fake_control.count(good.ref) == 1 and fake_control.count(bad.ref) == 0

    def test_an_unreachable_remote_is_a_transient_error(self, connector_factory: ConnectorFactory) -> None:
        dead = connector_factory(f"http://127.0.0.1:{free_port()}")
        if Capability.PUSH in self.connector_class.capabilities:
            assert self.outcome(dead, [self.push_record(new_ref(), 0)]) == "transient"
        if Capability.PULL in self.connector_class.capabilities:
            with pytest.raises(ConnectorError) as info:
                dead.pull(None, 5)
            assert info.value.transient, "a refused connection is transient: the remote may be back soon"

    # -- push, through the engine ------------------------------------------------------------------

    def test_every_entity_arrives_once_and_a_second_run_sends_nothing(
        self, harness: SyncHarness, contract_events: list[FormSubmission], fake_control: FakeControl
    ) -> None:
        self.require(Capability.PUSH)
        harness.append(contract_events)
        guids = [e.guid for e in harness.entities()]
        report = harness.push()
        assert report.error is None, report.error
        assert [(d.ref, d.reason) for d in harness.dead_letters()] == []
        assert report.counts.created == len(guids)
        assert set(harness.links()) == set(guids)
        self.assert_once_each(fake_control, guids, "after one push")
        assert harness.checkpoint(Direction.PUSH) == harness.eventlog.head()
        again = harness.push()
        assert again.error is None, again.error
        assert again.counts.created + again.counts.updated == 0, "nothing changed, so nothing is sent"

    def test_an_entity_touched_without_a_change_is_not_sent_again(
        self, harness: SyncHarness, contract_events: list[FormSubmission], fake_control: FakeControl
    ) -> None:
        """A phone that re-submits a form unchanged makes new events but no new payload: the snapshot
        kept on the link is what stops a resend (and what keeps pulled changes from echoing back)."""
        self.require(Capability.PUSH)
        harness.append(contract_events)
        first = harness.push()
        assert first.error is None, first.error
        entities = harness.entities()
        touched = harness.append(_unchanged_edits(entities))
        assert touched == len(entities)
        again = harness.push()
        assert again.error is None, again.error
        assert again.counts.created + again.counts.updated == 0, (
            f"{again.counts.created + again.counts.updated} unchanged entities were sent again: compare "
            "the mapped payload with the link's snapshot before sending"
        )
        assert again.counts.unchanged == len(entities)
        self.assert_once_each(fake_control, [e.guid for e in entities], "after an unchanged re-submission")

    def test_after_an_ambiguous_failure_a_retry_never_creates_twice(
        self, harness: SyncHarness, contract_events: list[FormSubmission], fake_control: FakeControl
    ) -> None:
        self.require(Capability.PUSH)
        harness.append(contract_events)
        guids = [e.guid for e in harness.entities()]
        fake_control.fail_writes(2, after_commit=True)
        report = harness.push()
        assert report.error is None, report.error
        assert report.counts.retries >= 1, "the injected failures never reached the engine"
        self.assert_once_each(fake_control, guids, "after writes that committed but lost their answers")
        assert set(harness.links()) == set(guids)

    def test_a_run_that_gave_up_on_unanswered_creates_is_looked_up_by_the_next_run(
        self, harness: SyncHarness, contract_events: list[FormSubmission], fake_control: FakeControl
    ) -> None:
        """Writes that commit and lose their answers until the retries are spent: the run stops, and the
        next one (a new process, as far as it knows) must find what the first created before sending --
        the create intents written before each request are what tell it to look."""
        self.require(Capability.PUSH)
        harness.append(contract_events)
        guids = [e.guid for e in harness.entities()]
        fake_control.fail_writes(50, after_commit=True)
        stopped = harness.push()
        if stopped.error is None:
            # the connector settled every record within the run (it found its creates and updated them
            # with writes the fake did not fail): nothing is left for the next run to look up
            self.assert_once_each(fake_control, guids, "after writes that committed but lost their answers")
            return
        assert harness.checkpoint(Direction.PUSH) is None, "the checkpoint stays before undelivered records"
        fake_control.clear_faults()
        report = harness.push()
        assert report.error is None, report.error
        self.assert_once_each(fake_control, guids, "after a run gave up on unanswered creates and a rerun")
        assert set(harness.links()) == set(guids)

    def test_transient_failures_are_retried_and_everything_arrives_once(
        self, harness: SyncHarness, contract_events: list[FormSubmission], fake_control: FakeControl
    ) -> None:
        self.require(Capability.PUSH)
        harness.append(contract_events)
        guids = [e.guid for e in harness.entities()]
        fake_control.fail_writes(2)
        report = harness.push()
        assert report.error is None, report.error
        assert report.counts.retries >= 2
        self.assert_once_each(fake_control, guids, "after transient failures")

    def test_a_refused_record_is_dead_lettered_with_the_reason_and_the_run_goes_on(
        self, harness: SyncHarness, contract_events: list[FormSubmission], fake_control: FakeControl
    ) -> None:
        self.require(Capability.PUSH)
        harness.append(contract_events)
        guids = [e.guid for e in harness.entities()]
        victim = self.leaf_guid(harness)
        fake_control.reject(victim, "national id already registered")
        report = harness.push()
        assert report.error is None, report.error
        letters = harness.dead_letters()
        assert [d.ref for d in letters] == [victim]
        assert "national id already registered" in letters[0].reason
        assert report.counts.created == len(guids) - 1
        assert harness.checkpoint(Direction.PUSH) == harness.eventlog.head(), (
            "a dead letter does not hold the run"
        )

    # -- failures that are about the run, not a record ------------------------------------------------

    def _assert_stopped_clean(self, harness: SyncHarness, report: DirectionReport, when: str) -> None:
        assert report.error is not None, f"{when}: the run reported success; it must stop and say why"
        letters = [(d.ref, d.reason) for d in harness.dead_letters()]
        assert letters == [], (
            f"{when}: {len(letters)} records were dead-lettered, first {letters[:1]}; the records are not at "
            "fault -- raise SystemicError (or AuthenticationError) so the run stops with nothing "
            "dead-lettered, or a TransientError if a retry may cure it"
        )
        assert harness.checkpoint(Direction.PUSH) is None, f"{when}: the push checkpoint moved"

    def _systemic_case(
        self,
        harness: SyncHarness,
        contract_events: list[FormSubmission],
        fake_control: FakeControl,
        inject: Callable[[], None],
        when: str,
    ) -> None:
        harness.append(contract_events)
        guids = [e.guid for e in harness.entities()]
        inject()
        if Capability.PULL in self.connector_class.capabilities:
            pulled = harness.pull()
            assert pulled.error is not None, f"{when}: the pull reported success"
            assert harness.dead_letters() == [], f"{when}: the pull dead-lettered records"
        if Capability.PUSH not in self.connector_class.capabilities:
            return
        self._assert_stopped_clean(harness, harness.push(), when)
        fake_control.clear_faults()
        report = harness.push()
        assert report.error is None, f"once the cause is gone, the next run delivers: {report.error}"
        self.assert_once_each(fake_control, guids, f"after a run stopped by {when} and a rerun")

    def test_a_remote_failing_every_call_stops_the_run_with_nothing_dead_lettered(
        self, harness: SyncHarness, contract_events: list[FormSubmission], fake_control: FakeControl
    ) -> None:
        self._systemic_case(
            harness,
            contract_events,
            fake_control,
            fake_control.fail_everything,
            "a server error on every call",
        )

    def test_a_refused_login_stops_the_run_with_nothing_dead_lettered(
        self, harness: SyncHarness, contract_events: list[FormSubmission], fake_control: FakeControl
    ) -> None:
        self._systemic_case(
            harness, contract_events, fake_control, fake_control.refuse_login, "a refused login"
        )

    def test_a_refused_metadata_read_stops_the_run_with_nothing_dead_lettered(
        self, harness: SyncHarness, contract_events: list[FormSubmission], fake_control: FakeControl
    ) -> None:
        self._systemic_case(
            harness, contract_events, fake_control, fake_control.refuse_metadata, "a metadata read refused"
        )

    def test_the_same_refusal_of_every_record_stops_the_run_instead_of_dead_lettering_them(
        self, harness: SyncHarness, contract_events: list[FormSubmission], fake_control: FakeControl
    ) -> None:
        """A field the registry lacks fails every record with one message: ``systemic_after`` refusals in
        a row for one reason stop the run, and none of them is dead-lettered."""
        self.require(Capability.PUSH)
        harness.append(contract_events)
        entities = harness.entities()
        roots = [e.guid for e in entities if not e.parent_guid]
        if len(roots) < 2:
            pytest.skip("contract_events need two entities without a parent for this clause")
        harness.systemic_after = len(roots)
        for entity in entities:
            fake_control.reject(entity.guid, "Invalid field 'hh_size' on model 'res.partner'")
        report = harness.push()
        self._assert_stopped_clean(harness, report, "every record refused for one reason")
        assert report.error is not None and "hh_size" in report.error, "the stop names the remote's reason"
        fake_control.clear_faults()
        again = harness.push()
        assert again.error is None, again.error
        self.assert_once_each(fake_control, [e.guid for e in entities], "after the cause was fixed")

    def test_when_failures_outlast_the_retries_the_checkpoint_stays_and_the_next_run_delivers(
        self, harness: SyncHarness, contract_events: list[FormSubmission], fake_control: FakeControl
    ) -> None:
        self.require(Capability.PUSH)
        harness.append(contract_events)
        guids = [e.guid for e in harness.entities()]
        fake_control.fail_writes(1000)
        stopped = harness.push()
        assert stopped.error is not None, "a run whose writes all fail must stop with an error"
        assert harness.checkpoint(Direction.PUSH) is None, "the checkpoint must not pass undelivered records"
        assert harness.dead_letters() == [], "a transient failure is not a dead letter"
        fake_control.clear_faults()
        report = harness.push()
        assert report.error is None, report.error
        self.assert_once_each(fake_control, guids, "after a stopped run and a good one")
        assert harness.checkpoint(Direction.PUSH) == harness.eventlog.head()

    def test_batches_sent_at_once_arrive_once_each(
        self,
        connector: Connector,
        tmp_path: Path,
        contract_mappings: MappingSet,
        contract_events: list[FormSubmission],
        fake_control: FakeControl,
    ) -> None:
        """A connector that declares ``max_in_flight`` > 1 is called from several threads at once."""
        self.require(Capability.PUSH)
        if self.connector_class.max_in_flight <= 1:
            pytest.skip("max_in_flight is 1: the engine never overlaps push calls")
        harness = SyncHarness(
            connector,
            tmp_path / "in-flight",
            mappings=contract_mappings,
            batch_size=2,
            in_flight=self.connector_class.max_in_flight,
        )
        try:
            harness.append(contract_events)
            guids = [e.guid for e in harness.entities()]
            fake_control.fail_writes(2, after_commit=True)
            report = harness.push()
            assert report.error is None, report.error
            self.assert_once_each(fake_control, guids, "with batches in flight at once")
            assert set(harness.links()) == set(guids)
        finally:
            harness.close()

    # -- pull --------------------------------------------------------------------------------------

    def test_pull_pages_through_every_record_exactly_once(
        self, connector: Connector, fake_control: FakeControl
    ) -> None:
        self.require(Capability.PULL)
        made = self.make_remote(fake_control, 7)
        records, _ = self.read_all(connector, None, 3)
        missing = sorted(set(made) - {r.external_id for r in records})
        assert not missing, f"records never pulled: {missing}"
        by_id = {r.external_id: r for r in records}
        for external_id, data in made.items():
            pulled = by_id[external_id].data
            assert all(pulled.get(k) == v for k, v in data.items()), (
                f"{external_id}: pulled {pulled}, made {data}"
            )

    def test_the_cursor_never_moves_backwards(self, connector: Connector, fake_control: FakeControl) -> None:
        """Within a sweep no page goes back (``read_all`` fails on a repeat), and a sweep from where the
        last one ended does not start over. A connector may re-read a little at the boundary (ties on a
        timestamp cursor) or a look-back window; give the window 0 in the contract's settings."""
        self.require(Capability.PULL)
        made = self.make_remote(fake_control, 5)
        time.sleep(self.clock_resolution)
        _, end = self.read_all(connector, None, 2)
        again, end_again = self.read_all(connector, end, 2)
        assert len({r.external_id for r in again} & set(made)) < len(made), (
            "a sweep from the cursor the last complete sweep ended with read every record again: "
            "the cursor went back to the start (is it incremental? is a look-back window left on?)"
        )
        third, _ = self.read_all(connector, end_again, 2)
        assert len(third) <= len(again), "with nothing changed, a further sweep must not read more"

    def test_a_change_after_the_cursor_is_pulled(
        self, connector: Connector, fake_control: FakeControl
    ) -> None:
        self.require(Capability.PULL)
        made = list(self.make_remote(fake_control, 4))
        time.sleep(self.clock_resolution)
        _, end = self.read_all(connector, None, 10)
        time.sleep(0.01)  # a clerk's edit comes later than the records it edits
        fake_control.update_remote(made[1], self.remote_change())
        changed, _ = self.read_all(connector, end, 10)
        by_id = {r.external_id: r for r in changed}
        assert made[1] in by_id, "a record changed after the cursor was not pulled"
        assert len(set(by_id) & set(made)) < len(made), "the sweep after one change read every record again"
        data = by_id[made[1]].data
        assert all(data.get(k) == v for k, v in self.remote_change().items()), f"pulled {data}"

    def test_pulled_records_become_entities_once(
        self, harness: SyncHarness, fake_control: FakeControl
    ) -> None:
        self.require(Capability.PULL)
        made = self.make_remote(fake_control, 4)
        report = harness.pull()
        assert report.error is None, report.error
        linked = set(harness.links().values())
        assert set(made) <= linked, f"pulled records without an entity: {sorted(set(made) - linked)}"
        assert harness.checkpoint(Direction.PULL) is not None, "the pull cursor is committed"
        again = harness.pull()
        assert again.error is None and again.counts.appended == 0, "re-reading appends nothing"

    def test_a_failed_read_is_transient_and_retried(
        self, connector: Connector, harness: SyncHarness, fake_control: FakeControl
    ) -> None:
        self.require(Capability.PULL)
        made = self.make_remote(fake_control, 2)
        fake_control.fail_reads(1)
        with pytest.raises(ConnectorError) as info:
            connector.pull(None, 10)
        assert info.value.transient, "a failed read must be a transient ConnectorError"
        fake_control.fail_reads(1)
        report = harness.pull()
        assert report.error is None, report.error
        assert report.counts.retries >= 1
        assert set(made) <= set(harness.links().values())

    def test_a_pushed_record_is_not_pulled_back_as_a_change(
        self, harness: SyncHarness, contract_events: list[FormSubmission]
    ) -> None:
        self.require(Capability.PUSH)
        self.require(Capability.PULL)
        harness.append(contract_events)
        pushed = harness.push()
        assert pushed.error is None, pushed.error
        pulled = harness.pull()
        assert pulled.error is None, pulled.error
        assert pulled.counts.appended == 0, (
            "records dcsync pushed came back as changes: pull must give back the data (and ref) pushed"
        )
        assert len(harness.entities()) == len({e.entity_guid for e in contract_events}), "no new entities"
        again = harness.push()
        assert again.counts.created + again.counts.updated == 0, "a pull must not make the next push resend"

    # -- as an operator runs it ----------------------------------------------------------------------

    def test_a_project_file_runs_it(
        self,
        tmp_path: Path,
        connector_settings: SettingsFactory,
        dcsync_fake_server: ServedApp,
        contract_events: list[FormSubmission],
        contract_mapping_file: Path | None,
    ) -> None:
        """``type:`` and ``settings:`` in dcsync.yaml, settings checked by the config model, one run."""
        from connector_core.project import Project
        from connector_core.sync.runner import run_connector

        cls = self.connector_class
        instance: dict[str, Any] = {"type": cls.type_name, "batch_size": 5, "page_size": 10}
        if contract_mapping_file is not None:
            instance["mapping"] = str(Path(contract_mapping_file).resolve())
        instance["settings"] = connector_settings(dcsync_fake_server.url)
        path = tmp_path / "project" / "dcsync.yaml"
        path.parent.mkdir()
        path.write_text(json.dumps({"version": 1, "connectors": {"under-test": instance}}, indent=2))
        project = Project.open(path, host=host_for(cls))
        try:
            project.eventlog.append(contract_events)
            report = run_connector(project, "under-test", retry=FAST_RETRY)
            assert report.ok, report.error
            if report.push is not None:
                assert report.push.counts.created == len({e.entity_guid for e in contract_events})
            assert project.state.runs("under-test")[0].outcome == "ok"
        finally:
            project.close()

"""Sub-records fail on their own: a record delivered with one refused part (an ID, a bank account) is linked,
its children follow it, and only the part is dead-lettered as ``<guid>#<part>``; replaying that letter sends
the record again and closes the letter once the part is delivered."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from connector_core.connector import (
    CheckResult,
    Connector,
    ConnectorConfig,
    Operation,
    PartResult,
    PushRecord,
    PushResult,
    part_ref,
    split_part_ref,
)
from connector_core.events import FormSubmission
from connector_core.state.base import Direction
from connector_core.sync.replay import replay
from connector_core.testing.harness import SyncHarness


class _Registry(Connector):
    """A remote that keeps accounts apart from the record and refuses the ones in ``refused``."""

    type_name = "parts"

    def __init__(self) -> None:
        super().__init__("reg", ConnectorConfig())
        self.records: dict[str, dict] = {}
        self.creates: Counter[str] = Counter()
        self.accounts: dict[str, set[str]] = {}
        self.refused: set[str] = set()

    def check(self) -> CheckResult:
        return CheckResult(True, "ok")

    def push(self, batch: Sequence[PushRecord]) -> list[PushResult]:
        results = []
        for record in batch:
            if record.operation is Operation.CREATE:
                self.creates[record.ref] += 1
            self.records[record.ref] = dict(record.payload)
            held = self.accounts.setdefault(record.ref, set())
            parts = []
            for index, number in enumerate(record.payload.get("accounts") or []):
                path = ("accounts", index)
                if number in self.refused:
                    error = f"unknown bank of account {number}"
                    parts.append(PartResult(f"accounts:{number}", error, path))
                else:
                    held.add(number)  # matched by number: sending it again adds nothing
                    parts.append(PartResult(f"accounts:{number}", None, path))
            results.append(PushResult.delivered(record.ref, f"x-{record.ref}", parts))
        return results


def _event(guid: str, entity: str, data: dict, kind: str = "create-individual") -> FormSubmission:
    return FormSubmission(
        guid=guid, entity_guid=entity, type=kind, data=data, timestamp="2025-03-01T10:00:00.000Z", user_id="u"
    )


def _household(harness: SyncHarness) -> None:
    harness.append(
        [
            _event("e1", "hh", {"entityName": "household", "name": "H", "accounts": ["A-1", "B-2"]}),
            _event("e2", "kid", {"entityName": "individual", "name": "K", "parentGuid": "hh"}),
        ]
    )


def test_a_refused_part_is_dead_lettered_alone_and_its_record_and_children_are_delivered(
    tmp_path: Path,
) -> None:
    remote = _Registry()
    remote.refused = {"B-2"}
    harness = SyncHarness(remote, tmp_path)
    _household(harness)
    report = harness.push()
    assert report.error is None
    assert report.counts.created == 2 and report.counts.dead_lettered == 1
    assert set(harness.links()) == {"hh", "kid"}
    assert remote.accounts["hh"] == {"A-1"}
    (letter,) = harness.dead_letters()
    assert letter.ref == "hh#accounts:B-2" == part_ref("hh", "accounts:B-2")
    assert letter.reason == "unknown bank of account B-2"
    assert letter.payload["part"] == "accounts:B-2"
    assert split_part_ref(letter.ref) == ("hh", "accounts:B-2")

    # the link's snapshot is what the remote holds: without the refused account (a pull must not read
    # its absence as a removal); an ordinary run without new events sends nothing
    link = harness.state.get_link("reg", "hh")
    assert link is not None and link.snapshot["accounts"] == ["A-1"]
    quiet = harness.push()
    assert (quiet.counts.created, quiet.counts.updated, quiet.counts.dead_lettered) == (0, 0, 0)

    # a later change of the household offers the account again: refused again, its open letter is
    # neither doubled nor bumped (only a replay counts as an attempt)
    harness.append([_event("e3", "hh", {"name": "H2"}, kind="update-individual")])
    changed = harness.push()
    assert (changed.counts.updated, changed.counts.dead_lettered) == (1, 0)
    assert [(d.ref, d.attempts) for d in harness.dead_letters()] == [("hh#accounts:B-2", 1)]

    # replayed before the fix: the letter stays open with one more attempt
    again = replay(harness.context(), harness.dead_letters())
    assert again.counts.dead_lettered == 1
    (still,) = harness.dead_letters()
    assert (still.ref, still.attempts) == ("hh#accounts:B-2", 2)

    remote.refused.clear()
    fixed = replay(harness.context(), harness.dead_letters())
    assert fixed.counts.updated == 1 and fixed.counts.dead_lettered == 0
    assert harness.dead_letters() == []
    assert harness.state.get_dead_letter(letter.id).status == "replayed"
    assert remote.accounts["hh"] == {"A-1", "B-2"}
    assert remote.creates == Counter({"hh": 1, "kid": 1})  # the replay updated; nothing was created twice


def test_a_replayed_part_the_record_no_longer_carries_is_discarded(tmp_path: Path) -> None:
    remote = _Registry()
    remote.refused = {"B-2"}
    harness = SyncHarness(remote, tmp_path)
    _household(harness)
    harness.push()
    harness.append([_event("e3", "hh", {"accounts": ["A-1"]}, kind="update-individual")])
    # the remote holds exactly that already (the snapshot left the refused account out): nothing to send
    assert harness.push().counts.unchanged == 1
    (letter,) = harness.dead_letters()
    replay(harness.context(), [letter])
    assert harness.dead_letters() == []
    assert harness.state.get_dead_letter(letter.id).status == "discarded"


def test_a_part_the_remote_takes_with_a_later_change_closes_its_letter(tmp_path: Path) -> None:
    remote = _Registry()
    remote.refused = {"B-2"}
    harness = SyncHarness(remote, tmp_path)
    _household(harness)
    harness.push()
    remote.refused.clear()
    harness.append([_event("e3", "hh", {"name": "H2"}, kind="update-individual")])
    assert harness.push().counts.updated == 1
    assert remote.accounts["hh"] == {"A-1", "B-2"}
    link = harness.state.get_link("reg", "hh")
    assert link is not None and link.snapshot["accounts"] == ["A-1", "B-2"]
    harness.append([_event("e4", "hh", {"name": "H3"}, kind="update-individual")])
    assert harness.push().counts.dead_lettered == 0
    assert harness.dead_letters() == []
    letter = harness.state.dead_letters("reg", status="replayed")
    assert [d.ref for d in letter] == ["hh#accounts:B-2"]
    assert harness.state.open_dead_letter_refs("reg", Direction.PUSH, ["hh#accounts:B-2"]) == set()


def test_a_part_refused_again_for_another_reason_shows_the_new_reason_without_an_attempt(
    tmp_path: Path,
) -> None:
    remote = _Registry()
    remote.refused = {"B-2"}
    harness = SyncHarness(remote, tmp_path)
    _household(harness)
    harness.push()

    class _Stricter(_Registry):
        pass

    def push(batch: Sequence[PushRecord]) -> list[PushResult]:
        results = _Registry.push(remote, batch)
        return [
            PushResult.delivered(
                r.ref,
                r.external_id,
                [PartResult(p.part, p.error and "account B-2 is closed", p.path) for p in r.parts],
            )
            for r in results
        ]

    remote.push = push  # type: ignore[method-assign]
    harness.append([_event("e3", "hh", {"name": "H2"}, kind="update-individual")])
    changed = harness.push()
    assert (changed.counts.updated, changed.counts.dead_lettered) == (1, 0)
    (letter,) = harness.dead_letters()
    assert (letter.ref, letter.reason, letter.attempts) == ("hh#accounts:B-2", "account B-2 is closed", 1)
    assert letter.payload["payload"]["name"] == "H2"


def test_deleting_a_record_closes_the_letters_of_its_refused_parts(tmp_path: Path) -> None:
    remote = _Registry()
    remote.refused = {"B-2"}

    deleted: list[str] = []
    original = remote.push

    def push(batch: Sequence[PushRecord]) -> list[PushResult]:
        gone = [r for r in batch if r.operation is Operation.DELETE]
        deleted.extend(r.ref for r in gone)
        rest = original([r for r in batch if r.operation is not Operation.DELETE])
        return rest + [PushResult.delivered(r.ref, r.external_id) for r in gone]

    remote.push = push  # type: ignore[method-assign]
    harness = SyncHarness(remote, tmp_path)
    harness.append([_event("e1", "hh", {"entityName": "household", "name": "H", "accounts": ["A-1", "B-2"]})])
    harness.push()
    (letter,) = harness.dead_letters()
    harness.append([_event("e9", "hh", {"reason": "duplicate household"}, kind="delete-entity")])
    report = harness.push()
    assert deleted == ["hh"] and report.counts.deleted == 1
    assert harness.dead_letters() == []
    assert harness.state.get_dead_letter(letter.id).status == "discarded"


class _Merging(_Registry):
    """A remote that merges records it takes for one person (a national ID it already holds): the create
    of a second local record is answered with the first one's external id."""

    def push(self, batch: Sequence[PushRecord]) -> list[PushResult]:
        results = super().push(batch)
        return [
            PushResult.delivered(r.ref, "x-p1" if r.ref in ("p1", "p2") else r.external_id, r.parts)
            for r in results
        ]


def test_a_create_answered_with_an_external_id_linked_to_another_entity_is_dead_lettered(
    tmp_path: Path,
) -> None:
    remote = _Merging()
    harness = SyncHarness(remote, tmp_path)
    harness.append([_event("e1", "p1", {"entityName": "individual", "name": "Ana"})])
    assert harness.push().counts.created == 1
    # the same person registered again on another phone, in a batch with a third one
    harness.append(
        [
            _event("e2", "p2", {"entityName": "individual", "name": "Ana B."}),
            _event("e3", "p3", {"entityName": "individual", "name": "Kofi"}),
        ]
    )
    report = harness.push()  # a traceback here before: the run stopped on the same record every time
    assert report.error is None
    assert (report.counts.created, report.counts.dead_lettered) == (1, 1)
    assert set(harness.links()) == {"p1", "p3"}
    (letter,) = harness.dead_letters()
    assert letter.ref == "p2"
    assert "x-p1" in letter.reason and "p1" in letter.reason and "already linked" in letter.reason
    assert harness.push().counts.dead_lettered == 0  # the next run moves on


def test_two_creates_of_one_batch_answered_with_one_external_id_link_the_first_only(tmp_path: Path) -> None:
    remote = _Merging()
    harness = SyncHarness(remote, tmp_path)
    harness.append(
        [
            _event("e1", "p1", {"entityName": "individual", "name": "Ana"}),
            _event("e2", "p2", {"entityName": "individual", "name": "Ana B."}),
        ]
    )
    report = harness.push()
    assert report.error is None and (report.counts.created, report.counts.dead_lettered) == (1, 1)
    assert set(harness.links()) == {"p1"}
    assert [d.ref for d in harness.dead_letters()] == ["p2"]

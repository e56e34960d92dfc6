"""Suspected engine bugs from a code review, each tried against the fake OpenSPP through ``Project.open``
and ``run_connector`` as an operator runs them: a member added back in a later run, a pull dry run over
several pages, and two remote records carrying one entity's reference."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from openspp_support import Rpc
from typer.testing import CliRunner

from connector_core.cli import app
from connector_core.events import FormSubmission
from connector_core.project import Project
from connector_core.retry import RetryPolicy
from connector_core.state.base import Direction
from connector_core.sync.runner import run_connector
from connectors.openspp.fake import DATABASE, FakeOpenSpp
from connectors.openspp.sample import registry_log

MAPPING = Path(__file__).resolve().parents[2] / "mappings" / "openspp.yaml"
RETRY = RetryPolicy(max_attempts=4, initial_delay=0.01, max_delay=0.05, max_elapsed=20)
HH, ANA, BEN = (
    "5e7a0c11-0000-4000-8000-000000000001",
    "5e7a0c11-0000-4000-8000-000000000002",
    "5e7a0c11-0000-4000-8000-000000000003",
)

OpenProject = Callable[..., Project]


@pytest.fixture
def open_project(tmp_path: Path, url: str) -> Iterator[OpenProject]:
    """A project in its own directory (own event log and state) aimed at the served fake."""
    opened: list[Project] = []

    def make(name: str = "field", *, page_size: int = 200, **settings: Any) -> Project:
        directory = tmp_path / name
        directory.mkdir()
        connection = {"url": url, "database": DATABASE, "username": "registrar", "password": "registrar"}
        config = {
            "connectors": {
                "reg": {
                    "type": "openspp",
                    "mapping": str(MAPPING),
                    "page_size": page_size,
                    "settings": {**connection, **settings},
                }
            }
        }
        (directory / "dcsync.yaml").write_text(yaml.safe_dump(config))
        project = Project.open(directory / "dcsync.yaml")
        opened.append(project)
        return project

    yield make
    for project in opened:
        project.close()


def _event(n: int, guid: str, kind: str, data: dict[str, Any]) -> FormSubmission:
    return FormSubmission(
        guid=f"5e7a0c11-1111-4000-8000-{n:012d}",
        entity_guid=guid,
        type=kind,
        data=data,
        timestamp="2025-03-01T10:00:00.000Z",
        user_id="admin",
    )


def _person(guid: str, first: str, relationship: str) -> dict[str, Any]:
    return {
        "entityName": "individual",
        "parentGuid": HH,
        "first_name": first,
        "last_name": "Wanjiru",
        "relationship": relationship,
    }


# -- 3: two remote records carrying one entity's reference -------------------------------------------
def test_a_remote_duplicate_carrying_our_reference_is_reported_once_and_never_takes_the_link(
    open_project: OpenProject, fake: FakeOpenSpp, rpc: Rpc
) -> None:
    """A registrar copies a registrant, its guid ID included (``reference: reg_id``): two partners now carry
    the entity's reference. The entity stays linked to the partner it was linked to, the copy is one pull
    dead letter naming both partners, and pulling again (the lag window reads both again) neither re-links,
    appends, nor reports it again."""
    field = open_project(reference="reg_id", reference_id_type="DataCollect GUID")
    field.eventlog.append(
        [
            _event(1, HH, "create-individual", {"entityName": "household", "household_name": "Wanjiru"}),
            _event(2, BEN, "create-individual", _person(BEN, "Ben", "3")),
        ]
    )
    assert run_connector(field, "reg", retry=RETRY).ok
    original = field.state.get_link("reg", BEN)
    assert original is not None
    types = fake.state("g2p.id.type")["g2p.id.type"]
    guid_type = next(t["id"] for t in types if t["name"] == "DataCollect GUID")
    (copy,) = rpc.ok(
        "res.partner",
        "create",
        [
            [
                {
                    "is_registrant": True,
                    "given_name": "Benny",
                    "family_name": "Wanjiru",
                    "name": "WANJIRU, BENNY",
                    "reg_ids": [[0, 0, {"id_type": guid_type, "value": BEN}]],
                }
            ]
        ],
    )
    head = field.eventlog.head()

    for attempt in range(3):
        report = run_connector(field, "reg", retry=RETRY)
        assert report.ok, report.error
        assert report.pull is not None and report.push is not None
        link = field.state.get_link("reg", BEN)
        assert link is not None and link.external_id == original.external_id, f"pull {attempt}: re-linked"
        assert report.pull.counts.appended == 0, f"pull {attempt} appended the copy's answers"
        assert report.pull.counts.dead_lettered == (1 if attempt == 0 else 0), report.pull.counts
        assert report.push.counts.updated + report.push.counts.created == 0, report.push.counts
    assert field.eventlog.head() == head
    entity = field.eventlog.get_entity(BEN)
    assert entity is not None and entity.data["first_name"] == "Ben"
    (letter,) = field.state.dead_letters("reg")
    assert letter.direction == Direction.PULL and letter.ref == str(copy) and letter.attempts == 1
    assert original.external_id in letter.reason and str(copy) in letter.reason and BEN in letter.reason


# -- 2: a pull dry run over several pages --------------------------------------------------------------
def test_a_pull_dry_run_over_several_pages_counts_what_the_real_run_does(
    open_project: OpenProject, fake: FakeOpenSpp
) -> None:
    """Households come on the first pages and their members on later ones (and again in the memberships
    stream): the dry run must see what its earlier pages would have linked, as the real run sees what it
    committed, or every member reads as an orphan and every re-read as a new record."""
    field = open_project("field")
    field.eventlog.append(registry_log(households=3, members=3))
    assert run_connector(field, "reg", retry=RETRY).ok

    office = open_project("office", page_size=2)
    result = CliRunner().invoke(
        app,
        ["run", "reg", "--pull", "--dry-run", "-c", str(office.config.path)],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    assert "would be dead-lettered" not in result.output, result.output
    dry = run_connector(office, "reg", push=False, dry_run=True, retry=RETRY)
    assert dry.ok, dry.error
    assert office.eventlog.head() is None and office.state.get_link("reg", BEN) is None, "wrote nothing"

    real = run_connector(office, "reg", push=False, retry=RETRY)
    assert real.ok, real.error
    assert dry.pull is not None and real.pull is not None
    assert real.pull.counts.created == 12 and real.pull.counts.dead_lettered == 0, real.pull.counts
    compared = ("read", "created", "updated", "deleted", "unchanged", "skipped", "dead_lettered", "conflicts")
    assert {k: getattr(dry.pull.counts, k) for k in compared} == {
        k: getattr(real.pull.counts, k) for k in compared
    }


# -- 1: a member removed, then added back in a later run ---------------------------------------------
def _partner(project: Project, guid: str) -> int:
    link = project.state.get_link("reg", guid)
    assert link is not None, guid
    return int(link.external_id)


def _memberships(fake: FakeOpenSpp, partner: int) -> list[tuple[int, bool]]:
    """(group, ended) of each membership row of ``partner``."""
    rows = fake.state("g2p.group.membership")["g2p.group.membership"]
    return sorted((r["group"], bool(r["ended_date"])) for r in rows if r["individual"] == partner)


def _register_the_wanjirus(field: Project, ben: dict[str, Any] | None = None) -> None:
    """DataCollect's ``create-group`` of the Wanjiru household with Ana and Ben (``ben``: Ben as given,
    e.g. listed only, without his own ``parentGuid``)."""
    ana = {"guid": ANA, **_person(ANA, "Ana", "1")}
    ben = ben if ben is not None else {"guid": BEN, **_person(BEN, "Ben", "3")}
    household = {"entityName": "household", "household_name": "Wanjiru", "members": [ana, ben]}
    field.eventlog.append([_event(1, HH, "create-group", household)])


def test_a_member_removed_then_added_back_in_a_later_run_is_a_member_again(
    open_project: OpenProject, fake: FakeOpenSpp
) -> None:
    """DataCollect's ``remove-member`` ends the membership in OpenSPP (ended, never deleted); an
    ``add-member`` of the same person in a later run makes it active again, although the person's own
    answers did not change."""
    field = open_project()
    _register_the_wanjirus(field)
    first = run_connector(field, "reg", retry=RETRY)
    assert first.ok and first.push is not None and first.push.counts.created == 3, first.push
    household, person = (_partner(field, g) for g in (HH, BEN))
    assert _memberships(fake, person) == [(household, False)]

    field.eventlog.append([_event(2, HH, "remove-member", {"memberId": BEN})])
    removed = run_connector(field, "reg", retry=RETRY)
    assert removed.ok, removed.error
    assert field.state.dead_letters("reg") == []
    assert _memberships(fake, person) == [(household, True)], "the membership is ended"

    ben = {"guid": BEN, **_person(BEN, "Ben", "3")}
    field.eventlog.append([_event(3, HH, "add-member", {"members": [ben]})])
    back = run_connector(field, "reg", retry=RETRY)
    assert back.ok, back.error
    assert _memberships(fake, person) == [(household, False)], "the same membership is active again"
    assert field.state.dead_letters("reg") == []
    again = run_connector(field, "reg", retry=RETRY)
    assert again.pull is not None and again.push is not None
    assert again.pull.counts.appended == 0 and again.push.counts.updated == 0
    assert _memberships(fake, person) == [(household, False)]


def test_a_member_moved_to_another_household_by_its_parent_alone_is_moved_in_openspp(
    open_project: OpenProject, fake: FakeOpenSpp
) -> None:
    """Found with suspicion 1: the parent travels beside the payload, so a form that changes only
    ``parentGuid`` left the payload equal to the snapshot and the move was never sent."""
    other = "5e7a0c11-0000-4000-8000-000000000009"
    field = open_project()
    field.eventlog.append(
        [
            _event(1, HH, "create-individual", {"entityName": "household", "household_name": "Wanjiru"}),
            _event(2, other, "create-individual", {"entityName": "household", "household_name": "Otieno"}),
            _event(3, BEN, "create-individual", _person(BEN, "Ben", "3")),
        ]
    )
    assert run_connector(field, "reg", retry=RETRY).ok
    first, second, person = (_partner(field, g) for g in (HH, other, BEN))
    field.eventlog.append([_event(4, BEN, "update-individual", {"parentGuid": other})])
    moved = run_connector(field, "reg", retry=RETRY)
    assert moved.ok and moved.push is not None and moved.push.counts.updated == 1, moved.push
    assert _memberships(fake, person) == [(first, True), (second, False)]
    again = run_connector(field, "reg", retry=RETRY)
    assert again.pull is not None and again.push is not None
    assert again.pull.counts.appended == 0 and again.push.counts.updated == 0


# -- 4: a member removed, then edited without being added back -----------------------------------------
def _phone(fake: FakeOpenSpp, partner: int) -> str | None:
    (row,) = [r for r in fake.state("res.partner")["res.partner"] if r["id"] == partner]
    return row.get("phone") or None


def _ben_removed_from_the_wanjirus(field: Project, fake: FakeOpenSpp) -> tuple[int, int, int]:
    """The Wanjiru household (Ana, Ben) pushed, then Ben's ``remove-member`` pushed (his membership
    ended): the OpenSPP ids of the household, Ben and Ana."""
    _register_the_wanjirus(field)
    assert run_connector(field, "reg", retry=RETRY).ok
    household, person, other = (_partner(field, g) for g in (HH, BEN, ANA))
    field.eventlog.append([_event(2, HH, "remove-member", {"memberId": BEN})])
    assert run_connector(field, "reg", retry=RETRY).ok
    assert _memberships(fake, person) == [(household, True)]
    return household, person, other


def test_a_removed_member_edited_later_is_not_made_a_member_again(
    open_project: OpenProject, fake: FakeOpenSpp
) -> None:
    """DataCollect's ``remove-member`` takes the person out of the group's ``memberIds`` but leaves their
    own ``parentGuid``. A later edit of the person (a phone number, no ``add-member``) must reach OpenSPP
    without making them a member again: the group in the log no longer lists them. The dry run says
    what the real run does, and a rerun sends nothing."""
    field = open_project()
    household, person, other = _ben_removed_from_the_wanjirus(field, fake)

    field.eventlog.append(
        [_event(3, BEN, "update-individual", {**_person(BEN, "Ben", "3"), "phone_number": "+254700000001"})]
    )
    dry = run_connector(field, "reg", dry_run=True, retry=RETRY)
    edited = run_connector(field, "reg", retry=RETRY)
    assert edited.ok and edited.push is not None, edited.error
    assert edited.push.counts.updated == 1, edited.push.counts
    assert _phone(fake, person) == "+254700000001", "the edit arrived"
    assert _memberships(fake, person) == [(household, True)], "no active membership came back"
    assert _memberships(fake, other) == [(household, False)], "the member who stayed is untouched"
    assert field.state.dead_letters("reg") == []
    assert dry.push is not None
    compared = ("created", "updated", "deleted", "unchanged", "skipped", "dead_lettered", "parked")
    assert {k: getattr(dry.push.counts, k) for k in compared} == {
        k: getattr(edited.push.counts, k) for k in compared
    }

    again = run_connector(field, "reg", retry=RETRY)
    assert again.ok and again.pull is not None and again.push is not None
    assert again.pull.counts.appended == 0, again.pull.counts
    assert again.push.counts.updated + again.push.counts.created == 0, again.push.counts
    assert _memberships(fake, person) == [(household, True)]


def test_a_member_the_registrar_adds_to_a_group_household_stays_a_member_after_a_local_edit(
    open_project: OpenProject, fake: FakeOpenSpp, rpc: Rpc
) -> None:
    """The other side of the rule: a membership made in OpenSPP (a removed member taken back by a
    registrar, a new person registered into the household) is pulled as ``add-member`` on the log's
    group, so the group lists them and a later local edit of the person keeps the membership. Written as
    ``parentGuid`` alone, the group would not list them and the edit would end the registrar's
    membership."""
    field = open_project()
    household, person, _other = _ben_removed_from_the_wanjirus(field, fake)

    (ended,) = [
        r["id"]
        for r in fake.state("g2p.group.membership")["g2p.group.membership"]
        if r["individual"] == person
    ]
    rpc.ok(
        "res.partner", "write", [[household], {"group_membership_ids": [[1, ended, {"ended_date": False}]]}]
    )
    (newcomer,) = rpc.ok(
        "res.partner",
        "create",
        [[{"is_registrant": True, "given_name": "Cy", "family_name": "Wanjiru", "name": "WANJIRU, CY"}]],
    )
    rpc.ok("g2p.group.membership", "create", [{"group": household, "individual": newcomer}])
    pulled = run_connector(field, "reg", retry=RETRY)
    assert pulled.ok, pulled.error
    group = field.eventlog.get_entity(HH)
    assert group is not None and BEN in group.member_ids, "the registrar's add-back is in the group"
    cy = field.state.find_link("reg", str(newcomer))
    assert cy is not None and cy.entity_guid in group.member_ids, "so is the newcomer"
    assert _memberships(fake, person) == [(household, False)]

    field.eventlog.append(
        [
            _event(3, BEN, "update-individual", {"phone_number": "+254700000002"}),
            _event(4, cy.entity_guid, "update-individual", {"phone_number": "+254700000003"}),
        ]
    )
    edited = run_connector(field, "reg", retry=RETRY)
    assert edited.ok and edited.push is not None and edited.push.counts.updated == 2, edited.push
    assert _phone(fake, person) == "+254700000002"
    assert _memberships(fake, person) == [(household, False)], "the edit kept the membership"
    assert _memberships(fake, newcomer) == [(household, False)]
    again = run_connector(field, "reg", retry=RETRY)
    assert again.ok and again.pull is not None and again.push is not None
    assert again.pull.counts.appended == 0 and again.push.counts.updated == 0, (again.pull, again.push)


# -- found on a real Odoo 17 + OpenG2P: a membership with an end date still ahead -----------------------
def test_a_planned_end_date_is_a_current_membership_and_a_local_edit_keeps_it(
    open_project: OpenProject, fake: FakeOpenSpp, rpc: Rpc
) -> None:
    """A registrar gives Ben's membership an end date still ahead (he leaves next year). OpenG2P keeps it
    active (``is_ended`` false, ``status`` active: observed) and counts him in the household, so dcsync
    must too: the pull leaves him in the group, and a later local edit of Ben neither reopens the
    membership (which wiped the registrar's date) nor ends it."""
    field = open_project()
    _register_the_wanjirus(field)
    assert run_connector(field, "reg", retry=RETRY).ok
    household, person = (_partner(field, g) for g in (HH, BEN))
    (membership,) = [
        r["id"]
        for r in fake.state("g2p.group.membership")["g2p.group.membership"]
        if r["individual"] == person
    ]
    planned = "2099-01-01 00:00:00"
    rpc.ok("g2p.group.membership", "write", [[membership], {"ended_date": planned}], user="registrar")

    pulled = run_connector(field, "reg", retry=RETRY)
    assert pulled.ok and pulled.pull is not None and pulled.pull.counts.appended == 0, pulled.pull
    group = field.eventlog.get_entity(HH)
    assert group is not None and BEN in group.member_ids

    field.eventlog.append([_event(2, BEN, "update-individual", {"phone_number": "+254700000004"})])
    edited = run_connector(field, "reg", retry=RETRY)
    assert edited.ok and edited.push is not None and edited.push.counts.updated == 1, edited.push
    assert _phone(fake, person) == "+254700000004"
    (row,) = rpc.ok("g2p.group.membership", "read", [[membership], ["group", "ended_date", "is_ended"]])
    assert (row["group"][0], row["ended_date"], row["is_ended"]) == (household, planned, False)
    again = run_connector(field, "reg", retry=RETRY)
    assert again.ok and again.pull is not None and again.push is not None
    assert again.pull.counts.appended == 0 and again.push.counts.updated == 0, (again.pull, again.push)


@pytest.mark.parametrize("own_parent", [True, False], ids=["parent-guid", "listed-only"])
def test_a_membership_the_registrar_ends_is_not_reopened_by_a_local_edit(
    open_project: OpenProject, fake: FakeOpenSpp, rpc: Rpc, own_parent: bool
) -> None:
    """Seen alike on a real Odoo 17 + OpenG2P and on the fake: a registrar ends Ben's membership (he left
    the household); the pull appended nothing, the log's group still listed him, and the next local edit
    of Ben reopened the membership, undoing the registrar. The pull now appends ``remove-member`` on the
    group, for a member whose ``parentGuid`` names it and for one the group lists alone. An admin's hard
    unlink of a membership is not read yet (the group's write_date moves, but no member record is
    pulled)."""
    field = open_project()
    _register_the_wanjirus(field, ben=None if own_parent else _listed_only(BEN, "Ben"))
    assert run_connector(field, "reg", retry=RETRY).ok
    household, person = (_partner(field, g) for g in (HH, BEN))
    (membership,) = rpc.ok(
        "g2p.group.membership", "search_read", [[["individual", "=", person]]], {"fields": ["start_date"]}
    )
    rpc.ok(
        "res.partner",
        "write",
        [
            [household],
            {"group_membership_ids": [[1, membership["id"], {"ended_date": membership["start_date"]}]]},
        ],
        user="registrar",
    )
    pulled = run_connector(field, "reg", retry=RETRY)
    assert pulled.ok, pulled.error
    group = field.eventlog.get_entity(HH)
    assert group is not None and BEN not in group.member_ids, "the registrar's end reaches the log"

    field.eventlog.append([_event(2, BEN, "update-individual", {"phone_number": "+254700000005"})])
    assert run_connector(field, "reg", retry=RETRY).ok
    assert _memberships(fake, person) == [(household, True)], "the edit left the membership ended"
    again = run_connector(field, "reg", retry=RETRY)
    assert again.ok and again.pull is not None and again.push is not None
    assert again.pull.counts.appended == 0 and again.push.counts.updated == 0, (again.pull, again.push)


# -- a member a group lists by its memberIds alone (no parentGuid of its own) ---------------------------
def _listed_only(guid: str, first: str) -> dict[str, Any]:
    """A member as DataCollect's create-group or add-member may carry it: no ``parentGuid``."""
    person = _person(guid, first, "3")
    del person["parentGuid"]
    return {"guid": guid, **person}


def test_a_member_a_group_lists_without_a_parent_guid_is_a_member_in_openspp(
    open_project: OpenProject, fake: FakeOpenSpp
) -> None:
    """A group's ``memberIds`` is a real membership in DataCollect, whether or not the person's own answers
    carry ``parentGuid``: a household made with ``create-group`` whose members have none reaches OpenSPP
    with both of them members, and a later edit of one person alone keeps the membership."""
    field = open_project()
    field.eventlog.append(
        [
            _event(
                1,
                HH,
                "create-group",
                {
                    "entityName": "household",
                    "household_name": "Wanjiru",
                    "members": [_listed_only(ANA, "Ana"), _listed_only(BEN, "Ben")],
                },
            )
        ]
    )
    first = run_connector(field, "reg", retry=RETRY)
    assert first.ok and first.push is not None, first.error
    assert first.push.counts.created == 3 and first.push.counts.parked == 0, first.push.counts
    household, ana, ben = (_partner(field, g) for g in (HH, ANA, BEN))
    assert _memberships(fake, ana) == [(household, False)]
    assert _memberships(fake, ben) == [(household, False)]
    assert field.state.dead_letters("reg") == []

    field.eventlog.append([_event(2, BEN, "update-individual", {"phone_number": "+254700000006"})])
    edited = run_connector(field, "reg", retry=RETRY)
    assert edited.ok and edited.push is not None and edited.push.counts.updated == 1, edited.push
    assert _phone(fake, ben) == "+254700000006"
    assert _memberships(fake, ben) == [(household, False)], "the edit kept the membership"
    again = run_connector(field, "reg", retry=RETRY)
    assert again.ok and again.pull is not None and again.push is not None
    assert again.pull.counts.appended == 0 and again.push.counts.updated == 0, (again.pull, again.push)


def test_an_add_member_of_a_person_without_a_parent_guid_makes_them_a_member_in_openspp(
    open_project: OpenProject, fake: FakeOpenSpp
) -> None:
    """The edit path: Ben is registered on his own (no household), then a later ``add-member`` on the
    group lists him. Nothing of Ben's answers changed, but the group's ``memberIds`` did: the push must
    send his membership."""
    field = open_project()
    field.eventlog.append(
        [
            _event(1, HH, "create-group", {"entityName": "household", "household_name": "Wanjiru"}),
            _event(
                2,
                BEN,
                "create-individual",
                {k: v for k, v in _listed_only(BEN, "Ben").items() if k != "guid"},
            ),
        ]
    )
    assert run_connector(field, "reg", retry=RETRY).ok
    household, ben = (_partner(field, g) for g in (HH, BEN))
    assert _memberships(fake, ben) == []

    field.eventlog.append([_event(3, HH, "add-member", {"members": [{"guid": BEN}]})])
    dry = run_connector(field, "reg", dry_run=True, retry=RETRY)
    joined = run_connector(field, "reg", retry=RETRY)
    assert joined.ok and joined.push is not None and dry.push is not None, joined.error
    assert joined.push.counts.updated == 1 and dry.push.counts.updated == 1, (dry.push, joined.push)
    assert _memberships(fake, ben) == [(household, False)], "the add-member reached OpenSPP"
    again = run_connector(field, "reg", retry=RETRY)
    assert again.ok and again.pull is not None and again.push is not None
    assert again.pull.counts.appended == 0 and again.push.counts.updated == 0, (again.pull, again.push)

    field.eventlog.append([_event(4, HH, "remove-member", {"memberId": BEN})])
    assert run_connector(field, "reg", retry=RETRY).ok
    assert _memberships(fake, ben) == [(household, True)], "and its remove-member ends it"


def test_a_person_two_groups_list_is_a_member_of_the_one_that_listed_them_last(
    open_project: OpenProject, fake: FakeOpenSpp
) -> None:
    """Ben, with no ``parentGuid``, is listed by the Wanjiru group, then also added to the Otieno group
    (a move whose ``remove-member`` from the first comes in a later sync). OpenSPP holds one household
    per person through dcsync: the group that listed him last is it, and the ``remove-member`` that
    follows leaves him there."""
    other = "5e7a0c11-0000-4000-8000-000000000009"
    field = open_project()
    field.eventlog.append(
        [
            _event(
                1,
                HH,
                "create-group",
                {
                    "entityName": "household",
                    "household_name": "Wanjiru",
                    "members": [_listed_only(BEN, "Ben")],
                },
            ),
            _event(2, other, "create-group", {"entityName": "household", "household_name": "Otieno"}),
        ]
    )
    assert run_connector(field, "reg", retry=RETRY).ok
    first, second, ben = (_partner(field, g) for g in (HH, other, BEN))
    field.eventlog.append([_event(3, other, "add-member", {"members": [{"guid": BEN}]})])
    both = run_connector(field, "reg", retry=RETRY)
    assert both.ok, both.error
    assert _memberships(fake, ben) == [(first, True), (second, False)], "the newest listing wins"
    assert field.state.dead_letters("reg") == []

    field.eventlog.append([_event(4, HH, "remove-member", {"memberId": BEN})])
    moved = run_connector(field, "reg", retry=RETRY)
    assert moved.ok, moved.error
    assert _memberships(fake, ben) == [(first, True), (second, False)], "still in the other"
    again = run_connector(field, "reg", retry=RETRY)
    assert again.ok and again.pull is not None and again.push is not None
    assert again.pull.counts.appended == 0 and again.push.counts.updated == 0, (again.pull, again.push)

"""Issue 5 end to end: the engine, the shipped mapping and the OpenSPP connector against the fake OpenSPP over
real loopback HTTP, through ``Project.open`` and ``run_connector`` as an operator runs them."""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from openspp_support import Rpc

from connector_core.entities import Entity
from connector_core.events import FormSubmission
from connector_core.project import Project
from connector_core.retry import RetryPolicy
from connector_core.state.base import Direction
from connector_core.sync.runner import run_connector
from connectors.openspp.fake import DATABASE, FakeOpenSpp
from connectors.openspp.sample import registry_log

MAPPING = Path(__file__).resolve().parents[2] / "mappings" / "openspp.yaml"
RETRY = RetryPolicy(max_attempts=6, initial_delay=0.01, max_delay=0.05, max_elapsed=30)
HEAD, SPOUSE, CHILD = 3, 5, 8  # the fake's seeded membership kind ids (tests may know them; dcsync may not)
T0 = datetime(2030, 6, 1, 12, 0, 0, 250000)

OpenProject = Callable[..., Project]


@pytest.fixture
def open_project(tmp_path: Path, url: str) -> Iterator[OpenProject]:
    """A project in its own directory (own event log and state) aimed at the served fake."""
    opened: list[Project] = []

    def make(name: str = "field", *, batch_size: int = 100, page_size: int = 200, **settings: Any) -> Project:
        directory = tmp_path / name
        directory.mkdir()
        config = {
            "connectors": {
                "reg": {
                    "type": "openspp",
                    "mapping": str(MAPPING),
                    "batch_size": batch_size,
                    "page_size": page_size,
                    "settings": {
                        "url": url,
                        "database": DATABASE,
                        "username": "registrar",
                        "password": "registrar",
                        "timeout": 5.0,
                        "lag_seconds": 60.0,
                        **settings,
                    },
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


# -- helpers ------------------------------------------------------------------------------------------
def rows(fake: FakeOpenSpp, model: str) -> list[dict[str, Any]]:
    return fake.state(model)[model]


def partner_ids(fake: FakeOpenSpp) -> dict[str, int]:
    """Entity guid -> partner id, from the xml-ids dcsync wrote (``dcsync.<guid>``)."""
    return {r["name"]: r["res_id"] for r in rows(fake, "ir.model.data") if r["module"] == "dcsync"}


def entities(project: Project) -> dict[str, Entity]:
    return {e.guid: e for e in project.eventlog.iter_entities()}


def update(entity: Entity, guid: str, **changes: Any) -> FormSubmission:
    """A mobile edit: the whole form is sent again with the changed answers."""
    return FormSubmission(
        guid=guid,
        entity_guid=entity.guid,
        type="update-individual",
        data={**entity.data, **changes},
        timestamp="2025-06-01T10:00:00.000Z",
        user_id="admin",
    )


def delete(guid: str, event_guid: str) -> FormSubmission:
    return FormSubmission(
        guid=event_guid,
        entity_guid=guid,
        type="delete-entity",
        data={"reason": "left the programme"},
        timestamp="2025-06-02T10:00:00.000Z",
        user_id="admin",
    )


def subset_of(pulled: Any, original: Any) -> bool:
    """Pulled data holds only what the original holds: equal scalars, list items with a subset of keys."""
    if isinstance(pulled, dict):
        return isinstance(original, dict) and all(
            k in original and subset_of(v, original[k]) for k, v in pulled.items()
        )
    if isinstance(pulled, list):
        return (
            isinstance(original, list)
            and len(pulled) == len(original)
            and all(subset_of(p, o) for p, o in zip(pulled, original, strict=True))
        )
    return bool(pulled == original)


def nothing_moves(project: Project) -> None:
    """A run after a sync: the pull appends nothing and the push sends nothing."""
    report = run_connector(project, "reg", retry=RETRY)
    assert report.ok, report.error
    assert report.pull is not None and report.push is not None
    assert report.pull.counts.appended == 0, report.pull.counts
    assert report.pull.counts.dead_lettered == report.pull.counts.conflicts == 0
    sent = report.push.counts
    assert sent.created + sent.updated + sent.deleted + sent.dead_lettered == 0, sent


def assert_mirrors(fake: FakeOpenSpp, project: Project) -> None:
    """OpenSPP holds every live entity exactly once, as the mapping says, with its household and IDs."""
    live = entities(project)
    ids = partner_ids(fake)
    partners = {p["id"]: p for p in rows(fake, "res.partner")}
    assert len(set(ids.values())) == len(ids), "one partner per guid"
    for guid, entity in live.items():
        partner = partners[ids[guid]]
        assert partner["active"], guid
        data = entity.data
        if data["entityName"] == "household":
            assert (partner["is_group"], partner["kind"], partner["name"]) == (
                True,
                3,
                data["household_name"],
            )
            continue
        assert not partner["is_group"]
        assert (partner["given_name"], partner["family_name"]) == (data["first_name"], data["last_name"])
        assert partner["name"] == f"{data['last_name']}, {data['first_name']}".upper()
        assert partner["birthdate"] == data["date_of_birth"][:10]
        assert partner["gender"] == data["gender"].capitalize()
        assert partner["phone"] == data["phone_number"]
    memberships = [m for m in rows(fake, "g2p.group.membership") if not m["ended_date"]]
    current = Counter(m["individual"] for m in memberships)
    kinds = {"1": [HEAD], "2": [SPOUSE], "3": [CHILD], "4": [12]}
    by_person = {m["individual"]: m for m in memberships}
    for guid, entity in live.items():
        if entity.data["entityName"] != "individual":
            continue
        pid = ids[guid]
        assert current[pid] == 1, f"{guid} is in {current[pid]} households"
        assert by_person[pid]["group"] == ids[entity.data["parentGuid"]]
        assert by_person[pid]["kind"] == kinds[entity.data["relationship"]]
    heads = Counter(m["group"] for m in memberships if m["kind"] == [HEAD])
    assert max(heads.values()) == 1, "never two Heads in one household"
    reg_ids = {(r["partner_id"], r["id_type"], r["value"]) for r in rows(fake, "g2p.reg.id")}
    banks = {(b["partner_id"], b["acc_number"]) for b in rows(fake, "res.partner.bank")}
    types = {"national_id": 4, "passport": 9}
    for guid, entity in live.items():
        for doc in entity.data.get("document_ids") or []:
            assert (ids[guid], types[doc["id_type"]], doc["id_number"]) in reg_ids
        for account in entity.data.get("bank_details") or []:
            assert (ids[guid], account["account_number"]) in banks


def assert_clean_protocol(fake: FakeOpenSpp) -> None:
    """Every call put its keyword arguments in ``args`` (Odoo ignores ``params.kwargs``), named its fields
    and its order, and resolved ids by name before using them."""
    assert fake.flags == [], fake.flags[:5]
    assert fake.requests, "the fake saw the traffic"
    assert all(r["params_kwargs"] is None and r["ignored_params"] == [] for r in fake.requests)


# -- push, re-run, pull into an empty log --------------------------------------------------------------
def test_two_hundred_households_go_to_openspp_and_come_back_the_same(
    open_project: OpenProject, fake: FakeOpenSpp
) -> None:
    field = open_project("field")
    field.eventlog.append(registry_log(households=200, members=5))
    local = entities(field)
    assert len(local) == 1200

    first = run_connector(field, "reg", retry=RETRY)
    assert first.ok, first.error
    assert first.push is not None and first.push.counts.created == 1200
    assert first.push.counts.dead_lettered == 0
    assert len(rows(fake, "res.partner")) == 1200 and set(partner_ids(fake)) == set(local)
    assert len(rows(fake, "g2p.group.membership")) == 1000
    assert len(rows(fake, "g2p.reg.id")) == sum(len(e.data.get("document_ids") or []) for e in local.values())
    assert len(rows(fake, "res.partner.bank")) == sum(
        len(e.data.get("bank_details") or []) for e in local.values()
    )
    assert_mirrors(fake, field)
    assert_clean_protocol(fake)

    # the pull of what was just pushed is no change at all, and nothing goes out again
    nothing_moves(field)

    # a second site with an empty log pulls the same entities: same guids, households, answers
    office = open_project("office")
    pulled = run_connector(office, "reg", push=False, retry=RETRY)
    assert pulled.ok, pulled.error
    assert pulled.pull is not None and pulled.pull.counts.created == 1200
    assert pulled.pull.counts.dead_lettered == 0
    copies = entities(office)
    assert set(copies) == set(local)
    carried = {"household_name", "first_name", "last_name", "date_of_birth", "gender", "phone_number"}
    for guid, copy in copies.items():
        original = local[guid]
        assert (copy.entity_name, copy.parent_guid) == (original.entity_name, original.parent_guid)
        assert subset_of(copy.data, original.data), (copy.data, original.data)
        assert carried & set(original.data) <= set(copy.data)
        assert copy.data.get("document_ids") == [
            {"id_type": d["id_type"], "id_number": d["id_number"], **_expiry(d)}
            for d in original.data.get("document_ids") or []
        ] or not original.data.get("document_ids")
    nothing_moves(office)
    assert_clean_protocol(fake)


def _expiry(document: dict[str, Any]) -> dict[str, Any]:
    return {"id_expiry_date": document["id_expiry_date"]} if "id_expiry_date" in document else {}


# -- changes on both sides, then deletes ---------------------------------------------------------------
def test_changes_on_each_side_and_deletes_sync_both_ways(
    open_project: OpenProject, fake: FakeOpenSpp, rpc: Rpc
) -> None:
    field = open_project("field")
    field.eventlog.append(registry_log(households=200, members=5))
    assert run_connector(field, "reg", retry=RETRY).ok
    local = entities(field)
    ids = partner_ids(fake)
    homes = [e for e in local.values() if e.entity_name == "household"]
    members: dict[str, list[Entity]] = defaultdict(list)
    for e in local.values():
        if e.entity_name == "individual":
            members[e.data["parentGuid"]].append(e)
    people = [p for h in homes for p in members[h.guid]]

    # local edits, as the phone sends them (whole forms)
    head, spouse = (
        next(p for p in members[homes[3].guid] if p.data["relationship"] == r) for r in ("1", "2")
    )
    mover = next(p for p in members[homes[4].guid] if p.data["relationship"] != "1")
    local_edits = [
        *(update(p, f"phone-{i}", phone_number=f"+6390000000{i}") for i, p in enumerate(people[:5])),
        update(people[5], "rename", last_name="Renamed"),
        update(head, "step-down", relationship="2"),
        update(spouse, "step-up", relationship="1"),
        update(mover, "move", parentGuid=homes[5].guid, relationship="3"),
        update(
            people[7],
            "passport",
            document_ids=[
                *people[7].data["document_ids"],
                {
                    "id_type": "passport",
                    "id_number": "K7654321",
                    "id_issuance_date": "2024-01-01T00:00:00.000Z",
                },
            ],
        ),
        FormSubmission(
            guid="hh-rename",
            entity_guid=homes[1].guid,
            type="update-individual",
            data={**homes[1].data, "household_name": "Riverside compound", "name": "Riverside compound"},
            timestamp="2025-06-01T10:00:00.000Z",
            user_id="admin",
        ),
    ]
    field.eventlog.append(local_edits)

    # edits in OpenSPP, as a registrar's form saves them (the display name with the parts)
    remote_people = [people[1], *people[40:43]]  # people[1] also changed its phone locally
    for p in remote_people:
        given = f"{p.data['first_name']}-Remote"
        rpc.ok(
            "res.partner",
            "write",
            [[ids[p.guid]], {"given_name": given, "name": f"{p.data['last_name']}, {given}".upper()}],
        )
    rpc.ok("res.partner", "write", [[ids[homes[2].guid]], {"name": "Hilltop household"}])

    report = run_connector(field, "reg", retry=RETRY)
    assert report.ok, report.error
    assert report.pull is not None and report.push is not None
    assert report.pull.counts.appended == len(remote_people) + 1, "one event per remotely changed record"
    assert report.pull.counts.conflicts == 1, "people[1] changed on both sides (disjoint fields)"
    assert report.push.counts.updated == 11 and report.push.counts.created == 0
    assert report.push.counts.dead_lettered == 0

    now = entities(field)
    for p in remote_people:
        assert now[p.guid].data["first_name"] == f"{p.data['first_name']}-Remote"
        assert now[p.guid].data["name"] == f"{p.data['first_name']}-Remote {p.data['last_name']}"
    assert now[people[1].guid].data["phone_number"] == "+63900000001", "the local change survives"
    assert now[homes[2].guid].data["household_name"] == "Hilltop household"
    assert_mirrors(fake, field)  # OpenSPP now holds every local change (and kept the remote ones)
    partners = {p["id"]: p for p in rows(fake, "res.partner")}
    assert partners[ids[people[5].guid]]["name"].startswith("RENAMED, ")
    assert partners[ids[homes[1].guid]]["name"] == "Riverside compound"
    moved = [m for m in rows(fake, "g2p.group.membership") if m["individual"] == ids[mover.guid]]
    assert sorted((m["group"], bool(m["ended_date"])) for m in moved) == sorted(
        [(ids[homes[4].guid], True), (ids[homes[5].guid], False)]
    ), "the old membership is ended, not deleted"
    nothing_moves(field)

    # deletes: a whole household and one person locally; two people archived in OpenSPP
    gone_home = homes[10]
    local_deletes = [*members[gone_home.guid], gone_home, members[homes[11].guid][2]]
    field.eventlog.append([delete(e.guid, f"del-{i}") for i, e in enumerate(local_deletes)])
    archived = [members[homes[12].guid][1], members[homes[13].guid][3]]
    rpc.ok("res.partner", "write", [[ids[p.guid] for p in archived], {"active": False}])

    report = run_connector(field, "reg", retry=RETRY)
    assert report.ok, report.error
    assert report.pull is not None and report.push is not None
    assert report.pull.counts.deleted == 2 and report.push.counts.deleted == len(local_deletes)
    remaining = entities(field)
    assert not {p.guid for p in archived} & set(remaining), "archived in OpenSPP: deleted here"
    partners = {p["id"]: p for p in rows(fake, "res.partner")}
    assert all(not partners[ids[e.guid]]["active"] for e in local_deletes), "archived, never unlinked"
    ended = {m["individual"] for m in rows(fake, "g2p.group.membership") if m["ended_date"]}
    assert {ids[e.guid] for e in local_deletes if e.entity_name == "individual"} <= ended
    for e in [*local_deletes, *archived]:
        assert field.state.get_link("reg", e.guid) is None
    assert_mirrors(fake, field)
    nothing_moves(field)
    assert_clean_protocol(fake)


# -- faults --------------------------------------------------------------------------------------------
TRANSIENT_FAULTS = [
    {"kind": "commit_then_fail", "then": "502", "probability": 0.10},
    {"kind": "commit_then_fail", "then": "reset", "probability": 0.06},
    {"kind": "serialization_failure", "probability": 0.08},
    {"kind": "http_status", "status": 503, "probability": 0.05},
    {"kind": "reset_connection", "probability": 0.04},
]  # together about 30% of calls (the first rule that fires wins)


def test_exactly_once_through_commit_then_fail_and_thirty_percent_transient_faults(
    open_project: OpenProject, fake: FakeOpenSpp
) -> None:
    field = open_project("field", batch_size=50, timeout=2.0)
    events = list(registry_log(households=60, members=5))
    broken = next(
        e for e in events if e.data.get("entityName") == "individual" and e.data["relationship"] == "3"
    )
    broken.data["date_of_birth"] = "2999-01-01T00:00:00.000Z"  # Odoo refuses a birth after registration
    field.eventlog.append(events)
    fake.faults.reseed(5)
    for spec in TRANSIENT_FAULTS:
        fake.faults.add({**spec, "service": "object"})
    policy = RetryPolicy(max_attempts=40, initial_delay=0.005, max_delay=0.02, max_elapsed=120)

    report = run_connector(field, "reg", pull=False, retry=policy)
    assert report.ok, report.error
    fired = sum(f["fired"] for f in fake.faults.describe())
    fake.faults.clear()
    assert report.push is not None and fired > 50 and report.push.counts.retries > 10
    (letter,) = field.state.dead_letters("reg")
    assert letter.ref == broken.entity_guid
    assert letter.reason == "Registration date must be later than the birth date."
    # a create whose answer was lost is found by its xml-id and counted as an update of that record
    assert report.push.counts.created + report.push.counts.updated == 359
    assert report.push.counts.dead_lettered == 1

    ids = partner_ids(fake)
    live = entities(field)
    assert set(ids) == set(live) - {broken.entity_guid}
    partners = rows(fake, "res.partner")
    assert len(partners) == 359, "every registrant exactly once"
    memberships = rows(fake, "g2p.group.membership")
    assert len(memberships) == 299 and len({m["individual"] for m in memberships}) == 299
    reg_ids = [(r["partner_id"], r["id_type"]) for r in rows(fake, "g2p.reg.id")]
    assert len(reg_ids) == len(set(reg_ids))
    banks = [(b["partner_id"], b["acc_number"]) for b in rows(fake, "res.partner.bank")]
    assert len(banks) == len(set(banks))
    assert field.state.get_checkpoint("reg", Direction.PUSH) == field.eventlog.head()
    assert field.state.intents("reg") == set()
    del live[broken.entity_guid]
    assert_mirrors_subset(fake, live)
    again = run_connector(field, "reg", pull=False, retry=RETRY)
    assert again.push is not None and again.push.counts.created + again.push.counts.updated == 0


def assert_mirrors_subset(fake: FakeOpenSpp, live: dict[str, Entity]) -> None:
    ids = partner_ids(fake)
    reg_ids = {(r["partner_id"], r["value"]) for r in rows(fake, "g2p.reg.id")}
    banks = {(b["partner_id"], b["acc_number"]) for b in rows(fake, "res.partner.bank")}
    for guid, entity in live.items():
        assert all((ids[guid], d["id_number"]) in reg_ids for d in entity.data.get("document_ids") or [])
        assert all((ids[guid], a["account_number"]) in banks for a in entity.data.get("bank_details") or [])


# -- pull: late commits and same-second ties ------------------------------------------------------------
def _people(rpc: Rpc, names: list[str], **extra: Any) -> list[int]:
    vals = [
        {
            "is_registrant": True,
            "given_name": n,
            "family_name": "Remote",
            "name": f"REMOTE, {n.upper()}",
            **extra,
        }
        for n in names
    ]
    return rpc.ok("res.partner", "create", [vals])


def test_pull_misses_nothing_under_delay_commit_and_same_second_ties(
    open_project: OpenProject, fake: FakeOpenSpp, rpc: Rpc, url: str
) -> None:
    fake.clock.freeze(T0)
    household = rpc.ok(
        "res.partner", "create", [{"is_registrant": True, "is_group": True, "name": "Remote HH", "kind": 3}]
    )
    tied = _people(rpc, [f"Tie{i}" for i in range(25)])  # one call: one microsecond stamp for all 25
    rpc.ok(
        "res.partner",
        "write",
        [[household], {"group_membership_ids": [[0, 0, {"individual": pid}] for pid in tied[:6]]}],
    )  # the household's write_date now trails its members'
    fake.clock.advance(0.3)
    same_second = _people(rpc, [f"Same{i}" for i in range(4)])
    fake.faults.add({"kind": "delay_commit", "ms": 700, "model": "res.partner", "method": "create"})
    fake.clock.advance(0.5)
    late: list[int] = []
    writer = threading.Thread(target=lambda: late.extend(_people(Rpc(url), ["Late0", "Late1", "Late2"])))
    writer.start()
    deadline = time.monotonic() + 5
    while not fake.store.pending and time.monotonic() < deadline:
        time.sleep(0.005)
    assert fake.store.pending, "the late transaction is stamped but not visible"
    fake.clock.advance(2)
    after = _people(rpc, ["After0", "After1"])  # stamped after the late ones, visible first
    fake.clock.advance(2)

    office = open_project("office", page_size=7)
    first = run_connector(office, "reg", push=False, retry=RETRY)
    assert first.ok, first.error
    visible = {household, *tied, *same_second, *after}
    assert first.pull is not None and first.pull.counts.created == len(visible)
    assert first.pull.counts.dead_lettered == 0, "members never arrive before their household"

    writer.join(5)
    assert len(late) == 3
    fake.clock.advance(5)
    second = run_connector(office, "reg", push=False, retry=RETRY)
    assert second.ok, second.error
    assert second.pull is not None and second.pull.counts.created == 3, (
        "the late commit is read behind the cursor"
    )

    pulled = entities(office)
    assert len(pulled) == len(visible) + 3
    names = Counter(e.data.get("first_name") for e in pulled.values() if e.entity_name == "individual")
    assert all(n == 1 for n in names.values()) and len(names) == 25 + 4 + 3 + 2
    home = next(e for e in pulled.values() if e.entity_name == "household")
    in_home = [e for e in pulled.values() if e.data.get("parentGuid") == home.guid]
    assert sorted(e.data["first_name"] for e in in_home) == sorted(f"Tie{i}" for i in range(6))
    third = run_connector(office, "reg", push=False, retry=RETRY)
    assert third.pull is not None and third.pull.counts.appended == 0

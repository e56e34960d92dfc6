"""Pushing households, individuals, memberships, IDs and bank accounts to the fake OpenSPP."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest

from connector_core.connector import Operation, PushRecord, PushResult, TransientError
from connectors.openspp.connector import OpenSppConnector, ref_from_xmlid_name, xmlid_name
from connectors.openspp.fake import FakeOpenSpp

Factory = Callable[..., OpenSppConnector]


def household(name: str, **payload: Any) -> PushRecord:
    return PushRecord(str(uuid.uuid4()), Operation.CREATE, "household", {"name": name, **payload})


def person(parent: PushRecord | None, given: str, kind: str | None = "Child", **payload: Any) -> PushRecord:
    values = {"given_name": given, "family_name": "Diallo", "_membership_kind": kind, **payload}
    return PushRecord(
        str(uuid.uuid4()), Operation.CREATE, "individual", values, parent_ref=parent.ref if parent else None
    )


def ok(results: list[PushResult]) -> dict[str, str]:
    failed = [r for r in results if not r.ok]
    assert not failed, failed
    return {r.ref: r.external_id for r in results if r.external_id}


def rows(fake: FakeOpenSpp, model: str) -> list[dict[str, Any]]:
    return fake.state(model)[model]


def calls(fake: FakeOpenSpp, model: str, method: str) -> int:
    return sum(1 for r in fake.requests if r["model"] == model and r["obj_method"] == method)


def test_households_and_members_are_created_in_batches(make_connector: Factory, fake: FakeOpenSpp) -> None:
    connector = make_connector(batch_size=50)
    homes = [household(f"H{i}", area_id="P01 - North") for i in range(10)]
    home_ids = ok(connector.push(homes))
    members = []
    for h in homes:
        members.append(
            person(
                h,
                "Head",
                "Head",
                gender="Female",
                ids=[{"id_type": "National ID", "value": f"N-{h.ref[:8]}"}],
            )
        )
        members += [
            person(
                h, f"Kid{j}", "Child", bank_accounts=[{"acc_number": f"AC{h.ref[:6]}{j}", "bank": "BNORXX22"}]
            )
            for j in range(2)
        ]
    fake.requests.clear()
    member_ids = ok(connector.push(members))
    assert len(member_ids) == 30
    assert calls(fake, "res.partner", "load") == 1, "30 individuals in one load call"
    assert calls(fake, "g2p.reg.id", "create") == 1 and calls(fake, "res.partner.bank", "create") == 1
    assert calls(fake, "g2p.group.membership", "create") == 1, "30 memberships of 10 Head-less households"
    assert calls(fake, "res.partner", "write") == 0
    partners = {r["id"]: r for r in rows(fake, "res.partner")}
    for h in homes:
        group = partners[int(home_ids[h.ref])]
        assert group["is_group"] and group["is_registrant"] and group["kind"] == 3 and group["area_id"] == 7
    memberships = rows(fake, "g2p.group.membership")
    assert len(memberships) == 30
    heads = [m for m in memberships if m["kind"] == [3]]
    assert len(heads) == 10 and {m["group"] for m in heads} == {int(v) for v in home_ids.values()}
    assert {tuple(m["kind"]) for m in memberships} == {(3,), (8,)}, (
        "kinds resolved by name, not magic numbers"
    )
    ids = rows(fake, "g2p.reg.id")
    assert len(ids) == 10 and {r["id_type"] for r in ids} == {4}
    banks = rows(fake, "res.partner.bank")
    assert len(banks) == 20 and {b["bank_id"] for b in banks} == {4}
    a_person = partners[int(member_ids[members[0].ref])]
    assert a_person["name"] == "DIALLO, HEAD" and a_person["gender"] == "Female" and not a_person["is_group"]
    assert not [f for f in fake.flags if f["flag"] != "search_without_order"], fake.flags


def test_individuals_may_arrive_with_their_household_in_one_batch(
    make_connector: Factory, fake: FakeOpenSpp
) -> None:
    home = household("Together")
    members = [person(home, "A", "Head"), person(home, "B", "Spouse")]
    results = make_connector().push([members[0], home, members[1]])
    ids = ok(results)
    assert [r.ref for r in results] == [members[0].ref, home.ref, members[1].ref]
    assert {m["group"] for m in rows(fake, "g2p.group.membership")} == {int(ids[home.ref])}


def test_pushing_the_same_creates_again_changes_nothing(make_connector: Factory, fake: FakeOpenSpp) -> None:
    connector = make_connector()
    home = household("Once")
    members = [
        person(home, "A", "Head", ids=[{"id_type": "Passport", "value": "A1234567"}]),
        person(home, "B"),
    ]
    first = ok(connector.push([home, *members]))
    again = ok(connector.push([home, *members]))
    assert first == again
    assert len(rows(fake, "res.partner")) == 3
    assert len(rows(fake, "g2p.group.membership")) == 2 and len(rows(fake, "g2p.reg.id")) == 1
    assert {r["name"] for r in rows(fake, "ir.model.data") if r["module"] == "dcsync"} == {
        xmlid_name(r.ref) for r in (home, *members)
    }


def test_xmlid_names_round_trip() -> None:
    for ref in ("4b20c7c2-8a5e-4d2f-9a77-0e6f1e7a3b11", "with space", "dots.in.it", "hex_looks_encoded", "é"):
        name = xmlid_name(ref)
        assert " " not in name and "." not in name
        assert ref_from_xmlid_name(name) == ref


def test_commit_then_fail_is_recovered_by_reference(make_connector: Factory, fake: FakeOpenSpp) -> None:
    connector = make_connector()
    homes = [household(f"H{i}") for i in range(3)]
    fake.faults.add({"kind": "commit_then_fail", "then": "502", "model": "res.partner", "method": "load"})
    first = connector.push(homes)
    assert all(not r.ok and r.transient for r in first)
    assert len(rows(fake, "res.partner")) == 3, "the call was applied although the client saw a 502"
    found = connector.lookup([h.ref for h in homes] + ["never-pushed"])
    assert set(found) == {h.ref for h in homes}
    retried = ok(
        connector.push(
            [
                PushRecord(h.ref, Operation.UPDATE, "household", h.payload, external_id=found[h.ref])
                for h in homes
            ]
        )
    )
    assert retried == found
    assert ok(connector.push(homes)) == found, "re-sending the creates is just as safe"
    assert len(rows(fake, "res.partner")) == 3


def test_reg_id_reference_strategy(make_connector: Factory, fake: FakeOpenSpp) -> None:
    connector = make_connector(reference="reg_id", reference_id_type="DataCollect GUID")
    home = household("ByRegId")
    members = [person(home, "A", "Head", ids=[{"id_type": "National ID", "value": "N-1"}]), person(home, "B")]
    fake.faults.add({"kind": "commit_then_fail", "then": "reset", "model": "res.partner", "method": "create"})
    assert not connector.push([home])[0].ok
    ids = ok(connector.push([home, *members]))
    assert len([p for p in rows(fake, "res.partner") if p["is_group"]]) == 1, (
        "looked up before creating again"
    )
    guid_ids = [r for r in rows(fake, "g2p.reg.id") if r["id_type"] == 13]
    assert {r["value"] for r in guid_ids} == {home.ref, *(m.ref for m in members)}
    assert connector.lookup([members[1].ref]) == {members[1].ref: ids[members[1].ref]}
    assert not any(r["module"] == "dcsync" for r in rows(fake, "ir.model.data"))


def test_a_validation_error_rejects_only_its_record(make_connector: Factory, fake: FakeOpenSpp) -> None:
    connector = make_connector()
    homes = [household(f"H{i}") for i in range(8)]
    homes[5] = household("Broken")
    fake.faults.add(
        {
            "kind": "validation_error",
            "message": "Household name is not allowed",
            "match": [["name", "=", "Broken"]],
            "probability": 1.0,
        }
    )
    results = connector.push(homes)
    bad = [r for r in results if not r.ok]
    assert [r.ref for r in bad] == [homes[5].ref]
    assert bad[0].error == "Household name is not allowed" and not bad[0].transient
    assert len(rows(fake, "res.partner")) == 7


def test_odoo_row_errors_from_load_reject_the_row(make_connector: Factory, fake: FakeOpenSpp) -> None:
    home = household("H")
    members = [
        person(home, "A", gender="Female"),
        person(home, "B", gender="F"),
        person(home, "C", gender="Male"),
    ]
    results = make_connector().push([home, *members])
    assert [r.ok for r in results] == [True, True, False, True]
    assert results[2].error == "Value 'F' not found in selection field 'Gender'"
    assert len(rows(fake, "g2p.group.membership")) == 2


def test_local_rejections_carry_odoos_wording(make_connector: Factory, fake: FakeOpenSpp) -> None:
    home = household("H")
    bad = [
        person(home, "A", nickname="x"),
        person(home, "B", kind="Cousin"),
        person(home, "D", area_id="Atlantis"),
        PushRecord(str(uuid.uuid4()), Operation.CREATE, "pet", {"name": "Rex"}),
    ]
    results = make_connector().push([home, *bad])
    assert results[0].ok
    assert [r.error for r in results[1:]] == [
        "Invalid field 'nickname' on model 'res.partner'",
        "unknown membership kind 'Cousin' (known: Child, Head, Other, Spouse)",
        "no spp.area record is named 'Atlantis' (field area_id)",
        "entity 'pet' is neither 'household' nor 'individual'",
    ]


def test_transient_faults_mark_records_for_retry(make_connector: Factory, fake: FakeOpenSpp) -> None:
    connector = make_connector()
    fake.faults.add({"kind": "serialization_failure", "model": "res.partner", "method": "load"})
    results = connector.push([household("H1"), household("H2")])
    assert all(
        r.transient and r.error == "could not serialize access due to concurrent update" for r in results
    )
    assert rows(fake, "res.partner") == []


def test_updates_write_only_changed_fields(make_connector: Factory, fake: FakeOpenSpp) -> None:
    connector = make_connector()
    home = household("H")
    member = person(home, "A", "Head", phone="111", ids=[{"id_type": "National ID", "value": "N-1"}])
    ids = ok(connector.push([home, member]))
    fake.requests.clear()
    update = PushRecord(
        member.ref,
        Operation.UPDATE,
        "individual",
        {**member.payload, "phone": "222", "ids": [{"id_type": "National ID", "value": "N-2"}]},
        external_id=ids[member.ref],
        parent_external_id=ids[home.ref],
    )
    ok(connector.push([update]))
    writes = [r for r in fake.requests if r["obj_method"] == "write"]
    assert [(w["model"], w["args"][5][1]) for w in writes] == [
        ("res.partner", {"phone": "222"}),
        ("g2p.reg.id", {"value": "N-2"}),
    ]
    fake.requests.clear()
    ok(connector.push([update]))
    assert not [r for r in fake.requests if r["obj_method"] in ("write", "create", "load")], "nothing changed"


def test_head_swap_and_moving_house(make_connector: Factory, fake: FakeOpenSpp) -> None:
    connector = make_connector()
    h1, h2 = household("H1"), household("H2")
    a, b = person(h1, "A", "Head"), person(h1, "B", "Spouse")
    ids = ok(connector.push([h1, h2, a, b]))

    def update(rec: PushRecord, home: PushRecord, kind: str) -> PushRecord:
        return PushRecord(
            rec.ref,
            Operation.UPDATE,
            "individual",
            {**rec.payload, "_membership_kind": kind},
            external_id=ids[rec.ref],
            parent_external_id=ids[home.ref],
        )

    ok(connector.push([update(a, h1, "Spouse"), update(b, h1, "Head")]))
    by_person = {m["individual"]: m for m in rows(fake, "g2p.group.membership")}
    assert by_person[int(ids[a.ref])]["kind"] == [5] and by_person[int(ids[b.ref])]["kind"] == [3]
    ok(connector.push([update(b, h2, "Head")]))
    memberships = [m for m in rows(fake, "g2p.group.membership") if m["individual"] == int(ids[b.ref])]
    old = next(m for m in memberships if m["group"] == int(ids[h1.ref]))
    new = next(m for m in memberships if m["group"] == int(ids[h2.ref]))
    assert old["ended_date"] and old["kind"] == [], "ending a Head membership frees the Head slot"
    assert new["kind"] == [3] and not new["ended_date"]


def test_a_group_with_two_heads_rejects_the_write_with_odoos_message(
    make_connector: Factory, fake: FakeOpenSpp, rpc: Any
) -> None:
    connector = make_connector()
    home = household("H")
    a = person(home, "A", "Head")
    ids = ok(connector.push([home, a]))
    intruder = rpc.ok("res.partner", "create", [{"is_registrant": True, "name": "Intruder"}])
    rpc.ok(
        "g2p.group.membership",
        "create",
        [{"group": int(ids[home.ref]), "individual": intruder, "kind": [[6, 0, [3]]]}],
    )
    rename = PushRecord(
        home.ref, Operation.UPDATE, "household", {"name": "Renamed"}, external_id=ids[home.ref]
    )
    result = connector.push([rename])[0]
    assert not result.ok and not result.transient and result.error == "Only one Head is allowed per group"


def test_deletes_archive_and_end_memberships(make_connector: Factory, fake: FakeOpenSpp) -> None:
    connector = make_connector()
    home = household("H")
    a, b = person(home, "A", "Head"), person(home, "B")
    ids = ok(connector.push([home, a, b]))
    ok(connector.push([PushRecord(b.ref, Operation.DELETE, "individual", {}, external_id=ids[b.ref])]))
    partners = {p["id"]: p for p in rows(fake, "res.partner")}
    assert partners[int(ids[b.ref])]["active"] is False
    membership = next(m for m in rows(fake, "g2p.group.membership") if m["individual"] == int(ids[b.ref]))
    assert membership["ended_date"]
    ok(connector.push([PushRecord(home.ref, Operation.DELETE, "household", {})]))
    assert {p["id"]: p for p in rows(fake, "res.partner")}[int(ids[home.ref])]["active"] is False
    gone = connector.push([PushRecord("never-existed", Operation.DELETE, "individual", {})])
    assert gone[0].ok and gone[0].external_id is None
    assert not [r for r in fake.requests if r["obj_method"] == "unlink"]


def test_individual_without_household_parent_gets_a_transient_rejection(make_connector: Factory) -> None:
    orphan = PushRecord(
        str(uuid.uuid4()), Operation.CREATE, "individual", {"given_name": "A"}, parent_ref="not-there"
    )
    result = make_connector().push([orphan])[0]
    assert result.transient and "not in OpenSPP yet" in (result.error or "")


def test_never_two_writers_on_one_household(make_connector: Factory, fake: FakeOpenSpp) -> None:
    connector = make_connector(in_flight=4, batch_size=4)
    homes = [household(f"H{i}") for i in range(6)]
    ids = ok(connector.push(homes))
    members = [person(h, f"P{j}", "Head" if j == 0 else "Child") for h in homes for j in range(3)]
    fake.faults.add({"kind": "slow", "ms": 15, "service": "object", "probability": 1.0})
    ids.update(ok(connector.push(members)))
    updates = [
        PushRecord(
            m.ref,
            Operation.UPDATE,
            "individual",
            {**m.payload, "phone": "9"},
            external_id=ids[m.ref],
            parent_ref=m.parent_ref,
        )
        for m in members
    ]
    ok(connector.push(updates))
    assert fake.stats()["max_writers_on_one_group"] == 1
    assert len(rows(fake, "g2p.group.membership")) == 18


def test_the_writer_measure_sees_concurrent_writers(url: str, fake: FakeOpenSpp, rpc: Any) -> None:
    import threading

    from openspp_support import Rpc

    group = rpc.ok("res.partner", "create", [{"is_registrant": True, "is_group": True, "name": "G"}])
    fake.faults.add({"kind": "slow", "ms": 200, "method": "write", "probability": 1.0})
    threads = [
        threading.Thread(target=lambda n=n: Rpc(url).ok("res.partner", "write", [[group], {"name": f"G{n}"}]))
        for n in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert fake.stats()["max_writers_on_one_group"] == 2


def test_registrar_group_is_enforced(make_connector: Factory) -> None:
    assert make_connector(registrar_group="g2p_registry_base.group_g2p_registrar").check().ok
    denied = make_connector(registrar_group="g2p_registry_base.group_g2p_admin")
    result = denied.check()
    assert not result.ok and "Insufficient permissions" in result.message
    with pytest.raises(Exception, match="Insufficient permissions") as refused:
        denied.push([household("H")])
    assert getattr(refused.value, "systemic", False), "not any record's fault: the run stops"


def test_check_reports_bad_credentials_without_the_secret(make_connector: Factory) -> None:
    result = make_connector(password="not-the-password").check()
    assert (
        not result.ok and "refused the login" in result.message and "not-the-password" not in result.message
    )
    assert make_connector(api_key="registrar-api-key-0001").check().ok


def test_exactly_once_under_commit_then_fail_and_transient_faults(
    make_connector: Factory, fake: FakeOpenSpp
) -> None:
    """What the engine does (retry transient records, looking them up first) converges to one copy each."""
    connector = make_connector(timeout=2.0)
    homes = [household(f"H{i}") for i in range(20)]
    members = [
        person(
            h,
            f"P{j}",
            "Head" if j == 0 else "Child",
            ids=[{"id_type": "National ID", "value": f"{h.ref}-{j}"}],
        )
        for h in homes
        for j in range(4)
    ]
    fake.faults.reseed(7)
    fake.faults.add({"kind": "commit_then_fail", "then": "502", "service": "object", "probability": 0.15})
    fake.faults.add({"kind": "serialization_failure", "service": "object", "probability": 0.15})
    links: dict[str, str] = {}
    for batch in (homes, members):
        pending = list(batch)
        for _ in range(40):
            if not pending:
                break
            try:
                links.update(connector.lookup([r.ref for r in pending if r.ref not in links]))
            except TransientError:
                continue
            resend = [
                PushRecord(
                    r.ref,
                    Operation.UPDATE if r.ref in links else r.operation,
                    r.entity_name,
                    r.payload,
                    external_id=links.get(r.ref),
                    parent_ref=r.parent_ref,
                    parent_external_id=links.get(r.parent_ref or ""),
                )
                for r in pending
            ]
            results = {res.ref: res for res in connector.push(resend)}
            assert all(res.ok or res.transient for res in results.values()), results
            links.update({ref: res.external_id for ref, res in results.items() if res.ok and res.external_id})
            pending = [r for r in pending if not results[r.ref].ok]
        assert not pending
    fake.faults.clear()
    partners = rows(fake, "res.partner")
    assert len(partners) == 100 and len({p["id"] for p in partners}) == 100
    memberships = rows(fake, "g2p.group.membership")
    assert len(memberships) == 80 and len({(m["group"], m["individual"]) for m in memberships}) == 80
    assert len(rows(fake, "g2p.reg.id")) == 80


def test_a_refused_id_or_bank_account_is_refused_alone(make_connector: Factory, fake: FakeOpenSpp) -> None:
    """Issue 16.2: an unknown ID type, an ID of the wrong format and an unknown bank are answered as parts of
    a delivered registrant; the household and its members are delivered."""
    home = household("H", bank_accounts=[{"acc_number": "HB-1", "bank": "Atlantis Bank"}])
    members = [
        person(home, "A", "Head", ids=[{"id_type": "Tax Number", "value": "1"}]),
        person(
            home,
            "B",
            ids=[{"id_type": "National ID", "value": "N-2"}, {"id_type": "Passport", "value": "?"}],
            bank_accounts=[{"acc_number": "B-1"}],
        ),
    ]
    connector = make_connector()
    results = connector.push([home, *members])
    assert all(r.ok for r in results), results
    assert [(p.part, p.error) for p in results[0].parts] == [
        (
            "bank_accounts:HB-1",
            "unknown bank 'Atlantis Bank' (neither a bank name nor a BIC in OpenSPP) of account HB-1",
        )
    ]
    refused = [(p.part, p.error) for p in results[1].parts]
    assert refused == [("ids:Tax Number", "unknown ID type 'Tax Number'")]
    passport = results[2].parts[1]
    assert [p.part for p in results[2].parts] == ["ids:National ID", "ids:Passport", "bank_accounts:B-1"]
    assert results[2].parts[0].error is None and results[2].parts[2].error is None
    assert (
        passport.error is not None
        and "The provided Passport ID " in passport.error
        and "is invalid" in passport.error
    )
    assert len(rows(fake, "res.partner")) == 3 and len(rows(fake, "g2p.group.membership")) == 2
    assert [r["value"] for r in rows(fake, "g2p.reg.id")] == ["N-2"]
    assert [r["acc_number"] for r in rows(fake, "res.partner.bank")] == ["B-1"]


def test_a_second_head_never_joins_through_a_direct_membership_create(
    make_connector: Factory, fake: FakeOpenSpp
) -> None:
    """Odoo does not check a direct ``g2p.group.membership.create`` for a second Head (odoo-observed.md
    §3.5), and a group with two Heads blocks every later write: a household that holds a Head, or gains
    two in one push, gets its members through the group write, whose check refuses the second Head."""
    connector = make_connector()
    home, other = household("H"), household("O")
    ids = ok(connector.push([home, other, person(home, "A", "Head")]))
    fake.requests.clear()
    results = connector.push(
        [person(home, "B", "Head"), person(other, "C", "Head"), person(other, "D", "Head")]
    )
    assert [r.ok for r in results] == [False, True, False]
    assert {r.error for r in results if not r.ok} == {"Only one Head is allowed per group"}
    assert calls(fake, "g2p.group.membership", "create") == 0
    heads = [m for m in rows(fake, "g2p.group.membership") if m["kind"] == [3]]
    assert sorted(m["group"] for m in heads) == sorted(int(ids[h.ref]) for h in (home, other))
    assert connector.push(
        [PushRecord(home.ref, Operation.UPDATE, "household", {"name": "Renamed"}, external_id=ids[home.ref])]
    )[0].ok

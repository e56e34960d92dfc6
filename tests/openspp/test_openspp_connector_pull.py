"""Pulling registrants and memberships from the fake OpenSPP: paging, ties, late commits, round trips."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime

from openspp_support import Rpc

from connector_core.connector import Operation, PushRecord, RemoteRecord
from connectors.openspp.connector import OpenSppConnector
from connectors.openspp.fake import FakeOpenSpp

Factory = Callable[..., OpenSppConnector]
T0 = datetime(2030, 6, 1, 12, 0, 0, 250000)


def pull_all(
    connector: OpenSppConnector, cursor: str | None = None, limit: int = 1000
) -> tuple[list[RemoteRecord], str]:
    records: list[RemoteRecord] = []
    for _ in range(500):
        page = connector.pull(cursor, limit)
        assert len(page.records) <= limit
        records.extend(page.records)
        assert page.next_cursor is not None
        cursor = page.next_cursor
        if not page.has_more:
            return records, cursor
    raise AssertionError("pull never finished")


def people(rpc: Rpc, n: int, prefix: str = "P") -> list[int]:
    return rpc.ok(
        "res.partner", "create", [[{"is_registrant": True, "name": f"{prefix}{i}"} for i in range(n)]]
    )


def test_round_trip_of_pushed_households(make_connector: Factory, fake: FakeOpenSpp) -> None:
    connector = make_connector()
    homes = [
        PushRecord(str(uuid.uuid4()), Operation.CREATE, "household", {"name": f"H{i}", "area_id": 9})
        for i in range(4)
    ]
    home_ids = {r.ref: r.external_id for r in connector.push(homes)}
    members = []
    for h in homes:
        for j, kind in enumerate(("Head", "Spouse", "Child")):
            members.append(
                PushRecord(
                    str(uuid.uuid4()),
                    Operation.CREATE,
                    "individual",
                    {
                        "given_name": f"G{j}",
                        "family_name": h.payload["name"],
                        "birthdate": "1990-02-03",
                        "gender": "Male" if j else "Female",
                        "_membership_kind": kind,
                        "ids": [{"id_type": "National ID", "value": f"N-{h.ref[:4]}-{j}"}],
                        "bank_accounts": [
                            {
                                "acc_number": f"AC-{h.ref[:4]}-{j}",
                                "bank": "Southern Savings",
                                "acc_holder_name": "X",
                            }
                        ],
                    },
                    parent_external_id=home_ids[h.ref],
                )
            )
    member_ids = {r.ref: r.external_id for r in connector.push(members)}
    records, _ = pull_all(make_connector(), limit=5)
    by_ref = {r.ref: r for r in records}
    assert set(by_ref) == set(home_ids) | set(member_ids)
    # the membership stream re-delivers individuals whose memberships changed: same record, same data
    for record in records:
        assert record == by_ref[record.ref]
    for h in homes:
        got = by_ref[h.ref]
        assert (got.entity_name, got.external_id, got.parent_external_id) == (
            "household",
            home_ids[h.ref],
            None,
        )
        assert got.data["name"] == h.payload["name"] and got.data["area_id"] == 9
    for m in members:
        got = by_ref[m.ref]
        assert got.entity_name == "individual" and got.external_id == member_ids[m.ref]
        assert got.parent_external_id == m.parent_external_id
        for key in ("given_name", "family_name", "birthdate", "gender", "_membership_kind", "ids"):
            assert got.data[key] == m.payload[key], key
        assert got.data["bank_accounts"] == m.payload["bank_accounts"]
        assert got.data["email"] is None and got.data["area_id"] is None, "false becomes None"
        assert got.version and got.updated_at and got.updated_at.endswith(".000Z")
        assert not got.deleted


def test_refs_are_recovered_for_admins_and_registrars(make_connector: Factory, rpc: Rpc) -> None:
    pushed = make_connector().push([PushRecord("guid-1", Operation.CREATE, "household", {"name": "Ours"})])
    native = rpc.ok("res.partner", "create", [{"is_registrant": True, "is_group": True, "name": "Theirs"}])
    for user in ("registrar", "admin"):
        records, _ = pull_all(make_connector(username=user, password=user))
        refs = {r.external_id: r.ref for r in records}
        assert refs == {pushed[0].external_id: "guid-1", str(native): None}, user


def test_pages_through_same_second_ties_without_loss_or_loops(
    make_connector: Factory, fake: FakeOpenSpp, rpc: Rpc
) -> None:
    fake.clock.freeze(T0)
    first = people(rpc, 25, "tie")  # one call: one identical microsecond stamp for all 25
    fake.clock.advance(0.3)
    second = people(rpc, 4, "same-second")  # same second, later microseconds, higher ids
    fake.clock.advance(3)
    third = people(rpc, 3, "later")
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = make_connector().pull(cursor, 7)
        pages += 1
        seen += [r.external_id for r in page.records]
        cursor = page.next_cursor
        if not page.has_more:
            break
    assert sorted(seen, key=int) == [str(i) for i in first + second + third]
    assert len(seen) == len(set(seen)), "each record once per sweep"
    assert pages == 5


def test_a_late_commit_behind_the_cursor_is_pulled_on_the_next_sweep(
    url: str, make_connector: Factory, fake: FakeOpenSpp
) -> None:
    fake.clock.freeze(T0)
    fake.faults.add({"kind": "delay_commit", "ms": 700, "model": "res.partner", "method": "create"})
    late_ids: list[int] = []
    writer = threading.Thread(target=lambda: late_ids.extend(people(Rpc(url), 2, "late")))
    writer.start()
    deadline = time.monotonic() + 5
    while not fake.store.pending and time.monotonic() < deadline:
        time.sleep(0.005)
    fake.clock.advance(2)
    visible = people(Rpc(url), 1, "early")
    fake.clock.advance(2)
    with_lag, without_lag = make_connector(lag_seconds=60), make_connector(lag_seconds=0)
    first_lag, cursor_lag = pull_all(with_lag)
    first_nolag, cursor_nolag = pull_all(without_lag)
    assert [r.external_id for r in first_lag] == [str(visible[0])] == [r.external_id for r in first_nolag]
    writer.join(5)
    assert len(late_ids) == 2
    again_lag, _ = pull_all(with_lag, cursor_lag)
    again_nolag, _ = pull_all(without_lag, cursor_nolag)
    assert {str(i) for i in late_ids} <= {r.external_id for r in again_lag}, (
        "the lag window re-reads behind the cursor"
    )
    assert not {str(i) for i in late_ids} & {r.external_id for r in again_nolag}, "without it they are lost"


def test_the_floor_trails_the_server_clock_by_the_lag(
    make_connector: Factory, fake: FakeOpenSpp, rpc: Rpc
) -> None:
    fake.clock.freeze(T0)
    people(rpc, 3)
    fake.clock.advance(100)
    connector = make_connector(lag_seconds=30)
    records, cursor = pull_all(connector)
    assert len(records) == 3
    state = json.loads(cursor)
    assert state["p"]["f"] == "2030-06-01 12:01:10", "floor = sweep start (server Date) - lag"
    assert pull_all(connector, cursor)[0] == [], "older than the floor: not read again"
    fake.clock.advance(5)
    fresh = people(rpc, 1, "fresh")
    assert [r.external_id for r in pull_all(connector, cursor)[0]] == [str(fresh[0])]


def test_membership_changes_are_pulled_as_parent_links(
    make_connector: Factory, fake: FakeOpenSpp, rpc: Rpc
) -> None:
    fake.clock.freeze(T0)
    h1 = rpc.ok("res.partner", "create", [{"is_registrant": True, "is_group": True, "name": "H1", "kind": 3}])
    h2 = rpc.ok("res.partner", "create", [{"is_registrant": True, "is_group": True, "name": "H2", "kind": 3}])
    person = people(rpc, 1)[0]
    m1 = rpc.ok(
        "g2p.group.membership", "create", [{"group": h1, "individual": person, "kind": [[6, 0, [3]]]}]
    )
    connector = make_connector(lag_seconds=0)
    fake.clock.advance(10)
    records, cursor = pull_all(connector)
    assert {r.external_id: r.parent_external_id for r in records}[str(person)] == str(h1)
    fake.clock.advance(10)
    rpc.ok("g2p.group.membership", "write", [[m1], {"ended_date": "2030-06-01 12:00:20"}])
    rpc.ok("g2p.group.membership", "create", [{"group": h2, "individual": person, "kind": [[6, 0, [8]]]}])
    fake.clock.advance(10)
    records, _ = pull_all(connector, cursor)
    moved = {r.external_id: r for r in records}[str(person)]
    assert moved.parent_external_id == str(h2) and moved.data["_membership_kind"] == "Child"
    assert moved.version == "2030-06-01 12:00:20", "the membership's change dates the record"


def test_archived_registrants_come_back_as_deleted(
    make_connector: Factory, fake: FakeOpenSpp, rpc: Rpc
) -> None:
    fake.clock.freeze(T0)
    pid = people(rpc, 1)[0]
    connector = make_connector(lag_seconds=0)
    fake.clock.advance(5)
    _, cursor = pull_all(connector)
    fake.clock.advance(5)
    rpc.ok("res.partner", "write", [[pid], {"active": False}])
    fake.clock.advance(5)
    records, _ = pull_all(connector, cursor)
    assert [(r.external_id, r.deleted) for r in records] == [(str(pid), True)]


def test_pull_asks_for_explicit_fields_in_a_stable_order(
    make_connector: Factory, fake: FakeOpenSpp, rpc: Rpc
) -> None:
    people(rpc, 3)
    fake.flags.clear()
    pull_all(
        make_connector(
            pull_fields=["name", "given_name", "no_such_field"], pull_domain=[["name", "!=", "P1"]]
        )
    )
    assert fake.flags == [], "no fields=[] reads, no unordered searches, no ISO datetimes"
    reads = [r for r in fake.requests if r["obj_method"] == "search_read" and r["model"] == "res.partner"]
    assert reads and all(r["args"][6]["fields"] for r in reads)
    records, _ = pull_all(make_connector(pull_fields=["name"], pull_domain=[["name", "!=", "P1"]]))
    assert sorted(r.data["name"] for r in records) == ["P0", "P2"]


def test_group_recomputes_do_not_break_paging(make_connector: Factory, fake: FakeOpenSpp, rpc: Rpc) -> None:
    fake.clock.freeze(T0)
    group = rpc.ok(
        "res.partner", "create", [{"is_registrant": True, "is_group": True, "name": "G", "kind": 3}]
    )
    members = people(rpc, 3)
    for m in members:
        rpc.ok("g2p.group.membership", "create", [{"group": group, "individual": m}])
    connector = make_connector(lag_seconds=0)
    fake.clock.advance(5)
    _, cursor = pull_all(connector)
    fake.clock.advance(60)
    fake.run_jobs()  # queue_job recompute: a later write_date with no visible change
    fake.clock.advance(5)
    records, _ = pull_all(connector, cursor)
    assert [r.external_id for r in records] == [str(group)]


def test_households_come_before_their_members_in_every_sweep(
    make_connector: Factory, fake: FakeOpenSpp, rpc: Rpc
) -> None:
    """A membership write stamps the group later than its members, yet the group is delivered first, even
    one record per page: the engine can then link each member to a household it already holds."""
    fake.clock.freeze(T0)
    members = people(rpc, 3)
    fake.clock.advance(1)
    group = rpc.ok(
        "res.partner", "create", [{"is_registrant": True, "is_group": True, "name": "G", "kind": 3}]
    )
    fake.clock.advance(1)
    rpc.ok(
        "res.partner",
        "write",
        [[group], {"group_membership_ids": [[0, 0, {"individual": m}] for m in members]}],
    )
    fake.clock.advance(5)
    records, cursor = pull_all(make_connector(lag_seconds=0), limit=1)
    order = [r.external_id for r in records]
    assert order[0] == str(group) and set(order[1:4]) == {str(m) for m in members}
    assert {r.parent_external_id for r in records[1:]} == {str(group)}
    assert set(json.loads(cursor)) == {"v", "g", "p", "m"}


def test_the_pull_domain_holds_for_members_found_through_their_memberships(
    make_connector: Factory, fake: FakeOpenSpp, rpc: Rpc
) -> None:
    """Found on a real Odoo 17 + OpenG2P: the memberships stream read every changed membership's individual
    by id, outside ``pull_domain``, so a project limited to some registrants (an area, newer ids) pulled
    members of households it never asked for. The domain holds on every stream."""
    fake.clock.freeze(T0)
    outside = rpc.ok(
        "res.partner", "create", [{"is_registrant": True, "is_group": True, "name": "Elsewhere", "kind": 3}]
    )
    stranger = people(rpc, 1, "Stranger")[0]
    first_in = stranger + 1
    inside = rpc.ok(
        "res.partner", "create", [{"is_registrant": True, "is_group": True, "name": "Here", "kind": 3}]
    )
    neighbour = people(rpc, 1, "Neighbour")[0]
    connector = make_connector(lag_seconds=0, pull_domain=[["id", ">=", first_in]])
    fake.clock.advance(5)
    _, cursor = pull_all(connector)
    fake.clock.advance(5)
    rpc.ok("g2p.group.membership", "create", [{"group": outside, "individual": stranger}])
    rpc.ok("g2p.group.membership", "create", [{"group": inside, "individual": neighbour}])
    fake.clock.advance(5)
    records, _ = pull_all(connector, cursor)
    assert {r.external_id: r.parent_external_id for r in records if r.entity_name == "individual"} == {
        str(neighbour): str(inside)
    }

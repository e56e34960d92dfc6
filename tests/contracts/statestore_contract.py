"""What every state store backend must do, as scenarios a sync operator would recognise.

A backend's test module subclasses :class:`StateStoreContract` and provides ``make_state_store``: a
callable that opens the backend on the *same* storage each time (so a test can simulate a restart).
Every store it returns is closed by the suite.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from connector_core.events import now_timestamp
from connector_core.state.base import Direction, Link, OpenCounts, StateStore, StateTxn

MakeStateStore = Callable[[], StateStore]
PUSH, PULL = Direction.PUSH, Direction.PULL


def link(guid: str, external_id: str, connector: str = "openspp", **kw: object) -> Link:
    return Link(connector=connector, entity_guid=guid, external_id=external_id, **kw)  # type: ignore[arg-type]


class StateStoreContract:
    @pytest.fixture
    def open_store(self, make_state_store: MakeStateStore) -> Iterator[MakeStateStore]:
        opened: list[StateStore] = []

        def open_() -> StateStore:
            store = make_state_store()
            opened.append(store)
            return store

        yield open_
        for store in opened:
            store.close()

    @pytest.fixture
    def store(self, open_store: MakeStateStore) -> StateStore:
        return open_store()

    # -- checkpoints -------------------------------------------------------------------------------

    def test_checkpoints_move_per_connector_and_direction(self, store: StateStore) -> None:
        assert isinstance(store, StateStore)
        assert store.get_checkpoint("openspp", PUSH) is None
        with store.transaction() as txn:
            assert isinstance(txn, StateTxn)
            txn.set_checkpoint("openspp", PUSH, "10")
            txn.set_checkpoint("openspp", PULL, "2025-07-01T08:00:00.000Z")
            txn.set_checkpoint("openfn", PUSH, "3")
        with store.transaction() as txn:
            txn.set_checkpoint("openspp", PUSH, "25")
        assert store.get_checkpoint("openspp", PUSH) == "25"
        assert store.get_checkpoint("openspp", PULL) == "2025-07-01T08:00:00.000Z"
        assert store.checkpoints() == {
            ("openfn", "push"): "3",
            ("openspp", "pull"): "2025-07-01T08:00:00.000Z",
            ("openspp", "push"): "25",
        }

    def test_a_checkpoint_can_be_reset_to_the_start(self, store: StateStore) -> None:
        with store.transaction() as txn:
            txn.set_checkpoint("openspp", PUSH, "10")
        with store.transaction() as txn:
            txn.set_checkpoint("openspp", PUSH, None)
        assert store.get_checkpoint("openspp", PUSH) is None

    def test_state_survives_a_restart(self, open_store: MakeStateStore) -> None:
        store = open_store()
        with store.transaction() as txn:
            txn.set_checkpoint("openspp", PUSH, "42")
            txn.upsert_link(link("p-1", "101", snapshot={"name": "Jane"}))
        run = store.start_run("openspp", "push", "manual")
        store.finish_run(run, "ok", {"pushed": 1})
        store.close()

        again = open_store()
        assert again.get_checkpoint("openspp", PUSH) == "42"
        assert again.get_link("openspp", "p-1") == link("p-1", "101", snapshot={"name": "Jane"})
        assert [r.outcome for r in again.runs()] == ["ok"]

    # -- links -------------------------------------------------------------------------------------

    def test_a_link_is_found_by_guid_and_by_external_id(self, store: StateStore) -> None:
        snapshot = {
            "name": "Zoë O'Brien",
            "birthdate": None,
            "ids": [{"type": "passport", "value": "P1"}],
            "hh_size": 4,
            "active": True,
            "score": 2.5,
        }
        written = link(
            "p-1",
            "101",
            entity_name="individual",
            snapshot=snapshot,
            remote_version="2025-07-01 08:00:00",
            synced_at="2025-07-01T08:00:01.000Z",
        )
        with store.transaction() as txn:
            txn.upsert_link(written)
        assert store.get_link("openspp", "p-1") == written
        assert store.find_link("openspp", "101") == written
        assert store.get_link("openspp", "p-1").snapshot == snapshot  # type: ignore[union-attr]
        assert store.get_link("openfn", "p-1") is None
        assert store.find_link("openfn", "101") is None
        assert store.find_link("openspp", "999") is None
        assert store.linked_entities("openspp", ["101", "999", "101"]) == {"101": "p-1"}
        assert store.linked_entities("openfn", ["101"]) == {} == store.linked_entities("openspp", [])

    def test_relinking_replaces_the_link(self, store: StateStore) -> None:
        with store.transaction() as txn:
            txn.upsert_link(link("p-1", "101", snapshot={"v": 1}))
        with store.transaction() as txn:
            txn.upsert_link(link("p-1", "202", snapshot={"v": 2}, deleted=True))
        assert store.find_link("openspp", "101") is None
        found = store.find_link("openspp", "202")
        assert found is not None and found.snapshot == {"v": 2} and found.deleted

    def test_one_external_id_cannot_be_linked_to_two_entities(self, store: StateStore) -> None:
        with store.transaction() as txn:
            txn.upsert_link(link("p-1", "101"))
            txn.upsert_link(link("p-1", "101", connector="openfn"))  # another system: fine
        with pytest.raises(ValueError, match="101"), store.transaction() as txn:
            txn.set_checkpoint("openspp", PUSH, "99")
            txn.upsert_link(link("p-2", "101"))
        assert store.get_link("openspp", "p-2") is None
        assert store.get_checkpoint("openspp", PUSH) is None  # the batch rolled back whole
        assert store.find_link("openspp", "101").entity_guid == "p-1"  # type: ignore[union-attr]

    def test_links_are_listed_and_fetched_in_bulk_per_connector(self, store: StateStore) -> None:
        with store.transaction() as txn:
            for i in range(7):
                txn.upsert_link(link(f"p-{i}", str(100 + i)))
            txn.upsert_link(link("p-0", "x-0", connector="openfn"))
        assert [lk.entity_guid for lk in store.iter_links("openspp")] == [f"p-{i}" for i in range(7)]
        assert [lk.external_id for lk in store.iter_links("openfn")] == ["x-0"]
        bulk = store.get_links("openspp", ["p-3", "p-missing", "p-5"])
        assert sorted(bulk) == ["p-3", "p-5"] and bulk["p-3"].external_id == "103"
        assert store.get_links("openspp", []) == {}

    def test_a_deleted_link_is_gone(self, store: StateStore) -> None:
        with store.transaction() as txn:
            txn.upsert_link(link("p-1", "101"))
        with store.transaction() as txn:
            txn.delete_link("openspp", "p-1")
            txn.delete_link("openspp", "never-linked")
        assert store.get_link("openspp", "p-1") is None
        assert store.find_link("openspp", "101") is None

    # -- dead letters ------------------------------------------------------------------------------

    def test_a_record_failing_again_bumps_its_open_dead_letter(self, store: StateStore) -> None:
        with store.transaction() as txn:
            txn.add_dead_letter("openspp", PUSH, "p-1", "HTTP 500", {"name": "Jane"})
        with store.transaction() as txn:
            txn.add_dead_letter("openspp", PUSH, "p-1", "HTTP 422: bad gender", {"name": "J."})
            txn.add_dead_letter("openspp", PULL, "p-1", "unmapped", {"id": 101})
        open_ = store.dead_letters()
        assert [(d.direction, d.ref, d.attempts) for d in open_] == [
            (PUSH, "p-1", 2),
            (PULL, "p-1", 1),
        ]
        push = open_[0]
        assert push.reason == "HTTP 422: bad gender" and push.payload == {"name": "J."}
        assert push.status == "open" and push.connector == "openspp"
        assert push.created_at <= push.updated_at
        assert store.get_dead_letter(push.id) == push
        assert store.get_dead_letter(push.id + 1000) is None

    def test_a_resolved_dead_letter_is_history_and_a_new_failure_opens_another(
        self, store: StateStore
    ) -> None:
        with store.transaction() as txn:
            txn.add_dead_letter("openspp", PUSH, "p-1", "HTTP 500", {"n": 1})
            txn.add_dead_letter("openspp", PUSH, "p-2", "HTTP 500", {"n": 2})
        with store.transaction() as txn:
            txn.resolve_dead_letter("openspp", PUSH, "p-1", "replayed")
            txn.resolve_dead_letter("openspp", PUSH, "p-2", "discarded")
            txn.resolve_dead_letter("openspp", PUSH, "never-failed", "replayed")
        assert store.dead_letters() == []
        assert [d.status for d in store.dead_letters(status=None)] == ["replayed", "discarded"]
        assert [d.ref for d in store.dead_letters(status="discarded")] == ["p-2"]

        with store.transaction() as txn:
            txn.add_dead_letter("openspp", PUSH, "p-1", "HTTP 500 again", {"n": 3})
        (reopened,) = store.dead_letters()
        assert reopened.ref == "p-1" and reopened.attempts == 1 and reopened.status == "open"
        assert len(store.dead_letters(status=None)) == 3

    def test_a_failure_offered_again_without_an_attempt_updates_the_reason_not_the_count(
        self, store: StateStore
    ) -> None:
        with store.transaction() as txn:
            txn.add_dead_letter("openspp", PUSH, "p-1", "unknown bank", {"n": 1})
            txn.add_dead_letter("openspp", PUSH, "p-1", "account number taken", {"n": 2}, attempt=False)
            txn.add_dead_letter("openspp", PUSH, "p-2", "unknown bank", {"n": 3}, attempt=False)
        assert [(d.ref, d.reason, d.payload, d.attempts) for d in store.dead_letters()] == [
            ("p-1", "account number taken", {"n": 2}, 1),
            ("p-2", "unknown bank", {"n": 3}, 1),  # none open: a new letter, its first attempt
        ]

    def test_the_part_letters_of_a_record_close_together_and_only_theirs(self, store: StateStore) -> None:
        with store.transaction() as txn:
            for ref in ("g-1#id:NID", "g-1#bank:1", "g-1", "g-10#id:NID", "g_1#id:NID"):
                txn.add_dead_letter("openspp", PUSH, ref, "refused", {})
            txn.add_dead_letter("openspp", PULL, "g-1#id:NID", "refused", {})
            txn.add_dead_letter("openfn", PUSH, "g-1#id:NID", "refused", {})
        with store.transaction() as txn:
            txn.resolve_part_dead_letters("openspp", PUSH, "g-1", "discarded")
        assert sorted((d.connector, d.direction, d.ref) for d in store.dead_letters()) == [
            ("openfn", PUSH, "g-1#id:NID"),
            ("openspp", PULL, "g-1#id:NID"),
            ("openspp", PUSH, "g-1"),
            ("openspp", PUSH, "g-10#id:NID"),
            ("openspp", PUSH, "g_1#id:NID"),
        ]
        assert sorted(d.ref for d in store.dead_letters(status="discarded")) == ["g-1#bank:1", "g-1#id:NID"]

    def test_dead_letters_filter_by_connector_and_limit(self, store: StateStore) -> None:
        with store.transaction() as txn:
            for i in range(5):
                txn.add_dead_letter("openspp", PUSH, f"p-{i}", "boom", {})
            txn.add_dead_letter("openfn", PUSH, "p-0", "boom", {})
        assert len(store.dead_letters()) == 6
        assert [d.ref for d in store.dead_letters("openspp", limit=2)] == ["p-0", "p-1"]
        assert [d.connector for d in store.dead_letters("openfn")] == ["openfn"]

    def test_dead_letters_stream_in_id_order_by_page_and_are_found_by_ref(self, store: StateStore) -> None:
        with store.transaction() as txn:
            for i in range(7):
                txn.add_dead_letter("openspp", PUSH, f"p-{i}", "boom", {"i": i})
            txn.add_dead_letter("openspp", PULL, "p-0", "unmapped", {})
            txn.add_dead_letter("openfn", PUSH, "p-1", "boom", {})
            txn.resolve_dead_letter("openspp", PUSH, "p-3", "discarded")
        streamed = store.iter_dead_letters("openspp", page_size=2)
        first = next(streamed)
        with store.transaction() as txn:  # resolved behind the iteration, as replay --all does
            txn.resolve_dead_letter("openspp", PUSH, first.ref, "replayed")
        rest = [(d.direction, d.ref) for d in streamed]
        assert [(first.direction, first.ref), *rest] == [
            (PUSH, "p-0"), (PUSH, "p-1"), (PUSH, "p-2"), (PUSH, "p-4"), (PUSH, "p-5"), (PUSH, "p-6"),
            (PULL, "p-0"),
        ]  # fmt: skip
        assert [d.ref for d in store.iter_dead_letters("openspp", status=None, page_size=3)][:4] == [
            "p-0", "p-1", "p-2", "p-3",
        ]  # fmt: skip
        assert [d.ref for d in store.iter_dead_letters("openspp", status="discarded")] == ["p-3"]
        assert store.open_dead_letter_refs("openspp", PUSH, ["p-0", "p-1", "p-3", "p-9", "p-1"]) == {"p-1"}
        assert store.open_dead_letter_refs("openspp", PULL, ["p-0", "p-1"]) == {"p-0"}
        assert store.open_dead_letter_refs("openspp", PUSH, []) == set()
        with pytest.raises(ValueError, match="page_size"):
            next(store.iter_dead_letters("openspp", page_size=0))

    def test_dead_letters_are_grouped_by_reason_and_paged_by_keyset_within_a_group(
        self, store: StateStore
    ) -> None:
        bad_phone = "phone_number: not valid (it's 50% wrong_ish)"  # quotes and LIKE wildcards stay literal
        with store.transaction() as txn:
            for i in range(7):
                txn.add_dead_letter("openspp", PUSH, f"p-{i}", bad_phone, {"i": i})
            for i in range(3):
                txn.add_dead_letter("openspp", PUSH, f"q-{i}", "national id taken", {})
            txn.add_dead_letter("openspp", PULL, "r-0", bad_phone, {})
            txn.add_dead_letter("openfn", PUSH, "p-0", bad_phone, {})
            txn.resolve_dead_letter("openspp", PUSH, "p-6", "discarded")
        groups = store.dead_letter_groups("openspp")
        assert [(g.direction, g.reason, g.count) for g in groups] == [
            ("push", bad_phone, 6), ("push", "national id taken", 3), ("pull", bad_phone, 1),
        ]  # fmt: skip
        assert len(store.dead_letter_groups()) == 4 and len(store.dead_letter_groups(limit=2)) == 2
        assert [(g.reason, g.count) for g in store.dead_letter_groups("openspp", "discarded")] == [
            (bad_phone, 1)
        ]
        pages, after = [], None
        while page := store.dead_letter_page(
            "openspp", direction="push", reason=bad_phone, after_id=after, limit=4
        ):
            pages.append([d.ref for d in page])
            after = page[-1].id
        assert pages == [["p-0", "p-1", "p-2", "p-3"], ["p-4", "p-5"]]
        assert store.count_dead_letters("openspp", direction="push", reason=bad_phone) == 6
        assert store.count_dead_letters("openspp") == 10 and store.count_dead_letters(status=None) == 12
        assert [d.ref for d in store.dead_letter_page("openspp", status="discarded")] == ["p-6"]
        assert [d.connector for d in store.dead_letter_page(reason=bad_phone, direction="push")] == [
            "openspp", "openspp", "openspp", "openspp", "openspp", "openspp", "openfn",
        ]  # fmt: skip

    def test_runs_and_conflicts_are_paged_by_keyset_with_filters(self, store: StateStore) -> None:
        ids = []
        for i in range(6):
            run = store.start_run("openspp" if i % 3 else "openfn", ("push", "pull")[i % 2], "schedule")
            store.finish_run(run, "failed" if i == 4 else "ok", {"read": i})
            ids.append(run)
        assert [r.id for r in store.run_page(limit=4)] == ids[::-1][:4]
        assert [r.id for r in store.run_page(before_id=ids[2], limit=4)] == [ids[1], ids[0]]
        assert [r.id for r in store.run_page("openspp", direction="pull")] == [ids[5], ids[1]]
        assert [r.id for r in store.run_page(outcome="failed")] == [ids[4]]
        found = store.get_run(ids[3])
        assert found is not None and found.counts == {"read": 3} and store.get_run(10**9) is None
        with store.transaction() as txn:
            for i in range(5):
                txn.add_conflict("openspp", f"g{i}", str(i), "manual", {}, {"a": i}, {"a": -i}, None)
        first = store.conflict_page("openspp", limit=3)
        assert [c.entity_guid for c in first] == ["g0", "g1", "g2"]
        rest = store.conflict_page("openspp", after_id=first[-1].id, limit=3)
        assert [c.entity_guid for c in rest] == ["g3", "g4"] and rest[0].local == {"a": 3}
        assert store.conflict_page("openfn") == [] and store.conflict_page(status="resolved") == []

    def test_open_work_is_counted_per_connector(self, store: StateStore) -> None:
        assert store.open_counts("openspp") == OpenCounts(dead_letters=0, conflicts=0, parked=0)
        with store.transaction() as txn:
            txn.add_dead_letter("openspp", PUSH, "p-1", "boom", {})
            txn.add_dead_letter("openspp", PULL, "p-1", "boom", {})
            txn.add_dead_letter("openspp", PUSH, "p-2", "boom", {})
            txn.resolve_dead_letter("openspp", PUSH, "p-2", "replayed")
            txn.add_dead_letter("openfn", PUSH, "p-1", "boom", {})
            txn.add_conflict("openspp", "g1", "7", "manual", {}, {"a": 1}, {"a": 2}, None)
            txn.add_conflict("openspp", "g2", "8", "merge", {}, {"a": 1}, {"b": 2}, None, resolution="merged")
            txn.park("openspp", "child", "parent", "waiting")
        assert store.open_counts("openspp") == OpenCounts(dead_letters=2, conflicts=1, parked=1)
        assert store.open_counts("openfn") == OpenCounts(dead_letters=1, conflicts=0, parked=0)

    # -- runs --------------------------------------------------------------------------------------

    def test_runs_are_recorded_newest_first(self, store: StateStore) -> None:
        first = store.start_run("openspp", "push", "manual")
        running = store.runs()[0]
        assert running.id == first and running.outcome == "running"
        assert running.finished_at is None and running.trigger == "manual"
        store.finish_run(first, "ok", {"pushed": 10, "failed": 0})
        second = store.start_run("openspp", "both", "schedule")
        store.finish_run(second, "failed", {"pushed": 0}, error="OpenSPP unreachable")
        third = store.start_run("openfn", "pull", "schedule")

        assert [r.id for r in store.runs()] == [third, second, first]
        done = store.runs("openspp")[1]
        assert done.outcome == "ok" and done.counts == {"pushed": 10, "failed": 0}
        assert done.finished_at is not None and done.started_at <= done.finished_at
        failed = store.runs(failed_only=True)
        assert [(r.id, r.error) for r in failed] == [(second, "OpenSPP unreachable")]
        assert [r.id for r in store.runs(limit=1)] == [third]
        assert store.runs("openfn", failed_only=True) == []

    # -- one transaction per batch -----------------------------------------------------------------

    def test_a_failed_batch_leaves_no_trace(self, store: StateStore) -> None:
        with store.transaction() as txn:
            txn.set_checkpoint("openspp", PUSH, "10")
        with pytest.raises(RuntimeError, match="crash"), store.transaction() as txn:
            txn.set_checkpoint("openspp", PUSH, "20")
            txn.upsert_link(link("p-1", "101"))
            txn.add_dead_letter("openspp", PUSH, "p-2", "HTTP 500", {})
            raise RuntimeError("crash before the batch was committed")
        assert store.get_checkpoint("openspp", PUSH) == "10"
        assert store.get_link("openspp", "p-1") is None
        assert store.dead_letters(status=None) == []

    def test_a_committed_batch_is_all_there(self, store: StateStore) -> None:
        with store.transaction() as txn:
            txn.set_checkpoint("openspp", PUSH, "20")
            txn.upsert_link(link("p-1", "101"))
            txn.add_dead_letter("openspp", PUSH, "p-2", "HTTP 500", {})
        assert store.get_checkpoint("openspp", PUSH) == "20"
        assert store.get_link("openspp", "p-1") is not None
        assert [d.ref for d in store.dead_letters()] == ["p-2"]

    # -- schema ------------------------------------------------------------------------------------

    def test_a_fresh_store_is_at_the_latest_schema_and_reopening_changes_nothing(
        self, open_store: MakeStateStore
    ) -> None:
        store = open_store()
        version = store.schema_version()
        assert version >= 1
        with store.transaction() as txn:
            txn.set_checkpoint("openspp", PUSH, "7")
        store.close()
        again = open_store()
        assert again.schema_version() == version
        assert again.get_checkpoint("openspp", PUSH) == "7"

    # -- merge base, intents, parked children, conflicts (schema 2) -------------------------------

    def test_a_link_keeps_the_merge_base(self, store: StateStore) -> None:
        with store.transaction() as txn:
            txn.upsert_link(link("g1", "7", base={"first_name": "Ana", "size": 3}))
        found = store.get_link("openspp", "g1")
        assert found is not None and found.base == {"first_name": "Ana", "size": 3}

    def test_create_intents_survive_until_cleared(self, open_store: MakeStateStore) -> None:
        store = open_store()
        with store.transaction() as txn:
            txn.add_intents("openspp", ["a", "b", "c"])
            txn.add_intents("openfn", ["a"])
        with store.transaction() as txn:
            txn.clear_intents("openspp", ["b"])
        store.close()
        reopened = open_store()
        assert reopened.intents("openspp") == {"a", "c"}
        assert reopened.intents("openfn") == {"a"}

    def test_a_child_parked_again_counts_its_attempts(self, store: StateStore) -> None:
        with store.transaction() as txn:
            txn.park("openspp", "child", "parent", "parent parent is not delivered yet")
        with store.transaction() as txn:
            txn.park("openspp", "child", "parent", "still waiting")
            txn.park("openspp", "other", "p2", "waiting")
        parked = {p.entity_guid: p for p in store.parked("openspp")}
        assert parked["child"].attempts == 2 and parked["child"].reason == "still waiting"
        with store.transaction() as txn:
            txn.unpark("openspp", "child")
        assert [p.entity_guid for p in store.parked("openspp")] == ["other"]

    def test_parked_children_stream_in_guid_order_and_are_found_with_their_attempts(
        self, store: StateStore
    ) -> None:
        with store.transaction() as txn:
            for guid in ["c-4", "c-1", "c-3", "c-0", "c-2"]:
                txn.park("openspp", guid, "parent", "waiting")
            txn.park("openspp", "c-2", "parent", "still waiting")
            txn.park("openfn", "c-9", "parent", "waiting")
        streamed = store.iter_parked("openspp", page_size=2)
        seen = [next(streamed).entity_guid]
        with store.transaction() as txn:  # what a retry does behind the iteration
            txn.unpark("openspp", "c-0")
            txn.park("openspp", "c-1", "parent", "waiting again")
            txn.unpark("openspp", "c-3")
        seen += [p.entity_guid for p in streamed]
        assert seen == ["c-0", "c-1", "c-2", "c-4"]
        assert store.parked_attempts("openspp", ["c-1", "c-2", "c-3", "c-9", "c-1"]) == {"c-1": 2, "c-2": 2}
        assert store.parked_attempts("openspp", []) == {}

    def test_an_open_conflict_holds_the_entity_until_resolved(self, store: StateStore) -> None:
        with store.transaction() as txn:
            txn.add_conflict("openspp", "g1", "7", "manual", {"a": 1}, {"a": 2}, {"a": 3}, "v2")
            txn.add_conflict(
                "openspp", "g2", "8", "merge", {"a": 1}, {"a": 2}, {"b": 3}, "v9", resolution="merged"
            )
        assert store.open_conflicts("openspp", ["g1", "g2", "g3"]) == {"g1"}
        (open_one,) = store.conflicts("openspp")
        assert (open_one.local, open_one.remote, open_one.base) == ({"a": 2}, {"a": 3}, {"a": 1})
        assert {c.entity_guid for c in store.conflicts("openspp", status=None)} == {"g1", "g2"}
        with store.transaction() as txn:
            txn.resolve_conflict(open_one.id, "local")
        assert store.open_conflicts("openspp", ["g1"]) == set()
        resolved = store.get_conflict(open_one.id)
        assert resolved is not None and resolved.status == "resolved" and resolved.resolution == "local"
        with pytest.raises(KeyError), store.transaction() as txn:
            txn.resolve_conflict(open_one.id, "again")

    # -- scheduled ticks (schema 3) -----------------------------------------------------------------

    def test_each_scheduled_tick_is_claimed_once(self, open_store: MakeStateStore) -> None:
        first, second = open_store(), open_store()  # two schedulers sharing one store
        tick = "2025-06-01T02:00:00.000Z"
        assert first.claim_tick("openspp", "pull", tick, "host-a:1") is True
        assert second.claim_tick("openspp", "pull", tick, "host-b:2") is False
        assert second.claim_tick("openspp", "push", tick, "host-b:2") is True
        assert first.claim_tick("openspp", "pull", "2025-06-02T02:00:00.000Z", "host-a:1") is True
        assert second.last_tick("openspp", "pull") == "2025-06-02T02:00:00.000Z"
        assert first.last_tick("openfn", "pull") is None

    # -- audit trail (schema 6) ---------------------------------------------------------------------

    def test_actions_are_kept_newest_first_and_commit_with_their_transaction(self, store: StateStore) -> None:
        first = store.record_action("os:ana", "replay", connector="openspp", detail={"letters": 3})
        with store.transaction() as txn:
            txn.record_action("ui:ben", "resolve", connector="openfn", target="g1", detail={"conflict": 7})
        with pytest.raises(RuntimeError), store.transaction() as txn:
            txn.record_action("ui:ben", "discard", connector="openfn", detail={"letters": 9})
            raise RuntimeError("the discard failed: its record goes with it")
        store.record_action("os:ana", "purge")
        newest, resolve, replay = store.actions()
        assert (newest.action, newest.connector, newest.target, newest.detail) == ("purge", None, None, {})
        assert (resolve.actor, resolve.target, resolve.detail) == ("ui:ben", "g1", {"conflict": 7})
        assert replay.id == first and replay.detail == {"letters": 3} and replay.at <= resolve.at
        assert [a.action for a in store.actions(connector="openspp")] == ["replay"]
        assert [a.action for a in store.actions(action="resolve")] == ["resolve"]
        assert [a.id for a in store.actions(before_id=resolve.id)] == [first]
        assert [a.action for a in store.actions(limit=1)] == ["purge"]
        with pytest.raises(ValueError):
            store.record_action("", "replay")

    # -- retention and erasure ----------------------------------------------------------------------

    def test_purge_takes_history_past_its_cutoff_and_never_open_work(self, store: StateStore) -> None:
        later = "2999-01-01T00:00:00.000Z"  # every row written now is older than this
        with store.transaction() as txn:
            for ref in ("a", "b", "c"):
                txn.add_dead_letter("openspp", Direction.PUSH, ref, "refused", {"name": "Ana"})
            txn.resolve_dead_letter("openspp", Direction.PUSH, "a", "replayed")
            txn.resolve_dead_letter("openspp", Direction.PUSH, "b", "discarded")
            txn.add_conflict("openspp", "g1", "7", "manual", {"a": 1}, {"a": 2}, {"a": 3}, None)
            txn.add_conflict("openfn", "g2", "8", "merge", {"a": 1}, {"a": 2}, {"b": 3}, None, resolution="m")
            txn.upsert_link(
                Link(
                    "openspp",
                    "gone",
                    "9",
                    snapshot={"name": "Ana"},
                    synced_at=now_timestamp(),
                    deleted=True,
                    base={"name": "Ana"},
                )
            )
            txn.upsert_link(
                Link("openspp", "live", "10", snapshot={"name": "Ben"}, synced_at=now_timestamp())
            )
        done = store.start_run("openspp", "push", "manual")
        store.finish_run(done, "ok", {})
        store.start_run("openspp", "push", "manual")  # still running
        store.record_action("os:ana", "replay", connector="openspp")

        assert store.purgeable("dead_letters", later) == {"openspp": 2}
        assert store.purgeable("conflicts", later) == {"openfn": 1}
        assert store.purgeable("runs", later) == {"openspp": 1}
        assert store.purgeable("deleted_snapshots", later) == {"openspp": 1}
        assert store.purgeable("audit", later) == {"openspp": 1}
        assert store.purgeable("dead_letters", "2000-01-01T00:00:00.000Z") == {}
        with pytest.raises(ValueError, match="nothing to purge called 'links'"):
            store.purgeable("links", later)

        assert [store.purge_batch("dead_letters", later, 1) for _ in range(3)] == [1, 1, 0]
        for kind in ("conflicts", "runs", "deleted_snapshots", "audit"):
            assert store.purge_batch(kind, later, 100) == 1
            assert store.purge_batch(kind, later, 100) == 0, "a purged row is not counted again"
        assert [d.ref for d in store.dead_letters("openspp", status=None)] == ["c"]
        assert [c.entity_guid for c in store.conflicts(status=None)] == ["g1"]
        assert [r.outcome for r in store.runs("openspp")] == ["running"]
        gone = store.get_link("openspp", "gone")
        assert gone is not None and (gone.external_id, gone.deleted, gone.snapshot, gone.base) == (
            "9",
            True,
            {},
            {},
        )
        live = store.get_link("openspp", "live")
        assert live is not None and live.snapshot == {"name": "Ben"}
        assert store.actions() == []

    def test_forgetting_an_entity_blanks_its_snapshots_and_drops_its_letters_and_conflicts(
        self, store: StateStore
    ) -> None:
        with store.transaction() as txn:
            for connector, external_id in (("openspp", "7"), ("openfn", "x-7")):
                txn.upsert_link(
                    Link(
                        connector,
                        "p1",
                        external_id,
                        snapshot={"name": "Ana"},
                        synced_at=now_timestamp(),
                        base={"name": "Ana"},
                    )
                )
            txn.upsert_link(Link("openspp", "p2", "8", snapshot={"name": "Ben"}, synced_at=now_timestamp()))
            txn.add_dead_letter("openspp", Direction.PUSH, "p1", "refused", {"name": "Ana"})
            txn.add_dead_letter("openspp", Direction.PUSH, "p1#bank", "refused", {"iban": "X"})
            txn.resolve_dead_letter("openspp", Direction.PUSH, "p1#bank", "discarded")
            txn.add_dead_letter("openspp", Direction.PULL, "7", "bad", {"data": {"name": "Ana"}})
            txn.add_dead_letter("openfn", Direction.PULL, "7", "bad", {"data": {"name": "Other"}})
            txn.add_dead_letter("openspp", Direction.PUSH, "p10", "refused", {"name": "Cy"})
            txn.add_conflict("openspp", "p1", "7", "manual", {"a": 1}, {"a": 2}, {"a": 3}, None)
            txn.add_conflict("openspp", "p2", "8", "manual", {"a": 1}, {"a": 2}, {"a": 3}, None)

        counted = store.forget_entity("p1", dry_run=True)
        assert (counted["snapshots"], counted["dead_letters"], counted["conflicts"]) == (2, 3, 1)
        assert store.get_link("openspp", "p1").snapshot == {"name": "Ana"}, "a dry run changes nothing"
        done = store.forget_entity("p1")
        assert (done["snapshots"], done["dead_letters"], done["conflicts"]) == (2, 3, 1)
        assert done["linked"] == [("openfn", "x-7", False), ("openspp", "7", False)]
        for connector in ("openspp", "openfn"):
            link = store.get_link(connector, "p1")
            assert link is not None and (link.snapshot, link.base, link.synced_at) == ({}, {}, None)
        assert sorted((d.connector, d.ref) for d in store.dead_letters(status=None)) == [
            ("openfn", "7"),  # another connector's external id 7 is another record
            ("openspp", "p10"),  # a guid that starts like p1 is another entity
        ]
        assert [c.entity_guid for c in store.conflicts(status=None)] == ["p2"]
        again = store.forget_entity("p1")
        assert (again["snapshots"], again["dead_letters"], again["conflicts"]) == (0, 0, 0)
        assert store.forget_entity("nobody") == {
            "snapshots": 0,
            "dead_letters": 0,
            "conflicts": 0,
            "linked": [],
        }

"""Pulling a Lightning collection: every item state once, none lost to paging, updates or the boundary."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from connector_core.connector import RemoteRecord, TransientError
from connectors.openfn.collections import MAX_CATCHUP, SEEN_CAP, PullState, key_matcher, to_record
from connectors.openfn.connector import OpenFnConnector
from connectors.openfn.fake import FakeLightning, Fault
from connectors.openfn.fake.seed import RESULTS_COLLECTION

Make = Callable[..., OpenFnConnector]


def drain(
    connector: OpenFnConnector, cursor: str | None, limit: int
) -> tuple[list[RemoteRecord], str | None, int]:
    """What the engine does in one run: pages until ``has_more`` is false; returns records, cursor, pages."""
    records: list[RemoteRecord] = []
    pages = 0
    while True:
        page = connector.pull(cursor, limit)
        pages += 1
        records += page.records
        cursor = page.next_cursor
        if not page.has_more:
            return records, cursor, pages


def put(lightning: FakeLightning, key: str, value: object) -> None:
    lightning.put_json(RESULTS_COLLECTION, key, value)


def item(key: str, updated: str, value: object = None) -> dict:
    return {"key": key, "value": json.dumps(value or {}), "created": updated, "updated": updated}


# -- the cursor, without a server ------------------------------------------------------------------------


def test_a_re_read_at_the_inclusive_boundary_is_not_delivered_again() -> None:
    state = PullState()
    first = [item("a", "2025-01-01T00:00:00.000001Z"), item("b", "2025-01-01T00:00:05.000000Z")]
    assert len(state.take_page(first, None)) == 2
    assert state.finish_pass(lag=0) is False
    assert state.after == "2025-01-01T00:00:05.000000Z" and set(state.seen) == {"b"}
    again = [item("b", "2025-01-01T00:00:05.000000Z"), item("c", "2025-01-01T00:00:05.000000Z")]
    assert [i["key"] for i in state.take_page(again, None)] == ["c"]


def test_the_boundary_never_passes_the_first_pages_newest_item() -> None:
    state = PullState(after="2025-01-01T00:00:00.000000Z")
    state.take_page([item("a", "2025-01-01T00:00:10.000000Z")], "c1")
    state.take_page([item("z", "2025-01-01T00:09:00.000000Z")], None)
    assert state.finish_pass(lag=2) is True, "several pages with news: catch up"
    assert state.after == "2025-01-01T00:00:08.000000Z"
    assert set(state.seen) == {"a", "z"}


def test_catch_up_passes_are_bounded() -> None:
    state = PullState()
    for round_ in range(MAX_CATCHUP + 1):
        state.take_page([item(f"a{round_}", f"2025-01-01T00:00:0{round_}.000000Z")], "c")
        state.take_page([item(f"b{round_}", f"2025-01-01T00:00:0{round_}.000000Z")], None)
        again = state.finish_pass(lag=1)
        assert again is (round_ < MAX_CATCHUP)
    assert state.rounds == 0


def test_a_huge_window_raises_the_boundary_but_never_past_the_first_page(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("connectors.openfn.collections.SEEN_CAP", 10)
    state = PullState()
    page = [item(f"k{i:02d}", f"2025-01-01T00:00:{i:02d}.000000Z") for i in range(30)]
    state.take_page(page, None)
    state.finish_pass(lag=3600)
    assert len(state.seen) == 10 and state.after == "2025-01-01T00:00:20.000000Z"
    assert SEEN_CAP == 20_000


def test_an_underscore_in_the_pattern_is_literal_for_the_connector() -> None:
    matcher = key_matcher("dc_result:*")
    assert matcher is not None
    assert (
        matcher.match("dc_result:1") and not matcher.match("dcXresult:1") and not matcher.match("dc:result:1")
    )
    assert key_matcher(None) is None


def test_item_values_become_records_without_bookkeeping_in_the_data() -> None:
    flat = to_record(
        item("k", "2025-01-01T00:00:00.000001Z", {"entityGuid": "g", "entityName": "hh", "s": 1}), None
    )
    assert flat is not None and (flat.ref, flat.entity_name, flat.data) == ("g", "hh", {"s": 1})
    assert flat.version == flat.updated_at == "2025-01-01T00:00:00.000001Z" and flat.external_id == "k"
    event = {"guid": "e", "entityGuid": "g", "type": "update-individual", "data": {"entityName": "i", "x": 2}}
    shaped = to_record(item("k", "2025-01-01T00:00:00.000001Z", event), "fallback")
    assert shaped is not None and (shaped.ref, shaped.entity_name, shaped.data) == ("g", "i", {"x": 2})
    gone = to_record(item("k", "2025-01-01T00:00:00Z", {**event, "type": "delete-entity"}), None)
    assert gone is not None and gone.deleted
    assert to_record(item("k", "2025-01-01T00:00:00Z", {"x": 1}), "individual").entity_name == "individual"  # type: ignore[union-attr]
    assert to_record({"key": "k", "value": "not json", "updated": "2025-01-01T00:00:00Z"}, None) is None
    assert to_record({"key": "k", "value": "[1]", "updated": "2025-01-01T00:00:00Z"}, None) is None


# -- against the fake ---------------------------------------------------------------------------------------


def test_pages_are_followed_to_the_end_and_a_second_pull_finds_nothing(
    make_connector: Make, lightning: FakeLightning
) -> None:
    for i in range(35):
        put(lightning, f"dc:result:{i:03d}", {"entityGuid": f"g{i}", "n": i})
    put(lightning, "other:1", {"n": -1})
    connector = make_connector()
    records, cursor, pages = drain(connector, None, 10)
    assert pages >= 4
    assert sorted(r.data["n"] for r in records) == list(range(35))
    again, _, _ = drain(connector, cursor, 10)
    assert again == []


def test_an_update_behind_the_cursor_is_caught_in_the_same_run(
    make_connector: Make, lightning: FakeLightning
) -> None:
    for i in range(30):
        put(lightning, f"dc:result:{i:03d}", {"n": i, "v": 0})

    def edit_behind(sequence: int) -> None:
        if sequence == 3:  # the preflight read, then two pages: items 0..19 are behind the cursor
            put(lightning, "dc:result:005", {"n": 5, "v": 1})
            put(lightning, "dc:result:025", {"n": 25, "v": 1})

    lightning.on_collection_list = edit_behind
    connector = make_connector()
    records, cursor, _ = drain(connector, None, 10)
    states = sorted((r.data["n"], r.data["v"]) for r in records)
    assert (5, 1) in states and (25, 1) in states
    assert len(states) == len(set(states)), "no item state twice"
    assert states.count((5, 0)) == 1
    lightning.on_collection_list = None
    assert drain(connector, cursor, 10)[0] == []


def test_items_sharing_a_timestamp_across_pages_and_passes_arrive_once(
    make_connector: Make, lightning: FakeLightning
) -> None:
    lightning.clock.freeze("2025-06-01T12:00:00.000000Z")
    for i in range(25):
        put(lightning, f"dc:result:{i:03d}", {"n": i})
    connector = make_connector(lag_seconds=0)
    records, cursor, _ = drain(connector, None, 10)
    assert sorted(r.data["n"] for r in records) == list(range(25))
    for i in range(25, 28):  # same microsecond as the boundary
        put(lightning, f"dc:result:{i:03d}", {"n": i})
    more, cursor, _ = drain(connector, cursor, 10)
    assert sorted(r.data["n"] for r in more) == [25, 26, 27]
    assert drain(connector, cursor, 10)[0] == []


def test_keys_selected_only_by_the_underscore_wildcard_are_skipped(
    make_connector: Make, lightning: FakeLightning
) -> None:
    put(lightning, "dc_r:1", {"n": 1})
    put(lightning, "dcXr:2", {"n": 2})
    records, _, _ = drain(make_connector(key_pattern="dc_r:*"), None, 10)
    assert [r.external_id for r in records] == ["dc_r:1"]


def test_a_cut_answer_or_a_5xx_is_transient_and_the_cursor_does_not_move(
    make_connector: Make, lightning: FakeLightning
) -> None:
    for i in range(150):
        put(lightning, f"dc:result:{i:03d}", {"n": i})
    connector = make_connector()
    lightning.faults.add(Fault("truncate_stream", route="GET /collections/*"))
    with pytest.raises(TransientError, match="unreadable answer"):
        connector.pull(None, 200)
    lightning.faults.add(Fault("status", route="GET /collections/*", status=502))
    with pytest.raises(TransientError, match="HTTP 502"):
        connector.pull(None, 200)
    assert len(connector.pull(None, 200).records) == 150

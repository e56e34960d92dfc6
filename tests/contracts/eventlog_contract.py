"""What every event log backend must do, as scenarios an operator would recognise.

A backend's test module subclasses :class:`EventLogContract` and provides a ``make_event_log`` fixture:
a callable that opens the backend on the *same* storage each time it is called (so a test can close the
log and reopen it, as a restarted dcsync would). Every log it returns is closed by the suite.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from connector_core import entities
from connector_core.eventlog.base import CASCADE_DELETE, MEMBERSHIP_EVENTS, EventLog, EventTouch
from connector_core.events import FormSubmission

from .scenarios import as_docs, event, fold_state, group_log, mobile_log, ts

MakeEventLog = Callable[[], EventLog]


class EventLogContract:
    @pytest.fixture
    def open_log(self, make_event_log: MakeEventLog) -> Iterator[MakeEventLog]:
        opened: list[EventLog] = []

        def open_() -> EventLog:
            log = make_event_log()
            opened.append(log)
            return log

        yield open_
        for log in opened:
            log.close()

    @pytest.fixture
    def log(self, open_log: MakeEventLog) -> EventLog:
        return open_log()

    # -- a new log ---------------------------------------------------------------------------------

    def test_a_new_log_is_empty(self, log: EventLog) -> None:
        assert isinstance(log, EventLog)
        assert log.head() is None
        assert log.count() == 0
        page = log.read(None, 10)
        assert page.events == [] and page.cursor is None and page.at_end
        assert list(log.iter_events()) == []
        assert list(log.iter_entities()) == []
        stats = log.stats()
        assert stats["events"] == 0 and stats["issues"] == 0 and stats["head"] is None

    def test_events_read_back_exactly_as_appended(self, log: EventLog) -> None:
        sent = event(
            "create-individual",
            "p-1",
            {
                "name": "Zoë O'Brien",
                "nested": {"a": [1, 2.5, None, True], "b": {"c": "ü"}},
                "externalId": 42,
            },
            user_id="external-openspp",
            sync_level=2,
            at="2025-07-01 08:00:00",
        )
        log.append([sent])
        (back,) = log.read(None, 10).events
        assert back == sent  # key order inside data may differ (PostgreSQL JSONB reorders keys)

    # -- idempotent append -------------------------------------------------------------------------

    def test_reappending_a_batch_stores_nothing_twice(self, log: EventLog) -> None:
        batch = mobile_log()
        first = log.append(batch)
        assert first.new == len(batch) and first.duplicates == 0
        assert first.new_guids == [e.guid for e in batch]

        again = log.append(batch)
        assert again.new == 0 and again.duplicates == len(batch)
        assert log.count() == len(batch)
        assert [e.guid for e in log.iter_events()] == [e.guid for e in batch]

    def test_duplicates_within_one_call_are_counted_and_the_first_copy_kept(self, log: EventLog) -> None:
        a = event("create-individual", "p-a", {"name": "A"}, guid="dup-a")
        b = event("create-individual", "p-b", {"name": "B"}, guid="dup-b")
        a_again = event("create-individual", "p-a", {"name": "A, resent"}, guid="dup-a")
        result = log.append([a, b, a_again, b])
        assert result.new_guids == ["dup-a", "dup-b"]
        assert result.duplicates == 2
        assert [e.data["name"] for e in log.iter_events()] == ["A", "B"]
        entity = log.get_entity("p-a")
        assert entity is not None and entity.version == 1 and entity.name == "A"

    def test_a_partly_known_batch_stores_only_the_new_events(self, log: EventLog) -> None:
        batch = mobile_log()
        log.append(batch[:5])
        result = log.append(batch)
        assert result.new_guids == [e.guid for e in batch[5:]]
        assert result.duplicates == 5
        assert as_docs(log.iter_entities()) == as_docs(fold_state(batch)[0])

    # -- reading by cursor -------------------------------------------------------------------------

    def test_pages_never_skip_events_with_equal_or_older_timestamps(self, log: EventLog) -> None:
        # DataCollect's own timestamp cursor returns 12 events sharing a timestamp as 10
        # (datacollect.md §2.1 b) and never returns a late event with an older timestamp (a).
        same = [event("create-individual", f"p-{i}", {"name": f"P{i}"}, at=ts(5)) for i in range(12)]
        log.append(same[:7])
        log.append(same[7:])
        late = [event("update-individual", f"p-{i}", {"seen": True}, at=ts(-60)) for i in range(4)]
        log.append(late)

        seen: list[str] = []
        cursor = None
        while True:
            page = log.read(cursor, 5)
            seen += [e.guid for e in page.events]
            cursor = page.cursor
            if page.at_end:
                break
        assert seen == [e.guid for e in same + late]

    def test_a_page_reports_whether_more_events_follow(self, log: EventLog) -> None:
        log.append([event("create-individual", f"p-{i}", {"name": "x"}) for i in range(4)])
        first = log.read(None, 2)
        assert len(first.events) == 2 and not first.at_end
        second = log.read(first.cursor, 2)
        assert len(second.events) == 2 and second.at_end
        assert second.cursor == log.head()
        empty = log.read(second.cursor, 2)
        assert empty.events == [] and empty.at_end and empty.cursor == second.cursor

    def test_a_reader_resumes_from_its_cursor_after_a_restart(self, open_log: MakeEventLog) -> None:
        batch = mobile_log()
        log = open_log()
        log.append(batch)
        cursor = log.read(None, 4).cursor
        log.close()

        reopened = open_log()
        assert [e.guid for e in reopened.iter_events(cursor, page_size=3)] == [e.guid for e in batch[4:]]
        head = reopened.head()
        later = [event("create-individual", "p-late", {"name": "Late"}, at=ts(-999))]
        reopened.append(later)
        assert [e.guid for e in reopened.iter_events(head)] == [later[0].guid]

    def test_count_after_a_cursor_is_the_lag(self, log: EventLog) -> None:
        batch = mobile_log()
        log.append(batch)
        assert log.count() == log.count(None) == len(batch)
        cursor = log.read(None, 3).cursor
        assert log.count(cursor) == len(batch) - 3
        assert log.count(log.head()) == 0
        assert log.stats()["events"] == len(batch)
        assert log.stats()["head"] == log.head()

    def test_iter_events_streams_every_page(self, log: EventLog) -> None:
        batch = mobile_log() + group_log()
        log.append(batch)
        assert [e.guid for e in log.iter_events(page_size=2)] == [e.guid for e in batch]
        assert list(log.iter_events(log.head(), page_size=2)) == []

    def test_touches_page_exactly_like_events_and_carry_only_membership_answers(self, log: EventLog) -> None:
        batch = mobile_log() + group_log() + [event("remove-member", "g-smith", {"memberId": "p-mary"})]
        log.append(batch)
        cursor: str | None = None
        for _ in range(len(batch)):
            events, touches = log.read(cursor, 3), log.read_touches(cursor, 3)
            assert (touches.cursor, touches.at_end) == (events.cursor, events.at_end)
            own = [t for t in touches.touches if t.type != CASCADE_DELETE]  # see the test below
            assert own == [EventTouch.of(e) for e in events.events]
            cursor = events.cursor
            if events.at_end:
                break
        assert cursor == log.head()
        touches = [t for t in log.read_touches(None, len(batch)).touches if t.type != CASCADE_DELETE]
        assert [t.data is not None for t in touches] == [e.type in MEMBERSHIP_EVENTS for e in batch]
        assert touches[-1].data == {"memberId": "p-mary"}
        assert log.read_touches(log.head(), 5).touches == []

    def test_a_delete_is_followed_by_a_touch_of_each_entity_it_cascaded_to(self, log: EventLog) -> None:
        log.append(
            [
                event(
                    "create-group",
                    "g-1",
                    {"name": "Smith", "members": [{"guid": "m-1", "name": "A", "type": "individual"}]},
                ),
                event("create-individual", "p-9", {"name": "Other"}),
            ]
        )
        before = log.head()
        log.append(
            [event("delete-entity", "g-1", {"reason": "twice"}), event("update-individual", "p-9", {"x": 1})]
        )
        touches = log.read_touches(before, 10).touches
        assert [(t.entity_guid, t.type) for t in touches] == [
            ("g-1", "delete-entity"),
            ("m-1", CASCADE_DELETE),
            ("p-9", "update-individual"),
        ]
        assert touches[1].user_id == touches[0].user_id and touches[1].data is None
        # a page that ends on the delete still carries its cascade; the next page does not repeat it
        first = log.read_touches(before, 1)
        assert [t.entity_guid for t in first.touches] == ["g-1", "m-1"]
        assert [t.entity_guid for t in log.read_touches(first.cursor, 5).touches] == ["p-9"]

    @pytest.mark.parametrize("bad", ["not-a-cursor", "", "1.5", "-1", "0x10"])
    def test_a_malformed_cursor_is_refused_clearly(self, log: EventLog, bad: str) -> None:
        log.append(mobile_log())
        with pytest.raises(ValueError, match="cursor"):
            log.read(bad, 10)
        with pytest.raises(ValueError, match="cursor"):
            log.read_touches(bad, 10)
        with pytest.raises(ValueError, match="cursor"):
            log.count(bad)
        with pytest.raises(ValueError, match="cursor"):
            next(iter(log.iter_events(bad)))

    # -- the entity table --------------------------------------------------------------------------

    def test_mobile_households_and_individuals_match_a_fresh_fold(self, log: EventLog) -> None:
        batch = mobile_log()
        for start in range(0, len(batch), 3):  # a sync's worth at a time
            log.append(batch[start : start + 3])
        expected, issues = fold_state(batch)
        assert issues == []
        assert as_docs(log.iter_entities()) == as_docs(expected)

        jane = log.get_entity("hh-doe-p0")
        assert jane is not None
        assert jane.parent_guid == "hh-doe" and jane.entity_name == "individual"
        assert jane.version == 2 and jane.data["phone_number"] == "+100"
        assert jane.data["training_records"] == [{"training_type": "agri"}]  # shallow merge kept it
        roe = log.get_entity("hh-roe")
        assert roe is not None and roe.external_id == 101 and roe.name == "Roe HH"

        stats = log.stats()
        assert stats["entities"] == 9
        assert stats["entities_by_type"] == {"individual": 9}
        assert stats["entities_by_name"] == {"apg": 1, "household": 2, "individual": 6}

    def test_groups_members_and_cascade_delete_match_a_fresh_fold(self, log: EventLog) -> None:
        batch = group_log()
        for e in batch:  # one event per call: every cascade reads state written by earlier calls
            log.append([e])
        expected, _ = fold_state(batch)
        assert as_docs(log.iter_entities()) == as_docs(expected)
        # delete-entity took the Smiths and their current members; Mary had been removed first
        # and stays; removing the subgroup took it and Carl with it.
        assert sorted(e.guid for e in log.iter_entities()) == ["g-village", "p-mary"]
        village = log.get_entity("g-village")
        assert village is not None and village.member_ids == [] and village.version == 2

    def test_the_same_log_in_one_call_gives_the_same_entities(self, log: EventLog) -> None:
        batch = mobile_log() + group_log()
        log.append(batch)
        assert as_docs(log.iter_entities()) == as_docs(fold_state(batch)[0])

    def test_get_entities_leaves_out_unknown_guids(self, log: EventLog) -> None:
        log.append(mobile_log())
        found = log.get_entities(["hh-doe", "nobody", "hh-roe-p2", "hh-doe"])
        assert sorted(found) == ["hh-doe", "hh-roe-p2"]
        assert found["hh-doe"].data["household_size"] == 3
        assert log.get_entity("nobody") is None
        assert log.get_entities([]) == {}

    def test_iter_entities_pages_through_every_entity_once(self, log: EventLog) -> None:
        log.append(event("create-individual", f"p-{i:03d}", {"name": str(i)}) for i in range(25))
        guids = [e.guid for e in log.iter_entities(page_size=4)]
        assert guids == sorted(f"p-{i:03d}" for i in range(25))

    def test_entities_are_found_by_guid_or_by_a_bounded_name_search(self, log: EventLog) -> None:
        names = ["Ana Lima", "Anabel Ruiz", "Bo 50%_off", "Zoé Ånström"]
        log.append(event("create-individual", f"p-{i}", {"name": n}) for i, n in enumerate(names))
        search = log.search_entities  # type: ignore[attr-defined]
        assert [e.guid for e in search("ana")] == ["p-0", "p-1"]
        assert [e.guid for e in search("ana", limit=1)] == ["p-0"]
        assert [e.guid for e in search("p-2")] == ["p-2"]  # by guid (also in its own document)
        assert [e.guid for e in search("50%_")] == ["p-2"] and search("0%o") == [] and search("  ") == []
        assert [e.guid for e in search("ånström")] == ["p-3"] or [e.guid for e in search("ström")] == ["p-3"]

    def test_children_of_finds_the_entities_whose_parent_guid_names_it_as_they_are_now(
        self, log: EventLog
    ) -> None:
        log.append(
            [
                event("create-individual", "hh-1", {"entityName": "household"}),
                event("create-individual", "p-a", {"parentGuid": "hh-1"}),
                event("create-individual", "p-b", {"parentGuid": "hh-1"}),
                event("create-individual", "p-c", {"parentGuid": "hh-2"}),
                event("update-individual", "p-b", {"parentGuid": "hh-2"}),  # moved out
            ]
        )
        assert [e.guid for e in log.children_of("hh-1")] == ["p-a"]
        assert [e.guid for e in log.children_of("hh-2")] == ["p-b", "p-c"]  # in the order they appeared
        assert log.children_of("p-a") == [] and log.children_of("nobody") == []

    # -- events that cannot be applied -------------------------------------------------------------

    def test_inapplicable_events_are_stored_and_reported(self, open_log: MakeEventLog) -> None:
        log = open_log()
        lost = event("add-member", "g-nowhere", {"members": [{"guid": "p-lost"}]})
        alien = event("external-pull", "x-1", {"id": "ext-1"})
        fine = event("create-individual", "p-ok", {"name": "OK"})
        result = log.append([lost, alien, fine])

        assert result.new == 3
        assert [(i.event_guid, i.entity_guid) for i in result.issues] == [
            (lost.guid, "g-nowhere"),
            (alien.guid, "x-1"),
        ]
        assert "INVALID_GROUP" in result.issues[0].reason
        assert "external-pull" in result.issues[1].reason
        assert [e.guid for e in log.iter_events()] == [lost.guid, alien.guid, fine.guid]
        assert sorted(e.guid for e in log.iter_entities()) == ["p-ok"]
        assert log.stats()["issues"] == 2

        assert log.append([lost, alien]).issues == []  # a duplicate is not folded again
        log.close()
        assert open_log().stats()["issues"] == 2

    # -- atomicity ---------------------------------------------------------------------------------

    def test_a_stream_that_fails_midway_leaves_nothing_written(self, log: EventLog) -> None:
        log.append(mobile_log())
        before = (log.head(), log.count(), as_docs(log.iter_entities()), log.stats())

        def stream() -> Iterator[FormSubmission]:
            for i in range(2500):  # more than one internal chunk has been written when it fails
                yield event("create-individual", f"bulk-{i}", {"name": str(i)})
            raise ConnectionError("upstream went away")

        with pytest.raises(ConnectionError):
            log.append(stream())
        assert (log.head(), log.count(), as_docs(log.iter_entities()), log.stats()) == before

    def test_a_fold_that_crashes_midway_leaves_nothing_written(
        self, log: EventLog, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        log.append(mobile_log()[:3])
        before = (log.head(), log.count(), as_docs(log.iter_entities()))
        batch = mobile_log()[3:] + group_log()
        poison = batch[-3].guid
        real_apply = entities._apply

        def crashing_apply(view: object, ev: FormSubmission) -> None:
            if ev.guid == poison:
                raise RuntimeError("simulated crash inside the fold")
            real_apply(view, ev)  # type: ignore[arg-type]

        monkeypatch.setattr(entities, "_apply", crashing_apply)
        with pytest.raises(RuntimeError, match="simulated crash"):
            log.append(batch)
        assert (log.head(), log.count(), as_docs(log.iter_entities())) == before

        monkeypatch.undo()
        assert log.append(batch).new == len(batch)  # nothing half-written blocks a retry

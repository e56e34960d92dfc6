"""The fold (DataCollect's applier rules, reference §1.5), one rule per test, then its properties."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from contracts.scenarios import as_docs, event, fold_in_pages, fold_state, materialise, ts
from hypothesis import given, settings
from hypothesis import strategies as st

from connector_core.entities import Entity, fold
from connector_core.events import FormSubmission


def state_after(*events: FormSubmission, base: dict[str, Entity] | None = None) -> dict[str, Entity]:
    state, issues = fold_state(events, base)
    assert issues == [], issues
    return state


def only_issue(*events: FormSubmission, base: dict[str, Entity] | None = None) -> str:
    state, issues = fold_state(events, base)
    assert len(issues) == 1
    return issues[0].reason


# -- create/update-individual -------------------------------------------------------------------


def test_create_individual_starts_at_version_1_with_the_event_time() -> None:
    state = state_after(event("create-individual", "p-1", {"first_name": "Jane"}, at=ts(3)))
    jane = state["p-1"]
    assert jane.type == "individual" and jane.version == 1
    assert jane.data == {"name": "Unnamed Individual", "first_name": "Jane"}
    assert jane.name == "Unnamed Individual"
    assert jane.last_updated == ts(3)
    assert jane.to_json()["id"] == jane.to_json()["guid"] == "p-1"


def test_update_merges_shallowly_and_bumps_the_version() -> None:
    state = state_after(
        event(
            "create-individual",
            "p-1",
            {"name": "Jane", "phone": "+1", "address": {"city": "A", "zip": "1"}},
        ),
        event("update-individual", "p-1", {"name": "Jane D", "address": {"city": "B"}}),
    )
    jane = state["p-1"]
    assert jane.version == 2 and jane.name == "Jane D"
    assert jane.data["phone"] == "+1"  # no field deletion
    assert jane.data["address"] == {"city": "B"}  # nested objects replaced whole


def test_an_update_of_an_unknown_guid_creates_it() -> None:
    state = state_after(event("update-individual", "p-9", {"name": "New"}))
    assert state["p-9"].version == 1 and state["p-9"].name == "New"


@pytest.mark.parametrize(("value", "kept"), [(101, 101), ("ext-7", "ext-7"), (0, None), ("", None)])
def test_a_truthy_external_id_is_copied_to_the_entity(value: Any, kept: Any) -> None:
    state = state_after(event("create-individual", "p-1", {"name": "J", "externalId": value}))
    assert state["p-1"].external_id == kept


# -- create/update-group ------------------------------------------------------------------------


def test_create_group_creates_its_members_and_subgroups() -> None:
    state = state_after(
        event(
            "create-group",
            "g-1",
            {
                "headOfHousehold": "John",
                "members": [
                    {"guid": "p-john", "name": "John", "type": "individual"},
                    {"guid": "g-sub", "name": "Sub", "type": "group"},
                ],
            },
        )
    )
    group = state["g-1"]
    assert group.type == "group" and group.version == 1 and group.name == "Unnamed Group"
    assert group.member_ids == ["p-john", "g-sub"]
    assert "members" not in group.data
    assert state["p-john"].type == "individual"
    assert state["p-john"].data == {"name": "John", "type": "individual"}  # guid key removed
    assert state["g-sub"].type == "group" and state["g-sub"].data["type"] == "group"


def test_update_group_unions_members_and_keeps_its_name() -> None:
    state = state_after(
        event("create-group", "g-1", {"name": "Smiths", "members": [{"guid": "p-1"}]}),
        event("update-group", "g-1", {"size": 2, "members": [{"guid": "p-1"}, {"guid": "p-2"}]}),
    )
    group = state["g-1"]
    assert group.name == "Smiths" and group.version == 2
    assert group.member_ids == ["p-1", "p-2"]
    assert group.data == {"name": "Smiths", "size": 2}
    assert state["p-1"].version == 2  # the member was upserted again


def test_a_member_without_guid_fails_the_whole_event() -> None:
    reason = only_issue(
        event("create-group", "g-1", {"name": "G", "members": [{"guid": "p-1"}, {"name": "?"}]})
    )
    assert "guid" in reason
    assert fold_state([event("create-group", "g-1", {"members": [{"name": "?"}]})])[0] == {}


# -- add-member ---------------------------------------------------------------------------------


def test_add_member_uses_only_the_first_member() -> None:
    state = state_after(
        event("create-group", "g-1", {"name": "G", "note": "kept"}),
        event("add-member", "g-1", {"members": [{"guid": "p-1"}, {"guid": "p-2"}]}),
    )
    assert state["g-1"].member_ids == ["p-1"] and state["g-1"].version == 2
    assert state["g-1"].data == {"name": "G", "note": "kept"}
    assert "p-2" not in state


def test_adding_an_existing_member_does_not_bump_the_group() -> None:
    state = state_after(
        event("create-group", "g-1", {"name": "G", "members": [{"guid": "p-1"}]}),
        event("add-member", "g-1", {"members": [{"guid": "p-1", "age": 3}]}),
    )
    assert state["g-1"].version == 1 and state["p-1"].data["age"] == 3


def test_add_member_can_add_a_subgroup() -> None:
    state = state_after(
        event("create-group", "g-1", {"name": "G"}),
        event("add-member", "g-1", {"members": [{"guid": "g-2", "type": "group"}]}),
    )
    assert state["g-2"].type == "group"


@pytest.mark.parametrize("target", [None, "individual"])
def test_add_member_needs_an_existing_group(target: str | None) -> None:
    base = {}
    if target:
        base["g-1"] = Entity(guid="g-1", type="individual", version=1)
    reason = only_issue(event("add-member", "g-1", {"members": [{"guid": "p-1"}]}), base=base)
    assert reason.startswith("INVALID_GROUP")


# -- remove-member ------------------------------------------------------------------------------


def test_remove_member_keeps_a_removed_individual() -> None:
    state = state_after(
        event("create-group", "g-1", {"name": "G", "members": [{"guid": "p-1"}, {"guid": "p-2"}]}),
        event("remove-member", "g-1", {"memberId": "p-1"}),
    )
    assert state["g-1"].member_ids == ["p-2"] and state["g-1"].version == 2
    assert "p-1" in state


def test_removing_a_subgroup_deletes_it_and_its_members() -> None:
    state = state_after(
        event("create-group", "g-1", {"name": "G", "members": [{"guid": "g-2", "type": "group"}]}),
        event("add-member", "g-2", {"members": [{"guid": "p-1"}]}),
        event("add-member", "g-2", {"members": [{"guid": "g-3", "type": "group"}]}),
        event("add-member", "g-3", {"members": [{"guid": "p-2"}]}),
        event("remove-member", "g-1", {"memberId": "g-2"}),
    )
    assert sorted(state) == ["g-1"]


@pytest.mark.parametrize("data", [{"reason": "no memberId"}, {"memberId": {"guid": "p-1"}}])
def test_remove_member_needs_a_member_id(data: dict[str, Any]) -> None:
    base = {"g-1": Entity(guid="g-1", type="group", version=1, member_ids=["p-1"])}
    assert only_issue(event("remove-member", "g-1", data), base=base).startswith("INVALID_MEMBER_DATA")


def test_remove_member_needs_an_existing_group() -> None:
    assert only_issue(event("remove-member", "g-1", {"memberId": "p-1"})).startswith("INVALID_GROUP")


# -- delete-entity and resolve-duplicate -----------------------------------------------------------


def test_delete_entity_cascades_through_members() -> None:
    state = state_after(
        event("create-group", "g-1", {"name": "G", "members": [{"guid": "g-2", "type": "group"}]}),
        event("add-member", "g-2", {"members": [{"guid": "p-1"}]}),
        event("create-individual", "p-other", {"name": "Other"}),
        event("delete-entity", "g-1", {"reason": "duplicate household"}),
    )
    assert sorted(state) == ["p-other"]


def test_deleting_an_unknown_entity_is_a_no_op() -> None:
    result = fold([event("delete-entity", "nobody", {"reason": "x"})])
    assert result.changed == {} and result.issues == [] and result.applied == 1


def test_a_group_that_contains_itself_is_deleted_without_looping() -> None:
    state = state_after(
        event("create-group", "g-1", {"name": "G"}),
        event("add-member", "g-1", {"members": [{"guid": "g-1", "type": "group"}]}),
        event("delete-entity", "g-1", {"reason": "x"}),
    )
    assert state == {}


@pytest.mark.parametrize(("should_delete", "left"), [(True, ["p-old"]), (False, ["p-new", "p-old"])])
def test_resolve_duplicate_deletes_the_first_pair_only_when_asked(
    should_delete: bool, left: list[str]
) -> None:
    state = state_after(
        event("create-individual", "p-old", {"name": "Jane"}),
        event("create-individual", "p-new", {"name": "Jane"}),
        event(
            "resolve-duplicate",
            "p-new",
            {
                "duplicates": [{"entityGuid": "p-new", "duplicateGuid": "p-old"}],
                "shouldDelete": should_delete,
            },
        ),
    )
    assert sorted(state) == left


# -- failures -----------------------------------------------------------------------------------


def test_an_unknown_type_is_an_issue_and_changes_nothing() -> None:
    result = fold([event("external-pull", "x-1", {"id": "ext-1"}, guid="e-x")])
    assert result.changed == {} and result.applied == 0
    (issue,) = result.issues
    assert (issue.event_guid, issue.entity_guid) == ("e-x", "x-1")
    assert issue.reason == "No event applier found for event type: external-pull"


def test_a_failed_event_leaves_no_partial_change() -> None:
    created = state_after(event("create-group", "g-1", {"name": "G", "members": [{"guid": "p-1"}]}))
    # the first member would be upserted, the second has no guid: neither the member nor the group moves
    bad = event("update-group", "g-1", {"name": "H", "members": [{"guid": "p-2"}, {"x": 1}]})
    result = fold([bad], created.get)
    assert result.changed == {} and len(result.issues) == 1


def test_the_lookup_is_never_written_to() -> None:
    base = state_after(
        event("create-group", "g-1", {"name": "G", "members": [{"guid": "p-1"}]}),
        event("create-individual", "p-2", {"name": "P", "tags": ["a"]}),
    )
    frozen = copy.deepcopy(as_docs(base))
    fold(
        [
            event("update-individual", "p-2", {"extra": 1}),
            event("add-member", "g-1", {"members": [{"guid": "p-3"}]}),
            event("remove-member", "g-1", {"memberId": "p-1"}),
            event("update-group", "g-1", {"name": "H"}),
            event("delete-entity", "g-1", {"reason": "x"}),
        ],
        base.get,
    )
    assert as_docs(base) == frozen


# -- properties ---------------------------------------------------------------------------------

GUIDS = ["a", "b", "c", "d", "e"]
guid_ = st.sampled_from(GUIDS)
scalar = st.one_of(st.integers(-3, 3), st.sampled_from(["x", "y", ""]), st.booleans(), st.none())
fields = st.dictionaries(st.sampled_from(["name", "k", "externalId", "nested"]), scalar, max_size=3)
member = st.builds(
    lambda g, kind, extra: {"guid": g, "type": kind, **extra},
    guid_,
    st.sampled_from(["individual", "group"]),
    fields,
) | st.just({"name": "no guid"})


@st.composite
def events(draw: st.DrawFn) -> FormSubmission:
    kind = draw(
        st.sampled_from(
            [
                "create-individual",
                "update-individual",
                "create-group",
                "update-group",
                "add-member",
                "remove-member",
                "delete-entity",
                "resolve-duplicate",
                "external-pull",
            ]
        )
    )
    data: dict[str, Any]
    if kind.endswith("-individual"):
        data = draw(fields)
    elif kind.endswith("-group"):
        data = draw(fields)
        if draw(st.booleans()):
            data["members"] = draw(st.lists(member, max_size=3))
    elif kind == "add-member":
        data = {"members": draw(st.lists(member, max_size=2))}
    elif kind == "remove-member":
        data = {"memberId": draw(guid_ | st.just(""))}
    elif kind == "resolve-duplicate":
        pair = {"entityGuid": draw(guid_), "duplicateGuid": draw(guid_)}
        data = {"duplicates": [pair], "shouldDelete": draw(st.booleans())}
    else:
        data = {"reason": "x"}
    data = data or {"k": 0}  # DataCollect refuses an empty data object before the fold
    return event(kind, draw(guid_), data, at=ts(draw(st.integers(0, 3))))


logs = st.lists(events(), max_size=25)
FAST = settings(max_examples=150, deadline=None)


@FAST
@given(log=logs, cuts=st.lists(st.integers(0, 25), max_size=4))
def test_folding_page_by_page_equals_folding_whole(log: list[FormSubmission], cuts: list[int]) -> None:
    whole, _ = fold_state(log)
    paged = fold_in_pages(log, [c for c in cuts if c <= len(log)])
    assert as_docs(paged) == as_docs(whole)


@FAST
@given(log=logs)
def test_folding_is_deterministic(log: list[FormSubmission]) -> None:
    first, second = fold(log), fold(log)
    assert first.issues == second.issues and first.applied == second.applied
    assert {g: e and e.to_json() for g, e in first.changed.items()} == {
        g: e and e.to_json() for g, e in second.changed.items()
    }


@FAST
@given(log=logs)
def test_events_reported_as_issues_have_no_effect(log: list[FormSubmission]) -> None:
    result = fold(log)
    failed = {i.event_guid for i in result.issues}
    assert result.applied + len(failed) == len(log)
    without, issues = fold_state([e for e in log if e.guid not in failed])
    assert issues == []
    assert as_docs(without) == as_docs(materialise({}, result.changed))


json_value = st.recursive(
    st.none() | st.booleans() | st.integers(-2, 2) | st.sampled_from(["", "a", "b", "group"]),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["guid", "type", "name", "entityGuid", "members"]), inner, max_size=3
        )
    ),
    max_leaves=8,
)
any_data = st.dictionaries(
    st.sampled_from(["members", "memberId", "duplicates", "shouldDelete", "externalId", "name"]),
    json_value,
    min_size=1,
    max_size=4,
)


@FAST
@given(
    kinds=st.lists(
        st.sampled_from(["create-group", "add-member", "remove-member", "resolve-duplicate"]), max_size=6
    ),
    datas=st.lists(any_data, min_size=6, max_size=6),
)
def test_any_json_payload_is_applied_or_reported_never_raised(
    kinds: list[str], datas: list[dict[str, Any]]
) -> None:
    log = [event(kind, "a", data) for kind, data in zip(kinds, datas, strict=False)]
    result = fold(log)  # a phone can send anything; the fold must not crash the append
    assert result.applied + len(result.issues) == len(log)

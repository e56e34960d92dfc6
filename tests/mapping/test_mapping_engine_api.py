"""The sync engine's view: select a mapping per entity, map, and dead-letter what fails with its reason."""

from __future__ import annotations

import json
from typing import Any

import jsonpath_ng.ext
import pytest
from mapping_support import SAMPLE
from pydantic import BaseModel

from connector_core.entities import fold
from connector_core.events import FormSubmission
from connector_core.mapping import (
    MapContext,
    MappingSet,
    TransformDef,
    TransformError,
    TransformRegistry,
    builtin_transforms,
    default_registry,
    identity_mapping,
    load_mapping_text,
    register_transforms,
)


def _entities() -> list[dict[str, Any]]:
    events = [FormSubmission.from_json_line(line) for line in SAMPLE.read_text().splitlines()]
    return [e.to_json() for e in fold(events).changed.values() if e is not None]


def test_entities_are_selected_by_entity_name_then_by_type():
    mappings = load_mapping_text(
        "mappings:\n"
        "  household: {fields: {name: $.data.household_name}}\n"
        "  groups: {match: {type: group}, push: {fields: {name: $.name}}}\n"
        "  members: {match: {entity_name: member, type: individual}, push: {fields: {n: $.name}}}\n"
    )
    assert mappings.entity_names == ["household", "member"]
    pick = mappings.for_entity
    assert pick({"type": "individual", "data": {"entityName": "household"}}).name == "household"
    assert pick({"type": "group", "data": {"name": "Smith Family"}}).name == "groups"
    assert pick({"type": "individual", "data": {"entityName": "apg"}}) is None
    assert pick({"type": "group", "data": {"entityName": "member"}}) is None  # type must match too
    assert mappings.for_entity_name("household").name == "household"
    assert mappings.for_entity_name("groups").name == "groups"  # by mapping name as a last resort
    assert mappings.for_entity_name("nothing") is None


def test_a_record_with_several_bad_fields_reports_all_of_them(shipped: MappingSet):
    entity = {
        "guid": "p-1",
        "type": "individual",
        "data": {
            "entityName": "individual",
            "date_of_birth": "31/12/1990",
            "gender": "f",
            "location_gps": "{}",
            "bank_details": [{"bank_name": "Bank of X"}],
        },
    }
    result = shipped.for_entity(entity).push(entity)
    assert not result.ok
    assert [e.field for e in result.errors] == [
        "given_name",
        "birthdate",
        "gender",
        "location",
        "bank_accounts[0].bank_id",
    ]
    assert result.reason.startswith("given_name: required: required value is missing (not found)")
    assert "bank_accounts[0].bank_id: int: not an integer: 'Bank of X' (value 'Bank of X')" in result.reason
    assert result.record is not None and result.record["kind"] == "individual"  # what did map


def test_a_whole_record_when_excludes_it(shipped: MappingSet):
    draft = {"guid": "h", "type": "individual", "data": {"entityName": "household", "name": "h"}}
    result = shipped.for_entity(draft).push(draft)
    assert result.record is None and result.errors == [] and result.excluded
    explained = shipped.for_entity(draft).push(draft, explain=True)
    assert explained.explanation.excluded == "when is false: $.data.household_name is present and not empty"


def test_explain_gives_the_same_record_as_the_fast_path(shipped: MappingSet):
    ctx = MapContext(link=lambda g: f"x-{g}")
    for entity in _entities():
        mapping = shipped.for_entity(entity)
        if mapping is None:
            continue
        fast = mapping.push(entity, ctx)
        slow = mapping.push(entity, ctx, explain=True)
        assert slow.record == fast.record
        assert [str(e) for e in slow.errors] == [str(e) for e in fast.errors]
        if fast.record is not None:
            traced = {t.target.split(".")[0] for t in slow.explanation.fields if t.status == "ok"}
            assert traced == set(fast.record)


def test_identity_mapping_when_a_connector_has_no_mapping_file():
    mappings = identity_mapping()
    entity = {
        "guid": "e",
        "type": "individual",
        "data": {"entityName": "individual", "parentGuid": "h", "first_name": "Jane"},
    }
    mapping = mappings.for_entity(entity)
    assert mapping is not None
    assert mapping.push(entity).record == {"first_name": "Jane"}
    assert mappings.for_entity_name("individual").pull({"first_name": "Ana"}).record == {
        "first_name": "Ana",
        "entityName": "individual",
    }
    explained = mapping.push(entity, explain=True).explanation
    assert [f.target for f in explained.fields] == ["first_name"]


def test_plain_paths_never_touch_jsonpath_and_nothing_is_parsed_per_record(monkeypatch):
    calls = []
    real_parse = jsonpath_ng.ext.parse

    def counting_parse(text: str) -> Any:
        calls.append(text)
        return real_parse(text)

    monkeypatch.setattr(jsonpath_ng.ext, "parse", counting_parse)
    mapping = load_mapping_text(
        "mappings:\n"
        "  e:\n"
        "    push:\n"
        "      fields:\n"
        "        a: $.data.first_name\n"
        "        b: $.data.docs[0].id_number\n"
        "        c: \"$.data['odd key']\"\n"
        "        d: $.data.docs[*].id_number\n"
    ).get("e")
    assert calls == ["$.data.docs[*].id_number"]  # only the wildcard needed jsonpath-ng

    def refuse(text: str) -> Any:
        raise AssertionError(f"parsed {text!r} while mapping a record")

    monkeypatch.setattr(jsonpath_ng.ext, "parse", refuse)
    monkeypatch.setattr(jsonpath_ng, "parse", refuse)
    doc = {"data": {"first_name": "J", "docs": [{"id_number": "P1"}], "odd key": 1}}
    for _ in range(3):
        assert mapping.push(doc).record == {"a": "J", "b": "P1", "c": 1, "d": ["P1"]}


# ---- plugins -------------------------------------------------------------------------------


class PrefixParams(BaseModel):
    prefix: str = "ID-"


def _add_prefix(value: Any, params: PrefixParams) -> str:
    return params.prefix + str(value)


def _drop_prefix(value: Any, params: PrefixParams) -> str:
    if not str(value).startswith(params.prefix):
        raise TransformError(f"{value!r} has no prefix {params.prefix!r}")
    return str(value)[len(params.prefix) :]


PREFIX = TransformDef(
    "prefix",
    function=_add_prefix,
    inverse=_drop_prefix,
    params=PrefixParams,
    shorthand="prefix",
    output="str",
    reversible=True,
    summary="add a prefix",
)


def _registry(*defs: TransformDef) -> TransformRegistry:
    registry = TransformRegistry(builtin_transforms())
    assert register_transforms(list(defs), registry=registry) == []
    return registry


def test_a_plugin_transform_is_usable_reversible_and_type_checked():
    registry = _registry(PREFIX)
    mapping = load_mapping_text(
        "mappings:\n  e:\n    fields:\n      ref: {path: $.data.nid, pipe: [{prefix: 'NID-'}]}\n",
        registry=registry,
    ).get("e")
    assert mapping is not None
    pushed = mapping.push({"data": {"nid": "42"}}).record
    assert pushed == {"ref": "NID-42"}
    assert mapping.pull(pushed).record == {"nid": "42", "entityName": "e"}
    (err,) = mapping.pull({"ref": "X-1"}).errors
    assert err.reason == "prefix: 'X-1' has no prefix 'NID-'"

    from connector_core.mapping import MappingError

    with pytest.raises(MappingError) as bad:
        load_mapping_text(
            "mappings: {e: {push: {fields: {r: {path: $.a, pipe: [prefix, split, upper]}}}}}\n",
            registry=registry,
        )
    assert "'upper' expects str but gets list from 'split'" in str(bad.value)


def test_a_plugin_transform_that_crashes_dead_letters_the_record_only():
    def explode(value: Any, params: Any) -> Any:
        raise KeyError("boom")

    registry = _registry(TransformDef("explode", function=explode))
    mapping = load_mapping_text(
        "mappings: {e: {push: {fields: {a: {path: $.a, pipe: [explode]}, b: $.b}}}}\n",
        registry=registry,
    ).get("e")
    result = mapping.push({"a": 1, "b": 2})
    assert result.record == {"b": 2}
    assert [(e.field, e.reason) for e in result.errors] == [("a", "explode: 'boom'")]


def test_bad_plugin_definitions_are_reported_and_skipped():
    registry = TransformRegistry(builtin_transforms())
    problems = register_transforms(
        [
            TransformDef("Bad Name", function=_add_prefix),
            TransformDef("half", function=_add_prefix, reversible=True),
            TransformDef("upper", function=_add_prefix),
            {"name": "nope", "functoin": _add_prefix},
            PREFIX,
        ],
        registry=registry,
    )
    assert problems == [
        "transform name 'Bad Name' must be lower_snake_case",
        "transform 'half' is declared reversible but has no inverse",
        "transform 'upper' is already registered",
        "not a transform definition: TransformDef.__init__() got an unexpected keyword argument 'functoin'",
    ]
    assert "prefix" in registry


def test_a_plugin_transform_with_params_is_validated():
    registry = _registry(PREFIX)
    from connector_core.mapping import MappingError

    with pytest.raises(MappingError) as bad:
        load_mapping_text(
            "mappings: {e: {push: {fields: {r: {path: $.a, pipe: [{prefix: {prefx: x}}]}}}}}\n",
            "p.yaml",
            registry=registry,
        )
    assert str(bad.value) == "p.yaml:1:64: [e.r] prefix: unknown key 'prefx' (did you mean 'prefix'?)"


def test_the_default_registry_takes_plugin_transforms():
    unique = TransformDef("test_only_reverse_text", function=lambda v, p: str(v)[::-1], output="str")
    assert register_transforms([unique]) == []
    assert "test_only_reverse_text" in default_registry()
    mapping = load_mapping_text(
        "mappings: {e: {push: {fields: {r: {path: $.a, pipe: [test_only_reverse_text]}}}}}\n"
    ).get("e")
    assert mapping.push({"a": "abc"}).record == {"r": "cba"}


def test_map_result_serialises_for_a_dead_letter(shipped: MappingSet):
    entity = {"guid": "p", "type": "individual", "data": {"entityName": "individual"}}
    result = shipped.for_entity(entity).push(entity)
    payload = json.dumps([e.to_dict() for e in result.errors])
    assert json.loads(payload) == [
        {"field": "given_name", "value": None, "reason": "required: required value is missing (not found)"}
    ]

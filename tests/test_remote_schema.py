"""The mapping against a remote's described schema (connector_core.mapping.remote_schema), offline."""

from __future__ import annotations

from pathlib import Path

from connector_core.connector import FieldSpec
from connector_core.mapping import identity_mapping, load_mapping_text
from connector_core.mapping.remote_schema import compare_schema, confirm_absent

MAPPING = """\
version: 1
lookups:
  sex: {values: {f: Female, m: Male}}
mappings:
  person:
    match: {entity_name: individual}
    fields:
      given_name: {path: $.data.first_name}
      gender: {path: $.data.sex, pipe: [{lookup: sex}]}
      age: {path: $.data.age, pipe: [int]}
      nickname: {path: $.data.nick, default: null}
      docs:
        each: $.data.docs
        drop_if_empty: true
        fields:
          kind: {path: $.kind, pipe: [{map: {values: {n: National ID, p: Passport}}}]}
          number: $.number
"""

SCHEMA = {
    "individual": {
        "given_name": FieldSpec("str", "char"),
        "gender": FieldSpec("str", "selection", choices=("Male",), choices_fix="create {value!r}"),
        "age": FieldSpec("date", "date"),
        "docs": FieldSpec(
            "list",
            "g2p.reg.id",
            fields={
                "kind": FieldSpec("str", choices=("national id",), ignore_case=True),
                "number": FieldSpec("str"),
            },
        ),
    }
}


def _problems(schema: dict[str, dict[str, FieldSpec]] = SCHEMA) -> list[str]:
    mappings = load_mapping_text(MAPPING, "m.yaml", base_dir=Path("."))
    return [str(p) for p in compare_schema(mappings, schema, remote="reg")]


def test_each_misfit_is_named_with_the_mapping_line_and_the_fix() -> None:
    assert _problems() == [
        "m.yaml:9: person: field 'gender': its lookup gives 'Female', which reg does not know (it has: "
        "'Male'); fix: create 'Female'",
        "m.yaml:10: person: field 'age': the mapping gives it an int, but reg keeps a date (date)",
        "m.yaml:11: person: field 'nickname': reg has no field 'nickname' for individual; fix: rename or "
        "remove the field in the mapping, or add the field to the remote",
        "m.yaml:16: person: field 'kind': its lookup gives 'Passport', which reg does not know (it has: "
        "'national id')",
    ]


def test_an_entity_the_remote_does_not_take_is_one_problem() -> None:
    assert _problems({"household": {}}) == [
        "m.yaml:8: person: field '*': reg takes no records of entity 'individual' (it takes: household)"
    ]


def test_the_identity_mapping_declares_nothing_to_compare() -> None:
    assert compare_schema(identity_mapping(), SCHEMA) == []


def test_a_missing_optional_field_is_fatal_only_when_an_entity_has_a_value() -> None:
    mappings = load_mapping_text(MAPPING, "m.yaml", base_dir=Path("."))
    problems = compare_schema(mappings, SCHEMA, remote="reg")
    [absent] = [p for p in problems if p.absent_optional]
    assert not absent.fatal

    def entity(guid: str, **data: object) -> dict[str, object]:
        return {"guid": guid, "type": "individual", "data": {"entityName": "individual", **data}}

    quiet = confirm_absent(problems, mappings, [entity("a"), entity("b", nick="")])
    [settled] = [p for p in quiet if p.target == "nickname"]
    assert not settled.fatal and "left out of every record" in settled.message
    loud = confirm_absent(problems, mappings, [entity("a"), entity("b", nick="Bo"), entity("c", nick="Cy")])
    [settled] = [p for p in loud if p.target == "nickname"]
    assert settled.fatal and "2 entities have a value for it (first: b)" in settled.message


def test_a_nested_target_is_checked_for_its_top_field_only() -> None:
    text = MAPPING.replace(
        "      given_name: {path: $.data.first_name}\n",
        "      given_name: {path: $.data.first_name}\n      given_name_parts.first: {const: [1]}\n",
    )
    mappings = load_mapping_text(text, "m.yaml", base_dir=Path("."))
    schema = {"individual": {**SCHEMA["individual"], "given_name_parts": FieldSpec("dict")}}
    assert not [p for p in compare_schema(mappings, schema) if p.target == "given_name_parts"]
    missing = compare_schema(mappings, SCHEMA)
    assert [p.target for p in missing if p.target == "given_name_parts"] == ["given_name_parts"]


def test_a_field_the_remote_computes_is_no_push_target() -> None:
    """Odoo drops a value sent to a non-stored computed field (``age`` on ``res.partner``, a string it
    derives from the birthdate): the mapping would lose it on every record, so the check refuses it."""
    schema = {"individual": {**SCHEMA["individual"], "age": FieldSpec("str", "char", computed=True)}}
    problems = [p for p in _problems(schema) if "'age'" in p]
    assert problems == [
        "m.yaml:10: person: field 'age': reg computes it (char): a value sent to it is dropped; "
        "fix: remove the field from the mapping"
    ]

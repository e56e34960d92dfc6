"""Each built-in transform, as a mapping author uses it: one field, one record, the value that comes out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from connector_core.mapping import MapContext, load_mapping_text
from connector_core.mapping.validate import check_text


def push_one(pipe: str, value: Any, *, tmp_path: Path | None = None, extra: str = "") -> dict[str, Any]:
    """Map ``{"data": {"v": value}}`` through ``pipe``; return ``{"record": ..., "errors": [...]}``."""
    text = (
        f"{extra}mappings:\n  e:\n    push:\n      fields:\n        out: {{path: $.data.v, pipe: {pipe}}}\n"
    )
    mapping = load_mapping_text(text, "t.yaml", base_dir=tmp_path).get("e")
    assert mapping is not None
    result = mapping.push({"guid": "g", "data": {"v": value, "other": "X", "n": None}})
    return {"record": result.record, "errors": [e.reason for e in result.errors]}


def out(pipe: str, value: Any, **kw: Any) -> Any:
    result = push_one(pipe, value, **kw)
    assert result["errors"] == [], result["errors"]
    return (result["record"] or {}).get("out", "<absent>")


def error(pipe: str, value: Any, **kw: Any) -> str:
    result = push_one(pipe, value, **kw)
    assert len(result["errors"]) == 1, result
    return str(result["errors"][0])


@pytest.mark.parametrize(
    "pipe, value, expected",
    [
        ("[str]", 4, "4"),
        ("[str]", True, "true"),
        ("[int]", "4", 4),
        ("[int]", " 4.0 ", 4),
        ("[int]", 4.0, 4),
        ("[float]", "1.5", 1.5),
        ("[bool]", "yes", True),
        ("[bool]", "No", False),
        ("[{bool: {true_values: [si], false_values: ['no']}}]", "si", True),
        ("[date]", "1990-02-03T00:00:00.000Z", "1990-02-03"),
        ("[date]", "2025-07-01 08:00:00", "2025-07-01"),
        ("[{date: '%d/%m/%Y'}]", "1990-02-03", "03/02/1990"),
        ("[{date: {input_formats: ['%d/%m/%Y'], format: '%Y-%m-%d'}}]", "03/02/1990", "1990-02-03"),
        ("[{date: {tz: Asia/Manila}}]", "1990-02-02T20:00:00.000Z", "1990-02-03"),
        ("[datetime]", "2025-07-01 08:00:00", "2025-07-01T08:00:00.000Z"),
        ("[{datetime: odoo}]", "2025-01-01T10:01:00.000Z", "2025-01-01 10:01:00"),
        ("[{datetime: {tz: Africa/Nairobi}}]", "2025-01-01T10:00:00Z", "2025-01-01T13:00:00.000+03:00"),
        (
            "[{datetime: {assume_tz: Europe/Paris}}]",
            "2025-01-01 10:00:00",
            "2025-01-01T09:00:00.000Z",
        ),
        ("[{default: unknown}]", None, "unknown"),
        ("[{default: unknown}]", "", "unknown"),
        ("[{default: {value: unknown, on_empty: false}}]", "", ""),
        ("[{null_if: [false, 'N/A']}]", False, None),
        ("[{null_if: [false, 'N/A']}]", 0, 0),
        ("[{map: {values: {f: F, m: M}}}]", "f", "F"),
        ("[{map: {values: {'1': head}}}]", 1, "head"),
        ("[{map: {values: {f: F}, fallback: U}}]", "x", "U"),
        ("[{map: {values: {f: F}, passthrough: true}}]", "x", "x"),
        ("[{map: {values: {f: F}, ignore_case: true}}]", "F", "F"),
        ("[upper]", "abc", "ABC"),
        ("[lower]", "ABC", "abc"),
        ("[title]", "jane doe", "Jane Doe"),
        ("[trim]", "  a b  ", "a b"),
        ("[{trim: {collapse: true}}]", "  a   b  ", "a b"),
        ("[{trim: '-'}]", "--a--", "a"),
        ("[split]", "a, b,,c", ["a", "b", "c"]),
        ("[{split: {sep: ';', trim: false, drop_empty: false}}]", "a; b;", ["a", " b", ""]),
        ("[{join: ' / '}]", ["a", None, "b"], "a / b"),
        ("[{split: ' '}, {join: '-'}]", "a b c", "a-b-c"),
        ("[{concat: {with: [' ', $.data.other]}}]", "v", "v X"),
        ("[{concat: {with: [$.data.other, $.data.none], sep: '|'}}]", "v", "v|X"),
        ("[{regex_extract: '([0-9]+)'}]", "ID-123-x", "123"),
        ("[{regex_extract: {pattern: '(?P<n>[0-9]+)', group: n}}]", "ID-9", "9"),
        ("[{regex_extract: '^[0-9]+$'}]", "abc", "<absent>"),
        ("[{regex_extract: {pattern: '^[0-9]+$', on_no_match: keep}}]", "abc", "abc"),
        ("[{regex_replace: {pattern: '[^0-9+]', replace: ''}}]", "+1 (555) 010", "+1555010"),
        ("[{regex_replace: {pattern: 'A', replace: 'b', ignore_case: true}}]", "aA", "bb"),
        ("[coords]", '{"coords":{"latitude":20.1,"longitude":10.2}}', {"latitude": 20.1, "longitude": 10.2}),
        ("[{coords: latitude}]", '{"coords":{"latitude":20.1,"longitude":10.2}}', 20.1),
        ("[coords]", {"latitude": "1.5", "longitude": 2}, {"latitude": 1.5, "longitude": 2.0}),
        ("[coords]", '{"coords":{"latitude":false,"longitude":false}}', "<absent>"),
        ("[{hash: {salt: s}}]", "P1", "5f4e7e4ae94d4c3f5bd4a2b3d4d8c1b2e7b1b96a2b2a7f5c2c5a5c8f1d6e8a3b"),
        ("[first]", ["a", "b"], "a"),
        ("[drop_if_empty]", "", "<absent>"),
        ("[drop_if_empty]", "x", "x"),
    ],
)
def test_builtin_transform(pipe: str, value: Any, expected: Any):
    if pipe.startswith("[{hash"):
        import hashlib

        expected = hashlib.sha256(b"s" + str(value).encode()).hexdigest()
    assert out(pipe, value) == expected


@pytest.mark.parametrize(
    "pipe, value, reason",
    [
        ("[int]", "4.5", "int: not a whole number: '4.5'"),
        ("[int]", True, "int: not an integer: True"),
        ("[float]", "abc", "float: not a number: 'abc'"),
        ("[bool]", "maybe", "bool: not a yes/no value: 'maybe'"),
        ("[date]", "2025-13-45", "date: not an ISO-8601 date: '2025-13-45'"),
        ("[required]", None, "required: required value is empty"),
        ("[{required: 'a name is needed'}]", "", "required: a name is needed"),
        ("[{map: {values: {f: F}}}]", "x", "map: 'x' is not in map and no fallback is declared"),
        ("[upper]", 5, "upper: upper expects text, got int"),
        ("[join]", "abc", "join: join expects a list, got str"),
        ("[coords]", "not json", "coords: location is not JSON: 'not json'"),
        ("[coords]", '{"x": 1}', "coords: location has no 'coords' object"),
        ("[{regex_extract: {pattern: '^[0-9]+$', on_no_match: error}}]", "a", "does not match"),
    ],
)
def test_builtin_transform_rejects(pipe: str, value: Any, reason: str):
    assert reason in error(pipe, value)


def test_required_on_an_absent_path_says_why():
    result = push_one("[required]", None)
    mapping = load_mapping_text(
        "mappings:\n  e:\n    push:\n      fields:\n        out: {path: $.data.nope, required: true}\n"
    ).get("e")
    assert mapping is not None
    (err,) = mapping.push({"data": {}}).errors
    assert (err.field, err.reason) == ("out", "required: required value is missing (not found)")
    assert result["errors"]


def test_transforms_skip_absent_and_null_values():
    assert out("[upper, int]", None) is None  # null stays null, no error
    mapping = load_mapping_text(
        "mappings:\n  e:\n    push:\n      fields:\n        out: {path: $.data.nope, pipe: [upper]}\n"
    ).get("e")
    assert mapping is not None
    assert mapping.push({"data": {}}).record == {}


def test_lookup_from_csv_and_yaml_files_with_fallback(tmp_path: Path):
    (tmp_path / "codes.csv").write_text("code,label,extra\nF,female,x\nM,male,y\n")
    (tmp_path / "kinds.yaml").write_text("'1': head\n'2': spouse\n")
    head = (
        "lookups:\n"
        "  sex: {file: codes.csv, key: label, value: code, fallback: U}\n"
        "  kind: {file: kinds.yaml}\n"
    )
    assert out("[{lookup: sex}]", "female", tmp_path=tmp_path, extra=head) == "F"
    assert out("[{lookup: sex}]", "unknown", tmp_path=tmp_path, extra=head) == "U"
    assert out("[{lookup: {table: sex, fallback: X}}]", "?", tmp_path=tmp_path, extra=head) == "X"
    assert out("[{lookup: kind}]", "2", tmp_path=tmp_path, extra=head) == "spouse"
    assert out("[{lookup: {file: codes.csv}}]", "M", tmp_path=tmp_path) == "male"
    assert "'3' is not in kind" in error("[{lookup: kind}]", "3", tmp_path=tmp_path, extra=head)


def test_lookup_file_problems_are_static_errors(tmp_path: Path):
    from connector_core.mapping import MappingError

    (tmp_path / "codes.csv").write_text("code,label\nF,female\n")
    with pytest.raises(MappingError) as err:
        load_mapping_text(
            "lookups:\n  sex: {file: codes.csv, key: nope}\n"
            "mappings: {e: {push: {fields: {x: {path: $.data.v, pipe: [{lookup: {file: gone.csv}}]}}}}}\n",
            "t.yaml",
            base_dir=tmp_path,
        )
    text = str(err.value)
    assert "t.yaml:2:31: [lookups.sex] lookup file codes.csv has no column 'nope'" in text
    assert "lookup: lookup file not found: gone.csv" in text


def test_link_and_resolve_use_the_context():
    mapping = load_mapping_text(
        "mappings:\n"
        "  household:\n"
        "    fields:\n"
        "      name: $.data.name\n"
        "  individual:\n"
        "    fields:\n"
        "      parent_ref: {path: $.data.parentGuid, pipe: [{link: household}, int]}\n"
    ).get("individual")
    assert mapping is not None
    ctx = MapContext(
        link=lambda guid: {"hh-1": "101"}.get(guid),
        resolve=lambda ext, name: {("101", "household"): "hh-1"}.get((ext, name)),
    )
    assert mapping.push({"data": {"parentGuid": "hh-1"}}, ctx).record == {"parent_ref": 101}
    assert mapping.pull({"parent_ref": 101}, ctx).record == {
        "parentGuid": "hh-1",
        "entityName": "individual",
    }
    # a parent not pushed yet: the field is absent, and the explanation says why
    result = mapping.push({"data": {"parentGuid": "hh-2"}}, ctx, explain=True)
    assert result.record == {}
    assert result.explanation is not None
    (trace,) = result.explanation.fields
    assert (trace.status, trace.reason) == ("missing", "no external id held for entity hh-2")


def test_a_link_to_an_entity_the_file_does_not_map_is_an_error():
    text = (
        "mappings:\n"
        "  household:\n"
        "    fields:\n"
        "      name: $.data.name\n"
        "  individual:\n"
        "    fields:\n"
        "      parent_ref: {path: $.data.parentGuid, pipe: [{link: houshold}]}\n"
    )
    (issue,) = check_text(text, "m.yaml")
    assert (issue.line, issue.mapping, issue.field) == (7, "individual", "parent_ref")
    assert "unknown entity 'houshold' (did you mean 'household'?)" in issue.message


def test_when_on_a_field_and_filter_on_items():
    mapping = load_mapping_text(
        "mappings:\n"
        "  e:\n"
        "    push:\n"
        "      fields:\n"
        "        phone: {path: $.data.phone, when: {path: $.data.consent, equals: yes}}\n"
        "        passports:\n"
        "          each: $.data.docs\n"
        "          filter: {path: $.id_type, in: [passport]}\n"
        "          fields: {number: $.id_number}\n"
        "        adult: {const: true, when: {not: {path: $.data.minor, equals: true}}}\n"
        "        named: {const: 1, when: {any: [{path: $.data.a}, {path: $.data.b, matches: '^x'}]}}\n"
    ).get("e")
    assert mapping is not None
    docs = [{"id_type": "passport", "id_number": "P1"}, {"id_type": "nid", "id_number": "N1"}]
    record = mapping.push({"data": {"phone": "+1", "consent": "yes", "docs": docs, "b": "xy"}}).record
    assert record == {"phone": "+1", "passports": [{"number": "P1"}], "adult": True, "named": 1}
    record = mapping.push({"data": {"phone": "+1", "consent": "no", "minor": True}}).record
    assert record == {}


def test_jsonpath_expressions_return_their_matches():
    mapping = load_mapping_text(
        "mappings:\n"
        "  e:\n"
        "    push:\n"
        "      fields:\n"
        "        numbers: {path: '$.data.docs[*].id_number', pipe: [{join: ','}]}\n"
        "        passport: {path: '$.data.docs[?(@.id_type == \"passport\")].id_number', pipe: [first]}\n"
        "        second: '$.data.docs[1].id_number'\n"
    ).get("e")
    assert mapping is not None
    docs = [{"id_type": "nid", "id_number": "N1"}, {"id_type": "passport", "id_number": "P1"}]
    assert mapping.push({"data": {"docs": docs}}).record == {
        "numbers": "N1,P1",
        "passport": "P1",
        "second": "P1",
    }


def test_templates_and_nested_targets():
    mapping = load_mapping_text(
        "mappings:\n"
        "  e:\n"
        "    push:\n"
        "      fields:\n"
        "        name.full: {template: '{$.data.first} {$.data.last}', pipe: [trim]}\n"
        "        name.braces: {template: '{{literal}} {$.data.first}'}\n"
        "        meta.deep.size: {path: $.data.size, pipe: [int]}\n"
    ).get("e")
    assert mapping is not None
    assert mapping.push({"data": {"first": "Jane", "size": "3"}}).record == {
        "name": {"full": "Jane", "braces": "{literal} Jane"},
        "meta": {"deep": {"size": 3}},
    }
    assert mapping.push({"data": {}}).record == {}

"""An integrator writes a mapping with mistakes: every one is reported at once, at its file:line:column."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from mapping_support import BAD, SHIPPED, invoke

from connector_core.mapping import MappingError, check_file, load_mapping, load_mapping_text

ISSUE_LINE = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+):(?P<col>\d+): \[(?P<scope>[^\]]+)\] (?P<msg>.+)$")


def _issues(text: str, tmp_path: Path | None = None) -> list[str]:
    try:
        load_mapping_text(text, "m.yaml", base_dir=tmp_path)
    except MappingError as exc:
        return [str(i) for i in exc.issues]
    return []


def test_five_different_mistakes_give_five_located_errors_and_exit_2():
    result = invoke("validate", BAD / "five-mistakes.yaml")

    assert result.exit_code == 2
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == 5, result.output
    parsed = [ISSUE_LINE.match(line) for line in lines]
    assert all(parsed), lines
    located = {(int(m["line"]), int(m["col"])): m["msg"] for m in parsed if m}
    # each error sits on the offending node, as the comments of the file say
    assert "lookup file not found: lookups/no-such-gender.csv" in located[(5, 11)]
    assert "'upper' is not reversible" in located[(9, 52)]
    assert "invalid path '$.data['" in located[(10, 27)]
    assert located[(13, 46)] == "unknown transform 'lowercase' (did you mean 'lower'?)"
    assert "duplicate push target 'given_name'" in located[(14, 9)]
    assert "5 errors" in result.output
    assert "Traceback" not in result.output


def test_the_shipped_mapping_is_valid():
    result = invoke("validate", SHIPPED)
    assert result.exit_code == 0, result.output
    assert "ok, 2 mappings: household (household), individual (individual)" in result.output


def test_malformed_yaml_is_one_line_with_its_position():
    result = invoke("validate", BAD / "malformed.yaml")
    assert result.exit_code == 2
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"{BAD / 'malformed.yaml'}:6:18: YAML syntax error")
    assert "Traceback" not in result.output


def test_a_missing_mapping_file_is_one_line():
    result = invoke("validate", BAD / "no-such-file.yaml")
    assert result.exit_code == 2
    assert result.stdout.strip() == f"{BAD / 'no-such-file.yaml'}: mapping file not found"


def test_unknown_key_suggests_the_right_one():
    issues = _issues("mappings:\n  individual:\n    fields:\n      given_name: {paht: $.data.first_name}\n")
    assert issues == ["m.yaml:4:20: [individual.given_name] unknown key 'paht' (did you mean 'path'?)"]


def test_type_mismatch_between_chained_transforms():
    issues = _issues(
        "mappings:\n"
        "  individual:\n"
        "    push:\n"
        "      fields:\n"
        "        tags: {path: $.data.tags, pipe: [split, upper]}\n"
        "        size: {path: $.data.household_size, pipe: [int, trim]}\n"
    )
    assert len(issues) == 2
    assert issues[0] == (
        "m.yaml:5:49: [individual.tags] type mismatch: 'upper' expects str but gets list from 'split'"
    )
    assert "'trim' expects str but gets int from 'int'" in issues[1]


def test_conflicting_nested_targets():
    issues = _issues(
        "mappings:\n"
        "  individual:\n"
        "    push:\n"
        "      fields:\n"
        "        location: {path: $.data.location_gps, pipe: [coords]}\n"
        "        location.latitude: {path: $.data.location_gps, pipe: [{coords: latitude}]}\n"
    )
    assert len(issues) == 1
    assert "m.yaml:6:9:" in issues[0]
    assert "conflicting push targets 'location.latitude' and 'location' (line 5)" in issues[0]


def test_a_reversible_field_must_be_writable_back():
    issues = _issues(
        "mappings:\n"
        "  individual:\n"
        "    fields:\n"
        "      full: {template: '{$.data.first_name} {$.data.last_name}'}\n"
        "      ref: $.guid\n"
        "      tags: $.data.tags[*]\n"
        "      gender: {path: $.data.gender, pipe: [{map: {values: {f: F, female: F}}}]}\n"
    )
    text = "\n".join(issues)
    assert "a template cannot be reversed" in text
    assert "must read $.data.<name> so pull can write it back" in text
    assert "needs a plain path of names" in text
    assert "map is not one-to-one: 'f' and 'female' both map to 'F'" in text
    assert len(issues) == 4


def test_bad_transform_parameters_point_at_the_parameter():
    issues = _issues(
        "mappings:\n"
        "  individual:\n"
        "    push:\n"
        "      fields:\n"
        "        a: {path: $.data.a, pipe: [{regex_extract: {pattern: '(unclosed'}}]}\n"
        "        b: {path: $.data.b, pipe: [{date: {formt: '%d/%m/%Y'}}]}\n"
        "        c: {path: $.data.c, pipe: [{datetime: {format: iso, tz: Mars/Olympus}}]}\n"
        "        d: {path: $.data.d, pipe: [{lookup: gendr}]}\n"
    )
    assert len(issues) == 4, issues
    assert issues[0].startswith("m.yaml:5:62: [individual.a] regex_extract: invalid regular expression")
    assert issues[1].startswith("m.yaml:6:44: [individual.b] date: unknown key 'formt'")
    assert "did you mean 'format'?" in issues[1]
    assert "m.yaml:7:" in issues[2] and "unknown time zone 'Mars/Olympus'" in issues[2]
    assert "unknown lookup table 'gendr'" in issues[3]


def test_duplicate_yaml_keys_are_reported_not_silently_overwritten():
    issues = _issues(
        "mappings:\n"
        "  individual:\n"
        "    fields:\n"
        "      given_name: $.data.first_name\n"
        "      given_name: $.data.name\n"
    )
    assert issues == ["m.yaml:5:7: duplicate key 'given_name' (first defined on line 4)"]


def test_two_mappings_selecting_one_entity_name():
    issues = _issues(
        "mappings:\n"
        "  a: {match: {entity_name: household}, fields: {name: $.data.household_name}}\n"
        "  b: {match: {entity_name: household}, fields: {name: $.data.name}}\n"
    )
    assert issues == ["m.yaml:3:3: [b] mappings 'a' and 'b' both select entity_name 'household'"]


def test_yes_and_no_stay_text_in_mapping_files():
    """YAML 1.1 would turn `yes` into True and break maps of DataCollect answers; we read YAML 1.2."""
    mapping = load_mapping_text(
        "mappings:\n"
        "  household:\n"
        "    push:\n"
        "      fields:\n"
        "        eth: {path: $.data.e, pipe: [{map: {values: {yes: 1, no: 0}}}]}\n"
    ).get("household")
    assert mapping is not None
    assert mapping.push({"data": {"e": "yes"}}).record == {"eth": 1}


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "a mapping file is a YAML mapping with a 'mappings:' key"),
        ("mappings: {}\n", "'mappings' is empty"),
        ("version: 2\nmappings: {a: {fields: {x: $.data.x}}}\n", "version: Input should be 1"),
        ("mappings: {a: {fields: {x: first_name}}}\n", "a path must start with '$'"),
        ("mappings: {a: {fields: {}}}\n", "mapping has no fields"),
        ("mappings: {a: {push: {fields: {x: {path: $.a, const: 1}}}}}\n", "exactly one source"),
        ("mappings: {a: {push: {fields: {x: {template: 'no paths'}}}}}\n", "needs at least one"),
        ("mappings: {a: {push: {fields: {x: {each: $.data.l}}}}}\n", "'each' needs 'fields'"),
        ("mappings: {a: {push: {fields: {'x..y': $.data.x}}}}\n", "invalid target 'x..y'"),
        ("mappings: {a: {push: {fields: {x: {path: $.a, pipe: [{a: 1, b: 2}]}}}}}\n", "a pipe step"),
        (
            "mappings: {a: {push: {when: {path: $.a, equals: 1, empty: true}, fields: {x: $.a}}}}\n",
            "one test per condition",
        ),
    ],
)
def test_each_kind_of_mistake_has_a_clear_message(text: str, message: str):
    issues = _issues(text)
    assert issues, f"expected an issue containing {message!r}"
    assert any(message in i for i in issues), issues
    assert all(re.match(r"^m\.yaml:\d+:\d+: ", i) for i in issues), issues


def test_check_file_returns_the_issues_instead_of_raising():
    issues = check_file(BAD / "five-mistakes.yaml")
    assert len(issues) == 5
    assert {i.mapping for i in issues} == {None, "individual"}
    assert all(i.line > 0 and i.column > 0 for i in issues)
    with pytest.raises(MappingError) as err:
        load_mapping(BAD / "five-mistakes.yaml")
    assert len(str(err.value).splitlines()) == 5

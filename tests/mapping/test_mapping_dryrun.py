"""An integrator dry-runs the shipped mapping over phone data, in a terminal and in CI."""

from __future__ import annotations

import json
from pathlib import Path

from mapping_support import BAD, EXPECTED, SAMPLE, SHIPPED, invoke

JANE = "ed74a0c3-1b2c-4d3e-9f80-7a6b5c4d3e31"
HOUSEHOLD = "3743b1e2-8f0c-4b8e-a6a1-2f8d6e9c4b10"


def test_shipped_mapping_matches_its_golden_outputs():
    result = invoke("test", SHIPPED, "--sample", SAMPLE, "--expect", EXPECTED)
    assert result.exit_code == 0, result.output
    assert f"matches {EXPECTED}" in result.output
    assert result.output.strip().splitlines()[-1].startswith("OK:")


def test_golden_values_are_what_the_forms_say():
    """The golden file is checked by hand here, so regenerating it cannot hide a regression."""
    golden = {}
    for line in EXPECTED.read_text().splitlines():
        row = json.loads(line)
        golden[row["guid"]] = row["record"]
    jane = golden[JANE]
    assert jane["given_name"] == "Jane" and jane["family_name"] == "Doe"
    assert jane["birthdate"] == "1990-02-03"
    assert jane["gender"] == "F"
    assert jane["relationship"] == "head"
    assert jane["location"] == {"latitude": 20.1, "longitude": 10.2}
    assert jane["ids"] == [
        {"type": "national_id", "value": "NID-7781", "issued": "2015-06-30", "expires": "2030-06-30"}
    ]
    assert jane["parent_ref"] == f"ext-{HOUSEHOLD}"
    assert jane["email"] == "jane.doe@example.org"  # from the later update-individual
    assert jane["phone_e164"] == "+15550100001"
    assert jane["meta"] == {"version": 2, "updated_at": "2025-01-02 08:30:00"}
    household = golden[HOUSEHOLD]
    assert household["household_size"] == 4 and household["ethnic_group"] is True
    assert household["bank_accounts"] == [
        {"bank_id": 3, "number": "111", "type": "savings", "holder": "Jane Doe"}
    ]
    # the deleted individual is gone; the unnamed household is excluded by the push `when`
    assert "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c64" not in golden
    assert golden["5c1d0e9f-2a3b-4c5d-8e7f-6a5b4c3d2e20"] is None


def test_a_changed_golden_value_fails_with_the_field_named(tmp_path: Path):
    rows = [json.loads(line) for line in EXPECTED.read_text().splitlines()]
    for row in rows:
        if row["guid"] == JANE:
            row["record"]["birthdate"] = "1990-03-02"
            row["record"]["ids"][0]["type"] = "passport"
    changed = tmp_path / "expected.jsonl"
    changed.write_text("".join(json.dumps(r) + "\n" for r in rows))

    result = invoke("test", SHIPPED, "--sample", SAMPLE, "--expect", changed)

    assert result.exit_code == 1
    assert 'expected "1990-03-02", got "1990-02-03"' in result.output
    assert "ids[0].type" in result.output
    assert result.output.strip().splitlines()[-1].startswith("FAILED:")


def test_explain_shows_the_transform_chain_of_every_field(shipped):
    result = invoke("test", SHIPPED, "--sample", SAMPLE, "--explain", JANE)
    assert result.exit_code == 0, result.output
    text = result.output[result.output.index("explain:") :]
    individual = shipped.get("individual")
    for target in individual.push_targets:
        if "[]" not in target:
            assert f"  {target} <- " in text, target
    assert '| date: "1990-02-03T00:00:00.000Z" -> "1990-02-03"' in text
    assert '| lookup {"table": "gender", "ignore_case": true}: "female" -> "F"' in text
    assert '| link {"entity": "household"}: ' in text
    assert "bank_accounts <- each $.data.bank_details" in text
    assert "= MISSING: $.data.bank_details not found in the record" in text
    assert '| regex_replace {"pattern": "[\\\\s().-]", "replace": ""}: ' in text


def test_explain_accepts_a_guid_prefix_and_rejects_an_unknown_one():
    assert invoke("test", SHIPPED, "--sample", SAMPLE, "--explain", "ed74").exit_code == 0
    result = invoke("test", SHIPPED, "--sample", SAMPLE, "--explain", "nope")
    assert result.exit_code == 2
    assert result.output.strip() == "error: --explain 'nope': no record with that key in the sample"


def test_json_output_has_records_errors_coverage_and_explanation():
    result = invoke("test", SHIPPED, "--sample", SAMPLE, "--format", "json", "--explain", JANE)
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert report["summary"]["mapped"] == 4 and report["summary"]["excluded"] == 1
    coverage = {c["mapping"]: c for c in report["coverage"]}
    assert coverage["household"]["never_produced"] == ["ids[].expires"]
    assert "data.marital_status" in coverage["individual"]["unused_sources"]
    fields = {f["target"]: f for f in report["explanation"]["fields"]}
    assert fields["birthdate"]["steps"] == [
        {"transform": "date", "input": "1990-02-03T00:00:00.000Z", "output": "1990-02-03"}
    ]
    assert fields["bank_accounts"]["status"] == "missing"


def test_record_errors_are_all_reported_and_exit_1(tmp_path: Path):
    events = tmp_path / "bad-data.jsonl"
    rows = [
        {
            "guid": "ev-1",
            "entityGuid": "p-1",
            "type": "create-individual",
            "timestamp": "2025-01-01T00:00:00.000Z",
            "userId": "admin",
            "data": {
                "entityName": "individual",
                "last_name": "Doe",
                "date_of_birth": "03/02/1990",
                "gender": "unknown",
                "document_ids": [{"id_type": "passport", "id_issuance_date": "someday"}],
            },
        },
        {
            "guid": "ev-2",
            "entityGuid": "p-2",
            "type": "create-individual",
            "timestamp": "2025-01-01T00:00:01.000Z",
            "userId": "admin",
            "data": {"entityName": "individual", "first_name": "Ok", "location_gps": "not json"},
        },
    ]
    events.write_text("".join(json.dumps(r) + "\n" for r in rows))

    result = invoke("test", SHIPPED, "--sample", events, "--format", "json")

    assert result.exit_code == 1
    errors = {(e["key"], e["field"]): e for e in json.loads(result.stdout)["errors"]}
    assert set(errors) == {
        ("p-1", "given_name"),
        ("p-1", "birthdate"),
        ("p-1", "gender"),
        ("p-1", "ids[0].issued"),
        ("p-2", "location"),
    }
    assert errors[("p-1", "given_name")]["reason"].startswith("required: required value is missing")
    assert errors[("p-1", "birthdate")] == {
        "key": "p-1",
        "field": "birthdate",
        "value": "03/02/1990",
        "reason": "date: not an ISO-8601 date: '03/02/1990'",
    }
    assert "'unknown' is not in gender and no fallback is declared" in errors[("p-1", "gender")]["reason"]


def test_a_corrupt_sample_line_is_one_line(tmp_path: Path):
    broken = tmp_path / "broken.jsonl"
    good = SAMPLE.read_text().splitlines()
    broken.write_text("\n".join([good[0], good[1], '{"guid": "x", "entityGuid": ', *good[2:]]) + "\n")

    result = invoke("test", SHIPPED, "--sample", broken)

    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"error: {broken}:3: event without guid: field '(line)': not valid JSON")
    assert "Traceback" not in result.output


def test_a_sample_event_missing_a_field_is_one_line(tmp_path: Path):
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"guid": "g1", "entityGuid": "e1", "type": "create-individual", "data": {"a": 1}}\n')
    result = invoke("test", SHIPPED, "--sample", broken)
    assert result.exit_code == 2
    assert result.output.strip() == f"error: {broken}:1: event g1: field 'timestamp': is missing"


def test_a_mapping_of_a_non_existent_entity_name_is_one_line():
    result = invoke("test", BAD / "wrong-entity.yaml", "--sample", SAMPLE)
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: mapping 'househld' (entity_name 'househld') matched nothing in the sample "
        "(entity names in the sample: apg, household, individual; did you mean 'household'?)"
    ]


def test_asking_for_an_entity_name_without_a_mapping_is_one_line():
    result = invoke("test", SHIPPED, "--sample", SAMPLE, "--entity", "hosehold")
    assert result.exit_code == 2
    assert result.output.strip() == (
        f"error: {SHIPPED} has no mapping for entity name 'hosehold' (entity names: household, individual)"
    )


def test_an_invalid_mapping_stops_the_dry_run_with_exit_2():
    result = invoke("test", BAD / "malformed.yaml", "--sample", SAMPLE)
    assert result.exit_code == 2
    assert "YAML syntax error" in result.output


def test_only_one_entity_name(tmp_path: Path):
    result = invoke("test", SHIPPED, "--sample", SAMPLE, "--entity", "household", "--format", "json")
    assert result.exit_code == 0
    records = json.loads(result.stdout)["records"]
    assert {r["mapping"] for r in records} == {"household"}


def test_pull_dry_run_over_external_records(tmp_path: Path):
    records = tmp_path / "registry.jsonl"
    household = {
        "entity_name": "household",
        "external_id": "101",
        "data": {"name": "Lima HH", "household_size": 3, "ethnic_group": False},
    }
    records.write_text(
        json.dumps(household)
        + "\n"
        + json.dumps(
            {
                "entity_name": "individual",
                "external_id": "42",
                "data": {
                    "given_name": "Ana",
                    "family_name": "Lima",
                    "birthdate": "1985-07-09",
                    "gender": "F",
                    "relationship": "spouse",
                    "parent_ref": f"ext-{HOUSEHOLD}",
                    "email": "ANA@EXAMPLE.ORG ",
                    "ids": [{"type": "passport", "value": "P9", "note": "seen by the registrar"}],
                    "score": 7,
                },
            }
        )
        + "\n"
    )
    result = invoke("test", SHIPPED, "--sample", records, "--direction", "pull", "--format", "json")
    # fields inverted from push are not typed paths: a remote record need not carry them all back
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    first, row = report["records"]
    coverage = {c["mapping"]: c for c in report["coverage"]}
    assert coverage["individual"]["unused_sources"] == ["ids[].note", "score"]
    assert coverage["individual"]["unmatched_sources"] == []
    assert first["record"] == {
        "household_name": "Lima HH",
        "household_size": 3,
        "belongs_to_ethnic_group": "no",
        "name": "Lima HH",
        "entityName": "household",
    }
    assert row["key"] == "42"
    assert row["record"] == {
        "first_name": "Ana",
        "last_name": "Lima",
        "date_of_birth": "1985-07-09T00:00:00.000Z",
        "gender": "female",
        "relationship": "2",
        "parentGuid": HOUSEHOLD,
        "name": "Ana Lima",
        "email_address": "ana@example.org",
        "document_ids": [{"id_type": "passport", "id_number": "P9"}],
        "entityName": "individual",
    }


def test_pull_refuses_an_event_file():
    result = invoke("test", SHIPPED, "--sample", SAMPLE, "--direction", "pull")
    assert result.exit_code == 2
    assert "this is an event; --direction pull reads external records" in result.output


def test_write_expected_produces_a_golden_that_passes(tmp_path: Path):
    golden = tmp_path / "golden.jsonl"
    assert invoke("test", SHIPPED, "--sample", SAMPLE, "--write-expected", golden).exit_code == 0
    assert golden.read_text() == EXPECTED.read_text()


def test_links_file_replaces_the_simulated_links(tmp_path: Path):
    links = tmp_path / "links.json"
    links.write_text(json.dumps({HOUSEHOLD: "res.partner,101"}))
    result = invoke("test", SHIPPED, "--sample", SAMPLE, "--links", links, "--format", "json")
    records = {r["key"]: r["record"] for r in json.loads(result.stdout)["records"]}
    assert records[JANE]["parent_ref"] == "res.partner,101"
    assert "parent_ref" not in records[HOUSEHOLD]  # its apg parent holds no link

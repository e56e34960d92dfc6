"""The shipped ``mappings/openfn.yaml``: its golden outputs both ways, and a mapped-mode round trip."""

from __future__ import annotations

import json
from collections.abc import Callable

from openfn_support import FAST_RETRY, MAPPING, SAMPLES
from typer.testing import CliRunner

from connector_core.events import FormSubmission
from connector_core.mapping.cli import app as mapping_app
from connector_core.project import Project
from connector_core.sync.runner import run_connector
from connectors.openfn.fake import FakeLightning
from connectors.openfn.fake.seed import RESULTS_COLLECTION

EVENTS = SAMPLES / "datacollect-events.jsonl"
PUSH_GOLDEN = SAMPLES / "openfn-push-expected.jsonl"
RESULTS = SAMPLES / "openfn-results.jsonl"
PULL_GOLDEN = SAMPLES / "openfn-pull-expected.jsonl"
LINKS = SAMPLES / "links.json"
HOUSEHOLD = "3743b1e2-8f0c-4b8e-a6a1-2f8d6e9c4b10"
JANE = "ed74a0c3-1b2c-4d3e-9f80-7a6b5c4d3e31"
JOHN = "d32c5e7a-9b1f-4c3d-8e2a-6f4b0c9d1e52"


def mapping(*args: object):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(mapping_app, [str(a) for a in args], env={"COLUMNS": "200"})


def golden(path) -> dict[str, object]:  # type: ignore[no-untyped-def]
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return {row.get("guid") or row.get("key"): row["record"] for row in rows}


def test_the_mapping_is_valid_and_matches_its_golden_outputs_both_ways() -> None:
    assert mapping("validate", MAPPING).exit_code == 0
    push = mapping("test", MAPPING, "--sample", EVENTS, "--links", LINKS, "--expect", PUSH_GOLDEN)
    assert push.exit_code == 0, push.output
    assert f"matches {PUSH_GOLDEN}" in push.output
    pull = mapping("test", MAPPING, "--direction", "pull", "--sample", RESULTS, "--expect", PULL_GOLDEN)
    assert pull.exit_code == 0, pull.output
    assert f"matches {PULL_GOLDEN}" in pull.output


def test_golden_push_values_are_what_the_forms_say() -> None:
    """Checked by hand, so regenerating the golden file cannot hide a regression."""
    records = golden(PUSH_GOLDEN)
    jane = records[JANE]
    assert isinstance(jane, dict)
    assert (jane["given_name"], jane["family_name"], jane["full_name"]) == ("Jane", "Doe", "Jane Doe")
    assert (jane["sex"], jane["birth_date"], jane["national_id"]) == ("F", "1990-02-03", "NID-7781")
    assert jane["email"] == "jane.doe@example.org" and jane["dc_version"] == 2
    assert jane["household_ref"] == HOUSEHOLD, "an OpenFn external id is the entity guid"
    household = records[HOUSEHOLD]
    assert isinstance(household, dict)
    assert (household["name"], household["size"], household["ethnic_minority"]) == ("Doe HH", 4, True)
    assert household["location"] == {"latitude": 20.1, "longitude": 10.2}
    assert records["5c1d0e9f-2a3b-4c5d-8e7f-6a5b4c3d2e20"] is None, "a household without a name is not sent"
    assert "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c64" not in records, "the deleted individual is gone"


def test_golden_pull_values_put_results_beside_the_form_answers() -> None:
    records = golden(PULL_GOLDEN)
    john = records[f"dc:result:{JOHN}"]
    assert isinstance(john, dict)
    assert john["openfn_status"] == "failed" and john["openfn_message"] == "phone number required"
    assert john["first_name"] == "Johnny" and john["phone_number"] == "+1 555 0199", "corrections flow back"
    household = records[f"dc:result:{HOUSEHOLD}"]
    assert isinstance(household, dict)
    assert "openfn_message" not in household, "an empty message is not written"


def test_mapped_mode_round_trip_through_the_fake(
    make_project: Callable[..., Project], lightning: FakeLightning
) -> None:
    project = make_project(instance={"mapping": str(MAPPING)}, payload_mode="mapped")
    project.eventlog.append(FormSubmission.from_json_line(line) for line in EVENTS.read_text().splitlines())

    first = run_connector(project, "fn", retry=FAST_RETRY)
    assert first.ok, first.error
    assert first.push.counts.created == 3
    bodies = [body for _, body in lightning.accepted_bodies()]
    sent = {r["ref"]: r for body in bodies for r in body["records"]}
    assert sent[JANE]["record"]["household_ref"] == HOUSEHOLD and sent[JANE]["parentRef"] == HOUSEHOLD
    assert sent[HOUSEHOLD]["record"]["kind"] == "household" and sent[JANE]["operation"] == "create"
    position = [r["ref"] for body in bodies for r in body["records"]]
    assert position.index(HOUSEHOLD) < position.index(JANE), "households go before their members"
    lightning.tick()
    assert len(lightning.collection(RESULTS_COLLECTION).items) == 3

    second = run_connector(project, "fn", retry=FAST_RETRY)
    assert second.ok, second.error
    assert second.pull.counts.updated == 3
    jane = project.eventlog.get_entity(JANE)
    assert jane is not None and jane.data["openfn_status"] == "received" and jane.data["first_name"] == "Jane"
    assert second.push.counts.created + second.push.counts.updated == 0, "results never travel back"
    assert run_connector(project, "fn", retry=FAST_RETRY).pull.counts.appended == 0

"""Field scopes with the shipped OpenSPP mapping against the fake OpenSPP (docs/data-protection.md).

The mapping is lossy (a display name built from parts, lookups, ID documents and bank accounts through a
YAML anchor), so this is where the pull scope's merge base has to hold: a registrar's out-of-scope edit
stays out of the log, is reported once, and survives the next push of that person.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from openspp_support import Rpc

from connector_core.config import ConfigError
from connector_core.entities import Entity
from connector_core.events import FormSubmission
from connector_core.project import Project
from connector_core.retry import RetryPolicy
from connector_core.sync.runner import run_connector
from connectors.openspp.fake import DATABASE, FakeOpenSpp
from connectors.openspp.sample import registry_log

MAPPING = Path(__file__).resolve().parents[2] / "mappings" / "openspp.yaml"
RETRY = RetryPolicy(max_attempts=6, initial_delay=0.01, max_delay=0.05, max_elapsed=30)
EVERYTHING = {
    "individual": [
        "given_name",
        "family_name",
        "addl_name",
        "birthdate",
        "gender",
        "phone",
        "email",
        "area_id",
        "_membership_kind",
        "ids",
        "bank_accounts",
        "name",
    ],
    "household": ["name", "area_id", "ids", "bank_accounts"],
}


@pytest.fixture
def open_project(tmp_path: Path, url: str) -> Iterator[Callable[..., Project]]:
    opened: list[Project] = []

    def make(scopes: dict[str, Any]) -> Project:
        config = {
            "connectors": {
                "reg": {
                    "type": "openspp",
                    "mapping": str(MAPPING),
                    "scopes": scopes,
                    "settings": {
                        "url": url,
                        "database": DATABASE,
                        "username": "registrar",
                        "password": "registrar",
                        "timeout": 5.0,
                        "lag_seconds": 60.0,
                    },
                }
            }
        }
        (tmp_path / "dcsync.yaml").write_text(yaml.safe_dump(config))
        project = Project.open(tmp_path / "dcsync.yaml")
        opened.append(project)
        return project

    yield make
    for project in opened:
        project.close()


def _partner_ids(fake: FakeOpenSpp) -> dict[str, int]:
    return {
        r["name"]: r["res_id"]
        for r in fake.state("ir.model.data")["ir.model.data"]
        if r["module"] == "dcsync"
    }


def _partners(fake: FakeOpenSpp) -> dict[int, dict[str, Any]]:
    return {p["id"]: p for p in fake.state("res.partner")["res.partner"]}


def test_a_sub_record_field_the_scope_leaves_out_fails_at_the_shared_anchor(
    tmp_path: Path, open_project: Callable[..., Project]
) -> None:
    scopes = {
        "push": {
            **EVERYTHING,
            "household": ["name", "area_id", "ids", "bank_accounts.acc_number", "bank_accounts.bank"],
        }
    }
    with pytest.raises(ConfigError) as info:
        open_project(scopes)
    (problem,) = info.value.problems
    text = MAPPING.read_text().splitlines()
    line = next(i for i, row in enumerate(text, start=1) if "acc_holder_name:" in row)
    assert problem.startswith(f"{MAPPING}:{line}:")
    assert "[household.bank_accounts.acc_holder_name]" in problem
    assert "outside the push scope of connector 'reg' for 'household'" in problem


def test_a_registrars_out_of_scope_edit_stays_out_of_the_log_and_in_openspp(
    open_project: Callable[..., Project], fake: FakeOpenSpp, rpc: Rpc
) -> None:
    project = open_project({"push": EVERYTHING, "pull": {"individual": ["phone_number"], "household": []}})
    project.eventlog.append(registry_log(households=2, members=2))
    first = run_connector(project, "reg", retry=RETRY)
    assert first.ok, first.error
    people = [e for e in project.eventlog.iter_entities() if e.entity_name == "individual"]
    person = people[0]
    partner = _partner_ids(fake)[person.guid]

    rpc.ok(
        "res.partner",
        "write",
        [[partner], {"given_name": "Remota", "phone": "+63911111111", "name": "REMOTE, REMOTA"}],
    )
    pulled = run_connector(project, "reg", push=False, retry=RETRY)
    assert pulled.ok, pulled.error
    assert pulled.pull is not None
    assert (pulled.pull.counts.appended, pulled.pull.counts.out_of_scope) == (1, 1)
    entity = project.eventlog.get_entity(person.guid)
    assert entity is not None
    assert entity.data["phone_number"] == "+63911111111"
    assert entity.data["first_name"] == person.data["first_name"], "an out-of-scope field reached the log"

    # a local edit of another field goes out without putting the log's first name over the registrar's
    edit = FormSubmission(
        guid="local-edit",
        entity_guid=person.guid,
        type="update-individual",
        data={"middle_name": "Local"},
        timestamp="2030-06-01T10:00:00.000Z",
        user_id="admin",
    )
    project.eventlog.append([edit])
    both = run_connector(project, "reg", retry=RETRY)
    assert both.ok, both.error
    assert both.push is not None and both.pull is not None
    assert both.push.counts.updated == 1 and both.pull.counts.out_of_scope == 0
    now = _partners(fake)[partner]
    assert now["given_name"] == "Remota", "the push overwrote the registrar's out-of-scope edit"
    assert now["addl_name"] == "Local" and now["phone"] == "+63911111111"

    settled = run_connector(project, "reg", retry=RETRY)
    assert settled.pull is not None and settled.push is not None
    assert settled.pull.counts.appended == settled.pull.counts.out_of_scope == 0
    assert settled.push.counts.updated + settled.push.counts.created == 0
    unchanged: Entity | None = project.eventlog.get_entity(person.guid)
    assert unchanged is not None and unchanged.data["first_name"] == person.data["first_name"]

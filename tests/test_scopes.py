"""Field scopes per connector, both directions (docs/data-protection.md#field-scopes).

Push: a mapping that sends a field outside the push scope is refused before anything runs, at the mapping's
file:line:column; an identity push (no mapping) drops what the scope does not allow, against the real mock
system over HTTP. Pull: a remote change outside the pull scope never reaches the log, each such record is
reported with its ids and field names (never values), a re-read reports and appends nothing, and the next
push does not overwrite the registry's value with the log's older one.
"""

from __future__ import annotations

import logging
import textwrap
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from sync_support import FAST_RETRY
from sync_support import event as _event
from sync_support import remote_records as _remote

from connector_core.config import ConfigError, load_config
from connector_core.mapping import load_mapping_text
from connector_core.mapping.cli import app as mapping_app
from connector_core.project import Project, scope_problems
from connector_core.sample import mobile_log
from connector_core.scopes import FieldScopes, ScopesConfig, build_tree, check_push_scope, trim
from connector_core.state.base import Direction
from connector_core.sync.runner import run_connector

MAPPING = """\
version: 1
lookups:
  gender: {values: {female: F, male: M}}
mappings:
  individual:
    fields:
      given_name: $.data.first_name
      family_name: $.data.last_name
      gender: {path: $.data.gender, pipe: [{lookup: gender}]}
      ids:
        each: $.data.document_ids
        fields:
          type: $.id_type
          value: $.id_number
    push:
      fields:
        kind: {const: individual}
  household:
    fields:
      name: $.data.household_name
"""


def _line_col(text: str, needle: str) -> tuple[int, int]:
    """1-based line and column of the first ``needle`` in ``text``: where a located error must point."""
    for number, line in enumerate(text.splitlines(), start=1):
        if needle in line:
            return number, line.index(needle) + 1
    raise AssertionError(f"{needle!r} not in the mapping")


def _project_file(tmp_path: Path, scopes: str, *, mapping: str | None = MAPPING) -> Path:
    if mapping is not None:
        (tmp_path / "map.yaml").write_text(mapping)
    config = tmp_path / "dcsync.yaml"
    config.write_text(
        "connectors:\n"
        "  reg:\n"
        "    type: mock\n"
        + ("    mapping: map.yaml\n" if mapping is not None else "")
        + textwrap.indent(textwrap.dedent(scopes), "    ")
        + "    settings:\n"
        "      url: http://127.0.0.1:9\n"
    )
    return config


def _problems(config: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        Project.open(config, read_only=True)
    return info.value.problems


# -- push: the mapping against the scope, before anything runs -------------------------------------------


def test_a_mapped_field_outside_the_push_scope_is_an_error_at_its_line_and_column(tmp_path: Path) -> None:
    config = _project_file(
        tmp_path,
        """\
        scopes:
          push:
            individual: [given_name, family_name, gender, ids, kind]
            household: [label]
        """,
    )
    (problem,) = _problems(config)
    line, col = _line_col(MAPPING, "name: $.data.household_name")
    assert problem.startswith(f"{tmp_path / 'map.yaml'}:{line}:{col}: [household.name] ")
    assert "sends 'name'" in problem and "connector 'reg'" in problem and "(allowed: label)" in problem


def test_a_sub_record_field_outside_the_scope_is_named_at_its_own_line(tmp_path: Path) -> None:
    config = _project_file(
        tmp_path,
        """\
        scopes:
          push:
            individual: [given_name, family_name, gender, ids.type, kind]
            household: [name]
        """,
    )
    (problem,) = _problems(config)
    line, col = _line_col(MAPPING, "value: $.id_number")
    assert problem.startswith(f"{tmp_path / 'map.yaml'}:{line}:{col}: [individual.ids.value] ")
    assert "sends 'ids.value'" in problem and "ids.type" in problem


def test_a_lookup_field_and_a_constant_outside_the_scope_are_each_reported(tmp_path: Path) -> None:
    config = _project_file(
        tmp_path,
        """\
        scopes:
          push:
            individual: [given_name, family_name, ids]
            household: [name]
        """,
    )
    problems = _problems(config)
    gender = _line_col(MAPPING, "gender: {path")
    kind = _line_col(MAPPING, "kind: {const")
    assert [p.split(": [")[0] for p in problems] == [
        f"{tmp_path / 'map.yaml'}:{gender[0]}:{gender[1]}",
        f"{tmp_path / 'map.yaml'}:{kind[0]}:{kind[1]}",
    ]
    assert "sends 'gender'" in problems[0] and "sends 'kind'" in problems[1]


def test_a_whole_value_where_only_sub_fields_are_allowed_is_an_error(tmp_path: Path) -> None:
    mapping = MAPPING.replace(
        "      ids:\n        each: $.data.document_ids\n        fields:\n"
        "          type: $.id_type\n          value: $.id_number\n",
        "      ids: $.data.document_ids\n",
    )
    config = _project_file(
        tmp_path,
        """\
        scopes:
          push:
            individual: [given_name, family_name, gender, ids.type, kind]
            household: [name]
        """,
        mapping=mapping,
    )
    (problem,) = _problems(config)
    line, col = _line_col(mapping, "ids: $.data")
    assert problem.startswith(f"{tmp_path / 'map.yaml'}:{line}:{col}:")
    assert "whole value of 'ids'" in problem and "ids.type" in problem


def test_an_entity_the_push_scope_does_not_list_cannot_be_mapped(tmp_path: Path) -> None:
    config = _project_file(
        tmp_path,
        """\
        scopes:
          push:
            individual: [given_name, family_name, gender, ids, kind]
        """,
    )
    (problem,) = _problems(config)
    line, col = _line_col(MAPPING, "name: $.data.household_name")
    assert problem.startswith(f"{tmp_path / 'map.yaml'}:{line}:{col}: [household] ")
    assert "may send nothing of 'household'" in problem


def test_a_scope_within_bounds_opens_and_absent_scopes_restrict_nothing(tmp_path: Path) -> None:
    config = _project_file(
        tmp_path,
        """\
        scopes:
          push:
            individual: [given_name, family_name, gender, ids.type, ids.value, kind]
            household: [name]
          pull:
            individual: [first_name]
        """,
    )
    Project.open(config, read_only=True).close()
    unscoped = _project_file(tmp_path, "")
    Project.open(unscoped, read_only=True).close()


def test_an_unknown_entity_in_a_scope_is_a_config_error_at_its_line(tmp_path: Path) -> None:
    scopes = """\
        scopes:
          pull:
            indivdual: [phone_number]
        """
    config = _project_file(tmp_path, scopes)
    (problem,) = _problems(config)
    text = config.read_text()
    line, col = _line_col(text, "indivdual:")
    assert problem.startswith(f"{config.resolve()}:{line}:")
    assert "connectors.reg.scopes.pull.indivdual: unknown entity 'indivdual'" in problem
    assert "did you mean 'individual'" in problem


def test_a_malformed_scope_is_a_config_error_with_its_key(tmp_path: Path) -> None:
    config = _project_file(
        tmp_path,
        """\
        scopes:
          pull:
            individual: [address.city]
          both: {}
        """,
        mapping=None,
    )
    with pytest.raises(ConfigError) as info:
        load_config(config)
    text = "\n".join(info.value.problems)
    assert "connectors.reg.scopes.pull" in text and "no dots" in text
    assert "connectors.reg.scopes.both: unknown key" in text


def test_mapping_validate_checks_the_scopes_of_the_connectors_using_the_file(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    config = _project_file(
        tmp_path,
        """\
        scopes:
          push:
            individual: [given_name, family_name, gender, ids, kind]
            household: [label]
        """,
    )
    runner = CliRunner()
    result = runner.invoke(mapping_app, ["validate", str(tmp_path / "map.yaml"), "--config", str(config)])
    assert result.exit_code == 2, result.output
    line, col = _line_col(MAPPING, "name: $.data.household_name")
    assert f"map.yaml:{line}:{col}: [household.name] sends 'name'" in result.output
    # without a project, the same file is only a mapping: valid
    alone = runner.invoke(mapping_app, ["validate", str(tmp_path / "map.yaml")])
    assert alone.exit_code == 0, alone.output


def test_scope_problems_see_through_a_yaml_anchor_shared_by_two_mappings(tmp_path: Path) -> None:
    shared = textwrap.dedent(
        """\
        version: 1
        mappings:
          individual:
            fields:
              ids: &ids
                each: $.data.document_ids
                fields: {type: $.id_type, value: $.id_number}
          household:
            fields:
              name: $.data.household_name
              ids: *ids
        """
    )
    mappings = load_mapping_text(shared, "shared.yaml")
    scopes = FieldScopes.of(
        "reg", ScopesConfig(push={"individual": ["ids"], "household": ["name", "ids.type"]})
    )
    assert scopes is not None
    (issue,) = check_push_scope(mappings, scopes)
    assert (issue.mapping, issue.field) == ("household", "ids.value")
    assert issue.line == _line_col(shared, "fields: {type")[0]


def test_trim_keeps_allowed_sub_fields_of_every_item_and_names_the_rest_without_values() -> None:
    tree = build_tree(["name", "ids.type", "address"])
    record = {
        "name": "Ana",
        "secret_note": "do not send",
        "ids": [{"type": "passport", "value": "P1"}, {"type": "nid", "value": "N9"}],
        "address": {"city": "X", "street": "Y"},
    }
    kept, dropped = trim(record, tree)
    assert kept == {
        "name": "Ana",
        "ids": [{"type": "passport"}, {"type": "nid"}],
        "address": record["address"],
    }
    assert dropped == ["ids.value", "secret_note"]


# -- push at run time: identity push against the mock system --------------------------------------------


def test_an_identity_push_sends_only_the_fields_in_scope(
    make_project: Callable[..., Project], mock_server: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    project = make_project(
        "    scopes:\n"
        "      push:\n"
        "        individual: [first_name, last_name]\n"
        "        household: [household_name]\n"
    )
    project.eventlog.append(mobile_log(households=2, members=2, updates=0))
    entities = list(project.eventlog.iter_entities())
    with caplog.at_level(logging.WARNING, logger="dcsync.scopes"):
        report = run_connector(project, "reg", pull=False, retry=FAST_RETRY)
    assert report.ok, report.error
    records = _remote(mock_server)
    assert len(records) == len(entities) == report.push.counts.created
    for record in records:
        sent = set(record["data"]) - {"parentExternalId"}
        allowed = {"first_name", "last_name"} if record["entityName"] == "individual" else {"household_name"}
        assert sent and sent <= allowed, sent
    assert report.push.counts.out_of_scope == len(entities)
    phones = {e.data["phone_number"] for e in entities if "phone_number" in e.data}
    assert phones, "the sample has phone numbers to leak"
    logged = caplog.text
    assert "phone_number" in logged and not any(p in logged for p in phones)
    # the snapshot is the trimmed payload: nothing is sent again
    again = run_connector(project, "reg", pull=False, retry=FAST_RETRY)
    assert again.push.counts.created + again.push.counts.updated == 0


@pytest.mark.parametrize("household", ["", "        household: []\n"], ids=["absent", "empty"])
def test_an_entity_absent_from_the_push_scope_is_not_sent_and_its_members_do_not_wait(
    make_project: Callable[..., Project], mock_server: httpx.Client, household: str
) -> None:
    project = make_project("    scopes:\n      push:\n        individual: [first_name]\n" + household)
    project.eventlog.append(mobile_log(households=2, members=2, updates=0))
    report = run_connector(project, "reg", pull=False, retry=FAST_RETRY)
    assert report.ok, report.error
    records = _remote(mock_server)
    assert {r["entityName"] for r in records} == {"individual"} and len(records) == 4
    assert report.push.counts.parked == 0 and report.push.counts.dead_lettered == 0
    assert (
        report.push.counts.out_of_scope == 6
    )  # the households, and the members sent without their other fields


# -- pull --------------------------------------------------------------------------------------------


def _pushed_person(project: Project, mock_server: httpx.Client) -> dict:
    project.eventlog.append(
        [
            _event(
                "e1",
                "p1",
                "create-individual",
                {"entityName": "individual", "first_name": "Ana", "last_name": "Cruz", "phone_number": "+1"},
            )
        ]
    )
    assert run_connector(project, "reg", pull=False, retry=FAST_RETRY).push.counts.created == 1
    (record,) = _remote(mock_server)
    return record


def _pull_all_again(project: Project) -> None:
    with project.state.transaction() as tx:
        tx.set_checkpoint("reg", Direction.PULL, None)


def test_a_pulled_change_outside_the_pull_scope_is_not_appended_and_is_reported(
    make_project: Callable[..., Project], mock_server: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    project = make_project("    scopes:\n      pull:\n        individual: [phone_number]\n")
    person = _pushed_person(project, mock_server)
    mock_server.patch(
        f"/_control/records/{person['id']}", json={"data": {"phone_number": "+2", "first_name": "Anita"}}
    )
    with caplog.at_level(logging.WARNING, logger="dcsync.pull"):
        pulled = run_connector(project, "reg", push=False, retry=FAST_RETRY)
    assert pulled.ok, pulled.error
    assert (pulled.pull.counts.appended, pulled.pull.counts.out_of_scope) == (1, 1)
    entity = project.eventlog.get_entity("p1")
    assert entity is not None
    assert (entity.data["phone_number"], entity.data["first_name"]) == ("+2", "Ana")
    last = list(project.eventlog.iter_events())[-1]
    assert last.data == {"phone_number": "+2"}
    (line,) = [r.getMessage() for r in caplog.records if "pull scope" in r.getMessage()]
    assert person["id"] in line and "p1" in line and "first_name" in line
    assert "Anita" not in line and "+2" not in line

    # read again: nothing new to append or report
    _pull_all_again(project)
    again = run_connector(project, "reg", push=False, retry=FAST_RETRY)
    assert (again.pull.counts.appended, again.pull.counts.out_of_scope) == (0, 0)

    # a local edit of another field is pushed without putting the log's old first_name over the remote's
    project.eventlog.append([_event("e2", "p1", "update-individual", {"last_name": "Reyes"})])
    pushed = run_connector(project, "reg", pull=False, retry=FAST_RETRY)
    assert pushed.push.counts.updated == 1
    (record,) = _remote(mock_server)
    assert record["data"]["last_name"] == "Reyes"
    assert record["data"]["first_name"] == "Anita", "the push overwrote the remote's out-of-scope value"
    assert record["data"]["phone_number"] == "+2"
    # and after that push, a pull still has nothing to say
    settled = run_connector(project, "reg", push=False, retry=FAST_RETRY)
    assert (settled.pull.counts.appended, settled.pull.counts.out_of_scope) == (0, 0)

    # a later local edit of the refused field itself is an ordinary edit: it is pushed
    project.eventlog.append([_event("e3", "p1", "update-individual", {"first_name": "Ann"})])
    run_connector(project, "reg", pull=False, retry=FAST_RETRY)
    (record,) = _remote(mock_server)
    assert record["data"]["first_name"] == "Ann"


def test_an_unchanged_record_pushed_after_a_refused_pull_is_not_sent_at_all(
    make_project: Callable[..., Project], mock_server: httpx.Client
) -> None:
    project = make_project("    scopes:\n      pull:\n        individual: [phone_number]\n")
    person = _pushed_person(project, mock_server)
    mock_server.patch(f"/_control/records/{person['id']}", json={"data": {"first_name": "Anita"}})
    assert run_connector(project, "reg", push=False, retry=FAST_RETRY).pull.counts.out_of_scope == 1
    writes = mock_server.get("/_control/stats").json()
    both = run_connector(project, "reg", retry=FAST_RETRY)
    assert both.push.counts.updated == 0 and both.pull.counts.out_of_scope == 0
    assert mock_server.get("/_control/stats").json() == writes
    (record,) = _remote(mock_server)
    assert record["data"]["first_name"] == "Anita"


def test_a_record_new_to_the_log_lands_with_its_in_scope_fields_only(
    make_project: Callable[..., Project], mock_server: httpx.Client
) -> None:
    project = make_project("    scopes:\n      pull:\n        individual: [first_name]\n")
    mock_server.post(
        "/_control/records",
        json={"entityName": "individual", "data": {"first_name": "Remote", "national_id": "X-1"}},
    )
    mock_server.post("/_control/records", json={"entityName": "household", "data": {"household_name": "H"}})
    report = run_connector(project, "reg", push=False, retry=FAST_RETRY)
    assert report.ok, report.error
    assert report.pull.counts.created == 1 and report.pull.counts.out_of_scope == 2
    (entity,) = list(project.eventlog.iter_entities())
    assert entity.data["first_name"] == "Remote" and "national_id" not in entity.data
    (created,) = list(project.eventlog.iter_events())
    assert created.data == {"entityName": "individual", "first_name": "Remote"}
    _pull_all_again(project)
    again = run_connector(project, "reg", push=False, retry=FAST_RETRY)
    assert again.pull.counts.appended == 0 and again.pull.counts.created == 0
    # the new entity's first push sends nothing over the remote's national_id
    both = run_connector(project, "reg", pull=False, retry=FAST_RETRY)
    assert both.push.counts.created + both.push.counts.updated == 0
    records = {r["entityName"]: r for r in _remote(mock_server)}
    assert records["individual"]["data"] == {"first_name": "Remote", "national_id": "X-1"}


def test_scope_problems_is_empty_without_scopes(tmp_path: Path) -> None:
    config = _project_file(tmp_path, "")
    loaded = load_config(config)
    mappings = load_mapping_text(MAPPING, str(tmp_path / "map.yaml"))
    assert scope_problems(loaded, "reg", mappings) == []


def test_run_and_runs_show_the_out_of_scope_count(tmp_path: Path, mock_server: httpx.Client) -> None:
    from sync_support import write_config
    from typer.testing import CliRunner

    from connector_core.cli import app

    config = write_config(
        tmp_path / "dcsync.yaml",
        str(mock_server.base_url),
        extra="    scopes:\n      push:\n        individual: [first_name]\n",
    )
    project = Project.open(config)
    try:
        project.eventlog.append(mobile_log(households=1, members=2, updates=0))
    finally:
        project.close()
    runner = CliRunner()
    ran = runner.invoke(app, ["run", "reg", "--push", "-c", str(config)], env={"COLUMNS": "200"})
    assert ran.exit_code == 0, ran.output
    (row,) = [line for line in ran.output.splitlines() if "out of scope" in line]
    assert row.replace("│", " ").split()[-1] == "3"  # the household not sent, two members trimmed
    runs = runner.invoke(app, ["runs", "-c", str(config)], env={"COLUMNS": "200"})
    assert "out_of_scope=3" in runs.output, runs.output


def test_mapping_validate_in_a_project_directory_uses_its_scopes_and_survives_a_broken_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    _project_file(
        tmp_path,
        """\
        scopes:
          push:
            individual: [given_name, family_name, gender, ids, kind]
            household: [label]
        """,
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DCSYNC_CONFIG", raising=False)
    runner = CliRunner()
    found = runner.invoke(mapping_app, ["validate", "map.yaml"])
    assert found.exit_code == 2 and "[household.name] sends 'name'" in found.output, found.output
    (tmp_path / "dcsync.yaml").write_text("connectors: {reg: {type: mock, mapping: map.yaml, bogus: 1}}\n")
    broken = runner.invoke(mapping_app, ["validate", "map.yaml"])
    assert broken.exit_code == 0, broken.output
    assert "field scopes not checked" in broken.output and "unknown key" in broken.output

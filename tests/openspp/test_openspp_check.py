"""``dcsync check`` against OpenSPP: the mapping against the registry's fields (issue 14 item 4) and its setup
(issue 16 item 5), and the shipped mapping on a stock OpenG2P registry (issue 16 item 1)."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from openspp_support import Rpc
from typer.testing import CliRunner

from connector_core.cli import app
from connector_core.project import Project
from connector_core.retry import RetryPolicy
from connector_core.sample import mobile_log
from connector_core.state.base import Direction
from connector_core.sync.runner import run_connector
from connector_core.testing.server import ServedApp, serve
from connectors.openspp.fake import DATABASE, FakeOpenSpp, create_app
from connectors.openspp.sample import registry_log

MAPPINGS = Path(__file__).resolve().parents[2] / "mappings"
SHIPPED = MAPPINGS / "openspp.yaml"
FAST = RetryPolicy(max_attempts=4, initial_delay=0.01, max_delay=0.02, max_elapsed=20)
runner = CliRunner()

MakeProject = Callable[..., Path]


@pytest.fixture(scope="module")
def stock_served() -> Iterator[ServedApp]:
    """A fake configured as the stock OpenG2P 17 registry core (no OpenSPP modules, so no areas)."""
    app_ = create_app(seed=True, flavour="openg2p")
    with serve(app_) as served:
        served.fake = app_.state.fake  # type: ignore[attr-defined]
        yield served


@pytest.fixture
def stock(stock_served: ServedApp) -> FakeOpenSpp:
    fake: FakeOpenSpp = stock_served.fake  # type: ignore[attr-defined]
    fake.reset(seed=True)
    return fake


def _project(directory: Path, url: str, mapping: Path, events: Any = ()) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    config = {
        "connectors": {
            "reg": {
                "type": "openspp",
                "mapping": str(mapping),
                "retry": FAST.model_dump(),
                "settings": {
                    "url": url,
                    "database": DATABASE,
                    "username": "registrar",
                    "password": "registrar",
                    "timeout": 5.0,
                    "lag_seconds": 0,
                },
            }
        }
    }
    path = directory / "dcsync.yaml"
    path.write_text(yaml.safe_dump(config))
    project = Project.open(path)
    try:
        project.eventlog.append(events)
    finally:
        project.close()
    return path


def _mapping_with(tmp_path: Path, after: str, line: str) -> tuple[Path, int]:
    """The shipped mapping with ``line`` inserted after the line holding ``after``; returns its line."""
    shutil.copytree(MAPPINGS / "lookups", tmp_path / "lookups")
    lines = SHIPPED.read_text().splitlines()
    at = next(i for i, text in enumerate(lines) if after in text) + 1
    lines.insert(at, line)
    path = tmp_path / "custom-openspp.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path, at + 1


def _check(config: Path) -> Any:
    return runner.invoke(app, ["check", "reg", "-c", str(config)])


# -- the mapping against the registry's fields ------------------------------------------------------------
def test_a_mapped_field_the_registry_lacks_fails_check_naming_it_and_its_line(
    tmp_path: Path, url: str, fake: FakeOpenSpp
) -> None:
    mapping, line = _mapping_with(
        tmp_path, "name: {path: $.data.household_name", "      hh_size: {path: $.data.household_size}"
    )
    config = _project(tmp_path / "p", url, mapping)
    answer = _check(config)
    assert answer.exit_code == 1, answer.output
    assert f"custom-openspp.yaml:{line}: household: field 'hh_size'" in answer.output
    assert "has no field 'hh_size'" in answer.output
    assert "Traceback" not in answer.output


def test_a_value_of_the_wrong_type_fails_check(tmp_path: Path, url: str, fake: FakeOpenSpp) -> None:
    mapping, line = _mapping_with(
        tmp_path, "given_name: {path: $.data.first_name", "      birth_place: {const: [a, b]}"
    )
    answer = _check(_project(tmp_path / "p", url, mapping))
    assert answer.exit_code == 1, answer.output
    assert f"custom-openspp.yaml:{line}: individual: field 'birth_place'" in answer.output
    assert "gives it a list" in answer.output


def test_the_shipped_mapping_fits_a_seeded_openspp(tmp_path: Path, url: str, fake: FakeOpenSpp) -> None:
    answer = _check(_project(tmp_path / "p", url, SHIPPED, registry_log(households=3)))
    assert answer.exit_code == 0, answer.output
    assert "the mapping fits" in answer.output
    assert "warning" not in answer.output


# -- the registry's setup -------------------------------------------------------------------------------
def test_check_names_each_missing_setup_item_with_its_fix(
    tmp_path: Path, url: str, fake: FakeOpenSpp
) -> None:
    rpc = Rpc(url)
    try:
        female = rpc.ok("gender.type", "search", [[["value", "=", "Female"]]])
        rpc.ok("gender.type", "unlink", [female])
        passport = rpc.ok("g2p.id.type", "search", [[["name", "=", "Passport"]]])
        rpc.ok("g2p.id.type", "unlink", [passport])
        south = rpc.ok("res.bank", "search", [[["name", "=", "Southern Savings"]]])
        rpc.ok("res.bank", "unlink", [south])
        # (Head itself can be neither renamed nor deleted on a real registry: a kind it lacks is another)
        child = rpc.ok("g2p.group.membership.kind", "search", [[["name", "=", "Child"]]])
        rpc.ok("g2p.group.membership.kind", "unlink", [child])
    finally:
        rpc.http.close()
    answer = _check(_project(tmp_path / "p", url, SHIPPED))
    assert answer.exit_code == 1, answer.output
    output = " ".join(answer.output.split())
    for missing, fix in (
        ("'Female'", "creates a gender type with value 'Female'"),
        ("'Passport'", "creates the ID type 'Passport'"),
        ("'Southern Savings'", "creates the bank 'Southern Savings'"),
        ("'Child'", "creates the membership kind 'Child'"),
    ):
        assert f"its lookup gives {missing}" in output, missing
        assert fix in output, fix
    assert "field 'gender'" in output and "field 'ids[].id_type'" not in output
    assert "field 'id_type'" in output and "field 'bank'" in output and "field '_membership_kind'" in output


def test_a_connection_failure_fails_check_in_one_line(tmp_path: Path, url: str, fake: FakeOpenSpp) -> None:
    config = _project(tmp_path / "p", url, SHIPPED)
    fake.faults.add({"kind": "http_status", "status": 401, "probability": 1.0})
    answer = _check(config)
    assert answer.exit_code == 1 and "HTTP 401" in answer.output and "Traceback" not in answer.output


# -- stock OpenG2P: no area_id --------------------------------------------------------------------------
def test_the_shipped_mapping_pushes_the_sample_registry_log_to_stock_openg2p_without_a_dead_letter(
    tmp_path: Path, stock_served: ServedApp, stock: FakeOpenSpp
) -> None:
    events = list(registry_log(households=20, members=3, updates=2, areas=False))
    config = _project(tmp_path / "p", stock_served.url, SHIPPED, events)
    project = Project.open(config)
    try:
        report = run_connector(project, "reg")
        assert report.ok, report.error
        assert list(project.state.iter_dead_letters("reg", "open")) == []
        assert project.eventlog.count(project.state.get_checkpoint("reg", Direction.PUSH)) == 0
        guids = {e.guid for e in project.eventlog.iter_entities()}
        again = run_connector(project, "reg")
        assert again.ok, again.error
        totals = again.totals()
        assert (totals.created, totals.updated, totals.appended) == (0, 0, 0), "nothing echoes back"
    finally:
        project.close()
    made = {r["name"] for r in stock.state("ir.model.data")["ir.model.data"] if r["module"] == "dcsync"}
    assert made == guids
    sent = [r for r in stock.requests if r.get("outcome") == "builtins.ValueError"]
    assert sent == [], "no call was refused (area_id is never sent)"


def test_the_mobile_sample_log_goes_to_stock_openg2p_too(
    tmp_path: Path, stock_served: ServedApp, stock: FakeOpenSpp
) -> None:
    """DataCollect's own sample (bank codes 1-5: the lookup passes 3-5 through, which the registry does not
    know) is refused only where a bank is unknown, never for a field."""
    config = _project(tmp_path / "p", stock_served.url, SHIPPED, mobile_log(households=5, members=2))
    project = Project.open(config)
    try:
        report = run_connector(project, "reg")
        letters = list(project.state.iter_dead_letters("reg", "open"))
    finally:
        project.close()
    assert report.error is None or "area_id" not in report.error
    assert all("area_id" not in (d.reason or "") for d in letters)


def test_check_against_stock_openg2p_warns_once_when_no_entity_has_an_area(
    tmp_path: Path, stock_served: ServedApp, stock: FakeOpenSpp
) -> None:
    config = _project(tmp_path / "p", stock_served.url, SHIPPED, registry_log(households=5, areas=False))
    answer = _check(config)
    assert answer.exit_code == 0, answer.output
    output = " ".join(answer.output.split())
    assert output.count("has no field 'area_id'") == 2, "once per mapping that sends it"
    assert "left out of every record" in output
    assert output.count("they are not pulled") <= 1, "the pull-fields warning once, not per call"


def test_check_against_stock_openg2p_fails_when_entities_have_an_area(
    tmp_path: Path, stock_served: ServedApp, stock: FakeOpenSpp
) -> None:
    config = _project(tmp_path / "p", stock_served.url, SHIPPED, registry_log(households=10))
    answer = _check(config)
    assert answer.exit_code == 1, answer.output
    output = " ".join(answer.output.split())
    assert "household: field 'area_id'" in output and "entities have a value for it" in output


def test_commands_that_do_not_contact_the_registry_print_no_schema_warning(
    tmp_path: Path, stock_served: ServedApp, stock: FakeOpenSpp
) -> None:
    config = _project(tmp_path / "p", stock_served.url, SHIPPED)
    events = tmp_path / "events.jsonl"
    events.write_text("".join(e.model_dump_json(by_alias=True) + "\n" for e in registry_log(households=2)))
    for args in (["log", "import", str(events)], ["log", "stats"], ["dlq", "list"], ["status"]):
        answer = runner.invoke(app, [*args, "-c", str(config)])
        assert answer.exit_code == 0, (args, answer.output)
        assert "not pulled" not in answer.output and "area_id" not in answer.output, args
    assert not [r for r in stock.requests if r["service"] == "common"], "nothing contacted the registry"


def test_fields_get_entries_become_field_specs() -> None:
    """The types ``odoo-observed.md`` §3.4 shows: a non-stored read-only field (``age``, ``kind_as_str``)
    is computed by Odoo; a one2many is stored; an empty selection accepts nothing."""
    from connectors.openspp.catalog import field_spec

    age = field_spec("age", {"type": "char", "store": False, "readonly": True})
    assert (age.type, age.computed) == ("str", True)
    members = field_spec(
        "group_membership_ids",
        {"type": "one2many", "relation": "g2p.group.membership", "store": True, "readonly": False},
    )
    assert (members.type, members.computed, members.remote_type) == (
        "list",
        False,
        "one2many g2p.group.membership",
    )
    gender = field_spec("gender", {"type": "selection", "selection": [], "store": True, "readonly": False})
    assert (gender.type, gender.choices, gender.computed) == ("str", (), False)
    name = field_spec("name", {"type": "char", "store": True, "readonly": False})
    assert name.computed is False

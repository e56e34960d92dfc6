"""The OpenSPP connector against a real Odoo 17 + OpenG2P registry (opt-in: skipped unless
``DCSYNC_LIVE_ODOO_URL`` is set).

The fake is checked against what a real server did (``odoo-observed.md``); this test is the other half: the
shipped mapping and the connector as they are now, against the real thing. It pushes a small household log,
reads back the exact records over JSON-RPC as the administrator, re-runs (nothing moves), pulls a clerk's
edit back into the log and runs ``dcsync check`` against the server's own ``fields_get``. A second test
takes DataCollect's membership events through the real registry: a member removed (its row ended, never
deleted), added back (the same row reopened), moved to another household and back, a Head replaced, a
removed member edited, and a registrar's end date still ahead left alone.

Pointed at the fake (``dcsync mock-server openspp`` with ``--flavour openg2p``, database ``openspp``) the
same tests pass: that is the check that the fake answers these flows as the real server does.

The server needs the setup ``docs/connectors/openspp.md`` lists (gender types, membership kinds Head,
Spouse, Child, Other, ID types "National ID" and "Passport", banks "Bank of the North" and "Southern
Savings", a registrar user). Settings, from the environment:

- ``DCSYNC_LIVE_ODOO_URL``, ``DCSYNC_LIVE_ODOO_DB``;
- ``DCSYNC_LIVE_ODOO_LOGIN`` / ``DCSYNC_LIVE_ODOO_PASSWORD``: the integration user (default registrar);
- ``DCSYNC_LIVE_ODOO_ADMIN_LOGIN`` / ``DCSYNC_LIVE_ODOO_ADMIN_PASSWORD``: reads and the clerk's edit
  (default admin).

Each run writes its own xml-id module (``dcsync_live_<hex>``) and pulls only partners made after it started,
so it can run again on the same database without seeing the last run's records.
"""

from __future__ import annotations

import os
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from connector_core.cli import app
from connector_core.entities import Entity
from connector_core.events import FormSubmission
from connector_core.project import Project
from connector_core.retry import RetryPolicy
from connector_core.sync.runner import run_connector
from connectors.openspp.client import OdooClient
from connectors.openspp.connector import xmlid_name
from connectors.openspp.sample import registry_log

URL = os.environ.get("DCSYNC_LIVE_ODOO_URL", "")
DB = os.environ.get("DCSYNC_LIVE_ODOO_DB", "")
LOGIN = os.environ.get("DCSYNC_LIVE_ODOO_LOGIN", "registrar")
PASSWORD = os.environ.get("DCSYNC_LIVE_ODOO_PASSWORD", "registrar")
ADMIN_LOGIN = os.environ.get("DCSYNC_LIVE_ODOO_ADMIN_LOGIN", "admin")
ADMIN_PASSWORD = os.environ.get("DCSYNC_LIVE_ODOO_ADMIN_PASSWORD", "admin")
SHIPPED = Path(__file__).resolve().parents[2] / "mappings" / "openspp.yaml"
RETRY = RetryPolicy(max_attempts=3, initial_delay=0.2, max_delay=1.0, max_elapsed=30)
KINDS = {"1": "Head", "2": "Spouse", "3": "Child", "4": "Other"}
ID_TYPES = {"national_id": "National ID", "passport": "Passport"}

pytestmark = pytest.mark.skipif(
    not (URL and DB), reason="set DCSYNC_LIVE_ODOO_URL and DCSYNC_LIVE_ODOO_DB to run against a real Odoo"
)


@pytest.fixture
def admin() -> Any:
    with OdooClient(URL, DB, ADMIN_LOGIN, ADMIN_PASSWORD, timeout=60) as client:
        yield client


def _project(directory: Path, module: str, after_id: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    settings = {
        "url": URL,
        "database": DB,
        "username": LOGIN,
        "password": PASSWORD,
        "lag_seconds": 0,
        "xmlid_module": module,
        # checked through res.users.has_group, @api.model in Odoo 17 (a registrar cannot read ir.model.data)
        "registrar_group": "g2p_registry_base.group_g2p_registrar",
        "pull_domain": [["id", ">", after_id]],
    }
    connector = {
        "type": "openspp",
        "mapping": str(SHIPPED),
        "retry": RETRY.model_dump(),
        "settings": settings,
    }
    path = directory / "dcsync.yaml"
    path.write_text(yaml.safe_dump({"connectors": {"reg": connector}}))
    return path


def _names(admin: OdooClient, model: str) -> dict[str, int]:
    return {r["name"]: r["id"] for r in admin.search_read(model, [], ["name"], order="id asc")}


def _partner_ids(admin: OdooClient, module: str) -> dict[str, int]:
    rows = admin.search_read(
        "ir.model.data",
        [["module", "=", module], ["model", "=", "res.partner"]],
        ["name", "res_id"],
        order="id",
    )
    return {r["name"]: r["res_id"] for r in rows}


def _assert_mirrors(admin: OdooClient, module: str, live: dict[str, Entity]) -> dict[str, int]:
    """The registry holds every entity once, as the mapping says: names, household, kinds, IDs, banks."""
    xmlids = _partner_ids(admin, module)
    ids = {guid: xmlids[xmlid_name(guid)] for guid in live}
    assert len(set(ids.values())) == len(ids) == len(xmlids), "one partner per guid"
    fields = [
        "is_group",
        "kind",
        "name",
        "given_name",
        "family_name",
        "birthdate",
        "gender",
        "phone",
        "active",
    ]
    partners = {p["id"]: p for p in admin.read("res.partner", list(ids.values()), fields)}
    household = _names(admin, "g2p.group.kind")["Household"]
    for guid, entity in live.items():
        partner, data = partners[ids[guid]], entity.data
        assert partner["active"], guid
        if data["entityName"] == "household":
            assert (partner["is_group"], partner["kind"][0], partner["name"]) == (
                True,
                household,
                data["household_name"],
            )
            continue
        assert not partner["is_group"]
        assert (partner["given_name"], partner["family_name"]) == (data["first_name"], data["last_name"])
        assert partner["name"] == f"{data['last_name']}, {data['first_name']}".upper()
        assert partner["birthdate"] == data["date_of_birth"][:10]
        assert partner["gender"] == data["gender"].capitalize()
        assert partner["phone"] == data["phone_number"]
    kinds = _names(admin, "g2p.group.membership.kind")
    people = [ids[g] for g, e in live.items() if e.data["entityName"] == "individual"]
    memberships = admin.search_read(
        "g2p.group.membership",
        [["individual", "in", people]],
        ["group", "individual", "kind", "ended_date"],
        order="id asc",
    )
    current = [m for m in memberships if not m["ended_date"]]
    assert Counter(m["individual"][0] for m in current) == Counter(people), "each person in one household"
    by_person = {m["individual"][0]: m for m in current}
    for guid, entity in live.items():
        if entity.data["entityName"] == "individual":
            membership = by_person[ids[guid]]
            assert membership["group"][0] == ids[entity.data["parentGuid"]]
            assert membership["kind"] == [kinds[KINDS[entity.data["relationship"]]]]
    types = _names(admin, "g2p.id.type")
    reg_ids = admin.search_read(
        "g2p.reg.id",
        [["partner_id", "in", list(ids.values())]],
        ["partner_id", "id_type", "value"],
        order="id",
    )
    assert sorted((r["partner_id"][0], r["id_type"][0], r["value"]) for r in reg_ids) == sorted(
        (ids[guid], types[ID_TYPES[d["id_type"]]], d["id_number"])
        for guid, entity in live.items()
        for d in entity.data.get("document_ids") or []
    )
    banks = admin.search_read(
        "res.partner.bank",
        [["partner_id", "in", list(ids.values())]],
        ["partner_id", "acc_number"],
        order="id",
    )
    assert sorted((b["partner_id"][0], b["acc_number"]) for b in banks) == sorted(
        (ids[guid], a["account_number"])
        for guid, entity in live.items()
        for a in entity.data.get("bank_details") or []
    )
    return ids


def _nothing_moves(project: Project) -> None:
    report = run_connector(project, "reg", retry=RETRY)
    assert report.ok, report.error
    assert report.pull is not None and report.push is not None
    assert report.pull.counts.appended == 0, report.pull.counts
    sent = report.push.counts
    assert sent.created + sent.updated + sent.deleted + sent.dead_lettered == 0, sent


def test_push_rerun_pull_and_check_against_a_real_odoo(tmp_path: Path, admin: OdooClient) -> None:
    module = f"dcsync_live_{uuid.uuid4().hex[:10]}"
    last = admin.search_read(
        "res.partner", [], ["id"], order="id desc", limit=1, context={"active_test": False}
    )
    config = _project(tmp_path / "field", module, last[0]["id"] if last else 0)
    events = list(registry_log(households=3, members=4, areas=False))
    project = Project.open(config)
    try:
        project.eventlog.append(events)
        live = {e.guid: e for e in project.eventlog.iter_entities()}

        first = run_connector(project, "reg", retry=RETRY)
        assert first.ok, first.error
        assert first.push is not None and first.push.counts.created == len(live)
        assert first.push.counts.dead_lettered == 0, first.push.counts
        ids = _assert_mirrors(admin, module, live)
        _nothing_moves(project)

        # a clerk corrects a first name in the registry: the pull brings it back as an update
        person = next(g for g, e in live.items() if e.data["entityName"] == "individual")
        admin.write("res.partner", [ids[person]], {"given_name": "Corrected"})
        pulled = run_connector(project, "reg", retry=RETRY)
        assert pulled.ok, pulled.error
        assert pulled.pull is not None and pulled.pull.counts.appended == 1, pulled.pull.counts
        entity = next(e for e in project.eventlog.iter_entities() if e.guid == person)
        assert entity.data["first_name"] == "Corrected"
        _nothing_moves(project)
    finally:
        project.close()

    answer = CliRunner().invoke(app, ["check", "reg", "-c", str(config)])
    assert answer.exit_code == 0, answer.output


# -- memberships: a member removed, added back, moved; a Head replaced; a planned end date ----------------
def _event(n: int, guid: str, kind: str, data: dict[str, Any]) -> FormSubmission:
    return FormSubmission(
        guid=str(uuid.uuid4()),
        entity_guid=guid,
        type=kind,
        data=data,
        timestamp=f"2025-03-01T10:{n:02d}:00.000Z",
        user_id="field-agent",
    )


def _pushed(project: Project, events: list[FormSubmission]) -> Any:
    """Append, then run (pull, push) once: the push delivers everything, dead-letters nothing."""
    if events:
        project.eventlog.append(events)
    time.sleep(1.1)  # write_date has whole seconds: each step's stamps differ from the last one's
    report = run_connector(project, "reg", retry=RETRY)
    assert report.ok, report.error
    assert report.push is not None and report.push.counts.dead_lettered == 0, report.push.counts
    assert project.state.dead_letters("reg") == []
    return report


def test_memberships_removed_added_back_and_moved_against_a_real_odoo(
    tmp_path: Path, admin: OdooClient
) -> None:
    """DataCollect's membership events as OpenG2P keeps them: a ``remove-member`` ends the member's one
    membership row (``ended_date``, ``is_ended``, ``status`` inactive; the row stays, the registrar may not
    delete it), adding the member back reopens that same row (a second row for the same person and group
    is refused by OpenG2P), a move ends one row and opens one in the other household, a removed Head loses
    the Head kind so a new one can come, and a registrar's end date still ahead is left alone."""
    tag = uuid.uuid4().hex[:8]
    module = f"dcsync_live_{tag}"
    last = admin.search_read(
        "res.partner", [], ["id"], order="id desc", limit=1, context={"active_test": False}
    )
    config = _project(tmp_path / "field", module, last[0]["id"] if last else 0)
    hh, other, ana, ben, cy, dee = (f"{tag}-0000-4000-8000-{i:012d}" for i in range(1, 7))
    kinds = _names(admin, "g2p.group.membership.kind")

    def person(guid: str, first: str, relationship: str, household: str) -> dict[str, Any]:
        return {
            "guid": guid,
            "entityName": "individual",
            "parentGuid": household,
            "first_name": first,
            "last_name": f"Live{tag}",
            "relationship": relationship,
        }

    project = Project.open(config)
    try:

        def ids() -> dict[str, int]:
            xmlids = _partner_ids(admin, module)
            return {
                g: xmlids[xmlid_name(g)] for g in (hh, other, ana, ben, cy, dee) if xmlid_name(g) in xmlids
            }

        def rows(guid: str) -> list[dict[str, Any]]:
            """The person's membership rows, oldest first, as (group, kinds, ended) plus the raw row."""
            found = admin.search_read(
                "g2p.group.membership",
                [["individual", "=", ids()[guid]]],
                ["group", "kind", "ended_date", "is_ended", "status", "start_date"],
                order="id asc",
            )
            return found

        def summary(guid: str) -> list[tuple[int, list[int], bool]]:
            return [(r["group"][0], sorted(r["kind"]), bool(r["ended_date"])) for r in rows(guid)]

        def stamp(guid: str) -> str:
            return admin.read("res.partner", [ids()[guid]], ["write_date"])[0]["write_date"]

        _pushed(
            project,
            [
                _event(
                    1,
                    hh,
                    "create-group",
                    {
                        "entityName": "household",
                        "household_name": f"Wanjiru {tag}",
                        "members": [person(ana, "Ana", "1", hh), person(ben, "Ben", "3", hh)],
                    },
                ),
                _event(
                    2,
                    other,
                    "create-group",
                    {
                        "entityName": "household",
                        "household_name": f"Otieno {tag}",
                        "members": [person(cy, "Cy", "1", other)],
                    },
                ),
            ],
        )
        partner = ids()
        head, child = kinds["Head"], kinds["Child"]
        assert summary(ana) == [(partner[hh], [head], False)]
        assert summary(ben) == [(partner[hh], [child], False)]
        assert summary(cy) == [(partner[other], [head], False)]
        (original,) = rows(ben)

        # removed: the one row ends (and stays); the group's write_date moves, so a pull sees it
        before = stamp(hh)
        _pushed(project, [_event(3, hh, "remove-member", {"memberId": ben})])
        (ended,) = rows(ben)
        assert ended["id"] == original["id"]
        assert (bool(ended["ended_date"]), ended["is_ended"], ended["status"]) == (True, True, "inactive")
        assert summary(ana) == [(partner[hh], [head], False)], "the member who stayed is untouched"
        assert stamp(hh) > before
        _nothing_moves(project)

        # added back: the same row is open again, once
        _pushed(project, [_event(4, hh, "add-member", {"members": [person(ben, "Ben", "3", hh)]})])
        (back,) = rows(ben)
        assert back["id"] == original["id"]
        assert (back["ended_date"], back["is_ended"], back["status"]) == (False, False, "active")
        _nothing_moves(project)

        # moved: ended in the Wanjirus, a new row in the Otienos
        _pushed(
            project,
            [
                _event(5, hh, "remove-member", {"memberId": ben}),
                _event(6, other, "add-member", {"members": [person(ben, "Ben", "3", other)]}),
            ],
        )
        assert summary(ben) == [(partner[hh], [child], True), (partner[other], [child], False)]
        _nothing_moves(project)

        # an edit of the moved member leaves both rows as they are and dates its household
        before = stamp(other)
        _pushed(project, [_event(7, ben, "update-individual", {"phone_number": "+254700000101"})])
        assert admin.read("res.partner", [partner[ben]], ["phone"])[0]["phone"] == "+254700000101"
        assert summary(ben) == [(partner[hh], [child], True), (partner[other], [child], False)]
        assert stamp(other) > before

        # moved back: the old row reopens, the Otieno one ends
        _pushed(
            project,
            [
                _event(8, other, "remove-member", {"memberId": ben}),
                _event(9, hh, "add-member", {"members": [person(ben, "Ben", "3", hh)]}),
            ],
        )
        assert summary(ben) == [(partner[hh], [child], False), (partner[other], [child], True)]

        # the Head removed and a new Head added in one run: Head comes off the ended row first
        _pushed(
            project,
            [
                _event(10, hh, "remove-member", {"memberId": ana}),
                _event(11, hh, "add-member", {"members": [person(dee, "Dee", "1", hh)]}),
            ],
        )
        assert summary(ana) == [(partner[hh], [], True)]
        assert summary(dee) == [(ids()[hh], [head], False)]
        # a removed member edited later is not made a member again
        _pushed(project, [_event(12, ana, "update-individual", {"phone_number": "+254700000102"})])
        assert summary(ana) == [(partner[hh], [], True)]
        _nothing_moves(project)

        # a registrar's end date still ahead: OpenG2P keeps the membership active, and so does an edit
        (cy_row,) = rows(cy)
        planned = "2099-01-01 00:00:00"
        admin.write("g2p.group.membership", [cy_row["id"]], {"ended_date": planned})
        (cy_row,) = rows(cy)
        assert (cy_row["is_ended"], cy_row["status"]) == (False, "active")
        _pushed(project, [_event(13, cy, "update-individual", {"phone_number": "+254700000103"})])
        (cy_row,) = rows(cy)
        assert (cy_row["ended_date"], cy_row["is_ended"]) == (planned, False)
        group = project.eventlog.get_entity(other)
        assert group is not None and cy in group.member_ids
        _nothing_moves(project)
    finally:
        project.close()

"""Issue 16.2 end to end: an ID or bank account the registry refuses is dead-lettered alone, as that
sub-record and with its reason; the registrant and its household are delivered, and a replay after the fix
delivers the sub-record once. The shipped mapping, the engine and ``dcsync dlq replay`` against the fake."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from openspp_support import Rpc
from typer.testing import CliRunner

from connector_core.cli import app
from connector_core.events import FormSubmission
from connector_core.project import Project
from connector_core.retry import RetryPolicy
from connector_core.sync.runner import run_connector
from connectors.openspp.fake import DATABASE, FakeOpenSpp

MAPPING = Path(__file__).resolve().parents[2] / "mappings" / "openspp.yaml"
RETRY = RetryPolicy(max_attempts=4, initial_delay=0.01, max_delay=0.05, max_elapsed=20)
HH, ANA, BEN = (
    "0b6c8a52-0000-4000-8000-000000000001",
    "0b6c8a52-0000-4000-8000-000000000002",
    "0b6c8a52-0000-4000-8000-000000000003",
)


@pytest.fixture
def project(tmp_path: Path, url: str) -> Iterator[Project]:
    settings = {"url": url, "database": DATABASE, "username": "registrar", "password": "registrar"}
    config = {"connectors": {"reg": {"type": "openspp", "mapping": str(MAPPING), "settings": settings}}}
    (tmp_path / "dcsync.yaml").write_text(yaml.safe_dump(config))
    opened = Project.open(tmp_path / "dcsync.yaml")
    yield opened
    opened.close()


def _event(n: int, guid: str, data: dict[str, Any]) -> FormSubmission:
    return FormSubmission(
        guid=f"0b6c8a52-1111-4000-8000-{n:012d}",
        entity_guid=guid,
        type="create-individual",
        data=data,
        timestamp="2025-03-01T10:00:00.000Z",
        user_id="admin",
    )


def _household_with_bad_sub_records() -> list[FormSubmission]:
    account = {"bank_name": "Credit Union", "account_number": "HB-77", "account_owner_name": "Wanjiru"}
    return [
        _event(1, HH, {"entityName": "household", "household_name": "Wanjiru", "bank_details": [account]}),
        _event(
            2,
            ANA,
            {
                "entityName": "individual",
                "parentGuid": HH,
                "first_name": "Ana",
                "last_name": "Wanjiru",
                "relationship": "1",
                "document_ids": [{"id_type": "voter_card", "id_number": "V-1"}],
            },
        ),
        _event(
            3,
            BEN,
            {
                "entityName": "individual",
                "parentGuid": HH,
                "first_name": "Ben",
                "last_name": "Wanjiru",
                "relationship": "3",
                "document_ids": [
                    {"id_type": "national_id", "id_number": "NID-3"},
                    {"id_type": "passport", "id_number": "p-12"},
                ],
            },
        ),
    ]


def _rows(fake: FakeOpenSpp, model: str) -> list[dict[str, Any]]:
    return fake.state(model)[model]


def test_a_household_with_an_unknown_bank_is_delivered_and_only_the_account_waits(
    project: Project, fake: FakeOpenSpp, rpc: Rpc, tmp_path: Path
) -> None:
    project.eventlog.append(_household_with_bad_sub_records())
    first = run_connector(project, "reg", pull=False, retry=RETRY)
    assert first.ok, first.error
    assert first.push is not None and first.push.counts.created == 3
    assert first.push.counts.dead_lettered == 3 and first.push.counts.parked == 0
    partners = {r["name"]: r for r in _rows(fake, "res.partner")}
    assert set(partners) == {"Wanjiru", "WANJIRU, ANA", "WANJIRU, BEN"}
    assert len(_rows(fake, "g2p.group.membership")) == 2
    assert [r["value"] for r in _rows(fake, "g2p.reg.id")] == ["NID-3"]
    assert _rows(fake, "res.partner.bank") == []
    letters = {d.ref: d.reason for d in project.state.dead_letters("reg")}
    assert letters == {
        f"{HH}#bank_accounts:HB-77": (
            "unknown bank 'Credit Union' (neither a bank name nor a BIC in OpenSPP) of account HB-77"
        ),
        f"{ANA}#ids:voter_card": "unknown ID type 'voter_card'",
        f"{BEN}#ids:Passport": "The provided Passport ID 'p-12' is invalid.",
    }

    # the registry gets the bank; replaying every letter delivers the account once, the others fail again
    rpc.ok("res.bank", "create", [{"name": "Credit Union", "bic": "CRUNXX44"}])
    runner = CliRunner()
    config = str(tmp_path / "dcsync.yaml")
    replayed = runner.invoke(app, ["dlq", "replay", "reg", "--all", "-c", config])
    assert replayed.exit_code == 1 and "2 failed again" in replayed.stdout, replayed.output
    (account,) = _rows(fake, "res.partner.bank")
    assert (account["acc_number"], account["partner_id"]) == ("HB-77", partners["Wanjiru"]["id"])
    assert set(d.ref for d in project.state.dead_letters("reg")) == {
        f"{ANA}#ids:voter_card",
        f"{BEN}#ids:Passport",
    }
    assert all(d.attempts == 2 for d in project.state.dead_letters("reg"))
    again = runner.invoke(app, ["dlq", "replay", "reg", "--all", "-c", config])
    assert again.exit_code == 1, again.output
    assert len(_rows(fake, "res.partner.bank")) == 1 and len(_rows(fake, "res.partner")) == 3
    assert [r["value"] for r in _rows(fake, "g2p.reg.id")] == ["NID-3"]
    # an ordinary run offers the two refused IDs again: no new letter, no second record of anything
    later = run_connector(project, "reg", retry=RETRY)
    assert later.ok and later.push is not None and later.pull is not None
    assert (later.push.counts.created, later.push.counts.dead_lettered, later.pull.counts.appended) == (
        0,
        0,
        0,
    )
    assert all(d.attempts == 3 for d in project.state.dead_letters("reg"))  # two replays, not the run
    assert len(_rows(fake, "res.partner")) == 3 and len(_rows(fake, "res.partner.bank")) == 1


def test_a_refused_sub_record_is_not_taken_back_by_the_next_pull(project: Project, fake: FakeOpenSpp) -> None:
    """OpenSPP lacks the refused account; the pull must not read that as OpenSPP having removed it, which
    would erase it from the entity (and discard its letter on replay)."""
    project.eventlog.append(_household_with_bad_sub_records())
    assert run_connector(project, "reg", pull=False, retry=RETRY).ok
    second = run_connector(project, "reg", retry=RETRY)
    assert second.ok, second.error
    assert second.pull is not None and second.pull.counts.appended == 0, second.pull.counts
    household = project.eventlog.get_entity(HH)
    assert household is not None and household.data["bank_details"][0]["account_number"] == "HB-77"
    assert len(project.state.dead_letters("reg")) == 3


def test_a_bank_account_renumbered_only_in_format_is_the_same_account(
    project: Project, fake: FakeOpenSpp
) -> None:
    """Odoo keeps one account per partner and *sanitized* number (``KE-12 345`` is ``KE12345``): an edit
    that only reformats the number updates the account, instead of creating one the registry refuses."""

    def household(n: int, number: str) -> FormSubmission:
        account = {"bank_name": "Bank of the North", "account_number": number, "account_owner_name": "W"}
        event = _event(
            n, HH, {"entityName": "household", "household_name": "Wanjiru", "bank_details": [account]}
        )
        return event if n == 1 else event.model_copy(update={"type": "update-individual"})

    project.eventlog.append([household(1, "KE-12 345")])
    first = run_connector(project, "reg", pull=False, retry=RETRY)
    assert first.ok, first.error
    project.eventlog.append([household(2, "ke12345")])
    second = run_connector(project, "reg", pull=False, retry=RETRY)
    assert second.ok, second.error
    assert list(project.state.iter_dead_letters("reg", "open")) == []
    assert [r["acc_number"] for r in _rows(fake, "res.partner.bank")] == ["ke12345"]

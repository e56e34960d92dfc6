"""The OpenSPP connector passes the connector contract against the fake OpenSPP, with the shipped mapping.

``OpenSppControl`` drives the fake in-process: faults are its own fault rules scoped to ``res.partner``
calls, a record's ref is its ``dcsync.*`` xml-id, and remote-side records are made over JSON-RPC as the
administrator, as a clerk's edit in the OpenSPP UI would be.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from connector_core.connector import ConnectorError
from connector_core.events import FormSubmission
from connector_core.testing.contract import ConnectorContract, FakeControl, SettingsFactory, new_ref
from connectors.openspp.connector import OpenSppConnector, xmlid_name
from connectors.openspp.fake import (
    ADMIN_LOGIN,
    ADMIN_PASSWORD,
    DATABASE,
    REGISTRAR_LOGIN,
    FakeOpenSpp,
    create_app,
)
from connectors.openspp.fake.server import Credentials
from connectors.openspp.sample import registry_log

MAPPING = Path(__file__).resolve().parent.parent / "mappings" / "openspp.yaml"


class OpenSppControl(FakeControl):
    def __init__(self, fake: FakeOpenSpp, url: str) -> None:
        self.fake = fake
        self.http = httpx.Client(base_url=url, timeout=10)
        self._saved_credentials: dict[int, Credentials] = {}
        self.uid = self._call("common", "authenticate", DATABASE, ADMIN_LOGIN, ADMIN_PASSWORD, {})

    def _call(self, service: str, method: str, *args: Any) -> Any:
        body = {
            "jsonrpc": "2.0",
            "method": "call",
            "id": 1,
            "params": {"service": service, "method": method, "args": list(args)},
        }
        answer = self.http.post("/jsonrpc", json=body).json()
        assert "error" not in answer, answer["error"]
        return answer["result"]

    def _admin(self, model: str, method: str, args: list[Any]) -> Any:
        return self._call("object", "execute_kw", DATABASE, self.uid, ADMIN_PASSWORD, model, method, args)

    def count(self, ref: str) -> int:
        rows = self.fake.state("ir.model.data")["ir.model.data"]
        name = xmlid_name(ref)
        return sum(
            1 for r in rows if r["module"] == "dcsync" and r["name"] == name and r["model"] == "res.partner"
        )

    def fail_writes(self, times: int = 1, *, after_commit: bool = False) -> None:
        if after_commit:
            rule = {"kind": "commit_then_fail", "then": "502", "model": "res.partner", "method": "load"}
        else:
            rule = {"kind": "http_status", "status": 503, "model": "res.partner", "method": "load"}
        self.fake.faults.add({**rule, "times": times})

    def reject(self, ref: str, message: str) -> None:
        self.fake.faults.add(
            {
                "kind": "validation_error",
                "message": message,
                "model": "res.partner",
                "match": [["id", "=", f"dcsync.{xmlid_name(ref)}"]],
                "probability": 1.0,
            }
        )

    def clear_faults(self) -> None:
        self.fake.faults.clear()
        with self.fake.lock:
            for uid, credentials in self._saved_credentials.items():
                self.fake.credentials[uid] = credentials
            self._saved_credentials.clear()
            self.fake.login_failures.clear()  # the refused logins of refuse_login() start no cooldown

    # -- systemic failures ---------------------------------------------------------------------------
    def fail_everything(self) -> None:
        """Every call, the login included, answered 500 by the proxy in front of Odoo."""
        self.fake.faults.add({"kind": "http_status", "status": 500, "probability": 1.0})

    def refuse_login(self) -> None:
        """The registrar's password and API keys are changed: ``authenticate`` answers ``false`` and a
        session already open gets ``AccessDenied``, as Odoo does."""
        with self.fake.lock:
            for uid in list(self.fake.credentials):
                row = self.fake.store.visible("res.users", uid)
                if row is not None and row.get("login") == REGISTRAR_LOGIN:
                    self._saved_credentials[uid] = self.fake.credentials[uid]
                    self.fake.credentials[uid] = Credentials("changed-by-an-administrator")

    def refuse_metadata(self) -> None:
        """Reads of the registry's setup refused with Odoo's AccessError, as for a user outside the
        Registrar group (``odoo-observed.md`` §7: the first read of the membership kinds fails)."""
        self.fake.faults.add(
            {
                "kind": "access_error",
                "model": "g2p.group.membership.kind",
                "probability": 1.0,
                "message": "You are not allowed to access 'Group Membership Kind' "
                "(g2p.group.membership.kind) records.\n\nThis operation is allowed for the following "
                "groups:\n\t- OpenG2P Module Access/Registrar\n\nContact your administrator to "
                "request access if necessary.",
            }
        )

    def create_remote(self, entity_name: str, data: dict[str, Any]) -> str:
        values = {"is_registrant": True, "is_group": entity_name == "household", **data}
        if "given_name" in data:
            values.setdefault("name", f"{data.get('family_name', '')}, {data['given_name']}".upper())
        return str(self._admin("res.partner", "create", [values]))

    def update_remote(self, external_id: str, data: dict[str, Any]) -> None:
        self._admin("res.partner", "write", [[int(external_id)], data])

    def fail_reads(self, times: int = 1) -> None:
        self.fake.faults.add(
            {
                "kind": "http_status",
                "status": 503,
                "model": "res.partner",
                "method": "search_read",
                "times": times,
            }
        )


class TestOpenSppContract(ConnectorContract):
    connector_class = OpenSppConnector
    clock_resolution = 1.0  # Odoo's write_date has whole seconds

    def remote_change(self) -> dict[str, Any]:
        return {"family_name": "Clerk-Changed"}

    def payload(self, index: int) -> dict[str, Any]:
        return {"given_name": f"Contract{index}", "family_name": "Tester", "phone": f"+1555010{index}"}

    def remote_data(self, index: int) -> dict[str, Any]:
        return {"given_name": f"Remote{index}", "family_name": "Clerk"}

    @pytest.fixture
    def fake_app(self) -> Any:
        return create_app(seed=True)

    @pytest.fixture
    def connector_settings(self) -> SettingsFactory:
        return lambda url: {
            "url": url,
            "database": DATABASE,
            "username": "registrar",
            "password": "registrar",
            "timeout": 5.0,
            "lag_seconds": 0,
            "login_cooldown": 0,
        }

    @pytest.fixture
    def invalid_settings(self, connector_settings: SettingsFactory) -> list[tuple[dict[str, Any], str]]:
        good = connector_settings("http://127.0.0.1:1")
        return [
            ({**good, "batch_size": 0}, "batch_size"),
            ({**good, "reference": "guess"}, "reference"),
            ({**good, "api_key": "also"}, "password or api_key"),
        ]

    @pytest.fixture
    def contract_events(self) -> list[FormSubmission]:
        return list(registry_log(households=3, members=2, updates=2))

    @pytest.fixture
    def contract_mapping_file(self) -> Path | None:
        return MAPPING

    @pytest.fixture
    def fake_control(self, fake_app: Any, dcsync_fake_server: Any) -> FakeControl:
        return OpenSppControl(fake_app.state.fake, dcsync_fake_server.url)

    # -- the systemic-failure abilities, each failing the way the contract's clauses expect ----------------
    @pytest.mark.parametrize(
        ("ability", "transient", "says"),
        [
            ("fail_everything", True, "HTTP 500"),
            ("refuse_login", False, "refused the login"),
            ("refuse_metadata", False, "Registrar group"),
        ],
    )
    def test_control_systemic_abilities(
        self,
        connector_factory: Any,
        dcsync_fake_server: Any,
        fake_control: OpenSppControl,
        ability: str,
        transient: bool,
        says: str,
    ) -> None:
        getattr(fake_control, ability)()
        record = self.push_record(new_ref(), 0)
        broken = connector_factory(dcsync_fake_server.url)
        with pytest.raises(ConnectorError) as caught:
            broken.push([record])
        error = caught.value
        assert (error.transient, error.systemic, error.unsent) == (transient, not transient, True), repr(
            error
        )
        assert says in error.message
        broken.close()
        fake_control.clear_faults()
        healed = connector_factory(dcsync_fake_server.url)
        assert self.push(healed, [record])[record.ref].ok, "clear_faults() undoes the ability"
        assert fake_control.count(record.ref) == 1
        healed.close()

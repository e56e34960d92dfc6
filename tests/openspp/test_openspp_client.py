"""The Odoo JSON-RPC client against the fake over real loopback HTTP, plus a few respx unit checks."""

from __future__ import annotations

from datetime import datetime

import httpx
import pytest
import respx

from connector_core.connector import PermanentError, TransientError
from connectors.openspp.client import (
    OdooAuthError,
    OdooClient,
    OdooPermanentError,
    OdooTransientError,
    classify,
)
from connectors.openspp.fake import (
    DATABASE,
    REGISTRAR_API_KEY,
    FakeOpenSpp,
)


def _client(url: str, login: str = "admin", secret: str = "admin", **kw: object) -> OdooClient:
    return OdooClient(url, DATABASE, login, secret, timeout=kw.pop("timeout", 5.0), **kw)  # type: ignore[arg-type]


def test_authenticates_with_a_password_or_an_api_key(url: str) -> None:
    with _client(url) as admin, _client(url, "registrar", REGISTRAR_API_KEY) as registrar:
        assert admin.authenticate() == 2
        assert registrar.authenticate() == 6
        assert registrar.search_count("res.partner", []) == 0


def test_keyword_arguments_travel_as_the_seventh_arg(url: str, fake: FakeOpenSpp) -> None:
    with _client(url) as client:
        client.search_read("res.partner", [], ["name"], order="id asc", limit=3)
    call = fake.requests[-1]
    assert call["ignored_params"] == [] and call["params_kwargs"] is None
    assert call["args"][2] == "***"
    assert call["args"][6] == {"fields": ["name"], "order": "id asc", "offset": 0, "limit": 3}
    assert not fake.flags


def test_refused_login_is_not_hammered(url: str, fake: FakeOpenSpp) -> None:
    with _client(url, secret="wrong", login_cooldown=60) as client:
        with pytest.raises(OdooAuthError) as first:
            client.authenticate()
        assert isinstance(first.value, PermanentError)
        calls = len(fake.requests)
        for _ in range(3):
            with pytest.raises(OdooAuthError, match="login cooldown"):
                client.execute_kw("res.partner", "search", [[]])
        assert len(fake.requests) == calls, "no request may leave during the cooldown"


def test_the_servers_login_cooldown_reads_as_refused(url: str, fake: FakeOpenSpp) -> None:
    fake.clock.freeze()
    for _ in range(5):
        with _client(url, secret="wrong", login_cooldown=0) as client, pytest.raises(OdooAuthError):
            client.authenticate()
    with _client(url) as good, pytest.raises(OdooAuthError):
        good.authenticate()
    fake.clock.advance(61)
    with _client(url) as good:
        assert good.authenticate() == 2


def test_access_denied_mid_session_stops_and_never_shows_the_secret(url: str, fake: FakeOpenSpp) -> None:
    with _client(url, "registrar", "registrar") as client:
        client.authenticate()
        fake.credentials[6].password = "changed"
        with pytest.raises(OdooAuthError) as caught:
            client.search("res.partner", [], order="id asc")
        assert caught.value.odoo_name == "odoo.exceptions.AccessDenied"
        assert caught.value.message == "Access Denied"
        assert "registrar" not in str(caught.value).replace("'registrar'", "")


@pytest.mark.parametrize(
    ("fault", "transient", "name"),
    [
        ({"kind": "serialization_failure"}, True, "psycopg2.errors.SerializationFailure"),
        ({"kind": "lock_not_available"}, True, "psycopg2.errors.LockNotAvailable"),
        ({"kind": "deadlock"}, True, "psycopg2.errors.DeadlockDetected"),
        ({"kind": "operational_error"}, True, "psycopg2.OperationalError"),
        ({"kind": "pool_full"}, True, "psycopg2.pool.PoolError"),
        ({"kind": "access_error"}, False, "odoo.exceptions.AccessError"),
        (
            {"kind": "validation_error", "message": "Only one Head is allowed per group"},
            False,
            "odoo.exceptions.ValidationError",
        ),
        ({"kind": "user_error", "message": "No."}, False, "odoo.exceptions.UserError"),
        ({"kind": "missing_error"}, False, "odoo.exceptions.MissingError"),
    ],
)
def test_error_classification(url: str, fake: FakeOpenSpp, fault: dict, transient: bool, name: str) -> None:
    with _client(url) as client:
        client.authenticate()
        fake.faults.add({**fault, "model": "res.partner"})
        with pytest.raises(TransientError if transient else PermanentError) as caught:
            client.create("res.partner", {"name": "A"})
        assert caught.value.odoo_name == name  # type: ignore[attr-defined]
        if "message" in fault:
            assert caught.value.message == fault["message"]
        if transient:
            assert caught.value.maybe_applied is False, "Odoo rolled the call back"  # type: ignore[attr-defined]


def test_odoo_data_errors_are_permanent_with_odoos_message(url: str) -> None:
    with _client(url) as client:
        with pytest.raises(OdooPermanentError) as caught:
            client.create("res.partner", {"name": "x", "gender": "F"})
        assert (caught.value.odoo_name, caught.value.message) == (
            "builtins.ValueError",
            "Wrong value for res.partner.gender: 'F'",
        )
        with pytest.raises(OdooPermanentError, match="doesn't exist"):
            client.execute_kw("no.model", "search", [[]])


@pytest.mark.parametrize(
    "fault",
    [
        {"kind": "http_status", "status": 502},
        {"kind": "http_status", "status": 504},
        {"kind": "reset_connection"},
        {"kind": "invalid_json_body"},
        {"kind": "commit_then_fail", "then": "502"},
        {"kind": "commit_then_fail", "then": "reset"},
        {"kind": "commit_then_fail", "then": "timeout", "ms": 1500},
        {"kind": "omit_result"},
    ],
)
def test_ambiguous_failures_are_transient_and_maybe_applied(url: str, fake: FakeOpenSpp, fault: dict) -> None:
    with _client(url, timeout=0.5) as client:
        client.authenticate()
        fake.faults.add({**fault, "model": "res.partner", "method": "create"})
        with pytest.raises(OdooTransientError) as caught:
            client.create("res.partner", {"name": "Maybe"})
        assert caught.value.maybe_applied


def test_503_is_transient(url: str, fake: FakeOpenSpp) -> None:
    with _client(url) as client:
        client.authenticate()
        fake.faults.add({"kind": "http_status", "status": 503})
        with pytest.raises(OdooTransientError, match="HTTP 503"):
            client.search_count("res.partner", [])


def test_unknown_database_is_a_configuration_error(url: str) -> None:
    with (
        OdooClient(url, "nodb", "admin", "admin", timeout=5) as client,
        pytest.raises(OdooPermanentError) as caught,
    ):
        client.authenticate()
    error = caught.value
    assert "database 'nodb' does not exist" in error.message
    assert error.systemic and error.unsent, "no record is at fault, and nothing was sent"
    assert "5432" not in error.message and "127.0.0.1" not in error.message, "the server's host stays hidden"


def test_an_expired_session_is_authenticated_again_once(url: str, fake: FakeOpenSpp) -> None:
    with _client(url) as client:
        client.authenticate()
        fake.faults.add({"kind": "session_expired", "service": "object"})
        assert client.search_count("res.partner", []) == 0
        logins = [r for r in fake.requests if r["method"] == "authenticate"]
        assert len(logins) == 2


def test_load_and_xmlid_lookup_for_a_registrar(url: str) -> None:
    with _client(url, "registrar", "registrar") as client:
        loaded = client.load("res.partner", ["id", "name"], [["dcsync.a1", "A"], ["dcsync.a2", "B"]])
        assert loaded.ids is not None and loaded.messages == []
        assert client.xmlid_target("dcsync.a2") == ("res.partner", loaded.ids[1])
        assert client.xmlid_target("dcsync.missing") is None
        failed = client.load("res.partner", ["id", "name", "gender"], [["dcsync.a3", "C", "F"]])
        assert failed.ids is None and failed.errors_by_row() == {
            0: "Value 'F' not found in selection field 'Gender'"
        }


def test_load_keeps_datetimes_in_utc_whatever_the_users_time_zone(url: str, fake: FakeOpenSpp) -> None:
    """Odoo's import reads a datetime in the user's time zone; the connector's values are UTC (Odoo's
    wire convention), so ``load`` must say so, or a registrar in Nairobi stores them 3 hours early."""
    registrar = ["base.group_user", "g2p_registry_base.group_g2p_registrar"]
    fake.add_user("nairobi", "nairobi", registrar, tz="Africa/Nairobi")
    with _client(url, "nairobi", "nairobi") as client:
        loaded = client.load(
            "res.partner", ["id", "name", "disabled"], [["dcsync.tz1", "A", "2024-05-02 10:00:00"]]
        )
        assert loaded.ids is not None, loaded.messages
        assert client.read("res.partner", loaded.ids, ["disabled"])[0]["disabled"] == "2024-05-02 10:00:00"


def test_registrar_group_check_as_datacollect_does_it(url: str) -> None:
    with _client(url) as admin:
        assert admin.has_group("group_g2p_registrar")
        assert admin.has_group("g2p_registry_base.group_g2p_admin")
    with _client(url, "registrar", "registrar") as registrar:
        assert registrar.has_group("g2p_registry_base.group_g2p_registrar")
        assert not registrar.has_group("g2p_registry_base.group_g2p_admin")
        with pytest.raises(OdooPermanentError, match="module.name"):
            registrar.has_group("group_g2p_registrar")


def test_server_time_comes_from_the_date_header(url: str, fake: FakeOpenSpp) -> None:
    fake.clock.freeze(datetime(2031, 5, 6, 7, 8, 9))
    fake.clock_skew = 30
    with _client(url) as client:
        client.version()
    assert client.server_time == datetime(2031, 5, 6, 7, 8, 39)


# -- narrow unit checks (respx) ------------------------------------------------------------------------
def test_classify_without_data_falls_back_to_the_top_message() -> None:
    error = classify({"code": 200, "message": "Odoo Server Error"})
    assert isinstance(error, OdooPermanentError) and error.message == "Odoo Server Error"
    secret = classify(
        {"data": {"name": "odoo.exceptions.UserError", "message": "bad s3cret here"}}, secret="s3cret"
    )
    assert secret.message == "bad *** here"


@respx.mock
def test_http_statuses_and_headers() -> None:
    route = respx.post("http://odoo.test/jsonrpc")
    client = OdooClient("http://odoo.test/", DATABASE, "admin", "admin")
    route.mock(return_value=httpx.Response(429, headers={"Retry-After": "7"}, text="slow down"))
    with pytest.raises(OdooTransientError) as caught:
        client.version()
    assert caught.value.retry_after == 7.0
    route.mock(return_value=httpx.Response(500, text="<html>Internal Server Error</html>"))
    with pytest.raises(OdooTransientError, match="HTTP 500"):
        client.version()  # a crashed worker or a gateway: retried, then the run stops
    route.mock(return_value=httpx.Response(401, text="Unauthorized"))
    with pytest.raises(OdooAuthError, match="HTTP 401") as refused_by_gateway:
        client.version()
    assert refused_by_gateway.value.systemic, "a gateway refusing dcsync is not any record's fault"
    route.mock(return_value=httpx.Response(400, text="Invalid JSON data"))
    with pytest.raises(OdooPermanentError, match="Invalid JSON data"):
        client.version()
    route.mock(
        return_value=httpx.Response(
            200,
            json={"jsonrpc": "2.0", "id": 1, "result": {"server_version": "17.0"}},
            headers=[("date", "Mon, 01 Jan 2024 00:00:00 GMT"), ("date", "Tue, 02 Jan 2024 03:04:05 GMT")],
        )
    )
    assert client.version() == {"server_version": "17.0"}
    assert client.server_time == datetime(2024, 1, 2, 3, 4, 5), "the origin's Date (last) wins"
    route.mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(OdooTransientError) as refused:
        client.version()
    assert refused.value.maybe_applied is False, "nothing was sent"
    client.close()


@respx.mock
def test_authenticate_false_and_secret_never_in_repr() -> None:
    respx.post("http://odoo.test/jsonrpc").mock(
        return_value=httpx.Response(200, json={"jsonrpc": "2.0", "id": 1, "result": False})
    )
    client = OdooClient("http://odoo.test", DATABASE, "ops", "hunter2-secret")
    with pytest.raises(OdooAuthError) as caught:
        client.authenticate()
    assert "hunter2" not in caught.value.message and "hunter2" not in repr(client)

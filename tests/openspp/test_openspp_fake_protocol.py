"""The fake OpenSPP server answers the way a real Odoo 17 + OpenG2P server did (``odoo-observed.md``)."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
from openspp_support import Rpc

from connectors.openspp.fake import DATABASE, FakeOpenSpp
from connectors.openspp.odoo_formats import parse_server_datetime

pytestmark = pytest.mark.usefixtures("fake")


def _household(rpc: Rpc, name: str = "Diallo Household", **extra: object) -> int:
    return rpc.ok(
        "res.partner", "create", [{"is_registrant": True, "is_group": True, "name": name, "kind": 3, **extra}]
    )


def _person(rpc: Rpc, name: str, **extra: object) -> int:
    return rpc.ok("res.partner", "create", [{"is_registrant": True, "name": name, **extra}])


# -- envelope -----------------------------------------------------------------------------------------
def test_version_and_authenticate_like_odoo(rpc: Rpc) -> None:
    assert rpc.call("common", "version")["result"]["server_version_info"] == [17, 0, 0, "final", 0, ""]
    assert rpc.call("common", "authenticate", DATABASE, "admin", "admin", {})["result"] == 2
    assert rpc.call("common", "authenticate", DATABASE, "admin", "wrong", {})["result"] is False
    assert rpc.call("common", "authenticate", DATABASE, "nobody", "x", {})["result"] is False
    assert rpc.call("common", "login", DATABASE, "admin", "admin")["result"] == 2


def test_error_envelope_shape_is_http_200_with_odoo_data(rpc: Rpc) -> None:
    answer = rpc.ex("res.partner", "create", [{"name": "x", "no_such_field": 1}])
    error = answer["error"]
    assert answer["id"] == 7 and answer["jsonrpc"] == "2.0"
    assert error["code"] == 200 and error["message"] == "Odoo Server Error"
    data = error["data"]
    assert data["name"] == "builtins.ValueError"
    assert data["message"] == "Invalid field 'no_such_field' on model 'res.partner'"
    assert data["arguments"] == [data["message"]]
    assert data["context"] == {}
    assert data["debug"].startswith("Traceback (most recent call last):")


def test_transport_level_answers(url: str) -> None:
    with httpx.Client() as http:
        bad_json = http.post(f"{url}/jsonrpc", content=b"{nope", headers={"content-type": "application/json"})
        assert (bad_json.status_code, bad_json.text) == (400, "Invalid JSON data")
        wrong_type = http.post(f"{url}/jsonrpc", content=b"{}", headers={"content-type": "text/plain"})
        assert wrong_type.status_code == 400 and "type=&#39;json&#39;" in wrong_type.text
        no_id = http.post(
            f"{url}/jsonrpc", json={"params": {"service": "common", "method": "version", "args": []}}
        )
        assert no_id.json()["id"] is None and "result" in no_id.json()
        unknown = http.post(f"{url}/nowhere", json={"jsonrpc": "2.0", "id": 1, "params": {}})
        assert unknown.status_code == 200 and unknown.json()["error"]["code"] == 404
        session = http.post(f"{url}/web/dataset/call_kw", json={"jsonrpc": "2.0", "id": 1, "params": {}})
        error = session.json()["error"]
        assert (error["code"], error["message"]) == (100, "Odoo Session Expired")
        assert error["data"]["name"] == "odoo.http.SessionExpiredException"


@pytest.mark.parametrize(
    ("model", "method", "args", "name", "message"),
    [
        ("no.such.model", "search", [[]], "odoo.exceptions.UserError", "Object no.such.model doesn't exist"),
        (
            "res.partner",
            "no_such_method",
            [[]],
            "builtins.AttributeError",
            "The method 'no_such_method' does not exist on the model 'res.partner'",
        ),
        (
            "res.partner",
            "_private",
            [[]],
            "odoo.exceptions.AccessError",
            "Private methods (such as _private) cannot be called remotely.",
        ),
        (
            "res.partner",
            "search",
            [[["name", "like_bad", "x"]]],
            "builtins.ValueError",
            "Invalid leaf ('name', 'like_bad', 'x')",
        ),
        (
            "res.partner",
            "search",
            [[["name", "x"]]],
            "builtins.ValueError",
            "not enough values to unpack (expected 3, got 2)",
        ),
        (
            "res.partner",
            "search",
            [[["no_such_field", "=", 1]]],
            "builtins.ValueError",
            "Invalid field res.partner.no_such_field in leaf ('no_such_field', '=', 1)",
        ),
        (
            "res.partner",
            "search_read",
            [[], ["no_such_field"]],
            "builtins.ValueError",
            "Invalid field 'no_such_field' on model 'res.partner'",
        ),
        (
            "res.partner",
            "write",
            [[999999], {"name": "x"}],
            "odoo.exceptions.MissingError",
            "Record does not exist or has been deleted.\n(Record: res.partner(999999,), User: 2)",
        ),
        (
            "res.partner",
            "create",
            [{"name": "x", "gender": "F"}],
            "builtins.ValueError",
            "Wrong value for res.partner.gender: 'F'",
        ),
        (
            "res.partner",
            "create",
            [{"name": "x", "birthdate": "17/05/1990"}],
            "builtins.ValueError",
            "time data '17/05/1990' does not match format '%Y-%m-%d'",
        ),
        (
            "res.partner",
            "create",
            [{"name": "x", "birthdate": "2999-01-01"}],
            "odoo.exceptions.ValidationError",
            "Registration date must be later than the birth date.",
        ),
        (
            "res.partner",
            "create",
            [{"is_registrant": True}],
            "odoo.exceptions.ValidationError",
            "The operation cannot be completed: Contacts require a name",
        ),
        (
            "res.partner",
            "create",
            [{"name": "H", "kind": 9999}],
            "odoo.exceptions.ValidationError",
            "The operation cannot be completed: another model requires the record being deleted. "
            "If possible, archive it instead.\n\nModel: Contact (res.partner)\n"
            "Constraint: res_partner_kind_fkey\n",
        ),
    ],
)
def test_error_catalogue(rpc: Rpc, model: str, method: str, args: list, name: str, message: str) -> None:
    data = rpc.err(model, method, args)
    assert (data["name"], data["message"]) == (name, message)


def test_string_many2one_leaks_the_postgres_error(rpc: Rpc, fake: FakeOpenSpp) -> None:
    data = rpc.err("res.partner", "create", [{"is_group": True, "name": "H", "kind": "Household"}])
    assert data["name"] == "psycopg2.errors.InvalidTextRepresentation"
    assert data["message"].startswith('invalid input syntax for type integer: "Household"\nLINE 1: ')
    assert any(f["flag"] == "string_many2one" for f in fake.flags)


def test_rejections_hold_on_every_write_path(rpc: Rpc) -> None:
    """What Odoo refuses on create it refuses on write, on other models and through ``load`` too; a client
    that only ever creates would otherwise pass against the fake and fail on its first update."""
    pid = _person(rpc, "A")
    unknown = rpc.err("res.partner", "write", [[pid], {"no_such_field": 1}])
    assert (unknown["name"], unknown["message"]) == (
        "builtins.ValueError",
        "Invalid field 'no_such_field' on model 'res.partner'",
    )
    for model, method, args in (
        ("res.partner", "write", [[pid], {"area_id": "North"}]),
        ("g2p.reg.id", "create", [{"partner_id": pid, "id_type": "National ID", "value": "N-1"}]),
    ):  # the second is DataCollect's adapter sending the ID type's name
        data = rpc.err(model, method, args)
        assert data["name"] == "psycopg2.errors.InvalidTextRepresentation", (model, method)
    column = rpc.err("res.partner", "load", [["id", "no_such_field"], [["dcsync.x", "1"]]])
    assert column["name"] == "builtins.KeyError", "an unknown load column is an error envelope (observed)"
    for method, args, kwargs in (
        ("create", [{"name": "x"}], None),
        ("search_read", [[]], {"fields": ["name"]}),
    ):
        missing = rpc.err("no.such.model", method, args, kwargs)
        assert (missing["name"], missing["message"]) == (
            "odoo.exceptions.UserError",
            "Object no.such.model doesn't exist",
        )
    assert rpc.ok("res.partner", "read", [[pid], ["name"]]) == [{"id": pid, "name": "A"}], "nothing applied"


def test_required_field_and_call_shape_errors(rpc: Rpc) -> None:
    group = _household(rpc)
    data = rpc.err("g2p.group.membership", "create", [{"group": group}])
    assert data["message"].endswith(
        "Model: Group Membership (g2p.group.membership)\nField: Individual (individual)\n"
    )
    short = rpc.call("object", "execute_kw", DATABASE, 2, "admin", "res.partner")["error"]["data"]
    assert short == {
        **short,
        "name": "builtins.TypeError",
        "message": "execute_kw() missing 2 required positional arguments: 'method' and 'args'",
    }
    typo = rpc.err("res.partner", "search_read", [[]], {"fieldz": ["name"]})
    assert typo["message"] == "BaseModel._read_format() got an unexpected keyword argument 'fieldz'"
    assert rpc.call("nosvc", "x")["error"]["data"]["name"] == "builtins.KeyError"


def test_auth_errors_inside_execute_kw(rpc: Rpc) -> None:
    wrong = rpc.call("object", "execute_kw", DATABASE, 2, "nope", "res.partner", "search", [[]])
    assert wrong["error"]["data"]["name"] == "odoo.exceptions.AccessDenied"
    assert wrong["error"]["data"]["message"] == "Access Denied"
    ghost = rpc.call("object", "execute_kw", DATABASE, 999, "x", "res.partner", "search", [[]])
    assert ghost["error"]["data"]["message"] == (
        "Record does not exist or has been deleted.\n(Record: res.users(999,), User: 999)"
    )
    nodb = rpc.call("common", "authenticate", "nodb", "admin", "admin", {})["error"]["data"]
    assert nodb["name"] == "psycopg2.OperationalError" and 'database "nodb" does not exist' in nodb["message"]


def test_api_keys_work_in_place_of_passwords(rpc: Rpc) -> None:
    uid = rpc.call("common", "authenticate", DATABASE, "registrar", "registrar-api-key-0001", {})["result"]
    answer = rpc.call(
        "object", "execute_kw", DATABASE, uid, "registrar-api-key-0001", "res.partner", "search_count", [[]]
    )
    assert answer["result"] == 0


def test_login_cooldown_after_repeated_failures(rpc: Rpc, fake: FakeOpenSpp) -> None:
    fake.clock.freeze()
    for _ in range(5):
        assert rpc.call("common", "authenticate", DATABASE, "admin", "bad", {})["result"] is False
    assert rpc.call("common", "authenticate", DATABASE, "admin", "admin", {})["result"] is False
    fake.clock.advance(61)
    assert rpc.call("common", "authenticate", DATABASE, "admin", "admin", {})["result"] == 2


def test_kwargs_outside_args_are_silently_ignored(rpc: Rpc, fake: FakeOpenSpp) -> None:
    for i in range(3):
        _person(rpc, f"P{i}")
    params = {
        "service": "object",
        "method": "execute_kw",
        "args": [
            DATABASE,
            rpc.login(),
            "admin",
            "res.partner",
            "search_read",
            [[["is_registrant", "=", True]]],
        ],
        "kwargs": {"fields": ["name"], "limit": 1},
    }
    rows = rpc.raw(params)["result"]
    assert len(rows) == 3, "limit in params.kwargs must be ignored, as Odoo does"
    assert len(rows[0]) > 30, "fields in params.kwargs must be ignored: all fields come back"
    kinds = {f["flag"] for f in fake.flags}
    assert {"params_kwargs", "fields_all", "search_without_order"} <= kinds
    assert fake.requests[-1]["params_kwargs"] == {"fields": ["name"], "limit": 1}


def test_read_drops_missing_ids_but_write_and_unlink_raise(rpc: Rpc) -> None:
    pid = _person(rpc, "A")
    assert rpc.ok("res.partner", "read", [[pid, 999999], ["name"]]) == [{"id": pid, "name": "A"}]
    assert rpc.err("res.partner", "unlink", [[999999]])["name"] == "odoo.exceptions.MissingError"


def test_create_returns_id_for_dict_and_ids_for_list(rpc: Rpc) -> None:
    one = rpc.ok("res.partner", "create", [{"name": "A"}])
    many = rpc.ok("res.partner", "create", [[{"name": "B"}, {"name": "C"}, {"name": "D"}]])
    assert isinstance(one, int) and many == [one + 1, one + 2, one + 3]


def test_each_call_is_one_transaction(rpc: Rpc) -> None:
    before = rpc.ok("res.partner", "search_count", [[]])
    rpc.err("res.partner", "create", [[{"name": "ok"}, {"name": "bad", "gender": "F"}]])
    assert rpc.ok("res.partner", "search_count", [[]]) == before


# -- memberships and the Head rule ----------------------------------------------------------------------
def test_second_head_is_refused_on_group_write(rpc: Rpc) -> None:
    group = _household(rpc)
    a, b = _person(rpc, "A"), _person(rpc, "B")
    rpc.ok(
        "res.partner",
        "write",
        [[group], {"group_membership_ids": [[0, 0, {"individual": a, "kind": [[6, 0, [3]]]}]]}],
    )
    data = rpc.err(
        "res.partner",
        "write",
        [[group], {"group_membership_ids": [[0, 0, {"individual": b, "kind": [[6, 0, [3]]]}]]}],
    )
    assert (data["name"], data["message"]) == (
        "odoo.exceptions.ValidationError",
        "Only one Head is allowed per group",
    )
    dup = rpc.err("res.partner", "write", [[group], {"group_membership_ids": [[0, 0, {"individual": a}]]}])
    assert dup["message"] == "Duplication of Member is not allowed "


def test_a_group_holding_two_heads_blocks_writes_to_it_and_its_members(rpc: Rpc) -> None:
    group = _household(rpc)
    a, b = _person(rpc, "A"), _person(rpc, "B")
    # the direct membership path is not checked (observed), so two Heads can exist
    m1 = rpc.ok("g2p.group.membership", "create", [{"group": group, "individual": a, "kind": [[6, 0, [3]]]}])
    rpc.ok("g2p.group.membership", "create", [{"group": group, "individual": b, "kind": [[6, 0, [3]]]}])
    assert (
        rpc.err("res.partner", "write", [[group], {"name": "renamed"}])["message"]
        == "Only one Head is allowed per group"
    )
    assert (
        rpc.err("res.partner", "write", [[a], {"given_name": "x"}])["message"]
        == "Only one Head is allowed per group"
    )
    rpc.ok("g2p.group.membership", "write", [[m1], {"kind": [[5, 0, 0]]}])
    assert rpc.ok("res.partner", "write", [[group], {"name": "renamed"}]) is True


def test_group_created_with_two_heads_inline_is_accepted(rpc: Rpc) -> None:
    a, b = _person(rpc, "A"), _person(rpc, "B")
    heads = [[0, 0, {"individual": p, "kind": [[6, 0, [3]]]}] for p in (a, b)]
    assert isinstance(_household(rpc, group_membership_ids=heads), int)


def test_x2many_commands(rpc: Rpc) -> None:
    group = _household(rpc)
    a, b, c = _person(rpc, "A"), _person(rpc, "B"), _person(rpc, "C")
    rpc.ok(
        "res.partner",
        "write",
        [[group], {"group_membership_ids": [[0, 0, {"individual": a}], [0, 0, {"individual": b}]]}],
    )
    members = rpc.ok(
        "g2p.group.membership",
        "search_read",
        [[["group", "=", group]]],
        {"fields": ["individual", "kind"], "order": "id asc"},
    )
    assert [m["individual"][0] for m in members] == [a, b]
    m_a, m_b = members[0]["id"], members[1]["id"]
    rpc.ok(
        "res.partner", "write", [[group], {"group_membership_ids": [[1, m_a, {"kind": [[6, 0, [5, 8]]]}]]}]
    )
    # read in the kinds' own order ("id desc"), not in the order they were given
    assert rpc.ok("g2p.group.membership", "read", [[m_a], ["kind"]])[0]["kind"] == [8, 5]
    rpc.ok("g2p.group.membership", "write", [[m_a], {"kind": [[3, 5, 0], [4, 12, 0]]}])
    assert rpc.ok("g2p.group.membership", "read", [[m_a], ["kind"]])[0]["kind"] == [12, 8]
    for command in ([3, m_b, 0], [5, 0, 0], [6, 0, [m_a]]):
        data = rpc.err("res.partner", "write", [[group], {"group_membership_ids": [command]}])
        assert (
            data["name"] == "odoo.exceptions.ValidationError"
            and "mandatory field is not set" in data["message"]
        )
    m_c = rpc.ok("g2p.group.membership", "create", [{"group": _household(rpc, "Other"), "individual": c}])
    rpc.ok("res.partner", "write", [[group], {"group_membership_ids": [[4, m_c, 0]]}])
    assert rpc.ok("g2p.group.membership", "read", [[m_c], ["group"]])[0]["group"][0] == group
    assert (
        rpc.err("res.partner", "write", [[group], {"group_membership_ids": [[2, m_c, 0]]}], user="registrar")[
            "name"
        ]
        == "odoo.exceptions.AccessError"
    )
    rpc.ok("res.partner", "write", [[group], {"group_membership_ids": [[2, m_c, 0]]}])
    assert rpc.ok("g2p.group.membership", "search_count", [[["id", "=", m_c]]]) == 0
    assert rpc.err("g2p.group.membership", "write", [[m_a], {"kind": [[1]]}])["name"] == "builtins.IndexError"


# -- write_date ---------------------------------------------------------------------------------------
def test_write_date_is_stored_in_microseconds_and_returned_in_seconds(rpc: Rpc, fake: FakeOpenSpp) -> None:
    ids = rpc.ok("res.partner", "create", [[{"name": "A"}, {"name": "B"}, {"name": "C"}]])
    state = {r["id"]: r for r in fake.state("res.partner")["res.partner"]}
    stamps = {state[i]["write_date"] for i in ids}
    assert len(stamps) == 1, "one call, one transaction timestamp"
    stored = stamps.pop()
    assert len(stored) == 26
    rows = rpc.ok("res.partner", "read", [ids, ["write_date"]])
    assert {r["write_date"] for r in rows} == {stored[:19]}
    second = stored[:19]
    same_second = rpc.ok(
        "res.partner", "search", [[["write_date", ">", second], ["id", "in", ids]]], {"order": "id asc"}
    )
    micro = parse_server_datetime(stored)
    expected = ids if micro.microsecond else []
    assert same_second == expected, "'>' on the truncated second re-delivers that second's records"
    just_after = stored[:20] + f"{micro.microsecond:06d}"
    assert rpc.ok("res.partner", "search", [[["write_date", ">", just_after]]], {"order": "id asc"}) == []


def test_membership_changes_bump_the_group(rpc: Rpc, fake: FakeOpenSpp) -> None:
    fake.clock.freeze(parse_server_datetime("2030-01-01 10:00:00.250000"))
    group = _household(rpc)
    person = _person(rpc, "A")
    fake.clock.advance(5)
    rpc.ok("g2p.group.membership", "create", [{"group": group, "individual": person}])
    assert rpc.ok("res.partner", "read", [[group], ["write_date"]])[0]["write_date"] == "2030-01-01 10:00:05"
    fake.clock.advance(5)
    rpc.ok("res.partner", "write", [[person], {"given_name": "x"}])
    assert rpc.ok("res.partner", "read", [[group], ["write_date"]])[0]["write_date"] == "2030-01-01 10:00:10"
    fake.clock.advance(5)
    assert fake.run_jobs() == [group]
    assert rpc.ok("res.partner", "read", [[group], ["write_date", "z_ind_grp_num_individuals"]])[0] == {
        "id": group,
        "write_date": "2030-01-01 10:00:15",
        "z_ind_grp_num_individuals": 1,
    }


# -- domains, order, paging -----------------------------------------------------------------------------
def test_domains(rpc: Rpc) -> None:
    group = _household(rpc, "Household North", area_id=9)
    a = _person(rpc, "Alice", given_name="Alice", gender="Female", area_id=7)
    b = _person(rpc, "Bob", given_name="Bob", gender="Male")
    c = _person(rpc, "Carol_x", email="c@example.org")
    rpc.ok("g2p.reg.id", "create", [{"partner_id": a, "id_type": 4, "value": "N-1"}])
    rpc.ok("g2p.group.membership", "create", [{"group": group, "individual": a}])
    rpc.ok("res.partner", "write", [[c], {"active": False}])

    def ids(domain: list, **kw: object) -> list[int]:
        return rpc.ok("res.partner", "search", [domain], {"order": "id asc", **kw})

    people = [["is_registrant", "=", True], ["is_group", "=", False]]
    assert ids(people) == [a, b]
    assert ids(people, context={"active_test": False}) == [a, b, c]
    assert ids([*people, ["active", "in", [True, False]]]) == [a, b, c]
    assert ids(["|", ["name", "=", "Alice"], ["name", "=", "Bob"]]) == [a, b]
    assert ids([*people, "!", ["name", "=", "Alice"]]) == [b]
    assert ids([["gender", "!=", "Female"], ["is_group", "=", False]]) == [b], (
        "negative operators match empty values"
    )
    assert ids([["email", "=?", False], *people]) == [a, b]
    assert ids([["name", "ilike", "ALI"]]) == [a]
    assert ids([["name", "=like", "B%"]]) == [b]
    assert ids([["name", "like", "_"]], context={"active_test": False}) == [group, a, b, c], (
        "'_' is a wildcard"
    )
    assert ids([["id", "in", [b, a, 424242]]]) == [a, b]
    assert ids([["id", "not in", [a]], *people]) == [b]
    assert ids([["area_id", "child_of", 7]]) == [group, a]
    assert ids([["reg_ids", "any", [["id_type", "=", 4], ["value", "=", "N-1"]]]]) == [a]
    assert ids([["reg_ids.value", "=", "N-1"]]) == [a]
    assert ids([["group_membership_ids", "!=", False]]) == [group]
    assert (
        rpc.ok("g2p.group.membership", "search", [[["group.name", "ilike", "north"]]], {"order": "id asc"})
        != []
    )
    assert rpc.ok("res.partner", "search_count", [people]) == 2


def test_order_limit_offset(rpc: Rpc) -> None:
    ids = rpc.ok("res.partner", "create", [[{"name": n} for n in ("b", "a", "c", "a")]])

    def page(**kw: object) -> list[int]:
        return rpc.ok("res.partner", "search", [[]], kw)

    assert page() == [ids[3], ids[1], ids[0], ids[2]], "default partner order is name asc, id desc"
    assert page(order="name desc, id asc") == [ids[2], ids[0], ids[1], ids[3]]
    assert page(order="id asc", limit=2, offset=1) == ids[1:3]
    assert page(order="id asc", offset=10) == []
    positional = rpc.ok("res.partner", "search_read", [[], ["name"], 1, 2, "id asc"])
    assert [r["id"] for r in positional] == ids[1:3]
    assert rpc.err("res.partner", "search", [[]], {"order": "nope asc"})["name"] == "builtins.ValueError"
    assert (
        rpc.err("res.partner", "search", [[]], {"order": "name; drop"})["name"] == "odoo.exceptions.UserError"
    )


def test_many2one_values_are_read_as_pairs(rpc: Rpc) -> None:
    group = _household(rpc)
    row = rpc.ok("res.partner", "read", [[group], ["kind", "area_id", "email", "is_group", "company_id"]])[0]
    assert row == {
        "id": group,
        "kind": [3, "Household"],
        "area_id": False,
        "email": False,
        "is_group": True,
        "company_id": [1, "My Company"],
    }
    assert rpc.ok("res.partner", "read", [[group], ["kind"]], {"load": None})[0]["kind"] == 3


# -- load / xml-ids / registrar access -----------------------------------------------------------------
def test_registrar_upserts_through_load_but_cannot_touch_model_data(rpc: Rpc) -> None:
    first = rpc.ok(
        "res.partner",
        "load",
        [["id", "name", "is_registrant"], [["dcsync.abc", "Ann", "1"]]],
        user="registrar",
    )
    again = rpc.ok(
        "res.partner",
        "load",
        [["id", "name", "is_registrant"], [["dcsync.abc", "Anne", "1"]]],
        user="registrar",
    )
    assert first["ids"] == again["ids"] and first["messages"] == []
    pid = first["ids"][0]
    assert rpc.ok("res.partner", "read", [[pid], ["name"]], user="registrar")[0]["name"] == "Anne"
    assert rpc.ok("res.partner", "get_external_id", [[pid]], user="registrar") == {str(pid): "dcsync.abc"}
    assert rpc.ok("ir.model.data", "check_object_reference", ["dcsync", "abc"], user="registrar") == [
        "res.partner",
        pid,
    ]
    denied = rpc.err("ir.model.data", "search_read", [[]], {"fields": ["name"]}, user="registrar")
    assert (
        denied["name"] == "odoo.exceptions.AccessError"
        and "Administration/Access Rights" in denied["message"]
    )
    assert (
        rpc.err(
            "ir.model.data",
            "create",
            [{"module": "x", "name": "y", "model": "res.partner", "res_id": 1}],
            user="registrar",
        )["name"]
        == "odoo.exceptions.AccessError"
    )


def test_load_reports_row_errors_as_messages(rpc: Rpc) -> None:
    result = rpc.ok(
        "res.partner",
        "load",
        [["id", "name", "gender"], [["dcsync.a", "A", "Female"], ["dcsync.b", "B", "F"]]],
    )
    assert result["ids"] is False
    assert result["messages"] == [
        {
            "type": "error",
            "record": 1,
            "rows": {"from": 1, "to": 1},
            "field": "gender",
            "field_name": "Gender",
            "message": "Value 'F' not found in selection field 'Gender'",
            "moreinfo": ["Female", "Male"],
        }
    ]
    assert rpc.ok("res.partner", "search_count", [[["name", "=", "A"]]]) == 0, "nothing saved"
    assert (
        rpc.err("res.partner", "load", [["id", "nope"], [["dcsync.c", "x"]]])["name"] == "builtins.KeyError"
    )
    constraint = rpc.ok("res.partner", "load", [["id", "is_registrant"], [["dcsync.d", "1"]]])
    assert constraint["messages"][0]["message"] == "Contacts require a name"


def test_xmlid_rules(rpc: Rpc) -> None:
    pid = _person(rpc, "A")
    rpc.ok(
        "ir.model.data",
        "create",
        [{"module": "connector", "name": "reg_abc123", "model": "res.partner", "res_id": pid}],
    )
    dup = rpc.err(
        "ir.model.data",
        "create",
        [{"module": "connector", "name": "reg_abc123", "model": "res.partner", "res_id": pid}],
    )
    assert (
        'duplicate key value violates unique constraint "ir_model_data_module_name_uniq_index"'
        in dup["message"]
    )
    assert (
        rpc.err(
            "ir.model.data", "create", [{"module": "c", "name": "a b", "model": "res.partner", "res_id": pid}]
        )["message"]
        == "External IDs cannot contain spaces"
    )
    rpc.ok("res.partner", "unlink", [[pid]])
    assert rpc.ok("ir.model.data", "search_count", [[["module", "=", "connector"]]]) == 0, (
        "xml-ids go with their record"
    )


def test_registrars_cannot_delete(rpc: Rpc) -> None:
    group = _household(rpc)
    person = _person(rpc, "A")
    mid = rpc.ok("g2p.group.membership", "create", [{"group": group, "individual": person}])
    lone = _person(rpc, "L")  # one with a membership fails its foreign key first, as on Odoo
    partner = rpc.err("res.partner", "unlink", [[lone]], user="registrar")
    assert (partner["name"], partner["message"]) == (
        "odoo.exceptions.UserError",
        "You do not have the necessary permissions to delete partner records. "
        "Please contact the administrator.",
    )
    membership = rpc.err("g2p.group.membership", "unlink", [[mid]], user="registrar")
    assert membership["name"] == "odoo.exceptions.AccessError"
    assert "OpenG2P Module Access/Administrator" in membership["message"]
    assert (
        rpc.err("g2p.group.membership.kind", "create", [{"name": "Cousin"}], user="registrar")["name"]
        == "odoo.exceptions.AccessError"
    )
    blocked = rpc.err("res.partner", "unlink", [[group]])
    assert blocked["message"].endswith("Constraint: g2p_group_membership_group_fkey\n")


def test_reg_id_rules(rpc: Rpc) -> None:
    person = _person(rpc, "A")
    rpc.ok("g2p.reg.id", "create", [{"partner_id": person, "id_type": 4, "value": "1"}])
    assert (
        rpc.err("g2p.reg.id", "create", [{"partner_id": person, "id_type": 4, "value": "2"}])["name"]
        == "odoo.exceptions.ValidationError"
    )
    assert (
        rpc.err("g2p.reg.id", "create", [{"partner_id": person, "id_type": 9, "value": "bad"}])["name"]
        == "odoo.exceptions.ValidationError"
    )
    assert (
        rpc.err("g2p.reg.id", "create", [{"partner_id": person, "id_type": "Passport", "value": "A1234567"}])[
            "name"
        ]
        == "psycopg2.errors.InvalidTextRepresentation"
    )


def test_gender_selection_comes_from_gender_types(rpc: Rpc) -> None:
    gender = rpc.ok(
        "res.partner", "fields_get", [], {"allfields": ["gender"], "attributes": ["type", "selection"]}
    )
    assert gender == {"gender": {"type": "selection", "selection": [["Female", "Female"], ["Male", "Male"]]}}
    data = rpc.err("gender.type", "create", [[{"code": "X", "value": "X"}, {"code": "Y", "value": "Y"}]])
    assert data["message"].startswith("Expected singleton: gender.type(")


def test_computed_name_variant(rpc: Rpc, fake: FakeOpenSpp) -> None:
    fake.naming = "computed"
    pid = rpc.ok(
        "res.partner",
        "create",
        [{"is_registrant": True, "family_name": "Doe", "given_name": "Jane", "addl_name": "Marie"}],
    )
    assert rpc.ok("res.partner", "read", [[pid], ["name"]])[0]["name"] == "DOE, JANE, MARIE"


# -- faults -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kind", "name"),
    [
        ("serialization_failure", "psycopg2.errors.SerializationFailure"),
        ("lock_not_available", "psycopg2.errors.LockNotAvailable"),
        ("deadlock", "psycopg2.errors.DeadlockDetected"),
        ("operational_error", "psycopg2.OperationalError"),
        ("pool_full", "psycopg2.pool.PoolError"),
        ("access_denied", "odoo.exceptions.AccessDenied"),
        ("missing_error", "odoo.exceptions.MissingError"),
    ],
)
def test_database_and_odoo_faults_roll_back(rpc: Rpc, fake: FakeOpenSpp, kind: str, name: str) -> None:
    fake.faults.add({"kind": kind, "model": "res.partner", "method": "create"})
    assert rpc.err("res.partner", "create", [{"name": "A"}])["name"] == name
    assert rpc.ok("res.partner", "search_count", [[]]) == 0
    assert isinstance(rpc.ok("res.partner", "create", [{"name": "A"}]), int), "fires once by default"


def test_validation_fault_targets_matching_values(rpc: Rpc, fake: FakeOpenSpp) -> None:
    fake.faults.add(
        {
            "kind": "validation_error",
            "message": "Bad name",
            "match": [["name", "=", "Bad"]],
            "probability": 1.0,
        }
    )
    assert isinstance(rpc.ok("res.partner", "create", [{"name": "Good"}]), int)
    assert rpc.err("res.partner", "create", [[{"name": "Good2"}, {"name": "Bad"}]])["message"] == "Bad name"
    assert rpc.err("res.partner", "create", [{"name": "Bad"}])["message"] == "Bad name"


def test_http_faults(url: str, rpc: Rpc, fake: FakeOpenSpp) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "params": {"service": "common", "method": "version", "args": []}}
    with httpx.Client(timeout=2) as http:
        for spec, check in [
            ({"kind": "http_status", "status": 503}, lambda r: r.status_code == 503 and "<html>" in r.text),
            ({"kind": "http_500_html"}, lambda r: r.status_code == 500),
            (
                {"kind": "invalid_json_body"},
                lambda r: r.status_code == 200 and r.headers["content-type"] == "application/json",
            ),
            ({"kind": "omit_result"}, lambda r: r.json() == {"jsonrpc": "2.0", "id": 1}),
            ({"kind": "session_expired"}, lambda r: r.json()["error"]["code"] == 100),
        ]:
            fake.faults.add({**spec, "service": "common"})
            assert check(http.post(f"{url}/jsonrpc", json=body)), spec
        fake.faults.add({"kind": "reset_connection", "service": "common"})
        with pytest.raises(httpx.RemoteProtocolError):
            http.post(f"{url}/jsonrpc", json=body)
        fake.faults.add({"kind": "slow", "ms": 500, "service": "common"})
        with pytest.raises(httpx.ReadTimeout):
            http.post(f"{url}/jsonrpc", json=body, timeout=0.1)


def test_commit_then_fail_applies_the_call(url: str, rpc: Rpc, fake: FakeOpenSpp) -> None:
    fake.faults.add({"kind": "commit_then_fail", "then": "502", "model": "res.partner", "method": "create"})
    args = [DATABASE, rpc.login(), "admin", "res.partner", "create", [{"name": "Committed"}]]
    body = {"jsonrpc": "2.0", "id": 1, "params": {"service": "object", "method": "execute_kw", "args": args}}
    with httpx.Client() as http:
        assert http.post(f"{url}/jsonrpc", json=body).status_code == 502
    assert rpc.ok("res.partner", "search_count", [[["name", "=", "Committed"]]]) == 1


def test_delay_commit_hides_a_stamped_transaction(url: str, rpc: Rpc, fake: FakeOpenSpp) -> None:
    fake.faults.add({"kind": "delay_commit", "ms": 400, "model": "res.partner", "method": "create"})
    done = threading.Event()

    def slow_create() -> None:
        Rpc(url).ok("res.partner", "create", [{"name": "Late"}])
        done.set()

    thread = threading.Thread(target=slow_create)
    thread.start()
    deadline = time.monotonic() + 5
    while not fake.store.pending and time.monotonic() < deadline:
        time.sleep(0.01)
    assert rpc.ok("res.partner", "search_count", [[["name", "=", "Late"]]]) == 0, "not committed yet"
    thread.join(5)
    assert done.is_set()
    assert rpc.ok("res.partner", "search_count", [[["name", "=", "Late"]]]) == 1


def test_probabilistic_faults_are_reproducible(fake: FakeOpenSpp) -> None:
    def fire_pattern() -> list[bool]:
        fake.faults.clear()
        fake.faults.reseed(42)
        fake.faults.add({"kind": "serialization_failure", "probability": 0.3})
        return [fake.faults.pick("object", "res.partner", "create", []) is not None for _ in range(50)]

    first, second = fire_pattern(), fire_pattern()
    assert first == second and 5 < sum(first) < 25


def test_control_api_over_http(url: str, rpc: Rpc) -> None:
    rpc.ok("res.partner", "create", [{"name": "A"}])
    with httpx.Client() as http:
        http.post(f"{url}/__fake__/clock", json={"freeze": "2031-02-03 04:05:06.789000"})
        rpc.ok("res.partner", "create", [{"name": "B"}])
        state = http.get(f"{url}/__fake__/state", params={"model": "res.partner"}).json()["res.partner"]
        assert state[-1]["write_date"] == "2031-02-03 04:05:06.789000"
        requests = http.get(f"{url}/__fake__/requests").json()
        assert all(r["args"][2] == "***" for r in requests if r["service"] == "object")
        assert http.post(f"{url}/__fake__/faults", json={"kind": "pool_full"}).json()["ids"]
        assert http.get(f"{url}/__fake__/faults").json()[0]["kind"] == "pool_full"
        http.delete(f"{url}/__fake__/faults")
        assert http.get(f"{url}/__fake__/stats").json()["calls"] >= 2
        http.post(f"{url}/__fake__/reset", json={})
        http.post(f"{url}/__fake__/clock", json={"unfreeze": True})
    assert rpc.ok("res.partner", "search_count", [[]]) == 0


def test_a_user_outside_the_registrar_group_cannot_read_membership_kinds(rpc: Rpc, fake: FakeOpenSpp) -> None:
    """``odoo-observed.md`` §7: an internal user outside the Registrar group fails at the first read of
    ``g2p.group.membership.kind`` with an AccessError (partner fields and defaults it may read)."""
    fake.add_user("outsider", "outsider", ["base.group_user"])
    assert rpc.ok("res.partner", "fields_get", [], {"attributes": ["type"]}, user="outsider")
    refused = rpc.err("g2p.group.membership.kind", "search_read", [[]], {"fields": ["name"]}, user="outsider")
    assert refused["name"] == "odoo.exceptions.AccessError"
    assert "OpenG2P Module Access/Registrar" in refused["message"]
    assert rpc.ok("g2p.group.membership.kind", "search_read", [[]], {"fields": ["name"]}, user="registrar")


def test_stock_openg2p_has_no_areas() -> None:
    """``odoo-observed.md`` §7: the OpenG2P registry core has no ``spp_area``: ``area_id`` is an invalid
    field of ``res.partner`` and ``spp.area`` is no model."""
    stock = FakeOpenSpp(flavour="openg2p")
    assert "area_id" not in stock.registry["res.partner"].fields
    assert "spp.area" not in stock.registry
    assert "area_id" in FakeOpenSpp().registry["res.partner"].fields


def test_has_group_is_a_model_method_as_in_odoo_17(rpc: Rpc) -> None:
    """``res.users.has_group`` is ``@api.model`` in Odoo 17 (observed on a real 17.0 server): the group's
    xml-id is its only argument and it answers for the calling user; ids in front are a TypeError."""
    group = "g2p_registry_base.group_g2p_registrar"
    assert rpc.ok("res.users", "has_group", [group], user="registrar") is True
    assert rpc.ok("res.users", "has_group", ["g2p_registry_base.group_g2p_admin"], user="registrar") is False
    assert rpc.ok("res.users", "has_group", ["nope.nope"], user="registrar") is False
    uid = rpc.login("registrar")
    cases = [
        (
            [[uid], group],
            "builtins.TypeError",
            "Users.has_group() takes 2 positional arguments but 3 were given",
        ),
        (
            [],
            "builtins.TypeError",
            "Users.has_group() missing 1 required positional argument: 'group_ext_id'",
        ),
        (
            ["group_g2p_registrar"],
            "builtins.AssertionError",
            "External ID 'group_g2p_registrar' must be fully qualified",
        ),
        (["a.b.c"], "builtins.ValueError", "too many values to unpack (expected 2)"),
    ]
    for args, name, message in cases:
        error = rpc.ex("res.users", "has_group", args, user="registrar")["error"]["data"]
        assert (error["name"], error["message"]) == (name, message), args

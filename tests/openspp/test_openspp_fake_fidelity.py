"""The fake OpenSPP server is never more lenient than the real Odoo 17 + OpenG2P registry it stands for.

Each test pins one place where the fake once accepted what the real server refuses, or answered in a
different shape or wording. The facts come from ``odoo-observed.md`` (a live server) and, where it is
silent, from the OpenG2P registry modules' own declarations (``ir.model.access.csv``, ``_order``,
``@api.constrains`` messages) at the commit that server ran (``ff779ec``).
"""

from __future__ import annotations

import pytest
from openspp_support import Rpc

from connectors.openspp.fake import FakeOpenSpp

pytestmark = pytest.mark.usefixtures("fake")

USER = "base.group_user"


def _access_message(operation: str, description: str, model: str, *groups: str) -> str:
    allowed = "\n".join(f"\t- {g}" for g in groups)
    return (
        f"You are not allowed to {operation} '{description}' ({model}) records.\n\n"
        f"This operation is allowed for the following groups:\n{allowed}\n\n"
        "Contact your administrator to request access if necessary."
    )


# -- access rights: the registry modules grant nothing to plain internal users ------------------------
@pytest.mark.parametrize(
    ("model", "description"),
    [
        ("g2p.group.membership", "Group Membership"),
        ("g2p.reg.id", "Registrant ID"),
        ("g2p.id.type", "ID Type"),
        ("g2p.group.kind", "Group Kind"),
        ("g2p.phone.number", "Phone Number"),
    ],
)
def test_registry_models_are_closed_to_users_outside_the_registry_groups(
    rpc: Rpc, fake: FakeOpenSpp, model: str, description: str
) -> None:
    """The OpenG2P ``ir.model.access.csv`` files grant these models to the Registrar and Administrator
    groups only: an internal user outside both gets an AccessError naming exactly those groups."""
    fake.add_user("clerk", "clerk", [USER])
    refused = rpc.err(model, "search_read", [[]], {"fields": ["id"]}, user="clerk")
    assert refused["name"] == "odoo.exceptions.AccessError"
    assert refused["message"] == _access_message(
        "access",
        description,
        model,
        "OpenG2P Module Access/Administrator",
        "OpenG2P Module Access/Registrar",
    )


def test_gender_types_are_readable_by_everyone(rpc: Rpc, fake: FakeOpenSpp) -> None:
    """``gender.type``'s read access has no group: any user may read it, but only the admin group write."""
    fake.add_user("nobody", "nobody", [])
    assert rpc.ok("gender.type", "search_read", [[]], {"fields": ["code"]}, user="nobody")
    refused = rpc.err("gender.type", "create", [{"code": "X", "value": "X"}], user="registrar")
    assert refused["message"] == _access_message(
        "create", "Gender Type", "gender.type", "OpenG2P Module Access/Administrator"
    )


def test_access_errors_name_only_the_groups_the_csv_grants(rpc: Rpc) -> None:
    """A registrar deleting a membership is told only the OpenG2P Administrator may (observed); reading
    ``ir.model.data`` is granted to Administration/Access Rights alone (base's access file)."""
    group = rpc.ok("res.partner", "create", [{"is_registrant": True, "is_group": True, "name": "H"}])
    person = rpc.ok("res.partner", "create", [{"is_registrant": True, "name": "P"}])
    mid = rpc.ok("g2p.group.membership", "create", [{"group": group, "individual": person}])
    refused = rpc.err("g2p.group.membership", "unlink", [[mid]], user="registrar")
    assert refused["message"] == _access_message(
        "delete", "Group Membership", "g2p.group.membership", "OpenG2P Module Access/Administrator"
    )
    refused = rpc.err("ir.model.data", "search_read", [[]], {"fields": ["name"]}, user="registrar")
    assert refused["message"] == _access_message(
        "access", "Model Data", "ir.model.data", "Administration/Access Rights"
    )


# -- deleting: required many2ones default to ondelete="restrict" -----------------------------------------
@pytest.mark.parametrize(
    ("model", "vals", "constraint", "description"),
    [
        (
            "g2p.group.membership",
            {"group": "GROUP", "individual": "PERSON"},
            "g2p_group_membership_individual_fkey",
            "Group Membership",
        ),
        (
            "g2p.reg.id",
            {"partner_id": "PERSON", "id_type": 4, "value": "1"},
            "g2p_reg_id_partner_id_fkey",
            "Registrant ID",
        ),
        (
            "g2p.phone.number",
            {"partner_id": "PERSON", "phone_no": "+2125550100"},
            "g2p_phone_number_partner_id_fkey",
            "Phone Number",
        ),
    ],
)
def test_an_individual_still_referenced_cannot_be_deleted(
    rpc: Rpc, model: str, vals: dict, constraint: str, description: str
) -> None:
    """``individual`` (membership) and ``partner_id`` (ID, phone) are required many2ones declared without
    ``ondelete``, which Odoo makes ``restrict``: deleting the individual fails the foreign key, exactly as
    deleting a group that still has members does (observed), and nothing is deleted."""
    group = rpc.ok("res.partner", "create", [{"is_registrant": True, "is_group": True, "name": "H"}])
    person = rpc.ok("res.partner", "create", [{"is_registrant": True, "name": "P"}])
    ids = {"GROUP": group, "PERSON": person}
    rid = rpc.ok(model, "create", [{k: ids.get(v, v) if isinstance(v, str) else v for k, v in vals.items()}])
    refused = rpc.err("res.partner", "unlink", [[person]])
    assert (refused["name"], refused["message"]) == (
        "odoo.exceptions.ValidationError",
        "The operation cannot be completed: another model requires the record being deleted. "
        f"If possible, archive it instead.\n\nModel: {description} ({model})\nConstraint: {constraint}\n",
    )
    assert rpc.ok("res.partner", "read", [[person], ["name"]])
    assert rpc.ok(model, "read", [[rid], ["id"]])


# -- constraint messages, worded as the registry modules word them -------------------------------------
def test_constraint_messages(rpc: Rpc, fake: FakeOpenSpp) -> None:
    group = rpc.ok("res.partner", "create", [{"is_registrant": True, "is_group": True, "name": "H"}])
    person = rpc.ok("res.partner", "create", [{"is_registrant": True, "name": "P"}])
    ended = rpc.err(
        "g2p.group.membership",
        "create",
        [
            {
                "group": group,
                "individual": person,
                "start_date": "2024-05-02 10:00:00",
                "ended_date": "2024-05-01",
            }
        ],
    )
    assert ended["message"] == "End Date cannot be earlier than Start Date"
    future = rpc.err("res.partner", "create", [{"name": "F", "registration_date": "2999-01-01"}])
    assert (future["name"], future["message"]) == (
        "odoo.exceptions.ValidationError",
        "Registration date must be less than the current date.",
    )
    bad_id = rpc.err("g2p.reg.id", "create", [{"partner_id": person, "id_type": 9, "value": "bad"}])
    assert bad_id["message"] == "The provided Passport ID 'bad' is invalid."
    empty = rpc.err("g2p.id.type", "create", [{"name": False}])
    assert empty["message"] == "Id type should not empty."
    twice = rpc.err("g2p.id.type", "create", [{"name": "passport"}])
    assert twice["message"] == "Id type already exists"


def test_reg_id_validation_is_a_prefix_match_and_skips_empty_values(rpc: Rpc) -> None:
    """``_onchange_id_validation`` uses ``re.match`` (anchored at the start only) and returns early on an
    empty value: a real server takes both, so the fake must not refuse them."""
    person = rpc.ok("res.partner", "create", [{"is_registrant": True, "name": "P"}])
    assert rpc.ok("g2p.reg.id", "create", [{"partner_id": person, "id_type": 9, "value": "A12345678-x"}])
    other = rpc.ok("res.partner", "create", [{"is_registrant": True, "name": "Q"}])
    assert rpc.ok("g2p.reg.id", "create", [{"partner_id": other, "id_type": 9, "value": False}])
    again = rpc.err("g2p.reg.id", "create", [{"partner_id": other, "id_type": 9, "value": "B7654321"}])
    assert again["message"] == "ID Type must be unique."  # a Python constraint: no SQL prefix


# -- configuration records: kinds and gender types ------------------------------------------------------
@pytest.mark.parametrize(
    ("model", "field", "empty", "taken"),
    [
        ("g2p.group.membership.kind", "name", "kind should not empty.", "kind already exists"),
        ("g2p.group.kind", "name", "kind should not empty.", "kind already exists"),
        ("gender.type", "code", "Gender type should not empty.", "Gender type should be unique"),
    ],
)
def test_configuration_names_are_required_and_unique_ignoring_case(
    rpc: Rpc, model: str, field: str, empty: str, taken: str
) -> None:
    """Their name fields are not ``required`` in ``fields_get``: a Python constraint refuses an empty or
    case-insensitively repeated one, with OpenG2P's own wording."""
    described = rpc.ok(model, "fields_get", [], {"allfields": [field], "attributes": ["required"]})
    assert described == {field: {"required": False}}
    assert rpc.err(model, "create", [{field: False}])["message"] == empty
    existing = rpc.ok(model, "search_read", [[]], {"fields": [field], "limit": 1, "order": "id asc"})[0][
        field
    ]
    refused = rpc.err(model, "create", [{field: existing.upper()}])
    assert (refused["name"], refused["message"]) == ("odoo.exceptions.ValidationError", taken)


def test_the_head_kind_cannot_be_edited_or_deleted(rpc: Rpc) -> None:
    head = rpc.ok(
        "ir.model.data", "check_object_reference", ["g2p_registry_membership", "group_membership_kind_head"]
    )[1]
    assert rpc.err("g2p.group.membership.kind", "write", [[head], {"name": "Chief"}])["message"] == (
        "Can't edit default kinds"
    )
    assert rpc.err("g2p.group.membership.kind", "unlink", [[head]])["message"] == "Can't delete default kinds"
    spouse = rpc.ok("g2p.group.membership.kind", "search", [[["name", "=", "Spouse"]]])
    assert rpc.ok("g2p.group.membership.kind", "write", [spouse, {"name": "Partner"}]) is True


# -- shapes and orders ----------------------------------------------------------------------------------
def test_default_orders_of_the_registry_models(rpc: Rpc) -> None:
    """``_order = "id desc"`` on phone numbers and group kinds; x2many values (one2many and many2many
    alike) are read in the comodel's order."""
    person = rpc.ok("res.partner", "create", [{"is_registrant": True, "name": "P"}])
    phones = [
        rpc.ok("g2p.phone.number", "create", [{"partner_id": person, "phone_no": f"+21255501{i}"}])
        for i in range(3)
    ]
    assert rpc.ok("g2p.phone.number", "search", [[]]) == sorted(phones, reverse=True)
    kinds = rpc.ok("g2p.group.kind", "search", [[]])
    assert kinds == sorted(kinds, reverse=True)
    group = rpc.ok("res.partner", "create", [{"is_registrant": True, "is_group": True, "name": "H"}])
    mid = rpc.ok(
        "g2p.group.membership",
        "create",
        [{"group": group, "individual": person, "kind": [[6, 0, [3, 8, 5]]]}],
    )
    assert rpc.ok("g2p.group.membership", "read", [[mid], ["kind"]])[0]["kind"] == [8, 5, 3]


def test_fields_get_describes_related_fields_with_their_target_type(rpc: Rpc) -> None:
    """``individual_gender`` is ``fields.Selection(related="individual.gender")``: a selection with the
    gender types as options, not a char."""
    described = rpc.ok(
        "g2p.group.membership",
        "fields_get",
        [],
        {"allfields": ["individual_gender", "individual_birthdate"], "attributes": ["type", "selection"]},
    )
    assert described == {
        "individual_gender": {"type": "selection", "selection": [["Female", "Female"], ["Male", "Male"]]},
        "individual_birthdate": {"type": "date"},
    }
    addl = rpc.ok("res.partner", "fields_get", [], {"allfields": ["addl_name"], "attributes": ["string"]})
    assert addl == {"addl_name": {"string": "Additional Name"}}


def test_a_registrar_deleting_a_partner_meets_odoo_errors_before_the_registry_refusal(rpc: Rpc) -> None:
    """OpenG2P's ``res.partner.unlink`` calls ``super().unlink()`` first and only then refuses a registrar:
    a missing id or a group that still has members fails the way it fails for anyone."""
    missing = rpc.err("res.partner", "unlink", [[999999]], user="registrar")
    assert missing["name"] == "odoo.exceptions.MissingError"
    group = rpc.ok("res.partner", "create", [{"is_registrant": True, "is_group": True, "name": "H"}])
    person = rpc.ok("res.partner", "create", [{"is_registrant": True, "name": "P"}])
    rpc.ok("g2p.group.membership", "create", [{"group": group, "individual": person}])
    blocked = rpc.err("res.partner", "unlink", [[group]], user="registrar")
    assert blocked["message"].endswith("Constraint: g2p_group_membership_group_fkey\n")
    alone = rpc.ok("res.partner", "create", [{"is_registrant": True, "name": "Q"}])
    refused = rpc.err("res.partner", "unlink", [[alone]], user="registrar")
    assert refused["name"] == "odoo.exceptions.UserError"
    assert rpc.ok("res.partner", "read", [[alone], ["name"]]), "the refusal rolls the delete back"


@pytest.mark.parametrize(
    ("model", "field"),
    [("g2p.id.type", "name"), ("g2p.group.kind", "name"), ("g2p.group.membership.kind", "name")],
)
def test_configuration_records_are_created_one_per_call(rpc: Rpc, model: str, field: str) -> None:
    """Their ``_check_name`` reads ``self.name`` on the whole batch: a list of two fails "Expected
    singleton", as ``gender.type`` does (observed), and so does renaming two at once."""
    refused = rpc.err(model, "create", [[{field: "Alpha"}, {field: "Beta"}]])
    assert refused["name"] == "builtins.ValueError"
    assert refused["message"].startswith(f"Expected singleton: {model}(")
    a = rpc.ok(model, "create", [{field: "Alpha"}])
    b = rpc.ok(model, "create", [{field: "Beta"}])
    renamed = rpc.err(model, "write", [[a, b], {field: "Gamma"}])
    assert renamed["message"].startswith(f"Expected singleton: {model}(")


# -- load(): the import dialect -------------------------------------------------------------------------
def test_load_reads_datetimes_in_the_users_time_zone(rpc: Rpc, fake: FakeOpenSpp) -> None:
    """``ir.fields.converter._str_to_datetime`` localises an imported datetime in the context's ``tz``,
    else the user's, and stores it in UTC; ``write``/``create`` take UTC as given."""
    fake.add_user("nairobi", "nairobi", [USER, "g2p_registry_base.group_g2p_registrar"], tz="Africa/Nairobi")
    header = ["id", "name", "is_registrant", "disabled"]
    row = ["connector.tz_a", "A", "1", "2024-05-02 10:00:00"]
    pid = rpc.ok("res.partner", "load", [header, [row]], user="nairobi")["ids"][0]
    assert rpc.ok("res.partner", "read", [[pid], ["disabled"]])[0]["disabled"] == "2024-05-02 07:00:00"
    row = ["connector.tz_b", "B", "1", "2024-05-02 10:00:00"]
    pid = rpc.ok("res.partner", "load", [header, [row]], {"context": {"tz": "UTC"}}, user="nairobi")["ids"][0]
    assert rpc.ok("res.partner", "read", [[pid], ["disabled"]])[0]["disabled"] == "2024-05-02 10:00:00"


def test_load_parses_datetimes_as_odoo_writes_them(rpc: Rpc) -> None:
    """``fields.Datetime.from_string``: a date alone or minutes pass, microseconds do not."""
    header = ["id", "name", "is_registrant", "disabled"]
    day = rpc.ok("res.partner", "load", [header, [["connector.d1", "A", "1", "2024-05-02"]]])
    assert day["ids"], day["messages"]
    micro = rpc.ok("res.partner", "load", [header, [["connector.d2", "B", "1", "2024-05-02 10:00:00.5"]]])
    assert micro["ids"] is False
    assert micro["messages"][0]["message"] == (
        "'2024-05-02 10:00:00.5' does not seem to be a valid datetime for field 'Date Disabled'"
    )


def test_fields_get_calls_one2many_fields_stored_and_searchable(rpc: Rpc) -> None:
    """A one2many is not computed, so Odoo describes it ``store: true`` and searchable (though it has no
    column and is not sortable); only computed fields without storage say ``store: false``."""
    described = rpc.ok(
        "res.partner",
        "fields_get",
        [],
        {"allfields": ["group_membership_ids", "age"], "attributes": ["store", "searchable", "sortable"]},
    )
    assert described == {
        "group_membership_ids": {"store": True, "searchable": True, "sortable": False},
        "age": {"store": False, "searchable": False, "sortable": False},
    }


def test_has_group_wants_one_fully_qualified_xmlid(rpc: Rpc) -> None:
    """``res.users._has_group`` asserts a dotted xml-id and splits it in exactly two (``has_group`` is
    ``@api.model`` on Odoo 17: the xml-id is its only argument, as a real 17.0 server showed)."""
    rpc.login("registrar")
    registrar = "g2p_registry_base.group_g2p_registrar"
    assert rpc.ok("res.users", "has_group", [registrar], user="registrar") is True
    bare = rpc.err("res.users", "has_group", ["group_g2p_registrar"], user="registrar")
    assert (bare["name"], bare["message"]) == (
        "builtins.AssertionError",
        "External ID 'group_g2p_registrar' must be fully qualified",
    )
    dotted = rpc.err("res.users", "has_group", ["a.b.c"], user="registrar")
    assert (dotted["name"], dotted["message"]) == (
        "builtins.ValueError",
        "too many values to unpack (expected 2)",
    )


def test_x2many_reads_leave_archived_records_out(rpc: Rpc) -> None:
    """Odoo reads a one2many by searching its comodel, which hides archived rows unless the context
    says ``active_test: false``."""
    person = rpc.ok("res.partner", "create", [{"is_registrant": True, "name": "P"}])
    kept = rpc.ok("res.partner.bank", "create", [{"partner_id": person, "acc_number": "A-1"}])
    gone = rpc.ok("res.partner.bank", "create", [{"partner_id": person, "acc_number": "A-2"}])
    rpc.ok("res.partner.bank", "write", [[gone], {"active": False}])
    assert rpc.ok("res.partner", "read", [[person], ["bank_ids"]])[0]["bank_ids"] == [kept]
    every = rpc.ok("res.partner", "read", [[person], ["bank_ids"]], {"context": {"active_test": False}})
    assert sorted(every[0]["bank_ids"]) == [kept, gone]


def test_reading_an_x2many_needs_read_access_to_its_comodel(rpc: Rpc, fake: FakeOpenSpp) -> None:
    """Odoo reads a one2many by searching its comodel as the caller: an internal user outside the
    registry groups may read a partner's name, not its memberships."""
    fake.add_user("clerk", "clerk", [USER])
    group = rpc.ok("res.partner", "create", [{"is_registrant": True, "is_group": True, "name": "H"}])
    assert rpc.ok("res.partner", "read", [[group], ["name"]], user="clerk") == [{"id": group, "name": "H"}]
    refused = rpc.err("res.partner", "read", [[group], ["group_membership_ids"]], user="clerk")
    assert refused["name"] == "odoo.exceptions.AccessError"
    assert refused["message"].startswith(
        "You are not allowed to access 'Group Membership' (g2p.group.membership) records."
    )


def test_bank_account_numbers_are_unique_per_partner_once_sanitized(rpc: Rpc) -> None:
    """The constraint is on ``sanitized_acc_number`` (non-word characters removed, upper-cased)."""
    person = rpc.ok("res.partner", "create", [{"is_registrant": True, "name": "P"}])
    rpc.ok("res.partner.bank", "create", [{"partner_id": person, "acc_number": "KE-12 345"}])
    refused = rpc.err("res.partner.bank", "create", [{"partner_id": person, "acc_number": "ke12345"}])
    assert (refused["name"], refused["message"]) == (
        "odoo.exceptions.ValidationError",
        "The operation cannot be completed: The combination Account Number/Partner must be unique.",
    )


def test_text_is_ordered_bytewise_as_in_a_c_collated_database(rpc: Rpc) -> None:
    """Odoo creates its databases from template0 with ``LC_COLLATE 'C'``: ``ORDER BY name`` puts capitals
    before small letters and accented letters after ``z``."""
    for name in ("apple", "Émile", "zed", "Banana"):
        rpc.ok("res.partner", "create", [{"name": name}])
    rows = rpc.ok("res.partner", "search_read", [[]], {"fields": ["name"], "order": "name asc"})
    assert [r["name"] for r in rows] == ["Banana", "apple", "zed", "Émile"]
    default = rpc.ok("res.partner", "search_read", [[]], {"fields": ["name"]})
    assert [r["name"] for r in default] == ["Banana", "apple", "zed", "Émile"]


def test_reading_only_the_id_does_not_check_that_the_records_exist(rpc: Rpc) -> None:
    """Odoo 17's ``read`` drops a missing record when it fetches a field of it; asked for ``id`` alone it
    fetches nothing and answers every id it was given (observed: ``read([999999], ["id"])`` returned
    ``[{"id": 999999}]``), so such a read proves nothing about existence."""
    person = rpc.ok("res.partner", "create", [{"is_registrant": True, "name": "P"}])
    assert rpc.ok("res.partner", "read", [[person, 999999], ["id"]]) == [{"id": person}, {"id": 999999}]
    assert rpc.ok("g2p.group.membership", "read", [[999999]], {"fields": ["id"]}) == [{"id": 999999}]
    assert rpc.ok("res.partner", "read", [[person, 999999], ["id", "name"]]) == [{"id": person, "name": "P"}]


def test_membership_end_dates_as_openg2p_keeps_them(rpc: Rpc) -> None:
    """Observed on the real registry: ``is_ended``/``status`` are stored and computed when ``ended_date`` is
    written (a future end date leaves the membership active, and it stays so after the date passes: no job
    recomputes it); an end before the start is refused; an ended member cannot be added to the same group
    again (the duplicate check counts ended rows), only its row reopened; a registrar may write a
    membership but not delete it, not even through the group's one2many."""
    group = rpc.ok("res.partner", "create", [{"is_registrant": True, "is_group": True, "name": "H"}])
    person = rpc.ok("res.partner", "create", [{"is_registrant": True, "name": "P"}])
    member = rpc.ok("g2p.group.membership", "create", [{"group": group, "individual": person}])
    fields = ["start_date", "ended_date", "is_ended", "status"]

    def row() -> dict[str, object]:
        return rpc.ok("g2p.group.membership", "read", [[member], fields])[0]

    start = row()["start_date"]
    rpc.ok(
        "res.partner",
        "write",
        [[group], {"group_membership_ids": [[1, member, {"ended_date": "2099-01-01 00:00:00"}]]}],
    )
    assert (row()["is_ended"], row()["status"]) == (False, "active")
    early = rpc.err("g2p.group.membership", "write", [[member], {"ended_date": "2000-01-01 00:00:00"}])
    assert (early["name"], early["message"]) == (
        "odoo.exceptions.ValidationError",
        "End Date cannot be earlier than Start Date",
    )
    rpc.ok("g2p.group.membership", "write", [[member], {"ended_date": start}], user="registrar")
    assert (row()["is_ended"], row()["status"]) == (True, "inactive")
    for again in (
        ("res.partner", "write", [[group], {"group_membership_ids": [[0, 0, {"individual": person}]]}]),
        ("g2p.group.membership", "create", [{"group": group, "individual": person}]),
    ):
        refused = rpc.err(*again)
        assert (refused["name"], refused["message"]) == (
            "odoo.exceptions.ValidationError",
            "Duplication of Member is not allowed ",
        )
    rpc.ok("res.partner", "write", [[group], {"group_membership_ids": [[1, member, {"ended_date": False}]]}])
    assert (row()["ended_date"], row()["is_ended"], row()["status"]) == (False, False, "active")
    dropped = rpc.err(
        "res.partner", "write", [[group], {"group_membership_ids": [[2, member, 0]]}], user="registrar"
    )
    assert dropped["name"] == "odoo.exceptions.AccessError"
    detached = rpc.err(
        "res.partner", "write", [[group], {"group_membership_ids": [[3, member, 0]]}], user="registrar"
    )
    assert detached["name"] == "odoo.exceptions.ValidationError"
    assert "Model: Group Membership (g2p.group.membership)\nField: Group (group)" in detached["message"]

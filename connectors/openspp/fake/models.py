"""Field definitions of the fake's models: the OpenSPP 17 registry surface a connector touches.

Types matter because Odoo validates by type: an unknown field raises "Invalid field", a string given to a
many2one reaches PostgreSQL and fails there, a selection value outside its list raises "Wrong value for".
Keeping the definitions as data lets ``fields_get`` describe exactly what the ORM enforces.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

RELATIONAL = frozenset({"many2one", "one2many", "many2many"})
X2MANY = frozenset({"one2many", "many2many"})

# Group xml-id -> the name Odoo shows in access errors ("Category/Group").
GROUPS: dict[str, str] = {
    "base.group_user": "User types/Internal User",
    "base.group_erp_manager": "Administration/Access Rights",
    "base.group_system": "Administration/Settings",
    "g2p_registry_base.group_g2p_admin": "OpenG2P Module Access/Administrator",
    "g2p_registry_base.group_g2p_registrar": "OpenG2P Module Access/Registrar",
}

USER = "base.group_user"
ERP_MANAGER = "base.group_erp_manager"
SYSTEM = "base.group_system"
G2P_ADMIN = "g2p_registry_base.group_g2p_admin"
REGISTRAR = "g2p_registry_base.group_g2p_registrar"
EVERYONE = ""
"""An access line without a group (``group_id`` empty in ``ir.model.access.csv``): it applies to all users."""


@dataclass(frozen=True, slots=True)
class Field:
    type: str
    string: str
    required: bool = False
    readonly: bool = False
    relation: str | None = None
    inverse_name: str | None = None
    selection: tuple[tuple[str, str], ...] | None = None
    dynamic_selection: str | None = None
    store: bool = True
    computed: bool = False
    default: Any = None
    ondelete: str = "set null"
    size: int | None = None
    name: str = ""

    @property
    def writable(self) -> bool:
        return not self.computed or self.name in _COMPUTED_WITH_INVERSE


# computed fields that accept writes (compute + inverse), e.g. the name in spp_registrant_import
_COMPUTED_WITH_INVERSE = frozenset({"name"})


@dataclass(slots=True)
class ModelDef:
    name: str
    description: str
    fields: dict[str, Field]
    order: str = "id"
    rec_name: str = "name"
    parent_field: str | None = None
    access: dict[str, str] = field(default_factory=dict)
    """group xml-id -> the operations it grants: r(ead) w(rite) c(reate) u(nlink)."""

    @property
    def table(self) -> str:
        return self.name.replace(".", "_")

    @property
    def has_active(self) -> bool:
        return "active" in self.fields


def char(string: str, **kw: Any) -> Field:
    return Field("char", string, **kw)


def text(string: str, **kw: Any) -> Field:
    return Field("text", string, **kw)


def boolean(string: str, **kw: Any) -> Field:
    return Field("boolean", string, **kw)


def integer(string: str, **kw: Any) -> Field:
    return Field("integer", string, **kw)


def date_(string: str, **kw: Any) -> Field:
    return Field("date", string, **kw)


def datetime_(string: str, **kw: Any) -> Field:
    return Field("datetime", string, **kw)


def selection(string: str, options: tuple[tuple[str, str], ...], **kw: Any) -> Field:
    return Field("selection", string, selection=options, **kw)


def many2one(relation: str, string: str, **kw: Any) -> Field:
    return Field("many2one", string, relation=relation, **kw)


def one2many(relation: str, inverse: str, string: str, **kw: Any) -> Field:
    return Field("one2many", string, relation=relation, inverse_name=inverse, store=False, **kw)


def many2many(relation: str, string: str, **kw: Any) -> Field:
    return Field("many2many", string, relation=relation, **kw)


def _magic() -> dict[str, Field]:
    return {
        "id": integer("ID", readonly=True, computed=True),
        "display_name": char("Display Name", readonly=True, computed=True, store=False),
        "create_date": datetime_("Created on", readonly=True, computed=True),
        "write_date": datetime_("Last Updated on", readonly=True, computed=True),
        "create_uid": many2one("res.users", "Created by", readonly=True, computed=True),
        "write_uid": many2one("res.users", "Last Updated by", readonly=True, computed=True),
    }


def _model(
    name: str,
    description: str,
    fields: dict[str, Field],
    access: dict[str, str],
    **kw: Any,
) -> ModelDef:
    merged = {**_magic(), **fields}
    named = {fname: replace(f, name=fname) for fname, f in merged.items()}
    return ModelDef(name, description, named, access=access, **kw)


def _today(env: Any) -> Any:
    return env.stamp.date()


_ADMIN_ALL = {ERP_MANAGER: "rwcu", SYSTEM: "rwcu", G2P_ADMIN: "rwcu"}
_REGISTRY_RWC = {USER: "r", REGISTRAR: "rwc", **_ADMIN_ALL}
_CONFIG_READ = {USER: "r", REGISTRAR: "r", **_ADMIN_ALL}
# The OpenG2P registry models, as their ``ir.model.access.csv`` files grant them: to the Registrar and
# the OpenG2P Administrator groups only, so an internal user outside both may not even read them
# (odoo-observed §7), and an access error names exactly these groups.
_G2P_RECORDS = {REGISTRAR: "rwc", G2P_ADMIN: "rwcu"}
_G2P_CONFIG = {REGISTRAR: "r", G2P_ADMIN: "rwcu"}
_G2P_GLOBAL_READ = {EVERYONE: "r", G2P_ADMIN: "rwcu"}
"""``gender.type``: its read line has no group, so every user may read it."""

PARTNER_TYPES = (
    ("contact", "Contact"),
    ("invoice", "Invoice Address"),
    ("delivery", "Delivery Address"),
    ("private", "Private Address"),
    ("other", "Other Address"),
)


Flavour = Literal["openspp", "openg2p"]
OPENSPP_ONLY_MODELS = frozenset({"spp.area", "spp.area.kind"})
OPENSPP_ONLY_PARTNER_FIELDS = frozenset({"area_id", "spp_id"})
"""What OpenSPP's own modules (``spp_area``, ``spp_base``) add to the OpenG2P registry core."""


def build_registry(flavour: Flavour = "openspp") -> dict[str, ModelDef]:
    """One fresh set of model definitions (stateless, but kept per server to allow per-test tweaks).

    ``openg2p``: the OpenG2P 17 registry core without OpenSPP's modules, as ``odoo-observed.md`` §7 found
    it: no areas, so ``res.partner`` has no ``area_id`` and ``Invalid field 'area_id'`` refuses it."""
    registry = _full_registry()
    if flavour == "openg2p":
        for name in OPENSPP_ONLY_MODELS:
            registry.pop(name)
        partner = registry["res.partner"]
        for fname in OPENSPP_ONLY_PARTNER_FIELDS:
            partner.fields.pop(fname)
    return registry


def _full_registry() -> dict[str, ModelDef]:
    models = [
        _model(
            "res.partner",
            "Contact",
            {
                "name": char("Name"),
                "complete_name": char("Complete Name", readonly=True, computed=True),
                "is_registrant": boolean("Registrant"),
                "is_group": boolean("Group"),
                "is_partial_group": boolean("Partial Group"),
                "given_name": char("Given Name"),
                "family_name": char("Family Name"),
                "addl_name": char("Additional Name"),
                "birth_place": char("Birth Place"),
                "birthdate": date_("Date of Birth"),
                "birthdate_not_exact": boolean("Approximate Birthdate"),
                "age": char("Age", readonly=True, computed=True, store=False),
                "gender": Field("selection", "Gender", dynamic_selection="gender"),
                "civil_status": char("Civil Status"),
                "occupation": char("Occupation"),
                "phone": char("Phone"),
                "mobile": char("Mobile"),
                "email": char("Email"),
                "address": text("Address"),
                "registration_date": date_("Registration Date", default=_today),
                "kind": many2one("g2p.group.kind", "Kind"),
                "kind_as_str": char("Kind As Str", readonly=True, computed=True, store=False),
                "group_membership_ids": one2many("g2p.group.membership", "group", "Group Members"),
                "individual_membership_ids": one2many(
                    "g2p.group.membership", "individual", "Membership to Groups"
                ),
                "reg_ids": one2many("g2p.reg.id", "partner_id", "Registrant IDs"),
                "phone_number_ids": one2many("g2p.phone.number", "partner_id", "Phone Numbers"),
                "bank_ids": one2many("res.partner.bank", "partner_id", "Banks"),
                "area_id": many2one("spp.area", "Area"),
                "spp_id": char("Registrant ID", readonly=True, computed=True),
                "company_id": many2one("res.company", "Company", required=True, default=1),
                "disabled": datetime_("Date Disabled"),
                "disabled_reason": text("Reason for disabling"),
                "disabled_by": many2one("res.users", "Disabled by"),
                "active": boolean("Active", default=True),
                "ref": char("Reference"),
                "type": selection("Address Type", PARTNER_TYPES, default="contact"),
                "z_ind_grp_num_individuals": integer("Number of individuals", readonly=True, computed=True),
                "force_recompute_canary": datetime_("Recompute canary", readonly=True, computed=True),
            },
            _REGISTRY_RWC,
            order="complete_name asc, id desc",
        ),
        _model(
            "g2p.group.membership",
            "Group Membership",
            {
                "group": many2one("res.partner", "Group", required=True, ondelete="restrict"),
                "individual": many2one("res.partner", "Individual", required=True, ondelete="restrict"),
                "kind": many2many("g2p.group.membership.kind", "Kind"),
                "start_date": datetime_("Start Date", default=lambda env: env.stamp_seconds),
                "ended_date": datetime_("Ended Date"),
                "status": selection(
                    "Status",
                    (("inactive", "Inactive"), ("active", " ")),
                    readonly=True,
                    computed=True,
                ),
                "is_ended": boolean("Is Ended", readonly=True, computed=True),
                "individual_birthdate": date_(
                    "Individual Birthdate", readonly=True, computed=True, store=False
                ),
                "individual_gender": Field(
                    "selection",
                    "Individual Gender",
                    dynamic_selection="gender",
                    readonly=True,
                    computed=True,
                    store=False,
                ),
            },
            _G2P_RECORDS,
            order="id desc",
            rec_name="group",
        ),
        _model(
            "g2p.group.membership.kind",
            "Group Membership Kind",
            {"name": char("Kind"), "is_unique": boolean("Unique")},
            _G2P_CONFIG,
            order="id desc",
        ),
        _model("g2p.group.kind", "Group Kind", {"name": char("Kind")}, _G2P_CONFIG, order="id desc"),
        _model(
            "g2p.reg.id",
            "Registrant ID",
            {
                "partner_id": many2one("res.partner", "Registrant", required=True, ondelete="restrict"),
                "id_type": many2one("g2p.id.type", "ID Type", required=True),
                "value": char("Value", size=100),
                "expiry_date": date_("Expiry Date"),
                "status": selection("Status", (("valid", "Valid"), ("invalid", "Invalid"))),
                "description": char("Description"),
                "id_type_as_str": char("ID Type As Str", readonly=True, computed=True, store=False),
            },
            _G2P_RECORDS,
            order="id desc",
            rec_name="value",
        ),
        _model(
            "g2p.id.type",
            "ID Type",
            {"name": char("Name"), "id_validation": char("ID Validation")},
            _G2P_CONFIG,
            order="name asc",
        ),
        _model(
            "g2p.phone.number",
            "Phone Number",
            {
                "partner_id": many2one("res.partner", "Registrant", required=True, ondelete="restrict"),
                "phone_no": char("Phone Number", required=True),
                "date_collected": date_("Date Collected"),
                "disabled": datetime_("Date Disabled"),
            },
            _G2P_RECORDS,
            order="id desc",
            rec_name="phone_no",
        ),
        _model(
            "gender.type",
            "Gender Type",
            {"code": char("Code"), "value": char("Value"), "active": boolean("Active", default=True)},
            _G2P_GLOBAL_READ,
            rec_name="code",
        ),
        _model(
            "spp.area.kind",
            "Area Type",
            {"name": char("Name", required=True)},
            _CONFIG_READ,
        ),
        _model(
            "spp.area",
            "Area",
            {
                "draft_name": char("Name", required=True),
                "code": char("Code"),
                "name": char("Area", readonly=True, computed=True),
                "parent_id": many2one("spp.area", "Parent", ondelete="restrict"),
                "kind": many2one("spp.area.kind", "Area Type"),
                "parent_path": char("Parent Path", readonly=True, computed=True),
            },
            _CONFIG_READ,
            parent_field="parent_id",
        ),
        _model(
            "res.partner.bank",
            "Bank Accounts",
            {
                "partner_id": many2one("res.partner", "Account Holder", required=True, ondelete="cascade"),
                "acc_number": char("Account Number", required=True),
                "bank_id": many2one("res.bank", "Bank"),
                "acc_holder_name": char("Account Holder Name"),
                "active": boolean("Active", default=True),
            },
            {USER: "r", REGISTRAR: "rwc", **_ADMIN_ALL},
            order="id",
            rec_name="acc_number",
        ),
        _model(
            "res.bank",
            "Bank",
            {
                "name": char("Name", required=True),
                "bic": char("Bank Identifier Code"),
                "active": boolean("Active", default=True),
            },
            _CONFIG_READ,
            order="name",
        ),
        _model(
            "res.company",
            "Companies",
            {"name": char("Company Name", required=True)},
            {USER: "r", REGISTRAR: "r", **_ADMIN_ALL},
        ),
        _model(
            "res.groups",
            "Access Groups",
            {
                "name": char("Name", required=True),
                "full_name": char("Group Name", readonly=True, computed=True),
            },
            {USER: "r", REGISTRAR: "r", ERP_MANAGER: "rwcu", SYSTEM: "rwcu"},
        ),
        _model(
            "res.users",
            "User",
            {
                "login": char("Login", required=True),
                "name": char("Name"),
                "groups_id": many2many("res.groups", "Groups"),
                "tz": char("Timezone"),
                "active": boolean("Active", default=True),
            },
            {USER: "r", REGISTRAR: "r", ERP_MANAGER: "rwcu", SYSTEM: "rwcu"},
            rec_name="name",
        ),
        _model(
            "ir.model.data",
            "Model Data",
            {
                "module": char("Module", required=True),
                "name": char("External Identifier", required=True),
                "model": char("Model Name", required=True),
                "res_id": integer("Record ID"),
                "complete_name": char("Complete ID", readonly=True, computed=True, store=False),
                "noupdate": boolean("Non Updatable"),
            },
            {ERP_MANAGER: "rwcu"},
            order="module, model, name",
            rec_name="complete_name",
        ),
    ]
    return {m.name: m for m in models}


def default_value(f: Field, env: Any) -> Any:
    """A field's default, resolved for one call (callables see the call's env for its stamp)."""
    default = f.default
    return default(env) if callable(default) else default

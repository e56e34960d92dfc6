"""Seed data of a fresh OpenSPP 17 database, with ids deliberately scattered.

Membership kinds, group kinds and ID types sit at non-contiguous ids (Head is not 1, Household is not 1)
so a client that hard-codes DataCollect's ``kind: 1`` or ``1=Head, 2=Spouse`` fails here the way it fails
on any database but the one it was written against. Clients must resolve them by xml-id or name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from connectors.openspp.fake.models import ERP_MANAGER, G2P_ADMIN, GROUPS, REGISTRAR, SYSTEM, USER
from connectors.openspp.fake.store import Transaction

if TYPE_CHECKING:
    from connectors.openspp.fake.server import FakeOpenSpp

ADMIN_LOGIN, ADMIN_PASSWORD, ADMIN_API_KEY = "admin", "admin", "admin-api-key-0001"
REGISTRAR_LOGIN, REGISTRAR_PASSWORD, REGISTRAR_API_KEY = (
    "registrar",
    "registrar",
    "registrar-api-key-0001",
)

MEMBERSHIP_KINDS = [(3, "Head", True), (5, "Spouse", False), (8, "Child", False), (12, "Other", False)]
GROUP_KINDS = [(3, "Household", "group_kind_household"), (6, "Family", "group_kind_family")]
ID_TYPES = [(4, "National ID", None), (9, "Passport", r"[A-Z][0-9]{7}"), (13, "DataCollect GUID", None)]


def seed(server: FakeOpenSpp) -> None:
    txn = Transaction(server.store)
    env = server.sudo_env(txn)
    store = server.store

    def create(model: str, vals: dict[str, Any], *, at: int | None = None, xmlid: str | None = None) -> int:
        if at is not None:
            store.sequences[model] = at - 1
        rid = env.create_one(model, vals)
        env.after_create(model, [rid])
        if xmlid:
            module, _, name = xmlid.rpartition(".")
            env.create_one(
                "ir.model.data",
                {"module": module, "name": name, "model": model, "res_id": rid, "noupdate": True},
            )
        return rid

    create("res.company", {"name": "My Company"}, xmlid="base.main_company")
    group_ids = {}
    for xmlid, full in GROUPS.items():
        group_ids[xmlid] = create("res.groups", {"name": full.split("/")[-1]}, xmlid=xmlid)
        row = store.tables["res.groups"][group_ids[xmlid]]
        store.set_row("res.groups", group_ids[xmlid], {**row, "full_name": full})
    create("res.users", {"login": "__system__", "name": "OdooBot", "active": False}, xmlid="base.user_root")
    store.sequences["res.users"] = 1
    server.add_user(
        ADMIN_LOGIN,
        ADMIN_PASSWORD,
        [USER, ERP_MANAGER, SYSTEM, G2P_ADMIN, REGISTRAR],
        api_keys=[ADMIN_API_KEY],
        name="Administrator",
    )
    store.sequences["res.users"] = 5
    server.add_user(
        REGISTRAR_LOGIN,
        REGISTRAR_PASSWORD,
        [USER, REGISTRAR],
        api_keys=[REGISTRAR_API_KEY],
        name="Registrar",
    )
    for rid, name, unique in MEMBERSHIP_KINDS:
        head = "g2p_registry_membership.group_membership_kind_head" if name == "Head" else None
        create("g2p.group.membership.kind", {"name": name, "is_unique": unique}, at=rid, xmlid=head)
    for rid, name, key in GROUP_KINDS:
        create("g2p.group.kind", {"name": name}, at=rid, xmlid=f"g2p_registry_group.{key}")
    for rid, name, pattern in ID_TYPES:
        create("g2p.id.type", {"name": name, "id_validation": pattern}, at=rid)
    for value in ("Female", "Male"):
        create("gender.type", {"code": value, "value": value})
    if "spp.area" in server.registry:  # OpenSPP's areas; the OpenG2P registry core has none
        _seed_areas(create)
    create("res.bank", {"name": "Bank of the North", "bic": "BNORXX22"}, at=4)
    create("res.bank", {"name": "Southern Savings", "bic": "SSAVXX33"})
    store.sequences["res.partner"] = 100
    server.jobs.clear()


def _seed_areas(create: Any) -> None:
    province = create("spp.area.kind", {"name": "Province"})
    district = create("spp.area.kind", {"name": "District"})
    north = create("spp.area", {"draft_name": "North", "code": "P01", "kind": province}, at=7)
    south = create("spp.area", {"draft_name": "South", "code": "P02", "kind": province})
    create("spp.area", {"draft_name": "Lakeside", "code": "D011", "kind": district, "parent_id": north})
    create("spp.area", {"draft_name": "Hillside", "code": "D012", "kind": district, "parent_id": north})
    create("spp.area", {"draft_name": "Riverside", "code": "D021", "kind": district, "parent_id": south})

"""The registry's setup as dcsync needs it (``res.partner``'s fields, membership kinds, ID types, banks, the
household kind), read once per run, and described for ``dcsync check``."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from connector_core.connector import FieldSpec, SystemicError
from connectors.openspp.client import ACCESS_ERROR, OdooClient, OdooPermanentError, OdooSystemicError
from connectors.openspp.config import OpenSppConfig
from connectors.openspp.records import PARTNER

log = logging.getLogger("connectors.openspp.connector")
T = TypeVar("T")
RESERVED = frozenset({"_membership_kind", "ids", "bank_accounts"})
"""Payload keys that are not ``res.partner`` fields (see the payload contract in ``connector.py``)."""


@dataclass
class Catalog:
    partner_fields: dict[str, dict[str, Any]]
    kinds_by_name: dict[str, int]
    kind_names: dict[int, str]
    unique_kinds: set[int]
    household_kind: int
    id_types_by_name: dict[str, int]
    id_type_names: dict[int, str]
    reference_type: int | None
    banks_by_key: dict[str, int]
    bank_names: dict[int, str]
    pull_fields: list[str]
    bank_bics: dict[int, str] = field(default_factory=dict)
    defaulted: frozenset[str] = frozenset()
    m2o_cache: dict[tuple[str, str], int] = field(default_factory=dict)
    xmlids_readable: bool | None = None


class Catalogs:
    """Reads the catalog once per run (``get``), again on ``check`` (``refresh``)."""

    def __init__(self, client: OdooClient, config: OpenSppConfig, name: str):
        self.client = client
        self.config = config
        self.name = name
        self._catalog: Catalog | None = None
        self._catalog_lock = threading.Lock()
        self._setup: dict[str, Any] = {}

    def get(self, *, refresh: bool = False) -> Catalog:
        """The registry's setup (fields, kinds, ID types, banks), read once per run.

        Each read is kept as soon as it answers, so an attempt that failed half way does not read the
        rest again; a read the user may not make, or a setup dcsync needs and the registry lacks, is a
        :class:`SystemicError` (no record is at fault: the run stops, nothing is dead-lettered).
        """
        with self._catalog_lock:
            if refresh:
                self._catalog = None
                self._setup.clear()
            if self._catalog is not None:
                return self._catalog
            cfg = self.config
            read = self._setup_read
            group = cfg.registrar_group
            if group and not read("group", "the user's groups", lambda: self.client.has_group(group)):
                raise OdooSystemicError(
                    f"user {cfg.username!r} is not in group {group!r} (Insufficient permissions)"
                )
            fields = read(
                "fields",
                "res.partner fields",
                lambda: self.client.fields_get(
                    PARTNER, ["type", "relation", "required", "readonly", "store", "selection"]
                ),
            )
            defaults = read(
                "defaults",
                "res.partner defaults",
                lambda: self.client.execute_kw(PARTNER, "default_get", [sorted(fields)]) or {},
            )
            kinds = read(
                "kinds",
                "membership kinds",
                lambda: self.client.search_read(
                    "g2p.group.membership.kind", [], ["name", "is_unique"], order="id asc"
                ),
            )
            types = read(
                "id_types",
                "ID types",
                lambda: self.client.search_read("g2p.id.type", [], ["name"], order="id asc"),
            )
            banks = read(
                "banks",
                "banks",
                lambda: self.client.search_read("res.bank", [], ["name", "bic"], order="id asc"),
            )
            household_kind = read("household_kind", "the household group kind", self._household_kind)
            reference_type = None
            if cfg.reference == "reg_id":
                wanted = (cfg.reference_id_type or "").casefold()
                matches = [t["id"] for t in types if str(t["name"]).casefold() == wanted]
                if not matches:
                    raise OdooSystemicError(
                        f"ID type {cfg.reference_id_type!r} (reference_id_type) does not exist; "
                        "an OpenSPP administrator must create it"
                    )
                reference_type = matches[0]
            pull_fields = [f for f in cfg.pull_fields if f in fields]
            missing = sorted(set(cfg.pull_fields) - set(pull_fields))
            if missing:  # once per run: the catalog is read once
                log.warning("%s: res.partner has no fields %s; they are not pulled", self.name, missing)
            bank_keys: dict[str, int] = {}
            for b in banks:
                for key in (b.get("name"), b.get("bic")):
                    if key:
                        bank_keys.setdefault(str(key).casefold(), b["id"])
            self._catalog = Catalog(
                partner_fields=fields,
                kinds_by_name={str(k["name"]).casefold(): k["id"] for k in kinds},
                kind_names={k["id"]: str(k["name"]) for k in kinds},
                unique_kinds={k["id"] for k in kinds if k.get("is_unique")},
                household_kind=household_kind,
                id_types_by_name={str(t["name"]).casefold(): t["id"] for t in types},
                id_type_names={t["id"]: str(t["name"]) for t in types},
                reference_type=reference_type,
                banks_by_key=bank_keys,
                bank_names={b["id"]: str(b["name"]) for b in banks},
                bank_bics={b["id"]: str(b["bic"]) for b in banks if b.get("bic")},
                pull_fields=pull_fields,
                defaulted=frozenset(defaults),
            )
            return self._catalog

    def _setup_read(self, key: str, what: str, read: Callable[[], T]) -> T:
        """One catalog read, kept for the run; a permanent failure of it stops the run (systemic)."""
        if key in self._setup:
            return cast(T, self._setup[key])
        try:
            value = read()
        except SystemicError:
            raise
        except OdooPermanentError as exc:
            hint = ""
            if exc.odoo_name == ACCESS_ERROR:
                hint = (
                    f"; is {self.config.username!r} in the Registrar group "
                    "(g2p_registry_base.group_g2p_registrar)?"
                )
            # one line: the lead sentence of Odoo's message
            first = " ".join(exc.message.split("\n\n")[0].split()).rstrip(".")
            raise OdooSystemicError(
                f"cannot read OpenSPP's {what} as {self.config.username!r}: {first}{hint}",
                odoo_name=exc.odoo_name,
            ) from None
        self._setup[key] = value
        return value

    def _household_kind(self) -> int:
        cfg, client = self.config, self.client
        if "." in cfg.household_kind:
            target = client.xmlid_target(cfg.household_kind)
            if target is not None and target[0] == "g2p.group.kind" and target[1]:
                return target[1]
            name = cfg.household_kind_name
        else:
            name = cfg.household_kind
        rows = client.search_read(
            "g2p.group.kind", [["name", "=ilike", name]], ["name"], order="id asc", limit=2
        )
        if len(rows) != 1:
            raise OdooSystemicError(
                f"cannot resolve the household group kind ({cfg.household_kind!r} / {name!r})"
            )
        return int(rows[0]["id"])

    def describe_schema(self) -> dict[str, dict[str, FieldSpec]]:
        """``res.partner`` as ``fields_get`` describes it, plus the payload's reserved keys, whose choices
        are this registry's membership kinds, ID types and banks (what ``dcsync check`` verifies)."""
        catalog = self.get()
        partner: dict[str, FieldSpec] = {}
        for name, desc in catalog.partner_fields.items():
            if name in RESERVED or desc.get("type") in (None, "binary"):
                continue
            partner[name] = field_spec(name, desc)
        bank_keys = sorted({*catalog.bank_names.values(), *catalog.bank_bics.values()})
        ids = FieldSpec(
            "list",
            "g2p.reg.id",
            fields={
                "id_type": FieldSpec(
                    "str",
                    "many2one g2p.id.type",
                    choices=tuple(sorted(catalog.id_type_names.values())),
                    ignore_case=True,
                    choices_fix="an OpenSPP administrator creates the ID type {value!r} "
                    "(Registry > Configuration > ID Types)",
                ),
                "value": FieldSpec("str", "char"),
                "expiry_date": FieldSpec("date", "date"),
                "description": FieldSpec("str", "char"),
                "status": FieldSpec("str", "selection", choices=("valid", "invalid")),
            },
        )
        banks = FieldSpec(
            "list",
            "res.partner.bank",
            fields={
                "acc_number": FieldSpec("str", "char"),
                "bank": FieldSpec(
                    "str",
                    "many2one res.bank",
                    choices=tuple(bank_keys),
                    ignore_case=True,
                    choices_fix="an OpenSPP administrator creates the bank {value!r} (Contacts > "
                    "Configuration > Banks), or the mapping's bank lookup names an existing one",
                ),
                "acc_holder_name": FieldSpec("str", "char"),
            },
        )
        kind = FieldSpec(
            "str",
            "many2many g2p.group.membership.kind",
            choices=tuple(sorted(catalog.kind_names.values())),
            ignore_case=True,
            choices_fix="an OpenSPP administrator creates the membership kind {value!r} "
            "(Registry > Configuration > Group Membership Kinds)",
        )
        household = {**partner, "ids": ids, "bank_accounts": banks}
        individual = {**household, "_membership_kind": kind}
        cfg = self.config
        return {cfg.household_entity: household, cfg.individual_entity: individual}


_VALUE_TYPES = {
    "char": "str",
    "text": "str",
    "html": "str",
    "integer": "int",
    "float": "float",
    "monetary": "float",
    "boolean": "bool",
    "date": "date",
    "datetime": "datetime",
    "many2one": "reference",
    "many2one_reference": "int",
    "one2many": "list",
    "many2many": "list",
}


def field_spec(name: str, desc: dict[str, Any]) -> FieldSpec:
    """A ``fields_get`` entry as a :class:`FieldSpec` (a selection's keys are its only choices).

    A field Odoo neither stores nor lets be written (``store: false``, ``readonly: true``: ``age``, a
    related ``kind_as_str``) is computed: ``create``/``write`` drop a value sent to it."""
    ftype = str(desc.get("type"))
    remote = f"{ftype} {desc['relation']}" if desc.get("relation") else ftype
    if desc.get("store") is False and desc.get("readonly") is True:
        return FieldSpec(_VALUE_TYPES.get(ftype, "any"), remote, computed=True)
    if ftype == "selection":
        keys = tuple(str(option[0]) for option in desc.get("selection") or [])
        fix = "add {value!r} to the selection of res.partner." + name
        if name == "gender":
            fix = (
                "an OpenSPP administrator creates a gender type with value {value!r} "
                "(Registry > Configuration > Gender Types, one per save)"
            )
        return FieldSpec("str", remote, choices=keys, choices_fix=fix)
    return FieldSpec(_VALUE_TYPES.get(ftype, "any"), remote)

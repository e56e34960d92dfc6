"""The OpenSPP connector: households, individuals, memberships, registrant IDs and bank accounts over Odoo
JSON-RPC, both ways.

Push payload contract
---------------------
``PushRecord.payload`` is an already-mapped ``res.partner`` value dict in OpenSPP's names and wire formats
(``given_name``, ``birthdate: "YYYY-MM-DD"``, ``gender: "Female"``, ...), plus three reserved keys:

``_membership_kind``
    Individuals only: the membership kind *name* (``"Head"``, ``"Spouse"``, ...) for the membership in the
    household. Resolved to the kind's id on the target database (case-insensitive); ``None`` means no
    kind. Absent: an existing membership's kinds are left as they are.
``ids``
    ``[{"id_type": "<ID type name>", "value": str, "expiry_date"?: "YYYY-MM-DD", "description"?: str,
    "status"?: "valid"|"invalid"}]`` -> ``g2p.reg.id``; ``id_type`` is resolved by name. One ID per type;
    IDs are created or updated, never deleted (registrars may not unlink). Absent: IDs are not touched.
``bank_accounts``
    ``[{"acc_number": str, "bank"?: "<bank name or BIC>", "acc_holder_name"?: str}]`` ->
    ``res.partner.bank``, matched by account number; created or updated, never deleted.

Other values: a many2one may be an integer id, or a string that names exactly one target record (resolved
with ``name_search``); ``[id, name]`` pairs as Odoo returns them are accepted too. Keys unknown to
``res.partner`` (from ``fields_get``) and other ``_``-prefixed keys are rejected with Odoo's own message.

``entity_name`` says what the record is: ``household`` (config ``household_entity``) becomes a group
(``is_registrant``, ``is_group``, ``kind`` = the household group kind resolved by xml-id or name),
``individual`` an individual. An individual's household is ``parent_external_id`` (the group's partner
id), or ``parent_ref`` (the household's guid: resolved from the same batch or by reference lookup). The
engine should always pass the current parent: an individual pushed without one is taken to have left every
household, and its memberships are ended.

Deletes archive the partner (``active = false``) and end the individual's memberships (``ended_date``);
registrars may not unlink, so nothing is ever unlinked.

Idempotency: every partner carries a stable reference to its DataCollect guid. By default an xml-id
``dcsync.<guid>`` written through ``res.partner.load`` (which a registrar may call although it has no
rights on ``ir.model.data``), so a re-sent create updates the record it created; or, with
``reference: reg_id``, a ``g2p.reg.id`` of a configured ID type whose value is the guid, looked up before
every create. :meth:`OpenSppConnector.lookup` finds records by that reference after an ambiguous failure.

Pull
----
Households, individuals and memberships changed since the cursor are read, in that order in every sweep
(so a member never arrives before its household), in ``write_date asc, id asc`` order with an explicit
field list, a ``(second, id)`` cursor per stream and a lag window (``openspp.md`` §2.4): each sweep starts
from a floor that trails the server clock by ``lag_seconds``, so a transaction that committed late behind
the cursor is read on the next sweep. Records inside the window are delivered again; the engine's snapshot
comparison makes that a no-op. Pulled records use the push payload's shape (``ids`` and ``bank_accounts``
in creation order, ``_membership_kind``), many2one pairs become ids and Odoo's ``false`` becomes ``None``
(booleans stay booleans), and an individual's active membership becomes ``parent_external_id``.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal, TypeVar, cast

import httpx
from pydantic import BaseModel, Field, SecretStr, model_validator

from connector_core.connector import (
    Capability,
    CheckResult,
    Connector,
    ConnectorConfig,
    ConnectorError,
    FieldSpec,
    Operation,
    PartResult,
    PullPage,
    PushRecord,
    PushResult,
    RemoteRecord,
    SystemicError,
)
from connector_core.retry import RetryPolicy
from connectors.openspp.client import (
    ACCESS_ERROR,
    OdooClient,
    OdooPermanentError,
    OdooSystemicError,
)
from connectors.openspp.odoo_formats import (
    EPOCH,
    add_seconds,
    format_datetime,
    to_iso_ms,
    utc_now,
)

log = logging.getLogger(__name__)

PARTNER = "res.partner"
MEMBERSHIP = "g2p.group.membership"
REG_ID = "g2p.reg.id"
BANK_ACCOUNT = "res.partner.bank"
RESERVED = frozenset({"_membership_kind", "ids", "bank_accounts"})
NAME_PARTS = ("family_name", "given_name", "addl_name")
DEFAULT_PULL_FIELDS = [
    "name",
    "given_name",
    "family_name",
    "addl_name",
    "birthdate",
    "birth_place",
    "gender",
    "phone",
    "mobile",
    "email",
    "address",
    "registration_date",
    "area_id",
    "disabled",
    "disabled_reason",
]
_BOOKKEEPING = ["is_registrant", "is_group", "active", "write_date"]
_MEMBERSHIP_FIELDS = ["group", "individual", "kind", "start_date", "ended_date", "is_ended"]
_NO_ARCHIVE_FILTER = {"active_test": False}
_IN_CHUNK = 500
T = TypeVar("T")


class OpenSppConfig(ConnectorConfig):
    """Settings of one OpenSPP 17 instance; ``password`` or ``api_key`` (an Odoo API key) is required."""

    url: str = Field(description="Base URL of the Odoo server, e.g. https://openspp.example.org")
    database: str = Field(description="Odoo database name")
    username: str = Field(description="Login of the integration user (a registrar is enough)")
    password: SecretStr | None = Field(default=None, description="The user's password")
    api_key: SecretStr | None = Field(default=None, description="An Odoo API key, used as the password")
    timeout: float = Field(default=120.0, gt=0, description="Seconds to wait for one RPC answer")
    connect_timeout: float = Field(default=10.0, gt=0)
    verify_tls: bool = True
    batch_size: int = Field(default=50, ge=1, le=500, description="Records per create/load call")
    in_flight: int = Field(
        default=1, ge=1, le=16, description="Concurrent requests; never two on one household"
    )
    page_size: int = Field(default=200, ge=1, le=1000, description="Rows per search_read page")
    lag_seconds: float = Field(
        default=900.0, ge=0, description="Pull window kept behind the server clock (late commits)"
    )
    reference: Literal["xmlid", "reg_id"] = Field(
        default="xmlid", description="Where the DataCollect guid is kept: an xml-id or a registrant ID"
    )
    xmlid_module: str = Field(default="dcsync", pattern=r"^[A-Za-z0-9_]+$")
    reference_id_type: str | None = Field(
        default=None, description="ID type name holding the guid (reference: reg_id)"
    )
    household_kind: str = Field(
        default="g2p_registry_group.group_kind_household",
        description="Group kind of households: an xml-id (module.name) or a kind name",
    )
    household_kind_name: str = Field(
        default="Household", description="Kind name used when the xml-id does not resolve"
    )
    registrar_group: str | None = Field(
        default=None, description="Require the user to be in this group (xml-id, as DataCollect)"
    )
    household_entity: str = "household"
    individual_entity: str = "individual"
    pull_fields: list[str] = Field(default_factory=lambda: list(DEFAULT_PULL_FIELDS))
    pull_domain: list[Any] = Field(default_factory=list, description="Extra res.partner domain for pulls")
    login_cooldown: float = Field(default=60.0, ge=0, description="Seconds without login retries")

    @model_validator(mode="after")
    def _check(self) -> OpenSppConfig:
        if (self.password is None) == (self.api_key is None):
            raise ValueError("give exactly one of password or api_key")
        if self.reference == "reg_id" and not self.reference_id_type:
            raise ValueError("reference: reg_id needs reference_id_type (the ID type's name)")
        return self

    @property
    def secret(self) -> SecretStr:
        secret = self.api_key or self.password
        assert secret is not None
        return secret


# -- references ---------------------------------------------------------------------------------------
_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


def xmlid_name(ref: str) -> str:
    """The xml-id name for a guid: the guid itself when it is made of safe characters, else hex."""
    if ref and set(ref) <= _SAFE and not ref.startswith("hex_"):
        return ref
    return "hex_" + ref.encode().hex()


def ref_from_xmlid_name(name: str) -> str | None:
    if name.startswith("hex_"):
        try:
            return bytes.fromhex(name[4:]).decode()
        except ValueError:
            return None
    return name


# -- catalog: per-database ids resolved once ----------------------------------------------------------
@dataclass
class _Catalog:
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


# -- push bookkeeping ---------------------------------------------------------------------------------
@dataclass
class _Item:
    """One push record on its way through the stages; the first failure is final for this push."""

    record: PushRecord
    is_group: bool
    values: dict[str, Any] = field(default_factory=dict)
    deferred: dict[str, Any] = field(default_factory=dict)
    reg_ids: list[_Part] | None = None
    banks: list[_Part] | None = None
    parts: list[_Part] = field(default_factory=list)
    """Every ID and bank account of the payload, refused ones included: each is answered on its own."""
    has_kind: bool = False
    kinds: list[int] = field(default_factory=list)
    partner_id: int | None = None
    existing: bool = False
    household: int | None = None
    error: str | None = None
    transient: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def ref(self) -> str:
        return self.record.ref

    def fail(self, message: str, transient: bool = False) -> None:
        if self.error is None:
            self.error = message
            self.transient = transient

    def result(self) -> PushResult:
        external = str(self.partner_id) if self.partner_id is not None else None
        if self.error is None:
            return PushResult.delivered(self.ref, external, [PartResult(p.name, p.error) for p in self.parts])
        return PushResult(
            ref=self.ref, ok=False, external_id=external, error=self.error, transient=self.transient
        )


@dataclass(eq=False)
class _Part:
    """One registrant ID or bank account of an item: a permanent refusal of it is its own (the registrant
    is delivered and the engine dead-letters ``<guid>#<name>``); a transient one fails the item, so the
    record and this part go again."""

    item: _Item
    name: str
    vals: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.item.ok and self.error is None

    def fail(self, message: str, transient: bool = False) -> None:
        if transient:
            self.item.fail(message, True)
        elif self.error is None:
            self.error = message


@dataclass
class _Command:
    owner: _Item
    command: list[Any]


# -- pull cursor --------------------------------------------------------------------------------------
@dataclass
class _Stream:
    """Position of one stream: ``floor`` (start of the current sweep), ``second``/``last_id`` (scan
    position) and ``started`` (server clock when the sweep began, for the lag window)."""

    floor: str = EPOCH
    second: str = EPOCH
    last_id: int = 0
    started: str | None = None
    done: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"f": self.floor, "s": self.second, "i": self.last_id, "w": self.started, "d": self.done}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> _Stream:
        if not data:
            return cls()
        return cls(data["f"], data["s"], int(data["i"]), data.get("w"), bool(data.get("d")))

    def restart(self, lag: float) -> None:
        """A sweep ended: everything stamped before ``started - lag`` was committed and has been read."""
        floor = self.floor
        if self.started is not None:
            settled = add_seconds(self.started, -lag)
            floor = max(floor, settled)
        self.floor = self.second = floor
        self.last_id = 0
        self.started = None
        self.done = False


class OpenSppConnector(Connector):
    type_name = "openspp"
    config_model = OpenSppConfig
    capabilities = frozenset({Capability.PUSH, Capability.PULL})
    description = "OpenSPP 17 (Odoo 17 + OpenG2P registry) over Odoo JSON-RPC"

    config: OpenSppConfig

    def __init__(self, name: str, config: ConnectorConfig, *, http: httpx.Client | None = None):
        if not isinstance(config, OpenSppConfig):
            raw = config.model_dump() if isinstance(config, BaseModel) else config
            config = OpenSppConfig.model_validate(raw)
        super().__init__(name, config)
        cfg = self.config
        self.client = OdooClient(
            cfg.url,
            cfg.database,
            cfg.username,
            cfg.secret,
            http=http,
            timeout=cfg.timeout,
            connect_timeout=cfg.connect_timeout,
            login_cooldown=cfg.login_cooldown,
            verify=cfg.verify_tls,
        )
        self._catalog: _Catalog | None = None
        self._catalog_lock = threading.Lock()
        self._setup: dict[str, Any] = {}
        self._pool: ThreadPoolExecutor | None = None

    @property
    def retry_policy(self) -> RetryPolicy | None:
        """The run's retry policy: each read (catalog, lookups, current state) is retried on its own
        under it, so one lost answer does not cost a batch its attempt. Set by whoever runs the
        connector; ``None`` tries each call once and leaves retries to the engine's batch retries."""
        return self.client.retry_policy

    @retry_policy.setter
    def retry_policy(self, policy: RetryPolicy | None) -> None:
        self.client.retry_policy = policy

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self.client.close()

    # -- check ---------------------------------------------------------------------------------------
    def check(self) -> CheckResult:
        try:
            version = self.client.version()
            uid = self.client.authenticate(force=True)
            catalog = self._ensure_catalog(refresh=True)
        except ConnectorError as exc:
            return CheckResult(False, exc.message)
        details = {
            "server_version": version.get("server_version"),
            "uid": uid,
            "household_kind": catalog.household_kind,
            "membership_kinds": sorted(catalog.kind_names.values()),
            "id_types": sorted(catalog.id_type_names.values()),
            "reference": self.config.reference,
        }
        return CheckResult(
            True,
            f"connected to OpenSPP {version.get('server_version', '?')} as {self.config.username!r}",
            details,
        )

    def describe_schema(self) -> dict[str, dict[str, FieldSpec]]:
        """``res.partner`` as ``fields_get`` describes it, plus the payload's reserved keys, whose choices
        are this registry's membership kinds, ID types and banks (what ``dcsync check`` verifies)."""
        catalog = self._ensure_catalog()
        partner: dict[str, FieldSpec] = {}
        for name, desc in catalog.partner_fields.items():
            if name in RESERVED or desc.get("type") in (None, "binary"):
                continue
            partner[name] = _field_spec(name, desc)
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

    # -- catalog -------------------------------------------------------------------------------------
    def _ensure_catalog(self, *, refresh: bool = False) -> _Catalog:
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
            self._catalog = _Catalog(
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

    # -- push ----------------------------------------------------------------------------------------
    def push(self, batch: Sequence[PushRecord]) -> list[PushResult]:
        if not batch:
            return []
        try:
            catalog = self._ensure_catalog()
        except ConnectorError as exc:
            exc.unsent = True  # the setup is read before any write: nothing of this batch left
            raise
        items = [self._item(record) for record in batch]
        rounds: list[list[_Item]] = []
        seen: dict[str, int] = defaultdict(int)
        for item in items:
            n = seen[item.ref]
            seen[item.ref] += 1
            if n == len(rounds):
                rounds.append([])
            rounds[n].append(item)
        for round_items in rounds:
            for item in round_items:
                if item.ok and item.record.operation is not Operation.DELETE:
                    self._prepare(item, catalog)
            households = [i for i in round_items if i.is_group]
            individuals = [i for i in round_items if not i.is_group]
            self._push_stage(households, catalog)
            self._resolve_households(individuals, households)
            self._push_stage(individuals, catalog)
        return [item.result() for item in items]

    def _item(self, record: PushRecord) -> _Item:
        cfg = self.config
        entity = record.entity_name
        if entity in (cfg.household_entity, "household", "group"):
            return _Item(record, True)
        item = _Item(record, False)
        if entity not in (cfg.individual_entity, "individual"):
            item.fail(f"entity {entity!r} is neither {cfg.household_entity!r} nor {cfg.individual_entity!r}")
        return item

    def _prepare(self, item: _Item, catalog: _Catalog) -> None:
        """Validate and resolve one payload into ``res.partner`` values (no writes)."""
        payload = dict(item.record.payload)
        fields = catalog.partner_fields
        try:
            if "_membership_kind" in payload:
                item.has_kind = True
                item.kinds = self._kind_ids(payload.pop("_membership_kind"), catalog)
            if "ids" in payload:
                item.reg_ids = self._reg_ids(item, payload.pop("ids"), catalog)
            if "bank_accounts" in payload:
                item.banks = self._bank_accounts(item, payload.pop("bank_accounts"), catalog)
            values: dict[str, Any] = {}
            for key, value in payload.items():
                if key not in fields:
                    if value in (None, False, "", []):
                        continue  # an empty default for a field this registry lacks: nothing to send
                    raise OdooPermanentError(f"Invalid field {key!r} on model 'res.partner'")
                values[key] = self._value(key, value, fields[key], catalog)
        except SystemicError:
            raise
        except ConnectorError as exc:
            item.fail(exc.message, exc.transient)
            return
        values.setdefault("is_registrant", True)
        values["is_group"] = item.is_group
        if item.is_group:
            values.setdefault("kind", catalog.household_kind)
        elif "name" not in values and any(values.get(p) for p in NAME_PARTS):
            values["name"] = ", ".join(str(values[p]) for p in NAME_PARTS if values.get(p)).upper()
        for key in list(values):
            if fields[key].get("type") == "one2many":
                item.deferred[key] = values.pop(key)
        item.values = values

    def _value(self, key: str, value: Any, desc: dict[str, Any], catalog: _Catalog) -> Any:
        ftype = desc.get("type")
        if ftype == "many2one":
            if isinstance(value, list) and len(value) == 2 and isinstance(value[0], int):
                return value[0]
            if isinstance(value, str) and value:
                return self._many2one_by_name(str(desc.get("relation")), value, key, catalog)
            if value in (None, False, 0, ""):
                return False
            if isinstance(value, bool) or not isinstance(value, int):
                raise OdooPermanentError(f"Wrong value for res.partner.{key}: {value!r}")
            return value
        if ftype in ("many2many", "one2many") and isinstance(value, list):
            if value and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
                return [[6, 0, list(value)]]
            return value
        if value is None:
            return False
        return value

    def _many2one_by_name(self, model: str, name: str, key: str, catalog: _Catalog) -> int:
        cache_key = (model, name.casefold())
        if cache_key in catalog.m2o_cache:
            return catalog.m2o_cache[cache_key]
        found = self.client.name_search(model, name, operator="=", limit=2)
        if len(found) != 1:
            what = "no" if not found else "more than one"
            raise OdooPermanentError(f"{what} {model} record is named {name!r} (field {key})")
        catalog.m2o_cache[cache_key] = found[0][0]
        return found[0][0]

    def _kind_ids(self, value: Any, catalog: _Catalog) -> list[int]:
        names = [] if value in (None, False, "") else value if isinstance(value, list) else [value]
        ids = []
        for name in names:
            kid = catalog.kinds_by_name.get(str(name).casefold())
            if kid is None:
                known = ", ".join(sorted(catalog.kind_names.values()))
                raise OdooPermanentError(f"unknown membership kind {name!r} (known: {known})")
            ids.append(kid)
        return ids

    def _reg_ids(self, item: _Item, value: Any, catalog: _Catalog) -> list[_Part]:
        """The payload's IDs as parts (one per ID type); an ID the registry cannot take is refused alone."""
        if not isinstance(value, list):
            raise OdooPermanentError("'ids' must be a list of {id_type, value} objects")
        out = []
        for index, entry in enumerate(value):
            type_name = entry.get("id_type") if isinstance(entry, dict) else None
            part = _Part(
                item, f"ids:{type_name}" if isinstance(type_name, str) and type_name else f"ids[{index}]"
            )
            item.parts.append(part)
            try:
                part.vals = self._reg_id_vals(entry, catalog)
            except OdooPermanentError as exc:
                part.fail(exc.message)
                continue
            out.append(part)
        return out

    @staticmethod
    def _reg_id_vals(entry: Any, catalog: _Catalog) -> dict[str, Any]:
        if not isinstance(entry, dict) or not entry.get("id_type") or not entry.get("value"):
            raise OdooPermanentError(f"invalid registrant ID {entry!r}: id_type and value are required")
        type_name = entry["id_type"]
        if not isinstance(type_name, str):
            raise OdooPermanentError(f"id_type must be the ID type's name, not {type_name!r}")
        type_id = catalog.id_types_by_name.get(type_name.casefold())
        if type_id is None:
            raise OdooPermanentError(f"unknown ID type {type_name!r}")
        unknown = set(entry) - {"id_type", "value", "expiry_date", "description", "status"}
        if unknown:
            raise OdooPermanentError(f"Invalid field {sorted(unknown)[0]!r} on model 'g2p.reg.id'")
        vals = {"id_type": type_id, "value": str(entry["value"])}
        for key in ("expiry_date", "description", "status"):
            if key in entry:
                vals[key] = entry[key] if entry[key] is not None else False
        return vals

    def _bank_accounts(self, item: _Item, value: Any, catalog: _Catalog) -> list[_Part]:
        """The payload's bank accounts as parts (matched by number); one the registry cannot take (an
        unknown bank) is refused alone."""
        if not isinstance(value, list):
            raise OdooPermanentError("'bank_accounts' must be a list of {acc_number, bank} objects")
        out = []
        for index, entry in enumerate(value):
            number = entry.get("acc_number") if isinstance(entry, dict) else None
            part = _Part(item, f"bank_accounts:{number}" if number else f"bank_accounts[{index}]")
            item.parts.append(part)
            try:
                part.vals = self._bank_vals(entry, catalog)
            except OdooPermanentError as exc:
                part.fail(exc.message)
                continue
            out.append(part)
        return out

    @staticmethod
    def _bank_vals(entry: Any, catalog: _Catalog) -> dict[str, Any]:
        if not isinstance(entry, dict) or not entry.get("acc_number"):
            raise OdooPermanentError(f"invalid bank account {entry!r}: acc_number is required")
        unknown = set(entry) - {"acc_number", "bank", "acc_holder_name"}
        if unknown:
            raise OdooPermanentError(f"Invalid field {sorted(unknown)[0]!r} on model 'res.partner.bank'")
        vals: dict[str, Any] = {"acc_number": str(entry["acc_number"])}
        bank = entry.get("bank")
        if bank:
            bank_id = catalog.banks_by_key.get(str(bank).casefold())
            if bank_id is None:
                raise OdooPermanentError(
                    f"unknown bank {bank!r} (neither a bank name nor a BIC in OpenSPP) "
                    f"of account {entry['acc_number']}"
                )
            vals["bank_id"] = bank_id
        elif "bank" in entry:
            vals["bank_id"] = False
        if "acc_holder_name" in entry:
            vals["acc_holder_name"] = entry["acc_holder_name"] or False
        return vals

    def _resolve_households(self, individuals: list[_Item], households: list[_Item]) -> None:
        """Each individual's target household id, from the record, this batch, or a reference lookup."""
        in_batch = {h.ref: h for h in households}
        to_lookup: dict[str, list[_Item]] = defaultdict(list)
        for item in individuals:
            if not item.ok or item.record.operation is Operation.DELETE:
                continue
            record = item.record
            if record.parent_external_id:
                try:
                    item.household = int(record.parent_external_id)
                except ValueError:
                    item.fail(f"parent_external_id {record.parent_external_id!r} is not an OpenSPP id")
            elif record.parent_ref:
                parent = in_batch.get(record.parent_ref)
                if parent is not None:
                    if parent.ok and parent.partner_id is not None:
                        item.household = parent.partner_id
                    else:
                        item.fail(
                            f"household {record.parent_ref} was not delivered: {parent.error}",
                            transient=True,
                        )
                else:
                    to_lookup[record.parent_ref].append(item)
        if to_lookup:
            owners = [i for group in to_lookup.values() for i in group]
            answer = self._guarded(owners, lambda: self._lookup(list(to_lookup)))
            if answer is None:
                return
            found, _unchecked = answer
            for ref, waiting in to_lookup.items():
                for item in waiting:
                    if ref in found:
                        item.household = int(found[ref])
                    else:
                        item.fail(f"household {ref} is not in OpenSPP yet", transient=True)

    def _push_stage(self, items: list[_Item], catalog: _Catalog) -> None:
        live = [i for i in items if i.ok]
        if not live:
            return
        self._resolve_existing(live, catalog)
        creates = [
            i for i in live if i.ok and i.partner_id is None and i.record.operation is not Operation.DELETE
        ]
        chunks = self._chunks(creates)
        self._parallel([partial(self._create_chunk, chunk, catalog) for chunk in chunks])
        touched = [i for i in live if i.ok and i.partner_id is not None]
        people = [i for i in touched if not i.is_group]
        memberships = self._guarded(people, lambda: self._memberships([i.partner_id for i in people]))
        if memberships is None:
            memberships = {}
            touched = [i for i in touched if i.ok]
        units = self._units(touched, memberships)
        self._parallel([partial(self._unit, unit, memberships, catalog) for unit in units])

    def _resolve_existing(self, items: list[_Item], catalog: _Catalog) -> None:
        """Known partner ids; deletes without one and (reg_id strategy) creates are looked up by ref."""
        needed = []
        for item in items:
            if item.record.external_id:
                try:
                    item.partner_id = int(item.record.external_id)
                    item.existing = True
                except ValueError:
                    item.fail(f"external id {item.record.external_id!r} is not an OpenSPP id")
            elif item.record.operation is Operation.DELETE or self.config.reference == "reg_id":
                needed.append(item)
        if not needed:
            return
        answer = self._guarded(needed, lambda: self._lookup([i.ref for i in needed]))
        if answer is None:
            return
        found, unchecked = answer
        for item in needed:
            if item.ref in found:
                item.partner_id = int(found[item.ref])
                item.existing = True
            elif item.ref in unchecked and item.record.operation is Operation.DELETE:
                item.fail(f"could not look up {item.ref} in OpenSPP; retry", transient=True)

    def _chunks(self, creates: list[_Item]) -> list[list[_Item]]:
        """Batches of ``batch_size`` that never split one household across two concurrent calls."""
        by_household: dict[Any, list[_Item]] = defaultdict(list)
        for item in creates:
            key = ("h", item.household) if item.household is not None else ("r", item.ref)
            by_household[key].append(item)
        size = self.config.batch_size
        chunks: list[list[_Item]] = []
        current: list[_Item] = []
        for group in by_household.values():
            if current and len(current) + len(group) > size:
                chunks.append(current)
                current = []
            current.extend(group)
            while len(current) > size and len(group) > size:
                chunks.append(current[:size])
                current = current[size:]
        if current:
            chunks.append(current)
        return chunks

    # -- creates -------------------------------------------------------------------------------------
    def _create_chunk(self, chunk: list[_Item], catalog: _Catalog) -> None:
        if self.config.reference == "reg_id":
            self._bisect(chunk, lambda part: self._create_partners(part, catalog), lambda i: [i])
        else:
            # one load per set of fields with a server default; other missing cells load as empty
            by_fields: dict[tuple[str, ...], list[_Item]] = defaultdict(list)
            for item in chunk:
                by_fields[tuple(sorted(k for k in item.values if k in catalog.defaulted))].append(item)
            for group in by_fields.values():
                self._bisect(group, lambda part: self._load_partners(part, catalog), lambda i: [i])
        created = [i for i in chunk if i.ok and i.partner_id is not None]
        deferred = [i for i in created if i.deferred]
        for item in deferred:
            pid = item.partner_id
            assert pid is not None
            self._guarded([item], partial(self.client.write, PARTNER, [pid], item.deferred))
        # IDs and bank accounts go after their partner, never inline: one the registry refuses must not
        # take its registrant down with it (it is refused alone, as a part)
        self._sync_reg_ids([i for i in created if i.ok and i.reg_ids is not None])
        self._sync_banks([i for i in created if i.ok and i.banks is not None])

    def _create_partners(self, items: list[_Item], catalog: _Catalog) -> None:
        """``reference: reg_id``: one ``create`` with a list of dicts; the guid ID travels inline so each
        partner and its reference commit together (other IDs and bank accounts follow on their own)."""
        vals_list = []
        for item in items:
            vals = dict(item.values)
            vals["reg_ids"] = [[0, 0, {"id_type": catalog.reference_type, "value": item.ref}]]
            vals.update(item.deferred)
            vals_list.append(vals)
        ids = self.client.create_many(PARTNER, vals_list)
        for item, pid in zip(items, ids, strict=True):
            item.partner_id = pid
            item.deferred = {}

    def _load_partners(self, items: list[_Item], catalog: _Catalog) -> None:
        """``reference: xmlid``: ``res.partner.load`` creates or updates the partner and its xml-id."""
        fields = catalog.partner_fields
        names = sorted({name for item in items for name in item.values})
        header = ["id"]
        for name in names:
            ftype = fields[name].get("type")
            header.append(f"{name}/.id" if ftype in ("many2one", "many2many") else name)
        rows = []
        module = self.config.xmlid_module
        for item in items:
            row = [f"{module}.{xmlid_name(item.ref)}"]
            row += [_load_cell(item.values.get(name), fields[name].get("type")) for name in names]
            rows.append(row)
        result = self.client.load(PARTNER, header, rows)
        if result.ids is not None:
            for item, pid in zip(items, result.ids, strict=True):
                item.partner_id = pid
            return
        errors = result.errors_by_row()
        if not errors:
            for item in items:
                item.fail("res.partner.load refused the rows without saying why")
            return
        for row_index, message in errors.items():
            if 0 <= row_index < len(items):
                items[row_index].fail(message)
        rest = [item for index, item in enumerate(items) if index not in errors]
        if rest and len(rest) < len(items):
            self._load_partners(rest, catalog)

    # -- per-household work --------------------------------------------------------------------------
    def _memberships(self, partner_ids: Iterable[int | None]) -> dict[int, list[dict[str, Any]]]:
        ids = sorted({p for p in partner_ids if p is not None})
        out: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for start in range(0, len(ids), _IN_CHUNK):
            rows = self.client.search_read(
                MEMBERSHIP,
                [["individual", "in", ids[start : start + _IN_CHUNK]]],
                ["group", "individual", "kind", "start_date", "ended_date", "is_ended"],
                order="id asc",
            )
            for row in rows:
                out[_id(row["individual"])].append(row)
        return out

    def _units(self, items: list[_Item], memberships: dict[int, list[dict[str, Any]]]) -> list[list[_Item]]:
        """Group items so that every household is written by one unit; units may run in parallel.

        A unit is a connected set of households (an individual moving between two households joins
        them), so no household ever has two writers at once.
        """
        parent: dict[Any, Any] = {}

        def find(x: Any) -> Any:
            parent.setdefault(x, x)
            while parent[x] != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x

        keys_of: dict[int, list[Any]] = {}
        for index, item in enumerate(items):
            keys: list[Any] = []
            if item.is_group:
                keys.append(("h", item.partner_id))
            else:
                if item.household is not None:
                    keys.append(("h", item.household))
                for m in memberships.get(item.partner_id or -1, []):
                    if not _ended(m):
                        keys.append(("h", _id(m["group"])))
                if not keys:
                    keys.append(("i", item.partner_id))
            for key in keys[1:]:
                parent[find(keys[0])] = find(key)
            find(keys[0])
            keys_of[index] = keys
        units: dict[Any, list[_Item]] = defaultdict(list)
        for index, item in enumerate(items):
            units[find(keys_of[index][0])].append(item)
        return list(units.values())

    def _unit(
        self, items: list[_Item], memberships: dict[int, list[dict[str, Any]]], catalog: _Catalog
    ) -> None:
        updates = [i for i in items if i.ok and i.record.operation is not Operation.DELETE and i.existing]
        if updates:
            self._update_partners(updates, catalog)
            self._sync_reg_ids([i for i in updates if i.ok and i.reg_ids is not None])
            self._sync_banks([i for i in updates if i.ok and i.banks is not None])
        individuals = [i for i in items if i.ok and not i.is_group]
        if individuals:
            self._sync_memberships(individuals, memberships, catalog)
        deletes = [i for i in items if i.ok and i.record.operation is Operation.DELETE]
        if deletes:
            ids = [i.partner_id for i in deletes if i.partner_id is not None]
            self._guarded(deletes, lambda: self.client.write(PARTNER, ids, {"active": False}))

    def _update_partners(self, items: list[_Item], catalog: _Catalog) -> None:
        """Write only the fields whose value differs from what OpenSPP holds now."""
        fields = catalog.partner_fields
        names = sorted({k for i in items for k in i.values} | {k for i in items for k in i.deferred})
        ids = [i.partner_id for i in items if i.partner_id is not None]
        current = self._guarded(
            items, lambda: self.client.read(PARTNER, ids, names, context=_NO_ARCHIVE_FILTER)
        )
        if current is None:
            return
        by_id = {row["id"]: row for row in current}
        for item in items:
            row = by_id.get(item.partner_id)
            wanted = {**item.values, **item.deferred}
            if row is None:
                changed = wanted
            else:
                changed = {k: v for k, v in wanted.items() if not _same(row.get(k), v, fields[k].get("type"))}
            if not changed:
                continue
            pid = item.partner_id
            assert pid is not None
            self._guarded([item], partial(self.client.write, PARTNER, [pid], changed))

    def _sync_reg_ids(self, items: list[_Item]) -> None:
        """Create the missing registrant IDs (one call for the batch) and fix changed values."""
        if not items:
            return
        ids = [i.partner_id for i in items if i.partner_id is not None]
        existing = self._guarded(
            items,
            lambda: self.client.search_read(
                REG_ID,
                [["partner_id", "in", ids]],
                ["partner_id", "id_type", "value", "expiry_date", "description", "status"],
                order="id asc",
            ),
        )
        if existing is None:
            return
        by_key = {(_id(r["partner_id"]), _id(r["id_type"])): r for r in existing}
        to_create: list[tuple[_Part, dict[str, Any]]] = []
        for item in items:
            for part in item.reg_ids or []:
                wanted = part.vals
                row = by_key.get((item.partner_id or 0, wanted["id_type"]))
                if row is None:
                    to_create.append((part, {"partner_id": item.partner_id, **wanted}))
                    continue
                changed = {
                    k: v for k, v in wanted.items() if k != "id_type" and not _same(row.get(k), v, "char")
                }
                if changed and part.ok:
                    self._guarded([part], partial(self.client.write, REG_ID, [row["id"]], changed))
        self._create_children(REG_ID, to_create)

    def _sync_banks(self, items: list[_Item]) -> None:
        if not items:
            return
        ids = [i.partner_id for i in items if i.partner_id is not None]
        existing = self._guarded(
            items,
            lambda: self.client.search_read(
                BANK_ACCOUNT,
                [["partner_id", "in", ids]],
                ["partner_id", "acc_number", "bank_id", "acc_holder_name"],
                order="id asc",
            ),
        )
        if existing is None:
            return
        by_key = {(_id(r["partner_id"]), r["acc_number"]): r for r in existing}
        to_create: list[tuple[_Part, dict[str, Any]]] = []
        for item in items:
            for part in item.banks or []:
                wanted = part.vals
                row = by_key.get((item.partner_id or 0, wanted["acc_number"]))
                if row is None:
                    to_create.append((part, {"partner_id": item.partner_id, **wanted}))
                    continue
                changed = {
                    k: v
                    for k, v in wanted.items()
                    if not _same(row.get(k), v, "many2one" if k == "bank_id" else "char")
                }
                if changed and part.ok:
                    self._guarded([part], partial(self.client.write, BANK_ACCOUNT, [row["id"]], changed))
        self._create_children(BANK_ACCOUNT, to_create)

    def _create_children(self, model: str, pending: list[tuple[_Part, dict[str, Any]]]) -> None:
        """One ``create`` for all of them; one the registry refuses is found by halving, and refused alone."""
        pending = [(part, vals) for part, vals in pending if part.ok]
        if not pending:
            return

        def attempt(units: list[tuple[_Part, dict[str, Any]]]) -> None:
            self.client.create_many(model, [vals for _, vals in units])

        self._bisect(pending, attempt, lambda unit: [unit[0]])

    def _sync_memberships(
        self, items: list[_Item], memberships: dict[int, list[dict[str, Any]]], catalog: _Catalog
    ) -> None:
        """Bring each individual's memberships in line with its parent: one group write per household."""
        now = self._server_now()
        commands: dict[int, list[_Command]] = defaultdict(list)
        for item in items:
            pid = item.partner_id
            if pid is None:
                continue
            existing = memberships.get(pid, [])
            deleting = item.record.operation is Operation.DELETE
            target = None if deleting else item.household
            for m in existing:
                group = _id(m["group"])
                if group == target or _ended(m):
                    continue
                end: dict[str, Any] = {"ended_date": max(now, m.get("start_date") or now)}
                kinds = list(m.get("kind") or [])
                if any(k in catalog.unique_kinds for k in kinds):
                    end["kind"] = [[6, 0, [k for k in kinds if k not in catalog.unique_kinds]]]
                commands[group].append(_Command(item, [1, m["id"], end]))
            if target is None:
                continue
            mine = [m for m in existing if _id(m["group"]) == target]
            if not mine:
                vals: dict[str, Any] = {"individual": pid}
                if item.kinds:
                    vals["kind"] = [[6, 0, item.kinds]]
                commands[target].append(_Command(item, [0, 0, vals]))
                continue
            m = sorted(mine, key=lambda r: (_ended(r), -r["id"]))[0]
            change: dict[str, Any] = {}
            if _ended(m):
                change["ended_date"] = False
            if item.has_kind and sorted(m.get("kind") or []) != sorted(item.kinds):
                change["kind"] = [[6, 0, item.kinds]]
            if change:
                commands[target].append(_Command(item, [1, m["id"], change]))
        for group, cmds in sorted(commands.items()):
            ordered = [c for c in cmds if c.command[0] == 1] + [c for c in cmds if c.command[0] == 0]

            def attempt(part: list[_Command], group: int = group) -> None:
                self.client.write(PARTNER, [group], {"group_membership_ids": [c.command for c in part]})

            self._bisect(ordered, attempt, lambda c: [c.owner])

    def _server_now(self) -> str:
        now = self.client.server_time or utc_now()
        return format_datetime(now)

    # -- failure plumbing ----------------------------------------------------------------------------
    def _guarded(self, owners: Sequence[_Item | _Part], call: Callable[[], T]) -> T | None:
        """Run one call; a failure lands on the records it was made for (auth failures stop the batch)."""
        try:
            return call()
        except SystemicError:
            raise
        except ConnectorError as exc:
            for item in owners:
                item.fail(exc.message, exc.transient)
            return None

    def _bisect(
        self,
        units: list[Any],
        attempt: Callable[[list[Any]], None],
        owners_of: Callable[[Any], Sequence[_Item | _Part]],
    ) -> None:
        """Send ``units`` in one call; on a permanent error, halve until the culprits stand alone.

        Each RPC call is one transaction, so a failed call saved nothing and its halves can be re-sent.
        Transient errors and access errors say nothing about a particular record and are not split.
        """
        units = [u for u in units if all(o.ok for o in owners_of(u))]
        if not units:
            return
        try:
            attempt(units)
            return
        except SystemicError:
            raise
        except ConnectorError as exc:
            splittable = (
                not exc.transient and len(units) > 1 and getattr(exc, "odoo_name", None) != ACCESS_ERROR
            )
            if not splittable:
                for unit in units:
                    for owner in owners_of(unit):
                        owner.fail(exc.message, exc.transient)
                return
        middle = len(units) // 2
        self._bisect(units[:middle], attempt, owners_of)
        self._bisect(units[middle:], attempt, owners_of)

    def _parallel(self, tasks: list[Callable[[], None]]) -> None:
        if not tasks:
            return
        if self.config.in_flight == 1 or len(tasks) == 1:
            for task in tasks:
                task()
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(
                max_workers=self.config.in_flight, thread_name_prefix=f"openspp-{self.name}"
            )
        futures = [self._pool.submit(task) for task in tasks]
        errors = [f.exception() for f in futures]
        for error in errors:
            if error is not None:
                raise error

    # -- lookup --------------------------------------------------------------------------------------
    def lookup(self, refs: Sequence[str]) -> dict[str, str]:
        """Partner ids of the refs OpenSPP holds, found through the reference (xml-id or guid ID).

        With ``reference: xmlid`` a registrar cannot search ``ir.model.data``, so each ref is checked with
        ``check_object_reference``; a ref whose check failed transiently is left out rather than failing
        the whole lookup. That is safe because an xml-id create is a ``load()`` upsert: re-sending it
        updates the record it created.
        """
        found, _unchecked = self._lookup(refs)
        return found

    def _lookup(self, refs: Sequence[str]) -> tuple[dict[str, str], set[str]]:
        """``(found, unchecked)``: refs held by OpenSPP, and refs whose presence is unknown."""
        if not refs:
            return {}, set()
        catalog = self._ensure_catalog()
        found: dict[str, str] = {}
        unique = list(dict.fromkeys(refs))
        if self.config.reference == "reg_id":
            for start in range(0, len(unique), _IN_CHUNK):
                rows = self.client.search_read(
                    REG_ID,
                    [
                        ["id_type", "=", catalog.reference_type],
                        ["value", "in", unique[start : start + _IN_CHUNK]],
                    ],
                    ["partner_id", "value"],
                    order="id asc",
                )
                for row in rows:
                    found.setdefault(row["value"], str(_id(row["partner_id"])))
            return found, set()
        module = self.config.xmlid_module
        names = {xmlid_name(ref): ref for ref in unique}
        if catalog.xmlids_readable is not False:
            try:
                listed = list(names)
                for start in range(0, len(listed), _IN_CHUNK):
                    rows = self.client.search_read(
                        "ir.model.data",
                        [
                            ["module", "=", module],
                            ["model", "=", PARTNER],
                            ["name", "in", listed[start : start + _IN_CHUNK]],
                        ],
                        ["name", "res_id"],
                        order="id asc",
                    )
                    for row in rows:
                        found[names[row["name"]]] = str(row["res_id"])
                catalog.xmlids_readable = True
                return found, set()
            except OdooPermanentError as exc:
                if exc.odoo_name != ACCESS_ERROR:
                    raise
                catalog.xmlids_readable = False
        unchecked: set[str] = set()
        for name, ref in names.items():
            try:
                target = self.client.xmlid_target(f"{module}.{name}", context=_NO_ARCHIVE_FILTER)
            except SystemicError:
                raise
            except ConnectorError as exc:
                if not exc.transient:
                    raise
                unchecked.add(ref)
                continue
            if target is not None and target[0] == PARTNER and target[1]:
                found[ref] = str(target[1])
        return found, unchecked

    # -- pull ----------------------------------------------------------------------------------------
    def pull(self, cursor: str | None, limit: int) -> PullPage:
        """Three streams, in this order in every sweep: households, individuals, memberships.

        Households come first so that an individual always finds its household already pulled: a
        membership change gives the group a later ``write_date`` than its members, so in one
        ``write_date`` order the members would arrive before their (new) household.
        """
        catalog = self._ensure_catalog()
        state = json.loads(cursor) if cursor else {}
        groups = _Stream.from_json(state.get("g"))
        partners = _Stream.from_json(state.get("p"))
        members = _Stream.from_json(state.get("m"))
        budget = max(1, min(limit, self.config.page_size))
        records: dict[int, RemoteRecord] = {}
        fields = list(dict.fromkeys([*catalog.pull_fields, *_BOOKKEEPING]))
        base = [["is_registrant", "=", True], *self.config.pull_domain]
        for stream, is_group in ((groups, True), (partners, False)):
            if stream.done:
                continue
            if len(records) >= budget:
                break
            domain = [*base, ["is_group", "=", is_group]]
            rows = self._sweep(stream, PARTNER, domain, fields, budget - len(records))
            for record in self._remote_records(rows, catalog, {}):
                records[int(record.external_id)] = record
            if not stream.done:
                break
        if groups.done and partners.done and not members.done and len(records) < budget:
            rows = self._sweep(members, MEMBERSHIP, [], ["individual", "write_date"], budget - len(records))
            stamps: dict[int, str] = {}
            for row in rows:
                pid = _id(row["individual"])
                stamps[pid] = max(stamps.get(pid, ""), row["write_date"])
            wanted = [pid for pid in stamps if pid not in records]
            people = self.client.read(PARTNER, wanted, fields, context=_NO_ARCHIVE_FILTER) if wanted else []
            for record in self._remote_records(people, catalog, stamps):
                records[int(record.external_id)] = record
        streams = (groups, partners, members)
        has_more = not all(s.done for s in streams)
        if not has_more:
            for stream in streams:
                stream.restart(self.config.lag_seconds)
        next_cursor = json.dumps(
            {"v": 2, "g": groups.to_json(), "p": partners.to_json(), "m": members.to_json()}
        )
        return PullPage(list(records.values()), next_cursor, has_more)

    def _sweep(
        self, stream: _Stream, model: str, base: list[Any], fields: list[str], budget: int
    ) -> list[dict[str, Any]]:
        """Read up to ``budget`` rows after the stream's (second, id) position; mark it done at the end."""
        client = self.client
        context = _NO_ARCHIVE_FILTER if model == PARTNER else None
        rows: list[dict[str, Any]] = []
        while len(rows) < budget:
            upper = add_seconds(stream.second, 1)
            want = budget - len(rows)
            page = client.search_read(
                model,
                [
                    *base,
                    ["write_date", ">=", stream.second],
                    ["write_date", "<", upper],
                    ["id", ">", stream.last_id],
                ],
                fields,
                order="id asc",
                limit=want,
                context=context,
            )
            if stream.started is None:
                stream.started = format_datetime(client.server_time or utc_now())
            rows.extend(page)
            if page:
                stream.last_id = page[-1]["id"]
            if len(page) == want:
                break
            following = client.search_read(
                model,
                [*base, ["write_date", ">=", upper]],
                ["write_date"],
                order="write_date asc, id asc",
                limit=1,
                context=context,
            )
            if not following:
                stream.done = True
                break
            stream.second = following[0]["write_date"][:19]
            stream.last_id = 0
        return rows

    def _remote_records(
        self, rows: list[dict[str, Any]], catalog: _Catalog, stamps: dict[int, str]
    ) -> list[RemoteRecord]:
        if not rows:
            return []
        client = self.client
        ids = [row["id"] for row in rows]
        memberships = self._memberships(ids)
        reg_rows = client.search_read(
            REG_ID,
            [["partner_id", "in", ids]],
            ["partner_id", "id_type", "value", "expiry_date", "description"],
            order="id asc",
        )
        bank_rows = client.search_read(
            BANK_ACCOUNT,
            [["partner_id", "in", ids]],
            ["partner_id", "acc_number", "bank_id", "acc_holder_name"],
            order="id asc",
        )
        refs = self._refs(ids, reg_rows, catalog)
        reg_by: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for r in reg_rows:
            type_id = _id(r["id_type"])
            if type_id == catalog.reference_type:
                continue
            entry = {
                "id_type": catalog.id_type_names.get(type_id) or _name(r["id_type"]),
                "value": r["value"] or None,
            }
            if r.get("expiry_date"):
                entry["expiry_date"] = r["expiry_date"]
            if r.get("description"):
                entry["description"] = r["description"]
            reg_by[_id(r["partner_id"])].append(entry)
        bank_by: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for b in bank_rows:
            bank_by[_id(b["partner_id"])].append(
                {
                    "acc_number": b["acc_number"],
                    "bank": catalog.bank_names.get(_id(b["bank_id"])) if b.get("bank_id") else None,
                    "acc_holder_name": b.get("acc_holder_name") or None,
                }
            )
        fields = catalog.partner_fields
        out = []
        for row in rows:
            pid = row["id"]
            data = {
                name: _normalise(row.get(name), fields.get(name, {}).get("type"))
                for name in catalog.pull_fields
            }
            # in creation order, which is the order of the list pushed, so a round trip keeps it
            data["ids"] = reg_by.get(pid, [])
            data["bank_accounts"] = bank_by.get(pid, [])
            parent = _current_membership(memberships.get(pid, []))
            if not row.get("is_group"):
                kinds = (parent or {}).get("kind") or []
                unique = [k for k in kinds if k in catalog.unique_kinds]
                chosen = (unique or sorted(kinds))[:1]
                data["_membership_kind"] = catalog.kind_names.get(chosen[0]) if chosen else None
            stamp = max(row["write_date"], stamps.get(pid, ""))
            out.append(
                RemoteRecord(
                    external_id=str(pid),
                    data=data,
                    entity_name=self.config.household_entity
                    if row.get("is_group")
                    else self.config.individual_entity,
                    ref=refs.get(pid),
                    updated_at=to_iso_ms(stamp),
                    version=stamp,
                    deleted=not row.get("active", True),
                    parent_external_id=str(_id(parent["group"])) if parent else None,
                )
            )
        return out

    def _refs(self, ids: list[int], reg_rows: list[dict[str, Any]], catalog: _Catalog) -> dict[int, str]:
        """The dcsync guid each partner carries, if it was created through dcsync."""
        if self.config.reference == "reg_id":
            return {
                _id(r["partner_id"]): r["value"]
                for r in reg_rows
                if _id(r["id_type"]) == catalog.reference_type and r.get("value")
            }
        module = self.config.xmlid_module
        out: dict[int, str] = {}
        if catalog.xmlids_readable is not False:
            try:
                rows = self.client.search_read(
                    "ir.model.data",
                    [["module", "=", module], ["model", "=", PARTNER], ["res_id", "in", ids]],
                    ["name", "res_id"],
                    order="id asc",
                )
                catalog.xmlids_readable = True
                for row in rows:
                    ref = ref_from_xmlid_name(row["name"])
                    if ref:
                        out.setdefault(int(row["res_id"]), ref)
                return out
            except OdooPermanentError as exc:
                if exc.odoo_name != ACCESS_ERROR:
                    raise
                catalog.xmlids_readable = False
        external = self.client.execute_kw(PARTNER, "get_external_id", [ids]) or {}
        prefix = module + "."
        for key, value in external.items():
            if isinstance(value, str) and value.startswith(prefix):
                ref = ref_from_xmlid_name(value[len(prefix) :])
                if ref:
                    out[int(key)] = ref
        return out


# -- helpers ------------------------------------------------------------------------------------------
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


def _field_spec(name: str, desc: dict[str, Any]) -> FieldSpec:
    """A ``fields_get`` entry as a :class:`FieldSpec` (a selection's keys are its only choices)."""
    ftype = str(desc.get("type"))
    remote = f"{ftype} {desc['relation']}" if desc.get("relation") else ftype
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


def _id(value: Any) -> int:
    """A many2one as Odoo returns it (``[id, name]``, an id, or ``false``) to its id (0 for none)."""
    if isinstance(value, list | tuple):
        return int(value[0]) if value else 0
    if isinstance(value, bool) or value is None:
        return 0
    return int(value)


def _name(value: Any) -> str | None:
    if isinstance(value, list | tuple) and len(value) > 1:
        return str(value[1])
    return None


def _ended(membership: dict[str, Any]) -> bool:
    return bool(membership.get("ended_date")) or bool(membership.get("is_ended"))


def _current_membership(memberships: list[dict[str, Any]]) -> dict[str, Any] | None:
    active = [m for m in memberships if not _ended(m)]
    if not active:
        return None
    return sorted(active, key=lambda m: (m.get("start_date") or "", m["id"]))[-1]


def _normalise(value: Any, ftype: str | None) -> Any:
    if ftype == "boolean":
        return bool(value)
    if ftype == "many2one":
        return _id(value) or None
    if ftype in ("one2many", "many2many"):
        return list(value or [])
    if value is False:
        return None
    return value


def _same(remote: Any, local: Any, ftype: str | None) -> bool:
    """Does OpenSPP already hold ``local``? Compares in Odoo's read format."""
    if ftype == "many2one":
        return (_id(remote) or None) == (_id(local) or None)
    if ftype == "boolean":
        return bool(remote) == bool(local)
    if ftype in ("one2many", "many2many"):
        if isinstance(local, list) and len(local) == 1 and isinstance(local[0], list) and local[0][:1] == [6]:
            return sorted(remote or []) == sorted(local[0][2])
        return False
    if ftype in ("integer", "float"):
        return (remote or 0) == (local or 0)
    norm_remote = None if remote in (False, None, "") else remote
    norm_local = None if local in (False, None, "") else local
    return bool(norm_remote == norm_local)


def _load_cell(value: Any, ftype: str | None) -> str:
    """A value in ``load()``'s import dialect: every cell a string, ``""`` for empty."""
    if ftype == "boolean":
        return "1" if value else "0"
    if value is None or value is False:
        return ""
    if ftype == "many2many":
        if isinstance(value, list) and value and isinstance(value[0], list):
            ids = value[-1][2] if value[-1][0] == 6 else []
        else:
            ids = value
        return ",".join(str(i) for i in ids)
    return str(value)

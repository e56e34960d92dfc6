"""Push planning for OpenSPP: a batch of records becomes partners (``load``, or ``create`` with the
``reg_id`` reference), their IDs and bank accounts, and one membership write per household.

Each record is an ``_Item`` that goes through the stages (prepare, resolve its household, create or update,
sub-records, memberships); the first failure is final for the record, while a refused ID or bank account
(a ``_Part``) is answered on its own and the registrant is delivered.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

from connector_core.connector import (
    ConnectorError,
    Operation,
    PartResult,
    PushRecord,
    PushResult,
    SystemicError,
)
from connectors.openspp.catalog import Catalog, Catalogs
from connectors.openspp.client import ACCESS_ERROR, OdooClient, OdooPermanentError
from connectors.openspp.config import OpenSppConfig
from connectors.openspp.odoo_formats import format_datetime, utc_now
from connectors.openspp.records import (
    BANK_ACCOUNT,
    IN_CHUNK,
    MEMBERSHIP,
    NO_ARCHIVE_FILTER,
    PARTNER,
    REG_ID,
    is_ended,
    load_cell,
    many2one_id,
    read_memberships,
    same_value,
    sanitized_account_number,
    xmlid_name,
)
from connectors.openspp.references import References

T = TypeVar("T")
NAME_PARTS = ("family_name", "given_name", "addl_name")


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

    @property
    def writes_partner(self) -> bool:
        """A create or update: the partner's values are written (a delete archives it, an unlink only
        ends one membership)."""
        return self.record.operation in (Operation.CREATE, Operation.UPDATE)

    def fail(self, message: str, transient: bool = False) -> None:
        if self.error is None:
            self.error = message
            self.transient = transient

    def result(self) -> PushResult:
        external = str(self.partner_id) if self.partner_id is not None else None
        if self.error is None:
            return PushResult.delivered(
                self.ref, external, [PartResult(p.name, p.error, p.path) for p in self.parts]
            )
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
    path: tuple[str | int, ...]
    """Where it sits in the payload: a refused part is left out of the engine's snapshot."""
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


class Pusher:
    """Delivers push batches; one per connector (it keeps the thread pool of ``in_flight`` writers)."""

    def __init__(
        self,
        client: OdooClient,
        config: OpenSppConfig,
        name: str,
        catalogs: Catalogs,
        references: References,
    ):
        self.client = client
        self.config = config
        self.name = name
        self.catalogs = catalogs
        self.references = references
        self._pool: ThreadPoolExecutor | None = None
        self._direct_lock = threading.Lock()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def push(self, batch: Sequence[PushRecord]) -> list[PushResult]:
        if not batch:
            return []
        try:
            catalog = self.catalogs.get()
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
                if item.ok and item.writes_partner:
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
        if record.operation is Operation.UNLINK:
            # a member left its household (DataCollect's remove-member): only that membership ends
            item = _Item(record, False)
            if not record.external_id or not record.parent_external_id:
                item.fail("an unlink needs the member's and the household's OpenSPP ids")
            return item
        if entity in (cfg.household_entity, "household", "group"):
            return _Item(record, True)
        item = _Item(record, False)
        if entity not in (cfg.individual_entity, "individual"):
            item.fail(f"entity {entity!r} is neither {cfg.household_entity!r} nor {cfg.individual_entity!r}")
        return item

    def _prepare(self, item: _Item, catalog: Catalog) -> None:
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

    def _value(self, key: str, value: Any, desc: dict[str, Any], catalog: Catalog) -> Any:
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

    def _many2one_by_name(self, model: str, name: str, key: str, catalog: Catalog) -> int:
        cache_key = (model, name.casefold())
        if cache_key in catalog.m2o_cache:
            return catalog.m2o_cache[cache_key]
        found = self.client.name_search(model, name, operator="=", limit=2)
        if len(found) != 1:
            what = "no" if not found else "more than one"
            raise OdooPermanentError(f"{what} {model} record is named {name!r} (field {key})")
        catalog.m2o_cache[cache_key] = found[0][0]
        return found[0][0]

    def _kind_ids(self, value: Any, catalog: Catalog) -> list[int]:
        names = [] if value in (None, False, "") else value if isinstance(value, list) else [value]
        ids = []
        for name in names:
            kid = catalog.kinds_by_name.get(str(name).casefold())
            if kid is None:
                known = ", ".join(sorted(catalog.kind_names.values()))
                raise OdooPermanentError(f"unknown membership kind {name!r} (known: {known})")
            ids.append(kid)
        return ids

    def _reg_ids(self, item: _Item, value: Any, catalog: Catalog) -> list[_Part]:
        """The payload's IDs as parts (one per ID type); an ID the registry cannot take is refused alone."""
        if not isinstance(value, list):
            raise OdooPermanentError("'ids' must be a list of {id_type, value} objects")
        return self._parts(item, value, "ids", "id_type", lambda entry: self._reg_id_vals(entry, catalog))

    @staticmethod
    def _parts(
        item: _Item, value: list[Any], field: str, key: str, vals_of: Callable[[Any], dict[str, Any]]
    ) -> list[_Part]:
        """Each entry of a sub-record list as a part named by its ``key`` (``ids:Passport``,
        ``bank_accounts:HB-77``; its position when it has none): one the registry cannot take is refused
        alone, and the rest go."""
        out = []
        for index, entry in enumerate(value):
            name = entry.get(key) if isinstance(entry, dict) else None
            named = isinstance(name, str | int) and name != ""
            part = _Part(item, f"{field}:{name}" if named else f"{field}[{index}]", (field, index))
            item.parts.append(part)
            try:
                part.vals = vals_of(entry)
            except OdooPermanentError as exc:
                part.fail(exc.message)
                continue
            out.append(part)
        return out

    @staticmethod
    def _reg_id_vals(entry: Any, catalog: Catalog) -> dict[str, Any]:
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

    def _bank_accounts(self, item: _Item, value: Any, catalog: Catalog) -> list[_Part]:
        """The payload's bank accounts as parts (matched by number); one the registry cannot take (an
        unknown bank) is refused alone."""
        if not isinstance(value, list):
            raise OdooPermanentError("'bank_accounts' must be a list of {acc_number, bank} objects")
        return self._parts(
            item, value, "bank_accounts", "acc_number", lambda entry: self._bank_vals(entry, catalog)
        )

    @staticmethod
    def _bank_vals(entry: Any, catalog: Catalog) -> dict[str, Any]:
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
            if not item.ok or not item.writes_partner:
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
            answer = self._guarded(owners, lambda: self.references.find(list(to_lookup)))
            if answer is None:
                return
            found, _unchecked = answer
            for ref, waiting in to_lookup.items():
                for item in waiting:
                    if ref in found:
                        item.household = int(found[ref])
                    else:
                        item.fail(f"household {ref} is not in OpenSPP yet", transient=True)

    def _push_stage(self, items: list[_Item], catalog: Catalog) -> None:
        live = [i for i in items if i.ok]
        if not live:
            return
        self._resolve_existing(live, catalog)
        creates = [i for i in live if i.ok and i.partner_id is None and i.writes_partner]
        chunks = self._chunks(creates)
        self._parallel([partial(self._create_chunk, chunk, catalog) for chunk in chunks])
        # IDs and bank accounts of every partner created: one read and one create per model for the
        # stage, never inline (one the registry refuses must not take its registrant down: it is a part)
        created = [i for i in creates if i.ok and i.partner_id is not None]
        self._sync_reg_ids([i for i in created if i.ok and i.reg_ids])
        self._sync_banks([i for i in created if i.ok and i.banks])
        touched = [i for i in live if i.ok and i.partner_id is not None]
        people = [i for i in touched if not i.is_group]
        memberships = self._guarded(
            people, lambda: read_memberships(self.client, [i.partner_id for i in people])
        )
        if memberships is None:
            memberships = {}
            touched = [i for i in touched if i.ok]
        free = self._free_groups(people, catalog)
        direct: list[tuple[int, _Command]] = []
        units = self._units(touched, memberships, self._server_now())
        self._parallel([partial(self._unit, unit, memberships, catalog, free, direct) for unit in units])
        self._create_memberships(direct)

    def _free_groups(self, people: list[_Item], catalog: Catalog) -> set[int]:
        """Households no membership of which holds a unique kind (Head): a new member can join one with a
        direct ``g2p.group.membership.create``, which Odoo does not check for a second Head (observed),
        so only these may take that path. One read for the stage."""
        groups = sorted({i.household for i in people if i.ok and i.household is not None})
        if not groups or not catalog.unique_kinds:
            return set(groups)
        rows = self._guarded(
            [i for i in people if i.ok and i.household is not None],
            lambda: self.client.search_read(
                MEMBERSHIP,
                [["group", "in", groups], ["kind", "in", sorted(catalog.unique_kinds)]],
                ["group"],
                order="id asc",
            ),
        )
        if rows is None:
            return set()
        return set(groups) - {many2one_id(r["group"]) for r in rows}

    def _create_memberships(self, direct: list[tuple[int, _Command]]) -> None:
        """New members of households that hold no Head yet: one ``create`` with a list for the whole
        stage (a group write costs a call per household); a refused one is found by halving."""
        pending = direct  # a unit whose owner was refused meanwhile is left out by _bisect
        for start in range(0, len(pending), IN_CHUNK):

            def attempt(part: list[tuple[int, _Command]]) -> None:
                vals = [{"group": group, **command.command[2]} for group, command in part]
                self.client.create_many(MEMBERSHIP, vals)

            self._bisect(pending[start : start + IN_CHUNK], attempt, lambda unit: [unit[1].owner])

    def _resolve_existing(self, items: list[_Item], catalog: Catalog) -> None:
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
        answer = self._guarded(needed, lambda: self.references.find([i.ref for i in needed]))
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
    def _create_chunk(self, chunk: list[_Item], catalog: Catalog) -> None:
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

    def _create_partners(self, items: list[_Item], catalog: Catalog) -> None:
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

    def _load_partners(self, items: list[_Item], catalog: Catalog) -> None:
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
            row += [load_cell(item.values.get(name), fields[name].get("type")) for name in names]
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
    def _units(
        self, items: list[_Item], memberships: dict[int, list[dict[str, Any]]], now: str
    ) -> list[list[_Item]]:
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
                    if not is_ended(m, now):
                        keys.append(("h", many2one_id(m["group"])))
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
        self,
        items: list[_Item],
        memberships: dict[int, list[dict[str, Any]]],
        catalog: Catalog,
        free: set[int],
        direct: list[tuple[int, _Command]],
    ) -> None:
        updates = [i for i in items if i.ok and i.writes_partner and i.existing]
        if updates:
            self._update_partners(updates, catalog)
            self._sync_reg_ids([i for i in updates if i.ok and i.reg_ids is not None])
            self._sync_banks([i for i in updates if i.ok and i.banks is not None])
        individuals = [i for i in items if i.ok and not i.is_group]
        if individuals:
            self._sync_memberships(individuals, memberships, catalog, free, direct)
        deletes = [i for i in items if i.ok and i.record.operation is Operation.DELETE]
        if deletes:
            ids = [i.partner_id for i in deletes if i.partner_id is not None]
            self._guarded(deletes, lambda: self.client.write(PARTNER, ids, {"active": False}))

    def _update_partners(self, items: list[_Item], catalog: Catalog) -> None:
        """Write only the fields whose value differs from what OpenSPP holds now."""
        fields = catalog.partner_fields
        names = sorted({k for i in items for k in i.values} | {k for i in items for k in i.deferred})
        ids = [i.partner_id for i in items if i.partner_id is not None]
        current = self._guarded(
            items, lambda: self.client.read(PARTNER, ids, names, context=NO_ARCHIVE_FILTER)
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
                changed = {
                    k: v for k, v in wanted.items() if not same_value(row.get(k), v, fields[k].get("type"))
                }
            if not changed:
                continue
            pid = item.partner_id
            assert pid is not None
            self._guarded([item], partial(self.client.write, PARTNER, [pid], changed))

    def _sync_reg_ids(self, items: list[_Item]) -> None:
        """Create the missing registrant IDs (one call for the batch) and fix changed values."""
        fields = ["id_type", "value", "expiry_date", "description", "status"]
        self._sync_parts(items, REG_ID, fields, lambda item: item.reg_ids, "id_type", {"id_type": "many2one"})

    def _sync_banks(self, items: list[_Item]) -> None:
        """Create the missing bank accounts (one call for the batch) and fix changed values."""
        fields = ["acc_number", "bank_id", "acc_holder_name"]
        self._sync_parts(
            items,
            BANK_ACCOUNT,
            fields,
            lambda item: item.banks,
            "acc_number",
            {"bank_id": "many2one"},
            same_key=sanitized_account_number,
        )

    def _sync_parts(
        self,
        items: list[_Item],
        model: str,
        fields: list[str],
        parts_of: Callable[[_Item], list[_Part] | None],
        key: str,
        ftypes: dict[str, str],
        same_key: Callable[[Any], Any] = lambda value: value,
    ) -> None:
        """One sub-record model of a batch: one read of what the partners hold, one create of what they
        lack, and a write only for a row whose values changed. A row is matched by partner and ``key``
        (one ID per type, one account per number), the key compared as the registry's unique constraint
        compares it (``same_key``: a bank account number sanitized); fields are compared as ``ftypes``
        says (else text)."""
        if not items:
            return
        ids = [i.partner_id for i in items if i.partner_id is not None]
        existing = self._guarded(
            items,
            lambda: self.client.search_read(
                model, [["partner_id", "in", ids]], ["partner_id", *fields], order="id asc"
            ),
        )
        if existing is None:
            return

        def row_key(row: dict[str, Any]) -> Any:
            return many2one_id(row[key]) if ftypes.get(key) == "many2one" else row[key]

        by_key = {(many2one_id(r["partner_id"]), same_key(row_key(r))): r for r in existing}
        to_create: list[tuple[_Part, dict[str, Any]]] = []
        for item in items:
            for part in parts_of(item) or []:
                wanted = part.vals
                row = by_key.get((item.partner_id or 0, same_key(wanted[key])))
                if row is None:
                    to_create.append((part, {"partner_id": item.partner_id, **wanted}))
                    continue
                changed = {
                    k: v
                    for k, v in wanted.items()
                    if (k != key or row_key(row) != v)
                    and not same_value(row.get(k), v, ftypes.get(k, "char"))
                }
                if changed and part.ok:
                    self._guarded([part], partial(self.client.write, model, [row["id"]], changed))
        self._create_children(model, to_create)

    def _create_children(self, model: str, pending: list[tuple[_Part, dict[str, Any]]]) -> None:
        """One ``create`` per ``IN_CHUNK`` of them, as memberships go; one the registry refuses is found by
        halving, and refused alone."""

        def attempt(units: list[tuple[_Part, dict[str, Any]]]) -> None:
            self.client.create_many(model, [vals for _, vals in units])

        for start in range(0, len(pending), IN_CHUNK):
            self._bisect(pending[start : start + IN_CHUNK], attempt, lambda unit: [unit[0]])

    def _sync_memberships(
        self,
        items: list[_Item],
        memberships: dict[int, list[dict[str, Any]]],
        catalog: Catalog,
        free: set[int],
        direct: list[tuple[int, _Command]],
    ) -> None:
        """Bring each individual's memberships in line with its parent: one group write per household,
        whose Head check Odoo runs; a household that only gains members, holds no Head and gains at most
        one of each unique kind leaves its new memberships to ``direct`` (one create for the stage)."""
        now = self._server_now()
        commands: dict[int, list[_Command]] = defaultdict(list)
        for item in items:
            pid = item.partner_id
            if pid is None:
                continue
            existing = memberships.get(pid, [])
            target = item.household if item.writes_partner else None
            leaving = item.record.parent_external_id if item.record.operation is Operation.UNLINK else None
            for m in existing:
                group = many2one_id(m["group"])
                if group == target or is_ended(m, now) or (leaving is not None and str(group) != leaving):
                    continue
                end: dict[str, Any] = {"ended_date": max(now, m.get("start_date") or now)}
                kinds = list(m.get("kind") or [])
                if any(k in catalog.unique_kinds for k in kinds):
                    end["kind"] = [[6, 0, [k for k in kinds if k not in catalog.unique_kinds]]]
                commands[group].append(_Command(item, [1, m["id"], end]))
            if target is None:
                continue
            mine = [m for m in existing if many2one_id(m["group"]) == target]
            if not mine:
                vals: dict[str, Any] = {"individual": pid}
                if item.kinds:
                    vals["kind"] = [[6, 0, item.kinds]]
                commands[target].append(_Command(item, [0, 0, vals]))
                continue
            m = sorted(mine, key=lambda r: (is_ended(r, now), -r["id"]))[0]
            change: dict[str, Any] = {}
            if is_ended(m, now):
                change["ended_date"] = False
            if item.has_kind and sorted(m.get("kind") or []) != sorted(item.kinds):
                change["kind"] = [[6, 0, item.kinds]]
            if change:
                commands[target].append(_Command(item, [1, m["id"], change]))
        for group, cmds in sorted(commands.items()):
            if group in free and all(c.command[0] == 0 for c in cmds):
                unique = [k for c in cmds for k in c.owner.kinds if k in catalog.unique_kinds]
                if len(unique) == len(set(unique)):
                    with self._direct_lock:
                        direct.extend((group, c) for c in cmds)
                    continue
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

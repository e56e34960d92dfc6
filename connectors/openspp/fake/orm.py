"""The ORM methods a client can reach through ``execute_kw``, with Odoo 17 + OpenG2P semantics.

One :class:`Env` serves one RPC call: it holds the caller, the call's context and the single timestamp the
whole call stamps on what it writes (PostgreSQL's ``now()`` is the transaction start). Business rules are
the ones a real server enforces and ``odoo-observed.md`` records, including its quirks: the "Only one Head"
check only runs on partner writes, a group that already holds two Heads blocks every later write to it and
to its members, ``read`` drops missing ids while ``write`` raises, registrars may load xml-ids but not touch
``ir.model.data``.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from connectors.openspp.fake.domain import Compiler, parse, parse_order, sort_ids
from connectors.openspp.fake.errors import (
    ACCESS_ERROR,
    ATTRIBUTE_ERROR,
    INDEX_ERROR,
    INVALID_TEXT_REPRESENTATION,
    TYPE_ERROR,
    RpcError,
    foreign_key_error,
    missing_error,
    not_null_error,
    sql_constraint_error,
    user_error,
    validation_error,
    value_error,
)
from connectors.openspp.fake.models import (
    ERP_MANAGER,
    EVERYONE,
    G2P_ADMIN,
    GROUPS,
    REGISTRAR,
    X2MANY,
    Field,
    ModelDef,
    default_value,
)
from connectors.openspp.fake.store import Row, Store, Transaction
from connectors.openspp.odoo_formats import (
    format_date,
    format_datetime,
    parse_write_date,
    parse_write_datetime,
)

if TYPE_CHECKING:
    from connectors.openspp.fake.server import FakeOpenSpp

SUPERUSER = 1
SPP_ID_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"
_OP_LABEL = {"read": "access", "write": "modify", "create": "create", "unlink": "delete"}
_OP_LETTER = {"read": "r", "write": "w", "create": "c", "unlink": "u"}
# kinds, types and other configuration rows whose ids differ per database (§6.9 "hard-coded ids")
CONFIG_MODELS = frozenset(
    {"g2p.group.membership.kind", "g2p.group.kind", "g2p.id.type", "res.bank", "spp.area"}
)
NAME_PARTS = ("family_name", "given_name", "addl_name")
PROTECTED_KINDS = frozenset({"group_membership_kind_head"})
# configuration models whose ``_check_name`` constraint reads ``self.<field>`` on the whole batch (OpenG2P)
SINGLETON_NAME_CHECKS = {
    "gender.type": "code",
    "g2p.id.type": "name",
    "g2p.group.kind": "name",
    "g2p.group.membership.kind": "name",
}
_KIND_NAME = ("kind should not empty.", "kind already exists")


class Env:
    """One call's view of the database: caller, context, timestamp and transaction."""

    def __init__(
        self,
        server: FakeOpenSpp,
        txn: Transaction,
        uid: int,
        *,
        context: dict[str, Any] | None = None,
        stamp: datetime,
        sudo: bool = False,
    ):
        self.server = server
        self.store: Store = server.store
        self.registry = server.registry
        self.txn = txn
        self.uid = uid
        self.context = dict(context or {})
        self.stamp = stamp
        self.stamp_seconds = stamp.replace(microsecond=0)
        self.sudo = sudo or uid == SUPERUSER
        self.compiler = Compiler(self)
        self.written_groups: set[int] = set()
        self._groups_cache: set[str] | None = None

    # -- DomainEnv protocol ----------------------------------------------------------------------
    def row(self, model: str, rid: int) -> Row | None:
        return self.txn.get(model, rid)

    def x2many_ids(self, model: str, fname: str, rid: int, row: Row) -> list[int]:
        """The related ids as Odoo reads them: by searching the comodel, so in its order and, unless the
        context says ``active_test: false``, without its archived records."""
        f = self.registry[model].fields[fname]
        assert f.relation is not None
        comodel = self.registry[f.relation]
        if f.type == "one2many":
            assert f.inverse_name is not None
            ids = list(self.store.referencing(f.relation, f.inverse_name, rid))
        else:
            ids = list(row.get(fname) or ())
        if not ids:
            return ids
        rows = {i: r for i in ids if (r := self.row(f.relation, i)) is not None}
        if comodel.has_active and self.context.get("active_test", True) is not False:
            rows = {i: r for i, r in rows.items() if r.get("active", True)}
        if len(rows) < 2:
            return list(rows)
        return sort_ids(rows, rows, parse_order(comodel, None))

    def display_name(self, model: str, rid: int) -> str:
        row = self.row(model, rid)
        if row is None:
            return ""
        if model == "g2p.group.membership":
            return self.display_name("res.partner", row["group"]) if row.get("group") else "NONE"
        if model == "g2p.reg.id":
            return self.display_name("res.partner", row["partner_id"]) if row.get("partner_id") else ""
        if model == "ir.model.data":
            return f"{row['module']}.{row['name']}"
        if model == "res.groups":
            return row.get("full_name") or row.get("name") or ""
        rec = self.registry[model].rec_name
        value = row.get(rec)
        return value if isinstance(value, str) else (str(value) if value else "")

    def search_ids(self, model: str, domain: list[Any], active_test: bool) -> set[int]:
        md = self.registry[model]
        pred = self.compiler.compile(md, domain, active_test=active_test)
        return {rid for rid in self.txn.ids(model) if pred(rid, self.row(model, rid) or {})}

    def note_iso(self, value: str) -> None:
        self.server.flag("iso_datetime", detail=value)

    # -- access ----------------------------------------------------------------------------------
    @property
    def user_groups(self) -> set[str]:
        if self._groups_cache is None:
            self._groups_cache = self.server.groups_of(self.uid)
        return self._groups_cache

    def in_group(self, *groups: str) -> bool:
        return self.sudo or bool(self.user_groups & set(groups))

    def check_access(self, model: str, operation: str) -> None:
        if self.sudo:
            return
        md = self.registry[model]
        letter = _OP_LETTER[operation]
        if any(letter in ops for g, ops in md.access.items() if g == EVERYONE or g in self.user_groups):
            return
        allowed = sorted(GROUPS[g] for g, ops in md.access.items() if letter in ops and g in GROUPS)
        if allowed:
            info = "This operation is allowed for the following groups:\n" + "\n".join(
                f"\t- {g}" for g in allowed
            )
        else:
            info = "No group currently allows this operation."
        raise RpcError(
            ACCESS_ERROR,
            f"You are not allowed to {_OP_LABEL[operation]} '{md.description}' ({model}) records."
            f"\n\n{info}\n\nContact your administrator to request access if necessary.",
        )

    def note_read(self, model: str) -> None:
        if model in CONFIG_MODELS:
            self.server.models_read.setdefault(self.uid, set()).add(model)

    # -- dispatch --------------------------------------------------------------------------------
    def call(self, model: str, method: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
        if model not in self.registry:
            raise user_error(f"Object {model} doesn't exist")
        if method.startswith("_"):
            raise RpcError(ACCESS_ERROR, f"Private methods (such as {method}) cannot be called remotely.")
        fn = self._method(model, method)
        if fn is None:
            raise RpcError(ATTRIBUTE_ERROR, f"The method '{method}' does not exist on the model '{model}'")
        kwargs = dict(kwargs)
        context = kwargs.pop("context", None)
        if context is not None:
            if not isinstance(context, dict):
                raise RpcError(TYPE_ERROR, "context must be a dictionary")
            self.context.update(context)
        try:
            bound = inspect.signature(fn).bind(model, *args, **kwargs)
        except TypeError as exc:
            owner = "BaseModel._read_format" if method == "search_read" else f"BaseModel.{method}"
            raise RpcError(TYPE_ERROR, f"{owner}() {exc}") from None
        return fn(*bound.args, **bound.kwargs)

    def _method(self, model: str, method: str) -> Callable[..., Any] | None:
        specific: dict[tuple[str, str], Callable[..., Any]] = {
            ("ir.model.data", "check_object_reference"): self.m_check_object_reference,
            ("res.users", "has_group"): self.m_has_group,
        }
        if (model, method) in specific:
            return specific[(model, method)]
        generic: dict[str, Callable[..., Any]] = {
            "search": self.m_search,
            "search_read": self.m_search_read,
            "search_count": self.m_search_count,
            "read": self.m_read,
            "create": self.m_create,
            "write": self.m_write,
            "unlink": self.m_unlink,
            "fields_get": self.m_fields_get,
            "name_search": self.m_name_search,
            "check_access_rights": self.m_check_access_rights,
            "exists": self.m_exists,
            "get_external_id": self.m_get_external_id,
            "load": self.m_load,
            "default_get": self.m_default_get,
        }
        return generic.get(method)

    # -- public methods --------------------------------------------------------------------------
    def m_search(
        self,
        model: str,
        domain: Any = None,
        offset: int = 0,
        limit: int | None = None,
        order: str | None = None,
    ) -> list[int]:
        self.check_access(model, "read")
        self.note_read(model)
        if not order:
            self.server.flag("search_without_order", model=model, method="search")
        return self.search(model, domain, offset=offset, limit=limit, order=order)

    def m_search_count(self, model: str, domain: Any = None, limit: int | None = None) -> int:
        self.check_access(model, "read")
        return len(self.search(model, domain, limit=limit, ordered=False))

    def m_search_read(
        self,
        model: str,
        domain: Any = None,
        fields: list[str] | None = None,
        offset: int = 0,
        limit: int | None = None,
        order: str | None = None,
        load: str | None = "_classic_read",
    ) -> list[dict[str, Any]]:
        self.check_access(model, "read")
        self.note_read(model)
        if not fields:
            self.server.flag("fields_all", model=model, method="search_read")
        if not order:
            self.server.flag("search_without_order", model=model, method="search_read")
        self._check_fields(model, fields or [])
        ids = self.search(model, domain, offset=offset, limit=limit, order=order)
        return self.read(model, ids, fields, load=load)

    def m_read(
        self, model: str, ids: Any, fields: list[str] | None = None, load: str | None = "_classic_read"
    ) -> list[dict[str, Any]]:
        self.check_access(model, "read")
        self.note_read(model)
        if not fields:
            self.server.flag("fields_all", model=model, method="read")
        self._check_fields(model, fields or [])
        return self.read(model, _ids(ids), fields, load=load)

    def m_create(self, model: str, vals_list: Any) -> Any:
        self.check_access(model, "create")
        single = isinstance(vals_list, dict)
        items = [vals_list] if single else vals_list
        if not isinstance(items, list) or not all(isinstance(v, dict) for v in items):
            raise RpcError(TYPE_ERROR, "create() expects a dict or a list of dicts")
        ids = [self.create_one(model, vals) for vals in items]
        self.after_create(model, ids)
        return ids[0] if single else ids

    def m_write(self, model: str, ids: Any, vals: Any) -> bool:
        self.check_access(model, "write")
        if not isinstance(vals, dict):
            raise RpcError(ATTRIBUTE_ERROR, f"'{type(vals).__name__}' object has no attribute 'items'")
        self.write(model, _ids(ids), vals)
        return True

    def m_unlink(self, model: str, ids: Any) -> bool:
        id_list = _ids(ids)
        registrar_only = (
            not self.sudo and REGISTRAR in self.user_groups and not self.in_group(G2P_ADMIN, ERP_MANAGER)
        )
        if model == "res.partner" and registrar_only:
            # OpenG2P's override deletes first (super().unlink(): missing ids, foreign keys fail as usual;
            # a real registrar holds Contact Creation's unlink right), then refuses, rolling it all back
            self.unlink(model, id_list)
            raise user_error(
                "You do not have the necessary permissions to delete partner records. "
                "Please contact the administrator."
            )
        self.check_access(model, "unlink")
        self.unlink(model, id_list)
        return True

    def m_fields_get(
        self, model: str, allfields: list[str] | None = None, attributes: list[str] | None = None
    ) -> dict[str, Any]:
        md = self.registry[model]
        out: dict[str, Any] = {}
        for fname, f in md.fields.items():
            if allfields and fname not in allfields:
                continue
            desc: dict[str, Any] = {
                "type": f.type,
                "string": f.string,
                "required": f.required,
                "readonly": f.readonly,
                # a one2many has no column but is not computed: Odoo calls it stored, and searchable
                "store": f.store or f.type == "one2many",
                "searchable": f.store or f.type == "one2many" or fname == "display_name",
                "sortable": f.store and f.type not in X2MANY,
                "name": fname,
            }
            if f.relation:
                desc["relation"] = f.relation
            if f.inverse_name:
                desc["relation_field"] = f.inverse_name
            if f.type == "selection":
                desc["selection"] = [list(o) for o in self.selection_options(model, f)]
            if f.size:
                desc["size"] = f.size
            if attributes:
                desc = {k: v for k, v in desc.items() if k in attributes}
            out[fname] = desc
        return out

    def m_name_search(
        self,
        model: str,
        name: str = "",
        args: list[Any] | None = None,
        operator: str = "ilike",
        limit: int = 100,
    ) -> list[list[Any]]:
        self.check_access(model, "read")
        self.note_read(model)
        md = self.registry[model]
        domain = list(args or [])
        if name:
            domain = [*domain, (md.rec_name, operator, name)]
        ids = self.search(model, domain, limit=limit)
        return [[rid, self.display_name(model, rid)] for rid in ids]

    def m_check_access_rights(self, model: str, operation: str, raise_exception: bool = True) -> bool:
        if operation not in _OP_LETTER:
            raise value_error(f"Invalid access mode: {operation}")
        try:
            self.check_access(model, operation)
        except RpcError:
            if raise_exception:
                raise
            return False
        return True

    def m_default_get(self, model: str, fields_list: list[str]) -> dict[str, Any]:
        md = self.registry[model]
        out: dict[str, Any] = {}
        for fname in fields_list:
            f = md.fields.get(fname)
            if f is None or f.computed or f.default is None:
                continue
            value = default_value(f, self)
            if isinstance(value, datetime):
                value = format_datetime(value)
            elif isinstance(value, date):
                value = format_date(value)
            out[fname] = value
        return out

    def m_exists(self, model: str, ids: Any) -> list[int]:
        return [i for i in _ids(ids) if self.row(model, i) is not None]

    def m_get_external_id(self, model: str, ids: Any) -> dict[str, str]:
        out = {}
        for rid in _ids(ids):
            names = sorted(self.store.xmlids_by_target.get((model, rid), ()))
            value = ""
            for imd in names:
                row = self.row("ir.model.data", imd)
                if row is not None:
                    value = f"{row['module']}.{row['name']}"
                    break
            out[str(rid)] = value
        return out

    def m_check_object_reference(
        self, model: str, module: str, xml_id: str, raise_on_access_error: bool = False
    ) -> list[Any]:
        row = self.store.xmlid(module, xml_id)
        if row is None:
            raise value_error(f"External ID not found in the system: {module}.{xml_id}")
        target, res_id = row["model"], row["res_id"]
        self.check_access(target, "read")
        self.note_read(target)
        if self.search(target, [("id", "=", res_id)], ordered=False):
            return [target, res_id]
        if raise_on_access_error:
            raise RpcError(ACCESS_ERROR, f"Not enough access rights on the external ID '{module}.{xml_id}'")
        return [target, False]

    def m_has_group(self, model: str, *args: Any) -> bool:
        """``@api.model`` in Odoo 17 (18 made it a record method): the group's xml-id is the only argument
        and the answer is for the calling user; observed on a real 17.0 server, ids in front of it are a
        ``TypeError`` there."""
        if len(args) != 1:
            raise RpcError(
                TYPE_ERROR,
                f"Users.has_group() takes 2 positional arguments but {len(args) + 1} were given"
                if args
                else "Users.has_group() missing 1 required positional argument: 'group_ext_id'",
            )
        group_ext_id = args[0]
        if not isinstance(group_ext_id, str) or "." not in group_ext_id:
            raise RpcError("builtins.AssertionError", f"External ID '{group_ext_id}' must be fully qualified")
        if group_ext_id.count(".") > 1:
            raise value_error("too many values to unpack (expected 2)")
        return group_ext_id in self.server.groups_of(self.uid)

    def m_load(self, model: str, fields: list[str], data: list[list[Any]]) -> dict[str, Any]:
        from connectors.openspp.fake.loader import load

        return load(self, model, fields, data)

    # -- search / read ---------------------------------------------------------------------------
    def search(
        self,
        model: str,
        domain: Any,
        *,
        offset: int = 0,
        limit: int | None = None,
        order: str | None = None,
        ordered: bool = True,
    ) -> list[int]:
        md = self.registry[model]
        active_test = self.context.get("active_test", True) is not False
        pred = self.compiler.compile(md, domain, active_test=active_test)
        terms = parse_order(md, order) if ordered else []
        candidates = self._candidates(md, domain)
        rows: dict[int, Row] = {}
        for rid in candidates:
            row = self.row(model, rid)
            if row is not None and pred(rid, row):
                rows[rid] = row
        ids = sort_ids(rows, rows, terms) if terms else sorted(rows)
        if not isinstance(offset, int) or isinstance(offset, bool):
            raise RpcError(TYPE_ERROR, "offset must be an integer")
        if offset:
            ids = ids[offset:]
        if limit:
            ids = ids[: int(limit)]
        return ids

    def _candidates(self, md: ModelDef, domain: Any) -> list[int] | Any:
        """Use an index when an and-ed leaf pins ``id`` or an indexed many2one (plain full scan otherwise)."""
        try:
            tree = parse(domain)
        except RpcError:
            return self.txn.ids(md.name)
        indexed = self.store.indexed.get(md.name, set())
        for node in tree[1]:
            if node[0] != "leaf":
                continue
            path, op, value = node[1]
            if op not in ("=", "in") or not isinstance(path, str):
                continue
            values = value if isinstance(value, list | tuple) else [value]
            if not values or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
                continue
            if path == "id":
                return sorted(set(values))
            if path in indexed:
                found: set[int] = set()
                for v in values:
                    found |= self.store.referencing(md.name, path, v)
                return sorted(found)
        return self.txn.ids(md.name)

    def _check_fields(self, model: str, fields: list[str]) -> None:
        md = self.registry[model]
        if not isinstance(fields, list):
            raise RpcError(TYPE_ERROR, "fields must be a list")
        for fname in fields:
            if fname not in md.fields:
                raise value_error(f"Invalid field {fname!r} on model {model!r}")

    def read(
        self, model: str, ids: list[int], fields: list[str] | None, *, load: str | None = "_classic_read"
    ) -> list[dict[str, Any]]:
        md = self.registry[model]
        names = list(fields) if fields else list(md.fields)
        for fname in names:  # an x2many is read by searching its comodel as the caller
            f = md.fields.get(fname)
            if f is not None and f.type in X2MANY and f.relation and ids:
                self.check_access(f.relation, "read")
        if names and all(fname == "id" for fname in names):
            # Odoo fetches nothing for ``id`` alone, so nothing finds a missing record (observed)
            return [{"id": rid} for rid in ids]
        out = []
        for rid in ids:
            row = self.row(model, rid)
            if row is None:
                continue
            rec: dict[str, Any] = {"id": rid}
            for fname in names:
                if fname == "id":
                    continue
                rec[fname] = self.format_value(md, md.fields[fname], rid, row, load)
            out.append(rec)
        return out

    def format_value(self, md: ModelDef, f: Field, rid: int, row: Row, load: str | None) -> Any:
        fname = f.name
        if fname == "display_name":
            return self.display_name(md.name, rid) or False
        if not f.store and f.type != "one2many":
            return self._computed(md, f, rid, row)
        if f.type in X2MANY:
            return self.x2many_ids(md.name, fname, rid, row)
        value = row.get(fname)
        if f.type == "many2one":
            if value is None:
                return False
            if not load:
                return value
            assert f.relation is not None
            return [value, self.display_name(f.relation, value)]
        if f.type == "boolean":
            return bool(value)
        if f.type == "integer":
            return value or 0
        if f.type == "float":
            return value or 0.0
        if value is None:
            return False
        if f.type == "datetime":
            return format_datetime(value)
        if f.type == "date":
            return format_date(value)
        return value

    def _computed(self, md: ModelDef, f: Field, rid: int, row: Row) -> Any:
        name = f.name
        if md.name == "res.partner" and name == "age":
            birthdate = row.get("birthdate")
            if not birthdate:
                return False
            today = self.stamp.date()
            years = (
                today.year - birthdate.year - ((today.month, today.day) < (birthdate.month, birthdate.day))
            )
            return str(years)
        if md.name == "res.partner" and name == "kind_as_str":
            return self.display_name("g2p.group.kind", row["kind"]) if row.get("kind") else False
        if md.name == "g2p.group.membership" and name in ("individual_birthdate", "individual_gender"):
            ind = self.row("res.partner", row["individual"]) if row.get("individual") else None
            if ind is None:
                return False
            if name == "individual_birthdate":
                return format_date(ind["birthdate"]) if ind.get("birthdate") else False
            return ind.get("gender") or False
        if md.name == "g2p.reg.id" and name == "id_type_as_str":
            return self.display_name("g2p.id.type", row["id_type"]) if row.get("id_type") else False
        if md.name == "ir.model.data" and name == "complete_name":
            return f"{row['module']}.{row['name']}"
        return False

    def selection_options(self, model: str, f: Field) -> list[tuple[str, str]]:
        if f.dynamic_selection == "gender":  # ``gender.type.search([])``: active rows, in id order
            rows = [self.row("gender.type", i) for i in sorted(self.search_ids("gender.type", [], True))]
            return [(str(r.get("value") or ""), str(r.get("code") or "")) for r in rows if r is not None]
        return list(f.selection or ())

    # -- values ----------------------------------------------------------------------------------
    def convert(self, md: ModelDef, f: Field, value: Any) -> Any:
        """Turn an RPC value into the stored value, with the error Odoo (or PostgreSQL) raises."""
        t = f.type
        if t in ("char", "text"):
            if value is None or value is False:
                return None
            if isinstance(value, list | dict):
                raise value_error(f"Wrong value for {md.name}.{f.name}: {value!r}")
            text_value = str(value)
            return text_value[: f.size] if f.size else text_value
        if t == "boolean":
            return bool(value)
        if t == "integer":
            if value is None or value is False:
                return 0
            try:
                return int(value)
            except (TypeError, ValueError):
                raise value_error(f"invalid literal for int() with base 10: {value!r}") from None
        if t == "float":
            if value is None or value is False:
                return 0.0
            try:
                return float(value)
            except (TypeError, ValueError):
                raise value_error(f"could not convert string to float: {value!r}") from None
        if t == "date":
            if not value:
                return None
            if isinstance(value, str):
                if "T" in value:
                    self.server.flag("iso_datetime", model=md.name, detail=f"{f.name}={value}")
                try:
                    return parse_write_date(value)
                except ValueError as exc:
                    raise value_error(str(exc)) from None
            raise value_error(f"Wrong value for {md.name}.{f.name}: {value!r}")
        if t == "datetime":
            if not value:
                return None
            if isinstance(value, str):
                if "T" in value or value.endswith("Z"):
                    self.server.flag("iso_datetime", model=md.name, detail=f"{f.name}={value}")
                try:
                    return parse_write_datetime(value)
                except ValueError as exc:
                    raise value_error(str(exc)) from None
            raise value_error(f"Wrong value for {md.name}.{f.name}: {value!r}")
        if t == "selection":
            if value is None or value is False or value == "":
                return None
            if value in {k for k, _ in self.selection_options(md.name, f)}:
                return value
            raise value_error(f"Wrong value for {md.name}.{f.name}: {value!r}")
        if t == "many2one":
            if value is None or value is False or value == 0:
                return None
            if isinstance(value, str):
                self.server.flag("string_many2one", model=md.name, detail=f"{f.name}={value!r}")
                table = md.table
                raise RpcError(
                    INVALID_TEXT_REPRESENTATION,
                    f'invalid input syntax for type integer: "{value}"\n'
                    f'LINE 1: ...INSERT INTO "{table}" ("{f.name}", ...',
                )
            if isinstance(value, bool) or not isinstance(value, int):
                raise value_error(f"Wrong value for {md.name}.{f.name}: {value!r}")
            self._note_id_use(f, [value])
            return value
        raise value_error(f"Wrong value for {md.name}.{f.name}: {value!r}")

    def _note_id_use(self, f: Field, ids: list[int]) -> None:
        if f.relation in CONFIG_MODELS and not self.sudo:
            seen = self.server.models_read.get(self.uid, set())
            if f.relation not in seen:
                self.server.flag(
                    "hardcoded_id",
                    model=f.relation,
                    detail=f"{f.name}={ids} used before any read of {f.relation}",
                )

    def split_vals(self, md: ModelDef, vals: dict[str, Any]) -> tuple[Row, dict[str, list[Any]]]:
        scalars: Row = {}
        commands: dict[str, list[Any]] = {}
        for fname, value in vals.items():
            f = md.fields.get(fname)
            if f is None:
                raise value_error(f"Invalid field {fname!r} on model {md.name!r}")
            if not f.writable or (md.name == "res.partner" and fname in ("spp_id",)):
                raise value_error(f"Field {md.name}.{fname} is computed and cannot be written")
            if f.type in X2MANY:
                commands[fname] = self.parse_commands(md, f, value)
            else:
                scalars[fname] = self.convert(md, f, value)
        return scalars, commands

    def parse_commands(self, md: ModelDef, f: Field, value: Any) -> list[tuple[Any, ...]]:
        if value is False or value is None:
            return [(5, 0, 0)]
        if not isinstance(value, list | tuple):
            raise value_error(f"Wrong value for {md.name}.{f.name}: {value!r}")
        parsed = []
        for command in value:
            if not isinstance(command, list | tuple):
                raise value_error(
                    f"Wrong value for {md.name}.{f.name}: {command!r} (expected a command list)"
                )
            if not command:
                raise RpcError(INDEX_ERROR, "list index out of range")
            code = command[0]
            if code not in (0, 1, 2, 3, 4, 5, 6) or isinstance(code, bool):
                raise value_error(f"Invalid command {command!r} for {md.name}.{f.name}")
            needed = {0: 3, 1: 3, 2: 2, 3: 2, 4: 2, 5: 1, 6: 3}[code]
            if len(command) < needed:
                raise RpcError(INDEX_ERROR, "list index out of range")
            if code in (0, 1) and not isinstance(command[2], dict):
                raise RpcError(
                    ATTRIBUTE_ERROR, f"'{type(command[2]).__name__}' object has no attribute 'items'"
                )
            if code in (1, 2, 3, 4) and (isinstance(command[1], bool) or not isinstance(command[1], int)):
                raise value_error(f"Invalid record id {command[1]!r} in command {command!r}")
            if code == 6:
                ids = command[2]
                if not isinstance(ids, list | tuple) or not all(
                    isinstance(i, int) and not isinstance(i, bool) for i in ids
                ):
                    raise value_error(f"Invalid ids in command {command!r}")
                self._note_id_use(f, list(ids))
            if code == 4:
                self._note_id_use(f, [command[1]])
            parsed.append(tuple(command))
        return parsed

    # -- create / write / unlink -----------------------------------------------------------------
    def create_one(self, model: str, vals: dict[str, Any], *, extra: Row | None = None) -> int:
        md = self.registry[model]
        scalars, commands = self.split_vals(md, vals)
        if extra:
            scalars.update(extra)
        row: Row = {}
        for fname, f in md.fields.items():
            if f.store and not f.computed and f.type not in X2MANY and fname not in scalars:
                default = default_value(f, self)
                if f.type == "many2many":
                    row[fname] = ()
                elif default is not None:
                    row[fname] = default
                elif f.type == "boolean":
                    row[fname] = False
        for fname, f in md.fields.items():
            if f.type == "many2many" and fname not in scalars:
                row.setdefault(fname, ())
        row.update(scalars)
        rid = self.store.next_id(model)
        row.update(create_date=self.stamp, write_date=self.stamp, create_uid=self.uid, write_uid=self.uid)
        self.before_save(md, rid, row, None, vals)
        self.check_row(md, row)
        self.txn.put(model, rid, row)
        for fname, cmds in commands.items():
            self.apply_commands(md, rid, md.fields[fname], cmds)
        return rid

    def write(self, model: str, ids: list[int], vals: dict[str, Any]) -> None:
        md = self.registry[model]
        for rid in ids:
            if self.row(model, rid) is None:
                raise missing_error(model, [i for i in ids if self.row(model, i) is None], self.uid)
        self._check_default_kinds(model, ids, "edit")
        checked = SINGLETON_NAME_CHECKS.get(model)
        if checked is not None and len(ids) > 1 and (checked in vals or model == "g2p.group.membership.kind"):
            raise _expected_singleton(model, ids)  # membership kinds: their write override reads self.id
        scalars, commands = self.split_vals(md, vals)
        for rid in ids:
            old = self.row(model, rid)
            assert old is not None
            row = {**old, **scalars, "write_date": self.stamp, "write_uid": self.uid}
            self.before_save(md, rid, row, old, vals)
            self.check_row(md, row)
            self.txn.put(model, rid, row)
            for fname, cmds in commands.items():
                self.apply_commands(md, rid, md.fields[fname], cmds)
        self.after_write(model, ids, vals)

    def unlink(self, model: str, ids: list[int]) -> None:
        missing = [i for i in ids if self.row(model, i) is None]
        if missing:
            raise missing_error(model, missing, self.uid)
        self._check_default_kinds(model, ids, "delete")
        groups: set[int] = set()
        if model == "g2p.group.membership":
            groups = {r["group"] for i in ids if (r := self.row(model, i)) and r.get("group")}
        for rid in ids:
            self._unlink_one(model, rid)
        if groups:
            self.bump_groups(groups)

    def _unlink_one(self, model: str, rid: int) -> None:
        if self.row(model, rid) is None:
            return
        for other, f in self._references_to(model):
            refs = self._referencing(other, f.name, rid)
            if not refs:
                continue
            if f.ondelete == "restrict" or (f.required and f.ondelete != "cascade"):
                omd = self.registry[other]
                raise foreign_key_error(omd.description, other, f"{omd.table}_{f.name}_fkey")
            if f.ondelete == "cascade":
                groups = set()
                if other == "g2p.group.membership":
                    groups = {r["group"] for i in refs if (r := self.row(other, i)) and r.get("group")}
                for ref in refs:
                    self._unlink_one(other, ref)
                if groups - {rid}:
                    self.bump_groups(groups - {rid})
            else:
                for ref in refs:
                    row = self.row(other, ref)
                    if row is not None:
                        self.txn.put(other, ref, {**row, f.name: None})
        for imd in list(self.store.xmlids_by_target.get((model, rid), ())):
            if self.row("ir.model.data", imd) is not None:
                self.txn.put("ir.model.data", imd, None)
        self.txn.put(model, rid, None)

    def _references_to(self, model: str) -> list[tuple[str, Field]]:
        refs = []
        for other in self.registry.values():
            for f in other.fields.values():
                if (
                    f.type == "many2one"
                    and f.relation == model
                    and not f.computed
                    and f.name not in ("create_uid", "write_uid")
                ):
                    refs.append((other.name, f))
        return refs

    def _referencing(self, model: str, fname: str, target: int) -> set[int]:
        if fname in self.store.indexed.get(model, ()):
            return self.store.referencing(model, fname, target)
        return {i for i in self.txn.ids(model) if (r := self.row(model, i)) and r.get(fname) == target}

    def check_row(self, md: ModelDef, row: Row) -> None:
        """NOT NULL and foreign keys, reported the way ``_as_validation_error`` words them."""
        for fname, f in md.fields.items():
            if f.required and f.store and row.get(fname) in (None, False, "") and f.type != "boolean":
                raise not_null_error(md.description, md.name, f.string, fname)
            if f.type == "many2one" and row.get(fname) is not None and not f.computed:
                assert f.relation is not None
                if self.row(f.relation, row[fname]) is None:
                    raise foreign_key_error(md.description, md.name, f"{md.table}_{fname}_fkey")

    def apply_commands(self, md: ModelDef, rid: int, f: Field, commands: list[tuple[Any, ...]]) -> None:
        assert f.relation is not None
        comodel = f.relation
        if f.type == "one2many":
            inverse = f.inverse_name
            assert inverse is not None
            inverse_field = self.registry[comodel].fields[inverse]

            def detach(child: int) -> None:
                if inverse_field.ondelete == "cascade":
                    self.check_access(comodel, "unlink")
                    self.unlink(comodel, [child])
                elif inverse_field.required:
                    cmd = self.registry[comodel]
                    raise not_null_error(cmd.description, comodel, inverse_field.string, inverse)
                else:
                    self.write(comodel, [child], {inverse: False})

            for command in commands:
                code = command[0]
                if code == 0:
                    self.check_access(comodel, "create")
                    child_vals = dict(command[2])
                    child_vals.pop(inverse, None)
                    child = self.create_one(comodel, child_vals, extra={inverse: rid})
                    self.after_create(comodel, [child])
                elif code == 1:
                    self.check_access(comodel, "write")
                    self.write(comodel, [command[1]], command[2])
                elif code == 2:
                    self.check_access(comodel, "unlink")
                    self.unlink(comodel, [command[1]])
                elif code == 3:
                    detach(command[1])
                elif code == 4:
                    self.check_access(comodel, "write")
                    self.write(comodel, [command[1]], {inverse: rid})
                elif code == 5:
                    for child in list(self.store.referencing(comodel, inverse, rid)):
                        detach(child)
                elif code == 6:
                    wanted = list(command[2])
                    for child in list(self.store.referencing(comodel, inverse, rid)):
                        if child not in wanted:
                            detach(child)
                    for child in wanted:
                        row = self.row(comodel, child)
                        if row is None:
                            raise missing_error(comodel, [child], self.uid)
                        if row.get(inverse) != rid:
                            self.write(comodel, [child], {inverse: rid})
            return
        # many2many
        row = self.row(md.name, rid)
        assert row is not None
        current = list(row.get(f.name) or ())
        for command in commands:
            code = command[0]
            if code == 0:
                self.check_access(comodel, "create")
                new = self.create_one(comodel, command[2])
                self.after_create(comodel, [new])
                current.append(new)
            elif code == 1:
                self.check_access(comodel, "write")
                self.write(comodel, [command[1]], command[2])
            elif code == 2:
                self.check_access(comodel, "unlink")
                self.unlink(comodel, [command[1]])
                current = [i for i in current if i != command[1]]
            elif code == 3:
                current = [i for i in current if i != command[1]]
            elif code == 4:
                if command[1] not in current:
                    current.append(command[1])
            elif code == 5:
                current = []
            elif code == 6:
                current = list(dict.fromkeys(command[2]))
        for target in current:
            if self.row(comodel, target) is None:
                rel = f"{md.table}_{comodel.replace('.', '_')}_rel"
                raise foreign_key_error(md.description, md.name, f"{rel}_{comodel.replace('.', '_')}_id_fkey")
        row = self.row(md.name, rid)
        assert row is not None
        if tuple(current) != tuple(row.get(f.name) or ()):
            self.txn.put(md.name, rid, {**row, f.name: tuple(current)})

    # -- business rules --------------------------------------------------------------------------
    def before_save(self, md: ModelDef, rid: int, row: Row, old: Row | None, vals: dict[str, Any]) -> None:
        hook = getattr(self, "_before_" + md.name.replace(".", "_"), None)
        if hook is not None:
            hook(rid, row, old, vals)

    def _before_res_partner(self, rid: int, row: Row, old: Row | None, vals: dict[str, Any]) -> None:
        is_individual = row.get("is_registrant") and not row.get("is_group")
        if self.server.naming == "computed" and is_individual:
            parts_given = any(p in vals for p in NAME_PARTS) or old is None
            if parts_given and any(row.get(p) for p in NAME_PARTS):
                row["name"] = ", ".join(str(row[p]) for p in NAME_PARTS if row.get(p)).upper()
            elif "name" in vals and row.get("name"):
                pieces = [p.strip() for p in str(row["name"]).split(", ")]
                if len(pieces) == 1:
                    row["given_name"] = pieces[0]
                elif len(pieces) == 2:
                    row["family_name"], row["given_name"] = pieces
                else:
                    row["family_name"], row["given_name"] = pieces[0], pieces[1]
                    row["addl_name"] = ", ".join(pieces[2:])
        if row.get("type", "contact") == "contact" and not row.get("name"):
            raise sql_constraint_error("Contacts require a name")
        row["complete_name"] = row.get("name")
        if old is None:
            prefix = "GRP_" if row.get("is_group") else "IND_"
            row["spp_id"] = prefix + self.server.unique_code()
            row.setdefault("z_ind_grp_num_individuals", 0)
        if old is None or "registration_date" in vals or "birthdate" in vals:
            reg, birth = row.get("registration_date"), row.get("birthdate")
            if reg and birth and reg < birth:
                raise validation_error("Registration date must be later than the birth date.")
            if reg and reg > self.stamp.date():
                raise validation_error("Registration date must be less than the current date.")

    def _before_g2p_group_membership(self, rid: int, row: Row, old: Row | None, vals: dict[str, Any]) -> None:
        start, end = row.get("start_date"), row.get("ended_date")
        if start and end and end < start:
            raise validation_error("End Date cannot be earlier than Start Date")
        ended = end is not None and end <= self.stamp
        row["is_ended"] = ended
        row["status"] = "inactive" if ended else "active"

    def _before_g2p_reg_id(self, rid: int, row: Row, old: Row | None, vals: dict[str, Any]) -> None:
        partner, id_type = row.get("partner_id"), row.get("id_type")
        if partner and id_type:
            for other in self.store.referencing("g2p.reg.id", "partner_id", partner):
                orow = self.row("g2p.reg.id", other)
                if other != rid and orow and orow.get("id_type") == id_type:
                    raise validation_error("ID Type must be unique.")
            type_row = self.row("g2p.id.type", id_type)
            pattern = type_row.get("id_validation") if type_row else None
            value = row.get("value")
            # ``re.match``: anchored at the start only, as OpenG2P checks it; an empty value is not checked
            if pattern and value and type_row and not re.match(pattern, value):
                raise validation_error(f"The provided {type_row.get('name')} ID '{value}' is invalid.")

    def _before_g2p_id_type(self, rid: int, row: Row, old: Row | None, vals: dict[str, Any]) -> None:
        name = row.get("name") or ""
        if not name:
            raise validation_error("Id type should not empty.")
        for other in self.txn.ids("g2p.id.type"):
            orow = self.row("g2p.id.type", other)
            if other != rid and orow and (orow.get("name") or "").lower() == name.lower():
                raise validation_error("Id type already exists")

    def _unique_name(self, model: str, rid: int, row: Row, fname: str, empty: str, taken: str) -> None:
        """OpenG2P's ``_check_name`` on configuration models: set, and unique ignoring case."""
        name = row.get(fname) or ""
        if not name:
            raise validation_error(empty)
        for other in self.txn.ids(model):
            orow = self.row(model, other)
            if other != rid and orow and str(orow.get(fname) or "").lower() == str(name).lower():
                raise validation_error(taken)

    def _before_g2p_group_membership_kind(
        self, rid: int, row: Row, old: Row | None, vals: dict[str, Any]
    ) -> None:
        self._unique_name("g2p.group.membership.kind", rid, row, "name", *_KIND_NAME)

    def _before_g2p_group_kind(self, rid: int, row: Row, old: Row | None, vals: dict[str, Any]) -> None:
        self._unique_name("g2p.group.kind", rid, row, "name", *_KIND_NAME)

    def _before_gender_type(self, rid: int, row: Row, old: Row | None, vals: dict[str, Any]) -> None:
        if old is None or "code" in vals:
            self._unique_name(
                "gender.type",
                rid,
                row,
                "code",
                "Gender type should not empty.",
                "Gender type should be unique",
            )

    def _check_default_kinds(self, model: str, ids: list[int], verb: str) -> None:
        """The Head membership kind (xml-id ``group_membership_kind_head``) can be neither edited nor
        deleted, by anyone: ``g2p.group.membership.kind`` overrides ``write`` and ``unlink``."""
        if model != "g2p.group.membership.kind":
            return
        for rid in ids:
            for imd in self.store.xmlids_by_target.get((model, rid), ()):
                row = self.row("ir.model.data", imd)
                if row is not None and row.get("name") in PROTECTED_KINDS:
                    raise validation_error(f"Can't {verb} default kinds")

    def _before_spp_area(self, rid: int, row: Row, old: Row | None, vals: dict[str, Any]) -> None:
        code = row.get("code")
        row["name"] = f"{code} - {row.get('draft_name')}" if code else row.get("draft_name")
        if code:
            for other in self.txn.ids("spp.area"):
                orow = self.row("spp.area", other)
                if other != rid and orow and orow.get("code") == code:
                    raise sql_constraint_error("Area code must be unique!")
        parent = self.row("spp.area", row["parent_id"]) if row.get("parent_id") else None
        row["parent_path"] = f"{parent['parent_path'] if parent else ''}{rid}/"

    def _before_res_partner_bank(self, rid: int, row: Row, old: Row | None, vals: dict[str, Any]) -> None:
        partner, number = row.get("partner_id"), row.get("acc_number")
        if partner and number:
            # unique(sanitized_acc_number, partner_id): non-word characters removed, upper-cased
            sanitized = _sanitize_account(number)
            for other in self.store.referencing("res.partner.bank", "partner_id", partner):
                orow = self.row("res.partner.bank", other)
                if other != rid and orow and _sanitize_account(orow.get("acc_number")) == sanitized:
                    raise sql_constraint_error("The combination Account Number/Partner must be unique.")

    def _before_ir_model_data(self, rid: int, row: Row, old: Row | None, vals: dict[str, Any]) -> None:
        if " " in (row.get("name") or ""):
            raise validation_error("External IDs cannot contain spaces")
        existing = self.store.xmlid(row["module"], row["name"])
        if existing is not None and existing["id"] != rid:
            raise validation_error(
                "The operation cannot be completed: duplicate key value violates unique constraint "
                '"ir_model_data_module_name_uniq_index"\n'
                f"DETAIL:  Key (module, name)=({row['module']}, {row['name']}) already exists.\n"
            )

    def after_create(self, model: str, ids: list[int]) -> None:
        if model == "g2p.group.membership":
            self._check_members(ids)
            groups = {r["group"] for i in ids if (r := self.row(model, i)) and r.get("group")}
            self.bump_groups(groups)
        elif model in SINGLETON_NAME_CHECKS and len(ids) > 1:
            raise _expected_singleton(model, ids)

    def after_write(self, model: str, ids: list[int], vals: dict[str, Any]) -> None:
        if model == "g2p.group.membership":
            if "individual" in vals or "group" in vals:
                self._check_members(ids)
            groups = {r["group"] for i in ids if (r := self.row(model, i)) and r.get("group")}
            self.bump_groups(groups)
        elif model == "res.partner":
            to_check: set[int] = set()
            member_groups: set[int] = set()
            for rid in ids:
                row = self.row(model, rid)
                if row is None:
                    continue
                if row.get("is_group"):
                    to_check.add(rid)
                else:
                    for m in self.store.referencing("g2p.group.membership", "individual", rid):
                        mrow = self.row("g2p.group.membership", m)
                        if mrow and mrow.get("group"):
                            member_groups.add(mrow["group"])
            for gid in sorted(to_check | member_groups):
                self._check_unique_kinds(gid)
            self.bump_groups(member_groups - set(ids))

    def _check_members(self, ids: list[int]) -> None:
        for mid in ids:
            row = self.row("g2p.group.membership", mid)
            if row is None or not row.get("group"):
                continue
            same = [
                m
                for m in self.store.referencing("g2p.group.membership", "group", row["group"])
                if (r := self.row("g2p.group.membership", m)) and r.get("individual") == row.get("individual")
            ]
            if len(same) > 1:
                raise validation_error("Duplication of Member is not allowed ")

    def _check_unique_kinds(self, group_id: int) -> None:
        counts: dict[int, int] = {}
        for m in self.store.referencing("g2p.group.membership", "group", group_id):
            row = self.row("g2p.group.membership", m)
            for kind in (row or {}).get("kind") or ():
                counts[kind] = counts.get(kind, 0) + 1
        for kind, count in sorted(counts.items()):
            krow = self.row("g2p.group.membership.kind", kind)
            if count > 1 and krow and krow.get("is_unique"):
                raise validation_error(f"Only one {krow.get('name')} is allowed per group")

    def bump_groups(self, groups: set[int]) -> None:
        """A membership change recomputes the group's stored indicators, which stamps its write_date."""
        for gid in groups:
            row = self.row("res.partner", gid)
            if row is None:
                continue
            self.server.jobs.add(gid)
            if row.get("write_date") == self.stamp and row.get("force_recompute_canary") == self.stamp:
                continue
            self.txn.put(
                "res.partner",
                gid,
                {
                    **row,
                    "write_date": self.stamp,
                    "force_recompute_canary": self.stamp,
                    "write_uid": self.uid,
                },
            )


def _sanitize_account(number: Any) -> str:
    """``odoo.addons.base.models.res_bank.sanitize_account_number``."""
    return re.sub(r"\W+", "", str(number or "")).upper()


def _expected_singleton(model: str, ids: list[int]) -> RpcError:
    return value_error(f"Expected singleton: {model}({', '.join(map(str, ids))})")


def _ids(value: Any) -> list[int]:
    if isinstance(value, bool):
        raise value_error(f"Invalid ids {value!r}")
    if isinstance(value, int):
        return [value]
    if isinstance(value, list | tuple) and all(isinstance(i, int) and not isinstance(i, bool) for i in value):
        return list(value)
    raise value_error(f"Invalid ids {value!r}")

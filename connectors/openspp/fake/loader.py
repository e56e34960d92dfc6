"""``Model.load(fields, rows)``: Odoo's import entry point, and the registrar's only way to write xml-ids.

A registrar has no rights on ``ir.model.data``, yet ``load`` creates the record and its external id in one
transaction and updates the same record when the external id comes back (observed on a real server). It
speaks the import dialect: every cell is a string, many2one columns say how they identify the target
(``field/.id`` a database id, ``field/id`` an xml-id, ``field`` a name), and a bad row is reported in
``messages`` (``ids: false``, nothing saved) instead of as an error envelope.
"""

from __future__ import annotations

from datetime import UTC
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from connectors.openspp.fake.errors import (
    KEY_ERROR,
    TYPE_ERROR,
    USER_ERROR_FAMILY,
    RpcError,
)
from connectors.openspp.fake.models import X2MANY, Field, ModelDef
from connectors.openspp.odoo_formats import parse_write_date, parse_write_datetime

if TYPE_CHECKING:
    from connectors.openspp.fake.orm import Env

_TRUES = {"1", "true", "yes"}
_FALSES = {"", "0", "false", "no"}


class _ImportError(Exception):
    def __init__(self, message: str, moreinfo: Any = None):
        super().__init__(message)
        self.message = message
        self.moreinfo = moreinfo


def load(env: Env, model: str, fields: list[str], data: list[list[Any]]) -> dict[str, Any]:
    md = env.registry[model]
    if not isinstance(fields, list) or not isinstance(data, list):
        raise RpcError(TYPE_ERROR, "load() expects a list of fields and a list of rows")
    columns = [_column(md, f) for f in fields]
    env.check_access(model, "create")
    env.check_access(model, "write")
    messages: list[dict[str, Any]] = []
    records: list[tuple[int, str | None, int | None, dict[str, Any]]] = []
    for index, row in enumerate(data):
        if not isinstance(row, list | tuple) or len(row) != len(fields):
            raise RpcError("builtins.IndexError", "list index out of range")
        xmlid: str | None = None
        db_id: int | None = None
        vals: dict[str, Any] = {}
        failed = False
        for (fname, sub), cell in zip(columns, row, strict=True):
            if fname == "id":
                xmlid = str(cell) if cell else None
                continue
            if fname == ".id":
                db_id = int(cell) if cell else None
                continue
            f = md.fields[fname]
            try:
                vals[fname] = _convert(env, md, f, sub, cell)
            except _ImportError as exc:
                failed = True
                messages.append(_message(index, f, exc.message, exc.moreinfo))
        if not failed:
            records.append((index, xmlid, db_id, vals))
    if messages:
        return {"ids": False, "messages": messages, "nextrow": 0}
    savepoint = env.txn.savepoint()
    ids: list[int] = []
    for index, xmlid, db_id, vals in records:
        record_savepoint = env.txn.savepoint()
        try:
            ids.append(_save(env, model, xmlid, db_id, vals))
        except RpcError as exc:
            env.txn.rollback_to(record_savepoint)
            if exc.name in USER_ERROR_FAMILY:
                text = exc.load_message or exc.message
                messages.append(_message(index, None, text, None))
            else:
                messages.append(
                    _message(
                        index,
                        None,
                        f"Unknown error during import: <class '{exc.name.split('.')[-1]}'>: {exc.message}",
                        "Resolve other errors first",
                    )
                )
    if messages:
        env.txn.rollback_to(savepoint)
        return {"ids": False, "messages": messages, "nextrow": 0}
    return {"ids": ids, "messages": [], "nextrow": 0}


def _column(md: ModelDef, path: str) -> tuple[str, str | None]:
    if not isinstance(path, str):
        raise RpcError(KEY_ERROR, repr(path))
    if path in ("id", ".id"):
        return path, None
    head, _, sub = path.partition("/")
    f = md.fields.get(head)
    if f is None or not f.writable:
        raise RpcError(KEY_ERROR, repr(head))
    if sub and (f.relation is None or sub not in ("id", ".id")):
        raise RpcError(KEY_ERROR, repr(path))
    if f.type == "one2many":
        raise RpcError(KEY_ERROR, repr(path))
    return head, sub or None


def _message(index: int, f: Field | None, text: str, moreinfo: Any) -> dict[str, Any]:
    message: dict[str, Any] = {
        "type": "error",
        "record": index,
        "rows": {"from": index, "to": index},
        "message": text,
    }
    if f is not None:
        message["field"] = f.name
        message["field_name"] = f.string
    if moreinfo is not None:
        message["moreinfo"] = moreinfo
    return message


def _convert(env: Env, md: ModelDef, f: Field, sub: str | None, cell: Any) -> Any:
    if not isinstance(cell, str):
        # the import converters call str methods on every cell
        raise RpcError("builtins.AttributeError", f"'{type(cell).__name__}' object has no attribute 'lower'")
    label = f.string
    if not cell:
        return [(6, 0, [])] if f.type in X2MANY else False
    t = f.type
    if t == "boolean":
        if cell.lower() in _TRUES:
            return True
        if cell.lower() in _FALSES:
            return False
        raise _ImportError(
            f"Unknown value '{cell}' for boolean field '{label}'", "Use '1' for yes and '0' for no"
        )
    if t == "integer":
        try:
            return int(cell)
        except ValueError:
            raise _ImportError(f"'{cell}' does not seem to be an integer for field '{label}'") from None
    if t == "float":
        try:
            return float(cell)
        except ValueError:
            raise _ImportError(f"'{cell}' does not seem to be a number for field '{label}'") from None
    if t == "date":
        try:
            return parse_write_date(cell).isoformat()
        except ValueError:
            raise _ImportError(
                f"'{cell}' does not seem to be a valid date for field '{label}'",
                "Use the format '2012-12-31'",
            ) from None
    if t == "datetime":
        try:
            parsed = parse_write_datetime(cell)
        except ValueError:
            raise _ImportError(
                f"'{cell}' does not seem to be a valid datetime for field '{label}'",
                "Use the format '2012-12-31 23:59:59'",
            ) from None
        # the import reads a datetime in the context's time zone, else the user's, and stores it in UTC
        zone = _input_tz(env)
        if zone is not None:
            parsed = parsed.replace(tzinfo=zone).astimezone(UTC).replace(tzinfo=None)
        return parsed.strftime("%Y-%m-%d %H:%M:%S")
    if t == "selection":
        options = env.selection_options(md.name, f)
        for key, option_label in options:
            if cell.lower() in (str(key).lower(), str(option_label).lower()):
                return key
        raise _ImportError(
            f"Value '{cell}' not found in selection field '{label}'",
            [option_label or key for key, option_label in options],
        )
    if t == "many2one":
        return _reference(env, f, sub, cell)
    if t == "many2many":
        return [(6, 0, [_reference(env, f, sub, part.strip()) for part in cell.split(",") if part.strip()])]
    return cell


def _input_tz(env: Env) -> ZoneInfo | None:
    """``ir.fields.converter._input_tz``: the context's ``tz``, else the user's; unknown names are skipped."""
    user = env.store.visible("res.users", env.uid) or {}
    for name in (env.context.get("tz"), user.get("tz")):
        if isinstance(name, str) and name:
            try:
                return ZoneInfo(name)
            except (ZoneInfoNotFoundError, ValueError):
                continue
    return None


def _reference(env: Env, f: Field, sub: str | None, cell: str) -> int:
    assert f.relation is not None
    comodel = f.relation
    env.note_read(comodel)
    if sub == ".id":
        kind = "database id"
        try:
            target = int(cell)
        except ValueError:
            raise _ImportError(f"Invalid database id '{cell}' for the field '{f.string}'") from None
        if env.row(comodel, target) is not None:
            return target
    elif sub == "id":
        kind = "external id"
        module, _, name = cell.rpartition(".")
        row = env.store.xmlid(module or "__import__", name)
        if row is not None and row["model"] == comodel and env.row(comodel, row["res_id"]):
            return int(row["res_id"])
    else:
        kind = "name"
        rec_name = env.registry[comodel].rec_name
        found = sorted(env.search_ids(comodel, [(rec_name, "=", cell)], True))
        if not found:
            found = sorted(env.search_ids(comodel, [(rec_name, "=ilike", cell)], True))
        if found:
            return found[0]
    raise _ImportError(
        f"No matching record found for {kind} '{cell}' in field '{f.string}'",
    )


def _save(env: Env, model: str, xmlid: str | None, db_id: int | None, vals: dict[str, Any]) -> int:
    if xmlid:
        module, _, name = xmlid.rpartition(".")
        module = module or "__import__"
        existing = env.store.xmlid(module, name)
        if existing is not None and existing["model"] == model and env.row(model, existing["res_id"]):
            rid = int(existing["res_id"])
            env.write(model, [rid], vals)
            return rid
        rid = env.create_one(model, vals)
        env.after_create(model, [rid])
        sudo = _sudo(env)
        if existing is not None:
            sudo.txn.put("ir.model.data", existing["id"], None)
        imd = sudo.create_one(
            "ir.model.data",
            {"module": module, "name": name, "model": model, "res_id": rid, "noupdate": False},
        )
        del imd
        return rid
    if db_id:
        env.write(model, [db_id], vals)
        return db_id
    rid = env.create_one(model, vals)
    env.after_create(model, [rid])
    return rid


def _sudo(env: Env) -> Env:
    from connectors.openspp.fake.orm import SUPERUSER, Env

    sudo = Env(env.server, env.txn, env.uid, context=env.context, stamp=env.stamp, sudo=True)
    assert sudo.sudo or env.uid == SUPERUSER
    return sudo

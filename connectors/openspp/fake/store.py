"""The fake's database: in-memory tables, one transaction per RPC call, and late-commit visibility.

Rows are plain dicts replaced (never mutated) on every change, so the undo log can keep the old dict as is:
rolling back a call, or a savepoint inside ``load()``, just puts the old dicts back. That is what makes
"each RPC call is one transaction" cheap enough for benchmark-sized data.

``delay_commit`` needs a call whose effects exist but are not yet visible to other calls. After such a call
its touched rows are registered as *pending* with their previous version; every read path consults
:meth:`Store.visible` so other calls see the old version until the commit time passes, exactly like rows a
PostgreSQL transaction has written but not yet committed.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from connectors.openspp.fake.errors import SERIALIZATION_FAILURE, RpcError
from connectors.openspp.fake.models import ModelDef

Row = dict[str, Any]
Key = tuple[str, int]


@dataclass(slots=True)
class Pending:
    """The version other calls still see while a delayed transaction is not committed."""

    old: Row | None
    token: int


class Store:
    """Tables plus the indexes the ORM needs to stay fast on tens of thousands of rows."""

    def __init__(self, registry: dict[str, ModelDef]):
        self.registry = registry
        self.lock = threading.RLock()
        self.tables: dict[str, dict[int, Row]] = {name: {} for name in registry}
        self.sequences: dict[str, int] = dict.fromkeys(registry, 0)
        # (model, m2o field) -> target id -> ids pointing at it; only for fields some one2many inverts
        self.indexed: dict[str, set[str]] = defaultdict(set)
        for model in registry.values():
            for f in model.fields.values():
                if f.type == "one2many" and f.relation and f.inverse_name:
                    self.indexed[f.relation].add(f.inverse_name)
            if model.parent_field:
                self.indexed[model.name].add(model.parent_field)
        self.indexes: dict[tuple[str, str], dict[int, set[int]]] = {
            (m, f): defaultdict(set) for m, fs in self.indexed.items() for f in fs
        }
        self.xmlids: dict[tuple[str, str], int] = {}
        self.xmlids_by_target: dict[Key, set[int]] = defaultdict(set)
        self.pending: dict[Key, Pending] = {}
        self.pending_models: dict[str, int] = defaultdict(int)
        self._tokens = 0

    # -- raw row access ------------------------------------------------------------------------
    def next_id(self, model: str) -> int:
        self.sequences[model] += 1
        return self.sequences[model]

    def set_row(self, model: str, rid: int, row: Row | None) -> None:
        """Replace a row (``None`` deletes it) and keep every index in step."""
        table = self.tables[model]
        old = table.get(rid)
        for fname in self.indexed.get(model, ()):
            index = self.indexes[(model, fname)]
            before = old.get(fname) if old else None
            after = row.get(fname) if row else None
            if before != after:
                if before is not None:
                    index[before].discard(rid)
                if after is not None:
                    index[after].add(rid)
        if model == "ir.model.data":
            self._index_xmlid(rid, old, row)
        if row is None:
            table.pop(rid, None)
        else:
            table[rid] = row

    def _index_xmlid(self, rid: int, old: Row | None, row: Row | None) -> None:
        if old is not None:
            if self.xmlids.get((old["module"], old["name"])) == rid:
                del self.xmlids[(old["module"], old["name"])]
            self.xmlids_by_target[(old["model"], old["res_id"])].discard(rid)
        if row is not None:
            self.xmlids[(row["module"], row["name"])] = rid
            self.xmlids_by_target[(row["model"], row["res_id"])].add(rid)

    # -- visibility ----------------------------------------------------------------------------
    def visible(self, model: str, rid: int) -> Row | None:
        """The row as committed data shows it (pending changes of a delayed call are hidden)."""
        if self.pending_models.get(model):
            pending = self.pending.get((model, rid))
            if pending is not None:
                return pending.old
        return self.tables[model].get(rid)

    def visible_ids(self, model: str) -> Iterator[int]:
        table = self.tables[model]
        if not self.pending_models.get(model):
            yield from list(table)
            return
        seen = set()
        for rid in list(table):
            seen.add(rid)
            if self.visible(model, rid) is not None:
                yield rid
        for (m, rid), pending in list(self.pending.items()):
            if m == model and rid not in seen and pending.old is not None:
                yield rid

    def referencing(self, model: str, fname: str, target: int) -> set[int]:
        """Visible ids of ``model`` whose ``fname`` points at ``target`` (the one2many inverse)."""
        ids = set(self.indexes[(model, fname)].get(target, ()))
        if not self.pending_models.get(model):
            return ids
        result = set()
        for rid in ids:
            row = self.visible(model, rid)
            if row is not None and row.get(fname) == target:
                result.add(rid)
        for (m, rid), pending in self.pending.items():
            if m == model and pending.old is not None and pending.old.get(fname) == target:
                result.add(rid)
        return result

    def xmlid(self, module: str, name: str) -> Row | None:
        rid = self.xmlids.get((module, name))
        if rid is None:
            for (m, pid), pending in self.pending.items():
                old = pending.old
                if m == "ir.model.data" and old and (old["module"], old["name"]) == (module, name):
                    return {**old, "id": pid}
            return None
        row = self.visible("ir.model.data", rid)
        return {**row, "id": rid} if row is not None else None

    # -- delayed commits -----------------------------------------------------------------------
    def hold(self, touched: dict[Key, Row | None]) -> int:
        """Hide a finished call's changes from other calls until :meth:`release`."""
        self._tokens += 1
        token = self._tokens
        for key, old in touched.items():
            if key in self.pending:
                continue
            self.pending[key] = Pending(old, token)
            self.pending_models[key[0]] += 1
        return token

    def release(self, token: int) -> None:
        for key in [k for k, p in self.pending.items() if p.token == token]:
            del self.pending[key]
            self.pending_models[key[0]] -= 1

    def clear(self) -> None:
        for name in self.tables:
            self.tables[name] = {}
            self.sequences[name] = 0
        for index in self.indexes.values():
            index.clear()
        self.xmlids.clear()
        self.xmlids_by_target.clear()
        self.pending.clear()
        self.pending_models.clear()


@dataclass(slots=True)
class Transaction:
    """The undo log of one RPC call; savepoints are positions in it."""

    store: Store
    undo: list[tuple[str, int, Row | None]] = field(default_factory=list)

    def get(self, model: str, rid: int) -> Row | None:
        return self.store.visible(model, rid)

    def put(self, model: str, rid: int, row: Row | None) -> None:
        store = self.store
        key = (model, rid)
        if store.pending_models.get(model) and key in store.pending:
            raise RpcError(SERIALIZATION_FAILURE, "could not serialize access due to concurrent update")
        self.undo.append((model, rid, store.tables[model].get(rid)))
        store.set_row(model, rid, row)

    def savepoint(self) -> int:
        return len(self.undo)

    def rollback_to(self, savepoint: int) -> None:
        while len(self.undo) > savepoint:
            model, rid, old = self.undo.pop()
            self.store.set_row(model, rid, old)

    def rollback(self) -> None:
        self.rollback_to(0)

    def touched(self) -> dict[Key, Row | None]:
        """First recorded version of every row this call changed (what others must keep seeing)."""
        first: dict[Key, Row | None] = {}
        for model, rid, old in self.undo:
            first.setdefault((model, rid), old)
        return first

    def ids(self, model: str) -> Iterable[int]:
        return self.store.visible_ids(model)

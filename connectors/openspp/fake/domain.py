"""Odoo search domains and ``order`` strings, evaluated over the fake's rows.

Domains are prefix-notation lists (implicit ``&``, binary ``&``/``|``, unary ``!``) of
``[path, operator, value]`` leaves; dotted paths walk many2one and x2many fields. Each domain is compiled
once per call into a predicate, so a search over tens of thousands of rows stays a tight Python loop.

The rules copy Odoo 17's ``expression.py`` where a client can tell the difference: SQL NULL semantics (a
negative operator also matches an empty value), x2many "any related record matches", ``=?``, the
``like`` family with ``%``/``_`` wildcards, date widening for 10-character values on datetime fields, and
the error messages for unknown fields and operators.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from datetime import date, datetime, time
from typing import Any, Protocol

from connectors.openspp.fake.errors import (
    INDEX_ERROR,
    INVALID_DATETIME_FORMAT,
    USER_ERROR,
    VALUE_ERROR,
    RpcError,
)
from connectors.openspp.fake.models import X2MANY, Field, ModelDef

Pred = Callable[[int, dict[str, Any]], bool]

OPERATORS = frozenset(
    {
        "=", "!=", "<=", "<", ">", ">=", "=?", "=like", "=ilike", "like", "not like",
        "ilike", "not ilike", "in", "not in", "child_of", "parent_of", "any", "not any",
    }
)  # fmt: skip
NEGATIVE = frozenset({"!=", "not like", "not ilike", "not in", "not any"})
TRUE_LEAF = (1, "=", 1)
FALSE_LEAF = (0, "=", 1)


class DomainEnv(Protocol):
    """What the compiler needs from the ORM: rows, relations and sub-searches."""

    registry: dict[str, ModelDef]

    def row(self, model: str, rid: int) -> dict[str, Any] | None: ...

    def x2many_ids(self, model: str, fname: str, rid: int, row: dict[str, Any]) -> list[int]: ...

    def display_name(self, model: str, rid: int) -> str: ...

    def search_ids(self, model: str, domain: list[Any], active_test: bool) -> set[int]: ...

    def note_iso(self, value: str) -> None: ...


def leaf_repr(leaf: Any) -> str:
    """``('name', 'like_bad', 'x')``: the leaf as Odoo prints it in its error messages."""
    return repr(tuple(leaf)) if isinstance(leaf, list | tuple) else repr(leaf)


def is_leaf(term: Any) -> bool:
    return isinstance(term, list | tuple) and not isinstance(term, str)


def parse(domain: Any) -> Any:
    """Prefix notation to a tree: ('&', [..]) / ('|', [..]) / ('!', x) / ('leaf', term)."""
    if domain is None or domain is False:
        return ("&", [])
    if not isinstance(domain, list | tuple):
        raise RpcError(VALUE_ERROR, f"Invalid domain {domain!r}")
    stack: list[Any] = []
    for term in reversed(list(domain)):
        if term == "&" or term == "|":
            if len(stack) < 2:
                raise RpcError(INDEX_ERROR, "pop from empty list")
            a, b = stack.pop(), stack.pop()
            stack.append((term, [a, b]))
        elif term == "!":
            if not stack:
                raise RpcError(INDEX_ERROR, "pop from empty list")
            stack.append(("!", stack.pop()))
        elif is_leaf(term):
            if len(term) < 3:
                raise RpcError(VALUE_ERROR, f"not enough values to unpack (expected 3, got {len(term)})")
            if len(term) > 3:
                raise RpcError(VALUE_ERROR, "too many values to unpack (expected 3)")
            stack.append(("leaf", tuple(term)))
        else:
            raise RpcError(VALUE_ERROR, f"Invalid leaf {term!r}")
    stack.reverse()
    return ("&", stack)


def mentions(tree: Any, fname: str) -> bool:
    kind = tree[0]
    if kind == "leaf":
        path = tree[1][0]
        return isinstance(path, str) and path.split(".")[0] == fname
    if kind == "!":
        return mentions(tree[1], fname)
    return any(mentions(t, fname) for t in tree[1])


class Compiler:
    def __init__(self, env: DomainEnv):
        self.env = env

    def compile(self, model: ModelDef, domain: Any, *, active_test: bool = True) -> Pred:
        tree = parse(domain)
        if active_test and model.has_active and not mentions(tree, "active"):
            tree = ("&", [tree, ("leaf", ("active", "=", True))])
        return self._node(model, tree)

    def _node(self, model: ModelDef, tree: Any) -> Pred:
        kind = tree[0]
        if kind == "leaf":
            return self._leaf(model, tree[1])
        if kind == "!":
            inner = self._node(model, tree[1])
            return lambda rid, row: not inner(rid, row)
        parts = [self._node(model, t) for t in tree[1]]
        if kind == "&":
            if not parts:
                return lambda rid, row: True
            if len(parts) == 1:
                return parts[0]
            return lambda rid, row: all(p(rid, row) for p in parts)
        return lambda rid, row: any(p(rid, row) for p in parts)

    # -- leaves ---------------------------------------------------------------------------------
    def _leaf(self, model: ModelDef, leaf: tuple[Any, Any, Any]) -> Pred:
        path, op, value = leaf
        if leaf == TRUE_LEAF:
            return lambda rid, row: True
        if leaf == FALSE_LEAF:
            return lambda rid, row: False
        if not isinstance(op, str) or op.lower() not in OPERATORS | {"<>"}:
            raise RpcError(VALUE_ERROR, f"Invalid leaf {leaf_repr(leaf)}")
        op = op.lower()
        if op == "<>":
            op = "!="
        if not isinstance(path, str):
            raise RpcError(VALUE_ERROR, f"Invalid leaf {leaf_repr(leaf)}")
        parts = path.split(".")
        f = model.fields.get(parts[0])
        if f is None:
            raise RpcError(VALUE_ERROR, f"Invalid field {model.name}.{parts[0]} in leaf {leaf_repr(leaf)}")
        if not f.store and f.type != "one2many" and parts[0] != "display_name":
            raise RpcError(VALUE_ERROR, f"Non-stored field {model.name}.{parts[0]} cannot be searched.")
        if parts[0] == "display_name":
            target = model.rec_name
            return self._leaf(model, (target, op, value))
        if len(parts) > 1:
            if f.relation is None:
                raise RpcError(
                    VALUE_ERROR,
                    f"Invalid field {model.name}.{path} in leaf {leaf_repr(leaf)}",
                )
            sub = [(".".join(parts[1:]), op, value)]
            return self._related(model, f, sub, negate=False)
        if op in ("=", "!=") and isinstance(value, list | tuple):
            op = "in" if op == "=" else "not in"
        if op in ("in", "not in") and isinstance(value, bool):
            op = "=" if op == "in" else "!="
        if op == "=?":
            if value is False or value is None:
                return lambda rid, row: True
            op = "="
        if op in ("any", "not any"):
            if f.relation is None:
                raise RpcError(VALUE_ERROR, f"Invalid leaf {leaf_repr(leaf)}")
            return self._related(model, f, value, negate=op == "not any")
        if op in ("child_of", "parent_of"):
            return self._hierarchy(model, f, op, value, leaf)
        if f.type == "many2one":
            return self._many2one(model, f, op, value, leaf)
        if f.type in X2MANY:
            return self._x2many(model, f, op, value, leaf)
        return self._scalar(f, op, value, leaf)

    def _related(self, model: ModelDef, f: Field, sub: Any, *, negate: bool) -> Pred:
        assert f.relation is not None
        matching = self.env.search_ids(f.relation, list(sub), False)
        env = self.env
        if f.type == "many2one":
            name = f.name

            def pred(rid: int, row: dict[str, Any]) -> bool:
                target = row.get(name)
                found = target is not None and target in matching
                return found != negate
        else:
            mname = model.name
            fname = f.name

            def pred(rid: int, row: dict[str, Any]) -> bool:
                found = any(i in matching for i in env.x2many_ids(mname, fname, rid, row))
                return found != negate

        return pred

    def _ids_value(self, f: Field, value: Any, op: str, leaf: Any) -> tuple[set[int], bool]:
        """Normalise a relational comparison value to (ids, matches-null)."""
        assert f.relation is not None
        values = list(value) if isinstance(value, list | tuple) else [value]
        ids: set[int] = set()
        null = False
        names = [v for v in values if isinstance(v, str)]
        for v in values:
            if v is False or v is None:
                null = True
            elif isinstance(v, bool):
                null = null or not v
            elif isinstance(v, int):
                ids.add(v)
        if names:
            name_op = "ilike" if op in ("like", "ilike", "not like", "not ilike") else "="
            for name in names:
                ids |= self.env.search_ids(f.relation, [("display_name", name_op, name)], False)
        return ids, null

    def _many2one(self, model: ModelDef, f: Field, op: str, value: Any, leaf: Any) -> Pred:
        name = f.name
        if op in ("like", "ilike", "not like", "not ilike", "=like", "=ilike"):
            sub_op = op.replace("not ", "")
            negate = op.startswith("not")
            assert f.relation is not None
            target_rec = self.env.registry[f.relation].rec_name
            matching = self.env.search_ids(f.relation, [(target_rec, sub_op, value)], False)

            def like_pred(rid: int, row: dict[str, Any]) -> bool:
                target = row.get(name)
                if target is None:
                    return negate
                return (target in matching) != negate

            return like_pred
        if op in ("<", "<=", ">", ">="):
            return self._scalar(Field("integer", f.string, name=name), op, value, leaf)
        ids, null = self._ids_value(f, value, op, leaf)
        positive = op in ("=", "in")

        def pred(rid: int, row: dict[str, Any]) -> bool:
            target = row.get(name)
            hit = (target is None and null) or (target is not None and target in ids)
            if positive:
                return hit
            return not hit

        return pred

    def _x2many(self, model: ModelDef, f: Field, op: str, value: Any, leaf: Any) -> Pred:
        env = self.env
        mname, fname = model.name, f.name
        if op in ("like", "ilike", "not like", "not ilike", "=like", "=ilike"):
            assert f.relation is not None
            target_rec = env.registry[f.relation].rec_name
            matching = env.search_ids(f.relation, [(target_rec, op.replace("not ", ""), value)], False)
            negate = op.startswith("not")
            return lambda rid, row: (
                any(i in matching for i in env.x2many_ids(mname, fname, rid, row)) != negate
            )
        if op not in ("=", "!=", "in", "not in"):
            raise RpcError(VALUE_ERROR, f"Invalid leaf {leaf_repr(leaf)}")
        ids, null = self._ids_value(f, value, op, leaf)
        positive = op in ("=", "in")

        def pred(rid: int, row: dict[str, Any]) -> bool:
            related = env.x2many_ids(mname, fname, rid, row)
            hit = (not related and null) or any(i in ids for i in related)
            return hit if positive else not hit

        return pred

    def _hierarchy(self, model: ModelDef, f: Field, op: str, value: Any, leaf: Any) -> Pred:
        comodel_name = model.name if f.name == "id" else f.relation
        if comodel_name is None:
            raise RpcError(VALUE_ERROR, f"Invalid leaf {leaf_repr(leaf)}")
        comodel = self.env.registry[comodel_name]
        parent = comodel.parent_field
        if parent is None:
            raise RpcError(VALUE_ERROR, f"Invalid hierarchy operator {op} on model {comodel_name}")
        roots = value if isinstance(value, list | tuple) else [value]
        if not all(isinstance(r, int) and not isinstance(r, bool) for r in roots):
            raise RpcError(VALUE_ERROR, f"Invalid leaf {leaf_repr(leaf)}")
        all_ids = self.env.search_ids(comodel_name, [], False)
        parents = {}
        for rid in all_ids:
            row = self.env.row(comodel_name, rid)
            parents[rid] = row.get(parent) if row else None
        found: set[int] = set()
        if op == "child_of":
            frontier = {r for r in roots if r in parents}
            found |= frontier
            while frontier:
                frontier = {c for c, p in parents.items() if p in frontier and c not in found}
                found |= frontier
        else:
            for r in roots:
                cur = r if r in parents else None
                while cur is not None and cur not in found:
                    found.add(cur)
                    cur = parents.get(cur)
        name = f.name

        if f.type in X2MANY:
            env = self.env
            mname = model.name
            return lambda rid, row: any(i in found for i in env.x2many_ids(mname, name, rid, row))
        if name == "id":
            return lambda rid, row: rid in found
        return lambda rid, row: row.get(name) in found

    def _scalar(self, f: Field, op: str, value: Any, leaf: Any) -> Pred:
        name = f.name
        if op in ("like", "ilike", "not like", "not ilike", "=like", "=ilike"):
            if value is False or value is None:
                # Odoo: ('f', 'ilike', False) is "f is not set"
                empty = op in ("like", "ilike", "=like", "=ilike")
                return lambda rid, row: (row.get(name) in (None, "", False)) == empty
            pattern = str(value)
            if not op.startswith("="):
                pattern = f"%{pattern}%"
            regex = _like_regex(pattern, insensitive="ilike" in op)
            negate = op.startswith("not")

            def like(rid: int, row: dict[str, Any]) -> bool:
                v = row.get(name) if name != "id" else rid
                if v is None or v is False:
                    return negate
                return bool(regex.match(_as_text(v))) != negate

            return like
        convert = self._converter(f, op)
        if op in ("in", "not in"):
            if not isinstance(value, list | tuple):
                raise RpcError(VALUE_ERROR, f"Invalid leaf {leaf_repr(leaf)}")
            items = list(value)
            null = any(v is False or v is None for v in items) and f.type != "boolean"
            wanted = {convert(v) for v in items if not (v is None or (v is False and f.type != "boolean"))}
            positive = op == "in"

            def member(rid: int, row: dict[str, Any]) -> bool:
                v = rid if name == "id" else row.get(name)
                if f.type == "boolean":
                    v = bool(v)
                hit = (v is None and null) or (v is not None and v in wanted)
                return hit if positive else not hit

            return member
        if value is False or value is None:
            if op in ("=", "!="):
                is_eq = op == "="
                if f.type == "boolean":
                    return lambda rid, row: (not row.get(name)) == is_eq
                return lambda rid, row: (row.get(name) in (None, False)) == is_eq
            return lambda rid, row: False
        target = convert(value)
        if f.type == "boolean":
            target = bool(target)
            if op == "=":
                return lambda rid, row: bool(row.get(name)) == target
            if op == "!=":
                return lambda rid, row: bool(row.get(name)) != target
        compare = _COMPARE[op]
        negative = op == "!="

        def scalar(rid: int, row: dict[str, Any]) -> bool:
            v = rid if name == "id" else row.get(name)
            if v is None:
                return negative
            try:
                return compare(v, target)
            except TypeError:
                return False

        return scalar

    def _converter(self, f: Field, op: str) -> Callable[[Any], Any]:
        if f.type == "datetime":
            return lambda v: self._domain_datetime(v, op)
        if f.type == "date":
            return lambda v: self._domain_date(v)
        if f.type in ("integer", "many2one"):
            return _as_int
        if f.type == "float":
            return float
        return lambda v: v

    def _domain_datetime(self, value: Any, op: str) -> datetime:
        if isinstance(value, datetime):
            return value
        if not isinstance(value, str):
            raise RpcError(VALUE_ERROR, f"Invalid datetime value {value!r} in domain")
        text_value = value.strip()
        if "T" in text_value or text_value.endswith("Z"):
            self.env.note_iso(value)
        if len(text_value) == 10:
            day = _parse_pg_date(text_value, value)
            return datetime.combine(day, time(23, 59, 59) if op in (">", "<=") else time.min)
        cleaned = text_value.replace("T", " ").rstrip("Z")
        for fmt in ("%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M"):
            try:
                return datetime.strptime(cleaned, fmt)
            except ValueError:
                continue
        raise RpcError(
            INVALID_DATETIME_FORMAT,
            f'invalid input syntax for type timestamp: "{value}"\nLINE 1: ...',
        )

    def _domain_date(self, value: Any) -> date:
        if isinstance(value, date) and not isinstance(value, datetime):
            return value
        if not isinstance(value, str):
            raise RpcError(VALUE_ERROR, f"Invalid date value {value!r} in domain")
        return _parse_pg_date(value[:10], value)


def _parse_pg_date(text_value: str, original: str) -> date:
    try:
        return datetime.strptime(text_value, "%Y-%m-%d").date()
    except ValueError:
        raise RpcError(
            INVALID_DATETIME_FORMAT,
            f'invalid input syntax for type date: "{original}"\nLINE 1: ...',
        ) from None


def _as_int(value: Any) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    try:
        return int(value)
    except (TypeError, ValueError):
        raise RpcError(
            "psycopg2.errors.InvalidTextRepresentation",
            f'invalid input syntax for type integer: "{value}"\nLINE 1: ...',
        ) from None


def _as_text(value: Any) -> str:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, date):
        return value.strftime("%Y-%m-%d")
    return str(value)


def _like_regex(pattern: str, *, insensitive: bool) -> re.Pattern[str]:
    out = []
    escaped = False
    for ch in pattern:
        if escaped:
            out.append(re.escape(ch))
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == "%":
            out.append(".*")
        elif ch == "_":
            out.append(".")
        else:
            out.append(re.escape(ch))
    return re.compile("^" + "".join(out) + "$", re.DOTALL | (re.IGNORECASE if insensitive else 0))


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "=": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


# -- order ------------------------------------------------------------------------------------------
_ORDER_RE = re.compile(
    r"^(\s*(?P<term>[a-z0-9_]+|\"[a-z0-9_]+\")(\.[a-z0-9_]+)?(\s+(desc|asc))?"
    r"(\s+(nulls first|nulls last))?\s*(,|$))+(?<!,)$",
    re.IGNORECASE,
)


def parse_order(model: ModelDef, order: str | None) -> list[tuple[str, bool, bool | None]]:
    """``"write_date asc, id asc"`` to [(field, descending, nulls_first)] with Odoo's checks."""
    spec = order if order else model.order
    if not isinstance(spec, str) or not _ORDER_RE.match(spec):
        raise RpcError(
            USER_ERROR,
            f'Invalid "order" specified ({spec}). A valid "order" specification is a '
            "comma-separated list of valid field names (optionally followed by asc/desc for the "
            "direction)",
        )
    terms = []
    for raw in spec.split(","):
        words = raw.strip().split()
        fname = words[0].strip('"').split(".")[0]
        rest = [w.lower() for w in words[1:]]
        descending = "desc" in rest
        nulls: bool | None = None
        if "nulls" in rest:
            nulls = rest[rest.index("nulls") + 1] == "first"
        f = model.fields.get(fname)
        if f is None:
            raise RpcError(VALUE_ERROR, f"Invalid field {fname!r} on model {model.name!r}")
        if not f.store or f.type in X2MANY:
            raise RpcError(
                VALUE_ERROR,
                f"Cannot convert {model.name}.{fname} to SQL because it is not stored",
            )
        terms.append((fname, descending, nulls))
    return terms


def sort_ids(
    ids: Iterable[int],
    rows: dict[int, dict[str, Any]],
    terms: list[tuple[str, bool, bool | None]],
) -> list[int]:
    """Stable multi-key sort with PostgreSQL's NULL placement (ASC nulls last, DESC nulls first)."""
    result = list(ids)
    for fname, descending, nulls_first in reversed(terms):
        if nulls_first is None:
            nulls_first = descending

        null_rank = 0 if nulls_first != descending else 2

        def key(rid: int, fname: str = fname, null_rank: int = null_rank) -> tuple[int, Any]:
            value = rid if fname == "id" else rows[rid].get(fname)
            if value is None:
                # reverse=True flips the order, so the rank encodes the placement after the flip
                return (null_rank, 0)
            if isinstance(value, str):
                return (1, value)  # Odoo's databases are C-collated: code point (UTF-8 byte) order
            if isinstance(value, bool):
                return (1, int(value))
            if isinstance(value, list | tuple):
                return (1, tuple(value))
            return (1, value)

        result.sort(key=key, reverse=descending)
    return result


def match_dict(domain: Any, values: dict[str, Any]) -> bool:
    """Evaluate a simple domain on a plain dict (fault predicates over call values)."""
    tree = parse(domain)

    def walk(node: Any) -> bool:
        kind = node[0]
        if kind == "leaf":
            path, op, value = node[1]
            actual = values.get(path)
            op = op.lower()
            if op in ("=", "=="):
                return bool(actual == value)
            if op in ("!=", "<>"):
                return bool(actual != value)
            if op == "in":
                return actual in value
            if op == "not in":
                return actual not in value
            if op in ("like", "ilike"):
                if actual is None or actual is False:
                    return False
                a, b = str(actual), str(value)
                return b.lower() in a.lower() if op == "ilike" else b in a
            try:
                return bool(_COMPARE[op](actual, value))
            except (KeyError, TypeError):
                return False
        if kind == "!":
            return not walk(node[1])
        if kind == "&":
            return all(walk(n) for n in node[1])
        return any(walk(n) for n in node[1])

    return walk(tree)

"""The fake OpenSPP 17 server's state and its services (``common``, ``object``, ``db``), without HTTP.

:class:`FakeOpenSpp` is what tests drive in-process (clock, faults, seed, state dumps) and what the ASGI
app in :mod:`connectors.openspp.fake.app` wraps. Each ``execute_kw`` runs under one lock inside one
:class:`~connectors.openspp.fake.store.Transaction`: any error rolls the whole call back, as PostgreSQL
does with Odoo's one-cursor-per-call.
"""

from __future__ import annotations

import json
import logging
import random
import threading
from collections import deque
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from connectors.openspp.fake.errors import (
    KEY_ERROR,
    OPERATIONAL_ERROR,
    TYPE_ERROR,
    RpcError,
    access_denied,
    missing_error,
)
from connectors.openspp.fake.faults import Faults
from connectors.openspp.fake.models import Flavour, build_registry
from connectors.openspp.fake.orm import SPP_ID_ALPHABET, SUPERUSER, Env
from connectors.openspp.fake.store import Store, Transaction
from connectors.openspp.odoo_formats import format_datetime_us, utc_now

log = logging.getLogger("connectors.openspp.fake")

VERSION_INFO = {
    "server_version": "17.0-20240709",
    "server_version_info": [17, 0, 0, "final", 0, ""],
    "server_serie": "17.0",
    "protocol_version": 1,
}
WRITE_METHODS = frozenset({"create", "write", "unlink", "load"})


class FakeClock:
    """The database clock: real UTC time, or frozen (optionally ticking by a fixed step per read)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._frozen: datetime | None = None
        self._step = timedelta(0)
        self._offset = timedelta(0)

    def now(self) -> datetime:
        with self._lock:
            if self._frozen is not None:
                value = self._frozen
                self._frozen = value + self._step
                return value
            return utc_now() + self._offset

    def peek(self) -> datetime:
        with self._lock:
            return self._frozen if self._frozen is not None else utc_now() + self._offset

    def freeze(self, at: datetime | None = None, step_us: int = 0) -> None:
        with self._lock:
            self._frozen = at or (utc_now() + self._offset)
            self._step = timedelta(microseconds=step_us)

    def advance(self, seconds: float) -> None:
        with self._lock:
            if self._frozen is not None:
                self._frozen += timedelta(seconds=seconds)
            else:
                self._offset += timedelta(seconds=seconds)

    def unfreeze(self) -> None:
        with self._lock:
            self._frozen = None
            self._step = timedelta(0)

    @property
    def frozen(self) -> bool:
        return self._frozen is not None


@dataclass(slots=True)
class Credentials:
    password: str
    api_keys: list[str] = field(default_factory=list)


@dataclass(slots=True)
class CallOutcome:
    result: Any
    touched: dict[Any, Any]
    wrote: bool


class FakeOpenSpp:
    """All state of one fake server; thread-safe behind ``lock``."""

    def __init__(
        self,
        *,
        database: str = "openspp",
        naming: Literal["onchange", "computed"] = "onchange",
        cooldown_after: int = 5,
        cooldown_seconds: float = 60.0,
        seed: bool = True,
        rng_seed: int = 0,
        data_file: Path | None = None,
        flavour: Flavour = "openspp",
    ):
        self.database = database
        self.flavour = flavour
        self.naming = naming
        self.cooldown_after = cooldown_after
        self.cooldown_seconds = cooldown_seconds
        self.registry = build_registry(flavour)
        self.store = Store(self.registry)
        self.lock = self.store.lock
        self.clock = FakeClock()
        self.faults = Faults(rng_seed)
        self.clock_skew = 0.0
        self.credentials: dict[int, Credentials] = {}
        self.login_failures: dict[str, tuple[int, datetime]] = {}
        self.requests: deque[dict[str, Any]] = deque(maxlen=20000)
        self.flags: list[dict[str, Any]] = []
        self.models_read: dict[int, set[str]] = {}
        self.jobs: set[int] = set()
        self.inflight: dict[int, int] = {}
        self.max_inflight: dict[int, int] = {}
        self.calls = 0
        self._codes = random.Random(rng_seed)
        self._used_codes: set[str] = set()
        self.data_file = data_file
        if data_file is not None and data_file.exists():
            self._restore(data_file)
        elif seed:
            self.seed()

    # -- bookkeeping used by the ORM -------------------------------------------------------------
    def flag(
        self, kind: str, *, model: str | None = None, method: str | None = None, detail: str = ""
    ) -> None:
        """Record a client mistake a real server would silently accept or punish later (§6.9)."""
        self.flags.append({"flag": kind, "model": model, "method": method, "detail": detail})

    def unique_code(self) -> str:
        while True:
            code = "".join(self._codes.choice(SPP_ID_ALPHABET) for _ in range(8))
            if code not in self._used_codes:
                self._used_codes.add(code)
                return code

    def groups_of(self, uid: int) -> set[str]:
        user = self.store.visible("res.users", uid)
        if user is None:
            return set()
        names = set()
        for gid in user.get("groups_id") or ():
            for imd in self.store.xmlids_by_target.get(("res.groups", gid), ()):
                row = self.store.visible("ir.model.data", imd)
                if row is not None:
                    names.add(f"{row['module']}.{row['name']}")
        return names

    # -- services --------------------------------------------------------------------------------
    def dispatch(self, service: str, method: str, args: list[Any], client: str) -> CallOutcome:
        """One ``/jsonrpc`` call: ``common``, ``object`` or ``db``; raises :class:`RpcError`."""
        if not isinstance(args, list):
            raise RpcError(TYPE_ERROR, "args must be a list")
        if service == "common":
            return CallOutcome(self._common(method, args, client), {}, False)
        if service == "object":
            if method == "execute_kw":
                return self.execute_kw(*_bind_execute_kw(args))
            if method == "execute":
                if len(args) < 5:
                    raise RpcError(TYPE_ERROR, "execute() missing required positional arguments")
                return self.execute_kw(args[0], args[1], args[2], args[3], args[4], list(args[5:]), {})
            raise RpcError(KEY_ERROR, f"exp_{method}")
        if service == "db":
            if method == "list":
                return CallOutcome([self.database], {}, False)
            if method == "server_version":
                return CallOutcome(VERSION_INFO["server_version"], {}, False)
            raise RpcError(KEY_ERROR, f"exp_{method}")
        raise RpcError(KEY_ERROR, service)

    def _check_db(self, db: Any) -> None:
        if db != self.database:
            raise RpcError(
                OPERATIONAL_ERROR,
                f'connection to server at "127.0.0.1", port 5432 failed: FATAL:  database "{db}" '
                "does not exist\n",
            )

    def _common(self, method: str, args: list[Any], client: str) -> Any:
        if method == "version":
            return dict(VERSION_INFO)
        if method in ("authenticate", "login"):
            needed = 4 if method == "authenticate" else 3
            if len(args) < needed:
                raise RpcError(
                    TYPE_ERROR, f"exp_{method}() missing {needed - len(args)} required positional argument(s)"
                )
            db, login, password = args[0], args[1], args[2]
            self._check_db(db)
            return self.authenticate(login, password, client)
        raise RpcError(KEY_ERROR, f"exp_{method}")

    def authenticate(self, login: Any, password: Any, client: str) -> int | bool:
        """The uid, or ``False`` for a bad login, a bad password, and during the login cooldown."""
        with self.lock:
            now = self.clock.peek()
            failures, last = self.login_failures.get(client, (0, datetime.min))
            if failures >= self.cooldown_after and now - last < timedelta(seconds=self.cooldown_seconds):
                log.warning("login cooldown for %s", client)
                return False
            uid = self._match_login(login, password)
            if uid is None:
                self.login_failures[client] = (failures + 1, now)
                return False
            self.login_failures.pop(client, None)
            return uid

    def _match_login(self, login: Any, password: Any) -> int | None:
        for uid in self.store.visible_ids("res.users"):
            row = self.store.visible("res.users", uid)
            if row and row.get("login") == login and row.get("active"):
                creds = self.credentials.get(uid)
                if (
                    creds
                    and isinstance(password, str)
                    and password
                    and (password == creds.password or password in creds.api_keys)
                ):
                    return uid
                return None
        return None

    def check_credentials(self, uid: Any, password: Any) -> None:
        if isinstance(uid, bool) or not isinstance(uid, int):
            raise access_denied()
        row = self.store.visible("res.users", uid)
        if row is None:
            raise missing_error("res.users", [uid], uid)
        creds = self.credentials.get(uid)
        if (
            not row.get("active")
            or creds is None
            or not isinstance(password, str)
            or (password != creds.password and password not in creds.api_keys)
        ):
            raise access_denied()

    def execute_kw(
        self,
        db: Any,
        uid: Any,
        password: Any,
        model: Any,
        method: Any,
        args: Any,
        kw: Any = None,
    ) -> CallOutcome:
        self._check_db(db)
        with self.lock:
            self.check_credentials(uid, password)
            if not isinstance(args, list):
                raise RpcError(TYPE_ERROR, "args must be a list")
            if kw is not None and not isinstance(kw, dict):
                raise RpcError(TYPE_ERROR, "execute_kw() argument after ** must be a mapping")
            txn = Transaction(self.store)
            stamp = self.clock.now()
            env = Env(self, txn, uid, stamp=stamp)
            self.calls += 1
            try:
                result = env.call(str(model), str(method), args, kw or {})
            except BaseException:
                txn.rollback()
                raise
            touched = txn.touched()
            if touched and self.data_file is not None:
                self._persist(self.data_file)
            return CallOutcome(result, touched, bool(touched))

    def sudo_env(self, txn: Transaction) -> Env:
        return Env(self, txn, SUPERUSER, stamp=self.clock.now(), sudo=True)

    # -- concurrency measure (§6.9) ---------------------------------------------------------------
    def writer_groups(self, model: Any, method: Any, args: list[Any]) -> set[int]:
        """Groups a write call will touch, computed before it runs (to count concurrent writers)."""
        if method not in WRITE_METHODS or not isinstance(args, list):
            return set()
        store = self.store
        groups: set[int] = set()

        def groups_of_partner(pid: Any) -> None:
            if not isinstance(pid, int):
                return
            row = store.visible("res.partner", pid)
            if row is None:
                return
            if row.get("is_group"):
                groups.add(pid)
            for m in store.referencing("g2p.group.membership", "individual", pid):
                mrow = store.visible("g2p.group.membership", m)
                if mrow and mrow.get("group"):
                    groups.add(mrow["group"])

        with self.lock:
            try:
                if model == "res.partner" and method in ("write", "unlink") and args:
                    ids = args[0] if isinstance(args[0], list) else [args[0]]
                    for pid in ids:
                        groups_of_partner(pid)
                elif model == "res.partner" and method == "load" and len(args) > 1:
                    fields = args[0]
                    if "id" in fields:
                        col = fields.index("id")
                        for row in args[1]:
                            module, _, name = str(row[col]).rpartition(".")
                            imd = store.xmlid(module or "__import__", name)
                            if imd is not None and imd["model"] == "res.partner":
                                groups_of_partner(imd["res_id"])
                elif model == "g2p.group.membership" and method == "create" and args:
                    vals = args[0] if isinstance(args[0], list) else [args[0]]
                    groups.update(
                        v["group"] for v in vals if isinstance(v, dict) and isinstance(v.get("group"), int)
                    )
                elif model == "g2p.group.membership" and method in ("write", "unlink") and args:
                    ids = args[0] if isinstance(args[0], list) else [args[0]]
                    for mid in ids:
                        mrow = store.visible("g2p.group.membership", mid) if isinstance(mid, int) else None
                        if mrow and mrow.get("group"):
                            groups.add(mrow["group"])
            except (TypeError, ValueError, IndexError, KeyError, AttributeError):
                return groups
        return groups

    def enter_writers(self, groups: set[int]) -> None:
        with self.lock:
            for gid in groups:
                count = self.inflight.get(gid, 0) + 1
                self.inflight[gid] = count
                if count > self.max_inflight.get(gid, 0):
                    self.max_inflight[gid] = count

    def leave_writers(self, groups: set[int]) -> None:
        with self.lock:
            for gid in groups:
                self.inflight[gid] = self.inflight.get(gid, 1) - 1

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {
                "calls": self.calls,
                "max_writers_on_one_group": max(self.max_inflight.values(), default=0),
                "max_writers_per_group": {str(k): v for k, v in self.max_inflight.items() if v > 1},
                "pending_jobs": len(self.jobs),
            }

    # -- control operations ----------------------------------------------------------------------
    def reset(self, *, seed: bool = True) -> None:
        with self.lock:
            self.store.clear()
            self.credentials.clear()
            self.login_failures.clear()
            self.requests.clear()
            self.flags.clear()
            self.models_read.clear()
            self.jobs.clear()
            self.inflight.clear()
            self.max_inflight.clear()
            self.faults.clear()
            self.calls = 0
            self._used_codes.clear()
            if seed:
                self.seed()

    def seed(self) -> None:
        from connectors.openspp.fake.seed import seed

        with self.lock:
            seed(self)

    def add_user(
        self,
        login: str,
        password: str,
        groups: list[str],
        *,
        api_keys: list[str] | None = None,
        name: str | None = None,
        tz: str | None = None,
    ) -> int:
        """Create a user with groups given by xml-id (``g2p_registry_base.group_g2p_registrar``); ``tz``
        is the user's time zone preference, which ``load`` reads imported datetimes in."""
        with self.lock:
            txn = Transaction(self.store)
            env = self.sudo_env(txn)
            group_ids = []
            for xmlid in groups:
                module, _, gname = xmlid.rpartition(".")
                row = self.store.xmlid(module, gname)
                if row is None:
                    raise ValueError(f"unknown group {xmlid}")
                group_ids.append(row["res_id"])
            uid = env.create_one(
                "res.users",
                {"login": login, "name": name or login, "groups_id": [(6, 0, group_ids)], "tz": tz or False},
            )
            self.credentials[uid] = Credentials(password, list(api_keys or []))
            return uid

    def run_jobs(self) -> list[int]:
        """Run the queued ``recompute_indicators`` jobs: groups get a new, later write_date (§6.6)."""
        with self.lock:
            groups = sorted(self.jobs)
            self.jobs.clear()
            txn = Transaction(self.store)
            env = self.sudo_env(txn)
            for gid in groups:
                row = self.store.visible("res.partner", gid)
                if row is None:
                    continue
                count = 0
                for m in self.store.referencing("g2p.group.membership", "group", gid):
                    mrow = self.store.visible("g2p.group.membership", m)
                    if mrow and not mrow.get("is_ended"):
                        count += 1
                txn.put(
                    "res.partner",
                    gid,
                    {**row, "z_ind_grp_num_individuals": count, "write_date": env.stamp},
                )
            return groups

    def state(self, model: str | None = None) -> dict[str, list[dict[str, Any]]]:
        """Every visible row with microsecond datetimes (what ``/__fake__/state`` returns)."""
        with self.lock:
            models = [model] if model else list(self.registry)
            out = {}
            for name in models:
                rows = []
                stored = [
                    f for f, d in self.registry[name].fields.items() if d.store and d.type != "one2many"
                ]
                for rid in sorted(self.store.visible_ids(name)):
                    row = self.store.visible(name, rid)
                    if row is not None:
                        rows.append({"id": rid, **{f: _jsonable(row.get(f)) for f in stored if f != "id"}})
                out[name] = rows
            return out

    def log_request(self, entry: dict[str, Any]) -> None:
        self.requests.append(entry)

    # -- persistence for ``dcsync mock-server openspp --data FILE`` ---------------------------
    def _persist(self, path: Path) -> None:
        payload = {
            "tables": {
                m: {str(rid): {k: _tagged(v) for k, v in row.items()} for rid, row in t.items()}
                for m, t in self.store.tables.items()
            },
            "sequences": self.store.sequences,
            "credentials": {str(u): [c.password, c.api_keys] for u, c in self.credentials.items()},
        }
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(payload))
        tmp.replace(path)

    def _restore(self, path: Path) -> None:
        payload = json.loads(path.read_text())
        for model, rows in payload["tables"].items():
            if model not in self.registry:
                continue
            for rid, row in rows.items():
                self.store.set_row(model, int(rid), {k: _untagged(v) for k, v in row.items()})
        self.store.sequences.update(payload["sequences"])
        self._used_codes.update(
            str(row["spp_id"])[4:] for row in self.store.tables["res.partner"].values() if row.get("spp_id")
        )
        for uid, (password, keys) in payload["credentials"].items():
            self.credentials[int(uid)] = Credentials(password, keys)


def execute_kw_signature(
    db: Any, uid: Any, passwd: Any, model: Any, method: Any, args: Any, kw: Any = None
) -> tuple[Any, ...]:
    return db, uid, passwd, model, method, args, kw


def _bind_execute_kw(args: list[Any]) -> tuple[Any, ...]:
    try:
        return execute_kw_signature(*args)
    except TypeError as exc:
        message = str(exc).replace("execute_kw_signature()", "execute_kw()")
        raise RpcError(TYPE_ERROR, message) from None


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return format_datetime_us(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, tuple):
        return list(value)
    return value


def _tagged(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"$dt": format_datetime_us(value)}
    if isinstance(value, date):
        return {"$d": value.isoformat()}
    if isinstance(value, tuple):
        return {"$t": list(value)}
    return value


def _untagged(value: Any) -> Any:
    if isinstance(value, dict):
        if "$dt" in value:
            return datetime.strptime(value["$dt"], "%Y-%m-%d %H:%M:%S.%f")
        if "$d" in value:
            return date.fromisoformat(value["$d"])
        if "$t" in value:
            return tuple(value["$t"])
    return value

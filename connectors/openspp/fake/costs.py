"""What a call costs on a real Odoo 17 + OpenG2P registry, so the fake can be slow where the real one is.

The fake answers every call in about a millisecond; a real registry spends 7 ms on the smallest call, about
5 ms on each partner it creates (``g2p_registry_membership`` overrides ``res.partner.create`` without batch
support, so a list is created one record at a time) and a third of a second on ``authenticate`` (password
hashing). A benchmark against the plain fake therefore rewards saving calls that cost nothing and cannot see
where the real time goes. With a :class:`CostModel` switched on (``python -m connectors.openspp.fake
--costs real``, or ``DCSYNC_OPENSPP_FAKE_COSTS=real``) every ``/jsonrpc`` call holds one of ``workers``
modelled Odoo workers for its real-Odoo price, computed from the method, the model and the number of
records the call carried or returned; the fake's own time spent on the call is subtracted. It is off
unless asked for: :func:`~connectors.openspp.fake.app.create_app` builds an app without it, so tests stay
fast.

**Measured, not guessed.** The figures below are medians of 3-15 repetitions over ``POST /jsonrpc`` (one
keep-alive connection, as the registrar user dcsync uses) against a real Odoo 17.0 (``17.0-20240709``
nightly, ``Clyde1030/odoo17`` 62a16a12) with OpenG2P ``17.0-develop`` (ff779ec) ``g2p_registry_base``,
``_individual``, ``_group``, ``_membership`` and OCA ``queue_job`` 17.0 (64aa674), set up as
``odoo-observed.md`` §7 says (gender types one per call, membership kinds, ID types, banks), no demo data,
``--workers=2``, PostgreSQL 15 on the same 2-core machine, on 2026-12-04 while the machine was quiet (load
average below 2; a second run, and one as admin, agreed within 10% on most calls, and within 50% on the
household ``load`` calls, the noisiest):

===========================================================  =========
call                                                          median
===========================================================  =========
``common.authenticate``                                        324 ms
``common.version``                                             7.4 ms
``read`` of one field of one partner                           7.3 ms
``read`` of 50 partners, 8 fields                              8.6 ms
``search_read`` 100 partners, 2 / 8 fields (``limit=100``)     9.0 / 10.7 ms
``search_read`` 500 partners, 5 fields                         22.5 ms
``search_read`` of a catalog (membership kinds)                5.2 ms
``search_read`` memberships ``individual in`` 50 ids           6.2 ms
``search`` / ``search_count`` / ``fields_get``                 12.1 / 10.4 / 9.1 ms
``res.partner.create`` one dict                                16.2 ms
``res.partner.create`` list of 1 / 10 / 50 / 200 / 500         20 / 69 / 266 / 1,070 / 2,570 ms
``res.partner.load`` new xml-ids, 1 / 10 / 50 rows             23 / 76 / 295 ms
``res.partner.load`` same xml-ids again (update), 10 / 50      65 / 285 ms
``load`` 1 / 10 / 25 households, no members                    28 / 107 / 176 ms
``load`` 1 / 10 / 25 households, 4 membership sub-rows each    34 / 134 / 293 ms
``create`` list of 1 / 10 households, 4 inline memberships     20 / 83 ms
``g2p.group.membership.create`` list of 1 / 10 / 50            13.0 / 16.4 / 25.8 ms
``g2p.reg.id.create`` list of 1 / 10 / 50                      9.4 / 10.6 / 22.7 ms
``res.partner.bank.create`` list of 1 / 10 / 50                9.5 / 11.9 / 23.6 ms
``res.partner.write`` one field on 1 / 10 / 50 partners        12.0 / 13.4 / 21.7 ms
``res.partner.write`` a group, +1 / +4 memberships inline      16.3 / 17.4 ms
2 ``load`` of 50 at once vs one after the other (wall)         322 vs 602 ms
2 ``create`` lists of 10 at once vs one after the other        87 vs 125 ms
===========================================================  =========

So a partner costs about 5 ms whether it comes through ``create`` or ``load`` and however many share the
call; a call costs 7-18 ms of its own; a sub-record (membership, ID, bank account) costs a quarter of a
millisecond in a list ``create`` and about 1 ms as a ``load`` sub-row; a write touching memberships pays
about 4 ms more (``queue_job`` enqueues a recompute). Two calls in flight overlap almost fully with two
workers. ``unlink`` was not measured; it is priced as ``write``. A refused call is charged its per-call
price only (Odoo rolls back whatever it did first; how much that was is not known here).

``odoo-observed.md`` §2 reports the same server about 4x slower (33 ms for a ``read``, 82 ms for a
``create``, 22 ms per record in a list ``create``) and issue 16's 41.4 s / 5.2 s for one call per record /
plain batches: the shape agrees (33/7.3, 82/16.2, 22/5.1 are all 4.1-4.5), the scale was a busier
machine. ``scale`` (``--costs-scale 4``) reproduces that server; ratios between strategies hardly move.

Checked end to end (``docs/connectors/openspp.md``): the engine's 136 calls for 100 households summed to
6.5 s on the real server and 6.3 s on this model; one call per record took 34.1 s there and 31 s here; plain
batched creates 4.7-5.4 s there and 4.3 s here. The model is a little cheap (5-15%), never dearer.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

ENV_COSTS = "DCSYNC_OPENSPP_FAKE_COSTS"
ENV_SCALE = "DCSYNC_OPENSPP_FAKE_COSTS_SCALE"
ENV_WORKERS = "DCSYNC_OPENSPP_FAKE_WORKERS"
PROFILES = ("off", "real")

PARTNER = "res.partner"
MEMBERSHIP = "g2p.group.membership"


@dataclass(frozen=True, slots=True)
class CostTable:
    """Milliseconds, from the measurements in this module's docstring (registrar user, 2 workers)."""

    authenticate: float = 320.0
    common: float = 7.0
    db: float = 5.0
    read: float = 7.0
    read_per_row: float = 0.03
    search_read: float = 6.0
    search_read_per_row: float = 0.035
    search: float = 10.0
    fields_get: float = 9.0
    other_method: float = 7.0
    create: float = 9.5
    create_partner: float = 11.0
    create_membership: float = 13.0
    load: float = 18.0
    write: float = 11.5
    write_per_id: float = 0.2
    write_memberships: float = 4.0
    partner_record: float = 5.1
    partner_record_load: float = 5.5
    sub_record: float = 0.27
    inline_sub_record: float = 0.4
    load_sub_row: float = 1.0


REAL = CostTable()


@dataclass(frozen=True, slots=True)
class Call:
    """One ``/jsonrpc`` call as the cost model sees it."""

    service: str
    method: str
    model: str | None = None
    obj_method: str | None = None
    args: list[Any] = field(default_factory=list)
    kw: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, service: str, method: str, args: list[Any]) -> Call:
        if service == "object" and method in ("execute_kw", "execute") and len(args) >= 5:
            model, obj_method = args[3], args[4]
            if method == "execute_kw":
                call_args = args[5] if len(args) > 5 and isinstance(args[5], list) else []
                kw = args[6] if len(args) > 6 and isinstance(args[6], dict) else {}
            else:
                call_args, kw = list(args[5:]), {}
            return cls(service, method, str(model), str(obj_method), call_args, kw)
        return cls(service, method)


def price(call: Call, result: Any, table: CostTable = REAL, *, failed: bool = False) -> float:
    """Seconds a real Odoo spends on ``call`` (which answered ``result``, or failed)."""
    t = table
    if call.service == "common":
        return (t.authenticate if call.method in ("authenticate", "login") else t.common) / 1000
    if call.service != "object" or call.obj_method is None:
        return t.db / 1000
    model, method, args = call.model, call.obj_method, call.args
    base, extra = t.other_method, 0.0
    if method == "read":
        base = t.read
        extra = t.read_per_row * _count(result)
    elif method == "search_read":
        base = t.search_read
        extra = t.search_read_per_row * _count(result)
    elif method in ("search", "search_count"):
        base = t.search
    elif method == "fields_get":
        base = t.fields_get
    elif method == "create":
        base = {PARTNER: t.create_partner, MEMBERSHIP: t.create_membership}.get(model or "", t.create)
        vals = args[0] if args else []
        vals_list = vals if isinstance(vals, list) else [vals]
        each = t.partner_record if model == PARTNER else t.sub_record
        extra = each * len(vals_list) + t.inline_sub_record * sum(_inline(v) for v in vals_list)
    elif method == "load":
        base = t.load
        rows = args[1] if len(args) > 1 and isinstance(args[1], list) else []
        records = _load_records(args, result)
        each = t.partner_record_load if model == PARTNER else t.sub_record
        extra = each * records + t.load_sub_row * max(0, len(rows) - records)
    elif method in ("write", "unlink"):
        base = t.write
        ids = args[0] if args else []
        extra = t.write_per_id * (len(ids) if isinstance(ids, list) else 1)
        values = args[1] if method == "write" and len(args) > 1 else {}
        if isinstance(values, dict):
            extra += t.inline_sub_record * _inline(values)
            if "group_membership_ids" in values or "individual_membership_ids" in values:
                extra += t.write_memberships
        if model == MEMBERSHIP:
            extra += t.write_memberships
    if failed:
        extra = 0.0
    return (base + extra) / 1000


def _count(result: Any) -> int:
    return len(result) if isinstance(result, list) else 0


def _inline(vals: Any) -> int:
    """``[0, 0, {...}]`` commands among a record's values: sub-records created with it."""
    if not isinstance(vals, dict):
        return 0
    return sum(
        1
        for value in vals.values()
        if isinstance(value, list)
        for command in value
        if isinstance(command, list | tuple) and command and command[0] == 0
    )


def _load_records(args: list[Any], result: Any) -> int:
    """Records (not one2many sub-rows) in a ``load``: its answer's ids, else rows with a first cell."""
    if isinstance(result, dict) and isinstance(result.get("ids"), list):
        return len(result["ids"])
    rows = args[1] if len(args) > 1 and isinstance(args[1], list) else []
    return sum(1 for row in rows if isinstance(row, list) and row and row[0] not in ("", None, False))


class _Outcome(Protocol):
    result: Any


Sleep = Callable[[float], Awaitable[None]]


class CostModel:
    """Charges each call its real-Odoo price while it holds one of ``workers`` modelled Odoo workers.

    Odoo in production runs a few worker processes: calls up to that number overlap, further ones queue
    for a free worker. ``workers=2`` is what was measured (``--workers=2`` on two cores, where two
    concurrent ``load`` calls took 1.9x less wall time than one after the other).
    """

    def __init__(
        self,
        table: CostTable | None = REAL,
        *,
        scale: float = 1.0,
        workers: int = 2,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.perf_counter,
    ):
        if scale < 0:
            raise ValueError("the cost scale cannot be negative")
        if workers < 1:
            raise ValueError("a server has at least one worker")
        self.table = table
        self.scale = scale
        self.workers = workers
        self._sleep = sleep
        self._clock = clock
        self._semaphores: dict[int, asyncio.Semaphore] = {}
        self.charged = 0.0  # seconds of modelled server time, for reports and tests
        self.calls = 0

    @property
    def enabled(self) -> bool:
        return self.table is not None

    @classmethod
    def off(cls) -> CostModel:
        return cls(None)

    @classmethod
    def named(cls, profile: str, *, scale: float = 1.0, workers: int = 2) -> CostModel:
        if profile == "off":
            return cls.off()
        if profile == "real":
            return cls(REAL, scale=scale, workers=workers)
        raise ValueError(f"unknown cost profile {profile!r}; expected one of {', '.join(PROFILES)}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> CostModel:
        """``DCSYNC_OPENSPP_FAKE_COSTS=real`` (``_SCALE``, ``_WORKERS`` optional); off when unset."""
        env = os.environ if environ is None else environ
        return cls.named(
            env.get(ENV_COSTS, "off").strip() or "off",
            scale=float(env.get(ENV_SCALE, "1") or 1),
            workers=int(env.get(ENV_WORKERS, "2") or 2),
        )

    def describe(self) -> str:
        if self.table is None:
            return "costs off"
        return f"real-Odoo costs x{self.scale:g}, {self.workers} workers"

    def seconds(self, call: Call, result: Any, *, failed: bool = False) -> float:
        if self.table is None:
            return 0.0
        return price(call, result, self.table, failed=failed) * self.scale

    def _workers(self) -> asyncio.Semaphore:
        loop = id(asyncio.get_running_loop())
        semaphore = self._semaphores.get(loop)
        if semaphore is None:
            semaphore = self._semaphores[loop] = asyncio.Semaphore(self.workers)
        return semaphore

    async def run(
        self,
        dispatch: Callable[[str, str, list[Any], str], _Outcome],
        service: str,
        method: str,
        args: list[Any],
        client: str,
    ) -> Any:
        """``dispatch(...)``, then hold the worker until the call's price is paid."""
        if self.table is None:
            return dispatch(service, method, args, client)
        async with self._workers():
            started = self._clock()
            call = Call.of(service, method, args)
            try:
                outcome = dispatch(service, method, args, client)
            except Exception:
                await self._pay(self.seconds(call, None, failed=True), started)
                raise
            await self._pay(self.seconds(call, outcome.result), started)
            return outcome

    async def _pay(self, seconds: float, started: float) -> None:
        self.calls += 1
        self.charged += seconds
        remaining = seconds - (self._clock() - started)
        if remaining > 0:
            await self._sleep(remaining)

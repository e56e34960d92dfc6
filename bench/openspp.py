"""Push throughput to OpenSPP: the engine with the OpenSPP connector against one call per record and per link
(DataCollect's reference adapter) and against plain batched creates (the server's own limit).

All three push the same mobile log (``connectors.openspp.sample.registry_log``: households with members, IDs
and bank accounts) to the fake OpenSPP running as its own process (as a remote system is), over loopback
HTTP, in this run; the fake is reset between them and each ends with the same records (checked). By default
the fake charges every call what a real Odoo 17 + OpenG2P registry costs (``--costs real``:
``connectors/openspp/fake/costs.py``, measured; two workers), so the time goes where it goes on a real
server: about 5 ms per partner created, 7-18 ms per call, 0.3 s per ``authenticate``. ``--costs off`` is the
bare fake (about 1 ms a call), which only counts calls.

- **engine**: ``run_connector`` with the shipped ``mappings/openspp.yaml``.
- **one call per record** (``datacollect.md`` §4.4): ``res.partner.create`` per household and per
  individual, ``res.partner.bank.create`` and ``g2p.reg.id.create`` per account and per document, one
  ``res.partner.write`` on the household per membership, one call at a time.
- **plain batched creates**: ``res.partner.create`` with a list of 50 households, then of 50 individuals,
  each with its IDs and bank accounts inline, then ``g2p.group.membership.create`` with lists of 50; no
  xml-ids, so nothing makes it safe to resend: the floor a careful sync can approach, not beat.

Every strategy's clock covers its own ``authenticate`` and catalog reads (kinds, ID types, banks resolved by
name). The ratios printed are time ratios over the same records: engine vs one call per record (goal >= 5x)
and engine vs plain batched (goal >= 0.75).

The engine runs once per ``--workers`` count (default ``2,1``): a real Odoo in production runs worker
processes, and two were measured to overlap two calls almost fully; Odoo's default threaded mode
(``workers = 0``) hardly overlaps them at all, which one modelled worker reproduces. The two hand-written
strategies send one call at a time, so the worker count does not change them; they run once.

``--url``/``--db`` run the same three strategies against a real Odoo 17 + OpenG2P registry set up as
``docs/connectors/openspp.md`` says, instead of the fake (``--workers`` and ``--costs`` then do not apply;
the log carries no areas, which the registry core lacks). The bench deletes every registrant of that
database before each strategy and counts the calls it sends itself: use a throwaway database.

Usage: python bench/openspp.py [--households 100] [--members 5] [--batch-size 500] [--load-size 100]
                              [--in-flight 2] [--costs real|off] [--costs-scale 1] [--workers 2,1]
                              [--url URL --db DB [--login registrar --password registrar]
                               [--admin-login admin --admin-password admin]]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from connector_core.entities import Entity, fold
from connector_core.events import FormSubmission
from connector_core.mapping import MapContext, load_mapping
from connector_core.project import Project
from connector_core.sync.runner import run_connector
from connector_core.testing.server import free_port
from connectors.openspp.client import OdooClient
from connectors.openspp.fake import DATABASE, REGISTRAR_LOGIN, REGISTRAR_PASSWORD
from connectors.openspp.sample import registry_log

MAPPING = Path(__file__).resolve().parents[1] / "mappings" / "openspp.yaml"
PLAIN_BATCH = 50  # records per plain create call
SUB_KEYS = ("_membership_kind", "ids", "bank_accounts")


@dataclass(frozen=True, slots=True)
class Outcome:
    strategy: str
    seconds: float
    registrants: int
    calls: int
    census: dict[str, int]


@contextmanager
def fake_openspp_process(costs: str, scale: float, workers: int) -> Iterator[str]:
    """``python -m connectors.openspp.fake`` in a child process; yields its URL once it answers."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "connectors.openspp.fake", "--port", str(port), "--costs", costs]
    command += ["--costs-scale", str(scale), "--workers", str(workers)]
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(f"{url}/__fake__/stats", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or child.poll() is not None:
                    raise RuntimeError("the fake OpenSPP did not start") from None
                time.sleep(0.1)
        yield url
    finally:
        child.terminate()
        child.wait(timeout=10)


@dataclass(slots=True)
class Target:
    """The server a strategy runs against, and how the bench resets it, counts its calls and its records.

    The fake answers all three through its control API (not charged). A real Odoo has none: the bench
    counts the JSON-RPC calls this process makes (``counted_calls``), and resets and counts as the
    administrator, off the clock."""

    url: str
    database: str = DATABASE
    login: str = REGISTRAR_LOGIN
    password: str = REGISTRAR_PASSWORD
    admin: tuple[str, str] | None = None
    """A real server's administrator (login, password); ``None``: the fake, driven by its control API."""
    counter: list[int] | None = None

    def reset(self) -> None:
        if self.admin is None:
            httpx.post(f"{self.url}/__fake__/reset", json={"seed": True}, timeout=30).raise_for_status()
            return
        with self._admin() as client:
            every = {"context": {"active_test": False}}
            partners = client.execute_kw("res.partner", "search", [[["is_registrant", "=", True]]], every)
            for model, field in (("g2p.group.membership", "group"), ("g2p.group.membership", "individual")):
                for chunk in _chunks(partners):
                    client.unlink(model, client.search(model, [[field, "in", chunk]], order="id"))
            for model in ("g2p.reg.id", "res.partner.bank"):
                for chunk in _chunks(partners):
                    client.unlink(model, client.search(model, [["partner_id", "in", chunk]], order="id"))
            for chunk in _chunks(partners):
                client.unlink("res.partner", chunk)  # their xml-ids go with them

    def calls(self) -> int:
        if self.admin is None:
            return int(httpx.get(f"{self.url}/__fake__/stats", timeout=30).json()["calls"])
        assert self.counter is not None, "count a real server's calls inside counted_calls()"
        return self.counter[0]

    def census(self) -> dict[str, int]:
        """What the registry holds after a strategy."""
        if self.admin is not None:
            with self._admin() as client:
                registrant = [["partner_id.is_registrant", "=", True]]
                return {
                    "households": client.search_count(
                        "res.partner", [["is_registrant", "=", True], ["is_group", "=", True]]
                    ),
                    "individuals": client.search_count(
                        "res.partner", [["is_registrant", "=", True], ["is_group", "=", False]]
                    ),
                    "memberships": client.search_count("g2p.group.membership", []),
                    "ids": client.search_count("g2p.reg.id", registrant),
                    "bank accounts": client.search_count("res.partner.bank", registrant),
                }
        state = httpx.get(f"{self.url}/__fake__/state", timeout=60).json()
        partners = [p for p in state["res.partner"] if p.get("is_registrant") and p.get("active", True)]
        return {
            "households": sum(1 for p in partners if p.get("is_group")),
            "individuals": sum(1 for p in partners if not p.get("is_group")),
            "memberships": len(state["g2p.group.membership"]),
            "ids": len(state["g2p.reg.id"]),
            "bank accounts": len(state["res.partner.bank"]),
        }

    def _admin(self) -> OdooClient:
        assert self.admin is not None
        return OdooClient(self.url, self.database, *self.admin, timeout=300)

    def client(self, timeout: float) -> OdooClient:
        return OdooClient(self.url, self.database, self.login, self.password, timeout=timeout)


def _chunks(ids: list[int], size: int = 200) -> Iterator[list[int]]:
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


@contextmanager
def counted_calls(target: Target) -> Iterator[None]:
    """Count the JSON-RPC calls this process sends (engine and hand-written strategies alike) for a real
    server, which keeps no count a client can read."""
    lock = threading.Lock()
    counter = target.counter = [0]
    original = OdooClient.call

    def call(self: OdooClient, service: str, method: str, args: Any) -> Any:
        with lock:
            counter[0] += 1
        return original(self, service, method, args)

    OdooClient.call = call  # type: ignore[method-assign]
    try:
        yield
    finally:
        OdooClient.call = original  # type: ignore[method-assign]


def bench_engine(
    target: Target, events: list[FormSubmission], batch_size: int, load_size: int, in_flight: int
) -> Outcome:
    target.reset()
    before = target.calls()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "dcsync.yaml"
        settings = {
            "url": target.url,
            "database": target.database,
            "username": target.login,
            "password": target.password,
            "batch_size": load_size,
            "in_flight": in_flight,
        }
        connector = {
            "type": "openspp",
            "mapping": str(MAPPING),
            "batch_size": batch_size,
            "page_size": 20_000,
            "settings": settings,
        }
        config.write_text(yaml.safe_dump({"connectors": {"bench": connector}}))
        project = Project.open(config)
        try:
            project.eventlog.append(events)
            started = time.perf_counter()
            report = run_connector(project, "bench", pull=False)
            elapsed = time.perf_counter() - started
        finally:
            project.close()
    assert report.ok and report.push is not None, report.error
    assert report.push.counts.dead_lettered == 0, report.push.counts
    return Outcome("engine", elapsed, report.push.counts.created, target.calls() - before, target.census())


@dataclass(frozen=True, slots=True)
class Plan:
    """The mapped records of the log, households first, as the two hand-written strategies send them."""

    households: list[Entity]
    members: dict[str, list[Entity]]
    payloads: dict[str, dict[str, Any]]

    @classmethod
    def of(cls, events: list[FormSubmission]) -> Plan:
        mappings = load_mapping(MAPPING)
        state: dict[str, Entity | None] = fold(events, lambda guid: None).changed
        live = [e for e in state.values() if e is not None]
        payloads: dict[str, dict[str, Any]] = {}
        for entity in live:
            mapping = mappings.for_entity(entity.to_json())
            if mapping is not None:
                result = mapping.push(entity.to_json(), MapContext())
                assert result.ok and result.record is not None, result.reason
                payloads[entity.guid] = result.record
        households = [e for e in live if e.entity_name == "household"]
        members: dict[str, list[Entity]] = {h.guid: [] for h in households}
        for entity in live:
            if entity.entity_name == "individual" and entity.parent_guid in members:
                members[entity.parent_guid].append(entity)
        return cls(households, members, payloads)

    @property
    def registrants(self) -> int:
        return len(self.households) + sum(len(m) for m in self.members.values())


class Catalog:
    """Kinds, ID types and banks by name: what both hand-written strategies read once, on the clock."""

    def __init__(self, client: OdooClient):
        kinds = client.search_read("g2p.group.membership.kind", [], ["name"], order="id asc")
        types = client.search_read("g2p.id.type", [], ["name"], order="id asc")
        banks = client.search_read("res.bank", [], ["name"], order="id asc")
        self.kinds = {k["name"]: k["id"] for k in kinds}
        self.types = {t["name"]: t["id"] for t in types}
        self.banks = {b["name"]: b["id"] for b in banks}
        household_kind = client.search_read(
            "g2p.group.kind", [["name", "=", "Household"]], ["name"], order="id"
        )
        self.household_kind = household_kind[0]["id"]

    def partner(self, payload: dict[str, Any], is_group: bool) -> dict[str, Any]:
        # an empty answer is left out, as the connector does: a create's default is already empty, and
        # the OpenG2P registry core has no area_id to send an empty one to
        vals = {k: v for k, v in payload.items() if k not in SUB_KEYS and v is not None}
        vals.update(is_registrant=True, is_group=is_group)
        if is_group:
            vals["kind"] = self.household_kind
        return vals

    def bank(self, account: dict[str, Any]) -> dict[str, Any]:
        bank: dict[str, Any] = {"acc_number": account["acc_number"]}
        if account.get("bank"):
            bank["bank_id"] = self.banks[account["bank"]]
        if account.get("acc_holder_name"):
            bank["acc_holder_name"] = account["acc_holder_name"]
        return bank

    def reg_id(self, doc: dict[str, Any]) -> dict[str, Any]:
        reg = {"id_type": self.types[doc["id_type"]], "value": doc["value"]}
        if doc.get("expiry_date"):
            reg["expiry_date"] = doc["expiry_date"]
        return reg

    def membership(self, kind: str | None) -> dict[str, Any]:
        return {"kind": [[6, 0, [self.kinds[kind]]]]} if kind else {}


def bench_per_record(target: Target, plan: Plan) -> Outcome:
    """One call per record and per link, in the order DataCollect's OpenSPP adapter makes them."""
    target.reset()
    before = target.calls()
    started = time.perf_counter()
    with target.client(timeout=60) as client:
        catalog = Catalog(client)

        def partner(payload: dict[str, Any], is_group: bool) -> int:
            pid = client.create("res.partner", catalog.partner(payload, is_group))
            for account in payload.get("bank_accounts") or []:
                client.create("res.partner.bank", {"partner_id": pid, **catalog.bank(account)})
            for doc in payload.get("ids") or []:
                client.create("g2p.reg.id", {"partner_id": pid, **catalog.reg_id(doc)})
            return pid

        for household in plan.households:
            hid = partner(plan.payloads[household.guid], True)
            pids = [(partner(plan.payloads[p.guid], False), p) for p in plan.members[household.guid]]
            for pid, person in pids:
                member = {
                    "individual": pid,
                    **catalog.membership(plan.payloads[person.guid].get("_membership_kind")),
                }
                client.write("res.partner", [hid], {"group_membership_ids": [[0, 0, member]]})
    elapsed = time.perf_counter() - started
    return Outcome("one call per record", elapsed, plan.registrants, target.calls() - before, target.census())


def bench_plain_batches(target: Target, plan: Plan) -> Outcome:
    """``create`` with lists of 50 (IDs and bank accounts inline), then memberships in lists of 50."""
    target.reset()
    before = target.calls()
    started = time.perf_counter()
    with target.client(timeout=120) as client:
        catalog = Catalog(client)

        def vals(entity: Entity, is_group: bool) -> dict[str, Any]:
            payload = plan.payloads[entity.guid]
            record = catalog.partner(payload, is_group)
            if payload.get("ids"):
                record["reg_ids"] = [[0, 0, catalog.reg_id(d)] for d in payload["ids"]]
            if payload.get("bank_accounts"):
                record["bank_ids"] = [[0, 0, catalog.bank(a)] for a in payload["bank_accounts"]]
            return record

        def create(model: str, entities: list[Any], make: Any) -> list[int]:
            ids: list[int] = []
            for start in range(0, len(entities), PLAIN_BATCH):
                ids += client.create_many(model, [make(e) for e in entities[start : start + PLAIN_BATCH]])
            return ids

        household_ids = dict(
            zip(
                [h.guid for h in plan.households],
                create("res.partner", plan.households, lambda h: vals(h, True)),
                strict=True,
            )
        )
        people = [(h.guid, p) for h in plan.households for p in plan.members[h.guid]]
        person_ids = create("res.partner", people, lambda hp: vals(hp[1], False))
        links = [
            {
                "group": household_ids[household],
                "individual": pid,
                **catalog.membership(plan.payloads[person.guid].get("_membership_kind")),
            }
            for (household, person), pid in zip(people, person_ids, strict=True)
        ]
        create("g2p.group.membership", links, lambda link: link)
    elapsed = time.perf_counter() - started
    return Outcome(
        "plain batched creates", elapsed, plan.registrants, target.calls() - before, target.census()
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--households", type=int, default=100)
    parser.add_argument("--members", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=500, help="records per connector push (engine)")
    parser.add_argument("--load-size", type=int, default=100, help="records per load call (connector)")
    parser.add_argument("--in-flight", type=int, default=2, help="concurrent requests (connector)")
    parser.add_argument(
        "--costs", choices=("real", "off"), default="real", help="the fake's call costs (default: real)"
    )
    parser.add_argument("--costs-scale", type=float, default=1.0, help="multiply the real costs")
    parser.add_argument(
        "--workers",
        default="2,1",
        help="modelled Odoo workers, one engine run each (default 2,1: prefork with 2 workers, and one "
        "worker, as Odoo's default threaded mode behaves); the first also serves the other strategies",
    )
    parser.add_argument(
        "--url",
        help="a real Odoo 17 + OpenG2P registry instead of the fake; a THROWAWAY database only: each "
        "strategy starts by deleting every registrant in it",
    )
    parser.add_argument("--db", help="its database (with --url)")
    parser.add_argument("--login", default="registrar", help="integration user (with --url)")
    parser.add_argument("--password", default="registrar")
    parser.add_argument("--admin-login", default="admin", help="resets and counts the registry (with --url)")
    parser.add_argument("--admin-password", default="admin")
    args = parser.parse_args()
    if args.url and not args.db:
        parser.error("--url needs --db")
    worker_counts = [int(w) for w in str(args.workers).split(",") if w.strip()]
    if args.costs == "off" or args.url:
        worker_counts = worker_counts[:1]  # without costs (or on a real server) the count changes nothing
    events = list(registry_log(households=args.households, members=args.members, areas=not args.url))
    plan = Plan.of(events)
    engines: list[tuple[int, Outcome]] = []

    def run_all(target: Target, workers: int, first: bool) -> None:
        engines.append(
            (workers, bench_engine(target, events, args.batch_size, args.load_size, args.in_flight))
        )
        if first:
            others.append(bench_per_record(target, plan))
            others.append(bench_plain_batches(target, plan))

    others: list[Outcome] = []  # one call per record, then plain batched creates
    if args.url:
        real_server = Target(
            args.url, args.db, args.login, args.password, admin=(args.admin_login, args.admin_password)
        )
        with counted_calls(real_server):
            run_all(real_server, 0, True)
    for index, workers in enumerate([] if args.url else worker_counts):
        with fake_openspp_process(args.costs, args.costs_scale, workers) as url:
            run_all(Target(url), workers, index == 0)
    per_record, batched = others
    real = args.costs == "real"
    households = len(plan.households)
    extras = ", ".join(
        f"{v} {k}" for k, v in engines[0][1].census.items() if k not in ("households", "individuals")
    )
    costs = (
        f"real-Odoo costs x{args.costs_scale:g} (connectors/openspp/fake/costs.py)" if real else "no costs"
    )
    server = f"real Odoo at {args.url}" if args.url else f"fake OpenSPP with {costs}"
    print(f"{plan.registrants} registrants in {households} households, {extras}; {server}")

    def served(workers: int) -> str:
        if args.url:
            return "the real server"
        return f"{workers} worker{'s' if workers > 1 else ''}" if real else "no costs"

    rows = [
        (
            f"engine (batch {args.batch_size}, load {args.load_size}, in flight {args.in_flight}), "
            f"{served(workers)}",
            outcome,
        )
        for workers, outcome in engines
    ]
    rows.append(("one call per record and link", per_record))
    rows.append((f"plain batched creates ({PLAIN_BATCH} a call, no xml-ids)", batched))
    width = max(len(label) for label, _ in rows)
    for label, outcome in rows:
        print(
            f"{label:<{width}}  {outcome.seconds:7.2f}s  {plan.registrants / outcome.seconds:6,.0f} "
            f"registrants/s  {outcome.calls:5} calls  {outcome.calls / households:6.2f} calls/household"
        )
    for _, outcome in [*engines[1:], (0, per_record), (0, batched)]:
        if outcome.census != engines[0][1].census:
            print(f"WARNING: {outcome.strategy} left {outcome.census}, the engine {engines[0][1].census}")
    per = ", ".join(f"{per_record.seconds / o.seconds:.2f}x with {served(w)}" for w, o in engines)
    plain = ", ".join(f"{batched.seconds / o.seconds:.2f} with {served(w)}" for w, o in engines)
    print(f"engine vs one call per record: {per} (goal >= 5x)")
    print(f"engine vs plain batched creates: {plain} (goal >= 0.75)")


if __name__ == "__main__":
    main()

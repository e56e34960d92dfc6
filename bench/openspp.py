"""Push throughput to OpenSPP: the engine with the OpenSPP connector against one call per record and per link,
as DataCollect's reference adapter does.

Both push the same mobile log (``connectors.openspp.sample.registry_log``: households with members, IDs
and bank accounts) to the fake OpenSPP running as its own process (as a remote system is), over loopback
HTTP, in this run; the fake is reset between the two. The engine run is ``run_connector`` with the shipped
``mappings/openspp.yaml``. The per-record run is the reference adapter's sequence (``datacollect.md``
§4.4): ``res.partner.create`` per household and per individual, ``res.partner.bank.create`` and
``g2p.reg.id.create`` per account and per document, and one ``res.partner.write`` on the household per
membership, one call at a time. It sends correct values (kinds, ID types and banks resolved by name once,
before the clock starts), so both runs end with the same records in OpenSPP. The figure that matters is
the ratio: the fake answers faster than a real OpenSPP, where each ``create`` costs ~80 ms and one in a
batch ~22 ms (``odoo-observed.md`` §2).

Usage: python bench/openspp.py [--households 2000] [--members 5] [--batch-size 500] [--load-size 100]
                              [--in-flight 2]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
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


@contextmanager
def fake_openspp_process() -> Iterator[str]:
    """``python -m connectors.openspp.fake`` in a child process; yields its URL once it answers."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    child = subprocess.Popen(
        [sys.executable, "-m", "connectors.openspp.fake", "--port", str(port)], stdout=subprocess.DEVNULL
    )
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


def reset(url: str) -> None:
    httpx.post(f"{url}/__fake__/reset", json={"seed": True}, timeout=30).raise_for_status()


def calls(url: str) -> int:
    return int(httpx.get(f"{url}/__fake__/stats", timeout=30).json()["calls"])


def bench_engine(
    url: str, events: list[FormSubmission], batch_size: int, load_size: int, in_flight: int
) -> tuple[float, int, int]:
    reset(url)
    before = calls(url)
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "dcsync.yaml"
        settings = {
            "url": url,
            "database": DATABASE,
            "username": REGISTRAR_LOGIN,
            "password": REGISTRAR_PASSWORD,
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
    return elapsed, report.push.counts.created, calls(url) - before


class ReferenceAdapter:
    """One call per record and per link, in the order DataCollect's OpenSPP adapter makes them."""

    def __init__(self, client: OdooClient):
        self.client = client
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

    def partner(self, payload: dict[str, Any], is_group: bool) -> int:
        vals = {k: v for k, v in payload.items() if k not in ("_membership_kind", "ids", "bank_accounts")}
        vals = {k: (False if v is None else v) for k, v in vals.items()}
        vals.update(is_registrant=True, is_group=is_group)
        if is_group:
            vals["kind"] = self.household_kind
        pid = self.client.create("res.partner", vals)
        for account in payload.get("bank_accounts") or []:
            bank = {"partner_id": pid, "acc_number": account["acc_number"]}
            if account.get("bank"):
                bank["bank_id"] = self.banks[account["bank"]]
            if account.get("acc_holder_name"):
                bank["acc_holder_name"] = account["acc_holder_name"]
            self.client.create("res.partner.bank", bank)
        for doc in payload.get("ids") or []:
            reg = {"partner_id": pid, "id_type": self.types[doc["id_type"]], "value": doc["value"]}
            if doc.get("expiry_date"):
                reg["expiry_date"] = doc["expiry_date"]
            self.client.create("g2p.reg.id", reg)
        return pid

    def link(self, household: int, individual: int, kind: str | None) -> None:
        member: dict[str, Any] = {"individual": individual}
        if kind:
            member["kind"] = [[6, 0, [self.kinds[kind]]]]
        self.client.write("res.partner", [household], {"group_membership_ids": [[0, 0, member]]})


def bench_per_record(url: str, events: list[FormSubmission]) -> tuple[float, int, int]:
    reset(url)
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
    with OdooClient(url, DATABASE, REGISTRAR_LOGIN, REGISTRAR_PASSWORD, timeout=60) as client:
        adapter = ReferenceAdapter(client)
        before = calls(url)
        started = time.perf_counter()
        created = 0
        for household in households:
            hid = adapter.partner(payloads[household.guid], True)
            created += 1
            pids = []
            for person in members[household.guid]:
                pids.append((adapter.partner(payloads[person.guid], False), person))
                created += 1
            for pid, person in pids:
                adapter.link(hid, pid, payloads[person.guid].get("_membership_kind"))
        elapsed = time.perf_counter() - started
    return elapsed, created, calls(url) - before


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--households", type=int, default=2_000)
    parser.add_argument("--members", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=500, help="records per connector push (engine)")
    parser.add_argument("--load-size", type=int, default=100, help="records per load call (connector)")
    parser.add_argument("--in-flight", type=int, default=2, help="concurrent requests (connector)")
    args = parser.parse_args()
    events = list(registry_log(households=args.households, members=args.members))
    with fake_openspp_process() as url:
        engine_s, engine_n, engine_calls = bench_engine(
            url, events, args.batch_size, args.load_size, args.in_flight
        )
        naive_s, naive_n, naive_calls = bench_per_record(url, events)
    engine_rate, naive_rate = engine_n / engine_s, naive_n / naive_s
    people = args.households * args.members
    print(f"{people} individuals in {args.households} households, with IDs and bank accounts")
    print(
        f"engine (batch {args.batch_size}, load {args.load_size}, in flight {args.in_flight}): "
        f"{engine_n} records in {engine_s:.2f}s "
        f"= {engine_rate:,.0f} records/s ({engine_calls} RPC calls)"
    )
    print(
        f"one call per record and link: {naive_n} records in {naive_s:.2f}s "
        f"= {naive_rate:,.0f} records/s ({naive_calls} RPC calls)"
    )
    print(f"ratio engine/per-record: {engine_rate / naive_rate:.1f}x")


if __name__ == "__main__":
    main()

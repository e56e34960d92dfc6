"""Pull sweeps for OpenSPP: households, individuals, then memberships changed since the cursor, each a
``(second, id)`` stream with a lag window behind the server clock (see the module docstring of
``connector.py`` and ``openspp.md`` §2.4)."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from connector_core.connector import PullPage, RemoteRecord
from connectors.openspp.catalog import Catalog, Catalogs
from connectors.openspp.client import ACCESS_ERROR, OdooClient, OdooPermanentError
from connectors.openspp.config import OpenSppConfig
from connectors.openspp.odoo_formats import EPOCH, add_seconds, format_datetime, to_iso_ms, utc_now
from connectors.openspp.records import (
    BANK_ACCOUNT,
    MEMBERSHIP,
    NO_ARCHIVE_FILTER,
    PARTNER,
    REG_ID,
    current_membership,
    many2one_id,
    many2one_name,
    normalise,
    read_memberships,
    ref_from_xmlid_name,
)

_BOOKKEEPING = ["is_registrant", "is_group", "active", "write_date"]


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


class Puller:
    """Reads pages of changed registrants; the cursor (JSON) holds the three streams' positions."""

    def __init__(self, client: OdooClient, config: OpenSppConfig, catalogs: Catalogs):
        self.client = client
        self.config = config
        self.catalogs = catalogs

    def pull(self, cursor: str | None, limit: int) -> PullPage:
        """Three streams, in this order in every sweep: households, individuals, memberships.

        Households come first so that an individual always finds its household already pulled: a
        membership change gives the group a later ``write_date`` than its members, so in one
        ``write_date`` order the members would arrive before their (new) household.
        """
        catalog = self.catalogs.get()
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
                pid = many2one_id(row["individual"])
                stamps[pid] = max(stamps.get(pid, ""), row["write_date"])
            wanted = [pid for pid in stamps if pid not in records]
            # the registrants' domain holds here too: a membership names any individual
            people = (
                self.client.search_read(
                    PARTNER,
                    [["id", "in", wanted], *base],
                    fields,
                    order="id asc",
                    context=NO_ARCHIVE_FILTER,
                )
                if wanted
                else []
            )
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
        context = NO_ARCHIVE_FILTER if model == PARTNER else None
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
        self, rows: list[dict[str, Any]], catalog: Catalog, stamps: dict[int, str]
    ) -> list[RemoteRecord]:
        if not rows:
            return []
        client = self.client
        ids = [row["id"] for row in rows]
        memberships = read_memberships(self.client, ids)
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
        now = format_datetime(client.server_time or utc_now())
        reg_by: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for r in reg_rows:
            type_id = many2one_id(r["id_type"])
            if type_id == catalog.reference_type:
                continue
            entry = {
                "id_type": catalog.id_type_names.get(type_id) or many2one_name(r["id_type"]),
                "value": r["value"] or None,
            }
            if r.get("expiry_date"):
                entry["expiry_date"] = r["expiry_date"]
            if r.get("description"):
                entry["description"] = r["description"]
            reg_by[many2one_id(r["partner_id"])].append(entry)
        bank_by: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for b in bank_rows:
            bank_by[many2one_id(b["partner_id"])].append(
                {
                    "acc_number": b["acc_number"],
                    "bank": catalog.bank_names.get(many2one_id(b["bank_id"])) if b.get("bank_id") else None,
                    "acc_holder_name": b.get("acc_holder_name") or None,
                }
            )
        fields = catalog.partner_fields
        out = []
        for row in rows:
            pid = row["id"]
            data = {
                name: normalise(row.get(name), fields.get(name, {}).get("type"))
                for name in catalog.pull_fields
            }
            # in creation order, which is the order of the list pushed, so a round trip keeps it
            data["ids"] = reg_by.get(pid, [])
            data["bank_accounts"] = bank_by.get(pid, [])
            parent = current_membership(memberships.get(pid, []), now)
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
                    parent_external_id=str(many2one_id(parent["group"])) if parent else None,
                )
            )
        return out

    def _refs(self, ids: list[int], reg_rows: list[dict[str, Any]], catalog: Catalog) -> dict[int, str]:
        """The dcsync guid each partner carries, if it was created through dcsync."""
        if self.config.reference == "reg_id":
            return {
                many2one_id(r["partner_id"]): r["value"]
                for r in reg_rows
                if many2one_id(r["id_type"]) == catalog.reference_type and r.get("value")
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

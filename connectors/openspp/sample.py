"""A mobile-style DataCollect log whose codes exist in the fake OpenSPP's seed database.

``connector_core.sample.mobile_log`` draws bank codes 1-5, and a real deployment's bank table is its own; the
fake seeds two banks, which ``mappings/lookups/openspp-banks.csv`` names as codes 1 and 2. This log is the
same mobile log (same guids, same forms, the keys OpenSPP has no field for kept), with bank codes folded
onto those two, and with more of what the connector carries: passports and bank accounts for some
individuals, areas for some households. Tests and ``bench/openspp.py`` use it, so both run the shipped
mapping over realistic forms without a record being refused for a code the fake does not know.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

from connector_core.events import FormSubmission
from connector_core.sample import mobile_log

AREA_IDS = (7, 8, 9, 10, 11)
"""The fake's seeded ``spp.area`` ids (two provinces and three districts)."""


def registry_log(
    households: int = 50, members: int = 4, updates: int = 0, seed: int = 7, *, areas: bool = True
) -> Iterator[FormSubmission]:
    """``mobile_log`` with codes the fake knows and more IDs and bank accounts (deterministic by seed).

    ``areas=False``: no household carries an area, as a log for a registry without OpenSPP's areas
    (the OpenG2P registry core) would; everything else is the same."""
    rng = random.Random(seed * 7919 + 1)
    extras: dict[str, dict[str, Any]] = {}
    for event in mobile_log(households=households, members=members, updates=updates, seed=seed):
        guid = event.entity_guid
        if guid not in extras:
            extras[guid] = _extras(event.data, rng)
            if not areas:
                extras[guid].pop("area_id", None)
        data = {**event.data, **extras[guid]}
        yield FormSubmission(
            guid=event.guid,
            entity_guid=guid,
            type=event.type,
            data=data,
            timestamp=event.timestamp,
            user_id=event.user_id,
            sync_level=event.sync_level,
        )


def _extras(data: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """Keys to set on every event of one entity, drawn once so that full-form resends agree."""
    extra: dict[str, Any] = {}
    if data.get("entityName") == "household":
        extra["bank_details"] = [
            {**account, "bank_name": str(1 + int(account["bank_name"]) % 2)}
            for account in data.get("bank_details") or []
        ]
        if rng.random() < 0.5:
            extra["area_id"] = str(rng.choice(AREA_IDS))
        return extra
    documents = list(data.get("document_ids") or [])
    if rng.random() < 0.3:
        documents.append(
            {
                "id_type": "passport",
                "id_number": f"{rng.choice('ABCDEFGHJKLMNPRSTUVWXYZ')}{rng.randint(10**6, 10**7 - 1):07d}",
                "id_issuance_date": "2021-03-01T00:00:00.000Z",
                "id_expiry_date": "2031-03-01T00:00:00.000Z",
            }
        )
    extra["document_ids"] = documents
    if rng.random() < 0.3:
        extra["bank_details"] = [
            {
                "bank_name": str(rng.randint(1, 2)),
                "account_type": "savings",
                "account_number": f"{rng.randint(10**9, 10**10 - 1)}",
                "account_owner_name": f"{data.get('first_name', '')} {data.get('last_name', '')}".strip(),
            }
        ]
    return extra

"""A realistic DataCollect log in the mobile style, generated deterministically.

The demo, the benchmarks and the tests need households and individuals shaped exactly like the mobile app's
forms (reference datacollect.md §1.7): ``create-individual`` for every form, ``entityName`` and
``parentGuid`` for the hierarchy, full-form resends on edit. A fixed seed gives the same guids every time, so
seeding a log twice appends nothing the second time.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from connector_core.events import FormSubmission, SyncLevel, format_timestamp

_FIRST = [
    "Amina",
    "Jose",
    "Maria",
    "Kwame",
    "Lina",
    "Omar",
    "Grace",
    "Tomas",
    "Ayesha",
    "Juan",
    "Fatima",
    "Samuel",
    "Rosa",
    "Ibrahim",
    "Mei",
    "Pedro",
    "Zara",
    "Daniel",
    "Nadia",
    "Felix",
]
_LAST = [
    "Santos",
    "Mensah",
    "Reyes",
    "Haddad",
    "Okafor",
    "Cruz",
    "Nguyen",
    "Diallo",
    "Garcia",
    "Bautista",
    "Mwangi",
    "Torres",
    "Abebe",
    "Ramos",
    "Kamau",
]
_START = datetime(2025, 1, 6, 8, 0, tzinfo=UTC)


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def mobile_log(
    households: int = 50, members: int = 4, updates: int = 20, seed: int = 7
) -> Iterator[FormSubmission]:
    """Households with ``members`` individuals each, then ``updates`` full-form edits of individuals."""
    rng = random.Random(seed)
    clock = _START
    individuals: list[tuple[str, dict]] = []

    def tick() -> str:
        nonlocal clock
        clock += timedelta(seconds=rng.randint(5, 90), milliseconds=rng.randint(0, 999))
        return format_timestamp(clock)

    for h in range(households):
        hh_guid = _uuid(rng)
        family = rng.choice(_LAST)
        hh_data = {
            "entityName": "household",
            "household_name": f"{family} household {h + 1}",
            "name": f"{family} household {h + 1}",
            "household_size": members,
            "belongs_to_ethnic_group": rng.choice(["yes", "no"]),
            "location_gps": json.dumps(
                {
                    "coords": {
                        "latitude": round(rng.uniform(-10, 15), 5),
                        "longitude": round(rng.uniform(95, 125), 5),
                    }
                }
            ),
            "bank_details": [
                {
                    "bank_name": str(rng.randint(1, 5)),
                    "account_type": "savings",
                    "account_number": str(rng.randint(10**9, 10**10 - 1)),
                    "account_owner_name": family,
                }
            ],
        }
        yield FormSubmission(
            guid=_uuid(rng),
            entity_guid=hh_guid,
            type="create-individual",
            data=hh_data,
            timestamp=tick(),
            user_id="admin",
            sync_level=SyncLevel.LOCAL,
        )
        for m in range(members):
            first = rng.choice(_FIRST)
            born = datetime(1950, 1, 1, tzinfo=UTC) + timedelta(days=rng.randint(0, 25000))
            person = {
                "entityName": "individual",
                "parentGuid": hh_guid,
                "first_name": first,
                "last_name": family,
                "name": f"{first} {family}",
                "gender": rng.choice(["female", "male"]),
                "date_of_birth": format_timestamp(born.replace(hour=0, minute=0, second=0)),
                "relationship": "1" if m == 0 else rng.choice(["2", "3", "4"]),
                "phone_number": f"+63{rng.randint(9000000000, 9999999999)}",
                "document_ids": [
                    {
                        "id_type": "national_id",
                        "id_number": f"NID-{rng.randint(10**6, 10**7)}",
                        "id_issuance_date": "2020-01-01T00:00:00.000Z",
                    }
                ],
            }
            guid = _uuid(rng)
            individuals.append((guid, person))
            yield FormSubmission(
                guid=_uuid(rng),
                entity_guid=guid,
                type="create-individual",
                data=person,
                timestamp=tick(),
                user_id="admin",
                sync_level=SyncLevel.LOCAL,
            )
    for _ in range(min(updates, len(individuals))):
        guid, person = rng.choice(individuals)
        person = {**person, "phone_number": f"+63{rng.randint(9000000000, 9999999999)}"}
        yield FormSubmission(
            guid=_uuid(rng),
            entity_guid=guid,
            type="update-individual",
            data=person,
            timestamp=tick(),
            user_id="admin",
            sync_level=SyncLevel.LOCAL,
        )

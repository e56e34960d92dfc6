"""What a phone recorded survives a trip to the registry and back through the reversible fields."""

from __future__ import annotations

import json
import uuid
from datetime import date
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from connector_core.mapping import MapContext, MappingSet

words = st.text(alphabet=st.characters(categories=("L",)), min_size=1, max_size=8)
names = st.lists(words, min_size=1, max_size=3).map(" ".join)
codes = st.text(alphabet="ABCDEFGHJKLMNPQRSTUVWXYZ0123456789-", min_size=1, max_size=12)
days = st.dates(min_value=date(1900, 1, 1), max_value=date(2099, 12, 31))
iso_midnight = days.map(lambda d: d.isoformat() + "T00:00:00.000Z")
coordinates = st.floats(min_value=-90, max_value=90, allow_nan=False, allow_infinity=False)
gps = st.tuples(coordinates, coordinates).map(
    lambda c: json.dumps({"coords": {"latitude": c[0], "longitude": c[1]}}, separators=(",", ":"))
)
guids = st.uuids().map(str)

documents = st.lists(
    st.fixed_dictionaries(
        {"id_type": st.sampled_from(["passport", "national_id", "birth_certificate"]), "id_number": codes},
        optional={"id_issuance_date": iso_midnight, "id_expiry_date": iso_midnight},
    ),
    max_size=3,
)
banks = st.lists(
    st.fixed_dictionaries(
        {"bank_name": st.integers(0, 999).map(str), "account_number": codes},
        optional={"account_type": st.sampled_from(["savings", "current"]), "account_owner_name": names},
    ),
    max_size=2,
)

individual_data = st.fixed_dictionaries(
    {"entityName": st.just("individual"), "first_name": names},
    optional={
        "parentGuid": guids,
        "last_name": names,
        "date_of_birth": iso_midnight,
        "gender": st.sampled_from(["female", "male", "other"]),
        "phone_number": st.from_regex(r"\+[1-9][0-9]{7,12}", fullmatch=True),
        "relationship": st.sampled_from(["1", "2", "3", "4"]),
        "location_gps": gps,
        "document_ids": documents,
        "bank_details": banks,
    },
)
household_data = st.fixed_dictionaries(
    {"entityName": st.just("household")},
    optional={
        "parentGuid": guids,
        "household_name": names,
        "household_size": st.integers(1, 30),
        "belongs_to_ethnic_group": st.sampled_from(["yes", "no"]),
        "location_gps": gps,
        "document_ids": documents,
        "bank_details": banks,
    },
)

LINKS = MapContext(
    link=lambda guid: f"ext-{guid}",
    resolve=lambda external_id, _name: external_id.removeprefix("ext-"),
)


def _entity(data: dict[str, Any]) -> dict[str, Any]:
    guid = str(uuid.uuid4())
    return {"id": guid, "guid": guid, "type": "individual", "version": 1, "data": data}


def _round_trip(shipped: MappingSet, data: dict[str, Any]) -> None:
    entity = _entity(data)
    mapping = shipped.for_entity(entity)
    assert mapping is not None
    pushed = mapping.push(entity, LINKS)
    assert pushed.errors == [], pushed.reason
    assert pushed.record is not None
    pulled = mapping.pull(pushed.record, LINKS)
    assert pulled.errors == [], pulled.reason
    assert pulled.record is not None
    for field in mapping.reversible_fields:
        key = field.entity_path.removeprefix("$.data.")
        assert pulled.record.get(key) == data.get(key), (field, pushed.record)
    assert pulled.record["entityName"] == data["entityName"]


@settings(max_examples=150, deadline=None)
@given(data=individual_data)
def test_individuals_come_back_unchanged(shipped: MappingSet, data: dict[str, Any]):
    _round_trip(shipped, data)


@settings(max_examples=100, deadline=None)
@given(data=household_data.filter(lambda d: "household_name" in d))
def test_households_come_back_unchanged(shipped: MappingSet, data: dict[str, Any]):
    _round_trip(shipped, data)


def test_the_reversible_fields_cover_the_registrant_core(shipped: MappingSet):
    individual = shipped.get("individual")
    assert individual is not None
    paths = {f.entity_path for f in individual.reversible_fields}
    assert {
        "$.data.first_name",
        "$.data.last_name",
        "$.data.date_of_birth",
        "$.data.gender",
        "$.data.location_gps",
        "$.data.document_ids",
        "$.data.bank_details",
        "$.data.parentGuid",
    } <= paths

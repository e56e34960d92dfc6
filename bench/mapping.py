"""Mapping throughput: the compiled engine vs hand-written Python vs naive per-record jsonpath.

    python bench/mapping.py [--records 100000] [--naive-records 300] [--seed 7]

Maps synthetic DataCollect individuals with the shipped ``individual`` mapping (19 output fields, three
collections, nested targets, dates, lookups, regexes, coords, a parent link) three ways in one run:

- compiled: ``EntityMapping.push`` as the sync engine calls it;
- hand-written: a Python function written for this mapping, producing identical output (checked on every
  record): the floor any engine is measured against;
- naive: the same transforms, but every field read with ``jsonpath_ng.parse(path).find(entity)`` per
  record, as a straightforward jsonpath-based mapper does. It is slow, so it maps a sample of
  ``--naive-records`` records and its per-record time is extrapolated (the output says so).

Goals (issue #mapping): compiled time <= 4x hand-written, and naive time >= 10x compiled. It then times
``dcsync mapping validate``'s work on generated mappings of 2,000 and 8,000 fields: the validation-scale
figure (8k / 2k time, goal <= 5, i.e. roughly linear; ``--validation-only`` prints just that).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from connector_core.mapping import MapContext, load_mapping  # noqa: E402

SHIPPED = REPO / "mappings" / "datacollect-registrant.yaml"

# ---- synthetic phone data ------------------------------------------------------------------------

FIRST = ["Jane", "John", "Amina", "Luis", "Mei", "Olu", "Sara", " Ravi ", "Ana", "Kofi"]
LAST = ["Doe", "Smith", "Okafor", "García", "Chen", "Mensah", "Lima", "Nguyen"]
GENDERS = ["female", "male", "Female", "other"]


def _iso_day(d: date) -> str:
    return d.isoformat() + "T00:00:00.000Z"


def make_entities(n: int, seed: int) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """``n`` individuals in DataCollect's EntityDoc shape, and the links of their households."""
    rng = random.Random(seed)
    households = [f"hh-{i:05d}-{rng.randrange(16**8):08x}" for i in range(max(1, n // 4))]
    links = {guid: f"ext-{i}" for i, guid in enumerate(households)}
    start = datetime(2025, 1, 1, tzinfo=UTC)
    out = []
    for i in range(n):
        guid = f"ind-{i:07d}-{rng.randrange(16**8):08x}"
        first, last = rng.choice(FIRST), rng.choice(LAST)
        data: dict[str, Any] = {
            "entityName": "individual",
            "parentGuid": rng.choice(households),
            "first_name": first,
            "last_name": last,
            "name": f"{first.strip()} {last}",
            "gender": rng.choice(GENDERS),
            "date_of_birth": _iso_day(date(1940, 1, 1) + timedelta(days=rng.randrange(30000))),
            "relationship": str(rng.randint(1, 4)),
        }
        if rng.random() < 0.7:
            lat, lon = round(rng.uniform(-40, 40), 6), round(rng.uniform(-120, 120), 6)
            data["location_gps"] = json.dumps(
                {"coords": {"latitude": lat, "longitude": lon}}, separators=(",", ":")
            )
        if rng.random() < 0.6:
            area, mid, end = rng.randint(100, 999), rng.randint(100, 999), rng.randint(1000, 9999)
            data["phone_number"] = f"+{rng.randint(1, 99)} ({area}) {mid}-{end}"
        if rng.random() < 0.4:
            data["email_address"] = f" {first.strip()}.{last}@Example.org "
        docs = []
        for _ in range(rng.randint(0, 2)):
            doc = {
                "id_type": rng.choice(["passport", "national_id"]),
                "id_number": f"N{rng.randrange(10**7)}",
            }
            doc["id_issuance_date"] = _iso_day(date(2010, 1, 1) + timedelta(days=rng.randrange(4000)))
            if rng.random() < 0.5:
                doc["id_expiry_date"] = _iso_day(date(2026, 1, 1) + timedelta(days=rng.randrange(4000)))
            docs.append(doc)
        if docs:
            data["document_ids"] = docs
        if rng.random() < 0.5:
            data["bank_details"] = [
                {
                    "bank_name": str(rng.randint(1, 40)),
                    "account_type": rng.choice(["savings", "current"]),
                    "account_number": str(rng.randrange(10**9)),
                    "account_owner_name": f"{first.strip()} {last}",
                }
            ]
        trainings = [
            {
                "training_type": rng.choice(["agri", "literacy"]),
                "training_start_date": "2024-01-0" + str(k + 1),
            }
            for k in range(rng.randint(0, 2))
        ]
        if trainings:
            data["training_records"] = trainings
        ts = start + timedelta(seconds=i)
        out.append(
            {
                "id": guid,
                "guid": guid,
                "type": "individual",
                "name": data["name"],
                "version": rng.randint(1, 5),
                "data": data,
                "lastUpdated": ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z",
            }
        )
    return out, links


# ---- the hand-written equivalent ------------------------------------------------------------------

GENDER = {"female": "F", "male": "M", "other": "O"}
RELATIONSHIP = {"1": "head", "2": "spouse", "3": "child", "4": "other"}
PHONE_JUNK = re.compile(r"[\s().-]")
PHONE_OK = re.compile(r"^\+?[0-9]{6,15}$")
SPACES = re.compile(r"\s+")


def _day(value: str) -> str:
    return datetime.fromisoformat(value.strip()).date().isoformat()


def _coords(value: str) -> dict[str, Any]:
    c = json.loads(value)["coords"]
    return {"latitude": float(c["latitude"]), "longitude": float(c["longitude"])}


def _ids(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for item in items:
        sub: dict[str, Any] = {}
        if "id_type" in item:
            sub["type"] = item["id_type"]
        if "id_number" in item:
            sub["value"] = item["id_number"]
        if item.get("id_issuance_date") is not None:
            sub["issued"] = _day(item["id_issuance_date"])
        if item.get("id_expiry_date") is not None:
            sub["expires"] = _day(item["id_expiry_date"])
        out.append(sub)
    return out


def _banks(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for item in items:
        sub: dict[str, Any] = {}
        if item.get("bank_name") is not None:
            sub["bank_id"] = int(item["bank_name"])
        for src, dst in (
            ("account_number", "number"),
            ("account_type", "type"),
            ("account_owner_name", "holder"),
        ):
            if src in item:
                sub[dst] = item[src]
        out.append(sub)
    return out


def handwritten(entity: dict[str, Any], link: Callable[[str], str | None]) -> dict[str, Any]:
    """The shipped individual push mapping, written by hand for valid data."""
    d = entity["data"]
    r: dict[str, Any] = {}
    r["given_name"] = d["first_name"].strip()
    if "last_name" in d:
        r["family_name"] = d["last_name"].strip()
    if "date_of_birth" in d:
        r["birthdate"] = _day(d["date_of_birth"])
    if "gender" in d:
        r["gender"] = GENDER[d["gender"].casefold()]
    if "phone_number" in d:
        r["phone"] = d["phone_number"]
    if "relationship" in d:
        r["relationship"] = RELATIONSHIP[d["relationship"]]
    if "location_gps" in d:
        r["location"] = _coords(d["location_gps"])
    if "document_ids" in d:
        r["ids"] = _ids(d["document_ids"])
    if "bank_details" in d:
        r["bank_accounts"] = _banks(d["bank_details"])
    if "parentGuid" in d:
        ext = link(d["parentGuid"])
        if ext is not None:
            r["parent_ref"] = ext
    r["kind"] = "individual"
    r["ref"] = entity["guid"]
    parts = [d[k] for k in ("first_name", "last_name") if d.get(k) is not None]
    if any(parts):
        r["name"] = SPACES.sub(" ", " ".join(parts).strip())
    if "email_address" in d:
        email = d["email_address"].strip().lower()
        if email:
            r["email"] = email
    if "phone_number" in d:
        m = PHONE_OK.search(PHONE_JUNK.sub("", d["phone_number"]))
        if m:
            r["phone_e164"] = m.group(0)
    if "training_records" in d:
        trainings = []
        for item in d["training_records"]:
            sub: dict[str, Any] = {}
            if "training_type" in item:
                sub["type"] = item["training_type"]
            if item.get("training_start_date") is not None:
                sub["start"] = _day(item["training_start_date"])
            if item.get("training_end_date") is not None:
                sub["end"] = _day(item["training_end_date"])
            trainings.append(sub)
        r["trainings"] = trainings
    meta: dict[str, Any] = {"version": entity["version"]}
    updated = datetime.fromisoformat(entity["lastUpdated"]).astimezone(UTC)
    meta["updated_at"] = updated.strftime("%Y-%m-%d %H:%M:%S")
    r["meta"] = meta
    return r


# ---- the naive jsonpath version ----------------------------------------------------------------------


def naive(entity: dict[str, Any], link: Callable[[str], str | None]) -> dict[str, Any]:
    """Same transforms, but every read is ``jsonpath_ng.parse(path).find(doc)`` at mapping time."""
    from jsonpath_ng import parse

    def get(doc: Any, path: str) -> Any:
        found = parse(path).find(doc)
        return found[0].value if found else None

    r: dict[str, Any] = {}
    first = get(entity, "$.data.first_name")
    r["given_name"] = first.strip()
    last = get(entity, "$.data.last_name")
    if last is not None:
        r["family_name"] = last.strip()
    if (v := get(entity, "$.data.date_of_birth")) is not None:
        r["birthdate"] = _day(v)
    if (v := get(entity, "$.data.gender")) is not None:
        r["gender"] = GENDER[v.casefold()]
    phone = get(entity, "$.data.phone_number")
    if phone is not None:
        r["phone"] = phone
    if (v := get(entity, "$.data.relationship")) is not None:
        r["relationship"] = RELATIONSHIP[v]
    if (v := get(entity, "$.data.location_gps")) is not None:
        r["location"] = _coords(v)

    def each(
        path: str, fields: list[tuple[str, str, Callable[[Any], Any] | None]]
    ) -> list[dict[str, Any]] | None:
        items = get(entity, path)
        if items is None:
            return None
        out = []
        for item in items:
            sub = {}
            for dst, src, fn in fields:
                v = get(item, src)
                if v is not None:
                    sub[dst] = fn(v) if fn else v
            out.append(sub)
        return out

    ids = each(
        "$.data.document_ids",
        [
            ("type", "$.id_type", None),
            ("value", "$.id_number", None),
            ("issued", "$.id_issuance_date", _day),
            ("expires", "$.id_expiry_date", _day),
        ],
    )
    if ids is not None:
        r["ids"] = ids
    banks = each(
        "$.data.bank_details",
        [
            ("bank_id", "$.bank_name", int),
            ("number", "$.account_number", None),
            ("type", "$.account_type", None),
            ("holder", "$.account_owner_name", None),
        ],
    )
    if banks is not None:
        r["bank_accounts"] = banks
    if (v := get(entity, "$.data.parentGuid")) is not None and (ext := link(v)) is not None:
        r["parent_ref"] = ext
    r["kind"] = "individual"
    r["ref"] = get(entity, "$.guid")
    parts = [p for p in (get(entity, "$.data.first_name"), get(entity, "$.data.last_name")) if p is not None]
    if any(parts):
        r["name"] = SPACES.sub(" ", " ".join(parts).strip())
    if (v := get(entity, "$.data.email_address")) is not None and v.strip():
        r["email"] = v.strip().lower()
    if (v := get(entity, "$.data.phone_number")) is not None and (
        m := PHONE_OK.search(PHONE_JUNK.sub("", v))
    ):
        r["phone_e164"] = m.group(0)
    trainings = each(
        "$.data.training_records",
        [
            ("type", "$.training_type", None),
            ("start", "$.training_start_date", _day),
            ("end", "$.training_end_date", _day),
        ],
    )
    if trainings is not None:
        r["trainings"] = trainings
    updated = datetime.fromisoformat(get(entity, "$.lastUpdated")).astimezone(UTC)
    r["meta"] = {"version": get(entity, "$.version"), "updated_at": updated.strftime("%Y-%m-%d %H:%M:%S")}
    return r


# ---- the run ---------------------------------------------------------------------------------------------


def _time(fn: Callable[[], list[Any]]) -> tuple[float, list[Any]]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def wide_mapping(fields: int) -> str:
    """A mapping of ``fields`` reversible fields (flat and nested targets, some with a pipe): what an
    integrator's generated mapping of a large form looks like, for the validation-scale figure."""
    lines = ["version: 1", "mappings:", "  individual:", "    match: {entity_name: individual}"]
    lines.append("    fields:")
    for i in range(fields):
        target = f"group_{i % 97}.field_{i}" if i % 3 else f"field_{i}"
        if i % 5 == 0:
            lines.append(f"      {target}: {{path: $.data.answer_{i}, pipe: [trim]}}")
        else:
            lines.append(f"      {target}: $.data.answer_{i}")
    return "\n".join(lines) + "\n"


def validation_seconds(fields: int) -> float:
    """Best of two: validating (parse, compile, cross-field checks) a mapping of ``fields`` fields."""
    from connector_core.mapping.validate import check_text

    text = wide_mapping(fields)
    best = float("inf")
    for _ in range(2):
        start = time.perf_counter()
        issues = check_text(text, f"<{fields} fields>")
        best = min(best, time.perf_counter() - start)
        if issues:
            raise SystemExit(f"error: the generated mapping does not validate: {issues[0]}")
    return best


def validation_scale() -> bool:
    """Validation time must grow about linearly with the field count (it once grew with its square)."""
    small, large = validation_seconds(2000), validation_seconds(8000)
    ratio = large / small
    ok = ratio <= 5.0
    print(f"  validate 2,000 fields : {small:8.3f} s")
    print(f"  validate 8,000 fields : {large:8.3f} s")
    print(f"  validation-scale (8k / 2k fields) : {ratio:5.2f}x   (goal <= 5)    {'PASS' if ok else 'FAIL'}")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--naive-records", type=int, default=300)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--validation-only", action="store_true", help="Only the validation-scale figure (a few seconds)."
    )
    args = parser.parse_args(argv)
    if args.validation_only:
        print("mapping validation benchmark")
        return 0 if validation_scale() else 1

    mapping = load_mapping(SHIPPED).get("individual")
    assert mapping is not None
    entities, links = make_entities(args.records, args.seed)
    ctx = MapContext(link=links.get)
    link = links.get
    push = mapping.push
    fields = len(mapping.push_fields)
    collections = sum(1 for p in mapping.push_fields if p.each is not None)
    nested = sum(1 for p in mapping.push_fields if len(p.keys) > 1)
    print(
        f"mapping benchmark: {args.records:,} DataCollect individuals through {SHIPPED.name} 'individual' "
        f"({fields} fields: {collections} collections, {nested} nested targets)"
    )

    warm = entities[: min(2000, len(entities))]
    for e in warm:
        push(e, ctx)
        handwritten(e, link)

    # best of two alternating runs each, so neither side pays alone for a garbage collection
    t_hand, hand_out = _time(lambda: [handwritten(e, link) for e in entities])
    t_comp, comp_results = _time(lambda: [push(e, ctx) for e in entities])
    t_hand = min(t_hand, _time(lambda: [handwritten(e, link) for e in entities])[0])
    t_comp = min(t_comp, _time(lambda: [push(e, ctx) for e in entities])[0])
    bad = [r for r in comp_results if r.errors]
    if bad:
        print(f"error: the compiled mapping reported errors, e.g. {bad[0].reason}")
        return 1
    comp_out = [r.record for r in comp_results]
    if comp_out != hand_out:
        first = next(i for i, (a, b) in enumerate(zip(comp_out, hand_out, strict=True)) if a != b)
        print(f"error: outputs differ at record {first}:")
        print(f"  compiled: {comp_out[first]}\n  hand:     {hand_out[first]}")
        return 1

    sample = entities[: min(args.naive_records, len(entities))]
    t_naive_sample, naive_out = _time(lambda: [naive(e, link) for e in sample])
    if naive_out != hand_out[: len(sample)]:
        print("error: the naive version's output differs from the hand-written one")
        return 1
    per_naive = t_naive_sample / len(sample)
    t_naive = per_naive * len(entities)

    n = len(entities)
    print(f"  compiled engine : {t_comp:8.3f} s   {n / t_comp:12,.0f} records/s")
    print(f"  hand-written    : {t_hand:8.3f} s   {n / t_hand:12,.0f} records/s")
    print(
        f"  naive jsonpath  : {t_naive:8.3f} s   {1 / per_naive:12,.0f} records/s   "
        f"(extrapolated: timed {len(sample):,} records, {per_naive * 1000:.2f} ms each)"
    )
    slow = t_comp / t_hand
    fast = t_naive / t_comp
    ok_slow, ok_fast = slow <= 4.0, fast >= 10.0
    print(f"  compiled / hand-written time : {slow:6.2f}x   (goal <= 4x)   {'PASS' if ok_slow else 'FAIL'}")
    print(f"  naive / compiled time        : {fast:6.1f}x   (goal >= 10x)  {'PASS' if ok_fast else 'FAIL'}")
    print(
        f"  outputs identical: compiled == hand-written on all {n:,}; "
        f"naive == hand-written on {len(sample):,}"
    )
    ok_scale = validation_scale()
    return 0 if ok_slow and ok_fast and ok_scale else 1


if __name__ == "__main__":
    raise SystemExit(main())

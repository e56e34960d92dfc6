"""What the OpenSPP connector's push, pull and lookups share: model names, the xml-id form of a guid, and
Odoo's values as ``read`` gives them and ``load`` takes them."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from connectors.openspp.client import OdooClient

PARTNER = "res.partner"
MEMBERSHIP = "g2p.group.membership"
REG_ID = "g2p.reg.id"
BANK_ACCOUNT = "res.partner.bank"
NO_ARCHIVE_FILTER = {"active_test": False}
IN_CHUNK = 500
"""Ids per ``in`` domain: a long list is read in slices."""

# -- references ---------------------------------------------------------------------------------------
_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


def xmlid_name(ref: str) -> str:
    """The xml-id name for a guid: the guid itself when it is made of safe characters, else hex."""
    if ref and set(ref) <= _SAFE and not ref.startswith("hex_"):
        return ref
    return "hex_" + ref.encode().hex()


def ref_from_xmlid_name(name: str) -> str | None:
    if name.startswith("hex_"):
        try:
            return bytes.fromhex(name[4:]).decode()
        except ValueError:
            return None
    return name


def many2one_id(value: Any) -> int:
    """A many2one as Odoo returns it (``[id, name]``, an id, or ``false``) to its id (0 for none)."""
    if isinstance(value, list | tuple):
        return int(value[0]) if value else 0
    if isinstance(value, bool) or value is None:
        return 0
    return int(value)


def many2one_name(value: Any) -> str | None:
    if isinstance(value, list | tuple) and len(value) > 1:
        return str(value[1])
    return None


def is_ended(membership: dict[str, Any], now: str) -> bool:
    """Ended as OpenG2P counts it at the server time ``now`` (``YYYY-MM-DD HH:MM:SS``, UTC).

    ``is_ended`` is stored when ``ended_date`` is written: an end date still ahead leaves the membership
    active (a registrar's planned departure; observed), and nothing recomputes it once the date passes,
    so the date is compared with ``now`` as well.
    """
    ended = membership.get("ended_date")
    return bool(membership.get("is_ended")) or (bool(ended) and str(ended)[:19] <= now)


def current_membership(memberships: list[dict[str, Any]], now: str) -> dict[str, Any] | None:
    active = [m for m in memberships if not is_ended(m, now)]
    if not active:
        return None
    return sorted(active, key=lambda m: (m.get("start_date") or "", m["id"]))[-1]


def normalise(value: Any, ftype: str | None) -> Any:
    if ftype == "boolean":
        return bool(value)
    if ftype == "many2one":
        return many2one_id(value) or None
    if ftype in ("one2many", "many2many"):
        return list(value or [])
    if value is False:
        return None
    return value


def same_value(remote: Any, local: Any, ftype: str | None) -> bool:
    """Does OpenSPP already hold ``local``? Compares in Odoo's read format."""
    if ftype == "many2one":
        return (many2one_id(remote) or None) == (many2one_id(local) or None)
    if ftype == "boolean":
        return bool(remote) == bool(local)
    if ftype in ("one2many", "many2many"):
        if isinstance(local, list) and len(local) == 1 and isinstance(local[0], list) and local[0][:1] == [6]:
            return sorted(remote or []) == sorted(local[0][2])
        return False
    if ftype in ("integer", "float"):
        return (remote or 0) == (local or 0)
    norm_remote = None if remote in (False, None, "") else remote
    norm_local = None if local in (False, None, "") else local
    return bool(norm_remote == norm_local)


def load_cell(value: Any, ftype: str | None) -> str:
    """A value in ``load()``'s import dialect: every cell a string, ``""`` for empty."""
    if ftype == "boolean":
        return "1" if value else "0"
    if value is None or value is False:
        return ""
    if ftype == "many2many":
        if isinstance(value, list) and value and isinstance(value[0], list):
            ids = value[-1][2] if value[-1][0] == 6 else []
        else:
            ids = value
        return ",".join(str(i) for i in ids)
    return str(value)


def read_memberships(
    client: OdooClient, partner_ids: Iterable[int | None]
) -> dict[int, list[dict[str, Any]]]:
    """Every membership (ended ones too) of these individuals, by individual."""
    ids = sorted({p for p in partner_ids if p is not None})
    out: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for start in range(0, len(ids), IN_CHUNK):
        rows = client.search_read(
            MEMBERSHIP,
            [["individual", "in", ids[start : start + IN_CHUNK]]],
            ["group", "individual", "kind", "start_date", "ended_date", "is_ended"],
            order="id asc",
        )
        for row in rows:
            out[many2one_id(row["individual"])].append(row)
    return out


def sanitized_account_number(value: Any) -> Any:
    """A bank account number as ``res.partner.bank``'s unique constraint compares it (Odoo's
    ``sanitize_account_number``: non-word characters removed, upper-cased): ``KE-12 345`` is ``KE12345``."""
    return re.sub(r"\W+", "", value).upper() if isinstance(value, str) else value

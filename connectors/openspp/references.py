"""Finding the partners dcsync created by their reference (an xml-id ``dcsync.<guid>``, or a registrant ID
holding the guid): after an ambiguous failure, before a ``reg_id`` create, for a household by its guid."""

from __future__ import annotations

from collections.abc import Sequence

from connector_core.connector import ConnectorError, SystemicError
from connectors.openspp.catalog import Catalogs
from connectors.openspp.client import ACCESS_ERROR, OdooClient, OdooPermanentError
from connectors.openspp.config import OpenSppConfig
from connectors.openspp.records import (
    IN_CHUNK,
    NO_ARCHIVE_FILTER,
    PARTNER,
    REG_ID,
    many2one_id,
    xmlid_name,
)


class References:
    """Partner ids of the refs OpenSPP holds, found through the reference (xml-id or guid ID).

    With ``reference: xmlid`` a registrar cannot search ``ir.model.data``, so each ref is checked with
    ``check_object_reference``; a ref whose check failed transiently is left out rather than failing
    the whole lookup. That is safe because an xml-id create is a ``load()`` upsert: re-sending it
    updates the record it created."""

    def __init__(self, client: OdooClient, config: OpenSppConfig, catalogs: Catalogs):
        self.client = client
        self.config = config
        self.catalogs = catalogs

    def find(self, refs: Sequence[str]) -> tuple[dict[str, str], set[str]]:
        """``(found, unchecked)``: refs held by OpenSPP, and refs whose presence is unknown."""
        if not refs:
            return {}, set()
        catalog = self.catalogs.get()
        found: dict[str, str] = {}
        unique = list(dict.fromkeys(refs))
        if self.config.reference == "reg_id":
            for start in range(0, len(unique), IN_CHUNK):
                rows = self.client.search_read(
                    REG_ID,
                    [
                        ["id_type", "=", catalog.reference_type],
                        ["value", "in", unique[start : start + IN_CHUNK]],
                    ],
                    ["partner_id", "value"],
                    order="id asc",
                )
                for row in rows:
                    found.setdefault(row["value"], str(many2one_id(row["partner_id"])))
            return found, set()
        module = self.config.xmlid_module
        names = {xmlid_name(ref): ref for ref in unique}
        if catalog.xmlids_readable is not False:
            try:
                listed = list(names)
                for start in range(0, len(listed), IN_CHUNK):
                    rows = self.client.search_read(
                        "ir.model.data",
                        [
                            ["module", "=", module],
                            ["model", "=", PARTNER],
                            ["name", "in", listed[start : start + IN_CHUNK]],
                        ],
                        ["name", "res_id"],
                        order="id asc",
                    )
                    for row in rows:
                        found[names[row["name"]]] = str(row["res_id"])
                catalog.xmlids_readable = True
                return found, set()
            except OdooPermanentError as exc:
                if exc.odoo_name != ACCESS_ERROR:
                    raise
                catalog.xmlids_readable = False
        unchecked: set[str] = set()
        for name, ref in names.items():
            try:
                target = self.client.xmlid_target(f"{module}.{name}", context=NO_ARCHIVE_FILTER)
            except SystemicError:
                raise
            except ConnectorError as exc:
                if not exc.transient:
                    raise
                unchecked.add(ref)
                continue
            if target is not None and target[0] == PARTNER and target[1]:
                found[ref] = str(target[1])
        return found, unchecked

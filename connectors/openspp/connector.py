"""The OpenSPP connector: households, individuals, memberships, registrant IDs and bank accounts over Odoo
JSON-RPC, both ways.

Push payload contract
---------------------
``PushRecord.payload`` is an already-mapped ``res.partner`` value dict in OpenSPP's names and wire formats
(``given_name``, ``birthdate: "YYYY-MM-DD"``, ``gender: "Female"``, ...), plus three reserved keys:

``_membership_kind``
    Individuals only: the membership kind *name* (``"Head"``, ``"Spouse"``, ...) for the membership in the
    household. Resolved to the kind's id on the target database (case-insensitive); ``None`` means no
    kind. Absent: an existing membership's kinds are left as they are.
``ids``
    ``[{"id_type": "<ID type name>", "value": str, "expiry_date"?: "YYYY-MM-DD", "description"?: str,
    "status"?: "valid"|"invalid"}]`` -> ``g2p.reg.id``; ``id_type`` is resolved by name. One ID per type;
    IDs are created or updated, never deleted (registrars may not unlink). Absent: IDs are not touched.
``bank_accounts``
    ``[{"acc_number": str, "bank"?: "<bank name or BIC>", "acc_holder_name"?: str}]`` ->
    ``res.partner.bank``, matched by account number; created or updated, never deleted.

Other values: a many2one may be an integer id, or a string that names exactly one target record (resolved
with ``name_search``); ``[id, name]`` pairs as Odoo returns them are accepted too. Keys unknown to
``res.partner`` (from ``fields_get``) and other ``_``-prefixed keys are rejected with Odoo's own message.

``entity_name`` says what the record is: ``household`` (config ``household_entity``) becomes a group
(``is_registrant``, ``is_group``, ``kind`` = the household group kind resolved by xml-id or name),
``individual`` an individual. An individual's household is ``parent_external_id`` (the group's partner
id), or ``parent_ref`` (the household's guid: resolved from the same batch or by reference lookup). The
engine should always pass the current parent: an individual pushed without one is taken to have left every
household, and its memberships are ended.

Deletes archive the partner (``active = false``) and end the individual's memberships (``ended_date``);
registrars may not unlink, so nothing is ever unlinked. An ``unlink`` record (DataCollect's
``remove-member``: ``external_id`` the member, ``parent_external_id`` the household) ends that membership
only; it stays a row, made active again when the member is sent with that household later.

Idempotency: every partner carries a stable reference to its DataCollect guid. By default an xml-id
``dcsync.<guid>`` written through ``res.partner.load`` (which a registrar may call although it has no
rights on ``ir.model.data``), so a re-sent create updates the record it created; or, with
``reference: reg_id``, a ``g2p.reg.id`` of a configured ID type whose value is the guid, looked up before
every create. :meth:`OpenSppConnector.lookup` finds records by that reference after an ambiguous failure.

Layout: this module is the protocol-facing shell; ``catalog.py`` (the registry's setup, once per run),
``push.py`` (push planning), ``pull.py`` (pull sweeps) and ``references.py`` (lookups by guid) do the work.

Pull
----
Households, individuals and memberships changed since the cursor are read, in that order in every sweep
(so a member never arrives before its household), in ``write_date asc, id asc`` order with an explicit
field list, a ``(second, id)`` cursor per stream and a lag window (``openspp.md`` §2.4): each sweep starts
from a floor that trails the server clock by ``lag_seconds``, so a transaction that committed late behind
the cursor is read on the next sweep. Records inside the window are delivered again; the engine's snapshot
comparison makes that a no-op. Pulled records use the push payload's shape (``ids`` and ``bank_accounts``
in creation order, ``_membership_kind``), many2one pairs become ids and Odoo's ``false`` becomes ``None``
(booleans stay booleans), and an individual's active membership becomes ``parent_external_id``.
"""

from __future__ import annotations

from collections.abc import Sequence

import httpx
from pydantic import BaseModel

from connector_core.connector import (
    Capability,
    CheckResult,
    Connector,
    ConnectorConfig,
    ConnectorError,
    FieldSpec,
    PullPage,
    PushRecord,
    PushResult,
)
from connector_core.retry import RetryPolicy
from connectors.openspp.catalog import Catalogs
from connectors.openspp.client import OdooClient
from connectors.openspp.config import DEFAULT_PULL_FIELDS, OpenSppConfig
from connectors.openspp.pull import Puller
from connectors.openspp.push import Pusher
from connectors.openspp.records import ref_from_xmlid_name, xmlid_name
from connectors.openspp.references import References

__all__ = [
    "DEFAULT_PULL_FIELDS",
    "OpenSppConfig",
    "OpenSppConnector",
    "ref_from_xmlid_name",
    "xmlid_name",
]


class OpenSppConnector(Connector):
    type_name = "openspp"
    config_model = OpenSppConfig
    capabilities = frozenset({Capability.PUSH, Capability.PULL})
    description = "OpenSPP 17 (Odoo 17 + OpenG2P registry) over Odoo JSON-RPC"
    pulls_households = True  # every pulled individual carries its current membership, or none

    config: OpenSppConfig

    def __init__(self, name: str, config: ConnectorConfig, *, http: httpx.Client | None = None):
        if not isinstance(config, OpenSppConfig):
            raw = config.model_dump() if isinstance(config, BaseModel) else config
            config = OpenSppConfig.model_validate(raw)
        super().__init__(name, config)
        cfg = self.config
        self.client = OdooClient(
            cfg.url,
            cfg.database,
            cfg.username,
            cfg.secret,
            http=http,
            timeout=cfg.timeout,
            connect_timeout=cfg.connect_timeout,
            login_cooldown=cfg.login_cooldown,
            verify=cfg.verify_tls,
        )
        self.catalogs = Catalogs(self.client, cfg, name)
        self.references = References(self.client, cfg, self.catalogs)
        self.pusher = Pusher(self.client, cfg, name, self.catalogs, self.references)
        self.puller = Puller(self.client, cfg, self.catalogs)

    @property
    def retry_policy(self) -> RetryPolicy | None:
        """The run's retry policy: each read (catalog, lookups, current state) is retried on its own
        under it, so one lost answer does not cost a batch its attempt. Set by whoever runs the
        connector; ``None`` tries each call once and leaves retries to the engine's batch retries."""
        return self.client.retry_policy

    @retry_policy.setter
    def retry_policy(self, policy: RetryPolicy | None) -> None:
        self.client.retry_policy = policy

    def close(self) -> None:
        self.pusher.close()
        self.client.close()

    # -- check ---------------------------------------------------------------------------------------
    def check(self) -> CheckResult:
        try:
            version = self.client.version()
            uid = self.client.authenticate(force=True)
            catalog = self.catalogs.get(refresh=True)
        except ConnectorError as exc:
            return CheckResult(False, exc.message)
        details = {
            "server_version": version.get("server_version"),
            "uid": uid,
            "household_kind": catalog.household_kind,
            "membership_kinds": sorted(catalog.kind_names.values()),
            "id_types": sorted(catalog.id_type_names.values()),
            "reference": self.config.reference,
        }
        return CheckResult(
            True,
            f"connected to OpenSPP {version.get('server_version', '?')} as {self.config.username!r}",
            details,
        )

    def describe_schema(self) -> dict[str, dict[str, FieldSpec]]:
        """``res.partner`` as ``fields_get`` describes it, plus the payload's reserved keys, whose choices
        are this registry's membership kinds, ID types and banks (what ``dcsync check`` verifies)."""
        return self.catalogs.describe_schema()

    def push(self, batch: Sequence[PushRecord]) -> list[PushResult]:
        return self.pusher.push(batch)

    def lookup(self, refs: Sequence[str]) -> dict[str, str]:
        """Partner ids of the refs OpenSPP holds, found through the reference (xml-id or guid ID); see
        :class:`References`."""
        found, _unchecked = self.references.find(refs)
        return found

    def pull(self, cursor: str | None, limit: int) -> PullPage:
        """Three streams, in this order in every sweep: households, individuals, memberships.

        Households come first so that an individual always finds its household already pulled: a
        membership change gives the group a later ``write_date`` than its members, so in one
        ``write_date`` order the members would arrive before their (new) household."""
        return self.puller.pull(cursor, limit)

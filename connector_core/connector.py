"""What a connector is: protocol code for one external system, and nothing else.

The engine owns correctness (checkpoints, links, ordering, dead letters, retries); a connector only turns
:class:`PushRecord` batches into its system's requests, says per record what happened, pages through the
remote side on ``pull`` and classifies its failures as transient or permanent. That split is what lets a
plugin author write a connector in an afternoon without re-deriving the sync rules.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from connector_core.retry import RetryPolicy


class Capability(StrEnum):
    PUSH = "push"
    PULL = "pull"


class Operation(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    UNLINK = "unlink"
    """End a membership: ``ref`` is the member, ``parent_ref``/``parent_external_id`` the group."""


class ConnectorConfig(BaseModel):
    """Base for connector settings: unknown keys are mistakes, so they are rejected with their name."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True, slots=True)
class PushRecord:
    """One entity change to deliver.

    ``ref`` is the stable idempotency reference (the entity guid): a connector must write it somewhere the
    remote keeps (an external-id field, an xml-id, a header) so :meth:`Connector.lookup` can find a record
    created by a request whose answer was lost.
    """

    ref: str
    operation: Operation
    entity_name: str | None
    payload: dict[str, Any]
    external_id: str | None = None
    parent_ref: str | None = None
    parent_external_id: str | None = None


PART_SEPARATOR = "#"
"""Joins an entity guid and a part name into a sub-record's dead letter ref: ``<guid>#bank_accounts:123``."""


def part_ref(ref: str, part: str) -> str:
    """The dead letter ref of sub-record ``part`` of the record ``ref``."""
    return f"{ref}{PART_SEPARATOR}{part}"


def split_part_ref(ref: str) -> tuple[str, str | None]:
    """``(entity guid, part name)`` of a dead letter ref; the part is ``None`` for a whole record's letter."""
    guid, sep, part = ref.partition(PART_SEPARATOR)
    return (guid, part) if sep else (ref, None)


@dataclass(frozen=True, slots=True)
class PartResult:
    """The outcome of one optional sub-record of a delivered record (an ID document, a bank account).

    A remote that keeps such sub-records apart from the record (OpenSPP's ``g2p.reg.id``) may refuse one of
    them -- an unknown bank, a number of the wrong format -- while the registrant itself is fine. Holding
    the whole record (and the members waiting behind a household) for that would be wrong, so the record
    is delivered and only the sub-record is dead-lettered, as ``<ref>#<part>``. Replaying that letter sends
    the record again, so the connector must deliver sub-records idempotently (match them by a key, as
    ``part`` does), and a part delivered later (by a replay or a later push) closes its letter.

    ``part`` names the sub-record stably within its record (``bank_accounts:<acc_number>``,
    ``ids:<ID type>``), never by list position; ``error`` is ``None`` when it was delivered.
    """

    part: str
    error: str | None = None
    path: tuple[str | int, ...] = ()
    """Where the sub-record sits in the record's payload (``("bank_accounts", 0)``). A refused part found
    there is left out of the link's snapshot: the remote does not hold it, so a pull must not read its
    absence as a removal made on the remote, and the next push offers it again (a part refused again
    while its letter is open is not counted twice). Empty: the snapshot keeps the whole payload."""


@dataclass(frozen=True, slots=True)
class PushResult:
    """The outcome of one :class:`PushRecord`; ``transient`` failures are retried, others dead-lettered."""

    ref: str
    ok: bool
    external_id: str | None = None
    error: str | None = None
    transient: bool = False
    retry_after: float | None = None
    """For a transient failure: seconds the remote asked us to wait (its ``Retry-After``)."""
    unsent: bool = False
    """For a transient failure: the request for this record never left (see ``ConnectorError.unsent``)."""
    parts: tuple[PartResult, ...] = ()
    """For a delivered record: its optional sub-records, each delivered or refused on its own (see
    :class:`PartResult`). A refused part is dead-lettered as ``<ref>#<part>``; a delivered part closes such
    a letter. Parts not listed are left as they are."""

    @classmethod
    def delivered(cls, ref: str, external_id: str | None, parts: Sequence[PartResult] = ()) -> PushResult:
        return cls(ref=ref, ok=True, external_id=external_id, parts=tuple(parts))

    @classmethod
    def rejected(
        cls,
        ref: str,
        error: str,
        *,
        transient: bool = False,
        retry_after: float | None = None,
        unsent: bool = False,
    ) -> PushResult:
        return cls(
            ref=ref, ok=False, error=error, transient=transient, retry_after=retry_after, unsent=unsent
        )


@dataclass(frozen=True, slots=True)
class RemoteRecord:
    """One record as the remote holds it, already unwrapped from the protocol.

    ``ref`` is the entity guid the remote stored with the record when dcsync created it, if any;
    ``version`` is whatever the remote uses to tell two states of a record apart (write_date, a counter).
    """

    external_id: str
    data: dict[str, Any]
    entity_name: str | None = None
    ref: str | None = None
    updated_at: str | None = None
    version: str | None = None
    deleted: bool = False
    parent_external_id: str | None = None


@dataclass(frozen=True, slots=True)
class PullPage:
    """A page of remote records and the cursor to resume after it (opaque to the engine)."""

    records: list[RemoteRecord]
    next_cursor: str | None
    has_more: bool = False


@dataclass(frozen=True, slots=True)
class CheckResult:
    ok: bool
    message: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One field the remote accepts, as :meth:`Connector.describe_schema` describes it.

    ``dcsync check`` compares every push target of a mapping with these, so a field the remote lacks, a
    value of the wrong type or a code the registry is not set up for is found before a run, not as one dead
    letter per record.
    """

    type: str = "any"
    """The values it takes, in the mapping's type names: ``str``, ``int``, ``float``, ``bool``, ``date``
    and ``datetime`` (text in the remote's format), ``reference`` (an id, or a name the connector resolves),
    ``list``, ``dict``, or ``any`` (not checked)."""
    remote_type: str = ""
    """The remote's own name for the type (``many2one spp.area``), shown in messages."""
    choices: tuple[str, ...] | None = None
    """The only values the remote accepts (a selection, the names of configured records); ``None``: any."""
    ignore_case: bool = False
    """The connector matches ``choices`` without regard to case."""
    choices_fix: str = ""
    """What an operator does to add a missing choice; ``{value}`` stands for it."""
    fields: Mapping[str, FieldSpec] | None = None
    """For a list of objects: the fields of each item."""
    computed: bool = False
    """The remote computes it and keeps no value sent to it (Odoo drops a value for a non-stored computed
    field): never a push target."""


class ConnectorError(Exception):
    """A failure talking to the remote. ``transient`` says whether a retry can help.

    ``progress`` says that the attempt that failed still settled part of its work (some records of a
    batch answered): the retry budget then starts again, so a registry that takes a few records per
    request is drained rather than given up on, within ``max_elapsed``.

    ``unsent`` says that the batch's records cannot have been applied: no request carrying them left this
    machine (the connection was refused: :func:`connector_core.http.never_sent`), or the remote refused it
    before doing any work (a refused login). The engine then drops their create intents instead of
    warning, on the next run, that those creates may have reached the remote.
    """

    transient: bool = False
    systemic: bool = False
    """Not about any one record (see :class:`SystemicError`): the run stops, nothing is dead-lettered."""

    def __init__(
        self,
        message: str,
        *,
        transient: bool | None = None,
        retry_after: float | None = None,
        progress: bool = False,
        unsent: bool = False,
    ):
        super().__init__(message)
        self.message = message
        if transient is not None:
            self.transient = transient
        self.retry_after = retry_after
        self.progress = progress
        self.unsent = unsent


class TransientError(ConnectorError):
    transient = True


class PermanentError(ConnectorError):
    transient = False


class SystemicError(PermanentError):
    """A failure that is about the run, not about a record: a database that does not exist, a user without
    the rights to read the registry's metadata, a schema the mapping does not fit.

    Raised from ``push``, ``pull``, ``lookup`` or ``check``, it stops the run with this one message: no
    record of the batch is dead-lettered, the checkpoint stays before them, and the run is recorded
    ``failed``. Dead-lettering would be wrong here -- every record would be refused for the same reason,
    and an operator would have to replay thousands of letters once the cause is fixed. A systemic failure
    a retry may cure (a login answered 503, a connection refused) is a :class:`TransientError` instead:
    it is retried, and when the retries are spent the run stops the same way.
    """

    systemic = True


class AuthenticationError(SystemicError):
    """The remote refused dcsync's credentials: no record is at fault, so the run stops (nothing is
    dead-lettered) and says so in one line, without the secret. A refused request did no work, so it is
    ``unsent`` unless the connector says otherwise."""

    def __init__(self, message: str, **kwargs: Any) -> None:
        kwargs.setdefault("unsent", True)
        super().__init__(message, **kwargs)


class Connector(ABC):
    """Base class of every connector; subclasses declare the class attributes and implement the methods."""

    type_name: ClassVar[str]
    """The name users write as ``type:`` in ``dcsync.yaml``."""
    config_model: ClassVar[type[ConnectorConfig]] = ConnectorConfig
    capabilities: ClassVar[frozenset[Capability]] = frozenset()
    description: ClassVar[str] = ""
    pulls_households: ClassVar[bool] = False
    """Does a pulled individual with no ``parent_external_id`` mean the remote holds it in no household?
    Only then does the pull read a membership the remote ended as a ``remove-member`` (OpenSPP reads each
    individual's current membership); a remote that merges fields (the mock server keeps the last
    ``parentExternalId`` it was sent) says nothing about the household by leaving it out."""
    max_in_flight: ClassVar[int] = 1
    """How many ``push`` calls may run at once from different threads (1: the engine never overlaps them;
    a connector that orders its own writes, e.g. one writer per household, keeps 1)."""
    retry_policy: RetryPolicy | None = None
    """The run's retry policy (``retry:`` in dcsync.yaml), set by the runner before a run. The engine
    retries whole batches already; a connector that makes many calls per batch (catalog reads, lookups)
    may retry each read under it too, so one dropped answer does not spend the batch's attempt. ``None``
    when no run set it (a connector called directly, or by the test harness)."""

    def __init__(self, name: str, config: ConnectorConfig):
        self.name = name
        self.config = config

    @abstractmethod
    def check(self) -> CheckResult:
        """Reach the remote and confirm the credentials work, without writing anything."""

    def push(self, batch: Sequence[PushRecord]) -> list[PushResult]:
        """Deliver ``batch``; return exactly one result per record, in any order.

        Raise :class:`ConnectorError` only when the whole batch failed before any record could be judged.
        """
        raise PermanentError(f"connector type {self.type_name!r} cannot push")

    def pull(self, cursor: str | None, limit: int) -> PullPage:
        """Return up to ``limit`` records changed after ``cursor`` (``None``: from the beginning)."""
        raise PermanentError(f"connector type {self.type_name!r} cannot pull")

    def describe_schema(self) -> dict[str, dict[str, FieldSpec]] | None:
        """The fields the remote accepts per entity name (``{"individual": {"given_name": FieldSpec("str"),
        ...}}``), keyed as the mapping's ``match: {entity_name: ...}`` (or its name) and its push targets.

        ``dcsync check`` calls it after :meth:`check` succeeded, and fails naming the mapping's file and
        line for every push target the remote lacks, of an incompatible type, or producing a lookup value
        outside :attr:`FieldSpec.choices`. It may contact the remote (read only) and raise
        :class:`ConnectorError` as ``check`` would. Return ``None`` (the default) when the connector cannot
        describe its remote: the mapping is then not checked against it.
        """
        return None

    def lookup(self, refs: Sequence[str]) -> dict[str, str]:
        """Map refs the remote already holds to their external ids (used after an ambiguous failure)."""
        return {}

    def close(self) -> None:  # noqa: B027 - optional hook, most connectors hold nothing to release
        """Release clients and sockets."""

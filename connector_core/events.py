"""DataCollect's event envelope (`FormSubmission`), byte-compatible on the wire.

DataCollect's sync cursors are built on event timestamps, and its server breaks on microseconds and on an
unencoded ``+00:00``; so we always *write* ``YYYY-MM-DDTHH:MM:SS.mmmZ`` and *read* anything a DataCollect
deployment, an adapter or Odoo may hand us. Every validation error names the event guid and the field, so an
operator can find the offending line in a log of millions.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from enum import IntEnum
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from connector_core.bounded import BoundedInputError, check_json_text, non_finite, reject_constant


class SyncLevel(IntEnum):
    """Where an event has been: an int on the wire (DataCollect's docs wrongly show strings)."""

    LOCAL = 0
    REMOTE = 1
    EXTERNAL = 2


class EventError(ValueError):
    """A bad event: carries the event guid (if it had one), the field and the reason."""

    def __init__(self, guid: str | None, field: str, reason: str, *, where: str | None = None):
        self.guid = guid
        self.field = field
        self.reason = reason
        self.where = where
        super().__init__(str(self))

    def __str__(self) -> str:
        place = f"{self.where}: " if self.where else ""
        who = f"event {self.guid}" if self.guid else "event without guid"
        return f"{place}{who}: field '{self.field}': {self.reason}"


_EXPONENT = re.compile(r"[0-9][eE][+-]?[0-9]{3}")
_ODOO_FORMAT = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(\.\d+)?$")
_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def parse_timestamp(value: str | datetime) -> datetime:
    """Read a timestamp leniently and return an aware UTC datetime.

    Accepts ISO-8601 with ``Z``, offsets or µs, Odoo's ``YYYY-MM-DD HH:MM:SS`` (UTC without a marker, as
    Odoo stores it) and bare dates. Naive values are taken as UTC, which is what DataCollect and Odoo mean.
    """
    if isinstance(value, datetime):
        dt = value
    else:
        if not isinstance(value, str) or not value.strip():
            raise ValueError("timestamp must be a non-empty string")
        text = value.strip()
        if _ODOO_FORMAT.match(text):
            text = text.replace(" ", "T", 1)
        elif _DATE_ONLY.match(text):
            text += "T00:00:00"
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            dt = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"not a timestamp: {value!r}") from None
    if dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def has_zone(value: Any) -> bool:
    """Whether a timestamp string names its zone (``Z`` or an offset).

    DataCollect does not check timestamps and JavaScript reads a zone-less date-time as the reader's local
    time, so such an event means different instants on different devices: an import refuses it rather
    than guess.
    """
    if not isinstance(value, str):
        return True  # not a timestamp at all: the field's own validation says so
    text = value.strip()
    if text.endswith(("Z", "z")) or _DATE_ONLY.match(text):  # a bare date is UTC in JavaScript too
        return True
    try:
        return datetime.fromisoformat(text.replace(" ", "T", 1)).tzinfo is not None
    except ValueError:
        return True  # unreadable: reported as "not a timestamp" by validation


def format_timestamp(value: datetime) -> str:
    """Write DataCollect's form: UTC, exactly milliseconds, ``Z``."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    # isoformat is C and pads the year to four digits (strftime's %Y does not on Linux): ...+00:00 -> Z
    return value.astimezone(UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


_CANONICAL = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z$")


def normalize_timestamp(value: str | datetime) -> str:
    if isinstance(value, str) and _CANONICAL.match(value):
        # Already DataCollect's form (nearly every event): only check that it is a real instant.
        try:
            datetime.fromisoformat(value[:-1])
        except ValueError:
            raise ValueError(f"not a timestamp: {value!r}") from None
        return value
    return format_timestamp(parse_timestamp(value))


def utc_now() -> datetime:
    return datetime.now(UTC)


def now_timestamp() -> str:
    return format_timestamp(utc_now())


def shift_timestamp(value: str, delta: timedelta) -> str:
    return format_timestamp(parse_timestamp(value) + delta)


class FormSubmission(BaseModel):
    """One immutable DataCollect event.

    Field names are snake_case in Python and camelCase on the wire (``by_alias``), so a JSONL line written by
    dcsync can be pushed to a DataCollect backend unchanged.
    """

    model_config = ConfigDict(populate_by_name=True, frozen=True, extra="ignore")

    guid: str
    entity_guid: str = Field(alias="entityGuid")
    type: str
    data: dict[str, Any]
    timestamp: str
    user_id: str = Field(alias="userId")
    sync_level: SyncLevel = Field(default=SyncLevel.LOCAL, alias="syncLevel")

    @field_validator("guid", "entity_guid", "type", "user_id", mode="before")
    @classmethod
    def _non_empty(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)  # DataCollect stores userId as TEXT; a JWT user id pulls back as "1"
        if not isinstance(value, str) or not value.strip():
            raise ValueError("must be a non-empty string")
        return value

    @field_validator("data", mode="before")
    @classmethod
    def _non_empty_object(cls, value: Any) -> Any:
        if not isinstance(value, dict) or not value:
            raise ValueError("must be a non-empty object")
        return value

    @field_validator("timestamp", mode="before")
    @classmethod
    def _timestamp(cls, value: Any) -> str:
        if value is None or value == "":
            raise ValueError("must be a non-empty timestamp")
        return normalize_timestamp(value)

    @field_validator("sync_level", mode="before")
    @classmethod
    def _sync_level(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().isdigit():
            return int(value)
        if isinstance(value, str) and value.upper() in SyncLevel.__members__:
            return SyncLevel[value.upper()]
        return value

    @classmethod
    def from_json(cls, raw: Mapping[str, Any], *, where: str | None = None) -> FormSubmission:
        """Validate one decoded event; any problem becomes one :class:`EventError`."""
        if not isinstance(raw, Mapping):
            raise EventError(None, "(event)", "must be a JSON object", where=where)
        guid = raw.get("guid")
        guid_text = str(guid) if guid not in (None, "") else None
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(p) for p in first["loc"]) or "(event)"
            msg = first["msg"]
            if first["type"] == "missing":
                msg = "is missing"
            elif msg.startswith("Value error, "):
                msg = msg[len("Value error, ") :]
            raise EventError(guid_text, loc, msg, where=where) from None

    @classmethod
    def from_json_line(cls, line: str, *, where: str | None = None) -> FormSubmission:
        """One event from one line of text someone else wrote: bounded (depth, number length, size) before
        it is parsed, and ``NaN``/``Infinity`` refused (JSON has neither; storing them as ``null`` loses
        the value silently)."""
        return cls.from_json(parse_json_line(line, where=where), where=where)

    @classmethod
    def stored(
        cls,
        guid: str,
        entity_guid: str,
        type: str,
        data: dict[str, Any],
        timestamp: str,
        user_id: str,
        sync_level: int,
    ) -> FormSubmission:
        """An event read back from a store that validated it on the way in, built without validating again.

        A push or a replay reads every event of a page; ``model_construct`` walks the field definitions on
        each call and costs three times this. The attributes set are the ones ``model_construct`` sets.
        """
        event = cls.__new__(cls)
        _set(
            event,
            "__dict__",
            {
                "guid": guid,
                "entity_guid": entity_guid,
                "type": type,
                "data": data,
                "timestamp": timestamp,
                "user_id": user_id,
                "sync_level": _SYNC_LEVELS[sync_level],
            },
        )
        _set(event, "__pydantic_fields_set__", set(_FIELDS))
        _set(event, "__pydantic_extra__", None)
        _set(event, "__pydantic_private__", None)
        return event

    def to_json(self) -> dict[str, Any]:
        return {
            "guid": self.guid,
            "entityGuid": self.entity_guid,
            "type": self.type,
            "data": self.data,
            "timestamp": self.timestamp,
            "userId": self.user_id,
            "syncLevel": int(self.sync_level),
        }

    def to_json_line(self) -> str:
        return json.dumps(self.to_json(), ensure_ascii=False, separators=(",", ":"))


_set = object.__setattr__
_FIELDS = frozenset(FormSubmission.model_fields)
_SYNC_LEVELS = {int(level): level for level in SyncLevel}


def parse_json_line(line: str, *, where: str | None = None) -> Any:
    """Strict JSON for one untrusted line; any problem is one :class:`EventError` naming ``where``."""
    try:
        check_json_text(line, where or "(line)")
    except BoundedInputError as exc:
        place = f"{where}:{exc.column}" if where and exc.column else where
        raise EventError(None, "(line)", exc.message, where=place) from None
    try:
        raw = orjson.loads(line)  # refuses NaN and Infinity itself
    except orjson.JSONDecodeError:
        try:  # what orjson refuses but JSON allows (integers beyond 64 bits); or the real error
            raw = json.loads(line, parse_constant=reject_constant)
        except json.JSONDecodeError as exc:
            raise EventError(
                None, "(line)", f"not valid JSON: {exc.msg} (column {exc.colno})", where=where
            ) from None
        except ValueError as exc:
            raise EventError(None, "(line)", f"not valid JSON: {exc}", where=where) from None
    if _EXPONENT.search(line) and non_finite(raw):
        raise EventError(None, "(line)", "a number overflows to infinity", where=where)
    return raw

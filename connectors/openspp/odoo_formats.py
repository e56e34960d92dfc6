"""Odoo's wire formats for dates and datetimes, shared by the client side and the fake server.

Odoo sends and accepts naive UTC strings (``YYYY-MM-DD`` and ``YYYY-MM-DD HH:MM:SS``) and stores datetimes
with microseconds that it never returns. Both sides of the connector need the same parsing rules, so they
live here once: a connector that formats a value the fake accepts must be formatting it the way Odoo does.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

DATE_FORMAT = "%Y-%m-%d"
DATETIME_FORMAT = "%Y-%m-%d %H:%M:%S"
EPOCH = "1970-01-01 00:00:00"


def format_datetime(value: datetime) -> str:
    """Odoo's output format: seconds, no microseconds, no zone marker (the value is UTC)."""
    return value.strftime(DATETIME_FORMAT)


def format_datetime_us(value: datetime) -> str:
    """The stored precision, used only by the fake's test-control API."""
    return value.strftime(DATETIME_FORMAT + ".%f")


def format_date(value: date) -> str:
    return value.strftime(DATE_FORMAT)


def parse_write_datetime(value: str) -> datetime:
    """Parse a datetime the way ``odoo.fields.Datetime.to_datetime`` does on write.

    The format is cut to the value's length, so ``YYYY-MM-DD``, ``YYYY-MM-DD HH:MM`` and the full form pass
    while ISO ``T``/``Z``/milliseconds raise the same ``ValueError`` Odoo raises.
    """
    return datetime.strptime(value, DATETIME_FORMAT[: len(value) - 2])


def parse_write_date(value: str) -> date:
    """``odoo.fields.Date.to_date``: the string is cut to ten characters, then must be ``%Y-%m-%d``."""
    return datetime.strptime(value[:10], DATE_FORMAT).date()


def parse_server_datetime(value: str) -> datetime:
    """Parse a datetime Odoo returned (``YYYY-MM-DD HH:MM:SS``, optionally with microseconds)."""
    if "." in value:
        return datetime.strptime(value, DATETIME_FORMAT + ".%f")
    return datetime.strptime(value, DATETIME_FORMAT)


def utc_now() -> datetime:
    """Naive UTC now, Odoo's convention for datetime values."""
    return datetime.now(UTC).replace(tzinfo=None)


def floor_second(value: datetime) -> datetime:
    return value.replace(microsecond=0)


def add_seconds(value: str, seconds: float) -> str:
    return format_datetime(parse_server_datetime(value) + timedelta(seconds=seconds))


def to_iso_ms(value: str) -> str:
    """Odoo ``YYYY-MM-DD HH:MM:SS`` (UTC) to DataCollect's ``YYYY-MM-DDTHH:MM:SS.mmmZ``."""
    parsed = parse_server_datetime(value)
    return parsed.strftime("%Y-%m-%dT%H:%M:%S.") + f"{parsed.microsecond // 1000:03d}Z"

"""Encryption at rest of the personal data the state store keeps: the one codec every backend and caller uses.

dcsync keeps its own copies of registry records: a link's snapshot and merge base, a dead letter's payload, a
conflict's three versions; and free text that may quote them (a dead letter's reason, a parked child's
reason, a run's error can all carry a remote's message, which may echo values). With ``state.encryption_key``
set, those values are *sealed* before they reach the database and opened as they are read; the identifiers
and counts every query filters, joins or counts on (connector, entity_guid, external_id, ref, status, ids,
timestamps, counts) stay plain, so the store stays queryable and no index changes.

Why this shape:

- **One 32-byte master key** (URL-safe base64, the same form as a Fernet key; ``dcsync state keygen`` prints
  one). Two subkeys come from it through HKDF-SHA256, one per algorithm, so the same bytes never serve two
  ciphers; a third HKDF output is the *key id* (8 hex digits), stored in every sealed value so that a reader
  can tell "sealed under another key" (a configuration mistake, named with both ids) from "corrupt" (an
  authentication failure under the right key).
- **AES-256-GCM** with a random 96-bit nonce for payload-like values: randomised, so two equal snapshots do
  not look equal on disk.
- **AES-SIV** (deterministic, misuse-resistant) for reasons: the operator console groups dead letters by
  ``reason`` in SQL and ``open_dead_letter_reasons`` compares them, so equal reasons must seal to equal
  values. Determinism reveals only *which rows share a reason*, which the dead-letter counts reveal anyway.
- **Associated data = ``table.column``**: a sealed value copied into another column (a reason pasted into a
  payload, a ``base`` swapped for a ``remote``) fails to open instead of being read as something it is not.
- **An envelope in the existing columns**, no schema change: ``dcsync:v1:<key id>:<base64url>`` (GCM: nonce
  then ciphertext and tag) or ``dcsync:d1:<key id>:<base64url>`` (SIV), held in a TEXT column as is and in a
  JSON/JSONB column as a JSON *string*. A plain value (a row written before encryption was switched on) is
  anything that is not an envelope: it still reads, so a store can be switched on without downtime, and
  ``dcsync state rekey`` seals it later.

Errors name the table, column and row, never a value; nothing decrypted is ever logged here.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from connector_core import codec

Kind = Literal["json", "text", "reason"]
"""``json``: a JSON column, randomised (GCM); ``text``: a TEXT column, randomised; ``reason``: a TEXT column,
deterministic (SIV) so equal values stay equal for GROUP BY and comparisons."""

KEY_BYTES = 32
KEY_ENV_HINT = "make one with `dcsync state keygen`"


@dataclass(frozen=True)
class SealedTable:
    """A table holding sealed columns: its row key (for keyset paging and error messages) and the columns."""

    table: str
    key: tuple[str, ...]
    columns: tuple[tuple[str, Kind], ...]


SEALED: tuple[SealedTable, ...] = (
    SealedTable("links", ("connector", "entity_guid"), (("snapshot", "json"), ("base", "json"))),
    SealedTable("dead_letters", ("id",), (("reason", "reason"), ("payload", "json"))),
    SealedTable("conflicts", ("id",), (("base", "json"), ("local", "json"), ("remote", "json"))),
    SealedTable("parked", ("connector", "entity_guid"), (("reason", "reason"),)),
    SealedTable("runs", ("id",), (("error", "text"),)),
    SealedTable("actions", ("id",), (("detail", "json"),)),
)
"""Every sealed column of the state store, and how: what ``rekey`` walks, and what the docs list."""

KIND: dict[str, Kind] = {f"{t.table}.{column}": kind for t in SEALED for column, kind in t.columns}

_ENVELOPE = re.compile(r"dcsync:(v1|d1):([0-9a-f]{8}):([A-Za-z0-9_-]+)")
_PREFIX = "dcsync:"


class StateKeyError(Exception):
    """The state store's encryption key is missing, wrong, or a sealed value does not open: one line,
    naming the key ids, table, column and row, never a value."""


def generate_key() -> str:
    """A fresh master key, URL-safe base64 (44 characters, as a Fernet key)."""
    return base64.urlsafe_b64encode(os.urandom(KEY_BYTES)).decode()


def decode_key(text: str, what: str = "state.encryption_key") -> bytes:
    """The 32 bytes of a key written as URL-safe base64 (padding optional); the error never quotes it."""
    cleaned = text.strip()
    try:
        raw = base64.urlsafe_b64decode(cleaned + "=" * (-len(cleaned) % 4))
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != KEY_BYTES or not cleaned:
        raise StateKeyError(
            f"{what}: not a key (expected {KEY_BYTES} bytes in URL-safe base64; {KEY_ENV_HINT})"
        )
    return raw


def is_sealed(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(_PREFIX) and _ENVELOPE.fullmatch(value) is not None


def sealed_key_id(value: Any) -> str | None:
    """The key id of a sealed value, ``None`` for a plain one."""
    if not isinstance(value, str) or not value.startswith(_PREFIX):
        return None
    match = _ENVELOPE.fullmatch(value)
    return match.group(2) if match else None


class _Key:
    """One master key's subkeys and id."""

    def __init__(self, master: bytes) -> None:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM, AESSIV
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF

        def derive(info: bytes, length: int) -> bytes:
            return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(master)

        self.id = derive(b"dcsync state key id", 4).hex()
        self.gcm = AESGCM(derive(b"dcsync state v1 aes-256-gcm", 32))
        self.siv = AESSIV(derive(b"dcsync state v1 aes-256-siv", 64))


class StateCipher:
    """Seals and opens the state store's personal data under the configured keys.

    ``current`` seals; every key (``current`` and ``previous``) opens, so that during a rotation readers
    accept both while ``dcsync state rekey`` moves rows to the new one. A cipher with no key (``PLAIN``)
    writes plain values and refuses, in one line, to read sealed ones.
    """

    def __init__(self, current: bytes | None = None, previous: Sequence[bytes] = ()) -> None:
        if current is None and previous:
            raise StateKeyError("state.previous_keys needs state.encryption_key (the key that seals)")
        self._current = _Key(current) if current is not None else None
        keys = [self._current] if self._current else []
        keys += [_Key(k) for k in previous]
        self._keys = {k.id: k for k in keys}

    @property
    def enabled(self) -> bool:
        return self._current is not None

    @property
    def key_id(self) -> str | None:
        """The id of the sealing key (``None``: encryption is off)."""
        return self._current.id if self._current else None

    @property
    def key_ids(self) -> tuple[str, ...]:
        """Every key id this cipher opens, the sealing key's first."""
        return tuple(self._keys)

    # -- sealing ---------------------------------------------------------------------------------------

    def seal(self, value: Any, column: str) -> Any:
        """``value`` sealed for ``column`` (``table.column``), or as is with encryption off. ``None`` stays
        ``None`` (a NULL is no personal data, and NOT NULL checks keep their meaning)."""
        key = self._current
        if key is None or value is None:
            return value
        plain = codec.dumps_bytes(value)
        ad = column.encode()
        if KIND[column] == "reason":
            body = key.siv.encrypt(plain, [ad])
            return f"dcsync:d1:{key.id}:{_b64(body)}"
        nonce = os.urandom(12)
        body = nonce + key.gcm.encrypt(nonce, plain, ad)
        return f"dcsync:v1:{key.id}:{_b64(body)}"

    def open(self, stored: Any, column: str, row: object = None) -> Any:
        """The value a column holds: a sealed one opened, a plain one (written before encryption was
        switched on) as it is."""
        if not isinstance(stored, str) or not stored.startswith(_PREFIX):
            return stored
        match = _ENVELOPE.fullmatch(stored)
        if match is None:
            return stored  # plain text that merely starts like an envelope
        scheme, key_id, body = match.groups()
        where = f"{column}" + (f" (row {row})" if row is not None else "")
        key = self._keys.get(key_id)
        if key is None:
            raise self._unknown_key(key_id, where)
        from cryptography.exceptions import InvalidTag

        ad = column.encode()
        try:
            raw = _unb64(body)
            plain = (  # SIV has no nonce; GCM's is the first 12 bytes
                key.siv.decrypt(raw, [ad]) if scheme == "d1" else key.gcm.decrypt(raw[:12], raw[12:], ad)
            )
        except (InvalidTag, ValueError, binascii.Error):
            raise StateKeyError(
                f"state store value in {where} does not open under key id {key_id}: "
                "it is corrupt, was altered, or was moved from another column"
            ) from None
        return codec.loads(plain)

    def needs_reseal(self, stored: Any) -> bool:
        """Whether ``rekey`` must rewrite ``stored``: plain, or sealed under a key other than the current."""
        if self._current is None or stored is None:
            return False
        return sealed_key_id(stored) != self._current.id

    def _unknown_key(self, key_id: str, where: str) -> StateKeyError:
        if not self._keys:
            return missing_key_error(key_id)
        return StateKeyError(
            f"state store value in {where} is sealed under key id {key_id}, but the configured keys have "
            f"id(s) {', '.join(self._keys)} (state.encryption_key / state.previous_keys)"
        )

    def check_store_keys(self, stored_ids: Iterable[str]) -> None:
        """Refuse a store whose marker names keys this cipher cannot open (one line, before any row is
        read): the cheap check at open that turns a wrong or missing key into a message, not a failure in
        the middle of a run."""
        unknown = [k for k in sorted(set(stored_ids)) if k not in self._keys]
        if not unknown:
            return
        if not self._keys:
            raise missing_key_error(", ".join(unknown))
        raise StateKeyError(
            f"state store holds data sealed under key id {', '.join(unknown)}, but the configured keys have "
            f"id(s) {', '.join(self._keys)}: is state.encryption_key the right key (or the old one missing "
            "from state.previous_keys)?"
        )


def missing_key_error(key_ids: str) -> StateKeyError:
    return StateKeyError(
        f"state store holds encrypted data (key id {key_ids}) but state.encryption_key is not set"
    )


PLAIN = StateCipher()
"""The cipher of a store without a key: plain in, plain out, sealed values refused."""


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))

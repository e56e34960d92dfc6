"""``dcsync state rekey``: every sealed column of the state store moved under the current key, runs going on.

Rotation without downtime works because readers accept every configured key (``encryption_key`` seals,
``previous_keys`` only open): with both keys deployed everywhere, this walk rewrites each row still plain or
under an old key, a page per transaction (keyset order, so a page costs the same at the end of a large table
as at the start, and memory stays flat). A row a run rewrites meanwhile is left alone (the rewrite is a
compare-and-set), and a walk that is stopped resumes by being started again: rows already under the current
key are read and skipped. Once a full walk finds nothing left, the store's marker forgets the old key ids,
and the old key can leave the configuration.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from connector_core.state.sealing import SEALED

Progress = Callable[[str, int, int], None]
"""Called after each page: ``(table, rows read so far, rows rewritten so far)``."""


@dataclass
class RekeyReport:
    key_id: str
    read: dict[str, int] = field(default_factory=dict)
    rewritten: dict[str, int] = field(default_factory=dict)
    left: int = 0
    """Rows still not under the current key after the walk (written meanwhile by a process with an old
    configuration): 0 means the old keys were forgotten."""

    def detail(self) -> dict[str, Any]:
        """Counts only: what the audit trail records."""
        return {
            "key_id": self.key_id,
            "rewritten": dict(self.rewritten),
            "read": dict(self.read),
            "left": self.left,
        }


def rekey(store: Any, *, batch: int = 500, progress: Progress | None = None) -> RekeyReport:
    """Reseal every sealed column of ``store`` (a :class:`~connector_core.state.store.SqlStateStore` with a
    cipher that has a key) under its current key; see the module docstring."""
    cipher = store.cipher
    if cipher.key_id is None:
        raise ValueError("rekey needs state.encryption_key: the key to seal under")
    report = RekeyReport(cipher.key_id)
    for spec in SEALED:
        read = rewritten = 0
        after: tuple[Any, ...] | None = None
        while True:
            after, n, changed = store.rekey_page(spec.table, after, batch)
            read += n
            rewritten += changed
            if progress is not None and n:
                progress(spec.table, read, rewritten)
            if n < batch:
                break
        report.read[spec.table] = read
        report.rewritten[spec.table] = rewritten
    report.left = sum(store.count_unsealed(spec.table) for spec in SEALED)
    if report.left == 0:
        store.forget_sealed_keys(cipher.key_id)
    return report

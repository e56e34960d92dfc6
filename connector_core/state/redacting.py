"""The state store as the rest of dcsync sees it: nothing that goes in or comes out holds a secret.

A remote that echoes the request in its error answer hands the connector's password back as the reason of a
failed record; before this wrapper, that reason went into the dead-letter table as it was, and ``dlq show``,
``runs`` and ``status`` printed it. Wrapping the store where it is opened (``open_state_store``) covers every
backend and every caller (push, pull, replay, the runner) in one place: reasons and run errors are redacted in
full (:func:`~connector_core.redaction.redact`), payloads and conflicts for registered secrets and URL
credentials only (a field merely named ``token`` is data). Rows written by an older dcsync are redacted as
they are read.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from connector_core.redaction import redact, redact_value
from connector_core.state.base import Conflict, DeadLetter, DeadLetterGroup, Direction, RunRecord


def _letter(letter: DeadLetter) -> DeadLetter:
    return dataclasses.replace(letter, reason=redact(letter.reason), payload=redact_value(letter.payload))


def _run(run: RunRecord) -> RunRecord:
    return dataclasses.replace(run, error=redact(run.error)) if run.error else run


def _conflict(conflict: Conflict) -> Conflict:
    return dataclasses.replace(
        conflict,
        base=redact_value(conflict.base),
        local=redact_value(conflict.local),
        remote=redact_value(conflict.remote),
    )


class RedactingTxn:
    """A transaction whose free-text and echoed writes are redacted; every other call passes through."""

    def __init__(self, txn: Any):
        self._txn = txn

    def __getattr__(self, name: str) -> Any:
        return getattr(self._txn, name)

    def record_action(self, actor: str, action: str, **kwargs: Any) -> None:
        self._txn.record_action(actor, action, **_action(kwargs))

    def add_dead_letter(
        self,
        connector: str,
        direction: Direction,
        ref: str,
        reason: str,
        payload: dict[str, Any],
        *,
        attempt: bool = True,
    ) -> None:
        self._txn.add_dead_letter(
            connector, direction, ref, redact(reason), redact_value(payload), attempt=attempt
        )

    def park(
        self, connector: str, entity_guid: str, parent_guid: str, reason: str, *, count: bool = True
    ) -> None:
        self._txn.park(connector, entity_guid, parent_guid, redact(reason), count=count)

    def add_conflict(
        self,
        connector: str,
        entity_guid: str,
        external_id: str,
        policy: str,
        base: dict[str, Any],
        local: dict[str, Any],
        remote: dict[str, Any],
        remote_version: str | None,
        *,
        resolution: str | None = None,
    ) -> None:
        self._txn.add_conflict(
            connector,
            entity_guid,
            external_id,
            policy,
            redact_value(base),
            redact_value(local),
            redact_value(remote),
            remote_version,
            resolution=resolution,
        )


def _action(kwargs: dict[str, Any]) -> dict[str, Any]:
    """An operator's note goes into the audit trail as typed, less any secret pasted into it."""
    if kwargs.get("detail"):
        kwargs["detail"] = redact_value(kwargs["detail"], full=True)
    return kwargs


class RedactingStateStore:
    """Wraps any :class:`~connector_core.state.lease.LeasedStateStore`; see the module docstring."""

    def __init__(self, store: Any):
        self._store = store

    def record_action(self, actor: str, action: str, **kwargs: Any) -> int:
        return int(self._store.record_action(actor, action, **_action(kwargs)))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    @property
    def inner(self) -> Any:
        """The wrapped backend (tests and maintenance tools that need its own API)."""
        return self._store

    @contextmanager
    def transaction(self) -> Iterator[RedactingTxn]:
        with self._store.transaction() as txn:
            yield RedactingTxn(txn)

    def finish_run(self, run_id: int, outcome: str, counts: dict[str, int], error: str | None = None) -> None:
        self._store.finish_run(run_id, outcome, counts, redact(error) if error else error)

    def runs(
        self, connector: str | None = None, limit: int = 20, failed_only: bool = False
    ) -> list[RunRecord]:
        return [_run(r) for r in self._store.runs(connector, limit=limit, failed_only=failed_only)]

    def dead_letters(
        self, connector: str | None = None, status: str | None = "open", limit: int = 100
    ) -> list[DeadLetter]:
        return [_letter(d) for d in self._store.dead_letters(connector, status, limit)]

    def iter_dead_letters(
        self, connector: str, status: str | None = "open", page_size: int = 1000, **filters: Any
    ) -> Iterator[DeadLetter]:
        for letter in self._store.iter_dead_letters(connector, status, page_size, **filters):
            yield _letter(letter)

    def open_dead_letter_reasons(
        self, connector: str, direction: Direction, refs: Iterable[str]
    ) -> dict[str, str]:
        found = self._store.open_dead_letter_reasons(connector, direction, refs)
        return {ref: redact(reason) for ref, reason in found.items()}

    def get_dead_letter(self, dead_letter_id: int) -> DeadLetter | None:
        letter = self._store.get_dead_letter(dead_letter_id)
        return _letter(letter) if letter is not None else None

    def dead_letter_groups(
        self, connector: str | None = None, status: str | None = "open", limit: int = 200
    ) -> list[DeadLetterGroup]:
        return [
            dataclasses.replace(g, reason=redact(g.reason))
            for g in self._store.dead_letter_groups(connector, status, limit)
        ]

    def dead_letter_page(self, connector: str | None = None, **filters: Any) -> list[DeadLetter]:
        return [_letter(d) for d in self._store.dead_letter_page(connector, **filters)]

    def run_page(self, connector: str | None = None, **filters: Any) -> list[RunRecord]:
        return [_run(r) for r in self._store.run_page(connector, **filters)]

    def get_run(self, run_id: int) -> RunRecord | None:
        run = self._store.get_run(run_id)
        return _run(run) if run is not None else None

    def conflict_page(self, connector: str | None = None, **filters: Any) -> list[Conflict]:
        return [_conflict(c) for c in self._store.conflict_page(connector, **filters)]

    def conflicts(
        self, connector: str | None = None, status: str | None = "open", limit: int = 100
    ) -> list[Conflict]:
        return [_conflict(c) for c in self._store.conflicts(connector, status, limit)]

    def get_conflict(self, conflict_id: int) -> Conflict | None:
        conflict = self._store.get_conflict(conflict_id)
        return _conflict(conflict) if conflict is not None else None

    def close(self) -> None:
        self._store.close()

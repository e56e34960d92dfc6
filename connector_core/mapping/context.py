"""What a mapping may ask of the world while it maps one record: links to external ids.

A mapping is a pure function of the record *and* of the links the connector holds, e.g. a member's
``parent_ref`` is its household's external id. The sync engine passes these lookups in through
:class:`MapContext`, so the mapping engine never touches the state store and is tested without one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


def no_link(entity_guid: str) -> str | None:
    """Default for :attr:`MapContext.link`: no entity has an external id yet."""
    return None


def no_resolve(external_id: str, entity_name: str | None) -> str | None:
    """Default for :attr:`MapContext.resolve`: no external id is known locally."""
    return None


@dataclass(frozen=True, slots=True)
class MapContext:
    """Callables the engine provides per run.

    ``link(entity_guid)`` returns the external id the connector holds for another entity (push side,
    e.g. the parent household's id); ``resolve(external_id, entity_name)`` returns the local entity
    guid for an external id (pull side). Both return ``None`` when unknown.
    """

    link: Callable[[str], str | None] = no_link
    resolve: Callable[[str, str | None], str | None] = no_resolve


DEFAULT_CONTEXT = MapContext()


class Scope:
    """Per-record runtime handed to every transform step: the source document and the
    :class:`MapContext`.

    Inside ``each:`` the document is the current item, so relative paths in transforms read the
    item.
    """

    __slots__ = ("ctx", "doc")

    def __init__(self, doc: Any, ctx: MapContext):
        self.doc = doc
        self.ctx = ctx

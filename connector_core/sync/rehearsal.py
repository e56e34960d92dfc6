"""What a pull dry run's earlier pages would have committed, so its later pages see it.

A real pull commits each page (events appended, links written) before it reads the next, and the next page
finds those links and entities: a household's members on a later page resolve their household, and a
record read again (a lag window, a second stream) reads as unchanged. A dry run writes nothing, so without
this it would count every such member as a dead letter (parent unknown) and every re-read as a new record,
and its plan would disagree with the run it rehearses. The links and entity states a page would have
committed are kept in a temporary file (memory stays flat however many records the remote holds) and
looked up before the state store and the event log.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from typing import Any

from connector_core.entities import Entity
from connector_core.state.base import Link
from connector_core.streams import KeptOnDisk

_GONE = "null"


class PullRehearsal:
    """Links by external id, external ids by entity guid, and entity states, as a dry run's pages would have
    left them; each lookup says whether the rehearsal knows the answer (``known``) and what it is."""

    def __init__(self) -> None:
        self._kept = KeptOnDisk()

    def find_link(self, external_id: str) -> tuple[bool, Link | None]:
        value = self._kept.get(f"x:{external_id}")
        if value is None:
            return False, None
        return True, None if value == _GONE else Link(**json.loads(value))

    def external_id_of(self, guid: str) -> tuple[bool, str | None]:
        value = self._kept.get(f"g:{guid}")
        if value is None:
            return False, None
        return True, json.loads(value)

    def entity(self, guid: str) -> tuple[bool, Entity | None]:
        value = self._kept.get(f"e:{guid}")
        if value is None:
            return False, None
        return True, None if value == _GONE else Entity.from_json(json.loads(value))

    def keep(
        self,
        links: Iterable[Link],
        unlinked: Mapping[str, str | None],
        entities: Mapping[str, Entity | None],
    ) -> None:
        """Record one page as its commit would have: ``links`` written, the links of ``unlinked`` (entity
        guid -> its external id, if known) deleted, ``entities`` as the page's events leave them."""
        items: dict[str, str] = {}
        for link in links:
            items[f"x:{link.external_id}"] = json.dumps(dataclasses.asdict(link), default=_plain)
            items[f"g:{link.entity_guid}"] = json.dumps(link.external_id)
        for guid, external_id in unlinked.items():
            items[f"g:{guid}"] = _GONE
            if external_id is not None:
                items[f"x:{external_id}"] = _GONE
        for guid, entity in entities.items():
            items[f"e:{guid}"] = _GONE if entity is None else json.dumps(entity.to_json(), default=_plain)
        if items:
            self._kept.put(items)

    def close(self) -> None:
        self._kept.close()


def _plain(value: Any) -> Any:
    return str(value)

"""Row helpers both state store backends share: their SQL differs, the way they page does not."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any


def keyset_pages(
    fetch: Callable[[Any], list[tuple[Any, ...]]], key: int, start: Any, page_size: int
) -> Iterator[tuple[Any, ...]]:
    """Rows page by page: ``fetch(last)`` returns up to ``page_size`` rows after ``last``, ordered by
    column ``key``; the first call gets ``start``. A page is held at a time, and no OFFSET rescans what
    earlier pages read, so a table of a million rows costs what a table of a thousand does per row."""
    if page_size < 1:
        raise ValueError("page_size must be at least 1")
    last = start
    while True:
        rows = fetch(last)
        yield from rows
        if len(rows) < page_size:
            return
        last = rows[-1][key]

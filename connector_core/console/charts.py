"""Small SVG charts drawn on the server: no JavaScript library, nothing fetched by the browser.

A chart is a row of bars, oldest run on the left, scaled to the largest value shown; a run with no value
(a pull-only run has no push lag) leaves a gap rather than a zero, which would read as "caught up".
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from markupsafe import Markup


def bars(
    values: Sequence[float | None],
    *,
    title: str,
    unit: str = "",
    width: int = 240,
    height: int = 48,
    css_class: str = "bars",
) -> Markup:
    """An inline ``<svg>`` bar chart of ``values`` with a ``<title>`` per bar (the hover text)."""
    shown = [v for v in values if v is not None]
    top = max(shown, default=0) or 1
    n = max(len(values), 1)
    slot = width / n
    gap = 1 if slot > 3 else 0
    parts = [
        f'<svg class="{escape(css_class)}" role="img" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
        f'<line x1="0" y1="{height - 0.5}" x2="{width}" y2="{height - 0.5}" class="axis"/>',
    ]
    for i, value in enumerate(values):
        if value is None:
            continue
        h = max(1.0, (value / top) * (height - 2)) if value > 0 else 1.0
        x = i * slot
        label = f"{value:g}{unit}"
        parts.append(
            f'<rect x="{x:.1f}" y="{height - h:.1f}" width="{max(slot - gap, 1):.1f}" height="{h:.1f}">'
            f"<title>{escape(label)}</title></rect>"
        )
    if not shown:
        parts.append(f'<text x="4" y="{height / 2:.0f}" class="empty">no runs yet</text>')
    parts.append("</svg>")
    return Markup("".join(parts))

"""Charts as SVG drawn on the server: no script, nothing loaded, readable by a screen reader (a
`<title>` and a table of the same numbers beside every chart on the page).

    bar_chart([("北山村", 0.92), ...], value_text=percent, max_value=1.0, title="…")

Every text that goes in is escaped here; the result is safe to put in a page as is.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from html import escape

BAR_HEIGHT = 22
GAP = 8
LABEL_WIDTH = 150
BAR_WIDTH = 360
VALUE_WIDTH = 90


def bar_chart(
    rows: Sequence[tuple[str, float]],
    *,
    title: str,
    value_text: Callable[[float], str],
    max_value: float | None = None,
) -> str:
    """Horizontal bars, one per row: its label, the bar, and the value as text."""
    top = max([max_value or 0.0, *(value for _label, value in rows)]) or 1.0
    height = max(1, len(rows)) * (BAR_HEIGHT + GAP) + GAP
    width = LABEL_WIDTH + BAR_WIDTH + VALUE_WIDTH
    parts = [
        f'<svg class="chart" role="img" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
    ]
    for index, (label, value) in enumerate(rows):
        y = GAP + index * (BAR_HEIGHT + GAP)
        length = max(0.0, min(1.0, value / top)) * BAR_WIDTH
        text_y = y + BAR_HEIGHT * 0.7
        parts.append(
            f'<text class="chart-label" x="{LABEL_WIDTH - 6}" y="{text_y:.1f}" text-anchor="end">{escape(label)}</text>'
        )
        parts.append(f'<rect class="chart-track" x="{LABEL_WIDTH}" y="{y}" width="{BAR_WIDTH}" height="{BAR_HEIGHT}"/>')
        parts.append(f'<rect class="chart-bar" x="{LABEL_WIDTH}" y="{y}" width="{length:.1f}" height="{BAR_HEIGHT}"/>')
        parts.append(
            f'<text class="chart-value" x="{LABEL_WIDTH + BAR_WIDTH + 6}" y="{text_y:.1f}">'
            f"{escape(value_text(value))}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)

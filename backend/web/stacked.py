"""Stacked columns as SVG drawn on the server (collections by day and method): no script, a
`<title>` for screen readers, and the page puts a table of the same numbers beside it. Every text
that goes in is escaped here; the result is safe to put in a page as is.

    stacked_columns([("10-08", (1200, 400, 0)), ...], title="…", value_text=yuan)

The series are coloured by the classes `chart-s0`, `chart-s1`, … (screens.css), in the order given.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from html import escape

HEIGHT = 200
COLUMN = 18
GAP = 6
LEFT = 70  # room for the scale's labels
BOTTOM = 40  # room for the column labels, turned


def stacked_columns(
    columns: Sequence[tuple[str, Sequence[int]]],
    *,
    title: str,
    value_text: Callable[[int], str],
) -> str:
    """One column per label, its parts stacked bottom-up in series order; the top of the scale is
    the highest column's total, labelled at the top and half way."""
    top = max((sum(parts) for _label, parts in columns), default=0) or 1
    width = LEFT + max(1, len(columns)) * (COLUMN + GAP) + GAP
    total_height = HEIGHT + BOTTOM + 10
    parts = [
        f'<svg class="chart" role="img" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {total_height}" '
        f'width="{width}" height="{total_height}" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
    ]
    for fraction in (1.0, 0.5):
        y = 10 + HEIGHT * (1 - fraction)
        parts.append(
            f'<text class="chart-axis" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{escape(value_text(round(top * fraction)))}</text>"
        )
        parts.append(f'<line class="chart-grid" x1="{LEFT}" x2="{width}" y1="{y:.1f}" y2="{y:.1f}"/>')
    for index, (label, values) in enumerate(columns):
        x = LEFT + GAP + index * (COLUMN + GAP)
        base = 10.0 + HEIGHT
        for series, value in enumerate(values):
            if value <= 0:
                continue
            height = HEIGHT * value / top
            base -= height
            parts.append(
                f'<rect class="chart-s{series}" x="{x}" y="{base:.1f}" width="{COLUMN}" height="{height:.1f}">'
                f"<title>{escape(label)}: {escape(value_text(value))}</title></rect>"
            )
        label_y = 10 + HEIGHT + 6
        parts.append(
            f'<text class="chart-axis" x="{x + COLUMN / 2:.1f}" y="{label_y}" text-anchor="end" '
            f'transform="rotate(-60 {x + COLUMN / 2:.1f} {label_y})">{escape(label)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)

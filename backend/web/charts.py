"""Charts as SVG drawn on the server: no script, nothing loaded, readable by a screen reader (a
`<title>` and a table of the same numbers beside every chart on the page).

    bar_chart([("北山村", 0.92), ...], value_text=percent, max_value=1.0, title="…")
    line_chart(["2025-09-01", ...], [("北山街道", [0.1, 0.25, ...]), ...], value_text=percent, title="…")

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


# A line chart: the plot, its scale on the left, turned labels below, the legend on the right.
PLOT_WIDTH = 560
PLOT_HEIGHT = 220
PLOT_LEFT = 56  # room for the scale's labels
PLOT_TOP = 10
PLOT_BOTTOM = 80  # room for the turned labels below
LEGEND_WIDTH = 170
LEGEND_ROW = 18
MAX_X_LABELS = 14
# Series are told apart by colour (`chart-l0` … `chart-l7`, screens.css) and, after the eighth, by
# a dashed line as well (`chart-dashed`), so twenty townships stay distinct.
LINE_COLOURS = 8


def line_chart(
    x_labels: Sequence[str],
    series: Sequence[tuple[str, Sequence[float]]],
    *,
    title: str,
    value_text: Callable[[float], str],
    max_value: float = 1.0,
) -> str:
    """One line per series over the same points (`x_labels`, oldest first), from 0 at the bottom to
    `max_value` (or the highest value, if higher) at the top; each point a dot with its label and
    value as a tooltip; the legend names the series in order. Every series has a value per label."""
    top = max([max_value, *(v for _name, values in series for v in values)]) or 1.0
    count = len(x_labels)
    step = PLOT_WIDTH / (count - 1) if count > 1 else 0.0
    legend_height = PLOT_TOP + len(series) * LEGEND_ROW + PLOT_TOP
    width = PLOT_LEFT + PLOT_WIDTH + 20 + LEGEND_WIDTH
    height = max(PLOT_TOP + PLOT_HEIGHT + PLOT_BOTTOM, legend_height)
    bottom = PLOT_TOP + PLOT_HEIGHT

    def x_of(index: int) -> float:
        return PLOT_LEFT + (index * step if count > 1 else PLOT_WIDTH / 2)

    def y_of(value: float) -> float:
        return bottom - PLOT_HEIGHT * max(0.0, min(1.0, value / top))

    parts = [
        f'<svg class="chart" role="img" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
    ]
    for fraction in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = bottom - PLOT_HEIGHT * fraction
        parts.append(
            f'<line class="chart-grid" x1="{PLOT_LEFT}" x2="{PLOT_LEFT + PLOT_WIDTH}" y1="{y:.1f}" y2="{y:.1f}"/>'
        )
        parts.append(
            f'<text class="chart-axis" x="{PLOT_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{escape(value_text(top * fraction))}</text>"
        )
    every = max(1, -(-count // MAX_X_LABELS))  # at most MAX_X_LABELS labels, the first always
    for index, label in enumerate(x_labels):
        if index % every:
            continue
        x, label_y = x_of(index), bottom + 8
        parts.append(
            f'<text class="chart-axis" x="{x:.1f}" y="{label_y}" text-anchor="end" '
            f'transform="rotate(-60 {x:.1f} {label_y})">{escape(label)}</text>'
        )
    for number, (name, values) in enumerate(series):
        line = f"chart-line chart-l{number % LINE_COLOURS}" + (" chart-dashed" if number >= LINE_COLOURS else "")
        points = " ".join(f"{x_of(i):.1f},{y_of(v):.1f}" for i, v in enumerate(values))
        parts.append(f'<g class="{line}"><polyline points="{points}"/>')
        for i, value in enumerate(values):
            label = x_labels[i] if i < count else ""
            parts.append(
                f'<circle cx="{x_of(i):.1f}" cy="{y_of(value):.1f}" r="2.5">'
                f"<title>{escape(name)} {escape(label)}: {escape(value_text(value))}</title></circle>"
            )
        parts.append("</g>")
        legend_x, legend_y = PLOT_LEFT + PLOT_WIDTH + 20, PLOT_TOP + number * LEGEND_ROW + LEGEND_ROW / 2
        parts.append(
            f'<g class="{line}"><line x1="{legend_x}" x2="{legend_x + 22}" y1="{legend_y:.1f}" y2="{legend_y:.1f}"/>'
            f'<text class="chart-label" x="{legend_x + 28}" y="{legend_y + 4:.1f}">{escape(name)}</text></g>'
        )
    parts.append("</svg>")
    return "".join(parts)

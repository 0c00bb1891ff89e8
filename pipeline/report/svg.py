"""Inline SVG charts: line charts and grouped bar charts, as self-contained `<svg>` strings.

Inputs are plain numbers; None and non-finite values are left out (a gap, or no bar), never
drawn as zero. Every label is escaped. Each point or bar carries a <title> tooltip with its
exact value, since the charts are read offline without any script.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from pipeline.report.markup import esc, is_number

# Colour-blind-safe palette (Okabe-Ito).
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442")

_MARGIN_LEFT, _MARGIN_RIGHT, _MARGIN_TOP, _MARGIN_BOTTOM = 58, 16, 30, 46


@dataclass(frozen=True)
class Series:
    """One named data series. points: (x, y) for line charts; values: one per category for bars."""

    name: str
    points: Sequence[tuple[float, float | None]] = ()
    values: Sequence[float | None] = ()


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About `count` round tick values covering [low, high] (low < high)."""
    if not (is_number(low) and is_number(high)) or high <= low:
        raise ValueError(f"tick range must be finite with low < high, got {low!r}, {high!r}")
    raw = (high - low) / max(1, count)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step - 1e-9) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    return ticks


def _range(values: Sequence[float], y_range: tuple[float, float] | None) -> tuple[float, float]:
    if y_range is not None:
        return y_range
    low, high = min(values), max(values)
    if low == high:
        pad = abs(low) * 0.1 or 1.0
        return low - pad, high + pad
    pad = (high - low) * 0.08
    return low - pad, high + pad


def _tick_label(value: float, step: float) -> str:
    decimals = max(0, -math.floor(math.log10(step))) if step > 0 else 0
    if step * 10**decimals % 1:
        decimals += 1
    return f"{value:.{decimals}f}"


def _frame(width: int, height: int, title: str, x_label: str, y_label: str, body: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{esc(title)}">'
        f"<title>{esc(title)}</title>"
        f'<text x="{width / 2:.1f}" y="18" class="ct" text-anchor="middle">{esc(title)}</text>'
        f"{body}"
        f'<text x="{(_MARGIN_LEFT + width - _MARGIN_RIGHT) / 2:.1f}" y="{height - 6}" class="al" '
        f'text-anchor="middle">{esc(x_label)}</text>'
        f'<text x="14" y="{(_MARGIN_TOP + height - _MARGIN_BOTTOM) / 2:.1f}" class="al" '
        f'text-anchor="middle" transform="rotate(-90 14 {(_MARGIN_TOP + height - _MARGIN_BOTTOM) / 2:.1f})">'
        f"{esc(y_label)}</text></svg>"
    )


def _y_axis(low: float, high: float, width: int, height: int) -> tuple[str, callable]:
    plot_top, plot_bottom = _MARGIN_TOP, height - _MARGIN_BOTTOM
    scale = (plot_bottom - plot_top) / (high - low)

    def y_of(value: float) -> float:
        return plot_bottom - (value - low) * scale

    ticks = nice_ticks(low, high)
    step = ticks[1] - ticks[0] if len(ticks) > 1 else (high - low)
    parts = []
    for t in ticks:
        if low - 1e-12 <= t <= high + 1e-12:
            y = y_of(t)
            parts.append(
                f'<line x1="{_MARGIN_LEFT}" y1="{y:.1f}" x2="{width - _MARGIN_RIGHT}" y2="{y:.1f}" '
                f'class="gl"/><text x="{_MARGIN_LEFT - 6}" y="{y + 4:.1f}" class="tl" '
                f'text-anchor="end">{esc(_tick_label(t, step))}</text>'
            )
    parts.append(
        f'<line x1="{_MARGIN_LEFT}" y1="{plot_top}" x2="{_MARGIN_LEFT}" y2="{plot_bottom}" class="ax"/>'
        f'<line x1="{_MARGIN_LEFT}" y1="{plot_bottom}" x2="{width - _MARGIN_RIGHT}" '
        f'y2="{plot_bottom}" class="ax"/>'
    )
    return "".join(parts), y_of


def _legend(series: Sequence[Series], width: int) -> str:
    if len(series) < 2:
        return ""
    parts, x = [], width - _MARGIN_RIGHT
    for index in reversed(range(len(series))):
        name = series[index].name
        x -= 18 + 7 * len(name)
        parts.append(
            f'<rect x="{x:.1f}" y="{_MARGIN_TOP - 12}" width="10" height="10" '
            f'fill="{PALETTE[index % len(PALETTE)]}"/>'
            f'<text x="{x + 13:.1f}" y="{_MARGIN_TOP - 3}" class="tl">{esc(name)}</text>'
        )
    return "".join(parts)


def line_chart(
    series: Sequence[Series],
    title: str,
    x_label: str,
    y_label: str,
    width: int = 460,
    height: int = 260,
    y_range: tuple[float, float] | None = None,
    digits: int = 4,
) -> str:
    """An SVG line chart of each series' (x, y) points, with dots and value tooltips.

    Raises ValueError when no series has a finite point.
    """
    finite = [[(x, y) for x, y in s.points if is_number(x) and is_number(y)] for s in series]
    xs = [x for pts in finite for x, _ in pts]
    ys = [y for pts in finite for _, y in pts]
    if not xs:
        raise ValueError(f"chart {title!r}: no finite data points")
    low, high = _range(ys, y_range)
    axis, y_of = _y_axis(low, high, width, height)
    x_low, x_high = min(xs), max(xs)
    if x_low == x_high:
        x_low, x_high = x_low - 1, x_high + 1
    plot_left, plot_right = _MARGIN_LEFT + 8, width - _MARGIN_RIGHT - 8

    def x_of(value: float) -> float:
        return plot_left + (value - x_low) * (plot_right - plot_left) / (x_high - x_low)

    parts = [axis]
    for t in nice_ticks(x_low, x_high, 5):
        if x_low <= t <= x_high:
            parts.append(
                f'<text x="{x_of(t):.1f}" y="{height - _MARGIN_BOTTOM + 16}" class="tl" '
                f'text-anchor="middle">{esc(f"{t:g}")}</text>'
            )
    for index, pts in enumerate(finite):
        colour = PALETTE[index % len(PALETTE)]
        pts = sorted(pts)
        if len(pts) > 1:
            path = " ".join(f"{x_of(x):.1f},{y_of(y):.1f}" for x, y in pts)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for x, y in pts:
            parts.append(
                f'<circle cx="{x_of(x):.1f}" cy="{y_of(y):.1f}" r="3" fill="{colour}">'
                f"<title>{esc(series[index].name)}: {esc(f'{x:g}')} -> {esc(f'{y:.{digits}f}')}"
                f"</title></circle>"
            )
    parts.append(_legend(series, width))
    return _frame(width, height, title, x_label, y_label, "".join(parts))


def bar_chart(
    categories: Sequence[str],
    series: Sequence[Series],
    title: str,
    x_label: str,
    y_label: str,
    width: int | None = None,
    height: int = 280,
    y_range: tuple[float, float] | None = None,
    digits: int = 4,
) -> str:
    """An SVG grouped bar chart: one group per category, one bar per series (`Series.values`).

    Bars start at the bottom of the y range (state it in the title when it is not zero).
    Raises ValueError when a series' value count differs from the categories or no value is finite.
    """
    for s in series:
        if len(s.values) != len(categories):
            raise ValueError(
                f"chart {title!r}: series {s.name!r} has {len(s.values)} values "
                f"for {len(categories)} categories"
            )
    values = [v for s in series for v in s.values if is_number(v)]
    if not values:
        raise ValueError(f"chart {title!r}: no finite values")
    group_width = max(34, 14 * len(series) + 10)
    if width is None:
        width = _MARGIN_LEFT + _MARGIN_RIGHT + group_width * len(categories) + 10
    low, high = y_range if y_range is not None else (min(0.0, min(values)), max(values) * 1.08 or 1.0)
    axis, y_of = _y_axis(low, high, width, height)
    plot_left = _MARGIN_LEFT + 5
    group = (width - _MARGIN_RIGHT - plot_left) / len(categories)
    bar = (group - 6) / max(1, len(series))
    parts = [axis]
    for ci, category in enumerate(categories):
        gx = plot_left + ci * group
        parts.append(
            f'<text x="{gx + group / 2:.1f}" y="{height - _MARGIN_BOTTOM + 14}" class="tl" '
            f'text-anchor="middle">{esc(category)}</text>'
        )
        for si, s in enumerate(series):
            value = s.values[ci]
            if not is_number(value):
                continue
            shown = min(max(value, low), high)
            top, bottom = y_of(shown), y_of(low)
            parts.append(
                f'<rect x="{gx + 3 + si * bar:.1f}" y="{top:.1f}" width="{max(bar - 1, 1):.1f}" '
                f'height="{max(bottom - top, 0):.1f}" fill="{PALETTE[si % len(PALETTE)]}">'
                f"<title>{esc(s.name)} {esc(category)}: {esc(f'{value:.{digits}f}')}</title></rect>"
            )
    parts.append(_legend(series, width))
    return _frame(width, height, title, x_label, y_label, "".join(parts))


def interval_chart(
    rows: Sequence[tuple[str, float | None, float | None, float | None]],
    title: str,
    x_label: str,
    references: Sequence[tuple[float, str]] = (),
    width: int = 560,
    digits: int = 4,
) -> str:
    """An SVG chart of one estimate with its interval per row (a forest plot).

    rows: (label, estimate, low, high); a row with a non-finite value is listed without a bar.
    references: (x, name) vertical lines, e.g. zero and a threshold.
    Raises ValueError when no row has a finite interval.
    """
    finite = [(lo, hi) for _, est, lo, hi in rows if all(is_number(v) for v in (est, lo, hi))]
    if not finite:
        raise ValueError(f"chart {title!r}: no finite intervals")
    xs = [v for pair in finite for v in pair] + [x for x, _ in references if is_number(x)]
    low, high = _range(xs, None)
    row_height, left = 22, 150
    height = _MARGIN_TOP + row_height * len(rows) + _MARGIN_BOTTOM
    plot_right = width - _MARGIN_RIGHT

    def x_of(value: float) -> float:
        return left + (min(max(value, low), high) - low) * (plot_right - left) / (high - low)

    parts = []
    ticks = nice_ticks(low, high, 5)
    step = ticks[1] - ticks[0] if len(ticks) > 1 else high - low
    bottom = height - _MARGIN_BOTTOM
    for t in ticks:
        if low <= t <= high:
            parts.append(
                f'<line x1="{x_of(t):.1f}" y1="{_MARGIN_TOP}" x2="{x_of(t):.1f}" y2="{bottom}" '
                f'class="gl"/><text x="{x_of(t):.1f}" y="{bottom + 16}" class="tl" '
                f'text-anchor="middle">{esc(_tick_label(t, step))}</text>'
            )
    for index, (x, name) in enumerate(references):
        if is_number(x):
            colour = PALETTE[(index + 5) % len(PALETTE)]
            parts.append(
                f'<line x1="{x_of(x):.1f}" y1="{_MARGIN_TOP - 4}" x2="{x_of(x):.1f}" y2="{bottom}" '
                f'stroke="{colour}" stroke-dasharray="4 3"><title>{esc(name)}: '
                f"{esc(f'{x:+.{digits}f}')}</title></line>"
            )
    for index, (label, estimate, lo, hi) in enumerate(rows):
        y = _MARGIN_TOP + row_height * index + row_height / 2
        parts.append(f'<text x="{left - 8}" y="{y + 4:.1f}" class="tl" text-anchor="end">{esc(label)}</text>')
        if not all(is_number(v) for v in (estimate, lo, hi)):
            parts.append(f'<text x="{left + 4}" y="{y + 4:.1f}" class="tl">not computable</text>')
            continue
        tip = f"{label}: {estimate:+.{digits}f} ({lo:+.{digits}f} to {hi:+.{digits}f})"
        parts.append(
            f"<g><title>{esc(tip)}</title>"
            f'<line x1="{x_of(lo):.1f}" y1="{y:.1f}" x2="{x_of(hi):.1f}" y2="{y:.1f}" '
            f'stroke="{PALETTE[0]}" stroke-width="2"/>'
            f'<line x1="{x_of(lo):.1f}" y1="{y - 5:.1f}" x2="{x_of(lo):.1f}" y2="{y + 5:.1f}" '
            f'stroke="{PALETTE[0]}" stroke-width="2"/>'
            f'<line x1="{x_of(hi):.1f}" y1="{y - 5:.1f}" x2="{x_of(hi):.1f}" y2="{y + 5:.1f}" '
            f'stroke="{PALETTE[0]}" stroke-width="2"/>'
            f'<circle cx="{x_of(estimate):.1f}" cy="{y:.1f}" r="4" fill="{PALETTE[1]}"/></g>'
        )
    parts.append(f'<line x1="{left}" y1="{bottom}" x2="{plot_right}" y2="{bottom}" class="ax"/>')
    return _frame(width, height, title, x_label, "", "".join(parts))

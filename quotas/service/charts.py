"""SVG charts of the quotas page, built from plain values.

Pure functions: numbers and names in, an SVG string out; no I/O, no clock. Every name and
label is escaped (a user may be called ``<script>``). Labels and titles come in said in the page's
language; the words the charts add themselves (tooltips, "no data") are said in ``locale``. Each bar carries a ``<title>``, which
browsers show as a tooltip, and ``data-*`` attributes that say what it stands for.

- :func:`stacked_bars`: GPU-hours per day, stacked per user, with axes, gridlines and a legend.
- :func:`meters`: use now against a ceiling, one horizontal bar per resource.
- :func:`sparkline`: a server's GPU utilization over the last hour, small enough for a table cell.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from html import escape
from typing import NamedTuple

from i18n import DEFAULT_LOCALE, _, say

from ..quantity import format_number

Number = Decimal | int | float

# Tableau 10: distinguishable, and readable on light and dark backgrounds
PALETTE = (
    "#4e79a7",
    "#f28e2b",
    "#e15759",
    "#76b7b2",
    "#59a14f",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#bab0ac",
)
OTHERS_COLOR = "#8c8c8c"
FONT = 'font-family="system-ui, -apple-system, \'Segoe UI\', Roboto, sans-serif" font-size="12"'  # i18n: SVG markup


def _dec(value: Number) -> Decimal:
    """Exact for Decimal and int; a float goes through its shortest repr (0.1 -> Decimal("0.1"))."""
    return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)


def nice_ceiling(value: float) -> tuple[float, float]:
    """An axis top at or above ``value`` and its tick step: 1, 2, 2.5 or 5 times a power of ten,
    in 4 or 5 steps (7.3 -> (8, 2); 0 -> (1, 0.25))."""
    if value <= 0:
        return 1.0, 0.25
    raw = value / 4
    power = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 2.5, 5, 10):
        step = factor * power
        if step * 4 >= value * (1 - 1e-12):
            return step * 4, step
    return 40 * power, 10 * power  # unreachable: factor 10 always fits


def _px(value: float) -> str:
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _attr(value: str) -> str:
    return escape(value, quote=True)


def _top_series(
    series: Mapping[str, Sequence[Number]], count: int, max_series: int, others_label: str | Callable[[int], str]
) -> list[tuple[str, list[Decimal], str]]:
    """The ``max_series`` largest series by total (ties by name), then one that sums the rest."""
    rows = []
    for name, values in series.items():
        if len(values) != count:
            why = f"series {name!r} has {len(values)} values for {count} categories"  # i18n: a programming error
            raise ValueError(why)
        rows.append((name, [_dec(v) for v in values]))
    rows.sort(key=lambda r: (-sum(r[1], Decimal(0)), r[0]))
    kept = rows if len(rows) <= max_series else rows[: max_series - 1]
    out = [(name, values, PALETTE[i % len(PALETTE)]) for i, (name, values) in enumerate(kept)]
    rest = rows[len(kept) :]
    if rest:
        summed = [sum((r[1][i] for r in rest), Decimal(0)) for i in range(count)]
        label = others_label(len(rest)) if callable(others_label) else others_label.format(n=len(rest))
        out.append((label, summed, OTHERS_COLOR))
    return out


def stacked_bars(
    labels: Sequence[str],
    series: Mapping[str, Sequence[Number]],
    *,
    unit: str,
    title: str,
    long_labels: Sequence[str] | None = None,
    x_title: str = "",
    width: int = 760,
    plot_height: int = 220,
    max_series: int = 10,
    others_label: str | Callable[[int], str] = "{n} others",
    empty_text: str | None = None,
    locale: str = DEFAULT_LOCALE,
) -> str:
    """A stacked bar chart: one column per label, one coloured segment per series.

    ``series`` maps a name (a user) to one value per label (a day), in legend order after
    sorting by total; beyond ``max_series`` the smallest are summed into one grey series
    named by ``others_label`` (``{n}`` is their number; or a function of it). Segment heights are proportional to their values on a
    0-based axis with round ticks. ``long_labels`` (default ``labels``) name the columns
    in tooltips. Zero values draw nothing; without any, the chart says ``empty_text`` (default:
    "Nothing used in this period", said in ``locale``).
    """
    count = len(labels)
    long = list(long_labels) if long_labels is not None else list(labels)
    if len(long) != count:
        raise ValueError(f"{len(long)} long labels for {count} labels")  # i18n: a programming error
    rows = _top_series(series, count, max(1, max_series), others_label)
    totals = [sum((values[i] for _name, values, _color in rows), Decimal(0)) for i in range(count)]
    top, step = nice_ceiling(float(max(totals, default=Decimal(0))))

    left, right, top_pad = 56, 12, 12
    plot_width = width - left - right
    axis_y = top_pad + plot_height
    column = plot_width / count if count else plot_width
    bar = max(1.0, min(36.0, column * 0.72))

    legend_items, legend_rows = _legend_layout([(name, color) for name, _values, color in rows], width - left)
    legend_top = axis_y + (52 if x_title else 34)
    height = legend_top + legend_rows * 18 + 6

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="aidc-chart" role="img" viewBox="0 0 {width} {height}"'  # i18n: SVG markup
        f' width="100%" preserveAspectRatio="xMinYMin meet" {FONT}>',
        f"<title>{escape(title)}</title>",
    ]
    # gridlines and y-axis ticks
    ticks = round(top / step)
    for i in range(ticks + 1):
        value = step * i
        y = axis_y - plot_height * value / top
        out.append(
            f'<line class="grid" x1="{left}" x2="{left + plot_width}" y1="{_px(y)}" y2="{_px(y)}"'  # i18n: SVG markup
            ' stroke="currentColor" stroke-opacity="0.15"/>'
        )
        out.append(
            f'<text class="tick y" x="{left - 6}" y="{_px(y + 4)}" text-anchor="end" fill="currentColor">'  # i18n: SVG markup
            f"{escape(format_number(value, 2))}</text>"
        )
    out.append(
        f'<text class="axis-title y" transform="translate(14 {_px(top_pad + plot_height / 2)}) rotate(-90)"'  # i18n: SVG markup
        f' text-anchor="middle" fill="currentColor">{escape(unit)}</text>'
    )
    # bars, bottom-up in legend order
    for i in range(count):
        x = left + column * i + (column - bar) / 2
        base = 0.0
        for name, values, color in rows:
            amount = values[i]
            if amount <= 0:
                continue
            h = plot_height * float(amount) / top
            y = axis_y - base - h
            base += h
            tip = say(
                _(
                    "{series}, {label}: {value} {unit}",
                    series=name,
                    label=long[i],
                    value=format_number(amount, 2),
                    unit=unit,
                ),
                locale,
            )
            out.append(
                f'<rect class="bar" x="{_px(x)}" y="{_px(y)}" width="{_px(bar)}" height="{_px(h)}"'  # i18n: SVG markup
                f' fill="{color}" data-series="{_attr(name)}" data-label="{_attr(long[i])}"'
                f' data-value="{_attr(format_number(amount, 4))}"><title>{escape(tip)}</title></rect>'
            )
    # x axis and its labels (every k-th when crowded)
    out.append(
        f'<line class="axis x" x1="{left}" x2="{left + plot_width}" y1="{axis_y}" y2="{axis_y}"'  # i18n: SVG markup
        ' stroke="currentColor" stroke-opacity="0.6"/>'
    )
    every = max(1, math.ceil(count / max(1, plot_width // 22)))
    for i, label in enumerate(labels):
        if i % every and i != count - 1:
            continue
        x = left + column * i + column / 2
        out.append(
            f'<text class="tick x" x="{_px(x)}" y="{axis_y + 16}" text-anchor="middle" fill="currentColor">'  # i18n: SVG markup
            f"{escape(label)}</text>"
        )
    if x_title:
        out.append(
            f'<text class="axis-title x" x="{_px(left + plot_width / 2)}" y="{axis_y + 36}" text-anchor="middle"'  # i18n: SVG markup
            f' fill="currentColor">{escape(x_title)}</text>'
        )
    if not any(totals):
        empty = empty_text if empty_text is not None else say(_("Nothing used in this period"), locale)
        out.append(
            f'<text class="empty" x="{_px(left + plot_width / 2)}" y="{_px(top_pad + plot_height / 2)}"'  # i18n: SVG markup
            f' text-anchor="middle" fill="currentColor" fill-opacity="0.7">{escape(empty)}</text>'
        )
    # legend
    out.append('<g class="legend">')
    for (name, values, color), (lx, line) in zip(rows, legend_items, strict=True):
        y = legend_top + line * 18
        total = sum(values, Decimal(0))
        tip = say(_("{series}: {value} {unit} in total", series=name, value=format_number(total, 2), unit=unit), locale)
        out.append(
            f'<g class="legend-item" data-series="{_attr(name)}"><title>{escape(tip)}</title>'  # i18n: SVG markup
            f'<rect x="{_px(left + lx)}" y="{y - 10}" width="12" height="12" fill="{color}"/>'
            f'<text x="{_px(left + lx + 16)}" y="{y}" fill="currentColor">{escape(name)}</text></g>'
        )
    out.append("</g></svg>")
    return "".join(out)


def _legend_layout(items: Sequence[tuple[str, str]], width: int) -> tuple[list[tuple[float, int]], int]:
    """Where each legend entry goes, as (x, row), wrapping at ``width``; and the number of rows."""
    places: list[tuple[float, int]] = []
    x, row = 0.0, 0
    for name, _color in items:
        needed = 16 + 7 * len(name) + 18  # swatch, text at ~7 px a character, gap
        if x and x + needed > width:
            x, row = 0.0, row + 1
        places.append((x, row))
        x += needed
    return places, (row + 1) if items else 0


class Meter(NamedTuple):
    """One row of :func:`meters`: ``used`` of ``ceiling`` (None: no ceiling), and the text to show."""

    label: str
    used: Number
    ceiling: Number | None
    text: str


def meters(rows: Sequence[Meter], *, title: str, width: int = 460, locale: str = DEFAULT_LOCALE) -> str:
    """Horizontal bars of use against a ceiling, one per row; full at the ceiling.

    The bar is green below 75 % of the ceiling, amber up to it and red at or above it.
    A row without a ceiling draws its text only.
    """
    label_width, text_width, row_height = 90, 170, 26
    track = width - label_width - text_width
    height = row_height * len(rows) + 4
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="aidc-meters" role="img" viewBox="0 0 {width} {height}"'  # i18n: SVG markup
        f' width="100%" preserveAspectRatio="xMinYMin meet" {FONT}>',
        f"<title>{escape(title)}</title>",
    ]
    for i, row in enumerate(rows):
        y = 4 + i * row_height
        used = _dec(row.used)
        ceiling = None if row.ceiling is None else _dec(row.ceiling)
        tip = say(_("{label}: {value}", label=row.label, value=row.text), locale)
        out.append(
            f'<g class="meter" data-label="{_attr(row.label)}"><title>{escape(tip)}</title>'  # i18n: SVG markup
            f'<text x="0" y="{y + 13}" fill="currentColor">{escape(row.label)}</text>'
        )
        if ceiling is not None:
            share = 1.0 if ceiling <= 0 and used > 0 else 0.0 if ceiling <= 0 else min(1.0, float(used / ceiling))
            color = "#dc3545" if share >= 1 else "#fd7e14" if share >= 0.75 else "#198754"
            out.append(
                f'<rect class="track" x="{label_width}" y="{y + 2}" width="{track}" height="14" rx="3"'  # i18n: SVG markup
                ' fill="currentColor" fill-opacity="0.12"/>'
            )
            if share > 0:
                out.append(
                    f'<rect class="fill" x="{label_width}" y="{y + 2}" width="{_px(track * share)}" height="14"'  # i18n: SVG markup
                    f' rx="3" fill="{color}" data-share="{_px(share)}"/>'
                )
        out.append(
            f'<text class="value" x="{label_width + track + 8}" y="{y + 13}" fill="currentColor">'  # i18n: SVG markup
            f"{escape(row.text)}</text></g>"
        )
    out.append("</svg>")
    return "".join(out)


def sparkline(
    points: Sequence[tuple[float, Number]], *, span: float, title: str, width: int = 140, locale: str = DEFAULT_LOCALE
) -> str:
    """A small line of percentages (0-100) over time: ``points`` are (seconds into the window,
    percent), the window ``span`` seconds wide (the last hour: 3600), drawn left to right with a
    faint 100 % frame. Without points it says so. The last value is written after the line."""
    height, text_width = 24, 36
    plot = width - text_width
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="aidc-sparkline" role="img" viewBox="0 0 {width} {height}"'  # i18n: SVG markup
        f' width="{width}" height="{height}" data-points="{len(points)}" {FONT}>',
        f"<title>{escape(title)}</title>",
        f'<rect class="frame" x="0" y="2" width="{plot}" height="{height - 4}" fill="currentColor" fill-opacity="0.06"/>',  # i18n: SVG markup
    ]
    if not points:
        none = escape(say(_("no data"), locale))
        markup = f'<text x="4" y="{height - 8}" fill="currentColor" fill-opacity="0.6">{none}</text></svg>'  # i18n: SVG
        out.append(markup)
        return "".join(out)

    def xy(at: float, percent: Number) -> str:
        share = min(1.0, max(0.0, float(_dec(percent)) / 100))
        x = plot * min(1.0, max(0.0, at / span)) if span > 0 else plot
        return f"{_px(x)},{_px(2 + (height - 4) * (1 - share))}"

    line = " ".join(xy(at, percent) for at, percent in points)
    last = float(_dec(points[-1][1]))
    color = "#198754" if last >= 50 else "#fd7e14" if last >= 5 else "#dc3545"
    out.append(f'<polyline points="{line}" fill="none" stroke="{color}" stroke-width="1.5"/>')  # i18n: SVG markup
    if len(points) == 1:
        out.append(
            f'<circle cx="{xy(*points[0]).split(",")[0]}" cy="{xy(*points[0]).split(",")[1]}" r="2" fill="{color}"/>'  # i18n: SVG markup
        )
    out.append(
        f'<text class="value" x="{plot + 4}" y="{height - 8}" fill="currentColor" data-value="{_px(last)}">'  # i18n: SVG markup
        f"{format_number(_dec(round(last)))}%</text></svg>"
    )
    return "".join(out)

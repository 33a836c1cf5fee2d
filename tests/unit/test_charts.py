"""quotas.service.charts: the page's SVG charts, read back as XML (structure, proportions, escaping)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import pytest

from quotas.service.charts import Meter, Number, meters, nice_ceiling, sparkline, stacked_bars

SVG = "{http://www.w3.org/2000/svg}"


def parse(svg: str) -> ET.Element:
    """The chart as an XML tree: it must be well-formed on its own (it is inlined in HTML)."""
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    return root


def bars(root: ET.Element) -> list[ET.Element]:
    return [r for r in root.iter(f"{SVG}rect") if r.get("class") == "bar"]


def texts(root: ET.Element, cls: str) -> list[str]:
    return [t.text or "" for t in root.iter(f"{SVG}text") if t.get("class") == cls]


def tooltip(el: ET.Element) -> str:
    title = el.find(f"{SVG}title")
    assert title is not None
    return title.text or ""


DAYS = ["1", "2", "3", "4"]
LONG = ["2026-11-01", "2026-11-02", "2026-11-03", "2026-11-04"]


def chart(series: dict[str, Sequence[Number]], **kw: Any) -> ET.Element:
    return parse(stacked_bars(DAYS, series, unit="GPU-hours", title="GPU-hours per day", long_labels=LONG, **kw))


def test_one_bar_per_nonzero_value_with_a_tooltip() -> None:
    root = chart({"alice": [Decimal(2), Decimal(0), Decimal("1.5"), Decimal(0)], "bob": [Decimal(1)] * 4})
    found = [(b.get("data-series"), b.get("data-label"), b.get("data-value"), tooltip(b)) for b in bars(root)]
    assert sorted(found) == sorted(
        [
            ("alice", "2026-11-01", "2", "alice, 2026-11-01: 2 GPU-hours"),
            ("alice", "2026-11-03", "1.5", "alice, 2026-11-03: 1.5 GPU-hours"),
            ("bob", "2026-11-01", "1", "bob, 2026-11-01: 1 GPU-hours"),
            ("bob", "2026-11-02", "1", "bob, 2026-11-02: 1 GPU-hours"),
            ("bob", "2026-11-03", "1", "bob, 2026-11-03: 1 GPU-hours"),
            ("bob", "2026-11-04", "1", "bob, 2026-11-04: 1 GPU-hours"),
        ]
    )
    assert tooltip(root) == "GPU-hours per day"


def test_heights_are_proportional_and_segments_stack_on_a_zero_axis() -> None:
    root = chart({"alice": [Decimal(3), Decimal(1), 0, 0], "bob": [Decimal(1), 0, 0, 0]})
    by = {(b.get("data-series"), b.get("data-label")): b for b in bars(root)}
    h = {k: float(b.get("height", "0")) for k, b in by.items()}
    y = {k: float(b.get("y", "0")) for k, b in by.items()}
    assert h[("alice", "2026-11-01")] == pytest.approx(3 * h[("alice", "2026-11-02")])
    assert h[("bob", "2026-11-01")] == pytest.approx(h[("alice", "2026-11-02")])
    # the axis goes to 4 (the tallest column is 3 + 1): its column fills the plot exactly
    axis = next(e for e in root.iter(f"{SVG}line") if e.get("class") == "axis x")
    axis_y = float(axis.get("y1", "0"))
    assert y[("alice", "2026-11-01")] + h[("alice", "2026-11-01")] == pytest.approx(axis_y)
    assert y[("bob", "2026-11-01")] + h[("bob", "2026-11-01")] == pytest.approx(y[("alice", "2026-11-01")])
    assert texts(root, "tick y") == ["0", "1", "2", "3", "4"]
    top_grid = min(float(e.get("y1", "0")) for e in root.iter(f"{SVG}line") if e.get("class") == "grid")
    assert y[("bob", "2026-11-01")] == pytest.approx(top_grid)
    # the same day's segments share x and width; other days are further right
    assert by[("alice", "2026-11-01")].get("x") == by[("bob", "2026-11-01")].get("x")
    assert float(by[("alice", "2026-11-02")].get("x", "0")) > float(by[("alice", "2026-11-01")].get("x", "0"))


def test_axis_labels_legend_and_order_by_total() -> None:
    root = parse(
        stacked_bars(
            DAYS,
            {"zoe": [Decimal(1), 0, 0, 0], "amy": [Decimal(5), 0, 0, 0]},
            unit="GPU-hours",
            title="t",
            x_title="Day of November 2026",
        )
    )
    assert texts(root, "tick x") == DAYS
    assert texts(root, "axis-title y") == ["GPU-hours"]
    assert texts(root, "axis-title x") == ["Day of November 2026"]
    legend = [g for g in root.iter(f"{SVG}g") if g.get("class") == "legend-item"]
    # the largest first (drawn at the bottom of each column)
    assert [g.get("data-series") for g in legend] == ["amy", "zoe"]
    assert [tooltip(g) for g in legend] == ["amy: 5 GPU-hours in total", "zoe: 1 GPU-hours in total"]
    # each legend swatch has its series' bar colour
    colours = {b.get("data-series"): b.get("fill") for b in bars(root)}
    for g in legend:
        swatch = g.find(f"{SVG}rect")
        assert swatch is not None and swatch.get("fill") == colours[g.get("data-series")]
    assert len(set(colours.values())) == 2


def test_names_are_escaped() -> None:
    svg = stacked_bars(
        ["<b>1</b>"],
        {"<script>alert(1)</script>": [Decimal(2)], 'x" onload="alert(2)': [Decimal(1)]},
        unit="GPU-hours & more",
        title="<t>",
        x_title="</svg>",
    )
    assert "<script" not in svg and "</script>" not in svg and "<b>" not in svg
    assert 'onload="' not in svg
    root = parse(svg)  # well-formed: no name broke out of its attribute or element
    assert sorted(b.get("data-series") or "" for b in bars(root)) == [
        "<script>alert(1)</script>",
        'x" onload="alert(2)',
    ]
    assert texts(root, "tick x") == ["<b>1</b>"]
    assert texts(root, "axis-title x") == ["</svg>"]
    legend_names = [
        t.text for g in root.iter(f"{SVG}g") if g.get("class") == "legend-item" for t in g.iter(f"{SVG}text")
    ]
    assert legend_names == ["<script>alert(1)</script>", 'x" onload="alert(2)']
    assert tooltip(root) == "<t>"


def test_smallest_series_are_summed_into_others() -> None:
    series: dict[str, Sequence[Number]] = {f"user{i}": [i + 1, 0, 0, 0] for i in range(5)}  # user4 is largest
    root = chart(series, max_series=3)
    legend = [g.get("data-series") for g in root.iter(f"{SVG}g") if g.get("class") == "legend-item"]
    assert legend == ["user4", "user3", "3 others"]
    others = [b for b in bars(root) if b.get("data-series") == "3 others"]
    assert [b.get("data-value") for b in others] == ["6"]  # 1 + 2 + 3
    assert len(bars(root)) == 3


def test_empty_period_draws_axes_and_says_so() -> None:
    root = chart({"alice": [0, 0, 0, 0]}, empty_text="No GPU use in November 2026")
    assert bars(root) == []
    assert texts(root, "empty") == ["No GPU use in November 2026"]
    assert texts(root, "tick x") == DAYS
    root = parse(stacked_bars([], {}, unit="GPU-hours", title="t"))
    assert bars(root) == [] and texts(root, "empty") == ["Nothing used in this period"]


def test_crowded_x_labels_are_thinned_but_keep_the_last() -> None:
    labels = [str(d) for d in range(1, 101)]
    root = parse(stacked_bars(labels, {"a": [Decimal(1)] * 100}, unit="h", title="t", width=400))
    shown = texts(root, "tick x")
    assert shown[0] == "1" and shown[-1] == "100" and 5 < len(shown) < 40
    assert len(bars(root)) == 100


def test_series_of_the_wrong_length_is_refused() -> None:
    with pytest.raises(ValueError, match="series 'alice' has 2 values for 4 categories"):
        stacked_bars(DAYS, {"alice": [1, 2]}, unit="h", title="t")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, (1.0, 0.25)),
        (4, (4.0, 1.0)),
        (7.3, (8.0, 2.0)),
        (9, (10.0, 2.5)),
        (0.3, (0.4, 0.1)),
        (1234, (2000.0, 500.0)),
    ],
)
def test_nice_ceiling(value: float, expected: tuple[float, float]) -> None:
    assert nice_ceiling(value) == pytest.approx(expected)


def test_meters_fill_in_proportion_to_the_ceiling() -> None:
    root = parse(
        meters(
            [
                Meter("H100", 1, 4, "1 of 4 H100 GPUs"),
                Meter("A100", 2, 2, "2 of 2 A100 GPUs"),
                Meter("Memory", Decimal("48"), Decimal("64"), "48 of 64 GiB"),
                Meter("CPU", 3, None, "3 (no ceiling)"),
                Meter("<x>", 0, 0, "0 of 0"),
            ],
            title="Use now",
        )
    )
    groups = [g for g in root.iter(f"{SVG}g") if g.get("class") == "meter"]
    assert [g.get("data-label") for g in groups] == ["H100", "A100", "Memory", "CPU", "<x>"]
    tracks = {g.get("data-label"): [r for r in g.iter(f"{SVG}rect") if r.get("class") == "track"] for g in groups}
    fills = {g.get("data-label"): [r for r in g.iter(f"{SVG}rect") if r.get("class") == "fill"] for g in groups}
    width = float(tracks["H100"][0].get("width", "0"))
    assert float(fills["H100"][0].get("width", "0")) == pytest.approx(width / 4)
    assert float(fills["A100"][0].get("width", "0")) == pytest.approx(width)
    assert float(fills["Memory"][0].get("width", "0")) == pytest.approx(width * 0.75)
    # colour says how close to the ceiling: green, amber, red
    assert [fills[k][0].get("fill") for k in ("H100", "Memory", "A100")] == ["#198754", "#fd7e14", "#dc3545"]
    assert tracks["CPU"] == [] and fills["CPU"] == []  # no ceiling: text only
    assert fills["<x>"] == []
    assert [tooltip(g) for g in groups][:2] == ["H100: 1 of 4 H100 GPUs", "A100: 2 of 2 A100 GPUs"]


def test_sparkline_draws_percent_over_the_window_and_says_when_there_is_no_data() -> None:
    root = parse(sparkline([(0, 100), (1800, 50), (3600, 0)], span=3600, title="alice <b>", width=136))
    assert root.get("data-points") == "3" and tooltip(root) == "alice <b>"
    (line,) = root.iter(f"{SVG}polyline")
    # 100 wide plot (136 - 36 for the value), 20 high from y=2: full at the top, 0 % at the bottom
    assert line.get("points") == "0,2 50,12 100,22"
    assert texts(root, "value") == ["0%"]
    empty = parse(sparkline([], span=3600, title="no data"))
    assert empty.get("data-points") == "0" and list(empty.iter(f"{SVG}polyline")) == []
    assert "no data" in "".join(t.text or "" for t in empty.iter(f"{SVG}text"))
    # out-of-range values and times stay inside the frame
    (clamped,) = parse(sparkline([(-10, 150), (9999, -5)], span=3600, title="t", width=136)).iter(f"{SVG}polyline")
    assert clamped.get("points") == "0,2 100,22"

"""quotas.quantity: Kubernetes quantities parsed once, exactly, with errors for people."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from quotas.quantity import (
    QuantityError,
    exact_bytes,
    format_bytes,
    format_cpu,
    format_duration,
    format_hours,
    format_number,
    month_period,
    month_start,
    next_month,
    parse_quantity,
    previous_month,
    report_hours,
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("8Gi", Decimal(8 * 2**30)),
        ("1Ki", Decimal(1024)),
        ("16Mi", Decimal(16 * 2**20)),
        ("10Ti", Decimal(10 * 2**40)),
        ("1.5Gi", Decimal(3 * 2**29)),
        ("500m", Decimal("0.5")),
        ("100m", Decimal("0.1")),
        ("2", Decimal(2)),
        ("0.1", Decimal("0.1")),
        (".5", Decimal("0.5")),
        ("1k", Decimal(1000)),
        ("2G", Decimal(2 * 10**9)),
        ("1e3", Decimal(1000)),
        ("  4  ", Decimal(4)),
        (2, Decimal(2)),
        (0, Decimal(0)),
        (Decimal("0.25"), Decimal("0.25")),
    ],
)
def test_parse_quantity_values(value: str | int | Decimal, expected: Decimal) -> None:
    parsed = parse_quantity(value)
    assert isinstance(parsed, Decimal)
    assert parsed == expected


def test_parse_quantity_is_exact_where_floats_drift() -> None:
    # 0.1 + 0.2 != 0.3 in binary floating point; quantities must add up exactly
    assert parse_quantity("100m") + parse_quantity("200m") == parse_quantity("300m")
    assert parse_quantity("0.1") + parse_quantity("0.2") == Decimal("0.3")
    assert parse_quantity("500m") == Decimal("0.500")


def test_parse_quantity_decimal_is_returned_unchanged() -> None:
    value = Decimal("12.345")
    assert parse_quantity(value) is value


@pytest.mark.parametrize("value", [0.1, 1.0, 8.5])
def test_parse_quantity_refuses_floats(value: float) -> None:
    with pytest.raises(QuantityError, match=r"write it as a string such as \"8Gi\""):
        parse_quantity(value)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [True, False, None, [1], {"a": 1}])
def test_parse_quantity_refuses_non_quantities(value: object) -> None:
    with pytest.raises(QuantityError, match="is not a quantity"):
        parse_quantity(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "meant"),
    [("8Gb", "Gi"), ("8GB", "Gi"), ("512Mb", "Mi"), ("1Tb", "Ti"), ("4gi", "Gi")],
)
def test_parse_quantity_typo_suggests_the_binary_suffix(value: str, meant: str) -> None:
    with pytest.raises(QuantityError) as info:
        parse_quantity(value)
    message = str(info.value)
    assert repr(value) in message
    assert f"did you mean {meant!r}" in message
    number = value.rstrip("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
    assert f'"{number}{meant}"' in message


@pytest.mark.parametrize("value", ["8Xi", "3parsecs", "1Qi"])
def test_parse_quantity_unknown_unit_lists_the_known_ones(value: str) -> None:
    with pytest.raises(QuantityError, match="unknown unit") as info:
        parse_quantity(value)
    assert "Ki Mi Gi Ti Pi Ei" in str(info.value)
    assert "did you mean" not in str(info.value)


@pytest.mark.parametrize("value", ["", "Gi", "eight", "8 Gi", "1.2.3", "--1"])
def test_parse_quantity_malformed(value: str) -> None:
    with pytest.raises(QuantityError, match="is not a quantity"):
        parse_quantity(value)


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("1e999999k", "between 1e-30 and 1e30 before the unit"),  # was decimal.Overflow
        ("1e-999999n", "between 1e-30 and 1e30 before the unit"),  # was a rounded, inexact 0
        ("1e31", "between 1e-30 and 1e30"),
        ("9" * 25, "more than 24 digits"),
        ("1" * 100_000 + "Ei", "(100002 characters)"),  # the message stays short
    ],
)
def test_parse_quantity_bounds_the_number(value: str, words: str) -> None:
    with pytest.raises(QuantityError) as info:
        parse_quantity(value)
    assert words in str(info.value)
    assert len(str(info.value)) < 200


@pytest.mark.parametrize(
    ("value", "expected"), [("1e30", Decimal("1e30")), ("0e999999", Decimal(0)), ("1e-30", Decimal("1e-30"))]
)
def test_parse_quantity_at_the_bounds(value: str, expected: Decimal) -> None:
    assert parse_quantity(value) == expected


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (Decimal(8 * 2**30), "8 GiB"),
        (Decimal(512), "512 B"),
        (Decimal(3 * 2**29), "1.5 GiB"),
        (Decimal(2**40), "1 TiB"),
    ],
)
def test_format_bytes(value: Decimal, text: str) -> None:
    assert format_bytes(value) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [(Decimal("0.500"), "0.5 CPUs"), (Decimal(1), "1 CPU"), (Decimal(96), "96 CPUs"), (Decimal(100), "100 CPUs")],
)
def test_format_cpu(value: Decimal, text: str) -> None:
    assert format_cpu(value) == text


@pytest.mark.parametrize(
    ("value", "places", "expected"),
    [
        (Decimal("12.500"), None, "12.5"),
        (Decimal("1E+3"), None, "1000"),
        (Decimal("0.0005"), None, "0.0005"),
        (Decimal("2.50"), 2, "2.5"),
        (Decimal("2.005"), 2, "2.01"),  # half up, as people round
        (3, 2, "3"),
        (0.1, 2, "0.1"),  # a chart's float, by its shortest repr
        (Decimal("-0.001"), 2, "0"),
        (Decimal("1e3"), 2, "1000"),
        (Decimal("12.34567"), 4, "12.3457"),
    ],
)
def test_format_number(value: Decimal | int | float, places: int | None, expected: str) -> None:
    assert format_number(value, places) == expected


@pytest.mark.parametrize(
    ("value", "text"),
    [(Decimal(68719476736), "64Gi"), (Decimal(2**20 * 3), "3Mi"), (Decimal(1000), "1000"), (Decimal("1.5"), "1.5")],
)
def test_exact_bytes_reads_back(value: Decimal, text: str) -> None:
    assert exact_bytes(value) == text
    assert parse_quantity(text) == value


@pytest.mark.parametrize(
    ("value", "report", "sentence"),
    [
        (Decimal("12.50004"), "12.5", "12.5"),
        (Decimal("1000.44"), "1000.44", "1,000.4"),
        (Decimal("2000"), "2000", "2,000.0"),
        (Decimal("0.0005"), "0.0005", "0.0005"),  # a tiny budget keeps its digits in a sentence
        (Decimal("0.25"), "0.25", "0.3"),
        (Decimal(0), "0", "0.0"),
    ],
)
def test_hours(value: Decimal, report: str, sentence: str) -> None:
    assert report_hours(value) == report
    assert format_hours(value) == sentence


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (45, "45s"), (60, "1m"), (3725, "1h 2m"), (5400, "1h 30m"), (90000, "1d 1h"), (-5, "0s")],
)
def test_format_duration(seconds: int, text: str) -> None:
    assert format_duration(timedelta(seconds=seconds)) == text


def test_months() -> None:
    # 23:30 on 30 November in UTC-2 is already December in UTC
    late = datetime(2026, 11, 30, 23, 30, tzinfo=timezone(timedelta(hours=-2)))
    assert month_start(late) == date(2026, 12, 1)
    assert month_start(date(2026, 11, 20)) == date(2026, 11, 1)
    assert next_month(date(2026, 12, 15)) == date(2027, 1, 1)
    assert previous_month(date(2027, 1, 15)) == date(2026, 12, 1)
    start, end, name = month_period(late)
    assert (start, end, name) == (datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC), "December 2026")

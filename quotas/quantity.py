"""Kubernetes-style resource quantities, parsed once and exactly, and the one way each
quantity, number of hours, duration and month is written for people and for the API.

Follows the rules of lightkube's ``utils/quantity.py`` and Kubernetes'
``resource.Quantity``: ``"500m"`` CPU is ``Decimal("0.5")``, ``"8Gi"`` memory is
``Decimal(8 * 2**30)`` bytes. Values are :class:`decimal.Decimal`, never floats,
so ``0.1 + 0.2`` style drift cannot turn an allowed request into a refusal.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from i18n import N_, Moment, Text, _, ngettext

_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}

_QUANTITY = re.compile(r"^(?P<number>[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)(?P<suffix>[A-Za-z]*)$")

# Suffixes people type by mistake, with what they most likely meant.
_LOOKALIKES = {
    "Gb": "Gi",
    "GB": "Gi",
    "gb": "Gi",
    "g": "G or Gi",
    "Mb": "Mi",
    "MB": "Mi",
    "mb": "Mi",
    "Tb": "Ti",
    "TB": "Ti",
    "Kb": "Ki",
    "KB": "Ki",
    "K": "k or Ki",
    "gi": "Gi",
    "mi": "Mi",
    "ti": "Ti",
}


MAX_EXPONENT = 30  # the written number's power of ten, before the unit: 1e30 and 1e-30 at most
MAX_DIGITS = 24  # read exactly: Decimal's 28 digits hold it times 1024**6 (Ei)


class QuantityError(ValueError):
    """A quantity string that is not a valid Kubernetes quantity; ``args[0]`` is the reason, an
    :class:`i18n.Text` (``str()`` is its English)."""


def parse_quantity(value: str | int | Decimal) -> Decimal:
    """Return the exact value of a Kubernetes quantity.

    >>> parse_quantity("8Gi")
    Decimal('8589934592')
    >>> parse_quantity("500m")
    Decimal('0.500')

    Integers and Decimals are taken as they are. Floats are refused: a YAML
    ``cpu: 0.1`` should be written as ``"100m"`` or ``"0.1"`` (a string).

    Raises :class:`QuantityError` with a message that names the value and, for
    common typos such as ``8Gb``, the suffix that was probably meant.
    """
    if isinstance(value, bool):
        raise QuantityError(_("{value} is not a quantity", value=repr(value)))
    if isinstance(value, Decimal):
        return value
    if isinstance(value, int):
        return Decimal(value)
    if not isinstance(value, str):
        raise QuantityError(
            _('{value} is not a quantity; write it as a string such as "8Gi" or "500m"', value=repr(value))
        )
    text = value.strip()
    match = _QUANTITY.match(text)
    if not match:
        raise QuantityError(_('{value} is not a quantity (examples: "8Gi", "2", "500m")', value=repr(value)))
    number, suffix = match.group("number"), match.group("suffix")
    try:
        base = Decimal(number)
    except InvalidOperation as e:  # pragma: no cover - the regex admits only valid numbers
        raise QuantityError(_("{value} is not a quantity", value=repr(value))) from e
    if not base:
        return Decimal(0)  # "0e999999" too
    if not -MAX_EXPONENT <= base.adjusted() <= MAX_EXPONENT:
        # Kubernetes holds quantities in 64 bits (up to about 9.2E); "1e999999k" would overflow
        raise QuantityError(
            _(
                "{value} is not a quantity a cluster can hold: write a number between 1e-{exponent} and"
                " 1e{exponent} before the unit",
                value=_short(value),
                exponent=MAX_EXPONENT,
            )
        )
    if len(base.as_tuple().digits) > MAX_DIGITS:
        raise QuantityError(
            _(
                "{value} has more than {digits} digits; a quantity cannot be that exact",
                value=_short(value),
                digits=MAX_DIGITS,
            )
        )
    if suffix in _BINARY:
        return base * (Decimal(1024) ** _BINARY[suffix])
    if suffix in _DECIMAL:
        return base.scaleb(_DECIMAL[suffix])
    hint = _LOOKALIKES.get(suffix)
    if hint:
        raise QuantityError(
            _(
                '{value} has unit {suffix}, which Kubernetes does not know; did you mean {hint} (for example "{example}")?',
                value=repr(value),
                suffix=repr(suffix),
                hint=repr(hint),
                example=f"{number}{hint.split()[0]}",
            )
        )
    raise QuantityError(
        _(
            "{value} has unknown unit {suffix}; use one of Ki Mi Gi Ti Pi Ei (powers of 1024),"
            " k M G T P E (powers of 1000) or m (thousandths)",
            value=repr(value),
            suffix=repr(suffix),
        )
    )


def _short(value: str) -> str:
    text = repr(value)
    return text if len(text) <= 40 else _("{start}…' ({count} characters)", start=text[:30], count=len(value))


def format_number(value: Decimal | int | float, places: int | None = None) -> str:
    """``value`` in plain digits, without trailing zeros or exponent: exact, or rounded half up
    to ``places`` decimals. ``Decimal("12.500")`` -> ``"12.5"``; ``(Decimal("2.005"), 2)`` ->
    ``"2.01"``; ``Decimal("1E+3")`` -> ``"1000"``. A float (a chart's value) is taken by its
    shortest repr: ``0.1`` -> ``"0.1"``."""
    amount = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    if places is not None:
        amount = amount.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)
    text = f"{amount:f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def format_bytes(value: Decimal) -> str:
    """Format a byte count for people: ``8589934592`` -> ``"8 GiB"``."""
    units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"]
    amount = Decimal(value)
    unit = 0
    while abs(amount) >= 1024 and unit < len(units) - 1:
        amount /= 1024
        unit += 1
    return f"{format_number(amount, 2)} {units[unit]}"


def format_cpu(value: Decimal) -> Text:
    """Format a CPU amount for people: ``Decimal("0.5")`` -> ``"0.5 CPUs"`` (a :class:`i18n.Text`:
    ``"CPU 0.5개"`` in Korean)."""
    amount = Decimal(value)
    return ngettext("{amount} CPU", "{amount} CPUs", 1 if amount == 1 else 2, amount=format_number(amount, 2))


def exact_bytes(value: Decimal) -> str:
    """Memory as an exact quantity that :func:`parse_quantity` reads back: ``68719476736`` -> ``"64Gi"``."""
    if value != value.to_integral_value():
        return format_number(value)
    amount = int(value)
    for suffix, factor in (("Ei", 2**60), ("Pi", 2**50), ("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
        if amount and amount % factor == 0:
            return f"{amount // factor}{suffix}"
    return str(amount)


# ---------------------------------------------------------------------------------------------
# Hours (GPU- and CPU-hours of the ledger)

REPORT_PLACES = 4  # reports and the API give hours to 1/10,000 (0.36 s)


def report_hours(value: Decimal) -> str:
    """Hours as reports and the API give them: to 1/10,000, ``Decimal("12.50004")`` -> ``"12.5"``."""
    return format_number(value, REPORT_PLACES)


def report_ratio(part: Decimal, whole: Decimal) -> str | None:
    """``part`` over ``whole`` as reports give it (to 1/10,000; GPU-hours used over held), None when
    ``whole`` is 0: no GPU-hours held, no efficiency."""
    return report_hours(part / whole) if whole else None


def format_hours(value: Decimal) -> str:
    """Hours in a sentence: to a tenth, with thousands separators (``"1,000.4"``); tiny budgets
    keep their digits (``"0.0005"``), so a refusal never says "0.0 of 0.0"."""
    if 0 < value < Decimal("0.1"):
        return format_number(value, REPORT_PLACES)
    return f"{value.quantize(Decimal('0.1'), rounding=ROUND_HALF_UP):,}"


# ---------------------------------------------------------------------------------------------
# Durations and months


def format_gpus(gpus: Mapping[str, int]) -> str:
    """``{"H100": 2}`` -> ``"2 × H100"``; several types by name, joined by commas."""
    return ", ".join(f"{count} × {gpu_type}" for gpu_type, count in sorted(gpus.items()))


def format_duration(value: timedelta) -> str:
    """``"1h 5m"``, ``"45s"``, ``"2d 3h"``: the two largest units, as ``tenants.yaml`` writes
    durations; negative durations are ``"0s"``."""
    seconds = max(0, int(value.total_seconds()))
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        amount, seconds = divmod(seconds, size)
        if amount:
            parts.append(f"{amount}{unit}")
    return " ".join(parts[:2]) or "0s"


def month_start(moment: date | datetime) -> date:
    """The first day of the calendar month of ``moment`` (in UTC for a datetime)."""
    day = moment.astimezone(UTC).date() if isinstance(moment, datetime) else moment
    return day.replace(day=1)


def next_month(day: date) -> date:
    """The first day of the month after the month of ``day``."""
    return date(day.year + 1, 1, 1) if day.month == 12 else date(day.year, day.month + 1, 1)


def previous_month(day: date) -> date:
    """The first day of the month before the month of ``day``."""
    return date(day.year - 1, 12, 1) if day.month == 1 else date(day.year, day.month - 1, 1)


# a month as people name it, by its number (January is 1)
MONTHS = (
    N_("January {year}"),
    N_("February {year}"),
    N_("March {year}"),
    N_("April {year}"),
    N_("May {year}"),
    N_("June {year}"),
    N_("July {year}"),
    N_("August {year}"),
    N_("September {year}"),
    N_("October {year}"),
    N_("November {year}"),
    N_("December {year}"),
)


def month_name(day: date) -> Text:
    """The month of ``day`` as people name it: ``"November 2026"`` (``"2026년 11월"`` in Korean)."""
    return _(MONTHS[day.month - 1], year=str(day.year))


def month_period(now: datetime) -> tuple[datetime, datetime, str]:
    """The calendar month (UTC) around ``now``: (start, end, "November 2026")."""
    first = month_start(now)
    start, end = (datetime(d.year, d.month, 1, tzinfo=UTC) for d in (first, next_month(first)))
    return start, end, month_name(first)


def period_text(name: str) -> Text:
    """How a message names a budget's period (``name``: :func:`month_name`): ``"for November 2026"``,
    or ``"this month"``."""
    return _("for {month}", month=name) if name else _("this month")


def reset_text(day: date | None) -> Text:
    """When a budget resets, as a message says it: ``"on 2026-12-01 (UTC)"``, or ``"at the start of
    next month"`` where the day is not known."""
    return _("on {day} (UTC)", day=Moment(day, "date")) if day else _("at the start of next month")

"""Kubernetes-style resource quantities, parsed once and exactly.

Follows the rules of lightkube's ``utils/quantity.py`` and Kubernetes'
``resource.Quantity``: ``"500m"`` CPU is ``Decimal("0.5")``, ``"8Gi"`` memory is
``Decimal(8 * 2**30)`` bytes. Values are :class:`decimal.Decimal`, never floats,
so ``0.1 + 0.2`` style drift cannot turn an allowed request into a refusal.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

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


class QuantityError(ValueError):
    """A quantity string that is not a valid Kubernetes quantity."""


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
        raise QuantityError(f"{value!r} is not a quantity")
    if isinstance(value, Decimal):
        return value
    if isinstance(value, int):
        return Decimal(value)
    if not isinstance(value, str):
        raise QuantityError(f'{value!r} is not a quantity; write it as a string such as "8Gi" or "500m"')
    text = value.strip()
    match = _QUANTITY.match(text)
    if not match:
        raise QuantityError(f'{value!r} is not a quantity (examples: "8Gi", "2", "500m")')
    number, suffix = match.group("number"), match.group("suffix")
    try:
        base = Decimal(number)
    except InvalidOperation as e:  # pragma: no cover - the regex admits only valid numbers
        raise QuantityError(f"{value!r} is not a quantity") from e
    if suffix in _BINARY:
        return base * (Decimal(1024) ** _BINARY[suffix])
    if suffix in _DECIMAL:
        return base.scaleb(_DECIMAL[suffix])
    hint = _LOOKALIKES.get(suffix)
    if hint:
        raise QuantityError(
            f"{value!r} has unit {suffix!r}, which Kubernetes does not know; did you mean {hint!r}"
            f' (for example "{number}{hint.split()[0]}")?'
        )
    raise QuantityError(
        f"{value!r} has unknown unit {suffix!r}; use one of Ki Mi Gi Ti Pi Ei (powers of 1024),"
        " k M G T P E (powers of 1000) or m (thousandths)"
    )


def format_bytes(value: Decimal) -> str:
    """Format a byte count for people: ``8589934592`` -> ``"8 GiB"``."""
    units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"]
    amount = Decimal(value)
    unit = 0
    while abs(amount) >= 1024 and unit < len(units) - 1:
        amount /= 1024
        unit += 1
    return f"{_trim(amount)} {units[unit]}"


def format_cpu(value: Decimal) -> str:
    """Format a CPU amount for people: ``Decimal("0.5")`` -> ``"0.5 CPUs"``."""
    amount = Decimal(value)
    return f"{_trim(amount)} CPU" + ("" if amount == 1 else "s")


def _trim(amount: Decimal) -> str:
    rounded = amount.quantize(Decimal("0.01")) if amount != amount.to_integral() else amount
    text = format(rounded.normalize(), "f")
    return text

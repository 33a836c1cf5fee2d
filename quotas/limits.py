"""Limits tenant admins delegate: parsing and checking a limit against the tenant's ceiling.

Pure functions. The API, the CLI and the store all go through :func:`parse_limit`, so a
limit that exceeds its ceiling, names an unknown GPU type or has a negative count is
refused with the same reasons everywhere, before anything is written.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from i18n import Text, _, ngettext

from .model import Tenant
from .policy import LIMIT_KINDS, Limit
from .quantity import QuantityError, exact_bytes, format_bytes, format_cpu, format_number, parse_quantity

SCALAR_FIELDS = ("servers", "cpu", "memory", "gpu_hours")  # the fields other than gpus, one value each
LIMIT_FIELDS = ("gpus", *SCALAR_FIELDS)
SUBJECT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,254}$")


class LimitError(ValueError):
    """A limit that cannot be stored; ``problems`` says every reason, for a person (each an
    :class:`i18n.Text`; the exception's ``str`` is them in English)."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


def parse_limit(tenant: Tenant, kind: str, subject: str, body: Any) -> Limit:
    """The :class:`Limit` that ``body`` (a JSON object) describes for ``kind``/``subject``.

    ``body`` looks like ``{"gpus": {"H100": 2}, "servers": 2, "cpu": "16", "memory": "64Gi",
    "gpu_hours": 100}``; missing or null fields mean "no limit beyond the ceiling".
    Raises :class:`LimitError` listing every problem (unknown field, bad value, over the
    tenant's ceiling).
    """
    problems: list[str] = []
    if kind not in LIMIT_KINDS:
        problems.append(_("kind must be one of {kinds}, not {kind}", kinds=", ".join(LIMIT_KINDS), kind=repr(kind)))
    if not isinstance(subject, str) or not SUBJECT.match(subject):
        problems.append(
            _(
                "{kind} name {subject} is not a valid name (letters, digits and . _ @ + -)",
                kind=kind,
                subject=repr(subject),
            )
        )
    fields = ", ".join(LIMIT_FIELDS)
    if not isinstance(body, Mapping):
        raise LimitError([*problems, _("the limit must be a JSON object with fields {fields}", fields=fields)])
    for key in body:
        if key not in LIMIT_FIELDS:
            problems.append(_("unknown field {field} (fields: {fields})", field=repr(key), fields=fields))
    quota = tenant.quota
    gpus = _gpus(tenant, body.get("gpus"), problems)
    servers = _count(body.get("servers"), "servers", problems)
    ceiling_servers = quota.servers_per_user if kind == "user" else quota.servers
    if servers is not None and ceiling_servers is not None and servers > ceiling_servers:
        over = {"servers": servers, "tenant": tenant.id, "ceiling": ceiling_servers}
        problems.append(
            _("servers {servers} exceeds tenant {tenant}'s ceiling of {ceiling} servers per person", **over)
            if kind == "user"
            else _("servers {servers} exceeds tenant {tenant}'s ceiling of {ceiling} servers", **over)
        )
    cpu = _quantity(body.get("cpu"), "cpu", quota.cpu, format_cpu, tenant.id, problems)
    memory = _quantity(body.get("memory"), "memory", quota.memory, format_bytes, tenant.id, problems)
    hours = _quantity(body.get("gpu_hours"), "gpu_hours", quota.gpu_hours_per_month, str, tenant.id, problems)
    if problems:
        raise LimitError(problems)
    return Limit(tenant.id, kind, subject, gpus, servers, cpu, memory, hours)


def limit_to_json(limit: Limit) -> dict[str, Any]:
    """The API's JSON form of a limit (quantities as exact strings)."""
    return {
        "tenant": limit.tenant,
        "kind": limit.kind,
        "name": limit.subject,
        "gpus": dict(limit.gpus),
        "servers": limit.servers,
        "cpu": None if limit.cpu is None else format_number(limit.cpu),
        "memory": None if limit.memory is None else exact_bytes(limit.memory),
        "gpu_hours": None if limit.gpu_hours is None else format_number(limit.gpu_hours),
    }


def limit_summary(limit: Limit | None) -> str:
    """A limit in a few words: ``"1 H100, 2 servers, 100 GPU-hours/month"``; ``"—"`` when none.
    An :class:`i18n.Text` (its parts said in the reader's language) but for ``"—"``."""
    if limit is None or limit.is_empty:
        return "—"
    parts: list[str] = [f"{n} {t}" for t, n in sorted(limit.gpus.items())]
    if limit.servers is not None:
        parts.append(ngettext("{count} server", "{count} servers", limit.servers))
    if limit.cpu is not None:
        parts.append(format_cpu(limit.cpu))
    if limit.memory is not None:
        parts.append(format_bytes(limit.memory))
    if limit.gpu_hours is not None:
        parts.append(_("{hours} GPU-hours/month", hours=format_number(limit.gpu_hours)))
    return Text("{parts}", {"parts": parts})  # a list, joined with commas in any language


NO_LIMIT_ETAG = '"none"'


def limit_etag(limit: Limit | None) -> str:
    """The HTTP entity tag (quoted) of a stored limit: it changes whenever any field does;
    ``"none"`` when no limit is set. Writers send it back (``If-Match``) so that two admins editing
    the same limit at once cannot overwrite each other unknowingly."""
    if limit is None:
        return NO_LIMIT_ETAG
    body = json.dumps(limit_to_json(limit), sort_keys=True)
    return '"' + hashlib.sha256(body.encode()).hexdigest()[:24] + '"'


class LimitChanged(Exception):
    """The limit is not what the writer last read (its ``If-Match``); ``current`` is what is stored."""

    def __init__(self, current: Limit | None):
        super().__init__(_("the limit changed since it was read"))
        self.current = current


def limit_to_values(limit: Limit) -> dict[str, str]:
    """A limit as ``resource -> exact value`` rows for the store (``gpus.H100 -> "2"``)."""
    values = {f"gpus.{t}": str(n) for t, n in limit.gpus.items()}
    for name in SCALAR_FIELDS:
        value = getattr(limit, name)
        if value is not None:
            values[name] = str(value)
    return values


def limit_from_values(tenant: str, kind: str, subject: str, values: Mapping[str, str]) -> Limit:
    """The inverse of :func:`limit_to_values` (values were checked when they were stored)."""
    gpus = {k.split(".", 1)[1]: int(v) for k, v in values.items() if k.startswith("gpus.")}

    def dec(name: str) -> Decimal | None:
        return Decimal(values[name]) if name in values else None

    servers = int(values["servers"]) if "servers" in values else None
    return Limit(tenant, kind, subject, gpus, servers, dec("cpu"), dec("memory"), dec("gpu_hours"))


def _gpus(tenant: Tenant, value: Any, problems: list[str]) -> dict[str, int]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        problems.append(_('gpus must be an object of GPU type to count, e.g. {{"H100": 2}}'))
        return {}
    out: dict[str, int] = {}
    for gpu_type, raw in value.items():
        ceiling = tenant.quota.gpus.get(gpu_type)
        if ceiling is None:
            granted = ", ".join(f"{t} ({n})" for t, n in tenant.quota.gpus.items()) or _("none")
            problems.append(
                _(
                    "gpus.{gpu}: tenant {tenant} has no {gpu} GPUs (it has: {granted})",
                    gpu=gpu_type,
                    tenant=tenant.id,
                    granted=granted,
                )
            )
            continue
        count = _count(raw, f"gpus.{gpu_type}", problems)
        if count is None:
            continue
        if count > ceiling:
            problems.append(
                _(
                    "gpus.{gpu} {count} exceeds tenant {tenant}'s ceiling of {ceiling} {gpu} GPUs",
                    gpu=gpu_type,
                    count=count,
                    tenant=tenant.id,
                    ceiling=ceiling,
                )
            )
            continue
        out[gpu_type] = count
    return out


def _count(value: Any, name: str, problems: list[str]) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        problems.append(_("{name} must be a whole number, 0 or more, not {value}", name=name, value=repr(value)))
        return None
    return value


def _quantity(
    value: Any, name: str, ceiling: Decimal | None, fmt: Any, tenant: str, problems: list[str]
) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        problems.append(
            _(
                "{name} must be a number or a quantity such as {example}, not {value}",
                name=name,
                example=_example(name),
                value=repr(value),
            )
        )
        return None
    try:
        amount = parse_quantity(repr(value) if isinstance(value, float) else value)
    except QuantityError as e:
        problems.append(_("{name}: {problem}", name=name, problem=e.args[0] if e.args else str(e)))
        return None
    if amount < 0:
        problems.append(_("{name} must be 0 or more, not {value}", name=name, value=repr(value)))
        return None
    if ceiling is not None and amount > ceiling:
        problems.append(
            _(
                "{name} {amount} exceeds tenant {tenant}'s ceiling of {ceiling}",
                name=name,
                amount=fmt(amount),
                tenant=tenant,
                ceiling=fmt(ceiling),
            )
        )
        return None
    return amount


def _example(name: str) -> str:
    if name == "cpu":
        return _('"16" or "500m"')
    return {"memory": '"64Gi"', "gpu_hours": "100"}.get(name, "1")

"""Admission: may this user start this profile, charged to this tenant, right now?

Pure functions of plain data: (tenant, request, current usage) -> :class:`Decision`.
No I/O, no clocks, no globals, so the same decision is made in the embedded
mode, on Kubernetes, in tests and in benchmarks, in microseconds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

from .model import Profile, Tenant
from .quantity import format_bytes, format_cpu


@dataclass(frozen=True)
class Holding:
    """What one running (or starting) server holds, charged to one tenant."""

    tenant: str
    user: str
    server: str
    profile: str
    gpus: Mapping[str, int]
    cpu: Decimal
    memory: Decimal

    @property
    def label(self) -> str:
        return f"{self.user}/{self.server}" if self.server else self.user


@dataclass(frozen=True)
class Usage:
    """What a tenant uses now: its holdings and its GPU-hours in the current period."""

    holdings: tuple[Holding, ...] = ()
    gpu_hours: Decimal = Decimal(0)
    period_name: str = ""
    period_resets: date | None = None


@dataclass(frozen=True)
class Request:
    """One spawn request: ``user`` wants ``profile`` as server ``server`` ("" = default)."""

    user: str
    server: str
    profile: Profile
    groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class Decision:
    """The answer. ``code`` names the rule that refused (for metrics and tests)."""

    allowed: bool
    reason: str = ""
    code: str = "ok"
    holding: Holding | None = field(default=None, compare=False)

    def __bool__(self) -> bool:
        return self.allowed


def admit(tenant: Tenant, request: Request, usage: Usage) -> Decision:
    """Decide one spawn request against the tenant's ceiling and current usage.

    Returns ``Decision(allowed=True, holding=...)`` with what the server will hold,
    or ``Decision(allowed=False, reason=..., code=...)`` whose reason says what was
    asked, the limit, who uses it now, and what to do.
    ``usage.holdings`` must not contain the requested server itself.
    """
    profile, quota, user = request.profile, tenant.quota, request.user
    ask = _ask_admin(tenant)
    if not tenant.has_member(user, request.groups):
        return Decision(
            False,
            f"You ({user}) are not a member of tenant {tenant.id}, so you cannot start servers charged to it."
            f" Ask a tenant admin ({tenant.admin_contact()}) to add you.",
            "not_member",
        )
    if profile.id not in tenant.profiles:
        return Decision(
            False,
            f"Profile {profile.id} ({profile.display_name}) is not available to tenant {tenant.id}"
            f" (it may use: {', '.join(tenant.profiles) or 'none'}). Pick one of those, or {ask} to allow it.",
            "profile",
        )
    holdings = usage.holdings
    if any(h.user == user and h.server == request.server for h in holdings):
        name = f"server {request.server!r}" if request.server else "your default server"
        return Decision(
            False, f"{name[0].upper()}{name[1:]} is already running. Stop it before starting it again.", "running"
        )

    mine = [h for h in holdings if h.user == user]
    if quota.servers_per_user is not None and len(mine) >= quota.servers_per_user:
        names = ", ".join(_server_name(h) for h in mine) or "none"
        return Decision(
            False,
            f"You already run {len(mine)} of the {quota.servers_per_user} servers each person may run in tenant"
            f" {tenant.id} ({names}). Stop one of them or {ask} for more.",
            "servers_per_user",
        )
    if quota.servers is not None and len(holdings) >= quota.servers:
        return Decision(
            False,
            f"Tenant {tenant.id} runs {len(holdings)} of {quota.servers} servers"
            f" ({_breakdown(holdings, lambda h: 1)}). Stop a server or {ask} for more.",
            "servers",
        )
    for gpu_type, count in profile.gpus.items():
        refusal = _gpu_refusal(tenant, profile, gpu_type, count, holdings, ask)
        if refusal is not None:
            return refusal
    for name, limit, wanted, get, fmt in (
        ("CPU", quota.cpu, profile.cpu, _cpu_of, format_cpu),
        ("memory", quota.memory, profile.memory, _memory_of, format_bytes),
    ):
        if limit is None:
            continue
        used = sum((get(h) for h in holdings), Decimal(0))
        if used + wanted > limit:
            return Decision(
                False,
                f"You asked for {fmt(wanted)} of {name} (profile {profile.id}); tenant {tenant.id} uses"
                f" {fmt(used)} of {fmt(limit)} ({_breakdown(holdings, get, fmt)}). Stop a server, pick a smaller"
                f" profile, or {ask} for more.",
                name.lower(),
            )
    budget = quota.gpu_hours_per_month
    if profile.gpus and budget is not None and usage.gpu_hours >= budget:
        period = f" for {usage.period_name}" if usage.period_name else " this month"
        resets = f" on {usage.period_resets.isoformat()} (UTC)" if usage.period_resets else ""
        return Decision(
            False,
            f"Tenant {tenant.id} has used {_hours(usage.gpu_hours)} of its {_hours(budget)} GPU-hours{period}."
            f" GPU servers can start again when the budget resets{resets}; CPU-only profiles still work."
            f" {ask[0].upper()}{ask[1:]} if you need more.",
            "budget",
        )
    holding = Holding(
        tenant=tenant.id,
        user=user,
        server=request.server,
        profile=profile.id,
        gpus=dict(profile.gpus),
        cpu=profile.cpu,
        memory=profile.memory,
    )
    return Decision(True, holding=holding)


def _gpu_refusal(
    tenant: Tenant, profile: Profile, gpu_type: str, count: int, holdings: tuple[Holding, ...], ask: str
) -> Decision | None:
    ceiling = tenant.quota.gpus.get(gpu_type, 0)
    in_use = sum(h.gpus.get(gpu_type, 0) for h in holdings)
    if in_use + count <= ceiling:
        return None
    asked = f"You asked for {count} {gpu_type} GPU{_s(count)} (profile {profile.id}); tenant {tenant.id}"
    if ceiling == 0:
        return Decision(False, f"{asked} has no {gpu_type} GPUs in its quota. Pick another profile or {ask}.", "gpus")
    users = _breakdown(holdings, lambda h: h.gpus.get(gpu_type, 0))
    return Decision(
        False,
        f"{asked} uses {in_use} of {ceiling} {gpu_type} GPUs{f' ({users})' if users else ''}."
        f" Stop a server, pick a smaller profile, or {ask} for more.",
        "gpus",
    )


def _cpu_of(h: Holding) -> Decimal:
    return h.cpu


def _memory_of(h: Holding) -> Decimal:
    return h.memory


def _ask_admin(tenant: Tenant) -> str:
    if tenant.admins:
        return f"ask a tenant admin ({tenant.admin_contact()})"
    return "ask a platform admin"


def _server_name(h: Holding) -> str:
    return h.server or "default"


def _s(n: int) -> str:
    return "" if n == 1 else "s"


def _hours(value: Decimal) -> str:
    return f"{value.quantize(Decimal('0.1')):,}"


def _breakdown(
    holdings: Iterable[Holding],
    get: Callable[[Holding], int | Decimal],
    fmt: Callable[[Decimal], str] | None = None,
    top: int = 5,
) -> str:
    """``"alice: 4, bob: 4"``: who holds how much, largest first, at most ``top`` names."""
    per_user: dict[str, Decimal] = {}
    for h in holdings:
        amount = get(h)
        if amount:
            per_user[h.user] = per_user.get(h.user, Decimal(0)) + Decimal(amount)
    ranked = sorted(per_user.items(), key=lambda kv: (-kv[1], kv[0]))
    shown = [f"{u}: {fmt(v) if fmt else v}" for u, v in ranked[:top]]
    if len(ranked) > top:
        shown.append(f"{len(ranked) - top} others")
    return ", ".join(shown)

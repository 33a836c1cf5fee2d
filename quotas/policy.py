"""Admission: may this user start this profile, charged to this tenant, right now?

Pure functions of plain data: (tenant, request, current usage) -> :class:`Decision`.
No I/O, no clocks, no globals, so the same decision is made in the embedded
mode, on Kubernetes, in tests and in benchmarks, in microseconds.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import NamedTuple

from i18n import Text, _, ngettext

from .model import Profile, Tenant
from .quantity import format_bytes, format_cpu, format_hours, period_text, reset_text


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
    groups: tuple[str, ...] = ()  # the user's groups when the server started (for group limits)
    # GPUs per type beyond the tenant's ceiling, borrowed from idle GPUs of its cohort (issue 14)
    borrowed: Mapping[str, int] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.user}/{self.server}" if self.server else self.user


LIMIT_KINDS = ("user", "group")


def limit_applies(kind: str, subject: str, user: str, groups: Collection[str]) -> bool:
    """True if a limit of ``kind`` ``subject`` caps ``user`` (in JupyterHub ``groups``): a user
    limit of that person, or a group limit of one of their groups."""
    return user == subject if kind == "user" else subject in groups


def limits_for(limits: Iterable[Limit], user: str, groups: Collection[str]) -> list[Limit]:
    """The limits of ``limits`` that apply to ``user`` in ``groups``: their own and their groups'."""
    return [lim for lim in limits if lim.applies_to(user, groups)]


@dataclass(frozen=True)
class Limit:
    """What a tenant admin delegates to one user or one group, inside the tenant's ceiling.

    A user limit caps that person's own servers; a group limit caps what the group's
    members hold together. ``None`` (or a GPU type missing from ``gpus``) means no
    limit beyond the tenant's ceiling.
    """

    tenant: str
    kind: str  # "user" | "group"
    subject: str
    gpus: Mapping[str, int] = field(default_factory=dict)
    servers: int | None = None
    cpu: Decimal | None = None
    memory: Decimal | None = None
    gpu_hours: Decimal | None = None

    def applies_to(self, user: str, groups: Collection[str]) -> bool:
        """True if this limit caps ``user`` (in JupyterHub ``groups``): see :func:`limit_applies`."""
        return limit_applies(self.kind, self.subject, user, groups)

    def covers(self, holding: Holding) -> bool:
        """True if what ``holding`` holds counts against this limit."""
        return self.applies_to(holding.user, holding.groups)

    @property
    def is_empty(self) -> bool:
        return not self.gpus and all(v is None for v in (self.servers, self.cpu, self.memory, self.gpu_hours))


@dataclass(frozen=True)
class Usage:
    """What a tenant uses now: its holdings and its GPU-hours in the current period."""

    holdings: tuple[Holding, ...] = ()
    gpu_hours: Decimal = Decimal(0)
    period_name: str = ""
    period_resets: date | None = None
    # GPU-hours this period of the users and groups that have limits, by (kind, subject)
    gpu_hours_of: Mapping[tuple[str, str], Decimal] = field(default_factory=dict)


@dataclass(frozen=True)
class Request:
    """One spawn request: ``user`` wants ``profile`` as server ``server`` ("" = default)."""

    user: str
    server: str
    profile: Profile
    groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class Decision:
    """The answer. ``code`` names the rule that refused (for metrics and tests); ``reason`` says why,
    for people: an :class:`i18n.Text` (its ``str`` is the English)."""

    allowed: bool
    reason: str = ""
    code: str = "ok"
    holding: Holding | None = field(default=None, compare=False)

    def __bool__(self) -> bool:
        return self.allowed


def admit(
    tenant: Tenant,
    request: Request,
    usage: Usage,
    limits: Sequence[Limit] = (),
    borrowed: Mapping[str, int] | None = None,
) -> Decision:
    """Decide one spawn request against the tenant's ceiling, the limits its admins
    delegated (those of ``limits`` that apply to the requesting user and their groups)
    and current usage. ``borrowed``: GPUs per type the GPU queue lets the tenant hold beyond
    its ceiling for this request (idle GPUs of its cohort, :mod:`quotas.gpu_queue`).

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
            _(
                "You ({user}) are not a member of tenant {tenant}, so you cannot start servers charged to it."
                " Ask a tenant admin ({admins}) to add you.",
                user=user,
                tenant=tenant.id,
                admins=tenant.admin_contact(),
            ),
            "not_member",
        )
    if profile.id not in tenant.profiles:
        return Decision(
            False,
            _(
                "Profile {profile} ({name}) is not available to tenant {tenant} (it may use: {allowed})."
                " Pick one of those, or {ask} to allow it.",
                profile=profile.id,
                name=profile.display_name,
                tenant=tenant.id,
                allowed=", ".join(tenant.profiles) or _("none"),
                ask=ask,
            ),
            "profile",
        )
    holdings = usage.holdings
    if any(h.user == user and h.server == request.server for h in holdings):
        running = (
            _("Server {server} is already running. Stop it before starting it again.", server=repr(request.server))
            if request.server
            else _("Your default server is already running. Stop it before starting it again.")
        )
        return Decision(False, running, "running")

    mine = [h for h in holdings if h.user == user]
    if quota.servers_per_user is not None and len(mine) >= quota.servers_per_user:
        return Decision(
            False,
            _(
                "You already run {running} of the {cap} servers each person may run in tenant {tenant} ({names})."
                " Stop one of them or {ask} for more.",
                running=len(mine),
                cap=quota.servers_per_user,
                tenant=tenant.id,
                names=[_server_name(h) for h in mine] or [_("none")],
                ask=ask,
            ),
            "servers_per_user",
        )
    if quota.servers is not None and len(holdings) >= quota.servers:
        return Decision(
            False,
            _(
                "Tenant {tenant} runs {running} of {cap} servers ({users}). Stop a server or {ask} for more.",
                tenant=tenant.id,
                running=len(holdings),
                cap=quota.servers,
                users=_breakdown(holdings, lambda h: 1),
                ask=ask,
            ),
            "servers",
        )
    for gpu_type, count in profile.gpus.items():
        refusal = _gpu_refusal(tenant, profile, gpu_type, count, holdings, ask, (borrowed or {}).get(gpu_type, 0))
        if refusal is not None:
            return refusal
    over = _cpu_or_memory_over(quota.cpu, quota.memory, profile, holdings)
    if over is not None:
        fmt = over.fmt
        return Decision(
            False,
            _(
                "{asked}; tenant {tenant} uses {used} of {cap} ({users}). Stop a server, pick a smaller profile,"
                " or {ask} for more.",
                asked=over.asked,
                tenant=tenant.id,
                used=fmt(over.used),
                cap=fmt(over.cap),
                users=_breakdown(holdings, over.get, fmt),
                ask=ask,
            ),
            over.name.lower(),
        )
    budget = quota.gpu_hours_per_month
    if profile.gpus and budget is not None and usage.gpu_hours >= budget:
        return Decision(
            False,
            _(
                "Tenant {tenant} has used {used} of its {budget} GPU-hours {period}. {until}",
                tenant=tenant.id,
                used=format_hours(usage.gpu_hours),
                budget=format_hours(budget),
                period=period_text(usage.period_name),
                until=_until_reset(usage, "budget", tenant),
            ),
            "budget",
        )
    for delegated in limits:
        if delegated.tenant == tenant.id and delegated.applies_to(user, request.groups):
            refusal = _limit_refusal(tenant, delegated, request, usage, ask)
            if refusal is not None:
                return refusal
    holding = Holding(
        tenant=tenant.id,
        user=user,
        server=request.server,
        profile=profile.id,
        gpus=dict(profile.gpus),
        cpu=profile.cpu,
        memory=profile.memory,
        groups=tuple(sorted(request.groups)),
        borrowed=_borrowed(profile, holdings, quota.gpus),
    )
    return Decision(True, holding=holding)


def _limit_refusal(tenant: Tenant, limit: Limit, request: Request, usage: Usage, ask: Text) -> Decision | None:
    """The refusal of a delegated limit, or None when the request fits in it."""
    profile = request.profile
    covered = tuple(h for h in usage.holdings if limit.covers(h))
    code = "user_limit" if limit.kind == "user" else "group_limit"

    def limited(amount: object) -> Text:
        if limit.kind == "user":
            return _(
                "Tenant {tenant}'s admins limit you ({user}) to {amount}",
                tenant=tenant.id,
                user=limit.subject,
                amount=amount,
            )
        return _(
            "Tenant {tenant}'s admins limit group {group} to {amount}",
            tenant=tenant.id,
            group=limit.subject,
            amount=amount,
        )

    def uses(used: object, users: list[Text] | None = None) -> Text:
        if users is None:
            return _("you use {used}", used=used) if limit.kind == "user" else _("its members use {used}", used=used)
        if limit.kind == "user":
            return _("you use {used} ({users})", used=used, users=users)
        return _("its members use {used} ({users})", used=used, users=users)

    remedy = _("Stop a server, pick a smaller profile, or {ask} to raise the limit.", ask=ask)
    if limit.servers is not None and len(covered) >= limit.servers:
        return Decision(
            False,
            _(
                "{limit}; {uses}. {remedy}",
                limit=limited(ngettext("{count} server", "{count} servers", limit.servers)),
                uses=uses(len(covered), _breakdown(covered, lambda h: 1)),
                remedy=remedy,
            ),
            code,
        )
    for gpu_type, count in profile.gpus.items():
        cap = limit.gpus.get(gpu_type)
        if cap is None:
            continue
        used = sum(h.gpus.get(gpu_type, 0) for h in covered)
        if used + count > cap:
            users = _breakdown(covered, _gpus_of(gpu_type))
            return Decision(
                False,
                _(
                    "{asked}. {limit}; {uses}. {remedy}",
                    asked=_asked_gpus(count, gpu_type, profile.id),
                    limit=limited(ngettext("{count} {gpu} GPU", "{count} {gpu} GPUs", cap, gpu=gpu_type)),
                    uses=uses(used, users or None),
                    remedy=remedy,
                ),
                code,
            )
    over = _cpu_or_memory_over(limit.cpu, limit.memory, profile, covered)
    if over is not None:
        breakdown = _breakdown(covered, over.get, over.fmt)
        return Decision(
            False,
            _(
                "{asked}. {limit}; {uses}. {remedy}",
                asked=over.asked,
                limit=limited(over.of(over.fmt(over.cap))),
                uses=uses(over.fmt(over.used), breakdown or None),
                remedy=remedy,
            ),
            code,
        )
    spent = usage.gpu_hours_of.get((limit.kind, limit.subject), Decimal(0))
    if profile.gpus and limit.gpu_hours is not None and spent >= limit.gpu_hours:
        hours = _(
            "{hours} GPU-hours {period}", hours=format_hours(limit.gpu_hours), period=period_text(usage.period_name)
        )
        return Decision(
            False,
            _(
                "{limit}; {uses}. {remedy}",
                limit=limited(hours),
                uses=uses(format_hours(spent)),
                remedy=_until_reset(usage, "period", tenant),
            ),
            code,
        )
    return None


class _Over(NamedTuple):
    """CPU or memory that a request would take over a cap: what is asked, what is held already."""

    name: str  # "CPU" | "memory"
    cap: Decimal
    wanted: Decimal
    used: Decimal
    get: Callable[[Holding], Decimal]
    fmt: Callable[[Decimal], str]
    profile: str

    @property
    def asked(self) -> Text:
        amount = self.fmt(self.wanted)
        if self.name == "CPU":
            return _("You asked for {amount} of CPU (profile {profile})", amount=amount, profile=self.profile)
        return _("You asked for {amount} of memory (profile {profile})", amount=amount, profile=self.profile)

    def of(self, amount: str) -> Text:
        """``"4 CPUs of CPU"``, ``"8 GiB of memory"``: an amount of this resource."""
        return _("{amount} of CPU", amount=amount) if self.name == "CPU" else _("{amount} of memory", amount=amount)


def _cpu_or_memory_over(
    cpu: Decimal | None, memory: Decimal | None, profile: Profile, holdings: Iterable[Holding]
) -> _Over | None:
    """The first of CPU and memory whose cap (``None``: none) ``profile`` would exceed, on top of
    what ``holdings`` hold; None when both fit."""
    held = tuple(holdings)
    for name, cap, wanted, get, fmt in (
        ("CPU", cpu, profile.cpu, _cpu_of, format_cpu),
        ("memory", memory, profile.memory, _memory_of, format_bytes),
    ):
        if cap is None:
            continue
        used = sum((get(h) for h in held), Decimal(0))
        if used + wanted > cap:
            return _Over(name, cap, wanted, used, get, fmt, profile.id)
    return None


def _until_reset(usage: Usage, what: str, tenant: Tenant) -> Text:
    """How a refusal for a spent GPU-hour ``what`` (``"budget"``, ``"period"``) ends: when it resets,
    what still works, whom to ask."""
    reset, more = reset_text(usage.period_resets), _ask_for_more(tenant)
    if what == "budget":
        return _(
            "GPU servers can start again when the budget resets {reset}; CPU-only profiles still work. {more}",
            reset=reset,
            more=more,
        )
    return _(
        "GPU servers can start again when the period resets {reset}; CPU-only profiles still work. {more}",
        reset=reset,
        more=more,
    )


def _asked_gpus(count: int, gpu_type: str, profile: str) -> Text:
    return ngettext(
        "You asked for {count} {gpu} GPU (profile {profile})",
        "You asked for {count} {gpu} GPUs (profile {profile})",
        count,
        gpu=gpu_type,
        profile=profile,
    )


def _gpu_refusal(
    tenant: Tenant,
    profile: Profile,
    gpu_type: str,
    count: int,
    holdings: tuple[Holding, ...],
    ask: Text,
    borrowed: int = 0,
) -> Decision | None:
    ceiling = tenant.quota.gpus.get(gpu_type, 0)
    in_use = _gpus_in_use(holdings, gpu_type)
    if in_use + count <= ceiling + borrowed:
        return None
    asked = _asked_gpus(count, gpu_type, profile.id)
    if ceiling == 0:
        return Decision(
            False,
            _(
                "{asked}; tenant {tenant} has no {gpu} GPUs in its quota. Pick another profile or {ask}.",
                asked=asked,
                tenant=tenant.id,
                gpu=gpu_type,
                ask=ask,
            ),
            "gpus",
        )
    users = _breakdown(holdings, lambda h: h.gpus.get(gpu_type, 0))
    values = {"asked": asked, "tenant": tenant.id, "used": in_use, "ceiling": ceiling, "gpu": gpu_type, "ask": ask}
    if users:
        reason = _(
            "{asked}; tenant {tenant} uses {used} of {ceiling} {gpu} GPUs ({users}). Stop a server, pick a smaller"
            " profile, or {ask} for more.",
            users=users,
            **values,
        )
    else:
        reason = _(
            "{asked}; tenant {tenant} uses {used} of {ceiling} {gpu} GPUs. Stop a server, pick a smaller profile,"
            " or {ask} for more.",
            **values,
        )
    return Decision(False, reason, "gpus")


def _borrowed(profile: Profile, holdings: Sequence[Holding], ceilings: Mapping[str, int]) -> dict[str, int]:
    """The GPUs per type of a server admitted beyond its tenant's ceiling: borrowed from the cohort."""
    borrowed = {}
    for gpu_type, count in profile.gpus.items():
        beyond = min(count, _gpus_in_use(holdings, gpu_type) + count - ceilings.get(gpu_type, 0))
        if beyond > 0:
            borrowed[gpu_type] = beyond
    return borrowed


def _gpus_in_use(holdings: Sequence[Holding], gpu_type: str) -> int:
    return sum(h.gpus.get(gpu_type, 0) for h in holdings)


def _gpus_of(gpu_type: str) -> Callable[[Holding], int]:
    def get(h: Holding) -> int:
        return h.gpus.get(gpu_type, 0)

    return get


def _cpu_of(h: Holding) -> Decimal:
    return h.cpu


def _memory_of(h: Holding) -> Decimal:
    return h.memory


def _ask_admin(tenant: Tenant) -> Text:
    """Whom to ask, inside a sentence: ``"ask a tenant admin (kim)"``."""
    if tenant.admins:
        return _("ask a tenant admin ({admins})", admins=tenant.admin_contact())
    return _("ask a platform admin")


def _ask_for_more(tenant: Tenant) -> Text:
    if tenant.admins:
        return _("Ask a tenant admin ({admins}) if you need more.", admins=tenant.admin_contact())
    return _("Ask a platform admin if you need more.")


def _server_name(h: Holding) -> str:
    return h.server or _("default")


def _breakdown(
    holdings: Iterable[Holding],
    get: Callable[[Holding], int | Decimal],
    fmt: Callable[[Decimal], str] | None = None,
    top: int = 5,
) -> list[Text]:
    """``"alice: 4, bob: 4"`` (a list: a sentence says it joined with commas): who holds how much,
    largest first, at most ``top`` names."""
    per_user: dict[str, Decimal] = {}
    for h in holdings:
        amount = get(h)
        if amount:
            per_user[h.user] = per_user.get(h.user, Decimal(0)) + Decimal(amount)
    ranked = sorted(per_user.items(), key=lambda kv: (-kv[1], kv[0]))
    shown = [_("{user}: {amount}", user=u, amount=fmt(v) if fmt else v) for u, v in ranked[:top]]
    if len(ranked) > top:
        shown.append(ngettext("{count} other", "{count} others", len(ranked) - top))
    return shown

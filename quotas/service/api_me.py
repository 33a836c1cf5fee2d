"""``api/me``: the caller, and for each of their tenants what they may use and use now;
``api/me/workspace``: what the JupyterLab extension of one of the caller's own servers shows
(its tenant, the GPUs it holds, the GPU-hours left, and the hub's notices to the caller)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from ..culler import budget_overruns
from ..limits import limit_to_json
from ..model import PlatformConfig, Tenant
from ..notices import RECENT, server_notices
from ..policy import Limit, Usage, limits_for
from ..quantity import month_period, report_hours, report_ratio
from ..store import Run, ServerKey, Store
from .api_queue import queued_json
from .api_servers import server_json
from .api_tenants import about_tenant_json, ceiling_json, in_use_json, visible_tenants
from .base import ApiError, BaseHandler, Caller


def my_tenant(
    store: Store,
    tenant: Tenant,
    caller: Caller,
    now: datetime,
    utilization: Mapping[ServerKey, Sequence[tuple[datetime, float]]] | None = None,
) -> dict[str, Any]:
    """The caller's view of one tenant: role, the limits that apply to them (their own and their
    groups'), their GPU-hours held and used this month, their servers (with ``utilization``, the
    culler's readings of the last hour), their GPU requests waiting in the tenant's
    queue (with their place in line and why), and the tenant's ceiling and use now."""
    start, end, period = month_period(now)
    usage = store.usage(tenant, now)
    mine = [
        r for r in store.usage_report(tenant.id, start.date(), end.date(), now, by="user") if r.subject == caller.name
    ]
    limits = limits_for(store.limits(tenant.id), caller.name, caller.groups)
    servers = [r for r in store.open_runs(tenant.id) if r.holding.user == caller.name]
    queued = [q for q in store.queued(tenant.id) if q.user == caller.name]
    held = sum((r.gpu_hours for r in mine), start=Decimal(0))
    used = sum((r.gpu_used_hours for r in mine), start=Decimal(0))
    seen = utilization or {}
    return {
        **about_tenant_json(tenant, caller),
        "limits": [limit_to_json(lim) for lim in limits],
        "usage": {
            "gpu_hours": report_hours(held),
            "gpu_used_hours": report_hours(used),
            "efficiency": report_ratio(used, held),
            "cpu_hours": report_hours(sum((r.cpu_hours for r in mine), start=Decimal(0))),
            "period": period,
            "period_resets": end.date(),
        },
        "servers": [server_json(r, now, seen.get((r.holding.user, r.holding.server), ())) for r in servers],
        "queued": [queued_json(q) for q in queued],
        "ceiling": ceiling_json(tenant),
        "in_use": in_use_json(tenant, usage),
    }


def budgets_left(tenant: Tenant, usage: Usage, limits: list[Limit]) -> dict[str, Any]:
    """The GPU-hour budgets of this period that count against a person's servers in ``tenant``:
    the tenant's ceiling and each of ``limits`` (those that apply to them) with ``gpu_hours``,
    each with what is used and what is left; ``gpu_hours_left`` is the least of them (None: no
    budget at all). ``spent`` are the used-up ones, judged by the culler's own rule
    (:func:`quotas.culler.budget_overruns`), each said for people."""
    budgets = []
    if tenant.quota.gpu_hours_per_month is not None:
        budgets.append(("tenant", tenant.id, tenant.quota.gpu_hours_per_month, usage.gpu_hours))
    for lim in limits:
        if lim.gpu_hours is not None:
            used = usage.gpu_hours_of.get((lim.kind, lim.subject), Decimal(0))
            budgets.append((lim.kind, lim.subject, lim.gpu_hours, used))
    rows = [
        {
            "kind": kind,
            "subject": subject,
            "gpu_hours": report_hours(budget),
            "used": report_hours(used),
            "left": report_hours(max(Decimal(0), budget - used)),
        }
        for kind, subject, budget, used in budgets
    ]
    least = min((max(Decimal(0), budget - used) for *_, budget, used in budgets), default=None)
    return {
        "gpu_hours_left": None if least is None else report_hours(least),
        "period": usage.period_name,
        "period_resets": usage.period_resets,
        "budgets": rows,
        "spent": [_sentence(o.describe(), o.remedy()) for o in budget_overruns(tenant, usage, limits)],
    }


def _sentence(fact: str, remedy: str) -> str:
    return f"{fact[:1].upper()}{fact[1:]}. {remedy}"


def my_workspace(store: Store, config: PlatformConfig, caller: Caller, server: str, now: datetime) -> dict[str, Any]:
    """What the caller's server ``server`` ("" for the default one) holds, from its open run in the
    ledger (the hub's own record: never anything the workspace says), the GPU-hours left to it,
    and the notices the hub's pages show the caller. Only the caller's own runs are read, so a
    server name of someone else finds nothing (``running`` false)."""
    runs: list[Run] = store.runs_of(caller.name, now - RECENT)
    run = next((r for r in runs if r.ended is None and r.holding.server == server), None)
    out: dict[str, Any] = {
        "user": caller.name,
        "server": server,
        "running": run is not None,
        "tenant": None,
        "profile": None,
        "gpus": {},
        "borrowed": {},
        "budget": None,
        "notices": [{"level": n.level, "text": n.text} for n in server_notices(runs, now)],
    }
    tenant = config.tenants.get(run.holding.tenant) if run is not None else None
    if run is None or tenant is None:
        return out
    usage = store.usage(tenant, now, caller.name, caller.groups)
    limits = limits_for(store.limits(tenant.id), caller.name, caller.groups)
    out.update(
        tenant={"id": tenant.id, "display_name": tenant.display_name},
        profile=run.holding.profile,
        gpus=dict(run.holding.gpus),
        borrowed=dict(run.holding.borrowed),
        budget=budgets_left(tenant, usage, limits),
    )
    return out


class MeHandler(BaseHandler):
    async def get(self) -> None:
        """Who the hub says the caller is, and their tenants (every tenant for platform admins)."""
        caller = self.caller
        now = self.now()
        tenants = []
        for tenant in visible_tenants(caller, self.config):
            tenants.append(await self.blocking(my_tenant, self.store, tenant, caller, now, self.utilizations()))
        self.write_json(
            {
                "name": caller.name,
                "admin": caller.admin,
                "groups": list(caller.groups),
                "tenants_admin": sorted(caller.tenants_admin),
                "tenants": tenants,
            }
        )


class MyWorkspaceHandler(BaseHandler):
    async def get(self) -> None:
        """One of the caller's own servers (``?server=<name>``, the default server without it): what
        the workspace's JupyterLab extension shows. The caller is whoever the token belongs to, so
        a workspace's own token (scope ``access:services!service=quotas``) reads its owner's data."""
        unknown = sorted(set(self.request.query_arguments) - {"server"})
        if unknown:
            raise ApiError(
                400, f"Unknown query parameter {', '.join(unknown)}: only 'server' (a server name of yours)."
            )
        caller = self.caller
        server = self.get_query_argument("server", "")
        data = await self.blocking(my_workspace, self.store, self.config, caller, server, self.now())
        self.write_json(data)


default_handlers = [(r"api/me", MeHandler), (r"api/me/workspace", MyWorkspaceHandler)]

"""``api/me``: the caller, and for each of their tenants what they may use and use now."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from ..limits import limit_to_json
from ..model import Tenant
from ..policy import limits_for
from ..quantity import month_period, report_hours
from ..store import Store
from .api_queue import queued_json
from .api_servers import server_json
from .api_tenants import about_tenant_json, ceiling_json, in_use_json, visible_tenants
from .base import BaseHandler, Caller


def my_tenant(store: Store, tenant: Tenant, caller: Caller, now: datetime) -> dict[str, Any]:
    """The caller's view of one tenant: role, the limits that apply to them (their own and their
    groups'), their GPU-hours this month, their servers, their GPU requests waiting in the tenant's
    queue (with their place in line and why), and the tenant's ceiling and use now."""
    start, end, period = month_period(now)
    usage = store.usage(tenant, now)
    mine = [
        r for r in store.usage_report(tenant.id, start.date(), end.date(), now, by="user") if r.subject == caller.name
    ]
    limits = limits_for(store.limits(tenant.id), caller.name, caller.groups)
    servers = [r for r in store.open_runs(tenant.id) if r.holding.user == caller.name]
    queued = [q for q in store.queued(tenant.id) if q.user == caller.name]
    return {
        **about_tenant_json(tenant, caller),
        "limits": [limit_to_json(lim) for lim in limits],
        "usage": {
            "gpu_hours": report_hours(sum((r.gpu_hours for r in mine), start=Decimal(0))),
            "cpu_hours": report_hours(sum((r.cpu_hours for r in mine), start=Decimal(0))),
            "period": period,
            "period_resets": end.date(),
        },
        "servers": [server_json(r, now) for r in servers],
        "queued": [queued_json(q) for q in queued],
        "ceiling": ceiling_json(tenant),
        "in_use": in_use_json(tenant, usage),
    }


class MeHandler(BaseHandler):
    async def get(self) -> None:
        """Who the hub says the caller is, and their tenants (every tenant for platform admins)."""
        caller = self.caller
        now = self.now()
        tenants = []
        for tenant in visible_tenants(caller, self.config):
            tenants.append(await self.blocking(my_tenant, self.store, tenant, caller, now))
        self.write_json(
            {
                "name": caller.name,
                "admin": caller.admin,
                "groups": list(caller.groups),
                "tenants_admin": sorted(caller.tenants_admin),
                "tenants": tenants,
            }
        )


default_handlers = [(r"api/me", MeHandler)]

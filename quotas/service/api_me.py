"""``api/me``: the caller, and for each of their tenants what they may use and use now."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from ..limits import limit_to_json
from ..model import Tenant
from ..store import Store, month_period
from .api_servers import server_json
from .api_tenants import ceiling_json, in_use_json, visible_tenants
from .base import BaseHandler, Caller, format_decimal, hours


def my_tenant(store: Store, tenant: Tenant, caller: Caller, now: datetime) -> dict[str, Any]:
    """The caller's view of one tenant: role, the limits that apply to them (their own and their
    groups'), their GPU-hours this month, their servers, and the tenant's ceiling and use now."""
    start, end, period = month_period(now)
    usage = store.usage(tenant, now)
    mine = [
        r for r in store.usage_report(tenant.id, start.date(), end.date(), now, by="user") if r.subject == caller.name
    ]
    limits = [
        lim
        for lim in store.limits(tenant.id)
        if (lim.kind == "user" and lim.subject == caller.name) or (lim.kind == "group" and lim.subject in caller.groups)
    ]
    servers = [r for r in store.open_runs(tenant.id) if r.holding.user == caller.name]
    return {
        "id": tenant.id,
        "display_name": tenant.display_name,
        "kind": tenant.kind,
        "role": caller.role_in(tenant.id),
        "admins": list(tenant.admins),
        "limits": [limit_to_json(lim) for lim in limits],
        "usage": {
            "gpu_hours": format_decimal(hours(sum((r.gpu_hours for r in mine), start=Decimal(0)))),
            "cpu_hours": format_decimal(hours(sum((r.cpu_hours for r in mine), start=Decimal(0)))),
            "period": period,
            "period_resets": end.date(),
        },
        "servers": [server_json(r, now) for r in servers],
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

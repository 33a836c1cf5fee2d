"""``api/tenants`` and ``api/tenants/{tenant}``: the tenants a caller may see, their ceiling and
what they use now. Members see totals; who uses what is for admins (``servers``, ``usage``)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from ..model import PlatformConfig, Profile, Tenant
from ..policy import Usage
from ..quantity import exact_bytes, format_number, report_hours
from .base import BaseHandler, Caller


def ceiling_json(tenant: Tenant) -> dict[str, Any]:
    """What the platform grants the tenant (``null``: no limit; a GPU type not listed: none)."""
    quota = tenant.quota
    return {
        "gpus": dict(quota.gpus),
        "servers": quota.servers,
        "servers_per_user": quota.servers_per_user,
        "cpu": None if quota.cpu is None else format_number(quota.cpu),
        "memory": None if quota.memory is None else exact_bytes(quota.memory),
        "storage": None if quota.storage is None else exact_bytes(quota.storage),
        "gpu_hours_per_month": None if quota.gpu_hours_per_month is None else format_number(quota.gpu_hours_per_month),
    }


def in_use_json(tenant: Tenant, usage: Usage) -> dict[str, Any]:
    """What the tenant's servers hold now, and its GPU-hours this month (UTC)."""
    gpus = {gpu_type: 0 for gpu_type in tenant.quota.gpus}
    for holding in usage.holdings:
        for gpu_type, count in holding.gpus.items():
            gpus[gpu_type] = gpus.get(gpu_type, 0) + count
    return {
        "gpus": gpus,
        "servers": len(usage.holdings),
        "cpu": format_number(sum((h.cpu for h in usage.holdings), start=Decimal(0))),
        "memory": exact_bytes(sum((h.memory for h in usage.holdings), start=Decimal(0))),
        "gpu_hours": report_hours(usage.gpu_hours),
        "period": usage.period_name,
        "period_resets": usage.period_resets,
    }


def profile_json(profile: Profile) -> dict[str, Any]:
    return {
        "id": profile.id,
        "display_name": profile.display_name,
        "gpus": dict(profile.gpus),
        "cpu": format_number(profile.cpu),
        "memory": exact_bytes(profile.memory),
        "image": profile.image,
    }


def about_tenant_json(tenant: Tenant, caller: Caller) -> dict[str, Any]:
    """Who the tenant is, and the caller's role in it: how every answer about a tenant begins."""
    return {
        "id": tenant.id,
        "display_name": tenant.display_name,
        "kind": tenant.kind,
        "role": caller.role_in(tenant.id),
        "admins": list(tenant.admins),
    }


def tenant_json(tenant: Tenant, caller: Caller, usage: Usage, config: PlatformConfig) -> dict[str, Any]:
    return {
        **about_tenant_json(tenant, caller),
        "profiles": [profile_json(p) for p in config.profiles_of(tenant)],
        "ceiling": ceiling_json(tenant),
        "in_use": in_use_json(tenant, usage),
    }


def visible_tenants(caller: Caller, config: PlatformConfig) -> list[Tenant]:
    """The tenants ``caller`` may read, in the order of ``tenants.yaml``."""
    return [t for t in config.tenants.values() if caller.can_read_tenant(t.id)]


class TenantsHandler(BaseHandler):
    async def get(self) -> None:
        """Every tenant the caller may see: all for platform admins, else theirs."""
        caller = self.caller
        now = self.now()
        out = []
        for tenant in visible_tenants(caller, self.config):
            usage = await self.blocking(self.store.usage, tenant, now)
            out.append(tenant_json(tenant, caller, usage, self.config))
        self.write_json({"tenants": out})


class TenantHandler(BaseHandler):
    async def get(self, tenant: str) -> None:
        """One tenant's summary: ceiling, allowed profiles, what it uses now (totals)."""
        found = self.tenant_to_read(tenant)
        usage = await self.blocking(self.store.usage, found, self.now())
        self.write_json(tenant_json(found, self.caller, usage, self.config))


TENANT = r"(?P<tenant>[^/]+)"

default_handlers = [
    (r"api/tenants", TenantsHandler),
    (rf"api/tenants/{TENANT}", TenantHandler),
]

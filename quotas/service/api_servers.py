"""``api/tenants/{tenant}/servers``: the servers charged to a tenant now (its reservations).

Admins see every server of the tenant; members see their own.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from ..quantity import exact_bytes, format_number, report_hours
from ..store import MS_PER_HOUR, Run, elapsed_ms
from .api_tenants import TENANT
from .base import BaseHandler


def server_json(run: Run, now: datetime) -> dict[str, Any]:
    """One reservation: who, which server, what it holds, since when, GPU-hours so far."""
    holding = run.holding
    gpu_hours = Decimal(sum(holding.gpus.values()) * elapsed_ms(run.started, now)) / MS_PER_HOUR
    return {
        "user": holding.user,
        "server": holding.server,
        "profile": holding.profile,
        "gpus": dict(holding.gpus),
        "cpu": format_number(holding.cpu),
        "memory": exact_bytes(holding.memory),
        "groups": list(holding.groups),
        "started": run.started,
        "gpu_hours": report_hours(gpu_hours),
        "run": run.id,
    }


class ServersHandler(BaseHandler):
    async def get(self, tenant: str) -> None:
        found = self.tenant_to_read(tenant)
        caller = self.caller
        runs = await self.blocking(self.store.open_runs, found.id)
        if not caller.can_admin_tenant(found.id):
            runs = [r for r in runs if r.holding.user == caller.name]
        now = self.now()
        self.write_json({"tenant": found.id, "servers": [server_json(r, now) for r in runs]})


default_handlers = [(rf"api/tenants/{TENANT}/servers", ServersHandler)]

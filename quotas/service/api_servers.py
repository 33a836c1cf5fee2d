"""``api/tenants/{tenant}/servers``: the servers charged to a tenant now (its reservations), and
``api/tenants/{tenant}/servers/{user}[/{server}]``: one of them, which ``DELETE`` stops.

Admins see and stop every server of the tenant; members their own. The tenant of a server is the
hub's own record of it (the open run its spawner wrote at admission), never the request's, and one
check decides every route (:meth:`~quotas.service.base.BaseHandler.server_to_act_on`). Tenant admins
have no server scopes at the hub (see :mod:`quotas.rbac`): this service stops a server for them with
its own token, after that check.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any
from urllib.parse import quote

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from i18n import DEFAULT_LOCALE, _, translate

from ..culler import server_label
from ..quantity import exact_bytes, format_number, report_hours, report_ratio
from ..store import MS_PER_HOUR, Run, elapsed_ms
from .api_tenants import TENANT
from .base import ApiError, BaseHandler


def server_json(
    run: Run, now: datetime, utilization: Sequence[tuple[datetime, float]] = (), locale: str = DEFAULT_LOCALE
) -> dict[str, Any]:
    """One reservation: who, which server, what it holds (and of that, what it borrowed from other
    tenants), since when, GPU-hours held and used so far, its GPUs' ``utilization`` over the last hour
    (the culler's readings: time, mean percent); and, for a server to be stopped, when and why (said
    in ``locale``)."""
    holding = run.holding
    gpu_hours = Decimal(sum(holding.gpus.values()) * elapsed_ms(run.started, now)) / MS_PER_HOUR
    used = Decimal(run.gpu_used_ms) / MS_PER_HOUR
    note = translate(run.stop_note, locale) if run.stop_note is not None else None
    stopping = {"stop_at": run.stop_at, "stop_note": note} if run.stop_at is not None else {}
    return {
        "user": holding.user,
        "server": holding.server,
        "profile": holding.profile,
        "gpus": dict(holding.gpus),
        "borrowed": dict(holding.borrowed),
        "cpu": format_number(holding.cpu),
        "memory": exact_bytes(holding.memory),
        "groups": list(holding.groups),
        "started": run.started,
        "gpu_hours": report_hours(gpu_hours),
        "gpu_used_hours": report_hours(used),
        "efficiency": report_ratio(used, gpu_hours),
        "utilization": [{"at": at, "percent": round(percent, 1)} for at, percent in utilization],
        "run": run.id,
        **stopping,
    }


class ServersHandler(BaseHandler):
    async def get(self, tenant: str) -> None:
        found = self.tenant_to_read(tenant)
        caller = self.caller
        runs = await self.blocking(self.store.open_runs, found.id)
        runs = [r for r in runs if caller.acts_on_server(r.holding.tenant, r.holding.user)]
        now, seen = self.now(), self.utilizations()
        servers = [server_json(r, now, seen.get((r.holding.user, r.holding.server), ()), self.language) for r in runs]
        self.write_json({"tenant": found.id, "servers": servers})


class ServerHandler(BaseHandler):
    """One server: ``.../servers/{user}`` is the default server, ``.../servers/{user}/{server}`` a named one."""

    async def get(self, tenant: str, user: str, server: str = "") -> None:
        run = await self.server_to_act_on(tenant, user, server)
        seen = self.utilizations().get((run.holding.user, run.holding.server), ())
        self.write_json(server_json(run, self.now(), seen, self.language))

    async def delete(self, tenant: str, user: str, server: str = "") -> None:
        """Stop the server at the hub with this service's token: 204 stopped, 202 stopping."""
        run = await self.server_to_act_on(tenant, user, server)
        held = run.holding
        label = server_label(held.user, held.server)
        name = quote(held.user, safe="")
        path = f"/users/{name}/servers/{quote(held.server, safe='')}" if held.server else f"/users/{name}/server"
        request = HTTPRequest(
            self.hub_auth.api_url.rstrip("/") + path,
            method="DELETE",
            headers={"Authorization": f"token {self.hub_auth.api_token}"},
            request_timeout=60,
        )
        try:
            response = await AsyncHTTPClient().fetch(request)
        except HTTPClientError as e:
            hub_says = _hub_message(e)
            if e.code == 404:
                raise ApiError(
                    404,
                    _(
                        "The hub runs no {label} now ({hub_says}): it has stopped already.",
                        label=label,
                        hub_says=hub_says,
                    ),
                ) from None
            if e.code == 400:
                raise ApiError(
                    409,
                    _(
                        "The hub cannot stop {label} now: {hub_says}. Try again in a moment.",
                        label=label,
                        hub_says=hub_says,
                    ),
                ) from None
            raise ApiError(
                502,
                _(
                    "The hub did not stop {label}: it answered {code} ({hub_says}).",
                    label=label,
                    code=e.code,
                    hub_says=hub_says,
                ),
            ) from None
        self.log.info("%s stops %s, charged to %s (hub: %s)", self.caller.name, label, held.tenant, response.code)
        self.set_status(202 if response.code == 202 else 204)
        self.set_header("Cache-Control", "no-store")
        self.finish()


def _hub_message(e: HTTPClientError) -> str:
    body = e.response.body if e.response is not None else b""
    try:
        message = json.loads(body).get("message")
    except (ValueError, AttributeError):
        message = None
    return str(message or e.message or e.code)[:300]


USER = r"(?P<user>[^/]+)"
SERVER = r"(?P<server>[^/]+)"

default_handlers = [
    (rf"api/tenants/{TENANT}/servers", ServersHandler),  # i18n: a route
    (rf"api/tenants/{TENANT}/servers/{USER}", ServerHandler),  # i18n: a route
    (rf"api/tenants/{TENANT}/servers/{USER}/{SERVER}", ServerHandler),  # i18n: a route
]

"""``api/tenants/{tenant}/queue``: the GPU requests waiting in a tenant's queue (issue 14), in line
order, each with its place in line and why it waits.

Who sees what is decided as for the tenant's servers (a waiting request is a server not started
yet): the tenant's admins and platform admins see every request waiting in it, members their own
(:meth:`~quotas.service.base.Caller.acts_on_server`); a tenant the caller is not in is ``403``.
The place (``position`` of ``length``) and ``reason`` are what the hub's queue keeper last wrote
(every second while anyone waits), so they are ``null`` for a moment after a request joins.
"""

from __future__ import annotations

from typing import Any

from i18n import DEFAULT_LOCALE, translate

from ..store import Queued
from .api_tenants import TENANT
from .base import BaseHandler


def queued_json(request: Queued, locale: str = DEFAULT_LOCALE) -> dict[str, Any]:
    """One waiting request: whose server, what it asks for, since when, where it waits and why (said
    in ``locale``)."""
    return {
        "user": request.user,
        "server": request.server,
        "profile": request.profile,
        "gpu_type": request.gpu_type,
        "gpu_count": request.gpu_count,
        "may_borrow": request.may_borrow,
        "enqueued": request.enqueued,
        "position": request.position,
        "length": request.length,
        "reason": None if request.reason is None else translate(request.reason, locale),
    }


class QueueHandler(BaseHandler):
    async def get(self, tenant: str) -> None:
        found = self.tenant_to_read(tenant)
        caller = self.caller
        waiting = await self.blocking(self.store.queued, found.id)
        shown = [q for q in waiting if caller.acts_on_server(q.tenant, q.user)]
        self.write_json({"tenant": found.id, "queue": [queued_json(q, self.language) for q in shown]})


default_handlers = [(rf"api/tenants/{TENANT}/queue", QueueHandler)]  # i18n: a route

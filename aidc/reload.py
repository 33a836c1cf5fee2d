"""Reload the platform config in the running hub: SIGHUP, which ``aidc reload`` sends.

The hub holds one snapshot of ``tenants.yaml`` and the image catalog
(:func:`quotas.snapshot.shared_holder`); its spawners and its authenticator read only that. At
SIGHUP it reads both files again and validates them whole:

- a file with problems, or a change that needs a restart (``gpu_types``), is refused: the log and
  ``aidc reload`` name every problem, and the snapshot in force stays, for logins and spawns alike;
- a valid one is swapped in at once for the spawners (profiles, admission against the new
  ceilings) and the authenticator (membership at login); then the hub's own records follow: the
  ``tenant-admin-<id>`` role definitions, the tenant groups of removed tenants, and, with local
  accounts, every user's tenant groups and tenant-admin roles; with OIDC, each person's groups and
  roles at their next request (their provider groups are only known from their last login);
- either way the hub publishes what it holds in ``<data_dir>/platform/`` (the exact bytes, and the
  state file ``hub.json`` with the outcome), then sends SIGHUP to the quotas service it runs,
  which loads those same bytes (:attr:`quotas.service.app.QuotasService.hub_state_file`).

Reloads run one at a time, on the hub's event loop: nothing else in the hub runs between the swap
and the update of its groups and roles.
"""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import subprocess
from pathlib import Path
from typing import Any

from jupyterhub import orm, roles

from authenticators.local import TenantGroupsMixin
from i18n import _
from quotas.model import PlatformConfig
from quotas.rbac import tenant_groups, tenant_role_name, tenant_roles
from quotas.service.app import SERVICE_NAME
from quotas.snapshot import (
    HUB_STATE,
    QUOTAS_STATE,
    PlatformHolder,
    ReloadOutcome,
    platform_dir,
    read_state,
    write_state,
)


def install(holder: PlatformHolder, data_dir: str | Path) -> HubReloader | None:
    """From ``jupyterhub_config.py``: publish the snapshot the hub starts with and reload on SIGHUP.

    Does nothing (None) outside a starting hub: a subcommand such as ``jupyterhub upgrade-db``, or
    a tool that only reads the config file.
    """
    app = _starting_hub()
    if app is None:
        return None
    reloader = HubReloader(app, holder, platform_dir(data_dir))
    # the handler first: `aidc reload` signals the pid it reads in the state file (SIGHUP's default
    # action would stop the hub)
    asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reloader.on_sighup)
    reloader.record(None)
    return reloader


def _starting_hub() -> Any:
    from jupyterhub.app import JupyterHub

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return None
    if not JupyterHub.initialized():
        return None
    app = JupyterHub.instance()
    return app if app.subapp is None else None


class HubReloader:
    """The hub's reloads of its platform config: at SIGHUP, :meth:`reload`."""

    def __init__(self, app: Any, holder: PlatformHolder, folder: Path):
        self.app, self.holder, self.folder = app, holder, folder
        self.reloads = 0
        self.last: ReloadOutcome | None = None
        self._lock = asyncio.Lock()

    @property
    def log(self) -> Any:
        return self.app.log

    def on_sighup(self) -> None:
        self.log.info("SIGHUP: reloading the platform config")
        asyncio.ensure_future(self.reload())

    async def reload(self) -> ReloadOutcome:
        """Reload, apply to the hub's records, publish, tell the quotas service; log the outcome."""
        async with self._lock:
            # a SIGHUP while the hub starts waits until it has loaded its users, groups and roles
            # (JupyterHub sets this future at the end of its start)
            started = getattr(self.app, "_start_future", None)
            if started is not None and not started.done():
                await asyncio.wait({started})
            self.reloads += 1
            old = self.holder.config
            outcome = self.holder.reload()
            if outcome.changed:
                notes = await self.apply(old, self.holder.config)
                outcome = dataclasses.replace(outcome, notes=tuple(notes))
            log = self.log.info if outcome.applied else self.log.error
            log("%s", "\n".join(outcome.lines()))
            self.record(outcome)
            return outcome

    def record(self, outcome: ReloadOutcome | None) -> None:
        """Publish the snapshot in force and the outcome, then, if a reload applied, send the quotas
        service SIGHUP (it reads what was just published; a service the hub starts or restarts
        later reads it at its start)."""
        self.last = outcome
        service = self.quotas_process()
        try:
            self.holder.publish(self.folder)
            write_state(
                self.folder / HUB_STATE,
                self.holder,
                self.reloads,
                outcome,
                quotas_pid=service.pid if service is not None else None,
            )
        except OSError as e:
            self.log.error("Cannot publish the platform config in %s for the quotas service: %s", self.folder, e)
            return
        if service is not None and outcome is not None and outcome.applied and self.listening(service):
            service.send_signal(signal.SIGHUP)

    def quotas_process(self) -> subprocess.Popen[bytes] | None:
        """The quotas service's process while it runs (JupyterHub's managed service)."""
        service = self.app._service_map.get(SERVICE_NAME)  # JupyterHub's services by name
        proc = getattr(service, "proc", None)
        return proc if proc is not None and proc.poll() is None else None

    def listening(self, service: subprocess.Popen[bytes]) -> bool:
        """True once ``service`` handles SIGHUP: it wrote its state file (a service still starting
        would die of the signal; it looks at what the hub published once it has a handler)."""
        try:
            state = read_state(self.folder / QUOTAS_STATE)
        except (OSError, ValueError):
            return False
        return state is not None and state.get("pid") == service.pid

    async def apply(self, old: PlatformConfig, new: PlatformConfig) -> list[str]:
        """Bring the hub's records in line with ``new``; returns notes for the ``aidc reload`` caller
        (:class:`~i18n.Text`) on what could not follow."""
        try:
            await apply_to_hub(self.app, old, new)
        except Exception as e:
            self.log.exception("Applying the reloaded platform config to the hub's groups and roles failed")
            return [
                _(
                    "the hub's tenant groups and roles could not all be updated ({problem}); they are at each"
                    " person's next login, or restart the hub",
                    problem=str(e),
                )
            ]
        return []


async def apply_to_hub(app: Any, old: PlatformConfig, new: PlatformConfig) -> None:
    """The hub's records that mirror the platform config, as a restart would make them.

    Role definitions: ``tenant-admin-<id>`` of each tenant with admins (local accounts, as
    ``load_roles``), or of every tenant (an authenticator that manages roles: its
    ``load_managed_roles``); those of other tenants are deleted. The groups of removed tenants are
    deleted. Assignments: with :class:`~authenticators.local.TenantGroupsMixin` (local accounts), every
    user's tenant groups and tenant-admin roles now; with an authenticator that manages groups or
    roles (OIDC), at each person's next request (their auth is marked stale) or spawn.
    """
    db, auth = app.db, app.authenticator
    managed = bool(auth.manage_roles)
    if managed:
        wanted = {r["name"]: {**r, "managed_by_auth": True} for r in await auth.load_managed_roles()}
    else:
        wanted = {r["name"]: {k: v for k, v in r.items() if k != "users"} for r in tenant_roles(new)}
    for spec in wanted.values():
        roles.create_role(db, spec, commit=False)
    for role in db.query(orm.Role).filter(orm.Role.name.startswith(tenant_role_name(""))).all():
        if role.name not in wanted and bool(role.managed_by_auth) == managed:
            app.log.info("Deleting role %s: no such tenant admins in the reloaded config", role.name)
            db.delete(role)
    listed = {g for t in new.tenants.values() for g in t.member_groups}
    for tenant_id in old.tenants.keys() - new.tenants.keys() - listed:
        group = orm.Group.find(db, tenant_id)
        if group is not None:
            app.log.info("Deleting group %s: tenant %s was removed", tenant_id, tenant_id)
            db.delete(group)
    if not auth.manage_groups:
        for name, spec in tenant_groups(new).items():
            group = orm.Group.find(db, name)
            if group is not None and group.properties != spec["properties"]:
                group.properties = spec["properties"]
    db.commit()
    if isinstance(auth, TenantGroupsMixin):
        for user in db.query(orm.User).all():
            auth.sync_tenant_groups(user, commit=False)
        db.commit()
    if auth.manage_groups or managed:
        # JupyterHub re-asks the authenticator (refresh_user) at the next request of a user whose
        # auth it last refreshed longer than auth_refresh_age ago, or never
        for user in list(app.users.values()):
            user._auth_refreshed = None

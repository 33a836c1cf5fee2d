"""JupyterHub groups and roles that mirror tenants (pure builders for ``load_groups`` / ``load_roles``).

Each tenant is a JupyterHub group of the same name holding its members. Each
tenant admin gets the role ``tenant-admin-<tenant>``, whose scopes let them find
their tenant's people and groups at the hub (names only, filtered to that group
and to the member groups the tenant lists), and nothing about or on servers.

JupyterHub filters scopes by person (``!group=lab``), not by tenant: a person in
``lab`` and ``startup`` has servers charged to each, and a group-filtered
``servers`` or ``delete:servers`` would put both within reach of each tenant's
admins, and let them start one charged to the other tenant. So tenant admins see
and stop servers only through the quotas service (``api/tenants/<t>/servers``),
which checks each server's tenant in the hub's own record of it and stops it with
its own token (:mod:`quotas.service.api_servers`); they start none for others.
They never get access to the servers themselves (no ``access:servers``): a
professor cannot open a student's notebook.
"""

from __future__ import annotations

from typing import Any

from .model import PlatformConfig, Tenant

# no server scopes, and no read:users (its model shows the default server and activity of every
# tenant of the person): see the module's docstring
TENANT_ADMIN_SCOPES = (
    "list:users",
    "read:users:name",
    "read:groups",
    "list:groups",
)


def tenant_role_name(tenant_id: str) -> str:
    return f"tenant-admin-{tenant_id}"


def tenant_groups(config: PlatformConfig) -> dict[str, dict[str, Any]]:
    """``load_groups``: one group per tenant with the users the config lists by name."""
    return {
        t.id: {
            "users": sorted(t.members_by_name),
            "properties": {"aidc.tenant": t.id, "aidc.kind": t.kind, "aidc.display_name": t.display_name},
        }
        for t in config.tenants.values()
    }


def tenant_admin_scopes(tenant: Tenant) -> list[str]:
    groups = [tenant.id, *sorted(tenant.member_groups)]
    return ["admin-ui", *(f"{scope}!group={g}" for g in groups for scope in TENANT_ADMIN_SCOPES)]


def tenant_admin_role(tenant: Tenant) -> dict[str, Any]:
    """The role ``tenant-admin-<id>`` of ``tenant``, without assignments."""
    return {
        "name": tenant_role_name(tenant.id),
        "description": (
            f"Tenant admin of {tenant.display_name} ({tenant.id}): its people here; its servers in the quotas service"  # i18n: a JupyterHub role's description, English like JupyterHub's own
        ),
        "scopes": tenant_admin_scopes(tenant),
    }


def tenant_roles(config: PlatformConfig) -> list[dict[str, Any]]:
    """``load_roles``: a tenant-admin role per tenant that has admins (assignments are exact)."""
    return [{**tenant_admin_role(t), "users": list(t.admins)} for t in config.tenants.values() if t.admins]


def wanted_tenant_groups(config: PlatformConfig, user: str, groups: list[str]) -> set[str]:
    """The tenant groups ``user`` should be in, given their other (non-tenant) groups."""
    others = [g for g in groups if g not in config.tenants]
    return {t.id for t in config.tenants_of(user, others)}

"""JupyterHub groups and roles that mirror tenants (pure builders for ``load_groups`` / ``load_roles``).

Each tenant is a JupyterHub group of the same name holding its members. Each
tenant admin gets the role ``tenant-admin-<tenant>``, whose scopes are filtered
to that group (and to the member groups the tenant lists): they see and stop
their tenant's servers, and nobody else's. They do not get access to the
servers themselves (no ``access:servers``): a professor cannot open a student's
notebook.
"""

from __future__ import annotations

from typing import Any

from .model import PlatformConfig, Tenant

TENANT_ADMIN_SCOPES = (
    "list:users",
    "read:users",
    "read:users:activity",
    "read:servers",
    "servers",
    "delete:servers",
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
        "description": f"Tenant admin of {tenant.display_name} ({tenant.id}): see and stop its members' servers",
        "scopes": tenant_admin_scopes(tenant),
    }


def tenant_roles(config: PlatformConfig) -> list[dict[str, Any]]:
    """``load_roles``: a tenant-admin role per tenant that has admins (assignments are exact)."""
    return [{**tenant_admin_role(t), "users": list(t.admins)} for t in config.tenants.values() if t.admins]


def wanted_tenant_groups(config: PlatformConfig, user: str, groups: list[str]) -> set[str]:
    """The tenant groups ``user`` should be in, given their other (non-tenant) groups."""
    others = [g for g in groups if g not in config.tenants]
    return {t.id for t in config.tenants_of(user, others)}

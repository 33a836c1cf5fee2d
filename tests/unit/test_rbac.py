"""quotas.rbac: JupyterHub groups and tenant-admin roles built from the platform config."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from quotas.loader import parse_platform
from quotas.model import Image, PlatformConfig
from quotas.rbac import TENANT_ADMIN_SCOPES, tenant_groups, tenant_roles, wanted_tenant_groups
from quotas.service.base import Caller


def test_tenant_groups(config: PlatformConfig) -> None:
    assert tenant_groups(config) == {
        "snu-ai": {
            "users": ["alice", "bob", "kim"],
            "properties": {
                "aidc.tenant": "snu-ai",
                "aidc.kind": "university",
                "aidc.display_name": "Seoul National University AI Lab",
            },
        },
        "nova-labs": {
            "users": ["alice", "carol", "dave", "erin"],
            "properties": {
                "aidc.tenant": "nova-labs",
                "aidc.kind": "startup",
                "aidc.display_name": "Nova Labs (startup)",
            },
        },
    }


def test_tenant_roles_filter_every_scope_to_the_tenant(config: PlatformConfig) -> None:
    roles = {r["name"]: r for r in tenant_roles(config)}
    assert set(roles) == {"tenant-admin-snu-ai", "tenant-admin-nova-labs"}
    snu = roles["tenant-admin-snu-ai"]
    assert snu["users"] == ["kim"]
    assert snu["scopes"] == ["admin-ui", *(f"{s}!group=snu-ai" for s in TENANT_ADMIN_SCOPES)]
    assert "snu-ai" in snu["description"]
    assert roles["tenant-admin-nova-labs"]["users"] == ["erin"]
    for role in roles.values():
        for scope in role["scopes"]:
            assert scope == "admin-ui" or "!group=" in scope, scope
            # JupyterHub's group filters are per person, not per tenant: nothing on or about servers
            # (a person in two tenants has servers charged to each; the quotas service confines admins)
            assert "servers" not in scope and "server_state" not in scope, scope
            assert not scope.startswith(("read:users!", "read:users:activity", "admin:", "tokens", "users!")), scope


def with_member_groups(example_data: dict[str, Any], images: Mapping[str, Image]) -> PlatformConfig:
    example_data["tenants"][0]["members"]["groups"] = ["snu-students", "snu-staff"]
    example_data["tenants"][1]["admins"] = []
    return parse_platform(example_data, images)


def test_tenant_roles_cover_member_groups_and_skip_tenants_without_admins(
    example_data: dict[str, Any], images: Mapping[str, Image]
) -> None:
    config = with_member_groups(example_data, images)
    [role] = tenant_roles(config)
    assert role["name"] == "tenant-admin-snu-ai"
    for group in ("snu-ai", "snu-staff", "snu-students"):
        assert f"list:users!group={group}" in role["scopes"]
        assert f"read:users:name!group={group}" in role["scopes"]
    assert len(role["scopes"]) == 1 + 3 * len(TENANT_ADMIN_SCOPES)


@pytest.mark.parametrize(
    ("user", "groups", "wanted"),
    [
        ("alice", [], {"snu-ai", "nova-labs"}),
        ("bob", [], {"snu-ai"}),
        ("bob", ["nova-labs"], {"snu-ai"}),  # being in a tenant's group does not make one a member
        ("mallory", ["snu-ai", "nova-labs"], set()),
        ("kim", [], {"snu-ai"}),
        ("zoe", ["snu-students"], {"snu-ai"}),
        ("zoe", ["snu-students", "snu-ai"], {"snu-ai"}),
        ("zoe", ["elsewhere"], set()),
    ],
)
def test_wanted_tenant_groups(
    example_data: dict[str, Any], images: Mapping[str, Image], user: str, groups: list[str], wanted: set[str]
) -> None:
    config = with_member_groups(example_data, images)
    assert wanted_tenant_groups(config, user, groups) == wanted


@pytest.mark.parametrize(
    ("caller", "tenant", "owner", "may"),
    [
        # carol is in both tenants: each tenant's admins act on the servers charged to theirs alone
        (Caller("erin", False, (), frozenset({"startup"}), frozenset({"startup"})), "startup", "carol", True),
        (Caller("erin", False, (), frozenset({"startup"}), frozenset({"startup"})), "lab", "carol", False),
        (Caller("kim", False, (), frozenset({"lab"}), frozenset({"lab"})), "lab", "carol", True),
        (Caller("kim", False, (), frozenset({"lab"}), frozenset({"lab"})), "startup", "carol", False),
        (Caller("carol", False, (), frozenset(), frozenset({"lab", "startup"})), "startup", "carol", True),
        (Caller("carol", False, (), frozenset(), frozenset({"lab", "startup"})), "lab", "alice", False),
        (Caller("admin", True, (), frozenset(), frozenset()), "lab", "carol", True),
        (Caller("zed", False, (), frozenset(), frozenset()), "lab", "carol", False),
    ],
)
def test_who_acts_on_a_server(caller: Caller, tenant: str, owner: str, may: bool) -> None:
    """The one check of every route that shows or stops a server: the tenant it is charged to."""
    assert caller.acts_on_server(tenant, owner) is may

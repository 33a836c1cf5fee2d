"""quotas.rbac: JupyterHub groups and tenant-admin roles built from the platform config."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from quotas.loader import parse_platform
from quotas.model import Image, PlatformConfig
from quotas.rbac import TENANT_ADMIN_SCOPES, tenant_groups, tenant_roles, wanted_tenant_groups


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
            assert not scope.startswith("access:servers")


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
        assert f"read:servers!group={group}" in role["scopes"]
        assert f"delete:servers!group={group}" in role["scopes"]
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

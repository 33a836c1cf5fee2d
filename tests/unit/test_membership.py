"""One rule for who belongs to a tenant and who administers it (quotas.model.Tenant), and one for
which limits apply to a person (quotas.policy), as the hub, the OIDC login and the quotas service
each use them."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping
from typing import Any

import pytest

from authenticators.oidc import managed_tenant_roles, tenant_access
from quotas.loader import parse_platform
from quotas.model import Image, PlatformConfig
from quotas.policy import Limit, limit_applies, limits_for
from quotas.rbac import tenant_roles
from quotas.service.base import Caller


@pytest.fixture
def with_groups(example_data: dict[str, Any], images: Mapping[str, Image]) -> PlatformConfig:
    """The example: snu-ai (alice, bob; admin kim) with member groups snu-students, nova-labs
    (alice, carol, dave; admin erin)."""
    example_data["tenants"][0]["members"]["groups"] = ["snu-students"]
    return parse_platform(example_data, images)


@pytest.mark.parametrize(
    ("user", "groups", "own_groups", "admin", "member"),
    [
        ("bob", (), None, False, True),  # listed by name
        ("kim", (), None, False, True),  # an admin is a member
        ("zoe", ("snu-students",), None, False, True),  # in one of its members.groups
        ("zoe", ("snu-ai",), None, False, True),  # in its own JupyterHub group
        ("zoe", ("snu-ai",), ("snu-staff",), False, False),  # a provider's group named like it, when oidc maps others
        ("zoe", ("snu-staff",), ("snu-staff",), False, True),
        ("zoe", (), None, True, True),  # an admin by a grant outside tenants.yaml
        ("zoe", ("nova-labs",), None, False, False),
    ],
)
def test_has_member(
    with_groups: PlatformConfig,
    user: str,
    groups: tuple[str, ...],
    own_groups: tuple[str, ...] | None,
    admin: bool,
    member: bool,
) -> None:
    assert with_groups.tenants["snu-ai"].has_member(user, groups, own_groups=own_groups, admin=admin) is member


def test_has_admin(with_groups: PlatformConfig) -> None:
    snu = with_groups.tenants["snu-ai"]
    assert snu.has_admin("kim")
    assert not snu.has_admin("bob")
    assert snu.has_admin("bob", ["tenant-admin-snu-ai"], {"tenant-admin-snu-ai"})
    assert not snu.has_admin("bob", ["tenant-admin-nova-labs"], {"tenant-admin-snu-ai"})


@pytest.mark.parametrize(
    ("name", "groups", "roles", "member", "admin"),
    [
        ("alice", [], [], {"snu-ai", "nova-labs"}, set()),
        ("kim", [], [], {"snu-ai"}, {"snu-ai"}),
        ("zoe", ["snu-students"], [], {"snu-ai"}, set()),
        ("zoe", [], ["tenant-admin-nova-labs"], {"nova-labs"}, {"nova-labs"}),  # an OIDC login's role
        ("zoe", ["tenant-admin-nova-labs"], [], set(), set()),  # a group named like the role is no role
    ],
)
def test_the_quotas_service_and_the_hub_agree_on_membership(
    with_groups: PlatformConfig, name: str, groups: list[str], roles: list[str], member: set[str], admin: set[str]
) -> None:
    caller = Caller.from_hub({"kind": "user", "name": name, "groups": groups}, with_groups, roles)
    assert (set(caller.tenants_member), set(caller.tenants_admin)) == (member, admin)
    if not roles:
        assert set(caller.tenants_member) == {t.id for t in with_groups.tenants_of(name, groups)}


def test_oidc_logins_follow_the_same_rule(with_groups: PlatformConfig) -> None:
    # by the convention, the provider's group <id> admits as the hub's group <id> does
    access = tenant_access(with_groups, "zoe", ["snu-students", "nova-labs-admins"])
    assert access.tenants == ("snu-ai", "nova-labs") and access.admin_of == ("nova-labs",)
    assert tenant_access(with_groups, "kim", []).admin_of == ("snu-ai",)


def test_one_tenant_admin_role_for_load_roles_and_oidc_logins(config: PlatformConfig) -> None:
    assigned = {r["name"]: r for r in tenant_roles(config)}
    for role in managed_tenant_roles(config):
        assert {**role, "users": assigned[role["name"]]["users"]} == assigned[role["name"]]


def test_limits_that_apply_to_a_person() -> None:
    limits = [
        Limit("lab", "user", "alice", servers=1),
        Limit("lab", "user", "bob", servers=1),
        Limit("lab", "group", "ml", servers=2),
        Limit("lab", "group", "vision", servers=2),
    ]
    assert [(lim.kind, lim.subject) for lim in limits_for(limits, "alice", ("ml",))] == [
        ("user", "alice"),
        ("group", "ml"),
    ]
    assert limits_for(limits, "carol", ()) == []
    assert limit_applies("group", "ml", "carol", ("ml",))
    assert not limit_applies("user", "ml", "carol", ("ml",))  # a person's limit, not the group's


def test_tenants_of_is_has_member_of_every_tenant_in_config_order(with_groups: PlatformConfig) -> None:
    """The index behind ``tenants_of`` (a hub start asks it for every person) says what asking each
    tenant's ``has_member`` says, in the order the config declares them."""
    rng = random.Random(15)
    people = [f"p{i}" for i in range(40)]
    groups = [f"g{i}" for i in range(8)]
    base = next(iter(with_groups.tenants.values()))
    tenants = {}
    for i in range(25):
        tid = f"t{i:02d}"
        tenants[tid] = dataclasses.replace(
            base,
            id=tid,
            member_users=frozenset(rng.sample(people, rng.randint(0, 10))),
            member_groups=frozenset(rng.sample(groups, rng.randint(0, 2))),
            admins=tuple(rng.sample(people, rng.randint(0, 2))),
        )
    config = dataclasses.replace(with_groups, tenants=tenants)
    for person in [*people, "nobody"]:
        for held in ((), tuple(rng.sample(groups, 2)), ("t03",), ("t07", "g1", "unknown")):
            expected = [t for t in tenants.values() if t.has_member(person, held)]
            assert config.tenants_of(person, held) == expected, (person, held)
        assert config.tenants_administered_by(person) == [t for t in tenants.values() if t.has_admin(person)]

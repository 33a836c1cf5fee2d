"""Unit tests of the OIDC mapping (claims -> tenants, roles, JupyterHub groups), the tenants.yaml
``oidc:`` key, and ID token verification with keys made here."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from authenticators.oidc import (
    TenantAccess,
    TokenRefused,
    UnknownSigningKey,
    admitting_groups,
    lost_servers,
    managed_tenant_roles,
    tenant_access,
    verify_id_token,
)
from quotas import paths
from quotas.loader import ConfigError, load_catalog, parse_platform
from quotas.model import PlatformConfig

ISSUER = "https://login.example.org/realms/aidc"


def platform(snu_oidc: Any = None, nova_members_groups: list[str] | None = None) -> PlatformConfig:
    tenants: list[dict[str, Any]] = [
        {
            "id": "snu-ai",
            "display_name": "SNU AI Lab",
            "kind": "university",
            "members": {"users": ["alice"]},
            "admins": ["kim"],
            "profiles": ["cpu"],
            "quota": {},
        },
        {
            "id": "nova",
            "display_name": "Nova Labs",
            "kind": "startup",
            "members": {"groups": nova_members_groups or []},
            "profiles": ["cpu"],
            "quota": {},
        },
    ]
    if snu_oidc is not None:
        tenants[0]["oidc"] = snu_oidc
    data = {
        "gpu_types": {},
        "profiles": [{"id": "cpu", "display_name": "CPU", "cpu": "1", "memory": "1Gi", "image": "base"}],
        "tenants": tenants,
    }
    return parse_platform(data, load_catalog(paths.REPO / "images" / "catalog.yaml"))


@pytest.mark.parametrize(
    ("user", "groups", "tenants", "admin_of"),
    [
        ("bob", ["snu-ai"], ("snu-ai",), ()),  # convention: group <tenant>
        ("bob", ["snu-ai-admins"], ("snu-ai",), ("snu-ai",)),  # <tenant>-admins: admin and member
        ("bob", ["nova", "snu-ai"], ("snu-ai", "nova"), ()),  # config order
        ("bob", ["chess-club"], (), ()),
        ("bob", [], (), ()),
        ("alice", [], ("snu-ai",), ()),  # by name in tenants.yaml: union with the groups
        ("kim", [], ("snu-ai",), ("snu-ai",)),
        ("bob", ["SNU-AI"], (), ()),  # group names are exact
    ],
)
def test_convention(user: str, groups: list[str], tenants: tuple[str, ...], admin_of: tuple[str, ...]) -> None:
    access = tenant_access(platform(), user, groups)
    assert (access.tenants, access.admin_of) == (tenants, admin_of)
    assert access.hub_groups == tenants
    assert access.admitted == bool(tenants)


def test_explicit_mapping_replaces_the_convention() -> None:
    config = platform(snu_oidc={"groups": ["snu-students", "snu-staff"], "admin_groups": ["snu-profs"]})
    assert tenant_access(config, "bob", ["snu-ai"]).tenants == ()  # the convention's name no longer admits
    assert tenant_access(config, "bob", ["snu-ai-admins"]).tenants == ()
    assert tenant_access(config, "bob", ["snu-staff"]).tenants == ("snu-ai",)
    assert tenant_access(config, "bob", ["snu-profs"]).admin_of == ("snu-ai",)


def test_a_key_left_out_keeps_its_convention() -> None:
    config = platform(snu_oidc={"groups": ["snu-students"]})
    assert tenant_access(config, "bob", ["snu-ai-admins"]).admin_of == ("snu-ai",)
    config = platform(snu_oidc={"admin_groups": []})
    assert tenant_access(config, "bob", ["snu-ai-admins"]).admin_of == ()
    assert tenant_access(config, "kim", []).admin_of == ("snu-ai",)  # by name still


def test_members_groups_pass_through_as_hub_groups_but_tenant_names_do_not() -> None:
    config = platform(nova_members_groups=["nova-interns"])
    access = tenant_access(config, "bob", ["nova-interns", "chess-club"])
    assert access.tenants == ("nova",)
    assert access.hub_groups == ("nova", "nova-interns")


def test_platform_admins_and_roles() -> None:
    config = platform()
    op = tenant_access(config, "op", ["ops"], platform_admin_groups={"ops"})
    assert op.admitted and op.tenants == () and op.roles() == ["user", "admin"]
    named = tenant_access(config, "root", [], admin_users={"root"})
    assert named.platform_admin
    kim = tenant_access(config, "kim", ["nova-admins"])
    assert kim.roles() == ["user", "tenant-admin-snu-ai", "tenant-admin-nova"]


def test_managed_roles_cover_every_tenant_without_assignments() -> None:
    roles = managed_tenant_roles(platform())
    assert [r["name"] for r in roles] == ["tenant-admin-snu-ai", "tenant-admin-nova"]
    assert all("users" not in r and "groups" not in r for r in roles)
    assert "list:users!group=nova" in roles[1]["scopes"]


def test_admitting_groups_for_the_refusal_page() -> None:
    assert admitting_groups(platform(nova_members_groups=["nova-interns"])) == [
        ("snu-ai", "SNU AI Lab (snu-ai)", "member"),
        ("snu-ai-admins", "SNU AI Lab (snu-ai)", "tenant admin"),
        ("nova", "Nova Labs (nova)", "member"),
        ("nova-interns", "Nova Labs (nova)", "member"),
        ("nova-admins", "Nova Labs (nova)", "tenant admin"),
    ]


def test_lost_servers() -> None:
    access = TenantAccess("bob", tenants=("nova",), admin_of=(), platform_admin=False)
    assert lost_servers({"": "snu-ai", "gpu": "nova", "x": "snu-ai"}, access) == {"": "snu-ai", "x": "snu-ai"}


@pytest.mark.parametrize(
    ("oidc", "problem"),
    [
        ({"groupz": ["a"]}, "tenants[snu-ai].oidc.groupz: unknown key; did you mean 'groups'?"),
        ({"groups": "snu"}, "tenants[snu-ai].oidc.groups: must be a list of group name"),
        ({"groups": None}, "tenants[snu-ai].oidc.groups: is empty; write [] for no group"),
        ({"groups": [" snu"]}, "tenants[snu-ai].oidc.groups[0]: ' snu' is not a valid group name"),
        (
            {"groups": ["a", "a"]},
            "tenants[snu-ai].oidc.groups[1]: group name (as the identity provider sends it) 'a' is listed twice",
        ),
        ({"groups": ["a"], "admin_groups": ["a"]}, "tenants[snu-ai].oidc.admin_groups[0]: group 'a' is in groups too"),
        (["a"], "tenants[snu-ai].oidc: must be a mapping"),
    ],
)
def test_loader_refuses_bad_oidc_mappings(oidc: Any, problem: str) -> None:
    with pytest.raises(ConfigError) as e:
        platform(snu_oidc=oidc)
    assert problem in str(e.value)


def test_loader_keeps_group_names_as_providers_write_them() -> None:
    config = platform(snu_oidc={"groups": ["/SNU/AI Lab", "cn=ai,ou=groups,dc=snu"], "admin_groups": []})
    tenant = config.tenants["snu-ai"]
    assert (tenant.oidc_groups, tenant.oidc_admin_groups) == (("/SNU/AI Lab", "cn=ai,ou=groups,dc=snu"), ())
    assert config.tenants["nova"].oidc_groups is None


# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwks_of(key: rsa.RSAPrivateKey, kid: str = "k1") -> dict[str, Any]:
    jwk = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {"keys": [{**jwk, "kid": kid, "use": "sig", "alg": "RS256"}]}


def token(key: rsa.RSAPrivateKey, kid: str = "k1", **overrides: Any) -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "sub": "u1", "aud": "hub", "exp": now + 300, "iat": now, "groups": ["snu-ai"]}
    claims.update(overrides)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})


def verify(tok: str, jwks: dict[str, Any]) -> dict[str, Any]:
    return verify_id_token(tok, jwks, issuer=ISSUER, client_id="hub")


def test_a_good_token_gives_its_claims(key: rsa.RSAPrivateKey) -> None:
    assert verify(token(key), jwks_of(key))["groups"] == ["snu-ai"]
    assert verify(token(key, aud=["other", "hub"], azp="hub"), jwks_of(key))["sub"] == "u1"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"iss": "https://evil.example"}, "issued by 'https://evil.example', but this hub accepts tokens of"),
        ({"aud": "another-app"}, "is meant for 'another-app', not for this hub"),
        ({"aud": ["another-app", "hub"], "azp": "another-app"}, "was issued to 'another-app'"),
        ({"exp": -120}, "The ID token expired at"),  # seconds from now, when the test runs
        ({"iat": 600}, "issued in the future"),
        ({"sub": None}, "has no 'sub' claim"),
    ],
)
def test_bad_claims_are_refused(key: rsa.RSAPrivateKey, overrides: dict[str, Any], message: str) -> None:
    # times are relative to now here, not to when pytest collected the parameters (in a full run
    # the unit tier starts many minutes after collection)
    overrides = {k: int(time.time()) + v if k in ("exp", "iat") else v for k, v in overrides.items()}
    with pytest.raises(TokenRefused, match=message):
        verify(token(key, **overrides), jwks_of(key))


def test_signatures(key: rsa.RSAPrivateKey) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(TokenRefused, match="signature does not match the key 'k1'"):
        verify(token(other), jwks_of(key))
    with pytest.raises(UnknownSigningKey, match="signed with key 'k9', which .* does not publish"):
        verify(token(key, kid="k9"), jwks_of(key))
    hs = jwt.encode({"iss": ISSUER, "sub": "u1", "aud": "hub"}, "secret-of-32-bytes-or-more-000000", algorithm="HS256")
    with pytest.raises(TokenRefused, match="accepts only public-key signatures"):
        verify(hs, jwks_of(key))
    with pytest.raises(TokenRefused, match="no readable ID token"):
        verify("not-a-jwt", jwks_of(key))


def test_mapped_groups_are_tenant_member_admin_and_platform_admin_groups() -> None:
    from authenticators.oidc import mapped_groups

    known = mapped_groups(platform(snu_oidc={"groups": ["snu-students"]}), ["aidc-operators"])
    assert known == {"aidc-operators", "snu-students", "snu-ai-admins", "nova", "nova-admins"}


@pytest.mark.parametrize(
    ("settings", "missing"),
    [
        ({}, "OIDCAuthenticator.issuer, OIDCAuthenticator.client_id, OIDCAuthenticator.client_secret"),
        ({"issuer": ISSUER, "client_id": "hub"}, "OIDCAuthenticator.client_secret"),
    ],
)
def test_a_hub_without_its_provider_or_client_does_not_start(
    settings: dict[str, str], missing: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from authenticators.oidc import OIDCAuthenticator

    monkeypatch.delenv("OAUTH_CLIENT_SECRET", raising=False)  # OAuthenticator's default of client_secret
    authenticator = OIDCAuthenticator(**settings)
    with pytest.raises(SystemExit, match=f"OIDC login needs {missing} .*; the hub was not started"):
        authenticator.check_allow_config()

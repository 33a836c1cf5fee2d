"""The `hub` tier, OIDC login: a real hub whose provider is a real Dex, reached through an
attacker in the middle (tests/bed/dex.py TamperingFront) that can swap the ID token Dex issues.

Here the username claim is `email` (OIDCAuthenticator.username_claim), so an unverified email must be
refused. Tenants (tests/hub/tenants.yaml): `lab` by the convention (groups lab, lab-admins),
`startup` by an explicit mapping (group startup-staff). Every refusal must leave nothing behind:
no JupyterHub user, so no group, role or server.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.bed.dex import (
    Dex,
    DexUser,
    OIDCClient,
    TamperingFront,
    oidc_env,
    oidc_login,
    oidc_tenants,
    oidc_traits,
    provider_callback,
    running_dex,
)
from tests.bed.hub import Hub

USERS = [
    DexUser("op", groups=["aidc-operators"]),
    DexUser("alice", groups=["lab", "chess-club"]),
    DexUser("kim", groups=["lab-admins"]),
    DexUser("dave", groups=["startup-staff"]),
    DexUser("sam", groups=["startup"]),  # named like the tenant, but startup maps startup-staff only
    DexUser("mallory", groups=["lab"], email_verified=False),
    DexUser("erin", groups=["lab"]),
    DexUser("nina", groups=["lab"]),  # would get in, but for the tampering on the way
]


@pytest.fixture(scope="module")
def front() -> Iterator[TamperingFront]:
    f = TamperingFront()
    yield f
    f.stop()


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory, front: TamperingFront) -> Iterator[Hub]:
    workdir = tmp_path_factory.mktemp("oidc-hub")
    traits = oidc_traits(f"{front.url}/dex", username_claim="email")
    h = Hub(workdir, accounts={}, tenants=oidc_tenants(workdir), env=oidc_env(), traits=traits)
    with running_dex(workdir / "dex", USERS, [f"{h.url}/hub/oauth_callback"], issuer_port=front.port) as dex:
        front.start(dex.port)
        h.dex = dex  # type: ignore[attr-defined]
        with h.running():
            yield h


@pytest.fixture(scope="module")
def operator(hub: Hub) -> OIDCClient:
    """A platform admin (group aidc-operators), to look at what exists."""
    return OIDCClient(hub, USERS[0], name="op@example.org")


@pytest.fixture(autouse=True)
def honest_front(front: TamperingFront) -> Iterator[None]:
    yield
    front.tamper_token = None


def user_model(operator: OIDCClient, name: str) -> dict[str, Any] | None:
    r = operator.api("GET", f"/users/{name}")
    if r.status_code == 404:
        return None
    r.raise_for_status()
    model: dict[str, Any] = r.json()
    return model


def assert_nothing_created(operator: OIDCClient, name: str) -> None:
    assert user_model(operator, name) is None, f"{name} was created although the login was refused"


def user(name: str) -> DexUser:
    return next(u for u in USERS if u.username == name)


def test_members_and_tenant_admins_get_their_tenant_groups_and_roles(hub: Hub, operator: OIDCClient) -> None:
    for name in ("alice", "kim", "dave"):
        _, r = oidc_login(hub.url, user(name))
        assert r.status_code == 302, r.text
    alice = user_model(operator, "alice@example.org")
    kim = user_model(operator, "kim@example.org")
    dave = user_model(operator, "dave@example.org")
    assert alice and kim and dave
    # chess-club is no tenant's group: it does not become a JupyterHub group
    assert (alice["groups"], kim["groups"], dave["groups"]) == (["lab"], ["lab"], ["startup"])
    # and the hub keeps none of it where OAuth clients read the user model (user_info)
    assert alice["user_info"]["oidc"]["groups"] == ["lab"], alice["user_info"]
    assert sorted(alice["roles"]) == ["user"]
    assert sorted(kim["roles"]) == ["tenant-admin-lab", "user"]
    assert not alice["admin"] and not kim["admin"]
    assert user_model(operator, "op@example.org")["admin"]  # type: ignore[index]


def test_a_group_named_like_a_tenant_does_not_admit_when_the_tenant_maps_others(hub: Hub, operator: OIDCClient) -> None:
    _, r = oidc_login(hub.url, user("sam"))
    assert r.status_code == 403
    assert "You are not a member of any tenant" in r.text
    assert "startup-staff" in r.text and "lab-admins" in r.text  # the groups that would admit sam
    assert "the AIDC support desk (support@aidc.example.org)" in r.text
    assert_nothing_created(operator, "sam@example.org")


def _b64url(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_forged_id_token_is_refused(hub: Hub, front: TamperingFront, operator: OIDCClient) -> None:
    attacker = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def forge(answer: dict[str, Any]) -> dict[str, Any]:
        # same claims, same key id as Dex's, but signed with the attacker's key; and made a platform admin
        claims = jwt.decode(answer["id_token"], options={"verify_signature": False})
        claims["groups"] = ["aidc-operators", "lab-admins"]
        kid = jwt.get_unverified_header(answer["id_token"])["kid"]
        answer["id_token"] = jwt.encode(claims, attacker, algorithm="RS256", headers={"kid": kid})
        return answer

    front.tamper_token = forge
    _, r = oidc_login(hub.url, user("nina"))
    assert r.status_code == 403
    assert "signature does not match" in r.text and "forged or altered" in r.text
    assert_nothing_created(operator, "nina@example.org")


def test_unsigned_id_token_is_refused(hub: Hub, front: TamperingFront, operator: OIDCClient) -> None:
    def strip_signature(answer: dict[str, Any]) -> dict[str, Any]:
        claims = jwt.decode(answer["id_token"], options={"verify_signature": False})
        answer["id_token"] = f"{_b64url({'alg': 'none', 'typ': 'JWT'})}.{_b64url(claims)}."
        return answer

    front.tamper_token = strip_signature
    _, r = oidc_login(hub.url, user("nina"))
    assert r.status_code == 403
    assert "accepts only public-key signatures" in r.text
    assert_nothing_created(operator, "nina@example.org")


def test_id_token_of_another_issuer_is_refused(
    hub: Hub, front: TamperingFront, operator: OIDCClient, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # a second, real provider with the same client and users: its tokens are genuine, but not ours
    with running_dex(tmp_path_factory.mktemp("other-dex"), USERS, [f"{hub.url}/hub/oauth_callback"]) as other:
        foreign = other.password_grant("kim")["id_token"]
        assert jwt.decode(foreign, options={"verify_signature": False})["iss"] == other.issuer

        def swap(answer: dict[str, Any]) -> dict[str, Any]:
            answer["id_token"] = foreign
            return answer

        front.tamper_token = swap
        _, r = oidc_login(hub.url, user("nina"))
    assert r.status_code == 403
    text = html.unescape(r.text)
    assert f"issued by '{other.issuer}'" in text and f"accepts tokens of '{front.url}/dex' only" in text
    assert_nothing_created(operator, "nina@example.org")


def test_state_mismatch_on_the_callback_is_refused(hub: Hub, operator: OIDCClient) -> None:
    session = requests.Session()
    callback = provider_callback(session, hub.url, user("erin"))
    url = urlsplit(callback)
    query = dict(parse_qsl(url.query))
    query["state"] = base64.urlsafe_b64encode(json.dumps({"state_id": "0" * 32}).encode()).decode()
    r = session.get(urlunsplit(url._replace(query=urlencode(query))), allow_redirects=False, timeout=30)
    assert r.status_code == 400 and "OAuth state mismatch" in r.text
    # the right state and code, but without the state cookie (another browser): refused too
    r = requests.get(callback, allow_redirects=False, timeout=30)
    assert r.status_code == 400 and "OAuth state missing from cookies" in r.text
    assert_nothing_created(operator, "erin@example.org")
    # the same person, logging in properly, gets in: the refusals above were the state's alone
    _, r = oidc_login(hub.url, user("erin"))
    assert r.status_code == 302


def test_unverified_email_is_not_a_username(hub: Hub, operator: OIDCClient) -> None:
    _, r = oidc_login(hub.url, user("mallory"))
    assert r.status_code == 403
    assert "your email address mallory@example.org is not verified" in r.text
    assert_nothing_created(operator, "mallory@example.org")


def test_a_name_stays_bound_to_its_identity(hub: Hub, operator: OIDCClient) -> None:
    dex: Dex = hub.dex  # type: ignore[attr-defined]
    _, r = oidc_login(hub.url, user("dave"))
    assert r.status_code == 302
    # the provider re-creates dave's address for another account (another sub)
    impostor = DexUser("dave", groups=["lab-admins"], user_id="id-someone-else")
    dex.restart([impostor if u.username == "dave" else u for u in USERS])
    try:
        _, r = oidc_login(hub.url, impostor)
        assert r.status_code == 403
        assert "belongs to another account of the identity provider" in r.text
        assert user_model(operator, "dave@example.org")["groups"] == ["startup"]  # type: ignore[index]
    finally:
        dex.restart(USERS)


def test_a_tenant_admin_by_provider_group_administers_that_tenant_in_the_quotas_service(
    hub: Hub, operator: OIDCClient
) -> None:
    """kim is lab's admin only through the provider's group lab-admins (role tenant-admin-lab):
    the quotas service counts the role, for lab alone; alice, a member, gets no admin rights."""
    kim, alice = (
        OIDCClient(hub, user("kim"), name="kim@example.org"),
        OIDCClient(hub, user("alice"), name="alice@example.org"),
    )
    api = f"{hub.url}/services/quotas/api"

    def call(who: OIDCClient, method: str, path: str, **kw: Any) -> requests.Response:
        return requests.request(
            method, f"{api}/{path}", headers={"Authorization": f"token {who.token}"}, timeout=30, **kw
        )

    me = call(kim, "GET", "me").json()
    assert {t["id"]: t["role"] for t in me["tenants"]} == {"lab": "admin"}, me
    r = call(kim, "PUT", "tenants/lab/limits/users/alice@example.org", json={"servers": 1})
    assert r.status_code == 200, r.text
    assert call(kim, "GET", "tenants/startup/limits").status_code == 403
    assert call(kim, "PUT", "tenants/startup/limits/users/dave@example.org", json={"servers": 1}).status_code == 403
    r = call(alice, "PUT", "tenants/lab/limits/users/alice@example.org", json={"servers": 2})
    assert r.status_code == 403 and "tenant admin" in r.json()["message"]
    assert call(alice, "GET", "tenants/lab/limits/users/alice@example.org").json()["servers"] == 1
    assert call(kim, "DELETE", "tenants/lab/limits/users/alice@example.org").status_code == 204

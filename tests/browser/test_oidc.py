"""The `browser` tier, OIDC login: people sign in on Dex's own login page (a real Dex built from
the Go module proxy) and land in the hub with the tenants their provider groups give them.

Tenants (tests/hub/tenants.yaml): `lab` by the convention (group lab; admins lab-admins),
`startup` by an explicit mapping (group startup-staff). The username is `preferred_username`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.bed.dex import Dex, DexUser, OIDCClient, oidc_env, oidc_tenants, oidc_traits, running_dex
from tests.bed.hub import Client, Hub
from tests.browser.conftest import ARTIFACTS

# nobody here is listed by name in tenants.yaml: their tenants come from their groups alone
USERS = [
    DexUser("mia", groups=["lab"]),
    DexUser("lee", groups=["lab-admins"]),
    DexUser("nora", groups=["startup-staff"]),
    DexUser("olga", groups=["lab", "startup-staff"]),
    DexUser("zed", groups=["chess-club"]),
    DexUser("op", groups=["aidc-operators"]),
]
SLOW = 90_000


@pytest.fixture(scope="module")
def dex_and_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Dex, Hub]]:
    workdir = tmp_path_factory.mktemp("oidc-browser-hub")
    hub = Hub(workdir, accounts={}, tenants=oidc_tenants(workdir), env=oidc_env())
    with running_dex(workdir / "dex", USERS, [f"{hub.url}/hub/oauth_callback"]) as dex:
        hub.traits.update(oidc_traits(dex.issuer))
        hub.start()
        try:
            yield dex, hub
        finally:
            hub.stop()


@pytest.fixture(scope="module")
def hub(dex_and_hub: tuple[Dex, Hub]) -> Hub:  # overrides the browser tier's local-accounts hub
    return dex_and_hub[1]


@pytest.fixture(scope="module")
def dex(dex_and_hub: tuple[Dex, Hub]) -> Dex:
    return dex_and_hub[0]


@pytest.fixture(scope="module")
def clients(hub: Hub) -> dict[str, Client]:
    """mia, nora, olga and op (a platform admin) exist (logged in once through Dex) and have API tokens."""
    return {u.username: OIDCClient(hub, u) for u in USERS if u.username in ("mia", "nora", "olga", "op")}


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=Path(ARTIFACTS) / f"oidc-{name}.png", full_page=True)


def sign_in(page: Page, hub: Hub, dex: Dex, name: str, step: str = "") -> None:
    """From the hub's login page through Dex's login form; stops where the hub sends the person."""
    user = dex.user(name)
    page.goto(f"{hub.url}/hub/login")
    page.get_by_role("button", name=re.compile("Sign in with")).click()
    page.wait_for_url(re.compile(r"/dex/auth/"))
    expect(page.locator("input#login")).to_be_visible()
    page.fill("input#login", user.email)
    page.fill("input#password", user.password)
    if step:
        shot(page, f"{step}-dex-login")
    page.locator("#submit-login").click()
    page.wait_for_url(re.compile(re.escape(hub.url)))


def tenants_on_spawn_form(page: Page) -> list[str]:
    return page.locator("fieldset[data-tenant]").evaluate_all("els => els.map(e => e.dataset.tenant)")


def test_member_lands_in_their_tenant(page: Page, hub: Hub, dex: Dex) -> None:
    sign_in(page, hub, dex, "nora", step="01")
    page.wait_for_url(re.compile(r"/hub/spawn"))
    expect(page.locator("#spawn_form")).to_be_visible()
    assert tenants_on_spawn_form(page) == ["startup"]
    values = page.locator("input[type=radio][name=choice]").evaluate_all("els => els.map(e => e.value)")
    assert values == ["startup/cpu", "startup/h100-x1", "startup/a100-x1"]
    shot(page, "02-spawn-form-nora")


def test_tenant_admin_sees_only_their_tenants_people(
    page: Page, hub: Hub, dex: Dex, clients: dict[str, Client]
) -> None:
    sign_in(page, hub, dex, "lee")
    page.goto(f"{hub.url}/hub/admin")
    names = page.locator("[data-testid=user-row-name]")
    expect(names.filter(has_text="mia")).to_have_count(1)
    shot(page, "03-admin-page-lee")
    # lab's people only: not nora (startup), not op (a platform admin in no tenant)
    assert sorted(n.strip() for n in names.all_inner_texts()) == ["lee", "mia", "olga"]


def test_person_in_no_tenant_sees_who_to_ask(page: Page, hub: Hub, dex: Dex, clients: dict[str, Client]) -> None:
    sign_in(page, hub, dex, "zed")
    refused = page.locator("#aidc-refused")
    expect(refused).to_be_visible()
    expect(refused).to_contain_text("You are not a member of any tenant")
    expect(refused).to_contain_text("chess-club")
    expect(page.locator("#aidc-admitting-groups")).to_contain_text("startup-staff")
    expect(page.locator("#aidc-admitting-groups")).to_contain_text("lab-admins")
    expect(page.locator(".aidc-contact")).to_contain_text("the AIDC support desk (support@aidc.example.org)")
    shot(page, "04-refused-zed")
    assert clients["op"].api("GET", "/users/zed").status_code == 404  # nothing was created for zed


def test_group_removed_at_the_provider_stops_that_tenants_servers(
    page: Page, hub: Hub, dex: Dex, clients: dict[str, Client]
) -> None:
    olga = clients["olga"]
    r = olga.spawn("labwork", tenant="lab", profile="cpu")
    assert r.status_code in (201, 202), r.text
    r = olga.spawn("startupwork", tenant="startup", profile="cpu")
    assert r.status_code in (201, 202), r.text
    olga.wait_ready("labwork")
    olga.wait_ready("startupwork")

    # the provider's admin removes olga from group lab
    dex.restart([DexUser("olga", groups=["startup-staff"]) if u.username == "olga" else u for u in USERS])
    try:
        sign_in(page, hub, dex, "olga")
        page.goto(f"{hub.url}/hub/spawn/olga/again")
        expect(page.locator("#spawn_form")).to_be_visible(timeout=SLOW)
        assert tenants_on_spawn_form(page) == ["startup"]
        shot(page, "05-spawn-form-olga-after-lab-removed")
        model = olga.api("GET", "/users/olga").json()
        assert model["groups"] == ["startup"]
        assert set(model["servers"]) == {"startupwork"}, model["servers"]
    finally:
        dex.restart(USERS)

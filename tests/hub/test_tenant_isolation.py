"""Tenant admins are confined to servers charged to a tenant they administer, whoever runs them:
every hub API route on users, servers, tokens, groups and the proxy, and every route of the quotas
service on servers, called by every role on single- and multi-tenant people (issue 13, point 1).

Tenants (tests/hub/tenants.yaml): `lab` (alice, bob, carol; admin kim) and `startup` (dave; admin
erin); carol is in both (the `hub` fixture adds her to `startup`'s members if the file does
not), so she runs `labsrv` charged to `lab` and `upsrv` charged to `startup`. `admin` is a platform admin, `zed` is in no tenant.

The rule the tables assert (quotas/rbac.py, quotas/service/api_servers.py): at the hub, tenant
admins see their people's names and nothing about or on servers; only platform admins and the
owner act on a server there. In the quotas service, a server is seen and stopped by platform
admins, the admins of the tenant it is charged to (the hub's record of it) and its owner. A
refused call changes nothing: after the refusals every server still runs, and no server was added.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import requests
import yaml

from tests.bed.hub import PASSWORDS, Client, Hub
from tests.bed.hub import TENANTS as TENANTS_FILE

CALLERS = ("admin", "kim", "erin", "alice", "carol", "dave", "zed")
# (owner, server) -> the tenant it is charged to
SERVERS = {("alice", "a"): "lab", ("dave", "d"): "startup", ("carol", "labsrv"): "lab", ("carol", "upsrv"): "startup"}
TARGETS = ("alice", "dave", "carol")  # single-tenant in lab, single-tenant in startup, in both
MEMBER_OF = {
    "alice": {"lab"},
    "bob": {"lab"},
    "carol": {"lab", "startup"},
    "dave": {"startup"},
    "kim": {"lab"},
    "erin": {"startup"},
}
ADMIN_OF = {"kim": {"lab"}, "erin": {"startup"}}
TENANTS = ("lab", "startup")
DENIED = (403, 404)  # the hub answers 404 about people the caller may not see at all


def acts_at_hub(caller: str, owner: str) -> bool:
    """At the hub, only platform admins and the owner act on a person's servers and tokens."""
    return caller in ("admin", owner)


def sees_name(caller: str, person: str) -> bool:
    """Tenant admins find the people of their tenants at the hub (names only)."""
    return acts_at_hub(caller, person) or bool(ADMIN_OF.get(caller, set()) & MEMBER_OF.get(person, set()))


def reads_tenant(caller: str, tenant: str) -> bool:
    return caller == "admin" or tenant in MEMBER_OF.get(caller, set())


def acts_in_service(caller: str, owner: str, charged_to: str) -> bool:
    """In the quotas service: platform admins, the admins of the tenant the server is charged to, its owner."""
    return caller in ("admin", owner) or charged_to in ADMIN_OF.get(caller, set())


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    workdir = tmp_path_factory.mktemp("isolation-hub")
    data = yaml.safe_load(TENANTS_FILE.read_text())
    startup = next(t for t in data["tenants"] if t["id"] == "startup")
    if "carol" not in startup["members"]["users"]:
        startup["members"]["users"].append("carol")
    tenants = workdir / "tenants.yaml"
    tenants.write_text(yaml.safe_dump(data))
    h = Hub(workdir, accounts=PASSWORDS, fake_gpus="H100:4,A100:2", tenants=tenants)
    with h.running():
        yield h


@pytest.fixture(scope="module")
def people(hub: Hub) -> dict[str, Client]:
    return {name: hub.login(name, PASSWORDS[name]) for name in CALLERS}


def quotas(client: Client, method: str, path: str) -> requests.Response:
    return requests.request(
        method,
        f"{client.hub.url}/services/quotas/{path}",
        headers={"Authorization": f"token {client.token}"},
        timeout=60,
        allow_redirects=False,
    )


def running(admin: Client) -> set[tuple[str, str]]:
    """The servers the hub runs now (or is starting), as (owner, name)."""
    out = set()
    for person in TARGETS:
        for name in admin.api("GET", f"/users/{person}").json()["servers"]:
            out.add((person, name))
    return out


def start(people: dict[str, Client], wanted: set[tuple[str, str]]) -> None:
    """Start (as their owners) those of ``wanted`` that do not run, and wait until all are ready."""
    missing = sorted(wanted - running(people["admin"]))
    for owner, name in missing:
        r = people[owner].spawn(name, tenant=SERVERS[(owner, name)], profile="cpu")
        assert r.status_code in (201, 202), r.text
    for owner, name in missing:
        people[owner].wait_ready(name)


def wait_stopped(admin: Client, servers: set[tuple[str, str]], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while running(admin) & servers:
        assert time.monotonic() < deadline, f"still running: {running(admin) & servers}"
        time.sleep(0.5)


def server_path(owner: str, name: str) -> str:
    return f"/users/{owner}/servers/{name}"


def test_issue_13_reproduction(hub: Hub, people: dict[str, Client]) -> None:
    """erin (admin of startup) stopped and read carol's server charged to lab (204, 200), and kim
    (admin of lab) started one for carol charged to startup (201). Now all refused, nothing changed."""
    admin, erin, kim = people["admin"], people["erin"], people["kim"]
    start(people, {("carol", "labsrv")})
    assert erin.api("DELETE", "/users/carol/servers/labsrv").status_code in DENIED
    assert erin.api("GET", "/users/carol/servers/labsrv").status_code in DENIED
    assert "servers" not in erin.api("GET", "/users/carol").json()
    r = kim.api("POST", "/users/carol/servers/kimx", json={"tenant": "startup", "profile": "cpu"})
    assert r.status_code in DENIED, r.text
    # nor through the spawn page, with kim's browser session
    page = kim.session.get(f"{hub.url}/hub/spawn/carol/kimx", allow_redirects=False, timeout=60)
    assert page.status_code in DENIED, page.status_code
    assert running(admin) == {("carol", "labsrv")}
    assert "kimx" not in admin.api("GET", "/users/carol?include_stopped_servers=1").json()["servers"]


# -- the hub's API -------------------------------------------------------------------------------

# (method, path, body) of every route on a person's servers; {o}/{s}: owner and server
SERVER_ROUTES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/users/{o}/servers/{s}", None),
    ("GET", "/users/{o}/servers/{s}/progress", None),
    ("PATCH", "/users/{o}/servers/{s}", {"display_name": "taken over"}),
    ("POST", "/users/{o}/servers/{s}", {"tenant": "{t}", "profile": "cpu"}),
    ("DELETE", "/users/{o}/servers/{s}", None),
]
# routes on a person ({o})
PERSON_ROUTES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("PATCH", "/users/{o}", {"admin": False}),
    ("POST", "/users/{o}", None),
    ("DELETE", "/users/{o}", None),
    ("GET", "/users/{o}/server/progress", None),
    ("PUT", "/users/{o}/servers/newsrv", None),
    ("DELETE", "/users/{o}/server", None),
    ("GET", "/users/{o}/tokens", None),
    ("POST", "/users/{o}/tokens", {"note": "taken over", "expires_in": 60}),
    ("POST", "/users/{o}/activity", {"last_activity": "{now}"}),
    ("POST", "/users/{o}/admin-access", None),
    ("GET", "/users/{o}/shared", None),
]
# routes that only platform admins may call: the group-writing routes act on the tenant groups
ADMIN_ROUTES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("POST", "/users", {"usernames": ["mallory"]}),
    ("POST", "/groups/{g}", None),
    ("DELETE", "/groups/{g}", None),
    ("POST", "/groups/{g}/users", {"users": ["zed"]}),
    ("DELETE", "/groups/{g}/users", {"users": ["dave"]}),
    ("PUT", "/groups/{g}/properties", {"aidc.tenant": "zed"}),
    ("GET", "/proxy", None),
    ("POST", "/proxy", None),
    ("PATCH", "/proxy", {}),
    ("POST", "/shutdown", None),
]
# routes whose allowed calls are not made in the table: those that would stop or remove the people
# under test (exercised in the stop tests and last), and those on a default server nobody runs here
NOT_CALLED_WHEN_ALLOWED = {
    ("DELETE", "/users/{o}/servers/{s}"),
    ("DELETE", "/users/{o}"),
    ("DELETE", "/users/{o}/server"),
    ("GET", "/users/{o}/server/progress"),
}


def fill(value: Any, **names: str) -> Any:
    if isinstance(value, str):
        return value.format(**names)
    if isinstance(value, dict):
        return {k: fill(v, **names) for k, v in value.items()}
    return value


def hub_call(client: Client, method: str, path: str, body: Any) -> requests.Response:
    if path.endswith("/progress"):  # an event stream: the status is enough
        with client.session.get(
            f"{client.hub.url}/hub/api{path}",
            headers={"Authorization": f"token {client.token}"},
            stream=True,
            timeout=30,
        ) as r:
            return r
    return client.api(method, path, **({"json": body} if body is not None else {}))


def test_hub_routes_on_servers_and_people(hub: Hub, people: dict[str, Client]) -> None:
    """Every hub route on a person, their servers and tokens, by every role, on single- and
    multi-tenant people, with every server running: allowed for platform admins and the owner
    only (the allowed calls that would stop someone are in the stop rounds below)."""
    admin = people["admin"]
    start(people, set(SERVERS))
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    table: list[str] = []
    wrong: list[str] = []

    def check(caller: str, method: str, path: str, body: Any, allowed: bool) -> None:
        r = hub_call(people[caller], method, path, body)
        got = r.status_code not in DENIED
        table.append(f"{caller:6} {method:6} {path:40} {r.status_code} {'allow' if got else 'deny'}")
        if got != allowed:
            wrong.append(f"{caller} {method} {path}: {r.status_code} {r.text[:200]}")

    for (owner, name), charged_to in SERVERS.items():
        for method, template, body in SERVER_ROUTES:
            for tenant in TENANTS:
                if "{t}" not in str(body) and tenant != charged_to:
                    continue  # the tenant matters only where the request names one
                for caller in CALLERS:
                    allowed = acts_at_hub(caller, owner)
                    if allowed and (method, template) in NOT_CALLED_WHEN_ALLOWED:
                        continue
                    if allowed and method == "POST":
                        continue  # starting someone's running server again: in test_start_for_someone_else
                    path = fill(template, o=owner, s=name)
                    check(caller, method, path, fill(body, t=tenant), allowed)
    for owner in TARGETS:
        for method, template, body in PERSON_ROUTES:
            for caller in CALLERS:
                allowed = acts_at_hub(caller, owner)
                if allowed and (method, template) in NOT_CALLED_WHEN_ALLOWED:
                    continue
                if template == "/users/{o}" and method == "PATCH" or method == "POST" and template == "/users/{o}":
                    allowed = caller == "admin"  # changing or creating accounts: platform admins only
                if template == "/users/{o}/admin-access":
                    allowed = False  # deprecated; JupyterHub.admin_access is off, so nobody
                check(caller, method, fill(template, o=owner), fill(body, now=now), allowed)
    for method, template, body in ADMIN_ROUTES:
        for caller in CALLERS:
            if caller == "admin":
                continue  # the platform admin may: creating groups, users and proxy syncs are tested elsewhere
            for group in TENANTS if "{g}" in template else ("",):
                check(caller, method, fill(template, g=group), body, False)
    print("\n" + "\n".join(table))
    assert not wrong, "\n".join(wrong)
    # the refusals changed nothing: every server runs, no server or person was added
    assert running(admin) == set(SERVERS)
    for owner in TARGETS:
        servers = admin.api("GET", f"/users/{owner}?include_stopped_servers=1").json()["servers"]
        # the default server is always listed; newsrv: PUT by the platform admin and the owner
        assert set(servers) == {s for o, s in SERVERS if o == owner} | {"", "newsrv"}
    assert admin.api("GET", "/users/mallory").status_code == 404
    assert sorted(admin.api("GET", "/groups/lab").json()["users"]) == ["alice", "bob", "carol", "kim"]
    assert sorted(admin.api("GET", "/groups/startup").json()["users"]) == ["carol", "dave", "erin"]


def test_what_people_see_at_the_hub(hub: Hub, people: dict[str, Client]) -> None:
    """``GET /users`` and ``GET /users/{name}``: platform admins and the owner see servers; a tenant
    admin sees the names of their tenants' people and nothing about any server (a person in two
    tenants included); anyone else sees nobody else."""
    start(people, set(SERVERS))
    wrong = []
    for caller in CALLERS:
        client = people[caller]
        for owner in TARGETS:
            r = client.api("GET", f"/users/{owner}")
            if not sees_name(caller, owner):
                if r.status_code not in DENIED:
                    wrong.append(f"{caller} GET /users/{owner}: {r.status_code} {r.text[:200]}")
                continue
            model = r.json()
            shows_servers = bool(model.get("servers")) or bool(model.get("server")) or "last_activity" in model
            if shows_servers != acts_at_hub(caller, owner):
                wrong.append(f"{caller} GET /users/{owner} shows servers: {shows_servers}: {model}")
        r = client.api("GET", "/users")
        listed = {m["name"]: m for m in r.json()} if r.status_code == 200 else {}
        for name, model in listed.items():
            if not sees_name(caller, name):
                wrong.append(f"{caller} GET /users lists {name}")
            if not acts_at_hub(caller, name) and (
                model.get("servers") or model.get("server") or "last_activity" in model
            ):
                wrong.append(f"{caller} GET /users shows {name}'s servers: {model}")
        for group in TENANTS:
            r = client.api("GET", f"/groups/{group}")
            may = caller == "admin" or group in ADMIN_OF.get(caller, set())
            if (r.status_code not in DENIED) != may:
                wrong.append(f"{caller} GET /groups/{group}: {r.status_code}")
    assert not wrong, "\n".join(wrong)


def test_start_for_someone_else(hub: Hub, people: dict[str, Client]) -> None:
    """Only platform admins and the owner start a person's server, and only in a tenant the person
    belongs to, whatever the request names; tenant admins start none, even in their own tenant
    (the reproduction: kim starting carol's server charged to startup was 201)."""
    admin = people["admin"]
    for server in running(admin):
        people[server[0]].stop_server(server[1])
    wrong = []
    for owner in TARGETS:
        for tenant in TENANTS:
            for caller in CALLERS:
                r = people[caller].api(
                    "POST", f"/users/{owner}/servers/x-{caller}", json={"tenant": tenant, "profile": "cpu"}
                )
                member = tenant in MEMBER_OF[owner]
                expected = (201, 202) if acts_at_hub(caller, owner) and member else (403, 404)
                if r.status_code not in expected:
                    wrong.append(f"{caller} starts {owner}/x-{caller} in {tenant}: {r.status_code} {r.text[:200]}")
                if r.status_code in (201, 202):
                    people[owner].wait_ready(f"x-{caller}")
                    people[owner].stop_server(f"x-{caller}")
    assert not wrong, "\n".join(wrong)
    assert running(admin) == set()


# -- the quotas service --------------------------------------------------------------------------


def test_quotas_service_shows_each_tenant_its_own_servers(hub: Hub, people: dict[str, Client]) -> None:
    """``GET api/tenants/{t}/servers``, ``GET|DELETE api/tenants/{t}/servers/{user}/{server}`` and
    ``GET api/tenants/{t}/queue``
    by every role, for every server in both tenants' URLs: the tenant is the hub's record of the
    server, so erin never reaches carol's `labsrv` (charged to lab), as `lab` or as `startup`."""
    admin = people["admin"]
    start(people, set(SERVERS))
    wrong = []
    for caller in CALLERS:
        for tenant in TENANTS:
            queue = quotas(people[caller], "GET", f"api/tenants/{tenant}/queue")  # the GPU queue: the same rule
            if queue.status_code != (200 if reads_tenant(caller, tenant) else 403):
                wrong.append(f"{caller} GET queue of {tenant}: {queue.status_code}")
            r = quotas(people[caller], "GET", f"api/tenants/{tenant}/servers")
            if not reads_tenant(caller, tenant):
                if r.status_code != 403:
                    wrong.append(f"{caller} GET servers of {tenant}: {r.status_code}")
                continue
            listed = {(s["user"], s["server"]) for s in r.json()["servers"]}
            visible = {k for k, t in SERVERS.items() if t == tenant and acts_in_service(caller, k[0], t)}
            if listed != visible:
                wrong.append(f"{caller} GET servers of {tenant}: {sorted(listed)}, expected {sorted(visible)}")
            for (owner, name), charged_to in SERVERS.items():
                allowed = tenant == charged_to and acts_in_service(caller, owner, charged_to)
                path = f"api/tenants/{tenant}/servers/{owner}/{name}"
                for method in ("GET", "DELETE"):
                    if allowed and method == "DELETE":
                        continue  # in test_quotas_service_stops_what_the_caller_may
                    r = quotas(people[caller], method, path)
                    expected = 200 if allowed else 404
                    if r.status_code != expected:
                        wrong.append(f"{caller} {method} {path}: {r.status_code}, expected {expected} {r.text[:200]}")
        for tenant in TENANTS:
            if not reads_tenant(caller, tenant):
                for method in ("GET", "DELETE"):
                    r = quotas(people[caller], method, f"api/tenants/{tenant}/servers/carol/labsrv")
                    if r.status_code != 403:
                        wrong.append(f"{caller} {method} carol/labsrv in {tenant}: {r.status_code}")
    assert not wrong, "\n".join(wrong)
    assert running(admin) == set(SERVERS)
    r = quotas(people["erin"], "DELETE", "api/tenants/startup/servers/carol/labsrv")
    assert "charged to tenant startup" in r.json()["message"], r.text


@pytest.mark.parametrize("who", ["platform admin", "tenant admin", "owner"])
def test_quotas_service_stops_what_the_caller_may(hub: Hub, people: dict[str, Client], who: str) -> None:
    """The allowed stops: each server by the platform admin, by the admin of the tenant it is
    charged to (kim stops carol's `labsrv`, erin her `upsrv`), or by its owner."""
    admin = people["admin"]
    start(people, set(SERVERS))
    for (owner, name), charged_to in SERVERS.items():
        caller = {"platform admin": "admin", "owner": owner}.get(who) or {"lab": "kim", "startup": "erin"}[charged_to]
        r = quotas(people[caller], "DELETE", f"api/tenants/{charged_to}/servers/{owner}/{name}")
        assert r.status_code in (202, 204), (caller, owner, name, r.text)
    wait_stopped(admin, set(SERVERS))
    for tenant in TENANTS:
        assert quotas(admin, "GET", f"api/tenants/{tenant}/servers").json()["servers"] == []


@pytest.mark.parametrize("who", ["admin", "owner"])
def test_hub_stops_for_platform_admins_and_owners(hub: Hub, people: dict[str, Client], who: str) -> None:
    admin = people["admin"]
    start(people, set(SERVERS))
    for owner, name in SERVERS:
        r = people[owner if who == "owner" else "admin"].api("DELETE", server_path(owner, name))
        assert r.status_code in (202, 204), r.text
    wait_stopped(admin, set(SERVERS))


def aidc_quota(hub: Hub, who: Client, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("AIDC_TOKEN", "JUPYTERHUB_API_TOKEN")}
    env.update(AIDC_HUB_URL=hub.url, AIDC_TOKEN=who.token)
    return subprocess.run(
        [sys.executable, "-m", "aidc.cli", "quota", *argv], env=env, capture_output=True, text=True, timeout=60
    )


def test_aidc_quota_servers_and_stop(hub: Hub, people: dict[str, Client]) -> None:
    """`aidc quota servers` and `aidc quota stop`, the tenant admin's way to stop a server now that
    the hub gives them no server scopes: the same confinement as the API."""
    admin, kim, erin = people["admin"], people["kim"], people["erin"]
    start(people, {("carol", "labsrv"), ("carol", "upsrv")})
    listed = aidc_quota(hub, erin, "servers", "--tenant", "startup")
    assert listed.returncode == 0, listed.stderr
    assert "upsrv" in listed.stdout and "labsrv" not in listed.stdout
    refused = aidc_quota(hub, erin, "stop", "--tenant", "startup", "carol/labsrv")
    assert refused.returncode == 1, refused
    assert "There is no server carol/labsrv charged to tenant startup" in refused.stderr
    assert aidc_quota(hub, erin, "stop", "--tenant", "lab", "carol/labsrv").returncode == 1
    assert running(admin) == {("carol", "labsrv"), ("carol", "upsrv")}
    # the quotas page: each admin's table of running servers has a Stop button on their tenant's only
    for who, tenant, mine, other in ((kim, "lab", "labsrv", "upsrv"), (erin, "startup", "upsrv", "labsrv")):
        page = requests.get(
            f"{hub.url}/services/quotas/?tenant={tenant}",
            headers={"Authorization": f"token {who.token}", "Accept": "text/html"},
            timeout=60,
        )
        assert page.status_code == 200, page.text[:300]
        assert f'data-api="/services/quotas/api/tenants/{tenant}/servers/"' in page.text
        assert f'data-user="carol" data-server="{mine}"' in page.text and "btn-outline-danger stop" in page.text
        assert f'data-server="{other}"' not in page.text
    stopped = aidc_quota(hub, kim, "stop", "--tenant", "lab", "carol/labsrv")
    assert stopped.returncode == 0, stopped.stderr
    assert "Stopped server carol/labsrv, charged to tenant lab." in stopped.stderr
    wait_stopped(admin, {("carol", "labsrv")})
    assert running(admin) == {("carol", "upsrv")}


def test_platform_admin_removes_people_last(hub: Hub, people: dict[str, Client]) -> None:
    """The one cell left: platform admins delete people (JupyterHub 6 answers 500 while a named
    server of the person runs, so they are stopped first)."""
    admin = people["admin"]
    for owner, name in running(admin):
        people[owner].stop_server(name)
    for owner in TARGETS:
        assert admin.api("DELETE", f"/users/{owner}").status_code == 204
        assert admin.api("GET", f"/users/{owner}").status_code == 404

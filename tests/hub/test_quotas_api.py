"""The quotas service (REST API, metrics) behind a real hub and proxy, as its callers use it.

Tenants (tests/hub/tenants.yaml): `lab` (alice, bob, carol; admin kim; 4 H100, 2 servers per
person, 32 CPUs, 64Gi) and `startup` (dave; admin erin; 1 H100, 2 A100). `admin` is a platform
admin; `zed` belongs to no tenant. Every refusal is checked to have changed nothing, by reading
the limits back as the platform admin.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from quotas.service.app import routes
from quotas.service.openapi import openapi_path
from tests.bed.hub import PASSWORDS, Client, Hub, running_hub, stop_all_servers

# the limits every test starts from (set by the tenant admins in the `clients` fixture)
BOB = {"gpus": {"H100": 2}, "servers": 1, "cpu": "8", "memory": "16Gi", "gpu_hours": "100"}
DAVE = {"gpus": {"A100": 1}, "servers": 1}
STARTED: dict[str, float] = {}


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    t0 = time.monotonic()
    with running_hub(tmp_path_factory.mktemp("quotas-hub"), traits={"Spawner.poll_interval": 2}) as h:
        STARTED["seconds"] = time.monotonic() - t0
        print(f"\nhub with the quotas service started in {STARTED['seconds']:.1f}s")
        yield h


@pytest.fixture(scope="module")
def clients(hub: Hub) -> dict[str, Client]:
    people = {name: hub.login(name, password) for name, password in PASSWORDS.items()}
    assert call(people["kim"], "PUT", "api/tenants/lab/limits/users/bob", json=BOB).status_code == 200
    assert call(people["erin"], "PUT", "api/tenants/startup/limits/users/dave", json=DAVE).status_code == 200
    return people


@pytest.fixture(autouse=True)
def no_servers_left(clients: dict[str, Client]) -> Iterator[None]:
    yield
    stop_all_servers(clients.values())


def url(hub: Hub, path: str) -> str:
    return f"{hub.url}/services/quotas/{path}"


def call(client: Client | None, method: str, path: str, hub: Hub | None = None, **kwargs: Any) -> requests.Response:
    """``path`` of the quotas service with ``client``'s API token (None: no credentials)."""
    headers = dict(kwargs.pop("headers", {}))
    if client is not None:
        headers["Authorization"] = f"token {client.token}"
        hub = client.hub
    assert hub is not None
    return requests.request(method, url(hub, path), headers=headers, timeout=60, allow_redirects=False, **kwargs)


def all_limits(admin: Client) -> dict[str, list[dict[str, Any]]]:
    """Every limit of every tenant, read by the platform admin."""
    out = {}
    for tenant in ("lab", "startup"):
        r = call(admin, "GET", f"api/tenants/{tenant}/limits")
        assert r.status_code == 200, r.text
        out[tenant] = r.json()["limits"]
    return out


def error(r: requests.Response) -> dict[str, Any]:
    body: dict[str, Any] = r.json()
    assert set(body) == {"status", "message", "problems"}, body
    assert body["status"] == r.status_code
    return body


def metrics(admin: Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = call(admin, "GET", "metrics")
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


# -- the document --------------------------------------------------------------------------------


def test_openapi_describes_every_route_and_only_those(hub: Hub) -> None:
    r = call(None, "GET", "api/openapi.json", hub=hub)
    assert r.status_code == 200
    doc = r.json()
    assert doc["openapi"].startswith("3.1")
    assert doc["servers"] == [{"url": "/services/quotas", "description": doc["servers"][0]["description"]}]
    api_routes = {
        openapi_path(path): handler for path, handler, *_ in routes() if path.startswith("api/") or path == "metrics"
    }
    assert set(doc["paths"]) == set(api_routes)
    for path, handler in api_routes.items():
        implemented = {m for m in ("get", "put", "post", "patch", "delete") if m in vars(handler)}
        described = set(doc["paths"][path]) - {"parameters"}
        assert described == implemented, path
        for method in described:
            operation = doc["paths"][path][method]
            assert operation["summary"] and operation["responses"], (path, method)
    # every schema referenced is defined
    text = r.text
    for name in doc["components"]["schemas"]:
        assert f"#/components/schemas/{name}" in text or name == "Error"
    for ref in {part.split('"')[0] for part in text.split("#/components/schemas/")[1:]}:
        assert ref in doc["components"]["schemas"], ref


# -- who may do what -----------------------------------------------------------------------------


def test_platform_admin_sees_and_sets_everything(clients: dict[str, Client]) -> None:
    admin = clients["admin"]
    me = call(admin, "GET", "api/me").json()
    assert me["admin"] is True
    assert [t["id"] for t in me["tenants"]] == ["lab", "startup"]
    assert {t["role"] for t in me["tenants"]} == {"platform-admin"}
    tenants = call(admin, "GET", "api/tenants").json()["tenants"]
    assert [t["id"] for t in tenants] == ["lab", "startup"]
    startup = call(admin, "GET", "api/tenants/startup").json()
    assert startup["ceiling"]["gpus"] == {"H100": 1, "A100": 2}
    assert startup["in_use"]["gpus"] == {"H100": 0, "A100": 0}
    assert [p["id"] for p in startup["profiles"]] == ["cpu", "h100-x1", "a100-x1"]
    for tenant in ("lab", "startup"):
        for what in ("limits", "usage", "servers"):
            assert call(admin, "GET", f"api/tenants/{tenant}/{what}").status_code == 200
    r = call(admin, "PUT", "api/tenants/startup/limits/groups/interns", json={"servers": 1})
    assert r.status_code == 200 and r.json()["kind"] == "group"
    assert call(admin, "DELETE", "api/tenants/startup/limits/groups/interns").status_code == 204
    assert call(admin, "GET", "api/tenants/startup/limits/groups/interns").status_code == 404
    nope = call(admin, "GET", "api/tenants/nope")
    assert nope.status_code == 404 and "There is no tenant 'nope' (tenants: lab, startup)" in error(nope)["message"]


def test_tenant_admin_manages_their_tenant(clients: dict[str, Client]) -> None:
    kim = clients["kim"]
    me = call(kim, "GET", "api/me").json()
    assert (me["name"], me["admin"], me["tenants_admin"]) == ("kim", False, ["lab"])
    assert [(t["id"], t["role"]) for t in me["tenants"]] == [("lab", "admin")]
    assert me["tenants"][0]["ceiling"]["gpus"] == {"H100": 4}
    assert [t["id"] for t in call(kim, "GET", "api/tenants").json()["tenants"]] == ["lab"]
    limits = call(kim, "GET", "api/tenants/lab/limits").json()
    assert limits == {
        "tenant": "lab",
        "limits": [{"tenant": "lab", "kind": "user", "name": "bob", **BOB}],
    }
    r = call(kim, "PUT", "api/tenants/lab/limits/users/carol", json={"gpus": {"H100": 1}, "memory": "1.5Gi"})
    assert r.status_code == 200, r.text
    stored = {"tenant": "lab", "kind": "user", "name": "carol", "gpus": {"H100": 1}, "servers": None}
    assert r.json() == {**stored, "cpu": None, "memory": "1536Mi", "gpu_hours": None}
    # what GET returns can be PUT back unchanged (the CLI merges this way)
    again = call(kim, "PUT", "api/tenants/lab/limits/users/carol", json=r.json())
    assert again.status_code == 200 and again.json() == r.json()
    assert call(kim, "GET", "api/tenants/lab/limits/users/carol").json() == r.json()
    assert call(kim, "DELETE", "api/tenants/lab/limits/users/carol").status_code == 204
    gone = call(kim, "DELETE", "api/tenants/lab/limits/users/carol")
    assert gone.status_code == 404 and "nothing was removed" in error(gone)["message"]
    for what in ("usage", "servers"):
        assert call(kim, "GET", f"api/tenants/lab/{what}").status_code == 200


def test_member_sees_only_their_own(clients: dict[str, Client]) -> None:
    bob, alice = clients["bob"], clients["alice"]
    me = call(bob, "GET", "api/me").json()
    assert [(t["id"], t["role"]) for t in me["tenants"]] == [("lab", "member")]
    assert me["tenants"][0]["limits"] == [{"tenant": "lab", "kind": "user", "name": "bob", **BOB}]
    assert me["tenants"][0]["usage"]["period"] == datetime.now(UTC).strftime("%B %Y")
    assert call(bob, "GET", "api/tenants/lab").json()["admins"] == ["kim"]
    assert call(bob, "GET", "api/tenants/lab/limits").json()["limits"] == me["tenants"][0]["limits"]
    assert call(alice, "GET", "api/tenants/lab/limits").json()["limits"] == []
    assert call(bob, "GET", "api/tenants/lab/limits/users/bob").status_code == 200
    mine = call(alice, "GET", "api/tenants/lab/limits/users/alice")
    assert mine.status_code == 404 and "only the tenant's ceiling applies" in error(mine)["message"]
    assert call(bob, "GET", "api/tenants/lab/usage").json()["by"] == "user"
    zed = call(clients["zed"], "GET", "api/me").json()
    assert (zed["name"], zed["tenants"]) == ("zed", [])
    assert call(clients["zed"], "GET", "api/tenants").json() == {"tenants": []}


KIM_STARTUP = "You (kim) are not a member or an admin of tenant 'startup'"
ALICE_ADMIN = "Only admins of tenant lab (kim) and platform admins can"
LOG_IN = "You are not logged in"


@pytest.mark.parametrize(
    ("who", "method", "path", "body", "status", "words"),
    [
        ("kim", "GET", "api/tenants/startup", None, 403, KIM_STARTUP),
        ("kim", "GET", "api/tenants/startup/limits", None, 403, KIM_STARTUP),
        ("kim", "GET", "api/tenants/startup/limits/users/dave", None, 403, KIM_STARTUP),
        ("kim", "PUT", "api/tenants/startup/limits/users/dave", {"gpus": {"A100": 2}}, 403, KIM_STARTUP),
        ("kim", "DELETE", "api/tenants/startup/limits/users/dave", None, 403, KIM_STARTUP),
        ("kim", "GET", "api/tenants/startup/usage", None, 403, KIM_STARTUP),
        ("kim", "GET", "api/tenants/startup/servers", None, 403, KIM_STARTUP),
        # a tenant id that does not exist looks the same as one that is not yours
        ("kim", "GET", "api/tenants/nope/limits", None, 403, "You (kim) are not a member or an admin of tenant 'nope'"),
        # the tenant is the URL's: a body cannot move a limit to another tenant
        (
            "kim",
            "PUT",
            "api/tenants/lab/limits/users/dave",
            {"tenant": "startup", "gpus": {"H100": 1}},
            422,
            "the body says tenant 'startup' but the URL sets the limit of user 'dave' in tenant 'lab'",
        ),
        ("alice", "PUT", "api/tenants/lab/limits/users/alice", {"gpus": {"H100": 4}}, 403, f"{ALICE_ADMIN} set limits"),
        ("alice", "PUT", "api/tenants/lab/limits/users/bob", {"servers": 2}, 403, f"{ALICE_ADMIN} set limits"),
        ("alice", "DELETE", "api/tenants/lab/limits/users/bob", None, 403, f"{ALICE_ADMIN} remove limits"),
        ("alice", "GET", "api/tenants/lab/limits/users/bob", None, 403, "not those of user 'bob'"),
        ("alice", "GET", "api/tenants/lab/usage?by=tenant", None, 403, "Group and tenant totals of tenant lab"),
        ("alice", "GET", "api/tenants/lab/usage?user=bob", None, 403, "not bob's"),
        ("alice", "GET", "api/tenants/startup", None, 403, "You (alice) are not a member or an admin"),
        ("alice", "GET", "metrics", None, 403, "Metrics are for platform admins; you (alice) are not one"),
        ("kim", "GET", "metrics", None, 403, "Metrics are for platform admins"),
        (
            "dave",
            "PUT",
            "api/tenants/startup/limits/users/dave",
            {"gpus": {"A100": 2}},
            403,
            "Only admins of tenant startup (erin)",
        ),
        ("zed", "GET", "api/tenants/lab", None, 403, "You (zed) are not a member or an admin of tenant 'lab'"),
        ("zed", "GET", "api/tenants/lab/limits", None, 403, "You (zed)"),
        ("zed", "PUT", "api/tenants/lab/limits/users/zed", {"gpus": {"H100": 4}}, 403, "You (zed)"),
        ("zed", "DELETE", "api/tenants/lab/limits/users/bob", None, 403, "You (zed)"),
        ("zed", "GET", "api/tenants/lab/usage", None, 403, "You (zed)"),
        ("zed", "GET", "api/tenants/lab/servers", None, 403, "You (zed)"),
        (None, "GET", "api/me", None, 403, LOG_IN),
        (None, "GET", "api/tenants/lab/limits", None, 403, LOG_IN),
        (None, "PUT", "api/tenants/lab/limits/users/bob", {"servers": 2}, 403, LOG_IN),
        (None, "DELETE", "api/tenants/lab/limits/users/bob", None, 403, LOG_IN),
        (None, "GET", "metrics", None, 403, LOG_IN),
        ("forged-token", "PUT", "api/tenants/lab/limits/users/bob", {"servers": 2}, 403, "does not accept the token"),
    ],
)
def test_refusals_change_nothing(
    hub: Hub,
    clients: dict[str, Client],
    who: str | None,
    method: str,
    path: str,
    body: Any,
    status: int,
    words: str,
) -> None:
    before = all_limits(clients["admin"])
    if who == "forged-token":
        r = call(None, method, path, hub=hub, json=body, headers={"Authorization": "token 0123456789abcdef"})
    else:
        r = call(clients[who] if who else None, method, path, hub=hub, json=body)
    assert r.status_code == status, r.text
    assert words in error(r)["message"] + " ".join(error(r)["problems"])
    assert all_limits(clients["admin"]) == before


# -- bad input -----------------------------------------------------------------------------------

LIMIT = "api/tenants/lab/limits/users/bob"


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "words"),
    [
        ("PUT", LIMIT, b'{"gpus": {"H100": 1}', 400, "The body is not valid JSON: Expecting ',' delimiter"),
        ("PUT", LIMIT, b"", 400, "The request has no body"),
        ("PUT", LIMIT, b"\xff\xfe", 400, "not UTF-8"),
        ("PUT", LIMIT, b"[1, 2]", 422, "the limit must be a JSON object with fields gpus, servers"),
        (
            "PUT",
            LIMIT,
            b'{"gpu": {"H100": 1}}',
            422,
            "unknown field 'gpu' (fields: gpus, servers, cpu, memory, gpu_hours)",
        ),
        ("PUT", LIMIT, b'{"gpus": {"H100": -1}}', 422, "gpus.H100 must be a whole number, 0 or more, not -1"),
        ("PUT", LIMIT, b'{"servers": -2}', 422, "servers must be a whole number, 0 or more, not -2"),
        ("PUT", LIMIT, b'{"cpu": "-4"}', 422, "cpu must be 0 or more"),
        ("PUT", LIMIT, b'{"gpus": {"H100": 5}}', 422, "gpus.H100 5 exceeds tenant lab's ceiling of 4 H100 GPUs"),
        ("PUT", LIMIT, b'{"servers": 3}', 422, "servers 3 exceeds tenant lab's ceiling of 2 servers per person"),
        ("PUT", LIMIT, b'{"cpu": "64"}', 422, "cpu 64 CPUs exceeds tenant lab's ceiling of 32 CPUs"),
        ("PUT", LIMIT, b'{"memory": "128Gi"}', 422, "exceeds tenant lab's ceiling of 64 GiB"),
        ("PUT", LIMIT, b'{"gpu_hours": 5000}', 422, "gpu_hours 5000 exceeds tenant lab's ceiling of 1000"),
        ("PUT", LIMIT, b'{"memory": "8Gb"}', 422, "'8Gb' has unit 'Gb'"),
        ("PUT", LIMIT, b'{"gpus": {"A100": 1}}', 422, "gpus.A100: tenant lab has no A100 GPUs (it has: H100 (4))"),
        ("PUT", LIMIT, b'{"gpus": {"B200": 1}}', 422, "gpus.B200: tenant lab has no B200 GPUs"),
        ("PUT", LIMIT, b'{"gpus": 2}', 422, 'gpus must be an object of GPU type to count, e.g. {"H100": 2}'),
        ("PUT", LIMIT, b'{"kind": "group", "servers": 1}', 422, "the body says kind 'group'"),
        ("PUT", LIMIT, b'{"name": "carol", "servers": 1}', 422, "the body says name 'carol'"),
        ("PUT", "api/tenants/lab/limits/people/bob", b'{"servers": 1}', 400, "not 'people'"),
        ("GET", "api/tenants/lab/limits/people/bob", None, 400, "Limits are set for 'users' or 'groups'"),
        ("DELETE", "api/tenants/lab/limits/user/bob", None, 400, "not 'user'"),
        ("PUT", "api/tenants/lab/limits/users/b%20b", b'{"servers": 1}', 422, "user name 'b b' is not a valid name"),
        (
            "GET",
            "api/tenants/lab/usage?from=2026-13-01",
            None,
            400,
            "from must be a date written YYYY-MM-DD (UTC), not '2026-13-01'",
        ),
        ("GET", "api/tenants/lab/usage?to=yesterday", None, 400, "to must be a date written YYYY-MM-DD"),
        (
            "GET",
            "api/tenants/lab/usage?from=2026-02-01&to=2026-01-01",
            None,
            400,
            "from (2026-02-01) must be before to (2026-01-01)",
        ),
        ("GET", "api/tenants/lab/usage?from=2026-01-01&to=2026-01-01", None, 400, "must be before to"),
        (
            "GET",
            "api/tenants/lab/usage?from=2025-01-01&to=2026-01-03",
            None,
            400,
            "is 367 days; a report covers at most 366 days",
        ),
        ("GET", "api/tenants/lab/usage?by=team", None, 400, "by must be one of user, group, tenant, not 'team'"),
        ("GET", "api/tenants/lab/usage?daily=maybe", None, 400, "daily must be 1 or 0"),
        ("GET", "api/tenants/lab/usage?format=xml", None, 400, "format must be json or csv"),
        ("GET", "api/tenants/lab/usage?by=group&user=bob", None, 400, "user=bob picks one person's row"),
        ("GET", "api/tenants/lab/usage?form=2026-01-01", None, 400, "unknown parameter form"),
        ("GET", "api/tenants/lab/limit", None, 404, "There is no GET /services/quotas/api/tenants/lab/limit"),
    ],
)
def test_bad_input_is_refused_with_the_reason_and_changes_nothing(
    clients: dict[str, Client], method: str, path: str, body: bytes | None, status: int, words: str
) -> None:
    kim = clients["kim"]
    before = all_limits(clients["admin"])
    r = call(kim, method, path, data=body, headers={"Content-Type": "application/json"})
    assert r.status_code == status, r.text
    found = error(r)
    assert words in found["message"] + " | " + " | ".join(found["problems"])
    if status == 422:
        assert found["problems"], "422 lists every problem"
    assert all_limits(clients["admin"]) == before


def test_every_problem_is_reported_at_once(clients: dict[str, Client]) -> None:
    r = call(clients["kim"], "PUT", LIMIT, json={"gpus": {"H100": 9, "A100": 1}, "servers": -1, "colour": "red"})
    assert r.status_code == 422
    body = error(r)
    assert body["message"] == "The limit of user bob in tenant lab was not changed: 4 problems."
    assert len(body["problems"]) == 4


# -- limits reach admission; metrics, servers and usage follow -----------------------------------


def test_a_limit_set_through_the_api_is_enforced_at_the_next_spawn(clients: dict[str, Client]) -> None:
    admin, kim, alice, bob = clients["admin"], clients["kim"], clients["alice"], clients["bob"]
    refusals = ("aidc_admission_refusals_total", (("reason", "user_limit"), ("tenant", "lab")))
    before = metrics(admin).get(refusals, 0.0)

    r = call(kim, "PUT", "api/tenants/lab/limits/users/alice", json={"gpus": {"H100": 1}})
    assert r.status_code == 200, r.text
    try:
        refused = alice.spawn(tenant="lab", profile="h100-x2")
        assert refused.status_code == 403, refused.text
        message = refused.json()["message"]
        assert "You asked for 2 H100 GPUs (profile h100-x2)." in message
        assert "Tenant lab's admins limit you (alice) to 1 H100 GPU; you use 0." in message
        assert alice.api("GET", "/users/alice").json()["servers"] == {}
        seen = metrics(admin)
        assert seen[refusals] == before + 1

        assert alice.spawn(tenant="lab", profile="h100-x1").status_code in (201, 202)
        seen = metrics(admin)
        assert seen[("aidc_tenant_gpus_in_use", (("gpu_type", "H100"), ("tenant", "lab")))] == 1
        assert seen[("aidc_tenant_gpus_quota", (("gpu_type", "H100"), ("tenant", "lab")))] == 4
        assert seen[("aidc_tenant_servers", (("tenant", "lab"),))] == 1
        assert seen[("aidc_tenant_servers_quota", (("tenant", "lab"),))] == 6
        assert seen[("aidc_tenant_gpu_hours_budget", (("tenant", "lab"),))] == 1000
        assert ("aidc_tenant_servers_quota", (("tenant", "startup"),)) in seen
        assert ("aidc_tenant_gpu_hours_budget", (("tenant", "startup"),)) not in seen

        servers = call(kim, "GET", "api/tenants/lab/servers").json()["servers"]
        assert [(s["user"], s["server"], s["profile"], s["gpus"]) for s in servers] == [
            ("alice", "", "h100-x1", {"H100": 1})
        ]
        assert servers[0]["started"].endswith("Z") and float(servers[0]["gpu_hours"]) >= 0
        theirs = call(alice, "GET", "api/tenants/lab/servers").json()["servers"]
        assert [s["run"] for s in theirs] == [servers[0]["run"]]
        assert call(bob, "GET", "api/tenants/lab/servers").json()["servers"] == []
        me = call(alice, "GET", "api/me").json()["tenants"][0]
        assert [s["profile"] for s in me["servers"]] == ["h100-x1"]
        assert me["limits"][0]["gpus"] == {"H100": 1}
        assert me["in_use"]["gpus"] == {"H100": 1} and me["in_use"]["servers"] == 1

        second = alice.spawn("more", tenant="lab", profile="h100-x1")
        assert second.status_code == 403
        assert "limit you (alice) to 1 H100 GPU; you use 1 (alice: 1)" in second.json()["message"]
        alice.wait_ready()
    finally:
        alice.stop_server()
        assert call(kim, "DELETE", "api/tenants/lab/limits/users/alice").status_code == 204
    assert metrics(admin)[("aidc_tenant_gpus_in_use", (("gpu_type", "H100"), ("tenant", "lab")))] == 0

    today = datetime.now(UTC).date()
    month = today.replace(day=1)
    following = date(month.year + (month.month == 12), month.month % 12 + 1, 1)
    r = call(kim, "GET", "api/tenants/lab/usage?format=csv&daily=1")
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("text/csv")
    assert r.headers["Content-Disposition"] == f"attachment; filename=usage-lab-{month}-{following}.csv"
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert list(rows[0]) == ["day", "user", "gpu_hours", "cpu_hours", "runs", "gpu_used_hours"]
    alices = [row for row in rows if row["user"] == "alice" and row["day"] == today.isoformat()]
    assert len(alices) == 1 and int(alices[0]["runs"]) >= 1 and float(alices[0]["gpu_hours"]) > 0
    same = call(kim, "GET", "api/tenants/lab/usage?daily=1", headers={"Accept": "text/csv"})
    assert same.headers["Content-Type"].startswith("text/csv")
    report = call(alice, "GET", "api/tenants/lab/usage").json()
    assert [row["subject"] for row in report["rows"]] == ["alice"]
    assert report["total"]["runs"] >= 1 and report["rows"][0]["day"] is None
    assert call(bob, "GET", "api/tenants/lab/usage").json()["rows"] == []
    by_tenant = call(kim, "GET", "api/tenants/lab/usage?by=tenant").json()["rows"]
    assert [row["subject"] for row in by_tenant] == ["lab"]


# -- browsers ------------------------------------------------------------------------------------


def test_browser_login_reaches_the_api_through_oauth_and_writes_need_xsrf(hub: Hub, clients: dict[str, Client]) -> None:
    kim = hub.login("kim", PASSWORDS["kim"])  # a browser session: the hub's login cookie only
    session = kim.session
    r = session.get(url(hub, "api/me"), headers={"Accept": "text/html"}, timeout=60)
    assert r.status_code == 200, r.text
    hops = [h.url for h in r.history]
    assert "/hub/api/oauth2/authorize" in hops[1] and "/services/quotas/oauth_callback" in hops[2]
    me = r.json()  # the hub's answer for the OAuth cookie carries groups and admin, as for a token
    assert (me["name"], me["admin"], me["groups"], me["tenants_admin"]) == ("kim", False, ["lab"], ["lab"])
    admin = hub.login("admin", PASSWORDS["admin"]).session.get(url(hub, "api/me"), headers={"Accept": "text/html"})
    assert admin.status_code == 200 and admin.json()["admin"] is True

    # writes from the browser must echo the service's _xsrf cookie
    no_xsrf = session.put(url(hub, "api/tenants/lab/limits/users/carol"), json={"servers": 1}, timeout=60)
    assert no_xsrf.status_code == 403
    assert "must send the value of the _xsrf cookie in the X-XSRFToken header" in error(no_xsrf)["message"]
    assert call(clients["admin"], "GET", "api/tenants/lab/limits/users/carol").status_code == 404
    xsrf = next(c.value for c in session.cookies if c.name == "_xsrf" and c.path == "/services/quotas/")
    ok = session.put(
        url(hub, "api/tenants/lab/limits/users/carol"), json={"servers": 1}, headers={"X-XSRFToken": xsrf}, timeout=60
    )
    assert ok.status_code == 200, ok.text
    assert call(clients["admin"], "GET", "api/tenants/lab/limits/users/carol").json()["servers"] == 1
    assert (
        session.delete(url(hub, "api/tenants/lab/limits/users/carol"), headers={"X-XSRFToken": xsrf}).status_code == 204
    )

    # a script without credentials gets a 403 that says how to authenticate, not a login page
    anonymous = requests.get(url(hub, "api/me"), allow_redirects=False, timeout=60)
    assert anonymous.status_code == 403 and LOG_IN in error(anonymous)["message"]


def test_hub_pages_link_to_the_quotas_page(hub: Hub, clients: dict[str, Client]) -> None:
    home = clients["alice"].session.get(f"{hub.url}/hub/home", timeout=60)
    assert 'href="/services/quotas/">Quotas</a>' in home.text

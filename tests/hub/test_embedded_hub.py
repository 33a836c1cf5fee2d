"""The `hub` tier: a real JupyterHub (production config) with configurable-http-proxy,
real workspaces as local processes, simulated GPUs (H100:4, A100:2).

Tenants (tests/hub/tenants.yaml): `lab` (alice, bob, carol; admin kim; 4 H100) and
`startup` (dave; admin erin; 1 H100, 2 A100). `zed` has an account but no tenant.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.bed.hub import PASSWORDS, Client, Hub, LoginFailed, running_hub, stop_all_servers

PRINT_ENV = (
    "import os\n"
    "for k in ('CUDA_VISIBLE_DEVICES', 'NVIDIA_VISIBLE_DEVICES', 'AIDC_TENANT', 'AIDC_PROFILE'):\n"
    "    print(f'{k}={os.environ.get(k)}')\n"
)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    traits = {"Spawner.poll_interval": 2, "Spawner.consecutive_failure_limit": 2}
    with running_hub(tmp_path_factory.mktemp("hub"), traits=traits) as h:
        yield h


@pytest.fixture(scope="module")
def clients(hub: Hub) -> dict[str, Client]:
    return {name: hub.login(name, password) for name, password in PASSWORDS.items()}


@pytest.fixture(autouse=True)
def no_servers_left(clients: dict[str, Client]) -> Iterator[None]:
    """Each test starts and ends with no workspace running."""
    yield
    stop_all_servers(clients.values())


def gpu_env(client: Client, server: str = "") -> dict[str, str]:
    srv = client.wait_ready(server)
    out = client.run_in_kernel(srv["url"], PRINT_ENV)
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def indices(env: dict[str, str]) -> set[str]:
    return set(env["CUDA_VISIBLE_DEVICES"].split(",")) - {""}


def test_login_form_refuses_wrong_and_unknown_accounts(hub: Hub) -> None:
    with pytest.raises(LoginFailed):
        hub.login("alice", "not-her-password")
    with pytest.raises(LoginFailed):
        hub.login("mallory", "whatever-password")


def test_gpu_profiles_get_exclusive_gpus_and_quota_refusal_says_why(clients: dict[str, Client]) -> None:
    alice, bob, carol = clients["alice"], clients["bob"], clients["carol"]
    assert alice.spawn(tenant="lab", profile="h100-x2").status_code in (201, 202)
    assert bob.spawn(tenant="lab", profile="h100-x2").status_code in (201, 202)
    env_a, env_b = gpu_env(alice), gpu_env(bob)
    assert len(indices(env_a)) == 2 and len(indices(env_b)) == 2
    assert indices(env_a).isdisjoint(indices(env_b))
    assert env_a["NVIDIA_VISIBLE_DEVICES"] == env_a["CUDA_VISIBLE_DEVICES"]
    assert (env_a["AIDC_TENANT"], env_a["AIDC_PROFILE"]) == ("lab", "h100-x2")

    refused = carol.spawn(tenant="lab", profile="h100-x1")
    assert refused.status_code == 403
    message = refused.json()["message"]
    assert "You asked for 1 H100 GPU (profile h100-x1)" in message
    assert "tenant lab uses 4 of 4 H100 GPUs (alice: 2, bob: 2)" in message
    assert "ask a tenant admin (kim)" in message
    assert carol.api("GET", "/users/carol").json()["servers"] == {}

    # a CPU-only profile is still admitted: it holds no GPU
    assert carol.spawn(tenant="lab", profile="cpu").status_code in (201, 202)
    assert indices(gpu_env(carol)) == set()

    # stopping gives the GPUs back
    alice.stop_server()
    assert carol.spawn("gpu", tenant="lab", profile="h100-x1").status_code in (201, 202)
    assert indices(gpu_env(carol, "gpu")) <= indices(env_a)


@pytest.mark.parametrize(
    ("user", "options", "status", "words"),
    [
        ("alice", {"tenant": "lab", "profile": "a100-x1"}, 403, "Profile 'a100-x1' is not available to tenant lab"),
        ("alice", {"tenant": "lab", "profile": "h100-x8"}, 400, "Profile 'h100-x8' does not exist for tenant lab"),
        ("alice", {"tenant": "lab", "profile": "h100-x1", "gpus": 64}, 400, "Unknown server option: gpus"),
        ("alice", {"tenant": "lab", "profile": "cpu", "image": "evil/miner", "cpu_limit": 64}, 400, "cpu_limit, image"),
        ("alice", {"tenant": "startup", "profile": "h100-x1"}, 403, "not a member of tenant 'startup'"),
        ("alice", {"tenant": "lab", "profile": ["h100-x1"]}, 400, "must be a string"),
        ("zed", {}, 403, "not a member of any tenant"),
    ],
)
def test_forged_user_options_are_refused_and_start_nothing(
    clients: dict[str, Client], user: str, options: dict, status: int, words: str
) -> None:
    client = clients[user]
    r = client.spawn(**options)
    assert r.status_code == status, r.text
    assert words in r.json()["message"]
    assert client.api("GET", f"/users/{user}").json()["servers"] == {}


def test_forged_spawn_form_is_refused_on_the_page(hub: Hub, clients: dict[str, Client]) -> None:
    alice = clients["alice"]
    session = alice.session
    page = session.get(f"{hub.url}/hub/spawn/alice")
    assert 'value="lab/h100-x2"' in page.text and 'value="startup/' not in page.text
    xsrf = [c.value for c in session.cookies if c.name == "_xsrf"][-1]
    r = session.post(f"{hub.url}/hub/spawn/alice", data={"choice": "startup/h100-x1", "_xsrf": xsrf})
    assert "not a member of tenant &#39;startup&#39;" in r.text or "not a member of tenant 'startup'" in r.text
    assert alice.api("GET", "/users/alice").json()["servers"] == {}


def test_tenant_admin_sees_and_stops_only_their_tenant(hub: Hub, clients: dict[str, Client]) -> None:
    bob, dave, kim = clients["bob"], clients["dave"], clients["kim"]
    assert bob.spawn(tenant="lab", profile="cpu").status_code in (201, 202)
    assert dave.spawn(tenant="startup", profile="cpu").status_code in (201, 202)
    bob.wait_ready()
    dave.wait_ready()

    listed = {u["name"] for u in kim.api("GET", "/users").json()}
    assert {"alice", "bob", "carol"} <= listed
    assert not listed & {"dave", "erin", "zed", "admin"}
    assert kim.api("GET", "/users/dave").status_code in (403, 404)
    assert kim.api("DELETE", "/users/dave/server").status_code in (403, 404)
    assert dave.api("GET", "/users/dave").json()["servers"][""]["ready"]

    # a tenant admin may stop a member's server, but not open it; at the hub they act on no server
    # (its group filters are per person, not per tenant): they stop it through the quotas service
    assert (
        requests.get(
            f"{hub.url}/user/bob/api/status", headers={"Authorization": f"token {kim.token}"}, timeout=30
        ).status_code
        == 403
    )
    assert kim.api("DELETE", "/users/bob/server").status_code in (403, 404)
    quotas = f"{hub.url}/services/quotas/api/tenants"
    as_kim = {"Authorization": f"token {kim.token}"}
    assert requests.delete(f"{quotas}/startup/servers/dave", headers=as_kim, timeout=60).status_code == 403
    assert requests.delete(f"{quotas}/lab/servers/bob", headers=as_kim, timeout=60).status_code in (202, 204)
    deadline = time.monotonic() + 60
    while bob.api("GET", "/users/bob").json()["servers"] and time.monotonic() < deadline:
        time.sleep(0.5)
    assert bob.api("GET", "/users/bob").json()["servers"] == {}


def test_refusals_do_not_count_as_failures_that_stop_the_hub(hub: Hub, clients: dict[str, Client]) -> None:
    """The hub exits after 2 failed spawns in a row here; refusals are answers, not failures."""
    alice, carol = clients["alice"], clients["carol"]
    assert alice.spawn(tenant="lab", profile="h100-x2").status_code in (201, 202)
    assert alice.spawn("b", tenant="lab", profile="h100-x2").status_code in (201, 202)
    for _ in range(4):
        refused = carol.spawn(tenant="lab", profile="h100-x1")
        assert refused.status_code == 403, refused.text
    assert carol.spawn(tenant="lab", profile="rogue").status_code == 400  # no such profile
    time.sleep(1)
    assert hub.proc is not None and hub.proc.poll() is None, "the hub exited on refusals"
    assert requests.get(f"{hub.url}/hub/api", timeout=10).status_code == 200


def test_crashed_workspace_gives_its_gpus_back(clients: dict[str, Client]) -> None:
    alice, bob, carol, admin = clients["alice"], clients["bob"], clients["carol"], clients["admin"]
    assert alice.spawn(tenant="lab", profile="h100-x2").status_code in (201, 202)
    assert bob.spawn(tenant="lab", profile="h100-x2").status_code in (201, 202)
    alice.wait_ready()
    bob.wait_ready()
    assert carol.spawn(tenant="lab", profile="h100-x1").status_code == 403

    state = admin.api("GET", "/users/alice").json()["servers"][""]["state"]
    assert len(state["aidc"]["gpus"]) == 2
    os.kill(state["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 30
    while alice.api("GET", "/users/alice").json()["servers"] and time.monotonic() < deadline:
        time.sleep(0.5)
    assert alice.api("GET", "/users/alice").json()["servers"] == {}, "the hub did not notice the crash"
    assert carol.spawn(tenant="lab", profile="h100-x2").status_code in (201, 202)
    assert indices(gpu_env(carol)) == set(state["aidc"]["gpus"])


def test_sigkilled_hub_restarts_with_servers_routes_and_gpus_intact(hub: Hub, clients: dict[str, Client]) -> None:
    alice, bob, carol, dave = clients["alice"], clients["bob"], clients["carol"], clients["dave"]
    assert alice.spawn(tenant="lab", profile="h100-x2").status_code in (201, 202)
    assert bob.spawn(tenant="lab", profile="h100-x1").status_code in (201, 202)
    before_a, before_b = indices(gpu_env(alice)), indices(gpu_env(bob))

    hub.kill()
    hub.start()

    for client, before in ((alice, before_a), (bob, before_b)):
        srv = client.api("GET", f"/users/{client.name}").json()["servers"][""]
        assert srv["ready"]
        status = requests.get(
            f"{hub.url}{srv['url']}api/status", headers={"Authorization": f"token {client.token}"}, timeout=30
        )
        assert status.status_code == 200, "the route to the workspace did not survive the restart"
        assert indices(gpu_env(client)) == before

    # the one H100 left is handed out once, and never one that alice or bob holds
    assert carol.spawn(tenant="lab", profile="h100-x1").status_code in (201, 202)
    carol_gpus = indices(gpu_env(carol))
    assert len(carol_gpus) == 1 and carol_gpus.isdisjoint(before_a | before_b)
    refused = dave.spawn(tenant="startup", profile="h100-x1")
    assert refused.status_code == 503
    assert "This machine has 4 H100 GPUs and 0 free" in refused.json()["message"]
    # and the tenant's quota remembers what runs: lab holds 4 of 4
    again = carol.spawn("more", tenant="lab", profile="h100-x1")
    assert again.status_code == 403 and "uses 4 of 4 H100 GPUs" in again.json()["message"]


def test_people_change_their_own_password(hub: Hub) -> None:
    erin = hub.login("erin", PASSWORDS["erin"])
    page = erin.session.get(f"{hub.url}/hub/change-password")
    assert page.status_code == 200 and 'name="new_password"' in page.text
    home = erin.session.get(f"{hub.url}/hub/home")
    assert 'href="/hub/change-password"' in home.text

    def post(current: str, new: str, again: str) -> requests.Response:
        xsrf = [c.value for c in erin.session.cookies if c.name == "_xsrf"][-1]
        data = {"current_password": current, "new_password": new, "new_password_again": again, "_xsrf": xsrf}
        return erin.session.post(f"{hub.url}/hub/change-password", data=data)

    wrong = post("not-the-password", "a-new-password-2", "a-new-password-2")
    assert wrong.status_code == 403 and "current password is not right" in wrong.text
    differ = post(PASSWORDS["erin"], "a-new-password-2", "another-password")
    assert differ.status_code == 400 and "two new passwords differ" in differ.text
    short = post(PASSWORDS["erin"], "short", "short")
    assert short.status_code == 400 and "needs at least 10" in short.text
    hub.login("erin", PASSWORDS["erin"])  # nothing was changed by the refusals

    done = post(PASSWORDS["erin"], "a-new-password-2", "a-new-password-2")
    assert done.status_code == 200 and "Your password was changed" in done.text
    with pytest.raises(LoginFailed):
        hub.login("erin", PASSWORDS["erin"])
    hub.login("erin", "a-new-password-2")
    # an anonymous visitor is sent to the login page, not shown the form
    anonymous = requests.get(f"{hub.url}/hub/change-password", allow_redirects=False, timeout=30)
    assert anonymous.status_code == 302 and "/hub/login" in anonymous.headers["Location"]


def test_invalid_tenant_config_stops_the_hub_with_every_problem(tmp_path: Path) -> None:
    bad = tmp_path / "tenants.yaml"
    bad.write_text(
        (Path(__file__).parent / "tenants.yaml")
        .read_text()
        .replace("memory: 2Gi", "memory: 2Gb")
        .replace("kind: startup", "kind: goverment")
    )
    hub = Hub(tmp_path / "hub", accounts={}, tenants=bad)
    with pytest.raises(RuntimeError, match="exited with 1") as info:
        hub.start(timeout=30)
    message = str(info.value)
    assert "AIDC Hub cannot start because of its tenant config" in message
    assert "2 problems; nothing was applied" in message
    assert "profiles[cpu].memory: '2Gb' has unit 'Gb'" in message
    assert "tenants[startup].kind: 'goverment' is not a tenant kind" in message
    assert not (hub.data_dir / "jupyterhub.sqlite").exists()


def test_a_hub_that_fails_after_starting_its_proxy_leaves_no_proxy_behind(tmp_path: Path) -> None:
    """The test bed's own hygiene: a hub whose quotas database cannot be reached exits after it
    started configurable-http-proxy; the bed must not leave that proxy running."""
    hub = Hub(tmp_path, accounts=PASSWORDS, env={"AIDC_DB_URL": "postgresql+psycopg://nobody@127.0.0.1:9/none"})
    with pytest.raises(RuntimeError, match="the hub exited"):
        hub.start()
    pid = int((hub.data_dir / "proxy.pid").read_text().strip())  # it had started the proxy
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    raise AssertionError(f"the proxy (pid {pid}) of the hub that failed to start is still running")

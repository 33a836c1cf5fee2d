"""The `hub` tier for culling: a real hub with short timeouts, the culler run in this process
through the hub's REST API with a token of only the scopes the docs name.

Tenants (written to tmp_path): `lab` (alice, bob; GPU servers idle 3s are stopped, CPU ones
after 1h), `broke` (dave; stops GPU servers over its GPU-hour ceiling, 4s after a warning) and
`metered` (carol; stops at once, no grace). The interval is 1h so that a culler the hub's own
quotas service may run does not act during the tests: each round here is `run_once`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import requests

from quotas import paths
from quotas.culler import Action, Culler, HubUnavailable
from quotas.limits import parse_limit
from quotas.loader import load_platform
from quotas.model import PlatformConfig
from quotas.policy import Holding
from quotas.store import Run, Store
from tests.bed.hub import PASSWORDS, REPO, Client, Hub, stop_all_servers

TENANTS = """
culling: {gpu_idle_timeout: 3s, cpu_idle_timeout: 1h, interval: 1h}
gpu_types:
  H100: {resource: nvidia.com/gpu, product: NVIDIA-H100-80GB-HBM3}
profiles:
  - {id: cpu, display_name: CPU only, cpu: "1", memory: 2Gi, image: base}
  - {id: h100-x1, display_name: 1 x H100, gpu: {type: H100, count: 1}, cpu: "1", memory: 2Gi, image: pytorch}
tenants:
  - id: lab
    display_name: University Lab
    kind: university
    members: {users: [alice, bob]}
    admins: [kim]
    profiles: [cpu, h100-x1]
    quota: {gpus: {H100: 2}}
  - id: broke
    display_name: Broke Startup
    kind: startup
    members: {users: [dave]}
    admins: [erin]
    profiles: [h100-x1]
    quota: {gpus: {H100: 1}, gpu_hours_per_month: 10}
    culling: {gpu_idle_timeout: 0, stop_over_budget: true, over_budget_grace: 4s}
  - id: metered
    display_name: Metered Inc
    kind: company
    members: {users: [carol]}
    admins: [erin]
    profiles: [h100-x1]
    quota: {gpus: {H100: 1}, gpu_hours_per_month: 1000}
    culling: {gpu_idle_timeout: 0, stop_over_budget: true, over_budget_grace: 0}
"""
# admin:server_state: where each server's GPUs are, for GPU-idle culling (issue 18)
CULLER_SCOPES = ["list:users", "read:servers", "admin:server_state", "delete:servers"]


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    workdir = tmp_path_factory.mktemp("culling")
    tenants = workdir / "tenants.yaml"
    tenants.write_text(TENANTS)
    h = Hub(workdir, accounts=PASSWORDS, fake_gpus="H100:4", tenants=tenants)
    try:
        h.start()
        yield h
    finally:
        h.stop()


@pytest.fixture(scope="module")
def clients(hub: Hub) -> dict[str, Client]:
    return {name: hub.login(name, PASSWORDS[name]) for name in ("admin", "alice", "bob", "carol", "dave")}


@pytest.fixture(scope="module")
def config(hub: Hub) -> PlatformConfig:
    return load_platform(hub.env["AIDC_TENANTS"], REPO / "images" / "catalog.yaml")


@pytest.fixture(scope="module")
def store(hub: Hub) -> Iterator[Store]:
    """The hub's own quotas database, opened from this process as the quotas service does."""
    s = Store(paths.db_url(str(hub.data_dir)))
    yield s
    s.close()


@pytest.fixture(scope="module")
def culler(clients: dict[str, Client], config: PlatformConfig, store: Store, hub: Hub) -> Culler:
    r = clients["admin"].api("POST", "/users/admin/tokens", json={"note": "culler", "scopes": CULLER_SCOPES})
    assert r.status_code == 201, r.text
    return Culler(config=config, store=store, hub_api_url=f"{hub.url}/hub/api", token=r.json()["token"])


@pytest.fixture(autouse=True)
def no_servers_left(clients: dict[str, Client]) -> Iterator[None]:
    yield
    stop_all_servers(clients.values())


def run_once(culler: Culler) -> list[Action]:
    return asyncio.run(culler.run_once())


def servers(client: Client) -> dict[str, dict]:
    return client.api("GET", f"/users/{client.name}").json()["servers"]


def wait_gone(client: Client, server: str = "", timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while server in servers(client):
        assert time.monotonic() < deadline, f"{client.name}/{server} was not stopped"
        time.sleep(0.3)


def closed_run(store: Store, tenant: str, user: str, since: datetime) -> Run:
    found = [r for r in store.runs_between(tenant, since, datetime.now(UTC)) if r.holding.user == user]
    assert len(found) == 1, found
    return found[0]


def test_idle_gpu_server_is_stopped_and_the_cpu_one_kept(
    clients: dict[str, Client], culler: Culler, store: Store
) -> None:
    alice, bob = clients["alice"], clients["bob"]
    began = datetime.now(UTC)
    assert alice.spawn(tenant="lab", profile="h100-x1").status_code in (201, 202)
    assert bob.spawn(tenant="lab", profile="cpu").status_code in (201, 202)
    alice.wait_ready()
    bob.wait_ready()
    time.sleep(3.5)  # the GPU server's timeout is 3s; nobody uses either

    before = datetime.now(UTC)
    actions = run_once(culler)
    assert [(a.user, a.server, a.kind) for a in actions] == [("alice", "", "idle")]
    assert "GPU servers of tenant lab are stopped after 3s idle (the platform's setting for GPU servers)" in (
        actions[0].reason
    )
    wait_gone(alice)
    after = datetime.now(UTC)
    assert servers(bob)[""]["ready"], "the CPU server (1h timeout) must be kept"

    run = closed_run(store, "lab", "alice", began)
    assert run.ended is not None and before <= run.ended <= after
    assert run.end_reason == "culled-idle"
    assert [r.holding.user for r in store.open_runs("lab")] == ["bob"]
    assert run_once(culler) == []  # bob's CPU server stays


def test_over_budget_gpu_server_is_warned_then_stopped_after_the_grace(
    clients: dict[str, Client], culler: Culler, store: Store
) -> None:
    dave = clients["dave"]
    began = datetime.now(UTC)
    assert dave.spawn(tenant="broke", profile="h100-x1").status_code in (201, 202)
    dave.wait_ready()
    assert run_once(culler) == []  # within budget, and broke never culls idle servers

    # the month's 10 GPU-hours get used up by an earlier run (600 GPUs for one minute)
    spent = Holding("broke", "erin", "batch", "h100-x1", {"H100": 600}, Decimal(1), Decimal(2**30))
    now = datetime.now(UTC)
    store.record_run(spent, now - timedelta(minutes=1, seconds=1), now - timedelta(seconds=1))

    [warning] = run_once(culler)
    warned_at = datetime.now(UTC)
    assert (warning.user, warning.server, warning.kind) == ("dave", "", "over_budget_warn")
    assert "tenant broke has used 10.0 of its 10.0 GPU-hours" in warning.reason
    assert [(w.user, w.server, w.tenant, w.reason) for w in culler.warnings()] == [
        ("dave", "", "broke", warning.reason)
    ]
    assert culler.warnings()[0].stop_at - culler.warnings()[0].warned == timedelta(seconds=4)
    assert servers(dave)[""]["ready"], "a warning stops nothing"

    assert run_once(culler) == []  # not warned again, not stopped yet
    assert len(culler.warnings()) == 1

    time.sleep(max(0.0, 4.2 - (datetime.now(UTC) - warned_at).total_seconds()))
    before = datetime.now(UTC)
    [stop] = run_once(culler)
    assert stop.kind == "over_budget_stop"
    assert "the 4s grace period after the warning" in stop.reason
    wait_gone(dave)
    after = datetime.now(UTC)
    assert culler.warnings() == []
    run = closed_run(store, "broke", "dave", began)
    assert run.ended is not None and before <= run.ended <= after
    assert run.end_reason == "over-budget"

    # admission refuses a new GPU server of the tenant, so there is nothing left to warn about
    refused = dave.spawn(tenant="broke", profile="h100-x1")
    assert refused.status_code == 403 and "GPU-hours" in refused.json()["message"]
    assert run_once(culler) == []


def test_a_users_used_up_limit_stops_at_once_without_grace(
    clients: dict[str, Client], culler: Culler, config: PlatformConfig, store: Store
) -> None:
    carol = clients["carol"]
    began = datetime.now(UTC)
    assert carol.spawn(tenant="metered", profile="h100-x1").status_code in (201, 202)
    carol.wait_ready()
    assert run_once(culler) == []
    # her server's run must have held its GPU for more than 1.8 s before the limit below is set
    [run] = [r for r in store.open_runs("metered") if r.holding.user == "carol"]
    time.sleep(max(0.0, 2.5 - (datetime.now(UTC) - run.started).total_seconds()))

    # her tenant admin limits her to 1.8 GPU-seconds, which her running server has used by now
    limit = parse_limit(config.tenants["metered"], "user", "carol", {"gpu_hours": "0.0005"})
    store.set_limit(limit, by="erin", now=datetime.now(UTC))
    [stop] = run_once(culler)
    assert (stop.user, stop.kind) == ("carol", "over_budget_stop")
    assert "tenant metered's admins limit carol to 0.0005 GPU-hours" in stop.reason
    assert "and there is no grace period" in stop.reason
    assert "Ask a tenant admin (erin) to raise the limit" in stop.reason
    wait_gone(carol)
    assert closed_run(store, "metered", "carol", began).ended is not None
    assert culler.warnings() == []


def test_the_culler_token_cannot_do_more_than_its_scopes(hub: Hub, culler: Culler) -> None:
    headers = {"Authorization": f"token {culler.token}"}
    assert requests.get(f"{hub.url}/hub/api/users?state=active", headers=headers, timeout=30).status_code == 200
    assert requests.post(f"{hub.url}/hub/api/users/alice/server", headers=headers, timeout=30).status_code == 403


def test_a_token_without_the_scopes_is_told_which_it_needs(
    hub: Hub, clients: dict[str, Client], config: PlatformConfig, store: Store
) -> None:
    r = clients["admin"].api("POST", "/users/admin/tokens", json={"note": "weak", "scopes": ["read:servers"]})
    weak = Culler(config=config, store=store, hub_api_url=f"{hub.url}/hub/api", token=r.json()["token"])
    with pytest.raises(HubUnavailable) as info:
        run_once(weak)
    assert "failed with 403" in str(info.value)
    assert "the culler's token needs the scopes list:users, read:servers, admin:server_state, delete:servers" in str(
        info.value
    )

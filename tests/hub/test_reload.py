"""One platform config per hub: an edit of tenants.yaml changes nothing until `aidc reload`
(SIGHUP), which validates it and swaps it for admission, logins and the quotas service at once,
or refuses it, naming every problem, and keeps the config in force for all of them.

Tenants: a copy of tests/hub/tenants.yaml (`lab`: alice, bob, carol, admin kim, 4 H100;
`startup`: dave, admin erin). `zed` has an account but no tenant.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from quotas.snapshot import HUB_STATE, QUOTAS_STATE, platform_dir, read_state
from tests.bed.hub import PASSWORDS, REPO, TENANTS, Client, Hub, stop_all_servers

EDIT = (
    # lab's ceiling goes from 4 H100 to 2; carol leaves lab; zed joins startup; dave becomes its admin
    ("quota: {gpus: {H100: 4}", "quota: {gpus: {H100: 2}"),
    ("members: {users: [alice, bob, carol]}", "members: {users: [alice, bob]}"),
    ("members: {users: [dave]}", "members: {users: [dave, zed]}"),
    ("admins: [erin]", "admins: [erin, dave]"),
)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    workdir = tmp_path_factory.mktemp("reload")
    tenants = workdir / "tenants.yaml"
    tenants.write_text(TENANTS.read_text())
    # a short poll interval: JupyterHub notices (and restarts) a quotas service that died sooner
    h = Hub(workdir, accounts=PASSWORDS, tenants=tenants, traits={"Spawner.poll_interval": 2})
    with h.running():
        yield h


@pytest.fixture(scope="module")
def people(hub: Hub) -> dict[str, Client]:
    return {name: hub.login(name, PASSWORDS[name]) for name in ("admin", "alice", "carol", "dave", "kim", "zed")}


def tenants_file(hub: Hub) -> Path:
    return Path(hub.env["AIDC_TENANTS"])


def edit(hub: Hub, changes: tuple[tuple[str, str], ...]) -> None:
    text = tenants_file(hub).read_text()
    for old, new in changes:
        assert old in text, old
        text = text.replace(old, new)
    tenants_file(hub).write_text(text)


def aidc_reload(hub: Hub) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aidc.cli", "--data-dir", str(hub.data_dir), "reload"],
        cwd=REPO,
        env=hub.env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def quotas_api(client: Client, path: str) -> dict[str, Any]:
    r = requests.get(
        f"{client.hub.url}/services/quotas/api/{path}", headers={"Authorization": f"token {client.token}"}, timeout=60
    )
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def lab_h100_ceiling(client: Client) -> int:
    return int(quotas_api(client, "tenants/lab")["ceiling"]["gpus"]["H100"])


def hub_model(admin: Client, name: str) -> dict[str, Any]:
    body: dict[str, Any] = admin.api("GET", f"/users/{name}").json()
    return body


def spawn_refusal(client: Client, tenant: str, profile: str, server: str = "") -> str | None:
    """None if the spawn was accepted (the server is stopped again), else the refusal."""
    r = client.spawn(server, tenant=tenant, profile=profile)
    if r.status_code in (201, 202):
        client.wait_ready(server)
        client.stop_server(server)
        return None
    assert r.status_code in (400, 403), r.text
    message: str = r.json()["message"]
    return message


def quotas_service_pid(hub: Hub) -> int:
    state = read_state(platform_dir(hub.data_dir) / QUOTAS_STATE)
    assert state is not None
    pid: int = state["pid"]
    return pid


def test_an_edit_changes_nothing_until_reload_not_even_a_restarted_quotas_service(
    hub: Hub, people: dict[str, Client]
) -> None:
    alice, zed, kim = people["alice"], people["zed"], people["kim"]
    # alice holds 1 of lab's H100 GPUs for the whole module
    assert alice.spawn(tenant="lab", profile="h100-x1").status_code in (201, 202)
    alice.wait_ready()
    edit(hub, EDIT)

    assert spawn_refusal(alice, "lab", "h100-x2", "big") is None  # admission: 1 + 2 of still 4 H100
    refused = spawn_refusal(zed, "startup", "cpu")
    assert refused is not None and "(zed) are not a member of any tenant" in refused  # membership: as at start
    assert lab_h100_ceiling(kim) == 4  # the quotas service: as at start

    # a quotas service the hub restarts reads what the hub applied, not the edited file
    old = quotas_service_pid(hub)
    os.kill(old, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and quotas_service_pid(hub) == old:
        time.sleep(0.5)
    assert quotas_service_pid(hub) != old, "JupyterHub did not restart the quotas service"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            assert lab_h100_ceiling(kim) == 4
            break
        except (AssertionError, requests.RequestException):
            time.sleep(0.5)
    assert lab_h100_ceiling(kim) == 4


def test_reload_applies_the_edit_to_admission_logins_and_the_quotas_service(
    hub: Hub, people: dict[str, Client]
) -> None:
    alice, carol, zed, dave, kim, admin = (people[n] for n in ("alice", "carol", "zed", "dave", "kim", "admin"))

    done = aidc_reload(hub)

    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert f"Reloaded {tenants_file(hub)}: generation 2 is in force:" in out
    assert "tenant lab: ceiling H100 GPUs 4 -> 2" in out
    assert "tenant lab: members -carol" in out
    assert "tenant startup: members +zed" in out
    assert "tenant startup: admins +dave" in out
    assert "The quotas service (pid" in out and "uses it too" in out

    refused = spawn_refusal(alice, "lab", "h100-x2", "big")  # admission against the new ceiling
    assert refused is not None and "tenant lab uses 1 of 2 H100 GPUs" in refused, refused
    assert spawn_refusal(zed, "startup", "cpu") is None  # zed is a member now, without logging in again
    refused = spawn_refusal(carol, "lab", "cpu")
    assert refused is not None and "(carol) are not a member of any tenant" in refused
    assert "lab" not in hub_model(admin, "carol")["groups"] and "startup" in hub_model(admin, "zed")["groups"]
    assert "tenant-admin-startup" in hub_model(admin, "dave")["roles"]

    assert lab_h100_ceiling(kim) == 2  # the quotas service, the same snapshot
    assert quotas_api(dave, "tenants/startup")["role"] == "admin"
    hub_state = read_state(platform_dir(hub.data_dir) / HUB_STATE)
    service_state = read_state(platform_dir(hub.data_dir) / QUOTAS_STATE)
    assert hub_state is not None and service_state is not None
    assert hub_state["snapshot"]["digest"] == service_state["snapshot"]["digest"]


def test_an_invalid_edit_is_refused_and_the_config_in_force_stays_for_logins_and_spawns(
    hub: Hub, people: dict[str, Client]
) -> None:
    alice, kim = people["alice"], people["kim"]
    good = tenants_file(hub).read_text()
    edit(hub, (("quota: {gpus: {H100: 2}", "quota: {gpus: {H100: 4}"), ("memory: 2Gi", "memory: 2Gb")))
    try:
        refused = aidc_reload(hub)

        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert f"Refused {tenants_file(hub)}: 1 problem; the config loaded at" in refused.stdout
        assert "(generation 2) stays in force" in refused.stdout
        assert f"{tenants_file(hub)}: profiles[cpu].memory: '2Gb' has unit 'Gb'" in refused.stdout
        assert "profiles[cpu].memory: '2Gb' has unit 'Gb'" in hub.log_tail(200)  # and the hub logged it

        bob = hub.login("bob", PASSWORDS["bob"])  # logins go on, with the config in force
        assert spawn_refusal(bob, "lab", "cpu") is None
        message = spawn_refusal(alice, "lab", "h100-x2", "big")
        assert message is not None and "tenant lab uses 1 of 2 H100 GPUs" in message  # not the refused file's 4
        assert lab_h100_ceiling(kim) == 2
    finally:
        tenants_file(hub).write_text(good)
        stop_all_servers(people.values())

    again = aidc_reload(hub)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"Reloaded {tenants_file(hub)}: nothing changed (generation 2 stays in force)." in again.stdout


def test_aidc_reload_without_a_running_hub_says_so(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "aidc.cli", "--data-dir", str(tmp_path), "reload"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 3
    assert f"no hub has started with the data directory {tmp_path}" in r.stdout

"""GPU-idle culling in the embedded mode (issue 18): the quotas service reads each server's GPUs
with the stand-in nvidia-smi (tests/bed/fake-nvidia-smi, on the PATH of the hub and so of its
services) and stops a server whose GPUs sit idle, even though JupyterHub sees it active: warned on
its person's hub pages first, with the time left and how to keep it; stopped with the ledger's
end reason ``idle-gpu``. Busy GPUs are kept, and a server whose GPU has no data (``[N/A]``, or left
out of nvidia-smi's answer) is never culled."""

from __future__ import annotations

import html
import json
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from quotas import paths
from quotas.store import Run, Store
from tests.bed.hub import PASSWORDS, REPO, Client, Hub

pytestmark = pytest.mark.hub

AFTER, WARN_BEFORE = 10, 7  # seconds: warned at 3 s of idle GPUs, stopped at 10 s
TENANTS = f"""
culling:
  gpu_idle_timeout: 1h   # activity-idle culling stays out of the way
  cpu_idle_timeout: 1h
  interval: 1s
  gpu_idle: {{threshold: 5%, after: {AFTER}s, warn_before: {WARN_BEFORE}s}}
gpu_types:
  H100: {{resource: nvidia.com/gpu, product: NVIDIA-H100-80GB-HBM3}}
profiles:
  - {{id: cpu, display_name: CPU only, cpu: "1", memory: 2Gi, image: base}}
  - {{id: h100-x1, display_name: 1 x H100, gpu: {{type: H100, count: 1}}, cpu: "1", memory: 2Gi, image: pytorch}}
tenants:
  - id: lab
    display_name: University Lab
    kind: university
    members: {{users: [alice, bob, carol, dave]}}
    admins: [kim]
    profiles: [cpu, h100-x1]
    quota: {{gpus: {{H100: 4}}}}
"""


@pytest.fixture(scope="module")
def smi_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The stand-in nvidia-smi on PATH, and its use file: no data for any GPU to begin with."""
    folder = tmp_path_factory.mktemp("nvidia-smi")
    (folder / "nvidia-smi").symlink_to(REPO / "tests" / "bed" / "fake-nvidia-smi")
    (folder / "nvidia-smi.json").write_text("{}")
    folder.chmod(0o755)  # the quotas service and the hub read it
    return folder


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory, smi_dir: Path) -> Iterator[Hub]:
    workdir = tmp_path_factory.mktemp("gpu-idle")
    tenants = workdir / "tenants.yaml"
    tenants.write_text(TENANTS)
    env = {"PATH": f"{smi_dir}{os.pathsep}{os.environ['PATH']}"}
    h = Hub(workdir, accounts=PASSWORDS, fake_gpus="H100:4", tenants=tenants, env=env)
    try:
        h.start()
        yield h
    finally:
        h.stop()


def open_run(hub: Hub, user: str) -> Run | None:
    store = Store(paths.db_url(str(hub.data_dir)), migrate=False)
    try:
        return next((r for r in store.open_runs("lab") if r.holding.user == user), None)
    finally:
        store.close()


def home(client: Client) -> str:
    r = client.session.get(f"{client.hub.url}/hub/home")
    assert r.status_code == 200, r.status_code
    return html.unescape(r.text)


def test_idle_gpus_are_warned_then_stopped_busy_and_unmeasured_ones_kept(hub: Hub, smi_dir: Path) -> None:
    admin = hub.login("admin", PASSWORDS["admin"])
    people = {name: hub.login(name, PASSWORDS[name]) for name in ("alice", "bob", "carol", "dave")}
    began = datetime.now(UTC)
    gpus = {}
    for name, client in people.items():
        assert client.spawn(tenant="lab", profile="h100-x1").status_code in (201, 202)
        client.wait_ready()
        # where its GPU is: the embedded spawner's state, as the culler reads it (admin:server_state)
        gpus[name] = admin.api("GET", f"/users/{name}").json()["servers"][""]["state"]["aidc"]["gpus"]
    assert sorted(g for held in gpus.values() for g in held) == ["0", "1", "2", "3"], gpus
    assert "GPU-idle culling: GPU servers whose GPUs stay under 5% for 10s are stopped" in hub.log_tail(400)

    use = {
        gpus["alice"][0]: {"utilization": 93, "memory_used_mib": 40312},  # busy
        gpus["bob"][0]: {"utilization": 0, "memory_used_mib": 3},  # idle
        gpus["carol"][0]: {"utilization": "[N/A]", "memory_used_mib": 3},  # no utilization (MIG enabled)
        gpus["dave"][0]: None,  # left out of nvidia-smi's answer
    }
    (smi_dir / "nvidia-smi.json").write_text(json.dumps(use))
    idle_from = time.monotonic()

    # bob is warned on his hub pages: when, the time left, why, and how to keep the server
    bob = people["bob"]
    deadline = time.monotonic() + 30
    page = ""
    while time.monotonic() < deadline and "will be stopped at" not in page:
        page = home(bob)
        time.sleep(0.3)
    assert "Your default server will be stopped at" in page, hub.log_tail()
    assert "UTC (in " in page
    assert "its GPUs (1 H100 GPU [" in page and "have been under 5% utilization since" in page
    assert "run work on its GPUs, or, if you do not need a GPU now, start a CPU-only profile instead" in page
    warned = open_run(hub, "bob")
    assert warned is not None and warned.stop_at is not None and warned.end_reason is None
    assert warned.stop_at - datetime.now(UTC) <= timedelta(seconds=WARN_BEFORE)

    # then stopped, with the ledger's reason
    deadline = time.monotonic() + 30
    while bob.api("GET", "/users/bob").json()["servers"] and time.monotonic() < deadline:
        time.sleep(0.3)
    assert bob.api("GET", "/users/bob").json()["servers"] == {}, hub.log_tail()
    store = Store(paths.db_url(str(hub.data_dir)), migrate=False)
    try:
        [run] = [
            r
            for r in store.runs_between("lab", began, datetime.now(UTC) + timedelta(seconds=1))
            if r.holding.user == "bob"
        ]
    finally:
        store.close()
    assert run.ended is not None and run.end_reason == "idle-gpu"
    assert "Your default server was stopped at" in home(bob) and "its GPUs sat idle" in home(bob)
    log = hub.log_tail(400)
    assert "Warned bob's default server: GPUs idle:" in log and "Stopping bob's default server (idle_gpu" in log

    # the busy and the unmeasured ones run on, unwarned, well past the GPU-idle time
    time.sleep(max(0.0, idle_from + AFTER + 3 - time.monotonic()))
    for name in ("alice", "carol", "dave"):
        assert people[name].api("GET", f"/users/{name}").json()["servers"][""]["ready"], name
        run_now = open_run(hub, name)
        assert run_now is not None and run_now.stop_at is None, name
        assert "will be stopped" not in home(people[name]), name

    # alice's GPU goes idle, then busy again before the stop: the warning is taken back
    use[gpus["alice"][0]] = {"utilization": 1, "memory_used_mib": 40312}
    (smi_dir / "nvidia-smi.json").write_text(json.dumps(use))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and "will be stopped at" not in home(people["alice"]):
        time.sleep(0.3)
    assert "will be stopped at" in home(people["alice"]), hub.log_tail()
    use[gpus["alice"][0]] = {"utilization": 55, "memory_used_mib": 40312}
    (smi_dir / "nvidia-smi.json").write_text(json.dumps(use))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and "will be stopped at" in home(people["alice"]):
        time.sleep(0.3)
    assert "will be stopped at" not in home(people["alice"])
    time.sleep(AFTER)
    assert people["alice"].api("GET", "/users/alice").json()["servers"][""]["ready"]

    for name in ("alice", "carol", "dave"):
        people[name].stop_server()

"""The quotas service culls on its own: the hub starts the service, whose culler (with the
service's own token and roles) stops an idle GPU server and keeps a CPU one."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from quotas import paths
from quotas.store import Store
from tests.bed.hub import PASSWORDS, Hub

TENANTS = """
culling: {gpu_idle_timeout: 4s, cpu_idle_timeout: 1h, interval: 2s}
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
"""


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    workdir = tmp_path_factory.mktemp("service-culler")
    tenants = workdir / "tenants.yaml"
    tenants.write_text(TENANTS)
    h = Hub(workdir, accounts=PASSWORDS, fake_gpus="H100:2", tenants=tenants)
    try:
        h.start()
        yield h
    finally:
        h.stop()


def test_the_service_culls_idle_gpu_servers_by_itself(hub: Hub) -> None:
    alice, bob = hub.login("alice", PASSWORDS["alice"]), hub.login("bob", PASSWORDS["bob"])
    began = datetime.now(UTC)
    assert alice.spawn(tenant="lab", profile="h100-x1").status_code in (201, 202)
    assert bob.spawn(tenant="lab", profile="cpu").status_code in (201, 202)
    bob.wait_ready()  # alice's may be culled before we would see it ready: 4 s idle, checked every 2 s

    deadline = time.monotonic() + 60
    while alice.api("GET", "/users/alice").json()["servers"] and time.monotonic() < deadline:
        time.sleep(0.5)
    assert alice.api("GET", "/users/alice").json()["servers"] == {}, "the idle GPU server was not culled"
    assert bob.api("GET", "/users/bob").json()["servers"][""]["ready"], "the CPU server (1h) must stay"

    log = hub.log_path.read_text(errors="replace")
    assert "Culler started: GPU servers idle 4s, CPU servers idle 1h are stopped" in log
    store = Store(paths.db_url(str(hub.data_dir)), migrate=False)
    try:
        [run] = [
            r
            for r in store.runs_between("lab", began, datetime.now(UTC) + timedelta(seconds=1))
            if r.holding.user == "alice"
        ]
        assert run.ended is not None and run.end_reason == "culled-idle"
        assert [r.holding.user for r in store.open_runs("lab")] == ["bob"]
    finally:
        store.close()
        bob.stop_server()

"""Seeing the waste (issue 18): GPU-hours used next to held, and the last hour's utilization of
each running server, in the quotas service's REST API, CSV export and metrics, in the embedded
mode with the stand-in nvidia-smi (tests/bed/fake-nvidia-smi). A busy GPU's server accrues used
hours about as fast as held ones, an idle one none; bob never sees alice's utilization."""

from __future__ import annotations

import csv
import io
import json
import os
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from quotas import paths
from quotas.store import Run, Store
from tests.bed.hub import PASSWORDS, REPO, Hub
from tests.hub.test_quotas_api import call, metrics

pytestmark = pytest.mark.hub

TENANTS = """
culling:
  gpu_idle_timeout: 1h
  cpu_idle_timeout: 1h
  interval: 1s
  gpu_idle: {threshold: 5%, after: 1h, warn_before: 10m}
gpu_types:
  H100: {resource: nvidia.com/gpu, product: NVIDIA-H100-80GB-HBM3}
profiles:
  - {id: h100-x1, display_name: 1 x H100, gpu: {type: H100, count: 1}, cpu: "1", memory: 2Gi, image: pytorch}
tenants:
  - id: lab
    display_name: University Lab
    kind: university
    members: {users: [alice, bob]}
    admins: [kim]
    profiles: [h100-x1]
    quota: {gpus: {H100: 2}}
"""


@pytest.fixture(scope="module")
def smi_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("nvidia-smi")
    (folder / "nvidia-smi").symlink_to(REPO / "tests" / "bed" / "fake-nvidia-smi")
    (folder / "nvidia-smi.json").write_text("{}")
    folder.chmod(0o755)
    return folder


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory, smi_dir: Path) -> Iterator[Hub]:
    workdir = tmp_path_factory.mktemp("gpu-waste")
    tenants = workdir / "tenants.yaml"
    tenants.write_text(TENANTS)
    env = {"PATH": f"{smi_dir}{os.pathsep}{os.environ['PATH']}"}
    h = Hub(workdir, accounts=PASSWORDS, fake_gpus="H100:2", tenants=tenants, env=env)
    try:
        h.start()
        yield h
    finally:
        h.stop()


def open_runs(hub: Hub) -> dict[str, Run]:
    store = Store(paths.db_url(str(hub.data_dir)), migrate=False)
    try:
        return {r.holding.user: r for r in store.open_runs("lab")}
    finally:
        store.close()


def test_busy_gpus_accrue_used_hours_idle_ones_none_and_the_api_csv_and_metrics_show_it(
    hub: Hub, smi_dir: Path
) -> None:
    admin, kim = hub.login("admin", PASSWORDS["admin"]), hub.login("kim", PASSWORDS["kim"])
    people = {name: hub.login(name, PASSWORDS[name]) for name in ("alice", "bob")}
    gpus = {}
    for name, client in people.items():
        assert client.spawn(tenant="lab", profile="h100-x1").status_code in (201, 202)
        client.wait_ready()
        gpus[name] = admin.api("GET", f"/users/{name}").json()["servers"][""]["state"]["aidc"]["gpus"][0]
    use = {
        gpus["alice"]: {"utilization": 100, "memory_used_mib": 40312},
        gpus["bob"]: {"utilization": 0, "memory_used_mib": 3},
    }
    (smi_dir / "nvidia-smi.json").write_text(json.dumps(use))
    measured_from = time.monotonic()
    deadline = measured_from + 30
    while time.monotonic() < deadline and open_runs(hub)["alice"].gpu_used_ms < 4000:
        time.sleep(0.3)
    runs = open_runs(hub)
    held_since_measured = (time.monotonic() - measured_from) * 1000
    assert 4000 <= runs["alice"].gpu_used_ms <= held_since_measured + 1000, (runs["alice"], hub.log_tail())
    assert runs["bob"].gpu_used_ms == 0

    # the tenant admin's report: held and used per person, and the ratio
    report = call(kim, "GET", "api/tenants/lab/usage").json()
    rows = {r["subject"]: r for r in report["rows"]}
    assert Decimal(rows["alice"]["gpu_used_hours"]) > 0 and rows["bob"]["gpu_used_hours"] == "0"
    assert Decimal(rows["alice"]["efficiency"]) > 0 and rows["bob"]["efficiency"] == "0"
    assert Decimal(report["total"]["gpu_used_hours"]) == Decimal(rows["alice"]["gpu_used_hours"])
    exported = list(csv.DictReader(io.StringIO(call(kim, "GET", "api/tenants/lab/usage?format=csv").text)))
    assert {r["user"]: Decimal(r["gpu_used_hours"]) > 0 for r in exported} == {"alice": True, "bob": False}

    # the last hour's utilization of each running server: kim sees both, bob only his own
    servers = {s["user"]: s for s in call(kim, "GET", "api/tenants/lab/servers").json()["servers"]}
    assert {p["percent"] for p in servers["alice"]["utilization"][-2:]} == {100.0}
    assert servers["bob"]["utilization"][-1]["percent"] == 0.0
    assert Decimal(servers["alice"]["gpu_used_hours"]) > 0 and servers["bob"]["gpu_used_hours"] == "0"
    bob = people["bob"]
    mine = call(bob, "GET", "api/tenants/lab/servers").json()["servers"]
    assert [s["user"] for s in mine] == ["bob"]
    assert call(bob, "GET", "api/tenants/lab/servers/alice").status_code in (403, 404)
    assert "alice" not in call(bob, "GET", "api/tenants/lab/usage").text
    me = call(people["alice"], "GET", "api/me").json()["tenants"][0]
    assert Decimal(me["usage"]["gpu_used_hours"]) > 0 and me["servers"][0]["utilization"]

    # metrics: per tenant used next to held, per running server its latest utilization
    seen = metrics(admin)
    assert seen[("aidc_tenant_gpu_used_hours_month", (("tenant", "lab"),))] > 0
    assert seen[("aidc_server_gpu_utilization", (("server", ""), ("tenant", "lab"), ("user", "alice")))] == 100
    assert seen[("aidc_server_gpu_utilization", (("server", ""), ("tenant", "lab"), ("user", "bob")))] == 0

    for client in people.values():
        client.stop_server()
    assert not any(name == "aidc_server_gpu_utilization" for name, _ in metrics(admin))  # stopped: gone

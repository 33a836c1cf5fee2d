"""The `k8s` tier: GPU use of Kubernetes servers, from the stand-in DCGM exporter through a real
Prometheus (Debian's package) to :class:`quotas.dcgm.PrometheusSource`, and GPU-idle culling on it.

Only the lowest layer is simulated (tests/bed/dcgm_exporter.py: the exporter's exact format for
the KWOK pods); Prometheus scrapes it every second.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

import pytest
from kubernetes import client

from quotas import paths
from quotas.culler import SCOPES, Action, Culler
from quotas.dcgm import PrometheusSource
from quotas.gpu_use import GpuSample, GpuUseUnavailable, ServerGpus
from quotas.loader import load_platform
from quotas.model import GpuIdle, PlatformConfig
from quotas.store import Store
from tests.bed.dcgm_exporter import DcgmExporter, gpu_uuid
from tests.bed.hub import TENANTS, Client, Hub
from tests.bed.prometheus import Prometheus
from tests.k8s.conftest import REPO

pytestmark = pytest.mark.usefixtures("no_servers_left")

LAB = "aidc-lab"
T = TypeVar("T")


@pytest.fixture(scope="module")
def exporter(api: client.ApiClient) -> Iterator[DcgmExporter]:
    e = DcgmExporter(api).start()
    yield e
    e.stop()


@pytest.fixture(scope="module")
def prometheus(exporter: DcgmExporter, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    with Prometheus(tmp_path_factory.mktemp("prometheus"), targets=[exporter.address]) as p:
        yield p


def gpu_server(api: client.ApiClient, who: Client, profile: str = "h100-x1") -> tuple[ServerGpus, Any]:
    """``who``'s default server started with ``profile``: where its GPUs are, and its pod."""
    r = who.spawn(tenant="lab", profile=profile)
    assert r.status_code in (201, 202), r.text
    who.wait_ready(timeout=120)
    pods: list[Any] = client.CoreV1Api(api).list_namespaced_pod(LAB, label_selector="component=singleuser-server").items
    (pod,) = [p for p in pods if p.metadata.labels.get("hub.jupyter.org/username") == who.name]
    return ServerGpus((who.name, ""), namespace=LAB, pod=pod.metadata.name), pod


def eventually(what: str, get: Callable[[], T], ok: Callable[[T], bool], timeout: float = 30) -> T:
    """``get()`` once ``ok`` of it, within ``timeout`` seconds (Prometheus scrapes every second)."""
    deadline = time.monotonic() + timeout
    while True:
        value = get()
        if ok(value):
            return value
        assert time.monotonic() < deadline, f"{what}: still {value!r} after {timeout:.0f} s"
        time.sleep(0.5)


def test_gpu_use_of_a_server_through_prometheus(
    api: client.ApiClient, clients: dict[str, Client], exporter: DcgmExporter, prometheus: Prometheus
) -> None:
    alice, _ = gpu_server(api, clients["alice"], "h100-x2")
    bob, bob_pod = gpu_server(api, clients["bob"])
    exporter.set(LAB, alice.pod, utilization=87, memory_used_mib=30512)
    exporter.set(LAB, alice.pod, utilization=64, gpu=1)
    exporter.set(LAB, bob.pod, utilization=0, memory_used_mib=0)
    source = PrometheusSource(prometheus.url, timeout=5)

    def sample(*servers: ServerGpus) -> dict[tuple[str, str], list[GpuSample]]:
        return asyncio.run(source.sample(servers))

    got = eventually(
        "alice's busy GPUs",
        lambda: sample(alice, bob),
        lambda s: (
            sorted((g.utilization, g.memory_used_mib) for g in s.get(alice.key, [])) == [(64, 30512), (87, 30512)]
        ),
    )
    # her two GPUs by their UUIDs, on the node the scheduler chose, measured within the last seconds
    node: str = getattr(client.CoreV1Api(api).read_namespaced_pod(alice.pod, LAB).spec, "node_name", "")
    assert {g.gpu for g in got[alice.key]} <= {gpu_uuid(node, i) for i in range(8)}
    assert all(g.read_at and datetime.now(UTC) - g.read_at < timedelta(seconds=10) for g in got[alice.key])
    assert [(g.utilization, g.memory_used_mib) for g in got[bob.key]] == [(0, 0)]
    assert bob_pod.spec.node_name and got[bob.key][0].gpu.startswith("GPU-")
    # what Prometheus holds has the exporter's labels, the pod mapping among them
    (series,) = prometheus.query(f'DCGM_FI_DEV_GPU_UTIL{{pod="{bob.pod}"}}')
    labels = series["metric"]
    assert isinstance(labels, dict)
    assert (
        labels["namespace"] == LAB
        and labels["container"] == "notebook"
        and labels["Hostname"] == bob_pod.spec.node_name
    )
    assert labels["modelName"] == "NVIDIA H100 80GB HBM3" and labels["UUID"] == got[bob.key][0].gpu

    # alice's GPUs go idle
    exporter.set(LAB, alice.pod, utilization=0, memory_used_mib=512)
    exporter.set(LAB, alice.pod, utilization=0, gpu=1)
    eventually(
        "alice's idle GPUs",
        lambda: sample(alice),
        lambda s: [(g.utilization, g.memory_used_mib) for g in s.get(alice.key, [])] == [(0, 512), (0, 512)],
    )

    # a server whose GPUs have no series (the exporter misses them) has no data, nor has a pod that is not there
    exporter.hide(LAB, bob.pod)
    nobody = ServerGpus(("nobody", ""), namespace=LAB, pod="jupyter-nobody")
    got = eventually("bob's series gone", lambda: sample(alice, bob, nobody), lambda s: bob.key not in s)
    assert set(got) == {alice.key}

    # the utilization history of a pod, for the chart
    points = asyncio.run(
        source.history(LAB, alice.pod, since=datetime.now(UTC) - timedelta(minutes=5), step=timedelta(seconds=1))
    )
    assert points and points[-1][1] == 0 and 75.5 <= max(u for _, u in points) <= 87  # (87 + 64) / 2


def test_prometheus_down_is_no_data() -> None:
    source = PrometheusSource("http://127.0.0.1:9", timeout=2)
    with pytest.raises(GpuUseUnavailable, match="cannot reach Prometheus"):
        asyncio.run(source.sample([ServerGpus(("alice", ""), namespace=LAB, pod="jupyter-alice")]))


# ---------------------------------------------------------------------- GPU-idle culling on Kubernetes


@pytest.fixture(scope="module")
def store(hub: Hub) -> Iterator[Store]:
    """The hub's own quotas database, opened from this process as the quotas service does."""
    s = Store(paths.db_url(str(hub.data_dir)))
    yield s
    s.close()


@pytest.fixture
def culler(clients: dict[str, Client], hub: Hub, store: Store, prometheus: Prometheus) -> Culler:
    """The quotas service's culler with the bed's Prometheus as its GPU source, and GPU-idle culling
    after 8 s under 5 %, warned 6 s before."""
    config: PlatformConfig = load_platform(TENANTS, REPO / "images" / "catalog.yaml")
    quick = GpuIdle(threshold=Decimal(5), after=timedelta(seconds=8), warn_before=timedelta(seconds=6))
    config = dataclasses.replace(config, culling=dataclasses.replace(config.culling, gpu_idle=quick))
    r = clients["admin"].api("POST", "/users/admin/tokens", json={"note": "culler", "scopes": list(SCOPES)})
    assert r.status_code == 201, r.text
    return Culler(
        config=config,
        store=store,
        hub_api_url=f"{hub.url}/hub/api",
        token=r.json()["token"],
        gpu_source=PrometheusSource(prometheus.url, timeout=5),
    )


def test_idle_gpus_are_warned_then_stopped_busy_and_unmeasured_ones_kept(
    api: client.ApiClient, clients: dict[str, Client], exporter: DcgmExporter, culler: Culler, store: Store
) -> None:
    since = datetime.now(UTC)
    idle, _ = gpu_server(api, clients["alice"])
    busy, _ = gpu_server(api, clients["bob"])
    unmeasured, _ = gpu_server(api, clients["carol"])
    exporter.set(LAB, idle.pod, utilization=1, memory_used_mib=400)
    exporter.set(LAB, busy.pod, utilization=93, memory_used_mib=60000)
    exporter.hide(LAB, unmeasured.pod)
    source = culler.gpu_source
    assert source is not None
    eventually(
        "the readings in Prometheus",
        lambda: asyncio.run(source.sample([idle, busy, unmeasured])),
        lambda s: set(s) == {idle.key, busy.key} and s[busy.key][0].utilization == 93,
    )

    actions: list[Action] = []
    deadline = time.monotonic() + 40
    while not any(a.kind == "idle_gpu" for a in actions):
        assert time.monotonic() < deadline, f"alice's idle GPU server was not stopped: {actions}"
        actions += asyncio.run(culler.run_once())
        time.sleep(1.5)  # rounds further apart than the scrape interval: each reads a new sample
    assert [(a.user, a.kind) for a in actions] == [("alice", "idle_gpu_warn"), ("alice", "idle_gpu")], actions
    assert "idle" in actions[0].reason.lower() and actions[0].stop_at is not None

    alice = clients["alice"]
    eventually(
        "alice's server stopped", lambda: alice.api("GET", "/users/alice").json()["servers"], lambda s: "" not in s, 60
    )
    runs = [r for r in store.runs_between("lab", since, datetime.now(UTC)) if r.holding.user == "alice"]
    assert [r.end_reason for r in runs] == ["idle-gpu"]
    for name in ("bob", "carol"):
        assert "" in clients[name].api("GET", f"/users/{name}").json()["servers"], f"{name}'s server was stopped"

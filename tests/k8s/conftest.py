"""The `k8s` tier's bed: a real control plane with KWOK GPU nodes, the tenant namespaces
from the reconciler, the pod runner, and a hub with ``spawner_class = aidc-kube``.

Nodes (tests/bed/cluster.py): two H100 nodes with 8 GPUs each, an A100 node exposing
only MIG slices, two CPU nodes. Tenants (tests/hub/tenants.yaml): `lab` (4 H100) and
`startup` (1 H100, 2 A100: no node offers whole A100s, so those pods are unschedulable).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from quotas.loader import load_platform
from spawner.reconciler import TenantReconciler
from tests.bed.cluster import ControlPlane
from tests.bed.hub import PASSWORDS, TENANTS, Client, Hub, running_hub, stop_all_servers
from tests.bed.podrunner import PodRunner

REPO = Path(__file__).resolve().parents[2]
HUB_NAMESPACE = "aidc"
HOME_CLASS = "aidc-home"
# what every hub of this tier runs with: TenantKubeSpawner, home volumes of the bed's static class
GATEWAY_TOKEN = secrets.token_hex(16)
KUBE_HUB_TRAITS = {
    "JupyterHub.spawner_class": "aidc-kube",
    "TenantKubeSpawner.home_storage_class": HOME_CLASS,
    "TenantKubeSpawner.home_capacity": "10Gi",
}


def _home_volumes(api: client.ApiClient, workdir: Path, count: int = 12) -> None:
    """A pool of static volumes the controller-manager binds home PVCs to (this cluster has no provisioner)."""
    core = client.CoreV1Api(api)
    for i in range(count):
        path = workdir / f"pv-{i}"
        path.mkdir()
        core.create_persistent_volume(
            {
                "metadata": {"name": f"home-pv-{i}"},
                "spec": {
                    "capacity": {"storage": "10Gi"},
                    "accessModes": ["ReadWriteOnce"],
                    "storageClassName": HOME_CLASS,
                    "persistentVolumeReclaimPolicy": "Retain",
                    "hostPath": {"path": str(path)},
                },
            }
        )


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    plane = ControlPlane(tmp_path_factory.mktemp("cluster"))
    plane.start()
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="session")
def api(cluster: ControlPlane) -> client.ApiClient:
    return cluster.api_client()


@pytest.fixture(scope="session")
def reconciler(api: client.ApiClient, tmp_path_factory: pytest.TempPathFactory) -> TenantReconciler:
    _home_volumes(api, tmp_path_factory.mktemp("volumes"))
    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": HUB_NAMESPACE}})
    core.create_namespaced_service_account(HUB_NAMESPACE, {"metadata": {"name": "hub"}})
    r = TenantReconciler(api, load_platform(TENANTS, REPO / "images" / "catalog.yaml"), hub_namespace=HUB_NAMESPACE)
    r.reconcile()
    _dataset(api, tmp_path_factory.mktemp("imagenet"), "aidc-lab", "open-imagenet")
    return r


def _dataset(api: client.ApiClient, path: Path, namespace: str, claim: str) -> None:
    """The lab's read-only data set, as the storage admins would provide it: a volume and its claim."""
    core = client.CoreV1Api(api)
    core.create_persistent_volume(
        {
            "metadata": {"name": f"{namespace}-{claim}"},
            "spec": {
                "capacity": {"storage": "1Ti"},
                "accessModes": ["ReadOnlyMany"],
                "storageClassName": "aidc-datasets",
                "persistentVolumeReclaimPolicy": "Retain",
                "hostPath": {"path": str(path)},
                "claimRef": {"namespace": namespace, "name": claim},
            },
        }
    )
    core.create_namespaced_persistent_volume_claim(
        namespace,
        {
            "metadata": {"name": claim},
            "spec": {
                "accessModes": ["ReadOnlyMany"],
                "storageClassName": "aidc-datasets",
                "resources": {"requests": {"storage": "1Ti"}},
            },
        },
    )
    deadline = time.monotonic() + 30
    while core.read_namespaced_persistent_volume_claim(claim, namespace).status.phase != "Bound":
        assert time.monotonic() < deadline, f"{namespace}/{claim} was not bound in 30 s"
        time.sleep(0.2)


@pytest.fixture(scope="session")
def runner(api: client.ApiClient, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PodRunner]:
    r = PodRunner(api, tmp_path_factory.mktemp("pods")).start()
    yield r
    r.stop()


@pytest.fixture(scope="session")
def hub(
    cluster: ControlPlane, reconciler: TenantReconciler, runner: PodRunner, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Hub]:
    traits = {
        **KUBE_HUB_TRAITS,
        "Spawner.poll_interval": 2,
        # two of the platform's failures in a row stop the hub (z2jh's intent): one person's cannot
        "Spawner.consecutive_failure_limit": 2,
        "Spawner.http_timeout": 20,
    }
    # the gateway's token fixed, as the chart gives it (a Secret): a second gateway may run with it
    env = {"KUBECONFIG": str(cluster.kubeconfig), "AIDC_SSHGATEWAY_API_TOKEN": GATEWAY_TOKEN}
    with running_hub(tmp_path_factory.mktemp("k8s-hub"), env=env, traits=traits) as h:
        yield h


@pytest.fixture(scope="session")
def clients(hub: Hub) -> dict[str, Client]:
    return {name: hub.login(name, password) for name, password in PASSWORDS.items()}


@pytest.fixture
def no_servers_left(clients: dict[str, Client]) -> Iterator[None]:
    yield
    stop_all_servers(clients.values())

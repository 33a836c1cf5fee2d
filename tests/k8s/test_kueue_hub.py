"""The GPU queue on Kubernetes with a real Kueue (issue 14): the reconciler's ResourceFlavors,
ClusterQueues and LocalQueues; a hub with ``TenantKubeSpawner.kueue`` whose pods wait in their
tenant's queue with a visible place, start when another stops (charged from then on), borrow idle
GPUs of the cohort, and are reclaimed by preemption; the backstop refuses a pod created behind
the hub's back.

Tenants (tests/hub/tenants.yaml, with queues opened here): `lab` holds 4 H100 and lends them all,
`startup` 1 H100 and may borrow 1. Kueue, its queues and the backstop policy exist for this module
only: the other k8s tests see the cluster as before.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from quotas.loader import load_platform
from spawner.kube_objects import KUEUE_API, LOCAL_QUEUE, QUEUE_LABEL, QUEUE_POLICY, cluster_queue_name
from spawner.reconciler import TenantReconciler
from tests.bed.cluster import ControlPlane
from tests.bed.hub import PASSWORDS, TENANTS, Client, Hub, progress_until, stop_all_servers
from tests.bed.kueue import Kueue
from tests.bed.podrunner import PodRunner
from tests.k8s.conftest import HUB_NAMESPACE, KUBE_HUB_TRAITS, REPO
from tests.k8s.test_kube_spawner import hub_can, pod_outside_the_hub

GROUP, VERSION = KUEUE_API.split("/")


@pytest.fixture(scope="module")
def tenants_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = yaml.safe_load(TENANTS.read_text())
    for tenant in data["tenants"]:
        tenant["queue"] = {"max_wait": "1h"}
        if tenant["id"] == "startup":
            tenant["sharing"] = {"borrow": {"H100": 1}}
            tenant["quota"].update(servers=4, servers_per_user=3)
    path = tmp_path_factory.mktemp("kueue-tenants") / "tenants.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@contextlib.contextmanager
def kueue_for(
    cluster: ControlPlane, api: client.ApiClient, reconciler: TenantReconciler, tenants_file: Path, name: str
) -> Iterator[tuple[Kueue, TenantReconciler]]:
    """Kueue on the session's cluster with the queues of ``tenants_file`` (reconciled with ``kueue=True``);
    afterwards their LocalQueues and ClusterQueues and the backstop policy are deleted, Kueue stopped and
    the session's plain objects reconciled again, so that the other k8s tests see the cluster as before."""
    bed = Kueue(cluster, cluster.workdir / name)
    bed.start()
    queued = TenantReconciler(
        api, load_platform(tenants_file, REPO / "images" / "catalog.yaml"), hub_namespace=HUB_NAMESPACE, kueue=True
    )
    try:
        queued.reconcile()
        yield bed, queued
    finally:
        custom = client.CustomObjectsApi(api)
        for tenant in queued.config.tenants:
            _gone(
                lambda t=tenant: custom.delete_namespaced_custom_object(
                    GROUP, VERSION, f"aidc-{t}", "localqueues", "aidc"
                )
            )
            _gone(
                lambda t=tenant: custom.delete_cluster_custom_object(
                    GROUP, VERSION, "clusterqueues", cluster_queue_name(t)
                )
            )
        admission = client.AdmissionregistrationV1Api(api)
        _gone(lambda: admission.delete_validating_admission_policy_binding(QUEUE_POLICY))
        _gone(lambda: admission.delete_validating_admission_policy(QUEUE_POLICY))
        bed.stop()
        reconciler.reconcile()  # the other tests' ResourceQuotas again


@pytest.fixture(scope="module")
def kueue(
    cluster: ControlPlane, api: client.ApiClient, reconciler: TenantReconciler, tenants_file: Path
) -> Iterator[TenantReconciler]:
    with kueue_for(cluster, api, reconciler, tenants_file, "kueue-hub") as (_, queued):
        queued.reconcile()  # idempotent
        yield queued


def _gone(delete: Any) -> None:
    try:
        delete()
    except ApiException as e:
        if e.status != 404:
            raise


@pytest.fixture(scope="module")
def hub(
    cluster: ControlPlane,
    kueue: TenantReconciler,
    runner: PodRunner,
    tenants_file: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Hub]:
    traits = {
        **KUBE_HUB_TRAITS,
        "Spawner.poll_interval": 1,
        "TenantKubeSpawner.kueue": True,
        "TenantKubeSpawner.queue_poll_interval": 0.5,
        "TenantKubeSpawner.preemption_grace": 2,
        "Spawner.http_timeout": 30,
    }
    env = {"KUBECONFIG": str(cluster.kubeconfig)}
    workdir = tmp_path_factory.mktemp("kueue-hub")
    with Hub(workdir, PASSWORDS, "H100:4,A100:2", tenants_file, env=env, traits=traits).running() as h:
        yield h


@pytest.fixture(scope="module")
def people(hub: Hub) -> Iterator[dict[str, Client]]:
    clients = {name: hub.login(name, PASSWORDS[name]) for name in ("alice", "bob", "dave")}
    yield clients
    stop_all_servers(clients.values())


def workload_states(api: client.ApiClient, namespace: str) -> dict[str, str]:
    """Pod name -> the state of its Kueue Workload (admitted, pending, preempted)."""
    items = client.CustomObjectsApi(api).list_namespaced_custom_object(GROUP, VERSION, namespace, "workloads")["items"]
    states = {}
    for w in items:
        owners = [o["name"] for o in w["metadata"].get("ownerReferences", [])]
        conditions = {c["type"]: c["status"] for c in w.get("status", {}).get("conditions", [])}
        state = (
            "preempted"
            if conditions.get("Preempted") == "True"
            else ("admitted" if conditions.get("Admitted") == "True" else "pending")
        )
        for owner in owners:
            states[owner] = state
    return states


def ledger(hub: Hub, user: str) -> dict[str, tuple[dict[str, int], str | None, str, str | None]]:
    db = sqlite3.connect(f"file:{hub.data_dir / 'quotas.sqlite'}?mode=ro", uri=True, timeout=30)
    try:
        rows = db.execute('SELECT server, borrowed, end_reason, started, ended FROM runs WHERE "user" = ?', (user,))
        return {server: (json.loads(b), reason, started, ended) for server, b, reason, started, ended in rows}
    finally:
        db.close()


def test_the_reconciler_makes_kueues_objects(api: client.ApiClient, kueue: TenantReconciler) -> None:
    custom = client.CustomObjectsApi(api)
    lab = custom.get_cluster_custom_object(GROUP, VERSION, "clusterqueues", "aidc-lab")
    gpus = lab["spec"]["resourceGroups"][1]
    h100 = next(f for f in gpus["flavors"] if f["name"] == "aidc-h100")
    assert gpus["coveredResources"] == ["nvidia.com/gpu"]
    assert h100["resources"] == [{"name": "nvidia.com/gpu", "nominalQuota": "4", "borrowingLimit": "0"}]
    assert lab["spec"]["cohortName"] == "all" and lab["spec"]["preemption"]["reclaimWithinCohort"] == "Any"
    startup = custom.get_cluster_custom_object(GROUP, VERSION, "clusterqueues", "aidc-startup")
    h100 = next(f for f in startup["spec"]["resourceGroups"][1]["flavors"] if f["name"] == "aidc-h100")
    assert h100["resources"][0]["borrowingLimit"] == "1"
    flavor = custom.get_cluster_custom_object(GROUP, VERSION, "resourceflavors", "aidc-h100")
    assert flavor["spec"]["nodeLabels"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    local = custom.get_namespaced_custom_object(GROUP, VERSION, "aidc-lab", "localqueues", "aidc")
    assert local["spec"]["clusterQueue"] == "aidc-lab"
    quota = client.CoreV1Api(api).read_namespaced_resource_quota("aidc-tenant-ceiling", "aidc-lab")
    assert "requests.nvidia.com/gpu" not in quota.spec.hard  # Kueue keeps the GPU ceiling, queued pods too


def test_a_pod_behind_the_hubs_back_is_refused_or_held_back(api: client.ApiClient, kueue: TenantReconciler) -> None:
    core = client.CoreV1Api(api)
    deadline = time.monotonic() + 15  # the API server takes up a new policy within a second or so
    while True:
        try:
            core.create_namespaced_pod("aidc-lab", pod_outside_the_hub("sneaky", gpus=8))
        except ApiException as e:
            refused = e
            break
        core.delete_namespaced_pod("sneaky", "aidc-lab", grace_period_seconds=0)
        assert time.monotonic() < deadline, "the policy never refused a pod outside the queue"
        time.sleep(0.5)
    assert refused.status == 403, refused.body
    assert "go through the tenant's GPU queue" in str(refused.body)
    # through the tenant's queue, but more than the tenant could ever hold: Kueue never lets it run
    queued = pod_outside_the_hub("queued-sneaky", gpus=8)
    queued["metadata"]["labels"] = {QUEUE_LABEL: LOCAL_QUEUE}
    core.create_namespaced_pod("aidc-lab", queued)
    try:
        time.sleep(3)
        pod = core.read_namespaced_pod("queued-sneaky", "aidc-lab")
        assert "kueue.x-k8s.io/admission" in [g.name for g in pod.spec.scheduling_gates or []]
        assert pod.spec.node_name is None
    finally:
        core.delete_namespaced_pod("queued-sneaky", "aidc-lab", grace_period_seconds=0)


def test_the_hub_reads_workloads_and_places_in_tenant_namespaces_only(
    api: client.ApiClient, kueue: TenantReconciler
) -> None:
    for namespace in ("aidc-lab", "aidc-startup"):
        assert hub_can(api, "list", "workloads", namespace, group=GROUP)
        assert hub_can(api, "get", "localqueues", namespace, group="visibility.kueue.x-k8s.io", sub="pendingworkloads")
        assert not hub_can(api, "delete", "workloads", namespace, group=GROUP)
        assert not hub_can(api, "patch", "localqueues", namespace, group=GROUP)
    for namespace in ("kube-system", "default", "kueue-system", ""):
        assert not hub_can(api, "list", "workloads", namespace, group=GROUP), namespace
    assert not hub_can(api, "get", "clusterqueues", "", group=GROUP)


def test_queue_borrowing_and_reclaim_through_kueue(api: client.ApiClient, hub: Hub, people: dict[str, Client]) -> None:
    alice, bob, dave = people["alice"], people["bob"], people["dave"]
    assert dave.spawn(tenant="startup", profile="h100-x1").status_code in (201, 202)
    dave.wait_ready()
    # startup holds its 1 H100; lab's are idle and startup may borrow 1: Kueue admits it borrowing
    assert dave.spawn("b", tenant="startup", profile="h100-x1").status_code in (201, 202)
    dave.wait_ready("b")
    assert ledger(hub, "dave")["b"][0] == {"H100": 1}
    assert ledger(hub, "dave")[""][0] == {}

    # a third waits in startup's queue (at its ceiling and its borrowing limit), with its place shown
    t_queued = time.time()
    assert dave.spawn("c", tenant="startup", profile="h100-x1").status_code == 202
    message = progress_until(dave, "c", "you are 1st of 1")
    assert message.startswith("waiting for 1 × H100: "), message
    assert "pending" in workload_states(api, "aidc-startup").values()

    # lab takes its own GPUs back: bob's 2 H100 need the one startup borrowed; Kueue preempts "b"
    assert alice.spawn(tenant="lab", profile="h100-x2").status_code in (201, 202)
    alice.wait_ready()
    assert bob.spawn(tenant="lab", profile="h100-x2").status_code in (201, 202)
    bob.wait_ready()
    deadline = time.monotonic() + 60
    while "b" in dave.api("GET", "/users/dave").json()["servers"] and time.monotonic() < deadline:
        time.sleep(0.5)
    assert "b" not in dave.api("GET", "/users/dave").json()["servers"]
    assert ledger(hub, "dave")["b"][1] == "preempted"

    # dave's own server stops: his queued one starts, charged from then on (not for its wait)
    t_stop = time.time()
    dave.stop_server("")
    dave.wait_ready("c", timeout=90)
    started = ledger(hub, "dave")["c"][2]
    assert started >= time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t_stop - 1)), (started, t_queued)

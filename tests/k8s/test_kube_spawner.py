"""The `k8s` tier: TenantKubeSpawner and the tenant namespaces against a real control plane."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from kubernetes import client
from kubernetes.client.rest import ApiException

from spawner.reconciler import TenantReconciler
from tests.bed.hub import Client, Hub
from tests.bed.podrunner import PodRunner

pytestmark = pytest.mark.usefixtures("no_servers_left")

H100_PRODUCT = "NVIDIA-H100-80GB-HBM3"


def pods(api: client.ApiClient, namespace: str | None = None) -> list[Any]:
    core = client.CoreV1Api(api)
    selector = "component=singleuser-server"
    if namespace:
        return core.list_namespaced_pod(namespace, label_selector=selector).items
    return core.list_pod_for_all_namespaces(label_selector=selector).items


def pod_of(api: client.ApiClient, namespace: str, user: str) -> Any:
    found = [p for p in pods(api, namespace) if p.metadata.labels.get("hub.jupyter.org/username") == user]
    assert len(found) == 1, [p.metadata.name for p in pods(api)]
    return found[0]


def pod_outside_the_hub(name: str, gpus: int) -> dict[str, Any]:
    """A pod someone creates in a tenant namespace without the hub (Pod Security restricted-compliant)."""
    restricted = {
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    limits = {"nvidia.com/gpu": str(gpus), "cpu": "1", "memory": "1Gi"}
    container = {"name": "c", "image": "busybox", "resources": {"limits": limits}, "securityContext": restricted}
    return {"metadata": {"name": name}, "spec": {"containers": [container]}}


def test_gpu_spawn_runs_in_the_tenant_namespace_on_a_gpu_node(
    api: client.ApiClient, clients: dict[str, Client]
) -> None:
    alice = clients["alice"]
    r = alice.spawn(tenant="lab", profile="h100-x2")
    assert r.status_code in (201, 202), r.text
    alice.wait_ready(timeout=120)

    pod = pod_of(api, "aidc-lab", "alice")
    assert pod.status.phase == "Running"
    assert pod.metadata.labels["aidc.io/tenant"] == "lab" and pod.metadata.labels["aidc.io/profile"] == "h100-x2"
    node = client.CoreV1Api(api).read_node(pod.spec.node_name)
    assert node.metadata.labels["nvidia.com/gpu.product"] == H100_PRODUCT
    container = pod.spec.containers[0]
    assert container.resources.limits["nvidia.com/gpu"] == "2"
    assert container.resources.requests["nvidia.com/gpu"] == "2"
    assert pod.spec.node_selector == {"nvidia.com/gpu.product": H100_PRODUCT}
    assert any(t.key == "nvidia.com/gpu" and t.effect == "NoSchedule" for t in pod.spec.tolerations)
    home = next(v for v in pod.spec.volumes if v.name == "home")
    assert home.persistent_volume_claim.claim_name == "home-alice"
    assert any(m.mount_path == "/home/jovyan" and m.name == "home" for m in container.volume_mounts)
    pvc = client.CoreV1Api(api).read_namespaced_persistent_volume_claim("home-alice", "aidc-lab")
    assert pvc.status.phase == "Bound" and pvc.spec.resources.requests["storage"] == "10Gi"
    dataset = next(v for v in pod.spec.volumes if v.name == "dataset-imagenet")
    assert dataset.persistent_volume_claim.claim_name == "open-imagenet" and dataset.persistent_volume_claim.read_only
    assert any(m.mount_path == "/datasets/imagenet" and m.read_only for m in container.volume_mounts)
    shm = next(v for v in pod.spec.volumes if v.name == "dshm")
    assert shm.empty_dir.medium == "Memory"
    assert any(m.mount_path == "/dev/shm" for m in container.volume_mounts)
    assert pod.spec.automount_service_account_token is False
    assert not any(v.projected or v.secret for v in pod.spec.volumes)
    sc = container.security_context
    assert sc.run_as_non_root and sc.allow_privilege_escalation is False
    assert sc.capabilities.drop == ["ALL"] and sc.seccomp_profile.type == "RuntimeDefault"

    # the server itself answers through the hub's proxy
    srv = alice.api("GET", "/users/alice").json()["servers"][""]
    status = requests.get(
        f"{alice.hub.url}{srv['url']}api/status", headers={"Authorization": f"token {alice.token}"}, timeout=30
    )
    assert status.status_code == 200


def test_cpu_profile_after_a_gpu_profile_holds_no_gpu(api: client.ApiClient, clients: dict[str, Client]) -> None:
    bob = clients["bob"]
    assert bob.spawn(tenant="lab", profile="h100-x1").status_code in (201, 202)
    bob.wait_ready(timeout=120)
    bob.stop_server()
    assert bob.spawn(tenant="lab", profile="cpu").status_code in (201, 202)
    bob.wait_ready(timeout=120)
    pod = pod_of(api, "aidc-lab", "bob")
    limits = pod.spec.containers[0].resources.limits
    assert "nvidia.com/gpu" not in limits
    assert not pod.spec.node_selector and not any(t.key == "nvidia.com/gpu" for t in pod.spec.tolerations or [])


def test_quota_full_is_refused_before_any_pod(api: client.ApiClient, clients: dict[str, Client]) -> None:
    for name in ("alice", "bob"):
        assert clients[name].spawn(tenant="lab", profile="h100-x2").status_code in (201, 202)
    for name in ("alice", "bob"):
        clients[name].wait_ready(timeout=120)
    r = clients["carol"].spawn(tenant="lab", profile="h100-x1")
    assert r.status_code == 403
    assert "tenant lab uses 4 of 4 H100 GPUs (alice: 2, bob: 2)" in r.json()["message"]
    assert [p for p in pods(api, "aidc-lab") if p.metadata.labels.get("hub.jupyter.org/username") == "carol"] == []


@pytest.mark.parametrize(
    ("user", "options", "status"),
    [
        ("alice", {"tenant": "lab", "profile": "h100-x1", "gpus": 64}, 400),
        ("alice", {"tenant": "lab", "profile": "a100-x1"}, 403),
        ("dave", {"tenant": "lab", "profile": "h100-x1"}, 403),  # a startup user into the lab's namespace
        ("alice", {"tenant": "startup", "profile": "cpu"}, 403),
    ],
)
def test_forged_options_and_other_tenants_namespaces_are_refused(
    api: client.ApiClient, clients: dict[str, Client], user: str, options: dict[str, Any], status: int
) -> None:
    r = clients[user].spawn(**options)
    assert r.status_code == status, r.text
    assert pods(api) == []


def test_unschedulable_gpu_request_is_refused_with_the_reason_quickly(
    api: client.ApiClient, clients: dict[str, Client]
) -> None:
    started = time.monotonic()
    r = clients["dave"].spawn(tenant="startup", profile="a100-x1")
    # answered within JupyterHub's slow_spawn_timeout (10 s): the refusal itself, not a 202
    assert r.status_code == 503, r.text
    assert time.monotonic() - started < 15
    message = r.json()["message"]
    assert message.startswith("No node can run this server now") and "Insufficient nvidia.com/gpu" in message, message
    assert pods(api, "aidc-startup") == []
    assert clients["dave"].api("GET", "/users/dave").json()["servers"] == {}


def test_resource_quota_is_a_backstop_behind_the_hub(api: client.ApiClient, reconciler: TenantReconciler) -> None:
    core = client.CoreV1Api(api)
    pod = pod_outside_the_hub("behind-the-hubs-back", gpus=5)
    with pytest.raises(ApiException) as info:
        core.create_namespaced_pod("aidc-lab", pod)
    assert info.value.status == 403 and "exceeded quota" in info.value.body


def hub_can(api: client.ApiClient, verb: str, resource: str, namespace: str, group: str = "", sub: str = "") -> bool:
    """Whether the hub's service account may ``verb`` ``resource`` (of API ``group``) in ``namespace``."""
    attributes = {"verb": verb, "resource": resource, "namespace": namespace, "group": group, "subresource": sub}
    review = client.AuthorizationV1Api(api).create_subject_access_review(
        {
            "spec": {
                "user": "system:serviceaccount:aidc:hub",
                "groups": ["system:serviceaccounts", "system:serviceaccounts:aidc", "system:authenticated"],
                "resourceAttributes": attributes,
            }
        }
    )
    return bool(review.status.allowed)


def test_hub_service_account_is_limited_to_tenant_workloads(
    api: client.ApiClient, reconciler: TenantReconciler
) -> None:
    assert hub_can(api, "create", "pods", "aidc-lab") and hub_can(
        api, "delete", "persistentvolumeclaims", "aidc-startup"
    )
    for verb, resource, namespace in [
        ("get", "secrets", "kube-system"),
        ("list", "secrets", "aidc-lab"),
        ("get", "secrets", "aidc-startup"),
        ("create", "pods", "kube-system"),
        ("create", "pods", "default"),
        ("delete", "resourcequotas", "aidc-lab"),
        ("create", "rolebindings", "aidc-lab"),
    ]:
        assert not hub_can(api, verb, resource, namespace), (verb, resource, namespace)


def test_reconciler_is_idempotent(api: client.ApiClient, reconciler: TenantReconciler) -> None:
    def versions() -> dict[str, str]:
        out = {}
        for obj in reconciler.desired():
            meta = obj["metadata"]
            live = reconciler.read(obj)
            out[f"{obj['kind']}/{meta.get('namespace', '')}/{meta['name']}"] = live["metadata"]["resourceVersion"]
        return out

    before = versions()
    reconciler.reconcile()
    assert versions() == before


@pytest.fixture
def retired(api: client.ApiClient, reconciler: TenantReconciler) -> Iterator[TenantReconciler]:
    """A reconciler whose config no longer has the `startup` tenant (restored afterwards)."""
    import dataclasses
    from types import MappingProxyType

    config = reconciler.config
    smaller = dataclasses.replace(
        config, tenants=MappingProxyType({k: v for k, v in config.tenants.items() if k != "startup"})
    )
    yield TenantReconciler(api, smaller, hub_namespace="aidc")
    reconciler.reconcile()
    client.CoreV1Api(api).patch_namespace("aidc-startup", {"metadata": {"labels": {"aidc.io/removed": None}}})


def test_removed_tenant_keeps_its_data(api: client.ApiClient, retired: TenantReconciler) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_persistent_volume_claim(
        "aidc-startup",
        {
            "metadata": {"name": "claim-dave"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
        },
    )
    report = retired.reconcile()
    claims = sorted(c.metadata.name for c in core.list_namespaced_persistent_volume_claim("aidc-startup").items)
    assert "claim-dave" in claims
    assert report.removed_tenants == {"aidc-startup": claims}
    assert any("aidc-startup" in line and "claim-dave" in line for line in report.lines())
    ns = core.read_namespace("aidc-startup")
    assert ns.metadata.labels["aidc.io/removed"] == "true"
    assert core.read_namespaced_persistent_volume_claim("claim-dave", "aidc-startup").metadata.name == "claim-dave"
    bindings = client.RbacAuthorizationV1Api(api).list_namespaced_role_binding("aidc-startup").items
    assert [b.metadata.name for b in bindings] == []


def test_hub_restart_keeps_pods_and_usage(api: client.ApiClient, hub: Hub, clients: dict[str, Client]) -> None:
    alice, carol = clients["alice"], clients["carol"]
    assert alice.spawn(tenant="lab", profile="h100-x2").status_code in (201, 202)
    assert carol.spawn(tenant="lab", profile="h100-x2").status_code in (201, 202)
    alice.wait_ready(timeout=120)
    carol.wait_ready(timeout=120)
    uids = {p.metadata.name: p.metadata.uid for p in pods(api, "aidc-lab")}

    hub.kill()
    hub.start()

    for c in (alice, carol):
        assert c.api("GET", f"/users/{c.name}").json()["servers"][""]["ready"]
    assert {p.metadata.name: p.metadata.uid for p in pods(api, "aidc-lab")} == uids, "pods were recreated"
    r = clients["bob"].spawn(tenant="lab", profile="h100-x1")
    assert r.status_code == 403 and "uses 4 of 4 H100 GPUs" in r.json()["message"]


def test_kubernetes_quota_refusal_reaches_the_person(api: client.ApiClient, clients: dict[str, Client]) -> None:
    """Something outside the hub holds most of the lab's GPUs: the hub admits, Kubernetes says no."""
    core = client.CoreV1Api(api)
    squatter = pod_outside_the_hub("outside-the-hub", gpus=3)
    squatter["spec"]["nodeSelector"] = {"nvidia.com/gpu.product": H100_PRODUCT}
    squatter["spec"]["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    core.create_namespaced_pod("aidc-lab", squatter)
    try:
        r = clients["alice"].spawn(tenant="lab", profile="h100-x2")
        assert r.status_code == 403, r.text
        message = r.json()["message"]
        assert message.startswith("Kubernetes refused the server: namespace aidc-lab is at its ResourceQuota")
        assert "exceeded quota" in message and "stop a server or ask a platform admin" in message
        assert clients["alice"].api("GET", "/users/alice").json()["servers"] == {}
        # the refusal gave the quota back: a CPU-only server still starts
        assert clients["alice"].spawn(tenant="lab", profile="cpu").status_code in (201, 202)
        clients["alice"].wait_ready(timeout=120)
    finally:
        core.delete_namespaced_pod("outside-the-hub", "aidc-lab", grace_period_seconds=0)


def test_a_person_whose_server_keeps_failing_cannot_make_the_hub_exit(
    hub: Hub, runner: PodRunner, clients: dict[str, Client]
) -> None:
    """The hub exits after 2 counted failures in a row here. carol's own settings make her pod's
    server exit (the pod stays Running: it never answers): three failures, each a message for her,
    only her first counted; then dave's server starts and the hub serves everyone."""
    carol, dave = clients["carol"], clients["dave"]
    config = runner.workdir / "homes" / "aidc-lab-jupyter-carol" / ".jupyter" / "jupyter_server_config.py"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text("import os\nos._exit(3)\n")
    try:
        for _ in range(3):
            message = carol.spawn_failure(tenant="lab", profile="cpu")
            assert "did not answer within 20 seconds" in message and "~/.jupyter" in message, message
        time.sleep(3)  # the hub aborts 2 s after the failure that reaches the limit
        assert hub.proc is not None and hub.proc.poll() is None, f"the hub exited:\n{hub.log_tail()}"
        assert "Aborting due to" not in hub.log_tail(3000)
    finally:
        config.unlink()
    assert dave.spawn(tenant="startup", profile="cpu").status_code in (201, 202)
    dave.wait_ready(timeout=120)
    assert carol.spawn(tenant="lab", profile="cpu").status_code in (201, 202)  # repaired: it starts
    carol.wait_ready(timeout=120)

"""The Kueue bed (tests/bed/kueue.py) end to end on the session's control plane: quota, cohort
borrowing, the visibility API and reclaiming lent quota by preemption, with plain pods.

Two ClusterQueues share the cohort ``gpus``: ``a`` (1 H100, may borrow 1) and ``b`` (1 H100, may
lend 1, reclaims it by preemption). Kueue runs for this module only; ``stop()`` removes its
webhooks and APIServices, so the other k8s tests see the cluster as before.
"""

from __future__ import annotations

import functools
import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.bed.cluster import H100, ControlPlane
from tests.bed.kueue import GROUP, QUEUE_LABEL, TENANT_LABEL, VERSION, Kueue

GPU = "nvidia.com/gpu"
GATE = "kueue.x-k8s.io/admission"
COHORT = "gpus"
FLAVOR = "h100"


def wait_for(what: str, fn: Callable[[], Any], timeout: float = 90.0) -> Any:
    """Poll fn until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = fn()
        if last:
            return last
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})"
        time.sleep(0.3)


@pytest.fixture(scope="module")
def kueue(cluster: ControlPlane, api: client.ApiClient, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kueue]:
    k = Kueue(cluster, Path(tmp_path_factory.mktemp("kueue")))
    k.start()
    try:
        yield k
    finally:
        k.stop()
        # nothing of Kueue's may outlive the module: the other tests share this cluster
        for kind, mark in (
            ("mutatingwebhookconfiguration", "kueue"),
            ("validatingwebhookconfiguration", "kueue"),
            ("apiservice", "visibility.kueue"),  # v1beta2.kueue.x-k8s.io & co. are the CRDs' own
        ):
            left = cluster.kubectl("get", kind, "-o", "name").stdout.split()
            assert not [n for n in left if mark in n], f"left behind after Kueue.stop(): {left}"
        crds = cluster.kubectl("get", "crd", "-o", "json").stdout
        converted = [
            c["metadata"]["name"]
            for c in json.loads(crds)["items"]
            if c["spec"].get("conversion", {}).get("strategy") == "Webhook"
        ]
        assert not converted, f"CRDs still converted by the stopped Kueue: {converted}"
        # a pod with a queue label in a tenant namespace is an ordinary pod again
        core: Any = client.CoreV1Api(api)
        ns = f"kueue-bed-after-{uuid.uuid4().hex[:6]}"
        core.create_namespace({"metadata": {"name": ns, "labels": {TENANT_LABEL: "kueue-bed"}}})
        try:
            cluster.wait_for_service_account("default", ns)
            pod = core.create_namespaced_pod(ns, _pod("after", "a"), dry_run="All")
            assert not pod.spec.scheduling_gates and not pod.metadata.finalizers, pod.metadata
        finally:
            core.delete_namespace(ns)


def _cq(name: str, gpu: dict[str, Any], preemption: dict[str, Any] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "cohortName": COHORT,
        "namespaceSelector": {},
        "resourceGroups": [
            {
                "coveredResources": ["cpu", "memory", GPU],
                "flavors": [
                    {
                        "name": FLAVOR,
                        "resources": [
                            {"name": "cpu", "nominalQuota": "64"},
                            {"name": "memory", "nominalQuota": "512Gi"},
                            {"name": GPU, **gpu},
                        ],
                    }
                ],
            }
        ],
    }
    if preemption:
        spec["preemption"] = preemption
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ClusterQueue", "metadata": {"name": name}, "spec": spec}


@pytest.fixture(scope="module")
def queues(kueue: Kueue, cluster: ControlPlane, api: client.ApiClient) -> Iterator[dict[str, str]]:
    """A tenant namespace with LocalQueues ``a`` and ``b`` into ClusterQueues ``<prefix>-a``/``-b``."""
    co: Any = client.CustomObjectsApi(api)  # takes and gives plain dicts
    core: Any = client.CoreV1Api(api)
    suffix = uuid.uuid4().hex[:6]
    ns = f"kueue-bed-{suffix}"
    cqs = {lq: f"kueue-bed-{suffix}-{lq}" for lq in ("a", "b")}
    co.create_cluster_custom_object(
        GROUP,
        VERSION,
        "resourceflavors",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ResourceFlavor",
            "metadata": {"name": FLAVOR},
            "spec": {"nodeLabels": {"nvidia.com/gpu.product": H100}},
        },
    )
    co.create_cluster_custom_object(
        GROUP, VERSION, "clusterqueues", _cq(cqs["a"], {"nominalQuota": "1", "borrowingLimit": "1"})
    )
    co.create_cluster_custom_object(
        GROUP,
        VERSION,
        "clusterqueues",
        _cq(
            cqs["b"],
            {"nominalQuota": "1", "lendingLimit": "1"},
            {"reclaimWithinCohort": "Any", "withinClusterQueue": "Never"},
        ),
    )
    core.create_namespace({"metadata": {"name": ns, "labels": {TENANT_LABEL: "kueue-bed"}}})
    for lq, cq in cqs.items():
        co.create_namespaced_custom_object(
            GROUP,
            VERSION,
            ns,
            "localqueues",
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "LocalQueue",
                "metadata": {"name": lq, "namespace": ns},
                "spec": {"clusterQueue": cq},
            },
        )
    cluster.wait_for_service_account("default", ns)

    def active(cq: str) -> bool:
        conds = co.get_cluster_custom_object(GROUP, VERSION, "clusterqueues", cq).get("status", {}).get("conditions")
        return any(c["type"] == "Active" and c["status"] == "True" for c in conds or [])

    for cq in cqs.values():
        wait_for(f"ClusterQueue {cq} Active", functools.partial(active, cq), 60)
    try:
        yield {"namespace": ns, **{f"cq-{k}": v for k, v in cqs.items()}}
    finally:
        # Pods, Workloads and ClusterQueues carry Kueue's finalizers: clean up while Kueue runs.
        core.delete_namespace(ns)

        def gone(read: Callable[[], Any]) -> bool:
            try:
                read()
            except ApiException as e:
                return e.status == 404
            return False

        wait_for(f"namespace {ns} deleted", lambda: gone(lambda: core.read_namespace(ns)), 120)
        for cq in cqs.values():
            co.delete_cluster_custom_object(GROUP, VERSION, "clusterqueues", cq)
        co.delete_cluster_custom_object(GROUP, VERSION, "resourceflavors", FLAVOR)
        for cq in cqs.values():
            read = functools.partial(co.get_cluster_custom_object, GROUP, VERSION, "clusterqueues", cq)
            wait_for(f"ClusterQueue {cq} deleted", functools.partial(gone, read), 60)


def _pod(name: str, queue: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {QUEUE_LABEL: queue}},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "tolerations": [{"key": GPU, "operator": "Exists", "effect": "NoSchedule"}],
            "containers": [
                {
                    "name": "main",
                    "image": "registry.invalid/notebook:latest",
                    "resources": {
                        "requests": {"cpu": "1", "memory": "1Gi", GPU: "1"},
                        "limits": {"memory": "1Gi", GPU: "1"},
                    },
                }
            ],
        },
    }


class Bed:
    def __init__(self, api: client.ApiClient, kueue: Kueue, ns: str) -> None:
        self.core: Any = client.CoreV1Api(api)  # takes plain dicts as bodies
        self.co: Any = client.CustomObjectsApi(api)
        self.kueue = kueue
        self.ns = ns

    def create(self, name: str, queue: str) -> Any:
        return self.core.create_namespaced_pod(self.ns, _pod(name, queue))

    def pod(self, name: str) -> Any:
        return self.core.read_namespaced_pod(name, self.ns)

    def pod_or_none(self, name: str) -> Any:
        try:
            return self.pod(name)
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def workload(self, pod: str) -> dict[str, Any] | None:
        items = self.co.list_namespaced_custom_object(GROUP, VERSION, self.ns, "workloads")["items"]
        for wl in items:
            if any(o.get("kind") == "Pod" and o.get("name") == pod for o in wl["metadata"].get("ownerReferences", [])):
                return dict(wl)
        return None

    def condition(self, wl: dict[str, Any] | None, kind: str) -> dict[str, Any] | None:
        for c in (wl or {}).get("status", {}).get("conditions", []):
            if c["type"] == kind and c["status"] == "True":
                return dict(c)
        return None

    def admitted(self, pod: str) -> dict[str, Any] | None:
        wl = self.workload(pod)
        return wl if self.condition(wl, "Admitted") else None

    def running(self, name: str) -> Any:
        p = self.pod(name)
        return p if p.status.phase == "Running" else None

    def gpu_usage(self, cq: str) -> dict[str, Any]:
        status = self.co.get_cluster_custom_object(GROUP, VERSION, "clusterqueues", cq).get("status", {})
        for fl in status.get("flavorsUsage") or []:
            for r in fl.get("resources") or []:
                if fl["name"] == FLAVOR and r["name"] == GPU:
                    return dict(r)
        return {}


def test_kueue_queues_borrows_shows_pending_and_reclaims(
    kueue: Kueue, queues: dict[str, str], api: client.ApiClient
) -> None:
    ns = queues["namespace"]
    bed = Bed(api, kueue, ns)
    assert kueue.visibility_ready
    marks: dict[str, float] = {}

    # 1. a queued pod: gated at creation, admitted into a's nominal quota, ungated, scheduled, Running
    t = time.monotonic()
    created = bed.create("a1", "a")
    assert GATE in [g.name for g in created.spec.scheduling_gates or []], created.spec.scheduling_gates
    wl = wait_for("a Workload for pod a1", lambda: bed.workload("a1"), 60)
    wl = wait_for("a1's Workload admitted", lambda: bed.admitted("a1"), 60)
    assert wl["status"]["admission"]["clusterQueue"] == queues["cq-a"]
    p = wait_for("pod a1 Running", lambda: bed.running("a1"), 90)
    assert not p.spec.scheduling_gates, p.spec.scheduling_gates
    # the flavor's node labels were injected by Kueue: nothing else keeps the pod off the A100 node
    assert p.spec.node_selector == {"nvidia.com/gpu.product": H100}, p.spec.node_selector
    assert p.spec.node_name in ("h100-0", "h100-1"), p.spec.node_name
    marks["a1 admitted + Running"] = time.monotonic() - t
    # the conversion webhook serves the old API version (v1beta1 calls the cohort `cohort`)
    old = bed.co.get_cluster_custom_object(GROUP, "v1beta1", "clusterqueues", queues["cq-a"])
    assert old["apiVersion"] == f"{GROUP}/v1beta1" and old["spec"]["cohort"] == COHORT, old["spec"]

    # 2. a's quota is used up: the second pod borrows b's GPU
    t = time.monotonic()
    bed.create("a2", "a")
    wait_for("a2's Workload admitted", lambda: bed.admitted("a2"), 60)
    wait_for("pod a2 Running", lambda: bed.running("a2"), 90)
    usage = wait_for(
        f"{queues['cq-a']} borrowing 1 GPU", lambda: (u := bed.gpu_usage(queues["cq-a"])).get("borrowed") == "1" and u
    )
    assert usage["total"] == "2", usage
    marks["a2 admitted borrowing + Running"] = time.monotonic() - t

    # 3. nominal + borrowing limit used up: the third pod waits, gated, and the visibility API lists it
    t = time.monotonic()
    bed.create("a3", "a")
    wl3 = wait_for("a Workload for pod a3", lambda: bed.workload("a3"), 60)
    pending = wait_for(
        "a3 in the visibility API's pending workloads",
        lambda: [w for w in kueue.pending_workloads(ns, "a") if w["metadata"]["name"] == wl3["metadata"]["name"]],
        60,
    )
    assert pending[0]["positionInLocalQueue"] == 0, pending
    assert pending[0]["positionInClusterQueue"] == 0, pending
    assert not bed.condition(bed.workload("a3"), "QuotaReserved")
    p3 = bed.pod("a3")
    assert GATE in [g.name for g in p3.spec.scheduling_gates or []] and p3.status.phase == "Pending"
    marks["a3 pending, listed by the visibility API"] = time.monotonic() - t

    # 4. b wants its lent GPU back: the borrowing workload of a is preempted and its pod deleted
    t = time.monotonic()
    a_workloads = {bed.workload(n)["metadata"]["name"]: n for n in ("a1", "a2")}  # type: ignore[index]
    bed.create("b1", "b")

    def preempted() -> list[str]:
        out = []
        for name in a_workloads:
            try:
                wl = bed.co.get_namespaced_custom_object(GROUP, VERSION, ns, "workloads", name)
            except ApiException as e:  # preempted, its pod deleted and the Workload collected already
                if e.status != 404:
                    raise
                out.append(name)
                continue
            if bed.condition(wl, "Preempted") or (
                (c := bed.condition(wl, "Evicted")) is not None and c.get("reason") == "Preempted"
            ):
                out.append(name)
        return out

    victims = wait_for("a workload of a preempted", preempted, 90)
    assert len(victims) == 1, victims
    victim_pod = a_workloads[victims[0]]
    wait_for(f"b1's Workload admitted in {queues['cq-b']}", lambda: bed.admitted("b1"), 90)
    wait_for("pod b1 Running", lambda: bed.running("b1"), 90)
    wait_for(f"preempted pod {victim_pod} deleted", lambda: bed.pod_or_none(victim_pod) is None, 90)
    survivor = ({"a1", "a2"} - {victim_pod}).pop()
    assert bed.running(survivor), f"{survivor} should keep running"
    # a is back to its nominal GPU, nothing borrowed: a3 still waits
    wait_for(
        f"{queues['cq-a']} no longer borrowing", lambda: bed.gpu_usage(queues["cq-a"]).get("borrowed") in ("0", None)
    )
    assert not bed.admitted("a3")
    marks["b1 reclaims, a's borrower preempted"] = time.monotonic() - t

    for k, v in marks.items():
        print(f"{k}: {v:.1f}s")

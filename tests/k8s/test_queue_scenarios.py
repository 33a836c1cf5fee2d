"""The queue scenarios of tests/queue_scenarios.py against Kubernetes with a real Kueue (issue 14):
the same table that tests/unit/test_queue_scenarios.py plays against the embedded hub's engine.

Each scenario's tenants are ``q<scenario>-<tenant>`` with cohorts ``q<scenario>-<cohort>``, so the
scenarios never share GPUs; their ClusterQueues, LocalQueues and namespaces come from the production
reconciler (``kueue=True``), once for the module. Requests are plain pods like the hub's: in the
tenant's LocalQueue with the workspaces' priority class, on H100 nodes. After each step the module
waits until Kueue has settled (the observed state unchanged for a while), then reads: running = pods
that Kueue ungated (admitted); each tenant's GPUs and borrowed GPUs = its ClusterQueue's
``flavorsUsage``; places in line = the visibility API's ``positionInLocalQueue`` (+1); preempted =
pods Kueue deleted (or whose Workload it marked Preempted).

Kueue, its queues, the backstop policy and the scenarios' namespaces exist for this module only: the
other k8s tests see the cluster as before.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from spawner.kube_objects import (
    GPU_PRODUCT_LABEL,
    LOCAL_QUEUE,
    PRIORITY_CLASS,
    PRIORITY_LABEL,
    QUEUE_LABEL,
    TENANT_LABEL,
    cluster_queue_name,
    gpu_flavor,
    tenant_namespace,
)
from spawner.reconciler import TenantReconciler
from tests.bed.cluster import H100, ControlPlane
from tests.bed.hub import TENANTS
from tests.bed.kueue import Kueue, KueueError
from tests.k8s.test_kube_spawner import pod_outside_the_hub
from tests.k8s.test_kueue_bed import GATE, GPU, wait_for
from tests.k8s.test_kueue_hub import GROUP, VERSION, _gone, kueue_for
from tests.queue_scenarios import GPU_TYPE, SCENARIOS, Arrive, Scenario, State, Stop

SCENARIO_LABEL = "aidc.io/queue-scenario"
POLL = 0.3  # s between looks
QUIET = 2.0  # s without change: Kueue has settled
SETTLE_TIMEOUT = 30.0


def tenant_id(scenario: Scenario, tenant: str) -> str:
    return f"q{scenario.id}-{tenant}"


def namespaces() -> list[str]:
    return [tenant_namespace(tenant_id(s, t.name)) for s in SCENARIOS for t in s.tenants]


@pytest.fixture(scope="module")
def tenants_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's tenants (their queues come and go with this module) and every scenario's."""
    data = yaml.safe_load(TENANTS.read_text())
    for s in SCENARIOS:
        for t in s.tenants:
            sharing: dict[str, Any] = {"cohort": tenant_id(s, t.cohort)}
            if t.borrow:
                sharing["borrow"] = {GPU_TYPE: t.borrow}
            if t.lend is not None:
                sharing["lend"] = {GPU_TYPE: t.lend}
            data["tenants"].append(
                {
                    "id": tenant_id(s, t.name),
                    "display_name": f"queue scenario {s.id}: {t.name}",
                    "kind": "company",
                    "profiles": ["h100-x1"],
                    "quota": {"gpus": {GPU_TYPE: t.nominal}},
                    "sharing": sharing,
                    "queue": {"max_wait": "1h"},
                }
            )
    path = tmp_path_factory.mktemp("queue-scenarios") / "tenants.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def kueue(
    cluster: ControlPlane, api: client.ApiClient, reconciler: TenantReconciler, tenants_file: Path
) -> Iterator[Kueue]:
    custom, core = client.CustomObjectsApi(api), client.CoreV1Api(api)
    with kueue_for(cluster, api, reconciler, tenants_file, "kueue-scenarios") as (bed, _):
        try:
            for ns in namespaces():
                cluster.wait_for_service_account("default", ns)
            for s in SCENARIOS:
                for t in s.tenants:
                    cq = cluster_queue_name(tenant_id(s, t.name))
                    wait_for(f"ClusterQueue {cq} active", lambda cq=cq: _active(custom, cq), 60)
            for ns in namespaces():  # Kueue's cache knows a LocalQueue a moment after the API does
                wait_for(f"LocalQueue {ns}/{LOCAL_QUEUE} in the visibility API", lambda ns=ns: _visible(bed, ns), 60)
            yield bed
        finally:  # pods and Workloads carry Kueue's finalizers: remove the namespaces while Kueue runs
            for ns in namespaces():
                _gone(lambda ns=ns: core.delete_namespace(ns))
            wait_for("the scenarios' namespaces deleted", lambda: not _existing(core, namespaces()), 120)


def _visible(bed: Kueue, namespace: str) -> bool:
    try:
        bed.pending_workloads(namespace, LOCAL_QUEUE)
    except KueueError:
        return False
    return True


def _active(custom: Any, cq: str) -> bool:
    conditions = custom.get_cluster_custom_object(GROUP, VERSION, "clusterqueues", cq).get("status", {})
    return any(c["type"] == "Active" and c["status"] == "True" for c in conditions.get("conditions") or [])


def _existing(core: Any, names: list[str]) -> list[str]:
    left = {ns.metadata.name for ns in core.list_namespace().items}
    return [n for n in names if n in left]


def _true(conditions: list[dict[str, Any]], kind: str) -> bool:
    return any(c["type"] == kind and c["status"] == "True" for c in conditions)


class Replay:
    """One scenario against Kueue: its requests as pods, and the :class:`State` Kueue shows."""

    def __init__(self, api: client.ApiClient, bed: Kueue, scenario: Scenario) -> None:
        self.core: Any = client.CoreV1Api(api)  # takes plain dicts as bodies
        self.custom: Any = client.CustomObjectsApi(api)
        self.bed, self.scenario = bed, scenario
        self.tenants = {tenant_id(scenario, t.name): t.name for t in scenario.tenants}
        self.namespace = {t.name: tenant_namespace(tenant_id(scenario, t.name)) for t in scenario.tenants}
        self.requests = scenario.requests()
        self.live: set[str] = set()  # created, neither stopped nor preempted

    def pod(self, request: Arrive) -> dict[str, Any]:
        body = pod_outside_the_hub(request.name, request.gpus)
        body["metadata"]["labels"] = {
            QUEUE_LABEL: LOCAL_QUEUE,
            PRIORITY_LABEL: PRIORITY_CLASS,
            SCENARIO_LABEL: self.scenario.id,
        }
        body["spec"]["tolerations"] = [{"key": GPU, "operator": "Exists", "effect": "NoSchedule"}]
        body["spec"]["nodeSelector"] = {GPU_PRODUCT_LABEL: H100}
        return body

    def act(self, action: Arrive | Stop) -> None:
        if isinstance(action, Arrive):
            self.core.create_namespaced_pod(self.namespace[action.tenant], self.pod(action))
            self.live.add(action.name)
        else:
            tenant = self.requests[action.name].tenant
            self.core.delete_namespaced_pod(action.name, self.namespace[tenant], grace_period_seconds=0)
            self.live.discard(action.name)

    def observe(self) -> State:
        selector = f"{SCENARIO_LABEL}={self.scenario.id}"
        pods = {
            p.metadata.name: p
            for p in self.core.list_pod_for_all_namespaces(label_selector=selector).items
            if p.metadata.deletion_timestamp is None
        }
        conditions: dict[str, list[dict[str, Any]]] = {}  # pod -> its Workload's conditions
        workload_of: dict[tuple[str, str], str] = {}  # (namespace, Workload) -> pod
        spaces = set(self.namespace.values())
        for w in self.custom.list_cluster_custom_object(GROUP, VERSION, "workloads")["items"]:
            meta = w["metadata"]
            if meta["namespace"] not in spaces:
                continue
            for owner in meta.get("ownerReferences") or []:
                if owner.get("kind") == "Pod":
                    conditions[owner["name"]] = w.get("status", {}).get("conditions") or []
                    workload_of[(meta["namespace"], meta["name"])] = owner["name"]
        preempted = {n for n in self.live if n not in pods or _true(conditions.get(n, []), "Preempted")}
        gated = {n for n, p in pods.items() if GATE in [g.name for g in p.spec.scheduling_gates or []]}
        running = {n for n in self.live - preempted if n in pods and n not in gated}
        waiting = {}
        for ns in {self.namespace[self.requests[n].tenant] for n in self.live - preempted - running}:
            for item in self.bed.pending_workloads(ns, LOCAL_QUEUE):
                pod = workload_of.get((ns, item["metadata"]["name"]))
                if pod in self.live:
                    waiting[pod] = int(item["positionInLocalQueue"]) + 1
        return State(frozenset(running), self.usage(), waiting, frozenset(preempted))

    def usage(self) -> dict[str, tuple[int, int]]:
        """Tenant -> (GPUs used, of which borrowed), from its ClusterQueue's status."""
        selector = f"{TENANT_LABEL} in ({','.join(sorted(self.tenants))})"
        out = {}
        for cq in self.custom.list_cluster_custom_object(GROUP, VERSION, "clusterqueues", label_selector=selector)[
            "items"
        ]:
            tenant = self.tenants[cq["metadata"]["labels"][TENANT_LABEL]]
            for flavor in cq.get("status", {}).get("flavorsUsage") or []:
                for r in flavor.get("resources") or []:
                    if flavor["name"] == gpu_flavor(GPU_TYPE) and r["name"] == GPU and int(r.get("total", "0")):
                        out[tenant] = (int(r["total"]), int(r.get("borrowed", "0")))
        return out

    def settle(self, want: State) -> State:
        """The state once it has not changed for :data:`QUIET` seconds and is ``want``; or, after
        :data:`SETTLE_TIMEOUT`, the last one seen."""
        deadline = time.monotonic() + SETTLE_TIMEOUT
        last, since = None, time.monotonic()
        while True:
            got = self.observe()
            now = time.monotonic()
            if got != last:
                last, since = got, now
            elif got == want and now - since >= QUIET:
                return got
            if now > deadline:
                return got
            time.sleep(POLL)

    def clean_up(self) -> None:
        selector = f"{SCENARIO_LABEL}={self.scenario.id}"
        for ns in self.namespace.values():
            self.core.delete_collection_namespaced_pod(ns, label_selector=selector, grace_period_seconds=0)
        wait_for(
            f"scenario {self.scenario.id}'s pods gone",
            lambda: not self.core.list_pod_for_all_namespaces(label_selector=selector).items,
            60,
        )


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.id for s in SCENARIOS])
def test_kueue_plays_the_scenario(api: client.ApiClient, kueue: Kueue, scenario: Scenario) -> None:
    replay = Replay(api, kueue, scenario)
    try:
        for i, step in enumerate(scenario.steps, start=1):
            replay.act(step.action)
            want = scenario.expected(step)
            got = replay.settle(want)
            assert got == want, (
                f"scenario {scenario.id} step {i} ({step.action}):\n  got  {got}\n  want {want}\n{kueue.log_tail(30)}"
            )
            replay.live -= got.preempted
    finally:
        replay.clean_up()

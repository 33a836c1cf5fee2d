"""Pure builders for the Kubernetes backend: per-profile pod settings and the objects
of a tenant's namespace.

Plain values in, plain dicts out (as KubeSpawner's ``objects.py``): no API calls,
inputs never mutated. :func:`profile_settings` returns *every* profile-dependent
KubeSpawner trait, empty ones included, so a CPU-only spawn never inherits the GPU
limits, selector or tolerations of an earlier spawn.
"""
# i18n: operator: Kubernetes objects (their descriptions and policy messages are for the cluster's operators)

from __future__ import annotations

from decimal import Decimal
from typing import Any

from quotas.model import Dataset, GpuType, Image, Profile, Tenant

TENANT_LABEL = "aidc.io/tenant"
PROFILE_LABEL = "aidc.io/profile"
MANAGED_BY = {"app.kubernetes.io/managed-by": "aidc-hub"}
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
GPU_TAINT_KEY = "nvidia.com/gpu"
METADATA_ADDRESS = "169.254.169.254/32"
WORKSPACE_NOTEBOOK_PORT = 8888  # the Jupyter server in a workspace pod (KubeSpawner's default ``port``)
WORKSPACE_SSHD_PORT = 2222  # the sshd the Jupyter server starts in a workspace pod, reached by the SSH gateway
# which port of a workspace pod each of the hub's components (``allowed_from``'s keys) reaches
WORKSPACE_PORT_OF = {
    "hub": WORKSPACE_NOTEBOOK_PORT,
    "proxy": WORKSPACE_NOTEBOOK_PORT,
    "sshgateway": WORKSPACE_SSHD_PORT,
}

# Kueue (issue 14): the GPU queue, borrowing and reclaim on Kubernetes (sigs.k8s.io/kueue v0.17)
KUEUE_API = "kueue.x-k8s.io/v1beta2"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
PRIORITY_LABEL = "kueue.x-k8s.io/priority-class"
LOCAL_QUEUE = "aidc"  # each tenant namespace's one LocalQueue
PRIORITY_CLASS = "aidc-workspace"
CPU_FLAVOR = "aidc-cpu"
UNLIMITED = {"cpu": "100000", "memory": "100Pi"}  # a ClusterQueue's nominal quota where the tenant has no ceiling


def tenant_namespace(tenant_id: str, template: str = "aidc-{tenant}") -> str:
    """``snu-ai`` -> ``aidc-snu-ai``. Tenant ids are DNS labels of at most 40 characters."""
    return template.format(tenant=tenant_id)


def profile_settings(
    namespace: str,
    tenant: Tenant,
    profile: Profile,
    gpu_type: GpuType | None,
    image: Image,
    datasets: tuple[Dataset, ...] = (),
    shm_fraction: Decimal = Decimal("0.5"),
) -> dict[str, Any]:
    """KubeSpawner trait values for one spawn of ``profile`` charged to ``tenant``.

    GPU profiles get the extended-resource limit (``nvidia.com/gpu`` or a MIG resource),
    a node selector on the GPU product label and a toleration of the GPU taint. Every
    profile gets a memory-backed ``/dev/shm`` (``shm_fraction`` of its memory), which
    PyTorch data loaders need beyond the container runtime's 64 MiB default. The
    tenant's ``datasets`` are mounted read-only.
    """
    gpus: dict[str, str] = {}
    selector: dict[str, str] = {}
    tolerations: list[dict[str, str]] = []
    if gpu_type is not None and profile.gpu_count:
        gpus = {gpu_type.resource: str(profile.gpu_count)}
        if gpu_type.product:
            selector = {GPU_PRODUCT_LABEL: gpu_type.product}
        tolerations = [{"key": GPU_TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}]
    shm_bytes = int(profile.memory * shm_fraction)
    return {
        "namespace": namespace,
        "image": image.image,
        "cpu_guarantee": float(profile.cpu),
        "cpu_limit": float(profile.cpu),
        "mem_guarantee": int(profile.memory),
        "mem_limit": int(profile.memory),
        "extra_resource_guarantees": dict(gpus),
        "extra_resource_limits": dict(gpus),
        "node_selector": selector,
        "tolerations": tolerations,
        "volumes": [
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": str(shm_bytes)}},
            *(
                {"name": f"dataset-{d.name}", "persistentVolumeClaim": {"claimName": d.claim, "readOnly": True}}
                for d in datasets
            ),
        ],
        "volume_mounts": [
            {"name": "dshm", "mountPath": "/dev/shm"},
            *({"name": f"dataset-{d.name}", "mountPath": d.mount_path, "readOnly": True} for d in datasets),
        ],
        "extra_labels": {TENANT_LABEL: tenant.id, PROFILE_LABEL: profile.id},
    }


# ---------------------------------------------------------------------------
# the objects of a tenant's namespace


def tenant_labels(tenant: Tenant) -> dict[str, str]:
    return {TENANT_LABEL: tenant.id, **MANAGED_BY}


def make_namespace(name: str, tenant: Tenant, pod_security: str = "restricted") -> dict[str, Any]:
    """The tenant's Namespace, with Pod Security Admission enforcing ``pod_security``."""
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": name,
            "labels": {
                **tenant_labels(tenant),
                "pod-security.kubernetes.io/enforce": pod_security,
                "pod-security.kubernetes.io/warn": pod_security,
            },
            "annotations": {"aidc.io/display-name": tenant.display_name, "aidc.io/kind": tenant.kind},
        },
    }


def make_resource_quota(
    namespace: str, tenant: Tenant, gpu_types: dict[str, GpuType], kueue: bool = False
) -> dict[str, Any]:
    """The Kubernetes backstop of the tenant's ceiling: what the hub admits, enforced again.

    GPU types sharing one resource (H100 and A100 are both ``nvidia.com/gpu``) add up. With
    ``kueue`` the tenant's ClusterQueue is the backstop of GPUs, CPU and memory (a ResourceQuota
    counts queued pods and would refuse them, and borrowing pods beyond the ceiling), and
    :func:`make_queue_policy` refuses every pod that does not go through the tenant's LocalQueue;
    the ResourceQuota keeps storage and the number of pods (servers plus the queue's length).
    """
    quota = tenant.quota
    hard: dict[str, str] = {}
    if kueue:
        if quota.storage is not None:
            hard["requests.storage"] = _quantity(quota.storage)
        if quota.servers is not None:
            hard["pods"] = str(quota.servers + tenant.queue.max_length)
        return _resource_quota(namespace, tenant, hard)
    for name, count in quota.gpus.items():
        key = f"requests.{gpu_types[name].resource}"
        hard[key] = str(int(hard.get(key, "0")) + count)
    for gpu_type in gpu_types.values():  # resources the tenant is not granted at all: 0
        hard.setdefault(f"requests.{gpu_type.resource}", "0")
    if quota.cpu is not None:
        hard["requests.cpu"] = _quantity(quota.cpu)
        hard["limits.cpu"] = _quantity(quota.cpu)
    if quota.memory is not None:
        hard["requests.memory"] = _quantity(quota.memory)
        hard["limits.memory"] = _quantity(quota.memory)
    if quota.storage is not None:
        hard["requests.storage"] = _quantity(quota.storage)
    if quota.servers is not None:
        hard["pods"] = str(quota.servers)
    return _resource_quota(namespace, tenant, hard)


def _resource_quota(namespace: str, tenant: Tenant, hard: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "aidc-tenant-ceiling", "namespace": namespace, "labels": tenant_labels(tenant)},
        "spec": {"hard": hard},
    }


# ---------------------------------------------------------------------------
# Kueue: one ResourceFlavor per GPU type, one ClusterQueue and LocalQueue per tenant


def gpu_flavor(gpu_type: str) -> str:
    """``H100`` -> ``aidc-h100``, ``A100-1g.10gb`` -> ``aidc-a100-1g-10gb`` (a DNS name)."""
    return "aidc-" + "".join(c if c.isalnum() else "-" for c in gpu_type.lower()).strip("-")


def make_resource_flavors(gpu_types: dict[str, GpuType]) -> list[dict[str, Any]]:
    """A flavor per GPU type (the nodes of its product, whose GPU taint its pods tolerate) and one for
    CPU and memory, which any node offers."""
    flavors = [
        {"apiVersion": KUEUE_API, "kind": "ResourceFlavor", "metadata": {"name": CPU_FLAVOR, "labels": MANAGED_BY}}
    ]
    for name, gpu_type in sorted(gpu_types.items()):
        spec: dict[str, Any] = {"nodeLabels": {GPU_PRODUCT_LABEL: gpu_type.product}} if gpu_type.product else {}
        flavors.append(
            {
                "apiVersion": KUEUE_API,
                "kind": "ResourceFlavor",
                "metadata": {"name": gpu_flavor(name), "labels": MANAGED_BY},
                "spec": spec,
            }
        )
    return flavors


def make_priority_class() -> dict[str, Any]:
    """Every workspace's Kueue priority: one class, so that reclaim (not priority) decides preemption."""
    return {
        "apiVersion": KUEUE_API,
        "kind": "WorkloadPriorityClass",
        "metadata": {"name": PRIORITY_CLASS, "labels": MANAGED_BY},
        "value": 0,
        "description": "AIDC Hub workspaces",
    }


def cluster_queue_name(tenant_id: str) -> str:
    return f"aidc-{tenant_id}"


def make_cluster_queue(tenant: Tenant, gpu_types: dict[str, GpuType]) -> dict[str, Any]:
    """The tenant's ClusterQueue: its ceiling as nominal quota (guaranteed), what it may borrow from
    idle GPUs of its cohort and what of its own it lends, first in first out, and reclaim: a request
    within its nominal quota preempts borrowers of its cohort (never its own tenant's servers)."""
    quota, sharing = tenant.quota, tenant.sharing
    cpu = {
        "name": CPU_FLAVOR,
        "resources": [
            {"name": "cpu", "nominalQuota": _quantity(quota.cpu) if quota.cpu is not None else UNLIMITED["cpu"]},
            {
                "name": "memory",
                "nominalQuota": _quantity(quota.memory) if quota.memory is not None else UNLIMITED["memory"],
            },
        ],
    }
    groups: list[dict[str, Any]] = [{"coveredResources": ["cpu", "memory"], "flavors": [cpu]}]
    resources = sorted({g.resource for g in gpu_types.values()})
    if resources:
        flavors = []
        for name, gpu_type in sorted(gpu_types.items()):
            entries = []
            for resource in resources:
                entry: dict[str, Any] = {
                    "name": resource,
                    "nominalQuota": str(quota.gpus.get(name, 0) if resource == gpu_type.resource else 0),
                }
                if resource == gpu_type.resource:
                    entry["borrowingLimit"] = str(sharing.borrow.get(name, 0))
                    if name in sharing.lend:
                        entry["lendingLimit"] = str(min(sharing.lend[name], quota.gpus.get(name, 0)))
                entries.append(entry)
            flavors.append({"name": gpu_flavor(name), "resources": entries})
        groups.append({"coveredResources": resources, "flavors": flavors})
    return {
        "apiVersion": KUEUE_API,
        "kind": "ClusterQueue",
        "metadata": {"name": cluster_queue_name(tenant.id), "labels": tenant_labels(tenant)},
        "spec": {
            "cohortName": sharing.cohort,
            "namespaceSelector": {"matchLabels": {TENANT_LABEL: tenant.id}},
            "queueingStrategy": "StrictFIFO",
            "preemption": {
                "reclaimWithinCohort": "Any",
                "withinClusterQueue": "Never",
                "borrowWithinCohort": {"policy": "Never"},
            },
            "resourceGroups": groups,
        },
    }


def make_local_queue(namespace: str, tenant: Tenant) -> dict[str, Any]:
    return {
        "apiVersion": KUEUE_API,
        "kind": "LocalQueue",
        "metadata": {"name": LOCAL_QUEUE, "namespace": namespace, "labels": tenant_labels(tenant)},
        "spec": {"clusterQueue": cluster_queue_name(tenant.id)},
    }


QUEUE_POLICY = "aidc-pods-through-kueue"


def make_queue_policy() -> list[dict[str, Any]]:
    """The backstop with Kueue: a ValidatingAdmissionPolicy (and its binding) that refuses a pod in a
    tenant namespace unless it goes through the tenant's LocalQueue, so none escapes its ClusterQueue."""
    message = (
        f"pods in tenant namespaces go through the tenant's GPU queue: label them {QUEUE_LABEL}={LOCAL_QUEUE}"
        " (the hub does); this one does not"
    )
    return [
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": QUEUE_POLICY, "labels": MANAGED_BY},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {
                    "resourceRules": [
                        {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}
                    ]
                },
                "validations": [
                    {
                        "expression": (
                            f"has(object.metadata.labels) && '{QUEUE_LABEL}' in object.metadata.labels"
                            f" && object.metadata.labels['{QUEUE_LABEL}'] == '{LOCAL_QUEUE}'"
                        ),
                        "message": message,
                        "reason": "Forbidden",
                    }
                ],
            },
        },
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": QUEUE_POLICY, "labels": MANAGED_BY},
            "spec": {
                "policyName": QUEUE_POLICY,
                "validationActions": ["Deny"],
                "matchResources": {
                    "namespaceSelector": {
                        "matchExpressions": [{"key": TENANT_LABEL, "operator": "Exists"}],
                        "matchLabels": MANAGED_BY,
                    }
                },
            },
        },
    ]


def cluster_objects(gpu_types: dict[str, GpuType]) -> list[dict[str, Any]]:
    """What Kueue needs once for the whole cluster: flavors, the priority class, the backstop policy."""
    return [*make_resource_flavors(gpu_types), make_priority_class(), *make_queue_policy()]


def make_limit_range(namespace: str, tenant: Tenant) -> dict[str, Any]:
    """Defaults for containers created without requests (the ResourceQuota needs them)."""
    return {
        "apiVersion": "v1",
        "kind": "LimitRange",
        "metadata": {"name": "aidc-defaults", "namespace": namespace, "labels": tenant_labels(tenant)},
        "spec": {
            "limits": [
                {
                    "type": "Container",
                    "default": {"cpu": "1", "memory": "2Gi"},
                    "defaultRequest": {"cpu": "100m", "memory": "256Mi"},
                }
            ]
        },
    }


def make_network_policies(
    namespace: str, tenant: Tenant, hub_namespace: str, allowed_from: dict[str, str]
) -> list[dict[str, Any]]:
    """Default deny; ingress only from the hub's components, each on the one port it needs (the
    hub and the proxy on the Jupyter server's port, the SSH gateway on the sshd's); egress anywhere
    but the cloud metadata address and other tenants' namespaces.

    ``allowed_from`` maps a component (``hub``, ``proxy``, ``sshgateway``) to the value of
    its ``component`` label in ``hub_namespace``; :data:`WORKSPACE_PORT_OF` says its port.
    Pods of the tenant's own namespace do not reach each other's ports (no ingress rule admits them).
    """
    unknown = sorted(set(allowed_from) - set(WORKSPACE_PORT_OF))
    if unknown:
        raise ValueError(
            f"allowed_from names components {unknown} that reach no port of a workspace;"
            f" the known ones are {sorted(WORKSPACE_PORT_OF)}"
        )
    meta = {"namespace": namespace, "labels": tenant_labels(tenant)}
    hub_ns = {"kubernetes.io/metadata.name": hub_namespace}
    by_port: dict[int, list[str]] = {}
    for component, label in sorted(allowed_from.items(), key=lambda item: item[1]):
        by_port.setdefault(WORKSPACE_PORT_OF[component], []).append(label)
    return [
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "aidc-default-deny", **meta},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "aidc-ingress-from-hub", **meta},
            "spec": {
                "podSelector": {},
                "policyTypes": ["Ingress"],
                "ingress": [
                    {
                        "from": [
                            {
                                "namespaceSelector": {"matchLabels": hub_ns},
                                "podSelector": {"matchLabels": {"component": label}},
                            }
                            for label in labels
                        ],
                        "ports": [{"protocol": "TCP", "port": port}],
                    }
                    for port, labels in sorted(by_port.items())
                ],
            },
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "aidc-egress", **meta},
            "spec": {
                "podSelector": {},
                "policyTypes": ["Egress"],
                "egress": [
                    # the hub's API, DNS, and the internet, but not the metadata service
                    {"to": [{"namespaceSelector": {"matchLabels": hub_ns}}]},
                    {
                        "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}}],
                        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
                    },
                    {"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": [METADATA_ADDRESS]}}]},
                    # pods of its own namespace (multi-pod jobs of one tenant)
                    {"to": [{"podSelector": {}}]},
                ],
            },
        },
    ]


HUB_RULES = [
    {
        "apiGroups": [""],
        "resources": ["pods", "persistentvolumeclaims", "services"],
        "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"],
    },
    {"apiGroups": [""], "resources": ["events"], "verbs": ["get", "list", "watch"]},
    # the GPU queue: the tenant's Workloads (why a pod waits, whether it was preempted) and its place
    {"apiGroups": ["kueue.x-k8s.io"], "resources": ["workloads"], "verbs": ["get", "list", "watch"]},
    {
        "apiGroups": ["visibility.kueue.x-k8s.io"],
        "resources": ["localqueues/pendingworkloads"],
        "verbs": ["get", "list"],
    },
]


def make_hub_role(namespace: str, tenant: Tenant) -> dict[str, Any]:
    """What the hub may do in a tenant namespace: manage pods, PVCs and services; read events."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "aidc-hub", "namespace": namespace, "labels": tenant_labels(tenant)},
        "rules": HUB_RULES,
    }


def make_hub_role_binding(
    namespace: str, tenant: Tenant, hub_namespace: str, hub_service_account: str
) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "aidc-hub", "namespace": namespace, "labels": tenant_labels(tenant)},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "aidc-hub"},
        "subjects": [{"kind": "ServiceAccount", "name": hub_service_account, "namespace": hub_namespace}],
    }


def tenant_objects(
    tenant: Tenant,
    gpu_types: dict[str, GpuType],
    namespace_template: str,
    hub_namespace: str,
    hub_service_account: str,
    allowed_from: dict[str, str],
    kueue: bool = False,
) -> list[dict[str, Any]]:
    """Everything the reconciler keeps in sync for one tenant, namespace first (with ``kueue``, its
    ClusterQueue before the namespace, and its LocalQueue)."""
    ns = tenant_namespace(tenant.id, namespace_template)
    queues = [make_cluster_queue(tenant, gpu_types)] if kueue else []
    return [
        *queues,
        make_namespace(ns, tenant),
        *([make_local_queue(ns, tenant)] if kueue else []),
        make_resource_quota(ns, tenant, gpu_types, kueue),
        make_limit_range(ns, tenant),
        *make_network_policies(ns, tenant, hub_namespace, allowed_from),
        make_hub_role(ns, tenant),
        make_hub_role_binding(ns, tenant, hub_namespace, hub_service_account),
    ]


def _quantity(value: Decimal) -> str:
    """An exact Kubernetes quantity string: ``Decimal("0.5")`` -> ``"500m"``, bytes as integers."""
    if value == value.to_integral():
        return str(int(value))
    milli = value * 1000
    if milli == milli.to_integral():
        return f"{int(milli)}m"
    return format(value.normalize(), "f")

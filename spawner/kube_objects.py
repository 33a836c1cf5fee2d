"""Pure builders for the Kubernetes backend: per-profile pod settings and the objects
of a tenant's namespace.

Plain values in, plain dicts out (as KubeSpawner's ``objects.py``): no API calls,
inputs never mutated. :func:`profile_settings` returns *every* profile-dependent
KubeSpawner trait, empty ones included, so a CPU-only spawn never inherits the GPU
limits, selector or tolerations of an earlier spawn.
"""

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


def make_resource_quota(namespace: str, tenant: Tenant, gpu_types: dict[str, GpuType]) -> dict[str, Any]:
    """The Kubernetes backstop of the tenant's ceiling: what the hub admits, enforced again.

    GPU types sharing one resource (H100 and A100 are both ``nvidia.com/gpu``) add up.
    """
    quota = tenant.quota
    hard: dict[str, str] = {}
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
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "aidc-tenant-ceiling", "namespace": namespace, "labels": tenant_labels(tenant)},
        "spec": {"hard": hard},
    }


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
    """Default deny; ingress only from the hub's components; egress anywhere but the cloud
    metadata address and other tenants' namespaces.

    ``allowed_from`` maps a component (``hub``, ``proxy``, ``sshgateway``) to the value of
    its ``component`` label in ``hub_namespace``.
    """
    meta = {"namespace": namespace, "labels": tenant_labels(tenant)}
    hub_ns = {"kubernetes.io/metadata.name": hub_namespace}
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
                                "podSelector": {"matchLabels": {"component": c}},
                            }
                            for c in sorted(allowed_from.values())
                        ]
                    }
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
) -> list[dict[str, Any]]:
    """Everything the reconciler keeps in sync for one tenant, namespace first."""
    ns = tenant_namespace(tenant.id, namespace_template)
    return [
        make_namespace(ns, tenant),
        make_resource_quota(ns, tenant, gpu_types),
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

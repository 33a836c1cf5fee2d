"""The tenant namespace reconciler: keeps every tenant's namespace, ResourceQuota,
LimitRange, NetworkPolicies and hub RoleBinding equal to the tenant config; with Kueue
(issue 14), also the ResourceFlavors of the GPU types, each tenant's ClusterQueue and
LocalQueue, the workspaces' WorkloadPriorityClass and the policy that sends every pod of a
tenant namespace through its queue.

Objects are written with server-side apply (field manager ``aidc-reconciler``), so a
run is idempotent and only the fields it owns are changed. A tenant removed from the
config loses its hub access and its running pods, but keeps its namespace and PVCs:
no data is deleted, and the report says what was left.
"""
# i18n: operator: the reconciler's objects and its report to the operator (`aidc reconcile`)

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from quotas.model import PlatformConfig

from .kube_objects import KUEUE_API, MANAGED_BY, TENANT_LABEL, cluster_objects, tenant_objects

FIELD_MANAGER = "aidc-reconciler"
REMOVED_LABEL = "aidc.io/removed"

_PATHS = {
    ("v1", "Namespace"): "/api/v1/namespaces/{name}",
    ("v1", "ResourceQuota"): "/api/v1/namespaces/{namespace}/resourcequotas/{name}",
    ("v1", "LimitRange"): "/api/v1/namespaces/{namespace}/limitranges/{name}",
    (
        "networking.k8s.io/v1",
        "NetworkPolicy",
    ): "/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies/{name}",
    ("rbac.authorization.k8s.io/v1", "Role"): "/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/roles/{name}",
    (
        "rbac.authorization.k8s.io/v1",
        "RoleBinding",
    ): "/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings/{name}",
    (KUEUE_API, "ResourceFlavor"): f"/apis/{KUEUE_API}/resourceflavors/{{name}}",
    (KUEUE_API, "WorkloadPriorityClass"): f"/apis/{KUEUE_API}/workloadpriorityclasses/{{name}}",
    (KUEUE_API, "ClusterQueue"): f"/apis/{KUEUE_API}/clusterqueues/{{name}}",
    (KUEUE_API, "LocalQueue"): f"/apis/{KUEUE_API}/namespaces/{{namespace}}/localqueues/{{name}}",
    (
        "admissionregistration.k8s.io/v1",
        "ValidatingAdmissionPolicy",
    ): "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies/{name}",
    (
        "admissionregistration.k8s.io/v1",
        "ValidatingAdmissionPolicyBinding",
    ): "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicybindings/{name}",
}


@dataclass
class Report:
    applied: list[str] = field(default_factory=list)
    removed_tenants: dict[str, list[str]] = field(default_factory=dict)  # namespace -> PVCs kept

    def lines(self) -> list[str]:
        out = [f"applied {len(self.applied)} objects"]
        for ns, pvcs in self.removed_tenants.items():
            kept = ", ".join(pvcs) if pvcs else "no PVCs"
            out.append(
                f"tenant namespace {ns} is no longer in the config: its pods and hub access were removed;"
                f" the namespace and {kept} were kept (delete them by hand once the data is saved)"
            )
        return out


class TenantReconciler:
    """Apply :func:`spawner.kube_objects.tenant_objects` for every tenant of ``config``."""

    def __init__(
        self,
        api: client.ApiClient,
        config: PlatformConfig,
        namespace_template: str = "aidc-{tenant}",
        hub_namespace: str = "aidc",
        hub_service_account: str = "hub",
        allowed_from: Mapping[str, str] | None = None,
        kueue: bool = False,
    ):
        self.api = api
        self.kueue = kueue
        self.config = config
        self.namespace_template = namespace_template
        self.hub_namespace = hub_namespace
        self.hub_service_account = hub_service_account
        self.allowed_from = dict(allowed_from or {"hub": "hub", "proxy": "proxy", "sshgateway": "sshgateway"})

    def desired(self) -> list[dict[str, Any]]:
        return [*(cluster_objects(dict(self.config.gpu_types)) if self.kueue else [])] + [
            obj
            for tenant in self.config.tenants.values()
            for obj in tenant_objects(
                tenant,
                dict(self.config.gpu_types),
                self.namespace_template,
                self.hub_namespace,
                self.hub_service_account,
                self.allowed_from,
                self.kueue,
            )
        ]

    def reconcile(self) -> Report:
        report = Report()
        for obj in self.desired():
            self.apply(obj)
            meta = obj["metadata"]
            report.applied.append(f"{obj['kind']} {meta.get('namespace', '')}/{meta['name']}".replace(" /", " "))
        report.removed_tenants = self._retire_removed_tenants()
        return report

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply of one object (created if missing, our fields made equal)."""
        return self.request(
            "PATCH",
            object_path(obj),
            body=obj,
            query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
            content_type="application/apply-patch+yaml",
        )

    def read(self, obj: dict[str, Any]) -> dict[str, Any]:
        """The live version of ``obj``."""
        return self.request("GET", object_path(obj))

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        params = self.api.param_serialize(
            method=method,
            resource_path=path,
            query_params=query or [],
            header_params={"Content-Type": content_type, "Accept": "application/json"},
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self.api.call_api(*params)
        response.read()
        if response.status >= 400:
            raise ApiException(http_resp=response)
        result: dict[str, Any] = json.loads(response.data or b"{}")
        return result

    def _retire_removed_tenants(self) -> dict[str, list[str]]:
        core, rbac = client.CoreV1Api(self.api), client.RbacAuthorizationV1Api(self.api)
        selector = ",".join(f"{k}={v}" for k, v in MANAGED_BY.items())
        retired: dict[str, list[str]] = {}
        for ns in core.list_namespace(label_selector=selector).items:
            labels = (ns.metadata.labels if ns.metadata else None) or {}
            tenant_id = labels.get(TENANT_LABEL)
            if tenant_id is None or tenant_id in self.config.tenants:
                continue
            name = _name(ns)
            for binding in rbac.list_namespaced_role_binding(name, label_selector=selector).items:
                rbac.delete_namespaced_role_binding(_name(binding), name)
            core.delete_collection_namespaced_pod(name)
            core.patch_namespace(name, {"metadata": {"labels": {REMOVED_LABEL: "true"}}})
            retired[name] = sorted(_name(p) for p in core.list_namespaced_persistent_volume_claim(name).items)
        return retired


def object_path(obj: dict[str, Any]) -> str:
    """The API path of one of the objects the reconciler manages."""
    meta = obj["metadata"]
    return _PATHS[(obj["apiVersion"], obj["kind"])].format(name=meta["name"], namespace=meta.get("namespace", ""))


def _name(obj: Any) -> str:
    return str(obj.metadata.name)

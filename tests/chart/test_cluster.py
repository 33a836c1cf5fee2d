"""The chart's objects created for real on a control plane (server-side apply), its RBAC checked
with SubjectAccessReviews, the reconciler run with exactly the chart's rights, and an install
followed by an upgrade that keeps the SSH host key and the secrets."""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from quotas.loader import load_platform
from spawner.reconciler import TenantReconciler
from sshgateway import workspace_keys
from tests.bed.cluster import ControlPlane
from tests.chart.conftest import CHART, PRODUCTION, REPO, Helm, find

NS = "aidc"
SA = f"system:serviceaccount:{NS}"


@pytest.fixture(scope="session")
def applied(cluster: ControlPlane, helm: Helm, tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """The default values' objects in namespace aidc, the production ones in aidc-prod, applied."""
    for namespace, values in ((NS, ()), ("aidc-prod", (PRODUCTION,))):
        cluster.kubectl("create", "namespace", namespace)
        rendered = helm.template(*values, namespace=namespace)
        cluster.kubectl(
            "apply", "--server-side", "--field-manager=aidc-chart-test", "-n", namespace, "-f", "-", input=rendered
        )
    return helm.objects()


@pytest.fixture(scope="session")
def platform_file(applied: list[dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("platform") / "tenants.yaml"
    path.write_text(find(applied, "ConfigMap", "hub")["data"]["tenants.yaml"])
    return path


def _as(cluster: ControlPlane, user: str) -> client.ApiClient:
    api = cluster.api_client()
    api.set_default_header("Impersonate-User", user)
    return api


@pytest.fixture(scope="session")
def reconciled(cluster: ControlPlane, platform_file: Path) -> Iterator[TenantReconciler]:
    """`aidc reconcile` with the reconciler ServiceAccount's rights and nothing more."""
    platform = load_platform(str(platform_file), str(REPO / "images" / "catalog.yaml"))
    reconciler = TenantReconciler(_as(cluster, f"{SA}:aidc-reconciler"), platform, hub_namespace=NS)
    # the impersonation is in force: the reconciler's own rights, not the test's admin ones
    with pytest.raises(ApiException) as refused:
        client.CoreV1Api(reconciler.api).list_namespaced_secret("kube-system")
    assert refused.value.status == 403
    report = reconciler.reconcile()
    assert "Role aidc-demo/aidc-hub" in report.applied
    yield reconciler


def test_every_rendered_object_exists(cluster: ControlPlane, helm: Helm, applied: list[dict[str, Any]]) -> None:
    for namespace, values in ((NS, ()), ("aidc-prod", (PRODUCTION,))):
        for obj in helm.objects(*values, namespace=namespace):
            kind, name = obj["kind"].lower(), obj["metadata"]["name"]
            ns = [] if kind in ("clusterrole", "clusterrolebinding") else ["-n", namespace]
            proc = cluster.kubectl("get", kind, name, *ns, "-o", "name", check=False)
            assert proc.returncode == 0, f"{kind} {name} in {namespace}: {proc.stderr}"


def _allowed(
    cluster: ControlPlane, user: str, verb: str, resource: str, namespace: str = "", group: str = "", name: str = ""
) -> bool:
    """A SubjectAccessReview: may ``user`` (a ServiceAccount of the hub namespace) do this?"""
    spec = client.V1SubjectAccessReviewSpec(
        user=user,
        groups=["system:serviceaccounts", f"system:serviceaccounts:{NS}", "system:authenticated"],
        resource_attributes=client.V1ResourceAttributes(
            verb=verb, resource=resource, namespace=namespace, group=group, name=name
        ),
    )
    review = client.AuthorizationV1Api(cluster.api_client()).create_subject_access_review(
        client.V1SubjectAccessReview(spec=spec)
    )
    assert review.status is not None
    return bool(review.status.allowed)


def test_hub_may_run_workspaces_in_tenant_namespaces_only(cluster: ControlPlane, reconciled: TenantReconciler) -> None:
    hub = f"{SA}:hub"
    for verb, resource in (
        ("create", "pods"),
        ("delete", "pods"),
        ("create", "persistentvolumeclaims"),
        ("create", "services"),
        ("list", "events"),
    ):
        assert _allowed(cluster, hub, verb, resource, "aidc-demo"), f"hub cannot {verb} {resource} in aidc-demo"
    # one read-only watch of workspace pods and their events for every tenant namespace (docs/scale.md)
    for verb, resource in (("list", "pods"), ("watch", "pods"), ("list", "events"), ("watch", "events")):
        assert _allowed(cluster, hub, verb, resource, ""), f"hub cannot {verb} {resource} in all namespaces"
    refused = [
        ("get", "secrets", "kube-system"),
        ("get", "secrets", "aidc-demo"),
        ("get", "secrets", NS),
        ("list", "secrets", ""),
        ("create", "pods", "kube-system"),
        ("create", "pods", NS),
        ("create", "pods", "default"),
        ("update", "resourcequotas", "aidc-demo"),
        ("create", "rolebindings", "aidc-demo"),
        ("list", "namespaces", ""),
        # the cluster-wide watch reads; it changes nothing outside tenant namespaces
        ("delete", "pods", ""),
        ("delete", "pods", "kube-system"),
        ("create", "events", ""),
        ("patch", "pods", "default"),
    ]
    for verb, resource, namespace in refused:
        group = "rbac.authorization.k8s.io" if resource == "rolebindings" else ""
        assert not _allowed(cluster, hub, verb, resource, namespace, group), (
            f"hub may {verb} {resource} in {namespace or 'all namespaces'}"
        )


@pytest.mark.parametrize("account", ["sshgateway", "default"])
def test_ssh_gateway_and_proxy_have_no_kubernetes_rights(
    cluster: ControlPlane, reconciled: TenantReconciler, account: str
) -> None:
    # the proxy runs as the namespace's default account, without a token; the gateway as its own, without one too
    user = f"{SA}:{account}"
    for namespace in (NS, "aidc-demo", "kube-system", ""):
        for verb, resource in (
            ("get", "secrets"),
            ("list", "pods"),
            ("create", "pods"),
            ("get", "configmaps"),
            ("list", "services"),
        ):
            assert not _allowed(cluster, user, verb, resource, namespace), (
                f"{account} may {verb} {resource} in {namespace!r}"
            )


def test_reconciler_has_no_rights_on_secrets_or_workloads(cluster: ControlPlane, applied: list[dict[str, Any]]) -> None:
    user = f"{SA}:aidc-reconciler"
    for namespace in ("", "kube-system", "aidc-demo", NS):
        for verb, resource, group in (
            ("get", "secrets", ""),
            ("list", "secrets", ""),
            ("create", "pods", ""),
            ("get", "pods", ""),
            ("create", "deployments", "apps"),
        ):
            assert not _allowed(cluster, user, verb, resource, namespace, group), (
                f"the reconciler may {verb} {resource} in {namespace!r}"
            )
    # the Roles it may write (and escalate through) are the hub's `aidc-hub` only
    rbac = "rbac.authorization.k8s.io"
    for name, allowed in (("aidc-hub", True), ("admin-ish", False)):
        for verb in ("patch", "escalate", "bind"):
            got = _allowed(cluster, user, verb, "roles", "kube-system", rbac, name)
            assert got is allowed, f"the reconciler: {verb} role {name}"


def test_reconciler_retires_a_removed_tenant_with_its_own_rights(
    cluster: ControlPlane, reconciled: TenantReconciler
) -> None:
    config = reconciled.config
    more = dataclasses.replace(
        config, tenants={**config.tenants, "extra": dataclasses.replace(config.tenants["demo"], id="extra")}
    )
    TenantReconciler(reconciled.api, more, hub_namespace=NS).reconcile()
    assert _allowed(cluster, f"{SA}:hub", "create", "pods", "aidc-extra")
    report = TenantReconciler(reconciled.api, config, hub_namespace=NS).reconcile()
    assert list(report.removed_tenants) == ["aidc-extra"]
    assert not _allowed(cluster, f"{SA}:hub", "create", "pods", "aidc-extra")


def _secret(cluster: ControlPlane, namespace: str, name: str) -> dict[str, str]:
    data = client.CoreV1Api(cluster.api_client()).read_namespaced_secret(name, namespace).data or {}
    return {k: base64.b64decode(v).decode() for k, v in data.items()}


def test_upgrade_keeps_host_key_and_secrets(cluster: ControlPlane, cluster_helm: Helm, tmp_path: Path) -> None:
    ns = "aidc-release"
    # hooks (the reconcile Job) need a kubelet that finishes pods; this bed's KWOK pods never finish
    cluster_helm.run("install", "aidc", str(CHART), "-n", ns, "--create-namespace", "--no-hooks")
    before_ssh, before_hub = _secret(cluster, ns, "sshgateway"), _secret(cluster, ns, "hub")
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump({"hub": {"pollInterval": 10}, "sshGateway": {"replicas": 2}}))
    cluster_helm.run("upgrade", "aidc", str(CHART), "-n", ns, "--no-hooks", "--values", str(changed))
    after_ssh, after_hub = _secret(cluster, ns, "sshgateway"), _secret(cluster, ns, "hub")
    assert after_ssh == before_ssh
    assert after_hub == before_hub
    deployment = client.AppsV1Api(cluster.api_client()).read_namespaced_deployment("sshgateway", ns)
    assert deployment.spec.replicas == 2  # the upgrade did apply
    # what the gateway pod reads from the Secret's mount is its Ed25519 host key
    (tmp_path / workspace_keys.HOST_KEY_FILE).write_text(after_ssh["ssh_host_ed25519_key"])
    assert workspace_keys.load_host_key(str(tmp_path)).get_algorithm() == "ssh-ed25519"
    # without `lookup` finding the live Secret, every render makes new ones
    fresh = find(cluster_helm.objects(), "Secret", "sshgateway")["data"]
    assert base64.b64decode(fresh["ssh_host_ed25519_key"]).decode() != after_ssh["ssh_host_ed25519_key"]


def test_install_with_a_typo_fails_and_creates_nothing(
    cluster: ControlPlane, cluster_helm: Helm, tmp_path: Path
) -> None:
    typo = tmp_path / "typo.yaml"
    typo.write_text(yaml.safe_dump({"sshGateway": {"replica": 2}}))
    proc = cluster_helm.run(
        "install", "typo", str(CHART), "-n", "aidc-typo", "--create-namespace", "--values", str(typo), check=False
    )
    assert proc.returncode != 0
    assert "at '/sshGateway': additional properties 'replica' not allowed" in proc.stderr
    assert cluster.kubectl("get", "namespace", "aidc-typo", check=False).returncode != 0

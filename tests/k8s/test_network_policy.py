"""The `k8s` tier: who reaches a workspace pod, by the NetworkPolicies a real API server holds.

The reconciler's policies of the tenant namespaces and the chart's policies of the hub namespace
(rendered by helm, created in the bed's hub namespace) are read back from the API server and
evaluated with NetworkPolicy semantics (tests/bed/netpol.py): the bed has no network plugin to
enforce them. Hub, proxy and gateway pods carry the labels and named ports of the chart's
Deployments; workspace pods those TenantKubeSpawner gives them. Every pod has an address inside
the tenant namespaces' ``ipBlock`` (a network plugin that applies ipBlocks to pod addresses: the
strictest reading), so what keeps a pod out is the destination's ingress policy, not luck.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from kubernetes import client

from spawner.kube_objects import (
    PROFILE_LABEL,
    TENANT_LABEL,
    WORKSPACE_NOTEBOOK_PORT,
    WORKSPACE_SSHD_PORT,
    tenant_namespace,
)
from spawner.reconciler import TenantReconciler
from tests.bed.netpol import NAME_LABEL, Pod, admits, ingress_allows
from tests.chart.conftest import Helm, build_helm
from tests.k8s.conftest import HUB_NAMESPACE

LAB, STARTUP = tenant_namespace("lab"), tenant_namespace("startup")


@dataclass
class Network:
    policies: list[dict[str, Any]]
    namespaces: dict[str, dict[str, str]]
    hub: dict[str, Pod]  # the chart's pods by component

    def admits(self, source: Pod, destination: Pod, port: int, protocol: str = "TCP") -> bool:
        return admits(self.policies, self.namespaces, source, destination, port, protocol)

    def ingress_allows(self, source: Pod, destination: Pod, port: int, protocol: str = "TCP") -> bool:
        return ingress_allows(self.policies, self.namespaces, source, destination, port, protocol)


_addresses = iter(f"10.244.{i // 250}.{i % 250 + 2}" for i in range(10_000))


def workspace(tenant: str, user: str) -> Pod:
    """A workspace pod as TenantKubeSpawner labels it (KubeSpawner's pod labels and the tenant's)."""
    labels = {
        "app": "jupyterhub",
        "heritage": "jupyterhub",
        "app.kubernetes.io/name": "jupyterhub",
        "app.kubernetes.io/managed-by": "kubespawner",
        "app.kubernetes.io/component": "singleuser-server",
        "component": "singleuser-server",
        "hub.jupyter.org/username": user,
        "hub.jupyter.org/servername": "",
        TENANT_LABEL: tenant,
        PROFILE_LABEL: "cpu",
    }
    return Pod(tenant_namespace(tenant), labels, ip=next(_addresses))


def _chart_pod(deployment: dict[str, Any]) -> Pod:
    template = deployment["spec"]["template"]
    ports = {p["name"]: p["containerPort"] for c in template["spec"]["containers"] for p in c.get("ports", [])}
    return Pod(HUB_NAMESPACE, template["metadata"]["labels"], ip=next(_addresses), named_ports=ports)


@pytest.fixture(scope="module")
def network(api: client.ApiClient, reconciler: TenantReconciler) -> Iterator[Network]:
    chart = Helm(build_helm()).objects(namespace=HUB_NAMESPACE)
    networking = client.NetworkingV1Api(api)
    created = [o for o in chart if o["kind"] == "NetworkPolicy"]
    for policy in created:
        networking.create_namespaced_network_policy(HUB_NAMESPACE, policy)
    try:
        policies = [
            api.sanitize_for_serialization(p) for p in networking.list_network_policy_for_all_namespaces().items
        ]
        namespaces = {
            str(ns.metadata.name): dict(ns.metadata.labels or {})
            for ns in client.CoreV1Api(api).list_namespace().items
            if ns.metadata is not None
        }
        hub = {
            d["metadata"]["name"]: _chart_pod(d)
            for d in chart
            if d["kind"] == "Deployment" and d["metadata"]["name"] in ("hub", "proxy", "sshgateway")
        }
        yield Network(policies, namespaces, hub)
    finally:
        for policy in created:
            networking.delete_namespaced_network_policy(policy["metadata"]["name"], HUB_NAMESPACE)


def test_the_policies_come_from_the_api_server(network: Network) -> None:
    names = {(p["metadata"]["namespace"], p["metadata"]["name"]) for p in network.policies}
    for ns in (LAB, STARTUP):
        assert {(ns, "aidc-default-deny"), (ns, "aidc-ingress-from-hub"), (ns, "aidc-egress")} <= names
    assert {(HUB_NAMESPACE, "hub"), (HUB_NAMESPACE, "proxy"), (HUB_NAMESPACE, "sshgateway")} <= names


def test_namespaces_carry_the_labels_the_policies_select(network: Network) -> None:
    # the reconciler's policies find the hub namespace by the name label the API server sets on every namespace
    for name, labels in network.namespaces.items():
        assert labels.get(NAME_LABEL) == name
    # the gateway's egress finds workspaces by the tenant label of their namespace; no other namespace has it
    assert {n for n, labels in network.namespaces.items() if TENANT_LABEL in labels} == {LAB, STARTUP}


def test_only_the_gateway_reaches_a_workspaces_sshd(network: Network) -> None:
    target = workspace("lab", "alice")
    gateway = network.hub["sshgateway"]
    assert network.admits(gateway, target, WORKSPACE_SSHD_PORT)
    assert network.admits(network.hub["sshgateway"], workspace("startup", "dave"), WORKSPACE_SSHD_PORT)
    gateway_like = dict(gateway.labels)
    others = {
        "the hub": network.hub["hub"],
        "the proxy": network.hub["proxy"],
        "a pod of the same tenant": workspace("lab", "bob"),
        "another tenant's pod": workspace("startup", "dave"),
        "a kube-system pod": Pod("kube-system", {"k8s-app": "kube-dns"}, ip=next(_addresses)),
        "a gateway-labelled pod of another tenant": Pod(STARTUP, gateway_like, ip=next(_addresses)),
        "a gateway-labelled pod of the same tenant": Pod(LAB, gateway_like, ip=next(_addresses)),
        "a gateway-labelled pod in default": Pod("default", gateway_like, ip=next(_addresses)),
    }
    # the workspace's own namespace's policies keep them out, whatever their own egress allows
    let_in = [who for who, pod in others.items() if network.ingress_allows(pod, target, WORKSPACE_SSHD_PORT)]
    assert let_in == []
    assert not network.admits(gateway, target, WORKSPACE_SSHD_PORT, protocol="UDP")


def test_the_hub_and_the_proxy_reach_the_jupyter_server_and_the_gateway_does_not(network: Network) -> None:
    target = workspace("lab", "alice")
    assert network.admits(network.hub["hub"], target, WORKSPACE_NOTEBOOK_PORT)
    assert network.admits(network.hub["proxy"], target, WORKSPACE_NOTEBOOK_PORT)
    gateway = network.hub["sshgateway"]
    assert not network.ingress_allows(gateway, target, WORKSPACE_NOTEBOOK_PORT)
    assert not network.admits(gateway, target, WORKSPACE_NOTEBOOK_PORT)
    assert not network.ingress_allows(workspace("lab", "bob"), target, WORKSPACE_NOTEBOOK_PORT)
    assert not network.ingress_allows(workspace("startup", "dave"), target, WORKSPACE_NOTEBOOK_PORT)


@pytest.mark.parametrize("port", [22, 80, 8000, 8080, 8081])
def test_no_other_port_of_a_workspace_is_reachable(network: Network, port: int) -> None:
    target = workspace("lab", "alice")
    sources = [*network.hub.values(), workspace("lab", "bob"), workspace("startup", "dave")]
    assert [s.labels.get("component") for s in sources if network.ingress_allows(s, target, port)] == []


def test_the_gateway_still_reaches_the_hub_api_and_the_proxy(network: Network) -> None:
    gateway, hub, proxy = network.hub["sshgateway"], network.hub["hub"], network.hub["proxy"]
    assert hub.named_ports and proxy.named_ports
    assert network.admits(gateway, hub, hub.named_ports["http"])
    assert network.admits(gateway, proxy, proxy.named_ports["http"])
    # and nothing more of the hub (the quotas service is reached through the proxy)
    assert not network.admits(gateway, hub, hub.named_ports["quotas"])

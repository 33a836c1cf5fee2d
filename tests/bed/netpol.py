"""NetworkPolicy semantics (networking.k8s.io/v1) as a pure function, for tests.

The test bed's control plane has no network plugin, so nothing enforces the NetworkPolicies the
reconciler and the chart create there. Tests read them back from the API server and ask
:func:`admits` whether one pod may open a connection to another, as an enforcing plugin decides:

- A pod is *isolated* for ingress (egress) when a policy of its own namespace selects it
  (``spec.podSelector``) and lists ``Ingress`` (``Egress``) in ``policyTypes``. Without
  ``policyTypes`` the API server's default applies: ``Ingress`` always, ``Egress`` when the
  policy has egress rules.
- A connection needs both sides: the source's egress (unless the source is not isolated for
  egress) and the destination's ingress (unless it is not isolated for ingress). Policies are
  additive: one rule of one selecting policy that admits it is enough.
- A rule admits a peer when one of its ``from``/``to`` entries matches it (absent or empty: every
  peer) and one of its ``ports`` matches (absent or empty: every port). An entry with only
  ``podSelector`` means pods of the policy's own namespace; only ``namespaceSelector``, every pod
  of the matching namespaces; both in one entry, pods matching the one in namespaces matching the
  other (AND, where two entries would be OR).
- ``ipBlock`` entries match a pod only when the test gives the pod an ``ip`` inside the CIDR and
  outside its ``except`` list: whether pod IPs fall under ipBlocks is up to the network plugin
  (Kubernetes leaves it undefined), so a pod without an ``ip`` models a plugin where they never do.
- A port entry: ``protocol`` (default TCP), ``port`` (absent: every port of the protocol) up to
  ``endPort``; a named port is resolved against the destination pod's named container ports, and
  is an error when the test did not say which ports the destination names.
- Label selectors: ``matchLabels`` and ``matchExpressions`` (In, NotIn, Exists, DoesNotExist),
  all of them ANDed; an empty selector matches everything.

Namespaces carry ``kubernetes.io/metadata.name`` as the API server sets it on every namespace.
Not modelled: hostNetwork pods, traffic from outside the cluster, Services (address pods directly).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

NAME_LABEL = "kubernetes.io/metadata.name"


@dataclass(frozen=True)
class Pod:
    """One end of a connection: its namespace and labels; its IP (for ipBlock peers) and named
    container ports (for named ports in rules) where the test cares."""

    namespace: str
    labels: Mapping[str, str]
    ip: str | None = None
    named_ports: Mapping[str, int] | None = None


def selector_matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """A LabelSelector against a set of labels: every matchLabels pair and every matchExpression."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
        if operator in ("In", "NotIn") and not values:
            raise ValueError(f"matchExpression {expression} needs values for {operator}")
        if operator in ("Exists", "DoesNotExist") and values:
            raise ValueError(f"matchExpression {expression} must not have values for {operator}")
        if operator == "In":
            ok = key in labels and labels[key] in values
        elif operator == "NotIn":
            ok = key not in labels or labels[key] not in values
        elif operator == "Exists":
            ok = key in labels
        elif operator == "DoesNotExist":
            ok = key not in labels
        else:
            raise ValueError(f"matchExpression {expression}: unknown operator {operator!r}")
        if not ok:
            return False
    return True


def policy_types(policy: Mapping[str, Any]) -> list[str]:
    """``spec.policyTypes``, or what the API server defaults it to when absent."""
    spec = policy["spec"]
    if spec.get("policyTypes"):
        return list(spec["policyTypes"])
    return ["Ingress", "Egress"] if spec.get("egress") else ["Ingress"]


def ingress_allows(
    policies: Iterable[Mapping[str, Any]],
    namespaces: Mapping[str, Mapping[str, str]],
    source: Pod,
    destination: Pod,
    port: int,
    protocol: str = "TCP",
) -> bool:
    """Whether the destination's namespace's policies let ``source`` in on ``port``."""
    return _allows(policies, namespaces, "Ingress", source, destination, port, protocol)


def egress_allows(
    policies: Iterable[Mapping[str, Any]],
    namespaces: Mapping[str, Mapping[str, str]],
    source: Pod,
    destination: Pod,
    port: int,
    protocol: str = "TCP",
) -> bool:
    """Whether the source's namespace's policies let it out to ``destination`` on ``port``."""
    return _allows(policies, namespaces, "Egress", source, destination, port, protocol)


def admits(
    policies: Iterable[Mapping[str, Any]],
    namespaces: Mapping[str, Mapping[str, str]],
    source: Pod,
    destination: Pod,
    port: int,
    protocol: str = "TCP",
) -> bool:
    """Whether ``source`` may open a connection to ``port`` of ``destination``: both its egress and
    the destination's ingress allow it. ``policies``: the NetworkPolicies of every namespace
    (each with ``metadata.namespace``); ``namespaces``: name -> labels of every namespace."""
    policies = list(policies)
    return egress_allows(policies, namespaces, source, destination, port, protocol) and ingress_allows(
        policies, namespaces, source, destination, port, protocol
    )


def _allows(
    policies: Iterable[Mapping[str, Any]],
    namespaces: Mapping[str, Mapping[str, str]],
    direction: str,
    source: Pod,
    destination: Pod,
    port: int,
    protocol: str,
) -> bool:
    subject, peer = (destination, source) if direction == "Ingress" else (source, destination)
    selecting = [
        p
        for p in policies
        if _namespace_of(p) == subject.namespace
        and direction in policy_types(p)
        and selector_matches(p["spec"]["podSelector"], subject.labels)
    ]
    if not selecting:
        return True  # not isolated in this direction
    key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    for policy in selecting:
        for rule in policy["spec"].get(key) or []:
            peers = rule.get(peers_key) or []
            if peers and not any(_peer_matches(e, _namespace_of(policy), peer, namespaces) for e in peers):
                continue
            ports = rule.get("ports") or []
            if not ports or any(_port_matches(e, destination, port, protocol) for e in ports):
                return True
    return False


def _namespace_of(policy: Mapping[str, Any]) -> str:
    namespace = policy["metadata"].get("namespace")
    if not namespace:
        raise ValueError(
            f"NetworkPolicy {policy['metadata'].get('name')} has no metadata.namespace: set the namespace it"
            " is created in (helm template leaves it out)"
        )
    return str(namespace)


def _namespace_labels(namespaces: Mapping[str, Mapping[str, str]], name: str) -> dict[str, str]:
    if name not in namespaces:
        raise ValueError(f"namespace {name} is not among the namespaces given: {sorted(namespaces)}")
    return {**namespaces[name], NAME_LABEL: name}


def _peer_matches(
    entry: Mapping[str, Any], policy_namespace: str, pod: Pod, namespaces: Mapping[str, Mapping[str, str]]
) -> bool:
    pod_selector, namespace_selector, ip_block = (
        entry.get("podSelector"),
        entry.get("namespaceSelector"),
        entry.get("ipBlock"),
    )
    if ip_block is not None:
        if pod_selector is not None or namespace_selector is not None:
            raise ValueError(f"peer {entry}: ipBlock cannot be combined with selectors")
        return _in_block(ip_block, pod.ip)
    if pod_selector is None and namespace_selector is None:
        raise ValueError(f"peer {entry} has none of podSelector, namespaceSelector, ipBlock")
    if namespace_selector is None:
        in_namespace = pod.namespace == policy_namespace
    else:
        in_namespace = selector_matches(namespace_selector, _namespace_labels(namespaces, pod.namespace))
    return in_namespace and (pod_selector is None or selector_matches(pod_selector, pod.labels))


def _in_block(block: Mapping[str, Any], ip: str | None) -> bool:
    if ip is None:
        return False
    address = ipaddress.ip_address(ip)
    network = ipaddress.ip_network(block["cidr"])
    if address.version != network.version or address not in network:
        return False
    return not any(
        address.version == (excluded := ipaddress.ip_network(cidr)).version and address in excluded
        for cidr in block.get("except") or []
    )


def _port_matches(entry: Mapping[str, Any], destination: Pod, port: int, protocol: str) -> bool:
    if entry.get("protocol", "TCP") != protocol:
        return False
    wanted = entry.get("port")
    if wanted is None:
        return True
    if isinstance(wanted, str) and not wanted.isdigit():
        if "endPort" in entry:
            raise ValueError(f"port {entry}: endPort needs a numeric port")
        if destination.named_ports is None:
            raise ValueError(
                f"port {entry} is named: give the destination pod's named_ports to resolve it"
                f" (destination in {destination.namespace}, labels {dict(destination.labels)})"
            )
        return destination.named_ports.get(wanted) == port
    first = int(wanted)
    return first <= port <= int(entry.get("endPort", first))

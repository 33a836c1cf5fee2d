"""The test bed's NetworkPolicy evaluator (tests/bed/netpol.py), case by case against the semantics
documented at https://kubernetes.io/docs/concepts/services-networking/network-policies/."""

from __future__ import annotations

from typing import Any

import pytest

from tests.bed.netpol import Pod, admits, egress_allows, ingress_allows, policy_types, selector_matches

NAMESPACES = {
    "web": {"team": "web", "env": "prod"},
    "db": {"team": "db", "env": "prod"},
    "dev": {"team": "web", "env": "dev"},
    "bare": {},
}
FRONT = Pod("web", {"app": "front"})
BACK = Pod("web", {"app": "back"})
DB = Pod("db", {"app": "db"})
DB_CLIENT = Pod("db", {"app": "client"})
DEV_FRONT = Pod("dev", {"app": "front"})
BARE = Pod("bare", {})


def policy(namespace: str, spec: dict[str, Any], name: str = "p") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace}, "spec": spec}


def ingress(namespace: str, *rules: dict[str, Any], selector: dict[str, Any] | None = None) -> dict[str, Any]:
    return policy(namespace, {"podSelector": selector or {}, "policyTypes": ["Ingress"], "ingress": list(rules)})


DENY_DB = policy("db", {"podSelector": {}, "policyTypes": ["Ingress"]})
FROM_FRONT_IN_PROD = {  # one peer: both selectors, AND
    "from": [{"namespaceSelector": {"matchLabels": {"env": "prod"}}, "podSelector": {"matchLabels": {"app": "front"}}}]
}
FROM_FRONT_OR_PROD = {  # two peers: OR
    "from": [
        {"namespaceSelector": {"matchLabels": {"env": "prod"}}},
        {"podSelector": {"matchLabels": {"app": "front"}}},
    ]
}

# (what it shows, policies, source, destination, port, protocol, admitted)
CASES: list[tuple[str, list[dict[str, Any]], Pod, Pod, int, str, bool]] = [
    ("no policy: every pod reaches every port", [], FRONT, DB, 5432, "TCP", True),
    ("a policy in another namespace does not isolate", [ingress("web")], FRONT, DB, 5432, "TCP", True),
    ("selected with no rules: default deny", [DENY_DB], FRONT, DB, 5432, "TCP", False),
    ("default deny holds for the namespace's own pods", [DENY_DB], DB_CLIENT, DB, 5432, "TCP", False),
    (
        "podSelector that does not select the pod: not isolated",
        [ingress("db", selector={"matchLabels": {"app": "other"}})],
        FRONT,
        DB,
        5432,
        "TCP",
        True,
    ),
    ("empty rule: every source, every port", [ingress("db", {})], BARE, DB, 1, "TCP", True),
    ("from: [] is every source too", [ingress("db", {"from": [], "ports": []})], BARE, DB, 1, "TCP", True),
    (
        "podSelector alone means the policy's own namespace",
        [ingress("db", {"from": [{"podSelector": {"matchLabels": {"app": "front"}}}]})],
        FRONT,
        DB,
        5432,
        "TCP",
        False,
    ),
    (
        "... and admits matching pods there",
        [ingress("db", {"from": [{"podSelector": {"matchLabels": {"app": "client"}}}]})],
        DB_CLIENT,
        DB,
        5432,
        "TCP",
        True,
    ),
    (
        "empty podSelector alone: every pod of the policy's namespace, no other",
        [ingress("db", {"from": [{"podSelector": {}}]})],
        FRONT,
        DB,
        5432,
        "TCP",
        False,
    ),
    (
        "empty podSelector: own namespace",
        [ingress("db", {"from": [{"podSelector": {}}]})],
        DB_CLIENT,
        DB,
        1,
        "TCP",
        True,
    ),
    (
        "empty namespaceSelector: every namespace",
        [ingress("db", {"from": [{"namespaceSelector": {}}]})],
        BARE,
        DB,
        5432,
        "TCP",
        True,
    ),
    (
        "namespaceSelector alone: every pod of matching namespaces",
        [ingress("db", {"from": [{"namespaceSelector": {"matchLabels": {"team": "web"}}}]})],
        BACK,
        DB,
        5432,
        "TCP",
        True,
    ),
    (
        "both selectors in one peer (AND): right pod, right namespace",
        [ingress("db", FROM_FRONT_IN_PROD)],
        FRONT,
        DB,
        1,
        "TCP",
        True,
    ),
    ("AND: right pod, wrong namespace", [ingress("db", FROM_FRONT_IN_PROD)], DEV_FRONT, DB, 1, "TCP", False),
    ("AND: wrong pod, right namespace", [ingress("db", FROM_FRONT_IN_PROD)], BACK, DB, 1, "TCP", False),
    ("two peers (OR): the namespace alone is enough", [ingress("db", FROM_FRONT_OR_PROD)], BACK, DB, 1, "TCP", True),
    (
        "two peers (OR): the podSelector peer is of the policy's namespace",
        [ingress("db", FROM_FRONT_OR_PROD)],
        DEV_FRONT,
        DB,
        1,
        "TCP",
        False,
    ),
    (
        "the namespace's name label, as the API server sets it",
        [ingress("db", {"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "dev"}}}]})],
        DEV_FRONT,
        DB,
        1,
        "TCP",
        True,
    ),
    (
        "matchExpressions In",
        [
            ingress(
                "db",
                {
                    "from": [
                        {
                            "namespaceSelector": {
                                "matchExpressions": [{"key": "env", "operator": "In", "values": ["dev", "qa"]}]
                            }
                        }
                    ]
                },
            )
        ],
        DEV_FRONT,
        DB,
        1,
        "TCP",
        True,
    ),
    (
        "matchExpressions NotIn",
        [
            ingress(
                "db",
                {
                    "from": [
                        {
                            "namespaceSelector": {
                                "matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["dev"]}]
                            }
                        }
                    ]
                },
            )
        ],
        DEV_FRONT,
        DB,
        1,
        "TCP",
        False,
    ),
    (
        "matchExpressions NotIn admits a namespace without the key",
        [
            ingress(
                "db",
                {
                    "from": [
                        {
                            "namespaceSelector": {
                                "matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["dev"]}]
                            }
                        }
                    ]
                },
            )
        ],
        BARE,
        DB,
        1,
        "TCP",
        True,
    ),
    (
        "matchExpressions Exists",
        [
            ingress(
                "db", {"from": [{"namespaceSelector": {"matchExpressions": [{"key": "team", "operator": "Exists"}]}}]}
            )
        ],
        BARE,
        DB,
        1,
        "TCP",
        False,
    ),
    (
        "matchExpressions DoesNotExist",
        [
            ingress(
                "db",
                {"from": [{"namespaceSelector": {"matchExpressions": [{"key": "team", "operator": "DoesNotExist"}]}}]},
            )
        ],
        BARE,
        DB,
        1,
        "TCP",
        True,
    ),
    (
        "matchLabels and matchExpressions are ANDed",
        [
            ingress(
                "db",
                {
                    "from": [
                        {
                            "namespaceSelector": {
                                "matchLabels": {"team": "web"},
                                "matchExpressions": [{"key": "env", "operator": "In", "values": ["prod"]}],
                            }
                        }
                    ]
                },
            )
        ],
        DEV_FRONT,
        DB,
        1,
        "TCP",
        False,
    ),
    ("a numeric port", [ingress("db", {"ports": [{"port": 5432}]})], FRONT, DB, 5432, "TCP", True),
    ("another port", [ingress("db", {"ports": [{"port": 5432}]})], FRONT, DB, 5433, "TCP", False),
    ("the protocol defaults to TCP", [ingress("db", {"ports": [{"port": 53}]})], FRONT, DB, 53, "UDP", False),
    (
        "a protocol without a port: all its ports",
        [ingress("db", {"ports": [{"protocol": "UDP"}]})],
        FRONT,
        DB,
        9,
        "UDP",
        True,
    ),
    (
        "endPort: inside the range",
        [ingress("db", {"ports": [{"port": 8000, "endPort": 8010}]})],
        FRONT,
        DB,
        8010,
        "TCP",
        True,
    ),
    (
        "endPort: past the range",
        [ingress("db", {"ports": [{"port": 8000, "endPort": 8010}]})],
        FRONT,
        DB,
        8011,
        "TCP",
        False,
    ),
    (
        "a named port of the destination",
        [ingress("db", {"ports": [{"port": "pg"}]})],
        FRONT,
        Pod("db", {"app": "db"}, named_ports={"pg": 5432}),
        5432,
        "TCP",
        True,
    ),
    (
        "a named port the destination does not have",
        [ingress("db", {"ports": [{"port": "pg"}]})],
        FRONT,
        Pod("db", {"app": "db"}, named_ports={}),
        5432,
        "TCP",
        False,
    ),
    (
        "peers and ports of one rule both have to match",
        [ingress("db", {"from": [{"podSelector": {}}], "ports": [{"port": 5432}]}, {"ports": [{"port": 9187}]})],
        FRONT,
        DB,
        5432,
        "TCP",
        False,
    ),
    (
        "policies add up: a second policy's rule is enough",
        [DENY_DB, ingress("db", {"ports": [{"port": 5432}]})],
        FRONT,
        DB,
        5432,
        "TCP",
        True,
    ),
    (
        "ipBlock: a pod without an IP does not match",
        [ingress("db", {"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]})],
        FRONT,
        DB,
        1,
        "TCP",
        False,
    ),
    (
        "ipBlock: a pod with an IP in the CIDR",
        [ingress("db", {"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]})],
        Pod("web", {}, ip="10.1.2.3"),
        DB,
        1,
        "TCP",
        True,
    ),
    (
        "ipBlock: except",
        [ingress("db", {"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}]})],
        Pod("web", {}, ip="10.1.2.3"),
        DB,
        1,
        "TCP",
        False,
    ),
    (
        "no policyTypes: Ingress, though the policy has only egress rules",
        [policy("db", {"podSelector": {}, "egress": [{}]})],
        FRONT,
        DB,
        1,
        "TCP",
        False,
    ),
    (
        "policyTypes Egress only: ingress stays open",
        [policy("db", {"podSelector": {}, "policyTypes": ["Egress"]})],
        FRONT,
        DB,
        1,
        "TCP",
        True,
    ),
    # egress: the source's namespace's policies
    (
        "egress default deny stops the source",
        [policy("web", {"podSelector": {}, "policyTypes": ["Egress"]})],
        FRONT,
        DB,
        5432,
        "TCP",
        False,
    ),
    (
        "no policyTypes and no egress rules: egress not isolated",
        [policy("web", {"podSelector": {}, "ingress": []})],
        FRONT,
        DB,
        5432,
        "TCP",
        True,
    ),
    (
        "no policyTypes with egress rules: egress isolated",
        [policy("web", {"podSelector": {}, "egress": [{"ports": [{"port": 53, "protocol": "UDP"}]}]})],
        FRONT,
        DB,
        5432,
        "TCP",
        False,
    ),
    (
        "egress to a namespace on a port",
        [
            policy(
                "web",
                {
                    "podSelector": {},
                    "policyTypes": ["Egress"],
                    "egress": [
                        {"to": [{"namespaceSelector": {"matchLabels": {"team": "db"}}}], "ports": [{"port": 5432}]}
                    ],
                },
            )
        ],
        FRONT,
        DB,
        5432,
        "TCP",
        True,
    ),
    (
        "egress podSelector alone: the source's namespace, not the destination's",
        [
            policy(
                "web",
                {
                    "podSelector": {},
                    "policyTypes": ["Egress"],
                    "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "db"}}}]}],
                },
            )
        ],
        FRONT,
        DB,
        5432,
        "TCP",
        False,
    ),
    (
        "egress allows, ingress refuses: refused",
        [
            policy("web", {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]}),
            DENY_DB,
        ],
        FRONT,
        DB,
        5432,
        "TCP",
        False,
    ),
    (
        "egress policy selecting other pods only",
        [policy("web", {"podSelector": {"matchLabels": {"app": "back"}}, "policyTypes": ["Egress"]})],
        FRONT,
        DB,
        5432,
        "TCP",
        True,
    ),
]


@pytest.mark.parametrize(
    ("policies", "source", "destination", "port", "protocol", "admitted"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_admits(
    policies: list[dict[str, Any]], source: Pod, destination: Pod, port: int, protocol: str, admitted: bool
) -> None:
    assert admits(policies, NAMESPACES, source, destination, port, protocol) is admitted


def test_the_two_sides_are_separate_questions() -> None:
    policies = [policy("web", {"podSelector": {}, "policyTypes": ["Egress"]}), ingress("db", {})]
    assert not egress_allows(policies, NAMESPACES, FRONT, DB, 5432)
    assert ingress_allows(policies, NAMESPACES, FRONT, DB, 5432)


@pytest.mark.parametrize(
    ("spec", "types"),
    [
        ({"podSelector": {}}, ["Ingress"]),
        ({"podSelector": {}, "egress": []}, ["Ingress"]),
        ({"podSelector": {}, "egress": [{}]}, ["Ingress", "Egress"]),
        ({"podSelector": {}, "policyTypes": ["Egress"], "ingress": [{}]}, ["Egress"]),
    ],
)
def test_policy_types_default_as_the_api_server_does(spec: dict[str, Any], types: list[str]) -> None:
    assert policy_types({"spec": spec}) == types


@pytest.mark.parametrize(
    ("selector", "labels", "matches"),
    [
        ({}, {}, True),
        ({"matchLabels": {}}, {"a": "1"}, True),
        ({"matchLabels": {"a": "1"}}, {"a": "1", "b": "2"}, True),
        ({"matchLabels": {"a": "1", "b": "3"}}, {"a": "1", "b": "2"}, False),
        ({"matchExpressions": [{"key": "a", "operator": "In", "values": ["1"]}]}, {}, False),
        ({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}, {}, True),
        ({"matchExpressions": [{"key": "a", "operator": "Exists"}]}, {"a": ""}, True),
        ({"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]}, {"a": ""}, False),
    ],
)
def test_selector(selector: dict[str, Any], labels: dict[str, str], matches: bool) -> None:
    assert selector_matches(selector, labels) is matches


@pytest.mark.parametrize(
    ("policies", "destination", "message"),
    [
        ([ingress("db", {"ports": [{"port": "pg"}]})], DB, "is named: give the destination pod's named_ports"),
        ([{"metadata": {"name": "p"}, "spec": {"podSelector": {}}}], DB, "has no metadata.namespace"),
        ([ingress("db", {"from": [{}]})], DB, "has none of podSelector, namespaceSelector, ipBlock"),
        (
            [ingress("db", {"from": [{"namespaceSelector": {"matchExpressions": [{"key": "a", "operator": "Gt"}]}}]})],
            DB,
            "unknown operator 'Gt'",
        ),
        (
            [ingress("db", {"from": [{"namespaceSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}}]})],
            DB,
            "needs values",
        ),
    ],
)
def test_what_it_cannot_decide_is_an_error(policies: list[dict[str, Any]], destination: Pod, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        admits(policies, NAMESPACES, FRONT, destination, 1)


def test_an_unknown_namespace_is_an_error_where_a_selector_looks_at_it() -> None:
    with pytest.raises(ValueError, match="namespace nowhere is not among the namespaces given"):
        admits([ingress("db", {"from": [{"namespaceSelector": {}}]})], NAMESPACES, Pod("nowhere", {}), DB, 1)

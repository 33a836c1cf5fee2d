"""Pure Kubernetes builders: per-profile pod settings and tenant namespace objects, against literal dicts."""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from types import MappingProxyType

import pytest

from quotas.model import GpuType, Image, Sharing
from spawner.kube_objects import (
    make_cluster_queue,
    make_hub_role_binding,
    make_namespace,
    make_network_policies,
    make_queue_policy,
    make_resource_flavors,
    make_resource_quota,
    profile_settings,
    tenant_namespace,
    tenant_objects,
)

from .builders import A100_MIG, CPU_SMALL, H100_X4, SNU, with_quota

H100 = GpuType("H100", "nvidia.com/gpu", "NVIDIA-H100-80GB-HBM3")
A100 = GpuType("A100", "nvidia.com/gpu", "NVIDIA-A100-SXM4-80GB")
MIG = GpuType("A100-1g.10gb", "nvidia.com/mig-1g.10gb", "NVIDIA-A100-SXM4-80GB")
GPU_TYPES = {"H100": H100, "A100": A100, "A100-1g.10gb": MIG}
PYTORCH = Image("pytorch", "PyTorch", "aidc/pytorch:2026.11")
GiB = 2**30


def test_tenant_namespace_follows_the_template() -> None:
    assert tenant_namespace("snu-ai") == "aidc-snu-ai"
    assert tenant_namespace("snu-ai", "jhub-{tenant}") == "jhub-snu-ai"


def test_gpu_profile_settings() -> None:
    assert profile_settings("aidc-snu-ai", SNU, H100_X4, H100, PYTORCH) == {
        "namespace": "aidc-snu-ai",
        "image": "aidc/pytorch:2026.11",
        "cpu_guarantee": 32.0,
        "cpu_limit": 32.0,
        "mem_guarantee": 256 * GiB,
        "mem_limit": 256 * GiB,
        "extra_resource_guarantees": {"nvidia.com/gpu": "4"},
        "extra_resource_limits": {"nvidia.com/gpu": "4"},
        "node_selector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": str(128 * GiB)}}],
        "volume_mounts": [{"name": "dshm", "mountPath": "/dev/shm"}],
        "extra_labels": {"aidc.io/tenant": "snu-ai", "aidc.io/profile": "h100-x4"},
    }


def test_mig_profile_requests_the_mig_resource() -> None:
    settings = profile_settings("aidc-snu-ai", SNU, A100_MIG, MIG, PYTORCH)
    assert settings["extra_resource_limits"] == {"nvidia.com/mig-1g.10gb": "1"}
    assert settings["node_selector"] == {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}


def test_cpu_profile_clears_every_gpu_setting() -> None:
    settings = profile_settings("aidc-snu-ai", SNU, CPU_SMALL, None, PYTORCH)
    assert settings["extra_resource_limits"] == {} and settings["extra_resource_guarantees"] == {}
    assert settings["node_selector"] == {} and settings["tolerations"] == []
    assert settings["volumes"][0]["emptyDir"]["sizeLimit"] == str(4 * GiB)


def test_builders_do_not_mutate_their_inputs() -> None:
    gpu_types, allowed = dict(GPU_TYPES), {"hub": "hub", "proxy": "proxy"}
    first = tenant_objects(SNU, gpu_types, "aidc-{tenant}", "aidc", "hub", allowed)
    first[1]["spec"]["hard"]["pods"] = "999"  # a caller editing the result changes nothing shared
    assert gpu_types == GPU_TYPES and allowed == {"hub": "hub", "proxy": "proxy"}
    assert tenant_objects(SNU, gpu_types, "aidc-{tenant}", "aidc", "hub", allowed)[1]["spec"]["hard"]["pods"] == "10"


def test_namespace_enforces_restricted_pod_security() -> None:
    assert make_namespace("aidc-snu-ai", SNU) == {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": "aidc-snu-ai",
            "labels": {
                "aidc.io/tenant": "snu-ai",
                "app.kubernetes.io/managed-by": "aidc-hub",
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/warn": "restricted",
            },
            "annotations": {"aidc.io/display-name": "SNU AI Lab", "aidc.io/kind": "university"},
        },
    }


def test_resource_quota_adds_gpu_types_that_share_a_resource() -> None:
    quota = make_resource_quota("aidc-snu-ai", SNU, GPU_TYPES)
    assert quota["spec"]["hard"] == {
        "requests.nvidia.com/gpu": "12",  # H100: 8 + A100: 4
        "requests.nvidia.com/mig-1g.10gb": "7",
        "requests.cpu": "96",
        "limits.cpu": "96",
        "requests.memory": str(768 * GiB),
        "limits.memory": str(768 * GiB),
        "pods": "10",
    }


def test_resource_quota_grants_zero_of_resources_the_tenant_lacks() -> None:
    tenant = with_quota(gpus={"H100": 2}, cpu=Decimal("0.5"), memory=None, servers=None, storage=Decimal(10 * 2**40))
    hard = make_resource_quota("aidc-snu-ai", tenant, GPU_TYPES)["spec"]["hard"]
    assert hard == {
        "requests.nvidia.com/gpu": "2",
        "requests.nvidia.com/mig-1g.10gb": "0",
        "requests.cpu": "500m",
        "limits.cpu": "500m",
        "requests.storage": str(10 * 2**40),
    }


def test_hub_role_binding_names_the_hub_service_account_only() -> None:
    binding = make_hub_role_binding("aidc-snu-ai", SNU, "aidc", "hub")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "hub", "namespace": "aidc"}]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "aidc-hub"}


def test_tenant_objects_namespace_first_and_all_in_it() -> None:
    objects = tenant_objects(SNU, GPU_TYPES, "aidc-{tenant}", "aidc", "hub", {"hub": "hub", "proxy": "proxy"})
    assert [o["kind"] for o in objects] == [
        "Namespace",
        "ResourceQuota",
        "LimitRange",
        "NetworkPolicy",
        "NetworkPolicy",
        "NetworkPolicy",
        "Role",
        "RoleBinding",
    ]
    assert all(o["metadata"].get("namespace", "aidc-snu-ai") == "aidc-snu-ai" for o in objects)
    egress = next(o for o in objects if o["metadata"]["name"] == "aidc-egress")["spec"]["egress"]
    assert {"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.169.254/32"]}}]} in egress
    ingress = next(o for o in objects if o["metadata"]["name"] == "aidc-ingress-from-hub")["spec"]["ingress"]
    assert [peer["podSelector"]["matchLabels"]["component"] for peer in ingress[0]["from"]] == ["hub", "proxy"]
    role = next(o for o in objects if o["kind"] == "Role")
    resources = {r for rule in role["rules"] for r in rule["resources"]}
    assert resources == {
        "pods",
        "persistentvolumeclaims",
        "services",
        "events",
        "workloads",
        "localqueues/pendingworkloads",
    }
    assert "secrets" not in resources


def test_each_hub_component_reaches_only_its_port_of_a_workspace() -> None:
    components = {"hub": "hub", "proxy": "proxy", "sshgateway": "sshgateway"}
    policies = make_network_policies("aidc-snu-ai", SNU, "aidc", components)
    ingress = next(p for p in policies if p["metadata"]["name"] == "aidc-ingress-from-hub")["spec"]
    hub_ns = {"matchLabels": {"kubernetes.io/metadata.name": "aidc"}}
    assert ingress == {
        "podSelector": {},
        "policyTypes": ["Ingress"],
        "ingress": [
            {
                "from": [{"namespaceSelector": hub_ns, "podSelector": {"matchLabels": {"component": "sshgateway"}}}],
                "ports": [{"protocol": "TCP", "port": 2222}],
            },
            {
                "from": [
                    {"namespaceSelector": hub_ns, "podSelector": {"matchLabels": {"component": "hub"}}},
                    {"namespaceSelector": hub_ns, "podSelector": {"matchLabels": {"component": "proxy"}}},
                ],
                "ports": [{"protocol": "TCP", "port": 8888}],
            },
        ],
    }
    with pytest.raises(ValueError, match=r"allowed_from names components \['jobs'\]"):
        make_network_policies("aidc-snu-ai", SNU, "aidc", {**components, "jobs": "jobs"})


def test_tenant_datasets_are_mounted_read_only() -> None:
    from quotas.model import Dataset

    imagenet = Dataset("imagenet", "open-imagenet", "/datasets/imagenet")
    settings = profile_settings("aidc-snu-ai", SNU, CPU_SMALL, None, PYTORCH, (imagenet,))
    assert settings["volumes"][1:] == [
        {"name": "dataset-imagenet", "persistentVolumeClaim": {"claimName": "open-imagenet", "readOnly": True}}
    ]
    assert settings["volume_mounts"][1:] == [
        {"name": "dataset-imagenet", "mountPath": "/datasets/imagenet", "readOnly": True}
    ]


def test_kueue_cluster_queue_is_the_tenants_share_of_each_gpu_type() -> None:
    tenant = dataclasses.replace(
        with_quota(gpus=MappingProxyType({"H100": 8, "A100-1g.10gb": 7}), cpu=Decimal("96.5"), memory=None),
        sharing=Sharing(
            cohort="universities", borrow=MappingProxyType({"H100": 4}), lend=MappingProxyType({"H100": 2})
        ),
    )
    queue = make_cluster_queue(tenant, GPU_TYPES)
    assert queue["metadata"]["name"] == "aidc-snu-ai"
    spec = queue["spec"]
    assert spec["cohortName"] == "universities" and spec["queueingStrategy"] == "StrictFIFO"
    assert spec["namespaceSelector"] == {"matchLabels": {"aidc.io/tenant": "snu-ai"}}
    assert spec["preemption"] == {
        "reclaimWithinCohort": "Any",
        "withinClusterQueue": "Never",
        "borrowWithinCohort": {"policy": "Never"},
    }
    cpu, gpus = spec["resourceGroups"]
    assert cpu["flavors"][0]["resources"] == [
        {"name": "cpu", "nominalQuota": "96500m"},
        {"name": "memory", "nominalQuota": "100Pi"},  # no memory ceiling
    ]
    assert gpus["coveredResources"] == ["nvidia.com/gpu", "nvidia.com/mig-1g.10gb"]
    flavors = {f["name"]: f["resources"] for f in gpus["flavors"]}
    assert flavors["aidc-h100"] == [
        {"name": "nvidia.com/gpu", "nominalQuota": "8", "borrowingLimit": "4", "lendingLimit": "2"},
        {"name": "nvidia.com/mig-1g.10gb", "nominalQuota": "0"},
    ]
    assert flavors["aidc-a100"][0] == {"name": "nvidia.com/gpu", "nominalQuota": "0", "borrowingLimit": "0"}
    assert flavors["aidc-a100-1g-10gb"][1] == {
        "name": "nvidia.com/mig-1g.10gb",
        "nominalQuota": "7",
        "borrowingLimit": "0",
    }


def test_with_kueue_the_tenant_gets_its_queues_and_the_quota_only_storage_and_pods() -> None:
    objects = tenant_objects(SNU, GPU_TYPES, "aidc-{tenant}", "aidc", "hub", {}, kueue=True)
    kinds = [o["kind"] for o in objects]
    assert kinds[:3] == ["ClusterQueue", "Namespace", "LocalQueue"]
    local = objects[2]
    assert local["metadata"]["namespace"] == "aidc-snu-ai" and local["spec"] == {"clusterQueue": "aidc-snu-ai"}
    quota = next(o for o in objects if o["kind"] == "ResourceQuota")
    assert set(quota["spec"]["hard"]) <= {"requests.storage", "pods"}
    assert quota["spec"]["hard"]["pods"] == str(SNU.quota.servers + SNU.queue.max_length)  # type: ignore[operator]
    flavors = make_resource_flavors(GPU_TYPES)
    assert [f["metadata"]["name"] for f in flavors] == ["aidc-cpu", "aidc-a100", "aidc-a100-1g-10gb", "aidc-h100"]
    assert flavors[3]["spec"] == {"nodeLabels": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}}
    policy, binding = make_queue_policy()
    assert "kueue.x-k8s.io/queue-name" in policy["spec"]["validations"][0]["expression"]
    assert binding["spec"]["validationActions"] == ["Deny"]

"""quotas.policy.admit: one table of spawn requests against a tenant's ceiling and current usage."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from decimal import Decimal
from types import MappingProxyType

import pytest

from quotas.model import Tenant
from quotas.policy import Decision, Holding, Request, Usage, admit

from .builders import A100_MIG, A100_X1, CPU_SMALL, H100_X1, H100_X4, H100_X8, SNU, GiB, hold, usage, with_quota

# (tenant, request, usage, expected code, substrings the reason must contain)
CASES = [
    pytest.param(SNU, Request("alice", "", H100_X1), usage(), "ok", [], id="allowed"),
    pytest.param(SNU, Request("kim", "", H100_X1), usage(), "ok", [], id="admin-is-member"),
    pytest.param(
        SNU,
        Request("mallory", "", CPU_SMALL),
        usage(),
        "not_member",
        ["You (mallory) are not a member of tenant snu-ai", "Ask a tenant admin (kim) to add you"],
        id="not-member",
    ),
    pytest.param(
        SNU, Request("dan", "", CPU_SMALL, groups=("snu-students",)), usage(), "ok", [], id="member-through-group"
    ),
    pytest.param(
        SNU, Request("dan", "", CPU_SMALL, groups=("other",)), usage(), "not_member", ["You (dan)"], id="other-group"
    ),
    pytest.param(
        SNU,
        Request("alice", "", H100_X8),
        usage(),
        "profile",
        [
            "Profile h100-x8 (h100 x8) is not available to tenant snu-ai",
            "(it may use: cpu-small, h100-x1, h100-x4, a100-x1, a100-mig)",
            "ask a tenant admin (kim) to allow it",
        ],
        id="profile-not-allowed",
    ),
    pytest.param(
        SNU,
        Request("alice", "", CPU_SMALL),
        usage(hold("alice", CPU_SMALL)),
        "running",
        ["Your default server is already running"],
        id="default-server-running",
    ),
    pytest.param(
        SNU,
        Request("alice", "train", CPU_SMALL),
        usage(hold("alice", H100_X1, "train")),
        "running",
        ["Server 'train' is already running"],
        id="named-server-running",
    ),
    pytest.param(
        SNU,
        Request("alice", "train", CPU_SMALL),
        usage(hold("alice", CPU_SMALL), hold("bob", CPU_SMALL, "train")),
        "ok",
        [],
        id="same-server-name-other-user",
    ),
    pytest.param(
        SNU,
        Request("alice", "b", CPU_SMALL),
        usage(hold("alice", CPU_SMALL), hold("alice", CPU_SMALL, "a"), hold("bob", CPU_SMALL)),
        "servers_per_user",
        [
            "You already run 2 of the 2 servers each person may run in tenant snu-ai (default, a)",
            "Stop one of them or ask a tenant admin (kim) for more",
        ],
        id="servers-per-user-named-servers-count",
    ),
    pytest.param(
        with_quota(servers=3),
        Request("kim", "", CPU_SMALL),
        usage(hold("alice", CPU_SMALL), hold("alice", CPU_SMALL, "a"), hold("bob", CPU_SMALL)),
        "servers",
        ["Tenant snu-ai runs 3 of 3 servers (alice: 2, bob: 1)", "Stop a server or ask a tenant admin (kim)"],
        id="tenant-servers-reached",
    ),
    pytest.param(
        SNU,
        Request("carol", "", H100_X1),
        usage(hold("alice", H100_X4), hold("bob", H100_X4)),
        "gpus",
        [
            "You asked for 1 H100 GPU (profile h100-x1)",
            "tenant snu-ai uses 8 of 8 H100 GPUs (alice: 4, bob: 4)",
            "Stop a server, pick a smaller profile, or ask a tenant admin (kim) for more.",
        ],
        id="h100-exhausted",
    ),
    pytest.param(
        SNU,
        Request("carol", "", H100_X4),
        usage(hold("alice", H100_X4), hold("bob", H100_X1), hold("alice", A100_X1, "a")),
        "gpus",
        ["You asked for 4 H100 GPUs (profile h100-x4)", "uses 5 of 8 H100 GPUs (alice: 4, bob: 1)"],
        id="h100-not-enough-left",
    ),
    pytest.param(
        SNU,
        Request("carol", "", H100_X4),
        usage(hold("alice", H100_X4)),
        "ok",
        [],
        id="last-gpus-boundary",
    ),
    pytest.param(
        with_quota(gpus=MappingProxyType({"H100": 8})),
        Request("alice", "", A100_X1),
        usage(),
        "gpus",
        [
            "You asked for 1 A100 GPU (profile a100-x1); tenant snu-ai has no A100 GPUs in its quota",
            "Pick another profile or ask a tenant admin (kim)",
        ],
        id="gpu-type-not-in-quota",
    ),
    pytest.param(
        SNU,
        Request("carol", "", A100_MIG),
        usage(*(hold(f"u{i}", A100_MIG) for i in range(1, 7))),
        "ok",
        [],
        id="mig-last-slice",
    ),
    pytest.param(
        SNU,
        Request("carol", "", A100_MIG),
        usage(*(hold(f"u{i}", A100_MIG) for i in range(1, 8))),
        "gpus",
        ["You asked for 1 A100-1g.10gb GPU (profile a100-mig)", "uses 7 of 7 A100-1g.10gb GPUs", "2 others"],
        id="mig-exhausted",
    ),
    pytest.param(
        SNU,
        Request("alice", "", H100_X1),
        usage(*(hold(f"u{i}", H100_X1) for i in range(1, 9))),
        "gpus",
        ["uses 8 of 8 H100 GPUs (u1: 1, u2: 1, u3: 1, u4: 1, u5: 1, 3 others)"],
        id="breakdown-top-five",
    ),
    pytest.param(
        with_quota(cpu=Decimal(40)),
        Request("bob", "", H100_X1),
        usage(hold("alice", H100_X4)),
        "ok",
        [],
        id="cpu-boundary",
    ),
    pytest.param(
        with_quota(cpu=Decimal(39)),
        Request("bob", "", H100_X1),
        usage(hold("alice", H100_X4)),
        "cpu",
        [
            "You asked for 8 CPUs of CPU (profile h100-x1)",
            "tenant snu-ai uses 32 CPUs of 39 CPUs (alice: 32 CPUs)",
            "ask a tenant admin (kim) for more",
        ],
        id="cpu-ceiling",
    ),
    pytest.param(
        with_quota(cpu=Decimal("2.4")),
        Request("bob", "", CPU_SMALL),
        usage(hold("alice", dataclasses.replace(CPU_SMALL, cpu=Decimal("0.500")))),
        "cpu",
        ["uses 0.5 CPUs of 2.4 CPUs (alice: 0.5 CPUs)"],
        id="cpu-fractional",
    ),
    pytest.param(
        with_quota(memory=300 * GiB),
        Request("bob", "", H100_X1),
        usage(hold("alice", H100_X4)),
        "memory",
        ["You asked for 64 GiB of memory (profile h100-x1)", "uses 256 GiB of 300 GiB (alice: 256 GiB)"],
        id="memory-ceiling",
    ),
    pytest.param(
        SNU,
        Request("alice", "", H100_X1),
        usage(gpu_hours=2000),
        "budget",
        [
            "Tenant snu-ai has used 2,000.0 of its 2,000.0 GPU-hours for November 2026",
            "when the budget resets on 2026-12-01 (UTC); CPU-only profiles still work",
            "Ask a tenant admin (kim) if you need more",
        ],
        id="budget-exhausted",
    ),
    pytest.param(SNU, Request("alice", "", CPU_SMALL), usage(gpu_hours=2500), "ok", [], id="budget-cpu-only-allowed"),
    pytest.param(SNU, Request("alice", "", H100_X1), usage(gpu_hours="1999.9"), "ok", [], id="budget-not-yet-used-up"),
    pytest.param(
        with_quota(servers=None, servers_per_user=None, cpu=None, memory=None, gpu_hours_per_month=None),
        Request("alice", "c", H100_X1),
        usage(hold("alice", H100_X4), hold("alice", CPU_SMALL, "a"), hold("alice", CPU_SMALL, "b"), gpu_hours=10**6),
        "ok",
        [],
        id="no-limits-but-gpus",
    ),
    pytest.param(
        dataclasses.replace(SNU, admins=()),
        Request("alice", "", H100_X1),
        usage(hold("bob", H100_X4), hold("carol", H100_X4)),
        "gpus",
        ["or ask a platform admin for more"],
        id="no-tenant-admin",
    ),
]


@pytest.mark.parametrize(("tenant", "request_", "usage_", "code", "texts"), CASES)
def test_admit(tenant: Tenant, request_: Request, usage_: Usage, code: str, texts: Sequence[str]) -> None:
    decision = admit(tenant, request_, usage_)
    assert decision.code == code, decision.reason
    assert decision.allowed is (code == "ok")
    assert bool(decision) is decision.allowed
    for text in texts:
        assert text in decision.reason
    if decision.allowed:
        assert decision.reason == ""
        assert decision.holding is not None
    else:
        assert decision.holding is None


def test_allowed_decision_holds_what_the_profile_asks() -> None:
    decision = admit(SNU, Request("alice", "train", H100_X4), usage(hold("bob", H100_X1)))
    assert decision == Decision(True)
    assert decision.holding == Holding(
        tenant="snu-ai",
        user="alice",
        server="train",
        profile="h100-x4",
        gpus={"H100": 4},
        cpu=Decimal(32),
        memory=256 * GiB,
    )
    assert decision.holding.label == "alice/train"


def test_cpu_only_holding_holds_no_gpus() -> None:
    decision = admit(SNU, Request("alice", "", CPU_SMALL), usage())
    assert decision.holding is not None
    assert decision.holding.gpus == {}
    assert decision.holding.label == "alice"


def test_rules_apply_in_order_membership_first() -> None:
    # everything is wrong at once: the first rule (membership) is the one reported
    decision = admit(with_quota(servers=0), Request("mallory", "", H100_X8), usage(gpu_hours=10**6))
    assert decision.code == "not_member"


def test_budget_without_period_name_says_this_month() -> None:
    decision = admit(SNU, Request("alice", "", H100_X1), Usage(gpu_hours=Decimal(2000)))
    assert decision.code == "budget"
    assert "GPU-hours this month" in decision.reason
    assert "when the budget resets at the start of next month;" in decision.reason

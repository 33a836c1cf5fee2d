"""Plain-data builders shared by the unit tests: profiles, a tenant, holdings and usage."""

from __future__ import annotations

import dataclasses
from datetime import date
from decimal import Decimal
from types import MappingProxyType
from typing import Any

from quotas.model import Profile, Quota, Tenant
from quotas.policy import Holding, Usage

GiB = Decimal(2**30)


def profile(ident: str, cpu: int, memory_gib: int, gpu_type: str | None = None, gpu_count: int = 0) -> Profile:
    return Profile(
        id=ident,
        display_name=ident.replace("-", " "),
        cpu=Decimal(cpu),
        memory=memory_gib * GiB,
        image="pytorch",
        gpu_type=gpu_type,
        gpu_count=gpu_count,
    )


CPU_SMALL = profile("cpu-small", 2, 8)
H100_X1 = profile("h100-x1", 8, 64, "H100", 1)
H100_X4 = profile("h100-x4", 32, 256, "H100", 4)
H100_X8 = profile("h100-x8", 64, 512, "H100", 8)
A100_X1 = profile("a100-x1", 8, 64, "A100", 1)
A100_MIG = profile("a100-mig", 4, 16, "A100-1g.10gb", 1)

QUOTA = Quota(
    gpus=MappingProxyType({"H100": 8, "A100": 4, "A100-1g.10gb": 7}),
    servers=10,
    servers_per_user=2,
    cpu=Decimal(96),
    memory=768 * GiB,
    gpu_hours_per_month=Decimal(2000),
)

SNU = Tenant(
    id="snu-ai",
    display_name="SNU AI Lab",
    kind="university",
    member_users=frozenset({"alice", "bob", "carol", *(f"u{i}" for i in range(1, 9))}),
    member_groups=frozenset({"snu-students"}),
    admins=("kim",),
    profiles=("cpu-small", "h100-x1", "h100-x4", "a100-x1", "a100-mig"),
    quota=QUOTA,
)


def with_quota(**changes: Any) -> Tenant:
    """:data:`SNU` with some of its ceilings changed."""
    return dataclasses.replace(SNU, quota=dataclasses.replace(QUOTA, **changes))


def hold(user: str, p: Profile, server: str = "", tenant: str = "snu-ai") -> Holding:
    return Holding(tenant=tenant, user=user, server=server, profile=p.id, gpus=dict(p.gpus), cpu=p.cpu, memory=p.memory)


def usage(*holdings: Holding, gpu_hours: int | str = 0) -> Usage:
    return Usage(
        holdings=holdings, gpu_hours=Decimal(gpu_hours), period_name="November 2026", period_resets=date(2026, 12, 1)
    )

"""Admission latency at data-center scale: how long does one ``quotas.policy.admit`` take?

Builds a deterministic platform (``random.Random(seed)``) of 500 tenants and 10,000
users with varied ceilings over eight GPU types (full H100/H200/A100/L40S and MIG
slices), fills it with realistic current usage (each tenant at 30-60 % of its GPUs,
about one tenant in ten at its ceiling, some over their GPU-hour budget), then times
every decision of 20,000 spawn requests from random users individually with
``time.perf_counter_ns``. Allowed and refused decisions are reported separately
(refusals build the "who uses what" breakdown). The store around the decision (one
database transaction per reservation) is measured by ``benchmarks/quotas.py``.

    .venv/bin/python benchmarks/admission.py                          # print the table
    .venv/bin/python benchmarks/admission.py --write benchmarks/README.md  # and record it

Target: p99 of one decision below 1 ms.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import platform
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType

HERE = Path(__file__).resolve().parent
# `python benchmarks/admission.py` puts benchmarks/ first on sys.path, where benchmarks/quotas.py
# would shadow the `quotas` package; the repository root holds it and `benchmarks._readme`.
sys.path[:] = [p for p in sys.path if Path(p or os.curdir).resolve() != HERE]
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))

from benchmarks._readme import cpus, markers, write_section  # noqa: E402
from quotas.model import Profile, Quota, Tenant  # noqa: E402
from quotas.policy import Decision, Holding, Request, Usage, admit  # noqa: E402

TARGET_P99_NS = 1_000_000
SECTION = "admission"
BEGIN, END = markers(SECTION)
GiB = Decimal(2**30)
NOW = datetime(2026, 11, 17, 12, 0, tzinfo=UTC)

FULL_GPUS = ("H100", "H200", "A100", "L40S")
MIG_SLICES = ("A100-1g.10gb", "A100-3g.40gb", "H100-1g.10gb", "H100-3g.40gb")
KINDS = ("startup", "university", "company")


def _profiles() -> dict[str, Profile]:
    out = {
        "cpu-small": Profile("cpu-small", "CPU only, small", Decimal(2), 8 * GiB, "base"),
        "cpu-large": Profile("cpu-large", "CPU only, large", Decimal(16), 64 * GiB, "base"),
    }
    for gpu in FULL_GPUS:
        for n in (1, 2, 4, 8):
            ident = f"{gpu.lower()}-x{n}"
            out[ident] = Profile(ident, f"{n} x {gpu}", Decimal(8 * n), 64 * n * GiB, "pytorch", gpu, n)
    for mig in MIG_SLICES:
        ident = f"{mig.lower().replace('.', '-')}"
        out[ident] = Profile(ident, f"{mig} slice", Decimal(4), 16 * GiB, "pytorch", mig, 1)
    return out


PROFILES = _profiles()


@dataclass
class Scenario:
    """The generated platform: tenants, who belongs where, and what is held now."""

    tenants: dict[str, Tenant]
    users: list[str]
    groups_of: dict[str, tuple[str, ...]]
    tenants_of: dict[str, list[str]]
    usage: dict[str, Usage]
    at_ceiling: set[str] = field(default_factory=set)

    @property
    def holdings(self) -> int:
        return sum(len(u.holdings) for u in self.usage.values())


def generate(seed: int = 2026, tenants: int = 500, users: int = 10_000) -> Scenario:
    """A deterministic platform of ``tenants`` tenants and ``users`` users with current usage."""
    rng = random.Random(seed)
    names = [f"user{i:05d}" for i in range(users)]
    ids = [f"t{i:03d}-{rng.choice(KINDS)[:3]}" for i in range(tenants)]

    # tenant sizes follow a long tail: a few big universities and companies, many small startups
    weights = [1 / (rank + 1) ** 0.8 for rank in range(tenants)]
    rng.shuffle(weights)
    members: dict[str, set[str]] = {t: set() for t in ids}
    for user, t in zip(names, rng.choices(ids, weights, k=users), strict=True):
        members[t].add(user)
    for user in rng.sample(names, users // 20):  # 5 % of people are in a second tenant
        members[rng.choice(ids)].add(user)
    for t in ids:  # no empty tenants
        if not members[t]:
            members[t].add(rng.choice(names))

    built: dict[str, Tenant] = {}
    groups_of: dict[str, tuple[str, ...]] = {u: () for u in names}
    for t in ids:
        people = sorted(members[t])
        # about one GPU per member, spread over one to three types, plus MIG slices for teaching
        types = rng.sample(FULL_GPUS, rng.randint(1, 3))
        granted: dict[str, int] = {}
        for gpu in types:
            granted[gpu] = min(256, max(2, round(len(people) * rng.uniform(0.4, 1.2) / len(types))))
        for mig in rng.sample(MIG_SLICES, rng.randint(0, 2)):
            granted[mig] = min(112, 7 * max(1, round(len(people) / 10)))
        scale = max(1, round(len(people) / 20))
        allowed = ["cpu-small", "cpu-large"] + [
            p.id for p in PROFILES.values() if p.gpu_type in granted and p.gpu_count <= granted[p.gpu_type]
        ]
        full = sum(n for g, n in granted.items() if g in FULL_GPUS)
        slices = sum(n for g, n in granted.items() if g in MIG_SLICES)
        quota = Quota(
            gpus=MappingProxyType(granted),
            servers=max(8, len(people) + 4),
            servers_per_user=rng.choice((1, 2, 2, 3)),
            # room for every GPU's CPUs and memory, plus 4 CPUs and 16 GiB a member for CPU-only work
            cpu=Decimal(8 * full + 4 * slices + 4 * len(people) + 32),
            memory=(64 * full + 16 * slices + 16 * len(people) + 128) * GiB,
            gpu_hours_per_month=Decimal(rng.choice((100, 250, 500, 1000)) * scale),
        )
        # a quarter of the tenants also admit a JupyterHub group (a class, a department)
        member_groups: frozenset[str] = frozenset()
        member_users = set(people)
        if rng.random() < 0.25:
            group = f"{t}-group"
            member_groups = frozenset({group})
            for user in rng.sample(people, len(people) // 3):
                member_users.discard(user)
                groups_of[user] = (*groups_of[user], group)
        admins = tuple(sorted(rng.sample(people, min(2, len(people)))))
        kind = {"sta": "startup", "uni": "university", "com": "company"}[t.split("-")[1]]
        built[t] = Tenant(t, f"Tenant {t}", kind, frozenset(member_users), member_groups, admins, tuple(allowed), quota)

    tenants_of: dict[str, list[str]] = {u: [] for u in names}
    for t in ids:
        for user in sorted(members[t]):
            tenants_of[user].append(t)

    usage: dict[str, Usage] = {}
    at_ceiling: set[str] = set()
    servers_of: dict[str, set[str]] = {u: set() for u in names}  # server names are per person, across tenants
    for t in ids:
        tenant = built[t]
        full_ceiling = rng.random() < 0.1
        target = 1.0 if full_ceiling else rng.uniform(0.3, 0.6)
        holdings = _fill(rng, tenant, sorted(members[t]), servers_of, target)
        budget = tenant.quota.gpu_hours_per_month or Decimal(0)
        share = rng.uniform(1.0, 1.2) if rng.random() < 0.05 else rng.uniform(0.0, 0.9)  # 5 % spent their budget
        usage[t] = Usage(tuple(holdings), budget * Decimal(f"{share:.3f}"), "November 2026", date(2026, 12, 1))
        if full_ceiling:
            at_ceiling.add(t)
    return Scenario(built, names, groups_of, tenants_of, usage, at_ceiling)


def pick_profile(rng: random.Random, tenant: Tenant) -> Profile:
    """What people ask for: mostly one GPU, sometimes 2, 4 or 8, one request in ten CPU-only."""
    if rng.random() < 0.1:
        return PROFILES[rng.choice(("cpu-small", "cpu-large"))]
    gpu_profiles = [PROFILES[p] for p in tenant.profiles if PROFILES[p].gpu_type]
    count = rng.choices((1, 2, 4, 8), (60, 25, 12, 3))[0]
    return rng.choice([p for p in gpu_profiles if p.gpu_count == count] or gpu_profiles)


def _fill(
    rng: random.Random, tenant: Tenant, people: list[str], servers_of: dict[str, set[str]], target: float
) -> list[Holding]:
    """Servers of the tenant's people until ``target`` of its GPUs is held, inside every ceiling.

    The same rules as :func:`admit`, with running totals so that generating the big
    tenants stays linear; :func:`check` verifies the result against ``admit`` itself.
    """
    quota = tenant.quota
    holdings: list[Holding] = []
    gpus: Counter[str] = Counter()
    per_user: Counter[str] = Counter()
    cpu, memory = Decimal(0), Decimal(0)
    ceiling = sum(quota.gpus.values())

    def fits(user: str, profile: Profile) -> bool:
        return (
            per_user[user] < (quota.servers_per_user or 10**9)
            and len(holdings) < (quota.servers or 10**9)
            and all(gpus[g] + n <= quota.gpus.get(g, 0) for g, n in profile.gpus.items())
            and cpu + profile.cpu <= (quota.cpu if quota.cpu is not None else cpu + profile.cpu)
            and memory + profile.memory <= (quota.memory if quota.memory is not None else memory + profile.memory)
        )

    attempts = 0
    while sum(gpus.values()) < target * ceiling and attempts < 6 * len(people) + 100:
        attempts += 1
        user = rng.choice(people)
        profile = pick_profile(rng, tenant)
        if target >= 1.0 and attempts > 3 * len(people) + 50:
            profile = min((PROFILES[p] for p in tenant.profiles if PROFILES[p].gpu_type), key=lambda p: p.gpu_count)
        if not fits(user, profile):
            continue
        server = next_server_name(servers_of[user])
        servers_of[user].add(server)
        holdings.append(Holding(tenant.id, user, server, profile.id, dict(profile.gpus), profile.cpu, profile.memory))
        gpus.update(profile.gpus)
        per_user[user] += 1
        cpu += profile.cpu
        memory += profile.memory
    return holdings


def check(scenario: Scenario) -> None:
    """Every generated holding is one that ``admit`` allows against the holdings before it."""
    for tenant_id, usage in scenario.usage.items():
        tenant = scenario.tenants[tenant_id]
        for i, h in enumerate(usage.holdings):
            request = Request(h.user, h.server, PROFILES[h.profile], scenario.groups_of[h.user])
            decision = admit(tenant, request, Usage(usage.holdings[:i]))
            if not decision.allowed:
                raise AssertionError(f"generated holding {h} is not admissible: {decision.reason}")


def verify(scenario: Scenario, requests: Sequence[tuple[Tenant, Request]], decisions: Sequence[Decision]) -> None:
    """No allowed decision may break a ceiling: numbers of a policy that lets everything in are worthless."""
    for (tenant, request), decision in zip(requests, decisions, strict=True):
        if not decision.allowed or decision.holding is None:
            continue
        quota, usage, profile = tenant.quota, scenario.usage[tenant.id], request.profile
        held = (*usage.holdings, decision.holding)
        broken = []
        for gpu_type in profile.gpus:
            used = sum(h.gpus.get(gpu_type, 0) for h in held)
            if used > quota.gpus.get(gpu_type, 0):
                broken.append(f"{used} {gpu_type} GPUs of {quota.gpus.get(gpu_type, 0)}")
        if quota.servers is not None and len(held) > quota.servers:
            broken.append(f"{len(held)} servers of {quota.servers}")
        mine = sum(1 for h in held if h.user == request.user)
        if quota.servers_per_user is not None and mine > quota.servers_per_user:
            broken.append(f"{mine} servers of {quota.servers_per_user} per person")
        if quota.cpu is not None and sum(h.cpu for h in held) > quota.cpu:
            broken.append("CPU")
        if quota.memory is not None and sum(h.memory for h in held) > quota.memory:
            broken.append("memory")
        budget = quota.gpu_hours_per_month
        if profile.gpus and budget is not None and usage.gpu_hours >= budget:
            broken.append("GPU-hour budget")
        if broken:
            raise AssertionError(
                f"admit allowed {request.user} profile {profile.id} in tenant {tenant.id} over its ceiling:"
                f" {'; '.join(broken)}"
            )


def next_server_name(taken: set[str]) -> str:
    """The default server ("") if it is free, else the first free ``s1``, ``s2``, ..."""
    if "" not in taken:
        return ""
    return next(f"s{i}" for i in range(1, len(taken) + 2) if f"s{i}" not in taken)


def make_requests(scenario: Scenario, count: int, seed: int = 7) -> list[tuple[Tenant, Request]]:
    """``count`` spawn requests from random users, for a profile their tenant allows."""
    rng = random.Random(seed)
    running: dict[str, set[str]] = {}
    for usage in scenario.usage.values():
        for h in usage.holdings:
            running.setdefault(h.user, set()).add(h.server)
    out = []
    for _ in range(count):
        user = rng.choice(scenario.users)
        tenant = scenario.tenants[rng.choice(scenario.tenants_of[user])]
        server = next_server_name(running.get(user, set()))  # as JupyterHub names servers: per person
        out.append((tenant, Request(user, server, pick_profile(rng, tenant), scenario.groups_of[user])))
    return out


def time_admit(scenario: Scenario, requests: Sequence[tuple[Tenant, Request]]) -> list[tuple[int, Decision]]:
    """Each decision timed on its own, against the tenant's current usage."""
    clock = time.perf_counter_ns
    usage = scenario.usage
    out = []
    for tenant, request in requests:
        u = usage[tenant.id]
        start = clock()
        decision = admit(tenant, request, u)
        out.append((clock() - start, decision))
    return out


def summarize(samples: Sequence[int]) -> dict[str, float]:
    """p50, p99, max and mean in microseconds (nearest-rank percentiles)."""
    if not samples:
        return {"n": 0, "p50": math.nan, "p99": math.nan, "max": math.nan, "mean": math.nan}
    ordered = sorted(samples)

    def rank(q: float) -> float:
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)] / 1000

    return {
        "n": len(ordered),
        "p50": rank(0.50),
        "p99": rank(0.99),
        "max": ordered[-1] / 1000,
        "mean": sum(ordered) / len(ordered) / 1000,
    }


def _rows(label: str, timed: list[tuple[int, Decision]]) -> list[tuple[str, dict[str, float]]]:
    return [
        (f"{label}, all", summarize([ns for ns, _ in timed])),
        (f"{label}, allowed", summarize([ns for ns, d in timed if d.allowed])),
        (f"{label}, refused", summarize([ns for ns, d in timed if not d.allowed])),
    ]


def machine() -> str:
    load = f", load average {os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else ""
    return f"{cpus()}{load}, Python {platform.python_version()} ({platform.python_implementation()}), {platform.system()} {platform.release()}"


def run(seed: int, tenants: int, users: int, count: int, log: Callable[[str], None] = print) -> str:
    """Generate, warm up, measure; return the Markdown results section."""
    started = time.perf_counter()
    scenario = generate(seed, tenants, users)
    check(scenario)
    requests = make_requests(scenario, count, seed + 1)
    log(
        f"generated {len(scenario.tenants)} tenants, {len(scenario.users)} users, {scenario.holdings} holdings"
        f" in {time.perf_counter() - started:.1f} s"
    )
    time_admit(scenario, requests[: min(2000, count)])  # warm-up
    gc.collect()
    admitted = time_admit(scenario, requests)
    verify(scenario, requests, [d for _, d in admitted])

    per_tenant = [len(u.holdings) for u in scenario.usage.values()]
    full_gpus = sum(n for t in scenario.tenants.values() for n in t.quota.gpus.values())
    held_gpus = sum(sum(h.gpus.values()) for u in scenario.usage.values() for h in u.holdings)
    codes = Counter(d.code for _, d in admitted)
    # admit reads every holding of the tenant: show the cost where there are most (the top 2 % of tenants)
    busy = max(10, sorted(per_tenant)[int(len(per_tenant) * 0.98)])
    big = [
        ns
        for (tenant, _), (ns, _) in zip(requests, admitted, strict=True)
        if len(scenario.usage[tenant.id].holdings) >= busy
    ]
    rows = _rows("`admit`", admitted) + [(f"`admit`, tenants running ≥ {busy} servers", summarize(big))]
    p99 = summarize([ns for ns, _ in admitted])["p99"]
    verdict = "meets" if p99 * 1000 < TARGET_P99_NS else "MISSES"

    lines = [
        f"Recorded {date.today().isoformat()} on {machine()}.",
        "",
        f"Data (seed {seed}): {len(scenario.tenants):,} tenants, {len(scenario.users):,} users, {scenario.holdings:,} running"
        f" servers (per tenant: median {sorted(per_tenant)[len(per_tenant) // 2]}, max {max(per_tenant)}),"
        f" {held_gpus} of {full_gpus} granted GPUs and slices held ({held_gpus / full_gpus:.0%}),"
        f" {len(scenario.at_ceiling)} tenants filled to their ceiling. {count:,} requests from random users.",
        "",
        "| path | decisions | p50 (µs) | p99 (µs) | max (µs) | mean (µs) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, s in rows:
        lines.append(f"| {label} | {s['n']:,} | {s['p50']:.1f} | {s['p99']:.1f} | {s['max']:.1f} | {s['mean']:.1f} |")
    lines += [
        "",
        "Decisions by code (`admit`): " + ", ".join(f"{code} {n:,}" for code, n in codes.most_common()) + ".",
        "",
        f"Target p99 < {TARGET_P99_NS / 1000:,.0f} µs: {verdict} it ({p99:.1f} µs).",
        "The transaction around each decision (reserve, release) is measured by `benchmarks/quotas.py`.",
    ]
    log(f"done in {time.perf_counter() - started:.1f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--tenants", type=int, default=500)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument(
        "--write", metavar="PATH", type=Path, help="record the results in this README, between the markers"
    )
    args = parser.parse_args(argv)
    try:
        section = run(args.seed, args.tenants, args.users, args.requests, log=lambda m: print(m, file=sys.stderr))
    except AssertionError as e:
        print(f"admission benchmark: the policy is wrong, nothing recorded: {e}", file=sys.stderr)
        return 1
    print(section)
    if args.write:
        write_section(args.write, SECTION, section)
        print(f"recorded in {args.write}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

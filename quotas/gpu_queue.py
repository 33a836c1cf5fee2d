"""The GPU queue: who runs now, who waits (and where in line), whose borrowed GPUs are reclaimed.

Pure functions of plain data, one GPU type at a time, with Kueue's rules (issue 14) so that the
embedded mode and Kubernetes+Kueue decide alike:

- each tenant has a **nominal** share of the type (its ceiling, which stays guaranteed), belongs to
  a **cohort**, may **borrow** up to ``borrow`` GPUs beyond its nominal share from idle GPUs of its
  cohort, and **lends** up to ``lend`` of its own idle ones (None: all of them);
- the GPUs a tenant keeps for itself (``nominal - lend``) are never used by others; the cohort's
  pool is the sum of what its tenants lend, and a tenant above its guaranteed part uses the pool;
- each tenant's queue is first in, first out: its first request blocks those behind it
  (Kueue's ``StrictFIFO``); heads of different tenants go in order of arrival;
- a request within its tenant's own nominal share that does not fit because others borrow is
  served by **reclaim**: borrowing servers (of tenants above their nominal share) are preempted,
  newest first, just enough; a request that would itself borrow never preempts anyone;
- ``capacity`` (the embedded mode: this machine's GPUs of the type) bounds everything at once.

:func:`decide` returns the :class:`Plan`; the caller starts, stops and tells people.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from i18n import N_, Text, _

from .model import PlatformConfig, Profile, Tenant
from .quantity import format_gpus

Key = tuple[str, str]  # (user, server name)


@dataclass(frozen=True)
class Share:
    """A tenant's part of one GPU type."""

    nominal: int
    cohort: str = "all"
    borrow: int = 0
    lend: int | None = None  # None: all of its nominal share

    @property
    def lendable(self) -> int:
        return self.nominal if self.lend is None else min(self.lend, self.nominal)

    @property
    def guaranteed(self) -> int:
        """What others can never use: its nominal share less what it lends."""
        return self.nominal - self.lendable


def shares_for(config: PlatformConfig, gpu_type: str) -> dict[str, Share]:
    """Every tenant's :class:`Share` of ``gpu_type`` under ``config`` (its ``quota.gpus`` and ``sharing``)."""
    return {
        t.id: Share(
            nominal=t.quota.gpus.get(gpu_type, 0),
            cohort=t.sharing.cohort,
            borrow=t.sharing.borrow.get(gpu_type, 0),
            lend=t.sharing.lend.get(gpu_type),
        )
        for t in config.tenants.values()
    }


def may_wait(tenant: Tenant, profile: Profile, refusal_code: str, borrowing: bool = True) -> bool:
    """Whether a request that admission refused with ``refusal_code`` waits in ``tenant``'s queue
    instead: refused for the tenant's GPU ceiling (``gpus``) or for this machine's free GPUs
    (``gpus-busy``), with a queue (``max_wait`` > 0), and small enough to fit the ceiling plus what
    the tenant may borrow once servers stop. Every other refusal (limits, budgets, servers, a
    request larger than the tenant could ever hold) stays a refusal at once. ``borrowing`` False:
    where borrowed GPUs cannot be reclaimed yet, only the ceiling counts."""
    if refusal_code not in ("gpus", "gpus-busy") or not profile.gpu_type or tenant.queue.max_wait <= timedelta(0):
        return False
    reach = tenant.quota.gpus.get(profile.gpu_type, 0) + (
        tenant.sharing.borrow.get(profile.gpu_type, 0) if borrowing else 0
    )
    return 0 < profile.gpu_count <= reach


@dataclass(frozen=True)
class Running:
    """A server holding ``count`` GPUs of the type; ``order`` grows with its start (newest: largest).
    ``stopping``: being stopped already (preempted, or by its person): its GPUs are about to be free."""

    key: Key
    tenant: str
    count: int
    order: float
    stopping: bool = False


@dataclass(frozen=True)
class Waiting:
    """A queued request for ``count`` GPUs; ``order`` is its place in time (earliest: smallest).
    ``may_borrow``: the person accepts borrowed GPUs (which may be reclaimed)."""

    key: Key
    tenant: str
    count: int
    order: float
    may_borrow: bool = True


@dataclass(frozen=True)
class Admission:
    key: Key
    borrowed: int  # how many of its GPUs are borrowed from the cohort (0: all its tenant's own)


@dataclass(frozen=True)
class Position:
    """Where a waiting request is: ``position`` of ``length`` in its tenant's queue, and why."""

    position: int
    length: int
    reason: str  # an i18n.Text


@dataclass(frozen=True)
class Plan:
    admit: list[Admission] = field(default_factory=list)
    preempt: list[Key] = field(default_factory=list)
    waiting: dict[Key, Position] = field(default_factory=dict)
    reclaimed_by: dict[Key, str] = field(default_factory=dict)  # preempted server -> the tenant it gives GPUs back to


class _State:
    """Usage per tenant as decisions are made."""

    def __init__(self, shares: Mapping[str, Share], capacity: int | None, running: Sequence[Running]):
        self.shares, self.capacity = shares, capacity
        self.used: dict[str, int] = defaultdict(int)
        for r in running:
            self.used[r.tenant] += r.count

    def pool_use(self, cohort: str, extra: Mapping[str, int]) -> int:
        return sum(
            max(0, self.used[t] + extra.get(t, 0) - s.guaranteed) for t, s in self.shares.items() if s.cohort == cohort
        )

    def pool(self, cohort: str) -> int:
        return sum(s.lendable for s in self.shares.values() if s.cohort == cohort)

    def why_not(self, w: Waiting) -> Text | None:
        """None if ``w`` fits now, else the reason (for people)."""
        share = self.shares.get(w.tenant)
        if share is None:
            return _("tenant {tenant} has no share of this GPU type", tenant=w.tenant)
        after = self.used[w.tenant] + w.count
        limit = share.nominal + (share.borrow if w.may_borrow else 0)
        if after > limit:
            used = {"tenant": w.tenant, "used": self.used[w.tenant], "nominal": share.nominal}
            if w.may_borrow and share.borrow:
                return _(
                    "tenant {tenant} uses {used} of {nominal} (and may borrow {borrow})", borrow=share.borrow, **used
                )
            return _("tenant {tenant} uses {used} of {nominal}", **used)
        if self.pool_use(share.cohort, {w.tenant: w.count}) > self.pool(share.cohort):
            return _(
                "the GPUs tenant {tenant} could use are in use by its cohort {cohort}",
                tenant=w.tenant,
                cohort=share.cohort,
            )
        if self.capacity is not None and sum(self.used.values()) + w.count > self.capacity:
            return _("all {capacity} GPUs of this type on this machine are in use", capacity=self.capacity)
        return None

    def borrows(self, w: Waiting) -> bool:
        """Whether ``w`` would take its tenant beyond its nominal share."""
        share = self.shares.get(w.tenant)
        return share is not None and self.used[w.tenant] + w.count > share.nominal

    def take(self, tenant: str, count: int) -> None:
        self.used[tenant] += count

    def give_back(self, tenant: str, count: int) -> None:
        self.used[tenant] -= count


def decide(
    shares: Mapping[str, Share],
    running: Sequence[Running],
    queue: Sequence[Waiting],
    capacity: int | None = None,
    gpu_type: str = "GPU",
) -> Plan:
    """Who of ``queue`` starts now (and on how many borrowed GPUs), which ``running`` servers are
    preempted to give a tenant its own GPUs back, and where everyone else waits."""
    state = _State(shares, capacity, running)
    lines: dict[str, list[Waiting]] = defaultdict(list)
    for w in sorted(queue, key=lambda w: w.order):
        lines[w.tenant].append(w)
    plan = Plan()
    # servers being stopped count as used until they are gone; they are no one's to preempt again
    candidates = sorted((r for r in running if not r.stopping), key=lambda r: -r.order)
    freeing = [r for r in running if r.stopping]
    reclaiming: set[Key] = set()

    progress = True
    while progress:
        progress = False
        # Kueue admits heads within their nominal share before heads that would borrow, then by arrival
        for w in sorted((line[0] for line in lines.values() if line), key=lambda w: (state.borrows(w), w.order)):
            if state.why_not(w) is None:
                nominal = shares[w.tenant].nominal
                borrowed = max(0, min(w.count, state.used[w.tenant] + w.count - nominal))
                state.take(w.tenant, w.count)
                plan.admit.append(Admission(w.key, borrowed))
                lines[w.tenant].pop(0)
                progress = True
                break

    # reclaim: each head within its own nominal share gets its GPUs back from borrowers
    for w in sorted((line[0] for line in lines.values() if line), key=lambda w: w.order):
        own = shares.get(w.tenant)
        if own is None or state.used[w.tenant] + w.count > own.nominal:
            continue
        trial = _State(shares, capacity, [])
        trial.used = defaultdict(int, state.used)
        for r in freeing:
            trial.give_back(r.tenant, r.count)
        chosen: list[Running] = []
        for r in candidates:
            if trial.why_not(w) is None:
                break
            if trial.used[r.tenant] <= shares.get(r.tenant, Share(0)).nominal or r.tenant == w.tenant:
                continue  # not borrowing: its GPUs are its tenant's own
            if shares.get(r.tenant, Share(0)).cohort != own.cohort and capacity is None:
                continue  # on Kubernetes only the cohort's pool is shared
            chosen.append(r)
            trial.give_back(r.tenant, r.count)
        if trial.why_not(w) is None:
            for r in reversed(chosen[:-1]):  # Kueue's fill back: keep those that turn out not to be needed
                trial.take(r.tenant, r.count)
                if trial.why_not(w) is None:
                    chosen.remove(r)
                else:
                    trial.give_back(r.tenant, r.count)
            for r in chosen:
                plan.preempt.append(r.key)
                plan.reclaimed_by[r.key] = w.tenant
                candidates.remove(r)
                state.give_back(r.tenant, r.count)
            freeing = []  # what was stopping is counted for this head
            state.take(w.tenant, w.count)  # held for it until the preempted servers are gone
            reclaiming.add(w.key)

    for tenant, line in lines.items():
        if not line:
            continue
        head = line[0]
        if head.key in reclaiming:
            why = _(
                "servers that borrowed tenant {tenant}'s own GPUs are being stopped to give them back", tenant=tenant
            )
        else:
            why = state.why_not(head) or _("tenant {tenant}'s first request waits", tenant=tenant)
        for i, w in enumerate(line, start=1):
            reason = waiting_reason(w.count, gpu_type, why, i, len(line))
            plan.waiting[w.key] = Position(i, len(line), reason)
    return plan


def waiting_reason(count: int, gpu_type: str, why: str, position: int | None = None, length: int = 0) -> Text:
    """What a waiting person reads, in both backends: ``"waiting for 2 × H100: tenant lab uses 4 of
    4; you are 2nd of 3"`` (without the place when it is not known yet). ``why`` is best a
    :class:`i18n.Text`, said in the reader's language with the rest."""
    gpus = format_gpus({gpu_type: count})
    if position:
        return _(
            "waiting for {gpus}: {why}; you are {position} of {length}",
            gpus=gpus,
            why=why,
            position=ordinal(position),
            length=length,
        )
    return _("waiting for {gpus}: {why}", gpus=gpus, why=why)


# the English ordinals' endings; every language says "{n}" its own way ("2nd", "2번째")
ORDINALS = {"st": N_("{n}st"), "nd": N_("{n}nd"), "rd": N_("{n}rd"), "th": N_("{n}th")}


def ordinal(n: int) -> Text:
    """``2`` -> ``"2nd"`` (``"2번째"`` in Korean)."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return _(ORDINALS[suffix], n=n)

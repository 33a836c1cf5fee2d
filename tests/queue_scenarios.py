"""One GPU queue policy, two backends (issue 14): scenarios that the embedded hub's engine
(:func:`quotas.gpu_queue.decide`, tests/unit/test_queue_scenarios.py) and Kubernetes with a real
Kueue (tests/k8s/test_queue_scenarios.py) must both pass.

A scenario is a set of tenants (nominal H100s, cohort, borrowing and lending limits) and steps: a
request arrives (``arrive``) or is stopped by its person (``stop``). After each step, once the
backend has settled, :class:`State` says which requests run, how many GPUs each tenant uses and how
many of them are borrowed, where each waiting request is in its tenant's line (1st: 1) and which
running ones the step preempted (they are gone: stopped to give lent GPUs back).

The sum of each scenario's nominal shares is at most 16, the k8s bed's two H100 nodes: the cluster's
capacity is never what limits, only quotas, so both backends must agree (``decide`` gets no
capacity, as on Kubernetes).

Scenarios g and h once showed ``decide`` differing from Kueue (it preempted more than needed, and
gave GPUs freed by a reclaim to an older head that would borrow); ``decide`` now follows Kueue's
fill back and its "within nominal quota before borrowing" order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

GPU_TYPE = "H100"


@dataclass(frozen=True)
class Tenant:
    name: str
    nominal: int
    cohort: str
    borrow: int = 0
    lend: int | None = None  # None: all of its nominal share


@dataclass(frozen=True)
class Arrive:
    tenant: str
    name: str
    gpus: int


@dataclass(frozen=True)
class Stop:
    name: str


@dataclass(frozen=True)
class State:
    """What a backend shows once settled: ``usage`` tenant -> (GPUs used, of which borrowed), for
    tenants that use any; ``waiting`` request -> its 1-based place in its tenant's line;
    ``preempted``: the requests this step preempted."""

    running: frozenset[str] = frozenset()
    usage: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    waiting: Mapping[str, int] = field(default_factory=dict)
    preempted: frozenset[str] = frozenset()

    def __str__(self) -> str:
        usage = ", ".join(f"{t}: {u} ({b} borrowed)" for t, (u, b) in sorted(self.usage.items()))
        waiting = ", ".join(f"{n}@{p}" for n, p in sorted(self.waiting.items(), key=lambda x: x[1]))
        return (
            f"running [{' '.join(sorted(self.running))}] usage [{usage}]"
            f" waiting [{waiting}] preempted [{' '.join(sorted(self.preempted))}]"
        )


@dataclass(frozen=True)
class Step:
    action: Arrive | Stop
    running: frozenset[str]
    borrowed: Mapping[str, int]  # tenant -> GPUs it borrows (left out: 0)
    waiting: Mapping[str, int]
    preempted: frozenset[str]


def _names(names: str) -> frozenset[str]:
    return frozenset(names.split())


def arrive(
    tenant: str,
    name: str,
    gpus: int,
    *,
    running: str = "",
    borrowed: Mapping[str, int] | None = None,
    waiting: Mapping[str, int] | None = None,
    preempted: str = "",
) -> Step:
    """``name`` asks for ``gpus`` H100 of ``tenant``; then ``running`` (names), ``waiting`` etc."""
    return Step(Arrive(tenant, name, gpus), _names(running), borrowed or {}, waiting or {}, _names(preempted))


def stop(
    name: str,
    *,
    running: str = "",
    borrowed: Mapping[str, int] | None = None,
    waiting: Mapping[str, int] | None = None,
    preempted: str = "",
) -> Step:
    """``name`` (running or waiting) is stopped by its person."""
    return Step(Stop(name), _names(running), borrowed or {}, waiting or {}, _names(preempted))


@dataclass(frozen=True)
class Scenario:
    id: str  # a short DNS label: the k8s replay names its tenants q<id>-<tenant>
    about: str
    tenants: tuple[Tenant, ...]
    steps: tuple[Step, ...]

    def requests(self) -> dict[str, Arrive]:
        return {s.action.name: s.action for s in self.steps if isinstance(s.action, Arrive)}

    def expected(self, step: Step) -> State:
        """The :class:`State` ``step`` expects: each tenant's usage from the requests that run."""
        requests, nominal = self.requests(), {t.name: t.nominal for t in self.tenants}
        used: dict[str, int] = {}
        for name in step.running:
            used[requests[name].tenant] = used.get(requests[name].tenant, 0) + requests[name].gpus
        for tenant, borrowed in step.borrowed.items():
            assert borrowed == max(0, used.get(tenant, 0) - nominal[tenant]), (self.id, step, tenant)
        usage = {t: (u, step.borrowed.get(t, 0)) for t, u in used.items() if u}
        return State(step.running, usage, dict(step.waiting), step.preempted)


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "a",
        "first in, first out within a tenant: places move up when one ahead stops, waiting or running",
        (Tenant("a", 2, "a"),),
        (
            arrive("a", "a1", 1, running="a1"),
            arrive("a", "a2", 1, running="a1 a2"),
            arrive("a", "a3", 1, running="a1 a2", waiting={"a3": 1}),
            arrive("a", "a4", 1, running="a1 a2", waiting={"a3": 1, "a4": 2}),
            arrive("a", "a5", 1, running="a1 a2", waiting={"a3": 1, "a4": 2, "a5": 3}),
            stop("a4", running="a1 a2", waiting={"a3": 1, "a5": 2}),
            stop("a1", running="a2 a3", waiting={"a5": 1}),
        ),
    ),
    Scenario(
        "b",
        "the head of a tenant's line blocks smaller requests behind it (StrictFIFO)",
        (Tenant("b", 3, "b"),),
        (
            arrive("b", "b1", 2, running="b1"),
            arrive("b", "b2", 2, running="b1", waiting={"b2": 1}),
            arrive("b", "b3", 1, running="b1", waiting={"b2": 1, "b3": 2}),  # 1 GPU is free: b3 still waits
            stop("b1", running="b2 b3"),
        ),
    ),
    Scenario(
        "c",
        "beyond its nominal share a tenant borrows idle GPUs of its cohort, up to its borrowing limit",
        (Tenant("l", 4, "c"), Tenant("b", 2, "c", borrow=2)),
        (
            arrive("b", "b1", 2, running="b1"),
            arrive("b", "b2", 2, running="b1 b2", borrowed={"b": 2}),
            arrive("b", "b3", 1, running="b1 b2", borrowed={"b": 2}, waiting={"b3": 1}),  # at 2 + 2
            arrive("l", "l1", 2, running="b1 b2 l1", borrowed={"b": 2}, waiting={"b3": 1}),  # 2 of l's 4 were idle
            stop("b1", running="b2 b3 l1", borrowed={"b": 1}),
        ),
    ),
    Scenario(
        "d",
        "reclaim: the lender asks for its own GPUs; the newest borrowing servers are preempted, just enough",
        (Tenant("l", 4, "d"), Tenant("b", 2, "d", borrow=4)),
        (
            arrive("b", "b1", 2, running="b1"),
            arrive("b", "b2", 1, running="b1 b2", borrowed={"b": 1}),
            arrive("b", "b3", 1, running="b1 b2 b3", borrowed={"b": 2}),
            arrive("b", "b4", 1, running="b1 b2 b3 b4", borrowed={"b": 3}),
            arrive("l", "l1", 2, running="b1 b2 b3 l1", borrowed={"b": 2}, preempted="b4"),
            arrive("l", "l2", 2, running="b1 l1 l2", preempted="b2 b3"),  # b1 is b's own: never reclaimed
        ),
    ),
    Scenario(
        "e",
        "a lending limit: what a tenant keeps for itself is never borrowed, even when idle",
        (Tenant("k", 4, "e", lend=1), Tenant("b", 1, "e", borrow=4)),
        (
            arrive("b", "b1", 1, running="b1"),
            arrive("b", "b2", 1, running="b1 b2", borrowed={"b": 1}),  # k lends 1 of its 4
            arrive("b", "b3", 1, running="b1 b2", borrowed={"b": 1}, waiting={"b3": 1}),  # 3 of k's are idle
            arrive("k", "k1", 3, running="b1 b2 k1", borrowed={"b": 1}, waiting={"b3": 1}),  # what k kept
            stop("b3", running="b1 b2 k1", borrowed={"b": 1}),  # (with b3 waiting, see scenario h)
            arrive("k", "k2", 1, running="b1 k1 k2", preempted="b2"),  # and what it lent
        ),
    ),
    Scenario(
        "f",
        "tenants of different cohorts never share, however idle",
        (Tenant("x", 2, "f1", borrow=2), Tenant("z", 1, "f1"), Tenant("y", 4, "f2")),
        (
            arrive("x", "x1", 2, running="x1"),
            arrive("x", "x2", 1, running="x1 x2", borrowed={"x": 1}),  # z's idle GPU, same cohort
            arrive("x", "x3", 1, running="x1 x2", borrowed={"x": 1}, waiting={"x3": 1}),  # y's 4 are idle
            arrive("y", "y1", 4, running="x1 x2 y1", borrowed={"x": 1}, waiting={"x3": 1}),  # no reclaim from x
            stop("x1", running="x2 x3 y1"),
        ),
    ),
    Scenario(
        "g",
        "reclaim preempts just enough: a preempted server that turns out not to be needed is kept (fill back)",
        (Tenant("l", 3, "g"), Tenant("b", 1, "g", borrow=3)),
        (
            arrive("b", "b1", 1, running="b1"),
            arrive("b", "b2", 2, running="b1 b2", borrowed={"b": 2}),
            arrive("b", "b3", 1, running="b1 b2 b3", borrowed={"b": 3}),
            # l needs 2 of its 3: b3 (newest, 1) is not enough, b2 (2) is; then b3 may stay
            arrive("l", "l1", 2, running="b1 b3 l1", borrowed={"b": 1}, preempted="b2"),
        ),
    ),
    Scenario(
        "h",
        "the GPUs a reclaim frees go to the reclaiming tenant, not to an older head that would borrow them",
        (Tenant("l", 2, "h"), Tenant("b", 1, "h", borrow=2), Tenant("c", 1, "h", borrow=1)),
        (
            arrive("b", "b1", 1, running="b1"),
            arrive("b", "b2", 2, running="b1 b2", borrowed={"b": 2}),
            arrive("c", "c1", 1, running="b1 b2 c1", borrowed={"b": 2}),
            arrive("c", "c2", 1, running="b1 b2 c1", borrowed={"b": 2}, waiting={"c2": 1}),  # would borrow
            arrive("l", "l1", 2, running="b1 c1 l1", waiting={"c2": 1}, preempted="b2"),
        ),
    ),
)

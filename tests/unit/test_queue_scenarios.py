"""The queue scenarios of tests/queue_scenarios.py against the embedded hub's engine,
:func:`quotas.gpu_queue.decide` (the same table runs against Kueue in tests/k8s/test_queue_scenarios.py).

A small driver keeps the running servers and the waiting requests as the hub would: after each step it
decides again until nothing changes, starting what :attr:`Plan.admit` says and stopping what
:attr:`Plan.preempt` says at once.
"""

from __future__ import annotations

import itertools

import pytest

from quotas.gpu_queue import Running, Share, Waiting, decide
from tests.queue_scenarios import GPU_TYPE, SCENARIOS, Arrive, Scenario, State


def key(name: str) -> tuple[str, str]:
    return (name, "")


class Engine:
    def __init__(self, scenario: Scenario) -> None:
        self.shares = {t.name: Share(t.nominal, t.cohort, t.borrow, t.lend) for t in scenario.tenants}
        self.nominal = {t.name: t.nominal for t in scenario.tenants}
        self.running: dict[str, Running] = {}
        self.queue: dict[str, Waiting] = {}
        self.clock = itertools.count(1)

    def step(self, action: Arrive | str) -> State:
        if isinstance(action, Arrive):
            self.queue[action.name] = Waiting(key(action.name), action.tenant, action.gpus, next(self.clock))
        else:
            assert self.running.pop(action, None) or self.queue.pop(action, None), f"{action} is not there"
        preempted: set[str] = set()
        for _ in range(20):
            plan = decide(self.shares, list(self.running.values()), list(self.queue.values()), None, GPU_TYPE)
            if not plan.admit and not plan.preempt:
                break
            for admission in plan.admit:
                w = self.queue.pop(admission.key[0])
                self.running[w.key[0]] = Running(w.key, w.tenant, w.count, next(self.clock))
            for k in plan.preempt:
                del self.running[k[0]]
                preempted.add(k[0])
        else:
            raise AssertionError(f"decide() never settled: {plan}")
        used: dict[str, int] = {}
        for r in self.running.values():
            used[r.tenant] = used.get(r.tenant, 0) + r.count
        return State(
            frozenset(self.running),
            {t: (u, max(0, u - self.nominal[t])) for t, u in used.items() if u},
            {k[0]: p.position for k, p in plan.waiting.items()},
            frozenset(preempted),
        )


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.id for s in SCENARIOS])
def test_decide_plays_the_scenario(scenario: Scenario) -> None:
    engine = Engine(scenario)
    for i, step in enumerate(scenario.steps, start=1):
        action = step.action
        got = engine.step(action if isinstance(action, Arrive) else action.name)
        want = scenario.expected(step)
        assert got == want, f"scenario {scenario.id} step {i} ({action}):\n  got  {got}\n  want {want}"


def test_the_scenarios_fit_the_k8s_beds_gpus_and_names() -> None:
    assert len({s.id for s in SCENARIOS}) == len(SCENARIOS)
    for s in SCENARIOS:
        assert sum(t.nominal for t in s.tenants) <= 16, s.id  # capacity never binds: both backends agree
        assert len({t.name for t in s.tenants}) == len(s.tenants)
        assert all(a.tenant in {t.name for t in s.tenants} for a in s.requests().values())
        assert len(s.requests()) == sum(isinstance(st.action, Arrive) for st in s.steps)

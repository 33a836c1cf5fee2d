"""quotas.gpu_queue: the queue, borrowing and reclaim decisions, as tables (issue 14)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import pytest

from quotas.gpu_queue import Admission, Running, Share, Waiting, decide, may_wait, shares_for
from quotas.loader import parse_platform
from quotas.model import Image, Profile, QueuePolicy, Sharing
from quotas.policy import Request, admit

from .builders import CPU_SMALL, H100_X1, H100_X4, SNU, hold, profile, usage

H100_X16 = profile("h100-x16", 128, 1024, "H100", 16)

# snu-ai: 8 H100 guaranteed, may borrow 8; nova: 16, lends all; kist: 4, lends none; other: another cohort
SHARES = {
    "snu": Share(nominal=8, borrow=8),
    "nova": Share(nominal=16),
    "kist": Share(nominal=4, lend=0),
    "other": Share(nominal=4, cohort="private"),
}


def run(user: str, tenant: str, count: int, order: float, stopping: bool = False) -> Running:
    return Running((user, ""), tenant, count, order, stopping)


def wait(user: str, tenant: str, count: int, order: float, may_borrow: bool = True) -> Waiting:
    return Waiting((user, ""), tenant, count, order, may_borrow)


def test_a_request_within_the_ceiling_starts_at_once() -> None:
    plan = decide(SHARES, [run("a", "snu", 4, 1)], [wait("b", "snu", 4, 2)])
    assert plan.admit == [Admission(("b", ""), 0)] and not plan.preempt and not plan.waiting


def test_beyond_the_ceiling_it_borrows_idle_gpus_of_the_cohort() -> None:
    plan = decide(SHARES, [run("a", "snu", 8, 1)], [wait("b", "snu", 2, 2)])
    assert plan.admit == [Admission(("b", ""), 2)]


def test_one_who_will_not_borrow_waits_with_position_and_reason() -> None:
    queue = [wait("b", "snu", 2, 2, may_borrow=False), wait("c", "snu", 1, 3), wait("d", "snu", 1, 4)]
    plan = decide(SHARES, [run("a", "snu", 8, 1)], queue, gpu_type="H100")
    # the first request blocks those behind it (strict first in, first out), borrowing or not
    assert plan.admit == []
    assert [plan.waiting[(u, "")].position for u in "bcd"] == [1, 2, 3]
    assert plan.waiting[("c", "")].reason == "waiting for 1 × H100: tenant snu uses 8 of 8; you are 2nd of 3"


def test_borrowing_stops_at_the_borrow_limit_and_at_what_others_lend() -> None:
    full = decide(SHARES, [run("a", "snu", 16, 1)], [wait("b", "snu", 1, 2)])
    assert not full.admit and "tenant snu uses 16 of 8 (and may borrow 8)" in full.waiting[("b", "")].reason
    # nova uses 12 of its 16: 4 lendable left in the cohort (kist lends nothing)
    plan = decide(SHARES, [run("a", "snu", 8, 1), run("n", "nova", 12, 1)], [wait("b", "snu", 6, 2)])
    assert not plan.admit and "in use by its cohort all" in plan.waiting[("b", "")].reason
    plan = decide(SHARES, [run("a", "snu", 8, 1), run("n", "nova", 12, 1)], [wait("b", "snu", 4, 2)])
    assert plan.admit == [Admission(("b", ""), 4)]


def test_kists_guaranteed_gpus_are_never_lent() -> None:
    # nova's 16 and snu's 8 are all used; kist's 4 idle GPUs stay kist's
    plan = decide(SHARES, [run("a", "snu", 8, 1), run("n", "nova", 16, 1)], [wait("b", "snu", 1, 2)])
    assert not plan.admit
    assert decide(SHARES, [run("n", "nova", 16, 1)], [wait("k", "kist", 4, 2)]).admit == [Admission(("k", ""), 0)]


def test_reclaim_preempts_borrowers_newest_first_just_enough() -> None:
    running = [run("n1", "nova", 8, 1), run("s1", "snu", 8, 2), run("s2", "snu", 4, 3), run("s3", "snu", 4, 4)]
    # nova (8 of 16) asks for 6 of its own: snu borrows 8 of nova's; the newest borrower goes first
    plan = decide(SHARES, running, [wait("n2", "nova", 6, 5)])
    assert plan.preempt == [("s3", ""), ("s2", "")]
    assert not plan.admit and "being stopped to give them back" in plan.waiting[("n2", "")].reason
    # once they are stopping, nobody else is preempted for it; once gone, it starts
    stopping = [*running[:2], run("s2", "snu", 4, 3, stopping=True), run("s3", "snu", 4, 4, stopping=True)]
    again = decide(SHARES, stopping, [wait("n2", "nova", 6, 5)])
    assert again.preempt == [] and ("n2", "") in again.waiting
    assert decide(SHARES, running[:2], [wait("n2", "nova", 6, 5)]).admit == [Admission(("n2", ""), 0)]


def test_a_request_that_would_borrow_never_preempts() -> None:
    running = [run("n1", "nova", 16, 1), run("s1", "snu", 10, 2)]
    plan = decide(SHARES, running, [wait("n2", "nova", 2, 3)])  # nova at its ceiling: it would borrow
    assert plan.preempt == [] and not plan.admit


def test_other_cohorts_are_not_shared_but_the_machine_is() -> None:
    assert not decide(SHARES, [run("o", "other", 4, 1)], [wait("p", "other", 1, 2)]).admit
    # a machine of 24 H100 in all: snu borrowing would pass its share but not the machine
    plan = decide(SHARES, [run("a", "snu", 8, 1), run("n", "nova", 14, 1)], [wait("b", "snu", 2, 2)], capacity=24)
    assert plan.admit == [Admission(("b", ""), 2)]
    plan = decide(SHARES, [run("a", "snu", 8, 1), run("n", "nova", 14, 1)], [wait("b", "snu", 2, 2)], capacity=23)
    assert not plan.admit and "all 23 GPUs of this type on this machine are in use" in plan.waiting[("b", "")].reason


@pytest.mark.parametrize(
    ("queue", "admitted"),
    [
        # heads of different tenants go in order of arrival; a blocked head does not block others
        ([wait("s", "snu", 1, 1, may_borrow=False), wait("n", "nova", 1, 2)], ["n"]),
        ([wait("n", "nova", 1, 1), wait("k", "kist", 1, 2), wait("n2", "nova", 1, 3)], ["n", "k", "n2"]),
    ],
)
def test_order_of_arrival_across_tenants(queue: list[Waiting], admitted: list[str]) -> None:
    plan = decide(SHARES, [run("a", "snu", 8, 0)], queue)
    assert [a.key[0] for a in plan.admit] == admitted


def test_shares_come_from_the_ceiling_and_the_sharing_of_tenants_yaml(
    example_data: dict[str, Any], images: Mapping[str, Image]
) -> None:
    first, second = example_data["tenants"][0], example_data["tenants"][1]
    first["sharing"] = {"cohort": "labs", "borrow": {"H100": 8}, "lend": {"H100": 1}}
    first["queue"] = {"max_wait": "30m", "max_length": 5}
    config = parse_platform(example_data, images)
    shares = shares_for(config, "H100")
    ceiling = first["quota"]["gpus"]["H100"]
    assert shares[first["id"]] == Share(nominal=ceiling, cohort="labs", borrow=8, lend=1)
    assert shares[first["id"]].guaranteed == ceiling - 1
    # the defaults: one cohort of all, no borrowing, everything lent, a queue of an hour and 100
    other = config.tenants[second["id"]]
    assert shares[second["id"]] == Share(nominal=second["quota"]["gpus"].get("H100", 0))
    assert (other.queue.max_wait, other.queue.max_length) == (timedelta(hours=1), 100)
    assert (config.tenants[first["id"]].queue.max_wait, config.tenants[first["id"]].queue.max_length) == (
        timedelta(minutes=30),
        5,
    )


def test_admission_takes_what_the_queue_lets_a_tenant_borrow() -> None:
    full = usage(hold("alice", H100_X4), hold("bob", H100_X4, "b"))  # 8 of 8 H100
    ask = Request(user="carol", server="", profile=H100_X1)
    assert admit(SNU, ask, full).code == "gpus"
    assert admit(SNU, ask, full, borrowed={"H100": 1}).allowed
    assert admit(SNU, ask, full, borrowed={"A100": 4}).code == "gpus"  # another type's loan does not count


@pytest.mark.parametrize(
    ("sharing", "queue", "profile", "code", "waits"),
    [
        (Sharing(), QueuePolicy(), H100_X4, "gpus", True),  # fits the ceiling (8) once servers stop
        (Sharing(), QueuePolicy(), H100_X4, "gpus-busy", True),  # the machine's GPUs are busy
        (Sharing(), QueuePolicy(max_wait=timedelta(0)), H100_X4, "gpus", False),  # no queue
        (Sharing(), QueuePolicy(), H100_X4, "budget", False),  # waiting would not help
        (Sharing(), QueuePolicy(), H100_X4, "servers_per_user", False),
        (Sharing(), QueuePolicy(), CPU_SMALL, "gpus", False),
        (Sharing(), QueuePolicy(), H100_X16, "gpus", False),  # more than the tenant could ever hold
        (Sharing(borrow={"H100": 8}), QueuePolicy(), H100_X16, "gpus", True),  # 8 + 8 borrowed
    ],
)
def test_which_refusals_wait_in_the_queue(
    sharing: Sharing, queue: QueuePolicy, profile: Profile, code: str, waits: bool
) -> None:
    tenant = dataclasses.replace(SNU, sharing=sharing, queue=queue)
    assert may_wait(tenant, profile, code) is waits


def test_without_borrowing_only_the_ceiling_counts() -> None:
    tenant = dataclasses.replace(SNU, sharing=Sharing(borrow={"H100": 8}))
    assert may_wait(tenant, H100_X16, "gpus") and not may_wait(tenant, H100_X16, "gpus", borrowing=False)
    assert may_wait(tenant, H100_X4, "gpus", borrowing=False)

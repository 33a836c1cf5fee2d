"""When TenantKubeSpawner gives up on a pending pod: missing capacity yes, volume binding no."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from spawner.kube import _unschedulable_condition, _UnschedulableWatch


def pod(phase: str, reason: str, message: str) -> dict[str, Any]:
    condition = {"type": "PodScheduled", "status": "False", "reason": reason, "message": message}
    return {"status": {"phase": phase, "conditions": [condition]}}


INSUFFICIENT = (
    "0/5 nodes are available: 2 Insufficient nvidia.com/gpu, 3 node(s) didn't match Pod's node affinity/selector."
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ({"status": {}}, None),
        (pod("Pending", "Unschedulable", INSUFFICIENT), INSUFFICIENT),
        (
            pod(
                "Pending", "Unschedulable", "0/5 nodes are available: pod has unbound immediate PersistentVolumeClaims."
            ),
            None,
        ),
        (pod("Pending", "SchedulingGated", "gated"), None),
        (pod("Running", "Unschedulable", INSUFFICIENT), None),
    ],
)
def test_unschedulable_condition(value: dict[str, Any] | None, expected: str | None) -> None:
    assert _unschedulable_condition(value) == expected


def test_one_watch_for_every_spawn_gives_each_its_reason_after_its_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hub's one loop over all starting pods: a pod unschedulable for its spawn's timeout ends that
    spawn's wait; a pod that becomes schedulable again starts the count anew; a cancelled wait stops."""
    monkeypatch.setattr(_UnschedulableWatch, "interval", 0.02)
    watch = _UnschedulableWatch()
    pods: dict[str, Any] = {"t/a": pod("Pending", "Unschedulable", INSUFFICIENT), "t/b": None}

    async def main() -> tuple[str, bool, bool]:
        a = asyncio.ensure_future(watch.watch("t/a", lambda: pods, 0.1))
        b = asyncio.ensure_future(watch.watch("t/b", lambda: pods, 0.1))
        c = asyncio.ensure_future(watch.watch("t/c", lambda: {}, 0.1))  # never created: never unschedulable
        reason = await asyncio.wait_for(a, 2)
        pods["t/b"] = pod("Pending", "Unschedulable", INSUFFICIENT)
        await asyncio.sleep(0.05)
        pods["t/b"] = pod("Running", "", "")  # scheduled after all, before its timeout
        await asyncio.sleep(0.2)
        b_waits = not b.done()
        c.cancel()
        b.cancel()
        await asyncio.gather(b, c, return_exceptions=True)
        return reason, b_waits, not watch._spawns

    reason, b_waits, none_left = asyncio.run(main())
    assert reason == INSUFFICIENT
    assert b_waits and none_left

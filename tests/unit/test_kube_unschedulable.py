"""When TenantKubeSpawner gives up on a pending pod: missing capacity yes, volume binding no."""

from __future__ import annotations

from typing import Any

import pytest

from spawner.kube import _unschedulable_condition


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

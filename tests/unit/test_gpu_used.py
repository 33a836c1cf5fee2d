"""GPU-hours used: a culler round's readings to utilization-weighted GPU-milliseconds, and their
share per day and month (issue 18)."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from quotas.culler import Culler
from quotas.gpu_use import GpuSample, mean_utilization, used_gpu_ms
from quotas.loader import parse_platform
from quotas.model import Image
from quotas.policy import Holding
from quotas.store import Store, prorate
from tests.unit.test_gpu_idle import PLATFORM, STARTED, Source

NOW = datetime(2026, 11, 20, 14, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
CAP = 2 * MINUTE  # twice a one-minute culling interval


def gpus(*utilizations: float) -> list[GpuSample]:
    return [GpuSample(str(i), u, 1000.0) for i, u in enumerate(utilizations)]


@pytest.mark.parametrize(
    ("samples", "gpu_count", "since", "expected_ms", "why"),
    [
        (gpus(100), 1, NOW - MINUTE, 60_000, "one busy GPU for a minute: a GPU-minute"),
        (gpus(100, 100, 100, 100), 4, NOW - MINUTE, 240_000, "four busy GPUs"),
        (gpus(50, 0), 2, NOW - MINUTE, 30_000, "the mean of 50 % and 0 % on two GPUs"),
        (gpus(0, 0), 2, NOW - MINUTE, 0, "idle GPUs use nothing"),
        (gpus(100), 1, NOW - timedelta(hours=3), 120_000, "a gap in the readings counts the cap only"),
        (None, 1, NOW - MINUTE, 0, "no data adds nothing"),
        ([], 1, NOW - MINUTE, 0, "no samples adds nothing"),
        (gpus(100), 1, None, 0, "the first reading only starts the clock"),
        (gpus(100), 1, NOW, 0, "no time elapsed"),
        (gpus(100), 1, NOW + MINUTE, 0, "a clock that went back"),
        (gpus(100), 0, NOW - MINUTE, 0, "a server without GPUs"),
        (gpus(100, 100), 1, NOW - MINUTE, 60_000, "more GPUs read than held count as held"),
        (gpus(100), 2, NOW - MINUTE, 60_000, "a GPU not read adds nothing"),
        (gpus(150, -3), 2, NOW - MINUTE, 60_000, "readings out of range are clamped to 0-100 %"),
        (gpus(float("nan")), 1, NOW - MINUTE, 0, "a reading that is not a number is no data"),
        ([GpuSample("0", 100, 0), GpuSample("0", 0, 0)], 1, NOW - MINUTE, 30_000, "a GPU read twice: its mean"),
    ],
)
def test_used_gpu_ms(
    samples: list[GpuSample] | None, gpu_count: int, since: datetime | None, expected_ms: int, why: str
) -> None:
    assert used_gpu_ms(samples, gpu_count, since, NOW, CAP) == expected_ms, why


def test_mean_utilization() -> None:
    assert mean_utilization(gpus(100, 50)) == 75
    assert mean_utilization(None) is None and mean_utilization([]) is None


@pytest.mark.parametrize(
    ("total", "weights", "expected"),
    [
        (100, [1, 1], [50, 50]),
        (10, [2, 3], [4, 6]),
        (10, [1, 1, 1], [4, 3, 3]),  # largest remainders, the earliest first on a tie: the sum is exact
        (7, [0, 5], [0, 7]),
        (7, [0, 0], [0, 0]),
        (0, [3, 4], [0, 0]),
        (5, [], []),
    ],
)
def test_prorate_shares_exactly(total: int, weights: list[int], expected: list[int]) -> None:
    assert prorate(total, weights) == expected


async def test_culler_rounds_add_use_to_the_run_and_keep_an_hour_of_history(
    images: Mapping[str, Image], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    platform = parse_platform(copy.deepcopy(PLATFORM), images)  # a 5-minute culling interval
    store = Store(f"sqlite:///{tmp_path / 'quotas.sqlite'}")
    store.restore(Holding("lab", "alice", "", "h100-x2", {"H100": 2}, Decimal(8), Decimal(2**36)), None, STARTED)
    source = Source()
    culler = Culler(platform, store, "http://hub.invalid/hub/api", "token", gpu_source=source)
    model = {"started": STARTED.isoformat(), "last_activity": NOW.isoformat(), "state": {"aidc": {"gpus": ["0", "1"]}}}

    async def active_users() -> list[dict[str, Any]]:
        return [{"name": "alice", "servers": {"": model}}] if model else []

    monkeypatch.setattr(culler, "_active_users", active_users)
    key = ("alice", "")

    def used_ms() -> int:
        return [r for r in store.open_runs("lab")][0].gpu_used_ms if store.open_runs("lab") else -1

    source.use[key] = gpus(100, 50)
    await culler.run_once(NOW)  # the first reading only starts the clock
    assert used_ms() == 0 and culler.utilization(key) == [(NOW, 75.0)]
    await culler.run_once(NOW + 5 * MINUTE)  # 1.5 GPUs busy for 5 minutes
    assert used_ms() == 450_000
    del source.use[key]
    await culler.run_once(NOW + 10 * MINUTE)  # no data: nothing added, nothing drawn
    assert used_ms() == 450_000 and len(culler.utilization(key)) == 2
    source.use[key] = gpus(100, 100)
    await culler.run_once(NOW + 61 * MINUTE)  # after a gap only two intervals count
    assert used_ms() == 450_000 + 2 * 10 * 60_000
    assert culler.utilization(key) == [(NOW + 5 * MINUTE, 75.0), (NOW + 61 * MINUTE, 100.0)]  # the last hour
    assert culler.utilizations() == {key: culler.utilization(key)}

    model.clear()  # it stopped: its history is dropped
    await culler.run_once(NOW + 65 * MINUTE)
    assert culler.utilization(key) == [] and culler.utilizations() == {}
    store.close()

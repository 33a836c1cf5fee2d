"""The embedded mode's queue keeper (spawner/queue_keeper.py) on a real quotas store: it preempts
the newest borrower for a lender's waiting request, warns it, and stops it after the grace, or
calls the preemption off when no one of the lender waits any more; a mark survives a restart.

Tenants (tests/hub/tenants.yaml): `lab` 4 H100 (lends them all), `startup` 1 H100 and may borrow 2;
the machine has 5 H100.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from quotas.loader import load_platform
from quotas.model import PlatformConfig
from quotas.policy import Request
from quotas.store import Store
from spawner.queue_keeper import QueueKeeper
from tests.bed.hub import TENANTS

REPO = Path(__file__).resolve().parents[2]
Key = tuple[str, str]


@dataclass
class Machine:
    count: int

    def capacity(self, gpu_type: str) -> int:
        return self.count


@dataclass
class Platform:
    config: PlatformConfig
    store: Store
    gpus: Machine = field(default_factory=lambda: Machine(5))


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Platform]:
    data = yaml.safe_load(TENANTS.read_text())
    for tenant in data["tenants"]:
        tenant["queue"] = {"max_wait": "1h"}
        if tenant["id"] == "startup":
            tenant["sharing"] = {"borrow": {"H100": 2}}
    (tmp_path / "tenants.yaml").write_text(yaml.safe_dump(data))
    config = load_platform(tmp_path / "tenants.yaml", REPO / "images" / "catalog.yaml")
    store = Store(f"sqlite:///{tmp_path / 'quotas.sqlite'}")
    yield Platform(config, store)
    store.close()


class Recorder:
    """The hub's side: stopping a server ends its run (with the reason marked on it)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.stopped: list[Key] = []
        self.told: list[tuple[Key, str]] = []

    async def stop(self, key: Key) -> None:
        self.stopped.append(key)
        self.store.release(key, datetime.now(UTC))

    async def notify(self, key: Key, message: str) -> None:
        self.told.append((key, message))


def borrow_then_wait(platform: Platform) -> None:
    """dave holds startup's own H100 and a borrowed one; alice holds 2 of lab's; bob waits for 2."""
    config, store, now = platform.config, platform.store, datetime.now(UTC)
    startup, lab, h1, h2 = (
        config.tenants["startup"],
        config.tenants["lab"],
        config.profiles["h100-x1"],
        config.profiles["h100-x2"],
    )
    assert store.reserve(startup, Request("dave", "", h1), now)[0].allowed
    decision, _ = store.reserve(startup, Request("dave", "b", h1), now + timedelta(seconds=1), borrowed={"H100": 1})
    assert decision.holding is not None and decision.holding.borrowed == {"H100": 1}
    assert store.reserve(lab, Request("alice", "", h2), now)[0].allowed
    store.enqueue(lab, "bob", "", h2, True, now)


async def until(check, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


def test_the_newest_borrower_is_warned_then_stopped(platform: Platform) -> None:
    borrow_then_wait(platform)
    seen = Recorder(platform.store)

    async def scenario() -> None:
        keeper = QueueKeeper(platform, seen.stop, seen.notify, interval=0.05, grace=timedelta(seconds=0.5))  # type: ignore[arg-type]
        waiting = asyncio.ensure_future(keeper.wait(("bob", "")))
        await until(lambda: seen.told)
        (run,) = [r for r in platform.store.open_runs() if r.holding.server == "b"]
        assert run.end_reason == "preempted" and run.stop_at is not None
        assert seen.told[0][0] == ("dave", "b") and "will be stopped at" in seen.told[0][1]
        position = keeper.position(("bob", ""))
        assert position is not None and "being stopped to give them back" in position.reason
        await until(lambda: seen.stopped)
        assert seen.stopped == [("dave", "b")]  # never dave's own server
        admission = await asyncio.wait_for(waiting, 5)
        assert admission.key == ("bob", "") and admission.borrowed == 0

    asyncio.run(scenario())
    (ended,) = [r for r in platform.store.runs_of("dave", datetime.now(UTC) - timedelta(hours=1)) if r.ended]
    assert ended.end_reason == "preempted"


def test_a_preemption_no_one_needs_any_more_is_called_off(platform: Platform) -> None:
    borrow_then_wait(platform)
    seen = Recorder(platform.store)

    async def scenario() -> None:
        keeper = QueueKeeper(platform, seen.stop, seen.notify, interval=0.05, grace=timedelta(seconds=0.5))  # type: ignore[arg-type]
        waiting = asyncio.ensure_future(keeper.wait(("bob", "")))
        await until(lambda: seen.told)
        waiting.cancel()  # bob gives up: his request leaves the line
        platform.store.dequeue(("bob", ""))
        await until(lambda: len(seen.told) == 2)
        assert "will not be stopped after all" in seen.told[1][1]

    asyncio.run(scenario())
    assert seen.stopped == []
    (run,) = [r for r in platform.store.open_runs() if r.holding.server == "b"]
    assert run.end_reason is None and run.stop_at is None


def test_a_preemption_marked_before_a_restart_is_carried_out(platform: Platform) -> None:
    borrow_then_wait(platform)
    platform.store.mark_preempted(("dave", "b"), datetime.now(UTC) - timedelta(seconds=1), "why")
    seen = Recorder(platform.store)

    async def scenario() -> None:  # a new hub process: nothing in memory, the mark in the store
        keeper = QueueKeeper(platform, seen.stop, seen.notify, interval=0.05)  # type: ignore[arg-type]
        keeper.kick()
        await until(lambda: seen.stopped)

    asyncio.run(scenario())
    assert seen.stopped == [("dave", "b")]

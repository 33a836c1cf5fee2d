"""The hub's line of Kubernetes creates (spawner.pacing): bounded, first come first served, with
each waiter's place, a timeout that follows the API server's answers, and jittered backoff."""

from __future__ import annotations

import asyncio

import pytest

from spawner import pacing
from spawner.pacing import Pacer, backoff, retry_after


@pytest.fixture(autouse=True)
def quick_refresh(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pacing, "REFRESH", 0.01)


def test_at_most_slots_in_flight_and_first_come_first_served() -> None:
    async def main() -> tuple[int, list[int]]:
        line = Pacer(3)
        peak, order = 0, []

        async def create(i: int) -> None:
            nonlocal peak
            async with line.slot():
                peak = max(peak, line.in_flight)
                order.append(i)
                await asyncio.sleep(0.01)

        tasks = []
        for i in range(20):
            tasks.append(asyncio.create_task(create(i)))
            await asyncio.sleep(0)  # arrive one after the other
        await asyncio.gather(*tasks)
        assert line.in_flight == 0 and line.waiting == 0
        return peak, order

    peak, order = asyncio.run(main())
    assert peak == 3
    assert order == list(range(20))


def test_a_waiter_is_told_how_many_are_ahead_and_sees_it_shrink() -> None:
    async def main() -> list[int]:
        line = Pacer(2)
        gates = [asyncio.Event() for _ in range(5)]
        seen: list[int] = []

        async def holder(gate: asyncio.Event) -> None:
            async with line.slot():
                await gate.wait()

        holders = []
        for gate in gates:  # 2 in flight, 3 in line
            holders.append(asyncio.create_task(holder(gate)))
            await asyncio.sleep(0)
        await asyncio.sleep(0.02)
        assert line.in_flight == 2 and line.waiting == 3

        async def last() -> None:
            async with line.slot(seen.append):
                pass

        task = asyncio.create_task(last())
        for gate in gates:  # one finishes at a time
            await asyncio.sleep(0.05)
            gate.set()
        await asyncio.gather(task, *holders)
        return seen

    seen = asyncio.run(main())
    assert seen[0] == 5  # two in flight and three earlier in the line
    assert seen == [5, 4, 3, 2]  # each turn that passes, one fewer ahead (two slots: it goes at 2)


def test_a_cancelled_waiter_gives_its_turn_to_the_next() -> None:
    async def main() -> bool:
        line = Pacer(1)
        release = asyncio.Event()
        got_it = asyncio.Event()

        async def holder() -> None:
            async with line.slot():
                await release.wait()

        async def later() -> None:
            async with line.slot():
                got_it.set()

        first = asyncio.create_task(holder())
        await asyncio.sleep(0)
        gone = asyncio.create_task(later())
        kept = asyncio.create_task(later())
        await asyncio.sleep(0.02)
        gone.cancel()
        await asyncio.gather(gone, return_exceptions=True)
        release.set()
        await asyncio.wait_for(asyncio.gather(first, kept), 2)
        return got_it.is_set() and line.in_flight == 0 and line.waiting == 0

    assert asyncio.run(main())


def test_an_error_in_the_body_frees_the_slot() -> None:
    async def main() -> int:
        line = Pacer(1)
        with pytest.raises(RuntimeError):
            async with line.slot():
                raise RuntimeError("refused")
        async with line.slot():
            return line.in_flight

    assert asyncio.run(main()) == 1


def test_the_timeout_follows_the_recent_answers_within_floor_and_ceiling() -> None:
    line = Pacer(4)
    assert line.timeout(3, 30, 4) == 3  # nothing seen yet: the floor
    for _ in range(50):
        line.answered(0.1)
    assert line.timeout(3, 30, 4) == 3  # a quick API server: the floor
    for _ in range(50):
        line.answered(2.0)
    assert line.timeout(3, 30, 4) == pytest.approx(8.0)  # 4 x the 90th percentile
    for _ in range(64):
        line.answered(20.0)
    assert line.timeout(3, 30, 4) == 30  # never beyond the ceiling
    for _ in range(64):
        line.answered(0.05)
    assert line.timeout(3, 30, 4) == 3  # the load passed: back to the floor


def test_backoff_honours_retry_after_and_is_jittered_and_capped() -> None:
    assert 2.0 <= backoff(1, 2.0) <= 2.5
    assert 60.0 <= backoff(1, 3600.0) <= 60.5  # a server's Retry-After is bounded
    waits = {round(backoff(3, None), 6) for _ in range(50)}
    assert len(waits) > 10 and all(0 <= w <= 1.0 for w in waits)  # jittered, up to 0.25 * 2**2
    assert all(backoff(20, None) <= 8.0 for _ in range(50))
    assert retry_after({"Retry-After": "3"}) == 3.0
    assert retry_after({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}) is None
    assert retry_after(None) is None and retry_after({}) is None

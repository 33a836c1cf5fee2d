"""Race-safe admission and crash safety of the store, with real concurrency (processes x threads)
on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import signal
import threading
import time
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any

import pytest
from sqlalchemy import func, select

from quotas.policy import Request
from quotas.schema import runs, usage_rollups
from quotas.store import Store
from tests.unit.builders import H100_X1, QUOTA, SNU

PROCESSES, THREADS = 4, 50  # 200 spawn requests at once
PEOPLE = tuple(f"student{i:03d}" for i in range(PROCESSES * THREADS))
CLASS = dataclasses.replace(
    SNU,
    member_users=frozenset(PEOPLE),
    quota=dataclasses.replace(QUOTA, gpus=MappingProxyType({"H100": 8}), servers=None, cpu=None, memory=None),
)
NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def _spawn_wave(url: str, people: list[str], start_at: float, out: Any) -> None:
    """One process: a thread per person, all asking for one H100 at ``start_at``."""
    store = Store(url, migrate=False)
    results: list[tuple[str, bool, str, str]] = []
    lock = threading.Lock()

    def one(user: str) -> None:
        time.sleep(max(0.0, start_at - time.time()))
        decision, _ = store.reserve(CLASS, Request(user=user, server="", profile=H100_X1), NOW)
        with lock:
            results.append((user, decision.allowed, decision.code, decision.reason))

    threads = [threading.Thread(target=one, args=(u,)) for u in people]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    store.close()
    out.put(results)


@pytest.mark.parametrize("attempt", [1, 2, 3])
def test_200_spawns_at_once_get_exactly_the_8_gpus(db_url: str, attempt: int) -> None:
    Store(db_url).close()  # schema first, then 200 requests in 4 processes x 50 threads
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    start_at = time.time() + 3.0
    chunks = [list(PEOPLE[i::PROCESSES]) for i in range(PROCESSES)]
    procs = [ctx.Process(target=_spawn_wave, args=(db_url, chunk, start_at, out)) for chunk in chunks]
    for p in procs:
        p.start()
    results = [r for _ in procs for r in out.get(timeout=180)]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0

    granted = [r for r in results if r[1]]
    refused = [r for r in results if not r[1]]
    assert len(results) == 200
    assert len(granted) == 8, f"attempt {attempt}: {len(granted)} granted"
    assert len(refused) == 192
    assert {r[2] for r in refused} == {"gpus"}
    assert all("uses 8 of 8 H100 GPUs" in r[3] and "Stop a server" in r[3] for r in refused)
    store = Store(db_url, migrate=False)
    held = store.holdings(CLASS.id)
    assert sorted(h.user for h in held) == sorted(r[0] for r in granted)
    store.close()


def _churn(url: str, worker: int) -> None:
    """Reserve and release forever (until killed): a hub in the middle of spawns and stops."""
    store = Store(url, migrate=False)
    at = NOW
    n = 0
    while True:
        n += 1
        at += timedelta(minutes=1)
        user = PEOPLE[(worker * 50 + n) % len(PEOPLE)]
        decision, run = store.reserve(CLASS, Request(user=user, server=f"w{worker}", profile=H100_X1), at)
        if run is not None:
            store.release_run(run, at + timedelta(seconds=30))


def test_sigkill_in_the_middle_loses_nothing_and_counts_nothing_twice(db_url: str) -> None:
    Store(db_url).close()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_churn, args=(db_url, w)) for w in range(3)]
    for p in procs:
        p.start()
    watcher = Store(db_url, migrate=False)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:  # kill them once they are well into their work, however loaded the machine
        time.sleep(1)
        with watcher.engine.connect() as conn:
            if (
                conn.execute(select(func.count()).select_from(runs).where(runs.c.ended.is_not(None))).scalar() or 0
            ) > 40:
                break
    watcher.close()
    for p in procs:
        assert p.pid is not None
        os.kill(p.pid, signal.SIGKILL)
        p.join(10)

    store = Store(db_url)  # the "restarted hub"
    with store.engine.connect() as conn:
        closed = list(conn.execute(select(runs).where(runs.c.ended.is_not(None))))
        open_count = conn.execute(select(func.count()).select_from(runs).where(runs.c.ended.is_(None))).scalar()
        rolled = conn.execute(
            select(func.sum(usage_rollups.c.gpu_ms), func.sum(usage_rollups.c.runs)).where(
                usage_rollups.c.kind == "tenant", usage_rollups.c.period == "day"
            )
        ).one()
    assert len(closed) > 20, "the workers made too little progress to test anything"
    # every closed run is in the roll-ups exactly once, and nothing else is
    assert rolled[1] == len(closed)
    assert rolled[0] == sum(r.gpu_count * int((r.ended - r.started).total_seconds() * 1000) for r in closed)
    assert open_count is not None and open_count <= 3  # at most one reservation per killed worker

    store.reconcile_at_first_admission()  # nothing survived the crash: the restarted hub closes them
    decision, _ = store.reserve(
        CLASS, Request(user="student000", server="after", profile=H100_X1), NOW + timedelta(days=1)
    )
    assert decision.allowed
    assert [r.holding.server for r in store.open_runs()] == ["after"]
    store.close()

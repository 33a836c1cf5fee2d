"""The embedded mode's records of workspace processes (spawner/workspaces.py): which records a
restarted hub adopts, and the process facts they rest on."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from spawner.workspaces import (
    MARKER,
    Record,
    Registry,
    marked_processes,
    new_record,
    orphans,
    process_start,
    stop_processes,
)


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    record_id = "unit-" + os.urandom(6).hex()
    proc = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"],
        env={**os.environ, MARKER: record_id},
        start_new_session=True,
    )
    proc.record_id = record_id  # type: ignore[attr-defined]
    yield proc
    proc.kill()
    proc.wait()


def test_registry_writes_reads_and_removes_records(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "workspaces")
    record = new_record("bob", "k", ["1"], "run-1")
    registry.write(record)
    (tmp_path / "workspaces" / "torn.tmp").write_text("{")  # a write cut short is never read
    assert registry.records() == [record]
    done = registry.started(record, os.getpid())
    assert registry.records() == [done] and done.started == process_start(os.getpid())
    assert registry.find(("bob", "k"), os.getpid()) == done
    assert registry.find(("bob", "other"), os.getpid()) is None
    registry.remove(record.id)
    registry.remove(record.id)  # twice is harmless
    assert registry.records() == []


def test_a_reused_pid_is_not_the_recorded_process() -> None:
    me = os.getpid()
    start = process_start(me)
    assert start is not None
    alive = Record("a", "bob", "k", ("1",), "r", pid=me, started=start)
    reused = Record("b", "carol", "", ("2",), "r", pid=me, started=start - 1)
    assert orphans([alive, reused], {("bob", "k"): me, ("carol", ""): me}) == [reused]


@pytest.mark.parametrize(
    ("running", "orphaned"),
    [
        ({("bob", "k"): "me"}, False),  # the hub lists it with this pid: adopted
        ({("bob", "k"): None}, True),  # listed, but its state has no pid (killed while starting)
        ({("bob", "k"): 1}, True),  # listed with another pid
        ({}, True),  # not listed at all
    ],
)
def test_only_a_live_process_the_hub_lists_with_its_pid_is_adopted(running: dict, orphaned: bool) -> None:
    me = os.getpid()
    record = Record("a", "bob", "k", ("1",), "r", pid=me, started=process_start(me))
    listed = {key: me if pid == "me" else pid for key, pid in running.items()}
    assert (orphans([record], listed) == [record]) is orphaned


def test_a_record_without_pid_is_an_orphan_found_by_its_marker(sleeper: subprocess.Popen[bytes]) -> None:
    record = Record(sleeper.record_id, "bob", "k", ("1",), "r")  # type: ignore[attr-defined]
    assert orphans([record], {("bob", "k"): None}) == [record]
    assert marked_processes([record.id]) == {record.id: [sleeper.pid]}
    assert marked_processes(["nobody"]) == {}


def test_stop_processes_ends_them(sleeper: subprocess.Popen[bytes]) -> None:
    assert asyncio.run(stop_processes([sleeper.pid], grace=5)) == []
    sleeper.wait(5)
    assert process_start(sleeper.pid) is None

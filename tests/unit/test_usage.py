"""quotas.usage: the reservation book (usage now) and the ledger (GPU-hours over time)."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType

import pytest

from quotas.policy import Request
from quotas.usage import Ledger, ReservationBook, month_period

from .builders import A100_X1, CPU_SMALL, H100_X1, H100_X4, SNU, hold, with_quota

H100_X2 = dataclasses.replace(H100_X1, id="h100-x2", gpu_count=2)
NOV_2 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def hours(n: float) -> timedelta:
    return timedelta(hours=n)


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ---------------------------------------------------------------------------
# ReservationBook


def test_reserve_the_last_gpu_only_once() -> None:
    tenant = with_quota(gpus=MappingProxyType({"H100": 1}))
    book = ReservationBook()
    first, run = book.reserve(tenant, Request("alice", "", H100_X1), NOV_2)
    second, _ = book.reserve(tenant, Request("bob", "", H100_X1), NOV_2)
    assert first.allowed and run is None  # no ledger, no run id
    assert not second.allowed
    assert second.code == "gpus"
    assert "uses 1 of 1 H100 GPUs (alice: 1)" in second.reason
    assert [h.user for h in book.holdings("snu-ai")] == ["alice"]


def test_reserve_the_same_server_twice_is_refused() -> None:
    book = ReservationBook()
    assert book.reserve(SNU, Request("alice", "", CPU_SMALL), NOV_2)[0].allowed
    again, _ = book.reserve(SNU, Request("alice", "", CPU_SMALL), NOV_2)
    assert again.code == "running"
    assert len(book.holdings("snu-ai")) == 1


def test_release_frees_and_releasing_twice_is_harmless() -> None:
    book = ReservationBook()
    book.reserve(SNU, Request("alice", "", H100_X4), NOV_2)
    book.reserve(SNU, Request("bob", "", H100_X4), NOV_2)
    assert book.reserve(SNU, Request("carol", "", H100_X1), NOV_2)[0].code == "gpus"

    released = book.release(("alice", ""), NOV_2)
    assert released is not None and released.profile == "h100-x4"
    assert book.release(("alice", ""), NOV_2) is None
    assert book.release(("nobody", "x"), NOV_2) is None
    assert book.held_by(("alice", "")) is None
    assert [h.user for h in book.holdings("snu-ai")] == ["bob"]
    assert book.reserve(SNU, Request("carol", "", H100_X1), NOV_2)[0].allowed


def test_restore_holds_without_admission_and_counts_against_the_quota() -> None:
    book = ReservationBook()
    # a server that survived a restart is held even if the ceiling was lowered meanwhile
    tenant = with_quota(gpus=MappingProxyType({"H100": 2}))
    book.restore(hold("alice", H100_X4), None)
    assert book.held_by(("alice", "")) == hold("alice", H100_X4)
    refused, _ = book.reserve(tenant, Request("bob", "", H100_X1), NOV_2)
    assert refused.code == "gpus"
    assert "uses 4 of 2 H100 GPUs (alice: 4)" in refused.reason


def test_usage_exclude_leaves_out_one_server() -> None:
    book = ReservationBook()
    book.restore(hold("alice", CPU_SMALL), None)
    book.restore(hold("bob", CPU_SMALL), None)
    assert len(book.usage(SNU, NOV_2).holdings) == 2
    assert [h.user for h in book.usage(SNU, NOV_2, exclude=("alice", "")).holdings] == ["bob"]


def test_usage_names_the_period() -> None:
    used = ReservationBook().usage(SNU, NOV_2)
    assert used.gpu_hours == 0
    assert used.period_name == "November 2026"
    assert used.period_resets == date(2026, 12, 1)


def test_one_release_frees_a_server_reserved_in_two_tenants() -> None:
    book = ReservationBook()
    nova = dataclasses.replace(SNU, id="nova-labs")
    book.reserve(SNU, Request("alice", "", CPU_SMALL), NOV_2)
    second, _ = book.reserve(nova, Request("alice", "", CPU_SMALL), NOV_2)
    book.release(("alice", ""), NOV_2)
    assert not second.allowed or book.held_by(("alice", "")) is None


def test_reserve_and_release_write_the_ledger(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.jsonl")
    book = ReservationBook(ledger)
    decision, run = book.reserve(SNU, Request("alice", "train", H100_X1), NOV_2)
    assert decision.allowed and run is not None
    assert ledger.open_runs() == {run}
    book.release(("alice", "train"), NOV_2 + hours(2))
    assert ledger.open_runs() == set()
    events = lines(ledger.path)
    assert [(e["event"], e["run"]) for e in events] == [("start", run), ("end", run)]
    assert ledger.gpu_hours("snu-ai", NOV_2, NOV_2 + hours(5)) == 2


def test_refused_reserve_writes_nothing(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.jsonl")
    book = ReservationBook(ledger)
    decision, run = book.reserve(SNU, Request("mallory", "", CPU_SMALL), NOV_2)
    assert not decision.allowed and run is None
    assert not ledger.path.exists()


def test_book_usage_reads_the_budget_from_the_ledger(tmp_path: Path) -> None:
    tenant = with_quota(gpu_hours_per_month=Decimal(10))
    book = ReservationBook(Ledger(tmp_path / "ledger.jsonl"))
    _, run = book.reserve(tenant, Request("alice", "", H100_X4), NOV_2)
    assert run is not None
    book.release(("alice", ""), NOV_2 + hours(2))  # 4 GPUs x 2 h = 8 GPU-hours
    later = NOV_2 + hours(3)
    assert book.usage(tenant, later).gpu_hours == 8
    assert book.reserve(tenant, Request("alice", "", H100_X1), later)[0].allowed  # 8 < 10

    book.release(("alice", ""), later + hours(2))  # +2 GPU-hours: 10 of 10
    refused, _ = book.reserve(tenant, Request("bob", "", A100_X1), later + hours(2))
    assert refused.code == "budget"
    assert "has used 10.0 of its 10.0 GPU-hours for November 2026" in refused.reason
    assert "resets on 2026-12-01 (UTC)" in refused.reason
    cpu_only, _ = book.reserve(tenant, Request("bob", "", CPU_SMALL), later + hours(2))
    assert cpu_only.allowed


def test_book_usage_skips_the_ledger_without_a_budget(tmp_path: Path) -> None:
    tenant = with_quota(gpu_hours_per_month=None)
    book = ReservationBook(Ledger(tmp_path / "ledger.jsonl"))
    book.reserve(tenant, Request("alice", "", H100_X4), NOV_2)
    assert book.usage(tenant, NOV_2 + hours(10)).gpu_hours == 0


# ---------------------------------------------------------------------------
# Ledger


def test_start_and_end_are_persisted(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "ledger.jsonl"
    ledger = Ledger(path)
    run = ledger.start(hold("alice", H100_X4, "train"), NOV_2)
    assert ledger.end(run, NOV_2 + hours(1)) is True
    start, end = lines(path)
    assert start == {
        "event": "start",
        "run": run,
        "at": "2026-11-02T09:00:00+00:00",
        "tenant": "snu-ai",
        "user": "alice",
        "server": "train",
        "profile": "h100-x4",
        "gpus": {"H100": 4},
        "cpu": "32",
        "memory": str(256 * 2**30),
    }
    assert end == {"event": "end", "run": run, "at": "2026-11-02T10:00:00+00:00"}
    assert path.stat().st_mode & 0o777 == 0o600


def test_replay_after_reopen_gives_the_same_gpu_hours(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    ledger = Ledger(path)
    done = ledger.start(hold("alice", H100_X4), NOV_2)
    ledger.end(done, NOV_2 + timedelta(minutes=90))
    still_open = ledger.start(hold("bob", H100_X1), NOV_2 + hours(1))
    ledger.start(hold("carol", CPU_SMALL), NOV_2)
    ledger.start(hold("dave", H100_X1, tenant="nova-labs"), NOV_2)
    now = NOV_2 + hours(4)
    expected = Decimal(4) * Decimal("1.5") + Decimal(1) * 3  # 6 + 3
    assert ledger.gpu_hours("snu-ai", NOV_2, now) == expected

    reopened = Ledger(path)
    assert reopened.gpu_hours("snu-ai", NOV_2, now) == expected
    assert reopened.gpu_hours("nova-labs", NOV_2, now) == 4
    assert still_open in reopened.open_runs()
    assert done not in reopened.open_runs()


def test_torn_last_line_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    ledger = Ledger(path)
    run = ledger.start(hold("alice", H100_X1), NOV_2)
    with path.open("a") as f:
        f.write('{"at": "2026-11-02T10:00:00+00:00", "event": "end", "ru')  # power loss mid-write
    reopened = Ledger(path)
    assert reopened.open_runs() == {run}
    assert reopened.gpu_hours("snu-ai", NOV_2, NOV_2 + hours(2)) == 2


def test_record_written_after_a_torn_line_survives_the_next_replay(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    Ledger(path).start(hold("alice", H100_X1), NOV_2)
    with path.open("a") as f:
        f.write('{"at": "2026-11-02T10:00:00+00:00", "event": "end", "ru')
    run = Ledger(path).start(hold("bob", H100_X1), NOV_2)  # the hub restarted and a new server started
    assert run in Ledger(path).open_runs()


def test_end_twice_or_unknown_changes_nothing(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.jsonl")
    run = ledger.start(hold("alice", H100_X1), NOV_2)
    assert ledger.end(run, NOV_2 + hours(1)) is True
    assert ledger.end(run, NOV_2 + hours(5)) is False
    assert ledger.end("no-such-run", NOV_2) is False
    assert [e["event"] for e in lines(ledger.path)] == ["start", "end"]
    assert ledger.gpu_hours("snu-ai", NOV_2, NOV_2 + hours(9)) == 1


def test_gpu_hours_are_clipped_to_the_month(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.jsonl")
    # 2 GPUs from 31 October 22:00 to 1 November 02:00: only the 2 hours in November count
    run = ledger.start(hold("alice", H100_X2), datetime(2026, 10, 31, 22, tzinfo=UTC))
    ledger.end(run, datetime(2026, 11, 1, 2, tzinfo=UTC))
    # an open run counts up to now, not beyond
    ledger.start(hold("bob", H100_X1), datetime(2026, 11, 1, 3, tzinfo=UTC))
    now = datetime(2026, 11, 1, 5, tzinfo=UTC)
    start, end, name = month_period(now)
    assert ledger.gpu_hours("snu-ai", start, now) == 2 * 2 + 1 * 2
    october, _, _ = month_period(datetime(2026, 10, 15, tzinfo=UTC))
    assert ledger.gpu_hours("snu-ai", october, start) == 2 * 2


@pytest.mark.parametrize(
    ("now", "start", "end", "name"),
    [
        (datetime(2026, 11, 17, 13, 5, tzinfo=UTC), "2026-11-01", "2026-12-01", "November 2026"),
        (datetime(2026, 12, 31, 23, 59, tzinfo=UTC), "2026-12-01", "2027-01-01", "December 2026"),
        (datetime(2027, 1, 1, 0, 0, tzinfo=UTC), "2027-01-01", "2027-02-01", "January 2027"),
        # 1 December 08:00 in Seoul is still 30 November in UTC
        (datetime(2026, 12, 1, 8, 0, tzinfo=timezone(timedelta(hours=9))), "2026-11-01", "2026-12-01", "November 2026"),
    ],
)
def test_month_period(now: datetime, start: str, end: str, name: str) -> None:
    begin, finish, label = month_period(now)
    assert begin == datetime.fromisoformat(start).replace(tzinfo=UTC)
    assert finish == datetime.fromisoformat(end).replace(tzinfo=UTC)
    assert label == name

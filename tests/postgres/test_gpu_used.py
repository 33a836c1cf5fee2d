"""GPU-hours used (utilization-weighted) in the ledger, on SQLite and PostgreSQL (issue 18)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import MetaData, Table, inspect

from quotas.policy import Request
from quotas.store import MIGRATIONS, MS_PER_HOUR, Store, make_engine
from tests.unit.builders import H100_X1, H100_X4, SNU

HOUR_MS = int(MS_PER_HOUR)


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = Store(db_url)
    yield s
    s.close()


def test_used_hours_are_shared_over_the_months_as_held_hours(store: Store) -> None:
    start = datetime(2026, 10, 31, 22, 0, tzinfo=UTC)
    _, run = store.reserve(SNU, Request(user="alice", server="", profile=H100_X4), start)
    assert run is not None
    # 4 GPUs for 5 h (2 in October, 3 in November), used at 50 %: 10 GPU-hours used of 20 held
    assert store.add_gpu_use(("alice", ""), 4 * HOUR_MS)
    assert store.add_gpu_use(("alice", ""), 6 * HOUR_MS)
    assert not store.add_gpu_use(("bob", ""), HOUR_MS)  # no open run: nothing written
    end = datetime(2026, 11, 1, 3, 0, tzinfo=UTC)

    # open: the use so far is shared the same way
    october = store.usage_report("snu-ai", date(2026, 10, 1), date(2026, 11, 1), end)
    assert [(r.gpu_hours, r.gpu_used_hours) for r in october] == [(Decimal(8), Decimal(4))]
    assert october[0].efficiency == Decimal("0.5")

    assert store.release_run(run, end)
    assert store.runs_between("snu-ai", start, end)[0].gpu_used_ms == 10 * HOUR_MS
    october = store.usage_report("snu-ai", date(2026, 10, 1), date(2026, 11, 1), end, by="tenant")
    november = store.usage_report("snu-ai", date(2026, 11, 1), date(2026, 12, 1), end)
    both = store.usage_report("snu-ai", date(2026, 10, 1), date(2026, 12, 1), end)
    daily = store.usage_report("snu-ai", date(2026, 10, 31), date(2026, 11, 2), end, daily=True)
    assert [(r.subject, r.gpu_hours, r.gpu_used_hours) for r in october] == [("snu-ai", Decimal(8), Decimal(4))]
    assert [(r.gpu_hours, r.gpu_used_hours) for r in november] == [(Decimal(12), Decimal(6))]
    assert [(r.gpu_hours, r.gpu_used_hours) for r in both] == [(Decimal(20), Decimal(10))]
    assert [(r.day, r.gpu_used_hours) for r in daily] == [(date(2026, 10, 31), Decimal(4)), (date(2026, 11, 1), 6)]


def test_a_run_without_readings_used_nothing(store: Store) -> None:
    now = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
    _, run = store.reserve(SNU, Request(user="bob", server="", profile=H100_X1), now)
    assert run is not None and store.release_run(run, now + timedelta(hours=1))
    (row,) = store.usage_report("snu-ai", date(2026, 11, 1), date(2026, 12, 1), now + timedelta(hours=1))
    assert (row.gpu_hours, row.gpu_used_hours, row.efficiency) == (Decimal(1), Decimal(0), Decimal(0))


def test_upgrade_from_0004_keeps_the_ledger(db_url: str) -> None:
    engine = make_engine(db_url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0004")
    assert "gpu_used_ms" not in {c["name"] for c in inspect(engine).get_columns("runs")}
    runs = Table("runs", MetaData(), autoload_with=engine)
    started = datetime(2026, 11, 2, 9, 0)
    with engine.begin() as conn:
        conn.execute(
            runs.insert().values(
                id="0" * 32,
                tenant=SNU.id,
                user="alice",
                server="",
                profile=H100_X1.id,
                groups=[],
                gpus={"H100": 1},
                gpu_count=1,
                cpu_milli=8000,
                memory_bytes=2**30,
                started=started,
                ended=None,
                end_reason=None,
            )
        )
    engine.dispose()

    store = Store(db_url)  # upgrades to the newest migration
    try:
        (kept,) = store.open_runs()
        assert (kept.id, kept.holding.gpus, kept.gpu_used_ms) == ("0" * 32, {"H100": 1}, 0)
        assert store.add_gpu_use(("alice", ""), HOUR_MS // 2)
        end = started.replace(tzinfo=UTC) + timedelta(hours=1)
        assert store.release(("alice", ""), end) is not None
        (row,) = store.usage_report("snu-ai", date(2026, 11, 1), date(2026, 12, 1), end)
        assert (row.gpu_hours, row.gpu_used_hours) == (Decimal(1), Decimal("0.5"))
    finally:
        store.close()

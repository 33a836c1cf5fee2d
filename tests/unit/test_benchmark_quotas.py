"""benchmarks/quotas.py stays runnable and its checks stay able to fail: the generators, the bulk
loader against ``Store.record_run``, the ledger check, and the measurement at a tiny size (no
timings asserted)."""

from __future__ import annotations

import importlib.util
import random
import sys
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from types import ModuleType

import pytest
from sqlalchemy import select

from benchmarks._readme import markers, write_section
from quotas.schema import runs
from quotas.store import Store

from .conftest import REPO


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    path = REPO / "benchmarks" / "quotas.py"
    spec = importlib.util.spec_from_file_location("benchmarks_quotas", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def sqlite_url(tmp_path: Path, name: str) -> str:
    return f"sqlite:///{tmp_path / name / 'quotas.sqlite'}"


def test_platform_is_deterministic_and_every_request_is_a_members(bench: ModuleType) -> None:
    plat = bench.make_platform(seed=1, tenants=6)
    assert plat == bench.make_platform(seed=1, tenants=6)
    assert plat != bench.make_platform(seed=2, tenants=6)
    assert len(plat.tenants) == 6
    for tenant in plat.tenants.values():
        for profile_id in tenant.profiles:  # every allowed profile fits the ceiling
            for gpu_type, n in bench.PROFILES[profile_id].gpus.items():
                assert n <= tenant.quota.gpus[gpu_type]
    assert all(limit.tenant in plat.tenants for limit in plat.limits)
    assert all(r.ended is not None and r.started < r.ended <= bench.BASE for r in plat.history)

    rng = random.Random(5)
    for n in range(200):
        tenant, request = plat.draw(rng, f"s{n}")
        assert tenant.has_member(request.user, request.groups)
        assert request.profile.id in tenant.profiles
        assert request.server == f"s{n}"


def test_year_is_deterministic_and_shaped_as_promised(bench: ModuleType) -> None:
    year = bench.make_year(seed=3, users=20, active=0.5)
    again = bench.make_year(seed=3, users=20, active=0.5)
    assert [(r.holding, r.started, r.ended) for r in year.runs] == [(r.holding, r.started, r.ended) for r in again.runs]
    assert len(year.open) == 2
    for r in year.closed:
        assert r.started.weekday() < 5 and r.started.year == 2026
        assert timedelta(hours=1) <= r.ended - r.started < timedelta(hours=10)
        assert r.ended < bench.REPORT_NOW
        assert r.ended.time() != datetime.min.time()
    assert all(r.ended is None and r.started < bench.REPORT_NOW for r in year.open)
    assert any(r.holding.gpus for r in year.closed) and any(not r.holding.gpus for r in year.closed)


def test_bulk_load_writes_what_record_run_writes(bench: ModuleType, tmp_path: Path) -> None:
    year = bench.make_year(seed=4, users=6, active=0.4)
    sample = bench.year_sample(year, people=1, edges=20)
    assert any(r.ended.month != r.started.month for r in sample)  # month ends are in the sample
    assert any(r.ended.date() != r.started.date() for r in sample)  # and midnights
    replay = Store(sqlite_url(tmp_path, "replay"))
    bench.verify_bulk(replay, sample)
    replay.close()

    store = Store(sqlite_url(tmp_path, "year"))
    runs, rollups = bench.bulk_load(store, year.runs, seed=4)
    assert runs == len(year.runs)
    assert rollups == len(bench.rollups_of(year.runs))
    tid = year.tenant.id
    bench.check_report(
        store.usage_report(tid, *bench.YEAR, bench.REPORT_NOW, by="user"),
        bench.expected_report(year, *bench.YEAR, bench.REPORT_NOW, False),
        "year",
    )
    bench.check_report(
        store.usage_report(tid, *bench.MONTH, bench.REPORT_NOW, by="user", daily=True),
        bench.expected_report(year, *bench.MONTH, bench.REPORT_NOW, True),
        "month",
    )
    store.close()


def test_the_bulk_check_fails_when_the_rows_differ(bench: ModuleType, tmp_path: Path) -> None:
    year = bench.make_year(seed=4, users=3, active=0.4)
    sample = bench.year_sample(year, people=1, edges=5)
    replay = Store(sqlite_url(tmp_path, "replay"))
    extra = sample[0]
    replay.record_run(extra.holding, extra.started, extra.ended)  # one run too many in the database
    with pytest.raises(AssertionError, match="differ"):
        bench.verify_bulk(replay, sample)
    replay.close()


def test_the_report_check_fails_on_a_wrong_number(bench: ModuleType) -> None:
    year = bench.make_year(seed=4, users=3, active=0.4)
    want = bench.expected_report(year, *bench.YEAR, bench.REPORT_NOW, False)
    user, (gpu, cpu, runs) = sorted(want.items())[0]
    rows = [bench.UsageRow(k[0], k[1], *v) for k, v in want.items()]
    bench.check_report(rows, want, "as computed")
    rows = [r if (r.subject, r.day) != user else bench.UsageRow(r.subject, r.day, gpu + 1, cpu, runs) for r in rows]
    with pytest.raises(AssertionError, match="1 of 3 rows are wrong"):
        bench.check_report(rows, want, "one person off by an hour")


def test_the_ledger_check_catches_a_double_booking_and_a_lost_run(bench: ModuleType, tmp_path: Path) -> None:
    plat = bench.make_platform(seed=1, tenants=6)
    url = sqlite_url(tmp_path, "ledger")
    store = Store(url)
    bench.prepare_reservations(store, plat, seed=1)
    spent = {t: store.usage(tenant, bench.BASE).gpu_hours for t, tenant in plat.tenants.items()}
    with store.engine.connect() as conn:
        history = {r.id for r in conn.execute(select(runs.c.id))}
    # A tenant within its budget gets its biggest GPU profile more often at once than its ceiling allows.
    tenant = next(t for t in plat.tenants.values() if spent[t.id] < t.quota.gpu_hours_per_month)
    profile = max((bench.PROFILES[p] for p in tenant.profiles), key=lambda p: p.gpu_count)
    times = tenant.quota.gpus[profile.gpu_type] // profile.gpu_count + 1
    later = timedelta(days=30)  # next month: roll-ups of their own, the loader inserts them
    past = [
        bench.PastRun(
            bench.holding_of(tenant.id, f"person{i}", "", profile, ()),
            bench.BASE + later + timedelta(seconds=1),
            bench.BASE + later + timedelta(seconds=5),
        )
        for i in range(times)
    ]
    bench.bulk_load(store, past, seed=99)
    store.close()
    ids = bench.run_ids(99)
    returned = int((later + timedelta(seconds=1.5)).total_seconds() * 1e9)  # when reserve returned
    granted = [[returned - 10**6, 10**6, "ok", next(ids), returned, True] for _ in past]

    lost = [[returned - 10**6, 10**6, "ok", "f" * 32, returned, True]]  # granted, never written
    result = bench.Reservations("sqlite", 1, 1, 1.0, [], 0, Counter(), [], 0.0, 0.0)
    bench.check_ledger(url, plat, 0, granted + lost, history, spent, result)
    over = f"{profile.gpu_type} GPUs, over its ceiling of {tenant.quota.gpus[profile.gpu_type]}"
    assert any(f"tenant {tenant.id} held" in p and over in p for p in result.problems), result.problems
    assert any("1 granted without a run" in p for p in result.problems), result.problems

    # The same ledger with one of those runs granted (the others predating the clients) is right.
    fine = bench.Reservations("sqlite", 1, 1, 1.0, [], 0, Counter(), [], 0.0, 0.0)
    bench.check_ledger(url, plat, 0, granted[:1], history | {g[3] for g in granted[1:]}, spent, fine)
    assert fine.problems == []
    assert fine.ledger_runs == 1


@pytest.mark.parametrize("pace", [0.0, 5.0])
def test_reservations_run_end_to_end_and_the_ledger_agrees(bench: ModuleType, tmp_path: Path, pace: float) -> None:
    plat = bench.make_platform(seed=2, tenants=5)
    result = bench.measure_reservations(
        sqlite_url(tmp_path, "reserve"), "sqlite", plat, 2, 5, 2, 2, duration=1.0, warmup=0.2, pace=pace
    )
    assert result.problems == []
    assert result.total_reserves > 0 and result.total_granted > 0
    assert result.ledger_runs == result.total_granted
    assert len(result.reserve_ns) == sum(result.codes.values())
    assert result.client_cpu > 0
    if pace:  # 4 clients arriving 5 times a second for 1.2 s: nowhere near a client that never pauses
        assert result.total_reserves < 4 * 5 * 1.2 * 3
    stats = bench.summarize(result.reserve_ns)
    assert stats["p50"] <= stats["p99"] <= stats["max"]


def test_summarize_uses_nearest_rank(bench: ModuleType) -> None:
    stats = bench.summarize([i * 1_000_000 for i in range(1, 101)])  # 1..100 ms
    assert (stats["p50"], stats["p99"], stats["max"], stats["mean"]) == (50, 99, 100, 50.5)


def test_write_section_replaces_only_its_own_markers(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    a_begin, a_end = markers("a")
    b_begin, b_end = markers("b")
    readme.write_text(f"# T\n\n{a_begin}\nold a\n{a_end}\nmiddle\n{b_begin}\nold b\n{b_end}\nend\n")
    write_section(readme, "b", "new b\n")
    assert readme.read_text() == f"# T\n\n{a_begin}\nold a\n{a_end}\nmiddle\n{b_begin}\nnew b\n{b_end}\nend\n"
    write_section(readme, "c", "new c")
    assert readme.read_text().endswith(f"end\n\n{markers('c')[0]}\nnew c\n{markers('c')[1]}\n")
    readme.write_text(f"{a_begin}\nx\n{a_end}\n{a_begin}\ny\n{a_end}\n")
    with pytest.raises(ValueError, match="must each appear once"):
        write_section(readme, "a", "z")
    assert readme.read_text() == f"{a_begin}\nx\n{a_end}\n{a_begin}\ny\n{a_end}\n"  # left as it was


def test_bad_options_are_refused_with_a_reason(bench: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        bench.main(["--layouts", "5by10"])
    assert "PROCESSESxTHREADS" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.main(["--backends", "mysql"])
    assert "sqlite and postgres" in capsys.readouterr().err


@pytest.mark.postgres
def test_main_records_both_backends(bench: ModuleType, tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    begin, end = markers("quotas")
    readme.write_text(f"# Benchmarks\n\nbefore\n{begin}\nold results\n{end}\nafter\n")
    argv = ["--tenants", "4", "--layouts", "1x2", "--duration", "0.5", "--warmup", "0.1"]
    argv += ["--users", "4", "--repeats", "2", "--workdir", str(tmp_path / "work"), "--write", str(readme)]
    assert bench.main(argv) == 0
    text = readme.read_text()
    assert text.startswith(f"# Benchmarks\n\nbefore\n{begin}\n") and text.endswith(f"{end}\nafter\n")
    assert "old results" not in text
    for backend in ("sqlite", "postgres"):
        assert f"| {backend} | 1 process x 2 threads |" in text
        assert f"| {backend} | `usage_report` 2026-01-01..2027-01-01, by user |" in text
    assert "PostgreSQL 15" in text and "Target p99 reserve < 20 ms on PostgreSQL" in text
    server_log = (tmp_path / "work" / "postgres" / "postgres.log").read_text().splitlines()
    assert "database system is shut down" in server_log[-1]  # the script stopped its server

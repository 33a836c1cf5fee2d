"""benchmarks/sharing.py's pure parts: the day of demand (deterministic, shaped as described) and the
figures computed from a replay's records (utilization while demand exceeds supply, waits, refusals,
position lags), on hand-made records. The replay itself needs the Kueue bed (run the script)."""

from __future__ import annotations

import importlib.util
import math
import statistics
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from quotas.loader import load_platform

from .conftest import REPO


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    path = REPO / "benchmarks" / "sharing.py"
    spec = importlib.util.spec_from_file_location("benchmarks_sharing", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def test_the_day_is_deterministic_and_each_tenant_has_its_own_stream(bench: ModuleType) -> None:
    day = bench.make_day(7, bench.FULL_TENANTS)
    assert day == bench.make_day(7, bench.FULL_TENANTS)
    assert day.requests != bench.make_day(8, bench.FULL_TENANTS).requests
    alone = bench.make_day(7, bench.FULL_TENANTS[:1])
    assert alone.requests == tuple(r for r in day.requests if r.tenant == bench.FULL_TENANTS[0].id)
    assert len({r.id for r in day.requests}) == len(day.requests)
    assert [r.arrival for r in day.requests] == sorted(r.arrival for r in day.requests)
    assert all(0 <= r.arrival < 24 * bench.HOUR for r in day.requests)


def test_the_day_is_shaped_as_promised(bench: ModuleType) -> None:
    # many seeds pooled, so that the laws show and not one draw
    requests = [r for seed in range(30) for r in bench.make_day(seed, bench.FULL_TENANTS).requests]
    hours = [r.duration / bench.HOUR for r in requests]
    assert all(bench.SESSION_MIN_H <= h <= bench.SESSION_MAX_H for h in hours)
    assert statistics.median(hours) == pytest.approx(bench.SESSION_MEDIAN_H, rel=0.1)
    share_two = sum(r.gpus == 2 for r in requests) / len(requests)
    assert {r.gpus for r in requests} == {1, 2} and share_two == pytest.approx(0.35, abs=0.04)
    # Little's law: the mean number of requests a day is the integral of the rate
    spec = bench.FULL_TENANTS[0]
    expected = sum(spec.rate(h / 60) for h in range(24 * 60)) / 60
    per_day = sum(r.tenant == spec.id for r in requests) / 30
    assert per_day == pytest.approx(expected, rel=0.12)
    # each tenant's arrivals crowd around its own peak
    for spec in bench.FULL_TENANTS:
        mine = [r.arrival / bench.HOUR for r in requests if r.tenant == spec.id]
        near = sum(abs((h - spec.peak_hour + 12) % 24 - 12) <= 3 for h in mine)
        assert near / len(mine) > 0.45, spec.id  # 6 h of 24 get about half of them


def test_demand_exceeds_supply_for_part_of_the_day_only(bench: ModuleType) -> None:
    day = bench.make_day(2026, bench.FULL_TENANTS)
    assert day.capacity == 16
    over = day.overloaded_hours()
    assert 3 <= len(over) * 0.25 <= 12, over
    assert day.expected_demand(3.0) < day.capacity / 2
    assert bench._spans(over) == "09:00-16:00"
    peaks = {s.peak_hour for s in bench.FULL_TENANTS}
    assert len(peaks) == len(bench.FULL_TENANTS)  # different peak hours
    for spec in bench.FULL_TENANTS:
        assert spec.offered_load(spec.peak_hour) > spec.ceiling > spec.offered_load(spec.peak_hour + 12)
    quick = bench.Options(quick=True).day()
    assert quick.capacity == 16 and quick.start_h == 8 and quick.hours == 8 and quick.overloaded_hours()


def test_percentile_is_nearest_rank(bench: ModuleType) -> None:
    values = list(range(1, 101))
    assert (bench.nearest_rank(values, 0.5), bench.nearest_rank(values, 0.95), bench.nearest_rank(values, 1)) == (
        50,
        95,
        100,
    )
    assert bench.nearest_rank([3.0], 0.95) == 3.0
    assert math.isnan(bench.nearest_rank([], 0.5))


def test_utilization_counts_only_the_looks_where_demand_reaches_supply(bench: ModuleType) -> None:
    S = bench.Sample
    samples = [
        S(0.0, {"a": 2}, {"a": 2}, {}),  # demand 2 < 4: not counted
        S(0.5, {"a": 2, "b": 1}, {"a": 2, "b": 2}, {"a": 1}),  # demand 5, 3 held: 0.75
        S(1.0, {"a": 2, "b": 2}, {"a": 2, "b": 2}, {}),  # demand 4 = supply, 4 held: 1.0
    ]
    ov = bench.overload(samples, 4, ["a", "b"])
    assert (ov.samples, ov.total) == (2, 3)
    assert ov.utilization == pytest.approx(0.875)
    assert ov.held == {"a": 2.0, "b": 1.5}
    assert ov.unplaced == pytest.approx(0.5)
    never = bench.overload(samples[:1], 4, ["a"])
    assert never.samples == 0 and math.isnan(never.utilization)


def test_a_waiting_request_fits_its_ceiling_with_those_ahead_of_it(bench: ModuleType) -> None:
    assert bench.fits_ceiling(2, 0, 2, 4)
    assert not bench.fits_ceiling(2, 1, 2, 4)  # one GPU asked ahead of it in the same queue
    assert not bench.fits_ceiling(5, 0, 1, 4)  # borrowing already: over its ceiling


def test_rows_give_waits_refusals_and_preemptions_per_tenant_and_overall(bench: ModuleType) -> None:
    R, Out = bench.Request, bench.Outcome
    h = bench.HOUR
    outcomes = [
        Out(R("a-0", "a", 0, 1, h), created=10.0, admitted=10.0, ended=20.0),
        Out(R("a-1", "a", 0, 2, h), created=10.0, admitted=13.0, preempted=15.0),
        Out(R("a-2", "a", 0, 1, 2 * h), created=11.0, refused=26.0, fit=True),
        Out(R("b-0", "b", 0, 1, h), created=12.0, admitted=18.0, ended=30.0),
        Out(R("b-1", "b", 0, 2, h), created=12.0, refused=27.0),
    ]
    got = {r.tenant: r for r in bench.rows(outcomes, ["a", "b"], compression=60.0)}  # 1 s = 1 min
    a, b, total = got["a"], got["b"], got["all"]
    assert (a.requests, a.admitted, a.refused, a.refused_fit, a.preempted) == (3, 2, 1, 1, 1)
    assert (a.wait_p50_min, a.wait_p95_min) == (0.0, 3.0)
    assert a.gpu_hours == pytest.approx(5.0)
    assert (b.requests, b.admitted, b.refused, b.refused_fit, b.preempted) == (2, 1, 1, 0, 0)
    assert (b.wait_p50_min, b.wait_p95_min) == (6.0, 6.0)
    assert (total.requests, total.refused, total.refused_fit, total.preempted) == (5, 2, 1, 1)
    assert (total.wait_p50_min, total.wait_p95_min) == (3.0, 6.0)
    assert [o.holding for o in outcomes] == [False, False, False, False, False]
    assert [o.waiting for o in outcomes] == [False] * 5
    assert Out(R("c", "c", 0, 1, h), created=1.0).waiting


def test_position_lags_follow_an_admission_to_the_first_answer_without_it(bench: ModuleType) -> None:
    P, A = bench.Poll, bench.Admission
    polls = [
        P("q", 0.0, 0.1, {"w1": 0, "w2": 1}),
        P("q", 0.5, 0.6, {"w1": 0, "w2": 1}),  # begun after w1's admission at 0.4: stale
        P("q", 1.0, 1.1, {"w2": 0}),
        P("q", 3.0, 3.1, {"w1": 0, "w2": 1}),  # w1 preempted, queued again: not a stale answer
        P("other", 0.0, 0.1, {"x": 0}),
        P("other", 2.0, 2.1, {}),
    ]
    lags = bench.position_lags([A("q", "w1", 0.4), A("other", "x", 1.0), A("q", "w2", 1.5)], polls)
    # x had nobody behind it, w2 was never listed again after: only w1 counts
    assert len(lags) == 1
    assert lags[0].seen == pytest.approx(0.7) and lags[0].stale == pytest.approx(0.2)
    fresh = bench.position_lags([A("q", "w1", 0.8)], polls)
    assert fresh[0].seen == pytest.approx(0.3) and fresh[0].stale == 0.0


def test_the_tenants_file_is_valid_and_only_sharing_borrows(bench: ModuleType, tmp_path: Path) -> None:
    specs = bench.FULL_TENANTS
    for sharing in (False, True):
        path = bench.tenants_file(specs, sharing, "1h", tmp_path / f"t-{sharing}.yaml")
        config = load_platform(path, REPO / "images" / "catalog.yaml")
        assert list(config.tenants) == [s.id for s in specs]
        for spec in specs:
            tenant = config.tenants[spec.id]
            assert tenant.quota.gpus == {"H100": spec.ceiling}
            assert tenant.sharing.cohort == bench.COHORT
            assert tenant.sharing.borrow["H100"] == (16 - spec.ceiling if sharing else 0)
            assert tenant.queue.max_wait.total_seconds() == 3600
        assert yaml.safe_load(path.read_text())["gpu_types"]["H100"]["product"] == "NVIDIA-H100-80GB-HBM3"


def test_a_pod_is_shaped_like_the_hubs(bench: ModuleType) -> None:
    request = bench.Request("a-001", "a", 0.0, 2, 60.0)
    pod = bench.pod_for(request, "static-a-001", "static", "NVIDIA-H100-80GB-HBM3", 1)
    labels = pod["metadata"]["labels"]
    assert labels["kueue.x-k8s.io/queue-name"] == "aidc"
    assert labels["kueue.x-k8s.io/priority-class"] == "aidc-workspace"
    assert labels["aidc.io/tenant"] == "a" and labels[bench.BENCH_LABEL] == "static"
    container = pod["spec"]["containers"][0]
    assert container["resources"]["requests"]["nvidia.com/gpu"] == "2"
    assert container["securityContext"]["runAsNonRoot"] is True
    assert pod["spec"]["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}


def test_bad_options_are_refused_with_a_reason(bench: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        bench.main(["--modes", "static,greedy"])
    assert "modes are static and sharing" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.main(["--minutes", "0"])
    assert "--minutes must be positive" in capsys.readouterr().err

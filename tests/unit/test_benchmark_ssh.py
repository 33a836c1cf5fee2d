"""benchmarks/ssh.py: its summaries, verdict and README section, from given timings (none measured)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks import ssh as bench
from benchmarks._readme import write_section

MIB_512 = 512 * 1024 * 1024


@pytest.mark.parametrize(
    ("values", "q", "want"),
    [
        ([5.0], 0.5, 5.0),
        ([3.0, 1.0, 2.0], 0.5, 2.0),
        ([1.0, 2.0, 3.0, 4.0], 0.5, 2.0),
        (list(map(float, range(1, 101))), 0.99, 99.0),
        (list(map(float, range(1, 101))), 1.0, 100.0),
        (list(map(float, range(1, 151))), 0.99, 149.0),
    ],
)
def test_nearest_rank(values: list[float], q: float, want: float) -> None:
    assert bench.nearest_rank(values, q) == want


def test_nearest_rank_of_nothing_is_not_a_number() -> None:
    assert math.isnan(bench.nearest_rank([], 0.5))


def test_throughput_is_megabytes_per_second_with_the_median() -> None:
    t = bench.throughput("gateway", 100_000_000, [2.0, 1.0, 4.0])
    assert t.mb_per_s == (50.0, 100.0, 25.0)
    assert t.median == 50.0


def test_latency_summary_is_in_milliseconds() -> None:
    e = bench.latency("direct", [0.001 * i for i in range(1, 101)])
    assert (e.n, e.p50, e.p99, e.max) == (100, pytest.approx(50.0), pytest.approx(99.0), pytest.approx(100.0))


def copies(gateway_s: list[float], direct_s: list[float]) -> dict[str, bench.Throughput]:
    return {
        "gateway": bench.throughput("gateway", MIB_512, gateway_s),
        "direct": bench.throughput("direct", MIB_512, direct_s),
    }


def echoes(gateway_ms: float, direct_ms: float) -> dict[str, bench.Latency]:
    return {
        "gateway": bench.latency("gateway", [gateway_ms / 1e3] * 10),
        "direct": bench.latency("direct", [direct_ms / 1e3] * 10),
    }


@pytest.mark.parametrize(
    ("gateway_s", "gateway_ms", "throughput_met", "latency_met"),
    [
        (10.0, 3.0, True, True),  # 80 % of direct exactly, +2 ms
        (12.0, 3.0, False, True),  # 67 %
        (10.0, 6.0, True, False),  # +5 ms is not under 5 ms
        (20.0, 9.0, False, False),
    ],
)
def test_verdict_against_the_targets(
    gateway_s: float, gateway_ms: float, throughput_met: bool, latency_met: bool
) -> None:
    v = bench.verdict(copies([gateway_s] * 3, [8.0] * 3), echoes(gateway_ms, 1.0))
    assert v.ratio == pytest.approx(8.0 / gateway_s)
    assert v.added_p50_ms == pytest.approx(gateway_ms - 1.0)
    assert (v.throughput_met, v.latency_met) == (throughput_met, latency_met)


def section(gateway_s: list[float], gateway_ms: float) -> str:
    return bench.render(
        recorded="Recorded 2026-01-02 on a test CPU",
        size_mib=512,
        repeats=3,
        keystrokes=150,
        copies=copies(gateway_s, [5.0, 5.5, 6.0]),
        echoes=echoes(gateway_ms, 0.25),
        openssh="OpenSSH_9.2p1",
        load_before=0.5,
        load_after=1.25,
        elapsed=95.4,
    )


def test_section_has_both_tables_and_says_plainly_when_a_target_is_missed() -> None:
    text = section([10.0, 11.0, 12.0], 1.75)
    assert text.startswith("Recorded 2026-01-02 on a test CPU, load average 0.50 at the start and 1.25 at the end;")
    assert "| gateway | 53.7, 48.8, 44.7 | 48.8 |" in text
    assert "| direct | 107.4, 97.6, 89.5 | 97.6 |" in text
    assert "| gateway | 10 | 1.75 | 1.75 | 1.75 |" in text
    assert "| direct | 10 | 0.25 | 0.25 | 0.25 |" in text
    assert "Throughput target ≥ 80% of direct: MISSES it (gateway 50% of direct" in text
    assert "p50 < 5 ms: meets it (+1.50 ms)" in text
    assert "The run took 95 s." in text


def test_section_says_meets_when_both_targets_are_met() -> None:
    text = section([6.0, 6.0, 6.0], 2.0)
    assert "MISSES" not in text
    assert "Throughput target ≥ 80% of direct: meets it (gateway 92% of direct" in text


def test_recording_replaces_only_the_ssh_section(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(
        "# B\n<!-- other:begin -->\nkeep\n<!-- other:end -->\n<!-- ssh:begin -->\nold\n<!-- ssh:end -->\ntail\n"
    )
    write_section(readme, bench.SECTION, section([6.0] * 3, 2.0))
    text = readme.read_text()
    assert "old" not in text and "keep" in text and text.endswith("<!-- ssh:end -->\ntail\n")
    assert "| direct | 107.4, 97.6, 89.5 | 97.6 |" in text


def cpu_use() -> dict[str, bench.CpuUse]:
    """1.5 GiB each way; direct took 4.5 s of copying, the gateway path 12 s."""
    gateway = {"client": 3.0, "gateway": 9.0, "proxy": 3.0, "hub": 0.15, "workspace server": 3.6, "sshd": 4.5}
    return {
        "gateway": bench.CpuUse("gateway", gateway, wall=12.0, gib=1.5),
        "direct": bench.CpuUse("direct", {"client": 3.0, "sshd": 4.5}, wall=4.5, gib=1.5),
    }


def test_cpu_use_per_gib_and_cpus_busy() -> None:
    cpu = cpu_use()
    assert cpu["gateway"].total == pytest.approx(23.25)
    assert cpu["gateway"].per_gib == pytest.approx(15.5)
    assert cpu["gateway"].cores == pytest.approx(23.25 / 12.0)
    assert cpu["direct"].per_gib == pytest.approx(5.0) and cpu["direct"].cores == pytest.approx(7.5 / 4.5)


def test_cpu_bound_ceilings_of_the_ratio() -> None:
    cpu = cpu_use()
    direct_gib_per_s = 1.5 / 4.5
    # 2 CPUs over 15.5 CPU-s per GiB through the gateway, against direct's measured rate
    assert bench.cpu_bound_ceiling(cpu, 2) == pytest.approx((2 / 15.5) / direct_gib_per_s)
    # without the gateway's 9 s: 14.25 CPU-s for 1.5 GiB
    assert bench.ceiling_without_gateway(cpu, 2) == pytest.approx((2 / (14.25 / 1.5)) / direct_gib_per_s)
    # more CPUs raise the ceiling in proportion
    assert bench.cpu_bound_ceiling(cpu, 4) == pytest.approx(2 * bench.cpu_bound_ceiling(cpu, 2))


def test_section_shows_cpu_per_gib_by_process_and_the_ceiling() -> None:
    text = bench.render(
        recorded="Recorded 2026-01-02 on a test CPU",
        size_mib=512,
        repeats=3,
        keystrokes=150,
        copies=copies([10.0, 11.0, 12.0], [5.0, 5.5, 6.0]),
        echoes=echoes(1.75, 0.25),
        openssh="OpenSSH_9.2p1",
        load_before=0.5,
        load_after=1.25,
        elapsed=95.4,
        cpu=cpu_use(),
        cores=2,
    )
    assert (
        "| path | client | gateway | proxy | hub | workspace server | sshd | total | CPUs busy while copying |" in text
    )
    assert "| gateway | 2.00 | 6.00 | 2.00 | 0.10 | 2.40 | 3.00 | 15.50 | 1.94 of 2 |" in text
    assert "| direct | 2.00 | – | – | – | – | 3.00 | 5.00 | 1.67 of 2 |" in text
    assert (
        "Per byte, the gateway path costs 3.1x the CPU of direct (the gateway itself 1.2x direct's whole path)." in text
    )
    assert "it could copy at most 39% of direct's measured speed" in text
    assert "A gateway that cost nothing would still leave at most 63%" in text


def test_proc_accounting_sees_a_child_and_its_cpu(tmp_path: Path) -> None:
    busy = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time\nt=time.process_time()\nwhile time.process_time()-t<0.3: pass\ntime.sleep(30)",
        ]
    )
    try:
        deadline = time.monotonic() + 10
        while bench.cpu_seconds(busy.pid) < 0.25:
            assert time.monotonic() < deadline, "the child never used CPU"
        assert bench.child_with(os.getpid(), "process_time") == busy.pid
        with pytest.raises(RuntimeError, match="expected one child"):
            bench.child_with(os.getpid(), "no-such-command-anywhere")
    finally:
        busy.kill()
        busy.wait()

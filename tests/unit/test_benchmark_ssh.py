"""benchmarks/ssh.py: its summaries, data set, verdict and README section, from given timings (none measured)."""

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


# -- the small-file data set -------------------------------------------------------------------------


def test_data_set_is_the_same_for_a_seed_within_its_sizes_and_100_files_a_folder() -> None:
    data = bench.data_set(250, seed=7)
    assert data == bench.data_set(250, seed=7)
    assert data != bench.data_set(250, seed=8)
    assert data.files == 250
    assert all(1024 <= size <= 100 * 1024 for size in data.sizes.values())
    assert data.bytes == sum(data.sizes.values())
    names = list(data.sizes)
    assert names[:2] == ["d000/f000000.bin", "d000/f000001.bin"]
    assert names[100] == "d001/f000100.bin" and names[-1] == "d002/f000249.bin"


def test_the_default_data_set_is_10000_files_of_1_to_100_kib() -> None:
    data = bench.data_set(10_000)
    assert data.files == 10_000
    assert min(data.sizes.values()) < 4 * 1024 and max(data.sizes.values()) > 96 * 1024
    assert 450e6 < data.bytes < 600e6  # about 50 KiB a file


def test_written_data_set_has_the_sizes_and_the_same_bytes_each_time(tmp_path: Path) -> None:
    data = bench.data_set(30, seed=3, smallest=10, largest=2000)
    bench.write_data_set(tmp_path / "a", data, seed=3)
    bench.write_data_set(tmp_path / "b", data, seed=3)
    assert {str(p.relative_to(tmp_path / "a")): p.stat().st_size for p in (tmp_path / "a").rglob("*.bin")} == data.sizes
    assert bench.manifest(tmp_path / "a") == bench.manifest(tmp_path / "b")


def test_manifest_counts_files_and_bytes_and_sees_a_changed_byte_a_missing_or_renamed_file(tmp_path: Path) -> None:
    data = bench.data_set(20, seed=1, smallest=10, largest=500)
    bench.write_data_set(tmp_path, data, seed=1)
    want = bench.manifest(tmp_path)
    assert (want.files, want.bytes) == (20, data.bytes)
    first = tmp_path / "d000" / "f000000.bin"
    body = first.read_bytes()
    first.write_bytes(bytes([body[0] ^ 1]) + body[1:])
    assert bench.manifest(tmp_path).sha256 != want.sha256
    assert (bench.manifest(tmp_path).files, bench.manifest(tmp_path).bytes) == (20, data.bytes)
    first.write_bytes(body)
    assert bench.manifest(tmp_path) == want
    first.rename(tmp_path / "d000" / "renamed.bin")
    assert bench.manifest(tmp_path) != want
    (tmp_path / "d000" / "renamed.bin").unlink()
    assert bench.manifest(tmp_path).files == 19


# -- CPU, ceilings, verdict, section ----------------------------------------------------------------


def copies(gateway_s: list[float], direct_s: list[float], size: int = MIB_512) -> dict[str, bench.Throughput]:
    return {
        "gateway": bench.throughput("gateway", size, gateway_s),
        "direct": bench.throughput("direct", size, direct_s),
    }


def echoes(gateway_ms: float, direct_ms: float) -> dict[str, bench.Latency]:
    return {
        "gateway": bench.latency("gateway", [gateway_ms / 1e3] * 10),
        "direct": bench.latency("direct", [direct_ms / 1e3] * 10),
    }


def cpu_use(gateway: float = 4.5) -> dict[str, bench.CpuUse]:
    """1.5 GiB each way; direct took 4.5 s of copying, the gateway path 9 s; the gateway ``gateway`` CPU-s."""
    return {
        "gateway": bench.CpuUse("gateway", {"client": 3.0, "gateway": gateway, "sshd": 4.5}, wall=9.0, gib=1.5),
        "direct": bench.CpuUse("direct", {"client": 3.0, "sshd": 4.5}, wall=4.5, gib=1.5),
    }


def test_cpu_use_per_gib_and_cpus_busy() -> None:
    cpu = cpu_use()
    assert cpu["gateway"].total == pytest.approx(12.0)
    assert cpu["gateway"].per_gib == pytest.approx(8.0)
    assert cpu["gateway"].role_per_gib("gateway") == pytest.approx(3.0)
    assert cpu["direct"].role_per_gib("gateway") == 0.0
    assert cpu["gateway"].cores == pytest.approx(12.0 / 9.0)
    assert cpu["direct"].per_gib == pytest.approx(5.0) and cpu["direct"].cores == pytest.approx(7.5 / 4.5)


def test_cpu_bound_ceilings_of_the_ratio() -> None:
    cpu = cpu_use()
    direct_gib_per_s = 1.5 / 4.5
    # 2 CPUs over 8 CPU-s per GiB through the gateway, against direct's measured rate
    assert bench.cpu_bound_ceiling(cpu, 2) == pytest.approx((2 / 8.0) / direct_gib_per_s)
    # without the gateway's 4.5 s: 7.5 CPU-s for 1.5 GiB, as direct
    assert bench.ceiling_without_gateway(cpu, 2) == pytest.approx((2 / 5.0) / direct_gib_per_s)
    # more CPUs raise the ceiling in proportion
    assert bench.cpu_bound_ceiling(cpu, 4) == pytest.approx(2 * bench.cpu_bound_ceiling(cpu, 2))


@pytest.mark.parametrize(
    ("scp_s", "gateway_cpu", "rsync_s", "gateway_ms", "met"),
    [
        (10.0, 5.25, 10.0, 2.9, (True, True, True, True)),  # 0.5x exactly, 3.5 s/GiB exactly, 0.7x, +1.9 ms
        (10.5, 5.25, 10.0, 2.9, (False, True, True, True)),
        (10.0, 5.4, 10.0, 2.9, (True, False, True, True)),
        (10.0, 5.25, 10.5, 2.9, (True, True, False, True)),
        (10.0, 5.25, 10.0, 3.0, (True, True, True, False)),  # +2 ms is not under 2 ms
    ],
)
def test_verdict_against_the_four_targets(
    scp_s: float, gateway_cpu: float, rsync_s: float, gateway_ms: float, met: tuple[bool, bool, bool, bool]
) -> None:
    v = bench.verdict(
        copies([scp_s] * 3, [5.0] * 3), cpu_use(gateway_cpu), copies([rsync_s] * 3, [7.0] * 3), echoes(gateway_ms, 1.0)
    )
    assert v.scp_ratio == pytest.approx(5.0 / scp_s)
    assert v.gateway_cpu_per_gib == pytest.approx(gateway_cpu / 1.5)
    assert v.rsync_ratio == pytest.approx(7.0 / rsync_s)
    assert v.added_p50_ms == pytest.approx(gateway_ms - 1.0)
    assert (v.scp_met, v.cpu_met, v.rsync_met, v.latency_met) == met


def results(scp_s: list[float], gateway_ms: float = 1.75, workers: int = 2) -> bench.Results:
    data = bench.data_set(100, seed=1)
    gib = 4 * 256 * 2**20 / 2**30
    return bench.Results(
        recorded="Recorded 2026-01-02 on a test CPU",
        openssh="OpenSSH_9.2p1",
        workers=workers,
        size_mib=512,
        repeats=3,
        scp=copies(scp_s, [5.0, 5.5, 6.0]),
        scp_cpu=cpu_use(),
        data=data,
        rsync=copies([2.0, 2.0, 2.0], [1.6, 1.6, 1.6], size=data.bytes),
        rsync_cpu=cpu_use(),
        together={
            "gateway": bench.Together(
                "gateway",
                4,
                256 * 2**20,
                (8.0, 10.0, 9.0),
                bench.CpuUse("gateway", {"client": 3.0, "gateway": 9.0, "sshd": 6.0}, wall=27.0, gib=3 * gib),
            ),
            "direct": bench.Together(
                "direct",
                4,
                256 * 2**20,
                (4.0, 4.5, 5.0),
                bench.CpuUse("direct", {"client": 3.0, "sshd": 6.0}, wall=13.5, gib=3 * gib),
            ),
        },
        keystrokes=150,
        echoes=echoes(gateway_ms, 0.25),
        cores=2,
        load_before=0.5,
        load_after=1.25,
        elapsed=295.4,
    )


def test_section_has_every_table_and_the_ceiling() -> None:
    text = bench.render(results([10.0, 11.0, 12.0]))
    assert text.startswith("Recorded 2026-01-02 on a test CPU, load average 0.50 at the start and 1.25 at the end;")
    assert "the gateway with 2 worker processes (`SSHGateway.workers`)" in text
    assert "| gateway | 53.7, 48.8, 44.7 | 48.8 |" in text
    assert "| direct | 107.4, 97.6, 89.5 | 97.6 |" in text
    # CPU per GiB: client, gateway, sshd; no proxy or jupyter-server-proxy any more
    assert "| path | client | gateway | sshd | total | CPUs busy while copying |" in text
    assert "| gateway | 2.00 | 3.00 | 3.00 | 8.00 | 1.33 of 2 |" in text
    assert "| direct | 2.00 | – | 3.00 | 5.00 | 1.67 of 2 |" in text
    assert "proxy" not in text.replace("the hub's proxy and jupyter-server-proxy", "")
    assert "the gateway path costs 1.6x the CPU of direct (the gateway itself 0.6x direct's whole path)" in text
    assert "2 CPUs / 8.00 CPU-s per GiB, which is **0.75x** direct's measured speed" in text
    assert "scp ran at 0.32x of direct, with 14.1 CPU-s per GiB on the gateway's path, the gateway 6.17" in text
    assert "`rsync -a` of 100 files of 1-100 KiB" in text
    assert "| 4 people at once" not in text and "**4 people at once**: alice, bob, carol and dave" in text
    assert "| gateway | 134.2, 107.4, 119.3 | 119.3 | 3.00 / 6.00 | 0.67 of 2 (gateway 0.33) |" in text
    assert "| direct | 268.4, 238.6, 214.7 | 238.6 | – / 3.00 | 0.67 of 2 |" in text
    assert "the gateway path moved 0.50x of direct's aggregate" in text
    assert "| gateway | 10 | 1.75 | 1.75 | 1.75 |" in text and "| direct | 10 | 0.25 | 0.25 | 0.25 |" in text
    assert "The run took 295 s." in text


def test_section_says_plainly_which_target_is_missed_and_why() -> None:
    text = bench.render(results([12.0, 12.0, 12.0], gateway_ms=2.5))
    assert (
        "- scp ≥ 0.5x direct: **MISSES it** (0.458x, median against median; the ceiling from CPU per GiB is 0.75x)"
        in text
    )
    assert "- gateway CPU ≤ 3.5 s/GiB: meets it (3.00 s/GiB, scp)" in text
    assert "- small-file rsync ≥ 0.7x direct: meets it (0.800x; the ceiling from CPU per GiB is 0.75x)" in text
    assert "- added keystroke p50 < 2 ms: **MISSES it** (+2.25 ms)" in text
    assert (
        "scp misses its target (0.458x of direct, target 0.5x): the gateway path needs 8.00 CPU-s per GiB against"
        " direct's 5.00, on 2 CPUs shared by client, gateway and sshd, which would allow up to 0.75x; it was not"
        " CPU-bound (it kept 1.33 of 2 CPUs busy)" in text
    )
    assert "rsync misses" not in text


def test_section_says_meets_when_every_target_is_met() -> None:
    text = bench.render(results([10.0, 10.0, 10.0], workers=1))
    assert "MISSES" not in text and "misses" not in text
    assert "- scp ≥ 0.5x direct: meets it (0.550x" in text
    assert "the gateway with 1 worker process (`SSHGateway.workers`)" in text


def test_recording_replaces_only_the_ssh_section(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(
        "# B\n<!-- other:begin -->\nkeep\n<!-- other:end -->\n<!-- ssh:begin -->\nstale text\n<!-- ssh:end -->\ntail\n"
    )
    write_section(readme, bench.SECTION, bench.render(results([6.0] * 3)))
    text = readme.read_text()
    assert "stale text" not in text and "keep" in text and text.endswith("<!-- ssh:end -->\ntail\n")
    assert "| direct | 107.4, 97.6, 89.5 | 97.6 |" in text


@pytest.mark.parametrize(
    ("names", "want"),
    [(["alice"], "alice"), (["alice", "bob"], "alice and bob"), (["a", "b", "c", "d"], "a, b, c and d")],
)
def test_together_names(names: list[str], want: str) -> None:
    assert bench.together_names(names) == want


# -- what the measuring relies on -------------------------------------------------------------------


def test_all_at_once_starts_every_job_together_and_times_until_the_last(tmp_path: Path) -> None:
    started: list[float] = []

    def job(seconds: float) -> float:
        started.append(time.perf_counter())
        time.sleep(seconds)
        return seconds

    wall = bench.all_at_once([lambda: job(0.05), lambda: job(0.2), lambda: job(0.1)])
    assert 0.2 <= wall < 1.0
    assert max(started) - min(started) < 0.1


def test_all_at_once_raises_what_a_job_raised() -> None:
    def fails() -> float:
        raise RuntimeError("scp exited 1")

    with pytest.raises(RuntimeError, match="scp exited 1"):
        bench.all_at_once([lambda: 0.0, fails])


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


def test_a_miss_below_the_cpu_ceiling_is_put_down_to_cpu() -> None:
    cpu = cpu_use()  # ceiling 0.75x on 2 CPUs, 0.375x on 1
    assert bench.why_missed("scp", 0.3, 0.5, cpu, 1, 0.5, 0.7).endswith(
        "so even perfectly scheduled it could reach only 0.38x of direct here."
    )
    text = bench.why_missed("rsync", 0.6, 0.7, cpu, 2, 0.5, 0.7)
    assert "would allow up to 0.75x; it was not CPU-bound" in text
    assert "(load average 0.50 at the start, 0.70 at the end)" in text

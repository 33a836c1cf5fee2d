"""How many gateway processes by default (CPU affinity and cgroup quotas, from folder trees shaped like
/sys/fs/cgroup), the one port they share, and how a worker's end reads in the log."""

from __future__ import annotations

import os
import signal
import socket
from fractions import Fraction
from pathlib import Path

import pytest

from sshgateway.workers import bind, cgroup_quotas, cpu_count, cpu_quota, describe_exit, usable_cpus


@pytest.mark.parametrize(
    "text, expected",
    [
        ("150000 100000", Fraction(3, 2)),  # cgroup v2 cpu.max: 1.5 CPUs
        ("400000 100000", Fraction(4)),
        ("max 100000", None),  # v2: no limit
        ("50000 100000", Fraction(1, 2)),  # v1 quota and period, joined
        ("-1 100000", None),  # v1: no limit
        ("", None),
        ("garbage here", None),
        ("100000", None),
        ("100000 0", None),
    ],
)
def test_cpu_quota(text: str, expected: Fraction | None) -> None:
    assert cpu_quota(text) == expected


@pytest.mark.parametrize(
    "affinity, quotas, expected",
    [
        (8, [], 8),  # no cgroup limit: every CPU it may run on
        (8, ["max 100000"], 8),
        (8, ["200000 100000"], 2),  # a container limited to 2 CPUs on an 8-CPU node
        (8, ["150000 100000"], 2),  # 1.5 CPUs: two processes use all of it
        (8, ["25000 100000"], 1),  # a quarter of a CPU: still one process
        (2, ["800000 100000"], 2),  # a quota above the affinity: the affinity
        (16, ["max 100000", "400000 100000", "300000 100000"], 3),  # the tightest of the cgroups above
        (16, ["-1 100000", "600000 100000"], 6),
        (0, [], 1),  # never none
    ],
)
def test_cpu_count(affinity: int, quotas: list[str], expected: int) -> None:
    assert cpu_count(affinity, quotas) == expected


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


def test_cgroup_v2_quotas_of_the_own_cgroup_and_those_above(tmp_path: Path) -> None:
    _write(tmp_path / "kubepods.slice" / "cpu.max", "max 100000")
    _write(tmp_path / "kubepods.slice" / "pod1" / "cpu.max", "300000 100000")
    _write(tmp_path / "kubepods.slice" / "pod1" / "ctr" / "cpu.max", "200000 100000")
    _write(tmp_path / "other" / "cpu.max", "100000 100000")  # not this process's
    quotas = cgroup_quotas("0::/kubepods.slice/pod1/ctr\n", tmp_path)
    assert quotas == ["200000 100000", "300000 100000", "max 100000"]
    assert cpu_count(8, quotas) == 2


def test_cgroup_v2_in_a_container_whose_path_is_not_under_its_root(tmp_path: Path) -> None:
    """Without a cgroup namespace the path is the host's; the container sees its own cgroup as the root."""
    _write(tmp_path / "cpu.max", "150000 100000")
    assert cgroup_quotas("0::/system.slice/docker-abc.scope\n", tmp_path) == ["150000 100000"]


def test_cgroup_v1_cpu_controller(tmp_path: Path) -> None:
    cpu = tmp_path / "cpu"
    _write(cpu / "docker" / "abc" / "cpu.cfs_quota_us", "50000")
    _write(cpu / "docker" / "abc" / "cpu.cfs_period_us", "100000")
    _write(cpu / "cpu.cfs_quota_us", "-1")
    _write(cpu / "cpu.cfs_period_us", "100000")
    proc_self_cgroup = "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n0::/\n"
    quotas = cgroup_quotas(proc_self_cgroup, tmp_path)
    assert quotas == ["50000 100000", "-1 100000"]
    assert cpu_count(4, quotas) == 1


def test_no_cgroup_files_means_no_quota(tmp_path: Path) -> None:
    assert cgroup_quotas("0::/user.slice\n1:cpu:/\nnonsense\n", tmp_path) == []


def test_usable_cpus_on_this_machine() -> None:
    assert 1 <= usable_cpus() <= len(os.sched_getaffinity(0))


def test_bind_listens_on_every_address_of_the_host() -> None:
    sockets = bind("127.0.0.1", 0)
    try:
        assert len(sockets) == 1
        port = sockets[0].getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # accepted by the kernel into the queue: the socket listens
        with pytest.raises(OSError):
            bind("127.0.0.1", port)  # taken
    finally:
        for sock in sockets:
            sock.close()


@pytest.mark.parametrize(
    "status, expected",
    [
        (0, "exited with status 0"),
        (1 << 8, "exited with status 1"),
        (signal.SIGKILL, "was killed by SIGKILL"),
        (signal.SIGSEGV, "was killed by SIGSEGV"),
    ],
)
def test_describe_exit(status: int, expected: str) -> None:
    assert describe_exit(status) == expected

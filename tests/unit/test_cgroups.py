"""spawner.cgroups: CPU, memory and devices of one workspace, on this host's real cgroups.

The GPUs are character devices with NVIDIA's major number made here: with no driver behind them an
open that the rule allows fails with ENXIO, one it denies with EPERM. The v1 test runs the v1
controllers; the device program (cgroup v2's way) is attached to the host's cgroup2 hierarchy, which
the kernel checks too. The v2 cpu/memory files are checked on a folder tree shaped like one.
"""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from spawner import cgroups
from spawner.cgroups import Device, Hierarchy, Limits

root_only = pytest.mark.usefixtures("root")

PROC_DEVICES = """Character devices:
  1 mem
136 pts
195 nvidia
234 nvidia-uvm
235 nvidia-caps

Block devices:
  8 sd
234 nvidia-uvm
"""

OPEN_ALL = """
import errno, os, sys
for path in sys.argv[1:]:
    try:
        os.close(os.open(path, os.O_RDWR))
        print(os.path.basename(path), "ok")
    except OSError as e:
        print(os.path.basename(path), errno.errorcode[e.errno])
"""


def test_allowed_devices_are_the_base_list_the_control_devices_and_the_held_gpus() -> None:
    devices = cgroups.allowed_devices([2, 0, 2], PROC_DEVICES)
    assert Device("c", 195, 0) in devices and Device("c", 195, 2) in devices
    assert Device("c", 195, 1) not in devices and Device("c", 195, None) not in devices
    assert Device("c", 195, 255) in devices  # nvidiactl
    assert Device("c", 234, None) in devices and Device("c", 235, None) in devices  # nvidia-uvm, nvidia-caps
    assert Device("c", 1, 3) in devices and Device("c", 136, None) in devices  # null, pts
    assert not [d for d in devices if d.kind == "b"]
    assert cgroups.char_majors(["nvidia-uvm"], "Character devices:\nBlock devices:\n234 nvidia-uvm\n") == []
    assert Device("c", 136, None).v1() == "c 136:* rwm"


def test_device_program_has_one_allow_per_device() -> None:
    program = cgroups.device_program([Device("c", 195, 0), Device("c", 136, None)])
    # 4 loads + (3 checks + 2) + (2 checks + 2) + the final deny (2), 8 bytes each
    assert len(program) == 8 * (4 + 5 + 4 + 2)


@pytest.fixture
def nodes(tmp_path: Path) -> Path:
    for name, (major, minor) in {"nvidia0": (195, 0), "nvidia1": (195, 1), "nvidiactl": (195, 255)}.items():
        os.mknod(tmp_path / name, 0o666 | stat.S_IFCHR, os.makedev(major, minor))
    return tmp_path


def opened(folders: list[Path], paths: list[Path]) -> dict[str, str]:
    run = subprocess.run(
        [sys.executable, "-c", OPEN_ALL, *map(str, paths)],
        preexec_fn=lambda: cgroups.enter(folders),
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(line.split() for line in run.stdout.splitlines())


@pytest.fixture
def hierarchy() -> Iterator[Hierarchy]:
    h = Hierarchy(parent=f"aidc-test-{uuid.uuid4().hex[:8]}")
    yield h
    for folder in [*h.folders("x"), *h._unified_folder("x")]:
        if folder.parent.is_dir():
            folder.parent.rmdir()


@root_only
def test_a_workspace_cgroup_opens_only_its_gpus_and_kills_beyond_its_memory(hierarchy: Hierarchy, nodes: Path) -> None:
    devices = cgroups.allowed_devices([1], Path("/proc/devices").read_text())
    folders = hierarchy.create("w1", Limits(cpu=0.5, memory=256 * 2**20, devices=tuple(devices), pids=20))
    try:
        paths = [nodes / "nvidia0", nodes / "nvidia1", nodes / "nvidiactl", Path("/dev/null")]
        assert opened(folders, paths) == {"nvidia0": "EPERM", "nvidia1": "ENXIO", "nvidiactl": "ENXIO", "null": "ok"}
        if hierarchy.version == 1:
            cpu, memory, pids, devs = folders[:4]
            assert (pids / "pids.max").read_text().strip() == "20"
            assert (cpu / "cpu.cfs_quota_us").read_text().strip() == "50000"
            assert (memory / "memory.limit_in_bytes").read_text().strip() == str(256 * 2**20)
            assert "c 195:1 rwm" in (devs / "devices.list").read_text().splitlines()
        bomb = "import os\nn = 0\ntry:\n    while n < 100:\n        if os.fork() == 0:\n            os.pause()\n        n += 1\nexcept OSError as e:\n    print(n, e.errno)"
        out = subprocess.run(
            [sys.executable, "-c", bomb], preexec_fn=lambda: cgroups.enter(folders), capture_output=True, text=True
        )
        forked, code = out.stdout.split()
        assert int(forked) < 20 and int(code) == errno.EAGAIN  # the fork bomb stops at its own limit
        cgroups.remove(folders, timeout=5)  # (kills the children it left)
        folders = hierarchy.create("w1", Limits(cpu=0.5, memory=256 * 2**20, devices=tuple(devices), pids=20))
        hog = "x = bytearray(400 << 20); x[::4096] = b'a' * len(x[::4096])"
        run = subprocess.run([sys.executable, "-c", hog], preexec_fn=lambda: cgroups.enter(folders))
        assert run.returncode == -9
        # a process left in it (a program started in the background) is killed with the cgroup
        sleeper = subprocess.Popen(["sleep", "100"], preexec_fn=lambda: cgroups.enter(folders))
        assert cgroups.pids(folders) == {sleeper.pid}
    finally:
        assert cgroups.remove(folders) == []
    assert sleeper.wait(5) == -9
    assert not [f for f in folders if f.exists()]


@root_only
def test_the_device_program_alone_denies_other_gpus(nodes: Path) -> None:
    """The cgroup v2 way (a BPF_PROG_TYPE_CGROUP_DEVICE program), on this host's cgroup2 mount."""
    unified = cgroups.CGROUP_ROOT / "unified"
    if not (unified / "cgroup.procs").exists():
        unified = cgroups.CGROUP_ROOT
        if not (unified / "cgroup.controllers").exists():
            pytest.fail("no cgroup2 hierarchy on this host: the device program cannot be tested")
    folder = unified / f"aidc-test-{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    try:
        cgroups.attach_device_program(folder, cgroups.allowed_devices([0], ""))
        got = opened([folder], [nodes / "nvidia0", nodes / "nvidia1", Path("/dev/zero")])
        assert got == {"nvidia0": "ENXIO", "nvidia1": "EPERM", "zero": "ok"}
    finally:
        assert cgroups.remove([folder]) == []


def test_cgroup_v2_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A v2 host: the hub leaves its own cgroup for a ``hub`` leaf, hands cpu and memory down, and
    each workspace gets cpu.max, memory.max and no swap (folders made here stand for cgroupfs)."""
    attached: list[tuple[Path, int]] = []
    monkeypatch.setattr(
        cgroups, "attach_device_program", lambda folder, devices: attached.append((folder, len(devices)))
    )
    root = tmp_path / "cgroup"
    own = root / "system.slice" / "aidc.service"
    own.mkdir(parents=True)
    (root / "cgroup.controllers").write_text("cpu memory io pids\n")
    (own / "cgroup.controllers").write_text("cpu memory pids\n")
    (own / "cgroup.procs").write_text(f"{os.getpid()}\n")
    (own / "cgroup.subtree_control").write_text("")
    h = Hierarchy(root=root, parent="ws", proc_self_cgroup="0::/system.slice/aidc.service\n")
    assert h.version == 2 and h.unified is None

    real_mkdir = Path.mkdir

    def mkdir(self: Path, *args: object, **kwargs: object) -> None:  # cgroupfs makes a folder's files
        real_mkdir(self, *args, **kwargs)  # type: ignore[arg-type]
        for name in ("cgroup.procs", "cgroup.subtree_control", "memory.swap.max"):
            if not (self / name).exists():
                (self / name).write_text("")

    monkeypatch.setattr(Path, "mkdir", mkdir)
    (folder,) = h.create("w1", Limits(cpu=1.5, memory=2**30, devices=(Device("c", 1, 3),)))
    assert folder == own / "ws" / "w1"
    assert (folder / "cpu.max").read_text() == "150000 100000"
    assert (folder / "memory.max").read_text() == str(2**30)
    assert (folder / "memory.swap.max").read_text() == "0"
    assert (own / "hub" / "cgroup.procs").read_text() == str(os.getpid())
    assert (own / "cgroup.subtree_control").read_text() == "+cpu +memory +pids"
    assert (folder / "pids.max").read_text() == "4096"
    assert attached == [(folder, 1)]
    # a restarted hub is put back in its unit's cgroup by systemd: it moves to the leaf again
    (own / "cgroup.procs").write_text(f"{os.getpid()}\n")
    (own / "hub" / "cgroup.procs").write_text("")
    h.create("w2", Limits(cpu=1, memory=2**30, devices=()))
    assert (own / "hub" / "cgroup.procs").read_text() == str(os.getpid())


def test_a_host_without_the_controllers_is_told_so(tmp_path: Path) -> None:
    with pytest.raises(cgroups.CgroupError) as info:
        Hierarchy(root=tmp_path, proc_self_cgroup="0::/\n")
    assert "No cgroup hierarchy with the cpu, memory, pids and devices controllers" in str(info.value)

"""Confine one embedded workspace with cgroups: CPU, memory, and the devices it may open.

Each workspace gets its own cgroup, made before its process starts and entered by that process
before it runs anything (``enter``, from the spawner's ``preexec_fn``), so nothing it starts can
escape the limits. Two layouts, as a current Linux host has one or the other:

- **cgroup v2** (Debian 11+, Ubuntu 21.10+: ``/sys/fs/cgroup`` is ``cgroup2``): ``cpu.max``,
  ``memory.max`` (``memory.swap.max`` 0), and the device rule as a ``BPF_PROG_TYPE_CGROUP_DEVICE``
  program attached to the workspace's cgroup (v2 has no ``devices.*`` files; runc and systemd do
  the same). The workspaces live under the hub's own cgroup: the hub moves itself to a ``hub``
  leaf first (v2 allows processes only in leaves of a cgroup that hands controllers down), so
  under systemd the hub's unit needs ``Delegate=yes``.
- **cgroup v1** (hybrid hosts, older hosts, this project's CI machine): ``cpu.cfs_quota_us``,
  ``memory.limit_in_bytes`` and ``devices.deny``/``devices.allow``, one folder per controller.
  If the host also mounts a cgroup2 hierarchy (``/sys/fs/cgroup/unified``), the device program is
  attached there too: the kernel checks both.

The device rule is a list of allowed devices and nothing else: the usual character devices of a
process (null, zero, random, ttys, ptys; runc's default list), NVIDIA's control devices
(``nvidiactl``, ``nvidia-uvm``, ``nvidia-modeset``, ``nvidia-caps``) and ``/dev/nvidia<N>`` of the GPUs
the workspace holds. Opening another GPU fails with ``EPERM`` whatever ``CUDA_VISIBLE_DEVICES`` says.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import signal
import struct
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from i18n import _

CGROUP_ROOT = Path("/sys/fs/cgroup")
NVIDIA_MAJOR = 195  # /dev/nvidia<N> (minor N), nvidiactl (255), nvidia-modeset (254)
NVIDIACTL_MINOR, NVIDIA_MODESET_MINOR = 255, 254
V1_CONTROLLERS = ("cpu", "memory", "pids", "devices")
V2_CONTROLLERS = ("cpu", "memory", "pids")
CPU_PERIOD_US = 100_000


class CgroupError(RuntimeError):
    """The workspace's cgroup cannot be made or entered; the message (an :class:`i18n.Text`,
    ``args[0]``) says what and why (a fault of the platform's host, not of the person)."""


@dataclass(frozen=True)
class Device:
    """An allowed device: ``kind`` "c" or "b", ``minor`` None for every minor of ``major``."""

    kind: str
    major: int
    minor: int | None

    def v1(self) -> str:
        return f"{self.kind} {self.major}:{'*' if self.minor is None else self.minor} rwm"


# runc's default allow list (libcontainer/specconv): what any program on a terminal needs
BASE_DEVICES = (
    Device("c", 1, 3),  # null
    Device("c", 1, 5),  # zero
    Device("c", 1, 7),  # full
    Device("c", 1, 8),  # random
    Device("c", 1, 9),  # urandom
    Device("c", 5, 0),  # tty
    Device("c", 5, 2),  # ptmx
    Device("c", 136, None),  # pts
)


def char_majors(names: Iterable[str], proc_devices: str) -> list[int]:
    """Majors of the character devices ``names`` in ``/proc/devices`` text (dynamic majors, such as
    nvidia-uvm's and nvidia-caps', differ between hosts)."""
    wanted, majors = set(names), []
    section = ""
    for line in proc_devices.splitlines():
        if line.endswith("devices:"):
            section = line
            continue
        parts = line.split()
        if section.startswith("Character") and len(parts) == 2 and parts[1] in wanted and parts[0].isdigit():
            majors.append(int(parts[0]))
    return majors


def allowed_devices(gpu_minors: Sequence[int], proc_devices: str) -> list[Device]:
    """Everything a workspace holding the GPUs with device minors ``gpu_minors`` may open."""
    devices = list(BASE_DEVICES)
    devices += [Device("c", NVIDIA_MAJOR, NVIDIACTL_MINOR), Device("c", NVIDIA_MAJOR, NVIDIA_MODESET_MINOR)]
    devices += [Device("c", m, None) for m in char_majors(("nvidia-uvm", "nvidia-caps"), proc_devices)]
    devices += [Device("c", NVIDIA_MAJOR, minor) for minor in sorted(set(gpu_minors))]
    return devices


# --- the device rule as a cgroup-device BPF program (cgroup v2) ---------------------------------

_BPF_PROG_LOAD, _BPF_PROG_ATTACH = 5, 8
_BPF_PROG_TYPE_CGROUP_DEVICE, _BPF_CGROUP_DEVICE = 15, 6
_BPF_DEVCG_DEV_BLOCK, _BPF_DEVCG_DEV_CHAR = 1, 2
_SYS_BPF = {"x86_64": 321, "aarch64": 280, "ppc64le": 361, "s390x": 351}


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


def device_program(devices: Sequence[Device]) -> bytes:
    """eBPF instructions that return 1 (allow) for ``devices``, any access, and 0 for the rest.

    The context is ``struct bpf_cgroup_dev_ctx {u32 access_type; u32 major; u32 minor;}``, the
    device type in the low 16 bits of ``access_type``.
    """
    ldx_w, and_k, jne_k, mov_k, exit_ = 0x61, 0x57, 0x55, 0xB7, 0x95
    out = [
        _insn(ldx_w, dst=2, src=1, off=0),  # r2 = access_type
        _insn(and_k, dst=2, imm=0xFFFF),  # r2 = device type
        _insn(ldx_w, dst=4, src=1, off=4),  # r4 = major
        _insn(ldx_w, dst=5, src=1, off=8),  # r5 = minor
    ]
    for d in devices:
        checks = [_BPF_DEVCG_DEV_CHAR if d.kind == "c" else _BPF_DEVCG_DEV_BLOCK, d.major]
        regs = [2, 4]
        if d.minor is not None:
            checks.append(d.minor)
            regs.append(5)
        # each check jumps past the rest of this rule (its other checks and the allow) on a mismatch
        for i, (reg, value) in enumerate(zip(regs, checks, strict=True)):
            out.append(_insn(jne_k, dst=reg, off=len(checks) - i - 1 + 2, imm=value))
        out += [_insn(mov_k, dst=0, imm=1), _insn(exit_)]
    out += [_insn(mov_k, dst=0, imm=0), _insn(exit_)]
    return b"".join(out)


def _bpf(cmd: int, attr: bytes) -> int:
    number = _SYS_BPF.get(platform.machine())
    if number is None:
        raise CgroupError(_("Device rules with cgroup v2 are not supported on {machine}", machine=platform.machine()))
    libc = ctypes.CDLL(None, use_errno=True)
    buf = ctypes.create_string_buffer(attr, len(attr))
    result: int = libc.syscall(number, cmd, buf, len(attr))
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return result


def attach_device_program(cgroup: Path, devices: Sequence[Device]) -> None:
    """Load :func:`device_program` and attach it to the cgroup v2 folder ``cgroup``."""
    insns = device_program(devices)
    code = ctypes.create_string_buffer(insns, len(insns))
    license_ = ctypes.create_string_buffer(b"GPL")
    log = ctypes.create_string_buffer(65536)
    # union bpf_attr for BPF_PROG_LOAD: prog_type, insn_cnt, insns, license, log_level, log_size, log_buf
    attr = struct.pack(
        "<IIQQIIQ",
        _BPF_PROG_TYPE_CGROUP_DEVICE,
        len(insns) // 8,
        ctypes.addressof(code),
        ctypes.addressof(license_),
        1,
        len(log),
        ctypes.addressof(log),
    ) + bytes(72)
    try:
        prog = _bpf(_BPF_PROG_LOAD, attr)
    except OSError as e:
        detail = log.value.decode(errors="replace").strip()
        if detail:
            raise CgroupError(
                _("The kernel refused the device rule program ({error}): {detail}", error=e.strerror, detail=detail)
            ) from None
        raise CgroupError(_("The kernel refused the device rule program ({error})", error=e.strerror)) from None
    try:
        fd = os.open(cgroup, os.O_RDONLY | os.O_DIRECTORY)
        try:
            # target_fd, attach_bpf_fd, attach_type, attach_flags
            _bpf(_BPF_PROG_ATTACH, struct.pack("<IIII", fd, prog, _BPF_CGROUP_DEVICE, 0) + bytes(104))
        except OSError as e:
            raise CgroupError(
                _("Cannot attach the device rule to {cgroup}: {error}", cgroup=str(cgroup), error=e.strerror)
            ) from None
        finally:
            os.close(fd)
    finally:
        os.close(prog)  # the attachment keeps the program for as long as the cgroup exists


# --- the hierarchies ------------------------------------------------------------------------------


def _own_path(controller: str | None, proc_self_cgroup: str) -> str:
    """This process's cgroup path in the v1 hierarchy of ``controller`` (None: the v2 hierarchy)."""
    for line in proc_self_cgroup.splitlines():
        _, controllers, path = line.split(":", 2)
        if (controller is None and controllers == "") or (controller in controllers.split(",")):
            return path
    return "/"


def _write(path: Path, value: str) -> None:
    try:
        path.write_text(value)
    except OSError as e:
        raise CgroupError(
            _("Cannot write {value} to {path}: {error}", value=repr(value.strip()), path=str(path), error=e.strerror)
        ) from None


@dataclass(frozen=True)
class Limits:
    """What a workspace may use: CPUs (fractional), bytes of memory, its devices, and at most
    ``pids`` processes and threads (a fork bomb stays inside its workspace)."""

    cpu: float
    memory: int
    devices: tuple[Device, ...]
    pids: int = 4096


class Hierarchy:
    """Where this host's cgroups are and how to write them. :meth:`detect` says which layout;
    workspaces go under ``<the hub's own cgroup>/<parent>``."""

    def __init__(self, root: Path = CGROUP_ROOT, parent: str = "aidc-workspaces", proc_self_cgroup: str | None = None):
        self.root = root
        self.parent = parent
        self._self_cgroup = proc_self_cgroup if proc_self_cgroup is not None else Path("/proc/self/cgroup").read_text()
        self.version = self._detect()

    def _detect(self) -> int:
        if (self.root / "cgroup.controllers").exists():
            return 2
        if all((self.root / c).is_dir() for c in V1_CONTROLLERS):
            return 1
        raise CgroupError(
            _(
                "No cgroup hierarchy with the cpu, memory, pids and devices controllers under {root}: workspaces"
                " cannot be confined on this host (mount cgroup2 on /sys/fs/cgroup, or cgroup v1 cpu, memory, pids"
                " and devices)",
                root=str(self.root),
            )
        )

    @property
    def unified(self) -> Path | None:
        """The cgroup2 mount of a hybrid host (device programs are checked there too), or None."""
        path = self.root / "unified"
        return path if self.version == 1 and (path / "cgroup.procs").exists() else None

    def folders(self, name: str) -> list[Path]:
        """The folders of the workspace cgroup ``name``: one per controller in v1, one in v2."""
        if self.version == 2:
            return [self._v2_base() / name]
        return [
            self.root / c / _own_path(c, self._self_cgroup).lstrip("/") / self.parent / name for c in V1_CONTROLLERS
        ]

    def _v2_base(self) -> Path:
        return self.root / _own_path(None, self._self_cgroup).lstrip("/") / self.parent

    def _prepare_v2(self) -> None:
        """Hand cpu, memory and pids down to ``<own>/<parent>``: the hub (and whatever shares its cgroup)
        moves to the leaf ``<own>/hub`` first, unless its cgroup is the root."""
        base = self._v2_base()
        own = base.parent
        if own != self.root:  # also at each start of the hub: its supervisor puts it back in ``own``
            leaf = own / "hub"
            leaf.mkdir(exist_ok=True)
            for pid in (own / "cgroup.procs").read_text().split():
                try:
                    _write(leaf / "cgroup.procs", pid)
                except CgroupError:
                    if Path(f"/proc/{pid}").exists():
                        raise
        if base.is_dir() and "memory" in (base / "cgroup.subtree_control").read_text().split():
            return
        available = (own / "cgroup.controllers").read_text().split()
        missing = set(V2_CONTROLLERS) - set(available)
        if missing:
            raise CgroupError(
                _(
                    "The cgroup {cgroup} does not offer the {controllers} controller(s): run the hub with them"
                    " delegated (systemd: Delegate=yes in its unit)",
                    cgroup=str(own),
                    controllers=" and ".join(sorted(missing)),  # i18n: controller names, joined as the English says
                )
            )
        enable = " ".join(f"+{c}" for c in V2_CONTROLLERS)
        _write(own / "cgroup.subtree_control", enable)
        base.mkdir(exist_ok=True)
        _write(base / "cgroup.subtree_control", enable)

    def create(self, name: str, limits: Limits) -> list[Path]:
        """Make the workspace cgroup ``name`` with ``limits``; returns its folders (for :func:`enter`
        and :meth:`remove`). Raises :class:`CgroupError`, leaving nothing behind."""
        folders = self.folders(name)
        try:
            if self.version == 2:
                self._prepare_v2()
            for folder in folders:
                folder.mkdir(parents=True, exist_ok=True)
            if self.version == 2:
                (folder,) = folders
                quota = max(1000, int(limits.cpu * CPU_PERIOD_US))
                _write(folder / "cpu.max", f"{quota} {CPU_PERIOD_US}")
                _write(folder / "memory.max", str(limits.memory))
                if (folder / "memory.swap.max").exists():
                    _write(folder / "memory.swap.max", "0")
                _write(folder / "pids.max", str(limits.pids))
                attach_device_program(folder, limits.devices)
                return folders
            cpu, memory, pids, devices = folders
            _write(cpu / "cpu.cfs_period_us", str(CPU_PERIOD_US))
            _write(cpu / "cpu.cfs_quota_us", str(max(1000, int(limits.cpu * CPU_PERIOD_US))))
            _write(memory / "memory.limit_in_bytes", str(limits.memory))
            if (memory / "memory.memsw.limit_in_bytes").exists():
                _write(memory / "memory.memsw.limit_in_bytes", str(limits.memory))
            _write(pids / "pids.max", str(limits.pids))
            _write(devices / "devices.deny", "a")
            for device in limits.devices:
                _write(devices / "devices.allow", device.v1())
            unified = self.unified
            if unified is not None:
                extra = unified / _own_path(None, self._self_cgroup).lstrip("/") / self.parent / name
                extra.mkdir(parents=True, exist_ok=True)
                attach_device_program(extra, limits.devices)
                folders.append(extra)
            return folders
        except BaseException:
            remove(folders + self._unified_folder(name))
            raise

    def _unified_folder(self, name: str) -> list[Path]:
        unified = self.unified
        if unified is None:
            return []
        return [unified / _own_path(None, self._self_cgroup).lstrip("/") / self.parent / name]

    def existing(self, name: str) -> list[Path]:
        """The folders of ``name`` that exist (a workspace's, after a hub restart)."""
        return [f for f in self.folders(name) + self._unified_folder(name) if f.is_dir()]


def enter(folders: Sequence[Path]) -> None:
    """Move the calling process into the workspace cgroup (from ``preexec_fn``, before exec)."""
    pid = str(os.getpid())
    for folder in folders:
        with open(folder / "cgroup.procs", "w") as f:
            f.write(pid)


def pids(folders: Sequence[Path]) -> set[int]:
    """Every process in the workspace cgroup."""
    found: set[int] = set()
    for folder in folders:
        try:
            found.update(int(p) for p in (folder / "cgroup.procs").read_text().split())
        except OSError:
            continue
    return found


def remove(folders: Sequence[Path], timeout: float = 10.0) -> list[int]:
    """Kill whatever still runs in the workspace cgroup and remove its folders. Returns the pids
    that outlived ``timeout`` seconds (their folders stay); an empty list when all is gone."""
    deadline = time.monotonic() + timeout
    while True:
        left = pids(folders)
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if not left:
            break
        if time.monotonic() > deadline:
            return sorted(left)
        time.sleep(0.05)
    for folder in folders:
        for _attempt in range(100):
            try:
                folder.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError as e:
                if e.errno != errno.EBUSY:
                    raise CgroupError(
                        _("Cannot remove {folder}: {error}", folder=str(folder), error=e.strerror)
                    ) from None
                time.sleep(0.05)  # the last process is still being torn down
    return []

"""SSH through the gateway against SSH straight to a workspace's sshd: bulk copy, small files,
CPU, keystrokes and several people copying at once (issue 17).

Starts a real hub with its SSH gateway (``tests/bed/hub.py``, ``SSHGateway.workers`` as asked),
registers a key for each of up to four people through the quotas API, starts their CPU
workspaces, and then, in the same run and alternating the two paths:

1. copies a 512 MiB file of random bytes with Debian's ``scp`` (SFTP protocol, upload) into
   alice's workspace, ``--repeats`` times per path, and checks each copy's SHA-256;
2. copies a data set of 10,000 small files (1-100 KiB, sizes and bytes from a seeded RNG) with
   ``rsync -a`` into a fresh folder, ``--repeats`` times per path, and checks each copy's
   manifest (every file's name, size and SHA-256);
3. counts the CPU seconds of every process of each path during those copies (``/proc``);
4. types single characters into an interactive PTY session (``ssh -tt``, ``cat`` on the remote
   terminal) and times each echo, ``--keystrokes`` per round, one round per repeat;
5. has four people (alice, bob, carol, dave) upload 256 MiB each at the same moment, through the
   gateway (each into their own workspace) and directly, ``--repeats`` rounds per path.

"Direct" is a second Debian sshd, run as the workspace's own account on a loopback port, written
by ``sshgateway.workspace.prepare`` exactly as the workspace's own sshd is (its ``sshd_config``,
session script and environment), with the workspace's host key and the benchmark's key as its
one authorized key (instead of the gateway's per-server key). Both paths use the cipher the
gateway prefers (``aes128-gcm@openssh.com``), so the comparison is of the path, not of the cipher.

    .venv/bin/python -P benchmarks/ssh.py                                  # print the results
    .venv/bin/python -P benchmarks/ssh.py --write benchmarks/README.md     # and record them
    .venv/bin/python -P benchmarks/ssh.py --size-mib 64 --files 1000 --repeats 1   # a quick look
    .venv/bin/python -P benchmarks/ssh.py --workers 1                      # one gateway process

Targets (issue 17) on a 2-CPU machine: scp through the gateway at least 0.5 of direct, the
gateway at most 3.5 CPU seconds per GiB, small-file rsync at least 0.7 of direct, added keystroke
p50 under 2 ms. If a copy arrives different from its source the script exits 1 and records nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import pty
import pwd
import random
import resource
import select
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from functools import partial
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:] = [p for p in sys.path if Path(p or os.curdir).resolve() != HERE]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks._readme import cpus, write_section  # noqa: E402
from benchmarks._stats import nearest_rank  # noqa: E402

SECTION = "ssh"
CIPHER = "aes128-gcm@openssh.com"
PATHS = ("gateway", "direct")
# the people who copy at once, and their tenants in the tiers' tenants.yaml (tests/hub/tenants.yaml)
PEOPLE = (("alice", "lab"), ("bob", "lab"), ("carol", "lab"), ("dave", "startup"))
SEED = 2026

# targets of issue 17 on this 2-CPU machine
SCP_TARGET = 0.5  # gateway MB/s over direct MB/s, 512 MiB scp, at least
GATEWAY_CPU_TARGET = 3.5  # CPU seconds of the gateway (all its processes) per GiB copied, at most
RSYNC_TARGET = 0.7  # gateway over direct, the small-file data set with rsync, at least
ADDED_P50_TARGET_MS = 2.0  # gateway p50 minus direct p50, under

# issue 17's "before": websocket through the hub's proxy and jupyter-server-proxy (2026-11-24)
BEFORE_RATIO, BEFORE_PATH_CPU, BEFORE_GATEWAY_CPU = 0.32, 14.1, 6.17


# -- pure parts ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Throughput:
    path: str
    mb_per_s: tuple[float, ...]  # one per copy, in MB (10^6 bytes) per second

    @property
    def median(self) -> float:
        return statistics.median(self.mb_per_s)


def throughput(path: str, size_bytes: int, seconds: Sequence[float]) -> Throughput:
    """The copies of ``size_bytes`` on ``path`` that took ``seconds`` each, as MB/s."""
    return Throughput(path, tuple(size_bytes / s / 1e6 for s in seconds))


def ratio(copies: dict[str, Throughput]) -> float:
    """Gateway over direct, median against median."""
    return copies["gateway"].median / copies["direct"].median


@dataclass(frozen=True)
class Latency:
    path: str
    n: int
    p50: float  # ms
    p99: float
    max: float


def latency(path: str, seconds: Sequence[float]) -> Latency:
    """Echo round trips (in seconds) as a summary in milliseconds."""
    ms = [s * 1e3 for s in seconds]
    return Latency(path, len(ms), nearest_rank(ms, 0.5), nearest_rank(ms, 0.99), max(ms))


@dataclass(frozen=True)
class CpuUse:
    """CPU seconds the processes of one path spent on its copies, and the copies' wall time."""

    path: str
    seconds: dict[str, float]  # process role -> CPU seconds (user + system, children reaped included)
    wall: float  # seconds of the copies, summed
    gib: float  # GiB copied, summed

    @property
    def total(self) -> float:
        return sum(self.seconds.values())

    @property
    def per_gib(self) -> float:
        return self.total / self.gib

    def role_per_gib(self, role: str) -> float:
        return self.seconds.get(role, 0.0) / self.gib

    @property
    def cores(self) -> float:
        """CPUs kept busy on average while copying."""
        return self.total / self.wall


def cpu_bound_ceiling(cpu: dict[str, CpuUse], cores: int) -> float:
    """The best gateway/direct throughput ratio this machine allows when the gateway path is CPU-bound:
    the gateway path can use at most ``cores`` CPUs, so at best ``cores / gateway path's CPU per GiB``
    GiB/s, against what direct measured."""
    return _best_ratio(cpu, cores, cpu["gateway"].per_gib)


def ceiling_without_gateway(cpu: dict[str, CpuUse], cores: int) -> float:
    """The same ceiling for a gateway that cost no CPU at all: what the rest of the path (the client
    and the workspace's sshd) leaves possible."""
    rest = cpu["gateway"].total - cpu["gateway"].seconds.get("gateway", 0.0)
    return _best_ratio(cpu, cores, rest / cpu["gateway"].gib)


def _best_ratio(cpu: dict[str, CpuUse], cores: int, gateway_cpu_per_gib: float) -> float:
    direct_rate = cpu["direct"].gib / cpu["direct"].wall
    return (cores / gateway_cpu_per_gib) / direct_rate


@dataclass(frozen=True)
class DataSet:
    """Small files: relative name -> size in bytes, in the order they are written."""

    sizes: dict[str, int]

    @property
    def files(self) -> int:
        return len(self.sizes)

    @property
    def bytes(self) -> int:
        return sum(self.sizes.values())


def data_set(count: int, seed: int = SEED, smallest: int = 1024, largest: int = 100 * 1024) -> DataSet:
    """``count`` files of ``smallest`` to ``largest`` bytes (uniform, from ``random.Random(seed)``),
    100 to a folder: ``d000/f000000.bin``, ``d000/f000001.bin``, ..."""
    rng = random.Random(seed)
    return DataSet({f"d{i // 100:03d}/f{i:06d}.bin": rng.randint(smallest, largest) for i in range(count)})


def write_data_set(root: Path, data: DataSet, seed: int = SEED) -> None:
    """The files of ``data`` under ``root``, their bytes from ``random.Random(seed)``: the same run
    after run."""
    rng = random.Random(seed)
    for name, size in data.sizes.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(size))


@dataclass(frozen=True)
class Manifest:
    """What a copy of a folder must have: the number of files, their bytes, and the SHA-256 of the
    sorted list of every file's relative name, size and SHA-256."""

    files: int
    bytes: int
    sha256: str


def manifest(root: Path) -> Manifest:
    lines, files, total = [], 0, 0
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        lines.append(f"{path.relative_to(root)} {len(data)} {hashlib.sha256(data).hexdigest()}\n")
        files, total = files + 1, total + len(data)
    return Manifest(files, total, hashlib.sha256("".join(lines).encode()).hexdigest())


@dataclass(frozen=True)
class Together:
    """Rounds of ``people`` copies of ``size_bytes`` each, started at the same moment on one path."""

    path: str
    people: int
    size_bytes: int
    walls: tuple[float, ...]  # per round: from the first start to the last copy's end
    cpu: CpuUse

    @property
    def throughput(self) -> Throughput:
        """Aggregate MB/s per round."""
        return throughput(self.path, self.people * self.size_bytes, self.walls)


@dataclass(frozen=True)
class Verdict:
    scp_ratio: float
    gateway_cpu_per_gib: float
    rsync_ratio: float
    added_p50_ms: float

    @property
    def scp_met(self) -> bool:
        return self.scp_ratio >= SCP_TARGET

    @property
    def cpu_met(self) -> bool:
        return self.gateway_cpu_per_gib <= GATEWAY_CPU_TARGET

    @property
    def rsync_met(self) -> bool:
        return self.rsync_ratio >= RSYNC_TARGET

    @property
    def latency_met(self) -> bool:
        return self.added_p50_ms < ADDED_P50_TARGET_MS


def verdict(
    scp: dict[str, Throughput], scp_cpu: dict[str, CpuUse], rsync: dict[str, Throughput], echoes: dict[str, Latency]
) -> Verdict:
    return Verdict(
        ratio(scp),
        scp_cpu["gateway"].role_per_gib("gateway"),
        ratio(rsync),
        echoes["gateway"].p50 - echoes["direct"].p50,
    )


@dataclass(frozen=True)
class Results:
    """Everything one run measured, and how it was set up."""

    recorded: str  # "Recorded <date> on <machine>; Python <version>"
    openssh: str
    workers: int  # gateway processes that serve the port
    size_mib: int
    repeats: int
    scp: dict[str, Throughput]
    scp_cpu: dict[str, CpuUse]
    data: DataSet
    rsync: dict[str, Throughput]  # MB/s of the data set's bytes
    rsync_cpu: dict[str, CpuUse]
    together: dict[str, Together]
    keystrokes: int
    echoes: dict[str, Latency]
    cores: int
    load_before: float
    load_after: float
    elapsed: float
    together_people: str = "alice, bob, carol and dave"


# the processes each path runs, as the CPU tables name them
CPU_ROLES = ("client", "gateway", "sshd")
MET = {True: "meets it", False: "**MISSES it**"}


def _mb(values: Iterable[float]) -> str:
    return ", ".join(f"{x:.1f}" for x in values)


def _cpu_table(cpu: dict[str, CpuUse], cores: int) -> list[str]:
    lines = [
        "| path | " + " | ".join(CPU_ROLES) + " | total | CPUs busy while copying |",
        "|---|" + "---:|" * (len(CPU_ROLES) + 2),
    ]
    for path in PATHS:
        c = cpu[path]
        cells = [f"{c.role_per_gib(r):.2f}" if r in c.seconds else "–" for r in CPU_ROLES]
        lines.append(f"| {path} | " + " | ".join(cells) + f" | {c.per_gib:.2f} | {c.cores:.2f} of {cores} |")
    return lines


def render(r: Results) -> str:
    """The text of the README section ``ssh``."""
    v = verdict(r.scp, r.scp_cpu, r.rsync, r.echoes)
    cpu = r.scp_cpu
    ceiling = cpu_bound_ceiling(cpu, r.cores)
    gw_share = cpu["gateway"].role_per_gib("gateway") / cpu["direct"].per_gib
    lines = [
        f"{r.recorded}, load average {r.load_before:.2f} at the start and {r.load_after:.2f} at the end;"
        f" {r.openssh}; the gateway with {r.workers} worker process{'es' if r.workers > 1 else ''}"
        f" (`SSHGateway.workers`), cipher {CIPHER} on both paths.",
        "",
        f"**scp**: upload of {r.size_mib} MiB (SFTP protocol), {r.repeats} copies per path, alternating;"
        " every copy's SHA-256 checked.",
        "",
        "| path | MB/s per copy | median MB/s |",
        "|---|---|---:|",
    ]
    lines += [f"| {p} | {_mb(r.scp[p].mb_per_s)} | {r.scp[p].median:.1f} |" for p in PATHS]
    lines += [
        "",
        "CPU seconds per GiB copied by scp, by process (user + system, the processes each one reaped included;"
        " the gateway: all its processes):",
        "",
        *_cpu_table(cpu, r.cores),
        "",
        f"Per byte, the gateway path costs {cpu['gateway'].per_gib / cpu['direct'].per_gib:.1f}x the CPU of"
        f" direct (the gateway itself {gw_share:.1f}x direct's whole path). With client, gateway and sshd on the"
        f" same {r.cores} CPUs, the gateway path can copy at most {r.cores} CPUs / {cpu['gateway'].per_gib:.2f}"
        f" CPU-s per GiB, which is **{ceiling:.2f}x** direct's measured speed: the ceiling for the ratio here,"
        f" whatever the scheduling (a gateway that cost nothing would leave {ceiling_without_gateway(cpu, r.cores):.2f}x)."
        f" Before issue 17 (websocket through the hub's proxy and jupyter-server-proxy) scp ran at"
        f" {BEFORE_RATIO:.2f}x of direct, with {BEFORE_PATH_CPU} CPU-s per GiB on the gateway's path, the"
        f" gateway {BEFORE_GATEWAY_CPU}.",
        "",
        f"**rsync**: `rsync -a` of {r.data.files:,} files of 1-100 KiB ({r.data.bytes / 1e6:.0f} MB, seed {SEED})"
        f" into a fresh folder, {r.repeats} copies per path, alternating; every copy's manifest (file count,"
        " bytes, every file's SHA-256) checked. MB/s of the files' bytes, the whole `rsync` timed:",
        "",
        "| path | MB/s per copy | median MB/s | median files/s |",
        "|---|---|---:|---:|",
    ]
    for p in PATHS:
        t = r.rsync[p]
        files_per_s = t.median * 1e6 / r.data.bytes * r.data.files
        lines.append(f"| {p} | {_mb(t.mb_per_s)} | {t.median:.1f} | {files_per_s:,.0f} |")
    lines += [
        "",
        "CPU seconds per GiB of the data set copied by rsync:",
        "",
        *_cpu_table(r.rsync_cpu, r.cores),
    ]
    g, d = r.together["gateway"], r.together["direct"]
    gw = g.cpu.seconds.get("gateway", 0.0)
    lines += [
        "",
        f"**{g.people} people at once**: {r.together_people} each upload {g.size_bytes / 2**20:.0f} MiB with"
        f" `scp` at the same moment, through the gateway (each into their own workspace) and directly"
        f" ({g.people} connections to the direct sshd), {len(g.walls)} rounds per path; every copy's SHA-256 checked.",
        "",
        "| path | aggregate MB/s per round | median MB/s | CPU-s per GiB: gateway / whole path | CPUs busy |",
        "|---|---|---:|---:|---:|",
        f"| gateway | {_mb(g.throughput.mb_per_s)} | {g.throughput.median:.1f} |"
        f" {g.cpu.role_per_gib('gateway'):.2f} / {g.cpu.per_gib:.2f} | {g.cpu.cores:.2f} of {r.cores}"
        f" (gateway {gw / g.cpu.wall:.2f}) |",
        f"| direct | {_mb(d.throughput.mb_per_s)} | {d.throughput.median:.1f} | – / {d.cpu.per_gib:.2f} |"
        f" {d.cpu.cores:.2f} of {r.cores} |",
        "",
        f"Together, the gateway path moved {ratio({'gateway': g.throughput, 'direct': d.throughput}):.2f}x of"
        " direct's aggregate.",
        "",
        f"**Keystroke echo** in an interactive PTY session (`ssh -tt`, `cat`), {r.keystrokes} characters per"
        f" round, {r.repeats} rounds per path, alternating:",
        "",
        "| path | keystrokes | p50 (ms) | p99 (ms) | max (ms) |",
        "|---|---:|---:|---:|---:|",
    ]
    for p in PATHS:
        e = r.echoes[p]
        lines.append(f"| {p} | {e.n:,} | {e.p50:.2f} | {e.p99:.2f} | {e.max:.2f} |")
    lines += [
        "",
        "Targets (issue 17, this machine):",
        "",
        f"- scp ≥ {SCP_TARGET}x direct: {MET[v.scp_met]} ({v.scp_ratio:.3f}x, median against median;"
        f" the ceiling from CPU per GiB is {ceiling:.2f}x)",
        f"- gateway CPU ≤ {GATEWAY_CPU_TARGET} s/GiB: {MET[v.cpu_met]} ({v.gateway_cpu_per_gib:.2f} s/GiB, scp)",
        f"- small-file rsync ≥ {RSYNC_TARGET}x direct: {MET[v.rsync_met]} ({v.rsync_ratio:.3f}x;"
        f" the ceiling from CPU per GiB is {cpu_bound_ceiling(r.rsync_cpu, r.cores):.2f}x)",
        f"- added keystroke p50 < {ADDED_P50_TARGET_MS:g} ms: {MET[v.latency_met]} (+{v.added_p50_ms:.2f} ms)",
    ]
    for what, met, got, target, used in (
        ("scp", v.scp_met, v.scp_ratio, SCP_TARGET, cpu),
        ("rsync", v.rsync_met, v.rsync_ratio, RSYNC_TARGET, r.rsync_cpu),
    ):
        if not met:
            lines += ["", why_missed(what, got, target, used, r.cores, r.load_before, r.load_after)]
    lines += ["", f"The run took {r.elapsed:.0f} s."]
    return "\n".join(lines)


def why_missed(
    what: str, got: float, target: float, cpu: dict[str, CpuUse], cores: int, load_before: float, load_after: float
) -> str:
    """Why ``what`` reached ``got`` of direct and not ``target``: its CPU per GiB (the ceiling) when
    that is below the target, else that the path was not CPU-bound."""
    ceiling = cpu_bound_ceiling(cpu, cores)
    path, direct = cpu["gateway"], cpu["direct"]
    head = (
        f"{what} misses its target ({got:.3f}x of direct, target {target}x): the gateway path needs"
        f" {path.per_gib:.2f} CPU-s per GiB against direct's {direct.per_gib:.2f}, on {cores} CPUs shared by"
        " client, gateway and sshd,"
    )
    if ceiling < target:
        return f"{head} so even perfectly scheduled it could reach only {ceiling:.2f}x of direct here."
    return (
        f"{head} which would allow up to {ceiling:.2f}x; it was not CPU-bound (it kept {path.cores:.2f} of"
        f" {cores} CPUs busy): the rest is time spent waiting (one more hop of flow control and"
        f" round trips, scheduling of three processes) and the machine's other load (load average"
        f" {load_before:.2f} at the start, {load_after:.2f} at the end)."
    )


# -- the measuring ---------------------------------------------------------------------------------


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def machine() -> str:
    return f"{cpus()}, {platform.system()} {platform.release()}"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def write_random(path: Path, mib: int) -> str:
    """``mib`` MiB of random bytes in ``path``; their SHA-256."""
    h = hashlib.sha256()
    with open(path, "wb") as f:
        for _ in range(mib):
            chunk = os.urandom(1024 * 1024)
            h.update(chunk)
            f.write(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class Endpoint:
    """Where one person's client connects: the gateway as themselves, or the direct sshd."""

    path: str
    login: str
    port: int
    key: Path


class Client:
    """Debian's OpenSSH client (ssh, scp, rsync's ssh) towards an :class:`Endpoint`."""

    def __init__(self, known_hosts: Path):
        self.known_hosts = known_hosts

    def options(self, to: Endpoint) -> list[str]:
        return [
            "-F",
            "/dev/null",
            "-o",
            "StrictHostKeyChecking=accept-new",
            "-o",
            f"UserKnownHostsFile={self.known_hosts}",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "IdentityAgent=none",
            "-o",
            "BatchMode=yes",
            "-o",
            "LogLevel=ERROR",
            "-o",
            f"Ciphers={CIPHER}",
            "-i",
            str(to.key),
        ]

    def run(self, to: Endpoint, command: str) -> str:
        args = ["ssh", *self.options(to), "-p", str(to.port), f"{to.login}@127.0.0.1", command]
        r = subprocess.run(args, capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)
        if r.returncode != 0:
            raise RuntimeError(f"ssh {to.path} {command!r} exited {r.returncode}: {r.stderr}")
        return r.stdout

    def scp(self, to: Endpoint, source: Path, name: str) -> float:
        args = ["scp", *self.options(to), "-q", "-P", str(to.port), str(source), f"{to.login}@127.0.0.1:{name}"]
        return self._timed(args, f"scp through {to.path}")

    def rsync(self, to: Endpoint, source: Path, name: str) -> float:
        shell = shlex.join(["ssh", *self.options(to), "-p", str(to.port)])
        args = ["rsync", "-a", "-e", shell, f"{source}/", f"{to.login}@127.0.0.1:{name}/"]
        return self._timed(args, f"rsync through {to.path}")

    def _timed(self, args: list[str], what: str) -> float:
        t0 = time.perf_counter()
        r = subprocess.run(args, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
        seconds = time.perf_counter() - t0
        if r.returncode != 0:
            raise RuntimeError(f"{what} exited {r.returncode}: {r.stderr}")
        return seconds

    def echoes(self, to: Endpoint, keystrokes: int, gap: float) -> list[float]:
        """Round trips of ``keystrokes`` single characters typed into ``cat`` on a remote PTY."""
        master, slave = pty.openpty()
        args = ["ssh", *self.options(to), "-tt", "-p", str(to.port), f"{to.login}@127.0.0.1", "echo READY; exec cat"]
        proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave)
        os.close(slave)
        try:
            read_until(master, b"READY", 60)
            times = []
            for i in range(keystrokes):
                char = bytes([ord("a") + i % 26])
                t0 = time.perf_counter()
                os.write(master, char)
                read_until(master, char, 10)
                times.append(time.perf_counter() - t0)
                time.sleep(gap)
            return times
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            os.close(master)


def read_until(fd: int, wanted: bytes, timeout: float) -> None:
    seen = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            seen += chunk
            if wanted in seen:
                return
    raise RuntimeError(f"{wanted!r} did not come back within {timeout}s (got {seen[-200:]!r})")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and of the children it has reaped (sshd's per-connection
    processes, a gateway's workers that ended), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> dict[int, str]:
    """Direct children of ``pid``: pid -> command line."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            continue
    return found


def child_with(pid: int, word: str) -> int:
    found = [p for p, cmd in children(pid).items() if word in cmd]
    if len(found) != 1:
        raise RuntimeError(f"expected one child of {pid} running {word!r}, found {children(pid)}")
    return found[0]


def sshd_of(home: Path) -> int:
    """The pid of the sshd that ``home/.aidc/sshd/sshd_config`` configures (the workspace's, started
    by its Jupyter server): the listener, not its per-connection processes."""
    config = f" -f {home / '.aidc' / 'sshd' / 'sshd_config'}"
    found = []
    for entry in Path("/proc").iterdir():
        try:
            # sshd rewrites its command line: "sshd: /usr/sbin/sshd -D -e -f <config> [listener] ..."
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, UnicodeDecodeError):
            continue
        if entry.name.isdigit() and "sshd" in cmdline and config in cmdline:
            found.append(int(entry.name))
    if len(found) != 1:
        raise RuntimeError(f"expected one sshd with {config}, found {found}")
    return found[0]


def client_cpu() -> float:
    """CPU of this script's reaped children (scp, rsync and their ssh)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


CPUACCT = Path("/sys/fs/cgroup/cpuacct")


class CpuGroup:
    """A cgroup of the v1 ``cpuacct`` hierarchy that counts the CPU of a process and of everything it
    starts from then on, reaped or not. sshd's per-connection processes are lost to ``/proc``'s
    reaped-children times (the listener does not accumulate them), and the workspace's cgroups
    (CPU limit, memory) are in other hierarchies, which moving a process here does not change."""

    def __init__(self, parent: Path, name: str, pid: int):
        if not (CPUACCT / "cpuacct.usage").exists():
            raise RuntimeError(
                f"{CPUACCT} is not a cgroup v1 cpuacct hierarchy: this benchmark counts sshd's CPU there"
                " (run it as root on a host with cgroup v1, as this project's CI machine)"
            )
        self.path = parent / name
        self.path.mkdir(parents=True)
        (self.path / "cgroup.procs").write_text(str(pid))

    def seconds(self) -> float:
        return int((self.path / "cpuacct.usage").read_text()) / 1e9

    def remove(self) -> None:
        """Hand its processes back to the root of the hierarchy, then delete it."""
        for pid in (self.path / "cgroup.procs").read_text().split():
            try:
                (CPUACCT / "cgroup.procs").write_text(pid)
            except OSError:
                pass  # ended meanwhile
        self.path.rmdir()


class Accounting:
    """CPU seconds by role of one path, added up over the copies measured with :meth:`measure`."""

    def __init__(self, path: str, readers: dict[str, Callable[[], float]]):
        self.path, self.readers = path, {**readers, "client": client_cpu}
        self.seconds: dict[str, float] = {}
        self.wall = 0.0
        self.gib = 0.0

    def _now(self) -> dict[str, float]:
        return {role: read() for role, read in self.readers.items()}

    def measure(self, gib: float, copy: Callable[[], float]) -> float:
        """Run ``copy`` (which returns its wall seconds) and count the CPU it took; its seconds."""
        before = self._now()
        seconds = copy()
        time.sleep(0.5)  # the connection's processes end after the client (their CPU counts)
        after = self._now()
        for role in after:
            self.seconds[role] = self.seconds.get(role, 0.0) + after[role] - before[role]
        self.wall += seconds
        self.gib += gib
        return seconds

    def use(self) -> CpuUse:
        return CpuUse(self.path, dict(self.seconds), self.wall, self.gib)


def start_direct_sshd(
    account: str, home: Path, host_key: str, public_key: Path, port: int
) -> tuple[subprocess.Popen[bytes], Path]:
    """A second sshd written by ``sshgateway.workspace.prepare`` as the workspace's own, run as the
    workspace's ``account`` on 127.0.0.1:``port``, for our key; its sessions' home is a folder of
    its own in ``home`` (the workspace's ``.aidc/sshd`` is not touched). The process and that folder."""
    direct_home = home / "bench-direct"
    direct_home.mkdir(mode=0o700)
    entry = pwd.getpwnam(account)
    os.chown(direct_home, entry.pw_uid, entry.pw_gid)
    environ = {
        "HOME": str(direct_home),
        "USER": account,
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "AIDC_SSH_AUTHORIZED_KEY": public_key.read_text().strip(),
        "AIDC_SSH_HOST_KEY": host_key,
    }
    code = (
        "import json, sys\nfrom sshgateway.workspace import prepare\n"
        "print(json.dumps(prepare(int(sys.argv[1]), '127.0.0.1', json.load(sys.stdin))))"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, str(port)],
        input=json.dumps(environ),
        capture_output=True,
        text=True,
        user=account,
        cwd=REPO,
        env={"PATH": environ["PATH"], "PYTHONPATH": str(REPO)},
        check=False,
    )
    if r.returncode != 0:
        raise RuntimeError(f"sshgateway.workspace.prepare for the direct sshd failed: {r.stderr}")
    command = json.loads(r.stdout)
    log_file = open(direct_home / "sshd.log", "wb")  # noqa: SIM115 (closed with the process)
    proc = subprocess.Popen(command, stdout=log_file, stderr=log_file, user=account, stdin=subprocess.DEVNULL)
    log_file.close()
    return proc, direct_home


def register(hub_url: str, token: str, public_key: Path) -> None:
    import requests

    r = requests.post(
        f"{hub_url}/services/quotas/api/ssh-keys",
        headers={"Authorization": f"token {token}"},
        json={"public_key": public_key.read_text(), "title": "benchmark"},
        timeout=30,
    )
    if r.status_code != 201:
        raise RuntimeError(f"registering the key failed: {r.status_code} {r.text}")


def wait_port(port: int, timeout: float = 15) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def all_at_once(jobs: Sequence[Callable[[], float]]) -> float:
    """Run ``jobs`` in threads released at the same moment; seconds from then until the last ended."""
    gate = threading.Barrier(len(jobs) + 1)
    errors: list[BaseException] = []

    def run(job: Callable[[], float]) -> None:
        gate.wait()
        try:
            job()
        except BaseException as e:  # reported below, in this thread
            errors.append(e)

    threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
    for t in threads:
        t.start()
    gate.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return time.perf_counter() - t0


class CopyError(RuntimeError):
    """A copy arrived different from its source."""


def check_file(path: Path, want: str, what: str) -> None:
    got = sha256(path)
    path.unlink()
    if got != want:
        raise CopyError(f"{what} has SHA-256 {got}, want {want}")


def measure(args: argparse.Namespace) -> Results:
    from tests.bed.hub import PASSWORDS, free_port, running_hub
    from tests.bed.ssh import gateway_pids

    t_start = time.monotonic()
    load_before = os.getloadavg()[0]
    size = args.size_mib * 2**20
    together_size = args.together_mib * 2**20
    people = PEOPLE[: args.people]
    with tempfile.TemporaryDirectory(prefix="bench-ssh-") as tmp:
        work = Path(tmp)
        keys = {}
        for name, _ in people:
            keys[name] = work / f"{name}_ed25519"
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys[name])], check=True)
        log(f"writing {args.size_mib} MiB, {args.together_mib} MiB and {args.files:,} small files")
        source = work / "payload.bin"
        want = write_random(source, args.size_mib)
        together_source = work / "together.bin"
        together_want = write_random(together_source, args.together_mib)
        data = data_set(args.files)
        dataset = work / "dataset"
        write_data_set(dataset, data)
        data_want = manifest(dataset)
        config = work / "sshgateway_config.py"
        config.write_text(f"c.SSHGateway.workers = {args.workers}\n" if args.workers else "")
        with running_hub(
            work / "hub", env={"AIDC_SSH_CONFIG": str(config)}, traits={"Spawner.poll_interval": 5}
        ) as hub:
            clients = {}
            for name, tenant in people:
                clients[name] = hub.login(name, PASSWORDS[name])
                register(hub.url, clients[name].token, keys[name].with_suffix(".pub"))
                r = clients[name].spawn(tenant=tenant, profile="cpu")
                if r.status_code not in (201, 202):
                    raise RuntimeError(f"{name}'s server did not start: {r.status_code} {r.text}")
            for name, _ in people:
                clients[name].wait_ready()
            admin = hub.login("admin", PASSWORDS["admin"])
            gateway_port = int(hub.env["AIDC_SSH_PORT"])
            through = {name: Endpoint("gateway", name, gateway_port, keys[name]) for name, _ in people}
            client = Client(work / "known_hosts")
            homes = {name: Path(client.run(through[name], "echo $HOME").strip()) for name, _ in people}
            sshds = {name: sshd_of(homes[name]) for name, _ in people}
            alice_pid = admin.api("GET", "/users/alice").json()["servers"][""]["state"]["pid"]
            account = pwd.getpwuid(os.stat(f"/proc/{alice_pid}").st_uid).pw_name
            host_key = (homes["alice"] / ".aidc" / "sshd" / "ssh_host_ed25519_key").read_text()
            direct_port = free_port()
            direct, direct_home = start_direct_sshd(
                account, homes["alice"], host_key, keys["alice"].with_suffix(".pub"), direct_port
            )
            groups: dict[str, CpuGroup] = {}
            groups_root = CPUACCT / f"aidc-bench-ssh-{os.getpid()}"
            try:
                wait_port(direct_port)
                to = {"gateway": through["alice"], "direct": Endpoint("direct", account, direct_port, keys["alice"])}
                if client.run(to["direct"], "echo $HOME").strip() != str(direct_home):
                    raise RuntimeError(f"the direct sshd's sessions do not get their home {direct_home}")
                landing = {"gateway": homes["alice"], "direct": direct_home}
                workers = len(gateway_pids(hub))
                workers = workers - 1 if workers > 1 else 1  # the parent does not serve
                log(f"gateway processes: {gateway_pids(hub)}; workspaces' sshd: {sshds}; direct {direct.pid}")

                groups = {n: CpuGroup(groups_root, f"sshd-{n}", pid) for n, pid in sshds.items()}
                groups["direct"] = CpuGroup(groups_root, "sshd-direct", direct.pid)

                def gateway_cpu() -> float:
                    return sum(cpu_seconds(p) for p in gateway_pids(hub))

                def readers(path: str, chosen: Sequence[str]) -> dict[str, Callable[[], float]]:
                    if path == "direct":
                        return {"sshd": groups["direct"].seconds}
                    return {"gateway": gateway_cpu, "sshd": lambda: sum(groups[n].seconds() for n in chosen)}

                names = [n for n, _ in people]
                scp_acc = {p: Accounting(p, readers(p, ["alice"])) for p in PATHS}
                rsync_acc = {p: Accounting(p, readers(p, ["alice"])) for p in PATHS}
                together_acc = {p: Accounting(p, readers(p, names)) for p in PATHS}
                scp_s: dict[str, list[float]] = {p: [] for p in PATHS}
                rsync_s: dict[str, list[float]] = {p: [] for p in PATHS}
                together_s: dict[str, list[float]] = {p: [] for p in PATHS}
                echo_times: dict[str, list[float]] = {p: [] for p in PATHS}
                for rep in range(args.repeats):
                    order = PATHS if rep % 2 == 0 else PATHS[::-1]
                    for path in order:
                        name = f"bench-{path}-{rep}.bin"
                        s = scp_acc[path].measure(size / 2**30, partial(client.scp, to[path], source, name))
                        check_file(landing[path] / name, want, f"the scp through {path} (#{rep + 1})")
                        scp_s[path].append(s)
                        log(f"  scp {path} #{rep + 1}: {size / s / 1e6:.1f} MB/s, checksum ok")
                    for path in order:
                        name = f"bench-rsync-{path}-{rep}"
                        s = rsync_acc[path].measure(data.bytes / 2**30, partial(client.rsync, to[path], dataset, name))
                        got = manifest(landing[path] / name)
                        shutil.rmtree(landing[path] / name)
                        if got != data_want:
                            raise CopyError(f"the rsync through {path} (#{rep + 1}) gave {got}, want {data_want}")
                        rsync_s[path].append(s)
                        log(f"  rsync {path} #{rep + 1}: {data.bytes / s / 1e6:.1f} MB/s, manifest ok")
                    for path in order:
                        # through the gateway each into their own workspace; direct: all to the one direct sshd
                        ends = {n: to["direct"] if path == "direct" else through[n] for n in names}
                        files = {n: f"bench-together-{path}-{rep}-{n}.bin" for n in names}
                        jobs = [partial(client.scp, ends[n], together_source, files[n]) for n in names]
                        s = together_acc[path].measure(len(names) * together_size / 2**30, partial(all_at_once, jobs))
                        for n in names:
                            where = direct_home if path == "direct" else homes[n]
                            check_file(where / files[n], together_want, f"{n}'s copy through {path} (#{rep + 1})")
                        together_s[path].append(s)
                        mb_per_s = len(names) * together_size / s / 1e6
                        log(f"  {len(names)} at once {path} #{rep + 1}: {mb_per_s:.1f} MB/s")
                    for path in order:
                        echo_times[path] += client.echoes(to[path], args.keystrokes, args.gap_ms / 1e3)
                        p50 = nearest_rank(echo_times[path], 0.5) * 1e3
                        log(f"  echo {path} round {rep + 1}: p50 {p50:.2f} ms so far")
            finally:
                direct.terminate()
                direct.wait(10)
                shutil.rmtree(direct_home, ignore_errors=True)
                for group in groups.values():
                    group.remove()
                if groups:
                    groups_root.rmdir()
            for name, _ in people:
                clients[name].stop_server()
    openssh = subprocess.run(["ssh", "-V"], capture_output=True, text=True).stderr.strip().split(",")[0]
    return Results(
        recorded=f"Recorded {date.today().isoformat()} on {machine()}; Python {platform.python_version()}",
        openssh=openssh,
        workers=workers,
        size_mib=args.size_mib,
        repeats=args.repeats,
        scp={p: throughput(p, size, scp_s[p]) for p in PATHS},
        scp_cpu={p: scp_acc[p].use() for p in PATHS},
        data=data,
        rsync={p: throughput(p, data.bytes, rsync_s[p]) for p in PATHS},
        rsync_cpu={p: rsync_acc[p].use() for p in PATHS},
        together={
            p: Together(p, len(names), together_size, tuple(together_s[p]), together_acc[p].use()) for p in PATHS
        },
        keystrokes=args.keystrokes,
        echoes={p: latency(p, echo_times[p]) for p in PATHS},
        cores=os.cpu_count() or 1,
        load_before=load_before,
        load_after=os.getloadavg()[0],
        elapsed=time.monotonic() - t_start,
        together_people=together_names(names),
    )


def together_names(names: Sequence[str]) -> str:
    """``["alice", "bob", "carol"]`` -> ``"alice, bob and carol"``."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=512, help="size of the scp'd file (default 512)")
    parser.add_argument("--files", type=int, default=10_000, help="small files in the rsync data set (default 10000)")
    parser.add_argument(
        "--people", type=int, default=len(PEOPLE), help=f"people copying at once (default {len(PEOPLE)}, at most that)"
    )
    parser.add_argument("--together-mib", type=int, default=256, help="what each of them copies (default 256)")
    parser.add_argument("--repeats", type=int, default=3, help="copies, rounds and echo rounds per path (default 3)")
    parser.add_argument("--keystrokes", type=int, default=150, help="characters typed per echo round (default 150)")
    parser.add_argument("--gap-ms", type=float, default=20, help="pause between keystrokes, as a typist (default 20)")
    parser.add_argument(
        "--workers", type=int, default=0, help="SSHGateway.workers (default: the gateway's own, the usable CPUs)"
    )
    parser.add_argument(
        "--write", metavar="PATH", type=Path, help="record the results in this README, between the ssh markers"
    )
    args = parser.parse_args(argv)
    if min(args.size_mib, args.files, args.people, args.together_mib, args.repeats, args.keystrokes) < 1:
        parser.error("--size-mib, --files, --people, --together-mib, --repeats and --keystrokes must be at least 1")
    if args.people > len(PEOPLE) or args.gap_ms < 0 or args.workers < 0:
        parser.error(f"--people is at most {len(PEOPLE)}; --gap-ms and --workers are not negative")
    try:
        section = render(measure(args))
    except CopyError as e:
        log(f"FAILED: {e}; nothing recorded")
        return 1
    print(section)
    if args.write:
        write_section(args.write, SECTION, section)
        log(f"recorded in {args.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

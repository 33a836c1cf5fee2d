"""SSH through the gateway against SSH straight to the workspace's sshd: bulk copy and keystrokes.

Starts a real hub with its SSH gateway (``tests/bed/hub.py``), registers alice's key through the
quotas API, starts her CPU workspace, and then, in the same run and alternating the two paths:

1. copies a 512 MiB file of random bytes with Debian's ``scp`` (SFTP protocol, upload) into her
   workspace's home, ``--repeats`` times (default 3) per path, and checks each copy's SHA-256;
2. types single characters into an interactive PTY session (``ssh -tt``, ``cat`` on the remote
   terminal) and times each echo, ``--keystrokes`` per round (default 150), one round per repeat.

"Direct" is a second Debian sshd for the workspace's own account, on a loopback port, configured
by ``sshgateway.workspace.sshd_config`` exactly as the workspace's sshd is, with the workspace's host
key, environment and session script, and the benchmark's client key as its one authorized key
(instead of the gateway's per-server key). Both paths use the cipher the gateway prefers
(``aes128-gcm@openssh.com``), so the comparison is of the path, not of the cipher.

    .venv/bin/python -P benchmarks/ssh.py                                  # print the results
    .venv/bin/python -P benchmarks/ssh.py --write benchmarks/README.md     # and record them
    .venv/bin/python -P benchmarks/ssh.py --size-mib 64 --repeats 1        # a quick look

Targets (issue 5): gateway throughput at least 0.8 of direct; added keystroke p50 under 5 ms.
If a copy arrives with a different checksum the script exits 1 and records nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import pty
import resource
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
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
THROUGHPUT_TARGET = 0.8  # gateway MB/s over direct MB/s, at least
ADDED_P50_TARGET_MS = 5.0  # gateway p50 minus direct p50, under
PATHS = ("gateway", "direct")


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

    @property
    def cores(self) -> float:
        """CPUs kept busy on average while copying."""
        return self.total / self.wall


def cpu_bound_ceiling(cpu: dict[str, CpuUse], cores: int) -> float:
    """The best gateway/direct throughput ratio this machine allows when the gateway path is CPU-bound:
    the gateway path can use at most ``cores`` CPUs, so at best ``cores / gateway CPU per GiB`` GiB/s,
    against what direct measured."""
    return _best_ratio(cpu, cores, cpu["gateway"].per_gib)


def ceiling_without_gateway(cpu: dict[str, CpuUse], cores: int) -> float:
    """The same ceiling for a gateway that cost no CPU at all: what the rest of the path (client,
    proxy, hub, jupyter-server-proxy in the workspace server, sshd) leaves possible."""
    rest = cpu["gateway"].total - cpu["gateway"].seconds.get("gateway", 0.0)
    return _best_ratio(cpu, cores, rest / cpu["gateway"].gib)


def _best_ratio(cpu: dict[str, CpuUse], cores: int, gateway_cpu_per_gib: float) -> float:
    direct_rate = cpu["direct"].gib / cpu["direct"].wall
    return (cores / gateway_cpu_per_gib) / direct_rate


@dataclass(frozen=True)
class Verdict:
    ratio: float
    added_p50_ms: float
    throughput_met: bool
    latency_met: bool


def verdict(copies: dict[str, Throughput], echoes: dict[str, Latency]) -> Verdict:
    ratio = copies["gateway"].median / copies["direct"].median
    added = echoes["gateway"].p50 - echoes["direct"].p50
    return Verdict(ratio, added, ratio >= THROUGHPUT_TARGET, added < ADDED_P50_TARGET_MS)


def render(
    *,
    recorded: str,
    size_mib: int,
    repeats: int,
    keystrokes: int,
    copies: dict[str, Throughput],
    echoes: dict[str, Latency],
    openssh: str,
    load_before: float,
    load_after: float,
    elapsed: float,
    cpu: dict[str, CpuUse] | None = None,
    cores: int = 0,
) -> str:
    """The text of the README section ``ssh``."""
    v = verdict(copies, echoes)
    lines = [
        f"{recorded}, load average {load_before:.2f} at the start and {load_after:.2f} at the end; {openssh}.",
        "",
        f"Upload of {size_mib} MiB with `scp` (SFTP protocol, cipher {CIPHER}), {repeats} copies per path,"
        " alternating; every copy's SHA-256 checked.",
        "",
        "| path | MB/s per copy | median MB/s |",
        "|---|---|---:|",
    ]
    for path in PATHS:
        t = copies[path]
        lines.append(f"| {path} | {', '.join(f'{x:.1f}' for x in t.mb_per_s)} | {t.median:.1f} |")
    if cpu:
        roles = [r for r in CPU_ROLES if any(r in c.seconds for c in cpu.values())]
        lines += [
            "",
            "CPU seconds per GiB copied, by process (user + system, each copy's processes included):",
            "",
            "| path | " + " | ".join(roles) + " | total | CPUs busy while copying |",
            "|---|" + "---:|" * (len(roles) + 2),
        ]
        for path in PATHS:
            c = cpu[path]
            cells = [f"{c.seconds[r] / c.gib:.2f}" if r in c.seconds else "–" for r in roles]
            lines.append(f"| {path} | " + " | ".join(cells) + f" | {c.per_gib:.2f} | {c.cores:.2f} of {cores} |")
        lines += [
            "",
            f"Per byte, the gateway path costs {cpu['gateway'].per_gib / cpu['direct'].per_gib:.1f}x the CPU of"
            f" direct (the gateway itself {cpu['gateway'].seconds.get('gateway', 0.0) / cpu['gateway'].gib / cpu['direct'].per_gib:.1f}x"
            " direct's whole path).",
            f"With the gateway path using every CPU of this machine, it could copy at most"
            f" {cpu_bound_ceiling(cpu, cores):.0%} of direct's measured speed (its CPU per GiB against"
            f" {cores} CPUs); that is the ceiling for the ratio here, whatever the scheduling. A gateway"
            f" that cost nothing would still leave at most {ceiling_without_gateway(cpu, cores):.0%}: the rest"
            " of the path (proxy, jupyter-server-proxy, a second sshd) costs that much.",
        ]
    lines += [
        "",
        f"Keystroke echo in an interactive PTY session (`ssh -tt`, `cat`), {keystrokes} characters per round,"
        f" {repeats} rounds per path, alternating:",
        "",
        "| path | keystrokes | p50 (ms) | p99 (ms) | max (ms) |",
        "|---|---:|---:|---:|---:|",
    ]
    for path in PATHS:
        e = echoes[path]
        lines.append(f"| {path} | {e.n:,} | {e.p50:.2f} | {e.p99:.2f} | {e.max:.2f} |")
    met = {True: "meets it", False: "MISSES it"}
    lines += [
        "",
        f"Throughput target ≥ {THROUGHPUT_TARGET:.0%} of direct: {met[v.throughput_met]}"
        f" (gateway {v.ratio:.0%} of direct, median against median).",
        f"Added keystroke latency target p50 < {ADDED_P50_TARGET_MS:g} ms: {met[v.latency_met]}"
        f" (+{v.added_p50_ms:.2f} ms).",
        f"The run took {elapsed:.0f} s.",
    ]
    return "\n".join(lines)


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


class Client:
    """Debian's OpenSSH client with the benchmark's key, to the gateway or to the direct sshd."""

    def __init__(self, key: Path, known_hosts: Path, ports: dict[str, int]):
        self.key, self.known_hosts, self.ports = key, known_hosts, ports

    def options(self) -> list[str]:
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
            str(self.key),
        ]

    def login(self, path: str) -> str:
        return "alice@127.0.0.1" if path == "gateway" else "root@127.0.0.1"

    def run(self, path: str, command: str) -> str:
        args = ["ssh", *self.options(), "-p", str(self.ports[path]), self.login(path), command]
        r = subprocess.run(args, capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)
        if r.returncode != 0:
            raise RuntimeError(f"ssh {path} {command!r} exited {r.returncode}: {r.stderr}")
        return r.stdout

    def scp(self, path: str, source: Path, name: str) -> float:
        args = ["scp", *self.options(), "-q", "-P", str(self.ports[path]), str(source), f"{self.login(path)}:{name}"]
        t0 = time.perf_counter()
        r = subprocess.run(args, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
        seconds = time.perf_counter() - t0
        if r.returncode != 0:
            raise RuntimeError(f"scp through {path} exited {r.returncode}: {r.stderr}")
        return seconds

    def echoes(self, path: str, keystrokes: int, gap: float) -> list[float]:
        """Round trips of ``keystrokes`` single characters typed into ``cat`` on a remote PTY."""
        master, slave = pty.openpty()
        args = ["ssh", *self.options(), "-tt", "-p", str(self.ports[path]), self.login(path), "echo READY; exec cat"]
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


# the processes each path runs, as the CPU table names them
CPU_ROLES = ("client", "gateway", "proxy", "hub", "workspace server", "sshd")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and of the children it has reaped (sshd's per-connection
    processes, scp's ssh), from /proc."""
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


def client_cpu() -> float:
    """CPU of this script's reaped children (scp and its ssh)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def start_direct_sshd(workspace_sshd: Path, directory: Path, public_key: Path, port: int) -> subprocess.Popen[bytes]:
    """A second sshd configured as the workspace's, with its host key, environment and session, for our key."""
    from sshgateway.workspace import SFTP_SERVERS, SSHD, SshdSettings, session_script, sshd_config

    directory.mkdir(mode=0o700)
    settings = SshdSettings(
        directory=str(directory),
        port=port,
        user="root",  # the embedded mode run by root: workspaces run as root
        root=True,
        sftp_server=next((p for p in SFTP_SERVERS if os.access(p, os.X_OK)), None),
    )
    for name in ("ssh_host_ed25519_key", "ssh_host_ed25519_key.pub", "environment"):
        shutil.copy2(workspace_sshd / name, directory / name)
    files = {
        "authorized_keys": (public_key.read_text(), 0o600),
        "session": (session_script(settings.path("environment")), 0o700),
        "sshd_config": (sshd_config(settings), 0o600),
    }
    for name, (text, mode) in files.items():
        (directory / name).write_text(text)
        (directory / name).chmod(mode)
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    log_file = open(directory / "sshd.log", "wb")  # noqa: SIM115 (closed with the process)
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", settings.path("sshd_config")], stdout=log_file, stderr=log_file)
    log_file.close()
    return proc


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


def measure(args: argparse.Namespace) -> str:
    from tests.bed.hub import PASSWORDS, free_port, running_hub

    t_start = time.monotonic()
    load_before = os.getloadavg()[0]
    size = args.size_mib * 1024 * 1024
    with tempfile.TemporaryDirectory(prefix="bench-ssh-") as tmp:
        work = Path(tmp)
        key = work / "bench_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        source = work / "payload.bin"
        log(f"writing {args.size_mib} MiB of random bytes")
        with open(source, "wb") as f:
            for _ in range(args.size_mib):
                f.write(os.urandom(1024 * 1024))
        want = sha256(source)
        with running_hub(work / "hub", traits={"Spawner.poll_interval": 5}) as hub:
            alice = hub.login("alice", PASSWORDS["alice"])
            register(hub.url, alice.token, key.with_suffix(".pub"))
            r = alice.spawn(tenant="lab", profile="cpu")
            if r.status_code not in (201, 202):
                raise RuntimeError(f"alice's server did not start: {r.status_code} {r.text}")
            alice.wait_ready()
            ports = {"gateway": int(hub.env["AIDC_SSH_PORT"]), "direct": free_port()}
            client = Client(key, work / "known_hosts", ports)
            home = Path(client.run("gateway", "echo $HOME").strip())  # starts the workspace's sshd
            direct = start_direct_sshd(
                home / ".aidc" / "sshd", work / "direct-sshd", key.with_suffix(".pub"), ports["direct"]
            )
            try:
                wait_port(ports["direct"])
                if client.run("direct", "echo $HOME").strip() != str(home):
                    raise RuntimeError("the direct sshd's sessions do not get the workspace's home")
                assert hub.proc is not None
                server_pid = child_with(hub.proc.pid, "singleuser")
                pids = {
                    "gateway": {
                        "gateway": child_with(hub.proc.pid, "sshgateway"),
                        "proxy": child_with(hub.proc.pid, "configurable-http-proxy"),
                        "hub": hub.proc.pid,
                        "workspace server": server_pid,
                        "sshd": child_with(server_pid, "sshd"),
                    },
                    "direct": {"sshd": direct.pid},
                }
                cpu_used = {p: dict.fromkeys(["client", *pids[p]], 0.0) for p in PATHS}
                seconds: dict[str, list[float]] = {p: [] for p in PATHS}
                echo_times: dict[str, list[float]] = {p: [] for p in PATHS}
                for rep in range(args.repeats):
                    order = PATHS if rep % 2 == 0 else PATHS[::-1]
                    for path in order:
                        name = f"bench-{path}-{rep}.bin"
                        before = {role: cpu_seconds(pid) for role, pid in pids[path].items()}
                        before["client"] = client_cpu()
                        s = client.scp(path, source, name)
                        time.sleep(0.5)  # sshd reaps the connection's processes (their CPU is counted then)
                        after = {role: cpu_seconds(pid) for role, pid in pids[path].items()}
                        after["client"] = client_cpu()
                        for role in after:
                            cpu_used[path][role] += after[role] - before[role]
                        got = sha256(home / name)
                        (home / name).unlink()
                        if got != want:
                            raise ChecksumError(f"the copy through {path} (#{rep + 1}) has SHA-256 {got}, want {want}")
                        seconds[path].append(s)
                        log(f"  scp {path} #{rep + 1}: {size / s / 1e6:.1f} MB/s, checksum ok")
                    for path in order:
                        echo_times[path] += client.echoes(path, args.keystrokes, args.gap_ms / 1e3)
                        log(
                            f"  echo {path} round {rep + 1}: p50 {nearest_rank(echo_times[path], 0.5) * 1e3:.2f} ms so far"
                        )
            finally:
                direct.terminate()
                direct.wait(10)
            alice.stop_server()
    openssh = subprocess.run(["ssh", "-V"], capture_output=True, text=True).stderr.strip().split(",")[0]
    return render(
        recorded=f"Recorded {date.today().isoformat()} on {machine()}; Python {platform.python_version()}",
        size_mib=args.size_mib,
        repeats=args.repeats,
        keystrokes=args.keystrokes,
        copies={p: throughput(p, size, seconds[p]) for p in PATHS},
        echoes={p: latency(p, echo_times[p]) for p in PATHS},
        openssh=openssh,
        load_before=load_before,
        load_after=os.getloadavg()[0],
        elapsed=time.monotonic() - t_start,
        cpu={p: CpuUse(p, cpu_used[p], sum(seconds[p]), len(seconds[p]) * size / 2**30) for p in PATHS},
        cores=os.cpu_count() or 1,
    )


class ChecksumError(RuntimeError):
    pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=512, help="size of the copied file (default 512)")
    parser.add_argument("--repeats", type=int, default=3, help="copies and echo rounds per path (default 3)")
    parser.add_argument("--keystrokes", type=int, default=150, help="characters typed per echo round (default 150)")
    parser.add_argument("--gap-ms", type=float, default=20, help="pause between keystrokes, as a typist (default 20)")
    parser.add_argument(
        "--write", metavar="PATH", type=Path, help="record the results in this README, between the ssh markers"
    )
    args = parser.parse_args(argv)
    if args.size_mib < 1 or args.repeats < 1 or args.keystrokes < 1 or args.gap_ms < 0:
        parser.error("--size-mib, --repeats and --keystrokes must be at least 1, --gap-ms not negative")
    try:
        section = measure(args)
    except ChecksumError as e:
        log(f"FAILED: {e}; nothing recorded")
        return 1
    print(section)
    if args.write:
        write_section(args.write, SECTION, section)
        log(f"recorded in {args.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

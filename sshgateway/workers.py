"""Several gateway processes on one port (``SSHGateway.workers``): SSH encryption is CPU-bound and
one asyncio process keeps one CPU busy, so many people copying at once need several processes.

The parent binds the port once (:func:`bind`) and forks the workers, which all accept on that one
listening socket; :class:`Supervisor` restarts a worker that dies and stops them all at SIGTERM or
SIGINT. How many by default: :func:`usable_cpus`, the CPUs this process may run on, limited by its
cgroup's CPU quota (a container's CPU limit).
"""

# i18n: operator: the workers' ends and restarts go to the gateway's log
from __future__ import annotations

import logging
import math
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import NoReturn

CGROUP_ROOT = Path("/sys/fs/cgroup")

# a worker that dies is started again after RESTART_DELAY seconds, doubled (up to MAX_RESTART_DELAY)
# each time it dies again within STABLE seconds of its start: a worker that cannot start does not
# fork in a tight loop, one that crashed once after hours comes back at once
RESTART_DELAY = 0.5
MAX_RESTART_DELAY = 30.0
STABLE = 30.0
# seconds the workers have to close their listeners and exit at a stop, before SIGKILL
STOP_GRACE = 5.0


# --- how many -------------------------------------------------------------------------------------


def cpu_quota(text: str) -> Fraction | None:
    """The CPUs a cgroup's quota allows, from cgroup v2's ``cpu.max`` ("150000 100000": 1.5) or
    cgroup v1's ``cpu.cfs_quota_us`` and ``cpu.cfs_period_us`` joined by a space ("50000 100000":
    0.5); None for no quota ("max 100000", "-1 100000") or a text that is neither."""
    fields = text.split()
    if len(fields) != 2 or fields[0] == "max":
        return None
    try:
        quota, period = int(fields[0]), int(fields[1])
    except ValueError:
        return None
    if quota <= 0 or period <= 0:
        return None
    return Fraction(quota, period)


def cpu_count(affinity: int, quotas: Iterable[str]) -> int:
    """The CPUs a process can keep busy: the ``affinity`` CPUs it may run on, limited by the
    tightest of the cgroup quotas ``quotas`` (:func:`cpu_quota`'s texts), at least 1. A fraction
    counts as a whole CPU (1.5 as 2): two processes can use all of 1.5 CPUs, one only 1."""
    count = affinity
    for text in quotas:
        limit = cpu_quota(text)
        if limit is not None:
            count = min(count, math.ceil(limit))
    return max(1, count)


def _folders(base: Path, path: str) -> list[Path]:
    """``base/path`` and each folder above it up to ``base``."""
    parts = [part for part in path.split("/") if part]
    return [base.joinpath(*parts[:n]) for n in range(len(parts), -1, -1)]


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def cgroup_quotas(proc_self_cgroup: str, root: Path = CGROUP_ROOT) -> list[str]:
    """The CPU quotas (:func:`cpu_quota`'s texts) of the cgroup that ``proc_self_cgroup`` (the text
    of ``/proc/self/cgroup``) names and of every cgroup above it, whose limits apply too: cgroup v2's
    ``cpu.max`` and cgroup v1's ``cpu`` controller. Folders missing under ``root`` are skipped: in a
    container, ``root`` is the container's own cgroup, whatever path the host gives it."""
    quotas = []
    for line in proc_self_cgroup.splitlines():
        fields = line.split(":", 2)
        if len(fields) != 3:
            continue
        hierarchy, controllers, path = fields
        if hierarchy == "0" and controllers == "":
            quotas += [text for folder in _folders(root, path) if (text := _read(folder / "cpu.max"))]
        elif "cpu" in controllers.split(","):
            for folder in _folders(root / "cpu", path):
                quota, period = _read(folder / "cpu.cfs_quota_us"), _read(folder / "cpu.cfs_period_us")
                if quota and period:
                    quotas.append(f"{quota} {period}")
    return quotas


def usable_cpus() -> int:
    """The CPUs this process may use: those it may run on (its affinity), limited by the CPU quotas
    of its cgroups, at least 1."""
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return cpu_count(affinity, cgroup_quotas(_read(Path("/proc/self/cgroup")) or ""))


# --- one port ---------------------------------------------------------------------------------------


def bind(host: str, port: int, backlog: int = 100) -> list[socket.socket]:
    """Listening TCP sockets on ``host``:``port``, one per address ``host`` names ("" for every
    interface), bound as asyncio's ``create_server`` binds them (SO_REUSEADDR; IPv6 sockets IPv6 only)."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(backlog)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


# --- the workers ------------------------------------------------------------------------------------


def describe_exit(status: int) -> str:
    """A worker's end for people, from ``os.waitpid``'s status: "exited with status 1", "was killed by SIGKILL"."""
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


@dataclass
class _Worker:
    index: int
    started: float


class Supervisor:
    """Runs ``count`` workers, each ``work(index)`` in a process forked from this one, until SIGTERM
    or SIGINT, or until ``orphaned()`` says that whoever started this process is gone; then stops
    them (SIGTERM, SIGKILL after ``STOP_GRACE`` seconds). A worker that ends otherwise is started
    again, after a delay that grows while it keeps dying young. Forks: call it with no other thread
    running and no event loop."""

    def __init__(
        self, count: int, work: Callable[[int], None], log: logging.Logger, orphaned: Callable[[], bool]
    ) -> None:
        self.count, self.work, self.log, self.orphaned = count, work, log, orphaned
        self._workers: dict[int, _Worker] = {}  # pid -> worker
        self._due: dict[int, float] = {}  # index -> when to start it again
        self._delay: dict[int, float] = {}  # index -> its last restart delay
        self._mask: set[int | signal.Signals] = set()

    def run(self) -> None:
        """Start the workers and keep them running; return once they are all stopped."""
        signals = {signal.SIGTERM, signal.SIGINT, signal.SIGCHLD}
        # The parent takes its signals with sigtimedwait rather than in handlers: a stop cannot
        # interrupt it halfway through a fork or a restart, and nothing is lost between two waits.
        self._mask = signal.pthread_sigmask(signal.SIG_BLOCK, signals)
        try:
            for index in range(1, self.count + 1):
                self._start(index)
            self._supervise(signals)
        finally:
            self._stop()
            while signal.sigtimedwait(signals, 0) is not None:
                pass  # a second SIGTERM or SIGINT during the stop: already done
            signal.pthread_sigmask(signal.SIG_SETMASK, self._mask)

    def _supervise(self, signals: set[signal.Signals]) -> None:
        while True:
            now = time.monotonic()
            for index, due in list(self._due.items()):
                if due <= now:
                    del self._due[index]
                    self._start(index)
            wait = min([1.0, *(due - now for due in self._due.values())])
            got = signal.sigtimedwait(signals, max(wait, 0.01))
            if got is not None and got.si_signo != signal.SIGCHLD:
                self.log.info("Stopping the SSH gateway's workers (%s)", signal.Signals(got.si_signo).name)
                return
            if self.orphaned():
                self.log.warning("The hub that started the SSH gateway is gone; stopping its workers")
                return
            self._reap(restart=True)

    def _start(self, index: int) -> None:
        pid = os.fork()
        if pid == 0:
            self._child(index)
        self._workers[pid] = _Worker(index, time.monotonic())
        self.log.info("SSH gateway worker %d started (pid %d)", index, pid)

    def _child(self, index: int) -> NoReturn:
        status = 1
        try:
            signal.pthread_sigmask(signal.SIG_SETMASK, self._mask)
            self.work(index)
            status = 0
        except SystemExit as e:
            status = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
            if isinstance(e.code, str):
                print(e.code, file=sys.stderr)
        except KeyboardInterrupt:
            status = 0  # SIGINT before the worker's own handler was in place: stopping anyway
        except BaseException:
            self.log.exception("SSH gateway worker %d failed", index)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            # not the parent's exit path (its atexit handlers, the frames below the fork)
            os._exit(status)

    def _reap(self, restart: bool) -> None:
        while self._workers:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = self._workers.pop(pid, None)
            if worker is None or not restart:
                continue
            lived = time.monotonic() - worker.started
            previous = self._delay.get(worker.index, RESTART_DELAY / 2)
            delay = RESTART_DELAY if lived >= STABLE else min(MAX_RESTART_DELAY, previous * 2)
            self._delay[worker.index] = delay
            self._due[worker.index] = time.monotonic() + delay
            self.log.warning(
                "SSH gateway worker %d (pid %d) %s after %.0f seconds; starting it again in %.1f seconds",
                worker.index,
                pid,
                describe_exit(status),
                lived,
                delay,
            )

    def _stop(self) -> None:
        self._due.clear()
        for pid in self._workers:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + STOP_GRACE
        while self._workers and time.monotonic() < deadline:
            self._reap(restart=False)
            if self._workers:
                signal.sigtimedwait({signal.SIGCHLD}, 0.1)
        for pid in list(self._workers):
            self.log.warning("SSH gateway worker pid %d did not stop within %.0f seconds; killing it", pid, STOP_GRACE)
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
            del self._workers[pid]

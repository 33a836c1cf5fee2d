"""Process plumbing shared by the beds that run servers built by a ``build.sh``
(:mod:`tests.bed.cluster`, :mod:`tests.bed.kueue`).

- :func:`run_build`: run a ``build.sh`` (cached after the first run) and return the bin dir it prints last;
- :func:`spawn`: start a server in its own process group, logging to a file, tied to this
  process's life (``PR_SET_PDEATHSIG``); :func:`terminate` ends such a group;
- :func:`wait_until`: poll a readiness check while the servers started so far still run;
- :class:`Servers`: the start (build, check, start again when a server lost the race for its free
  port), timings and waits of such a bed;
- :func:`log_tail`: the last lines of a server's log, for error messages.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Self

_PR_SET_PDEATHSIG = 1
try:  # looked up here, not in the forked child (dlopen after fork can deadlock)
    _prctl: Callable[..., int] | None = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):
    _prctl = None


def run_build(script: Path, *, bin_env: str, error: type[Exception], quiet: bool = False) -> Path:
    """Run ``script`` (a no-op once cached) and return the bin dir it prints last; ``$bin_env``,
    when set, names a bin dir to use instead."""
    if os.environ.get(bin_env):
        return Path(os.environ[bin_env])
    proc = subprocess.run(
        ["bash", str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE if quiet else None,
        text=True,
    )
    if proc.returncode != 0:
        detail = "\n".join((proc.stderr or "").splitlines()[-60:]) if quiet else "see its output above"
        raise error(f"{script} failed with exit code {proc.returncode}:\n{detail}")
    lines = proc.stdout.strip().splitlines()
    if not lines or not Path(lines[-1]).is_dir():
        raise error(f"{script} printed no bin dir on its last line: {proc.stdout!r}")
    return Path(lines[-1])


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: if the thread that started the server dies
    # (with its process, even by SIGKILL), the kernel sends SIGKILL to this child.
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def spawn(
    binary: Path,
    args: Sequence[str],
    *,
    log_path: Path,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    die_with_parent: bool = True,
) -> subprocess.Popen[bytes]:
    """Start ``binary args`` in its own process group (session), in ``cwd`` with ``HOME=cwd``
    (plus ``env``), appending its output to ``log_path`` after a line that names the command."""
    with open(log_path, "ab") as log:
        log.write(f"\n=== {time.strftime('%H:%M:%S')} {binary.name} {' '.join(args)}\n".encode())
        log.flush()
        return subprocess.Popen(
            [str(binary), *args],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            # HOME: kwok reads ~/.kwok/kwok.yaml if present: not ours
            env={**os.environ, "HOME": str(cwd), **(env or {})},
            start_new_session=True,
            # PR_SET_PDEATHSIG fires when the starting *thread* exits: only tie the
            # children to the main thread, whose end is the process's end.
            preexec_fn=_die_with_parent
            if die_with_parent and threading.current_thread() is threading.main_thread()
            else None,
        )


def terminate(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM the process group of ``proc`` (started by :func:`spawn`), SIGKILL it after ``grace`` seconds."""
    if proc.poll() is None:
        _killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    # The group may hold children even after the leader exited.
    _killpg(proc.pid, signal.SIGKILL)
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        pass


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def wait_until(
    what: str,
    ready: Callable[[], bool],
    timeout: float,
    *,
    procs: Mapping[str, subprocess.Popen[bytes]],
    error: type[Exception],
    fatal: tuple[type[Exception], ...] = (),
) -> None:
    """Call ``ready`` until it returns true. Raises ``error`` after ``timeout`` seconds, when one of
    ``procs`` exits meanwhile, or when ``ready`` raises one of ``fatal`` (waiting longer will not help);
    any other exception of ``ready`` (connection refused, not yet created, ...) is retried."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while True:
        for name, proc in procs.items():
            if proc.poll() is not None:
                raise error(f"{name} exited with code {proc.returncode} while waiting for {what}")
        try:
            if ready():
                return
        except fatal as e:
            raise error(f"while waiting for {what}: {e}") from None
        except Exception as e:
            last = e
        if time.monotonic() > deadline:
            raise error(
                f"timed out after {timeout:.0f}s waiting for {what}" + (f" (last error: {last!r})" if last else "")
            )
        time.sleep(0.1)


def timed(timings: dict[str, float], name: str, fn: Callable[[], object]) -> None:
    """``fn()``, its duration in seconds recorded as ``timings[name]``."""
    t = time.monotonic()
    fn()
    timings[name] = time.monotonic() - t


def log_tail(path: Path, proc: subprocess.Popen[bytes] | None, lines: int) -> str:
    """The last ``lines`` of a server's log, headed by its path and the server's state."""
    tail = path.read_text(errors="replace").splitlines()[-lines:]
    state = "" if proc is None else f" (exit code {proc.poll()})" if proc.poll() is not None else " (running)"
    return f"--- {path}{state}, last {len(tail)} lines:\n" + "\n".join(tail)


class Servers:
    """What the beds that start servers from a build share (:class:`~tests.bed.cluster.ControlPlane`,
    :class:`~tests.bed.kueue.Kueue`): ``start()`` builds (cached) and starts, again when a server
    lost the race for its free port, records ``timings`` and stops the servers at exit."""

    #: raised for anything that fails to build or start
    error: type[Exception] = RuntimeError
    #: what is started, for messages
    what = "servers"
    #: readiness-check errors that end a wait at once (see :func:`wait_until`)
    fatal: tuple[type[Exception], ...] = ()

    workdir: Path
    bin_dir: Path | None
    start_timeout: float
    die_with_parent: bool
    timings: dict[str, float]

    # ------------------------------------------------------------- subclasses

    def _check_startable(self) -> None:
        """Raise :attr:`error` if the servers cannot be started now (already started, ...)."""

    def _build(self) -> Path:
        """The bin dir, built if need be."""
        raise NotImplementedError

    def _check_bins(self) -> None:
        raise NotImplementedError

    def _start_once(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def _running(self) -> Mapping[str, subprocess.Popen[bytes]]:
        """The servers started so far, by name."""
        raise NotImplementedError

    def _log_files(self) -> list[Path]:
        raise NotImplementedError

    def _tails(self) -> str:
        """The tails of the logs, for an error message."""
        raise NotImplementedError

    # ----------------------------------------------------------------- shared

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> Self:
        """Build (cached), check the build, then start; on failure stop and raise :attr:`error` with
        the logs' tails. Free ports are picked before the servers bind them and another process may
        take one first: when a log says so, start again (three times in all)."""
        self._check_startable()
        t0 = time.monotonic()
        try:
            timed(self.timings, "build", self._build_once)
            self.workdir.mkdir(parents=True, exist_ok=True)
            self._check_bins()
        except self.error:
            raise
        except Exception as e:
            raise self.error(f"{self.what} failed to start: {e!r}") from e
        atexit.unregister(self.stop)  # registered once, however often started
        atexit.register(self.stop)
        attempts = 3
        for attempt in range(1, attempts + 1):
            offsets = {p: p.stat().st_size if p.exists() else 0 for p in self._log_files()}
            try:
                self._start_once()
                break
            except BaseException as e:
                detail = self._tails()
                self.stop()
                if not isinstance(e, Exception):
                    raise
                if attempt < attempts and _lost_port_race(offsets):
                    continue
                if isinstance(e, self.error):
                    raise self.error(f"{e}\n{detail}") from None
                raise self.error(f"{self.what} failed to start: {e!r}\n{detail}") from e
        self.timings["start"] = time.monotonic() - t0
        return self

    def _build_once(self) -> None:
        if self.bin_dir is None:
            self.bin_dir = self._build()

    def _phase(self, name: str, fn: Callable[[], object]) -> None:
        timed(self.timings, name, fn)

    def _spawn(
        self, name: str, args: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start ``bin_dir/name args`` with :func:`spawn` in ``workdir``."""
        assert self.bin_dir is not None
        return spawn(
            self.bin_dir / name,
            args,
            log_path=log_path,
            cwd=self.workdir,
            env=env,
            die_with_parent=self.die_with_parent,
        )

    def _wait(self, what: str, ready: Callable[[], bool], timeout: float | None = None) -> None:
        """:func:`wait_until` ``ready``, for ``timeout`` or ``start_timeout`` seconds, while the servers run."""
        timeout = timeout or self.start_timeout
        wait_until(what, ready, timeout, procs=self._running(), error=self.error, fatal=self.fatal)


def _lost_port_race(offsets: Mapping[Path, int]) -> bool:
    for path, offset in offsets.items():
        if path.exists():
            with path.open("rb") as f:
                f.seek(offset)
                if b"address already in use" in f.read():
                    return True
    return False


def self_check_main(self_check: Callable[[Path], None], prefix: str) -> None:
    """``python -m tests.bed.<bed> [WORKDIR]``: ``self_check`` in WORKDIR, or in a temporary dir."""
    if len(sys.argv) > 1:
        self_check(Path(sys.argv[1]))
    else:
        with tempfile.TemporaryDirectory(prefix=prefix) as d:
            self_check(Path(d))

"""A real PostgreSQL server for tests that need one.

``PostgresServer(workdir).start()`` (or ``with PostgresServer(workdir) as pg:``) runs
``initdb`` (UTF8, C locale, superuser ``postgres``, trust authentication for the unix
socket and 127.0.0.1 only), starts ``postgres`` through ``pg_ctl`` on a free port of
127.0.0.1 with its unix socket next to the data, waits until it accepts connections and
creates the role and database ``aidc``. Durability settings (fsync, synchronous_commit,
full_page_writes) keep their defaults: crash-safety tests run on this server.

- ``url``: ``postgresql+psycopg://aidc@127.0.0.1:<port>/aidc`` (SQLAlchemy),
- ``create_database(name)``: a fresh empty database owned by ``aidc``, returns its URL,
- ``stop()``: ``pg_ctl stop -m fast``, then ``-m immediate``, then SIGKILL,
- ``crash()``: SIGKILL the postmaster and its backends at once (a power cut for the
  database); ``start()`` again runs crash recovery on the same data and port.

initdb and postgres refuse to run as root: when the tests run as root the server runs as
the ``postgres`` system user. If that user cannot reach ``workdir`` (pytest's
``/tmp/pytest-of-root`` is mode 0700), the data directory and socket go to a private
``/tmp/aidc-postgres-*`` directory instead, linked from ``workdir/run`` and removed when
the process exits. The server log is always ``workdir/postgres.log``.

No server outlives the process that started it: besides ``stop()`` (and an ``atexit``
hook), every start spawns a watchdog that holds a pipe from this process and stops the
server when the pipe closes, which the kernel does however this process ends, SIGKILL
included.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import psycopg
from psycopg import sql

LIB_ROOT = Path("/usr/lib/postgresql")
INSTALL_HINT = "bash tests/bed/debian-packages.sh postgresql-15"
SUPERUSER = "postgres"
ROLE = "aidc"
DATABASE = "aidc"
_SERVER_BINS = ("initdb", "pg_ctl", "postgres")
_CONF = "aidc-bed.conf"
_PORT_TAKEN = re.compile(r"could not bind IPv4 address|Address already in use|could not create any TCP/IP sockets")

# Runs as the server's user, in its own session (a Ctrl-C to the test run must not kill it
# before it has done its job). It blocks on the pipe from the test process: "stopped" means
# the test process stopped the server itself; EOF without it means the test process died.
_WATCHDOG = """
trap '' INT HUP TERM QUIT
if IFS= read -r line && [ "$line" = stopped ]; then exit 0; fi
"$PG_CTL" stop -D "$PGDATA_DIR" -m fast -t 15 >/dev/null 2>&1 \
  || "$PG_CTL" stop -D "$PGDATA_DIR" -m immediate -t 15 >/dev/null 2>&1 \
  || { pid=$(head -n 1 "$PGDATA_DIR/postmaster.pid" 2>/dev/null) && kill -9 "$pid"; }
[ -n "$REMOVE_DIR" ] && rm -rf "$REMOVE_DIR"
exit 0
"""


class PostgresError(RuntimeError):
    pass


_PR_SET_CHILD_SUBREAPER, _PR_GET_CHILD_SUBREAPER = 36, 37
try:
    _prctl: Callable[..., int] | None = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):
    _prctl = None


@contextlib.contextmanager
def _subreaper() -> Iterator[None]:
    """Make this process the reaper of the processes orphaned meanwhile.

    pg_ctl exits once the server is up, and the postmaster is orphaned; a crash orphans the
    backends. Whoever adopts them must reap them, and not every PID 1 does (a container's
    may not): an unreaped postmaster keeps its PID, and postgres then takes the
    postmaster.pid it left behind for a running server and refuses to start. Adopted here,
    stop() and crash() reap them. Only for that moment: a test may rely on other orphans
    being reaped by PID 1.
    """
    if _prctl is None:
        yield
        return
    was = ctypes.c_int(0)
    _prctl(_PR_GET_CHILD_SUBREAPER, ctypes.byref(was), 0, 0, 0)
    _prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    try:
        yield
    finally:
        _prctl(_PR_SET_CHILD_SUBREAPER, was.value, 0, 0, 0)


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", path.parent.name)) or (-1,)


def find_bin_dir(lib_root: Path = LIB_ROOT, path: str | None = None) -> Path:
    """The directory holding initdb, pg_ctl and postgres: the highest version under
    ``lib_root/<version>/bin`` (Debian's layout), else the first directory on ``path``
    (default ``$PATH``) that has all three."""
    candidates = sorted(lib_root.glob("*/bin"), key=_version_key, reverse=True)
    search = os.environ.get("PATH", "") if path is None else path
    candidates += [Path(p) for p in search.split(os.pathsep) if p]
    for bin_dir in candidates:
        if all(os.access(bin_dir / name, os.X_OK) for name in _SERVER_BINS):
            return bin_dir
    raise PostgresError(
        f"No PostgreSQL server binaries ({', '.join(_SERVER_BINS)}) in {lib_root}/*/bin or on PATH. "
        f"Install them with `{INSTALL_HINT}`."
    )


def free_port() -> int:
    """A TCP port of 127.0.0.1 that was free a moment ago (start() retries if another process takes it first)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process, None if there is no such process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return fields[0], int(fields[1])
    except (OSError, IndexError, ValueError):
        return None


def _alive(pid: int) -> bool:
    """Running: a zombie has exited and only waits for its parent to reap it."""
    stat = _stat(pid)
    return stat is not None and stat[0] != "Z"


def _children(pid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").glob("[0-9]*"):
        stat = _stat(int(entry.name))
        if stat is not None and stat[1] == pid:
            kids.append(int(entry.name))
    return kids


def _wait_gone(pids: Iterable[int], timeout: float) -> bool:
    """Wait until none of pids runs, and reap those that are, or become, this process's children.

    A backend that dies before its postmaster stays the postmaster's zombie until the
    postmaster's own death hands it to us: wait for that too, so that no zombie is left.
    """
    pids = list(pids)
    me = os.getpid()
    deadline = time.monotonic() + timeout
    while True:
        pending = []
        for pid in pids:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            stat = _stat(pid)
            if stat is not None and (stat[0] != "Z" or stat[1] == me or stat[1] in pids):
                pending.append(pid)
        if not pending:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)


class PostgresServer:
    """A PostgreSQL cluster in ``workdir`` serving 127.0.0.1 only, as the ``aidc`` role and database."""

    def __init__(self, workdir: Path, *, bin_dir: Path | None = None, start_timeout: float = 60.0) -> None:
        self.workdir = Path(workdir).resolve()
        self.bin_dir = bin_dir
        self.start_timeout = start_timeout
        self.port = 0
        self.log_path = self.workdir / "postgres.log"
        self.timings: dict[str, float] = {}
        self._user: pwd.struct_passwd | None = None  # None: the current user
        self._rundir: Path | None = None
        self._external_rundir = False
        self._pid = 0
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._atexit_registered = False

    # ------------------------------------------------------------------ public

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the ``aidc`` database, as the ``aidc`` role."""
        return self.database_url(DATABASE)

    @property
    def datadir(self) -> Path:
        return self._run_dir() / "data"

    @property
    def running(self) -> bool:
        return self._pid != 0 and _alive(self._pid)

    def database_url(self, name: str) -> str:
        return f"postgresql+psycopg://{ROLE}@127.0.0.1:{self.port}/{name}"

    def start(self) -> PostgresServer:
        """initdb (first start only), start the server and wait until ``aidc`` can connect.

        A later start (after stop() or crash()) reuses the data directory and the port.
        Raises PostgresError with the tail of the server log if the server does not come up.
        """
        if self.running:
            raise PostgresError(f"the PostgreSQL server in {self.workdir} is already running (pid {self._pid})")
        if not self._atexit_registered:
            atexit.register(self._cleanup)
            self._atexit_registered = True
        t0 = time.monotonic()
        if self.bin_dir is None:
            self.bin_dir = find_bin_dir()
        self._prepare_dirs()
        if not (self.datadir / "PG_VERSION").exists():
            self._initdb()
            self.timings["initdb"] = time.monotonic() - t0
        fixed_port = self.port != 0
        attempts = 1 if fixed_port else 3  # a free port is picked before postgres binds it: another process may win
        for attempt in range(1, attempts + 1):
            if not fixed_port:
                self.port = free_port()
            offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            try:
                self._start_once()
                break
            except BaseException as e:
                self.stop()
                if not isinstance(e, Exception):
                    raise
                port_taken = bool(_PORT_TAKEN.search(self._log_since(offset)))
                if attempt < attempts and port_taken:
                    continue
                detail = f"{e}" if isinstance(e, PostgresError) else f"PostgreSQL failed to start: {e!r}"
                if port_taken and fixed_port:
                    detail += (
                        f". Another process holds 127.0.0.1:{self.port}; a restarted server keeps its port "
                        "(so that `url` stays valid): free the port, or start a new PostgresServer."
                    )
                raise PostgresError(f"{detail}\n{self.log_tail(offset=offset)}") from None
        self.timings["start"] = time.monotonic() - t0
        return self

    def create_database(self, name: str) -> str:
        """Create an empty database ``name`` owned by ``aidc`` and return its SQLAlchemy URL."""
        with self._admin() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(ROLE)))
        return self.database_url(name)

    def drop_database(self, name: str) -> None:
        """Drop database ``name``, ending any connections a test left open to it."""
        with self._admin() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def stop(self) -> None:
        """Stop the server: a fast shutdown, else an immediate one, else SIGKILL. Idempotent."""
        if self._pid:
            if self.running:
                kids = _children(self._pid)
                if not self._pg_ctl_stop("fast", 30) and not self._pg_ctl_stop("immediate", 10):
                    self._kill([self._pid, *kids])
            _wait_gone([self._pid], 10)  # also reaps a postmaster that died on its own
        self._pid = 0
        self._release_watchdog()

    def crash(self) -> None:
        """SIGKILL the postmaster and all its processes at once, as a power cut would. start() recovers."""
        if not self.running:
            raise PostgresError(f"the PostgreSQL server in {self.workdir} is not running")
        self._kill([self._pid, *_children(self._pid)])
        self._pid = 0
        self._release_watchdog()

    def log_tail(self, lines: int = 40, offset: int = 0) -> str:
        """The last lines of the server log, from byte offset on, headed by the log's path."""
        if not self.log_path.exists():
            return f"(no server log at {self.log_path})"
        tail = "\n".join(self._log_since(offset).splitlines()[-lines:])
        return f"--- server log {self.log_path} (last {lines} lines) ---\n{tail}"

    # ------------------------------------------------------------------ setup

    def _run_dir(self) -> Path:
        return self._rundir or self.workdir

    def _prepare_dirs(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0 or self._rundir is not None:
            self._rundir = self._rundir or self.workdir
            return
        try:
            self._user = pwd.getpwnam(SUPERUSER)
        except KeyError:
            raise PostgresError(
                f"initdb and postgres refuse to run as root and there is no `{SUPERUSER}` system user "
                f"to run them as. The postgresql-15 package creates it: `{INSTALL_HINT}`."
            ) from None
        os.chown(self.workdir, self._user.pw_uid, self._user.pw_gid)
        if self._as_server(["test", "-w", str(self.workdir), "-a", "-x", str(self.workdir)]).returncode == 0:
            self._rundir = self.workdir
            return
        # An ancestor of workdir is closed to the server user (pytest makes /tmp/pytest-of-root 0700).
        self._rundir = Path(tempfile.mkdtemp(prefix="aidc-postgres-"))
        self._external_rundir = True
        os.chown(self._rundir, self._user.pw_uid, self._user.pw_gid)
        link = self.workdir / "run"
        link.unlink(missing_ok=True)
        link.symlink_to(self._rundir)

    def _initdb(self) -> None:
        proc = self._as_server(
            [
                str(self._bin("initdb")),
                "-D",
                str(self.datadir),
                "-U",
                SUPERUSER,
                "--encoding=UTF8",
                "--locale=C",
                "--auth-local=trust",
                "--auth-host=trust",
            ],
            capture=True,
        )
        if proc.returncode != 0:
            raise PostgresError(f"initdb -D {self.datadir} failed with exit code {proc.returncode}:\n{proc.stdout}")
        # initdb's pg_hba.conf also trusts ::1 and replication: replace it with exactly what the bed needs.
        self._write_as_server(
            self.datadir / "pg_hba.conf",
            "# AIDC test bed: trust on the unix socket and 127.0.0.1, nothing else\n"
            "local all all trust\n"
            "host  all all 127.0.0.1/32 trust\n",
        )
        with (self.datadir / "postgresql.conf").open("a") as f:
            f.write(
                f"\n# AIDC test bed: listen address, port and socket (rewritten at every start)\ninclude = '{_CONF}'\n"
            )

    def _start_once(self) -> None:
        self._write_as_server(
            self.datadir / _CONF,
            f"listen_addresses = '127.0.0.1'\nport = {self.port}\nunix_socket_directories = '{self._run_dir()}'\n",
        )
        with self.log_path.open("ab") as log, _subreaper():
            # Without -l, the postmaster writes its log to pg_ctl's stdout, which it inherits:
            # the file stays ours to read even when the server runs as another user.
            proc = self._as_server(
                [str(self._bin("pg_ctl")), "start", "-D", str(self.datadir), "-w", "-t", str(int(self.start_timeout))],
                stdout=log,
            )
        self._pid = self._read_pid()
        if self._pid:
            self._start_watchdog()
        if proc.returncode != 0:
            raise PostgresError(
                f"pg_ctl start -D {self.datadir} (port {self.port}) failed with exit code {proc.returncode}"
            )
        self._wait_accepting()
        self._ensure_role_and_database()

    def _wait_accepting(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while True:
            try:
                with self._admin(connect_timeout=2):
                    return
            except psycopg.OperationalError as e:
                if not self.running:
                    raise PostgresError(f"PostgreSQL (port {self.port}) exited while starting") from None
                if time.monotonic() > deadline:
                    raise PostgresError(
                        f"PostgreSQL did not accept connections on 127.0.0.1:{self.port} "
                        f"within {self.start_timeout:.0f} s: {e}"
                    ) from None
                time.sleep(0.1)

    def _ensure_role_and_database(self) -> None:
        with self._admin() as conn:
            if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [ROLE]).fetchone():
                conn.execute(sql.SQL("CREATE ROLE {} LOGIN CREATEDB").format(sql.Identifier(ROLE)))
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE]).fetchone():
                conn.execute(
                    sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(DATABASE), sql.Identifier(ROLE))
                )

    # ------------------------------------------------------------------ teardown

    def _pg_ctl_stop(self, mode: str, timeout: int) -> bool:
        proc = self._as_server(
            [str(self._bin("pg_ctl")), "stop", "-D", str(self.datadir), "-m", mode, "-w", "-t", str(timeout)],
            capture=True,
        )
        return proc.returncode == 0 and not self.running

    def _kill(self, pids: list[int]) -> None:
        with _subreaper():  # the backends outlive the postmaster by a moment: adopt and reap them
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            # A restart needs every old backend gone: they still hold the old shared memory.
            if not _wait_gone(pids, 10):
                raise PostgresError(f"PostgreSQL processes {pids} of {self.datadir} survived SIGKILL for 10 s")

    def _start_watchdog(self) -> None:
        self._release_watchdog()
        env = {
            **self._env(),
            "PG_CTL": str(self._bin("pg_ctl")),
            "PGDATA_DIR": str(self.datadir),
            "REMOVE_DIR": str(self._rundir) if self._external_rundir else "",
        }
        self._watchdog = subprocess.Popen(
            ["/bin/sh", "-c", _WATCHDOG],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=self._run_dir(),
            env=env,
            start_new_session=True,
            **self._user_kwargs(),
        )

    def _release_watchdog(self) -> None:
        dog, self._watchdog = self._watchdog, None
        if dog is None or dog.stdin is None:
            return
        try:
            dog.stdin.write(b"stopped\n")
            dog.stdin.close()
        except BrokenPipeError:
            pass
        try:
            dog.wait(5)
        except subprocess.TimeoutExpired:
            dog.kill()
            dog.wait()

    def _cleanup(self) -> None:
        self.stop()
        if self._external_rundir and self._rundir is not None:
            shutil.rmtree(self._rundir, ignore_errors=True)

    # ------------------------------------------------------------------ helpers

    def _bin(self, name: str) -> Path:
        assert self.bin_dir is not None
        return Path(self.bin_dir) / name

    def _admin(self, connect_timeout: int = 10) -> psycopg.Connection[Any]:
        return psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user=SUPERUSER,
            dbname="postgres",
            autocommit=True,
            connect_timeout=connect_timeout,
        )

    def _read_pid(self) -> int:
        try:
            return int((self.datadir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return 0

    def _log_since(self, offset: int) -> str:
        try:
            with self.log_path.open("rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def _env(self) -> dict[str, str]:
        # PGDATA, PGPORT, PGHOST & co. of the caller must not steer the bed's server.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        if self._user is not None:
            env.update(HOME=self._user.pw_dir, USER=self._user.pw_name, LOGNAME=self._user.pw_name)
        return env

    def _user_kwargs(self) -> dict[str, Any]:
        if self._user is None:
            return {}
        return {"user": self._user.pw_uid, "group": self._user.pw_gid, "extra_groups": []}

    def _as_server(
        self, argv: list[str], *, capture: bool = False, stdout: IO[bytes] | None = None
    ) -> subprocess.CompletedProcess[str]:
        out: Any = subprocess.PIPE if capture else (stdout or subprocess.DEVNULL)
        return subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=self._run_dir() if self._rundir is not None else "/",
            env=self._env(),
            text=True,
            **self._user_kwargs(),
        )

    def _write_as_server(self, path: Path, text: str) -> None:
        path.write_text(text)
        if self._user is not None:
            os.chown(path, self._user.pw_uid, self._user.pw_gid)
        path.chmod(0o600)

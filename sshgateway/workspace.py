"""The workspace side of SSH: an sshd per workspace, started with its Jupyter server.

The hub's spawner enables this module as a Jupyter server extension
(``--ServerApp.jpserver_extensions=sshgateway.workspace=True``, :data:`EXTENSION_ARG`) and says on
which port its sshd listens (``$AIDC_SSHD_PORT``). When the server loads the extension, before it
answers the hub, Debian's ``/usr/sbin/sshd -D -e`` starts as the workspace's own user on the
server's own address (``ServerApp.ip``: the pod's address on Kubernetes, 127.0.0.1 in the embedded
mode) and lives as long as the server does. The SSH gateway connects to it over plain TCP, at the
address the hub's spawner keeps in the server's state; on Kubernetes the tenant namespace's
NetworkPolicy lets only the gateway's pods reach that port.

What this sshd accepts is one key: ``$AIDC_SSH_AUTHORIZED_KEY``, the public half of this server's
own client key, which the hub's spawner derives from the platform secret
(``sshgateway.workspace_keys``) and which only the gateway can compute the private half of. It
proves itself with this server's own host key ``$AIDC_SSH_HOST_KEY`` (derived the same way), the
only one the gateway accepts at this address. People's keys are checked by the gateway, never
here. Everything lives in ``~/.aidc/sshd/`` and is rewritten at each start:

- ``sshd_config`` (:func:`sshd_config`): the server's address only, public key only, no PAM, no
  agent or X11 forwarding, no remote forwarding, local forwarding to loopback targets only, sftp;
- ``authorized_keys``: that one line; ``ssh_host_ed25519_key``: the host key;
- ``environment`` (:func:`environment_file`) and ``session`` (:func:`session_script`): sshd gives
  sessions a bare environment and the home of the Unix account, so every session (shell, command,
  sftp, scp, rsync) goes through ``session`` (``ForceCommand``), which restores the workspace's
  environment (``CUDA_VISIBLE_DEVICES``, ``PATH``, ...; not its hub API token or keys) and home, as
  a JupyterLab terminal has them.

All functions but :func:`prepare` and the extension's are pure: they take plain values and return
text. The module needs the standard library only (the images install it on its own).
"""

from __future__ import annotations

import atexit
import ctypes
import ipaddress
import logging
import os
import pwd
import re
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

KEY_ENV = "AIDC_SSH_AUTHORIZED_KEY"
HOST_KEY_ENV = "AIDC_SSH_HOST_KEY"
PORT_ENV = "AIDC_SSHD_PORT"
# the spawner's argument that makes the workspace's Jupyter server load this module
EXTENSION_ARG = "--ServerApp.jpserver_extensions=sshgateway.workspace=True"
SSHD = "/usr/sbin/sshd"
PRIVSEP_DIR = "/run/sshd"  # compiled into sshd; needed when it runs as root
SFTP_SERVERS = (
    "/usr/lib/openssh/sftp-server",  # Debian, Ubuntu
    "/usr/libexec/openssh/sftp-server",  # Fedora, RHEL
    "/usr/lib/ssh/sftp-server",  # Arch
    "/usr/libexec/sftp-server",  # Alpine, BSD
)
# Not passed to sessions: sshd sets these per session, or they are the workspace's own secrets.
SESSION_ENV_SKIP = frozenset(
    {
        "JUPYTERHUB_API_TOKEN",
        "JPY_API_TOKEN",
        KEY_ENV,
        HOST_KEY_ENV,
        "TERM",
        "DISPLAY",
        "MAIL",
        "PWD",
        "OLDPWD",
        "SHLVL",
        "_",
    }
)
SESSION_ENV_SKIP_PREFIXES = ("SSH_",)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class SshdUnavailable(RuntimeError):
    """sshd cannot run in this workspace; the message says why and what to do."""


@dataclass(frozen=True)
class SshdSettings:
    """What one workspace's sshd needs to know."""

    directory: str  # ~/.aidc/sshd
    listen: str  # the address it listens on: the Jupyter server's own (listen_address)
    port: int
    user: str  # the Unix account the workspace runs as (the only one sshd lets in)
    root: bool  # sshd runs as root (the embedded mode run by root)
    sftp_server: str | None  # path of sftp-server, None: no sftp

    def path(self, name: str) -> str:
        return str(Path(self.directory) / name)


def sshd_config(s: SshdSettings) -> str:
    """The ``sshd_config`` of a workspace's sshd."""
    lines = [
        "# Written by sshgateway.workspace at each start of this workspace's sshd: edits are lost.",
        f"Port {s.port}",
        f"ListenAddress {s.listen}",
        f"HostKey {_quote(s.path('ssh_host_ed25519_key'))}",
        "PidFile none",
        f"AllowUsers {s.user}",
        f"PermitRootLogin {'prohibit-password' if s.root else 'no'}",
        # the gateway's key for this server, nothing else
        "PubkeyAuthentication yes",
        f"AuthorizedKeysFile {_quote(s.path('authorized_keys'))}",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "HostbasedAuthentication no",
        "PermitEmptyPasswords no",
        "UsePAM no",
        "StrictModes no",  # homes of the embedded mode belong to the hub's user, not to the session's
        "MaxAuthTries 3",
        "LoginGraceTime 30",
        # what a session may do: the gateway refuses the rest too
        "AllowAgentForwarding no",
        "X11Forwarding no",
        "AllowTcpForwarding local",
        "PermitOpen localhost:* 127.0.0.1:* [::1]:*",
        "AllowStreamLocalForwarding no",
        "GatewayPorts no",
        "PermitTunnel no",
        "PermitUserEnvironment no",
        "PermitUserRC no",
        "PermitTTY yes",
        "PrintMotd no",
        "PrintLastLog no",
        "UseDNS no",
        "ClientAliveInterval 60",
        "ClientAliveCountMax 3",
        "LogLevel INFO",
        f"ForceCommand {_quote(s.path('session'))}",
    ]
    if s.sftp_server:
        lines.append(f"Subsystem sftp {_quote(s.sftp_server)}")
    return "\n".join(lines) + "\n"


def session_script(environment: str) -> str:
    """The POSIX shell script every session runs (``ForceCommand``): the workspace's environment from
    the file ``environment``, its home as working directory, then what the client asked for (sshd
    puts it in ``SSH_ORIGINAL_COMMAND``; an sftp subsystem arrives as the sftp-server's path), or a
    login shell, as a JupyterLab terminal starts one."""
    return (
        "#!/bin/sh\n"
        "# Written by sshgateway.workspace: every SSH session of this workspace starts here.\n"
        f". {shlex.quote(environment)}\n"
        'cd "$HOME" 2>/dev/null || cd /\n'
        'if [ -n "$SSH_ORIGINAL_COMMAND" ]; then\n'
        '  exec "${SHELL:-/bin/sh}" -c "$SSH_ORIGINAL_COMMAND"\n'
        "fi\n"
        'exec "${SHELL:-/bin/sh}" -l\n'
    )


def session_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The part of the workspace's environment that sessions get: all but per-session variables,
    the workspace's hub API token and this sshd's own key; only names a shell can export."""
    return {
        name: value
        for name, value in sorted(environ.items())
        if _NAME.match(name)
        and name not in SESSION_ENV_SKIP
        and not name.startswith(SESSION_ENV_SKIP_PREFIXES)
        and "\0" not in value
    }


def environment_file(env: Mapping[str, str]) -> str:
    """``env`` as POSIX shell ``export`` lines (values quoted exactly)."""
    return "".join(f"export {name}={shlex.quote(value)}\n" for name, value in env.items())


def authorized_keys(line: str) -> str:
    """The ``authorized_keys`` text of the one key sshd accepts, or :class:`SshdUnavailable`."""
    fields = line.strip().split()
    if not fields or len(line.strip().splitlines()) != 1 or fields[0] != "ssh-ed25519" or len(fields) < 2:
        raise SshdUnavailable(
            f"${KEY_ENV} is {'empty' if not fields else 'not one ssh-ed25519 public key'}: this workspace was not"
            " started by the AIDC hub's spawner, so the SSH gateway cannot reach it. Restart the server from the hub."
        )
    return " ".join(fields) + "\n"


def _quote(path: str) -> str:
    """A path in sshd_config: double-quoted when it has spaces (sshd_config cannot hold a double quote)."""
    if '"' in path:
        raise SshdUnavailable(f"sshd cannot use a path with a double quote in it: {path}")
    return f'"{path}"' if any(c.isspace() for c in path) else path


def listen_address(server_ip: str) -> str:
    """Where sshd listens, given the Jupyter server's ``ServerApp.ip``: the same address, so that it
    is reachable where the server is (the pod's address) and nowhere else (127.0.0.1 in the
    embedded mode). Every address (``""``, ``*``, ``0.0.0.0``) becomes ``0.0.0.0``; ``localhost``
    becomes ``127.0.0.1`` (sshd would listen on every address the name has)."""
    ip = server_ip.strip().strip("[]")
    if ip in ("", "*", "0.0.0.0"):
        return "0.0.0.0"
    if ip == "localhost":
        return "127.0.0.1"
    try:
        return str(ipaddress.ip_address(ip))
    except ValueError:
        raise SshdUnavailable(
            f"The Jupyter server listens on {server_ip!r}, which is not an IP address: sshd cannot listen"
            " there. Start the server with --ip set to an address (the hub's spawners do)."
        ) from None


def host_key(text: str) -> str:
    """The host key file's text (``$AIDC_SSH_HOST_KEY``: one OpenSSH private key), or
    :class:`SshdUnavailable`."""
    body = text.strip()
    if not (
        body.startswith("-----BEGIN OPENSSH PRIVATE KEY-----") and body.endswith("-----END OPENSSH PRIVATE KEY-----")
    ):
        raise SshdUnavailable(
            f"${HOST_KEY_ENV} is {'empty' if not body else 'not an OpenSSH private key'}: this workspace was not"
            " started by the AIDC hub's spawner, so the SSH gateway cannot trust its sshd. Restart the server from the hub."
        )
    return body + "\n"


def sshd_port(text: str) -> int:
    """The port in ``$AIDC_SSHD_PORT``, or :class:`SshdUnavailable`."""
    if not text.strip().isdigit() or not 0 < int(text) < 65536:
        raise SshdUnavailable(f"${PORT_ENV} is {text!r}, not a TCP port (1-65535). Restart the server from the hub.")
    return int(text)


# -- what the workspace's Jupyter server runs (not pure: reads the environment, writes files) ------


def prepare(port: int, listen: str = "127.0.0.1", environ: Mapping[str, str] | None = None) -> list[str]:
    """Write ``~/.aidc/sshd/`` for an sshd on ``listen``:``port`` and return the command that runs it."""
    environ = os.environ if environ is None else environ
    if not os.access(SSHD, os.X_OK):
        raise SshdUnavailable(
            f"{SSHD} is missing in this workspace, so it cannot be reached over SSH. Use an image with"
            " Debian's openssh-server (apt-get install openssh-server) or ask a platform admin."
        )
    keys = authorized_keys(environ.get(KEY_ENV, ""))
    host = host_key(environ.get(HOST_KEY_ENV, ""))
    uid = os.geteuid()
    try:
        account = pwd.getpwuid(uid)
    except KeyError:
        raise SshdUnavailable(
            f"The workspace runs as uid {uid}, which has no entry in /etc/passwd; sshd can only log in"
            " known accounts. Run the workspace as a named user (e.g. jovyan)."
        ) from None
    home = environ.get("HOME") or account.pw_dir
    directory = Path(home) / ".aidc" / "sshd"
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(directory, 0o700)
    settings = SshdSettings(
        directory=str(directory),
        listen=listen,
        port=port,
        user=account.pw_name,
        root=uid == 0,
        sftp_server=next((p for p in SFTP_SERVERS if os.access(p, os.X_OK)), None),
    )
    env = session_environment({**environ, "HOME": home})
    _write(settings.path("ssh_host_ed25519_key"), host, 0o600)
    _write(settings.path("authorized_keys"), keys, 0o600)
    _write(settings.path("environment"), environment_file(env), 0o600)
    _write(settings.path("session"), session_script(settings.path("environment")), 0o700)
    _write(settings.path("sshd_config"), sshd_config(settings), 0o600)
    if settings.root:
        os.makedirs(PRIVSEP_DIR, mode=0o755, exist_ok=True)
    return [SSHD, "-D", "-e", "-f", settings.path("sshd_config")]


def _write(path: str, text: str, mode: int) -> None:
    """Replace ``path`` atomically with ``text``, created with ``mode`` (never readable by others)."""
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _die_with_parent() -> None:
    # between fork and exec: sshd gets SIGTERM when the server's process dies, even by SIGKILL, so
    # that no sshd outlives its server on a reused port
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class SshdProcess:
    """The workspace's sshd, restarted when it dies on its own (at most :attr:`restarts` times in a
    row within :attr:`window` seconds: an sshd that cannot run is reported, not looped on)."""

    restarts = 5
    window = 60.0

    def __init__(self, command: list[str], log: logging.Logger):
        self.command, self.log = command, log
        self.proc: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.proc = self._spawn()
        self._thread = threading.Thread(target=self._watch, name="aidc-sshd", daemon=True)
        self._thread.start()
        atexit.register(self.stop)

    def _spawn(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.command, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)

    def _watch(self) -> None:
        recent: list[float] = []
        while self.proc is not None:
            status = self.proc.wait()
            if self._stopping.is_set():
                return
            now = time.monotonic()
            recent = [t for t in recent if now - t < self.window] + [now]
            if len(recent) > self.restarts:
                self.log.error(
                    "sshd exited %d times within %d s (last status %s): SSH to this workspace is off until"
                    " the server restarts. Its messages are above.",
                    len(recent),
                    self.window,
                    status,
                )
                return
            self.log.warning("sshd exited with status %s; starting it again", status)
            time.sleep(min(5.0, 0.2 * 2 ** len(recent)))
            if self._stopping.is_set():
                return
            self.proc = self._spawn()

    def stop(self) -> None:
        self._stopping.set()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "sshgateway.workspace"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    """Start this workspace's sshd as the server starts (before it answers the hub), on the
    server's own address and ``$AIDC_SSHD_PORT``. Without that variable (a server not started by
    the hub's spawner) or without sshd, the server runs without SSH and says why in its log."""
    log = serverapp.log
    try:
        port = sshd_port(os.environ.get(PORT_ENV, ""))
        command = prepare(port, listen_address(serverapp.ip))
    except SshdUnavailable as e:
        log.warning("This workspace cannot be reached over SSH: %s", e)
        return
    process = SshdProcess(command, log)
    process.start()
    serverapp.aidc_sshd = process  # its lifetime is the server's
    log.info("sshd of this workspace listens on %s port %d", listen_address(serverapp.ip), port)

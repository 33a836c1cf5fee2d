"""The workspace side of SSH: an sshd per workspace, reachable only through the hub's proxy.

jupyter-server-proxy finds :func:`sshd_server` by its entry point (``jupyter_serverproxy_servers``,
name ``sshd``) and, at the first websocket to ``<server url>/sshd/``, starts Debian's
``/usr/sbin/sshd -D -e`` as the workspace's own user on a free port of 127.0.0.1; every websocket
is then a raw TCP stream to it (``raw_socket_proxy``). The hub's proxy lets through only those
whom the hub allows to reach this server (``access:servers``): the SSH gateway.

What this sshd accepts is one key: ``$AIDC_SSH_AUTHORIZED_KEY``, the public half of this server's
own key, which the hub's spawner derives from the platform secret (``sshgateway.workspace_keys``) and which
only the gateway can compute the private half of. People's keys are checked by the gateway, never
here. Everything lives in ``~/.aidc/sshd/`` and is rewritten at each start (except the host key):

- ``sshd_config`` (:func:`sshd_config`): loopback only, public key only, no PAM, no agent or X11
  forwarding, no remote forwarding, local forwarding to loopback targets only, sftp;
- ``authorized_keys``: that one line;
- ``environment`` (:func:`environment_file`) and ``session`` (:func:`session_script`): sshd gives
  sessions a bare environment and the home of the Unix account, so every session (shell, command,
  sftp, scp, rsync) goes through ``session`` (``ForceCommand``), which restores the workspace's
  environment (``CUDA_VISIBLE_DEVICES``, ``PATH``, ...; not its hub API token) and home, as a
  JupyterLab terminal has them.

All functions but :func:`prepare` and :func:`sshd_server`'s command are pure: they take plain
values and return text.
"""

from __future__ import annotations

import os
import pwd
import re
import shlex
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

KEY_ENV = "AIDC_SSH_AUTHORIZED_KEY"
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
        "ListenAddress 127.0.0.1",
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


# -- what jupyter-server-proxy runs (not pure: reads the environment, writes files) ----------------


def prepare(port: int, environ: Mapping[str, str] | None = None) -> list[str]:
    """Write ``~/.aidc/sshd/`` for an sshd on ``port`` and return the command that runs it."""
    environ = os.environ if environ is None else environ
    if not os.access(SSHD, os.X_OK):
        raise SshdUnavailable(
            f"{SSHD} is missing in this workspace, so it cannot be reached over SSH. Use an image with"
            " Debian's openssh-server (apt-get install openssh-server) or ask a platform admin."
        )
    keys = authorized_keys(environ.get(KEY_ENV, ""))
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
        port=port,
        user=account.pw_name,
        root=uid == 0,
        sftp_server=next((p for p in SFTP_SERVERS if os.access(p, os.X_OK)), None),
    )
    host_key = Path(settings.path("ssh_host_ed25519_key"))
    if not host_key.exists():
        keygen = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"
        subprocess.run(
            [keygen, "-q", "-t", "ed25519", "-N", "", "-C", f"aidc-workspace:{account.pw_name}", "-f", str(host_key)],
            check=True,
            stdin=subprocess.DEVNULL,
        )
    env = session_environment({**environ, "HOME": home})
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


def _command(port: int) -> list[str]:
    # jupyter-server-proxy formats the returned strings with {port}: keep braces literal
    return [arg.replace("{", "{{").replace("}", "}}") for arg in prepare(port)]


def sshd_server() -> dict[str, Any]:
    """The jupyter-server-proxy server ``sshd``: a raw TCP stream to this workspace's sshd at the
    websocket ``<server url>/sshd/``, started at the first connection."""
    return {
        "command": _command,
        "raw_socket_proxy": True,
        "timeout": 15,
        "launcher_entry": {"enabled": False},
    }

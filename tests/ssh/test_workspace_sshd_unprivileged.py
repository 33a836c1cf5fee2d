"""The workspace's sshd as workspace images run it: as an unprivileged user (jovyan, uid 1000, in a
pod), not as root like the embedded bed. Debian's sshd, configured by ``sshgateway.workspace.prepare``
in a process of another account (``postgres``, which Debian's PostgreSQL package creates with a
login shell, when the tests run as root; else the tests' own account), reached with Debian's ssh.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.bed.hub import REPO, free_port

ACCOUNT = "postgres"
PYTHON = "/usr/bin/python3"  # Debian's: the venv's interpreter may live where the account cannot read


def _account() -> pwd.struct_passwd:
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid())
    try:
        return pwd.getpwnam(ACCOUNT)
    except KeyError:
        raise RuntimeError(
            f"no {ACCOUNT!r} account to run the workspace's sshd unprivileged: `make test` installs"
            " Debian's postgresql-15, which creates it (bash tests/bed/debian-packages.sh postgresql-15)"
        ) from None


@pytest.fixture
def workspace(tmp_path: Path) -> Iterator[tuple[pwd.struct_passwd, Path, Path, int]]:
    """(account, its home, the client key, the port) of an sshd started as the workspace's
    Jupyter server extension starts it, but as the unprivileged account. ``known_hosts`` in
    ``tmp_path`` holds its host key, the one the hub's spawner handed it."""
    account = _account()
    if not os.access(PYTHON, os.X_OK):
        raise RuntimeError(f"{PYTHON} is missing: install Debian's python3 (apt-get install python3)")
    # a place the account can reach (pytest's tmp_path is root's alone), with the workspace's
    # module as the image installs it (standard library only) and a home the account owns
    base = Path(tempfile.mkdtemp(prefix="aidc-unprivileged-"))
    base.chmod(0o755)
    package = base / "site" / "sshgateway"
    package.mkdir(parents=True)
    for module in ("__init__.py", "workspace.py"):
        shutil.copy(REPO / "sshgateway" / module, package / module)
    home = base / "home"
    home.mkdir()
    os.chown(home, account.pw_uid, account.pw_gid)
    key = tmp_path / "gateway_ed25519"
    host = tmp_path / "host_ed25519"
    for path in (key, host):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    port = free_port()
    (tmp_path / "known_hosts").write_text(f"[127.0.0.1]:{port} {host.with_suffix('.pub').read_text()}")
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "PYTHONPATH": str(base / "site"),
        "AIDC_SSH_AUTHORIZED_KEY": key.with_suffix(".pub").read_text().strip(),
        "AIDC_SSH_HOST_KEY": host.read_text(),
        "JUPYTERHUB_USER": "alice",
    }
    start = (
        "import os, sys\n"
        "from sshgateway.workspace import prepare\n"
        f"command = prepare({port}, '127.0.0.1')\n"
        "os.execv(command[0], command)\n"
    )
    as_account = [] if os.geteuid() != 0 else [
        shutil.which("setpriv") or "/usr/bin/setpriv",
        f"--reuid={account.pw_uid}", f"--regid={account.pw_gid}", "--init-groups", "--reset-env",
    ]  # fmt: skip
    log = open(tmp_path / "sshd.log", "wb")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [*as_account, "/usr/bin/env", *(f"{k}={v}" for k, v in env.items()), PYTHON, "-c", start],
        stdout=log, stderr=subprocess.STDOUT, cwd=home,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    raise RuntimeError(
                        f"the workspace's sshd did not listen as {account.pw_name}:\n"
                        + (tmp_path / "sshd.log").read_text(errors="replace")
                    ) from None
                time.sleep(0.1)
        yield account, home, key, port
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()
        shutil.rmtree(base, ignore_errors=True)


def _ssh(key: Path, port: int, user: str, command: str, known: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
         "-o", f"UserKnownHostsFile={known}", "-o", "IdentitiesOnly=yes", "-i", str(key), "-p", str(port),
         f"{user}@127.0.0.1", command],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def test_unprivileged_workspace_sshd_runs_sessions_and_sftp_as_its_user(
    workspace: tuple[pwd.struct_passwd, Path, Path, int], tmp_path: Path
) -> None:
    account, home, key, port = workspace
    known = tmp_path / "known_hosts"
    r = _ssh(key, port, account.pw_name, "id -un; echo $HOME; echo $JUPYTERHUB_USER; exit 3", known)
    assert r.returncode == 3, r.stderr
    assert r.stdout.split() == [account.pw_name, str(home), "alice"]
    # the host key (the one known_hosts holds: ssh checked it) and config were written in the
    # workspace's home, readable by its user alone
    sshd_dir = home / ".aidc" / "sshd"
    assert (sshd_dir / "ssh_host_ed25519_key").stat().st_uid == account.pw_uid
    assert sshd_dir.stat().st_mode & 0o077 == 0
    # scp (SFTP) and rsync land as the user, in the home
    payload = tmp_path / "data.bin"
    payload.write_bytes(os.urandom(200_000))
    scp = subprocess.run(
        ["scp", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
         "-o", f"UserKnownHostsFile={known}",
         "-i", str(key), "-P", str(port), str(payload), f"{account.pw_name}@127.0.0.1:data.bin"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert scp.returncode == 0, scp.stderr
    copied = home / "data.bin"
    assert copied.read_bytes() == payload.read_bytes() and copied.stat().st_uid == account.pw_uid
    # another key gets nothing
    other = tmp_path / "other_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    refused = _ssh(other, port, account.pw_name, "true", known)
    assert refused.returncode == 255 and "Permission denied" in refused.stderr

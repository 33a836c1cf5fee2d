"""Keys the gateway uses to reach workspaces, derived from one platform secret.

Each server gets its own Ed25519 key, derived deterministically from the secret, the
user and the server name: the hub's spawner hands only the public half to the workspace
(``AIDC_SSH_AUTHORIZED_KEY``), and the gateway recomputes the private half when it
connects. Workspaces never see the secret, so one workspace cannot reach another.

The secret is ``$AIDC_SSH_SECRET`` or the file ``<data dir>/ssh_secret`` (0600, created once).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

import asyncssh
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

SECRET_ENV = "AIDC_SSH_SECRET"
SECRET_FILE = "ssh_secret"
HOST_KEY_FILE = "ssh_host_ed25519_key"


def _seed(secret: bytes, user: str, server: str) -> bytes:
    return hmac.new(secret, f"{user}\0{server}".encode(), hashlib.sha256).digest()


def server_key(secret: bytes, user: str, server: str) -> asyncssh.SSHKey:
    """The private Ed25519 key for ``user``'s server ``server`` ("" for the default server).

    Same inputs, same key: the 32-byte seed is HMAC-SHA256(secret, "user\\0server").
    """
    if not secret:
        raise ValueError("The SSH secret is empty: set AIDC_SSH_SECRET or remove the empty ssh_secret file.")
    private = Ed25519PrivateKey.from_private_bytes(_seed(secret, user, server))
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    return asyncssh.import_private_key(pem)


def server_public_key(secret: bytes, user: str, server: str) -> str:
    """The OpenSSH ``authorized_keys`` line of :func:`server_key`, with a comment naming the server."""
    key = server_key(secret, user, server)
    comment = f"aidc-gateway:{user}/{server}" if server else f"aidc-gateway:{user}"
    return key.export_public_key("openssh").decode().strip() + " " + comment


def _write_private(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600 holding ``data``; fail if it already exists."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def load_secret(data_dir: str) -> bytes:
    """The platform SSH secret: ``$AIDC_SSH_SECRET`` (UTF-8), else ``<data_dir>/ssh_secret``.

    The file is created with 32 random bytes (hex) and mode 0600 on first use, and
    reused afterwards, so keys survive restarts. Two processes racing to create it
    both end up reading the same file.
    """
    env = os.environ.get(SECRET_ENV)
    if env:
        return env.encode()
    path = Path(data_dir) / SECRET_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        _write_private(path, secrets.token_hex(32).encode())
    except FileExistsError:
        pass
    value = path.read_bytes().strip()
    if not value:
        raise ValueError(f"The SSH secret file {path} is empty: delete it so a new one is created.")
    return value


def load_host_key(data_dir: str) -> asyncssh.SSHKey:
    """The gateway's host key ``<data_dir>/ssh_host_ed25519_key`` (0600), generated once and reused."""
    path = Path(data_dir) / HOST_KEY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        key = asyncssh.generate_private_key("ssh-ed25519")
        try:
            _write_private(path, key.export_private_key("openssh"))
        except FileExistsError:
            pass
    return asyncssh.read_private_key(str(path))

"""Keys the gateway uses to reach workspaces, derived from one platform secret.

Each server gets two Ed25519 keys, derived deterministically from the secret, the user and the
server name:

- its **client key** (:func:`server_key`): the hub's spawner hands only the public half to the
  workspace (``AIDC_SSH_AUTHORIZED_KEY``), and the gateway recomputes the private half when it
  connects, so one workspace cannot reach another;
- its **host key** (:func:`server_host_key`): the workspace's sshd proves with it that it is this
  server's (``AIDC_SSH_HOST_KEY``, the private half, handed to that workspace only), and the gateway
  accepts no other at the address the hub gave. A pod IP or loopback port that another program
  took over (the server stopped, the address was reused) cannot pass for the workspace.

Workspaces never see the secret.

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


def _derived(secret: bytes, message: str) -> asyncssh.SSHKey:
    if not secret:
        raise ValueError("The SSH secret is empty: set AIDC_SSH_SECRET or remove the empty ssh_secret file.")
    seed = hmac.new(secret, message.encode(), hashlib.sha256).digest()
    pem = Ed25519PrivateKey.from_private_bytes(seed).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    return asyncssh.import_private_key(pem)


def server_key(secret: bytes, user: str, server: str) -> asyncssh.SSHKey:
    """The private Ed25519 client key for ``user``'s server ``server`` ("" for the default server).

    Same inputs, same key: the 32-byte seed is HMAC-SHA256(secret, "user\\0server").
    """
    return _derived(secret, f"{user}\0{server}")


def server_host_key(secret: bytes, user: str, server: str) -> asyncssh.SSHKey:
    """The private Ed25519 host key of the sshd of ``user``'s server ``server``.

    The seed is HMAC-SHA256(secret, "host\\0user\\0server"): names hold no NUL, so no client key's
    message (one NUL) is ever a host key's (two).
    """
    return _derived(secret, f"host\0{user}\0{server}")


def server_host_key_text(secret: bytes, user: str, server: str) -> str:
    """:func:`server_host_key` as an OpenSSH private key file's text (``AIDC_SSH_HOST_KEY``)."""
    return server_host_key(secret, user, server).export_private_key("openssh").decode()


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

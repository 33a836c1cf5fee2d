"""OpenSSH clients against the SSH gateway of a test hub (the `ssh` and `k8s` tiers): keys made with
Debian's ``ssh-keygen`` and registered through the quotas API, as people do on the page."""

from __future__ import annotations

import ipaddress
import os
import subprocess
from pathlib import Path
from typing import Any

import requests

from tests.bed.hub import Client, Hub


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)], check=True)
    return path


def register(client: Client, key: Path, title: str = "laptop") -> int:
    r = requests.post(
        f"{client.hub.url}/services/quotas/api/ssh-keys",
        headers={"Authorization": f"token {client.token}"},
        json={"public_key": key.with_suffix(".pub").read_text(), "title": title},
        timeout=30,
    )
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


class SSH:
    """Runs OpenSSH clients against the gateway of ``hub``."""

    def __init__(self, hub: Hub, tmp: Path):
        self.hub, self.port = hub, int(hub.env["AIDC_SSH_PORT"])
        self.known_hosts = tmp / "known_hosts"
        self.tmp = tmp

    def options(self, key: Path | None, source: str = "127.0.0.1", batch: bool = True, log: str = "ERROR") -> list[str]:
        opts = [
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
            f"BatchMode={'yes' if batch else 'no'}",
            "-o",
            f"LogLevel={log}",  # INFO shows why a forward was refused ("channel 0: open failed: ...")
            "-o",
            "ConnectTimeout=30",
            "-o",
            f"BindAddress={source}",
        ]
        if key is not None:
            opts += ["-i", str(key)]
        else:
            opts += ["-o", "PubkeyAuthentication=no", "-o", "PreferredAuthentications=password"]
        return opts

    def ssh(
        self, login: str, command: str | None, key: Path | None, *extra: str, timeout: float = 120, **kw: Any
    ) -> subprocess.CompletedProcess[str]:
        args = ["ssh", *self.options(key, **kw), "-p", str(self.port), *extra, f"{login}@127.0.0.1"]
        if command is not None:
            args.append(command)
        return subprocess.run(args, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def with_password(
        self, login: str, command: str, password: str, source: str = "127.0.0.1"
    ) -> subprocess.CompletedProcess[str]:
        askpass = self.tmp / f"askpass-{abs(hash(password))}"
        askpass.write_text(f"#!/bin/sh\necho '{password}'\n")
        askpass.chmod(0o700)
        env = {**os.environ, "SSH_ASKPASS": str(askpass), "SSH_ASKPASS_REQUIRE": "force", "DISPLAY": ":0"}
        args = [
            "ssh",
            *self.options(None, source=source, batch=False),
            "-o",
            "NumberOfPasswordPrompts=1",
            "-p",
            str(self.port),
            f"{login}@127.0.0.1",
            command,
        ]
        return subprocess.run(args, capture_output=True, text=True, timeout=120, env=env, stdin=subprocess.DEVNULL)


def gateway_pids(hub: Hub) -> list[int]:
    """The processes of ``hub``'s SSH gateway (several with ``SSHGateway.workers``): ``-m sshgateway``
    with this hub's data directory in their environment."""
    marker = f"AIDC_DATA_DIR={hub.data_dir}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if b"sshgateway" in (proc / "cmdline").read_bytes() and marker in (proc / "environ").read_bytes().split(
                b"\0"
            ):
                found.append(int(proc.name))
        except (OSError, ValueError):
            continue
    return found


def _endpoint(text: str) -> tuple[str, int]:
    hexaddr, _, hexport = text.partition(":")
    raw = b"".join(bytes.fromhex(hexaddr[i : i + 8])[::-1] for i in range(0, len(hexaddr), 8))
    address = ipaddress.ip_address(raw)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return str(address), int(hexport, 16)


def outbound(pids: list[int], listening_port: int) -> set[tuple[str, int]]:
    """Where the processes ``pids`` have TCP connections open or opening to (remote address and port
    from /proc/net/tcp{,6}, for the sockets among their file descriptors), leaving out the
    connections people made to their ``listening_port``."""
    inodes: set[str] = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                link = os.readlink(fd)
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
        except OSError:
            continue
    found = set()
    for name in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{name}").read_text().splitlines()[1:]:
            fields = line.split()
            # 01 ESTABLISHED, 02 SYN_SENT: a connection made, or being made
            if fields[9] in inodes and fields[3] in ("01", "02"):
                local, remote = _endpoint(fields[1]), _endpoint(fields[2])
                if local[1] != listening_port:
                    found.add(remote)
    return found

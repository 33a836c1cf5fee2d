"""Whose program a connection to a loopback port reaches, in the embedded mode (all workspaces
share this machine's loopback). Read from /proc: the listening sockets of ``/proc/net/tcp{,6}``
(address, port, owner's uid, inode), the processes holding them, and whether each process descends
from a workspace's process (its pid is in the hub's server state) or carries the workspace's
``JUPYTERHUB_USER`` / ``JUPYTERHUB_SERVER_NAME`` (programs that left the process tree, e.g.
``nohup ... &`` from a Jupyter terminal).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

_LISTEN = "0A"
_ANY4 = ipaddress.IPv4Address("0.0.0.0")
_ANY6 = ipaddress.IPv6Address("::")


@dataclass(frozen=True)
class Listener:
    """A listening TCP socket of this machine."""

    inode: str
    address: str  # the address it listens on: "127.0.0.1", "0.0.0.0", "::1", "::", "::ffff:127.0.0.1"
    port: int
    uid: int  # the account that opened it
    # the labels (``alice``, ``alice/gpu``) of the workspaces of the processes holding it, None for
    # a process of no workspace; empty until :func:`with_workspaces` fills it
    workspaces: frozenset[str | None] = frozenset()


def _address(hexaddr: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    # the kernel prints the address as 32-bit words in host byte order (little-endian here):
    # 127.0.0.1 is "0100007F", ::1 is "00000000000000000000000001000000"
    raw = b"".join(bytes.fromhex(hexaddr[i : i + 8])[::-1] for i in range(0, len(hexaddr), 8))
    return ipaddress.IPv4Address(raw) if len(raw) == 4 else ipaddress.IPv6Address(raw)


def _text(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    return f"::ffff:{mapped}" if mapped else str(address)  # not "::ffff:7f00:1"


def _listening(proc: Path, port: int) -> list[Listener]:
    out = []
    for name in ("tcp", "tcp6"):
        try:
            lines = (proc / "net" / name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != _LISTEN:
                continue
            hexaddr, _, hexport = fields[1].partition(":")
            if int(hexport, 16) == port:
                out.append(Listener(fields[9], _text(_address(hexaddr)), port, int(fields[7])))
    return out


def landing_sockets(address: str, port: int, proc: Path = Path("/proc")) -> list[Listener]:
    """The listening sockets that a connection from this machine to ``address:port`` (127.0.0.1 or
    ::1) reaches, chosen as Linux does: the socket bound to that exact address, else the wildcard
    of the same family (0.0.0.0, ::), and for IPv4 also the IPv6 sockets that take IPv4: bound to
    ``::ffff:127.0.0.1`` or to ``::`` (dual-stack). Usually one; several when programs of one
    account share the address with SO_REUSEPORT (the kernel spreads connections over them). Empty
    when nothing would accept the connection.

    /proc does not say whether a ``::`` socket is IPv6-only; it is taken to take IPv4 too (Linux's
    default), so a connection that would in fact be refused may be judged by that socket's owner.
    """
    dest = ipaddress.ip_address(address)
    candidates: list[ipaddress.IPv4Address | ipaddress.IPv6Address]
    if isinstance(dest, ipaddress.IPv4Address):
        candidates = [dest, ipaddress.IPv6Address(f"::ffff:{dest}"), _ANY4, _ANY6]
    else:
        candidates = [dest, _ANY6]
    listening = _listening(proc, port)
    for candidate in candidates:
        # compare as addresses, not text: an IPv4 and an IPv6 address never match
        found = [s for s in listening if ipaddress.ip_address(s.address) == candidate]
        if found:
            return found
    return []


def loopback_address(host: str, port: int, proc: Path = Path("/proc")) -> str:
    """The concrete address to connect to for ``host`` (``localhost``, 127.0.0.1 or ::1), so that
    the address checked is the one connected to: for ``localhost``, 127.0.0.1 when something
    listens there, else ::1 when something listens there, else 127.0.0.1."""
    if host != "localhost":
        return host
    for address in ("127.0.0.1", "::1"):
        if landing_sockets(address, port, proc):
            return address
    return "127.0.0.1"


def account_of(pid: int, proc: Path = Path("/proc")) -> int | None:
    """The uid that process ``pid`` runs as, or None when it is gone."""
    try:
        return os.stat(proc / str(pid)).st_uid
    except OSError:
        return None


def _holders(proc: Path, inodes: set[str]) -> dict[str, list[int]]:
    wanted = {f"socket:[{i}]": i for i in inodes}
    pids: dict[str, list[int]] = {i: [] for i in inodes}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for fd in (entry / "fd").iterdir():
                inode = wanted.get(os.readlink(fd))
                if inode is not None and int(entry.name) not in pids[inode]:
                    pids[inode].append(int(entry.name))
        except OSError:
            continue
    return pids


def _parent(proc: Path, pid: int) -> int:
    try:
        stat = (proc / str(pid) / "stat").read_text()
    except OSError:
        return 0
    # the command name (field 2) may hold spaces and parentheses: parse after its last ')'
    return int(stat.rsplit(")", 1)[1].split()[1])


def _environ_label(proc: Path, pid: int) -> str | None:
    try:
        raw = (proc / str(pid) / "environ").read_bytes()
    except OSError:
        return None
    env = dict(item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    user = env.get(b"JUPYTERHUB_USER")
    if user is None:
        return None
    server = env.get(b"JUPYTERHUB_SERVER_NAME", b"")
    return (user + b"/" + server).decode(errors="replace") if server else user.decode(errors="replace")


def _workspace_of(proc: Path, pid: int, workspaces: dict[int, str]) -> str | None:
    current, seen = pid, set()
    while current > 1 and current not in seen:
        if current in workspaces:
            return workspaces[current]
        seen.add(current)
        current = _parent(proc, current)
    return _environ_label(proc, pid)


def with_workspaces(
    listeners: list[Listener], workspaces: dict[int, str], proc: Path = Path("/proc")
) -> list[Listener]:
    """``listeners`` with the workspaces of the processes holding them filled in (needs to read
    their /proc/<pid>/fd: the processes of the gateway's own account, or all as root).
    ``workspaces`` maps workspace root pids to labels."""
    holders = _holders(proc, {s.inode for s in listeners})
    return [
        dataclasses.replace(s, workspaces=frozenset(_workspace_of(proc, pid, workspaces) for pid in holders[s.inode]))
        for s in listeners
    ]

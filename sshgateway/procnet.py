"""Which workspace listens on a loopback port, in the embedded mode (all workspaces share this
machine's loopback). Read from /proc: the listening sockets of ``/proc/net/tcp{,6}``, the processes
holding them, and whether each process descends from a workspace's process (its pid is in the
hub's server state) or carries the workspace's ``JUPYTERHUB_USER`` / ``JUPYTERHUB_SERVER_NAME``
(programs that left the process tree, e.g. ``nohup ... &`` from a Jupyter terminal).
"""

from __future__ import annotations

import os
from pathlib import Path

_LISTEN = "0A"
_LOOPBACK_HEX = {"0100007F", "00000000", "00000000000000000000000001000000", "00000000000000000000000000000000"}


def _listening_inodes(proc: Path, port: int) -> set[str]:
    inodes: set[str] = set()
    for name in ("tcp", "tcp6"):
        try:
            lines = (proc / "net" / name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != _LISTEN:
                continue
            addr, _, hexport = fields[1].partition(":")
            if int(hexport, 16) == port and addr in _LOOPBACK_HEX:
                inodes.add(fields[9])
    return inodes


def _holders(proc: Path, inodes: set[str]) -> list[int]:
    wanted = {f"socket:[{i}]" for i in inodes}
    pids = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for fd in (entry / "fd").iterdir():
                if os.readlink(fd) in wanted:
                    pids.append(int(entry.name))
                    break
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


def port_listeners(port: int, workspaces: dict[int, str], proc: Path = Path("/proc")) -> list[tuple[int, str | None]]:
    """The processes listening on loopback ``port``, each with the label (``alice`` or ``alice/gpu``)
    of the workspace it belongs to, or None. ``workspaces`` maps workspace root pids to labels."""
    out: list[tuple[int, str | None]] = []
    for pid in _holders(proc, _listening_inodes(proc, port)):
        label = None
        current, seen = pid, set()
        while current > 1 and current not in seen:
            if current in workspaces:
                label = workspaces[current]
                break
            seen.add(current)
            current = _parent(proc, current)
        if label is None:
            label = _environ_label(proc, pid)
        out.append((pid, label))
    return out

"""The embedded mode's durable record of its workspace processes, and the reconcile at hub start.

Each workspace process is written down (its server, GPU indices and ledger run) in
``<data_dir>/workspaces/<id>.json`` before it starts, completed with its pid and start time
(``/proc/<pid>/stat``, which tells a pid reused by another process apart) once it runs, and
removed once it is gone. The process carries ``AIDC_WORKSPACE_ID=<id>`` in its environment, so
it is found even when the hub died between starting it and writing its pid.

At hub start, before any GPU is handed out, :func:`orphans` says which records JupyterHub does
not know as running servers: their processes are stopped, their GPUs freed and their runs closed.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path

MARKER = "AIDC_WORKSPACE_ID"
ServerKey = tuple[str, str]  # (user, server name)


@dataclass(frozen=True)
class Record:
    """One workspace process: ``pid`` and ``started`` (clock ticks after boot) are None until it runs."""

    id: str
    user: str
    server: str
    gpus: tuple[str, ...]
    run: str | None
    pid: int | None = None
    started: int | None = None

    @property
    def key(self) -> ServerKey:
        return (self.user, self.server)


def new_record(user: str, server: str, gpus: Iterable[str], run: str | None) -> Record:
    return Record(id=uuid.uuid4().hex, user=user, server=server, gpus=tuple(gpus), run=run)


class Registry:
    """The records of one data directory; every write is atomic and synced before it returns."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        # servers started by a version that kept no records have none: they are adopted by pid alone
        self.first_use = not self.folder.exists()
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)

    def write(self, record: Record) -> None:
        path = self.folder / f"{record.id}.json"
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, json.dumps(asdict(record)).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        self._sync_folder()

    def started(self, record: Record, pid: int) -> Record:
        """``record`` completed with the pid of its running process (and that process's start time)."""
        done = replace(record, pid=pid, started=process_start(pid))
        self.write(done)
        return done

    def remove(self, record_id: str) -> None:
        try:
            (self.folder / f"{record_id}.json").unlink()
        except FileNotFoundError:
            return
        self._sync_folder()

    def records(self) -> list[Record]:
        found = []
        for path in sorted(self.folder.glob("*.json")):
            try:
                raw = json.loads(path.read_text())
                found.append(Record(**{**raw, "gpus": tuple(str(i) for i in raw["gpus"])}))
            except (OSError, ValueError, TypeError, KeyError):
                continue  # a torn temporary is never renamed; anything else is not ours
        return found

    def find(self, key: ServerKey, pid: int) -> Record | None:
        """The record of ``key``'s process ``pid`` if that very process still runs, else None."""
        for record in self.records():
            if record.key == key and record.pid == pid and is_alive(record):
                return record
        return None

    def _sync_folder(self) -> None:
        fd = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def process_start(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks after boot), or None if it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()  # the command name may hold spaces and parentheses
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def is_alive(record: Record) -> bool:
    return record.pid is not None and record.started is not None and process_start(record.pid) == record.started


def orphans(records: Iterable[Record], running: Mapping[ServerKey, int | None]) -> list[Record]:
    """The records that JupyterHub does not know: ``running`` maps each server it lists as running
    to the pid of its saved state. A record is adopted only when its process still runs and that
    server's state names its pid; every other record is an orphan, alive or not."""
    return [r for r in records if not (is_alive(r) and running.get(r.key) == r.pid)]


def marked_processes(record_ids: Iterable[str]) -> dict[str, list[int]]:
    """The live processes whose environment names one of ``record_ids`` (a workspace and what it
    started, kernels included), by record id. Processes whose environment cannot be read are skipped."""
    wanted = {f"{MARKER}={i}".encode(): i for i in record_ids}
    found: dict[str, list[int]] = {}
    if not wanted:
        return found
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            environ = Path(entry.path, "environ").read_bytes()
        except OSError:
            continue
        for item in environ.split(b"\0"):
            if item in wanted and process_start(int(entry.name)) is not None:
                found.setdefault(wanted[item], []).append(int(entry.name))
                break
    return found


async def stop_processes(pids: Iterable[int], grace: float = 10) -> list[int]:
    """SIGTERM each process and its process group, then SIGKILL what still runs after ``grace``
    seconds; returns the pids still alive after that (none, unless they may not be signalled)."""
    starts = {pid: process_start(pid) for pid in pids}
    left = {pid for pid, start in starts.items() if start is not None}
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        for pid in left:
            for send in (os.killpg, os.kill):
                try:
                    send(pid, sig)
                except OSError:
                    pass
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while left and loop.time() < deadline:
            await asyncio.sleep(0.1)
            left = {pid for pid in left if process_start(pid) == starts[pid]}
        if not left:
            break
    return sorted(left)


def terminals(pids: Iterable[int]) -> set[str]:
    """The terminals (``/dev/pts/N``) that processes ``pids`` read or write (their fds 0, 1 and 2)."""
    found = set()
    for pid in pids:
        for fd in (0, 1, 2):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("/dev/pts/") and target[len("/dev/pts/") :].isdigit():
                found.add(target)
    return found


def tell_terminals(record_id: str, message: str, pids: Iterable[int] = ()) -> int:
    """Write ``message`` on every terminal of workspace ``record_id`` (its marked processes and
    ``pids``, those of its cgroup), as ``wall`` does; returns how many were told. Control characters
    are left out, so that nothing in the message (a server's name) can drive the terminal."""
    text = "".join(ch for ch in message if ch.isprintable())
    data = f"\r\n\a*** {text} ***\r\n".encode()
    told = 0
    for tty in sorted(terminals({*marked_processes([record_id]).get(record_id, []), *pids})):
        try:
            fd = os.open(tty, os.O_WRONLY | os.O_NOCTTY | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            os.write(fd, data)
            told += 1
        except OSError:
            pass
        finally:
            os.close(fd)
    return told

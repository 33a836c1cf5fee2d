"""The audit trail: one JSON line per SSH session, appended to ``<data dir>/ssh-audit.jsonl``
and written to the gateway's log. Several processes append to the one file (``SSHGateway.workers``):
each record is one ``write`` of its whole line to a descriptor opened ``O_APPEND``, which the
kernel does not interleave with another's (on a pipe such as ``/dev/stdout``: lines up to 4 KiB)."""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

log = logging.getLogger("sshgateway.audit")


def utcnow() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass
class SessionRecord:
    """What one session did. ``kind`` is shell, exec, subsystem or forward; ``command`` is the exec
    command, the subsystem name or the forward's ``host:port``. ``bytes_in`` went from the person to
    the workspace, ``bytes_out`` back. ``gateway`` is the pid of the gateway process that served it."""

    session: str
    user: str
    server: str
    tenant: str
    source: str
    kind: str = ""
    command: str = ""
    start: str = field(default_factory=utcnow)
    end: str = ""
    bytes_in: int = 0
    bytes_out: int = 0
    exit_status: int | None = None
    error: str = ""
    gateway: int = field(default_factory=os.getpid)  # the gateway process that served it


class AuditLog:
    """Appends records to a JSON-lines file (0600, created when missing)."""

    def __init__(self, path: str):
        self.path = path
        self._lock = threading.Lock()

    def write(self, record: SessionRecord) -> None:
        if not record.end:
            record.end = utcnow()
        line = json.dumps(asdict(record), sort_keys=True)
        log.info("session %s", line)
        data = (line + "\n").encode()
        with self._lock:
            # opened at each record: a file that was rotated (renamed) meanwhile is created again
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                written = os.write(fd, data)
            finally:
                os.close(fd)
        if written != len(data):
            log.error(
                "The audit file %s took %d of the %d bytes of a record: is its disk full?",
                self.path,
                written,
                len(data),
            )

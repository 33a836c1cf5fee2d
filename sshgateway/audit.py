"""The audit trail: one JSON line per SSH session, appended to ``<data dir>/ssh-audit.jsonl``
and written to the gateway's log."""

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
    the workspace, ``bytes_out`` back."""

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
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "a") as f:
                f.write(line + "\n")

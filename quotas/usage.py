"""Usage in the embedded mode: who holds what now, and the ledger of every server run.

:class:`ReservationBook` makes admission atomic in one hub process: a spawn is
decided by :func:`quotas.policy.admit` and recorded in the same synchronous call,
with no ``await`` in between, so two spawns on the hub's event loop can never both
take the last GPU. :class:`Ledger` is an append-only, fsync'd JSON-lines file of
run starts and ends from which GPU-hours per tenant and month are computed; a run
is written before its server starts, so a crash loses no usage record.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

from .model import Tenant
from .policy import Decision, Holding, Request, Usage, admit

ServerKey = tuple[str, str]  # (user, server name)


def month_period(now: datetime) -> tuple[datetime, datetime, str]:
    """The calendar month (UTC) around ``now``: (start, end, "November 2026")."""
    start = now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    return start, end, start.strftime("%B %Y")


@dataclass
class _Run:
    tenant: str
    gpus: int
    start: datetime
    end: datetime | None = None


class Ledger:
    """Append-only record of server runs in a JSON-lines file.

    Each line is ``{"event": "start"|"end", "run": id, ...}``. Lines are flushed
    and fsync'd before the call returns. A torn last line (power loss mid-write)
    is ignored when the file is read back.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._runs: dict[str, _Run] = {}
        self._lock = threading.Lock()
        if self.path.exists():
            self._replay()

    def _replay(self) -> None:
        with self.path.open() as f:
            for line in f:
                try:
                    event = json.loads(line)
                except json.JSONDecodeError:
                    continue
                at = datetime.fromisoformat(event["at"])
                if event["event"] == "start":
                    self._runs[event["run"]] = _Run(event["tenant"], sum(event["gpus"].values()), at)
                elif event["event"] == "end" and event["run"] in self._runs:
                    self._runs[event["run"]].end = at

    def _append(self, event: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(event, sort_keys=True) + "\n"
        with self._lock:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                size = os.fstat(fd).st_size
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    line = "\n" + line  # end a line torn by a crash, so this record stays readable
                os.write(fd, line.encode())
                os.fsync(fd)
            finally:
                os.close(fd)

    def start(self, holding: Holding, at: datetime) -> str:
        """Record that ``holding`` starts at ``at``; returns the run id."""
        run = uuid.uuid4().hex
        self._append(
            {
                "event": "start",
                "run": run,
                "at": at.isoformat(),
                "tenant": holding.tenant,
                "user": holding.user,
                "server": holding.server,
                "profile": holding.profile,
                "gpus": dict(holding.gpus),
                "cpu": str(holding.cpu),
                "memory": str(holding.memory),
            }
        )
        self._runs[run] = _Run(holding.tenant, sum(holding.gpus.values()), at)
        return run

    def end(self, run: str, at: datetime) -> bool:
        """Record the end of ``run``. Ending a run twice (or an unknown run) changes nothing."""
        record = self._runs.get(run)
        if record is None or record.end is not None:
            return False
        self._append({"event": "end", "run": run, "at": at.isoformat()})
        record.end = at
        return True

    def open_runs(self) -> set[str]:
        return {run for run, r in self._runs.items() if r.end is None}

    def gpu_hours(self, tenant: str, since: datetime, now: datetime) -> Decimal:
        """GPU-hours of ``tenant`` between ``since`` and ``now`` (open runs count up to now)."""
        seconds = Decimal(0)
        for r in self._runs.values():
            if r.tenant != tenant or not r.gpus:
                continue
            begin, finish = max(r.start, since), min(r.end or now, now)
            if finish > begin:
                seconds += Decimal(r.gpus) * Decimal(str((finish - begin).total_seconds()))
        return seconds / 3600


class ReservationBook:
    """Holdings of every running or starting server of this hub, by tenant."""

    def __init__(self, ledger: Ledger | None = None):
        self.ledger = ledger
        self._by_tenant: dict[str, dict[ServerKey, Holding]] = {}
        self._tenant_of: dict[ServerKey, str] = {}  # a server is charged to one tenant at a time
        self._runs: dict[ServerKey, str] = {}
        self._reconciled = False

    def holdings(self, tenant_id: str) -> tuple[Holding, ...]:
        return tuple(self._by_tenant.get(tenant_id, {}).values())

    def held_by(self, key: ServerKey) -> Holding | None:
        tenant = self._tenant_of.get(key)
        return None if tenant is None else self._by_tenant[tenant][key]

    def usage(self, tenant: Tenant, now: datetime, exclude: ServerKey | None = None) -> Usage:
        start, end, name = month_period(now)
        held = self._by_tenant.get(tenant.id, {})
        holdings = tuple(h for k, h in held.items() if k != exclude)
        hours = (
            self.ledger.gpu_hours(tenant.id, start, now)
            if self.ledger and tenant.quota.gpu_hours_per_month is not None
            else Decimal(0)
        )
        return Usage(
            holdings=holdings, gpu_hours=hours, period_name=name, period_resets=date(end.year, end.month, end.day)
        )

    def reserve(self, tenant: Tenant, request: Request, now: datetime) -> tuple[Decision, str | None]:
        """Decide and, if allowed, hold the resources: one step, nothing awaited in between.

        Returns the decision and the ledger run id (None when refused or without a ledger).
        """
        key = (request.user, request.server)
        self._close_orphaned_runs(now)
        held = self.held_by(key)
        if held is not None:
            where = f"Server {request.server!r}" if request.server else "Your default server"
            return Decision(
                False,
                f"{where} already runs (charged to tenant {held.tenant}). Stop it before starting it again.",
                "running",
            ), None
        decision = admit(tenant, request, self.usage(tenant, now, exclude=None))
        if not decision.allowed or decision.holding is None:
            return decision, None
        run = self.ledger.start(decision.holding, now) if self.ledger else None
        self._by_tenant.setdefault(tenant.id, {})[key] = decision.holding
        self._tenant_of[key] = tenant.id
        if run:
            self._runs[key] = run
        return decision, run

    def _close_orphaned_runs(self, now: datetime) -> None:
        """Once per process, before its first admission (the hub restores running servers
        before it serves requests): close ledger runs that no running server holds, such as
        a server whose start was cut short by a hub crash."""
        if self._reconciled or self.ledger is None:
            return
        self._reconciled = True
        for run in self.ledger.open_runs() - set(self._runs.values()):
            self.ledger.end(run, now)

    def restore(self, holding: Holding, run: str | None) -> None:
        """Re-hold what a server that survived a hub restart holds (no admission: it is running)."""
        key = (holding.user, holding.server)
        self.release(key, None)  # a server is held once, whatever it held before
        self._by_tenant.setdefault(holding.tenant, {})[key] = holding
        self._tenant_of[key] = holding.tenant
        if run:
            self._runs[key] = run

    def release(self, key: ServerKey, now: datetime | None) -> Holding | None:
        """Stop holding ``key``'s resources and close its ledger run. Releasing twice is harmless."""
        tenant = self._tenant_of.pop(key, None)
        holding = None if tenant is None else self._by_tenant[tenant].pop(key)
        run = self._runs.pop(key, None)
        if run and self.ledger and now is not None:
            self.ledger.end(run, now)
        return holding

"""The quotas store: race-safe reservations, the usage ledger and delegated limits, in SQL.

SQLite by default (the embedded mode), PostgreSQL in production; the schema is created and
upgraded by Alembic (:func:`upgrade`). The pure :func:`quotas.policy.admit` decides; the store
makes each decision atomic with the reservation it grants:

- :meth:`Store.reserve` gathers the tenant's reservations, the delegated limits and the period's
  GPU-hours, decides and inserts the run in **one transaction** that holds the tenant's lock
  (``BEGIN IMMEDIATE`` on SQLite, which serializes writers; ``SELECT ... FOR UPDATE`` of the
  tenant's row on PostgreSQL). Two spawns, threads, processes or hubs can never both take the
  last GPU.
- A reservation *is* the open ledger run: it is written before the server starts, and
  :meth:`Store.release` closes it and adds its GPU- and CPU-time to the roll-ups in the same
  transaction, only if it was still open. A crash at any point loses no record and counts
  none twice; releasing twice is harmless.
"""

from __future__ import annotations

import threading
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, and_, create_engine, delete, event, func, insert, or_, select, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql import ColumnElement

from i18n import _, dumps, loads, normalize
from sshgateway.public_keys import KeyRejected, clean_title, parse_public_key

from .limits import LimitChanged, limit_etag, limit_from_values, limit_to_values
from .model import Profile, Tenant
from .policy import Decision, Holding, Limit, Request, Usage, admit
from .quantity import month_period, next_month
from .schema import gpu_queue, limits, preferences, refusals, runs, ssh_keys, tenant_locks, usage_rollups

ServerKey = tuple[str, str]  # (user, server name)
MS_PER_HOUR = Decimal(3_600_000)
PREEMPTED = "preempted"  # the ledger's end_reason of a server stopped to give its GPUs back (issue 14)
MIGRATIONS = Path(__file__).parent / "migrations"


def upgrade(engine: Engine) -> None:
    """Create the schema, or upgrade it to the newest migration (idempotent)."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "head")


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL, full fsync and writers serialized by
    ``BEGIN IMMEDIATE`` (so a read-decide-write transaction cannot interleave with another)."""
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10, pool_timeout=120)
    path = url.split("///", 1)[1] if "///" in url else ""
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    # pooled: opening a connection (and its PRAGMAs) costs more than a reservation's queries
    engine = create_engine(
        url,
        connect_args={"timeout": 60, "check_same_thread": False},
        pool_size=5,
        max_overflow=10,
        pool_timeout=120,
    )

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")  # i18n: SQL
        cursor.execute("PRAGMA synchronous=FULL")  # i18n: SQL
        cursor.execute("PRAGMA busy_timeout=60000")  # i18n: SQL
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


@dataclass(frozen=True)
class Run:
    """One row of the ledger."""

    id: str
    holding: Holding
    started: datetime
    ended: datetime | None = None
    end_reason: str | None = None
    stop_at: datetime | None = None  # when it is to be stopped (preempted, GPUs idle), and why
    stop_note: str | None = None  # an i18n.Text (a plain English str in rows older than issue 19)
    gpu_used_ms: int = 0  # GPUs x milliseconds weighted by utilization, measured so far (:meth:`Store.add_gpu_use`)

    def holding_gpu_ms(self, now: datetime) -> int:
        """GPUs x milliseconds held from its start to its end (or ``now``, while it runs)."""
        return sum(self.holding.gpus.values()) * elapsed_ms(self.started, self.ended or now)


@dataclass(frozen=True)
class Queued:
    """A GPU request waiting in its tenant's queue; ``id`` is its place in line (smaller: earlier)."""

    id: int
    tenant: str
    user: str
    server: str
    profile: str
    gpu_type: str
    gpu_count: int
    may_borrow: bool
    enqueued: datetime
    position: int | None = None  # where it waits in its tenant's line, as the hub last decided, and why
    length: int | None = None
    reason: str | None = None  # an i18n.Text (a plain English str in rows older than issue 19)

    @property
    def key(self) -> ServerKey:
        return (self.user, self.server)


class QueueFull(Exception):
    """The tenant's queue holds ``max_length`` requests already; the message is for people."""


@dataclass(frozen=True)
class SshKey:
    """A person's SSH public key, as registered (``public_key`` is ``<type> <base64>``)."""

    id: int
    user: str
    title: str
    public_key: str
    fingerprint: str
    created: datetime
    last_used: datetime | None


@dataclass(frozen=True)
class _OpenRun:
    id: str
    holding: Holding
    started: datetime


SEEN_RUNS = 50_000


@dataclass(frozen=True)
class UsageRow:
    """GPU-hours and CPU-hours of one group of a usage report (``day`` and ``subject`` as asked)."""

    subject: str
    day: date | None
    gpu_hours: Decimal
    cpu_hours: Decimal
    runs: int
    borrowed_gpu_hours: Decimal = Decimal(0)  # the part of gpu_hours on GPUs borrowed from the cohort
    # GPU-hours weighted by the GPUs' utilization (issue 18): of a run that spans several days or
    # months, each gets the share of its measured use that it got of its held time (:func:`prorate`)
    gpu_used_hours: Decimal = Decimal(0)

    @property
    def efficiency(self) -> Decimal | None:
        """Used over held GPU-hours (None when none were held)."""
        return self.gpu_used_hours / self.gpu_hours if self.gpu_hours else None


class Store:
    """The quotas database of one process. Thread-safe; every method is one transaction."""

    def __init__(self, url: str, *, migrate: bool = True):
        self.url = url
        self.engine = make_engine(url)
        self.is_postgres = self.engine.dialect.name == "postgresql"
        if migrate:
            upgrade(self.engine)
        self._restored: set[str] = set()
        self._seen: dict[str, _OpenRun] = {}  # open runs already parsed, by id
        self._reconcile_pending = False
        self._lock = threading.Lock()

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    def _lock_tenant(self, conn: Connection, tenant: str) -> None:
        if not self.is_postgres:
            return  # BEGIN IMMEDIATE already serializes every writer
        # one round trip: an upsert that updates the tenant's row holds its lock until commit
        stmt = self._insert(tenant_locks).values(tenant=tenant)
        conn.execute(stmt.on_conflict_do_update(index_elements=["tenant"], set_={"tenant": stmt.excluded.tenant}))

    # -- reservations ---------------------------------------------------------------------------

    def reconcile_at_first_admission(self) -> None:
        """Ask this store (the hub's) to close, before its first admission, every open run that no
        running server restored (:meth:`restore`): runs of servers whose start a hub crash cut short.
        JupyterHub restores all running servers before it serves a request."""
        self._reconcile_pending = True

    def reserve(
        self,
        tenant: Tenant,
        request: Request,
        now: datetime,
        hold: Callable[[Holding], None] | None = None,
        borrowed: Mapping[str, int] | None = None,
    ) -> tuple[Decision, str | None]:
        """Decide ``request`` and, if allowed, hold its resources: one transaction.

        Returns the decision and the id of the ledger run it opened (None when refused).
        ``hold(holding)``, if given, takes what lives outside the database (the embedded mode's
        GPUs) once admission allows, inside the transaction: if it raises, no run is written and
        the exception propagates, so a spawn refused for want of a free GPU leaves no run in the
        ledger and the open runs never hold more GPUs than the machine has. ``borrowed``: GPUs per
        type the GPU queue lets the tenant hold beyond its ceiling (:func:`quotas.policy.admit`).
        """
        self._reconcile(now)
        try:
            with self._tx() as conn:
                self._lock_tenant(conn, tenant.id)
                running = conn.execute(
                    select(runs.c.tenant).where(_open_run_of((request.user, request.server)))
                ).first()
                if running is not None:
                    self._count_refusal(conn, tenant.id, "running", now)
                    return _already_running(request, running.tenant), None
                open_runs = self._open_runs(conn, tenant.id)
                applicable = self._limits_for(conn, tenant.id, request.user, request.groups)
                usage = self._usage(conn, tenant, open_runs, applicable, now)
                decision = admit(tenant, request, usage, applicable, borrowed)
                if not decision.allowed or decision.holding is None:
                    self._count_refusal(conn, tenant.id, decision.code, now)
                    return decision, None
                if hold is not None:
                    hold(decision.holding)
                run_id = uuid.uuid4().hex
                conn.execute(insert(runs).values(**_run_values(run_id, decision.holding, now)))
                return decision, run_id
        except IntegrityError:  # the same server reserved at this instant in another tenant
            return _already_running(request, "another tenant"), None

    def restore(self, holding: Holding, run_id: str | None, now: datetime) -> str:
        """Re-hold what a server that survived a hub restart holds (no admission: it runs).

        Returns its run id: ``run_id`` when that run is still open, else a new run from ``now``
        (the old one was closed while the hub was away, so nothing is counted twice).
        """
        with self._tx() as conn:
            self._lock_tenant(conn, holding.tenant)
            open_run = conn.execute(select(runs.c.id).where(_open_run_of((holding.user, holding.server)))).first()
            if open_run is not None and run_id is not None and open_run.id == run_id:
                result: str = run_id
            else:
                if open_run is not None:
                    self._close(conn, open_run.id, now, "superseded")
                result = uuid.uuid4().hex
                conn.execute(insert(runs).values(**_run_values(result, holding, now)))
        with self._lock:
            self._restored.add(result)
        return result

    def release(self, key: ServerKey, now: datetime, reason: str = "stopped") -> Holding | None:
        """Close the open run of server ``key`` (what it held is free again); None if it held nothing."""
        with self._tx() as conn:
            row = conn.execute(select(runs).where(_open_run_of(key))).first()
            if row is None:
                return None
            # no tenant lock: freeing can only make room, and _close counts a run once by itself
            return _holding(row) if self._close(conn, row.id, now, reason) else None

    def mark_end_reason(self, key: ServerKey, reason: str | None) -> bool:
        """Say why server ``key``'s open run is about to end (``"culled-idle"``), before asking the hub
        to stop it; its close then keeps this reason. ``None`` takes it back (the stop failed)."""
        with self._tx() as conn:
            marked = conn.execute(update(runs).where(_open_run_of(key)).values(end_reason=reason))
            return bool(marked.rowcount)

    def admitted(self, key: ServerKey, now: datetime, borrowed: Mapping[str, int]) -> bool:
        """Server ``key``'s request left the GPU queue and holds its GPUs from ``now`` (Kubernetes:
        Kueue admitted its pod), ``borrowed`` of them from the cohort: its open run starts now, so
        that time in the queue is never charged. False if it has no open run."""
        with self._tx() as conn:
            row = conn.execute(
                update(runs).where(_open_run_of(key)).values(started=now, borrowed=dict(borrowed)).returning(runs.c.id)
            ).first()
        if row is None:
            return False
        with self._lock:
            self._seen.pop(row.id, None)  # it changed: read it again
        return True

    def add_gpu_use(self, key: ServerKey, used_ms: int) -> bool:
        """Add ``used_ms`` (GPUs x milliseconds weighted by utilization, :func:`quotas.gpu_use.used_gpu_ms`)
        to server ``key``'s open run; False if it has none (it stopped meanwhile: the reading is lost)."""
        if used_ms <= 0:
            return False
        with self._tx() as conn:
            done = conn.execute(
                update(runs).where(_open_run_of(key)).values(gpu_used_ms=runs.c.gpu_used_ms + int(used_ms))
            )
            return bool(done.rowcount)

    def mark_preempted(self, key: ServerKey, stop_at: datetime, note: str) -> bool:
        """Mark server ``key``'s open run to be stopped at ``stop_at`` for ``note`` (why, for its
        person): preempted to give a tenant its own GPUs back. False if it has no open run or is
        marked to end already (by an earlier preemption or the culler): a server is warned once.
        ``note`` is best an :class:`i18n.Text`: :attr:`Run.stop_note` says it in its reader's language."""
        with self._tx() as conn:
            marked = conn.execute(
                update(runs)
                .where(_open_run_of(key), runs.c.end_reason.is_(None))
                .values(end_reason=PREEMPTED, stop_at=stop_at, stop_note=dumps(note))
            )
            return bool(marked.rowcount)

    def mark_to_stop(self, key: ServerKey, stop_at: datetime, note: str) -> bool:
        """Say on server ``key``'s open run that it is to be stopped at ``stop_at`` for ``note`` (why,
        and how to keep it, for its person): the culler's warning of idle GPUs. Its end reason is
        left alone: the culler marks it when it stops the server. False if it has no open run or is
        marked to end already (a preemption says more). ``note``: as for :meth:`mark_preempted`."""
        with self._tx() as conn:
            marked = conn.execute(
                update(runs)
                .where(_open_run_of(key), runs.c.end_reason.is_(None))
                .values(stop_at=stop_at, stop_note=dumps(note))
            )
            return bool(marked.rowcount)

    def call_off_stop(self, key: ServerKey) -> bool:
        """Take back :meth:`mark_to_stop` of server ``key`` (its GPUs are used again); False if none.
        A preemption marked since is left alone."""
        with self._tx() as conn:
            done = conn.execute(
                update(runs)
                .where(_open_run_of(key), runs.c.end_reason.is_(None), runs.c.stop_at.is_not(None))
                .values(stop_at=None, stop_note=None)
            )
            return bool(done.rowcount)

    def call_off_preemption(self, key: ServerKey) -> bool:
        """Take back server ``key``'s preemption (no one waits for its GPUs any more); False if none."""
        with self._tx() as conn:
            done = conn.execute(
                update(runs)
                .where(_open_run_of(key), runs.c.end_reason == PREEMPTED)
                .values(end_reason=None, stop_at=None, stop_note=None)
            )
            return bool(done.rowcount)

    def runs_of(self, user: str, ended_since: datetime) -> list[Run]:
        """``user``'s open runs and those that ended after ``ended_since``, newest first (what the
        hub's home page tells them: servers about to be stopped, and why recent ones stopped)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(runs)
                .where(runs.c.user == user, or_(runs.c.ended.is_(None), runs.c.ended > ended_since))
                .order_by(runs.c.started.desc(), runs.c.id)
                .limit(100)
            )
            return [_run(r) for r in rows]

    def release_run(self, run_id: str, now: datetime, reason: str = "stopped") -> bool:
        """Close run ``run_id`` if it is open; False if it was closed already (harmless)."""
        with self._tx() as conn:
            return self._close(conn, run_id, now, reason)

    def _reconcile(self, now: datetime) -> None:
        if not self._reconcile_pending:
            return
        with self._lock:
            if not self._reconcile_pending:
                return
            self._reconcile_pending = False
            restored = set(self._restored)
        with self._tx() as conn:
            orphans = [
                r.id for r in conn.execute(select(runs.c.id).where(runs.c.ended.is_(None))) if r.id not in restored
            ]
            for run_id in orphans:
                self._close(conn, run_id, now, "orphaned")

    def _close(self, conn: Connection, run_id: str, now: datetime, reason: str) -> bool:
        """End run ``run_id`` at ``now`` (never before its start) and add it to the roll-ups, only
        if it is open: the UPDATE's WHERE makes closing and counting happen at most once."""
        row = conn.execute(
            update(runs)
            .where(runs.c.id == run_id, runs.c.ended.is_(None), runs.c.started <= now)
            .values(ended=now, end_reason=func.coalesce(runs.c.end_reason, reason))
            .returning(*runs.c)
        ).first()
        if row is None:  # closed already, unknown, or started "after" now (clocks of two hosts)
            row = conn.execute(
                update(runs)
                .where(runs.c.id == run_id, runs.c.ended.is_(None))
                .values(ended=runs.c.started, end_reason=func.coalesce(runs.c.end_reason, reason))
                .returning(*runs.c)
            ).first()
            if row is None:
                return False
        self._add_rollups(conn, row, row.ended)
        return True

    def _add_rollups(self, conn: Connection, row: Any, ended: datetime) -> None:
        subjects = [("tenant", row.tenant), ("user", row.user), *(("group", g) for g in row.groups)]
        # the end's day and month always get a bucket: that is where the run is counted, even when
        # it ends at 00:00 or lasted under a millisecond
        buckets: dict[tuple[str, date], list[int]] = {
            ("day", ended.date()): [0, 0, 0, 0],
            ("month", ended.date().replace(day=1)): [0, 0, 0, 0],
        }
        borrowed = sum((row.borrowed or {}).values())
        for period, start, ms, used in _split_used(row.started, ended, row.gpu_used_ms or 0):
            cell = buckets.setdefault((period, start), [0, 0, 0, 0])
            cell[0] += row.gpu_count * ms
            cell[1] += row.cpu_milli * ms
            cell[2] += borrowed * ms
            cell[3] += used
        if not any(c[3] for c in buckets.values()) and row.gpu_used_ms:  # held no time: its end gets it
            buckets[("day", ended.date())][3] = buckets[("month", ended.date().replace(day=1))][3] = row.gpu_used_ms
        last = {"day": ended.date(), "month": ended.date().replace(day=1)}
        values = [
            {
                "tenant": row.tenant,
                "period": period,
                "start": start,
                "kind": kind,
                "subject": subject,
                "gpu_ms": gpu_ms,
                "cpu_milli_ms": cpu_ms,
                "runs": int(last[period] == start),
                "borrowed_gpu_ms": borrowed_ms,
                "gpu_used_ms": used_ms,
            }
            for (period, start), (gpu_ms, cpu_ms, borrowed_ms, used_ms) in buckets.items()
            for kind, subject in subjects
        ]
        stmt = self._insert(usage_rollups).values(values)  # one statement for every bucket
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["tenant", "period", "start", "kind", "subject"],
                set_={
                    "gpu_ms": usage_rollups.c.gpu_ms + stmt.excluded.gpu_ms,
                    "cpu_milli_ms": usage_rollups.c.cpu_milli_ms + stmt.excluded.cpu_milli_ms,
                    "runs": usage_rollups.c.runs + stmt.excluded.runs,
                    "borrowed_gpu_ms": usage_rollups.c.borrowed_gpu_ms + stmt.excluded.borrowed_gpu_ms,
                    "gpu_used_ms": usage_rollups.c.gpu_used_ms + stmt.excluded.gpu_used_ms,
                },
            )
        )

    def _count_refusal(self, conn: Connection, tenant: str, code: str, now: datetime) -> None:
        stmt = self._insert(refusals).values(tenant=tenant, code=code, count=1, last=now)
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["tenant", "code"], set_={"count": refusals.c.count + 1, "last": now}
            )
        )

    def refusal_counts(self) -> dict[tuple[str, str], int]:
        """How many spawns admission refused since the database was created, by (tenant, reason code)."""
        with self.engine.connect() as conn:
            return {(r.tenant, r.code): int(r._mapping["count"]) for r in conn.execute(select(refusals))}

    def _insert(self, table: Any) -> Any:
        """The dialect's INSERT, which has ``on_conflict_do_update`` on SQLite and PostgreSQL."""
        if self.is_postgres:
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        else:
            from sqlalchemy.dialects.sqlite import insert as dialect_insert  # type: ignore[assignment]
        return dialect_insert(table)

    # -- what is held now -----------------------------------------------------------------------

    def _open_rows(self, conn: Connection, tenant: str | None) -> list[Any]:
        query = select(runs).where(runs.c.ended.is_(None))
        if tenant is not None:
            query = query.where(runs.c.tenant == tenant)
        return list(conn.execute(query.order_by(runs.c.started, runs.c.id)))

    def _open_runs(self, conn: Connection, tenant: str) -> list[_OpenRun]:
        """The tenant's open runs, oldest first, cheaply: one index-only query for their ids, and
        only runs this process has not seen are read and parsed (a run never changes what it holds)."""
        ids = [
            r.id
            for r in conn.execute(
                select(runs.c.id)
                .where(runs.c.tenant == tenant, runs.c.ended.is_(None))
                .order_by(runs.c.started, runs.c.id)
            )
        ]
        with self._lock:
            known = {i: self._seen[i] for i in ids if i in self._seen}
        missing = [i for i in ids if i not in known]
        for chunk in range(0, len(missing), 500):
            rows = conn.execute(select(runs).where(runs.c.id.in_(missing[chunk : chunk + 500])))
            for r in rows:
                known[r.id] = _OpenRun(r.id, _holding(r), r.started)
        with self._lock:
            self._seen.update((i, known[i]) for i in missing if i in known)
            if len(self._seen) > 4 * SEEN_RUNS:  # forget ended runs now and then
                self._seen = dict(list(self._seen.items())[-SEEN_RUNS:])
        return [known[i] for i in ids if i in known]

    def holdings(self, tenant: str) -> tuple[Holding, ...]:
        """What the tenant's servers hold now (starting or running)."""
        with self.engine.connect() as conn:
            return tuple(_holding(r) for r in self._open_rows(conn, tenant))

    def open_runs(self, tenant: str | None = None) -> list[Run]:
        """Reservations (open runs), oldest first; of one tenant or of all."""
        with self.engine.connect() as conn:
            return [_run(r) for r in self._open_rows(conn, tenant)]

    def held_by(self, key: ServerKey) -> Holding | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(runs).where(_open_run_of(key))).first()
        return None if row is None else _holding(row)

    def usage(self, tenant: Tenant, now: datetime, user: str = "", groups: Sequence[str] = ()) -> Usage:
        """What ``tenant`` uses now and this month (and, for ``user``/``groups``, their GPU-hours)."""
        with self.engine.connect() as conn:
            open_runs = self._open_runs(conn, tenant.id)
            applicable = self._limits_for(conn, tenant.id, user, groups) if user else []
            return self._usage(conn, tenant, open_runs, applicable, now, all_hours=True)

    def _usage(
        self,
        conn: Connection,
        tenant: Tenant,
        open_runs: Sequence[_OpenRun],
        applicable: Sequence[Limit],
        now: datetime,
        all_hours: bool = False,
    ) -> Usage:
        """Usage from the tenant's open runs (read by the caller, in the same transaction)."""
        start, end, name = month_period(now)
        subjects = [(lim.kind, lim.subject) for lim in applicable if all_hours or lim.gpu_hours is not None]
        if all_hours or tenant.quota.gpu_hours_per_month is not None:
            subjects.append(("tenant", tenant.id))
        hours = self._gpu_hours(conn, tenant.id, open_runs, subjects, start, now) if subjects else {}
        return Usage(
            holdings=tuple(r.holding for r in open_runs),
            gpu_hours=hours.get(("tenant", tenant.id), Decimal(0)),
            period_name=name,
            period_resets=end.date(),
            gpu_hours_of={k: v for k, v in hours.items() if k[0] != "tenant"},
        )

    def _gpu_hours(
        self,
        conn: Connection,
        tenant: str,
        open_runs: Sequence[_OpenRun],
        subjects: Sequence[tuple[str, str]],
        since: datetime,
        now: datetime,
    ) -> dict[tuple[str, str], Decimal]:
        """GPU-hours of ``subjects`` from ``since`` (a month's start) to ``now``: the month's roll-ups
        of ended runs, plus the part of open runs inside the month."""
        ms: dict[tuple[str, str], int] = defaultdict(int)
        wanted = set(subjects)
        rows = conn.execute(
            select(usage_rollups.c.kind, usage_rollups.c.subject, usage_rollups.c.gpu_ms).where(
                usage_rollups.c.tenant == tenant,
                usage_rollups.c.period == "month",
                usage_rollups.c.start == since.date(),
                or_(*(and_(usage_rollups.c.kind == k, usage_rollups.c.subject == s) for k, s in wanted)),
            )
        )
        for r in rows:
            ms[(r.kind, r.subject)] += r.gpu_ms
        for o in open_runs:
            gpu_count = sum(o.holding.gpus.values())
            if not gpu_count:
                continue
            part = gpu_count * elapsed_ms(max(o.started, since), now)
            holder = o.holding
            for key in (("tenant", tenant), ("user", holder.user), *(("group", g) for g in holder.groups)):
                if key in wanted:
                    ms[key] += part
        return {key: Decimal(ms.get(key, 0)) / MS_PER_HOUR for key in wanted}

    # -- delegated limits -----------------------------------------------------------------------

    def _limits_for(self, conn: Connection, tenant: str, user: str, groups: Sequence[str]) -> list[Limit]:
        subject = or_(
            and_(limits.c.kind == "user", limits.c.subject == user),
            and_(limits.c.kind == "group", limits.c.subject.in_(list(groups))),
        )
        rows = conn.execute(select(limits).where(limits.c.tenant == tenant, subject))
        return _limits_of(tenant, rows)

    def limits(self, tenant: str) -> list[Limit]:
        """Every limit delegated in ``tenant``: users first, then groups, by name."""
        with self.engine.connect() as conn:
            return _limits_of(tenant, conn.execute(select(limits).where(limits.c.tenant == tenant)))

    def limit(self, tenant: str, kind: str, subject: str) -> Limit | None:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(limits).where(limits.c.tenant == tenant, limits.c.kind == kind, limits.c.subject == subject)
            )
            found = _limits_of(tenant, rows)
        return found[0] if found else None

    def set_limit(self, limit: Limit, by: str, now: datetime, expect: str | None = None) -> None:
        """Replace the limit of ``limit.kind``/``limit.subject`` in its tenant (an empty limit removes it).

        ``limit`` must come from :func:`quotas.limits.parse_limit`, which checks it against the
        tenant's ceiling. One transaction: readers see the old limit or the new one, never a mix.
        ``expect``: the :func:`quotas.limits.limit_etag` the writer read (``"none"``: no limit was
        set); if the stored limit is another, nothing is written and :class:`LimitChanged` says what is.
        """
        with self._tx() as conn:
            self._lock_tenant(conn, limit.tenant)
            if expect is not None:
                rows = conn.execute(
                    select(limits).where(
                        limits.c.tenant == limit.tenant, limits.c.kind == limit.kind, limits.c.subject == limit.subject
                    )
                )
                found = _limits_of(limit.tenant, rows)
                current = found[0] if found else None
                if limit_etag(current) != expect:
                    raise LimitChanged(current)
            conn.execute(
                delete(limits).where(
                    limits.c.tenant == limit.tenant, limits.c.kind == limit.kind, limits.c.subject == limit.subject
                )
            )
            values = limit_to_values(limit)
            if values:
                conn.execute(
                    insert(limits),
                    [
                        {
                            "tenant": limit.tenant,
                            "kind": limit.kind,
                            "subject": limit.subject,
                            "resource": resource,
                            "value": value,
                            "updated": now,
                            "updated_by": by,
                        }
                        for resource, value in values.items()
                    ],
                )

    def delete_limit(self, tenant: str, kind: str, subject: str) -> bool:
        """Remove a delegated limit; False if there was none."""
        with self._tx() as conn:
            gone = conn.execute(
                delete(limits).where(limits.c.tenant == tenant, limits.c.kind == kind, limits.c.subject == subject)
            )
            return bool(gone.rowcount)

    # -- reports --------------------------------------------------------------------------------

    def usage_report(
        self, tenant: str, start: date, end: date, now: datetime, by: str = "user", daily: bool = False
    ) -> list[UsageRow]:
        """GPU- and CPU-hours of ``tenant`` from ``start`` to ``end`` (exclusive, UTC days), per
        ``by`` ("user", "group" or "tenant"), and per day when ``daily``; open runs count up to ``now``.

        Whole months inside the range are read from the monthly roll-ups, the days at its edges
        from the daily ones, so a year costs about 12 + 60 rows per person.
        """
        gpu: dict[tuple[str, date | None], int] = defaultdict(int)
        cpu: dict[tuple[str, date | None], int] = defaultdict(int)
        count: dict[tuple[str, date | None], int] = defaultdict(int)
        lent: dict[tuple[str, date | None], int] = defaultdict(int)  # GPU-ms on borrowed GPUs
        used: dict[tuple[str, date | None], int] = defaultdict(int)  # GPU-ms weighted by utilization
        with self.engine.connect() as conn:
            for period, lo, hi in [("day", start, end)] if daily else _cover(start, end):
                rows = conn.execute(
                    select(
                        usage_rollups.c.subject,
                        usage_rollups.c.start,
                        usage_rollups.c.gpu_ms,
                        usage_rollups.c.cpu_milli_ms,
                        usage_rollups.c.runs,
                        usage_rollups.c.borrowed_gpu_ms,
                        usage_rollups.c.gpu_used_ms,
                    ).where(
                        usage_rollups.c.tenant == tenant,
                        usage_rollups.c.period == period,
                        usage_rollups.c.kind == by,
                        usage_rollups.c.start >= lo,
                        usage_rollups.c.start < hi,
                    )
                )
                for r in rows:
                    key = (r.subject, r.start if daily else None)
                    gpu[key] += r.gpu_ms
                    cpu[key] += r.cpu_milli_ms
                    count[key] += r.runs
                    lent[key] += r.borrowed_gpu_ms
                    used[key] += r.gpu_used_ms
            begin = datetime(start.year, start.month, start.day, tzinfo=UTC)
            finish = min(now, datetime(end.year, end.month, end.day, tzinfo=UTC))
            for r in self._open_rows(conn, tenant):
                subjects = {"tenant": [tenant], "user": [r.user], "group": list(r.groups)}[by]
                # the run's use so far, shared over the days it was held (as a closed run's roll-ups)
                for period, day, ms, part_used in _split_used(r.started, max(r.started, now), r.gpu_used_ms or 0):
                    if period != "day" or day < start or day >= end:
                        continue
                    ms = elapsed_ms(
                        max(r.started, begin, _midnight(day)), min(finish, _midnight(day) + timedelta(days=1))
                    )
                    for subject in subjects:
                        key = (subject, day if daily else None)
                        gpu[key] += r.gpu_count * ms
                        cpu[key] += r.cpu_milli * ms
                        lent[key] += sum((r.borrowed or {}).values()) * ms
                        used[key] += part_used
                        count.setdefault(key, 0)
        return sorted(
            (
                UsageRow(
                    subject=subject,
                    day=day,
                    gpu_hours=Decimal(gpu[(subject, day)]) / MS_PER_HOUR,
                    cpu_hours=Decimal(cpu[(subject, day)]) / MS_PER_HOUR / 1000,
                    runs=count[(subject, day)],
                    borrowed_gpu_hours=Decimal(lent[(subject, day)]) / MS_PER_HOUR,
                    gpu_used_hours=Decimal(used[(subject, day)]) / MS_PER_HOUR,
                )
                for subject, day in set(gpu) | set(count)
            ),
            key=lambda row: (row.day or date.min, row.subject),
        )

    def runs_between(self, tenant: str, start: datetime, end: datetime) -> list[Run]:
        """Runs of ``tenant`` that overlap [start, end), oldest first (for exports and audits)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(runs)
                .where(runs.c.tenant == tenant, runs.c.started < end, or_(runs.c.ended.is_(None), runs.c.ended > start))
                .order_by(runs.c.started, runs.c.id)
            )
            return [_run(r) for r in rows]

    def record_run(self, holding: Holding, started: datetime, ended: datetime, reason: str = "stopped") -> str:
        """Write a finished run in one step (imports of past usage, and benchmarks)."""
        run_id = uuid.uuid4().hex
        with self._tx() as conn:
            conn.execute(insert(runs).values(**_run_values(run_id, holding, started)))
            self._close(conn, run_id, ended, reason)
        return run_id

    # -- the GPU queue --------------------------------------------------------------------------

    def enqueue(
        self, tenant: Tenant, user: str, server: str, profile: Profile, may_borrow: bool, now: datetime
    ) -> Queued:
        """Put ``user``'s request for ``server`` at the end of ``tenant``'s queue and return it; a
        request of that server already queued keeps its place (a retried spawn does not lose it).
        Raises :class:`QueueFull` when ``tenant.queue.max_length`` requests wait already, or when the
        person's servers running or waiting in the tenant reach its ``servers_per_user`` (so that no
        one person fills the tenant's line)."""
        with self._tx() as conn:
            self._lock_tenant(conn, tenant.id)
            there = conn.execute(
                select(gpu_queue).where(gpu_queue.c.user == user, gpu_queue.c.server == server)
            ).first()
            if there is not None:
                return _queued(there)
            cap = tenant.quota.servers_per_user
            if cap is not None:
                mine = {
                    *conn.execute(
                        select(runs.c.server).where(
                            runs.c.tenant == tenant.id, runs.c.user == user, runs.c.ended.is_(None)
                        )
                    ).scalars(),
                    *conn.execute(
                        select(gpu_queue.c.server).where(gpu_queue.c.tenant == tenant.id, gpu_queue.c.user == user)
                    ).scalars(),
                } - {server}
                if len(mine) >= cap:
                    raise QueueFull(
                        _(
                            "You already have {count} of the {cap} servers each person may have running or waiting"
                            " in tenant {tenant} ({names}). Stop one, or cancel one that waits, and try again.",
                            count=len(mine),
                            cap=cap,
                            tenant=tenant.id,
                            names=[repr(n) if n else _("your default server") for n in sorted(mine)],
                        )
                    )
            waiting = conn.execute(select(func.count()).where(gpu_queue.c.tenant == tenant.id)).scalar_one()
            if waiting >= tenant.queue.max_length:
                raise QueueFull(
                    _(
                        "Tenant {tenant}'s GPU queue is full: {waiting} requests wait already (at most {most})."
                        " Try again later, pick a smaller profile, or ask a tenant admin.",
                        tenant=tenant.id,
                        waiting=waiting,
                        most=tenant.queue.max_length,
                    )
                )
            row = conn.execute(
                insert(gpu_queue)
                .values(
                    tenant=tenant.id,
                    user=user,
                    server=server,
                    profile=profile.id,
                    gpu_type=profile.gpu_type or "",
                    gpu_count=profile.gpu_count,
                    may_borrow=may_borrow,
                    enqueued=now,
                )
                .returning(*gpu_queue.c)
            ).one()
            return _queued(row)

    def queued(self, tenant: str | None = None) -> list[Queued]:
        """The waiting requests (of ``tenant``, or all), in the order they came."""
        query = select(gpu_queue).order_by(gpu_queue.c.id)
        if tenant is not None:
            query = query.where(gpu_queue.c.tenant == tenant)
        with self.engine.connect() as conn:
            return [_queued(r) for r in conn.execute(query)]

    def anyone_waiting(self, gpu_type: str) -> bool:
        """Whether any request waits for ``gpu_type`` (read on every GPU spawn: at most one row)."""
        with self.engine.connect() as conn:
            return (
                conn.execute(select(gpu_queue.c.id).where(gpu_queue.c.gpu_type == gpu_type).limit(1)).first()
                is not None
            )

    def place(self, places: Mapping[ServerKey, tuple[int, int, str]]) -> None:
        """Write where each of ``places``' requests waits (position, length of its line, why: best an
        :class:`i18n.Text`, which :attr:`Queued.reason` says in its reader's language), as the hub
        decided; only rows that changed are written, and a request no longer queued is skipped."""
        if not places:
            return
        with self._tx() as conn:
            keys = list(places)
            for chunk in range(0, len(keys), 500):
                part = keys[chunk : chunk + 500]
                rows = conn.execute(
                    select(
                        gpu_queue.c.id,
                        gpu_queue.c.user,
                        gpu_queue.c.server,
                        gpu_queue.c.position,
                        gpu_queue.c.length,
                        gpu_queue.c.reason,
                    ).where(tuple_(gpu_queue.c.user, gpu_queue.c.server).in_(part))
                )
                for r in rows:
                    position, length, reason = places[(r.user, r.server)]
                    new = (position, length, None if reason is None else dumps(reason))
                    if (r.position, r.length, r.reason) != new:
                        conn.execute(
                            update(gpu_queue)
                            .where(gpu_queue.c.id == r.id)
                            .values(position=new[0], length=new[1], reason=new[2])
                        )

    def dequeue(self, key: ServerKey) -> bool:
        """Take ``key``'s request out of its queue (admitted, cancelled or expired); False if none waited."""
        with self._tx() as conn:
            done = conn.execute(delete(gpu_queue).where(gpu_queue.c.user == key[0], gpu_queue.c.server == key[1]))
            return bool(done.rowcount)

    # -- people's SSH keys ----------------------------------------------------------------------

    def add_ssh_key(self, user: str, text: str, title: str | None, now: datetime) -> SshKey:
        """Register ``user``'s public key ``text`` (one OpenSSH line); the SSH gateway then knows them by it.

        Raises ``ValueError`` (:class:`sshgateway.public_keys.KeyRejected`) with a reason for people when the
        text is not one acceptable public key (see :func:`sshgateway.public_keys.parse_public_key`), or when
        the key is registered already, by this person or anyone else; nothing is written then.
        """
        key = parse_public_key(text)
        shown = clean_title(title, key)
        taken = KeyRejected(
            _(
                "This key ({fingerprint}) is registered already by another account; a key identifies one"
                " person. Make a new key pair for this account (ssh-keygen -t ed25519).",
                fingerprint=key.fingerprint,
            )
        )
        with self._tx() as conn:
            owner = conn.execute(select(ssh_keys.c.user).where(ssh_keys.c.fingerprint == key.fingerprint)).first()
            if owner is not None:
                if owner.user == user:
                    raise KeyRejected(
                        _(
                            "You registered this key ({fingerprint}) already; nothing changed.",
                            fingerprint=key.fingerprint,
                        )
                    )
                raise taken
        try:
            with self._tx() as conn:
                row = conn.execute(
                    insert(ssh_keys)
                    .values(
                        user=user,
                        title=shown,
                        public_key=key.text,
                        fingerprint=key.fingerprint,
                        created=now,
                        last_used=None,
                    )
                    .returning(*ssh_keys.c)
                ).one()
        except IntegrityError:  # the same key registered at this instant by another request
            raise taken from None
        return _ssh_key(row)

    def ssh_keys(self, user: str) -> list[SshKey]:
        """``user``'s keys, oldest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(ssh_keys).where(ssh_keys.c.user == user).order_by(ssh_keys.c.id))
            return [_ssh_key(r) for r in rows]

    def delete_ssh_key(self, user: str, key_id: int) -> bool:
        """Remove ``user``'s key ``key_id`` (the gateway refuses it from the next connection);
        False when ``user`` has no such key (another person's key is never removed)."""
        with self._tx() as conn:
            gone = conn.execute(delete(ssh_keys).where(ssh_keys.c.id == key_id, ssh_keys.c.user == user))
            return bool(gone.rowcount)

    def ssh_key_owner(self, fingerprint: str, now: datetime | None = None) -> str | None:
        """Who registered the key with this fingerprint (``SHA256:...``), else None; with ``now``,
        also record it as the key's last use."""
        with self._tx() as conn:
            row = conn.execute(
                select(ssh_keys.c.id, ssh_keys.c.user).where(ssh_keys.c.fingerprint == fingerprint)
            ).first()
            if row is None:
                return None
            if now is not None:
                conn.execute(update(ssh_keys).where(ssh_keys.c.id == row.id).values(last_used=now))
            return str(row.user)

    # -- people's own choices ------------------------------------------------------------------

    def locale_of(self, user: str) -> str | None:
        """The language ``user`` chose (one of :data:`i18n.LOCALES`), or None if they never chose."""
        with self.engine.connect() as conn:
            row = conn.execute(select(preferences.c.locale).where(preferences.c.user == user)).first()
            return normalize(row.locale) if row is not None else None

    def set_locale(self, user: str, locale: str, now: datetime) -> bool:
        """Remember that ``user`` reads the platform in ``locale``; False (nothing written) when it is
        not a supported language or is their choice already."""
        chosen = normalize(locale)
        if chosen is None:
            return False
        for attempt in range(2):
            try:
                with self._tx() as conn:
                    row = conn.execute(select(preferences.c.locale).where(preferences.c.user == user)).first()
                    if row is not None and row.locale == chosen:
                        return False
                    if row is None:
                        conn.execute(insert(preferences).values(user=user, locale=chosen, updated=now))
                    else:
                        conn.execute(
                            update(preferences).where(preferences.c.user == user).values(locale=chosen, updated=now)
                        )
                    return True
            except IntegrityError:  # chosen at this instant in another request: this choice is the later one
                if attempt:
                    raise
        return False


def _ssh_key(row: Any) -> SshKey:
    return SshKey(
        id=int(row.id),
        user=row.user,
        title=row.title,
        public_key=row.public_key,
        fingerprint=row.fingerprint,
        created=row.created,
        last_used=row.last_used,
    )


def _already_running(request: Request, tenant: str) -> Decision:
    if request.server:
        why = _(
            "Server {server} already runs (charged to tenant {tenant}). Stop it before starting it again.",
            server=repr(request.server),
            tenant=tenant,
        )
    else:
        why = _(
            "Your default server already runs (charged to tenant {tenant}). Stop it before starting it again.",
            tenant=tenant,
        )
    return Decision(False, why, "running")


def _run_values(run_id: str, holding: Holding, started: datetime) -> dict[str, Any]:
    return {
        "id": run_id,
        "tenant": holding.tenant,
        "user": holding.user,
        "server": holding.server,
        "profile": holding.profile,
        "groups": list(holding.groups),
        "gpus": dict(holding.gpus),
        "gpu_count": sum(holding.gpus.values()),
        "cpu_milli": int(holding.cpu * 1000),
        "memory_bytes": int(holding.memory),
        "started": started,
        "ended": None,
        "end_reason": None,
        "borrowed": dict(holding.borrowed),
    }


def _holding(row: Any) -> Holding:
    return Holding(
        tenant=row.tenant,
        user=row.user,
        server=row.server,
        profile=row.profile,
        gpus=dict(row.gpus),
        cpu=Decimal(row.cpu_milli) / 1000,
        memory=Decimal(row.memory_bytes),
        groups=tuple(row.groups),
        borrowed=dict(row.borrowed or {}),
    )


def _run(row: Any) -> Run:
    return Run(
        row.id,
        _holding(row),
        row.started,
        row.ended,
        row.end_reason,
        row.stop_at,
        loads(row.stop_note),
        row.gpu_used_ms or 0,
    )


def _limits_of(tenant: str, rows: Iterable[Any]) -> list[Limit]:
    grouped: dict[tuple[str, str], dict[str, str]] = {}
    for r in rows:
        grouped.setdefault((r.kind, r.subject), {})[r.resource] = r.value
    return [
        limit_from_values(tenant, kind, subject, values)
        for (kind, subject), values in sorted(grouped.items(), key=lambda kv: (kv[0][0] != "user", kv[0][1]))
    ]


def _open_run_of(key: ServerKey) -> ColumnElement[bool]:
    """Where the open run of server ``key`` is (one at most: the schema's unique index)."""
    return and_(runs.c.user == key[0], runs.c.server == key[1], runs.c.ended.is_(None))


def elapsed_ms(begin: datetime, end: datetime) -> int:
    """Whole milliseconds from ``begin`` to ``end`` (0 if ``end`` is not later): what the ledger counts."""
    return max(0, int((end - begin) / timedelta(milliseconds=1)))


def _split(begin: datetime, end: datetime) -> Iterator[tuple[str, date, int]]:
    """(period, period start, milliseconds) of [begin, end) in each UTC day and each month."""
    day = begin.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    months: dict[date, int] = defaultdict(int)
    while day < end:
        following = day + timedelta(days=1)
        ms = elapsed_ms(max(begin, day), min(end, following))
        if ms:
            yield "day", day.date(), ms
            months[day.date().replace(day=1)] += ms
        day = following
    for month, ms in months.items():
        yield "month", month, ms


def prorate(total: int, weights: Sequence[int]) -> list[int]:
    """``total`` shared in proportion to ``weights``, in whole units that add up to ``total`` exactly
    (largest remainders); all 0 when the weights are."""
    whole = sum(weights)
    if whole <= 0:
        return [0 for _ in weights]
    shares = [total * w // whole for w in weights]
    by_remainder = sorted(range(len(weights)), key=lambda i: (-(total * weights[i] % whole), i))
    for i in by_remainder[: total - sum(shares)]:
        shares[i] += 1
    return shares


def _split_used(begin: datetime, end: datetime, used_ms: int) -> Iterator[tuple[str, date, int, int]]:
    """:func:`_split` of [begin, end), each part with its share of ``used_ms`` (the GPU use measured
    over the whole run): in proportion to its held time, per period kind, adding up to ``used_ms``."""
    parts = list(_split(begin, end))
    for kind in ("day", "month"):
        mine = [p for p in parts if p[0] == kind]
        for (period, start, ms), share in zip(mine, prorate(used_ms, [p[2] for p in mine]), strict=True):
            yield period, start, ms, share


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _cover(start: date, end: date) -> list[tuple[str, date, date]]:
    """[start, end) as daily ranges at the edges and one monthly range of whole months."""
    first_month = start if start.day == 1 else next_month(start)
    last_month = end.replace(day=1)
    if first_month >= last_month:
        return [("day", start, end)]
    parts = [("month", first_month, last_month)]
    if start < first_month:
        parts.append(("day", start, first_month))
    if last_month < end:
        parts.append(("day", last_month, end))
    return parts


def _queued(row: Any) -> Queued:
    return Queued(
        id=row.id,
        tenant=row.tenant,
        user=row.user,
        server=row.server,
        profile=row.profile,
        gpu_type=row.gpu_type,
        gpu_count=row.gpu_count,
        may_borrow=bool(row.may_borrow),
        enqueued=row.enqueued,
        position=row.position,
        length=row.length,
        reason=loads(row.reason),
    )

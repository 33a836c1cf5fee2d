"""The quotas database: tables of the usage ledger, its roll-ups and delegated limits.

SQLAlchemy Core tables; :mod:`quotas.migrations` creates and upgrades them (Alembic),
and a unit test checks that the migrations give exactly these tables.

- ``runs``: the ledger, one row per server run. A run whose ``ended`` is NULL is a
  *reservation*: the server holds its resources (starting or running). A partial unique
  index allows one open run per (user, server name).
- ``usage_rollups``: GPU- and CPU-time of ended runs summed per tenant, user and group,
  per day and per month (UTC), written in the transaction that ends the run, so reports and
  budget checks read a few rows instead of a year of runs and a run is counted exactly once.
- ``limits``: what tenant admins delegate, one row per (tenant, user or group, resource).
- ``refusals``: how many spawns admission refused, per tenant and reason (the ``code`` of
  :class:`quotas.policy.Decision`), counted in the refusing transaction, for the metrics.
- ``tenant_locks``: one row per tenant, locked (``SELECT ... FOR UPDATE``) by every
  admission on PostgreSQL, so two hubs or threads never both take the tenant's last GPU.
- ``ssh_keys``: people's SSH public keys, by which the SSH gateway knows who connects. A
  fingerprint is unique: one key belongs to one person.
- ``gpu_queue``: GPU requests waiting in their tenant's queue (issue 14), one row per server;
  the id is the place in line (first in, first out), kept across hub restarts; ``position``,
  ``length`` and ``reason`` are where it waits as the hub last decided (what people are shown).
- A run on GPUs borrowed from its cohort says how many in ``borrowed`` (charged to its own tenant,
  summed as ``borrowed_gpu_ms`` in the roll-ups); a run to be preempted has ``stop_at`` and
  ``stop_note`` (when and why), and ``end_reason`` ``preempted`` once marked.
- ``preferences``: what each person chose for themselves (issue 19: the language the hub, the
  quotas page, the SSH gateway and their JupyterLab speak to them in).
"""
# i18n: operator: table definitions and SQL

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Dialect,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes in, stored as naive UTC (the same on SQLite and PostgreSQL)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: the quotas store takes timezone-aware times")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):  # SQLite hands back text for raw SQL
            value = datetime.fromisoformat(value)
        return value.replace(tzinfo=UTC)


metadata = MetaData()

runs = Table(
    "runs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("tenant", String(64), nullable=False),
    Column("user", String(255), nullable=False),
    Column("server", String(255), nullable=False),
    Column("profile", String(64), nullable=False),
    Column("groups", JSON, nullable=False),
    Column("gpus", JSON, nullable=False),
    Column("gpu_count", Integer, nullable=False),
    Column("cpu_milli", BigInteger, nullable=False),
    Column("memory_bytes", BigInteger, nullable=False),
    Column("started", UTCDateTime, nullable=False),
    Column("ended", UTCDateTime, nullable=True),
    Column("end_reason", String(32), nullable=True),
    # GPUs per type held beyond the tenant's ceiling, borrowed from idle GPUs of its cohort (issue 14)
    Column("borrowed", JSON, nullable=False, server_default="{}"),
    # set when the server is to be stopped (preempted to give a tenant its GPUs back): when, and why
    Column("stop_at", UTCDateTime, nullable=True),
    Column("stop_note", Text, nullable=True),
    # GPUs x milliseconds weighted by the GPUs' utilization, as the culler measured it (issue 18)
    Column("gpu_used_ms", BigInteger, nullable=False, server_default="0"),
)
Index(
    "ux_runs_open_server",
    runs.c.user,
    runs.c.server,
    unique=True,
    sqlite_where=text("ended IS NULL"),
    postgresql_where=text("ended IS NULL"),
)
# every admission reads the tenant's open runs: a partial index keeps that read small in a big ledger
Index(
    "ix_runs_tenant_open",
    runs.c.tenant,
    runs.c.started,
    runs.c.id,
    sqlite_where=text("ended IS NULL"),
    postgresql_where=text("ended IS NULL"),
)
Index("ix_runs_tenant_started", runs.c.tenant, runs.c.started)

usage_rollups = Table(
    "usage_rollups",
    metadata,
    Column("tenant", String(64), nullable=False),
    Column("period", String(8), nullable=False),  # "day" | "month"
    Column("start", Date, nullable=False),
    Column("kind", String(8), nullable=False),  # "tenant" | "user" | "group"
    Column("subject", String(255), nullable=False),
    Column("gpu_ms", BigInteger, nullable=False),  # GPUs x milliseconds
    Column("cpu_milli_ms", BigInteger, nullable=False),  # millicores x milliseconds
    Column("runs", Integer, nullable=False),  # runs that ended in this period
    Column("borrowed_gpu_ms", BigInteger, nullable=False, server_default="0"),  # the borrowed part of gpu_ms
    Column("gpu_used_ms", BigInteger, nullable=False, server_default="0"),  # gpu_ms weighted by utilization
    PrimaryKeyConstraint("tenant", "period", "start", "kind", "subject", name="pk_usage_rollups"),
)
Index("ix_rollups_subject", usage_rollups.c.tenant, usage_rollups.c.kind, usage_rollups.c.subject)

limits = Table(
    "limits",
    metadata,
    Column("tenant", String(64), nullable=False),
    Column("kind", String(8), nullable=False),  # "user" | "group"
    Column("subject", String(255), nullable=False),
    Column("resource", String(80), nullable=False),  # "gpus.H100", "servers", "cpu", "memory", "gpu_hours"
    Column("value", String(64), nullable=False),  # exact decimal text
    Column("updated", UTCDateTime, nullable=False),
    Column("updated_by", String(255), nullable=False),
    PrimaryKeyConstraint("tenant", "kind", "subject", "resource", name="pk_limits"),
)

refusals = Table(
    "refusals",
    metadata,
    Column("tenant", String(64), nullable=False),
    Column("code", String(32), nullable=False),
    Column("count", BigInteger, nullable=False),
    Column("last", UTCDateTime, nullable=False),
    PrimaryKeyConstraint("tenant", "code", name="pk_refusals"),
)

tenant_locks = Table(
    "tenant_locks",
    metadata,
    Column("tenant", String(64), primary_key=True),
)

ssh_keys = Table(
    "ssh_keys",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("user", String(255), nullable=False),
    Column("title", String(200), nullable=False),
    Column("public_key", Text, nullable=False),  # "<type> <base64>", without options or comment
    Column("fingerprint", String(64), nullable=False, unique=True),  # "SHA256:<base64>", as ssh-keygen -l
    Column("created", UTCDateTime, nullable=False),
    Column("last_used", UTCDateTime, nullable=True),
)
Index("ix_ssh_keys_user", ssh_keys.c.user)

gpu_queue = Table(
    "gpu_queue",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),  # the place in line
    Column("tenant", String(64), nullable=False),
    Column("user", String(255), nullable=False),
    Column("server", String(255), nullable=False),
    Column("profile", String(64), nullable=False),
    Column("gpu_type", String(64), nullable=False),
    Column("gpu_count", Integer, nullable=False),
    Column("may_borrow", Boolean, nullable=False),
    Column("enqueued", UTCDateTime, nullable=False),
    # where it waits, as the hub last decided: place in its tenant's line, its length, and why
    Column("position", Integer, nullable=True),
    Column("length", Integer, nullable=True),
    Column("reason", Text, nullable=True),
    UniqueConstraint("user", "server", name="uq_gpu_queue_server"),
)
Index("ix_gpu_queue_tenant", gpu_queue.c.tenant)

preferences = Table(
    "preferences",
    metadata,
    Column("user", String(255), primary_key=True),
    Column("locale", String(16), nullable=False),  # one of i18n.LOCALES
    Column("updated", UTCDateTime, nullable=False),
)

"""``metrics``: Prometheus text, read from the quotas database and the platform config at each scrape.

Nothing is counted in this process: several hubs and this service share one database, so the
database is the only place where the numbers are right. Platform admins only, unless the
service runs with ``metrics_public`` (see :class:`quotas.service.app.QuotasService`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from decimal import Decimal

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from i18n import _

from ..quantity import month_period
from ..snapshot import PlatformHolder
from ..store import ServerKey, Store
from .base import ApiError, BaseHandler

Utilization = Callable[[], Mapping[ServerKey, Sequence[tuple[datetime, float]]]]


class QuotasCollector(Collector):
    """Per tenant: GPUs in use and granted per type, servers, GPU-hours held and used this month and
    the budget; admission refusals by reason; per running GPU server, its GPUs' latest utilization
    (``utilization``: the culler's readings, in this process; only running servers with data, so
    the series come and go with servers)."""

    def __init__(
        self,
        store: Store,
        platform: PlatformHolder,
        clock: Callable[[], datetime],
        utilization: Utilization | None = None,
    ):
        self.store, self.platform, self.clock = store, platform, clock
        self.utilization = utilization

    def collect(self) -> Iterator[Metric]:
        now = self.clock()
        config = self.platform.config  # one snapshot per scrape (a reload may swap it)
        gpus_in_use = GaugeMetricFamily(
            "aidc_tenant_gpus_in_use",
            "GPUs the tenant's servers hold now (starting or running)",  # i18n: a metric's help, for the operator
            labels=["tenant", "gpu_type"],
        )
        gpus_quota = GaugeMetricFamily(
            "aidc_tenant_gpus_quota",
            "GPUs the platform grants the tenant (its ceiling)",  # i18n: a metric's help, for the operator
            labels=["tenant", "gpu_type"],
        )
        servers = GaugeMetricFamily(
            "aidc_tenant_servers",
            "Servers the tenant runs now",  # i18n: a metric's help, for the operator
            labels=["tenant"],
        )
        servers_quota = GaugeMetricFamily(
            "aidc_tenant_servers_quota",
            "Servers the tenant may run at once (when its ceiling sets it)",  # i18n: a metric's help, for the operator
            labels=["tenant"],
        )
        hours = GaugeMetricFamily(
            "aidc_tenant_gpu_hours_month",
            "GPU-hours the tenant used this calendar month (UTC)",  # i18n: a metric's help, for the operator
            labels=["tenant"],
        )
        used = GaugeMetricFamily(
            "aidc_tenant_gpu_used_hours_month",
            "GPU-hours the tenant's servers used this calendar month (UTC): held GPU-hours weighted by the"  # i18n: a metric's help, for the operator
            " GPUs' utilization",
            labels=["tenant"],
        )
        start, end, _ = month_period(now)
        budget = GaugeMetricFamily(
            "aidc_tenant_gpu_hours_budget",
            "GPU-hours per month the tenant's ceiling grants (when set)",  # i18n: a metric's help, for the operator
            labels=["tenant"],
        )
        for tenant in config.tenants.values():
            usage = self.store.usage(tenant, now)
            held: dict[str, int] = {gpu_type: 0 for gpu_type in tenant.quota.gpus}
            for holding in usage.holdings:
                for gpu_type, count in holding.gpus.items():
                    held[gpu_type] = held.get(gpu_type, 0) + count
            for gpu_type, count in sorted(held.items()):
                gpus_in_use.add_metric([tenant.id, gpu_type], count)
            for gpu_type, count in sorted(tenant.quota.gpus.items()):
                gpus_quota.add_metric([tenant.id, gpu_type], count)
            servers.add_metric([tenant.id], len(usage.holdings))
            if tenant.quota.servers is not None:
                servers_quota.add_metric([tenant.id], tenant.quota.servers)
            hours.add_metric([tenant.id], float(usage.gpu_hours))
            report = self.store.usage_report(tenant.id, start.date(), end.date(), now, by="tenant")
            used.add_metric([tenant.id], float(sum((r.gpu_used_hours for r in report), start=Decimal(0))))
            if tenant.quota.gpu_hours_per_month is not None:
                budget.add_metric([tenant.id], float(tenant.quota.gpu_hours_per_month))
        refusals = CounterMetricFamily(
            "aidc_admission_refusals",
            "Spawns that admission refused since the database was created, by tenant and reason",  # i18n: a metric's help, for the operator
            labels=["tenant", "reason"],
        )
        for (tenant_id, code), count in sorted(self.store.refusal_counts().items()):
            refusals.add_metric([tenant_id, code], count)
        utilization = GaugeMetricFamily(
            "aidc_server_gpu_utilization",
            "Mean utilization (percent) of a running server's GPUs at the culler's latest reading",  # i18n: a metric's help, for the operator
            labels=["tenant", "user", "server"],
        )
        readings = self.utilization() if self.utilization is not None else {}
        if readings:
            tenant_of = {(r.holding.user, r.holding.server): r.holding.tenant for r in self.store.open_runs()}
            for (user, server), points in sorted(readings.items()):
                if points and (user, server) in tenant_of:
                    utilization.add_metric([tenant_of[(user, server)], user, server], points[-1][1])
        yield from (gpus_in_use, gpus_quota, servers, servers_quota, hours, used, budget, refusals, utilization)


def registry_for(
    store: Store, platform: PlatformHolder, clock: Callable[[], datetime], utilization: Utilization | None = None
) -> CollectorRegistry:
    """A registry of this service's metrics only (no process or Python metrics of the default one)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(QuotasCollector(store, platform, clock, utilization))
    return registry


class MetricsHandler(BaseHandler):
    async def get(self) -> None:
        if not self.settings.get("metrics_public", False):
            caller = self.caller
            if not caller.admin:
                raise ApiError(
                    403,
                    _(
                        "Metrics are for platform admins; you ({name}) are not one. Scrape with a platform"
                        " admin's token, or run the service with QuotasService.metrics_public = True.",
                        name=caller.name,
                    ),
                )
        registry: CollectorRegistry = self.settings["metrics_registry"]
        body = await self.blocking(generate_latest, registry)
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.set_header("Cache-Control", "no-store")
        self.finish(body)


default_handlers = [(r"metrics", MetricsHandler)]

"""The quotas web page: ``GET /services/quotas/?tenant=<id>&month=YYYY-MM``.

Everyone sees their tenants, the limits that apply to them, their own use in the month, their
running servers and GPU requests waiting in the tenant's queue, and their tenant's totals now;
and their own SSH keys, which they add and remove there (``POST``/``DELETE api/ssh-keys``).
Tenant admins (of that tenant) and platform admins also see who used what: GPU-hours per day
stacked per person, a per-person table, every running server, the tenant's GPU queue (everyone
waiting, their place and why), and the limits table, which they edit in place (the page's
script calls the REST API: ``PUT``/``DELETE api/tenants/<t>/limits/<users|groups>/<name>``).

What a caller may see is decided here, on the server, by the same rules as the API
(:class:`quotas.service.base.Caller`): a member's page holds no other person's row, and a
tenant admin's page holds no other tenant. The script only edits what is already shown.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup
from tornado import web

from ..culler import HISTORY
from ..limits import SCALAR_FIELDS, limit_etag, limit_summary, limit_to_json
from ..model import Tenant
from ..policy import Limit, limits_for
from ..quantity import (
    format_bytes,
    format_cpu,
    format_duration,
    format_gpus,
    format_hours,
    format_number,
    month_name,
    month_start,
    next_month,
    previous_month,
    report_hours,
)
from ..store import MS_PER_HOUR, Queued, Run, ServerKey, SshKey, Store, UsageRow
from .api_tenants import visible_tenants
from .base import ApiError, BaseHandler, Caller
from .charts import Meter, meters, sparkline, stacked_bars

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
MONTH = re.compile(r"([0-9]{4})-([0-9]{2})")
FIRST_MONTH = date(2000, 1, 1)  # older months are a typo, not a report anyone keeps

_env = Environment(
    loader=FileSystemLoader(str(TEMPLATES)),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)
_env.filters["duration"] = format_duration


# -- what the page shows: plain values, built from the store by `gather` ---------------------------


@dataclass(frozen=True)
class TenantTab:
    id: str
    display_name: str
    role: str
    active: bool


@dataclass(frozen=True)
class ServerRow:
    user: str
    server: str  # for people: "(default)" for the default server
    name: str  # as the hub names it ("" for the default server)
    profile: str
    gpus: str
    cpu: str
    memory: str
    started: str
    running_for: str
    borrowed: str = ""  # the GPUs of `gpus` borrowed from other tenants ("1 H100"); "" if none
    stops: str = ""  # a server to be preempted: "14:05 UTC (why)"; "" otherwise
    gpu_hours: str = ""  # GPU-hours held and used (utilization-weighted) since it started
    gpu_used_hours: str = ""
    utilization: Markup = Markup("")  # its GPUs' utilization over the last hour (a sparkline); "" without GPUs


@dataclass(frozen=True)
class QueuedRow:
    """A GPU request waiting in the tenant's queue, as the "GPU queue" sections list it."""

    user: str
    server: str  # for people: "(default)" for the default server
    name: str  # as the hub names it ("" for the default server)
    place: str  # "1 of 2"; "—" until the hub's queue keeper has placed it (within a second)
    gpus: str  # "2 × H100"
    profile: str
    since: str
    waited: str
    reason: str


@dataclass(frozen=True)
class LimitRow:
    """One delegated limit; ``values`` are exact inputs for the editor (``gpus.H100`` -> ``"2"``)."""

    kind: str
    name: str
    values: Mapping[str, str]
    summary: str
    etag: str  # what the editor sends back in If-Match, so a save never overwrites an unseen change


@dataclass(frozen=True)
class PersonRow:
    name: str
    gpu_hours: str
    gpu_used_hours: str
    efficiency: str  # used over held, "25%"; "—" when none held
    gpu_used_exact: str  # to 1/10,000, as the API reports it (the page shows 2 places)
    cpu_hours: str
    runs: int
    gpus_now: str
    limit: str


@dataclass(frozen=True)
class MyView:
    role: str
    limits: list[LimitRow]
    gpu_hours: str
    gpu_used_hours: str
    efficiency: str
    cpu_hours: str
    runs: int
    gpu_hours_limit: str
    gpus_now: str
    servers: list[ServerRow]
    queued: list[QueuedRow] = field(default_factory=list)


@dataclass(frozen=True)
class AdminView:
    chart: Markup
    tenant_hours: tuple[str, str, str, str]  # the tenant's GPU-hours held, used, the ratio; used to 1/10,000
    people: list[PersonRow]
    servers: list[ServerRow]
    limits: list[LimitRow]
    gpu_types: list[str]
    queue: list[QueuedRow] = field(default_factory=list)


@dataclass(frozen=True)
class SshKeyRow:
    """One of the caller's SSH keys, as the "SSH keys" section lists it."""

    id: int
    title: str
    type: str
    fingerprint: str
    created: str
    last_used: str


def ssh_key_rows(keys: Iterable[SshKey]) -> list[SshKeyRow]:
    return [
        SshKeyRow(
            id=k.id,
            title=k.title,
            type=k.public_key.split(" ", 1)[0],
            fingerprint=k.fingerprint,
            created=_minute(k.created),
            last_used=_minute(k.last_used) if k.last_used else "never",
        )
        for k in keys
    ]


@dataclass(frozen=True)
class TenantView:
    tenant: Tenant
    month_start: date
    month_end: date  # exclusive
    month_name: str
    is_current_month: bool
    now_meters: Markup
    me: MyView
    admin: AdminView | None = None


def month_range(text: str | None, now: datetime) -> tuple[date, date]:
    """The month ``YYYY-MM`` as [first day, first day of the next); this month when ``text`` is empty.

    Raises :class:`ApiError` 400 for anything else, or a month after this one.
    """
    this_month = month_start(now)
    if not text:
        start = this_month
    else:
        match = MONTH.fullmatch(text)
        if not match or not 1 <= int(match[2]) <= 12:
            raise ApiError(400, f"month must be written YYYY-MM, such as {this_month:%Y-%m}, not {text!r}.")
        start = date(int(match[1]), int(match[2]), 1)
        if start > this_month:
            raise ApiError(
                400, f"{month_name(start)} has not begun: usage exists up to this month ({this_month:%Y-%m})."
            )
        if start < FIRST_MONTH:
            raise ApiError(400, f"month {text} is before {FIRST_MONTH:%Y-%m}, when no usage was recorded.")
    return start, next_month(start)


def gpus_text(gpus: Mapping[str, int]) -> str:
    """``{"H100": 2}`` -> ``"2 H100"``; none -> ``"none"``."""
    shown = [f"{n} {t}" for t, n in sorted(gpus.items()) if n]
    return ", ".join(shown) or "none"


def limit_values(limit: Limit) -> dict[str, str]:
    """The editor's exact inputs of a limit, as the API writes them (empty: no limit on that field)."""
    body = limit_to_json(limit)
    values = {f"gpus.{t}": str(n) for t, n in body["gpus"].items()}
    values.update({f: "" if body[f] is None else str(body[f]) for f in SCALAR_FIELDS})
    return values


def _minute(moment: datetime) -> str:
    """``"2026-11-20 14:05 UTC"``."""
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M} UTC"


def efficiency_text(used: Decimal, held: Decimal) -> str:
    """GPU-hours used over held as a percentage (``"25%"``); ``"—"`` when none were held."""
    return f"{format_number(used / held * 100, 0)}%" if held else "—"


def utilization_chart(run: Run, points: Sequence[tuple[datetime, float]], now: datetime) -> Markup:
    """The sparkline of a GPU server's last hour (:data:`quotas.culler.HISTORY`); nothing for a CPU server."""
    if not sum(run.holding.gpus.values()):
        return Markup("")
    start = now - HISTORY
    label = f"{run.holding.user}/{run.holding.server}" if run.holding.server else f"{run.holding.user}'s default server"
    title = (
        f"GPU utilization of {label} over the last hour: {len(points)} readings, latest {points[-1][1]:.0f}%"
        if points
        else f"GPU utilization of {label} over the last hour: no data"
    )
    values = [((at - start).total_seconds(), percent) for at, percent in points]
    return Markup(sparkline(values, span=HISTORY.total_seconds(), title=title))


def server_rows(
    runs: Iterable[Run], now: datetime, utilization: Mapping[ServerKey, Sequence[tuple[datetime, float]]] | None = None
) -> list[ServerRow]:
    seen = utilization or {}
    return [
        ServerRow(
            user=r.holding.user,
            server=r.holding.server or "(default)",
            name=r.holding.server,
            profile=r.holding.profile,
            gpus=gpus_text(r.holding.gpus),
            cpu=format_cpu(r.holding.cpu),
            memory=format_bytes(r.holding.memory),
            started=_minute(r.started),
            running_for=format_duration(now - r.started),
            borrowed=gpus_text(r.holding.borrowed) if any(r.holding.borrowed.values()) else "",
            stops=_stops(r),
            gpu_hours=format_number(Decimal(r.holding_gpu_ms(now)) / MS_PER_HOUR, 2),
            gpu_used_hours=format_number(Decimal(r.gpu_used_ms) / MS_PER_HOUR, 2),
            utilization=utilization_chart(r, seen.get((r.holding.user, r.holding.server), ()), now),
        )
        for r in runs
    ]


def _stops(run: Run) -> str:
    """When a server to be preempted stops, and why: ``"14:05 UTC (… which needs them back)"``."""
    if run.stop_at is None:
        return ""
    when = f"{run.stop_at.astimezone(UTC):%H:%M} UTC"
    return f"{when} ({run.stop_note})" if run.stop_note else when


def queued_rows(requests: Iterable[Queued], now: datetime) -> list[QueuedRow]:
    return [
        QueuedRow(
            user=q.user,
            server=q.server or "(default)",
            name=q.server,
            place=f"{q.position} of {q.length}" if q.position and q.length else "—",
            gpus=format_gpus({q.gpu_type: q.gpu_count}),
            profile=q.profile,
            since=_minute(q.enqueued),
            waited=format_duration(now - q.enqueued),
            reason=q.reason or "joined the queue just now; its place is decided within a second (reload the page)",
        )
        for q in requests
    ]


def now_meters(tenant: Tenant, runs: Sequence[Run], gpu_hours: Decimal) -> Markup:
    """The tenant's ceiling against what its servers hold now, and its GPU-hours this month
    (totals only: no names)."""
    quota = tenant.quota
    held: dict[str, int] = defaultdict(int)
    for r in runs:
        for gpu_type, n in r.holding.gpus.items():
            held[gpu_type] += n
    rows = [
        Meter(f"{t} GPUs", held.get(t, 0), ceiling, f"{held.get(t, 0)} of {ceiling} in use")
        for t, ceiling in quota.gpus.items()
    ]
    servers = len(runs)
    rows.append(
        Meter(
            "Servers",
            servers,
            quota.servers,
            f"{servers} of {quota.servers} running" if quota.servers is not None else f"{servers} running",
        )
    )
    cpu = sum((r.holding.cpu for r in runs), Decimal(0))
    memory = sum((r.holding.memory for r in runs), Decimal(0))
    rows.append(
        Meter("CPU", cpu, quota.cpu, f"{format_cpu(cpu)} of {format_cpu(quota.cpu)}" if quota.cpu else format_cpu(cpu))
    )
    rows.append(
        Meter(
            "Memory",
            memory,
            quota.memory,
            f"{format_bytes(memory)} of {format_bytes(quota.memory)}" if quota.memory else format_bytes(memory),
        )
    )
    budget = quota.gpu_hours_per_month
    used = format_hours(gpu_hours)
    rows.append(
        Meter(
            "GPU-hours",
            gpu_hours,
            budget,
            f"{used} of {format_hours(budget)} this month" if budget is not None else f"{used} this month",
        )
    )
    return Markup(meters(rows, title=f"Tenant {tenant.id}: ceiling and use now"))


def usage_chart(tenant: Tenant, daily: Sequence[UsageRow], start: date, end: date) -> Markup:
    """GPU-hours per day of the month, stacked per person."""
    days = [start + timedelta(days=i) for i in range((end - start).days)]
    index = {d: i for i, d in enumerate(days)}
    series: dict[str, list[Decimal]] = {}
    for row in daily:
        if row.day is None or row.day not in index or row.gpu_hours <= 0:
            continue
        series.setdefault(row.subject, [Decimal(0)] * len(days))[index[row.day]] += row.gpu_hours
    month = month_name(start)
    svg = stacked_bars(
        [str(d.day) for d in days],
        series,
        unit="GPU-hours",
        title=f"GPU-hours per day in {month}, tenant {tenant.id}, per person",
        long_labels=[f"{d:%a %d %b}" for d in days],
        x_title=f"Day of {month} (UTC)",
        max_series=10,
        others_label="{n} others",
        empty_text=f"No GPU was used in {month}",
    )
    return Markup(svg)


def gather(
    store: Store,
    caller: Caller,
    tenant: Tenant,
    start: date,
    end: date,
    now: datetime,
    utilization: Mapping[ServerKey, Sequence[tuple[datetime, float]]] | None = None,
) -> TenantView:
    """Everything the page shows of ``tenant`` to ``caller``, read from the store (blocking: run it
    in a worker thread). Other people's rows are read only for callers who administer the tenant;
    ``utilization``: the culler's readings of the last hour per server (shown only with its row)."""
    is_admin = caller.can_admin_tenant(tenant.id)
    runs = store.open_runs(tenant.id)
    waiting = store.queued(tenant.id)
    usage = store.usage(tenant, now)
    all_limits = store.limits(tenant.id)
    month_rows = store.usage_report(tenant.id, start, end, now, by="user")

    mine = [r for r in month_rows if r.subject == caller.name]
    my_limits = limits_for(all_limits, caller.name, caller.groups)
    my_runs = [r for r in runs if r.holding.user == caller.name]
    my_gpus: dict[str, int] = defaultdict(int)
    for r in my_runs:
        for gpu_type, n in r.holding.gpus.items():
            my_gpus[gpu_type] += n
    hour_limits = [lim.gpu_hours for lim in my_limits if lim.kind == "user" and lim.gpu_hours is not None]
    my_held = sum((r.gpu_hours for r in mine), Decimal(0))
    my_used = sum((r.gpu_used_hours for r in mine), Decimal(0))
    me = MyView(
        role=caller.role_in(tenant.id),
        limits=[_limit_row(lim) for lim in my_limits],
        gpu_hours=format_number(my_held, 2),
        gpu_used_hours=format_number(my_used, 2),
        efficiency=efficiency_text(my_used, my_held),
        cpu_hours=format_number(sum((r.cpu_hours for r in mine), Decimal(0)), 2),
        runs=sum(r.runs for r in mine),
        gpu_hours_limit=format_number(hour_limits[0]) if hour_limits else "",
        gpus_now=gpus_text(my_gpus),
        servers=server_rows(my_runs, now, utilization),
        queued=queued_rows((q for q in waiting if q.user == caller.name), now),
    )
    view = TenantView(
        tenant=tenant,
        month_start=start,
        month_end=end,
        month_name=month_name(start),
        is_current_month=start == month_start(now),
        now_meters=now_meters(tenant, runs, usage.gpu_hours),
        me=me,
    )
    if not is_admin:
        return view

    daily = store.usage_report(tenant.id, start, end, now, by="user", daily=True)
    user_limits = {lim.subject: lim for lim in all_limits if lim.kind == "user"}
    held: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for r in runs:
        for gpu_type, n in r.holding.gpus.items():
            held[r.holding.user][gpu_type] += n
    people = sorted(
        (
            PersonRow(
                name=row.subject,
                gpu_hours=format_number(row.gpu_hours, 2),
                gpu_used_hours=format_number(row.gpu_used_hours, 2),
                efficiency=efficiency_text(row.gpu_used_hours, row.gpu_hours),
                gpu_used_exact=report_hours(row.gpu_used_hours),
                cpu_hours=format_number(row.cpu_hours, 2),
                runs=row.runs,
                gpus_now=gpus_text(held.get(row.subject, {})),
                limit=limit_summary(user_limits.get(row.subject)),
            )
            for row in month_rows
        ),
        key=lambda p: (-Decimal(p.gpu_hours), p.name),
    )
    gpu_types = list(tenant.quota.gpus)
    for lim in all_limits:
        gpu_types += [t for t in lim.gpus if t not in gpu_types]
    held_total = sum((r.gpu_hours for r in month_rows), Decimal(0))
    used_total = sum((r.gpu_used_hours for r in month_rows), Decimal(0))
    admin = AdminView(
        chart=usage_chart(tenant, daily, start, end),
        tenant_hours=(
            format_number(held_total, 2),
            format_number(used_total, 2),
            efficiency_text(used_total, held_total),
            report_hours(used_total),
        ),
        people=people,
        servers=server_rows(runs, now, utilization),
        limits=[_limit_row(lim) for lim in all_limits],
        gpu_types=gpu_types,
        queue=queued_rows(waiting, now),
    )
    return replace(view, admin=admin)


def _limit_row(limit: Limit) -> LimitRow:
    return LimitRow(limit.kind, limit.subject, limit_values(limit), limit_summary(limit), limit_etag(limit))


# -- the handlers ----------------------------------------------------------------------------------


class QuotasPage(BaseHandler):
    """``GET /services/quotas/``: the page. Browsers without a login go through the hub's OAuth."""

    @web.authenticated
    async def get(self) -> None:
        caller = self.caller
        now = self.now()
        tabs_of = visible_tenants(caller, self.config)
        wanted = self.get_query_argument("tenant", "")
        if wanted:
            tenant: Tenant | None = self.tenant_to_read(wanted)
        else:
            mine = [t for t in tabs_of if t.id in caller.tenants_member]
            tenant = (mine or tabs_of)[0] if mine or tabs_of else None
        start, end = month_range(self.get_query_argument("month", ""), now)
        view = None
        if tenant is not None:
            view = await self.blocking(gather, self.store, caller, tenant, start, end, now, self.utilizations())
        tabs = [TenantTab(t.id, t.display_name, caller.role_in(t.id), tenant is t) for t in tabs_of]
        is_person = (self.current_user or {}).get("kind", "user") == "user"
        keys = await self.blocking(self.store.ssh_keys, caller.name) if is_person else None
        self.render_page(
            "quotas.html",
            tabs=tabs,
            view=view,
            nav=self._month_links(tenant, start, now),
            budget_warnings=self._budget_warnings(caller, tenant),
            ssh_keys=None if keys is None else ssh_key_rows(keys),
        )

    def _budget_warnings(self, caller: Caller, tenant: Tenant | None) -> list[str]:
        """The culler's warnings of servers about to be stopped for a spent budget: the caller's own,
        and every one of the tenant for its admins."""
        culler = self.settings.get("culler")
        if culler is None or tenant is None:
            return []
        is_admin = caller.can_admin_tenant(tenant.id)
        return [
            f"{'Your' if w.user == caller.name else w.user + chr(39) + 's'}"
            f" {'server ' + repr(w.server) if w.server else 'default server'} will be stopped at"
            f" {w.stop_at:%H:%M} UTC: {w.reason}"
            for w in culler.warnings()
            if w.tenant == tenant.id and (is_admin or w.user == caller.name)
        ]

    def _month_links(self, tenant: Tenant | None, start: date, now: datetime) -> dict[str, str]:
        if tenant is None:
            return {}
        links = {"previous": self.page_url(tenant.id, previous_month(start))} if start > FIRST_MONTH else {}
        if start < month_start(now):
            links["next"] = self.page_url(tenant.id, next_month(start))
            links["current"] = self.page_url(tenant.id, None)
        return links

    def page_url(self, tenant: str, month: date | None) -> str:
        query = {"tenant": tenant, **({"month": f"{month:%Y-%m}"} if month else {})}
        return f"{self.prefix}?{urlencode(query)}"

    @property
    def prefix(self) -> str:
        """This service's URL prefix (``/services/quotas/``)."""
        return str(self.hub_auth.base_url).rstrip("/") + "/"

    def render_page(self, template: str, **values: Any) -> None:
        tenant_view: TenantView | None = values.get("view")
        tenant_id = tenant_view.tenant.id if tenant_view else ""
        html = _env.get_template(template).render(
            hub=self.hub_auth.hub_prefix,
            prefix=self.prefix,
            caller=getattr(self, "_caller", None),
            xsrf=self.xsrf_token.decode() if isinstance(self.xsrf_token, bytes) else self.xsrf_token,
            static_url=self.static_url,
            api=f"{self.prefix}api/tenants/{quote(tenant_id, safe='')}/" if tenant_id else "",
            limit_fields=list(SCALAR_FIELDS),
            ssh_keys_api=f"{self.prefix}api/ssh-keys",
            **values,
        )
        self.set_header("Cache-Control", "no-store")
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        self.finish(html)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Errors of the page are pages too, with the same message as the API's."""
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, ApiError):
            message, problems = exc.message, exc.problems
        elif status_code >= 500:
            message, problems = "The quotas service failed; the error is in its log. Try again later.", []
        else:
            message, problems = self._reason, []
        self.render_page("error.html", status=status_code, reason=self._reason, message=message, problems=problems)


default_handlers = [("", QuotasPage)]

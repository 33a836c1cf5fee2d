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
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from jinja2 import Environment, FileSystemLoader, pass_context, select_autoescape
from jinja2.runtime import Context
from markupsafe import Markup, escape
from tornado import web

from i18n import DEFAULT_LOCALE, LOCALE_NAMES, LOCALES, N_, Duration, Moment, Text, _, catalog, ngettext, say
from i18n.jinja import LOCALE_VAR, install

from ..culler import HISTORY
from ..limits import SCALAR_FIELDS, limit_etag, limit_summary, limit_to_json
from ..model import Tenant
from ..policy import Limit, limits_for
from ..quantity import (
    format_bytes,
    format_cpu,
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
from .base import FAILED, ApiError, BaseHandler, Caller
from .charts import Meter, meters, sparkline, stacked_bars
from .said import FIELD_WORDS, Minute, day_text, field_word, kind_word, role_word

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


@pass_context
def _gettext(context: Context, msgid: str, /, **values: Any) -> Markup:
    """``_("...", name=value)`` in this service's templates: the sentence in the page's language, as
    HTML: the sentence and its values escaped, but for values that are markup (``code``/``end_code``,
    ``link``/``end``: a sentence keeps its links and code where its language puts them)."""
    locale = str(context.get(LOCALE_VAR) or DEFAULT_LOCALE)
    if isinstance(msgid, Text):
        return escape(msgid.say(locale))
    said = {k: v if isinstance(v, Markup) else escape(say(v, locale)) for k, v in values.items()}
    try:
        return escape(catalog(locale).gettext(msgid)).format(**said)
    except (KeyError, IndexError, ValueError):  # a translation whose placeholders differ: the unit tier fails on it
        return escape(msgid).format(**said)


install(_env)
_env.globals.update(
    gettext=_gettext, field_word=field_word, kind_word=kind_word, role_word=role_word
)  # `_` calls `gettext`
_env.globals.update(
    code=Markup("<code>"), end_code=Markup("</code>"), bold=Markup("<strong>"), end_bold=Markup("</strong>")
)
_env.filters["duration"] = Duration  # {{ t.queue.max_wait | duration | say }}

Said = str | Duration | Moment  # a value for people: a template says it with |say (an i18n.Text is a str)


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
    server: Said  # for people: "(default)" for the default server
    name: str  # as the hub names it ("" for the default server)
    profile: str
    gpus: Said
    cpu: str
    memory: str
    started: Said
    running_for: Said
    borrowed: Said = ""  # the GPUs of `gpus` borrowed from other tenants ("1 H100"); "" if none
    stops: Said = ""  # a server to be preempted: "14:05 UTC (why)"; "" otherwise
    gpu_hours: str = ""  # GPU-hours held and used (utilization-weighted) since it started
    gpu_used_hours: str = ""
    utilization: Markup = Markup("")  # its GPUs' utilization over the last hour (a sparkline); "" without GPUs


@dataclass(frozen=True)
class QueuedRow:
    """A GPU request waiting in the tenant's queue, as the "GPU queue" sections list it."""

    user: str
    server: Said  # for people: "(default)" for the default server
    name: str  # as the hub names it ("" for the default server)
    place: Said  # "1 of 2"; "—" until the hub's queue keeper has placed it (within a second)
    gpus: Said  # "2 × H100"
    profile: str
    since: Said
    waited: Said
    reason: Said


@dataclass(frozen=True)
class LimitRow:
    """One delegated limit; ``values`` are exact inputs for the editor (``gpus.H100`` -> ``"2"``)."""

    kind: str
    name: str
    values: Mapping[str, str]
    summary: Said
    etag: str  # what the editor sends back in If-Match, so a save never overwrites an unseen change


@dataclass(frozen=True)
class PersonRow:
    name: str
    gpu_hours: str
    gpu_used_hours: str
    efficiency: Said  # used over held, "25%"; "—" when none held
    gpu_used_exact: str  # to 1/10,000, as the API reports it (the page shows 2 places)
    cpu_hours: str
    runs: int
    gpus_now: Said
    limit: Said


@dataclass(frozen=True)
class MyView:
    role: str
    limits: list[LimitRow]
    gpu_hours: str
    gpu_used_hours: str
    efficiency: Said
    cpu_hours: str
    runs: int
    gpu_hours_limit: str
    gpus_now: Said
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
    created: Said
    last_used: Said


def ssh_key_rows(keys: Iterable[SshKey]) -> list[SshKeyRow]:
    return [
        SshKeyRow(
            id=k.id,
            title=k.title,
            type=k.public_key.split(" ", 1)[0],
            fingerprint=k.fingerprint,
            created=Minute(k.created),
            last_used=Minute(k.last_used) if k.last_used else _("never"),
        )
        for k in keys
    ]


@dataclass(frozen=True)
class TenantView:
    tenant: Tenant
    month_start: date
    month_end: date  # exclusive
    month_name: Text
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
        example = f"{this_month:%Y-%m}"
        if not match or not 1 <= int(match[2]) <= 12:
            raise ApiError(
                400,
                _("month must be written YYYY-MM, such as {example}, not {given}.", example=example, given=repr(text)),
            )
        start = date(int(match[1]), int(match[2]), 1)
        if start > this_month:
            raise ApiError(
                400,
                _(
                    "{month} has not begun: usage exists up to this month ({this_month}).",
                    month=month_name(start),
                    this_month=example,
                ),
            )
        if start < FIRST_MONTH:
            raise ApiError(
                400,
                _(
                    "month {given} is before {first}, when no usage was recorded.",
                    given=text,
                    first=f"{FIRST_MONTH:%Y-%m}",
                ),
            )
    return start, next_month(start)


def gpus_text(gpus: Mapping[str, int]) -> str:
    """``{"H100": 2}`` -> ``"2 H100"``; none -> ``"none"``."""
    shown = [f"{n} {t}" for t, n in sorted(gpus.items()) if n]
    return ", ".join(shown) or _("none")


def limit_values(limit: Limit) -> dict[str, str]:
    """The editor's exact inputs of a limit, as the API writes them (empty: no limit on that field)."""
    body = limit_to_json(limit)
    values = {f"gpus.{t}": str(n) for t, n in body["gpus"].items()}
    values.update({f: "" if body[f] is None else str(body[f]) for f in SCALAR_FIELDS})
    return values


def efficiency_text(used: Decimal, held: Decimal) -> str:
    """GPU-hours used over held as a percentage (``"25%"``); ``"—"`` when none were held."""
    return f"{format_number(used / held * 100, 0)}%" if held else "—"


def utilization_chart(
    run: Run, points: Sequence[tuple[datetime, float]], now: datetime, locale: str = DEFAULT_LOCALE
) -> Markup:
    """The sparkline of a GPU server's last hour (:data:`quotas.culler.HISTORY`), said in ``locale``;
    nothing for a CPU server."""
    if not sum(run.holding.gpus.values()):
        return Markup("")
    start = now - HISTORY
    held = run.holding
    label = (
        _("{user}/{server}", user=held.user, server=held.server)
        if held.server
        else _("{user}'s default server", user=held.user)
    )
    title = (
        ngettext(
            "GPU utilization of {label} over the last hour: {count} reading, latest {latest}%",
            "GPU utilization of {label} over the last hour: {count} readings, latest {latest}%",
            len(points),
            label=label,
            latest=f"{points[-1][1]:.0f}",
        )
        if points
        else _("GPU utilization of {label} over the last hour: no data", label=label)
    )
    values = [((at - start).total_seconds(), percent) for at, percent in points]
    return Markup(sparkline(values, span=HISTORY.total_seconds(), title=say(title, locale), locale=locale))


def server_rows(
    runs: Iterable[Run],
    now: datetime,
    utilization: Mapping[ServerKey, Sequence[tuple[datetime, float]]] | None = None,
    locale: str = DEFAULT_LOCALE,
) -> list[ServerRow]:
    seen = utilization or {}
    return [
        ServerRow(
            user=r.holding.user,
            server=r.holding.server or _("(default)"),
            name=r.holding.server,
            profile=r.holding.profile,
            gpus=gpus_text(r.holding.gpus),
            cpu=format_cpu(r.holding.cpu),
            memory=format_bytes(r.holding.memory),
            started=Minute(r.started),
            running_for=Duration(now - r.started),
            borrowed=gpus_text(r.holding.borrowed) if any(r.holding.borrowed.values()) else "",
            stops=_stops(r),
            gpu_hours=format_number(Decimal(r.holding_gpu_ms(now)) / MS_PER_HOUR, 2),
            gpu_used_hours=format_number(Decimal(r.gpu_used_ms) / MS_PER_HOUR, 2),
            utilization=utilization_chart(r, seen.get((r.holding.user, r.holding.server), ()), now, locale),
        )
        for r in runs
    ]


def _stops(run: Run) -> Said:
    """When a server to be preempted stops, and why: ``"14:05 UTC (… which needs them back)"``."""
    if run.stop_at is None:
        return ""
    when = Minute(run.stop_at, "time")
    return _("{time} ({why})", time=when, why=run.stop_note) if run.stop_note else when


def queued_rows(requests: Iterable[Queued], now: datetime) -> list[QueuedRow]:
    return [
        QueuedRow(
            user=q.user,
            server=q.server or _("(default)"),
            name=q.server,
            place=_("{position} of {length}", position=q.position, length=q.length) if q.position and q.length else "—",
            gpus=format_gpus({q.gpu_type: q.gpu_count}),
            profile=q.profile,
            since=Minute(q.enqueued),
            waited=Duration(now - q.enqueued),
            reason=q.reason or _("joined the queue just now; its place is decided within a second (reload the page)"),
        )
        for q in requests
    ]


def now_meters(tenant: Tenant, runs: Sequence[Run], gpu_hours: Decimal, locale: str = DEFAULT_LOCALE) -> Markup:
    """The tenant's ceiling against what its servers hold now, and its GPU-hours this month
    (totals only: no names), said in ``locale``."""
    quota = tenant.quota
    held: dict[str, int] = defaultdict(int)
    for r in runs:
        for gpu_type, n in r.holding.gpus.items():
            held[gpu_type] += n

    def meter(label: Text, used: Decimal | int, ceiling: Decimal | int | None, text: Text | str) -> Meter:
        return Meter(say(label, locale), used, ceiling, say(text, locale))

    rows = [
        meter(
            _("{gpu} GPUs", gpu=t),
            held.get(t, 0),
            ceiling,
            _("{used} of {ceiling} in use", used=held.get(t, 0), ceiling=ceiling),
        )
        for t, ceiling in quota.gpus.items()
    ]
    servers = len(runs)
    rows.append(
        meter(
            _("Servers"),
            servers,
            quota.servers,
            _("{used} of {ceiling} running", used=servers, ceiling=quota.servers)
            if quota.servers is not None
            else _("{used} running", used=servers),
        )
    )
    cpu = sum((r.holding.cpu for r in runs), Decimal(0))
    memory = sum((r.holding.memory for r in runs), Decimal(0))
    rows.append(
        meter(
            _("CPU"),
            cpu,
            quota.cpu,
            _("{used} of {ceiling}", used=format_cpu(cpu), ceiling=format_cpu(quota.cpu))
            if quota.cpu
            else format_cpu(cpu),
        )
    )
    rows.append(
        meter(
            _("Memory"),
            memory,
            quota.memory,
            _("{used} of {ceiling}", used=format_bytes(memory), ceiling=format_bytes(quota.memory))
            if quota.memory
            else format_bytes(memory),
        )
    )
    budget = quota.gpu_hours_per_month
    used = format_hours(gpu_hours)
    rows.append(
        meter(
            _("GPU-hours"),
            gpu_hours,
            budget,
            _("{used} of {ceiling} this month", used=used, ceiling=format_hours(budget))
            if budget is not None
            else _("{used} this month", used=used),
        )
    )
    title = _("Tenant {tenant}: ceiling and use now", tenant=tenant.id)
    return Markup(meters(rows, title=say(title, locale), locale=locale))


def usage_chart(
    tenant: Tenant, daily: Sequence[UsageRow], start: date, end: date, locale: str = DEFAULT_LOCALE
) -> Markup:
    """GPU-hours per day of the month, stacked per person, said in ``locale``."""
    days = [start + timedelta(days=i) for i in range((end - start).days)]
    index = {d: i for i, d in enumerate(days)}
    series: dict[str, list[Decimal]] = {}
    for row in daily:
        if row.day is None or row.day not in index or row.gpu_hours <= 0:
            continue
        series.setdefault(row.subject, [Decimal(0)] * len(days))[index[row.day]] += row.gpu_hours
    month = month_name(start)

    def others(n: int) -> str:
        return say(ngettext("{count} other", "{count} others", n), locale)

    svg = stacked_bars(
        [str(d.day) for d in days],
        series,
        unit=say(_("GPU-hours"), locale),
        title=say(
            _("GPU-hours per day in {month}, tenant {tenant}, per person", month=month, tenant=tenant.id), locale
        ),
        long_labels=[say(day_text(d), locale) for d in days],
        x_title=say(_("Day of {month} (UTC)", month=month), locale),
        max_series=10,
        others_label=others,
        empty_text=say(_("No GPU was used in {month}", month=month), locale),
        locale=locale,
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
    locale: str = DEFAULT_LOCALE,
) -> TenantView:
    """Everything the page shows of ``tenant`` to ``caller``, read from the store (blocking: run it
    in a worker thread). Other people's rows are read only for callers who administer the tenant;
    ``utilization``: the culler's readings of the last hour per server (shown only with its row).
    The charts are said in ``locale``; the other values are sentences that the template says."""
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
        servers=server_rows(my_runs, now, utilization, locale),
        queued=queued_rows((q for q in waiting if q.user == caller.name), now),
    )
    view = TenantView(
        tenant=tenant,
        month_start=start,
        month_end=end,
        month_name=month_name(start),
        is_current_month=start == month_start(now),
        now_meters=now_meters(tenant, runs, usage.gpu_hours, locale),
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
        chart=usage_chart(tenant, daily, start, end, locale),
        tenant_hours=(
            format_number(held_total, 2),
            format_number(used_total, 2),
            efficiency_text(used_total, held_total),
            report_hours(used_total),
        ),
        people=people,
        servers=server_rows(runs, now, utilization, locale),
        limits=[_limit_row(lim) for lim in all_limits],
        gpu_types=gpu_types,
        queue=queued_rows(waiting, now),
    )
    return replace(view, admin=admin)


def _limit_row(limit: Limit) -> LimitRow:
    return LimitRow(limit.kind, limit.subject, limit_values(limit), limit_summary(limit), limit_etag(limit))


def budget_warning(user: str, server: str, stop_at: datetime, reason: object, *, mine: bool) -> Text:
    """The culler's warning of a server about to be stopped for a spent budget, as the page says it."""
    when = Minute(stop_at, "time")
    if mine:
        if server:
            return _(
                "Your server {server} will be stopped at {time}: {why}", server=repr(server), time=when, why=reason
            )
        return _("Your default server will be stopped at {time}: {why}", time=when, why=reason)
    if server:
        return _(
            "{user}'s server {server} will be stopped at {time}: {why}",
            user=user,
            server=repr(server),
            time=when,
            why=reason,
        )
    return _("{user}'s default server will be stopped at {time}: {why}", user=user, time=when, why=reason)


@dataclass(frozen=True)
class LanguageLink:
    """One choice of the page's language switcher."""

    code: str
    name: str
    url: str
    current: bool


def language_links(hub: str, here: str, current: str) -> list[LanguageLink]:
    """The switcher's links: the hub's ``language`` page (``hub`` is its prefix, ``/hub/``), which
    sets the choice and comes back to ``here`` (this page's path and query)."""
    return [
        LanguageLink(
            code, LOCALE_NAMES[code], f"{hub}language?{urlencode({'lang': code, 'next': here})}", code == current
        )
        for code in LOCALES
    ]


# The words the page's script (static/quotas.js) says, by key: `{name}` placeholders it fills in.
SCRIPT_TEXTS = {
    "no_answer": N_("The quotas service did not answer ({error}). Check your connection and try again."),
    "answered": N_("The quotas service answered {status} {reason}."),
    "remove": N_("Remove"),
    "confirm_remove": N_("Confirm remove"),
    "stop": N_("Stop"),
    "confirm_stop": N_("Confirm stop"),
    "stopped": N_("Stopped"),
    "edit": N_("Edit"),
    "save": N_("Save"),
    "cancel": N_("Cancel"),
    "saved": N_("Saved"),
    "no_limit": N_("no limit"),
    "user": N_("user"),
    "group": N_("group"),
    **{f"field_{field}": word for field, word in FIELD_WORDS.items()},
    "field_gpus": N_("{gpu} GPUs"),
    "field_of": N_("{field} of {kind} {name}"),
    "saved_limit": N_("Saved the limit of {kind} {name}."),
    "not_saved": N_("The limit of {kind} {name} was not saved."),
    "save_again": N_("Save again to replace it with what you typed, or reload the page to see it."),
    "removed_limit": N_("Removed the limit of {kind} {name}: only the tenant's ceiling applies."),
    "name_first": N_("Write the name of the {kind} this limit is for."),
    "minute": N_("{date} {time} UTC"),
    "never": N_("never"),
    "removed_key": N_('Removed the key "{title}": the gateway refuses it from your next connection.'),
    "paste_first": N_("Paste your public key first: the one line of e.g. ~/.ssh/id_ed25519.pub."),
    "added_key": N_('Added the key "{title}" ({fingerprint}).'),
}


def script_texts(locale: str) -> dict[str, str]:
    """:data:`SCRIPT_TEXTS` in ``locale``, placeholders left for the script to fill."""
    translations = catalog(locale)
    return {key: translations.gettext(msgid) for key, msgid in SCRIPT_TEXTS.items()}


# the error page's heading: the HTTP reason phrase in the page's language (others stay as HTTP says them)
REASONS = {
    400: N_("Bad Request"),
    403: N_("Forbidden"),
    404: N_("Not Found"),
    409: N_("Conflict"),
    422: N_("Unprocessable Entity"),
    500: N_("Internal Server Error"),
    502: N_("Bad Gateway"),
    503: N_("Service Unavailable"),
}


def render(template: str, locale: str, *, hub: str, here: str, **values: Any) -> str:
    """The page ``template`` with ``values``, said in ``locale``: ``hub`` is the hub's prefix
    (``/hub/``), ``here`` this page's path and query (where the language switcher comes back to)."""
    return _env.get_template(template).render(
        {LOCALE_VAR: locale},
        languages=language_links(hub, here, locale),
        script_texts=script_texts(locale),
        hub=hub,
        home_link=Markup('<a href="{}home">').format(hub),
        end_link=Markup("</a>"),
        **values,
    )


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
            view = await self.blocking(
                gather, self.store, caller, tenant, start, end, now, self.utilizations(), self.language
            )
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

    def _budget_warnings(self, caller: Caller, tenant: Tenant | None) -> list[Text]:
        """The culler's warnings of servers about to be stopped for a spent budget: the caller's own,
        and every one of the tenant for its admins."""
        culler = self.settings.get("culler")
        if culler is None or tenant is None:
            return []
        is_admin = caller.can_admin_tenant(tenant.id)
        return [
            budget_warning(w.user, w.server, w.stop_at, w.reason, mine=w.user == caller.name)
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
        html = render(
            template,
            self.language,
            hub=self.hub_auth.hub_prefix,
            here=self.request.uri or self.prefix,
            prefix=self.prefix,
            caller=getattr(self, "_caller", None),
            xsrf=self.xsrf_token.decode() if isinstance(self.xsrf_token, bytes) else self.xsrf_token,
            static_url=self.static_url,
            api=f"{self.prefix}api/tenants/{quote(tenant_id, safe='')}/" if tenant_id else "",
            limit_fields=list(SCALAR_FIELDS),
            ssh_keys_api=f"{self.prefix}api/ssh-keys",  # i18n: a URL
            **values,
        )
        self.set_header("Cache-Control", "no-store")
        self.set_header("Content-Type", "text/html; charset=UTF-8")  # i18n: a protocol value
        self.finish(html)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Errors of the page are pages too, with the same message as the API's, in the page's language."""
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, ApiError):
            message, problems = exc.message, exc.problems
        elif status_code >= 500:
            message, problems = FAILED, []
        else:
            message, problems = self._reason, []
        reason = _(REASONS[status_code]) if status_code in REASONS else self._reason
        self.render_page("error.html", status=status_code, reason=reason, message=message, problems=problems)


default_handlers = [("", QuotasPage)]

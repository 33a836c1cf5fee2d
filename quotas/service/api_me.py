"""``api/me``: the caller, their saved language, and for each of their tenants what they may use
and use now; ``api/me/workspace``: what the JupyterLab extension of one of the caller's own servers
shows (its tenant, the GPUs it holds, the GPU-hours left, and the hub's notices to the caller), with
every text it shows said in the caller's language (``texts``): the extension composes none."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from i18n import DEFAULT_LOCALE, Moment, Text, _, translate

from ..culler import budget_overruns
from ..limits import limit_to_json
from ..model import PlatformConfig, Tenant
from ..notices import RECENT, server_notices
from ..policy import Limit, Usage, limits_for
from ..quantity import format_gpus, format_hours, month_period, report_hours, report_ratio
from ..store import Run, ServerKey, Store
from .api_queue import queued_json
from .api_servers import server_json
from .api_tenants import about_tenant_json, ceiling_json, in_use_json, visible_tenants
from .base import ApiError, BaseHandler, Caller
from .said import capitalized


def my_tenant(
    store: Store,
    tenant: Tenant,
    caller: Caller,
    now: datetime,
    utilization: Mapping[ServerKey, Sequence[tuple[datetime, float]]] | None = None,
    locale: str = DEFAULT_LOCALE,
) -> dict[str, Any]:
    """The caller's view of one tenant: role, the limits that apply to them (their own and their
    groups'), their GPU-hours held and used this month, their servers (with ``utilization``, the
    culler's readings of the last hour), their GPU requests waiting in the tenant's
    queue (with their place in line and why), and the tenant's ceiling and use now; sentences
    (why a server stops, why a request waits) said in ``locale``."""
    start, end, period = month_period(now)
    usage = store.usage(tenant, now)
    mine = [
        r for r in store.usage_report(tenant.id, start.date(), end.date(), now, by="user") if r.subject == caller.name
    ]
    limits = limits_for(store.limits(tenant.id), caller.name, caller.groups)
    servers = [r for r in store.open_runs(tenant.id) if r.holding.user == caller.name]
    queued = [q for q in store.queued(tenant.id) if q.user == caller.name]
    held = sum((r.gpu_hours for r in mine), start=Decimal(0))
    used = sum((r.gpu_used_hours for r in mine), start=Decimal(0))
    seen = utilization or {}
    return {
        **about_tenant_json(tenant, caller),
        "limits": [limit_to_json(lim) for lim in limits],
        "usage": {
            "gpu_hours": report_hours(held),
            "gpu_used_hours": report_hours(used),
            "efficiency": report_ratio(used, held),
            "cpu_hours": report_hours(sum((r.cpu_hours for r in mine), start=Decimal(0))),
            "period": period,
            "period_resets": end.date(),
        },
        "servers": [server_json(r, now, seen.get((r.holding.user, r.holding.server), ()), locale) for r in servers],
        "queued": [queued_json(q, locale) for q in queued],
        "ceiling": ceiling_json(tenant),
        "in_use": in_use_json(tenant, usage),
    }


def budgets_left(tenant: Tenant, usage: Usage, limits: list[Limit], locale: str = DEFAULT_LOCALE) -> dict[str, Any]:
    """The GPU-hour budgets of this period that count against a person's servers in ``tenant``:
    the tenant's ceiling and each of ``limits`` (those that apply to them) with ``gpu_hours``,
    each with what is used and what is left; ``gpu_hours_left`` is the least of them (None: no
    budget at all). ``spent`` are the used-up ones, judged by the culler's own rule
    (:func:`quotas.culler.budget_overruns`), each said for people in ``locale``."""
    budgets = []
    if tenant.quota.gpu_hours_per_month is not None:
        budgets.append(("tenant", tenant.id, tenant.quota.gpu_hours_per_month, usage.gpu_hours))
    for lim in limits:
        if lim.gpu_hours is not None:
            used = usage.gpu_hours_of.get((lim.kind, lim.subject), Decimal(0))
            budgets.append((lim.kind, lim.subject, lim.gpu_hours, used))
    rows = [
        {
            "kind": kind,
            "subject": subject,
            "gpu_hours": report_hours(budget),
            "used": report_hours(used),
            "left": report_hours(max(Decimal(0), budget - used)),
        }
        for kind, subject, budget, used in budgets
    ]
    least = min((max(Decimal(0), budget - used) for *_, budget, used in budgets), default=None)
    return {
        "gpu_hours_left": None if least is None else report_hours(least),
        "period": usage.period_name,
        "period_resets": usage.period_resets,
        "budgets": rows,
        "spent": [
            capitalized(_("{fact}. {remedy}", fact=o.describe(), remedy=o.remedy()), locale)
            for o in budget_overruns(tenant, usage, limits)
        ],
    }


def gpu_words(gpus: Mapping[str, int]) -> str:
    """``"2 × H100, 1 × A100"``; ``"no GPU"`` when none."""
    return format_gpus({t: n for t, n in gpus.items() if n > 0}) or _("no GPU")


def hours_text(exact: str | None) -> str | None:
    """GPU-hours as people read them (``"119.9"``) from the API's exact value (``"119.9413"``)."""
    return None if exact is None else format_hours(Decimal(exact))


def workspace_texts(ws: Mapping[str, Any], now: datetime, locale: str) -> dict[str, Any]:
    """Everything the workspace's JupyterLab extension shows of ``ws`` (:func:`my_workspace`'s
    answer), said in ``locale``: ``status`` (the status bar: ``"lab · 2 × H100 · 120 GPU-h left"``),
    ``summary`` (its tooltip's lines), ``spent`` (a notification per used-up budget), and the
    extension's own words (``details``, ``details_caption``, ``dialog_title``, ``unavailable``)."""
    summary: list[Text] = []
    tenant, budget = ws["tenant"], ws["budget"]
    if not ws["running"] or not tenant:
        status: Text = _("AIDC Hub: no tenant")
    else:
        left = hours_text(budget["gpu_hours_left"]) if budget else None
        gpus = gpu_words(ws["gpus"])
        status = (
            _("{tenant} · {gpus} · no GPU-hour budget", tenant=tenant["id"], gpus=gpus)
            if left is None
            else _("{tenant} · {gpus} · {left} GPU-h left", tenant=tenant["id"], gpus=gpus, left=left)
        )
    if tenant:
        summary.append(_("Tenant: {name} ({tenant})", name=tenant["display_name"], tenant=tenant["id"]))
        held = gpu_words(ws["gpus"])
        summary.append(
            _("GPUs held: {gpus} (borrowed: {borrowed})", gpus=held, borrowed=gpu_words(ws["borrowed"]))
            if ws["borrowed"]
            else _("GPUs held: {gpus}", gpus=held)
        )
    if budget:
        left = hours_text(budget["gpu_hours_left"])
        summary.append(
            _("No GPU-hour budget applies")
            if left is None
            else _(
                "GPU-hours left {period}: {left} (resets {resets})",
                period=month_period(now)[2],
                left=left,
                resets=Moment(budget["period_resets"], "date") if budget["period_resets"] else "",
            )
        )
    return {
        "status": translate(status, locale),
        "summary": [translate(line, locale) for line in summary],
        "spent": [
            translate(_("GPU-hour budget used up: {why}", why=why), locale) for why in (budget or {}).get("spent", [])
        ],
        "details": translate(_("Details"), locale),
        "details_caption": translate(_("The whole message: why, and what to do"), locale),
        "dialog_title": translate(_("AIDC Hub"), locale),
        "unavailable": translate(_("AIDC Hub: unavailable"), locale),
    }


def my_workspace(
    store: Store, config: PlatformConfig, caller: Caller, server: str, now: datetime, locale: str = DEFAULT_LOCALE
) -> dict[str, Any]:
    """What the caller's server ``server`` ("" for the default one) holds, from its open run in the
    ledger (the hub's own record: never anything the workspace says), the GPU-hours left to it,
    and the notices the hub's pages show the caller; ``locale``: the language of the notices, of
    the used-up budgets (``budget.spent``) and of ``texts`` (:func:`workspace_texts`). Only the
    caller's own runs are read, so a server name of someone else finds nothing (``running`` false)."""
    out = _workspace(store, config, caller, server, now, locale)
    out["texts"] = workspace_texts(out, now, locale)
    return out


def _workspace(
    store: Store, config: PlatformConfig, caller: Caller, server: str, now: datetime, locale: str
) -> dict[str, Any]:
    runs: list[Run] = store.runs_of(caller.name, now - RECENT)
    run = next((r for r in runs if r.ended is None and r.holding.server == server), None)
    out: dict[str, Any] = {
        "user": caller.name,
        "server": server,
        "running": run is not None,
        "tenant": None,
        "profile": None,
        "gpus": {},
        "borrowed": {},
        "budget": None,
        "notices": [{"level": n.level, "text": translate(n.text, locale)} for n in server_notices(runs, now)],
        "locale": locale,
    }
    tenant = config.tenants.get(run.holding.tenant) if run is not None else None
    if run is None or tenant is None:
        return out
    usage = store.usage(tenant, now, caller.name, caller.groups)
    limits = limits_for(store.limits(tenant.id), caller.name, caller.groups)
    out.update(
        tenant={"id": tenant.id, "display_name": tenant.display_name},
        profile=run.holding.profile,
        gpus=dict(run.holding.gpus),
        borrowed=dict(run.holding.borrowed),
        budget=budgets_left(tenant, usage, limits, locale),
    )
    return out


class MeHandler(BaseHandler):
    async def get(self) -> None:
        """Who the hub says the caller is, their saved language (``locale``: ``"ko"``, ``"en"``, or
        null when they never chose), and their tenants (every tenant for platform admins)."""
        caller = self.caller
        now = self.now()
        tenants = []
        for tenant in visible_tenants(caller, self.config):
            tenants.append(
                await self.blocking(my_tenant, self.store, tenant, caller, now, self.utilizations(), self.language)
            )
        self.write_json(
            {
                "name": caller.name,
                "locale": self.saved_locale,
                "admin": caller.admin,
                "groups": list(caller.groups),
                "tenants_admin": sorted(caller.tenants_admin),
                "tenants": tenants,
            }
        )


class MyWorkspaceHandler(BaseHandler):
    async def get(self) -> None:
        """One of the caller's own servers (``?server=<name>``, the default server without it): what
        the workspace's JupyterLab extension shows. The caller is whoever the token belongs to, so
        a workspace's own token (scope ``access:services!service=quotas``) reads its owner's data."""
        unknown = sorted(set(self.request.query_arguments) - {"server"})
        if unknown:
            raise ApiError(
                400,
                _("Unknown query parameter {names}: only 'server' (a server name of yours).", names=", ".join(unknown)),
            )
        caller = self.caller
        server = self.get_query_argument("server", "")
        data = await self.blocking(my_workspace, self.store, self.config, caller, server, self.now(), self.language)
        self.write_json(data)


default_handlers = [(r"api/me", MeHandler), (r"api/me/workspace", MyWorkspaceHandler)]

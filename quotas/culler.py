"""Idle culling per profile, and GPU-hour budget enforcement.

GPU servers are expensive, so idle ones go sooner than CPU ones; and a tenant that chose
``stop_over_budget`` has its running GPU servers stopped, after a warning and a grace period,
once a GPU-hour budget (the tenant's ceiling, or a user's or group's delegated limit) is used up.
Without it nothing is stopped for budget: admission already refuses new GPU servers.

Decisions are pure functions of plain records (:func:`cull_decisions`,
:func:`budget_overruns`, :func:`servers_from_hub`); :class:`Culler` only gathers the records
(the hub's REST API, the quotas store), calls them and acts.

The quotas service runs it::

    culler = Culler(config=platform_config, store=store, hub_api_url=os.environ["JUPYTERHUB_API_URL"],
                    token=os.environ["JUPYTERHUB_API_TOKEN"])
    culler.start()  # every ``culling.interval`` of tenants.yaml, on the running IOLoop
    culler.warnings()  # the over-budget warnings given so far, for the web page

``hub_api_url`` is the hub's API (``http://127.0.0.1:8081/hub/api``); ``token`` needs the
scopes ``list:users``, ``read:servers`` and ``delete:servers``. Tenant and profile of a server
are taken from its open run in the quotas store (what the hub admitted), never from the
server's ``user_options``, which its user controls. The hub's stop path closes the run, with the reason the culler marked on it (``culled-idle``,
``over-budget``).

How idle a server is comes from the hub's ``last_activity`` of the server, which the proxy and
the workspace report every few minutes (JupyterHub's ``last_activity_interval``, 5 minutes by
default), so a server is stopped up to about ``interval`` + 5 minutes after its timeout.
Warnings live in memory: after a restart of the service a warned server is warned again, and
gets a full grace period.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import quote

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from tornado.ioloop import PeriodicCallback

from i18n import Duration, Moment, Text, _, ngettext

from .gpu_use import GpuSample, GpuUseSource, ServerGpus, ServerKey, mean_utilization, used_gpu_ms
from .model import PlatformConfig, Tenant
from .policy import Limit, Usage, limit_applies
from .quantity import format_duration, format_hours, format_number, period_text, reset_text
from .store import Run, Store

ACTION_KINDS = ("idle", "idle_gpu_warn", "idle_gpu", "over_budget_warn", "over_budget_stop")
WARNINGS = ("idle_gpu_warn", "over_budget_warn")  # the kinds that warn; every other one stops
# the ledger's end_reason
END_REASONS = {"idle": "culled-idle", "idle_gpu": "idle-gpu", "over_budget_stop": "over-budget"}
PAGINATION = "application/jupyterhub-pagination+json"
# GPU use (issue 18): time between two readings counts as use for at most this many culling
# intervals (a gap, a culler that was down, is not use); each server's readings kept in memory
USE_GAP_INTERVALS = 2
HISTORY = timedelta(hours=1)
HISTORY_POINTS = 120
# admin:server_state: a server's spawner state says where its GPUs are (the embedded spawner's
# GPU indices, KubeSpawner's pod and namespace), which GPU-idle culling needs
SCOPES = ("list:users", "read:servers", "admin:server_state", "delete:servers")


class HubUnavailable(RuntimeError):
    """The hub's API did not answer a culling round, or refused it; ``str()`` says what to do (to the
    operator, in the log: English)."""


@dataclass(frozen=True)
class Server:
    """One active server of the hub, with what the quotas store says it holds.

    ``tenant``, ``profile``, ``gpus`` and ``groups`` come from the server's open run in the
    ledger; ``tenant`` is None when the ledger has no open run for it.
    """

    user: str
    name: str
    tenant: str | None
    profile: str | None
    last_activity: datetime | None
    started: datetime | None
    pending: str | None = None
    gpus: Mapping[str, int] = field(default_factory=dict)
    groups: tuple[str, ...] = ()
    # where its GPUs are, from its spawner's state (see :func:`server_gpus`)
    gpu_indices: tuple[str, ...] = ()
    namespace: str = ""
    pod: str = ""

    @property
    def key(self) -> ServerKey:
        return (self.user, self.name)

    @property
    def label(self) -> Text:
        return server_label(self.user, self.name)

    @property
    def gpu_count(self) -> int:
        return sum(self.gpus.values())


@dataclass(frozen=True)
class Action:
    """What the culler does to one server, with the reason as a person reads it (``reason`` and
    ``note`` are :class:`i18n.Text`: their ``str`` is the English the log records).

    ``kind`` is ``idle`` (stop: idle too long), ``idle_gpu_warn`` (warn: its GPUs sit idle, it
    will be stopped at ``stop_at``; ``note`` says why and how to keep it, for its person's pages),
    ``idle_gpu`` (stop: its GPUs sat idle too long), ``over_budget_warn`` (warn: it will be
    stopped at ``stop_at``) or ``over_budget_stop`` (stop: the grace after the warning is over).
    """

    user: str
    server: str
    kind: str
    reason: str
    tenant: str | None = None
    stop_at: datetime | None = None
    note: str = ""

    @property
    def key(self) -> ServerKey:
        return (self.user, self.server)

    @property
    def stops(self) -> bool:
        return self.kind not in WARNINGS


@dataclass(frozen=True)
class Overrun:
    """A GPU-hour budget that is used up: a tenant's ceiling (``kind`` "tenant") or a limit
    its admins delegated to a user or a group."""

    tenant: str
    kind: str  # "tenant" | "user" | "group"
    subject: str
    used: Decimal
    budget: Decimal
    period_name: str = ""
    resets: date | None = None
    admins: str = _("a platform admin")  # who to ask, as Tenant.admin_contact() says it

    def covers(self, server: Server) -> bool:
        """True if ``server``'s GPU-hours count against this budget."""
        if server.tenant != self.tenant:
            return False
        return self.kind == "tenant" or limit_applies(self.kind, self.subject, server.user, server.groups)

    def describe(self) -> Text:
        values = {
            "tenant": self.tenant,
            "used": format_hours(self.used),
            "budget": format_hours(self.budget),
            "period": period_text(self.period_name),
        }
        if self.kind == "tenant":
            return _("tenant {tenant} has used {used} of its {budget} GPU-hours {period}", **values)
        if self.kind == "user":
            return _(
                "tenant {tenant}'s admins limit {user} to {budget} GPU-hours {period}, and {user} has used {used}",
                user=self.subject,
                **values,
            )
        return _(
            "tenant {tenant}'s admins limit group {group} to {budget} GPU-hours {period}, and its members have"
            " used {used}",
            group=self.subject,
            **values,
        )

    def remedy(self) -> Text:
        resets = reset_text(self.resets)
        if self.kind == "tenant":
            return _(
                "GPU servers can start again when the budget resets {reset}; ask a platform admin if the tenant"
                " needs more.",
                reset=resets,
            )
        return _(
            "Ask a tenant admin ({admins}) to raise the limit, or wait until it resets {reset}.",
            admins=self.admins,
            reset=resets,
        )


@dataclass(frozen=True)
class BudgetWarning:
    """A warning given to a running GPU server of a budget that is used up."""

    user: str
    server: str
    tenant: str
    reason: str
    warned: datetime
    stop_at: datetime


# ---------------------------------------------------------------------------
# pure decisions


def servers_from_hub(users: Iterable[Mapping[str, Any]], runs: Iterable[Run]) -> list[Server]:
    """The active servers of the hub's user models (``GET /hub/api/users?state=active``),
    each joined with its open ledger run: tenant, profile and what it holds come from the run,
    never from ``user_options``."""
    by_key = {(r.holding.user, r.holding.server): r for r in runs}
    out = []
    for user in users:
        for name, model in (user.get("servers") or {}).items():
            if model.get("stopped"):
                continue
            run = by_key.get((user["name"], name))
            holding = run.holding if run is not None else None
            state: Mapping[str, Any] = model.get("state") or {}
            aidc: Mapping[str, Any] = state["aidc"] if isinstance(state.get("aidc"), dict) else {}
            out.append(
                Server(
                    user=user["name"],
                    name=name,
                    tenant=holding.tenant if holding else None,
                    profile=holding.profile if holding else None,
                    last_activity=_timestamp(model.get("last_activity")),
                    started=_timestamp(model.get("started")),
                    pending=model.get("pending"),
                    gpus=dict(holding.gpus) if holding else {},
                    groups=tuple(holding.groups) if holding else (),
                    gpu_indices=tuple(str(i) for i in aidc.get("gpus") or () if isinstance(i, (str, int))),
                    namespace=str(state.get("namespace") or ""),
                    pod=str(state.get("pod_name") or ""),
                )
            )
    return out


def _timestamp(value: Any) -> datetime | None:
    if not value:
        return None
    parsed = datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def budget_overruns(tenant: Tenant, usage: Usage, limits: Sequence[Limit] = ()) -> list[Overrun]:
    """The GPU-hour budgets of ``tenant`` that are used up: its ceiling (``usage.gpu_hours``
    against ``quota.gpu_hours_per_month``) first, then each of ``limits`` with ``gpu_hours``
    (against ``usage.gpu_hours_of``). A budget is used up when what was used reaches it, the
    same rule admission refuses new GPU servers by."""

    def overrun(kind: str, subject: str, used: Decimal, budget: Decimal) -> Overrun:
        return Overrun(
            tenant.id, kind, subject, used, budget, usage.period_name, usage.period_resets, tenant.admin_contact()
        )

    out = []
    ceiling = tenant.quota.gpu_hours_per_month
    if ceiling is not None and usage.gpu_hours >= ceiling:
        out.append(overrun("tenant", tenant.id, usage.gpu_hours, ceiling))
    for limit in limits:
        if limit.tenant != tenant.id or limit.gpu_hours is None:
            continue
        used = usage.gpu_hours_of.get((limit.kind, limit.subject), Decimal(0))
        if used >= limit.gpu_hours:
            out.append(overrun(limit.kind, limit.subject, used, limit.gpu_hours))
    return out


def idle_timeout(server: Server, config: PlatformConfig) -> tuple[timedelta, str]:
    """How long ``server`` may be idle (``timedelta(0)``: forever) and whose setting that is:
    its tenant's ``culling``, else its profile's ``idle_timeout``, else the platform's."""
    platform = config.culling
    tenant = config.tenants.get(server.tenant) if server.tenant else None
    if tenant is None:
        # not in the ledger (or its tenant is gone from the config): the most lenient platform setting
        zero = timedelta(0)
        lenient = (
            zero
            if zero in (platform.gpu_idle_timeout, platform.cpu_idle_timeout)
            else max(platform.gpu_idle_timeout, platform.cpu_idle_timeout)
        )
        return lenient, _("the longer of the platform's GPU and CPU settings")
    gpu = server.gpu_count > 0
    own = tenant.culling.gpu_idle_timeout if gpu else tenant.culling.cpu_idle_timeout
    if own is not None:
        if gpu:
            return own, _("tenant {tenant}'s setting for GPU servers", tenant=tenant.id)
        return own, _("tenant {tenant}'s setting for CPU servers", tenant=tenant.id)
    profile = config.profiles.get(server.profile or "")
    if profile is not None and profile.idle_timeout is not None:
        return profile.idle_timeout, _("the setting of profile {profile}", profile=profile.id)
    if gpu:
        return platform.gpu_idle_timeout, _("the platform's setting for GPU servers")
    return platform.cpu_idle_timeout, _("the platform's setting for CPU servers")


@dataclass(frozen=True)
class GpuIdleRule:
    """The GPU-idle culling that applies to one server (:func:`gpu_idle_rule`), and whose it is."""

    threshold: Decimal  # percent
    after: timedelta  # timedelta(0): off
    warn_before: timedelta
    whose: str


@dataclass(frozen=True)
class GpuIdleClock:
    """Since when all the GPUs of one server have been under its threshold (the culler keeps one per
    server, in memory), and the server's start then: a restarted server starts a new clock."""

    since: datetime
    started: datetime | None


def gpu_idle_rule(server: Server, config: PlatformConfig) -> GpuIdleRule:
    """The GPU-idle culling of ``server``, one key at a time: its tenant's ``culling.gpu_idle``,
    else its profile's ``gpu_idle``, else the platform's ``culling.gpu_idle``."""
    platform = config.culling.gpu_idle
    tenant = config.tenants.get(server.tenant or "")
    profile = config.profiles.get(server.profile or "")
    levels = [
        (
            _("tenant {tenant}'s setting", tenant=tenant.id) if tenant else "",
            tenant.culling.gpu_idle if tenant else None,
        ),
        (
            _("the setting of profile {profile}", profile=profile.id) if profile else "",
            profile.gpu_idle if profile else None,
        ),
        (_("the platform's setting"), platform),
    ]

    def pick(key: str) -> tuple[Any, str]:
        for whose, own in levels:
            if own is not None and getattr(own, key) is not None:
                return getattr(own, key), whose
        raise AssertionError(f"the platform's culling.gpu_idle has no {key}")  # i18n: a bug; the loader sets every key

    (threshold, _whose), (after, whose), (warn_before, _whose) = pick("threshold"), pick("after"), pick("warn_before")
    return GpuIdleRule(threshold, after, warn_before, whose)


def gpu_idle_clock(
    clock: GpuIdleClock | None,
    server: Server,
    samples: Sequence[GpuSample] | None,
    threshold: Decimal,
    now: datetime,
    fresh_since: datetime | None = None,
) -> GpuIdleClock | None:
    """The idle clock of ``server`` after this round's ``samples`` (None: no data): None (not idle)
    unless there is a sample for every GPU it holds, each measured at or after ``fresh_since`` (the
    previous round; older is no data) and under ``threshold``. Missing data, partial data and any
    GPU at or above the threshold reset the clock; so does a restart of the server. Otherwise the
    clock goes on from ``clock``, or starts ``now``."""
    held = max(server.gpu_count, len(server.gpu_indices))
    if held == 0 or samples is None or len({s.gpu for s in samples}) < held:
        return None
    for sample in samples:
        if fresh_since is not None and sample.read_at is not None and sample.read_at < fresh_since:
            return None
        if not Decimal(repr(float(sample.utilization))) < threshold:
            return None
    if clock is not None and clock.started == server.started:
        return clock
    return GpuIdleClock(since=now, started=server.started)


def gpu_idle_decision(
    clock: GpuIdleClock | None, rule: GpuIdleRule, now: datetime, warned_stop_at: datetime | None = None
) -> tuple[str, datetime | None]:
    """``("keep", None)``, ``("warn", stop_at)`` or ``("stop", None)`` for a server idle since
    ``clock`` (None: not idle) under ``rule``, warned earlier of a stop at ``warned_stop_at``.

    With ``warn_before``, a server idle ``after - warn_before`` is warned (once) of its stop at
    ``since + after`` (or now, when the warning comes late), and stopped at the first round at or
    after that time; without, a server idle ``after`` is stopped at once. ``after`` 0: never.
    """
    if clock is None or rule.after <= timedelta(0):
        return "keep", None
    idle = now - clock.since
    if rule.warn_before <= timedelta(0):
        return ("stop", None) if idle >= rule.after else ("keep", None)
    if idle < rule.after - rule.warn_before:
        return "keep", None
    if warned_stop_at is None:
        return "warn", max(clock.since + rule.after, now)
    return ("stop", None) if now >= warned_stop_at else ("keep", None)


def server_gpus(server: Server) -> ServerGpus:
    """Where a source finds ``server``'s GPUs."""
    return ServerGpus(server.key, server.gpu_indices, server.namespace, server.pod)


def over_budget(servers: Iterable[Server], overruns: Mapping[str, Sequence[Overrun]]) -> dict[ServerKey, Overrun]:
    """The running GPU servers that a used-up budget covers, each with the first such budget."""
    out: dict[ServerKey, Overrun] = {}
    for server in servers:
        if server.gpu_count == 0 or server.tenant is None:
            continue
        for overrun in overruns.get(server.tenant, ()):
            if overrun.covers(server):
                out[server.key] = overrun
                break
    return out


def cull_decisions(
    servers: Sequence[Server],
    config: PlatformConfig,
    now: datetime,
    over_budget_by_tenant: Mapping[str, Sequence[Overrun]],
    warned: Mapping[ServerKey, datetime] | None = None,
    gpu_idle: Mapping[ServerKey, GpuIdleClock] | None = None,
    gpu_warned: Mapping[ServerKey, datetime] | None = None,
) -> list[Action]:
    """What to do now to each of ``servers``: at most one :class:`Action` per server.

    A server that is starting or stopping (``pending``) is left alone. One idle at least its
    :func:`idle_timeout` is stopped (``idle``). Otherwise a GPU server whose GPUs sit idle (its
    clock in ``gpu_idle``; ``gpu_warned``: the stop times of warnings given) is stopped or warned
    as :func:`gpu_idle_decision` says (``idle_gpu``, ``idle_gpu_warn``; an over-budget action
    comes before a GPU-idle warning). Otherwise, a GPU server of a tenant with
    ``stop_over_budget`` that a used-up budget of ``over_budget_by_tenant`` (tenant id ->
    :func:`budget_overruns`) covers is warned first (``over_budget_warn``, once: ``warned``
    holds when each server was warned) and stopped when ``over_budget_grace`` has passed since
    (``over_budget_stop``; at once when the grace is 0).
    """
    warned = warned or {}
    gpu_idle = gpu_idle or {}
    gpu_warned = gpu_warned or {}
    budget = over_budget(servers, over_budget_by_tenant)
    actions = []
    for server in servers:
        if server.pending:
            continue
        what = _describe(server)
        timeout, whose = idle_timeout(server, config)
        # a restarted server is not idle since before its start
        last = max((t for t in (server.last_activity, server.started) if t is not None), default=None)
        if last is not None and timeout > timedelta(0) and now - last >= timeout:
            reason = _(
                "Stopped {server} ({what}): idle for {idle}, and {kind} are stopped after {timeout} idle ({whose})."
                " Start it again from the hub's home page when you need it; the files in your home are kept.",
                server=server.label,
                what=what,
                idle=Duration(now - last),
                kind=_kind_of(server),
                timeout=Duration(timeout),
                whose=whose,
            )
            actions.append(Action(server.user, server.name, "idle", reason, server.tenant))
            continue
        gpu_action = _gpu_idle_action(server, config, now, gpu_idle.get(server.key), gpu_warned.get(server.key))
        if gpu_action is not None and gpu_action.stops:
            actions.append(gpu_action)
            continue
        overrun = budget.get(server.key)
        tenant = config.tenants.get(server.tenant or "")
        if overrun is None or tenant is None or not tenant.culling.stop_over_budget:
            if gpu_action is not None:
                actions.append(gpu_action)
            continue
        grace = tenant.culling.over_budget_grace
        since = warned.get(server.key)
        if since is None and grace > timedelta(0):
            stop_at = now + grace
            reason = _(
                "GPU-hour budget used up: {server} ({what}) will be stopped at {when} UTC, {grace} from now, because"
                " {because}. Save your work now. {remedy} CPU-only profiles still start.",
                server=server.label,
                what=what,
                when=f"{stop_at:%H:%M}",
                grace=Duration(grace),
                because=overrun.describe(),
                remedy=overrun.remedy(),
            )
            actions.append(Action(server.user, server.name, "over_budget_warn", reason, server.tenant, stop_at))
        elif since is not None and now - since < grace:
            if gpu_action is not None:
                actions.append(gpu_action)
        else:
            after = (
                _("there is no grace period")
                if since is None
                else _(
                    "the {grace} grace period after the warning at {when} UTC is over",
                    grace=Duration(grace),
                    when=f"{since:%H:%M}",
                )
            )
            reason = _(
                "Stopped {server} ({what}): {because}, and {after}. {remedy} CPU-only profiles still start.",
                server=server.label,
                what=what,
                because=overrun.describe(),
                after=after,
                remedy=overrun.remedy(),
            )
            actions.append(Action(server.user, server.name, "over_budget_stop", reason, server.tenant))
    return actions


def _gpu_idle_action(
    server: Server, config: PlatformConfig, now: datetime, clock: GpuIdleClock | None, warned_stop_at: datetime | None
) -> Action | None:
    """The GPU-idle warning or stop of ``server`` (see :func:`gpu_idle_decision`), with its words."""
    if server.gpu_count == 0 or clock is None:
        return None
    rule = gpu_idle_rule(server, config)
    verdict, stop_at = gpu_idle_decision(clock, rule, now, warned_stop_at)
    if verdict == "keep":
        return None
    values = {
        "server": server.label,
        "what": _describe(server),
        "threshold": f"{format_number(rule.threshold)}%",
        "which": f" [{', '.join(server.gpu_indices)}]" if server.gpu_indices else "",
        "since": Moment(clock.since, "time"),
    }
    rule_words = _(
        "GPU servers whose GPUs stay under {threshold} for {after} are stopped ({whose})",
        threshold=values["threshold"],
        after=Duration(rule.after),
        whose=rule.whose,
    )
    keep = _("to keep it, run work on its GPUs, or, if you do not need a GPU now, start a CPU-only profile instead")
    if verdict == "warn":
        assert stop_at is not None
        # on the ledger's run, for the person's pages: said in their language when they read it
        note = _(
            "its GPUs ({gpus}{which}) have been under {threshold} utilization since {since}; {keep}",
            gpus=_gpu_words(server)[-1],
            which=values["which"],
            threshold=values["threshold"],
            since=values["since"],
            keep=keep,
        )
        reason = _(
            "GPUs idle: {server} ({what}) will be stopped at {when}: every GPU it holds{which} has been under"
            " {threshold} utilization since {since}, and {rule}. Save your work now; {keep}.",
            when=Moment(stop_at, "time"),
            rule=rule_words,
            keep=keep,
            **values,
        )
        return Action(server.user, server.name, "idle_gpu_warn", reason, server.tenant, stop_at, note)
    reason = _(
        "Stopped {server} ({what}): every GPU it held{which} was under {threshold} utilization from {since} for"
        " {idle}, and {rule}. Start it again from the hub's home page when you need a GPU, or use a CPU-only"
        " profile; the files in your home are kept.",
        idle=Duration(now - clock.since),
        rule=rule_words,
        **values,
    )
    return Action(server.user, server.name, "idle_gpu", reason, server.tenant)


def _kind_of(server: Server) -> Text:
    if server.tenant is None:
        return _("servers the quotas ledger does not know")
    if server.gpu_count:
        return _("GPU servers of tenant {tenant}", tenant=server.tenant)
    return _("CPU servers of tenant {tenant}", tenant=server.tenant)


def _gpu_words(server: Server) -> list[Text]:
    """``["1 A100 GPU", "2 H100 GPUs"]``: what ``server`` holds, by type; ``["no GPU"]`` for none."""
    held = [ngettext("{count} {gpu} GPU", "{count} {gpu} GPUs", n, gpu=t) for t, n in sorted(server.gpus.items()) if n]
    return held or [_("no GPU")]


def _describe(server: Server) -> Text:
    if server.tenant is None:
        return _("not in the quotas ledger")
    return _(
        "tenant {tenant}, profile {profile}, {gpus}",
        tenant=server.tenant,
        profile=server.profile,
        gpus=_gpu_words(server),
    )


# ---------------------------------------------------------------------------
# the culler


class Culler:
    """Finds idle, GPU-idle and over-budget servers through the hub's REST API and stops them.

    Construct with the platform config, the quotas store, the hub's API URL and a token
    (see the module docstring), and ``gpu_source``, where the use of each server's GPUs is read
    (None: no GPU-idle culling), then :meth:`start` it on the running IOLoop.
    """

    def __init__(
        self,
        config: PlatformConfig,
        store: Store,
        hub_api_url: str,
        token: str,
        log: logging.Logger | None = None,
        gpu_source: GpuUseSource | None = None,
    ):
        self.config = config
        self.store = store
        self.hub_api_url = hub_api_url.rstrip("/")
        self.token = token
        self.log = log or logging.getLogger("aidc.culler")
        self.gpu_source = gpu_source
        self._warned: dict[ServerKey, BudgetWarning] = {}
        # GPU-idle culling, in memory: since when each server's GPUs are all idle, the stop time of
        # each warning given, when the previous round read GPU use, what the source last failed with
        self._gpu_clocks: dict[ServerKey, GpuIdleClock] = {}
        self._gpu_warned: dict[ServerKey, datetime] = {}
        self._gpu_read: datetime | None = None
        self._gpu_failure: str | None = None
        # GPU use (issue 18): when each running GPU server's GPUs were last read with data, and its
        # recent readings (time, mean utilization %) for the quotas page and API (:meth:`utilization`)
        self._gpu_last_read: dict[ServerKey, datetime] = {}
        self._gpu_history: dict[ServerKey, deque[tuple[datetime, float]]] = {}
        self._callback: PeriodicCallback | None = None
        self._running = False

    def warnings(self) -> list[BudgetWarning]:
        """Over-budget warnings of servers that still run and are still over budget, oldest first."""
        return sorted(self._warned.values(), key=lambda w: (w.warned, w.user, w.server))

    def utilization(self, key: ServerKey) -> list[tuple[datetime, float]]:
        """Server ``key``'s GPU utilization over the last hour (:data:`HISTORY`), oldest first: the
        mean over its GPUs at each round that read them; [] when it does not run or has no data."""
        return list(self._gpu_history.get(key, ()))

    def utilizations(self) -> dict[ServerKey, list[tuple[datetime, float]]]:
        """:meth:`utilization` of every running GPU server with data."""
        return {key: list(points) for key, points in self._gpu_history.items() if points}

    def start(self) -> None:
        """Run :meth:`run_once` every ``culling.interval`` on the current IOLoop, the first time one
        interval from now (idempotent). A round that fails is logged and the next one runs."""
        if self._callback is not None:
            return
        interval_ms = self.config.culling.interval.total_seconds() * 1000
        self._callback = PeriodicCallback(self._tick, interval_ms)
        self._callback.start()
        self.log.info(
            "Culler started: GPU servers idle %s, CPU servers idle %s are stopped (tenants and profiles may"
            " differ); checking every %s",
            format_duration(self.config.culling.gpu_idle_timeout),
            format_duration(self.config.culling.cpu_idle_timeout),
            format_duration(self.config.culling.interval),
        )
        rule = self.config.culling.gpu_idle
        if self.gpu_source is None:
            self.log.info("GPU-idle culling is off: no source of GPU use is configured")
        elif rule.after:
            self.log.info(
                "GPU-idle culling: GPU servers whose GPUs stay under %s%% for %s are stopped, warned %s before"
                " (tenants and profiles may differ); GPU use from %s",
                format_number(rule.threshold or 0),
                format_duration(rule.after),
                format_duration(rule.warn_before or timedelta(0)),
                type(self.gpu_source).__name__,
            )

    def stop(self) -> None:
        if self._callback is not None:
            self._callback.stop()
            self._callback = None

    def reconfigure(self, config: PlatformConfig) -> None:
        """Use ``config`` from the next round on (a reload of the platform config); a new
        ``culling.interval`` restarts the rounds at that interval."""
        interval_changed = config.culling.interval != self.config.culling.interval
        self.config = config
        if interval_changed and self._callback is not None:
            self.stop()
            self.start()

    async def _tick(self) -> None:
        if self._running:
            return  # the previous round is still going (a slow hub): do not pile up
        self._running = True
        try:
            await self.run_once()
        except HubUnavailable as e:
            self.log.error("Culling round skipped: %s", e)
        except Exception:
            self.log.exception(
                "Culling round failed; trying again in %s", format_duration(self.config.culling.interval)
            )
        finally:
            self._running = False

    async def run_once(self, now: datetime | None = None) -> list[Action]:
        """One round: read the hub's active servers and the store, decide, act.

        Returns the actions carried out: warnings given, and servers the hub accepted to stop
        (a stop the hub refuses is logged and tried again next round).
        """
        now = now or datetime.now(UTC)
        users = await self._active_users()
        config = self.config  # one config for the whole round (a reload may swap it meanwhile)
        servers, overruns = await asyncio.to_thread(self._gather, config, users, now)
        if self._gpu_read is None:  # the first round: warnings of idle GPUs an earlier culler gave are void
            await asyncio.to_thread(self._call_off_gpu_warnings)
        await self._clock_gpus(servers, config, now)
        warned = {key: w.warned for key, w in self._warned.items()}
        done = []
        for action in cull_decisions(servers, config, now, overruns, warned, self._gpu_clocks, self._gpu_warned):
            if action.stops:
                if await self._stop(action):
                    self._warned.pop(action.key, None)
                    self._gpu_clocks.pop(action.key, None)
                    self._gpu_warned.pop(action.key, None)
                    done.append(action)
                continue
            if action.kind == "idle_gpu_warn":
                assert action.stop_at is not None
                # on the ledger's run: the person's hub pages and the quotas API show it (quotas/notices.py)
                await asyncio.to_thread(self.store.mark_to_stop, action.key, action.stop_at, action.note)
                self._gpu_warned[action.key] = action.stop_at
                self.log.warning("Warned %s: %s", server_label(action.user, action.server), action.reason)
                done.append(action)
                continue
            self._warned[action.key] = BudgetWarning(
                action.user, action.server, action.tenant or "", action.reason, now, action.stop_at or now
            )
            self.log.warning("Warned %s: %s", server_label(action.user, action.server), action.reason)
            done.append(action)
        still = over_budget(servers, overruns)
        for key in list(self._warned):
            if key not in still:
                del self._warned[key]  # stopped, or its budget was raised or reset: a new overrun warns again
        for key in list(self._gpu_warned):
            if key not in self._gpu_clocks:  # its GPUs were used again (or it stopped): the warning is off
                del self._gpu_warned[key]
                if await asyncio.to_thread(self.store.call_off_stop, key):
                    self.log.info("%s uses its GPUs again: it is no longer to be stopped", server_label(*key))
        return done

    def _call_off_gpu_warnings(self) -> None:
        """Take back the idle-GPU warnings left on open runs (by this culler before a restart): the
        idle clocks were in memory, so those servers start again from not idle."""
        for run in self.store.open_runs():
            if run.end_reason is None and run.stop_at is not None:
                self.store.call_off_stop((run.holding.user, run.holding.server))

    async def _clock_gpus(self, servers: Sequence[Server], config: PlatformConfig, now: datetime) -> None:
        """Read the use of the GPUs of the running GPU servers that GPU-idle culling applies to, and
        move their idle clocks (:func:`gpu_idle_clock`); a source that fails is no data. Every running
        GPU server's readings also add to its ledger run's GPU-hours used, and to its recent history."""
        running = [s for s in servers if not s.pending and s.gpu_count and s.tenant]
        watched = [s for s in running if gpu_idle_rule(s, config).after > timedelta(0)]
        samples: dict[ServerKey, list[GpuSample]] = {}
        if self.gpu_source is not None and running:
            try:
                samples = await self.gpu_source.sample([server_gpus(s) for s in running])
            except Exception as e:  # missing metrics never cull: no data this round
                failure = f"{type(e).__name__}: {e}"
                if failure != self._gpu_failure:  # once per new failure, not every round
                    self.log.warning("Reading GPU use failed (no server is GPU-idle until it works): %s", failure)
                self._gpu_failure = failure
            else:
                if self._gpu_failure is not None:
                    self.log.info("Reading GPU use works again")
                self._gpu_failure = None
        clocks = {}
        for server in watched:
            rule = gpu_idle_rule(server, config)
            clock = gpu_idle_clock(
                self._gpu_clocks.get(server.key), server, samples.get(server.key), rule.threshold, now, self._gpu_read
            )
            if clock is not None:
                clocks[server.key] = clock
        self._gpu_clocks = clocks
        await self._count_gpu_use(running, samples, config, now)
        self._gpu_read = now

    async def _count_gpu_use(
        self,
        running: Sequence[Server],
        samples: Mapping[ServerKey, Sequence[GpuSample]],
        config: PlatformConfig,
        now: datetime,
    ) -> None:
        """Add this round's readings to each server's ledger run (:func:`used_gpu_ms`) and history;
        servers that stopped are forgotten. A sample measured before the previous round is no data."""
        keys = {s.key for s in running}
        for gone in set(self._gpu_last_read) - keys:
            del self._gpu_last_read[gone]
        for gone in set(self._gpu_history) - keys:
            del self._gpu_history[gone]
        cap = USE_GAP_INTERVALS * config.culling.interval
        used: dict[ServerKey, int] = {}
        for server in running:
            fresh = [
                s
                for s in samples.get(server.key, ())
                if self._gpu_read is None or s.read_at is None or s.read_at >= self._gpu_read
            ]
            mean = mean_utilization(fresh)
            if mean is None:
                continue  # no data: nothing used, nothing drawn
            used[server.key] = used_gpu_ms(fresh, server.gpu_count, self._gpu_last_read.get(server.key), now, cap)
            self._gpu_last_read[server.key] = now
            points = self._gpu_history.setdefault(server.key, deque(maxlen=HISTORY_POINTS))
            points.append((now, mean))
            while points and points[0][0] < now - HISTORY:
                points.popleft()
        for key, ms in used.items():
            if ms:
                await asyncio.to_thread(self.store.add_gpu_use, key, ms)

    def _gather(
        self, config: PlatformConfig, users: list[dict[str, Any]], now: datetime
    ) -> tuple[list[Server], dict[str, list[Overrun]]]:
        """The servers joined with the ledger, and the used-up budgets of tenants that stop over budget."""
        servers = servers_from_hub(users, self.store.open_runs())
        overruns: dict[str, list[Overrun]] = {}
        for tenant in config.tenants.values():
            gpu_servers = [s for s in servers if s.tenant == tenant.id and s.gpu_count and not s.pending]
            if not tenant.culling.stop_over_budget or not gpu_servers:
                continue
            usage = self.store.usage(tenant, now)
            limits = [lim for lim in self.store.limits(tenant.id) if lim.gpu_hours is not None]
            spent: dict[tuple[str, str], Decimal] = {}
            if limits:
                for user, groups in {(s.user, s.groups) for s in gpu_servers}:
                    spent.update(self.store.usage(tenant, now, user, groups).gpu_hours_of)
            found = budget_overruns(tenant, dataclasses.replace(usage, gpu_hours_of=spent), limits)
            if found:
                overruns[tenant.id] = found
        return servers, overruns

    async def _active_users(self) -> list[dict[str, Any]]:
        """Every user with an active server, page by page."""
        users: list[dict[str, Any]] = []
        offset: int | None = 0
        while offset is not None:
            try:
                path = f"/users?state=active&offset={offset}"  # i18n: a URL
                response = await self._request("GET", path, accept=PAGINATION)
            except HTTPClientError as e:
                # HubUnavailable is for the operator, in the log (English)
                hint = (
                    f"the culler's token needs the scopes {', '.join(SCOPES)}"  # i18n: operator's log
                    if e.code in (401, 403)
                    else "is the hub running?"  # i18n: operator's log
                )
                raise HubUnavailable(
                    f"listing running servers at {self.hub_api_url}/users failed with {e.code} {e.message}; {hint}"  # i18n: operator's log
                ) from e
            except OSError as e:
                raise HubUnavailable(
                    f"cannot reach the hub at {self.hub_api_url}: {e}; is the hub running?"  # i18n: operator's log
                ) from e
            page = json.loads(response.body)
            if isinstance(page, list):  # a hub without pagination answers with the whole list
                return page
            users += page["items"]
            following = page["_pagination"].get("next")
            offset = following["offset"] if following else None
        return users

    async def _stop(self, action: Action) -> bool:
        user = quote(action.user, safe="")
        path = f"/users/{user}/servers/{quote(action.server, safe='')}" if action.server else f"/users/{user}/server"
        # the run's close keeps this reason, so the ledger says why the server ended
        await asyncio.to_thread(self.store.mark_end_reason, action.key, END_REASONS[action.kind])
        try:
            response = await self._request("DELETE", path)
        except HTTPClientError as e:
            await asyncio.to_thread(self.store.mark_end_reason, action.key, None)
            if e.code == 404:
                self.log.info("%s is gone already; nothing to stop", server_label(action.user, action.server))
                return False
            body = e.response.body.decode(errors="replace")[:300] if e.response else ""
            self.log.error(
                "Could not stop %s (%s: %s): the hub answered %s %s",
                server_label(action.user, action.server),
                action.kind,
                action.reason,
                e.code,
                body,
            )
            return False
        self.log.info(
            "Stopping %s (%s, hub answered %s): %s",
            server_label(action.user, action.server),
            action.kind,
            response.code,
            action.reason,
        )
        return True

    async def _request(self, method: str, path: str, accept: str = "application/json") -> Any:
        request = HTTPRequest(
            self.hub_api_url + path,
            method=method,
            headers={"Authorization": f"token {self.token}", "Accept": accept},
            request_timeout=60,
        )
        return await AsyncHTTPClient().fetch(request)


def server_label(user: str, server: str) -> Text:
    """A server for people: ``"server alice/gpu"``, or ``"alice's default server"`` (the culler's
    messages, the quotas service's API and page)."""
    return _("server {user}/{server}", user=user, server=server) if server else _("{user}'s default server", user=user)

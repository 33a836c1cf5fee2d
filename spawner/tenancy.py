"""What every AIDC spawner shares: the tenant-aware form, re-resolution of
``user_options`` and admission against the tenant's quota.

Used as a mixin by :class:`spawner.local.TenantLocalSpawner` (and the Kubernetes
spawner). The mixin only gathers data and acts; the decisions are the pure
functions of :mod:`spawner.profiles` and :mod:`quotas.policy`.

What it says to a person (the form, refusals, progress) is said in their language: their saved
choice (:meth:`quotas.store.Store.locale_of`; the hub saves a browser's choice at each page it
loads), else English. Their workspace is told that choice as ``AIDC_LOCALE``, for JupyterLab.
"""

from __future__ import annotations

import functools
import html
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from jupyterhub.apihandlers.base import APIHandler
from jupyterhub.spawner import SpawnException
from tornado import web
from traitlets import Unicode, default

from i18n import DEFAULT_LOCALE, Duration, Text, _, join, translate
from quotas import paths
from quotas.model import Profile, Tenant
from quotas.policy import Holding, Request
from sshgateway import workspace
from sshgateway.workspace_keys import load_secret, server_host_key_text, server_public_key

from .platform import Platform
from .profiles import (
    Choice,
    OptionsRefused,
    check_spawn_body,
    choices_for,
    options_from_form,
    render_form,
    resolve_options,
)
from .start_failures import STREAK


class TenantSpawnerMixin(paths.PlatformState):
    """Tenant profiles, option re-resolution and admission for a JupyterHub Spawner."""

    fake_gpus = Unicode(
        help="""GPU inventory to simulate where ``nvidia-smi`` does not exist, as
        ``TYPE:COUNT,...`` (for example ``H100:4,A100:4``). Defaults to ``$AIDC_FAKE_GPUS``.
        Ignored on machines with ``nvidia-smi``.
        """,
    ).tag(config=True)

    @default("fake_gpus")
    def _default_fake_gpus(self) -> str:
        return os.environ.get("AIDC_FAKE_GPUS", "")

    @default("options_form")
    def _default_options_form(self) -> Any:
        return options_form_html

    @default("options_from_form")
    def _default_options_from_form(self) -> Any:
        return options_from_form

    @default("apply_user_options")
    def _default_apply_user_options(self) -> Any:
        return _apply_user_options

    choice: Choice | None = None
    asked: Choice | None = None  # what the last admission decided on (the queue needs its tenant and profile)
    _platform: Platform | None = None
    held: Holding | None = None
    # the profile as admitted (a reload may change or remove it while the server starts)
    held_profile: Profile | None = None
    run_id: str | None = None

    @property
    def platform(self) -> Platform:
        # resolved once per spawner: it is read several times on every spawn
        if self._platform is None:
            self._platform = Platform.shared(
                self.tenants_file, self.catalog_file, self.db_url, self.fake_gpus, self.data_dir
            )
        return self._platform

    @property
    def server_key(self) -> tuple[str, str]:
        return (self.user.name, self.name or "")  # type: ignore[attr-defined]

    def saved_locale(self) -> str | None:
        """The language this server's person chose (``"ko"``, ``"en"``), or None if they never chose."""
        return self.platform.store.locale_of(self.user.name)  # type: ignore[attr-defined]

    def locale(self) -> str:
        """The language to speak to this server's person in: their saved choice, else English."""
        return self.saved_locale() or DEFAULT_LOCALE

    def user_groups(self) -> tuple[str, ...]:
        return tuple(g.name for g in self.user.groups)  # type: ignore[attr-defined]

    async def admit_spawn(
        self, hold: Callable[[Holding], None] | None = None, borrowed: Mapping[str, int] | None = None
    ) -> Holding:
        """Re-resolve ``user_options`` and reserve the tenant's resources.

        Returns what the server now holds (also kept in ``self.held``, its ledger run in
        ``self.run_id``), or raises ``SpawnException`` (400 malformed options, 403 not
        allowed or over quota) before anything starts. ``hold(holding)`` takes what the
        backend hands out itself (GPUs) in the same step as the reservation; what it raises
        propagates and nothing is reserved (:meth:`quotas.store.Store.reserve`).
        """
        platform = self.platform
        user, groups = self.user.name, self.user_groups()  # type: ignore[attr-defined]
        # resolved again here, against the config in force now: a reload since the options were
        # applied (an await or more ago) may have changed the tenant's profiles or ceiling
        choice = self.resolve_choice()
        self.choice = None
        self.asked = choice
        request = Request(user=user, server=self.name or "", profile=choice.profile, groups=groups)  # type: ignore[attr-defined]
        # one short database transaction, on the event loop like JupyterHub's own database calls:
        # handing it to a thread costs more (GIL and lock hand-offs) than the few ms it takes
        decision, run = platform.store.reserve(choice.tenant, request, datetime.now(UTC), hold, borrowed)
        if not decision.allowed or decision.holding is None:
            self.log.info("Refused %s: %s", self._log_name, decision.reason)  # type: ignore[attr-defined]
            raise refusal(decision.reason, reason=f"quota-{decision.code}", status=403, locale=self.locale())
        self.held, self.run_id, self.held_profile = decision.holding, run, choice.profile
        return decision.holding

    _base_start_timeout: int | None = None

    @property
    def queues_gpus(self) -> bool:
        """Whether a GPU spawn of this backend may wait in its tenant's queue (issue 14)."""
        return False

    def options_applied(self, choice: Choice) -> None:
        """Called once the spawn's options are resolved, before JupyterHub calls ``start``: a GPU
        spawn that may wait in its tenant's queue (:attr:`queues_gpus`) gets ``start_timeout``
        (which JupyterHub reads before ``start`` runs) raised by the tenant's ``queue.max_wait``."""
        if not self.queues_gpus:
            return
        if self._base_start_timeout is None:
            self._base_start_timeout = int(self.start_timeout)  # type: ignore[attr-defined,has-type]
        wait = choice.tenant.queue.max_wait.total_seconds() if choice.profile.gpu_type else 0
        self.start_timeout = self._base_start_timeout + int(wait)

    def tenant_env(self) -> dict[str, str]:
        """What the workspace is told about itself, in both backends: ``AIDC_TENANT`` (who pays),
        ``AIDC_PROFILE`` and ``AIDC_IMAGE`` (the catalog entry), from the admitted holding, and
        ``AIDC_LOCALE``, the language its person chose (absent when they never chose): JupyterLab
        opens in it."""
        return workspace_env(self.held, self.held_profile, self.saved_locale())

    # where this server's sshd listens: the port its backend chose before the start, the address
    # the gateway dials (the pod IP, 127.0.0.1) once started; kept in the state under "sshd"
    sshd_port: int = 0
    sshd_host: str = ""

    def ssh_env(self) -> dict[str, str]:
        """The workspace's SSH environment (:mod:`sshgateway.workspace`): ``AIDC_SSH_AUTHORIZED_KEY``,
        the ``authorized_keys`` line of this server's own client key, and ``AIDC_SSH_HOST_KEY``, its
        sshd's own host key, both derived from the platform secret
        (:mod:`sshgateway.workspace_keys`), and ``AIDC_SSHD_PORT``. The workspace's sshd accepts the
        gateway's key for this server alone and proves with the host key that it is this server's;
        the secret itself never leaves the hub."""
        secret = _ssh_secret(self.data_dir)
        user, server = self.server_key
        env = {
            workspace.KEY_ENV: server_public_key(secret, user, server),
            workspace.HOST_KEY_ENV: server_host_key_text(secret, user, server),
        }
        if self.sshd_port:
            env[workspace.PORT_ENV] = str(self.sshd_port)
        return env

    def ssh_args(self) -> list[str]:
        """The workspace's Jupyter server starts its sshd as it starts (:mod:`sshgateway.workspace`).
        Workspace images enable the extension themselves (``jupyter_server_config.d/aidc-sshd.json``
        of images/base/workspace), since KubeSpawner passes no arguments to an image's own command."""
        return [workspace.EXTENSION_ARG]

    def with_sshd(self, state: dict[str, Any]) -> dict[str, Any]:
        """``state`` plus where this server's sshd listens, for the SSH gateway (which reads the
        state with ``admin:server_state``): ``{"sshd": {"host": "10.1.2.3", "port": 2222}}``."""
        if self.sshd_host and self.sshd_port:
            state[SSHD_STATE] = {"host": self.sshd_host, "port": self.sshd_port}
        return state

    def load_sshd(self, state: Mapping[str, Any]) -> None:
        saved = state.get(SSHD_STATE) or {}
        self.sshd_host, self.sshd_port = str(saved.get("host") or ""), int(saved.get("port") or 0)

    def resolve_choice(self) -> Choice:
        """The (tenant, profile) that ``user_options`` may have, or ``SpawnException`` 400/403."""
        try:
            return resolve_options(self.platform.config, self.user.name, self.user_groups(), self.user_options)  # type: ignore[attr-defined]
        except OptionsRefused as e:
            raise refusal(e.message, reason="options", status=e.status, locale=self.locale()) from None

    def check_request_body(self) -> None:
        """Refuse (``SpawnException`` 400) a REST spawn whose body has top-level keys beyond
        ``user_options`` and ``display_name``, which JupyterHub would drop silently
        (:func:`spawner.profiles.check_spawn_body`). The spawn form's body is not JSON: left alone."""
        handler = self.handler  # type: ignore[attr-defined]
        if not isinstance(handler, APIHandler) or handler.request.method != "POST":
            return
        try:
            body = json.loads(handler.request.body or b"null")
        except ValueError:
            return  # JupyterHub answered 400 already
        try:
            check_spawn_body(body)
        except OptionsRefused as e:
            raise refusal(e.message, reason="options", status=e.status, locale=self.locale()) from None

    def release_reservation(self) -> None:
        """Give back what this server holds; harmless if it holds nothing."""
        self.platform.store.release(self.server_key, datetime.now(UTC))
        self.held, self.run_id, self.held_profile = None, None, None

    def held_state(self) -> dict[str, Any] | None:
        """What this server holds, for ``get_state`` (None when it holds nothing)."""
        if self.held is None:
            return None
        h = self.held
        return {
            "tenant": h.tenant,
            "profile": h.profile,
            "holds": {"gpus": dict(h.gpus), "cpu": str(h.cpu), "memory": str(h.memory), "borrowed": dict(h.borrowed)},
            "groups": list(h.groups),
            "run": self.run_id,
        }

    def restore_held(self, saved: dict[str, Any]) -> Holding:
        """Re-hold what a server that survived a hub restart holds, from its saved state
        (not from today's config: a server keeps what it has even if its profile changed)."""
        holds = saved["holds"]
        holding = Holding(
            tenant=saved["tenant"],
            user=self.user.name,  # type: ignore[attr-defined]
            server=self.name or "",  # type: ignore[attr-defined]
            profile=saved["profile"],
            gpus={str(t): int(n) for t, n in holds["gpus"].items()},
            cpu=Decimal(holds["cpu"]),
            memory=Decimal(holds["memory"]),
            groups=tuple(saved.get("groups", ())),
            borrowed={str(t): int(n) for t, n in holds.get("borrowed", {}).items()},
        )
        self.held, self.run_id = holding, self.platform.store.restore(holding, saved.get("run"), datetime.now(UTC))
        return holding


SSHD_STATE = "sshd"


@functools.lru_cache(maxsize=8)
def _ssh_secret(data_dir: str) -> bytes:
    # read once per hub process, not at every spawn: the secret never changes while servers run
    return load_secret(data_dir)


def workspace_env(held: Holding | None, profile: Profile | None, locale: str | None) -> dict[str, str]:
    """The environment that tells a workspace about itself (see :meth:`TenantSpawnerMixin.tenant_env`):
    ``{"AIDC_TENANT": "lab", "AIDC_PROFILE": "h100-x1", "AIDC_IMAGE": "pytorch", "AIDC_LOCALE": "ko"}``."""
    env: dict[str, str] = {}
    if held is not None:
        env.update(AIDC_TENANT=held.tenant, AIDC_PROFILE=held.profile, AIDC_IMAGE=profile.image if profile else "")
    if locale is not None:
        env[LOCALE_ENV] = locale
    return env


LOCALE_ENV = "AIDC_LOCALE"  # the language the workspace's person chose on the hub


def refusal(message: str, reason: str, status: int, locale: str = DEFAULT_LOCALE) -> SpawnException:
    """A SpawnException whose page text is ``message`` alone, said in ``locale`` (JupyterHub would
    otherwise show ``403 SpawnException(reason=...)`` in front of it on the spawn page). Its
    ``message`` stays the sentence itself (an :class:`i18n.Text` keeps its id), its log the English."""
    e = SpawnException(message, reason=reason, status_code=status, log_message=str(message))
    e.jupyterhub_message = translate(message, locale)  # type: ignore[attr-defined]
    return e


def reason_of(e: BaseException) -> str:
    """What an exception whose message is for people says: its first argument as raised (an
    :class:`i18n.Text` keeps its message id, which ``str(e)`` would lose), else ``str(e)``."""
    first = e.args[0] if e.args else None
    return first if isinstance(first, str) else str(e)


def queue_timeout_message(tenant: Tenant, status: str | None) -> Text:
    """The refusal of a spawn that waited ``tenant``'s longest wait in its GPU queue; ``status``: where
    it waited and why, as last shown."""
    return _(
        "Your server waited {wait} in tenant {tenant}'s GPU queue, the longest it may, and was not started"
        " ({status}). Try again later, pick a smaller profile, or ask a tenant admin.",
        wait=Duration(tenant.queue.max_wait),
        tenant=tenant.id,
        status=status,
    )


def _apply_user_options(spawner: TenantSpawnerMixin, user_options: Any) -> None:
    spawner.check_request_body()
    spawner.choice = spawner.resolve_choice()
    spawner.options_applied(spawner.choice)


def options_form_html(spawner: TenantSpawnerMixin) -> str:
    """The spawn page's form for ``spawner``'s person: their tenants' profiles and usage."""
    platform = spawner.platform
    config = platform.config  # one snapshot for the whole form
    locale = spawner.locale()
    choices = choices_for(config, spawner.user.name, spawner.user_groups())  # type: ignore[attr-defined]
    if not choices:
        nothing = _(
            "You are not a member of any tenant, so there is nothing to start."
            " Ask your organisation's tenant admin or a platform admin to add you."
        )
        return f'<div class="alert alert-warning">{html.escape(nothing.say(locale), quote=False)}</div>'  # i18n: markup
    notes: dict[str, str] = {}
    for tenant_id in {c.tenant.id for c in choices}:
        notes[tenant_id] = usage_note(config.tenants[tenant_id], platform.store.holdings(tenant_id), locale)
    # preselect what was asked last: the refused choice when the form comes back with a reason
    last = spawner.user_options or {}  # type: ignore[attr-defined]
    selected = f"{last.get('tenant')}/{last.get('profile')}" if isinstance(last, dict) else None
    may_borrow = not (isinstance(last, dict) and last.get("borrow") == "no")
    return render_form(config, choices, notes, selected=selected, may_borrow=may_borrow, locale=locale)


def usage_note(tenant: Tenant, held: Sequence[Holding], locale: str) -> str:
    """The form's line about what ``tenant`` uses now, in ``locale``: ``Tenant usage now: 3 of 4 H100
    GPUs in use; 2 of 5 servers running`` ("" for a tenant without GPU or server ceilings)."""
    parts: list[Text] = [
        _("{used} of {ceiling} {gpu} GPUs in use", used=sum(h.gpus.get(t, 0) for h in held), ceiling=n, gpu=t)
        for t, n in tenant.quota.gpus.items()
    ]
    if tenant.quota.servers is not None:
        parts.append(_("{used} of {ceiling} servers running", used=len(held), ceiling=tenant.quota.servers))
    if not parts:
        return ""
    return _("Tenant usage now: {usage}", usage=join(parts, locale, sep="; ")).say(locale)


def counted_failure(
    person: str, message: str, log: logging.Logger | logging.LoggerAdapter[Any], locale: str = DEFAULT_LOCALE
) -> Exception:
    """The exception for a failed start that looks like the platform's: an ``HTTPError`` 500, which
    JupyterHub counts toward ``consecutive_failure_limit``, for ``person``'s first failure since the
    hub last started a server; a ``SpawnException`` (not counted) for their next ones
    (:class:`spawner.start_failures.FailureStreak`), so that no one person can make the hub exit.
    ``message`` is said in ``locale`` to the person, in English in the log."""
    if STREAK.counts(person):
        error = web.HTTPError(500, str(message))
        error.jupyterhub_message = translate(message, locale)  # type: ignore[attr-defined]
        return error
    log.warning("Not counted toward the hub's exit: %s failed already since the hub last started a server", person)
    return refusal(message, reason="repeated-failure", status=500, locale=locale)

"""``aidc-quotas``: the quotas service, a JupyterHub service at ``/services/quotas/``.

The hub starts it (``c.JupyterHub.services``, see :func:`hub_service`) with its API token, OAuth
client and URL in ``JUPYTERHUB_*`` variables, and the platform's files in ``AIDC_*`` ones. It
opens the quotas database once, at start, and loads the platform config the hub published
(:mod:`quotas.snapshot`): at start, and again at each SIGHUP, which the hub sends it when it
reloads (``aidc reload``). Every request reads the database (shared with the hub's spawners) and
the config in force, never a file.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import shutil
import signal
import stat
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from jupyterhub.services.auth import HubOAuth, HubOAuthCallbackHandler
from jupyterhub.utils import url_path_join
from tornado import web
from tornado.httpserver import HTTPServer
from traitlets import Bool, Integer, Unicode, default, validate

from i18n import _
from services.lifecycle import ServiceApp

from .. import paths
from ..culler import Culler
from ..gpu_use import GpuUseSource, NvidiaSmiSource
from ..loader import ConfigError
from ..model import PlatformConfig
from ..snapshot import QUOTAS_STATE, PlatformHolder, ReloadOutcome, read_state, write_state
from ..store import Store
from . import (
    api_limits,
    api_me,
    api_queue,
    api_servers,
    api_ssh_keys,
    api_tenants,
    api_usage,
    metrics,
    openapi,
    page,
)
from .base import ApiError, BaseHandler, HubRoles

SERVICE_NAME = "quotas"
HERE = Path(__file__).resolve().parent

# What the service's own token may do at the hub, and why (least privilege):
SERVICE_SCOPES = (
    "list:users",  # the culler lists users with running servers
    "read:users:name",
    "read:users:groups",  # group limits apply to JupyterHub groups
    "read:users:activity",  # the culler reads last activity
    "list:groups",
    "read:groups",  # who is in a group that has a limit
    "read:roles:users",  # tenant admins by role (OIDC logins get tenant-admin-<id> from the provider)
    "read:servers",  # the culler reads server models (started, pending, last activity)
    # the culler reads each server's spawner state: where its GPUs are (the embedded spawner's GPU
    # indices, KubeSpawner's pod and namespace), to read their use for GPU-idle culling
    "admin:server_state",
    "delete:servers",  # the culler stops idle servers (never starts one: no start:servers)
)

API_MODULES = (api_me, api_tenants, api_limits, api_usage, api_servers, api_queue, api_ssh_keys, openapi, metrics)


def hub_service(port: int, environment: dict[str, str], hub_state_file: str = "") -> dict[str, Any]:
    """The ``c.JupyterHub.services`` entry that runs this service on ``127.0.0.1:<port>``, loading
    the platform config the hub publishes in ``hub_state_file`` (see :attr:`QuotasService.hub_state_file`)."""
    option = f"--QuotasService.hub_state_file={hub_state_file}"  # i18n: a command-line option
    state = [option] if hub_state_file else []
    return {
        "name": SERVICE_NAME,
        "display": True,
        "oauth_no_confirm": True,
        "url": f"http://127.0.0.1:{port}",
        "command": [sys.executable, "-m", "quotas.service", *state],
        "cwd": str(paths.REPO),
        "environment": dict(environment),
    }


def hub_roles() -> list[dict[str, Any]]:
    """``load_roles`` entries: the service's scopes, and every user may open the service (JupyterHub
    only lets a user log in to a service through OAuth with ``access:services!service=<name>``)."""
    return [
        {
            "name": "aidc-quotas-service",
            "description": "The quotas service: reads users, groups and servers; stops idle servers",  # i18n: a role's description in the hub's config, for the operator
            "scopes": list(SERVICE_SCOPES),
            "services": [SERVICE_NAME],
        },
        {
            "name": "user",
            "description": "Standard user privileges, and the quotas page and API",  # i18n: a role's description in the hub's config, for the operator
            "scopes": ["self", f"access:services!service={SERVICE_NAME}"],  # i18n: a command-line option / scope
        },
    ]


def routes() -> list[tuple[str, type[web.RequestHandler]]]:
    """Every route of the service, relative to its prefix: the API, the metrics, the page."""
    out: list[tuple[str, type[web.RequestHandler]]] = []
    for module in (*API_MODULES, page):
        out.extend(module.default_handlers)
    out.append(("oauth_callback", OAuthCallbackHandler))
    return out


class OAuthCallbackHandler(HubOAuthCallbackHandler, BaseHandler):
    """Where the hub sends the browser back after login; sets this service's cookie."""


class NotFoundHandler(BaseHandler):
    async def prepare(self) -> None:
        raise ApiError(
            404,
            _(
                "There is no {method} {path}. The API is described at {openapi}.",
                method=self.request.method,
                path=self.request.path,
                openapi=f"{self.settings['service_prefix']}api/openapi.json",  # i18n: a URL
            ),
        )


class QuotasService(ServiceApp, paths.PlatformState):
    """The quotas service: REST API, metrics and the usage and limits page."""

    name = "aidc-quotas"
    service_title = "quotas service"
    port_variable = "AIDC_QUOTAS_PORT"
    quiet_loggers = ("alembic",)  # the schema migrations' progress at each start
    description = "The AIDC Hub quotas service (a JupyterHub service: run it from the hub's config)."  # i18n: for the operator (start-up errors, command-line help)
    aliases = {
        "tenants": "QuotasService.tenants_file",
        "catalog": "QuotasService.catalog_file",
        "data-dir": "QuotasService.data_dir",
        "db-url": "QuotasService.db_url",
        "hub-state": "QuotasService.hub_state_file",
        "log-level": "Application.log_level",
    }
    flags = {
        "metrics-public": (
            {"QuotasService": {"metrics_public": True}},
            "Serve metrics without authentication.",  # i18n: for the operator (start-up errors, command-line help)
        ),
        "debug": (
            {"Application": {"log_level": logging.DEBUG}},
            "Log debug messages.",  # i18n: for the operator (start-up errors, command-line help)
        ),
    }

    service_url = Unicode(
        help="""Where the service listens, as a URL: ``http://127.0.0.1:8002`` listens on port 8002 of
        the loopback interface. Defaults to ``$JUPYTERHUB_SERVICE_URL``, which the hub sets from the
        service's ``url``.
        """,
    ).tag(config=True)

    service_prefix = Unicode(
        help="""The URL path the proxy sends to this service, e.g. ``/services/quotas/``.
        Defaults to ``$JUPYTERHUB_SERVICE_PREFIX``, which the hub sets.
        """,
    ).tag(config=True)

    cookie_secret_file = Unicode(
        help="""File holding the secret that signs this service's login cookie (created, mode 0600, if
        missing). ``$AIDC_QUOTAS_COOKIE_SECRET`` (hex) takes precedence. Defaults to
        ``<data_dir>/quotas_cookie_secret``; keep it across restarts so people stay logged in.
        """,
    ).tag(config=True)

    metrics_public = Bool(
        False,
        help="""Serve ``metrics`` without authentication.

        Off by default because the metrics name every tenant and how much it uses, which members of
        one tenant must not see about another. Turn it on only when the service port is reachable
        by the Prometheus server alone (for example a scrape of ``http://127.0.0.1:8002/services/quotas/metrics``
        that bypasses the proxy); otherwise scrape with a platform admin's token.
        """,
    ).tag(config=True)

    identity_cache_seconds = Integer(
        60,
        help="""How long the service trusts what the hub said about a token or login (name, admin,
        groups) before asking again. A person removed from a group or from the admins loses those
        rights here after at most this long; e.g. 10 where removals must apply within seconds.
        """,
    ).tag(config=True)

    cull = Bool(
        True,
        help="""Cull idle servers and stop GPU servers of spent budgets, per the ``culling`` settings of
        tenants.yaml (GPU profiles sooner than CPU ones), every ``culling.interval``. Turn off only
        when another culler (jupyterhub-idle-culler) does it.
        """,
    ).tag(config=True)

    prometheus_url = Unicode(
        help="""The Prometheus server whose NVIDIA DCGM exporter metrics (``DCGM_FI_DEV_GPU_UTIL``,
        ``DCGM_FI_DEV_FB_USED``) tell the culler how busy each server's GPUs are, for GPU-idle
        culling on Kubernetes, e.g. ``http://prometheus-server.monitoring:9090``. Unset: the
        embedded mode's ``nvidia-smi`` where it is on ``PATH``, else no GPU-idle culling (missing
        GPU metrics never stop a server). Defaults to ``$AIDC_PROMETHEUS_URL``.
        """,
    ).tag(config=True)

    @default("prometheus_url")
    def _default_prometheus_url(self) -> str:
        return os.environ.get("AIDC_PROMETHEUS_URL", "")

    def gpu_use_source(self) -> GpuUseSource | None:
        """Where the culler reads GPU use: Prometheus (DCGM) with :attr:`prometheus_url`, else
        ``nvidia-smi`` where it is on ``PATH`` (the embedded mode), else none."""
        if self.prometheus_url:
            from ..dcgm import PrometheusSource  # only where configured: the embedded mode never needs it

            return PrometheusSource(self.prometheus_url)
        if shutil.which("nvidia-smi"):
            return NvidiaSmiSource()
        return None

    @default("service_url")
    def _default_service_url(self) -> str:
        return os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:8002")

    @default("service_prefix")
    def _default_service_prefix(self) -> str:
        return os.environ.get("JUPYTERHUB_SERVICE_PREFIX", f"/services/{SERVICE_NAME}/")

    @validate("service_prefix")
    def _slashes(self, proposal: Any) -> str:
        return "/" + str(proposal.value).strip("/") + "/"

    @default("cookie_secret_file")
    def _default_cookie_secret_file(self) -> str:
        return str(Path(self.data_dir) / "quotas_cookie_secret")

    hub_state_file = Unicode(
        "",
        help="""The hub's platform state file, ``<data_dir>/platform/hub.json``. When set, the service
        loads the platform config the hub validated and published there (the same bytes the hub
        holds), at start and at each SIGHUP, instead of ``tenants_file`` and ``catalog_file``, and
        writes what it holds next to it (``quotas.json``) for ``aidc reload``. The hub sets it for
        the service it runs (:func:`hub_service`); unset, SIGHUP reloads the two files.
        """,
    ).tag(config=True)

    def initialize(self, argv: Any = None) -> None:
        super().initialize(argv)
        self.reloads = 0
        try:
            self.holder = (
                PlatformHolder.published(self.hub_state_file)
                if self.hub_state_file
                else PlatformHolder.from_files(self.tenants_file, self.catalog_file)
            )
        except (ConfigError, OSError, ValueError) as e:
            self.exit_with(
                f"The quotas service cannot start because of its tenant config.\n{e}"  # i18n: for the operator (start-up errors, command-line help)
            )
        if not os.environ.get("JUPYTERHUB_API_TOKEN"):
            self.exit_with(
                "aidc-quotas runs as a JupyterHub service: the hub starts it (c.JupyterHub.services in"  # i18n: for the operator (start-up errors, command-line help)
                " hub_config/jupyterhub_config.py) and gives it JUPYTERHUB_API_TOKEN, which is not set here."
            )
        self.store = Store(self.db_url)
        self.hub_auth = HubOAuth(parent=self, cache_max_age=self.identity_cache_seconds)
        self.culler = (
            Culler(
                config=self.holder.config,
                store=self.store,
                hub_api_url=self.hub_auth.api_url,
                token=os.environ["JUPYTERHUB_API_TOKEN"],
                log=self.log,
                gpu_source=self.gpu_use_source(),
            )
            if self.cull
            else None
        )
        self.web_app = self.make_app()

    @property
    def platform(self) -> PlatformConfig:
        """The platform config in force (the same object the handlers, the culler and the metrics read)."""
        return self.holder.config

    def reload_platform(self) -> ReloadOutcome:
        """SIGHUP: load the platform config again (what the hub published, with ``hub_state_file``)
        and swap it for every part of the service at once, or keep the one in force and log why."""
        self.reloads += 1
        outcome = self.holder.reload()
        if outcome.changed and self.culler is not None:
            self.culler.reconfigure(self.holder.config)
        log = self.log.info if outcome.applied else self.log.error
        log("%s", "\n".join(outcome.lines()))
        self._write_state(outcome)
        return outcome

    def _listen_for_reloads(self) -> None:
        """Reload at SIGHUP from now on. Then say so (the state file: the hub signals only a service
        that wrote one, as a service still starting would die of the signal), and catch up with a
        reload the hub published since this service read its config."""
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self.reload_platform)
        self._write_state(None)
        if self.hub_state_file:
            try:
                published = read_state(self.hub_state_file)
            except (OSError, ValueError):
                published = None
            if published is not None and published["snapshot"]["digest"] != self.holder.snapshot.digest:
                self.reload_platform()

    def _write_state(self, last: ReloadOutcome | None) -> None:
        """What this service holds, next to the hub's state file (only when the hub runs it)."""
        if not self.hub_state_file:
            return
        try:
            write_state(Path(self.hub_state_file).with_name(QUOTAS_STATE), self.holder, self.reloads, last)
        except OSError as e:
            self.log.error("Cannot record the platform config in force next to %s: %s", self.hub_state_file, e)

    def cookie_secret(self) -> bytes:
        """The cookie secret from ``$AIDC_QUOTAS_COOKIE_SECRET``, or the file (created 0600 if missing)."""
        from_env = os.environ.get("AIDC_QUOTAS_COOKIE_SECRET", "")
        if from_env:
            return bytes.fromhex(from_env)
        path = Path(self.cookie_secret_file)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            mode = stat.S_IMODE(path.stat().st_mode)
            if mode & 0o077:
                self.exit_with(
                    f"{path} (the quotas service's cookie secret) can be read by others (mode {mode:o});"  # i18n: for the operator (start-up errors, command-line help)
                    f" run: chmod 600 {path}"
                )
            return bytes.fromhex(path.read_text().strip())
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
        return bytes.fromhex(path.read_text().strip())

    def make_app(self) -> web.Application:
        prefix = self.service_prefix
        handlers = [(url_path_join(prefix, path), handler) for path, handler in routes()]
        return web.Application(
            handlers,  # type: ignore[arg-type]
            cookie_secret=self.cookie_secret(),
            xsrf_cookies=True,
            hub_auth=self.hub_auth,
            hub_roles=HubRoles(self.hub_auth.api_url, self.hub_auth.api_token, ttl=self.identity_cache_seconds),
            store=self.store,
            platform=self.holder,
            service_prefix=prefix,
            metrics_public=self.metrics_public,
            metrics_registry=metrics.registry_for(
                self.store, self.holder, _utcnow, self.culler.utilizations if self.culler is not None else None
            ),
            culler=self.culler,
            static_path=str(HERE / "static"),
            static_url_prefix=url_path_join(prefix, "static/"),
            template_path=str(HERE / "templates"),
            default_handler_class=NotFoundHandler,
            log_function=self._log_request,
            log=self.log,
        )

    def _log_request(self, handler: web.RequestHandler) -> None:
        status = handler.get_status()
        log = self.log.info if status < 400 else self.log.warning if status < 500 else self.log.error
        user = getattr(handler, "_caller", None)
        who = f" ({user.name})" if user is not None else ""
        ms = 1000.0 * handler.request.request_time()
        log("%d %s %s%s %.1fms", status, handler.request.method, handler.request.uri, who, ms)

    def start(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        url = urlparse(self.service_url)
        port = url.port or (443 if url.scheme == "https" else 80)
        host = url.hostname or "127.0.0.1"
        server = HTTPServer(self.web_app, xheaders=True)

        async def bind() -> None:
            server.listen(port, host)

        await self.listen(bind, f"{host}:{port}")
        self.log.info(
            "Quotas service at %s%s (tenants: %s; database: %s)",
            self.service_url.rstrip("/"),
            self.service_prefix,
            ", ".join(self.platform.tenants) or "none",
            self.store.engine.url.render_as_string(hide_password=True),
        )
        if self.culler is not None:
            self.culler.start()
        self._listen_for_reloads()
        await self.wait_for_stop()
        if self.culler is not None:
            self.culler.stop()
        server.stop()
        await server.close_all_connections()
        self.store.close()


def _utcnow() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


def main(argv: list[str] | None = None) -> None:
    QuotasService.launch_instance(argv)

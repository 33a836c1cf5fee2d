"""``aidc-quotas``: the quotas service, a JupyterHub service at ``/services/quotas/``.

The hub starts it (``c.JupyterHub.services``, see :func:`hub_service`) with its API token, OAuth
client and URL in ``JUPYTERHUB_*`` variables, and the platform's files in ``AIDC_*`` ones. It
loads the platform config and opens the quotas database once, at start; every request reads the
database (shared with the hub's spawners), never a file.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import secrets
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
from traitlets.config import Application

from .. import paths
from ..culler import Culler, format_duration
from ..loader import ConfigError, load_platform_cached
from ..model import PlatformConfig
from ..store import Store
from . import api_limits, api_me, api_servers, api_ssh_keys, api_tenants, api_usage, metrics, openapi, page
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
    "delete:servers",  # the culler stops idle servers (never starts one: no start:servers)
)

API_MODULES = (api_me, api_tenants, api_limits, api_usage, api_servers, api_ssh_keys, openapi, metrics)


def hub_service(port: int, environment: dict[str, str]) -> dict[str, Any]:
    """The ``c.JupyterHub.services`` entry that runs this service on ``127.0.0.1:<port>``."""
    return {
        "name": SERVICE_NAME,
        "display": True,
        "oauth_no_confirm": True,
        "url": f"http://127.0.0.1:{port}",
        "command": [sys.executable, "-m", "quotas.service"],
        "cwd": str(paths.REPO),
        "environment": dict(environment),
    }


def hub_roles() -> list[dict[str, Any]]:
    """``load_roles`` entries: the service's scopes, and every user may open the service (JupyterHub
    only lets a user log in to a service through OAuth with ``access:services!service=<name>``)."""
    return [
        {
            "name": "aidc-quotas-service",
            "description": "The quotas service: reads users, groups and servers; stops idle servers",
            "scopes": list(SERVICE_SCOPES),
            "services": [SERVICE_NAME],
        },
        {
            "name": "user",
            "description": "Standard user privileges, and the quotas page and API",
            "scopes": ["self", f"access:services!service={SERVICE_NAME}"],
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
            f"There is no {self.request.method} {self.request.path}."
            f" The API is described at {self.settings['service_prefix']}api/openapi.json.",
        )


class QuotasService(Application, paths.PlatformState):
    """The quotas service: REST API, metrics and the usage and limits page."""

    name = "aidc-quotas"
    description = "The AIDC Hub quotas service (a JupyterHub service: run it from the hub's config)."
    aliases = {
        "tenants": "QuotasService.tenants_file",
        "catalog": "QuotasService.catalog_file",
        "data-dir": "QuotasService.data_dir",
        "db-url": "QuotasService.db_url",
        "log-level": "Application.log_level",
    }
    flags = {
        "metrics-public": ({"QuotasService": {"metrics_public": True}}, "Serve metrics without authentication."),
        "debug": ({"Application": {"log_level": logging.DEBUG}}, "Log debug messages."),
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
        rights here after at most this long.
        """,
    ).tag(config=True)

    cull = Bool(
        True,
        help="""Cull idle servers and stop GPU servers of spent budgets, per the ``culling`` settings of
        tenants.yaml (GPU profiles sooner than CPU ones), every ``culling.interval``. Turn off only
        when another culler (jupyterhub-idle-culler) does it.
        """,
    ).tag(config=True)

    bind_timeout = Integer(
        15,
        help="""Seconds to wait for the service's port at start when another process holds it (the
        service of a hub that was killed, which stops within a second or two).
        """,
    ).tag(config=True)

    @default("log_level")
    def _default_log_level(self) -> int:
        return logging.INFO

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

    def initialize(self, argv: Any = None) -> None:
        super().initialize(argv)
        try:
            self.platform: PlatformConfig = load_platform_cached(self.tenants_file, self.catalog_file)
        except ConfigError as e:
            self.exit_with(f"The quotas service cannot start because of its tenant config.\n{e}")
        if not os.environ.get("JUPYTERHUB_API_TOKEN"):
            self.exit_with(
                "aidc-quotas runs as a JupyterHub service: the hub starts it (c.JupyterHub.services in"
                " hub_config/jupyterhub_config.py) and gives it JUPYTERHUB_API_TOKEN, which is not set here."
            )
        self.store = Store(self.db_url)
        self.hub_auth = HubOAuth(parent=self, cache_max_age=self.identity_cache_seconds)
        self.culler = (
            Culler(
                config=self.platform,
                store=self.store,
                hub_api_url=self.hub_auth.api_url,
                token=os.environ["JUPYTERHUB_API_TOKEN"],
                log=self.log,
            )
            if self.cull
            else None
        )
        self.web_app = self.make_app()

    def exit_with(self, message: str) -> None:
        self.log.critical(message)
        self.exit(1)

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
                    f"{path} (the quotas service's cookie secret) can be read by others (mode {mode:o});"
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
            platform=self.platform,
            service_prefix=prefix,
            metrics_public=self.metrics_public,
            metrics_registry=metrics.registry_for(self.store, self.platform, _utcnow),
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
        server = HTTPServer(self.web_app, xheaders=True)
        await self._listen(server, port, url.hostname or "127.0.0.1")
        self.log.info(
            "Quotas service at %s%s (tenants: %s; database: %s)",
            self.service_url.rstrip("/"),
            self.service_prefix,
            ", ".join(self.platform.tenants) or "none",
            self.store.engine.url.render_as_string(hide_password=True),
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        watch = asyncio.create_task(self._stop_when_orphaned(stop))
        if self.culler is not None:
            self.culler.start()
            self.log.info(
                "Culling idle servers every %s (GPU servers after %s idle, CPU ones after %s, unless"
                " a tenant or profile says otherwise)",
                format_duration(self.platform.culling.interval),
                format_duration(self.platform.culling.gpu_idle_timeout),
                format_duration(self.platform.culling.cpu_idle_timeout),
            )
        await stop.wait()
        watch.cancel()
        if self.culler is not None:
            self.culler.stop()
        self.log.info("Quotas service stopping")
        server.stop()
        await server.close_all_connections()
        self.store.close()

    async def _listen(self, server: HTTPServer, port: int, host: str) -> None:
        """Listen, waiting up to ``bind_timeout`` seconds for the port: the service of a hub that was
        killed may hold it until it notices (:meth:`_stop_when_orphaned`)."""
        deadline = asyncio.get_running_loop().time() + self.bind_timeout
        while True:
            try:
                server.listen(port, host)
                return
            except OSError as e:
                if e.errno != errno.EADDRINUSE or asyncio.get_running_loop().time() > deadline:
                    self.exit_with(
                        f"The quotas service cannot listen on {host}:{port}: {e.strerror}. Another program uses"
                        " the port: stop it, or set AIDC_QUOTAS_PORT to a free port."
                    )
                await asyncio.sleep(0.5)

    async def _stop_when_orphaned(self, stop: asyncio.Event) -> None:
        """Stop when the hub that started this service is gone (killed: it could not stop us), so
        the hub's next start can run its own service, with its new token, on the same port."""
        parent = os.getppid()
        while not stop.is_set():
            await asyncio.sleep(1)
            if os.getppid() != parent:
                self.log.warning("The hub that started the quotas service (pid %d) is gone; stopping", parent)
                stop.set()


def _utcnow() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


def main(argv: list[str] | None = None) -> None:
    QuotasService.launch_instance(argv)

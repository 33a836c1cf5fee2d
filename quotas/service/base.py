"""What every handler of the quotas service shares: who the caller is, what they may do, and
errors as JSON that a person can act on.

The caller is identified by the hub, never by anything the client sends: a browser through the
OAuth cookie this service sets after JupyterHub's login (:class:`HubOAuth`), a script through
``Authorization: token <JupyterHub API token>``. The hub's user model gives the name, whether
they are a platform admin (JupyterHub ``admin``) and their JupyterHub groups; ``tenants.yaml``
says which tenants they are a member or an admin of, and so do their JupyterHub roles
``tenant-admin-<tenant>`` (which OIDC logins get from the provider's groups: see
authenticators/oidc.py), asked of the hub with the service's own token (:class:`HubRoles`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, TypeVar
from urllib.parse import quote

from jupyterhub.services.auth import HubOAuth, HubOAuthenticated, UserNotAllowed
from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPClientError
from tornado.ioloop import IOLoop
from tornado.log import app_log

from i18n import COOKIE, Text, _, choose, translate

from ..culler import server_label
from ..model import PlatformConfig, Tenant
from ..policy import limit_applies
from ..quantity import format_number
from ..rbac import tenant_role_name
from ..snapshot import PlatformHolder
from ..store import Run, ServerKey, Store

T = TypeVar("T")
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True)
class Caller:
    """The person behind a request, as the hub and ``tenants.yaml`` know them."""

    name: str
    admin: bool  # a platform admin (JupyterHub admin): may do everything
    groups: tuple[str, ...]  # their JupyterHub groups
    tenants_admin: frozenset[str]  # tenants whose ``admins:`` list them
    tenants_member: frozenset[str]  # tenants they belong to (by name or by group; admins included)

    @classmethod
    def from_hub(cls, model: Mapping[str, Any], config: PlatformConfig, roles: Iterable[str] = ()) -> Caller:
        """The caller of a hub user model (``GET /hub/api/user``) with their JupyterHub ``roles``.
        A service token is nobody."""
        name = str(model.get("name", ""))
        if model.get("kind", "user") != "user":
            return cls(name, False, (), frozenset(), frozenset())
        groups = tuple(sorted(str(g) for g in model.get("groups") or ()))
        held = frozenset(roles)
        admin_of = frozenset(t.id for t in config.tenants.values() if t.has_admin(name, held, {tenant_role_name(t.id)}))
        return cls(
            name=name,
            admin=bool(model.get("admin", False)),
            groups=groups,
            tenants_admin=admin_of,
            tenants_member=frozenset(
                t.id for t in config.tenants.values() if t.has_member(name, groups, admin=t.id in admin_of)
            ),
        )

    def can_read_tenant(self, tenant: str) -> bool:
        """May see the tenant's summary (members see totals only; see :meth:`can_admin_tenant`)."""
        return self.admin or tenant in self.tenants_admin or tenant in self.tenants_member

    def can_admin_tenant(self, tenant: str) -> bool:
        """May read and set the tenant's limits and see everybody's usage and servers in it."""
        return self.admin or tenant in self.tenants_admin

    def acts_on_server(self, tenant: str, owner: str) -> bool:
        """May see and stop a server that ``owner`` runs, charged to ``tenant``. ``tenant`` must be
        the hub's own record of the server (its open run, written at admission), never a request's:
        a person in two tenants has servers charged to each, and each tenant's admins act on theirs
        alone. The one check of every route that shows or stops a server."""
        return self.can_admin_tenant(tenant) or owner == self.name

    def role_in(self, tenant: str) -> str:
        """``"admin"`` (tenant admin), ``"platform-admin"``, ``"member"`` or ``""`` (none)."""
        if tenant in self.tenants_admin:
            return "admin"
        if self.admin:
            return "platform-admin"
        return "member" if tenant in self.tenants_member else ""

    def sees_subject(self, tenant: str, kind: str, subject: str) -> bool:
        """May see the limit, usage or servers of user/group ``subject`` in ``tenant``."""
        if self.can_admin_tenant(tenant):
            return True
        return tenant in self.tenants_member and limit_applies(kind, subject, self.name, self.groups)


class ApiError(web.HTTPError):
    """An error answered as ``{"status", "message", "problems"}``; ``message`` and ``problems`` are
    for people: :class:`i18n.Text` sentences (or plain strings), said in the request's language
    when answered (:meth:`BaseHandler.write_error`)."""

    def __init__(self, status: int, message: str, problems: Sequence[str] | None = None):
        super().__init__(status, reason=None)
        self.message = message
        self.problems = list(problems or [])


class HubRoles:
    """The JupyterHub roles of a user (``GET /hub/api/users/<name>``, scope ``read:roles:users``),
    asked with the service's token and kept ``ttl`` seconds, so a role taken away at a login counts
    within that time. If the hub cannot say, nobody gets a role from it (names in tenants.yaml still
    count): the caller gets fewer rights, never more."""

    def __init__(self, api_url: str, token: str, ttl: float = 10.0):
        self.api_url, self.token, self.ttl = api_url.rstrip("/"), token, ttl
        self._cache: dict[str, tuple[float, frozenset[str]]] = {}

    async def of(self, name: str) -> frozenset[str]:
        now = IOLoop.current().time()
        cached = self._cache.get(name)
        if cached and now - cached[0] < self.ttl:
            return cached[1]
        try:
            response = await AsyncHTTPClient().fetch(
                f"{self.api_url}/users/{quote(name, safe='')}",
                headers={"Authorization": f"token {self.token}"},
                request_timeout=10,
            )
            roles = frozenset(str(r) for r in json.loads(response.body).get("roles") or ())
        except (HTTPClientError, OSError, ValueError) as e:
            app_log.warning("cannot read the roles of %s from the hub (%s): only tenants.yaml's admins count", name, e)
            return frozenset()
        self._cache[name] = (now, roles)
        return roles


class BaseHandler(HubOAuthenticated, web.RequestHandler):
    """A request to the quotas service. ``prepare`` identifies the caller with the hub."""

    # the caller's saved language (None: never chose, or not a person), read once in ``prepare``
    saved_locale: str | None = None

    # -- identity -----------------------------------------------------------------------------

    @property
    def hub_auth(self) -> HubOAuth:
        auth: HubOAuth = self.settings["hub_auth"]
        return auth

    @hub_auth.setter
    def hub_auth(self, auth: HubOAuth) -> None:  # HubAuthenticated has a setter; ours is fixed
        why = "the quotas service's HubOAuth comes from the application settings"  # i18n: for developers
        raise AttributeError(why)

    async def prepare(self) -> None:
        """Ask the hub who this is (cached by HubAuth), without blocking the event loop."""
        self._xsrf_ready = True
        model = await self.hub_auth.get_user(self, sync=False)
        self._not_allowed = False
        user = None
        if model:
            try:
                user = self.check_hub_user(model)
            except UserNotAllowed:
                self._not_allowed = True
        self._hub_auth_user_cache = user
        self.current_user = user
        self._roles: frozenset[str] = frozenset()
        if user and user.get("kind", "user") == "user" and not user.get("admin"):
            self._roles = await self.settings["hub_roles"].of(str(user.get("name", "")))
        if user and self.request.method == "GET" and not getattr(self, "_token_authenticated", False):
            self.xsrf_token  # noqa: B018 - sets the _xsrf cookie that the browser's writes must echo
        self.saved_locale = None
        if user and user.get("kind", "user") == "user":
            self.saved_locale = await self.blocking(self.store.locale_of, str(user.get("name", "")))
        self._language = self._choose_language(self.saved_locale)

    def _choose_language(self, saved: str | None) -> str:
        return choose(self.get_cookie(COOKIE), saved, accept_language=self.request.headers.get("Accept-Language"))

    @property
    def language(self) -> str:
        """The language of this request's page and messages (``"en"``, ``"ko"``): the browser's
        ``aidc-lang`` cookie, else the caller's saved choice, else ``Accept-Language``, else English
        (:func:`i18n.choose`; docs/i18n.md). Decided once, in :meth:`prepare`; a request that fails
        before it knows the caller goes without the saved choice."""
        chosen: str | None = getattr(self, "_language", None)
        if chosen is None:
            chosen = self._language = self._choose_language(None)
        return chosen

    def say(self, value: object) -> str:
        """``value`` (a :class:`i18n.Text`, or a plain string) in this request's language."""
        return translate(value, self.language)

    def check_xsrf_cookie(self) -> None:
        """Browsers (cookie) must send the ``_xsrf`` cookie's value as ``X-XSRFToken`` on writes;
        token-authenticated scripts need not. Tornado asks before :meth:`prepare` knows which of
        the two this is, so the check runs when HubOAuth reads the cookie, during ``prepare``."""
        if not getattr(self, "_xsrf_ready", False):
            return
        self.hub_auth.check_xsrf_cookie(self)

    @property
    def caller(self) -> Caller:
        """The identified caller. Without one: a browser opening a page (GET, Accept: text/html, no
        Authorization header) is sent through the hub's login and back; anything else gets a 403
        that says how to authenticate."""
        cached: Caller | None = getattr(self, "_caller", None)
        if cached is not None:
            return cached
        model = self.current_user
        if not model:
            if self._is_browser_navigation():
                self.redirect(self.get_login_url())
                raise web.Finish()
            raise ApiError(403, self._why_anonymous())
        caller = Caller.from_hub(model, self.config, getattr(self, "_roles", ()))
        self._caller = caller
        return caller

    def _is_browser_navigation(self) -> bool:
        headers = self.request.headers
        if self.request.method not in ("GET", "HEAD") or headers.get("Authorization"):
            return False
        if getattr(self, "_not_allowed", False):
            return False  # logged in, but the hub says no: a redirect would loop
        return headers.get("Sec-Fetch-Mode") == "navigate" or "text/html" in headers.get("Accept", "")

    def _why_anonymous(self) -> Text:
        if getattr(self, "_not_allowed", False):
            return _(
                "Your token or login does not allow access to the quotas service (it needs the scope"
                " access:services!service=quotas). Create a token without restricted scopes at /hub/token."
            )
        if self.request.headers.get("Authorization"):
            return _(
                "The hub does not accept the token in the Authorization header (expired, revoked or mistyped)."
                " Create a new one at /hub/token and send it as 'Authorization: token <token>'."
            )
        fetch_mode = self.request.headers.get("Sec-Fetch-Mode", "navigate")
        if (self.request.method in WRITE_METHODS or fetch_mode != "navigate") and self.hub_auth._get_token_cookie(self):
            return _(
                "Browser requests that change something, and scripts in a page (fetch), must send the value of"
                " the _xsrf cookie in the X-XSRFToken header. Reload the page and try again."
            )
        return _(
            "You are not logged in. Log in to JupyterHub (/hub/login) and open this page again, or send a"
            " JupyterHub API token as 'Authorization: token <token>' (create one at /hub/token)."
        )

    # -- shared state -------------------------------------------------------------------------

    @property
    def log(self) -> logging.Logger:
        log: logging.Logger = self.settings.get("log", app_log)
        return log

    @property
    def store(self) -> Store:
        store: Store = self.settings["store"]
        return store

    @property
    def config(self) -> PlatformConfig:
        """The platform config in force when this request began, the same for all of it (a reload,
        on SIGHUP, swaps the service's :class:`~quotas.snapshot.PlatformHolder` between requests)."""
        if self._config is None:
            holder: PlatformHolder = self.settings["platform"]
            self._config = holder.config
        return self._config

    _config: PlatformConfig | None = None

    def now(self) -> datetime:
        return datetime.now(UTC)

    def utilizations(self) -> Mapping[ServerKey, Sequence[tuple[datetime, float]]]:
        """The last hour's GPU utilization of each running GPU server, as this service's culler read
        it (:meth:`quotas.culler.Culler.utilizations`); {} when it runs no culler. Not filtered: the
        caller shows only servers it may see."""
        culler = self.settings.get("culler")
        return culler.utilizations() if culler is not None else {}

    async def blocking(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a store call in a worker thread: a database that waits for a lock (another writer,
        PostgreSQL far away) must not stall every other request of the service."""
        return await IOLoop.current().run_in_executor(None, fn, *args)

    # -- tenants ------------------------------------------------------------------------------

    def tenant_to_read(self, tenant_id: str) -> Tenant:
        """The tenant the caller may read, else 403 (404 for callers who may see every tenant)."""
        caller = self.caller
        tenant = self.config.tenants.get(tenant_id)
        if caller.admin and tenant is None:
            known = ", ".join(self.config.tenants) or _("none")
            raise ApiError(
                404, _("There is no tenant {tenant} (tenants: {known}).", tenant=repr(tenant_id), known=known)
            )
        if tenant is None or not caller.can_read_tenant(tenant_id):
            raise ApiError(
                403,
                _(
                    "You ({name}) are not a member or an admin of tenant {tenant}, so you cannot see it."
                    " Ask a platform admin if you should be.",
                    name=caller.name,
                    tenant=repr(tenant_id),
                ),
            )
        return tenant

    def tenant_to_admin(self, tenant_id: str, what: str) -> Tenant:
        """The tenant the caller administers (``what`` they wanted, a verb phrase such as
        ``_("set limits")``, for the refusal), else 403/404."""
        tenant = self.tenant_to_read(tenant_id)
        caller = self.caller
        if not caller.can_admin_tenant(tenant.id):
            raise ApiError(
                403,
                _(
                    "Only admins of tenant {tenant} ({admins}) and platform admins can {what};"
                    " you ({name}) are a member. Ask a tenant admin.",
                    tenant=tenant.id,
                    admins=tenant.admin_contact(),
                    what=what,
                    name=caller.name,
                ),
            )
        return tenant

    async def server_to_act_on(self, tenant_id: str, user: str, server: str) -> Run:
        """The open run of server ``user``/``server`` charged to ``tenant_id`` by the hub's own
        record (written at admission), if the caller may see and stop it
        (:meth:`Caller.acts_on_server`); else 403 (a tenant they cannot see) or 404 (no such server
        in the tenant, or one they may not see: the answers are the same, so nothing leaks)."""
        tenant = self.tenant_to_read(tenant_id)
        caller = self.caller
        runs = await self.blocking(self.store.open_runs, tenant.id)
        for run in runs:
            held = run.holding
            if (held.user, held.server) == (user, server) and caller.acts_on_server(held.tenant, held.user):
                return run
        raise ApiError(
            404,
            _(
                "There is no {label} charged to tenant {tenant} that you ({name}) may see. A server"
                " is charged to the tenant it was started in; its admins see it, and so does its owner"
                " (GET api/tenants/{tenant}/servers lists the ones you may see).",
                label=server_label(user, server),
                tenant=tenant.id,
                name=caller.name,
            ),
        )

    # -- input and output ---------------------------------------------------------------------

    def json_body(self) -> Any:
        """The request body as JSON, else 400 saying where it broke."""
        raw = self.request.body
        if not raw.strip():
            raise ApiError(400, _("The request has no body: send a JSON object."))
        try:
            return json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise ApiError(400, _("The body is not UTF-8 text: send a JSON object.")) from None
        except json.JSONDecodeError as e:
            raise ApiError(
                400,
                _(
                    "The body is not valid JSON: {error} (line {line}, column {column}).",
                    error=e.msg,
                    line=e.lineno,
                    column=e.colno,
                ),
            ) from None

    def write_json(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=UTF-8")  # i18n: a protocol value
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(data, default=to_json, indent=1, sort_keys=False))

    def error_message(self, status_code: int, **kwargs: Any) -> tuple[str, list[str]]:
        """What an error says to people, in the request's language: its message and problems."""
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, ApiError):
            message, problems = exc.message, exc.problems
        elif isinstance(exc, web.HTTPError) and exc.log_message:
            message, problems = _http_error_message(exc), []
        elif status_code >= 500:
            message, problems = FAILED, []
        else:
            message, problems = self._reason, []
        return self.say(message), [self.say(p) for p in problems]

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        message, problems = self.error_message(status_code, **kwargs)
        self.set_header("Content-Type", "application/json; charset=UTF-8")  # i18n: a protocol value
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps({"status": status_code, "message": message, "problems": problems}))


FAILED = _("The quotas service failed; the error is in its log. Try again later.")


def _http_error_message(exc: web.HTTPError) -> str:
    text = exc.log_message or ""
    try:
        return text % exc.args if exc.args else text
    except (TypeError, ValueError):
        return text


def to_json(value: Any) -> Any:
    """JSON for the values the API returns: decimals as exact strings, times in ISO 8601 (UTC)."""
    if isinstance(value, Decimal):
        return format_number(value)
    if isinstance(value, datetime):
        return isoformat(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, frozenset | set | tuple):
        return sorted(value) if isinstance(value, frozenset | set) else list(value)
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")  # i18n: a programming error


def isoformat(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")

"""The hub's server REST routes with bodies checked: ``PUT`` (create a named server without starting
it) and ``PATCH`` (rename it, set its options) refuse unknown keys and malformed options (400), as
``POST`` does (:meth:`spawner.tenancy.TenantSpawnerMixin.check_request_body`).

JupyterHub 5's handler drops a ``PUT`` body's unknown keys silently and stores any options, and
answers an unknown ``PATCH`` key with a 500 (it joins a set). :func:`install` puts
:class:`CheckedServerAPIHandler` in its place in JupyterHub's route table; it runs from the hub's
config file, before the hub builds its routes.
"""

from __future__ import annotations

import json
from typing import Any

from jupyterhub import apihandlers
from jupyterhub.apihandlers.users import UserServerAPIHandler
from jupyterhub.scopes import needs_scope
from tornado import web

from i18n import DEFAULT_LOCALE, _, translate

from .profiles import EDIT_BODY_KEYS, SPAWN_BODY_KEYS, OptionsRefused, check_option_shape, check_spawn_body


def check_server_body(method: str, raw: bytes | None) -> None:
    """Raise :class:`OptionsRefused` (400) for a ``PUT`` or ``PATCH`` body JupyterHub would take
    with keys it ignores or options that cannot be valid; an empty body is JupyterHub's to judge."""
    if not raw:
        return
    try:
        body = json.loads(raw)
    except ValueError:
        raise OptionsRefused(400, _("The request body is not JSON.")) from None
    if not isinstance(body, dict):
        raise OptionsRefused(400, _("The request body must be a JSON object."))
    if method == "PATCH":
        check_spawn_body(body, EDIT_BODY_KEYS)
        if "user_options" in body:
            check_option_shape(body["user_options"])
        return
    check_spawn_body(body, SPAWN_BODY_KEYS)
    check_option_shape(body["user_options"] if any(k in body for k in SPAWN_BODY_KEYS) else body)


class CheckedServerAPIHandler(UserServerAPIHandler):  # type: ignore[misc]
    """JupyterHub's ``/api/users/{name}/server[s/{server}]`` with ``PUT`` and ``PATCH`` bodies checked
    after the caller's scopes (a caller without them learns nothing from the body check)."""

    def _check(self, user_name: str, server_name: str) -> None:
        try:
            check_server_body(self.request.method or "", self.request.body)
        except OptionsRefused as e:
            error = web.HTTPError(e.status, str(e.message))
            error.jupyterhub_message = translate(e.message, self._locale(user_name, server_name))  # type: ignore[attr-defined]
            raise error from None

    def _locale(self, user_name: str, server_name: str) -> str:
        """The language of the server's person, as its spawner knows it (:meth:`spawner.tenancy.
        TenantSpawnerMixin.locale`); English when the hub has no spawner of theirs at hand (none is
        made to find out)."""
        user = self.find_user(user_name)
        spawners = getattr(user, "spawners", None) or {}
        spawner = spawners.get(server_name) or spawners.get("")  # dict.get: never makes a spawner
        locale = getattr(spawner, "locale", None)
        return str(locale()) if callable(locale) else DEFAULT_LOCALE

    @needs_scope("start:servers")  # type: ignore[misc]
    async def put(self, user_name: str, server_name: str = "") -> Any:
        self._check(user_name, server_name)
        return await super().put.__wrapped__(self, user_name, server_name)

    @needs_scope("start:servers")  # type: ignore[misc]
    async def patch(self, user_name: str, server_name: str = "") -> Any:
        self._check(user_name, server_name)
        return await super().patch.__wrapped__(self, user_name, server_name)


def install() -> None:
    """Route the server API to :class:`CheckedServerAPIHandler` (idempotent)."""
    routes = apihandlers.default_handlers
    for i, route in enumerate(routes):
        if route[1] is UserServerAPIHandler:
            routes[i] = (route[0], CheckedServerAPIHandler, *route[2:])

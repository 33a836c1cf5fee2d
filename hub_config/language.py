"""The hub's pages in the person's language (issue 19).

Every page JupyterHub renders gets ``aidc_locale`` (the language it is said in), ``aidc_locales``
(the switcher's choices) and ``aidc_language_url`` (the switcher's link) in its template namespace;
the templates say their sentences with ``_()`` (:mod:`i18n.jinja`, loaded through
``JupyterHub.jinja_environment_options``).

The language of a request (:func:`request_locale`): the browser's ``aidc-lang`` cookie (the choice
made in this browser), else the person's saved choice (the quotas database: made in another browser,
or on the quotas page), else the browser's ``Accept-Language``, else English. Choosing
(``GET /hub/language?lang=ko&next=...``, the switcher on every page) sets the cookie and, for a
logged-in person, saves the choice; a logged-in page whose cookie disagrees with the saved choice
saves the cookie's, so the SSH gateway, the API and JupyterLab follow the choice made before login.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode, urlparse

from jupyterhub.handlers.base import BaseHandler

from i18n import COOKIE, LOCALE_NAMES, LOCALES, choose, normalize
from quotas.store import Store

COOKIE_MAX_AGE_DAYS = 365
_STORES: dict[str, Store] = {}


def _store(db_url: str) -> Store:
    if db_url not in _STORES:
        _STORES[db_url] = Store(db_url)
    return _STORES[db_url]


def _person(handler: BaseHandler) -> str | None:
    user = handler.current_user
    if user is None or getattr(user, "kind", "user") != "user":
        return None
    return str(user.name)


def request_locale(handler: BaseHandler, db_url: str) -> str:
    """The language to speak to the person behind ``handler``'s request (see the module's doc);
    saves a logged-in person's cookie choice when it differs from the saved one."""
    cached = getattr(handler, "_aidc_locale", None)
    if cached:
        return str(cached)
    cookie = normalize(handler.get_cookie(COOKIE))
    person = _person(handler)
    saved = _store(db_url).locale_of(person) if person else None
    if person and cookie and cookie != saved:
        _store(db_url).set_locale(person, cookie, datetime.now(UTC))
    locale = choose(cookie, saved, accept_language=handler.request.headers.get("Accept-Language"))
    handler._aidc_locale = locale  # type: ignore[attr-defined]
    return locale


def _local_next(handler: BaseHandler, raw: str | None) -> str:
    """Where to go back after switching: a path on this hub's origin, else the hub's home."""
    home = handler.hub.base_url + "home"
    if not raw:
        return home
    parsed = urlparse(raw)
    if parsed.scheme or parsed.netloc or not parsed.path.startswith(handler.base_url) or "\\" in raw:
        return home
    return raw


class LanguageHandler(BaseHandler):
    """``GET /hub/language?lang=ko&next=/hub/spawn``: choose the language (the switcher's link)."""

    def initialize(self, db_url: str) -> None:
        self.db_url = db_url

    def get(self) -> None:
        locale = normalize(self.get_argument("lang", ""))
        target = _local_next(self, self.get_argument("next", ""))
        if locale is None:
            # an unknown language changes nothing; the page says so in the language it was in
            self.redirect(target)
            return
        self.set_cookie(COOKIE, locale, path="/", expires_days=COOKIE_MAX_AGE_DAYS, samesite="Lax")
        person = _person(self)
        if person:
            _store(self.db_url).set_locale(person, locale, datetime.now(UTC))
        self.redirect(target)


def language_url(handler: BaseHandler, locale: str) -> str:
    """The switcher's link to ``locale`` from the page of ``handler``'s request."""
    return f"{handler.hub.base_url}language?" + urlencode({"lang": locale, "next": handler.request.uri or ""})


def install(db_url: str) -> None:
    """Add the language variables to every JupyterHub page's template namespace."""
    original = BaseHandler.template_namespace
    getter = getattr(original.fget, "__wrapped__", original.fget)

    @functools.wraps(getter)
    def template_namespace(self: BaseHandler) -> dict[str, Any]:
        ns: dict[str, Any] = getter(self)
        locale = request_locale(self, db_url)
        ns.update(
            aidc_locale=locale,
            aidc_locales=[(code, LOCALE_NAMES[code]) for code in LOCALES],
            aidc_language_url=functools.partial(language_url, self),
        )
        return ns

    BaseHandler.template_namespace = property(template_namespace)  # type: ignore[method-assign,assignment]


def extra_handlers(db_url: str) -> list[tuple[str, type, dict[str, Any]]]:
    """``JupyterHub.extra_handlers``: the language switcher."""
    return [(r"/language", LanguageHandler, {"db_url": db_url})]

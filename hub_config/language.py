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
saves the cookie's, and so does the login itself (:func:`remember_at_login`), so the SSH gateway, the
API and JupyterLab follow a choice made on the login page. A person who never chose gets their
browser's language saved as theirs (until they choose), so the spawner's refusals, the SSH gateway
and JupyterLab speak the language of the pages they read.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode, urlsplit

from jinja2 import Environment, pass_context
from jinja2.runtime import Context
from jupyterhub.handlers.base import BaseHandler
from sqlalchemy.exc import SQLAlchemyError

from i18n import COOKIE, LOCALE_NAMES, LOCALES, choose, negotiate, normalize
from i18n import jinja as i18n_jinja
from quotas.store import Store

from .jupyterhub_strings import STATUS

COOKIE_MAX_AGE_DAYS = 365
_MAX_NEXT = 2048  # characters of a ``next`` address; a longer one goes to the hub's home
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


def _remember(store: Store, person: str, cookie: str | None, browser: str | None, saved: str | None) -> None:
    """Save ``person``'s language from now on: what they chose in this browser (``cookie``), else,
    if they never chose (``saved`` is None), their browser's, so the spawner, the SSH gateway and
    JupyterLab speak it too."""
    remembered = cookie or (browser if saved is None else None)
    if remembered and remembered != saved:
        store.set_locale(person, remembered, datetime.now(UTC))


def request_locale(handler: BaseHandler, db_url: str) -> str:
    """The language to speak to the person behind ``handler``'s request (see the module's doc);
    saves a logged-in person's cookie choice when it differs from the saved one."""
    cached = getattr(handler, "_aidc_locale", None)
    if cached:
        return str(cached)
    cookie = normalize(handler.get_cookie(COOKIE))
    person = _person(handler)
    saved = None
    browser = negotiate(handler.request.headers.get("Accept-Language"))
    try:
        if person:
            saved = _store(db_url).locale_of(person)
            _remember(_store(db_url), person, cookie, browser, saved)
    except SQLAlchemyError as e:
        # the page is still shown (its error page too), in the browser's language
        handler.log.warning("Cannot read or save %s's language in the quotas database: %s", person, e)
    locale = choose(cookie, saved, browser)
    handler._aidc_locale = locale  # type: ignore[attr-defined]
    return locale


def local_next(raw: str | None, base_url: str, home: str) -> str:
    """Where to go back after switching: ``raw`` when it is a path on this hub's origin under
    ``base_url`` (JupyterHub's, ``/`` by default: the hub's pages and the quotas page), else ``home``.

    Refused: another origin (``http://evil``, ``//evil``, ``///evil``: browsers read any run of
    slashes as an authority), backslashes (browsers read them as slashes), and control characters
    and spaces (browsers drop tabs and newlines in an address: ``/<tab>/evil`` would be ``//evil``)."""
    if not raw or len(raw) > _MAX_NEXT:
        return home
    if "\\" in raw or any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in raw):
        return home
    if not raw.startswith(base_url) or raw.startswith("//"):
        return home
    parts = urlsplit(raw)
    if parts.scheme or parts.netloc or not parts.path.startswith(base_url):
        return home
    return raw


def _local_next(handler: BaseHandler, raw: str | None) -> str:
    return local_next(raw, handler.base_url, handler.hub.base_url + "home")


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
    """The switcher's link to ``locale`` from the page of ``handler``'s request: back to the same
    page, or to ``handler.aidc_language_next`` where the page cannot be asked for again (the answer
    to a login's callback)."""
    back = getattr(handler, "aidc_language_next", None) or handler.request.uri or ""
    return f"{handler.hub.base_url}language?" + urlencode({"lang": locale, "next": back})


def remember_at_login(db_url: str) -> Callable[[Any, BaseHandler, dict[str, Any]], dict[str, Any]]:
    """``Authenticator.post_auth_hook``: a language chosen before login (on the login page: the
    cookie) becomes the person's saved choice as they log in, even when the login goes straight to
    their server rather than to a hub page; a person who never chose gets their browser's
    (``Accept-Language``) saved, so that a refusal of the spawner is in the page's language."""

    def hook(authenticator: Any, handler: BaseHandler, authentication: dict[str, Any]) -> dict[str, Any]:
        cookie = normalize(handler.get_cookie(COOKIE)) if handler is not None else None
        browser = negotiate(handler.request.headers.get("Accept-Language")) if handler is not None else None
        name = authentication.get("name") if authentication else None
        if (cookie or browser) and name:
            try:
                store = _store(db_url)
                _remember(store, str(name), cookie, browser, store.locale_of(str(name)))
            except SQLAlchemyError as e:  # a language is no reason to refuse a login
                authenticator.log.warning("Cannot save %s's language in the quotas database: %s", name, e)
        return authentication

    return hook


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
            # the error page's heading where JupyterHub has none (a bare 404): the status's phrase
            aidc_http_status=STATUS,
        )
        return ns

    BaseHandler.template_namespace = property(template_namespace)  # type: ignore[method-assign,assignment]


def extra_handlers(db_url: str) -> list[tuple[str, type, dict[str, Any]]]:
    """``JupyterHub.extra_handlers``: the language switcher."""
    return [(r"/language", LanguageHandler, {"db_url": db_url})]


@pass_context
def _say_message(context: Context, msgid: Any, /, **values: Any) -> str:
    """``_()`` on the hub's pages: :func:`i18n.jinja.gettext`, which also takes a message made
    elsewhere (``{{ _(login_error) }}``: JupyterHub's fixed English, a spawner's refusal): a known
    one in the page's language, any other as it is, braces of its own included."""
    if msgid is None:
        return ""
    if not isinstance(msgid, str):
        msgid = str(msgid)
    try:
        return str(i18n_jinja.gettext(context, msgid, **values))
    except (KeyError, IndexError, ValueError):
        # not a sentence of the catalogs ("{" of a Python repr in an error): shown as it came
        return str(msgid)


class Extension(i18n_jinja.Extension):
    """The templates' ``_()`` (:mod:`i18n.jinja`) for JupyterHub's pages, where ``_(message)`` says
    messages that JupyterHub and the spawners pass to its templates (:func:`_say_message`)."""

    def __init__(self, environment: Environment):
        super().__init__(environment)
        environment.globals["gettext"] = _say_message


EXTENSION = f"{Extension.__module__}.{Extension.__qualname__}"

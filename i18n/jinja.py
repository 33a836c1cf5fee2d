"""Jinja2 templates in the person's language: the hub's pages and the quotas page.

A template says ``{{ _("Start my server") }}`` (``{{ _("{n} GPUs", n=4) }}`` with values, never
Jinja's ``{% trans %}``) and ``{{ reason|say }}`` for a :class:`i18n.Text` made in Python. Both read
the language from the template's ``aidc_locale`` variable, which each page handler sets.
Babel extracts the templates' ``_()`` calls (``make i18n``; babel.cfg).
"""

from __future__ import annotations

from typing import Any

from jinja2 import Environment, pass_context
from jinja2.ext import InternationalizationExtension
from jinja2.runtime import Context

from . import DEFAULT_LOCALE, Text, say

LOCALE_VAR = "aidc_locale"


def _locale(context: Context) -> str:
    return str(context.get(LOCALE_VAR) or DEFAULT_LOCALE)


@pass_context
def gettext(context: Context, msgid: str, /, **values: Any) -> str:
    """``_("...")`` in a template: the sentence in the page's language (``_(text)`` of a
    :class:`i18n.Text` says it in that language)."""
    if isinstance(msgid, Text):
        return msgid.say(_locale(context))
    return Text(msgid, values).say(_locale(context))


@pass_context
def ngettext(context: Context, singular: str, plural: str, count: int, /, **values: Any) -> str:
    return Text(singular, {"count": count, **values}, plural=plural, count=count).say(_locale(context))


@pass_context
def say_filter(context: Context, value: object) -> str:
    """``{{ value|say }}``: a sentence (or duration, moment) made in Python, in the page's language."""
    return say(value, _locale(context))


class Extension(InternationalizationExtension):
    """Jinja's i18n extension with AIDC Hub's catalogs: ``_()``, ``gettext``, ``ngettext`` and the
    ``say`` filter. Load it by name (``jinja_environment_options={"extensions": [...]}``,
    JupyterHub's ``JupyterHub.jinja_environment_options``) or with :func:`install`."""

    def __init__(self, environment: Environment):
        super().__init__(environment)
        environment.globals.update(gettext=gettext, ngettext=ngettext)
        environment.filters["say"] = say_filter


EXTENSION = f"{Extension.__module__}.{Extension.__qualname__}"


def install(env: Environment) -> None:
    """Give ``env``'s templates ``_()``, ``gettext``, ``ngettext`` and the ``say`` filter."""
    env.add_extension(Extension)

"""Every sentence AIDC Hub shows a person, in English and Korean (issue 19).

The English sentence is the message id, written in the code where the decision is made::

    from i18n import _
    reason = _("Tenant {tenant} uses {used} of {ceiling} {gpu} GPUs.", tenant=t.id, used=4, ceiling=4, gpu="H100")

``reason`` is a :class:`Text`: a ``str`` holding the English sentence (so logs, tests and code that
reads it see English), which also keeps its message id and values, so that the page, API answer or
SSH session that shows it to a person says it in that person's language with :func:`translate`.
Values are said in the same language: a :class:`Text` inside a :class:`Text`, a :class:`Duration`
(``"2h 30m"`` / ``"2시간 30분"``) and a :class:`Moment` (a time of day or a date, in UTC).

The catalogs are gettext ``.po`` files under ``i18n/locale/<lang>/LC_MESSAGES/<domain>.po``, one
domain per part of the platform (``hub``, ``quotas``, ``sshgateway``, ``cli``), extracted and
checked with Babel (``make i18n``; docs/i18n.md). They are compiled with Babel when first used.
A sentence missing from a catalog is said in English: the unit tier's catalog test fails first.

Which language: :func:`choose` of what the person asked for now, what they chose before (the
``aidc-lang`` cookie in a browser, the quotas database for everything else: SSH, API calls,
JupyterLab), the browser's ``Accept-Language``, and English.
"""

from __future__ import annotations

import functools
import io
import json
import os
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, timedelta
from gettext import GNUTranslations, NullTranslations
from pathlib import Path
from typing import Any

LOCALES = ("en", "ko")  # what a person can choose; English is the catalogs' source language
DEFAULT_LOCALE = "en"
LOCALE_NAMES = {"en": "English", "ko": "한국어"}  # each in its own language, as the switchers show them
# Babel's (and JupyterLab's language packs') name of each, for number and date formats
BABEL_LOCALES = {"en": "en_US", "ko": "ko_KR"}
COOKIE = "aidc-lang"  # a browser's choice, on the hub's whole origin (the quotas page reads it too)
DOMAINS = ("hub", "spawner", "policy", "quotas", "sshgateway", "cli")
LOCALE_DIR = Path(__file__).resolve().parent / "locale"

_MAX_ACCEPT = 1024  # characters of an Accept-Language header read; the rest is ignored
_MAX_RANGES = 16
_TAG = re.compile(r"^[A-Za-z]{1,8}([-_][A-Za-z0-9]{1,8})*$")


# ---------------------------------------------------------------- which language


def normalize(tag: object) -> str | None:
    """The supported language of a language tag or POSIX locale name (``"ko-KR"``, ``"ko_KR.UTF-8"``,
    ``"EN"``), or ``None`` for anything else, malformed input included."""
    if not isinstance(tag, str) or len(tag) > 64:
        return None
    tag = tag.strip().split(".", 1)[0].split("@", 1)[0]
    if not _TAG.match(tag):
        return None
    primary = re.split(r"[-_]", tag, maxsplit=1)[0].lower()
    return primary if primary in LOCALES else None


def negotiate(accept_language: str | None) -> str | None:
    """The supported language a browser's ``Accept-Language`` prefers most (``"ko-KR,ko;q=0.9,en;q=0.8"``
    → ``"ko"``), or ``None``. Reads a bounded prefix of the header; malformed ranges are skipped."""
    if not accept_language:
        return None
    best: tuple[float, int, str] | None = None
    for position, part in enumerate(accept_language[:_MAX_ACCEPT].split(",")[:_MAX_RANGES]):
        tag, _sep, params = part.strip().partition(";")
        quality = 1.0
        for param in params.split(";"):
            name, _eq, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = -1.0
        locale = normalize(tag)
        if locale is None or not 0 < quality <= 1:
            continue
        key = (quality, -position, locale)
        if best is None or key[:2] > best[:2]:
            best = key
    return best[2] if best else None


def from_environ(environ: Mapping[str, str] | None = None) -> str:
    """The language of a command's environment, as gettext reads it: ``LANGUAGE`` (a list),
    ``LC_ALL``, ``LC_MESSAGES``, ``LANG``; English when none names a supported one."""
    env = os.environ if environ is None else environ
    for name in ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG"):
        for tag in env.get(name, "").split(":"):
            if tag in ("C", "POSIX"):
                return DEFAULT_LOCALE
            locale = normalize(tag)
            if locale:
                return locale
    return DEFAULT_LOCALE


def choose(*candidates: object, accept_language: str | None = None) -> str:
    """The first supported language among ``candidates`` (most explicit first: asked now, cookie,
    the person's saved choice), else the browser's preference, else English."""
    for candidate in candidates:
        locale = normalize(candidate)
        if locale:
            return locale
    return negotiate(accept_language) or DEFAULT_LOCALE


# ---------------------------------------------------------------- catalogs


@functools.cache
def catalog(locale: str) -> NullTranslations:
    """The merged catalogs of every domain for ``locale``, compiled from the ``.po`` files with
    Babel; English (the message ids) for English and unknown languages."""
    if locale == DEFAULT_LOCALE or locale not in LOCALES:
        return NullTranslations()
    from babel.messages.mofile import write_mo
    from babel.messages.pofile import read_po

    merged: NullTranslations | None = None
    for domain in DOMAINS:
        path = LOCALE_DIR / locale / "LC_MESSAGES" / f"{domain}.po"
        if not path.exists():
            continue
        with path.open("rb") as f:
            po = read_po(f, locale=BABEL_LOCALES[locale], domain=domain)
        buffer = io.BytesIO()
        write_mo(buffer, po, use_fuzzy=False)
        buffer.seek(0)
        translations = GNUTranslations(buffer)
        if merged is None:
            merged = translations
        else:
            merged.add_fallback(translations)
    return merged or NullTranslations()


# ---------------------------------------------------------------- values said in a language


class Duration:
    """A length of time said in a language: the two largest units, ``"1h 5m"`` / ``"1시간 5분"``."""

    UNITS = {
        "en": (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)),
        "ko": (("일", 86400), ("시간", 3600), ("분", 60), ("초", 1)),
    }

    def __init__(self, value: timedelta):
        self.value = value

    def say(self, locale: str) -> str:
        seconds = max(0, int(self.value.total_seconds()))
        parts = []
        for unit, size in self.UNITS.get(locale, self.UNITS[DEFAULT_LOCALE]):
            amount, seconds = divmod(seconds, size)
            if amount:
                parts.append(f"{amount}{unit}")
        return " ".join(parts[:2]) or ("0" + self.UNITS.get(locale, self.UNITS[DEFAULT_LOCALE])[-1][0])

    def __str__(self) -> str:
        return self.say(DEFAULT_LOCALE)

    def to_json(self) -> dict[str, Any]:
        return {"duration": self.value.total_seconds()}


class Moment:
    """A moment said in a language, in UTC: ``style`` ``"time"`` (``14:05:03 UTC``), ``"date"``
    (``2026-12-03`` / ``2026년 12월 3일``) or ``"datetime"``."""

    STYLES = ("time", "date", "datetime")

    def __init__(self, value: datetime | date, style: str = "datetime"):
        if style not in self.STYLES:
            raise ValueError(f"Moment style {style!r} is not one of {self.STYLES}")
        self.value, self.style = value, style

    def say(self, locale: str) -> str:
        value = self.value
        if isinstance(value, datetime):
            value = value.astimezone(UTC)
        if locale == "ko":
            day = f"{value.year}년 {value.month}월 {value.day}일"
            if self.style == "date" or not isinstance(value, datetime):
                return day
            clock = f"{value:%H:%M:%S} (UTC)"
            return clock if self.style == "time" else f"{day} {clock}"
        if self.style == "date" or not isinstance(value, datetime):
            return f"{value:%Y-%m-%d}"
        if self.style == "time":
            return f"{value:%H:%M:%S} UTC"
        return f"{value:%Y-%m-%d %H:%M:%S} UTC"

    def __str__(self) -> str:
        return self.say(DEFAULT_LOCALE)

    def to_json(self) -> dict[str, Any]:
        return {"moment": self.value.isoformat(), "style": self.style}


def say(value: object, locale: str) -> str:
    """``value`` in ``locale``: a :class:`Text`, :class:`Duration` or :class:`Moment` said in it, a
    list of them joined with commas, anything else as ``str()``."""
    if isinstance(value, Text):
        return value.say(locale)
    if isinstance(value, Duration | Moment):
        return value.say(locale)
    if isinstance(value, list | tuple):
        return ", ".join(say(v, locale) for v in value)
    return str(value)


# ---------------------------------------------------------------- sentences


class Text(str):
    """A sentence for people: the ``str`` is its English, :meth:`say` says it in another language.

    Build it with :func:`_` (or :func:`ngettext`), never by concatenation: ``Text + str`` is an
    English-only ``str``. Put one sentence inside another as a value instead."""

    msgid: str
    plural: str | None
    number: int | None  # the count that chose a plural form
    values: dict[str, Any]

    def __new__(
        cls, msgid: str, values: Mapping[str, Any] | None = None, plural: str | None = None, count: int | None = None
    ) -> Text:
        values = dict(values or {})
        text = str.__new__(cls, _render(msgid, values, DEFAULT_LOCALE, plural, count))
        text.msgid, text.plural, text.number, text.values = msgid, plural, count, values
        return text

    def say(self, locale: str) -> str:
        """This sentence in ``locale`` (English for unknown ones)."""
        return _render(self.msgid, self.values, locale, self.plural, self.number)

    def to_json(self) -> dict[str, Any]:
        """A JSON form that :func:`loads` reads back (to keep a sentence in the database)."""
        values = {k: (v.to_json() if isinstance(v, Text | Duration | Moment) else v) for k, v in self.values.items()}
        out: dict[str, Any] = {"msgid": self.msgid, "values": values}
        if self.plural is not None:
            out.update(plural=self.plural, count=self.number)
        return out

    def __reduce__(self) -> Any:
        return (Text, (self.msgid, self.values, self.plural, self.number))


def _render(msgid: str, values: Mapping[str, Any], locale: str, plural: str | None, count: int | None) -> str:
    translations = catalog(locale)
    if plural is not None:
        template = translations.ngettext(msgid, plural, count if count is not None else 1)
    else:
        template = translations.gettext(msgid)
    said = {k: say(v, locale) for k, v in values.items()}
    try:
        return template.format(**said)
    except (KeyError, IndexError, ValueError):
        # a catalog entry whose placeholders do not match: English rather than no message (the unit tier catches it)
        fallback = plural if plural is not None and count != 1 else msgid
        try:
            return fallback.format(**said)
        except (KeyError, IndexError, ValueError):
            return fallback  # a text that is no template (braces of its own): as it is


def _(msgid: str, /, **values: Any) -> Text:
    """The sentence ``msgid`` (English, ``{name}`` placeholders) with ``values``: see :class:`Text`."""
    return Text(msgid, values)


def ngettext(singular: str, plural: str, count: int, /, **values: Any) -> Text:
    """A sentence whose English depends on ``count`` (``"1 GPU"``, ``"2 GPUs"``); ``{count}`` is set."""
    return Text(singular, {"count": count, **values}, plural=plural, count=count)


def N_(msgid: str) -> str:
    """Marks ``msgid`` for the catalogs where the sentence is made later (a table of reasons):
    ``_(TABLE[key])`` says it."""
    return msgid


def translate(value: object, locale: str) -> str:
    """What a person reading ``locale`` sees of ``value``: see :func:`say`."""
    return say(value, locale)


def join(texts: Iterable[object], locale: str, sep: str = " ") -> str:
    """Sentences said in ``locale`` one after the other."""
    return sep.join(say(t, locale) for t in texts)


def dumps(value: object) -> str:
    """A sentence as the database keeps it: a :class:`Text` as JSON, anything else as it is."""
    if isinstance(value, Text):
        return json.dumps({"aidc-text": value.to_json()}, ensure_ascii=False, separators=(",", ":"))
    return str(value)


def _value(raw: Any) -> Any:
    if isinstance(raw, dict):
        if "msgid" in raw:
            return Text(
                str(raw["msgid"]),
                {k: _value(v) for k, v in dict(raw.get("values") or {}).items()},
                raw.get("plural"),
                raw.get("count"),
            )
        if "duration" in raw:
            return Duration(timedelta(seconds=float(raw["duration"])))
        if "moment" in raw:
            return Moment(datetime.fromisoformat(str(raw["moment"])), str(raw.get("style", "datetime")))
    return raw


def loads(stored: str | None) -> str | None:
    """A sentence :func:`dumps` kept: a :class:`Text` again, or the plain ``str`` older rows hold."""
    if not stored or not stored.startswith('{"aidc-text":'):
        return stored
    try:
        return _value(json.loads(stored)["aidc-text"])
    except (ValueError, KeyError, TypeError):
        return stored

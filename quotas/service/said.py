"""Values the quotas page and API say to people in their language: days, kinds of limits,
and a sentence that begins with a clause.

Each returns an :class:`i18n.Text` (its ``str`` is the English the page always showed), said in
the request's language by :func:`i18n.translate` or a template's ``|say``.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

from i18n import N_, Moment, Text, _, say

MONTHS_SHORT = (
    N_("Jan"),
    N_("Feb"),
    N_("Mar"),
    N_("Apr"),
    N_("May"),
    N_("Jun"),
    N_("Jul"),
    N_("Aug"),
    N_("Sep"),
    N_("Oct"),
    N_("Nov"),
    N_("Dec"),
)
WEEKDAYS_SHORT = (N_("Mon"), N_("Tue"), N_("Wed"), N_("Thu"), N_("Fri"), N_("Sat"), N_("Sun"))
KIND_WORDS = {"user": N_("user"), "group": N_("group")}  # a limit's kind in a sentence
# a limit's fields (limits.SCALAR_FIELDS), as the limits editor labels them
FIELD_WORDS = {"servers": N_("servers"), "cpu": N_("CPU"), "memory": N_("memory"), "gpu_hours": N_("GPU-hours / month")}
# a person's role in a tenant (Caller.role_in), as the page's badges show it
ROLE_WORDS = {"admin": N_("admin"), "platform-admin": N_("platform-admin"), "member": N_("member")}


class Minute(Moment):
    """A moment to the minute, in UTC: ``style`` ``"datetime"`` (``2026-11-20 14:05 UTC`` /
    ``2026년 11월 20일 14:05 (UTC)``), ``"time"`` (``14:05 UTC`` / ``14:05 (UTC)``) or ``"date"``."""

    def say(self, locale: str) -> str:
        value = self.value
        if not isinstance(value, datetime) or self.style == "date":
            return super().say(locale)
        value = value.astimezone(UTC)
        if locale == "ko":
            clock = f"{value:%H:%M} (UTC)"
            return clock if self.style == "time" else f"{value.year}년 {value.month}월 {value.day}일 {clock}"
        return f"{value:%H:%M} UTC" if self.style == "time" else f"{value:%Y-%m-%d %H:%M} UTC"


def day_text(day: date) -> Text:
    """A day of a month's chart: ``"Thu 03 Dec"`` / ``"12월 03일 (목)"``."""
    weekday, month = _(WEEKDAYS_SHORT[day.weekday()]), _(MONTHS_SHORT[day.month - 1])
    return _("{weekday} {day} {month}", weekday=weekday, day=f"{day:%d}", month=month)


def kind_word(kind: str) -> Text:
    """``user`` or ``group`` in a sentence for people (the API's values stay ``user``/``group``)."""
    return _(KIND_WORDS[kind])


def field_word(field: str) -> Text | str:
    """A field of a limit (``servers``, ``cpu``, ...) as the limits editor labels it."""
    return _(FIELD_WORDS[field]) if field in FIELD_WORDS else field


def role_word(role: str) -> Text | str:
    """A role badge: ``admin``, ``platform-admin`` or ``member`` in the page's language."""
    return _(ROLE_WORDS[role]) if role in ROLE_WORDS else role


def capitalized(clause: object, locale: str) -> str:
    """``clause`` said in ``locale`` with its first letter upper case."""
    said = say(clause, locale)
    return said[:1].upper() + said[1:]

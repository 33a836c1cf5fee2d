"""What a person reads on their SSH client, in their language (issue 19, docs/i18n.md).

The gateway learns a person's language when it learns who they are: the quotas service answers
their saved choice with the owner of their key (``api/ssh-keys/lookup?fingerprint=``) or, after a
token login, by name (``?user=``). Every message of their connection is then said in that language,
English when they never chose. Before that (a source refused for too many failed logins), nobody's
choice is known, and a message is said in English followed by Korean. Messages the hub wrote (its
refusals, its spawn progress) are the person's already and pass through as they are.

Where a client shows a message decides how it can be said. A session's stderr and an
authentication banner reach the person's terminal as UTF-8. OpenSSH's client prints the reason of
a disconnect and the reason a channel (a forward) was refused through its own log, which escapes
every byte outside ASCII (``\\354\\227\\260``): to an OpenSSH client those reasons are said in
English, the one language that log shows readably, and a refusal before login also goes out as a
banner in both languages.
"""

from __future__ import annotations

from i18n import BABEL_LOCALES, DEFAULT_LOCALE, LOCALES, translate

# RFC 4646 tags for the language fields of SSH messages (disconnect, channel refusal, banner)
LANGUAGE_TAGS = {locale: tag.replace("_", "-") for locale, tag in BABEL_LOCALES.items()}


def say(text: object, locale: str | None) -> str:
    """``text`` for a person reading ``locale``; ``None`` (who they are, and so their choice, is
    not known yet): in English, then in Korean on the next line (once when both read the same)."""
    if locale is not None:
        return translate(text, locale)
    return "\n".join(dict.fromkeys(translate(text, each) for each in LOCALES))


def language_tag(locale: str | None) -> str:
    """The language field of an SSH message said in ``locale`` (``None``: English first)."""
    return LANGUAGE_TAGS.get(locale or DEFAULT_LOCALE, LANGUAGE_TAGS[DEFAULT_LOCALE])


def escapes_non_ascii(client_version: str) -> bool:
    """Whether the client (its version string, ``SSH-2.0-OpenSSH_9.2p1 Debian-2``) prints disconnect
    and channel-refusal reasons through a log that escapes every byte outside ASCII: OpenSSH's."""
    return client_version.startswith("SSH-2.0-OpenSSH")


def reason(text: object, locale: str | None, client_version: str) -> tuple[str, str]:
    """The reason of a disconnect or of a refused channel, and its language tag, as the person's
    client shows it readably: English for OpenSSH, the person's language (or both) otherwise."""
    if escapes_non_ascii(client_version):
        locale = DEFAULT_LOCALE
    return say(text, locale), language_tag(locale)

"""The catalogs' upkeep with Babel: extract every sentence from the code and the templates, update
the ``.po`` files, and check them (``make i18n``; the unit tier runs :func:`problems`).

    python -m i18n.catalogs update [DOMAIN...]  # new sentences in, removed ones out (then fill msgstr)
    python -m i18n.catalogs check [DOMAIN...]   # every sentence translated, placeholders match; exit 1 if not
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po, write_po

from . import BABEL_LOCALES, DEFAULT_LOCALE, DOMAINS, LOCALE_DIR, LOCALES

REPO = LOCALE_DIR.parent.parent
# which folders' sentences each domain's catalog holds: a file belongs to the domain of the
# longest folder that holds it (quotas/service/ is the quotas service's, the rest of quotas/ policy's)
DOMAIN_SOURCES: dict[str, tuple[str, ...]] = {
    "hub": ("hub_config", "authenticators", "services"),
    "spawner": ("spawner",),
    "policy": ("quotas",),
    "quotas": ("quotas/service",),
    "sshgateway": ("sshgateway",),
    "cli": ("aidc",),
}
assert set(DOMAIN_SOURCES) == set(DOMAINS)
METHOD_MAP = [
    ("**.py", "i18n.catalogs:extract_python"),
    ("**/templates/**.html", "jinja2"),
    ("**/templates/*.html", "jinja2"),
]
OPTIONS_MAP = {
    "**/templates/**.html": {"extensions": "i18n.jinja.Extension"},
    "**/templates/*.html": {"extensions": "i18n.jinja.Extension"},
}
KEYWORDS = {"_": None, "N_": None, "ngettext": (1, 2), "gettext": None}
PLACEHOLDER = re.compile(r"(?<!\{)\{([A-Za-z_][A-Za-z0-9_]*)(?:[!:][^{}]*)?\}")


def extract_python(
    fileobj: Any, keywords: Any, comment_tags: Any, options: Any
) -> Iterator[tuple[int, str, str | tuple[str, ...], list[str]]]:
    """Babel's extraction method for Python, read from the syntax tree: every ``_()``, ``N_()``,
    ``gettext()`` call and ``ngettext()``'s two first arguments whose message is a literal,
    wherever it is nested (Babel's token-based ``python`` method misses a call inside another
    call's keyword argument inside ``_()``)."""
    tree = ast.parse(fileobj.read())
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
        args = [a.value if isinstance(a, ast.Constant) and isinstance(a.value, str) else None for a in node.args]
        if name in ("_", "N_", "gettext") and args and args[0]:
            yield node.lineno, name, args[0], []
        elif name == "ngettext" and len(args) >= 2 and args[0] and args[1]:
            yield node.lineno, name, (args[0], args[1]), []


@dataclass(frozen=True)
class Message:
    msgid: str | tuple[str, str]
    locations: tuple[tuple[str, int], ...]


def domain_of(relative: str) -> str | None:
    """The domain of a file (``"quotas/service/page.py"`` → ``"quotas"``), by the longest folder."""
    best: tuple[int, str] | None = None
    for domain, folders in DOMAIN_SOURCES.items():
        for folder in folders:
            if relative.startswith(folder + "/") and (best is None or len(folder) > best[0]):
                best = (len(folder), domain)
    return best[1] if best else None


def extract(domain: str) -> dict[str | tuple[str, str], Message]:
    """Every sentence of ``domain``'s sources, by message id (a pair for plural ones)."""
    found: dict[str | tuple[str, str], list[tuple[str, int]]] = {}
    for folder in DOMAIN_SOURCES[domain]:
        root = REPO / folder
        for filename, lineno, message, _comments, _context in extract_from_dir(
            str(root), METHOD_MAP, OPTIONS_MAP, keywords=KEYWORDS, comment_tags=(), strip_comment_tags=True
        ):
            if domain_of(f"{folder}/{filename}") != domain:
                continue
            if isinstance(message, tuple):
                if len(message) < 2 or not message[0] or not message[1]:
                    continue
                key: str | tuple[str, str] = (str(message[0]), str(message[1]))
            else:
                if not message:
                    continue
                key = str(message)
            found.setdefault(key, []).append((f"{folder}/{filename}", lineno))
    return {k: Message(k, tuple(v)) for k, v in found.items()}


def po_path(locale: str, domain: str) -> Path:
    return LOCALE_DIR / locale / "LC_MESSAGES" / f"{domain}.po"


def read(locale: str, domain: str) -> Catalog:
    path = po_path(locale, domain)
    if not path.exists():
        return Catalog(locale=BABEL_LOCALES[locale], domain=domain, project="AIDC Hub")
    with path.open("rb") as f:
        return read_po(f, locale=BABEL_LOCALES[locale], domain=domain)


def update(domain: str) -> None:
    """Bring every language's ``domain`` catalog in line with the code: new sentences added
    untranslated, sentences no longer in the code removed."""
    extracted = extract(domain)
    for locale in LOCALES:
        if locale == DEFAULT_LOCALE:
            continue
        old = read(locale, domain)
        new = Catalog(
            locale=BABEL_LOCALES[locale],
            domain=domain,
            project="AIDC Hub",
            version="",
            copyright_holder="AIDC Hub",
            msgid_bugs_address="",
            last_translator="AIDC Hub",
            language_team="",
            creation_date=old.creation_date,
            revision_date=old.revision_date,
            fuzzy=False,
        )
        for key, message in sorted(extracted.items(), key=lambda kv: kv[1].locations[0]):
            previous = old.get(key if isinstance(key, str) else key[0])
            string: Any = previous.string if previous is not None else ("" if isinstance(key, str) else ("", ""))
            new.add(key, string, locations=[(f, n) for f, n in message.locations])
        path = po_path(locale, domain)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as f:
            write_po(f, new, width=100, sort_output=False, include_previous=False)


def placeholders(text: str) -> set[str]:
    return set(PLACEHOLDER.findall(text))


def problems(locale: str = "ko", domains: tuple[str, ...] = DOMAINS) -> Iterator[str]:
    """What keeps ``locale``'s catalogs from saying every sentence: untranslated or fuzzy
    sentences, placeholders that differ from the English, and sentences the code no longer has."""
    seen: dict[str, str] = {}
    for domain in domains:
        extracted = extract(domain)
        catalog = read(locale, domain)
        for key, message in extracted.items():
            msgid = key if isinstance(key, str) else key[0]
            where = "{}:{}".format(*message.locations[0])
            entry = catalog.get(msgid)
            strings = (
                (entry.string,)
                if entry is not None and isinstance(entry.string, str)
                else tuple(entry.string or ())
                if entry
                else ()
            )
            if entry is None or not any(strings) or not all(strings):
                yield f"{domain}: {where}: no {locale} translation of {msgid!r}"
                continue
            if entry.fuzzy:
                yield f"{domain}: {where}: the {locale} translation of {msgid!r} is marked fuzzy"
            english = placeholders(msgid) | (placeholders(key[1]) if isinstance(key, tuple) else set())
            for string in strings:
                if placeholders(string) != english:
                    yield (
                        f"{domain}: {where}: the {locale} translation of {msgid!r} has placeholders"
                        f" {sorted(placeholders(string))}, the English {sorted(english)}"
                    )
            first = strings[0]
            if msgid in seen and seen[msgid] != first:
                yield f"{domain}: {where}: {msgid!r} is translated differently in two catalogs"
            seen.setdefault(msgid, first)
        for entry in catalog:
            if entry.id and (
                entry.id not in extracted and not any(isinstance(k, tuple) and k[0] == entry.id for k in extracted)
            ):
                yield f"{domain}: the {locale} catalog has {entry.id!r}, which the code no longer says (make i18n)"


def main(argv: list[str]) -> int:
    command = argv[1] if len(argv) > 1 else "check"
    domains = tuple(argv[2:]) or DOMAINS
    unknown = [d for d in domains if d not in DOMAINS]
    if unknown:
        print(f"i18n: no domain {', '.join(unknown)}; the domains are {', '.join(DOMAINS)}", file=sys.stderr)
        return 2
    if command == "update":
        for domain in domains:
            update(domain)
        command = "check"
    if command == "check":
        found = list(problems(domains=domains))
        for line in found:
            print(line, file=sys.stderr)
        print(f"i18n: {len(found)} problem(s) in the catalogs", file=sys.stderr)
        return 1 if found else 0
    print("usage: python -m i18n.catalogs [update|check]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))

"""The languages: choosing one, saying a sentence in it, keeping sentences in the database, and the
catalogs themselves (every sentence translated into Korean, placeholders matching, none bypassing).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from jinja2 import Environment

import i18n
from i18n import Duration, Moment, Text, _, choose, dumps, from_environ, loads, negotiate, ngettext, normalize
from i18n.bypass import bypasses
from i18n.catalogs import DOMAIN_SOURCES, domain_of, placeholders, problems
from i18n.jinja import EXTENSION

pytestmark = pytest.mark.unit

# a sentence every catalog run has (hub_config/templates/page.html): its Korean is known here
KNOWN = ("Quotas", "할당량")


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        ("ko", "ko"),
        ("ko-KR", "ko"),
        ("ko_KR.UTF-8", "ko"),
        ("KO", "ko"),
        ("en-US", "en"),
        ("en_GB.utf8@euro", "en"),
        ("fr-FR", None),
        ("", None),
        ("C", None),
        ("ko KR", None),  # a space: not a tag
        ("x" * 65, None),
        ("../../etc/passwd", None),
        (None, None),
        (42, None),
    ],
)
def test_normalize_knows_only_the_supported_languages(tag: object, expected: str | None) -> None:
    assert normalize(tag) == expected


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("ko-KR,ko;q=0.9,en-US;q=0.8,en;q=0.7", "ko"),  # Chromium in Korean
        ("en-US,en;q=0.9,ko;q=0.8", "en"),
        ("fr-FR,fr;q=0.9,ko;q=0.5", "ko"),  # the first supported one
        ("en;q=0.5, ko;q=0.6", "ko"),  # by quality, not order
        ("ko;q=0.8, en;q=0.8", "ko"),  # equal quality: the earlier
        ("ko;q=0, en;q=0.1", "en"),  # q=0 means "not this one"
        ("ko;q=abc", None),
        ("ko;q=2", None),
        ("*", None),
        ("fr", None),
        ("", None),
        (None, None),
        (",,,;;;==", None),
        ("fr," * 2000 + "ko", None),  # only a bounded prefix is read
    ],
)
def test_negotiate_reads_accept_language(header: str | None, expected: str | None) -> None:
    assert negotiate(header) == expected


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, "en"),
        ({"LANG": "ko_KR.UTF-8"}, "ko"),
        ({"LANG": "en_US.UTF-8", "LC_ALL": "ko_KR.UTF-8"}, "ko"),
        ({"LANG": "ko_KR.UTF-8", "LC_MESSAGES": "en_US.UTF-8"}, "en"),
        ({"LANGUAGE": "fr:ko", "LANG": "en_US.UTF-8"}, "ko"),
        ({"LC_ALL": "C", "LANG": "ko_KR.UTF-8"}, "en"),
        ({"LANG": "fr_FR.UTF-8"}, "en"),
    ],
)
def test_the_commands_language_is_gettexts(environ: dict[str, str], expected: str) -> None:
    assert from_environ(environ) == expected


def test_choose_takes_the_most_explicit_choice_first() -> None:
    assert choose("ko", "en", accept_language="en") == "ko"
    assert choose(None, "ko", accept_language="en") == "ko"
    assert choose("bogus", None, accept_language="ko-KR") == "ko"
    assert choose(None, None, accept_language="fr") == "en"
    assert choose() == "en"


def test_a_text_is_its_english_and_says_itself_in_korean() -> None:
    text = _(KNOWN[0])
    assert isinstance(text, str) and text == KNOWN[0]
    assert text.say("ko") == KNOWN[1]
    assert text.say("en") == KNOWN[0]
    assert text.say("fr") == KNOWN[0]  # unknown languages: English
    assert i18n.translate(text, "ko") == KNOWN[1]
    assert i18n.translate("a plain string", "ko") == "a plain string"


def test_values_are_said_in_the_sentences_language() -> None:
    inner = _(KNOWN[0])
    text = _("Not in any catalog: {what} in {left}", what=inner, left=Duration(timedelta(hours=1, minutes=30)))
    assert text == "Not in any catalog: Quotas in 1h 30m"
    # a sentence missing from the catalog is said in English, its values still in Korean
    assert text.say("ko") == "Not in any catalog: 할당량 in 1시간 30분"


@pytest.mark.parametrize(
    ("seconds", "en", "ko"),
    [
        (0, "0s", "0초"),
        (-5, "0s", "0초"),
        (45, "45s", "45초"),
        (3900, "1h 5m", "1시간 5분"),
        (2 * 86400 + 3 * 3600 + 59, "2d 3h", "2일 3시간"),
    ],
)
def test_durations(seconds: int, en: str, ko: str) -> None:
    from quotas.quantity import format_duration

    value = timedelta(seconds=seconds)
    assert Duration(value).say("en") == en == format_duration(value)  # one English, two writers agree
    assert Duration(value).say("ko") == ko


def test_moments_are_in_utc_in_both_languages() -> None:
    moment = datetime(2026, 12, 3, 23, 5, 3, tzinfo=UTC)
    assert Moment(moment, "time").say("en") == "23:05:03 UTC"
    assert Moment(moment, "datetime").say("ko") == "2026년 12월 3일 23:05:03 (UTC)"
    assert Moment(moment, "date").say("en") == "2026-12-03"
    assert Moment(date(2026, 1, 9), "date").say("ko") == "2026년 1월 9일"
    with pytest.raises(ValueError, match="style"):
        Moment(moment, "weekday")


def test_plural_english() -> None:
    assert ngettext("{count} GPU", "{count} GPUs", 1) == "1 GPU"
    assert ngettext("{count} GPU", "{count} GPUs", 4) == "4 GPUs"


def test_a_sentence_kept_in_the_database_is_said_later_in_the_readers_language() -> None:
    text = _(
        "Kept: {what}, {left}, at {when}",
        what=_(KNOWN[0]),
        left=Duration(timedelta(minutes=30)),
        when=Moment(datetime(2026, 12, 3, 1, 2, 3, tzinfo=UTC), "time"),
    )
    kept = loads(dumps(text))
    assert isinstance(kept, Text)
    assert kept == text
    assert kept.say("ko") == "Kept: 할당량, 30분, at 01:02:03 (UTC)"
    assert loads("its GPUs sat idle") == "its GPUs sat idle"  # rows written before issue 19
    assert loads('{"aidc-text": not json') == '{"aidc-text": not json'
    assert loads(None) is None
    assert dumps("plain") == "plain"


def test_templates_say_sentences_in_the_pages_language_and_escape_values() -> None:
    env = Environment(autoescape=True, extensions=[EXTENSION])
    template = env.from_string('{{ _("Quotas") }}|{{ _("Not kept: {v}", v=value) }}|{{ text|say }}|{{ _(text) }}')
    assert (
        template.render(aidc_locale="ko", value="<b>", text=_(KNOWN[0])) == "할당량|Not kept: &lt;b&gt;|할당량|할당량"
    )
    assert template.render(value="x", text=_(KNOWN[0])) == "Quotas|Not kept: x|Quotas|Quotas"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Tenant {tenant} uses {used}", {"tenant", "used"}),
        ("{x:.1f} and {y!r}", {"x", "y"}),
        ("literal {{braces}} and {name}", {"name"}),
        ("none", set()),
    ],
)
def test_placeholders(text: str, expected: set[str]) -> None:
    assert placeholders(text) == expected


def test_every_file_belongs_to_the_domain_of_its_longest_folder() -> None:
    assert domain_of("quotas/service/page.py") == "quotas"
    assert domain_of("quotas/policy.py") == "policy"
    assert domain_of("hub_config/templates/page.html") == "hub"
    assert domain_of("tests/unit/test_i18n.py") is None
    assert set(DOMAIN_SOURCES) == set(i18n.DOMAINS)


def test_every_sentence_has_a_korean_translation_with_the_same_placeholders() -> None:
    found = list(problems("ko"))
    assert not found, "the Korean catalogs (make i18n; docs/i18n.md):\n" + "\n".join(found)


def test_no_sentence_for_people_bypasses_the_catalogs() -> None:
    found = list(bypasses())
    assert not found, "sentences for people outside _() (docs/i18n.md):\n" + "\n".join(found)

"""JupyterLab's default language from the hub (labextension/aidc_jupyterlab/language.py): which
``$AIDC_LOCALE`` counts, the ``default_setting_overrides.json`` written for it, and that
jupyterlab_server reads it as the default of the ``locale`` setting (the hub tier checks a real
workspace: tests/hub/test_jupyterlab_locale.py); and the workspace server's own messages in that
language (handlers.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from string import Formatter

import pytest
from aidc_jupyterlab import handlers, language
from jupyterlab_server.settings_utils import _get_overrides

import i18n

pytestmark = pytest.mark.unit
TRANSLATION = "@jupyterlab/translation-extension:plugin"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("ko", "ko_KR"),
        ("en", "en"),
        (None, None),  # the person never chose: JupyterLab's own default stays
        ("", None),
        ("fr", None),
        ("KO", None),
        ("ko-KR", None),
        ("ko_KR", None),
        (" ko", None),
        ("ko\n", None),
        ("../../etc", None),
    ],
)
def test_only_a_language_of_the_hub_counts(value: str | None, expected: str | None) -> None:
    environ = {} if value is None else {"AIDC_LOCALE": value}
    assert language.lab_locale(environ) == expected


def test_every_language_of_the_hub_has_jupyterlab_s_locale_and_its_language_pack_is_here() -> None:
    assert set(language.LAB_LOCALES) == set(i18n.LOCALES)
    for locale in language.LAB_LOCALES.values():
        assert language.installed(locale), f"no JupyterLab language pack {locale}: setup.cfg, `make lock`"
    assert not language.installed("xx_XX")


def test_the_override_is_the_translation_setting_s_locale() -> None:
    assert language.default_setting_overrides("ko_KR") == {TRANSLATION: {"locale": "ko_KR"}}


def test_apply_writes_the_server_s_own_config_dir_first_on_the_config_path(tmp_path: Path) -> None:
    environ = {"AIDC_LOCALE": "ko", "JUPYTER_CONFIG_PATH": f"/etc/a{os.pathsep}/etc/b"}
    config_dir = language.apply(environ, tmp_path / "runtime", 4242)
    assert config_dir == tmp_path / "runtime" / "aidc-lab-config-4242"
    written = config_dir / "labconfig" / "default_setting_overrides.json"
    assert json.loads(written.read_text()) == {TRANSLATION: {"locale": "ko_KR"}}
    assert sorted(p.name for p in written.parent.iterdir()) == ["default_setting_overrides.json"]
    assert environ["JUPYTER_CONFIG_PATH"] == os.pathsep.join([str(config_dir), "/etc/a", "/etc/b"])

    alone = {"AIDC_LOCALE": "en"}
    assert language.apply(alone, tmp_path / "runtime", 7) is not None
    assert alone["JUPYTER_CONFIG_PATH"] == str(tmp_path / "runtime" / "aidc-lab-config-7")


@pytest.mark.parametrize("environ", [{}, {"AIDC_LOCALE": "fr"}, {"AIDC_LOCALE": "ko;rm -rf"}])
def test_no_or_an_unknown_language_changes_nothing(tmp_path: Path, environ: dict[str, str]) -> None:
    before = dict(environ)
    assert language.apply(environ, tmp_path, 4242) is None
    assert environ == before
    assert list(tmp_path.iterdir()) == []


def test_without_the_language_pack_nothing_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An image without the Korean pack keeps JupyterLab's default rather than ask for a pack it lacks."""
    monkeypatch.setattr(language, "entry_points", lambda group: [])
    assert not language.installed("ko_KR") and language.installed("en")
    environ = {"AIDC_LOCALE": "ko"}
    assert language.apply(environ, tmp_path, 4242) is None
    assert environ == {"AIDC_LOCALE": "ko"} and list(tmp_path.iterdir()) == []


def test_jupyterlab_server_reads_it_as_the_setting_s_default_over_the_system_s(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The directory first on the path wins over an operator's own default further down."""
    operator = tmp_path / "etc-jupyter"
    (operator / "labconfig").mkdir(parents=True)
    (operator / "labconfig" / "default_setting_overrides.json").write_text(
        json.dumps({TRANSLATION: {"locale": "en", "stringsPrefix": "~"}})
    )
    environ = {"AIDC_LOCALE": "ko", "JUPYTER_CONFIG_PATH": str(operator)}
    language.apply(environ, tmp_path / "runtime", 1)
    monkeypatch.setenv("JUPYTER_CONFIG_PATH", environ["JUPYTER_CONFIG_PATH"])
    overrides, error = _get_overrides(str(tmp_path / "app-settings"))
    assert error == ""
    assert overrides[TRANSLATION] == {"locale": "ko_KR", "stringsPrefix": "~"}


LINKED = textwrap.dedent(
    """
    import json, logging, os, sys
    from pathlib import Path
    from types import SimpleNamespace
    import aidc_jupyterlab
    from jupyterlab_server import settings_utils, translations_handler
    from jupyterlab_server.settings_utils import _get_overrides, get_settings
    from jupyterlab_server.translation_utils import translator

    runtime = Path(sys.argv[1])
    aidc_jupyterlab._link_jupyter_server_extension(SimpleNamespace(runtime_dir=str(runtime), log=logging.getLogger()))
    schemas = Path(sys.prefix, "share", "jupyter", "lab", "schemas")
    plugin = "@jupyterlab/translation-extension:plugin"
    overrides, _ = _get_overrides(str(runtime / "app-settings"))
    settings, _ = get_settings(str(runtime / "app-settings"), str(schemas), str(runtime / "user-settings"),
                               plugin, overrides, translator=translator.translate_schema)
    print(json.dumps({
        "pid": os.getpid(),
        "dirs": sorted(p.name for p in runtime.iterdir()),
        "default": settings["schema"]["properties"]["locale"]["default"],
        "title": settings["schema"]["title"],
        "server": [settings_utils.SYS_LOCALE, translations_handler.SYS_LOCALE],
    }))
    """
)


@pytest.mark.parametrize(
    ("value", "default", "title"),
    [("ko", "ko_KR", "언어"), ("en", "en", "Language"), (None, "default", "Language"), ("fr", "default", "Language")],
)
def test_a_linked_server_defaults_to_the_hub_s_language_and_tidies_up_at_exit(
    tmp_path: Path, value: str | None, default: str, title: str
) -> None:
    """The server extension's link in a process of its own (it sets the process's environment and
    jupyterlab_server's default locale): the setting's default, and the schema said in it."""
    env = {k: v for k, v in os.environ.items() if k not in ("AIDC_LOCALE", "JUPYTER_CONFIG_PATH")}
    env.update({"LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}, **({"AIDC_LOCALE": value} if value is not None else {}))
    result = subprocess.run(
        [sys.executable, "-c", LINKED, str(tmp_path)], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert (seen["default"], seen["title"]) == (default, title)
    if value in language.LAB_LOCALES:
        assert seen["dirs"] == [f"aidc-lab-config-{seen['pid']}"]
        assert seen["server"] == [default, default]
    else:
        assert seen["dirs"] == []
    assert list(tmp_path.iterdir()) == [], "the server's config directory outlived it"


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, "The hub's quotas service cannot be reached (timed out); try again later."),
        ({"AIDC_LOCALE": "en"}, "The hub's quotas service cannot be reached (timed out); try again later."),
        ({"AIDC_LOCALE": "ko"}, "허브의 할당량 서비스에 연결할 수 없습니다(timed out). 잠시 후 다시 시도하십시오."),
        ({"AIDC_LOCALE": "fr"}, "The hub's quotas service cannot be reached (timed out); try again later."),
    ],
)
def test_the_workspace_s_own_messages_are_said_in_the_person_s_language(environ: dict[str, str], expected: str) -> None:
    assert handlers.say(handlers.UNREACHABLE, environ, error="timed out") == expected


@pytest.mark.parametrize("sentence", [handlers.ANSWERED, handlers.UNREACHABLE])
def test_the_workspace_s_own_messages_are_in_every_language_with_the_english_s_placeholders(
    sentence: dict[str, str],
) -> None:
    assert set(sentence) == set(i18n.LOCALES)
    fields = {name: {f for _, f, _, _ in Formatter().parse(text) if f} for name, text in sentence.items()}
    assert all(found == fields["en"] for found in fields.values()), fields

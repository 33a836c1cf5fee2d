"""JupyterLab opens in the language its person chose on the hub.

The hub's spawner gives the workspace ``$AIDC_LOCALE`` (``ko`` or ``en``; absent when the person
never chose). This server makes it JupyterLab's *default* language, for this server only: a
person's own choice in Settings > Language is a user setting, and a user setting wins.

Two places hold JupyterLab's default language, and :func:`link` sets both before any extension
loads:

- the default of the ``locale`` setting of ``@jupyterlab/translation-extension:plugin``, which the
  page reads to fetch its translations. jupyterlab_server layers such defaults from
  ``labconfig/default_setting_overrides.json`` in every Jupyter config directory
  (``settings_utils._get_overrides``, through ``jupyter_config_path()``, which reads
  ``$JUPYTER_CONFIG_PATH`` when called, the first directory winning): the file is written in a
  directory of this server's own under its runtime directory, put first on that path.
- jupyterlab_server's own default locale (``SYS_LOCALE``, "the server default locale" of that
  setting's description), which the server translates the settings' schemas with (the Settings
  editor's titles and descriptions) whenever the person has no ``locale`` of their own: the locale
  of the system otherwise, which says nothing of the person.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
from collections.abc import Mapping, MutableMapping
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

LOCALE_ENV = "AIDC_LOCALE"  # the hub's spawner sets it (spawner/tenancy.py LOCALE_ENV)
# The hub's languages (i18n.LOCALES) -> JupyterLab's locale names: its built-in English, and the
# Korean language pack's. The workspace has no hub package (standard library only here), hence
# a table of its own; tests/unit/test_jupyterlab_locale.py holds it to i18n.LOCALES.
LAB_LOCALES = {"en": "en", "ko": "ko_KR"}
BUILT_IN = "en"  # JupyterLab's own strings; every other locale needs its language pack
LANGUAGE_PACKS = "jupyterlab.languagepack"  # the entry point group a language pack registers in
TRANSLATION_PLUGIN = "@jupyterlab/translation-extension:plugin"
CONFIG_DIR_PREFIX = "aidc-lab-config-"  # + the server's pid, under its runtime directory


def lab_locale(environ: Mapping[str, str]) -> str | None:
    """JupyterLab's locale for the language the hub says the person chose (``"ko"`` ->
    ``"ko_KR"``), or None: no choice, or a value that is not one of the hub's languages."""
    return LAB_LOCALES.get(environ.get(LOCALE_ENV, ""))


def installed(locale: str) -> bool:
    """Whether JupyterLab here can speak ``locale``: English, or its language pack is installed."""
    return locale == BUILT_IN or any(e.name == locale for e in entry_points(group=LANGUAGE_PACKS))


def default_setting_overrides(locale: str) -> dict[str, Any]:
    """The ``default_setting_overrides.json`` that makes ``locale`` JupyterLab's default language."""
    return {TRANSLATION_PLUGIN: {"locale": locale}}


def write_config_dir(config_dir: Path, overrides: Mapping[str, Any]) -> Path:
    """Write ``overrides`` as ``<config_dir>/labconfig/default_setting_overrides.json``; returns
    the file. Written whole under a temporary name first, so no reader sees half a file."""
    labconfig = config_dir / "labconfig"
    labconfig.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = labconfig / "default_setting_overrides.json"
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(overrides, indent=2) + "\n", encoding="utf-8")
    partial.replace(path)
    return path


def prepend_config_path(environ: MutableMapping[str, str], config_dir: Path) -> None:
    """Put ``config_dir`` first on ``$JUPYTER_CONFIG_PATH`` (the first directory wins)."""
    current = environ.get("JUPYTER_CONFIG_PATH", "")
    environ["JUPYTER_CONFIG_PATH"] = os.pathsep.join([str(config_dir), *([current] if current else [])])


def apply(environ: MutableMapping[str, str], runtime_dir: Path, pid: int) -> Path | None:
    """Make the language ``environ`` names JupyterLab's default ``locale`` setting for the server
    of ``pid``: its config directory under ``runtime_dir``, first on ``environ``'s
    ``$JUPYTER_CONFIG_PATH``.
    Returns the directory, or None (and changes nothing) when ``$AIDC_LOCALE`` names no language
    of the hub or JupyterLab has no language pack for it."""
    locale = lab_locale(environ)
    if locale is None or not installed(locale):
        return None
    config_dir = runtime_dir / f"{CONFIG_DIR_PREFIX}{pid}"
    write_config_dir(config_dir, default_setting_overrides(locale))
    prepend_config_path(environ, config_dir)
    return config_dir


def set_server_default(locale: str) -> None:
    """Make ``locale`` jupyterlab_server's default locale in this process: its ``SYS_LOCALE``, in
    each module that imported it by name, and the locale its translator starts in.
    tests/unit/test_jupyterlab_locale.py checks that the locked jupyterlab_server reads them."""
    from jupyterlab_server import settings_utils, translation_utils, translations_handler

    for module in (translation_utils, settings_utils, translations_handler):
        vars(module)["SYS_LOCALE"] = locale
    translation_utils.translator.set_locale(locale)


def link(serverapp: Any) -> None:
    """At the server's link stage: :func:`apply` to this process and :func:`set_server_default`,
    and remove the directory again when the server exits. A server without JupyterLab (no
    jupyterlab_server) keeps the setting's default and nothing else."""
    locale = lab_locale(os.environ)
    config_dir = apply(os.environ, Path(serverapp.runtime_dir), os.getpid())
    if config_dir is None or locale is None:
        if LOCALE_ENV in os.environ:
            serverapp.log.warning("%s=%r: JupyterLab's default language unchanged", LOCALE_ENV, os.environ[LOCALE_ENV])
        return
    atexit.register(shutil.rmtree, config_dir, ignore_errors=True)
    try:
        set_server_default(locale)
    except ImportError:
        pass
    serverapp.log.info("JupyterLab's default language: %s (%s=%s)", locale, LOCALE_ENV, os.environ[LOCALE_ENV])

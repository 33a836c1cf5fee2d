"""JupyterLab opens in the language its person chose on the hub (issue 19): the spawner gives the
workspace ``AIDC_LOCALE`` from the saved choice, and the workspace's server extension
(labextension/aidc_jupyterlab/language.py) makes it the default of JupyterLab's ``locale``
setting, and jupyterlab_server's own default, for that server only. The Korean language pack is in
the hub's environment, where the embedded mode's workspaces run.

alice chose Korean, carol English, bob never chose (tenant ``lab``, profile ``cpu``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import requests

from quotas import paths
from quotas.store import Store
from tests.bed.hub import PASSWORDS, Client, Hub, running_hub, stop_all_servers

TRANSLATION = "@jupyterlab/translation-extension:plugin"


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    with running_hub(tmp_path_factory.mktemp("jupyterlab-locale-hub")) as h:
        yield h


@pytest.fixture(scope="module")
def servers(hub: Hub) -> Iterator[dict[str, tuple[Client, str]]]:
    """Each person's default server, started after their choice was saved: name -> (client, server URL)."""
    people = {name: hub.login(name, PASSWORDS[name]) for name in ("alice", "bob", "carol")}
    store = Store(paths.db_url(str(hub.data_dir)))
    try:
        now = datetime.now(UTC)
        assert store.set_locale("alice", "ko", now) and store.set_locale("carol", "en", now)
        assert store.locale_of("bob") is None
    finally:
        store.close()
    try:
        for client in people.values():
            r = client.spawn(tenant="lab", profile="cpu")
            assert r.status_code in (201, 202), r.text
        yield {name: (client, client.wait_ready()["url"]) for name, client in people.items()}
    finally:
        stop_all_servers(people.values())


def lab_api(client: Client, server_url: str, path: str, method: str = "GET", **kwargs: Any) -> requests.Response:
    """``<server>/lab/api/<path>`` of ``client``'s own server, with their token."""
    return requests.request(
        method,
        f"{client.hub.url}{server_url}lab/api/{path}",
        headers={"Authorization": f"token {client.token}"},
        timeout=60,
        allow_redirects=False,
        **kwargs,
    )


def language_setting(client: Client, server_url: str) -> tuple[str, str]:
    """The composite ``locale`` (the person's own, else the default) and the settings schema's
    title, as the server translated it."""
    r = lab_api(client, server_url, f"settings/{TRANSLATION}")
    assert r.status_code == 200, r.text
    setting = r.json()
    composite = setting["settings"].get("locale", setting["schema"]["properties"]["locale"]["default"])
    return composite, setting["schema"]["title"]


def test_jupyterlab_opens_in_korean_for_a_person_who_chose_korean(servers: dict[str, tuple[Client, str]]) -> None:
    alice, url = servers["alice"]
    assert language_setting(alice, url) == ("ko_KR", "언어")  # the Settings editor's title too
    r = lab_api(alice, url, "translations/ko_KR")
    assert r.status_code == 200, r.text
    data = r.json()["data"]["jupyterlab"]
    assert data[""]["language"] == "ko-KR"
    assert data["Settings"] == ["설정"] and data["menu\x04File"] == ["파일"]  # msgctxt \x04 msgid
    packs = lab_api(alice, url, "translations").json()["data"]
    assert {"en", "ko_KR"} <= packs.keys()


def test_english_for_a_person_who_chose_english_and_the_default_for_one_who_never_chose(
    servers: dict[str, tuple[Client, str]],
) -> None:
    carol, url = servers["carol"]
    assert language_setting(carol, url) == ("en", "Language")
    bob, url = servers["bob"]
    assert language_setting(bob, url) == ("default", "Language")  # JupyterLab's own default: the server's


def test_the_person_s_own_choice_in_jupyterlab_wins(servers: dict[str, tuple[Client, str]]) -> None:
    alice, url = servers["alice"]
    try:
        r = lab_api(alice, url, f"settings/{TRANSLATION}", "PUT", json={"raw": '{"locale": "en"}'})
        assert r.status_code == 204, r.text
        assert language_setting(alice, url) == ("en", "Language")
    finally:
        r = lab_api(alice, url, f"settings/{TRANSLATION}", "PUT", json={"raw": "{}"})
        assert r.status_code == 204, r.text
    assert language_setting(alice, url) == ("ko_KR", "언어")


def test_the_server_s_config_directory_goes_with_it(hub: Hub, servers: dict[str, tuple[Client, str]]) -> None:
    """The directory of the default exists while carol's server runs, in her own runtime
    directory, and is removed when the hub stops the server."""
    carol, _url = servers["carol"]
    home = hub.homes / "carol"
    held = list(home.glob(".local/share/jupyter/runtime/aidc-lab-config-*/labconfig/default_setting_overrides.json"))
    assert len(held) == 1, sorted(str(p) for p in home.rglob("aidc-lab-config-*"))
    assert json.loads(held[0].read_text()) == {TRANSLATION: {"locale": "en"}}
    carol.stop_server()
    assert not held[0].parent.parent.exists()

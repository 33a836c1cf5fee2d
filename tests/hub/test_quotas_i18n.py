"""The quotas service in the person's language (issue 19), behind a real hub and proxy: the page
follows the browser (``Accept-Language``), the person's saved choice and the ``aidc-lang`` cookie,
in that order of weakness; the API's refusals are said in the caller's language, their fields and
codes unchanged; ``api/me`` answers the saved choice.

Tenants (tests/hub/tenants.yaml): ``lab`` (alice, bob, carol; admin kim). Each test uses its own
people, as a saved choice stays for the module's hub.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import requests

from i18n import COOKIE
from quotas import paths
from quotas.store import Store
from tests.bed.hub import PASSWORDS, Client, Hub, running_hub


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    with running_hub(tmp_path_factory.mktemp("quotas-i18n-hub")) as h:
        yield h


@pytest.fixture(scope="module")
def store(hub: Hub) -> Iterator[Store]:
    s = Store(paths.db_url(str(hub.data_dir)))
    yield s
    s.close()


@pytest.fixture(scope="module")
def people(hub: Hub) -> dict[str, Client]:
    return {name: hub.login(name, PASSWORDS[name]) for name in ("alice", "bob", "carol", "kim", "dave")}


def page(client: Client, path: str = "", cookies: dict[str, str] | None = None, **headers: str) -> requests.Response:
    """The quotas page as ``client``'s browser opens it (through the hub's login, with its cookies
    and ``cookies``)."""
    r = client.session.get(
        f"{client.hub.url}/services/quotas/{path}",
        headers={"Accept": "text/html", **headers},
        cookies=cookies,
        timeout=60,
    )
    assert r.headers["Content-Type"].startswith("text/html"), r.headers
    return r


def lang_of(markup: str) -> str:
    found = re.search(r'<html lang="([^"]+)"', markup)
    assert found, markup[:300]
    return found.group(1)


def shown(markup: str) -> str:
    """The page's text as a reader sees it (tags and scripts out, entities decoded)."""
    markup = re.sub(r"<(script|svg)\b.*?</\1>", " ", markup, flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", markup)))


def call(client: Client, method: str, path: str, **kwargs: Any) -> requests.Response:
    """``path`` of the quotas API with ``client``'s token (a script: no cookie)."""
    headers = {"Authorization": f"token {client.token}", **kwargs.pop("headers", {})}
    return requests.request(
        method, f"{client.hub.url}/services/quotas/{path}", headers=headers, timeout=60, allow_redirects=False, **kwargs
    )


def assert_korean_page(r: requests.Response, name: str) -> None:
    assert r.status_code == 200, r.text[:500]
    assert lang_of(r.text) == "ko"
    text = shown(r.text)
    assert "할당량과 사용량" in text and "허브로 돌아가기" in text and "내 한도" in text, text[:2000]
    assert f"lab에서 내 현황 ({name})" in text
    assert "Quotas and usage" not in text and "Your limits" not in text
    # the switcher: both languages, Korean marked, each through the hub and back here
    assert re.search(r'aidc-language-link active fw-bold"\s+href="[^"]*lang=ko[^"]*"', r.text), r.text
    assert "/hub/language?lang=en&amp;next=%2Fservices%2Fquotas%2F" in r.text


def assert_english_page(r: requests.Response) -> None:
    assert r.status_code == 200, r.text[:500]
    assert lang_of(r.text) == "en"
    text = shown(r.text)
    assert "Quotas and usage" in text and "Your limits" in text
    assert "할당량과 사용량" not in text
    assert re.search(r'aidc-language-link active fw-bold"\s+href="[^"]*lang=en[^"]*"', r.text), r.text


def test_the_page_follows_the_browser_s_language(people: dict[str, Client]) -> None:
    alice = people["alice"]
    assert_korean_page(page(alice, **{"Accept-Language": "ko-KR,ko;q=0.9,en;q=0.8"}), "alice")
    assert_english_page(page(alice, **{"Accept-Language": "en-US,en;q=0.9"}))
    assert_english_page(page(alice))  # no preference at all: English


def test_the_page_follows_the_person_s_saved_choice(people: dict[str, Client], store: Store) -> None:
    bob = people["bob"]
    assert_english_page(page(bob))
    store.set_locale("bob", "ko", datetime.now(UTC))
    assert_korean_page(page(bob), "bob")
    assert_korean_page(page(bob, **{"Accept-Language": "en"}), "bob")  # the choice beats the browser's
    assert_korean_page(page(bob, "?tenant=lab"), "bob")


def test_the_cookie_beats_everything(people: dict[str, Client], store: Store) -> None:
    carol = people["carol"]
    store.set_locale("carol", "en", datetime.now(UTC))
    assert_korean_page(page(carol, cookies={COOKIE: "ko"}, **{"Accept-Language": "en"}), "carol")
    assert_english_page(page(carol, **{"Accept-Language": "ko"}))


def test_a_page_error_is_said_in_the_page_s_language(people: dict[str, Client]) -> None:
    r = page(people["alice"], "?tenant=startup", **{"Accept-Language": "ko"})
    assert r.status_code == 403 and lang_of(r.text) == "ko"
    text = shown(r.text)
    assert "사용자(alice)는 테넌트 'startup'의 구성원이나 관리자가 아니므로 이 테넌트를 볼 수 없습니다." in text
    assert "not a member" not in text
    assert "403: 접근 거부" in text and "Forbidden" not in text


def test_an_api_refusal_is_said_in_the_caller_s_language(people: dict[str, Client], store: Store) -> None:
    store.set_locale("dave", "ko", datetime.now(UTC))
    limit = {"gpus": {"A100": 1}}
    korean = call(people["dave"], "PUT", "api/tenants/startup/limits/users/dave", json=limit)
    assert korean.status_code == 403
    body = korean.json()
    assert set(body) == {"status", "message", "problems"} and body["status"] == 403
    assert body["message"].startswith(
        "한도를 설정할 수 있는 사람은 테넌트 startup의 관리자(erin)와 플랫폼 관리자뿐이며"
    )
    english = call(people["alice"], "PUT", "api/tenants/lab/limits/users/alice", json=limit)
    assert english.status_code == 403
    assert english.json()["message"] == (
        "Only admins of tenant lab (kim) and platform admins can set limits; you (alice) are a member."
        " Ask a tenant admin."
    )
    # the browser's language counts for a script too, after the saved choice
    said = call(
        people["alice"], "PUT", "api/tenants/lab/limits/users/alice", json=limit, headers={"Accept-Language": "ko"}
    )
    assert said.json()["message"].startswith("한도를 설정할 수 있는 사람은 테넌트 lab의 관리자(kim)")


def test_problems_are_said_in_the_caller_s_language_field_names_unchanged(people: dict[str, Client]) -> None:
    kim = people["kim"]
    bad = {"gpus": {"H100": 99}, "colour": "blue"}
    korean = call(kim, "PUT", "api/tenants/lab/limits/users/bob", json=bad, headers={"Accept-Language": "ko"})
    english = call(kim, "PUT", "api/tenants/lab/limits/users/bob", json=bad)
    assert korean.status_code == english.status_code == 422
    ko, en = korean.json(), english.json()
    assert ko["message"] == "테넌트 lab에서 사용자 bob의 한도를 변경하지 않았습니다: 문제 2건."
    assert en["message"] == "The limit of user bob in tenant lab was not changed: 2 problems."
    assert len(ko["problems"]) == len(en["problems"]) == 2
    assert any("'colour'" in p for p in ko["problems"]) and any("gpus.H100" in p for p in ko["problems"])
    usage = call(kim, "GET", "api/tenants/lab/usage?by=nobody", headers={"Accept-Language": "ko"})
    assert usage.status_code == 400
    assert usage.json()["message"] == (
        "이 사용량 보고서를 만들 수 없습니다: by는 user, group, tenant 중 하나여야 합니다. 'nobody'은(는) 쓸 수 없습니다."
    )


def test_api_me_answers_the_saved_choice(people: dict[str, Client], store: Store) -> None:
    kim = people["kim"]
    me = call(kim, "GET", "api/me").json()
    assert me["name"] == "kim" and me["locale"] is None
    store.set_locale("kim", "ko", datetime.now(UTC))
    assert call(kim, "GET", "api/me").json()["locale"] == "ko"
    # a browser's language is not a saved choice
    assert call(kim, "GET", "api/me", headers={"Accept-Language": "en"}).json()["locale"] == "ko"
    store.set_locale("kim", "en", datetime.now(UTC))
    assert call(kim, "GET", "api/me").json()["locale"] == "en"


def test_the_workspace_texts_are_in_the_person_s_language(people: dict[str, Client], store: Store) -> None:
    store.set_locale("dave", "ko", datetime.now(UTC))
    ws = call(people["dave"], "GET", "api/me/workspace").json()
    assert ws["locale"] == "ko" and ws["running"] is False
    assert ws["texts"]["status"] == "AIDC Hub: 테넌트 없음" and ws["texts"]["details"] == "자세히"
    english = call(people["alice"], "GET", "api/me/workspace").json()
    assert english["texts"]["status"] == "AIDC Hub: no tenant" and english["locale"] == "en"

"""The `hub` tier, languages (issue 19): the hub's pages follow the browser, the switcher on every
page sets the language and saves it for the person, and their pages follow the saved choice.

A real hub (tests/bed/hub.py: alice, bob, carol, ... of tests/hub/tenants.yaml) with its quotas
database, where a person's saved choice is read with ``Store.locale_of``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from i18n import COOKIE, LOCALE_NAMES, LOCALES
from quotas import paths
from quotas.store import Store
from tests.bed.dex import DexUser, oidc_env, oidc_tenants, oidc_traits, provider_callback, running_dex
from tests.bed.hub import PASSWORDS, Client, Hub, running_hub

SWITCHER_LINK = re.compile(r'<a class="[^"]*aidc-language-link[^"]*"[^>]*>[^<]*</a>')


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    with running_hub(tmp_path_factory.mktemp("i18n-hub")) as h:
        yield h


@pytest.fixture(scope="module")
def store(hub: Hub) -> Store:
    return Store(paths.db_url(str(hub.data_dir)))


def get(session: requests.Session, hub: Hub, path: str, **kwargs: object) -> requests.Response:
    r = session.get(f"{hub.url}{path}", timeout=60, allow_redirects=False, **kwargs)  # type: ignore[arg-type]
    return utf8(r)


def utf8(r: requests.Response) -> requests.Response:
    """JupyterHub answers ``text/html`` without a charset: browsers read the page's own
    ``<meta charset="utf-8">``, which must come within its first 1024 bytes."""
    if r.headers.get("Content-Type", "").startswith("text/html") and r.content:
        assert 0 <= r.content.find(b'<meta charset="utf-8">') < 1024, r.content[:1100]
        r.encoding = "utf-8"
    return r


def switcher(page: str) -> dict[str, str]:
    """The switcher's links on ``page``: {language: the whole <a> tag}."""
    links = {}
    for link in SWITCHER_LINK.findall(page):
        code = re.search(r' lang="([^"]+)"', link)
        assert code, link
        links[code.group(1)] = link
    return links


def lang_of(page: str) -> str:
    found = re.search(r'<html lang="([^"]+)"', page)
    assert found, page[:300]
    return found.group(1)


def test_the_login_page_follows_the_browser(hub: Hub) -> None:
    korean = utf8(
        requests.get(f"{hub.url}/hub/login", headers={"Accept-Language": "ko-KR,ko;q=0.9,en;q=0.8"}, timeout=60)
    )
    assert korean.status_code == 200
    assert lang_of(korean.text) == "ko"
    assert ">로그인</h1>" in korean.text and "사용자 이름:" in korean.text and 'value="로그인"' in korean.text
    assert "Sign in" not in korean.text and "Username:" not in korean.text

    english = utf8(requests.get(f"{hub.url}/hub/login", timeout=60))
    assert lang_of(english.text) == "en"
    assert "<h1>Sign in</h1>" in english.text and "Username:" in english.text and "로그인" not in english.text
    # the switcher is there before anyone logs in
    assert set(switcher(english.text)) == set(LOCALES)


def test_a_wrong_password_is_refused_in_the_browsers_language(hub: Hub) -> None:
    session = requests.Session()
    session.headers["Accept-Language"] = "ko"
    get(session, hub, "/hub/login")
    xsrf = session.cookies.get("_xsrf")
    r = utf8(
        session.post(
            f"{hub.url}/hub/login",
            data={"username": "alice", "password": "not-her-password", "_xsrf": xsrf},
            timeout=60,
        )
    )
    assert "사용자 이름 또는 비밀번호가 올바르지 않습니다." in r.text
    assert "Invalid username or password" not in r.text


def test_choosing_korean_sets_the_cookie_saves_the_choice_and_goes_back(hub: Hub, store: Store) -> None:
    alice = hub.login("alice", PASSWORDS["alice"])
    r = get(alice.session, hub, "/hub/language", params={"lang": "ko", "next": "/hub/home"})
    assert r.status_code == 302 and r.headers["Location"] == "/hub/home"
    assert alice.session.cookies.get(COOKIE) == "ko"
    assert store.locale_of("alice") == "ko"

    # her pages are in Korean, in this browser and (her saved choice) in another, whatever it prefers
    elsewhere = Client(hub, "alice", PASSWORDS["alice"])
    elsewhere.session.headers["Accept-Language"] = "en-US,en;q=0.9"
    for session in (alice.session, elsewhere.session):
        home = get(session, hub, "/hub/home")
        assert home.status_code == 200 and lang_of(home.text) == "ko"
        assert "내 서버 시작" in home.text and "Start My Server" not in home.text
        assert ">홈</a>" in home.text and ">로그아웃</a>" in home.text and ">할당량</a>" in home.text
        spawn = get(session, hub, "/hub/spawn/alice")
        assert spawn.status_code == 200 and lang_of(spawn.text) == "ko"
        assert ">서버 옵션</h1>" in spawn.text and ">시작</button>" in spawn.text
        assert "Server Options" not in spawn.text
        links = switcher(spawn.text)
        assert "aria-current" in links["ko"] and "aria-current" not in links["en"]

    # and back to English
    r = get(alice.session, hub, "/hub/language", params={"lang": "en", "next": "/hub/spawn/alice"})
    assert r.headers["Location"] == "/hub/spawn/alice" and store.locale_of("alice") == "en"
    assert "Server Options" in get(alice.session, hub, "/hub/spawn/alice").text


@pytest.mark.parametrize("target", ["/hub/spawn?x=1", "/services/quotas/", "/hub/login?next=%2Fhub%2Fspawn"])
def test_the_switcher_goes_back_to_the_page_it_was_on(hub: Hub, target: str) -> None:
    r = get(requests.Session(), hub, "/hub/language", params={"lang": "ko", "next": target})
    assert r.status_code == 302 and r.headers["Location"] == target


@pytest.mark.parametrize(
    "target",
    [
        "//evil.example/hub/home",
        "///evil.example",
        "http://evil.example/hub/home",
        "https:evil.example",
        "/\\evil.example",
        "\\\\evil.example",
        "/\t/evil.example",
        "hub/home",
    ],
)
def test_the_switcher_goes_back_only_to_a_page_of_this_hub(hub: Hub, target: str) -> None:
    r = get(requests.Session(), hub, "/hub/language", params={"lang": "ko", "next": target})
    assert r.status_code == 302 and r.headers["Location"] == "/hub/home", r.headers.get("Location")


def test_an_unknown_language_changes_nothing(hub: Hub, store: Store) -> None:
    carol = hub.login("carol", PASSWORDS["carol"])
    get(carol.session, hub, "/hub/language", params={"lang": "ko", "next": "/hub/home"})
    for unknown in ("fr", "ko-KR-x-<script>", "", "../en"):
        r = get(carol.session, hub, "/hub/language", params={"lang": unknown, "next": "/hub/token"})
        assert r.status_code == 302 and r.headers["Location"] == "/hub/token"
        assert carol.session.cookies.get(COOKIE) == "ko" and store.locale_of("carol") == "ko"


def test_the_not_running_and_error_pages_are_said_in_korean(hub: Hub) -> None:
    erin = hub.login("erin", PASSWORDS["erin"])
    get(erin.session, hub, "/hub/language", params={"lang": "ko", "next": "/hub/home"})
    stopped = utf8(erin.session.get(f"{hub.url}/hub/user/erin/", timeout=60))
    assert stopped.status_code == 424 and lang_of(stopped.text) == "ko"
    assert (
        "서버가 실행 중이 아님" in stopped.text
        and "서버가 실행 중이 아닙니다." in stopped.text
        and "서버 시작" in stopped.text
    )
    assert "Server not running" not in stopped.text
    missing = get(erin.session, hub, "/hub/no-such-page")
    assert missing.status_code == 404 and "404 : 찾을 수 없음" in missing.text and "Not Found" not in missing.text


def test_a_choice_made_on_the_login_page_is_saved_at_login(hub: Hub, store: Store) -> None:
    assert store.locale_of("bob") is None
    session = requests.Session()
    login = get(session, hub, "/hub/login")
    back = parse_qs(urlsplit(switcher(login.text)["ko"].split('href="')[1].split('"')[0].replace("&amp;", "&")).query)
    assert back == {"lang": ["ko"], "next": ["/hub/login"]}
    r = get(session, hub, "/hub/language", params={"lang": "ko", "next": "/hub/login"})
    assert r.headers["Location"] == "/hub/login"
    assert "사용자 이름:" in get(session, hub, "/hub/login").text
    r = session.post(
        f"{hub.url}/hub/login",
        data={"username": "bob", "password": PASSWORDS["bob"], "_xsrf": session.cookies.get("_xsrf")},
        allow_redirects=False,
        timeout=60,
    )
    assert r.status_code == 302
    assert store.locale_of("bob") == "ko"  # saved as he logged in, before any page after it


@pytest.mark.parametrize(
    "path",
    [
        "/hub/home",
        "/hub/spawn/dave",
        "/hub/token",
        "/hub/change-password",
        "/hub/no-such-page",
        "/hub/login",
        "/hub/user/dave/",  # not running
    ],
)
def test_every_page_has_the_switcher(hub: Hub, path: str) -> None:
    dave = hub.login("dave", PASSWORDS["dave"])
    page = utf8(dave.session.get(f"{hub.url}{path}", timeout=60))
    links = switcher(page.text)
    assert set(links) == set(LOCALES), (path, page.status_code, page.text[:500])
    for code, link in links.items():
        assert f'hreflang="{code}"' in link and f">{LOCALE_NAMES[code]}</a>" in link
        href = link.split('href="')[1].split('"')[0].replace("&amp;", "&")
        query = parse_qs(urlsplit(href).query)
        assert urlsplit(href).path == "/hub/language" and query["lang"] == [code]
        assert query["next"][0].startswith("/hub/")
    current = [code for code, link in links.items() if "aria-current" in link]
    assert current == [lang_of(page.text)]


# ---------------------------------------------------------------- OIDC login: the refusals in the person's language

OIDC_USERS = [DexUser("sam", groups=["chess-club"]), DexUser("mallory", groups=["lab"], email_verified=False)]


@pytest.fixture(scope="module")
def oidc_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    workdir = tmp_path_factory.mktemp("i18n-oidc-hub")
    hub = Hub(workdir, accounts={}, tenants=oidc_tenants(workdir), env=oidc_env())
    with running_dex(workdir / "dex", OIDC_USERS, [f"{hub.url}/hub/oauth_callback"]) as dex:
        hub.traits.update(oidc_traits(dex.issuer, username_claim="email"))
        del hub.traits["OIDCAuthenticator.contact"]  # the default contact, said in the person's language
        hub.start()
        try:
            yield hub
        finally:
            hub.stop()


def oidc_answer(hub: Hub, user: DexUser, language: str | None) -> requests.Response:
    session = requests.Session()
    if language:
        session.headers["Accept-Language"] = language
    return utf8(session.get(provider_callback(session, hub.url, user), allow_redirects=False, timeout=60))


def test_the_no_tenant_page_is_said_in_the_browsers_language(oidc_hub: Hub) -> None:
    korean = oidc_answer(oidc_hub, OIDC_USERS[0], "ko-KR")
    assert korean.status_code == 403 and lang_of(korean.text) == "ko"
    assert "어느 테넌트의 구성원도 아닙니다" in korean.text and "You are not a member" not in korean.text
    assert "<strong>sam@example.org</strong>(으)로 로그인했지만" in korean.text
    assert "<strong>플랫폼 관리자</strong>에게 테넌트에 추가해 달라고" in korean.text
    assert "<td>구성원</td>" in korean.text and "<td>테넌트 관리자</td>" in korean.text
    # its switcher comes back to the login, not to the callback whose code is used up
    assert "next=%2Fhub%2Flogin" in switcher(korean.text)["en"]

    english = oidc_answer(oidc_hub, OIDC_USERS[0], None)
    assert english.status_code == 403 and "You are not a member of any tenant" in english.text
    assert "ask <strong>a platform admin</strong> to add you" in english.text


def test_a_login_refusal_is_said_in_the_browsers_language(oidc_hub: Hub) -> None:
    korean = oidc_answer(oidc_hub, OIDC_USERS[1], "ko")
    assert korean.status_code == 403
    assert "로그인이 거절되었습니다: 이메일 주소 mallory@example.org이(가) ID 공급자에서 인증되지 않아" in korean.text
    assert "Login refused" not in korean.text
    english = oidc_answer(oidc_hub, OIDC_USERS[1], "en-US")
    assert "Login refused: your email address mallory@example.org is not verified" in english.text

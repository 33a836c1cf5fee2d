"""The hub's pages in the person's language (hub_config/language.py): where the switcher may send
people back to, which language a request gets, and every page template said in Korean and English."""

from __future__ import annotations

import inspect
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jupyterhub
import pytest
from jinja2 import ChoiceLoader, Environment, FileSystemLoader, PrefixLoader
from jupyterhub.apihandlers import users as jupyterhub_users
from jupyterhub.handlers import base as jupyterhub_base
from jupyterhub.handlers import login as jupyterhub_login

from hub_config import jupyterhub_strings
from hub_config.language import EXTENSION, local_next, remember_at_login, request_locale
from i18n import COOKIE, LOCALE_NAMES, LOCALES, _
from quotas.store import Store

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
OURS = REPO / "hub_config" / "templates"
JUPYTERHUB_TEMPLATES = Path(jupyterhub.__file__).resolve().parents[4] / "share" / "jupyterhub" / "templates"
HOME = "/hub/home"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("/hub/spawn", "/hub/spawn"),
        ("/hub/login?next=%2Fhub%2Fspawn", "/hub/login?next=%2Fhub%2Fspawn"),
        ("/services/quotas/", "/services/quotas/"),  # the quotas page is on the hub's origin too
        ("/user/alice/lab?reset", "/user/alice/lab?reset"),
        ("", HOME),
        (None, HOME),
        ("//evil.example", HOME),
        ("///evil.example", HOME),
        ("http://evil.example/hub/home", HOME),
        ("https:evil.example", HOME),
        ("javascript:alert(1)", HOME),
        ("/\\evil.example", HOME),
        ("\\\\evil.example", HOME),
        ("/\t/evil.example", HOME),  # browsers drop tabs: //evil.example
        ("/\n/evil.example", HOME),
        (" /hub/home", HOME),
        ("hub/home", HOME),
        ("/hub/" + "x" * 3000, HOME),
    ],
)
def test_the_switcher_goes_back_only_to_a_page_of_this_hub(raw: str | None, expected: str) -> None:
    assert local_next(raw, "/", HOME) == expected


def test_a_hub_under_a_prefix_goes_back_only_under_it() -> None:
    assert local_next("/aidc/hub/spawn", "/aidc/", "/aidc/hub/home") == "/aidc/hub/spawn"
    assert local_next("/aidc//evil.example", "/aidc/", "/aidc/hub/home") == "/aidc//evil.example"  # a path
    assert local_next("/other/hub/spawn", "/aidc/", "/aidc/hub/home") == "/aidc/hub/home"
    assert local_next("//evil.example/aidc/", "/aidc/", "/aidc/hub/home") == "/aidc/hub/home"


@dataclass
class FakeHandler:
    """What request_locale reads of a JupyterHub handler."""

    cookies: dict[str, str] = field(default_factory=dict)
    accept_language: str | None = None
    person: str | None = None

    def __post_init__(self) -> None:
        headers = {"Accept-Language": self.accept_language} if self.accept_language else {}
        self.request = SimpleNamespace(headers=headers)
        self.current_user = SimpleNamespace(name=self.person, kind="user") if self.person else None

    def get_cookie(self, name: str) -> str | None:
        return self.cookies.get(name)


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'quotas.sqlite'}"


def test_the_language_is_the_cookie_then_the_saved_choice_then_the_browser_then_english(db_url: str) -> None:
    store = Store(db_url)
    now = datetime.now(UTC)
    assert request_locale(FakeHandler(), db_url) == "en"  # type: ignore[arg-type]
    assert request_locale(FakeHandler(accept_language="ko-KR,ko;q=0.9"), db_url) == "ko"  # type: ignore[arg-type]
    store.set_locale("alice", "en", now)
    # her saved choice beats her browser
    assert request_locale(FakeHandler(accept_language="ko-KR", person="alice"), db_url) == "en"  # type: ignore[arg-type]
    # this browser's choice beats her saved one, and becomes it
    chosen_here = FakeHandler(cookies={COOKIE: "ko"}, accept_language="en", person="alice")
    assert request_locale(chosen_here, db_url) == "ko"  # type: ignore[arg-type]
    assert store.locale_of("alice") == "ko"
    # an unknown cookie is no choice at all
    assert request_locale(FakeHandler(cookies={COOKIE: "fr"}, accept_language="ko"), db_url) == "ko"  # type: ignore[arg-type]
    # nobody logged in: a cookie saves nothing
    request_locale(FakeHandler(cookies={COOKIE: "en"}), db_url)  # type: ignore[arg-type]
    assert store.locale_of("alice") == "ko"


def test_a_choice_made_on_the_login_page_is_saved_at_login(db_url: str) -> None:
    hook = remember_at_login(db_url)
    auth = {"name": "bob", "admin": False}
    assert hook(None, FakeHandler(cookies={COOKIE: "ko-KR"}), auth) is auth  # type: ignore[arg-type]
    assert Store(db_url).locale_of("bob") == "ko"
    hook(None, FakeHandler(), {"name": "carol"})  # type: ignore[arg-type]
    assert Store(db_url).locale_of("carol") is None


def test_jupyterhubs_fixed_sentences_are_its_own_words() -> None:
    assert jupyterhub_strings.REASONS == jupyterhub_base.reasons
    login_source = inspect.getsource(jupyterhub_login)
    for sentence in jupyterhub_strings.LOGIN:
        assert repr(sentence) in login_source or f'"{sentence}"' in login_source, sentence
    progress_source = inspect.getsource(jupyterhub_users) + inspect.getsource(jupyterhub.spawner)
    for sentence in jupyterhub_strings.PROGRESS:
        assert f'"{sentence}"' in progress_source, sentence
    from http.client import responses

    assert all(responses[code] == phrase for code, phrase in jupyterhub_strings.STATUS.items())


# ---------------------------------------------------------------- the templates, as JupyterHub loads them


def environment() -> Environment:
    """JupyterHub's template environment (app.py init_tornado_settings, the sync one) with our config."""
    loader = ChoiceLoader(
        [
            PrefixLoader({"templates": FileSystemLoader([str(JUPYTERHUB_TEMPLATES)])}, "/"),
            FileSystemLoader([str(OURS), str(JUPYTERHUB_TEMPLATES)]),
        ]
    )
    return Environment(loader=loader, autoescape=True, extensions=[EXTENSION])


@dataclass(frozen=True)
class Notice:
    level: str
    text: str


def namespace(locale: str, **more: Any) -> dict[str, Any]:
    user = SimpleNamespace(
        name="alice",
        json_escaped_name="alice",
        spawner=SimpleNamespace(options_form=None),
        all_spawners=lambda include_default=False: [],
        server_url=lambda name: f"/user/alice/{name}/",
    )
    return {
        "base_url": "/hub/",
        "prefix": "/",
        "user": user,
        "login_url": "/hub/login",
        "logout_url": "/hub/logout",
        "static_url": lambda path, include_version=True: f"/hub/static/{path}",
        "parsed_scopes": {"admin-ui"},
        "services": [],
        "xsrf": "xsrf",
        "aidc_locale": locale,
        "aidc_locales": [(code, LOCALE_NAMES[code]) for code in LOCALES],
        "aidc_language_url": lambda code: f"/hub/language?lang={code}&next=%2Fhub%2Fhome",
        "aidc_local_accounts": True,
        "aidc_notices": [Notice("warning", _("Your server {name} will be stopped.", name="'gpu'"))],
        **more,
    }


PAGES: dict[str, tuple[dict[str, Any], str, str]] = {
    # page: (its variables, an English sentence it shows, the same in Korean)
    "login.html": (
        {
            "user": None,
            "login_error": "Invalid username or password",
            "authenticator": SimpleNamespace(request_otp=False),
        },
        "Sign in",
        "로그인",
    ),
    "home.html": (
        {
            "default_server": SimpleNamespace(active=False),
            "url": "/hub/spawn",
            "allow_named_servers": True,
            "named_server_limit_per_user": 2,
            "invalid_server_names": [],
        },
        "Start My Server",
        "내 서버 시작",
    ),
    "spawn.html": (
        {
            "spawner_options_form": "<p>form</p>",
            "url": "/hub/spawn/alice",
            "for_user": None,
            "error_message": "Forbidden",
        },
        "Server Options",
        "서버 옵션",
    ),
    "spawn_pending.html": (
        {"progress_url": "/hub/api/progress"},
        "Your server is starting up.",
        "서버를 시작하고 있습니다.",
    ),
    "stop_pending.html": ({}, "Your server is stopping.", "서버를 중지하고 있습니다."),
    "not_running.html": (
        {"failed": True, "failed_message": "Spawn failed", "server_name": "gpu", "spawn_url": "/hub/spawn/alice/gpu"},
        "Relaunch Server gpu",
        "서버 gpu 다시 시작",
    ),
    "error.html": (
        {"status_code": 404, "status_message": "Not Found", "message": ""},
        "404 : Not Found",
        "404 : 찾을 수 없음",
    ),
    "404.html": ({"status_code": 404, "status_message": "Not Found", "message": ""}, "lots of moons", "위성이 많지만"),
    "logout.html": ({"user": None}, "Successfully logged out.", "로그아웃했습니다."),
    "aidc-change-password.html": (
        {"message": _("Your current password is not right; nothing was changed."), "ok": False, "min_length": 10},
        "Your current password is not right",
        "현재 비밀번호가 맞지 않습니다",
    ),
    "aidc-oidc-refused.html": (
        {
            "user": None,
            "refused_user": "sam<b>",
            "refused_groups": ["startup"],
            "contact": "the desk",
            "admitting": [("lab", "Lab (lab)", _("member"))],
        },
        "You are not a member of any tenant",
        "어느 테넌트의 구성원도 아닙니다",
    ),
}


def render(page: str, locale: str) -> str:
    variables, _english, _korean = PAGES[page]
    return environment().get_template(page).render(namespace(locale, **variables))


@pytest.mark.parametrize("page", sorted(PAGES))
def test_every_page_is_said_in_the_persons_language_with_the_switcher(page: str) -> None:
    _variables, english, korean = PAGES[page]
    english_page, korean_page = render(page, "en"), render(page, "ko")
    assert english in english_page and korean not in english_page
    assert korean in korean_page and english not in korean_page
    assert '<html lang="ko">' in korean_page and '<html lang="en">' in english_page
    # the switcher: each language in its own name, the current one marked
    links = re.findall(r'<a class="[^"]*aidc-language-link[^"]*"[^>]*>[^<]*</a>', korean_page)
    assert len(links) == len(LOCALES), links
    for code, link in zip(LOCALES, links, strict=True):
        assert f'lang="{code}"' in link and f'hreflang="{code}"' in link and LOCALE_NAMES[code] in link
        assert f"lang={code}&amp;next=" in link
        assert ("aria-current" in link) == (code == "ko")


def test_korean_pages_keep_no_english_of_jupyterhubs_own() -> None:
    """The words JupyterHub's templates say (nav, buttons, labels), none left in English."""
    words = [
        "Token",
        "Admin",
        "Logout",
        "Quotas",
        "Password",
        "Toggle dark mode",
        "Named Servers",
        "Add New Server",
        "Server name",
        "Last activity",
        "Username:",
        "Sign in",
        "Event log",
        "Stop Server",
        "Start<",
    ]
    for page in PAGES:
        said = render(page, "ko")
        left = [w for w in words if re.search(rf">\s*{re.escape(w)}", said)]
        assert not left, (page, left)


def test_login_error_notices_and_refusals_are_said_in_korean_and_values_escaped() -> None:
    login = render("login.html", "ko")
    assert "사용자 이름 또는 비밀번호가 올바르지 않습니다." in login
    home = render("home.html", "ko")
    assert "aidc-notice" in home and "&#39;gpu&#39;" in home  # a notice made in Python, said with |say
    refused = render("aidc-oidc-refused.html", "ko")
    assert "<strong>sam&lt;b&gt;</strong>" in refused and "<td>구성원</td>" in refused
    assert '<span class="aidc-your-groups">startup</span>' in refused


def test_a_bare_404_gets_its_statuss_phrase() -> None:
    variables = {"status_code": 404, "status_message": None, "message": None, "aidc_http_status": {404: "Not Found"}}
    page = environment().get_template("error.html").render(namespace("ko", **variables))
    assert "<h1>404 : 찾을 수 없음</h1>" in page


def test_a_message_from_elsewhere_is_shown_as_it_came() -> None:
    """_() of a message that is not the catalogs' (a refusal with a Python repr in it) says it unchanged."""
    variables = {"status_code": 400, "status_message": "Bad Request", "message": "Unknown option {'gpus': 64}"}
    page = environment().get_template("error.html").render(namespace("ko", **variables))
    assert "Unknown option {&#39;gpus&#39;: 64}" in page and "400 : 잘못된 요청" in page


@pytest.mark.parametrize("page", ["spawn_pending.html", "home.html"])
def test_the_pages_scripts_get_their_words_in_the_pages_language(page: str) -> None:
    found = re.search(r'<script type="application/json" id="aidc-strings">(.*?)</script>', render(page, "ko"), re.S)
    assert found
    strings = json.loads(found.group(1))
    if page == "spawn_pending.html":
        assert strings["progress"]["Spawning server..."] == "서버를 시작하는 중..."
        assert strings["readyAt"] == "서버가 준비되었습니다: {url}"  # the script puts the address in
        assert strings["failedBecause"] == "서버 시작 실패: {message}"
    else:
        assert strings["locale"] == "ko"
        assert strings["confirmDelete"] == '서버 "{name}"을(를) 삭제하시겠습니까?'

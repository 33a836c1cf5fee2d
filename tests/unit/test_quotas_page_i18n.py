"""The quotas service in the person's language (issue 19): the language of each request, the page
rendered in Korean and English, its charts, its script's words, the API's refusals and the texts
the workspace's JupyterLab extension shows."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from unittest.mock import Mock

import pytest
from tornado import httputil, web

from i18n import COOKIE, translate
from quotas.model import PlatformConfig, Tenant
from quotas.policy import Holding
from quotas.quantity import month_name
from quotas.service import page
from quotas.service.api_me import workspace_texts
from quotas.service.base import ApiError, BaseHandler, Caller
from quotas.service.said import Minute, day_text
from quotas.store import Run, Store, UsageRow

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
KIM = Caller("kim", False, (), frozenset({"snu-ai"}), frozenset({"snu-ai"}))  # snu-ai's admin


# -- which language ------------------------------------------------------------------------------


def handler(headers: dict[str, str]) -> BaseHandler:
    """A quotas service handler of a request with ``headers`` (nothing is sent anywhere)."""
    request = httputil.HTTPServerRequest(
        start_line=httputil.RequestStartLine("GET", "/services/quotas/", "HTTP/1.1"),
        headers=httputil.HTTPHeaders({"Host": "hub.example", **headers}),
        connection=Mock(),
    )
    return BaseHandler(web.Application(), request)


@pytest.mark.parametrize(
    ("cookie", "saved", "accept", "expected"),
    [
        ("ko", "en", "en-US", "ko"),  # the choice made in this browser first
        ("en", "ko", "ko-KR", "en"),
        (None, "ko", "en-US,en;q=0.9", "ko"),  # then the person's saved choice
        (None, None, "ko-KR,ko;q=0.9,en;q=0.8", "ko"),  # then the browser's
        (None, None, "fr-FR,en;q=0.5", "en"),
        (None, None, None, "en"),  # and English
        ("<script>", None, "ko", "ko"),  # a cookie that names no language counts for nothing
    ],
)
def test_each_request_is_said_in_the_cookie_s_then_the_saved_then_the_browser_s_language(
    cookie: str | None, saved: str | None, accept: str | None, expected: str
) -> None:
    headers = {}
    if cookie is not None:
        headers["Cookie"] = f"{COOKIE}={cookie}"
    if accept is not None:
        headers["Accept-Language"] = accept
    h = handler(headers)
    h._language = h._choose_language(saved)
    assert h.language == expected


def test_a_request_that_fails_before_it_knows_the_caller_still_has_a_language() -> None:
    assert handler({"Accept-Language": "ko"}).language == "ko"
    assert handler({}).language == "en"


def test_an_api_error_is_said_in_the_request_s_language_fields_unchanged() -> None:
    with pytest.raises(ApiError) as caught:
        page.month_range("2026-13", NOW)
    error = caught.value
    ko = handler({"Accept-Language": "ko"})
    message, problems = ko.error_message(400, exc_info=(ApiError, error, None))
    assert message == "month는 2026-12처럼 YYYY-MM 형식으로 써야 합니다. '2026-13'은(는) 쓸 수 없습니다."
    en = handler({})
    message, _ = en.error_message(400, exc_info=(ApiError, error, None))
    assert message == "month must be written YYYY-MM, such as 2026-12, not '2026-13'."
    assert str(error.message) == message  # code and logs read the English


# -- the page -------------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(f"sqlite:///{tmp_path / 'quotas.sqlite'}")
    yield s
    s.close()


def alice_gpu(config: PlatformConfig) -> Holding:
    return Holding("snu-ai", "alice", "", "h100-x1", {"H100": 1}, Decimal(8), Decimal(2**34))


def render(store: Store, config: PlatformConfig, locale: str) -> str:
    """The page of tenant snu-ai as its admin kim sees it: alice used 3 GPU-hours this month and
    runs a server to be preempted in 5 minutes."""
    tenant: Tenant = config.tenants["snu-ai"]
    holding = alice_gpu(config)
    store.record_run(holding, NOW - timedelta(hours=5), NOW - timedelta(hours=2))
    start, end = page.month_range("", NOW)
    view = page.gather(store, KIM, tenant, start, end, NOW, {}, locale)
    running = Run(
        "r1", holding, NOW - timedelta(minutes=90), stop_at=NOW + timedelta(minutes=5), stop_note="tenant x needs them"
    )
    admin = view.admin
    assert admin is not None
    view = replace(view, admin=replace(admin, servers=page.server_rows([running], NOW, {}, locale)))
    return page.render(
        "quotas.html",
        locale,
        hub="/hub/",
        here="/services/quotas/?tenant=snu-ai",
        prefix="/services/quotas/",
        caller=KIM,
        xsrf="x",
        static_url=lambda name: f"/services/quotas/static/{name}",
        api="/services/quotas/api/tenants/snu-ai/",
        limit_fields=["servers", "cpu", "memory", "gpu_hours"],
        ssh_keys_api="/services/quotas/api/ssh-keys",
        tabs=[page.TenantTab("snu-ai", "SNU AI", "admin", True)],
        view=view,
        nav={},
        budget_warnings=[page.budget_warning("bob", "gpu", NOW, "a budget is spent", mine=False)],
        ssh_keys=[],
    )


def text_of(markup: str) -> str:
    """What a reader sees: the page's text without tags, scripts and SVG, spaces collapsed."""
    markup = re.sub(r"<(script|svg)\b.*?</\1>", " ", markup, flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", markup)))


def test_the_page_in_korean(store: Store, config: PlatformConfig) -> None:
    markup = render(store, config, "ko")
    seen = text_of(markup)
    assert '<html lang="ko">' in markup
    for korean in (
        "할당량과 사용량",
        "허브로 돌아가기",
        "2026년 12월 GPU 시간",
        "내 한도",
        "테넌트 snu-ai 현재: 상한과 사용량",
        "2026년 12월 사람별 일일 GPU 시간",
        "사람별·일별 (CSV)",
        "테넌트 snu-ai: GPU 시간 3 점유, 0 사용 (0%).",
        "시작 시각",
        "2026년 12월 3일 10:30 (UTC)",
        "1시간 30분",
        "중지 예정: 12:05 (UTC) (tenant x needs them)",
        "bob의 서버 'gpu'이(가) 12:00 (UTC)에 중지됩니다: a budget is spent",
        "아직 한도가 없습니다.",
        "한도 추가",
        "아직 SSH 키가 없습니다.",
        "키 추가",
        "로그아웃",
    ):
        assert korean in seen, korean
    for english in ("Quotas and usage", "Back to the hub", "Your limits", "Running for", "Add limit", "Logout"):
        assert english not in seen, english
    # the markup a sentence holds stays markup, where the Korean puts it
    assert "수량은 <code>tenants.yaml</code>과 같이 씁니다" in markup
    assert "<strong>3</strong> 점유" in markup
    # machine-readable values stay as they are
    assert 'data-kind="budget-warning"' in markup and 'data-held="3"' in markup
    assert '<option value="user">사용자</option>' in markup


def test_the_page_in_english_is_the_english_it_always_was(store: Store, config: PlatformConfig) -> None:
    markup = render(store, config, "en")
    seen = text_of(markup)
    assert '<html lang="en">' in markup
    for english in (
        "Quotas and usage",
        "GPU-hours in December 2026",
        "Tenant snu-ai now: ceiling and use",
        "Tenant snu-ai: 3 GPU-hours held, 0 used (0%).",
        "2026-12-03 10:30 UTC",
        "1h 30m",
        "stops at 12:05 UTC (tenant x needs them)",
        "bob's server 'gpu' will be stopped at 12:00 UTC: a budget is spent",
        "No limits yet: everyone may use up to the tenant's ceiling.",
        "No SSH keys yet: add the public key of each computer you connect from.",
    ):
        assert english in seen, english
    assert "할당량" not in seen


def test_the_language_switcher_goes_through_the_hub_and_back_to_this_page(store: Store, config: PlatformConfig) -> None:
    markup = render(store, config, "ko")
    links = dict(re.findall(r'<a class="nav-link px-1 aidc-language-link[^"]*"\s+href="([^"]+)" lang="(\w+)"', markup))
    assert {v: html.unescape(k) for k, v in links.items()} == {
        "en": "/hub/language?lang=en&next=%2Fservices%2Fquotas%2F%3Ftenant%3Dsnu-ai",
        "ko": "/hub/language?lang=ko&next=%2Fservices%2Fquotas%2F%3Ftenant%3Dsnu-ai",
    }
    current = re.search(r'aria-current="true">([^<]+)</a>', markup)
    assert current is not None and current[1] == "한국어"


def test_the_page_s_script_gets_its_words_in_the_page_s_language(store: Store, config: PlatformConfig) -> None:
    markup = render(store, config, "ko")
    found = re.search(r'<script type="application/json" id="quotas-texts">(.*?)</script>', markup, re.S)
    assert found is not None
    words = json.loads(found[1])
    assert words == page.script_texts("ko")
    assert words["remove"] == "삭제" and words["saved_limit"] == "{kind} {name}의 한도를 저장했습니다."
    english = page.script_texts("en")
    assert english["saved_limit"] == "Saved the limit of {kind} {name}."
    for key, text in words.items():  # the script fills the same placeholders in either language
        assert set(re.findall(r"\{(\w+)\}", text)) == set(re.findall(r"\{(\w+)\}", english[key])), key


def test_values_are_escaped_in_sentences_of_either_language(store: Store, config: PlatformConfig) -> None:
    for locale in ("en", "ko"):
        markup = page.render(
            "quotas.html",
            locale,
            hub="/hub/",
            here="/services/quotas/",
            prefix="/services/quotas/",
            caller=Caller("<b>x</b>", False, (), frozenset(), frozenset()),
            xsrf="x",
            static_url=str,
            api="",
            limit_fields=[],
            ssh_keys_api="",
            tabs=[],
            view=None,
            nav={},
            budget_warnings=[],
            ssh_keys=None,
        )
        assert "<b>x</b>" not in markup and "&lt;b&gt;x&lt;/b&gt;" in markup


# -- charts and values ----------------------------------------------------------------------------


def test_the_charts_speak_the_page_s_language(config: PlatformConfig) -> None:
    tenant = config.tenants["snu-ai"]
    start, end = date(2026, 12, 1), date(2027, 1, 1)
    ko = page.usage_chart(tenant, [], start, end, "ko")
    assert "2026년 12월에는 사용한 GPU가 없습니다" in ko and "2026년 12월의 날짜 (UTC)" in ko
    assert "No GPU" not in ko
    assert "No GPU was used in December 2026" in page.usage_chart(tenant, [], start, end, "en")
    used = [UsageRow("alice", date(2026, 12, 3), Decimal(3), Decimal(24), 1)]
    assert "alice, 12월 03일 (목): 3 GPU 시간" in page.usage_chart(tenant, used, start, end, "ko")
    assert "alice, Thu 03 Dec: 3 GPU-hours" in page.usage_chart(tenant, used, start, end, "en")
    meters_ko = page.now_meters(tenant, [], Decimal(3), "ko")
    assert "4개 중 0개 사용 중" in meters_ko and "이번 달 3.0 / 2,000.0" in meters_ko
    assert "0 of 4 in use" in page.now_meters(tenant, [], Decimal(3), "en")


@pytest.mark.parametrize(
    ("value", "en", "ko"),
    [
        (month_name(date(2026, 5, 1)), "May 2026", "2026년 5월"),
        (day_text(date(2026, 5, 4)), "Mon 04 May", "5월 04일 (월)"),
        (Minute(datetime(2026, 11, 20, 14, 5, tzinfo=UTC)), "2026-11-20 14:05 UTC", "2026년 11월 20일 14:05 (UTC)"),
        (Minute(datetime(2026, 11, 20, 14, 5, tzinfo=UTC), "time"), "14:05 UTC", "14:05 (UTC)"),
    ],
)
def test_dates_in_either_language(value: Any, en: str, ko: str) -> None:
    assert (str(value), translate(value, "en"), translate(value, "ko")) == (en, en, ko)


# -- the workspace's JupyterLab extension ---------------------------------------------------------


WORKSPACE: dict[str, Any] = {
    "user": "alice",
    "server": "",
    "running": True,
    "tenant": {"id": "lab", "display_name": "University Lab"},
    "profile": "h100-x2",
    "gpus": {"H100": 2},
    "borrowed": {"A100": 1},
    "budget": {
        "gpu_hours_left": "119.9587",
        "period": "December 2026",
        "period_resets": date(2027, 1, 1),
        "budgets": [],
        "spent": ["Tenant lab has used 10 of its 10 GPU-hours. Ask a platform admin."],
    },
    "notices": [],
}


def test_the_workspace_texts_in_english_are_what_the_extension_showed() -> None:
    texts = workspace_texts(WORKSPACE, NOW, "en")
    assert texts == {
        "status": "lab · 2 × H100 · 120.0 GPU-h left",
        "summary": [
            "Tenant: University Lab (lab)",
            "GPUs held: 2 × H100 (borrowed: 1 × A100)",
            "GPU-hours left December 2026: 120.0 (resets 2027-01-01)",
        ],
        "spent": ["GPU-hour budget used up: Tenant lab has used 10 of its 10 GPU-hours. Ask a platform admin."],
        "details": "Details",
        "details_caption": "The whole message: why, and what to do",
        "dialog_title": "AIDC Hub",
        "unavailable": "AIDC Hub: unavailable",
    }


def test_the_workspace_texts_in_korean() -> None:
    texts = workspace_texts(WORKSPACE, NOW, "ko")
    assert texts["status"] == "lab · 2 × H100 · 120.0 GPU 시간 남음"
    assert texts["summary"] == [
        "테넌트: University Lab (lab)",
        "사용 중인 GPU: 2 × H100 (빌린 GPU: 1 × A100)",
        "2026년 12월 남은 GPU 시간: 120.0 (2027년 1월 1일에 초기화)",
    ]
    assert texts["spent"][0].startswith("GPU 시간 예산 소진: ")
    assert texts["details"] == "자세히" and texts["unavailable"] == "AIDC Hub: 연결할 수 없음"


def test_a_workspace_without_a_tenant_or_budget() -> None:
    idle = {**WORKSPACE, "running": False, "tenant": None, "budget": None, "gpus": {}, "borrowed": {}}
    assert workspace_texts(idle, NOW, "en")["status"] == "AIDC Hub: no tenant"
    assert workspace_texts(idle, NOW, "ko")["status"] == "AIDC Hub: 테넌트 없음"
    assert workspace_texts(idle, NOW, "ko")["summary"] == []
    free = {**WORKSPACE, "budget": {**WORKSPACE["budget"], "gpu_hours_left": None, "spent": []}, "borrowed": {}}
    assert workspace_texts(free, NOW, "en")["status"] == "lab · 2 × H100 · no GPU-hour budget"
    assert workspace_texts(free, NOW, "en")["summary"][1:] == ["GPUs held: 2 × H100", "No GPU-hour budget applies"]

"""The `browser` tier in Korean (issue 19): a person whose Chromium speaks Korean (``ko-KR``) logs
in, reads the spawn form, a quota refusal, the quotas page and JupyterLab in Korean; switching to
English works on every page and is remembered for the person, in another browser too.

The Korean the pages must show is read from the catalogs (``_(...).say("ko")``), so these tests
check that each page really says the catalog's sentence, not English.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from i18n import _, ngettext
from quotas import paths
from quotas.store import Store
from tests.bed.hub import PASSWORDS, Client, Hub
from tests.browser.conftest import ARTIFACTS
from tests.browser.test_browser import SLOW, hold_all_lab_h100

HANGUL = re.compile(r"[\uac00-\ud7a3]")


def ko(msgid: str, **values: object) -> str:
    return _(msgid, **values).say("ko")


@pytest.fixture
def korean(browser: Browser) -> Iterator[BrowserContext]:
    """A browser whose language is Korean: Accept-Language ko-KR, navigator.language ko-KR."""
    context = browser.new_context(locale="ko-KR", viewport={"width": 1280, "height": 860})
    try:
        yield context
    finally:
        context.close()


def log_in(page: Page, hub: Hub, name: str) -> None:
    page.goto(f"{hub.url}/hub/login")
    page.fill("input[name=username]", name)
    page.fill("input[name=password]", PASSWORDS[name])
    page.click("#login_submit, form [type=submit]")
    page.wait_for_url(re.compile(r"/hub/spawn"))


def screenshot(page: Page, name: str) -> None:
    """The Korean browser's page as ``test-artifacts/browser/<name>.png`` (Hangul shows as boxes
    where no Korean font is installed; the tests read the text, not the picture)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=ARTIFACTS / f"{name}.png", full_page=True)


def saved_choice(hub: Hub, name: str) -> str | None:
    store = Store(paths.db_url(str(hub.data_dir)))
    try:
        return store.locale_of(name)
    finally:
        store.close()


def test_a_korean_browser_gets_the_login_page_spawn_form_and_refusal_in_korean(
    korean: BrowserContext, hub: Hub, clients: dict[str, Client]
) -> None:
    page = korean.new_page()
    page.goto(f"{hub.url}/hub/login")
    expect(page.locator("html")).to_have_attribute("lang", "ko")
    assert ko("Sign in") != "Sign in"
    expect(page.locator("#login_submit")).to_have_value(ko("Sign in"))
    expect(page.locator("body")).to_contain_text(ko("Username:"))
    screenshot(page, "30-ko-login")

    hold_all_lab_h100(clients)
    log_in(page, hub, "alice")
    expect(page.locator("fieldset[data-tenant=lab] .aidc-usage")).to_contain_text(
        ko("{used} of {ceiling} {gpu} GPUs in use", used=4, ceiling=4, gpu="H100")
    )
    expect(page.get_by_role("button", name=ko("Start"))).to_be_visible()
    page.check("input[name=choice][value='lab/h100-x1']")
    page.get_by_role("button", name=ko("Start")).click()

    error = page.locator(".spawn-error-msg")
    expect(error).to_be_visible()
    asked = ngettext(
        "You asked for {count} {gpu} GPU (profile {profile})",
        "You asked for {count} {gpu} GPUs (profile {profile})",
        1,
        gpu="H100",
        profile="h100-x1",
    ).say("ko")
    expect(error).to_contain_text(asked)
    for part in ("bob: 2", "carol: 2", "kim"):
        expect(error).to_contain_text(part)
    assert "You asked for" not in error.inner_text()
    screenshot(page, "31-ko-over-quota-refusal")
    # the person's language was saved at login: the SSH gateway and the API follow it
    assert saved_choice(hub, "alice") == "ko"


def test_the_quotas_page_is_in_korean(korean: BrowserContext, hub: Hub) -> None:
    page = korean.new_page()
    log_in(page, hub, "kim")
    page.goto(f"{hub.url}/services/quotas/")
    expect(page.locator("h1")).to_have_text(ko("Quotas and usage"))
    expect(page.locator("html")).to_have_attribute("lang", "ko")
    assert HANGUL.search(page.locator("main, body").first.inner_text())
    screenshot(page, "32-ko-quotas-page")


def test_jupyterlab_opens_in_korean(korean: BrowserContext, hub: Hub, clients: dict[str, Client]) -> None:
    page = korean.new_page()
    log_in(page, hub, "dave")  # his Korean is saved as he logs in
    r = clients["dave"].spawn(tenant="startup", profile="cpu")
    assert r.status_code in (201, 202), r.text
    clients["dave"].wait_ready()
    page.goto(f"{hub.url}/user/dave/lab")
    menubar = page.locator("#jp-menu-panel, .lm-MenuBar").first
    expect(menubar).to_contain_text("파일", timeout=SLOW)  # JupyterLab's own language pack: "File"
    expect(menubar).to_contain_text("편집")  # "Edit"
    expect(page.locator("html")).to_have_attribute("lang", re.compile(r"^ko"), timeout=SLOW)
    screenshot(page, "33-ko-jupyterlab")


def test_switching_to_english_works_and_is_remembered(browser: Browser, korean: BrowserContext, hub: Hub) -> None:
    page = korean.new_page()
    log_in(page, hub, "bob")
    page.goto(f"{hub.url}/hub/home")
    expect(page.locator("html")).to_have_attribute("lang", "ko")

    page.locator("a.aidc-language-link[lang=en]").first.click()
    page.wait_for_url(re.compile(r"/hub/home"))
    expect(page.locator("html")).to_have_attribute("lang", "en")
    assert saved_choice(hub, "bob") == "en"
    # every page follows: the quotas page too, with its own switcher marking English
    page.goto(f"{hub.url}/services/quotas/")
    expect(page.locator("h1")).to_have_text("Quotas and usage")

    # another Korean browser: the login page is Korean (nobody is known yet), bob's pages English
    other = browser.new_context(locale="ko-KR")
    try:
        again = other.new_page()
        again.goto(f"{hub.url}/hub/login")
        expect(again.locator("html")).to_have_attribute("lang", "ko")
        log_in(again, hub, "bob")
        expect(again.locator("html")).to_have_attribute("lang", "en")
        expect(again.get_by_role("button", name="Start")).to_be_visible()
    finally:
        other.close()

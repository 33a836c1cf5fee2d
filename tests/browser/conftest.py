"""Fixtures of the `browser` tier: a real hub per module, and headless Chromium driven by Playwright.

The tier needs Debian's Chromium (``tests/bed/debian-packages.sh chromium``); Playwright's own
browser downloads are never used. Without Chromium the tier fails rather than skipping, so a CI
run without it cannot pass by testing nothing. ``AIDC_CHROMIUM`` points at another binary.

Screenshots of each step go to ``test-artifacts/browser/`` (git-ignored), and one named
``FAILED-<test>.png`` of the page as it was when a test failed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.bed.hub import PASSWORDS, Client, Hub, running_hub, stop_all_servers

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts" / "browser"
CHROMIUM = Path(os.environ.get("AIDC_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",  # the tests may run as root in a container, where Chromium's sandbox cannot start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PEOPLE = ("alice", "bob", "carol", "dave", "kim")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[pytest.TestReport]:
    # the `page` fixture reads this at teardown to keep a screenshot of a failure
    report = yield
    if report.when == "call":
        item.stash[CALL_FAILED] = report.failed
    return report


CALL_FAILED = pytest.StashKey[bool]()


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    with running_hub(tmp_path_factory.mktemp("browser-hub")) as h:
        yield h


@pytest.fixture(scope="module")
def clients(hub: Hub) -> dict[str, Client]:
    """Everyone, logged in for the REST API (to hold GPUs, and to clean up)."""
    return {name: hub.login(name, PASSWORDS[name]) for name in PEOPLE}


@pytest.fixture(autouse=True)
def no_servers_left(clients: dict[str, Client]) -> Iterator[None]:
    """Each test ends with no workspace running, so the next one sees all GPUs free."""
    yield
    stop_all_servers(clients.values())


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"The browser tier needs Chromium at {CHROMIUM}. Install it with"
            " `bash tests/bed/debian-packages.sh chromium` or set AIDC_CHROMIUM.",
            pytrace=False,
        )
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A fresh page in its own context (no cookies shared between tests)."""
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    try:
        yield pg
    finally:
        if request.node.stash.get(CALL_FAILED, False):
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            pg.screenshot(path=ARTIFACTS / f"FAILED-{request.node.name}.png", full_page=True)
        context.close()


@pytest.fixture
def shot(page: Page) -> Callable[[str], Path]:
    """``shot("login")`` saves the page as ``test-artifacts/browser/login.png``."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    def save(name: str) -> Path:
        path = ARTIFACTS / f"{name}.png"
        page.screenshot(path=path, full_page=True)
        return path

    return save

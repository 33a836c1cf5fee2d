"""The `browser` tier: the GPU queue as people see it (issue 14, part 3). A waiting server's start page
shows its place in line, which moves when the one before it starts; the tenant admin's quotas page
lists the whole line with places and reasons; a member's page lists their own waiting request only;
the spawn form says before the start that borrowed GPUs may be taken back, and the home page then
says the server runs on them.

Tenants: tests/hub/tenants.yaml with queues opened here (`lab`: alice, bob, carol, admin kim, 4 H100).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from playwright.sync_api import Browser, Page, expect

from tests.bed.hub import Client, Hub, progress_until
from tests.browser.conftest import ARTIFACTS
from tests.browser.test_quotas_page import log_in
from tests.hub.test_queue_api import queue_hub, zed_and_borrowing

Shot = Callable[[str], Path]


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    """A hub whose tenants' GPU queues are open (the tiers' tenants refuse at once)."""
    # startup may borrow lab's idle H100 (zed_and_borrowing); lab borrows nothing
    with queue_hub(tmp_path_factory.mktemp("queue-page"), "H100:4,A100:2", {}, zed_and_borrowing).running() as h:
        yield h


def placed(kim: Client, count: int, timeout: float = 30) -> None:
    """Until the quotas API shows ``count`` requests of lab's line, each with its place."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = requests.get(
            f"{kim.hub.url}/services/quotas/api/tenants/lab/queue",
            headers={"Authorization": f"token {kim.token}"},
            timeout=30,
        )
        queue = r.json()["queue"]
        if len(queue) == count and all(q["position"] for q in queue):
            return
        time.sleep(0.3)
    raise AssertionError(f"lab's line does not show {count} placed requests")


def test_the_start_page_shows_the_place_and_the_admin_sees_the_line(
    page: Page, browser: Browser, hub: Hub, clients: dict[str, Client], shot: Shot
) -> None:
    alice, bob, carol, kim = clients["alice"], clients["bob"], clients["carol"], clients["kim"]
    # lab's 4 H100 all held (bob 2 + 1, alice 1): carol's request waits, then alice's second one
    for client, server, profile in ((bob, "", "h100-x2"), (bob, "b2", "h100-x1"), (alice, "", "h100-x1")):
        assert client.spawn(server, tenant="lab", profile=profile).status_code in (201, 202)
    for client, server in ((bob, ""), (bob, "b2"), (alice, "")):
        client.wait_ready(server)
    assert carol.spawn(tenant="lab", profile="h100-x1").status_code == 202
    progress_until(carol, "", "you are 1st of 1")
    assert alice.spawn("second", tenant="lab", profile="h100-x1").status_code == 202
    placed(kim, 2)

    # kim, lab's admin: the GPU queue section lists both, first in line first, with why they wait
    log_in(page, hub, "kim")
    page.goto(f"{hub.url}/services/quotas/?tenant=lab")
    rows = page.locator("#gpu-queue-table tbody tr")
    expect(rows).to_have_count(2)
    first, second = rows.nth(0), rows.nth(1)
    expect(first.locator("td.place")).to_have_text("1 of 2")
    expect(first).to_have_attribute("data-user", "carol")
    expect(first.locator("td.reason")).to_have_text("waiting for 1 × H100: tenant lab uses 4 of 4; you are 1st of 2")
    expect(second.locator("td.place")).to_have_text("2 of 2")
    expect(second).to_have_attribute("data-user", "alice")
    expect(second).to_have_attribute("data-server", "second")
    expect(second.locator("td.reason")).to_contain_text("you are 2nd of 2")
    expect(second).to_contain_text("1 × H100")
    shot("queue-admin")

    # carol, a member: her own waiting request, nobody else's, and no tenant queue section
    carols = browser.new_context(viewport={"width": 1280, "height": 860})
    try:
        mine = carols.new_page()
        log_in(mine, hub, "carol")
        mine.goto(f"{hub.url}/services/quotas/?tenant=lab")
        expect(mine.locator("#my-queue-table tbody tr")).to_have_count(1)
        expect(mine.locator("#my-queue-table td.place")).to_have_text("1 of 2")
        expect(mine.locator("#gpu-queue")).to_have_count(0)
        assert "alice" not in mine.content()
    finally:
        carols.close()

    # alice's start page of "second": 2nd of 2, then 1st of 1 once carol starts on a freed H100
    alices = browser.new_context(viewport={"width": 1280, "height": 860})
    try:
        pending = alices.new_page()
        pending.set_default_timeout(60_000)
        log_in(pending, hub, "alice")
        pending.goto(f"{hub.url}/hub/spawn-pending/alice/second")
        expect(pending.locator("#progress-message")).to_contain_text("you are 2nd of 2")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        pending.screenshot(path=ARTIFACTS / "queue-start-page.png", full_page=True)
        bob.stop_server("b2")
        expect(pending.locator("#progress-message")).to_contain_text("you are 1st of 1")
        expect(pending.locator("#progress-log")).to_contain_text("you are 2nd of 2")
    finally:
        alices.close()
    carol.wait_ready()

    # kim's page, reloaded: alice's second request is the whole line now
    page.reload()
    expect(rows).to_have_count(1)
    expect(rows.nth(0).locator("td.place")).to_have_text("1 of 1")
    expect(rows.nth(0).locator("td.reason")).to_contain_text("you are 1st of 1")
    # the running servers list carol's, which started on lab's own GPUs (nothing borrowed)
    carols_row = page.locator("#tenant-servers-table tr[data-user=carol]")
    expect(carols_row).to_have_count(1)
    expect(carols_row.locator(".borrowed, .stops")).to_have_count(0)
    shot("queue-admin-moved")

    alice.stop_server("second")  # leaves the line
    page.reload()
    expect(page.locator("#gpu-queue-empty")).to_have_text("No one waits.")


def test_the_borrowed_gpus_notice_comes_before_the_start(
    page: Page, hub: Hub, clients: dict[str, Client], shot: Shot
) -> None:
    dave = clients["dave"]
    assert dave.spawn(tenant="startup", profile="h100-x1").status_code in (201, 202)
    dave.wait_ready()  # startup's one H100: a second server can only borrow lab's idle ones
    log_in(page, hub, "dave")
    page.goto(f"{hub.url}/hub/spawn/dave/borrowed")
    notice = page.locator("#aidc-borrow")
    expect(notice).to_be_visible()
    expect(notice).to_contain_text("Their owner may need them back")
    expect(notice).to_contain_text("startup may borrow idle GPUs of other tenants")
    expect(page.locator("#borrow-yes")).to_be_checked()  # the default; "wait" is the other choice
    expect(page.locator("#borrow-no")).not_to_be_checked()
    page.check("input[name=choice][value='startup/h100-x1']")
    shot("queue-borrow-notice")
    page.get_by_role("button", name="Start").click()
    dave.wait_ready("borrowed")
    page.goto(f"{hub.url}/hub/home")
    expect(page.locator(".aidc-notice")).to_contain_text(
        "Your server 'borrowed' runs on GPUs borrowed from another tenant (1 × H100)"
    )
    shot("queue-borrowed-home")

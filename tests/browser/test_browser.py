"""The `browser` tier: people using the hub in Chromium, from the login page to a notebook.

Tenants (tests/hub/tenants.yaml): `lab` (alice, bob, carol; admin kim; 4 H100; profiles cpu,
h100-x1, h100-x2) and `startup` (dave; profiles cpu, h100-x1, a100-x1). The hub simulates
H100:4 (indices 0-3) and A100:2 (indices 4-5). Every test ends with no server running.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from playwright.sync_api import Page, expect

from tests.bed.hub import PASSWORDS, Client, Hub

Shot = Callable[[str], Path]
# starting a workspace, then a kernel, takes 10-20 s each on a small CI machine
SLOW = 90_000
CODE = 'import os; print("CUDA=" + os.environ["CUDA_VISIBLE_DEVICES"])'


def log_in(page: Page, hub: Hub, name: str, shot: Shot | None = None) -> None:
    """Log in through the login form; the hub then shows the spawn form."""
    page.goto(f"{hub.url}/hub/login")
    page.fill("input[name=username]", name)
    page.fill("input[name=password]", PASSWORDS[name])
    if shot:
        shot("01-login")
    page.click("#login_submit, form [type=submit]")
    page.wait_for_url(re.compile(r"/hub/spawn"))
    expect(page.locator("#spawn_form")).to_be_visible()


def hold_all_lab_h100(clients: dict[str, Client]) -> None:
    """bob and carol start 2 x H100 each through the REST API: tenant lab's 4 H100 are all in use."""
    for name in ("bob", "carol"):
        r = clients[name].spawn(tenant="lab", profile="h100-x2")
        assert r.status_code in (201, 202), r.text
    for name in ("bob", "carol"):
        clients[name].wait_ready()


def radio_values(page: Page) -> list[str]:
    return page.locator("input[type=radio][name=choice]").evaluate_all("els => els.map(e => e.value)")


def test_single_tenant_user_sees_only_their_tenants_profiles(page: Page, hub: Hub, shot: Shot) -> None:
    log_in(page, hub, "dave")
    expect(page.locator("fieldset[data-tenant]")).to_have_count(1)
    expect(page.locator("fieldset[data-tenant=startup] legend")).to_contain_text("Startup Inc")
    assert radio_values(page) == ["startup/cpu", "startup/h100-x1", "startup/a100-x1"]
    expect(page.locator("#spawn_form")).not_to_contain_text("University Lab")
    shot("02-spawn-form-dave")


def test_over_quota_spawn_shows_who_holds_the_gpus(
    page: Page, hub: Hub, clients: dict[str, Client], shot: Shot
) -> None:
    hold_all_lab_h100(clients)
    log_in(page, hub, "alice")
    expect(page.locator("fieldset[data-tenant=lab] .aidc-usage")).to_contain_text("4 of 4 H100 GPUs in use")
    page.check("input[name=choice][value='lab/h100-x1']")
    shot("04-spawn-form-alice-over-quota")
    page.get_by_role("button", name="Start").click()

    error = page.locator(".spawn-error-msg")
    expect(error).to_be_visible()
    # the reason as written for people, without JupyterHub's exception prefix
    assert error.inner_text().startswith("Error: You asked for 1 H100 GPU (profile h100-x1); tenant lab uses 4 of 4")
    for part in ("bob: 2", "carol: 2", "ask a tenant admin (kim)"):
        expect(error).to_contain_text(part)
    # the form comes back with the refused choice still selected
    expect(page.locator("input[name=choice][value='lab/h100-x1']")).to_be_checked()
    shot("05-over-quota-refusal")
    assert clients["alice"].api("GET", "/users/alice").json()["servers"] == {}


def test_gpu_profile_notebook_sees_its_gpus(page: Page, hub: Hub, shot: Shot) -> None:
    log_in(page, hub, "alice", shot)
    expect(page.locator("fieldset[data-tenant=lab] .aidc-usage")).to_contain_text("0 of 4 H100 GPUs in use")
    page.check("input[name=choice][value='lab/h100-x2']")
    shot("03-spawn-form-alice")
    page.get_by_role("button", name="Start").click()

    page.wait_for_url(re.compile(r"/user/alice/lab"), timeout=SLOW)
    notebook_card = page.locator('.jp-LauncherCard[data-category="Notebook"]').first
    expect(notebook_card).to_be_visible(timeout=SLOW)
    shot("06-jupyterlab-launcher")
    notebook_card.click()

    # a cell run while the kernel is still connecting can be dropped: wait until the status bar says Idle
    kernel_status = page.locator(".jp-StatusBar-TextItem", has_text="Python 3 (ipykernel) | Idle")
    expect(kernel_status).to_be_visible(timeout=SLOW)
    editor = page.locator(".jp-Cell .cm-content").first
    editor.click()
    page.keyboard.type(CODE)
    expect(editor).to_have_text(CODE)
    page.keyboard.press("Shift+Enter")

    output = page.locator(".jp-OutputArea-output").filter(has_text="CUDA=").first
    expect(output).to_be_visible(timeout=SLOW)
    shot("07-notebook-cuda-output")
    match = re.fullmatch(r"CUDA=(\d+),(\d+)", output.inner_text().strip())
    assert match, output.inner_text()
    gpus = set(match.groups())
    assert len(gpus) == 2 and gpus <= {"0", "1", "2", "3"}, f"expected two distinct H100 indices, got {match[0]}"

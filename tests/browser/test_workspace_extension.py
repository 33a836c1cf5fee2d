"""The JupyterLab extension of the workspaces (labextension/) in a real JupyterLab: alice's GPU
server shows her tenant, GPUs and GPU-hours left in the status bar, and a warning of the hub (a
preemption) as a notification."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from playwright.sync_api import Page, expect

from quotas import paths
from quotas.store import Store
from tests.bed.hub import Client, Hub
from tests.browser.test_browser import SLOW, Shot, log_in


def test_jupyterlab_shows_the_tenant_gpus_budget_and_the_hub_s_warning(
    page: Page, hub: Hub, clients: dict[str, Client], shot: Shot
) -> None:
    log_in(page, hub, "alice")  # before her server runs: the hub shows the spawn form
    alice = clients["alice"]
    r = alice.spawn(tenant="lab", profile="h100-x2")
    assert r.status_code in (201, 202), r.text
    alice.wait_ready()
    store = Store(paths.db_url(str(hub.data_dir)))
    try:
        stop_at = datetime.now(UTC) + timedelta(minutes=10)
        assert store.mark_preempted(("alice", ""), stop_at, "tenant startup needs its GPUs back")
    finally:
        store.close()

    page.goto(f"{hub.url}/user/alice/lab")
    status = page.locator(".aidc-hub-status")
    expect(status).to_contain_text("lab · 2 × H100 · ", timeout=SLOW)
    expect(status).to_contain_text("GPU-h left")
    toast = page.locator(".Toastify__toast", has_text="Your default server will be stopped")
    expect(toast).to_be_visible(timeout=SLOW)
    expect(toast).to_contain_text("tenant startup needs its GPUs back")
    shot("20-jupyterlab-aidc-status-and-warning")

    # shown once: a reload does not show it again
    page.reload()
    expect(status).to_contain_text("lab · 2 × H100", timeout=SLOW)
    page.wait_for_timeout(3000)
    expect(page.locator(".Toastify__toast", has_text="Your default server will be stopped")).to_have_count(0)

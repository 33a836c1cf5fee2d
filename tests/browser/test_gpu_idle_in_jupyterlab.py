"""The `browser` tier: the hub's GPU-idle warning inside JupyterLab (issue 18). alice's GPU sits idle
(the stand-in nvidia-smi of tests/hub/test_gpu_idle.py says 0 %), the quotas service's culler warns
her server, and her JupyterLab shows the warning as a notification through the workspace's extension
(labextension/), with the time left and how to keep the server; the server is stopped later."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.bed.hub import PASSWORDS, REPO, Client, Hub
from tests.browser.test_browser import SLOW, Shot, log_in
from tests.hub.test_gpu_idle import TENANTS, open_run

# warned after 5 s of idle GPUs, stopped after 90 s: time enough for JupyterLab to load meanwhile
TENANTS_HERE = TENANTS.replace("after: 10s, warn_before: 7s", "after: 90s, warn_before: 85s")


@pytest.fixture(scope="module")
def idle_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Hub, Path]]:
    assert TENANTS_HERE != TENANTS
    folder = tmp_path_factory.mktemp("nvidia-smi")
    (folder / "nvidia-smi").symlink_to(REPO / "tests" / "bed" / "fake-nvidia-smi")
    (folder / "nvidia-smi.json").write_text("{}")
    folder.chmod(0o755)
    workdir = tmp_path_factory.mktemp("gpu-idle-lab")
    tenants = workdir / "tenants.yaml"
    tenants.write_text(TENANTS_HERE)
    env = {"PATH": f"{folder}{os.pathsep}{os.environ['PATH']}"}
    h = Hub(workdir, accounts=PASSWORDS, fake_gpus="H100:4", tenants=tenants, env=env)
    try:
        h.start()
        yield h, folder
    finally:
        h.stop()


def test_the_gpu_idle_warning_appears_inside_jupyterlab(page: Page, idle_hub: tuple[Hub, Path], shot: Shot) -> None:
    hub, smi = idle_hub
    log_in(page, hub, "alice")
    alice: Client = hub.login("alice", PASSWORDS["alice"])
    assert alice.spawn(tenant="lab", profile="h100-x1").status_code in (201, 202)
    alice.wait_ready()
    admin = hub.login("admin", PASSWORDS["admin"])
    gpu = admin.api("GET", "/users/alice").json()["servers"][""]["state"]["aidc"]["gpus"][0]
    (smi / "nvidia-smi.json").write_text(json.dumps({gpu: {"utilization": 0, "memory_used_mib": 3}}))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        run = open_run(hub, "alice")
        if run is not None and run.stop_at is not None:
            break
        time.sleep(0.5)
    else:
        raise AssertionError(f"alice's idle GPU was not warned:\n{hub.log_tail()}")

    page.goto(f"{hub.url}/user/alice/lab")
    toast = page.locator(".Toastify__toast", has_text="Your default server will be stopped at")
    expect(toast).to_be_visible(timeout=SLOW)
    # JupyterLab cuts a toast at 140 characters: the stop time, the time left, which GPUs and since
    # when show, and its Details button the whole text, how to keep the server among it
    expect(toast).to_contain_text("(1 H100 GPU [")
    expect(toast).to_contain_text("have been under 5% utilization since")
    shot("21-jupyterlab-gpu-idle-warning")
    toast.get_by_role("button", name="Details").click()
    dialog = page.locator(".jp-Dialog")
    expect(dialog).to_contain_text("start a CPU-only profile instead", timeout=SLOW)
    expect(dialog).to_contain_text("Save your work now.")

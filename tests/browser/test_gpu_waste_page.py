"""The `browser` tier: the waste on the quotas page (issue 18). kim, admin of tenant `lab`, sees
each running GPU server's utilization over the last hour as a small chart, and per person and for
the tenant the GPU-hours held and used this month with their ratio: alice computes on her GPU, bob
holds his idle. The hub and its stand-in nvidia-smi are those of tests/hub/test_gpu_waste.py."""

from __future__ import annotations

import json
import time
from decimal import Decimal
from pathlib import Path

from playwright.sync_api import Page, expect

from tests.bed.hub import PASSWORDS, Client, Hub
from tests.browser.test_quotas_page import Shot, log_in
from tests.hub.test_gpu_waste import hub, open_runs, smi_dir  # noqa: F401 (fixtures: this module's hub)


def test_tenant_admin_sees_who_holds_idle_gpus(
    page: Page,
    hub: Hub,  # noqa: F811
    clients: dict[str, Client],
    smi_dir: Path,  # noqa: F811
    shot: Shot,
) -> None:
    admin = hub.login("admin", PASSWORDS["admin"])
    gpus = {}
    for name in ("alice", "bob"):
        assert clients[name].spawn(tenant="lab", profile="h100-x1").status_code in (201, 202)
        clients[name].wait_ready()
        gpus[name] = admin.api("GET", f"/users/{name}").json()["servers"][""]["state"]["aidc"]["gpus"][0]
    use = {
        gpus["alice"]: {"utilization": 100, "memory_used_mib": 40312},
        gpus["bob"]: {"utilization": 0, "memory_used_mib": 3},
    }
    (smi_dir / "nvidia-smi.json").write_text(json.dumps(use))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and open_runs(hub)["alice"].gpu_used_ms < 3000:
        time.sleep(0.3)

    log_in(page, hub, "kim")
    page.goto(f"{hub.url}/services/quotas/?tenant=lab")
    servers = page.locator("#tenant-servers-table")
    for name, latest in (("alice", "100%"), ("bob", "0%")):
        chart = servers.locator(f"tr[data-user={name}] td.utilization svg.aidc-sparkline")
        expect(chart).to_be_visible()
        assert int(chart.get_attribute("data-points") or "0") >= 2, name
        expect(chart.locator("text.value")).to_have_text(latest)
        expect(chart.locator("polyline")).to_have_count(1)
    alice_row = page.locator("#people-table tr[data-user=alice]")
    bob_row = page.locator("#people-table tr[data-user=bob]")
    assert Decimal(alice_row.locator("td.gpu-used").get_attribute("data-value") or "0") > 0
    expect(bob_row.locator("td.gpu-used")).to_have_text("0")
    expect(bob_row.locator("td.efficiency")).to_have_text("0%")
    assert alice_row.locator("td.efficiency").inner_text().endswith("%")
    assert alice_row.locator("td.efficiency").inner_text() != "0%"
    tenant = page.locator("#tenant-gpu-hours")
    expect(tenant).to_contain_text("GPU-hours held")
    assert Decimal(tenant.get_attribute("data-used") or "0") > 0
    shot("quotas-gpu-waste")

    # bob, a member, sees his own server's chart, and no one else's
    bob_page = page.context.browser.new_context().new_page() if page.context.browser else page
    log_in(bob_page, hub, "bob")
    bob_page.goto(f"{hub.url}/services/quotas/?tenant=lab")
    expect(bob_page.locator("#my-servers-table svg.aidc-sparkline")).to_have_count(1)
    expect(bob_page.locator("#tenant-servers-table")).to_have_count(0)
    assert "alice" not in bob_page.content()
    expect(bob_page.locator("#my-gpu-used")).to_contain_text("0")

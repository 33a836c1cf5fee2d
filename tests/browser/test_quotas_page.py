"""The `browser` tier: the quotas page (/services/quotas/) as a tenant admin and as members use it.

kim (admin of tenant `lab`) reaches the page through the hub's nav bar, sees who used GPU-hours
this month as a chart, and lowers alice's H100 limit in the limits table; the hub's admission then
refuses alice's second GPU server with that limit. bob (a member) sees his own numbers only.
Tenants: tests/hub/tenants.yaml (`lab`: alice, bob, carol, admin kim, 4 H100; `startup`: dave, admin erin).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from playwright.sync_api import Locator, Page, expect

from quotas.policy import Holding
from quotas.quantity import format_number
from quotas.store import Store
from tests.bed.hub import PASSWORDS, Client, Hub

Shot = Callable[[str], Path]
GiB = Decimal(2**30)


@pytest.fixture(scope="module")
def store(hub: Hub) -> Iterator[Store]:
    """The hub's own quotas database (the spawners and the quotas service share it)."""
    s = Store(f"sqlite:///{hub.data_dir / 'quotas.sqlite'}", migrate=False)
    yield s
    s.close()


@pytest.fixture(scope="module")
def ledger(store: Store) -> dict[str, Decimal]:
    """Finished runs of this month in tenant lab: GPU-hours per person (what the chart must show)."""
    now = datetime.now(UTC)
    month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    runs = {"alice": (1, timedelta(hours=2)), "carol": (2, timedelta(hours=3))}  # GPUs, duration
    hours: dict[str, Decimal] = {}
    for user, (gpus, length) in runs.items():
        ended = now - timedelta(minutes=1)
        started = max(month_start, ended - length)  # the month's part only, even on the 1st
        holding = Holding("lab", user, "", f"h100-x{gpus}", {"H100": gpus}, Decimal(2), 4 * GiB, ("lab",))
        store.record_run(holding, started, ended)
        hours[user] = gpus * Decimal((ended - started).total_seconds()) / 3600
    return hours


def log_in(page: Page, hub: Hub, name: str) -> None:
    """Log in through the login form, landing on the hub's home page (not a running workspace)."""
    page.goto(f"{hub.url}/hub/login?next=%2Fhub%2Fhome")
    page.fill("input[name=username]", name)
    page.fill("input[name=password]", PASSWORDS[name])
    page.click("#login_submit, form [type=submit]")
    page.wait_for_url(re.compile(r"/hub/home$"))


def open_quotas_from_nav(page: Page) -> None:
    """Through the hub's nav bar, as a person would (the service logs them in through the hub's OAuth)."""
    page.locator("nav").get_by_role("link", name="Quotas", exact=True).click()
    page.wait_for_url(re.compile(r"/services/quotas/(\?.*)?$"))
    expect(page.locator("h1")).to_have_text("Quotas and usage")


def limit_row(page: Page, kind: str, name: str) -> Locator:
    return page.locator(f"#limits-editor tr.limit-row[data-kind={kind}][data-name={name}]")


def test_tenant_admin_lowers_a_limit_and_admission_enforces_it(
    page: Page, hub: Hub, clients: dict[str, Client], store: Store, ledger: dict[str, Decimal], shot: Shot
) -> None:
    log_in(page, hub, "kim")
    open_quotas_from_nav(page)
    # kim administers lab only: one tab, no other tenant anywhere on the page
    expect(page.locator("#tenant-tabs a[data-tenant]")).to_have_count(1)
    expect(page.locator("#tenant-header")).to_have_attribute("data-tenant", "lab")
    expect(page.locator("body")).not_to_contain_text("Startup Inc")

    # the chart: one bar per person and day with GPU-hours, tooltips, a legend and labelled axes
    chart = page.locator("#usage-chart svg.aidc-chart")
    expect(chart).to_be_visible()
    bars = chart.locator("rect.bar")
    expect(bars.first).to_be_visible()
    drawn = bars.evaluate_all(
        "els => els.map(e => [e.dataset.series, Number(e.dataset.value), Number(e.getAttribute('height'))])"
    )
    # each person's bars (one per day they ran) add up to their GPU-hours; heights are proportional
    assert {series for series, _, _ in drawn} == {"alice", "carol"}
    for user, hours in ledger.items():
        assert sum(v for series, v, _ in drawn if series == user) == pytest.approx(float(hours), abs=0.01)
    scale = drawn[0][2] / drawn[0][1]
    assert all(h == pytest.approx(v * scale, rel=0.01, abs=0.05) for _, v, h in drawn)
    alice_bar = chart.locator("rect.bar[data-series=alice]").first
    expect(alice_bar.locator("title")).to_contain_text("alice, ")
    expect(chart.locator(".legend-item")).to_have_count(2)
    expect(chart.locator("text.axis-title.y")).to_have_text("GPU-hours")
    expect(chart.locator("text.axis-title.x")).to_contain_text("Day of ")
    expect(page.locator("#people-table tr[data-user=carol]")).to_contain_text(format_number(ledger["carol"], 2))
    # the CSV export is the API's, reached with the page's login
    csv_link = page.locator("#csv-daily")
    expect(csv_link).to_have_attribute("href", re.compile(r"api/tenants/lab/usage\?format=csv&"))
    exported = page.request.get(f"{hub.url}{csv_link.get_attribute('href')}")
    assert exported.ok, exported.text()
    lines = exported.text().splitlines()
    assert lines[0] == "day,user,gpu_hours,cpu_hours,runs,gpu_used_hours"
    assert {line.split(",")[1] for line in lines[1:]} == {"alice", "carol"}
    shot("10-quotas-admin")

    # last month: nothing ran; back to this month
    this_month = page.locator("#month-name").inner_text()
    page.locator("#month-nav a[rel=prev]").click()
    expect(page.locator("#month-name")).not_to_have_text(this_month)
    expect(chart.locator("rect.bar")).to_have_count(0)
    expect(chart.locator("text.empty")).to_contain_text("No GPU was used in")
    page.locator("#month-nav").get_by_role("link", name="This month").click()
    expect(page.locator("#month-name")).to_have_text(this_month)

    # a limit for alice, added in the table
    add = page.locator("#limit-add")
    add.locator("select[name=kind]").select_option("user")
    add.locator("input[name=name]").fill("alice")
    add.locator("input[name='gpus.H100']").fill("2")
    add.get_by_role("button", name="Add limit").click()
    row = limit_row(page, "user", "alice")
    expect(row.locator(".saved")).to_have_text("Saved")
    expect(row.locator("td[data-field='gpus.H100']")).to_have_text("2")

    # more than the tenant's ceiling: the API's reason shows under the row, and nothing changes
    row.get_by_role("button", name="Edit").click()
    row.locator("input[name='gpus.H100']").fill("9")
    row.get_by_role("button", name="Save").click()
    problems = page.locator("#limits-editor tr.limit-problems [role=alert]")
    expect(problems).to_contain_text("gpus.H100 9 exceeds tenant lab's ceiling of 4 H100 GPUs")
    shot("11-quotas-limit-refused")
    stored = store.limit("lab", "user", "alice")
    assert stored is not None and dict(stored.gpus) == {"H100": 2}

    # lowered to 1: saved in place
    row.locator("input[name='gpus.H100']").fill("1")
    row.get_by_role("button", name="Save").click()
    expect(row.locator(".saved")).to_have_text("Saved")
    expect(row.locator("td[data-field='gpus.H100']")).to_have_text("1")
    expect(problems).to_have_count(0)
    shot("12-quotas-limit-saved")
    stored = store.limit("lab", "user", "alice")
    assert stored is not None and dict(stored.gpus) == {"H100": 1}
    page.reload()
    expect(limit_row(page, "user", "alice").locator("td[data-field='gpus.H100']")).to_have_text("1")

    # another tenant, by URL: refused
    page.goto(f"{hub.url}/services/quotas/?tenant=startup")
    expect(page.locator("#error-message")).to_contain_text("You (kim) are not a member or an admin of tenant 'startup'")
    expect(page.locator("#limits-editor")).to_have_count(0)

    # alice: one H100 server fits her new limit; a second one is refused, saying why
    alice = clients["alice"]
    assert alice.spawn(tenant="lab", profile="h100-x1").status_code in (201, 202)
    alice.wait_ready()
    page.context.clear_cookies()
    log_in(page, hub, "alice")
    page.goto(f"{hub.url}/hub/spawn/alice/second")
    page.check("input[name=choice][value='lab/h100-x1']")
    page.get_by_role("button", name="Start").click()
    error = page.locator(".spawn-error-msg")
    expect(error).to_contain_text("limit you (alice) to 1 H100 GPU")
    expect(error).to_contain_text("ask a tenant admin (kim)")
    shot("13-limit-refuses-second-server")
    assert list(alice.api("GET", "/users/alice").json()["servers"]) == [""]

    # alice's page: her limit, her server, nobody else's numbers
    open_quotas_from_nav(page)
    expect(page.locator("#my-limits")).to_contain_text("You: 1 H100")
    expect(page.locator("#my-servers-table tbody tr")).to_have_count(1)
    expect(page.locator("#my-servers-table")).to_contain_text("h100-x1")
    expect(page.locator("#limits-editor")).to_have_count(0)
    expect(page.locator("main")).not_to_contain_text("carol")
    store.delete_limit("lab", "user", "alice")


def test_member_sees_only_their_own_numbers(
    page: Page, hub: Hub, clients: dict[str, Client], ledger: dict[str, Decimal], shot: Shot
) -> None:
    assert clients["carol"].spawn(tenant="lab", profile="h100-x1").status_code in (201, 202)
    log_in(page, hub, "bob")
    open_quotas_from_nav(page)
    expect(page.locator("#tenant-header")).to_have_attribute("data-tenant", "lab")
    expect(page.locator("#me")).to_contain_text("You (bob) in lab")
    expect(page.locator("#my-usage")).to_contain_text("GPU-hours in")
    expect(page.locator("#my-limits")).to_contain_text("No limits")
    # the tenant's totals (as on the spawn form), never who holds them
    expect(page.locator("#tenant-now")).to_contain_text("1 of 4 in use")
    for absent in ("#limits-editor", "#limit-add", "#usage-chart", "#people-table", "#tenant-servers"):
        expect(page.locator(absent)).to_have_count(0)
    main = page.locator("main")
    for other in ("alice", "carol"):
        expect(main).not_to_contain_text(other)
    expect(page.locator("[data-user]:not([data-user=bob])")).to_have_count(0)
    shot("14-quotas-member")

    # another tenant, by URL: refused, with the reason, and without saying whether it exists
    page.goto(f"{hub.url}/services/quotas/?tenant=startup")
    expect(page.locator("#error-message")).to_contain_text("You (bob) are not a member or an admin of tenant 'startup'")
    expect(page.locator("main")).not_to_contain_text("Startup Inc")
    page.goto(f"{hub.url}/services/quotas/?tenant=no-such-tenant")
    expect(page.locator("#error-message")).to_contain_text("not a member or an admin of tenant 'no-such-tenant'")
    page.goto(f"{hub.url}/services/quotas/?month=13-2026")
    expect(page.locator("#error-message")).to_contain_text("month must be written YYYY-MM")


def test_a_save_over_a_limit_someone_changed_meanwhile_is_refused_then_done_knowingly(
    page: Page, hub: Hub, clients: dict[str, Client], store: Store, shot: Shot
) -> None:
    """kim opens the page; the platform admin changes alice's limit through the API; kim's save of
    what she saw is refused with what the limit is now, and nothing is overwritten; her second
    save, made after reading that, is stored."""
    import requests

    admin = Client(hub, "admin", PASSWORDS["admin"])
    url = f"{hub.url}/services/quotas/api/tenants/lab/limits/users/alice"
    auth = {"Authorization": f"token {admin.token}"}
    assert requests.put(url, headers=auth, json={"gpus": {"H100": 2}}, timeout=30).status_code == 200
    try:
        log_in(page, hub, "kim")
        open_quotas_from_nav(page)
        row = limit_row(page, "user", "alice")
        row.get_by_role("button", name="Edit").click()
        row.locator("input[name='gpus.H100']").fill("3")

        changed = requests.put(url, headers=auth, json={"gpus": {"H100": 1}, "servers": 1}, timeout=30)
        assert changed.status_code == 200
        row.get_by_role("button", name="Save").click()
        problems = page.locator("#limits-editor tr.limit-problems [role=alert]")
        expect(problems).to_contain_text("someone changed it since you read it (it is now 1 H100, 1 server)")
        expect(problems).to_contain_text("Save again to replace it with what you typed")
        shot("14-quotas-limit-changed-meanwhile")
        stored = store.limit("lab", "user", "alice")
        assert stored is not None and dict(stored.gpus) == {"H100": 1} and stored.servers == 1

        row.get_by_role("button", name="Save").click()  # again, knowing what it is now
        expect(row.locator(".saved")).to_have_text("Saved")
        expect(problems).to_have_count(0)
        stored = store.limit("lab", "user", "alice")
        assert stored is not None and dict(stored.gpus) == {"H100": 3} and stored.servers is None
    finally:
        store.delete_limit("lab", "user", "alice")

"""The `browser` tier: the "SSH keys" section of the quotas page, as a person uses it.

alice pastes a private key by mistake (refused with the reason, nothing added), then her public
key (listed with its fingerprint, and stored: the page after a reload and the API agree), tries
to add it again (refused), and removes it (gone from the page and from the API).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import asyncssh
import requests
from playwright.sync_api import Page, expect

from tests.bed.hub import PASSWORDS, Client, Hub

Shot = Callable[[str], Path]
KEY = asyncssh.generate_private_key("ssh-ed25519")
PUBLIC = KEY.export_public_key("openssh").decode().strip() + " alice@laptop"


def log_in(page: Page, hub: Hub, name: str) -> None:
    page.goto(f"{hub.url}/hub/login?next=%2Fhub%2Fhome")
    page.fill("input[name=username]", name)
    page.fill("input[name=password]", PASSWORDS[name])
    page.click("#login_submit, form [type=submit]")
    page.wait_for_url(re.compile(r"/hub/home$"))


def api_keys(client: Client) -> list[str]:
    r = requests.get(
        f"{client.hub.url}/services/quotas/api/ssh-keys", headers={"Authorization": f"token {client.token}"}, timeout=60
    )
    assert r.status_code == 200, r.text
    return [k["fingerprint"] for k in r.json()["ssh_keys"]]


def test_add_and_remove_a_key_on_the_page(page: Page, hub: Hub, clients: dict[str, Client], shot: Shot) -> None:
    alice = clients["alice"]
    log_in(page, hub, "alice")
    page.goto(f"{hub.url}/services/quotas/")
    section = page.locator("#ssh-keys")
    expect(section).to_contain_text("No SSH keys yet")

    page.fill("#ssh-key-text", KEY.export_private_key().decode())
    section.locator("button.add").click()
    expect(page.locator("#ssh-keys-status")).to_contain_text("This is a PRIVATE key")
    shot("ssh-keys-private-refused")
    assert api_keys(alice) == []

    page.fill("#ssh-key-text", PUBLIC)
    section.locator("button.add").click()
    fingerprint = KEY.get_fingerprint("sha256")
    row = section.locator("tr.ssh-key")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("alice@laptop")
    expect(row).to_contain_text(fingerprint)
    expect(page.locator("#ssh-key-text")).to_have_value("")
    shot("ssh-keys-added")
    assert api_keys(alice) == [fingerprint]

    page.fill("#ssh-key-text", PUBLIC)
    section.locator("button.add").click()
    expect(page.locator("#ssh-keys-status")).to_contain_text("You registered this key")
    expect(row).to_have_count(1)

    page.reload()
    expect(page.locator("#ssh-keys tr.ssh-key")).to_contain_text(fingerprint)
    remove = page.locator("#ssh-keys tr.ssh-key button.remove")
    remove.click()
    expect(remove).to_have_text("Confirm remove")
    remove.click()
    expect(page.locator("#ssh-keys tr.ssh-key")).to_have_count(0)
    expect(page.locator("#ssh-keys")).to_contain_text("No SSH keys yet")
    expect(page.locator("#ssh-keys-status")).to_contain_text("refuses it from your next connection")
    assert api_keys(alice) == []

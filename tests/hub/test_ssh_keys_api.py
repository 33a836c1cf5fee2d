"""People's SSH keys through the quotas service, behind a real hub and proxy.

Everyone manages their own keys only (another person's key id is 404, as a missing one); bad
bodies are refused with the reason and write nothing; the owner lookup answers only the SSH
gateway's service token (fixed here through ``AIDC_SSHGATEWAY_API_TOKEN``), never a person's,
tenant and platform admins included.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import asyncssh
import pytest
import requests

from tests.bed.hub import PASSWORDS, Client, Hub, running_hub

GATEWAY_TOKEN = secrets.token_hex(32)
ALICE_KEY = asyncssh.generate_private_key("ssh-ed25519")
ALICE_LAPTOP = ALICE_KEY.export_public_key("openssh").decode().strip() + " alice@laptop"
BOB_KEY = asyncssh.generate_private_key("ecdsa-sha2-nistp256")
BOB_LINE = BOB_KEY.export_public_key("openssh").decode().strip()


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    with running_hub(tmp_path_factory.mktemp("ssh-keys-hub"), env={"AIDC_SSHGATEWAY_API_TOKEN": GATEWAY_TOKEN}) as h:
        yield h


@pytest.fixture(scope="module")
def people(hub: Hub) -> dict[str, Client]:
    return {name: hub.login(name, PASSWORDS[name]) for name in ("admin", "alice", "bob", "kim")}


@pytest.fixture(autouse=True)
def no_keys_left(people: dict[str, Client]) -> Iterator[None]:
    yield
    for person in people.values():
        for key in keys_of(person):
            assert call(person, "DELETE", f"api/ssh-keys/{key['id']}").status_code == 204


def call(who: Client | str | None, method: str, path: str, hub: Hub | None = None, **kwargs: Any) -> requests.Response:
    """``path`` of the quotas service as ``who``: a person, a raw token, or nobody (None)."""
    headers = dict(kwargs.pop("headers", {}))
    if isinstance(who, Client):
        headers["Authorization"] = f"token {who.token}"
        hub = who.hub
    elif isinstance(who, str):
        headers["Authorization"] = f"token {who}"
    assert hub is not None
    url = f"{hub.url}/services/quotas/{path}"
    return requests.request(method, url, headers=headers, timeout=60, allow_redirects=False, **kwargs)


def keys_of(person: Client) -> list[dict[str, Any]]:
    r = call(person, "GET", "api/ssh-keys")
    assert r.status_code == 200, r.text
    keys: list[dict[str, Any]] = r.json()["ssh_keys"]
    return keys


def lookup(hub: Hub, fingerprint: str, who: Client | str = GATEWAY_TOKEN) -> requests.Response:
    return call(who, "GET", "api/ssh-keys/lookup", hub=hub, params={"fingerprint": fingerprint})


def test_people_manage_their_own_keys_only(hub: Hub, people: dict[str, Client]) -> None:
    alice, bob = people["alice"], people["bob"]
    r = call(alice, "POST", "api/ssh-keys", json={"public_key": ALICE_LAPTOP})
    assert r.status_code == 201, r.text
    added = r.json()
    assert added["title"] == "alice@laptop" and added["type"] == "ssh-ed25519"
    assert added["fingerprint"] == ALICE_KEY.get_fingerprint("sha256")
    assert added["last_used"] is None and added["created"].endswith("Z")
    assert keys_of(alice) == [added]

    r = call(bob, "POST", "api/ssh-keys", json={"public_key": BOB_LINE, "title": "workstation"})
    assert r.status_code == 201, r.text
    assert [k["title"] for k in keys_of(bob)] == ["workstation"]
    assert [k["id"] for k in keys_of(alice)] == [added["id"]]  # each sees their own

    gone = call(bob, "DELETE", f"api/ssh-keys/{added['id']}")  # alice's id, as bob
    assert gone.status_code == 404 and "no SSH key with id" in gone.json()["message"]
    assert keys_of(alice) == [added]
    assert call(alice, "DELETE", "api/ssh-keys/not-a-number").status_code == 404
    assert call(alice, "DELETE", "api/ssh-keys/99999999999999999999").status_code == 404  # beyond any id
    assert call(people["admin"], "DELETE", f"api/ssh-keys/{added['id']}").status_code == 404  # platform admins too

    assert call(alice, "DELETE", f"api/ssh-keys/{added['id']}").status_code == 204
    assert keys_of(alice) == []
    assert call(alice, "DELETE", f"api/ssh-keys/{added['id']}").status_code == 404


def test_the_lookup_answers_the_gateway_only(hub: Hub, people: dict[str, Client]) -> None:
    alice = people["alice"]
    added = call(alice, "POST", "api/ssh-keys", json={"public_key": ALICE_LAPTOP}).json()
    fingerprint = ALICE_KEY.get_fingerprint("sha256")

    for name in ("alice", "kim", "admin"):  # the owner, a tenant admin, a platform admin
        r = lookup(hub, fingerprint, people[name])
        assert r.status_code == 403, (name, r.text)
        assert "Only the SSH gateway" in r.json()["message"]
    assert call(None, "GET", "api/ssh-keys/lookup", hub=hub, params={"fingerprint": fingerprint}).status_code == 403
    assert lookup(hub, fingerprint, "not-a-token").status_code == 403

    r = lookup(hub, fingerprint)
    assert r.status_code == 200, r.text
    assert r.json() == {"user": "alice", "locale": None}  # she never chose a language
    assert keys_of(alice)[0]["last_used"] is not None
    assert lookup(hub, BOB_KEY.get_fingerprint("sha256")).status_code == 404  # nobody registered it
    assert lookup(hub, "MD5:aa:bb").status_code == 400
    assert call(GATEWAY_TOKEN, "GET", "api/ssh-keys/lookup", hub=hub).status_code == 400

    # the gateway is a service, not a person: it has no keys of its own
    assert call(GATEWAY_TOKEN, "GET", "api/ssh-keys", hub=hub).status_code == 403
    assert call(GATEWAY_TOKEN, "POST", "api/ssh-keys", hub=hub, json={"public_key": BOB_LINE}).status_code == 403

    # revocation is seen at the next lookup
    assert call(alice, "DELETE", f"api/ssh-keys/{added['id']}").status_code == 204
    assert lookup(hub, fingerprint).status_code == 404


RSA_2048 = asyncssh.generate_private_key("ssh-rsa", key_size=2048)


@pytest.mark.parametrize(
    "body,status,reason",
    [
        ("{not json", 400, "not valid JSON"),
        ('["ssh-ed25519 AAAA"]', 400, "must be a JSON object"),
        ("{}", 422, "public_key is missing"),
        ('{"public_key": "hello"}', 422, "not an OpenSSH public key"),
        ({"public_key": ALICE_LAPTOP, "comment": "x"}, 422, "unknown field 'comment'"),
        ({"public_key": ALICE_LAPTOP, "title": 5}, 422, "title must be text"),
        ({"public_key": ALICE_KEY.export_private_key().decode()}, 422, "This is a PRIVATE key"),
        ({"public_key": 'command="ls" ' + ALICE_LAPTOP}, 422, "starts with options"),
        ({"public_key": RSA_2048.export_public_key().decode()}, 422, "This RSA key has 2048 bits"),
    ],
)
def test_bad_bodies_are_refused_with_the_reason_and_write_nothing(
    people: dict[str, Client], body: Any, status: int, reason: str
) -> None:
    alice = people["alice"]
    kwargs = (
        {"data": body, "headers": {"Content-Type": "application/json"}} if isinstance(body, str) else {"json": body}
    )
    r = call(alice, "POST", "api/ssh-keys", **kwargs)
    assert r.status_code == status, r.text
    error = r.json()
    assert error["status"] == status and reason in error["message"] + " ".join(error["problems"])
    assert keys_of(alice) == []


def test_a_key_registered_by_someone_else_is_refused(people: dict[str, Client]) -> None:
    alice, bob = people["alice"], people["bob"]
    assert call(alice, "POST", "api/ssh-keys", json={"public_key": ALICE_LAPTOP}).status_code == 201
    r = call(bob, "POST", "api/ssh-keys", json={"public_key": ALICE_LAPTOP, "title": "mine"})
    assert r.status_code == 422
    assert "registered already by another account" in r.json()["message"] and "alice" not in r.text
    assert keys_of(bob) == [] and len(keys_of(alice)) == 1
    again = call(alice, "POST", "api/ssh-keys", json={"public_key": ALICE_LAPTOP})
    assert again.status_code == 422 and "You registered this key" in again.json()["message"]
    assert len(keys_of(alice)) == 1


def test_without_credentials_nothing_is_shown(hub: Hub) -> None:
    assert call(None, "GET", "api/ssh-keys", hub=hub).status_code == 403
    assert call(None, "POST", "api/ssh-keys", hub=hub, json={"public_key": ALICE_LAPTOP}).status_code == 403


def test_the_page_lists_the_callers_own_keys(hub: Hub, people: dict[str, Client]) -> None:
    assert call(people["alice"], "POST", "api/ssh-keys", json={"public_key": ALICE_LAPTOP}).status_code == 201
    assert (
        call(people["bob"], "POST", "api/ssh-keys", json={"public_key": BOB_LINE, "title": "bob-desk"}).status_code
        == 201
    )
    pages = {}
    for name in ("alice", "zed"):  # zed belongs to no tenant: his keys section is there all the same
        browser = hub.login(name, PASSWORDS[name]).session
        r = browser.get(f"{hub.url}/services/quotas/", headers={"Accept": "text/html"}, timeout=60)
        assert r.status_code == 200, r.text
        pages[name] = r.text
    assert 'id="ssh-keys"' in pages["alice"] and "alice@laptop" in pages["alice"]
    assert ALICE_KEY.get_fingerprint("sha256") in pages["alice"]
    assert "bob-desk" not in pages["alice"] and BOB_KEY.get_fingerprint("sha256") not in pages["alice"]
    assert 'id="ssh-keys"' in pages["zed"] and "No SSH keys yet" in pages["zed"]
    assert "alice@laptop" not in pages["zed"]

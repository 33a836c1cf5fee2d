"""Where the gateway dials a workspace's sshd (from the spawner's state only) and the per-server host
key it accepts there."""

from __future__ import annotations

from typing import Any

import pytest

from spawner.local import _dial_address
from sshgateway import workspace_keys
from sshgateway.routing import sshd_address
from sshgateway.workspace import host_key


@pytest.mark.parametrize(
    "state, expected",
    [
        ({"sshd": {"host": "10.244.1.7", "port": 2222}}, ("10.244.1.7", 2222)),
        ({"sshd": {"host": "127.0.0.1", "port": 40123}, "pid": 7}, ("127.0.0.1", 40123)),
        ({"sshd": {"host": "::1", "port": 2222}}, ("::1", 2222)),
        ({"sshd": {"host": "fd00:0:0:0::7", "port": 2222}}, ("fd00::7", 2222)),
        # what cannot be dialled is no address: the gateway refuses rather than guess
        ({}, None),
        ({"pid": 7}, None),
        ({"sshd": None}, None),
        ({"sshd": "10.0.0.1:2222"}, None),
        ({"sshd": {"host": "10.0.0.1"}}, None),
        ({"sshd": {"port": 2222}}, None),
        ({"sshd": {"host": "workspace.tenant-a.svc", "port": 2222}}, None),  # a name resolves elsewhere
        ({"sshd": {"host": "10.0.0.1", "port": "2222"}}, None),
        ({"sshd": {"host": "10.0.0.1", "port": True}}, None),
        ({"sshd": {"host": "10.0.0.1", "port": 0}}, None),
        ({"sshd": {"host": "10.0.0.1", "port": 65536}}, None),
        ({"sshd": {"host": ["10.0.0.1"], "port": 2222}}, None),
    ],
)
def test_the_sshd_address_is_the_spawners_or_none(state: dict[str, Any], expected: tuple[str, int] | None) -> None:
    assert sshd_address(state) == expected


@pytest.mark.parametrize(
    "ip, dialled",
    [
        ("", "127.0.0.1"),
        ("0.0.0.0", "127.0.0.1"),
        ("localhost", "127.0.0.1"),
        ("::", "::1"),
        ("127.0.0.5", "127.0.0.5"),
    ],
)
def test_the_embedded_mode_dials_the_servers_own_address(ip: str, dialled: str) -> None:
    assert _dial_address(ip) == dialled


def test_each_server_has_its_own_host_key_distinct_from_every_client_key() -> None:
    secret = b"platform secret"
    keys = {
        (kind, user, server): fn(secret, user, server).get_fingerprint("sha256")
        for kind, fn in (("host", workspace_keys.server_host_key), ("client", workspace_keys.server_key))
        for user, server in (("alice", ""), ("alice", "gpu"), ("bob", ""), ("host", "alice"))
    }
    assert len(set(keys.values())) == len(keys)
    # the same inputs give the same key, so the gateway needs nothing but the secret
    again = workspace_keys.server_host_key(secret, "alice", "gpu").get_fingerprint("sha256")
    assert again == keys[("host", "alice", "gpu")]
    assert workspace_keys.server_host_key(b"another secret", "alice", "gpu").get_fingerprint("sha256") != again


def test_the_host_key_text_is_what_the_workspace_accepts() -> None:
    text = workspace_keys.server_host_key_text(b"s", "alice", "")
    assert host_key(text) == text.strip() + "\n"
    with pytest.raises(ValueError, match="secret is empty"):
        workspace_keys.server_host_key(b"", "alice", "")

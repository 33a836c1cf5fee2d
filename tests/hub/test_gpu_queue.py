"""The embedded mode's GPU queue (issue 14): a GPU request that does not fit now waits in its
tenant's queue instead of being refused, sees its place, starts when GPUs are freed, leaves the
queue when cancelled, is refused after the tenant's longest wait, and keeps its place across a
crash of the hub.

Tenants (tests/hub/tenants.yaml, with their queues opened here): `lab` holds at most 4 H100 (alice, bob,
carol), `startup` 1 H100 (dave) with a queue of at most 8 seconds; the machine has 4 H100.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator

import pytest
import yaml

from tests.bed.hub import PASSWORDS, TENANTS, Client, Hub, stop_all_servers


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    workdir = tmp_path_factory.mktemp("queue")
    data = yaml.safe_load(TENANTS.read_text())
    for tenant in data["tenants"]:  # the other tiers' tenants refuse at once (max_wait 0)
        tenant["queue"] = {"max_wait": "8s" if tenant["id"] == "startup" else "1h"}
    tenants = workdir / "tenants.yaml"
    tenants.write_text(yaml.safe_dump(data))
    traits = {"Spawner.poll_interval": 2, "TenantLocalSpawner.queue_poll_interval": 0.3}
    with Hub(workdir, PASSWORDS, "H100:4", tenants, traits=traits).running() as h:
        yield h


@pytest.fixture(scope="module")
def clients(hub: Hub) -> dict[str, Client]:
    return {name: hub.login(name, PASSWORDS[name]) for name in ("alice", "bob", "carol", "dave")}


@pytest.fixture(autouse=True)
def no_servers_left(clients: dict[str, Client]) -> Iterator[None]:
    yield
    stop_all_servers(clients.values())


def queued(hub: Hub) -> list[tuple[int, str, str]]:
    db = sqlite3.connect(f"file:{hub.data_dir / 'quotas.sqlite'}?mode=ro", uri=True, timeout=30)
    try:
        return [tuple(r) for r in db.execute('SELECT id, "user", server FROM gpu_queue ORDER BY id')]
    finally:
        db.close()


def progress_until(client: Client, server: str, words: str, timeout: float = 30) -> str:
    """Follow the spawn's progress events until one has ``words``; its message."""
    path = f"/users/{client.name}/servers/{server}/progress" if server else f"/users/{client.name}/server/progress"
    deadline = time.monotonic() + timeout
    seen = []
    with client.api("GET", path, stream=True) as events:
        for line in events.iter_lines():
            if line.startswith(b"data:"):
                message = str(json.loads(line[5:]).get("message", ""))
                seen.append(message)
                if words in message:
                    return message
            if time.monotonic() > deadline:
                break
    raise AssertionError(f"no progress event with {words!r}: {seen}")


def fill_lab(alice: Client, bob: Client) -> None:
    """lab's 4 H100 all held: 2 by alice, 2 by bob."""
    for client in (alice, bob):
        assert client.spawn(tenant="lab", profile="h100-x2").status_code in (201, 202)
    alice.wait_ready()
    bob.wait_ready()


def test_a_request_waits_sees_its_place_and_starts_when_gpus_are_freed(hub: Hub, clients: dict[str, Client]) -> None:
    alice, bob, carol = clients["alice"], clients["bob"], clients["carol"]
    fill_lab(alice, bob)
    # lab holds 4 of 4: carol's request waits instead of being refused, then alice's second one
    assert carol.spawn(tenant="lab", profile="h100-x1").status_code == 202
    message = progress_until(carol, "", "you are 1st of 1")
    assert message == "waiting for 1 × H100: tenant lab uses 4 of 4; you are 1st of 1"
    assert alice.spawn("second", tenant="lab", profile="h100-x1").status_code == 202
    assert "you are 2nd of 2" in progress_until(alice, "second", "you are 2nd of 2")
    assert [(u, s) for _, u, s in queued(hub)] == [("carol", ""), ("alice", "second")]

    bob.stop_server()  # 2 H100 free: carol starts, alice's second request moves up and starts too
    carol.wait_ready()
    alice.wait_ready("second")
    assert queued(hub) == []

    # cancelling a waiting request frees its place at once
    assert bob.spawn(tenant="lab", profile="h100-x2").status_code == 202
    progress_until(bob, "", "you are 1st of 1")
    r = bob.api("DELETE", "/users/bob/server")
    assert r.status_code in (202, 204), r.text
    deadline = time.monotonic() + 15
    while queued(hub) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert queued(hub) == []


def test_after_the_longest_wait_the_request_is_refused_with_why(clients: dict[str, Client], hub: Hub) -> None:
    dave = clients["dave"]
    assert dave.spawn(tenant="startup", profile="h100-x1").status_code in (201, 202)
    dave.wait_ready()
    t0 = time.monotonic()
    message = dave.spawn_failure("second", tenant="startup", profile="h100-x1")
    assert 7 < time.monotonic() - t0 < 30
    assert "Your server waited 8s in tenant startup's GPU queue, the longest it may" in message, message
    assert "tenant startup uses 1 of 1" in message
    assert queued(hub) == []


def test_a_place_in_the_queue_survives_a_crash_of_the_hub(hub: Hub, clients: dict[str, Client]) -> None:
    alice, bob, carol = clients["alice"], clients["bob"], clients["carol"]
    fill_lab(alice, bob)
    assert carol.spawn(tenant="lab", profile="h100-x1").status_code == 202
    progress_until(carol, "", "you are 1st of 1")
    place = queued(hub)
    assert [(u, s) for _, u, s in place] == [("carol", "")]
    hub.kill()
    hub.start()
    assert queued(hub) == place  # kept, for carol to come back to
    carol = hub.login("carol", PASSWORDS["carol"])
    assert carol.spawn(tenant="lab", profile="h100-x1").status_code == 202
    assert progress_until(carol, "", "you are 1st of 1")
    assert queued(hub) == place  # the same place, not the end of the line

"""The embedded mode's GPU queue (issue 14): a GPU request that does not fit now waits in its
tenant's queue instead of being refused, sees its place, starts when GPUs are freed, leaves the
queue when cancelled, is refused after the tenant's longest wait, and keeps its place across a
crash of the hub; a tenant at its ceiling borrows idle GPUs of its cohort, and the lender reclaims
them by preemption, with a warning in the workspace and on the hub.

Tenants (tests/hub/tenants.yaml, with their queues opened here): `lab` holds at most 4 H100 (alice, bob,
carol) and lends them all, `startup` 1 H100 (dave), may borrow 2 more, with a queue of at most 8
seconds; the machine has 5 H100.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator

import pytest
import yaml

from tests.bed.hub import PASSWORDS, TENANTS, Client, Hub, progress_until, stop_all_servers


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    workdir = tmp_path_factory.mktemp("queue")
    data = yaml.safe_load(TENANTS.read_text())
    for tenant in data["tenants"]:  # the other tiers' tenants refuse at once (max_wait 0)
        tenant["queue"] = {"max_wait": "8s" if tenant["id"] == "startup" else "1h"}
        if tenant["id"] == "startup":
            tenant["sharing"] = {"borrow": {"H100": 2}}
    tenants = workdir / "tenants.yaml"
    tenants.write_text(yaml.safe_dump(data))
    traits = {
        "Spawner.poll_interval": 2,
        "TenantLocalSpawner.queue_poll_interval": 0.3,
        # longer than JupyterHub's slow_spawn_timeout (10 s), so the spawn's progress shows the wait
        "TenantLocalSpawner.preemption_grace": 15,
    }
    with Hub(workdir, PASSWORDS, "H100:5", tenants, traits=traits).running() as h:
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
    # borrow "no": wait for startup's own GPU (lab's idle ones are not taken)
    message = dave.spawn_failure("second", tenant="startup", profile="h100-x1", borrow="no")
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


def page(client: Client, path: str) -> str:
    r = client.session.get(f"{client.hub.url}{path}")
    assert r.status_code == 200, r.status_code
    return r.content.decode()


def runs_of(hub: Hub, user: str) -> list[tuple[str, str, str | None, str | None]]:
    db = sqlite3.connect(f"file:{hub.data_dir / 'quotas.sqlite'}?mode=ro", uri=True, timeout=30)
    try:
        query = 'SELECT server, borrowed, end_reason, ended FROM runs WHERE "user" = ? ORDER BY started'
        return [tuple(r) for r in db.execute(query, (user,))]
    finally:
        db.close()


# Run in the workspace: a program on a terminal of its own (as a JupyterLab terminal or an SSH
# session has one) that saves what the terminal shows once the hub's warning is on it.
WATCHER = """
import os, pty, subprocess, time
m, s = pty.openpty()
subprocess.Popen(["sleep", "600"], stdin=s, stdout=s, stderr=s)
os.set_blocking(m, False)
seen, end = b"", time.time() + 300
while seen.count(b"***") < 2 and time.time() < end:
    try:
        seen += os.read(m, 4096)
    except BlockingIOError:
        time.sleep(0.05)
with open(os.path.expanduser("~/terminal-seen.txt"), "wb") as f:
    f.write(seen)
"""
WATCH_TERMINAL = f"""
import subprocess, sys
subprocess.Popen([sys.executable, "-c", {WATCHER!r}], start_new_session=True)
print("watching")
"""


def test_borrowed_gpus_are_reclaimed_by_preemption_with_a_warning(hub: Hub, clients: dict[str, Client]) -> None:
    alice, bob, dave = clients["alice"], clients["bob"], clients["dave"]
    assert dave.spawn(tenant="startup", profile="h100-x1").status_code in (201, 202)
    dave.wait_ready()
    # the spawn form tells dave before the start that borrowed GPUs may be taken back, and lets him wait instead
    form = page(dave, "/hub/spawn/dave/borrowed")
    assert 'id="aidc-borrow"' in form and "Their owner may need them back" in form
    assert 'name="borrow" id="borrow-no" value="no"' in form
    # startup is at its ceiling (1 of 1): lab's H100 are idle, so dave's second server borrows one
    assert dave.spawn("borrowed", tenant="startup", profile="h100-x1").status_code in (201, 202)
    server = dave.wait_ready("borrowed")
    home = page(dave, "/hub/home")
    assert "Your server &#39;borrowed&#39; runs on GPUs borrowed from another tenant (1 × H100)" in home, home
    assert dave.run_in_kernel(server["url"], WATCH_TERMINAL).strip() == "watching"

    # lab wants its own GPUs back: alice's 2 fit the machine's free ones; bob's 2 need dave's borrowed one
    assert alice.spawn(tenant="lab", profile="h100-x2").status_code in (201, 202)
    alice.wait_ready()
    t0 = time.monotonic()
    assert bob.spawn(tenant="lab", profile="h100-x2").status_code == 202
    assert "being stopped to give them back" in progress_until(bob, "", "being stopped")

    # dave is warned on the hub (every page, the home page too) and in the workspace's terminals
    home = page(dave, "/hub/home")
    assert "Your server &#39;borrowed&#39; will be stopped at" in home, home
    assert "borrowed from another tenant of its cohort, which needs them back" in home
    seen = hub.homes / dave.name / "terminal-seen.txt"
    deadline = time.monotonic() + 20
    while not seen.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert b"will be stopped at" in seen.read_bytes(), seen.read_bytes()

    bob.wait_ready()  # after the grace: dave's borrowed server is stopped, bob starts
    assert time.monotonic() - t0 >= 14
    servers = dave.api("GET", "/users/dave").json()["servers"]
    assert "borrowed" not in servers and "" in servers  # its own GPU is never taken
    runs = {name: (json.loads(borrowed), reason, ended) for name, borrowed, reason, ended in runs_of(hub, "dave")}
    assert runs["borrowed"][:2] == ({"H100": 1}, "preempted") and runs["borrowed"][2] is not None
    assert runs[""][:2] == ({}, None)
    home = page(dave, "/hub/home")
    assert "Your server &#39;borrowed&#39; was stopped at" in home and "which needs them back" in home

"""The GPU queue through the quotas service (issue 14, part 3): the REST API and `aidc quota queue`
show the places in line that the hub's queue keeper decides, to the people who may see them; the
servers list shows borrowed GPUs and a coming preemption, and usage the hours on borrowed GPUs.

Tenants (tests/hub/tenants.yaml, changed here): `lab` (alice, bob, carol and zed; admin kim; 4 H100)
and `startup` (dave; admins erin and zed; 1 H100, may borrow 2 of lab's idle ones), both with
queues open for an hour. zed administers `startup` and is a member of `lab`: he must see only his own
requests in lab's queue. The machine has 5 H100. `admin` is a platform admin.
"""

from __future__ import annotations

import html
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from quotas.service.openapi import SCHEMAS
from tests.bed.hub import PASSWORDS, REPO, TENANTS, Client, Hub, progress_until
from tests.hub.test_gpu_queue import no_servers_left

__all__ = ["no_servers_left"]  # each test ends with every server stopped (an autouse fixture)

PEOPLE = ("admin", "alice", "bob", "carol", "dave", "erin", "kim", "zed")
FIELDS = set(SCHEMAS["Queued"]["required"])  # what the API documents of a waiting request
GRACE = 20  # seconds between the warning of a preemption and the stop


def queue_hub(workdir: Path, gpus: str, traits: dict[str, Any], change: Callable[[dict[str, Any]], None]) -> Hub:
    """A hub with the tiers' tenants, each with its GPU queue open for an hour and then ``change``d."""
    data = yaml.safe_load(TENANTS.read_text())
    for tenant in data["tenants"]:
        tenant["queue"] = {"max_wait": "1h"}
        change(tenant)
    tenants = workdir / "tenants.yaml"
    tenants.write_text(yaml.safe_dump(data))
    fast = {"Spawner.poll_interval": 2, "TenantLocalSpawner.queue_poll_interval": 0.3}
    return Hub(workdir, PASSWORDS, gpus, tenants, traits={**fast, **traits})


def zed_and_borrowing(tenant: dict[str, Any]) -> None:
    """zed is a member of lab and an admin of startup, which may borrow 2 of lab's idle H100."""
    if tenant["id"] == "lab":
        tenant["members"]["users"].append("zed")
    if tenant["id"] == "startup":
        tenant["admins"].append("zed")
        tenant["sharing"] = {"borrow": {"H100": 2}}


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    traits = {"TenantLocalSpawner.preemption_grace": GRACE}
    with queue_hub(tmp_path_factory.mktemp("queue-api"), "H100:5,A100:2", traits, zed_and_borrowing).running() as h:
        yield h


@pytest.fixture(scope="module")
def clients(hub: Hub) -> dict[str, Client]:
    return {name: hub.login(name, PASSWORDS[name]) for name in PEOPLE}


def call(client: Client, path: str) -> requests.Response:
    """``GET`` ``path`` of the quotas service with ``client``'s API token."""
    return requests.get(
        f"{client.hub.url}/services/quotas/{path}",
        headers={"Authorization": f"token {client.token}"},
        timeout=60,
        allow_redirects=False,
    )


def queue_of(client: Client, tenant: str) -> list[dict[str, Any]]:
    r = call(client, f"api/tenants/{tenant}/queue")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["tenant"] == tenant
    return list(body["queue"])


def places(queue: list[dict[str, Any]]) -> list[tuple[str, str, int | None, int | None]]:
    return [(q["user"], q["server"], q["position"], q["length"]) for q in queue]


def until(check: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    """``check()`` once it is truthy (the queue keeper writes places every second)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(0.3)


@dataclass
class Result:
    code: int
    out: str
    err: str


def aidc(hub: Hub, client: Client, *argv: str) -> Result:
    """``aidc quota ...`` as people run it: a process, the token in $AIDC_TOKEN."""
    env = {k: v for k, v in os.environ.items() if k not in ("AIDC_TOKEN", "JUPYTERHUB_API_TOKEN")}
    env.update(AIDC_HUB_URL=hub.url, AIDC_TOKEN=client.token)
    proc = subprocess.run(
        [sys.executable, "-m", "aidc.cli", "quota", *argv],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def test_the_queue_shows_places_to_those_who_may_see_them_and_they_move(hub: Hub, clients: dict[str, Client]) -> None:
    alice, bob, carol, kim = clients["alice"], clients["bob"], clients["carol"], clients["kim"]
    # lab's 4 H100 all held: bob 2 + 1, alice 1
    for client, server, profile in ((bob, "", "h100-x2"), (bob, "b2", "h100-x1"), (alice, "", "h100-x1")):
        assert client.spawn(server, tenant="lab", profile=profile).status_code in (201, 202)
    for client, server in ((bob, ""), (bob, "b2"), (alice, "")):
        client.wait_ready(server)
    assert queue_of(kim, "lab") == []
    assert carol.spawn(tenant="lab", profile="h100-x1").status_code == 202
    progress_until(carol, "", "you are 1st of 1")
    assert alice.spawn("second", tenant="lab", profile="h100-x1").status_code == 202
    progress_until(alice, "second", "you are 2nd of 2")

    # the tenant's admin sees the line, in order, with places and reasons, as the spawn pages show them
    expected = [("carol", "", 1, 2), ("alice", "second", 2, 2)]
    queue = until(lambda: (q := queue_of(kim, "lab")) and places(q) == expected and q, "kim sees both placed")
    assert all(set(q) == FIELDS for q in queue)
    first, second = queue
    assert first["reason"] == "waiting for 1 × H100: tenant lab uses 4 of 4; you are 1st of 2"
    assert second["reason"] == "waiting for 1 × H100: tenant lab uses 4 of 4; you are 2nd of 2"
    assert (first["profile"], first["gpu_type"], first["gpu_count"]) == ("h100-x1", "H100", 1)
    assert first["enqueued"].endswith("Z") and first["enqueued"] < second["enqueued"]
    assert places(queue_of(clients["admin"], "lab")) == expected  # platform admins see every tenant's

    # nobody else sees anyone else's place: another tenant's admin (403), a member (their own), and
    # zed, admin of startup and member of lab (his own in lab: none)
    refused = call(clients["erin"], "api/tenants/lab/queue")
    assert refused.status_code == 403
    assert "You (erin) are not a member or an admin of tenant 'lab'" in refused.json()["message"]
    assert call(kim, "api/tenants/startup/queue").status_code == 403
    assert call(clients["admin"], "api/tenants/nope/queue").status_code == 404
    assert queue_of(clients["zed"], "lab") == []
    assert places(queue_of(alice, "lab")) == [("alice", "second", 2, 2)]
    assert queue_of(bob, "lab") == []

    # each person's own waiting requests are in api/me, with the same fields
    me = call(carol, "api/me").json()
    lab = next(t for t in me["tenants"] if t["id"] == "lab")
    assert lab["queued"] == [first]
    assert [t["queued"] for t in call(bob, "api/me").json()["tenants"]] == [[]]

    # aidc shows the same line
    shown = aidc(hub, kim, "queue", "lab")
    assert shown.code == 0, shown.err
    lines = shown.out.splitlines()
    assert lines[0].split() == ["PLACE", "USER", "SERVER", "GPUS", "WAITING", "SINCE", "WHY"]
    assert lines[1].split()[:4] == ["1/2", "carol", "(default)", "H100=1"] and lines[1].endswith("you are 1st of 2")
    assert lines[2].split()[:4] == ["2/2", "alice", "second", "H100=1"] and lines[2].endswith("you are 2nd of 2")
    as_json = aidc(hub, kim, "queue", "lab", "--json")
    assert as_json.code == 0 and places(json.loads(as_json.out)["queue"]) == expected
    refused_cli = aidc(hub, clients["erin"], "queue", "lab")
    assert refused_cli.code == 1 and "You (erin) are not a member or an admin of tenant 'lab'" in refused_cli.err

    # 1 H100 freed: carol starts, alice's second request moves up to 1st of 1
    bob.stop_server("b2")
    carol.wait_ready()
    moved = [("alice", "second", 1, 1)]
    queue = until(lambda: (q := queue_of(kim, "lab")) and places(q) == moved and q, "alice moves up")
    assert queue[0]["reason"] == "waiting for 1 × H100: tenant lab uses 4 of 4; you are 1st of 1"
    assert call(carol, "api/me").json()["tenants"][0]["queued"] == []
    shown = aidc(hub, kim, "queue", "lab")
    assert shown.code == 0 and shown.out.splitlines()[1].split()[:3] == ["1/1", "alice", "second"], shown

    # cancelling the last waiting request empties the line
    alice.stop_server("second")
    until(lambda: queue_of(kim, "lab") == [], "the line empties")
    empty = aidc(hub, kim, "queue", "lab")
    assert (empty.code, empty.out) == (0, "") and "No one waits in tenant lab's GPU queue" in empty.err


def test_borrowed_gpus_and_a_coming_preemption_show_in_servers_and_usage(hub: Hub, clients: dict[str, Client]) -> None:
    alice, bob, dave, erin, kim = (clients[n] for n in ("alice", "bob", "dave", "erin", "kim"))
    assert dave.spawn(tenant="startup", profile="h100-x1").status_code in (201, 202)
    dave.wait_ready()
    # startup holds its 1 H100: dave's second server borrows one of lab's idle ones
    assert dave.spawn("borrowed", tenant="startup", profile="h100-x1").status_code in (201, 202)
    dave.wait_ready("borrowed")
    servers = {s["server"]: s for s in call(erin, "api/tenants/startup/servers").json()["servers"]}
    assert (servers[""]["borrowed"], servers["borrowed"]["borrowed"]) == ({}, {"H100": 1})
    assert "stop_at" not in servers["borrowed"] and "stop_note" not in servers["borrowed"]

    # lab takes its GPUs back: bob's 2 H100 need dave's borrowed one, which is to stop after the grace
    assert alice.spawn(tenant="lab", profile="h100-x2").status_code in (201, 202)
    alice.wait_ready()
    assert bob.spawn(tenant="lab", profile="h100-x2").status_code == 202
    progress_until(bob, "", "being stopped")
    marked = until(
        lambda: next(
            (s for s in call(erin, "api/tenants/startup/servers").json()["servers"] if s.get("stop_at")), None
        ),
        "the borrowing server is marked",
    )
    assert marked["server"] == "borrowed" and marked["borrowed"] == {"H100": 1}
    stop_at = datetime.fromisoformat(marked["stop_at"])
    assert 0 < (stop_at - datetime.now(UTC)).total_seconds() <= GRACE
    assert "borrowed from another tenant of its cohort, which needs them back" in marked["stop_note"]
    assert "lab" not in marked["stop_note"]  # startup's people are not told which tenant reclaims
    mine = call(dave, "api/me").json()["tenants"][0]["servers"]
    assert [s.get("stop_at") for s in mine if s["server"] == "borrowed"] == [marked["stop_at"]]
    [waiting] = queue_of(kim, "lab")
    assert (waiting["user"], waiting["position"], waiting["length"]) == ("bob", 1, 1)
    assert "being stopped" in waiting["reason"], waiting
    # and on the quotas page, startup's admin sees it in the running servers
    r = call(erin, "?tenant=startup")
    assert r.status_code == 200, r.text
    page = html.unescape(r.text)
    assert "borrowed: 1 H100" in page
    assert f"stops at {stop_at:%H:%M} UTC ({marked['stop_note']})" in page

    bob.wait_ready(timeout=GRACE + 60)
    usage = call(erin, "api/tenants/startup/usage").json()
    [row] = [r for r in usage["rows"] if r["subject"] == "dave"]
    assert Decimal(row["borrowed_gpu_hours"]) > 0 and Decimal(row["gpu_hours"]) > Decimal(row["borrowed_gpu_hours"])
    assert Decimal(usage["total"]["borrowed_gpu_hours"]) == Decimal(row["borrowed_gpu_hours"])
    lab_rows = call(kim, "api/tenants/lab/usage").json()["rows"]
    assert lab_rows and all(Decimal(r["borrowed_gpu_hours"]) == 0 for r in lab_rows)

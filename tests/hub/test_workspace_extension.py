"""The workspace's side of the quotas service (labextension/, ``api/me/workspace``): a running
workspace reads its own tenant, GPUs, GPU-hours left and the hub's warnings with its own token,
through its Jupyter server's ``aidc/workspace`` route; nobody else's data ever comes back.

Tenant ``lab`` (tests/hub/tenants.yaml): alice and bob, 4 H100, 1,000 GPU-hours a month.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests

from quotas import paths
from quotas.store import Store
from tests.bed.hub import PASSWORDS, Client, Hub, running_hub, stop_all_servers


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    with running_hub(tmp_path_factory.mktemp("workspace-hub")) as h:
        yield h


@pytest.fixture(scope="module")
def clients(hub: Hub) -> Iterator[dict[str, Client]]:
    people = {name: hub.login(name, PASSWORDS[name]) for name in ("alice", "bob", "kim")}
    yield people
    stop_all_servers(people.values())


@pytest.fixture(scope="module")
def alice_gpu(clients: dict[str, Client]) -> dict[str, Any]:
    """alice's named server ``gpu`` on 2 H100 of tenant lab, running."""
    alice = clients["alice"]
    r = alice.spawn("gpu", tenant="lab", profile="h100-x2")
    assert r.status_code in (201, 202), r.text
    return alice.wait_ready("gpu")


def workspace_route(client: Client, server_url: str) -> requests.Response:
    """The workspace's own ``aidc/workspace`` (what its JupyterLab extension reads), with ``client``'s token."""
    return requests.get(
        f"{client.hub.url}{server_url}aidc/workspace",
        headers={"Authorization": f"token {client.token}"},
        timeout=60,
        allow_redirects=False,
    )


def service(client: Client, query: str = "") -> requests.Response:
    return requests.get(
        f"{client.hub.url}/services/quotas/api/me/workspace{query}",
        headers={"Authorization": f"token {client.token}"},
        timeout=60,
        allow_redirects=False,
    )


def test_the_workspace_reads_its_own_tenant_gpus_and_budget_with_its_own_token(
    clients: dict[str, Client], alice_gpu: dict[str, Any]
) -> None:
    r = workspace_route(clients["alice"], alice_gpu["url"])
    assert r.status_code == 200, r.text
    ws = r.json()
    assert ws["user"] == "alice" and ws["server"] == "gpu" and ws["running"] is True
    assert ws["tenant"] == {"id": "lab", "display_name": "University Lab"}
    assert ws["profile"] == "h100-x2"
    assert ws["gpus"] == {"H100": 2} and ws["borrowed"] == {}
    budget = ws["budget"]
    assert budget["budgets"][0]["kind"] == "tenant" and budget["budgets"][0]["gpu_hours"] == "1000"
    assert float(budget["gpu_hours_left"]) > 999  # 2 GPUs for a few seconds
    assert budget["spent"] == []
    # what the workspace's token asked for is what the person's own token gets
    mine = service(clients["alice"], "?server=gpu").json()
    # (the texts say the GPU-hours left, which go down between the two answers)
    same = ("budget", "texts")
    assert {k: v for k, v in mine.items() if k not in same} == {k: v for k, v in ws.items() if k not in same}
    assert ws["locale"] == "en" and ws["texts"]["status"].startswith("lab · 2 × H100 · ")
    assert ws["texts"]["status"].endswith(" GPU-h left")


def test_nobody_else_gets_it(clients: dict[str, Client], alice_gpu: dict[str, Any]) -> None:
    # bob asking for alice's server name gets his own (none): nothing of alice's
    bob = service(clients["bob"], "?server=gpu")
    assert bob.status_code == 200, bob.text
    texts = bob.json().pop("texts")
    assert texts["status"] == "AIDC Hub: no tenant" and texts["summary"] == [] and texts["spent"] == []
    assert {k: v for k, v in bob.json().items() if k != "texts"} == {
        "user": "bob",
        "server": "gpu",
        "running": False,
        "tenant": None,
        "profile": None,
        "gpus": {},
        "borrowed": {},
        "budget": None,
        "notices": [],
        "locale": "en",
    }
    # there is no way to name another person
    refused = service(clients["kim"], "?server=gpu&user=alice")
    assert refused.status_code == 400 and "user" in refused.json()["message"]
    # nor to read alice's workspace route: her Jupyter server admits her alone (tenant admins too)
    for name in ("bob", "kim"):
        assert workspace_route(clients[name], alice_gpu["url"]).status_code in (302, 403)
    # no token: no answer
    anonymous = requests.get(f"{clients['bob'].hub.url}/services/quotas/api/me/workspace", timeout=60)
    assert anonymous.status_code == 403


def test_a_preemption_warning_reaches_the_workspace(
    hub: Hub, clients: dict[str, Client], alice_gpu: dict[str, Any]
) -> None:
    store = Store(paths.db_url(str(hub.data_dir)))
    try:
        stop_at = datetime.now(UTC) + timedelta(minutes=10)
        assert store.mark_preempted(("alice", "gpu"), stop_at, "tenant startup needs its GPUs back")
        notices = workspace_route(clients["alice"], alice_gpu["url"]).json()["notices"]
        assert [n["level"] for n in notices] == ["warning"]
        assert "Your server 'gpu' will be stopped" in notices[0]["text"]
        assert "tenant startup needs its GPUs back" in notices[0]["text"]
        assert service(clients["bob"], "?server=gpu").json()["notices"] == []
    finally:
        store.call_off_preemption(("alice", "gpu"))
        store.close()

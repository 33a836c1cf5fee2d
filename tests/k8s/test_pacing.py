"""The `k8s` tier: TenantKubeSpawner paces and survives a slow, failing API server (issue 15).

A second hub of this module's own talks to the control plane through :class:`tests.bed.slowapi.SlowApi`,
which holds answers back, delays requests or answers 429/500 by itself, and records what reached
the API server. The hub sends at most one create (pod or PVC) at a time
(``TenantKubeSpawner.k8s_creates_in_flight = 1``), and answers each spawn's POST with its outcome
(``slow_spawn_timeout`` beyond the spawns' length): 201, or the failure's status and message.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
import requests
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from spawner.reconciler import TenantReconciler
from tests.bed.cluster import ControlPlane
from tests.bed.hub import PASSWORDS, Client, Hub, running_hub, stop_all_servers
from tests.bed.podrunner import PodRunner
from tests.bed.slowapi import Recorded, SlowApi, max_in_flight
from tests.k8s.conftest import KUBE_HUB_TRAITS

SPAWN_ANNOTATION = "aidc.io/spawn"
# creates of workspace pods and home PVCs in the tenant namespaces
POD_CREATE = r"^/api/v1/namespaces/aidc-[^/]+/pods$"
PVC_CREATE = r"^/api/v1/namespaces/aidc-[^/]+/persistentvolumeclaims$"
CREATES = r"^/api/v1/namespaces/aidc-[^/]+/(pods|persistentvolumeclaims)$"
# an answer held back this long, or until the hub gives up on it: longer than any client timeout
# the hub may have grown to, shorter than a spawn may take (KubeSpawner's start_timeout: 60 s)
HOLD = 45.0
RETRY_TIMEOUT = 30  # KubeSpawner's k8s_api_request_retry_timeout (its default)


@pytest.fixture(scope="module")
def proxy(cluster: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlowApi]:
    with SlowApi(cluster, tmp_path_factory.mktemp("slowapi")) as p:
        yield p


@pytest.fixture(autouse=True)
def no_rules_left(proxy: SlowApi) -> Iterator[None]:
    proxy.clear()
    yield
    proxy.clear_rules()


@pytest.fixture(scope="module")
def paced_hub(
    cluster: ControlPlane,
    reconciler: TenantReconciler,
    runner: PodRunner,
    proxy: SlowApi,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Hub]:
    traits = {
        **KUBE_HUB_TRAITS,
        "Spawner.poll_interval": 2,
        "Spawner.http_timeout": 20,
        "TenantKubeSpawner.k8s_creates_in_flight": 1,
        "KubeSpawner.k8s_api_request_retry_timeout": RETRY_TIMEOUT,
        # this hub meets failures on purpose: its exit after a streak is tested with the session's hub
        "Spawner.consecutive_failure_limit": 0,
        # a spawn's POST waits for its outcome (JupyterHub answers 202 after 10 s by default)
        "JupyterHub.tornado_settings": {"slow_spawn_timeout": 90},
    }
    env = {"KUBECONFIG": str(proxy.kubeconfig)}
    with running_hub(tmp_path_factory.mktemp("paced-hub"), env=env, traits=traits) as h:
        yield h


@pytest.fixture(scope="module")
def logins(paced_hub: Hub) -> dict[str, Client]:
    return {name: paced_hub.login(name, PASSWORDS[name]) for name in ("alice", "bob", "carol", "dave")}


@pytest.fixture
def people(paced_hub: Hub, logins: dict[str, Client], proxy: SlowApi) -> Iterator[dict[str, Client]]:
    """This module's hub's people; their servers stopped (without rules in the way) afterwards,
    and the hub still running."""
    yield logins
    proxy.clear_rules()
    stop_all_servers(logins.values())
    assert paced_hub.proc is not None and paced_hub.proc.poll() is None, f"the hub exited:\n{paced_hub.log_tail()}"


@pytest.fixture
def hub_log(paced_hub: Hub) -> HubLog:
    return HubLog(paced_hub.log_path)


class HubLog:
    """The hub's log from the start of a test on."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset = path, path.stat().st_size

    def text(self) -> str:
        with self.path.open("rb") as f:
            f.seek(self.offset)
            return f.read().decode(errors="replace")

    def assert_no_500(self) -> None:
        """The hub answered no request with 500 (its request log lines: ``500 POST /hub/api/...``)."""
        answered_500 = re.findall(r".*\] 500 (?:GET|POST|PUT|PATCH|DELETE) .*", self.text())
        assert not answered_500, "the hub answered 500:\n" + "\n".join(answered_500)


def workspace_pod(api: client.ApiClient, namespace: str, user: str, server: str = "") -> Any:
    core: Any = client.CoreV1Api(api)
    found = [
        p
        for p in core.list_namespaced_pod(namespace, label_selector="component=singleuser-server").items
        if p.metadata.labels.get("hub.jupyter.org/username") == user
        and (p.metadata.labels.get("hub.jupyter.org/servername") or "") == server
    ]
    assert len(found) == 1, [p.metadata.name for p in found]
    return found[0]


def timeline(records: list[Recorded]) -> str:
    """The requests, for a failure message: times from the first one's arrival."""
    t0 = min((r.started for r in records), default=0.0)
    return "\n".join(
        f"  {r.method} {r.path} +{r.started - t0:.2f}s..+{(r.in_flight(time.monotonic())[1]) - t0:.2f}s"
        f" -> {r.status}{' (client gave up)' if r.abandoned else ''}"
        for r in records
    )


def follow_progress(person: Client, deadline: float) -> list[str]:
    """The messages of the progress of ``person``'s default server's spawn, from when it begins
    (asked again while the hub says it is not starting yet) until it is ready or failed."""
    path = f"/users/{person.name}/server/progress"
    messages: list[str] = []
    while time.monotonic() < deadline:
        with person.api("GET", path, stream=True) as events:
            if events.status_code in (400, 404):  # not starting yet (404: no such server yet)
                time.sleep(0.1)
                continue
            events.raise_for_status()
            for line in events.iter_lines():
                if line.startswith(b"data:"):
                    event = json.loads(line[5:])
                    messages.append(str(event.get("message", "")))
                    if event.get("ready") or event.get("failed"):
                        return messages
            return messages
    raise AssertionError(f"{person.name}'s spawn did not begin or end in time; progress so far: {messages}")


# ------------------------------------------------------------------- the proxy itself


def test_the_proxy_forwards_streams_watches_and_applies_rules(cluster: ControlPlane, proxy: SlowApi) -> None:
    api = config.new_client_from_config(config_file=str(proxy.kubeconfig))
    core: Any = client.CoreV1Api(api)  # takes plain dicts as bodies
    name = f"through-the-proxy-{uuid.uuid4().hex[:6]}"
    seen: list[str] = []
    w = watch.Watch()

    def follow() -> None:
        for event in w.stream(core.list_namespaced_config_map, "default", timeout_seconds=30):
            seen.append(f"{event['type']} {event['object'].metadata.name}")
            if event["object"].metadata.name == name:
                w.stop()

    watcher = threading.Thread(target=follow, daemon=True)
    watcher.start()
    time.sleep(1)  # the watch is open
    started = time.monotonic()
    proxy.rule(method="POST", path_regex=r"/configmaps$", times=1, delay_request=1.0)
    core.create_namespaced_config_map("default", {"metadata": {"name": name}})
    assert time.monotonic() - started >= 1.0
    watcher.join(10)
    assert f"ADDED {name}" in seen, seen
    watches = proxy.requests("GET", r"/namespaces/default/configmaps$")
    assert any("watch=true" in r.query.lower() for r in watches), watches

    busy = proxy.rule(method="POST", path_regex=r"/configmaps$", times=1, answer=(429, 1))
    with pytest.raises(ApiException) as refused:
        core.create_namespaced_config_map("default", {"metadata": {"name": name + "-2"}})
    assert refused.value.status == 429 and (refused.value.headers or {}).get("Retry-After") == "1" and busy.hits == 1

    proxy.rule(method="POST", path_regex=r"/configmaps$", times=1, hold_response=HOLD)
    with pytest.raises(Exception, match="(?i)timed? ?out"):
        core.create_namespaced_config_map("default", {"metadata": {"name": name + "-3"}}, _request_timeout=2)
    time.sleep(0.5)  # the proxy notices the client's going
    held = proxy.requests("POST", r"/configmaps$")[-1]
    assert held.abandoned and held.status == 201 and held.json()["metadata"]["name"] == name + "-3", held
    assert held.ended is not None and held.ended - held.started < 5, "the held answer outlived its client"
    assert core.read_namespaced_config_map(name + "-3", "default").metadata.uid == held.json()["metadata"]["uid"]

    posts = proxy.requests("POST", r"/configmaps$")
    assert [p.status for p in posts] == [201, 429, 201] and max_in_flight(posts) == 1, timeline(posts)
    api.close()


# ------------------------------------------------------------------- the hub behind it


def test_one_watch_of_pods_and_events_for_every_tenant_namespace(
    api: client.ApiClient, proxy: SlowApi, people: dict[str, Client]
) -> None:
    """Servers in two tenant namespaces: the hub lists and watches pods (and their events) once for all
    namespaces, not once per namespace (each such watch holds one of its 100 API connections: at 500
    tenants spawns stalled, docs/scale.md). The module's first spawns: its hub starts its watches here."""
    alice, dave = people["alice"], people["dave"]
    for person, tenant in ((alice, "lab"), (dave, "startup")):
        r = person.spawn(tenant=tenant, profile="cpu")
        assert r.status_code in (201, 202), r.text
    alice.wait_ready(timeout=120)
    dave.wait_ready(timeout=120)
    assert workspace_pod(api, "aidc-lab", "alice").status.phase == "Running"
    assert workspace_pod(api, "aidc-startup", "dave").status.phase == "Running"
    lists = proxy.requests("GET", r"^/api/v1/(namespaces/[^/]+/)?(pods|events)$")
    per_namespace = [r for r in lists if "/namespaces/" in r.path]
    assert per_namespace == [], timeline(per_namespace)
    watched = {r.path for r in lists if "watch=true" in r.query.lower()}
    assert watched == {"/api/v1/pods", "/api/v1/events"}, timeline(lists)


def test_api_server_busy_429_is_retried_after_retry_after(
    api: client.ApiClient, proxy: SlowApi, people: dict[str, Client], hub_log: HubLog
) -> None:
    dave = people["dave"]
    busy = proxy.rule(method="POST", path_regex=POD_CREATE, times=2, answer=(429, 1))
    r = dave.spawn(tenant="startup", profile="cpu")
    assert r.status_code in (201, 202), r.text
    dave.wait_ready(timeout=120)
    posts = proxy.requests("POST", POD_CREATE)
    assert busy.hits == 2 and [p.status for p in posts] == [429, 429, 201], timeline(posts)
    for before, after in pairwise(posts):
        assert before.responded is not None
        assert after.started - before.responded >= 0.9, f"Retry-After: 1 not waited for:\n{timeline(posts)}"
    assert workspace_pod(api, "aidc-startup", "dave").metadata.uid == posts[-1].json()["metadata"]["uid"]
    hub_log.assert_no_500()


def test_api_server_errors_end_in_a_503_that_says_what_failed(
    api: client.ApiClient, proxy: SlowApi, people: dict[str, Client], hub_log: HubLog
) -> None:
    dave = people["dave"]
    proxy.rule(method="POST", path_regex=POD_CREATE, answer=(500, None))
    r = dave.spawn(tenant="startup", profile="cpu")
    assert r.status_code == 503, f"{r.status_code}: {r.text}"
    message = r.json()["message"]
    # what failed and what to do, not JupyterHub's generic 500 nor the API server's raw answer
    assert "pod" in message and re.search(r"(?i)try again|admin", message), message
    assert not message.startswith(("Internal Server Error", "Unhandled error")), message
    for raw in ("Traceback", '"kind"', "HTTP response headers", "Reason:"):
        assert raw not in message, message
    posts = proxy.requests("POST", POD_CREATE)
    assert len(posts) >= 2, f"the create was not retried:\n{timeline(posts)}"
    assert posts[-1].started - posts[0].started >= RETRY_TIMEOUT / 3, f"gave up early:\n{timeline(posts)}"
    assert dave.api("GET", "/users/dave").json()["servers"] == {}
    pods = client.CoreV1Api(api).list_namespaced_pod("aidc-startup", label_selector="component=singleuser-server")
    assert pods.items == []
    hub_log.assert_no_500()


def test_a_pod_create_answered_after_the_timeout_is_not_sent_again(
    api: client.ApiClient, proxy: SlowApi, people: dict[str, Client], hub_log: HubLog
) -> None:
    """The API server creates the pod, its answer comes after the hub gave up on it: the hub finds
    its own pod and uses it (stock KubeSpawner creates it again, gets 409, deletes it, creates a third)."""
    alice = people["alice"]
    held = proxy.rule(method="POST", path_regex=POD_CREATE, times=1, hold_response=HOLD)
    r = alice.spawn(tenant="lab", profile="cpu")
    assert r.status_code in (201, 202), r.text
    alice.wait_ready(timeout=120)
    posts = proxy.requests("POST", POD_CREATE)
    assert held.hits == 1 and posts[0].status == 201, timeline(posts)
    assert posts[0].abandoned, f"the hub waited {HOLD:g}s for the held answer: no client timeout\n{timeline(posts)}"
    assert len(posts) == 1, f"the pod was created again:\n{timeline(proxy.requests(path_regex='/pods'))}"
    deletes = proxy.requests("DELETE", r"/namespaces/aidc-lab/pods/")
    assert deletes == [], f"the hub deleted its own pod:\n{timeline(deletes)}"
    pod = workspace_pod(api, "aidc-lab", "alice")
    first = posts[0].json()["metadata"]
    assert pod.metadata.uid == first["uid"] and pod.status.phase == "Running"
    assert pod.metadata.annotations.get(SPAWN_ANNOTATION), pod.metadata.annotations
    assert first["annotations"][SPAWN_ANNOTATION] == pod.metadata.annotations[SPAWN_ANNOTATION]
    hub_log.assert_no_500()


def delete_pvc(api: client.ApiClient, namespace: str, name: str, timeout: float = 60) -> None:
    core: Any = client.CoreV1Api(api)
    try:
        core.delete_namespaced_persistent_volume_claim(name, namespace)
    except ApiException as e:
        if e.status != 404:
            raise
    deadline = time.monotonic() + timeout
    while True:
        try:
            core.read_namespaced_persistent_volume_claim(name, namespace)
        except ApiException as e:
            if e.status == 404:
                return
            raise
        assert time.monotonic() < deadline, f"PVC {namespace}/{name} was not deleted in {timeout:g}s"
        time.sleep(0.3)


def test_a_home_pvc_create_answered_after_the_timeout_is_not_sent_again(
    api: client.ApiClient, proxy: SlowApi, people: dict[str, Client], hub_log: HubLog
) -> None:
    bob = people["bob"]
    # a new home (it binds to a free volume of the bed's pool), created by a spawn that does not know
    # it yet: a named server's first (the default server's spawner would remember the old one)
    delete_pvc(api, "aidc-lab", "home-bob")
    server = f"held{uuid.uuid4().hex[:6]}"
    held = proxy.rule(method="POST", path_regex=PVC_CREATE, times=1, hold_response=HOLD)
    r = bob.spawn(server, tenant="lab", profile="cpu")
    assert r.status_code in (201, 202), r.text
    bob.wait_ready(server, timeout=120)
    posts = proxy.requests("POST", PVC_CREATE)
    assert held.hits == 1 and posts[0].status == 201, timeline(posts)
    assert posts[0].abandoned, f"the hub waited {HOLD:g}s for the held answer: no client timeout\n{timeline(posts)}"
    assert len(posts) == 1, f"the PVC was created again:\n{timeline(posts)}"
    assert proxy.requests("DELETE", r"/persistentvolumeclaims/") == []
    core: Any = client.CoreV1Api(api)
    pvc = core.read_namespaced_persistent_volume_claim("home-bob", "aidc-lab")
    first = posts[0].json()["metadata"]
    assert pvc.metadata.uid == first["uid"] and pvc.status.phase == "Bound"
    assert pvc.metadata.annotations.get(SPAWN_ANNOTATION), pvc.metadata.annotations
    assert first["annotations"][SPAWN_ANNOTATION] == pvc.metadata.annotations[SPAWN_ANNOTATION]
    pod = workspace_pod(api, "aidc-lab", "bob", server)
    assert next(v for v in pod.spec.volumes if v.name == "home").persistent_volume_claim.claim_name == "home-bob"
    hub_log.assert_no_500()


def test_creates_are_paced_and_those_waiting_see_their_place(
    proxy: SlowApi, people: dict[str, Client], hub_log: HubLog
) -> None:
    names = ("alice", "bob", "carol")
    proxy.rule(method="POST", path_regex=POD_CREATE, delay_request=2.0)
    answers: dict[str, requests.Response | BaseException] = {}
    progress: dict[str, list[str] | BaseException] = {}
    deadline = time.monotonic() + 150

    def spawn(name: str) -> None:
        try:
            answers[name] = people[name].spawn(tenant="lab", profile="cpu")
        except BaseException as e:
            answers[name] = e

    def follow(name: str) -> None:
        try:
            progress[name] = follow_progress(people[name], deadline)
        except BaseException as e:
            progress[name] = e

    threads = [threading.Thread(target=f, args=(n,), daemon=True) for n in names for f in (follow, spawn)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(1.0, deadline - time.monotonic()))
    for name in names:
        answer = answers.get(name)
        assert isinstance(answer, requests.Response), f"{name}: {answer!r}"
        assert answer.status_code in (201, 202), f"{name}: {answer.status_code} {answer.text}"
        people[name].wait_ready(timeout=120)
    creates = proxy.requests("POST", CREATES)
    assert len([c for c in creates if c.path.endswith("/pods")]) == len(names), timeline(creates)
    assert max_in_flight(creates) == 1, f"more than one create at a time:\n{timeline(creates)}"
    seen = {name: messages for name, messages in progress.items() if isinstance(messages, list)}
    assert len(seen) == len(names), progress
    assert any("ahead of you" in m for messages in seen.values() for m in messages), seen
    hub_log.assert_no_500()

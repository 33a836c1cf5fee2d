"""The SSH gateway on Kubernetes: Debian's OpenSSH client -> the hub's gateway -> plain TCP to the
sshd inside a workspace pod, at the pod's IP and sshd port that the spawner keeps in the server's
state (the pod runner runs the pod's server with its own environment, on the pod's own IP, and the
server starts its sshd there). The same path as the embedded mode (tests/ssh), with the Kubernetes
spawner.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from kubernetes import client

from spawner.kube_objects import WORKSPACE_SSHD_PORT
from tests.bed.hub import Client, Hub, free_port
from tests.bed.podrunner import PodRunner
from tests.bed.ssh import SSH, keygen, register
from tests.k8s.test_kube_spawner import pod_of

pytestmark = pytest.mark.usefixtures("no_servers_left")


@pytest.fixture(scope="module")
def ssh(hub: Hub, tmp_path_factory: pytest.TempPathFactory) -> SSH:
    return SSH(hub, tmp_path_factory.mktemp("k8s-ssh-client"))


@pytest.fixture(scope="module")
def keys(clients: dict[str, Client], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    folder = tmp_path_factory.mktemp("k8s-ssh-keys")
    made = {}
    for name in ("alice", "bob"):
        key = keygen(folder / f"{name}_ed25519")
        key_id = register(clients[name], key, title="k8s laptop")
        made[name] = (key, key_id)
    yield {name: key for name, (key, _) in made.items()}
    for name, (_, key_id) in made.items():
        requests.delete(
            f"{clients[name].hub.url}/services/quotas/api/ssh-keys/{key_id}",
            headers={"Authorization": f"token {clients[name].token}"},
            timeout=30,
        )


def pod_home(runner: PodRunner, pod: client.V1Pod) -> Path:
    """Where the pod runner keeps the pod's home (its container filesystem, here)."""
    return runner.workdir / "homes" / f"{pod.metadata.namespace}-{pod.metadata.name}"


def test_ssh_starts_the_stopped_pod_and_works_inside_it(
    api: client.ApiClient,
    clients: dict[str, Client],
    runner: PodRunner,
    ssh: SSH,
    keys: dict[str, Path],
    tmp_path: Path,
) -> None:
    alice = clients["alice"]
    assert alice.spawn(tenant="lab", profile="h100-x1").status_code in (201, 202)
    alice.wait_ready(timeout=120)
    first_pod = pod_of(api, "aidc-lab", "alice").metadata.uid
    alice.stop_server()

    t0 = time.monotonic()
    r = ssh.ssh("alice", "echo tenant=$AIDC_TENANT profile=$AIDC_PROFILE home=$HOME; exit 7", keys["alice"])
    print(f"\nssh started alice's pod and ran a command in {time.monotonic() - t0:.1f}s\n{r.stderr}")
    assert r.returncode == 7, r.stderr
    assert "Starting alice's default server (profile h100-x1)" in r.stderr
    pod = pod_of(api, "aidc-lab", "alice")
    assert pod.metadata.uid != first_pod and pod.status.phase == "Running"
    assert pod.spec.containers[0].resources.limits["nvidia.com/gpu"] == "1"
    assert r.stdout.split() == ["tenant=lab", "profile=h100-x1", f"home={pod_home(runner, pod)}"], r.stdout

    # a file copied with scp lands in that pod's home, whole
    payload = tmp_path / "weights.bin"
    payload.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    scp = subprocess.run(
        ["scp", *ssh.options(keys["alice"]), "-q", "-P", str(ssh.port), str(payload), "alice@127.0.0.1:weights.bin"],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert scp.returncode == 0, scp.stderr
    copied = pod_home(runner, pod) / "weights.bin"
    assert hashlib.sha256(copied.read_bytes()).hexdigest() == hashlib.sha256(payload.read_bytes()).hexdigest()


def test_a_forward_reaches_the_pods_own_port_and_never_another_pod(
    api: client.ApiClient, clients: dict[str, Client], ssh: SSH, keys: dict[str, Path]
) -> None:
    alice, bob = clients["alice"], clients["bob"]
    assert alice.spawn(tenant="lab", profile="cpu").status_code in (201, 202)
    assert bob.spawn(tenant="lab", profile="cpu").status_code in (201, 202)
    alice.wait_ready(timeout=120)
    bob.wait_ready(timeout=120)
    alice_pod = pod_of(api, "aidc-lab", "alice")

    port, local = free_port(), free_port()
    command = (
        f"d=$(mktemp -d) && cd $d && echo hello-from-alices-pod > index.html && echo $$ > ~/http.pid"
        f" && exec timeout 300 python3 -m http.server {port} --bind 127.0.0.1"
    )
    server = subprocess.Popen(
        ["ssh", *ssh.options(keys["alice"]), "-p", str(ssh.port), "alice@127.0.0.1", command],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    forward = subprocess.Popen(
        ["ssh", *ssh.options(keys["alice"]), "-N", "-o", "ExitOnForwardFailure=yes", "-L", f"{local}:localhost:{port}",
         "-p", str(ssh.port), "alice@127.0.0.1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline, text = time.monotonic() + 60, ""
        while time.monotonic() < deadline and "hello-from-alices-pod" not in text:
            try:
                text = requests.get(f"http://127.0.0.1:{local}/", timeout=5).text
            except requests.RequestException:
                time.sleep(0.3)
        assert "hello-from-alices-pod" in text

        # bob, from his own pod's session, aims at alice's pod: its IP, her server's port and her
        # sshd's port; and at the hub and the proxy by their cluster names. (Their loopback ports
        # here are not a case: in a cluster, localhost in bob's pod is bob's pod, while this bed's
        # pods share one loopback with everything.)
        ip = alice_pod.status.pod_ip
        for target in (
            f"{ip}:{alice_pod.spec.containers[0].ports[0].container_port}",
            f"{ip}:{WORKSPACE_SSHD_PORT}",
            "proxy-public:80",
            "hub.aidc-system.svc.cluster.local:8081",
        ):
            refused = ssh.ssh("bob", None, keys["bob"], "-W", target, log="INFO")
            assert refused.returncode != 0
            assert f"Forwarding to {target} is not allowed: only ports inside your workspace are" in refused.stderr
        # and alice's key never opens bob's pod
        r = ssh.ssh("bob", "true", keys["alice"], source="127.0.0.5")
        assert r.returncode == 255 and "Permission denied" in r.stderr
    finally:
        forward.terminate()
        forward.wait(10)
        ssh.ssh("alice", "kill $(cat ~/http.pid)", keys["alice"])
        server.wait(30)
